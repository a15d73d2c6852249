//! Q8_1: Q8_0 plus `s = d * sum(qs)` (36 bytes). The activation format of Q4_1 products: the
//! weight's minimum `m` multiplies the activations' sum, which `s` carries precomputed.

use super::{
    block_values, block_values_mut, c_float_to_i8, checked_f16, f16_le, to_f16_le, Block, RowBlock,
    QK,
};
use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One Q8_1 block, ggml's `block_q8_1`: value `j` is `qs[j] * d`, and `s = d * sum(qs)`.
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
pub struct BlockQ8_1 {
    /// The scale, an f16 stored little-endian.
    pub d: [u8; 2],
    /// `d * sum(qs)` (with the f32 `d`), an f16 stored little-endian.
    pub s: [u8; 2],
    /// The quantized values.
    pub qs: [i8; QK],
}

const _: () = assert!(size_of::<BlockQ8_1>() == 36);
const _: () = assert!(align_of::<BlockQ8_1>() == 1);

impl Block for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
}

impl BlockQ8_1 {
    /// The scale as f32.
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }

    /// `d * sum(qs)` as f32.
    pub fn s(&self) -> f32 {
        f16_le(self.s)
    }

    /// Quantizes one block exactly as ggml does, with no checks (an overflowing scale or sum
    /// is stored as f16 infinity).
    pub fn quantize(x: &[f32; QK]) -> Self {
        Self::quantize_with_fields(x).0
    }

    /// [`BlockQ8_1::quantize`], also returning the f32 `d` and `s` before f16 rounding.
    // Port of `quantize_row_q8_1_ref`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
    fn quantize_with_fields(x: &[f32; QK]) -> (Self, f32, f32) {
        let amax = x.iter().fold(
            0.0f32,
            |amax, v| if amax > v.abs() { amax } else { v.abs() },
        );
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = c_float_to_i8((v * id).round());
        }
        // C: `int sum` of the stored int8 values, then `sum*d` in f32 (the f32 d, not the
        // f16-rounded one). |sum| <= 32 * 128, exact in f32.
        let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        let s = sum as f32 * d;
        let block = Self {
            d: to_f16_le(d),
            s: to_f16_le(s),
            qs,
        };
        (block, d, s)
    }

    /// Dequantizes the block: `out[j] = qs[j] * d` (`s` is redundant).
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
        }
    }
}

// A scale or sum beyond f16 (|s| >= 65520, i.e. a block summing to about that) is an error;
// otherwise the blocks are ggml's. ggml has no Q8_1 dequantizer (Q8_1 only ever holds
// activations); this one exists for tests and completeness.
impl RowBlock for BlockQ8_1 {
    const LEN: usize = QK;

    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError> {
        let (block, d, s) = Self::quantize_with_fields(block_values::<Self>(x)?);
        checked_f16(GgmlType::Q8_1, first, "scale", d)?;
        checked_f16(GgmlType::Q8_1, first, "sum", s)?;
        Ok(block)
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.dequantize(block_values_mut::<Self>(out)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests_common::*;
    use proptest::prelude::*;

    #[test]
    fn hand_computed_block() {
        // absmax 127 -> d = 1 (0x3C00); qs = 127, -3 (from -2.5), 2 (1.5), 50, rest 0:
        // sum 176 -> s = 176.0 = 2^7 * 1.375 -> f16 exponent 22, mantissa 384: 0x5980.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = -2.5;
        x[17] = 1.5;
        x[31] = 49.6;
        let b = BlockQ8_1::quantize(&x);
        let mut qs = [0i8; 32];
        qs[0] = 127;
        qs[1] = -3;
        qs[17] = 2;
        qs[31] = 50;
        assert_eq!(
            b,
            BlockQ8_1 {
                d: [0x00, 0x3C],
                s: [0x80, 0x59],
                qs
            }
        );
        assert_eq!(&b.as_bytes()[..6], &[0x00, 0x3C, 0x80, 0x59, 0x7F, 0xFD]);
    }

    #[test]
    fn sum_uses_the_f32_scale() {
        // absmax 1: d = 1/127 = 0.0078740157 in f32, stored as f16 0x2008 = 0.0078735352.
        // qs = 127 (1.0) and 8 (0.063 * 127 = 8.001): sum 135.
        // ggml: s = f16(135 * 0.0078740157 = 1.0629921) = 1.0634766 (0x3C41; 1088.504 ulps
        // of 2^-10 round up). With the f16 scale it would be f16(1.0629272) = 1.0625 (0x3C40).
        let mut x = [0.0f32; 32];
        x[0] = 1.0;
        x[20] = 0.063;
        let b = BlockQ8_1::quantize(&x);
        assert_eq!(b.d, [0x08, 0x20]);
        assert_eq!((b.qs[0], b.qs[20]), (127, 8));
        assert_eq!(b.s, [0x41, 0x3C]);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(BlockQ8_1::quantize(&[0.0; 32]), BlockQ8_1::default());
        // Subnormals: 1/d overflows, everything converts to 0 (see q8_0), s = 0 * d = 0.
        let mut x = [0.0f32; 32];
        x[3] = -1e-40;
        assert_eq!(BlockQ8_1::quantize(&x), BlockQ8_1::default());
        // The sum overflows f16 long before the scale: 32 values of 2100 sum to 67200.
        let x = [2100.0f32; 32];
        let mut blocks = [BlockQ8_1::default()];
        assert!(matches!(
            BlockQ8_1::quantize_row(&x, &mut blocks),
            Err(KernelError::F16Overflow { what: "sum", .. })
        ));
        // Alternating signs: the sum is 0 and the block is fine.
        let x: [f32; 32] = std::array::from_fn(|j| if j % 2 == 0 { 2100.0 } else { -2100.0 });
        BlockQ8_1::quantize_row(&x, &mut blocks).unwrap();
        assert_eq!(blocks[0].s(), 0.0);
        let mut x = [0.0f32; 32];
        x[5] = -f32::MAX;
        assert!(matches!(
            BlockQ8_1::quantize_row(&x, &mut blocks),
            Err(KernelError::F16Overflow {
                what: "scale",
                index: 0,
                ..
            })
        ));
    }

    #[test]
    fn rmse_on_uniform_data() {
        // Same values as Q8_0 (see there): 0.284 d expected.
        let rmse = normalized_rmse(GgmlType::Q8_1, 256, |x| {
            x.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0
        });
        assert!(rmse < 0.30 && rmse > 0.27, "{rmse}");
    }

    proptest! {
        #[test]
        fn matches_q8_0_and_carries_its_sum(x in block_strategy()) {
            let b = BlockQ8_1::quantize(&x);
            let b0 = crate::quant::BlockQ8_0::quantize(&x);
            prop_assert_eq!(b.d, b0.d);
            prop_assert_eq!(b.qs, b0.qs);
            let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
            prop_assert_eq!(b.s, half::f16::from_f32(sum as f32 * d).to_le_bytes());
        }
    }
}
