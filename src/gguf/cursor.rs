//! A bounds-checked little-endian reader over a byte slice. Every read either returns the
//! bytes asked for or a [`GgufError::Truncated`] naming the field; nothing here can panic.

use super::GgufError;

/// A position in a byte slice.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Converts a byte count or offset to `u64` for error messages (lossless on every platform
/// Rust supports, saturating otherwise).
pub(crate) fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// The current byte offset.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left after the current position.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes; `what` describes the field for the error.
    pub(crate) fn take(
        &mut self,
        n: u64,
        what: &dyn Fn() -> String,
    ) -> Result<&'a [u8], GgufError> {
        let truncated = || GgufError::Truncated {
            what: what(),
            offset: to_u64(self.pos),
            needed: n,
            available: to_u64(self.remaining()),
        };
        let n_usize = usize::try_from(n).map_err(|_| truncated())?;
        let end = self.pos.checked_add(n_usize).ok_or_else(truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &dyn Fn() -> String,
    ) -> Result<[u8; N], GgufError> {
        let bytes = self.take(to_u64(N), what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// A little-endian `u8`.
    pub(crate) fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8, GgufError> {
        Ok(u8::from_le_bytes(self.array(what)?))
    }

    /// A little-endian `u32`.
    pub(crate) fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A little-endian `u64`.
    pub(crate) fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 length, then that many bytes of UTF-8. Lengths above `max` are
    /// rejected before anything is read or allocated.
    pub(crate) fn string(
        &mut self,
        max: u64,
        what: &dyn Fn() -> String,
    ) -> Result<String, GgufError> {
        let len_offset = to_u64(self.pos);
        let len = self.u64(&|| format!("length of {}", what()))?;
        if len > max {
            return Err(GgufError::StringTooLong {
                what: what(),
                offset: len_offset,
                len,
                max,
            });
        }
        let start = to_u64(self.pos);
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                what: what(),
                offset: start,
            }),
        }
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit in what remains,
    /// so that a count read from the file can size a loop or an allocation.
    pub(crate) fn check_count(
        &self,
        count: u64,
        min_size: usize,
        count_offset: usize,
        what: &dyn Fn() -> String,
    ) -> Result<usize, GgufError> {
        let available = self.remaining();
        let fits = count
            .checked_mul(to_u64(min_size))
            .is_some_and(|bytes| bytes <= to_u64(available));
        match usize::try_from(count) {
            Ok(n) if fits => Ok(n),
            _ => Err(GgufError::CountTooLarge {
                what: what(),
                offset: to_u64(count_offset),
                count,
                available: to_u64(available),
            }),
        }
    }
}
