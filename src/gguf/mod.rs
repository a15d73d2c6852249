//! The GGUF v3 file format (spec: ggml `docs/gguf.md`; byte-level description of what this
//! project reads and writes: `docs/FORMAT.md`).
//!
//! - [`GgufFile`]: memory-maps (or takes ownership of) a file, parses and checks it, and hands
//!   out the metadata ([`Metadata`], [`Value`], typed [`Array`]s) and zero-copy tensor data
//!   ([`TensorInfo`], [`GgufFile::tensor_data`]).
//! - [`GgufWriter`]: writes a file in one pass to any [`std::io::Write`], tensor by tensor.
//!
//! Versions: 3 is read and written. Version 2 has the same layout (v3 only added the
//! possibility of big-endian files, which this project does not support) and is read too.
//! Version 1 (32-bit counts) is rejected with [`GgufError::UnsupportedVersion`].
//!
//! The reader treats the file as hostile: every count, length, offset and type id is checked
//! with overflow-safe arithmetic against the bytes that remain before it is used, and every
//! failure is a [`GgufError`] naming the key, the tensor or the byte offset.

mod cursor;
mod error;
mod reader;
mod tensor;
mod value;
mod writer;

pub use error::GgufError;
pub use reader::GgufFile;
pub use tensor::{TensorDesc, TensorInfo};
pub use value::{Array, Metadata, Value, ValueType};
pub use writer::GgufWriter;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// The version this crate writes.
pub const GGUF_VERSION: u32 = 3;

/// The metadata key that sets the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// Alignment when the file has no `general.alignment` key.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Longest string value (and array element string) the reader accepts: 16 MiB.
pub const MAX_STRING_LEN: usize = 16 << 20;

/// Longest metadata key the reader accepts (the spec's limit, 2^16 - 1 bytes).
pub const MAX_KEY_LEN: usize = 65_535;

/// Longest tensor name the reader accepts (the spec's limit).
pub const MAX_TENSOR_NAME_LEN: usize = 64;

/// Longest tensor name the writer writes: llama.cpp stores names in `char[GGML_MAX_NAME]`
/// (64) with a terminating NUL, so it rejects names of 64 bytes.
pub const MAX_WRITTEN_TENSOR_NAME_LEN: usize = 63;

/// Deepest nesting of arrays: an array of arrays of arrays of arrays of scalars.
pub const MAX_ARRAY_DEPTH: usize = 4;

/// Most dimensions a tensor can have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// `offset` rounded up to a multiple of `alignment` (a power of two), or `None` on overflow.
pub(crate) fn align_up(offset: u64, alignment: u64) -> Option<u64> {
    let mask = alignment.checked_sub(1)?;
    offset.checked_add(mask).map(|x| x & !mask)
}

#[cfg(test)]
mod tests {
    use super::cursor::Cursor;
    use super::*;

    #[test]
    fn align_up_rounds_and_never_overflows() {
        assert_eq!(align_up(0, 32), Some(0));
        assert_eq!(align_up(1, 32), Some(32));
        assert_eq!(align_up(32, 32), Some(32));
        assert_eq!(align_up(33, 1), Some(33));
        assert_eq!(align_up(u64::MAX - 2, 4), None);
        assert_eq!(align_up(!3, 4), Some(!3));
        assert_eq!(align_up(5, 0), None);
    }

    #[test]
    fn value_type_ids() {
        for (i, t) in ValueType::ALL.iter().enumerate() {
            assert_eq!(t.id() as usize, i);
            assert_eq!(ValueType::from_id(t.id()), Some(*t));
        }
        assert_eq!(ValueType::from_id(13), None);
        assert_eq!(ValueType::from_id(u32::MAX), None);
    }

    #[test]
    fn cursor_reports_truncation_without_panicking() {
        let bytes = [1u8, 2, 3];
        let mut c = Cursor::new(&bytes);
        let what = || "field".to_owned();
        assert!(matches!(
            c.take(u64::MAX, &what),
            Err(GgufError::Truncated {
                needed: u64::MAX,
                available: 3,
                offset: 0,
                ..
            })
        ));
        assert_eq!(c.take(2, &what).unwrap(), &[1, 2]);
        assert!(matches!(
            c.u32(&what),
            Err(GgufError::Truncated {
                offset: 2,
                available: 1,
                ..
            })
        ));
        assert_eq!(c.pos(), 2);
        assert!(matches!(
            c.check_count(u64::MAX, 1, 0, &what),
            Err(GgufError::CountTooLarge { .. })
        ));
        assert_eq!(c.check_count(1, 1, 0, &what).unwrap(), 1);
        assert!(c.check_count(2, 1, 0, &what).is_err());
        assert_eq!(c.check_count(0, 12, 0, &what).unwrap(), 0);
    }
}
