//! Tool calls in the model's own format, per family (the one place a new family's format is
//! added: [`ToolFormat`]).
//!
//! ChatGLM3 (THUDM/ChatGLM3 `openai_api_demo/utils.py`, `process_response` and
//! `process_chatglm_messages`, commit 1cabc7e): the tools go into a system message
//! (`ChatMessage.tools`); a reply that calls a tool is `NAME\n` (the metadata line) followed by
//! a code block
//!
//! ````text
//! ```python
//! tool_call(city='Beijing', days=3)
//! ```
//! ````
//!
//! whose lines between the first and the last are a Python call `tool_call(**kwargs)`; the
//! keyword arguments, as JSON, are the call's `arguments`. A tool's result goes back to the
//! model as an `observation` message.

use serde_json::{Map, Number, Value};

/// How a family writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// ChatGLM3's metadata line and `tool_call(...)` code block.
    ChatGlm3,
    /// GLM-4's metadata line (the function's name) and its JSON arguments on the next lines
    /// (THUDM/GLM-4 `basic_demo/openai_api_server.py`, `process_response`).
    Glm4,
}

/// The format to parse a reply with and the names of the tools offered.
pub type OfferedTools = (ToolFormat, Vec<String>);

/// A tool call taken from a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The function's name.
    pub name: String,
    /// Its arguments, a JSON object as text.
    pub arguments: String,
}

impl ToolFormat {
    /// The reply text of a call of `name` with the JSON object `arguments` (what the model
    /// would have written), for an assistant message of the history. `None` if `arguments` is
    /// not a JSON object.
    pub fn render_call(self, arguments: &str) -> Option<String> {
        match self {
            ToolFormat::ChatGlm3 => {
                let Ok(Value::Object(args)) = serde_json::from_str::<Value>(arguments) else {
                    return None;
                };
                let mut call = String::from("```python\ntool_call(");
                for (i, (k, v)) in args.iter().enumerate() {
                    if i > 0 {
                        call.push_str(", ");
                    }
                    call.push_str(k);
                    call.push('=');
                    python_repr(v, &mut call);
                }
                call.push_str(")\n```");
                Some(call)
            }
            ToolFormat::Glm4 => match serde_json::from_str::<Value>(arguments) {
                Ok(Value::Object(_)) => Some(arguments.to_owned()),
                _ => None,
            },
        }
    }

    /// The tool call in a whole reply (`text` as generated, leading whitespace trimmed), if it
    /// is one of a tool in `names`.
    pub fn parse(self, text: &str, names: &[String]) -> Option<ToolCall> {
        match self {
            ToolFormat::ChatGlm3 => {
                let (name, body) = text.split_once('\n')?;
                let name = name.trim();
                if !names.iter().any(|n| n == name) {
                    return None;
                }
                let lines: Vec<&str> = body.trim_end().split('\n').collect();
                if lines.len() < 2 {
                    return None;
                }
                let code = lines[1..lines.len() - 1].join("\n");
                let args = parse_tool_call(&code)?;
                Some(ToolCall {
                    name: name.to_owned(),
                    arguments: Value::Object(args).to_string(),
                })
            }
            ToolFormat::Glm4 => {
                // A call is the name on the first line and a JSON object from the second.
                let (name, args) = text.trim().split_once('\n')?;
                let (name, args) = (name.trim(), args.trim());
                if !args.starts_with('{') || !names.iter().any(|n| n == name) {
                    return None;
                }
                let Ok(args @ Value::Object(_)) = serde_json::from_str::<Value>(args) else {
                    return None;
                };
                Some(ToolCall {
                    name: name.to_owned(),
                    arguments: args.to_string(),
                })
            }
        }
    }

    /// Whether a reply starting with `first_line` (no newline yet) may still turn out to be
    /// a tool call.
    fn may_start_call(self, first_line: &str, names: &[String]) -> bool {
        match self {
            ToolFormat::ChatGlm3 | ToolFormat::Glm4 => {
                names.iter().any(|n| n.starts_with(first_line.trim_end()))
            }
        }
    }

    /// Whether a reply whose first line is `first_line` is a tool call.
    fn starts_call(self, first_line: &str, names: &[String]) -> bool {
        match self {
            ToolFormat::ChatGlm3 | ToolFormat::Glm4 => names.iter().any(|n| n == first_line.trim()),
        }
    }
}

/// Sorts streamed reply text into content and tool calls: text that may still be the start
/// of a tool call is held back; a tool call is kept whole and parsed at the end.
#[derive(Debug)]
pub struct ReplyFilter {
    /// The format and the names of the tools offered; `None`: everything is content.
    tools: Option<OfferedTools>,
    state: ReplyState,
}

#[derive(Debug)]
enum ReplyState {
    /// Not known yet whether the reply is a tool call; the text so far.
    Undecided(String),
    /// Content: text passes through.
    Content,
    /// A tool call: the whole text.
    Call(String),
}

/// What a reply turned out to be, at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyEnd {
    /// Plain content; the text still to send.
    Content(String),
    /// A tool call.
    Call(ToolCall),
}

impl ReplyFilter {
    /// A filter for a reply to a request that offered `tools` (names) in `format`.
    pub fn new(tools: Option<OfferedTools>) -> Self {
        let state = match &tools {
            Some((_, names)) if !names.is_empty() => ReplyState::Undecided(String::new()),
            _ => ReplyState::Content,
        };
        Self { tools, state }
    }

    /// Takes the next piece; returns the content that may be sent now.
    pub fn push(&mut self, piece: &str) -> String {
        let Some((format, names)) = &self.tools else {
            return piece.to_owned();
        };
        match &mut self.state {
            ReplyState::Content => piece.to_owned(),
            ReplyState::Call(text) => {
                text.push_str(piece);
                String::new()
            }
            ReplyState::Undecided(text) => {
                text.push_str(piece);
                match text.split_once('\n') {
                    Some((first, _)) if format.starts_call(first, names) => {
                        self.state = ReplyState::Call(std::mem::take(text));
                        String::new()
                    }
                    None if format.may_start_call(text, names) => String::new(),
                    _ => {
                        let out = std::mem::take(text);
                        self.state = ReplyState::Content;
                        out
                    }
                }
            }
        }
    }

    /// Ends the reply: a tool call if it parses as one, otherwise the content still held.
    pub fn finish(self) -> ReplyEnd {
        match self.state {
            ReplyState::Content => ReplyEnd::Content(String::new()),
            ReplyState::Undecided(text) => ReplyEnd::Content(text),
            ReplyState::Call(text) => {
                let (format, names) = self.tools.expect("a call needs tools");
                match format.parse(&text, &names) {
                    Some(call) => ReplyEnd::Call(call),
                    None => ReplyEnd::Content(text),
                }
            }
        }
    }
}

/// Writes `v` as Python's `repr` of the same value (strings in single quotes unless they
/// hold a single quote and no double quote; `True`, `False`, `None`).
fn python_repr(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => {
            let quote = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            out.push(quote);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                        out.push_str(&format!("\\x{:02x}", c as u32))
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&Value::String(k.clone()), out);
                out.push_str(": ");
                python_repr(item, out);
            }
            out.push('}');
        }
    }
}

/// Most nesting of lists and dicts a tool call's literals may have.
const MAX_DEPTH: usize = 32;

/// The keyword arguments of `tool_call(k=literal, ...)` (Python literals: strings, numbers,
/// `True`/`False`/`None`, lists, tuples, dicts with string keys). `None` if `code` is not
/// such a call. This replaces the demo's `eval`, which runs any code the model writes.
pub fn parse_tool_call(code: &str) -> Option<Map<String, Value>> {
    let mut p = Parser {
        s: code.as_bytes(),
        at: 0,
    };
    p.ws();
    if !p.eat_word("tool_call") {
        return None;
    }
    p.ws();
    p.expect(b'(')?;
    let mut args = Map::new();
    loop {
        p.ws();
        if p.eat(b')') {
            break;
        }
        let name = p.ident()?;
        p.ws();
        p.expect(b'=')?;
        let value = p.literal(0)?;
        args.insert(name, value);
        p.ws();
        if p.eat(b',') {
            continue;
        }
        p.expect(b')')?;
        break;
    }
    p.ws();
    (p.at == p.s.len()).then_some(args)
}

/// A cursor over Python source.
struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.eat(c).then_some(())
    }

    fn eat_word(&mut self, w: &str) -> bool {
        let end = self.at + w.len();
        let is_word = self.s.get(self.at..end) == Some(w.as_bytes())
            && !self
                .s
                .get(end)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if is_word {
            self.at = end;
        }
        is_word
    }

    fn ident(&mut self) -> Option<String> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
        {
            self.at += 1;
        }
        let id = std::str::from_utf8(&self.s[start..self.at]).ok()?;
        (!id.is_empty() && !id.as_bytes()[0].is_ascii_digit()).then(|| id.to_owned())
    }

    fn literal(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match self.peek()? {
            b'\'' | b'"' => {
                // Adjacent literals concatenate, as in Python.
                let mut s = self.string()?;
                loop {
                    self.ws();
                    match self.peek() {
                        Some(b'\'' | b'"') => s.push_str(&self.string()?),
                        _ => break Some(Value::String(s)),
                    }
                }
            }
            b'[' => {
                self.at += 1;
                Some(Value::Array(self.items(b']', depth)?))
            }
            b'(' => {
                self.at += 1;
                Some(Value::Array(self.items(b')', depth)?))
            }
            b'{' => {
                self.at += 1;
                let mut map = Map::new();
                loop {
                    self.ws();
                    if self.eat(b'}') {
                        break;
                    }
                    let Value::String(key) = self.literal(depth + 1)? else {
                        return None;
                    };
                    self.ws();
                    self.expect(b':')?;
                    let value = self.literal(depth + 1)?;
                    map.insert(key, value);
                    self.ws();
                    if !self.eat(b',') {
                        self.ws();
                        self.expect(b'}')?;
                        break;
                    }
                }
                Some(Value::Object(map))
            }
            _ if self.eat_word("True") => Some(Value::Bool(true)),
            _ if self.eat_word("False") => Some(Value::Bool(false)),
            _ if self.eat_word("None") => Some(Value::Null),
            _ => self.number(),
        }
    }

    /// Items up to `close`, comma-separated, a trailing comma allowed.
    fn items(&mut self, close: u8, depth: usize) -> Option<Vec<Value>> {
        let mut items = Vec::new();
        loop {
            self.ws();
            if self.eat(close) {
                return Some(items);
            }
            items.push(self.literal(depth + 1)?);
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(close)?;
                return Some(items);
            }
        }
    }

    fn number(&mut self) -> Option<Value> {
        let start = self.at;
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.at += 1;
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'_'))
            || (matches!(self.peek(), Some(b'-' | b'+'))
                && matches!(self.s[self.at - 1], b'e' | b'E'))
        {
            self.at += 1;
        }
        let text: String = std::str::from_utf8(&self.s[start..self.at])
            .ok()?
            .chars()
            .filter(|&c| c != '_')
            .collect();
        let text = text.strip_prefix('+').unwrap_or(&text);
        if let Ok(i) = text.parse::<i64>() {
            return Some(Value::Number(i.into()));
        }
        let f: f64 = text.parse().ok()?;
        Number::from_f64(f).map(Value::Number)
    }

    /// A quoted string (single or double quotes) with Python's escapes.
    fn string(&mut self) -> Option<String> {
        let quote = self.peek()?;
        self.at += 1;
        let mut bytes = Vec::new();
        loop {
            let c = self.peek()?;
            self.at += 1;
            match c {
                c if c == quote => break,
                b'\n' => return None,
                b'\\' => {
                    let e = self.peek()?;
                    self.at += 1;
                    let mut push = |ch: char| {
                        let mut buf = [0; 4];
                        bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    };
                    match e {
                        b'n' => push('\n'),
                        b't' => push('\t'),
                        b'r' => push('\r'),
                        b'0' => push('\0'),
                        b'\\' | b'\'' | b'"' => push(e as char),
                        b'\n' => {}
                        b'x' | b'u' | b'U' => {
                            let len = match e {
                                b'x' => 2,
                                b'u' => 4,
                                _ => 8,
                            };
                            let hex =
                                std::str::from_utf8(self.s.get(self.at..self.at + len)?).ok()?;
                            self.at += len;
                            push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
                        }
                        other => {
                            // Python keeps unknown escapes as they are.
                            push('\\');
                            push(other as char);
                        }
                    }
                }
                c => bytes.push(c),
            }
        }
        String::from_utf8(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_chatglm3_tool_call_reply_parses() {
        let reply = "get_weather\n```python\ntool_call(city='北京', days=3, metric=True)\n```";
        let call = ToolFormat::ChatGlm3
            .parse(reply, &names(&["get_weather"]))
            .unwrap();
        assert_eq!(call.name, "get_weather");
        assert_eq!(call.arguments, r#"{"city":"北京","days":3,"metric":true}"#);
    }

    #[test]
    fn a_glm4_tool_call_reply_parses_and_renders_back() {
        let names = names(&["get_weather"]);
        let reply = "get_weather\n{\"city\": \"北京\", \"days\": 3}";
        let call = ToolFormat::Glm4.parse(reply, &names).unwrap();
        assert_eq!(call.name, "get_weather");
        assert_eq!(call.arguments, r#"{"city":"北京","days":3}"#);
        let rendered = ToolFormat::Glm4.render_call(&call.arguments).unwrap();
        assert_eq!(rendered, call.arguments);
        // Not calls: an unknown name, arguments that are not an object, plain text.
        assert_eq!(ToolFormat::Glm4.parse("search\n{}", &names), None);
        assert_eq!(ToolFormat::Glm4.parse("get_weather\n[1]", &names), None);
        assert_eq!(ToolFormat::Glm4.parse("get_weather\n{oops", &names), None);
        assert_eq!(ToolFormat::Glm4.parse("It is sunny.", &names), None);
        assert_eq!(ToolFormat::Glm4.render_call("[1]"), None);
    }

    #[test]
    fn literals_parse_as_python_reads_them() {
        let args = parse_tool_call(
            "tool_call(a=\"x\\ty\", b=-1.5e3, c=None, d=[1, (2, 3), {'k': 'v'},], e='it''s', f=0x_)",
        );
        assert_eq!(args, None, "0x_ is no literal");
        let args = parse_tool_call(
            "tool_call(a=\"x\\ty\", b=-1.5e3, c=None, d=[1, (2, 3), {'k': 'v'},], e='it' \"'s\",)",
        )
        .unwrap();
        assert_eq!(
            Value::Object(args).to_string(),
            r#"{"a":"x\ty","b":-1500.0,"c":null,"d":[1,[2,3],{"k":"v"}],"e":"it's"}"#
        );
        assert_eq!(parse_tool_call("tool_call()").unwrap().len(), 0);
        assert_eq!(
            parse_tool_call("  tool_call(\n  q='\\u00e9'\n)\n").unwrap()["q"],
            "é"
        );
    }

    #[test]
    fn anything_else_is_not_a_call() {
        for code in [
            "tool_call(a=1",
            "tool_call(a=1) + 1",
            "tool_calls(a=1)",
            "tool_call(1)",
            "tool_call(a=__import__('os'))",
            "tool_call(a='unterminated)",
            "print(a=1)",
            "",
        ] {
            assert_eq!(parse_tool_call(code), None, "{code}");
        }
        let deep = format!("tool_call(a={}{})", "[".repeat(100), "]".repeat(100));
        assert_eq!(parse_tool_call(&deep), None);
        let n = names(&["get_weather"]);
        // Unknown tool, no code block, unparsable code: plain content.
        assert_eq!(
            ToolFormat::ChatGlm3.parse("other\n```python\ntool_call()\n```", &n),
            None
        );
        assert_eq!(ToolFormat::ChatGlm3.parse("get_weather", &n), None);
        assert_eq!(
            ToolFormat::ChatGlm3.parse("get_weather\n```python\nrm -rf\n```", &n),
            None
        );
    }

    #[test]
    fn rendering_a_call_reads_back_the_same_arguments() {
        let args = r#"{"city":"Bei'jing","q":"a\"b'c\n","n":2,"f":0.5,"ok":false,"x":null,"l":[1,"2"],"m":{"k":[]}}"#;
        let text = ToolFormat::ChatGlm3.render_call(args).unwrap();
        assert!(text.starts_with("```python\ntool_call(city=\"Bei'jing\", q='a\"b\\'c\\n'"));
        let reply = format!("f\n{text}");
        let call = ToolFormat::ChatGlm3.parse(&reply, &names(&["f"])).unwrap();
        assert_eq!(call.arguments, args);
        assert_eq!(ToolFormat::ChatGlm3.render_call("[1]"), None);
    }

    #[test]
    fn the_filter_holds_a_possible_call_and_passes_content() {
        let tools = Some((ToolFormat::ChatGlm3, names(&["get_weather", "search"])));
        let mut f = ReplyFilter::new(tools.clone());
        assert_eq!(f.push("get_"), "");
        assert_eq!(f.push("weather\n```python\n"), "");
        assert_eq!(f.push("tool_call(city='Paris')\n```"), "");
        assert_eq!(
            f.finish(),
            ReplyEnd::Call(ToolCall {
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into()
            })
        );
        let mut f = ReplyFilter::new(tools.clone());
        assert_eq!(f.push("se"), "");
        assert_eq!(f.push("a"), "", "still a prefix of `search`");
        assert_eq!(f.push("s"), "seas");
        assert_eq!(f.push(" is blue"), " is blue");
        assert_eq!(f.finish(), ReplyEnd::Content(String::new()));
        let mut f = ReplyFilter::new(tools.clone());
        assert_eq!(f.push("search"), "");
        assert_eq!(f.finish(), ReplyEnd::Content("search".into()));
        let mut f = ReplyFilter::new(tools);
        assert_eq!(f.push("search\nnot code"), "");
        assert_eq!(f.finish(), ReplyEnd::Content("search\nnot code".into()));
        let mut f = ReplyFilter::new(None);
        assert_eq!(f.push("get_"), "get_");
    }
}
