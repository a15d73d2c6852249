//! Hugging Face checkpoint readers: safetensors and PyTorch `.bin`, single or sharded.
