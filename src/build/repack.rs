//! `chatglm-convert --repack`: a model file's matrices moved between ggml's portable layouts
//! and this project's row-interleaved ones, without the checkpoint. Only the order of the
//! blocks changes (`chatglm_kernels::interleave` / `deinterleave`), so the values, and the
//! model's results, are the same bit for bit.

use super::plan::stored_type;
use super::{write_file, BuildError, Progress, Summary, TensorPlan};
use crate::arch::keys;
use crate::arch::tensors::{Table, TensorSpec};
use crate::gguf::{GgufFile, Metadata, Value};
use crate::model::ModelConfig;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// The layout a file's matrices are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// ggml's standard block layouts, which llama.cpp and other GGUF tools read.
    Portable,
    /// This project's row-interleaved types where a matrix allows them
    /// ([`super::plan::stored_type`]): faster decode here, readable only here.
    Interleaved,
}

/// Writes `input`'s model to `output` with its matrices in `layout`. Every tensor keeps its
/// block type (`Q4_0x8` and `Q4_0` hold the same blocks), every metadata key is kept, and the
/// file type moves between `general.file_type` (portable files) and
/// [`keys::PORTABLE_FILE_TYPE`] (files with interleaved tensors, which claim no standard
/// type). Tensors the model's table does not name are copied unchanged.
pub fn repack(
    input: &GgufFile,
    layout: Layout,
    output: &Path,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
) -> Result<Summary, BuildError> {
    let config = ModelConfig::from_gguf(input)?;
    let specs: HashMap<String, (&'static TensorSpec, usize)> = Table::of(&config)
        .in_file_order(config.num_layers)
        .map(|(spec, layer)| (spec.gguf_name(layer), (spec, layer)))
        .collect();
    let plan: Vec<TensorPlan> = input
        .tensors()
        .iter()
        .map(|t| {
            let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
            let known = specs.get(&t.name);
            let ty = match known {
                Some(&(spec, _)) => {
                    stored_type(spec, t.ty.portable(), shape[0], layout == Layout::Portable)
                }
                None => t.ty,
            };
            TensorPlan {
                name: t.name.clone(),
                hf_name: known.map_or_else(|| t.name.clone(), |(s, l)| s.hf_name(*l)),
                shape,
                role: known.map_or(crate::arch::tensors::Role::Matrix, |(s, _)| s.role),
                ty,
                fallback: None,
            }
        })
        .collect();
    let interleaved = plan.iter().any(|t| t.ty.is_interleaved());
    let metadata = repacked_metadata(input.metadata(), interleaved)?;
    write_file(
        output,
        &metadata,
        plan,
        progress,
        cancel,
        |index, t, bytes| {
            let info = &input.tensors()[index];
            let data = input.tensor_data(info);
            let rows = t.shape.first().copied().unwrap_or(1);
            let moved = match (info.ty.is_interleaved(), t.ty.is_interleaved()) {
                (false, true) => chatglm_kernels::interleave(info.ty, rows, t.cols(), data),
                (true, false) => chatglm_kernels::deinterleave(info.ty, rows, t.cols(), data),
                _ => {
                    bytes.clear();
                    bytes.extend_from_slice(data);
                    return Ok(());
                }
            };
            *bytes = moved
                .map_err(|source| BuildError::Quantize {
                    tensor: t.name.clone(),
                    source,
                })?
                .1;
            Ok(())
        },
    )
}

/// `input`'s keys, in order, with the file type under the key a file of this layout uses.
fn repacked_metadata(input: &Metadata, interleaved: bool) -> Result<Metadata, BuildError> {
    let mut ftype = [keys::GENERAL_FILE_TYPE, keys::PORTABLE_FILE_TYPE]
        .iter()
        .find_map(|k| input.get(k).cloned());
    let mut out = Metadata::new();
    for (key, value) in input.iter() {
        if key == keys::GENERAL_FILE_TYPE || key == keys::PORTABLE_FILE_TYPE {
            continue;
        }
        out.push(key, value.clone())?;
        // Where the converter writes it: `general.file_type` after the name (as llama.cpp's
        // converter does), ours after the quantization version.
        let after = match interleaved {
            true => keys::GENERAL_QUANTIZATION_VERSION,
            false => keys::GENERAL_NAME,
        };
        if key == after {
            push_file_type(&mut out, ftype.take(), interleaved)?;
        }
    }
    push_file_type(&mut out, ftype, interleaved)?;
    Ok(out)
}

fn push_file_type(
    out: &mut Metadata,
    ftype: Option<Value>,
    interleaved: bool,
) -> Result<(), BuildError> {
    if let Some(ft) = ftype {
        let key = match interleaved {
            true => keys::PORTABLE_FILE_TYPE,
            false => keys::GENERAL_FILE_TYPE,
        };
        out.push(key, ft)?;
    }
    Ok(())
}
