//! x86-64 AVX-512 kernels with VNNI (`vpdpbusd`: four unsigned x signed byte products summed
//! straight into i32, no intermediate saturation).
//!
//! The row-interleaved products have their own 512-bit kernels here: one 64-byte load holds
//! two 4-value units of each of 8 rows (16 i32 lanes), the activations are permuted so that
//! lanes 0..8 and 8..16 see the matching units, and the two halves are added per block before
//! the float part (one row per lane, as in the AVX2 kernels). The several-row products (the
//! prompt) take two groups side by side instead, with the activations broadcast (see `gemm`
//! below). The other entries are the AVX2
//! kernels (this path requires AVX2 and F16C as well), whose results are the same.
//!
//! Safety: as in `avx2.rs`. Every function that uses AVX-512 is `#[target_feature]` with the
//! features that [`kernels`] checks (AVX-512 F/BW/VL/VNNI, and AVX2, FMA, F16C for the AVX2
//! functions it calls) before it hands out the private table `KERNELS`; the table's wrappers
//! are the only callers.
#![allow(unsafe_code)]

use super::avx2;
use crate::act::Q8Row;
use crate::isa::Isa;
use crate::quant::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_0x8, BlockQ4_1,
    BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_0x8, BlockQ8_1, QK,
};
use crate::simd::Kernels;
use crate::KernelError;
use core::arch::x86_64::*;

/// The AVX-512 kernels, if this CPU has AVX-512 F, BW, VL and VNNI, and AVX2, FMA, F16C.
pub fn kernels() -> Option<&'static Kernels> {
    if is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        Some(&KERNELS)
    } else {
        None
    }
}

/// Reachable only through [`kernels`] (see the module docs).
static KERNELS: Kernels = Kernels {
    isa: Isa::Avx512,
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

// ---- Safe wrappers. Each `unsafe` call relies on the same fact: the table is handed out
// ---- only after every feature of this path (which include AVX2, FMA and F16C) was detected.

fn quantize_q8_0(
    x: &[f32],
    blocks: &mut [BlockQ8_0],
    d: &mut [f32],
    sum: &mut [i32],
) -> Result<(), KernelError> {
    // SAFETY: reachable only through `kernels()`, after the feature check.
    if unsafe { avx2::q8_0_fast(x, blocks, d, sum) } {
        Ok(())
    } else {
        crate::simd::scalar::quantize_q8_0(x, blocks, d, sum)
    }
}

fn quantize_q8_1(x: &[f32], blocks: &mut [BlockQ8_1]) -> Result<(), KernelError> {
    // SAFETY: as in `quantize_q8_0`.
    if unsafe { avx2::q8_1_fast(x, blocks) } {
        Ok(())
    } else {
        crate::quant::RowBlock::quantize_row(x, blocks)
    }
}

fn rows_q4_0(w: &[BlockQ4_0], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { avx2::q4_0_rows(w, a, y) }
}

fn rows_q8_0(w: &[BlockQ8_0], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { avx2::q8_0_rows(w, a, y) }
}

fn rows_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { avx2::q4_1_rows(w, a, y) }
}

fn rows_q5_0(w: &[BlockQ5_0], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0` (the AVX2 kernel; this path has AVX2, FMA, F16C).
    unsafe { avx2::q5_0_rows(w, a, y) }
}

// The k-quants Q4_K, Q5_K and Q6_K have 512-bit kernels of their own (`avx512_k.rs`).
fn rows_q4_k(w: &[BlockQ4K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `rows_q5_0` (the AVX-512 features are checked as well).
    unsafe { super::avx512_k::q4_k_rows(w, a, y) }
}

fn rows_q5_k(w: &[BlockQ5K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `rows_q5_0`.
    unsafe { super::avx512_k::q5_k_rows(w, a, y) }
}

fn rows_iq4_nl(w: &[BlockIq4Nl], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `rows_q5_0`.
    unsafe { avx2::iq4_nl_rows(w, a, y) }
}

fn rows_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1], y: &mut [f32]) {
    // SAFETY: as in `rows_q5_0`.
    unsafe { avx2::q5_1_rows(w, a, y) }
}

fn rows_q3_k(w: &[BlockQ3K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `rows_q5_0`.
    unsafe { avx2::q3_k_rows(w, a, y) }
}

fn rows_q2_k(w: &[BlockQ2K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `rows_q5_0`.
    unsafe { avx2::q2_k_rows(w, a, y) }
}

fn rows_iq4_xs(w: &[BlockIq4Xs], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `rows_q5_0`.
    unsafe { avx2::iq4_xs_rows(w, a, y) }
}

fn rows_q6_k(w: &[BlockQ6K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `rows_q5_0`.
    unsafe { super::avx512_k::q6_k_rows(w, a, y) }
}

fn dot_bf16(x: &[u8], y: &[f32]) -> f32 {
    // SAFETY: as in `rows_q5_0`.
    unsafe { avx2::bf16_dot(x, y) }
}

fn rows_q4_0x8(w: &[BlockQ4_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q4_0x8_rows(w, a, y) }
}

fn rows_q8_0x8(w: &[BlockQ8_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q8_0x8_rows(w, a, y) }
}

fn gemm_q4_0x8(w: &[BlockQ4_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { gemm::<BlockQ4_0x8>(w, a, y) }
}

fn gemm_q8_0x8(w: &[BlockQ8_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { gemm::<BlockQ8_0x8>(w, a, y) }
}

fn dot_f32(x: &[u8], y: &[f32]) -> f32 {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { avx2::f32_dot(x, y) }
}

fn dot_f16(x: &[u8], y: &[f32]) -> f32 {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { avx2::f16_dot(x, y) }
}

fn axpy_f32(a: f32, x: &[u8], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { avx2::f32_axpy(a, x, y) }
}

fn axpy_f16(a: f32, x: &[u8], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { avx2::f16_axpy(a, x, y) }
}

fn scores_f16(x: &[u8], stride: usize, q: &[f32], scale: f32, out: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { f16_scores(x, stride, q, scale, out) }
}

fn mix_f16(x: &[u8], stride: usize, w: &[f32], out: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { f16_mix(x, stride, w, out) }
}

// ---- Loads.

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_u8x64(p: &[[u8; 32]; 2]) -> __m512i {
    // SAFETY: `[[u8; 32]; 2]` is 64 contiguous readable bytes; `loadu` is unaligned.
    unsafe { _mm512_loadu_si512(p.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_i8x64(p: &[[i8; 32]; 2]) -> __m512i {
    // SAFETY: 64 contiguous readable bytes; `loadu` is unaligned.
    unsafe { _mm512_loadu_si512(p.as_ptr().cast()) }
}

/// The activation block's 8 four-value groups `[g(i) x 8 lanes, g(j) x 8 lanes]` for the
/// four (i, j) pairs in `pairs`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn act_pairs(qs: &[i8; QK], pairs: [(i32, i32); 4]) -> [__m512i; 4] {
    let a = _mm512_broadcast_i64x4(avx2::load_i8x32(qs));
    pairs.map(|(i, j)| {
        let idx = _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_set1_epi32(i)),
            _mm256_set1_epi32(j),
        );
        _mm512_permutexvar_epi32(idx, a)
    })
}

/// Lane `r` = lane `r` + lane `r + 8` (the two units of row `r`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn fold_halves(v: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
}

// ---- Row-interleaved products (one activation row: decode).
//
// Two 8-row groups side by side, as in the prompt tiles below: each 512-bit weight vector
// holds one 4-byte unit of 16 rows (group `g` in lanes 0..8, group `g + 1` in lanes 8..16),
// and the activation operand of `vpdpbusd` is the matching 4 activation bytes broadcast from
// memory. Nothing per block depends on the group but the weights: no activation permutes,
// and one lane per row, so no halves to fold. A last group without a partner goes through
// the one-group kernels (`q4_0x8_group`, `q8_0x8_group`). The integer sums are exact in any
// order and the float part is per lane `acc + (sumi * dx) * dy` (q4_0) or
// `acc + sumi * (dx * dy)` (q8_0) in block order, so every path gives the scalar twin's bits.

/// Q4_0x8 rows, 16 at a time (see above).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4_0x8_rows(w: &[BlockQ4_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    let nb = a.len();
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let groups = (y.len() / 8).min(w.len() / nb);
    let (pairs, _) = y[..16 * (groups / 2)].as_chunks_mut::<16>();
    for (out, wp) in pairs.iter_mut().zip(w.chunks_exact(2 * nb)) {
        let (wg, wh) = wp.split_at(nb);
        q4_0x8_pair(wg, wh, a, out);
    }
    if groups % 2 == 1 {
        let g = groups - 1;
        q4_0x8_group(&w[g * nb..][..nb], a, &mut y[8 * g..8 * g + 8]);
    }
}

/// Outputs of the group pair `(wg, wh)` (each `a.len()` blocks). The high nibbles are
/// masked in place (`v & 0xF0` = 16 x nibble), summed apart and divided by 16 at the end
/// (exact: every term is a multiple of 16), which saves the four shifts per block pair.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4_0x8_pair(wg: &[BlockQ4_0x8], wh: &[BlockQ4_0x8], a: Q8Row<'_>, out: &mut [f32; 16]) {
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = _mm512_setzero_ps();
    let act = a.blocks().iter().zip(a.d()).zip(a.sum());
    for ((g, h), ((ab, &dy), &asum)) in wg.iter().zip(wh).zip(act) {
        avx2::prefetch_ahead(g);
        avx2::prefetch_ahead(h);
        let u = avx2::act_groups(&ab.qs);
        let mut lo = _mm512_set1_epi32(-8 * asum);
        let mut hi = _mm512_setzero_si512();
        for c in 0..4 {
            let v = join_u8(&g.qs[c], &h.qs[c]);
            lo = _mm512_dpbusd_epi32(lo, _mm512_and_si512(v, m4), _mm512_set1_epi32(u[c]));
            hi = _mm512_dpbusd_epi32(hi, _mm512_andnot_si512(m4, v), _mm512_set1_epi32(u[4 + c]));
        }
        let sumi = _mm512_add_epi32(lo, _mm512_srai_epi32::<4>(hi));
        acc = <BlockQ4_0x8 as Tile>::step(acc, sumi, join_scales(&g.d, &h.d), dy);
    }
    store_f32x16(out, acc);
}

/// One group of Q4_0x8 (lanes `r` and `r + 8` hold two units of row `r`, folded per block).
/// Chunk pair (0, 1) holds values 0..8 (low nibbles) and 16..24 (high nibbles), chunk pair
/// (2, 3) values 8..16 and 24..32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4_0x8_group(group: &[BlockQ4_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    let Ok(out) = <&mut [f32; 8]>::try_from(y) else {
        return;
    };
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    for (((blk, ab), &dy), &asum) in group.iter().zip(a.blocks()).zip(a.d()).zip(a.sum()) {
        let [a_lo01, a_hi01, a_lo23, a_hi23] = act_pairs(&ab.qs, [(0, 1), (4, 5), (2, 3), (6, 7)]);
        avx2::prefetch_ahead(blk);
        let (c01, c23) = chunk_pairs(&blk.qs);
        let v01 = load_u8x64(c01);
        let v23 = load_u8x64(c23);
        let lo01 = _mm512_and_si512(v01, m4);
        let hi01 = _mm512_and_si512(_mm512_srli_epi16::<4>(v01), m4);
        let lo23 = _mm512_and_si512(v23, m4);
        let hi23 = _mm512_and_si512(_mm512_srli_epi16::<4>(v23), m4);
        let mut p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo01, a_lo01);
        p = _mm512_dpbusd_epi32(p, hi01, a_hi01);
        p = _mm512_dpbusd_epi32(p, lo23, a_lo23);
        p = _mm512_dpbusd_epi32(p, hi23, a_hi23);
        let sumi = _mm256_sub_epi32(fold_halves(p), _mm256_set1_epi32(8 * asum));
        // Reference (q4_0): sumi as f32 * dx * dy.
        let t = _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), avx2::load_scales(&blk.d));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(t, _mm256_set1_ps(dy)));
    }
    avx2::store_f32x8(out, acc);
}

/// Q8_0x8 rows, 16 at a time (see above).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_0x8_rows(w: &[BlockQ8_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    let nb = a.len();
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let groups = (y.len() / 8).min(w.len() / nb);
    let (pairs, _) = y[..16 * (groups / 2)].as_chunks_mut::<16>();
    for (out, wp) in pairs.iter_mut().zip(w.chunks_exact(2 * nb)) {
        let (wg, wh) = wp.split_at(nb);
        q8_0x8_pair(wg, wh, a, out);
    }
    if groups % 2 == 1 {
        let g = groups - 1;
        q8_0x8_group(&w[g * nb..][..nb], a, &mut y[8 * g..8 * g + 8]);
    }
}

/// Outputs of the group pair `(wg, wh)` (each `a.len()` blocks); two partial sums per block
/// (shorter dependency chains), the first starting from the unsigned weights' offset.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_0x8_pair(wg: &[BlockQ8_0x8], wh: &[BlockQ8_0x8], a: Q8Row<'_>, out: &mut [f32; 16]) {
    let mut acc = _mm512_setzero_ps();
    let act = a.blocks().iter().zip(a.d()).zip(a.sum());
    for ((g, h), ((ab, &dy), &asum)) in wg.iter().zip(wh).zip(act) {
        avx2::prefetch_ahead(g);
        avx2::prefetch_ahead(h);
        let u = avx2::act_groups(&ab.qs);
        let units = <BlockQ8_0x8 as Tile>::units(g, h);
        let mut p0 = _mm512_set1_epi32(-128 * asum);
        let mut p1 = _mm512_setzero_si512();
        for c in 0..4 {
            p0 = _mm512_dpbusd_epi32(p0, units[2 * c], _mm512_set1_epi32(u[2 * c]));
            p1 = _mm512_dpbusd_epi32(p1, units[2 * c + 1], _mm512_set1_epi32(u[2 * c + 1]));
        }
        let sumi = _mm512_add_epi32(p0, p1);
        acc = <BlockQ8_0x8 as Tile>::step(acc, sumi, join_scales(&g.d, &h.d), dy);
    }
    store_f32x16(out, acc);
}

/// One group of Q8_0x8: chunk pair (2k, 2k + 1) holds values 8k..8k + 8. The weights are
/// made unsigned by adding 128 (`xor 0x80`), which adds `128 * sum(a)` to each row's sum.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_0x8_group(group: &[BlockQ8_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    let Ok(out) = <&mut [f32; 8]>::try_from(y) else {
        return;
    };
    let flip = _mm512_set1_epi8(-128);
    let mut acc = _mm256_setzero_ps();
    for (((blk, ab), &dy), &asum) in group.iter().zip(a.blocks()).zip(a.d()).zip(a.sum()) {
        avx2::prefetch_ahead(blk);
        let acts = act_pairs(&ab.qs, [(0, 1), (2, 3), (4, 5), (6, 7)]);
        let mut p = _mm512_setzero_si512();
        for (pair, act) in blk.qs.as_chunks::<2>().0.iter().zip(acts) {
            let u = _mm512_xor_si512(load_i8x64(pair), flip);
            p = _mm512_dpbusd_epi32(p, u, act);
        }
        let sumi = _mm256_sub_epi32(fold_halves(p), _mm256_set1_epi32(128 * asum));
        // Reference (q8_0): sumi as f32 * (dx * dy).
        let dxy = _mm256_mul_ps(avx2::load_scales(&blk.d), _mm256_set1_ps(dy));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), dxy));
    }
    avx2::store_f32x8(out, acc);
}

// ---- Several activation rows at once (the prompt).
//
// Two 8-row groups side by side: each 512-bit weight vector holds one 4-byte unit of the 16
// rows (chunk `c` of group `g` in lanes 0..8, of group `g + 1` in lanes 8..16), so the
// activation operand of `vpdpbusd` is the matching 4 activation bytes broadcast to every lane
// (no permutes, and one lane per weight row: no folding). The weights of a block are decoded
// once for `R` activation rows. The integer sums are exact whatever their order, and the float
// part is the row kernels' per lane, so the bits are theirs.

/// A row-interleaved block type as the tiles read it.
trait Tile: Sized {
    /// The 16 rows' unsigned weight units of group blocks `g` and `h`, unit `k` in
    /// `out[k]` (the activation unit it multiplies is unit `k` of the block: 8 units of 4
    /// values, one `vpdpbusd` each per activation row).
    fn units(g: &Self, h: &Self) -> [__m512i; 8];
    /// The 16 scales as f32.
    fn scales(g: &Self, h: &Self) -> __m512;
    /// Added to every sum by the unsigned weights: `OFFSET * sum(activations)`.
    const OFFSET: i32;
    /// The float part: the accumulator after one block (`sumi` the exact integer dot).
    fn step(acc: __m512, sumi: __m512i, dx: __m512, dy: f32) -> __m512;
    /// The one-row kernel (for a group without a partner).
    fn rows(w: &[Self], a: Q8Row<'_>, y: &mut [f32]);
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn join_u8(g: &[u8; 32], h: &[u8; 32]) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(avx2::load_u8x32(g)),
        avx2::load_u8x32(h),
    )
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn join_scales(g: &[[u8; 2]; 8], h: &[[u8; 2]; 8]) -> __m512 {
    // SAFETY: `[[u8; 2]; 8]` is 16 contiguous readable bytes; `loadu` is unaligned.
    let (lo, hi) = unsafe {
        (
            _mm_loadu_si128(g.as_ptr().cast()),
            _mm_loadu_si128(h.as_ptr().cast()),
        )
    };
    _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi))
}

impl Tile for BlockQ4_0x8 {
    const OFFSET: i32 = 8;

    #[inline(always)]
    fn units(g: &Self, h: &Self) -> [__m512i; 8] {
        // SAFETY: only inlined into `gemm`'s tile, which has every feature of this path.
        unsafe {
            let m4 = _mm512_set1_epi8(0x0F);
            let v: [__m512i; 4] = std::array::from_fn(|c| join_u8(&g.qs[c], &h.qs[c]));
            // Chunk c: low nibbles are elements 4c.., unit c; high nibbles unit 4 + c.
            std::array::from_fn(|k| {
                if k < 4 {
                    _mm512_and_si512(v[k], m4)
                } else {
                    _mm512_and_si512(_mm512_srli_epi16::<4>(v[k - 4]), m4)
                }
            })
        }
    }

    #[inline(always)]
    fn scales(g: &Self, h: &Self) -> __m512 {
        // SAFETY: as in `units`.
        unsafe { join_scales(&g.d, &h.d) }
    }

    #[inline(always)]
    fn step(acc: __m512, sumi: __m512i, dx: __m512, dy: f32) -> __m512 {
        // SAFETY: as in `units`.
        unsafe {
            // Reference (q4_0): sumi as f32 * dx * dy.
            let t = _mm512_mul_ps(_mm512_cvtepi32_ps(sumi), dx);
            _mm512_add_ps(acc, _mm512_mul_ps(t, _mm512_set1_ps(dy)))
        }
    }

    fn rows(w: &[Self], a: Q8Row<'_>, y: &mut [f32]) {
        rows_q4_0x8(w, a, y)
    }
}

impl Tile for BlockQ8_0x8 {
    const OFFSET: i32 = 128;

    #[inline(always)]
    fn units(g: &Self, h: &Self) -> [__m512i; 8] {
        // SAFETY: as for Q4_0x8.
        unsafe {
            let flip = _mm512_set1_epi8(-128);
            std::array::from_fn(|c| {
                let v = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(avx2::load_i8x32(&g.qs[c])),
                    avx2::load_i8x32(&h.qs[c]),
                );
                _mm512_xor_si512(v, flip)
            })
        }
    }

    #[inline(always)]
    fn scales(g: &Self, h: &Self) -> __m512 {
        // SAFETY: as for Q4_0x8.
        unsafe { join_scales(&g.d, &h.d) }
    }

    #[inline(always)]
    fn step(acc: __m512, sumi: __m512i, dx: __m512, dy: f32) -> __m512 {
        // SAFETY: as for Q4_0x8.
        unsafe {
            // Reference (q8_0): sumi as f32 * (dx * dy).
            let dxy = _mm512_mul_ps(dx, _mm512_set1_ps(dy));
            _mm512_add_ps(acc, _mm512_mul_ps(_mm512_cvtepi32_ps(sumi), dxy))
        }
    }

    fn rows(w: &[Self], a: Q8Row<'_>, y: &mut [f32]) {
        rows_q8_0x8(w, a, y)
    }
}

/// Activation rows per tile.
const TILE_ROWS: usize = 4;

/// Per activation block: the unsigned weights' offset `-OFFSET * sum` and the scale, side by
/// side (one load stream per row in the tile instead of two).
#[derive(Clone, Copy)]
struct Aux {
    off: i32,
    dy: f32,
}

/// See [`crate::simd::Kernels::gemm_q4_0x8`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn gemm<W: Tile>(w: &[W], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    let n = a.len().min(y.len());
    let (a, y) = (&a[..n], &mut y[..n]);
    let nb = a.first().map_or(0, Q8Row::len);
    let groups = y.iter().map(|yi| yi.len() / 8).min().unwrap_or(0);
    let groups = groups.min(w.len().checked_div(nb).unwrap_or(groups));
    if nb == 0 || a.iter().any(|ai| ai.len() != nb) {
        return crate::simd::gemm_by_rows(W::rows, w, a, y);
    }
    let aux: Vec<Aux> = a
        .iter()
        .flat_map(|ai| {
            ai.sum().iter().zip(ai.d()).map(|(&sum, &dy)| Aux {
                off: -W::OFFSET * sum,
                dy,
            })
        })
        .collect();
    let aux: Vec<&[Aux]> = aux.chunks_exact(nb).collect();
    let qs: Vec<&[BlockQ8_0]> = a.iter().map(|ai| ai.blocks()).collect();
    for p in 0..groups / 2 {
        let (wg, wh) = (&w[2 * p * nb..][..nb], &w[(2 * p + 1) * nb..][..nb]);
        let col = 16 * p;
        let mut i = 0;
        while i + TILE_ROWS <= n {
            let rows = (&qs[i..i + TILE_ROWS], &aux[i..i + TILE_ROWS]);
            if i == 0 {
                tile::<W, TILE_ROWS, true>(wg, wh, rows, &mut y[i..i + TILE_ROWS], col);
            } else {
                tile::<W, TILE_ROWS, false>(wg, wh, rows, &mut y[i..i + TILE_ROWS], col);
            }
            i += TILE_ROWS;
        }
        if TILE_ROWS > 4 && n - i >= 4 {
            let rows = (&qs[i..i + 4], &aux[i..i + 4]);
            tile::<W, 4, false>(wg, wh, rows, &mut y[i..i + 4], col);
            i += 4;
        }
        let rows = (&qs[i..], &aux[i..]);
        match n - i {
            3 => tile::<W, 3, false>(wg, wh, rows, &mut y[i..], col),
            2 => tile::<W, 2, false>(wg, wh, rows, &mut y[i..], col),
            1 => tile::<W, 1, false>(wg, wh, rows, &mut y[i..], col),
            _ => {}
        }
    }
    if groups % 2 == 1 {
        let g = groups - 1;
        for (ai, yi) in a.iter().zip(y.iter_mut()) {
            W::rows(&w[g * nb..][..nb], *ai, &mut yi[8 * g..8 * g + 8]);
        }
    }
}

/// Outputs `col..col + 16` of `R` activation rows (their blocks and [`Aux`]) from the group
/// pair `(wg, wh)`, prefetching the weights ahead if `PF` (the first rows to pass). All of
/// equal length, and `y[r]` at least `col + 16` long (checked by `gemm`; else nothing).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile<W: Tile, const R: usize, const PF: bool>(
    wg: &[W],
    wh: &[W],
    (qs, aux): (&[&[BlockQ8_0]], &[&[Aux]]),
    y: &mut [&mut [f32]],
    col: usize,
) {
    let nb = wg.len();
    let (Ok(qs), Ok(aux)) = (
        <&[&[BlockQ8_0]; R]>::try_from(qs),
        <&[&[Aux]; R]>::try_from(aux),
    ) else {
        return;
    };
    if wh.len() != nb || qs.iter().any(|q| q.len() != nb) || aux.iter().any(|x| x.len() != nb) {
        return;
    }
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        let (g, h) = (&wg[b], &wh[b]);
        if PF {
            avx2::prefetch_ahead(g);
            avx2::prefetch_ahead(h);
        }
        let units = W::units(g, h);
        let dx = W::scales(g, h);
        for r in 0..R {
            let (ab, x) = (&qs[r][b], aux[r][b]);
            // Two independent partial sums (short dependency chains), the first starting
            // from the unsigned weights' offset; exact integers, so any order gives the same.
            let q = ab.qs.as_chunks::<4>().0;
            let unit = |k: usize| _mm512_set1_epi32(i32::from_le_bytes(q[k].map(|v| v as u8)));
            let mut p0 = _mm512_dpbusd_epi32(_mm512_set1_epi32(x.off), units[0], unit(0));
            let mut p1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), units[1], unit(1));
            p0 = _mm512_dpbusd_epi32(p0, units[2], unit(2));
            p1 = _mm512_dpbusd_epi32(p1, units[3], unit(3));
            p0 = _mm512_dpbusd_epi32(p0, units[4], unit(4));
            p1 = _mm512_dpbusd_epi32(p1, units[5], unit(5));
            p0 = _mm512_dpbusd_epi32(p0, units[6], unit(6));
            p1 = _mm512_dpbusd_epi32(p1, units[7], unit(7));
            let sumi = _mm512_add_epi32(p0, p1);
            acc[r] = W::step(acc[r], sumi, dx, x.dy);
        }
    }
    for (acc, yi) in acc.iter().zip(y.iter_mut()) {
        if let Some(out) = yi
            .get_mut(col..col + 16)
            .and_then(|o| <&mut [f32; 16]>::try_from(o).ok())
        {
            store_f32x16(out, *acc);
        }
    }
}

/// The two 64-byte halves of a Q4_0x8 block's nibbles.
#[inline]
fn chunk_pairs(qs: &[[u8; 32]; 4]) -> (&[[u8; 32]; 2], &[[u8; 32]; 2]) {
    let [p01, p23] = qs.as_chunks::<2>().0 else {
        unreachable!("4 chunks are 2 pairs")
    };
    (p01, p23)
}

// ---- Attention over f16 rows.

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_f16x16(p: &[u8; 32]) -> __m512 {
    // SAFETY: 32 readable bytes; `loadu` is unaligned.
    let h = unsafe { _mm256_loadu_si256(p.as_ptr().cast()) };
    _mm512_cvtph_ps(h)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_f32x16(p: &[f32; 16]) -> __m512 {
    // SAFETY: 16 readable f32; `loadu` is unaligned.
    unsafe { _mm512_loadu_ps(p.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn store_f32x16(p: &mut [f32; 16], v: __m512) {
    // SAFETY: 16 writable f32; `storeu` is unaligned.
    unsafe { _mm512_storeu_ps(p.as_mut_ptr(), v) }
}

/// Scores with `q` held in registers when a head is 128 wide (16 lanes, 8 registers: the
/// order of `dot_in_lanes`); other widths row by row through the AVX2 dot.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f16_scores(x: &[u8], stride: usize, q: &[f32], scale: f32, out: &mut [f32]) {
    let Ok(q128) = <&[f32; 128]>::try_from(q) else {
        return avx2::f16_scores(x, stride, q, scale, out);
    };
    let qv: [__m512; 8] = std::array::from_fn(|c| load_f32x16(&q128.as_chunks::<16>().0[c]));
    for (t, o) in out.iter_mut().enumerate() {
        let Some(Ok(row)) =
            crate::simd::strided_row(x, t, stride, 128, 2).map(<&[u8; 256]>::try_from)
        else {
            return;
        };
        let mut acc = _mm512_setzero_ps();
        for (c, &qc) in row.as_chunks::<32>().0.iter().zip(&qv) {
            acc = _mm512_add_ps(acc, _mm512_mul_ps(load_f16x16(c), qc));
        }
        let sum = avx2::fold16(
            _mm512_castps512_ps256(acc),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc))),
        );
        *o = sum * scale;
    }
}

/// The weighted sum added to a 128-wide output held in 8 registers while the rows stream by;
/// other widths through the AVX2 kernel (same bits).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn f16_mix(x: &[u8], stride: usize, w: &[f32], out: &mut [f32]) {
    let Ok(o128) = <&mut [f32; 128]>::try_from(&mut *out) else {
        return avx2::f16_mix(x, stride, w, out);
    };
    let mut acc: [__m512; 8] = std::array::from_fn(|k| load_f32x16(&o128.as_chunks::<16>().0[k]));
    for (t, &a) in w.iter().enumerate() {
        let Some(Ok(row)) =
            crate::simd::strided_row(x, t, stride, 128, 2).map(<&[u8; 256]>::try_from)
        else {
            break;
        };
        let av = _mm512_set1_ps(a);
        for (acc, c) in acc.iter_mut().zip(row.as_chunks::<32>().0) {
            *acc = _mm512_add_ps(*acc, _mm512_mul_ps(av, load_f16x16(c)));
        }
    }
    for (o, acc) in o128.as_chunks_mut::<16>().0.iter_mut().zip(acc) {
        store_f32x16(o, acc);
    }
}
