//! The per-tensor type choices of llama.cpp's `llama-quantize` for the mixes it names
//! (`q4_k_m`, `q5_k_s`, ...), so that a file written with `-q q4_k_m` has the types a
//! llama.cpp user expects tensor by tensor, and the `general.file_type` (`llama_ftype`) of
//! the mix.
//!
//! Upstream: ggml-org/llama.cpp `src/llama-quant.cpp`, `llama_tensor_get_type` (no importance
//! matrix, no `--pure`, no type overrides), as in commit 0c1e570 (the llama.cpp that
//! llama-cpp-python 0.3.36 vendors, the one `../shared/peer/` measures), restricted to the
//! tensors of a ChatGLM file (`attn_qkv`, `attn_output`, `ffn_up`, `ffn_down`, `token_embd`,
//! `output`). There `attn_qkv` follows the `attn_v` rules (Q4_K_M/Q5_K_M bump it to Q6_K on
//! the "more bits" layers, Q4_K_S to Q5_K on the first 4, Q3_K_M to Q5_K on the first 2, Q2_K
//! and IQ4_NL/XS up with 4 or more query heads per key/value head). Checked against that
//! llama-quantize on glm2-small at every mix: the same type and the same bytes for every tensor.
//! Older llama.cpp (8784689) had a separate `attn_qkv` rule (Q3_K_M → Q4_K, Q4_K_M → Q5_K,
//! Q5_K_M → Q6_K); its files differ in those tensors' types and run here all the same.

use crate::arch::tensors::{self, TensorSpec};
use chatglm_kernels::GgmlType;

/// Where a matrix sits, as far as the mixes' rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Its layer (0 for the embedding and output).
    pub layer: usize,
    /// The model's layers.
    pub n_layers: usize,
    /// Query heads per key/value head (llama.cpp's `n_gqa()`; 1 without grouping).
    pub gqa: usize,
}

/// What `-q` asks for: one ggml type for every matrix, or one of llama-quantize's mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Every matrix in this type (falling back to f16 where rows are not whole blocks).
    Pure(GgmlType),
    /// llama.cpp `LLAMA_FTYPE_MOSTLY_Q2_K`.
    Q2K,
    /// `LLAMA_FTYPE_MOSTLY_Q3_K_M`.
    Q3KM,
    /// `LLAMA_FTYPE_MOSTLY_Q4_K_S`.
    Q4KS,
    /// `LLAMA_FTYPE_MOSTLY_Q4_K_M`.
    Q4KM,
    /// `LLAMA_FTYPE_MOSTLY_Q5_K_S`.
    Q5KS,
    /// `LLAMA_FTYPE_MOSTLY_Q5_K_M`.
    Q5KM,
    /// `LLAMA_FTYPE_MOSTLY_Q6_K`.
    Q6K,
    /// `LLAMA_FTYPE_MOSTLY_Q5_0` (matrices Q5_0, the output layer Q6_K).
    Q5_0,
    /// `LLAMA_FTYPE_MOSTLY_Q5_1` (matrices Q5_1, the output layer Q6_K).
    Q5_1,
    /// `LLAMA_FTYPE_MOSTLY_IQ4_NL`.
    Iq4Nl,
    /// `LLAMA_FTYPE_MOSTLY_IQ4_XS`.
    Iq4Xs,
}

impl From<GgmlType> for Mix {
    fn from(ty: GgmlType) -> Self {
        Mix::Pure(ty)
    }
}

/// llama.cpp's "use more bits" layers: the first and last eighth and every third in between.
// From `llama_tensor_get_type`, ggml-org/llama.cpp src/llama-quant.cpp.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64).rem_euclid(3) == 2
}

impl Mix {
    /// The names `-q` accepts for mixes, with their [`Mix`].
    pub const NAMES: [(&'static str, Mix); 11] = [
        ("q2_k", Mix::Q2K),
        ("q3_k_m", Mix::Q3KM),
        ("q4_k_s", Mix::Q4KS),
        ("q4_k_m", Mix::Q4KM),
        ("q5_k_s", Mix::Q5KS),
        ("q5_k_m", Mix::Q5KM),
        ("q6_k", Mix::Q6K),
        ("q5_0", Mix::Q5_0),
        ("q5_1", Mix::Q5_1),
        ("iq4_nl", Mix::Iq4Nl),
        ("iq4_xs", Mix::Iq4Xs),
    ];

    /// The mix named `name` (case-insensitive), or a pure type of that name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, m)| m)
            .or_else(|| GgmlType::from_name(name).map(Mix::Pure))
    }

    /// The type of the matrices no rule singles out (llama.cpp's `default_type`).
    pub fn base(self) -> GgmlType {
        match self {
            Mix::Pure(t) => t,
            Mix::Q2K => GgmlType::Q2_K,
            Mix::Q3KM => GgmlType::Q3_K,
            Mix::Q4KS | Mix::Q4KM => GgmlType::Q4_K,
            Mix::Q5KS | Mix::Q5KM => GgmlType::Q5_K,
            Mix::Q6K => GgmlType::Q6_K,
            Mix::Q5_0 => GgmlType::Q5_0,
            Mix::Q5_1 => GgmlType::Q5_1,
            Mix::Iq4Nl => GgmlType::IQ4_NL,
            Mix::Iq4Xs => GgmlType::IQ4_XS,
        }
    }

    /// llama.cpp's `llama_ftype` of a file of this mix, if it has one.
    pub fn file_type(self) -> Option<u32> {
        match self {
            Mix::Pure(t) => super::file_type(t),
            Mix::Q2K => Some(10),
            Mix::Q3KM => Some(12),
            Mix::Q4KS => Some(14),
            Mix::Q4KM => Some(15),
            Mix::Q5KS => Some(16),
            Mix::Q5KM => Some(17),
            Mix::Q6K => Some(18),
            Mix::Q5_0 => Some(8),
            Mix::Q5_1 => Some(9),
            Mix::Iq4Nl => Some(25),
            Mix::Iq4Xs => Some(30),
        }
    }

    /// The type of matrix `spec` at `at` with rows of `cols` elements, and why it is not the
    /// one the rules chose when it had to fall back.
    // Port of `llama_tensor_get_type`, ggml-org/llama.cpp src/llama-quant.cpp (see the
    // module docs for what applies here).
    pub fn type_for(self, spec: &TensorSpec, at: Place, cols: usize) -> (GgmlType, Option<String>) {
        let base = self.base();
        let Mix::Pure(_) = self else {
            return self.fallback(self.chosen(spec, at, cols), cols);
        };
        // A pure type: f16 where rows are not whole blocks (this project's rule since Q4_0).
        if cols.is_multiple_of(base.block_size()) {
            (base, None)
        } else {
            (
                GgmlType::F16,
                Some(format!(
                    "rows of {cols} are not a multiple of the {base} block size {}",
                    base.block_size()
                )),
            )
        }
    }

    /// The type the mix's rules choose, before the fallback for rows of partial blocks.
    fn chosen(self, spec: &TensorSpec, at: Place, cols: usize) -> GgmlType {
        let Place {
            layer,
            n_layers,
            gqa,
        } = at;
        let base = self.base();
        let name = spec.gguf;
        if name == tensors::OUTPUT.gguf {
            // Q8_0 when rows are not whole blocks of the base type, else Q6_K.
            return if !cols.is_multiple_of(base.block_size()) {
                GgmlType::Q8_0
            } else {
                GgmlType::Q6_K
            };
        }
        let (i, n) = (layer, n_layers);
        if name == tensors::FFN_DOWN.gguf {
            return match self {
                Mix::Q2K => GgmlType::Q3_K,
                Mix::Q3KM if i < n / 16 => GgmlType::Q5_K,
                // `arch != LLM_ARCH_FALCON || use_more_bits`: always, for ChatGLM.
                Mix::Q3KM => GgmlType::Q4_K,
                Mix::Q4KM if use_more_bits(i, n) => GgmlType::Q6_K,
                Mix::Iq4Nl | Mix::Iq4Xs if i < n / 8 => GgmlType::Q5_K,
                Mix::Q5KM if use_more_bits(i, n) => GgmlType::Q6_K,
                Mix::Q4KS if i < n / 8 => GgmlType::Q5_K,
                _ => base,
            };
        }
        if name == tensors::ATTN_OUTPUT.gguf {
            return match self {
                Mix::Q2K => GgmlType::Q3_K,
                Mix::Q3KM => GgmlType::Q4_K,
                _ => base,
            };
        }
        if name == tensors::ATTN_QKV.gguf {
            // The `attn_v` rules: the fused QKV is llama.cpp's value tensor here, one a layer
            // (`i_attention_wv` = the layer, `n_attention_wv` = the layers).
            return match self {
                Mix::Q2K if gqa >= 4 => GgmlType::Q4_K,
                Mix::Q2K => GgmlType::Q3_K,
                Mix::Q3KM if i < 2 => GgmlType::Q5_K,
                Mix::Q3KM => GgmlType::Q4_K,
                Mix::Iq4Nl | Mix::Iq4Xs if gqa >= 4 => GgmlType::Q5_K,
                Mix::Q4KM | Mix::Q5KM if use_more_bits(i, n) => GgmlType::Q6_K,
                Mix::Q4KS if i < 4 => GgmlType::Q5_K,
                _ => base,
            };
        }
        base
    }

    /// llama.cpp's fallback for rows that are not whole blocks of the chosen type.
    fn fallback(self, ty: GgmlType, cols: usize) -> (GgmlType, Option<String>) {
        if cols.is_multiple_of(ty.block_size()) {
            return (ty, None);
        }
        let next = match ty {
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::IQ4_XS => GgmlType::IQ4_NL,
            GgmlType::Q4_K => GgmlType::Q5_0,
            GgmlType::Q5_K => GgmlType::Q5_1,
            GgmlType::Q6_K => GgmlType::Q8_0,
            _ => GgmlType::F16,
        };
        let next = if cols.is_multiple_of(next.block_size()) {
            next
        } else {
            GgmlType::F16
        };
        (
            next,
            Some(format!(
                "rows of {cols} are not a multiple of the {ty} block size {} (llama-quantize's fallback)",
                ty.block_size()
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::tensors::{ATTN_OUTPUT, ATTN_QKV, FFN_DOWN, FFN_UP, OUTPUT, TOKEN_EMBD};

    /// Layer `layer` of `n_layers` of a 6B model (32 query heads over 2 groups).
    fn at(layer: usize, n_layers: usize) -> Place {
        Place {
            layer,
            n_layers,
            gqa: 16,
        }
    }

    #[test]
    fn more_bits_layers_of_28() {
        // n = 28: n/8 = 3, 7n/8 = 24; in between (i - 3) % 3 == 2: 5, 8, ..., 23.
        let more: Vec<usize> = (0..28).filter(|&i| use_more_bits(i, 28)).collect();
        assert_eq!(more, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27]);
    }

    #[test]
    fn q4_k_m_of_chatglm3_6b() {
        // Hidden 4096, ffn 13696 (not a multiple of 256), 28 layers.
        let m = Mix::Q4KM;
        assert_eq!(m.type_for(&OUTPUT, at(0, 28), 4096).0, GgmlType::Q6_K);
        assert_eq!(m.type_for(&TOKEN_EMBD, at(0, 28), 4096).0, GgmlType::Q4_K);
        // The fused QKV follows llama.cpp's `attn_v` rules: Q6_K on the more-bits layers.
        assert_eq!(m.type_for(&ATTN_QKV, at(3, 28), 4096).0, GgmlType::Q4_K);
        assert_eq!(m.type_for(&ATTN_QKV, at(0, 28), 4096).0, GgmlType::Q6_K);
        assert_eq!(m.type_for(&ATTN_QKV, at(27, 28), 4096).0, GgmlType::Q6_K);
        assert_eq!(m.type_for(&ATTN_OUTPUT, at(3, 28), 4096).0, GgmlType::Q4_K);
        assert_eq!(m.type_for(&FFN_UP, at(3, 28), 4096).0, GgmlType::Q4_K);
        // ffn_down rows of 13696: Q6_K -> Q8_0 on the more-bits layers, Q4_K -> Q5_0 else.
        let (t, why) = m.type_for(&FFN_DOWN, at(0, 28), 13696);
        assert_eq!(t, GgmlType::Q8_0);
        assert!(why.unwrap().contains("13696"));
        assert_eq!(m.type_for(&FFN_DOWN, at(3, 28), 13696).0, GgmlType::Q5_0);
        assert_eq!(m.file_type(), Some(15));
        // The same with rows of 4096 (a model whose ffn is a multiple of 256).
        assert_eq!(m.type_for(&FFN_DOWN, at(5, 28), 4096).0, GgmlType::Q6_K);
        assert_eq!(m.type_for(&FFN_DOWN, at(6, 28), 4096).0, GgmlType::Q4_K);
    }

    #[test]
    fn qkv_follows_the_attn_v_rules() {
        let no_groups = Place {
            layer: 0,
            n_layers: 28,
            gqa: 1,
        };
        let qkv = |m: Mix, at: Place| m.type_for(&ATTN_QKV, at, 4096).0;
        assert_eq!(qkv(Mix::Q2K, at(5, 28)), GgmlType::Q4_K);
        assert_eq!(qkv(Mix::Q2K, no_groups), GgmlType::Q3_K);
        assert_eq!(qkv(Mix::Iq4Nl, at(5, 28)), GgmlType::Q5_K);
        assert_eq!(qkv(Mix::Iq4Nl, no_groups), GgmlType::IQ4_NL);
        assert_eq!(qkv(Mix::Q3KM, at(1, 28)), GgmlType::Q5_K);
        assert_eq!(qkv(Mix::Q3KM, at(2, 28)), GgmlType::Q4_K);
        assert_eq!(qkv(Mix::Q4KS, at(3, 28)), GgmlType::Q5_K);
        assert_eq!(qkv(Mix::Q4KS, at(4, 28)), GgmlType::Q4_K);
        assert_eq!(qkv(Mix::Q5KM, at(4, 28)), GgmlType::Q5_K);
        assert_eq!(qkv(Mix::Q5KS, at(0, 28)), GgmlType::Q5_K);
    }

    #[test]
    fn other_mixes() {
        assert_eq!(
            Mix::Q5KM.type_for(&ATTN_QKV, at(0, 28), 4096).0,
            GgmlType::Q6_K
        );
        assert_eq!(
            Mix::Q5KS.type_for(&FFN_DOWN, at(0, 28), 4096).0,
            GgmlType::Q5_K
        );
        assert_eq!(
            Mix::Q5KS.type_for(&FFN_DOWN, at(0, 28), 13696).0,
            GgmlType::Q5_1
        );
        assert_eq!(
            Mix::Q4KS.type_for(&FFN_DOWN, at(2, 28), 4096).0,
            GgmlType::Q5_K
        );
        assert_eq!(
            Mix::Q4KS.type_for(&FFN_DOWN, at(3, 28), 4096).0,
            GgmlType::Q4_K
        );
        assert_eq!(
            Mix::Q3KM.type_for(&FFN_DOWN, at(0, 28), 4096).0,
            GgmlType::Q5_K
        );
        assert_eq!(
            Mix::Q3KM.type_for(&FFN_DOWN, at(5, 28), 4096).0,
            GgmlType::Q4_K
        );
        assert_eq!(
            Mix::Q3KM.type_for(&FFN_UP, at(5, 28), 4096).0,
            GgmlType::Q3_K
        );
        assert_eq!(
            Mix::Q2K.type_for(&ATTN_OUTPUT, at(5, 28), 4096).0,
            GgmlType::Q3_K
        );
        assert_eq!(
            Mix::Q2K.type_for(&FFN_UP, at(5, 28), 64).0,
            GgmlType::IQ4_NL
        );
        assert_eq!(
            Mix::Q5_0.type_for(&OUTPUT, at(0, 28), 4096).0,
            GgmlType::Q6_K
        );
        assert_eq!(Mix::Q5_0.type_for(&OUTPUT, at(0, 28), 64).0, GgmlType::Q8_0);
        assert_eq!(Mix::Q5_0.type_for(&FFN_UP, at(0, 28), 64).0, GgmlType::Q5_0);
        assert_eq!(
            Mix::Iq4Nl.type_for(&FFN_DOWN, at(0, 28), 4096).0,
            GgmlType::Q5_K
        );
        assert_eq!(Mix::Q6K.type_for(&FFN_DOWN, at(0, 2), 64).0, GgmlType::Q8_0);
        assert_eq!(
            Mix::Pure(GgmlType::Q4_0).type_for(&OUTPUT, at(0, 2), 64).0,
            GgmlType::Q4_0
        );
        assert_eq!(
            Mix::Pure(GgmlType::Q4_0).type_for(&OUTPUT, at(0, 2), 48).0,
            GgmlType::F16
        );
        assert_eq!(Mix::from_name("Q4_K_M"), Some(Mix::Q4KM));
        assert_eq!(Mix::from_name("bf16"), Some(Mix::Pure(GgmlType::BF16)));
        assert_eq!(Mix::from_name("q4_k_x"), None);
    }
}
