//! The vocabulary: pieces, scores and types, the lookup tables SentencePiece builds from them,
//! and the ChatGLM special tokens appended after the SentencePiece pieces.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::merges::MergeTable;
use super::{Family, PieceType, TokenizerError, VocabError};

pub use crate::arch::{CHATGLM1_SPECIAL_PIECES, CHATGLM2_SPECIAL_TOKENS, CHATGLM3_ROLE_TOKENS};

/// Ids of the ChatGLM special tokens: right after the SentencePiece pieces for ChatGLM2/3,
/// SentencePiece pieces themselves for ChatGLM-6B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// `[MASK]` (= the SentencePiece vocabulary size).
    pub mask: u32,
    /// `[gMASK]`, the first token of every prompt.
    pub gmask: u32,
    /// `[sMASK]`.
    pub smask: u32,
    /// `sop`, the second token of every prompt.
    pub sop: u32,
    /// `eop`.
    pub eop: u32,
    /// The ChatGLM3 role tokens (`None` for ChatGLM2).
    pub roles: Option<RoleIds>,
}

/// Ids of the ChatGLM3 role tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleIds {
    /// `<|system|>`.
    pub system: u32,
    /// `<|user|>`.
    pub user: u32,
    /// `<|assistant|>`.
    pub assistant: u32,
    /// `<|observation|>`.
    pub observation: u32,
}

impl SpecialIds {
    /// The ids for a SentencePiece vocabulary of `n` pieces.
    pub(crate) fn after(n: u32, family: Family) -> Self {
        Self {
            mask: n,
            gmask: n + 1,
            smask: n + 2,
            sop: n + 3,
            eop: n + 4,
            roles: match family {
                Family::ChatGlm1 | Family::ChatGlm2 | Family::CodeGeeX2 | Family::Glm4 => None,
                Family::ChatGlm3 => Some(RoleIds {
                    system: n + 5,
                    user: n + 6,
                    assistant: n + 7,
                    observation: n + 8,
                }),
            },
        }
    }

    /// How many special tokens there are (5 or 9; ChatGLM-6B has 5, found among its pieces).
    pub fn count(&self) -> u32 {
        if self.roles.is_some() {
            9
        } else {
            5
        }
    }
}

/// The special token texts of a family, in id order.
pub(crate) fn special_tokens(family: Family) -> impl Iterator<Item = &'static str> {
    family.special_tokens().iter().copied()
}

/// A fast, non-cryptographic hasher for piece lookups (the rustc "Fx" multiply-rotate scheme;
/// vocabularies are trusted enough that hash flooding is not a concern, and a hostile one can
/// only make encoding slower).
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Piece text -> id.
pub(crate) type PieceMap = HashMap<Box<[u8]>, u32, BuildHasherDefault<FxHasher>>;

/// The vocabulary and SentencePiece's lookup tables over its first `sp_size` pieces
/// (`ModelInterface::InitializePieces`, google/sentencepiece `src/model_interface.cc`).
#[derive(Debug, Clone)]
pub(crate) struct Vocab {
    pub(crate) pieces: Vec<String>,
    /// Scores (all finite) with -0.0 folded into 0.0, so that a total order on them agrees
    /// with C++'s `<`.
    pub(crate) scores: Vec<f32>,
    pub(crate) kinds: Vec<PieceType>,
    /// Number of SentencePiece pieces; ids from here on are ChatGLM specials and padding.
    pub(crate) sp_size: usize,
    /// SentencePiece's `pieces_`: normal, user-defined and unused pieces (the ones BPE may form).
    pub(crate) mergeable: PieceMap,
    /// SentencePiece's `reserved_id_map_`: unknown, control and byte pieces.
    pub(crate) reserved: PieceMap,
    pub(crate) unk_id: u32,
    /// Id of the byte piece `<0xNN>` for every byte (`None` without byte fallback).
    pub(crate) byte_ids: Option<Box<[u32; 256]>>,
    /// For each id, the byte of a byte piece.
    pub(crate) byte_values: Vec<Option<u8>>,
    pub(crate) specials: SpecialIds,
    /// How many ChatGLM specials follow the SentencePiece pieces (0 for ChatGLM-6B, whose
    /// specials are SentencePiece pieces).
    pub(crate) appended: u32,
    /// Whether any SentencePiece piece has the unused type.
    pub(crate) has_unused: bool,
    /// Merge lookups by symbol id.
    pub(crate) merges: MergeTable,
    /// For each mergeable piece id, what `PieceToId` returns for its text (a reserved piece with
    /// the same text takes precedence).
    pub(crate) resolved: Vec<u32>,
}

/// `<0xNN>` (two upper-case hex digits) -> the byte, as SentencePiece's `PieceToByte`.
fn piece_to_byte(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

impl Vocab {
    pub(crate) fn new(
        pieces: Vec<String>,
        scores: Vec<f32>,
        kinds: Vec<PieceType>,
        sp_size: usize,
        family: Family,
    ) -> Result<Self, TokenizerError> {
        let err = |e: VocabError| Err(TokenizerError::Vocab(e));
        if pieces.len() != scores.len() || pieces.len() != kinds.len() {
            return err(VocabError::LengthMismatch {
                tokens: pieces.len(),
                scores: scores.len(),
                types: kinds.len(),
            });
        }
        let max = u32::MAX as usize / 2;
        if pieces.len() > max {
            return err(VocabError::TooManyTokens {
                tokens: pieces.len(),
                max,
            });
        }
        // The specials follow the SentencePiece pieces; checked before any id arithmetic.
        let count = special_tokens(family).count();
        if sp_size > pieces.len() || pieces.len() - sp_size < count {
            return err(VocabError::SpVocabSizeOutOfRange {
                sp_vocab_size: sp_size,
                specials: count,
                tokens: pieces.len(),
            });
        }
        for (i, name) in special_tokens(family).enumerate() {
            let id = sp_size + i;
            if pieces[id] != name {
                return err(VocabError::SpecialTokenMisplaced {
                    expected: name,
                    id,
                    found: pieces[id].clone(),
                });
            }
        }
        if let Some((id, &score)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
            return err(VocabError::NonFiniteScore { id, score });
        }

        let mut mergeable = PieceMap::default();
        let mut reserved = PieceMap::default();
        let mut unk_id = None;
        let mut byte_values = vec![None; pieces.len()];
        let mut byte_found = [false; 256];
        let mut any_byte = false;
        for (id, (piece, &kind)) in pieces.iter().zip(&kinds).enumerate().take(sp_size) {
            if piece.is_empty() {
                return err(VocabError::EmptyPiece { id });
            }
            let map = match kind {
                PieceType::Normal | PieceType::UserDefined | PieceType::Unused => &mut mergeable,
                PieceType::Unknown | PieceType::Control | PieceType::Byte => &mut reserved,
            };
            if map.insert(piece.as_bytes().into(), id as u32).is_some() {
                return err(VocabError::DuplicatePiece {
                    piece: piece.clone(),
                    id,
                });
            }
            match kind {
                PieceType::Unknown => {
                    if let Some(first) = unk_id {
                        return err(VocabError::TwoUnknownPieces { first, second: id });
                    }
                    unk_id = Some(id as u32);
                }
                PieceType::Byte => {
                    let Some(b) = piece_to_byte(piece) else {
                        return err(VocabError::BadBytePiece {
                            piece: piece.clone(),
                            id,
                        });
                    };
                    byte_values[id] = Some(b);
                    byte_found[usize::from(b)] = true;
                    any_byte = true;
                }
                _ => {}
            }
        }
        let Some(unk_id) = unk_id else {
            return err(VocabError::NoUnknownPiece);
        };
        let specials = match family {
            Family::ChatGlm1 => {
                let find = |name: &'static str| match mergeable.get(name.as_bytes()) {
                    Some(&id) if kinds[id as usize] == PieceType::UserDefined => Ok(id),
                    _ => Err(TokenizerError::Vocab(VocabError::SpecialPieceMissing(name))),
                };
                let [mask, gmask, smask, sop, eop] = CHATGLM1_SPECIAL_PIECES;
                SpecialIds {
                    mask: find(mask)?,
                    gmask: find(gmask)?,
                    smask: find(smask)?,
                    sop: find(sop)?,
                    eop: find(eop)?,
                    roles: None,
                }
            }
            _ => SpecialIds::after(sp_size as u32, family),
        };
        // SentencePiece ties byte pieces to `byte_fallback`: byte pieces exist iff it is on, and
        // then all 256 must be there. So byte fallback is on exactly when byte pieces exist.
        let byte_ids = if any_byte {
            if let Some(b) = byte_found.iter().position(|f| !f) {
                return err(VocabError::MissingBytePiece(b as u8));
            }
            let mut ids = Box::new([0u32; 256]);
            for (b, slot) in ids.iter_mut().enumerate() {
                let name = format!("<0x{b:02X}>");
                *slot = reserved
                    .get(name.as_bytes())
                    .or_else(|| mergeable.get(name.as_bytes()))
                    .copied()
                    .unwrap_or(unk_id);
            }
            Some(ids)
        } else {
            None
        };
        let scores = scores
            .into_iter()
            .map(|s| if s == 0.0 { 0.0 } else { s })
            .collect();
        let has_unused = kinds[..sp_size].contains(&PieceType::Unused);
        let merges = MergeTable::new(&mergeable);
        let mut resolved: Vec<u32> = (0..sp_size as u32).collect();
        for (piece, &id) in &mergeable {
            if let Some(&r) = reserved.get(piece) {
                resolved[id as usize] = r;
            }
        }
        Ok(Self {
            pieces,
            scores,
            kinds,
            sp_size,
            mergeable,
            reserved,
            unk_id,
            byte_ids,
            byte_values,
            specials,
            appended: count as u32,
            has_unused,
            merges,
            resolved,
        })
    }

    /// SentencePiece's `PieceToId` restricted to the SentencePiece pieces: reserved pieces
    /// first, then the others, `None` when unknown.
    pub(crate) fn piece_to_id(&self, piece: &[u8]) -> Option<u32> {
        self.reserved
            .get(piece)
            .or_else(|| self.mergeable.get(piece))
            .copied()
    }

    /// The kind of a known id.
    pub(crate) fn kind(&self, id: u32) -> PieceType {
        self.kinds
            .get(id as usize)
            .copied()
            .unwrap_or(PieceType::Unused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_piece_names() {
        assert_eq!(piece_to_byte("<0x0A>"), Some(10));
        assert_eq!(piece_to_byte("<0xFF>"), Some(255));
        assert_eq!(piece_to_byte("<0xff>"), None);
        assert_eq!(piece_to_byte("<0x+F>"), None);
        assert_eq!(piece_to_byte("<0x0A"), None);
        assert_eq!(piece_to_byte("<0x100>"), None);
    }
}
