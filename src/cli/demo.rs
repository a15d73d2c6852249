//! `chatglm demo`: the whole pipeline with no download. Writes a small synthetic model (random
//! weights, placeholder vocabulary; kept under `models/` for the next run), loads it and
//! streams a reply. The text is gibberish, and the demo says so.

use super::CliError;
use chatglm::build::synthetic::{write_synthetic, Preset};
use chatglm::build::{NoProgress, WriteOptions};
use chatglm::{Engine, GenerateOptions, Session, SessionOptions};
use chatglm_kernels::GgmlType;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `chatglm demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where the synthetic model is kept.
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "models/synthetic-tiny-q4_0.gguf"
    )]
    model: PathBuf,
    /// The message to reply to.
    #[arg(short, long, default_value = "Hello! What can you do?")]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 48)]
    n_predict: usize,
    /// Random seed of the sampler.
    #[arg(short = 's', long, default_value_t = 42)]
    seed: u64,
}

/// Runs `chatglm demo`.
pub fn run(args: &DemoArgs) -> Result<(), CliError> {
    if !args.model.exists() {
        if let Some(dir) = args.model.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        eprintln!(
            "writing a synthetic model (random weights) to {} ...",
            args.model.display()
        );
        let start = Instant::now();
        let opts = WriteOptions {
            output: args.model.clone(),
            matrix_type: GgmlType::Q4_0,
            portable: true,
            threads: chatglm::resolve_threads(0),
            name: "synthetic-tiny".into(),
        };
        write_synthetic(
            Preset::Tiny,
            42,
            &opts,
            &mut NoProgress,
            &AtomicBool::new(false),
        )
        .map_err(|source| CliError::WriteModel {
            path: args.model.clone(),
            source,
        })?;
        eprintln!("done in {:.2} s", start.elapsed().as_secs_f64());
    }
    let engine = Arc::new(Engine::open(&args.model)?);
    let cfg = engine.config();
    eprintln!(
        "model: {} ({} layers, hidden {}, {} heads, vocabulary {}), weights memory-mapped",
        args.model.display(),
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_heads,
        cfg.vocab_size
    );
    eprintln!(
        "note: this model's weights are RANDOM, so its reply is gibberish. To chat for real, convert a\n\
         ChatGLM2/3 checkpoint with chatglm-convert and use `chatglm chat -m FILE` (see README.md).\n"
    );
    let mut session = Session::new(Arc::clone(&engine), SessionOptions::default())?;
    let mut options = GenerateOptions {
        max_new_tokens: args.n_predict,
        ..GenerateOptions::default()
    };
    options.sampler.seed = args.seed;
    println!("> {}", args.prompt);
    let mut sink = super::common::TextSink::stdout();
    let generation = session.chat(&args.prompt, &options, &mut |piece| sink.write(piece))?;
    sink.finish()?;
    super::run::print_timings(&generation);
    Ok(())
}
