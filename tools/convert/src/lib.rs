//! Library half of `chatglm-convert`: reading Hugging Face ChatGLM2/3 checkpoints and writing
//! them as GGUF.
//!
//! - [`config`] and [`checkpoint`] read a Hugging Face directory (config.json, safetensors or
//!   PyTorch `.bin` weights, single or sharded), one tensor at a time.
//! - [`plan`] decides the output tensors (names, shapes, types); [`metadata`] the GGUF keys.
//! - [`convert`] streams every tensor through the quantizer into the output file.
//! - [`synthetic`] makes random models of the real shapes, for benchmarks and demos.
#![deny(unsafe_code)]

pub mod checkpoint;
pub mod config;
pub mod convert;
pub mod error;
pub mod metadata;
pub mod plan;
pub mod quantize;
pub mod synthetic;
