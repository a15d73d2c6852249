//! The ChatGLM-6B (v1) block, as THUDM `chatglm-6b` `modeling_chatglm.py` (blob 4bef958fb3)
//! computes it, per layer `l`:
//!
//! ```text
//! a   = LN_in(x)                                   LayerNorm with bias
//! att = attn_output(attention(rope2d(qkv(a)))) + b
//! h   = a * alpha + att                            the residual carries the normalised input
//! m   = LN_post(h)
//! x'  = m * alpha + ffn_down(gelu(ffn_up(m) + b)) + b
//! ```
//!
//! then `logits = token_embd(LN_final(x))` (tied). Attention is full multi-head (one kv head
//! per query head), scale `1/sqrt(d)` (the reference divides q by `sqrt(d) (l + 1)` and
//! multiplies the f32 scores by `l + 1`: the same value up to rounding), bidirectional over
//! the context (the tokens before the first `<sop>`) and causal after it. The 2-D RoPE
//! rotates the first half of each head with `position` and the second with
//! `block_position` ([`Glm1Layout::position`]).
//!
//! Because a context token attends to the later ones, a call runs layer by layer over all
//! its tokens (in batches of `st.batch` rows inside each layer): every key and value of a
//! layer is in the cache before any of its tokens attends.

use super::{Logits, RunState};
use crate::model::ops::{gelu, glm1_inv_freq, glm1_rope_table, layernorm, rope_half, softmax};
use crate::model::weights::LayerWeights;
use crate::model::{Glm1Params, Model, ModelError};
use chatglm_kernels::pool::ChunksMut;

/// Where the bidirectional context of a v1 sequence ends and where its mask sits
/// (`get_masks` / `get_position_ids` of the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Glm1Layout {
    /// Index of the first `<sop>`: tokens before it form the context, which attends to all of
    /// itself.
    pub context_length: usize,
    /// Index of the first `[gMASK]`, or of the first `[MASK]` if there is none: the
    /// `position` of every token from the context's end on.
    pub mask_position: usize,
}

impl Glm1Layout {
    /// The layout of a sequence that starts with `tokens` (a whole prompt: the first `<sop>`
    /// and mask token must be in it), or an error naming what is missing.
    pub fn of(params: &Glm1Params, tokens: &[u32]) -> Result<Self, ModelError> {
        let first = |id: u32| tokens.iter().position(|&t| t == id);
        let context_length = first(params.sop_token_id).ok_or(ModelError::Glm1NoToken {
            what: "<sop>",
            id: params.sop_token_id,
        })?;
        let mask_position = first(params.gmask_token_id)
            .or_else(|| first(params.mask_token_id))
            .ok_or(ModelError::Glm1NoToken {
                what: "[gMASK] or [MASK]",
                id: params.gmask_token_id,
            })?;
        Ok(Self {
            context_length,
            mask_position,
        })
    }

    /// The 2-D position of the token at `index`: `(position, block_position)` = `(index, 0)`
    /// inside the context, `(mask_position, index - context_length + 1)` from its end on.
    pub fn position(&self, index: usize) -> (usize, usize) {
        if index < self.context_length {
            (index, 0)
        } else {
            (self.mask_position, index - self.context_length + 1)
        }
    }

    /// How many cached positions the token at `index` attends to: the whole context, and
    /// causally itself and everything before it.
    pub fn visible(&self, index: usize) -> usize {
        (index + 1).max(self.context_length)
    }
}

impl RunState {
    /// The v1 layout of the cached sequence, once a call from position 0 has found it
    /// (`None` for other models, or before).
    pub fn glm1_layout(&self) -> Option<Glm1Layout> {
        self.layout
    }
}

impl Model {
    /// The v1 pass over `tokens` at `start_pos..`: the final-LayerNorm hidden states of the
    /// rows `want` asks for go to `st.hidden`; returns their number.
    ///
    /// A call from position 0 finds the layout in its tokens ([`Glm1Layout::of`]); a later
    /// call continues after the context (decoding, or more reply tokens) and may rewind to
    /// any position from the context's end on. Rewinding into the context is refused: every
    /// context token's keys depend on all the others, so a changed context is a new
    /// sequence, run again from 0.
    pub(super) fn run_glm1(
        &self,
        st: &mut RunState,
        params: &Glm1Params,
        tokens: &[u32],
        start_pos: usize,
        want: Logits,
        mut trace: Option<&mut [f32]>,
    ) -> Result<usize, ModelError> {
        let layout = match (start_pos, st.layout) {
            (0, _) => Glm1Layout::of(params, tokens)?,
            (_, Some(layout)) if start_pos >= layout.context_length => layout,
            (_, layout) => {
                return Err(ModelError::Glm1Context {
                    start_pos,
                    context_length: layout.map(|l| l.context_length),
                })
            }
        };
        st.cache.truncate(start_pos);
        st.layout = Some(layout);
        let cfg = self.config();
        let (h, n) = (cfg.hidden_size, tokens.len());
        self.embed(tokens, &mut st.all_x[..n * h])?;
        let mut record = |l: usize, x: &[f32]| {
            if let Some(row) = trace
                .as_deref_mut()
                .and_then(|t| t.get_mut(l * h..(l + 1) * h))
            {
                row.copy_from_slice(&x[(n - 1) * h..n * h]);
            }
        };
        record(0, &st.all_x);
        self.rope_tables_glm1(st, &layout, start_pos, n);
        for (l, lw) in self.weights.layers.iter().enumerate() {
            for r0 in (0..n).step_by(st.batch) {
                let rows = r0..(r0 + st.batch).min(n);
                self.qkv_to_cache_glm1(st, l, lw, rows, start_pos)?;
            }
            st.cache.set_len(start_pos + n);
            for r0 in (0..n).step_by(st.batch) {
                let rows = r0..(r0 + st.batch).min(n);
                self.attention_mlp_glm1(st, params, &layout, l, lw, rows, start_pos)?;
            }
            record(l + 1, &st.all_x);
        }

        // Final LayerNorm, only on the rows that need logits.
        let first = match want {
            Logits::Last => n - 1,
            Logits::All => 0,
            Logits::None => n,
        };
        let w = &self.weights;
        for (x, out) in st.all_x[first * h..n * h]
            .chunks_exact(h)
            .zip(st.hidden.chunks_exact_mut(h))
        {
            layernorm(out, x, &w.output_norm, &w.output_norm_bias, cfg.rms_eps);
        }
        Ok(n - first)
    }

    /// The two rotations of each token of the call (`position` in the first `d/4` entries
    /// of a row, `block_position` in the next), once for every layer.
    fn rope_tables_glm1(&self, st: &mut RunState, layout: &Glm1Layout, pos0: usize, n: usize) {
        let cfg = self.config();
        let (rot, quarter) = (cfg.rope_dims(), cfg.rope_dims() / 2);
        let rows = st
            .rope_cos
            .chunks_exact_mut(rot)
            .zip(st.rope_sin.chunks_exact_mut(rot))
            .take(n);
        for (i, (cos, sin)) in rows.enumerate() {
            let (p, b) = layout.position(pos0 + i);
            let (c0, c1) = cos.split_at_mut(quarter);
            let (s0, s1) = sin.split_at_mut(quarter);
            glm1_rope_table(glm1_inv_freq(rot, cfg.rope_base), p, c0, s0);
            glm1_rope_table(glm1_inv_freq(rot, cfg.rope_base), b, c1, s1);
        }
    }

    /// For the call's rows `rows` of layer `l`: `a = LN_in(x)`, `qkv = W a + b`, the 2-D
    /// RoPE of every q and k head; keys and values to the cache, queries to `st.all_q`.
    fn qkv_to_cache_glm1(
        &self,
        st: &mut RunState,
        l: usize,
        lw: &LayerWeights,
        rows: std::ops::Range<usize>,
        pos0: usize,
    ) -> Result<(), ModelError> {
        let cfg = self.config();
        let (h, d, q_dim) = (cfg.hidden_size, cfg.head_dim, cfg.q_dim());
        let qkv_dim = 3 * q_dim;
        let (rot, quarter) = (cfg.rope_dims(), cfg.rope_dims() / 2);
        let m = rows.len();
        for (x, xb) in st.all_x[rows.start * h..rows.end * h]
            .chunks_exact(h)
            .zip(st.xb.chunks_exact_mut(h))
        {
            layernorm(xb, x, &lw.attn_norm, &lw.v1.attn_norm, cfg.rms_eps);
        }
        self.product(
            &st.pool,
            &lw.attn_qkv,
            &st.xb[..m * h],
            m,
            &mut st.qkv[..m * qkv_dim],
        )?;
        for (j, row) in st.qkv[..m * qkv_dim].chunks_exact_mut(qkv_dim).enumerate() {
            let i = rows.start + j;
            let (cos, sin) = (
                &st.rope_cos[i * rot..(i + 1) * rot],
                &st.rope_sin[i * rot..(i + 1) * rot],
            );
            for (y, b) in row.iter_mut().zip(&lw.attn_qkv_bias) {
                *y += b;
            }
            let (q, kv) = row.split_at_mut(q_dim);
            let (k, v) = kv.split_at_mut(q_dim);
            for head in q.chunks_exact_mut(d).chain(k.chunks_exact_mut(d)) {
                let (first, second) = head.split_at_mut(rot);
                rope_half(first, &cos[..quarter], &sin[..quarter]);
                rope_half(second, &cos[quarter..], &sin[quarter..]);
            }
            st.cache.store(l, pos0 + i, k, v);
            st.all_q[i * q_dim..(i + 1) * q_dim].copy_from_slice(q);
        }
        Ok(())
    }

    /// For the call's rows `rows` of layer `l`, once every key and value of the layer is
    /// cached: attention, `h = a * alpha + attn_output(...) + b`, then
    /// `x' = m * alpha + ffn_down(gelu(ffn_up(m) + b)) + b` with `m = LN_post(h)`, into
    /// `st.all_x`.
    #[allow(clippy::too_many_arguments)]
    fn attention_mlp_glm1(
        &self,
        st: &mut RunState,
        params: &Glm1Params,
        layout: &Glm1Layout,
        l: usize,
        lw: &LayerWeights,
        rows: std::ops::Range<usize>,
        pos0: usize,
    ) -> Result<(), ModelError> {
        let cfg = self.config();
        let (h, q_dim, ffn) = (cfg.hidden_size, cfg.q_dim(), cfg.ffn_hidden_size);
        let alpha = params.residual_alpha;
        let m = rows.len();
        for j in 0..m {
            self.attention_glm1(
                st,
                l,
                rows.start + j,
                j,
                layout.visible(pos0 + rows.start + j),
            );
        }
        self.product(
            &st.pool,
            &lw.attn_output,
            &st.att_out[..m * q_dim],
            m,
            &mut st.xb2[..m * h],
        )?;
        let x = &mut st.all_x[rows.start * h..rows.end * h];
        // a = LN_in(x) again (x is unchanged since the keys were made), h = a * alpha + att.
        for (((x, a), att), _) in x
            .chunks_exact_mut(h)
            .zip(st.xb.chunks_exact_mut(h))
            .zip(st.xb2.chunks_exact(h))
            .zip(0..m)
        {
            layernorm(a, x, &lw.attn_norm, &lw.v1.attn_norm, cfg.rms_eps);
            for (((xv, &av), &tv), &b) in
                x.iter_mut().zip(a.iter()).zip(att).zip(&lw.v1.attn_output)
            {
                *xv = av * alpha + (tv + b);
            }
        }
        for (x, xb) in x.chunks_exact(h).zip(st.xb.chunks_exact_mut(h)) {
            layernorm(xb, x, &lw.ffn_norm, &lw.v1.ffn_norm, cfg.rms_eps);
        }
        self.product(
            &st.pool,
            &lw.ffn_up,
            &st.xb[..m * h],
            m,
            &mut st.ffn[..m * ffn],
        )?;
        for row in st.ffn[..m * ffn].chunks_exact_mut(ffn) {
            for (y, &b) in row.iter_mut().zip(&lw.v1.ffn_up) {
                *y = gelu(*y + b);
            }
        }
        self.product(
            &st.pool,
            &lw.ffn_down,
            &st.ffn[..m * ffn],
            m,
            &mut st.xb2[..m * h],
        )?;
        let x = &mut st.all_x[rows.start * h..rows.end * h];
        for ((x, mv), down) in x
            .chunks_exact_mut(h)
            .zip(st.xb.chunks_exact(h))
            .zip(st.xb2.chunks_exact(h))
        {
            for (((xv, &mv), &dv), &b) in x.iter_mut().zip(mv).zip(down).zip(&lw.v1.ffn_down) {
                *xv = mv * alpha + (dv + b);
            }
        }
        Ok(())
    }

    /// Multi-head attention of the call's row `i` (query in `st.all_q`) of layer `l` over
    /// the first `visible` cached positions, into row `j` of `st.att_out`: head `hd` reads
    /// kv head `hd`, scale `1/sqrt(head_dim)`. The heads are shared among the threads.
    fn attention_glm1(&self, st: &mut RunState, l: usize, i: usize, j: usize, visible: usize) {
        let cfg = self.config();
        let (d, q_dim) = (cfg.head_dim, cfg.q_dim());
        let ctx = st.cache.capacity();
        let scale = 1.0 / (d as f32).sqrt();
        let q = &st.all_q[i * q_dim..(i + 1) * q_dim];
        let out = &mut st.att_out[j * q_dim..(j + 1) * q_dim];
        let scores = &mut st.att[..cfg.num_heads * ctx];
        let cache = &st.cache;
        let parts = (ChunksMut::new(out, d), ChunksMut::new(scores, ctx));
        st.pool.run_split(parts, |_, heads, (o, a)| {
            for (k, hd) in heads.enumerate() {
                let att = &mut a[k * ctx..(k + 1) * ctx];
                cache.key_scores(l, hd, &q[hd * d..(hd + 1) * d], scale, att, ctx, visible);
                softmax(&mut att[..visible]);
                cache.value_mix(l, hd, att, ctx, visible, &mut o[k * d..(k + 1) * d]);
            }
        });
    }
}
