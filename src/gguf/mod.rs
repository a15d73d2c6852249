//! The GGUF v3 file format.
