//! Converting a Hugging Face checkpoint: check that it holds exactly the model's tensors,
//! then hand them to `chatglm::build::write_model`, one at a time.

use crate::checkpoint::Checkpoint;
use crate::config_glm1::{permute_qkv_rows, TIED_LM_HEAD};
use crate::error::ConvertError;
use chatglm::arch::tensors::{glm1, Table};
use chatglm::build::{
    build_plan, is_ignored_hf_tensor, write_model, BuildError, Progress, Summary, TensorPlan,
    TensorSource, WriteOptions,
};
use chatglm::model::{Block, Family, ModelConfig};
use chatglm::tokenizer::{SpmModel, TokenizerParts};
use std::sync::atomic::AtomicBool;

/// Reads each planned tensor from the checkpoint: as stored, but for the v1 `query_key_value`
/// rows, which are regrouped into Q | K | V ([`permute_qkv_rows`]).
struct CheckpointSource<'a>(&'a Checkpoint, &'a ModelConfig);

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
        let c = self.1;
        let qkv = [glm1::ATTN_QKV.gguf, glm1::ATTN_QKV_BIAS.gguf];
        if matches!(c.block, Block::Glm1(_)) && qkv.iter().any(|g| t.name.ends_with(g)) {
            // Row length: the columns of the weight, 1 for the bias (its shape was checked).
            let cols = if t.shape.len() == 2 { t.cols() } else { 1 };
            *out = permute_qkv_rows(out, c.num_heads, c.head_dim, cols);
        }
        Ok(())
    }
}

/// Checks that the checkpoint holds exactly the tensors of the plan, with the right shapes (a
/// v1 checkpoint may also hold its tied output layer, the embedding's twin).
fn check_checkpoint(
    ckpt: &Checkpoint,
    config: &ModelConfig,
    plan: &[TensorPlan],
) -> Result<(), ConvertError> {
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
    if matches!(config.block, Block::Glm1(_)) {
        if let Some(meta) = ckpt.get(TIED_LM_HEAD) {
            let expected = vec![config.vocab_size, config.hidden_size];
            if meta.shape != expected {
                return Err(ConvertError::ShapeMismatch {
                    name: TIED_LM_HEAD.to_owned(),
                    expected,
                    found: meta.shape.clone(),
                });
            }
        }
    }
    let tied = |name: &str| matches!(config.block, Block::Glm1(_)) && name == TIED_LM_HEAD;
    for meta in ckpt.tensors() {
        if !is_ignored_hf_tensor(&meta.name)
            && !tied(&meta.name)
            && !plan.iter().any(|t| t.hf_name == meta.name)
        {
            return Err(ConvertError::UnexpectedTensor(meta.name.clone()));
        }
    }
    Ok(())
}

/// Converts the checkpoint `ckpt` of the model `config` with tokenizer `spm` and prompt
/// format `family` into a GGUF file at `opts.output` (nothing appears under that name unless the conversion completes).
pub fn convert(
    ckpt: &Checkpoint,
    config: &ModelConfig,
    family: Family,
    spm: &SpmModel,
    opts: &WriteOptions,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
) -> Result<Summary, ConvertError> {
    // Bound the layer count by what the checkpoint holds before the plan is sized from it.
    let held = ckpt.tensors().count();
    let max_layers = Table::of(config).max_layers(held);
    if config.num_layers > max_layers {
        return Err(ConvertError::Config(
            crate::config::ConfigError::Unsupported {
                field: "num_layers",
                value: config.num_layers.to_string(),
                reason: format!("the checkpoint's {held} tensors hold at most {max_layers} layers"),
            },
        ));
    }
    let plan = build_plan(config, opts.matrix_type, opts.portable).map_err(BuildError::from)?;
    check_checkpoint(ckpt, config, &plan)?;
    let tokenizer = TokenizerParts::from_spm(spm.clone(), family, Some(config.vocab_size))?;
    Ok(write_model(
        config,
        &tokenizer,
        plan,
        &mut CheckpointSource(ckpt, config),
        opts,
        progress,
        cancel,
    )?)
}

/// The tokenizer file of a ChatGLM-6B (v1) checkpoint (ChatGLM2/3 call theirs
/// `tokenizer.model`).
pub const V1_TOKENIZER_FILE: &str = "ice_text.model";

/// What a checkpoint directory says about the model, before any weight is read.
#[derive(Debug, Clone)]
pub struct Described {
    /// The runtime's configuration.
    pub config: ModelConfig,
    /// The prompt format.
    pub family: Family,
    /// What decided the family, for the converter to print.
    pub evidence: String,
    /// The SentencePiece tokenizer.
    pub spm: SpmModel,
}

/// Reads and checks `config.json` of the checkpoint in `dir` (either generation), decides its
/// prompt format (`forced`, when the caller knows, for ChatGLM2/3) and reads its tokenizer.
pub fn describe(dir: &std::path::Path, forced: Option<Family>) -> Result<Described, ConvertError> {
    use crate::config::{family, AnyConfig};
    match AnyConfig::from_file(&dir.join("config.json"))? {
        AnyConfig::ChatGlm(config) => {
            config.validate()?;
            let decision = family(dir, &config, forced)?;
            Ok(Described {
                config: config.to_model_config(decision.family),
                family: decision.family,
                evidence: decision.evidence,
                spm: SpmModel::from_file(dir.join("tokenizer.model"))?,
            })
        }
        AnyConfig::ChatGlm1(config) => {
            config.validate()?;
            Ok(Described {
                config: config.to_model_config(),
                family: Family::ChatGlm1,
                evidence: "config.json has the ChatGLM-6B (v1) fields".to_owned(),
                spm: SpmModel::from_file(dir.join(V1_TOKENIZER_FILE))?,
            })
        }
    }
}
