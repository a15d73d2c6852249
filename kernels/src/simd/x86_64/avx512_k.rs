//! AVX-512 (BW, VNNI) kernels for the k-quants Q4_K, Q5_K and Q6_K times Q8_K activations,
//! reading the file's blocks in place, four rows per pass.
//!
//! The scalar twin (ggml's generic dot) sums the integer products of a super-block in 8 lanes,
//! element `e` in lane `e % 8`, and folds those into 8 float lanes per block. `vpmaddubsw`
//! adds adjacent bytes, so the bytes of weights and activations are permuted alike within
//! every 32 bytes ([`lanes`]): dword `k` of each 256-bit half then holds the elements
//! `k, k + 8, k + 16, k + 24` of that half's 32, all of lane `k`. `vpmaddubsw` adds them in
//! pairs to i16 (no saturation: bounds at each use) and `vpdpwssd` multiplies the pairs by
//! their group scales into the i32 lane `k`; the two halves are added per block. The integer
//! sums are exact in any order, and the float part is the twin's per row, in its order:
//! `sums[l] += (f16(x.d) * y.d) * aux[l]`, `sumf -= (f16(x.dmin) * y.d) * sumi` per block,
//! then the lanes added to `sumf` in order; so every result has the twin's bits.
//!
//! Hoisted out of the row loop, once per super-block for the four rows: the activations'
//! permutation, Q6_K's `32 * a` terms (its levels are `q - 32`), the Q8_K `bsums` of the
//! minimum correction, `y.d`. Once per row and super-block: the 6-bit scales and minimums
//! (12 bytes, unpacked with 32-bit masks as ggml's x86 kernels do), the four rows' f16 `d`
//! converted together.
//!
//! Upstream: the arithmetic is the twin's (ggml-org/llama.cpp `ggml/src/ggml-cpu/quants.c`
//! @aec5bf1, `ggml_vec_dot_q{4,5,6}_K_q8_K_generic`); the scale unpacking
//! (`kmask1..3`, `utmp`) is that of `ggml_vec_dot_q4_K_q8_K` in
//! `ggml/src/ggml-cpu/arch/x86/quants.c` @aec5bf1.
//!
//! Safety: as in `avx512.rs`. Every function here is `#[target_feature]` with the features
//! that `avx512::kernels` checks (AVX-512 F/BW/VL/VNNI, AVX2, FMA, F16C) before it hands out
//! its table, whose wrappers are the only callers. Loads go through fixed-size array
//! references, so each is in bounds by its type.
#![allow(unsafe_code)]

use crate::quant::{BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use core::arch::x86_64::*;

/// Rows per pass.
const ROWS: usize = 4;

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_u8x64(p: &[u8; 64]) -> __m512i {
    // SAFETY: 64 readable bytes by the reference's type; the load is unaligned.
    unsafe { _mm512_loadu_si512(p.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_i8x64(p: &[i8; 64]) -> __m512i {
    // SAFETY: as in `load_u8x64`.
    unsafe { _mm512_loadu_si512(p.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_u8x32(p: &[u8; 32]) -> __m256i {
    // SAFETY: 32 readable bytes by the reference's type; the load is unaligned.
    unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
}

/// The 16 `bsums` of a Q8_K block as i16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_bsums(p: &[[u8; 2]; 16]) -> __m256i {
    // SAFETY: 16 x 2 = 32 readable bytes by the reference's type; the load is unaligned.
    unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
}

/// The 8 f32 lanes of `v`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn lanes_f32x8(v: __m256) -> [f32; 8] {
    let mut out = [0.0f32; 8];
    // SAFETY: `out` has room for 8 f32; the store is unaligned.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// The 4 f32 lanes of `v`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn lanes_f32x4(v: __m128) -> [f32; 4] {
    let mut out = [0.0f32; 4];
    // SAFETY: `out` has room for 4 f32; the store is unaligned.
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// The bytes of each 256-bit half permuted so that dword `k` holds the elements
/// `k, k + 8, k + 16, k + 24` of the half (all of the twin's lane `k`): dwords
/// `0 2 4 6 | 1 3 5 7` (one 128-bit lane holds lanes 0..4, the other 4..8), then a 4 x 4
/// byte transpose within each 128-bit lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn lanes(v: __m512i) -> __m512i {
    let dwords = _mm512_set_epi32(15, 13, 11, 9, 14, 12, 10, 8, 7, 5, 3, 1, 6, 4, 2, 0);
    let transpose = _mm512_broadcast_i32x4(_mm_setr_epi8(
        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
    ));
    _mm512_shuffle_epi8(_mm512_permutexvar_epi32(dwords, v), transpose)
}

/// A dword index vector: `lo` in the low 256 bits, `hi` in the high.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn halves(lo: i32, hi: i32) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_set1_epi32(lo)),
        _mm256_set1_epi32(hi),
    )
}

/// The 8 six-bit scales and 8 minimums of a Q4_K/Q5_K block, each doubled
/// (`s0 s0 s1 s1 ..`) as 16 i16 lanes, so that dword `g` holds group `g`'s value twice.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn scales_mins(q: &[u8; 12]) -> (__m256i, __m256i) {
    const K1: u32 = 0x3f3f_3f3f;
    const K2: u32 = 0x0f0f_0f0f;
    const K3: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (u0, u1, u2) = (word(0), word(1), word(2));
    // As `scale_min_k4`: groups 0..4 are the low 6 bits of bytes 0..4 (scales) and 4..8
    // (minimums); groups 4..8 take 4 bits from bytes 8..12 and 2 from the top of 0..8.
    let s_lo = u0 & K1;
    let s_hi = (u2 & K2) | (((u0 >> 6) & K3) << 4);
    let m_lo = u1 & K1;
    let m_hi = ((u2 >> 4) & K2) | (((u1 >> 6) & K3) << 4);
    let v = _mm_set_epi32(m_hi as i32, m_lo as i32, s_hi as i32, s_lo as i32);
    (
        _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(v, v)),
        _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(v, v)),
    )
}

/// The 8 i32 lanes of a block: the two 256-bit halves of `acc` added.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn fold_halves(acc: __m512i) -> __m256i {
    _mm256_add_epi32(
        _mm512_castsi512_si256(acc),
        _mm512_extracti64x4_epi64::<1>(acc),
    )
}

/// `[sum(v[0]), .., sum(v[3])]` of four vectors of 8 i32 (exact: the sums are small).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn sum4(v: &[__m256i; 4]) -> __m128i {
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// The float state of `R` rows: 8 lanes each (`sums`), and `sumf` of each row in a lane.
struct Fold<const R: usize> {
    sums: [__m256; R],
    sumf: __m128,
}

impl<const R: usize> Fold<R> {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn new() -> Self {
        Fold {
            sums: [_mm256_setzero_ps(); R],
            sumf: _mm_setzero_ps(),
        }
    }

    /// One block: `sums[r] += d[r] * aux[r]` with `d = f16(x.d) * y.d` (`dx` the rows' f16
    /// bits, 16 per row), and, with minimums, `sumf[r] -= (f16(x.dmin) * y.d) * sumi[r]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn block(&mut self, dy: f32, dx: u64, aux: &[__m256i; R], min: Option<(u64, __m128i)>) {
        let dy4 = _mm_set1_ps(dy);
        let d = lanes_f32x4(_mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi64_si128(dx as i64)), dy4));
        for r in 0..R {
            self.sums[r] = _mm256_add_ps(
                self.sums[r],
                _mm256_mul_ps(_mm256_set1_ps(d[r]), _mm256_cvtepi32_ps(aux[r])),
            );
        }
        if let Some((mx, sumi)) = min {
            let dmin = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi64_si128(mx as i64)), dy4);
            self.sumf = _mm_sub_ps(self.sumf, _mm_mul_ps(dmin, _mm_cvtepi32_ps(sumi)));
        }
    }

    /// `sumf + sums[0] + .. + sums[7]` per row, in that order.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn finish(&self, out: &mut [f32; R]) {
        let sumf = lanes_f32x4(self.sumf);
        for r in 0..R {
            let mut s = sumf[r];
            for l in lanes_f32x8(self.sums[r]) {
                s += l;
            }
            out[r] = s;
        }
    }
}

/// The activations of a Q4_K/Q5_K block in [`lanes`] order, matched to the weight vectors of
/// [`nibbles`]: groups `0 | 2`, `1 | 3`, `4 | 6`, `5 | 7` (low and high 256 bits).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn act_q4(by: &BlockQ8K) -> [__m512i; 4] {
    let x = by.qs.as_chunks::<64>().0;
    let (x0, x1, x2, x3) = (
        load_i8x64(&x[0]),
        load_i8x64(&x[1]),
        load_i8x64(&x[2]),
        load_i8x64(&x[3]),
    );
    [
        lanes(_mm512_shuffle_i64x2::<0x44>(x0, x1)),
        lanes(_mm512_shuffle_i64x2::<0xEE>(x0, x1)),
        lanes(_mm512_shuffle_i64x2::<0x44>(x2, x3)),
        lanes(_mm512_shuffle_i64x2::<0xEE>(x2, x3)),
    ]
}

/// The 4-bit levels of a Q4_K/Q5_K block's `qs` in [`lanes`] order: byte `i` of 32-byte
/// chunk `c` holds element `i` of group `2c` (low nibble) and `2c + 1` (high), so the two
/// 64-byte loads give groups `0 | 2`, `1 | 3`, `4 | 6`, `5 | 7`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibbles(qs: &[u8; 128]) -> [__m512i; 4] {
    let m4 = _mm512_set1_epi8(0x0F);
    let c = qs.as_chunks::<64>().0;
    let (p0, p1) = (lanes(load_u8x64(&c[0])), lanes(load_u8x64(&c[1])));
    [
        _mm512_and_si512(p0, m4),
        _mm512_and_si512(_mm512_srli_epi16::<4>(p0), m4),
        _mm512_and_si512(p1, m4),
        _mm512_and_si512(_mm512_srli_epi16::<4>(p1), m4),
    ]
}

/// The groups of the vectors of [`nibbles`] / [`act_q4`] (low, high 256 bits).
const GROUPS_Q4: [(i32, i32); 4] = [(0, 2), (1, 3), (4, 6), (5, 7)];

/// `sum_g scale_g * dot_g` in 16 i32 lanes (see the module docs) for the levels `q` of a
/// Q4_K/Q5_K block, `s` the doubled scales of [`scales_mins`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_q4(q: &[__m512i; 4], av: &[__m512i; 4], s: __m256i) -> __m256i {
    let s = _mm512_castsi256_si512(s);
    let mut acc = _mm512_setzero_si512();
    for ((&q, &a), (ga, gb)) in q.iter().zip(av).zip(GROUPS_Q4) {
        // Levels 0..31 times activations (|a| <= 128): pairs <= 7936, times scales <= 63.
        let sc = _mm512_permutexvar_epi32(halves(ga, gb), s);
        acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(q, a), sc);
    }
    fold_halves(acc)
}

/// `R` rows of Q4_K blocks (`rows[r]`, each as long as `a`) times `a`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4_k_pass<const R: usize>(rows: [&[BlockQ4K]; R], a: &[BlockQ8K], out: &mut [f32; R]) {
    let mut fold = Fold::<R>::new();
    for (b, by) in a.iter().enumerate() {
        let av = act_q4(by);
        let bsums = load_bsums(&by.bsums);
        let mut aux = [_mm256_setzero_si256(); R];
        let mut mins = [_mm256_setzero_si256(); 4];
        let (mut dx, mut mx) = (0u64, 0u64);
        for r in 0..R {
            let Some(bx) = rows[r].get(b) else {
                continue;
            };
            dx |= u64::from(u16::from_le_bytes(bx.d)) << (16 * r);
            mx |= u64::from(u16::from_le_bytes(bx.dmin)) << (16 * r);
            let (s, m) = scales_mins(&bx.scales);
            // sum_j bsums[j] * m[j / 2]: minimums <= 63 times sums of 16 (<= 2048).
            mins[r] = _mm256_madd_epi16(m, bsums);
            aux[r] = dot_q4(&nibbles(&bx.qs), &av, s);
        }
        fold.block(by.d(), dx, &aux, Some((mx, sum4(&mins))));
    }
    fold.finish(out);
}

/// `R` rows of Q5_K blocks times `a` (as [`q4_k_pass`], with the fifth bits).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q5_k_pass<const R: usize>(rows: [&[BlockQ5K]; R], a: &[BlockQ8K], out: &mut [f32; R]) {
    let sixteen = _mm512_set1_epi8(16);
    // Bit g of qh byte i is the fifth bit of element i of group g.
    let bits = GROUPS_Q4.map(|(ga, gb)| halves(0x0101_0101 << ga, 0x0101_0101 << gb));
    let mut fold = Fold::<R>::new();
    for (b, by) in a.iter().enumerate() {
        let av = act_q4(by);
        let bsums = load_bsums(&by.bsums);
        let mut aux = [_mm256_setzero_si256(); R];
        let mut mins = [_mm256_setzero_si256(); 4];
        let (mut dx, mut mx) = (0u64, 0u64);
        for r in 0..R {
            let Some(bx) = rows[r].get(b) else {
                continue;
            };
            dx |= u64::from(u16::from_le_bytes(bx.d)) << (16 * r);
            mx |= u64::from(u16::from_le_bytes(bx.dmin)) << (16 * r);
            let (s, m) = scales_mins(&bx.scales);
            mins[r] = _mm256_madd_epi16(m, bsums);
            let qh = lanes(_mm512_broadcast_i64x4(load_u8x32(&bx.qh)));
            let mut q = nibbles(&bx.qs);
            for (q, &bit) in q.iter_mut().zip(&bits) {
                *q = _mm512_mask_add_epi8(*q, _mm512_test_epi8_mask(qh, bit), *q, sixteen);
            }
            aux[r] = dot_q4(&q, &av, s);
        }
        fold.block(by.d(), dx, &aux, Some((mx, sum4(&mins))));
    }
    fold.finish(out);
}

/// `R` rows of Q6_K blocks times `a`. Half `n` (128 elements) of a block is one 64-byte
/// `ql` load (elements `32k + l`: `k` = 0 and 1 in the low nibbles of its two 32-byte
/// halves, 2 and 3 in the high) and 32 `qh` bytes (bits `2k, 2k + 1`), against the
/// activations `128n .. 128n + 64` and `128n + 64 .. 128n + 128`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q6_k_pass<const R: usize>(rows: [&[BlockQ6K]; R], a: &[BlockQ8K], out: &mut [f32; R]) {
    let m4 = _mm512_set1_epi8(0x0F);
    let m30 = _mm512_set1_epi8(0x30);
    let off = _mm512_set1_epi8(32);
    // The high bits moved to bits 4..6: k = 0, 1 left by 4, 2; k = 2, 3 right by 0, 2.
    let up = halves(0x0004_0004, 0x0002_0002);
    let down = halves(0, 0x0002_0002);
    let mut fold = Fold::<R>::new();
    for (b, by) in a.iter().enumerate() {
        let x = by.qs.as_chunks::<64>().0;
        let av: [__m512i; 4] = std::array::from_fn(|i| lanes(load_i8x64(&x[i])));
        // sum of 32 * a per pair: the `- 32` of the levels, the same for every row.
        let a32 = av.map(|v| _mm512_maddubs_epi16(off, v));
        let mut aux = [_mm256_setzero_si256(); R];
        let mut dx = 0u64;
        for r in 0..R {
            let Some(bx) = rows[r].get(b) else {
                continue;
            };
            dx |= u64::from(u16::from_le_bytes(bx.d)) << (16 * r);
            // 16 signed scales as i16: dword m holds the scales of groups 2m and 2m + 1.
            // SAFETY: 16 readable bytes by the field's type; the load is unaligned.
            let sc = unsafe { _mm_loadu_si128(bx.scales.as_ptr().cast()) };
            let sc = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(sc));
            let (ql, qh) = (bx.ql.as_chunks::<64>().0, bx.qh.as_chunks::<32>().0);
            let mut acc = _mm512_setzero_si512();
            for n in 0..2 {
                let l = lanes(load_u8x64(&ql[n]));
                let h = lanes(_mm512_broadcast_i64x4(load_u8x32(&qh[n])));
                let q = [
                    _mm512_or_si512(
                        _mm512_and_si512(l, m4),
                        _mm512_and_si512(_mm512_sllv_epi16(h, up), m30),
                    ),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16::<4>(l), m4),
                        _mm512_and_si512(_mm512_srlv_epi16(h, down), m30),
                    ),
                ];
                for (j, q) in q.into_iter().enumerate() {
                    let i = 2 * n + j;
                    // (q - 32) * a per pair: |.| <= 2 * 32 * 128; scales |s| <= 128.
                    let p = _mm512_sub_epi16(_mm512_maddubs_epi16(q, av[i]), a32[i]);
                    let m = 2 * i as i32;
                    let s = _mm512_permutexvar_epi32(halves(m, m + 1), sc);
                    acc = _mm512_dpwssd_epi32(acc, p, s);
                }
            }
            aux[r] = fold_halves(acc);
        }
        fold.block(by.d(), dx, &aux, None);
    }
    fold.finish(out);
}

/// Runs `pass` over `y.len()` rows of `w` (rows of `a.len()` blocks), four at a time, then
/// the rest one at a time; no activation blocks give zeros.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn by_rows<W>(
    w: &[W],
    a: &[BlockQ8K],
    y: &mut [f32],
    four: impl Fn([&[W]; ROWS], &mut [f32; ROWS]),
    one: impl Fn([&[W]; 1], &mut [f32; 1]),
) {
    let nb = a.len();
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    // As the twins: rows beyond the weights leave their outputs alone.
    let n = y.len().min(w.len() / nb);
    let mut rows = w.chunks_exact(nb);
    let (quads, rest) = y[..n].as_chunks_mut::<ROWS>();
    for out in quads {
        let r: [&[W]; ROWS] = std::array::from_fn(|_| rows.next().unwrap_or(&[]));
        four(r, out);
    }
    for out in rest.as_chunks_mut::<1>().0 {
        one([rows.next().unwrap_or(&[])], out);
    }
}

/// `y[r] = w_r . a` for Q4_K rows (the twin's bits).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn q4_k_rows(w: &[BlockQ4K], a: &[BlockQ8K], y: &mut [f32]) {
    by_rows(
        w,
        a,
        y,
        |r, o| q4_k_pass(r, a, o),
        |r, o| q4_k_pass(r, a, o),
    );
}

/// `y[r] = w_r . a` for Q5_K rows (the twin's bits).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn q5_k_rows(w: &[BlockQ5K], a: &[BlockQ8K], y: &mut [f32]) {
    by_rows(
        w,
        a,
        y,
        |r, o| q5_k_pass(r, a, o),
        |r, o| q5_k_pass(r, a, o),
    );
}

/// `y[r] = w_r . a` for Q6_K rows (the twin's bits).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn q6_k_rows(w: &[BlockQ6K], a: &[BlockQ8K], y: &mut [f32]) {
    by_rows(
        w,
        a,
        y,
        |r, o| q6_k_pass(r, a, o),
        |r, o| q6_k_pass(r, a, o),
    );
}
