//! C strings across the boundary: reading the caller's (NULL and invalid UTF-8 are errors),
//! and handing out the library's own, which `chatglm_string_free` releases.
//!
//! A string handed out is one boxed byte slice: 8 bytes holding the slice's length, then the
//! text, then a NUL. The caller gets a pointer to the text; `chatglm_string_free` steps back
//! to the length and rebuilds the box. Storing the length (rather than relying on `strlen`)
//! keeps freeing sound even when the text itself contains a NUL byte.

use super::status::Failure;
use std::ffi::{c_char, CStr};

/// Bytes before the text of a string handed out: its allocation's length.
const HEADER: usize = std::mem::size_of::<u64>();

/// The caller's NUL-terminated string `ptr` (named `what` in messages) as UTF-8.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid and unchanged for `'a`.
pub(crate) unsafe fn utf8_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string valid for 'a.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    std::str::from_utf8(bytes).map_err(|e| {
        Failure::invalid(format!(
            "`{what}` is not valid UTF-8 (bad byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// The caller's NUL-terminated string `ptr` as raw bytes (for file paths, which need not be
/// UTF-8 on Unix).
///
/// # Safety
/// As for [`utf8_arg`].
pub(crate) unsafe fn bytes_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a [u8], Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string valid for 'a.
    Ok(unsafe { CStr::from_ptr(ptr) }.to_bytes())
}

/// A copy of `text`, NUL-terminated, for the caller to free with `chatglm_string_free`.
pub(crate) fn new_c_string(text: &str) -> *mut c_char {
    let len = HEADER + text.len() + 1;
    let mut buf = Vec::with_capacity(len);
    buf.extend_from_slice(&(len as u64).to_ne_bytes());
    buf.extend_from_slice(text.as_bytes());
    buf.push(0);
    let slice: *mut [u8] = Box::into_raw(buf.into_boxed_slice());
    // SAFETY: the slice is `len >= HEADER + 1` bytes long, so HEADER is in bounds.
    unsafe { slice.cast::<u8>().add(HEADER) }.cast::<c_char>()
}

/// Frees a string returned by the library (a reply, a detokenized text). NULL is ignored.
/// Passing anything else (a string from elsewhere, or one already freed) is undefined
/// behaviour.
///
/// # Safety
/// `text` is NULL or a string the library returned and that was not freed yet.
#[no_mangle]
pub unsafe extern "C" fn chatglm_string_free(text: *mut c_char) {
    if text.is_null() {
        return;
    }
    // SAFETY: `text` came from `new_c_string`, so HEADER bytes before it start the boxed
    // slice, whose first HEADER bytes hold its length.
    unsafe {
        let start = text.cast::<u8>().sub(HEADER);
        let mut len = [0u8; HEADER];
        std::ptr::copy_nonoverlapping(start, len.as_mut_ptr(), HEADER);
        let len = u64::from_ne_bytes(len) as usize;
        drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
            start, len,
        )));
    }
}

/// Writes `value` through the caller's out-pointer `out` (checked not NULL beforehand).
///
/// # Safety
/// `out` is not NULL and points to writable memory for a `T`.
pub(crate) unsafe fn write<T>(out: *mut T, value: T) {
    // SAFETY: the caller checked `out` and promises it is writable; `write` does not drop the
    // (possibly uninitialised) previous contents.
    unsafe { out.write(value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_even_with_nul_bytes() {
        for text in ["", "hello", "中文 ✓", "a\0b"] {
            let p = new_c_string(text);
            // SAFETY: p is a NUL-terminated string just made; freed once below.
            let back = unsafe { CStr::from_ptr(p) }.to_bytes();
            let want = text.split('\0').next().unwrap();
            assert_eq!(back, want.as_bytes());
            // SAFETY: p came from new_c_string and is freed once.
            unsafe { chatglm_string_free(p) };
        }
        // SAFETY: NULL is allowed.
        unsafe { chatglm_string_free(std::ptr::null_mut()) };
    }

    #[test]
    fn bad_arguments_are_named() {
        // SAFETY: NULL, then a NUL-terminated literal.
        let e = unsafe { utf8_arg(std::ptr::null(), "text") }.unwrap_err();
        assert_eq!(e.message, "`text` is NULL");
        let bad = b"ab\xff\0";
        // SAFETY: NUL-terminated bytes.
        let e = unsafe { utf8_arg(bad.as_ptr().cast(), "text") }.unwrap_err();
        assert_eq!(
            e.message,
            "`text` is not valid UTF-8 (bad byte at offset 2)"
        );
        // SAFETY: NUL-terminated bytes.
        let raw = unsafe { bytes_arg(bad.as_ptr().cast(), "p") }.unwrap();
        assert_eq!(raw, b"ab\xff");
    }
}
