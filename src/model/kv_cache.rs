//! The key/value cache: for every layer and position, the keys (after RoPE) and values of the
//! model's kv heads: the kv groups only for multi-query attention (ChatGLM2/3: 2 groups x 128,
//! 28 KiB per position in f16), every head for ChatGLM-6B's full multi-head attention (32 x
//! 128, 448 KiB per position in f16). The model decides (`num_kv_groups`). Allocated once for
//! the context asked for; never grows.

use super::ModelError;
use chatglm_kernels::isa::kernels;
use half::f16;
use half::vec::HalfBitsVecExt;

/// Element type of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// Half precision (the default; what chatglm.cpp and llama.cpp use).
    #[default]
    F16,
    /// Single precision: twice the memory, no rounding of keys and values.
    F32,
}

/// One of the two cache tensors, `(layers, capacity, kv_dim)`.
#[derive(Debug, Clone)]
enum Buf {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Buf {
    /// A zeroed buffer of `len` elements, its pages untouched ([`zeroed`]); an allocation
    /// failure is an error, not an abort.
    fn new(ty: KvType, len: usize) -> Result<Self, ModelError> {
        Ok(match ty {
            // f16 zero is the bit pattern 0: zeroed `u16`s, reinterpreted in place.
            KvType::F16 => Buf::F16(zeroed(len, 0u16)?.reinterpret_into::<f16>()),
            KvType::F32 => Buf::F32(zeroed(len, 0.0)?),
        })
    }

    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Buf::F16(b) => {
                for (d, &s) in b[at..at + src.len()].iter_mut().zip(src) {
                    *d = f16::from_f32(s);
                }
            }
            Buf::F32(b) => b[at..at + src.len()].copy_from_slice(src),
        }
    }

    /// `q . x[at..at + q.len()]` through the SIMD kernels (16-lane summation order, the
    /// same on every kernel path).
    fn dot(&self, at: usize, q: &[f32]) -> f32 {
        let k = kernels();
        match self {
            Buf::F16(b) => k.dot_f16_values(&b[at..at + q.len()], q),
            Buf::F32(b) => k.dot_f32_values(&b[at..at + q.len()], q),
        }
    }

    /// `out += w * x[at..at + out.len()]` through the SIMD kernels.
    fn axpy(&self, at: usize, w: f32, out: &mut [f32]) {
        let k = kernels();
        let n = out.len();
        match self {
            Buf::F16(b) => k.axpy_f16_values(w, &b[at..at + n], out),
            Buf::F32(b) => k.axpy_f32_values(w, &b[at..at + n], out),
        }
    }
}

/// Positions per block of the attention helpers ([`KvCache::key_scores`]): 64 positions of
/// one group are 16 KiB of f16 keys (or values), which stay in L1 while every head of the
/// group uses them.
const ATT_BLOCK: usize = 64;

/// `vec![zero; len]` that reports allocation failure instead of aborting.
///
/// For a `zero` whose bits are all 0 (`0u16`, `0.0f32`), `vec!` asks the allocator for zeroed
/// memory, which it takes for a large buffer from fresh pages that the operating system zeroes
/// on first touch: nothing is written here, so positions never used cost no memory and no
/// time. The size is first reserved and released (`try_reserve_exact`), so that a refused
/// allocation is an error; callers check sizes against the machine's memory before
/// ([`super::forward::RunState::new`]).
pub(crate) fn zeroed<T: Clone>(len: usize, zero: T) -> Result<Vec<T>, ModelError> {
    Vec::<T>::new()
        .try_reserve_exact(len)
        .map_err(|_| ModelError::Alloc {
            what: "buffer",
            bytes: len.saturating_mul(std::mem::size_of::<T>()),
        })?;
    Ok(vec![zero; len])
}

/// Keys and values of every layer for up to `capacity` positions.
///
/// Positions `0..len()` hold valid entries. The forward pass writes positions in order; a
/// caller may [`truncate`](KvCache::truncate) to rewind (for example to regenerate a reply).
#[derive(Debug, Clone)]
pub struct KvCache {
    ty: KvType,
    layers: usize,
    capacity: usize,
    groups: usize,
    head_dim: usize,
    len: usize,
    /// Leading positions that hold a P-Tuning prefix (not rotated, not counted by RoPE).
    prefix: usize,
    /// Keys after RoPE. (layers, capacity, groups * head_dim)
    k: Buf,
    /// Values. (layers, capacity, groups * head_dim)
    v: Buf,
}

impl KvCache {
    /// Allocates a cache for `capacity` positions of `layers` layers of `groups` kv groups of
    /// `head_dim`.
    pub fn new(
        ty: KvType,
        layers: usize,
        capacity: usize,
        groups: usize,
        head_dim: usize,
    ) -> Result<Self, ModelError> {
        let len = Self::elements(layers, capacity, groups, head_dim)
            .ok_or(ModelError::Overflow("kv cache size"))?;
        Ok(Self {
            ty,
            layers,
            capacity,
            groups,
            head_dim,
            len: 0,
            prefix: 0,
            k: Buf::new(ty, len)?,
            v: Buf::new(ty, len)?,
        })
    }

    /// Elements of each of the two tensors, `layers * capacity * groups * head_dim` (`None`
    /// on overflow).
    fn elements(layers: usize, capacity: usize, groups: usize, head_dim: usize) -> Option<usize> {
        layers
            .checked_mul(capacity)?
            .checked_mul(groups)?
            .checked_mul(head_dim)
    }

    /// Bytes a cache of these dimensions takes, keys and values together (`None` on
    /// overflow): what [`KvCache::new`] allocates, without allocating.
    pub fn bytes_for(
        ty: KvType,
        layers: usize,
        capacity: usize,
        groups: usize,
        head_dim: usize,
    ) -> Option<usize> {
        let elem = match ty {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        Self::elements(layers, capacity, groups, head_dim)?.checked_mul(2 * elem)
    }

    /// Element type.
    pub fn kv_type(&self) -> KvType {
        self.ty
    }

    /// Number of positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of valid positions (the next position to write).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes used by keys and values together.
    pub fn bytes(&self) -> usize {
        let elem = match self.ty {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        [self.layers, self.capacity, self.groups, self.head_dim, elem]
            .iter()
            .fold(2usize, |acc, &x| acc.saturating_mul(x))
    }

    /// Number of leading positions that hold a P-Tuning prefix (0 without one).
    pub fn prefix_len(&self) -> usize {
        self.prefix
    }

    /// Forgets every position from `len` on (no-op if `len >= self.len()`). To start a new
    /// conversation but keep a loaded prefix, truncate to [`KvCache::prefix_len`].
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.prefix = self.prefix.min(self.len);
    }

    /// Forgets everything, a prefix included.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Loads a P-Tuning v2 prefix: `n` virtual positions whose keys and values are given
    /// directly, laid out `(layers, n, groups * head_dim)`. The cache then holds exactly these
    /// `n` positions and the prompt follows at cache position `n`. As in the Hugging Face code
    /// (`ChatGLMModel.get_prompt`), the prefix keys are used as they are (no RoPE) and the real
    /// tokens keep RoPE positions counted from 0.
    pub fn load_prefix(
        &mut self,
        n: usize,
        keys: &[f32],
        values: &[f32],
    ) -> Result<(), ModelError> {
        let width = self.kv_dim();
        let expected = self.layers * n * width;
        if n > self.capacity {
            return Err(ModelError::ContextFull {
                needed: n,
                capacity: self.capacity,
            });
        }
        for (what, got) in [("prefix keys", keys.len()), ("prefix values", values.len())] {
            if got != expected {
                return Err(ModelError::BufferSize {
                    what,
                    expected,
                    got,
                });
            }
        }
        for layer in 0..self.layers {
            for pos in 0..n {
                let src = (layer * n + pos) * width..(layer * n + pos + 1) * width;
                self.store(layer, pos, &keys[src.clone()], &values[src]);
            }
        }
        self.len = n;
        self.prefix = n;
        Ok(())
    }

    /// `groups * head_dim`: the width of one cached position of one layer.
    fn kv_dim(&self) -> usize {
        self.groups * self.head_dim
    }

    fn offset(&self, layer: usize, pos: usize) -> usize {
        debug_assert!(layer < self.layers && pos < self.capacity);
        (layer * self.capacity + pos) * self.kv_dim()
    }

    /// Stores the keys and values (`groups * head_dim` each) of `pos` in `layer`. The caller
    /// (the forward pass) has checked `pos < capacity`.
    pub(crate) fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let at = self.offset(layer, pos);
        self.k.write(at, k);
        self.v.write(at, v);
    }

    /// Marks positions `0..len` valid after the forward pass wrote them.
    pub(crate) fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity);
        self.len = len;
    }

    /// `q . k[layer, pos, group]` for one head's query `q` (`head_dim`).
    pub(crate) fn key_dot(&self, layer: usize, pos: usize, group: usize, q: &[f32]) -> f32 {
        self.k
            .dot(self.offset(layer, pos) + group * self.head_dim, q)
    }

    /// Attention scores of several heads that read `group`: for head `j` (query
    /// `qs[j * head_dim..][..head_dim]`), `scores[j * stride + t] = scale * (q_j . k[layer, t,
    /// group])` for `t < n`. Positions go in blocks of [`ATT_BLOCK`], each read from memory
    /// once for all the heads. Same bits as [`KvCache::key_dot`] per position.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn key_scores(
        &self,
        layer: usize,
        group: usize,
        qs: &[f32],
        scale: f32,
        scores: &mut [f32],
        stride: usize,
        n: usize,
    ) {
        let k = kernels();
        let hd = self.head_dim;
        for t0 in (0..n).step_by(ATT_BLOCK) {
            let t1 = (t0 + ATT_BLOCK).min(n);
            for (q, s) in qs.chunks_exact(hd).zip(scores.chunks_mut(stride.max(1))) {
                let Some(s) = s.get_mut(t0..t1) else { continue };
                match &self.k {
                    Buf::F16(b) => {
                        let rows = self.rows(layer, group, t0, t1);
                        k.scores_f16_values(&b[rows], self.kv_dim(), q, scale, s);
                    }
                    Buf::F32(_) => {
                        for (t, s) in (t0..t1).zip(s) {
                            *s = self.key_dot(layer, t, group, q) * scale;
                        }
                    }
                }
            }
        }
    }

    /// Attention outputs of several heads that read `group`: head `j`'s output
    /// `outs[j * head_dim..][..head_dim]` is set to `sum_t weights[j * stride + t] * v[layer,
    /// t, group]` over `t < n`, accumulated in position order from 0. Positions go in blocks
    /// as in [`KvCache::key_scores`]. Same bits as [`KvCache::value_axpy`] position after
    /// position.
    pub(crate) fn value_mix(
        &self,
        layer: usize,
        group: usize,
        weights: &[f32],
        stride: usize,
        n: usize,
        outs: &mut [f32],
    ) {
        let k = kernels();
        let hd = self.head_dim;
        outs.fill(0.0);
        for t0 in (0..n).step_by(ATT_BLOCK) {
            let t1 = (t0 + ATT_BLOCK).min(n);
            for (o, w) in outs.chunks_exact_mut(hd).zip(weights.chunks(stride.max(1))) {
                let Some(w) = w.get(t0..t1) else { continue };
                match &self.v {
                    Buf::F16(b) => {
                        let rows = self.rows(layer, group, t0, t1);
                        k.mix_f16_values(&b[rows], self.kv_dim(), w, o);
                    }
                    Buf::F32(_) => {
                        for (t, &a) in (t0..t1).zip(w) {
                            self.value_axpy(layer, t, group, a, o);
                        }
                    }
                }
            }
        }
    }

    /// The elements spanned by positions `t0..t1` of `group` in `layer` (row `t` starts at
    /// `(t - t0) * kv_dim` in the range).
    fn rows(&self, layer: usize, group: usize, t0: usize, t1: usize) -> std::ops::Range<usize> {
        let start = self.offset(layer, t0) + group * self.head_dim;
        let n = t1.saturating_sub(t0);
        let len = n.saturating_sub(1) * self.kv_dim() + self.head_dim;
        start..start + if n == 0 { 0 } else { len }
    }

    /// `out += w * v[layer, pos, group]` (`out` is `head_dim`).
    pub(crate) fn value_axpy(
        &self,
        layer: usize,
        pos: usize,
        group: usize,
        w: f32,
        out: &mut [f32],
    ) {
        self.v
            .axpy(self.offset(layer, pos) + group * self.head_dim, w, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_kv_cache_store_and_read() {
        for ty in [KvType::F16, KvType::F32] {
            let mut c = KvCache::new(ty, 2, 3, 2, 4).unwrap();
            assert_eq!(
                c.bytes(),
                2 * 2 * 3 * 8 * if ty == KvType::F16 { 2 } else { 4 }
            );
            let k: Vec<f32> = (0..8).map(|i| i as f32 * 0.5).collect();
            let v: Vec<f32> = (0..8).map(|i| 1.0 - i as f32).collect();
            c.store(1, 2, &k, &v);
            // group 1 of the key: [2, 2.5, 3, 3.5]
            assert_eq!(c.key_dot(1, 2, 1, &[1.0, 0.0, 0.0, 2.0]), 2.0 + 7.0);
            assert_eq!(c.key_dot(0, 2, 1, &[1.0, 0.0, 0.0, 2.0]), 0.0);
            let mut out = [1.0; 4];
            c.value_axpy(1, 2, 0, 2.0, &mut out);
            assert_eq!(out, [3.0, 1.0, -1.0, -3.0]);
        }
    }

    #[test]
    fn model_kv_cache_batched_attention_equals_per_position() {
        for ty in [KvType::F16, KvType::F32] {
            let (layers, cap, groups, hd) = (2, 80, 2, 128);
            let mut c = KvCache::new(ty, layers, cap, groups, hd).unwrap();
            let mut seed = 1u32;
            let mut rnd = || {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            };
            for l in 0..layers {
                for p in 0..cap {
                    let k: Vec<f32> = (0..groups * hd).map(|_| rnd()).collect();
                    let v: Vec<f32> = (0..groups * hd).map(|_| rnd()).collect();
                    c.store(l, p, &k, &v);
                }
            }
            // Three heads, 70 positions (two blocks), rows of 80 scores.
            let (heads, n, stride) = (3, 70, 80);
            let qs: Vec<f32> = (0..heads * hd).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..heads * stride).map(|_| rnd().abs()).collect();
            let mut scores = vec![9.0f32; heads * stride];
            c.key_scores(1, 1, &qs, 0.3, &mut scores, stride, n);
            let mut outs = vec![1.0f32; heads * hd];
            c.value_mix(1, 1, &w, stride, n, &mut outs);
            for j in 0..heads {
                let q = &qs[j * hd..(j + 1) * hd];
                let mut want_out = vec![0.0f32; hd];
                for t in 0..n {
                    let s = scores[j * stride + t];
                    assert_eq!(s.to_bits(), (c.key_dot(1, t, 1, q) * 0.3).to_bits());
                    c.value_axpy(1, t, 1, w[j * stride + t], &mut want_out);
                }
                assert_eq!(scores[j * stride + n], 9.0);
                assert_eq!(&outs[j * hd..(j + 1) * hd], &want_out[..]);
            }
        }
    }

    #[test]
    fn model_kv_cache_prefix_and_truncate() {
        let mut c = KvCache::new(KvType::F32, 2, 4, 1, 4).unwrap();
        let keys: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let values = vec![0.0; 16];
        assert!(matches!(
            c.load_prefix(2, &keys[..8], &values),
            Err(ModelError::BufferSize { .. })
        ));
        assert!(matches!(
            c.load_prefix(5, &keys, &values),
            Err(ModelError::ContextFull { .. })
        ));
        c.load_prefix(2, &keys, &values).unwrap();
        assert_eq!((c.len(), c.prefix_len()), (2, 2));
        // layer 1, position 1 holds keys 12..16.
        assert_eq!(c.key_dot(1, 1, 0, &[1.0, 0.0, 0.0, 0.0]), 12.0);
        c.truncate(5);
        assert_eq!(c.len(), 2);
        c.truncate(1);
        assert_eq!((c.len(), c.prefix_len()), (1, 1));
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn model_kv_cache_overflow_is_an_error() {
        assert!(matches!(
            KvCache::new(KvType::F16, usize::MAX, 2, 2, 128),
            Err(ModelError::Overflow(_))
        ));
    }
}
