//! Q2_K: 256 values in 16 groups of 16, each `d * sc * q - dmin * m` with 2-bit levels and
//! 4-bit group scales and minimums (84 bytes).

use super::k_common::{lanes8, make_qkx2_quants, nearest_int};
use super::q4_k::check_k_scales;
use super::q8_k::{super_values, super_values_mut, BlockQ8K};
use super::{f16_le, to_f16_le, Block, RowBlock};
use crate::types::QK_K;
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One Q2_K block, ggml's `block_q2_K`. Element `128n + 32s + l` (`s < 4`, `l < 32`) is bits
/// `2s..2s + 2` of `qs[32n + l]`; element `e` has group `e / 16`, whose `scales` byte holds
/// the scale (low nibble) and minimum (high nibble).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct BlockQ2K {
    /// Group scales (low nibbles) and minimums (high nibbles).
    pub scales: [u8; QK_K / 16],
    /// The 2-bit levels.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the group scales (f16, little-endian).
    pub d: [u8; 2],
    /// Super-block scale of the group minimums (f16, little-endian).
    pub dmin: [u8; 2],
}

const _: () = assert!(size_of::<BlockQ2K>() == 84);
const _: () = assert!(align_of::<BlockQ2K>() == 1);

impl Block for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
}

impl BlockQ2K {
    /// The 256 levels (0..=3) in element order.
    pub fn levels(&self) -> [i8; QK_K] {
        std::array::from_fn(|e| {
            let (n, r) = (e / 128, e % 128);
            ((self.qs[32 * n + r % 32] >> (2 * (r / 32))) & 3) as i8
        })
    }

    /// Dequantizes the block: `out[e] = (d * sc) * q - dmin * m`.
    // Port of `dequantize_row_q2_K`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let (d, min) = (f16_le(self.d), f16_le(self.dmin));
        for (e, (o, q)) in out.iter_mut().zip(self.levels()).enumerate() {
            let sc = self.scales[e / 16];
            let (dl, ml) = (d * f32::from(sc & 0xF), min * f32::from(sc >> 4));
            *o = dl * f32::from(q) - ml;
        }
    }
}

impl BlockQ2K {
    /// Quantizes one block exactly as ggml's reference does (no importance matrix).
    // Port of `quantize_row_q2_K_ref`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn quantize(x: &[f32; QK_K]) -> Self {
        const Q4SCALE: f32 = 15.0;
        let mut l = [0u8; QK_K];
        let mut weights = [0.0f32; 16];
        let mut mins = [0.0f32; 16];
        let mut scales = [0.0f32; 16];
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        for j in 0..16 {
            let xs = &x[16 * j..16 * j + 16];
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (s, m) = make_qkx2_quants(
                3,
                xs,
                &weights,
                &mut l[16 * j..16 * j + 16],
                -0.5,
                0.1,
                15,
                true,
            );
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        let mut y = Self {
            scales: [0; QK_K / 16],
            qs: [0; QK_K / 4],
            d: to_f16_le(0.0),
            dmin: to_f16_le(0.0),
        };
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for (o, &s) in y.scales.iter_mut().zip(&scales) {
                *o = nearest_int(iscale * s) as u8;
            }
            y.d = to_f16_le(max_scale / Q4SCALE);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for (o, &m) in y.scales.iter_mut().zip(&mins) {
                *o |= (nearest_int(iscale * m) << 4) as u8;
            }
            y.dmin = to_f16_le(max_min / Q4SCALE);
        }
        for j in 0..16 {
            let d = f16_le(y.d) * f32::from(y.scales[j] & 0xF);
            if d == 0.0 {
                continue;
            }
            let dm = f16_le(y.dmin) * f32::from(y.scales[j] >> 4);
            for ii in 0..16 {
                let q = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3);
                l[16 * j + ii] = q as u8;
            }
        }
        for n in 0..2 {
            for i in 0..32 {
                let lv = |k: usize| l[128 * n + i + 32 * k];
                y.qs[32 * n + i] = lv(0) | (lv(1) << 2) | (lv(2) << 4) | (lv(3) << 6);
            }
        }
        y
    }
}

// The f16 super-block scales must fit; otherwise the blocks are ggml's.
impl RowBlock for BlockQ2K {
    const LEN: usize = QK_K;

    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError> {
        let b = Self::quantize(super_values::<Self>(x)?);
        check_k_scales(GgmlType::Q2_K, first, b.d, b.dmin)?;
        Ok(b)
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(super_values_mut::<Self>(out)?);
        Ok(())
    }
}

/// `sum_i x[i] * y[i]` for Q2_K weights and Q8_K activations: per block
/// `sumf += dall * isum - dmin * summs` with `dall = y.d * f16(x.d)`,
/// `dmin = y.d * f16(x.dmin)`, `isum` the scaled integer dot and `summs` the minimums
/// times the activation sums.
// Port of `ggml_vec_dot_q2_K_q8_K_generic`, ggml-org/llama.cpp ggml/src/ggml-cpu/quants.c
// @aec5bf1.
pub fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> Result<f32, KernelError> {
    super::check_len("activation blocks", x.len(), y.len())?;
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let summs: i32 = (0..16)
            .map(|j| by.bsum(j) * i32::from(bx.scales[j] >> 4))
            .sum();
        let dall = by.d() * f16_le(bx.d);
        let dmin = by.d() * f16_le(bx.dmin);
        let isum: i32 = lanes8(&bx.levels(), &by.qs, 16, |g| i32::from(bx.scales[g] & 0xF))
            .iter()
            .sum();
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    Ok(sumf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests_common::*;
    use crate::quant::to_f16_le;

    #[test]
    fn hand_computed_block_and_dot() {
        let mut b = BlockQ2K {
            scales: [0; 16],
            qs: [0; 64],
            d: to_f16_le(0.5),
            dmin: to_f16_le(0.25),
        };
        b.scales[2] = 0x36; // group 2: sc 6, m 3
                            // Element 32 + 1 (n 0, s 1, l 1; group 2): bits 2-3 of qs[1] = 3.
        b.qs[1] = 0b1100;
        let mut out = [0.0f32; QK_K];
        b.dequantize(&mut out);
        assert_eq!(b.levels()[33], 3);
        assert_eq!(out[33], 0.5 * 6.0 * 3.0 - 0.25 * 3.0);
        assert_eq!(out[32], -0.75);
        assert_eq!(out[0], 0.0);
        let mut a = BlockQ8K {
            d: 1.0f32.to_le_bytes(),
            ..Default::default()
        };
        a.qs[33] = 2;
        a.qs[32] = -1;
        a.bsums[2] = 1i16.to_le_bytes();
        assert_eq!(vec_dot_q2_k_q8_k(&[b], &[a]), Ok(2.0 * out[33] - out[32]));
    }

    #[test]
    fn dot_equals_dequantized_dot() {
        let mut rng = Lcg(201);
        let nb = 3;
        let bx: Vec<BlockQ2K> = (0..nb)
            .map(|_| {
                let mut b = BlockQ2K {
                    scales: [0; 16],
                    qs: [0; 64],
                    d: to_f16_le(0.01),
                    dmin: to_f16_le(0.004),
                };
                for v in b.scales.iter_mut().chain(b.qs.iter_mut()) {
                    *v = (rng.next_f32() * 256.0) as u8;
                }
                b
            })
            .collect();
        let ys = rng.uniform_vec(nb * QK_K, 2.0);
        let mut by = vec![BlockQ8K::default(); nb];
        BlockQ8K::quantize_row(&ys, &mut by).unwrap();
        let (mut dx, mut dy) = (vec![0.0; nb * QK_K], vec![0.0; nb * QK_K]);
        BlockQ2K::dequantize_row(&bx, &mut dx).unwrap();
        BlockQ8K::dequantize_row(&by, &mut dy).unwrap();
        let exact = dot_f64(&dx, &dy);
        let got = vec_dot_q2_k_q8_k(&bx, &by).unwrap() as f64;
        let mag: f64 = sum_abs_products(&dx, &dy)
            + bx.iter()
                .zip(&by)
                .map(|(b, a)| {
                    (0..16)
                        .map(|j| {
                            0.004
                                * (b.scales[j] >> 4) as f64
                                * (a.d() as f64 * a.bsum(j) as f64).abs()
                        })
                        .sum::<f64>()
                })
                .sum::<f64>();
        assert!(
            (got - exact).abs() <= mag * 16.0 * f32::EPSILON as f64,
            "{got} vs {exact}"
        );
    }
}
