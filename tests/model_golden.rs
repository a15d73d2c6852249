//! The forward pass against the Hugging Face golden values of `shared/golden/glm2-small`
//! (3 layers, hidden 256, 8 heads of 32, 2 kv groups, vocab 2240; f16 safetensors shards).
//! The weights are read with the `safetensors` crate, renamed to the GGUF names and laid out
//! in one `Vec<u8>`, as F32 and as F16 (as stored).

mod model_common;

use chatglm::model::{KvType, Logits, Model, ModelConfig, RopeScaling, StateOptions};
use chatglm_kernels::GgmlType;
use model_common::{argmax, max_abs_diff, Builder};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::sync::OnceLock;

/// Suggested tolerance of the golden README for a float32 implementation.
const TOL: f32 = 1e-4;

fn dir() -> String {
    format!("{}/../shared/golden/glm2-small", env!("CARGO_MANIFEST_DIR"))
}

fn golden() -> &'static Value {
    static G: OnceLock<Value> = OnceLock::new();
    G.get_or_init(|| {
        let text = std::fs::read_to_string(format!("{}/golden.json", dir())).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn config() -> ModelConfig {
    let c = &golden()["config"];
    let n = |k: &str| c[k].as_u64().unwrap() as usize;
    ModelConfig {
        vocab_size: n("padded_vocab_size"),
        hidden_size: n("hidden_size"),
        num_layers: n("num_layers"),
        num_heads: n("num_attention_heads"),
        num_kv_groups: n("multi_query_group_num"),
        head_dim: n("kv_channels"),
        ffn_hidden_size: n("ffn_hidden_size"),
        context_length: n("seq_length"),
        rms_eps: c["layernorm_epsilon"].as_f64().unwrap() as f32,
        rope_base: 10000.0,
        rope_scaling: RopeScaling::None,
        block: chatglm::model::Block::Glm2,
    }
}

/// The GGUF name of a Hugging Face ChatGLM tensor, from the tensor table (`None` for
/// `rotary_pos_emb.inv_freq`, which the model recomputes).
fn gguf_name(hf: &str) -> Option<String> {
    chatglm::arch::tensors::gguf_name_of_hf(hf)
}

/// Builds the model with 2-D weights of type `ty` (1-D tensors are always F32).
fn build(ty: GgmlType) -> Model {
    let mut b = Builder::default();
    let mut count = 0;
    for shard in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        let bytes = std::fs::read(format!("{}/{shard}", dir())).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            assert_eq!(view.dtype(), Dtype::F16, "{name}");
            let values: Vec<f32> = view
                .data()
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect();
            let Some(g) = gguf_name(&name) else {
                assert!(name.ends_with("rotary_pos_emb.inv_freq"), "{name}");
                continue;
            };
            let t = if view.shape().len() == 1 {
                GgmlType::F32
            } else {
                ty
            };
            b.add(&g, view.shape(), &values, t);
            count += 1;
        }
    }
    assert_eq!(count, 3 + 7 * 3);
    b.load(&config())
}

fn model(ty: GgmlType) -> &'static Model {
    static F32: OnceLock<Model> = OnceLock::new();
    static F16: OnceLock<Model> = OnceLock::new();
    match ty {
        GgmlType::F32 => F32.get_or_init(|| build(GgmlType::F32)),
        GgmlType::F16 => F16.get_or_init(|| build(GgmlType::F16)),
        other => panic!("no {other} model here"),
    }
}

fn options(batch: usize, kv_type: KvType) -> StateOptions {
    StateOptions {
        context: 512,
        batch,
        kv_type,
        threads: 2,
    }
}

/// Prefill of the golden prompt: every logit row, the argmax, the final hidden state and the
/// residual stream after each layer.
fn check_prefill(ty: GgmlType) {
    let g = &golden()["prefill"];
    let m = model(ty);
    let input = ids(&g["input_ids"]);
    let (l, v, h) = (input.len(), m.config().vocab_size, m.config().hidden_size);
    assert_eq!(ids(&g["position_ids"]), (0..l as u32).collect::<Vec<_>>());
    let mut st = m.new_state(options(32, KvType::F32)).unwrap();
    let mut residuals = Vec::new();
    let logits = m
        .forward_traced(&mut st, &input, 0, Logits::All, &mut residuals)
        .unwrap()
        .to_vec();
    assert_eq!(logits.len(), l * v);
    let rows = g["logits"].as_array().unwrap();
    let argmaxes = ids(&g["argmax"]);
    let mut worst = 0.0f32;
    for (r, want) in rows.iter().enumerate() {
        let got = &logits[r * v..(r + 1) * v];
        worst = worst.max(max_abs_diff(got, &floats(want)));
        assert_eq!(argmax(got) as u32, argmaxes[r], "row {r}");
    }
    let hf = &golden()["hidden_final"];
    assert_eq!(hf["position"].as_u64(), Some(l as u64 - 1));
    let e_hidden = max_abs_diff(&st.hidden()[(l - 1) * h..], &floats(&hf["values"]));
    let layers = golden()["hidden_layers_last_position"]["values"]
        .as_array()
        .unwrap();
    assert_eq!(layers.len(), m.config().num_layers + 1);
    let mut e_layers = 0.0f32;
    for (i, want) in layers.iter().enumerate() {
        e_layers = e_layers.max(max_abs_diff(&residuals[i * h..(i + 1) * h], &floats(want)));
    }
    eprintln!("{ty} prefill: logits {worst:e}, hidden_final {e_hidden:e}, residuals {e_layers:e}");
    assert!(worst < TOL && e_hidden < TOL && e_layers < TOL);
}

#[test]
fn model_golden_prefill_f32_weights() {
    check_prefill(GgmlType::F32);
}

#[test]
fn model_golden_prefill_f16_weights() {
    check_prefill(GgmlType::F16);
}

/// Prefill with only the last row's logits, then the 4 decode steps through the cache.
#[test]
fn model_golden_decode_steps() {
    for ty in [GgmlType::F32, GgmlType::F16] {
        let m = model(ty);
        let input = ids(&golden()["prefill"]["input_ids"]);
        let mut st = m.new_state(options(32, KvType::F32)).unwrap();
        let last = m.forward(&mut st, &input, 0, Logits::Last).unwrap();
        let want_last = &golden()["prefill"]["logits"].as_array().unwrap()[input.len() - 1];
        assert!(max_abs_diff(last, &floats(want_last)) < TOL);
        let mut next = argmax(last) as u32;
        let mut worst = 0.0f32;
        for step in golden()["decode"]["steps"].as_array().unwrap() {
            assert_eq!(step["input_id"].as_u64(), Some(u64::from(next)));
            let pos = step["position"].as_u64().unwrap() as usize;
            assert_eq!(pos, st.kv_cache().len());
            let logits = m.forward(&mut st, &[next], pos, Logits::Last).unwrap();
            worst = worst.max(max_abs_diff(logits, &floats(&step["logits"])));
            next = argmax(logits) as u32;
            assert_eq!(step["argmax"].as_u64(), Some(u64::from(next)));
        }
        eprintln!("{ty} decode steps: logits {worst:e}");
        assert!(worst < TOL);
    }
}

/// The long prompt (366 tokens, RoPE past 64, 128 and 256): prefill in segments that end at
/// each listed row, in batches of 32, so every segment after the first attends to a cache
/// filled by earlier calls.
#[test]
fn model_golden_positions() {
    let g = &golden()["positions"];
    let input = ids(&g["input_ids"]);
    assert_eq!(input.len(), 366);
    let m = model(GgmlType::F32);
    let h = m.config().hidden_size;
    let mut st = m.new_state(options(32, KvType::F32)).unwrap();
    let mut done = 0;
    let mut worst = 0.0f32;
    for row in g["rows"].as_array().unwrap() {
        let r = row["position"].as_u64().unwrap() as usize;
        let logits = m
            .forward(&mut st, &input[done..=r], done, Logits::Last)
            .unwrap();
        worst = worst.max(max_abs_diff(logits, &floats(&row["logits"])));
        assert_eq!(
            argmax(logits) as u64,
            row["argmax"].as_u64().unwrap(),
            "row {r}"
        );
        done = r + 1;
    }
    assert_eq!(done, input.len());
    let e_hidden = max_abs_diff(&st.hidden()[..h], &floats(&g["hidden_final_last"]));
    eprintln!("positions: logits {worst:e}, hidden_final_last {e_hidden:e}");
    assert!(worst < TOL && e_hidden < TOL);
}

/// Greedy generation: prefill, then argmax and one decode step at a time until eos or 32 new
/// tokens.
fn greedy(
    m: &Model,
    st_opts: StateOptions,
    input: &[u32],
    eos: &[u32],
    max_new: usize,
) -> Vec<u32> {
    let mut st = m.new_state(st_opts).unwrap();
    let mut logits = m.forward(&mut st, input, 0, Logits::Last).unwrap();
    let mut out = Vec::new();
    loop {
        let next = argmax(logits) as u32;
        out.push(next);
        if eos.contains(&next) || out.len() == max_new {
            return out;
        }
        let pos = st.kv_cache().len();
        logits = m.forward(&mut st, &[next], pos, Logits::Last).unwrap();
    }
}

#[test]
fn model_golden_greedy() {
    let gr = &golden()["greedy"];
    let eos = ids(&gr["settings"]["eos_token_id"]);
    let max_new = gr["settings"]["max_new_tokens"].as_u64().unwrap() as usize;
    for case in gr["cases"].as_array().unwrap() {
        let input = ids(&case["input_ids"]);
        let want = ids(&case["new_ids"]);
        let mut output = input.clone();
        output.extend(&want);
        assert_eq!(ids(&case["output_ids"]), output);
        for ty in [GgmlType::F32, GgmlType::F16] {
            for batch in [32, 7] {
                let got = greedy(
                    model(ty),
                    options(batch, KvType::F32),
                    &input,
                    &eos,
                    max_new,
                );
                assert_eq!(got, want, "{ty} weights, batch {batch}");
            }
        }
    }
}

/// Bound on the logit difference an f16 cache makes (checked in `model_cache_f16_vs_f32`).
const F16_CACHE_BOUND: f32 = 2e-3;

/// The default f16 cache: greedy ids must be exact when the reference's smallest top-2 margin
/// exceeds twice the f16 cache's error bound (case 0, margin 4.4e-3). Case 1 (margin 9.1e-4)
/// is below it: it is run and reported (today it matches too) but not asserted, since a
/// different summation order in the kernels could legitimately flip it.
#[test]
fn model_golden_greedy_f16_cache() {
    let gr = &golden()["greedy"];
    let eos = ids(&gr["settings"]["eos_token_id"]);
    let max_new = gr["settings"]["max_new_tokens"].as_u64().unwrap() as usize;
    let mut asserted = 0;
    for case in gr["cases"].as_array().unwrap() {
        let margin = case["min_top2_margin"].as_f64().unwrap();
        let got = greedy(
            model(GgmlType::F16),
            StateOptions::new(512),
            &ids(&case["input_ids"]),
            &eos,
            max_new,
        );
        let same = got == ids(&case["new_ids"]);
        eprintln!("f16 cache greedy, margin {margin:e}: same ids {same}");
        if margin > 2.0 * f64::from(F16_CACHE_BOUND) {
            assert!(same);
            asserted += 1;
        }
    }
    assert_eq!(asserted, 1);
}

/// Token-by-token decode through the cache gives the same last-position logits as one prefill
/// of the whole sequence, and as a prefill split into odd batches.
#[test]
fn model_cache_decode_equals_prefill() {
    let m = model(GgmlType::F32);
    let input = ids(&golden()["positions"]["input_ids"]);
    let seq = &input[..100];
    let mut whole = m.new_state(options(128, KvType::F32)).unwrap();
    let want = m
        .forward(&mut whole, seq, 0, Logits::Last)
        .unwrap()
        .to_vec();

    let mut split = m.new_state(options(7, KvType::F32)).unwrap();
    let got_split = m
        .forward(&mut split, seq, 0, Logits::Last)
        .unwrap()
        .to_vec();

    let mut one = m.new_state(options(1, KvType::F32)).unwrap();
    let mut got_one = Vec::new();
    for (pos, &t) in seq.iter().enumerate() {
        got_one = m
            .forward(&mut one, &[t], pos, Logits::Last)
            .unwrap()
            .to_vec();
    }
    let (e_split, e_one) = (
        max_abs_diff(&got_split, &want),
        max_abs_diff(&got_one, &want),
    );
    eprintln!("prefill vs batches of 7: {e_split:e}; vs token by token: {e_one:e}");
    assert!(e_split < 1e-5 && e_one < 1e-5);

    // Rewinding: re-running the last 10 tokens from position 90 gives the same logits.
    let again = m.forward(&mut one, &seq[90..], 90, Logits::Last).unwrap();
    assert!(max_abs_diff(again, &want) < 1e-5);
    assert_eq!(one.kv_cache().len(), 100);
}

/// f16 cache against f32 cache over the long prompt: logits differ by less than
/// [`F16_CACHE_BOUND`] (measured 7.8e-4; f16 keeps 11 significant bits), argmax identical.
#[test]
fn model_cache_f16_vs_f32() {
    let m = model(GgmlType::F32);
    let input = ids(&golden()["positions"]["input_ids"]);
    let mut a = m.new_state(options(32, KvType::F32)).unwrap();
    let mut b = m.new_state(options(32, KvType::F16)).unwrap();
    let mut worst = 0.0f32;
    for (start, chunk) in [(0, &input[..200]), (200, &input[200..])] {
        let la = m
            .forward(&mut a, chunk, start, Logits::Last)
            .unwrap()
            .to_vec();
        let lb = m.forward(&mut b, chunk, start, Logits::Last).unwrap();
        worst = worst.max(max_abs_diff(&la, lb));
        assert_eq!(argmax(&la), argmax(lb));
    }
    eprintln!("f16 vs f32 cache: max logit difference {worst:e}");
    assert!(worst < F16_CACHE_BOUND);
}
