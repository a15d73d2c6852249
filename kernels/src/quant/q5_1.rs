//! Q5_1: 32 values as 5-bit levels times an f16 scale plus an f16 minimum (24 bytes): the
//! 32 levels span the block's [min, max]. Bits as in Q5_0.

use super::q8_1::BlockQ8_1;
use super::{block_values, block_values_mut, checked_f16, f16_le, to_f16_le, Block, RowBlock, QK};
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One Q5_1 block, ggml's `block_q5_1`: levels as in [`super::BlockQ5_0`];
/// value = `q * d + m`.
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
pub struct BlockQ5_1 {
    /// The scale `(max - min) / 31`, an f16 stored little-endian.
    pub d: [u8; 2],
    /// The minimum, an f16 stored little-endian.
    pub m: [u8; 2],
    /// The fifth bits, a little-endian u32: bit `j` belongs to element `j`.
    pub qh: [u8; 4],
    /// The low nibbles.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(size_of::<BlockQ5_1>() == 24);
const _: () = assert!(align_of::<BlockQ5_1>() == 1);

impl Block for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
}

/// C's `(uint8_t)` conversion of a float as x86-64 compilers emit it for values the
/// reference produces: truncation through a 32-bit integer, then the low byte (NaN and
/// out-of-range values give 0, the low byte of `0x80000000`).
fn c_float_to_u8(v: f32) -> u8 {
    super::c_float_to_i8(v) as u8
}

impl BlockQ5_1 {
    /// The scale as f32.
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }

    /// The minimum as f32.
    pub fn m(&self) -> f32 {
        f16_le(self.m)
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
        Self::quantize_with_fields(x).0
    }

    // Port of `quantize_row_q5_1_ref`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
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
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        // C: (uint8_t)((x - min)*id + 0.5f), no clamp (the largest is 31.5 -> 31).
        let level = |v: f32| -> u8 { c_float_to_u8((v - min) * id + 0.5) };
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
            m: to_f16_le(min),
            qh: qh.to_le_bytes(),
            qs,
        };
        (block, d, min)
    }

    /// Dequantizes the block: `out[j] = q_j * d + m`.
    // Port of `dequantize_row_q5_1`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let (d, m) = (self.d(), self.m());
        for (o, q) in out.iter_mut().zip(self.levels()) {
            *o = f32::from(q) * d + m;
        }
    }
}

// A scale or minimum beyond f16 is an error; otherwise the blocks are ggml's.
impl RowBlock for BlockQ5_1 {
    const LEN: usize = QK;

    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError> {
        let (block, d, m) = Self::quantize_with_fields(block_values::<Self>(x)?);
        checked_f16(GgmlType::Q5_1, first, "scale", d)?;
        checked_f16(GgmlType::Q5_1, first, "minimum", m)?;
        Ok(block)
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(block_values_mut::<Self>(out)?);
        Ok(())
    }
}

/// `sum_i x[i] * y[i]` for Q5_1 weights and Q8_1 activations: per block
/// `(dx * dy) * sumi + m * s`, accumulated in one f32 (as Q4_1).
// Port of `ggml_vec_dot_q5_1_q8_1_generic`, ggml-org/llama.cpp ggml/src/ggml-cpu/quants.c
// @aec5bf1: `sumf += (dx*dy)*sumi + m*s`.
pub fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> Result<f32, KernelError> {
    super::check_len("activation blocks", x.len(), y.len())?;
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let sumi: i32 = bx
            .levels()
            .iter()
            .zip(&by.qs)
            .map(|(&q, &a)| i32::from(q) * i32::from(a))
            .sum();
        sumf += (bx.d() * by.d()) * sumi as f32 + bx.m() * by.s();
    }
    Ok(sumf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests_common::*;

    #[test]
    fn hand_computed_block() {
        // min -1, max 30 -> d = 1, m = -1; level = trunc(x + 1.5).
        let mut x = [0.0f32; 32]; // 0 -> 1
        x[0] = -1.0; // 0
        x[16] = 30.0; // 31: nibble 15, bit 16
        x[1] = 16.4; // 17.9 -> 17: nibble 1, bit 1
        let b = BlockQ5_1::quantize(&x);
        assert_eq!((b.d, b.m), ([0x00, 0x3C], [0x00, 0xBC]));
        assert_eq!(&b.qs[..3], &[0xF0, 0x11, 0x11]);
        assert_eq!(u32::from_le_bytes(b.qh), (1 << 16) | (1 << 1));
        let mut out = [0.0f32; 32];
        b.dequantize(&mut out);
        assert_eq!((out[0], out[16], out[1], out[2]), (-1.0, 30.0, 16.0, 0.0));
    }

    #[test]
    fn edge_cases() {
        assert_eq!(BlockQ5_1::quantize(&[0.0; 32]), BlockQ5_1::default());
        // Constant: d = 0, m = the value, levels 0: exact.
        let b = BlockQ5_1::quantize(&[2.5; 32]);
        let mut out = [0.0f32; 32];
        b.dequantize(&mut out);
        assert_eq!(out, [2.5; 32]);
        // One huge value: min 0, d = 1e4 / 31.
        let mut x = [0.0f32; 32];
        x[5] = 1.0e4;
        let b = BlockQ5_1::quantize(&x);
        assert_eq!(b.levels()[5], 31);
        assert!(b
            .levels()
            .iter()
            .enumerate()
            .all(|(j, &q)| j == 5 || q == 0));
        x[5] = -65520.0;
        let mut blocks = [BlockQ5_1::default()];
        assert!(matches!(
            BlockQ5_1::quantize_row(&x, &mut blocks),
            Err(KernelError::F16Overflow {
                what: "minimum",
                ..
            })
        ));
    }

    #[test]
    fn dot_equals_dequantized_dot() {
        let mut rng = Lcg(43);
        for nb in [1usize, 4, 9] {
            let xs: Vec<f32> = rng
                .uniform_vec(nb * 32, 0.1)
                .iter()
                .map(|v| v + 0.03)
                .collect();
            let ys = rng.uniform_vec(nb * 32, 5.0);
            let mut bx = vec![BlockQ5_1::default(); nb];
            let mut by = vec![BlockQ8_1::default(); nb];
            BlockQ5_1::quantize_row(&xs, &mut bx).unwrap();
            BlockQ8_1::quantize_row(&ys, &mut by).unwrap();
            let (mut dx, mut dy) = (vec![0.0; nb * 32], vec![0.0; nb * 32]);
            BlockQ5_1::dequantize_row(&bx, &mut dx).unwrap();
            BlockQ8_1::dequantize_row(&by, &mut dy).unwrap();
            let exact = dot_f64(&dx, &dy);
            let got = vec_dot_q5_1_q8_1(&bx, &by).unwrap() as f64;
            // The s term: f16(d sum p) instead of f16(d) sum p, as for Q4_1.
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
        // No clamping, min and max exact: 0.2887 * sqrt(30/32) = 0.2795 of (max - min) / 31.
        let rmse = normalized_rmse(GgmlType::Q5_1, 256, |x| {
            let max = x.iter().fold(f32::MIN, |a, &v| a.max(v));
            let min = x.iter().fold(f32::MAX, |a, &v| a.min(v));
            (max - min) / 31.0
        });
        assert!(rmse < 0.295 && rmse > 0.27, "{rmse}");
    }
}
