//! The Hugging Face `config.json` of ChatGLM2/ChatGLM3 checkpoints.
