//! ChatGLM-6B (v1) against the official Hugging Face implementation: each checkpoint of
//! `../shared/golden-glm1` (f32 `.bin`, sharded f16 `.bin`, sharded f16 safetensors) is
//! converted to GGUF, loaded back from the file alone, and its 2-D positions, prefill logits,
//! hidden states, decode steps, long prompt and greedy generations compared with
//! `golden.json`. The prompts' ids are golden's `input_ids` (the v1 tokenizer is tested on
//! its own).

mod common;

use chatglm::gguf::GgufFile;
use chatglm::model::{
    Block, Glm1Layout, Glm1Params, KvType, Logits, Model, ModelError, StateOptions,
};
use chatglm::sampler::argmax;
use chatglm_kernels::GgmlType;
use common::*;
use serde_json::Value;
use std::sync::Arc;

/// The v1 golden checkpoints.
const GOLDEN_GLM1: [&str; 3] = ["glm1-tiny", "glm1-small", "glm1-st-tiny"];

/// The README's tolerance for a float32 implementation.
const TOL: f32 = 1e-4;

/// `../shared/golden-glm1/<name>` (relative to the repository root).
fn dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/golden-glm1")
        .join(name)
}

fn golden(name: &str) -> Value {
    let text = std::fs::read_to_string(dir(name).join("golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Converts `name` at `ty` (ggml's portable layouts unless `portable` is false) and loads
/// the model from the file.
fn load_as(name: &str, ty: GgmlType, portable: bool) -> Model {
    let out = temp_dir(name).join(format!("{name}-{ty}.gguf"));
    convert_checkpoint_as(&dir(name), ty, &out, portable).unwrap();
    let file = Arc::new(GgufFile::open(&out).unwrap());
    assert_eq!(
        file.metadata().get_str("general.architecture").unwrap(),
        "chatglm1"
    );
    Model::from_gguf(file).unwrap()
}

fn load(name: &str, ty: GgmlType) -> Model {
    load_as(name, ty, true)
}

fn params(m: &Model) -> Glm1Params {
    match m.config().block {
        Block::Glm1(p) => p,
        other => panic!("not a v1 model: {other:?}"),
    }
}

fn opts(m: &Model, batch: usize, kv_type: KvType) -> StateOptions {
    StateOptions {
        context: m.config().context_length,
        batch,
        kv_type,
        threads: 2,
    }
}

/// The layout found in the ids is golden's, and its 2-D positions are golden's rows.
fn check_layout(p: &Glm1Params, case: &Value) -> Glm1Layout {
    let ids = u32s(&case["input_ids"]);
    let gi = &case["generation_inputs"];
    let layout = Glm1Layout::of(p, &ids).unwrap();
    assert_eq!(
        layout.context_length,
        gi["context_length"].as_u64().unwrap() as usize
    );
    assert_eq!(
        layout.mask_position,
        gi["mask_position"].as_u64().unwrap() as usize
    );
    let rows = gi["position_ids"].as_array().unwrap();
    let (pos, block): (Vec<u32>, Vec<u32>) = (0..ids.len())
        .map(|i| {
            let (a, b) = layout.position(i);
            (a as u32, b as u32)
        })
        .unzip();
    assert_eq!(pos, u32s(&rows[0]));
    assert_eq!(block, u32s(&rows[1]));
    // The mask, where recorded: token i sees j iff j < context_length or j <= i (1 = masked).
    let mask = gi["attention_mask"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, row) in mask.iter().enumerate() {
        let visible = row
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m.as_u64() == Some(0) || m.as_bool() == Some(false))
            .count();
        assert_eq!(layout.visible(i), visible, "row {i}");
    }
    layout
}

#[test]
fn golden_glm1_config_and_positions() {
    for name in GOLDEN_GLM1 {
        let m = load(name, GgmlType::F16);
        let g = golden(name);
        let c = &g["config"];
        let p = params(&m);
        assert_eq!(
            p.residual_alpha,
            c["residual_alpha"].as_f64().unwrap() as f32
        );
        assert_eq!(
            u64::from(p.sop_token_id),
            c["bos_token_id"].as_u64().unwrap()
        );
        assert_eq!(
            u64::from(p.gmask_token_id),
            c["gmask_token_id"].as_u64().unwrap()
        );
        assert_eq!(
            u64::from(p.mask_token_id),
            c["mask_token_id"].as_u64().unwrap()
        );
        let cfg = m.config();
        assert_eq!(cfg.num_kv_groups, cfg.num_heads);
        assert_eq!(cfg.vocab_size as u64, c["vocab_size"].as_u64().unwrap());
        assert_eq!(cfg.rms_eps, c["layernorm_epsilon"].as_f64().unwrap() as f32);
        let prefill = check_layout(&p, &g["prefill"]);
        check_layout(&p, &g["positions"]);
        // Decode step k is token n + k at [mask_position, n + k - context_length + 1].
        let n = u32s(&g["prefill"]["input_ids"]).len();
        for (k, step) in g["decode"]["steps"].as_array().unwrap().iter().enumerate() {
            let (a, b) = prefill.position(n + k);
            assert_eq!(
                u32s(&step["position"]),
                [a as u32, b as u32],
                "{name} step {k}"
            );
        }
    }
}

/// Prefill (every row), final hidden state, residual stream per layer, then the decode
/// steps through the cache, for f32 and f16 files.
#[test]
fn golden_glm1_prefill_and_decode() {
    for name in GOLDEN_GLM1 {
        let g = golden(name);
        for ty in [GgmlType::F32, GgmlType::F16] {
            let m = load(name, ty);
            let (v, h) = (m.config().vocab_size, m.config().hidden_size);
            let prefill = &g["prefill"];
            let ids = u32s(&prefill["input_ids"]);
            let mut st = m.new_state(opts(&m, 32, KvType::F32)).unwrap();
            let mut residuals = Vec::new();
            let logits = m
                .forward_traced(&mut st, &ids, 0, Logits::All, &mut residuals)
                .unwrap()
                .to_vec();
            let want: Vec<f32> = prefill["logits"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(f32s)
                .collect();
            let e_logits = max_abs_diff(&logits, &want);
            for (r, (row, &am)) in logits.chunks(v).zip(&u32s(&prefill["argmax"])).enumerate() {
                assert_eq!(argmax(row), am, "{name} {ty}: prefill argmax row {r}");
            }
            let e_hidden = max_abs_diff(
                &st.hidden()[(ids.len() - 1) * h..],
                &f32s(&g["hidden_final"]["values"]),
            );
            let layers = g["hidden_layers_last_position"]["values"]
                .as_array()
                .unwrap();
            assert_eq!(layers.len(), m.config().num_layers + 1);
            let want_layers: Vec<f32> = layers.iter().flat_map(f32s).collect();
            let e_layers = max_abs_diff(&residuals, &want_layers);
            let mut e_decode = 0.0f32;
            for (pos, step) in (ids.len()..).zip(g["decode"]["steps"].as_array().unwrap()) {
                let id = step["input_id"].as_u64().unwrap() as u32;
                let logits = m.forward(&mut st, &[id], pos, Logits::Last).unwrap();
                e_decode = e_decode.max(max_abs_diff(logits, &f32s(&step["logits"])));
                assert_eq!(argmax(logits), step["argmax"].as_u64().unwrap() as u32);
            }
            eprintln!(
                "{name} {ty}: logits {e_logits:e}, hidden {e_hidden:e}, layers {e_layers:e}, \
                 decode {e_decode:e}"
            );
            assert!(e_logits < TOL && e_hidden < TOL && e_layers < TOL && e_decode < TOL);
        }
    }
}

/// The long prompt: the listed rows of one prefill (inside the bidirectional context too),
/// and the last row again when the prompt runs in batches of 7 (each layer's keys are all
/// cached before any row of the layer attends).
#[test]
fn golden_glm1_long_prompt() {
    for name in GOLDEN_GLM1 {
        let g = golden(name);
        let m = load(name, GgmlType::F32);
        let (v, h) = (m.config().vocab_size, m.config().hidden_size);
        let positions = &g["positions"];
        let ids = u32s(&positions["input_ids"]);
        let mut st = m.new_state(opts(&m, ids.len(), KvType::F32)).unwrap();
        let logits = m.forward(&mut st, &ids, 0, Logits::All).unwrap().to_vec();
        let mut worst = 0.0f32;
        for row in positions["rows"].as_array().unwrap() {
            let p = row["position"].as_u64().unwrap() as usize;
            let got = &logits[p * v..(p + 1) * v];
            worst = worst.max(max_abs_diff(got, &f32s(&row["logits"])));
            assert_eq!(
                argmax(got),
                row["argmax"].as_u64().unwrap() as u32,
                "{name} row {p}"
            );
        }
        let last = &st.hidden()[(ids.len() - 1) * h..];
        let e_hidden = max_abs_diff(last, &f32s(&positions["hidden_final_last"]));
        let mut small = m.new_state(opts(&m, 7, KvType::F32)).unwrap();
        let batched = m.forward(&mut small, &ids, 0, Logits::Last).unwrap();
        let e_batched = max_abs_diff(batched, &logits[(ids.len() - 1) * v..]);
        eprintln!("{name}: rows {worst:e}, hidden {e_hidden:e}, batches of 7 {e_batched:e}");
        assert!(worst < TOL && e_hidden < TOL && e_batched < 1e-5);
    }
}

/// Greedy generation reproduces the reference ids exactly (f32 weights; f32 and f16 cache;
/// portable and row-interleaved files).
#[test]
fn golden_glm1_greedy() {
    for name in GOLDEN_GLM1 {
        let g = golden(name);
        let m = load(name, GgmlType::F32);
        let eos = u32s(&g["greedy"]["settings"]["eos_token_id"]);
        let max_new = g["greedy"]["settings"]["max_new_tokens"].as_u64().unwrap() as usize;
        for case in g["greedy"]["cases"].as_array().unwrap() {
            let prompt = u32s(&case["input_ids"]);
            let want = u32s(&case["new_ids"]);
            let margin = case["min_top2_margin"].as_f64().unwrap();
            for kv_type in [KvType::F32, KvType::F16] {
                if kv_type == KvType::F16 && margin < 4e-3 {
                    continue;
                }
                let mut st = m.new_state(opts(&m, 32, kv_type)).unwrap();
                let mut logits = m
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
                    logits = m
                        .forward(&mut st, &[next], pos, Logits::Last)
                        .unwrap()
                        .to_vec();
                }
                assert_eq!(got, want, "{name} {kv_type:?}: {}", case["query"]);
                assert_eq!(
                    case["stopped_by_eos"].as_bool().unwrap(),
                    eos.contains(got.last().unwrap())
                );
            }
        }
    }
}

/// A v1 prompt must run from position 0 in one call and hold `<sop>` and a mask token;
/// continuing after the context (and rewinding there) is allowed.
#[test]
fn golden_glm1_context_rules() {
    let name = "glm1-tiny";
    let g = golden(name);
    let m = load(name, GgmlType::F32);
    let p = params(&m);
    let ids = u32s(&g["prefill"]["input_ids"]);
    let ctx = Glm1Layout::of(&p, &ids).unwrap().context_length;
    let mut st = m.new_state(opts(&m, 32, KvType::F32)).unwrap();
    let err = m
        .forward(&mut st, &ids[..ctx], 0, Logits::Last)
        .unwrap_err();
    assert!(
        matches!(err, ModelError::Glm1NoToken { what: "<sop>", .. }),
        "{err}"
    );
    let no_mask: Vec<u32> = ids
        .iter()
        .filter(|&&t| t != p.gmask_token_id && t != p.mask_token_id)
        .copied()
        .collect();
    let err = m.forward(&mut st, &no_mask, 0, Logits::Last).unwrap_err();
    assert!(matches!(err, ModelError::Glm1NoToken { .. }), "{err}");
    let want = m.forward(&mut st, &ids, 0, Logits::Last).unwrap().to_vec();
    // Into the context: refused, naming its length.
    let err = m
        .forward(&mut st, &ids[ctx - 1..], ctx - 1, Logits::Last)
        .unwrap_err();
    assert!(
        matches!(err, ModelError::Glm1Context { start_pos, context_length: Some(c) } if start_pos == ctx - 1 && c == ctx),
        "{err}"
    );
    // From the context's end (the `<sop>`): the same logits as the whole prompt.
    let again = m.forward(&mut st, &ids[ctx..], ctx, Logits::Last).unwrap();
    assert!(max_abs_diff(again, &want) < 1e-6);
    assert_eq!(st.glm1_layout().unwrap().context_length, ctx);
}

/// `rms(a - b) / rms(b)`.
fn relative_rms_error(a: &[f32], b: &[f32]) -> f64 {
    let err: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (err / norm).sqrt()
}

/// Quantized files (portable and row-interleaved) against the f32 file over the long
/// prompt: relative RMS error of every position's logits and argmax agreement, bounded as
/// for ChatGLM2/3 (`quant_quality.rs`) above what was measured (noted beside each bound).
#[test]
fn golden_glm1_quantized_files_stay_close_to_f32() {
    let name = "glm1-small";
    let g = golden(name);
    let ids = u32s(&g["positions"]["input_ids"]);
    let all = |m: &Model| {
        let mut st = m.new_state(opts(m, ids.len(), KvType::F32)).unwrap();
        m.forward(&mut st, &ids, 0, Logits::All).unwrap().to_vec()
    };
    let base = all(&load(name, GgmlType::F32));
    let vocab = 2048;
    let greedy_f32: Vec<u32> = base.chunks(vocab).map(argmax).collect();
    // (type, smallest argmax agreement, largest relative RMS error of the logits)
    for (ty, min_agreement, max_rms) in [
        // Measured (both layouts): agreement 93.5%, rms 0.0108.
        (GgmlType::Q8_0, 0.88, 0.02),
        // Measured: agreement 70.1%, rms 0.110.
        (GgmlType::Q4_1, 0.60, 0.17),
        // Measured: agreement 76.8%, rms 0.121.
        (GgmlType::Q4_0, 0.65, 0.18),
    ] {
        for portable in [true, false] {
            let logits = all(&load_as(name, ty, portable));
            let rms = relative_rms_error(&logits, &base);
            let agree = logits
                .chunks(vocab)
                .map(argmax)
                .zip(&greedy_f32)
                .filter(|(a, b)| a == *b)
                .count() as f64
                / ids.len() as f64;
            eprintln!(
                "{name} {ty} (portable {portable}): argmax agrees at {:.1}% of {} positions, \
                 logits rms error {rms:.4}",
                100.0 * agree,
                ids.len()
            );
            assert!(rms <= max_rms, "{ty}: logits moved by {rms:.4}");
            assert!(agree >= min_agreement, "{ty}: agreement {agree:.3}");
        }
    }
}

/// A session generates the reference ids from golden's prompt ids, and reuses the cache only
/// while the bidirectional context is unchanged: a prompt with another context (a new chat
/// round) prefills from 0, the same prompt again reuses everything before its last token.
#[test]
fn golden_glm1_session_generate() {
    use chatglm::sampler::SamplerConfig;
    use chatglm::{Engine, GenerateOptions, Session, SessionOptions};
    let name = "glm1-tiny";
    let out = temp_dir(name).join("session-f32.gguf");
    convert_checkpoint(&dir(name), GgmlType::F32, &out).unwrap();
    let engine =
        Arc::new(Engine::from_file(out.clone(), Arc::new(GgufFile::open(&out).unwrap())).unwrap());
    let opts = SessionOptions {
        context: 512,
        kv_type: KvType::F32,
        batch: 8,
        threads: 2,
    };
    let mut s = Session::new(Arc::clone(&engine), opts).unwrap();
    let gen = GenerateOptions {
        max_new_tokens: 32,
        sampler: SamplerConfig {
            temperature: 0.0,
            repeat_penalty: 1.0,
            ..SamplerConfig::default()
        },
    };
    let g = golden(name);
    let cases = g["greedy"]["cases"].as_array().unwrap();
    for case in cases {
        let prompt = u32s(&case["input_ids"]);
        let r = s.generate(&prompt, &gen, &mut |_| true).unwrap();
        assert_eq!(r.ids, u32s(&case["new_ids"]), "{}", case["query"]);
        // The same prompt again: everything before its last token (the `<sop>`) is reused.
        let again = s.generate(&prompt, &gen, &mut |_| true).unwrap();
        assert_eq!(again.timings.reused_tokens, prompt.len() - 1);
        assert_eq!(again.ids, r.ids);
    }
    // A prompt that starts with the cached context but puts more text before the mask (as a
    // new chat round does): it shares those cached positions, yet prefills from 0, and
    // generates what a fresh session does.
    let first = u32s(&cases[0]["input_ids"]);
    let (gmask, sop) = (first[first.len() - 2], first[first.len() - 1]);
    let mut longer = first[..first.len() - 2].to_vec();
    longer.extend_from_slice(&first[..4]);
    longer.extend([gmask, sop]);
    s.generate(&first, &gen, &mut |_| true).unwrap();
    let r = s.generate(&longer, &gen, &mut |_| true).unwrap();
    assert_eq!(r.timings.reused_tokens, 0);
    let fresh = Session::new(engine, opts)
        .unwrap()
        .generate(&longer, &gen, &mut |_| true)
        .unwrap();
    assert_eq!(r.ids, fresh.ids);
}

/// The layout rules on every chat prompt of `tokenizer_cases.json` (both toy tokenizers),
/// including a query that types `[gMASK]` and `<sop>` itself: the first of each decides, and
/// the positions and mask are the ones the reference model builds.
#[test]
fn golden_glm1_layout_of_every_chat_prompt() {
    let path = dir("glm1-tiny").join("../tokenizer_cases.json");
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    for (name, tok) in cases["tokenizers"].as_object().unwrap() {
        let ids = &tok["layout_ids"];
        let id = |piece: &str| ids[piece].as_u64().unwrap() as u32;
        let params = Glm1Params {
            residual_alpha: Glm1Params::reference_alpha(),
            mask_token_id: id("[MASK]"),
            gmask_token_id: id("[gMASK]"),
            sop_token_id: id("<sop>"),
        };
        for prompt in cases["chat_prompts"].as_array().unwrap() {
            let case = &prompt[name.as_str()];
            let generation_inputs =
                serde_json::json!({ "generation_inputs": case, "input_ids": case["input_ids"] });
            check_layout(&params, &generation_inputs);
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
}
