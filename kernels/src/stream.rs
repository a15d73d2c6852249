//! A plain streaming read, to measure the machine's read bandwidth next to the kernels'
//! (`chatglm bench` prints the ratio). Decoding is bound by this number: every weight is
//! read once per token.

use crate::pool::{share, Pool};
use std::sync::atomic::{AtomicU64, Ordering};

/// Wrapping sum of `data` read as little-endian u64 words (a trailing partial word is
/// ignored), the words split in equal contiguous shares over the threads of `pool` (or read
/// on this thread). The result is only there so the reads cannot be optimized away.
pub fn sum_words(pool: Option<&Pool>, data: &[u8]) -> u64 {
    let words = data.len() / 8;
    let total = AtomicU64::new(0);
    let part = |t: usize, threads: usize| {
        let r = share(words, threads, t);
        let bytes = data.get(r.start * 8..r.end * 8).unwrap_or(&[]);
        let s = bytes.chunks_exact(8).fold(0u64, |acc, w| {
            acc.wrapping_add(u64::from_le_bytes([
                w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7],
            ]))
        });
        total.fetch_add(s, Ordering::Relaxed);
    };
    match pool {
        Some(p) => p.run(&|t| part(t, p.threads())),
        None => part(0, 1),
    }
    total.load(Ordering::Relaxed)
}

/// The stream counts per thread that [`sum_words_streams`] reads with.
pub const STREAMS: [usize; 4] = [1, 2, 4, 8];

/// [`sum_words`] with each thread's share cut into `streams` contiguous parts read side
/// by side, one 64-byte line of each in turn: several independent sequential streams per
/// core, as decode reads several weight rows at once, which lets a core keep more reads in
/// flight than one stream does. `streams` is rounded down to one of [`STREAMS`] (0 reads as
/// 1). The same wrapping sum as [`sum_words`] (the order of a wrapping sum does not matter).
pub fn sum_words_streams(pool: Option<&Pool>, data: &[u8], streams: usize) -> u64 {
    match streams {
        0 | 1 => sum_words(pool, data),
        2 | 3 => interleaved::<2>(pool, data),
        4..=7 => interleaved::<4>(pool, data),
        _ => interleaved::<8>(pool, data),
    }
}

/// Words by which the streams' starts are skewed (65 lines: not a power of two).
const SKEW: usize = 65 * 8;

/// See [`sum_words_streams`]; `S` streams per thread.
fn interleaved<const S: usize>(pool: Option<&Pool>, data: &[u8]) -> u64 {
    let words = data.len() / 8;
    let total = AtomicU64::new(0);
    let part = |t: usize, threads: usize| {
        let r = share(words, threads, t);
        let mine = data.get(r.start * 8..r.end * 8).unwrap_or(&[]);
        let n = mine.len() / 8;
        // Stream `k` starts `k * SKEW` words after its equal share would: streams exactly a
        // power of two apart would fall in the same cache sets and memory banks.
        let cut = |k: usize| (share(n, S, k).start + k * SKEW).min(n);
        let lines: [_; S] = std::array::from_fn(|k| {
            let end = if k + 1 == S { n } else { cut(k + 1) };
            mine.get(cut(k) * 8..end * 8)
                .unwrap_or(&[])
                .as_chunks::<64>()
        });
        // One 8-word accumulator per stream (vector adds, no horizontal work per line).
        let mut acc = [[0u64; 8]; S];
        // Whole lines in step while the shortest stream lasts, then what is left of each.
        let common = lines.iter().map(|(l, _)| l.len()).min().unwrap_or(0);
        for i in 0..common {
            for ((l, _), a) in lines.iter().zip(&mut acc) {
                add_line(a, &l[i]);
            }
        }
        for ((l, rest), a) in lines.iter().zip(&mut acc) {
            for line in &l[common..] {
                add_line(a, line);
            }
            a[0] = a[0].wrapping_add(words_sum(rest));
        }
        let s = acc.iter().flatten().fold(0u64, |x, &y| x.wrapping_add(y));
        total.fetch_add(s, Ordering::Relaxed);
    };
    match pool {
        Some(p) => p.run(&|t| part(t, p.threads())),
        None => part(0, 1),
    }
    total.load(Ordering::Relaxed)
}

/// Adds the 8 little-endian words of `line` to `acc`, word by word (wrapping).
#[inline]
fn add_line(acc: &mut [u64; 8], line: &[u8; 64]) {
    for (a, w) in acc.iter_mut().zip(line.as_chunks::<8>().0) {
        *a = a.wrapping_add(u64::from_le_bytes(*w));
    }
}

/// Wrapping sum of the whole little-endian words of `bytes`.
fn words_sum(bytes: &[u8]) -> u64 {
    let (words, _) = bytes.as_chunks::<8>();
    words
        .iter()
        .fold(0u64, |acc, w| acc.wrapping_add(u64::from_le_bytes(*w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_words_on_any_thread_count() {
        let data: Vec<u8> = (0..8 * 1000 + 5).map(|i| (i % 251) as u8).collect();
        let want = data
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
            .fold(0u64, u64::wrapping_add);
        assert_eq!(sum_words(None, &data), want);
        for t in [2, 3] {
            assert_eq!(sum_words(Some(&Pool::new(t).unwrap()), &data), want);
        }
        assert_eq!(sum_words(None, &[1, 2, 3]), 0);
    }

    #[test]
    fn several_streams_sum_the_same_words() {
        // Lengths that leave partial lines and unequal streams, on 1..3 threads.
        for len in [0, 7, 8, 64 * 9 + 24, 8 * 1000 + 5, 64 * 64 * 3 + 40] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let want = sum_words(None, &data);
            for streams in [0, 1, 2, 3, 4, 5, 8, 100] {
                assert_eq!(
                    sum_words_streams(None, &data, streams),
                    want,
                    "{len} {streams}"
                );
                for t in [2, 3] {
                    let pool = Pool::new(t).unwrap();
                    assert_eq!(sum_words_streams(Some(&pool), &data, streams), want);
                }
            }
        }
    }
}
