//! Batched decode: one new token for each of several sequences, each with its own
//! [`RunState`] (KV cache), advanced by one pass over the weights. The matrix products take
//! the sequences' activation rows together (the kernels' several-row path, whose every output
//! has the bits of the one-row path); attention runs per sequence over its own cache. Every
//! float operation of a sequence is the one [`Model::forward`] does for it alone, in the same
//! order, so the logits are bit-identical to single steps.
//!
//! ChatGLM-6B (v1) sequences are stepped one at a time (its block keeps the residual stream
//! of a whole call in its own state, which a shared buffer would have to mirror): same
//! results, no sharing of the pass over the weights.

use super::{Logits, RunState, StateOptions};
use crate::model::kv_cache::KvType;
use crate::model::ops::rmsnorm;
use crate::model::{Block, Model, ModelError};
use std::sync::Arc;

/// The activation buffers of batched decode steps for up to [`DecodeBatch::capacity`]
/// sequences, and the threads that run them (products and attention). Create it once with
/// [`Model::new_decode_batch`]; it holds no sequence.
#[derive(Debug)]
pub struct DecodeBatch {
    /// A state whose batch rows are the sequences' rows (its own cache is not used).
    rows: RunState,
}

impl DecodeBatch {
    /// Most sequences one step takes.
    pub fn capacity(&self) -> usize {
        self.rows.batch
    }

    /// Threads of the step.
    pub fn threads(&self) -> usize {
        self.rows.threads()
    }
}

impl Model {
    /// Buffers for batched decode steps of up to `max_seqs` sequences on `threads` threads
    /// (1..=256).
    pub fn new_decode_batch(
        &self,
        max_seqs: usize,
        threads: usize,
    ) -> Result<DecodeBatch, ModelError> {
        let max = self.config().context_length;
        if max_seqs == 0 || max_seqs > max {
            return Err(ModelError::StateOption {
                what: "sequences",
                value: max_seqs,
                max,
            });
        }
        let rows = RunState::new(
            self.config(),
            StateOptions {
                context: max_seqs,
                batch: max_seqs,
                kv_type: KvType::F32,
                threads,
            },
        )?;
        Ok(DecodeBatch { rows })
    }

    /// One decode step for each sequence: `tokens[i]` runs at position `positions[i]` of
    /// `seqs[i]` (as [`Model::forward_into`] with one token and [`Logits::Last`] would: a
    /// position below the cached length rewinds), and its logits go to row `i` of `logits`
    /// `(seqs, vocab)`. The results are bit-identical to those single calls.
    pub fn decode_batch(
        &self,
        batch: &mut DecodeBatch,
        seqs: &mut [&mut RunState],
        tokens: &[u32],
        positions: &[usize],
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        let n = seqs.len();
        let v = self.config().vocab_size;
        if n > batch.capacity() {
            return Err(ModelError::TooManySequences {
                seqs: n,
                max: batch.capacity(),
            });
        }
        for (what, got) in [("tokens", tokens.len()), ("positions", positions.len())] {
            if got != n {
                return Err(ModelError::BufferSize {
                    what,
                    expected: n,
                    got,
                });
            }
        }
        let expected = n.checked_mul(v).ok_or(ModelError::Overflow("logits"))?;
        if logits.len() != expected {
            return Err(ModelError::BufferSize {
                what: "logits",
                expected,
                got: logits.len(),
            });
        }
        if n == 0 {
            return Ok(());
        }
        for ((st, t), &pos) in seqs.iter().zip(tokens.chunks(1)).zip(positions) {
            self.check_call(st, t, pos, Logits::Last)?;
        }
        if let Block::Glm1(_) = self.config().block {
            for (((st, t), &pos), out) in seqs
                .iter_mut()
                .zip(tokens.chunks(1))
                .zip(positions)
                .zip(logits.chunks_exact_mut(v))
            {
                self.run(st, t, pos, Logits::Last, out, None)?;
            }
            return Ok(());
        }
        self.step_glm2(&mut batch.rows, seqs, tokens, positions, logits)
    }

    /// [`Model::decode_batch`] for the ChatGLM2/3 block: `b`'s rows are the sequences'.
    fn step_glm2(
        &self,
        b: &mut RunState,
        seqs: &mut [&mut RunState],
        tokens: &[u32],
        positions: &[usize],
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        let cfg = self.config();
        let (n, h) = (seqs.len(), cfg.hidden_size);
        let (q_dim, qkv_dim) = (cfg.q_dim(), cfg.q_dim() + 2 * cfg.kv_dim());
        for (st, &pos) in seqs.iter_mut().zip(positions) {
            st.out_rows = 0;
            st.logit_rows = 0;
            st.cache.truncate(pos);
            self.rope_tables(st, pos, 1);
        }
        self.embed(tokens, &mut b.x)?;
        let pool = Arc::clone(&b.pool);
        for (l, lw) in self.weights.layers.iter().enumerate() {
            self.attention_in(b, lw, n)?;
            for (i, (st, &pos)) in seqs.iter_mut().zip(positions).enumerate() {
                st.qkv[..qkv_dim].copy_from_slice(&b.qkv[i * qkv_dim..(i + 1) * qkv_dim]);
                self.qkv_to_cache(st, l, lw, 1, pos);
                self.attention(&pool, st, l, 0, pos);
                b.att_out[i * q_dim..(i + 1) * q_dim].copy_from_slice(&st.att_out[..q_dim]);
            }
            self.attention_out(b, lw, n)?;
            self.mlp_block(b, lw, n)?;
        }
        for (st, &pos) in seqs.iter_mut().zip(positions) {
            st.cache.set_len(pos + 1);
        }
        // Final RMSNorm and the output layer, on every row.
        for (x, out) in b.x[..n * h]
            .chunks_exact(h)
            .zip(b.hidden.chunks_exact_mut(h))
        {
            rmsnorm(out, x, &self.weights.output_norm, cfg.rms_eps);
        }
        self.product(&pool, &self.weights.output, &b.hidden[..n * h], n, logits)
    }
}
