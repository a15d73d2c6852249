//! Subcommands of the `chatglm` binary. Each returns a [`CliError`]; only `main` prints it.

pub mod bench;
pub mod chat;
pub mod common;
pub mod demo;
pub mod info;
pub mod perplexity;
pub mod run;
pub mod tokenize;

/// An error a subcommand reports: one line, then a non-zero exit.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Loading or running the model failed.
    #[error("{0}")]
    Lib(#[from] chatglm::Error),
    /// An input (a file or standard input) is unusable.
    #[error("{0}")]
    Input(String),
    /// Reading input or writing output failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<chatglm::model::ModelError> for CliError {
    fn from(e: chatglm::model::ModelError) -> Self {
        CliError::Lib(e.into())
    }
}
