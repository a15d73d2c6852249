//! Library half of `chatglm-convert`: reading Hugging Face ChatGLM2/3 checkpoints and writing
//! them as GGUF.
#![deny(unsafe_code)]

pub mod checkpoint;
pub mod config;
