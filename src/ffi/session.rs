//! `chatglm_session`: one conversation (KV cache, history, sampler settings per call) on a
//! shared model; chat, raw completion, reset and the statistics of the last generation.

use super::model::chatglm_model;
use super::status::{chatglm_status, guard, Failure};
use super::strings::{new_c_string, utf8_arg, write};
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::{ChatMessage, Role};
use crate::{GenerateOptions, Generation, Session, StopReason};
use std::ffi::{c_char, c_int, c_void};
use std::sync::{Arc, Mutex, TryLockError};

/// One conversation with a model: its own KV cache and chat history. Opaque. A session is
/// used by one call at a time: a second call while one runs (from another thread, or from the
/// running call's callback) fails with `CHATGLM_ERR_BUSY`. Different sessions, even on the
/// same model, run in parallel freely.
#[derive(Debug)]
pub struct chatglm_session {
    inner: Mutex<SessionState>,
}

/// What the mutex guards.
#[derive(Debug)]
struct SessionState {
    session: Session,
    last: chatglm_generation_stats,
}

/// How to generate. Start from `chatglm_generate_options_default()` and change fields.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct chatglm_generate_options {
    /// Most tokens to generate (at least 1).
    pub max_new_tokens: u32,
    /// Softmax temperature; 0 = greedy (always the most likely token). Finite, >= 0.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables. >= 0.
    pub top_k: i32,
    /// Keep the most likely tokens whose probabilities add up to `top_p`; 1 disables. In (0, 1].
    pub top_p: f32,
    /// Repetition penalty; 1 disables. Positive.
    pub repeat_penalty: f32,
    /// Seed of the sampler's random generator: the same seed gives the same reply.
    pub seed: u64,
}

/// The default generation options (chatglm.cpp's): 512 new tokens, temperature 0.95, top-k
/// off, top-p 0.7, no repetition penalty, seed 0.
#[no_mangle]
pub extern "C" fn chatglm_generate_options_default() -> chatglm_generate_options {
    let d = GenerateOptions::default();
    chatglm_generate_options {
        max_new_tokens: d.max_new_tokens.try_into().unwrap_or(u32::MAX),
        temperature: d.sampler.temperature,
        top_k: d.sampler.top_k.try_into().unwrap_or(i32::MAX),
        top_p: d.sampler.top_p,
        repeat_penalty: d.sampler.repeat_penalty,
        seed: d.sampler.seed,
    }
}

impl chatglm_generate_options {
    /// The Rust options, checked.
    fn to_rust(self) -> Result<GenerateOptions, Failure> {
        if self.max_new_tokens == 0 {
            return Err(Failure::invalid("max_new_tokens must be at least 1"));
        }
        let top_k = usize::try_from(self.top_k)
            .map_err(|_| Failure::invalid(format!("top_k {} is negative", self.top_k)))?;
        let sampler = SamplerConfig {
            temperature: self.temperature,
            top_k,
            top_p: self.top_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..SamplerConfig::default()
        };
        Sampler::new(sampler).map_err(|e| Failure::invalid(e.to_string()))?;
        Ok(GenerateOptions {
            max_new_tokens: self.max_new_tokens as usize,
            sampler,
        })
    }
}

/// Why a generation stopped.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum chatglm_stop_reason {
    /// No generation has run on the session yet (or it failed).
    CHATGLM_STOP_NONE = 0,
    /// The model produced an end token.
    CHATGLM_STOP_EOS = 1,
    /// `max_new_tokens` were generated.
    CHATGLM_STOP_MAX_TOKENS = 2,
    /// The context is full.
    CHATGLM_STOP_CONTEXT_FULL = 3,
    /// The callback returned non-zero.
    CHATGLM_STOP_CANCELLED = 4,
}

/// What the last generation on a session did (see `chatglm_session_last_stats`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct chatglm_generation_stats {
    /// Why it stopped.
    pub stop_reason: chatglm_stop_reason,
    /// Tokens of the prompt (its `[gMASK] sop` prefix and chat format included).
    pub n_prompt_tokens: usize,
    /// Of those, tokens whose keys and values were reused from the previous call.
    pub n_reused_tokens: usize,
    /// Tokens generated (an end token included).
    pub n_generated_tokens: usize,
    /// Milliseconds reading the prompt, up to the first token.
    pub prefill_ms: f64,
    /// Milliseconds generating the tokens after the first.
    pub decode_ms: f64,
}

impl chatglm_generation_stats {
    const NONE: Self = Self {
        stop_reason: chatglm_stop_reason::CHATGLM_STOP_NONE,
        n_prompt_tokens: 0,
        n_reused_tokens: 0,
        n_generated_tokens: 0,
        prefill_ms: 0.0,
        decode_ms: 0.0,
    };

    fn from_generation(g: &Generation) -> Self {
        use chatglm_stop_reason::*;
        Self {
            stop_reason: match g.stop {
                StopReason::Eos => CHATGLM_STOP_EOS,
                StopReason::MaxTokens => CHATGLM_STOP_MAX_TOKENS,
                StopReason::ContextFull => CHATGLM_STOP_CONTEXT_FULL,
                StopReason::Cancelled => CHATGLM_STOP_CANCELLED,
            },
            n_prompt_tokens: g.prompt_ids.len(),
            n_reused_tokens: g.timings.reused_tokens,
            n_generated_tokens: g.ids.len(),
            prefill_ms: g.timings.prefill.as_secs_f64() * 1e3,
            decode_ms: g.timings.decode.as_secs_f64() * 1e3,
        }
    }
}

/// Receives each piece of generated text as it is produced: `len` bytes of UTF-8 at `piece`
/// (never a split character), followed by a NUL. `piece` is valid only during the call.
/// Return 0 to continue, non-zero to stop (the call then still succeeds, with the text so
/// far). The callback runs on the calling thread; it must not unwind (C++ exceptions,
/// `longjmp`) through the library, and must not free the session it is generating on.
pub type chatglm_piece_callback =
    Option<unsafe extern "C" fn(piece: *const c_char, len: usize, user_data: *mut c_void) -> c_int>;

/// Creates a session on `model` (its KV cache sized by the model's `n_ctx` and `kv_type`) and
/// stores it in `*session_out` (NULL on failure). The session keeps the model alive. Free it
/// with `chatglm_session_free`.
///
/// Errors: `CHATGLM_ERR_INVALID_ARGUMENT` (NULL arguments), `CHATGLM_ERR_OUT_OF_MEMORY`.
///
/// # Safety
/// `model` is NULL or a live model handle; `session_out` is NULL or points to writable memory
/// for a pointer.
#[no_mangle]
pub unsafe extern "C" fn chatglm_session_new(
    model: *const chatglm_model,
    session_out: *mut *mut chatglm_session,
) -> chatglm_status {
    guard("chatglm_session_new", || {
        if session_out.is_null() {
            return Err(Failure::null("session_out"));
        }
        // SAFETY: checked not NULL; the caller promises it is writable.
        unsafe { write(session_out, std::ptr::null_mut()) };
        // SAFETY: the caller passes NULL or a live handle.
        let model = unsafe { model.as_ref() }.ok_or_else(|| Failure::null("model"))?;
        let session =
            Session::new(Arc::clone(&model.engine), model.session).map_err(Failure::load)?;
        let session = Box::new(chatglm_session {
            inner: Mutex::new(SessionState {
                session,
                last: chatglm_generation_stats::NONE,
            }),
        });
        // SAFETY: checked not NULL above.
        unsafe { write(session_out, Box::into_raw(session)) };
        Ok(())
    })
}

/// Releases a session (its KV cache and history). NULL is ignored. Using the handle after
/// this call, or freeing it while a call on it runs, is undefined behaviour.
///
/// # Safety
/// `session` is NULL or a handle from `chatglm_session_new` that was not freed yet, with no
/// call running on it.
#[no_mangle]
pub unsafe extern "C" fn chatglm_session_free(session: *mut chatglm_session) {
    if session.is_null() {
        return;
    }
    // SAFETY: the caller passes a pointer from `Box::into_raw` in `chatglm_session_new`, once,
    // with no call running on it.
    drop(unsafe { Box::from_raw(session) });
}

/// Locks the session `session` for one call.
///
/// # Safety
/// `session` is NULL or a live session handle that outlives `'a`.
unsafe fn lock<'a>(
    session: *const chatglm_session,
) -> Result<std::sync::MutexGuard<'a, SessionState>, Failure> {
    // SAFETY: the caller passes NULL or a live handle.
    let session = unsafe { session.as_ref() }.ok_or_else(|| Failure::null("session"))?;
    session.inner.try_lock().map_err(|e| match e {
        TryLockError::WouldBlock => Failure::new(
            chatglm_status::CHATGLM_ERR_BUSY,
            "the session is in use (by another thread, or by the callback of a generation \
             running on it)",
        ),
        TryLockError::Poisoned(_) => Failure::new(
            chatglm_status::CHATGLM_ERR_INTERNAL,
            "the session is unusable after an internal error; free it",
        ),
    })
}

/// Forgets the conversation and the cached tokens of `session`.
///
/// # Safety
/// `session` is NULL or a live session handle.
#[no_mangle]
pub unsafe extern "C" fn chatglm_session_reset(session: *mut chatglm_session) -> chatglm_status {
    guard("chatglm_session_reset", || {
        // SAFETY: the caller passes NULL or a live handle.
        let mut state = unsafe { lock(session) }?;
        state.session.reset();
        state.last = chatglm_generation_stats::NONE;
        Ok(())
    })
}

/// Writes the statistics of the last successful generation on `session` to `*stats_out`
/// (`stop_reason` is `CHATGLM_STOP_NONE` before the first).
///
/// # Safety
/// `session` is NULL or a live session handle; `stats_out` is NULL or points to writable
/// memory for a `chatglm_generation_stats`.
#[no_mangle]
pub unsafe extern "C" fn chatglm_session_last_stats(
    session: *const chatglm_session,
    stats_out: *mut chatglm_generation_stats,
) -> chatglm_status {
    guard("chatglm_session_last_stats", || {
        if stats_out.is_null() {
            return Err(Failure::null("stats_out"));
        }
        // SAFETY: the caller passes NULL or a live handle.
        let state = unsafe { lock(session) }?;
        // SAFETY: checked not NULL; the caller promises it is writable.
        unsafe { write(stats_out, state.last) };
        Ok(())
    })
}

/// What a generating call asks for.
enum Request<'a> {
    Chat(&'a str),
    Respond(Vec<ChatMessage>),
    Complete(&'a str),
}

/// The shared body of `chatglm_chat`, `chatglm_respond` and `chatglm_complete`.
///
/// # Safety
/// Pointers as documented on those functions; `request` already read from the caller's.
unsafe fn generate<'a>(
    session: *mut chatglm_session,
    request: impl FnOnce() -> Result<Request<'a>, Failure>,
    options: *const chatglm_generate_options,
    callback: chatglm_piece_callback,
    user_data: *mut c_void,
    reply_out: *mut *mut c_char,
) -> Result<(), Failure> {
    if !reply_out.is_null() {
        // SAFETY: not NULL; the caller promises it is writable.
        unsafe { write(reply_out, std::ptr::null_mut()) };
    }
    // SAFETY: the caller passes NULL or a live handle.
    let mut state = unsafe { lock(session) }?;
    let request = request()?;
    let options = if options.is_null() {
        chatglm_generate_options_default()
    } else {
        // SAFETY: not NULL; the caller promises it points to an options struct.
        unsafe { *options }
    }
    .to_rust()?;

    let mut buf: Vec<u8> = Vec::new();
    let mut on_text = |piece: &str| -> bool {
        let Some(cb) = callback else {
            return true;
        };
        buf.clear();
        buf.extend_from_slice(piece.as_bytes());
        buf.push(0);
        // SAFETY: the callback is the caller's function with the documented signature; `buf`
        // holds `piece.len()` bytes and a NUL, alive during the call.
        unsafe { cb(buf.as_ptr().cast(), piece.len(), user_data) == 0 }
    };
    let session = &mut state.session;
    let generation = match request {
        Request::Chat(message) => session.chat(message, &options, &mut on_text),
        Request::Respond(messages) => session.respond(&messages, &options, &mut on_text),
        Request::Complete(text) => session.complete(text, &options, &mut on_text),
    }
    .map_err(Failure::run)?;
    state.last = chatglm_generation_stats::from_generation(&generation);
    if !reply_out.is_null() {
        // SAFETY: not NULL; the caller promises it is writable.
        unsafe { write(reply_out, new_c_string(&generation.text)) };
    }
    Ok(())
}

/// Replies to the user message `message` after the session's history in the model's chat
/// format, streaming the reply through `callback` (NULL: no streaming) with `user_data`, then
/// adds both to the history. When the conversation no longer fits the context, its oldest
/// rounds are dropped; a failed call leaves the history as it was. With `reply_out` not NULL, the whole reply is stored in `*reply_out`
/// (NULL on failure); free it with `chatglm_string_free`. `options` NULL: the defaults.
///
/// Errors: `CHATGLM_ERR_INVALID_ARGUMENT` (NULL `session` or `message`, invalid UTF-8, bad
/// options), `CHATGLM_ERR_CONTEXT_FULL` (the message alone does not fit), `CHATGLM_ERR_BUSY`.
///
/// # Safety
/// `session` is NULL or a live session handle; `message` is NULL or a NUL-terminated string;
/// `options` is NULL or points to an options struct; `callback` is NULL or a function of the
/// documented signature; `reply_out` is NULL or points to writable memory for a pointer.
#[no_mangle]
pub unsafe extern "C" fn chatglm_chat(
    session: *mut chatglm_session,
    message: *const c_char,
    options: *const chatglm_generate_options,
    callback: chatglm_piece_callback,
    user_data: *mut c_void,
    reply_out: *mut *mut c_char,
) -> chatglm_status {
    guard("chatglm_chat", || {
        // SAFETY: the caller's pointers, as documented.
        unsafe {
            generate(
                session,
                // SAFETY: NULL or a NUL-terminated string that outlives this call.
                || Ok(Request::Chat(utf8_arg(message, "message")?)),
                options,
                callback,
                user_data,
                reply_out,
            )
        }
    })
}

/// Continues `text` as raw text (only the `[gMASK] sop` prefix, no chat format, no history),
/// streaming and returning the continuation as `chatglm_chat` does. The session's KV cache is
/// reused when `text` starts like the previous prompt.
///
/// # Safety
/// As for `chatglm_chat`, with `text` in place of `message`.
#[no_mangle]
pub unsafe extern "C" fn chatglm_complete(
    session: *mut chatglm_session,
    text: *const c_char,
    options: *const chatglm_generate_options,
    callback: chatglm_piece_callback,
    user_data: *mut c_void,
    reply_out: *mut *mut c_char,
) -> chatglm_status {
    guard("chatglm_complete", || {
        // SAFETY: the caller's pointers, as documented.
        unsafe {
            generate(
                session,
                // SAFETY: NULL or a NUL-terminated string that outlives this call.
                || Ok(Request::Complete(utf8_arg(text, "text")?)),
                options,
                callback,
                user_data,
                reply_out,
            )
        }
    })
}

/// Who wrote a message (the values of `chatglm_message.role`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum chatglm_role {
    /// A system prompt (ChatGLM3 only).
    CHATGLM_ROLE_SYSTEM = 0,
    /// The user.
    CHATGLM_ROLE_USER = 1,
    /// The model.
    CHATGLM_ROLE_ASSISTANT = 2,
    /// A tool's result (ChatGLM3 only).
    CHATGLM_ROLE_OBSERVATION = 3,
}

/// One message of a conversation given to `chatglm_respond`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct chatglm_message {
    /// A `chatglm_role` value.
    pub role: i32,
    /// The text, NUL-terminated UTF-8.
    pub content: *const c_char,
}

/// The messages of `messages[..n]`, checked.
///
/// # Safety
/// `messages` is NULL or points to `n` messages whose contents are NULL or NUL-terminated.
unsafe fn read_messages(
    messages: *const chatglm_message,
    n: usize,
) -> Result<Vec<ChatMessage>, Failure> {
    if messages.is_null() {
        return Err(Failure::null("messages"));
    }
    // SAFETY: not NULL; the caller promises `n` messages.
    let messages = unsafe { std::slice::from_raw_parts(messages, n) };
    let mut out = Vec::with_capacity(n);
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role {
            0 => Role::System,
            1 => Role::User,
            2 => Role::Assistant,
            3 => Role::Observation,
            r => {
                return Err(Failure::invalid(format!(
                    "messages[{i}].role {r} is not a chatglm_role"
                )))
            }
        };
        // SAFETY: the caller promises NULL or a NUL-terminated string.
        let content = unsafe { utf8_arg(m.content, &format!("messages[{i}].content")) }?;
        out.push(ChatMessage::new(role, content));
    }
    Ok(out)
}

/// Replaces the session's history with `messages[0..n_messages-1]` and replies to the last
/// message, which must be a user message (ChatGLM2 understands only alternating user and
/// assistant messages; ChatGLM3 also system prompts and observations). Streams and returns
/// the reply as `chatglm_chat` does, after which the history holds the messages and the reply.
/// On failure the history is left as it was.
///
/// # Safety
/// As for `chatglm_chat`; `messages` is NULL or points to `n_messages` messages whose
/// `content` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn chatglm_respond(
    session: *mut chatglm_session,
    messages: *const chatglm_message,
    n_messages: usize,
    options: *const chatglm_generate_options,
    callback: chatglm_piece_callback,
    user_data: *mut c_void,
    reply_out: *mut *mut c_char,
) -> chatglm_status {
    guard("chatglm_respond", || {
        // SAFETY: the caller's pointers, as documented.
        unsafe {
            generate(
                session,
                // SAFETY: as documented on this function.
                || Ok(Request::Respond(read_messages(messages, n_messages)?)),
                options,
                callback,
                user_data,
                reply_out,
            )
        }
    })
}
