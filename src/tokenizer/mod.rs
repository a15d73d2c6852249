//! SentencePiece BPE tokenizer and ChatGLM chat formats.
