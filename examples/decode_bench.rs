//! Decode speed of a GGUF model (weights read in place from the mapped file), next to the
//! machine's streaming read bandwidth. Until `chatglm bench` exists:
//!
//! ```text
//! cargo run --release --example decode_bench -- MODEL.gguf [--threads N] [--steps 32]
//!     [--runs 3] [--pos 0] [--no-stream]
//! ```
//!
//! `--pos P` first fills the KV cache with P positions (random keys and values, loaded as a
//! prefix: the attention work of a decode step at position P, without a P-token prefill).
//! Prints tokens/s per run and the median, the weight bytes streamed per token, and the
//! ratio of achieved weight bytes/s to a plain streaming read of the mapped file and of an
//! anonymous buffer of the same size.

use chatglm::arch::keys;
use chatglm::gguf::GgufFile;
use chatglm::model::{Family, Logits, Model, ModelConfig, RopeScaling, StateOptions, TensorEntry};
use chatglm_kernels::stream::sum_words;
use chatglm_kernels::{isa, Pool};
use std::sync::Arc;
use std::time::Instant;

/// The mapped file as the model's storage.
struct Mapped(GgufFile);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn config(g: &GgufFile) -> ModelConfig {
    let u = |k: &str| g.get_u32(k).unwrap_or_else(|e| panic!("{k}: {e}")) as usize;
    ModelConfig {
        family: Family::ChatGlm2,
        vocab_size: g
            .tensor("output.weight")
            .map(|t| t.dims[1] as usize)
            .expect("output.weight"),
        hidden_size: u(keys::EMBEDDING_LENGTH),
        num_layers: u(keys::BLOCK_COUNT),
        num_heads: u(keys::HEAD_COUNT),
        num_kv_groups: u(keys::HEAD_COUNT_KV),
        head_dim: u(keys::EMBEDDING_LENGTH) / u(keys::HEAD_COUNT),
        ffn_hidden_size: u(keys::FEED_FORWARD_LENGTH),
        context_length: u(keys::CONTEXT_LENGTH),
        rms_eps: g.get_f32(keys::RMS_EPS).unwrap_or(1e-5),
        rope_base: g.get_f32(keys::ROPE_FREQ_BASE).unwrap_or(10000.0),
        rope_scaling: RopeScaling::None,
    }
}

/// Best of 3 streaming reads of `data` in GB/s.
fn stream_gbs(pool: &Pool, data: &[u8]) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(sum_words(Some(pool), data));
            data.len() as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: decode_bench MODEL.gguf [options]");
    let threads = arg(&args, "--threads", 2);
    let steps = arg(&args, "--steps", 32);
    let runs = arg(&args, "--runs", 3);
    let prefix = arg(&args, "--pos", 0);

    let t0 = Instant::now();
    let g = GgufFile::open(path).expect("open");
    let cfg = config(&g);
    let data_offset = g.data_offset() as usize;
    let entries: std::collections::HashMap<String, TensorEntry> = g
        .tensors()
        .iter()
        .map(|t| {
            let start = data_offset + t.offset as usize;
            let entry = TensorEntry {
                ty: t.ty,
                dims: t.dims.clone(),
                range: start..start + t.size_bytes as usize,
            };
            (t.name.clone(), entry)
        })
        .collect();
    // Every weight but the embedding is read once per token (the embedding: one row).
    let streamed: u64 = g
        .tensors()
        .iter()
        .filter(|t| t.name != "token_embd.weight")
        .map(|t| t.size_bytes)
        .sum();
    let types: std::collections::BTreeSet<String> = g
        .tensors()
        .iter()
        .map(|t| t.ty.name().to_string())
        .collect();
    let storage = Arc::new(Mapped(g));
    let model = Model::load(&cfg, storage.clone(), |n| entries.get(n).cloned()).expect("load");
    let load = t0.elapsed();

    let mut options = StateOptions::new(prefix + steps + 4);
    options.threads = threads;
    options.batch = 1;
    let mut st = model.new_state(options).expect("state");
    println!(
        "model {path}: types {types:?}, {:.2} GB streamed per token; kernels {}; {threads} threads; load {:.0} ms",
        streamed as f64 / 1e9,
        isa::active(),
        load.as_secs_f64() * 1e3
    );

    let mut rates = Vec::new();
    for run in 0..runs {
        st.kv_cache_mut().clear();
        if prefix > 0 {
            let n = cfg.num_layers * prefix * cfg.kv_dim();
            let mut state = 12345u64 + run as u64;
            let mut rnd = || {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            };
            let keys: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let values: Vec<f32> = (0..n).map(|_| rnd()).collect();
            st.kv_cache_mut()
                .load_prefix(prefix, &keys, &values)
                .expect("prefix");
        }
        // Two warm-up steps (page cache, first touch of the buffers).
        let mut token = 100u32;
        for _ in 0..2 {
            let pos = st.kv_cache().len();
            let logits = model
                .forward(&mut st, &[token], pos, Logits::Last)
                .expect("forward");
            token = chatglm::sampler::argmax(logits);
        }
        let t = Instant::now();
        for _ in 0..steps {
            let pos = st.kv_cache().len();
            let logits = model
                .forward(&mut st, &[token], pos, Logits::Last)
                .expect("forward");
            token = chatglm::sampler::argmax(logits);
        }
        let rate = steps as f64 / t.elapsed().as_secs_f64();
        println!(
            "run {run}: {rate:.2} tokens/s at positions {}..{}",
            prefix + 2,
            prefix + 2 + steps
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let achieved = median * streamed as f64 / 1e9;

    if args.iter().any(|a| a == "--no-stream") {
        println!("median {median:.2} tokens/s = {achieved:.1} GB/s of weights");
        return;
    }
    let pool = Pool::new(threads).expect("pool");
    let file_gbs = stream_gbs(&pool, (*storage).as_ref());
    let anon = vec![1u8; (*storage).as_ref().len()];
    let anon_gbs = stream_gbs(&pool, &anon);
    println!(
        "median {median:.2} tokens/s = {achieved:.1} GB/s of weights; streaming read {threads} threads: mapped file {file_gbs:.1} GB/s (ratio {:.2}), anonymous buffer {anon_gbs:.1} GB/s (ratio {:.2})",
        achieved / file_gbs,
        achieved / anon_gbs
    );
}
