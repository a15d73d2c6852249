//! Read-only memory map of a model file. The only place in the runtime (besides the C ABI)
//! where `unsafe` is allowed.
#![allow(unsafe_code)]
