//! Quantization blocks, reference arithmetic and SIMD kernels for chatglm-rs.
//!
//! This crate knows blocks and arithmetic, nothing of models or files (see `DESIGN.md`).
//! The layout follows ggml's split between what a type *is* and how a CPU computes with it:
//!
//! - [`types`]: the tensor element types ([`GgmlType`]) with their ggml ids and block sizes.
//! - [`quant`]: the block layouts (`#[repr(C)]`, sizes pinned at compile time) and the scalar
//!   reference quantizers/dequantizers. These are the specification: their bytes equal ggml's
//!   reference quantizers (`quantize_row_q4_0_ref` and friends), and the scalar block dot
//!   products (the twins of the SIMD kernels).
//! - [`matmul`]: the weight-matrix times activations interface the model calls, dispatching
//!   on the weight type, split over the threads of a [`Pool`].
//! - [`isa`]: the instruction set, detected once at run time or forced with
//!   `CHATGLM_KERNELS`; [`simd`]: the kernel table of each instruction set.
//! - [`interleave()`]: the row-interleaved layout of this project's types
//!   ([`GgmlType::Q4_0x8`], [`GgmlType::Q8_0x8`]).
//! - [`pool`]: the persistent worker threads; [`stream`]: a plain streaming read, the
//!   bandwidth yardstick.
//!
//! `unsafe` lives in `simd/x86_64/{avx2,avxvnni,avx512}.rs` and
//! `simd/aarch64/{neon,neon_k,dotprod,dotprod_k,i8mm}.rs`
//! (intrinsics behind run-time feature checks) and `pool.rs` (handing a borrowed job to the workers); each block says why
//! it holds.
#![deny(unsafe_code)]

pub mod act;
pub mod interleave;
pub mod isa;
pub mod matmul;
pub mod pool;
pub mod quant;
pub mod simd;
pub mod stream;
pub mod types;

pub use interleave::{deinterleave, interleave, interleaved_layout};
pub use isa::Isa;
pub use pool::Pool;
pub use simd::Kernels;
pub use types::GgmlType;

/// Errors from quantization and kernel entry points.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// An input value was NaN or infinite; such a value cannot be quantized.
    #[error("non-finite value {value} at index {index}")]
    NonFinite {
        /// Position of the offending value in the input row.
        index: usize,
        /// The value itself.
        value: f32,
    },
    /// A row length is not a whole number of blocks of the type.
    #[error("length {len} is not a multiple of the {ty} block size {block}")]
    NotBlockMultiple {
        /// The element type.
        ty: GgmlType,
        /// The offending length in elements.
        len: usize,
        /// The block size in elements.
        block: usize,
    },
    /// Source and destination sizes do not agree.
    #[error("size mismatch: {what}: expected {expected}, got {got}")]
    SizeMismatch {
        /// Which buffer.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// The operation does not support this type.
    #[error("type {0} is not supported here")]
    Unsupported(GgmlType),
    /// A finite input needs an f16 field (a block's scale, minimum or sum, or an f16 value)
    /// beyond the f16 range (|x| >= 65520 rounds to infinity). ggml would store an infinite
    /// scale, which decodes to inf/NaN; this crate refuses instead.
    #[error("{ty} at index {index}: {what} {value} overflows f16")]
    F16Overflow {
        /// The element type being written.
        ty: GgmlType,
        /// Index of the first element of the block (of the value, for f16) in the input row.
        index: usize,
        /// Which field: "scale", "minimum", "sum" or "value".
        what: &'static str,
        /// The f32 value that does not fit.
        value: f32,
    },
    /// `CHATGLM_KERNELS` (or a name passed to [`isa::select`]) names no kernel path.
    #[error(
        "unknown kernel path `{0}` (expected auto, scalar, avx2, avxvnni, avxvnni-evex, avx512, \
         neon, dotprod or i8mm)"
    )]
    UnknownIsa(String),
    /// The kernel path asked for needs CPU features this machine lacks.
    #[error("kernel path {isa} is not available on this CPU (available: {available:?})")]
    IsaUnavailable {
        /// The path asked for.
        isa: &'static str,
        /// The paths this CPU can run.
        available: Vec<&'static str>,
    },
    /// A matrix of a row-interleaved type must have a whole number of row groups.
    #[error("a {ty} matrix needs a multiple of {group} rows, got {rows}")]
    RowGroup {
        /// The type.
        ty: GgmlType,
        /// Rows per group.
        group: usize,
        /// Rows of the matrix.
        rows: usize,
    },
}

impl KernelError {
    /// Shifts the index of an error about one activation row to its index in the whole input.
    pub(crate) fn offset_index(self, base: usize) -> Self {
        match self {
            KernelError::NonFinite { index, value } => KernelError::NonFinite {
                index: base + index,
                value,
            },
            KernelError::F16Overflow {
                ty,
                index,
                what,
                value,
            } => KernelError::F16Overflow {
                ty,
                index: base + index,
                what,
                value,
            },
            other => other,
        }
    }
}
