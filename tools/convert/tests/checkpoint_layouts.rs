//! Checkpoint layouts built from copies of the golden checkpoints: preference between formats,
//! shards without an index, and the errors for missing, truncated or inconsistent files.

use std::fs;
use std::path::{Path, PathBuf};

use chatglm_convert::checkpoint::{Checkpoint, CheckpointError, WeightFormat};

fn golden_dir(name: &str) -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/golden"
    ))
    .join(name)
}

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("checkpoint_layouts")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies `files` of golden checkpoint `model` into `dir`.
fn copy(model: &str, files: &[&str], dir: &Path) {
    for f in files {
        fs::copy(golden_dir(model).join(f), dir.join(f)).unwrap();
        // The golden files are read-only; the copies must be writable to be truncated.
        let mut perm = fs::metadata(dir.join(f)).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        fs::set_permissions(dir.join(f), perm).unwrap();
    }
}

fn truncate(path: &Path, keep: f64) {
    let bytes = fs::read(path).unwrap();
    let n = (bytes.len() as f64 * keep) as usize;
    fs::write(path, &bytes[..n]).unwrap();
}

const SMALL_SHARDS: [&str; 2] = [
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
];
const GLM3_SHARDS: [&str; 2] = [
    "pytorch_model-00001-of-00002.bin",
    "pytorch_model-00002-of-00002.bin",
];

#[test]
fn missing_directory() {
    let dir = scratch("missing").join("nothing-here");
    assert!(matches!(
        Checkpoint::open(&dir).unwrap_err(),
        CheckpointError::DirNotFound(p) if p == dir
    ));
}

#[test]
fn directory_without_weights() {
    let dir = scratch("noweights");
    copy("glm2-tiny", &["config.json", "tokenizer.model"], &dir);
    let err = Checkpoint::open(&dir).unwrap_err();
    assert!(matches!(&err, CheckpointError::NoWeights(p) if *p == dir));
    assert!(err.to_string().contains("pytorch_model.bin"));
}

#[test]
fn safetensors_preferred_over_bin() {
    let dir = scratch("both");
    copy("glm2-small", &SMALL_SHARDS, &dir);
    copy("glm2-small", &["model.safetensors.index.json"], &dir);
    copy("glm2-tiny", &["pytorch_model.bin"], &dir);
    let ckpt = Checkpoint::open(&dir).unwrap();
    assert_eq!(ckpt.format(), WeightFormat::Safetensors);
    assert_eq!(
        ckpt.get("transformer.encoder.final_layernorm.weight")
            .unwrap()
            .shape,
        [256]
    );
}

#[test]
fn numbered_shards_without_index() {
    let dir = scratch("noindex");
    copy("glm3-tiny", &GLM3_SHARDS, &dir);
    let ckpt = Checkpoint::open(&dir).unwrap();
    let golden = Checkpoint::open(&golden_dir("glm3-tiny")).unwrap();
    assert!(ckpt.tensors().eq(golden.tensors()));
    let name = "transformer.output_layer.weight";
    assert_eq!(ckpt.read_f32(name).unwrap(), golden.read_f32(name).unwrap());

    fs::remove_file(dir.join(GLM3_SHARDS[0])).unwrap();
    match Checkpoint::open(&dir).unwrap_err() {
        CheckpointError::MissingShard { shard, .. } => assert_eq!(shard, GLM3_SHARDS[0]),
        e => panic!("{e}"),
    }
}

#[test]
fn index_naming_a_missing_shard() {
    let dir = scratch("missingshard");
    copy(
        "glm3-tiny",
        &["pytorch_model.bin.index.json", GLM3_SHARDS[0]],
        &dir,
    );
    match Checkpoint::open(&dir).unwrap_err() {
        CheckpointError::MissingShard { shard, by } => {
            assert_eq!(shard, GLM3_SHARDS[1]);
            assert_eq!(by, dir.join("pytorch_model.bin.index.json"));
        }
        e => panic!("{e}"),
    }
}

#[test]
fn index_mapping_a_tensor_to_the_wrong_shard() {
    let dir = scratch("wrongshard");
    copy("glm2-small", &SMALL_SHARDS, &dir);
    let text =
        fs::read_to_string(golden_dir("glm2-small").join("model.safetensors.index.json")).unwrap();
    let mut index: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tensor = "transformer.output_layer.weight";
    let shard = index["weight_map"][tensor].as_str().unwrap().to_owned();
    let other = SMALL_SHARDS.iter().find(|s| **s != shard).unwrap();
    index["weight_map"][tensor] = (*other).into();
    fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    match Checkpoint::open(&dir).unwrap_err() {
        CheckpointError::TensorNotInShard {
            tensor: t,
            shard: s,
        } => {
            assert_eq!(t, tensor);
            assert_eq!(s, dir.join(other));
        }
        e => panic!("{e}"),
    }

    // An index naming a tensor that no shard has.
    index["weight_map"][tensor] = shard.into();
    index["weight_map"]["transformer.extra.weight"] = SMALL_SHARDS[0].into();
    fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert!(matches!(
        Checkpoint::open(&dir).unwrap_err(),
        CheckpointError::TensorNotInShard { tensor, .. } if tensor == "transformer.extra.weight"
    ));

    // An index pointing outside the directory.
    index["weight_map"]["transformer.extra.weight"] = "../glm2-tiny/pytorch_model.bin".into();
    fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert!(matches!(
        Checkpoint::open(&dir).unwrap_err(),
        CheckpointError::BadIndex { reason, .. } if reason.contains("not a file name")
    ));

    fs::write(
        dir.join("model.safetensors.index.json"),
        "{\"weight_map\": 3}",
    )
    .unwrap();
    assert!(matches!(
        Checkpoint::open(&dir).unwrap_err(),
        CheckpointError::BadIndex { .. }
    ));
}

#[test]
fn truncated_safetensors_shard() {
    let dir = scratch("truncst");
    copy("glm2-small", &SMALL_SHARDS, &dir);
    copy("glm2-small", &["model.safetensors.index.json"], &dir);
    truncate(&dir.join(SMALL_SHARDS[1]), 0.5);
    let err = Checkpoint::open(&dir).unwrap_err();
    match &err {
        CheckpointError::BadTensor { path, reason, .. } => {
            assert_eq!(*path, dir.join(SMALL_SHARDS[1]));
            assert!(reason.contains("truncated"), "{reason}");
        }
        e => panic!("{e}"),
    }
    // Cut inside the header.
    truncate(&dir.join(SMALL_SHARDS[1]), 0.0001);
    assert!(matches!(
        Checkpoint::open(&dir).unwrap_err(),
        CheckpointError::Safetensors { path, .. } if path == dir.join(SMALL_SHARDS[1])
    ));
}

#[test]
fn truncated_bin_shard() {
    let dir = scratch("truncbin");
    copy("glm3-tiny", &GLM3_SHARDS, &dir);
    copy("glm3-tiny", &["pytorch_model.bin.index.json"], &dir);
    truncate(&dir.join(GLM3_SHARDS[0]), 0.9);
    match Checkpoint::open(&dir).unwrap_err() {
        CheckpointError::Zip { path, .. } => assert_eq!(path, dir.join(GLM3_SHARDS[0])),
        e => panic!("{e}"),
    }
}

#[test]
fn file_truncated_after_open_is_an_io_error() {
    let dir = scratch("shrunk");
    copy("glm2-tiny", &["pytorch_model.bin"], &dir);
    let ckpt = Checkpoint::open(&dir).unwrap();
    truncate(&dir.join("pytorch_model.bin"), 0.5);
    let err = ckpt
        .read_f32("transformer.output_layer.weight")
        .unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }), "{err}");
    assert!(matches!(
        ckpt.read_f32("no.such.tensor").unwrap_err(),
        CheckpointError::UnknownTensor(n) if n == "no.such.tensor"
    ));
}

#[test]
fn safetensors_header_inconsistencies() {
    let dir = scratch("badheader");
    let write = |header: &str, data_len: usize| {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(vec![0u8; data_len]);
        fs::write(dir.join("model.safetensors"), bytes).unwrap();
    };
    let expect = |what: &str| {
        let err = Checkpoint::open(&dir).unwrap_err();
        assert!(err.to_string().contains(what), "{err}");
        err
    };
    write(
        r#"{"w":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]}}"#,
        12,
    );
    let ckpt = Checkpoint::open(&dir).unwrap();
    assert_eq!(ckpt.read_f32("w").unwrap(), [0.0; 6]);

    write(
        r#"{"w":{"dtype":"F16","shape":[2,3],"data_offsets":[0,10]}}"#,
        12,
    );
    expect("needs 12 bytes");
    write(
        r#"{"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
        8,
    );
    assert!(matches!(
        expect("I64"),
        CheckpointError::UnsupportedDtype { tensor, .. } if tensor == "w"
    ));
    write(
        r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
        20,
    );
    expect("truncated");
    write(
        r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}"#,
        4,
    );
    expect("reversed");
    write(
        r#"{"w":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,0]}}"#,
        0,
    );
    expect("overflows");
    write(r#"{"w":{"dtype":"F32"}}"#, 0);
    expect("missing field");
    write("not json", 0);
    expect("invalid JSON");
    fs::write(dir.join("model.safetensors"), u64::MAX.to_le_bytes()).unwrap();
    expect("header length");
}
