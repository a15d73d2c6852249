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
}
