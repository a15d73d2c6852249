//! The conversion itself: plan the tensors, write the metadata, then stream every tensor
//! through the quantizer into a temporary file that is renamed into place at the end.

use crate::checkpoint::Checkpoint;
use crate::error::ConvertError;
use crate::metadata::general_metadata;
use crate::plan::{build_plan, is_ignored_hf_tensor, TensorPlan};
use crate::quantize::encode_rows;
use crate::synthetic;
use chatglm::gguf::{GgufWriter, Metadata, TensorDesc};
use chatglm::model::ModelConfig;
use chatglm::tokenizer::{SpmModel, TokenizerParts};
use chatglm_kernels::GgmlType;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the weights come from.
pub enum Source<'a> {
    /// A Hugging Face checkpoint.
    Checkpoint(&'a Checkpoint),
    /// Seeded random values (see [`synthetic::fill_tensor`]).
    Synthetic {
        /// The seed.
        seed: u64,
    },
}

/// How to convert.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// The output file.
    pub output: PathBuf,
    /// The type of 2-D weight matrices.
    pub matrix_type: GgmlType,
    /// Write only ggml's standard types (today every type written is standard).
    pub portable: bool,
    /// Threads for quantization and synthetic weights.
    pub threads: usize,
    /// `general.name`.
    pub name: String,
}

/// Reports progress of a long conversion (a progress bar in the CLI, nothing in tests).
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

/// What a conversion wrote.
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

    fn commit(mut self) -> Result<(), ConvertError> {
        std::fs::rename(&self.tmp, &self.out).map_err(|e| ConvertError::io(&self.out, e))?;
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

/// Checks that the checkpoint holds exactly the tensors of the plan, with the right shapes.
fn check_checkpoint(ckpt: &Checkpoint, plan: &[TensorPlan]) -> Result<(), ConvertError> {
    for t in plan {
        let meta = ckpt
            .get(&t.hf_name)
            .ok_or_else(|| ConvertError::MissingTensor(t.hf_name.clone()))?;
        if meta.shape != t.shape {
            return Err(ConvertError::ShapeMismatch {
                name: t.hf_name.clone(),
                expected: t.shape.clone(),
                found: meta.shape.clone(),
            });
        }
    }
    for meta in ckpt.tensors() {
        if !is_ignored_hf_tensor(&meta.name) && !plan.iter().any(|t| t.hf_name == meta.name) {
            return Err(ConvertError::UnexpectedTensor(meta.name.clone()));
        }
    }
    Ok(())
}

/// Converts `source` (a model of `shape` with tokenizer `spm`) into a GGUF file at
/// `opts.output`. The file appears under its name only when complete: it is written to a
/// temporary sibling that an error, a panic or `cancel` removes.
pub fn convert(
    source: Source<'_>,
    shape: &ModelConfig,
    spm: &SpmModel,
    opts: &ConvertOptions,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
) -> Result<Summary, ConvertError> {
    let plan = build_plan(shape, opts.matrix_type);
    if let Source::Checkpoint(ckpt) = &source {
        check_checkpoint(ckpt, &plan)?;
    }
    let mut metadata = Metadata::new();
    general_metadata(&mut metadata, opts.matrix_type, &opts.name)?;
    shape.to_gguf(&mut metadata)?;
    TokenizerParts::from_spm(spm.clone(), shape.family, Some(shape.vocab_size))?
        .to_gguf(&mut metadata)?;
    let descs: Vec<TensorDesc> = plan
        .iter()
        .map(|t| TensorDesc {
            name: t.name.clone(),
            dims: t.ggml_dims(),
            ty: t.ty,
        })
        .collect();

    let temp = TempOutput::new(&opts.output);
    let file = File::create(&temp.tmp).map_err(|e| ConvertError::io(&temp.tmp, e))?;
    let mut writer = GgufWriter::new(BufWriter::with_capacity(1 << 20, file), &metadata, &descs)?;
    progress.start(&plan);
    let mut values = Vec::new();
    let mut bytes = Vec::new();
    for (index, t) in plan.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(ConvertError::Interrupted);
        }
        match &source {
            Source::Checkpoint(ckpt) => values = ckpt.read_f32(&t.hf_name)?,
            Source::Synthetic { seed } => {
                values.resize(t.numel(), 0.0);
                synthetic::fill_tensor(t, index, *seed, &mut values, opts.threads);
            }
        }
        bytes.resize(t.bytes(), 0);
        encode_rows(t.ty, &values, t.cols(), &mut bytes, opts.threads).map_err(|source| {
            ConvertError::Quantize {
                tensor: t.hf_name.clone(),
                source,
            }
        })?;
        writer.write_tensor(&t.name, &bytes)?;
        progress.tensor_done(t);
    }
    let mut out = writer.finish()?;
    out.flush().map_err(|e| ConvertError::io(&temp.tmp, e))?;
    let file = out
        .into_inner()
        .map_err(|e| ConvertError::io(&temp.tmp, e.into_error()))?;
    file.sync_all()
        .map_err(|e| ConvertError::io(&temp.tmp, e))?;
    let file_bytes = file
        .metadata()
        .map_err(|e| ConvertError::io(&temp.tmp, e))?
        .len();
    drop(file);
    temp.commit()?;
    Ok(Summary { plan, file_bytes })
}
