//! chatglm-rs: run ChatGLM2/ChatGLM3 6B models on an ordinary CPU.
//!
//! - [`gguf`]: the GGUF v3 file format (memory-mapped, hostile-input-safe reader; streaming writer).
//! - [`tokenizer`]: a pure-Rust SentencePiece BPE tokenizer and the ChatGLM chat formats.
//! - [`model`]: the ChatGLM2/3 forward pass over weights viewed in place in the mapped file.
//! - [`sampler`]: greedy, temperature, top-k, top-p and repetition penalty, seeded.
//! - [`Engine`] and [`Session`]: a loaded model file and a conversation with it, generating
//!   text streamed through a callback. The CLI and the C ABI are thin layers over these.
//! - [`ffi`]: the C ABI declared in `include/chatglm.h`.
#![deny(unsafe_code)]

pub mod arch;
pub mod build;
mod error;
#[allow(unsafe_code)]
pub mod ffi;
pub mod gguf;
pub mod model;
pub mod perplexity;
pub mod sampler;
mod session;
pub mod tokenizer;

mod mmap;

pub use error::{Error, Result};
pub use mmap::install_bus_error_handler;
pub use session::{
    resolve_threads, Engine, GenerateOptions, Generation, Piece, Session, SessionOptions,
    StopReason, Timings, DEFAULT_CONTEXT,
};
