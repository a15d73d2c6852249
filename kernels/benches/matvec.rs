//! Matrix-vector products at the ChatGLM2/3-6B shapes, reported as bytes of weights streamed
//! per second (a decode step reads every weight once, so this is the number that matters).
//!
//! Run: `cargo bench -p chatglm-kernels --bench matvec`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use chatglm_kernels::matmul::{matvec, row_bytes, WeightMatrix};
use chatglm_kernels::GgmlType;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
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

/// A matrix of random blocks whose scales are a plausible finite f16 (random bytes there
/// could be NaN), so the arithmetic is the real one.
fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let mut data = random_bytes(rows * row_bytes(ty, cols).expect("whole blocks"), 1);
    let scale = half::f16::from_f32(0.002).to_le_bytes();
    for block in data.chunks_exact_mut(ty.block_bytes()) {
        block[..2].copy_from_slice(&scale);
    }
    data
}

fn bench_matvec(c: &mut Criterion) {
    let mut group = c.benchmark_group("matvec");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        for (rows, cols) in SHAPES {
            let data = weights(ty, rows, cols);
            let w = WeightMatrix::new(ty, rows, cols, &data).expect("sizes agree");
            let x: Vec<f32> = random_bytes(cols, 2)
                .iter()
                .map(|&b| (b as f32 - 127.5) / 64.0)
                .collect();
            let mut y = vec![0.0f32; rows];
            group.throughput(Throughput::Bytes(data.len() as u64));
            group.bench_with_input(
                BenchmarkId::new(ty.name(), format!("{rows}x{cols}")),
                &x,
                |b, x| b.iter(|| matvec(&w, black_box(x), &mut y).expect("valid shapes")),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_matvec);
criterion_main!(benches);
