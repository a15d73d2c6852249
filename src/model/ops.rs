//! The small element-wise operations of the forward pass (everything that is not a weight
//! product). Each follows the Hugging Face reference, THUDM `modeling_chatglm.py`.

use super::ModelConfig;

/// `out = x * 1/sqrt(mean(x^2) + eps) * w` (`RMSNorm.forward`; statistics in f32).
pub(crate) fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32;
    let scale = 1.0 / (mean_sq + eps).sqrt();
    for ((o, &xv), &wv) in out.iter_mut().zip(x).zip(w) {
        *o = xv * scale * wv;
    }
}

/// Fills `cos[i]`, `sin[i]` (`i < head_dim / 4`) with the rotation of pair `i` at token
/// index `pos`: angle `p * b^(-2i / rot)` where `rot = head_dim / 2` and `p`, `b` are the
/// position and base after the config's [`super::RopeScaling`] (`RotaryEmbedding.forward_impl`).
/// Computed in f64, rounded to f32 at the end.
pub(crate) fn rope_table(config: &ModelConfig, pos: usize, cos: &mut [f32], sin: &mut [f32]) {
    let rot = config.rope_dims() as f64;
    let base = config.effective_rope_base();
    let p = config.rope_position(pos);
    for (i, (c, s)) in cos.iter_mut().zip(sin.iter_mut()).enumerate() {
        let theta = base.powf(-2.0 * i as f64 / rot);
        let (sv, cv) = (p * theta).sin_cos();
        *c = cv as f32;
        *s = sv as f32;
    }
}

/// Rotates the first `2 * cos.len()` dims of one head in adjacent pairs `(x[2i], x[2i+1])`
/// (`apply_rotary_pos_emb`); the remaining dims pass through.
pub(crate) fn rope(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (x0, x1) = (pair[0], pair[1]);
        pair[0] = x0 * c - x1 * s;
        pair[1] = x1 * c + x0 * s;
    }
}

/// `out = (x - mean) / sqrt(var + eps) * w + b` (`torch.nn.LayerNorm`, biased variance,
/// statistics in f64 over f32 values), the v1 block's norm.
pub(crate) fn layernorm(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let inv = 1.0 / (var + f64::from(eps)).sqrt();
    for (((o, &xv), &wv), &bv) in out.iter_mut().zip(x).zip(w).zip(b) {
        *o = ((f64::from(xv) - mean) * inv) as f32 * wv + bv;
    }
}

/// GELU, tanh form: `0.5 x (1 + tanh(0.7978845608 x (1 + 0.044715 x^2)))` (v1 `gelu_impl`).
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + (0.797_884_6 * x * (1.0 + 0.044715 * x * x)).tanh())
}

/// The v1 inverse frequencies of a rotated half of `rot` dims: `inv_freq[i] =
/// f16(1 / 10000^(2i / rot))` for `i < rot / 2`, rounded to f16 as `RotaryEmbedding` stores
/// them (`inv_freq.half()`) and used as f32 (THUDM `chatglm-6b` `modeling_chatglm.py`,
/// blob 4bef958fb3).
pub(crate) fn glm1_inv_freq(rot: usize, base: f32) -> impl Iterator<Item = f32> {
    (0..rot / 2).map(move |i| {
        let f = 1.0 / f64::from(base).powf(2.0 * i as f64 / rot as f64);
        half::f16::from_f64(f).to_f32()
    })
}

/// Fills `cos[i]`, `sin[i]` with the v1 rotation at position `pos`: angle `pos * inv_freq[i]`
/// in f32 (as the reference's `einsum` of f32 positions and frequencies), its cosine and
/// sine rounded from f64.
pub(crate) fn glm1_rope_table(
    inv_freq: impl Iterator<Item = f32>,
    pos: usize,
    cos: &mut [f32],
    sin: &mut [f32],
) {
    for ((c, s), f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv_freq) {
        let angle = f64::from(pos as f32 * f);
        *c = angle.cos() as f32;
        *s = angle.sin() as f32;
    }
}

/// Rotates a half-head `v` (length `2 * cos.len()`) in the `rotate_half` style:
/// `v * cos + rotate_half(v) * sin` with `rotate_half(v) = [-v[r/2..], v[..r/2]]` and
/// dimension `k`'s angle that of `k mod r/2` (`apply_rotary_pos_emb_index`).
pub(crate) fn rope_half(v: &mut [f32], cos: &[f32], sin: &[f32]) {
    let (a, b) = v.split_at_mut(cos.len());
    for (((x0, x1), &c), &s) in a.iter_mut().zip(b.iter_mut()).zip(cos).zip(sin) {
        let (u, w) = (*x0, *x1);
        *x0 = u * c - w * s;
        *x1 = w * c + u * s;
    }
}

/// In-place softmax in f32, shifted by the maximum for stability.
pub(crate) fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// `silu(x) = x * sigmoid(x)`.
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RopeScaling;

    fn cfg(head_dim: usize, scaling: RopeScaling) -> ModelConfig {
        ModelConfig {
            vocab_size: 8,
            hidden_size: 8,
            num_layers: 1,
            num_heads: 2,
            num_kv_groups: 1,
            head_dim,
            ffn_hidden_size: 8,
            context_length: 16,
            rms_eps: 1e-5,
            rope_base: 10000.0,
            rope_scaling: scaling,
            block: crate::model::Block::Glm2,
        }
    }

    /// chatglm.cpp's `rms_norm.data`: w [64], x [3, 64], y [3, 64].
    #[test]
    fn model_ops_rmsnorm_matches_chatglm_cpp_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/chatglm-cpp-data/rms_norm.data"
        );
        let bytes = std::fs::read(path).unwrap();
        let f: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(f.len(), 64 * 7);
        let (w, rest) = f.split_at(64);
        let (x, y) = rest.split_at(192);
        let mut out = [0.0; 64];
        for r in 0..3 {
            rmsnorm(&mut out, &x[r * 64..][..64], w, 1e-5);
            for (a, b) in out.iter().zip(&y[r * 64..][..64]) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn model_ops_rope_pairs_are_adjacent() {
        let c = cfg(8, RopeScaling::None);
        let (mut cos, mut sin) = ([0.0; 2], [0.0; 2]);
        rope_table(&c, 3, &mut cos, &mut sin);
        // rot = 4: theta_0 = 1, theta_1 = 10000^(-1/2) = 0.01.
        assert!((cos[0] - 3f32.cos()).abs() < 1e-7 && (sin[0] - 3f32.sin()).abs() < 1e-7);
        assert!((cos[1] - 0.03f32.cos()).abs() < 1e-7 && (sin[1] - 0.03f32.sin()).abs() < 1e-7);
        let mut head = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        rope(&mut head, &cos, &sin);
        let expect = [
            1.0 * cos[0] - 2.0 * sin[0],
            2.0 * cos[0] + 1.0 * sin[0],
            3.0 * cos[1] - 4.0 * sin[1],
            4.0 * cos[1] + 3.0 * sin[1],
            5.0,
            6.0,
            7.0,
            8.0,
        ];
        assert_eq!(head, expect);
    }

    #[test]
    fn model_ops_rope_scaling() {
        let (mut c1, mut s1, mut c2, mut s2) = ([0.0; 2], [0.0; 2], [0.0; 2], [0.0; 2]);
        rope_table(
            &cfg(8, RopeScaling::DividePositions(4.0)),
            8,
            &mut c1,
            &mut s1,
        );
        rope_table(&cfg(8, RopeScaling::None), 2, &mut c2, &mut s2);
        assert_eq!((c1, s1), (c2, s2));
        rope_table(&cfg(8, RopeScaling::MultiplyBase(4.0)), 5, &mut c1, &mut s1);
        // theta_1 = (40000)^(-1/2) = 0.005.
        assert!((c1[1] - 0.025f32.cos()).abs() < 1e-7);
        assert!((s1[1] - 0.025f32.sin()).abs() < 1e-7);
    }

    #[test]
    fn model_ops_glm1_layernorm_gelu_rope() {
        let x = [1.0, 2.0, 3.0, 6.0];
        let mut out = [0.0; 4];
        layernorm(
            &mut out,
            &x,
            &[1.0, 2.0, 1.0, 1.0],
            &[0.0, 0.0, 0.5, 0.0],
            0.0,
        );
        // mean 3, variance (4 + 1 + 0 + 9) / 4 = 3.5.
        let sd = 3.5f32.sqrt();
        let want = [-2.0 / sd, -2.0 / sd, 0.5, 3.0 / sd];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        assert_eq!(gelu(0.0), 0.0);
        assert!((gelu(1.0) - 0.841_192).abs() < 1e-5);
        assert!((gelu(-3.0) + 0.003_637_4).abs() < 1e-6);
        // rot 8: inv_freq 1, 0.1, 0.01, 0.001 rounded to f16.
        let f: Vec<f32> = glm1_inv_freq(8, 10000.0).collect();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[1], half::f16::from_f32(0.1).to_f32());
        assert_ne!(f[1], 0.1);
        let (mut cos, mut sin) = ([0.0; 2], [0.0; 2]);
        glm1_rope_table(f.iter().copied().take(2), 2, &mut cos, &mut sin);
        assert_eq!(cos[0], 2f64.cos() as f32);
        let mut v = [1.0, 2.0, 3.0, 4.0];
        rope_half(&mut v, &cos, &sin);
        let want = [
            1.0 * cos[0] - 3.0 * sin[0],
            2.0 * cos[1] - 4.0 * sin[1],
            3.0 * cos[0] + 1.0 * sin[0],
            4.0 * cos[1] + 2.0 * sin[1],
        ];
        assert_eq!(v, want);
    }

    #[test]
    fn model_ops_softmax_and_silu() {
        let mut x = [1.0, 2.0, 3.0];
        softmax(&mut x);
        let e = [1f32.exp(), 2f32.exp(), 3f32.exp()];
        let s: f32 = e.iter().sum();
        for (a, b) in x.iter().zip(e) {
            assert!((a - b / s).abs() < 1e-7);
        }
        let mut big = [1000.0, 1000.0];
        softmax(&mut big);
        assert_eq!(big, [0.5, 0.5]);
        assert_eq!(silu(0.0), 0.0);
        assert!((silu(1.0) - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-7);
        assert!((silu(-2.0) - (-2.0 / (1.0 + 2f32.exp()))).abs() < 1e-7);
    }
}
