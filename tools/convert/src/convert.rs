//! Converting a Hugging Face checkpoint: check that it holds exactly the model's tensors,
//! then hand them to `chatglm::build::write_model`, one at a time.

use crate::checkpoint::Checkpoint;
use crate::config_glm1::{permute_qkv_rows, TIED_LM_HEAD};
use crate::error::ConvertError;
use chatglm::arch::tensors::{glm1, Table};
use chatglm::build::{
    build_plan, is_ignored_hf_tensor, write_model_mix, BuildError, Mix, Progress, Summary,
    TensorPlan, TensorSource, WriteOptions,
};
use chatglm::model::{Block, Family, ModelConfig};
use chatglm::tokenizer::{ByteLevelParts, SpmModel, Tokenizer, TokenizerParts};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// The tokenizer files of a checkpoint, read for its family.
#[derive(Debug, Clone)]
pub enum TokenizerSource {
    /// A SentencePiece `tokenizer.model` (ChatGLM2, ChatGLM3, CodeGeeX2).
    Spm(Box<SpmModel>),
    /// GLM-4's tiktoken `tokenizer.model` text and its special tokens (text, id) from
    /// `tokenizer_config.json`'s `added_tokens_decoder` (or, without that file, GLM-4's own
    /// specials right after the ranks).
    Tiktoken {
        /// The `base64 rank` lines.
        text: String,
        /// The special tokens.
        specials: Option<Vec<(String, u32)>>,
    },
}

impl TokenizerSource {
    /// Reads `dir/tokenizer.model` (and for GLM-4 `dir/tokenizer_config.json`).
    pub fn read(dir: &Path, family: Family) -> Result<Self, ConvertError> {
        let path = dir.join("tokenizer.model");
        if !family.is_byte_level() {
            return Ok(Self::Spm(Box::new(SpmModel::from_file(path)?)));
        }
        let io = |source| chatglm::tokenizer::TokenizerError::Io {
            path: path.clone(),
            source,
        };
        let text = std::fs::read_to_string(&path).map_err(io)?;
        let config_path = dir.join("tokenizer_config.json");
        let specials = match std::fs::read_to_string(&config_path) {
            Ok(json) => {
                let parse = |source| crate::config::ConfigError::Parse {
                    path: config_path.clone(),
                    source,
                };
                let v: serde_json::Value = serde_json::from_str(&json).map_err(parse)?;
                let added = v.get("added_tokens_decoder").and_then(|a| a.as_object());
                added.map(|added| {
                    added
                        .iter()
                        .filter_map(|(id, t)| {
                            let id: u32 = id.parse().ok()?;
                            Some((t.get("content")?.as_str()?.to_owned(), id))
                        })
                        .collect()
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(crate::config::ConfigError::Io {
                    path: config_path,
                    source,
                }
                .into())
            }
        };
        Ok(Self::Tiktoken { text, specials })
    }
}

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

/// [`convert_mix`] with every matrix of `opts.matrix_type`.
pub fn convert(
    ckpt: &Checkpoint,
    config: &ModelConfig,
    family: Family,
    tokenizer: &TokenizerSource,
    opts: &WriteOptions,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
) -> Result<Summary, ConvertError> {
    let mix = Mix::from(opts.matrix_type);
    convert_mix(ckpt, config, family, tokenizer, opts, mix, progress, cancel)
}

/// Converts the checkpoint `ckpt` of the model `config` with tokenizer `tokenizer` and prompt
/// format `family` into a GGUF file at `opts.output` (nothing appears under that name unless the conversion completes).
/// `mix` chooses each matrix's type (llama-quantize's rules for its named mixes).
#[allow(clippy::too_many_arguments)]
pub fn convert_mix(
    ckpt: &Checkpoint,
    config: &ModelConfig,
    family: Family,
    tokenizer: &TokenizerSource,
    opts: &WriteOptions,
    mix: Mix,
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
    let plan = build_plan(config, mix, opts.portable).map_err(BuildError::from)?;
    check_checkpoint(ckpt, config, &plan)?;
    let padded = Some(config.vocab_size);
    let spm_parts;
    let byte_parts;
    let vocabulary: &dyn chatglm::tokenizer::GgufVocabulary = match tokenizer {
        TokenizerSource::Spm(spm) => {
            spm_parts = TokenizerParts::from_spm((**spm).clone(), family, padded)?;
            &spm_parts
        }
        TokenizerSource::Tiktoken { text, specials } => {
            byte_parts = match specials {
                Some(s) => ByteLevelParts::from_tiktoken(text, s, padded, family)?,
                None => ByteLevelParts::glm4_from_tiktoken(text, padded)?,
            };
            // Every special token the prompts need is there, before anything is written.
            Tokenizer::from_byte_level_parts(byte_parts.clone())?;
            &byte_parts
        }
    };
    Ok(write_model_mix(
        config,
        vocabulary,
        plan,
        &mut CheckpointSource(ckpt, config),
        opts,
        mix,
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
    /// The tokenizer files.
    pub tokenizer: TokenizerSource,
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
                tokenizer: TokenizerSource::read(dir, decision.family)?,
            })
        }
        AnyConfig::ChatGlm1(config) => {
            config.validate()?;
            Ok(Described {
                config: config.to_model_config(),
                family: Family::ChatGlm1,
                evidence: "config.json has the ChatGLM-6B (v1) fields".to_owned(),
                tokenizer: TokenizerSource::Spm(Box::new(SpmModel::from_file(
                    dir.join(V1_TOKENIZER_FILE),
                )?)),
            })
        }
    }
}
