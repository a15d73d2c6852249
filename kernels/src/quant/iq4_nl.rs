//! IQ4_NL: 32 values as 4-bit indices into ggml's fixed non-linear table times one f16 scale
//! (18 bytes), and IQ4_XS: the same values in super-blocks of 256 with 6-bit group scales
//! (136 bytes).

use super::k_common::{nearest_int, GROUP_MAX_EPS};
use super::q4_k::check_k_scales;
use super::q8_0::BlockQ8_0;
use super::q8_k::{super_values, super_values_mut, BlockQ8K};
use super::{block_values, block_values_mut, f16_le, to_f16_le, Block, RowBlock, QK};
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

/// The index of the table value nearest to `x` (ties to the upper one... as ggml: the lower
/// one only when strictly nearer), ggml's `best_index_int8` over [`KVALUES_IQ4NL`].
// Port of `best_index_int8`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
fn best_index(x: f32) -> u8 {
    let val = &KVALUES_IQ4NL;
    let v = |i: usize| f32::from(val[i]);
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < v(mav) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - v(mu - 1) < v(mu) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// The scale search of one group of 32 (`quantize_row_iq4_nl_impl`'s inner loop with
/// `ntry = 7` and no importance matrix: weights `x^2`); 0 for a group below
/// `GROUP_MAX_EPS`.
// Port of `quantize_row_iq4_nl_impl`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
fn group_scale(xb: &[f32]) -> f32 {
    const NTRY: i32 = 7;
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in xb {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let v0 = f32::from(KVALUES_IQ4NL[0]);
    let score = |id: f32| {
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        for &x in xb {
            let q = f32::from(KVALUES_IQ4NL[usize::from(best_index(id * x))]);
            let w = x * x;
            sumqx += w * q * x;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    let d0 = -max / v0;
    let (sumqx, sumq2) = score(1.0 / d0);
    let mut d = sumqx / sumq2;
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry as f32 + v0) / max;
        let (sumqx, sumq2) = score(id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// The 16 index bytes of 32 indices (low nibbles: the first 16).
fn pack_indices(l: &[u8]) -> [u8; 16] {
    std::array::from_fn(|j| l[j] | (l[j + 16] << 4))
}

impl BlockIq4Nl {
    /// Quantizes one block as llama-quantize does without an importance matrix
    /// (`quantize_iq4_nl`: a search over 15 candidate scales, then the indices nearest to
    /// `x / d` with the f32 scale).
    // Port of `quantize_row_iq4_nl_impl` (super block 32, ntry 7), ggml-org/llama.cpp
    // ggml/src/ggml-quants.c @36491e4.
    pub fn quantize(x: &[f32; QK]) -> Self {
        let d = group_scale(x);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let l: [u8; QK] = std::array::from_fn(|j| best_index(id * x[j]));
        Self {
            d: to_f16_le(d),
            qs: pack_indices(&l),
        }
    }
}

// A scale beyond f16 is an error; otherwise the blocks are llama-quantize's.
impl RowBlock for BlockIq4Nl {
    const LEN: usize = QK;

    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError> {
        let b = Self::quantize(block_values::<Self>(x)?);
        check_k_scales(GgmlType::IQ4_NL, first, b.d, [0; 2])?;
        Ok(b)
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(block_values_mut::<Self>(out)?);
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

impl BlockIq4Xs {
    /// Quantizes one block as llama-quantize does without an importance matrix
    /// (`quantize_iq4_xs`).
    // Port of `quantize_row_iq4_nl_impl` (super block 256, groups of 32, ntry 7),
    // ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn quantize(x: &[f32; QK_K]) -> Self {
        let scales: [f32; 8] = std::array::from_fn(|g| group_scale(&x[32 * g..32 * g + 32]));
        let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
        for &d in &scales {
            if d.abs() > amax_scale {
                amax_scale = d.abs();
                max_scale = d;
            }
        }
        let d = -max_scale / 32.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut y = Self {
            d: to_f16_le(d),
            scales_h: [0; 2],
            scales_l: [0; QK_K / 64],
            qs: [0; QK_K / 2],
        };
        let mut h = 0u16;
        for (g, &s) in scales.iter().enumerate() {
            let l = nearest_int(id * s).clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let idx: [u8; 32] = std::array::from_fn(|j| best_index(idl * x[32 * g + j]));
            y.qs[16 * g..16 * g + 16].copy_from_slice(&pack_indices(&idx));
            let l = (l + 32) as u8;
            if g % 2 == 0 {
                y.scales_l[g / 2] = l & 0xF;
            } else {
                y.scales_l[g / 2] |= (l & 0xF) << 4;
            }
            h |= u16::from(l >> 4) << (2 * g);
        }
        y.scales_h = h.to_le_bytes();
        y
    }
}

// A scale beyond f16 is an error; otherwise the blocks are llama-quantize's.
impl RowBlock for BlockIq4Xs {
    const LEN: usize = QK_K;

    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError> {
        let b = Self::quantize(super_values::<Self>(x)?);
        check_k_scales(GgmlType::IQ4_XS, first, b.d, [0; 2])?;
        Ok(b)
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(super_values_mut::<Self>(out)?);
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
    use crate::quant::to_f16_le;

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
        let mut a = BlockQ8K {
            d: 1.0f32.to_le_bytes(),
            ..Default::default()
        };
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
        BlockIq4Xs::dequantize_row(&bx, &mut dx).unwrap();
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
        BlockIq4Nl::dequantize_row(&nx, &mut dx).unwrap();
        BlockQ8_0::dequantize_row(&ay, &mut dy).unwrap();
        let got = vec_dot_iq4_nl_q8_0(&nx, &ay).unwrap() as f64;
        let exact = dot_f64(&dx, &dy);
        assert!((got - exact).abs() <= sum_abs_products(&dx, &dy) * 12.0 * f32::EPSILON as f64);
    }

    #[test]
    fn best_index_by_hand() {
        assert_eq!(best_index(-200.0), 0);
        assert_eq!(best_index(500.0), 15);
        // Between -10 (7) and 1 (8): 0 is nearer to 1; -4.5 is the midpoint: the upper one.
        assert_eq!(best_index(0.0), 8);
        assert_eq!(best_index(-4.5), 8);
        assert_eq!(best_index(-4.6), 7);
        assert_eq!(best_index(100.0), 14); // 89 vs 113: 11 < 13
    }

    #[test]
    fn quantizers_edge_cases_and_round_trip() {
        let b = BlockIq4Nl::quantize(&[0.0; 32]);
        assert_eq!(b.d, [0, 0]);
        assert_eq!(b.qs, [0x88; 16]); // index of the value nearest 0 (1)
        let mut out = [0.0f32; 32];
        b.dequantize(&mut out);
        assert!(out.iter().all(|&v| v == 0.0));
        // One huge value maps to an end of the table, the zeros to the value nearest 0.
        let mut x = [0.0f32; 32];
        x[4] = 1.0e4;
        let b = BlockIq4Nl::quantize(&x);
        b.dequantize(&mut out);
        assert!((out[4] - 1.0e4).abs() < 1.0e4 * 0.02, "{}", out[4]);
        assert!(out
            .iter()
            .enumerate()
            .all(|(j, &v)| j == 4 || v.abs() < 1.0e4 / 100.0));
        // Uniform data, round trip RMS about 0.09 of the range; bounds 0.12 (IQ4_NL) and
        // 0.13 (IQ4_XS, 6-bit group scales).
        let x = Lcg(4141).uniform_vec(16 * QK_K, 1.0);
        let mut a = vec![BlockIq4Nl::default(); x.len() / 32];
        BlockIq4Nl::quantize_row(&x, &mut a).unwrap();
        let mut back = vec![0.0f32; x.len()];
        BlockIq4Nl::dequantize_row(&a, &mut back).unwrap();
        let rms = |b: &[f32]| {
            (x.iter()
                .zip(b)
                .map(|(&p, &q)| ((p - q) as f64).powi(2))
                .sum::<f64>()
                / x.len() as f64)
                .sqrt()
        };
        assert!(rms(&back) < 0.12 && rms(&back) > 0.03, "{}", rms(&back));
        let mut xs = vec![BlockIq4Xs::quantize(&[0.0; QK_K]); 16];
        BlockIq4Xs::quantize_row(&x, &mut xs).unwrap();
        BlockIq4Xs::dequantize_row(&xs, &mut back).unwrap();
        assert!(rms(&back) < 0.13 && rms(&back) > 0.03, "{}", rms(&back));
        // All zero IQ4_XS: d = -0.0, group scales 32 (l = 0), indices 8.
        let z = BlockIq4Xs::quantize(&[0.0; QK_K]);
        assert_eq!(z.scales_l, [0; 4]);
        assert_eq!(u16::from_le_bytes(z.scales_h), 0b1010_1010_1010_1010);
    }
}
