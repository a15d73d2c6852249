//! The model in a GGUF file: [`ModelConfig`] to and from the `chatglm.*` metadata keys
//! (`crate::arch::keys`, docs/FORMAT.md), and [`Model::from_gguf`], which views every weight
//! in place in the mapped file.

use super::{Block, Glm1Params, Model, ModelConfig, ModelError, RopeScaling, TensorEntry};
use crate::arch::tensors::{self, Table};
use crate::arch::{keys, ARCHITECTURE, ARCHITECTURE_GLM1};
use crate::gguf::{GgufError, GgufFile, Metadata, Value};
use std::sync::Arc;

impl AsRef<[u8]> for GgufFile {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

fn to_u32(v: usize, key: &'static str) -> Result<u32, GgufError> {
    u32::try_from(v).map_err(|_| GgufError::OutOfRange {
        key: key.to_owned(),
        value: v.to_string(),
        expected: "u32",
    })
}

/// `key`'s f32 value, which must be finite and within `range` (what a runnable model can
/// have): NaN, infinities and absurd values are refused with the key named.
fn checked_f32(
    md: &Metadata,
    key: &str,
    range: std::ops::RangeInclusive<f32>,
    what: &str,
) -> Result<f32, ModelError> {
    let v = md.get_f32(key)?;
    if v.is_finite() && range.contains(&v) && v != 0.0 {
        Ok(v)
    } else {
        Err(ModelError::Metadata {
            key: key.to_owned(),
            reason: format!(
                "{v} is not a usable {what} (finite, non-zero, within {}..={})",
                range.start(),
                range.end()
            ),
        })
    }
}

/// Largest RoPE ratio or linear scaling factor accepted (ChatGLM3-128k has 500).
const MAX_ROPE_RATIO: f32 = 1.0e6;

fn to_usize(v: u64, key: &str) -> Result<usize, ModelError> {
    usize::try_from(v).map_err(|_| ModelError::Metadata {
        key: key.to_owned(),
        reason: format!("{v} does not fit in usize"),
    })
}

impl ModelConfig {
    /// Writes the hyper-parameters under llama.cpp's `chatglm.*` keys (plus ours for what it
    /// has no key for). The vocabulary size is not a key: it is the embedding's row count.
    ///
    /// llama.cpp's convention is followed for `rope_ratio`: ChatGLM3's multiplied base is
    /// stored already multiplied in `chatglm.rope.freq_base`; ChatGLM2-32k's divided positions
    /// are llama.cpp's linear RoPE scaling.
    pub fn to_gguf(&self, md: &mut Metadata) -> Result<(), GgufError> {
        md.push_u32(
            keys::CONTEXT_LENGTH,
            to_u32(self.context_length, keys::CONTEXT_LENGTH)?,
        )?;
        md.push_u32(
            keys::EMBEDDING_LENGTH,
            to_u32(self.hidden_size, keys::EMBEDDING_LENGTH)?,
        )?;
        md.push_u32(
            keys::FEED_FORWARD_LENGTH,
            to_u32(self.ffn_hidden_size, keys::FEED_FORWARD_LENGTH)?,
        )?;
        md.push_u32(
            keys::BLOCK_COUNT,
            to_u32(self.num_layers, keys::BLOCK_COUNT)?,
        )?;
        md.push_u32(keys::HEAD_COUNT, to_u32(self.num_heads, keys::HEAD_COUNT)?)?;
        md.push_u32(
            keys::HEAD_COUNT_KV,
            to_u32(self.num_kv_groups, keys::HEAD_COUNT_KV)?,
        )?;
        md.push_u32(keys::HEAD_DIM, to_u32(self.head_dim, keys::HEAD_DIM)?)?;
        match self.block {
            Block::Glm2 => md.push_f32(keys::RMS_EPS, self.rms_eps)?,
            Block::Glm1(p) => {
                md.push_f32(keys::LAYER_NORM_EPS, self.rms_eps)?;
                md.push_f32(keys::RESIDUAL_ALPHA, p.residual_alpha)?;
                md.push_u32(keys::MASK_TOKEN_ID, p.mask_token_id)?;
                md.push_u32(keys::GMASK_TOKEN_ID, p.gmask_token_id)?;
                md.push_u32(keys::SOP_TOKEN_ID, p.sop_token_id)?;
            }
        }
        md.push_u32(
            keys::ROPE_DIMENSION_COUNT,
            to_u32(self.head_dim / 2, keys::ROPE_DIMENSION_COUNT)?,
        )?;
        md.push_f32(keys::ROPE_FREQ_BASE, self.effective_rope_base() as f32)?;
        let ratio = match self.rope_scaling {
            RopeScaling::None => 1.0,
            RopeScaling::DividePositions(r) => {
                md.push_str(keys::ROPE_SCALING_TYPE, "linear")?;
                md.push_f32(keys::ROPE_SCALING_FACTOR, r)?;
                r
            }
            RopeScaling::MultiplyBase(r) => r,
        };
        md.push_f32(keys::ROPE_RATIO, ratio)?;
        Ok(())
    }

    /// Reads the configuration of a `chatglm` (ChatGLM2/3) or `chatglm1` (ChatGLM-6B) GGUF
    /// file: the block from the architecture, the hyper-parameters from the metadata (v1: also
    /// the residual scale and the `[MASK]`, `[gMASK]`, `<sop>` ids), the vocabulary size from
    /// the embedding's row count. Checks the architecture, that RoPE rotates half of each
    /// head, as ChatGLM does, that the block count is no more than the file's tensors can hold
    /// ([`Table::max_layers`]) and that the RoPE base, ratio, scaling factor, norm epsilon and
    /// residual scale are finite and in range (an error names the key), then validates the
    /// result ([`ModelConfig::validate`]).
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let md = file.metadata();
        let arch = md.get_str(keys::GENERAL_ARCHITECTURE)?;
        let get = |key: &str| -> Result<usize, ModelError> { to_usize(md.get_u64(key)?, key) };
        let id = |key: &str| -> Result<u32, ModelError> {
            u32::try_from(md.get_u64(key)?).map_err(|_| ModelError::Metadata {
                key: key.to_owned(),
                reason: "not a token id (u32)".to_owned(),
            })
        };
        let (block, eps_key, eps_what) = match arch {
            ARCHITECTURE => (Block::Glm2, keys::RMS_EPS, "RMSNorm epsilon"),
            ARCHITECTURE_GLM1 => (
                Block::Glm1(Glm1Params {
                    residual_alpha: checked_f32(
                        md,
                        keys::RESIDUAL_ALPHA,
                        0.0..=1.0e6,
                        "residual scale",
                    )?,
                    mask_token_id: id(keys::MASK_TOKEN_ID)?,
                    gmask_token_id: id(keys::GMASK_TOKEN_ID)?,
                    sop_token_id: id(keys::SOP_TOKEN_ID)?,
                }),
                keys::LAYER_NORM_EPS,
                "LayerNorm epsilon",
            ),
            _ => {
                return Err(ModelError::Metadata {
                    key: keys::GENERAL_ARCHITECTURE.to_owned(),
                    reason: format!(
                        "architecture {arch:?} is neither {ARCHITECTURE:?} nor \
                         {ARCHITECTURE_GLM1:?}"
                    ),
                })
            }
        };
        let table = Table::of_block(block);
        let hidden_size = get(keys::EMBEDDING_LENGTH)?;
        let num_heads = get(keys::HEAD_COUNT)?;
        let head_dim = match md.get(keys::HEAD_DIM) {
            Some(_) => get(keys::HEAD_DIM)?,
            None => hidden_size / num_heads.max(1),
        };
        let rope_dims = get(keys::ROPE_DIMENSION_COUNT)?;
        if rope_dims * 2 != head_dim {
            return Err(ModelError::Metadata {
                key: keys::ROPE_DIMENSION_COUNT.to_owned(),
                reason: format!(
                    "{rope_dims} rotated dims; ChatGLM rotates half of the {head_dim}-wide heads"
                ),
            });
        }
        let rope_scaling = match md.get(keys::ROPE_SCALING_TYPE) {
            None => RopeScaling::None,
            Some(Value::String(s)) if s == "none" => RopeScaling::None,
            Some(Value::String(s)) if s == "linear" => RopeScaling::DividePositions(checked_f32(
                md,
                keys::ROPE_SCALING_FACTOR,
                0.0..=MAX_ROPE_RATIO,
                "RoPE scaling factor",
            )?),
            Some(other) => {
                return Err(ModelError::Metadata {
                    key: keys::ROPE_SCALING_TYPE.to_owned(),
                    reason: format!("unsupported RoPE scaling {other:?} (only \"linear\")"),
                })
            }
        };
        // Informational (the base is stored already multiplied), but a value that is not a
        // ratio means the file is broken.
        if md.get(keys::ROPE_RATIO).is_some() {
            checked_f32(md, keys::ROPE_RATIO, 0.0..=MAX_ROPE_RATIO, "RoPE ratio")?;
        }
        // A count bounds itself by what the file holds before anything is sized from it.
        let num_layers = get(keys::BLOCK_COUNT)?;
        let max_layers = table.max_layers(file.tensors().len());
        if num_layers > max_layers {
            return Err(ModelError::Metadata {
                key: keys::BLOCK_COUNT.to_owned(),
                reason: format!(
                    "{num_layers} layers, but the file's {} tensors hold at most {max_layers} \
                     ({} per layer)",
                    file.tensors().len(),
                    table.per_layer()
                ),
            });
        }
        let embd_name = tensors::TOKEN_EMBD.gguf;
        let embd = file
            .tensor(embd_name)
            .ok_or_else(|| ModelError::MissingTensor(embd_name.to_owned()))?;
        let vocab_size = match embd.dims.as_slice() {
            [_, rows] => to_usize(*rows, embd_name)?,
            dims => {
                return Err(ModelError::TensorShape {
                    name: embd_name.to_owned(),
                    expected: vec![hidden_size as u64, 0],
                    got: dims.to_vec(),
                })
            }
        };
        let config = ModelConfig {
            vocab_size,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_groups: get(keys::HEAD_COUNT_KV)?,
            head_dim,
            ffn_hidden_size: get(keys::FEED_FORWARD_LENGTH)?,
            context_length: get(keys::CONTEXT_LENGTH)?,
            rms_eps: checked_f32(md, eps_key, 0.0..=0.1, eps_what)?,
            rope_base: checked_f32(md, keys::ROPE_FREQ_BASE, 1.0..=f32::MAX, "RoPE base")?,
            rope_scaling,
            block,
        };
        config.validate()?;
        Ok(config)
    }
}

impl Model {
    /// The model of a `chatglm` GGUF file, its weights viewed in place in the file's bytes
    /// (memory-mapped by [`GgufFile::open`]): nothing is copied but the norm weights and
    /// biases (under 1 MB for the 6B model). Every tensor is checked for presence, shape and
    /// type, and an error names the first one at fault.
    pub fn from_gguf(file: Arc<GgufFile>) -> Result<Self, ModelError> {
        let config = ModelConfig::from_gguf(&file)?;
        let data_offset = file.data_offset();
        let lookup = |name: &str| {
            let t = file.tensor(name)?;
            let start = usize::try_from(data_offset.checked_add(t.offset)?).ok()?;
            let end = start.checked_add(usize::try_from(t.size_bytes).ok()?)?;
            Some(TensorEntry {
                ty: t.ty,
                dims: t.dims.clone(),
                range: start..end,
            })
        };
        let storage: super::Storage = file.clone();
        // `from_gguf` validated the configuration: load without doing it again.
        let weights = super::ModelWeights::load_valid(&config, storage, lookup)?;
        Ok(Model::from_weights(weights))
    }
}
