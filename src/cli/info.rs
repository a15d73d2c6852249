//! `chatglm info -m FILE [--json]`.

use super::CliError;
use chatglm::gguf::{Array, GgufFile, Value};
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `chatglm info`.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// The GGUF file.
    #[arg(short, long)]
    model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Arrays longer than this are summarised as `[len x type]` (a vocabulary has 65k entries).
const SHOW_ARRAY_MAX: usize = 16;

/// A short text rendering of a metadata value.
fn show(value: &Value) -> String {
    match value {
        Value::Array(a) if a.len() > SHOW_ARRAY_MAX => {
            format!("[{} x {}]", a.len(), a.element_type().name())
        }
        other => to_json(other).to_string(),
    }
}

/// A metadata value as JSON; long arrays become `{"type", "len"}`.
fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::json;
    match value {
        Value::U8(v) => json!(v),
        Value::I8(v) => json!(v),
        Value::U16(v) => json!(v),
        Value::I16(v) => json!(v),
        Value::U32(v) => json!(v),
        Value::I32(v) => json!(v),
        Value::U64(v) => json!(v),
        Value::I64(v) => json!(v),
        Value::F32(v) => json!(v),
        Value::F64(v) => json!(v),
        Value::Bool(v) => json!(v),
        Value::String(v) => json!(v),
        Value::Array(a) if a.len() > SHOW_ARRAY_MAX => {
            json!({ "type": a.element_type().name(), "len": a.len() })
        }
        Value::Array(a) => array_json(a),
    }
}

fn array_json(a: &Array) -> serde_json::Value {
    use serde_json::json;
    match a {
        Array::U8(v) => json!(v),
        Array::I8(v) => json!(v),
        Array::U16(v) => json!(v),
        Array::I16(v) => json!(v),
        Array::U32(v) => json!(v),
        Array::I32(v) => json!(v),
        Array::U64(v) => json!(v),
        Array::I64(v) => json!(v),
        Array::F32(v) => json!(v),
        Array::F64(v) => json!(v),
        Array::Bool(v) => json!(v),
        Array::String(v) => json!(v),
        Array::Array(v) => serde_json::Value::Array(v.iter().map(array_json).collect()),
    }
}

/// `n` with the largest decimal unit that leaves at least 1: 3.2M, 6.24B, 512.
pub fn count_with_unit(n: u64) -> String {
    scaled(n, &["", "K", "M", "B", "T"])
}

/// `n` bytes in decimal units, as the README and the converter print them: 370 kB, 3.56 GB.
pub fn bytes_with_unit(n: u64) -> String {
    scaled(n, &[" B", " kB", " MB", " GB", " TB"])
}

/// `n / 1000^k` with three significant digits and the unit of `units[k]`.
fn scaled(n: u64, units: &[&str]) -> String {
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 999.5 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{n}{}", units[0]);
    }
    let digits = if value >= 99.95 {
        0
    } else if value >= 9.995 {
        1
    } else {
        2
    };
    format!("{value:.digits$}{}", units[unit])
}

/// Whether the runtime can use a tensor of type `ty` (the kernels multiply it; norms and
/// biases are F32, which they do too).
fn can_run(ty: chatglm_kernels::GgmlType) -> bool {
    chatglm_kernels::matmul::can_multiply(ty)
}

/// Whether `file` has tensors of this project's row-interleaved types.
fn is_interleaved(file: &GgufFile) -> bool {
    file.tensors().iter().any(|t| t.ty.is_interleaved())
}

/// What other runtimes can do with `file`: a portable file is standard GGUF; an interleaved
/// one runs only here, and `--repack` gives its portable twin.
fn layout_note(file: &GgufFile, path: &std::path::Path) -> String {
    if !is_interleaved(file) {
        return "portable (ggml's standard types: llama.cpp and other GGUF tools read it)".into();
    }
    format!(
        "interleaved (this runtime's own types, faster decode here; other GGUF tools cannot \
         read it: `chatglm-convert --repack {} --portable` writes a portable copy)",
        path.display()
    )
}

/// Runs `chatglm info`.
pub fn run(args: &InfoArgs) -> Result<(), CliError> {
    let file = GgufFile::open(&args.model).map_err(|source| chatglm::Error::File {
        path: args.model.clone(),
        source,
    })?;
    let total_bytes: u64 = file.tensors().iter().map(|t| t.size_bytes).sum();
    let total_params: u64 = file
        .tensors()
        .iter()
        .map(|t| t.dims.iter().product::<u64>())
        .sum();
    let family = chatglm::tokenizer::family_from_gguf(file.metadata());
    let mut out = std::io::stdout().lock();
    if args.json {
        let metadata: serde_json::Map<String, serde_json::Value> = file
            .metadata()
            .iter()
            .map(|(k, v)| (k.to_owned(), to_json(v)))
            .collect();
        let tensors: Vec<serde_json::Value> = file
            .tensors()
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "type": t.ty.name(), "dims": t.dims,
                    "offset": t.offset, "bytes": t.size_bytes,
                    "runs_here": can_run(t.ty),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "file": args.model.display().to_string(),
            "version": file.version(),
            "metadata": metadata,
            "tensors": tensors,
            "tensor_count": file.tensors().len(),
            "parameters": total_params,
            "tensor_bytes": total_bytes,
            "kernels": chatglm_kernels::isa::active().name(),
            "family": family.as_ref().ok().map(|f| f.name()),
            "portable": !is_interleaved(&file),
        });
        writeln!(out, "{doc}")?;
        return Ok(());
    }
    writeln!(out, "file: {}", args.model.display())?;
    // How many tensors of each type, the most common first.
    let mut types: Vec<(&str, usize)> = Vec::new();
    for t in file.tensors() {
        match types.iter_mut().find(|(name, _)| *name == t.ty.name()) {
            Some((_, n)) => *n += 1,
            None => types.push((t.ty.name(), 1)),
        }
    }
    types.sort_by_key(|t| std::cmp::Reverse(t.1));
    let types: Vec<String> = types
        .iter()
        .map(|(name, n)| format!("{n} {name}"))
        .collect();
    writeln!(
        out,
        "family: {}, {} parameters, tensors: {}",
        match &family {
            Ok(f) => f.to_string(),
            Err(e) => format!("unknown ({e})"),
        },
        count_with_unit(total_params),
        types.join(", ")
    )?;
    writeln!(out, "layout: {}", layout_note(&file, &args.model))?;
    writeln!(
        out,
        "kernels on this machine: {}",
        chatglm_kernels::isa::active().name()
    )?;
    writeln!(
        out,
        "GGUF version {}, {} metadata keys, {} tensors",
        file.version(),
        file.metadata().len(),
        file.tensors().len()
    )?;
    writeln!(out, "\nmetadata:")?;
    for (k, v) in file.metadata().iter() {
        writeln!(out, "  {k:<44} {}", show(v))?;
    }
    writeln!(out, "\ntensors:")?;
    writeln!(
        out,
        "  {:<28} {:<6} {:>22} {:>14}",
        "name", "type", "shape (ggml order)", "bytes"
    )?;
    for t in file.tensors() {
        let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
        writeln!(
            out,
            "  {:<28} {:<6} {:>22} {:>14}{}",
            t.name,
            t.ty.name(),
            dims.join(" x "),
            t.size_bytes,
            if can_run(t.ty) {
                ""
            } else {
                "  (cannot run here yet)"
            }
        )?;
    }
    let cannot: Vec<&str> = file
        .tensors()
        .iter()
        .filter(|t| !can_run(t.ty))
        .map(|t| t.name.as_str())
        .collect();
    if !cannot.is_empty() {
        writeln!(
            out,
            "\n{} tensors have types this runtime cannot run yet (it runs {})",
            cannot.len(),
            chatglm_kernels::matmul::MATRIX_TYPES
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    writeln!(
        out,
        "\ntotal: {} tensors, {} parameters ({}), {} bytes ({})",
        file.tensors().len(),
        total_params,
        count_with_unit(total_params),
        total_bytes,
        bytes_with_unit(total_bytes)
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_bytes_take_the_unit_that_fits() {
        assert_eq!(count_with_unit(512), "512");
        assert_eq!(count_with_unit(3_200_000), "3.20M");
        assert_eq!(count_with_unit(607_360), "607K");
        assert_eq!(count_with_unit(6_243_584_000), "6.24B");
        assert_eq!(count_with_unit(999_999), "1.00M");
        assert_eq!(count_with_unit(12_345), "12.3K");
        assert_eq!(bytes_with_unit(999), "999 B");
        assert_eq!(bytes_with_unit(345_600), "346 kB");
        assert_eq!(bytes_with_unit(3_560_000_000), "3.56 GB");
    }
}
