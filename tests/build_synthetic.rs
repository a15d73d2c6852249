//! Synthetic models: written by `chatglm::build`, loadable, deterministic in the seed and
//! independent of the thread count.

use chatglm::build::synthetic::{write_synthetic, Preset};
use chatglm::build::{build_plan, NoProgress, WriteOptions};
use chatglm::gguf::GgufFile;
use chatglm::model::ModelConfig;
use chatglm::{Engine, GenerateOptions, Session, SessionOptions};
use chatglm_kernels::GgmlType;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chatglm-build-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn write(name: &str, seed: u64, threads: usize) -> PathBuf {
    let out = temp(name);
    let opts = WriteOptions {
        output: out.clone(),
        matrix_type: GgmlType::Q4_0,
        portable: true,
        threads,
        name: "synthetic-tiny".into(),
    };
    write_synthetic(
        Preset::Tiny,
        seed,
        &opts,
        &mut NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    out
}

#[test]
fn synthetic_tiny_is_a_loadable_model() {
    let out = write("tiny.gguf", 1, 2);
    let file = GgufFile::open(&out).unwrap();
    let config = Preset::Tiny.config();
    assert_eq!(ModelConfig::from_gguf(&file).unwrap(), config);
    assert_eq!(
        file.tensors().len(),
        build_plan(&config, GgmlType::Q4_0, true).unwrap().len()
    );
    // Same seed, same bytes whatever the threads; another seed, other bytes.
    let again = write("again.gguf", 1, 1);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&again).unwrap());
    let other = write("other.gguf", 2, 2);
    assert!(std::fs::read(&out).unwrap() != std::fs::read(&other).unwrap());

    // It runs, and a seeded sampler makes it reproducible.
    let engine = Arc::new(Engine::open(&out).unwrap());
    let run = || {
        let mut s = Session::new(Arc::clone(&engine), SessionOptions::default()).unwrap();
        let mut opts = GenerateOptions {
            max_new_tokens: 16,
            ..GenerateOptions::default()
        };
        opts.sampler.seed = 7;
        let mut streamed = String::new();
        let g = s
            .chat("Hello there", &opts, &mut |t| {
                streamed.push_str(t);
                true
            })
            .unwrap();
        assert_eq!(streamed, g.text);
        g.ids
    };
    let first = run();
    assert_eq!(first.len(), 16);
    assert_eq!(first, run());
}

/// The tensor table against a written file: every entry is there with its shape (and a type
/// its role allows), and the file holds no other tensor.
#[test]
fn the_tensor_table_describes_the_written_file_exactly() {
    use chatglm::arch::tensors::{in_file_order, Role};
    let config = Preset::Tiny.config();
    for portable in [true, false] {
        let out = temp(&format!("table-{portable}.gguf"));
        let opts = WriteOptions {
            output: out.clone(),
            matrix_type: GgmlType::Q8_0,
            portable,
            threads: 2,
            name: "table".into(),
        };
        write_synthetic(
            Preset::Tiny,
            3,
            &opts,
            &mut NoProgress,
            &AtomicBool::new(false),
        )
        .unwrap();
        let file = GgufFile::open(&out).unwrap();
        let mut expected = Vec::new();
        for (spec, layer) in in_file_order(config.num_layers) {
            let name = spec.gguf_name(layer);
            let t = file
                .tensor(&name)
                .unwrap_or_else(|| panic!("{name} missing"));
            let dims: Vec<u64> = spec
                .shape(&config)
                .unwrap()
                .iter()
                .rev()
                .map(|&d| d as u64)
                .collect();
            assert_eq!(t.dims, dims, "{name}");
            match spec.role {
                Role::Norm | Role::Bias => assert_eq!(t.ty, GgmlType::F32, "{name}"),
                Role::Matrix => assert_eq!(t.ty.portable(), GgmlType::Q8_0, "{name}"),
            }
            expected.push(name);
        }
        let names: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names, expected,
            "the file holds the table's tensors, in its order"
        );
        let _ = std::fs::remove_file(&out);
    }
}

/// The synthetic tiny model with metadata values replaced (or added), as a parsed file.
fn patched(overrides: &[(&str, chatglm::gguf::Value)]) -> GgufFile {
    use chatglm::gguf::{GgufWriter, Metadata, TensorDesc};
    let src = GgufFile::open(write("patch-src.gguf", 1, 2)).unwrap();
    let mut md = Metadata::new();
    for (key, value) in src.metadata().iter() {
        let value = overrides
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(value, |(_, v)| v);
        md.push(key, value.clone()).unwrap();
    }
    for (key, value) in overrides {
        if src.metadata().get(key).is_none() {
            md.push(*key, value.clone()).unwrap();
        }
    }
    let descs: Vec<TensorDesc> = src
        .tensors()
        .iter()
        .map(|t| TensorDesc::new(t.name.clone(), &t.dims, t.ty))
        .collect();
    let mut w = GgufWriter::new(Vec::new(), &md, &descs).unwrap();
    for t in src.tensors() {
        w.write_tensor(&t.name, src.tensor_data(t)).unwrap();
    }
    GgufFile::from_bytes(w.finish().unwrap()).unwrap()
}

/// Counts and constants read from a file are checked before anything is sized from them, and
/// the error names the key (issue 15: a block count of 0x7fffffff aborted the allocator).
#[test]
fn absurd_metadata_is_refused_naming_the_key() {
    use chatglm::arch::keys;
    use chatglm::gguf::Value;
    use chatglm::model::{Model, ModelError};
    let layers = Preset::Tiny.config().num_layers as u32;
    let cases: Vec<(&str, Vec<(&str, Value)>)> = vec![
        (
            keys::BLOCK_COUNT,
            vec![(keys::BLOCK_COUNT, Value::U32(0x7fff_ffff))],
        ),
        (
            keys::BLOCK_COUNT,
            vec![(keys::BLOCK_COUNT, Value::U32(layers + 1))],
        ),
        (
            keys::ROPE_RATIO,
            vec![(keys::ROPE_RATIO, Value::F32(f32::NAN))],
        ),
        (keys::ROPE_RATIO, vec![(keys::ROPE_RATIO, Value::F32(-2.0))]),
        (
            keys::ROPE_FREQ_BASE,
            vec![(keys::ROPE_FREQ_BASE, Value::F32(f32::NAN))],
        ),
        (
            keys::ROPE_FREQ_BASE,
            vec![(keys::ROPE_FREQ_BASE, Value::F32(f32::INFINITY))],
        ),
        (
            keys::ROPE_FREQ_BASE,
            vec![(keys::ROPE_FREQ_BASE, Value::F32(0.5))],
        ),
        (keys::RMS_EPS, vec![(keys::RMS_EPS, Value::F32(f32::NAN))]),
        (keys::RMS_EPS, vec![(keys::RMS_EPS, Value::F32(1.0e30))]),
        (keys::RMS_EPS, vec![(keys::RMS_EPS, Value::F32(0.0))]),
        (
            keys::ROPE_SCALING_FACTOR,
            vec![
                (keys::ROPE_SCALING_TYPE, Value::String("linear".into())),
                (keys::ROPE_SCALING_FACTOR, Value::F32(f32::NAN)),
            ],
        ),
    ];
    for (key, overrides) in cases {
        let file = Arc::new(patched(&overrides));
        match Model::from_gguf(file) {
            Err(ModelError::Metadata { key: k, reason }) => {
                assert_eq!(k, key, "{overrides:?}: {reason}");
                let msg = ModelError::Metadata { key: k, reason }.to_string();
                assert!(msg.contains(key), "{msg}");
            }
            other => panic!("{overrides:?}: expected a metadata error, got {other:?}"),
        }
    }
    // The unpatched file loads.
    Model::from_gguf(Arc::new(patched(&[]))).unwrap();
}
