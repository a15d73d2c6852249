//! BPE segmentation of normalized text, as SentencePiece's `bpe::Model::SampleEncode` without
//! dropout (google/sentencepiece `src/bpe_model.cc`, commit
//! 180a6fb2c7b9e442a37dd16820067ddab9c2a5d7), followed by the id assignment, unknown-run merging
//! and byte fallback of `SentencePieceProcessor::PopulateSentencePieceText`
//! (`src/sentencepiece_processor.cc`).
//!
//! The text starts as one symbol per character (a user-defined piece is one frozen symbol).
//! Every adjacent pair whose concatenation is a piece goes into a priority queue keyed by that
//! piece's score (highest first, ties to the leftmost pair). Popping a pair merges it and queues
//! the two new pairs it forms with its neighbours; stale queue entries are recognised by the
//! symbols' lengths and skipped. Cost: O(n log n) in the number of characters.
//!
//! To keep the queue small (and in cache), the text is first cut where no merge can ever cross:
//! between two characters that are adjacent in no piece, or next to a user-defined symbol. The
//! merges of different segments are independent, and within a segment they happen in the same
//! order as with one queue over the whole text, so the result is identical. (With unused pieces
//! the result depends on the global order, see `rev_merge`, so such vocabularies use one
//! segment.)

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::matcher::PrefixMatcher;
use super::merges::{MergeTable, NO_ID};
use super::normalizer::utf8_char_len;
use super::vocab::Vocab;
use super::PieceType;

/// One symbol: a byte range of the normalized text, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    /// 0 once merged into its left neighbour.
    len: u32,
    prev: u32,
    next: u32,
    /// The symbol's id in the merge table (`NO_ID` for a user-defined symbol, which is never
    /// merged, or a character no piece contains).
    id: u32,
}

/// Marks the absence of a neighbour.
const NONE: u32 = u32::MAX;

/// A candidate merge of symbols `left` and `right` into piece `id` of `size` bytes.
struct Pair {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
    id: u32,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pair {}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pair {
    /// Max-heap order: higher score first, then the leftmost pair (`SymbolPairComparator`).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// A byte range `(start, len)` of the normalized text and its symbol id.
type Range = (u32, u32, u32);

/// For unused pieces formed by a merge: piece id -> the two symbols it was formed from.
type RevMerge = HashMap<u32, (Range, Range)>;

/// One encoding in progress.
struct Encoder<'a> {
    vocab: &'a Vocab,
    normalized: &'a [u8],
    symbols: Vec<Symbol>,
    agenda: BinaryHeap<Pair>,
    /// SentencePiece's `rev_merge`: for every unused piece that was queued, the two symbols of
    /// the last pair queued for it.
    rev_merge: RevMerge,
    /// Work list of the resegmentation of unused pieces.
    stack: Vec<Range>,
    /// Whether the last piece emitted was unknown.
    is_prev_unk: bool,
}

/// Segments `normalized` and appends the ids to `out`.
pub(crate) fn encode(
    vocab: &Vocab,
    matcher: &PrefixMatcher,
    normalized: &[u8],
    out: &mut Vec<u32>,
) {
    // Symbol offsets are u32. A text over 4 GiB (nothing real) is cut at a character boundary
    // and the parts are encoded separately.
    const MAX_LEN: usize = (u32::MAX - 1) as usize;
    if normalized.len() > MAX_LEN {
        let mut cut = MAX_LEN;
        while cut > 0 && (normalized[cut] & 0xc0) == 0x80 {
            cut -= 1;
        }
        encode(vocab, matcher, &normalized[..cut], out);
        encode(vocab, matcher, &normalized[cut..], out);
        return;
    }
    let mut e = Encoder {
        vocab,
        normalized,
        symbols: Vec::with_capacity(normalized.len()),
        agenda: BinaryHeap::new(),
        rev_merge: RevMerge::new(),
        stack: Vec::new(),
        is_prev_unk: false,
    };
    e.split(matcher);
    let n = e.symbols.len();
    let mut begin = 0;
    for i in 1..=n {
        if i == n || e.is_cut(i) {
            e.merge(begin, i);
            e.emit_segment(begin, out);
            begin = i;
        }
    }
}

impl<'a> Encoder<'a> {
    /// Splits the text into characters, a user-defined piece being one frozen symbol.
    fn split(&mut self, matcher: &PrefixMatcher) {
        let mut pos = 0usize;
        while pos < self.normalized.len() {
            let rest = &self.normalized[pos..];
            let (len, id) = match matcher.longest_match(rest) {
                Some(len) => (len, NO_ID),
                None => {
                    let len = utf8_char_len(rest);
                    (len, self.vocab.merges.char_id(&rest[..len]))
                }
            };
            let index = self.symbols.len() as u32;
            self.symbols.push(Symbol {
                start: pos as u32,
                len: len as u32,
                prev: index.wrapping_sub(1),
                next: index + 1,
                id,
            });
            pos += len;
        }
    }

    fn bytes(&self, start: u32, len: u32) -> &'a [u8] {
        &self.normalized[start as usize..(start + len) as usize]
    }

    /// Whether no merge can ever join symbol `i - 1` to symbol `i` (before any merging).
    fn is_cut(&self, i: usize) -> bool {
        let (l, r) = (self.symbols[i - 1], self.symbols[i]);
        !self.vocab.has_unused && !self.vocab.merges.may_join(l.id, r.id)
    }

    /// Queues the merge of `left` and `right` if their concatenation is a piece
    /// (`MaybeAddNewSymbolPair`).
    fn add_pair(&mut self, left: u32, right: u32) {
        if left == NONE || right == NONE {
            return;
        }
        let (l, r) = (self.symbols[left as usize], self.symbols[right as usize]);
        let Some(id) = self.vocab.merges.merge(l.id, r.id) else {
            return;
        };
        self.agenda.push(Pair {
            score: self.vocab.scores[id as usize],
            left,
            right,
            size: l.len + r.len,
            id,
        });
        if self.vocab.kind(id) == PieceType::Unused {
            self.rev_merge
                .insert(id, ((l.start, l.len, l.id), (r.start, r.len, r.id)));
        }
    }

    /// Runs the merges of the segment of symbols `begin..end`.
    fn merge(&mut self, begin: usize, end: usize) {
        self.symbols[begin].prev = NONE;
        self.symbols[end - 1].next = NONE;
        for i in begin + 1..end {
            self.add_pair(i as u32 - 1, i as u32);
        }
        while let Some(top) = self.agenda.pop() {
            let (l, r) = (
                self.symbols[top.left as usize],
                self.symbols[top.right as usize],
            );
            if l.len == 0 || r.len == 0 || l.len + r.len != top.size {
                continue; // stale: one of the symbols changed since the pair was queued
            }
            self.symbols[top.left as usize].len = top.size;
            self.symbols[top.left as usize].id = top.id;
            self.symbols[top.left as usize].next = r.next;
            if r.next != NONE {
                self.symbols[r.next as usize].prev = top.left;
            }
            self.symbols[top.right as usize].len = 0;
            self.add_pair(l.prev, top.left);
            self.add_pair(top.left, r.next);
        }
    }

    /// Appends the ids of the merged segment starting at symbol `begin`, splitting unused
    /// pieces back into the pieces they were merged from (`resegment`).
    fn emit_segment(&mut self, begin: usize, out: &mut Vec<u32>) {
        let mut index = begin as u32;
        while index != NONE {
            let s = self.symbols[index as usize];
            self.stack.clear();
            self.stack.push((s.start, s.len, s.id));
            while let Some((start, len, symbol_id)) = self.stack.pop() {
                let bytes = self.bytes(start, len);
                // SentencePiece's `PieceToId(piece)`; a formed piece's id is known already.
                let id = if MergeTable::is_piece(symbol_id) {
                    Some(self.vocab.resolved[symbol_id as usize])
                } else {
                    self.vocab.piece_to_id(bytes)
                };
                if let Some(id) = id.filter(|&id| self.vocab.kind(id) == PieceType::Unused) {
                    if let Some(&(left, right)) = self.rev_merge.get(&id) {
                        self.stack.push(right);
                        self.stack.push(left);
                        continue;
                    }
                }
                emit(self.vocab, bytes, id, &mut self.is_prev_unk, out);
            }
            index = s.next;
        }
    }
}

/// Appends the id of one final piece (`PopulateSentencePieceText`): unknown pieces become byte
/// pieces with byte fallback, otherwise a run of unknown pieces becomes one unknown id.
fn emit(vocab: &Vocab, bytes: &[u8], id: Option<u32>, is_prev_unk: &mut bool, out: &mut Vec<u32>) {
    // A final piece that names a control piece can only be a single character equal to it;
    // SentencePiece rejects the whole input then. It is treated as unknown here.
    let id = id.filter(|&id| !matches!(vocab.kind(id), PieceType::Unknown | PieceType::Control));
    match id {
        Some(id) => {
            out.push(id);
            *is_prev_unk = false;
        }
        None => {
            if let Some(byte_ids) = &vocab.byte_ids {
                out.extend(bytes.iter().map(|&b| byte_ids[usize::from(b)]));
            } else if !*is_prev_unk {
                out.push(vocab.unk_id);
            }
            *is_prev_unk = true;
        }
    }
}
