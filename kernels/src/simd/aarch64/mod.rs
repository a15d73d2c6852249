//! aarch64 kernels: NEON without dot products (Cortex-A72, Raspberry Pi 4), NEON with
//! `sdot` (Cortex-A76, Raspberry Pi 5), and [`i8mm`] (`smmla` for the prompt products, the
//! dotprod table for the rest).
//!
//! Both tables share every kernel but the integer block dots: the row kernels are written once
//! ([`int_rows!`]) over two primitives with `sdot`'s contract, an exact emulation with
//! `vmull_s8`/`vpaddlq_s16` in [`neon`] and the instruction itself (through `asm!`, since
//! `vdotq_s32` is not stable Rust) in [`dotprod`]. The float kernels (f32/f16 dots, axpy,
//! attention) and the activation quantizers are [`neon`]'s in both tables.
//!
//! llama.cpp's other types (Q5_0, Q5_1, IQ4_NL, the k-quants, IQ4_XS, BF16) are in `neon_k`
//! (NEON) and `dotprod_k` (their `sdot` forms, for the types whose reference sums whole
//! blocks or groups); the k-quants with ggml's 8 integer lanes and BF16 are `neon_k`'s in
//! both tables.

pub mod dotprod;
mod dotprod_k;
pub mod i8mm;
pub mod neon;
mod neon_k;

/// Defines the integer row kernels `q4_0_rows`, `q8_0_rows`, `q4_1_rows`, `q4_0x8_rows` and
/// `q8_0x8_rows` (the signatures of the [`crate::simd::Kernels`] entries) over
///
/// - `$dot(acc, a, b)`: `acc` plus the 16 signed products of `a` and `b` spread over the 4
///   lanes in any way (only the sum of the lanes is used), exact;
/// - `$q4x8(blk, g)` and `$q8x8(blk, g)`: the exact integer dots of the 8 rows of a Q4_0x8
///   (nibbles minus 8) or Q8_0x8 block with the activation block whose 4-byte groups are `g`
///   ([`neon::act_groups`]): (rows 0..4, rows 4..8), one row per i32 lane;
///
/// with the given attributes (the target features) on every function. Integer sums are exact,
/// and the float operations are the reference's in its order, one row per f32 lane.
macro_rules! int_rows {
    ($(#[$attr:meta])* ; $dot:path, $q4x8:path, $q8x8:path) => {
        $(#[$attr])*
        fn q4_0_rows(w: &[BlockQ4_0], a: Q8Row<'_>, y: &mut [f32]) {
            let (ab, ad) = (a.blocks(), a.d());
            by_four(w, a.len(), y, |rows, b| {
                let (Some(act), Some(&dy)) = (ab.get(b), ad.get(b)) else {
                    return vdupq_n_f32(0.0);
                };
                let (a0, a1) = act_halves(&act.qs);
                let blocks: [&BlockQ4_0; 4] = std::array::from_fn(|r| &rows[r][b]);
                let s: [int32x4_t; 4] = std::array::from_fn(|r| {
                    let (lo, hi) = nibbles_minus_8(&blocks[r].qs);
                    $dot($dot(vdupq_n_s32(0), lo, a0), hi, a1)
                });
                let dx = scales4(|r| blocks[r].d);
                // Reference (q4_0): sumi as f32 * dx * dy.
                vmulq_f32(vmulq_f32(vcvtq_f32_s32(row_sums(&s)), dx), vdupq_n_f32(dy))
            });
        }

        $(#[$attr])*
        fn q8_0_rows(w: &[BlockQ8_0], a: Q8Row<'_>, y: &mut [f32]) {
            let (ab, ad) = (a.blocks(), a.d());
            by_four(w, a.len(), y, |rows, b| {
                let (Some(act), Some(&dy)) = (ab.get(b), ad.get(b)) else {
                    return vdupq_n_f32(0.0);
                };
                let (a0, a1) = act_halves(&act.qs);
                let blocks: [&BlockQ8_0; 4] = std::array::from_fn(|r| &rows[r][b]);
                let s: [int32x4_t; 4] = std::array::from_fn(|r| {
                    let (w0, w1) = act_halves(&blocks[r].qs);
                    $dot($dot(vdupq_n_s32(0), w0, a0), w1, a1)
                });
                // Reference (q8_0): sumi as f32 * (dx * dy).
                let dxy = vmulq_f32(scales4(|r| blocks[r].d), vdupq_n_f32(dy));
                vmulq_f32(vcvtq_f32_s32(row_sums(&s)), dxy)
            });
        }

        $(#[$attr])*
        fn q4_1_rows(w: &[BlockQ4_1], a: &[BlockQ8_1], y: &mut [f32]) {
            by_four(w, a.len(), y, |rows, b| {
                let Some(act) = a.get(b) else {
                    return vdupq_n_f32(0.0);
                };
                let (a0, a1) = act_halves(&act.qs);
                let blocks: [&BlockQ4_1; 4] = std::array::from_fn(|r| &rows[r][b]);
                let s: [int32x4_t; 4] = std::array::from_fn(|r| {
                    let (lo, hi) = nibbles(&blocks[r].qs);
                    $dot($dot(vdupq_n_s32(0), lo, a0), hi, a1)
                });
                // Reference (q4_1): (dx * dy) * sumi as f32 + m * s.
                let dxy = vmulq_f32(scales4(|r| blocks[r].d), vdupq_n_f32(act.d()));
                let ms = vmulq_f32(scales4(|r| blocks[r].m), vdupq_n_f32(act.s()));
                vaddq_f32(vmulq_f32(dxy, vcvtq_f32_s32(row_sums(&s))), ms)
            });
        }

        $(#[$attr])*
        fn q4_0x8_rows(w: &[BlockQ4_0x8], a: Q8Row<'_>, y: &mut [f32]) {
            let nb = a.len();
            if nb == 0 {
                y.fill(0.0);
                return;
            }
            for (out, group) in y.as_chunks_mut::<8>().0.iter_mut().zip(w.chunks_exact(nb)) {
                let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
                for ((blk, ab), &dy) in group.iter().zip(a.blocks()).zip(a.d()) {
                    let g = act_groups(&ab.qs);
                    let (s0, s1) = $q4x8(blk, &g);
                    let (d0, d1) = scales8(&blk.d);
                    let dyv = vdupq_n_f32(dy);
                    // Reference (q4_0): sumi as f32 * dx * dy.
                    acc0 = vaddq_f32(acc0, vmulq_f32(vmulq_f32(vcvtq_f32_s32(s0), d0), dyv));
                    acc1 = vaddq_f32(acc1, vmulq_f32(vmulq_f32(vcvtq_f32_s32(s1), d1), dyv));
                }
                store8(out, acc0, acc1);
            }
        }

        $(#[$attr])*
        fn q8_0x8_rows(w: &[BlockQ8_0x8], a: Q8Row<'_>, y: &mut [f32]) {
            let nb = a.len();
            if nb == 0 {
                y.fill(0.0);
                return;
            }
            for (out, group) in y.as_chunks_mut::<8>().0.iter_mut().zip(w.chunks_exact(nb)) {
                let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
                for ((blk, ab), &dy) in group.iter().zip(a.blocks()).zip(a.d()) {
                    let g = act_groups(&ab.qs);
                    let (s0, s1) = $q8x8(blk, &g);
                    let (d0, d1) = scales8(&blk.d);
                    let dyv = vdupq_n_f32(dy);
                    // Reference (q8_0): sumi as f32 * (dx * dy).
                    acc0 = vaddq_f32(acc0, vmulq_f32(vcvtq_f32_s32(s0), vmulq_f32(d0, dyv)));
                    acc1 = vaddq_f32(acc1, vmulq_f32(vcvtq_f32_s32(s1), vmulq_f32(d1, dyv)));
                }
                store8(out, acc0, acc1);
            }
        }
    };
}
pub(crate) use int_rows;
