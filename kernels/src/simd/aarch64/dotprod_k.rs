//! The `sdot` kernels for llama.cpp's types with one integer total per block or group (Q5_0,
//! Q5_1, IQ4_NL, Q2_K, IQ4_XS): [`super::neon_k`]'s `sum_rows!` over
//! [`super::dotprod::sdot`], with the same float operations in the same order, so the bits
//! are the scalar reference's. (The k-quants with ggml's 8 lanes per block and BF16 use
//! [`super::neon_k`]'s kernels in the dotprod table; see that module.)
//!
//! Safety: every function here is `#[target_feature(enable = "neon,dotprod")]`, and the safe
//! wrappers are reachable only through the dotprod table, which
//! [`super::dotprod::kernels`] hands out after detecting NEON and dotprod.
#![allow(unsafe_code)]

use super::dotprod::sdot;
use super::neon::{act_halves, by_four, nibbles, row_sums, u8_halves};
use super::neon_k::{
    act32, bsums, by_four_acc, crumbs, f16x2, iq4_table, iq4_values, load_u8, q5_levels,
    scales4_times, sum_rows,
};
use crate::act::Q8Row;
use crate::quant::{BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ5_0, BlockQ5_1, BlockQ8K, BlockQ8_1};
use core::arch::aarch64::*;

pub(super) fn rows_q5_0(w: &[BlockQ5_0], a: Q8Row<'_>, y: &mut [f32]) {
    // SAFETY: reachable only through the dotprod table, after the NEON and dotprod checks.
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

sum_rows!(#[target_feature(enable = "neon,dotprod")]; sdot);
