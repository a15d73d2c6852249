//! ChatGLM prompt formats.
//!
//! - ChatGLM-6B (`modeling_chatglm.py`, `chat`): the query alone, or with history
//!   `[Round {i}]\n问：{q}\n答：{a}\n` per past round (i from 0) then
//!   `[Round {n}]\n问：{query}\n答：`, encoded and followed by `[gMASK] <sop>`.
//! - ChatGLM2 (THUDM `tokenization_chatglm.py`, `build_prompt`): the prompt is a plain string,
//!   `[Round {i}]\n\n问：{q}\n\n答：{a}\n\n` for every past round (i from 1), then
//!   `[Round {n}]\n\n问：{query}\n\n答：`, encoded after `[gMASK] sop`.
//! - ChatGLM3 (`build_chat_input`, `build_single_message`): `[gMASK] sop`, then for every message
//!   `<|role|>` + encode(metadata + "\n") + encode(content), then the new message, then
//!   `<|assistant|>`. A system message with tools gets `"\n" + json.dumps(tools, indent=4,
//!   ensure_ascii=False)` appended to its content.
//! - GLM-4 (glm-4-9b-chat `tokenizer_config.json`, `chat_template`, rendered by transformers'
//!   Jinja with `trim_blocks` and `lstrip_blocks`): see [`glm4_prompt`]. The string is encoded
//!   with special-token splitting, so `<|user|>` typed in a message is the special id.
//! - CodeGeeX2: a code model with no chat rounds: the prompt is the text itself after
//!   `[gMASK] sop`, conventionally `# language: Python\n# <request>\n` ([`codegeex2_prompt`]).

use serde_json::Value;

use super::{chatglm1_prompt, Family, Tokenizer, TokenizerError};

/// Who speaks in a ChatGLM3 conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The system prompt (may carry tools).
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Observation,
}

impl Role {
    /// The role's name as in `<|name|>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Observation => "observation",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
    /// ChatGLM3 metadata (for example the tool name of an assistant tool call); usually empty.
    pub metadata: String,
    /// Tools offered in a system message (ChatGLM3), rendered as Python's
    /// `json.dumps(tools, indent=4, ensure_ascii=False)`. Object keys keep their order.
    pub tools: Option<Value>,
}

impl ChatMessage {
    /// A message with no metadata and no tools.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            metadata: String::new(),
            tools: None,
        }
    }
}

/// The ChatGLM2 prompt string for `query` after the `(question, answer)` rounds in `history`.
pub fn chatglm2_prompt(query: &str, history: &[(String, String)]) -> String {
    let mut prompt = String::new();
    for (i, (q, a)) in history.iter().enumerate() {
        prompt.push_str(&format!("[Round {}]\n\n问：{q}\n\n答：{a}\n\n", i + 1));
    }
    prompt.push_str(&format!(
        "[Round {}]\n\n问：{query}\n\n答：",
        history.len() + 1
    ));
    prompt
}

/// The GLM-4 system sentence that introduces the tools.
const GLM4_TOOLS_SYSTEM: &str = "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。";

/// The text of the built-in `python` tool.
const GLM4_PYTHON_TOOL: &str = "当你向 `python` 发送包含 Python 代码的消息时，该代码将会在一个有状态的 Jupyter notebook 环境中执行。\n`python` 返回代码执行的输出，或在执行 60 秒后返回超时。\n`/mnt/data` 将会持久化存储你的文件。在此会话中，`python` 无法访问互联网。不要使用 `python` 进行任何网络请求或者在线 API 调用，这些在线内容的访问将不会成功。";

/// The text of the built-in `simple_browser` tool.
const GLM4_BROWSER_TOOL: &str = "你可以使用 `simple_browser` 工具。该工具支持以下函数：\n`search(query: str, recency_days: int)`：使用搜索引擎进行查询并显示结果，可以使用 `recency_days` 参数控制搜索内容的时效性。\n`mclick(ids: list[int])`：获取一系列指定 id 的页面内容。每次调用时，须选择3-10个页面。选择多个角度的页面，同时尽可能选择可信任的信息来源。考虑到部分页面是无法加载的，你也可以多打开一些可能有用的页面而不用担心内容过多。\n`open_url(url: str)`：打开指定的 URL。\n\n使用 `【{引用 id}†{引用文本}】` 来引用内容。\n\n操作步骤：1. 使用 `search` 来获得信息列表; 2. 使用 `mclick` 来获取指定 ID 页面的内容; 3. 根据获得的内容进行回复。在回复中应当引用信息来源。\n 如果用户提供了 URL，也可以用 `open_url` 直接打开页面。\n如果初次搜索结果没有找到合适的信息，也可以再次使用 `search` 进行搜索。";

/// The text of the built-in `cogview` tool.
const GLM4_COGVIEW_TOOL: &str = "如果用户的请求中包含了对图像的描述，你可以使用 `cogview` 来生成图像并展示给用户。你需要向 `cogview` 发送图像描述，规则：\n- 发送给 `cogview` 的消息必须使用英语。用户的中文描述必须完全翻译为英语。\n- 应当尽可能详细地描述图像生成的需求，需求描述约 100 英文单词。\n- 保持用户原始描述的意图。不要虚构内容或者没见过的人物。\n- 如无特殊说明，所在地为中国，持有中国立场并遵循中国社会主义价值观。";

/// The GLM-4 chat template's text for `messages`, as transformers renders it:
///
/// `[gMASK]<sop>`, then for every message: if it has tools, `<|system|>\n` + the fixed system
/// sentence + `\n\n# 可用工具` + each tool (type `function`: `\n## {name}\n\n` +
/// `json.dumps(function, indent=4, ensure_ascii=False)` + a fixed sentence; `python`,
/// `simple_browser`, `cogview`: `\n## {type}\n\n` + a fixed text; other types nothing); then,
/// if its content is not empty, `<|{role}|>{metadata}\n{content}`. Last, `<|assistant|>` when
/// `add_generation_prompt`.
pub fn glm4_prompt(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out = String::from("[gMASK]<sop>");
    for m in messages {
        if let Some(tools) = &m.tools {
            out.push_str("<|system|>\n");
            out.push_str(GLM4_TOOLS_SYSTEM);
            out.push_str("\n\n# 可用工具");
            for tool in tools.as_array().map(Vec::as_slice).unwrap_or_default() {
                let fixed = match tool.get("type").and_then(Value::as_str) {
                    Some("function") => {
                        let function = tool.get("function").unwrap_or(&Value::Null);
                        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
                        out.push_str(&format!("\n## {name}\n\n"));
                        python_json(function, 0, &mut out);
                        out.push_str("\n在调用上述函数时，请使用 Json 格式表示调用的参数。");
                        continue;
                    }
                    Some("python") => ("python", GLM4_PYTHON_TOOL),
                    Some("simple_browser") => ("simple_browser", GLM4_BROWSER_TOOL),
                    Some("cogview") => ("cogview", GLM4_COGVIEW_TOOL),
                    _ => continue,
                };
                out.push_str(&format!("\n## {}\n\n{}", fixed.0, fixed.1));
            }
        }
        if !m.content.is_empty() {
            out.push_str(&format!(
                "<|{}|>{}\n{}",
                m.role.as_str(),
                m.metadata,
                m.content
            ));
        }
    }
    if add_generation_prompt {
        out.push_str("<|assistant|>");
    }
    out
}

/// The Jinja chat template written to a file of `family` as `tokenizer.chat_template`, for
/// other GGUF runtimes (this one builds its prompts in code, above): transformers' rendering
/// of it (`trim_blocks`, `lstrip_blocks`) gives the same prompt text as this module.
///
/// ChatGLM3 and GLM-4 get their models' own templates (chatglm3-6b's and glm-4-9b-chat's
/// `tokenizer_config.json`, which llama.cpp recognises); ChatGLM2 and ChatGLM-6B, which
/// shipped none, get one of this project's; CodeGeeX2, a code model, none.
pub fn chat_template(family: Family) -> Option<&'static str> {
    match family {
        Family::ChatGlm1 => Some(include_str!("templates/chatglm1.jinja")),
        Family::ChatGlm2 => Some(include_str!("templates/chatglm2.jinja")),
        Family::ChatGlm3 => Some(include_str!("templates/chatglm3.jinja")),
        Family::Glm4 => Some(include_str!("templates/glm4.jinja")),
        Family::CodeGeeX2 => None,
    }
}

/// A CodeGeeX2 prompt: `# language: {language}\n`, then every line of `request` as a `# `
/// comment, each ending in a newline (CodeGeeX2's documented prompt convention).
pub fn codegeex2_prompt(language: &str, request: &str) -> String {
    let mut out = format!("# language: {language}\n");
    for line in request.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl Tokenizer {
    /// The ids of the GLM-4 chat template for `messages` ([`glm4_prompt`], encoded with
    /// special-token splitting). Errors for a tokenizer of another family.
    pub fn apply_glm4_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        if self.family() != Family::Glm4 {
            return Err(TokenizerError::WrongFamily {
                format: "the GLM-4 chat template",
                family: self.family(),
            });
        }
        Ok(self.encode(&glm4_prompt(messages, add_generation_prompt)))
    }

    /// The ids of the ChatGLM2 prompt for `query` after `history`: `[gMASK] sop` and the encoded
    /// [`chatglm2_prompt`] string.
    pub fn encode_chatglm2_prompt(&self, query: &str, history: &[(String, String)]) -> Vec<u32> {
        self.encode_with_prefix(&chatglm2_prompt(query, history))
    }

    /// Appends one ChatGLM3 message: `<|role|>`, encode(metadata + "\n"), encode(content).
    /// Errors for a ChatGLM2 tokenizer (it has no role tokens).
    pub fn encode_chatglm3_message(
        &self,
        message: &ChatMessage,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let roles = self
            .special_ids()
            .roles
            .ok_or(TokenizerError::NoRoleTokens)?;
        out.push(match message.role {
            Role::System => roles.system,
            Role::User => roles.user,
            Role::Assistant => roles.assistant,
            Role::Observation => roles.observation,
        });
        self.encode_into(&format!("{}\n", message.metadata), out);
        match (&message.tools, message.role) {
            (Some(tools), Role::System) => {
                let mut content = message.content.clone();
                content.push('\n');
                python_json(tools, 0, &mut content);
                self.encode_into(&content, out);
            }
            _ => self.encode_into(&message.content, out),
        }
        Ok(())
    }

    /// ChatGLM3's `build_chat_input(query, history, role)`: `[gMASK] sop`, every message of
    /// `history`, the new message (`role`, `query`), then `<|assistant|>`.
    pub fn build_chat_input(
        &self,
        history: &[ChatMessage],
        query: &str,
        role: Role,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = self.prompt_prefix().to_vec();
        for m in history {
            self.encode_chatglm3_message(m, &mut ids)?;
        }
        self.encode_chatglm3_message(&ChatMessage::new(role, query), &mut ids)?;
        if let Some(roles) = self.special_ids().roles {
            ids.push(roles.assistant);
        }
        Ok(ids)
    }

    /// The prompt ids for a user `query` after `history`, in this tokenizer's family format.
    ///
    /// ChatGLM-6B and ChatGLM2 understand only alternating user/assistant messages (each user message with the
    /// assistant reply that follows it is a round); other roles or orders are an error.
    /// CodeGeeX2 has no chat format: the prompt is `query` as is (after `[gMASK] sop`), and
    /// `history` is not part of it.
    pub fn encode_chat(
        &self,
        history: &[ChatMessage],
        query: &str,
    ) -> Result<Vec<u32>, TokenizerError> {
        match self.family() {
            Family::ChatGlm3 => self.build_chat_input(history, query, Role::User),
            Family::CodeGeeX2 => Ok(self.encode_with_prefix(query)),
            Family::Glm4 => {
                let mut messages = history.to_vec();
                messages.push(ChatMessage::new(Role::User, query));
                self.apply_glm4_template(&messages, true)
            }
            family @ Family::ChatGlm2 => {
                Ok(self.encode_chatglm2_prompt(query, &rounds(family, history)?))
            }
            family @ Family::ChatGlm1 => {
                Ok(self.encode_chatglm1_prompt(query, &rounds(family, history)?))
            }
        }
    }

    /// The ids of the ChatGLM-6B prompt for `query` after `history`: the encoded
    /// [`chatglm1_prompt`] string, then `[gMASK] <sop>`.
    pub fn encode_chatglm1_prompt(&self, query: &str, history: &[(String, String)]) -> Vec<u32> {
        self.encode_hf(&chatglm1_prompt(query, history))
    }
}

/// The `(question, answer)` rounds of a history of alternating user/assistant messages, the
/// only history ChatGLM-6B and ChatGLM2 (`family`) understand; other roles or orders are an
/// error.
fn rounds(
    family: Family,
    history: &[ChatMessage],
) -> Result<Vec<(String, String)>, TokenizerError> {
    if history.iter().any(|m| m.role == Role::System) {
        return Err(TokenizerError::NoSystemRole { family });
    }
    let mut rounds = Vec::new();
    let mut it = history.iter();
    while let Some(q) = it.next() {
        match (q.role, it.next()) {
            (Role::User, Some(a)) if a.role == Role::Assistant => {
                rounds.push((q.content.clone(), a.content.clone()))
            }
            _ => return Err(TokenizerError::HistoryNotAlternating { family }),
        }
    }
    Ok(rounds)
}

/// Writes `value` as Python's `json.dumps(value, indent=4, ensure_ascii=False)` would, nested
/// `level` deep.
pub(crate) fn python_json(value: &Value, level: usize, out: &mut String) {
    const INDENT: &str = "    ";
    let newline = |out: &mut String, level: usize| {
        out.push('\n');
        for _ in 0..level {
            out.push_str(INDENT);
        }
    };
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else if let Some(f) = n.as_f64() {
                python_float(f, out);
            }
        }
        Value::String(s) => python_string(s, out),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, level + 1);
                python_json(item, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, level + 1);
                python_string(k, out);
                out.push_str(": ");
                python_json(v, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
    }
}

/// A JSON string as Python's encoder writes it with `ensure_ascii=False`: only `"`, `\` and
/// control characters below U+0020 are escaped.
fn python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A float as Python's `float.__repr__`: the shortest digits that round-trip, positional
/// notation for decimal exponents -4..16 (with `.0` on integral values), otherwise
/// `d.ddde±XX`.
fn python_float(f: f64, out: &mut String) {
    if !f.is_finite() {
        // serde_json numbers are always finite; Python would print these.
        out.push_str(if f.is_nan() {
            "NaN"
        } else if f > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        });
        return;
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e-7", "1e16", "0e0".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    out.push_str(sign);
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let point = exp as usize + 1;
            if digits.len() <= point {
                out.push_str(&digits);
                out.push_str(&"0".repeat(point - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        } else {
            out.push_str("0.");
            out.push_str(&"0".repeat((-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(f: f64) -> String {
        let mut s = String::new();
        python_float(f, &mut s);
        s
    }

    #[test]
    fn rounds_name_the_family_and_refuse_a_system_message() {
        let m = |role, text: &str| ChatMessage::new(role, text);
        let ok = [m(Role::User, "q"), m(Role::Assistant, "a")];
        assert_eq!(
            rounds(Family::ChatGlm2, &ok).unwrap(),
            [("q".to_owned(), "a".to_owned())]
        );
        let system = [
            m(Role::System, "s"),
            m(Role::User, "q"),
            m(Role::Assistant, "a"),
        ];
        for family in [Family::ChatGlm2, Family::ChatGlm1] {
            let e = rounds(family, &system).unwrap_err();
            assert!(matches!(e, TokenizerError::NoSystemRole { family: f } if f == family));
            assert!(e.to_string().contains("no system role"), "{e}");
        }
        let e = rounds(Family::ChatGlm1, &[m(Role::Assistant, "a")]).unwrap_err();
        assert!(
            matches!(
                e,
                TokenizerError::HistoryNotAlternating {
                    family: Family::ChatGlm1
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn floats_match_python_repr() {
        assert_eq!(float(1.0), "1.0");
        assert_eq!(float(-0.0), "-0.0");
        assert_eq!(float(0.0), "0.0");
        assert_eq!(float(0.5), "0.5");
        assert_eq!(float(123.456), "123.456");
        assert_eq!(float(1e16), "1e+16");
        assert_eq!(float(1.5e16), "1.5e+16");
        assert_eq!(float(9999999999999998.0), "9999999999999998.0");
        assert_eq!(float(0.0001), "0.0001");
        assert_eq!(float(0.00001), "1e-05");
        assert_eq!(float(1.25e-7), "1.25e-07");
        assert_eq!(float(1e100), "1e+100");
        assert_eq!(float(0.1 + 0.2), "0.30000000000000004");
    }

    #[test]
    fn json_matches_python_dumps_indent_4() {
        let v: Value = serde_json::from_str(
            r#"{"b": [1, 2.5, "x\"\\\n\u0001é"], "a": {}, "c": [], "d": {"e": null, "f": true}}"#,
        )
        .unwrap();
        let mut s = String::new();
        python_json(&v, 0, &mut s);
        let expected = "{\n    \"b\": [\n        1,\n        2.5,\n        \"x\\\"\\\\\\n\\u0001é\"\n    ],\n    \"a\": {},\n    \"c\": [],\n    \"d\": {\n        \"e\": null,\n        \"f\": true\n    }\n}";
        assert_eq!(s, expected);
    }
}
