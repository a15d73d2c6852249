//! The checkpoint reader against the golden checkpoints of `shared/golden`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chatglm_convert::checkpoint::{Checkpoint, DType, WeightFormat};
use serde_json::Value;

fn golden_dir(name: &str) -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/golden"
    ))
    .join(name)
}

fn golden(name: &str) -> Value {
    let text = std::fs::read_to_string(golden_dir(name).join("golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

const MODELS: [&str; 3] = ["glm2-tiny", "glm3-tiny", "glm2-small"];

#[test]
fn layouts_are_found() {
    let tiny = Checkpoint::open(&golden_dir("glm2-tiny")).unwrap();
    assert_eq!(tiny.format(), WeightFormat::PyTorch);
    assert_eq!(
        tiny.files(),
        [golden_dir("glm2-tiny").join("pytorch_model.bin")]
    );

    let glm3 = Checkpoint::open(&golden_dir("glm3-tiny")).unwrap();
    assert_eq!(glm3.format(), WeightFormat::PyTorch);
    assert_eq!(
        glm3.files(),
        [
            golden_dir("glm3-tiny").join("pytorch_model-00001-of-00002.bin"),
            golden_dir("glm3-tiny").join("pytorch_model-00002-of-00002.bin")
        ]
    );

    let small = Checkpoint::open(&golden_dir("glm2-small")).unwrap();
    assert_eq!(small.format(), WeightFormat::Safetensors);
    assert_eq!(small.files().len(), 2);
}

/// Names, dtypes and shapes equal `golden.json` -> `weights.tensors`.
#[test]
fn tensor_directory_matches_golden() {
    for model in MODELS {
        let g = golden(model);
        let ckpt = Checkpoint::open(&golden_dir(model)).unwrap();
        let mut expected: Vec<(String, DType, Vec<usize>)> = g["weights"]["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let dtype = match t["dtype"].as_str().unwrap() {
                    "float32" => DType::F32,
                    "float16" => DType::F16,
                    "bfloat16" => DType::BF16,
                    other => panic!("{other}"),
                };
                let shape = t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(usize_of)
                    .collect();
                (t["name"].as_str().unwrap().to_owned(), dtype, shape)
            })
            .collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        let got: Vec<(String, DType, Vec<usize>)> = ckpt
            .tensors()
            .map(|t| (t.name.clone(), t.dtype, t.shape.clone()))
            .collect();
        // `tensors()` is sorted by name.
        assert_eq!(got, expected, "{model}");
        assert_eq!(ckpt.len(), expected.len());
        for (name, dtype, shape) in &expected {
            let meta = ckpt.get(name).unwrap();
            assert_eq!((&meta.dtype, &meta.shape), (dtype, shape));
            assert_eq!(
                ckpt.read_f32(name).unwrap().len(),
                meta.numel(),
                "{model} {name}"
            );
        }
        assert!(ckpt.get("transformer.no_such.weight").is_none());
    }
}

/// `inv_freq[i] = 1 / 10000^(2i / (d/2))`, stored as the checkpoint's dtype.
#[test]
fn inv_freq_is_the_rope_formula() {
    for model in MODELS {
        let g = golden(model);
        let d = usize_of(&g["config"]["kv_channels"]);
        let ckpt = Checkpoint::open(&golden_dir(model)).unwrap();
        let name = "transformer.rotary_pos_emb.inv_freq";
        let got = ckpt.read_f32(name).unwrap();
        assert_eq!(got.len(), d / 4);
        let dim = (d / 2) as f64;
        for (i, &v) in got.iter().enumerate() {
            let exact = 1.0 / 10000f64.powf((2 * i) as f64 / dim);
            match ckpt.get(name).unwrap().dtype {
                // torch computes pow and the division in f32: allow its two roundings.
                DType::F32 => assert!(
                    ((v as f64 - exact) / exact).abs() <= 2.0 * f32::EPSILON as f64,
                    "{model} inv_freq[{i}] = {v}, expected {exact}"
                ),
                DType::F16 => assert_eq!(
                    v,
                    half::f16::from_f64(exact).to_f32(),
                    "{model} inv_freq[{i}]"
                ),
                DType::BF16 => unreachable!(),
            }
        }
    }
}

/// The reference's layer-0 input at the last prefill position is exactly the embedding row of
/// the last prompt token, and its final hidden state is `RMSNorm(h) * final_layernorm.weight`.
#[test]
fn values_agree_with_the_reference_forward_pass() {
    for model in MODELS {
        let g = golden(model);
        let hidden = usize_of(&g["config"]["hidden_size"]);
        let layers = usize_of(&g["config"]["num_layers"]);
        let ckpt = Checkpoint::open(&golden_dir(model)).unwrap();

        let ids = g["prefill"]["input_ids"].as_array().unwrap();
        let last_id = usize_of(ids.last().unwrap());
        let embedding = ckpt
            .read_f32("transformer.embedding.word_embeddings.weight")
            .unwrap();
        let row = &embedding[last_id * hidden..(last_id + 1) * hidden];
        let residuals = g["hidden_layers_last_position"]["values"]
            .as_array()
            .unwrap();
        let layer0 = floats(&residuals[0]);
        assert_eq!(row, layer0.as_slice(), "{model}: embedding row {last_id}");

        let h = floats(&residuals[layers]);
        let w = ckpt
            .read_f32("transformer.encoder.final_layernorm.weight")
            .unwrap();
        let expected = floats(&g["hidden_final"]["values"]);
        let mean_sq = h.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / hidden as f64;
        let scale = 1.0 / (mean_sq + 1e-5).sqrt();
        for i in 0..hidden {
            let ours = h[i] as f64 * scale * w[i] as f64;
            let diff = (ours - expected[i] as f64).abs();
            assert!(
                diff <= 1e-5 * (expected[i].abs() as f64) + 1e-6,
                "{model}: final norm [{i}]: {ours} vs {}",
                expected[i]
            );
        }
    }
}

/// Every tensor of the safetensors shards equals the raw bytes read here independently.
#[test]
fn safetensors_values_equal_raw_bytes() {
    let dir = golden_dir("glm2-small");
    let ckpt = Checkpoint::open(&dir).unwrap();
    let mut checked = 0;
    for shard in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        let bytes = std::fs::read(dir.join(shard)).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Map<String, Value> =
            serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        for (name, info) in header {
            if name == "__metadata__" {
                continue;
            }
            assert_eq!(info["dtype"], "F16");
            let begin = usize_of(&info["data_offsets"][0]) + 8 + n;
            let end = usize_of(&info["data_offsets"][1]) + 8 + n;
            let raw: Vec<f32> = bytes[begin..end]
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect();
            let got = ckpt.read_f32(&name).unwrap();
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                raw.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{name}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, ckpt.len());
}

/// Reads a stored zip entry by hand: local header (30 bytes + name + extra), then the data.
fn raw_zip_entry(path: &Path, entry: &str) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(File::open(path).unwrap()).unwrap();
    let e = archive.by_name(entry).unwrap();
    let (start, size) = (e.header_start(), e.size() as usize);
    drop(e);
    let mut f = File::open(path).unwrap();
    let mut local = [0u8; 30];
    f.seek(SeekFrom::Start(start)).unwrap();
    f.read_exact(&mut local).unwrap();
    assert_eq!(&local[..4], b"PK\x03\x04");
    let name_len = u16::from_le_bytes([local[26], local[27]]) as u64;
    let extra_len = u16::from_le_bytes([local[28], local[29]]) as u64;
    f.seek(SeekFrom::Start(start + 30 + name_len + extra_len))
        .unwrap();
    let mut data = vec![0u8; size];
    f.read_exact(&mut data).unwrap();
    data
}

/// `.bin` tensors equal their storage entries read independently (storage keys from
/// `pickletools.dis` of the files: key 0 is the word embedding, key 17 the output layer).
#[test]
fn torch_values_equal_raw_storage() {
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let f16s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    };

    let dir = golden_dir("glm2-tiny");
    let ckpt = Checkpoint::open(&dir).unwrap();
    let bin = dir.join("pytorch_model.bin");
    assert_eq!(
        ckpt.read_f32("transformer.embedding.word_embeddings.weight")
            .unwrap(),
        f32s(&raw_zip_entry(&bin, "pytorch_model/data/0"))
    );
    assert_eq!(
        ckpt.read_f32("transformer.output_layer.weight").unwrap(),
        f32s(&raw_zip_entry(&bin, "pytorch_model/data/17"))
    );

    let dir = golden_dir("glm3-tiny");
    let ckpt = Checkpoint::open(&dir).unwrap();
    let bin = dir.join("pytorch_model-00001-of-00002.bin");
    assert_eq!(
        ckpt.read_f32("transformer.embedding.word_embeddings.weight")
            .unwrap(),
        f16s(&raw_zip_entry(&bin, "pytorch_model-00001-of-00002/data/0"))
    );
}

#[test]
fn norm_weights_look_like_norm_weights() {
    // Norm weights were initialised as 1 + 0.05 N(0, 1): a misread (wrong offset, wrong
    // dtype) would not average near 1.
    for model in MODELS {
        let ckpt = Checkpoint::open(&golden_dir(model)).unwrap();
        for t in ckpt
            .tensors()
            .filter(|t| t.name.ends_with("layernorm.weight"))
        {
            let v = ckpt.read_f32(&t.name).unwrap();
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            assert!((mean - 1.0).abs() < 0.05, "{model} {}: mean {mean}", t.name);
        }
    }
}
