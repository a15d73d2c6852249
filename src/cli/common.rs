//! Flags shared by the subcommands that run a model, with llama.cpp's names.

use chatglm::model::KvType;
use chatglm::sampler::SamplerConfig;
use chatglm::{Engine, GenerateOptions, Session, SessionOptions};
use std::path::PathBuf;
use std::sync::Arc;

/// The model file and how to size a session.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// The GGUF model file (see `chatglm-convert`).
    #[arg(short, long, value_name = "FILE")]
    pub model: PathBuf,
    /// Context size in tokens: the KV cache is allocated once for it
    /// [default: 2048, at most the model's].
    #[arg(
        short = 'c',
        long = "ctx-size",
        value_name = "N",
        default_value_t = 0,
        hide_default_value = true
    )]
    pub ctx_size: usize,
    /// Element type of the KV cache (keys and values).
    #[arg(long, value_enum, default_value_t = KvTypeArg::F16)]
    pub kv_type: KvTypeArg,
    /// Element type of the cached keys (`-ctk`, as llama.cpp): f16 or f32; keys and values
    /// share one type here.
    #[arg(long = "cache-type-k", value_name = "TYPE", value_parser = parse_cache_type)]
    pub cache_type_k: Option<KvTypeArg>,
    /// Element type of the cached values (`-ctv`, as llama.cpp): f16 or f32.
    #[arg(long = "cache-type-v", value_name = "TYPE", value_parser = parse_cache_type)]
    pub cache_type_v: Option<KvTypeArg>,
    /// Threads for the matrix products [default: all cores].
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<usize>,
    /// Read the whole model file into memory instead of mapping it (for files that may be
    /// modified while in use; a mapped file must not be).
    #[arg(long)]
    pub no_mmap: bool,
}

/// Loads the model file `path`: mapped, or read into memory with `no_mmap`.
pub fn open_engine(path: &std::path::Path, no_mmap: bool) -> Result<Engine, chatglm::Error> {
    if no_mmap {
        Engine::read(path)
    } else {
        Engine::open(path)
    }
}

/// Largest text file a subcommand reads (`perplexity -f`, `run --messages`): 256 MiB.
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// Reads the UTF-8 text file `path`, refusing one larger than [`MAX_TEXT_BYTES`] (and a
/// device such as `/dev/zero` that never ends) without reading more than that.
pub fn read_text(path: &std::path::Path) -> Result<String, super::CliError> {
    use super::CliError;
    use std::io::Read;
    let read = |source| CliError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_TEXT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        return Err(CliError::TooLarge {
            path: path.to_path_buf(),
            max: MAX_TEXT_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|e| CliError::NotUtf8 {
        what: path.display().to_string(),
        at: e.utf8_error().valid_up_to(),
    })
}

/// Parses `-n`: at least 1 (the library refuses 0, as the C ABI does).
fn parse_n_predict(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (the number of tokens to generate)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses `-ctk`/`-ctv`: the types this runtime's cache has; llama.cpp's others by name.
fn parse_cache_type(s: &str) -> Result<KvTypeArg, String> {
    match s {
        "f16" => Ok(KvTypeArg::F16),
        "f32" => Ok(KvTypeArg::F32),
        "bf16" | "q8_0" | "q4_0" | "q4_1" | "iq4_nl" | "q5_0" | "q5_1" => Err(format!(
            "a {s} KV cache is not implemented here; the cache holds f16 (default) or f32"
        )),
        _ => Err("expected f16 or f32".into()),
    }
}

/// Parses `--repeat-last-n`: N >= 0, or -1 for all the tokens so far (llama.cpp's meaning).
fn parse_repeat_last_n(s: &str) -> Result<usize, String> {
    match s.parse::<i64>() {
        Ok(-1) => Ok(usize::MAX),
        Ok(n) if n >= 0 => usize::try_from(n).map_err(|e| e.to_string()),
        Ok(_) => Err("expected N >= 0, or -1 for all the tokens so far".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// KV cache element type on the command line.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvTypeArg {
    /// Half precision (28 KiB per position for the 6B model).
    F16,
    /// Single precision.
    F32,
}

impl ModelArgs {
    /// Loads the engine.
    pub fn engine(&self) -> Result<Arc<Engine>, chatglm::Error> {
        Ok(Arc::new(open_engine(&self.model, self.no_mmap)?))
    }

    /// Session options from the flags (`-ctk` and `-ctv` must agree: keys and values share
    /// one type here).
    pub fn session_options(&self) -> Result<SessionOptions, super::CliError> {
        let kv = match (self.cache_type_k, self.cache_type_v) {
            (Some(k), Some(v)) if k != v => {
                return Err(super::CliError::Input(
                    "-ctk and -ctv differ: keys and values share one cache type here".into(),
                ))
            }
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => self.kv_type,
        };
        Ok(SessionOptions {
            context: self.ctx_size,
            kv_type: match kv {
                KvTypeArg::F16 => KvType::F16,
                KvTypeArg::F32 => KvType::F32,
            },
            threads: self.threads.unwrap_or(0),
            ..SessionOptions::default()
        })
    }

    /// A session on `engine`.
    pub fn session(&self, engine: &Arc<Engine>) -> Result<Session, super::CliError> {
        Ok(Session::new(Arc::clone(engine), self.session_options()?)?)
    }
}

/// Generation and sampling flags.
#[derive(clap::Args, Debug, Clone)]
pub struct SampleArgs {
    /// Most tokens to generate (at least 1).
    #[arg(
        short = 'n',
        long = "n-predict",
        value_name = "N",
        default_value_t = GenerateOptions::default().max_new_tokens,
        value_parser = parse_n_predict
    )]
    pub n_predict: usize,
    /// Temperature; 0 is greedy.
    #[arg(long, default_value_t = SamplerConfig::default().temperature)]
    pub temp: f32,
    /// Keep the K most likely tokens (0: all).
    #[arg(long, default_value_t = SamplerConfig::default().top_k)]
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities add up to P.
    #[arg(long, default_value_t = SamplerConfig::default().top_p)]
    pub top_p: f32,
    /// Penalty for repeating a token of the prompt or the reply (1: none).
    #[arg(long, default_value_t = SamplerConfig::default().repeat_penalty)]
    pub repeat_penalty: f32,
    /// The penalty sees the last N tokens (0: none; -1: all of the prompt and reply)
    /// [default: -1].
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        default_value = "-1",
        hide_default_value = true,
        value_parser = parse_repeat_last_n
    )]
    pub repeat_last_n: usize,
    /// Keep the tokens at least P times as likely as the most likely one (0: off).
    #[arg(long, value_name = "P", default_value_t = SamplerConfig::default().min_p)]
    pub min_p: f32,
    /// Random seed [default: from the clock]; the same seed and prompt give the same text.
    #[arg(short = 's', long)]
    pub seed: Option<u64>,
}

impl SampleArgs {
    /// The seed to use: the flag's, or one from the clock.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
    }

    /// Generation options from the flags, with `seed`.
    pub fn options(&self, seed: u64) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: self.n_predict,
            sampler: SamplerConfig {
                temperature: self.temp,
                top_k: self.top_k,
                top_p: self.top_p,
                repeat_penalty: self.repeat_penalty,
                repeat_last_n: self.repeat_last_n,
                min_p: self.min_p,
                seed,
            },
        }
    }
}

/// Streams generated text to standard output, flushing each piece so it appears as it comes.
/// A failed write stops generation (the callback returns `false`) and is kept for
/// [`TextSink::finish`] to report.
pub struct TextSink {
    out: std::io::StdoutLock<'static>,
    error: Option<std::io::Error>,
}

impl TextSink {
    /// A sink on standard output.
    pub fn stdout() -> Self {
        Self {
            out: std::io::stdout().lock(),
            error: None,
        }
    }

    /// Writes `piece`; `false` once a write has failed.
    pub fn write(&mut self, piece: &str) -> bool {
        use std::io::Write;
        if self.error.is_some() {
            return false;
        }
        match self
            .out
            .write_all(piece.as_bytes())
            .and_then(|_| self.out.flush())
        {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    /// Ends the streamed text with a newline, or returns the write error that stopped it.
    pub fn finish(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        match self.error.take() {
            Some(e) => Err(e),
            None => writeln!(self.out),
        }
    }
}
