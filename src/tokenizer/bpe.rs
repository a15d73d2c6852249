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

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::matcher::PrefixMatcher;
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
    /// User-defined symbols are never merged.
    freeze: bool,
}

/// Marks the absence of a neighbour.
const NONE: u32 = u32::MAX;

/// A candidate merge of symbols `left` and `right` into a piece of `size` bytes.
struct Pair {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
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

/// A byte range `(start, len)` of the normalized text.
type Range = (u32, u32);

/// For unused pieces formed by a merge: piece id -> the two ranges it was formed from.
type RevMerge = HashMap<u32, (Range, Range)>;

/// Reusable buffers for one segmentation.
#[derive(Default)]
pub(crate) struct BpeScratch {
    symbols: Vec<Symbol>,
    agenda: BinaryHeap<Pair>,
    rev_merge: RevMerge,
    stack: Vec<Range>,
}

/// Segments `normalized` and appends the ids to `out`.
pub(crate) fn encode(
    vocab: &Vocab,
    matcher: &PrefixMatcher,
    normalized: &[u8],
    scratch: &mut BpeScratch,
    out: &mut Vec<u32>,
) {
    if normalized.is_empty() {
        return;
    }
    // Offsets are u32; a text over 4 GiB is segmented in independent chunks at character
    // boundaries (no real input gets near this).
    const MAX_CHUNK: usize = (u32::MAX - 1) as usize;
    if normalized.len() > MAX_CHUNK {
        let mut cut = MAX_CHUNK;
        while cut > 0 && (normalized[cut] & 0xc0) == 0x80 {
            cut -= 1;
        }
        encode(vocab, matcher, &normalized[..cut], scratch, out);
        encode(vocab, matcher, &normalized[cut..], scratch, out);
        return;
    }

    let BpeScratch {
        symbols,
        agenda,
        rev_merge,
        stack,
    } = scratch;
    symbols.clear();
    agenda.clear();
    rev_merge.clear();

    // Split into characters (or whole user-defined symbols).
    let mut pos = 0usize;
    while pos < normalized.len() {
        let rest = &normalized[pos..];
        let (len, freeze) = match matcher.longest_match(rest) {
            Some(len) => (len, true),
            None => (utf8_char_len(rest), false),
        };
        let index = symbols.len() as u32;
        symbols.push(Symbol {
            start: pos as u32,
            len: len as u32,
            prev: if index == 0 { NONE } else { index - 1 },
            next: if pos + len == normalized.len() {
                NONE
            } else {
                index + 1
            },
            freeze,
        });
        pos += len;
    }

    let add_pair = |symbols: &[Symbol],
                    agenda: &mut BinaryHeap<Pair>,
                    rev_merge: &mut RevMerge,
                    left: u32,
                    right: u32| {
        if left == NONE || right == NONE {
            return;
        }
        let (l, r) = (symbols[left as usize], symbols[right as usize]);
        if l.freeze || r.freeze {
            return;
        }
        let start = l.start as usize;
        let size = (l.len + r.len) as usize;
        let Some(&id) = vocab.mergeable.get(&normalized[start..start + size]) else {
            return;
        };
        agenda.push(Pair {
            score: vocab.scores[id as usize],
            left,
            right,
            size: size as u32,
        });
        if vocab.kind(id) == PieceType::Unused {
            rev_merge.insert(id, ((l.start, l.len), (r.start, r.len)));
        }
    };

    for i in 1..symbols.len() as u32 {
        add_pair(symbols, agenda, rev_merge, i - 1, i);
    }

    while let Some(top) = agenda.pop() {
        let (l, r) = (symbols[top.left as usize], symbols[top.right as usize]);
        if l.len == 0 || r.len == 0 || l.len + r.len != top.size {
            continue; // stale: one of the symbols changed since the pair was queued
        }
        symbols[top.left as usize].len = top.size;
        symbols[top.left as usize].next = r.next;
        if r.next != NONE {
            symbols[r.next as usize].prev = top.left;
        }
        symbols[top.right as usize].len = 0;
        add_pair(symbols, agenda, rev_merge, l.prev, top.left);
        add_pair(symbols, agenda, rev_merge, top.left, r.next);
    }

    // Assign ids, splitting unused pieces back into the pieces they were merged from.
    let mut is_prev_unk = false;
    let mut index = 0u32;
    while index != NONE {
        let s = symbols[index as usize];
        stack.clear();
        stack.push((s.start, s.len));
        while let Some((start, len)) = stack.pop() {
            let bytes = &normalized[start as usize..(start + len) as usize];
            let id = vocab.piece_to_id(bytes);
            if let Some(id) = id.filter(|&id| vocab.kind(id) == PieceType::Unused) {
                if let Some(&(left, right)) = rev_merge.get(&id) {
                    stack.push(right);
                    stack.push(left);
                    continue;
                }
            }
            emit(vocab, bytes, id, &mut is_prev_unk, out);
        }
        index = s.next;
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
