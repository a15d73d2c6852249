//! A reader of SentencePiece's serialized `ModelProto` (the `tokenizer.model` file).
//!
//! The schema is `sentencepiece_model.proto` (google/sentencepiece, `src/sentencepiece_model.proto`,
//! commit 05db0894d8ea44b203c3501306061cde9e42c48e). Only the fields that matter for encoding and
//! decoding are kept; every other field, of any wire type, is skipped. The file is treated as
//! hostile: every length is checked against the remaining bytes and every problem is an error
//! naming the byte offset, never a panic.
//!
//! proto2 semantics are honoured: an absent field has its declared default (for example
//! `add_dummy_prefix = true`, `pad_id = -1`), a scalar field that appears several times keeps its
//! last value, an embedded message that appears several times is merged, and an enum value this
//! reader does not know leaves the field at its default (proto2 keeps unknown enum values out of
//! the field).

use std::path::Path;

use super::TokenizerError;

/// A parsed SentencePiece model: the vocabulary and the settings that drive encoding.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpmModel {
    /// The pieces in id order (`ModelProto.pieces`, field 1).
    pub pieces: Vec<SpmPiece>,
    /// How text is normalized before segmentation (`ModelProto.normalizer_spec`, field 3).
    pub normalizer: NormalizerSpec,
    /// The training settings (`ModelProto.trainer_spec`, field 2); a few of them matter for encoding.
    pub trainer: TrainerSpec,
    /// How text is de-normalized after decoding (`ModelProto.denormalizer_spec`, field 5), if present.
    pub denormalizer: Option<NormalizerSpec>,
}

/// One vocabulary entry (`ModelProto.SentencePiece`).
#[derive(Debug, Clone, PartialEq)]
pub struct SpmPiece {
    /// The piece text (field 1); spaces appear as U+2581 `▁`.
    pub piece: String,
    /// The piece score (field 2, default 0); for BPE, higher scores merge first.
    pub score: f32,
    /// What kind of piece this is (field 3, default [`PieceType::Normal`]).
    pub kind: PieceType,
}

/// `ModelProto.SentencePiece.Type`. The numeric values are SentencePiece's, which are also
/// llama.cpp's `tokenizer.ggml.token_type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(i32)]
pub enum PieceType {
    /// An ordinary piece produced by segmentation.
    #[default]
    Normal = 1,
    /// The unknown piece (`<unk>`).
    Unknown = 2,
    /// A control symbol (`<s>`, `</s>`, ...): never produced from text.
    Control = 3,
    /// A user-defined symbol: always matched whole in the text.
    UserDefined = 4,
    /// A piece that is not used (never produced from text).
    Unused = 5,
    /// A byte piece `<0xNN>` used for byte fallback.
    Byte = 6,
}

impl PieceType {
    /// The type with SentencePiece's numeric value `v`, if there is one.
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }
}

/// `TrainerSpec.ModelType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(i32)]
pub enum ModelType {
    /// Unigram language model (the proto default).
    #[default]
    Unigram = 1,
    /// Byte-pair encoding (what ChatGLM uses).
    Bpe = 2,
    /// Whitespace-delimited words.
    Word = 3,
    /// Characters.
    Char = 4,
}

impl ModelType {
    /// The model type with SentencePiece's numeric value `v`, if there is one.
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            1 => Self::Unigram,
            2 => Self::Bpe,
            3 => Self::Word,
            4 => Self::Char,
            _ => return None,
        })
    }
}

/// `NormalizerSpec`: how text is normalized before segmentation.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizerSpec {
    /// Name of the rule (field 1), e.g. `identity` or `nmt_nfkc`.
    pub name: String,
    /// The compiled normalization rules (field 2): a darts-clone trie plus the replacement strings.
    /// Empty for `identity`.
    pub precompiled_charsmap: Vec<u8>,
    /// Prepend a space to the text (field 3, default true).
    pub add_dummy_prefix: bool,
    /// Drop leading and trailing spaces and collapse runs of spaces (field 4, default true).
    pub remove_extra_whitespaces: bool,
    /// Replace spaces with U+2581 `▁` (field 5, default true).
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// `TrainerSpec`: the training settings, of which a few matter for encoding.
///
/// `split_digits`, `allow_whitespace_only_pieces` and `split_by_whitespace` shape the vocabulary
/// during training only; SentencePiece's BPE encoder does not read them (the learned pieces already
/// reflect them). `byte_fallback`, `treat_whitespace_as_suffix`, the special ids and `unk_surface`
/// do matter.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerSpec {
    /// The segmentation algorithm (field 3, default unigram).
    pub model_type: ModelType,
    /// Requested vocabulary size (field 4, default 8000).
    pub vocab_size: i32,
    /// Unknown characters are spelled with byte pieces `<0xNN>` (field 35, default false).
    pub byte_fallback: bool,
    /// Digits were split into single pieces during training (field 25, default false).
    pub split_digits: bool,
    /// The dummy space goes at the end of words instead of the start (field 24, default false).
    pub treat_whitespace_as_suffix: bool,
    /// Whitespace-only pieces were allowed during training (field 26, default false).
    pub allow_whitespace_only_pieces: bool,
    /// Pieces were not allowed to cross whitespace during training (field 22, default true).
    pub split_by_whitespace: bool,
    /// Id of `<unk>` (field 40, default 0).
    pub unk_id: i32,
    /// Id of `<s>` (field 41, default 1; -1 = none).
    pub bos_id: i32,
    /// Id of `</s>` (field 42, default 2; -1 = none).
    pub eos_id: i32,
    /// Id of `<pad>` (field 43, default -1 = none).
    pub pad_id: i32,
    /// Text of the unknown piece (field 45, default `<unk>`).
    pub unk_piece: String,
    /// Text of the begin-of-sentence piece (field 46, default `<s>`).
    pub bos_piece: String,
    /// Text of the end-of-sentence piece (field 47, default `</s>`).
    pub eos_piece: String,
    /// Text of the padding piece (field 48, default `<pad>`).
    pub pad_piece: String,
    /// What decoding prints for `<unk>` (field 44, default `" \u{2047} "`).
    pub unk_surface: String,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        Self {
            model_type: ModelType::Unigram,
            vocab_size: 8000,
            byte_fallback: false,
            split_digits: false,
            treat_whitespace_as_suffix: false,
            allow_whitespace_only_pieces: false,
            split_by_whitespace: true,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
            unk_piece: "<unk>".to_owned(),
            bos_piece: "<s>".to_owned(),
            eos_piece: "</s>".to_owned(),
            pad_piece: "<pad>".to_owned(),
            unk_surface: " \u{2047} ".to_owned(),
        }
    }
}

impl SpmModel {
    /// Parses a serialized `ModelProto`.
    pub fn parse(bytes: &[u8]) -> Result<Self, TokenizerError> {
        let mut model = SpmModel::default();
        let mut r = Reader::new(bytes, 0);
        while let Some(f) = r.next_field()? {
            match f.number {
                1 => model
                    .pieces
                    .push(SpmPiece::parse(f.bytes()?, f.payload_offset)?),
                2 => model.trainer.merge(f.bytes()?, f.payload_offset)?,
                3 => model.normalizer.merge(f.bytes()?, f.payload_offset)?,
                5 => model
                    .denormalizer
                    .get_or_insert_with(NormalizerSpec::default)
                    .merge(f.bytes()?, f.payload_offset)?,
                _ => {}
            }
        }
        Ok(model)
    }

    /// Reads and parses a `tokenizer.model` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&bytes)
    }
}

impl SpmPiece {
    fn parse(bytes: &[u8], base: usize) -> Result<Self, TokenizerError> {
        let mut piece = SpmPiece {
            piece: String::new(),
            score: 0.0,
            kind: PieceType::Normal,
        };
        let mut r = Reader::new(bytes, base);
        while let Some(f) = r.next_field()? {
            match f.number {
                1 => piece.piece = f.string()?,
                2 => piece.score = f.float()?,
                3 => {
                    if let Some(kind) = PieceType::from_i32(f.int32()?) {
                        piece.kind = kind;
                    }
                }
                _ => {}
            }
        }
        Ok(piece)
    }
}

impl NormalizerSpec {
    fn merge(&mut self, bytes: &[u8], base: usize) -> Result<(), TokenizerError> {
        let mut r = Reader::new(bytes, base);
        while let Some(f) = r.next_field()? {
            match f.number {
                1 => self.name = f.string()?,
                2 => self.precompiled_charsmap = f.bytes()?.to_vec(),
                3 => self.add_dummy_prefix = f.bool()?,
                4 => self.remove_extra_whitespaces = f.bool()?,
                5 => self.escape_whitespaces = f.bool()?,
                _ => {}
            }
        }
        Ok(())
    }
}

impl TrainerSpec {
    fn merge(&mut self, bytes: &[u8], base: usize) -> Result<(), TokenizerError> {
        let mut r = Reader::new(bytes, base);
        while let Some(f) = r.next_field()? {
            match f.number {
                3 => {
                    if let Some(t) = ModelType::from_i32(f.int32()?) {
                        self.model_type = t;
                    }
                }
                4 => self.vocab_size = f.int32()?,
                22 => self.split_by_whitespace = f.bool()?,
                24 => self.treat_whitespace_as_suffix = f.bool()?,
                25 => self.split_digits = f.bool()?,
                26 => self.allow_whitespace_only_pieces = f.bool()?,
                35 => self.byte_fallback = f.bool()?,
                40 => self.unk_id = f.int32()?,
                41 => self.bos_id = f.int32()?,
                42 => self.eos_id = f.int32()?,
                43 => self.pad_id = f.int32()?,
                44 => self.unk_surface = f.string()?,
                45 => self.unk_piece = f.string()?,
                46 => self.bos_piece = f.string()?,
                47 => self.eos_piece = f.string()?,
                48 => self.pad_piece = f.string()?,
                _ => {}
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Protobuf wire format.

/// Groups (wire types 3 and 4, deprecated) nest; a crafted file must not overflow the stack.
const MAX_GROUP_DEPTH: usize = 64;

/// The payload of one field.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
    Group,
}

/// One field of a message: its number and payload.
struct Field<'a> {
    number: u32,
    value: Value<'a>,
    /// Offset of the tag in the whole file (for errors).
    tag_offset: usize,
    /// Offset of the payload in the whole file (for errors in embedded messages).
    payload_offset: usize,
}

impl<'a> Field<'a> {
    fn error(&self, expected: &str) -> TokenizerError {
        TokenizerError::Proto {
            offset: self.tag_offset,
            what: format!("field {} should be {expected}", self.number),
        }
    }

    fn varint(&self) -> Result<u64, TokenizerError> {
        match self.value {
            Value::Varint(v) => Ok(v),
            _ => Err(self.error("a varint")),
        }
    }

    /// An `int32` (negative values are sign-extended to 64 bits on the wire; truncating is the
    /// protobuf rule).
    fn int32(&self) -> Result<i32, TokenizerError> {
        Ok(self.varint()? as i32)
    }

    fn bool(&self) -> Result<bool, TokenizerError> {
        Ok(self.varint()? != 0)
    }

    fn float(&self) -> Result<f32, TokenizerError> {
        match self.value {
            Value::Fixed32(v) => Ok(f32::from_bits(v)),
            _ => Err(self.error("a fixed32 float")),
        }
    }

    fn bytes(&self) -> Result<&'a [u8], TokenizerError> {
        match self.value {
            Value::Bytes(b) => Ok(b),
            _ => Err(self.error("length-delimited")),
        }
    }

    fn string(&self) -> Result<String, TokenizerError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|e| TokenizerError::Proto {
            offset: self.payload_offset + e.utf8_error().valid_up_to(),
            what: format!("field {} is not valid UTF-8", self.number),
        })
    }
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` in the whole file.
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn error(&self, at: usize, what: impl Into<String>) -> TokenizerError {
        TokenizerError::Proto {
            offset: self.base + at,
            what: what.into(),
        }
    }

    fn varint(&mut self) -> Result<u64, TokenizerError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.error(start, "truncated varint"));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.error(start, "varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenizerError> {
        let start = self.pos;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                self.error(
                    start,
                    format!(
                        "{n} bytes needed, {} left",
                        self.buf.len().saturating_sub(start)
                    ),
                )
            })?;
        self.pos = end;
        Ok(&self.buf[start..end])
    }

    /// Reads a tag; returns the field number and wire type.
    fn tag(&mut self) -> Result<(u32, u8), TokenizerError> {
        let at = self.pos;
        let tag = self.varint()?;
        let number = tag >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(self.error(at, format!("invalid field number {number}")));
        }
        Ok((number as u32, (tag & 7) as u8))
    }

    /// The next field, or `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<Field<'a>>, TokenizerError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let tag_offset = self.base + self.pos;
        let (number, wire) = self.tag()?;
        let payload_offset = self.base + self.pos;
        let value = self.value(number, wire, tag_offset, 0)?;
        Ok(Some(Field {
            number,
            value,
            tag_offset,
            payload_offset,
        }))
    }

    /// Reads the payload of a field whose tag has been read.
    fn value(
        &mut self,
        number: u32,
        wire: u8,
        tag_offset: usize,
        depth: usize,
    ) -> Result<Value<'a>, TokenizerError> {
        Ok(match wire {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let at = self.pos;
                let len = self.varint()?;
                let len = usize::try_from(len)
                    .map_err(|_| self.error(at, format!("length {len} too large")))?;
                Value::Bytes(self.take(len)?)
            }
            3 => {
                self.skip_group(number, tag_offset, depth + 1)?;
                Value::Group
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            4 => {
                return Err(TokenizerError::Proto {
                    offset: tag_offset,
                    what: format!("unexpected end-group tag for field {number}"),
                })
            }
            w => {
                return Err(TokenizerError::Proto {
                    offset: tag_offset,
                    what: format!("invalid wire type {w} for field {number}"),
                })
            }
        })
    }

    /// Skips the fields of a group until its end-group tag.
    fn skip_group(
        &mut self,
        number: u32,
        tag_offset: usize,
        depth: usize,
    ) -> Result<(), TokenizerError> {
        if depth > MAX_GROUP_DEPTH {
            return Err(TokenizerError::Proto {
                offset: tag_offset,
                what: format!("groups nested deeper than {MAX_GROUP_DEPTH}"),
            });
        }
        loop {
            if self.pos >= self.buf.len() {
                return Err(TokenizerError::Proto {
                    offset: tag_offset,
                    what: format!("group for field {number} is not closed"),
                });
            }
            let inner_offset = self.base + self.pos;
            let (inner, wire) = self.tag()?;
            if wire == 4 {
                if inner == number {
                    return Ok(());
                }
                return Err(TokenizerError::Proto {
                    offset: inner_offset,
                    what: format!("end-group tag for field {inner} closes group {number}"),
                });
            }
            self.value(inner, wire, inner_offset, depth)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn tag(number: u32, wire: u8, out: &mut Vec<u8>) {
        varint(u64::from(number) << 3 | u64::from(wire), out);
    }

    fn bytes_field(number: u32, payload: &[u8], out: &mut Vec<u8>) {
        tag(number, 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    #[test]
    fn defaults_when_fields_absent() {
        let mut piece = Vec::new();
        bytes_field(1, "▁a".as_bytes(), &mut piece);
        let mut model = Vec::new();
        bytes_field(1, &piece, &mut model);
        bytes_field(2, &[], &mut model);
        let m = SpmModel::parse(&model).unwrap();
        assert_eq!(m.pieces.len(), 1);
        assert_eq!(m.pieces[0].piece, "▁a");
        assert_eq!(m.pieces[0].score, 0.0);
        assert_eq!(m.pieces[0].kind, PieceType::Normal);
        assert_eq!(m.trainer, TrainerSpec::default());
        assert_eq!(m.normalizer, NormalizerSpec::default());
        assert!(m.trainer.pad_id == -1 && m.normalizer.add_dummy_prefix);
        assert!(m.denormalizer.is_none());
    }

    #[test]
    fn negative_int32_and_unknown_fields_of_every_wire_type() {
        let mut trainer = Vec::new();
        tag(43, 0, &mut trainer);
        varint(-1i64 as u64, &mut trainer); // pad_id = -1 as a 10-byte varint
        tag(41, 0, &mut trainer);
        varint(7, &mut trainer);
        tag(99, 1, &mut trainer); // unknown fixed64
        trainer.extend_from_slice(&[1; 8]);
        tag(98, 5, &mut trainer); // unknown fixed32
        trainer.extend_from_slice(&[2; 4]);
        tag(97, 3, &mut trainer); // unknown group containing a varint and a nested group
        tag(1, 0, &mut trainer);
        varint(300, &mut trainer);
        tag(2, 3, &mut trainer);
        tag(2, 4, &mut trainer);
        tag(97, 4, &mut trainer);
        bytes_field(96, b"xyz", &mut trainer); // unknown bytes
        tag(35, 0, &mut trainer);
        varint(1, &mut trainer);
        let mut model = Vec::new();
        bytes_field(2, &trainer, &mut model);
        let m = SpmModel::parse(&model).unwrap();
        assert_eq!(m.trainer.pad_id, -1);
        assert_eq!(m.trainer.bos_id, 7);
        assert!(m.trainer.byte_fallback);
    }

    #[test]
    fn truncated_and_malformed_inputs_are_errors() {
        let mut piece = Vec::new();
        bytes_field(1, b"abc", &mut piece);
        let mut model = Vec::new();
        bytes_field(1, &piece, &mut model);
        for cut in 1..model.len() {
            assert!(SpmModel::parse(&model[..cut]).is_err(), "cut at {cut}");
        }
        // Wrong wire type for a known field.
        let mut bad = Vec::new();
        tag(1, 0, &mut bad);
        varint(5, &mut bad);
        assert!(SpmModel::parse(&bad).is_err());
        // Invalid UTF-8 piece.
        let mut p = Vec::new();
        bytes_field(1, &[0xff, 0xfe], &mut p);
        let mut m = Vec::new();
        bytes_field(1, &p, &mut m);
        assert!(SpmModel::parse(&m).is_err());
        // Huge length.
        let mut huge = Vec::new();
        tag(1, 2, &mut huge);
        varint(u64::MAX, &mut huge);
        assert!(SpmModel::parse(&huge).is_err());
        // Unclosed and deeply nested groups.
        let mut g = Vec::new();
        tag(9, 3, &mut g);
        assert!(SpmModel::parse(&g).is_err());
        let mut deep = Vec::new();
        for _ in 0..1000 {
            tag(9, 3, &mut deep);
        }
        assert!(SpmModel::parse(&deep).is_err());
        // Field number 0, stray end-group, wire types 6 and 7.
        assert!(SpmModel::parse(&[0x00]).is_err());
        assert!(SpmModel::parse(&[0x0c]).is_err());
        assert!(SpmModel::parse(&[0x0e]).is_err());
        assert!(SpmModel::parse(&[0x0f]).is_err());
    }

    #[test]
    fn repeated_embedded_messages_merge() {
        let mut n1 = Vec::new();
        bytes_field(1, b"nmt_nfkc", &mut n1);
        let mut n2 = Vec::new();
        tag(3, 0, &mut n2);
        varint(0, &mut n2);
        let mut model = Vec::new();
        bytes_field(3, &n1, &mut model);
        bytes_field(3, &n2, &mut model);
        let m = SpmModel::parse(&model).unwrap();
        assert_eq!(m.normalizer.name, "nmt_nfkc");
        assert!(!m.normalizer.add_dummy_prefix);
        assert!(m.normalizer.remove_extra_whitespaces);
    }
}
