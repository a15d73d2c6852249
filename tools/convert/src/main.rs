//! `chatglm-convert`: Hugging Face ChatGLM2/3 checkpoint -> GGUF.
fn main() {}
