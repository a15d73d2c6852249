//! The `general.*` GGUF keys. The model's keys are written by `ModelConfig::to_gguf` and the
//! tokenizer's by `TokenizerParts::to_gguf`, the twins of what the runtime reads (see
//! `crate::arch` and docs/FORMAT.md).

use crate::arch::keys;
use crate::gguf::{GgufError, Metadata};
use chatglm_kernels::GgmlType;

/// llama.cpp's `llama_ftype` for a file whose matrices are `ty`, if it has one.
pub fn file_type(ty: GgmlType) -> Option<u32> {
    match ty {
        GgmlType::F32 => Some(0),
        GgmlType::F16 => Some(1),
        GgmlType::Q4_0 => Some(2),
        GgmlType::Q4_1 => Some(3),
        GgmlType::Q8_0 => Some(7),
        GgmlType::Q5_0 => Some(8),
        GgmlType::Q5_1 => Some(9),
        GgmlType::Q6_K => Some(18),
        GgmlType::IQ4_NL => Some(25),
        GgmlType::BF16 => Some(32),
        // Row-interleaved forms: the ftype of the blocks they hold.
        GgmlType::Q4_0x8 => Some(2),
        GgmlType::Q8_0x8 => Some(7),
        // Activation types, the mixes' own types, and types this converter does not write.
        _ => None,
    }
}

/// The `general.*` keys of a file of architecture `architecture`
/// (`ModelConfig::architecture`) whose matrices are `ty`.
pub fn general_metadata(
    md: &mut Metadata,
    architecture: &str,
    ty: GgmlType,
    name: &str,
) -> Result<(), GgufError> {
    general_metadata_ftype(md, architecture, file_type(ty), name)
}

/// The `general.*` keys of a file of architecture `architecture` and `llama_ftype` `ftype`
/// (none written if `None`).
pub fn general_metadata_ftype(
    md: &mut Metadata,
    architecture: &str,
    ftype: Option<u32>,
    name: &str,
) -> Result<(), GgufError> {
    md.push_str(keys::GENERAL_ARCHITECTURE, architecture)?;
    md.push_str(keys::GENERAL_NAME, name)?;
    if let Some(ft) = ftype {
        md.push_u32(keys::GENERAL_FILE_TYPE, ft)?;
    }
    md.push_u32(keys::GENERAL_QUANTIZATION_VERSION, 2)?;
    Ok(())
}
