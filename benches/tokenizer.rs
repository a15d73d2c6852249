//! Encoding speed of the SentencePiece BPE tokenizer on mixed Chinese/English text.
//!
//! The text is `shared/golden/corpus.txt` repeated to about 1 MB, encoded as one string, and its
//! first quarter and half: if the cost is linear in the input, the three sizes show the same
//! bytes per second.
//!
//! Run: `cargo bench -p chatglm --bench tokenizer`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use chatglm::tokenizer::{Family, Tokenizer};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/golden");

/// The first `len` bytes of the corpus repeated, cut back to a character boundary.
fn text(len: usize) -> String {
    let corpus = std::fs::read_to_string(format!("{GOLDEN}/corpus.txt")).expect("corpus.txt");
    let mut s = String::with_capacity(len + corpus.len());
    while s.len() < len {
        s.push_str(&corpus);
    }
    let mut cut = len;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

fn encode(c: &mut Criterion) {
    const MB: usize = 1 << 20;
    let full = text(MB);
    for (name, model) in [
        ("identity", "tokenizer_identity.model"),
        ("nfkc", "tokenizer_nfkc.model"),
    ] {
        let tok = Tokenizer::from_spm_file(format!("{GOLDEN}/{model}"), Family::ChatGlm3)
            .expect("toy tokenizer");
        let mut group = c.benchmark_group(format!("encode_{name}"));
        group.sample_size(10);
        for size in [MB / 4, MB / 2, MB] {
            let mut cut = size;
            while !full.is_char_boundary(cut) {
                cut -= 1;
            }
            let input = &full[..cut];
            group.throughput(Throughput::Bytes(input.len() as u64));
            group.bench_with_input(BenchmarkId::from_parameter(input.len()), input, |b, s| {
                b.iter(|| tok.encode(s))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, encode);
criterion_main!(benches);
