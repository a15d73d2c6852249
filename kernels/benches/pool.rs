//! Cost of handing one job to 2 threads and waiting for both: our [`Pool`] against rayon
//! (`join` and `broadcast` on a 2-thread rayon pool). A decode step hands out about 115
//! products, so this cost is paid 115 times per token.
//!
//! - `empty`: back-to-back jobs that do nothing (the pure round trip).
//! - `gap20us`: 20 us of work on the calling thread between jobs, as between two products
//!   (norms, activation quantization); the workers are then waiting when the job comes.
//!
//! Run: `cargo bench -p chatglm-kernels --bench pool`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use chatglm_kernels::Pool;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn busy(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn bench_pool(c: &mut Criterion) {
    let ours = Pool::new(2).expect("pool");
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon pool");
    let mut group = c.benchmark_group("dispatch");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    for (name, gap) in [
        ("empty", Duration::ZERO),
        ("gap20us", Duration::from_micros(20)),
    ] {
        group.bench_function(format!("ours/{name}"), |b| {
            b.iter(|| {
                busy(gap);
                ours.run(&|i| {
                    black_box(i);
                })
            })
        });
        group.bench_function(format!("rayon_join/{name}"), |b| {
            b.iter(|| {
                busy(gap);
                rayon.install(|| rayon::join(|| black_box(0), || black_box(1)))
            })
        });
        group.bench_function(format!("rayon_broadcast/{name}"), |b| {
            b.iter(|| {
                busy(gap);
                rayon.broadcast(|ctx| black_box(ctx.index()))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_pool);
criterion_main!(benches);
