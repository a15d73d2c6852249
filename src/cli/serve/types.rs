//! The OpenAI request bodies this server reads (serde), and the JSON it answers with.
//!
//! Fields the server does not use (`model`: it has one; `user`, `tool_call_id`, `logprobs`, `frequency_penalty`, ...) are accepted
//! and ignored, as OpenAI's own clients send some of them; a field it uses with a wrong type
//! or value is a 400 naming the field.

use super::error::ApiError;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Most stop sequences a request may give.
pub const MAX_STOPS: usize = 16;

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<InMessage>,
    /// Stream Server-Sent Events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// `include_usage`.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Most tokens to generate (older name).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Most tokens to generate.
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// Temperature in [0, 2]; 0 is greedy.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass in (0, 1].
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Seed of the sampler (same seed, same text).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Number of choices: only 1.
    #[serde(default)]
    pub n: Option<u64>,
    /// Tools the model may call.
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    /// `none`, `auto`, `required` or `{"type": "function", "function": {"name"}}`.
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The text to continue (one string, or an array holding one).
    pub prompt: PromptText,
    /// Stream Server-Sent Events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// `include_usage`.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Most tokens to generate (OpenAI's default is 16).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Temperature in [0, 2]; 0 is greedy.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass in (0, 1].
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Seed of the sampler (same seed, same text).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Number of choices: only 1.
    #[serde(default)]
    pub n: Option<u64>,
}

/// The sampling fields both endpoints share, as given.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// `temperature`.
    pub temperature: Option<f32>,
    /// `top_p`.
    pub top_p: Option<f32>,
    /// `seed`.
    pub seed: Option<u64>,
    /// `n`.
    pub n: Option<u64>,
}

impl ChatRequest {
    /// The sampling fields.
    pub fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            n: self.n,
        }
    }
}

impl CompletionRequest {
    /// The sampling fields.
    pub fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            n: self.n,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage counts.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// One string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop sequence.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// A completion prompt: a string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptText {
    /// One prompt.
    One(String),
    /// Several (only one is served).
    Many(Vec<String>),
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InRole {
    /// System prompt.
    System,
    /// OpenAI's newer name for a system prompt.
    Developer,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// A message of the conversation.
#[derive(Debug, Deserialize)]
pub struct InMessage {
    /// Who wrote it.
    pub role: InRole,
    /// The text (null for an assistant message that only calls tools).
    #[serde(default)]
    pub content: Option<Content>,
    /// Tool calls of an assistant message.
    #[serde(default)]
    pub tool_calls: Option<Vec<InToolCall>>,
}

/// Message content: a string, or an array of parts of which only `text` parts are read.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// `[{"type": "text", "text": ...}, ...]`.
    Parts(Vec<ContentPart>),
}

/// One part of a content array.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    /// The part's type: only `text` is served.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its text.
    #[serde(default)]
    pub text: Option<String>,
}

/// A tool call in an assistant message of the history.
#[derive(Debug, Deserialize)]
pub struct InToolCall {
    /// The function called.
    pub function: FunctionCall,
}

/// A function call: name and JSON arguments (as text).
#[derive(Debug, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// A JSON object, as text.
    pub arguments: String,
}

/// A tool offered to the model.
#[derive(Debug, Deserialize)]
pub struct Tool {
    /// Only `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function: `name`, `description`, `parameters` (JSON Schema), in the client's key
    /// order.
    pub function: Map<String, Value>,
}

/// `tool_choice`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `none`, `auto` or `required`.
    Mode(String),
    /// One named function.
    Named {
        /// `function`.
        #[serde(rename = "type")]
        kind: String,
        /// `{"name"}`.
        function: NamedFunction,
    },
}

/// The function of a named `tool_choice`.
#[derive(Debug, Deserialize)]
pub struct NamedFunction {
    /// Its name.
    pub name: String,
}

impl Content {
    /// The text, parts joined; `param` names the field for an error.
    pub fn text(&self, param: &str) -> Result<String, ApiError> {
        match self {
            Content::Text(s) => Ok(s.clone()),
            Content::Parts(parts) => {
                let mut text = String::new();
                for (i, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        ("text", None) => {
                            return Err(ApiError::field(
                                &format!("{param}[{i}].text"),
                                "a text part needs `text`",
                            ))
                        }
                        (kind, _) => {
                            return Err(ApiError::field(
                                &format!("{param}[{i}].type"),
                                format!(
                                "content parts of type {kind:?} are not supported (only \"text\")"
                            ),
                            ))
                        }
                    }
                }
                Ok(text)
            }
        }
    }
}

impl Stop {
    /// The stop sequences, checked.
    pub fn sequences(&self) -> Result<Vec<String>, ApiError> {
        let v = match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        };
        if v.len() > MAX_STOPS {
            return Err(ApiError::field(
                "stop",
                format!("at most {MAX_STOPS} stop sequences"),
            ));
        }
        Ok(v)
    }
}

/// Parses a JSON request body into `T`: malformed JSON and wrong types or values are a 400
/// that names the field (`messages[1].role`).
pub fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would also read a struct from an array of its fields in order: not here.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        let value: Result<serde::de::IgnoredAny, _> = serde_json::from_slice(bytes);
        return Err(match value {
            Ok(_) => ApiError::invalid(None, "the body must be a JSON object"),
            Err(e) => ApiError::invalid(None, format!("the body is not valid JSON: {e}")),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid(None, format!("the body is not valid JSON: {inner}"));
        }
        let path = e.path().to_string();
        let param = (path != ".").then_some(path.as_str());
        let message = match param {
            Some(p) => format!("{p}: {inner}"),
            None => format!("the body: {inner}"),
        };
        ApiError::invalid(param, message)
    })?;
    de.end()
        .map_err(|e| ApiError::invalid(None, format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// The `usage` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated (an end token included).
    pub completion_tokens: usize,
    /// Prompt tokens whose keys and values came from the slot's cache.
    pub cached_tokens: usize,
}

impl Usage {
    /// As OpenAI writes it.
    pub fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let e = parse_body::<ChatRequest>(br#"{"messages": [{"role": "robot", "content": "x"}]}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e =
            parse_body::<ChatRequest>(br#"{"messages": [], "temperature": "hot"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = parse_body::<ChatRequest>(br#"{"messages": [{"role": "user"#).unwrap_err();
        assert_eq!(e.param, None);
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let e = parse_body::<ChatRequest>(br#"{"model": "m"}"#).unwrap_err();
        assert!(e.message.contains("messages"), "{}", e.message);
        let r = parse_body::<ChatRequest>(
            br#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "stop": "x", "seed": 3, "user": "ignored"}"#,
        )
        .unwrap();
        assert_eq!(
            r.messages[0].content.as_ref().unwrap().text("c").unwrap(),
            "hi"
        );
        assert_eq!(r.sampling().seed, Some(3));
    }
}
