//! Tokenize and detokenize with a model's tokenizer.

use super::chatglm_token;
use super::model::chatglm_model;
use super::status::{chatglm_status, guard, Failure};
use super::strings::{new_c_string, utf8_arg, write};

/// Encodes `text` with the model's tokenizer into the caller's buffer `tokens` of `capacity`
/// ids (NULL allowed when `capacity` is 0), preceded by the `[gMASK] sop` prompt prefix when
/// `add_prefix` is non-zero. `*n_tokens_out` receives the number of ids the text encodes to,
/// also when the buffer is too small: then the call returns `CHATGLM_ERR_BUFFER_TOO_SMALL`
/// and nothing is written to `tokens` (call once with capacity 0 to size the buffer).
///
/// # Safety
/// `model` is NULL or a live model handle; `text` is NULL or a NUL-terminated string;
/// `tokens` is NULL or points to `capacity` writable ids; `n_tokens_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn chatglm_tokenize(
    model: *const chatglm_model,
    text: *const std::ffi::c_char,
    add_prefix: std::ffi::c_int,
    tokens: *mut chatglm_token,
    capacity: usize,
    n_tokens_out: *mut usize,
) -> chatglm_status {
    guard("chatglm_tokenize", || {
        // SAFETY: the caller passes NULL or a live handle.
        let model = unsafe { model.as_ref() }.ok_or_else(|| Failure::null("model"))?;
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let text = unsafe { utf8_arg(text, "text") }?;
        if n_tokens_out.is_null() {
            return Err(Failure::null("n_tokens_out"));
        }
        if tokens.is_null() && capacity > 0 {
            return Err(Failure::null("tokens"));
        }
        let tok = model.engine.tokenizer();
        let ids = if add_prefix != 0 {
            tok.encode_with_prefix(text)
        } else {
            tok.encode(text)
        };
        // SAFETY: checked not NULL; the caller promises it is writable.
        unsafe { write(n_tokens_out, ids.len()) };
        if ids.len() > capacity {
            return Err(Failure::new(
                chatglm_status::CHATGLM_ERR_BUFFER_TOO_SMALL,
                format!(
                    "the text encodes to {} tokens, the buffer holds {capacity}",
                    ids.len()
                ),
            ));
        }
        if !ids.is_empty() {
            // SAFETY: `tokens` is not NULL (capacity >= ids.len() > 0) and the caller promises
            // `capacity >= ids.len()` writable ids; `ids` is a separate allocation.
            unsafe { std::ptr::copy_nonoverlapping(ids.as_ptr(), tokens, ids.len()) };
        }
        Ok(())
    })
}

/// Decodes `tokens[0..n_tokens]` to text (special tokens print nothing; bytes that do not
/// form valid UTF-8 become U+FFFD) and stores it in `*text_out` (NULL on failure); free it
/// with `chatglm_string_free`. An id outside the vocabulary is `CHATGLM_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `model` is NULL or a live model handle; `tokens` is NULL or points to `n_tokens` ids;
/// `text_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn chatglm_detokenize(
    model: *const chatglm_model,
    tokens: *const chatglm_token,
    n_tokens: usize,
    text_out: *mut *mut std::ffi::c_char,
) -> chatglm_status {
    guard("chatglm_detokenize", || {
        if text_out.is_null() {
            return Err(Failure::null("text_out"));
        }
        // SAFETY: checked not NULL; the caller promises it is writable.
        unsafe { write(text_out, std::ptr::null_mut()) };
        // SAFETY: the caller passes NULL or a live handle.
        let model = unsafe { model.as_ref() }.ok_or_else(|| Failure::null("model"))?;
        let ids: &[chatglm_token] = if n_tokens == 0 {
            &[]
        } else if tokens.is_null() {
            return Err(Failure::null("tokens"));
        } else {
            // SAFETY: not NULL; the caller promises `n_tokens` readable ids.
            unsafe { std::slice::from_raw_parts(tokens, n_tokens) }
        };
        let text = model
            .engine
            .tokenizer()
            .decode(ids)
            .map_err(|e| Failure::invalid(e.to_string()))?;
        // SAFETY: checked not NULL above.
        unsafe { write(text_out, new_c_string(&text)) };
        Ok(())
    })
}
