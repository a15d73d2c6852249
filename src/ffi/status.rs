//! Status codes, the per-thread last error message, and `guard`, which every entry point
//! runs its body in.

use crate::model::ModelError;
use crate::sampler::SamplerError;
use crate::Error;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a function returns: `CHATGLM_OK`, or why it failed (the message is then readable with
/// `chatglm_last_error()` on the same thread).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum chatglm_status {
    /// Success.
    CHATGLM_OK = 0,
    /// A pointer is NULL, a string is not valid UTF-8, an option is out of range, a token id is
    /// outside the vocabulary, or a message list is not a conversation the model understands.
    CHATGLM_ERR_INVALID_ARGUMENT = 1,
    /// The model file could not be opened, mapped or read, is not a regular file, or changed
    /// (truncated, overwritten, replaced) after a mapped load.
    CHATGLM_ERR_IO = 2,
    /// The file is not a usable model (not GGUF, truncated, missing or malformed tensors or
    /// vocabulary).
    CHATGLM_ERR_BAD_FILE = 3,
    /// The prompt does not fit in the session's context (`n_ctx`).
    CHATGLM_ERR_CONTEXT_FULL = 4,
    /// A caller's buffer is too small; the size needed was written to the count argument.
    CHATGLM_ERR_BUFFER_TOO_SMALL = 5,
    /// The session is already in use: by another thread, or by the callback of a generation
    /// that is running on it.
    CHATGLM_ERR_BUSY = 6,
    /// Memory (for example for a session's KV cache) could not be allocated.
    CHATGLM_ERR_OUT_OF_MEMORY = 7,
    /// A bug in the library (a caught panic, logits that are not finite). The message says more.
    CHATGLM_ERR_INTERNAL = 8,
}

use chatglm_status::*;

/// A failed call: its status and message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: chatglm_status,
    pub message: String,
}

impl Failure {
    /// A failure with status `status`.
    pub fn new(status: chatglm_status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// `CHATGLM_ERR_INVALID_ARGUMENT`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(CHATGLM_ERR_INVALID_ARGUMENT, message)
    }

    /// `what` is a NULL pointer.
    pub fn null(what: &str) -> Self {
        Self::invalid(format!("`{what}` is NULL"))
    }

    /// An error from loading a model: the file is at fault unless it could not be read at all.
    pub fn load(e: Error) -> Self {
        let status = match &e {
            _ if e.is_bad_file() => CHATGLM_ERR_BAD_FILE,
            Error::Model(ModelError::Alloc { .. }) => CHATGLM_ERR_OUT_OF_MEMORY,
            Error::File { .. } | Error::FileChanged { .. } => CHATGLM_ERR_IO,
            // Options the caller chose (a context larger than the model's, a state option).
            Error::ContextTooLarge { .. } | Error::Model(ModelError::StateOption { .. }) => {
                CHATGLM_ERR_INVALID_ARGUMENT
            }
            _ => CHATGLM_ERR_INTERNAL,
        };
        Self::new(status, e.to_string())
    }

    /// An error from running a session: the file loaded fine, so the caller's input (or a bug)
    /// is at fault.
    pub fn run(e: Error) -> Self {
        let status = match &e {
            Error::PromptTooLong { .. } | Error::Model(ModelError::ContextFull { .. }) => {
                CHATGLM_ERR_CONTEXT_FULL
            }
            Error::EmptyPrompt
            | Error::ContextTooLarge { .. }
            | Error::WindowOutOfRange { .. }
            | Error::NoTokensToGenerate
            | Error::EmptyConversation
            | Error::LastMessageNotUser
            | Error::Tokenizer(_)
            | Error::Sampler(SamplerError::Config { .. }) => CHATGLM_ERR_INVALID_ARGUMENT,
            Error::Model(ModelError::Alloc { .. }) => CHATGLM_ERR_OUT_OF_MEMORY,
            Error::FileChanged { .. } => CHATGLM_ERR_IO,
            Error::VocabMismatch { .. } => CHATGLM_ERR_BAD_FILE,
            _ => CHATGLM_ERR_INTERNAL,
        };
        Self::new(status, e.to_string())
    }
}

thread_local! {
    /// The message of the last failed call on this thread ("" after a successful one).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error (NUL bytes, which a C string cannot hold,
/// are written as `\0`).
fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Runs the body of the entry point `name`: a panic becomes `CHATGLM_ERR_INTERNAL`, a failure
/// its status; either way the message (prefixed with `name`) becomes this thread's last error.
/// Success clears it.
pub(crate) fn guard(name: &str, body: impl FnOnce() -> Result<(), Failure>) -> chatglm_status {
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Err(Failure::new(
            CHATGLM_ERR_INTERNAL,
            format!("internal error (panic): {what}"),
        ))
    });
    match outcome {
        Ok(()) => {
            set_last_error("");
            CHATGLM_OK
        }
        Err(f) => {
            set_last_error(&format!("{name}: {}", f.message));
            f.status
        }
    }
}

/// The message of the last failed call on the calling thread, or "" if the last call
/// succeeded (or none was made). Never NULL. The text is owned by the library and valid until
/// the next `chatglm_*` call on the same thread; copy it to keep it.
#[no_mangle]
pub extern "C" fn chatglm_last_error() -> *const c_char {
    // Reading the thread-local cannot panic except during thread teardown, where `try_with`
    // fails instead: answer "" then.
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// A short, static, English name of a status (`"CHATGLM_ERR_IO"`...; unknown values give
/// `"CHATGLM_UNKNOWN_STATUS"`). Never NULL.
#[no_mangle]
pub extern "C" fn chatglm_status_name(status: std::ffi::c_int) -> *const c_char {
    let name = match status {
        0 => c"CHATGLM_OK",
        1 => c"CHATGLM_ERR_INVALID_ARGUMENT",
        2 => c"CHATGLM_ERR_IO",
        3 => c"CHATGLM_ERR_BAD_FILE",
        4 => c"CHATGLM_ERR_CONTEXT_FULL",
        5 => c"CHATGLM_ERR_BUFFER_TOO_SMALL",
        6 => c"CHATGLM_ERR_BUSY",
        7 => c"CHATGLM_ERR_OUT_OF_MEMORY",
        8 => c"CHATGLM_ERR_INTERNAL",
        _ => c"CHATGLM_UNKNOWN_STATUS",
    };
    name.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: chatglm_last_error never returns NULL and the text lives until the next call.
        unsafe { CStr::from_ptr(chatglm_last_error()) }
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn guard_maps_panics_failures_and_success() {
        let s = guard("f", || panic!("boom {}", 1));
        assert_eq!(s, CHATGLM_ERR_INTERNAL);
        assert_eq!(last(), "f: internal error (panic): boom 1");
        let s = guard("g", || Err(Failure::null("x")));
        assert_eq!(s, CHATGLM_ERR_INVALID_ARGUMENT);
        assert_eq!(last(), "g: `x` is NULL");
        assert_eq!(guard("h", || Ok(())), CHATGLM_OK);
        assert_eq!(last(), "");
        let s = guard("n", || Err(Failure::invalid("a\0b")));
        assert_eq!(s, CHATGLM_ERR_INVALID_ARGUMENT);
        assert_eq!(last(), "n: a\\0b");
    }

    #[test]
    fn file_problems_are_bad_file_and_options_invalid_arguments() {
        let vocab = Error::VocabMismatch {
            tokenizer: 10,
            embedding: 12,
        };
        assert_eq!(Failure::load(vocab).status, CHATGLM_ERR_BAD_FILE);
        let vocab = Error::VocabMismatch {
            tokenizer: 10,
            embedding: 12,
        };
        assert_eq!(Failure::run(vocab).status, CHATGLM_ERR_BAD_FILE);
        let ctx = Error::ContextTooLarge {
            requested: 9,
            max: 8,
        };
        assert_eq!(Failure::load(ctx).status, CHATGLM_ERR_INVALID_ARGUMENT);
        let changed = Error::FileChanged {
            path: "m.gguf".into(),
        };
        assert_eq!(Failure::run(changed).status, CHATGLM_ERR_IO);
        for e in [
            Error::NoTokensToGenerate,
            Error::EmptyConversation,
            Error::LastMessageNotUser,
        ] {
            assert_eq!(Failure::run(e).status, CHATGLM_ERR_INVALID_ARGUMENT);
        }
    }

    #[test]
    fn status_names_match_values() {
        for s in [
            CHATGLM_OK,
            CHATGLM_ERR_INVALID_ARGUMENT,
            CHATGLM_ERR_IO,
            CHATGLM_ERR_BAD_FILE,
            CHATGLM_ERR_CONTEXT_FULL,
            CHATGLM_ERR_BUFFER_TOO_SMALL,
            CHATGLM_ERR_BUSY,
            CHATGLM_ERR_OUT_OF_MEMORY,
            CHATGLM_ERR_INTERNAL,
        ] {
            // SAFETY: the names are static NUL-terminated strings.
            let name = unsafe { CStr::from_ptr(chatglm_status_name(s as i32)) };
            assert_eq!(name.to_str().unwrap(), format!("{s:?}"));
        }
        // SAFETY: as above.
        let name = unsafe { CStr::from_ptr(chatglm_status_name(99)) };
        assert_eq!(name.to_str().unwrap(), "CHATGLM_UNKNOWN_STATUS");
    }
}
