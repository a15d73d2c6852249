//! Ids to text: SentencePiece's `Decode` (google/sentencepiece `src/sentencepiece_processor.cc`,
//! commit 02555b8f1994cd05e4c22e3c4fe55220134e518a) and the Hugging Face ChatGLM tokenizers'
//! variants of it, in one batch form ([`Tokenizer::decode`]) and one incremental form
//! ([`StreamDecoder`]).
//!
//! The rules:
//! - U+2581 becomes a space. While no text has been produced yet and the previous piece did not
//!   already lose one, a piece's leading U+2581 (the dummy prefix) is dropped; with
//!   `remove_extra_whitespaces` every leading U+2581 of the text is dropped this way.
//! - A run of consecutive byte pieces `<0xNN>` is decoded as UTF-8; each byte that does not start
//!   a well-formed character becomes U+FFFD (one per byte). Any other token ends the run.
//! - Control pieces print nothing; how the unknown piece and the ChatGLM specials print depends
//!   on the [`DecodeMode`].

use super::bytelevel::ByteStream;
use super::normalizer::SPACE_SYMBOL;
use super::{glm1, Model, PieceType, Spm, Tokenizer, TokenizerError};

/// How special ids are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DecodeMode {
    /// The Hugging Face ChatGLM2 tokenizer's `decode`: `<unk>`, `<s>`, `</s>`, the ChatGLM
    /// specials and padding print nothing. The default; the right choice for model output.
    #[default]
    SkipSpecial,
    /// The Hugging Face ChatGLM3 tokenizer's `decode`: like [`DecodeMode::SkipSpecial`], but the
    /// ChatGLM special tokens (`[gMASK]`, `sop`, `<|user|>`, ...) print as their text.
    RenderSpecial,
    /// Plain SentencePiece `decode`: `<unk>` prints as the model's `unk_surface` (`" ⁇ "`), and
    /// only SentencePiece ids are accepted (a ChatGLM special id is out of range).
    SentencePiece,
}

/// What one id contributes to the text.
enum Token<'a> {
    /// A byte piece.
    Byte(u8),
    /// An ordinary piece: U+2581 becomes a space, the dummy prefix may be dropped.
    Text(&'a str),
    /// Printed as is (possibly nothing), never subject to the dummy-prefix rule.
    Verbatim(&'a str),
}

impl Spm {
    fn classify(&self, id: u32, mode: DecodeMode) -> Result<Token<'_>, TokenizerError> {
        let v = &self.vocab;
        let piece = v
            .pieces
            .get(id as usize)
            .ok_or(TokenizerError::IdOutOfRange {
                id,
                vocab_size: v.pieces.len(),
            })?;
        if self.glm1_postprocesses(mode) && (id as usize) < v.sp_size {
            // The v1 Hugging Face decodes: `<unk>` prints as SentencePiece prints it, and
            // skipping drops its bos, eos, mask, pad and unk ids.
            if mode == DecodeMode::SkipSpecial && self.glm1_skips(id) {
                return Ok(Token::Verbatim(""));
            }
            if v.kind(id) == PieceType::Unknown {
                return Ok(Token::Verbatim(&self.unk_surface));
            }
        }
        if id as usize >= v.sp_size {
            let is_special = id < v.sp_size as u32 + v.appended;
            return match mode {
                DecodeMode::SentencePiece => Err(TokenizerError::IdOutOfRange {
                    id,
                    vocab_size: v.sp_size,
                }),
                DecodeMode::RenderSpecial if is_special => Ok(Token::Verbatim(piece)),
                _ => Ok(Token::Verbatim("")),
            };
        }
        Ok(match v.kind(id) {
            PieceType::Byte => match v.byte_values.get(id as usize).copied().flatten() {
                Some(b) => Token::Byte(b),
                None => Token::Verbatim(""),
            },
            PieceType::Control => Token::Verbatim(""),
            PieceType::Unknown => match mode {
                DecodeMode::SentencePiece => Token::Verbatim(&self.unk_surface),
                _ => Token::Verbatim(""),
            },
            PieceType::Normal | PieceType::UserDefined | PieceType::Unused => Token::Text(piece),
        })
    }

    /// Whether a leading U+2581 may be dropped at all (SentencePiece's `DecodeSentencePiece`).
    fn strips_dummy_prefix(&self) -> bool {
        self.normalizer.add_dummy_prefix || self.normalizer.remove_extra_whitespaces
    }

    /// Renders an ordinary piece; returns whether it consumed the leading dummy space.
    fn render_text(&self, piece: &str, is_bos_ws: bool, out: &mut String) -> bool {
        let mut piece = piece;
        let mut consumed = false;
        if is_bos_ws && self.strips_dummy_prefix() {
            if let Some(rest) = piece.strip_prefix(SPACE_SYMBOL) {
                piece = rest;
                // With remove_extra_whitespaces every leading space goes, not just one.
                consumed = !self.normalizer.remove_extra_whitespaces;
            }
        }
        push_unescaped(piece, out);
        consumed
    }

    fn decode_with(&self, ids: &[u32], mode: DecodeMode) -> Result<String, TokenizerError> {
        let mut text = String::new();
        let mut bytes: Vec<u8> = Vec::new();
        let mut is_bos_ws = true;
        let mut bos_ws_seen = false;
        for &id in ids {
            match self.classify(id, mode)? {
                Token::Byte(b) => bytes.push(b),
                token => {
                    push_bytes_lossy(&bytes, &mut text);
                    bytes.clear();
                    if bos_ws_seen || !text.is_empty() {
                        is_bos_ws = false;
                    }
                    bos_ws_seen = match token {
                        Token::Text(p) => self.render_text(p, is_bos_ws, &mut text),
                        Token::Verbatim(s) => {
                            text.push_str(s);
                            false
                        }
                        Token::Byte(_) => false,
                    };
                }
            }
        }
        push_bytes_lossy(&bytes, &mut text);
        if self.glm1_postprocesses(mode) {
            text = glm1::postprocess(&text);
        }
        Ok(text)
    }
}

impl Tokenizer {
    /// Decodes `ids` with [`DecodeMode::SkipSpecial`] (the ChatGLM2 and GLM-4 tokenizers'
    /// `decode(ids, skip_special_tokens=True)`).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.decode_with(ids, DecodeMode::SkipSpecial)
    }

    /// Decodes `ids` with the given mode. For GLM-4: the bytes of consecutive ordinary ids as
    /// UTF-8 with replacement (Python's `errors="replace"`); [`DecodeMode::RenderSpecial`] is
    /// the Hugging Face `decode` (runs and special tokens joined by one space),
    /// [`DecodeMode::SentencePiece`] plain tiktoken `decode` (special ids are out of range).
    pub fn decode_with(&self, ids: &[u32], mode: DecodeMode) -> Result<String, TokenizerError> {
        match &self.model {
            Model::Spm(s) => s.decode_with(ids, mode),
            Model::ByteLevel(b) => b.decode(ids, mode),
        }
    }

    /// A streaming decoder at the start of a text (feed it ids of this tokenizer).
    pub fn stream_decoder(&self, mode: DecodeMode) -> StreamDecoder {
        StreamDecoder::new(mode)
    }
}

/// Appends `piece` with U+2581 replaced by spaces.
fn push_unescaped(piece: &str, out: &mut String) {
    let mut rest = piece;
    while let Some(i) = rest.find(SPACE_SYMBOL) {
        out.push_str(&rest[..i]);
        out.push(' ');
        rest = &rest[i + SPACE_SYMBOL.len()..];
    }
    out.push_str(rest);
}

/// Length of the UTF-8 sequence announced by a lead byte (SentencePiece's `DecodeUTF8` masks),
/// `None` if `b` cannot start a sequence.
fn sequence_len(b: u8) -> Option<usize> {
    if b < 0x80 {
        Some(1)
    } else if b & 0xe0 == 0xc0 {
        Some(2)
    } else if b & 0xf0 == 0xe0 {
        Some(3)
    } else if b & 0xf8 == 0xf0 {
        Some(4)
    } else {
        None
    }
}

/// Decodes the character at the start of `bytes`, deciding only when more bytes could not change
/// the outcome. Returns the bytes consumed and the character (`None` = U+FFFD), or `None` when
/// more bytes are needed (only possible when `final_run` is false).
fn next_char(bytes: &[u8], final_run: bool) -> Option<(usize, Option<&str>)> {
    let lead = *bytes.first()?;
    let Some(len) = sequence_len(lead) else {
        return Some((1, None));
    };
    match bytes.get(..len) {
        // `from_utf8` accepts exactly SentencePiece's well-formed characters: correct trail
        // bytes, no overlong form, no surrogate, nothing above U+10FFFF.
        Some(seq) => Some(match std::str::from_utf8(seq) {
            Ok(s) => (len, Some(s)),
            Err(_) => (1, None),
        }),
        None if final_run => Some((1, None)),
        None => None,
    }
}

/// Appends a complete byte run (SentencePiece's `ProcessBytePieces`).
fn push_bytes_lossy(mut bytes: &[u8], out: &mut String) {
    while let Some((n, c)) = next_char(bytes, true) {
        out.push_str(c.unwrap_or("\u{fffd}"));
        bytes = &bytes[n..];
    }
}

/// Turns ids into text one id at a time.
///
/// The decoder holds only its state, not the tokenizer (so that a session can own both); every
/// call takes the tokenizer, which must be the same one throughout a text.
///
/// [`push`](StreamDecoder::push) returns the text that became final with that id; a character
/// spelled by several byte pieces is held back until all its bytes have arrived, so every chunk
/// is whole characters. After the last id, [`finish`](StreamDecoder::finish) returns whatever is
/// still held (an incomplete character becomes U+FFFD, as in batch decoding). The chunks
/// concatenated equal [`Tokenizer::decode_with`] of all the ids, dummy-prefix rule included.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    mode: DecodeMode,
    /// Byte pieces not yet turned into characters.
    pending: Vec<u8>,
    is_bos_ws: bool,
    bos_ws_seen: bool,
    /// Whether any text has been produced.
    produced: bool,
    /// The state for a byte-level tokenizer.
    bytes: ByteStream,
    /// ChatGLM-6B: decoded text that may still be the start of `<n>`, `<|tab|>` or
    /// `<|blank_N|>`, held back until it is decided.
    held: String,
    /// Whether the ids are a ChatGLM-6B tokenizer's in a mode that postprocesses (known from
    /// the first [`StreamDecoder::push`]).
    glm1: bool,
}

impl StreamDecoder {
    /// A decoder at the start of a text.
    pub fn new(mode: DecodeMode) -> Self {
        Self {
            mode,
            pending: Vec::new(),
            is_bos_ws: true,
            bos_ws_seen: false,
            produced: false,
            bytes: ByteStream::default(),
            held: String::new(),
            glm1: false,
        }
    }

    /// Feeds one id; returns the text that is now final (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, TokenizerError> {
        let tokenizer = match &tokenizer.model {
            Model::Spm(s) => s,
            Model::ByteLevel(b) => {
                let mut out = String::new();
                self.bytes.push(b.classify(id, self.mode)?, &mut out);
                return Ok(out);
            }
        };
        let token = tokenizer.classify(id, self.mode)?;
        let mut out = String::new();
        match token {
            Token::Byte(b) => {
                self.pending.push(b);
                self.drain_pending(false, &mut out);
            }
            token => {
                self.drain_pending(true, &mut out);
                if self.bos_ws_seen || self.produced || !out.is_empty() {
                    self.is_bos_ws = false;
                }
                self.bos_ws_seen = match token {
                    Token::Text(p) => tokenizer.render_text(p, self.is_bos_ws, &mut out),
                    Token::Verbatim(s) => {
                        out.push_str(s);
                        false
                    }
                    Token::Byte(_) => false,
                };
            }
        }
        self.produced |= !out.is_empty();
        self.glm1 = tokenizer.glm1_postprocesses(self.mode);
        if self.glm1 {
            self.held.push_str(&out);
            let ready = self.held.len() - glm1::undecided_suffix(&self.held);
            out = glm1::postprocess(&self.held[..ready]);
            self.held.drain(..ready);
        }
        Ok(out)
    }

    /// Ends the text: returns the characters still held back (incomplete ones as U+FFFD) and
    /// resets the decoder to the start of a new text.
    pub fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.held);
        self.drain_pending(true, &mut out);
        if self.glm1 {
            out = glm1::postprocess(&out);
        }
        self.bytes.finish(&mut out);
        *self = Self::new(self.mode);
        out
    }

    /// Moves decided characters from `pending` to `out`.
    fn drain_pending(&mut self, final_run: bool, out: &mut String) {
        let mut used = 0;
        while let Some((n, c)) = next_char(&self.pending[used..], final_run) {
            out.push_str(c.unwrap_or("\u{fffd}"));
            used += n;
        }
        self.pending.drain(..used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lossy(b: &[u8]) -> String {
        let mut s = String::new();
        push_bytes_lossy(b, &mut s);
        s
    }

    #[test]
    fn byte_runs_replace_each_bad_byte() {
        assert_eq!(lossy("你好".as_bytes()), "你好");
        assert_eq!(lossy(&[0xe4, 0xbd]), "\u{fffd}\u{fffd}");
        assert_eq!(lossy(&[0xe4, 0xbd, 0x41]), "\u{fffd}\u{fffd}A");
        assert_eq!(lossy(&[0xc0, 0x80]), "\u{fffd}\u{fffd}"); // overlong
        assert_eq!(lossy(&[0xed, 0xa0, 0x80]), "\u{fffd}\u{fffd}\u{fffd}"); // surrogate
        assert_eq!(lossy(&[0xf4, 0x90, 0x80, 0x80]), "\u{fffd}".repeat(4)); // > U+10FFFF
        assert_eq!(lossy(&[0xff, 0x80]), "\u{fffd}\u{fffd}");
        assert_eq!(lossy("\u{fffd}".as_bytes()), "\u{fffd}");
    }

    #[test]
    fn undecided_prefix_waits() {
        assert_eq!(next_char(&[0xe4, 0xbd], false), None);
        assert_eq!(next_char(&[0xe4, 0xbd], true), Some((1, None)));
        assert_eq!(next_char(&[0x80], false), Some((1, None)));
        assert_eq!(next_char(&[0xe4, 0xbd, 0xa0], false), Some((3, Some("你"))));
    }
}
