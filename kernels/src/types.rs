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
pub enum GgmlType {
    /// IEEE 754 single precision.
    F32 = 0,
    /// IEEE 754 half precision.
    F16 = 1,
    /// 32 weights as 4-bit unsigned offsets from -8, one f16 scale.
    Q4_0 = 2,
    /// 32 weights as 4-bit values with an f16 scale and an f16 minimum.
    Q4_1 = 3,
    /// 32 weights as signed bytes with one f16 scale.
    Q8_0 = 8,
    /// 32 signed bytes with an f16 scale and the f16 of `scale * sum(q)`; the activation
    /// format paired with [`GgmlType::Q4_1`] weights.
    Q8_1 = 9,
    /// Q4_0 blocks of 8 rows interleaved block by block (this project's type, see above).
    Q4_0x8 = 1026,
    /// Q8_0 blocks of 8 rows interleaved block by block (this project's type, see above).
    Q8_0x8 = 1032,
}

/// Rows per group of the row-interleaved types.
pub const GROUP_ROWS: usize = 8;

impl GgmlType {
    /// Every type this crate knows, in id order.
    pub const ALL: [GgmlType; 8] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q4_0x8,
        GgmlType::Q8_0x8,
    ];

    /// The type with ggml id `id`, if this crate supports it.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }

    /// The ggml / GGUF type id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The lower-case name used on the command line and by ggml (`q4_0`, `f16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q8_1 => "q8_1",
            GgmlType::Q4_0x8 => "q4_0x8",
            GgmlType::Q8_0x8 => "q8_0x8",
        }
    }

    /// Parses a name as written by [`GgmlType::name`] (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Number of elements in one block (1 for the float types).
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 => 1,
            GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q8_0
            | GgmlType::Q8_1
            | GgmlType::Q4_0x8
            | GgmlType::Q8_0x8 => 32,
        }
    }

    /// Number of bytes in one block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 => 2,
            GgmlType::Q4_0 | GgmlType::Q4_0x8 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q8_0 | GgmlType::Q8_0x8 => 34,
            GgmlType::Q8_1 => 36,
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
        assert_eq!(GgmlType::from_name("q5_0"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(GgmlType::Q4_0.bytes_for(4096), Some(128 * 18));
        assert_eq!(GgmlType::Q4_0.bytes_for(33), None);
        assert_eq!(GgmlType::Q4_0x8.bytes_for(4096 * 8), Some(8 * 128 * 18));
        assert_eq!(GgmlType::Q8_0x8.bytes_for(64), Some(68));
        assert_eq!(GgmlType::F16.bytes_for(3), Some(6));
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
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
