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
    /// The GGUF metadata that holds the vocabulary is missing a key or has one of the wrong
    /// type.
    #[error("{0}")]
    Gguf(#[from] crate::gguf::GgufError),
    /// The precompiled normalization charsmap is malformed.
    #[error("bad precompiled charsmap: {0}")]
    Charsmap(String),
    /// The vocabulary (pieces, scores, types, special ids) is inconsistent.
    #[error("bad vocabulary: {0}")]
    Vocab(String),
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
