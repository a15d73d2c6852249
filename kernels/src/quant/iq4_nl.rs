//! IQ4_NL: 32 values as 4-bit indices into ggml's fixed non-linear table times one f16 scale
//! (18 bytes), and IQ4_XS: the same values in super-blocks of 256 with 6-bit group scales
//! (136 bytes). Read and multiplied here; the converter does not write them yet.

use super::q8_0::BlockQ8_0;
use super::q8_k::BlockQ8K;
use super::{f16_le, Block, DecodeBlock, QK};
use crate::types::QK_K;
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// ggml's `kvalues_iq4nl` (ggml/src/ggml-common.h): the 16 levels of IQ4_NL and IQ4_XS.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// One IQ4_NL block, ggml's `block_iq4_nl`: element `j < 16` is
/// `KVALUES_IQ4NL[qs[j] & 0xF] * d`, element `j + 16` uses the high nibble.
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
pub struct BlockIq4Nl {
    /// The scale (f16, little-endian).
    pub d: [u8; 2],
    /// The table indices.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(size_of::<BlockIq4Nl>() == 18);
const _: () = assert!(align_of::<BlockIq4Nl>() == 1);

impl Block for BlockIq4Nl {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
}

/// The 32 table values of 16 index bytes: low nibbles, then high nibbles.
fn table_values(qs: &[u8; 16]) -> [i8; QK] {
    std::array::from_fn(|j| {
        let q = qs[j % 16];
        KVALUES_IQ4NL[usize::from(if j < 16 { q & 0xF } else { q >> 4 })]
    })
}

impl BlockIq4Nl {
    /// The 32 table values in element order.
    pub fn values(&self) -> [i8; QK] {
        table_values(&self.qs)
    }

    /// Dequantizes the block: `out[j] = d * value_j`.
    // Port of `dequantize_row_iq4_nl`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = f16_le(self.d);
        for (o, v) in out.iter_mut().zip(self.values()) {
            *o = d * f32::from(v);
        }
    }
}

impl DecodeBlock for BlockIq4Nl {
    const LEN: usize = QK;

    fn decode(&self, out: &mut [f32]) -> Result<(), KernelError> {
        let len = out.len();
        let out: &mut [f32; QK] = out.try_into().map_err(|_| KernelError::SizeMismatch {
            what: "block elements",
            expected: QK,
            got: len,
        })?;
        self.dequantize(out);
        Ok(())
    }
}

/// `sum_i x[i] * y[i]` for IQ4_NL weights and Q8_0 activations: per block
/// `sumf += (f16(y.d) * f16(x.d)) * (sumi1 + sumi2)`.
// Port of `ggml_vec_dot_iq4_nl_q8_0_generic`, ggml-org/llama.cpp ggml/src/ggml-cpu/quants.c
// @aec5bf1.
pub fn vec_dot_iq4_nl_q8_0(x: &[BlockIq4Nl], y: &[BlockQ8_0]) -> Result<f32, KernelError> {
    super::check_len("activation blocks", x.len(), y.len())?;
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let d = by.d() * f16_le(bx.d);
        let sumi: i32 = bx
            .values()
            .iter()
            .zip(&by.qs)
            .map(|(&v, &a)| i32::from(v) * i32::from(a))
            .sum();
        sumf += d * sumi as f32;
    }
    Ok(sumf)
}

/// One IQ4_XS block, ggml's `block_iq4_xs`: group `g` (32 elements) holds IQ4_NL indices
/// `qs[16g..16g + 16]` (low nibbles: elements `32g..32g + 16`), with the 6-bit scale
/// [`BlockIq4Xs::scale`] minus 32 times `d`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct BlockIq4Xs {
    /// The super-block scale (f16, little-endian).
    pub d: [u8; 2],
    /// High 2 bits of the 8 group scales (little-endian u16, 2 bits per group).
    pub scales_h: [u8; 2],
    /// Low 4 bits of the 8 group scales.
    pub scales_l: [u8; QK_K / 64],
    /// The table indices.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(size_of::<BlockIq4Xs>() == 136);
const _: () = assert!(align_of::<BlockIq4Xs>() == 1);

impl Block for BlockIq4Xs {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
}

impl BlockIq4Xs {
    /// The 6-bit scale of group `g` (0..8).
    pub fn scale(&self, g: usize) -> i32 {
        let h = u16::from_le_bytes(self.scales_h);
        let low = (self.scales_l[g / 2] >> (4 * (g % 2))) & 0xF;
        let high = ((h >> (2 * g)) & 3) as u8;
        i32::from(low | (high << 4))
    }

    /// The 32 table values of group `g`.
    pub fn values(&self, g: usize) -> [i8; QK] {
        let mut qs = [0u8; 16];
        qs.copy_from_slice(&self.qs[16 * g..16 * g + 16]);
        table_values(&qs)
    }

    /// Dequantizes the block: `out[32g + j] = (d * (scale_g - 32)) * value`.
    // Port of `dequantize_row_iq4_xs`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = f16_le(self.d);
        for (g, o) in out.chunks_exact_mut(QK).enumerate() {
            let dl = d * (self.scale(g) - 32) as f32;
            for (o, v) in o.iter_mut().zip(self.values(g)) {
                *o = dl * f32::from(v);
            }
        }
    }
}

impl DecodeBlock for BlockIq4Xs {
    const LEN: usize = QK_K;

    fn decode(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(super::super_block_mut(out)?);
        Ok(())
    }
}

/// `sum_i x[i] * y[i]` for IQ4_XS weights and Q8_K activations: per group
/// `sumf += (d4d8 * (ls - 32)) * sumi` with `d4d8 = f16(x.d) * y.d`, in group order.
// Port of `ggml_vec_dot_iq4_xs_q8_K_generic`, ggml-org/llama.cpp ggml/src/ggml-cpu/quants.c
// @aec5bf1.
pub fn vec_dot_iq4_xs_q8_k(x: &[BlockIq4Xs], y: &[BlockQ8K]) -> Result<f32, KernelError> {
    super::check_len("activation blocks", x.len(), y.len())?;
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let d4d8 = f16_le(bx.d) * by.d();
        for g in 0..8 {
            let dl = d4d8 * (bx.scale(g) - 32) as f32;
            let sumi: i32 = bx
                .values(g)
                .iter()
                .zip(&by.qs[32 * g..32 * g + 32])
                .map(|(&v, &a)| i32::from(v) * i32::from(a))
                .sum();
            sumf += dl * sumi as f32;
        }
    }
    Ok(sumf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests_common::*;
    use crate::quant::{to_f16_le, RowBlock};

    #[test]
    fn hand_computed_blocks() {
        let mut b = BlockIq4Nl {
            d: to_f16_le(0.5),
            qs: [0x88; 16],
        };
        b.qs[3] = 0xF0; // element 3: index 0 (-127), element 19: index 15 (113)
        let mut out = [0.0f32; 32];
        b.dequantize(&mut out);
        assert_eq!((out[3], out[19], out[0]), (-63.5, 56.5, 0.5));
        let mut a = BlockQ8_0 {
            d: to_f16_le(2.0),
            qs: [0; 32],
        };
        a.qs[3] = 1;
        a.qs[19] = -2;
        assert_eq!(
            vec_dot_iq4_nl_q8_0(&[b], &[a]),
            Ok(2.0 * 0.5 * (-127.0 - 226.0))
        );

        let mut x = BlockIq4Xs {
            d: to_f16_le(0.25),
            scales_h: [0; 2],
            scales_l: [0; 4],
            qs: [0; 128],
        };
        // Group 3: low nibble = high half of scales_l[1] = 0x7, high bits 6-7 of scales_h = 2
        // -> 0x27 = 39 -> 7.
        x.scales_l[1] = 0x70;
        x.scales_h = (2u16 << 6).to_le_bytes();
        assert_eq!(x.scale(3), 39);
        assert_eq!(x.scale(0), 0);
        x.qs[48] = 0x0E; // group 3, element 96: index 14 (89); element 112: index 0 (-127)
        let mut out = [0.0f32; QK_K];
        x.dequantize(&mut out);
        assert_eq!(
            (out[96], out[112]),
            (0.25 * 7.0 * 89.0, 0.25 * 7.0 * -127.0)
        );
        assert_eq!(out[0], 0.25 * -32.0 * -127.0);
        let mut a = BlockQ8K::default();
        a.d = 1.0f32.to_le_bytes();
        a.qs[96] = 1;
        a.qs[0] = 1;
        assert_eq!(vec_dot_iq4_xs_q8_k(&[x], &[a]), Ok(out[0] + out[96]));
    }

    #[test]
    fn dots_equal_dequantized_dots() {
        let mut rng = Lcg(2001);
        let nb = 3;
        let bx: Vec<BlockIq4Xs> = (0..nb)
            .map(|_| {
                let mut b = BlockIq4Xs {
                    d: to_f16_le(0.0005),
                    scales_h: [0; 2],
                    scales_l: [0; 4],
                    qs: [0; 128],
                };
                for v in b
                    .scales_h
                    .iter_mut()
                    .chain(b.scales_l.iter_mut())
                    .chain(b.qs.iter_mut())
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
        DecodeBlock::decode_row(&bx, &mut dx).unwrap();
        BlockQ8K::dequantize_row(&by, &mut dy).unwrap();
        let got = vec_dot_iq4_xs_q8_k(&bx, &by).unwrap() as f64;
        let exact = dot_f64(&dx, &dy);
        assert!((got - exact).abs() <= sum_abs_products(&dx, &dy) * 30.0 * f32::EPSILON as f64);

        let nx: Vec<BlockIq4Nl> = (0..8)
            .map(|_| {
                let mut b = BlockIq4Nl {
                    d: to_f16_le(0.001 + rng.next_f32() * 0.01),
                    qs: [0; 16],
                };
                for v in &mut b.qs {
                    *v = (rng.next_f32() * 256.0) as u8;
                }
                b
            })
            .collect();
        let ys = rng.uniform_vec(8 * 32, 2.0);
        let mut ay = vec![BlockQ8_0::default(); 8];
        BlockQ8_0::quantize_row(&ys, &mut ay).unwrap();
        let (mut dx, mut dy) = (vec![0.0; 256], vec![0.0; 256]);
        DecodeBlock::decode_row(&nx, &mut dx).unwrap();
        BlockQ8_0::dequantize_row(&ay, &mut dy).unwrap();
        let got = vec_dot_iq4_nl_q8_0(&nx, &ay).unwrap() as f64;
        let exact = dot_f64(&dx, &dy);
        assert!((got - exact).abs() <= sum_abs_products(&dx, &dy) * 12.0 * f32::EPSILON as f64);
    }
}
