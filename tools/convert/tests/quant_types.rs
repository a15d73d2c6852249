//! The types and mixes of issue 11 on the golden checkpoints: each file's tensors carry the
//! types llama-quantize chooses for the mix (fallbacks included), `general.file_type` is the
//! mix's `llama_ftype`, and the model runs with stated bounds on how far it moves from the
//! f32 file (relative RMS error of the logits over the golden prompt, argmax agreement,
//! perplexity). As in `quant_quality.rs`, the golden models have random weights, so the
//! bounds say how far quantization moves predictions; each sits above what was measured
//! when the test was written (noted beside it).

mod common;

use chatglm::build::Mix;
use chatglm::build::{NoProgress, WriteOptions};
use chatglm::gguf::GgufFile;
use chatglm::model::{KvType, Logits, StateOptions};
use chatglm::perplexity::perplexity;
use chatglm::sampler::argmax;
use chatglm::Engine;
use chatglm_convert::checkpoint::Checkpoint;
use chatglm_convert::convert::{convert_mix, describe};
use chatglm_kernels::GgmlType;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn convert_as(name: &str, mix: Mix, tag: &str) -> PathBuf {
    let dir = golden_dir(name);
    let out = temp_dir(&format!("quant-types-{name}")).join(format!("{tag}.gguf"));
    let described = describe(&dir, None).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    let opts = WriteOptions {
        output: out.clone(),
        matrix_type: mix.base(),
        portable: true,
        threads: 2,
        name: "test".into(),
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

/// The type of every matrix of the file, by name.
fn types(path: &Path) -> Vec<(String, GgmlType)> {
    let f = GgufFile::open(path).unwrap();
    f.tensors()
        .iter()
        .filter(|t| t.dims.len() == 2)
        .map(|t| (t.name.clone(), t.ty))
        .collect()
}

fn ty_of(types: &[(String, GgmlType)], name: &str) -> GgmlType {
    types.iter().find(|(n, _)| n == name).unwrap().1
}

fn file_type(path: &Path) -> Option<u64> {
    GgufFile::open(path)
        .unwrap()
        .metadata()
        .get_u64("general.file_type")
        .ok()
}

/// (mix, tag, ftype, max relative rms error, min argmax agreement, max perplexity change)
type Case = (Mix, &'static str, u64, f64, f64, f64);

fn check(name: &str, cases: &[Case]) {
    let text = text();
    let ids = u32s(&golden_json(name)["positions"]["input_ids"]);
    let base = engine(&convert_as(name, Mix::Pure(GgmlType::F32), "f32"));
    let vocab = base.config().vocab_size;
    let ppl_f32 = perplexity(&base, &text, 256, KvType::F32, 0, &mut |_, _| {}).unwrap();
    let logits_f32 = all_logits(&base, &ids);
    let greedy_f32: Vec<u32> = logits_f32.chunks(vocab).map(argmax).collect();
    for &(mix, tag, ftype, max_rms, min_agree, max_ppl) in cases {
        let path = convert_as(name, mix, tag);
        assert_eq!(file_type(&path), Some(ftype), "{name} {tag}");
        let e = engine(&path);
        let logits = all_logits(&e, &ids);
        let rms = relative_rms_error(&logits, &logits_f32);
        let greedy: Vec<u32> = logits.chunks(vocab).map(argmax).collect();
        let agree = greedy
            .iter()
            .zip(&greedy_f32)
            .filter(|(a, b)| a == b)
            .count() as f64
            / ids.len() as f64;
        let ppl = perplexity(&e, &text, 256, KvType::F32, 0, &mut |_, _| {}).unwrap();
        let change = (ppl.ppl / ppl_f32.ppl - 1.0).abs();
        println!(
            "{name} {tag}: logits rms error {rms:.4}, argmax agrees at {:.1}%, ppl {:.3} vs {:.3} ({:+.3}%)",
            100.0 * agree,
            ppl.ppl,
            ppl_f32.ppl,
            100.0 * (ppl.ppl / ppl_f32.ppl - 1.0)
        );
        assert!(rms <= max_rms, "{name} {tag}: rms {rms:.4}");
        assert!(agree >= min_agree, "{name} {tag}: agreement {agree:.3}");
        assert!(change <= max_ppl, "{name} {tag}: ppl change {change:.4}");
    }
}

#[test]
fn mixes_choose_llama_quantize_types() {
    // glm2-small: hidden 256, ffn 688 (not a multiple of 256, nor of 32), 3 layers (more
    // bits: n/8 = 0 and 7n/8 = 2, so layer 2 only).
    let name = "glm2-small";
    let t = types(&convert_as(name, Mix::Q4KM, "q4_k_m-types"));
    assert_eq!(ty_of(&t, "output.weight"), GgmlType::Q6_K);
    assert_eq!(ty_of(&t, "token_embd.weight"), GgmlType::Q4_K);
    // The fused QKV follows the attn_v rules: Q6_K on the more-bits layer only.
    assert_eq!(ty_of(&t, "blk.0.attn_qkv.weight"), GgmlType::Q4_K);
    assert_eq!(ty_of(&t, "blk.2.attn_qkv.weight"), GgmlType::Q6_K);
    assert_eq!(ty_of(&t, "blk.1.attn_output.weight"), GgmlType::Q4_K);
    assert_eq!(ty_of(&t, "blk.1.ffn_up.weight"), GgmlType::Q4_K);
    // ffn_down rows of 688: Q6_K -> Q8_0 (layer 2) and Q4_K -> Q5_0 (0, 1) need whole blocks
    // of 32 as well, so llama-quantize stores them as F16.
    for l in 0..3 {
        assert_eq!(
            ty_of(&t, &format!("blk.{l}.ffn_down.weight")),
            GgmlType::F16
        );
    }
    let t = types(&convert_as(name, Mix::Q5KS, "q5_k_s-types"));
    assert_eq!(ty_of(&t, "blk.1.ffn_down.weight"), GgmlType::F16);
    assert_eq!(ty_of(&t, "blk.1.attn_qkv.weight"), GgmlType::Q5_K);
    let t = types(&convert_as(name, Mix::Q5_0, "q5_0-types"));
    assert_eq!(ty_of(&t, "output.weight"), GgmlType::Q6_K);
    assert_eq!(ty_of(&t, "blk.1.ffn_up.weight"), GgmlType::Q5_0);
    assert_eq!(ty_of(&t, "blk.1.ffn_down.weight"), GgmlType::F16);
}

#[test]
fn glm2_small_runs_every_new_type() {
    // Measured when written (scalar and AVX2 kernels give the same bits): rms error, argmax
    // agreement, perplexity change.
    check(
        "glm2-small",
        &[
            // 0.0051, 98.6%, +0.09%
            (Mix::Pure(GgmlType::BF16), "bf16", 32, 0.007, 0.96, 0.003),
            // 0.060, 88.8%, -1.01%
            (Mix::Q6K, "q6_k", 18, 0.075, 0.84, 0.016),
            // 0.125, 81.1%, -0.28%
            (Mix::Q5_0, "q5_0", 8, 0.16, 0.76, 0.01),
            // 0.117, 82.2%, -1.34%
            (Mix::Q5_1, "q5_1", 9, 0.15, 0.77, 0.02),
            // 0.106, 79.8%, -1.08%
            (Mix::Q5KS, "q5_k_s", 16, 0.135, 0.75, 0.017),
            // 0.093, 80.3%, -1.58%
            (Mix::Q5KM, "q5_k_m", 17, 0.12, 0.75, 0.022),
            // 0.190, 67.2%, -0.70%
            (Mix::Q4KS, "q4_k_s", 14, 0.24, 0.62, 0.012),
            // 0.174, 66.7%, +0.49%
            (Mix::Q4KM, "q4_k_m", 15, 0.22, 0.62, 0.01),
            // 0.224, 65.8%, +2.36%
            (Mix::Iq4Nl, "iq4_nl", 25, 0.28, 0.6, 0.032),
            // 0.338, 50.3%, -1.20%
            (Mix::Q3KM, "q3_k_m", 12, 0.42, 0.45, 0.02),
            // 0.214, 63.7%, +2.51%
            (Mix::Iq4Xs, "iq4_xs", 30, 0.27, 0.58, 0.034),
            // 0.729, 18.9%, -8.15% (2 bits of random weights: little of the model is left)
            (Mix::Q2K, "q2_k", 10, 0.9, 0.14, 0.11),
        ],
    );
}

#[test]
fn glm3_tiny_runs_every_new_type() {
    // Hidden 64: no row is a whole super-block, so every k-quant falls back as in
    // llama-quantize (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> IQ4_NL).
    let t = types(&convert_as("glm3-tiny", Mix::Q4KM, "q4_k_m-types"));
    assert!(
        t.iter()
            .all(|(_, ty)| matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0)),
        "{t:?}"
    );
    check(
        "glm3-tiny",
        &[
            // 0.0051, 99.5%, -0.01%
            (Mix::Pure(GgmlType::BF16), "bf16", 32, 0.007, 0.97, 0.002),
            // 0.022, 94.9%, +0.12%
            (Mix::Q6K, "q6_k", 18, 0.03, 0.9, 0.004),
            // 0.144, 69.6%, +0.55%
            (Mix::Q5_0, "q5_0", 8, 0.18, 0.64, 0.01),
            // 0.115, 80.4%, +1.08%
            (Mix::Q5_1, "q5_1", 9, 0.145, 0.75, 0.017),
            // 0.125, 73.8%, +1.20%
            (Mix::Q4KM, "q4_k_m", 15, 0.16, 0.68, 0.018),
            // 0.099, 82.2%, +0.97%
            (Mix::Q5KM, "q5_k_m", 17, 0.125, 0.77, 0.015),
            // 0.221, 60.3%, -0.75%
            (Mix::Iq4Nl, "iq4_nl", 25, 0.28, 0.55, 0.012),
            // The same file as iq4_nl here (every Q2_K/Q3_K matrix falls back to IQ4_NL).
            (Mix::Q2K, "q2_k", 10, 0.28, 0.55, 0.012),
        ],
    );
}

/// The bytes of every tensor, at every mix the converter writes, equal those of llama.cpp's own
/// `llama-quantize` from the same f32 values: `data/llama_quantize_glm2_small.json` holds the
/// type and SHA-256 of each tensor of the files llama.cpp 0c1e570 (vendored by
/// llama-cpp-python 0.3.36, `llama_model_quantize`, default parameters) wrote from
/// `chatglm-convert ../shared/golden/glm2-small -q f32 --portable`, and its `general.file_type`.
#[test]
fn quant_types_bytes_equal_llama_quantize() {
    use sha2::{Digest, Sha256};
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/llama_quantize_glm2_small.json"
    ))
    .unwrap();
    let want: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mixes = want["mixes"].as_object().unwrap();
    assert_eq!(mixes.len(), 12);
    for (name, expected) in mixes {
        let mix = Mix::from_name(name).unwrap();
        let path = convert_as("glm2-small", mix, &format!("llama-{name}"));
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(
            file.metadata().get_u32("general.file_type").unwrap(),
            expected["file_type"].as_u64().unwrap() as u32,
            "{name}"
        );
        let tensors = expected["tensors"].as_object().unwrap();
        assert_eq!(file.tensors().len(), tensors.len(), "{name}");
        for t in file.tensors() {
            let e = &tensors[&t.name];
            assert_eq!(
                t.ty.ggml_name(),
                e["type"].as_str().unwrap(),
                "{name} {}",
                t.name
            );
            let digest: String = Sha256::digest(file.tensor_data(t))
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(digest, e["sha256"].as_str().unwrap(), "{name} {}", t.name);
        }
        std::fs::remove_file(&path).ok();
    }
}
