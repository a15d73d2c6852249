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

/// Sizes and constants of a ChatGLM2/3 model. Names follow the Hugging Face `config.json`
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
    /// Width of the MLP (13696); the fused up projection has twice as many rows.
    pub ffn_hidden_size: usize,
    /// Longest sequence the model was configured for (`seq_length`).
    pub context_length: usize,
    /// RMSNorm epsilon (`layernorm_epsilon`, 1e-5).
    pub rms_eps: f32,
    /// RoPE base before scaling (10000).
    pub rope_base: f32,
    /// How positions or base are stretched for the long-context variants.
    pub rope_scaling: RopeScaling,
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
                self.ffn_hidden_size
                    .checked_mul(2)
                    .and_then(|f| f.checked_mul(self.hidden_size)),
                "2 * ffn_hidden_size * hidden_size",
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
