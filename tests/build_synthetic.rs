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
