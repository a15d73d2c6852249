//! The checks of a converted model against a checkpoint's `golden.json` (the same keys for
//! every golden set: `prefill`, `hidden_final`, `hidden_layers_last_position`, `decode`,
//! `greedy`, `positions`), shared by the golden test files of each family.

use super::{f32s, max_abs_diff, u32s};
use chatglm::model::{KvType, Logits, Model, StateOptions};
use chatglm::sampler::argmax;
use chatglm::tokenizer::Tokenizer;
use serde_json::Value;

/// The golden sets' suggested tolerance for a float32 implementation.
pub const TOL: f32 = 1e-4;

/// Prefill logits and argmax at every position, the final hidden state and the residual
/// stream after each layer at the last position, the four decode steps through the cache, and
/// the long prompt's rows and final hidden state: all within [`TOL`] (f32 weights and cache).
pub fn check_logits(label: &str, model: &Model, g: &Value) {
    let vocab = model.config().vocab_size;
    let h = model.config().hidden_size;
    let prefill = &g["prefill"];
    let ids = u32s(&prefill["input_ids"]);
    assert_eq!(
        u32s(&prefill["position_ids"]),
        (0..ids.len() as u32).collect::<Vec<_>>()
    );
    let context = model.config().context_length.min(4096);
    let opts = StateOptions {
        context,
        batch: context,
        kv_type: KvType::F32,
        threads: 2,
    };
    let mut st = model.new_state(opts).unwrap();
    let mut residuals = Vec::new();
    let logits = model
        .forward_traced(&mut st, &ids, 0, Logits::All, &mut residuals)
        .unwrap()
        .to_vec();
    let want: Vec<f32> = prefill["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(f32s)
        .collect();
    let err = max_abs_diff(&logits, &want);
    assert!(err < TOL, "{label}: prefill logits differ by {err}");
    for (row, &am) in logits.chunks(vocab).zip(&u32s(&prefill["argmax"])) {
        assert_eq!(argmax(row), am, "{label}: prefill argmax");
    }
    let last_hidden = &st.hidden()[(ids.len() - 1) * h..];
    let err = max_abs_diff(last_hidden, &f32s(&g["hidden_final"]["values"]));
    assert!(err < TOL, "{label}: final hidden state differs by {err}");
    let layers = g["hidden_layers_last_position"]["values"]
        .as_array()
        .unwrap();
    assert_eq!(layers.len(), model.config().num_layers + 1);
    for (i, want) in layers.iter().enumerate() {
        let err = max_abs_diff(&residuals[i * h..(i + 1) * h], &f32s(want));
        assert!(
            err < TOL,
            "{label}: residual stream after layer {i} differs by {err}"
        );
    }

    // Four decode steps through the cache.
    for (pos, step) in (ids.len()..).zip(g["decode"]["steps"].as_array().unwrap()) {
        assert_eq!(step["position"].as_u64().unwrap() as usize, pos);
        let id = step["input_id"].as_u64().unwrap() as u32;
        let logits = model.forward(&mut st, &[id], pos, Logits::Last).unwrap();
        let err = max_abs_diff(logits, &f32s(&step["logits"]));
        assert!(err < TOL, "{label}: decode at {pos} differs by {err}");
        assert_eq!(argmax(logits), step["argmax"].as_u64().unwrap() as u32);
    }

    // The long prompt: RoPE far from position 0.
    let positions = &g["positions"];
    let ids = u32s(&positions["input_ids"]);
    let mut st = model.new_state(opts).unwrap();
    let logits = model
        .forward(&mut st, &ids, 0, Logits::All)
        .unwrap()
        .to_vec();
    for row in positions["rows"].as_array().unwrap() {
        let p = row["position"].as_u64().unwrap() as usize;
        let got = &logits[p * vocab..(p + 1) * vocab];
        let err = max_abs_diff(got, &f32s(&row["logits"]));
        assert!(
            err < TOL,
            "{label}: long prompt position {p} differs by {err}"
        );
        assert_eq!(argmax(got), row["argmax"].as_u64().unwrap() as u32);
    }
    if let Some(want) = positions.get("hidden_final_last") {
        let err = max_abs_diff(&st.hidden()[(ids.len() - 1) * h..], &f32s(want));
        assert!(
            err < TOL,
            "{label}: long prompt final hidden state differs by {err}"
        );
    }
}

/// Greedy generation from each case's `input_ids` reproduces its `new_ids` and `text`
/// exactly, with an f32 cache and (for cases whose top-2 margin is clearly larger than the
/// ~1e-3 an f16 cache moves the logits) an f16 cache; the tokenizer's stop ids are the
/// reference's `eos_token_id`.
pub fn check_greedy(label: &str, model: &Model, tok: &Tokenizer, g: &Value) {
    let eos = u32s(&g["greedy"]["settings"]["eos_token_id"]);
    assert_eq!(
        tok.stop_ids()
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        eos.iter().copied().collect(),
        "{label}: stop ids"
    );
    let max_new = g["greedy"]["settings"]["max_new_tokens"].as_u64().unwrap() as usize;
    for (c, case) in g["greedy"]["cases"].as_array().unwrap().iter().enumerate() {
        let prompt = u32s(&case["input_ids"]);
        let want = u32s(&case["new_ids"]);
        let margin = case["min_top2_margin"].as_f64().unwrap() as f32;
        for kv_type in [KvType::F32, KvType::F16] {
            if kv_type == KvType::F16 && margin < 4e-3 {
                continue;
            }
            let opts = StateOptions {
                context: model.config().context_length.min(4096),
                batch: 32,
                kv_type,
                threads: 2,
            };
            let mut st = model.new_state(opts).unwrap();
            let mut logits = model
                .forward(&mut st, &prompt, 0, Logits::Last)
                .unwrap()
                .to_vec();
            let mut got = Vec::new();
            while got.len() < max_new {
                let next = argmax(&logits);
                got.push(next);
                if eos.contains(&next) {
                    break;
                }
                let pos = prompt.len() + got.len() - 1;
                logits = model
                    .forward(&mut st, &[next], pos, Logits::Last)
                    .unwrap()
                    .to_vec();
            }
            assert_eq!(got, want, "{label} case {c} {kv_type:?}");
            let text = tok.decode(&got).unwrap();
            assert_eq!(
                text,
                case["text"].as_str().unwrap(),
                "{label} case {c}: decoded reply"
            );
        }
    }
}
