//! The tokenizer in a GGUF file: [`TokenizerParts`] to and from the `tokenizer.ggml.*` keys
//! (llama.cpp's names; see `crate::arch::keys` and docs/FORMAT.md), so that the converter
//! writes exactly what the runtime reads.

use super::{
    ByteLevelParts, Family, NormalizerSpec, PieceType, Tokenizer, TokenizerError, TokenizerParts,
};
use crate::arch::keys;
use crate::gguf::{GgufError, GgufFile, Metadata};

/// The value of `tokenizer.ggml.model` for SentencePiece vocabularies.
const SPM_MODEL: &str = "llama";

/// The value of `tokenizer.ggml.model` for byte-level BPE vocabularies (GLM-4).
const BYTE_LEVEL_MODEL: &str = "gpt2";

/// llama.cpp's pre-tokenizer name for GLM-4's split pattern.
const GLM4_PRE: &str = "chatglm-bpe";

/// A vocabulary that the converter writes into a GGUF file: SentencePiece
/// ([`TokenizerParts`]) or byte-level ([`ByteLevelParts`]).
pub trait GgufVocabulary {
    /// The model family (the prompt format, written as [`keys::PROMPT_FORMAT`]).
    fn family(&self) -> Family;
    /// Writes the `tokenizer.ggml.*` keys (and ours).
    fn write_gguf(&self, md: &mut Metadata) -> Result<(), GgufError>;
}

impl GgufVocabulary for TokenizerParts {
    fn family(&self) -> Family {
        self.family
    }
    fn write_gguf(&self, md: &mut Metadata) -> Result<(), GgufError> {
        self.to_gguf(md)
    }
}

impl GgufVocabulary for ByteLevelParts {
    fn family(&self) -> Family {
        self.family
    }
    fn write_gguf(&self, md: &mut Metadata) -> Result<(), GgufError> {
        self.to_gguf(md)
    }
}

/// The family (prompt format) of a file: [`keys::PROMPT_FORMAT`], or for files from other
/// converters (llama.cpp's), found from the vocabulary: GLM-4 for a byte-level (`gpt2`) one
/// with `<|user|>`, ChatGLM3 for a SentencePiece one with the role tokens, else ChatGLM2.
pub fn family_from_gguf(md: &Metadata) -> Result<Family, GgufError> {
    if md.get(keys::PROMPT_FORMAT).is_some() {
        let name = md.get_str(keys::PROMPT_FORMAT)?;
        return Family::from_name(name).ok_or_else(|| GgufError::OutOfRange {
            key: keys::PROMPT_FORMAT.to_owned(),
            value: format!("{name:?}"),
            expected: "\"chatglm1\", \"chatglm2\", \"chatglm3\", \"codegeex2\" or \"glm4\"",
        });
    }
    let byte_level = md
        .get(keys::TOKENIZER_MODEL)
        .is_some_and(|_| md.get_str(keys::TOKENIZER_MODEL).ok() == Some(BYTE_LEVEL_MODEL));
    Ok(match md.get_str_array(keys::TOKENIZER_TOKENS) {
        Ok(tokens) if tokens.iter().any(|t| t == "<|user|>") => {
            if byte_level {
                Family::Glm4
            } else {
                Family::ChatGlm3
            }
        }
        _ => Family::ChatGlm2,
    })
}

fn bool_or(md: &Metadata, key: &str, default: bool) -> Result<bool, GgufError> {
    match md.get(key) {
        Some(_) => md.get_bool(key),
        None => Ok(default),
    }
}

fn optional_id(md: &Metadata, key: &str) -> Result<Option<u32>, GgufError> {
    match md.get(key) {
        Some(_) => md.get_u32(key).map(Some),
        None => Ok(None),
    }
}

impl TokenizerParts {
    /// Writes the vocabulary and the SentencePiece settings under `tokenizer.ggml.*` (and our
    /// `chatglm.tokenizer.*` keys for what llama.cpp has no key for). The prompt format is the
    /// model's key ([`keys::PROMPT_FORMAT`]), written with the model's configuration.
    pub fn to_gguf(&self, md: &mut Metadata) -> Result<(), GgufError> {
        let types: Vec<i32> = self.types.iter().map(|&t| t as i32).collect();
        md.push_str(keys::TOKENIZER_MODEL, SPM_MODEL)?;
        md.push_str(keys::TOKENIZER_PRE, "chatglm-spm")?;
        md.push_str_array(keys::TOKENIZER_TOKENS, self.tokens.clone())?;
        md.push_f32_array(keys::TOKENIZER_SCORES, self.scores.clone())?;
        md.push_i32_array(keys::TOKENIZER_TOKEN_TYPE, types)?;
        if let Some(unk) = self.types.iter().position(|&t| t == PieceType::Unknown) {
            md.push_u32(keys::TOKENIZER_UNK_ID, unk as u32)?;
        }
        for (key, id) in [
            (keys::TOKENIZER_BOS_ID, self.bos_id),
            (keys::TOKENIZER_EOS_ID, self.eos_id),
            (keys::TOKENIZER_PAD_ID, self.pad_id),
        ] {
            if let Some(id) = id {
                md.push_u32(key, id)?;
            }
        }
        let n = self.sp_vocab_size.unwrap_or(self.tokens.len());
        if self.family.special_tokens().contains(&"<|user|>") {
            // `<|user|>` ends an assistant turn.
            md.push_u32(keys::TOKENIZER_EOT_ID, (n + 6) as u32)?;
        }
        let norm = &self.normalizer;
        md.push_bool(keys::TOKENIZER_ADD_BOS, false)?;
        md.push_bool(keys::TOKENIZER_ADD_SPACE_PREFIX, norm.add_dummy_prefix)?;
        md.push_bool(
            keys::TOKENIZER_REMOVE_EXTRA_WS,
            norm.remove_extra_whitespaces,
        )?;
        if !norm.precompiled_charsmap.is_empty() {
            md.push_u8_array(
                keys::TOKENIZER_PRECOMPILED_CHARSMAP,
                norm.precompiled_charsmap.clone(),
            )?;
        }
        md.push_bool(keys::TOKENIZER_ESCAPE_WS, norm.escape_whitespaces)?;
        md.push_bool(
            keys::TOKENIZER_WS_AS_SUFFIX,
            self.treat_whitespace_as_suffix,
        )?;
        let byte_fallback = self.types.contains(&PieceType::Byte);
        md.push_bool(keys::TOKENIZER_BYTE_FALLBACK, byte_fallback)?;
        md.push_str(keys::TOKENIZER_NORMALIZER, &norm.name)?;
        if let Some(n) = self.sp_vocab_size {
            md.push_u32(keys::TOKENIZER_SP_VOCAB_SIZE, n as u32)?;
        }
        if let Some(s) = &self.unk_surface {
            md.push_str(keys::TOKENIZER_UNK_SURFACE, s)?;
        }
        Ok(())
    }

    /// Reads the parts back from a file's metadata: ours, or a llama.cpp-written `chatglm`
    /// file (which has no `chatglm.tokenizer.*` keys; their SentencePiece defaults apply).
    pub fn from_gguf(md: &Metadata) -> Result<Self, TokenizerError> {
        let model = md.get_str(keys::TOKENIZER_MODEL)?;
        if model != SPM_MODEL {
            return Err(TokenizerError::KeyOutOfRange {
                key: keys::TOKENIZER_MODEL,
                value: format!("{model:?}"),
                expected: format!(
                    "{SPM_MODEL:?} (a SentencePiece vocabulary; {BYTE_LEVEL_MODEL:?} ones are \
                     read by ByteLevelParts::from_gguf)"
                ),
            });
        }
        let tokens = md.get_str_array(keys::TOKENIZER_TOKENS)?.to_vec();
        let n = tokens.len();
        let scores = md.get_f32_array(keys::TOKENIZER_SCORES)?.to_vec();
        let raw_types = md.get_i32_array(keys::TOKENIZER_TOKEN_TYPE)?;
        for (key, len) in [
            (keys::TOKENIZER_SCORES, scores.len()),
            (keys::TOKENIZER_TOKEN_TYPE, raw_types.len()),
        ] {
            if len != n {
                return Err(TokenizerError::KeyLength {
                    key,
                    len,
                    tokens: n,
                });
            }
        }
        if let Some((id, s)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
            return Err(TokenizerError::KeyOutOfRange {
                key: keys::TOKENIZER_SCORES,
                value: format!("{s} (token {id})"),
                expected: "finite scores".to_owned(),
            });
        }
        let types = raw_types
            .iter()
            .enumerate()
            .map(|(id, &t)| {
                PieceType::from_i32(t).ok_or_else(|| TokenizerError::KeyOutOfRange {
                    key: keys::TOKENIZER_TOKEN_TYPE,
                    value: format!("{t} (token {id})"),
                    expected: "a SentencePiece piece type, 1 to 6".to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let family = family_from_gguf(md)?;
        let sp_vocab_size = optional_id(md, keys::TOKENIZER_SP_VOCAB_SIZE)?.map(|v| v as usize);
        let specials = family.special_tokens().len();
        if let Some(size) = sp_vocab_size.filter(|&v| v > n.saturating_sub(specials)) {
            return Err(TokenizerError::KeyOutOfRange {
                key: keys::TOKENIZER_SP_VOCAB_SIZE,
                value: size.to_string(),
                expected: format!(
                    "at most {} ({n} tokens less the {specials} ChatGLM special tokens)",
                    n.saturating_sub(specials)
                ),
            });
        }
        let in_range = |key: &'static str| -> Result<Option<u32>, TokenizerError> {
            match optional_id(md, key)? {
                Some(id) if id as usize >= n => Err(TokenizerError::KeyOutOfRange {
                    key,
                    value: id.to_string(),
                    expected: format!("a token id below {n}"),
                }),
                id => Ok(id),
            }
        };
        if let Some(unk) = in_range(keys::TOKENIZER_UNK_ID)? {
            if types[unk as usize] != PieceType::Unknown {
                return Err(TokenizerError::KeyOutOfRange {
                    key: keys::TOKENIZER_UNK_ID,
                    value: unk.to_string(),
                    expected: format!(
                        "the id of the piece of unknown type ({:?} has type {:?})",
                        tokens[unk as usize], types[unk as usize]
                    ),
                });
            }
        }
        in_range(keys::TOKENIZER_EOT_ID)?;
        let (bos_id, eos_id, pad_id) = (
            in_range(keys::TOKENIZER_BOS_ID)?,
            in_range(keys::TOKENIZER_EOS_ID)?,
            in_range(keys::TOKENIZER_PAD_ID)?,
        );
        let charsmap = match md.get(keys::TOKENIZER_PRECOMPILED_CHARSMAP) {
            Some(_) => md
                .get_u8_array(keys::TOKENIZER_PRECOMPILED_CHARSMAP)?
                .into_owned(),
            None => Vec::new(),
        };
        let normalizer = NormalizerSpec {
            name: match md.get(keys::TOKENIZER_NORMALIZER) {
                Some(_) => md.get_str(keys::TOKENIZER_NORMALIZER)?.to_owned(),
                None if charsmap.is_empty() => "identity".to_owned(),
                None => "precompiled".to_owned(),
            },
            precompiled_charsmap: charsmap,
            add_dummy_prefix: bool_or(md, keys::TOKENIZER_ADD_SPACE_PREFIX, true)?,
            remove_extra_whitespaces: bool_or(md, keys::TOKENIZER_REMOVE_EXTRA_WS, false)?,
            escape_whitespaces: bool_or(md, keys::TOKENIZER_ESCAPE_WS, true)?,
        };
        let unk_surface = match md.get(keys::TOKENIZER_UNK_SURFACE) {
            Some(_) => Some(md.get_str(keys::TOKENIZER_UNK_SURFACE)?.to_owned()),
            None => None,
        };
        Ok(TokenizerParts {
            tokens,
            scores,
            types,
            sp_vocab_size,
            normalizer,
            treat_whitespace_as_suffix: bool_or(md, keys::TOKENIZER_WS_AS_SUFFIX, false)?,
            bos_id,
            eos_id,
            pad_id,
            unk_surface,
            family,
        })
    }
}

impl ByteLevelParts {
    /// Writes the vocabulary as llama.cpp's converter writes GLM-4 (ggml-org/llama.cpp
    /// `convert_hf_to_gguf.py`, `ChatGLMModel.set_vocab`): model `gpt2`, pre-tokenizer
    /// `chatglm-bpe`, GPT-2-spelled tokens, token types, merges, `<|endoftext|>` as eos (and
    /// unk), `<|user|>` as end of turn, no BOS.
    pub fn to_gguf(&self, md: &mut Metadata) -> Result<(), GgufError> {
        let types: Vec<i32> = self.types.iter().map(|&t| t as i32).collect();
        md.push_str(keys::TOKENIZER_MODEL, BYTE_LEVEL_MODEL)?;
        md.push_str(keys::TOKENIZER_PRE, GLM4_PRE)?;
        md.push_str_array(keys::TOKENIZER_TOKENS, self.tokens.clone())?;
        md.push_i32_array(keys::TOKENIZER_TOKEN_TYPE, types)?;
        md.push_str_array(keys::TOKENIZER_MERGES, self.merges())?;
        if let Some(eos) = self.eos_id {
            md.push_u32(keys::TOKENIZER_EOS_ID, eos)?;
            md.push_u32(keys::TOKENIZER_UNK_ID, eos)?;
        }
        let user = self.tokens.iter().position(|t| t == "<|user|>");
        if let Some(user) = user.filter(|&i| self.types[i] == PieceType::Control) {
            md.push_u32(keys::TOKENIZER_EOT_ID, user as u32)?;
        }
        if let Some(pad) = self.pad_id {
            md.push_u32(keys::TOKENIZER_PAD_ID, pad)?;
        }
        md.push_bool(keys::TOKENIZER_ADD_BOS, false)?;
        Ok(())
    }

    /// Reads the vocabulary of a `gpt2` GGUF file (ours or llama.cpp's). The merges are not
    /// needed: a token's rank is its id.
    pub fn from_gguf(md: &Metadata) -> Result<Self, TokenizerError> {
        let tokens = md.get_str_array(keys::TOKENIZER_TOKENS)?.to_vec();
        let n = tokens.len();
        let raw_types = md.get_i32_array(keys::TOKENIZER_TOKEN_TYPE)?;
        if raw_types.len() != n {
            return Err(TokenizerError::KeyLength {
                key: keys::TOKENIZER_TOKEN_TYPE,
                len: raw_types.len(),
                tokens: n,
            });
        }
        let types = raw_types
            .iter()
            .enumerate()
            .map(|(id, &t)| match PieceType::from_i32(t) {
                Some(
                    t @ (PieceType::Normal
                    | PieceType::Control
                    | PieceType::UserDefined
                    | PieceType::Unused),
                ) => Ok(t),
                _ => Err(TokenizerError::KeyOutOfRange {
                    key: keys::TOKENIZER_TOKEN_TYPE,
                    value: format!("{t} (token {id})"),
                    expected: "1 normal, 3 control, 4 user-defined or 5 unused".to_owned(),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let in_range = |key: &'static str| -> Result<Option<u32>, TokenizerError> {
            match optional_id(md, key)? {
                Some(id) if id as usize >= n => Err(TokenizerError::KeyOutOfRange {
                    key,
                    value: id.to_string(),
                    expected: format!("a token id below {n}"),
                }),
                id => Ok(id),
            }
        };
        Ok(Self {
            tokens,
            types,
            eos_id: in_range(keys::TOKENIZER_EOS_ID)?,
            pad_id: in_range(keys::TOKENIZER_PAD_ID)?,
            family: family_from_gguf(md)?,
        })
    }
}

impl Tokenizer {
    /// The tokenizer of a `chatglm` GGUF file: SentencePiece (`tokenizer.ggml.model` =
    /// `llama`) or byte-level BPE (`gpt2`, GLM-4).
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TokenizerError> {
        let md = file.metadata();
        if md.get_str(keys::TOKENIZER_MODEL)? == BYTE_LEVEL_MODEL {
            let family = family_from_gguf(md)?;
            if !family.is_byte_level() {
                return Err(TokenizerError::KeyOutOfRange {
                    key: keys::TOKENIZER_MODEL,
                    value: format!("{BYTE_LEVEL_MODEL:?}"),
                    expected: format!(
                        "{SPM_MODEL:?} for a {} model (only GLM-4 has a byte-level vocabulary)",
                        family
                    ),
                });
            }
            return Tokenizer::from_byte_level_parts(ByteLevelParts::from_gguf(md)?);
        }
        Tokenizer::from_parts(TokenizerParts::from_gguf(md)?)
    }
}
