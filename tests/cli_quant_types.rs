//! Files whose matrices have types this runtime cannot multiply: `chatglm info` still shows
//! them (marking what cannot run), and `chatglm run` refuses with one error naming every such
//! tensor and its type.

use chatglm::build::synthetic::{write_synthetic, Preset};
use chatglm::build::{NoProgress, WriteOptions};
use chatglm::gguf::{GgufFile, GgufWriter, TensorDesc};
use chatglm_kernels::GgmlType;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;

/// A tiny synthetic model whose `blk.0.ffn_up.weight` is rewritten as F64 and
/// `output.weight` as I16 (ggml types with block size 1, so any shape is whole blocks).
fn model_with_unrunnable_types() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chatglm-cli-qt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("tiny.gguf");
    let opts = WriteOptions {
        output: src.clone(),
        matrix_type: GgmlType::Q8_0,
        portable: true,
        threads: 2,
        name: "tiny".into(),
    };
    write_synthetic(
        Preset::Tiny,
        3,
        &opts,
        &mut NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    let file = GgufFile::open(&src).unwrap();
    let retype = |name: &str| match name {
        "blk.0.ffn_up.weight" => Some(GgmlType::F64),
        "output.weight" => Some(GgmlType::I16),
        _ => None,
    };
    let descs: Vec<TensorDesc> = file
        .tensors()
        .iter()
        .map(|t| TensorDesc::new(t.name.clone(), &t.dims, retype(&t.name).unwrap_or(t.ty)))
        .collect();
    let out = dir.join("unrunnable.gguf");
    let mut w = GgufWriter::new(
        std::io::BufWriter::new(std::fs::File::create(&out).unwrap()),
        file.metadata(),
        &descs,
    )
    .unwrap();
    for (t, d) in file.tensors().iter().zip(&descs) {
        let bytes = match retype(&t.name) {
            Some(_) => vec![0u8; d.size_bytes().unwrap() as usize],
            None => file.tensor_data(t).to_vec(),
        };
        w.write_tensor(&t.name, &bytes).unwrap();
    }
    w.finish().unwrap();
    out
}

#[test]
fn info_shows_and_run_names_every_unrunnable_tensor() {
    let m = model_with_unrunnable_types();
    let m = m.to_str().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_chatglm"))
        .args(["info", "-m", m])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let line = |name: &str| text.lines().find(|l| l.contains(name)).unwrap().to_string();
    assert!(line("blk.0.ffn_up.weight").contains("f64"), "{text}");
    assert!(line("blk.0.ffn_up.weight").contains("cannot run"), "{text}");
    assert!(line("  output.weight ").contains("cannot run"), "{text}");
    assert!(
        !line("blk.1.ffn_up.weight").contains("cannot run"),
        "{text}"
    );
    assert!(
        text.contains("2 tensors have types this runtime cannot run yet"),
        "{text}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_chatglm"))
        .args(["info", "-m", m, "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs: Vec<bool> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["runs_here"].as_bool().unwrap())
        .collect();
    assert_eq!(runs.iter().filter(|r| !**r).count(), 2);

    let o = Command::new(env!("CARGO_BIN_EXE_chatglm"))
        .args(["run", "-m", m, "-p", "hi", "-n", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("2 tensors have types this runtime cannot run yet"),
        "{err}"
    );
    assert!(
        err.contains("tensor \"blk.0.ffn_up.weight\" has type F64 (28)"),
        "{err}"
    );
    assert!(
        err.contains("tensor \"output.weight\" has type I16 (25)"),
        "{err}"
    );
    assert!(err.contains("supported: F32, F16"), "{err}");
}
