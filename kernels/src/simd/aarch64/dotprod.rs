//! aarch64 NEON kernels with the dot product instructions (`sdot`; Cortex-A76, Raspberry
//! Pi 5).
//!
//! The integer block dots use `sdot` (4 signed byte products summed into each i32 lane,
//! exact), issued through `asm!` because `vdotq_s32` is not stable Rust; everything else
//! (the row kernels' float parts, the activation quantizers, the float and attention
//! kernels) is [`super::neon`]'s, in the same order, so the results are the scalar
//! reference's bits as well.
//!
//! Safety: every function using `sdot` is `#[target_feature(enable = "neon,dotprod")]` and
//! reachable from safe code only through the private table `KERNELS`, which [`kernels`]
//! hands out after `is_aarch64_feature_detected!` proved NEON and dotprod.
#![allow(unsafe_code)]

use super::neon::{
    act_groups, act_groups_at, act_halves, axpy_f16, axpy_f32, by_four, dot_f16, dot_f32, mix_f16,
    nibbles, nibbles_minus_8, quantize_q8_0, quantize_q8_1, row_sums, scales4, scales8, scores_f16,
    split_minus_8, store8, u8_halves,
};
use crate::act::Q8Row;
use crate::isa::Isa;
use crate::quant::{BlockQ4_0, BlockQ4_0x8, BlockQ4_1, BlockQ8_0, BlockQ8_0x8, BlockQ8_1};
use crate::simd::aarch64::{dotprod_k, int_rows, neon_k};
use crate::simd::Kernels;
use core::arch::aarch64::*;

/// The dotprod kernels, if this CPU has NEON and the dot product instructions
/// (little-endian only).
pub fn kernels() -> Option<&'static Kernels> {
    if cfg!(target_endian = "little")
        && std::arch::is_aarch64_feature_detected!("neon")
        && std::arch::is_aarch64_feature_detected!("dotprod")
    {
        Some(&KERNELS)
    } else {
        None
    }
}

/// Reachable only through [`kernels`] (see the module docs).
static KERNELS: Kernels = TABLE;

/// The table's entries, also the base of the i8mm table (`super::i8mm`, handed out only after
/// NEON, dotprod and i8mm were detected); never handed out otherwise.
pub(super) const TABLE: Kernels = Kernels {
    isa: Isa::Dotprod,
    quantize_q8_0,
    quantize_q8_1,
    rows_q4_0,
    rows_q8_0,
    rows_q4_1,
    rows_q5_0: dotprod_k::rows_q5_0,
    rows_q5_1: dotprod_k::rows_q5_1,
    rows_iq4_nl: dotprod_k::rows_iq4_nl,
    rows_q2_k: dotprod_k::rows_q2_k,
    rows_q3_k: neon_k::rows_q3_k,
    rows_q4_k: neon_k::rows_q4_k,
    rows_q5_k: neon_k::rows_q5_k,
    rows_q6_k: neon_k::rows_q6_k,
    rows_iq4_xs: dotprod_k::rows_iq4_xs,
    rows_q4_0x8,
    rows_q8_0x8,
    gemm_q4_0x8,
    gemm_q8_0x8,
    dot_f32,
    dot_f16,
    dot_bf16: neon_k::dot_bf16,
    axpy_f32,
    axpy_f16,
    scores_f16,
    mix_f16,
};

// ---- Safe wrappers (the table entries). Each `unsafe` call below relies on the same fact:
// ---- the table is handed out only after NEON and dotprod were detected.

fn rows_q4_0(w: &[BlockQ4_0], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: reachable only through `kernels()`, after the NEON and dotprod checks.
    unsafe { q4_0_rows(w, a, y) }
}

fn rows_q8_0(w: &[BlockQ8_0], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `rows_q4_0`.
    unsafe { q8_0_rows(w, a, y) }
}

fn rows_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1], y: &mut [f32]) {
    // SAFETY: as in `rows_q4_0`.
    unsafe { q4_1_rows(w, a, y) }
}

fn rows_q4_0x8(w: &[BlockQ4_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `rows_q4_0`.
    unsafe { q4_0x8_rows(w, a, y) }
}

fn rows_q8_0x8(w: &[BlockQ8_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `rows_q4_0`.
    unsafe { q8_0x8_rows(w, a, y) }
}

fn gemm_q4_0x8(w: &[BlockQ4_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    // SAFETY: as in `rows_q4_0`.
    unsafe { gemm::<BlockQ4_0x8>(w, a, y) }
}

fn gemm_q8_0x8(w: &[BlockQ8_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    // SAFETY: as in `rows_q4_0`.
    unsafe { gemm::<BlockQ8_0x8>(w, a, y) }
}

/// `sdot`: lane `i` of `acc` plus the 4 products of bytes `4i..4i + 4` of `a` and `b`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub(super) fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `sdot` exists (the dotprod feature is enabled for this function, and the table
    // calling it is handed out only after detection); it reads and writes only the three
    // named registers.
    unsafe {
        core::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// The integer dots of the 8 rows of a Q4_0x8 block (nibbles minus 8) with the activation
/// groups `g`: (rows 0..4, rows 4..8).
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn q4_0x8_sums(blk: &BlockQ4_0x8, g: &[i32; 8]) -> (int32x4_t, int32x4_t) {
    let (mut s0, mut s1) = (vdupq_n_s32(0), vdupq_n_s32(0));
    for (c, chunk) in blk.qs.iter().enumerate() {
        // Byte 4r + i of the chunk: element 4c + i (low nibble) and 4c + i + 16 (high
        // nibble) of row r; `lo`/`hi` hold those activations in every 4-byte group.
        let (lo, hi) = act_groups_at(g, c);
        let (v0, v1) = u8_halves(chunk);
        let (l0, h0) = split_minus_8(v0);
        let (l1, h1) = split_minus_8(v1);
        s0 = sdot(sdot(s0, l0, lo), h0, hi);
        s1 = sdot(sdot(s1, l1, lo), h1, hi);
    }
    (s0, s1)
}

/// The integer dots of the 8 rows of a Q8_0x8 block with the activation groups `g`:
/// (rows 0..4, rows 4..8).
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn q8_0x8_sums(blk: &BlockQ8_0x8, g: &[i32; 8]) -> (int32x4_t, int32x4_t) {
    let (mut s0, mut s1) = (vdupq_n_s32(0), vdupq_n_s32(0));
    for (&gc, chunk) in g.iter().zip(&blk.qs) {
        // Bytes 4r..4r + 4 of chunk c: elements 4c..4c + 4 of row r.
        let av = vreinterpretq_s8_s32(vdupq_n_s32(gc));
        let (w0, w1) = act_halves(chunk);
        s0 = sdot(s0, w0, av);
        s1 = sdot(s1, w1, av);
    }
    (s0, s1)
}

int_rows!(#[target_feature(enable = "neon,dotprod")]; sdot, q4_0x8_sums, q8_0x8_sums);

// ---- Prompt tiles: each weight block decoded once for several activation rows.

/// Activation rows per tile: the 16 decoded weight vectors, 2 f32 accumulators per row and
/// the row's activations fit in the 32 vector registers.
const TILE_ROWS: usize = 4;
const _: () = assert!(TILE_ROWS <= 4, "`tile` unrolls up to 4 rows");

/// What the prompt tiles need of a row-interleaved weight type. Plain NEON (part of the
/// aarch64 baseline), so these are safe functions; `#[inline(always)]` puts them into the
/// tile that calls them.
pub(super) trait Tile: Sized {
    /// The weights are `stored - OFFSET`: a row's integer dot is the dot of the stored values
    /// minus `OFFSET` times the activation block's sum (exact).
    const OFFSET: i32;

    /// The stored values of the block as 8 units: unit `k` holds, for rows 0..4 and rows 4..8,
    /// one row per 32-bit lane, the 4 values that multiply the activation group `k`
    /// (elements `4k..4k + 4`).
    fn units(blk: &Self) -> [(int8x16_t, int8x16_t); 8];

    /// The 8 row scales: (rows 0..4, rows 4..8).
    fn scales(blk: &Self) -> (float32x4_t, float32x4_t);

    /// `acc` plus block's float part for rows 0..4 (`s0`, `d0`) and 4..8 (`s1`, `d1`), in the
    /// order of this table's row kernel (the reference's).
    fn step(
        acc: [float32x4_t; 2],
        s: (int32x4_t, int32x4_t),
        d: (float32x4_t, float32x4_t),
        dy: f32,
    ) -> [float32x4_t; 2];

    /// The row kernel (the bits a tile must give, and the fallback).
    fn rows(w: &[Self], a: Q8Row<'_>, y: &mut [f32]);
}

impl Tile for BlockQ4_0x8 {
    const OFFSET: i32 = 8;

    #[inline(always)]
    fn units(blk: &Self) -> [(int8x16_t, int8x16_t); 8] {
        // SAFETY: NEON only, which every aarch64 target has in its baseline and the tables
        // check before they are handed out (so for every method of the `Tile` impls).
        unsafe {
            let m4 = vdupq_n_u8(0x0F);
            let v: [(uint8x16_t, uint8x16_t); 4] = std::array::from_fn(|c| u8_halves(&blk.qs[c]));
            // Chunk c: the low nibbles are elements 4c.. (unit c), the high ones 4c + 16.. (unit
            // c + 4).
            std::array::from_fn(|k| {
                let (v0, v1) = v[k & 3];
                let (n0, n1) = if k < 4 {
                    (vandq_u8(v0, m4), vandq_u8(v1, m4))
                } else {
                    (vshrq_n_u8::<4>(v0), vshrq_n_u8::<4>(v1))
                };
                (vreinterpretq_s8_u8(n0), vreinterpretq_s8_u8(n1))
            })
        }
    }

    #[inline(always)]
    fn scales(blk: &Self) -> (float32x4_t, float32x4_t) {
        // SAFETY: as in `units`.
        unsafe { scales8(&blk.d) }
    }

    #[inline(always)]
    fn step(
        acc: [float32x4_t; 2],
        (s0, s1): (int32x4_t, int32x4_t),
        (d0, d1): (float32x4_t, float32x4_t),
        dy: f32,
    ) -> [float32x4_t; 2] {
        // SAFETY: as in `units`.
        unsafe {
            let dyv = vdupq_n_f32(dy);
            // Reference (q4_0): sumi as f32 * dx * dy.
            [
                vaddq_f32(acc[0], vmulq_f32(vmulq_f32(vcvtq_f32_s32(s0), d0), dyv)),
                vaddq_f32(acc[1], vmulq_f32(vmulq_f32(vcvtq_f32_s32(s1), d1), dyv)),
            ]
        }
    }

    fn rows(w: &[Self], a: Q8Row<'_>, y: &mut [f32]) {
        rows_q4_0x8(w, a, y)
    }
}

impl Tile for BlockQ8_0x8 {
    const OFFSET: i32 = 0;

    #[inline(always)]
    fn units(blk: &Self) -> [(int8x16_t, int8x16_t); 8] {
        // Chunk c holds elements 4c..4c + 4 of every row.
        // SAFETY: as for Q4_0x8.
        unsafe { std::array::from_fn(|c| act_halves(&blk.qs[c])) }
    }

    #[inline(always)]
    fn scales(blk: &Self) -> (float32x4_t, float32x4_t) {
        // SAFETY: as in `units`.
        unsafe { scales8(&blk.d) }
    }

    #[inline(always)]
    fn step(
        acc: [float32x4_t; 2],
        (s0, s1): (int32x4_t, int32x4_t),
        (d0, d1): (float32x4_t, float32x4_t),
        dy: f32,
    ) -> [float32x4_t; 2] {
        // SAFETY: as for Q4_0x8.
        unsafe {
            let dyv = vdupq_n_f32(dy);
            // Reference (q8_0): sumi as f32 * (dx * dy).
            [
                vaddq_f32(acc[0], vmulq_f32(vcvtq_f32_s32(s0), vmulq_f32(d0, dyv))),
                vaddq_f32(acc[1], vmulq_f32(vcvtq_f32_s32(s1), vmulq_f32(d1, dyv))),
            ]
        }
    }

    fn rows(w: &[Self], a: Q8Row<'_>, y: &mut [f32]) {
        rows_q8_0x8(w, a, y)
    }
}

/// The shape of a prompt product that the tiles can do with the row kernel's bits: the
/// `(n, nb, groups)` of `min(a.len(), y.len())` rows of `nb > 0` blocks each and 8-row
/// groups that every output row holds the same number of; `None` for anything else (rows of
/// other lengths, outputs of different lengths, no blocks), which goes row by row.
pub(super) fn tile_shape<W>(
    w: &[W],
    a: &[Q8Row<'_>],
    y: &[&mut [f32]],
) -> Option<(usize, usize, usize)> {
    let n = a.len().min(y.len());
    let nb = a.first().map_or(0, Q8Row::len);
    let out = y.first().map_or(0, |yi| yi.len() / 8);
    if nb == 0
        || a[..n].iter().any(|ai| ai.len() != nb)
        || y[..n].iter().any(|yi| yi.len() / 8 != out)
    {
        return None;
    }
    Some((n, nb, out.min(w.len() / nb)))
}

/// See [`crate::simd::Kernels::gemm_q4_0x8`]: for each 8-row weight group, tiles of
/// [`TILE_ROWS`] activation rows (and one smaller tile for the rest).
#[target_feature(enable = "neon,dotprod")]
fn gemm<W: Tile>(w: &[W], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    let Some((n, nb, groups)) = tile_shape(w, a, y) else {
        return crate::simd::gemm_by_rows(W::rows, w, a, y);
    };
    let (a, y) = (&a[..n], &mut y[..n]);
    for (g, wg) in w.chunks_exact(nb).take(groups).enumerate() {
        for (at, yt) in a.chunks(TILE_ROWS).zip(y.chunks_mut(TILE_ROWS)) {
            match at.len() {
                TILE_ROWS => tile::<W, TILE_ROWS>(wg, at, yt, 8 * g),
                3 => tile::<W, 3>(wg, at, yt, 8 * g),
                2 => tile::<W, 2>(wg, at, yt, 8 * g),
                _ => tile::<W, 1>(wg, at, yt, 8 * g),
            }
        }
    }
}

/// Outputs `col..col + 8` of the `R` activation rows `a` (of `wg.len()` blocks each) from
/// the weight group `wg`; anything else (checked by `gemm`) writes nothing.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn tile<W: Tile, const R: usize>(wg: &[W], a: &[Q8Row<'_>], y: &mut [&mut [f32]], col: usize) {
    let nb = wg.len();
    let Ok(a) = <&[Q8Row<'_>; R]>::try_from(a) else {
        return;
    };
    if a.iter().any(|ai| ai.len() != nb) {
        return;
    }
    // Each row's blocks, scales and sums cut to `nb` (so that indexing by a block of `wg`
    // needs no check, and the row loop unrolls with its accumulators in registers).
    let rows: [(&[BlockQ8_0], &[f32], &[i32]); R] =
        std::array::from_fn(|r| (&a[r].blocks()[..nb], &a[r].d()[..nb], &a[r].sum()[..nb]));
    let mut acc = [[vdupq_n_f32(0.0); 2]; R];
    for (b, blk) in wg.iter().enumerate() {
        let u = W::units(blk);
        let d = W::scales(blk);
        // Row r's step; called with constant rows below, so the rows unroll and their
        // accumulators stay in registers.
        let mut row = |r: usize| {
            let (ab, dy, sum) = (&rows[r].0[b], rows[r].1[b], rows[r].2[b]);
            // Activation group k is 32-bit lane k % 4 of a0 (k < 4) or a1 (k >= 4).
            let (a0, a1) = act_halves(&ab.qs);
            let init = vdupq_n_s32(-W::OFFSET * sum);
            let (mut s0, mut s1) = (
                sdot_lane::<0>(init, u[0].0, a0),
                sdot_lane::<0>(init, u[0].1, a0),
            );
            s0 = sdot_lane::<1>(s0, u[1].0, a0);
            s1 = sdot_lane::<1>(s1, u[1].1, a0);
            s0 = sdot_lane::<2>(s0, u[2].0, a0);
            s1 = sdot_lane::<2>(s1, u[2].1, a0);
            s0 = sdot_lane::<3>(s0, u[3].0, a0);
            s1 = sdot_lane::<3>(s1, u[3].1, a0);
            s0 = sdot_lane::<0>(s0, u[4].0, a1);
            s1 = sdot_lane::<0>(s1, u[4].1, a1);
            s0 = sdot_lane::<1>(s0, u[5].0, a1);
            s1 = sdot_lane::<1>(s1, u[5].1, a1);
            s0 = sdot_lane::<2>(s0, u[6].0, a1);
            s1 = sdot_lane::<2>(s1, u[6].1, a1);
            s0 = sdot_lane::<3>(s0, u[7].0, a1);
            s1 = sdot_lane::<3>(s1, u[7].1, a1);
            acc[r] = W::step(acc[r], (s0, s1), d, dy);
        };
        row(0);
        if R > 1 {
            row(1);
        }
        if R > 2 {
            row(2);
        }
        if R > 3 {
            row(3);
        }
    }
    for (acc, yi) in acc.iter().zip(y.iter_mut()) {
        if let Some(Ok(out)) = yi.get_mut(col..col + 8).map(<&mut [f32; 8]>::try_from) {
            store8(out, acc[0], acc[1]);
        }
    }
}

/// `sdot` by element: lane `i` of `acc` plus the 4 products of bytes `4i..4i + 4` of `w` with
/// bytes `4L..4L + 4` of `a`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot_lane<const L: usize>(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: as in `sdot` (the by-element form, `L < 4` a 32-bit lane index).
    unsafe {
        core::arch::asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[{l}]",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            a = in(vreg) a,
            l = const L,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}
