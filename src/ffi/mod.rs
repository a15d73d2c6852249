//! The C ABI: what `include/chatglm.h` declares (the header is generated from this module by
//! cbindgen; `tests/c_api_header.rs` fails when it is stale).
//!
//! Every function is a thin layer over [`crate::Engine`] and [`crate::Session`]:
//!
//! - [`status`]: the status codes, the per-thread last error message, and the guard that runs
//!   every entry point (no panic crosses the boundary: it becomes `CHATGLM_ERR_INTERNAL`);
//! - [`strings`]: C strings in (checked for NULL and UTF-8) and out (freed by
//!   `chatglm_string_free`);
//! - [`model`]: `chatglm_model` (an `Arc<Engine>` and the options sessions are created with),
//!   model info, library version;
//! - [`session`]: `chatglm_session` (a `Session` behind a mutex that is only ever `try_lock`ed,
//!   so two threads or a re-entrant callback get `CHATGLM_ERR_BUSY`, not a data race), chat,
//!   completion, reset and statistics;
//! - [`tokens`]: tokenize and detokenize.
//!
//! The names are the C names (`chatglm_model`, `CHATGLM_OK`), hence the lint exceptions.

#![allow(non_camel_case_types)]

// In the order the header declares them (blank lines keep rustfmt from sorting them).
pub mod status;

pub mod strings;

pub mod model;

pub mod session;

pub mod tokens;

/// A token id (an index into the model's vocabulary).
pub type chatglm_token = u32;

/// Which kernels run matrix products (chosen once from the CPU, or by `CHATGLM_KERNELS`), as
/// `chatglm_model_info.kernels` reports it.
pub(crate) fn kernels_name() -> &'static std::ffi::CStr {
    use chatglm_kernels::Isa;
    match chatglm_kernels::isa::active() {
        Isa::Scalar => c"scalar",
        Isa::Avx2 => c"avx2",
        Isa::Avxvnni => c"avxvnni",
        Isa::AvxvnniEvex => c"avxvnni-evex",
        Isa::Avx512 => c"avx512",
        Isa::Neon => c"neon",
        Isa::Dotprod => c"dotprod",
        Isa::I8mm => c"i8mm",
    }
}
