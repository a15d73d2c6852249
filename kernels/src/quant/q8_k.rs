//! Q8_K: 256 values as signed bytes times an f32 scale, plus the sum of each 16 (292 bytes).
//! The activation format of the k-quants and IQ4_XS (never stored in files).

use super::k_common::nearest_int;
use super::{check_len, Block, RowBlock};
use crate::types::QK_K;
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One Q8_K block, ggml's `block_q8_K`: value `j` is `qs[j] * d`; `bsums[g]` is the sum of
/// `qs[16g..16g + 16]` (little-endian i16).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct BlockQ8K {
    /// The scale, an f32 stored little-endian.
    pub d: [u8; 4],
    /// The quantized values.
    pub qs: [i8; QK_K],
    /// Sums of each 16 values, little-endian i16.
    pub bsums: [[u8; 2]; QK_K / 16],
}

const _: () = assert!(size_of::<BlockQ8K>() == 292);
const _: () = assert!(align_of::<BlockQ8K>() == 1);

impl Default for BlockQ8K {
    fn default() -> Self {
        Self {
            d: [0; 4],
            qs: [0; QK_K],
            bsums: [[0; 2]; QK_K / 16],
        }
    }
}

impl Block for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
}

impl BlockQ8K {
    /// The scale.
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }

    /// The sum of values `16g..16g + 16`.
    pub fn bsum(&self, g: usize) -> i32 {
        self.bsums
            .get(g)
            .map_or(0, |b| i32::from(i16::from_le_bytes(*b)))
    }

    /// Quantizes one block exactly as ggml does: `iscale = -127 / max` where `max` is the
    /// first value of largest magnitude (with its sign), `q = min(127, nearest_int(iscale *
    /// x))`, `d = 1 / iscale`; all zeros give `d = 0` and zero values (and zero sums: ggml
    /// leaves the sums of such a block unwritten, which no product reads since `d = 0`).
    // Port of `quantize_row_q8_K_ref`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn quantize(x: &[f32; QK_K]) -> Self {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in x {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            return Self::default();
        }
        let iscale = -127.0 / max;
        let mut qs = [0i8; QK_K];
        for (q, &v) in qs.iter_mut().zip(x) {
            // |iscale * x| <= 127 (up to rounding), so the value fits in i8.
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        let mut bsums = [[0u8; 2]; QK_K / 16];
        for (s, g) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
            let sum: i32 = g.iter().map(|&q| i32::from(q)).sum();
            *s = (sum as i16).to_le_bytes();
        }
        Self {
            d: (1.0 / iscale).to_le_bytes(),
            qs,
            bsums,
        }
    }

    /// Dequantizes the block: `out[j] = d * qs[j]`.
    // Port of `dequantize_row_q8_K`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = d * f32::from(q);
        }
    }
}

// Finite inputs only (as every type); the f32 scale cannot overflow: |d| = |max| / 127.
impl RowBlock for BlockQ8K {
    const LEN: usize = QK_K;

    fn from_float(x: &[f32], _first: usize) -> Result<Self, KernelError> {
        Ok(Self::quantize(super_values::<Self>(x)?))
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(super_values_mut::<Self>(out)?);
        Ok(())
    }
}

/// `x` as the values of one super-block, or the error of a wrong length.
pub(crate) fn super_values<B: RowBlock>(x: &[f32]) -> Result<&[f32; QK_K], KernelError> {
    x.try_into().map_err(|_| KernelError::SizeMismatch {
        what: "block elements",
        expected: B::LEN,
        got: x.len(),
    })
}

/// `out` as the values of one super-block, or the error of a wrong length.
pub(crate) fn super_values_mut<B: RowBlock>(
    out: &mut [f32],
) -> Result<&mut [f32; QK_K], KernelError> {
    let len = out.len();
    out.try_into().map_err(|_| KernelError::SizeMismatch {
        what: "block elements",
        expected: B::LEN,
        got: len,
    })
}

/// Quantizes an activation row to Q8_K (the scalar reference, used by every kernel path).
pub fn quantize_row_q8_k(x: &[f32], blocks: &mut [BlockQ8K]) -> Result<(), KernelError> {
    check_len("elements of the blocks", blocks.len() * QK_K, x.len())?;
    RowBlock::quantize_row(x, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_block() {
        // max = -2 (first of largest magnitude): iscale = 63.5, d = 1/63.5.
        let mut x = [0.0f32; QK_K];
        x[0] = -2.0; // -127
        x[1] = 2.0; // 127
        x[2] = 1.0; // 63.5 -> 64 (ties to even)
        x[3] = 0.03; // 1.905 -> 2
        x[20] = -1.0; // -63.5 -> -64
        let b = BlockQ8K::quantize(&x);
        assert_eq!(&b.qs[..4], &[-127, 127, 64, 2]);
        assert_eq!(b.qs[20], -64);
        assert_eq!(b.d(), 1.0 / 63.5);
        assert_eq!((b.bsum(0), b.bsum(1)), (66, -64));
        // Positive max: iscale negative, values flip sign and d is negative.
        let mut x = [0.0f32; QK_K];
        x[7] = 4.0;
        x[8] = -1.0;
        let b = BlockQ8K::quantize(&x);
        assert_eq!((b.qs[7], b.qs[8]), (-127, 32)); // 31.75 -> 32
        assert_eq!(b.d(), 1.0 / (-127.0f32 / 4.0));
        let mut out = [0.0f32; QK_K];
        b.dequantize(&mut out);
        assert!((out[7] - 4.0).abs() < 1e-6);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(BlockQ8K::quantize(&[0.0; QK_K]), BlockQ8K::default());
        // A huge value: the rest round to 0.
        let mut x = [1.0f32; QK_K];
        x[100] = 1.0e30;
        let b = BlockQ8K::quantize(&x);
        assert_eq!(b.qs[100], -127);
        assert!(b.qs.iter().enumerate().all(|(j, &q)| j == 100 || q == 0));
    }

    #[test]
    fn nearest_int_ties_to_even() {
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-0.4), 0);
        assert_eq!(nearest_int(4194303.0), 4194303);
    }
}
