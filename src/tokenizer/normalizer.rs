//! Text normalization before segmentation, as SentencePiece's `Normalizer::Normalize`
//! (google/sentencepiece `src/normalizer.cc`, commit 180a6fb2c7b9e442a37dd16820067ddab9c2a5d7).
//!
//! Steps: rewrite the text with the precompiled charsmap (longest-prefix rules; user-defined
//! symbols are protected from rewriting), optionally drop leading, trailing and repeated spaces,
//! add the dummy-prefix space, and escape spaces as U+2581. The result is a byte string (as in
//! SentencePiece, a hostile charsmap could produce bytes that are not UTF-8; segmentation works
//! on bytes and never needs them to be).

use super::charsmap::PrecompiledCharsmap;
use super::TokenizerError;

/// U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's visible space.
pub(crate) const SPACE_SYMBOL: &str = "\u{2581}";

/// Normalization settings: SentencePiece's `NormalizerSpec` plus the trainer flag that moves the
/// dummy space to the end.
#[derive(Debug, Clone)]
pub(crate) struct Normalizer {
    pub(crate) add_dummy_prefix: bool,
    pub(crate) remove_extra_whitespaces: bool,
    pub(crate) escape_whitespaces: bool,
    pub(crate) treat_whitespace_as_suffix: bool,
    charsmap: Option<PrecompiledCharsmap>,
}

impl Normalizer {
    /// Builds a normalizer; an empty `precompiled_charsmap` means the identity rule.
    pub(crate) fn new(
        spec: &super::NormalizerSpec,
        treat_whitespace_as_suffix: bool,
    ) -> Result<Self, TokenizerError> {
        let charsmap = if spec.precompiled_charsmap.is_empty() {
            None
        } else {
            Some(PrecompiledCharsmap::parse(&spec.precompiled_charsmap)?)
        };
        Ok(Self {
            add_dummy_prefix: spec.add_dummy_prefix,
            remove_extra_whitespaces: spec.remove_extra_whitespaces,
            escape_whitespaces: spec.escape_whitespaces,
            treat_whitespace_as_suffix,
            charsmap,
        })
    }

    /// The normalized form of the first character (or user-defined symbol, or charsmap rule) of
    /// `input`, and how many input bytes it consumes (`Normalizer::NormalizePrefix`).
    fn normalize_prefix<'a>(
        &'a self,
        input: &'a [u8],
        user_defined: &super::matcher::PrefixMatcher,
    ) -> (&'a [u8], usize) {
        if let Some(len) = user_defined.longest_match(input) {
            return (&input[..len], len);
        }
        if let Some((len, replacement)) =
            self.charsmap.as_ref().and_then(|m| m.longest_match(input))
        {
            return (replacement, len);
        }
        // `input` comes from a `&str`, so it is valid UTF-8: copy one character.
        let len = utf8_char_len(input);
        (&input[..len], len)
    }

    /// Normalizes `text` into `out` (cleared first).
    pub(crate) fn normalize_into(
        &self,
        text: &str,
        user_defined: &super::matcher::PrefixMatcher,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        let mut input = text.as_bytes();
        if input.is_empty() {
            return;
        }
        // Leading spaces.
        if self.remove_extra_whitespaces {
            while !input.is_empty() {
                let (s, n) = self.normalize_prefix(input, user_defined);
                if s != b" " {
                    break;
                }
                input = &input[n..];
            }
        }
        if input.is_empty() {
            return;
        }
        out.reserve(input.len() * 3);
        let space: &[u8] = if self.escape_whitespaces {
            SPACE_SYMBOL.as_bytes()
        } else {
            b" "
        };
        if !self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.extend_from_slice(space);
        }
        let mut is_prev_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            let (mut s, n) = self.normalize_prefix(input, user_defined);
            while is_prev_space && s.first() == Some(&b' ') {
                s = &s[1..];
            }
            if !s.is_empty() {
                for &b in s {
                    if b == b' ' {
                        out.extend_from_slice(space);
                    } else {
                        out.push(b);
                    }
                }
                is_prev_space = s.last() == Some(&b' ');
            }
            input = &input[n..];
            if !self.remove_extra_whitespaces {
                is_prev_space = false;
            }
        }
        // Trailing spaces.
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        if self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.extend_from_slice(space);
        }
    }
}

/// Byte length of the UTF-8 character starting `bytes` as SentencePiece's `OneCharLen` judges it
/// from the lead byte, clipped to the bytes available (at least 1 for non-empty input).
pub(crate) fn utf8_char_len(bytes: &[u8]) -> usize {
    let Some(&lead) = bytes.first() else { return 0 };
    let len = match lead >> 4 {
        0xc | 0xd => 2,
        0xe => 3,
        0xf => 4,
        _ => 1,
    };
    len.min(bytes.len())
}
