//! `chatglm chat`: an interactive conversation with history.
//!
//! In a terminal, lines are edited with `rustyline` (arrow keys, history of this chat's
//! messages, Ctrl-R search); a line ending with `\` continues on the next one, and a pasted
//! paragraph (bracketed paste) is one message. Ctrl-C while a reply is generated stops that
//! reply (the part generated so far stays in the conversation, marked `[stopped]` on the
//! screen); Ctrl-C on a line with text clears it; Ctrl-C on an empty line or Ctrl-D quits.
//!
//! From a pipe, each line is one message. In both cases a message that does not fit in the
//! context, or a line that is not UTF-8, is reported and the chat goes on; the commands of
//! [`HELP`] work too.

use super::common::{ModelArgs, SampleArgs, TextSink};
use super::CliError;
use chatglm::tokenizer::{ChatMessage, Role};
use chatglm::{GenerateOptions, Session, StopReason};
use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Arguments of `chatglm chat`.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
    /// A system prompt before the conversation (`-sys`, as llama.cpp; ChatGLM3 models).
    #[arg(long = "system-prompt", value_name = "TEXT")]
    system_prompt: Option<String>,
    /// Print the timings of each reply on standard error.
    #[arg(long)]
    timings: bool,
}

/// The commands of the chat, as `/help` prints them.
pub const HELP: &str = "\
/help          this list
/system TEXT   set the system prompt (ChatGLM3; `/system` alone removes it)
/save FILE     write the conversation as JSON (what `run --messages` and /load read)
/load FILE     replace the conversation with the one in FILE
/clear         forget the conversation
/exit, /quit   quit (also Ctrl-D, or Ctrl-C on an empty line)
A line ending with \\ continues on the next; Ctrl-C stops a reply (its start is kept).";

/// What the loop does after a line.
enum Next {
    Continue,
    Exit,
}

/// The state of one chat: the session, the options, and where the user sees things.
struct Chat<'a> {
    session: Session,
    options: GenerateOptions,
    args: &'a ChatArgs,
    interactive: bool,
    /// Set by the Ctrl-C handler while a reply is generated.
    interrupted: Arc<AtomicBool>,
}

/// Runs `chatglm chat`.
pub fn run(args: &ChatArgs) -> Result<(), CliError> {
    let engine = args.model.engine()?;
    let mut session = args.model.session(&engine)?;
    if let Some(text) = &args.system_prompt {
        session.set_history(vec![ChatMessage::new(Role::System, text.as_str())])?;
    }
    let interactive = std::io::stdin().is_terminal();
    let interrupted = Arc::new(AtomicBool::new(false));
    if interactive {
        // Without a handler Ctrl-C keeps its default (quit): that is all that is lost.
        if !catch_ctrl_c(&interrupted) {
            eprintln!("chatglm: note: Ctrl-C cannot be caught here; it quits");
        }
        eprintln!(
            "chatglm: {} ({}), context {}. /help lists the commands; Ctrl-C stops a reply, \
             Ctrl-D quits.",
            engine.path().display(),
            engine.tokenizer().family(),
            session.context()
        );
    }
    let mut chat = Chat {
        session,
        options: args.sample.options(args.sample.seed()),
        args,
        interactive,
        interrupted,
    };
    if interactive {
        chat.terminal()
    } else {
        chat.piped()
    }
}

impl Chat<'_> {
    /// One message per line of standard input.
    fn piped(&mut self) -> Result<(), CliError> {
        let mut stdin = std::io::stdin().lock();
        let mut bytes = Vec::new();
        let mut number = 0usize;
        loop {
            bytes.clear();
            if stdin.read_until(b'\n', &mut bytes)? == 0 {
                return Ok(());
            }
            number += 1;
            let Ok(line) = std::str::from_utf8(&bytes) else {
                // Only the CLI prints: this is a message to the user, and the chat goes on.
                eprintln!("chatglm: error: input line {number} is not valid UTF-8; skipped");
                continue;
            };
            if let Next::Exit = self.line(line.trim_end_matches(['\n', '\r']))? {
                return Ok(());
            }
        }
    }

    /// Lines edited in the terminal.
    fn terminal(&mut self) -> Result<(), CliError> {
        use rustyline::error::ReadlineError;
        let config = rustyline::Config::builder()
            .auto_add_history(false)
            .bracketed_paste(true)
            .build();
        let mut editor: rustyline::Editor<Continuation, rustyline::history::DefaultHistory> =
            rustyline::Editor::with_config(config).map_err(readline_io)?;
        editor.set_helper(Some(Continuation));
        editor.bind_sequence(
            rustyline::KeyEvent::ctrl('C'),
            rustyline::EventHandler::Conditional(Box::new(CtrlC)),
        );
        loop {
            // A Ctrl-C from here on stops the next reply (at the prompt it is a key, not a
            // signal, and the editor handles it).
            self.interrupted.store(false, Ordering::SeqCst);
            let line = match editor.readline("> ") {
                Ok(line) => line,
                Err(ReadlineError::Eof | ReadlineError::Interrupted) => return Ok(()),
                Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    drop_pending_input();
                    eprintln!("chatglm: error: that line is not valid UTF-8; skipped");
                    continue;
                }
                Err(e) => return Err(readline_io(e)),
            };
            let message = join_continued(&line);
            if !message.trim().is_empty() {
                let _ = editor.add_history_entry(line.as_str());
            }
            if let Next::Exit = self.line(&message)? {
                return Ok(());
            }
        }
    }

    /// A line: a command, or a message to reply to. Errors about this line are printed and
    /// the chat goes on; others (the model file changed, output closed) end it.
    fn line(&mut self, line: &str) -> Result<Next, CliError> {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return Ok(Next::Continue);
        }
        if let Some(command) = trimmed.strip_prefix('/') {
            let (name, rest) = command
                .split_once(char::is_whitespace)
                .unwrap_or((command, ""));
            return self.command(name, rest.trim());
        }
        match self.reply(line) {
            Err(CliError::Lib(e)) if about_the_message(&e) => {
                eprintln!("chatglm: error: {e}");
                Ok(Next::Continue)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(Next::Continue),
        }
    }

    /// Streams the reply to `message`.
    fn reply(&mut self, message: &str) -> Result<(), CliError> {
        let mut sink = TextSink::stdout();
        let interrupted = &self.interrupted;
        let generation = self.session.chat(message, &self.options, &mut |piece| {
            !interrupted.load(Ordering::SeqCst) && sink.write(piece)
        })?;
        sink.finish()?;
        if generation.stop == StopReason::Cancelled && interrupted.swap(false, Ordering::SeqCst) {
            eprintln!("[stopped]");
        }
        if self.args.timings {
            super::run::print_timings(&generation);
        }
        Ok(())
    }

    /// `/name rest`.
    fn command(&mut self, name: &str, rest: &str) -> Result<Next, CliError> {
        let result = match name {
            "exit" | "quit" => return Ok(Next::Exit),
            "help" => {
                eprintln!("{HELP}");
                Ok(())
            }
            "clear" => {
                self.session.reset();
                self.note("(conversation cleared)");
                Ok(())
            }
            "system" => self.set_system(rest),
            "save" if !rest.is_empty() => save(Path::new(rest), self.session.history())
                .map(|()| self.note("(conversation saved)")),
            "load" if !rest.is_empty() => super::run::read_messages(Path::new(rest))
                .and_then(|m| Ok(self.session.set_history(m)?))
                .map(|()| self.note("(conversation loaded)")),
            "save" | "load" => Err(CliError::Input(format!("/{name} needs a file name"))),
            _ => Err(CliError::Input(format!(
                "unknown command /{name}; /help lists them"
            ))),
        };
        // A failed command is a message to the user; the chat goes on.
        if let Err(e) = result {
            eprintln!("chatglm: error: {e}");
        }
        Ok(Next::Continue)
    }

    /// Replaces the leading system messages of the conversation with `text` (none if empty).
    fn set_system(&mut self, text: &str) -> Result<(), CliError> {
        let mut history: Vec<ChatMessage> = self
            .session
            .history()
            .iter()
            .skip_while(|m| m.role == Role::System)
            .cloned()
            .collect();
        if !text.is_empty() {
            history.insert(0, ChatMessage::new(Role::System, text));
        }
        self.session.set_history(history)?;
        self.note(if text.is_empty() {
            "(system prompt removed)"
        } else {
            "(system prompt set)"
        });
        Ok(())
    }

    /// A confirmation, for a person at a terminal only.
    fn note(&self, text: &str) {
        if self.interactive {
            eprintln!("{text}");
        }
    }
}

/// Makes Ctrl-C set `flag` instead of ending the program; `false` if it cannot. At the prompt
/// the editor reads Ctrl-C as a key; while a reply streams it is a signal (SIGINT only:
/// SIGTERM and SIGHUP still end the program), or on Windows a console event.
fn catch_ctrl_c(flag: &Arc<AtomicBool>) -> bool {
    #[cfg(unix)]
    {
        signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(flag)).is_ok()
    }
    #[cfg(windows)]
    {
        let flag = Arc::clone(flag);
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).is_ok()
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = flag;
        false
    }
}

/// Errors that concern one message (the chat goes on), not the model or the output.
fn about_the_message(e: &chatglm::Error) -> bool {
    matches!(
        e,
        chatglm::Error::PromptTooLong { .. }
            | chatglm::Error::EmptyPrompt
            | chatglm::Error::Tokenizer(_)
    )
}

/// Writes `history` as the JSON array `run --messages` reads.
fn save(path: &Path, history: &[ChatMessage]) -> Result<(), CliError> {
    let messages: Vec<serde_json::Value> = history
        .iter()
        .map(|m| serde_json::json!({ "role": m.role.as_str(), "content": m.content }))
        .collect();
    let mut text = serde_json::to_string_pretty(&messages).map_err(std::io::Error::other)?;
    text.push('\n');
    std::fs::write(path, text).map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The message of a line typed with `\` continuations: each `\` before a line break goes.
fn join_continued(line: &str) -> String {
    line.replace("\\\r\n", "\n").replace("\\\n", "\n")
}

fn readline_io(e: rustyline::error::ReadlineError) -> CliError {
    match e {
        rustyline::error::ReadlineError::Io(e) => CliError::Io(e),
        other => CliError::Io(std::io::Error::other(other.to_string())),
    }
}

/// After a line that is not UTF-8 the editor stops at its first bad byte: the rest of it
/// (and anything typed after it) is discarded, not taken as the next message.
fn drop_pending_input() {
    #[cfg(unix)]
    {
        use nix::sys::termios::{tcflush, FlushArg};
        let _ = tcflush(std::io::stdin(), FlushArg::TCIFLUSH);
    }
}

/// The editor's helper: a line ending with `\` is not finished.
struct Continuation;

impl rustyline::validate::Validator for Continuation {
    fn validate(
        &self,
        ctx: &mut rustyline::validate::ValidationContext,
    ) -> rustyline::Result<rustyline::validate::ValidationResult> {
        use rustyline::validate::ValidationResult;
        Ok(if ctx.input().ends_with('\\') {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

impl rustyline::completion::Completer for Continuation {
    type Candidate = String;
}

impl rustyline::hint::Hinter for Continuation {
    type Hint = String;
}

impl rustyline::highlight::Highlighter for Continuation {}

impl rustyline::Helper for Continuation {}

/// Ctrl-C in the editor: clears a line with text; on an empty line, quits.
struct CtrlC;

impl rustyline::ConditionalEventHandler for CtrlC {
    fn handle(
        &self,
        _: &rustyline::Event,
        _: rustyline::RepeatCount,
        _: bool,
        ctx: &rustyline::EventContext,
    ) -> Option<rustyline::Cmd> {
        Some(if ctx.line().is_empty() {
            rustyline::Cmd::Interrupt
        } else {
            rustyline::Cmd::Kill(rustyline::Movement::WholeBuffer)
        })
    }
}
