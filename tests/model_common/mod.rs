//! Helpers shared by the model tests: build a weight buffer in memory and load a model from it.
#![allow(dead_code)]

use chatglm::model::{Model, ModelConfig, TensorEntry};
use chatglm_kernels::GgmlType;
use half::f16;
use std::collections::HashMap;
use std::sync::Arc;

/// Tensors appended to one byte buffer, with the entries a GGUF loader would report.
#[derive(Default)]
pub struct Builder {
    pub bytes: Vec<u8>,
    pub entries: HashMap<String, TensorEntry>,
}

impl Builder {
    /// Appends `data` (row-major, PyTorch shape `shape`, e.g. `[rows, cols]`) as `ty`
    /// (F32 or F16). Pads to 4 bytes first so offsets look like a file's.
    pub fn add(&mut self, name: &str, shape: &[usize], data: &[f32], ty: GgmlType) {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
        let start = self.bytes.len();
        match ty {
            GgmlType::F32 => {
                for v in data {
                    self.bytes.extend_from_slice(&v.to_le_bytes());
                }
            }
            GgmlType::F16 => {
                for v in data {
                    self.bytes
                        .extend_from_slice(&f16::from_f32(*v).to_le_bytes());
                }
            }
            other => panic!("test builder cannot write {other}"),
        }
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        self.entries.insert(
            name.to_string(),
            TensorEntry {
                ty,
                dims,
                range: start..self.bytes.len(),
            },
        );
    }

    /// Loads a model over the buffer.
    pub fn load(self, config: &ModelConfig) -> Model {
        let entries = self.entries;
        Model::load(config, Arc::new(self.bytes), |n| entries.get(n).cloned()).unwrap()
    }
}

/// Little-endian f32 values of `bytes`.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Largest absolute difference (panics on length mismatch).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Index of the largest value, first on ties.
pub fn argmax(x: &[f32]) -> usize {
    chatglm::sampler::argmax(x) as usize
}
