//! SentencePiece BPE tokenizer and ChatGLM chat formats.

mod error;
pub mod proto;

pub use error::TokenizerError;
pub use proto::{ModelType, NormalizerSpec, PieceType, SpmModel, SpmPiece, TrainerSpec};
