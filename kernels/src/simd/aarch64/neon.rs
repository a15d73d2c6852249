//! aarch64 NEON kernels without dot products (Cortex-A72, Raspberry Pi 4).
//!
//! Integer parts: signed byte products widened with `vmull_s8` (one product per i16 lane, at
//! most 128 * 128 = 16384 in magnitude, so nothing saturates), summed pairwise into i32 with
//! `vpadalq_s16`/`vpaddlq_s16`: exact. Q4 nibbles are unpacked with `vandq_u8`/`vshrq_n_u8`
//! (and `- 8` for Q4_0, giving signed bytes in -8..7). Float parts: one row per f32 lane,
//! the reference's multiplications and additions in the reference's order, never fused
//! (`vmulq_f32` then `vaddq_f32`). f16 values are widened with `fcvtl`/`fcvtl2` (ARMv8.0,
//! exact) through `asm!`, since Rust's `f16` vector types are not stable.
//!
//! Safety: NEON is part of the aarch64 baseline, but every function here still carries
//! `#[target_feature(enable = "neon")]` and the table is handed out only by [`kernels`] after
//! `is_aarch64_feature_detected!("neon")`. Memory is read and written only through
//! fixed-size array references (`&[u8; 16]`, `&[i8; 32]`, ...), so every load and store is in
//! bounds by its type; bytes are reinterpreted as little-endian values, so the table is
//! withheld on big-endian targets.
#![allow(unsafe_code)]

use crate::act::Q8Row;
use crate::isa::Isa;
use crate::quant::{
    to_f16_le, BlockQ4_0, BlockQ4_0x8, BlockQ4_1, BlockQ8_0, BlockQ8_0x8, BlockQ8_1, QK,
};
use crate::simd::aarch64::{int_rows, neon_k};
use crate::simd::{scalar, Kernels};
use crate::KernelError;
use core::arch::aarch64::*;

/// The NEON kernels, if this CPU has NEON (every aarch64 CPU does; little-endian only).
pub fn kernels() -> Option<&'static Kernels> {
    if cfg!(target_endian = "little") && std::arch::is_aarch64_feature_detected!("neon") {
        Some(&KERNELS)
    } else {
        None
    }
}

/// Reachable only through [`kernels`] (see the module docs).
static KERNELS: Kernels = Kernels {
    isa: Isa::Neon,
    quantize_q8_0,
    quantize_q8_1,
    rows_q4_0,
    rows_q8_0,
    rows_q4_1,
    rows_q5_0: neon_k::rows_q5_0,
    rows_q5_1: neon_k::rows_q5_1,
    rows_iq4_nl: neon_k::rows_iq4_nl,
    rows_q2_k: neon_k::rows_q2_k,
    rows_q3_k: neon_k::rows_q3_k,
    rows_q4_k: neon_k::rows_q4_k,
    rows_q5_k: neon_k::rows_q5_k,
    rows_q6_k: neon_k::rows_q6_k,
    rows_iq4_xs: neon_k::rows_iq4_xs,
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
// ---- the table is handed out only after NEON was detected. The dotprod table (built after
// ---- the NEON and dotprod checks) uses the `pub(super)` ones.

pub(super) fn quantize_q8_0(
    x: &[f32],
    blocks: &mut [BlockQ8_0],
    d: &mut [f32],
    sum: &mut [i32],
) -> Result<(), KernelError> {
    // SAFETY: reachable only through `kernels()` (or the dotprod table), after the NEON check.
    if unsafe { q8_0_fast(x, blocks, d, sum) } {
        Ok(())
    } else {
        // Bad lengths, a non-finite input, an f16 overflow or an underflowing scale: the
        // reference reports the error or writes the rare block (same bytes either way).
        scalar::quantize_q8_0(x, blocks, d, sum)
    }
}

pub(super) fn quantize_q8_1(x: &[f32], blocks: &mut [BlockQ8_1]) -> Result<(), KernelError> {
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

fn rows_q4_0x8(w: &[BlockQ4_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q4_0x8_rows(w, a, y) }
}

fn rows_q8_0x8(w: &[BlockQ8_0x8], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { q8_0x8_rows(w, a, y) }
}

/// Prompt products: this table's row kernel once per activation row (no register tile yet).
fn gemm_q4_0x8(w: &[BlockQ4_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    crate::simd::gemm_by_rows(rows_q4_0x8, w, a, y);
}

/// As [`gemm_q4_0x8`], for Q8_0x8.
fn gemm_q8_0x8(w: &[BlockQ8_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    crate::simd::gemm_by_rows(rows_q8_0x8, w, a, y);
}

pub(super) fn dot_f32(x: &[u8], y: &[f32]) -> f32 {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { f32_dot(x, y) }
}

pub(super) fn dot_f16(x: &[u8], y: &[f32]) -> f32 {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { f16_dot(x, y) }
}

pub(super) fn axpy_f32(a: f32, x: &[u8], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { f32_axpy(a, x, y) }
}

pub(super) fn axpy_f16(a: f32, x: &[u8], y: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { f16_axpy(a, x, y) }
}

pub(super) fn scores_f16(x: &[u8], stride: usize, q: &[f32], scale: f32, out: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { f16_scores(x, stride, q, scale, out) }
}

pub(super) fn mix_f16(x: &[u8], stride: usize, w: &[f32], out: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`.
    unsafe { f16_mix(x, stride, w, out) }
}

// ---- Loads and stores through fixed-size references.

#[inline]
#[target_feature(enable = "neon")]
fn load_u8x16(p: &[u8; 16]) -> uint8x16_t {
    // SAFETY: 16 readable bytes; `ld1` of bytes has no alignment requirement.
    unsafe { vld1q_u8(p.as_ptr()) }
}

#[inline]
#[target_feature(enable = "neon")]
pub(super) fn load_f32x4(p: &[f32; 4]) -> float32x4_t {
    // SAFETY: 4 readable, aligned f32.
    unsafe { vld1q_f32(p.as_ptr()) }
}

#[inline]
#[target_feature(enable = "neon")]
fn store_f32x4(p: &mut [f32; 4], v: float32x4_t) {
    // SAFETY: 4 writable, aligned f32.
    unsafe { vst1q_f32(p.as_mut_ptr(), v) }
}

/// 4 little-endian f32 from 16 bytes.
#[inline]
#[target_feature(enable = "neon")]
fn load_f32x4_bytes(p: &[u8; 16]) -> float32x4_t {
    vreinterpretq_f32_u8(load_u8x16(p))
}

/// The two 16-byte halves of 32 signed bytes.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn act_halves(p: &[i8; QK]) -> (int8x16_t, int8x16_t) {
    // SAFETY: 32 readable bytes; `ld1` of bytes has no alignment requirement.
    let v = unsafe { vld1q_s8_x2(p.as_ptr()) };
    (v.0, v.1)
}

/// The two 16-byte halves of 32 unsigned bytes.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn u8_halves(p: &[u8; 32]) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: 32 readable bytes; `ld1` of bytes has no alignment requirement.
    let v = unsafe { vld1q_u8_x2(p.as_ptr()) };
    (v.0, v.1)
}

/// Stores 8 lanes (`lo` = lanes 0..4, `hi` = lanes 4..8).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn store8(p: &mut [f32; 8], lo: float32x4_t, hi: float32x4_t) {
    // SAFETY: 8 writable, aligned f32.
    unsafe { vst1q_f32_x2(p.as_mut_ptr(), float32x4x2_t(lo, hi)) }
}

// ---- f16 widening (exact).

/// The 4 f16 values (bit patterns) of `h`, widened to f32 with `fcvtl`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn widen_f16x4(h: uint16x4_t) -> float32x4_t {
    let out: float32x4_t;
    // SAFETY: `fcvtl` is ARMv8.0 FP/ASIMD (present with NEON); it reads and writes only the
    // two named registers.
    unsafe {
        core::arch::asm!(
            "fcvtl {o:v}.4s, {h:v}.4h",
            h = in(vreg) h,
            o = lateout(vreg) out,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    out
}

/// The 8 f16 values of `h`, widened: (lanes 0..4, lanes 4..8).
#[inline]
#[target_feature(enable = "neon")]
fn widen_f16x8(h: uint16x8_t) -> (float32x4_t, float32x4_t) {
    let hi: float32x4_t;
    // SAFETY: as in `widen_f16x4` (`fcvtl2` is the upper-half form).
    unsafe {
        core::arch::asm!(
            "fcvtl2 {o:v}.4s, {h:v}.8h",
            h = in(vreg) h,
            o = lateout(vreg) hi,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    (widen_f16x4(vget_low_u16(h)), hi)
}

/// 8 little-endian f16 from 16 bytes, widened.
#[inline]
#[target_feature(enable = "neon")]
fn load_f16x8_bytes(p: &[u8; 16]) -> (float32x4_t, float32x4_t) {
    widen_f16x8(vreinterpretq_u16_u8(load_u8x16(p)))
}

/// The 8 f16 scales of a row-interleaved block, widened.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn scales8(d: &[[u8; 2]; 8]) -> (float32x4_t, float32x4_t) {
    load_f16x8_bytes(zerocopy::transmute_ref!(d))
}

/// The f16 fields `field(r)` of 4 rows, widened.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn scales4(field: impl Fn(usize) -> [u8; 2]) -> float32x4_t {
    let h: [u16; 4] = std::array::from_fn(|r| u16::from_le_bytes(field(r)));
    // SAFETY: 4 readable, aligned u16.
    widen_f16x4(unsafe { vld1_u16(h.as_ptr()) })
}

// ---- Integer helpers.

/// `acc` plus the 16 products of `a` and `b`, in some lane (each product exact in i16,
/// accumulated pairwise in i32).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    vpadalq_s16(acc, vmull_high_s8(a, b))
}

/// Lane `r` is the sum of the 4 lanes of `s[r]`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn row_sums(s: &[int32x4_t; 4]) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(s[0], s[1]), vpaddq_s32(s[2], s[3]))
}

/// The nibbles of a Q4_1 block: (elements 0..16, elements 16..32), values 0..15.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn nibbles(qs: &[u8; 16]) -> (int8x16_t, int8x16_t) {
    let q = load_u8x16(qs);
    let lo = vandq_u8(q, vdupq_n_u8(0x0F));
    let hi = vshrq_n_u8::<4>(q);
    (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
}

/// Low and high nibbles of 16 bytes minus 8 (values -8..7).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn split_minus_8(q: uint8x16_t) -> (int8x16_t, int8x16_t) {
    let eight = vdupq_n_s8(8);
    let lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F)));
    let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q));
    (vsubq_s8(lo, eight), vsubq_s8(hi, eight))
}

/// The nibbles of a Q4_0 block minus 8: (elements 0..16, elements 16..32).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn nibbles_minus_8(qs: &[u8; 16]) -> (int8x16_t, int8x16_t) {
    split_minus_8(load_u8x16(qs))
}

/// The 8 four-byte groups of an activation block as i32 (group `c`: values `4c..4c + 4`).
#[inline]
pub(super) fn act_groups(qs: &[i8; QK]) -> [i32; 8] {
    zerocopy::transmute!(*qs)
}

/// Groups `c` and `c + 4` (`c < 4`) of an activation block, each repeated in every 32-bit
/// lane: the activations of a Q4_0x8 chunk's low and high nibbles.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn act_groups_at(g: &[i32; 8], c: usize) -> (int8x16_t, int8x16_t) {
    let c = c & 3;
    (
        vreinterpretq_s8_s32(vdupq_n_s32(g[c])),
        vreinterpretq_s8_s32(vdupq_n_s32(g[c + 4])),
    )
}

// ---- Row products.

/// Runs `block(rows, b)` for 4 rows at a time, where `rows[r]` is the `r`-th row of the
/// group (the last group repeats its last row to fill 4 lanes; those lanes are dropped), and
/// accumulates the returned f32 lanes over the blocks, from 0 (as the reference does).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn by_four<W>(
    w: &[W],
    nb: usize,
    y: &mut [f32],
    mut block: impl FnMut(&[&[W]; 4], usize) -> float32x4_t,
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
            acc = vaddq_f32(acc, block(&group, b));
        }
        let mut lanes = [0.0f32; 4];
        store_f32x4(&mut lanes, acc);
        out.copy_from_slice(&lanes[..out.len()]);
    }
}

/// The integer dots of the 8 rows of a Q4_0x8 block (nibbles minus 8) with the activation
/// groups `g`: (rows 0..4, rows 4..8). Each i16 lane sums 8 products of at most
/// 8 * 128 = 1024 in magnitude (a low and a high nibble per chunk), so it cannot overflow.
#[inline]
#[target_feature(enable = "neon")]
fn q4_0x8_sums(blk: &BlockQ4_0x8, g: &[i32; 8]) -> (int32x4_t, int32x4_t) {
    // p[k]: rows 2k and 2k + 1, 4 i16 lanes each.
    let mut p = [vdupq_n_s16(0); 4];
    for (c, chunk) in blk.qs.iter().enumerate() {
        // Byte 4r + i of the chunk: element 4c + i (low nibble) and 4c + i + 16 (high
        // nibble) of row r; `lo`/`hi` hold those activations in every 4-byte group.
        let (lo, hi) = act_groups_at(g, c);
        let (v0, v1) = u8_halves(chunk);
        let (l0, h0) = split_minus_8(v0);
        let (l1, h1) = split_minus_8(v1);
        p[0] = vmlal_s8(p[0], vget_low_s8(l0), vget_low_s8(lo));
        p[0] = vmlal_s8(p[0], vget_low_s8(h0), vget_low_s8(hi));
        p[1] = vmlal_high_s8(p[1], l0, lo);
        p[1] = vmlal_high_s8(p[1], h0, hi);
        p[2] = vmlal_s8(p[2], vget_low_s8(l1), vget_low_s8(lo));
        p[2] = vmlal_s8(p[2], vget_low_s8(h1), vget_low_s8(hi));
        p[3] = vmlal_high_s8(p[3], l1, lo);
        p[3] = vmlal_high_s8(p[3], h1, hi);
    }
    // vpaddlq: [2k, 2k, 2k + 1, 2k + 1] in i32; vpaddq: one row per lane.
    let s = [
        vpaddlq_s16(p[0]),
        vpaddlq_s16(p[1]),
        vpaddlq_s16(p[2]),
        vpaddlq_s16(p[3]),
    ];
    (vpaddq_s32(s[0], s[1]), vpaddq_s32(s[2], s[3]))
}

/// The integer dots of the 8 rows of a Q8_0x8 block with the activation groups `g`:
/// (rows 0..4, rows 4..8). Each product (at most 128 * 128 = 16384) has its own i16 lane
/// and is added pairwise into i32.
#[inline]
#[target_feature(enable = "neon")]
fn q8_0x8_sums(blk: &BlockQ8_0x8, g: &[i32; 8]) -> (int32x4_t, int32x4_t) {
    // s[k]: rows 2k and 2k + 1, 2 i32 lanes each.
    let mut s = [vdupq_n_s32(0); 4];
    for (&gc, chunk) in g.iter().zip(&blk.qs) {
        // Bytes 4r..4r + 4 of chunk c: elements 4c..4c + 4 of row r.
        let av = vreinterpretq_s8_s32(vdupq_n_s32(gc));
        let (w0, w1) = act_halves(chunk);
        s[0] = vpadalq_s16(s[0], vmull_s8(vget_low_s8(w0), vget_low_s8(av)));
        s[1] = vpadalq_s16(s[1], vmull_high_s8(w0, av));
        s[2] = vpadalq_s16(s[2], vmull_s8(vget_low_s8(w1), vget_low_s8(av)));
        s[3] = vpadalq_s16(s[3], vmull_high_s8(w1, av));
    }
    (vpaddq_s32(s[0], s[1]), vpaddq_s32(s[2], s[3]))
}

int_rows!(#[target_feature(enable = "neon")]; dot, q4_0x8_sums, q8_0x8_sums);

// ---- Activation quantization.

/// One block quantized as the reference does: the 32 values in order, the f32 scale
/// `d = amax / 127` (before f16 rounding) and the sum of the values. `None` for a block the
/// fast path does not handle exactly (non-finite input, a scale that overflows f16, or one
/// so small that `1 / d` is infinite).
#[inline]
#[target_feature(enable = "neon")]
fn quantize_block(x: &[f32; QK]) -> Option<([i8; QK], f32, i32)> {
    let chunks = x.as_chunks::<4>().0;
    let v: [float32x4_t; 8] = std::array::from_fn(|i| load_f32x4(&chunks[i]));
    let a = v.map(|v| vabsq_f32(v));
    // Finite: |x| <= f32::MAX (false for NaN and infinities).
    let max = vdupq_n_f32(f32::MAX);
    let ok = a.iter().fold(vdupq_n_u32(u32::MAX), |ok, &ai| {
        vandq_u32(ok, vcleq_f32(ai, max))
    });
    if vminvq_u32(ok) != u32::MAX {
        return None;
    }
    let m = a.iter().fold(vdupq_n_f32(0.0), |m, &ai| vmaxq_f32(m, ai));
    let amax = vmaxvq_f32(m);
    // The reference's arithmetic (quant::q8_0): d = amax / 127, id = 1 / d (or 0).
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    if !id.is_finite() || half::f16::from_f32(d).is_infinite() {
        return None;
    }
    let idv = vdupq_n_f32(id);
    // roundf (half away from zero) is `frinta`; the result is an integer of magnitude
    // <= 127, so the conversion and the narrowing are exact.
    let q = v.map(|v| vcvtq_s32_f32(vrndaq_f32(vmulq_f32(v, idv))));
    let total = q.iter().fold(vdupq_n_s32(0), |s, &qi| vaddq_s32(s, qi));
    let n16: [int16x8_t; 4] =
        std::array::from_fn(|i| vcombine_s16(vmovn_s32(q[2 * i]), vmovn_s32(q[2 * i + 1])));
    let n8 = int8x16x2_t(
        vcombine_s8(vmovn_s16(n16[0]), vmovn_s16(n16[1])),
        vcombine_s8(vmovn_s16(n16[2]), vmovn_s16(n16[3])),
    );
    let mut out = [0i8; QK];
    // SAFETY: 32 writable bytes; `st1` of bytes has no alignment requirement.
    unsafe { vst1q_s8_x2(out.as_mut_ptr(), n8) };
    Some((out, d, vaddvq_s32(total)))
}

/// Q8_0 with scales and sums; `false` when the reference must do the row.
#[target_feature(enable = "neon")]
fn q8_0_fast(x: &[f32], blocks: &mut [BlockQ8_0], d: &mut [f32], sum: &mut [i32]) -> bool {
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
        b.qs = q;
        b.d = to_f16_le(scale);
        *df = b.d();
        *s = total;
    }
    true
}

/// Q8_1; `false` when the reference must do the row.
#[target_feature(enable = "neon")]
fn q8_1_fast(x: &[f32], blocks: &mut [BlockQ8_1]) -> bool {
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
        b.qs = q;
        b.d = to_f16_le(scale);
        b.s = to_f16_le(s);
    }
    true
}

// ---- Float rows (16 lanes, `quant::float::dot_in_lanes` order).

/// Folds 16 lanes (`l[k]` = lanes `4k..4k + 4`) in halves, as
/// [`crate::quant::float::dot_in_lanes`] does.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn fold16(l: [float32x4_t; 4]) -> f32 {
    // l[i] += l[i + 8] (i < 8), then l[i] += l[i + 4] (i < 4).
    let l4 = vaddq_f32(vaddq_f32(l[0], l[2]), vaddq_f32(l[1], l[3]));
    // l[i] += l[i + 2] (i < 2), then l[0] + l[1].
    let l2 = vadd_f32(vget_low_f32(l4), vget_high_f32(l4));
    vget_lane_f32::<0>(l2) + vget_lane_f32::<1>(l2)
}

#[target_feature(enable = "neon")]
fn f32_dot(x: &[u8], y: &[f32]) -> f32 {
    let n = (x.len() / 4).min(y.len());
    let full = n - n % 16;
    let (xs, ys) = (
        x[..4 * full].as_chunks::<64>().0,
        y[..full].as_chunks::<16>().0,
    );
    let mut l = [vdupq_n_f32(0.0); 4];
    for (xc, yc) in xs.iter().zip(ys) {
        let (xq, yq) = (xc.as_chunks::<16>().0, yc.as_chunks::<4>().0);
        for ((acc, xv), yv) in l.iter_mut().zip(xq).zip(yq) {
            *acc = vaddq_f32(*acc, vmulq_f32(load_f32x4_bytes(xv), load_f32x4(yv)));
        }
    }
    let mut sum = fold16(l);
    for (b, &yv) in x[4 * full..4 * n].chunks_exact(4).zip(&y[full..n]) {
        sum += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * yv;
    }
    sum
}

#[target_feature(enable = "neon")]
fn f16_dot(x: &[u8], y: &[f32]) -> f32 {
    let n = (x.len() / 2).min(y.len());
    let full = n - n % 16;
    let (xs, ys) = (
        x[..2 * full].as_chunks::<32>().0,
        y[..full].as_chunks::<16>().0,
    );
    let mut l = [vdupq_n_f32(0.0); 4];
    for (xc, yc) in xs.iter().zip(ys) {
        let (x0, x1) = u8_halves(xc);
        let (w0, w1) = widen_f16x8(vreinterpretq_u16_u8(x0));
        let (w2, w3) = widen_f16x8(vreinterpretq_u16_u8(x1));
        let yq = yc.as_chunks::<4>().0;
        for ((acc, xv), yv) in l.iter_mut().zip([w0, w1, w2, w3]).zip(yq) {
            *acc = vaddq_f32(*acc, vmulq_f32(xv, load_f32x4(yv)));
        }
    }
    let mut sum = fold16(l);
    for (b, &yv) in x[2 * full..2 * n].chunks_exact(2).zip(&y[full..n]) {
        sum += half::f16::from_le_bytes([b[0], b[1]]).to_f32() * yv;
    }
    sum
}

#[target_feature(enable = "neon")]
fn f32_axpy(a: f32, x: &[u8], y: &mut [f32]) {
    let n = (x.len() / 4).min(y.len());
    let full = n - n % 4;
    let av = vdupq_n_f32(a);
    let (xs, ys) = (x[..4 * full].as_chunks::<16>().0, &mut y[..full]);
    for (xc, yc) in xs.iter().zip(ys.as_chunks_mut::<4>().0) {
        let v = vaddq_f32(load_f32x4(yc), vmulq_f32(av, load_f32x4_bytes(xc)));
        store_f32x4(yc, v);
    }
    for (b, o) in x[4 * full..4 * n].chunks_exact(4).zip(&mut y[full..n]) {
        *o += a * f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

#[target_feature(enable = "neon")]
fn f16_axpy(a: f32, x: &[u8], y: &mut [f32]) {
    let n = (x.len() / 2).min(y.len());
    let full = n - n % 8;
    let av = vdupq_n_f32(a);
    let (xs, ys) = (x[..2 * full].as_chunks::<16>().0, &mut y[..full]);
    for (xc, yc) in xs.iter().zip(ys.as_chunks_mut::<8>().0) {
        let (w0, w1) = load_f16x8_bytes(xc);
        for (yv, wv) in yc.as_chunks_mut::<4>().0.iter_mut().zip([w0, w1]) {
            let v = vaddq_f32(load_f32x4(yv), vmulq_f32(av, wv));
            store_f32x4(yv, v);
        }
    }
    for (b, o) in x[2 * full..2 * n].chunks_exact(2).zip(&mut y[full..n]) {
        *o += a * half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

// ---- Attention over f16 rows.

#[target_feature(enable = "neon")]
fn f16_scores(x: &[u8], stride: usize, q: &[f32], scale: f32, out: &mut [f32]) {
    for (t, o) in out.iter_mut().enumerate() {
        match crate::simd::strided_row(x, t, stride, q.len(), 2) {
            Some(row) => *o = f16_dot(row, q) * scale,
            None => return,
        }
    }
}

/// `out += sum_t w[t] * row t`, one `axpy_f16` per row in order of `t` (as the reference).
#[target_feature(enable = "neon")]
fn f16_mix(x: &[u8], stride: usize, w: &[f32], out: &mut [f32]) {
    for (t, &a) in w.iter().enumerate() {
        match crate::simd::strided_row(x, t, stride, out.len(), 2) {
            Some(row) => f16_axpy(a, row, out),
            None => return,
        }
    }
}
