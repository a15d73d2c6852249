//! `chatglm chat`: an interactive conversation with history. Reads one message per line from
//! standard input (a terminal or a pipe); `/clear` forgets the conversation, `/exit` or
//! end of input (Ctrl-D) quits.

use super::common::{ModelArgs, SampleArgs, TextSink};
use super::CliError;
use std::io::{BufRead, IsTerminal};

/// Arguments of `chatglm chat`.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
    /// Print the timings of each reply on standard error.
    #[arg(long)]
    timings: bool,
}

/// Runs `chatglm chat`.
pub fn run(args: &ChatArgs) -> Result<(), CliError> {
    let engine = args.model.engine()?;
    let mut session = args.model.session(&engine)?;
    let options = args.sample.options(args.sample.seed());
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "chatglm: {} ({}), context {}. /clear forgets the conversation, /exit or Ctrl-D quits.",
            engine.path().display(),
            engine.tokenizer().family(),
            session.context()
        );
    }
    let mut stdin = std::io::stdin().lock();
    let mut bytes = Vec::new();
    let mut number = 0usize;
    loop {
        if interactive {
            eprint!("\n> ");
        }
        bytes.clear();
        if stdin.read_until(b'\n', &mut bytes)? == 0 {
            break;
        }
        number += 1;
        let Ok(line) = std::str::from_utf8(&bytes) else {
            // Only the CLI prints: this is a message to the user, and the chat goes on.
            eprintln!("chatglm: error: input line {number} is not valid UTF-8; skipped");
            continue;
        };
        let message = line.trim_end_matches(['\n', '\r']);
        match message.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/clear" => {
                session.reset();
                if interactive {
                    eprintln!("(conversation cleared)");
                }
                continue;
            }
            _ => {}
        }
        let mut sink = TextSink::stdout();
        let generation = session.chat(message, &options, &mut |piece| sink.write(piece))?;
        sink.finish()?;
        if args.timings {
            super::run::print_timings(&generation);
        }
    }
    Ok(())
}
