//! The `chatglm` command-line tool.

use clap::{CommandFactory, FromArgMatches, Subcommand};
use std::process::ExitCode;

mod cli;

/// Run ChatGLM-family models (ChatGLM-6B, ChatGLM2/3, CodeGeeX2, GLM-4) on the CPU from a GGUF
/// file (see `chatglm-convert`).
#[derive(clap::Parser, Debug)]
#[command(version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a small synthetic model (no download) and stream a reply from it.
    Demo(cli::demo::DemoArgs),
    /// Reply to one message (or a conversation), streaming the text.
    Run(cli::run::RunArgs),
    /// Chat interactively, with history (also reads messages from a pipe, one per line).
    Chat(cli::chat::ChatArgs),
    /// Measure prompt and generation speed.
    Bench(cli::bench::BenchArgs),
    /// Show what a GGUF file holds: architecture, hyper-parameters, tokenizer, tensors.
    Info(cli::info::InfoArgs),
    /// Print the SentencePiece ids of a text.
    Tokenize(cli::tokenize::TokenizeArgs),
    /// Measure the perplexity of a model on a text file.
    Perplexity(cli::perplexity::PerplexityArgs),
    /// Serve the OpenAI HTTP API (chat and text completions, streaming) on loopback.
    Serve(cli::serve::ServeArgs),
}

/// Parses the command line: llama.cpp's spellings first, then clap; a usage error is one line
/// and a hint on stderr, and exit code 2.
fn parse() -> Result<Cli, ExitCode> {
    let command = Cli::command();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let args = match cli::flags::rewrite(&command, args) {
        Ok(args) => args,
        Err(refused) => {
            eprintln!(
                "chatglm: error: {} is not supported: {}",
                refused.flag, refused.reason
            );
            return Err(ExitCode::from(2));
        }
    };
    let error = match command.clone().try_get_matches_from(&args) {
        Ok(matches) => match Cli::from_arg_matches(&matches) {
            Ok(cli) => return Ok(cli),
            Err(e) => e,
        },
        Err(e) => e,
    };
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    let (message, hint) = cli::flags::usage_error(&command, &error, &args);
    eprintln!("chatglm: error: {message}\n  hint: {hint}");
    Err(ExitCode::from(2))
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // A model file truncated under its map: one line and exit 1, not a silent SIGBUS.
    chatglm::install_bus_error_handler();
    // A CHATGLM_KERNELS the CPU cannot honour is an error here, not a silent fallback.
    if let Err(e) = chatglm_kernels::isa::requested() {
        eprintln!("chatglm: error: {}: {e}", chatglm_kernels::isa::ENV_VAR);
        return ExitCode::from(2);
    }
    let result = match &cli.command {
        Command::Demo(args) => cli::demo::run(args),
        Command::Run(args) => cli::run::run(args),
        Command::Chat(args) => cli::chat::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Info(args) => cli::info::run(args),
        Command::Tokenize(args) => cli::tokenize::run(args),
        Command::Perplexity(args) => cli::perplexity::run(args),
        Command::Serve(args) => cli::serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`chatglm info ... | head`): nothing to report.
        Err(cli::CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chatglm: error: {e}");
            ExitCode::FAILURE
        }
    }
}
