//! `chatglm-convert`: Hugging Face ChatGLM-6B/ChatGLM2/ChatGLM3 checkpoint -> GGUF.
//!
//! ```text
//! chatglm-convert HF_DIR -o OUT.gguf -q q4_0
//! chatglm-convert --synthetic chatglm2-6b -q q4_0 -o synthetic-q4_0.gguf
//! chatglm-convert --repack model.gguf --portable -o model-portable.gguf
//! ```

use chatglm::arch::Family;
use chatglm::build::repack::Layout;
use chatglm::build::synthetic::{write_synthetic_mix, Preset};
use chatglm::build::{Mix, Progress, Summary, TensorPlan, WriteOptions};
use chatglm::gguf::GgufFile;
use chatglm_convert::checkpoint::Checkpoint;
use chatglm_convert::convert::{convert_mix, describe};
use chatglm_convert::error::ConvertError;
use chatglm_kernels::GgmlType;
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Convert a Hugging Face ChatGLM-6B/ChatGLM2/ChatGLM3 checkpoint into one GGUF file.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Checkpoint directory: config.json, tokenizer.model (ChatGLM-6B: ice_text.model), and
    /// *.safetensors or pytorch_model*.bin (sharded or not).
    #[arg(required_unless_present_any = ["synthetic", "repack"], conflicts_with_all = ["synthetic", "repack"])]
    model_dir: Option<PathBuf>,

    /// Output file [default: <model name>-<type>.gguf in the current directory; with
    /// --repack, <input name>-portable.gguf or -interleaved.gguf beside the input].
    #[arg(short, long)]
    output: Option<PathBuf>,

    /// Type of the weight matrices (norms and biases stay f32): one type, or one of
    /// llama-quantize's mixes (`q4_k_m` ...), whose per-tensor types follow llama.cpp's.
    #[arg(short = 'q', long = "type", value_enum, default_value_t = QType::Q4_0)]
    qtype: QType,

    /// Write only ggml's standard block layouts, for llama.cpp and other GGUF tools.
    #[arg(long)]
    portable: bool,

    /// Prompt format of a ChatGLM2/3 checkpoint; `auto` reads it from the directory (a
    /// ChatGLM-6B checkpoint is told by its config.json).
    #[arg(long, value_enum, default_value_t = FamilyArg::Auto)]
    family: FamilyArg,

    /// Write a model of this shape with seeded random weights and a placeholder tokenizer
    /// instead of converting a checkpoint (for benchmarks and demos).
    #[arg(long, value_name = "PRESET", value_parser = clap::builder::PossibleValuesParser::new(Preset::NAMES))]
    synthetic: Option<String>,

    /// Rewrite this GGUF model file instead of converting a checkpoint: its matrices in this
    /// runtime's interleaved layout, or with --portable in ggml's standard layouts (the same
    /// blocks, so the same results; no checkpoint needed).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["synthetic", "qtype", "family"])]
    repack: Option<PathBuf>,

    /// Seed of the synthetic weights.
    #[arg(long, default_value_t = 42, requires = "synthetic")]
    seed: u64,

    /// Threads for quantization [default: all cores].
    #[arg(short, long)]
    threads: Option<usize>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum QType {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_1")]
    Q4_1,
    Bf16,
    #[value(name = "q5_0")]
    Q5_0,
    #[value(name = "q5_1")]
    Q5_1,
    #[value(name = "q2_k")]
    Q2K,
    #[value(name = "q3_k_m")]
    Q3KM,
    #[value(name = "q4_k_s")]
    Q4KS,
    #[value(name = "q4_k_m")]
    Q4KM,
    #[value(name = "q5_k_s")]
    Q5KS,
    #[value(name = "q5_k_m")]
    Q5KM,
    #[value(name = "q6_k")]
    Q6K,
    #[value(name = "iq4_nl")]
    Iq4Nl,
    #[value(name = "iq4_xs")]
    Iq4Xs,
}

impl QType {
    fn mix(self) -> Mix {
        match self {
            QType::F32 => Mix::Pure(GgmlType::F32),
            QType::F16 => Mix::Pure(GgmlType::F16),
            QType::Q8_0 => Mix::Pure(GgmlType::Q8_0),
            QType::Q4_0 => Mix::Pure(GgmlType::Q4_0),
            QType::Q4_1 => Mix::Pure(GgmlType::Q4_1),
            QType::Bf16 => Mix::Pure(GgmlType::BF16),
            QType::Q5_0 => Mix::Q5_0,
            QType::Q5_1 => Mix::Q5_1,
            QType::Q2K => Mix::Q2K,
            QType::Q3KM => Mix::Q3KM,
            QType::Q4KS => Mix::Q4KS,
            QType::Q4KM => Mix::Q4KM,
            QType::Q5KS => Mix::Q5KS,
            QType::Q5KM => Mix::Q5KM,
            QType::Q6K => Mix::Q6K,
            QType::Iq4Nl => Mix::Iq4Nl,
            QType::Iq4Xs => Mix::Iq4Xs,
        }
    }

    /// The name `-q` takes (and the output file's suffix).
    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FamilyArg {
    Auto,
    Chatglm2,
    Chatglm3,
    Codegeex2,
    Glm4,
}

/// A progress bar over the bytes written: tensors done/total, then bytes and speed in
/// decimal units (kB, MB, GB, as the summary and the README), with the tensor just written
/// as its message.
struct Bar {
    bar: ProgressBar,
    done: usize,
    total: usize,
}

impl Progress for Bar {
    fn start(&mut self, plan: &[TensorPlan]) {
        let total: usize = plan.iter().map(TensorPlan::bytes).sum();
        self.total = plan.len();
        self.bar.set_length(total as u64);
        self.bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {prefix} tensors, \
                 {decimal_bytes}/{decimal_total_bytes} ({decimal_bytes_per_sec}, {eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        self.bar.set_prefix(format!("0/{}", self.total));
    }

    fn tensor_done(&mut self, t: &TensorPlan) {
        self.done += 1;
        self.bar.set_prefix(format!("{}/{}", self.done, self.total));
        self.bar.inc(t.bytes() as u64);
        self.bar.set_message(t.name.clone());
    }
}

fn run(args: Args) -> Result<(), ConvertError> {
    let mix = args.qtype.mix();
    let ty = mix.base();
    // One rule for the whole project: 0 or absent means one per CPU, capped at 256.
    let threads = chatglm::resolve_threads(args.threads.unwrap_or(0));

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = Arc::clone(&cancel);
        // Ctrl-C, SIGTERM and SIGHUP (ctrlc's "termination" feature) all cancel: the
        // writer stops at the next tensor and removes its temporary file. If no handler can
        // be installed, the signal kills the process; the temporary file is then left
        // behind, but never a half-written file under the output name.
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
    }
    let mut bar = Bar {
        bar: ProgressBar::new(0),
        done: 0,
        total: 0,
    };
    let start = Instant::now();
    if let Some(input) = &args.repack {
        return repack(input, &args, &mut bar, &cancel, start);
    }
    let opts = |name: &str| WriteOptions {
        output: args
            .output
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{name}-{}.gguf", args.qtype.name()))),
        matrix_type: ty,
        portable: args.portable,
        threads,
        name: name.to_owned(),
    };
    let (summary, output) = if let Some(preset) = &args.synthetic {
        let preset =
            Preset::from_name(preset).ok_or_else(|| ConvertError::UnknownPreset(preset.clone()))?;
        let opts = opts(&format!("synthetic-{}", preset.name()));
        announce(
            &format!("synthetic {} (seed {})", preset.name(), args.seed),
            &opts,
            &args.qtype.name(),
        );
        let result = write_synthetic_mix(preset, args.seed, &opts, mix, &mut bar, &cancel);
        bar.bar.finish_and_clear();
        (result?, opts.output)
    } else {
        let dir = args.model_dir.clone().unwrap_or_default();
        if !dir.is_dir() {
            return Err(ConvertError::NotADirectory(dir));
        }
        let forced = match args.family {
            FamilyArg::Chatglm2 => Some(Family::ChatGlm2),
            FamilyArg::Chatglm3 => Some(Family::ChatGlm3),
            FamilyArg::Codegeex2 => Some(Family::CodeGeeX2),
            FamilyArg::Glm4 => Some(Family::Glm4),
            FamilyArg::Auto => None,
        };
        let decision = describe(&dir, forced)?;
        let ckpt = Checkpoint::open(&dir)?;
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "chatglm".into());
        let opts = opts(&name);
        announce(
            &format!(
                "{} ({}: {})",
                dir.display(),
                decision.family,
                decision.evidence
            ),
            &opts,
            &args.qtype.name(),
        );
        let result = convert_mix(
            &ckpt,
            &decision.config,
            decision.family,
            &decision.tokenizer,
            &opts,
            mix,
            &mut bar,
            &cancel,
        );
        bar.bar.finish_and_clear();
        (result?, opts.output)
    };
    report(&summary, &output, start);
    Ok(())
}

/// `--repack INPUT [--portable] [-o OUT]`.
fn repack(
    input: &Path,
    args: &Args,
    bar: &mut Bar,
    cancel: &AtomicBool,
    start: Instant,
) -> Result<(), ConvertError> {
    let layout = match args.portable {
        true => Layout::Portable,
        false => Layout::Interleaved,
    };
    let output = args.output.clone().unwrap_or_else(|| {
        let stem = input.file_stem().unwrap_or_default().to_string_lossy();
        let tag = match layout {
            Layout::Portable => "portable",
            Layout::Interleaved => "interleaved",
        };
        input.with_file_name(format!("{stem}-{tag}.gguf"))
    });
    if std::fs::canonicalize(&output).ok() == std::fs::canonicalize(input).ok() && output.exists() {
        return Err(ConvertError::OutputIsInput(output));
    }
    let file = GgufFile::open(input).map_err(|source| ConvertError::Input {
        path: input.to_path_buf(),
        source,
    })?;
    eprintln!(
        "repacking {} -> {} ({} layout)",
        input.display(),
        output.display(),
        if args.portable {
            "portable"
        } else {
            "interleaved"
        }
    );
    let result = chatglm::build::repack::repack(&file, layout, &output, bar, cancel);
    bar.bar.finish_and_clear();
    report(&result?, &output, start);
    Ok(())
}

fn announce(source: &str, opts: &WriteOptions, qtype: &str) {
    eprintln!(
        "converting {source} -> {} ({qtype}, {} threads)",
        opts.output.display(),
        opts.threads
    );
}

fn report(summary: &Summary, output: &std::path::Path, start: Instant) {
    for t in summary.plan.iter().filter(|t| t.fallback.is_some()) {
        eprintln!(
            "note: {} stored as {}: {}",
            t.name,
            t.ty,
            t.fallback.as_deref().unwrap_or_default()
        );
    }
    eprintln!(
        "wrote {} tensors, {}, to {} in {:.1} s",
        summary.plan.len(),
        human_bytes(summary.file_bytes),
        output.display(),
        start.elapsed().as_secs_f64()
    );
}

/// `1.23 GB`, `456.7 MB`, `12.3 kB`, `17 B`.
fn human_bytes(n: u64) -> String {
    let n = n as f64;
    match n {
        _ if n >= 1e9 => format!("{:.2} GB", n / 1e9),
        _ if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        _ if n >= 1e3 => format!("{:.1} kB", n / 1e3),
        _ => format!("{n} B"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatglm-convert: error: {e}");
            ExitCode::FAILURE
        }
    }
}
