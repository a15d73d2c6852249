//! The float types: f32 and f16 values as blocks of one (little-endian bytes) and the dot
//! products of their rows with f32 activations.

use super::{check_len, checked_f16, single_value, single_value_mut, Block, RowBlock};
use crate::{GgmlType, KernelError};
use half::f16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// One value of a float type: its `N` little-endian bytes ([`BlockF32`], [`BlockF16`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(transparent)]
pub struct FloatBlock<const N: usize> {
    /// The value's bytes, little-endian.
    pub v: [u8; N],
}

/// One f32 value, ggml's `F32` element.
pub type BlockF32 = FloatBlock<4>;

/// One f16 value, ggml's `F16` element.
pub type BlockF16 = FloatBlock<2>;

const _: () = assert!(size_of::<BlockF32>() == 4 && align_of::<BlockF32>() == 1);
const _: () = assert!(size_of::<BlockF16>() == 2 && align_of::<BlockF16>() == 1);

impl Block for BlockF32 {
    const TYPE: GgmlType = GgmlType::F32;
}

impl Block for BlockF16 {
    const TYPE: GgmlType = GgmlType::F16;
}

// The value's bytes, exactly.
impl RowBlock for BlockF32 {
    const LEN: usize = 1;

    fn from_float(x: &[f32], _first: usize) -> Result<Self, KernelError> {
        let v = single_value::<Self>(x)?;
        Ok(Self { v: v.to_le_bytes() })
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        *single_value_mut::<Self>(out)? = f32::from_le_bytes(self.v);
        Ok(())
    }
}

// Rounded to nearest even (ggml's `ggml_fp32_to_fp16_row`); a finite value beyond the f16
// range is a [`KernelError::F16Overflow`].
impl RowBlock for BlockF16 {
    const LEN: usize = 1;

    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError> {
        let v = single_value::<Self>(x)?;
        checked_f16(GgmlType::F16, first, "value", v)?;
        let v = f16::from_f32(v).to_le_bytes();
        Ok(Self { v })
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        *single_value_mut::<Self>(out)? = f16::from_le_bytes(self.v).to_f32();
        Ok(())
    }
}

/// One bfloat16 value, ggml's `BF16` element: the high 16 bits of an f32, little-endian.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(transparent)]
pub struct BlockBf16 {
    /// The value's bytes, little-endian.
    pub v: [u8; 2],
}

const _: () = assert!(size_of::<BlockBf16>() == 2 && align_of::<BlockBf16>() == 1);

impl Block for BlockBf16 {
    const TYPE: GgmlType = GgmlType::BF16;
}

/// f32 to bf16 as ggml does: round to nearest even on the bits, NaN made quiet, subnormals
/// kept; a finite value that rounds beyond the bf16 range becomes an infinity (as in ggml,
/// which only f32 values within 2^-8 of f32::MAX do).
// Port of `ggml_compute_fp32_to_bf16`, ggml-org/llama.cpp ggml/src/ggml-impl.h (the version
// without the subnormal flush, as in the ggml-quants.c commit 36491e4 era).
pub fn f32_to_bf16(s: f32) -> u16 {
    let u = s.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// bf16 to f32 (exact).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

// Rounded as ggml rounds (see [`f32_to_bf16`]); inputs are finite (checked by the row
// quantizer).
impl RowBlock for BlockBf16 {
    const LEN: usize = 1;

    fn from_float(x: &[f32], _first: usize) -> Result<Self, KernelError> {
        let v = single_value::<Self>(x)?;
        Ok(Self {
            v: f32_to_bf16(v).to_le_bytes(),
        })
    }

    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError> {
        *single_value_mut::<Self>(out)? = bf16_to_f32(u16::from_le_bytes(self.v));
        Ok(())
    }
}

/// Lanes of the float dot products' summation order: see [`dot_in_lanes`].
pub const DOT_LANES: usize = 16;

/// The summation order of every float dot product of this crate, so that SIMD kernels (16 f32
/// lanes: two AVX2 registers, one AVX-512 register, four NEON registers) give the same bits
/// as this scalar reference:
///
/// 1. lane `l < 16` sums `x[i] * y[i]` (product rounded, then sum rounded; no fused
///    multiply-add) for `i = l, l + 16, ...` over the first `n - n % 16` elements, in order;
/// 2. the lanes are folded in halves: `l[i] += l[i + 8]` (i < 8), `l[i] += l[i + 4]`
///    (i < 4), `l[i] += l[i + 2]` (i < 2), `sum = l[0] + l[1]`;
/// 3. the last `n % 16` products are added to `sum` in order.
///
/// `x(i)` is the weight widened to f32 (exact for f16).
pub fn dot_in_lanes(n: usize, x: impl Fn(usize) -> f32, y: &[f32]) -> f32 {
    let full = n - n % DOT_LANES;
    let mut lanes = [0.0f32; DOT_LANES];
    for (c, ys) in y[..full].chunks_exact(DOT_LANES).enumerate() {
        for (l, (acc, &yv)) in lanes.iter_mut().zip(ys).enumerate() {
            *acc += x(c * DOT_LANES + l) * yv;
        }
    }
    let mut width = DOT_LANES / 2;
    while width > 1 {
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
        width /= 2;
    }
    let mut sum = lanes[0] + lanes[1];
    for (i, &yv) in y.iter().enumerate().take(n).skip(full) {
        sum += x(i) * yv;
    }
    sum
}

/// `sum_i x[i] * y[i]` for a row `x` of little-endian f32 bytes and f32 activations `y`, in the
/// order of [`dot_in_lanes`].
pub fn vec_dot_f32(x: &[u8], y: &[f32]) -> Result<f32, KernelError> {
    check_len("f32 row bytes", y.len().saturating_mul(4), x.len())?;
    Ok(dot_in_lanes(y.len(), |i| f32_at(x, i), y))
}

/// `sum_i x[i] * y[i]` for a row `x` of little-endian f16 bytes and f32 activations `y`: each
/// weight is widened to f32 (exactly) and the products are summed in the order of
/// [`dot_in_lanes`]. (ggml's own f16 dot rounds the activations to f16 first; the model keeps
/// them in f32.)
pub fn vec_dot_f16_f32(x: &[u8], y: &[f32]) -> Result<f32, KernelError> {
    check_len("f16 row bytes", y.len().saturating_mul(2), x.len())?;
    Ok(dot_in_lanes(y.len(), |i| f16_at(x, i), y))
}

/// `sum_i x[i] * y[i]` for a row `x` of little-endian bf16 bytes and f32 activations `y`:
/// each weight widened to f32 (exactly), summed in the order of [`dot_in_lanes`]. (ggml
/// rounds the activations to bf16 first; the model keeps them in f32, as for F16.)
pub fn vec_dot_bf16_f32(x: &[u8], y: &[f32]) -> Result<f32, KernelError> {
    check_len("bf16 row bytes", y.len().saturating_mul(2), x.len())?;
    Ok(dot_in_lanes(y.len(), |i| bf16_at(x, i), y))
}

/// The bf16 at element `i` of little-endian bytes, widened (0 past the end).
fn bf16_at(x: &[u8], i: usize) -> f32 {
    match x.get(2 * i..2 * i + 2) {
        Some(&[a, b]) => bf16_to_f32(u16::from_le_bytes([a, b])),
        _ => 0.0,
    }
}

/// `y[i] += a * x[i]` for a row `x` of little-endian f32 bytes (product rounded, then sum).
pub fn axpy_f32(a: f32, x: &[u8], y: &mut [f32]) -> Result<(), KernelError> {
    check_len("f32 row bytes", y.len().saturating_mul(4), x.len())?;
    for (o, b) in y.iter_mut().zip(x.chunks_exact(4)) {
        *o += a * f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}

/// `y[i] += a * x[i]` for a row `x` of little-endian f16 bytes (widened exactly; product
/// rounded, then sum).
pub fn axpy_f16(a: f32, x: &[u8], y: &mut [f32]) -> Result<(), KernelError> {
    check_len("f16 row bytes", y.len().saturating_mul(2), x.len())?;
    for (o, b) in y.iter_mut().zip(x.chunks_exact(2)) {
        *o += a * f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
    Ok(())
}

/// The f32 at element `i` of little-endian bytes (0 past the end; callers check lengths).
fn f32_at(x: &[u8], i: usize) -> f32 {
    match x.get(4 * i..4 * i + 4) {
        Some(&[a, b, c, d]) => f32::from_le_bytes([a, b, c, d]),
        _ => 0.0,
    }
}

/// The f16 at element `i` of little-endian bytes, widened (0 past the end).
fn f16_at(x: &[u8], i: usize) -> f32 {
    match x.get(2 * i..2 * i + 2) {
        Some(&[a, b]) => f16::from_le_bytes([a, b]).to_f32(),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize_row, quantize_row};

    #[test]
    fn f16_bytes_by_hand() {
        // 1.0 = 0x3C00, -2.0 = 0xC000, 65504 = 0x7BFF (largest finite), 2^-24 = 0x0001
        // (smallest subnormal), 1 + 2^-11 ties to even -> 1.0, 1 + 3*2^-11 -> 1 + 2^-9 = 0x3C02.
        let src = [
            1.0,
            -2.0,
            65504.0,
            2f32.powi(-24),
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
        ];
        let mut dst = [0u8; 12];
        quantize_row(GgmlType::F16, &src, &mut dst).unwrap();
        assert_eq!(
            dst,
            [0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00, 0x00, 0x3C, 0x02, 0x3C]
        );
        let mut back = [0.0f32; 6];
        dequantize_row(GgmlType::F16, &dst, &mut back).unwrap();
        assert_eq!(
            back,
            [1.0, -2.0, 65504.0, 2f32.powi(-24), 1.0, 1.0 + 2f32.powi(-9)]
        );
    }

    #[test]
    fn f16_overflow_and_underflow() {
        let mut dst = [0u8; 4];
        // 65519 rounds down to 65504; 65520 is the tie that rounds to infinity.
        quantize_row(GgmlType::F16, &[65519.0, -65519.0], &mut dst).unwrap();
        assert_eq!(dst, [0xFF, 0x7B, 0xFF, 0xFB]);
        assert_eq!(
            quantize_row(GgmlType::F16, &[0.0, -65520.0], &mut dst),
            Err(KernelError::F16Overflow {
                ty: GgmlType::F16,
                index: 1,
                what: "value",
                value: -65520.0
            })
        );
        assert!(quantize_row(GgmlType::F16, &[f32::MAX, 0.0], &mut dst).is_err());
        // f32 subnormals flush to a signed zero.
        quantize_row(GgmlType::F16, &[1e-40, -1e-40], &mut dst).unwrap();
        assert_eq!(dst, [0x00, 0x00, 0x00, 0x80]);
    }

    #[test]
    fn f32_round_trip_is_exact() {
        let src = [0.1f32, -f32::MAX, f32::MIN_POSITIVE, 1e-45, -0.0];
        let mut dst = [0u8; 20];
        quantize_row(GgmlType::F32, &src, &mut dst).unwrap();
        assert_eq!(&dst[..4], &0.1f32.to_le_bytes());
        let mut back = [1.0f32; 5];
        dequantize_row(GgmlType::F32, &dst, &mut back).unwrap();
        for (a, b) in src.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn dots() {
        let w = [1.5f32, -2.0, 0.25];
        let mut w32 = [0u8; 12];
        let mut w16 = [0u8; 6];
        quantize_row(GgmlType::F32, &w, &mut w32).unwrap();
        quantize_row(GgmlType::F16, &w, &mut w16).unwrap();
        let x = [2.0f32, 1.0, -4.0];
        // 3 - 2 - 1 = 0
        assert_eq!(vec_dot_f32(&w32, &x), Ok(0.0));
        assert_eq!(vec_dot_f16_f32(&w16, &x), Ok(0.0));
        assert_eq!(vec_dot_f32(&w32, &x[..2]).map_err(|_| ()), Err(()));
        assert_eq!(vec_dot_f16_f32(&w16[..4], &x).map_err(|_| ()), Err(()));
        let mut y = [1.0f32; 3];
        axpy_f16(2.0, &w16, &mut y).unwrap();
        assert_eq!(y, [4.0, -3.0, 1.5]);
        axpy_f32(-1.0, &w32, &mut y).unwrap();
        assert_eq!(y, [2.5, -1.0, 1.25]);
        assert!(axpy_f32(1.0, &w32[..8], &mut y).is_err());
    }

    #[test]
    fn bf16_by_hand() {
        // 1.0 = 0x3F80; 1 + 2^-8 ties to even -> 1.0; 1 + 3 * 2^-8 -> 1 + 2^-6 = 0x3F82;
        // -2.5 = 0xC020; NaN stays NaN (quiet); 1e-40 (subnormal) is kept: 0x0001.
        assert_eq!(f32_to_bf16(1.0), 0x3F80);
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3F80);
        assert_eq!(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
        assert_eq!(f32_to_bf16(-2.5), 0xC020);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        assert_eq!(f32_to_bf16(1e-40), 0x0001);
        let mut dst = [0u8; 6];
        quantize_row(GgmlType::BF16, &[1.0, -2.5, 3.0e38], &mut dst).unwrap();
        assert_eq!(dst[..4], [0x80, 0x3F, 0x20, 0xC0]);
        let mut back = [0.0f32; 3];
        dequantize_row(GgmlType::BF16, &dst, &mut back).unwrap();
        assert_eq!(&back[..2], &[1.0, -2.5]);
        assert!((back[2] - 3.0e38).abs() < 3.0e38 / 256.0);
        // 1 * 2 + -2.5 * 1 = -0.5
        assert_eq!(vec_dot_bf16_f32(&dst[..4], &[2.0, 1.0]), Ok(-0.5));
        assert!(vec_dot_bf16_f32(&dst[..4], &[2.0]).is_err());
    }

    #[test]
    fn lane_order_by_hand() {
        // x = 1 everywhere; y[0] = 2^24, y[1] = 1, y[16] = -2^24, y[33] = 0.5, rest 0.
        // Sequentially: 2^24 + 1 rounds to 2^24 (tie to even), minus 2^24 gives 0, + 0.5.
        // In lanes: lane 0 = 2^24 - 2^24 = 0, lane 1 = 1, folded: 1; the tail (element 33)
        // adds 0.5: 1.5.
        let mut y = [0.0f32; 34];
        y[0] = 16_777_216.0;
        y[1] = 1.0;
        y[16] = -16_777_216.0;
        y[33] = 0.5;
        assert_eq!(dot_in_lanes(34, |_| 1.0, &y), 1.5);
        let sequential = y.iter().fold(0.0f32, |s, v| s + v);
        assert_eq!(sequential, 0.5);
        // The fold pairs lane i with lane i + 8 first: 2^24 in lane 3, -2^24 in lane 11, 1 in
        // lane 7: (l3 + l11) = 0, then + l7 in the next fold: 1. A left-to-right lane sum
        // would give 2^24 + 1 - 2^24 = 0.
        let mut y = [0.0f32; 16];
        y[3] = 16_777_216.0;
        y[7] = 1.0;
        y[11] = -16_777_216.0;
        assert_eq!(dot_in_lanes(16, |_| 1.0, &y), 1.0);
        let mut w = [0u8; 64];
        quantize_row(GgmlType::F32, &[1.0; 16], &mut w).unwrap();
        assert_eq!(vec_dot_f32(&w, &y), Ok(1.0));
    }
}
