//! Converting a Hugging Face checkpoint: check that it holds exactly the model's tensors,
//! then hand them to `chatglm::build::write_model`, one at a time.

use crate::checkpoint::Checkpoint;
use crate::error::ConvertError;
use chatglm::build::{
    build_plan, is_ignored_hf_tensor, write_model, BuildError, Progress, Summary, TensorPlan,
    TensorSource, WriteOptions,
};
use chatglm::model::{Family, ModelConfig};
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

/// Converts the checkpoint `ckpt` of the model `config` with tokenizer `tokenizer` and prompt
/// format `family` into a GGUF file at `opts.output` (nothing appears under that name unless the conversion completes).
pub fn convert(
    ckpt: &Checkpoint,
    config: &ModelConfig,
    family: Family,
    tokenizer: &TokenizerSource,
    opts: &WriteOptions,
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
    let plan = build_plan(config, opts.matrix_type, opts.portable).map_err(BuildError::from)?;
    check_checkpoint(ckpt, &plan)?;
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
    Ok(write_model(
        config,
        vocabulary,
        plan,
        &mut CheckpointSource(ckpt),
        opts,
        progress,
        cancel,
    )?)
}
