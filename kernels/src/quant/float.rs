//! The float types: f32 and f16 rows (little-endian bytes) and their dot products with f32
//! activations.

use super::{check_finite, check_len, checked_f16};
use crate::{GgmlType, KernelError};
use half::f16;

/// Writes `src` as little-endian f32 bytes (`dst.len() == 4 * src.len()`).
pub fn quantize_row_f32(src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    check_len("f32 row bytes", src.len().saturating_mul(4), dst.len())?;
    check_finite(src)?;
    for (v, out) in src.iter().zip(dst.chunks_exact_mut(4)) {
        out.copy_from_slice(&v.to_le_bytes());
    }
    Ok(())
}

/// Reads little-endian f32 bytes (`src.len() == 4 * dst.len()`).
pub fn dequantize_row_f32(src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    check_len("f32 row bytes", dst.len().saturating_mul(4), src.len())?;
    for (b, out) in src.chunks_exact(4).zip(dst.iter_mut()) {
        *out = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}

/// Writes `src` as little-endian f16 bytes, rounding to nearest even (ggml's
/// `ggml_fp32_to_fp16_row`); `dst.len() == 2 * src.len()`. A finite value beyond the f16 range
/// is a [`KernelError::F16Overflow`].
pub fn quantize_row_f16(src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    check_len("f16 row bytes", src.len().saturating_mul(2), dst.len())?;
    check_finite(src)?;
    for (index, (&v, out)) in src.iter().zip(dst.chunks_exact_mut(2)).enumerate() {
        checked_f16(GgmlType::F16, index, "value", v)?;
        out.copy_from_slice(&f16::from_f32(v).to_le_bytes());
    }
    Ok(())
}

/// Reads little-endian f16 bytes (`src.len() == 2 * dst.len()`).
pub fn dequantize_row_f16(src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    check_len("f16 row bytes", dst.len().saturating_mul(2), src.len())?;
    for (b, out) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *out = f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
    Ok(())
}

/// `sum_i x[i] * y[i]` for a row `x` of little-endian f32 bytes and f32 activations `y`,
/// accumulated in order in one f32.
pub fn vec_dot_f32(x: &[u8], y: &[f32]) -> Result<f32, KernelError> {
    check_len("f32 row bytes", y.len().saturating_mul(4), x.len())?;
    let mut sum = 0.0f32;
    for (b, &yv) in x.chunks_exact(4).zip(y) {
        sum += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * yv;
    }
    Ok(sum)
}

/// `sum_i x[i] * y[i]` for a row `x` of little-endian f16 bytes and f32 activations `y`: each
/// weight is widened to f32 (exactly) and the products are accumulated in order in one f32.
/// (ggml's own f16 dot rounds the activations to f16 first; the model keeps them in f32.)
pub fn vec_dot_f16_f32(x: &[u8], y: &[f32]) -> Result<f32, KernelError> {
    check_len("f16 row bytes", y.len().saturating_mul(2), x.len())?;
    let mut sum = 0.0f32;
    for (b, &yv) in x.chunks_exact(2).zip(y) {
        sum += f16::from_le_bytes([b[0], b[1]]).to_f32() * yv;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        quantize_row_f16(&src, &mut dst).unwrap();
        assert_eq!(
            dst,
            [0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00, 0x00, 0x3C, 0x02, 0x3C]
        );
        let mut back = [0.0f32; 6];
        dequantize_row_f16(&dst, &mut back).unwrap();
        assert_eq!(
            back,
            [1.0, -2.0, 65504.0, 2f32.powi(-24), 1.0, 1.0 + 2f32.powi(-9)]
        );
    }

    #[test]
    fn f16_overflow_and_underflow() {
        let mut dst = [0u8; 4];
        // 65519 rounds down to 65504; 65520 is the tie that rounds to infinity.
        quantize_row_f16(&[65519.0, -65519.0], &mut dst).unwrap();
        assert_eq!(dst, [0xFF, 0x7B, 0xFF, 0xFB]);
        assert_eq!(
            quantize_row_f16(&[0.0, -65520.0], &mut dst),
            Err(KernelError::F16Overflow {
                ty: GgmlType::F16,
                index: 1,
                what: "value",
                value: -65520.0
            })
        );
        assert!(quantize_row_f16(&[f32::MAX, 0.0], &mut dst).is_err());
        // f32 subnormals flush to a signed zero.
        quantize_row_f16(&[1e-40, -1e-40], &mut dst).unwrap();
        assert_eq!(dst, [0x00, 0x00, 0x00, 0x80]);
    }

    #[test]
    fn f32_round_trip_is_exact() {
        let src = [0.1f32, -f32::MAX, f32::MIN_POSITIVE, 1e-45, -0.0];
        let mut dst = [0u8; 20];
        quantize_row_f32(&src, &mut dst).unwrap();
        assert_eq!(&dst[..4], &0.1f32.to_le_bytes());
        let mut back = [1.0f32; 5];
        dequantize_row_f32(&dst, &mut back).unwrap();
        for (a, b) in src.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn dots() {
        let w = [1.5f32, -2.0, 0.25];
        let mut w32 = [0u8; 12];
        let mut w16 = [0u8; 6];
        quantize_row_f32(&w, &mut w32).unwrap();
        quantize_row_f16(&w, &mut w16).unwrap();
        let x = [2.0f32, 1.0, -4.0];
        // 3 - 2 - 1 = 0
        assert_eq!(vec_dot_f32(&w32, &x), Ok(0.0));
        assert_eq!(vec_dot_f16_f32(&w16, &x), Ok(0.0));
        assert_eq!(vec_dot_f32(&w32, &x[..2]).map_err(|_| ()), Err(()));
        assert_eq!(vec_dot_f16_f32(&w16[..4], &x).map_err(|_| ()), Err(()));
    }
}
