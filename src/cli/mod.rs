//! Subcommands of the `chatglm` binary. Each returns a [`CliError`]; only `main` prints it.

pub mod bench;
pub mod chat;
pub mod common;
pub mod demo;
pub mod flags;
pub mod info;
pub mod perplexity;
pub mod run;
pub mod serve;
pub mod tokenize;

use std::path::PathBuf;

/// An error a subcommand reports: one line, then a non-zero exit.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Loading or running the model failed.
    #[error("{0}")]
    Lib(#[from] chatglm::Error),
    /// A text input (`perplexity -f`, `run --messages`) cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A text input is larger than the most a command reads.
    #[error("{}: larger than {} MiB, the most this command reads", path.display(), max >> 20)]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        max: u64,
    },
    /// A text input (a file, or standard input) is not UTF-8.
    #[error("{what}: not valid UTF-8 (at byte {at})")]
    NotUtf8 {
        /// The file's path, or "standard input".
        what: String,
        /// Offset of the first invalid byte.
        at: usize,
    },
    /// `run --messages` is not JSON.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// `run --messages` is JSON but not a conversation.
    #[error("{}: {problem}", path.display())]
    Conversation {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: ConversationProblem,
    },
    /// `tokenize` was given neither a model nor a SentencePiece file.
    #[error("give a model (-m FILE.gguf) or --spm tokenizer.model")]
    NoTokenizer,
    /// Writing the demo's synthetic model failed.
    #[error("writing {}: {source}", path.display())]
    WriteModel {
        /// The model file.
        path: PathBuf,
        /// Why.
        source: chatglm::build::BuildError,
    },
    /// Settings that do not go together (`bench`).
    #[error("{0}")]
    Input(String),
    /// Reading input or writing output failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// What is wrong with the conversation of `run --messages`.
#[derive(Debug, thiserror::Error)]
pub enum ConversationProblem {
    /// The top level is not an array.
    #[error("expected a JSON array of messages")]
    NotAnArray,
    /// A message's role is not one the chat format knows.
    #[error("message {index}: unknown role {role:?}")]
    UnknownRole {
        /// Index of the message.
        index: usize,
        /// The role given.
        role: String,
    },
    /// A message has no `role` string.
    #[error("message {index}: no \"role\" string")]
    NoRole {
        /// Index of the message.
        index: usize,
    },
    /// A message has no `content` string.
    #[error("message {index}: no \"content\" string")]
    NoContent {
        /// Index of the message.
        index: usize,
    },
}

impl From<chatglm::model::ModelError> for CliError {
    fn from(e: chatglm::model::ModelError) -> Self {
        CliError::Lib(e.into())
    }
}
