//! Helpers shared by the per-type tests.

use super::{dequantize_row, quantize_row, QK};
use crate::GgmlType;
use proptest::prelude::*;

/// A small deterministic generator (64-bit LCG, Knuth's constants), so tests need no RNG crate
/// and every run sees the same data.
pub struct Lcg(pub u64);

impl Lcg {
    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    /// `n` values uniform in [-scale, scale).
    pub fn uniform_vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next_f32() * 2.0 - 1.0) * scale)
            .collect()
    }
}

pub fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

pub fn sum_abs_products(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 * y as f64).abs())
        .sum()
}

/// Quantizes `nblocks` blocks of uniform [-1, 1) data to `ty` and back, and returns the RMS of
/// the error of each element divided by `step(block)` (the block's quantization step).
pub fn normalized_rmse(ty: GgmlType, nblocks: usize, step: impl Fn(&[f32]) -> f32) -> f64 {
    let x = Lcg(12345).uniform_vec(nblocks * QK, 1.0);
    let mut bytes = vec![0u8; nblocks * ty.block_bytes()];
    quantize_row(ty, &x, &mut bytes).unwrap();
    let mut back = vec![0.0f32; x.len()];
    dequantize_row(ty, &bytes, &mut back).unwrap();
    let mut sum = 0.0f64;
    for (xb, yb) in x.chunks_exact(QK).zip(back.chunks_exact(QK)) {
        let s = step(xb) as f64;
        for (&a, &b) in xb.iter().zip(yb) {
            let e = (a as f64 - b as f64) / s;
            sum += e * e;
        }
    }
    (sum / x.len() as f64).sqrt()
}

/// One block of values: uniform in [-1, 1) times 2^e for e in [-30, 15] (so every type's
/// scale stays within f16, down to f16 subnormals and zero), with some exact zeros and
/// repeated extremes mixed in.
pub fn block_strategy() -> impl Strategy<Value = [f32; QK]> {
    let element = prop_oneof![
        8 => -1.0f32..1.0,
        1 => Just(0.0f32),
        1 => Just(1.0f32),
        1 => Just(-1.0f32),
    ];
    (proptest::array::uniform32(element), -30i32..=15)
        .prop_map(|(a, e)| a.map(|v| v * 2f32.powi(e)))
}
