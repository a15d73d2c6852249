//! Q5_0: 32 values as 5-bit offsets from -16 times one f16 scale (22 bytes). The low 4 bits
//! are nibbles as in Q4_0, the fifth bits a 32-bit mask. The scale is the value of largest
//! magnitude (with its sign) divided by -16.

use super::q8_0::BlockQ8_0;
use super::{
    block_values, block_values_mut, c_float_to_i8, checked_f16, f16_le, to_f16_le, Block, RowBlock,
    QK,
};
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One Q5_0 block, ggml's `block_q5_0`: element `j < 16` is the low nibble of `qs[j]` plus
/// bit `j` of `qh` (little-endian u32) as its fifth bit, element `j + 16` the high nibble
/// plus bit `j + 16`; value = `(q - 16) * d`.
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
pub struct BlockQ5_0 {
    /// The scale, an f16 stored little-endian.
    pub d: [u8; 2],
    /// The fifth bits, a little-endian u32: bit `j` belongs to element `j`.
    pub qh: [u8; 4],
    /// The low nibbles.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(size_of::<BlockQ5_0>() == 22);
const _: () = assert!(align_of::<BlockQ5_0>() == 1);

impl Block for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
}

impl BlockQ5_0 {
    /// The scale as f32.
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }

    /// The 32 levels `q` (0..=31) in element order.
    pub fn levels(&self) -> [u8; QK] {
        let qh = u32::from_le_bytes(self.qh);
        std::array::from_fn(|j| {
            let nib = if j < 16 {
                self.qs[j] & 0x0F
            } else {
                self.qs[j - 16] >> 4
            };
            nib | ((((qh >> j) & 1) as u8) << 4)
        })
    }

    /// Quantizes one block exactly as ggml does, with no checks.
    pub fn quantize(x: &[f32; QK]) -> Self {
        Self::quantize_with_scale(x).0
    }

    // Port of `quantize_row_q5_0_ref`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    fn quantize_with_scale(x: &[f32; QK]) -> (Self, f32) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        // C: MIN(31, (int8_t)(x*id + 16.5f)).
        let level = |v: f32| -> u8 { c_float_to_i8(v * id + 16.5).min(31) as u8 };
        let mut qs = [0u8; QK / 2];
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let (x0, x1) = (level(x[j]), level(x[j + 16]));
            qs[j] = (x0 & 0x0F) | ((x1 & 0x0F) << 4);
            qh |= u32::from((x0 & 0x10) >> 4) << j;
            qh |= u32::from((x1 & 0x10) >> 4) << (j + 16);
        }
        let block = Self {
            d: to_f16_le(d),
            qh: qh.to_le_bytes(),
            qs,
        };
        (block, d)
    }

    /// Dequantizes the block: `out[j] = (q_j - 16) * d`.
    // Port of `dequantize_row_q5_0`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d();
        for (o, q) in out.iter_mut().zip(self.levels()) {
            *o = (i32::from(q) - 16) as f32 * d;
        }
    }
}

// Non-finite inputs and scales beyond f16 are errors; otherwise the blocks are ggml's.
impl RowBlock for BlockQ5_0 {
    const LEN: usize = QK;

    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError> {
        let (block, d) = Self::quantize_with_scale(block_values::<Self>(x)?);
        checked_f16(GgmlType::Q5_0, first, "scale", d)?;
        Ok(block)
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(block_values_mut::<Self>(out)?);
        Ok(())
    }
}

/// `sum_i x[i] * y[i]` for Q5_0 weights and Q8_0 activations: per block the exact integer
/// dot of `(q - 16)` with `qs`, then `(dx * dy) * sumi`, accumulated in one f32.
// Port of `ggml_vec_dot_q5_0_q8_0_generic`, ggml-org/llama.cpp ggml/src/ggml-cpu/quants.c
// @aec5bf1: `sumf += (GGML_CPU_FP16_TO_FP32(x.d)*GGML_CPU_FP16_TO_FP32(y.d)) * sumi`.
pub fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> Result<f32, KernelError> {
    super::check_len("activation blocks", x.len(), y.len())?;
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let sumi: i32 = bx
            .levels()
            .iter()
            .zip(&by.qs)
            .map(|(&q, &a)| (i32::from(q) - 16) * i32::from(a))
            .sum();
        sumf += (bx.d() * by.d()) * sumi as f32;
    }
    Ok(sumf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests_common::*;
    use proptest::prelude::*;

    #[test]
    fn hand_computed_block() {
        // max = -16 -> d = 1 (0x3C00), id = 1: level = trunc(x + 16.5), clamped to 31.
        let mut x = [0.0f32; 32]; // 0 -> 16: nibble 0, fifth bit 1
        x[0] = -16.0; // 0.5 -> 0
        x[16] = 16.0; // 32.5 -> 32 -> 31: nibble 15, bit 16 set
        x[1] = 3.4; // 19.9 -> 19: nibble 3, bit 1 set
        x[17] = -3.6; // 12.9 -> 12: nibble 12, bit 17 clear
        let b = BlockQ5_0::quantize(&x);
        assert_eq!(b.d, [0x00, 0x3C]);
        assert_eq!(&b.qs[..3], &[0xF0, 0xC3, 0x00]);
        // Bits: 0 clear, 1 set, 2..16 set (zeros), 16 set, 17 clear, 18..32 set.
        let qh = u32::from_le_bytes(b.qh);
        assert_eq!(qh, !(1u32 | (1 << 17)));
        let mut out = [0.0f32; 32];
        b.dequantize(&mut out);
        assert_eq!(
            (out[0], out[16], out[1], out[17], out[2]),
            (-16.0, 15.0, 3.0, -4.0, 0.0)
        );
    }

    #[test]
    fn edge_cases() {
        // All zero: d = -0.0 (0x8000), every level 16 (nibble 0, fifth bit set).
        let b = BlockQ5_0::quantize(&[0.0; 32]);
        assert_eq!((b.d, b.qh, b.qs), ([0x00, 0x80], [0xFF; 4], [0; 16]));
        // One huge value: 1e4 -> d = -625 (f16 exact), the zeros -> 16.
        let mut x = [0.0f32; 32];
        x[3] = 1.0e4;
        let b = BlockQ5_0::quantize(&x);
        assert_eq!(half::f16::from_le_bytes(b.d).to_f32(), -625.0);
        assert_eq!(b.levels()[3], 0);
        assert!(b
            .levels()
            .iter()
            .enumerate()
            .all(|(j, &q)| j == 3 || q == 16));
        // Beyond the f16 range of the scale: refused.
        x[3] = 16.0 * 65520.0;
        let mut blocks = [BlockQ5_0::default()];
        assert!(matches!(
            BlockQ5_0::quantize_row(&x, &mut blocks),
            Err(KernelError::F16Overflow { what: "scale", .. })
        ));
    }

    #[test]
    fn dot_equals_dequantized_dot() {
        let mut rng = Lcg(41);
        for nb in [1usize, 3, 17] {
            let xs = rng.uniform_vec(nb * 32, 0.1);
            let ys = rng.uniform_vec(nb * 32, 5.0);
            let mut bx = vec![BlockQ5_0::default(); nb];
            let mut by = vec![BlockQ8_0::default(); nb];
            BlockQ5_0::quantize_row(&xs, &mut bx).unwrap();
            BlockQ8_0::quantize_row(&ys, &mut by).unwrap();
            let (mut dx, mut dy) = (vec![0.0; nb * 32], vec![0.0; nb * 32]);
            BlockQ5_0::dequantize_row(&bx, &mut dx).unwrap();
            BlockQ8_0::dequantize_row(&by, &mut dy).unwrap();
            let exact = dot_f64(&dx, &dy);
            let got = vec_dot_q5_0_q8_0(&bx, &by).unwrap() as f64;
            let tol = sum_abs_products(&dx, &dy) * (nb as f64 + 3.0) * f32::EPSILON as f64;
            assert!((got - exact).abs() <= tol, "{got} vs {exact}");
        }
    }

    #[test]
    fn rmse_on_uniform_data() {
        // As Q4_0 with 16 steps per side (see q4_0): the step is amax / 16; the rounding error
        // is uniform (mean square 1/12) except for the 1/64 of values clamped at 15 on the
        // side opposite to the max (error in (0.5, 1], mean square 0.583): MSE =
        // (62/64)/12 + 0.583/64 = 0.0898, RMS 0.300 d.
        let rmse = normalized_rmse(GgmlType::Q5_0, 256, |x| {
            x.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 16.0
        });
        assert!(rmse < 0.31 && rmse > 0.28, "{rmse}");
    }

    proptest! {
        #[test]
        fn round_trip_error_is_half_a_step(x in block_strategy()) {
            let (b, d) = BlockQ5_0::quantize_with_scale(&x);
            let mut out = [0.0f32; 32];
            b.dequantize(&mut out);
            let (ad, d16) = (d.abs(), b.d());
            let slack = ad * 16.0 * 2f32.powi(-21) + 16.0 * (d16 - d).abs();
            for (&v, &o) in x.iter().zip(&out) {
                let clamped = d != 0.0 && v / d > 15.5;
                let bound = if clamped { ad } else { ad * 0.5 } + slack;
                prop_assert!((v - o).abs() <= bound * (1.0 + 1e-6), "{} -> {} d {}", v, o, d);
            }
        }
    }
}
