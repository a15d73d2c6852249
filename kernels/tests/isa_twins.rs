//! Every kernel table this machine can run against the scalar reference table: same bytes
//! from the quantizers, same errors, and the same bits from every product (see
//! `chatglm_kernels::simd` for why they can be bit-identical), over lengths (0, 1, odd block
//! counts, large), zero blocks, extreme f16 scales (largest normal, smallest subnormal, zero,
//! negative) and random data. Then the same through `matmul_with`, for every thread count.

use chatglm_kernels::act::{ActQ8K, ActQ8_0, ActQ8_1};
use chatglm_kernels::matmul::{matmul_with, row_bytes, WeightMatrix};
use chatglm_kernels::quant::float::f32_to_bf16;
use chatglm_kernels::quant::{
    as_blocks, BlockIq4Nl, BlockQ4K, BlockQ4_0, BlockQ4_0x8, BlockQ4_1, BlockQ5K, BlockQ5_0,
    BlockQ5_1, BlockQ6K, BlockQ8_0, BlockQ8_0x8, BlockQ8_1,
};
use chatglm_kernels::simd::{scalar, Kernels};
use chatglm_kernels::{interleave, GgmlType, Isa, KernelError, Pool};
use proptest::prelude::*;
use zerocopy::IntoBytes;

/// The SIMD tables this machine runs (the scalar one is the reference).
fn simd_tables() -> Vec<&'static Kernels> {
    let tables: Vec<_> = Isa::ALL
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .filter_map(Isa::kernels)
        .collect();
    eprintln!(
        "testing {:?} against scalar",
        tables.iter().map(|k| k.isa.name()).collect::<Vec<_>>()
    );
    tables
}

/// A small deterministic generator (64-bit LCG).
struct Rng(u64);

impl Rng {
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }

    /// An f16 scale: mostly ordinary, sometimes an edge (largest normal, smallest subnormal,
    /// zero, negative zero, their negatives).
    fn scale(&mut self) -> [u8; 2] {
        let bits: u16 = match self.next_u32() % 16 {
            0 => 0x7BFF, // 65504
            1 => 0xFBFF, // -65504
            2 => 0x0001, // 2^-24
            3 => 0x8001,
            4 => 0x0000,
            5 => 0x8000,
            6 => 0x0400, // smallest normal
            _ => half::f16::from_f32(self.unit() * 0.01).to_bits(),
        };
        bits.to_le_bytes()
    }

    /// Activations: blocks of uniform values times 2^e (e in -40..=20, so scales from f16
    /// subnormal and zero up to the f16 limit), some all-zero blocks, some at the largest
    /// block magnitude whose scale still fits f16.
    fn activations(&mut self, n: usize) -> Vec<f32> {
        self.activations_up_to(n, 20)
    }

    /// Activations whose Q8_1 block sums fit f16 as well (e <= 10, no block at the limit).
    fn activations_q8_1(&mut self, n: usize) -> Vec<f32> {
        self.activations_up_to(n, 10)
    }

    fn activations_up_to(&mut self, n: usize, max_e: i32) -> Vec<f32> {
        let mut x = Vec::with_capacity(n);
        while x.len() < n {
            let kind = self.next_u32() % 8;
            let kind = if max_e < 20 && kind == 1 { 2 } else { kind };
            let e = (self.next_u32() % (41 + max_e as u32)) as i32 - 40;
            for j in 0..32.min(n - x.len()) {
                let v = match kind {
                    0 => 0.0,
                    1 if j == 5 => -127.0 * 65504.0,
                    1 => self.unit() * 65504.0,
                    _ => self.unit() * 2f32.powi(e),
                };
                x.push(v);
            }
        }
        x
    }

    fn q4_0(&mut self, n: usize) -> Vec<BlockQ4_0> {
        (0..n)
            .map(|_| BlockQ4_0 {
                d: self.scale(),
                qs: std::array::from_fn(|_| self.next_u32() as u8),
            })
            .collect()
    }

    fn q8_0(&mut self, n: usize) -> Vec<BlockQ8_0> {
        (0..n)
            .map(|_| BlockQ8_0 {
                d: self.scale(),
                // -128 included: a file may hold it even though no quantizer writes it.
                qs: std::array::from_fn(|_| self.next_u32() as u8 as i8),
            })
            .collect()
    }

    /// `n` blocks of `ty` of random bytes, with every f16 scale field an edge or ordinary
    /// scale ([`Rng::scale`]).
    fn blocks(&mut self, ty: GgmlType, n: usize) -> Vec<u8> {
        let scale_fields: &[usize] = match ty {
            GgmlType::Q5_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => &[0],
            GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q2_K => &[80, 82],
            GgmlType::Q3_K => &[108],
            GgmlType::Q6_K => &[208],
            other => unreachable!("{other}"),
        };
        let bb = ty.block_bytes();
        let mut bytes: Vec<u8> = (0..n * bb).map(|_| self.next_u32() as u8).collect();
        for block in bytes.chunks_exact_mut(bb) {
            for &o in scale_fields {
                let s = self.scale();
                block[o..o + 2].copy_from_slice(&s);
            }
        }
        bytes
    }

    fn q4_1(&mut self, n: usize) -> Vec<BlockQ4_1> {
        (0..n)
            .map(|_| BlockQ4_1 {
                d: self.scale(),
                m: self.scale(),
                qs: std::array::from_fn(|_| self.next_u32() as u8),
            })
            .collect()
    }
}

/// Same bits, or both NaN (NaN payloads are not part of the contract).
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn assert_same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            same(g, w),
            "{what}: [{i}] {g:e} ({:#x}) vs {w:e} ({:#x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

fn act_q8_0(k: &Kernels, x: &[f32]) -> ActQ8_0 {
    let mut a = ActQ8_0::new();
    a.quantize(k, x, x.len()).unwrap();
    a
}

// ---- Quantizers.

fn check_quantizers(x: &[f32]) {
    let s = &scalar::KERNELS;
    let nb = x.len() / 32;
    let mut want = (
        vec![BlockQ8_0::default(); nb],
        vec![0f32; nb],
        vec![0i32; nb],
    );
    let want_r = (s.quantize_q8_0)(x, &mut want.0, &mut want.1, &mut want.2);
    let mut want1 = vec![BlockQ8_1::default(); nb];
    let want1_r = (s.quantize_q8_1)(x, &mut want1);
    for k in simd_tables() {
        let mut got = (
            vec![BlockQ8_0::default(); nb],
            vec![0f32; nb],
            vec![0i32; nb],
        );
        let got_r = (k.quantize_q8_0)(x, &mut got.0, &mut got.1, &mut got.2);
        // Debug strings, so that NaN values in errors compare equal.
        assert_eq!(format!("{got_r:?}"), format!("{want_r:?}"), "{}", k.isa);
        if want_r.is_ok() {
            assert_eq!(got.0.as_bytes(), want.0.as_bytes(), "{} q8_0 bytes", k.isa);
            assert_same(&got.1, &want.1, "q8_0 scales");
            assert_eq!(got.2, want.2, "{} q8_0 sums", k.isa);
        }
        let mut got1 = vec![BlockQ8_1::default(); nb];
        let got1_r = (k.quantize_q8_1)(x, &mut got1);
        assert_eq!(format!("{got1_r:?}"), format!("{want1_r:?}"), "{}", k.isa);
        if want1_r.is_ok() {
            assert_eq!(got1.as_bytes(), want1.as_bytes(), "{} q8_1 bytes", k.isa);
        }
    }
}

#[test]
fn quantizers_equal_the_reference() {
    let mut rng = Rng(1);
    for nb in [0usize, 1, 2, 3, 7, 17, 128, 428] {
        for _ in 0..4 {
            check_quantizers(&rng.activations(nb * 32));
        }
    }
    // Ties of round-half-away-from-zero: amax 127 gives id = 1, so x.5 values are ties.
    let mut x: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) + 0.5).collect();
    x[0] = 127.0;
    x[40] = -127.0;
    check_quantizers(&x);
    // Scales whose reciprocal overflows (the reference's rare path), subnormal inputs,
    // values whose f16 scale underflows to zero.
    let mut x = vec![0.0f32; 96];
    x[3] = 1e-40;
    x[40] = 1e-30;
    x[41] = -4e-31;
    x[70] = f32::MIN_POSITIVE;
    check_quantizers(&x);
}

#[test]
fn quantizer_errors_equal_the_reference() {
    for bad in [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        127.0 * 65520.0,
        f32::MAX,
    ] {
        for at in [0usize, 31, 32, 77] {
            let mut x = vec![0.25f32; 96];
            x[at] = bad;
            check_quantizers(&x);
        }
    }
    // Q8_1's sum overflows f16 before its scale: 32 x 2100 sums to 67200.
    check_quantizers(&[2100.0f32; 64]);
    // Wrong lengths: the same size error.
    for k in simd_tables() {
        let mut b = vec![BlockQ8_0::default(); 2];
        let (mut d, mut s) = (vec![0.0; 2], vec![0; 2]);
        let want = (scalar::KERNELS.quantize_q8_0)(&[0.0; 63], &mut b, &mut d, &mut s);
        assert!(want.is_err());
        assert_eq!((k.quantize_q8_0)(&[0.0; 63], &mut b, &mut d, &mut s), want);
        let want = (scalar::KERNELS.quantize_q8_0)(&[0.0; 64], &mut b, &mut d[..1], &mut s);
        assert!(want.is_err());
        assert_eq!(
            (k.quantize_q8_0)(&[0.0; 64], &mut b, &mut d[..1], &mut s),
            want
        );
    }
    // Through the activation buffer, a second row's error names its index in the input.
    let mut x = vec![1.0f32; 128];
    x[100] = f32::NAN;
    for k in std::iter::once(&scalar::KERNELS).chain(simd_tables()) {
        assert!(matches!(
            ActQ8_0::new().quantize(k, &x, 64),
            Err(KernelError::NonFinite { index: 100, .. })
        ));
        assert!(matches!(
            ActQ8_1::new().quantize(k, &x, 64),
            Err(KernelError::NonFinite { index: 100, .. })
        ));
    }
}

// ---- Row kernels.

fn check_rows(seed: u64, rows: usize, nb: usize) {
    check_rows_with(seed, rows, nb, false);
    check_rows_with(seed, rows, nb, true);
}

/// With `correlated`, the weights follow the signs of the activations, so that the integer
/// block sums are large (about 2^14, with many significant bits) and `sumi * dx` needs
/// rounding: a kernel that multiplies in another order or fuses a multiply-add then differs
/// (with random weights the sums are small and such products are mostly exact).
fn check_rows_with(seed: u64, rows: usize, nb: usize, correlated: bool) {
    let mut rng = Rng(seed);
    let s = &scalar::KERNELS;
    let x = rng.activations(nb * 32);
    let a = act_q8_0(s, &x);
    let a = a.row(0).unwrap();
    let mut a1 = ActQ8_1::new();
    let x1 = rng.activations_q8_1(nb * 32);
    a1.quantize(s, &x1, x.len()).unwrap();
    let a1 = a1.row(0).unwrap();
    let mut w4 = rng.q4_0(rows * nb);
    let mut w8 = rng.q8_0(rows * nb);
    let mut w41 = rng.q4_1(rows * nb);
    if correlated && nb > 0 {
        let nib = |v: i8, noise: u32| -> u8 {
            if v >= 0 {
                15 - (noise % 3) as u8
            } else {
                (noise % 3) as u8
            }
        };
        for (i, ((b4, b8), b41)) in w4.iter_mut().zip(&mut w8).zip(&mut w41).enumerate() {
            let (q, q1) = (&a.blocks()[i % nb].qs, &a1[i % nb].qs);
            for j in 0..16 {
                let n = rng.next_u32();
                b4.qs[j] = nib(q[j], n) | (nib(q[j + 16], n >> 8) << 4);
                b41.qs[j] = nib(q1[j], n >> 16) | (nib(q1[j + 16], n >> 24) << 4);
            }
            for (w, &v) in b8.qs.iter_mut().zip(q) {
                *w = if v >= 0 {
                    127 - (rng.next_u32() % 9) as i8
                } else {
                    -128 + (rng.next_u32() % 9) as i8
                };
            }
        }
    }
    let mut want = [vec![0f32; rows], vec![0f32; rows], vec![0f32; rows]];
    (s.rows_q4_0)(&w4, a, &mut want[0]);
    (s.rows_q8_0)(&w8, a, &mut want[1]);
    (s.rows_q4_1)(&w41, a1, &mut want[2]);
    // Interleaved forms of the same rows (whole groups only).
    let groups = rows / 8;
    let (i4, i8) = if nb > 0 && groups > 0 {
        let (_, b4) = interleave(
            GgmlType::Q4_0,
            groups * 8,
            nb * 32,
            w4[..groups * 8 * nb].as_bytes(),
        )
        .unwrap();
        let (_, b8) = interleave(
            GgmlType::Q8_0,
            groups * 8,
            nb * 32,
            w8[..groups * 8 * nb].as_bytes(),
        )
        .unwrap();
        (b4, b8)
    } else {
        (Vec::new(), Vec::new())
    };
    let i4: &[BlockQ4_0x8] = as_blocks(&i4).unwrap();
    let i8: &[BlockQ8_0x8] = as_blocks(&i8).unwrap();
    let mut want_i = [vec![0f32; groups * 8], vec![0f32; groups * 8]];
    (s.rows_q4_0x8)(i4, a, &mut want_i[0]);
    (s.rows_q8_0x8)(i8, a, &mut want_i[1]);
    // The interleaved reference equals the portable one, bit for bit.
    assert_same(
        &want_i[0],
        &want[0][..groups * 8],
        "q4_0x8 vs q4_0 (scalar)",
    );
    assert_same(
        &want_i[1],
        &want[1][..groups * 8],
        "q8_0x8 vs q8_0 (scalar)",
    );
    for k in simd_tables() {
        let what = |t: &str| format!("{} {t} rows {rows} nb {nb} seed {seed}", k.isa);
        let mut got = vec![f32::NAN; rows];
        (k.rows_q4_0)(&w4, a, &mut got);
        assert_same(&got, &want[0], &what("q4_0"));
        (k.rows_q8_0)(&w8, a, &mut got);
        assert_same(&got, &want[1], &what("q8_0"));
        (k.rows_q4_1)(&w41, a1, &mut got);
        assert_same(&got, &want[2], &what("q4_1"));
        let mut got = vec![f32::NAN; groups * 8];
        (k.rows_q4_0x8)(i4, a, &mut got);
        assert_same(&got, &want_i[0], &what("q4_0x8"));
        (k.rows_q8_0x8)(i8, a, &mut got);
        assert_same(&got, &want_i[1], &what("q8_0x8"));
    }
}

/// The several-row kernels (`gemm_*`) against the scalar row kernels called row by row, for
/// `n` activation rows and `groups` 8-row groups of `nb` blocks. With `correlated`, the
/// weights follow the signs of activation row 0 (large integer sums, as in `check_rows_with`).
fn check_gemm(seed: u64, n: usize, groups: usize, nb: usize, correlated: bool) {
    let mut rng = Rng(seed);
    let s = &scalar::KERNELS;
    let cols = nb * 32;
    let x = rng.activations(n * cols);
    let mut act = ActQ8_0::new();
    act.quantize(s, &x, cols).unwrap();
    let a: Vec<_> = (0..n).map(|i| act.row(i).unwrap()).collect();
    let rows = groups * 8;
    let mut w4 = rng.q4_0(rows * nb);
    let mut w8 = rng.q8_0(rows * nb);
    if correlated && n > 0 {
        let q = a[0].blocks();
        for (i, (b4, b8)) in w4.iter_mut().zip(&mut w8).enumerate() {
            let q = &q[i % nb].qs;
            for j in 0..16 {
                let hi = |v: i8| if v >= 0 { 15u8 } else { 0 };
                b4.qs[j] = hi(q[j]) | (hi(q[j + 16]) << 4);
            }
            for (w, &v) in b8.qs.iter_mut().zip(q) {
                *w = if v >= 0 { 127 } else { -128 };
            }
        }
    }
    let (_, i4) = interleave(GgmlType::Q4_0, rows, cols, w4.as_bytes()).unwrap();
    let (_, i8) = interleave(GgmlType::Q8_0, rows, cols, w8.as_bytes()).unwrap();
    let i4: &[BlockQ4_0x8] = as_blocks(&i4).unwrap();
    let i8: &[BlockQ8_0x8] = as_blocks(&i8).unwrap();
    let mut want = [vec![vec![0f32; rows]; n], vec![vec![0f32; rows]; n]];
    for (i, ai) in a.iter().enumerate() {
        (s.rows_q4_0x8)(i4, *ai, &mut want[0][i]);
        (s.rows_q8_0x8)(i8, *ai, &mut want[1][i]);
    }
    for k in std::iter::once(s).chain(simd_tables()) {
        let what = |t: &str, i: usize| {
            format!(
                "{} {t} n {n} groups {groups} nb {nb} seed {seed} corr {correlated}: row {i}",
                k.isa
            )
        };
        let mut got = vec![vec![f32::NAN; rows]; n];
        let mut ys: Vec<&mut [f32]> = got.iter_mut().map(|g| g.as_mut_slice()).collect();
        (k.gemm_q4_0x8)(i4, &a, &mut ys);
        for (i, (g, w)) in got.iter().zip(&want[0]).enumerate() {
            assert_same(g, w, &what("gemm_q4_0x8", i));
        }
        let mut got = vec![vec![f32::NAN; rows]; n];
        let mut ys: Vec<&mut [f32]> = got.iter_mut().map(|g| g.as_mut_slice()).collect();
        (k.gemm_q8_0x8)(i8, &a, &mut ys);
        for (i, (g, w)) in got.iter().zip(&want[1]).enumerate() {
            assert_same(g, w, &what("gemm_q8_0x8", i));
        }
    }
}

#[test]
fn gemm_kernels_equal_the_row_kernels() {
    let mut seed = 500;
    for n in [1, 2, 3, 4, 5, 8, 33] {
        for groups in [1, 2, 3, 5] {
            for nb in [1, 3, 7] {
                for correlated in [false, true] {
                    seed += 1;
                    check_gemm(seed, n, groups, nb, correlated);
                }
            }
        }
    }
    // No rows, no blocks.
    check_gemm(1, 0, 2, 3, false);
    check_gemm(2, 3, 2, 0, false);
    check_gemm(3, 3, 0, 2, false);
}

#[test]
fn row_kernels_equal_the_reference() {
    let mut seed = 10;
    for nb in [0usize, 1, 2, 3, 17, 128] {
        for rows in [0usize, 1, 5, 8, 9, 16, 23] {
            seed += 1;
            check_rows(seed, rows, nb);
        }
    }
    // The 6B shapes' block counts.
    check_rows(99, 16, 428);
}

#[test]
fn extreme_blocks() {
    // Every weight nibble 15 or 0 and every activation +-127 (the integer extremes), f16
    // maximum scales: the float products overflow to infinity the same way.
    let s = &scalar::KERNELS;
    for (wq, xv, d) in [
        (0xFFu8, 127.0f32, 0x7BFFu16),
        (0x00, -127.0, 0x7BFF),
        (0xF0, 127.0, 0x0001),
        (0x88, 1.0, 0x3C00),
    ] {
        let nb = 9;
        let x = vec![xv; nb * 32];
        let a = act_q8_0(s, &x);
        let a = a.row(0).unwrap();
        let w4 = vec![
            BlockQ4_0 {
                d: d.to_le_bytes(),
                qs: [wq; 16]
            };
            8 * nb
        ];
        let w8 = vec![
            BlockQ8_0 {
                d: d.to_le_bytes(),
                qs: [wq as i8; 32]
            };
            8 * nb
        ];
        let (_, i4) = interleave(GgmlType::Q4_0, 8, nb * 32, w4.as_bytes()).unwrap();
        let (_, i8) = interleave(GgmlType::Q8_0, 8, nb * 32, w8.as_bytes()).unwrap();
        let mut want = vec![0f32; 8];
        let mut got = vec![0f32; 8];
        for k in simd_tables() {
            (s.rows_q4_0)(&w4, a, &mut want);
            (k.rows_q4_0)(&w4, a, &mut got);
            assert_same(&got, &want, "q4_0 extreme");
            (k.rows_q4_0x8)(as_blocks(&i4).unwrap(), a, &mut got);
            assert_same(&got, &want, "q4_0x8 extreme");
            (s.rows_q8_0)(&w8, a, &mut want);
            (k.rows_q8_0)(&w8, a, &mut got);
            assert_same(&got, &want, "q8_0 extreme");
            (k.rows_q8_0x8)(as_blocks(&i8).unwrap(), a, &mut got);
            assert_same(&got, &want, "q8_0x8 extreme");
        }
    }
}

// ---- Float kernels.

#[test]
fn float_kernels_equal_the_reference() {
    let mut rng = Rng(5);
    let s = &scalar::KERNELS;
    for n in (0..40).chain([127, 128, 4096 + 5, 13696]) {
        let y: Vec<f32> = (0..n).map(|_| rng.unit() * 3.0).collect();
        let w32: Vec<u8> = (0..n)
            .flat_map(|_| (rng.unit() * 2.0).to_le_bytes())
            .collect();
        let w16: Vec<u8> = (0..n)
            .flat_map(|_| half::f16::from_f32(rng.unit() * 2.0).to_le_bytes())
            .collect();
        let wbf: Vec<u8> = (0..n)
            .flat_map(|_| f32_to_bf16(rng.unit() * 2.0).to_le_bytes())
            .collect();
        let a = rng.unit();
        for k in simd_tables() {
            assert!(
                same((k.dot_bf16)(&wbf, &y), (s.dot_bf16)(&wbf, &y)),
                "{} bf16 dot {n}",
                k.isa
            );
            if n > 3 {
                assert!(same(
                    (k.dot_bf16)(&wbf[..2 * n - 6], &y),
                    (s.dot_bf16)(&wbf[..2 * n - 6], &y)
                ));
                assert!(same(
                    (k.dot_bf16)(&wbf, &y[..n - 2]),
                    (s.dot_bf16)(&wbf, &y[..n - 2])
                ));
            }
            assert!(
                same((k.dot_f32)(&w32, &y), (s.dot_f32)(&w32, &y)),
                "{} f32 dot {n}",
                k.isa
            );
            assert!(
                same((k.dot_f16)(&w16, &y), (s.dot_f16)(&w16, &y)),
                "{} f16 dot {n}",
                k.isa
            );
            // Mismatched lengths use the shorter one, on every path.
            if n > 3 {
                assert!(same(
                    (k.dot_f16)(&w16[..2 * n - 6], &y),
                    (s.dot_f16)(&w16[..2 * n - 6], &y)
                ));
                assert!(same(
                    (k.dot_f32)(&w32, &y[..n - 2]),
                    (s.dot_f32)(&w32, &y[..n - 2])
                ));
            }
            let (mut got, mut want) = (y.clone(), y.clone());
            (k.axpy_f32)(a, &w32, &mut got);
            (s.axpy_f32)(a, &w32, &mut want);
            assert_same(&got, &want, "axpy f32");
            (k.axpy_f16)(a, &w16, &mut got);
            (s.axpy_f16)(a, &w16, &mut want);
            assert_same(&got, &want, "axpy f16");
        }
    }
    // Extremes: f16 max, subnormal and infinite weights.
    let w16: Vec<u8> = [0x7BFFu16, 0x0001, 0x7C00, 0xFC00, 0x8000]
        .iter()
        .cycle()
        .take(37)
        .flat_map(|b| b.to_le_bytes())
        .collect();
    let y: Vec<f32> = (0..37).map(|i| i as f32 - 10.0).collect();
    // bf16: the largest finite, a subnormal, both infinities, -0 and a NaN.
    let wbf: Vec<u8> = [0x7F7Fu16, 0x0001, 0x7F80, 0xFF80, 0x8000, 0x7FC1]
        .iter()
        .cycle()
        .take(37)
        .flat_map(|b| b.to_le_bytes())
        .collect();
    for k in simd_tables() {
        assert!(same((k.dot_f16)(&w16, &y), (s.dot_f16)(&w16, &y)));
        assert!(same((k.dot_bf16)(&wbf, &y), (s.dot_bf16)(&wbf, &y)));
        assert!(same(
            (k.dot_bf16)(&wbf[..32], &y[..16]),
            (s.dot_bf16)(&wbf[..32], &y[..16])
        ));
    }
}

#[test]
fn attention_kernels_equal_the_reference() {
    let mut rng = Rng(9);
    let s = &scalar::KERNELS;
    for d in [4usize, 32, 72, 128, 130, 256] {
        for stride_elems in [d, d + 3, 2 * d + 128] {
            for n in [0usize, 1, 2, 17, 300] {
                let len = if n == 0 {
                    0
                } else {
                    (n - 1) * stride_elems + d
                };
                let x: Vec<u8> = (0..len)
                    .flat_map(|_| half::f16::from_f32(rng.unit() * 4.0).to_le_bytes())
                    .collect();
                let q: Vec<f32> = (0..d).map(|_| rng.unit()).collect();
                let w: Vec<f32> = (0..n).map(|_| rng.unit().abs()).collect();
                for k in simd_tables() {
                    // One more output than rows: the last one is left alone.
                    let mut want = vec![7.0f32; n + 1];
                    let mut got = want.clone();
                    (s.scores_f16)(&x, 2 * stride_elems, &q, 0.125, &mut want);
                    (k.scores_f16)(&x, 2 * stride_elems, &q, 0.125, &mut got);
                    assert_same(&got, &want, &format!("{} scores d={d} n={n}", k.isa));
                    assert_eq!(got[n], 7.0);
                    // Row by row with the dot kernel: the same bits.
                    for (t, g) in got.iter().take(n).enumerate() {
                        let row = &x[2 * t * stride_elems..2 * (t * stride_elems + d)];
                        assert!(same(*g, (k.dot_f16)(row, &q) * 0.125));
                    }
                    let start: Vec<f32> = (0..d).map(|i| i as f32 * 0.25 - 3.0).collect();
                    let mut want = start.clone();
                    let mut got = start.clone();
                    (s.mix_f16)(&x, 2 * stride_elems, &w, &mut want);
                    (k.mix_f16)(&x, 2 * stride_elems, &w, &mut got);
                    assert_same(&got, &want, &format!("{} mix d={d} n={n}", k.isa));
                    // And with one weight too many (no row for it): ignored.
                    let mut w2 = w.clone();
                    w2.push(1.0);
                    let mut got = start.clone();
                    (k.mix_f16)(&x, 2 * stride_elems, &w2, &mut got);
                    assert_same(&got, &want, "mix, extra weight");
                }
            }
        }
    }
}

// ---- Whole products, every table, every thread count.

/// A `rows x cols` matrix of `ty` with random blocks (edge scales included).
fn matrix(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let nb = rows * cols / 32;
    match ty {
        GgmlType::Q4_0 => rng.q4_0(nb).as_bytes().to_vec(),
        GgmlType::Q8_0 => rng.q8_0(nb).as_bytes().to_vec(),
        GgmlType::Q4_1 => rng.q4_1(nb).as_bytes().to_vec(),
        GgmlType::F32 => (0..rows * cols)
            .flat_map(|_| rng.unit().to_le_bytes())
            .collect(),
        GgmlType::F16 => (0..rows * cols)
            .flat_map(|_| half::f16::from_f32(rng.unit()).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..rows * cols)
            .flat_map(|_| ((rng.unit().to_bits() >> 16) as u16).to_le_bytes())
            .collect(),
        other => rng.blocks(other, rows * cols / other.block_size()),
    }
}

fn check_matmul(seed: u64, ty: GgmlType, rows: usize, cols: usize, n: usize, pools: &[Pool]) {
    let mut rng = Rng(seed);
    let data = matrix(&mut rng, ty, rows, cols);
    let x: Vec<f32> = if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        rng.activations_q8_1(n * cols)
    } else {
        rng.activations(n * cols)
    };
    let w = WeightMatrix::new(ty, rows, cols, &data).unwrap();
    let mut want = vec![0f32; n * rows];
    matmul_with(&scalar::KERNELS, None, &w, &x, n, &mut want).unwrap();
    let (ity, idata) = if ty.interleaved().is_some() {
        interleave(ty, rows, cols, &data).unwrap()
    } else {
        (ty, data.clone())
    };
    let wi = WeightMatrix::new(ity, rows, cols, &idata).unwrap();
    let tables = std::iter::once(&scalar::KERNELS).chain(simd_tables());
    for k in tables {
        for pool in std::iter::once(None).chain(pools.iter().map(Some)) {
            let threads = pool.map_or(1, Pool::threads);
            for (m, form) in [(&w, "portable"), (&wi, "interleaved")] {
                let mut got = vec![f32::NAN; n * rows];
                matmul_with(k, pool, m, &x, n, &mut got).unwrap();
                let what = format!(
                    "{} {ty}->{} {form} {rows}x{cols} n={n} threads={threads}",
                    k.isa,
                    m.ty()
                );
                assert_same(&got, &want, &what);
            }
        }
    }
}

#[test]
fn new_type_products_are_bit_identical_across_tables_and_threads() {
    let pools: Vec<Pool> = [2, 3].map(|t| Pool::new(t).unwrap()).into();
    let mut seed = 5000;
    for ty in [
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::IQ4_NL,
        GgmlType::BF16,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_XS,
    ] {
        let bs = ty.block_size().max(32);
        for (rows, nb) in [(1, 1), (8, 2), (13, 3), (40, 1), (17, 16)] {
            for n in [1, 2, 5] {
                seed += 1;
                check_matmul(seed, ty, rows, nb * bs, n, &pools);
            }
        }
    }
}

/// The Q5_0, Q5_1, IQ4_NL, IQ4_XS and k-quant row kernels of every table against the scalar reference, with
/// random blocks (edge scales included) and activations whose blocks range from zero to the
/// largest magnitudes; with `correlated`, the weights follow the activations' signs so that
/// the integer sums are large.
fn check_new_rows(seed: u64, rows: usize, nb: usize, correlated: bool) {
    let mut rng = Rng(seed);
    let s = &scalar::KERNELS;
    let x = rng.activations(nb * 256);
    let a0 = act_q8_0(s, &x);
    let a0 = a0.row(0).unwrap();
    let mut ak = ActQ8K::new();
    ak.quantize(&x, x.len()).unwrap();
    let ak = ak.row(0).unwrap();
    let mut w5 = rng.blocks(GgmlType::Q5_0, rows * nb * 8);
    let mut w4k = rng.blocks(GgmlType::Q4_K, rows * nb);
    let mut w6k = rng.blocks(GgmlType::Q6_K, rows * nb);
    if correlated && nb > 0 {
        // Q5_0: levels 31 / 0 where the activation is positive / negative (qs nibbles and
        // the fifth bits); Q4_K: nibbles 15 / 0 and the largest group scales; Q6_K: levels
        // 63 / 0 (q - 32 = 31 / -32) and scales +-127.
        for (i, b) in w5.chunks_exact_mut(22).enumerate() {
            let q = &a0.blocks()[i % (nb * 8)].qs;
            let mut qh = 0u32;
            for j in 0..16 {
                let (p0, p1) = (q[j] >= 0, q[j + 16] >= 0);
                b[6 + j] = if p0 { 0x0F } else { 0 } | if p1 { 0xF0 } else { 0 };
                qh |= u32::from(p0) << j | u32::from(p1) << (j + 16);
            }
            b[2..6].copy_from_slice(&qh.to_le_bytes());
        }
        for (i, b) in w4k.chunks_exact_mut(144).enumerate() {
            let q = &ak[i % nb].qs;
            for c in 0..4 {
                for l in 0..32 {
                    let lo = if q[64 * c + l] >= 0 { 0x0F } else { 0 };
                    let hi = if q[64 * c + 32 + l] >= 0 { 0xF0 } else { 0 };
                    b[16 + 32 * c + l] = lo | hi;
                }
            }
            b[4..16].fill(0xFF);
        }
        for (i, b) in w6k.chunks_exact_mut(210).enumerate() {
            let q = &ak[i % nb].qs;
            for n in 0..2 {
                for l in 0..32 {
                    let up = |k: usize| q[128 * n + 32 * k + l] >= 0;
                    let nib = |k: usize| if up(k) { 0x0F } else { 0 };
                    b[64 * n + l] = nib(0) | (nib(2) << 4);
                    b[64 * n + 32 + l] = nib(1) | (nib(3) << 4);
                    let hb = |k: usize| if up(k) { 3u8 << (2 * k) } else { 0 };
                    b[128 + 32 * n + l] = hb(0) | hb(1) | hb(2) | hb(3);
                }
            }
            for (j, sc) in b[192..208].iter_mut().enumerate() {
                *sc = if j % 2 == 0 { 127 } else { 0x81 };
            }
        }
    }
    let mut w5k = rng.blocks(GgmlType::Q5_K, rows * nb);
    if correlated && nb > 0 {
        // Q5_K: levels 31 / 0 (nibbles and fifth bits) where the activation is positive /
        // negative, and the largest group scales: the largest partial sums of the NEON
        // kernel's i16 lanes (4 * 31 * 128).
        for (i, b) in w5k.chunks_exact_mut(176).enumerate() {
            let q = &ak[i % nb].qs;
            b[16..48].fill(0);
            for c in 0..4 {
                for l in 0..32 {
                    let (p0, p1) = (q[64 * c + l] >= 0, q[64 * c + 32 + l] >= 0);
                    b[48 + 32 * c + l] = if p0 { 0x0F } else { 0 } | if p1 { 0xF0 } else { 0 };
                    b[16 + l] |= u8::from(p0) << (2 * c) | u8::from(p1) << (2 * c + 1);
                }
            }
            b[4..16].fill(0xFF);
        }
    }
    let wnl = rng.blocks(GgmlType::IQ4_NL, rows * nb * 8);
    let wxs = rng.blocks(GgmlType::IQ4_XS, rows * nb);
    let wxs: &[chatglm_kernels::quant::BlockIq4Xs] = as_blocks(&wxs).unwrap();
    let w2k = rng.blocks(GgmlType::Q2_K, rows * nb);
    let w2k: &[chatglm_kernels::quant::BlockQ2K] = as_blocks(&w2k).unwrap();
    let w3k = rng.blocks(GgmlType::Q3_K, rows * nb);
    let w3k: &[chatglm_kernels::quant::BlockQ3K] = as_blocks(&w3k).unwrap();
    let w51 = rng.blocks(GgmlType::Q5_1, rows * nb * 8);
    let w51: &[BlockQ5_1] = as_blocks(&w51).unwrap();
    let mut a1 = ActQ8_1::new();
    let x1 = rng.activations_q8_1(nb * 256);
    a1.quantize(s, &x1, x1.len()).unwrap();
    let a1 = a1.row(0).unwrap();
    let w5k: &[BlockQ5K] = as_blocks(&w5k).unwrap();
    let wnl: &[BlockIq4Nl] = as_blocks(&wnl).unwrap();
    let w5: &[BlockQ5_0] = as_blocks(&w5).unwrap();
    let w4k: &[BlockQ4K] = as_blocks(&w4k).unwrap();
    let w6k: &[BlockQ6K] = as_blocks(&w6k).unwrap();
    let mut want = [
        vec![0f32; rows],
        vec![0f32; rows],
        vec![0f32; rows],
        vec![0f32; rows],
        vec![0f32; rows],
        vec![0f32; rows],
        vec![0f32; rows],
        vec![0f32; rows],
        vec![0f32; rows],
    ];
    (s.rows_iq4_xs)(wxs, ak, &mut want[8]);
    (s.rows_q2_k)(w2k, ak, &mut want[7]);
    (s.rows_q3_k)(w3k, ak, &mut want[6]);
    (s.rows_q5_1)(w51, a1, &mut want[5]);
    (s.rows_q5_k)(w5k, ak, &mut want[3]);
    (s.rows_iq4_nl)(wnl, a0, &mut want[4]);
    (s.rows_q5_0)(w5, a0, &mut want[0]);
    (s.rows_q4_k)(w4k, ak, &mut want[1]);
    (s.rows_q6_k)(w6k, ak, &mut want[2]);
    for k in simd_tables() {
        let what = |t: &str| format!("{} {t} rows {rows} nb {nb} seed {seed}", k.isa);
        let mut got = vec![f32::NAN; rows];
        (k.rows_q5_0)(w5, a0, &mut got);
        assert_same(&got, &want[0], &what("q5_0"));
        (k.rows_q4_k)(w4k, ak, &mut got);
        assert_same(&got, &want[1], &what("q4_k"));
        (k.rows_q6_k)(w6k, ak, &mut got);
        assert_same(&got, &want[2], &what("q6_k"));
        (k.rows_q5_k)(w5k, ak, &mut got);
        assert_same(&got, &want[3], &what("q5_k"));
        (k.rows_iq4_nl)(wnl, a0, &mut got);
        assert_same(&got, &want[4], &what("iq4_nl"));
        (k.rows_q5_1)(w51, a1, &mut got);
        assert_same(&got, &want[5], &what("q5_1"));
        (k.rows_q3_k)(w3k, ak, &mut got);
        assert_same(&got, &want[6], &what("q3_k"));
        (k.rows_q2_k)(w2k, ak, &mut got);
        assert_same(&got, &want[7], &what("q2_k"));
        (k.rows_iq4_xs)(wxs, ak, &mut got);
        assert_same(&got, &want[8], &what("iq4_xs"));
    }
}

#[test]
fn new_row_kernels_equal_the_reference() {
    for (seed, (rows, nb)) in [(0, 0), (1, 1), (3, 1), (8, 2), (9, 3), (17, 5)]
        .into_iter()
        .enumerate()
    {
        for correlated in [false, true] {
            check_new_rows(seed as u64 + 77, rows, nb, correlated);
        }
    }
}

#[test]
fn products_are_bit_identical_across_tables_threads_and_layouts() {
    let pools: Vec<Pool> = [2, 3, 5].map(|t| Pool::new(t).unwrap()).into();
    let mut seed = 100;
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_1,
        GgmlType::F16,
        GgmlType::F32,
    ] {
        for (rows, cols) in [
            (1, 32),
            (8, 32),
            (13, 96),
            (40, 64),
            (64, 4096 / 4),
            (96, 544),
        ] {
            for n in [1, 2, 3, 5, 8, 33] {
                seed += 1;
                check_matmul(seed, ty, rows, cols, n, &pools);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_products(
        seed in any::<u64>(),
        ty in prop::sample::select(vec![GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_1, GgmlType::F16]),
        groups in 1usize..6,
        extra in 0usize..8,
        nb in 1usize..20,
        n in 1usize..10,
    ) {
        let pools = [Pool::new(2).unwrap()];
        check_matmul(seed, ty, groups * 8 + extra, nb * 32, n, &pools);
    }

    #[test]
    fn random_gemm(seed in any::<u64>(), n in 0usize..12, groups in 0usize..6, nb in 0usize..12, correlated in any::<bool>()) {
        check_gemm(seed, n, groups, nb, correlated);
    }

    #[test]
    fn random_rows(seed in any::<u64>(), rows in 0usize..40, nb in 0usize..40) {
        check_rows(seed, rows, nb);
    }

    #[test]
    fn random_new_rows(seed in any::<u64>(), rows in 0usize..20, nb in 0usize..6, correlated in any::<bool>()) {
        check_new_rows(seed, rows, nb, correlated);
    }

    #[test]
    fn random_quantizer_inputs(seed in any::<u64>(), nb in 0usize..20) {
        check_quantizers(&Rng(seed).activations(nb * 32));
    }
}

#[test]
fn pool_threads_do_not_change_matvec_at_6b_shapes() {
    // One full-size shape per type through 1, 2 and 3 threads.
    let pools: Vec<Pool> = [2, 3].map(|t| Pool::new(t).unwrap()).into();
    check_matmul(7, GgmlType::Q4_0, 4608, 4096, 1, &pools);
    check_matmul(8, GgmlType::Q8_0, 512, 13696, 2, &pools);
    check_matmul(9, GgmlType::Q4_K, 520, 4096, 1, &pools);
    check_matmul(10, GgmlType::Q6_K, 260, 4096, 2, &pools);
    check_matmul(11, GgmlType::Q5_0, 130, 13696, 1, &pools);
    let _ = row_bytes(GgmlType::Q4_0, 4096).unwrap();
}
