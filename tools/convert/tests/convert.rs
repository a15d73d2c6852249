//! The converter against the golden checkpoints: every layout and storage type converts at
//! every type; the tensors hold exactly the checkpoint's values (f32) or exactly what the
//! reference quantizer makes of them; the metadata reads back; bad inputs fail cleanly and
//! leave nothing under the output name.

mod common;

use chatglm::arch::{keys, Family};
use chatglm::build::{BuildError, NoProgress, Role, WriteOptions};
use chatglm::gguf::GgufFile;
use chatglm::model::ModelConfig;
use chatglm::tokenizer::SpmModel;
use chatglm_convert::checkpoint::Checkpoint;
use chatglm_convert::config::HfConfig;
use chatglm_convert::convert::{convert, TokenizerSource};
use chatglm_convert::error::ConvertError;
use chatglm_kernels::{quant, GgmlType};
use common::*;
use std::sync::atomic::AtomicBool;

const TYPES: [GgmlType; 5] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
];

#[test]
fn every_golden_checkpoint_converts_at_every_type_to_the_reference_bytes() {
    for name in GOLDEN.into_iter().chain(GOLDEN_GLM4) {
        let dir = golden_dir(name);
        let ckpt = Checkpoint::open(&dir).unwrap();
        let config = HfConfig::from_file(&dir.join("config.json")).unwrap();
        let tmp = temp_dir(name);
        for ty in TYPES {
            let out = tmp.join(format!("{name}-{ty}.gguf"));
            let summary = convert_checkpoint(&dir, ty, &out).unwrap();
            let file = GgufFile::open(&out).unwrap();
            assert_eq!(
                file.tensors().len(),
                2 + 7 * config.num_layers + 1,
                "{name} {ty}"
            );
            assert_eq!(summary.file_bytes, std::fs::metadata(&out).unwrap().len());
            for t in &summary.plan {
                let info = file
                    .tensor(&t.name)
                    .unwrap_or_else(|| panic!("{name}: {} missing", t.name));
                assert_eq!(info.dims, t.ggml_dims(), "{}", t.name);
                let values = ckpt.read_f32(&t.hf_name).unwrap();
                let data = file.tensor_data(info);
                match t.role {
                    Role::Norm | Role::Bias => assert_eq!(info.ty, GgmlType::F32, "{}", t.name),
                    Role::Matrix if t.cols() % ty.block_size() == 0 => {
                        assert_eq!(info.ty, ty, "{}", t.name)
                    }
                    Role::Matrix => assert_eq!(info.ty, GgmlType::F16, "{} falls back", t.name),
                }
                if info.ty == GgmlType::F32 {
                    let back: Vec<f32> = data
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    assert_eq!(
                        back, values,
                        "{name} {ty}: {} differs from the checkpoint",
                        t.name
                    );
                } else {
                    let mut want = vec![0u8; data.len()];
                    for (row, out) in values
                        .chunks(t.cols())
                        .zip(want.chunks_mut(data.len() / t.shape[0]))
                    {
                        quant::quantize_row(info.ty, row, out).unwrap();
                    }
                    assert!(
                        data == want.as_slice(),
                        "{name} {ty}: {} differs from the reference quantizer",
                        t.name
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

#[test]
fn metadata_reads_back_as_the_checkpoint_config() {
    for name in GOLDEN {
        let dir = golden_dir(name);
        let out = temp_dir(name).join("m.gguf");
        convert_checkpoint(&dir, GgmlType::Q8_0, &out).unwrap();
        let file = GgufFile::open(&out).unwrap();
        let got = ModelConfig::from_gguf(&file).unwrap();
        let hf = HfConfig::from_file(&dir.join("config.json")).unwrap();
        let family = if name.starts_with("glm3") {
            Family::ChatGlm3
        } else {
            Family::ChatGlm2
        };
        assert_eq!(got, hf.to_model_config(family), "{name}");
        let md = file.metadata();
        assert_eq!(md.get_str(keys::GENERAL_ARCHITECTURE).unwrap(), "chatglm");
        assert_eq!(md.get_u32(keys::GENERAL_FILE_TYPE).unwrap(), 7);
        // The vocabulary: SentencePiece pieces, then the specials, then padding, one per row.
        let spm = SpmModel::from_file(dir.join("tokenizer.model")).unwrap();
        let tokens = md.get_str_array(keys::TOKENIZER_TOKENS).unwrap();
        assert_eq!(tokens.len(), hf.padded_vocab_size);
        let n = spm.pieces.len();
        for (i, p) in spm.pieces.iter().enumerate() {
            assert_eq!(tokens[i], p.piece);
        }
        for (i, s) in family.special_tokens().iter().enumerate() {
            assert_eq!(tokens[n + i], *s);
        }
        let specials = family.special_tokens().len();
        assert_eq!(tokens[n + specials], format!("[PAD{}]", n + specials));
        let types = md.get_i32_array(keys::TOKENIZER_TOKEN_TYPE).unwrap();
        assert_eq!(types[n], 3, "specials are control pieces");
        assert_eq!(*types.last().unwrap(), 5, "padding is unused");
        assert_eq!(
            md.get_u32(keys::TOKENIZER_SP_VOCAB_SIZE).unwrap() as usize,
            n
        );
    }
}

#[test]
fn a_failed_or_cancelled_conversion_leaves_nothing_under_the_output_name() {
    let tmp = temp_dir("fail");
    let out = tmp.join("out.gguf");
    // A checkpoint whose config does not match its weights.
    let dir = tmp.join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "tokenizer.model",
        "tokenizer_config.json",
        "pytorch_model.bin",
    ] {
        std::fs::copy(golden_dir("glm2-tiny").join(f), dir.join(f)).unwrap();
    }
    let text = std::fs::read_to_string(golden_dir("glm2-tiny").join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        text.replace("\"ffn_hidden_size\": 128", "\"ffn_hidden_size\": 96"),
    )
    .unwrap();
    match convert_checkpoint(&dir, GgmlType::Q4_0, &out) {
        Err(ConvertError::ShapeMismatch { name, .. }) => {
            assert!(name.contains("dense_h_to_4h"), "{name}")
        }
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        1,
        "only the checkpoint dir remains"
    );

    // Cancelled before the first tensor.
    let ckpt = Checkpoint::open(&golden_dir("glm2-tiny")).unwrap();
    let config = HfConfig::from_file(&golden_dir("glm2-tiny").join("config.json")).unwrap();
    let spm = TokenizerSource::Spm(Box::new(
        SpmModel::from_file(golden_dir("glm2-tiny").join("tokenizer.model")).unwrap(),
    ));
    let opts = WriteOptions {
        output: out.clone(),
        matrix_type: GgmlType::Q4_0,
        portable: true,
        threads: 1,
        name: "x".into(),
    };
    let r = convert(
        &ckpt,
        &config.to_model_config(Family::ChatGlm2),
        Family::ChatGlm2,
        &spm,
        &opts,
        &mut NoProgress,
        &AtomicBool::new(true),
    );
    assert!(
        matches!(r, Err(ConvertError::Build(BuildError::Interrupted))),
        "{r:?}"
    );
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn an_unknown_checkpoint_tensor_is_refused_by_name() {
    // The plan of a model with one layer fewer than the checkpoint leaves layer 1 unexpected.
    let dir = golden_dir("glm2-tiny");
    let ckpt = Checkpoint::open(&dir).unwrap();
    let hf = HfConfig::from_file(&dir.join("config.json")).unwrap();
    let mut config = hf.to_model_config(Family::ChatGlm2);
    config.num_layers = 1;
    let spm = TokenizerSource::Spm(Box::new(
        SpmModel::from_file(dir.join("tokenizer.model")).unwrap(),
    ));
    let out = temp_dir("unknown").join("x.gguf");
    let opts = WriteOptions {
        output: out.clone(),
        matrix_type: GgmlType::F32,
        portable: true,
        threads: 1,
        name: "x".into(),
    };
    match convert(
        &ckpt,
        &config,
        Family::ChatGlm2,
        &spm,
        &opts,
        &mut NoProgress,
        &AtomicBool::new(false),
    ) {
        Err(ConvertError::UnexpectedTensor(name)) => assert!(name.contains("layers.1."), "{name}"),
        other => panic!("expected an unexpected-tensor error, got {other:?}"),
    }
    assert!(!out.exists());
}

/// Without `--portable`, matrices (but the embedding) are stored row-interleaved: the same
/// blocks as the portable file, rearranged, and the model computes bit-identical logits.
#[test]
fn default_files_hold_the_portable_blocks_interleaved() {
    use chatglm::model::{KvType, Logits, Model, StateOptions};
    use std::sync::Arc;
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let tmp = temp_dir("interleaved");
        let (portable, fast) = (tmp.join("portable.gguf"), tmp.join("fast.gguf"));
        convert_checkpoint_as(&golden_dir("glm2-small"), ty, &portable, true).unwrap();
        let summary = convert_checkpoint_as(&golden_dir("glm2-small"), ty, &fast, false).unwrap();
        let (p, f) = (
            GgufFile::open(&portable).unwrap(),
            GgufFile::open(&fast).unwrap(),
        );
        let mut interleaved = 0;
        for t in &summary.plan {
            let (pi, fi) = (p.tensor(&t.name).unwrap(), f.tensor(&t.name).unwrap());
            if fi.ty.is_interleaved() {
                interleaved += 1;
                assert_eq!(fi.ty.portable(), pi.ty);
                let rows = t.shape[0];
                let (back_ty, back) =
                    chatglm_kernels::deinterleave(fi.ty, rows, t.cols(), f.tensor_data(fi))
                        .unwrap();
                assert_eq!(back_ty, pi.ty);
                assert!(back == p.tensor_data(pi), "{}: blocks differ", t.name);
            } else {
                assert_eq!(fi.ty, pi.ty, "{}", t.name);
                assert!(f.tensor_data(fi) == p.tensor_data(pi), "{}", t.name);
            }
        }
        // qkv, attn_output and ffn_up of 3 layers, and the output layer (ffn_down's 688-wide
        // rows are f16, the embedding stays portable).
        assert_eq!(interleaved, 3 * 3 + 1, "{ty}");
        assert_eq!(f.tensor("token_embd.weight").unwrap().ty, ty);

        let ids = u32s(&golden_json("glm2-small")["prefill"]["input_ids"]);
        let logits = |path: &std::path::Path| {
            let model = Model::from_gguf(Arc::new(GgufFile::open(path).unwrap())).unwrap();
            let opts = StateOptions {
                context: 64,
                batch: 64,
                kv_type: KvType::F32,
                threads: 2,
            };
            let mut st = model.new_state(opts).unwrap();
            model
                .forward(&mut st, &ids, 0, Logits::All)
                .unwrap()
                .to_vec()
        };
        assert!(
            logits(&portable) == logits(&fast),
            "{ty}: logits differ between layouts"
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

/// A layer count in config.json is bounded by the checkpoint's tensors before the plan is
/// sized from it (issue 15: `"num_layers": 2147483648` aborted the allocator).
#[test]
fn a_layer_count_beyond_the_checkpoint_is_refused() {
    let tmp = temp_dir("layers");
    let text = std::fs::read_to_string(golden_dir("glm2-tiny").join("config.json")).unwrap();
    for layers in ["2147483648", "3"] {
        let dir = tmp.join(format!("ckpt-{layers}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "tokenizer.model",
            "tokenizer_config.json",
            "pytorch_model.bin",
        ] {
            std::fs::copy(golden_dir("glm2-tiny").join(f), dir.join(f)).unwrap();
        }
        let patched = text.replace("\"num_layers\": 2,", &format!("\"num_layers\": {layers},"));
        assert_ne!(patched, text);
        std::fs::write(dir.join("config.json"), patched).unwrap();
        let out = tmp.join("out.gguf");
        match convert_checkpoint(&dir, GgmlType::F32, &out) {
            Err(ConvertError::Config(chatglm_convert::config::ConfigError::Unsupported {
                field,
                value,
                reason,
            })) => {
                assert_eq!((field, value.as_str()), ("num_layers", layers), "{reason}");
                assert!(reason.contains("at most 2 layers"), "{reason}");
            }
            other => panic!("{layers} layers: expected a config error, got {other:?}"),
        }
        assert!(!out.exists());
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn an_output_in_a_missing_folder_is_one_line_naming_the_output() {
    let out = std::env::temp_dir()
        .join(format!("chatglm-convert-nofolder-{}", std::process::id()))
        .join("tiny.gguf");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_chatglm-convert"))
        .args(["--synthetic", "tiny", "-q", "q4_0", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    let error: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].contains(&*out.to_string_lossy()), "{stderr}");
    assert!(!error[0].contains(".tmp"), "{stderr}");
}
