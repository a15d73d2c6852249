//! From a parsed request to what a slot runs: the prompt's ids in the model's own format, the
//! generation settings (checked), the stop sequences and the tools to look for in the reply.
//! Each family's chat format is chosen here, in [`chat_prompt`].

use super::error::ApiError;
use super::tools::{OfferedTools, ToolFormat};
use super::types::{ChatRequest, CompletionRequest, InRole, PromptText, Sampling, ToolChoice};
use chatglm::sampler::SamplerConfig;
use chatglm::tokenizer::{ChatMessage, Family, Role, Tokenizer};
use chatglm::GenerateOptions;
use serde_json::Value;

/// The system message ChatGLM3's demos put before the tools when the conversation has none.
pub const CHATGLM3_TOOLS_SYSTEM: &str =
    "Answer the following questions as best as you can. You have access to the following tools:";

/// What a slot runs for one request.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The prompt's ids, `[gMASK] sop` included.
    pub prompt: Vec<u32>,
    /// How to generate.
    pub options: GenerateOptions,
    /// Stop sequences.
    pub stops: Vec<String>,
    /// The tool-call format and the names of the tools offered (chat with tools only).
    pub tools: Option<OfferedTools>,
}

/// Sampler settings when a request gives none: chatglm.cpp's (temperature 0.95, top-p 0.7),
/// which the ChatGLM models are tuned for; the seed is drawn from the clock.
fn sampler(s: &Sampling) -> Result<SamplerConfig, ApiError> {
    let defaults = SamplerConfig::default();
    if let Some(n) = s.n {
        if n != 1 {
            return Err(ApiError::field(
                "n",
                format!("n = {n}: only n = 1 is served"),
            ));
        }
    }
    let temperature = s.temperature.unwrap_or(defaults.temperature);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::field(
            "temperature",
            format!("temperature = {temperature}: must be in [0, 2]"),
        ));
    }
    let top_p = s.top_p.unwrap_or(defaults.top_p);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::field(
            "top_p",
            format!("top_p = {top_p}: must be in (0, 1]"),
        ));
    }
    let seed = s.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    Ok(SamplerConfig {
        temperature,
        top_p,
        seed,
        ..defaults
    })
}

/// Checks the prompt against the context and settles the number of tokens to generate:
/// `asked` (`param` names its field), or by default as many as the context leaves.
fn budget(
    prompt: &[u32],
    context: usize,
    asked: Option<(u64, &str)>,
    what: &str,
) -> Result<usize, ApiError> {
    if prompt.len() >= context {
        return Err(ApiError::field(
            what,
            format!(
                "the prompt is {} tokens, the context {context}: it leaves no room for a reply",
                prompt.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    match asked {
        None => Ok(context - prompt.len()),
        Some((0, param)) => Err(ApiError::field(
            param,
            format!("{param} must be at least 1"),
        )),
        Some((n, param)) if n > context as u64 => Err(ApiError::field(
            param,
            format!("{param} = {n} is more than the context ({context} tokens)"),
        )),
        Some((n, _)) => Ok(n as usize),
    }
}

/// A chat request, prepared.
pub fn chat(req: &ChatRequest, tok: &Tokenizer, context: usize) -> Result<Prepared, ApiError> {
    let sampler = sampler(&req.sampling())?;
    let stops = match &req.stop {
        Some(s) => s.sequences()?,
        None => Vec::new(),
    };
    let (prompt, tools) = chat_prompt(req, tok)?;
    let asked = match (req.max_completion_tokens, req.max_tokens) {
        (Some(n), _) => Some((n, "max_completion_tokens")),
        (None, Some(n)) => Some((n, "max_tokens")),
        (None, None) => None,
    };
    let max_new_tokens = budget(&prompt, context, asked, "messages")?;
    Ok(Prepared {
        prompt,
        options: GenerateOptions {
            max_new_tokens,
            sampler,
        },
        stops,
        tools,
    })
}

/// A completion request, prepared: the prompt is continued after `[gMASK] sop` only. As
/// OpenAI's, `max_tokens` defaults to 16.
pub fn completion(
    req: &CompletionRequest,
    tok: &Tokenizer,
    context: usize,
) -> Result<Prepared, ApiError> {
    let sampler = sampler(&req.sampling())?;
    let stops = match &req.stop {
        Some(s) => s.sequences()?,
        None => Vec::new(),
    };
    let text = match &req.prompt {
        PromptText::One(s) => s.as_str(),
        PromptText::Many(v) if v.len() == 1 => v[0].as_str(),
        PromptText::Many(v) => {
            return Err(ApiError::field(
                "prompt",
                format!("{} prompts: only one prompt per request is served", v.len()),
            ))
        }
    };
    let prompt = tok.encode_with_prefix(text);
    let max_new_tokens = budget(
        &prompt,
        context,
        Some((req.max_tokens.unwrap_or(16), "max_tokens")),
        "prompt",
    )?;
    Ok(Prepared {
        prompt,
        options: GenerateOptions {
            max_new_tokens,
            sampler,
        },
        stops,
        tools: None,
    })
}

/// The tools offered, as the function objects the model's format lists, and their names;
/// `tool_choice` `none` offers none, a named function offers only that one. (`required` is
/// served as `auto`: nothing forces a small model to call.)
fn offered_tools(req: &ChatRequest) -> Result<(Vec<Value>, Vec<String>), ApiError> {
    let Some(tools) = &req.tools else {
        if req.tool_choice.is_some() {
            return Err(ApiError::field("tool_choice", "tool_choice needs tools"));
        }
        return Ok((Vec::new(), Vec::new()));
    };
    let mut functions = Vec::new();
    let mut names = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        if t.kind != "function" {
            return Err(ApiError::field(
                &format!("tools[{i}].type"),
                format!("tool type {:?}: only \"function\"", t.kind),
            ));
        }
        let Some(Value::String(name)) = t.function.get("name") else {
            return Err(ApiError::field(
                &format!("tools[{i}].function.name"),
                "a function needs a `name` string",
            ));
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(ApiError::field(
                &format!("tools[{i}].function.name"),
                format!("function name {name:?}: must be non-empty, without whitespace"),
            ));
        }
        names.push(name.clone());
        functions.push(Value::Object(t.function.clone()));
    }
    match &req.tool_choice {
        None => {}
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "auto" | "required" => {}
            "none" => return Ok((Vec::new(), Vec::new())),
            other => {
                return Err(ApiError::field(
                    "tool_choice",
                    format!("tool_choice {other:?}: expected none, auto, required or a function"),
                ))
            }
        },
        Some(ToolChoice::Named { kind, function }) => {
            let Some(i) = names.iter().position(|n| *n == function.name) else {
                return Err(ApiError::field(
                    "tool_choice.function.name",
                    format!("no tool is named {:?}", function.name),
                ));
            };
            if kind != "function" {
                return Err(ApiError::field(
                    "tool_choice.type",
                    "tool_choice type: only \"function\"",
                ));
            }
            return Ok((vec![functions.swap_remove(i)], vec![names.swap_remove(i)]));
        }
    }
    Ok((functions, names))
}

/// The prompt of a chat request in the tokenizer's family format, and the tool-call format to
/// parse the reply with.
fn chat_prompt(
    req: &ChatRequest,
    tok: &Tokenizer,
) -> Result<(Vec<u32>, Option<OfferedTools>), ApiError> {
    let msgs = &req.messages;
    let Some(last) = msgs.last() else {
        return Err(ApiError::field("messages", "messages is empty"));
    };
    let (functions, names) = offered_tools(req)?;
    let text = |i: usize| -> Result<String, ApiError> {
        match &msgs[i].content {
            Some(c) => c.text(&format!("messages[{i}].content")),
            None => Ok(String::new()),
        }
    };
    match tok.family() {
        family @ (Family::ChatGlm1 | Family::ChatGlm2 | Family::CodeGeeX2) => {
            // `[Round N]` prompts know only user questions and assistant answers (CodeGeeX2
            // takes the last message as code to continue).
            if !functions.is_empty() {
                return Err(ApiError::field(
                    "tools",
                    format!("this model ({family}) has no tool-call format"),
                ));
            }
            let mut history = Vec::new();
            for (i, m) in msgs.iter().enumerate() {
                let want = if i % 2 == 0 {
                    InRole::User
                } else {
                    InRole::Assistant
                };
                if m.role != want {
                    return Err(ApiError::field(
                        &format!("messages[{i}].role"),
                        format!(
                            "a {family} conversation alternates user and assistant messages, \
                             starting and ending with a user message"
                        ),
                    ));
                }
                let role = if want == InRole::User {
                    Role::User
                } else {
                    Role::Assistant
                };
                history.push(ChatMessage::new(role, text(i)?));
            }
            if last.role != InRole::User {
                return Err(ApiError::field(
                    &format!("messages[{}].role", msgs.len() - 1),
                    "the last message must be a user message",
                ));
            }
            let query = history.pop().map(|m| m.content).unwrap_or_default();
            let ids = tok
                .encode_chat(&history, &query)
                .map_err(|e| ApiError::field("messages", e.to_string()))?;
            Ok((ids, None))
        }
        family @ (Family::ChatGlm3 | Family::Glm4) => {
            let format = match family {
                Family::Glm4 => ToolFormat::Glm4,
                _ => ToolFormat::ChatGlm3,
            };
            if !matches!(last.role, InRole::User | InRole::Tool) {
                return Err(ApiError::field(
                    &format!("messages[{}].role", msgs.len() - 1),
                    "the last message must be a user or tool message",
                ));
            }
            let mut history = Vec::new();
            let mut start = 0;
            if !functions.is_empty() {
                // The tools ride on the first system message; without one, on ChatGLM3's
                // demo sentence, or for GLM-4 (whose template renders a message's tools before
                // it, as its openai_api_server adds them) on an empty system message.
                let (default, tools) = match format {
                    ToolFormat::ChatGlm3 => (CHATGLM3_TOOLS_SYSTEM, functions),
                    ToolFormat::Glm4 => (
                        "",
                        functions
                            .into_iter()
                            .map(|f| serde_json::json!({"type": "function", "function": f}))
                            .collect(),
                    ),
                };
                let mut system = ChatMessage::new(Role::System, default);
                if matches!(msgs[0].role, InRole::System | InRole::Developer) {
                    system.content = text(0)?;
                    start = 1;
                }
                system.tools = Some(Value::Array(tools));
                history.push(system);
            }
            for (i, m) in msgs.iter().enumerate().skip(start) {
                let content = text(i)?;
                match m.role {
                    InRole::System | InRole::Developer => {
                        history.push(ChatMessage::new(Role::System, content))
                    }
                    InRole::User => history.push(ChatMessage::new(Role::User, content)),
                    InRole::Tool => history.push(ChatMessage::new(Role::Observation, content)),
                    InRole::Assistant => {
                        let calls = m.tool_calls.as_deref().unwrap_or_default();
                        if calls.is_empty() || !content.trim().is_empty() {
                            history.push(ChatMessage::new(Role::Assistant, content));
                        }
                        for (j, call) in calls.iter().enumerate() {
                            let rendered = format
                                .render_call(&call.function.arguments)
                                .ok_or_else(|| {
                                    ApiError::field(
                                        &format!(
                                            "messages[{i}].tool_calls[{j}].function.arguments"
                                        ),
                                        "arguments must be a JSON object (as text)",
                                    )
                                })?;
                            let mut msg = ChatMessage::new(Role::Assistant, rendered);
                            msg.metadata = call.function.name.clone();
                            history.push(msg);
                        }
                    }
                }
            }
            let ids = match format {
                ToolFormat::Glm4 => tok.apply_glm4_template(&history, true),
                ToolFormat::ChatGlm3 => chatglm3_ids(tok, &history),
            }
            .map_err(|e| ApiError::field("messages", e.to_string()))?;
            let tools = (!names.is_empty()).then_some((format, names));
            Ok((ids, tools))
        }
    }
}

/// ChatGLM3's prompt for a whole history: `[gMASK] sop`, every message, then `<|assistant|>`.
fn chatglm3_ids(
    tok: &Tokenizer,
    history: &[ChatMessage],
) -> Result<Vec<u32>, chatglm::tokenizer::TokenizerError> {
    let roles = tok
        .special_ids()
        .roles
        .ok_or(chatglm::tokenizer::TokenizerError::NoRoleTokens)?;
    let mut ids = tok.prompt_prefix().to_vec();
    for m in history {
        tok.encode_chatglm3_message(m, &mut ids)?;
    }
    ids.push(roles.assistant);
    Ok(ids)
}
