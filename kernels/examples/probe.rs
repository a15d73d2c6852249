//! Quick throughput probe while tuning (the criterion bench is `benches/matvec.rs`):
//!
//! - `probe [threads]`: every kernel path and layout on the 6B shapes from memory;
//! - `probe cached`: the same on a 128x4096 matrix that stays in L2 (compute bound), the
//!   whole product (activation quantization included) and the row kernel alone (`kernel`);
//!   `PROBE_ITERS=N` sets the runs per figure (default 2000; a few for callgrind, where the
//!   instructions per block are `Ir / (N * 16 * 128)` of the kernel function); then Q4_K,
//!   Q5_K, Q6_K and Q5_0 (the whole product; the k-quant row kernels alone, `kernel`), or only
//!   those with `PROBE_K=only`;
//! - `probe stream`: a plain streaming read of 4 GB, 1 and 2 threads, 1..8 streams each;
//! - `probe gemm`: the prompt kernels (`gemm_q4_0x8`, `gemm_q8_0x8`) alone on a 128x4096
//!   matrix that stays in L2 with 32 activation rows, 1 thread, best of many (GFLOP/s).
//!
//! `cargo run --release -p chatglm-kernels --example probe -- [threads|cached|stream|gemm]`.
//! On a machine shared with other jobs, `kernels/examples/quiet.sh "CMD"` waits for idle
//! CPUs first.
#![allow(missing_docs)]

use chatglm_kernels::act::{ActQ8K, ActQ8_0};
use chatglm_kernels::matmul::{matmul_with, row_bytes, WeightMatrix};
use chatglm_kernels::quant::{as_blocks, BlockQ4K, BlockQ4_0x8, BlockQ5K, BlockQ6K, BlockQ8_0x8};
use chatglm_kernels::simd::Kernels;
use chatglm_kernels::{interleave, GgmlType, Isa, Pool};
use std::time::Instant;

const SHAPES: [(usize, usize); 4] = [(4608, 4096), (4096, 4096), (27392, 4096), (4096, 13696)];

fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let mut state = 1u64;
    let mut data: Vec<u8> = (0..rows * row_bytes(ty, cols).unwrap())
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    let scale = half::f16::from_f32(0.002).to_le_bytes();
    // Where the block's f16 scales sit (Q4_K/Q5_K: `d` and `dmin`; Q6_K: `d` last).
    let at: &[usize] = match ty {
        GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => &[0],
    };
    for block in data.chunks_exact_mut(ty.block_bytes()) {
        for &o in at {
            block[o..o + 2].copy_from_slice(&scale);
        }
    }
    data
}

/// The k-quants (and Q5_0, which Q4_K_M files hold where rows are not whole super-blocks) on
/// an in-L2 matrix: the whole product, and the k-quant row kernels alone.
fn cached_k(tables: &[&Kernels], iters: usize) {
    let (r, c) = (128, 4096);
    let x: Vec<f32> = (0..c)
        .map(|j| ((j * 7919 % 1000) as f32 - 500.0) / 300.0)
        .collect();
    let mut y = vec![0.0; r];
    let mut act = ActQ8K::new();
    act.quantize(&x, c).unwrap();
    let a = act.row(0).unwrap();
    for ty in [
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q5_0,
    ] {
        let d = weights(ty, r, c);
        for k in tables {
            let w = WeightMatrix::new(ty, r, c, &d).unwrap();
            let mut best = f64::MAX;
            for _ in 0..iters {
                let t0 = Instant::now();
                matmul_with(k, None, &w, &x, 1, &mut y).unwrap();
                best = best.min(t0.elapsed().as_secs_f64());
            }
            println!(
                "cached {ty} portable {:12}: {:.1} GB/s ({:.1} us)",
                k.isa.name(),
                d.len() as f64 / best / 1e9,
                best * 1e6
            );
            if ty == GgmlType::Q5_0 {
                continue;
            }
            let mut best = f64::MAX;
            for _ in 0..iters {
                let t0 = Instant::now();
                match ty {
                    GgmlType::Q4_K => {
                        let w: &[BlockQ4K] = as_blocks(&d).unwrap();
                        (k.rows_q4_k)(w, a, &mut y)
                    }
                    GgmlType::Q5_K => {
                        let w: &[BlockQ5K] = as_blocks(&d).unwrap();
                        (k.rows_q5_k)(w, a, &mut y)
                    }
                    _ => {
                        let w: &[BlockQ6K] = as_blocks(&d).unwrap();
                        (k.rows_q6_k)(w, a, &mut y)
                    }
                }
                std::hint::black_box(&y);
                best = best.min(t0.elapsed().as_secs_f64());
            }
            println!(
                "cached {ty} kernel   {:6}: {:.1} GB/s ({:.1} us)",
                k.isa.name(),
                d.len() as f64 / best / 1e9,
                best * 1e6
            );
        }
    }
}

/// Kernel throughput on a matrix that stays in L2 (compute bound), 1 thread, best of many.
fn cached() {
    let tables: Vec<&Kernels> = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avxvnni,
        Isa::AvxvnniEvex,
        Isa::Avx512,
    ]
    .into_iter()
    .filter_map(Isa::kernels)
    .collect();
    let iters: usize = std::env::var("PROBE_ITERS").map_or(2000, |s| s.parse().unwrap());
    if std::env::var("PROBE_K").is_ok_and(|v| v == "only") {
        return cached_k(&tables, iters);
    }
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let (r, c) = (128, 4096);
        let d = weights(ty, r, c);
        let (ity, id) = interleave(ty, r, c, &d).unwrap();
        let x: Vec<f32> = (0..c)
            .map(|j| ((j * 7919 % 1000) as f32 - 500.0) / 300.0)
            .collect();
        let mut y = vec![0.0; r];
        for k in &tables {
            for (name, t, data) in [("portable", ty, &d), ("x8", ity, &id)] {
                let w = WeightMatrix::new(t, r, c, data).unwrap();
                let mut best = f64::MAX;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    matmul_with(k, None, &w, &x, 1, &mut y).unwrap();
                    best = best.min(t0.elapsed().as_secs_f64());
                }
                println!(
                    "cached {ty} {name:8} {:12}: {:.1} GB/s ({:.1} us)",
                    k.isa.name(),
                    d.len() as f64 / best / 1e9,
                    best * 1e6
                );
            }
            // The interleaved row kernel alone, on activations quantized once.
            let mut act = ActQ8_0::new();
            act.quantize(k, &x, c).unwrap();
            let a = act.row(0).unwrap();
            let mut best = f64::MAX;
            for _ in 0..iters {
                let t0 = Instant::now();
                match ity {
                    GgmlType::Q4_0x8 => (k.rows_q4_0x8)(as_blocks(&id).unwrap(), a, &mut y),
                    _ => (k.rows_q8_0x8)(as_blocks(&id).unwrap(), a, &mut y),
                }
                std::hint::black_box(&y);
                best = best.min(t0.elapsed().as_secs_f64());
            }
            println!(
                "cached {ty} kernel   {:6}: {:.1} GB/s ({:.1} us)",
                k.isa.name(),
                d.len() as f64 / best / 1e9,
                best * 1e6
            );
        }
    }
    cached_k(&tables, iters);
}

/// The prompt kernels alone on an in-L2 matrix (128x4096, 32 activation rows), 1 thread,
/// best of many runs, in GFLOP/s (2 * rows * cols * n).
fn gemm() {
    let tables: Vec<&Kernels> = [Isa::Avx2, Isa::Avxvnni, Isa::AvxvnniEvex, Isa::Avx512]
        .into_iter()
        .filter_map(Isa::kernels)
        .collect();
    let (r, c, n) = (128, 4096, 32);
    let x: Vec<f32> = (0..n * c)
        .map(|j| ((j * 7919 % 1000) as f32 - 500.0) / 300.0)
        .collect();
    let mut act = ActQ8_0::new();
    act.quantize(tables[0], &x, c).unwrap();
    let a: Vec<_> = (0..n).map(|i| act.row(i).unwrap()).collect();
    let flop = (2 * r * c * n) as f64;
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let (_, id) = interleave(ty, r, c, &weights(ty, r, c)).unwrap();
        for k in &tables {
            let mut y = vec![vec![0f32; r]; n];
            let mut best = f64::MAX;
            for _ in 0..2000 {
                let mut ys: Vec<&mut [f32]> = y.iter_mut().map(|v| v.as_mut_slice()).collect();
                let t0 = Instant::now();
                if ty == GgmlType::Q4_0 {
                    let w: &[BlockQ4_0x8] = as_blocks(&id).unwrap();
                    (k.gemm_q4_0x8)(w, &a, &mut ys);
                } else {
                    let w: &[BlockQ8_0x8] = as_blocks(&id).unwrap();
                    (k.gemm_q8_0x8)(w, &a, &mut ys);
                }
                best = best.min(t0.elapsed().as_secs_f64());
                std::hint::black_box(&y);
            }
            println!(
                "gemm {ty}x8 {:12}: {:.1} GFLOP/s ({:.1} us)",
                k.isa.name(),
                flop / best / 1e9,
                best * 1e6
            );
        }
    }
}

/// Streaming read of a 4 GB buffer, 1 and 2 threads.
fn stream() {
    let mb: usize = std::env::var("PROBE_STREAM_MB").map_or(4096, |s| s.parse().unwrap());
    let anon = vec![1u8; mb << 20];
    for threads in [1, 2] {
        let pool = Pool::new(threads).unwrap();
        for streams in chatglm_kernels::stream::STREAMS.into_iter().rev() {
            let mut best = f64::MAX;
            for _ in 0..(5 << 12) / mb.max(1) {
                let t = Instant::now();
                std::hint::black_box(chatglm_kernels::stream::sum_words_streams(
                    Some(&pool),
                    &anon,
                    streams,
                ));
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "stream {mb} MB t={threads} streams={streams}: {:.1} GB/s",
                anon.len() as f64 / best / 1e9
            );
        }
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("cached") {
        return cached();
    }
    if std::env::args().nth(1).as_deref() == Some("gemm") {
        return gemm();
    }
    if std::env::args().nth(1).as_deref() == Some("stream") {
        return stream();
    }
    let threads: usize = std::env::args().nth(1).map_or(2, |s| s.parse().unwrap());
    let pool = Pool::new(threads).unwrap();
    let tables: Vec<&Kernels> = [Isa::Avx2, Isa::Avxvnni, Isa::AvxvnniEvex, Isa::Avx512]
        .into_iter()
        .filter_map(Isa::kernels)
        .collect();
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        // One 6B layer's matrices, repeated so the working set (~4 layers) exceeds the caches.
        let mats: Vec<(usize, usize, Vec<u8>)> = (0..4)
            .flat_map(|_| SHAPES.map(|(r, c)| (r, c, weights(ty, r, c))))
            .collect();
        let inter: Vec<(GgmlType, Vec<u8>)> = mats
            .iter()
            .map(|(r, c, d)| interleave(ty, *r, *c, d).unwrap())
            .collect();
        let total: usize = mats.iter().map(|m| m.2.len()).sum();
        for k in &tables {
            for (name, interleaved) in [("portable", false), ("x8", true)] {
                let mut best = f64::MAX;
                for _ in 0..8 {
                    let t = Instant::now();
                    for (i, (r, c, d)) in mats.iter().enumerate() {
                        let (tyw, data) = if interleaved {
                            (inter[i].0, &inter[i].1[..])
                        } else {
                            (ty, &d[..])
                        };
                        let w = WeightMatrix::new(tyw, *r, *c, data).unwrap();
                        let x: Vec<f32> = (0..*c)
                            .map(|j| ((j * 7919 % 1000) as f32 - 500.0) / 300.0)
                            .collect();
                        let mut y = vec![0.0; *r];
                        matmul_with(k, Some(&pool), &w, &x, 1, &mut y).unwrap();
                        std::hint::black_box(&y);
                    }
                    best = best.min(t.elapsed().as_secs_f64());
                }
                println!(
                    "{ty} {name:8} {:6} t={threads}: {:.1} GB/s",
                    k.isa.name(),
                    total as f64 / best / 1e9
                );
            }
        }
    }
}
