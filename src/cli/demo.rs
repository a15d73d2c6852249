//! `chatglm demo`: the whole pipeline with no download. By default it loads the small trained
//! model the repository ships (`models/tiny-poems.gguf`, a ChatGLM2-architecture model trained
//! by `tools/train/train_tiny.py` on Tang poems and English fortunes) and streams its answer to
//! "写一首诗". `--random` writes and uses a synthetic model instead (random weights, placeholder
//! vocabulary, kept under `models/` for the next run), the model `bench` measures: its text is
//! gibberish, and the demo says so.

use super::CliError;
use chatglm::build::synthetic::{write_synthetic, Preset};
use chatglm::build::{NoProgress, WriteOptions};
use chatglm::{Engine, GenerateOptions, Session, SessionOptions};
use chatglm_kernels::GgmlType;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// The shipped trained model, relative to the repository root.
const TRAINED: &str = "models/tiny-poems.gguf";
/// Where `--random` keeps its synthetic model.
const SYNTHETIC: &str = "models/synthetic-tiny-q4_0.gguf";

/// Arguments of `chatglm demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// The model file [default: models/tiny-poems.gguf, or with --random
    /// models/synthetic-tiny-q4_0.gguf].
    #[arg(short, long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Use a synthetic model with random weights (written if the file is missing), the model
    /// the benchmarks use; its reply is gibberish.
    #[arg(long)]
    random: bool,
    /// The message to reply to (the trained model knows "写一首诗", "写一首李白的诗",
    /// "tell me a fortune" and a few greetings).
    #[arg(short, long, default_value = "写一首诗")]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 96)]
    n_predict: usize,
    /// Random seed of the sampler.
    #[arg(short = 's', long, default_value_t = 42)]
    seed: u64,
}

/// The shipped trained model: `models/tiny-poems.gguf` under the working directory, else under
/// the source tree this binary was built from.
fn trained_model() -> Result<PathBuf, CliError> {
    let here = PathBuf::from(TRAINED);
    if here.exists() {
        return Ok(here);
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(TRAINED);
    if source.exists() {
        return Ok(source);
    }
    Err(CliError::Input(format!(
        "the demo model {TRAINED} is not here (nor in {}): run from the repository, give -m FILE, \
         or use --random for a synthetic model",
        source.display()
    )))
}

/// Writes the synthetic model to `path` unless it exists.
fn ensure_synthetic(path: &Path) -> Result<(), CliError> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    eprintln!(
        "writing a synthetic model (random weights) to {} ...",
        path.display()
    );
    let start = Instant::now();
    let opts = WriteOptions {
        output: path.to_path_buf(),
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
        path: path.to_path_buf(),
        source,
    })?;
    eprintln!("done in {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Runs `chatglm demo`.
pub fn run(args: &DemoArgs) -> Result<(), CliError> {
    let model = if args.random {
        let path = args
            .model
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYNTHETIC));
        ensure_synthetic(&path)?;
        path
    } else {
        match &args.model {
            Some(path) => path.clone(),
            None => trained_model()?,
        }
    };
    let engine = Arc::new(Engine::open(&model)?);
    let cfg = engine.config();
    eprintln!(
        "model: {} ({} layers, hidden {}, {} heads, vocabulary {}), weights memory-mapped",
        model.display(),
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_heads,
        cfg.vocab_size
    );
    if args.random {
        eprintln!(
            "note: this model's weights are RANDOM, so its reply is gibberish. To chat for real, convert a\n\
             ChatGLM2/3 checkpoint with chatglm-convert and use `chatglm chat -m FILE` (see README.md).\n"
        );
    } else if args.model.is_none() {
        eprintln!(
            "note: a {:.1} MB model trained here on Tang poems and English fortunes (tools/train/README.md);\n\
             it knows little else. For a real one, convert a ChatGLM2/3 checkpoint (see README.md).\n",
            std::fs::metadata(&model)?.len() as f64 / 1e6
        );
    }
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
