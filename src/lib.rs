//! chatglm-rs: run ChatGLM2/ChatGLM3 6B models on an ordinary CPU.
//!
//! - [`gguf`]: the GGUF v3 file format (memory-mapped, hostile-input-safe reader; streaming writer).
//! - [`tokenizer`]: a pure-Rust SentencePiece BPE tokenizer and the ChatGLM chat formats.
//! - [`model`]: the ChatGLM2/3 forward pass over weights viewed in place in the mapped file.
#![deny(unsafe_code)]

pub mod arch;
pub mod gguf;
pub mod model;
pub mod sampler;
pub mod tokenizer;

mod mmap;
