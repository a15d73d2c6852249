//! SentencePiece's precompiled normalization map (`NormalizerSpec.precompiled_charsmap`).
//!
//! Layout (google/sentencepiece `src/normalizer.cc`, `Normalizer::EncodePrecompiledCharsMap`):
//! `<trie size: u32 little-endian><darts-clone double array: trie size bytes><replacements>`.
//! The double array maps UTF-8 byte strings to offsets into `replacements`, a sequence of
//! NUL-terminated strings. Normalizing a position takes the longest key that is a prefix of the
//! remaining input (`Normalizer::NormalizePrefix`).
//!
//! The traversal below follows darts-clone's `DoubleArrayImpl::commonPrefixSearch`
//! (sentencepiece `third_party/darts_clone/darts.h`, darts-clone 0.32) unit for unit, with every
//! array access bounds-checked: a unit outside the array ends the search, as a failed transition
//! does.

use super::TokenizerError;

/// darts-clone's `DoubleArrayUnit`: a 32-bit word holding a label, an offset and a leaf flag.
#[derive(Clone, Copy)]
struct Unit(u32);

impl Unit {
    /// Whether a leaf (value) unit hangs directly below this unit.
    fn has_leaf(self) -> bool {
        (self.0 >> 8) & 1 == 1
    }

    /// The value of a leaf unit.
    fn value(self) -> u32 {
        self.0 & ((1 << 31) - 1)
    }

    /// The label; leaf units have bit 31 set so they never match a byte.
    fn label(self) -> u32 {
        self.0 & ((1 << 31) | 0xff)
    }

    /// XOR distance to this unit's children.
    fn offset(self) -> u32 {
        (self.0 >> 10) << ((self.0 & (1 << 9)) >> 6)
    }
}

/// SentencePiece's `Normalizer::kMaxTrieResultsSize`: only the first (shortest) 32 matching
/// prefixes are considered when choosing the longest.
const MAX_TRIE_RESULTS: usize = 32;

/// A decoded precompiled charsmap.
#[derive(Debug, Clone)]
pub(crate) struct PrecompiledCharsmap {
    /// The double-array units.
    units: Vec<u32>,
    /// NUL-terminated replacement strings, addressed by the trie's values.
    replacements: Vec<u8>,
}

impl PrecompiledCharsmap {
    /// Splits a `precompiled_charsmap` blob into its trie and replacement strings.
    pub(crate) fn parse(blob: &[u8]) -> Result<Self, TokenizerError> {
        let err = |what: String| TokenizerError::Charsmap(what);
        let header: [u8; 4] = blob
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .filter(|_| blob.len() > 4)
            .ok_or_else(|| err(format!("{} bytes is too short", blob.len())))?;
        let trie_size = u32::from_le_bytes(header) as usize;
        let trie = blob
            .get(4..)
            .and_then(|rest| rest.get(..trie_size))
            .ok_or_else(|| {
                err(format!(
                    "trie of {trie_size} bytes does not fit in a blob of {} bytes",
                    blob.len()
                ))
            })?;
        if trie_size == 0 || !trie_size.is_multiple_of(4) {
            return Err(err(format!(
                "trie size {trie_size} is not a positive multiple of 4"
            )));
        }
        let units = trie
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let replacements = blob.get(4 + trie_size..).unwrap_or_default().to_vec();
        Ok(Self {
            units,
            replacements,
        })
    }

    fn unit(&self, pos: usize) -> Option<Unit> {
        self.units.get(pos).copied().map(Unit)
    }

    /// The longest rule matching a prefix of `input`: `(bytes consumed, replacement)`.
    ///
    /// `None` when no rule matches (the caller then copies one character unchanged). A value
    /// pointing outside the replacement strings is treated as no match.
    pub(crate) fn longest_match(&self, input: &[u8]) -> Option<(usize, &[u8])> {
        let mut longest: Option<(usize, u32)> = None;
        let mut num_results = 0usize;
        let mut node = self.unit(0)?.offset() as usize;
        for (i, &byte) in input.iter().enumerate() {
            node ^= usize::from(byte);
            let Some(unit) = self.unit(node) else { break };
            if unit.label() != u32::from(byte) {
                break;
            }
            node ^= unit.offset() as usize;
            if unit.has_leaf() {
                if num_results < MAX_TRIE_RESULTS {
                    let Some(leaf) = self.unit(node) else { break };
                    // Results come shortest first, so the last one kept is the longest.
                    longest = Some((i + 1, leaf.value()));
                }
                num_results += 1;
            }
        }
        let (length, value) = longest?;
        let tail = self.replacements.get(value as usize..)?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        Some((length, &tail[..end]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_blobs_are_errors() {
        assert!(PrecompiledCharsmap::parse(&[]).is_err());
        assert!(PrecompiledCharsmap::parse(&[4, 0, 0, 0]).is_err());
        assert!(PrecompiledCharsmap::parse(&[8, 0, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(PrecompiledCharsmap::parse(&[3, 0, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(PrecompiledCharsmap::parse(&[0xff, 0xff, 0xff, 0xff, 1]).is_err());
        assert!(PrecompiledCharsmap::parse(&[4, 0, 0, 0, 1, 2, 3, 4]).is_ok());
    }

    /// Every key stored in the double array, with its value (depth-first, keys up to 12 bytes).
    fn keys(m: &PrecompiledCharsmap) -> Vec<(Vec<u8>, u32)> {
        let mut out = Vec::new();
        let mut stack = vec![(m.unit(0).unwrap().offset() as usize, Vec::new())];
        while let Some((base, key)) = stack.pop() {
            for c in 1..=255u8 {
                let pos = base ^ usize::from(c);
                let Some(u) = m.unit(pos) else { continue };
                if u.label() != u32::from(c) {
                    continue;
                }
                let next = pos ^ u.offset() as usize;
                let mut k = key.clone();
                k.push(c);
                if u.has_leaf() {
                    out.push((k.clone(), m.unit(next).unwrap().value()));
                }
                if k.len() < 12 {
                    stack.push((next, k));
                }
            }
        }
        out
    }

    #[test]
    fn every_rule_of_the_nfkc_map_is_found_whole() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/golden/tokenizer_nfkc.model"
        );
        let model = crate::tokenizer::SpmModel::from_file(path).unwrap();
        let m = PrecompiledCharsmap::parse(&model.normalizer.precompiled_charsmap).unwrap();
        let keys = keys(&m);
        assert!(keys.len() > 1000, "{} keys", keys.len());
        let set: std::collections::HashSet<&[u8]> =
            keys.iter().map(|(k, _)| k.as_slice()).collect();
        let mut with_shorter_rule = 0;
        for (key, value) in &keys {
            let (len, replacement) = m.longest_match(key).unwrap();
            assert_eq!(len, key.len(), "key {key:?}");
            let tail = &m.replacements[*value as usize..];
            assert_eq!(
                replacement,
                &tail[..tail.iter().position(|&b| b == 0).unwrap()]
            );
            if (1..key.len()).any(|i| set.contains(&key[..i])) {
                with_shorter_rule += 1;
            }
        }
        // Some rules extend shorter ones, so "longest" is really exercised.
        assert!(with_shorter_rule > 0);
        // NFKC facts.
        let apply = |s: &str| {
            let (len, r) = m.longest_match(s.as_bytes()).unwrap();
            (len, String::from_utf8(r.to_vec()).unwrap())
        };
        assert_eq!(apply("\u{ff46}x"), (3, "f".to_owned()));
        assert_eq!(apply("\u{fb01}"), (3, "fi".to_owned()));
        assert_eq!(apply("\u{2460}"), (3, "1".to_owned()));
        assert_eq!(apply("\u{3000}"), (3, " ".to_owned()));
        assert!(m.longest_match(b"a").is_none());
    }

    #[test]
    fn garbage_trie_never_panics() {
        let mut blob = vec![64, 0, 0, 0];
        blob.extend((0..64u32).map(|i| (i.wrapping_mul(2654435761) >> 3) as u8));
        blob.extend_from_slice(b"abc\0");
        let m = PrecompiledCharsmap::parse(&blob).unwrap();
        for s in ["", "a", "hello", "\u{ff21}\u{3000}", "\0\0\0"] {
            let _ = m.longest_match(s.as_bytes());
        }
    }
}
