#![allow(missing_docs)]
use chatglm_kernels::Pool;
use std::time::{Duration, Instant};

fn busy(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

thread_local! { static ITER: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) }; }

fn main() {
    let pool = Pool::new(2).unwrap();
    for gap in [0u64, 5, 20, 100, 300] {
        let mut v: Vec<f64> = (0..2000)
            .map(|_| {
                let t0 = Instant::now();
                busy(Duration::from_micros(gap));
                let t = Instant::now();
                pool.run(&|i| {
                    std::hint::black_box(i);
                });
                let e = t.elapsed().as_secs_f64() * 1e6;
                if gap == 20 {
                    ITER.with(|v| v.borrow_mut().push(t0.elapsed().as_secs_f64() * 1e6));
                }
                e
            })
            .collect();
        v.sort_by(f64::total_cmp);
        if gap == 20 {
            ITER.with(|v| {
                let mut v = v.borrow_mut();
                v.sort_by(f64::total_cmp);
                println!("gap 20 whole iteration median {:.2} us", v[v.len() / 2]);
            });
        }
        println!(
            "gap {gap:3} us: run() median {:.2} us, p90 {:.2}, p99 {:.2}, max {:.1}",
            v[1000], v[1800], v[1980], v[1999]
        );
    }
}
