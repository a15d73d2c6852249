//! Helpers shared by the converter's integration tests.
#![allow(dead_code)]

use chatglm::build::{NoProgress, Summary, WriteOptions};
use chatglm_convert::checkpoint::Checkpoint;
use chatglm_convert::convert::{convert, describe};
use chatglm_convert::error::ConvertError;
use chatglm_kernels::GgmlType;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub mod golden;

/// The golden checkpoints of `../shared/golden`.
pub const GOLDEN: [&str; 3] = ["glm2-tiny", "glm2-small", "glm3-tiny"];

/// The golden GLM-4 checkpoints of `../shared/golden-glm4`.
pub const GOLDEN_GLM4: [&str; 3] = ["glm4-tiny", "glm4-small", "glm4-1m-tiny"];

/// `../shared/golden/<name>`, or `../shared/golden-glm4/<name>` for a GLM-4 checkpoint
/// (relative to the repository root).
pub fn golden_dir(name: &str) -> PathBuf {
    let set = if name.starts_with("glm4") {
        "golden-glm4"
    } else {
        "golden"
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(set)
        .join(name)
}

/// A fresh, empty directory under the system's temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("chatglm-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Converts the checkpoint in `dir` to `out` with matrices of type `ty`, in ggml's portable
/// layouts (`--portable`).
pub fn convert_checkpoint(dir: &Path, ty: GgmlType, out: &Path) -> Result<Summary, ConvertError> {
    convert_checkpoint_as(dir, ty, out, true)
}

/// Converts the checkpoint in `dir` to `out` with matrices of type `ty`, as the CLI does
/// (`portable` as `--portable`).
pub fn convert_checkpoint_as(
    dir: &Path,
    ty: GgmlType,
    out: &Path,
    portable: bool,
) -> Result<Summary, ConvertError> {
    convert_checkpoint_family(dir, ty, out, portable, None)
}

/// As [`convert_checkpoint_as`], with the family given (`None`: detected).
pub fn convert_checkpoint_family(
    dir: &Path,
    ty: GgmlType,
    out: &Path,
    portable: bool,
    forced: Option<chatglm::arch::Family>,
) -> Result<Summary, ConvertError> {
    let described = describe(dir, forced)?;
    let ckpt = Checkpoint::open(dir)?;
    let opts = WriteOptions {
        output: out.to_path_buf(),
        matrix_type: ty,
        portable,
        threads: 2,
        name: "test".into(),
    };
    convert(
        &ckpt,
        &described.config,
        described.family,
        &described.tokenizer,
        &opts,
        &mut NoProgress,
        &AtomicBool::new(false),
    )
}

/// Reads `golden.json` of a golden checkpoint.
pub fn golden_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(golden_dir(name).join("golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A JSON array of numbers as f32.
pub fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// A JSON array of ids as u32.
pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
