//! The ChatGLM models: configuration, weights viewed in place, KV cache and forward pass.
//!
//! The structure follows llama2.c's `run.c`: a [`ModelConfig`] (the blueprint), the
//! [`ModelWeights`] (views into one byte buffer), a [`RunState`] (every activation buffer and
//! the [`KvCache`], allocated once per session) and [`Model::forward`], one straight loop over
//! the layers per [`Block`]: the ChatGLM2/3 block and the ChatGLM-6B (v1) block each have
//! their own pass (`forward/glm2.rs`, `forward/glm1.rs`). The references are the Hugging
//! Face codes (THUDM `modeling_chatglm.py` of each generation).
//!
//! Tensor names are llama.cpp's GGUF names for `chatglm`; the lists, with Hugging Face names,
//! roles and shapes, are [`crate::arch::tensors::TABLE`] and
//! [`crate::arch::tensors::TABLE_GLM1`], which the loader iterates. Shapes are given as
//! `[rows, cols]` (a GGUF file stores them reversed, `dims[0] = cols`); `H` hidden, `V` vocab,
//! `a` heads, `g` kv groups, `d` head_dim, `F` ffn. Norms and biases are f32, the matrices
//! any matrix type. In short (a test keeps these summaries equal to the tables), ChatGLM2/3:
//!
//! | name | shape |
//! |---|---|
//! | `token_embd.weight` | `[V, H]` |
//! | `blk.N.attn_norm.weight` | `[H]` |
//! | `blk.N.attn_qkv.weight` | `[(a + 2g) d, H], rows Q \| K \| V` |
//! | `blk.N.attn_qkv.bias` | `[(a + 2g) d]` |
//! | `blk.N.attn_output.weight` | `[H, a d]` |
//! | `blk.N.ffn_norm.weight` | `[H]` |
//! | `blk.N.ffn_up.weight` | `[2F, H], gate rows first, then up` |
//! | `blk.N.ffn_down.weight` | `[H, F]` |
//! | `output_norm.weight` | `[H]` |
//! | `output.weight` | `[V, H]` |
//!
//! ChatGLM-6B (v1; no `output.weight`: the output layer is the embedding):
//!
//! | name | shape |
//! |---|---|
//! | `token_embd.weight` | `[V, H]` |
//! | `blk.N.attn_norm.weight` | `[H]` |
//! | `blk.N.attn_norm.bias` | `[H]` |
//! | `blk.N.attn_qkv.weight` | `[3 a d, H], rows Q \| K \| V (permuted from the checkpoint's per-head q k v)` |
//! | `blk.N.attn_qkv.bias` | `[3 a d], Q \| K \| V` |
//! | `blk.N.attn_output.weight` | `[H, a d]` |
//! | `blk.N.attn_output.bias` | `[H]` |
//! | `blk.N.ffn_norm.weight` | `[H]` |
//! | `blk.N.ffn_norm.bias` | `[H]` |
//! | `blk.N.ffn_up.weight` | `[F, H]` |
//! | `blk.N.ffn_up.bias` | `[F]` |
//! | `blk.N.ffn_down.weight` | `[H, F]` |
//! | `blk.N.ffn_down.bias` | `[H]` |
//! | `output_norm.weight` | `[H]` |
//! | `output_norm.bias` | `[H]` |
//!
//! "Any" is f32, f16, q4_0, q4_1, q8_0 or the row-interleaved q4_0x8 and q8_0x8 (whose row
//! count is a multiple of 8); every product goes through
//! [`chatglm_kernels::matmul`], so this module does not care which.

mod config;
mod forward;
mod gguf;
mod kv_cache;
mod ops;
mod weights;

pub use config::{Block, ConfigError, Family, Glm1Params, ModelConfig, RopeScaling};
pub use forward::{DecodeBatch, Glm1Layout, Logits, RunState, StateOptions, DEFAULT_BATCH};
pub use kv_cache::{KvCache, KvType};
pub use weights::{ModelWeights, Storage, TensorEntry};

use chatglm_kernels::{GgmlType, KernelError};
use std::ops::Range;

/// Errors from loading weights and running the model. Each names what went wrong (the tensor,
/// the token, the position).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The configuration is inconsistent.
    #[error("invalid model config: {0}")]
    Config(#[from] ConfigError),
    /// The file's metadata is unreadable (a key missing or of the wrong type).
    #[error("{0}")]
    Gguf(#[from] crate::gguf::GgufError),
    /// A metadata value describes a model this runtime cannot run.
    #[error("metadata key `{key}`: {reason}")]
    Metadata {
        /// The key.
        key: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// A tensor the model needs is not in the file.
    #[error("tensor `{0}` is missing")]
    MissingTensor(String),
    /// A tensor has the wrong shape.
    #[error(
        "tensor `{name}` has dims {got:?}, expected {expected:?} (ggml order, dims[0] = columns)"
    )]
    TensorShape {
        /// Tensor name.
        name: String,
        /// Expected dims, ggml order.
        expected: Vec<u64>,
        /// Dims found, ggml order.
        got: Vec<u64>,
    },
    /// Matrices whose types the kernels cannot multiply (every such tensor of the file, in
    /// file order): `tensor "blk.3.ffn_up.weight" has type IQ2_XXS (16), which this runtime
    /// cannot run yet; supported: ...`.
    #[error("{}", unsupported_types_message(.0))]
    UnsupportedTypes(Vec<(String, GgmlType)>),
    /// A tensor has a type this position does not accept.
    #[error("tensor `{name}` has type {ty}, expected {expected}")]
    TensorType {
        /// Tensor name.
        name: String,
        /// Type found.
        ty: GgmlType,
        /// What is accepted.
        expected: &'static str,
    },
    /// A tensor's byte length does not match its type and shape.
    #[error("tensor `{name}` ({ty}) has {got} bytes, expected {expected:?}")]
    TensorSize {
        /// Tensor name.
        name: String,
        /// Its type.
        ty: GgmlType,
        /// Bytes its type and shape need (`None` if not a whole number of blocks).
        expected: Option<u64>,
        /// Bytes it has.
        got: u64,
    },
    /// A matrix's rows are not a whole number of blocks of its type.
    #[error("tensor `{name}` ({ty}) has rows of {cols} elements, not a whole number of blocks")]
    RowNotBlocks {
        /// Tensor name.
        name: String,
        /// Its type.
        ty: GgmlType,
        /// Row length in elements.
        cols: usize,
    },
    /// A tensor's byte range lies outside the storage.
    #[error("tensor `{name}`: bytes {range:?} are outside the {storage_len}-byte storage")]
    TensorData {
        /// Tensor name.
        name: String,
        /// The range asked for.
        range: Range<usize>,
        /// Size of the storage.
        storage_len: usize,
    },
    /// A kernel refused a product (for example a type it does not implement yet).
    #[error("kernel error on tensor `{tensor}`: {source}")]
    Kernel {
        /// The weight involved.
        tensor: String,
        /// What the kernel said.
        source: KernelError,
    },
    /// [`Model::forward`] was called with no tokens.
    #[error("no tokens to process")]
    EmptyInput,
    /// A token id is not below the vocabulary size.
    #[error("token id {token} (input index {index}) is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// Index in the input.
        index: usize,
        /// The id.
        token: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// The tokens do not fit in the context the state was created with.
    #[error("context full: {needed} positions needed, the KV cache holds {capacity}")]
    ContextFull {
        /// Positions the call would need.
        needed: usize,
        /// Capacity of the cache.
        capacity: usize,
    },
    /// `start_pos` is past the cached positions, which would leave a hole in the cache.
    #[error("start position {start_pos} is past the {cached} cached positions")]
    PositionGap {
        /// The position asked for.
        start_pos: usize,
        /// Positions in the cache.
        cached: usize,
    },
    /// [`Logits::All`] for more tokens than the state's batch holds.
    #[error("{tokens} tokens ask for all logits, but the state's batch holds {batch} rows")]
    BatchTooSmall {
        /// Tokens in the call.
        tokens: usize,
        /// The state's batch size.
        batch: usize,
    },
    /// A batched decode step was given more sequences than its buffers hold.
    #[error("{seqs} sequences in one decode step, but the batch holds {max}")]
    TooManySequences {
        /// Sequences given.
        seqs: usize,
        /// The batch's capacity.
        max: usize,
    },
    /// The state was created for a model of another configuration.
    #[error("run state was created for a different model configuration")]
    StateMismatch,
    /// The context or batch asked for a state is not usable.
    #[error("invalid state option `{what}` = {value} (allowed 1..={max})")]
    StateOption {
        /// Which option.
        what: &'static str,
        /// Value given.
        value: usize,
        /// Largest accepted value.
        max: usize,
    },
    /// A run state (KV cache and activations) would not fit in the machine's memory; refused
    /// before anything is allocated.
    #[error(
        "a run state for this context needs {bytes} bytes (KV cache and activations), more \
         than the machine's {limit} bytes of memory: ask for a smaller context"
    )]
    StateTooLarge {
        /// Bytes the state would take.
        bytes: usize,
        /// Physical memory of the machine, in bytes.
        limit: usize,
    },
    /// A buffer handed in has the wrong length.
    #[error("{what}: expected {expected} values, got {got}")]
    BufferSize {
        /// Which buffer.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// The worker threads of a run state could not be started.
    #[error("cannot start {threads} threads: {source}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// What the pool said.
        source: chatglm_kernels::pool::PoolError,
    },
    /// A ChatGLM-6B (v1) prompt lacks a token its layout needs (the first `<sop>` ends the
    /// bidirectional context, the first `[gMASK]` or `[MASK]` gives the mask position).
    #[error(
        "a ChatGLM-6B prompt needs a {what} token (id {id}); the tokenizer appends `[gMASK] <sop>`"
    )]
    Glm1NoToken {
        /// The token(s) missing.
        what: &'static str,
        /// The id looked for.
        id: u32,
    },
    /// A ChatGLM-6B (v1) call would start inside (or before knowing) the bidirectional
    /// context: it attends to all of itself, so a changed context is run again from 0.
    #[error(
        "start position {start_pos} is inside the bidirectional context (length {context_length:?}): \
         a ChatGLM-6B prompt runs from position 0 in one call"
    )]
    Glm1Context {
        /// The position asked for.
        start_pos: usize,
        /// The context length of the cached sequence, if one was run.
        context_length: Option<usize>,
    },
    /// A size computation overflows.
    #[error("size overflow: {0}")]
    Overflow(&'static str),
    /// A buffer could not be allocated.
    #[error("cannot allocate {bytes} bytes for the {what}")]
    Alloc {
        /// Which buffer.
        what: &'static str,
        /// Bytes asked for.
        bytes: usize,
    },
}

/// A loaded model: configuration and weights, read-only. Share it (`Arc<Model>`) between
/// sessions; each session owns a [`RunState`].
#[derive(Debug)]
pub struct Model {
    weights: ModelWeights,
}

impl Model {
    /// Checks `config`, resolves every tensor through `lookup` (see [`ModelWeights::load`])
    /// and returns the model.
    pub fn load(
        config: &ModelConfig,
        storage: Storage,
        lookup: impl Fn(&str) -> Option<TensorEntry>,
    ) -> Result<Self, ModelError> {
        Ok(Self::from_weights(ModelWeights::load(
            config, storage, lookup,
        )?))
    }

    /// Wraps weights already loaded.
    pub fn from_weights(weights: ModelWeights) -> Self {
        Self { weights }
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        self.weights.config()
    }

    /// The weights.
    pub fn weights(&self) -> &ModelWeights {
        &self.weights
    }

    /// A fresh run state (activation buffers and an empty KV cache) for this model.
    pub fn new_state(&self, options: StateOptions) -> Result<RunState, ModelError> {
        RunState::new(self.config(), options)
    }
}

/// The text of [`ModelError::UnsupportedTypes`]: one tensor on one line, several as a list.
fn unsupported_types_message(tensors: &[(String, GgmlType)]) -> String {
    let supported = weights::supported_matrix_types();
    let one = |(name, ty): &(String, GgmlType)| {
        format!(
            "tensor \"{name}\" has type {} ({})",
            ty.ggml_name(),
            ty.id()
        )
    };
    match tensors {
        [t] => format!(
            "{}, which this runtime cannot run yet; supported: {supported}",
            one(t)
        ),
        _ => {
            let mut s = format!(
                "{} tensors have types this runtime cannot run yet (supported: {supported}):",
                tensors.len()
            );
            for t in tensors {
                s.push_str("\n  ");
                s.push_str(&one(t));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::arch::tensors::{Place, TABLE, TABLE_GLM1};

    /// The module docs' summaries list exactly the tensor tables, in their order.
    #[test]
    fn doc_table_matches_the_tensor_table() {
        let src = include_str!("mod.rs");
        let tables: Vec<Vec<String>> = src
            .split("//! | name | shape |")
            .skip(1)
            .map(|part| {
                part.lines()
                    .skip(2)
                    .map_while(|l| l.strip_prefix("//! | `"))
                    .map(str::to_owned)
                    .collect()
            })
            .collect();
        let want = |table: &[crate::arch::tensors::TensorSpec]| -> Vec<String> {
            table
                .iter()
                .map(|t| {
                    let name = match t.place {
                        Place::Layer => format!("blk.N.{}", t.gguf),
                        _ => t.gguf.to_owned(),
                    };
                    format!("{name}` | `{}` |", t.shape_doc.replace('|', "\\|"))
                })
                .collect()
        };
        assert_eq!(
            tables.len(),
            2 + 1,
            "two doc tables (and this test's own marker)"
        );
        assert_eq!(tables[0], want(&TABLE));
        assert_eq!(tables[1], want(&TABLE_GLM1));
    }
}
