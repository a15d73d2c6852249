//! Tensor element types, with ggml's type ids and block geometry.

use crate::KernelError;
use std::fmt;

/// A tensor element type. The discriminants are the type ids stored in GGUF tensor infos:
/// ggml's `ggml_type` ids for ggml's types, and ids of our own for the row-interleaved types.
///
/// # Row-interleaved types (this project's own)
///
/// `Q4_0x8` and `Q8_0x8` hold the same blocks as `Q4_0` and `Q8_0` (same bytes per element,
/// so [`GgmlType::bytes_for`] is unchanged), but a matrix's rows are stored in groups of
/// [`GROUP_ROWS`] = 8: one group block holds block `b` of each of the 8 rows, so one
/// sequential read feeds 8 output rows. The layout is in `quant::q4_0x8` and `quant::q8_0x8`.
/// A tensor of these types must have a row count that is a multiple of 8
/// ([`GgmlType::row_group`]).
///
/// Their ids are `0x400 + the id of the portable type` (1026 and 1032): no ggml type uses an
/// id in `0x400..` (ggml's ids end below 64), so a ggml reader rejects such a file instead of
/// misreading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(non_camel_case_types)] // ggml's names: Q4_K, IQ2_XXS, ...
pub enum GgmlType {
    /// IEEE 754 single precision.
    F32 = 0,
    /// IEEE 754 half precision.
    F16 = 1,
    /// 32 weights as 4-bit unsigned offsets from -8, one f16 scale.
    Q4_0 = 2,
    /// 32 weights as 4-bit values with an f16 scale and an f16 minimum.
    Q4_1 = 3,
    /// 32 weights as 5-bit offsets from -16 (4 low bits plus a high-bit mask), one f16 scale.
    Q5_0 = 6,
    /// 32 weights as 5-bit values with an f16 scale and an f16 minimum.
    Q5_1 = 7,
    /// 32 weights as signed bytes with one f16 scale.
    Q8_0 = 8,
    /// 32 signed bytes with an f16 scale and the f16 of `scale * sum(q)`; the activation
    /// format paired with [`GgmlType::Q4_1`] and [`GgmlType::Q5_1`] weights.
    Q8_1 = 9,
    /// 256 weights: 16 groups of 16 2-bit values, 4-bit group scales and minimums.
    Q2_K = 10,
    /// 256 weights: 16 groups of 16 3-bit values, 6-bit signed group scales.
    Q3_K = 11,
    /// 256 weights: 8 groups of 32 4-bit values, 6-bit group scales and minimums.
    Q4_K = 12,
    /// 256 weights: 8 groups of 32 5-bit values, 6-bit group scales and minimums.
    Q5_K = 13,
    /// 256 weights: 16 groups of 16 6-bit values, 8-bit signed group scales.
    Q6_K = 14,
    /// 256 signed bytes, an f32 scale and the sums of each 16; the activation format of the
    /// k-quants and IQ4_XS.
    Q8_K = 15,
    /// ggml's IQ2_XXS (read for `info`; this runtime cannot multiply it).
    IQ2_XXS = 16,
    /// ggml's IQ2_XS (read for `info`; not runnable).
    IQ2_XS = 17,
    /// ggml's IQ3_XXS (read for `info`; not runnable).
    IQ3_XXS = 18,
    /// ggml's IQ1_S (read for `info`; not runnable).
    IQ1_S = 19,
    /// 32 weights as 4-bit indices into a fixed non-linear table, one f16 scale.
    IQ4_NL = 20,
    /// ggml's IQ3_S (read for `info`; not runnable).
    IQ3_S = 21,
    /// ggml's IQ2_S (read for `info`; not runnable).
    IQ2_S = 22,
    /// 256 weights: IQ4_NL values in 8 groups of 32 with 6-bit group scales.
    IQ4_XS = 23,
    /// 8-bit integers (read for `info`; not runnable).
    I8 = 24,
    /// 16-bit integers (read for `info`; not runnable).
    I16 = 25,
    /// 32-bit integers (read for `info`; not runnable).
    I32 = 26,
    /// 64-bit integers (read for `info`; not runnable).
    I64 = 27,
    /// IEEE 754 double precision (read for `info`; not runnable).
    F64 = 28,
    /// ggml's IQ1_M (read for `info`; not runnable).
    IQ1_M = 29,
    /// bfloat16: the high half of an f32.
    BF16 = 30,
    /// ggml's TQ1_0 ternary type (read for `info`; not runnable).
    TQ1_0 = 34,
    /// ggml's TQ2_0 ternary type (read for `info`; not runnable).
    TQ2_0 = 35,
    /// ggml's MXFP4 (read for `info`; not runnable).
    MXFP4 = 39,
    /// Q4_0 blocks of 8 rows interleaved block by block (this project's type, see above).
    Q4_0x8 = 1026,
    /// Q8_0 blocks of 8 rows interleaved block by block (this project's type, see above).
    Q8_0x8 = 1032,
}

/// Rows per group of the row-interleaved types.
pub const GROUP_ROWS: usize = 8;

/// Elements per super-block of the k-quants and IQ4_XS (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// ggml type ids that ggml has removed (no block geometry is defined for them any more), with
/// their former names, so that an error can name them.
pub const REMOVED_IDS: [(u32, &str); 8] = [
    (4, "Q4_2"),
    (5, "Q4_3"),
    (31, "Q4_0_4_4"),
    (32, "Q4_0_4_8"),
    (33, "Q4_0_8_8"),
    (36, "IQ4_NL_4_4"),
    (37, "IQ4_NL_4_8"),
    (38, "IQ4_NL_8_8"),
];

impl GgmlType {
    /// Every type this crate knows, in id order.
    pub const ALL: [GgmlType; 34] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ3_XXS,
        GgmlType::IQ1_S,
        GgmlType::IQ4_NL,
        GgmlType::IQ3_S,
        GgmlType::IQ2_S,
        GgmlType::IQ4_XS,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::IQ1_M,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::MXFP4,
        GgmlType::Q4_0x8,
        GgmlType::Q8_0x8,
    ];

    /// The type with ggml id `id`, if this crate knows its geometry.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }

    /// A name for any type id: the type's [`GgmlType::ggml_name`], the former name of an id
    /// ggml removed ([`REMOVED_IDS`]), or `None` for an id ggml never defined.
    pub fn name_of_id(id: u32) -> Option<&'static str> {
        Self::from_id(id).map(Self::ggml_name).or_else(|| {
            REMOVED_IDS
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, name)| *name)
        })
    }

    /// The ggml / GGUF type id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The lower-case name used on the command line (`q4_0`, `q4_k`, `bf16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q5_1 => "q5_1",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q8_1 => "q8_1",
            GgmlType::Q2_K => "q2_k",
            GgmlType::Q3_K => "q3_k",
            GgmlType::Q4_K => "q4_k",
            GgmlType::Q5_K => "q5_k",
            GgmlType::Q6_K => "q6_k",
            GgmlType::Q8_K => "q8_k",
            GgmlType::IQ2_XXS => "iq2_xxs",
            GgmlType::IQ2_XS => "iq2_xs",
            GgmlType::IQ3_XXS => "iq3_xxs",
            GgmlType::IQ1_S => "iq1_s",
            GgmlType::IQ4_NL => "iq4_nl",
            GgmlType::IQ3_S => "iq3_s",
            GgmlType::IQ2_S => "iq2_s",
            GgmlType::IQ4_XS => "iq4_xs",
            GgmlType::I8 => "i8",
            GgmlType::I16 => "i16",
            GgmlType::I32 => "i32",
            GgmlType::I64 => "i64",
            GgmlType::F64 => "f64",
            GgmlType::IQ1_M => "iq1_m",
            GgmlType::BF16 => "bf16",
            GgmlType::TQ1_0 => "tq1_0",
            GgmlType::TQ2_0 => "tq2_0",
            GgmlType::MXFP4 => "mxfp4",
            GgmlType::Q4_0x8 => "q4_0x8",
            GgmlType::Q8_0x8 => "q8_0x8",
        }
    }

    /// The upper-case name gguf-py and llama.cpp's tools print (`Q4_K`, `IQ2_XXS`, `BF16`;
    /// this project's own types as `Q4_0x8`, `Q8_0x8`).
    pub fn ggml_name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::Q8_K => "Q8_K",
            GgmlType::IQ2_XXS => "IQ2_XXS",
            GgmlType::IQ2_XS => "IQ2_XS",
            GgmlType::IQ3_XXS => "IQ3_XXS",
            GgmlType::IQ1_S => "IQ1_S",
            GgmlType::IQ4_NL => "IQ4_NL",
            GgmlType::IQ3_S => "IQ3_S",
            GgmlType::IQ2_S => "IQ2_S",
            GgmlType::IQ4_XS => "IQ4_XS",
            GgmlType::I8 => "I8",
            GgmlType::I16 => "I16",
            GgmlType::I32 => "I32",
            GgmlType::I64 => "I64",
            GgmlType::F64 => "F64",
            GgmlType::IQ1_M => "IQ1_M",
            GgmlType::BF16 => "BF16",
            GgmlType::TQ1_0 => "TQ1_0",
            GgmlType::TQ2_0 => "TQ2_0",
            GgmlType::MXFP4 => "MXFP4",
            GgmlType::Q4_0x8 => "Q4_0x8",
            GgmlType::Q8_0x8 => "Q8_0x8",
        }
    }

    /// Parses a name as written by [`GgmlType::name`] (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Number of elements in one block (1 for the scalar types). ggml's `blck_size`.
    pub fn block_size(self) -> usize {
        self.geometry().0
    }

    /// Number of bytes in one block. ggml's `type_size`.
    pub fn block_bytes(self) -> usize {
        self.geometry().1
    }

    /// (elements, bytes) of one block, ggml's `type_traits` (ggml/src/ggml.c; the struct
    /// sizes are pinned in ggml-common.h, and for the types with blocks here by the
    /// `size_of` assertions of `crate::quant`).
    fn geometry(self) -> (usize, usize) {
        match self {
            GgmlType::F32 | GgmlType::I32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 | GgmlType::I16 => (1, 2),
            GgmlType::I8 => (1, 1),
            GgmlType::I64 | GgmlType::F64 => (1, 8),
            GgmlType::Q4_0 | GgmlType::Q4_0x8 | GgmlType::IQ4_NL => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 | GgmlType::Q8_0x8 => (32, 34),
            GgmlType::Q8_1 => (32, 36),
            GgmlType::MXFP4 => (32, 17),
            GgmlType::Q2_K => (QK_K, 84),
            GgmlType::Q3_K => (QK_K, 110),
            GgmlType::Q4_K => (QK_K, 144),
            GgmlType::Q5_K => (QK_K, 176),
            GgmlType::Q6_K => (QK_K, 210),
            GgmlType::Q8_K => (QK_K, 292),
            GgmlType::IQ2_XXS => (QK_K, 66),
            GgmlType::IQ2_XS => (QK_K, 74),
            GgmlType::IQ3_XXS => (QK_K, 98),
            GgmlType::IQ1_S => (QK_K, 50),
            GgmlType::IQ3_S => (QK_K, 110),
            GgmlType::IQ2_S => (QK_K, 82),
            GgmlType::IQ4_XS => (QK_K, 136),
            GgmlType::IQ1_M => (QK_K, 56),
            GgmlType::TQ1_0 => (QK_K, 54),
            GgmlType::TQ2_0 => (QK_K, 66),
        }
    }

    /// Rows per interleave group: [`GROUP_ROWS`] for the row-interleaved types, 1 for ggml's
    /// types. A matrix of this type has a multiple of this many rows.
    pub fn row_group(self) -> usize {
        match self {
            GgmlType::Q4_0x8 | GgmlType::Q8_0x8 => GROUP_ROWS,
            _ => 1,
        }
    }

    /// The ggml type whose blocks this type holds: `Q4_0` for `Q4_0x8`, `Q8_0` for `Q8_0x8`,
    /// the type itself otherwise.
    pub fn portable(self) -> GgmlType {
        match self {
            GgmlType::Q4_0x8 => GgmlType::Q4_0,
            GgmlType::Q8_0x8 => GgmlType::Q8_0,
            other => other,
        }
    }

    /// The row-interleaved type holding this type's blocks, if there is one.
    pub fn interleaved(self) -> Option<GgmlType> {
        match self {
            GgmlType::Q4_0 => Some(GgmlType::Q4_0x8),
            GgmlType::Q8_0 => Some(GgmlType::Q8_0x8),
            _ => None,
        }
    }

    /// Whether this is one of this project's row-interleaved types (not a ggml type).
    pub fn is_interleaved(self) -> bool {
        self.row_group() > 1
    }

    /// Whether the type stores blocks of quantized integers.
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes needed for `n` elements, or `None` if `n` is not a whole number of blocks or the
    /// size overflows. This is the one computation of a size in bytes; [`GgmlType::row_bytes`]
    /// is the same for a row held in memory.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.block_bytes() as u64)
    }

    /// Bytes of a row of `cols` elements ([`GgmlType::bytes_for`] in `usize`): the error
    /// [`KernelError::NotBlockMultiple`] if `cols` is not a whole number of blocks, or
    /// [`KernelError::SizeMismatch`] if the size does not fit in `usize`.
    pub fn row_bytes(self, cols: usize) -> Result<usize, KernelError> {
        let block = self.block_size();
        if !cols.is_multiple_of(block) {
            return Err(KernelError::NotBlockMultiple {
                ty: self,
                len: cols,
                block,
            });
        }
        u64::try_from(cols)
            .ok()
            .and_then(|n| self.bytes_for(n))
            .and_then(|bytes| usize::try_from(bytes).ok())
            .ok_or(KernelError::SizeMismatch {
                what: "quantized row bytes",
                expected: usize::MAX,
                got: cols,
            })
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_round_trip() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(1026), Some(GgmlType::Q4_0x8));
        assert_eq!(GgmlType::from_id(1032), Some(GgmlType::Q8_0x8));
        for t in GgmlType::ALL {
            assert_eq!(t.portable().block_bytes(), t.block_bytes());
            assert_eq!(t.portable().block_size(), t.block_size());
            if let Some(i) = t.interleaved() {
                assert_eq!((i.portable(), i.row_group()), (t, 8));
                assert!(i.is_interleaved() && !t.is_interleaved());
                assert_eq!(i.id(), 0x400 + t.id());
            }
        }
        assert_eq!(GgmlType::from_name("q5_0"), Some(GgmlType::Q5_0));
        assert_eq!(GgmlType::from_name("q4_z"), None);
        // Every id ggml defines below 40 has a name, known or removed.
        for id in 0..40 {
            assert!(GgmlType::name_of_id(id).is_some(), "{id}");
        }
        assert_eq!(GgmlType::name_of_id(16), Some("IQ2_XXS"));
        assert_eq!(GgmlType::name_of_id(31), Some("Q4_0_4_4"));
        assert_eq!(GgmlType::name_of_id(40), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(GgmlType::Q4_0.bytes_for(4096), Some(128 * 18));
        assert_eq!(GgmlType::Q4_0.bytes_for(33), None);
        assert_eq!(GgmlType::Q4_0x8.bytes_for(4096 * 8), Some(8 * 128 * 18));
        assert_eq!(GgmlType::Q8_0x8.bytes_for(64), Some(68));
        assert_eq!(GgmlType::F16.bytes_for(3), Some(6));
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
        // ggml's type sizes (ggml-common.h static_asserts).
        for (t, bs, bytes) in [
            (GgmlType::Q5_0, 32, 22),
            (GgmlType::Q5_1, 32, 24),
            (GgmlType::Q2_K, 256, 84),
            (GgmlType::Q3_K, 256, 110),
            (GgmlType::Q4_K, 256, 144),
            (GgmlType::Q5_K, 256, 176),
            (GgmlType::Q6_K, 256, 210),
            (GgmlType::Q8_K, 256, 292),
            (GgmlType::IQ4_NL, 32, 18),
            (GgmlType::IQ4_XS, 256, 136),
            (GgmlType::BF16, 1, 2),
        ] {
            assert_eq!((t.block_size(), t.block_bytes()), (bs, bytes), "{t}");
        }
        assert_eq!(GgmlType::Q4_K.bytes_for(4096), Some(16 * 144));
        assert_eq!(GgmlType::Q6_K.bytes_for(13696), None);
        assert_eq!(GgmlType::Q8_1.row_bytes(64), Ok(72));
        assert_eq!(
            GgmlType::Q4_1.row_bytes(48),
            Err(KernelError::NotBlockMultiple {
                ty: GgmlType::Q4_1,
                len: 48,
                block: 32
            })
        );
        assert!(matches!(
            GgmlType::F32.row_bytes(usize::MAX - 3),
            Err(KernelError::SizeMismatch { .. })
        ));
    }
}
