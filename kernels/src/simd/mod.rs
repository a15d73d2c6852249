//! The kernel tables: one [`Kernels`] per instruction set, each function the twin of the
//! scalar reference in [`crate::quant`].
//!
//! A table is a struct of safe function pointers. The scalar table ([`scalar::KERNELS`]) is
//! always there; a SIMD table is handed out only by its module's `kernels()`, which first
//! checks the CPU features at run time (memchr's `new() -> Option<Self>` pattern), so the
//! `unsafe` calls of `#[target_feature]` functions inside a table's wrappers are justified in
//! that one file. `x86_64/avx2.rs`, `x86_64/avxvnni.rs`, `x86_64/avx512.rs`,
//! `aarch64/neon.rs`, `aarch64/neon_k.rs`, `aarch64/dotprod.rs`, `aarch64/dotprod_k.rs` and
//! `aarch64/i8mm.rs` are the kernel files with `unsafe`.
//!
//! Every quantized kernel gives the same bits as the scalar reference (integer block sums are
//! exact, and the float operations are the reference's, in the same order, one row per SIMD
//! lane). The float dot products follow the 16-lane order of [`crate::quant::float::dot_in_lanes`]
//! on every path. So a model gives identical results on every path.
//!
//! The row kernels are infallible: they process `min(rows in w, y.len())` rows of
//! `a.len()` blocks (the callers in [`crate::matmul`] check the shapes and report errors).

use crate::act::Q8Row;
use crate::isa::Isa;
use crate::quant::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_0x8, BlockQ4_1,
    BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_0x8, BlockQ8_1,
};
use crate::KernelError;
use zerocopy::IntoBytes;

pub mod scalar;

/// Row `t` of `len` elements of `elem` bytes each at byte `t * stride` of `x`, if it lies
/// inside `x` (the strided rows of the attention kernels).
pub(crate) fn strided_row(
    x: &[u8],
    t: usize,
    stride: usize,
    len: usize,
    elem: usize,
) -> Option<&[u8]> {
    let start = t.checked_mul(stride)?;
    x.get(start..start.checked_add(len.checked_mul(elem)?)?)
}
#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

/// Quantizes one f32 row to Q8_0 blocks plus each block's f32 scale and sum of values.
pub type QuantizeQ8_0 =
    fn(&[f32], &mut [BlockQ8_0], &mut [f32], &mut [i32]) -> Result<(), KernelError>;

/// A product of row-interleaved weights with several rows of Q8_0 activations:
/// `(w, a, y)`, `y[i]` the outputs of activation row `a[i]`.
pub type GemmQ8<W> = fn(&[W], &[Q8Row<'_>], &mut [&mut [f32]]);

/// A [`GemmQ8`] made of one row kernel call per activation row (the scalar and AVX2 paths,
/// and the bits every other path must give). Rows of another length than `a[0]` are skipped.
pub(crate) fn gemm_by_rows<W>(
    rows: fn(&[W], Q8Row<'_>, &mut [f32]),
    w: &[W],
    a: &[Q8Row<'_>],
    y: &mut [&mut [f32]],
) {
    let nb = a.first().map_or(0, Q8Row::len);
    for (ai, yi) in a.iter().zip(y.iter_mut()) {
        if ai.len() == nb {
            rows(w, *ai, yi);
        }
    }
}

/// The kernels of one instruction set.
#[derive(Debug)]
pub struct Kernels {
    /// The instruction set.
    pub isa: Isa,
    /// Quantizes one f32 row to Q8_0 blocks (ggml's bytes), also writing each block's scale as
    /// f32 and the sum of its values: `(x, blocks, d, sum)`, `x.len() == 32 * blocks.len()`,
    /// `d` and `sum` as long as `blocks`. Errors as
    /// [`crate::quant::RowBlock::quantize_row`] for [`BlockQ8_0`].
    pub quantize_q8_0: QuantizeQ8_0,
    /// Quantizes one f32 row to Q8_1 blocks, as [`crate::quant::RowBlock::quantize_row`].
    pub quantize_q8_1: fn(&[f32], &mut [BlockQ8_1]) -> Result<(), KernelError>,
    /// `y[r] = dot(row r of w, a)` for Q4_0 rows of `a.len()` blocks, stored one after another.
    pub rows_q4_0: fn(&[BlockQ4_0], Q8Row<'_>, &mut [f32]),
    /// `y[r] = dot(row r of w, a)` for Q8_0 rows.
    pub rows_q8_0: fn(&[BlockQ8_0], Q8Row<'_>, &mut [f32]),
    /// `y[r] = dot(row r of w, a)` for Q4_1 rows and Q8_1 activations.
    pub rows_q4_1: fn(&[BlockQ4_1], &[BlockQ8_1], &mut [f32]),
    /// `y[r] = dot(row r of w, a)` for Q5_0 rows and Q8_0 activations.
    pub rows_q5_0: fn(&[BlockQ5_0], Q8Row<'_>, &mut [f32]),
    /// `y[r] = dot(row r of w, a)` for Q5_1 rows and Q8_1 activations.
    pub rows_q5_1: fn(&[BlockQ5_1], &[BlockQ8_1], &mut [f32]),
    /// `y[r] = dot(row r of w, a)` for IQ4_NL rows and Q8_0 activations.
    pub rows_iq4_nl: fn(&[BlockIq4Nl], Q8Row<'_>, &mut [f32]),
    /// `y[r] = dot(row r of w, a)` for Q2_K rows and Q8_K activations.
    pub rows_q2_k: fn(&[BlockQ2K], &[BlockQ8K], &mut [f32]),
    /// `y[r] = dot(row r of w, a)` for Q3_K rows and Q8_K activations.
    pub rows_q3_k: fn(&[BlockQ3K], &[BlockQ8K], &mut [f32]),
    /// `y[r] = dot(row r of w, a)` for Q4_K rows and Q8_K activations.
    pub rows_q4_k: fn(&[BlockQ4K], &[BlockQ8K], &mut [f32]),
    /// `y[r] = dot(row r of w, a)` for Q5_K rows and Q8_K activations.
    pub rows_q5_k: fn(&[BlockQ5K], &[BlockQ8K], &mut [f32]),
    /// `y[r] = dot(row r of w, a)` for Q6_K rows and Q8_K activations.
    pub rows_q6_k: fn(&[BlockQ6K], &[BlockQ8K], &mut [f32]),
    /// `y[r] = dot(row r of w, a)` for IQ4_XS rows and Q8_K activations.
    pub rows_iq4_xs: fn(&[BlockIq4Xs], &[BlockQ8K], &mut [f32]),
    /// `y[8g + r] = dot(row r of group g, a)` for groups of `a.len()` Q4_0x8 blocks.
    pub rows_q4_0x8: fn(&[BlockQ4_0x8], Q8Row<'_>, &mut [f32]),
    /// `y[8g + r] = dot(row r of group g, a)` for groups of `a.len()` Q8_0x8 blocks.
    pub rows_q8_0x8: fn(&[BlockQ8_0x8], Q8Row<'_>, &mut [f32]),
    /// Several activation rows at once (the prompt): `y[i]` gets [`Kernels::rows_q4_0x8`] of
    /// `a[i]`, for `i < min(a.len(), y.len())`, with the same bits. Every row of `a` must have
    /// the same number of blocks (a row that does not is left as it is).
    pub gemm_q4_0x8: GemmQ8<BlockQ4_0x8>,
    /// [`Kernels::gemm_q4_0x8`] for Q8_0x8 weights ([`Kernels::rows_q8_0x8`] per row).
    pub gemm_q8_0x8: GemmQ8<BlockQ8_0x8>,
    /// `dot(x, y)` for a row of little-endian f32 bytes (`min(x.len() / 4, y.len())` elements).
    pub dot_f32: fn(&[u8], &[f32]) -> f32,
    /// `dot(x, y)` for a row of little-endian f16 bytes (`min(x.len() / 2, y.len())` elements).
    pub dot_f16: fn(&[u8], &[f32]) -> f32,
    /// `dot(x, y)` for a row of little-endian bf16 bytes (`min(x.len() / 2, y.len())`
    /// elements).
    pub dot_bf16: fn(&[u8], &[f32]) -> f32,
    /// `y[i] += a * x[i]` for a row of little-endian f32 bytes.
    pub axpy_f32: fn(f32, &[u8], &mut [f32]),
    /// `y[i] += a * x[i]` for a row of little-endian f16 bytes.
    pub axpy_f16: fn(f32, &[u8], &mut [f32]),
    /// Attention scores of one head over f16 key rows: `(x, stride, q, scale, out)` sets
    /// `out[t] = dot_f16(row t, q) * scale`, where row `t` is the `q.len()` f16 values at
    /// byte `t * stride` of `x`, for every `t < out.len()` whose row lies inside `x` (the
    /// rest of `out` is left as it is). Same bits as `dot_f16` row by row.
    pub scores_f16: fn(&[u8], usize, &[f32], f32, &mut [f32]),
    /// Weighted sum of f16 value rows: `(x, stride, w, out)` adds `w[t] * row t[i]` to
    /// `out[i]` in order of `t` (an `axpy_f16` per row), over the `t < w.len()` whose row
    /// (`out.len()` values at byte `t * stride`) lies inside `x`.
    pub mix_f16: fn(&[u8], usize, &[f32], &mut [f32]),
}

impl Kernels {
    /// [`Kernels::dot_f16`] for f16 values in memory (a KV cache).
    pub fn dot_f16_values(&self, x: &[half::f16], y: &[f32]) -> f32 {
        (self.dot_f16)(x.as_bytes(), y)
    }

    /// [`Kernels::dot_f32`] for f32 values in memory.
    pub fn dot_f32_values(&self, x: &[f32], y: &[f32]) -> f32 {
        (self.dot_f32)(x.as_bytes(), y)
    }

    /// [`Kernels::axpy_f16`] for f16 values in memory.
    pub fn axpy_f16_values(&self, a: f32, x: &[half::f16], y: &mut [f32]) {
        (self.axpy_f16)(a, x.as_bytes(), y)
    }

    /// [`Kernels::scores_f16`] over f16 values in memory (`stride` in values).
    pub fn scores_f16_values(
        &self,
        x: &[half::f16],
        stride: usize,
        q: &[f32],
        scale: f32,
        out: &mut [f32],
    ) {
        (self.scores_f16)(x.as_bytes(), stride.saturating_mul(2), q, scale, out)
    }

    /// [`Kernels::mix_f16`] over f16 values in memory (`stride` in values): adds to `out`.
    pub fn mix_f16_values(&self, x: &[half::f16], stride: usize, w: &[f32], out: &mut [f32]) {
        (self.mix_f16)(x.as_bytes(), stride.saturating_mul(2), w, out)
    }

    /// [`Kernels::axpy_f32`] for f32 values in memory.
    pub fn axpy_f32_values(&self, a: f32, x: &[f32], y: &mut [f32]) {
        (self.axpy_f32)(a, x.as_bytes(), y)
    }
}
