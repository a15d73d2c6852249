//! The forward pass: [`RunState`] (every buffer, allocated once) and [`Model::forward`].
//!
//! Per layer, pre-norm (THUDM `modeling_chatglm.py`, `GLMBlock.forward`):
//! `x += attn_output(attention(rope(qkv(rmsnorm(x)))))`, then
//! `x += ffn_down(silu(gate) * up)` with `[gate | up] = ffn_up(rmsnorm(x))`; finally
//! `logits = output(rmsnorm(x))`.

use super::kv_cache::{zeroed, KvCache, KvType};
use super::ops::{rmsnorm, rope, rope_table, silu, softmax};
use super::weights::Matrix;
use super::{Model, ModelConfig, ModelError};
use chatglm_kernels::matmul::{dequantize_row, matmul_par};
use chatglm_kernels::pool::{share, Pool, MAX_THREADS};
use std::sync::{Arc, Mutex};

/// Which positions of a [`Model::forward`] call need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation). The returned slice is `[vocab]`.
    Last,
    /// Every token's (scoring, tests). The returned slice is `[tokens, vocab]`; the call may
    /// then not have more tokens than the state's batch.
    All,
}

/// How to size a [`RunState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateOptions {
    /// Positions the KV cache holds (at most the model's `context_length`).
    pub context: usize,
    /// Tokens processed together in one pass over the weights (prefill). Longer inputs are
    /// split into batches of this size. 1..=context.
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
            batch: 32.min(context.max(1)),
            kv_type: KvType::F16,
            threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_THREADS),
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
    /// RoPE rotation of one position. (head_dim / 4) each
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    /// Fused gate | up projection output. (B, 2 * ffn)
    ffn: Vec<f32>,
    /// `silu(gate) * up`. (B, ffn)
    ffn_act: Vec<f32>,
    /// Final-RMSNorm output of the rows that got logits. (B, hidden)
    hidden: Vec<f32>,
    /// Logits. (B, vocab)
    logits: Vec<f32>,
    /// Rows of `hidden` / `logits` filled by the last call.
    out_rows: usize,
    /// Residual stream at the last token of the last call: embedding, then after each layer.
    /// (layers + 1, hidden)
    residuals: Vec<f32>,
    /// Keys and values. (layers, ctx, groups * head_dim) each
    cache: KvCache,
    /// The threads of the products (shared by clones of this state).
    pool: Arc<Pool>,
}

impl RunState {
    /// Allocates every buffer for `config` (use [`Model::new_state`]).
    pub fn new(config: &ModelConfig, options: StateOptions) -> Result<Self, ModelError> {
        config.validate()?;
        let StateOptions {
            context,
            batch,
            kv_type,
            threads,
        } = options;
        if threads == 0 || threads > MAX_THREADS {
            return Err(ModelError::StateOption {
                what: "threads",
                value: threads,
                max: MAX_THREADS,
            });
        }
        if context == 0 || context > config.context_length {
            return Err(ModelError::StateOption {
                what: "context",
                value: context,
                max: config.context_length,
            });
        }
        if batch == 0 || batch > context {
            return Err(ModelError::StateOption {
                what: "batch",
                value: batch,
                max: context,
            });
        }
        let qkv = config.qkv_dim().ok_or(ModelError::Overflow("qkv rows"))?;
        let rows = |width: usize| {
            batch
                .checked_mul(width)
                .ok_or(ModelError::Overflow("batch buffer"))
        };
        let buf = |len: usize| zeroed(len, 0.0f32);
        Ok(Self {
            config: config.clone(),
            batch,
            x: buf(rows(config.hidden_size)?)?,
            xb: buf(rows(config.hidden_size)?)?,
            xb2: buf(rows(config.hidden_size)?)?,
            qkv: buf(rows(qkv)?)?,
            att_out: buf(rows(config.q_dim())?)?,
            att: buf(config
                .num_heads
                .checked_mul(context)
                .ok_or(ModelError::Overflow("attention scores"))?)?,
            rope_cos: buf(config.rope_dims() / 2)?,
            rope_sin: buf(config.rope_dims() / 2)?,
            ffn: buf(rows(2 * config.ffn_hidden_size)?)?,
            ffn_act: buf(rows(config.ffn_hidden_size)?)?,
            hidden: buf(rows(config.hidden_size)?)?,
            logits: buf(rows(config.vocab_size)?)?,
            out_rows: 0,
            residuals: buf(config
                .num_layers
                .checked_add(1)
                .and_then(|n| n.checked_mul(config.hidden_size))
                .ok_or(ModelError::Overflow("residual trace"))?)?,
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

    /// Logits of the last call, `(rows, vocab)`: one row for [`Logits::Last`].
    pub fn logits(&self) -> &[f32] {
        &self.logits[..self.out_rows * self.config.vocab_size]
    }

    /// Final-RMSNorm hidden states of the rows that got logits in the last call,
    /// `(rows, hidden)`: the input of the output layer.
    pub fn hidden(&self) -> &[f32] {
        &self.hidden[..self.out_rows * self.config.hidden_size]
    }

    /// The residual stream at the last token of the last call, `(layers + 1, hidden)`: row 0
    /// is the embedding, row `i` the output of layer `i` (before the final RMSNorm).
    pub fn residuals(&self) -> &[f32] {
        &self.residuals
    }
}

impl Model {
    /// Runs `tokens` at positions `start_pos..start_pos + tokens.len()`, attending to the
    /// cached positions before them, and returns the logits asked for (`[vocab]` for
    /// [`Logits::Last`], `[tokens, vocab]` for [`Logits::All`]).
    ///
    /// A prompt runs as batches of up to `state.batch()` tokens (matrix-matrix products); a
    /// decode step is one token. `start_pos` may be below the cached length to rewind: the
    /// positions from `start_pos` on are overwritten. The RoPE position of a token is its
    /// index in the cache minus the length of a P-Tuning prefix, if one is loaded
    /// ([`KvCache::load_prefix`]): the Hugging Face code numbers the real tokens from 0 and
    /// does not rotate the virtual ones.
    pub fn forward<'s>(
        &self,
        st: &'s mut RunState,
        tokens: &[u32],
        start_pos: usize,
        want: Logits,
    ) -> Result<&'s [f32], ModelError> {
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

        st.out_rows = 0;
        st.cache.truncate(start_pos);
        let mut pos = start_pos;
        let mut n = 0;
        for chunk in tokens.chunks(st.batch) {
            self.forward_layers(st, chunk, pos)?;
            n = chunk.len();
            pos += n;
            st.cache.set_len(pos);
        }

        // Final RMSNorm and output layer, only on the rows that need logits.
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let first = match want {
            Logits::Last => n - 1,
            Logits::All => 0,
        };
        let rows = n - first;
        for (x, out) in st.x[first * h..n * h]
            .chunks_exact(h)
            .zip(st.hidden.chunks_exact_mut(h))
        {
            rmsnorm(out, x, &self.weights.output_norm, cfg.rms_eps);
        }
        self.product(
            &st.pool,
            &self.weights.output,
            &st.hidden[..rows * h],
            rows,
            &mut st.logits[..rows * v],
        )?;
        st.out_rows = rows;
        Ok(&st.logits[..rows * v])
    }

    /// Embeds `tokens` (at most one batch) into `st.x` and runs every layer, writing the keys
    /// and values of positions `pos0..` into the cache.
    fn forward_layers(
        &self,
        st: &mut RunState,
        tokens: &[u32],
        pos0: usize,
    ) -> Result<(), ModelError> {
        let cfg = self.config();
        let w = &self.weights;
        let n = tokens.len();
        let h = cfg.hidden_size;
        let (d, q_dim, kv_dim) = (cfg.head_dim, cfg.q_dim(), cfg.kv_dim());
        let qkv_dim = q_dim + 2 * kv_dim;
        let ffn = cfg.ffn_hidden_size;
        let rot = cfg.rope_dims();
        let ctx = st.cache.capacity();
        let scale = 1.0 / (d as f32).sqrt();

        // Token embedding.
        let embd = w.token_embd.view(w.bytes())?;
        for (&t, row) in tokens.iter().zip(st.x.chunks_exact_mut(h)) {
            dequantize_row(&embd, t as usize, row).map_err(|source| ModelError::Kernel {
                tensor: w.token_embd.name.clone(),
                source,
            })?;
        }
        st.residuals[..h].copy_from_slice(&st.x[(n - 1) * h..n * h]);

        for (l, lw) in w.layers.iter().enumerate() {
            // ---- attention ----
            for (x, xb) in st.x[..n * h].chunks_exact(h).zip(st.xb.chunks_exact_mut(h)) {
                rmsnorm(xb, x, &lw.attn_norm, cfg.rms_eps);
            }
            self.product(
                &st.pool,
                &lw.attn_qkv,
                &st.xb[..n * h],
                n,
                &mut st.qkv[..n * qkv_dim],
            )?;

            // Bias, RoPE on the first half of every q and k head, then k and v into the cache.
            for (i, row) in st.qkv[..n * qkv_dim].chunks_exact_mut(qkv_dim).enumerate() {
                for (y, b) in row.iter_mut().zip(&lw.attn_qkv_bias) {
                    *y += b;
                }
                let pos = pos0 + i;
                let rope_pos = pos.saturating_sub(st.cache.prefix_len());
                rope_table(cfg, rope_pos, &mut st.rope_cos, &mut st.rope_sin);
                let (q, kv) = row.split_at_mut(q_dim);
                let (k, v) = kv.split_at_mut(kv_dim);
                for head in q.chunks_exact_mut(d).chain(k.chunks_exact_mut(d)) {
                    rope(&mut head[..rot], &st.rope_cos, &st.rope_sin);
                }
                st.cache.store(l, pos, k, v);
            }

            // Multi-query attention: query head `hd` reads kv group `hd / heads_per_group`,
            // causal over cache positions 0..=pos. The heads are shared among the threads.
            for (i, (row, out)) in st.qkv[..n * qkv_dim]
                .chunks_exact(qkv_dim)
                .zip(st.att_out.chunks_exact_mut(q_dim))
                .enumerate()
            {
                let pos = pos0 + i;
                let threads = st.pool.threads();
                // Per thread: its heads' outputs (heads, d) and scores (heads, ctx).
                let mut parts = Vec::with_capacity(threads);
                let (mut out_rest, mut att_rest) = (out, &mut st.att[..]);
                for t in 0..threads {
                    let heads = share(cfg.num_heads, threads, t);
                    let (o, o_rest) = std::mem::take(&mut out_rest).split_at_mut(heads.len() * d);
                    let (a, a_rest) = std::mem::take(&mut att_rest).split_at_mut(heads.len() * ctx);
                    (out_rest, att_rest) = (o_rest, a_rest);
                    parts.push(Mutex::new((heads, o, a)));
                }
                let cache = &st.cache;
                st.pool.run(&|t| {
                    let Some(part) = parts.get(t) else { return };
                    let mut part = part.lock().unwrap_or_else(|e| e.into_inner());
                    let (heads, o, a) = &mut *part;
                    // The thread's heads, one kv group at a time.
                    let hpg = cfg.heads_per_group();
                    let mut h = heads.start;
                    while h < heads.end {
                        let g = h / hpg;
                        let end = ((g + 1) * hpg).min(heads.end);
                        let (j0, j1) = (h - heads.start, end - heads.start);
                        let qs = &row[h * d..end * d];
                        let att = &mut a[j0 * ctx..j1 * ctx];
                        cache.key_scores(l, g, qs, scale, att, ctx, pos + 1);
                        for scores in att.chunks_exact_mut(ctx) {
                            softmax(&mut scores[..=pos]);
                        }
                        cache.value_mix(l, g, att, ctx, pos + 1, &mut o[j0 * d..j1 * d]);
                        h = end;
                    }
                });
            }
            self.product(
                &st.pool,
                &lw.attn_output,
                &st.att_out[..n * q_dim],
                n,
                &mut st.xb2[..n * h],
            )?;
            for (x, y) in st.x[..n * h].iter_mut().zip(&st.xb2) {
                *x += y;
            }

            // ---- MLP ----
            for (x, xb) in st.x[..n * h].chunks_exact(h).zip(st.xb.chunks_exact_mut(h)) {
                rmsnorm(xb, x, &lw.ffn_norm, cfg.rms_eps);
            }
            self.product(
                &st.pool,
                &lw.ffn_up,
                &st.xb[..n * h],
                n,
                &mut st.ffn[..n * 2 * ffn],
            )?;
            for (gate_up, act) in st.ffn[..n * 2 * ffn]
                .chunks_exact(2 * ffn)
                .zip(st.ffn_act.chunks_exact_mut(ffn))
            {
                let (gate, up) = gate_up.split_at(ffn);
                for ((a, &g), &u) in act.iter_mut().zip(gate).zip(up) {
                    *a = silu(g) * u;
                }
            }
            self.product(
                &st.pool,
                &lw.ffn_down,
                &st.ffn_act[..n * ffn],
                n,
                &mut st.xb2[..n * h],
            )?;
            for (x, y) in st.x[..n * h].iter_mut().zip(&st.xb2) {
                *x += y;
            }

            st.residuals[(l + 1) * h..(l + 2) * h].copy_from_slice(&st.x[(n - 1) * h..n * h]);
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
