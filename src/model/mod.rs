//! The ChatGLM2/3 model.
