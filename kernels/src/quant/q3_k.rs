//! Q3_K: 256 values in 16 groups of 16, each `d * (sc - 32) * q` with 3-bit signed levels
//! (2 low bits plus a high-bit mask) and 6-bit group scales (110 bytes). Read and multiplied
//! here; the converter does not write it yet.

use super::k_common::{fold8, lanes8};
use super::q8_k::BlockQ8K;
use super::{f16_le, Block, DecodeBlock};
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

impl DecodeBlock for BlockQ3K {
    const LEN: usize = QK_K;

    fn decode(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(super::super_block_mut(out)?);
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
    use crate::quant::{to_f16_le, RowBlock};

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
        let mut a = BlockQ8K::default();
        a.d = 0.5f32.to_le_bytes();
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
        super::super::DecodeBlock::decode_row(&bx, &mut dx).unwrap();
        BlockQ8K::dequantize_row(&by, &mut dy).unwrap();
        let exact = dot_f64(&dx, &dy);
        let got = vec_dot_q3_k_q8_k(&bx, &by).unwrap() as f64;
        assert!((got - exact).abs() <= sum_abs_products(&dx, &dy) * 16.0 * f32::EPSILON as f64);
    }
}
