//! Q4_K: 256 values in 8 groups of 32, each `d * sc * q - dmin * m` with 4-bit levels `q`,
//! 6-bit group scales `sc` and minimums `m`, and f16 super-block scales `d`, `dmin`
//! (144 bytes).

use super::k_common::{fold8, lanes8, quantize_scale_min_k4, scale_min_k4};
use super::q8_k::{super_values, super_values_mut, BlockQ8K};
use super::{checked_f16, f16_le, Block, RowBlock};
use crate::types::QK_K;
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One Q4_K block, ggml's `block_q4_K`. Byte `qs[32c + l]` (`c < 4`) holds element
/// `64c + l` in its low nibble and `64c + 32 + l` in its high nibble; element `e` belongs
/// to group `e / 32`, whose scale and minimum are [`BlockQ4K::scale_min`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct BlockQ4K {
    /// Super-block scale of the group scales, an f16 stored little-endian.
    pub d: [u8; 2],
    /// Super-block scale of the group minimums, an f16 stored little-endian.
    pub dmin: [u8; 2],
    /// 8 six-bit scales and 8 six-bit minimums, packed (see `k_common::scale_min_k4`).
    pub scales: [u8; 12],
    /// The nibbles.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(size_of::<BlockQ4K>() == 144);
const _: () = assert!(align_of::<BlockQ4K>() == 1);

impl Default for BlockQ4K {
    fn default() -> Self {
        Self {
            d: [0; 2],
            dmin: [0; 2],
            scales: [0; 12],
            qs: [0; QK_K / 2],
        }
    }
}

impl Block for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
}

impl BlockQ4K {
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

    /// The 256 levels (0..=15) in element order.
    pub fn levels(&self) -> [i8; QK_K] {
        std::array::from_fn(|e| {
            let (c, r) = (e / 64, e % 64);
            let q = self.qs[32 * c + r % 32];
            (if r < 32 { q & 0xF } else { q >> 4 }) as i8
        })
    }

    /// Quantizes one block exactly as ggml's reference does (no importance matrix).
    // Port of `quantize_row_q4_K_ref`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn quantize(x: &[f32; QK_K]) -> Self {
        let mut l = [0u8; QK_K];
        let (d, dmin, scales) = quantize_scale_min_k4(x, 15, -1.0, 20, &mut l);
        let mut y = Self {
            d,
            dmin,
            scales,
            qs: [0; QK_K / 2],
        };
        for c in 0..4 {
            for i in 0..32 {
                y.qs[32 * c + i] = l[64 * c + i] | (l[64 * c + i + 32] << 4);
            }
        }
        y
    }

    /// Dequantizes the block: `out[e] = d * sc * q - dmin * m` (two products, each rounded,
    /// then the difference).
    // Port of `dequantize_row_q4_K`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
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

// The f16 super-block scales must fit (the group values are in f32 before packing);
// otherwise the blocks are ggml's.
impl RowBlock for BlockQ4K {
    const LEN: usize = QK_K;

    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError> {
        let b = Self::quantize(super_values::<Self>(x)?);
        check_k_scales(GgmlType::Q4_K, first, b.d, b.dmin)?;
        Ok(b)
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(super_values_mut::<Self>(out)?);
        Ok(())
    }
}

/// The error of a k-quant block whose stored super-block scale or minimum is infinite.
pub(crate) fn check_k_scales(
    ty: GgmlType,
    first: usize,
    d: [u8; 2],
    dmin: [u8; 2],
) -> Result<(), KernelError> {
    for (what, v) in [("scale", d), ("minimum", dmin)] {
        let f = f16_le(v);
        if f.is_infinite() {
            checked_f16(ty, first, what, f)?;
        }
    }
    Ok(())
}

/// `sum_i x[i] * y[i]` for Q4_K weights and Q8_K activations, in the order of ggml's
/// generic kernel: 8 integer lanes per block (`aux32[l]`, the elements `8k + l` times their
/// group scale), folded into 8 float lanes with `d = f16(x.d) * y.d`, the minimums as
/// `sumf -= (f16(x.dmin) * y.d) * sum_g bsums * m` per block, and the lanes added last.
// Port of `ggml_vec_dot_q4_K_q8_K_generic`, ggml-org/llama.cpp ggml/src/ggml-cpu/quants.c
// @aec5bf1.
pub fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> Result<f32, KernelError> {
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

    pub(crate) fn random_blocks(rng: &mut Lcg, nb: usize) -> Vec<BlockQ4K> {
        (0..nb)
            .map(|_| {
                let mut b = BlockQ4K {
                    d: to_f16_le(0.001 + rng.next_f32() * 0.01),
                    dmin: to_f16_le(rng.next_f32() * 0.01),
                    ..Default::default()
                };
                for v in b.scales.iter_mut().chain(b.qs.iter_mut()) {
                    *v = (rng.next_f32() * 256.0) as u8;
                }
                b
            })
            .collect()
    }

    #[test]
    fn hand_computed_block() {
        // d = 0.5, dmin = 0.25; group 0: sc 3, m 2; group 5: sc 0x25 = 37, m 0x31 = 49.
        let mut b = BlockQ4K {
            d: to_f16_le(0.5),
            dmin: to_f16_le(0.25),
            ..Default::default()
        };
        b.scales[0] = 3;
        b.scales[4] = 2;
        // Group 5 (j >= 4): low nibbles of scales[9], high bits from scales[1] / scales[5].
        b.scales[9] = 0x15; // sc low 5, m low 1
        b.scales[1] = 2 << 6; // sc high 2 -> 5 | 32 = 37
        b.scales[5] = 3 << 6; // m high 3 -> 1 | 48 = 49
        assert_eq!(b.scale_min(0), (3, 2));
        assert_eq!(b.scale_min(5), (37, 49));
        assert_eq!(b.scale_min(1), (0, 0));
        // Element 1 (group 0, low nibble of qs[1]) = 7; element 160 + 2 (group 5: chunk 2,
        // high nibble of qs[64 + 2]) = 9.
        b.qs[1] = 0x07;
        b.qs[66] = 0x90;
        let mut out = [0.0f32; QK_K];
        b.dequantize(&mut out);
        assert_eq!(out[1], 0.5 * 3.0 * 7.0 - 0.25 * 2.0);
        assert_eq!(out[0], -0.5);
        assert_eq!(out[162], 0.5 * 37.0 * 9.0 - 0.25 * 49.0);
        assert_eq!(out[160], -0.25 * 49.0);
        // The dot with activations 1 at element 1 and 2 at element 162 (d = 1/127 * ...):
        let mut a = BlockQ8K {
            d: 0.5f32.to_le_bytes(),
            ..Default::default()
        };
        a.qs[1] = 2;
        a.qs[162] = -4;
        a.bsums[0] = 2i16.to_le_bytes();
        a.bsums[10] = (-4i16).to_le_bytes();
        // sum = 0.5 * (2 * out[1] - 4 * out[162]), exactly representable here.
        let expected = 0.5 * (2.0 * out[1] - 4.0 * out[162]);
        assert_eq!(vec_dot_q4_k_q8_k(&[b], &[a]), Ok(expected));
    }

    #[test]
    fn dot_equals_dequantized_dot() {
        let mut rng = Lcg(401);
        for nb in [1usize, 2, 5] {
            let bx = random_blocks(&mut rng, nb);
            let ys = rng.uniform_vec(nb * QK_K, 3.0);
            let mut by = vec![BlockQ8K::default(); nb];
            BlockQ8K::quantize_row(&ys, &mut by).unwrap();
            let (mut dx, mut dy) = (vec![0.0; nb * QK_K], vec![0.0; nb * QK_K]);
            BlockQ4K::dequantize_row(&bx, &mut dx).unwrap();
            BlockQ8K::dequantize_row(&by, &mut dy).unwrap();
            let exact = dot_f64(&dx, &dy);
            let got = vec_dot_q4_k_q8_k(&bx, &by).unwrap() as f64;
            // Dequantization rounds d * sc and dmin * m once each; the kernel rounds
            // f16(d) * y.d, the lane sums and the min term: a few ulps of the magnitudes,
            // counting the min part (|dmin m| * |sum y|) separately.
            let mag = sum_abs_products(&dx, &dy)
                + bx.iter()
                    .zip(&by)
                    .map(|(b, a)| {
                        (0..16)
                            .map(|j| {
                                b.dmin() as f64
                                    * b.scale_min(j / 2).1 as f64
                                    * a.d().abs() as f64
                                    * a.bsum(j).abs() as f64
                            })
                            .sum::<f64>()
                    })
                    .sum::<f64>();
            let tol = mag * (nb as f64 + 12.0) * f32::EPSILON as f64;
            assert!((got - exact).abs() <= tol, "{got} vs {exact} tol {tol}");
        }
    }

    #[test]
    fn edge_cases() {
        // All zero: scales 0, minimums 0, levels 0.
        let b = BlockQ4K::quantize(&[0.0; QK_K]);
        assert_eq!(b, BlockQ4K::default());
        // Constant rows decode to the constant within a step: all 1.0 -> min 0 (clamped:
        // min > 0 becomes 0), scale 1/15 per group.
        let b = BlockQ4K::quantize(&[1.0; QK_K]);
        let mut out = [0.0f32; QK_K];
        b.dequantize(&mut out);
        assert!(
            out.iter().all(|&v| (v - 1.0).abs() < 0.02),
            "{:?}",
            &out[..4]
        );
        // A negative constant: min -1, scale 0 in every group: exact up to f16(dmin * m).
        let b = BlockQ4K::quantize(&[-1.0; QK_K]);
        b.dequantize(&mut out);
        assert!(
            out.iter().all(|&v| (v + 1.0).abs() < 1e-3),
            "{:?}",
            &out[..4]
        );
        // One huge value: its group's scale dominates; the others still decode near 0.
        let mut x = [0.0f32; QK_K];
        x[77] = 1.0e4;
        let b = BlockQ4K::quantize(&x);
        b.dequantize(&mut out);
        assert!((out[77] - 1.0e4).abs() <= 1.0e4 / 15.0 / 2.0 * 1.01);
        assert!(out
            .iter()
            .enumerate()
            .all(|(j, &v)| j == 77 || v.abs() <= 1.0e4 / 30.0));
        // Overflowing super-block scale: refused.
        x[77] = 1.0e9;
        let mut blocks = [BlockQ4K::default()];
        assert!(matches!(
            BlockQ4K::quantize_row(&x, &mut blocks),
            Err(KernelError::F16Overflow {
                ty: GgmlType::Q4_K,
                ..
            })
        ));
    }

    #[test]
    fn round_trip_error() {
        // Uniform data in [-1, 1): each group of 32 spans about 2, so the step is about
        // 2 / 15 and the 6-bit scale quantization adds up to 1/126 of it; the RMS error is
        // about step / sqrt(12) = 0.038. Bound: 0.045.
        let x = Lcg(4242).uniform_vec(64 * QK_K, 1.0);
        let mut blocks = vec![BlockQ4K::default(); 64];
        BlockQ4K::quantize_row(&x, &mut blocks).unwrap();
        let mut back = vec![0.0f32; x.len()];
        BlockQ4K::dequantize_row(&blocks, &mut back).unwrap();
        let mse: f64 = x
            .iter()
            .zip(&back)
            .map(|(&a, &b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / x.len() as f64;
        let rms = mse.sqrt();
        assert!(rms < 0.045 && rms > 0.02, "{rms}");
        let worst = x
            .iter()
            .zip(&back)
            .map(|(&a, &b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 0.15, "{worst}");
    }
}
