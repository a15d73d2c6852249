//! aarch64 NEON kernels for llama.cpp's other types: Q5_0, Q5_1, IQ4_NL, the k-quants
//! (Q2_K..Q6_K), IQ4_XS and BF16, the twins of the scalar references in [`crate::quant`]
//! (whose order is that of ggml's generic kernels, ggml-org/llama.cpp
//! `ggml/src/ggml-cpu/quants.c` @aec5bf1).
//!
//! Two shapes of kernel, by what the reference adds up:
//!
//! - One integer total per block (or per group): Q5_0, Q5_1, IQ4_NL, Q2_K, IQ4_XS. These are
//!   written once ([`sum_rows!`]) over a primitive with `sdot`'s contract, instantiated here
//!   with the exact `vmull_s8`/`vpadalq_s16` emulation and in [`super::dotprod_k`] with
//!   `sdot`; 4 rows per f32 lane, the reference's float operations in its order.
//! - ggml's 8 integer lanes per block (`aux32[l]`, the elements `8k + l` times their group
//!   scale) folded into 8 float lanes: Q3_K, Q4_K, Q5_K, Q6_K. One row at a time, the 8
//!   lanes in two vectors: `vmull_s8`/`vmlal_s8` of 8 consecutive elements puts element
//!   `8k + l` in i16 lane `l`, which is the reference's lane, and the group scale is applied
//!   with `vmlal_n_s16` into i32, exact. (`sdot` sums 4 neighbouring elements, which belong
//!   to 4 different lanes, so the dotprod table uses these too.)
//!
//! Integer bounds: an i16 lane sums at most 4 products of a level (|q| <= 32 for the k-quants
//! here, 31 for Q5_K) and an activation (|a| <= 128): at most 4 * 31 * 128 = 15872 for Q5_K
//! and 2 * 32 * 128 = 8192 for Q6_K's groups of 16, so nothing saturates or wraps.
//!
//! Safety: as [`super::neon`]: every function is `#[target_feature(enable = "neon")]` (the
//! macro's dotprod instance adds `dotprod`), the safe wrappers are reached only through the
//! NEON and dotprod tables (handed out after detection), and memory is read only through
//! fixed-size references.
#![allow(unsafe_code)]

use super::neon::{
    act_halves, by_four, dot, fold16, load_f32x4, nibbles, row_sums, scales4, u8_halves,
    widen_f16x4,
};
use crate::act::Q8Row;
use crate::quant::float::bf16_to_f32;
use crate::quant::iq4_nl::KVALUES_IQ4NL;
use crate::quant::{
    BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_1, QK,
};
use core::arch::aarch64::*;

// ---- Safe wrappers (table entries of the NEON table; the K-quant fold8 ones and BF16 also
// ---- of the dotprod table). Each `unsafe` call relies on the tables being handed out only
// ---- after NEON was detected.

pub(super) fn rows_q5_0(w: &[BlockQ5_0], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: reachable only through the NEON table, after the NEON check.
    unsafe { q5_0_rows(w, a, y) }
}

pub(super) fn rows_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1], y: &mut [f32]) {
    // SAFETY: as in `rows_q5_0`.
    unsafe { q5_1_rows(w, a, y) }
}

pub(super) fn rows_iq4_nl(w: &[BlockIq4Nl], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `rows_q5_0`.
    unsafe { iq4_nl_rows(w, a, y) }
}

pub(super) fn rows_q2_k(w: &[BlockQ2K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `rows_q5_0`.
    unsafe { q2_k_rows(w, a, y) }
}

pub(super) fn rows_iq4_xs(w: &[BlockIq4Xs], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `rows_q5_0`.
    unsafe { iq4_xs_rows(w, a, y) }
}

pub(super) fn rows_q3_k(w: &[BlockQ3K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: reachable only through the NEON and dotprod tables, after the NEON check.
    unsafe { q3_k_rows(w, a, y) }
}

pub(super) fn rows_q4_k(w: &[BlockQ4K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `rows_q3_k`.
    unsafe { q4_k_rows(w, a, y) }
}

pub(super) fn rows_q5_k(w: &[BlockQ5K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `rows_q3_k`.
    unsafe { q5_k_rows(w, a, y) }
}

pub(super) fn rows_q6_k(w: &[BlockQ6K], a: &[BlockQ8K], y: &mut [f32]) {
    // SAFETY: as in `rows_q3_k`.
    unsafe { q6_k_rows(w, a, y) }
}

pub(super) fn dot_bf16(x: &[u8], y: &[f32]) -> f32 {
    // SAFETY: as in `rows_q3_k`.
    unsafe { bf16_dot(x, y) }
}

// ---- Unpacking (shared with the dotprod instance of `sum_rows!`).

/// The fifth bits of a Q5_0/Q5_1 block as `0x10` or `0` per element: (elements 0..16,
/// elements 16..32); bit `j` of the little-endian `qh` belongs to element `j`.
#[inline]
#[target_feature(enable = "neon")]
fn fifth_bits(qh: [u8; 4]) -> (uint8x16_t, uint8x16_t) {
    let h = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes(qh)));
    // Byte k of qh holds elements 8k..8k + 8, bit i element 8k + i.
    let bit: [u8; 16] = std::array::from_fn(|i| 1 << (i % 8));
    let idx_lo: [u8; 16] = std::array::from_fn(|i| (i / 8) as u8);
    let idx_hi: [u8; 16] = std::array::from_fn(|i| (i / 8 + 2) as u8);
    let (bit, idx_lo, idx_hi) = (load_u8(&bit), load_u8(&idx_lo), load_u8(&idx_hi));
    let sixteen = vdupq_n_u8(0x10);
    let lo = vandq_u8(vtstq_u8(vqtbl1q_u8(h, idx_lo), bit), sixteen);
    let hi = vandq_u8(vtstq_u8(vqtbl1q_u8(h, idx_hi), bit), sixteen);
    (lo, hi)
}

/// 16 bytes from a fixed-size array.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn load_u8(p: &[u8; 16]) -> uint8x16_t {
    // SAFETY: 16 readable bytes; `ld1` of bytes has no alignment requirement.
    unsafe { vld1q_u8(p.as_ptr()) }
}

/// The 32 levels (0..31) of a Q5_0/Q5_1 block: (elements 0..16, elements 16..32).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn q5_levels(qs: &[u8; 16], qh: [u8; 4]) -> (int8x16_t, int8x16_t) {
    let (lo, hi) = nibbles(qs);
    let (b0, b1) = fifth_bits(qh);
    (
        vreinterpretq_s8_u8(vorrq_u8(vreinterpretq_u8_s8(lo), b0)),
        vreinterpretq_s8_u8(vorrq_u8(vreinterpretq_u8_s8(hi), b1)),
    )
}

/// The 16 IQ4_NL values.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn iq4_table() -> int8x16_t {
    // SAFETY: 16 readable bytes.
    unsafe { vld1q_s8(KVALUES_IQ4NL.as_ptr()) }
}

/// The table values of 16 index bytes: (low nibbles, high nibbles).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn iq4_values(table: int8x16_t, q: uint8x16_t) -> (int8x16_t, int8x16_t) {
    let lo = vandq_u8(q, vdupq_n_u8(0x0F));
    let hi = vshrq_n_u8::<4>(q);
    (vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi))
}

/// The 2-bit field at bits `2s..2s + 2` of every byte (`s < 4`).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn crumbs(v: uint8x16_t, s: usize) -> uint8x16_t {
    let shifted = match s & 3 {
        0 => v,
        1 => vshrq_n_u8::<2>(v),
        2 => vshrq_n_u8::<4>(v),
        _ => vshrq_n_u8::<6>(v),
    };
    vandq_u8(shifted, vdupq_n_u8(3))
}

/// The 32 activations of block `a` starting at element `32 * c` (`c < 8`), in two halves.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn act32(a: &BlockQ8K, c: usize) -> (int8x16_t, int8x16_t) {
    act_halves(&a.qs.as_chunks::<QK>().0[c & 7])
}

/// The 16 little-endian i16 sums of a Q8_K block: (sums 0..8, sums 8..16).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn bsums(a: &BlockQ8K) -> (int16x8_t, int16x8_t) {
    let (b0, b1) = u8_halves(zerocopy::transmute_ref!(&a.bsums));
    (vreinterpretq_s16_u8(b0), vreinterpretq_s16_u8(b1))
}

/// Two little-endian f16 values widened (exact, as `f16_le`; with `fcvtl`, not a call into
/// `half`, which would make every vector register spill around it).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn f16x2(a: [u8; 2], b: [u8; 2]) -> (f32, f32) {
    let h = [u16::from_le_bytes(a), u16::from_le_bytes(b), 0, 0];
    // SAFETY: 4 readable, aligned u16.
    let v = widen_f16x4(unsafe { vld1_u16(h.as_ptr()) });
    (vgetq_lane_f32::<0>(v), vgetq_lane_f32::<1>(v))
}

/// The 4 f16 fields `field(r)` of 4 rows times the f32 `dy`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn scales4_times(field: impl Fn(usize) -> [u8; 2], dy: f32) -> float32x4_t {
    vmulq_f32(scales4(field), vdupq_n_f32(dy))
}

// ---- Rows with one integer total per block or group, over `$dot` (see `int_rows!`).

/// Defines `q5_0_rows`, `q5_1_rows`, `iq4_nl_rows`, `q2_k_rows` and `iq4_xs_rows` (the
/// signatures of the [`crate::simd::Kernels`] entries) over `$dot(acc, a, b)`: `acc` plus
/// the 16 signed products of `a` and `b` spread over the 4 lanes in any way, exact (as for
/// [`super::int_rows!`]); with the given attributes on every function. Expects `by_four`,
/// `row_sums`, `act_halves`, `u8_halves`, `q5_levels`, `iq4_table`, `iq4_values`, `crumbs`,
/// `act32`, `bsums`, `f16x2`, `load_u8`, `by_four_acc`, `scales4`, `scales4_times`, the block types and `core::arch::aarch64`
/// in scope.
macro_rules! sum_rows {
    ($(#[$attr:meta])* ; $dot:path) => {
        $(#[$attr])*
        fn q5_0_rows(w: &[BlockQ5_0], a: Q8Row<'_>, y: &mut [f32]) {
            let (ab, ad) = (a.blocks(), a.d());
            by_four(w, a.len(), y, |rows, b| {
                let (Some(act), Some(&dy)) = (ab.get(b), ad.get(b)) else {
                    return vdupq_n_f32(0.0);
                };
                let (a0, a1) = act_halves(&act.qs);
                let blocks: [&BlockQ5_0; 4] = std::array::from_fn(|r| &rows[r][b]);
                let sixteen = vdupq_n_s8(16);
                let s: [int32x4_t; 4] = std::array::from_fn(|r| {
                    let (q0, q1) = q5_levels(&blocks[r].qs, blocks[r].qh);
                    let (q0, q1) = (vsubq_s8(q0, sixteen), vsubq_s8(q1, sixteen));
                    $dot($dot(vdupq_n_s32(0), q0, a0), q1, a1)
                });
                // Reference (q5_0): (dx * dy) * sumi as f32.
                let dxy = scales4_times(|r| blocks[r].d, dy);
                vmulq_f32(dxy, vcvtq_f32_s32(row_sums(&s)))
            });
        }

        $(#[$attr])*
        fn q5_1_rows(w: &[BlockQ5_1], a: &[BlockQ8_1], y: &mut [f32]) {
            by_four(w, a.len(), y, |rows, b| {
                let Some(act) = a.get(b) else {
                    return vdupq_n_f32(0.0);
                };
                let (a0, a1) = act_halves(&act.qs);
                let blocks: [&BlockQ5_1; 4] = std::array::from_fn(|r| &rows[r][b]);
                let s: [int32x4_t; 4] = std::array::from_fn(|r| {
                    let (q0, q1) = q5_levels(&blocks[r].qs, blocks[r].qh);
                    $dot($dot(vdupq_n_s32(0), q0, a0), q1, a1)
                });
                // Reference (q5_1): (dx * dy) * sumi as f32 + m * s.
                let (ad, as_) = f16x2(act.d, act.s);
                let dxy = scales4_times(|r| blocks[r].d, ad);
                let ms = scales4_times(|r| blocks[r].m, as_);
                vaddq_f32(vmulq_f32(dxy, vcvtq_f32_s32(row_sums(&s))), ms)
            });
        }

        $(#[$attr])*
        fn iq4_nl_rows(w: &[BlockIq4Nl], a: Q8Row<'_>, y: &mut [f32]) {
            let (ab, ad) = (a.blocks(), a.d());
            let table = iq4_table();
            by_four(w, a.len(), y, |rows, b| {
                let (Some(act), Some(&dy)) = (ab.get(b), ad.get(b)) else {
                    return vdupq_n_f32(0.0);
                };
                let (a0, a1) = act_halves(&act.qs);
                let blocks: [&BlockIq4Nl; 4] = std::array::from_fn(|r| &rows[r][b]);
                let s: [int32x4_t; 4] = std::array::from_fn(|r| {
                    let (lo, hi) = nibbles(&blocks[r].qs);
                    let (v0, v1) = (vqtbl1q_s8(table, vreinterpretq_u8_s8(lo)),
                                    vqtbl1q_s8(table, vreinterpretq_u8_s8(hi)));
                    $dot($dot(vdupq_n_s32(0), v0, a0), v1, a1)
                });
                // Reference (iq4_nl): (dy * dx) * sumi as f32.
                let d = scales4_times(|r| blocks[r].d, dy);
                vmulq_f32(d, vcvtq_f32_s32(row_sums(&s)))
            });
        }

        $(#[$attr])*
        fn q2_k_rows(w: &[BlockQ2K], a: &[BlockQ8K], y: &mut [f32]) {
            by_four(w, a.len(), y, |rows, b| {
                let Some(act) = a.get(b) else {
                    return vdupq_n_f32(0.0);
                };
                let blocks: [&BlockQ2K; 4] = std::array::from_fn(|r| &rows[r][b]);
                let (bs0, bs1) = bsums(act);
                let mut isum = [vdupq_n_s32(0); 4];
                let mut summs = [vdupq_n_s32(0); 4];
                for r in 0..4 {
                    let bx = blocks[r];
                    let sc = load_u8(&bx.scales);
                    // summs: sum_j bsum(j) * (scales[j] >> 4).
                    let m = vshrq_n_u8::<4>(sc);
                    let m0 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(m)));
                    let m1 = vreinterpretq_s16_u16(vmovl_high_u8(m));
                    let mut t = vmull_s16(vget_low_s16(bs0), vget_low_s16(m0));
                    t = vmlal_high_s16(t, bs0, m0);
                    t = vmlal_s16(t, vget_low_s16(bs1), vget_low_s16(m1));
                    summs[r] = vmlal_high_s16(t, bs1, m1);
                    // isum: group g (16 elements) is one vector, times scales[g] & 0xF.
                    let mut scales = [0u8; 16];
                    for (s, &v) in scales.iter_mut().zip(&bx.scales) {
                        *s = v & 0xF;
                    }
                    let mut acc = vdupq_n_s32(0);
                    for (n, chunk) in bx.qs.as_chunks::<32>().0.iter().enumerate() {
                        let (v0, v1) = u8_halves(chunk);
                        for s in 0..4 {
                            // Elements 128n + 32s + (0..16 | 16..32): groups 8n + 2s (+ 1).
                            let (a0, a1) = act32(act, 4 * n + s);
                            let g = 8 * n + 2 * s;
                            let d0 = $dot(vdupq_n_s32(0), vreinterpretq_s8_u8(crumbs(v0, s)), a0);
                            let d1 = $dot(vdupq_n_s32(0), vreinterpretq_s8_u8(crumbs(v1, s)), a1);
                            acc = vmlaq_n_s32(acc, d0, i32::from(scales[g]));
                            acc = vmlaq_n_s32(acc, d1, i32::from(scales[g + 1]));
                        }
                    }
                    isum[r] = acc;
                }
                // Reference (q2_k): dall * isum as f32 - dmin * summs as f32, with
                // dall = dy * f16(x.d) and dmin = dy * f16(x.dmin).
                let dy = act.d();
                let dall = scales4_times(|r| blocks[r].d, dy);
                let dmin = scales4_times(|r| blocks[r].dmin, dy);
                vsubq_f32(
                    vmulq_f32(dall, vcvtq_f32_s32(row_sums(&isum))),
                    vmulq_f32(dmin, vcvtq_f32_s32(row_sums(&summs))),
                )
            });
        }

        $(#[$attr])*
        fn iq4_xs_rows(w: &[BlockIq4Xs], a: &[BlockQ8K], y: &mut [f32]) {
            let table = iq4_table();
            by_four_acc(w, a.len(), y, |rows, b, acc| {
                let Some(act) = a.get(b) else {
                    return;
                };
                let blocks: [&BlockIq4Xs; 4] = std::array::from_fn(|r| &rows[r][b]);
                let d4d8 = scales4_times(|r| blocks[r].d, act.d());
                for c in 0..4 {
                    // Chunk c of qs: groups 2c and 2c + 1, 16 index bytes each.
                    let s: [[int32x4_t; 4]; 2] = {
                        let mut s = [[vdupq_n_s32(0); 4]; 2];
                        for r in 0..4 {
                            let (q0, q1) = u8_halves(&blocks[r].qs.as_chunks::<32>().0[c]);
                            for (h, q) in [q0, q1].into_iter().enumerate() {
                                let (a0, a1) = act32(act, 2 * c + h);
                                let (v0, v1) = iq4_values(table, q);
                                s[h][r] = $dot($dot(vdupq_n_s32(0), v0, a0), v1, a1);
                            }
                        }
                        s
                    };
                    for (h, sh) in s.iter().enumerate() {
                        let g = 2 * c + h;
                        let ls: [i32; 4] = std::array::from_fn(|r| blocks[r].scale(g) - 32);
                        // SAFETY: 4 readable, aligned i32.
                        let ls = vcvtq_f32_s32(unsafe { vld1q_s32(ls.as_ptr()) });
                        // Reference (iq4_xs): sumf += (d4d8 * (ls - 32) as f32) * sumi as f32.
                        let dl = vmulq_f32(d4d8, ls);
                        *acc = vaddq_f32(*acc, vmulq_f32(dl, vcvtq_f32_s32(row_sums(sh))));
                    }
                }
            });
        }
    };
}
pub(super) use sum_rows;

sum_rows!(#[target_feature(enable = "neon")]; dot);

/// As [`by_four`], for kernels that add to the 4 lanes several times per block (IQ4_XS adds
/// per group of 32): `block(rows, b, acc)` updates the accumulator, which starts at 0.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn by_four_acc<W>(
    w: &[W],
    nb: usize,
    y: &mut [f32],
    mut block: impl FnMut(&[&[W]; 4], usize, &mut float32x4_t),
) {
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let rows = (w.len() / nb).min(y.len());
    for (g, out) in y[..rows].chunks_mut(4).enumerate() {
        let last = g * 4 + out.len() - 1;
        // Row i < rows <= w.len() / nb: in bounds.
        let group: [&[W]; 4] = std::array::from_fn(|r| {
            let i = (g * 4 + r).min(last);
            &w[i * nb..(i + 1) * nb]
        });
        let mut acc = vdupq_n_f32(0.0);
        for b in 0..nb {
            block(&group, b, &mut acc);
        }
        let mut lanes = [0.0f32; 4];
        // SAFETY: 4 writable, aligned f32.
        unsafe { vst1q_f32(lanes.as_mut_ptr(), acc) };
        out.copy_from_slice(&lanes[..out.len()]);
    }
}

// ---- Rows with ggml's 8 integer lanes per block (one row at a time).

/// The i32 lanes `aux32[0..4]`, `aux32[4..8]` of the reference's k-quant dots.
#[derive(Clone, Copy)]
struct Aux(int32x4_t, int32x4_t);

impl Aux {
    #[inline]
    #[target_feature(enable = "neon")]
    fn new() -> Self {
        Self(vdupq_n_s32(0), vdupq_n_s32(0))
    }

    /// Adds `sc * q[e] * a[e]` for the 16 elements of one group of 16 (element `8k + l`
    /// into lane `l`).
    #[inline]
    #[target_feature(enable = "neon")]
    fn group16(self, q: int8x16_t, a: int8x16_t, sc: i16) -> Self {
        let p = vmlal_high_s8(vmull_s8(vget_low_s8(q), vget_low_s8(a)), q, a);
        Self(
            vmlal_n_s16(self.0, vget_low_s16(p), sc),
            vmlal_high_n_s16(self.1, p, sc),
        )
    }

    /// Adds `sc * q[e] * a[e]` for the 32 elements of one group of 32 (`q0`, `a0`: the
    /// first 16).
    #[inline]
    #[target_feature(enable = "neon")]
    fn group32(self, q0: int8x16_t, q1: int8x16_t, a0: int8x16_t, a1: int8x16_t, sc: i16) -> Self {
        let mut p = vmull_s8(vget_low_s8(q0), vget_low_s8(a0));
        p = vmlal_high_s8(p, q0, a0);
        p = vmlal_s8(p, vget_low_s8(q1), vget_low_s8(a1));
        p = vmlal_high_s8(p, q1, a1);
        Self(
            vmlal_n_s16(self.0, vget_low_s16(p), sc),
            vmlal_high_n_s16(self.1, p, sc),
        )
    }
}

/// The rows of `nb = a.len()` blocks of `w`, each as `k_common::fold8`: per block
/// `block(x, a) = (d, aux32, dmin * sumi)`, `sums[l] += d * aux32[l]`, `sumf -= dmin * sumi`
/// (when there is a minimum), then `sumf += sums[l]` for `l` in order.
#[inline]
#[target_feature(enable = "neon")]
fn fold8_rows<W>(
    w: &[W],
    a: &[BlockQ8K],
    y: &mut [f32],
    block: impl Fn(&W, &BlockQ8K) -> (f32, Aux, Option<f32>),
) {
    let nb = a.len();
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    for (out, row) in y.iter_mut().zip(w.chunks_exact(nb)) {
        let (mut s0, mut s1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        let mut sumf = 0.0f32;
        for (bx, by) in row.iter().zip(a) {
            let (d, aux, min_term) = block(bx, by);
            let dv = vdupq_n_f32(d);
            s0 = vaddq_f32(s0, vmulq_f32(dv, vcvtq_f32_s32(aux.0)));
            s1 = vaddq_f32(s1, vmulq_f32(dv, vcvtq_f32_s32(aux.1)));
            if let Some(m) = min_term {
                sumf -= m;
            }
        }
        let mut lanes = [0.0f32; 8];
        super::neon::store8(&mut lanes, s0, s1);
        for l in lanes {
            sumf += l;
        }
        *out = sumf;
    }
}

/// `sum_j bsum(j) * m[j / 2]` (the minimums of Q4_K/Q5_K, one per 32 elements), exact.
#[inline]
#[target_feature(enable = "neon")]
fn min_sum(a: &BlockQ8K, m: [i16; 8]) -> i32 {
    let (b0, b1) = bsums(a);
    // SAFETY: 8 readable, aligned i16.
    let mv = unsafe { vld1q_s16(m.as_ptr()) };
    // [m0, m0, m1, m1, ...]: the minimum of each sum of 16.
    let (m0, m1) = (vzip1q_s16(mv, mv), vzip2q_s16(mv, mv));
    let mut t = vmull_s16(vget_low_s16(b0), vget_low_s16(m0));
    t = vmlal_high_s16(t, b0, m0);
    t = vmlal_s16(t, vget_low_s16(b1), vget_low_s16(m1));
    t = vmlal_high_s16(t, b1, m1);
    vaddvq_s32(t)
}

#[target_feature(enable = "neon")]
fn q4_k_rows(w: &[BlockQ4K], a: &[BlockQ8K], y: &mut [f32]) {
    fold8_rows(w, a, y, |bx, by| {
        let sm: [(u8, u8); 8] = std::array::from_fn(|g| bx.scale_min(g));
        let mut aux = Aux::new();
        for (c, chunk) in bx.qs.as_chunks::<32>().0.iter().enumerate() {
            // qs[32c + l]: element 64c + l (low nibble, group 2c) and 64c + 32 + l (high,
            // group 2c + 1).
            let (v0, v1) = u8_halves(chunk);
            let mask = vdupq_n_u8(0x0F);
            let lo0 = vreinterpretq_s8_u8(vandq_u8(v0, mask));
            let lo1 = vreinterpretq_s8_u8(vandq_u8(v1, mask));
            let hi0 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v0));
            let hi1 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v1));
            let (a0, a1) = act32(by, 2 * c);
            let (a2, a3) = act32(by, 2 * c + 1);
            aux = aux.group32(lo0, lo1, a0, a1, i16::from(sm[2 * c].0));
            aux = aux.group32(hi0, hi1, a2, a3, i16::from(sm[2 * c + 1].0));
        }
        let sumi = min_sum(by, std::array::from_fn(|g| i16::from(sm[g].1)));
        // Reference (q4_k): d = f16(x.d) * y.d, dmin = f16(x.dmin) * y.d.
        let (xd, xdmin) = f16x2(bx.d, bx.dmin);
        let d = xd * by.d();
        let dmin = xdmin * by.d();
        (d, aux, Some(dmin * sumi as f32))
    });
}

#[target_feature(enable = "neon")]
fn q5_k_rows(w: &[BlockQ5K], a: &[BlockQ8K], y: &mut [f32]) {
    fold8_rows(w, a, y, |bx, by| {
        let sm: [(u8, u8); 8] = std::array::from_fn(|g| bx.scale_min(g));
        let (h0, h1) = u8_halves(&bx.qh);
        let mut aux = Aux::new();
        let (mask, sixteen) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x10));
        for (c, chunk) in bx.qs.as_chunks::<32>().0.iter().enumerate() {
            // As Q4_K, plus the fifth bit of element 64c + l: bit 2c of qh[l] (low
            // nibbles), bit 2c + 1 (high nibbles).
            let (v0, v1) = u8_halves(chunk);
            let (blo, bhi) = (vdupq_n_u8(1 << (2 * c)), vdupq_n_u8(2 << (2 * c)));
            let five = |v: uint8x16_t, h: uint8x16_t, bit: uint8x16_t| {
                vreinterpretq_s8_u8(vorrq_u8(v, vandq_u8(vtstq_u8(h, bit), sixteen)))
            };
            let lo0 = five(vandq_u8(v0, mask), h0, blo);
            let lo1 = five(vandq_u8(v1, mask), h1, blo);
            let hi0 = five(vshrq_n_u8::<4>(v0), h0, bhi);
            let hi1 = five(vshrq_n_u8::<4>(v1), h1, bhi);
            let (a0, a1) = act32(by, 2 * c);
            let (a2, a3) = act32(by, 2 * c + 1);
            aux = aux.group32(lo0, lo1, a0, a1, i16::from(sm[2 * c].0));
            aux = aux.group32(hi0, hi1, a2, a3, i16::from(sm[2 * c + 1].0));
        }
        let sumi = min_sum(by, std::array::from_fn(|g| i16::from(sm[g].1)));
        // Reference (q5_k): as q4_k.
        let (xd, xdmin) = f16x2(bx.d, bx.dmin);
        let d = xd * by.d();
        let dmin = xdmin * by.d();
        (d, aux, Some(dmin * sumi as f32))
    });
}

#[target_feature(enable = "neon")]
fn q6_k_rows(w: &[BlockQ6K], a: &[BlockQ8K], y: &mut [f32]) {
    fold8_rows(w, a, y, |bx, by| {
        let mut aux = Aux::new();
        let (ql, qh) = (bx.ql.as_chunks::<32>().0, bx.qh.as_chunks::<32>().0);
        let (mask, thirty_two) = (vdupq_n_u8(0x0F), vdupq_n_s8(32));
        for n in 0..2 {
            // Half n: ql[64n..64n + 32] (quarters 0, 2), ql[64n + 32..64n + 64] (1, 3),
            // qh[32n..32n + 32] (bits 2 * quarter); element 128n + 32 * quarter + l.
            let (p0, p1) = u8_halves(&ql[2 * n]);
            let (r0, r1) = u8_halves(&ql[2 * n + 1]);
            let (h0, h1) = u8_halves(&qh[n]);
            for quarter in 0..4 {
                let (x0, x1) = if quarter % 2 == 0 { (p0, p1) } else { (r0, r1) };
                let (n0, n1) = if quarter < 2 {
                    (vandq_u8(x0, mask), vandq_u8(x1, mask))
                } else {
                    (vshrq_n_u8::<4>(x0), vshrq_n_u8::<4>(x1))
                };
                let level = |nib: uint8x16_t, h: uint8x16_t| {
                    let q = vorrq_u8(nib, vshlq_n_u8::<4>(crumbs(h, quarter)));
                    vsubq_s8(vreinterpretq_s8_u8(q), thirty_two)
                };
                let (q0, q1) = (level(n0, h0), level(n1, h1));
                let (a0, a1) = act32(by, 4 * n + quarter);
                let g = 8 * n + 2 * quarter;
                aux = aux.group16(q0, a0, i16::from(bx.scales[g]));
                aux = aux.group16(q1, a1, i16::from(bx.scales[g + 1]));
            }
        }
        // Reference (q6_k): d = f16(x.d) * y.d, no minimum.
        (f16x2(bx.d, [0; 2]).0 * by.d(), aux, None)
    });
}

#[target_feature(enable = "neon")]
fn q3_k_rows(w: &[BlockQ3K], a: &[BlockQ8K], y: &mut [f32]) {
    fold8_rows(w, a, y, |bx, by| {
        let sc = bx.scales();
        let mut aux = Aux::new();
        let (m0, m1) = u8_halves(&bx.hmask);
        let four = vdupq_n_u8(4);
        for (n, chunk) in bx.qs.as_chunks::<32>().0.iter().enumerate() {
            let (v0, v1) = u8_halves(chunk);
            for s in 0..4 {
                // Element 128n + 32s + l: bits 2s of qs[32n + l], minus 4 unless bit
                // 4n + s of hmask[l] is set.
                let bit = vdupq_n_u8(1 << (4 * n + s));
                let level = |v: uint8x16_t, m: uint8x16_t| {
                    let q = vorrq_u8(crumbs(v, s), vandq_u8(vtstq_u8(m, bit), four));
                    vsubq_s8(vreinterpretq_s8_u8(q), vreinterpretq_s8_u8(four))
                };
                let (a0, a1) = act32(by, 4 * n + s);
                let g = 8 * n + 2 * s;
                aux = aux.group16(level(v0, m0), a0, sc[g] as i16);
                aux = aux.group16(level(v1, m1), a1, sc[g + 1] as i16);
            }
        }
        // Reference (q3_k): d = f16(x.d) * y.d, no minimum.
        (f16x2(bx.d, [0; 2]).0 * by.d(), aux, None)
    });
}

// ---- BF16 (16 lanes, `quant::float::dot_in_lanes` order).

/// The 8 bf16 values of `h`, widened (exactly: the bits moved to the top half).
#[inline]
#[target_feature(enable = "neon")]
fn widen_bf16x8(h: uint16x8_t) -> (float32x4_t, float32x4_t) {
    (
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
        vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
    )
}

#[target_feature(enable = "neon")]
fn bf16_dot(x: &[u8], y: &[f32]) -> f32 {
    let n = (x.len() / 2).min(y.len());
    let full = n - n % 16;
    let (xs, ys) = (
        x[..2 * full].as_chunks::<32>().0,
        y[..full].as_chunks::<16>().0,
    );
    let mut l = [vdupq_n_f32(0.0); 4];
    for (xc, yc) in xs.iter().zip(ys) {
        let (x0, x1) = u8_halves(xc);
        let (w0, w1) = widen_bf16x8(vreinterpretq_u16_u8(x0));
        let (w2, w3) = widen_bf16x8(vreinterpretq_u16_u8(x1));
        let yq = yc.as_chunks::<4>().0;
        for ((acc, xv), yv) in l.iter_mut().zip([w0, w1, w2, w3]).zip(yq) {
            *acc = vaddq_f32(*acc, vmulq_f32(xv, load_f32x4(yv)));
        }
    }
    let mut sum = fold16(l);
    for (b, &yv) in x[2 * full..2 * n].chunks_exact(2).zip(&y[full..n]) {
        sum += bf16_to_f32(u16::from_le_bytes([b[0], b[1]])) * yv;
    }
    sum
}
