//! Q3_K: 256 values in 16 groups of 16, each `d * (sc - 32) * q` with 3-bit signed levels
//! (2 low bits plus a high-bit mask) and 6-bit group scales (110 bytes).

use super::k_common::{fold8, lanes8, make_q3_quants, nearest_int};
use super::q4_k::check_k_scales;
use super::q8_k::{super_values, super_values_mut, BlockQ8K};
use super::{f16_le, to_f16_le, Block, RowBlock};
use crate::types::QK_K;
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One Q3_K block, ggml's `block_q3_K`. Element `128n + 32s + l` has low bits `2s..2s + 2`
/// of `qs[32n + l]` and high bit `4n + s` of `hmask[l]`; its value is `low - 4` when that
/// bit is clear, `low` when set. Group `g` (16 elements) has the 6-bit scale
/// [`BlockQ3K::scale`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct BlockQ3K {
    /// The high bits.
    pub hmask: [u8; QK_K / 8],
    /// The low 2 bits.
    pub qs: [u8; QK_K / 4],
    /// 16 six-bit scales, packed.
    pub scales: [u8; 12],
    /// The super-block scale (f16, little-endian).
    pub d: [u8; 2],
}

const _: () = assert!(size_of::<BlockQ3K>() == 110);
const _: () = assert!(align_of::<BlockQ3K>() == 1);

impl Block for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
}

impl BlockQ3K {
    /// The 16 scales minus 32 (-32..=31), unpacked as ggml's `kmask` code does: scale `j`
    /// has low nibble `scales[j % 8]` (low half for `j < 8`, high half after) and high bits
    /// `2 * (j / 4)..+2` of `scales[8 + j % 4]`.
    // From `dequantize_row_q3_K`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn scales(&self) -> [i32; 16] {
        std::array::from_fn(|j| {
            let low = if j < 8 {
                self.scales[j] & 0xF
            } else {
                self.scales[j - 8] >> 4
            };
            let high = (self.scales[8 + j % 4] >> (2 * (j / 4))) & 3;
            i32::from(low | (high << 4)) - 32
        })
    }

    /// The 256 levels (-4..=3) in element order.
    pub fn levels(&self) -> [i8; QK_K] {
        std::array::from_fn(|e| {
            let (n, r) = (e / 128, e % 128);
            let (s, l) = (r / 32, r % 32);
            let low = ((self.qs[32 * n + l] >> (2 * s)) & 3) as i8;
            let set = self.hmask[l] & (1 << (4 * n + s)) != 0;
            if set {
                low
            } else {
                low - 4
            }
        })
    }

    /// Dequantizes the block: `out[e] = (d * (sc - 32)) * q`.
    // Port of `dequantize_row_q3_K`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = f16_le(self.d);
        let sc = self.scales();
        for (e, (o, q)) in out.iter_mut().zip(self.levels()).enumerate() {
            *o = d * sc[e / 16] as f32 * f32::from(q);
        }
    }
}

impl BlockQ3K {
    /// Quantizes one block exactly as ggml's reference does (no importance matrix).
    // Port of `quantize_row_q3_K_ref`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn quantize(x: &[f32; QK_K]) -> Self {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let mut max_scale = 0.0f32;
        let mut amax = 0.0f32;
        for j in 0..16 {
            scales[j] = make_q3_quants(
                4,
                &x[16 * j..16 * j + 16],
                &mut l[16 * j..16 * j + 16],
                true,
            );
            let scale = scales[j].abs();
            if scale > amax {
                amax = scale;
                max_scale = scales[j];
            }
        }
        let mut y = Self {
            hmask: [0; QK_K / 8],
            qs: [0; QK_K / 4],
            scales: [0; 12],
            d: to_f16_le(0.0),
        };
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &s) in scales.iter().enumerate() {
                // C: int8_t l = nearest_int(...) keeps the low byte, then MAX/MIN and + 32.
                let q = i32::from(nearest_int(iscale * s) as i8).clamp(-32, 31) + 32;
                let q = q as u8;
                if j < 8 {
                    y.scales[j] = q & 0xF;
                } else {
                    y.scales[j - 8] |= (q & 0xF) << 4;
                }
                y.scales[j % 4 + 8] |= (q >> 4) << (2 * (j / 4));
            }
            y.d = to_f16_le(1.0 / iscale);
        }
        let sc = y.scales();
        let dall = f16_le(y.d);
        for j in 0..16 {
            let d = dall * sc[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
                l[16 * j + ii] = (q + 4) as i8;
            }
        }
        // The high bit of element j goes to bit j / 32 of hmask[j % 32].
        let (mut m, mut hm) = (0usize, 1u8);
        for lj in l.iter_mut() {
            if *lj > 3 {
                y.hmask[m] |= hm;
                *lj -= 4;
            }
            m += 1;
            if m == QK_K / 8 {
                m = 0;
                hm <<= 1;
            }
        }
        for n in 0..2 {
            for i in 0..32 {
                let lv = |k: usize| l[128 * n + i + 32 * k] as u8;
                y.qs[32 * n + i] = lv(0) | (lv(1) << 2) | (lv(2) << 4) | (lv(3) << 6);
            }
        }
        y
    }
}

// The f16 super-block scale must fit; otherwise the blocks are ggml's.
impl RowBlock for BlockQ3K {
    const LEN: usize = QK_K;

    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError> {
        let b = Self::quantize(super_values::<Self>(x)?);
        check_k_scales(GgmlType::Q3_K, first, b.d, [0; 2])?;
        Ok(b)
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(super_values_mut::<Self>(out)?);
        Ok(())
    }
}

/// `sum_i x[i] * y[i]` for Q3_K weights and Q8_K activations, in the order of ggml's generic
/// kernel (8 integer lanes with the group scales minus 32, 8 float lanes, lanes last).
// Port of `ggml_vec_dot_q3_K_q8_K_generic`, ggml-org/llama.cpp ggml/src/ggml-cpu/quants.c
// @aec5bf1.
pub fn vec_dot_q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> Result<f32, KernelError> {
    super::check_len("activation blocks", x.len(), y.len())?;
    Ok(fold8(x.iter().zip(y).map(|(bx, by)| {
        let sc = bx.scales();
        let aux32 = lanes8(&bx.levels(), &by.qs, 16, |g| sc[g]);
        (f16_le(bx.d) * by.d(), aux32, None)
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests_common::*;
    use crate::quant::to_f16_le;

    fn zero() -> BlockQ3K {
        BlockQ3K {
            hmask: [0; 32],
            qs: [0; 64],
            scales: [0; 12],
            d: to_f16_le(0.5),
        }
    }

    #[test]
    fn hand_computed_block_and_dot() {
        let mut b = zero();
        // Scale 9 (group 9): low nibble = high half of scales[1], high bits 4-5 of
        // scales[9]: 0x5 | (2 << 4) = 37 -> 5.
        b.scales[1] = 0x50;
        b.scales[9] = 2 << 4;
        assert_eq!(b.scales()[9], 5);
        assert_eq!(b.scales()[0], -32);
        // Element 128 + 16 + 3 = 147 (n 1, s 0, l 19; group 9): low bits of qs[32 + 19] = 2,
        // hmask bit 4 of hmask[19] set -> 2.
        b.qs[51] = 2;
        b.hmask[19] = 1 << 4;
        let q = b.levels();
        assert_eq!((q[147], q[0]), (2, -4));
        let mut out = [0.0f32; QK_K];
        b.dequantize(&mut out);
        assert_eq!(out[147], 0.5 * 5.0 * 2.0);
        assert_eq!(out[0], 0.5 * -32.0 * -4.0);
        let mut a = BlockQ8K {
            d: 0.5f32.to_le_bytes(),
            ..Default::default()
        };
        a.qs[147] = 7;
        a.qs[0] = 1;
        assert_eq!(
            vec_dot_q3_k_q8_k(&[b], &[a]),
            Ok(0.5 * (7.0 * out[147] + out[0]))
        );
    }

    #[test]
    fn dot_equals_dequantized_dot() {
        let mut rng = Lcg(301);
        let nb = 3;
        let bx: Vec<BlockQ3K> = (0..nb)
            .map(|_| {
                let mut b = zero();
                b.d = to_f16_le(0.003);
                for v in b
                    .hmask
                    .iter_mut()
                    .chain(b.qs.iter_mut())
                    .chain(b.scales.iter_mut())
                {
                    *v = (rng.next_f32() * 256.0) as u8;
                }
                b
            })
            .collect();
        let ys = rng.uniform_vec(nb * QK_K, 2.0);
        let mut by = vec![BlockQ8K::default(); nb];
        BlockQ8K::quantize_row(&ys, &mut by).unwrap();
        let (mut dx, mut dy) = (vec![0.0; nb * QK_K], vec![0.0; nb * QK_K]);
        BlockQ3K::dequantize_row(&bx, &mut dx).unwrap();
        BlockQ8K::dequantize_row(&by, &mut dy).unwrap();
        let exact = dot_f64(&dx, &dy);
        let got = vec_dot_q3_k_q8_k(&bx, &by).unwrap() as f64;
        assert!((got - exact).abs() <= sum_abs_products(&dx, &dy) * 16.0 * f32::EPSILON as f64);
    }

    #[test]
    fn quantizer_edge_cases_and_round_trip() {
        let b = BlockQ3K::quantize(&[0.0; QK_K]);
        assert_eq!(f16_le(b.d), 0.0);
        let mut out = [0.0f32; QK_K];
        b.dequantize(&mut out);
        assert!(out.iter().all(|&v| v == 0.0));
        // Constant: the max maps to level -4 with the group scale; decodes within 1/8.
        BlockQ3K::quantize(&[0.5; QK_K]).dequantize(&mut out);
        assert!(
            out.iter().all(|&v| (v - 0.5).abs() < 0.5 / 8.0),
            "{:?}",
            &out[..3]
        );
        let mut x = [0.0f32; QK_K];
        x[200] = -1.0e4;
        BlockQ3K::quantize(&x).dequantize(&mut out);
        assert!((out[200] + 1.0e4).abs() < 1.0e4 / 8.0);
        assert!(out.iter().enumerate().all(|(j, &v)| j == 200 || v == 0.0));
        // Uniform [-1, 1): 8 levels over each group's range, RMS about 0.07; bound 0.085.
        let x = Lcg(3131).uniform_vec(32 * QK_K, 1.0);
        let mut blocks = vec![BlockQ3K::quantize(&[0.0; QK_K]); 32];
        BlockQ3K::quantize_row(&x, &mut blocks).unwrap();
        let mut back = vec![0.0f32; x.len()];
        BlockQ3K::dequantize_row(&blocks, &mut back).unwrap();
        let mse: f64 = x
            .iter()
            .zip(&back)
            .map(|(&a, &b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / x.len() as f64;
        assert!(mse.sqrt() < 0.085 && mse.sqrt() > 0.03, "{}", mse.sqrt());
    }
}
