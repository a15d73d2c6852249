//! `chatglm_model`: a loaded model file shared read-only by sessions and threads; its load
//! options, its info, and the library version.

use super::status::{chatglm_status, guard, Failure};
use super::strings::{bytes_arg, write};
use crate::model::KvType;
use crate::{Engine, SessionOptions};
use std::ffi::{c_char, CStr};
use std::sync::Arc;

/// A loaded model (weights mapped read-only from the file, tokenizer, and the options
/// sessions are created with). Opaque. Immutable after loading: every function that takes a
/// `const chatglm_model *` may be called from several threads at once.
#[derive(Debug)]
pub struct chatglm_model {
    pub(crate) engine: Arc<Engine>,
    pub(crate) session: SessionOptions,
    pub(crate) n_threads: u32,
}

/// Element type of a session's KV cache (the values of `chatglm_model_options.kv_type`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum chatglm_kv_type {
    /// Half precision (the default): 2 bytes per value.
    CHATGLM_KV_F16 = 0,
    /// Single precision: twice the memory, no rounding of keys and values.
    CHATGLM_KV_F32 = 1,
}

/// How to load a model. Start from `chatglm_model_options_default()` and change fields; a
/// zero field means "the default" everywhere.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct chatglm_model_options {
    /// Threads for matrix products; 0 = all cores. At most 256 (more is
    /// `CHATGLM_ERR_INVALID_ARGUMENT`).
    pub n_threads: u32,
    /// Positions of each session's KV cache; 0 = 2048, capped by the model's context length.
    /// Larger than the model's context length is an error.
    pub n_ctx: u32,
    /// Prompt tokens per pass over the weights; 0 = 32.
    pub n_batch: u32,
    /// A `chatglm_kv_type` value (`CHATGLM_KV_F16` or `CHATGLM_KV_F32`).
    pub kv_type: i32,
    /// 0 (the default): map the file read-only; the file must then not be truncated or
    /// overwritten while the model is loaded (a generation on a changed file fails with
    /// `CHATGLM_ERR_IO`, but a change during one can crash the process with `SIGBUS`).
    /// Non-zero: read the whole file into memory instead (it may then change freely; costs
    /// the file's size in RAM and a full read at load).
    pub no_mmap: i32,
}

/// The default load options: all cores, a 2048-token context (capped by the model's), batch
/// 32, f16 KV cache.
#[no_mangle]
pub extern "C" fn chatglm_model_options_default() -> chatglm_model_options {
    chatglm_model_options {
        n_threads: 0,
        n_ctx: 0,
        n_batch: 0,
        kv_type: chatglm_kv_type::CHATGLM_KV_F16 as i32,
        no_mmap: 0,
    }
}

/// The session options and thread count that `opts` asks for.
fn session_options(
    opts: &chatglm_model_options,
    engine: &Engine,
) -> Result<(SessionOptions, u32), Failure> {
    let kv_type = match opts.kv_type {
        0 => KvType::F16,
        1 => KvType::F32,
        k => {
            return Err(Failure::invalid(format!(
                "kv_type {k} is not CHATGLM_KV_F16 (0) or CHATGLM_KV_F32 (1)"
            )))
        }
    };
    let max = engine.config().context_length;
    let context = match opts.n_ctx as usize {
        0 => crate::DEFAULT_CONTEXT.min(max),
        c => c,
    };
    if context > max {
        return Err(Failure::invalid(format!(
            "n_ctx {context} is larger than the model's context length {max}"
        )));
    }
    let defaults = SessionOptions::default();
    let batch = match opts.n_batch {
        0 => defaults.batch,
        b => b as usize,
    };
    let max_threads = chatglm_kernels::pool::MAX_THREADS;
    if opts.n_threads as usize > max_threads {
        return Err(Failure::invalid(format!(
            "n_threads {} is more than {max_threads}",
            opts.n_threads
        )));
    }
    let n_threads = crate::resolve_threads(opts.n_threads as usize);
    Ok((
        SessionOptions {
            context,
            kv_type,
            batch,
            threads: n_threads,
        },
        n_threads as u32,
    ))
}

/// Loads the GGUF model file `path` (memory-mapped read-only, no weight copied; or read into
/// memory with `options->no_mmap`) with `options` (NULL: the defaults), and stores the new
/// handle in `*model_out` (NULL on failure). Free it with `chatglm_model_free`.
///
/// A mapped file must not be truncated or overwritten while the model is loaded (replacing
/// it by a rename cannot crash, but is reported too): each generation checks the file's size,
/// mtime and identity (device, inode) and fails with `CHATGLM_ERR_IO` if they changed, but a
/// change during a generation makes the next read of the file raise `SIGBUS`. Use `no_mmap`
/// for files that may change.
///
/// Errors: `CHATGLM_ERR_INVALID_ARGUMENT` (a NULL `path` or `model_out`, bad options such as
/// `n_threads` above 256), `CHATGLM_ERR_IO` (the file cannot be opened, mapped or read, or is
/// not a regular file), `CHATGLM_ERR_BAD_FILE` (not a valid model file).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `options` is NULL or points to an options
/// struct; `model_out` is NULL or points to writable memory for a pointer.
#[no_mangle]
pub unsafe extern "C" fn chatglm_model_load(
    path: *const c_char,
    options: *const chatglm_model_options,
    model_out: *mut *mut chatglm_model,
) -> chatglm_status {
    guard("chatglm_model_load", || {
        if model_out.is_null() {
            return Err(Failure::null("model_out"));
        }
        // SAFETY: checked not NULL; the caller promises it is writable.
        unsafe { write(model_out, std::ptr::null_mut()) };
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let path = unsafe { bytes_arg(path, "path") }?;
        let path = path_from_bytes(path)?;
        let options = if options.is_null() {
            chatglm_model_options_default()
        } else {
            // SAFETY: not NULL; the caller promises it points to an options struct.
            unsafe { *options }
        };
        let engine = if options.no_mmap != 0 {
            Engine::read(path)
        } else {
            Engine::open(path)
        }
        .map_err(Failure::load)?;
        let (session, n_threads) = session_options(&options, &engine)?;
        let model = Box::new(chatglm_model {
            engine: Arc::new(engine),
            session,
            n_threads,
        });
        // SAFETY: checked not NULL above.
        unsafe { write(model_out, Box::into_raw(model)) };
        Ok(())
    })
}

/// A path from the bytes of a C string: any bytes on Unix, UTF-8 elsewhere.
fn path_from_bytes(bytes: &[u8]) -> Result<std::path::PathBuf, Failure> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(std::ffi::OsStr::from_bytes(bytes).into())
    }
    #[cfg(not(unix))]
    {
        std::str::from_utf8(bytes)
            .map(Into::into)
            .map_err(|_| Failure::invalid("`path` is not valid UTF-8"))
    }
}

/// Releases a model handle. NULL is ignored. Sessions created from it keep the model alive
/// until they are freed, so the order of the frees does not matter. Using the handle after
/// this call is undefined behaviour.
///
/// # Safety
/// `model` is NULL or a handle from `chatglm_model_load` that was not freed yet.
#[no_mangle]
pub unsafe extern "C" fn chatglm_model_free(model: *mut chatglm_model) {
    if model.is_null() {
        return;
    }
    // SAFETY: the caller passes a pointer from `Box::into_raw` in `chatglm_model_load`, once.
    // Dropping an `Arc<Engine>` and plain data does not panic.
    drop(unsafe { Box::from_raw(model) });
}

/// What a model is (see `chatglm_model_get_info`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct chatglm_model_info {
    /// The model family: 1 (ChatGLM-6B, the original GLM), 2 (ChatGLM2 prompt format), 3
    /// (ChatGLM3, role tokens), 4 (GLM-4, byte-level vocabulary and chat template) or 20
    /// (CodeGeeX2, code completion, no chat format).
    pub family: i32,
    /// Longest context the model was configured for.
    pub context_length: usize,
    /// Positions of each session's KV cache (`n_ctx` as resolved at load).
    pub n_ctx: usize,
    /// Number of token ids (rows of the embedding).
    pub vocab_size: usize,
    /// Number of transformer layers.
    pub n_layers: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Threads used for matrix products (`n_threads` as resolved at load).
    pub n_threads: u32,
    /// Which kernels run the matrix products (for example `"scalar"`, `"avx2"`, `"neon"`).
    /// Static: never freed, valid for the life of the process.
    pub kernels: *const c_char,
}

/// Writes what `model` is to `*info_out`.
///
/// # Safety
/// `model` is NULL or a live model handle; `info_out` is NULL or points to writable memory for
/// a `chatglm_model_info`.
#[no_mangle]
pub unsafe extern "C" fn chatglm_model_get_info(
    model: *const chatglm_model,
    info_out: *mut chatglm_model_info,
) -> chatglm_status {
    guard("chatglm_model_get_info", || {
        // SAFETY: the caller passes NULL or a live handle.
        let model = unsafe { model.as_ref() }.ok_or_else(|| Failure::null("model"))?;
        if info_out.is_null() {
            return Err(Failure::null("info_out"));
        }
        let config = model.engine.config();
        let info = chatglm_model_info {
            family: match model.engine.tokenizer().family() {
                crate::arch::Family::ChatGlm1 => 1,
                crate::arch::Family::ChatGlm2 => 2,
                crate::arch::Family::ChatGlm3 => 3,
                crate::arch::Family::Glm4 => 4,
                crate::arch::Family::CodeGeeX2 => 20,
            },
            context_length: config.context_length,
            n_ctx: model.session.context,
            vocab_size: config.vocab_size,
            n_layers: config.num_layers,
            hidden_size: config.hidden_size,
            n_threads: model.n_threads,
            kernels: super::kernels_name().as_ptr(),
        };
        // SAFETY: checked not NULL; the caller promises it is writable.
        unsafe { write(info_out, info) };
        Ok(())
    })
}

/// The library version (`"0.1.0"`...). Static, never NULL.
#[no_mangle]
pub extern "C" fn chatglm_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}
