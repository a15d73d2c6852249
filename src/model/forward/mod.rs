//! The forward pass: [`RunState`] (every buffer, allocated once) and [`Model::forward`],
//! which checks the call and hands it to the pass of the model's [`Block`]: `glm2.rs`
//! (ChatGLM2/3) or `glm1.rs` (ChatGLM-6B), each written to be read next to its reference.
//! The output layer is shared.

mod batch;
mod glm1;
mod glm2;

pub use batch::DecodeBatch;
pub use glm1::Glm1Layout;

use super::kv_cache::{zeroed, KvCache, KvType};
use super::weights::Matrix;
use super::{Block, Model, ModelConfig, ModelError};
use chatglm_kernels::matmul::{dequantize_row, matmul_par};
use chatglm_kernels::pool::{Pool, MAX_THREADS};
use std::sync::Arc;

/// Which positions of a [`Model::forward`] call need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation). The returned slice is `[vocab]`.
    Last,
    /// Every token's (scoring, tests). The returned slice is `[tokens, vocab]`; the call may
    /// then not have more tokens than the state's batch.
    All,
    /// None: only the keys and values are wanted (a prompt read in parts, all but the last).
    /// The returned slice is empty.
    None,
}

/// Tokens per pass over the weights while reading a prompt, unless asked otherwise.
pub const DEFAULT_BATCH: usize = 32;

/// How to size a [`RunState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateOptions {
    /// Positions the KV cache holds (at most the model's `context_length`).
    pub context: usize,
    /// Tokens processed together in one pass over the weights (prefill). Longer inputs are
    /// split into batches of this size (ChatGLM-6B: inside each layer, so that the whole
    /// prompt's keys are cached before it attends). 1..=context.
    pub batch: usize,
    /// Element type of the KV cache.
    pub kv_type: KvType,
    /// Threads that share each matrix product and the attention heads (the calling thread
    /// included), 1..=256. Results do not depend on it.
    pub threads: usize,
}

impl StateOptions {
    /// `context` positions, batches of up to 32 tokens, an f16 cache, one thread per CPU.
    pub fn new(context: usize) -> Self {
        Self {
            context,
            batch: DEFAULT_BATCH.min(context.max(1)),
            kv_type: KvType::F16,
            threads: chatglm_kernels::pool::resolve_threads(0),
        }
    }
}

/// Every activation buffer of the forward pass plus the KV cache: one per session.
/// `B` is the batch size, `ctx` the context.
#[derive(Debug, Clone)]
pub struct RunState {
    config: ModelConfig,
    batch: usize,
    /// Residual stream. (B, hidden)
    x: Vec<f32>,
    /// Normalized input of a sub-layer. (B, hidden)
    xb: Vec<f32>,
    /// Output of a projection back to the residual width. (B, hidden)
    xb2: Vec<f32>,
    /// Fused projection output, Q | K | V per row. (B, (heads + 2 groups) * head_dim)
    qkv: Vec<f32>,
    /// Attention output, heads side by side. (B, heads * head_dim)
    att_out: Vec<f32>,
    /// Attention scores of one query row. (heads, ctx)
    att: Vec<f32>,
    /// RoPE rotation of each position of the batch. (B, head_dim / 4) each; v1: of each
    /// position of the call, the `position` then the `block_position` rotation. (ctx,
    /// head_dim / 2) each
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    /// Fused gate | up projection output. (B, 2 * ffn); v1 the up projection. (B, ffn)
    ffn: Vec<f32>,
    /// `silu(gate) * up`. (B, ffn)
    ffn_act: Vec<f32>,
    /// Final-RMSNorm output of the rows that got logits. (B, hidden)
    hidden: Vec<f32>,
    /// Logits. (B, vocab)
    logits: Vec<f32>,
    /// v1 only (empty otherwise): the residual stream of every token of the call, which the
    /// pass runs layer by layer so that the context attends to all of itself. (ctx, hidden)
    all_x: Vec<f32>,
    /// v1 only: the rotated queries of every token of the call. (ctx, heads * head_dim)
    all_q: Vec<f32>,
    /// v1 only: the context and mask position of the cached sequence, once known.
    layout: Option<Glm1Layout>,
    /// Rows of `hidden` filled by the last call.
    out_rows: usize,
    /// Rows of `logits` filled by the last call ([`Model::forward_into`] fills none).
    logit_rows: usize,
    /// Keys and values. (layers, ctx, groups * head_dim) each
    cache: KvCache,
    /// The threads of the products (shared by clones of this state).
    pool: Arc<Pool>,
}

impl RunState {
    /// Allocates every buffer for `config` (use [`Model::new_state`]). The buffers are
    /// zeroed lazily by the operating system, so a large context costs memory only for the
    /// positions used; a state larger than the machine's physical memory is refused before
    /// anything is allocated ([`ModelError::StateTooLarge`]).
    pub fn new(config: &ModelConfig, options: StateOptions) -> Result<Self, ModelError> {
        check_options(config, &options)?;
        let StateOptions {
            context,
            batch,
            kv_type,
            threads,
        } = options;
        let lens = activation_lens(config, batch, context)?;
        let kv_bytes = KvCache::bytes_for(
            kv_type,
            config.num_layers,
            context,
            config.num_kv_groups,
            config.head_dim,
        )
        .ok_or(ModelError::Overflow("kv cache size"))?;
        let bytes = lens
            .iter()
            .try_fold(kv_bytes, |acc, &n| acc.checked_add(n.checked_mul(4)?))
            .ok_or(ModelError::Overflow("run state size"))?;
        if let Some(limit) = physical_memory() {
            if bytes > limit {
                return Err(ModelError::StateTooLarge { bytes, limit });
            }
        }
        let [x, xb, xb2, qkv, att_out, att, rope_cos, rope_sin, ffn, ffn_act, hidden, logits, all_x, all_q] =
            lens.map(|len| zeroed(len, 0.0f32));
        Ok(Self {
            config: config.clone(),
            batch,
            x: x?,
            xb: xb?,
            xb2: xb2?,
            qkv: qkv?,
            att_out: att_out?,
            att: att?,
            rope_cos: rope_cos?,
            rope_sin: rope_sin?,
            ffn: ffn?,
            ffn_act: ffn_act?,
            hidden: hidden?,
            logits: logits?,
            all_x: all_x?,
            all_q: all_q?,
            layout: None,
            out_rows: 0,
            logit_rows: 0,
            cache: KvCache::new(
                kv_type,
                config.num_layers,
                context,
                config.num_kv_groups,
                config.head_dim,
            )?,
            pool: Arc::new(
                Pool::new(threads).map_err(|source| ModelError::Threads { threads, source })?,
            ),
        })
    }

    /// Number of threads the products run on.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The KV cache.
    pub fn kv_cache(&self) -> &KvCache {
        &self.cache
    }

    /// The KV cache, to rewind it or load a P-Tuning prefix.
    pub fn kv_cache_mut(&mut self) -> &mut KvCache {
        &mut self.cache
    }

    /// Batch size (tokens per pass over the weights).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Logits of the last call, `(rows, vocab)`: one row for [`Logits::Last`]; none after
    /// [`Model::forward_into`] (they went to the caller's buffer).
    pub fn logits(&self) -> &[f32] {
        &self.logits[..self.logit_rows * self.config.vocab_size]
    }

    /// Final-RMSNorm hidden states of the rows that got logits in the last call,
    /// `(rows, hidden)`: the input of the output layer.
    pub fn hidden(&self) -> &[f32] {
        &self.hidden[..self.out_rows * self.config.hidden_size]
    }
}

/// The ranges of a state's options: threads in `1..=MAX_THREADS`, context in
/// `1..=context_length`, batch in `1..=context`.
fn check_options(config: &ModelConfig, options: &StateOptions) -> Result<(), ModelError> {
    config.validate()?;
    let checks = [
        ("threads", options.threads, MAX_THREADS),
        ("context", options.context, config.context_length),
        ("batch", options.batch, options.context),
    ];
    for (what, value, max) in checks {
        if value == 0 || value > max {
            return Err(ModelError::StateOption { what, value, max });
        }
    }
    Ok(())
}

/// Lengths (f32 elements) of a state's activation buffers, in the order of [`RunState`]'s
/// fields: x, xb, xb2, qkv, att_out, att, rope_cos, rope_sin, ffn, ffn_act, hidden, logits,
/// all_x, all_q.
fn activation_lens(
    config: &ModelConfig,
    batch: usize,
    context: usize,
) -> Result<[usize; 14], ModelError> {
    let qkv = config.qkv_dim().ok_or(ModelError::Overflow("qkv rows"))?;
    let of = |count: usize, width: Option<usize>| {
        width
            .and_then(|w| count.checked_mul(w))
            .ok_or(ModelError::Overflow("batch buffer"))
    };
    let rows = |width: Option<usize>| of(batch, width);
    let (h, ffn) = (Some(config.hidden_size), config.ffn_hidden_size);
    let v1 = matches!(config.block, Block::Glm1(_));
    // v1 rotates both halves of each head (two tables per position) for the whole call.
    let (rope_rows, rope) = match v1 {
        false => (batch, Some(config.rope_dims() / 2)),
        true => (context, Some(config.rope_dims())),
    };
    let whole = |width: Option<usize>| of(if v1 { context } else { 0 }, width);
    Ok([
        rows(h)?,
        rows(h)?,
        rows(h)?,
        rows(Some(qkv))?,
        rows(Some(config.q_dim()))?,
        config
            .num_heads
            .checked_mul(context)
            .ok_or(ModelError::Overflow("attention scores"))?,
        of(rope_rows, rope)?,
        of(rope_rows, rope)?,
        rows(config.ffn_up_rows_checked())?,
        rows(Some(ffn))?,
        rows(h)?,
        rows(Some(config.vocab_size))?,
        whole(h)?,
        whole(Some(config.q_dim()))?,
    ])
}

/// Total physical memory in bytes (`MemTotal` of `/proc/meminfo`), or `None` where it cannot
/// be read (other systems: no limit is checked there).
fn physical_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

impl Model {
    /// Runs `tokens` at positions `start_pos..start_pos + tokens.len()`, attending to the
    /// cached positions before them, and returns the logits asked for (`[vocab]` for
    /// [`Logits::Last`], `[tokens, vocab]` for [`Logits::All`]), kept in the state.
    ///
    /// A prompt runs as batches of up to `state.batch()` tokens (matrix-matrix products); a
    /// decode step is one token. `start_pos` may be below the cached length to rewind: the
    /// positions from `start_pos` on are overwritten. The RoPE position of a token is its
    /// index in the cache minus the length of a P-Tuning prefix, if one is loaded
    /// ([`KvCache::load_prefix`]): the Hugging Face code numbers the real tokens from 0 and
    /// does not rotate the virtual ones.
    ///
    /// A ChatGLM-6B (v1) model takes its 2-D positions and its bidirectional context from
    /// the tokens ([`Glm1Layout`]): a prompt runs from position 0 in one call and holds
    /// `[gMASK] <sop>` ([`ModelError::Glm1NoToken`] otherwise); later calls continue (or
    /// rewind) at or after its `<sop>` ([`ModelError::Glm1Context`] before it).
    pub fn forward<'s>(
        &self,
        st: &'s mut RunState,
        tokens: &[u32],
        start_pos: usize,
        want: Logits,
    ) -> Result<&'s [f32], ModelError> {
        self.forward_in_state(st, tokens, start_pos, want, None)
    }

    /// [`Model::forward`] that writes the logits into `logits`, a buffer the caller owns
    /// (`vocab` values for [`Logits::Last`], `tokens * vocab` for [`Logits::All`]), so a
    /// generation loop reads them where they were written.
    pub fn forward_into(
        &self,
        st: &mut RunState,
        tokens: &[u32],
        start_pos: usize,
        want: Logits,
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        let rows = match want {
            Logits::Last => 1,
            Logits::All => tokens.len(),
            Logits::None => 0,
        };
        let expected = rows
            .checked_mul(self.config().vocab_size)
            .ok_or(ModelError::Overflow("logits"))?;
        if logits.len() != expected {
            return Err(ModelError::BufferSize {
                what: "logits",
                expected,
                got: logits.len(),
            });
        }
        self.run(st, tokens, start_pos, want, logits, None)
            .map(|_| ())
    }

    /// [`Model::forward`] that also records the residual stream at the last token into
    /// `residuals`, `(layers + 1, hidden)`: row 0 is the embedding, row `i` the output of
    /// layer `i` (before the final RMSNorm). For tests and debugging; the rows of the last
    /// batch of the call are the ones recorded.
    pub fn forward_traced<'s>(
        &self,
        st: &'s mut RunState,
        tokens: &[u32],
        start_pos: usize,
        want: Logits,
        residuals: &mut Vec<f32>,
    ) -> Result<&'s [f32], ModelError> {
        let cfg = self.config();
        let len = cfg
            .num_layers
            .checked_add(1)
            .and_then(|n| n.checked_mul(cfg.hidden_size))
            .ok_or(ModelError::Overflow("residual trace"))?;
        residuals.clear();
        residuals.resize(len, 0.0);
        self.forward_in_state(st, tokens, start_pos, want, Some(residuals))
    }

    /// [`Model::run`] into the state's own logits buffer.
    fn forward_in_state<'s>(
        &self,
        st: &'s mut RunState,
        tokens: &[u32],
        start_pos: usize,
        want: Logits,
        trace: Option<&mut [f32]>,
    ) -> Result<&'s [f32], ModelError> {
        let mut logits = std::mem::take(&mut st.logits);
        let done = self.run(st, tokens, start_pos, want, &mut logits, trace);
        st.logits = logits;
        let rows = done?;
        st.logit_rows = rows;
        Ok(&st.logits[..rows * self.config().vocab_size])
    }

    /// The forward pass behind [`Model::forward`]: checks the call, runs the batches, writes
    /// the logits of the rows asked for into `logits` (long enough for them) and returns the
    /// number of rows.
    fn run(
        &self,
        st: &mut RunState,
        tokens: &[u32],
        start_pos: usize,
        want: Logits,
        logits: &mut [f32],
        trace: Option<&mut [f32]>,
    ) -> Result<usize, ModelError> {
        self.check_call(st, tokens, start_pos, want)?;
        st.out_rows = 0;
        st.logit_rows = 0;
        let rows = match self.config().block {
            Block::Glm2 => {
                st.cache.truncate(start_pos);
                self.run_glm2(st, tokens, start_pos, want, trace)?
            }
            Block::Glm1(p) => self.run_glm1(st, &p, tokens, start_pos, want, trace)?,
        };
        // The output layer, only on the rows that need logits (their final-norm hidden states
        // are in `st.hidden`).
        let (h, v) = (self.config().hidden_size, self.config().vocab_size);
        self.product(
            &st.pool,
            &self.weights.output,
            &st.hidden[..rows * h],
            rows,
            &mut logits[..rows * v],
        )?;
        st.out_rows = rows;
        Ok(rows)
    }

    /// The errors of a [`Model::forward`] call that can be told before it runs.
    fn check_call(
        &self,
        st: &RunState,
        tokens: &[u32],
        start_pos: usize,
        want: Logits,
    ) -> Result<(), ModelError> {
        let cfg = self.config();
        if st.config != *cfg {
            return Err(ModelError::StateMismatch);
        }
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        if let Some((index, &token)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= cfg.vocab_size)
        {
            return Err(ModelError::TokenOutOfRange {
                index,
                token,
                vocab: cfg.vocab_size,
            });
        }
        if start_pos > st.cache.len() {
            return Err(ModelError::PositionGap {
                start_pos,
                cached: st.cache.len(),
            });
        }
        let end = start_pos
            .checked_add(tokens.len())
            .ok_or(ModelError::Overflow("positions"))?;
        if end > st.cache.capacity() {
            return Err(ModelError::ContextFull {
                needed: end,
                capacity: st.cache.capacity(),
            });
        }
        if want == Logits::All && tokens.len() > st.batch {
            return Err(ModelError::BatchTooSmall {
                tokens: tokens.len(),
                batch: st.batch,
            });
        }

        Ok(())
    }

    /// `x[i] = token_embd[tokens[i]]` (`x` has room for the tokens).
    fn embed(&self, tokens: &[u32], x: &mut [f32]) -> Result<(), ModelError> {
        let w = &self.weights;
        let embd = w.token_embd.view(w.bytes())?;
        let h = self.config().hidden_size;
        for (&t, row) in tokens.iter().zip(x.chunks_exact_mut(h)) {
            dequantize_row(&embd, t as usize, row).map_err(|source| ModelError::Kernel {
                tensor: w.token_embd.name.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// `y = x w^T` for `n` rows through the kernels on the threads of `pool`, naming the
    /// tensor on error.
    fn product(
        &self,
        pool: &Pool,
        w: &Matrix,
        x: &[f32],
        n: usize,
        y: &mut [f32],
    ) -> Result<(), ModelError> {
        let view = w.view(self.weights.bytes())?;
        matmul_par(pool, &view, x, n, y).map_err(|source| ModelError::Kernel {
            tensor: w.name.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RopeScaling;

    /// A small network (2 layers, 2 groups of 128) that claims a context of 2^32 - 1.
    fn config() -> ModelConfig {
        ModelConfig {
            vocab_size: 64,
            hidden_size: 64,
            num_layers: 2,
            num_heads: 2,
            num_kv_groups: 2,
            head_dim: 128,
            ffn_hidden_size: 64,
            context_length: u32::MAX as usize,
            rms_eps: 1e-5,
            rope_base: 10000.0,
            rope_scaling: RopeScaling::None,
            block: crate::model::Block::Glm2,
        }
    }

    fn options(context: usize, kv_type: KvType) -> StateOptions {
        StateOptions {
            context,
            batch: 1,
            kv_type,
            threads: 1,
        }
    }

    /// Resident memory of this process in bytes (`VmRSS`).
    fn resident() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let kib: usize = line[6..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kib * 1024
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn model_state_larger_than_memory_is_refused_before_allocating() {
        let limit = physical_memory().unwrap();
        // 2^32 - 1 positions of 2 layers x 256 f16 keys and values: 4 TiB.
        let context = config().context_length;
        let err = RunState::new(&config(), options(context, KvType::F16)).unwrap_err();
        match err {
            ModelError::StateTooLarge { bytes, limit: l } => {
                assert_eq!(l, limit);
                assert!(bytes > limit && bytes >= 4 * 1024usize.pow(4), "{bytes}");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("bytes"), "{err}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn model_state_for_a_large_context_touches_no_memory() {
        // About 1 GiB of f32 keys and values (2 layers x 256 x 4 bytes x 2 per position), or
        // an eighth of the machine if it is small.
        let per_position = 2 * 256 * 4 * 2;
        let context = (1usize << 30).min(physical_memory().unwrap() / 8) / per_position;
        let before = resident();
        let st = RunState::new(&config(), options(context, KvType::F32)).unwrap();
        let kv = st.kv_cache().bytes();
        assert!(kv >= context * per_position);
        // Zero-filling would have made the whole cache resident; a quarter leaves room for
        // what other tests allocate meanwhile.
        let grown = resident().saturating_sub(before);
        assert!(grown < kv / 4, "{grown} of {kv} bytes resident");
        let st16 = RunState::new(&config(), options(context, KvType::F16)).unwrap();
        assert!(resident().saturating_sub(before) < (kv + st16.kv_cache().bytes()) / 4);
    }
}
