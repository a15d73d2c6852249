//! What quantization costs, measured on the golden checkpoints: perplexity on a text and
//! agreement of the greedy (argmax) choice with the f32 model, for q8_0, q4_1 and q4_0 files.
//!
//! The golden models have random weights (their perplexity is near the vocabulary size and
//! their logits nearly flat, so the argmax flips easily), so these bounds say how far
//! quantization moves a model's predictions, not how good the predictions are. The relative
//! RMS error of the logits is the sharpest of the three: it follows the step sizes (q8_0's is
//! 1/127 of a block's largest value, q4_0's 1/8, q4_1's 1/15 of its range). The bounds sit
//! above what was measured when this test was written (printed by the test; noted beside each).

mod common;

use chatglm::gguf::GgufFile;
use chatglm::model::{KvType, Logits, StateOptions};
use chatglm::perplexity::perplexity;
use chatglm::sampler::argmax;
use chatglm::Engine;
use chatglm_kernels::GgmlType;
use common::*;
use std::path::Path;
use std::sync::Arc;

fn engine(name: &str, ty: GgmlType) -> Engine {
    let out = temp_dir(name).join(format!("{ty}.gguf"));
    convert_checkpoint(&golden_dir(name), ty, &out).unwrap();
    Engine::from_file(out.clone(), Arc::new(GgufFile::open(&out).unwrap())).unwrap()
}

/// Logits at every position of the golden long prompt.
fn all_logits(e: &Engine, ids: &[u32]) -> Vec<f32> {
    let model = e.model();
    let context = model.config().context_length;
    let mut st = model
        .new_state(StateOptions {
            context,
            batch: context,
            kv_type: KvType::F32,
            threads: 2,
        })
        .unwrap();
    model
        .forward(&mut st, ids, 0, Logits::All)
        .unwrap()
        .to_vec()
}

/// `rms(a - b) / rms(b)`.
fn relative_rms_error(a: &[f32], b: &[f32]) -> f64 {
    let err: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (err / norm).sqrt()
}

fn text() -> String {
    let corpus = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden/corpus.txt"),
    )
    .unwrap();
    corpus
        .lines()
        .skip(500)
        .take(25)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn quantized_files_stay_close_to_f32() {
    check_quantized("glm2-small");
}

/// The same bounds hold for GLM-4's byte-level vocabulary and larger RoPE base (measured:
/// q8_0 ppl +0.06%, agreement 97.2%, rms 0.020; q4_1 +0.69%, 62.7%, 0.211; q4_0 -0.38%,
/// 54.7%, 0.239).
#[test]
fn quantized_glm4_files_stay_close_to_f32() {
    check_quantized("glm4-small");
}

fn check_quantized(name: &str) {
    let text = text();
    let ids = u32s(&golden_json(name)["positions"]["input_ids"]);
    let base = engine(name, GgmlType::F32);
    let ppl_f32 = perplexity(&base, &text, 256, KvType::F32, 0, &mut |_, _| {}).unwrap();
    let vocab = base.config().vocab_size;
    let logits_f32 = all_logits(&base, &ids);
    let greedy_f32: Vec<u32> = logits_f32.chunks(vocab).map(argmax).collect();
    // (type, largest relative perplexity change, smallest argmax agreement, largest relative
    // RMS error of the logits)
    for (ty, max_ppl_change, min_agreement, max_rms) in [
        // Measured (scalar kernels): ppl -0.05%, agreement 95.1%, rms 0.020.
        (GgmlType::Q8_0, 0.005, 0.90, 0.03),
        // Measured: ppl -1.65%, agreement 66.9%, rms 0.227.
        (GgmlType::Q4_1, 0.04, 0.55, 0.35),
        // Measured: ppl +0.46%, agreement 54.9%, rms 0.285.
        (GgmlType::Q4_0, 0.04, 0.45, 0.40),
    ] {
        let e = engine(name, ty);
        let ppl = perplexity(&e, &text, 256, KvType::F32, 0, &mut |_, _| {}).unwrap();
        assert_eq!(ppl.tokens, ppl_f32.tokens);
        let change = (ppl.ppl / ppl_f32.ppl - 1.0).abs();
        let logits = all_logits(&e, &ids);
        let rms = relative_rms_error(&logits, &logits_f32);
        let greedy: Vec<u32> = logits.chunks(vocab).map(argmax).collect();
        let agree = greedy
            .iter()
            .zip(&greedy_f32)
            .filter(|(a, b)| a == b)
            .count() as f64
            / ids.len() as f64;
        println!(
            "{name} {ty}: ppl {:.3} vs f32 {:.3} ({:+.3}%) over {} tokens; argmax agrees at {:.1}% of {} positions; logits rms error {:.4}",
            ppl.ppl,
            ppl_f32.ppl,
            100.0 * (ppl.ppl / ppl_f32.ppl - 1.0),
            ppl.tokens,
            100.0 * agree,
            ids.len(),
            rms
        );
        assert!(
            rms <= max_rms,
            "{ty}: logits moved by {rms:.4} (relative rms)"
        );
        assert!(
            change <= max_ppl_change,
            "{ty}: perplexity moved by {:.3}%",
            100.0 * change
        );
        assert!(
            agree >= min_agreement,
            "{ty}: argmax agreement {:.1}%",
            100.0 * agree
        );
    }
}
