//! The Hugging Face `config.json` of ChatGLM-6B (v1) checkpoints, and the one layout change
//! the converter makes to their weights.
//!
//! Field names and defaults follow THUDM `chatglm-6b` `configuration_chatglm.py` (blob
//! 78f3425d5f). The sizes and token ids are required; `layernorm_epsilon` and
//! `position_encoding_2d` default as there. `vocab_size` is the padded vocabulary (the
//! embedding's rows). No `tie_word_embeddings` key means tied, as in every released v1
//! checkpoint: the output layer is the embedding, stored once.

use std::path::Path;

use chatglm::model::{Block, Glm1Params, ModelConfig, RopeScaling};
use serde::Deserialize;

use crate::config::ConfigError;

fn yes() -> bool {
    true
}

fn default_epsilon() -> f64 {
    1e-5
}

/// A ChatGLM-6B (v1) `config.json`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Glm1Config {
    /// `"chatglm"`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Width of the residual stream (4096).
    pub hidden_size: usize,
    /// Number of transformer layers (28).
    pub num_layers: usize,
    /// Number of attention heads (32), each `hidden_size / num_attention_heads` wide.
    pub num_attention_heads: usize,
    /// Width of the MLP (16384).
    pub inner_hidden_size: usize,
    /// Longest sequence (2048).
    pub max_sequence_length: usize,
    /// LayerNorm epsilon (1e-5).
    #[serde(default = "default_epsilon")]
    pub layernorm_epsilon: f64,
    /// 2-D rotary positions (true for every released checkpoint; the runtime has no other).
    #[serde(default = "yes")]
    pub position_encoding_2d: bool,
    /// Rows of the embedding, the padded vocabulary (130528).
    pub vocab_size: usize,
    /// `<sop>`, which ends the bidirectional context.
    pub bos_token_id: u32,
    /// `<eop>`, the end of a reply.
    pub eos_token_id: u32,
    /// `[MASK]`.
    pub mask_token_id: u32,
    /// `[gMASK]`.
    pub gmask_token_id: u32,
    /// `<pad>`.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Absent (= tied) in the released checkpoints; `false` is refused.
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// THUDM's pre-quantized checkpoints (`chatglm-6b-int4`) set this.
    #[serde(default)]
    pub quantization_bit: Option<u32>,
    /// P-Tuning v2 prefix length.
    #[serde(default)]
    pub pre_seq_len: Option<usize>,
    /// How the weights are stored (informational).
    #[serde(default)]
    pub torch_dtype: Option<String>,
}

impl Glm1Config {
    /// Parses a v1 `config.json` read from `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Whether a parsed `config.json` is a v1 one (it has a field only v1 has).
    pub fn is_v1(value: &serde_json::Value) -> bool {
        crate::config::V1_FIELDS
            .iter()
            .any(|f| value.get(*f).is_some())
    }

    /// Refuses what the runtime cannot run, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let unsupported = |field: &'static str, value: String, reason: &str| {
            Err(ConfigError::Unsupported {
                field,
                value,
                reason: reason.to_owned(),
            })
        };
        if let Some(t) = self.model_type.as_deref().filter(|t| *t != "chatglm") {
            return unsupported("model_type", t.to_owned(), "not a ChatGLM model");
        }
        let sizes = [
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("inner_hidden_size", self.inner_hidden_size),
            ("max_sequence_length", self.max_sequence_length),
            ("vocab_size", self.vocab_size),
        ];
        for (field, v) in sizes {
            if v == 0 {
                return unsupported(field, "0".into(), "must be positive");
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads)
            || !(self.hidden_size / self.num_attention_heads).is_multiple_of(4)
        {
            return unsupported(
                "num_attention_heads",
                self.num_attention_heads.to_string(),
                "hidden_size / num_attention_heads must be a multiple of 4 (2-D RoPE rotates \
                 two halves of each head, rotate_half style)",
            );
        }
        if !self.position_encoding_2d {
            return unsupported(
                "position_encoding_2d",
                "false".into(),
                "the runtime implements the 2-D rotary positions only",
            );
        }
        if !(self.layernorm_epsilon.is_finite() && self.layernorm_epsilon > 0.0) {
            return unsupported(
                "layernorm_epsilon",
                self.layernorm_epsilon.to_string(),
                "must be a positive number",
            );
        }
        if self.tie_word_embeddings == Some(false) {
            return unsupported(
                "tie_word_embeddings",
                "false".into(),
                "ChatGLM-6B's output layer is its embedding",
            );
        }
        if let Some(bits) = self.quantization_bit.filter(|&b| b != 0) {
            return unsupported(
                "quantization_bit",
                bits.to_string(),
                "the weights are pre-quantized by THUDM's code; convert the float checkpoint",
            );
        }
        if let Some(n) = self.pre_seq_len.filter(|&n| n != 0) {
            return unsupported(
                "pre_seq_len",
                n.to_string(),
                "P-tuning v2 prefixes are not supported",
            );
        }
        let ids = [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
            ("mask_token_id", self.mask_token_id),
            ("gmask_token_id", self.gmask_token_id),
        ];
        for (field, id) in ids {
            if id as usize >= self.vocab_size {
                return unsupported(field, id.to_string(), "not below vocab_size");
            }
        }
        let products = [
            ("vocab_size", self.vocab_size),
            ("inner_hidden_size", self.inner_hidden_size),
            ("hidden_size", self.hidden_size.saturating_mul(3)),
        ];
        for (field, rows) in products {
            if !matches!(rows.checked_mul(self.hidden_size), Some(n) if n <= isize::MAX as usize / 4)
            {
                return unsupported(field, rows.to_string(), "tensor sizes overflow");
            }
        }
        Ok(())
    }

    /// Width of one head, `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// The runtime's configuration: full multi-head attention (a kv head per query head),
    /// RoPE base 10000, the residual scale of [`Glm1Params::reference_alpha`] (the
    /// reference's, whatever `num_layers` is).
    pub fn to_model_config(&self) -> ModelConfig {
        ModelConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            num_heads: self.num_attention_heads,
            num_kv_groups: self.num_attention_heads,
            head_dim: self.head_dim(),
            ffn_hidden_size: self.inner_hidden_size,
            context_length: self.max_sequence_length,
            rms_eps: self.layernorm_epsilon as f32,
            rope_base: 10000.0,
            rope_scaling: RopeScaling::None,
            block: Block::Glm1(Glm1Params {
                residual_alpha: Glm1Params::reference_alpha(),
                mask_token_id: self.mask_token_id,
                gmask_token_id: self.gmask_token_id,
                sop_token_id: self.bos_token_id,
            }),
        }
    }
}

/// The Hugging Face name of the output layer, the same values as the embedding in a tied
/// checkpoint: read by nobody, as the file stores the embedding once.
pub const TIED_LM_HEAD: &str = "lm_head.weight";

/// Reorders the rows of a v1 `query_key_value` weight (`cols` columns) or bias (`cols` = 1)
/// from the checkpoint's per-head layout `[q_0 k_0 v_0] [q_1 k_1 v_1] ...` (each `head_dim`
/// rows; `modeling_chatglm.py` views the output as `(heads, 3 * head_dim)` and splits the
/// last axis in three) into `[q_0 q_1 ...] [k_0 ...] [v_0 ...]`, the runtime's Q | K | V.
/// A row permutation: exact at every type, as quantization blocks lie within a row.
pub fn permute_qkv_rows(values: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let block = head_dim * cols;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for part in 0..3 {
            let from = (h * 3 + part) * block;
            let to = (part * heads + h) * block;
            out[to..to + block].copy_from_slice(&values[from..from + block]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_qkv_rows_groups_q_k_v() {
        // 2 heads of 1 row, 2 columns: rows q0 k0 v0 q1 k1 v1.
        let rows = [
            [1.0, 1.5],
            [2.0, 2.5],
            [3.0, 3.5],
            [4.0, 4.5],
            [5.0, 5.5],
            [6.0, 6.5],
        ];
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let got = permute_qkv_rows(&flat, 2, 1, 2);
        assert_eq!(
            got,
            [1.0, 1.5, 4.0, 4.5, 2.0, 2.5, 5.0, 5.5, 3.0, 3.5, 6.0, 6.5]
        );
        assert_eq!(
            permute_qkv_rows(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 2, 1, 1),
            [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
    }

    fn real_6b() -> serde_json::Value {
        serde_json::json!({
            "model_type": "chatglm", "hidden_size": 4096, "num_layers": 28,
            "num_attention_heads": 32, "inner_hidden_size": 16384,
            "max_sequence_length": 2048, "layernorm_epsilon": 1e-5,
            "position_encoding_2d": true, "vocab_size": 130528,
            "bos_token_id": 130004, "eos_token_id": 130005, "mask_token_id": 130000,
            "gmask_token_id": 130001, "pad_token_id": 3
        })
    }

    fn check(v: &serde_json::Value) -> Result<Glm1Config, ConfigError> {
        let c = Glm1Config::parse(&v.to_string(), Path::new("config.json"))?;
        c.validate().map(|()| c)
    }

    #[test]
    fn the_real_config_gives_the_6b_shape() {
        let c = check(&real_6b()).unwrap();
        assert!(Glm1Config::is_v1(&real_6b()));
        let m = c.to_model_config();
        assert_eq!(
            (m.head_dim, m.num_kv_groups, m.ffn_hidden_size),
            (128, 32, 16384)
        );
        assert_eq!(m, chatglm::build::synthetic::Preset::ChatGlm6b.config());
    }

    #[test]
    fn unsupported_fields_are_named() {
        let field_of = |key: &str, value: serde_json::Value| {
            let mut v = real_6b();
            v[key] = value;
            match check(&v) {
                Err(ConfigError::Unsupported { field, .. }) => field,
                other => panic!("{key}: {other:?}"),
            }
        };
        assert_eq!(
            field_of("position_encoding_2d", false.into()),
            "position_encoding_2d"
        );
        assert_eq!(
            field_of("tie_word_embeddings", false.into()),
            "tie_word_embeddings"
        );
        assert_eq!(field_of("quantization_bit", 4.into()), "quantization_bit");
        assert_eq!(field_of("pre_seq_len", 128.into()), "pre_seq_len");
        assert_eq!(
            field_of("num_attention_heads", 48.into()),
            "num_attention_heads"
        );
        assert_eq!(field_of("gmask_token_id", 130528.into()), "gmask_token_id");
        assert_eq!(
            field_of("layernorm_epsilon", 0.0.into()),
            "layernorm_epsilon"
        );
        assert_eq!(field_of("model_type", "llama".into()), "model_type");
        let mut v = real_6b();
        v.as_object_mut().unwrap().remove("bos_token_id");
        assert!(matches!(check(&v), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn residual_alpha_is_sqrt_56_whatever_the_depth() {
        let alpha = Glm1Params::reference_alpha();
        assert_eq!(alpha, 56f64.sqrt() as f32);
        assert!((alpha - 7.483_315).abs() < 1e-6);
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/golden-glm1/glm1-tiny/config.json"
        ))
        .unwrap();
        let c = Glm1Config::parse(&text, Path::new("config.json")).unwrap();
        assert_eq!(c.num_layers, 2);
        c.validate().unwrap();
        match c.to_model_config().block {
            Block::Glm1(p) => assert_eq!(p.residual_alpha, alpha),
            other => panic!("{other:?}"),
        }
    }
}
