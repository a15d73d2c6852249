//! The model blueprint: every size the forward pass needs, checked once by
//! [`ModelConfig::validate`] so that the rest of the model can rely on it.

/// The prompt format, which the tokenizer and the session need; the network is the same for
/// both, so a [`ModelConfig`] does not hold it (see `Tokenizer::family`).
pub use crate::arch::Family;

/// How a checkpoint's `rope_ratio` stretches the rotary embedding.
///
/// The two generations apply the same config key differently (THUDM `modeling_chatglm.py`,
/// `RotaryEmbedding.forward_impl`): ChatGLM2-6B-32k divides the positions by the ratio,
/// ChatGLM3-6B-32k multiplies the base by it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE: angle `pos * base^(-2i/rot)`.
    None,
    /// ChatGLM2-32k: angle `(pos / ratio) * base^(-2i/rot)`.
    DividePositions(f32),
    /// ChatGLM3-32k: angle `pos * (base * ratio)^(-2i/rot)`.
    MultiplyBase(f32),
}

/// The transformer block a model is made of: the network itself, as opposed to the prompt
/// format ([`Family`]). Read from `general.architecture` (`crate::arch`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Block {
    /// The ChatGLM2/3 (and GLM-4) block: RMSNorm, multi-query attention in groups, RoPE on
    /// the first half of each head in adjacent pairs, SwiGLU, no biases but the QKV one, an
    /// output layer of its own (`forward/glm2.rs`).
    Glm2,
    /// The ChatGLM-6B (v1) block: LayerNorm with bias, full multi-head attention, 2-D RoPE,
    /// GELU, biases on every linear, scaled residuals, bidirectional attention over the
    /// context, output tied to the embedding (`forward/glm1.rs`).
    Glm1(Glm1Params),
}

/// The constants of the ChatGLM-6B (v1) block that its sizes do not give (THUDM
/// `chatglm-6b` `modeling_chatglm.py`, blob 4bef958fb3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Glm1Params {
    /// The residual scale `alpha`: `h = LN(x) * alpha + attention(...)`. `GLMBlock` computes
    /// `(2 * num_layers) ** 0.5` from its own `num_layers` argument, which
    /// `ChatGLMModel` never passes, so it is `sqrt(2 * 28)` for every checkpoint (the
    /// converter writes it).
    pub residual_alpha: f32,
    /// `[MASK]` (config `mask_token_id`): the mask position when there is no `[gMASK]`.
    pub mask_token_id: u32,
    /// `[gMASK]` (config `gmask_token_id`): its first occurrence is the mask position.
    pub gmask_token_id: u32,
    /// `<sop>` (config `bos_token_id`): its first occurrence ends the bidirectional context.
    pub sop_token_id: u32,
}

impl Glm1Params {
    /// The depth `GLMBlock` assumes for its residual scale: `ChatGLMModel` builds every
    /// `GLMBlock` without passing `num_layers`, so its default, 28 (the real model's depth),
    /// sets `alpha = (2 * num_layers) ** 0.5` whatever `config.num_layers` says
    /// (`modeling_chatglm.py`, blob 4bef958fb3, `GLMBlock.__init__`).
    pub const GLMBLOCK_DEFAULT_NUM_LAYERS: u32 = 28;

    /// The residual scale the reference computes, `sqrt(2 * 28)`.
    pub fn reference_alpha() -> f32 {
        (2.0 * f64::from(Self::GLMBLOCK_DEFAULT_NUM_LAYERS)).sqrt() as f32
    }
}

/// Sizes and constants of a ChatGLM model. Names follow the Hugging Face `config.json`
/// where they differ from llama.cpp's (`kv_channels` is [`ModelConfig::head_dim`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Rows of the embedding and output matrices (`padded_vocab_size`, 65024 for the 6B models).
    pub vocab_size: usize,
    /// Width of the residual stream (4096).
    pub hidden_size: usize,
    /// Number of transformer layers (28).
    pub num_layers: usize,
    /// Number of query heads (32).
    pub num_heads: usize,
    /// Number of key/value groups shared by the query heads (`multi_query_group_num`, 2).
    pub num_kv_groups: usize,
    /// Width of one head (`kv_channels`, 128). RoPE rotates the first half of it.
    pub head_dim: usize,
    /// Width of the MLP (13696; v1 `inner_hidden_size`, 16384); the fused up projection of
    /// [`Block::Glm2`] has twice as many rows ([`ModelConfig::ffn_up_rows`]).
    pub ffn_hidden_size: usize,
    /// Longest sequence the model was configured for (`seq_length`).
    pub context_length: usize,
    /// Epsilon of the norms (`layernorm_epsilon`, 1e-5): RMSNorm's for [`Block::Glm2`],
    /// LayerNorm's for [`Block::Glm1`].
    pub rms_eps: f32,
    /// RoPE base before scaling (10000).
    pub rope_base: f32,
    /// How positions or base are stretched for the long-context variants.
    pub rope_scaling: RopeScaling,
    /// The block the layers are made of.
    pub block: Block,
}

/// Why a [`ModelConfig`] cannot describe a runnable model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A size that must be positive is zero.
    #[error("config field `{0}` must be positive")]
    Zero(&'static str),
    /// The query heads cannot be shared evenly among the kv groups.
    #[error("num_heads {heads} is not a multiple of num_kv_groups {groups}")]
    HeadsNotMultipleOfGroups {
        /// `num_heads`.
        heads: usize,
        /// `num_kv_groups`.
        groups: usize,
    },
    /// RoPE rotates `head_dim / 2` dims in pairs, so `head_dim` must be a multiple of 4.
    #[error("head_dim {0} is not a multiple of 4 (RoPE rotates head_dim/2 dims in pairs)")]
    HeadDimNotMultipleOf4(usize),
    /// A float constant is not finite and positive.
    #[error("config field `{field}` must be finite and positive, got {value}")]
    NotPositive {
        /// Field name.
        field: &'static str,
        /// Offending value.
        value: f32,
    },
    /// The v1 block has full multi-head attention: as many kv heads as query heads.
    #[error("a ChatGLM-6B (v1) model has one kv head per query head, not {groups} for {heads}")]
    Glm1Groups {
        /// `num_heads`.
        heads: usize,
        /// `num_kv_groups`.
        groups: usize,
    },
    /// A v1 special id (`[MASK]`, `[gMASK]`, `<sop>`) is outside the vocabulary.
    #[error("ChatGLM-6B special token id {id} is outside the vocabulary of {vocab}")]
    Glm1TokenId {
        /// The id.
        id: u32,
        /// `vocab_size`.
        vocab: usize,
    },
    /// A product of sizes overflows `usize`.
    #[error("config sizes overflow: {0}")]
    Overflow(&'static str),
}

impl ModelConfig {
    /// Checks every invariant the forward pass relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_groups", self.num_kv_groups),
            ("head_dim", self.head_dim),
            ("ffn_hidden_size", self.ffn_hidden_size),
            ("context_length", self.context_length),
        ];
        for (name, v) in sizes {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_groups) {
            return Err(ConfigError::HeadsNotMultipleOfGroups {
                heads: self.num_heads,
                groups: self.num_kv_groups,
            });
        }
        if !self.head_dim.is_multiple_of(4) {
            return Err(ConfigError::HeadDimNotMultipleOf4(self.head_dim));
        }
        if let Block::Glm1(p) = self.block {
            if self.num_kv_groups != self.num_heads {
                return Err(ConfigError::Glm1Groups {
                    heads: self.num_heads,
                    groups: self.num_kv_groups,
                });
            }
            let ids = [p.mask_token_id, p.gmask_token_id, p.sop_token_id];
            if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
                return Err(ConfigError::Glm1TokenId {
                    id,
                    vocab: self.vocab_size,
                });
            }
            if !(p.residual_alpha.is_finite() && p.residual_alpha > 0.0) {
                return Err(ConfigError::NotPositive {
                    field: "residual_alpha",
                    value: p.residual_alpha,
                });
            }
        }
        let ratio = match self.rope_scaling {
            RopeScaling::None => 1.0,
            RopeScaling::DividePositions(r) | RopeScaling::MultiplyBase(r) => r,
        };
        for (field, value) in [
            ("rms_eps", self.rms_eps),
            ("rope_base", self.rope_base),
            ("rope_ratio", ratio),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::NotPositive { field, value });
            }
        }
        // Every buffer size derived below must fit in usize.
        let checks = [
            (self.qkv_dim(), "qkv rows"),
            (
                self.vocab_size.checked_mul(self.hidden_size),
                "vocab_size * hidden_size",
            ),
            (
                self.ffn_up_rows_checked()
                    .and_then(|f| f.checked_mul(self.hidden_size)),
                "ffn_up rows * hidden_size",
            ),
            (
                self.q_dim().checked_mul(self.hidden_size),
                "num_heads * head_dim * hidden_size",
            ),
        ];
        for (v, what) in checks {
            if v.is_none() {
                return Err(ConfigError::Overflow(what));
            }
        }
        Ok(())
    }

    /// Width of all query heads together, `num_heads * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.num_heads.saturating_mul(self.head_dim)
    }

    /// Width of the keys (or values) of all kv groups, `num_kv_groups * head_dim`: one
    /// position of one layer in the KV cache.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_groups.saturating_mul(self.head_dim)
    }

    /// Rows of the fused QKV projection, `(num_heads + 2 * num_kv_groups) * head_dim`, or
    /// `None` on overflow.
    pub fn qkv_dim(&self) -> Option<usize> {
        self.num_kv_groups
            .checked_mul(2)?
            .checked_add(self.num_heads)?
            .checked_mul(self.head_dim)
    }

    /// The `general.architecture` of a file of this model: [`crate::arch::ARCHITECTURE`] for
    /// [`Block::Glm2`], [`crate::arch::ARCHITECTURE_GLM1`] for [`Block::Glm1`].
    pub fn architecture(&self) -> &'static str {
        match self.block {
            Block::Glm2 => crate::arch::ARCHITECTURE,
            Block::Glm1(_) => crate::arch::ARCHITECTURE_GLM1,
        }
    }

    /// Rows of the up projection: `2F` (gate | up) for [`Block::Glm2`], `F` for
    /// [`Block::Glm1`]; `None` on overflow.
    pub fn ffn_up_rows_checked(&self) -> Option<usize> {
        match self.block {
            Block::Glm2 => self.ffn_hidden_size.checked_mul(2),
            Block::Glm1(_) => Some(self.ffn_hidden_size),
        }
    }

    /// [`ModelConfig::ffn_up_rows_checked`] for a validated configuration.
    pub fn ffn_up_rows(&self) -> usize {
        self.ffn_up_rows_checked().unwrap_or(usize::MAX)
    }

    /// Number of dims of each head that RoPE rotates (`head_dim / 2`, llama.cpp's
    /// `rope.dimension_count`).
    pub fn rope_dims(&self) -> usize {
        self.head_dim / 2
    }

    /// Query heads per kv group.
    pub fn heads_per_group(&self) -> usize {
        self.num_heads / self.num_kv_groups.max(1)
    }

    /// The RoPE base after [`RopeScaling::MultiplyBase`].
    pub fn effective_rope_base(&self) -> f64 {
        match self.rope_scaling {
            RopeScaling::MultiplyBase(r) => f64::from(self.rope_base) * f64::from(r),
            _ => f64::from(self.rope_base),
        }
    }

    /// The position RoPE sees for token index `pos`, after [`RopeScaling::DividePositions`].
    pub fn rope_position(&self, pos: usize) -> f64 {
        match self.rope_scaling {
            RopeScaling::DividePositions(r) => pos as f64 / f64::from(r),
            _ => pos as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ModelConfig {
        ModelConfig {
            vocab_size: 2240,
            hidden_size: 256,
            num_layers: 3,
            num_heads: 8,
            num_kv_groups: 2,
            head_dim: 32,
            ffn_hidden_size: 688,
            context_length: 512,
            rms_eps: 1e-5,
            rope_base: 10000.0,
            rope_scaling: RopeScaling::None,
            block: Block::Glm2,
        }
    }

    #[test]
    fn model_config_valid_and_derived_sizes() {
        let c = small();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.qkv_dim(), Some((8 + 4) * 32));
        assert_eq!(c.kv_dim(), 64);
        assert_eq!(c.rope_dims(), 16);
        assert_eq!(c.heads_per_group(), 4);
    }

    #[test]
    fn model_config_rejects_bad_values() {
        let mut c = small();
        c.num_kv_groups = 3;
        assert_eq!(
            c.validate(),
            Err(ConfigError::HeadsNotMultipleOfGroups {
                heads: 8,
                groups: 3
            })
        );
        let mut c = small();
        c.head_dim = 30;
        assert_eq!(c.validate(), Err(ConfigError::HeadDimNotMultipleOf4(30)));
        let mut c = small();
        c.ffn_hidden_size = 0;
        assert_eq!(c.validate(), Err(ConfigError::Zero("ffn_hidden_size")));
        let mut c = small();
        c.rms_eps = f32::NAN;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::NotPositive {
                field: "rms_eps",
                ..
            })
        ));
        let mut c = small();
        c.rope_scaling = RopeScaling::MultiplyBase(0.0);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::NotPositive {
                field: "rope_ratio",
                ..
            })
        ));
        let mut c = small();
        c.vocab_size = usize::MAX;
        assert_eq!(
            c.validate(),
            Err(ConfigError::Overflow("vocab_size * hidden_size"))
        );
    }

    #[test]
    fn model_config_glm1() {
        let mut c = small();
        c.num_kv_groups = c.num_heads;
        c.block = Block::Glm1(Glm1Params {
            residual_alpha: Glm1Params::reference_alpha(),
            mask_token_id: 2000,
            gmask_token_id: 2001,
            sop_token_id: 2004,
        });
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.architecture(), "chatglm1");
        assert_eq!(c.ffn_up_rows(), 688);
        assert_eq!(c.qkv_dim(), Some(3 * 256));
        let mut g = c.clone();
        g.num_kv_groups = 2;
        assert_eq!(
            g.validate(),
            Err(ConfigError::Glm1Groups {
                heads: 8,
                groups: 2
            })
        );
        let mut g = c.clone();
        g.vocab_size = 2004;
        assert_eq!(
            g.validate(),
            Err(ConfigError::Glm1TokenId {
                id: 2004,
                vocab: 2004
            })
        );
        let mut g = c;
        if let Block::Glm1(p) = &mut g.block {
            p.residual_alpha = f32::INFINITY;
        }
        assert!(matches!(
            g.validate(),
            Err(ConfigError::NotPositive {
                field: "residual_alpha",
                ..
            })
        ));
        assert_eq!(small().architecture(), "chatglm");
        assert_eq!(small().ffn_up_rows(), 2 * 688);
    }

    #[test]
    fn model_config_rope_scaling() {
        let mut c = small();
        c.rope_scaling = RopeScaling::DividePositions(4.0);
        assert_eq!(c.rope_position(10), 2.5);
        assert_eq!(c.effective_rope_base(), 10000.0);
        c.rope_scaling = RopeScaling::MultiplyBase(50.0);
        assert_eq!(c.rope_position(10), 10.0);
        assert_eq!(c.effective_rope_base(), 500000.0);
    }
}
