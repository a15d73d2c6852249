//! ChatGLM-6B (v1) text rules around SentencePiece (THUDM/chatglm-6b `tokenization_chatglm.py`,
//! `SPTokenizer._preprocess` / `postprocess` and `ChatGLMTokenizer`; `modeling_chatglm.py`,
//! `chat` and `process_response`; blob sha1s in `../shared/golden-glm1/README.md`).
//!
//! - Encoding: the text is split on the five strings the Hugging Face tokenizer registers as
//!   special (`<sop>`, `<eop>`, `[MASK]`, `<pad>`, `<unk>`: each becomes its id); every other
//!   chunk has `\n` replaced by `<n>`, `\t` by `<|tab|>`, runs of 80 down to 2 spaces by
//!   `<|blank_N|>`, and is encoded by SentencePiece on its own (so each chunk gets a dummy
//!   prefix). `[gMASK] <sop>` go at the END of a prompt (the context comes first).
//! - Decoding: SentencePiece's decode of all ids, then `<n>`, `<|tab|>` and `<|blank_N|>` are
//!   turned back into text.

use super::{DecodeMode, PieceType, Spm};

/// The strings the v1 Hugging Face tokenizer splits off before SentencePiece sees the text
/// (its bos, eos, mask, pad and unk tokens; `[gMASK]` is not among them).
pub(crate) const REGISTERED: [&str; 5] = ["<sop>", "<eop>", "[MASK]", "<pad>", "<unk>"];

/// The text before the first registered string of `text`, and that string (one pass: every
/// registered string starts with `<` or `[`, and none is a prefix of another).
fn split_registered(text: &str) -> (&str, Option<&'static str>) {
    let mut from = 0;
    while let Some(at) = text[from..].find(['<', '[']).map(|i| from + i) {
        if let Some(s) = REGISTERED.iter().find(|s| text[at..].starts_with(**s)) {
            return (&text[..at], Some(s));
        }
        from = at + 1;
    }
    (text, None)
}

/// Longest run of spaces one `<|blank_N|>` piece stands for.
const MAX_BLANK: usize = 80;

/// `<n>`: a newline.
const NEWLINE: &str = "<n>";

/// `<|tab|>`: a tab.
const TAB: &str = "<|tab|>";

/// `SPTokenizer._preprocess`: newlines, tabs and runs of spaces to their pieces.
pub(crate) fn preprocess(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                out.push_str(NEWLINE);
                i += 1;
            }
            b'\t' => {
                out.push_str(TAB);
                i += 1;
            }
            b' ' => {
                let run = bytes[i..].iter().take_while(|&&b| b == b' ').count();
                // Python replaces runs of 80 first, then 79, ...: a run of n spaces becomes
                // n / 80 blanks of 80 and one piece (or a plain space) for the rest.
                for _ in 0..run / MAX_BLANK {
                    out.push_str("<|blank_80|>");
                }
                match run % MAX_BLANK {
                    0 => {}
                    1 => out.push(' '),
                    r => {
                        out.push_str("<|blank_");
                        out.push_str(&r.to_string());
                        out.push_str("|>");
                    }
                }
                i += run;
            }
            _ => {
                // Copy up to the next byte of interest (all ASCII, so a char boundary).
                let end = bytes[i..]
                    .iter()
                    .position(|b| matches!(b, b'\n' | b'\t' | b' '))
                    .map_or(bytes.len(), |n| i + n);
                out.push_str(&text[i..end]);
                i = end;
            }
        }
    }
}

/// `SPTokenizer.postprocess`: `<n>`, `<|tab|>` and `<|blank_N|>` (N = 2..=80) back to text.
/// Python replaces one kind after the other on the whole string; the replacements cannot
/// create or break one another's patterns, so one left-to-right pass gives the same text.
pub(crate) fn postprocess(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('<') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match pattern_at(rest) {
            Some((len, Replacement::Text(s))) => {
                out.push_str(s);
                rest = &rest[len..];
            }
            Some((len, Replacement::Spaces(n))) => {
                out.extend(std::iter::repeat_n(' ', n));
                rest = &rest[len..];
            }
            None => {
                out.push('<');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// What a pattern stands for.
enum Replacement {
    Text(&'static str),
    Spaces(usize),
}

/// The pattern at the start of `s` (which starts with `<`), with its length.
fn pattern_at(s: &str) -> Option<(usize, Replacement)> {
    if s.starts_with(NEWLINE) {
        return Some((NEWLINE.len(), Replacement::Text("\n")));
    }
    if s.starts_with(TAB) {
        return Some((TAB.len(), Replacement::Text("\t")));
    }
    let digits = s.strip_prefix("<|blank_")?;
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    if !(1..=2).contains(&n) || !digits[n..].starts_with("|>") || digits.starts_with('0') {
        return None;
    }
    let count: usize = digits[..n].parse().ok()?;
    (2..=MAX_BLANK)
        .contains(&count)
        .then_some(("<|blank_".len() + n + 2, Replacement::Spaces(count)))
}

/// The length of the longest suffix of `s` that could still grow into a pattern: text a
/// streaming decoder must hold back before [`postprocess`] can decide it.
pub(crate) fn undecided_suffix(s: &str) -> usize {
    let Some(at) = s.rfind('<') else { return 0 };
    let tail = &s[at..];
    let could_grow = [NEWLINE, TAB]
        .iter()
        .any(|p| p.len() > tail.len() && p.starts_with(tail))
        || could_be_blank(tail);
    if could_grow {
        tail.len()
    } else {
        0
    }
}

/// Whether `tail` is a proper prefix of some `<|blank_N|>`.
fn could_be_blank(tail: &str) -> bool {
    const HEAD: &str = "<|blank_";
    if tail.len() <= HEAD.len() {
        return HEAD.starts_with(tail);
    }
    let Some(rest) = tail.strip_prefix(HEAD) else {
        return false;
    };
    let n = rest.bytes().take_while(u8::is_ascii_digit).count();
    let after = &rest[n..];
    if n > 2 || rest.starts_with('0') || !"|>".starts_with(after) || after.len() == 2 {
        return false;
    }
    // Digits so far can still name 2..=80: one digit (any but 0), or two digits <= 80.
    n == 0 || rest[..n].parse::<usize>().is_ok_and(|v| v <= MAX_BLANK)
}

/// The prompt of ChatGLM-6B's `chat(query, history)`: the query alone without history, else
/// `[Round {i}]\n问：{q}\n答：{a}\n` per past round (from 0), then `[Round {n}]\n问：{query}\n答：`.
/// The ids are `encode(prompt)` followed by `[gMASK] <sop>`.
pub fn chatglm1_prompt(query: &str, history: &[(String, String)]) -> String {
    if history.is_empty() {
        return query.to_owned();
    }
    let mut prompt = String::new();
    for (i, (q, a)) in history.iter().enumerate() {
        prompt.push_str(&format!("[Round {i}]\n问：{q}\n答：{a}\n"));
    }
    prompt.push_str(&format!("[Round {}]\n问：{query}\n答：", history.len()));
    prompt
}

/// ChatGLM-6B's `process_response`: the reply stripped, `[[训练时间]]` replaced by `2023年`, and
/// the ASCII punctuation `, ! : ; ?` next to a CJK character turned into its full-width form.
pub fn chatglm1_process_response(text: &str) -> String {
    // Python's str.strip(): Unicode whitespace plus the separators U+001C..U+001F.
    let strip = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    let mut response = text.trim_matches(strip).replace("[[训练时间]]", "2023年");
    for (half, full) in [
        (',', '，'),
        ('!', '！'),
        (':', '：'),
        (';', '；'),
        ('?', '？'),
    ] {
        // re.sub(r"([\u4e00-\u9fff])%s" % half, r"\1%s" % full, response), then
        // re.sub(r"%s([\u4e00-\u9fff])" % half, r"%s\1" % full, response).
        response = replace_after_cjk(&response, half, full);
        response = replace_before_cjk(&response, half, full);
    }
    response
}

fn is_cjk(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

/// `re.sub("([CJK])half", "\1full")`: non-overlapping matches, left to right.
fn replace_after_cjk(s: &str, half: char, full: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if is_cjk(c) && chars.peek() == Some(&half) {
            chars.next();
            out.push(full);
        }
    }
    out
}

/// `re.sub("half([CJK])", "full\1")`: non-overlapping matches, left to right.
fn replace_before_cjk(s: &str, half: char, full: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match chars.peek() {
            Some(&next) if c == half && is_cjk(next) => {
                out.push(full);
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

impl Spm {
    /// The v1 Hugging Face `encode(text, add_special_tokens=False)`: registered specials split
    /// off, every chunk preprocessed and encoded on its own.
    pub(crate) fn encode_glm1_into(&self, text: &str, out: &mut Vec<u32>) {
        let mut chunk = String::new();
        let mut rest = text;
        loop {
            let (plain, special) = split_registered(rest);
            if !plain.is_empty() {
                chunk.clear();
                preprocess(plain, &mut chunk);
                self.encode_sentencepiece_into(&chunk, out);
            }
            let Some(s) = special else { break };
            // A registered string that is not a piece of this model is encoded as text.
            match self.vocab.piece_to_id(s.as_bytes()) {
                Some(id) => out.push(id),
                None => {
                    chunk.clear();
                    preprocess(s, &mut chunk);
                    self.encode_sentencepiece_into(&chunk, out);
                }
            }
            rest = &rest[plain.len() + s.len()..];
        }
    }

    /// [`Tokenizer::encode_ordinary`] for ChatGLM-6B: the whole text preprocessed and encoded
    /// by SentencePiece, registered specials included as text.
    pub(crate) fn encode_glm1_ordinary_into(&self, text: &str, out: &mut Vec<u32>) {
        let mut chunk = String::new();
        preprocess(text, &mut chunk);
        self.encode_sentencepiece_into(&chunk, out);
    }

    /// Whether `id` is dropped by the v1 tokenizer's `decode(skip_special_tokens=True)`: its
    /// bos, eos, mask, pad and unk ids (not `[gMASK]`).
    pub(crate) fn glm1_skips(&self, id: u32) -> bool {
        let s = self.vocab.specials;
        id == s.sop
            || id == s.eop
            || id == s.mask
            || Some(id) == self.pad_id
            || self.vocab.kind(id) == PieceType::Unknown
    }

    /// Whether decoding in `mode` applies [`postprocess`] (the Hugging Face decodes do; plain
    /// SentencePiece decoding does not).
    pub(crate) fn glm1_postprocesses(&self, mode: DecodeMode) -> bool {
        self.glm1 && mode != DecodeMode::SentencePiece
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(s: &str) -> String {
        let mut out = String::new();
        preprocess(s, &mut out);
        out
    }

    #[test]
    fn preprocess_matches_python_replacement_order() {
        assert_eq!(pre("a  b"), "a<|blank_2|>b");
        assert_eq!(pre("a b"), "a b");
        assert_eq!(pre(&" ".repeat(81)), "<|blank_80|> ");
        assert_eq!(pre(&" ".repeat(160)), "<|blank_80|><|blank_80|>");
        assert_eq!(pre(&" ".repeat(162)), "<|blank_80|><|blank_80|><|blank_2|>");
        assert_eq!(pre("x\n\ty"), "x<n><|tab|>y");
        assert_eq!(pre("中 文"), "中 文");
    }

    #[test]
    fn postprocess_inverts_preprocess() {
        for s in ["a  b", "\n\t \t", &" ".repeat(163), "x\n\n  y\t"] {
            assert_eq!(postprocess(&pre(s)), s, "{s:?}");
        }
    }

    #[test]
    fn postprocess_equals_sequential_replacement() {
        for s in [
            "<n> <|blank_81|> <|blank_1|> <|blank_02|> <|blank_80|>",
            "<<n>n>",
            "<|tab<n>|>",
        ] {
            let mut want = s.replace("<n>", "\n").replace("<|tab|>", "\t");
            for i in 2..=80 {
                want = want.replace(&format!("<|blank_{i}|>"), &" ".repeat(i));
            }
            assert_eq!(postprocess(s), want, "{s:?}");
        }
    }

    #[test]
    fn undecided_suffixes() {
        for (s, n) in [
            ("ab<", 1),
            ("ab<n", 2),
            ("ab<n>", 0),
            ("<|ta", 4),
            ("<|blank_", 8),
            ("<|blank_8", 9),
            ("<|blank_80", 10),
            ("<|blank_80|", 11),
            ("<|blank_81", 0),
            ("<|blank_0", 0),
            ("<|blank_123", 0),
            ("<x", 0),
            ("plain", 0),
        ] {
            assert_eq!(undecided_suffix(s), n, "{s:?}");
        }
    }

    #[test]
    fn process_response_punctuation() {
        assert_eq!(
            chatglm1_process_response("  你好,世界!ok, fine "),
            "你好，世界！ok, fine"
        );
        assert_eq!(chatglm1_process_response("[[训练时间]]"), "2023年");
        assert_eq!(chatglm1_process_response("a,中"), "a，中");
    }

    #[test]
    fn chat_prompt_rounds_from_zero() {
        assert_eq!(chatglm1_prompt("q", &[]), "q");
        let h = [("a".to_owned(), "b".to_owned())];
        assert_eq!(
            chatglm1_prompt("q", &h),
            "[Round 0]\n问：a\n答：b\n[Round 1]\n问：q\n答："
        );
    }
}
