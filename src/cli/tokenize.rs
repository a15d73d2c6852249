//! `chatglm tokenize`: the SentencePiece ids of a text (no chat template, no `[gMASK] sop`).

use super::CliError;
use chatglm::gguf::GgufFile;
use chatglm::tokenizer::{Family, Tokenizer};
use std::io::{Read, Write};
use std::path::PathBuf;

/// Arguments of `chatglm tokenize`.
#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["model", "spm"]))]
pub struct TokenizeArgs {
    /// Take the tokenizer from this GGUF model file.
    #[arg(short, long, value_name = "FILE.gguf")]
    model: Option<PathBuf>,
    /// Take the tokenizer from a `tokenizer.model`: SentencePiece, or GLM-4's tiktoken ranks.
    #[arg(long, value_name = "tokenizer.model")]
    spm: Option<PathBuf>,
    /// Print `{"ids": [...], "pieces": [...], "decoded": "..."}`.
    #[arg(long)]
    json: bool,
    /// The text (as llama.cpp's `llama-tokenize -p`).
    #[arg(short, long, value_name = "TEXT", conflicts_with_all = ["text", "file"])]
    prompt: Option<String>,
    /// Read the text from a UTF-8 file.
    #[arg(short, long, value_name = "FILE", conflicts_with = "text")]
    file: Option<PathBuf>,
    /// The text [default: standard input].
    text: Option<String>,
}

/// Runs `chatglm tokenize`.
pub fn run(args: &TokenizeArgs) -> Result<(), CliError> {
    let tokenizer = match (&args.model, &args.spm) {
        (Some(path), _) => {
            let file = GgufFile::open(path).map_err(|source| chatglm::Error::File {
                path: path.clone(),
                source,
            })?;
            Tokenizer::from_gguf(&file).map_err(chatglm::Error::from)?
        }
        // A SentencePiece proto, or else GLM-4's tiktoken rank file.
        (None, Some(path)) => Tokenizer::from_spm_file(path, Family::ChatGlm2)
            .or_else(|e| Tokenizer::from_tiktoken_file(path).map_err(|_| e))
            .map_err(chatglm::Error::from)?,
        (None, None) => return Err(CliError::NoTokenizer),
    };
    let text = match (&args.prompt, &args.text, &args.file) {
        (Some(t), _, _) | (None, Some(t), _) => t.clone(),
        (None, None, Some(path)) => super::common::read_text(path)?,
        (None, None, None) => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes)?;
            String::from_utf8(bytes).map_err(|e| CliError::NotUtf8 {
                what: "standard input".into(),
                at: e.utf8_error().valid_up_to(),
            })?
        }
    };
    let ids = tokenizer.encode(&text);
    let mut out = std::io::stdout().lock();
    if args.json {
        let pieces: Vec<&str> = tokenizer.encode_pieces(&text);
        let decoded = tokenizer.decode(&ids).map_err(chatglm::Error::from)?;
        writeln!(
            out,
            "{}",
            serde_json::json!({ "ids": ids, "pieces": pieces, "decoded": decoded })
        )?;
    } else {
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "{}", ids.join(" "))?;
    }
    Ok(())
}
