//! Q8_0: 32 values as signed bytes times one f16 scale `d = absmax / 127` (34 bytes). Used
//! for int8 weights and as the activation format of Q4_0 and Q8_0 products.

use super::{
    block_values, block_values_mut, c_float_to_i8, checked_f16, f16_le, to_f16_le, Block, RowBlock,
    QK,
};
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One Q8_0 block, ggml's `block_q8_0`: value `j` is `qs[j] * d`.
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
pub struct BlockQ8_0 {
    /// The scale, an f16 stored little-endian.
    pub d: [u8; 2],
    /// The quantized values.
    pub qs: [i8; QK],
}

const _: () = assert!(size_of::<BlockQ8_0>() == 34);
const _: () = assert!(align_of::<BlockQ8_0>() == 1);

impl Block for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
}

impl BlockQ8_0 {
    /// The scale as f32.
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }

    /// Quantizes one block exactly as ggml does, with no checks (an overflowing scale is
    /// stored as f16 infinity).
    pub fn quantize(x: &[f32; QK]) -> Self {
        Self::quantize_with_scale(x).0
    }

    /// [`BlockQ8_0::quantize`], also returning the f32 scale before f16 rounding.
    // Port of `quantize_row_q8_0_ref`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    fn quantize_with_scale(x: &[f32; QK]) -> (Self, f32) {
        // C: amax = MAX(amax, fabsf(v)), MAX(a, b) = a > b ? a : b.
        let amax = x.iter().fold(
            0.0f32,
            |amax, v| if amax > v.abs() { amax } else { v.abs() },
        );
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK];
        for (q, &v) in qs.iter_mut().zip(x) {
            // roundf: half away from zero, like f32::round.
            *q = c_float_to_i8((v * id).round());
        }
        let block = Self {
            d: to_f16_le(d),
            qs,
        };
        (block, d)
    }

    /// Dequantizes the block: `out[j] = qs[j] * d`.
    // Port of `dequantize_row_q8_0`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
        }
    }
}

// Scales beyond f16 (absmax >= 127 * 65520) are errors; otherwise the blocks are ggml's.
impl RowBlock for BlockQ8_0 {
    const LEN: usize = QK;

    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError> {
        let (block, d) = Self::quantize_with_scale(block_values::<Self>(x)?);
        checked_f16(GgmlType::Q8_0, first, "scale", d)?;
        Ok(block)
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(block_values_mut::<Self>(out)?);
        Ok(())
    }
}

/// `sum_i x[i] * y[i]` over two rows of Q8_0 blocks: per block the exact integer dot times
/// `dx * dy`, accumulated in one f32.
// Port of `ggml_vec_dot_q8_0_q8_0_generic`, ggml-org/llama.cpp ggml/src/ggml-cpu/quants.c
// @aec5bf1: `sumf += sumi * (dx * dy)`.
pub fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> Result<f32, KernelError> {
    super::check_len("activation blocks", x.len(), y.len())?;
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let sumi: i32 = bx
            .qs
            .iter()
            .zip(&by.qs)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        sumf += sumi as f32 * (bx.d() * by.d());
    }
    Ok(sumf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests_common::*;
    use proptest::prelude::*;

    fn absmax(x: &[f32]) -> f32 {
        x.iter().fold(0.0f32, |a, v| a.max(v.abs()))
    }

    fn block_bytes(d: [u8; 2], qs: [i8; 32]) -> BlockQ8_0 {
        BlockQ8_0 { d, qs }
    }

    #[test]
    fn hand_computed_block() {
        // absmax 127 -> d = 1.0 (f16 0x3C00), id = 1: values are round-half-away-from-zero.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = -127.0;
        x[2] = 1.5; // -> 2
        x[3] = -2.5; // -> -3 (away from zero, not to even)
        x[4] = 0.49; // -> 0
        x[5] = -0.5; // -> -1
        x[6] = 63.5; // -> 64
        x[31] = -100.25; // -> -100
        let mut qs = [0i8; 32];
        qs[0] = 127;
        qs[1] = -127;
        qs[2] = 2;
        qs[3] = -3;
        qs[5] = -1;
        qs[6] = 64;
        qs[31] = -100;
        let b = BlockQ8_0::quantize(&x);
        assert_eq!(b, block_bytes([0x00, 0x3C], qs));
        // The serialized bytes: d little-endian, then qs as two's complement.
        assert_eq!(
            &b.as_bytes()[..8],
            &[0x00, 0x3C, 0x7F, 0x81, 0x02, 0xFD, 0x00, 0xFF]
        );
    }

    #[test]
    fn reciprocal_of_the_f32_scale_not_the_f16_one() {
        // absmax 1: d = 1/127 = 0.0078740157 in f32, stored as f16 0x2008 = 0.0078735352.
        // id = 1/d(f32) rounds to exactly 127.0, so 0.49999 * id = 63.49873 -> 63. With the
        // f16 scale, id would be 127.0078 and 0.49999 * id = 63.5027 -> 64.
        let mut x = [0.0f32; 32];
        x[0] = 1.0;
        x[1] = 0.49999;
        x[2] = -0.5; // -63.5 -> -64
        let b = BlockQ8_0::quantize(&x);
        assert_eq!(b.d, [0x08, 0x20]);
        assert_eq!(&b.qs[..3], &[127, 63, -64]);
    }

    #[test]
    fn edge_cases() {
        // All zero: d = 0, id = 0, everything 0.
        assert_eq!(BlockQ8_0::quantize(&[0.0; 32]), BlockQ8_0::default());
        // Negative extreme at the f16 limit: absmax = 127 * 65504 -> d = 65504 (0x7BFF).
        let mut x = [0.0f32; 32];
        x[9] = -127.0 * 65504.0;
        x[10] = 65504.0 * 3.0;
        let mut blocks = [BlockQ8_0::default(); 1];
        BlockQ8_0::quantize_row(&x, &mut blocks).unwrap();
        assert_eq!(blocks[0].d, [0xFF, 0x7B]);
        assert_eq!((blocks[0].qs[9], blocks[0].qs[10]), (-127, 3));
        // Past it: the scale rounds to f16 infinity, which ggml would store; we refuse.
        x[9] = -127.0 * 65520.0;
        assert_eq!(BlockQ8_0::quantize(&x).d, [0x00, 0x7C]);
        assert!(matches!(
            BlockQ8_0::quantize_row(&x, &mut blocks),
            Err(KernelError::F16Overflow {
                index: 0,
                what: "scale",
                ..
            })
        ));
        for big in [f32::MAX, -f32::MAX] {
            let mut x = [1.0f32; 64];
            x[40] = big;
            let mut blocks = [BlockQ8_0::default(); 2];
            assert!(matches!(
                BlockQ8_0::quantize_row(&x, &mut blocks),
                Err(KernelError::F16Overflow {
                    ty: GgmlType::Q8_0,
                    index: 32,
                    ..
                })
            ));
        }
        // A single huge value: the others quantize to 0 (|x| * id < 0.5).
        let mut x = [1.0f32; 32];
        x[7] = 1.0e5;
        let b = BlockQ8_0::quantize(&x);
        // d = 1e5/127 = 787.4016 -> f16 787.5 = 0x6227.
        assert_eq!(b.d, [0x27, 0x62]);
        assert_eq!(b.qs[7], 127);
        assert!(b.qs.iter().enumerate().all(|(j, &q)| j == 7 || q == 0));
    }

    #[test]
    fn subnormal_inputs() {
        // absmax 1e-40: d = 7.9e-43 and 1/d overflows to +inf. Every x * id is then +-inf or
        // NaN (0 * inf); ggml converts those with cvttss2si on x86-64, giving 0. The f16 scale
        // is 0 either way, so the block decodes to zeros.
        let mut x = [0.0f32; 32];
        x[0] = 1e-40;
        x[1] = -3e-41;
        let b = BlockQ8_0::quantize(&x);
        assert_eq!(b, BlockQ8_0::default());
        // A block whose scale is a normal f32 but underflows f16: values are still
        // quantized (id is finite) but d is stored as 0.
        let mut x = [0.0f32; 32];
        x[0] = 1e-30;
        x[1] = 4e-31; // 50.8 -> 51
        x[2] = 1e-40;
        let b = BlockQ8_0::quantize(&x);
        assert_eq!(b.d, [0, 0]);
        assert_eq!(&b.qs[..3], &[127, 51, 0]);
        let mut out = [1.0f32; 32];
        b.dequantize(&mut out);
        assert!(out.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn dot_by_hand() {
        // x = 3 * 0.5 everywhere, y = -2 * 0.25 everywhere: 32 * 3 * -2 = -192,
        // times 0.5 * 0.25 = -24. Two blocks: -48.
        let x = BlockQ8_0 {
            d: half::f16::from_f32(0.5).to_le_bytes(),
            qs: [3; 32],
        };
        let y = BlockQ8_0 {
            d: half::f16::from_f32(0.25).to_le_bytes(),
            qs: [-2; 32],
        };
        assert_eq!(vec_dot_q8_0_q8_0(&[x, x], &[y, y]), Ok(-48.0));
        assert!(vec_dot_q8_0_q8_0(&[x, x], &[y]).is_err());
        assert_eq!(vec_dot_q8_0_q8_0(&[], &[]), Ok(0.0));
    }

    #[test]
    fn dot_equals_dequantized_dot() {
        let mut rng = Lcg(7);
        for nb in [1usize, 3, 8] {
            let xs = rng.uniform_vec(nb * 32, 2.0);
            let ys = rng.uniform_vec(nb * 32, 0.7);
            let mut bx = vec![BlockQ8_0::default(); nb];
            let mut by = vec![BlockQ8_0::default(); nb];
            BlockQ8_0::quantize_row(&xs, &mut bx).unwrap();
            BlockQ8_0::quantize_row(&ys, &mut by).unwrap();
            let (mut dx, mut dy) = (vec![0.0; nb * 32], vec![0.0; nb * 32]);
            BlockQ8_0::dequantize_row(&bx, &mut dx).unwrap();
            BlockQ8_0::dequantize_row(&by, &mut dy).unwrap();
            let exact = dot_f64(&dx, &dy);
            let got = vec_dot_q8_0_q8_0(&bx, &by).unwrap();
            // The integer parts are exact; only f32 rounding of the per-block products and
            // the running sum remains: a few ulps of the sum of magnitudes.
            let tol = sum_abs_products(&dx, &dy) * (nb as f64 + 3.0) * f32::EPSILON as f64;
            assert!((got as f64 - exact).abs() <= tol, "{got} vs {exact}");
        }
    }

    #[test]
    fn rmse_on_uniform_data() {
        // Rounding to the nearest multiple of the step d leaves an error uniform on
        // [-d/2, d/2], RMS d/sqrt(12) = 0.2887 d, except for the element of largest magnitude
        // (1 in 32), which is exact: 0.2887 * sqrt(31/32) = 0.284 d. Storing d as f16 adds a
        // relative error up to 2^-11 per value (<= 127 * 2^-11 = 0.062 d at the top, RMS about
        // 0.036 d), which adds < 1% in quadrature. 8192 samples estimate the RMS to ~1%:
        // bound 0.30 d. Truncating instead of rounding would give 0.577 d.
        let rmse = normalized_rmse(GgmlType::Q8_0, 256, |x| absmax(x) / 127.0);
        assert!(rmse < 0.30, "{rmse}");
        assert!(rmse > 0.27, "{rmse}");
    }

    proptest! {
        #[test]
        fn round_trip_error_is_half_a_step(x in block_strategy()) {
            let b = BlockQ8_0::quantize(&x);
            let mut out = [0.0f32; 32];
            b.dequantize(&mut out);
            let d = absmax(&x) / 127.0;
            let d16 = b.d();
            prop_assert!(d16.is_finite());
            // |q - x/d| <= 1/2 (+ the f32 roundings of 1/d and x * id, 2^-23 relative on
            // |q| <= 127), then q * d16 differs from q * d by at most 127 * |d16 - d|.
            let bound = d * (0.5 + 127.0 * 2f32.powi(-22)) + 127.0 * (d16 - d).abs();
            for (j, (&v, &o)) in x.iter().zip(&out).enumerate() {
                prop_assert!((v - o).abs() <= bound * (1.0 + 1e-6), "j {} {} -> {} bound {}", j, v, o, bound);
                prop_assert!(b.qs[j] != -128);
            }
        }
    }
}
