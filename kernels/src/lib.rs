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
//!   on the weight type.
#![deny(unsafe_code)]

pub mod matmul;
pub mod quant;
pub mod types;

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
}
