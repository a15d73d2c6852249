//! GLM-4's byte-level BPE tokenizer (tiktoken style): a regex splits the text into pieces,
//! each piece is merged from single bytes by rank, and the special tokens follow the ranks.
//!
//! Reference: THUDM glm-4-9b-chat `tokenization_chatglm.py` (`ChatGLM4Tokenizer`, git blob
//! ac01655c1b), which builds `tiktoken.Encoding(pat_str, mergeable_ranks, special_tokens={})`;
//! tiktoken's merge rule is `_byte_pair_merge` in openai/tiktoken `src/lib.rs`. Hugging Face
//! first splits the text on the added (special) tokens, so a special-token string anywhere in
//! a text becomes its id.
//!
//! `tokenizer.model` holds one `base64(bytes) rank` line per ordinary token; rank = id.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::path::Path;

use super::matcher::PrefixMatcher;
use super::vocab::{FxHasher, RoleIds, SpecialIds};
use super::{DecodeMode, Family, PieceType, TokenizerError, VocabError};

/// GLM-4's pre-tokenizer pattern (Python `regex` / tiktoken syntax), from
/// `ChatGLM4Tokenizer.__init__`; llama.cpp calls it `chatglm-bpe`.
pub const GLM4_PRE_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// [`GLM4_PRE_PATTERN`] without its one lookahead: the last two alternatives `\s+(?!\S)|\s+`
/// become `\s+`, and [`Splitter`] gives the lookahead's effect back by hand.
///
/// Why not a backtracking engine (fancy-regex, as tiktoken itself uses): its backtrack limit
/// turns long whitespace runs into errors and its worst case is not linear, while this
/// project's tokenizer must take hostile inputs (megabytes of one character) in linear time.
/// The `regex` crate (the engine fancy-regex delegates to, so the same Unicode tables for
/// `\p{L}`, `\p{N}` and `\s`) searches in linear time, and the lookahead's effect is one rule:
/// a whitespace run matched by the final `\s+` that is followed by a non-space character and is
/// longer than one character gives its last character back (`\s+(?!\S)` backtracks by exactly
/// one; a single character falls through to `\s+`). Such a run is recognisable from the match
/// alone: no other alternative matches only whitespace without ending in `\r` or `\n`.
const SPLIT_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+";

/// Splits text into pre-tokenizer pieces exactly as [`GLM4_PRE_PATTERN`] does.
#[derive(Debug, Clone)]
struct Splitter(regex::Regex);

impl Splitter {
    fn new() -> Self {
        // The pattern is a constant that the tests compile; failing here is a bug.
        Self(regex::Regex::new(SPLIT_PATTERN).expect("the split pattern compiles"))
    }

    /// Calls `f` on each piece of `text`, in order; the pieces concatenate to `text`.
    fn for_each<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) {
        let mut at = 0;
        while at < text.len() {
            let Some(m) = self.0.find_at(text, at) else {
                // Every character matches some alternative; kept total for safety.
                f(&text[at..]);
                return;
            };
            let (start, mut end) = (m.start(), m.end());
            if start > at {
                f(&text[at..start]);
            }
            let piece = &text[start..end];
            let trailing_ws = end < text.len()
                && piece.chars().all(char::is_whitespace)
                && !piece.ends_with(['\r', '\n']);
            if trailing_ws {
                // `\s+(?!\S)`: give the last character back to the next piece.
                if let Some((i, _)) = piece.char_indices().last().filter(|&(i, _)| i > 0) {
                    end = start + i;
                }
            }
            f(&text[start..end]);
            at = end;
        }
    }
}

/// GPT-2's byte-to-unicode map (`bytes_to_unicode` of openai/gpt-2 `src/encoder.py`): the
/// printable bytes `!`..`~`, 0xA1..0xAC and 0xAE..0xFF stand for themselves, the other 68 bytes
/// for U+0100 upwards in byte order. GGUF stores byte-level tokens in this spelling.
fn byte_to_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
    if printable(b) {
        char::from(b)
    } else {
        let n = (0..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + n).unwrap_or('\u{fffd}')
    }
}

/// The GPT-2 spelling of a byte string (how GGUF stores a byte-level token).
pub fn gpt2_spelling(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_to_char(b)).collect()
}

/// The bytes of a GPT-2-spelled string, `None` if a character is not in the map.
pub fn gpt2_bytes(s: &str) -> Option<Vec<u8>> {
    static TABLE: std::sync::OnceLock<HashMap<char, u8>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| (0..=255u8).map(|b| (byte_to_char(b), b)).collect());
    s.chars().map(|c| table.get(&c).copied()).collect()
}

/// Decodes standard base64 (with `=` padding), `None` if malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (i, quad) in s.chunks_exact(4).enumerate() {
        let last = i == s.len() / 4 - 1;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// Parses a tiktoken `tokenizer.model`: `base64(bytes) rank` per line, ranks 0, 1, 2, ... in
/// order. Returns the bytes of each rank.
pub(crate) fn parse_tiktoken(text: &str) -> Result<Vec<Vec<u8>>, TokenizerError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |what: String| TokenizerError::Tiktoken { line: i + 1, what };
        let (b64, rank) = line
            .split_once(' ')
            .ok_or_else(|| bad("expected `base64 rank`".to_owned()))?;
        let bytes = base64_decode(b64).ok_or_else(|| bad(format!("bad base64 {b64:?}")))?;
        let rank: usize = rank
            .trim()
            .parse()
            .map_err(|_| bad(format!("bad rank {rank:?}")))?;
        if rank != out.len() {
            return Err(bad(format!("rank {rank}, expected {}", out.len())));
        }
        if bytes.is_empty() {
            return Err(bad("empty token".to_owned()));
        }
        out.push(bytes);
    }
    Ok(out)
}

/// Everything a byte-level tokenizer is built from, as plain data (what a GGUF file stores in
/// llama.cpp's `gpt2` layout).
#[derive(Debug, Clone, PartialEq)]
pub struct ByteLevelParts {
    /// Text of every id: ordinary tokens in GPT-2's byte-to-unicode spelling (their rank is
    /// their id), the special tokens as their text, padding as `[PAD{id}]`.
    pub tokens: Vec<String>,
    /// Type of every id: normal for ordinary tokens, control for specials, unused for padding.
    pub types: Vec<PieceType>,
    /// End-of-text id (`<|endoftext|>`).
    pub eos_id: Option<u32>,
    /// Padding id.
    pub pad_id: Option<u32>,
    /// The model family (GLM-4).
    pub family: Family,
}

impl ByteLevelParts {
    /// The vocabulary of a tiktoken `tokenizer.model` (`text`) with the special tokens
    /// `specials` (text and id; every id at or above the number of ranks), padded with
    /// `[PAD{id}]` to `padded_vocab_size` when that is larger.
    pub fn from_tiktoken(
        text: &str,
        specials: &[(String, u32)],
        padded_vocab_size: Option<usize>,
        family: Family,
    ) -> Result<Self, TokenizerError> {
        let ranks = parse_tiktoken(text)?;
        let n = ranks.len();
        let max_special = specials.iter().map(|&(_, id)| id as usize + 1).max();
        let size = max_special
            .unwrap_or(n)
            .max(n)
            .max(padded_vocab_size.unwrap_or(0));
        if size > u32::MAX as usize / 2 {
            return Err(VocabError::TooManyTokens {
                tokens: size,
                max: u32::MAX as usize / 2,
            }
            .into());
        }
        let mut tokens: Vec<String> = ranks.iter().map(|b| gpt2_spelling(b)).collect();
        let mut types = vec![PieceType::Normal; n];
        tokens.extend((n..size).map(|id| format!("[PAD{id}]")));
        types.resize(size, PieceType::Unused);
        for (text, id) in specials {
            let id = *id as usize;
            if id < n || types[id] != PieceType::Unused {
                return Err(VocabError::ByteLevel(format!(
                    "special token {text:?} has id {id}, which is taken (ranks end at {n})"
                ))
                .into());
            }
            tokens[id] = text.clone();
            types[id] = PieceType::Control;
        }
        if let Some(padded) = padded_vocab_size.filter(|&p| p < size) {
            return Err(VocabError::PaddedTooSmall {
                padded,
                tokens: size,
            }
            .into());
        }
        let find = |name: &str| specials.iter().find(|(t, _)| t == name).map(|&(_, id)| id);
        Ok(Self {
            eos_id: find("<|endoftext|>"),
            pad_id: find("<|endoftext|>"),
            tokens,
            types,
            family,
        })
    }

    /// The GLM-4 special tokens of [`Family::special_tokens`] at ids `n`, `n + 1`, ... after
    /// the `n` ranks of `text` (the layout of glm-4-9b-chat).
    pub fn glm4_from_tiktoken(
        text: &str,
        padded_vocab_size: Option<usize>,
    ) -> Result<Self, TokenizerError> {
        let n = parse_tiktoken(text)?.len() as u32;
        let specials: Vec<(String, u32)> = Family::Glm4
            .special_tokens()
            .iter()
            .zip(n..)
            .map(|(t, id)| ((*t).to_owned(), id))
            .collect();
        Self::from_tiktoken(text, &specials, padded_vocab_size, Family::Glm4)
    }

    /// llama.cpp's merges for the ordinary tokens, in rank order: for every token longer than
    /// one byte, the parts rank BPE makes of it using only lower ranks, GPT-2-spelled and
    /// joined by spaces (ggml-org/llama.cpp `convert_hf_to_gguf.py`, `ChatGLMModel.bpe` with
    /// `max_rank`).
    pub fn merges(&self) -> Vec<String> {
        let ranks: HashMap<Vec<u8>, u32> = self
            .tokens
            .iter()
            .zip(&self.types)
            .enumerate()
            .filter(|(_, (_, &t))| t == PieceType::Normal)
            .filter_map(|(id, (tok, _))| Some((gpt2_bytes(tok)?, id as u32)))
            .collect();
        let mut out = Vec::new();
        for (id, (tok, &ty)) in self.tokens.iter().zip(&self.types).enumerate() {
            let Some(bytes) = gpt2_bytes(tok).filter(|b| ty == PieceType::Normal && b.len() > 1)
            else {
                continue;
            };
            let mut parts: Vec<Vec<u8>> = bytes.iter().map(|&b| vec![b]).collect();
            loop {
                let best = (0..parts.len().saturating_sub(1))
                    .filter_map(|i| {
                        let joined = [parts[i].as_slice(), &parts[i + 1]].concat();
                        ranks.get(&joined).map(|&r| (r, i))
                    })
                    .filter(|&(r, _)| r < id as u32)
                    .min();
                let Some((_, i)) = best else { break };
                let right = parts.remove(i + 1);
                parts[i].extend(right);
            }
            let spelled: Vec<String> = parts.iter().map(|p| gpt2_spelling(p)).collect();
            out.push(spelled.join(" "));
        }
        out
    }
}

/// The longest special token accepted, in bytes: matching special tokens costs up to this
/// much per text position, so a hostile vocabulary cannot make encoding quadratic (GLM-4's
/// longest, `<|begin_of_video|>`, has 18).
pub const MAX_SPECIAL_LEN: usize = 256;

type ByteMap = HashMap<Box<[u8]>, u32, BuildHasherDefault<FxHasher>>;

/// A byte-level BPE tokenizer (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct ByteLevel {
    /// Token text of every id, as [`ByteLevelParts::tokens`].
    pub(crate) pieces: Vec<String>,
    pub(crate) kinds: Vec<PieceType>,
    /// Bytes of every ordinary id (empty for the others).
    bytes: Vec<Box<[u8]>>,
    /// Bytes -> rank (= id).
    ranks: ByteMap,
    /// Length in bytes of the longest ordinary token.
    max_len: usize,
    /// Rank of every single byte.
    byte_ids: [u32; 256],
    /// The special tokens: text -> id, and a trie over their texts.
    specials: HashMap<String, u32>,
    special_matcher: PrefixMatcher,
    pub(crate) special_ids: SpecialIds,
    pub(crate) eos_id: Option<u32>,
    pub(crate) pad_id: Option<u32>,
    /// Number of ordinary tokens.
    pub(crate) num_ranks: usize,
    splitter: Splitter,
}

impl ByteLevel {
    pub(crate) fn new(parts: ByteLevelParts) -> Result<Self, TokenizerError> {
        let ByteLevelParts {
            tokens,
            types,
            eos_id,
            pad_id,
            family,
        } = parts;
        let bad = |what: String| -> TokenizerError { VocabError::ByteLevel(what).into() };
        if tokens.len() != types.len() {
            return Err(VocabError::LengthMismatch {
                tokens: tokens.len(),
                scores: tokens.len(),
                types: types.len(),
            }
            .into());
        }
        if tokens.len() > u32::MAX as usize / 2 {
            return Err(VocabError::TooManyTokens {
                tokens: tokens.len(),
                max: u32::MAX as usize / 2,
            }
            .into());
        }
        let mut bytes = Vec::with_capacity(tokens.len());
        let mut ranks = ByteMap::default();
        let mut specials = HashMap::new();
        let mut num_ranks = 0;
        for (id, (tok, &ty)) in tokens.iter().zip(&types).enumerate() {
            match ty {
                PieceType::Normal => {
                    let b = gpt2_bytes(tok).filter(|b| !b.is_empty()).ok_or_else(|| {
                        bad(format!("token {id} {tok:?} is not GPT-2-spelled bytes"))
                    })?;
                    if ranks
                        .insert(b.clone().into_boxed_slice(), id as u32)
                        .is_some()
                    {
                        return Err(bad(format!("token {id} {tok:?} appears twice")));
                    }
                    bytes.push(b.into_boxed_slice());
                    num_ranks = id + 1;
                }
                PieceType::Control | PieceType::UserDefined => {
                    if tok.len() > MAX_SPECIAL_LEN {
                        return Err(bad(format!(
                            "special token {id} is {} bytes long (at most {MAX_SPECIAL_LEN})",
                            tok.len()
                        )));
                    }
                    if !tok.is_empty() && specials.insert(tok.clone(), id as u32).is_some() {
                        return Err(bad(format!("special token {id} {tok:?} appears twice")));
                    }
                    bytes.push(Box::default());
                }
                _ => bytes.push(Box::default()),
            }
        }
        let mut byte_ids = [0u32; 256];
        for b in 0..=255u8 {
            byte_ids[b as usize] = *ranks
                .get(&[b][..])
                .ok_or_else(|| bad(format!("no token for the byte 0x{b:02x}")))?;
        }
        let max_len = bytes.iter().map(|b| b.len()).max().unwrap_or(1);
        let id_of = |name: &str| -> Result<u32, TokenizerError> {
            specials
                .get(name)
                .copied()
                .ok_or_else(|| bad(format!("the special token {name} is missing")))
        };
        let special_ids = match family {
            Family::Glm4 => SpecialIds {
                mask: id_of("[MASK]")?,
                gmask: id_of("[gMASK]")?,
                smask: id_of("[sMASK]")?,
                sop: id_of("<sop>")?,
                eop: id_of("<eop>")?,
                roles: Some(RoleIds {
                    system: id_of("<|system|>")?,
                    user: id_of("<|user|>")?,
                    assistant: id_of("<|assistant|>")?,
                    observation: id_of("<|observation|>")?,
                }),
            },
            other => {
                return Err(bad(format!(
                    "the {other} family has a SentencePiece vocabulary, not a byte-level one"
                )))
            }
        };
        for (name, id) in [("eos", eos_id), ("pad", pad_id)] {
            if let Some(id) = id.filter(|&id| id as usize >= tokens.len()) {
                return Err(VocabError::IdOutOfRange {
                    name,
                    id,
                    vocab_size: tokens.len(),
                }
                .into());
            }
        }
        // Of two specials starting at one place the longer wins (as the Hugging Face trie does).
        let special_matcher = PrefixMatcher::new(specials.keys().map(String::as_str));
        Ok(Self {
            pieces: tokens,
            kinds: types,
            bytes,
            ranks,
            max_len,
            byte_ids,
            specials,
            special_matcher,
            special_ids,
            eos_id,
            pad_id,
            num_ranks,
            splitter: Splitter::new(),
        })
    }

    /// Reads a tiktoken `tokenizer.model` with the GLM-4 special tokens after its ranks.
    pub(crate) fn from_tiktoken_file(path: &Path) -> Result<Self, TokenizerError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(ByteLevelParts::glm4_from_tiktoken(&text, None)?)
    }

    /// The id of a token text (GPT-2 spelling for ordinary tokens).
    pub(crate) fn piece_to_id(&self, piece: &str) -> Option<u32> {
        if let Some(&id) = self.specials.get(piece) {
            return Some(id);
        }
        let bytes = gpt2_bytes(piece)?;
        self.ranks.get(bytes.as_slice()).copied()
    }

    /// The (longest) special token starting at the beginning of `text`: its length and id.
    fn special_at(&self, text: &str) -> Option<(usize, u32)> {
        let len = self.special_matcher.longest_match(text.as_bytes())?;
        let id = *self.specials.get(text.get(..len)?)?;
        Some((len, id))
    }

    /// Appends the ids of `text`; with `specials`, special-token strings become their ids (as
    /// the Hugging Face tokenizer's `encode`), otherwise they are plain text (tiktoken's
    /// `encode(text, disallowed_special=())`).
    pub(crate) fn encode_into(&self, text: &str, specials: bool, out: &mut Vec<u32>) {
        if !specials || self.specials.is_empty() {
            self.encode_ordinary(text, out);
            return;
        }
        let mut chunk_start = 0;
        let mut i = 0;
        while i < text.len() {
            // A special token starts with a whole character, so only char boundaries can match.
            if let Some((len, id)) = text.get(i..).and_then(|rest| self.special_at(rest)) {
                self.encode_ordinary(&text[chunk_start..i], out);
                out.push(id);
                i += len;
                chunk_start = i;
                continue;
            }
            i += 1;
        }
        self.encode_ordinary(&text[chunk_start..], out);
    }

    /// tiktoken's `encode_ordinary`: split, then rank BPE on each piece.
    fn encode_ordinary(&self, text: &str, out: &mut Vec<u32>) {
        self.splitter.for_each(text, |piece| {
            let piece = piece.as_bytes();
            match self.ranks.get(piece) {
                Some(&id) => out.push(id),
                None => self.merge(piece, out),
            }
        });
    }

    /// Rank BPE of one piece: start from single bytes and repeatedly merge the adjacent pair
    /// whose concatenation has the lowest rank, leftmost on ties, until no adjacent pair's
    /// concatenation is a token (tiktoken's `_byte_pair_merge`). A heap of candidate pairs
    /// (stale entries skipped when popped) makes it O(n log n) rather than tiktoken's O(n^2).
    fn merge(&self, piece: &[u8], out: &mut Vec<u32>) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let n = piece.len();
        // Parts are named by their start offset; part `s` spans `s..next[s]`.
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        let rank_of = |s: usize, e: usize| -> Option<u32> {
            if e - s > self.max_len {
                return None;
            }
            self.ranks.get(&piece[s..e]).copied()
        };
        let push = |heap: &mut BinaryHeap<_>, s: usize, mid: usize, e: usize| {
            if let Some(r) = rank_of(s, e) {
                heap.push(Reverse((r, s, mid, e)));
            }
        };
        for s in 0..n.saturating_sub(1) {
            push(&mut heap, s, s + 1, s + 2);
        }
        while let Some(Reverse((_, s, mid, e))) = heap.pop() {
            let valid = alive[s] && next[s] == mid && mid < n && alive[mid] && next[mid] == e;
            if !valid {
                continue;
            }
            alive[mid] = false;
            next[s] = e;
            if e < n {
                prev[e] = s;
            }
            let p = prev[s];
            if p != usize::MAX {
                push(&mut heap, p, s, e);
            }
            if e < n {
                push(&mut heap, s, e, next[e]);
            }
        }
        let mut s = 0;
        while s < n {
            let e = next[s];
            // Every part is a token: single bytes always are, merged parts were looked up.
            out.push(match rank_of(s, e) {
                Some(id) => id,
                None => self.byte_ids[piece[s] as usize],
            });
            s = e;
        }
    }

    /// What `id` contributes when decoding.
    pub(crate) fn classify(&self, id: u32, mode: DecodeMode) -> Result<Token<'_>, TokenizerError> {
        let i = id as usize;
        let kind = *self.kinds.get(i).ok_or(TokenizerError::IdOutOfRange {
            id,
            vocab_size: self.pieces.len(),
        })?;
        Ok(match kind {
            PieceType::Normal => Token::Bytes(&self.bytes[i]),
            PieceType::Control | PieceType::UserDefined => match mode {
                DecodeMode::RenderSpecial => Token::Special(&self.pieces[i]),
                DecodeMode::SkipSpecial => Token::Nothing,
                DecodeMode::SentencePiece => {
                    return Err(TokenizerError::IdOutOfRange {
                        id,
                        vocab_size: self.num_ranks,
                    })
                }
            },
            _ => Token::Nothing,
        })
    }

    /// Decodes as the Hugging Face tokenizer: the bytes of consecutive ordinary ids as UTF-8
    /// with replacement; with [`DecodeMode::RenderSpecial`], the special tokens as their text
    /// and all runs joined by one space.
    pub(crate) fn decode(&self, ids: &[u32], mode: DecodeMode) -> Result<String, TokenizerError> {
        let mut runs: Vec<String> = Vec::new();
        let mut bytes = Vec::new();
        for &id in ids {
            match self.classify(id, mode)? {
                Token::Bytes(b) => bytes.extend_from_slice(b),
                Token::Special(s) => {
                    if !bytes.is_empty() {
                        runs.push(String::from_utf8_lossy(&bytes).into_owned());
                        bytes.clear();
                    }
                    runs.push(s.to_owned());
                }
                Token::Nothing => {}
            }
        }
        if !bytes.is_empty() {
            runs.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        Ok(runs.join(" "))
    }
}

/// What one id contributes to the text.
pub(crate) enum Token<'a> {
    /// Bytes of an ordinary token.
    Bytes(&'a [u8]),
    /// A rendered special token.
    Special(&'a str),
    /// Nothing (a skipped special token, padding).
    Nothing,
}

/// The incremental form of [`ByteLevel::decode`].
#[derive(Debug, Clone, Default)]
pub(crate) struct ByteStream {
    /// Bytes of the current run not yet turned into characters.
    pending: Vec<u8>,
    /// Whether a run (text or special) has been produced: the next run starts with a space.
    any_run: bool,
    /// Whether the current text run has started.
    in_run: bool,
    /// Whether the current text run still owes its leading separator.
    owe_space: bool,
}

impl ByteStream {
    pub(crate) fn push(&mut self, token: Token<'_>, out: &mut String) {
        match token {
            Token::Bytes(b) => {
                if !self.in_run {
                    self.in_run = true;
                    self.owe_space = self.any_run;
                    self.any_run = true;
                }
                self.pending.extend_from_slice(b);
                self.drain(false, out);
            }
            Token::Special(s) => {
                self.drain(true, out);
                self.in_run = false;
                if self.any_run {
                    out.push(' ');
                }
                out.push_str(s);
                self.any_run = true;
            }
            Token::Nothing => {}
        }
    }

    /// Ends the text: what is still held (an incomplete character as U+FFFD).
    pub(crate) fn finish(&mut self, out: &mut String) {
        self.drain(true, out);
        *self = Self::default();
    }

    /// Moves the decided characters of `pending` to `out` (all of them when `last`).
    fn drain(&mut self, last: bool, out: &mut String) {
        let mut used = 0;
        let mut text = String::new();
        loop {
            let rest = &self.pending[used..];
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    text.push_str(s);
                    used = self.pending.len();
                    break;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    text.push_str(std::str::from_utf8(&rest[..good]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            text.push('\u{fffd}');
                            used += good + bad;
                        }
                        None if last => {
                            text.push('\u{fffd}');
                            used = self.pending.len();
                            break;
                        }
                        None => {
                            used += good;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..used);
        if !text.is_empty() {
            if self.owe_space {
                out.push(' ');
                self.owe_space = false;
            }
            out.push_str(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(base64_decode("IQ==").unwrap(), b"!");
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVs").unwrap(), b"hel");
        assert_eq!(base64_decode("aGVsbA==").unwrap(), b"hell");
        assert!(base64_decode("aGV").is_none());
        assert!(base64_decode("a=Vs").is_none());
        assert!(base64_decode("aG*s").is_none());
    }

    #[test]
    fn gpt2_spelling_is_a_bijection() {
        let all: Vec<u8> = (0..=255).collect();
        let s = gpt2_spelling(&all);
        assert_eq!(s.chars().count(), 256);
        assert_eq!(gpt2_bytes(&s).unwrap(), all);
        assert_eq!(gpt2_spelling(b" "), "\u{120}");
        assert_eq!(gpt2_spelling(b"\n"), "\u{10a}");
        assert_eq!(gpt2_spelling(b"a"), "a");
        assert_eq!(gpt2_bytes("\u{3000}"), None);
    }

    /// tiktoken's `_byte_pair_merge` as written: rescan for the lowest-ranked pair, merge it,
    /// repeat (quadratic; the slow twin of [`ByteLevel::merge`]).
    fn merge_naive(b: &ByteLevel, piece: &[u8]) -> Vec<u32> {
        let mut parts: Vec<Vec<u8>> = piece.iter().map(|&x| vec![x]).collect();
        loop {
            let best = (0..parts.len().saturating_sub(1))
                .filter_map(|i| {
                    let joined = [parts[i].as_slice(), &parts[i + 1]].concat();
                    b.ranks.get(joined.as_slice()).map(|&r| (r, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let right = parts.remove(i + 1);
            parts[i].extend(right);
        }
        parts.iter().map(|p| b.ranks[p.as_slice()]).collect()
    }

    fn golden() -> ByteLevel {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/golden-glm4/tokenizer.model"
        );
        ByteLevel::from_tiktoken_file(Path::new(path)).unwrap()
    }

    #[test]
    fn heap_merge_equals_the_naive_merge() {
        let b = golden();
        let alphabet: Vec<char> = "aaabbbeeinnorsttt  ,.!?的一是了你好😀\n\t'1234"
            .chars()
            .collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in (1..40).chain([200, 1000]) {
            for _ in 0..20 {
                let s: String = (0..len)
                    .map(|_| alphabet[next() as usize % alphabet.len()])
                    .collect();
                let mut fast = Vec::new();
                b.merge(s.as_bytes(), &mut fast);
                assert_eq!(fast, merge_naive(&b, s.as_bytes()), "{s:?}");
            }
        }
        // Runs of one byte: ties everywhere, leftmost first.
        for n in 1..70 {
            let s = "a".repeat(n);
            let mut fast = Vec::new();
            b.merge(s.as_bytes(), &mut fast);
            assert_eq!(fast, merge_naive(&b, s.as_bytes()), "{n} a's");
        }
    }

    #[test]
    fn merges_rebuild_every_rank_from_two_lower_ones() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/golden-glm4/tokenizer.model"
        ))
        .unwrap();
        let parts = ByteLevelParts::glm4_from_tiktoken(&text, None).unwrap();
        let merges = parts.merges();
        assert_eq!(merges.len(), 2000 - 256);
        for (m, token) in merges.iter().zip(&parts.tokens[256..2000]) {
            let (l, r) = m.split_once(' ').unwrap();
            assert_eq!(format!("{l}{r}"), *token);
        }
    }

    fn pieces(text: &str) -> Vec<&str> {
        let mut v = Vec::new();
        Splitter::new().for_each(text, |p| v.push(p));
        v
    }

    #[test]
    fn splitter_gives_the_lookahead_back() {
        assert_eq!(pieces("a   b"), ["a", "  ", " b"]);
        assert_eq!(pieces("a b"), ["a", " b"]);
        assert_eq!(pieces("a   "), ["a", "   "]);
        assert_eq!(pieces("  \n  x"), ["  \n", " ", " x"]);
        assert_eq!(pieces("x \t1"), ["x", " ", "\t", "1"]);
        assert_eq!(
            pieces("I'm 12345!!\n"),
            ["I", "'m", " ", "123", "45", "!!\n"]
        );
        assert_eq!(pieces(""), Vec::<&str>::new());
    }
}
