//! The library's top-level error: every failure of loading a model or running a session.

use std::path::PathBuf;

/// An error from [`crate::Engine`] or [`crate::Session`]. Each variant names what went wrong;
/// the CLI prints it as one line, the C ABI returns it as a status code and a message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file could not be opened or is not a valid GGUF file.
    #[error("{}", file_message(path, source))]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: crate::gguf::GgufError,
    },
    /// The file's model is unusable (missing or malformed tensors, bad hyper-parameters), or
    /// running it failed.
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
    /// The file's tokenizer is unusable, or decoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    /// Sampling failed (bad settings, or logits that are NaN or infinite).
    #[error("sampler: {0}")]
    Sampler(#[from] crate::sampler::SamplerError),
    /// The prompt does not leave room for a reply in the context.
    #[error(
        "the prompt is {tokens} tokens, but the context holds {context} (raise -c, or shorten it)"
    )]
    PromptTooLong {
        /// Tokens in the prompt.
        tokens: usize,
        /// Positions in the context.
        context: usize,
    },
    /// The mapped model file was truncated, overwritten or replaced after it was loaded:
    /// its weights can no longer be read safely. Load it again (or load it with
    /// [`crate::Engine::read`], which does not map it).
    #[error("{}: the model file changed while in use (do not modify a mapped model file; load it again, or without mmap)", path.display())]
    FileChanged {
        /// The file.
        path: PathBuf,
    },
    /// The prompt is empty.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The file's tokenizer and embedding disagree on the number of tokens (a bad file).
    #[error("the vocabulary has {tokenizer} tokens but the embedding {embedding} rows")]
    VocabMismatch {
        /// Tokens in the tokenizer.
        tokenizer: usize,
        /// Rows of the token embedding.
        embedding: usize,
    },
    /// A session's context is larger than the model's.
    #[error("context {requested} is larger than the model's {max}")]
    ContextTooLarge {
        /// The context asked for.
        requested: usize,
        /// The model's context length.
        max: usize,
    },
    /// A perplexity window is outside `3..=max`.
    #[error("perplexity context {window} must be in 3..={max}")]
    WindowOutOfRange {
        /// The window asked for.
        window: usize,
        /// The model's context length.
        max: usize,
    },
    /// A generation was asked for no token (`max_new_tokens` / `-n` 0).
    #[error("max_new_tokens (-n) must be at least 1")]
    NoTokensToGenerate,
    /// A conversation to reply to has no message.
    #[error("the conversation has no message")]
    EmptyConversation,
    /// A conversation to reply to does not end with a user message.
    #[error("the conversation must end with a user message")]
    LastMessageNotUser,
    /// A step of a generation was asked of a session that has none begun
    /// ([`crate::Session::begin`]), or a decode step before its prompt was read.
    #[error("no generation is in progress on this session (begin one and read its prompt first)")]
    NotGenerating,
    /// A batched decode step was given sessions of different engines.
    #[error("the sessions of one batched decode step must share one engine")]
    OtherEngine,
}

impl Error {
    /// Whether the model file is at fault (it loaded, or parsed, but is not a usable model),
    /// as opposed to the caller's input, the machine, or reading the file.
    pub fn is_bad_file(&self) -> bool {
        match self {
            Error::File { source, .. } => !matches!(source, crate::gguf::GgufError::Io { .. }),
            Error::VocabMismatch { .. } | Error::Tokenizer(_) => true,
            Error::Model(e) => {
                use crate::model::ModelError as M;
                matches!(
                    e,
                    M::Config(_)
                        | M::Gguf(_)
                        | M::Metadata { .. }
                        | M::MissingTensor(_)
                        | M::TensorShape { .. }
                        | M::TensorType { .. }
                        | M::UnsupportedTypes(_)
                        | M::TensorSize { .. }
                        | M::RowNotBlocks { .. }
                        | M::TensorData { .. }
                )
            }
            _ => false,
        }
    }
}

/// `path: problem`, unless the problem already names the path (an I/O error).
fn file_message(path: &std::path::Path, source: &crate::gguf::GgufError) -> String {
    match source {
        crate::gguf::GgufError::Io { .. } => source.to_string(),
        _ => format!("{}: {source}", path.display()),
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
