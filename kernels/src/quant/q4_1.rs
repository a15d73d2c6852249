//! Q4_1: 32 values as 4-bit levels times an f16 scale plus an f16 minimum (20 bytes): the 16
//! levels span the block's [min, max].

use super::q8_1::BlockQ8_1;
use super::{
    block_values, block_values_mut, c_float_to_i8, checked_f16, f16_le, to_f16_le, Block, RowBlock,
    QK,
};
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One Q4_1 block, ggml's `block_q4_1`: element `j < 16` is the low nibble of `qs[j]`,
/// element `j + 16` its high nibble; value = `nibble * d + m`.
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
pub struct BlockQ4_1 {
    /// The scale `(max - min) / 15`, an f16 stored little-endian.
    pub d: [u8; 2],
    /// The minimum, an f16 stored little-endian.
    pub m: [u8; 2],
    /// The nibbles.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(size_of::<BlockQ4_1>() == 20);
const _: () = assert!(align_of::<BlockQ4_1>() == 1);

impl Block for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
}

impl BlockQ4_1 {
    /// The scale as f32.
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }

    /// The minimum as f32.
    pub fn m(&self) -> f32 {
        f16_le(self.m)
    }

    /// Quantizes one block exactly as ggml does, with no checks (an overflowing scale or
    /// minimum is stored as f16 infinity).
    pub fn quantize(x: &[f32; QK]) -> Self {
        Self::quantize_with_fields(x).0
    }

    /// [`BlockQ4_1::quantize`], also returning the f32 scale and minimum before f16 rounding.
    // Port of `quantize_row_q4_1_ref`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    fn quantize_with_fields(x: &[f32; QK]) -> (Self, f32, f32) {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        // C: MIN(15, (int8_t)((x - min)*id + 0.5f)): round half up to [0, 15].
        let level = |v: f32| -> u8 { c_float_to_i8((v - min) * id + 0.5).min(15) as u8 };
        let (lo, hi) = x.split_at(QK / 2);
        let mut qs = [0u8; QK / 2];
        for ((q, &v0), &v1) in qs.iter_mut().zip(lo).zip(hi) {
            *q = level(v0) | (level(v1) << 4);
        }
        let block = Self {
            d: to_f16_le(d),
            m: to_f16_le(min),
            qs,
        };
        (block, d, min)
    }

    /// Dequantizes the block: `out[j] = nibble_j * d + m` (a product and a sum, each rounded).
    // Port of `dequantize_row_q4_1`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d();
        let m = self.m();
        let (lo, hi) = out.split_at_mut(QK / 2);
        for ((o0, o1), &q) in lo.iter_mut().zip(hi).zip(&self.qs) {
            *o0 = f32::from(q & 0x0F) * d + m;
            *o1 = f32::from(q >> 4) * d + m;
        }
    }
}

// A scale or minimum beyond f16 is an error; otherwise the blocks are ggml's.
impl RowBlock for BlockQ4_1 {
    const LEN: usize = QK;

    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError> {
        let (block, d, m) = Self::quantize_with_fields(block_values::<Self>(x)?);
        checked_f16(GgmlType::Q4_1, first, "scale", d)?;
        checked_f16(GgmlType::Q4_1, first, "minimum", m)?;
        Ok(block)
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(block_values_mut::<Self>(out)?);
        Ok(())
    }
}

/// `sum_i x[i] * y[i]` for Q4_1 weights and Q8_1 activations. Per block,
/// `sum_j (q_j dx + m)(p_j dy) = dx dy sum_j q_j p_j + m (dy sum_j p_j)`, and the activation
/// block carries `s = dy sum_j p_j`: the block adds `(dx * dy) * sumi + m * s`, accumulated in
/// one f32.
// Port of `ggml_vec_dot_q4_1_q8_1_generic`, ggml-org/llama.cpp ggml/src/ggml-cpu/quants.c
// @aec5bf1: `sumf += (dx*dy)*sumi + m*s`.
pub fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> Result<f32, KernelError> {
    super::check_len("activation blocks", x.len(), y.len())?;
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let (ylo, yhi) = by.qs.split_at(QK / 2);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for ((&q, &y0), &y1) in bx.qs.iter().zip(ylo).zip(yhi) {
            sumi0 += i32::from(q & 0x0F) * i32::from(y0);
            sumi1 += i32::from(q >> 4) * i32::from(y1);
        }
        let sumi = sumi0 + sumi1;
        sumf += (bx.d() * by.d()) * sumi as f32 + bx.m() * by.s();
    }
    Ok(sumf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests_common::*;
    use proptest::prelude::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        half::f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn hand_computed_block() {
        // min -1, max 14 -> d = 1 (0x3C00), m = -1 (0xBC00), id = 1; level =
        // trunc(x + 1 + 0.5) clamped to 15.
        let mut x = [0.0f32; 32]; // 0 -> 1.5 -> 1
        x[0] = -1.0; // 0.5 -> 0
        x[16] = 14.0; // 15.5 -> 15; byte 0 = 0xF0
        x[1] = 0.5; // 2.0 -> 2
        x[17] = 0.49; // 1.99 -> 1; byte 1 = 0x12
        x[2] = 6.6; // 8.1 -> 8
        x[18] = 13.4; // 14.9 -> 14; byte 2 = 0xE8
        let b = BlockQ4_1::quantize(&x);
        let mut expected = [0x11u8; 20];
        expected[..7].copy_from_slice(&[0x00, 0x3C, 0x00, 0xBC, 0xF0, 0x12, 0xE8]);
        assert_eq!(b.as_bytes(), &expected);
        let mut out = [0.0f32; 32];
        b.dequantize(&mut out);
        assert_eq!(
            (out[0], out[16], out[1], out[17], out[2], out[18], out[3]),
            (-1.0, 14.0, 1.0, 0.0, 7.0, 13.0, 0.0)
        );
    }

    #[test]
    fn reciprocal_of_the_f32_scale_not_the_f16_one() {
        // min 0, max 1.0001 -> d = 0.06667333 (f32), f16 0.06665039 (0x2C44).
        // x = 0.56669: (x - 0) * id + 0.5 = 8.99950 -> 8 with the f32 id = 14.99850; with the
        // f16 scale (id = 15.00366) it would be 9.00243 -> 9.
        let mut x = [0.0f32; 32];
        x[0] = 1.0001;
        x[1] = 0.56669;
        let b = BlockQ4_1::quantize(&x);
        assert_eq!(b.d, [0x44, 0x2C]);
        assert_eq!(b.m, [0x00, 0x00]);
        assert_eq!(b.qs[1] & 0x0F, 8);
    }

    #[test]
    fn edge_cases() {
        // All zero: d = 0, m = 0, levels trunc(0.5) = 0.
        assert_eq!(BlockQ4_1::quantize(&[0.0; 32]), BlockQ4_1::default());
        // All equal: d = 0, m = the value, levels 0; decodes exactly.
        let b = BlockQ4_1::quantize(&[-3.25; 32]);
        assert_eq!((b.d, b.m, b.qs), ([0, 0], f16_bytes(-3.25), [0; 16]));
        // A single huge value: min 0, max 1e4 -> d = 666.6667 -> f16 666.5 (0x6135).
        let mut x = [0.0f32; 32];
        x[31] = 1.0e4;
        let b = BlockQ4_1::quantize(&x);
        assert_eq!((b.d, b.m), ([0x35, 0x61], [0, 0]));
        assert_eq!(b.qs[15], 0xF0);
        // Negative extreme: m = -65504 fits; -65520 overflows (ggml would store -inf).
        let mut blocks = [BlockQ4_1::default()];
        x[31] = -65504.0;
        BlockQ4_1::quantize_row(&x, &mut blocks).unwrap();
        assert_eq!(blocks[0].m, [0xFF, 0xFB]);
        assert_eq!(blocks[0].qs[15], 0x0F);
        x[31] = -65520.0;
        assert_eq!(
            BlockQ4_1::quantize_row(&x, &mut blocks),
            Err(KernelError::F16Overflow {
                ty: GgmlType::Q4_1,
                index: 0,
                what: "minimum",
                value: -65520.0
            })
        );
        // +-f32::MAX together: max - min overflows f32 to inf, so d = inf and 1/d = 0;
        // (x - min) * 0 is NaN for x = max (inf * 0) and 0 otherwise: all levels 0 on x86-64.
        x[0] = f32::MAX;
        x[31] = -f32::MAX;
        let b = BlockQ4_1::quantize(&x);
        assert_eq!((b.d, b.m), ([0x00, 0x7C], [0x00, 0xFC]));
        assert_eq!(b.qs, [0; 16]);
        assert!(matches!(
            BlockQ4_1::quantize_row(&x, &mut blocks),
            Err(KernelError::F16Overflow { what: "scale", .. })
        ));
        // f32::MAX alone: min 0, d = MAX / 15 overflows f16.
        x[31] = 0.0;
        assert!(matches!(
            BlockQ4_1::quantize_row(&x, &mut blocks),
            Err(KernelError::F16Overflow { what: "scale", .. })
        ));
    }

    #[test]
    fn subnormal_inputs() {
        // Range 1e-40: d = 6.7e-42, 1/d = inf; (x - min) * inf is NaN for x = min and +inf
        // otherwise: every level converts to 0 (x86-64 ggml). d and m round to f16 zero.
        let mut x = [0.0f32; 32];
        x[8] = 1e-40;
        let b = BlockQ4_1::quantize(&x);
        assert_eq!(b, BlockQ4_1::default());
        // Range 1e-37: id finite; subnormal differences quantize normally.
        x[8] = 1e-37;
        x[9] = 5e-38; // 7.5 + 0.5 -> 8
        x[10] = 1e-40; // 0.015 + 0.5 -> 0
        let b = BlockQ4_1::quantize(&x);
        assert_eq!((b.d, b.m), ([0, 0], [0, 0]));
        assert_eq!(&b.qs[8..11], &[0x0F, 0x08, 0x00]);
    }

    #[test]
    fn dot_by_hand() {
        // Weights: nibbles 3 (low) and 10 (high), d = 0.5, m = -2: values -0.5 and 3.
        // Activations: p = 2 (first half) and -1 (second half), dy = 0.25, s = 0.25 * 16 = 4.
        // sumi = 16 * 3 * 2 + 16 * 10 * -1 = 96 - 160 = -64;
        // (0.5 * 0.25) * -64 + (-2) * 4 = -8 - 8 = -16.
        // Check: 16 * (-0.5 * 0.5) + 16 * (3 * -0.25) = -4 - 12 = -16.
        let x = BlockQ4_1 {
            d: f16_bytes(0.5),
            m: f16_bytes(-2.0),
            qs: [0xA3; 16],
        };
        let mut qs = [2i8; 32];
        for q in &mut qs[16..] {
            *q = -1;
        }
        let y = BlockQ8_1 {
            d: f16_bytes(0.25),
            s: f16_bytes(4.0),
            qs,
        };
        assert_eq!(vec_dot_q4_1_q8_1(&[x; 2], &[y; 2]), Ok(-32.0));
        assert!(vec_dot_q4_1_q8_1(&[x; 2], &[y]).is_err());
    }

    #[test]
    fn dot_equals_dequantized_dot() {
        let mut rng = Lcg(5);
        for nb in [1usize, 3, 17] {
            let xs: Vec<f32> = rng
                .uniform_vec(nb * 32, 0.1)
                .iter()
                .map(|v| v + 0.03)
                .collect();
            let ys = rng.uniform_vec(nb * 32, 5.0);
            let mut bx = vec![BlockQ4_1::default(); nb];
            let mut by = vec![BlockQ8_1::default(); nb];
            BlockQ4_1::quantize_row(&xs, &mut bx).unwrap();
            BlockQ8_1::quantize_row(&ys, &mut by).unwrap();
            let (mut dx, mut dy) = (vec![0.0; nb * 32], vec![0.0; nb * 32]);
            BlockQ4_1::dequantize_row(&bx, &mut dx).unwrap();
            BlockQ8_1::dequantize_row(&by, &mut dy).unwrap();
            let exact = dot_f64(&dx, &dy);
            let got = vec_dot_q4_1_q8_1(&bx, &by).unwrap() as f64;
            // Besides f32 rounding, the kernel uses s = f16(dy(f32) * sum p), not
            // f16(dy) * sum p: per block |m| * (|s| + |dy sum p|) * 2^-11.
            let s_err: f64 = bx
                .iter()
                .zip(&by)
                .map(|(b, a)| {
                    let sum: i32 = a.qs.iter().map(|&q| i32::from(q)).sum();
                    b.m().abs() as f64 * (a.s() as f64 - a.d() as f64 * sum as f64).abs()
                })
                .sum();
            let round =
                (sum_abs_products(&dx, &dy) + s_err) * (nb as f64 + 4.0) * f32::EPSILON as f64;
            assert!((got - exact).abs() <= s_err + round, "{got} vs {exact}");
        }
    }

    #[test]
    fn rmse_on_uniform_data() {
        // Levels (x - min)/d span [0, 15] with no clamping, so the rounding error is uniform
        // on +-d/2, mean square d^2/12, except for the min and the max (2 in 32), which are
        // exact: RMS 0.2887 * sqrt(30/32) = 0.2795 d. The f16 d adds at most
        // 15 * 2^-11 = 0.007 d, the f16 m at most 2^-11 * |min| ~ 0.004 d (d ~ 2/15), < 1% in
        // quadrature; 8192 samples estimate the RMS to ~1%: bound 0.29 d.
        let rmse = normalized_rmse(GgmlType::Q4_1, 256, |x| {
            let max = x.iter().fold(f32::MIN, |a, &v| a.max(v));
            let min = x.iter().fold(f32::MAX, |a, &v| a.min(v));
            (max - min) / 15.0
        });
        assert!(rmse < 0.29 && rmse > 0.27, "{rmse}");
    }

    proptest! {
        #[test]
        fn round_trip_error_is_half_a_step(x in block_strategy()) {
            let b = BlockQ4_1::quantize(&x);
            let mut out = [0.0f32; 32];
            b.dequantize(&mut out);
            let (_, d, m) = BlockQ4_1::quantize_with_fields(&x);
            let (d16, m16) = (b.d(), b.m());
            // Half a step; f32 roundings of x - min, 1/d, the product and + 0.5 (a few 2^-24
            // of 15.5 in level units); the f16 roundings of d (times the level, <= 15) and
            // of m; the final f32 rounding of q * d16 + m16 (half an ulp of the result).
            for (j, (&v, &o)) in x.iter().zip(&out).enumerate() {
                let slack = d * 15.5 * 2f32.powi(-21)
                    + 15.0 * (d16 - d).abs()
                    + (m16 - m).abs()
                    + o.abs() * f32::EPSILON;
                let bound = d * 0.5 + slack;
                prop_assert!((v - o).abs() <= bound * (1.0 + 1e-6), "j {} {} -> {} d {}", j, v, o, d);
            }
        }
    }
}
