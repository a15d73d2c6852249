//! The model's weights as zero-copy views into one byte buffer (a memory-mapped GGUF file, or
//! a `Vec<u8>` in tests).
//!
//! Each 2-D weight is a [`Matrix`]: its type, shape and byte range in the shared storage. A
//! [`WeightMatrix`] for the kernels is built from `&storage[range]` at use time, so loading
//! copies no weight. The few 1-D tensors (norm weights and the QKV bias, F32, under 1 MB for
//! the 6B model) are decoded once into `Vec<f32>` at load, so nothing assumes the file is
//! aligned.

use super::{Block, ModelConfig, ModelError};
use crate::arch::tensors::{self, glm1, Role, Table, TensorSpec};
use chatglm_kernels::matmul::WeightMatrix;
use chatglm_kernels::GgmlType;
use std::ops::Range;
use std::sync::Arc;

/// The byte buffer that holds every tensor: a memory map, a `Vec<u8>`, anything readable as
/// bytes. Shared read-only, so one model can serve several sessions on several threads.
pub type Storage = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// What a tensor lookup (the GGUF loader) reports for one tensor name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Element type.
    pub ty: GgmlType,
    /// Dimensions in ggml order: `dims[0]` is the number of columns (the contiguous axis),
    /// `dims[1]` the number of rows.
    pub dims: Vec<u64>,
    /// Byte range of the tensor data in the storage.
    pub range: Range<usize>,
}

/// Element types a 2-D weight may have: every type the kernels multiply.
use chatglm_kernels::matmul::MATRIX_TYPES;

/// The names of [`MATRIX_TYPES`], for error messages (`F32, F16, Q4_0, ...`).
pub fn supported_matrix_types() -> String {
    MATRIX_TYPES
        .iter()
        .map(|t| t.ggml_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A 2-D weight: `rows x cols` elements of `ty` at `range` in the storage.
#[derive(Debug, Clone)]
pub(crate) struct Matrix {
    /// GGUF tensor name, for error messages.
    pub(crate) name: String,
    pub(crate) ty: GgmlType,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    range: Range<usize>,
}

impl Matrix {
    /// The kernels' view of this matrix inside `storage`.
    pub(crate) fn view<'a>(&self, storage: &'a [u8]) -> Result<WeightMatrix<'a>, ModelError> {
        let data = storage
            .get(self.range.clone())
            .ok_or_else(|| ModelError::TensorData {
                name: self.name.clone(),
                range: self.range.clone(),
                storage_len: storage.len(),
            })?;
        WeightMatrix::new(self.ty, self.rows, self.cols, data).map_err(|source| {
            ModelError::Kernel {
                tensor: self.name.clone(),
                source,
            }
        })
    }
}

/// The weights of one transformer layer.
#[derive(Debug, Clone)]
pub(crate) struct LayerWeights {
    /// RMSNorm before attention. (hidden)
    pub(crate) attn_norm: Vec<f32>,
    /// Fused QKV projection, rows Q | K | V. (qkv_dim, hidden)
    pub(crate) attn_qkv: Matrix,
    /// Bias of the QKV projection. (qkv_dim)
    pub(crate) attn_qkv_bias: Vec<f32>,
    /// Attention output projection. (hidden, num_heads * head_dim)
    pub(crate) attn_output: Matrix,
    /// RMSNorm before the MLP. (hidden)
    pub(crate) ffn_norm: Vec<f32>,
    /// Fused gate and up projections, gate rows first. (2 * ffn, hidden)
    pub(crate) ffn_up: Matrix,
    /// Down projection. (hidden, ffn)
    pub(crate) ffn_down: Matrix,
    /// The biases only the v1 block has (empty for ChatGLM2/3).
    pub(crate) v1: Glm1Biases,
}

/// The LayerNorm biases and linear biases of a ChatGLM-6B (v1) layer; every vector is empty
/// for the ChatGLM2/3 block.
#[derive(Debug, Clone, Default)]
pub(crate) struct Glm1Biases {
    /// Input LayerNorm bias. (hidden)
    pub(crate) attn_norm: Vec<f32>,
    /// Attention output bias. (hidden)
    pub(crate) attn_output: Vec<f32>,
    /// Post-attention LayerNorm bias. (hidden)
    pub(crate) ffn_norm: Vec<f32>,
    /// MLP up bias. (ffn)
    pub(crate) ffn_up: Vec<f32>,
    /// MLP down bias. (hidden)
    pub(crate) ffn_down: Vec<f32>,
}

/// All weights of a model, viewing one shared [`Storage`].
pub struct ModelWeights {
    config: ModelConfig,
    storage: Storage,
    /// Token embedding. (vocab, hidden)
    pub(crate) token_embd: Matrix,
    pub(crate) layers: Vec<LayerWeights>,
    /// Final norm weight. (hidden)
    pub(crate) output_norm: Vec<f32>,
    /// Final LayerNorm bias (v1; empty for ChatGLM2/3). (hidden)
    pub(crate) output_norm_bias: Vec<f32>,
    /// Output layer: its own matrix for ChatGLM2/3, the embedding for v1 (tied). (vocab,
    /// hidden)
    pub(crate) output: Matrix,
}

impl std::fmt::Debug for ModelWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelWeights")
            .field("config", &self.config)
            .field("storage_bytes", &self.bytes().len())
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

impl ModelWeights {
    /// Resolves every tensor of `config` through `lookup` (the names and shapes of the table
    /// of `config`'s block, [`Table::of`]) and checks that each one exists, has exactly the
    /// expected shape and a supported type, and lies inside `storage`. Errors name the
    /// tensor.
    ///
    /// Nothing is sized from `config.num_layers` before its tensors are found: a file that
    /// claims more layers than it holds fails on the first missing tensor.
    pub fn load(
        config: &ModelConfig,
        storage: Storage,
        lookup: impl Fn(&str) -> Option<TensorEntry>,
    ) -> Result<Self, ModelError> {
        config.validate()?;
        Self::load_valid(config, storage, lookup)
    }

    /// [`ModelWeights::load`] for a configuration already validated (by
    /// [`ModelConfig::from_gguf`]), so that one load validates it once.
    pub(crate) fn load_valid(
        config: &ModelConfig,
        storage: Storage,
        lookup: impl Fn(&str) -> Option<TensorEntry>,
    ) -> Result<Self, ModelError> {
        let bytes: &[u8] = (*storage).as_ref();
        // Every matrix of a type the kernels cannot multiply, named in one error.
        let unsupported: Vec<(String, GgmlType)> = tensors::in_file_order(config.num_layers)
            .filter(|(spec, _)| spec.role == Role::Matrix)
            .filter_map(|(spec, layer)| {
                let name = spec.gguf_name(layer);
                let e = lookup(&name)?;
                (!MATRIX_TYPES.contains(&e.ty)).then_some((name, e.ty))
            })
            .collect();
        if !unsupported.is_empty() {
            return Err(ModelError::UnsupportedTypes(unsupported));
        }
        let loader = Loader {
            bytes,
            lookup: &lookup,
            config,
        };
        match config.block {
            Block::Glm2 => Self::load_glm2(&loader, storage.clone()),
            Block::Glm1(_) => Self::load_glm1(&loader, storage.clone()),
        }
    }

    /// The tensors of [`tensors::TABLE`].
    fn load_glm2<F: Fn(&str) -> Option<TensorEntry>>(
        loader: &Loader<'_, F>,
        storage: Storage,
    ) -> Result<Self, ModelError> {
        let config = loader.config;
        let token_embd = loader.matrix(&tensors::TOKEN_EMBD, 0)?;
        let mut layers = Vec::new();
        for l in 0..config.num_layers {
            layers.push(LayerWeights {
                attn_norm: loader.vector(&tensors::ATTN_NORM, l)?,
                attn_qkv: loader.matrix(&tensors::ATTN_QKV, l)?,
                attn_qkv_bias: loader.vector(&tensors::ATTN_QKV_BIAS, l)?,
                attn_output: loader.matrix(&tensors::ATTN_OUTPUT, l)?,
                ffn_norm: loader.vector(&tensors::FFN_NORM, l)?,
                ffn_up: loader.matrix(&tensors::FFN_UP, l)?,
                ffn_down: loader.matrix(&tensors::FFN_DOWN, l)?,
                v1: Glm1Biases::default(),
            });
        }
        let output_norm = loader.vector(&tensors::OUTPUT_NORM, 0)?;
        let output = loader.matrix(&tensors::OUTPUT, 0)?;
        Ok(Self {
            config: config.clone(),
            storage,
            token_embd,
            layers,
            output_norm,
            output_norm_bias: Vec::new(),
            output,
        })
    }

    /// The tensors of [`tensors::TABLE_GLM1`]; the output layer is the embedding.
    fn load_glm1<F: Fn(&str) -> Option<TensorEntry>>(
        loader: &Loader<'_, F>,
        storage: Storage,
    ) -> Result<Self, ModelError> {
        let config = loader.config;
        let token_embd = loader.matrix(&glm1::TOKEN_EMBD, 0)?;
        let mut layers = Vec::new();
        for l in 0..config.num_layers {
            layers.push(LayerWeights {
                attn_norm: loader.vector(&glm1::ATTN_NORM, l)?,
                attn_qkv: loader.matrix(&glm1::ATTN_QKV, l)?,
                attn_qkv_bias: loader.vector(&glm1::ATTN_QKV_BIAS, l)?,
                attn_output: loader.matrix(&glm1::ATTN_OUTPUT, l)?,
                ffn_norm: loader.vector(&glm1::FFN_NORM, l)?,
                ffn_up: loader.matrix(&glm1::FFN_UP, l)?,
                ffn_down: loader.matrix(&glm1::FFN_DOWN, l)?,
                v1: Glm1Biases {
                    attn_norm: loader.vector(&glm1::ATTN_NORM_BIAS, l)?,
                    attn_output: loader.vector(&glm1::ATTN_OUTPUT_BIAS, l)?,
                    ffn_norm: loader.vector(&glm1::FFN_NORM_BIAS, l)?,
                    ffn_up: loader.vector(&glm1::FFN_UP_BIAS, l)?,
                    ffn_down: loader.vector(&glm1::FFN_DOWN_BIAS, l)?,
                },
            });
        }
        let output_norm = loader.vector(&glm1::OUTPUT_NORM, 0)?;
        let output_norm_bias = loader.vector(&glm1::OUTPUT_NORM_BIAS, 0)?;
        Ok(Self {
            config: config.clone(),
            storage,
            output: token_embd.clone(),
            token_embd,
            layers,
            output_norm,
            output_norm_bias,
        })
    }

    /// The configuration the weights were checked against.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The whole storage buffer.
    pub fn bytes(&self) -> &[u8] {
        (*self.storage).as_ref()
    }

    /// Name and type of every 2-D weight, in file order, for display (`chatglm info`).
    pub fn matrix_types(&self) -> Vec<(String, GgmlType)> {
        Table::of(&self.config)
            .in_file_order(self.layers.len())
            .filter(|(spec, _)| spec.role == Role::Matrix)
            .filter_map(|(spec, layer)| {
                let m = self.matrix(spec, layer)?;
                Some((m.name.clone(), m.ty))
            })
            .collect()
    }

    /// The loaded matrix of table entry `spec` (of layer `layer`), if it is one.
    fn matrix(&self, spec: &TensorSpec, layer: usize) -> Option<&Matrix> {
        let l = self.layers.get(layer);
        Some(match spec.gguf {
            g if g == tensors::TOKEN_EMBD.gguf => &self.token_embd,
            g if g == tensors::OUTPUT.gguf => &self.output,
            g if g == tensors::ATTN_QKV.gguf => &l?.attn_qkv,
            g if g == tensors::ATTN_OUTPUT.gguf => &l?.attn_output,
            g if g == tensors::FFN_UP.gguf => &l?.ffn_up,
            g if g == tensors::FFN_DOWN.gguf => &l?.ffn_down,
            _ => return None,
        })
    }
}

/// Shared state of one [`ModelWeights::load`] call.
struct Loader<'a, F> {
    bytes: &'a [u8],
    lookup: &'a F,
    config: &'a ModelConfig,
}

impl<F: Fn(&str) -> Option<TensorEntry>> Loader<'_, F> {
    /// Looks `name` up and checks, in this order: dims (ggml order), type (one of `types`),
    /// rows of whole blocks, byte range inside the storage, byte length.
    fn entry(
        &self,
        name: &str,
        dims: &[u64],
        types: &[GgmlType],
        expected_types: &'static str,
    ) -> Result<TensorEntry, ModelError> {
        let e = (self.lookup)(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if e.dims != dims {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: dims.to_vec(),
                got: e.dims,
            });
        }
        if !types.contains(&e.ty) {
            return Err(ModelError::TensorType {
                name: name.to_string(),
                ty: e.ty,
                expected: expected_types,
            });
        }
        let cols = dims.first().copied().unwrap_or(1);
        if cols % e.ty.block_size() as u64 != 0 {
            return Err(ModelError::RowNotBlocks {
                name: name.to_string(),
                ty: e.ty,
                cols: cols as usize,
            });
        }
        if e.range.start > e.range.end || e.range.end > self.bytes.len() {
            return Err(ModelError::TensorData {
                name: name.to_string(),
                range: e.range,
                storage_len: self.bytes.len(),
            });
        }
        let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let expected = elements.and_then(|n| e.ty.bytes_for(n));
        let got = (e.range.end - e.range.start) as u64;
        if expected != Some(got) {
            return Err(ModelError::TensorSize {
                name: name.to_string(),
                ty: e.ty,
                expected,
                got,
            });
        }
        Ok(e)
    }

    /// Name and shape (PyTorch order) of table entry `spec` of layer `layer`.
    fn resolve(&self, spec: &TensorSpec, layer: usize) -> Result<(String, Vec<usize>), ModelError> {
        let shape = spec
            .shape(self.config)
            .ok_or(ModelError::Overflow("tensor shape"))?;
        Ok((spec.gguf_name(layer), shape))
    }

    /// The 2-D weight of table entry `spec` (layer `layer`), any supported matrix type.
    fn matrix(&self, spec: &TensorSpec, layer: usize) -> Result<Matrix, ModelError> {
        let (name, shape) = self.resolve(spec, layer)?;
        let &[rows, cols] = shape.as_slice() else {
            return Err(ModelError::Overflow(
                "a matrix of the tensor table is not 2-D",
            ));
        };
        let e = self.entry(
            &name,
            &[cols as u64, rows as u64],
            &MATRIX_TYPES,
            "a type the kernels multiply",
        )?;
        if rows % e.ty.row_group() != 0 {
            return Err(ModelError::Kernel {
                tensor: name,
                source: chatglm_kernels::KernelError::RowGroup {
                    ty: e.ty,
                    group: e.ty.row_group(),
                    rows,
                },
            });
        }
        Ok(Matrix {
            name,
            ty: e.ty,
            rows,
            cols,
            range: e.range,
        })
    }

    /// The 1-D F32 tensor of table entry `spec` (layer `layer`), decoded to `Vec<f32>`.
    fn vector(&self, spec: &TensorSpec, layer: usize) -> Result<Vec<f32>, ModelError> {
        let (name, shape) = self.resolve(spec, layer)?;
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let e = self.entry(&name, &dims, &[GgmlType::F32], "f32")?;
        let data = self
            .bytes
            .get(e.range.clone())
            .ok_or_else(|| ModelError::TensorData {
                name: name.clone(),
                range: e.range.clone(),
                storage_len: self.bytes.len(),
            })?;
        Ok(data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}
