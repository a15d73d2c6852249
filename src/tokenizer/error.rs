//! The tokenizer's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading a tokenizer or turning ids into text.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The file could not be read.
    #[error("cannot read tokenizer file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The bytes are not a valid serialized SentencePiece `ModelProto`.
    #[error("bad SentencePiece model proto at byte {offset}: {what}")]
    Proto {
        /// Byte offset (within the whole serialized model) where the problem was found.
        offset: usize,
        /// What is wrong.
        what: String,
    },
    /// A line of a tiktoken `tokenizer.model` (GLM-4) is malformed.
    #[error("bad tiktoken tokenizer.model line {line}: {what}")]
    Tiktoken {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// The GGUF metadata that holds the vocabulary is missing a key or has one of the wrong
    /// type.
    #[error("{0}")]
    Gguf(#[from] crate::gguf::GgufError),
    /// The precompiled normalization charsmap is malformed.
    #[error("bad precompiled charsmap: {0}")]
    Charsmap(String),
    /// The vocabulary (pieces, scores, types, special ids) is inconsistent.
    #[error("bad vocabulary: {0}")]
    Vocab(#[from] VocabError),
    /// A tokenizer key of the GGUF metadata has a value of the right type that makes no sense.
    #[error("{key} = {value} is out of range: expected {expected}")]
    KeyOutOfRange {
        /// The metadata key.
        key: &'static str,
        /// The offending value (for an array, with the index).
        value: String,
        /// What a valid value is.
        expected: String,
    },
    /// A per-token array of the GGUF metadata does not have one entry per token.
    #[error("{key} has {len} entries for {tokens} tokens (one per token expected)")]
    KeyLength {
        /// The metadata key.
        key: &'static str,
        /// Number of entries in the array.
        len: usize,
        /// Number of tokens (`tokenizer.ggml.tokens`).
        tokens: usize,
    },
    /// A ChatGLM3 message was given to a ChatGLM2 tokenizer, which has no role tokens.
    #[error("a ChatGLM2 tokenizer has no role tokens")]
    NoRoleTokens,
    /// A prompt format was asked of a tokenizer of another family.
    #[error("{format} needs a GLM-4 tokenizer, this one is {family}")]
    WrongFamily {
        /// The prompt format.
        format: &'static str,
        /// The tokenizer's family.
        family: crate::arch::Family,
    },
    /// A ChatGLM2 or ChatGLM-6B history is not a sequence of (user, assistant) rounds.
    #[error("{} history must alternate user and assistant messages", family.title())]
    HistoryNotAlternating {
        /// The model family.
        family: crate::arch::Family,
    },
    /// A system message for a family whose prompts have no place for one.
    #[error(
        "{} has no system role: its prompts are question/answer rounds only \
         (leave out the system message; ChatGLM3 and GLM-4 take one)",
        family.title()
    )]
    NoSystemRole {
        /// The model family.
        family: crate::arch::Family,
    },
    /// The model is not a SentencePiece BPE model (unigram, word and char models are not supported).
    #[error("unsupported SentencePiece model type {0:?} (only BPE is supported)")]
    UnsupportedModel(crate::tokenizer::proto::ModelType),
    /// A token id given to `decode` is not in the vocabulary.
    #[error("token id {id} is out of range (vocabulary size {vocab_size})")]
    IdOutOfRange {
        /// The offending id.
        id: u32,
        /// Number of tokens in the vocabulary.
        vocab_size: usize,
    },
}

/// What is wrong with a vocabulary.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VocabError {
    /// A byte-level (GLM-4) vocabulary is inconsistent: the message names the token.
    #[error("{0}")]
    ByteLevel(String),
    /// The pieces, scores and types lists differ in length.
    #[error("{tokens} pieces, {scores} scores and {types} types (one of each per token)")]
    LengthMismatch {
        /// Number of pieces.
        tokens: usize,
        /// Number of scores.
        scores: usize,
        /// Number of types.
        types: usize,
    },
    /// More tokens than ids can address.
    #[error("{tokens} tokens is too many (at most {max})")]
    TooManyTokens {
        /// Number of tokens.
        tokens: usize,
        /// The largest number supported.
        max: usize,
    },
    /// The SentencePiece vocabulary size leaves no room for the ChatGLM special tokens.
    #[error(
        "SentencePiece vocabulary size {sp_vocab_size}: the {specials} ChatGLM special tokens \
         after it do not fit in {tokens} tokens"
    )]
    SpVocabSizeOutOfRange {
        /// The SentencePiece vocabulary size given.
        sp_vocab_size: usize,
        /// Number of special tokens of the family (5 or 9).
        specials: usize,
        /// Number of tokens.
        tokens: usize,
    },
    /// No `[MASK] [gMASK] [sMASK] sop eop` run was found to place the SentencePiece pieces.
    #[error("the ChatGLM special tokens [MASK] [gMASK] [sMASK] sop eop are missing")]
    SpecialsNotFound,
    /// A ChatGLM-6B special piece is not a user-defined piece of the SentencePiece model.
    #[error("the ChatGLM-6B special piece {0:?} is not a user-defined piece of the model")]
    SpecialPieceMissing(&'static str),
    /// A ChatGLM special token is not where the layout puts it.
    #[error("expected the special token {expected:?} at id {id}, found {found:?}")]
    SpecialTokenMisplaced {
        /// The special token expected.
        expected: &'static str,
        /// Its id (the SentencePiece vocabulary size plus its position).
        id: usize,
        /// The piece found there.
        found: String,
    },
    /// A SentencePiece piece is the empty string.
    #[error("piece {id} is empty")]
    EmptyPiece {
        /// Its id.
        id: usize,
    },
    /// Two SentencePiece pieces of the same kind have the same text.
    #[error("piece {piece:?} (id {id}) is defined twice")]
    DuplicatePiece {
        /// The piece text.
        piece: String,
        /// The id of the second definition.
        id: usize,
    },
    /// More than one piece has the unknown type.
    #[error("two unknown pieces: ids {first} and {second}")]
    TwoUnknownPieces {
        /// The first.
        first: u32,
        /// The second.
        second: usize,
    },
    /// No piece has the unknown type.
    #[error("no piece has the unknown type")]
    NoUnknownPiece,
    /// A byte piece is not named `<0xNN>`.
    #[error("byte piece {piece:?} (id {id}) is not <0xNN>")]
    BadBytePiece {
        /// The piece text.
        piece: String,
        /// Its id.
        id: usize,
    },
    /// Some byte pieces exist, but not all 256.
    #[error("byte piece <0x{0:02X}> is missing")]
    MissingBytePiece(u8),
    /// A score is NaN or infinite.
    #[error("piece {id} has score {score}, not a finite number")]
    NonFiniteScore {
        /// The piece's id.
        id: usize,
        /// The score.
        score: f32,
    },
    /// A special id (`bos`, `eos`, `pad`, `unk`) is not in the vocabulary.
    #[error("{name} id {id} is out of range ({vocab_size} tokens)")]
    IdOutOfRange {
        /// Which id.
        name: &'static str,
        /// The id.
        id: u32,
        /// Number of tokens.
        vocab_size: usize,
    },
    /// The declared unknown-token id is not the piece with the unknown type.
    #[error("unknown-token id {id} is not the piece of unknown type (id {unk_id})")]
    UnknownIdMismatch {
        /// The declared id.
        id: u32,
        /// The id of the piece with the unknown type.
        unk_id: u32,
    },
    /// A padded vocabulary size below the number of tokens.
    #[error("padded vocabulary size {padded} is smaller than the {tokens} tokens")]
    PaddedTooSmall {
        /// The padded size asked for.
        padded: usize,
        /// Number of tokens (pieces and specials).
        tokens: usize,
    },
    /// The model has a denormalizer, which is not supported.
    #[error("models with a denormalizer are not supported")]
    Denormalizer,
    /// The SentencePiece model has no pieces at all (for example an empty `tokenizer.model`).
    #[error("the tokenizer model is empty: it has no pieces")]
    EmptyModel,
}
