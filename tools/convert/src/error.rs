//! The converter's error type.

/// Everything that can stop a conversion. Each variant names the file, key or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The checkpoint's config.json is unreadable or describes a model the runtime cannot run.
    #[error("config: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The checkpoint's weights are unreadable.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The tokenizer.model is unreadable.
    #[error("tokenizer.model: {0}")]
    Tokenizer(#[from] chatglm::tokenizer::TokenizerError),
    /// Writing the GGUF file failed.
    #[error("{0}")]
    Build(#[from] chatglm::build::BuildError),
    /// A tensor the model needs is not in the checkpoint.
    #[error("tensor {0} is missing from the checkpoint")]
    MissingTensor(String),
    /// A tensor has another shape than config.json implies.
    #[error("tensor {name} has shape {found:?}, config.json implies {expected:?}")]
    ShapeMismatch {
        /// The Hugging Face tensor name.
        name: String,
        /// The shape config.json implies.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        found: Vec<usize>,
    },
    /// The checkpoint holds a tensor this converter does not know (for example a P-Tuning
    /// prefix encoder); converting without it would silently change the model.
    #[error("tensor {0} is not part of a ChatGLM2/3 model this converter knows")]
    UnexpectedTensor(String),
    /// `--synthetic` names no preset (clap checks it first; kept for callers of the library).
    #[error("unknown synthetic preset {0}")]
    UnknownPreset(String),
    /// The model file given to `--repack` is unreadable or not GGUF.
    #[error("{}: {source}", path.display())]
    Input {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        source: chatglm::gguf::GgufError,
    },
    /// `--repack` was asked to write over its own input.
    #[error("{}: the output must be another file than the input", .0.display())]
    OutputIsInput(std::path::PathBuf),
    /// The checkpoint path is not a directory.
    #[error("{}: not a directory (expected a Hugging Face checkpoint directory)", .0.display())]
    NotADirectory(std::path::PathBuf),
}
