//! The ChatGLM2/3 block (THUDM `chatglm2-6b`/`chatglm3-6b` `modeling_chatglm.py`,
//! `GLMBlock.forward`), pre-norm: `x += attn_output(attention(rope(qkv(rmsnorm(x)))))`, then
//! `x += ffn_down(silu(gate) * up)` with `[gate | up] = ffn_up(rmsnorm(x))`; finally
//! `logits = output(rmsnorm(x))`. Causal multi-query attention; a prompt runs in batches of
//! `st.batch` tokens.

use super::{Logits, RunState};
use crate::model::ops::{rmsnorm, rope, rope_table, silu, softmax};
use crate::model::weights::LayerWeights;
use crate::model::{Model, ModelError};
use chatglm_kernels::pool::{ChunksMut, Pool};
use std::sync::Arc;

impl Model {
    /// The ChatGLM2/3 pass over `tokens` at `start_pos..` in batches: the final-RMSNorm
    /// hidden states of the rows `want` asks for go to `st.hidden`; returns their number.
    pub(super) fn run_glm2(
        &self,
        st: &mut RunState,
        tokens: &[u32],
        start_pos: usize,
        want: Logits,
        mut trace: Option<&mut [f32]>,
    ) -> Result<usize, ModelError> {
        let mut pos = start_pos;
        let mut n = 0;
        for chunk in tokens.chunks(st.batch) {
            self.forward_layers(st, chunk, pos, trace.as_deref_mut())?;
            n = chunk.len();
            pos += n;
            st.cache.set_len(pos);
        }
        // Final RMSNorm, only on the rows that need logits.
        let cfg = self.config();
        let h = cfg.hidden_size;
        let first = match want {
            Logits::Last => n - 1,
            Logits::All => 0,
            Logits::None => n,
        };
        for (x, out) in st.x[first * h..n * h]
            .chunks_exact(h)
            .zip(st.hidden.chunks_exact_mut(h))
        {
            rmsnorm(out, x, &self.weights.output_norm, cfg.rms_eps);
        }
        Ok(n - first)
    }

    /// Embeds `tokens` (at most one batch) into `st.x` and runs every layer, writing the keys
    /// and values of positions `pos0..` into the cache. With `trace`, row 0 gets the last
    /// token's embedding and row `l + 1` its residual stream after layer `l`.
    fn forward_layers(
        &self,
        st: &mut RunState,
        tokens: &[u32],
        pos0: usize,
        mut trace: Option<&mut [f32]>,
    ) -> Result<(), ModelError> {
        let h = self.config().hidden_size;
        let n = tokens.len();
        self.embed(tokens, &mut st.x)?;
        let mut record = |l: usize, x: &[f32]| {
            if let Some(row) = trace
                .as_deref_mut()
                .and_then(|t| t.get_mut(l * h..(l + 1) * h))
            {
                row.copy_from_slice(&x[(n - 1) * h..n * h]);
            }
        };
        record(0, &st.x);
        self.rope_tables(st, pos0, n);
        for (l, lw) in self.weights.layers.iter().enumerate() {
            self.attention_block(st, l, lw, n, pos0)?;
            self.mlp_block(st, lw, n)?;
            record(l + 1, &st.x);
        }
        Ok(())
    }

    /// The RoPE rotation of positions `pos0..pos0 + n` into `st.rope_cos` / `st.rope_sin`
    /// (row `i` for position `pos0 + i`), once for every layer.
    pub(super) fn rope_tables(&self, st: &mut RunState, pos0: usize, n: usize) {
        let half = self.config().rope_dims() / 2;
        let prefix = st.cache.prefix_len();
        for (i, (cos, sin)) in st
            .rope_cos
            .chunks_exact_mut(half)
            .zip(st.rope_sin.chunks_exact_mut(half))
            .take(n)
            .enumerate()
        {
            rope_table(self.config(), (pos0 + i).saturating_sub(prefix), cos, sin);
        }
    }

    /// `x += attn_output(attention(rope(qkv(rmsnorm(x)))))` for the `n` rows of layer `l`.
    fn attention_block(
        &self,
        st: &mut RunState,
        l: usize,
        lw: &LayerWeights,
        n: usize,
        pos0: usize,
    ) -> Result<(), ModelError> {
        self.attention_in(st, lw, n)?;
        self.qkv_to_cache(st, l, lw, n, pos0);
        let pool = Arc::clone(&st.pool);
        for i in 0..n {
            self.attention(&pool, st, l, i, pos0 + i);
        }
        self.attention_out(st, lw, n)
    }

    /// `st.qkv = qkv(rmsnorm(x))` for the `n` rows (bias not yet added).
    pub(super) fn attention_in(
        &self,
        st: &mut RunState,
        lw: &LayerWeights,
        n: usize,
    ) -> Result<(), ModelError> {
        let cfg = self.config();
        let h = cfg.hidden_size;
        let qkv_dim = cfg.q_dim() + 2 * cfg.kv_dim();
        for (x, xb) in st.x[..n * h].chunks_exact(h).zip(st.xb.chunks_exact_mut(h)) {
            rmsnorm(xb, x, &lw.attn_norm, cfg.rms_eps);
        }
        self.product(
            &st.pool,
            &lw.attn_qkv,
            &st.xb[..n * h],
            n,
            &mut st.qkv[..n * qkv_dim],
        )
    }

    /// `x += attn_output(st.att_out)` for the `n` rows.
    pub(super) fn attention_out(
        &self,
        st: &mut RunState,
        lw: &LayerWeights,
        n: usize,
    ) -> Result<(), ModelError> {
        let cfg = self.config();
        let (h, q_dim) = (cfg.hidden_size, cfg.q_dim());
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
        Ok(())
    }

    /// Adds the QKV bias, rotates the first half of every q and k head (RoPE), and stores
    /// the keys and values of the `n` rows at positions `pos0..` of layer `l`.
    pub(super) fn qkv_to_cache(
        &self,
        st: &mut RunState,
        l: usize,
        lw: &LayerWeights,
        n: usize,
        pos0: usize,
    ) {
        let cfg = self.config();
        let (d, q_dim, kv_dim) = (cfg.head_dim, cfg.q_dim(), cfg.kv_dim());
        let (rot, half) = (cfg.rope_dims(), cfg.rope_dims() / 2);
        let rows = st.qkv[..n * (q_dim + 2 * kv_dim)].chunks_exact_mut(q_dim + 2 * kv_dim);
        let tables = st
            .rope_cos
            .chunks_exact(half)
            .zip(st.rope_sin.chunks_exact(half));
        for (i, (row, (cos, sin))) in rows.zip(tables).enumerate() {
            for (y, b) in row.iter_mut().zip(&lw.attn_qkv_bias) {
                *y += b;
            }
            let (q, kv) = row.split_at_mut(q_dim);
            let (k, v) = kv.split_at_mut(kv_dim);
            for head in q.chunks_exact_mut(d).chain(k.chunks_exact_mut(d)) {
                rope(&mut head[..rot], cos, sin);
            }
            st.cache.store(l, pos0 + i, k, v);
        }
    }

    /// Multi-query attention of query row `i` (at position `pos`) of layer `l`, into row `i`
    /// of `st.att_out`: query head `hd` reads kv group `hd / heads_per_group`, causal over
    /// cache positions `0..=pos`, scale `1/sqrt(head_dim)`. The heads are shared among the
    /// threads of `pool`, each with its own outputs and scores.
    pub(super) fn attention(&self, pool: &Pool, st: &mut RunState, l: usize, i: usize, pos: usize) {
        let cfg = self.config();
        let (d, q_dim) = (cfg.head_dim, cfg.q_dim());
        let qkv_dim = q_dim + 2 * cfg.kv_dim();
        let ctx = st.cache.capacity();
        let scale = 1.0 / (d as f32).sqrt();
        let hpg = cfg.heads_per_group();
        let row = &st.qkv[i * qkv_dim..i * qkv_dim + q_dim];
        let out = &mut st.att_out[i * q_dim..(i + 1) * q_dim];
        let scores = &mut st.att[..cfg.num_heads * ctx];
        let cache = &st.cache;
        let parts = (ChunksMut::new(out, d), ChunksMut::new(scores, ctx));
        pool.run_split(parts, |_, heads, (o, a)| {
            // The thread's heads, one kv group at a time.
            let mut hd = heads.start;
            while hd < heads.end {
                let g = hd / hpg;
                let end = ((g + 1) * hpg).min(heads.end);
                let (j0, j1) = (hd - heads.start, end - heads.start);
                let att = &mut a[j0 * ctx..j1 * ctx];
                cache.key_scores(l, g, &row[hd * d..end * d], scale, att, ctx, pos + 1);
                for scores in att.chunks_exact_mut(ctx) {
                    softmax(&mut scores[..=pos]);
                }
                cache.value_mix(l, g, att, ctx, pos + 1, &mut o[j0 * d..j1 * d]);
                hd = end;
            }
        });
    }

    /// `x += ffn_down(silu(gate) * up)` with `[gate | up] = ffn_up(rmsnorm(x))`.
    pub(super) fn mlp_block(
        &self,
        st: &mut RunState,
        lw: &LayerWeights,
        n: usize,
    ) -> Result<(), ModelError> {
        let cfg = self.config();
        let (h, ffn) = (cfg.hidden_size, cfg.ffn_hidden_size);
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
        Ok(())
    }
}
