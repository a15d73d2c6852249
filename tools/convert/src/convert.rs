//! Converting a Hugging Face checkpoint: check that it holds exactly the model's tensors,
//! then hand them to `chatglm::build::write_model`, one at a time.

use crate::checkpoint::Checkpoint;
use crate::error::ConvertError;
use chatglm::build::{
    build_plan, is_ignored_hf_tensor, write_model_mix, BuildError, Mix, Progress, Summary,
    TensorPlan, TensorSource, WriteOptions,
};
use chatglm::model::{Family, ModelConfig};
use chatglm::tokenizer::{SpmModel, TokenizerParts};
use std::sync::atomic::AtomicBool;

/// Reads each planned tensor from the checkpoint.
struct CheckpointSource<'a>(&'a Checkpoint);

impl TensorSource for CheckpointSource<'_> {
    fn read(
        &mut self,
        t: &TensorPlan,
        _: usize,
        _: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), BuildError> {
        *out = self
            .0
            .read_f32(&t.hf_name)
            .map_err(|e| BuildError::Source(Box::new(e)))?;
        Ok(())
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

/// [`convert_mix`] with every matrix of `opts.matrix_type`.
pub fn convert(
    ckpt: &Checkpoint,
    config: &ModelConfig,
    family: Family,
    spm: &SpmModel,
    opts: &WriteOptions,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
) -> Result<Summary, ConvertError> {
    let mix = Mix::from(opts.matrix_type);
    convert_mix(ckpt, config, family, spm, opts, mix, progress, cancel)
}

/// Converts the checkpoint `ckpt` of the model `config` with tokenizer `spm` and prompt
/// format `family` into a GGUF file at `opts.output` (nothing appears under that name unless the conversion completes).
/// `mix` chooses each matrix's type (llama-quantize's rules for its named mixes).
#[allow(clippy::too_many_arguments)]
pub fn convert_mix(
    ckpt: &Checkpoint,
    config: &ModelConfig,
    family: Family,
    spm: &SpmModel,
    opts: &WriteOptions,
    mix: Mix,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
) -> Result<Summary, ConvertError> {
    // Bound the layer count by what the checkpoint holds before the plan is sized from it.
    let held = ckpt.tensors().count();
    let max_layers = chatglm::arch::tensors::max_layers(held);
    if config.num_layers > max_layers {
        return Err(ConvertError::Config(
            crate::config::ConfigError::Unsupported {
                field: "num_layers",
                value: config.num_layers.to_string(),
                reason: format!("the checkpoint's {held} tensors hold at most {max_layers} layers"),
            },
        ));
    }
    let plan = build_plan(config, mix, opts.portable).map_err(BuildError::from)?;
    check_checkpoint(ckpt, &plan)?;
    let tokenizer = TokenizerParts::from_spm(spm.clone(), family, Some(config.vocab_size))?;
    Ok(write_model_mix(
        config,
        &tokenizer,
        plan,
        &mut CheckpointSource(ckpt),
        opts,
        mix,
        progress,
        cancel,
    )?)
}
