//! `chatglm bench`: prompt (prefill) and generation (decode) speed, and the weight bytes per
//! second that decode streams (decode reads every weight once per token, so it is bound by
//! memory bandwidth).

use super::common::ModelArgs;
use super::CliError;
use chatglm::arch::tensors;
use chatglm::model::{Block, Logits, StateOptions};
use chatglm::sampler::argmax;
use std::io::Write;
use std::time::{Duration, Instant};

/// Arguments of `chatglm bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt tokens to process (0: skip prefill and decode after a one-token prompt).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    n_prompt: usize,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    n_gen: usize,
    /// Prompt tokens per pass over the weights.
    #[arg(short = 'b', long = "batch", default_value_t = chatglm::model::DEFAULT_BATCH)]
    batch: usize,
    /// Runs of each measurement; the median is reported.
    #[arg(short = 'r', long = "repetitions", default_value_t = 1)]
    repetitions: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs `chatglm bench`.
pub fn run(args: &BenchArgs) -> Result<(), CliError> {
    let load_start = Instant::now();
    let engine = args.model.engine()?;
    let load = load_start.elapsed();
    let model = engine.model();
    let cfg = model.config();
    let mut opts = args.model.session_options()?;
    if opts.context == 0 {
        opts.context = (args.n_prompt.max(1) + args.n_gen + 1).min(cfg.context_length);
    }
    let needed = args.n_prompt.max(1) + args.n_gen;
    if needed > opts.context {
        return Err(CliError::Input(format!(
            "-p {} + -n {} needs {needed} positions, the context holds {} (raise -c)",
            args.n_prompt, args.n_gen, opts.context
        )));
    }
    let mut state = model.new_state(StateOptions {
        context: opts.context,
        batch: args.batch.clamp(1, opts.context),
        kv_type: opts.kv_type,
        threads: chatglm::resolve_threads(opts.threads),
    })?;
    // Decode reads every matrix once per token, but only one row of the embedding (unless
    // the embedding is also the output layer, as in ChatGLM-6B).
    let file = engine.file();
    let tied = matches!(cfg.block, Block::Glm1(_));
    let weight_bytes: u64 = file
        .tensors()
        .iter()
        .filter(|t| tied || t.name != tensors::TOKEN_EMBD.gguf)
        .map(|t| t.size_bytes)
        .sum();

    // A fixed pseudo-random prompt of ordinary pieces (past the byte pieces when the
    // vocabulary has more than those: a byte-level placeholder has only its 256 bytes).
    let sp = (engine.tokenizer().sp_vocab_size() as u64).max(1);
    let lo = if sp > 512 { 259 } else { 0 };
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut prompt: Vec<u32> = (0..args.n_prompt.max(1))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (lo + x % (sp - lo)) as u32
        })
        .collect();
    // A ChatGLM-6B prompt ends its bidirectional context with `[gMASK] <sop>`.
    if let Block::Glm1(p) = cfg.block {
        prompt.truncate(prompt.len().saturating_sub(2));
        prompt.extend([p.gmask_token_id, p.sop_token_id]);
    }

    // The yardstick: a plain streaming read of the file's bytes (the weights, from the page
    // cache) on as many threads, measured between decode runs since bandwidth drifts.
    let pool = chatglm_kernels::Pool::new(state.threads())
        .map_err(|e| CliError::Input(format!("threads: {e}")))?;
    let stream_bytes = file.as_bytes();
    // One unmeasured pass first: the first touch of each mapped page costs a page fault that
    // decode never pays (the prompt already touched every weight).
    std::hint::black_box(chatglm_kernels::stream::sum_words(
        Some(&pool),
        stream_bytes,
    ));
    // The best read the machine reaches: every core, several streams each (the most any
    // decode could get), the best of each stream count per repetition.
    let all = std::thread::available_parallelism().map_or(1, usize::from);
    let all_pool =
        chatglm_kernels::Pool::new(all).map_err(|e| CliError::Input(format!("threads: {e}")))?;
    let mut best_read = (0.0f64, 1usize);
    let mut stream_rates = Vec::new();
    let (mut prefill_rates, mut decode_rates) = (Vec::new(), Vec::new());
    let mut first_token = Duration::ZERO;
    for _ in 0..args.repetitions.max(1) {
        let start = Instant::now();
        std::hint::black_box(chatglm_kernels::stream::sum_words(
            Some(&pool),
            std::hint::black_box(stream_bytes),
        ));
        stream_rates.push(stream_bytes.len() as f64 / start.elapsed().as_secs_f64() / 1e9);
        for streams in chatglm_kernels::stream::STREAMS {
            let start = Instant::now();
            std::hint::black_box(chatglm_kernels::stream::sum_words_streams(
                Some(&all_pool),
                std::hint::black_box(stream_bytes),
                streams,
            ));
            let rate = stream_bytes.len() as f64 / start.elapsed().as_secs_f64() / 1e9;
            if rate > best_read.0 {
                best_read = (rate, streams);
            }
        }
        let start = Instant::now();
        let mut logits = model
            .forward(&mut state, &prompt, 0, Logits::Last)?
            .to_vec();
        let prefill = start.elapsed();
        first_token = prefill;
        if args.n_prompt > 0 {
            prefill_rates.push(prompt.len() as f64 / prefill.as_secs_f64());
        }
        let start = Instant::now();
        for i in 0..args.n_gen {
            let next = argmax(&logits);
            logits.copy_from_slice(model.forward(
                &mut state,
                &[next],
                prompt.len() + i,
                Logits::Last,
            )?);
        }
        if args.n_gen > 0 {
            decode_rates.push(args.n_gen as f64 / start.elapsed().as_secs_f64());
        }
    }
    let (prefill_tok_s, decode_tok_s) = (median(prefill_rates), median(decode_rates));
    let weight_gb_s = weight_bytes as f64 * decode_tok_s / 1e9;
    let stream_gb_s = median(stream_rates);
    let ratio = weight_gb_s / stream_gb_s.max(1e-9);
    let (best_gb_s, best_streams) = best_read;
    let best_ratio = weight_gb_s / best_gb_s.max(1e-9);
    let kernels = chatglm_kernels::isa::active().name();
    let threads = state.threads();
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = serde_json::json!({
            "model": engine.path().display().to_string(),
            "load_ms": load.as_secs_f64() * 1e3,
            "prefill": { "tokens": args.n_prompt, "tok_s": prefill_tok_s, "first_token_ms": first_token.as_secs_f64() * 1e3 },
            "decode": {
                "tokens": args.n_gen, "tok_s": decode_tok_s, "weight_gb_s": weight_gb_s,
                "stream_read_gb_s": stream_gb_s, "ratio_to_stream_read": ratio,
                "best_read_gb_s": best_gb_s, "best_read_threads": all,
                "best_read_streams_per_thread": best_streams, "ratio_to_best_read": best_ratio,
            },
            "weight_bytes_per_token": weight_bytes,
            "kernels": kernels,
            "threads": threads,
            "repetitions": args.repetitions.max(1),
        });
        writeln!(out, "{doc}")?;
    } else {
        writeln!(
            out,
            "model: {} ({:.2} GB of weights per token, loaded in {:.0} ms)",
            engine.path().display(),
            weight_bytes as f64 / 1e9,
            load.as_secs_f64() * 1e3
        )?;
        writeln!(out, "kernels: {kernels}, threads: {threads}")?;
        if args.n_prompt > 0 {
            writeln!(
                out,
                "prefill: {} tokens, {prefill_tok_s:.2} tok/s (first token after {:.0} ms)",
                args.n_prompt,
                first_token.as_secs_f64() * 1e3
            )?;
        }
        if args.n_gen > 0 {
            writeln!(
                out,
                "decode:  {} tokens, {decode_tok_s:.2} tok/s, {weight_gb_s:.2} GB/s of weights, \
                 {:.0}% of a plain streaming read ({stream_gb_s:.2} GB/s), {:.0}% of the best \
                 read ({best_gb_s:.2} GB/s: {all} threads x {best_streams} streams)",
                args.n_gen,
                100.0 * ratio,
                100.0 * best_ratio
            )?;
        }
    }
    Ok(())
}
