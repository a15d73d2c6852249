//! The high-level runtime: an [`Engine`] (model and tokenizer of one GGUF file, read-only,
//! shared) and [`Session`]s (a conversation each: KV cache, history, sampler), generating text
//! streamed through a callback. The CLI and the C ABI are thin layers over this module.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::{
    Block, DecodeBatch, Glm1Layout, KvType, Logits, Model, ModelConfig, RunState, StateOptions,
};
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::{ChatMessage, DecodeMode, Family, Role, StreamDecoder, Tokenizer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Context a session gets when none is asked for (capped by the model's own).
pub const DEFAULT_CONTEXT: usize = 2048;

/// A model file, loaded: the mapped GGUF file, the model viewing its weights in place, and the
/// tokenizer. Read-only after loading; share it between sessions and threads with `Arc`.
#[derive(Debug)]
pub struct Engine {
    path: PathBuf,
    file: Arc<GgufFile>,
    model: Model,
    tokenizer: Tokenizer,
}

impl Engine {
    /// Maps `path` read-only and loads its model and tokenizer. No weight is copied.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(path.as_ref(), |p| GgufFile::open(p))
    }

    /// Reads the whole file at `path` into memory (no map) and loads its model and
    /// tokenizer: for files that may be modified while in use, at the cost of the file's size
    /// in memory.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(path.as_ref(), |p| GgufFile::read(p))
    }

    /// Opens `path` with `how` (mapped or read) and loads its model and tokenizer.
    fn load(
        path: &Path,
        how: impl FnOnce(&Path) -> std::result::Result<GgufFile, crate::gguf::GgufError>,
    ) -> Result<Self> {
        let file = how(path).map_err(|source| Error::File {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_file(path.to_path_buf(), Arc::new(file))
    }

    /// Fails with [`Error::FileChanged`] if the mapped file was truncated, overwritten or
    /// replaced since it was loaded (two `stat` calls; always fine for a file read into
    /// memory). Sessions check it before each generation.
    pub fn check_file(&self) -> Result<()> {
        if self.file.changed() {
            return Err(Error::FileChanged {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Loads the model and tokenizer of a parsed file (`path` is for messages).
    pub fn from_file(path: PathBuf, file: Arc<GgufFile>) -> Result<Self> {
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let model = Model::from_gguf(Arc::clone(&file))?;
        if tokenizer.vocab_size() != model.config().vocab_size {
            return Err(Error::VocabMismatch {
                tokenizer: tokenizer.vocab_size(),
                embedding: model.config().vocab_size,
            });
        }
        Ok(Self {
            path,
            file,
            model,
            tokenizer,
        })
    }

    /// The file this engine was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed GGUF file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

/// How to size a [`Session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// Positions of the KV cache; 0 means [`DEFAULT_CONTEXT`] (capped by the model's).
    pub context: usize,
    /// Element type of the KV cache.
    pub kv_type: KvType,
    /// Tokens per pass over the weights while reading a prompt.
    pub batch: usize,
    /// Threads sharing each matrix product; 0 means one per CPU. Results do not depend on it.
    pub threads: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            context: 0,
            kv_type: KvType::F16,
            batch: crate::model::DEFAULT_BATCH,
            threads: 0,
        }
    }
}

pub use chatglm_kernels::pool::resolve_threads;

/// How to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateOptions {
    /// Most new tokens to generate.
    pub max_new_tokens: usize,
    /// Sampling settings (temperature 0: greedy).
    pub sampler: SamplerConfig,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 512,
            sampler: SamplerConfig::default(),
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end token (eos; for ChatGLM3 also `<|user|>` or `<|observation|>`).
    Eos,
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// The callback asked to stop.
    Cancelled,
}

impl StopReason {
    /// A short lower-case name (`eos`, `max_tokens`, `context_full`, `cancelled`).
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ContextFull => "context_full",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// Where the time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Prompt tokens run through the model (those not already in the cache).
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values were reused from the cache.
    pub reused_tokens: usize,
    /// Time to read the prompt, up to the first token's logits.
    pub prefill: Duration,
    /// Tokens generated after the first.
    pub decode_tokens: usize,
    /// Time of those decode steps.
    pub decode: Duration,
}

impl Timings {
    /// Prompt tokens per second.
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill.as_secs_f64().max(1e-9)
    }

    /// Generated tokens per second (first token excluded: it comes with the prefill).
    pub fn decode_tok_s(&self) -> f64 {
        self.decode_tokens as f64 / self.decode.as_secs_f64().max(1e-9)
    }
}

/// The result of a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The prompt's ids.
    pub prompt_ids: Vec<u32>,
    /// The generated ids, an end token included.
    pub ids: Vec<u32>,
    /// The generated text (end tokens print nothing).
    pub text: String,
    /// Why generation stopped.
    pub stop: StopReason,
    /// Timings.
    pub timings: Timings,
}

/// One conversation with a model: its KV cache (allocated once), the chat history, the
/// tokens of the last generation (whose keys and values the cache holds, so that a follow-up
/// prompt that starts the same way reuses them), the logits and the sampler.
pub struct Session {
    engine: Arc<Engine>,
    state: RunState,
    /// The tokens of the conversation in position order: the prompt, then the generated
    /// ids. The first `state.kv_cache().len()` are in the cache; the last generated one may
    /// not be yet.
    tokens: Vec<u32>,
    /// The logits of the last token run. (vocab)
    logits: Vec<f32>,
    /// Draws the next token from `logits` (reset with each generation's settings).
    sampler: Sampler,
    history: Vec<ChatMessage>,
    /// The generation in progress, between [`Session::begin`] and [`Session::finish`].
    active: Option<Active>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("context", &self.context())
            .field("cached", &self.state.kv_cache().len())
            .field("history", &self.history.len())
            .finish()
    }
}

impl Session {
    /// A new conversation on `engine`, its KV cache allocated for `options.context` positions.
    pub fn new(engine: Arc<Engine>, options: SessionOptions) -> Result<Self> {
        let max = engine.config().context_length;
        let context = match options.context {
            0 => DEFAULT_CONTEXT.min(max),
            c if c > max => return Err(Error::ContextTooLarge { requested: c, max }),
            c => c,
        };
        let batch = options.batch.clamp(1, context);
        let state = engine.model().new_state(StateOptions {
            context,
            batch,
            kv_type: options.kv_type,
            threads: resolve_threads(options.threads),
        })?;
        let logits = vec![0.0; engine.config().vocab_size];
        Ok(Self {
            engine,
            state,
            tokens: Vec::new(),
            logits,
            sampler: Sampler::new(SamplerConfig::default())?,
            history: Vec::new(),
            active: None,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Threads the matrix products run on.
    pub fn threads(&self) -> usize {
        self.state.threads()
    }

    /// Positions of the KV cache.
    pub fn context(&self) -> usize {
        self.state.kv_cache().capacity()
    }

    /// The tokens whose keys and values the cache holds, in position order.
    pub fn cached(&self) -> &[u32] {
        &self.tokens[..self.tokens.len().min(self.state.kv_cache().len())]
    }

    /// The conversation so far (what [`Session::chat`] adds to).
    pub fn history(&self) -> &[ChatMessage] {
        &self.history
    }

    /// Forgets the conversation and the cache.
    pub fn reset(&mut self) {
        self.history.clear();
        self.tokens.clear();
        self.state.kv_cache_mut().clear();
    }

    /// Replies to `message` after the history in the model's chat format, streaming the
    /// reply's text through `on_text` (return `false` to stop), then adds both to the history.
    /// When the conversation no longer fits, the oldest rounds are dropped (the prompt always
    /// starts with `[gMASK] sop`); a message that does not fit alone is an error. On error the
    /// history is left as it was.
    pub fn chat(
        &mut self,
        message: &str,
        options: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.chat_after(self.history.clone(), message, options, on_text)
    }

    /// Replaces the history with `messages[..n-1]` and replies to the last one, which must be
    /// a user message (as `chatglm run --messages` does). On error the history is left as it
    /// was.
    pub fn respond(
        &mut self,
        messages: &[ChatMessage],
        options: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let (last, earlier) = messages.split_last().ok_or(Error::EmptyConversation)?;
        if last.role != Role::User {
            return Err(Error::LastMessageNotUser);
        }
        self.chat_after(earlier.to_vec(), &last.content, options, on_text)
    }

    /// Replaces the history (checked: the model's chat format must be able to encode it).
    pub fn set_history(&mut self, messages: Vec<ChatMessage>) -> Result<()> {
        self.engine.tokenizer().encode_chat(&messages, "")?;
        self.history = messages;
        Ok(())
    }

    /// [`Session::chat`] after `history`, which becomes the session's history (with the new
    /// round) only when the reply succeeds.
    fn chat_after(
        &mut self,
        mut history: Vec<ChatMessage>,
        message: &str,
        options: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.engine.check_file()?;
        let prompt = self.fit_chat_prompt(&mut history, message, options)?;
        let generation = self.generate(&prompt, options, on_text)?;
        history.push(ChatMessage::new(Role::User, message));
        history.push(ChatMessage::new(
            Role::Assistant,
            reply_content(&generation.text),
        ));
        self.history = history;
        Ok(generation)
    }

    /// Continues `text` with only the `[gMASK] sop` prefix (no chat format, no history).
    pub fn complete(
        &mut self,
        text: &str,
        options: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.engine.check_file()?;
        let prompt = self.engine.tokenizer().encode_with_prefix(text);
        self.generate(&prompt, options, on_text)
    }

    /// The chat prompt for `message` after `history`, dropping the oldest rounds of `history`
    /// until the prompt leaves room for the reply: `max_new_tokens`, but at most half the
    /// context.
    fn fit_chat_prompt(
        &self,
        history: &mut Vec<ChatMessage>,
        message: &str,
        options: &GenerateOptions,
    ) -> Result<Vec<u32>> {
        let tok = self.engine.tokenizer();
        let reply = options.max_new_tokens.clamp(1, (self.context() / 2).max(1));
        let room = self.context().saturating_sub(reply);
        loop {
            let prompt = tok.encode_chat(history, message)?;
            if prompt.len() <= room || history.is_empty() {
                return Ok(prompt);
            }
            drop_oldest_round(history, tok.family());
        }
    }

    /// Generates after the prompt `prompt` (ids, the prefix included), reusing the cached
    /// positions the prompt starts with, and streams the text through `on_text` (return
    /// `false` to stop). The text never splits a UTF-8 character; end tokens print nothing.
    ///
    /// This is [`Session::begin`], [`Session::prefill`] until the prompt is read, then
    /// [`Session::next_piece`] and [`Session::advance`] until a stop, and
    /// [`Session::finish`]: callers that interleave several sessions (a server stepping them
    /// together with [`Session::decode_batch`]) call those steps themselves.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.begin(prompt, options)?;
        while !self.prefill(usize::MAX)? {}
        let stop = loop {
            match self.next_piece()? {
                Piece::Stop(reason) => break reason,
                Piece::Text(piece) => {
                    if !piece.is_empty() && !on_text(&piece) {
                        break StopReason::Cancelled;
                    }
                }
            }
            if let Some(reason) = self.advance()? {
                break reason;
            }
        };
        self.finish(stop, on_text)
    }

    /// Starts a generation after `prompt` (checked as [`Session::generate`] does): resets the
    /// sampler to `options` and finds the cached positions the prompt starts with. Nothing
    /// runs yet: [`Session::prefill`] reads the rest of the prompt. A generation in progress
    /// is abandoned.
    pub fn begin(&mut self, prompt: &[u32], options: &GenerateOptions) -> Result<()> {
        self.active = None;
        if options.max_new_tokens == 0 {
            return Err(Error::NoTokensToGenerate);
        }
        self.engine.check_file()?;
        if prompt.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        let context = self.context();
        if prompt.len() >= context {
            return Err(Error::PromptTooLong {
                tokens: prompt.len(),
                context,
            });
        }
        self.sampler.reset(options.sampler)?;
        let model = self.engine.model();

        // Reuse the cached positions the prompt starts with; at least the last prompt token
        // runs, for its logits.
        self.tokens.truncate(self.state.kv_cache().len());
        let reused = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        let reused = reusable_prefix(model, &self.state, prompt, reused);
        self.tokens.truncate(reused);
        self.tokens.extend_from_slice(&prompt[reused..]);
        // The cache holds exactly the positions of `tokens` read so far.
        self.state.kv_cache_mut().truncate(reused);
        self.active = Some(Active {
            prompt_len: prompt.len(),
            max_new_tokens: options.max_new_tokens,
            read: reused,
            text: String::new(),
            decoder: StreamDecoder::new(DecodeMode::SkipSpecial),
            timings: Timings {
                prompt_tokens: prompt.len() - reused,
                reused_tokens: reused,
                ..Timings::default()
            },
            prefill_time: Duration::ZERO,
            decode_start: None,
        });
        Ok(())
    }

    /// Reads up to `max_tokens` more tokens of the prompt of the generation begun (a
    /// ChatGLM-6B prompt, whose context attends to all of itself, is read in one call);
    /// returns whether the prompt is read (the logits of its last token are then ready for
    /// [`Session::next_piece`]). The results do not depend on how the prompt is cut.
    pub fn prefill(&mut self, max_tokens: usize) -> Result<bool> {
        let active = self.active.as_mut().ok_or(Error::NotGenerating)?;
        let end = active.prompt_len;
        if active.read == end {
            return Ok(true);
        }
        let engine = Arc::clone(&self.engine);
        let model = engine.model();
        // Whole batches of the state, so that the cut does not change the passes.
        let batch = self.state.batch();
        let take = match model.config().block {
            Block::Glm2 => (max_tokens.max(1).div_ceil(batch))
                .saturating_mul(batch)
                .min(end - active.read),
            Block::Glm1(_) => end - active.read,
        };
        let start = Instant::now();
        let part = &self.tokens[active.read..active.read + take];
        let last = active.read + take == end;
        if last {
            model.forward_into(
                &mut self.state,
                part,
                active.read,
                Logits::Last,
                &mut self.logits,
            )?;
        } else {
            model.forward_into(&mut self.state, part, active.read, Logits::None, &mut [])?;
        }
        active.read += take;
        active.prefill_time += start.elapsed();
        if last {
            active.timings.prefill = active.prefill_time;
        }
        Ok(last)
    }

    /// Draws the next token from the logits (of the prompt's last token, or of the last
    /// [`Session::advance`]) and returns its visible text (a reply starts at its first
    /// visible character; the text may be empty), or [`Piece::Stop`] for an end token.
    pub fn next_piece(&mut self) -> Result<Piece> {
        let active = self.active.as_mut().ok_or(Error::NotGenerating)?;
        if active.read < active.prompt_len {
            return Err(Error::NotGenerating);
        }
        active.decode_start.get_or_insert_with(Instant::now);
        let tok = self.engine.tokenizer();
        // The penalty sees the prompt and every id generated so far.
        let next = self.sampler.sample(&self.logits, &self.tokens)?;
        self.tokens.push(next);
        if tok.stop_ids().contains(&next) {
            return Ok(Piece::Stop(StopReason::Eos));
        }
        let piece = active.decoder.push(tok, next)?;
        Ok(Piece::Text(active.visible(&piece)))
    }

    /// The reason the generation stops after the token [`Session::next_piece`] drew
    /// (`max_new_tokens` reached, or the context full), or `None` when it goes on.
    pub fn limit(&self) -> Result<Option<StopReason>> {
        let active = self.active.as_ref().ok_or(Error::NotGenerating)?;
        if self.tokens.len() - active.prompt_len >= active.max_new_tokens {
            return Ok(Some(StopReason::MaxTokens));
        }
        if self.tokens.len() > self.context() {
            return Ok(Some(StopReason::ContextFull));
        }
        Ok(None)
    }

    /// Unless [`Session::limit`] stops the generation (the reason is returned), runs the
    /// token [`Session::next_piece`] drew, for the logits of the next one.
    pub fn advance(&mut self) -> Result<Option<StopReason>> {
        if let Some(reason) = self.limit()? {
            return Ok(Some(reason));
        }
        let (token, pos) = self.last_token();
        self.engine.model().forward_into(
            &mut self.state,
            &[token],
            pos,
            Logits::Last,
            &mut self.logits,
        )?;
        self.count_step();
        Ok(None)
    }

    /// [`Session::advance`] for several sessions at once, in one pass over the weights
    /// (`batch` from [`Session::new_decode_batch`]): each session must have drawn a token
    /// with [`Session::next_piece`] and not be stopped by [`Session::limit`]. Each gets the
    /// logits it would get alone, bit for bit.
    pub fn decode_batch(batch: &mut DecodeBatch, sessions: &mut [&mut Session]) -> Result<()> {
        let Some(first) = sessions.first() else {
            return Ok(());
        };
        let engine = Arc::clone(&first.engine);
        let mut tokens = Vec::with_capacity(sessions.len());
        let mut positions = Vec::with_capacity(sessions.len());
        for s in sessions.iter() {
            if !Arc::ptr_eq(&s.engine, &engine) {
                return Err(Error::OtherEngine);
            }
            if s.active.as_ref().is_none_or(|a| a.decode_start.is_none()) {
                return Err(Error::NotGenerating);
            }
            let (token, pos) = s.last_token();
            tokens.push(token);
            positions.push(pos);
        }
        let vocab = engine.config().vocab_size;
        let mut logits = vec![0.0; sessions.len() * vocab];
        let mut states: Vec<&mut RunState> = sessions.iter_mut().map(|s| &mut s.state).collect();
        engine
            .model()
            .decode_batch(batch, &mut states, &tokens, &positions, &mut logits)?;
        for (s, row) in sessions.iter_mut().zip(logits.chunks_exact(vocab)) {
            s.logits.copy_from_slice(row);
            s.count_step();
        }
        Ok(())
    }

    /// Buffers for [`Session::decode_batch`] of up to `max_sessions` sessions of `engine`, on
    /// `threads` threads (0: one per CPU).
    pub fn new_decode_batch(
        engine: &Engine,
        max_sessions: usize,
        threads: usize,
    ) -> Result<DecodeBatch> {
        Ok(engine
            .model()
            .new_decode_batch(max_sessions, resolve_threads(threads))?)
    }

    /// Ends the generation begun with `stop` as its reason: the decoder's last bytes go to
    /// `on_text` (unless cancelled) and the result is returned.
    pub fn finish(
        &mut self,
        stop: StopReason,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let mut active = self.active.take().ok_or(Error::NotGenerating)?;
        if let Some(start) = active.decode_start {
            active.timings.decode = start.elapsed();
        }
        let rest = active.decoder.finish();
        if stop != StopReason::Cancelled {
            let rest = active.visible(&rest);
            if !rest.is_empty() {
                on_text(&rest);
            }
        }
        let prompt_len = active.prompt_len;
        let generated = self.tokens.get(prompt_len..).unwrap_or_default().to_vec();
        Ok(Generation {
            prompt_ids: self.tokens[..prompt_len.min(self.tokens.len())].to_vec(),
            ids: generated,
            text: active.text,
            stop,
            timings: active.timings,
        })
    }

    /// The last token drawn and its position.
    fn last_token(&self) -> (u32, usize) {
        let pos = self.tokens.len() - 1;
        (self.tokens[pos], pos)
    }

    /// Counts one decode step.
    fn count_step(&mut self) {
        if let Some(a) = self.active.as_mut() {
            a.timings.decode_tokens += 1;
        }
    }
}

/// What [`Session::next_piece`] drew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Visible text (possibly empty: a partial UTF-8 character, a leading space, a special
    /// token).
    Text(String),
    /// The generation stops (an end token).
    Stop(StopReason),
}

/// A generation in progress on a session.
struct Active {
    /// Tokens of the prompt (the first of `Session::tokens`).
    prompt_len: usize,
    /// Most tokens to generate.
    max_new_tokens: usize,
    /// Prompt tokens whose keys and values are in the cache.
    read: usize,
    /// The visible text so far.
    text: String,
    decoder: StreamDecoder,
    timings: Timings,
    /// Time spent reading the prompt so far.
    prefill_time: Duration,
    /// When the first token was drawn.
    decode_start: Option<Instant>,
}

impl Active {
    /// The part of `piece` that is shown, added to the text: a reply starts at its first
    /// visible character.
    fn visible(&mut self, piece: &str) -> String {
        let piece = if self.text.is_empty() {
            piece.trim_start()
        } else {
            piece
        };
        self.text.push_str(piece);
        piece.to_owned()
    }
}

/// How many of the `shared` cached positions the prompt starts with stay valid. For ChatGLM2/3
/// all of them. A ChatGLM-6B (v1) context attends to all of itself, and each prompt ends its
/// context with `[gMASK] <sop>`, so a prompt that changes the context (a new chat round puts
/// the old reply and the new question before the mask) runs again from position 0; only a
/// prompt with the cached context and layout (the same prompt again, or one that continues
/// after its `<sop>`) reuses the cache.
fn reusable_prefix(model: &Model, state: &RunState, prompt: &[u32], shared: usize) -> usize {
    match model.config().block {
        Block::Glm2 => shared,
        Block::Glm1(params) => match (state.glm1_layout(), Glm1Layout::of(&params, prompt)) {
            (Some(cached), Ok(new)) if cached == new && shared >= new.context_length => shared,
            _ => 0,
        },
    }
}

/// The content a reply adds to the history: the generated text with surrounding whitespace
/// trimmed, for both families (no metadata line is split off).
fn reply_content(text: &str) -> String {
    text.trim().to_owned()
}

/// Drops the oldest round of `history`: ChatGLM3 keeps leading system messages and drops the
/// first other message with the replies that follow it; ChatGLM-6B and ChatGLM2 drop the first
/// user/assistant pair.
fn drop_oldest_round(history: &mut Vec<ChatMessage>, family: Family) {
    let first = match family {
        Family::ChatGlm3 | Family::Glm4 => history.iter().position(|m| m.role != Role::System),
        Family::ChatGlm1 | Family::ChatGlm2 | Family::CodeGeeX2 => Some(0),
    };
    let Some(first) = first else {
        history.clear();
        return;
    };
    let end = history[first + 1..]
        .iter()
        .position(|m| m.role == Role::User)
        .map_or(history.len(), |i| first + 1 + i);
    history.drain(first..end);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(roles: &[Role]) -> Vec<ChatMessage> {
        roles
            .iter()
            .enumerate()
            .map(|(i, &r)| ChatMessage::new(r, i.to_string()))
            .collect()
    }

    #[test]
    fn dropping_rounds_keeps_system_messages() {
        use Role::*;
        let mut h = msgs(&[System, User, Assistant, User, Assistant]);
        drop_oldest_round(&mut h, Family::ChatGlm3);
        let contents: Vec<_> = h.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["0", "3", "4"]);
        let mut h = msgs(&[User, Assistant, User, Assistant]);
        drop_oldest_round(&mut h, Family::ChatGlm2);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].content, "2");
        let mut h = msgs(&[System]);
        drop_oldest_round(&mut h, Family::ChatGlm3);
        assert!(h.is_empty());
    }
}
