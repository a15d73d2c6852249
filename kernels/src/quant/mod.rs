//! Block layouts and the scalar reference quantizers (the specification of each type).
//!
//! One file per type: the `#[repr(C)]` block (ggml's exact byte layout, size pinned at compile
//! time), its quantizer and dequantizer, and the scalar block dot product that the SIMD
//! kernels must reproduce. [`quantize_row`] and [`dequantize_row`] dispatch on a
//! [`GgmlType`] over raw little-endian bytes.
//!
//! Upstream: ggml-org/llama.cpp `ggml/src/ggml-quants.c` at commit
//! 36491e4024b3016e6e2d21afc140add042b44bec (the `quantize_row_*_ref` / `dequantize_row_*`
//! functions) and `ggml/src/ggml-cpu/quants.c` at aec5bf175db60a30224cb8575bb2c4c604b0a33d
//! (the `ggml_vec_dot_*_generic` functions). What was checked there:
//!
//! - Scales are computed in f32 and rounded to f16 only when stored; the quantized values use
//!   `id = 1/d` of the *f32* scale (`d ? 1.0f/d : 0.0f`), never of the f16-rounded one.
//! - Q8_1's `s` is `f16(sum(qs) * d)` with the integer sum of the stored `qs` and the f32 `d`.
//! - f32 -> f16 is round-to-nearest-even (F16C `_cvtss_sh(x, 0)` or ggml's bit-exact software
//!   conversion); `half::f16::from_f32` is the same.
//! - Every operation is one f32 rounding. C compilers may contract `x*id + 8.5f` into an FMA
//!   (GCC does by default when FMA is enabled, e.g. `-march=native`), which can move a value
//!   that lies within one f32 rounding of a quantization boundary; this port follows the C
//!   source as written (no contraction, which Rust never does), i.e. a build without FMA.
//! - The C code converts floats to `int8_t`; that is undefined for NaN and out-of-range values,
//!   which the reference can only produce when `1/d` overflows to infinity (a block whose
//!   largest magnitude is below about 1e-37, whose f16 scale is then 0). This port defines the
//!   conversion as x86-64 compilers emit it (see [`c_float_to_i8`]), so such blocks get the
//!   bytes ggml writes on x86-64.
//!
//! Two deliberate differences from ggml, both errors instead of bytes that decode to garbage:
//! non-finite inputs give [`KernelError::NonFinite`], and finite inputs whose scale (or Q4_1
//! minimum, Q8_1 sum, f16 value) overflows f16 give [`KernelError::F16Overflow`]. For every
//! other input the bytes are ggml's. The block-level `quantize` functions are the unguarded
//! ports (they write what ggml writes, infinite scales included).

use crate::{GgmlType, KernelError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub mod float;
pub mod q4_0;
pub mod q4_0x8;
pub mod q4_1;
pub mod q8_0;
pub mod q8_0x8;
pub mod q8_1;
#[cfg(test)]
pub(crate) mod tests_common;

pub use q4_0::BlockQ4_0;
pub use q4_0x8::BlockQ4_0x8;
pub use q4_1::BlockQ4_1;
pub use q8_0::BlockQ8_0;
pub use q8_0x8::BlockQ8_0x8;
pub use q8_1::BlockQ8_1;

/// Elements per block of every quantized type here (ggml's `QK4_0`, `QK4_1`, `QK8_0`, `QK8_1`).
pub const QK: usize = 32;

/// A quantization block: plain bytes (alignment 1, no padding), so a block slice can be viewed
/// in place in any byte buffer (a memory-mapped file at any offset, a test vector).
pub trait Block: FromBytes + IntoBytes + KnownLayout + Immutable + Unaligned + Copy {
    /// The type whose blocks these are.
    const TYPE: GgmlType;
}

/// Views `bytes` as a slice of blocks; the length must be a whole number of blocks.
pub fn as_blocks<B: Block>(bytes: &[u8]) -> Result<&[B], KernelError> {
    <[B]>::ref_from_bytes(bytes).map_err(|_| whole_blocks_error::<B>(bytes.len()))
}

/// Views `bytes` as a mutable slice of blocks; the length must be a whole number of blocks.
pub fn as_blocks_mut<B: Block>(bytes: &mut [u8]) -> Result<&mut [B], KernelError> {
    let len = bytes.len();
    <[B]>::mut_from_bytes(bytes).map_err(|_| whole_blocks_error::<B>(len))
}

fn whole_blocks_error<B: Block>(len: usize) -> KernelError {
    let size = size_of::<B>();
    KernelError::SizeMismatch {
        what: "bytes of whole blocks",
        expected: len / size * size,
        got: len,
    }
}

/// Quantizes the f32 row `src` into `dst`, the bytes of type `ty` (ggml's layout, little
/// endian). `src.len()` must be a multiple of the block size and `dst.len()` the matching
/// number of bytes. On error `dst` may be partly written. The row-interleaved types hold
/// several rows at once: quantize to the portable type and use [`crate::interleave()`]
/// ([`KernelError::Unsupported`] here).
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    let expected = bytes_for(ty, src.len())?;
    check_len("quantized row bytes", expected, dst.len())?;
    match ty {
        GgmlType::F32 => float::quantize_row_f32(src, dst),
        GgmlType::F16 => float::quantize_row_f16(src, dst),
        GgmlType::Q4_0 => q4_0::quantize_row_q4_0(src, as_blocks_mut(dst)?),
        GgmlType::Q4_1 => q4_1::quantize_row_q4_1(src, as_blocks_mut(dst)?),
        GgmlType::Q8_0 => q8_0::quantize_row_q8_0(src, as_blocks_mut(dst)?),
        GgmlType::Q8_1 => q8_1::quantize_row_q8_1(src, as_blocks_mut(dst)?),
        GgmlType::Q4_0x8 | GgmlType::Q8_0x8 => Err(KernelError::Unsupported(ty)),
    }
}

/// Dequantizes the bytes `src` of type `ty` into `dst`. `dst.len()` must be a multiple of the
/// block size and `src.len()` the matching number of bytes. Stored scales are not validated:
/// a block with an infinite or NaN scale (which [`quantize_row`] never writes) decodes to
/// inf/NaN, as in ggml. A row of a row-interleaved type is not contiguous: use
/// [`crate::matmul::dequantize_row`] on the matrix ([`KernelError::Unsupported`] here).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    let expected = bytes_for(ty, dst.len())?;
    check_len("quantized row bytes", expected, src.len())?;
    match ty {
        GgmlType::F32 => float::dequantize_row_f32(src, dst),
        GgmlType::F16 => float::dequantize_row_f16(src, dst),
        GgmlType::Q4_0 => q4_0::dequantize_row_q4_0(as_blocks(src)?, dst),
        GgmlType::Q4_1 => q4_1::dequantize_row_q4_1(as_blocks(src)?, dst),
        GgmlType::Q8_0 => q8_0::dequantize_row_q8_0(as_blocks(src)?, dst),
        GgmlType::Q8_1 => q8_1::dequantize_row_q8_1(as_blocks(src)?, dst),
        GgmlType::Q4_0x8 | GgmlType::Q8_0x8 => Err(KernelError::Unsupported(ty)),
    }
}

/// Bytes of `n` elements of `ty`, or the error that `n` is not a whole number of blocks.
fn bytes_for(ty: GgmlType, n: usize) -> Result<usize, KernelError> {
    let bs = ty.block_size();
    if !n.is_multiple_of(bs) {
        return Err(KernelError::NotBlockMultiple {
            ty,
            len: n,
            block: bs,
        });
    }
    (n / bs)
        .checked_mul(ty.block_bytes())
        .ok_or(KernelError::SizeMismatch {
            what: "quantized row bytes",
            expected: usize::MAX,
            got: n,
        })
}

pub(crate) fn check_len(
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), KernelError> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::SizeMismatch {
            what,
            expected,
            got,
        })
    }
}

/// Checks that `elems` f32 values fill exactly `blocks` blocks.
pub(crate) fn check_blocks(elems: usize, blocks: usize) -> Result<(), KernelError> {
    check_len("elements of the blocks", blocks.saturating_mul(QK), elems)
}

/// The first non-finite value of `src`, as an error.
pub(crate) fn check_finite(src: &[f32]) -> Result<(), KernelError> {
    match src.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(KernelError::NonFinite {
            index,
            value: src.get(index).copied().unwrap_or(f32::NAN),
        }),
    }
}

/// `value` as a stored f16, or [`KernelError::F16Overflow`] if it rounds to infinity.
pub(crate) fn checked_f16(
    ty: GgmlType,
    index: usize,
    what: &'static str,
    value: f32,
) -> Result<(), KernelError> {
    if half::f16::from_f32(value).is_infinite() {
        Err(KernelError::F16Overflow {
            ty,
            index,
            what,
            value,
        })
    } else {
        Ok(())
    }
}

/// C's `(int8_t)` conversion of a float as x86-64 compilers emit it: `cvttss2si` to a 32-bit
/// integer (truncation toward zero; NaN and values outside the i32 range give `0x80000000`),
/// then the low byte. For values in `(-129, 128)` this is plain truncation, which is all the
/// reference quantizers produce from a finite scale.
pub fn c_float_to_i8(v: f32) -> i8 {
    const TWO_POW_31: f32 = 2_147_483_648.0;
    if v.is_nan() || v.abs() >= TWO_POW_31 {
        0
    } else {
        // Truncates toward zero (in range, so no saturation); `as i8` keeps the low byte.
        (v as i32) as i8
    }
}

/// The f16 stored little-endian in `b`.
pub(crate) fn f16_le(b: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(b).to_f32()
}

/// `v` rounded to f16 (nearest, ties to even), little-endian.
pub(crate) fn to_f16_le(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_conversion_truncates_and_wraps_like_x86() {
        assert_eq!(c_float_to_i8(15.99), 15);
        assert_eq!(c_float_to_i8(-0.99), 0);
        assert_eq!(c_float_to_i8(-7.5), -7);
        assert_eq!(c_float_to_i8(127.0), 127);
        assert_eq!(c_float_to_i8(-128.0), -128);
        // Low byte of an in-range i32.
        assert_eq!(c_float_to_i8(200.0), -56);
        // Invalid conversions: 0x80000000, low byte 0.
        assert_eq!(c_float_to_i8(f32::NAN), 0);
        assert_eq!(c_float_to_i8(f32::INFINITY), 0);
        assert_eq!(c_float_to_i8(f32::NEG_INFINITY), 0);
        assert_eq!(c_float_to_i8(3e9), 0);
    }

    #[test]
    fn dispatch_checks_lengths() {
        let src = [0.0f32; 33];
        let mut dst = [0u8; 36];
        assert_eq!(
            quantize_row(GgmlType::Q4_0, &src, &mut dst),
            Err(KernelError::NotBlockMultiple {
                ty: GgmlType::Q4_0,
                len: 33,
                block: 32
            })
        );
        assert_eq!(
            quantize_row(GgmlType::Q4_0, &src[..32], &mut dst),
            Err(KernelError::SizeMismatch {
                what: "quantized row bytes",
                expected: 18,
                got: 36
            })
        );
        let mut out = [0.0f32; 64];
        assert!(matches!(
            dequantize_row(GgmlType::Q8_0, &dst[..34], &mut out),
            Err(KernelError::SizeMismatch { expected: 68, .. })
        ));
        assert_eq!(
            dequantize_row(GgmlType::F16, &dst[..3], &mut out[..2]),
            Err(KernelError::SizeMismatch {
                what: "quantized row bytes",
                expected: 4,
                got: 3
            })
        );
    }

    #[test]
    fn interleaved_types_have_no_single_rows() {
        for ty in [GgmlType::Q4_0x8, GgmlType::Q8_0x8] {
            let mut bytes = vec![0u8; ty.block_bytes()];
            let mut out = [0.0f32; 32];
            assert_eq!(
                quantize_row(ty, &out, &mut bytes),
                Err(KernelError::Unsupported(ty))
            );
            assert_eq!(
                dequantize_row(ty, &bytes, &mut out),
                Err(KernelError::Unsupported(ty))
            );
        }
    }

    #[test]
    fn block_views_need_whole_blocks_at_any_offset() {
        let bytes = [0u8; 1 + 2 * 18];
        // Odd offset: blocks have alignment 1, so this works.
        let blocks: &[BlockQ4_0] = as_blocks(&bytes[1..]).unwrap();
        assert_eq!(blocks.len(), 2);
        assert!(as_blocks::<BlockQ4_0>(&bytes[2..]).is_err());
    }

    #[test]
    fn non_finite_inputs_are_errors_for_every_type() {
        for ty in GgmlType::ALL.into_iter().filter(|t| !t.is_interleaved()) {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut src = [0.5f32; 64];
                src[37] = bad;
                let mut dst = vec![0u8; 64 / ty.block_size() * ty.block_bytes()];
                match quantize_row(ty, &src, &mut dst) {
                    Err(KernelError::NonFinite { index: 37, value }) => {
                        assert_eq!(value.to_bits(), bad.to_bits(), "{ty}")
                    }
                    other => panic!("{ty} {bad}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn every_type_round_trips_through_the_dispatcher() {
        let src: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 64) as f32 - 31.5) / 8.0)
            .collect();
        for ty in GgmlType::ALL.into_iter().filter(|t| !t.is_interleaved()) {
            let mut bytes = vec![0u8; 96 / ty.block_size() * ty.block_bytes()];
            quantize_row(ty, &src, &mut bytes).unwrap();
            let mut back = vec![0.0f32; 96];
            dequantize_row(ty, &bytes, &mut back).unwrap();
            // Largest step: q4_1 (range 7.875 / 15) and q4_0 (4 / 8); half a step each, or a
            // whole one for the clamped top value of q4_0.
            let tol = match ty {
                GgmlType::F32 => 0.0,
                GgmlType::F16 => 0.002,
                GgmlType::Q8_0 | GgmlType::Q8_1 => 4.0 / 127.0 * 0.6,
                GgmlType::Q4_1 => 7.875 / 15.0 * 0.6,
                GgmlType::Q4_0 => 0.5 * 1.01,
                GgmlType::Q4_0x8 | GgmlType::Q8_0x8 => unreachable!("filtered out"),
            };
            for (a, b) in src.iter().zip(&back) {
                assert!((a - b).abs() <= tol, "{ty}: {a} -> {b}");
            }
        }
    }
}
