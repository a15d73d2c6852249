//! Subcommands of the `chatglm` binary. Each returns a [`CliError`]; only `main` prints it.

pub mod info;

/// An error a subcommand reports: one line, then a non-zero exit.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The model file could not be read.
    #[error("{path}: {source}")]
    Gguf {
        /// The file.
        path: String,
        /// The cause.
        source: chatglm::gguf::GgufError,
    },
    /// Writing the output failed.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
}
