//! Matrix-vector products at the ChatGLM2/3-6B shapes, reported as bytes of weights streamed
//! per second (a decode step reads every weight once, so this is the number that matters).
//!
//! Each benchmark is `matvec/<type>[x8]/<isa>/t<threads>/<rows>x<cols>`: the ggml layout or
//! the row-interleaved one, every kernel path this CPU runs, 1 and 2 threads. Every
//! iteration uses the next of several copies of the matrix, at least 512 MB in all, so the
//! weights come from memory as in a decode step, not from the (32 MB) L3 cache. Compare with
//! `stream/t<threads>`, a plain streaming read of the same 512 MB.
//!
//! Run: `cargo bench -p chatglm-kernels --bench matvec` (filter, e.g. `-- q4_0x8/avx512`).

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use chatglm_kernels::matmul::{matmul_with, row_bytes, WeightMatrix};
use chatglm_kernels::stream::sum_words;
use chatglm_kernels::{interleave, GgmlType, Isa, Pool};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

/// (rows, cols): fused QKV, attention output, fused gate+up, down.
const SHAPES: [(usize, usize); 4] = [(4608, 4096), (4096, 4096), (27392, 4096), (4096, 13696)];

/// Bytes of weights each benchmark cycles through.
const WORKING_SET: usize = 512 << 20;

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
fn weights(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut data = random_bytes(rows * row_bytes(ty, cols).expect("whole blocks"), seed);
    let scale = half::f16::from_f32(0.002).to_le_bytes();
    // Byte offsets of the f16 scale fields in a block (ggml's layouts).
    let fields: &[usize] = match ty {
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q5_1 => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => &[0],
    };
    for block in data.chunks_exact_mut(ty.block_bytes()) {
        for &o in fields {
            block[o..o + 2].copy_from_slice(&scale);
        }
    }
    data
}

fn bench_matvec(c: &mut Criterion) {
    let mut group = c.benchmark_group("matvec");
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

    // The yardstick: a plain read of the same amount of memory.
    let plain = random_bytes(WORKING_SET, 3);
    for pool in &pools {
        group.throughput(Throughput::Bytes(plain.len() as u64));
        group.bench_function(format!("stream/t{}", pool.threads()), |b| {
            b.iter(|| sum_words(Some(pool), black_box(&plain)))
        });
    }
    drop(plain);

    // The types of a Q4_K_M file too (portable layout only; the k-quants only at the shapes
    // whose rows are whole super-blocks, as ffn_down's 13696 falls back to Q5_0/Q8_0).
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q5_0,
    ] {
        for (rows, cols) in SHAPES {
            if !cols.is_multiple_of(ty.block_size()) {
                continue;
            }
            let size = rows * row_bytes(ty, cols).expect("whole blocks");
            let copies = WORKING_SET.div_ceil(size);
            let portable: Vec<Vec<u8>> = (0..copies)
                .map(|i| weights(ty, rows, cols, i as u64 + 1))
                .collect();
            let x: Vec<f32> = random_bytes(cols, 2)
                .iter()
                .map(|&b| (b as f32 - 127.5) / 64.0)
                .collect();
            let mut y = vec![0.0f32; rows];
            let layouts: &[&str] = if ty.interleaved().is_some() {
                &["portable", "x8"]
            } else {
                &["portable"]
            };
            for &layout in layouts {
                let mats: Vec<(GgmlType, Vec<u8>)> = portable
                    .iter()
                    .map(|d| match layout {
                        "x8" => interleave(ty, rows, cols, d).expect("interleave"),
                        _ => (ty, d.clone()),
                    })
                    .collect();
                let name = mats[0].0.name();
                for k in &tables {
                    for pool in &pools {
                        group.throughput(Throughput::Bytes(size as u64));
                        let id = BenchmarkId::new(
                            format!("{name}/{}/t{}", k.isa, pool.threads()),
                            format!("{rows}x{cols}"),
                        );
                        let mut next = 0;
                        group.bench_with_input(id, &x, |b, x| {
                            b.iter(|| {
                                let (t, data) = &mats[next % mats.len()];
                                next += 1;
                                let w = WeightMatrix::new(*t, rows, cols, data).expect("sizes");
                                matmul_with(k, Some(pool), &w, black_box(x), 1, &mut y)
                                    .expect("valid shapes")
                            })
                        });
                    }
                }
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_matvec);
criterion_main!(benches);
