//! ChatGLM prompt formats.
//!
//! - ChatGLM2 (THUDM `tokenization_chatglm.py`, `build_prompt`): the prompt is a plain string,
//!   `[Round {i}]\n\n问：{q}\n\n答：{a}\n\n` for every past round (i from 1), then
//!   `[Round {n}]\n\n问：{query}\n\n答：`, encoded after `[gMASK] sop`.
//! - ChatGLM3 (`build_chat_input`, `build_single_message`): `[gMASK] sop`, then for every message
//!   `<|role|>` + encode(metadata + "\n") + encode(content), then the new message, then
//!   `<|assistant|>`. A system message with tools gets `"\n" + json.dumps(tools, indent=4,
//!   ensure_ascii=False)` appended to its content.

use serde_json::Value;

use super::{Family, Tokenizer, TokenizerError};

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

impl Tokenizer {
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
    /// ChatGLM2 understands only alternating user/assistant messages (each user message with the
    /// assistant reply that follows it is a round); other roles or orders are an error.
    pub fn encode_chat(
        &self,
        history: &[ChatMessage],
        query: &str,
    ) -> Result<Vec<u32>, TokenizerError> {
        match self.family() {
            Family::ChatGlm3 => self.build_chat_input(history, query, Role::User),
            Family::ChatGlm1 => Err(TokenizerError::FamilyNotImplemented(Family::ChatGlm1)),
            Family::ChatGlm2 => {
                let mut rounds = Vec::new();
                let mut it = history.iter();
                while let Some(q) = it.next() {
                    let a = it.next();
                    match (q.role, a.map(|a| a.role)) {
                        (Role::User, Some(Role::Assistant)) => rounds.push((
                            q.content.clone(),
                            a.map(|a| a.content.clone()).unwrap_or_default(),
                        )),
                        _ => return Err(TokenizerError::HistoryNotAlternating),
                    }
                }
                Ok(self.encode_chatglm2_prompt(query, &rounds))
            }
        }
    }
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
