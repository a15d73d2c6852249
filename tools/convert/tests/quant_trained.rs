//! What quantization costs on real (trained) weights: the tiny model the demo ships
//! (`models/tiny-poems/`, trained by `tools/train/train_tiny.py`; its float16 weights upcast
//! are the f32 reference) converted to every type and mix the converter writes, measured on
//! the held-out text the model never saw (`tools/train/heldout.txt`):
//!
//! - perplexity of the held-out documents, each one run from `[gMASK] sop` on as the model
//!   was trained (the f32 file's must equal what the training script measured in torch,
//!   `train_info.json`, up to the float16 rounding of the shipped weights);
//! - top-1 agreement: the share of those positions where the file's argmax is the f32 file's;
//! - the relative RMS error of those logits.
//!
//! The model has rows of 256 (hidden) and 512 (ffn), so every k-quant applies to every matrix
//! (no fallback). Each bound sits above what was measured when the test was written (the test
//! prints the figures; docs/QUANT_TYPES.md has the table).

mod common;

use chatglm::build::Mix;
use chatglm::build::{NoProgress, WriteOptions};
use chatglm::gguf::GgufFile;
use chatglm::model::{KvType, Logits, StateOptions};
use chatglm::sampler::argmax;
use chatglm::Engine;
use chatglm_convert::checkpoint::Checkpoint;
use chatglm_convert::convert::{convert_mix, describe};
use chatglm_kernels::GgmlType;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn convert(mix: Mix, portable: bool, tag: &str) -> PathBuf {
    let dir = root().join("models/tiny-poems");
    let out = temp_dir("quant-trained").join(format!("{tag}.gguf"));
    let described = describe(&dir, None).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    let opts = WriteOptions {
        output: out.clone(),
        matrix_type: mix.base(),
        portable,
        threads: 2,
        name: "tiny-poems".into(),
    };
    convert_mix(
        &ckpt,
        &described.config,
        described.family,
        &described.tokenizer,
        &opts,
        mix,
        &mut NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    out
}

fn engine(path: &Path) -> Engine {
    Engine::from_file(path.to_path_buf(), Arc::new(GgufFile::open(path).unwrap())).unwrap()
}

fn heldout() -> String {
    std::fs::read_to_string(root().join("tools/train/heldout.txt")).unwrap()
}

/// The logits at every position of every held-out document (each from position 0).
fn doc_logits(e: &Engine, docs: &[Vec<u32>]) -> Vec<f32> {
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
    let mut out = Vec::new();
    for ids in docs {
        out.extend_from_slice(model.forward(&mut st, ids, 0, Logits::All).unwrap());
    }
    out
}

/// `exp(mean nll)` of each document's tokens after the first, given its logits.
fn doc_perplexity(logits: &[f32], docs: &[Vec<u32>], vocab: usize) -> f64 {
    let mut rows = logits.chunks(vocab);
    let (mut nll, mut count) = (0.0f64, 0usize);
    for ids in docs {
        for (i, row) in rows.by_ref().take(ids.len()).enumerate() {
            let Some(&next) = ids.get(i + 1) else {
                continue;
            };
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
            nll += max + sum.ln() - row[next as usize] as f64;
            count += 1;
        }
    }
    (nll / count as f64).exp()
}

fn relative_rms_error(a: &[f32], b: &[f32]) -> f64 {
    let err: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (err / norm).sqrt()
}

/// (mix, portable, tag, max relative rms error, min top-1 agreement, max |perplexity change|)
type Case = (Mix, bool, &'static str, f64, f64, f64);

#[test]
fn trained_model_quantization_quality() {
    let text = heldout();
    let base = engine(&convert(Mix::Pure(GgmlType::F32), true, "f32"));
    let tok = base.tokenizer();
    let docs: Vec<Vec<u32>> = text
        .split("\n\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            // The first 256 tokens, the longest document the model was trained on (and what
            // the training script measured).
            let mut ids = tok.encode_with_prefix(d);
            ids.truncate(256);
            ids
        })
        .collect();
    let positions: usize = docs.iter().map(Vec::len).sum();
    assert!(positions > 2000, "{positions} held-out positions");
    let vocab = base.config().vocab_size;
    let logits_f32 = doc_logits(&base, &docs);
    let top1_f32: Vec<u32> = logits_f32.chunks(vocab).map(argmax).collect();
    let ppl_f32 = doc_perplexity(&logits_f32, &docs, vocab);
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/tiny-poems/train_info.json")).unwrap(),
    )
    .unwrap();
    let torch = info["heldout_ppl_f32"].as_f64().unwrap();
    println!("f32: perplexity {ppl_f32:.3} (torch, before float16 rounding: {torch:.3}); {positions} positions");
    assert!(
        (ppl_f32 / torch - 1.0).abs() < 0.001,
        "perplexity {ppl_f32} here, {torch} in torch"
    );
    // Measured when written (noted beside each): rms error, top-1 agreement, perplexity
    // change. The f16 file holds exactly the checkpoint's float16 values: no change at all.
    let cases: &[Case] = &[
        (Mix::Pure(GgmlType::F16), true, "f16", 1e-6, 1.0, 1e-6),
        // 0.0021, 99.6%, +0.05%
        (Mix::Pure(GgmlType::BF16), true, "bf16", 0.003, 0.985, 0.003),
        // 0.0120, 98.1%, -0.22%
        (Mix::Pure(GgmlType::Q8_0), true, "q8_0", 0.015, 0.965, 0.006),
        // the same blocks, row-interleaved: the same figures
        (
            Mix::Pure(GgmlType::Q8_0),
            false,
            "q8_0x8",
            0.015,
            0.965,
            0.006,
        ),
        // 0.0291, 95.5%, -0.14%
        (Mix::Q6K, true, "q6_k", 0.036, 0.935, 0.006),
        // 0.0470, 92.4%, -0.82%
        (Mix::Q5KM, true, "q5_k_m", 0.059, 0.90, 0.015),
        // 0.0482, 92.2%, -1.21%
        (Mix::Q5KS, true, "q5_k_s", 0.06, 0.90, 0.02),
        // 0.0465, 91.8%, +0.16%
        (Mix::Q5_1, true, "q5_1", 0.058, 0.895, 0.01),
        // 0.0544, 91.3%, +0.86%
        (Mix::Q5_0, true, "q5_0", 0.068, 0.89, 0.015),
        // 0.0862, 86.2%, +0.04%
        (Mix::Q4KM, true, "q4_k_m", 0.108, 0.835, 0.01),
        // 0.0814, 86.8%, -0.41%
        (Mix::Q4KS, true, "q4_k_s", 0.102, 0.84, 0.01),
        // 0.0799, 87.1%, +0.06%
        (Mix::Iq4Nl, true, "iq4_nl", 0.1, 0.845, 0.01),
        // 0.0812, 87.0%, +0.00%
        (Mix::Iq4Xs, true, "iq4_xs", 0.102, 0.845, 0.01),
        // 0.1029, 84.5%, +0.28%
        (Mix::Pure(GgmlType::Q4_1), true, "q4_1", 0.13, 0.82, 0.01),
        // 0.1097, 83.4%, -0.68%
        (Mix::Pure(GgmlType::Q4_0), true, "q4_0", 0.137, 0.81, 0.015),
        // the same blocks, row-interleaved: the same figures
        (
            Mix::Pure(GgmlType::Q4_0),
            false,
            "q4_0x8",
            0.137,
            0.81,
            0.015,
        ),
        // 0.1446, 78.6%, +0.85%
        (Mix::Q3KM, true, "q3_k_m", 0.18, 0.76, 0.015),
        // 0.2772, 58.9%, +11.60%
        (Mix::Q2K, true, "q2_k", 0.35, 0.56, 0.15),
    ];
    for &(mix, portable, tag, max_rms, min_agree, max_ppl) in cases {
        let path = convert(mix, portable, tag);
        let size = std::fs::metadata(&path).unwrap().len();
        let interleaved = GgufFile::open(&path)
            .unwrap()
            .tensors()
            .iter()
            .any(|t| t.ty.is_interleaved());
        assert_eq!(interleaved, !portable, "{tag}");
        let e = engine(&path);
        let logits = doc_logits(&e, &docs);
        let rms = relative_rms_error(&logits, &logits_f32);
        let agree = logits
            .chunks(vocab)
            .map(argmax)
            .zip(&top1_f32)
            .filter(|(a, b)| a == *b)
            .count() as f64
            / positions as f64;
        let ppl = doc_perplexity(&logits, &docs, vocab);
        let change = ppl / ppl_f32 - 1.0;
        println!(
            "| {tag} | {:.2} | {:.3} | {:+.2}% | {:.1}% | {rms:.4} |",
            size as f64 / 1e6,
            ppl,
            100.0 * change,
            100.0 * agree,
        );
        assert!(rms <= max_rms, "{tag}: rms {rms:.4} > {max_rms}");
        assert!(
            agree >= min_agree,
            "{tag}: top-1 agreement {agree:.4} < {min_agree}"
        );
        assert!(
            change.abs() <= max_ppl,
            "{tag}: perplexity change {change:+.4}, more than {max_ppl}"
        );
        std::fs::remove_file(&path).ok();
    }
}
