//! Q6_K: 256 values in 16 groups of 16, each `d * sc * (q - 32)` with 6-bit levels `q`,
//! signed 8-bit group scales `sc` and an f16 super-block scale `d` (210 bytes).

use super::k_common::{fold8, lanes8, make_qx_quants, nearest_int, GROUP_MAX_EPS};
use super::q4_k::check_k_scales;
use super::q8_k::{super_values, super_values_mut, BlockQ8K};
use super::{f16_le, to_f16_le, Block, RowBlock};
use crate::types::QK_K;
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One Q6_K block, ggml's `block_q6_K`. In half `n` (elements `128n..128n + 128`), for
/// `l < 32`: element `128n + l` is the low nibble of `ql[64n + l]`, `+ 32` the low nibble
/// of `ql[64n + 32 + l]`, `+ 64` and `+ 96` their high nibbles; the two high bits of each
/// are bits 0-1, 2-3, 4-5, 6-7 of `qh[32n + l]`. Element `e` has scale `scales[e / 16]`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low 4 bits of the levels.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits of the levels.
    pub qh: [u8; QK_K / 4],
    /// Group scales.
    pub scales: [i8; QK_K / 16],
    /// The super-block scale (f16, little-endian).
    pub d: [u8; 2],
}

const _: () = assert!(size_of::<BlockQ6K>() == 210);
const _: () = assert!(align_of::<BlockQ6K>() == 1);

impl Default for BlockQ6K {
    fn default() -> Self {
        Self {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: [0; QK_K / 16],
            d: [0; 2],
        }
    }
}

impl Block for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
}

impl BlockQ6K {
    /// The super-block scale.
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }

    /// The 256 values `q - 32` (-32..=31) in element order.
    pub fn levels(&self) -> [i8; QK_K] {
        std::array::from_fn(|e| {
            let (n, r) = (e / 128, e % 128);
            let (quarter, l) = (r / 32, r % 32);
            let ql = self.ql[64 * n + 32 * (quarter % 2) + l];
            let nib = if quarter < 2 { ql & 0xF } else { ql >> 4 };
            let hi = (self.qh[32 * n + l] >> (2 * quarter)) & 3;
            (nib | (hi << 4)) as i8 - 32
        })
    }

    /// Quantizes one block exactly as ggml's reference does (no importance matrix).
    // Port of `quantize_row_q6_K_ref`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn quantize(x: &[f32; QK_K]) -> Self {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..16 {
            let s = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            return Self::default();
        }
        let iscale = -128.0 / max_scale;
        let mut y = Self {
            d: to_f16_le(1.0 / iscale),
            ..Default::default()
        };
        for (s, &v) in y.scales.iter_mut().zip(&scales) {
            // C: int8_t = MIN(127, nearest_int(...)); the value is >= -128 here.
            *s = nearest_int(iscale * v).min(127) as i8;
        }
        for j in 0..16 {
            let d = y.d() * f32::from(y.scales[j]);
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as i8;
            }
        }
        for n in 0..2 {
            for i in 0..32 {
                let lv = |k: usize| l[128 * n + i + 32 * k] as u8;
                y.ql[64 * n + i] = (lv(0) & 0xF) | ((lv(2) & 0xF) << 4);
                y.ql[64 * n + 32 + i] = (lv(1) & 0xF) | ((lv(3) & 0xF) << 4);
                y.qh[32 * n + i] =
                    (lv(0) >> 4) | ((lv(1) >> 4) << 2) | ((lv(2) >> 4) << 4) | ((lv(3) >> 4) << 6);
            }
        }
        y
    }

    /// Dequantizes the block: `out[e] = (d * sc) * (q - 32)`.
    // Port of `dequantize_row_q6_K`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    pub fn dequantize(&self, out: &mut [f32; QK_K]) {
        let d = self.d();
        for (e, (o, q)) in out.iter_mut().zip(self.levels()).enumerate() {
            *o = d * f32::from(self.scales[e / 16]) * f32::from(q);
        }
    }
}

// The f16 super-block scale must fit; otherwise the blocks are ggml's.
impl RowBlock for BlockQ6K {
    const LEN: usize = QK_K;

    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError> {
        let b = Self::quantize(super_values::<Self>(x)?);
        check_k_scales(GgmlType::Q6_K, first, b.d, [0; 2])?;
        Ok(b)
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(super_values_mut::<Self>(out)?);
        Ok(())
    }
}

/// `sum_i x[i] * y[i]` for Q6_K weights and Q8_K activations, in the order of ggml's generic
/// kernel (8 integer lanes per block with the 16-element group scales, 8 float lanes with
/// `d = f16(x.d) * y.d`, lanes added last).
// Port of `ggml_vec_dot_q6_K_q8_K_generic`, ggml-org/llama.cpp ggml/src/ggml-cpu/quants.c
// @aec5bf1.
pub fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> Result<f32, KernelError> {
    super::check_len("activation blocks", x.len(), y.len())?;
    Ok(fold8(x.iter().zip(y).map(|(bx, by)| {
        let aux32 = lanes8(&bx.levels(), &by.qs, 16, |g| i32::from(bx.scales[g]));
        (bx.d() * by.d(), aux32, None)
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests_common::*;

    #[test]
    fn hand_computed_block() {
        let mut b = BlockQ6K {
            d: to_f16_le(0.25),
            ..Default::default()
        };
        b.scales[0] = -3;
        b.scales[12] = 5;
        // Element 2: low nibble of ql[2] = 0xA, high bits 0-1 of qh[2] = 2 -> 42 - 32 = 10.
        b.ql[2] = 0x0A;
        b.qh[2] = 0b10;
        // Element 128 + 64 + 5 = 197 (half 1, quarter 2, l 5, group 12): high nibble of
        // ql[64 + 5] = 3, bits 4-5 of qh[32 + 5] = 3 -> 51 - 32 = 19.
        b.ql[69] = 0x30;
        b.qh[37] = 0b11 << 4;
        let q = b.levels();
        assert_eq!((q[2], q[197], q[0]), (10, 19, -32));
        let mut out = [0.0f32; QK_K];
        b.dequantize(&mut out);
        assert_eq!(out[2], 0.25 * -3.0 * 10.0);
        assert_eq!(out[197], 0.25 * 5.0 * 19.0);
        assert_eq!(out[16], 0.0); // scale 0
        let mut a = BlockQ8K {
            d: 2.0f32.to_le_bytes(),
            ..Default::default()
        };
        a.qs[2] = 3;
        a.qs[197] = -1;
        assert_eq!(
            vec_dot_q6_k_q8_k(&[b], &[a]),
            Ok(2.0 * (3.0 * out[2] - out[197]))
        );
    }

    #[test]
    fn dot_equals_dequantized_dot() {
        let mut rng = Lcg(601);
        for nb in [1usize, 4] {
            let xs = rng.uniform_vec(nb * QK_K, 0.5);
            let mut bx = vec![BlockQ6K::default(); nb];
            BlockQ6K::quantize_row(&xs, &mut bx).unwrap();
            let ys = rng.uniform_vec(nb * QK_K, 3.0);
            let mut by = vec![BlockQ8K::default(); nb];
            BlockQ8K::quantize_row(&ys, &mut by).unwrap();
            let (mut dx, mut dy) = (vec![0.0; nb * QK_K], vec![0.0; nb * QK_K]);
            BlockQ6K::dequantize_row(&bx, &mut dx).unwrap();
            BlockQ8K::dequantize_row(&by, &mut dy).unwrap();
            let exact = dot_f64(&dx, &dy);
            let got = vec_dot_q6_k_q8_k(&bx, &by).unwrap() as f64;
            let tol = sum_abs_products(&dx, &dy) * (nb as f64 + 12.0) * f32::EPSILON as f64;
            assert!((got - exact).abs() <= tol, "{got} vs {exact}");
        }
    }

    #[test]
    fn edge_cases_and_round_trip() {
        assert_eq!(BlockQ6K::quantize(&[0.0; QK_K]), BlockQ6K::default());
        let mut out = [0.0f32; QK_K];
        // Constant: every group's level is -32 (the max maps to -nmax) with scale -c/32.
        BlockQ6K::quantize(&[0.75; QK_K]).dequantize(&mut out);
        assert!(
            out.iter().all(|&v| (v - 0.75).abs() < 0.75 / 64.0),
            "{:?}",
            &out[..2]
        );
        let mut x = [0.0f32; QK_K];
        x[9] = -3.0e4;
        BlockQ6K::quantize(&x).dequantize(&mut out);
        assert!((out[9] + 3.0e4).abs() < 3.0e4 / 64.0);
        assert!(out.iter().enumerate().all(|(j, &v)| j == 9 || v == 0.0));
        // Uniform [-1, 1): step about 1/32 per group, RMS about 0.009; bound 0.011.
        let x = Lcg(6262).uniform_vec(64 * QK_K, 1.0);
        let mut blocks = vec![BlockQ6K::default(); 64];
        BlockQ6K::quantize_row(&x, &mut blocks).unwrap();
        let mut back = vec![0.0f32; x.len()];
        BlockQ6K::dequantize_row(&blocks, &mut back).unwrap();
        let mse: f64 = x
            .iter()
            .zip(&back)
            .map(|(&a, &b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / x.len() as f64;
        assert!(mse.sqrt() < 0.011 && mse.sqrt() > 0.004, "{}", mse.sqrt());
    }
}
