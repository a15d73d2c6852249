//! Matrix products between a weight matrix (any [`GgmlType`], rows stored contiguously in the
//! ggml layout, or in row groups for the interleaved types) and f32 activations. This is the
//! narrow interface the model calls.
//!
//! Quantized weights multiply quantized activations, as in ggml: each activation row is
//! quantized once per product (to Q8_0 for Q4_0 and Q8_0 weights and their interleaved
//! forms, to Q8_1 for Q4_1 weights) and every weight row is then a sum of integer block dot
//! products. The result therefore carries the activation quantization error (about 0.3 % of
//! each block's absmax per element) on top of the weights' own.
//!
//! The kernels come from a [`Kernels`] table ([`crate::isa::kernels`] unless given), and the
//! rows are split over the threads of a [`Pool`] in equal contiguous shares of whole 8-row
//! groups. Every output is computed by one thread with the same operations whatever the
//! table or thread count (see [`crate::arch`]), so results are bit-identical across both.

use crate::act::{ActQ8K, ActQ8_0, ActQ8_1, Q8Row};
use crate::pool::{share, ChunksMut, Pool};
use crate::quant::{
    self, as_blocks, Block, BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0,
    BlockQ4_0x8, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, BlockQ8_0x8, QK,
};
use crate::simd::{GemmQ8, Kernels};
use crate::types::GROUP_ROWS;
use crate::{GgmlType, KernelError};
use std::cell::RefCell;
use std::ops::Range;

/// A borrowed weight matrix of `rows` x `cols` elements of type `ty`, each row a whole number
/// of blocks (and, for the row-interleaved types, `rows` a multiple of 8). `data` is
/// typically a slice of a memory-mapped file (no alignment is assumed).
#[derive(Debug, Clone, Copy)]
pub struct WeightMatrix<'a> {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: &'a [u8],
}

impl<'a> WeightMatrix<'a> {
    /// Wraps `data` as a `rows x cols` matrix of `ty`, checking that the sizes agree.
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, KernelError> {
        let row_bytes = row_bytes(ty, cols)?;
        if !rows.is_multiple_of(ty.row_group()) {
            return Err(KernelError::RowGroup {
                ty,
                group: ty.row_group(),
                rows,
            });
        }
        let expected = row_bytes
            .checked_mul(rows)
            .ok_or(KernelError::SizeMismatch {
                what: "weight matrix bytes",
                expected: usize::MAX,
                got: data.len(),
            })?;
        if data.len() != expected {
            return Err(KernelError::SizeMismatch {
                what: "weight matrix bytes",
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            ty,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// Element type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Number of rows (outputs of a product).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (inputs of a product).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The raw bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Bytes of one row (a row of an interleaved type is spread over its group).
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// The raw bytes of row `r`, or `None` if `r >= self.rows()` or the type is row-interleaved
    /// (whose rows are not contiguous; see [`dequantize_row`]).
    pub fn try_row(&self, r: usize) -> Option<&'a [u8]> {
        if r >= self.rows || self.ty.is_interleaved() {
            return None;
        }
        let start = r.checked_mul(self.row_bytes)?;
        self.data.get(start..start.checked_add(self.row_bytes)?)
    }
}

/// The weight types [`matmul`] multiplies (every other type is
/// [`KernelError::Unsupported`]), in id order. The activations of each: f32 for the float
/// types; Q8_0 for Q4_0, Q5_0, Q8_0, IQ4_NL and the interleaved types; Q8_1 for Q4_1 and
/// Q5_1; Q8_K for the k-quants and IQ4_XS (ggml's pairings, `type_traits_cpu.vec_dot_type`).
pub const MATRIX_TYPES: [GgmlType; 17] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::BF16,
    GgmlType::Q4_0x8,
    GgmlType::Q8_0x8,
];

/// Whether [`matmul`] multiplies weights of type `ty` ([`MATRIX_TYPES`]).
pub fn can_multiply(ty: GgmlType) -> bool {
    MATRIX_TYPES.contains(&ty)
}

/// Bytes of a row of `cols` elements of `ty`: [`GgmlType::row_bytes`].
pub fn row_bytes(ty: GgmlType, cols: usize) -> Result<usize, KernelError> {
    ty.row_bytes(cols)
}

/// `y[r] = sum_c w[r, c] * x[c]` for every row `r`, on the calling thread.
///
/// `x.len() == w.cols()`, `y.len() == w.rows()`.
pub fn matvec(w: &WeightMatrix<'_>, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    matmul(w, x, 1, y)
}

/// `y[i, r] = sum_c w[r, c] * x[i, c]` for `n` activation rows, on the calling thread with
/// the kernels in use ([`crate::isa::kernels`]): `x` is `n x cols`, `y` is `n x rows`, both
/// row-major.
///
/// F32 and F16 weights take the activations as they are. Q4_0 and Q8_0 weights (and their
/// interleaved forms) quantize each activation row to Q8_0 first, Q4_1 weights to Q8_1 (see
/// the module docs); a non-finite activation, or a block of activations too large for an f16
/// scale, is an error that names its index in `x`. Q8_1 is an activation format only:
/// [`KernelError::Unsupported`].
pub fn matmul(w: &WeightMatrix<'_>, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), KernelError> {
    matmul_with(crate::isa::kernels(), None, w, x, n, y)
}

/// [`matmul`] with the rows split over the threads of `pool`.
pub fn matmul_par(
    pool: &Pool,
    w: &WeightMatrix<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    matmul_with(crate::isa::kernels(), Some(pool), w, x, n, y)
}

/// [`matmul`] with the kernel table `k` and, if given, the threads of `pool`.
pub fn matmul_with(
    k: &Kernels,
    pool: Option<&Pool>,
    w: &WeightMatrix<'_>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    if !can_multiply(w.ty) {
        return Err(KernelError::Unsupported(w.ty));
    }
    check_len("activations", n.checked_mul(w.cols), x.len())?;
    check_len("outputs", n.checked_mul(w.rows), y.len())?;
    if y.is_empty() {
        return Ok(());
    }
    if w.cols == 0 {
        // Empty sums.
        y.fill(0.0);
        return Ok(());
    }
    let threads = pool.map_or(1, Pool::threads);
    let mut plan = Plan::new(w, n, threads, y);
    let nb = w.cols / w.ty.block_size();
    match w.ty {
        GgmlType::F32 => plan.run_float(pool, w, x, k.dot_f32),
        GgmlType::F16 => plan.run_float(pool, w, x, k.dot_f16),
        GgmlType::BF16 => plan.run_float(pool, w, x, k.dot_bf16),
        GgmlType::Q5_0 => with_q8_0(k, x, w.cols, |act| {
            plan.run_blocks::<BlockQ5_0, _>(pool, w, nb, |i| act.row(i), k.rows_q5_0)
        }),
        GgmlType::IQ4_NL => with_q8_0(k, x, w.cols, |act| {
            plan.run_blocks::<BlockIq4Nl, _>(pool, w, nb, |i| act.row(i), k.rows_iq4_nl)
        }),
        GgmlType::Q5_1 => {
            let mut act = ActQ8_1::new();
            act.quantize(k, x, w.cols)?;
            plan.run_blocks::<BlockQ5_1, _>(pool, w, nb, |i| act.row(i), k.rows_q5_1)
        }
        GgmlType::Q2_K => with_q8_k(x, w.cols, |act| {
            plan.run_blocks::<BlockQ2K, _>(pool, w, nb, |i| act.row(i), k.rows_q2_k)
        }),
        GgmlType::Q3_K => with_q8_k(x, w.cols, |act| {
            plan.run_blocks::<BlockQ3K, _>(pool, w, nb, |i| act.row(i), k.rows_q3_k)
        }),
        GgmlType::Q4_K => with_q8_k(x, w.cols, |act| {
            plan.run_blocks::<BlockQ4K, _>(pool, w, nb, |i| act.row(i), k.rows_q4_k)
        }),
        GgmlType::Q5_K => with_q8_k(x, w.cols, |act| {
            plan.run_blocks::<BlockQ5K, _>(pool, w, nb, |i| act.row(i), k.rows_q5_k)
        }),
        GgmlType::Q6_K => with_q8_k(x, w.cols, |act| {
            plan.run_blocks::<BlockQ6K, _>(pool, w, nb, |i| act.row(i), k.rows_q6_k)
        }),
        GgmlType::IQ4_XS => with_q8_k(x, w.cols, |act| {
            plan.run_blocks::<BlockIq4Xs, _>(pool, w, nb, |i| act.row(i), k.rows_iq4_xs)
        }),
        GgmlType::Q4_0 => with_q8_0(k, x, w.cols, |act| {
            plan.run_blocks::<BlockQ4_0, _>(pool, w, nb, |i| act.row(i), k.rows_q4_0)
        }),
        GgmlType::Q8_0 => with_q8_0(k, x, w.cols, |act| {
            plan.run_blocks::<BlockQ8_0, _>(pool, w, nb, |i| act.row(i), k.rows_q8_0)
        }),
        GgmlType::Q4_0x8 if n > 1 => with_q8_0(k, x, w.cols, |act| {
            plan.run_gemm::<BlockQ4_0x8>(pool, w, nb, act, k.gemm_q4_0x8)
        }),
        GgmlType::Q8_0x8 if n > 1 => with_q8_0(k, x, w.cols, |act| {
            plan.run_gemm::<BlockQ8_0x8>(pool, w, nb, act, k.gemm_q8_0x8)
        }),
        GgmlType::Q4_0x8 => with_q8_0(k, x, w.cols, |act| {
            plan.run_blocks::<BlockQ4_0x8, _>(pool, w, nb, |i| act.row(i), k.rows_q4_0x8)
        }),
        GgmlType::Q8_0x8 => with_q8_0(k, x, w.cols, |act| {
            plan.run_blocks::<BlockQ8_0x8, _>(pool, w, nb, |i| act.row(i), k.rows_q8_0x8)
        }),
        GgmlType::Q4_1 => {
            let mut act = ActQ8_1::new();
            act.quantize(k, x, w.cols)?;
            plan.run_blocks::<BlockQ4_1, _>(pool, w, nb, |i| act.row(i), k.rows_q4_1)
        }
        other => Err(KernelError::Unsupported(other)), // refused above
    }
}

/// Weight rows per call of a [`GemmQ8`] kernel (which keeps each slice of its own tile width
/// in cache while every activation row passes, and prepares the activations once per call).
const GEMM_ROWS: usize = 64 * GROUP_ROWS;

thread_local! {
    /// The calling thread's activation buffer, reused across products.
    static ACT_Q8_0: RefCell<ActQ8_0> = RefCell::new(ActQ8_0::new());
}

thread_local! {
    /// The calling thread's Q8_K activation buffer, reused across products.
    static ACT_Q8_K: RefCell<ActQ8K> = RefCell::new(ActQ8K::new());
}

/// Quantizes `x` to Q8_K in this thread's buffer and runs `f` on it.
fn with_q8_k(
    x: &[f32],
    cols: usize,
    f: impl FnOnce(&ActQ8K) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    ACT_Q8_K.with(|cell| match cell.try_borrow_mut() {
        Ok(mut act) => {
            act.quantize(x, cols)?;
            f(&act)
        }
        Err(_) => {
            let mut act = ActQ8K::new();
            act.quantize(x, cols)?;
            f(&act)
        }
    })
}

/// Quantizes `x` to Q8_0 in this thread's buffer and runs `f` on it.
fn with_q8_0(
    k: &Kernels,
    x: &[f32],
    cols: usize,
    f: impl FnOnce(&ActQ8_0) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    ACT_Q8_0.with(|cell| match cell.try_borrow_mut() {
        Ok(mut act) => {
            act.quantize(k, x, cols)?;
            f(&act)
        }
        // Only if a product runs inside another on the same thread: use a fresh buffer.
        Err(_) => {
            let mut act = ActQ8_0::new();
            act.quantize(k, x, cols)?;
            f(&act)
        }
    })
}

/// How the rows of one product are shared: thread `t` computes rows `ranges[t]` (whole
/// 8-row groups, except at the end of the matrix) for every activation row, into `outs[t]`
/// (one slice per activation row).
struct Plan<'y> {
    ranges: Vec<Range<usize>>,
    outs: Vec<Vec<&'y mut [f32]>>,
}

impl<'y> Plan<'y> {
    fn new(w: &WeightMatrix<'_>, n: usize, threads: usize, y: &'y mut [f32]) -> Self {
        let groups = w.rows.div_ceil(GROUP_ROWS);
        let ranges: Vec<Range<usize>> = (0..threads)
            .map(|t| {
                let g = share(groups, threads, t);
                (g.start * GROUP_ROWS).min(w.rows)..(g.end * GROUP_ROWS).min(w.rows)
            })
            .collect();
        let mut outs: Vec<Vec<&'y mut [f32]>> =
            (0..threads).map(|_| Vec::with_capacity(n)).collect();
        for mut yi in y.chunks_exact_mut(w.rows).take(n) {
            for (out, r) in outs.iter_mut().zip(&ranges) {
                let (mine, rest) = std::mem::take(&mut yi).split_at_mut(r.len());
                out.push(mine);
                yi = rest;
            }
        }
        Self { ranges, outs }
    }

    /// Runs `part(rows, outputs)` on every thread, each with its own share.
    fn run(&mut self, pool: Option<&Pool>, part: impl Fn(Range<usize>, &mut [&mut [f32]]) + Sync) {
        let ranges = &self.ranges;
        let job = |t: usize, out: &mut Vec<&mut [f32]>| {
            if let Some(range) = ranges.get(t) {
                part(range.clone(), out);
            }
        };
        match pool {
            // One unit (the thread's list of outputs) per thread.
            Some(pool) => pool.run_split(ChunksMut::new(&mut self.outs, 1), |t, _, outs| {
                if let [out] = outs {
                    job(t, out);
                }
            }),
            None => {
                if let Some(out) = self.outs.first_mut() {
                    job(0, out);
                }
            }
        }
    }

    /// Float weights: one dot product per (weight row, activation row).
    fn run_float(
        &mut self,
        pool: Option<&Pool>,
        w: &WeightMatrix<'_>,
        x: &[f32],
        dot: fn(&[u8], &[f32]) -> f32,
    ) -> Result<(), KernelError> {
        let rb = w.row_bytes;
        self.run(pool, |range, outs| {
            for (j, r) in range.enumerate() {
                let row = &w.data[r * rb..(r + 1) * rb];
                for (xi, out) in x.chunks_exact(w.cols).zip(outs.iter_mut()) {
                    out[j] = dot(row, xi);
                }
            }
        });
        Ok(())
    }

    /// Row-interleaved weights against several activation rows: the threads' shares in
    /// slices of [`GEMM_ROWS`] weight rows (kept in cache while every activation row passes),
    /// each through `kern`.
    fn run_gemm<W: Block + Sync>(
        &mut self,
        pool: Option<&Pool>,
        w: &WeightMatrix<'_>,
        nb: usize,
        act: &ActQ8_0,
        kern: GemmQ8<W>,
    ) -> Result<(), KernelError> {
        let blocks: &[W] = as_blocks(w.data)?;
        let rows: Vec<Q8Row<'_>> = (0..act.rows()).filter_map(|i| act.row(i)).collect();
        self.run(pool, |range, outs| {
            let base = range.start;
            for start in range.clone().step_by(GEMM_ROWS) {
                let end = (start + GEMM_ROWS).min(range.end);
                // Shares are whole groups, and interleaved matrices have whole groups.
                let wg = &blocks[start / GROUP_ROWS * nb..end.div_ceil(GROUP_ROWS) * nb];
                let mut ys: Vec<&mut [f32]> = outs
                    .iter_mut()
                    .map(|o| &mut o[start - base..end - base])
                    .collect();
                kern(wg, &rows, &mut ys);
            }
        });
        Ok(())
    }

    /// Quantized weights of blocks `W` (`nb` per row, or per 8-row group for the interleaved
    /// types) against the activation rows `act(i)`, through the kernel `kern`.
    fn run_blocks<W: Block + Sync, A: Copy>(
        &mut self,
        pool: Option<&Pool>,
        w: &WeightMatrix<'_>,
        nb: usize,
        act: impl Fn(usize) -> Option<A> + Sync,
        kern: fn(&[W], A, &mut [f32]),
    ) -> Result<(), KernelError> {
        let blocks: &[W] = as_blocks(w.data)?;
        let interleaved = w.ty.is_interleaved();
        // Index of the first block of row `r` (a group boundary for interleaved types).
        let at = |r: usize| {
            if interleaved {
                r / GROUP_ROWS * nb
            } else {
                r * nb
            }
        };
        self.run(pool, |range, outs| {
            if let [out] = outs {
                // One activation row: the whole share in one call.
                if let Some(a) = act(0) {
                    kern(&blocks[at(range.start)..at(range.end)], a, out);
                }
                return;
            }
            // Several: each 8-row group once for all of them, while it is in cache.
            let base = range.start;
            for start in range.clone().step_by(GROUP_ROWS) {
                let end = (start + GROUP_ROWS).min(range.end);
                let wg = &blocks[at(start)..at(end)];
                for (i, out) in outs.iter_mut().enumerate() {
                    if let Some(a) = act(i) {
                        kern(wg, a, &mut out[start - base..end - base]);
                    }
                }
            }
        });
        Ok(())
    }
}

/// Dequantizes row `r` of `w` into `out` (`out.len() == w.cols()`); used for embedding lookups.
/// Every type is supported (a row of an interleaved type is gathered from its group).
pub fn dequantize_row(w: &WeightMatrix<'_>, r: usize, out: &mut [f32]) -> Result<(), KernelError> {
    check_len("row output", Some(w.cols), out.len())?;
    let bad_row = KernelError::SizeMismatch {
        what: "row index",
        expected: w.rows,
        got: r,
    };
    if r >= w.rows {
        return Err(bad_row);
    }
    let nb = w.cols / QK;
    match w.ty {
        GgmlType::Q4_0x8 => {
            let groups: &[BlockQ4_0x8] = as_blocks(w.data)?;
            let group = groups.get(r / GROUP_ROWS * nb..(r / GROUP_ROWS + 1) * nb);
            let rows: Vec<BlockQ4_0> = group
                .ok_or(bad_row)?
                .iter()
                .map(|g| g.row(r % GROUP_ROWS))
                .collect();
            quant::RowBlock::dequantize_row(&rows, out)
        }
        GgmlType::Q8_0x8 => {
            let groups: &[BlockQ8_0x8] = as_blocks(w.data)?;
            let group = groups.get(r / GROUP_ROWS * nb..(r / GROUP_ROWS + 1) * nb);
            let rows: Vec<BlockQ8_0> = group
                .ok_or(bad_row)?
                .iter()
                .map(|g| g.row(r % GROUP_ROWS))
                .collect();
            quant::RowBlock::dequantize_row(&rows, out)
        }
        ty => quant::dequantize_row(ty, w.try_row(r).ok_or(bad_row)?, out),
    }
}

/// `expected` is `None` when the expected size overflows `usize`.
fn check_len(what: &'static str, expected: Option<usize>, got: usize) -> Result<(), KernelError> {
    match expected {
        Some(expected) if expected == got => Ok(()),
        expected => Err(KernelError::SizeMismatch {
            what,
            expected: expected.unwrap_or(usize::MAX),
            got,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests_common::Lcg;
    use crate::quant::{quantize_row, BlockQ8_1};

    /// Weights of `ty` from uniform data, and their dequantized f32 values (row-major).
    fn weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut Lcg) -> (Vec<u8>, Vec<f32>) {
        // Offset so that Q4_1 blocks have a nonzero minimum to carry.
        let src: Vec<f32> = rng
            .uniform_vec(rows * cols, 0.05)
            .iter()
            .map(|v| v + 0.01)
            .collect();
        let mut bytes = vec![0u8; row_bytes(ty, cols).unwrap() * rows];
        for (s, b) in src
            .chunks_exact(cols.max(1))
            .zip(bytes.chunks_exact_mut(row_bytes(ty, cols).unwrap().max(1)))
        {
            quantize_row(ty, s, b).unwrap();
        }
        let mut deq = vec![0.0f32; rows * cols];
        let w = WeightMatrix::new(ty, rows, cols, &bytes).unwrap();
        for r in 0..rows {
            dequantize_row(&w, r, &mut deq[r * cols..(r + 1) * cols]).unwrap();
        }
        (bytes, deq)
    }

    /// Activations: uniform in [-3, 3) with one outlier of 40 per 97 values, so blocks have
    /// very different scales.
    fn activations(n: usize, cols: usize, rng: &mut Lcg) -> Vec<f32> {
        let mut x = rng.uniform_vec(n * cols, 3.0);
        for v in x.iter_mut().step_by(97) {
            *v = 40.0;
        }
        x
    }

    /// Largest possible |output error| of a quantized product, from the activation
    /// quantization alone, for one weight row `wr` (dequantized) and one activation row `x`.
    ///
    /// The kernel computes exactly (up to f32 rounding) `sum_c wr[c] * xq[c]` where
    /// `xq = q * f16(d)` is the dequantized activation, and per element (see the q8_0
    /// round-trip property) `|xq - x| <= e = d (1/2 + 2^-20) + 127 |f16(d) - d|` with
    /// `d = absmax(block) / 127`. So `|K - sum wr x| <= sum_c |wr[c]| e(block of c)`.
    /// Q4_1 adds `m * s` per block, where `s = f16(d * sum q)` (f32 d) instead of
    /// `f16(d) * sum q`: plus `|m| |s - f16(d) sum q|` per block. f32 rounding: the kernel
    /// rounds about `nb + 4` times in a chain over terms bounded by `sum |wr| (|x| + e)`.
    fn error_bound(ty: GgmlType, w_bytes_row: &[u8], wr: &[f32], x: &[f32]) -> f64 {
        let nb = x.len() / QK;
        let mut bound = 0.0f64;
        let mut magnitude = 0.0f64;
        for (b, (wb, xb)) in wr.chunks_exact(QK).zip(x.chunks_exact(QK)).enumerate() {
            let d = xb.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
            let d16 = half::f16::from_f32(d).to_f32();
            let e = d as f64 * (0.5 + 2f64.powi(-20)) + 127.0 * (d16 as f64 - d as f64).abs();
            for (&wv, &xv) in wb.iter().zip(xb) {
                bound += (wv as f64).abs() * e;
                magnitude += (wv as f64).abs() * ((xv as f64).abs() + e);
            }
            if ty == GgmlType::Q4_1 {
                let wblocks = as_blocks::<BlockQ4_1>(w_bytes_row).unwrap();
                let a = BlockQ8_1::quantize(xb.try_into().unwrap());
                let sum: i32 = a.qs.iter().map(|&q| i32::from(q)).sum();
                let s_err = (a.s() as f64 - a.d() as f64 * sum as f64).abs();
                let m = wblocks[b].m().abs() as f64;
                bound += m * s_err;
                magnitude += m * s_err;
            }
        }
        bound + magnitude * (nb as f64 + 4.0) * f32::EPSILON as f64
    }

    #[test]
    fn quantized_products_match_dequantized_weights_within_the_activation_error() {
        let mut rng = Lcg(2024);
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_1] {
            for (rows, cols) in [(1, 32), (5, 96), (8, 224), (3, 32 * 33)] {
                let (bytes, deq) = weights(ty, rows, cols, &mut rng);
                let w = WeightMatrix::new(ty, rows, cols, &bytes).unwrap();
                for n in [0usize, 1, 3] {
                    let x = activations(n, cols, &mut rng);
                    let mut y = vec![f32::NAN; n * rows];
                    matmul(&w, &x, n, &mut y).unwrap();
                    let mut worst = 0.0f64;
                    for i in 0..n {
                        let xi = &x[i * cols..(i + 1) * cols];
                        for r in 0..rows {
                            let wr = &deq[r * cols..(r + 1) * cols];
                            let reference: f64 =
                                wr.iter().zip(xi).map(|(&a, &b)| a as f64 * b as f64).sum();
                            let bound = error_bound(ty, w.try_row(r).unwrap(), wr, xi);
                            let err = (y[i * rows + r] as f64 - reference).abs();
                            assert!(
                                err <= bound,
                                "{ty} {rows}x{cols} n={n} ({i},{r}): {} vs {reference}, bound {bound}",
                                y[i * rows + r]
                            );
                            worst = worst.max(err / bound);
                        }
                    }
                    // The bound is a worst case; typical errors are far below it, but not
                    // zero (the activations really are quantized).
                    if n > 0 {
                        assert!(worst > 0.0 && worst < 1.0, "{ty} {worst}");
                    }
                    if n == 1 {
                        let mut yv = vec![f32::NAN; rows];
                        matvec(&w, &x, &mut yv).unwrap();
                        assert_eq!(yv, y);
                    }
                }
            }
        }
    }

    #[test]
    fn quantized_products_match_the_block_dot_of_quantized_activations() {
        // Tighter check of the integer path: with the activations quantized by hand, the
        // result is the f64 dot of the two dequantized rows up to f32 rounding.
        let mut rng = Lcg(77);
        let (rows, cols) = (4, 160);
        for (ty, act) in [
            (GgmlType::Q4_0, GgmlType::Q8_0),
            (GgmlType::Q8_0, GgmlType::Q8_0),
            (GgmlType::Q4_1, GgmlType::Q8_1),
        ] {
            let (bytes, deq) = weights(ty, rows, cols, &mut rng);
            let w = WeightMatrix::new(ty, rows, cols, &bytes).unwrap();
            let x = activations(1, cols, &mut rng);
            let mut xb = vec![0u8; row_bytes(act, cols).unwrap()];
            quantize_row(act, &x, &mut xb).unwrap();
            let mut xq = vec![0.0f32; cols];
            quant::dequantize_row(act, &xb, &mut xq).unwrap();
            let mut y = vec![0.0f32; rows];
            matvec(&w, &x, &mut y).unwrap();
            for r in 0..rows {
                let wr = &deq[r * cols..(r + 1) * cols];
                let exact: f64 = wr.iter().zip(&xq).map(|(&a, &b)| a as f64 * b as f64).sum();
                let mag: f64 = wr
                    .iter()
                    .zip(&xq)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
                // Q4_1: plus the s term, at most |m| * 2^-10 |s| per block (two f16
                // roundings); bounded here by 2^-10 of the magnitude of m times the row of xq.
                let m_term = if ty == GgmlType::Q4_1 {
                    let wb = as_blocks::<BlockQ4_1>(w.try_row(r).unwrap()).unwrap();
                    wb.iter()
                        .zip(xq.chunks_exact(QK))
                        .map(|(b, xs)| {
                            let s: f64 = xs.iter().map(|&v| v as f64).sum();
                            (b.m() as f64).abs() * (s.abs() * 2f64.powi(-10) + 2f64.powi(-24))
                        })
                        .sum()
                } else {
                    0.0
                };
                let tol = mag * 10.0 * f32::EPSILON as f64 + m_term;
                assert!(
                    (y[r] as f64 - exact).abs() <= tol,
                    "{ty} row {r}: {} vs {exact}",
                    y[r]
                );
            }
        }
    }

    #[test]
    fn float_products() {
        let mut rng = Lcg(3);
        for ty in [GgmlType::F32, GgmlType::F16] {
            for (rows, cols, n) in [(1, 1, 1), (7, 5, 3), (3, 64, 2), (2, 3, 0)] {
                let (bytes, deq) = weights(ty, rows, cols, &mut rng);
                let w = WeightMatrix::new(ty, rows, cols, &bytes).unwrap();
                let x = activations(n, cols, &mut rng);
                let mut y = vec![f32::NAN; n * rows];
                matmul(&w, &x, n, &mut y).unwrap();
                for i in 0..n {
                    for r in 0..rows {
                        let (wr, xi) =
                            (&deq[r * cols..(r + 1) * cols], &x[i * cols..(i + 1) * cols]);
                        let exact: f64 =
                            wr.iter().zip(xi).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let mag: f64 = wr
                            .iter()
                            .zip(xi)
                            .map(|(&a, &b)| (a as f64 * b as f64).abs())
                            .sum();
                        let tol = mag * cols as f64 * f32::EPSILON as f64;
                        assert!((y[i * rows + r] as f64 - exact).abs() <= tol, "{ty}");
                    }
                }
            }
        }
    }

    #[test]
    fn empty_shapes() {
        for ty in GgmlType::ALL.into_iter().filter(|t| !t.is_interleaved()) {
            // cols = 0: every output is an empty sum.
            let w = WeightMatrix::new(ty, 3, 0, &[]).unwrap();
            let mut y = [f32::NAN; 6];
            if !can_multiply(ty) {
                assert_eq!(
                    matmul(&w, &[], 2, &mut y),
                    Err(KernelError::Unsupported(ty))
                );
                continue;
            }
            matmul(&w, &[], 2, &mut y).unwrap();
            assert_eq!(y, [0.0; 6]);
            let cols = ty.block_size().max(32);
            // rows = 0: nothing to write.
            let w = WeightMatrix::new(ty, 0, cols, &[]).unwrap();
            matmul(&w, &vec![1.0; 2 * cols], 2, &mut []).unwrap();
            // n = 0.
            let bytes = vec![0u8; row_bytes(ty, cols).unwrap()];
            let w = WeightMatrix::new(ty, 1, cols, &bytes).unwrap();
            matmul(&w, &[], 0, &mut []).unwrap();
        }
    }

    #[test]
    fn errors() {
        let bytes = vec![0u8; 2 * 18];
        let w = WeightMatrix::new(GgmlType::Q4_0, 2, 32, &bytes).unwrap();
        let mut y = [0.0f32; 4];
        // Wrong sizes.
        assert!(matches!(
            matmul(&w, &[0.0; 63], 2, &mut y),
            Err(KernelError::SizeMismatch {
                what: "activations",
                ..
            })
        ));
        assert!(matches!(
            matmul(&w, &[0.0; 64], 2, &mut y[..3]),
            Err(KernelError::SizeMismatch {
                what: "outputs",
                ..
            })
        ));
        assert!(matches!(
            matmul(&w, &[0.0; 64], usize::MAX, &mut y),
            Err(KernelError::SizeMismatch {
                what: "activations",
                ..
            })
        ));
        // A NaN in the second activation row is reported at its index in x.
        let mut x = [0.5f32; 64];
        x[40] = f32::NAN;
        assert!(matches!(
            matmul(&w, &x, 2, &mut y),
            Err(KernelError::NonFinite { index: 40, .. })
        ));
        // Activations too large for a Q8_0 scale.
        x[40] = 1e7;
        assert!(matches!(
            matmul(&w, &x, 2, &mut y),
            Err(KernelError::F16Overflow {
                ty: GgmlType::Q8_0,
                index: 32,
                ..
            })
        ));
        // Q8_1 weights are not a thing.
        let b = vec![0u8; 36];
        let w = WeightMatrix::new(GgmlType::Q8_1, 1, 32, &b).unwrap();
        assert_eq!(
            matvec(&w, &[0.0; 32], &mut y[..1]),
            Err(KernelError::Unsupported(GgmlType::Q8_1))
        );
        // Bad matrix sizes and row indices.
        assert!(WeightMatrix::new(GgmlType::Q4_0, 2, 32, &bytes[1..]).is_err());
        assert!(WeightMatrix::new(GgmlType::Q4_0, 2, 31, &bytes).is_err());
        let w = WeightMatrix::new(GgmlType::Q4_0, 2, 32, &bytes).unwrap();
        let mut out = [0.0f32; 32];
        assert!(dequantize_row(&w, 2, &mut out).is_err());
        assert!(dequantize_row(&w, 0, &mut out[..31]).is_err());
        assert_eq!(w.try_row(2), None);
        assert_eq!(w.try_row(1), Some(&bytes[18..]));
    }

    #[test]
    fn dequantize_row_for_every_type() {
        let mut rng = Lcg(11);
        for ty in GgmlType::ALL
            .into_iter()
            .filter(|&t| quant::can_quantize(t))
        {
            let (rows, cols) = (3, 256);
            let src = rng.uniform_vec(rows * cols, 2.0);
            let rb = row_bytes(ty, cols).unwrap();
            let mut bytes = vec![0u8; rows * rb];
            for (s, b) in src.chunks_exact(cols).zip(bytes.chunks_exact_mut(rb)) {
                quantize_row(ty, s, b).unwrap();
            }
            // At an odd offset, as inside a file.
            let mut shifted = vec![0u8; 1];
            shifted.extend_from_slice(&bytes);
            let w = WeightMatrix::new(ty, rows, cols, &shifted[1..]).unwrap();
            for r in 0..rows {
                let mut out = vec![0.0f32; cols];
                dequantize_row(&w, r, &mut out).unwrap();
                let mut expected = vec![0.0f32; cols];
                quant::dequantize_row(ty, &bytes[r * rb..(r + 1) * rb], &mut expected).unwrap();
                assert_eq!(out, expected, "{ty}");
                // And close to the source: half a step of the 4-bit types (q4_1's 4/15), or
                // a whole q4_0 step of 2/8 for its clamped values; the 2- and 3-bit k-quants
                // have 4 and 8 levels per group (a whole step for Q3_K's clamped side).
                let tol = match ty {
                    GgmlType::Q2_K => 4.0 / 3.0 * 0.75,
                    GgmlType::Q3_K => 2.0 / 4.0 * 1.1,
                    GgmlType::IQ4_NL | GgmlType::IQ4_XS => 2.0 * 24.0 / 127.0 * 0.75,
                    _ => 0.25 * 1.001,
                };
                for (a, b) in out.iter().zip(&src[r * cols..(r + 1) * cols]) {
                    assert!((a - b).abs() <= tol, "{ty}: {a} vs {b}");
                }
            }
        }
    }
}

#[cfg(test)]
mod new_type_tests {
    use super::*;
    use crate::quant::tests_common::Lcg;
    use crate::quant::{iq4_nl, q2_k, q3_k, q4_k, q5_0, q5_1, q5_k, q6_k, quantize_row, RowBlock};
    use crate::quant::{BlockQ8K, BlockQ8_1};

    /// Random bytes for a type without a quantizer here, with small finite f16 scales at the
    /// given byte offsets of each block.
    fn random_bytes(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        f16_at: &[usize],
        rng: &mut Lcg,
    ) -> Vec<u8> {
        let bb = ty.block_bytes();
        let mut bytes: Vec<u8> = (0..rows * row_bytes(ty, cols).unwrap())
            .map(|_| (rng.next_f32() * 256.0) as u8)
            .collect();
        for block in bytes.chunks_exact_mut(bb) {
            for &o in f16_at {
                let v = half::f16::from_f32(0.0005 + rng.next_f32() * 0.002).to_le_bytes();
                block[o..o + 2].copy_from_slice(&v);
            }
        }
        bytes
    }

    /// Every output of `matmul` equals the reference block dot of the row with the
    /// activations quantized by the reference (bit for bit), for several activation rows.
    #[test]
    fn products_are_the_reference_dots_of_quantized_activations() {
        let mut rng = Lcg(909);
        let (rows, cols, n) = (5, 512, 3);
        let x: Vec<f32> = rng.uniform_vec(n * cols, 2.0);
        for ty in [
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::IQ4_NL,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::IQ4_XS,
            GgmlType::BF16,
        ] {
            let bytes = if quant::can_quantize(ty) {
                let src = rng.uniform_vec(rows * cols, 0.3);
                let rb = row_bytes(ty, cols).unwrap();
                let mut b = vec![0u8; rows * rb];
                for (s, d) in src.chunks_exact(cols).zip(b.chunks_exact_mut(rb)) {
                    quantize_row(ty, s, d).unwrap();
                }
                b
            } else {
                let scales: &[usize] = match ty {
                    GgmlType::Q2_K => &[80, 82],
                    GgmlType::Q3_K => &[108],
                    GgmlType::IQ4_NL | GgmlType::IQ4_XS => &[0],
                    _ => unreachable!(),
                };
                random_bytes(ty, rows, cols, scales, &mut rng)
            };
            let w = WeightMatrix::new(ty, rows, cols, &bytes).unwrap();
            let mut y = vec![f32::NAN; n * rows];
            matmul(&w, &x, n, &mut y).unwrap();
            for i in 0..n {
                let xi = &x[i * cols..(i + 1) * cols];
                let mut a8_0 = vec![BlockQ8_0::default(); cols / 32];
                BlockQ8_0::quantize_row(xi, &mut a8_0).unwrap();
                let mut a8_1 = vec![BlockQ8_1::default(); cols / 32];
                BlockQ8_1::quantize_row(xi, &mut a8_1).unwrap();
                let mut a8_k = vec![BlockQ8K::default(); cols / 256];
                BlockQ8K::quantize_row(xi, &mut a8_k).unwrap();
                for r in 0..rows {
                    let row = w.try_row(r).unwrap();
                    let expected = match ty {
                        GgmlType::Q5_0 => q5_0::vec_dot_q5_0_q8_0(as_blocks(row).unwrap(), &a8_0),
                        GgmlType::Q5_1 => q5_1::vec_dot_q5_1_q8_1(as_blocks(row).unwrap(), &a8_1),
                        GgmlType::IQ4_NL => {
                            iq4_nl::vec_dot_iq4_nl_q8_0(as_blocks(row).unwrap(), &a8_0)
                        }
                        GgmlType::Q2_K => q2_k::vec_dot_q2_k_q8_k(as_blocks(row).unwrap(), &a8_k),
                        GgmlType::Q3_K => q3_k::vec_dot_q3_k_q8_k(as_blocks(row).unwrap(), &a8_k),
                        GgmlType::Q4_K => q4_k::vec_dot_q4_k_q8_k(as_blocks(row).unwrap(), &a8_k),
                        GgmlType::Q5_K => q5_k::vec_dot_q5_k_q8_k(as_blocks(row).unwrap(), &a8_k),
                        GgmlType::Q6_K => q6_k::vec_dot_q6_k_q8_k(as_blocks(row).unwrap(), &a8_k),
                        GgmlType::IQ4_XS => {
                            iq4_nl::vec_dot_iq4_xs_q8_k(as_blocks(row).unwrap(), &a8_k)
                        }
                        GgmlType::BF16 => quant::float::vec_dot_bf16_f32(row, xi),
                        _ => unreachable!(),
                    }
                    .unwrap();
                    assert_eq!(
                        y[i * rows + r].to_bits(),
                        expected.to_bits(),
                        "{ty} ({i}, {r})"
                    );
                }
            }
            // And the result is close to the f64 product of the dequantized weights (the
            // activation rounding of 8-bit blocks: under 1% of the magnitude here).
            let mut deq = vec![0.0f32; cols];
            for (r, &yr) in y.iter().enumerate().take(rows) {
                dequantize_row(&w, r, &mut deq).unwrap();
                let xi = &x[..cols];
                let exact: f64 = deq.iter().zip(xi).map(|(&a, &b)| a as f64 * b as f64).sum();
                let mag: f64 = deq
                    .iter()
                    .zip(xi)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
                assert!(
                    (yr as f64 - exact).abs() <= 0.02 * mag,
                    "{ty} row {r}: {yr} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn k_quant_rows_must_be_whole_super_blocks() {
        assert!(matches!(
            WeightMatrix::new(GgmlType::Q4_K, 1, 13696, &[]),
            Err(KernelError::NotBlockMultiple { block: 256, .. })
        ));
        let w = WeightMatrix::new(GgmlType::IQ2_XXS, 1, 256, &[0u8; 66]).unwrap();
        assert_eq!(
            matvec(&w, &[0.0; 256], &mut [0.0]),
            Err(KernelError::Unsupported(GgmlType::IQ2_XXS))
        );
    }
}
