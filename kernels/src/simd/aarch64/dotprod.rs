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
static KERNELS: Kernels = Kernels {
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

/// Prompt products: this table's row kernel once per activation row (no register tile yet).
fn gemm_q4_0x8(w: &[BlockQ4_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    crate::simd::gemm_by_rows(rows_q4_0x8, w, a, y);
}

/// As [`gemm_q4_0x8`], for Q8_0x8.
fn gemm_q8_0x8(w: &[BlockQ8_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
    crate::simd::gemm_by_rows(rows_q8_0x8, w, a, y);
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
