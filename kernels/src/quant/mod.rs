//! Block layouts and the scalar reference quantizers (the specification of each type).
//!
//! One file per type: the `#[repr(C)]` block (ggml's exact byte layout, size pinned at compile
//! time), the quantizer and dequantizer of one block ([`RowBlock`]), and the scalar block dot
//! product that the SIMD kernels must reproduce. The row functions are written once, generic
//! over the block ([`RowBlock::quantize_row`], [`RowBlock::dequantize_row`]); [`quantize_row`]
//! and [`dequantize_row`] dispatch on a [`GgmlType`] over raw little-endian bytes.
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
pub mod iq4_nl;
pub(crate) mod k_common;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_0x8;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_0x8;
pub mod q8_1;
pub mod q8_k;
#[cfg(test)]
pub(crate) mod tests_common;

pub use float::{BlockBf16, BlockF16, BlockF32, FloatBlock};
pub use iq4_nl::{BlockIq4Nl, BlockIq4Xs};
pub use q2_k::BlockQ2K;
pub use q3_k::BlockQ3K;
pub use q4_0::BlockQ4_0;
pub use q4_0x8::BlockQ4_0x8;
pub use q4_1::BlockQ4_1;
pub use q4_k::BlockQ4K;
pub use q5_0::BlockQ5_0;
pub use q5_1::BlockQ5_1;
pub use q5_k::BlockQ5K;
pub use q6_k::BlockQ6K;
pub use q8_0::BlockQ8_0;
pub use q8_0x8::BlockQ8_0x8;
pub use q8_1::BlockQ8_1;
pub use q8_k::BlockQ8K;

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

/// A block of consecutive values of one row: every type but the row-interleaved ones (whose
/// group blocks hold a block of each of 8 rows). The type supplies only the arithmetic of one
/// block ([`RowBlock::from_float`], [`RowBlock::to_float`]); the row functions
/// [`RowBlock::quantize_row`] and [`RowBlock::dequantize_row`] are written once, here.
pub trait RowBlock: Block {
    /// Values per block (32 for the quantized types, 1 for the float types).
    const LEN: usize;

    /// Quantizes the `Self::LEN` finite values `x` to one block, with ggml's bytes, or returns
    /// [`KernelError::F16Overflow`] (at index `first`, the row index of `x[0]`) where ggml
    /// would store an f16 infinity. A slice of another length is a
    /// [`KernelError::SizeMismatch`].
    fn from_float(x: &[f32], first: usize) -> Result<Self, KernelError>;

    /// Dequantizes the block into the `Self::LEN` values `out` (a slice of another length is a
    /// [`KernelError::SizeMismatch`]).
    fn to_float(&self, out: &mut [f32]) -> Result<(), KernelError>;

    /// Quantizes `src` (`src.len() == Self::LEN * dst.len()`) into blocks. Non-finite inputs
    /// are [`KernelError::NonFinite`] and values whose stored f16 fields would overflow are
    /// [`KernelError::F16Overflow`]; otherwise the blocks are ggml's. On error `dst` may be
    /// partly written.
    fn quantize_row(src: &[f32], dst: &mut [Self]) -> Result<(), KernelError> {
        check_len(
            "elements of the blocks",
            dst.len().saturating_mul(Self::LEN),
            src.len(),
        )?;
        check_finite(src)?;
        for (i, (block, x)) in dst.iter_mut().zip(src.chunks_exact(Self::LEN)).enumerate() {
            *block = Self::from_float(x, i * Self::LEN)?;
        }
        Ok(())
    }

    /// Dequantizes `src` into `dst` (`dst.len() == Self::LEN * src.len()`). Stored scales are
    /// not validated: a block with an infinite or NaN scale decodes to inf/NaN, as in ggml.
    fn dequantize_row(src: &[Self], dst: &mut [f32]) -> Result<(), KernelError> {
        check_len(
            "elements of the blocks",
            src.len().saturating_mul(Self::LEN),
            dst.len(),
        )?;
        for (block, out) in src.iter().zip(dst.chunks_exact_mut(Self::LEN)) {
            block.to_float(out)?;
        }
        Ok(())
    }
}

/// The byte-level row functions of one type: [`RowBlock::quantize_row`] (if the type has a
/// quantizer here) and [`RowBlock::dequantize_row`] over bytes viewed as its blocks.
/// A row quantizer over bytes.
type QuantizeBytes = fn(&[f32], &mut [u8]) -> Result<(), KernelError>;

struct RowCodec {
    quantize: Option<QuantizeBytes>,
    dequantize: fn(&[u8], &mut [f32]) -> Result<(), KernelError>,
}

impl RowCodec {
    /// The codec of the blocks `B`.
    fn of<B: RowBlock>() -> Self {
        Self {
            quantize: Some(|src, dst| B::quantize_row(src, as_blocks_mut(dst)?)),
            dequantize: |src, dst| B::dequantize_row(as_blocks(src)?, dst),
        }
    }

    /// The codec of `ty`, or [`KernelError::Unsupported`] for the row-interleaved types and
    /// the ggml types this crate only knows the geometry of.
    fn for_type(ty: GgmlType) -> Result<Self, KernelError> {
        match ty {
            GgmlType::F32 => Ok(Self::of::<BlockF32>()),
            GgmlType::F16 => Ok(Self::of::<BlockF16>()),
            GgmlType::BF16 => Ok(Self::of::<BlockBf16>()),
            GgmlType::Q4_0 => Ok(Self::of::<BlockQ4_0>()),
            GgmlType::Q4_1 => Ok(Self::of::<BlockQ4_1>()),
            GgmlType::Q5_0 => Ok(Self::of::<BlockQ5_0>()),
            GgmlType::Q5_1 => Ok(Self::of::<BlockQ5_1>()),
            GgmlType::Q8_0 => Ok(Self::of::<BlockQ8_0>()),
            GgmlType::Q8_1 => Ok(Self::of::<BlockQ8_1>()),
            GgmlType::Q4_K => Ok(Self::of::<BlockQ4K>()),
            GgmlType::Q5_K => Ok(Self::of::<BlockQ5K>()),
            GgmlType::Q6_K => Ok(Self::of::<BlockQ6K>()),
            GgmlType::Q8_K => Ok(Self::of::<BlockQ8K>()),
            GgmlType::Q2_K => Ok(Self::of::<BlockQ2K>()),
            GgmlType::Q3_K => Ok(Self::of::<BlockQ3K>()),
            GgmlType::IQ4_NL => Ok(Self::of::<BlockIq4Nl>()),
            GgmlType::IQ4_XS => Ok(Self::of::<BlockIq4Xs>()),
            _ => Err(KernelError::Unsupported(ty)),
        }
    }
}

/// Whether [`quantize_row`] can write `ty` (ggml's reference quantizer is ported).
pub fn can_quantize(ty: GgmlType) -> bool {
    RowCodec::for_type(ty).is_ok_and(|c| c.quantize.is_some())
}

/// Whether [`dequantize_row`] can read `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    RowCodec::for_type(ty).is_ok()
}

/// Quantizes the f32 row `src` into `dst`, the bytes of type `ty` (ggml's layout, little
/// endian): [`RowBlock::quantize_row`] of the type's blocks. `src.len()` must be a multiple
/// of the block size and `dst.len()` the matching number of bytes. On error `dst` may be
/// partly written. The row-interleaved types hold several rows at once: quantize to the
/// portable type and use [`crate::interleave()`] ([`KernelError::Unsupported`] here).
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    check_len("quantized row bytes", ty.row_bytes(src.len())?, dst.len())?;
    let quantize = RowCodec::for_type(ty)?
        .quantize
        .ok_or(KernelError::Unsupported(ty))?;
    quantize(src, dst)
}

/// Dequantizes the bytes `src` of type `ty` into `dst`: [`RowBlock::dequantize_row`] of the
/// type's blocks. `dst.len()` must be a multiple of the block size and `src.len()` the
/// matching number of bytes. Stored scales are not validated: a block with an infinite or NaN
/// scale (which [`quantize_row`] never writes) decodes to inf/NaN, as in ggml. A row of a
/// row-interleaved type is not contiguous: use [`crate::matmul::dequantize_row`] on the
/// matrix ([`KernelError::Unsupported`] here).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    check_len("quantized row bytes", ty.row_bytes(dst.len())?, src.len())?;
    (RowCodec::for_type(ty)?.dequantize)(src, dst)
}

/// The error of a block given `got` values instead of its [`RowBlock::LEN`].
fn block_len_error<B: RowBlock>(got: usize) -> KernelError {
    KernelError::SizeMismatch {
        what: "block elements",
        expected: B::LEN,
        got,
    }
}

/// `x` as the values of one block of `QK`, or the error of a wrong length.
pub(crate) fn block_values<B: RowBlock>(x: &[f32]) -> Result<&[f32; QK], KernelError> {
    x.try_into().map_err(|_| block_len_error::<B>(x.len()))
}

/// `out` as the values of one block of `QK`, or the error of a wrong length.
pub(crate) fn block_values_mut<B: RowBlock>(
    out: &mut [f32],
) -> Result<&mut [f32; QK], KernelError> {
    let len = out.len();
    out.try_into().map_err(|_| block_len_error::<B>(len))
}

/// The single value of a block of one (the float types), or the error of a wrong length.
pub(crate) fn single_value<B: RowBlock>(x: &[f32]) -> Result<f32, KernelError> {
    match x {
        [v] => Ok(*v),
        _ => Err(block_len_error::<B>(x.len())),
    }
}

/// The single output value of a block of one (the float types), or the error of a wrong
/// length.
pub(crate) fn single_value_mut<B: RowBlock>(out: &mut [f32]) -> Result<&mut f32, KernelError> {
    let len = out.len();
    match out {
        [v] => Ok(v),
        _ => Err(block_len_error::<B>(len)),
    }
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
    fn row_blocks_agree_with_their_types() {
        fn check<B: RowBlock>() {
            assert_eq!(B::LEN, B::TYPE.block_size(), "{}", B::TYPE);
            assert_eq!(size_of::<B>(), B::TYPE.block_bytes(), "{}", B::TYPE);
        }
        check::<BlockF32>();
        check::<BlockF16>();
        check::<BlockQ4_0>();
        check::<BlockQ4_1>();
        check::<BlockQ8_0>();
        check::<BlockQ8_1>();
    }

    #[test]
    fn generic_rows_check_lengths_and_index_errors_by_row() {
        let mut blocks = [BlockQ8_0::default(); 2];
        assert_eq!(
            BlockQ8_0::quantize_row(&[0.0; 33], &mut blocks[..1]),
            Err(KernelError::SizeMismatch {
                what: "elements of the blocks",
                expected: 32,
                got: 33
            })
        );
        assert_eq!(
            BlockQ8_0::dequantize_row(&blocks, &mut [0.0; 32]),
            Err(KernelError::SizeMismatch {
                what: "elements of the blocks",
                expected: 64,
                got: 32
            })
        );
        // An overflow in the second block is reported at that block's first index.
        let mut x = [0.5f32; 64];
        x[40] = 127.0 * 65520.0;
        assert!(matches!(
            BlockQ8_0::quantize_row(&x, &mut blocks),
            Err(KernelError::F16Overflow {
                index: 32,
                what: "scale",
                ..
            })
        ));
        // Blocks of one: the index is the element's own.
        let mut values = [FloatBlock { v: [0; 2] }; 3];
        assert!(matches!(
            BlockF16::quantize_row(&[1.0, 2.0, 7e4], &mut values),
            Err(KernelError::F16Overflow {
                index: 2,
                what: "value",
                ..
            })
        ));
        BlockF16::quantize_row(&[1.0, -2.0, 0.5], &mut values).unwrap();
        let mut back = [0.0f32; 3];
        BlockF16::dequantize_row(&values, &mut back).unwrap();
        assert_eq!(back, [1.0, -2.0, 0.5]);
        assert_eq!(values[1].v, [0x00, 0xC0]);
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
        for ty in GgmlType::ALL.into_iter().filter(|&t| can_quantize(t)) {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut src = [0.5f32; 512];
                src[37] = bad;
                let mut dst = vec![0u8; 512 / ty.block_size() * ty.block_bytes()];
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
        let src: Vec<f32> = (0..768)
            .map(|i| ((i * 37 % 64) as f32 - 31.5) / 8.0)
            .collect();
        let quantizable: Vec<GgmlType> = GgmlType::ALL
            .into_iter()
            .filter(|&t| can_quantize(t))
            .collect();
        assert_eq!(quantizable.len(), 17, "{quantizable:?}");
        for ty in quantizable {
            let mut bytes = vec![0u8; 768 / ty.block_size() * ty.block_bytes()];
            quantize_row(ty, &src, &mut bytes).unwrap();
            let mut back = vec![0.0f32; 768];
            dequantize_row(ty, &bytes, &mut back).unwrap();
            // Largest step: q4_1 (range 7.875 / 15) and q4_0 (4 / 8); half a step each, or a
            // whole one for the clamped top value of q4_0.
            let tol = match ty {
                GgmlType::F32 => 0.0,
                GgmlType::F16 => 0.002,
                GgmlType::Q8_0 | GgmlType::Q8_1 => 4.0 / 127.0 * 0.6,
                GgmlType::Q4_1 => 7.875 / 15.0 * 0.6,
                GgmlType::Q4_0 => 0.5 * 1.01,
                GgmlType::BF16 => 4.0 / 256.0,
                GgmlType::Q5_0 => 0.25 * 1.01,
                GgmlType::Q5_1 => 7.875 / 31.0 * 0.6,
                GgmlType::Q8_K => 4.0 / 127.0 * 0.6,
                // Groups of 32 spanning [-3.9, 3.9]: half a step of 7.875 / 15 (Q4_K) or
                // / 31 (Q5_K), plus the 6-bit rounding of the scale; Q6_K groups of 16 with
                // 32 steps per side.
                GgmlType::Q4_K => 7.875 / 15.0 * 0.6,
                GgmlType::Q5_K => 7.875 / 31.0 * 0.6,
                GgmlType::Q6_K => 3.9375 / 32.0 * 0.6,
                // Q2_K: 4 levels over a group of 16 (range up to 7.875): half a step of
                // 7.875 / 3 plus the 4-bit scale rounding; Q3_K: 8 levels, 4-bit-ish scales;
                // IQ4: the widest gap of the table (24 of 254) over the group's range.
                GgmlType::Q2_K => 7.875 / 3.0 * 0.7,
                // (a whole step where the side opposite the max clamps at level 3)
                GgmlType::Q3_K => 3.9375 / 4.0 * 1.05,
                GgmlType::IQ4_NL | GgmlType::IQ4_XS => 3.9375 * 24.0 / 127.0 * 0.7,
                other => unreachable!("{other} has no quantizer"),
            };
            for (a, b) in src.iter().zip(&back) {
                assert!((a - b).abs() <= tol, "{ty}: {a} -> {b}");
            }
        }
    }
}
