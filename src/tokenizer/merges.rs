//! The merge table: SentencePiece's "is the concatenation of these two symbols a piece?" asked
//! with integer keys instead of strings.
//!
//! During BPE every symbol is either a single character of the text or a piece formed by
//! earlier merges (which is always a mergeable piece). Each such string gets an integer id: a
//! mergeable piece its own id, a character that is not itself a piece a pseudo id. Two symbols
//! merge exactly when their concatenation is a mergeable piece, that is when the pair of ids is
//! one of the two-way splits (at character boundaries) of some mergeable piece, which this
//! table lists.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;

use super::normalizer::utf8_char_len;
use super::vocab::{FxHasher, PieceMap};

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
type FxSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

/// A symbol that can never merge (a character no piece contains, or a user-defined symbol).
pub(crate) const NO_ID: u32 = u32::MAX;

/// Pseudo ids of characters that appear in pieces without being pieces start here (the
/// vocabulary has fewer than `u32::MAX / 2` pieces).
const PSEUDO_BASE: u32 = u32::MAX / 2;

/// Up to 4 bytes of one character as an integer. A character's length follows from its lead
/// byte, so distinct characters give distinct values (only a character cut short by the end of
/// a hostile normalized text could collide with a longer one; it then simply never merges with
/// what the longer one would).
fn pack_char(c: &[u8]) -> u64 {
    c.iter()
        .take(4)
        .fold(0u64, |acc, &b| acc << 8 | u64::from(b))
}

/// The characters of `piece`, split as the encoder splits text.
fn chars(piece: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = piece;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (c, tail) = rest.split_at(utf8_char_len(rest));
        rest = tail;
        Some(c)
    })
}

/// Two symbol ids as one key.
fn key(left: u32, right: u32) -> u64 {
    u64::from(left) << 32 | u64::from(right)
}

/// Merge lookups by symbol id.
#[derive(Debug, Clone, Default)]
pub(crate) struct MergeTable {
    /// Symbol ids of ASCII characters (the common case, without hashing).
    ascii: Vec<u32>,
    /// Symbol ids of the other characters that occur in mergeable pieces.
    char_ids: FxMap<u64, u32>,
    /// (left id, right id) -> id of the merged piece.
    merges: FxMap<u64, u32>,
    /// (left id, right id) of characters that are adjacent somewhere inside a mergeable piece.
    /// Two characters that are not can never end up in the same piece.
    adjacent: FxSet<u64>,
}

impl MergeTable {
    /// Builds the table over the mergeable pieces (SentencePiece's `pieces_`).
    pub(crate) fn new(mergeable: &PieceMap) -> Self {
        let mut t = MergeTable::default();
        for (piece, &id) in mergeable {
            let mut it = chars(piece);
            if let (Some(c), None) = (it.next(), it.next()) {
                t.char_ids.insert(pack_char(c), id);
            }
        }
        let mut next_pseudo = PSEUDO_BASE;
        for piece in mergeable.keys() {
            for c in chars(piece) {
                t.char_ids.entry(pack_char(c)).or_insert_with(|| {
                    next_pseudo += 1;
                    next_pseudo - 1
                });
            }
        }
        for (piece, &id) in mergeable {
            let ids: Vec<u32> = chars(piece).map(|c| t.char_ids[&pack_char(c)]).collect();
            for w in ids.windows(2) {
                t.adjacent.insert(key(w[0], w[1]));
            }
            // Every split of the piece into two strings that can be symbols.
            let mut offset = 0;
            let lens: Vec<usize> = chars(piece).map(<[u8]>::len).collect();
            for (i, len) in lens.iter().enumerate().take(lens.len().saturating_sub(1)) {
                offset += len;
                let (a, b) = piece.split_at(offset);
                let symbol_id = |s: &[u8], one_char: bool| {
                    if one_char {
                        t.char_ids.get(&pack_char(s)).copied()
                    } else {
                        mergeable.get(s).copied()
                    }
                };
                if let (Some(ia), Some(ib)) =
                    (symbol_id(a, i == 0), symbol_id(b, i + 2 == lens.len()))
                {
                    t.merges.insert(key(ia, ib), id);
                }
            }
        }
        t.ascii = (0u8..128)
            .map(|b| t.char_ids.get(&u64::from(b)).copied().unwrap_or(NO_ID))
            .collect();
        t
    }

    /// The symbol id of one character of the text (`NO_ID` if no piece contains it).
    pub(crate) fn char_id(&self, c: &[u8]) -> u32 {
        match c {
            [b] if *b < 0x80 => self.ascii[usize::from(*b)],
            _ => self.char_ids.get(&pack_char(c)).copied().unwrap_or(NO_ID),
        }
    }

    /// The piece formed by merging symbols `left` and `right`, if it exists.
    pub(crate) fn merge(&self, left: u32, right: u32) -> Option<u32> {
        if left == NO_ID || right == NO_ID {
            return None;
        }
        self.merges.get(&key(left, right)).copied()
    }

    /// Whether characters `left` and `right` (symbol ids) may ever end up in the same piece.
    pub(crate) fn may_join(&self, left: u32, right: u32) -> bool {
        left != NO_ID && right != NO_ID && self.adjacent.contains(&key(left, right))
    }

    /// Whether a symbol id is a real piece id (not a pseudo id or `NO_ID`).
    pub(crate) fn is_piece(id: u32) -> bool {
        id < PSEUDO_BASE
    }
}
