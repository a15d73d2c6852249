//! `chatglm perplexity`: how well a model predicts a text (quantization quality).

use super::common::KvTypeArg;
use super::CliError;
use chatglm::model::KvType;
use chatglm::perplexity::perplexity;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `chatglm perplexity`.
#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    /// The GGUF model file.
    #[arg(short, long, value_name = "FILE")]
    model: PathBuf,
    /// The text file (UTF-8, at most 256 MiB).
    #[arg(short = 'f', long = "file", value_name = "TEXT_FILE")]
    file: PathBuf,
    /// Window size: each window holds `[gMASK] sop` and at most N-2 text tokens
    /// [default: 512, at most the model's context].
    #[arg(short = 'c', long = "ctx-size", value_name = "N")]
    ctx_size: Option<usize>,
    /// Element type of the KV cache.
    #[arg(long, value_enum, default_value_t = KvTypeArg::F16)]
    kv_type: KvTypeArg,
    /// Threads [default: all cores].
    #[arg(short = 't', long, value_name = "N")]
    threads: Option<usize>,
    /// Read the whole model file into memory instead of mapping it.
    #[arg(long)]
    no_mmap: bool,
    /// Print `{"ppl": x, "tokens": n}`.
    #[arg(long)]
    json: bool,
}

/// Runs `chatglm perplexity`.
pub fn run(args: &PerplexityArgs) -> Result<(), CliError> {
    let text = super::common::read_text(&args.file)?;
    let engine = super::common::open_engine(&args.model, args.no_mmap)?;
    let context = args
        .ctx_size
        .unwrap_or_else(|| 512.min(engine.config().context_length));
    let kv = match args.kv_type {
        KvTypeArg::F16 => KvType::F16,
        KvTypeArg::F32 => KvType::F32,
    };
    let mut progress = |done: usize, total: usize| {
        if !args.json {
            eprint!("\rscored {done}/{total} tokens");
        }
    };
    let p = perplexity(
        &engine,
        &text,
        context,
        kv,
        args.threads.unwrap_or(0),
        &mut progress,
    )?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "ppl": p.ppl, "tokens": p.tokens })
        )?;
    } else {
        eprintln!();
        writeln!(
            out,
            "perplexity {:.4} over {} tokens (windows of {context})",
            p.ppl, p.tokens
        )?;
    }
    Ok(())
}
