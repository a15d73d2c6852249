//! x86-64 AVX2 kernels with VNNI on 256-bit registers (`vpdpbusd ymm`: four unsigned x signed
//! byte products summed straight into i32, no intermediate saturation), for CPUs that have it
//! without AVX-512: Intel since Alder Lake (AVX-VNNI, VEX-encoded).
//!
//! The kernel bodies are written once (the `vnni_kernels!` macro below) and compiled twice,
//! the one instruction that differs passed in:
//!
//! - [`vex`]: `_mm256_dpbusd_avx_epi32` under `avxvnni`, the table `avxvnni`
//!   ([`Isa::Avxvnni`](crate::isa::Isa::Avxvnni)), chosen automatically when AVX-512 VNNI is
//!   absent and AVX-VNNI is present;
//! - [`evex`]: `_mm256_dpbusd_epi32` under `avx512vnni,avx512vl` (the EVEX encoding of the same
//!   256-bit operation), the table `avxvnni-evex`
//!   ([`Isa::AvxvnniEvex`](crate::isa::Isa::AvxvnniEvex)), never chosen automatically: it
//!   runs the same code on CPUs with AVX-512 VNNI but no AVX-VNNI (AMD Zen 4 and 5), so that
//!   the tests compare these bodies with the scalar twins there.
//!
//! What VNNI speeds up: the row-interleaved products (Q4_0x8, Q8_0x8: one `vpdpbusd` per
//! 4-value unit of 8 rows, one row per i32 lane), their several-row tiles (the prompt: each
//! weight block decoded once for up to [`TILE_ROWS`] activation rows, the activation units
//! broadcast), and the one-row-at-a-time int8 products (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL:
//! `vpdpbusd` in place of `vpmaddubsw` + `vpmaddwd`). Every other entry (quantizers, k-quants,
//! float rows, attention) is the AVX2 table's function pointer. The integer sums are exact
//! whatever their order, and the float parts are the AVX2 kernels' (the reference's operations
//! in the reference's order, one row per lane), so the bits are the scalar twins'.
//!
//! Safety: each table is handed out by its module's `kernels()` only after every feature its
//! functions are compiled with was detected at run time (AVX2, FMA, F16C and the VNNI
//! features); the table's wrappers are the only callers of the `#[target_feature]` functions.
#![allow(unsafe_code)]

use super::avx2;
use crate::quant::{BlockQ4_0x8, BlockQ8_0x8};
use core::arch::x86_64::*;

/// Activation rows per prompt tile: 4 rows with two partial sums each give 8 independent
/// `vpdpbusd` chains (the instruction's latency is several cycles) while the partial sums and
/// the accumulators still fit the 16 ymm registers of the VEX encoding. Not measured on an
/// AVX-VNNI CPU yet (docs/PERFORMANCE.md).
pub(crate) const TILE_ROWS: usize = 4;

/// A row-interleaved block type as the prompt tiles read it (the parts that need only AVX2).
trait Tile: Sized {
    /// Added to every sum by the unsigned weights: `OFFSET * sum(activations)`.
    const OFFSET: i32;
    /// The 8 rows' unsigned weight units, unit `k` (values `4k..4k + 4` of each row, one row
    /// per i32 lane) in `out[k]`; it multiplies unit `k` of the activation block.
    ///
    /// # Safety
    /// The CPU must have AVX2 (only called from the tiles, which have it).
    unsafe fn units(blk: &Self) -> [__m256i; 8];
    /// The 8 scales as f32.
    ///
    /// # Safety
    /// As [`Tile::units`].
    unsafe fn scales(blk: &Self) -> __m256;
    /// The float part of one block: the accumulator after it (`sumi` the exact integer dot).
    ///
    /// # Safety
    /// As [`Tile::units`].
    unsafe fn step(acc: __m256, sumi: __m256i, dx: __m256, dy: f32) -> __m256;
}

impl Tile for BlockQ4_0x8 {
    const OFFSET: i32 = 8;

    #[inline(always)]
    unsafe fn units(blk: &Self) -> [__m256i; 8] {
        // SAFETY: the caller has AVX2 (the function's contract).
        unsafe {
            let m4 = _mm256_set1_epi8(0x0F);
            // Chunk c: low nibbles are values 4c.. (unit c), high nibbles values 16 + 4c..
            // (unit 4 + c). Written out: no closures in the hot loop.
            let v = [
                avx2::load_u8x32(&blk.qs[0]),
                avx2::load_u8x32(&blk.qs[1]),
                avx2::load_u8x32(&blk.qs[2]),
                avx2::load_u8x32(&blk.qs[3]),
            ];
            let mut u = [_mm256_setzero_si256(); 8];
            for c in 0..4 {
                u[c] = _mm256_and_si256(v[c], m4);
                u[c + 4] = _mm256_and_si256(_mm256_srli_epi16::<4>(v[c]), m4);
            }
            u
        }
    }

    #[inline(always)]
    unsafe fn scales(blk: &Self) -> __m256 {
        // SAFETY: as in `units`.
        unsafe { avx2::load_scales(&blk.d) }
    }

    #[inline(always)]
    unsafe fn step(acc: __m256, sumi: __m256i, dx: __m256, dy: f32) -> __m256 {
        // SAFETY: as in `units`.
        unsafe {
            // Reference (q4_0): sumi as f32 * dx * dy.
            let t = _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), dx);
            _mm256_add_ps(acc, _mm256_mul_ps(t, _mm256_set1_ps(dy)))
        }
    }
}

impl Tile for BlockQ8_0x8 {
    const OFFSET: i32 = 128;

    #[inline(always)]
    unsafe fn units(blk: &Self) -> [__m256i; 8] {
        // SAFETY: as for Q4_0x8.
        unsafe {
            // Chunk c holds values 4c..4c + 4 of each row; `xor 0x80` adds 128 (unsigned).
            let flip = _mm256_set1_epi8(-128);
            let mut u = [_mm256_setzero_si256(); 8];
            for (u, c) in u.iter_mut().zip(&blk.qs) {
                *u = _mm256_xor_si256(avx2::load_i8x32(c), flip);
            }
            u
        }
    }

    #[inline(always)]
    unsafe fn scales(blk: &Self) -> __m256 {
        // SAFETY: as for Q4_0x8.
        unsafe { avx2::load_scales(&blk.d) }
    }

    #[inline(always)]
    unsafe fn step(acc: __m256, sumi: __m256i, dx: __m256, dy: f32) -> __m256 {
        // SAFETY: as for Q4_0x8.
        unsafe {
            // Reference (q8_0): sumi as f32 * (dx * dy).
            let dxy = _mm256_mul_ps(dx, _mm256_set1_ps(dy));
            _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), dxy))
        }
    }
}

/// Per activation block: the unsigned weights' offset `-OFFSET * sum` and the scale, side by
/// side (one load stream per row in the tile instead of two).
#[derive(Clone, Copy)]
struct Aux {
    off: i32,
    dy: f32,
}

/// The kernels that use `vpdpbusd`, compiled with the target features `$features` and the
/// 256-bit dot `$dp` (`dpbusd(acc, unsigned, signed)`), plus the table `KERNELS` of
/// instruction set `$isa` (the AVX2 table for every other entry). Expanded in [`vex`] and
/// [`evex`].
macro_rules! vnni_kernels {
    ($features:literal, $dp:ident, $isa:expr) => {
        use super::avx2;
        use super::{Aux, Tile, TILE_ROWS};
        use crate::act::Q8Row;
        use crate::quant::{
            BlockIq4Nl, BlockQ4_0, BlockQ4_0x8, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0,
            BlockQ8_0x8, BlockQ8_1,
        };
        use crate::simd::Kernels;
        use core::arch::x86_64::*;

        /// Reachable only through `kernels()` (see the module docs of `avxvnni`).
        static KERNELS: Kernels = Kernels {
            isa: $isa,
            rows_q4_0,
            rows_q8_0,
            rows_q4_1,
            rows_q5_0,
            rows_q5_1,
            rows_iq4_nl,
            rows_q4_0x8,
            rows_q8_0x8,
            gemm_q4_0x8,
            gemm_q8_0x8,
            ..avx2::KERNELS
        };

        // ---- Safe wrappers. Each `unsafe` call relies on the same fact: the table is
        // ---- handed out only after every feature in `$features` was detected.

        fn rows_q4_0(w: &[BlockQ4_0], a: Q8Row<'_>, y: &mut [f32]) {
            // SAFETY: reachable only through `kernels()`, after the feature check.
            unsafe { q4_0_rows(w, a, y) }
        }

        fn rows_q8_0(w: &[BlockQ8_0], a: Q8Row<'_>, y: &mut [f32]) {
            // SAFETY: as in `rows_q4_0`.
            unsafe { q8_0_rows(w, a, y) }
        }

        fn rows_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1], y: &mut [f32]) {
            // SAFETY: as in `rows_q4_0`.
            unsafe { q4_1_rows(w, a, y) }
        }

        fn rows_q5_0(w: &[BlockQ5_0], a: Q8Row<'_>, y: &mut [f32]) {
            // SAFETY: as in `rows_q4_0`.
            unsafe { q5_0_rows(w, a, y) }
        }

        fn rows_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1], y: &mut [f32]) {
            // SAFETY: as in `rows_q4_0`.
            unsafe { q5_1_rows(w, a, y) }
        }

        fn rows_iq4_nl(w: &[BlockIq4Nl], a: Q8Row<'_>, y: &mut [f32]) {
            // SAFETY: as in `rows_q4_0`.
            unsafe { iq4_nl_rows(w, a, y) }
        }

        fn rows_q4_0x8(w: &[BlockQ4_0x8], a: Q8Row<'_>, y: &mut [f32]) {
            // SAFETY: as in `rows_q4_0`.
            unsafe { q4_0x8_rows(w, a, y) }
        }

        fn rows_q8_0x8(w: &[BlockQ8_0x8], a: Q8Row<'_>, y: &mut [f32]) {
            // SAFETY: as in `rows_q4_0`.
            unsafe { q8_0x8_rows(w, a, y) }
        }

        fn gemm_q4_0x8(w: &[BlockQ4_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
            // SAFETY: as in `rows_q4_0`.
            unsafe { gemm(w, a, y, rows_q4_0x8) }
        }

        fn gemm_q8_0x8(w: &[BlockQ8_0x8], a: &[Q8Row<'_>], y: &mut [&mut [f32]]) {
            // SAFETY: as in `rows_q4_0`.
            unsafe { gemm(w, a, y, rows_q8_0x8) }
        }

        /// `dpbusd(acc, unsigned, signed)`: the one instruction this expansion is about.
        #[inline]
        #[target_feature(enable = $features)]
        fn dp(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
            $dp(acc, u, s)
        }

        // ---- Row-interleaved products: lane r is row r, no folding.

        /// `y[8g + r]` for each group of `a.len()` Q4_0x8 blocks (as `avx2`'s, whose i16
        /// sums become one `vpdpbusd` per unit), through [`by_group_pairs`].
        #[target_feature(enable = $features)]
        fn q4_0x8_rows(w: &[BlockQ4_0x8], a: Q8Row<'_>, y: &mut [f32]) {
            let m4 = _mm256_set1_epi8(0x0F);
            // Two chains (low and high nibbles), the first from the `- 8` offset.
            let block = |blk: &BlockQ4_0x8, u: &[__m256i; 8], s: i32| {
                let mut p0 = _mm256_set1_epi32(-8 * s);
                let mut p1 = _mm256_setzero_si256();
                for (c, chunk) in blk.qs.iter().enumerate() {
                    let v = avx2::load_u8x32(chunk);
                    let lo = _mm256_and_si256(v, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
                    p0 = dp(p0, lo, u[c]);
                    p1 = dp(p1, hi, u[c + 4]);
                }
                _mm256_add_epi32(p0, p1)
            };
            // Reference (q4_0): sumi as f32 * dx * dy.
            let step = |acc: __m256, sumi: __m256i, blk: &BlockQ4_0x8, dy: __m256| {
                let t = _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), avx2::load_scales(&blk.d));
                _mm256_add_ps(acc, _mm256_mul_ps(t, dy))
            };
            by_group_pairs(w, a, y, block, step);
        }

        /// `y[8g + r]` for each group of `a.len()` Q8_0x8 blocks, through
        /// [`by_group_pairs`]: the weights made unsigned by `xor 0x80` (+128), which adds
        /// `128 * sum(a)` to each row's sum.
        #[target_feature(enable = $features)]
        fn q8_0x8_rows(w: &[BlockQ8_0x8], a: Q8Row<'_>, y: &mut [f32]) {
            let flip = _mm256_set1_epi8(-128);
            let block = |blk: &BlockQ8_0x8, u: &[__m256i; 8], s: i32| {
                let mut p = [_mm256_set1_epi32(-128 * s), _mm256_setzero_si256()];
                for (c, chunk) in blk.qs.iter().enumerate() {
                    let v = _mm256_xor_si256(avx2::load_i8x32(chunk), flip);
                    p[c % 2] = dp(p[c % 2], v, u[c]);
                }
                _mm256_add_epi32(p[0], p[1])
            };
            // Reference (q8_0): sumi as f32 * (dx * dy).
            let step = |acc: __m256, sumi: __m256i, blk: &BlockQ8_0x8, dy: __m256| {
                let dxy = _mm256_mul_ps(avx2::load_scales(&blk.d), dy);
                _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), dxy))
            };
            by_group_pairs(w, a, y, block, step);
        }

        /// The row-interleaved decode loop: `y[8g + r]` for each group of `a.len()` blocks,
        /// two groups per pass where it can (the activation broadcasts and per-block scalars
        /// then serve 16 rows, and two weight streams are in flight: one group per pass read
        /// 15% slower from memory on an Intel Xeon), a last group without a partner alone.
        /// `block(blk, units, sum(a))` is a block's integer sums per lane, `step(acc, sumi,
        /// blk, dy)` adds its float part: per lane the same operations as one group alone.
        #[inline]
        #[target_feature(enable = $features)]
        fn by_group_pairs<W>(
            w: &[W],
            a: Q8Row<'_>,
            y: &mut [f32],
            block: impl Fn(&W, &[__m256i; 8], i32) -> __m256i,
            step: impl Fn(__m256, __m256i, &W, __m256) -> __m256,
        ) {
            let nb = a.len();
            if nb == 0 {
                y.fill(0.0);
                return;
            }
            let groups = (y.len() / 8).min(w.len() / nb);
            let (pairs, _) = y[..16 * (groups / 2)].as_chunks_mut::<16>();
            for (out, wp) in pairs.iter_mut().zip(w.chunks_exact(2 * nb)) {
                let (wg, wh) = wp.split_at(nb);
                let (mut acc_g, mut acc_h) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let act = a.blocks().iter().zip(a.d()).zip(a.sum());
                for ((g, h), ((ab, &dy), &s)) in wg.iter().zip(wh).zip(act) {
                    avx2::prefetch_ahead(g);
                    avx2::prefetch_ahead(h);
                    let u = avx2::act_groups(&ab.qs).map(|v| _mm256_set1_epi32(v));
                    let (sg, sh) = (block(g, &u, s), block(h, &u, s));
                    let dy = _mm256_set1_ps(dy);
                    acc_g = step(acc_g, sg, g, dy);
                    acc_h = step(acc_h, sh, h, dy);
                }
                let (og, oh) = out.split_at_mut(8);
                if let (Ok(og), Ok(oh)) =
                    (<&mut [f32; 8]>::try_from(og), <&mut [f32; 8]>::try_from(oh))
                {
                    avx2::store_f32x8(og, acc_g);
                    avx2::store_f32x8(oh, acc_h);
                }
            }
            if groups % 2 == 1 {
                let g = groups - 1;
                let (group, out) = (&w[g * nb..][..nb], &mut y[8 * g..8 * g + 8]);
                let mut acc = _mm256_setzero_ps();
                for (((blk, ab), &dy), &s) in group.iter().zip(a.blocks()).zip(a.d()).zip(a.sum()) {
                    avx2::prefetch_ahead(blk);
                    let u = avx2::act_groups(&ab.qs).map(|v| _mm256_set1_epi32(v));
                    acc = step(acc, block(blk, &u, s), blk, _mm256_set1_ps(dy));
                }
                if let Ok(out) = <&mut [f32; 8]>::try_from(out) {
                    avx2::store_f32x8(out, acc);
                }
            }
        }

        // ---- Several activation rows at once (the prompt): per 8-row group, each weight
        // ---- block is decoded once for `TILE_ROWS` activation rows, whose 4-byte units are
        // ---- broadcast to the 8 lanes; then each row's float part as in the row kernels.

        /// See [`crate::simd::Kernels::gemm_q4_0x8`]. Rows of another length than `a[0]`
        /// (or an empty `a[0]`) go through `rows` one by one (`gemm_by_rows`).
        #[target_feature(enable = $features)]
        fn gemm<W: Tile>(
            w: &[W],
            a: &[Q8Row<'_>],
            y: &mut [&mut [f32]],
            rows: fn(&[W], Q8Row<'_>, &mut [f32]),
        ) {
            let n = a.len().min(y.len());
            let (a, y) = (&a[..n], &mut y[..n]);
            let nb = a.first().map_or(0, Q8Row::len);
            if nb == 0 || a.iter().any(|ai| ai.len() != nb) {
                return crate::simd::gemm_by_rows(rows, w, a, y);
            }
            let groups = y.iter().map(|yi| yi.len() / 8).min().unwrap_or(0);
            let groups = groups.min(w.len() / nb);
            let aux: Vec<Aux> = a
                .iter()
                .flat_map(|ai| {
                    ai.sum().iter().zip(ai.d()).map(|(&sum, &dy)| Aux {
                        off: -W::OFFSET * sum,
                        dy,
                    })
                })
                .collect();
            let aux: Vec<&[Aux]> = aux.chunks_exact(nb).collect();
            let qs: Vec<&[BlockQ8_0]> = a.iter().map(|ai| ai.blocks()).collect();
            for (g, wg) in w.chunks_exact(nb).take(groups).enumerate() {
                let col = 8 * g;
                let mut i = 0;
                while i + TILE_ROWS <= n {
                    let part = (&qs[i..i + TILE_ROWS], &aux[i..i + TILE_ROWS]);
                    let yt = &mut y[i..i + TILE_ROWS];
                    // The first rows to pass bring the weights in; the others find them in
                    // cache.
                    if i == 0 {
                        tile::<W, TILE_ROWS, true>(wg, part, yt, col);
                    } else {
                        tile::<W, TILE_ROWS, false>(wg, part, yt, col);
                    }
                    i += TILE_ROWS;
                }
                let part = (&qs[i..], &aux[i..]);
                let pf = i == 0;
                match (n - i, pf) {
                    (3, true) => tile::<W, 3, true>(wg, part, &mut y[i..], col),
                    (3, false) => tile::<W, 3, false>(wg, part, &mut y[i..], col),
                    (2, true) => tile::<W, 2, true>(wg, part, &mut y[i..], col),
                    (2, false) => tile::<W, 2, false>(wg, part, &mut y[i..], col),
                    (1, true) => tile::<W, 1, true>(wg, part, &mut y[i..], col),
                    (1, false) => tile::<W, 1, false>(wg, part, &mut y[i..], col),
                    _ => {}
                }
            }
        }

        /// Outputs `col..col + 8` of `R` activation rows (their blocks and [`Aux`]) from the
        /// group `wg`, prefetching the weights ahead if `PF`. All of equal length, and `y[r]`
        /// at least `col + 8` long (checked by `gemm`; else nothing).
        #[inline]
        #[target_feature(enable = $features)]
        fn tile<W: Tile, const R: usize, const PF: bool>(
            wg: &[W],
            (qs, aux): (&[&[BlockQ8_0]], &[&[Aux]]),
            y: &mut [&mut [f32]],
            col: usize,
        ) {
            let nb = wg.len();
            let (Ok(qs), Ok(aux)) = (
                <&[&[BlockQ8_0]; R]>::try_from(qs),
                <&[&[Aux]; R]>::try_from(aux),
            ) else {
                return;
            };
            if qs.iter().any(|q| q.len() != nb) || aux.iter().any(|x| x.len() != nb) {
                return;
            }
            let mut acc = [_mm256_setzero_ps(); R];
            for (b, blk) in wg.iter().enumerate() {
                if PF {
                    avx2::prefetch_ahead(blk);
                }
                // SAFETY: this function has AVX2 (`$features` includes it).
                let (units, dx) = unsafe { (W::units(blk), W::scales(blk)) };
                // Two partial sums per row (even and odd units), the first from the
                // unsigned weights' offset; exact integers, so any order gives the same.
                // (Plain loops: a closure here would not be inlined, having these features.)
                let mut p = [[_mm256_setzero_si256(); 2]; R];
                for r in 0..R {
                    p[r][0] = _mm256_set1_epi32(aux[r][b].off);
                }
                for k in 0..8 {
                    for r in 0..R {
                        let g = avx2::act_groups(&qs[r][b].qs)[k];
                        p[r][k % 2] = dp(p[r][k % 2], units[k], _mm256_set1_epi32(g));
                    }
                }
                for r in 0..R {
                    let sumi = _mm256_add_epi32(p[r][0], p[r][1]);
                    // SAFETY: as above.
                    acc[r] = unsafe { W::step(acc[r], sumi, dx, aux[r][b].dy) };
                }
            }
            for (acc, yi) in acc.iter().zip(y.iter_mut()) {
                if let Some(out) = yi
                    .get_mut(col..col + 8)
                    .and_then(|o| <&mut [f32; 8]>::try_from(o).ok())
                {
                    avx2::store_f32x8(out, *acc);
                }
            }
        }

        // ---- One row after another, 8 rows at a time (`avx2::by_eight`): the per-row
        // ---- `vpmaddubsw` + `vpmaddwd` of the AVX2 kernels become one `vpdpbusd` (their
        // ---- i16 pairs never saturate, so the sums are the same).

        #[target_feature(enable = $features)]
        fn q4_0_rows(w: &[BlockQ4_0], a: Q8Row<'_>, y: &mut [f32]) {
            let (ab, ad, asum) = (a.blocks(), a.d(), a.sum());
            avx2::by_eight(w, a.len(), y, |rows, b| {
                let (Some(act), Some(&dy), Some(&s)) = (ab.get(b), ad.get(b), asum.get(b)) else {
                    return _mm256_setzero_ps();
                };
                let av = avx2::load_i8x32(&act.qs);
                let blocks: [&BlockQ4_0; 8] = std::array::from_fn(|r| &rows[r][b]);
                let zero = _mm256_setzero_si256();
                let p: [__m256i; 8] =
                    std::array::from_fn(|r| dp(zero, avx2::nibbles(&blocks[r].qs), av));
                let sumi = _mm256_sub_epi32(avx2::transpose_sum(&p), _mm256_set1_epi32(8 * s));
                let dx = avx2::gather_f16(|r| blocks[r].d);
                _mm256_mul_ps(
                    _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), dx),
                    _mm256_set1_ps(dy),
                )
            });
        }

        #[target_feature(enable = $features)]
        fn q8_0_rows(w: &[BlockQ8_0], a: Q8Row<'_>, y: &mut [f32]) {
            let (ab, ad) = (a.blocks(), a.d());
            avx2::by_eight(w, a.len(), y, |rows, b| {
                let (Some(act), Some(&dy)) = (ab.get(b), ad.get(b)) else {
                    return _mm256_setzero_ps();
                };
                let av = avx2::load_i8x32(&act.qs);
                let blocks: [&BlockQ8_0; 8] = std::array::from_fn(|r| &rows[r][b]);
                let zero = _mm256_setzero_si256();
                let p: [__m256i; 8] = std::array::from_fn(|r| {
                    // |w| * (a * sign(w)) = w * a (|w| <= 128 as an unsigned byte).
                    let v = avx2::load_i8x32(&blocks[r].qs);
                    dp(zero, _mm256_abs_epi8(v), _mm256_sign_epi8(av, v))
                });
                let dxy = _mm256_mul_ps(avx2::gather_f16(|r| blocks[r].d), _mm256_set1_ps(dy));
                _mm256_mul_ps(_mm256_cvtepi32_ps(avx2::transpose_sum(&p)), dxy)
            });
        }

        #[target_feature(enable = $features)]
        fn q4_1_rows(w: &[BlockQ4_1], a: &[BlockQ8_1], y: &mut [f32]) {
            avx2::by_eight(w, a.len(), y, |rows, b| {
                let Some(act) = a.get(b) else {
                    return _mm256_setzero_ps();
                };
                let av = avx2::load_i8x32(&act.qs);
                let blocks: [&BlockQ4_1; 8] = std::array::from_fn(|r| &rows[r][b]);
                let zero = _mm256_setzero_si256();
                let p: [__m256i; 8] =
                    std::array::from_fn(|r| dp(zero, avx2::nibbles(&blocks[r].qs), av));
                let sumi = _mm256_cvtepi32_ps(avx2::transpose_sum(&p));
                // Reference (q4_1): (dx * dy) * sumi as f32 + m * s.
                let dxy = _mm256_mul_ps(avx2::gather_f16(|r| blocks[r].d), _mm256_set1_ps(act.d()));
                let ms = _mm256_mul_ps(avx2::gather_f16(|r| blocks[r].m), _mm256_set1_ps(act.s()));
                _mm256_add_ps(_mm256_mul_ps(dxy, sumi), ms)
            });
        }

        #[target_feature(enable = $features)]
        fn q5_0_rows(w: &[BlockQ5_0], a: Q8Row<'_>, y: &mut [f32]) {
            let (ab, ad, asum) = (a.blocks(), a.d(), a.sum());
            avx2::by_eight(w, a.len(), y, |rows, b| {
                let (Some(act), Some(&dy), Some(&s)) = (ab.get(b), ad.get(b), asum.get(b)) else {
                    return _mm256_setzero_ps();
                };
                let av = avx2::load_i8x32(&act.qs);
                let blocks: [&BlockQ5_0; 8] = std::array::from_fn(|r| &rows[r][b]);
                let zero = _mm256_setzero_si256();
                // Levels 0..31 (unsigned); the `- 16` as `- 16 * sum(a)`.
                let p: [__m256i; 8] = std::array::from_fn(|r| {
                    let q = _mm256_or_si256(
                        avx2::nibbles(&blocks[r].qs),
                        avx2::q5_high_bits(&blocks[r].qh),
                    );
                    dp(zero, q, av)
                });
                let sumi = _mm256_sub_epi32(avx2::transpose_sum(&p), _mm256_set1_epi32(16 * s));
                // Reference (q5_0): (dx * dy) * sumi as f32.
                let dxy = _mm256_mul_ps(avx2::gather_f16(|r| blocks[r].d), _mm256_set1_ps(dy));
                _mm256_mul_ps(dxy, _mm256_cvtepi32_ps(sumi))
            });
        }

        #[target_feature(enable = $features)]
        fn q5_1_rows(w: &[BlockQ5_1], a: &[BlockQ8_1], y: &mut [f32]) {
            avx2::by_eight(w, a.len(), y, |rows, b| {
                let Some(act) = a.get(b) else {
                    return _mm256_setzero_ps();
                };
                let av = avx2::load_i8x32(&act.qs);
                let blocks: [&BlockQ5_1; 8] = std::array::from_fn(|r| &rows[r][b]);
                let zero = _mm256_setzero_si256();
                let p: [__m256i; 8] = std::array::from_fn(|r| {
                    let q = _mm256_or_si256(
                        avx2::nibbles(&blocks[r].qs),
                        avx2::q5_high_bits(&blocks[r].qh),
                    );
                    dp(zero, q, av)
                });
                let sumi = _mm256_cvtepi32_ps(avx2::transpose_sum(&p));
                // Reference (q5_1): (dx * dy) * sumi as f32 + m * s.
                let dxy = _mm256_mul_ps(avx2::gather_f16(|r| blocks[r].d), _mm256_set1_ps(act.d()));
                let ms = _mm256_mul_ps(avx2::gather_f16(|r| blocks[r].m), _mm256_set1_ps(act.s()));
                _mm256_add_ps(_mm256_mul_ps(dxy, sumi), ms)
            });
        }

        #[target_feature(enable = $features)]
        fn iq4_nl_rows(w: &[BlockIq4Nl], a: Q8Row<'_>, y: &mut [f32]) {
            // The table in both 128-bit lanes, for `vpshufb` (indices 0..15).
            let table = {
                let t = crate::quant::iq4_nl::KVALUES_IQ4NL;
                let b: [u8; 16] = t.map(|v| v as u8);
                // SAFETY: 16 readable bytes; `loadu` has no alignment requirement.
                let lane = unsafe { _mm_loadu_si128(b.as_ptr().cast()) };
                _mm256_set_m128i(lane, lane)
            };
            let (ab, ad) = (a.blocks(), a.d());
            avx2::by_eight(w, a.len(), y, |rows, b| {
                let (Some(act), Some(&dy)) = (ab.get(b), ad.get(b)) else {
                    return _mm256_setzero_ps();
                };
                let av = avx2::load_i8x32(&act.qs);
                let blocks: [&BlockIq4Nl; 8] = std::array::from_fn(|r| &rows[r][b]);
                let zero = _mm256_setzero_si256();
                let p: [__m256i; 8] = std::array::from_fn(|r| {
                    // Table values (-127..=113) times activations as |v| * (a * sign(v)).
                    let v = _mm256_shuffle_epi8(table, avx2::nibbles(&blocks[r].qs));
                    dp(zero, _mm256_abs_epi8(v), _mm256_sign_epi8(av, v))
                });
                // Reference (iq4_nl): (f16(y.d) * f16(x.d)) * sumi.
                let d = _mm256_mul_ps(_mm256_set1_ps(dy), avx2::gather_f16(|r| blocks[r].d));
                _mm256_mul_ps(d, _mm256_cvtepi32_ps(avx2::transpose_sum(&p)))
            });
        }
    };
}

/// The `avxvnni` table: AVX-VNNI (VEX `vpdpbusd ymm`) plus AVX2, FMA, F16C.
pub mod vex {
    vnni_kernels!(
        "avx2,fma,f16c,avxvnni",
        _mm256_dpbusd_avx_epi32,
        crate::isa::Isa::Avxvnni
    );

    /// The `avxvnni` kernels, if this CPU has AVX-VNNI, AVX2, FMA and F16C.
    pub fn kernels() -> Option<&'static Kernels> {
        if is_x86_feature_detected!("avxvnni")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            Some(&KERNELS)
        } else {
            None
        }
    }
}

/// The `avxvnni-evex` table: the same kernels with the EVEX `vpdpbusd ymm` of AVX-512 VNNI
/// and VL (so they run, and are tested, where AVX-VNNI is missing); never chosen
/// automatically.
pub mod evex {
    vnni_kernels!(
        "avx2,fma,f16c,avx512vnni,avx512vl",
        _mm256_dpbusd_epi32,
        crate::isa::Isa::AvxvnniEvex
    );

    /// The `avxvnni-evex` kernels, if this CPU has AVX-512 VNNI and VL, AVX2, FMA and F16C.
    pub fn kernels() -> Option<&'static Kernels> {
        if is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            Some(&KERNELS)
        } else {
            None
        }
    }
}
