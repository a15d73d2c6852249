//! The `chatglm` command-line tool: `info`, and (as they land) `run`, `chat`, `bench`,
//! `tokenize`, `perplexity`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cli;

/// Run ChatGLM2/ChatGLM3 models on the CPU from a GGUF file.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show what a GGUF file holds: architecture, hyper-parameters, tokenizer, tensors.
    Info(cli::info::InfoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => cli::info::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatglm: error: {e}");
            ExitCode::FAILURE
        }
    }
}
