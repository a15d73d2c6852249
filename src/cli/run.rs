//! `chatglm run`: one message (or a conversation), the reply streamed.

use super::common::{ModelArgs, SampleArgs, TextSink};
use super::{CliError, ConversationProblem};
use chatglm::tokenizer::{ChatMessage, Role};
use chatglm::Generation;
use std::path::PathBuf;

/// Arguments of `chatglm run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
    /// The message (in the model's chat format; with --raw, the text to continue).
    #[arg(
        short,
        long,
        value_name = "TEXT",
        required_unless_present_any = ["messages", "file"],
        conflicts_with_all = ["messages", "file"]
    )]
    prompt: Option<String>,
    /// Read the message (or with --raw, the text to continue) from a UTF-8 file, without its
    /// last line break.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "messages"
    )]
    file: Option<PathBuf>,
    /// A system prompt before the message (`-sys`, as llama.cpp; ChatGLM3 models).
    #[arg(long = "system-prompt", value_name = "TEXT", conflicts_with_all = ["messages", "raw"])]
    system_prompt: Option<String>,
    /// Encode the prompt with only the `[gMASK] sop` prefix, no chat format.
    #[arg(long, conflicts_with = "messages")]
    raw: bool,
    /// A conversation as JSON, `[{"role": "user"|"assistant"|"system", "content": ...}, ...]`,
    /// ending with a user message.
    #[arg(long, value_name = "FILE.json")]
    messages: Option<PathBuf>,
    /// After generating, print one JSON object with the prompt ids, the generated ids, the
    /// text and the timings (instead of streaming the text).
    #[arg(long)]
    json: bool,
}

/// Reads a conversation file: `[{"role": ..., "content": ...}, ...]` (`run --messages`,
/// `/load` in `chat`).
pub fn read_messages(path: &std::path::Path) -> Result<Vec<ChatMessage>, CliError> {
    let text = super::common::read_text(path)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| CliError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    let bad = |problem| CliError::Conversation {
        path: path.to_path_buf(),
        problem,
    };
    let items = value
        .as_array()
        .ok_or_else(|| bad(ConversationProblem::NotAnArray))?;
    items
        .iter()
        .enumerate()
        .map(|(index, m)| {
            let field = |k: &str| m.get(k).and_then(|v| v.as_str());
            let role = match field("role") {
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                Some("system") => Role::System,
                Some("observation") => Role::Observation,
                Some(r) => {
                    return Err(bad(ConversationProblem::UnknownRole {
                        index,
                        role: r.to_owned(),
                    }))
                }
                None => return Err(bad(ConversationProblem::NoRole { index })),
            };
            let content =
                field("content").ok_or_else(|| bad(ConversationProblem::NoContent { index }))?;
            // ChatGLM3/GLM-4 tool calls and tool lists ride along when present.
            let mut message = ChatMessage::new(role, content);
            message.metadata = field("metadata").unwrap_or_default().to_owned();
            message.tools = m.get("tools").cloned();
            Ok(message)
        })
        .collect()
}

/// `{"prompt_ids", "ids", "text", "stop", "seed", "timings"}`.
pub fn generation_json(g: &Generation, seed: u64) -> serde_json::Value {
    let t = &g.timings;
    serde_json::json!({
        "prompt_ids": g.prompt_ids,
        "ids": g.ids,
        "text": g.text,
        "stop": g.stop.name(),
        "seed": seed,
        "timings": {
            "prompt_tokens": t.prompt_tokens,
            "prefill_ms": t.prefill.as_secs_f64() * 1e3,
            "prefill_tok_s": t.prefill_tok_s(),
            "decode_tokens": t.decode_tokens,
            "decode_ms": t.decode.as_secs_f64() * 1e3,
            "decode_tok_s": t.decode_tok_s(),
        },
    })
}

/// One line of timings on stderr, as llama.cpp prints them.
pub fn print_timings(g: &Generation) {
    let t = &g.timings;
    eprintln!(
        "\n[prompt: {} tokens in {:.0} ms, {:.1} tok/s | reply: {} tokens, {:.1} tok/s | stop: {}]",
        t.prompt_tokens,
        t.prefill.as_secs_f64() * 1e3,
        t.prefill_tok_s(),
        g.ids.len(),
        t.decode_tok_s(),
        g.stop.name()
    );
}

/// Runs `chatglm run`.
pub fn run(args: &RunArgs) -> Result<(), CliError> {
    let engine = args.model.engine()?;
    let mut session = args.model.session(&engine)?;
    let seed = args.sample.seed();
    let options = args.sample.options(seed);
    let mut sink = TextSink::stdout();
    let mut on_text = |piece: &str| args.json || sink.write(piece);
    let generation = if let Some(path) = &args.messages {
        session.respond(&read_messages(path)?, &options, &mut on_text)?
    } else {
        let prompt = match &args.file {
            // As llama.cpp's `-f`: the file's last line break is not part of the prompt.
            Some(path) => {
                let text = super::common::read_text(path)?;
                let end = text.strip_suffix('\n').unwrap_or(&text);
                end.strip_suffix('\r').unwrap_or(end).to_owned()
            }
            None => args.prompt.clone().unwrap_or_default(),
        };
        if args.raw {
            session.complete(&prompt, &options, &mut on_text)?
        } else if let Some(system) = &args.system_prompt {
            let messages = [
                ChatMessage::new(Role::System, system.as_str()),
                ChatMessage::new(Role::User, prompt),
            ];
            session.respond(&messages, &options, &mut on_text)?
        } else {
            session.chat(&prompt, &options, &mut on_text)?
        }
    };
    if args.json {
        println!("{}", generation_json(&generation, seed));
    } else {
        sink.finish()?;
        print_timings(&generation);
    }
    Ok(())
}
