//! x86-64 AVX2 kernels (with F16C for the f16 scales; FMA is required by the path but not
//! used, since every float operation here must round like the scalar reference).
//!
//! Integer parts: `vpmaddubsw` (unsigned x signed bytes, pairs summed to i16) then `vpmaddwd`
//! with ones (i16 pairs to i32). Nibbles (0..15) are the unsigned side and the `- 8` of Q4_0
//! is applied as `- 8 * sum(a)` per block; Q8_0 weights use `|w| * sign(a, w)`. No
//! intermediate can saturate (bounds at each use). Float parts: one row per f32 lane, the
//! reference's multiplications and additions in the reference's order.
//!
//! Safety: every function that uses AVX2 is `#[target_feature(enable = "avx2,fma,f16c")]`.
//! Such a function is reachable from safe code only through the private table `KERNELS`,
//! which [`kernels`] hands out after checking the three features at run time; the table's
//! wrappers are the only callers (the AVX-512 table, built after the same checks, calls the
//! `pub(super)` ones).
//! Memory is read through fixed-size array references (`&[u8; 32]` and the like), so every
//! load is in bounds by its type.
#![allow(unsafe_code)]

use crate::act::Q8Row;
use crate::isa::Isa;
use crate::quant::{
    f16_le, to_f16_le, BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0,
    BlockQ4_0x8, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0,
    BlockQ8_0x8, BlockQ8_1, QK,
};
use crate::simd::{scalar, Kernels};
use crate::KernelError;
use core::arch::x86_64::*;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The AVX2 kernels, if this CPU has AVX2, FMA and F16C.
pub fn kernels() -> Option<&'static Kernels> {
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        Some(&KERNELS)
    } else {
        None
    }
}

/// Reachable only through [`kernels`] (see the module docs), and as the base of the
/// `avxvnni` tables, which check the same features.
pub(super) static KERNELS: Kernels = Kernels {
    isa: Isa::Avx2,
    quantize_q8_0,
    quantize_q8_1,
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

// ---- Safe wrappers (the table entries). Each `unsafe` call below relies on the same fact:
// ---- the table is handed out only after AVX2, FMA and F16C were detected.

fn quantize_q8_0(
    x: &[f32],
    blocks: &mut [BlockQ8_0],
    d: &mut [f32],
    sum: &mut [i32],
) -> Result<(), KernelError> {
    // SAFETY: reachable only through `kernels()`, after the AVX2/FMA/F16C check.
    if unsafe { q8_0_fast(x, blocks, d, sum) } {
        Ok(())
    } else {
        // Bad lengths, a non-finite input, an f16 overflow or an underflowing scale: the
        // reference reports the error or writes the rare block (same bytes either way).
        scalar::quantize_q8_0(x, blocks, d, sum)
    }
}

fn quantize_q8_1(x: &[f32], blocks: &mut [BlockQ8_1]) -> Result<(), KernelError> {
    // SAFETY: as in `quantize_q8_0`.
    if unsafe { q8_1_fast(x, blocks) } {
        Ok(())
    } else {
        crate::quant::RowBlock::quantize_row(x, blocks)
    }
}

fn rows_q4_0(w: &[BlockQ4_0], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q4_0_rows(w, a, y) }
}

fn rows_q8_0(w: &[BlockQ8_0], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q8_0_rows(w, a, y) }
}

fn rows_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q4_1_rows(w, a, y) }
}

fn rows_q5_0(w: &[BlockQ5_0], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q5_0_rows(w, a, y) }
}

fn rows_q4_k(w: &[BlockQ4K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q4_k_rows(w, a, y) }
}

fn rows_q5_k(w: &[BlockQ5K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q5_k_rows(w, a, y) }
}

fn rows_iq4_nl(w: &[BlockIq4Nl], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { iq4_nl_rows(w, a, y) }
}

fn rows_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q5_1_rows(w, a, y) }
}

fn rows_q3_k(w: &[BlockQ3K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q3_k_rows(w, a, y) }
}

fn rows_q2_k(w: &[BlockQ2K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q2_k_rows(w, a, y) }
}

fn rows_iq4_xs(w: &[BlockIq4Xs], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { iq4_xs_rows(w, a, y) }
}

fn rows_q6_k(w: &[BlockQ6K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q6_k_rows(w, a, y) }
}

fn dot_bf16(x: &[u8], y: &[f32]) -> f32 {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { bf16_dot(x, y) }
}

fn rows_q4_0x8(w: &[BlockQ4_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q4_0x8_rows(w, a, y) }
}

fn gemm_q4_0x8(w: &[BlockQ4_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { gemm(w, a, y, rows_q4_0x8, q4_0x8_tile) }
}

fn gemm_q8_0x8(w: &[BlockQ8_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    // Row by row: a tile of this kind (16 registers of decoded weights) measured no faster.
    crate::simd::gemm_by_rows(rows_q8_0x8, w, a, y);
}

fn rows_q8_0x8(w: &[BlockQ8_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q8_0x8_rows(w, a, y) }
}

fn dot_f32(x: &[u8], y: &[f32]) -> f32 {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { f32_dot(x, y) }
}

fn dot_f16(x: &[u8], y: &[f32]) -> f32 {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { f16_dot(x, y) }
}

fn axpy_f32(a: f32, x: &[u8], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { f32_axpy(a, x, y) }
}

fn axpy_f16(a: f32, x: &[u8], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { f16_axpy(a, x, y) }
}

fn scores_f16(x: &[u8], stride: usize, q: &[f32], scale: f32, out: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { f16_scores(x, stride, q, scale, out) }
}

fn mix_f16(x: &[u8], stride: usize, w: &[f32], out: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { f16_mix(x, stride, w, out) }
}

// ---- Loads and stores through fixed-size references.

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_u8x32(p: &[u8; 32]) -> __m256i {
    // SAFETY: 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_i8x32(p: &[i8; 32]) -> __m256i {
    // SAFETY: 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_i128(p: &[u8; 16]) -> __m128i {
    // SAFETY: 16 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(p.as_ptr().cast()) }
}

/// The 8 f16 scales of a row-interleaved block, widened.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_scales(d: &[[u8; 2]; 8]) -> __m256 {
    // SAFETY: `[[u8; 2]; 8]` is 16 contiguous readable bytes; `loadu` is unaligned.
    let h = unsafe { _mm_loadu_si128(d.as_ptr().cast()) };
    _mm256_cvtph_ps(h)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_f32x8(p: &[f32; 8]) -> __m256 {
    // SAFETY: 8 readable f32; `loadu` is unaligned.
    unsafe { _mm256_loadu_ps(p.as_ptr()) }
}

/// 8 little-endian f32 from 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_f32x8_bytes(p: &[u8; 32]) -> __m256 {
    // SAFETY: 32 readable bytes; `loadu` is unaligned (x86 is little-endian).
    unsafe { _mm256_loadu_ps(p.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn store_f32x8(p: &mut [f32; 8], v: __m256) {
    // SAFETY: 8 writable f32; `storeu` is unaligned.
    unsafe { _mm256_storeu_ps(p.as_mut_ptr(), v) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store_i256(p: &mut [i8; 32], v: __m256i) {
    // SAFETY: 32 writable bytes; `storeu` is unaligned.
    unsafe { _mm256_storeu_si256(p.as_mut_ptr().cast(), v) }
}

/// The 8 four-byte groups of an activation block as i32, for broadcasting group `c`
/// (values `4c..4c + 4`) to every lane.
#[inline]
pub(super) fn act_groups(qs: &[i8; QK]) -> [i32; 8] {
    zerocopy::transmute!(*qs)
}

// ---- Prefetching.

/// How far ahead of the block in hand the interleaved kernels ask for the weights, unless
/// `CHATGLM_PREFETCH` says otherwise ([`PREFETCH_DISTANCE`]). With two threads each streaming
/// ~25 GB/s against ~120 ns of memory latency, ~3 KB per thread must be in flight; the
/// hardware prefetcher alone falls short of that while the core is busy computing. Measured
/// on Zen 5 (27392x4096, 2 threads): q4_0x8 41 GB/s without, 45-64 GB/s with every line 4 KB
/// ahead; one line per block 1 KB ahead was worse than none (40). On an Intel Xeon (Sapphire
/// Rapids class, 15.7 GB/s streaming read per core), swept in one process over 1.5 GB of 6B
/// matrices (docs/DECODE_X86.md), avx512 q4_0x8, 1 thread: 1 KB 16.1 GB/s, 2 KB 17.1, 3 KB
/// 17.3, 4 KB 15.7 (none 14.3, 8 KB 14.2 in another sweep where 4 KB gave 15.2); the L2 hint
/// (T1) and every other line were slower. 3 KB is as good as 2 KB there at 1 and 2 threads
/// and for q8_0x8 and the avx2 and avxvnni kernels, and nearest the distance tuned on AMD.
pub(crate) const PREFETCH_AHEAD: usize = 3072;

/// The prefetch distance in use (bytes; 0 turns prefetching off): [`PREFETCH_AHEAD`], or
/// `CHATGLM_PREFETCH` when the kernel table is chosen (`crate::isa::kernels`). Read once per
/// block, not a constant: in one window on the Intel Xeon above, the same kernels with the
/// distance read at run time decoded the 6B q4_0 file 20% faster than with it folded into the
/// addresses (4.97 vs 4.14 tok/s on 1 thread, 9.4 vs 7.7 on 2, alternated), where the
/// compiler spreads the prefetches among the block's loads and products instead of issuing
/// them together; a later window showed no such gap, so the cause is not settled
/// (docs/DECODE_X86.md). The load costs nothing measurable either way.
pub(crate) static PREFETCH_DISTANCE: AtomicUsize = AtomicUsize::new(PREFETCH_AHEAD);

/// Asks for every cache line of the block [`PREFETCH_DISTANCE`] bytes after `blk` (a hint:
/// nothing is read, any address is allowed, so running past the end of the matrix is fine).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn prefetch_ahead<T>(blk: &T) {
    let dist = PREFETCH_DISTANCE.load(Relaxed);
    if dist == 0 {
        return;
    }
    let p = (blk as *const T).cast::<i8>().wrapping_add(dist);
    let mut off = 0;
    while off < size_of::<T>() {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off));
        off += 64;
    }
}

// ---- Horizontal helpers.

/// Lane `r` of the result is the sum of the 8 lanes of `p[r]` (integer, exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn transpose_sum(p: &[__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(p[0], p[1]);
    let h23 = _mm256_hadd_epi32(p[2], p[3]);
    let h45 = _mm256_hadd_epi32(p[4], p[5]);
    let h67 = _mm256_hadd_epi32(p[6], p[7]);
    // Per 128-bit half: [sum p0, sum p1, sum p2, sum p3] over that half's 4 lanes.
    let h0123 = _mm256_hadd_epi32(h01, h23);
    let h4567 = _mm256_hadd_epi32(h45, h67);
    let lo = _mm256_permute2x128_si256::<0x20>(h0123, h4567);
    let hi = _mm256_permute2x128_si256::<0x31>(h0123, h4567);
    _mm256_add_epi32(lo, hi)
}

/// Sum of the 8 lanes (integer).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
    _mm_cvtsi128_si32(s)
}

/// Largest of the 8 lanes (all finite and non-negative here).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps::<0b01>(m, m));
    _mm_cvtss_f32(m)
}

/// Folds 16 lanes (`lo` = lanes 0..8, `hi` = lanes 8..16) in halves, as
/// [`crate::quant::float::dot_in_lanes`] does.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn fold16(lo: __m256, hi: __m256) -> f32 {
    let l8 = _mm256_add_ps(lo, hi);
    let l4 = _mm_add_ps(_mm256_castps256_ps128(l8), _mm256_extractf128_ps::<1>(l8));
    let l2 = _mm_add_ps(l4, _mm_movehl_ps(l4, l4));
    let l1 = _mm_add_ss(l2, _mm_shuffle_ps::<0b01>(l2, l2));
    _mm_cvtss_f32(l1)
}

// ---- Activation quantization.

/// One block quantized as the reference does: the 32 values packed in order, the f32 scale
/// `d = amax / 127` (before f16 rounding) and the sum of the values. `None` for a block the
/// fast path does not handle exactly (non-finite input, a scale that overflows f16, or one
/// so small that `1 / d` is infinite).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn quantize_block(x: &[f32; QK]) -> Option<(__m256i, f32, i32)> {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let chunks = x.as_chunks::<8>().0;
    let v: [__m256; 4] = std::array::from_fn(|i| load_f32x8(&chunks[i]));
    let a = v.map(|v| _mm256_and_ps(v, abs_mask));
    // Finite: |x| <= f32::MAX (false for NaN and infinities).
    let max = _mm256_set1_ps(f32::MAX);
    let ok = a
        .iter()
        .fold(_mm256_castsi256_ps(_mm256_set1_epi32(-1)), |ok, &ai| {
            _mm256_and_ps(ok, _mm256_cmp_ps::<_CMP_LE_OQ>(ai, max))
        });
    if _mm256_movemask_ps(ok) != 0xFF {
        return None;
    }
    let amax = hmax(_mm256_max_ps(
        _mm256_max_ps(a[0], a[1]),
        _mm256_max_ps(a[2], a[3]),
    ));
    // The reference's arithmetic (quant::q8_0): d = amax / 127, id = 1 / d (or 0).
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    if !id.is_finite() || half::f16::from_f32(d).is_infinite() {
        return None;
    }
    let idv = _mm256_set1_ps(id);
    let sign_mask = _mm256_set1_ps(-0.0);
    let half = _mm256_set1_ps(0.5);
    let one = _mm256_set1_ps(1.0);
    let q = v.map(|v| {
        // round(v * id), half away from zero: truncate, then step away from zero when the
        // dropped fraction is at least one half (both steps exact for |p| < 2^23).
        let p = _mm256_mul_ps(v, idv);
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
        let frac = _mm256_and_ps(_mm256_sub_ps(p, t), abs_mask);
        let step = _mm256_or_ps(_mm256_and_ps(p, sign_mask), one);
        let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, half);
        _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, step)))
    });
    // |q| <= 127, so the saturating packs are plain narrowing.
    let sum = hsum_i32(_mm256_add_epi32(
        _mm256_add_epi32(q[0], q[1]),
        _mm256_add_epi32(q[2], q[3]),
    ));
    let p01 = _mm256_packs_epi32(q[0], q[1]);
    let p23 = _mm256_packs_epi32(q[2], q[3]);
    let packed = _mm256_packs_epi16(p01, p23);
    // The packs interleave 128-bit halves: dwords hold values 0-3, 8-11, 16-19, 24-27, 4-7, ...
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    Some((_mm256_permutevar8x32_epi32(packed, order), d, sum))
}

/// Q8_0 with scales and sums; `false` when the reference must do the row.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q8_0_fast(
    x: &[f32],
    blocks: &mut [BlockQ8_0],
    d: &mut [f32],
    sum: &mut [i32],
) -> bool {
    let (chunks, rest) = x.as_chunks::<QK>();
    if !rest.is_empty()
        || chunks.len() != blocks.len()
        || d.len() != blocks.len()
        || sum.len() != blocks.len()
    {
        return false;
    }
    for (((xb, b), df), s) in chunks.iter().zip(blocks.iter_mut()).zip(d).zip(sum) {
        let Some((q, scale, total)) = quantize_block(xb) else {
            return false;
        };
        store_i256(&mut b.qs, q);
        b.d = to_f16_le(scale);
        *df = f16_le(b.d);
        *s = total;
    }
    true
}

/// Q8_1; `false` when the reference must do the row.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q8_1_fast(x: &[f32], blocks: &mut [BlockQ8_1]) -> bool {
    let (chunks, rest) = x.as_chunks::<QK>();
    if !rest.is_empty() || chunks.len() != blocks.len() {
        return false;
    }
    for (xb, b) in chunks.iter().zip(blocks.iter_mut()) {
        let Some((q, scale, total)) = quantize_block(xb) else {
            return false;
        };
        // The reference: s = f16(sum * d) with the f32 d.
        let s = total as f32 * scale;
        if half::f16::from_f32(s).is_infinite() {
            return false;
        }
        store_i256(&mut b.qs, q);
        b.d = to_f16_le(scale);
        b.s = to_f16_le(s);
    }
    true
}

// ---- Row-interleaved products.

/// `y[8g + r]` for each group of `a.len()` Q4_0x8 blocks, two groups per pass where it can
/// (the activation broadcasts and per-block scalars then serve 16 rows; two independent
/// chains). Per lane the same integer sums and float operations as one group at a time.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0x8_rows(w: &[BlockQ4_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    let nb = a.len();
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let m4 = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    // i16 lanes: 8 products of a nibble (<= 15) and an activation (|a| <= 127),
    // at most 8 * 2 * 15 * 127 = 30480 in magnitude (so is every partial sum).
    let block = |blk: &BlockQ4_0x8, u: &[__m256i; 8]| {
        let mut s16 = _mm256_setzero_si256();
        for (c, chunk) in blk.qs.iter().enumerate() {
            let v = load_u8x32(chunk);
            let lo = _mm256_and_si256(v, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(lo, u[c]));
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi, u[c + 4]));
        }
        s16
    };
    // Reference (q4_0): sumi as f32 * dx * dy.
    let step = |acc: __m256, s16: __m256i, off: __m256i, blk: &BlockQ4_0x8, dy: __m256| {
        let sumi = _mm256_sub_epi32(_mm256_madd_epi16(s16, ones), off);
        let t = _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), load_scales(&blk.d));
        _mm256_add_ps(acc, _mm256_mul_ps(t, dy))
    };
    let groups = (y.len() / 8).min(w.len() / nb);
    let (pairs, _) = y[..16 * (groups / 2)].as_chunks_mut::<16>();
    for (out, wp) in pairs.iter_mut().zip(w.chunks_exact(2 * nb)) {
        let (wg, wh) = wp.split_at(nb);
        let (mut acc_g, mut acc_h) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let act = a.blocks().iter().zip(a.d()).zip(a.sum());
        for ((g, h), ((ab, &dy), &s)) in wg.iter().zip(wh).zip(act) {
            prefetch_ahead(g);
            prefetch_ahead(h);
            let u = act_groups(&ab.qs).map(|v| _mm256_set1_epi32(v));
            let (sg, sh) = (block(g, &u), block(h, &u));
            let (off, dy) = (_mm256_set1_epi32(8 * s), _mm256_set1_ps(dy));
            acc_g = step(acc_g, sg, off, g, dy);
            acc_h = step(acc_h, sh, off, h, dy);
        }
        let (og, oh) = out.split_at_mut(8);
        if let (Ok(og), Ok(oh)) = (<&mut [f32; 8]>::try_from(og), <&mut [f32; 8]>::try_from(oh)) {
            store_f32x8(og, acc_g);
            store_f32x8(oh, acc_h);
        }
    }
    if groups % 2 == 1 {
        let g = groups - 1;
        let (group, out) = (&w[g * nb..][..nb], &mut y[8 * g..8 * g + 8]);
        let mut acc = _mm256_setzero_ps();
        for (((blk, ab), &dy), &s) in group.iter().zip(a.blocks()).zip(a.d()).zip(a.sum()) {
            prefetch_ahead(blk);
            let u = act_groups(&ab.qs).map(|v| _mm256_set1_epi32(v));
            let s16 = block(blk, &u);
            acc = step(acc, s16, _mm256_set1_epi32(8 * s), blk, _mm256_set1_ps(dy));
        }
        if let Ok(out) = <&mut [f32; 8]>::try_from(out) {
            store_f32x8(out, acc);
        }
    }
}

// ---- Several activation rows at once (the prompt): each group block is loaded and
// ---- decoded once for `GEMM_ROWS` activation rows, then each row as in the row kernels
// ---- (the same integer sums, the same float operations in the same order).

/// Activation rows per tile.
const GEMM_ROWS: usize = 4;

/// See [`crate::simd::Kernels::gemm_q4_0x8`]: per group, tiles of `GEMM_ROWS` rows through
/// `tile` (outputs of one group for those rows), the remaining rows through the row kernel
/// `rows`.
#[target_feature(enable = "avx2,fma,f16c")]
fn gemm<W>(
    w: &[W],
    a: &[Q8Row<'_>],
    y: &mut [&mut [f32]],
    rows: fn(&[W], Q8Row<'_>, &mut [f32]),
    tile: unsafe fn(&[W], &[Q8Row<'_>; GEMM_ROWS], &mut [f32; 8 * GEMM_ROWS]),
) {
    let n = a.len().min(y.len());
    let (a, y) = (&a[..n], &mut y[..n]);
    let nb = a.first().map_or(0, Q8Row::len);
    if nb == 0 || a.iter().any(|ai| ai.len() != nb) {
        return crate::simd::gemm_by_rows(rows, w, a, y);
    }
    let groups = y.iter().map(|yi| yi.len() / 8).min().unwrap_or(0);
    let mut out = [0f32; 8 * GEMM_ROWS];
    for (g, wg) in w.chunks_exact(nb).take(groups).enumerate() {
        let (tiles, rest) = a.as_chunks::<GEMM_ROWS>();
        for (t, at) in tiles.iter().enumerate() {
            // SAFETY: `tile` is one of this file's AVX2 kernels, and this function runs only
            // with the features they need (it has them itself).
            unsafe { tile(wg, at, &mut out) };
            for (yi, o) in y[t * GEMM_ROWS..].iter_mut().zip(out.as_chunks::<8>().0) {
                yi[8 * g..8 * g + 8].copy_from_slice(o);
            }
        }
        let done = tiles.len() * GEMM_ROWS;
        for (ai, yi) in rest.iter().zip(&mut y[done..]) {
            rows(wg, *ai, &mut yi[8 * g..8 * g + 8]);
        }
    }
}

/// [`q4_0x8_rows`] of one group for `GEMM_ROWS` activation rows (all of `w.len()` blocks).
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0x8_tile(w: &[BlockQ4_0x8], a: &[Q8Row<'_>; GEMM_ROWS], out: &mut [f32; 8 * GEMM_ROWS]) {
    let m4 = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); GEMM_ROWS];
    for (b, blk) in w.iter().enumerate() {
        prefetch_ahead(blk);
        let lo: [__m256i; 4] =
            std::array::from_fn(|c| _mm256_and_si256(load_u8x32(&blk.qs[c]), m4));
        let hi: [__m256i; 4] = std::array::from_fn(|c| {
            _mm256_and_si256(_mm256_srli_epi16::<4>(load_u8x32(&blk.qs[c])), m4)
        });
        let dx = load_scales(&blk.d);
        for (acc, ai) in acc.iter_mut().zip(a) {
            let (Some(ab), Some(&dy), Some(&s)) =
                (ai.blocks().get(b), ai.d().get(b), ai.sum().get(b))
            else {
                continue;
            };
            let g = act_groups(&ab.qs);
            // As in `q4_0x8_rows`: at most 30480 in an i16 lane.
            let mut s16 = _mm256_setzero_si256();
            for c in 0..4 {
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(lo[c], _mm256_set1_epi32(g[c])));
                s16 = _mm256_add_epi16(
                    s16,
                    _mm256_maddubs_epi16(hi[c], _mm256_set1_epi32(g[c + 4])),
                );
            }
            let sumi = _mm256_sub_epi32(_mm256_madd_epi16(s16, ones), _mm256_set1_epi32(8 * s));
            // Reference (q4_0): sumi as f32 * dx * dy.
            let t = _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), dx);
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(t, _mm256_set1_ps(dy)));
        }
    }
    for (o, acc) in out.as_chunks_mut::<8>().0.iter_mut().zip(acc) {
        store_f32x8(o, acc);
    }
}

/// `y[8g + r]` for each group of `a.len()` Q8_0x8 blocks, two groups per pass where it can
/// (as in [`q4_0x8_rows`]).
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0x8_rows(w: &[BlockQ8_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    let nb = a.len();
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let ones = _mm256_set1_epi16(1);
    let block = |blk: &BlockQ8_0x8, u: &[__m256i; 8]| {
        let mut s32 = _mm256_setzero_si256();
        for (chunk, &uc) in blk.qs.iter().zip(u) {
            let v = load_i8x32(chunk);
            // |w| * (a * sign(w)) = w * a; |w| <= 128 and |a| <= 127, so a pair is at
            // most 32512: no saturation in i16.
            let p = _mm256_maddubs_epi16(_mm256_abs_epi8(v), _mm256_sign_epi8(uc, v));
            s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(p, ones));
        }
        s32
    };
    // Reference (q8_0): sumi as f32 * (dx * dy).
    let step = |acc: __m256, s32: __m256i, blk: &BlockQ8_0x8, dy: __m256| {
        let dxy = _mm256_mul_ps(load_scales(&blk.d), dy);
        _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(s32), dxy))
    };
    let groups = (y.len() / 8).min(w.len() / nb);
    let (pairs, _) = y[..16 * (groups / 2)].as_chunks_mut::<16>();
    for (out, wp) in pairs.iter_mut().zip(w.chunks_exact(2 * nb)) {
        let (wg, wh) = wp.split_at(nb);
        let (mut acc_g, mut acc_h) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for ((g, h), (ab, &dy)) in wg.iter().zip(wh).zip(a.blocks().iter().zip(a.d())) {
            prefetch_ahead(g);
            prefetch_ahead(h);
            let u = act_groups(&ab.qs).map(|v| _mm256_set1_epi32(v));
            let (sg, sh) = (block(g, &u), block(h, &u));
            let dy = _mm256_set1_ps(dy);
            acc_g = step(acc_g, sg, g, dy);
            acc_h = step(acc_h, sh, h, dy);
        }
        let (og, oh) = out.split_at_mut(8);
        if let (Ok(og), Ok(oh)) = (<&mut [f32; 8]>::try_from(og), <&mut [f32; 8]>::try_from(oh)) {
            store_f32x8(og, acc_g);
            store_f32x8(oh, acc_h);
        }
    }
    if groups % 2 == 1 {
        let g = groups - 1;
        let (group, out) = (&w[g * nb..][..nb], &mut y[8 * g..8 * g + 8]);
        let mut acc = _mm256_setzero_ps();
        for ((blk, ab), &dy) in group.iter().zip(a.blocks()).zip(a.d()) {
            prefetch_ahead(blk);
            let u = act_groups(&ab.qs).map(|v| _mm256_set1_epi32(v));
            acc = step(acc, block(blk, &u), blk, _mm256_set1_ps(dy));
        }
        if let Ok(out) = <&mut [f32; 8]>::try_from(out) {
            store_f32x8(out, acc);
        }
    }
}

// ---- Portable (one row after another) products, 8 rows at a time.

/// Runs `block(rows, b)` for 8 rows at a time, where `rows[r]` is the `r`-th row of the
/// group (the last group repeats its last row to fill 8 lanes; those lanes are dropped), and
/// accumulates the returned f32 lanes over the blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn by_eight<W>(
    w: &[W],
    nb: usize,
    y: &mut [f32],
    mut block: impl FnMut(&[&[W]; 8], usize) -> __m256,
) {
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let rows = (w.len() / nb).min(y.len());
    for (g, out) in y[..rows].chunks_mut(8).enumerate() {
        let last = g * 8 + out.len() - 1;
        // Row i < rows <= w.len() / nb: in bounds.
        let group: [&[W]; 8] = std::array::from_fn(|r| {
            let i = (g * 8 + r).min(last);
            &w[i * nb..(i + 1) * nb]
        });
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            // Eight streams: ask for each row's data a few blocks ahead.
            for row in &group {
                if let Some(ahead) = row.get(b + PREFETCH_BLOCKS) {
                    _mm_prefetch::<_MM_HINT_T0>((ahead as *const W).cast());
                }
            }
            acc = _mm256_add_ps(acc, block(&group, b));
        }
        let mut lanes = [0.0f32; 8];
        store_f32x8(&mut lanes, acc);
        out.copy_from_slice(&lanes[..out.len()]);
    }
}

/// Blocks ahead that the 8-row kernels prefetch in each row.
const PREFETCH_BLOCKS: usize = 16;

/// The f16 fields `field(r)` of 8 rows, widened.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn gather_f16(field: impl Fn(usize) -> [u8; 2]) -> __m256 {
    let h: [u16; 8] = std::array::from_fn(|r| u16::from_le_bytes(field(r)));
    let v = _mm_setr_epi16(
        h[0] as i16,
        h[1] as i16,
        h[2] as i16,
        h[3] as i16,
        h[4] as i16,
        h[5] as i16,
        h[6] as i16,
        h[7] as i16,
    );
    _mm256_cvtph_ps(v)
}

/// The 32 nibbles of a Q4_0/Q4_1 block in element order (low nibbles, then high ones).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn nibbles(qs: &[u8; 16]) -> __m256i {
    let q = load_i128(qs);
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(q), q);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_0_rows(w: &[BlockQ4_0], a: Q8Row<'_>, y: &mut [f32]) {
    let ones = _mm256_set1_epi16(1);
    let (ab, ad, asum) = (a.blocks(), a.d(), a.sum());
    by_eight(w, a.len(), y, |rows, b| {
        let (Some(act), Some(&dy), Some(&s)) = (ab.get(b), ad.get(b), asum.get(b)) else {
            return _mm256_setzero_ps();
        };
        let av = load_i8x32(&act.qs);
        let blocks: [&BlockQ4_0; 8] = std::array::from_fn(|r| &rows[r][b]);
        // Per row: 16 i16 pairs of nibble * activation (<= 3810), to 8 i32.
        let p: [__m256i; 8] = std::array::from_fn(|r| {
            _mm256_madd_epi16(_mm256_maddubs_epi16(nibbles(&blocks[r].qs), av), ones)
        });
        let sumi = _mm256_sub_epi32(transpose_sum(&p), _mm256_set1_epi32(8 * s));
        let dx = gather_f16(|r| blocks[r].d);
        _mm256_mul_ps(
            _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), dx),
            _mm256_set1_ps(dy),
        )
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q8_0_rows(w: &[BlockQ8_0], a: Q8Row<'_>, y: &mut [f32]) {
    let ones = _mm256_set1_epi16(1);
    let (ab, ad) = (a.blocks(), a.d());
    by_eight(w, a.len(), y, |rows, b| {
        let (Some(act), Some(&dy)) = (ab.get(b), ad.get(b)) else {
            return _mm256_setzero_ps();
        };
        let av = load_i8x32(&act.qs);
        let blocks: [&BlockQ8_0; 8] = std::array::from_fn(|r| &rows[r][b]);
        let p: [__m256i; 8] = std::array::from_fn(|r| {
            let v = load_i8x32(&blocks[r].qs);
            let prod = _mm256_maddubs_epi16(_mm256_abs_epi8(v), _mm256_sign_epi8(av, v));
            _mm256_madd_epi16(prod, ones)
        });
        let dxy = _mm256_mul_ps(gather_f16(|r| blocks[r].d), _mm256_set1_ps(dy));
        _mm256_mul_ps(_mm256_cvtepi32_ps(transpose_sum(&p)), dxy)
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_1_rows(w: &[BlockQ4_1], a: &[BlockQ8_1], y: &mut [f32]) {
    let ones = _mm256_set1_epi16(1);
    by_eight(w, a.len(), y, |rows, b| {
        let Some(act) = a.get(b) else {
            return _mm256_setzero_ps();
        };
        let av = load_i8x32(&act.qs);
        let blocks: [&BlockQ4_1; 8] = std::array::from_fn(|r| &rows[r][b]);
        let p: [__m256i; 8] = std::array::from_fn(|r| {
            _mm256_madd_epi16(_mm256_maddubs_epi16(nibbles(&blocks[r].qs), av), ones)
        });
        let sumi = _mm256_cvtepi32_ps(transpose_sum(&p));
        // Reference (q4_1): (dx * dy) * sumi as f32 + m * s.
        let dxy = _mm256_mul_ps(gather_f16(|r| blocks[r].d), _mm256_set1_ps(act.d()));
        let ms = _mm256_mul_ps(gather_f16(|r| blocks[r].m), _mm256_set1_ps(act.s()));
        _mm256_add_ps(_mm256_mul_ps(dxy, sumi), ms)
    });
}

// ---- Float rows (16 lanes, `quant::float::dot_in_lanes` order).

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f32_dot(x: &[u8], y: &[f32]) -> f32 {
    let n = (x.len() / 4).min(y.len());
    let full = n - n % 16;
    let (xs, ys) = (
        x[..4 * full].as_chunks::<32>().0,
        y[..full].as_chunks::<8>().0,
    );
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (xc, yc) in xs.chunks_exact(2).zip(ys.chunks_exact(2)) {
        lo = _mm256_add_ps(
            lo,
            _mm256_mul_ps(load_f32x8_bytes(&xc[0]), load_f32x8(&yc[0])),
        );
        hi = _mm256_add_ps(
            hi,
            _mm256_mul_ps(load_f32x8_bytes(&xc[1]), load_f32x8(&yc[1])),
        );
    }
    let mut sum = fold16(lo, hi);
    for (b, &yv) in x[4 * full..4 * n].chunks_exact(4).zip(&y[full..n]) {
        sum += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * yv;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16_dot(x: &[u8], y: &[f32]) -> f32 {
    let n = (x.len() / 2).min(y.len());
    let full = n - n % 16;
    let (xs, ys) = (
        x[..2 * full].as_chunks::<16>().0,
        y[..full].as_chunks::<8>().0,
    );
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (xc, yc) in xs.chunks_exact(2).zip(ys.chunks_exact(2)) {
        let x0 = _mm256_cvtph_ps(load_i128(&xc[0]));
        let x1 = _mm256_cvtph_ps(load_i128(&xc[1]));
        lo = _mm256_add_ps(lo, _mm256_mul_ps(x0, load_f32x8(&yc[0])));
        hi = _mm256_add_ps(hi, _mm256_mul_ps(x1, load_f32x8(&yc[1])));
    }
    let mut sum = fold16(lo, hi);
    for (b, &yv) in x[2 * full..2 * n].chunks_exact(2).zip(&y[full..n]) {
        sum += half::f16::from_le_bytes([b[0], b[1]]).to_f32() * yv;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f32_axpy(a: f32, x: &[u8], y: &mut [f32]) {
    let n = (x.len() / 4).min(y.len());
    let full = n - n % 8;
    let av = _mm256_set1_ps(a);
    let (xs, ys) = (x[..4 * full].as_chunks::<32>().0, &mut y[..full]);
    for (xc, yc) in xs.iter().zip(ys.as_chunks_mut::<8>().0) {
        let v = _mm256_add_ps(load_f32x8(yc), _mm256_mul_ps(av, load_f32x8_bytes(xc)));
        store_f32x8(yc, v);
    }
    for (b, o) in x[4 * full..4 * n].chunks_exact(4).zip(&mut y[full..n]) {
        *o += a * f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16_axpy(a: f32, x: &[u8], y: &mut [f32]) {
    let n = (x.len() / 2).min(y.len());
    let full = n - n % 8;
    let av = _mm256_set1_ps(a);
    let (xs, ys) = (x[..2 * full].as_chunks::<16>().0, &mut y[..full]);
    for (xc, yc) in xs.iter().zip(ys.as_chunks_mut::<8>().0) {
        let v = _mm256_add_ps(
            load_f32x8(yc),
            _mm256_mul_ps(av, _mm256_cvtph_ps(load_i128(xc))),
        );
        store_f32x8(yc, v);
    }
    for (b, o) in x[2 * full..2 * n].chunks_exact(2).zip(&mut y[full..n]) {
        *o += a * half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

// ---- Attention over f16 rows.

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16_scores(x: &[u8], stride: usize, q: &[f32], scale: f32, out: &mut [f32]) {
    for (t, o) in out.iter_mut().enumerate() {
        match crate::simd::strided_row(x, t, stride, q.len(), 2) {
            Some(row) => *o = f16_dot(row, q) * scale,
            None => return,
        }
    }
}

/// `out += sum_t w[t] * row t`: columns in blocks of 64 held in 8 registers while the rows
/// stream by, then 8 at a time, then one at a time; each element sums in order of `t` (as
/// `axpy_f16` row after row does).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16_mix(x: &[u8], stride: usize, w: &[f32], out: &mut [f32]) {
    let d = out.len();
    // Rows that lie inside `x`.
    let rows = w
        .iter()
        .enumerate()
        .take_while(|&(t, _)| crate::simd::strided_row(x, t, stride, d, 2).is_some())
        .count();
    let row = |t: usize| crate::simd::strided_row(x, t, stride, d, 2).unwrap_or(&[]);
    let (blocks, rest) = out.as_chunks_mut::<64>();
    for (b, o) in blocks.iter_mut().enumerate() {
        let mut acc: [__m256; 8] = std::array::from_fn(|k| load_f32x8(&o.as_chunks::<8>().0[k]));
        for (t, &a) in w.iter().enumerate().take(rows) {
            let av = _mm256_set1_ps(a);
            let Some(v) = row(t).get(128 * b..128 * b + 128) else {
                continue;
            };
            for (acc, c) in acc.iter_mut().zip(v.as_chunks::<16>().0) {
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(av, _mm256_cvtph_ps(load_i128(c))));
            }
        }
        for (o, acc) in o.as_chunks_mut::<8>().0.iter_mut().zip(acc) {
            store_f32x8(o, acc);
        }
    }
    let done = blocks.len() * 64;
    let (eights, tail) = rest.as_chunks_mut::<8>();
    for (j, o) in eights.iter_mut().enumerate() {
        let col = done + 8 * j;
        let mut acc = load_f32x8(o);
        for (t, &a) in w.iter().enumerate().take(rows) {
            let Some(Ok(c)) = row(t).get(2 * col..2 * col + 16).map(<&[u8; 16]>::try_from) else {
                continue;
            };
            acc = _mm256_add_ps(
                acc,
                _mm256_mul_ps(_mm256_set1_ps(a), _mm256_cvtph_ps(load_i128(c))),
            );
        }
        store_f32x8(o, acc);
    }
    let col0 = done + 8 * eights.len();
    for (j, o) in tail.iter_mut().enumerate() {
        let col = col0 + j;
        let mut acc = *o;
        for (t, &a) in w.iter().enumerate().take(rows) {
            if let Some(&[lo, hi]) = row(t).get(2 * col..2 * col + 2) {
                acc += a * half::f16::from_le_bytes([lo, hi]).to_f32();
            }
        }
        *o = acc;
    }
}

// ---- Q5_0 (Q8_0 activations), Q4_K and Q6_K (Q8_K activations), bf16 rows.

/// The 32 fifth bits of a Q5_0 block as bytes `0x10` (set) or 0, in element order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_high_bits(qh: &[u8; 4]) -> __m256i {
    let v = _mm256_set1_epi32(i32::from_le_bytes(*qh));
    // Byte j of the result takes byte j / 8 of qh (each 128-bit lane holds all 4 bytes).
    let pick = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let bytes = _mm256_and_si256(_mm256_shuffle_epi8(v, pick), bit);
    _mm256_and_si256(_mm256_cmpeq_epi8(bytes, bit), _mm256_set1_epi8(0x10))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_0_rows(w: &[BlockQ5_0], a: Q8Row<'_>, y: &mut [f32]) {
    let ones = _mm256_set1_epi16(1);
    let (ab, ad, asum) = (a.blocks(), a.d(), a.sum());
    by_eight(w, a.len(), y, |rows, b| {
        let (Some(act), Some(&dy), Some(&s)) = (ab.get(b), ad.get(b), asum.get(b)) else {
            return _mm256_setzero_ps();
        };
        let av = load_i8x32(&act.qs);
        let blocks: [&BlockQ5_0; 8] = std::array::from_fn(|r| &rows[r][b]);
        // Per row: levels 0..31 (unsigned) times activations, pairs <= 2 * 31 * 128 = 7936.
        let p: [__m256i; 8] = std::array::from_fn(|r| {
            let q = _mm256_or_si256(nibbles(&blocks[r].qs), q5_high_bits(&blocks[r].qh));
            _mm256_madd_epi16(_mm256_maddubs_epi16(q, av), ones)
        });
        let sumi = _mm256_sub_epi32(transpose_sum(&p), _mm256_set1_epi32(16 * s));
        // Reference (q5_0): (dx * dy) * sumi as f32.
        let dxy = _mm256_mul_ps(gather_f16(|r| blocks[r].d), _mm256_set1_ps(dy));
        _mm256_mul_ps(dxy, _mm256_cvtepi32_ps(sumi))
    });
}

/// 16 signed byte products `a[i] * b[i]` (each |.| <= 128 * 128) as i16: `a`, `b` the
/// 16-byte halves, widened (`a` unsigned if `unsigned_a`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn products16(a: __m128i, b: __m128i, unsigned_a: bool) -> __m256i {
    let aw = if unsigned_a {
        _mm256_cvtepu8_epi16(a)
    } else {
        _mm256_cvtepi8_epi16(a)
    };
    _mm256_mullo_epi16(aw, _mm256_cvtepi8_epi16(b))
}

/// The i32 lanes `l` (0..8) of 16 i16 lanes `m`: lane `m` and lane `m + 8` added, so that
/// lane `l` holds the elements `e` with `e % 8 == l` (the lanes of ggml's generic k-quant
/// dot).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fold_mod8(v: __m256i) -> __m256i {
    _mm256_add_epi32(
        _mm256_cvtepi16_epi32(_mm256_castsi256_si128(v)),
        _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(v)),
    )
}

/// The float part of the k-quant dots, as `k_common::fold8`: `sums += d * aux32` per block,
/// `sumf -= min_term` per block, then the 8 lanes added to `sumf` in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fold8_finish(sums: __m256, sumf: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    store_f32x8(&mut lanes, sums);
    let mut s = sumf;
    for l in lanes {
        s += l;
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_k_rows(w: &[BlockQ4K], a: &[BlockQ8K], y: &mut [f32]) {
    let nb = a.len();
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let m4 = _mm256_set1_epi8(0x0F);
    for (out, row) in y.iter_mut().zip(w.chunks_exact(nb)) {
        let mut sums = _mm256_setzero_ps();
        let mut sumf = 0.0f32;
        for (bx, by) in row.iter().zip(a) {
            let sm: [(u8, u8); 8] = std::array::from_fn(|g| bx.scale_min(g));
            let sumi: i32 = (0..16).map(|j| by.bsum(j) * i32::from(sm[j / 2].1)).sum();
            let mut aux = _mm256_setzero_si256();
            for (c, chunk) in bx.qs.as_chunks::<32>().0.iter().enumerate() {
                let raw = load_u8x32(chunk);
                let halves = [
                    _mm256_and_si256(raw, m4),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4),
                ];
                for (h, q) in halves.into_iter().enumerate() {
                    let g = 2 * c + h;
                    let Some(a8) = by.qs.as_chunks::<32>().0.get(g) else {
                        continue;
                    };
                    let av = load_i8x32(a8);
                    // Levels 0..15 times activations: |p| <= 15 * 128; two added <= 3840.
                    let p0 =
                        products16(_mm256_castsi256_si128(q), _mm256_castsi256_si128(av), true);
                    let p1 = products16(
                        _mm256_extracti128_si256::<1>(q),
                        _mm256_extracti128_si256::<1>(av),
                        true,
                    );
                    let t = fold_mod8(_mm256_add_epi16(p0, p1));
                    aux = _mm256_add_epi32(
                        aux,
                        _mm256_mullo_epi32(t, _mm256_set1_epi32(i32::from(sm[g].0))),
                    );
                }
            }
            // Reference (q4_k): sums += (f16(x.d) * y.d) * aux32; sumf -= dmin * sumi.
            let d = bx.d() * by.d();
            sums = _mm256_add_ps(
                sums,
                _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(aux)),
            );
            let dmin = bx.dmin() * by.d();
            sumf -= dmin * sumi as f32;
        }
        *out = fold8_finish(sums, sumf);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q6_k_rows(w: &[BlockQ6K], a: &[BlockQ8K], y: &mut [f32]) {
    let nb = a.len();
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(0x03);
    let off = _mm256_set1_epi8(32);
    for (out, row) in y.iter_mut().zip(w.chunks_exact(nb)) {
        let mut sums = _mm256_setzero_ps();
        for (bx, by) in row.iter().zip(a) {
            let mut aux = _mm256_setzero_si256();
            let ql = bx.ql.as_chunks::<32>().0;
            let qh = bx.qh.as_chunks::<32>().0;
            let a8 = by.qs.as_chunks::<32>().0;
            for n in 0..2 {
                let (Some(l0), Some(l1), Some(h)) = (ql.get(2 * n), ql.get(2 * n + 1), qh.get(n))
                else {
                    continue;
                };
                let (l0, l1, h) = (load_u8x32(l0), load_u8x32(l1), load_u8x32(h));
                let nibs = [
                    _mm256_and_si256(l0, m4),
                    _mm256_and_si256(l1, m4),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(l0), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(l1), m4),
                ];
                let highs = [
                    _mm256_and_si256(h, m2),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(h), m2),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(h), m2),
                    _mm256_and_si256(_mm256_srli_epi16::<6>(h), m2),
                ];
                for k in 0..4 {
                    let Some(av) = a8.get(4 * n + k) else {
                        continue;
                    };
                    let av = load_i8x32(av);
                    // q - 32 in -32..=31 (the high bits, <= 3, shifted within each byte).
                    let q = _mm256_sub_epi8(
                        _mm256_or_si256(nibs[k], _mm256_slli_epi16::<4>(highs[k])),
                        off,
                    );
                    // Two groups of 16, each with its own scale; |p| <= 32 * 128.
                    let g = 8 * n + 2 * k;
                    let p0 =
                        products16(_mm256_castsi256_si128(q), _mm256_castsi256_si128(av), false);
                    let p1 = products16(
                        _mm256_extracti128_si256::<1>(q),
                        _mm256_extracti128_si256::<1>(av),
                        false,
                    );
                    let s0 = _mm256_set1_epi32(i32::from(bx.scales[g]));
                    let s1 = _mm256_set1_epi32(i32::from(bx.scales[g + 1]));
                    aux = _mm256_add_epi32(aux, _mm256_mullo_epi32(fold_mod8(p0), s0));
                    aux = _mm256_add_epi32(aux, _mm256_mullo_epi32(fold_mod8(p1), s1));
                }
            }
            // Reference (q6_k): sums += (f16(x.d) * y.d) * aux32.
            let d = bx.d() * by.d();
            sums = _mm256_add_ps(
                sums,
                _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(aux)),
            );
        }
        *out = fold8_finish(sums, 0.0);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bf16_dot(x: &[u8], y: &[f32]) -> f32 {
    let n = (x.len() / 2).min(y.len());
    let full = n - n % 16;
    let (xs, ys) = (
        x[..2 * full].as_chunks::<16>().0,
        y[..full].as_chunks::<8>().0,
    );
    // bf16 -> f32: the 16 bits shifted to the top of a 32-bit lane (exact).
    let widen = |c: &[u8; 16]| {
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load_i128(c))))
    };
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (xc, yc) in xs.chunks_exact(2).zip(ys.chunks_exact(2)) {
        lo = _mm256_add_ps(lo, _mm256_mul_ps(widen(&xc[0]), load_f32x8(&yc[0])));
        hi = _mm256_add_ps(hi, _mm256_mul_ps(widen(&xc[1]), load_f32x8(&yc[1])));
    }
    let mut sum = fold16(lo, hi);
    for (b, &yv) in x[2 * full..2 * n].chunks_exact(2).zip(&y[full..n]) {
        sum += crate::quant::float::bf16_to_f32(u16::from_le_bytes([b[0], b[1]])) * yv;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_k_rows(w: &[BlockQ5K], a: &[BlockQ8K], y: &mut [f32]) {
    let nb = a.len();
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    for (out, row) in y.iter_mut().zip(w.chunks_exact(nb)) {
        let mut sums = _mm256_setzero_ps();
        let mut sumf = 0.0f32;
        for (bx, by) in row.iter().zip(a) {
            let sm: [(u8, u8); 8] = std::array::from_fn(|g| bx.scale_min(g));
            let sumi: i32 = (0..16).map(|j| by.bsum(j) * i32::from(sm[j / 2].1)).sum();
            let qh = load_u8x32(&bx.qh);
            let mut aux = _mm256_setzero_si256();
            for (c, chunk) in bx.qs.as_chunks::<32>().0.iter().enumerate() {
                let raw = load_u8x32(chunk);
                let nibs = [
                    _mm256_and_si256(raw, m4),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4),
                ];
                for (h, nib) in nibs.into_iter().enumerate() {
                    let g = 2 * c + h;
                    let Some(a8) = by.qs.as_chunks::<32>().0.get(g) else {
                        continue;
                    };
                    // The fifth bit of group g is bit g of each qh byte (a shift within the
                    // 16-bit lanes keeps bit g of each byte in that byte's bit 0).
                    let bit =
                        _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(g as i32)), one);
                    let q = _mm256_or_si256(nib, _mm256_slli_epi16::<4>(bit));
                    let av = load_i8x32(a8);
                    // Levels 0..31 times activations: |p| <= 31 * 128; two added <= 7936.
                    let p0 =
                        products16(_mm256_castsi256_si128(q), _mm256_castsi256_si128(av), true);
                    let p1 = products16(
                        _mm256_extracti128_si256::<1>(q),
                        _mm256_extracti128_si256::<1>(av),
                        true,
                    );
                    let t = fold_mod8(_mm256_add_epi16(p0, p1));
                    aux = _mm256_add_epi32(
                        aux,
                        _mm256_mullo_epi32(t, _mm256_set1_epi32(i32::from(sm[g].0))),
                    );
                }
            }
            // Reference (q5_k): as q4_k.
            let d = bx.d() * by.d();
            sums = _mm256_add_ps(
                sums,
                _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(aux)),
            );
            let dmin = bx.dmin() * by.d();
            sumf -= dmin * sumi as f32;
        }
        *out = fold8_finish(sums, sumf);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn iq4_nl_rows(w: &[BlockIq4Nl], a: Q8Row<'_>, y: &mut [f32]) {
    let ones = _mm256_set1_epi16(1);
    // The table in both 128-bit lanes, for `vpshufb` (indices 0..15).
    let table = {
        let t = crate::quant::iq4_nl::KVALUES_IQ4NL;
        let b: [u8; 16] = t.map(|v| v as u8);
        let lane = load_i128(&b);
        _mm256_set_m128i(lane, lane)
    };
    let (ab, ad) = (a.blocks(), a.d());
    by_eight(w, a.len(), y, |rows, b| {
        let (Some(act), Some(&dy)) = (ab.get(b), ad.get(b)) else {
            return _mm256_setzero_ps();
        };
        let av = load_i8x32(&act.qs);
        let blocks: [&BlockIq4Nl; 8] = std::array::from_fn(|r| &rows[r][b]);
        let p: [__m256i; 8] = std::array::from_fn(|r| {
            // Table values (-127..=113) times activations as |v| * (a * sign(v)): pairs at
            // most 2 * 127 * 127, no saturation.
            let v = _mm256_shuffle_epi8(table, nibbles(&blocks[r].qs));
            let prod = _mm256_maddubs_epi16(_mm256_abs_epi8(v), _mm256_sign_epi8(av, v));
            _mm256_madd_epi16(prod, ones)
        });
        // Reference (iq4_nl): (f16(y.d) * f16(x.d)) * sumi.
        let d = _mm256_mul_ps(_mm256_set1_ps(dy), gather_f16(|r| blocks[r].d));
        _mm256_mul_ps(d, _mm256_cvtepi32_ps(transpose_sum(&p)))
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_1_rows(w: &[BlockQ5_1], a: &[BlockQ8_1], y: &mut [f32]) {
    let ones = _mm256_set1_epi16(1);
    by_eight(w, a.len(), y, |rows, b| {
        let Some(act) = a.get(b) else {
            return _mm256_setzero_ps();
        };
        let av = load_i8x32(&act.qs);
        let blocks: [&BlockQ5_1; 8] = std::array::from_fn(|r| &rows[r][b]);
        // Levels 0..31 (unsigned) times activations, pairs <= 2 * 31 * 128.
        let p: [__m256i; 8] = std::array::from_fn(|r| {
            let q = _mm256_or_si256(nibbles(&blocks[r].qs), q5_high_bits(&blocks[r].qh));
            _mm256_madd_epi16(_mm256_maddubs_epi16(q, av), ones)
        });
        let sumi = _mm256_cvtepi32_ps(transpose_sum(&p));
        // Reference (q5_1): (dx * dy) * sumi as f32 + m * s.
        let dxy = _mm256_mul_ps(gather_f16(|r| blocks[r].d), _mm256_set1_ps(act.d()));
        let ms = _mm256_mul_ps(gather_f16(|r| blocks[r].m), _mm256_set1_ps(act.s()));
        _mm256_add_ps(_mm256_mul_ps(dxy, sumi), ms)
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q3_k_rows(w: &[BlockQ3K], a: &[BlockQ8K], y: &mut [f32]) {
    let nb = a.len();
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let m2 = _mm256_set1_epi8(0x03);
    let one = _mm256_set1_epi8(1);
    let four = _mm256_set1_epi8(4);
    for (out, row) in y.iter_mut().zip(w.chunks_exact(nb)) {
        let mut sums = _mm256_setzero_ps();
        for (bx, by) in row.iter().zip(a) {
            let sc = bx.scales();
            let hm = load_u8x32(&bx.hmask);
            let qs = bx.qs.as_chunks::<32>().0;
            let a8 = by.qs.as_chunks::<32>().0;
            let mut aux = _mm256_setzero_si256();
            for (n, q) in qs.iter().enumerate() {
                let q = load_u8x32(q);
                for s in 0..4 {
                    let Some(av) = a8.get(4 * n + s) else {
                        continue;
                    };
                    let av = load_i8x32(av);
                    // Low 2 bits (shifts within 16-bit lanes keep each byte's own bits), the
                    // high bit 4n + s of the mask: level = low - 4 + 4 * bit, in -4..=3.
                    let shift = _mm_cvtsi32_si128(2 * s as i32);
                    let low = _mm256_and_si256(_mm256_srl_epi16(q, shift), m2);
                    let bit = _mm256_and_si256(
                        _mm256_srl_epi16(hm, _mm_cvtsi32_si128((4 * n + s) as i32)),
                        one,
                    );
                    let lv =
                        _mm256_sub_epi8(_mm256_add_epi8(low, _mm256_slli_epi16::<2>(bit)), four);
                    // Two groups of 16, each with its own scale; |p| <= 4 * 128.
                    let g = 8 * n + 2 * s;
                    let p0 = products16(
                        _mm256_castsi256_si128(lv),
                        _mm256_castsi256_si128(av),
                        false,
                    );
                    let p1 = products16(
                        _mm256_extracti128_si256::<1>(lv),
                        _mm256_extracti128_si256::<1>(av),
                        false,
                    );
                    aux = _mm256_add_epi32(
                        aux,
                        _mm256_mullo_epi32(fold_mod8(p0), _mm256_set1_epi32(sc[g])),
                    );
                    aux = _mm256_add_epi32(
                        aux,
                        _mm256_mullo_epi32(fold_mod8(p1), _mm256_set1_epi32(sc[g + 1])),
                    );
                }
            }
            // Reference (q3_k): sums += (f16(x.d) * y.d) * aux32.
            let d = f16_le(bx.d) * by.d();
            sums = _mm256_add_ps(
                sums,
                _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(aux)),
            );
        }
        *out = fold8_finish(sums, 0.0);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q2_k_rows(w: &[BlockQ2K], a: &[BlockQ8K], y: &mut [f32]) {
    let nb = a.len();
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let m2 = _mm256_set1_epi8(0x03);
    for (out, row) in y.iter_mut().zip(w.chunks_exact(nb)) {
        let mut sumf = 0.0f32;
        for (bx, by) in row.iter().zip(a) {
            let summs: i32 = (0..16)
                .map(|j| by.bsum(j) * i32::from(bx.scales[j] >> 4))
                .sum();
            let qs = bx.qs.as_chunks::<32>().0;
            let a8 = by.qs.as_chunks::<32>().0;
            let mut aux = _mm256_setzero_si256();
            for (n, q) in qs.iter().enumerate() {
                let q = load_u8x32(q);
                for s in 0..4 {
                    let Some(av) = a8.get(4 * n + s) else {
                        continue;
                    };
                    let av = load_i8x32(av);
                    let lv =
                        _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * s as i32)), m2);
                    let g = 8 * n + 2 * s;
                    let s0 = _mm256_set1_epi32(i32::from(bx.scales[g] & 0xF));
                    let s1 = _mm256_set1_epi32(i32::from(bx.scales[g + 1] & 0xF));
                    let p0 =
                        products16(_mm256_castsi256_si128(lv), _mm256_castsi256_si128(av), true);
                    let p1 = products16(
                        _mm256_extracti128_si256::<1>(lv),
                        _mm256_extracti128_si256::<1>(av),
                        true,
                    );
                    aux = _mm256_add_epi32(aux, _mm256_mullo_epi32(fold_mod8(p0), s0));
                    aux = _mm256_add_epi32(aux, _mm256_mullo_epi32(fold_mod8(p1), s1));
                }
            }
            // Reference (q2_k): sumf += dall * isum - dmin * summs (isum exact).
            let isum = hsum_i32(aux);
            let dall = by.d() * f16_le(bx.d);
            let dmin = by.d() * f16_le(bx.dmin);
            sumf += dall * isum as f32 - dmin * summs as f32;
        }
        *out = sumf;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn iq4_xs_rows(w: &[BlockIq4Xs], a: &[BlockQ8K], y: &mut [f32]) {
    let nb = a.len();
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let ones = _mm256_set1_epi16(1);
    let table = {
        let b: [u8; 16] = crate::quant::iq4_nl::KVALUES_IQ4NL.map(|v| v as u8);
        let lane = load_i128(&b);
        _mm256_set_m128i(lane, lane)
    };
    for (out, row) in y.iter_mut().zip(w.chunks_exact(nb)) {
        let mut sumf = 0.0f32;
        for (bx, by) in row.iter().zip(a) {
            let d4d8 = f16_le(bx.d) * by.d();
            let qs = bx.qs.as_chunks::<16>().0;
            let a8 = by.qs.as_chunks::<32>().0;
            for (g, (q, av)) in qs.iter().zip(a8).enumerate() {
                // As iq4_nl_rows: table values times activations, exact.
                let v = _mm256_shuffle_epi8(table, nibbles(q));
                let av = load_i8x32(av);
                let prod = _mm256_maddubs_epi16(_mm256_abs_epi8(v), _mm256_sign_epi8(av, v));
                let sumi = hsum_i32(_mm256_madd_epi16(prod, ones));
                // Reference (iq4_xs): sumf += (d4d8 * (ls - 32)) * sumi, group by group.
                let dl = d4d8 * (bx.scale(g) - 32) as f32;
                sumf += dl * sumi as f32;
            }
        }
        *out = sumf;
    }
}
