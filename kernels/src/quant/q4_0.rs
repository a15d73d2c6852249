//! Q4_0: 32 values as 4-bit offsets from -8 times one f16 scale (18 bytes). The scale is the
//! value of largest magnitude (with its sign) divided by -8, so that value maps exactly to -8
//! and the 16 levels cover [-8, 7] steps.

use super::q8_0::BlockQ8_0;
use super::{
    block_values, block_values_mut, c_float_to_i8, checked_f16, f16_le, to_f16_le, Block, RowBlock,
    QK,
};
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One Q4_0 block, ggml's `block_q4_0`: element `j < 16` is the low nibble of `qs[j]`,
/// element `j + 16` its high nibble; value = `(nibble - 8) * d`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// The scale, an f16 stored little-endian.
    pub d: [u8; 2],
    /// The nibbles.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(size_of::<BlockQ4_0>() == 18);
const _: () = assert!(align_of::<BlockQ4_0>() == 1);

impl Block for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
}

impl BlockQ4_0 {
    /// The scale as f32.
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }

    /// Quantizes one block exactly as ggml does, with no checks (an overflowing scale is
    /// stored as f16 infinity).
    pub fn quantize(x: &[f32; QK]) -> Self {
        Self::quantize_with_scale(x).0
    }

    /// [`BlockQ4_0::quantize`], also returning the f32 scale before f16 rounding.
    // Port of `quantize_row_q4_0_ref`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    fn quantize_with_scale(x: &[f32; QK]) -> (Self, f32) {
        // The first value of largest magnitude (strict `<`: ties keep the earlier one).
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        // Note: an all-zero block gives d = 0.0 / -8 = -0.0, stored as 0x8000.
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        // C: MIN(15, (int8_t)(x*id + 8.5f)), i.e. round half up to [0, 16], then clamp.
        let level = |v: f32| -> u8 { c_float_to_i8(v * id + 8.5).min(15) as u8 };
        let (lo, hi) = x.split_at(QK / 2);
        let mut qs = [0u8; QK / 2];
        for ((q, &v0), &v1) in qs.iter_mut().zip(lo).zip(hi) {
            // C: qs[j] = xi0; qs[j] |= xi1 << 4 (the shift keeps the low byte).
            *q = level(v0) | (level(v1) << 4);
        }
        let block = Self {
            d: to_f16_le(d),
            qs,
        };
        (block, d)
    }

    /// Dequantizes the block: `out[j] = (nibble_j - 8) * d`.
    // Port of `dequantize_row_q4_0`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d();
        let (lo, hi) = out.split_at_mut(QK / 2);
        for ((o0, o1), &q) in lo.iter_mut().zip(hi).zip(&self.qs) {
            *o0 = (i32::from(q & 0x0F) - 8) as f32 * d;
            *o1 = (i32::from(q >> 4) - 8) as f32 * d;
        }
    }
}

// Non-finite inputs and scales beyond f16 (a magnitude >= 8 * 65520) are errors; otherwise
// the blocks are ggml's.
impl RowBlock for BlockQ4_0 {
    const LEN: usize = QK;

    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError> {
        let (block, d) = Self::quantize_with_scale(block_values::<Self>(x)?);
        checked_f16(GgmlType::Q4_0, first, "scale", d)?;
        Ok(block)
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(block_values_mut::<Self>(out)?);
        Ok(())
    }
}

/// `sum_i x[i] * y[i]` for Q4_0 weights and Q8_0 activations: per block the exact integer dot
/// of `(nibble - 8)` with `qs`, then `sumi * dx * dy` (in that order), accumulated in one f32.
// Port of `ggml_vec_dot_q4_0_q8_0_generic`, ggml-org/llama.cpp ggml/src/ggml-cpu/quants.c
// @aec5bf1: `sumf += sumi*GGML_CPU_FP16_TO_FP32(x.d)*GGML_CPU_FP16_TO_FP32(y.d)`.
pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> Result<f32, KernelError> {
    super::check_len("activation blocks", x.len(), y.len())?;
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let (ylo, yhi) = by.qs.split_at(QK / 2);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for ((&q, &y0), &y1) in bx.qs.iter().zip(ylo).zip(yhi) {
            sumi0 += (i32::from(q & 0x0F) - 8) * i32::from(y0);
            sumi1 += (i32::from(q >> 4) - 8) * i32::from(y1);
        }
        let sumi = sumi0 + sumi1;
        sumf += sumi as f32 * bx.d() * by.d();
    }
    Ok(sumf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize_row;
    use crate::quant::tests_common::*;
    use proptest::prelude::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        half::f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn hand_computed_block_negative_max() {
        // max = -8 (first of the two magnitude-8 values) -> d = 1.0 (0x3C00), id = 1, and
        // level = trunc(x + 8.5) clamped to 15: round half up.
        let mut x = [0.0f32; 32];
        x[0] = -8.0; // 0.5 -> 0
        x[16] = 8.0; // 16.5 -> 16 -> clamped 15; byte 0 = 0xF0
        x[1] = 7.0; // 15.5 -> 15
        x[17] = 0.49; // 8.99 -> 8; byte 1 = 0x8F
        x[2] = 0.5; // 9.0 -> 9
        x[18] = -0.5; // 8.0 -> 8; byte 2 = 0x89
        x[3] = -0.51; // 7.99 -> 7
        x[19] = -7.6; // 0.9 -> 0; byte 3 = 0x07
                      // The rest are 0 -> 8, bytes 0x88.
        let b = BlockQ4_0::quantize(&x);
        let mut expected = [
            0x00u8, 0x3C, 0xF0, 0x8F, 0x89, 0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        for e in &mut expected[6..] {
            *e = 0x88;
        }
        assert_eq!(b.as_bytes(), &expected);
        let mut out = [0.0f32; 32];
        b.dequantize(&mut out);
        assert_eq!(
            (out[0], out[16], out[1], out[17], out[2], out[18], out[3], out[19]),
            (-8.0, 7.0, 7.0, 0.0, 1.0, 0.0, -1.0, -8.0)
        );
    }

    #[test]
    fn hand_computed_block_positive_max() {
        // max = 4 -> d = -0.5 (f16 0xB800), id = -2: x = 4 -> -8 + 8.5 -> 0, x = -4 -> 16.5
        // -> 15, x = 1 -> 6.5 -> 6, x = -1.3 -> 11.1 -> 11.
        let mut x = [0.0f32; 32];
        x[5] = 4.0;
        x[21] = -4.0;
        x[6] = 1.0;
        x[22] = -1.3;
        let b = BlockQ4_0::quantize(&x);
        assert_eq!(b.d, [0x00, 0xB8]);
        assert_eq!(b.qs[5], 0xF0);
        assert_eq!(b.qs[6], 0xB6);
        assert_eq!(b.qs[0], 0x88);
        let mut out = [0.0f32; 32];
        b.dequantize(&mut out);
        // (0 - 8) * -0.5 = 4, (15 - 8) * -0.5 = -3.5, (6 - 8) * -0.5 = 1, (11 - 8) * -0.5 = -1.5
        assert_eq!((out[5], out[21], out[6], out[22]), (4.0, -3.5, 1.0, -1.5));
    }

    #[test]
    fn ties_in_magnitude_keep_the_first() {
        let mut x = [0.0f32; 32];
        x[3] = 2.0;
        x[9] = -2.0;
        assert_eq!(BlockQ4_0::quantize(&x).d, f16_bytes(-0.25));
        x[3] = -2.0;
        x[9] = 2.0;
        assert_eq!(BlockQ4_0::quantize(&x).d, f16_bytes(0.25));
    }

    #[test]
    fn reciprocal_of_the_f32_scale_not_the_f16_one() {
        // max = -1.0001 -> d = 0.12501250 in f32 (id = 7.9992), stored as f16 0.125 (0x3000).
        // x = -0.56253: x * id + 8.5 = 4.00021 -> 4. With the f16 scale (id = 8):
        // 3.99976 -> 3.
        let mut x = [0.0f32; 32];
        x[0] = -1.0001;
        x[1] = -0.56253;
        let b = BlockQ4_0::quantize(&x);
        assert_eq!(b.d, [0x00, 0x30]);
        assert_eq!(b.qs[1] & 0x0F, 4);
    }

    #[test]
    fn edge_cases() {
        // All zero: d = 0.0 / -8 = -0.0 (0x8000), id = 0, every level 8.
        let b = BlockQ4_0::quantize(&[0.0; 32]);
        assert_eq!(b.d, [0x00, 0x80]);
        assert_eq!(b.qs, [0x88; 16]);
        // A single huge value: 1e4 -> d = -1250 (exact in f16: 0xE4E2), the zeros -> 8.
        let mut x = [0.0f32; 32];
        x[0] = 1.0e4;
        let b = BlockQ4_0::quantize(&x);
        assert_eq!(b.d, [0xE2, 0xE4]);
        assert_eq!(b.qs[0], 0x80);
        assert!(b.qs[1..].iter().all(|&q| q == 0x88));
        // Largest scale that fits: |max| = 8 * 65504 -> d = -65504 (0xFBFF).
        x[0] = 8.0 * 65504.0;
        let mut blocks = [BlockQ4_0::default()];
        BlockQ4_0::quantize_row(&x, &mut blocks).unwrap();
        assert_eq!(blocks[0].d, [0xFF, 0xFB]);
        // Beyond: ggml would store -inf (0xFC00); the row quantizer refuses.
        for big in [8.0 * 65520.0, f32::MAX, -f32::MAX] {
            x[0] = big;
            assert_eq!(BlockQ4_0::quantize(&x).d[1] & 0x7C, 0x7C);
            assert_eq!(
                BlockQ4_0::quantize_row(&x, &mut blocks),
                Err(KernelError::F16Overflow {
                    ty: GgmlType::Q4_0,
                    index: 0,
                    what: "scale",
                    value: big / -8.0
                })
            );
        }
        // Negative extreme that fits: max = -65504 * 8 -> d = 65504, the value maps to 0.
        x[0] = -8.0 * 65504.0;
        x[1] = 65504.0 * 8.0; // 16.5 -> clamped 15
        BlockQ4_0::quantize_row(&x, &mut blocks).unwrap();
        assert_eq!(blocks[0].d, [0xFF, 0x7B]);
        assert_eq!(blocks[0].qs[0], 0x80);
        assert_eq!(blocks[0].qs[1], 0x8F);
    }

    #[test]
    fn subnormal_inputs() {
        // max = 1e-40 -> d = -1.25e-41, 1/d = -inf: every x * id + 8.5 is +-inf or NaN and
        // converts to 0 (x86-64 ggml); the scale rounds to f16 -0.0, so the block decodes to
        // zeros.
        let mut x = [0.0f32; 32];
        x[4] = 1e-40;
        x[20] = -5e-41;
        let b = BlockQ4_0::quantize(&x);
        assert_eq!(b.d, [0x00, 0x80]);
        assert_eq!(b.qs, [0x00; 16]);
        let mut out = [1.0f32; 32];
        b.dequantize(&mut out);
        assert!(out.iter().all(|&v| v == 0.0));
        // max = 1e-37 (normal): d = -1.25e-38 is representable and id finite; subnormal
        // inputs in the block quantize normally (1e-40 * id = -0.008 -> 8).
        x[4] = 1e-37;
        x[5] = 1e-40;
        x[6] = 5e-38; // -4 + 8.5 -> 4
        let b = BlockQ4_0::quantize(&x);
        assert_eq!(b.d, [0x00, 0x80]);
        assert_eq!(&b.qs[4..7], &[0x80, 0x88, 0x84]);
    }

    #[test]
    fn dot_by_hand() {
        // Weights: nibbles 9 and 6 -> +1 and -2 (d = 0.5): values 0.5 / -1.0.
        // Activations: qs 4 and -3 (d = 2): values 8 / -6.
        // Block: 16 * (1 * 4) + 16 * (-2 * -3) = 64 + 96 = 160; * 0.5 * 2 = 160.
        let x = BlockQ4_0 {
            d: f16_bytes(0.5),
            qs: [0x69; 16],
        };
        let mut qs = [4i8; 32];
        for q in &mut qs[16..] {
            *q = -3;
        }
        let y = BlockQ8_0 {
            d: f16_bytes(2.0),
            qs,
        };
        assert_eq!(vec_dot_q4_0_q8_0(&[x; 3], &[y; 3]), Ok(480.0));
        assert!(vec_dot_q4_0_q8_0(&[x; 3], &[y; 2]).is_err());
    }

    #[test]
    fn dot_equals_dequantized_dot() {
        let mut rng = Lcg(99);
        for nb in [1usize, 3, 17] {
            let xs = rng.uniform_vec(nb * 32, 0.1);
            let ys = rng.uniform_vec(nb * 32, 5.0);
            let mut bx = vec![BlockQ4_0::default(); nb];
            let mut by = vec![BlockQ8_0::default(); nb];
            BlockQ4_0::quantize_row(&xs, &mut bx).unwrap();
            BlockQ8_0::quantize_row(&ys, &mut by).unwrap();
            let (mut dx, mut dy) = (vec![0.0; nb * 32], vec![0.0; nb * 32]);
            BlockQ4_0::dequantize_row(&bx, &mut dx).unwrap();
            BlockQ8_0::dequantize_row(&by, &mut dy).unwrap();
            let exact = dot_f64(&dx, &dy);
            let got = vec_dot_q4_0_q8_0(&bx, &by).unwrap() as f64;
            let tol = sum_abs_products(&dx, &dy) * (nb as f64 + 3.0) * f32::EPSILON as f64;
            assert!((got - exact).abs() <= tol, "{got} vs {exact}");
        }
    }

    #[test]
    fn rmse_on_uniform_data() {
        // In units of the step |d| = amax / 8, t = x/|d| is spread over [-8, 8]. The max
        // itself is exact (1 in 32). Rounding leaves a uniform error of mean square 1/12,
        // except on the side opposite to the max, where levels stop at 7: values with t in
        // (7.5, 8] (1/32 of uniform data) get the error t - 7 in (0.5, 1], mean square 0.583.
        // MSE = (30/32) / 12 + 0.583 / 32 = 0.0964, RMS 0.310 d; the f16 scale adds < 1%.
        // 8192 samples estimate it to ~1%: bound 0.32 d.
        let rmse = normalized_rmse(GgmlType::Q4_0, 256, |x| {
            x.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 8.0
        });
        assert!(rmse < 0.32 && rmse > 0.29, "{rmse}");
    }

    proptest! {
        #[test]
        fn round_trip_error_is_half_a_step(x in block_strategy()) {
            let b = BlockQ4_0::quantize(&x);
            let mut out = [0.0f32; 32];
            b.dequantize(&mut out);
            let (_, d) = BlockQ4_0::quantize_with_scale(&x);
            let d16 = b.d();
            let ad = d.abs();
            // Half a step for rounding, a whole step for values clamped at level 15
            // (x / d > 7.5), plus f32 roundings of 1/d, x * id and + 8.5 (a few 2^-24 of 8.5),
            // plus the f16 rounding of d times |level - 8| <= 8.
            let slack = ad * 8.0 * 2f32.powi(-21) + 8.0 * (d16 - d).abs();
            for (j, (&v, &o)) in x.iter().zip(&out).enumerate() {
                let clamped = d != 0.0 && v / d > 7.5;
                let bound = if clamped { ad } else { ad * 0.5 } + slack;
                prop_assert!((v - o).abs() <= bound * (1.0 + 1e-6), "j {} {} -> {} d {}", j, v, o, d);
            }
        }

        #[test]
        fn bytes_through_the_dispatcher_equal_the_blocks(x in block_strategy()) {
            let mut bytes = [0u8; 18];
            quantize_row(GgmlType::Q4_0, &x, &mut bytes).unwrap();
            let block = BlockQ4_0::quantize(&x);
            prop_assert_eq!(&bytes, block.as_bytes());
        }
    }
}
