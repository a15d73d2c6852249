//! What the output file holds: the model's shape, and for each GGUF tensor its name, shape,
//! type and where its values come from.

use super::mix::{Mix, Place};
use crate::arch::tensors::{self, Table, TensorSpec};
use crate::model::{ConfigError, ModelConfig};
use chatglm_kernels::GgmlType;

pub use crate::arch::tensors::Role;

/// One tensor of the output file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorPlan {
    /// GGUF tensor name.
    pub name: String,
    /// Hugging Face tensor name it is read from.
    pub hf_name: String,
    /// Shape as `[rows, cols]` for matrices, `[len]` for vectors (PyTorch order).
    pub shape: Vec<usize>,
    /// Role of the tensor.
    pub role: Role,
    /// Output element type.
    pub ty: GgmlType,
    /// Why the type differs from the one asked for, if it does.
    pub fallback: Option<String>,
}

impl TensorPlan {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row length (the last, contiguous dimension).
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Dimensions in ggml order (contiguous dimension first), as GGUF stores them.
    pub fn ggml_dims(&self) -> Vec<u64> {
        self.shape.iter().rev().map(|&d| d as u64).collect()
    }

    /// Bytes of the tensor's data in the output type.
    pub fn bytes(&self) -> usize {
        self.ty.bytes_for(self.numel() as u64).unwrap_or(0) as usize
    }
}

/// Every tensor of the output file in file order (the [`Table::of`] the configuration's block,
/// [`Table::in_file_order`]), with
/// `matrix_type` for 2-D weights. Errors if `shape` is not a valid configuration
/// ([`ModelConfig::validate`]).
///
/// Embedding and output layers are quantized like the other matrices (as chatglm.cpp does):
/// they are 2 x 266 M of the 6.2 B parameters, and keeping them wider would grow a q4_0 file
/// by about 0.5 GB for a small gain. A matrix whose row length is not a whole number of blocks
/// falls back to f16, as llama.cpp does.
///
/// Unless `portable`, the matrices other than the embedding are then stored in the
/// row-interleaved form of their type where it has one and the row count allows
/// ([`interleaved_layout`]); the embedding stays in ggml's layout, since decode reads one of
/// its rows at a time.
///
/// No capacity is taken from the configuration: a caller bounds `shape.num_layers` by what
/// its input holds (the converter by the checkpoint's tensor count,
/// [`tensors::max_layers`]).
pub fn build_plan(
    shape: &ModelConfig,
    matrix_type: impl Into<Mix>,
    portable: bool,
) -> Result<Vec<TensorPlan>, ConfigError> {
    let mix = matrix_type.into();
    shape.validate()?;
    Table::of(shape)
        .in_file_order(shape.num_layers)
        .map(|(spec, layer)| {
            let dims = spec
                .shape(shape)
                .ok_or(ConfigError::Overflow("tensor shape"))?;
            let (ty, fallback) = match spec.role {
                Role::Norm | Role::Bias => (GgmlType::F32, None),
                Role::Matrix => {
                    let cols = dims.last().copied().unwrap_or(0);
                    let at = Place {
                        layer,
                        n_layers: shape.num_layers,
                        gqa: shape.num_heads / shape.num_kv_groups.max(1),
                    };
                    mix.type_for(spec, at, cols)
                }
            };
            let ty = stored_type(spec, ty, dims[0], portable);
            Ok(TensorPlan {
                name: spec.gguf_name(layer),
                hf_name: spec.hf_name(layer),
                shape: dims,
                role: spec.role,
                ty,
                fallback,
            })
        })
        .collect()
}

/// The type tensor `spec` of `ty` (ggml's layout) with `rows` rows is stored as: unless
/// `portable`, a matrix other than the embedding takes the row-interleaved form of its type
/// where [`interleaved_layout`] allows; the embedding stays in ggml's layout, since decode
/// reads one of its rows at a time. The converter and `repack` both follow it.
pub fn stored_type(spec: &TensorSpec, ty: GgmlType, rows: usize, portable: bool) -> GgmlType {
    if !portable && spec.role == Role::Matrix && spec.gguf != tensors::TOKEN_EMBD.gguf {
        interleaved_layout(ty, rows)
    } else {
        ty
    }
}

/// The type a `rows`-row matrix of `ty` is stored as in a non-portable file: the
/// row-interleaved form of `ty` (groups of rows stored block by block, so one sequential
/// stream feeds several outputs: about 2x faster decode with AVX-512) when there is one and
/// `rows` is a whole number of groups, else `ty` itself. This is the kernels'
/// [`chatglm_kernels::interleaved_layout`], which `interleave` also follows: the type in the
/// header and the bytes written agree by construction.
pub use chatglm_kernels::interleaved_layout;

/// Checkpoint tensors the converter reads but does not write: the RoPE inverse frequencies are
/// recomputed by the runtime from the base (ChatGLM2/3 `rotary_pos_emb.inv_freq`, v1's
/// per-layer `attention.rotary_emb.inv_freq`).
pub fn is_ignored_hf_tensor(name: &str) -> bool {
    name.ends_with("rotary_pos_emb.inv_freq") || name.ends_with("rotary_emb.inv_freq")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glm2_6b() -> ModelConfig {
        crate::build::synthetic::Preset::ChatGlm2_6b.config()
    }

    #[test]
    fn chatglm2_6b_has_199_tensors_of_6_2b_parameters() {
        let plan = build_plan(&glm2_6b(), GgmlType::Q4_0, true).unwrap();
        assert_eq!(plan.len(), 199);
        let params: usize = plan.iter().map(TensorPlan::numel).sum();
        assert_eq!(params, 6_243_584_000);
        let qkv = plan
            .iter()
            .find(|t| t.name == "blk.0.attn_qkv.weight")
            .unwrap();
        assert_eq!(qkv.shape, vec![4608, 4096]);
        assert_eq!(qkv.ggml_dims(), vec![4096, 4608]);
        assert!(plan.iter().all(|t| t.fallback.is_none()));
        let norm = plan
            .iter()
            .find(|t| t.name == "output_norm.weight")
            .unwrap();
        assert_eq!(norm.ty, GgmlType::F32);
    }

    #[test]
    fn chatglm_6b_has_339_tensors_of_6_2b_parameters_and_no_output_layer() {
        let c = crate::build::synthetic::Preset::ChatGlm6b.config();
        let plan = build_plan(&c, GgmlType::Q4_0, true).unwrap();
        assert_eq!(plan.len(), 1 + 28 * 12 + 2);
        let params: usize = plan.iter().map(TensorPlan::numel).sum();
        assert_eq!(params, 6_173_286_400);
        let names: Vec<&str> = plan.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names[..3],
            [
                "token_embd.weight",
                "blk.0.attn_norm.weight",
                "blk.0.attn_norm.bias"
            ]
        );
        assert_eq!(
            names[names.len() - 2..],
            ["output_norm.weight", "output_norm.bias"]
        );
        assert!(!names.contains(&"output.weight"));
        let find = |n: &str| plan.iter().find(|t| t.name == n).unwrap();
        assert_eq!(find("blk.0.attn_qkv.weight").shape, vec![3 * 4096, 4096]);
        assert_eq!(find("blk.0.ffn_up.weight").shape, vec![16384, 4096]);
        assert_eq!(find("blk.27.ffn_up.bias").shape, vec![16384]);
        assert_eq!(find("blk.27.ffn_down.bias").ty, GgmlType::F32);
        assert_eq!(
            find("blk.3.attn_output.bias").hf_name,
            "transformer.layers.3.attention.dense.bias"
        );
    }

    #[test]
    fn non_portable_plans_interleave_every_matrix_but_the_embedding() {
        let plan = build_plan(&glm2_6b(), GgmlType::Q4_0, false).unwrap();
        for t in &plan {
            let want = match (t.role, t.name.as_str()) {
                (Role::Matrix, "token_embd.weight") => GgmlType::Q4_0,
                (Role::Matrix, _) => GgmlType::Q4_0x8,
                _ => GgmlType::F32,
            };
            assert_eq!(t.ty, want, "{}", t.name);
        }
        // Types without an interleaved form, and row counts that are not whole groups, stay.
        assert_eq!(interleaved_layout(GgmlType::Q4_1, 64), GgmlType::Q4_1);
        assert_eq!(interleaved_layout(GgmlType::Q8_0, 12), GgmlType::Q8_0);
        assert_eq!(interleaved_layout(GgmlType::Q8_0, 16), GgmlType::Q8_0x8);
        assert_eq!(interleaved_layout(GgmlType::F16, 16), GgmlType::F16);
    }

    #[test]
    fn rows_not_a_block_multiple_fall_back_to_f16() {
        let mut s = glm2_6b();
        s.num_layers = 1;
        s.ffn_hidden_size = 100;
        let plan = build_plan(&s, GgmlType::Q8_0, true).unwrap();
        let down = plan
            .iter()
            .find(|t| t.name == "blk.0.ffn_down.weight")
            .unwrap();
        assert_eq!(down.ty, GgmlType::F16);
        assert!(down.fallback.as_deref().unwrap().contains("100"));
        let up = plan
            .iter()
            .find(|t| t.name == "blk.0.ffn_up.weight")
            .unwrap();
        assert_eq!(up.ty, GgmlType::Q8_0);
    }
}
