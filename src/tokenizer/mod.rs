//! ChatGLM tokenizers (SentencePiece BPE; GLM-4's byte-level BPE in `bytelevel`) and chat
//! formats.
//!
//! A [`Tokenizer`] is built from plain data ([`TokenizerParts`]) so that both a SentencePiece
//! `tokenizer.model` ([`Tokenizer::from_spm`]) and GGUF metadata ([`Tokenizer::from_parts`]) can
//! feed it. Encoding reproduces SentencePiece's BPE exactly (normalization, score-ordered merges,
//! user-defined pieces, byte fallback); decoding reproduces SentencePiece's and the Hugging Face
//! ChatGLM tokenizers' rules (see [`DecodeMode`]). [`StreamDecoder`] turns ids into text one id at
//! a time without ever splitting a UTF-8 character.
//!
//! The vocabulary layout is the one the Hugging Face ChatGLM tokenizers use and the GGUF file
//! stores: the `n` SentencePiece pieces, then the ChatGLM special tokens (`[MASK] [gMASK]
//! [sMASK] sop eop`, and for ChatGLM3 `<|system|> <|user|> <|assistant|> <|observation|>`) with
//! type [`PieceType::Control`], then optional padding pieces `[PAD{id}]` with type
//! [`PieceType::Unused`] up to the model's padded vocabulary size. SentencePiece encoding never
//! produces an id at or above `n`: those tokens are only inserted by the prompt builders.
//!
//! GLM-4 (`bytelevel`, built from [`ByteLevelParts`] or [`Tokenizer::from_tiktoken_file`]) is
//! tiktoken-style byte-level BPE: the ranks (rank = id), then GLM-4's special tokens, then
//! padding. As in the Hugging Face tokenizer, a special token's text in the input encodes as its
//! id; [`Tokenizer::encode_ordinary`] is plain tiktoken.

mod bpe;
mod bytelevel;
mod charsmap;
mod chat;
mod decode;
mod error;
mod gguf;
mod glm1;
mod matcher;
mod merges;
mod normalizer;
pub mod proto;
mod vocab;

use std::path::Path;

pub use crate::arch::GLM4_SPECIAL_TOKENS;
pub use bytelevel::{gpt2_bytes, gpt2_spelling, ByteLevelParts, GLM4_PRE_PATTERN, MAX_SPECIAL_LEN};
pub use chat::{chat_template, chatglm2_prompt, codegeex2_prompt, glm4_prompt, ChatMessage, Role};
pub use decode::{DecodeMode, StreamDecoder};
pub use error::{TokenizerError, VocabError};
pub use gguf::{family_from_gguf, GgufVocabulary};
pub use glm1::{chatglm1_process_response, chatglm1_prompt};
pub use proto::{ModelType, NormalizerSpec, PieceType, SpmModel, SpmPiece, TrainerSpec};
pub use vocab::{RoleIds, SpecialIds, CHATGLM2_SPECIAL_TOKENS, CHATGLM3_ROLE_TOKENS};

use bytelevel::ByteLevel;
use matcher::PrefixMatcher;
use normalizer::Normalizer;
use vocab::Vocab;

/// Which ChatGLM generation the tokenizer belongs to: it fixes the special tokens and the chat
/// prompt format.
pub use crate::arch::Family;

/// Everything a [`Tokenizer`] is built from, as plain data (what a GGUF file stores).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerParts {
    /// Piece text of every id: the SentencePiece pieces, the ChatGLM specials, then padding.
    pub tokens: Vec<String>,
    /// Score of every id (BPE merges pieces with higher scores first); specials and padding 0.
    pub scores: Vec<f32>,
    /// Type of every id.
    pub types: Vec<PieceType>,
    /// Number of SentencePiece pieces (`n`; the id of `[MASK]`). `None`: found as the position
    /// of the last `[MASK] [gMASK] [sMASK] sop eop` run in `tokens`.
    pub sp_vocab_size: Option<usize>,
    /// Normalization settings, including the precompiled charsmap (empty for `identity`).
    pub normalizer: NormalizerSpec,
    /// SentencePiece's `treat_whitespace_as_suffix` trainer flag (false for ChatGLM).
    pub treat_whitespace_as_suffix: bool,
    /// Id of `<s>`, if the model has one.
    pub bos_id: Option<u32>,
    /// Id of `</s>`, if the model has one.
    pub eos_id: Option<u32>,
    /// Id of the padding piece, if the model has one.
    pub pad_id: Option<u32>,
    /// What plain SentencePiece decoding prints for `<unk>` (`None`: `" \u{2047} "`).
    pub unk_surface: Option<String>,
    /// The ChatGLM generation.
    pub family: Family,
}

impl TokenizerParts {
    /// The full ChatGLM vocabulary of a SentencePiece model: its pieces, then the family's
    /// special tokens (type control, score 0), then, when `padded_vocab_size` is larger,
    /// `[PAD{id}]` pieces (type unused, score 0) up to that size. This is what the GGUF
    /// converter writes.
    pub fn from_spm(
        model: SpmModel,
        family: Family,
        padded_vocab_size: Option<usize>,
    ) -> Result<Self, TokenizerError> {
        if model.pieces.is_empty() {
            // An empty (or zero-byte) proto parses, with the proto default type (unigram).
            return Err(VocabError::EmptyModel.into());
        }
        if model.trainer.model_type != ModelType::Bpe {
            return Err(TokenizerError::UnsupportedModel(model.trainer.model_type));
        }
        if model
            .denormalizer
            .as_ref()
            .is_some_and(|d| !d.precompiled_charsmap.is_empty())
        {
            return Err(VocabError::Denormalizer.into());
        }
        let n = model.pieces.len();
        let (mut tokens, mut scores, mut types) = (
            Vec::with_capacity(n + 9),
            Vec::with_capacity(n + 9),
            Vec::with_capacity(n + 9),
        );
        for p in model.pieces {
            tokens.push(p.piece);
            scores.push(p.score);
            types.push(p.kind);
        }
        for s in vocab::special_tokens(family) {
            tokens.push(s.to_owned());
            scores.push(0.0);
            types.push(PieceType::Control);
        }
        if let Some(padded) = padded_vocab_size {
            if padded < tokens.len() {
                return Err(VocabError::PaddedTooSmall {
                    padded,
                    tokens: tokens.len(),
                }
                .into());
            }
            for id in tokens.len()..padded {
                tokens.push(format!("[PAD{id}]"));
                scores.push(0.0);
                types.push(PieceType::Unused);
            }
        }
        let id = |v: i32| u32::try_from(v).ok().filter(|&v| (v as usize) < n);
        let t = &model.trainer;
        Ok(Self {
            tokens,
            scores,
            types,
            sp_vocab_size: Some(n),
            bos_id: id(t.bos_id),
            eos_id: id(t.eos_id),
            pad_id: id(t.pad_id),
            unk_surface: Some(t.unk_surface.clone()),
            treat_whitespace_as_suffix: t.treat_whitespace_as_suffix,
            normalizer: model.normalizer,
            family,
        })
    }
}

/// A ChatGLM tokenizer: SentencePiece BPE with the ChatGLM special tokens (ChatGLM2/3,
/// CodeGeeX2), or GLM-4's byte-level BPE.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    model: Model,
    family: Family,
}

/// The two kinds of vocabulary.
#[derive(Debug, Clone)]
enum Model {
    Spm(Box<Spm>),
    ByteLevel(Box<ByteLevel>),
}

/// A SentencePiece vocabulary with its normalizer.
#[derive(Debug, Clone)]
pub(crate) struct Spm {
    vocab: Vocab,
    normalizer: Normalizer,
    user_defined: PrefixMatcher,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
    unk_surface: String,
    /// Whether ChatGLM-6B's text rules apply around SentencePiece (see `glm1.rs`).
    glm1: bool,
}

impl Spm {
    /// Appends SentencePiece's ids of `text` (normalization, user-defined pieces, BPE).
    fn encode_sentencepiece_into(&self, text: &str, out: &mut Vec<u32>) {
        let mut normalized = Vec::new();
        self.normalizer
            .normalize_into(text, &self.user_defined, &mut normalized);
        bpe::encode(&self.vocab, &self.user_defined, &normalized, out);
    }
}

impl Tokenizer {
    /// Builds a tokenizer from a parsed SentencePiece model (the ChatGLM specials are appended,
    /// no padding).
    pub fn from_spm(model: SpmModel, family: Family) -> Result<Self, TokenizerError> {
        Self::from_parts(TokenizerParts::from_spm(model, family, None)?)
    }

    /// Reads a `tokenizer.model` file and builds a tokenizer from it.
    pub fn from_spm_file(path: impl AsRef<Path>, family: Family) -> Result<Self, TokenizerError> {
        Self::from_spm(SpmModel::from_file(path)?, family)
    }

    /// Reads GLM-4's tiktoken `tokenizer.model` (`base64 rank` lines) and builds its
    /// tokenizer: the GLM-4 special tokens follow the ranks, no padding.
    pub fn from_tiktoken_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        Ok(Self {
            model: Model::ByteLevel(Box::new(ByteLevel::from_tiktoken_file(path.as_ref())?)),
            family: Family::Glm4,
        })
    }

    /// Builds a byte-level tokenizer from plain data (for example read from GGUF metadata).
    pub fn from_byte_level_parts(parts: ByteLevelParts) -> Result<Self, TokenizerError> {
        let family = parts.family;
        Ok(Self {
            model: Model::ByteLevel(Box::new(ByteLevel::new(parts)?)),
            family,
        })
    }

    /// Builds a tokenizer from plain data (for example read from GGUF metadata).
    pub fn from_parts(parts: TokenizerParts) -> Result<Self, TokenizerError> {
        let TokenizerParts {
            tokens,
            scores,
            types,
            sp_vocab_size,
            normalizer,
            treat_whitespace_as_suffix,
            bos_id,
            eos_id,
            pad_id,
            unk_surface,
            family,
        } = parts;
        if family.is_byte_level() {
            return Err(VocabError::ByteLevel(format!(
                "the {family} family has a byte-level vocabulary, not a SentencePiece one"
            ))
            .into());
        }
        let sp_size = match sp_vocab_size {
            Some(n) => n,
            None => find_specials(&tokens).ok_or(VocabError::SpecialsNotFound)?,
        };
        let vocab = Vocab::new(tokens, scores, types, sp_size, family)?;
        for (name, id) in [("bos", bos_id), ("eos", eos_id), ("pad", pad_id)] {
            if let Some(id) = id.filter(|&id| id as usize >= vocab.pieces.len()) {
                return Err(VocabError::IdOutOfRange {
                    name,
                    id,
                    vocab_size: vocab.pieces.len(),
                }
                .into());
            }
        }
        let user_defined = PrefixMatcher::new(
            vocab
                .pieces
                .iter()
                .zip(&vocab.kinds)
                .take(sp_size)
                .filter(|(_, &k)| k == PieceType::UserDefined)
                .map(|(p, _)| p.as_str()),
        );
        let spm = Spm {
            normalizer: Normalizer::new(&normalizer, treat_whitespace_as_suffix)?,
            vocab,
            user_defined,
            bos_id,
            eos_id,
            pad_id,
            unk_surface: unk_surface.unwrap_or_else(|| " \u{2047} ".to_owned()),
            glm1: family == Family::ChatGlm1,
        };
        Ok(Self {
            model: Model::Spm(Box::new(spm)),
            family,
        })
    }

    /// The ChatGLM generation this tokenizer was built for.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Whether this is a byte-level (GLM-4) tokenizer.
    pub fn is_byte_level(&self) -> bool {
        matches!(self.model, Model::ByteLevel(_))
    }

    /// Number of ids, including the specials and any padding.
    pub fn vocab_size(&self) -> usize {
        match &self.model {
            Model::Spm(s) => s.vocab.pieces.len(),
            Model::ByteLevel(b) => b.pieces.len(),
        }
    }

    /// Number of ordinary tokens, the ones text encodes to: the SentencePiece pieces (the id
    /// of `[MASK]`), or the byte-level ranks.
    pub fn sp_vocab_size(&self) -> usize {
        match &self.model {
            Model::Spm(s) => s.vocab.sp_size,
            Model::ByteLevel(b) => b.num_ranks,
        }
    }

    /// Ids of the ChatGLM special tokens.
    pub fn special_ids(&self) -> SpecialIds {
        match &self.model {
            Model::Spm(s) => s.vocab.specials,
            Model::ByteLevel(b) => b.special_ids,
        }
    }

    /// Id of the unknown piece (SentencePiece; a byte-level vocabulary has none: every byte
    /// is a token).
    pub fn unk_id(&self) -> Option<u32> {
        match &self.model {
            Model::Spm(s) => Some(s.vocab.unk_id),
            Model::ByteLevel(_) => None,
        }
    }

    /// Id of `<s>`, if any.
    pub fn bos_id(&self) -> Option<u32> {
        match &self.model {
            Model::Spm(s) => s.bos_id,
            Model::ByteLevel(_) => None,
        }
    }

    /// Id of `</s>` (GLM-4: `<|endoftext|>`), if any.
    pub fn eos_id(&self) -> Option<u32> {
        match &self.model {
            Model::Spm(s) => s.eos_id,
            Model::ByteLevel(b) => b.eos_id,
        }
    }

    /// Id of the padding piece, if any.
    pub fn pad_id(&self) -> Option<u32> {
        match &self.model {
            Model::Spm(s) => s.pad_id,
            Model::ByteLevel(b) => b.pad_id,
        }
    }

    /// Ids that end a reply: `</s>` (GLM-4: `<|endoftext|>`), and for ChatGLM3 and GLM-4 also
    /// `<|user|>` and `<|observation|>` (as their `chat()` and `eos_token_id` do).
    pub fn stop_ids(&self) -> Vec<u32> {
        if self.family == Family::ChatGlm1 {
            return vec![self.special_ids().eop];
        }
        let mut ids: Vec<u32> = self.eos_id().into_iter().collect();
        if let Some(r) = self.special_ids().roles {
            ids.extend([r.user, r.observation]);
        }
        ids
    }

    /// The piece text of `id` (byte-level ordinary tokens in GPT-2's byte-to-unicode
    /// spelling, as GGUF stores them).
    pub fn id_to_piece(&self, id: u32) -> Result<&str, TokenizerError> {
        let pieces = match &self.model {
            Model::Spm(s) => &s.vocab.pieces,
            Model::ByteLevel(b) => &b.pieces,
        };
        pieces
            .get(id as usize)
            .map(String::as_str)
            .ok_or(TokenizerError::IdOutOfRange {
                id,
                vocab_size: pieces.len(),
            })
    }

    /// The type of `id`.
    pub fn piece_type(&self, id: u32) -> Result<PieceType, TokenizerError> {
        self.id_to_piece(id)?;
        Ok(match &self.model {
            Model::Spm(s) => s.vocab.kind(id),
            Model::ByteLevel(b) => b.kinds[id as usize],
        })
    }

    /// The id of a piece: a SentencePiece piece (as SentencePiece's `PieceToId`), a
    /// byte-level token (GPT-2 spelling), or a ChatGLM special token; `None` for anything
    /// else.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        let s = match &self.model {
            Model::Spm(s) => s,
            Model::ByteLevel(b) => return b.piece_to_id(piece),
        };
        s.vocab.piece_to_id(piece.as_bytes()).or_else(|| {
            let n = s.vocab.sp_size;
            s.vocab.pieces[n..n + s.vocab.appended as usize]
                .iter()
                .position(|p| p == piece)
                .map(|i| (n + i) as u32)
        })
    }

    /// The text after SentencePiece normalization, with spaces shown as U+2581 (for inspection;
    /// lossy only if a hostile charsmap produces bytes that are not UTF-8). A byte-level
    /// tokenizer does not normalize: the text itself.
    pub fn normalize(&self, text: &str) -> String {
        let s = match &self.model {
            Model::Spm(s) => s,
            Model::ByteLevel(_) => return text.to_owned(),
        };
        let mut out = Vec::new();
        s.normalizer.normalize_into(text, &s.user_defined, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Encodes `text`: SentencePiece's `encode(text)` (no special tokens); for GLM-4 the Hugging
    /// Face tokenizer's `encode(text, add_special_tokens=False)`, where a special-token string
    /// in the text becomes its id; for ChatGLM-6B the same with its registered specials and its
    /// newline, tab and blank pieces (see `glm1.rs`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.encode_into(text, &mut out);
        out
    }

    /// Appends the ids of [`Tokenizer::encode`]`(text)` to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        match &self.model {
            Model::Spm(s) if s.glm1 => s.encode_glm1_into(text, out),
            Model::Spm(s) => s.encode_sentencepiece_into(text, out),
            Model::ByteLevel(b) => b.encode_into(text, true, out),
        }
    }

    /// What the family's Hugging Face tokenizer's `encode(text)` returns: `[gMASK] sop` then
    /// [`Tokenizer::encode`]`(text)`, except for ChatGLM-6B: the text first, then
    /// `[gMASK] <sop>` (v1 puts the context before the mask).
    pub fn encode_hf(&self, text: &str) -> Vec<u32> {
        match self.family {
            Family::ChatGlm1 => {
                let mut out = self.encode(text);
                out.extend(self.prompt_prefix());
                out
            }
            _ => self.encode_with_prefix(text),
        }
    }

    /// Encodes `text` with special-token strings as plain text: SentencePiece's `encode`, or
    /// tiktoken's `encode(text, disallowed_special=())` for GLM-4. For ChatGLM-6B the whole
    /// text gets the v1 preprocessing (newlines, tabs, blanks) and SentencePiece's `encode`,
    /// without splitting off the registered specials first.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        match &self.model {
            Model::Spm(s) if s.glm1 => {
                let mut out = Vec::new();
                s.encode_glm1_ordinary_into(text, &mut out);
                out
            }
            Model::Spm(_) => self.encode(text),
            Model::ByteLevel(b) => {
                let mut out = Vec::new();
                b.encode_into(text, false, &mut out);
                out
            }
        }
    }

    /// The pieces of `encode(text)`.
    pub fn encode_pieces(&self, text: &str) -> Vec<&str> {
        self.encode(text)
            .into_iter()
            .filter_map(|id| self.id_to_piece(id).ok())
            .collect()
    }

    /// `[gMASK] sop` followed by `encode(text)`: what the Hugging Face ChatGLM tokenizers'
    /// `encode(text)` returns.
    pub fn encode_with_prefix(&self, text: &str) -> Vec<u32> {
        let mut out = self.prompt_prefix().to_vec();
        self.encode_into(text, &mut out);
        out
    }

    /// `[gMASK] sop` (GLM-4: `[gMASK] <sop>`), the start of every ChatGLM prompt.
    pub fn prompt_prefix(&self) -> [u32; 2] {
        let s = self.special_ids();
        [s.gmask, s.sop]
    }
}

/// The id of `[MASK]` in the last `[MASK] [gMASK] [sMASK] sop eop` run of `tokens`.
fn find_specials(tokens: &[String]) -> Option<usize> {
    tokens
        .windows(CHATGLM2_SPECIAL_TOKENS.len())
        .rposition(|w| w.iter().zip(CHATGLM2_SPECIAL_TOKENS).all(|(a, b)| a == b))
}
