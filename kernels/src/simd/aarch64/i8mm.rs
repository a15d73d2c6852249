//! aarch64 kernels with the int8 matrix multiply instructions (`smmla`; Apple M2 and later,
//! Graviton 3, Cortex-A510/A710/X2 and later).
//!
//! `smmla` multiplies a 2x8 by an 8x2 matrix of signed bytes into 2x2 i32 sums: here two
//! weight rows by two activation rows, 8 elements at a time. The prompt products
//! (`gemm_q4_0x8`, `gemm_q8_0x8`) use it; every other entry is the dotprod table's (same
//! function pointers). Integer sums are exact, so the order in which `smmla` adds its
//! products does not matter; the float part is the row kernel's, in its order, one row per
//! f32 lane, so the results are the scalar reference's bits.
//!
//! Safety: every function using `smmla` is `#[target_feature(enable = "neon,dotprod,i8mm")]`
//! and reachable from safe code only through the private table `KERNELS`, which [`kernels`]
//! hands out after `is_aarch64_feature_detected!` proved NEON, dotprod and i8mm (the dotprod
//! entries it reuses need NEON and dotprod).
#![allow(unsafe_code)]

use super::dotprod::{tile_shape, Tile, TABLE};
use super::neon::{store8, u8_halves};
use crate::act::Q8Row;
use crate::isa::Isa;
use crate::quant::{BlockQ4_0x8, BlockQ8_0x8};
use crate::simd::Kernels;
use core::arch::aarch64::*;

/// The i8mm kernels, if this CPU has NEON, the dot product and the int8 matrix multiply
/// instructions (little-endian only).
pub fn kernels() -> Option<&'static Kernels> {
    if cfg!(target_endian = "little")
        && std::arch::is_aarch64_feature_detected!("neon")
        && std::arch::is_aarch64_feature_detected!("dotprod")
        && std::arch::is_aarch64_feature_detected!("i8mm")
    {
        Some(&KERNELS)
    } else {
        None
    }
}

/// Reachable only through [`kernels`] (see the module docs).
static KERNELS: Kernels = Kernels {
    isa: Isa::I8mm,
    gemm_q4_0x8,
    gemm_q8_0x8,
    ..TABLE
};

fn gemm_q4_0x8(w: &[BlockQ4_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    // SAFETY: reachable only through `kernels()`, after the NEON, dotprod and i8mm checks.
    unsafe { gemm::<BlockQ4_0x8>(w, a, y) }
}

fn gemm_q8_0x8(w: &[BlockQ8_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    // SAFETY: as in `gemm_q4_0x8`.
    unsafe { gemm::<BlockQ8_0x8>(w, a, y) }
}

/// Activation row pairs per tile: 16 weight vectors, 4 f32 accumulators per pair and the
/// pair's 4 activation vectors and 4 sums stay in the 32 vector registers.
const TILE_PAIRS: usize = 2;
const _: () = assert!(TILE_PAIRS <= 2, "`tile` unrolls up to 2 pairs");

/// The weight side of `smmla` for a row-interleaved type: the block split in 4 slices `m` of
/// 8 elements per row (which 8 is the type's choice; [`MmTile::act_slice`] says it).
trait MmTile: Tile {
    /// `units[m][p]`: slice `m` of rows `2p` (bytes 0..8) and `2p + 1` (bytes 8..16), the
    /// stored values (the [`Tile::OFFSET`] is taken off through the activation sums).
    fn mm_units(blk: &Self) -> [[int8x16_t; 4]; 4];

    /// The 8 activation values of slice `m` of a block, in the order of [`MmTile::mm_units`].
    fn act_slice(qs: &[i8; 32], m: usize) -> [i8; 8];
}

impl MmTile for BlockQ4_0x8 {
    #[inline(always)]
    fn mm_units(blk: &Self) -> [[int8x16_t; 4]; 4] {
        // SAFETY: NEON only, which every aarch64 target has in its baseline and the table
        // checks before it is handed out (so for the Q8_0x8 impl).
        unsafe {
            let m4 = vdupq_n_u8(0x0F);
            std::array::from_fn(|c| {
                // Chunk c, rows 0..4 in v0 and 4..8 in v1, 4 bytes per row: the low nibbles
                // are elements 4c..4c + 4, the high ones 4c + 16..4c + 20. Zipping the two
                // by 32-bit lanes gives each row's 8 values of slice c, two rows a vector.
                let (v0, v1) = u8_halves(&blk.qs[c]);
                let (l0, h0) = (vandq_u8(v0, m4), vshrq_n_u8::<4>(v0));
                let (l1, h1) = (vandq_u8(v1, m4), vshrq_n_u8::<4>(v1));
                let z = |l: uint8x16_t, h: uint8x16_t, hi: bool| {
                    let (l, h) = (vreinterpretq_u32_u8(l), vreinterpretq_u32_u8(h));
                    let v = if hi {
                        vzip2q_u32(l, h)
                    } else {
                        vzip1q_u32(l, h)
                    };
                    vreinterpretq_s8_u32(v)
                };
                [
                    z(l0, h0, false),
                    z(l0, h0, true),
                    z(l1, h1, false),
                    z(l1, h1, true),
                ]
            })
        }
    }

    #[inline(always)]
    fn act_slice(qs: &[i8; 32], m: usize) -> [i8; 8] {
        let (m, mut out) = (m & 3, [0i8; 8]);
        out[..4].copy_from_slice(&qs[4 * m..4 * m + 4]);
        out[4..].copy_from_slice(&qs[4 * m + 16..4 * m + 20]);
        out
    }
}

impl MmTile for BlockQ8_0x8 {
    #[inline(always)]
    fn mm_units(blk: &Self) -> [[int8x16_t; 4]; 4] {
        // SAFETY: as for Q4_0x8.
        unsafe {
            std::array::from_fn(|m| {
                // Chunks 2m and 2m + 1 hold elements 8m..8m + 4 and 8m + 4..8m + 8 of every
                // row, 4 bytes per row: zipped by 32-bit lanes, each row's slice m.
                let (v0, v1) = load_i32x4_pair(&blk.qs[2 * m]);
                let (u0, u1) = load_i32x4_pair(&blk.qs[2 * m + 1]);
                [
                    vreinterpretq_s8_s32(vzip1q_s32(v0, u0)),
                    vreinterpretq_s8_s32(vzip2q_s32(v0, u0)),
                    vreinterpretq_s8_s32(vzip1q_s32(v1, u1)),
                    vreinterpretq_s8_s32(vzip2q_s32(v1, u1)),
                ]
            })
        }
    }

    #[inline(always)]
    fn act_slice(qs: &[i8; 32], m: usize) -> [i8; 8] {
        let m = m & 3;
        let mut out = [0i8; 8];
        out.copy_from_slice(&qs[8 * m..8 * m + 8]);
        out
    }
}

/// The two 16-byte halves of 32 signed bytes as 32-bit lanes.
#[inline]
#[target_feature(enable = "neon")]
fn load_i32x4_pair(p: &[i8; 32]) -> (int32x4_t, int32x4_t) {
    // SAFETY: 32 readable bytes; `ld1` of bytes has no alignment requirement.
    let v = unsafe { vld1q_s8_x2(p.as_ptr()) };
    (vreinterpretq_s32_s8(v.0), vreinterpretq_s32_s8(v.1))
}

/// One block of an activation row pair `(i, j)`, laid out for `smmla`: slice `m` of row `i`
/// in bytes 0..8 of `q[m]` and of row `j` in bytes 8..16; the offsets `-OFFSET * sum` as
/// `[i, j, i, j]` (the lanes of `smmla`'s result); the two f32 scales.
#[derive(Clone, Copy)]
struct PairBlock {
    q: [[i8; 16]; 4],
    off: [i32; 4],
    dy: [f32; 2],
}

/// The pair blocks of rows `i` and `j` (of `nb` blocks each).
fn pair_blocks<'a, W: MmTile>(i: Q8Row<'a>, j: Q8Row<'a>) -> impl Iterator<Item = PairBlock> + 'a {
    let rows = |r: Q8Row<'a>| {
        let (b, d, s) = (r.blocks(), r.d(), r.sum());
        b.iter().zip(d).zip(s)
    };
    rows(i)
        .zip(rows(j))
        .map(|(((bi, &di), &si), ((bj, &dj), &sj))| {
            let q = std::array::from_fn(|m| {
                let mut v = [0i8; 16];
                v[..8].copy_from_slice(&W::act_slice(&bi.qs, m));
                v[8..].copy_from_slice(&W::act_slice(&bj.qs, m));
                v
            });
            let (oi, oj) = (-W::OFFSET * si, -W::OFFSET * sj);
            PairBlock {
                q,
                off: [oi, oj, oi, oj],
                dy: [di, dj],
            }
        })
}

/// See [`crate::simd::Kernels::gemm_q4_0x8`]: the activation rows in pairs (the last row of
/// an odd count paired with itself, its twin's outputs dropped), laid out once, then for each
/// 8-row weight group, tiles of [`TILE_PAIRS`] pairs.
#[target_feature(enable = "neon,dotprod,i8mm")]
fn gemm<W: MmTile>(w: &[W], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    let Some((n, nb, groups)) = tile_shape(w, a, y) else {
        return crate::simd::gemm_by_rows(W::rows, w, a, y);
    };
    let (a, y) = (&a[..n], &mut y[..n]);
    let pairs: Vec<PairBlock> = a
        .chunks(2)
        .flat_map(|p| pair_blocks::<W>(p[0], p[p.len() - 1]))
        .collect();
    let pairs: Vec<&[PairBlock]> = pairs.chunks_exact(nb).collect();
    let rows_per_tile = 2 * TILE_PAIRS;
    for (g, wg) in w.chunks_exact(nb).take(groups).enumerate() {
        for (pt, yt) in pairs.chunks(TILE_PAIRS).zip(y.chunks_mut(rows_per_tile)) {
            match pt.len() {
                TILE_PAIRS => tile::<W, TILE_PAIRS>(wg, pt, yt, 8 * g),
                _ => tile::<W, 1>(wg, pt, yt, 8 * g),
            }
        }
    }
}

/// Outputs `col..col + 8` of the activation rows of the `P` pairs `pairs` (`y[2p]` and
/// `y[2p + 1]`, the latter if there) from the weight group `wg`; anything else (checked by
/// `gemm`) writes nothing.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
fn tile<W: MmTile, const P: usize>(
    wg: &[W],
    pairs: &[&[PairBlock]],
    y: &mut [&mut [f32]],
    col: usize,
) {
    let nb = wg.len();
    let Ok(pairs) = <&[&[PairBlock]; P]>::try_from(pairs) else {
        return;
    };
    if pairs.iter().any(|p| p.len() != nb) {
        return;
    }
    // Cut to `nb` (indexing by a block of `wg` needs no check; the pair loop unrolls).
    let pairs: [&[PairBlock]; P] = std::array::from_fn(|p| &pairs[p][..nb]);
    // acc[p]: rows 0..4 and 4..8 of activation row 2p, then of 2p + 1.
    let mut acc = [[vdupq_n_f32(0.0); 4]; P];
    for (b, blk) in wg.iter().enumerate() {
        let u = W::mm_units(blk);
        let d = W::scales(blk);
        // Pair q's step; called with constant pairs below, so the pairs unroll and their
        // accumulators stay in registers.
        let mut pair = |q: usize| {
            let pb = &pairs[q][b];
            let av: [int8x16_t; 4] = std::array::from_fn(|m| load_i8x16(&pb.q[m]));
            let off = load_i32x4(&pb.off);
            // s[p]: [row 2p . i, row 2p . j, row 2p+1 . i, row 2p+1 . j].
            let s: [int32x4_t; 4] = std::array::from_fn(|p| {
                let mut s = smmla(off, u[0][p], av[0]);
                s = smmla(s, u[1][p], av[1]);
                s = smmla(s, u[2][p], av[2]);
                smmla(s, u[3][p], av[3])
            });
            // One weight row per lane: activation row i, then j.
            let si = (vuzp1q_s32(s[0], s[1]), vuzp1q_s32(s[2], s[3]));
            let sj = (vuzp2q_s32(s[0], s[1]), vuzp2q_s32(s[2], s[3]));
            let [a0, a1] = W::step([acc[q][0], acc[q][1]], si, d, pb.dy[0]);
            let [a2, a3] = W::step([acc[q][2], acc[q][3]], sj, d, pb.dy[1]);
            acc[q] = [a0, a1, a2, a3];
        };
        pair(0);
        if P > 1 {
            pair(1);
        }
    }
    for (acc, yp) in acc.iter().zip(y.chunks_mut(2)) {
        for (k, yi) in yp.iter_mut().enumerate() {
            if let Some(Ok(out)) = yi.get_mut(col..col + 8).map(<&mut [f32; 8]>::try_from) {
                store8(out, acc[2 * k], acc[2 * k + 1]);
            }
        }
    }
}

#[inline]
#[target_feature(enable = "neon")]
fn load_i8x16(p: &[i8; 16]) -> int8x16_t {
    // SAFETY: 16 readable bytes; `ld1` of bytes has no alignment requirement.
    unsafe { vld1q_s8(p.as_ptr()) }
}

#[inline]
#[target_feature(enable = "neon")]
fn load_i32x4(p: &[i32; 4]) -> int32x4_t {
    // SAFETY: 4 readable, aligned i32.
    unsafe { vld1q_s32(p.as_ptr()) }
}

/// `smmla`: `acc` plus the 2x2 products of the rows of `w` (bytes 0..8, 8..16) with the rows
/// of `a` (bytes 0..8, 8..16): lane `2r + c` gets `w` row `r` times `a` row `c`, exact.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
fn smmla(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `smmla` exists (the i8mm feature is enabled for this function, and the table
    // calling it is handed out only after detection); it reads and writes only the three
    // named registers. (`vmmlaq_s32` is not stable Rust.)
    unsafe {
        core::arch::asm!(
            "smmla {acc:v}.4s, {w:v}.16b, {a:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            a = in(vreg) a,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}
