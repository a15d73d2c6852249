//! Library half of `chatglm-convert`: reading Hugging Face ChatGLM2/3 checkpoints and writing
//! them as GGUF.
//!
//! - [`config`] and [`checkpoint`] read a Hugging Face directory (config.json, safetensors or
//!   PyTorch `.bin` weights, single or sharded), one tensor at a time.
//! - [`convert`] checks a checkpoint against the model's tensor plan and streams its tensors
//!   through `chatglm::build::write_model` (the root crate writes GGUF files, so that
//!   `chatglm demo` can make a synthetic model without this crate).
#![deny(unsafe_code)]

pub mod checkpoint;
pub mod config;
pub mod config_glm1;
pub mod convert;
pub mod error;
