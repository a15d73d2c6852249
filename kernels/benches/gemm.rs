//! Matrix-matrix products (the prompt) at the ChatGLM2/3-6B shapes, reported in FLOP/s
//! (`2 * rows * cols * n` per product): a prompt is compute-bound, so this is the number that
//! matters there.
//!
//! Each benchmark is `gemm_flop/<type>x8/<isa>/t<threads>/n<n>/<rows>x<cols>`: the
//! row-interleaved weights (the converter's default), every kernel path this CPU runs, 1 and
//! 2 threads, `n` activation rows (a prompt batch). The same matrix every iteration: a batch
//! reads its weights once for `n` rows, so they may as well come from the cache, as they
//! would not in the model; the decode bench (`matvec`) measures the streaming side.
//!
//! Run: `cargo bench -p chatglm-kernels --bench gemm` (filter, e.g. `-- q4_0x8/avx512/t2`).

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use chatglm_kernels::matmul::{matmul_with, row_bytes, WeightMatrix};
use chatglm_kernels::{interleave, GgmlType, Isa, Pool};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

/// (rows, cols): fused QKV, attention output, fused gate+up, down.
const SHAPES: [(usize, usize); 4] = [(4608, 4096), (4096, 4096), (27392, 4096), (4096, 13696)];

/// Deterministic pseudo-random bytes (64-bit LCG).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// Random blocks with a plausible finite f16 scale (random bytes there could be NaN).
fn weights(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut data = random_bytes(rows * row_bytes(ty, cols).expect("whole blocks"), seed);
    let scale = half::f16::from_f32(0.002).to_le_bytes();
    for block in data.chunks_exact_mut(ty.block_bytes()) {
        block[..2].copy_from_slice(&scale);
    }
    data
}

fn bench_gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm_flop");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let pools = [Pool::new(1).expect("pool"), Pool::new(2).expect("pool")];
    let tables: Vec<_> = [
        Isa::Avx2,
        Isa::Avxvnni,
        Isa::AvxvnniEvex,
        Isa::Avx512,
        Isa::Neon,
        Isa::Dotprod,
    ]
    .into_iter()
    .filter_map(Isa::kernels)
    .collect();
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        for (rows, cols) in SHAPES {
            let (ity, data) =
                interleave(ty, rows, cols, &weights(ty, rows, cols, 1)).expect("whole groups");
            let w = WeightMatrix::new(ity, rows, cols, &data).expect("sizes agree");
            for n in [32usize, 128] {
                let x: Vec<f32> = random_bytes(n * cols, 2)
                    .iter()
                    .map(|&b| f32::from(b) / 64.0 - 2.0)
                    .collect();
                let mut y = vec![0f32; n * rows];
                group.throughput(Throughput::Elements((2 * rows * cols * n) as u64));
                for k in &tables {
                    for pool in &pools {
                        let name = format!(
                            "{}/{}/t{}/n{n}/{rows}x{cols}",
                            ity.name(),
                            k.isa.name(),
                            pool.threads()
                        );
                        group.bench_function(name, |b| {
                            b.iter(|| {
                                matmul_with(k, Some(pool), &w, black_box(&x), n, &mut y)
                                    .expect("product")
                            })
                        });
                    }
                }
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);
