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
//! segment.) Segments are split and merged one at a time, so memory follows the longest
//! segment, not the text.
//!
//! A long segment (a run of spaces is one) would make the heap large and every operation a
//! cache miss; such segments use a [`BucketQueue`] instead, which pops the same pairs in the
//! same order, batch by batch of equal score.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};

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
    /// The queue of long segments.
    buckets: BucketQueue,
    /// SentencePiece's `rev_merge`: for every unused piece that was queued, the two symbols of
    /// the last pair queued for it.
    rev_merge: RevMerge,
    /// Work list of the resegmentation of unused pieces.
    stack: Vec<Range>,
    /// Whether the last piece emitted was unknown.
    is_prev_unk: bool,
}

/// Segments longer than this many symbols are merged through the [`BucketQueue`] instead of a
/// binary heap of pairs (both make the same merges in the same order; only the cost differs).
const LONG_SEGMENT: usize = 256;

/// Segments `normalized` and appends the ids to `out`.
pub(crate) fn encode(
    vocab: &Vocab,
    matcher: &PrefixMatcher,
    normalized: &[u8],
    out: &mut Vec<u32>,
) {
    encode_with(vocab, matcher, normalized, out, LONG_SEGMENT);
}

/// [`encode`], merging segments of more than `long` symbols through the bucket queue.
fn encode_with(
    vocab: &Vocab,
    matcher: &PrefixMatcher,
    normalized: &[u8],
    out: &mut Vec<u32>,
    long: usize,
) {
    // Symbol offsets are u32. A text over 4 GiB (nothing real) is cut at a character boundary
    // and the parts are encoded separately.
    const MAX_LEN: usize = (u32::MAX - 1) as usize;
    if normalized.len() > MAX_LEN {
        let mut cut = MAX_LEN;
        while cut > 0 && (normalized[cut] & 0xc0) == 0x80 {
            cut -= 1;
        }
        encode_with(vocab, matcher, &normalized[..cut], out, long);
        encode_with(vocab, matcher, &normalized[cut..], out, long);
        return;
    }
    let mut e = Encoder {
        vocab,
        normalized,
        symbols: Vec::new(),
        agenda: BinaryHeap::new(),
        buckets: BucketQueue::default(),
        rev_merge: RevMerge::new(),
        stack: Vec::new(),
        is_prev_unk: false,
    };
    // One segment at a time: the symbols and queues never hold more than the longest segment.
    let mut pos = 0;
    while pos < normalized.len() {
        pos = e.split_segment(matcher, pos);
        let n = e.symbols.len();
        if n > long {
            e.merge_long(n);
        } else {
            e.merge(n);
        }
        e.emit_segment(0, out);
    }
}

/// The order of a score as an integer: smaller means a higher score, and the order agrees with
/// `f32::total_cmp` (the order the binary heap uses).
fn score_key(score: f32) -> u32 {
    let bits = score.to_bits();
    let ascending = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    };
    !ascending
}

/// A priority queue of pairs for long segments, keyed by (score key, left symbol), smallest
/// first, exactly the order of the binary heap of [`Pair`]s.
///
/// Merging a pair of a trained BPE vocabulary only forms pairs of lower score (a piece's score
/// is lower than that of the pieces it is made of). So the pairs of one score are taken as a
/// batch: sorted by position once, then read in order, which is linear in memory access
/// instead of a heap operation per pair. Pairs queued with a score not lower than the batch's
/// (ties, or vocabularies whose scores do not follow the merge order) go to a small binary
/// heap that is read alongside, so the order stays exact for any vocabulary.
#[derive(Default)]
struct BucketQueue {
    /// Score key -> left symbols of the pairs queued with it (scores below the current batch).
    later: BTreeMap<u32, Vec<u32>>,
    /// Score key of the batch being read (`None` before the first).
    current_key: Option<u32>,
    /// The batch being read, sorted, and the read position.
    current: Vec<u32>,
    cursor: usize,
    /// Pairs queued with a score key not above `current_key`, as `key << 32 | left`.
    early: BinaryHeap<Reverse<u64>>,
}

impl BucketQueue {
    fn push(&mut self, key: u32, left: u32) {
        match self.current_key {
            Some(current) if key <= current => {
                self.early
                    .push(Reverse(u64::from(key) << 32 | u64::from(left)));
            }
            _ => self.later.entry(key).or_default().push(left),
        }
    }

    /// The smallest queued (score key, left symbol).
    fn pop(&mut self) -> Option<(u32, u32)> {
        loop {
            let batch = self
                .current
                .get(self.cursor)
                .zip(self.current_key)
                .map(|(&left, key)| u64::from(key) << 32 | u64::from(left));
            let early = self.early.peek().map(|r| r.0);
            let next = match (batch, early) {
                (Some(b), Some(e)) if e < b => self.early.pop().map(|r| r.0),
                (Some(b), _) => {
                    self.cursor += 1;
                    Some(b)
                }
                (None, Some(_)) => self.early.pop().map(|r| r.0),
                (None, None) => {
                    // Every key in `later` is above `current_key` and the heap is empty: the
                    // next batch is the smallest key in `later`.
                    let (key, mut lefts) = self.later.pop_first()?;
                    lefts.sort_unstable();
                    self.current = lefts;
                    self.cursor = 0;
                    self.current_key = Some(key);
                    continue;
                }
            };
            return next.map(|k| ((k >> 32) as u32, k as u32));
        }
    }
}

impl<'a> Encoder<'a> {
    /// The symbol at byte `pos`: its length and merge-table id (a user-defined piece is one
    /// frozen symbol, anything else one character).
    fn symbol_at(&self, matcher: &PrefixMatcher, pos: usize) -> (usize, u32) {
        let rest = &self.normalized[pos..];
        match matcher.longest_match(rest) {
            Some(len) => (len, NO_ID),
            None => {
                let len = utf8_char_len(rest);
                (len, self.vocab.merges.char_id(&rest[..len]))
            }
        }
    }

    /// Replaces the symbols by those of the segment starting at byte `pos`, which ends where
    /// no merge can ever cross (between two characters adjacent in no piece, or next to a
    /// user-defined symbol), and returns the byte offset of that end.
    fn split_segment(&mut self, matcher: &PrefixMatcher, mut pos: usize) -> usize {
        self.symbols.clear();
        while pos < self.normalized.len() {
            let (len, id) = self.symbol_at(matcher, pos);
            if let Some(last) = self.symbols.last() {
                if !self.vocab.has_unused && !self.vocab.merges.may_join(last.id, id) {
                    break;
                }
            }
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
        if let Some(last) = self.symbols.last_mut() {
            last.next = NONE;
        }
        pos
    }

    fn bytes(&self, start: u32, len: u32) -> &'a [u8] {
        &self.normalized[start as usize..(start + len) as usize]
    }

    /// The piece formed by merging `left` and `right`, if any, recording unused pieces for
    /// `rev_merge` (`MaybeAddNewSymbolPair` up to the queueing).
    fn pair_piece(&mut self, left: u32, right: u32) -> Option<u32> {
        if left == NONE || right == NONE {
            return None;
        }
        let (l, r) = (self.symbols[left as usize], self.symbols[right as usize]);
        let id = self.vocab.merges.merge(l.id, r.id)?;
        if self.vocab.kind(id) == PieceType::Unused {
            self.rev_merge
                .insert(id, ((l.start, l.len, l.id), (r.start, r.len, r.id)));
        }
        Some(id)
    }

    /// Queues the merge of `left` and `right` in the binary heap if their concatenation is a
    /// piece.
    fn add_pair(&mut self, left: u32, right: u32) {
        if let Some(id) = self.pair_piece(left, right) {
            let (l, r) = (self.symbols[left as usize], self.symbols[right as usize]);
            self.agenda.push(Pair {
                score: self.vocab.scores[id as usize],
                left,
                right,
                size: l.len + r.len,
                id,
            });
        }
    }

    /// Queues the merge of `left` and `right` in the bucket queue if their concatenation is a
    /// piece.
    fn add_pair_long(&mut self, left: u32, right: u32) {
        if let Some(id) = self.pair_piece(left, right) {
            let key = score_key(self.vocab.scores[id as usize]);
            self.buckets.push(key, left);
        }
    }

    /// Merges symbol `right` into its left neighbour `left`, forming piece `id`.
    fn join(&mut self, left: u32, right: u32, id: u32) {
        let r = self.symbols[right as usize];
        let l = &mut self.symbols[left as usize];
        l.len += r.len;
        l.id = id;
        l.next = r.next;
        if r.next != NONE {
            self.symbols[r.next as usize].prev = left;
        }
        self.symbols[right as usize].len = 0;
    }

    /// Runs the merges of the segment's `n` symbols with a binary heap.
    fn merge(&mut self, n: usize) {
        for i in 1..n {
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
            self.join(top.left, top.right, top.id);
            self.add_pair(l.prev, top.left);
            self.add_pair(top.left, r.next);
        }
    }

    /// Runs the merges of the segment's `n` symbols with the bucket queue: the same merges in
    /// the same order as [`Self::merge`].
    ///
    /// A queued entry holds only its score key and left symbol. It is current when that symbol
    /// is alive and merging it with its right neighbour forms a piece of the same score key:
    /// then the pair (left, its neighbour) exists now, has exactly the priority popped (the
    /// largest of all queued, and every existing pair is queued), so merging it is what the
    /// heap would do next. Otherwise it is stale and skipped.
    fn merge_long(&mut self, n: usize) {
        self.buckets = BucketQueue::default();
        for i in 1..n {
            self.add_pair_long(i as u32 - 1, i as u32);
        }
        while let Some((key, left)) = self.buckets.pop() {
            let l = self.symbols[left as usize];
            if l.len == 0 || l.next == NONE {
                continue;
            }
            let right = l.next;
            let r = self.symbols[right as usize];
            let Some(id) = self.vocab.merges.merge(l.id, r.id) else {
                continue;
            };
            if score_key(self.vocab.scores[id as usize]) != key {
                continue;
            }
            self.join(left, right, id);
            self.add_pair_long(l.prev, left);
            self.add_pair_long(left, r.next);
        }
        self.buckets = BucketQueue::default();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{Family, Tokenizer};

    const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/golden");

    /// The ids of `text` with every segment merged through the binary heap and through the
    /// bucket queue.
    fn both(tok: &Tokenizer, text: &str) -> (Vec<u32>, Vec<u32>) {
        let crate::tokenizer::Model::Spm(tok) = &tok.model else {
            panic!("a SentencePiece tokenizer");
        };
        let mut normalized = Vec::new();
        tok.normalizer
            .normalize_into(text, &tok.user_defined, &mut normalized);
        let (mut heap, mut buckets) = (Vec::new(), Vec::new());
        encode_with(
            &tok.vocab,
            &tok.user_defined,
            &normalized,
            &mut heap,
            usize::MAX,
        );
        encode_with(&tok.vocab, &tok.user_defined, &normalized, &mut buckets, 0);
        (heap, buckets)
    }

    #[test]
    fn score_key_orders_as_total_cmp() {
        let scores = [
            f32::NEG_INFINITY,
            -3.5,
            -1.0,
            -0.0,
            0.0,
            1e-30,
            2.0,
            f32::INFINITY,
        ];
        for a in scores {
            for b in scores {
                assert_eq!(score_key(a).cmp(&score_key(b)), b.total_cmp(&a), "{a} {b}");
            }
        }
    }

    #[test]
    fn bucket_queue_merges_as_the_heap() {
        let corpus = std::fs::read_to_string(format!("{GOLDEN}/corpus.txt")).expect("corpus");
        let lines: Vec<&str> = corpus.lines().step_by(7).take(300).collect();
        let mut texts: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        texts.push(lines.join("\n"));
        for unit in [" ", "  a", "ab", "的", "\t ", " x  yy   ", "0"] {
            for n in [1, 2, 3, 15, 16, 17, 33, 300] {
                texts.push(unit.repeat(n));
            }
        }
        for model in ["tokenizer_identity.model", "tokenizer_nfkc.model"] {
            let tok = Tokenizer::from_spm_file(format!("{GOLDEN}/{model}"), Family::ChatGlm3)
                .expect("toy tokenizer");
            for t in &texts {
                let (heap, buckets) = both(&tok, t);
                assert_eq!(heap, buckets, "{model}: {t:?}");
            }
        }
    }
}
