//! The scalar kernel table: the reference functions of [`crate::quant`], wrapped to the
//! table's signatures. Every other table is tested against this one.

use super::Kernels;
use crate::act::Q8Row;
use crate::isa::Isa;
use crate::quant::{
    float, iq4_nl, q2_k, q3_k, q4_0, q4_0x8, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0, q8_0x8,
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_0x8, BlockQ4_1,
    BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_0x8, BlockQ8_1,
    RowBlock,
};
use crate::types::GROUP_ROWS;
use crate::KernelError;

/// The scalar kernels (always available).
pub static KERNELS: Kernels = Kernels {
    isa: Isa::Scalar,
    quantize_q8_0,
    quantize_q8_1: <BlockQ8_1 as RowBlock>::quantize_row,
    rows_q4_0,
    rows_q8_0,
    rows_q4_1,
    rows_q5_0,
    rows_q5_1,
    rows_iq4_nl,
    rows_q2_k,
    rows_q3_k,
    rows_q4_k,
    rows_q5_k,
    rows_q6_k,
    rows_iq4_xs,
    rows_q4_0x8,
    rows_q8_0x8,
    gemm_q4_0x8,
    gemm_q8_0x8,
    dot_f32,
    dot_f16,
    dot_bf16,
    axpy_f32,
    axpy_f16,
    scores_f16,
    mix_f16,
};

/// Attention scores: `dot_f16` per row, times `scale`.
pub(crate) fn scores_f16(x: &[u8], stride: usize, q: &[f32], scale: f32, out: &mut [f32]) {
    for (t, o) in out.iter_mut().enumerate() {
        match super::strided_row(x, t, stride, q.len(), 2) {
            Some(row) => *o = dot_f16(row, q) * scale,
            None => return,
        }
    }
}

/// Weighted sum of rows added to `out`: `axpy_f16` per row in order.
pub(crate) fn mix_f16(x: &[u8], stride: usize, w: &[f32], out: &mut [f32]) {
    for (t, &a) in w.iter().enumerate() {
        match super::strided_row(x, t, stride, out.len(), 2) {
            Some(row) => axpy_f16(a, row, out),
            None => return,
        }
    }
}

/// Q8_0 blocks with their f32 scales and sums.
pub(crate) fn quantize_q8_0(
    x: &[f32],
    blocks: &mut [BlockQ8_0],
    d: &mut [f32],
    sum: &mut [i32],
) -> Result<(), KernelError> {
    crate::quant::check_len("activation scales", blocks.len(), d.len())?;
    crate::quant::check_len("activation sums", blocks.len(), sum.len())?;
    RowBlock::quantize_row(x, blocks)?;
    for ((b, d), s) in blocks.iter().zip(d.iter_mut()).zip(sum.iter_mut()) {
        *d = b.d();
        *s = b.qs.iter().map(|&q| i32::from(q)).sum();
    }
    Ok(())
}

/// Applies `dot` to each row of `nb` blocks of `w` (all zeros when `nb == 0`).
fn each_row<W, A: ?Sized>(w: &[W], nb: usize, a: &A, y: &mut [f32], dot: impl Fn(&[W], &A) -> f32) {
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    for (out, row) in y.iter_mut().zip(w.chunks_exact(nb)) {
        *out = dot(row, a);
    }
}

fn rows_q4_0(w: &[BlockQ4_0], a: Q8Row<'_>, y: &mut [f32]) {
    each_row(w, a.len(), a.blocks(), y, |row, a| {
        q4_0::vec_dot_q4_0_q8_0(row, a).unwrap_or(f32::NAN)
    });
}

fn rows_q8_0(w: &[BlockQ8_0], a: Q8Row<'_>, y: &mut [f32]) {
    each_row(w, a.len(), a.blocks(), y, |row, a| {
        q8_0::vec_dot_q8_0_q8_0(row, a).unwrap_or(f32::NAN)
    });
}

fn rows_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1], y: &mut [f32]) {
    each_row(w, a.len(), a, y, |row, a| {
        q4_1::vec_dot_q4_1_q8_1(row, a).unwrap_or(f32::NAN)
    });
}

pub(crate) fn rows_q5_0(w: &[BlockQ5_0], a: Q8Row<'_>, y: &mut [f32]) {
    each_row(w, a.len(), a.blocks(), y, |row, a| {
        q5_0::vec_dot_q5_0_q8_0(row, a).unwrap_or(f32::NAN)
    });
}

pub(crate) fn rows_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1], y: &mut [f32]) {
    each_row(w, a.len(), a, y, |row, a| {
        q5_1::vec_dot_q5_1_q8_1(row, a).unwrap_or(f32::NAN)
    });
}

pub(crate) fn rows_iq4_nl(w: &[BlockIq4Nl], a: Q8Row<'_>, y: &mut [f32]) {
    each_row(w, a.len(), a.blocks(), y, |row, a| {
        iq4_nl::vec_dot_iq4_nl_q8_0(row, a).unwrap_or(f32::NAN)
    });
}

pub(crate) fn rows_q2_k(w: &[BlockQ2K], a: &[BlockQ8K], y: &mut [f32]) {
    each_row(w, a.len(), a, y, |row, a| {
        q2_k::vec_dot_q2_k_q8_k(row, a).unwrap_or(f32::NAN)
    });
}

pub(crate) fn rows_q3_k(w: &[BlockQ3K], a: &[BlockQ8K], y: &mut [f32]) {
    each_row(w, a.len(), a, y, |row, a| {
        q3_k::vec_dot_q3_k_q8_k(row, a).unwrap_or(f32::NAN)
    });
}

pub(crate) fn rows_q4_k(w: &[BlockQ4K], a: &[BlockQ8K], y: &mut [f32]) {
    each_row(w, a.len(), a, y, |row, a| {
        q4_k::vec_dot_q4_k_q8_k(row, a).unwrap_or(f32::NAN)
    });
}

pub(crate) fn rows_q5_k(w: &[BlockQ5K], a: &[BlockQ8K], y: &mut [f32]) {
    each_row(w, a.len(), a, y, |row, a| {
        q5_k::vec_dot_q5_k_q8_k(row, a).unwrap_or(f32::NAN)
    });
}

pub(crate) fn rows_q6_k(w: &[BlockQ6K], a: &[BlockQ8K], y: &mut [f32]) {
    each_row(w, a.len(), a, y, |row, a| {
        q6_k::vec_dot_q6_k_q8_k(row, a).unwrap_or(f32::NAN)
    });
}

pub(crate) fn rows_iq4_xs(w: &[BlockIq4Xs], a: &[BlockQ8K], y: &mut [f32]) {
    each_row(w, a.len(), a, y, |row, a| {
        iq4_nl::vec_dot_iq4_xs_q8_k(row, a).unwrap_or(f32::NAN)
    });
}

pub(crate) fn dot_bf16(x: &[u8], y: &[f32]) -> f32 {
    let n = (x.len() / 2).min(y.len());
    float::vec_dot_bf16_f32(&x[..2 * n], &y[..n]).unwrap_or(f32::NAN)
}

/// Applies `dot` to each group of `nb` interleaved blocks, writing 8 outputs per group.
fn each_group<W>(
    w: &[W],
    a: Q8Row<'_>,
    y: &mut [f32],
    dot: impl Fn(&[W], &[BlockQ8_0]) -> Result<[f32; GROUP_ROWS], KernelError>,
) {
    let nb = a.len();
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    for (out, group) in y.chunks_exact_mut(GROUP_ROWS).zip(w.chunks_exact(nb)) {
        let r = dot(group, a.blocks()).unwrap_or([f32::NAN; GROUP_ROWS]);
        out.copy_from_slice(&r);
    }
}

fn rows_q4_0x8(w: &[BlockQ4_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    each_group(w, a, y, q4_0x8::vec_dot_q4_0x8_q8_0);
}

fn rows_q8_0x8(w: &[BlockQ8_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    each_group(w, a, y, q8_0x8::vec_dot_q8_0x8_q8_0);
}

fn gemm_q4_0x8(w: &[BlockQ4_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    super::gemm_by_rows(rows_q4_0x8, w, a, y);
}

fn gemm_q8_0x8(w: &[BlockQ8_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    super::gemm_by_rows(rows_q8_0x8, w, a, y);
}

fn dot_f32(x: &[u8], y: &[f32]) -> f32 {
    let n = (x.len() / 4).min(y.len());
    float::vec_dot_f32(&x[..4 * n], &y[..n]).unwrap_or(f32::NAN)
}

fn dot_f16(x: &[u8], y: &[f32]) -> f32 {
    let n = (x.len() / 2).min(y.len());
    float::vec_dot_f16_f32(&x[..2 * n], &y[..n]).unwrap_or(f32::NAN)
}

fn axpy_f32(a: f32, x: &[u8], y: &mut [f32]) {
    let n = (x.len() / 4).min(y.len());
    // Lengths agree by construction: cannot fail.
    let _ = float::axpy_f32(a, &x[..4 * n], &mut y[..n]);
}

fn axpy_f16(a: f32, x: &[u8], y: &mut [f32]) {
    let n = (x.len() / 2).min(y.len());
    let _ = float::axpy_f16(a, &x[..2 * n], &mut y[..n]);
}
