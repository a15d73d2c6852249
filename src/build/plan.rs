//! What the output file holds: the model's shape, and for each GGUF tensor its name, shape,
//! type and where its values come from.

use crate::arch::tensors;
use crate::model::ModelConfig;
use chatglm_kernels::GgmlType;

/// The role a tensor plays, which decides its output type and (for synthetic models) its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An RMSNorm weight: kept in f32.
    Norm,
    /// A bias: kept in f32.
    Bias,
    /// A 2-D weight matrix: stored in the requested type.
    Matrix,
}

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

/// Hugging Face name of the transformer layer `i`'s tensor `suffix`.
fn hf_layer(i: usize, suffix: &str) -> String {
    format!("transformer.encoder.layers.{i}.{suffix}")
}

/// Every tensor of the output file in file order, with `matrix_type` for 2-D weights.
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
pub fn build_plan(shape: &ModelConfig, matrix_type: GgmlType, portable: bool) -> Vec<TensorPlan> {
    let qkv_rows = (shape.num_heads + 2 * shape.num_kv_groups) * shape.head_dim;
    let (h, v, f) = (shape.hidden_size, shape.vocab_size, shape.ffn_hidden_size);
    let attn = shape.num_heads * shape.head_dim;
    let mut plan = Vec::with_capacity(3 + 7 * shape.num_layers);
    let mut push = |name: String, hf_name: String, dims: Vec<usize>, role: Role| {
        let (ty, fallback) = match role {
            Role::Norm | Role::Bias => (GgmlType::F32, None),
            Role::Matrix => {
                let cols = dims.last().copied().unwrap_or(0);
                if cols % matrix_type.block_size() == 0 {
                    (matrix_type, None)
                } else {
                    (
                        GgmlType::F16,
                        Some(format!(
                            "rows of {cols} are not a multiple of the {matrix_type} block size {}",
                            matrix_type.block_size()
                        )),
                    )
                }
            }
        };
        plan.push(TensorPlan {
            name,
            hf_name,
            shape: dims,
            role,
            ty,
            fallback,
        });
    };
    push(
        tensors::TOKEN_EMBD.into(),
        "transformer.embedding.word_embeddings.weight".into(),
        vec![v, h],
        Role::Matrix,
    );
    for i in 0..shape.num_layers {
        push(
            tensors::attn_norm(i),
            hf_layer(i, "input_layernorm.weight"),
            vec![h],
            Role::Norm,
        );
        push(
            tensors::attn_qkv(i),
            hf_layer(i, "self_attention.query_key_value.weight"),
            vec![qkv_rows, h],
            Role::Matrix,
        );
        push(
            tensors::attn_qkv_bias(i),
            hf_layer(i, "self_attention.query_key_value.bias"),
            vec![qkv_rows],
            Role::Bias,
        );
        push(
            tensors::attn_output(i),
            hf_layer(i, "self_attention.dense.weight"),
            vec![h, attn],
            Role::Matrix,
        );
        push(
            tensors::ffn_norm(i),
            hf_layer(i, "post_attention_layernorm.weight"),
            vec![h],
            Role::Norm,
        );
        push(
            tensors::ffn_up(i),
            hf_layer(i, "mlp.dense_h_to_4h.weight"),
            vec![2 * f, h],
            Role::Matrix,
        );
        push(
            tensors::ffn_down(i),
            hf_layer(i, "mlp.dense_4h_to_h.weight"),
            vec![h, f],
            Role::Matrix,
        );
    }
    push(
        tensors::OUTPUT_NORM.into(),
        "transformer.encoder.final_layernorm.weight".into(),
        vec![h],
        Role::Norm,
    );
    push(
        tensors::OUTPUT.into(),
        "transformer.output_layer.weight".into(),
        vec![v, h],
        Role::Matrix,
    );
    if !portable {
        for t in plan
            .iter_mut()
            .filter(|t| t.role == Role::Matrix && t.name != tensors::TOKEN_EMBD)
        {
            t.ty = interleaved_layout(t.ty, t.shape[0]);
        }
    }
    plan
}

/// The type a `rows`-row matrix of `ty` is stored as in a non-portable file: the
/// row-interleaved form of `ty` (groups of rows stored block by block, so one sequential
/// stream feeds several outputs: about 2x faster decode with AVX-512) when there is one and
/// `rows` is a whole number of groups, else `ty` itself.
pub fn interleaved_layout(ty: GgmlType, rows: usize) -> GgmlType {
    match ty.interleaved() {
        Some(t) if rows > 0 && rows % t.row_group() == 0 => t,
        _ => ty,
    }
}

/// Checkpoint tensors the converter reads but does not write: the RoPE inverse frequencies are
/// recomputed by the runtime from the base.
pub fn is_ignored_hf_tensor(name: &str) -> bool {
    name.ends_with("rotary_pos_emb.inv_freq")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glm2_6b() -> ModelConfig {
        crate::build::synthetic::Preset::ChatGlm2_6b.config()
    }

    #[test]
    fn chatglm2_6b_has_199_tensors_of_6_2b_parameters() {
        let plan = build_plan(&glm2_6b(), GgmlType::Q4_0, true);
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
    fn non_portable_plans_interleave_every_matrix_but_the_embedding() {
        let plan = build_plan(&glm2_6b(), GgmlType::Q4_0, false);
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
        let plan = build_plan(&s, GgmlType::Q8_0, true);
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
