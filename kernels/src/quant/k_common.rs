//! Arithmetic shared by the super-block types (k-quants, IQ4_XS): ggml's `nearest_int`, the
//! 6-bit scale packing of Q4_K/Q5_K, the scale searches of the reference quantizers, and the
//! summation order of ggml's generic k-quant dot products.
//!
//! Upstream: ggml-org/llama.cpp `ggml/src/ggml-quants.c` @36491e4 (helpers) and
//! `ggml/src/ggml-cpu/quants.c` @aec5bf1 (dot products).

use super::{f16_le, to_f16_le};
use crate::types::QK_K;

/// ggml's `nearest_int`: `fval` rounded to nearest, ties to even, through the bits of
/// `fval + 1.5 * 2^23` (exact for `|fval| <= 4194303`, as ggml asserts; larger values wrap
/// as the C code does without assertions).
// Port of `nearest_int`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
pub(crate) fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

/// The 6-bit scale and minimum of group `j` (0..8) of a Q4_K/Q5_K block's 12 scale bytes.
// Port of `get_scale_min_k4`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
pub(crate) fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs 8 six-bit scales and minimums into 12 bytes (the inverse of [`scale_min_k4`]).
// From `quantize_row_q4_K_ref`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
pub(crate) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// The scales of a Q4_K or Q5_K block and its levels `l` in `0..=nmax`: the common part of
/// ggml's two reference quantizers. Each group of 32 gets `make_qkx2_quants` (weights
/// `sqrt(mean x^2) + |x|`, search from `rmin` in `nstep` steps); the 8 scales and minimums
/// are stored as 6-bit multiples of the block's f16 `d` and `dmin`; then every level is
/// recomputed from the stored (rounded) scales. Returns `(d, dmin, scales)` as stored.
// From `quantize_row_q4_K_ref` / `quantize_row_q5_K_ref`, ggml-org/llama.cpp
// ggml/src/ggml-quants.c @36491e4.
pub(crate) fn quantize_scale_min_k4(
    x: &[f32; QK_K],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
) -> ([u8; 2], [u8; 2], [u8; 12]) {
    let mut weights = [0.0f32; 32];
    let mut mins = [0.0f32; 8];
    let mut scales = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2 = xs.iter().fold(0.0f32, |s, &v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // C: uint8_t ls = nearest_int(...) keeps the low byte; then MIN(63, ls).
    let ls: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
    let lm: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
    let (d, dmin) = (to_f16_le(max_scale / 63.0), to_f16_le(max_min / 63.0));
    let packed = pack_scale_min_k4(&ls, &lm);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dj = f16_le(d) * f32::from(sc);
        if dj == 0.0 {
            continue;
        }
        let dm = f16_le(dmin) * f32::from(m);
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / dj);
            l[32 * j + ii] = q.clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed)
}

/// `make_qkx2_quants`: levels `l[i]` in `0..=nmax` and `(scale, the_min)` with
/// `x ~ scale * l - the_min`, searched over `nstep + 1` candidate scales, weighted by
/// `weights`, with absolute (`use_mad`) or squared error.
// Port of `make_qkx2_quants`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut laux = [0u8; 32];
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let err = |diff: f32| if use_mad { diff.abs() } else { diff * diff };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min));
        l[i] = q.clamp(0, nmax) as u8;
        let diff = scale * f32::from(l[i]) + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let lf = q as f32;
            let w = weights[i];
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * f32::from(laux[i]) + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `GROUP_MAX_EPS`.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// `make_qx_quants` with `rmse_type == 1` and no importance weights (what the reference
/// quantizers use): levels `l[i] = q + nmax` with `q` in `-nmax..nmax`, and the scale.
// Port of `make_qx_quants`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4 (the
// `rmse_type = 1, qw = NULL` path: weights `x[i]^2`).
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let q = level(iscale, x[i]);
        l[i] = (q + nmax) as i8;
        let w = x[i] * x[i];
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let q = level(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                l[i] = (level(iscale, x[i]) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// The per-block integer part of ggml's generic k-quant dots: `aux32[l] += scale(g) *
/// (q8[e] * a[e])` over the elements `e = 8k + l` (`k < 32`), where `g = e / group` is the
/// element's scale group (16 or 32 elements). Integer, exact.
pub(crate) fn lanes8(
    a: &[i8; QK_K],
    q8: &[i8; QK_K],
    group: usize,
    scale: impl Fn(usize) -> i32,
) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for (k, (ak, qk)) in a.chunks_exact(8).zip(q8.chunks_exact(8)).enumerate() {
        let s = scale(8 * k / group);
        for (l, (&av, &qv)) in ak.iter().zip(qk).enumerate() {
            aux32[l] += s * (i32::from(qv) * i32::from(av));
        }
    }
    aux32
}

/// The float part of ggml's generic k-quant dots over a row: `sums[l] += d_b * aux32_b[l]`
/// per block `b`, `sumf -= dmin_b * sumi_b` per block, then `sumf += sums[l]` for `l` in
/// order. `blocks` yields `(d, aux32, dmin * sumi)` already as floats, `dmin_term` being
/// `None` for the types without minimums (Q3_K, Q6_K).
pub(crate) fn fold8(blocks: impl Iterator<Item = (f32, [i32; 8], Option<f32>)>) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (d, aux32, min_term) in blocks {
        for (s, &v) in sums.iter_mut().zip(&aux32) {
            *s += d * v as f32;
        }
        if let Some(m) = min_term {
            sumf -= m;
        }
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// `make_q3_quants` with `do_rmse`: levels `l[i] = q + nmax`, `q` in `-nmax..nmax`, refined
/// by up to 5 passes of coordinate descent on the weighted error (weights `x^2`).
// Port of `make_q3_quants`, ggml-org/llama.cpp ggml/src/ggml-quants.c @36491e4.
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    if do_rmse {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            l[i] = q as i8;
            let w = x[i] * x[i];
            sumlx += w * x[i] * q as f32;
            suml2 += w * q as f32 * q as f32;
        }
        for _ in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let li = f32::from(l[i]);
                let mut slx = sumlx - w * x[i] * li;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li * li;
                    let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                    if new_l != i32::from(l[i]) {
                        slx += w * x[i] * new_l as f32;
                        sl2 += w * new_l as f32 * new_l as f32;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            l[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for v in l[..n].iter_mut() {
            *v += nmax as i8;
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for i in 0..n {
        l[i] = (nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1) + nmax) as i8;
    }
    1.0 / iscale
}
