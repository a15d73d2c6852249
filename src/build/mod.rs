//! Writing model files: the tensor plan of a ChatGLM model, the `general.*` keys, and
//! [`write_model`], which streams every tensor through the quantizer into a GGUF file that
//! appears under its name only when complete. `chatglm-convert` feeds it a Hugging Face
//! checkpoint; [`synthetic`] feeds it seeded random weights (benchmarks, `chatglm demo`).

mod metadata;
pub mod mix;
pub mod plan;
mod quantize;
pub mod repack;
pub mod synthetic;

pub use metadata::{file_type, general_metadata, general_metadata_ftype};
pub use mix::Mix;
pub use plan::{
    build_plan, interleaved_layout, is_ignored_hf_tensor, stored_type, Role, TensorPlan,
};
pub use quantize::encode_rows;

use crate::arch::keys;
use crate::gguf::{GgufError, GgufWriter, Metadata, TensorDesc};
use crate::model::ModelConfig;
use crate::tokenizer::{GgufVocabulary, TokenizerError};
use chatglm_kernels::{GgmlType, KernelError};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Why writing a model file failed. Each variant names the file or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Writing the output failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The model configuration is invalid (see [`ModelConfig::validate`]).
    #[error("invalid model config: {0}")]
    Config(#[from] crate::model::ConfigError),
    /// The metadata or a tensor could not be encoded as GGUF.
    #[error("gguf: {0}")]
    Gguf(#[from] GgufError),
    /// The input file of a repack is not a model this runtime reads.
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
    /// The vocabulary is inconsistent.
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    /// A tensor could not be quantized (for example it holds NaN or infinity).
    #[error("tensor {tensor}: {source}")]
    Quantize {
        /// The source's tensor name.
        tensor: String,
        /// The cause.
        source: KernelError,
    },
    /// The tensor source failed (reading a checkpoint, say).
    #[error("{0}")]
    Source(Box<dyn std::error::Error + Send + Sync>),
    /// The caller cancelled; nothing was written under the output name.
    #[error("interrupted")]
    Interrupted,
}

/// Where the values of each tensor come from.
pub trait TensorSource {
    /// Fills `out` with the f32 values of tensor `index` of the plan (row-major, `t.numel()`
    /// values), using up to `threads` threads.
    fn read(
        &mut self,
        t: &TensorPlan,
        index: usize,
        threads: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), BuildError>;
}

/// How to write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// The output file.
    pub output: PathBuf,
    /// The type of 2-D weight matrices.
    pub matrix_type: GgmlType,
    /// Write only ggml's standard types and layouts (for llama.cpp and other GGUF tools);
    /// otherwise matrices use the row-interleaved layouts where they can (see
    /// [`plan::interleaved_layout`]). Used by the callers that build the plan.
    pub portable: bool,
    /// Threads for quantization (and the source, if it uses them).
    pub threads: usize,
    /// `general.name`.
    pub name: String,
}

/// Reports progress of a long write (a progress bar in the converter, nothing in tests).
pub trait Progress {
    /// Called once with the plan, before any tensor is written.
    fn start(&mut self, plan: &[TensorPlan]);
    /// Called after each tensor is written.
    fn tensor_done(&mut self, tensor: &TensorPlan);
}

/// A [`Progress`] that reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _: &[TensorPlan]) {}
    fn tensor_done(&mut self, _: &TensorPlan) {}
}

/// What [`write_model`] wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The tensors, in file order, with their output types.
    pub plan: Vec<TensorPlan>,
    /// Size of the output file in bytes.
    pub file_bytes: u64,
}

/// The output's temporary sibling: removed on drop unless [`TempOutput::commit`] renamed it.
struct TempOutput {
    tmp: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl TempOutput {
    fn new(out: &Path) -> Self {
        let mut name = out
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(format!(".tmp{}", std::process::id()));
        TempOutput {
            tmp: out.with_file_name(name),
            out: out.to_path_buf(),
            committed: false,
        }
    }

    fn commit(mut self) -> Result<(), BuildError> {
        std::fs::rename(&self.tmp, &self.out).map_err(|source| BuildError::Io {
            path: self.out.clone(),
            source,
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes the model `config` with vocabulary `tokenizer` and the tensors of `plan` (see
/// [`build_plan`]) read from `source`, to `opts.output`. The file is written to a temporary
/// sibling that an error, a panic or `cancel` removes, and renamed into place at the end.
/// Never more than one tensor's values (and its encoding) are in memory.
pub fn write_model(
    config: &ModelConfig,
    tokenizer: &dyn GgufVocabulary,
    plan: Vec<TensorPlan>,
    source: &mut dyn TensorSource,
    opts: &WriteOptions,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
) -> Result<Summary, BuildError> {
    let mix = Mix::from(opts.matrix_type);
    write_model_mix(config, tokenizer, plan, source, opts, mix, progress, cancel)
}

/// [`write_model`] for a plan of the mix `mix` (see [`build_plan`]): its `general.file_type`
/// is the mix's ([`Mix::file_type`]) rather than that of `opts.matrix_type`; a file with
/// interleaved tensors has none, and [`keys::PORTABLE_FILE_TYPE`] instead.
#[allow(clippy::too_many_arguments)]
pub fn write_model_mix(
    config: &ModelConfig,
    tokenizer: &dyn GgufVocabulary,
    plan: Vec<TensorPlan>,
    source: &mut dyn TensorSource,
    opts: &WriteOptions,
    mix: Mix,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
) -> Result<Summary, BuildError> {
    let mut metadata = Metadata::new();
    // An interleaved layout is this project's own: the file claims no standard file type,
    // and keeps the one its portable form has for `repack` to give back.
    let interleaved = plan.iter().any(|t| t.ty.is_interleaved());
    let (ftype, portable_ftype) = match interleaved {
        true => (None, mix.file_type()),
        false => (mix.file_type(), None),
    };
    general_metadata_ftype(&mut metadata, config.architecture(), ftype, &opts.name)?;
    if let Some(ft) = portable_ftype {
        metadata.push_u32(keys::PORTABLE_FILE_TYPE, ft)?;
    }
    config.to_gguf(&mut metadata)?;
    metadata.push_str(keys::PROMPT_FORMAT, tokenizer.family().name())?;
    tokenizer.write_gguf(&mut metadata)?;
    if let Some(template) = crate::tokenizer::chat_template(tokenizer.family()) {
        metadata.push_str(keys::TOKENIZER_CHAT_TEMPLATE, template)?;
    }
    let mut values = Vec::new();
    write_file(
        &opts.output,
        &metadata,
        plan,
        progress,
        cancel,
        |index, t, bytes| {
            source.read(t, index, opts.threads, &mut values)?;
            let quantize = |source| BuildError::Quantize {
                tensor: t.hf_name.clone(),
                source,
            };
            // Quantize in ggml's layout, then move the blocks of an interleaved type into groups.
            bytes.resize(t.bytes(), 0);
            encode_rows(t.ty.portable(), &values, t.cols(), bytes, opts.threads)
                .map_err(quantize)?;
            // The plan's type came from `interleaved_layout`, which `interleave` follows too.
            if t.ty.is_interleaved() {
                *bytes = chatglm_kernels::interleave(t.ty.portable(), t.shape[0], t.cols(), bytes)
                    .map_err(quantize)?
                    .1;
            }
            Ok(())
        },
    )
}

/// Writes a GGUF file of `metadata` and the tensors of `plan` to `output`, each tensor's bytes
/// made by `encode(index, tensor, bytes)` one at a time. The file is written to a temporary
/// sibling that an error, a panic or `cancel` removes, and renamed into place at the end.
fn write_file(
    output: &Path,
    metadata: &Metadata,
    plan: Vec<TensorPlan>,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
    mut encode: impl FnMut(usize, &TensorPlan, &mut Vec<u8>) -> Result<(), BuildError>,
) -> Result<Summary, BuildError> {
    let descs: Vec<TensorDesc> = plan
        .iter()
        .map(|t| TensorDesc::new(t.name.clone(), &t.ggml_dims(), t.ty))
        .collect();
    let temp = TempOutput::new(output);
    // Errors name the output the user asked for, not its temporary sibling.
    let io = |source| BuildError::Io {
        path: output.to_path_buf(),
        source,
    };
    let file = File::create(&temp.tmp).map_err(io)?;
    let mut writer = GgufWriter::new(BufWriter::with_capacity(1 << 20, file), metadata, &descs)?;
    progress.start(&plan);
    let mut bytes = Vec::new();
    for (index, t) in plan.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(BuildError::Interrupted);
        }
        encode(index, t, &mut bytes)?;
        writer.write_tensor(&t.name, &bytes)?;
        progress.tensor_done(t);
    }
    let mut out = writer.finish()?;
    out.flush().map_err(io)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let file_bytes = file.metadata().map_err(io)?.len();
    drop(file);
    temp.commit()?;
    Ok(Summary { plan, file_bytes })
}
