//! Q5_K: Q4_K's groups and scales with 5-bit levels: the fifth bits in a 32-byte mask
//! (176 bytes).

use super::k_common::{fold8, lanes8, quantize_scale_min_k4, scale_min_k4};
use super::q4_k::check_k_scales;
use super::q8_k::{super_values, super_values_mut, BlockQ8K};
use super::{f16_le, Block, RowBlock};
use crate::types::QK_K;
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One Q5_K block, ggml's `block_q5_K`: nibbles as in [`super::BlockQ4K`]; the fifth bit
/// of element `64c + l` is bit `2c` of `qh[l % 32]` for `l < 32`, bit `2c + 1` for
/// `32 <= l < 64`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct BlockQ5K {
    /// Super-block scale of the group scales (f16, little-endian).
    pub d: [u8; 2],
    /// Super-block scale of the group minimums (f16, little-endian).
    pub dmin: [u8; 2],
    /// 8 six-bit scales and 8 six-bit minimums, packed as in Q4_K.
    pub scales: [u8; 12],
    /// The fifth bits.
    pub qh: [u8; QK_K / 8],
    /// The low nibbles.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(size_of::<BlockQ5K>() == 176);
const _: () = assert!(align_of::<BlockQ5K>() == 1);

impl Default for BlockQ5K {
    fn default() -> Self {
        Self {
            d: [0; 2],
            dmin: [0; 2],
            scales: [0; 12],
            qh: [0; QK_K / 8],
            qs: [0; QK_K / 2],
        }
    }
}

impl Block for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
}

impl BlockQ5K {
    /// The scale of the group scales.
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }

    /// The scale of the group minimums.
    pub fn dmin(&self) -> f32 {
        f16_le(self.dmin)
    }

    /// The 6-bit scale and minimum of group `g` (0..8).
    pub fn scale_min(&self, g: usize) -> (u8, u8) {
        scale_min_k4(g, &self.scales)
    }

    /// The 256 levels (0..=31) in element order.
    pub fn levels(&self) -> [i8; QK_K] {
        std::array::from_fn(|e| {
            let (c, r) = (e / 64, e % 64);
            let q = self.qs[32 * c + r % 32];
            let (nib, bit) = if r < 32 {
                (q & 0xF, 2 * c)
            } else {
                (q >> 4, 2 * c + 1)
            };
            let hi = (self.qh[r % 32] >> bit) & 1;
            (nib | (hi << 4)) as i8
        })
    }

    /// Quantizes one block exactly as ggml's reference does (no importance matrix).
    // Port of `quantize_row_q5_K_ref`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn quantize(x: &[f32; QK_K]) -> Self {
        let mut l = [0u8; QK_K];
        let (d, dmin, scales) = quantize_scale_min_k4(x, 31, -0.5, 15, &mut l);
        let mut y = Self {
            d,
            dmin,
            scales,
            ..Default::default()
        };
        let (mut m1, mut m2) = (1u8, 2u8);
        for c in 0..4 {
            for j in 0..32 {
                let mut l1 = l[64 * c + j];
                if l1 > 15 {
                    l1 -= 16;
                    y.qh[j] |= m1;
                }
                let mut l2 = l[64 * c + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    y.qh[j] |= m2;
                }
                y.qs[32 * c + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
        y
    }

    /// Dequantizes the block: `out[e] = d * sc * q - dmin * m`.
    // Port of `dequantize_row_q5_K`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let (d, min) = (self.d(), self.dmin());
        let q = self.levels();
        for g in 0..8 {
            let (sc, m) = self.scale_min(g);
            let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
            for e in 32 * g..32 * g + 32 {
                out[e] = d1 * f32::from(q[e]) - m1;
            }
        }
    }
}

// The f16 super-block scales must fit; otherwise the blocks are ggml's.
impl RowBlock for BlockQ5K {
    const LEN: usize = QK_K;

    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError> {
        let b = Self::quantize(super_values::<Self>(x)?);
        check_k_scales(GgmlType::Q5_K, first, b.d, b.dmin)?;
        Ok(b)
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(super_values_mut::<Self>(out)?);
        Ok(())
    }
}

/// `sum_i x[i] * y[i]` for Q5_K weights and Q8_K activations, in the order of ggml's generic
/// kernel (as [`super::q4_k::vec_dot_q4_k_q8_k`]).
// Port of `ggml_vec_dot_q5_K_q8_K_generic`, ggml-org/llama.cpp ggml/src/ggml-cpu/quants.c
// @aec5bf1.
pub fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> Result<f32, KernelError> {
    super::check_len("activation blocks", x.len(), y.len())?;
    Ok(fold8(x.iter().zip(y).map(|(bx, by)| {
        let sm: [(u8, u8); 8] = std::array::from_fn(|g| bx.scale_min(g));
        let sumi: i32 = (0..16).map(|j| by.bsum(j) * i32::from(sm[j / 2].1)).sum();
        let aux32 = lanes8(&bx.levels(), &by.qs, 32, |g| i32::from(sm[g].0));
        let d = bx.d() * by.d();
        let dmin = bx.dmin() * by.d();
        (d, aux32, Some(dmin * sumi as f32))
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests_common::*;
    use crate::quant::to_f16_le;

    #[test]
    fn hand_computed_levels() {
        let mut b = BlockQ5K {
            d: to_f16_le(1.0),
            dmin: to_f16_le(0.5),
            ..Default::default()
        };
        b.scales[2] = 4; // group 2: sc 4
        b.scales[6] = 6; // group 2: m 6
                         // Element 64 + 3 (group 2, low nibble of qs[35]): nibble 9, fifth bit 2c = 2 of qh[3].
        b.qs[35] = 0x09;
        b.qh[3] = 1 << 2;
        // Element 96 + 3 (group 3, high nibble of qs[35]): nibble 0, bit 3 clear.
        let q = b.levels();
        assert_eq!((q[67], q[99], q[3]), (25, 0, 0));
        let mut out = [0.0f32; QK_K];
        b.dequantize(&mut out);
        assert_eq!(out[67], 4.0 * 25.0 - 3.0);
        assert_eq!(out[64], -3.0);
        // Quantizing what it decodes reproduces levels within a step.
        let back = BlockQ5K::quantize(&out);
        let mut out2 = [0.0f32; QK_K];
        back.dequantize(&mut out2);
        assert!((out2[67] - out[67]).abs() <= 0.5 * 97.0 / 31.0 * 1.02);
    }

    #[test]
    fn dot_equals_dequantized_dot() {
        let mut rng = Lcg(501);
        for nb in [1usize, 3] {
            let xs = rng.uniform_vec(nb * QK_K, 0.5);
            let mut bx = vec![BlockQ5K::default(); nb];
            BlockQ5K::quantize_row(&xs, &mut bx).unwrap();
            let ys = rng.uniform_vec(nb * QK_K, 3.0);
            let mut by = vec![BlockQ8K::default(); nb];
            BlockQ8K::quantize_row(&ys, &mut by).unwrap();
            let (mut dx, mut dy) = (vec![0.0; nb * QK_K], vec![0.0; nb * QK_K]);
            BlockQ5K::dequantize_row(&bx, &mut dx).unwrap();
            BlockQ8K::dequantize_row(&by, &mut dy).unwrap();
            let exact = dot_f64(&dx, &dy);
            let got = vec_dot_q5_k_q8_k(&bx, &by).unwrap() as f64;
            let mag = sum_abs_products(&dx, &dy)
                + bx.iter()
                    .zip(&by)
                    .map(|(b, a)| {
                        (0..16)
                            .map(|j| {
                                b.dmin() as f64
                                    * b.scale_min(j / 2).1 as f64
                                    * (a.d() as f64 * a.bsum(j) as f64).abs()
                            })
                            .sum::<f64>()
                    })
                    .sum::<f64>();
            let tol = mag * (nb as f64 + 12.0) * f32::EPSILON as f64;
            assert!((got - exact).abs() <= tol, "{got} vs {exact}");
        }
    }

    #[test]
    fn edge_cases_and_round_trip() {
        assert_eq!(BlockQ5K::quantize(&[0.0; QK_K]), BlockQ5K::default());
        let mut out = [0.0f32; QK_K];
        BlockQ5K::quantize(&[-2.0; QK_K]).dequantize(&mut out);
        assert!(out.iter().all(|&v| (v + 2.0).abs() < 2e-3));
        // Uniform [-1, 1): step about 2/31, RMS about 0.019; bound 0.023.
        let x = Lcg(5252).uniform_vec(64 * QK_K, 1.0);
        let mut blocks = vec![BlockQ5K::default(); 64];
        BlockQ5K::quantize_row(&x, &mut blocks).unwrap();
        let mut back = vec![0.0f32; x.len()];
        BlockQ5K::dequantize_row(&blocks, &mut back).unwrap();
        let mse: f64 = x
            .iter()
            .zip(&back)
            .map(|(&a, &b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / x.len() as f64;
        assert!(mse.sqrt() < 0.023 && mse.sqrt() > 0.01, "{}", mse.sqrt());
    }
}
