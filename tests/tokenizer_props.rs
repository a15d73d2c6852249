//! Property tests of the tokenizer on the toy models: round trips, streaming decoding, and
//! hostile inputs.

use std::sync::OnceLock;

use chatglm::tokenizer::{DecodeMode, Family, SpmModel, Tokenizer, TokenizerError};
use proptest::prelude::*;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/golden");

fn identity() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizer::from_spm_file(
            format!("{GOLDEN}/tokenizer_identity.model"),
            Family::ChatGlm3,
        )
        .unwrap()
    })
}

fn nfkc() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizer::from_spm_file(format!("{GOLDEN}/tokenizer_nfkc.model"), Family::ChatGlm3)
            .unwrap()
    })
}

/// Text mixing what the models know (ASCII, common Chinese) with what they must spell in bytes
/// (rare CJK, emoji, other scripts, control characters) and whitespace runs.
fn mixed_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z0-9 ,.!?'\"-]{1,12}",
        "[你好世界的是了我不人在有这中大来上个国和也子时道出而要于就下得可]{1,6}",
        "[\u{4e00}-\u{9fff}]{1,3}",
        "[\u{20000}-\u{2a6df}]{1,2}",
        "[\u{1f300}-\u{1f6ff}\u{200d}\u{fe0f}]{1,3}",
        "[ \t\n\r\u{3000}\u{a0}]{1,4}",
        "[\u{0}-\u{1f}\u{7f}]{1,2}",
        "[ａ-ｚＡ-Ｚ０-９]{1,4}",
        "[αβγδεζηθабвгдеж]{1,5}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

/// Concatenates the streaming decoder's chunks for `ids`.
fn stream(tok: &Tokenizer, ids: &[u32], mode: DecodeMode) -> Result<Vec<String>, TokenizerError> {
    let mut d = tok.stream_decoder(mode);
    let mut chunks = Vec::new();
    for &id in ids {
        chunks.push(d.push(tok, id)?);
    }
    chunks.push(d.finish());
    Ok(chunks)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// With identity normalization, dummy prefix and no whitespace removal, decoding undoes
    /// encoding for every text that does not itself contain U+2581 (which decodes to a space).
    #[test]
    fn tokenizer_identity_round_trip(s in mixed_text()) {
        prop_assume!(!s.contains('\u{2581}'));
        let tok = identity();
        let ids = tok.encode(&s);
        prop_assert!(ids.iter().all(|&id| (id as usize) < tok.sp_vocab_size()));
        prop_assert_eq!(tok.decode(&ids).unwrap(), s.clone());
        prop_assert_eq!(tok.decode_with(&ids, DecodeMode::SentencePiece).unwrap(), s.clone());
        // With the prompt prefix, the specials vanish and the dummy space still goes.
        prop_assert_eq!(tok.decode(&tok.encode_with_prefix(&s)).unwrap(), s);
    }

    #[test]
    fn tokenizer_identity_round_trip_any_string(s in any::<String>()) {
        prop_assume!(!s.contains('\u{2581}'));
        let tok = identity();
        prop_assert_eq!(tok.decode(&tok.encode(&s)).unwrap(), s);
    }

    /// NFKC normalization is idempotent through the tokenizer: what decoding gives back encodes
    /// to the same ids.
    #[test]
    fn tokenizer_nfkc_decode_is_a_fixed_point(s in mixed_text()) {
        prop_assume!(!s.contains('\u{2581}'));
        let tok = nfkc();
        let ids = tok.encode(&s);
        let text = tok.decode(&ids).unwrap();
        prop_assert_eq!(tok.encode(&text), ids);
    }

    /// Streaming the ids of real text: the chunks add up to the text, and no chunk holds a
    /// replacement character (a character split across byte pieces is never emitted early).
    #[test]
    fn tokenizer_stream_never_splits_characters(s in mixed_text()) {
        prop_assume!(!s.contains('\u{2581}'));
        let tok = identity();
        let ids = tok.encode_with_prefix(&s);
        let chunks = stream(tok, &ids, DecodeMode::SkipSpecial).unwrap();
        prop_assert_eq!(chunks.concat(), s);
        prop_assert!(chunks.iter().all(|c| !c.contains(char::REPLACEMENT_CHARACTER)), "chunks {:?}", chunks);
    }

    /// Streaming any id sequence (bytes cut anywhere, specials, padding, unknown) gives exactly
    /// the batch decoding, in every mode.
    #[test]
    fn tokenizer_stream_equals_batch_decode(
        raw in prop::collection::vec(
            prop_oneof![
                3u32..259,          // byte pieces
                0u32..3,            // unk, bos, eos
                259u32..2200,       // ordinary pieces
                2200u32..2209,      // ChatGLM3 specials
            ],
            0..40,
        ),
    ) {
        let tok = identity();
        for mode in [DecodeMode::SkipSpecial, DecodeMode::RenderSpecial, DecodeMode::SentencePiece] {
            let batch = tok.decode_with(&raw, mode);
            let streamed = stream(tok, &raw, mode);
            match (batch, streamed) {
                (Ok(b), Ok(chunks)) => prop_assert_eq!(chunks.concat(), b),
                (Err(_), Err(_)) => prop_assert_eq!(mode, DecodeMode::SentencePiece),
                (b, s) => prop_assert!(false, "batch {:?} vs stream {:?}", b, s),
            }
        }
        let tok = nfkc();
        let raw: Vec<u32> = raw.iter().map(|&id| if id >= 2200 { id + 800 } else { id }).collect();
        let chunks = stream(tok, &raw, DecodeMode::SkipSpecial).unwrap();
        prop_assert_eq!(chunks.concat(), tok.decode(&raw).unwrap());
    }

    /// Arbitrary bytes are never a panic for the model reader.
    #[test]
    fn tokenizer_proto_parse_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = SpmModel::parse(&bytes);
    }

    /// A real model with a few bytes overwritten: parsing, building and encoding never panic.
    #[test]
    fn tokenizer_corrupted_model_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        s in mixed_text(),
    ) {
        static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
        let bytes = BYTES.get_or_init(|| std::fs::read(format!("{GOLDEN}/tokenizer_nfkc.model")).unwrap());
        let mut bytes = bytes.clone();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(model) = SpmModel::parse(&bytes) {
            if let Ok(tok) = Tokenizer::from_spm(model, Family::ChatGlm2) {
                let ids = tok.encode(&s);
                let _ = tok.decode(&ids);
            }
        }
    }
}

#[test]
fn tokenizer_stream_holds_back_partial_characters() {
    let tok = identity();
    // "𠀀" (U+20000) is not in the toy vocabulary: four byte pieces.
    let ids = tok.encode("𠀀");
    let pieces: Vec<&str> = ids.iter().map(|&id| tok.id_to_piece(id).unwrap()).collect();
    assert_eq!(pieces, ["▁", "<0xF0>", "<0xA0>", "<0x80>", "<0x80>"]);
    let mut d = tok.stream_decoder(DecodeMode::SkipSpecial);
    let chunks: Vec<String> = ids.iter().map(|&id| d.push(tok, id).unwrap()).collect();
    assert_eq!(chunks, ["", "", "", "", "𠀀"]);
    assert_eq!(d.finish(), "");
    // Cut short, the held bytes come out of finish() as one U+FFFD per byte, as in batch.
    let mut d = tok.stream_decoder(DecodeMode::SkipSpecial);
    for &id in &ids[..3] {
        assert_eq!(d.push(tok, id).unwrap(), "");
    }
    assert_eq!(d.finish(), "\u{fffd}\u{fffd}");
    assert_eq!(tok.decode(&ids[..3]).unwrap(), "\u{fffd}\u{fffd}");
    // A non-byte token in the middle ends the run.
    let eos = tok.eos_id().unwrap();
    let mut cut = ids[..3].to_vec();
    cut.push(eos);
    cut.extend_from_slice(&ids[3..]);
    assert_eq!(tok.decode(&cut).unwrap(), "\u{fffd}".repeat(4));
    assert_eq!(
        stream(tok, &cut, DecodeMode::SkipSpecial).unwrap().concat(),
        "\u{fffd}".repeat(4)
    );
}

#[test]
fn tokenizer_decode_dummy_prefix_rules() {
    // SentencePiece `Decode`: only the first piece loses its U+2581, unless
    // remove_extra_whitespaces is on, in which case every leading one does.
    for (tok, expect) in [(identity(), " a"), (nfkc(), "a")] {
        let space = tok.piece_to_id("▁").unwrap();
        let a = tok.piece_to_id("a").unwrap();
        assert_eq!(tok.decode(&[space, space, a]).unwrap(), expect);
        assert_eq!(
            stream(tok, &[space, space, a], DecodeMode::SkipSpecial)
                .unwrap()
                .concat(),
            expect
        );
        // Leading control tokens do not count as text.
        let gmask = tok.special_ids().gmask;
        assert_eq!(tok.decode(&[gmask, space, space, a]).unwrap(), expect);
        // Rendered specials do count as text: no space is dropped after them.
        assert_eq!(
            tok.decode_with(&[gmask, space, a], DecodeMode::RenderSpecial)
                .unwrap(),
            "[gMASK] a"
        );
        // Text from byte pieces counts too.
        let x = tok.encode("\u{20000}");
        let mut ids = x[1..].to_vec();
        ids.extend([space, a]);
        assert_eq!(tok.decode(&ids).unwrap(), "\u{20000} a");
    }
}

#[test]
fn tokenizer_decode_unknown_and_out_of_range() {
    let tok = identity();
    let unk = tok.unk_id().unwrap();
    let a = tok.piece_to_id("a").unwrap();
    assert_eq!(
        tok.decode_with(&[a, unk, a], DecodeMode::SentencePiece)
            .unwrap(),
        "a ⁇ a"
    );
    assert_eq!(tok.decode(&[a, unk, a]).unwrap(), "aa");
    let n = tok.vocab_size() as u32;
    match tok.decode(&[a, n]) {
        Err(TokenizerError::IdOutOfRange { id, vocab_size }) => {
            assert_eq!((id, vocab_size), (n, n as usize));
        }
        other => panic!("{other:?}"),
    }
    assert!(tok
        .stream_decoder(DecodeMode::SkipSpecial)
        .push(tok, u32::MAX)
        .is_err());
    assert!(tok.id_to_piece(n).is_err());
}

/// The slow twin of the encoder's BPE: repeatedly merge the best adjacent pair (highest score,
/// leftmost on ties) by rescanning the whole symbol list, then map pieces to ids with byte
/// fallback. Valid for vocabularies without unused or user-defined pieces (the toy models).
fn naive_bpe(model: &SpmModel, normalized: &str) -> Vec<u32> {
    use chatglm::tokenizer::PieceType;
    use std::collections::HashMap;
    let mut mergeable: HashMap<&str, (u32, f32)> = HashMap::new();
    let mut all: HashMap<&str, u32> = HashMap::new();
    for (id, p) in model.pieces.iter().enumerate() {
        assert!(!matches!(
            p.kind,
            PieceType::Unused | PieceType::UserDefined
        ));
        if p.kind == PieceType::Normal {
            mergeable.insert(&p.piece, (id as u32, p.score));
        }
        all.insert(&p.piece, id as u32);
    }
    let mut symbols: Vec<String> = normalized.chars().map(String::from).collect();
    loop {
        let mut best: Option<(usize, f32)> = None;
        for i in 0..symbols.len().saturating_sub(1) {
            let joined = format!("{}{}", symbols[i], symbols[i + 1]);
            if let Some(&(_, score)) = mergeable.get(joined.as_str()) {
                if best.is_none_or(|(_, s)| score > s) {
                    best = Some((i, score));
                }
            }
        }
        let Some((i, _)) = best else { break };
        let right = symbols.remove(i + 1);
        symbols[i].push_str(&right);
    }
    let mut ids = Vec::new();
    for s in &symbols {
        match mergeable.get(s.as_str()) {
            Some(&(id, _)) => ids.push(id),
            None => ids.extend(s.bytes().map(|b| all[format!("<0x{b:02X}>").as_str()])),
        }
    }
    ids
}

fn toy_model(file: &str) -> &'static SpmModel {
    static IDENTITY: OnceLock<SpmModel> = OnceLock::new();
    static NFKC: OnceLock<SpmModel> = OnceLock::new();
    let cell = if file.contains("nfkc") {
        &NFKC
    } else {
        &IDENTITY
    };
    cell.get_or_init(|| SpmModel::from_file(format!("{GOLDEN}/{file}")).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The priority-queue encoder (with its segment cutting and merge table) agrees with the
    /// rescanning twin.
    #[test]
    fn tokenizer_bpe_matches_naive_twin(s in mixed_text()) {
        for (tok, file) in [(identity(), "tokenizer_identity.model"), (nfkc(), "tokenizer_nfkc.model")] {
            let normalized = tok.normalize(&s);
            prop_assert_eq!(tok.encode(&s), naive_bpe(toy_model(file), &normalized));
        }
    }
}

#[test]
fn tokenizer_bpe_matches_naive_twin_on_corpus_lines() {
    let corpus = std::fs::read_to_string(format!("{GOLDEN}/corpus.txt")).unwrap();
    let mut n = 0;
    for line in corpus.lines().step_by(37).take(400) {
        for (tok, file) in [
            (identity(), "tokenizer_identity.model"),
            (nfkc(), "tokenizer_nfkc.model"),
        ] {
            assert_eq!(
                tok.encode(line),
                naive_bpe(toy_model(file), &tok.normalize(line)),
                "{line:?}"
            );
            n += 1;
        }
    }
    assert!(n > 100);
}

/// Issue 15 item 7: long runs that form one segment (spaces) or one segment per byte (NULs)
/// encode in linear time. The ids of `n` spaces follow the same pattern at every size: the
/// longest whitespace piece repeated, then the ids of the remainder. The pattern is checked
/// against the plain encoding at small sizes, then at a few MB.
#[test]
fn long_runs_of_spaces_and_nuls() {
    for tok in [identity(), nfkc()] {
        let longest = (1..=64)
            .rev()
            .find_map(|k| tok.piece_to_id(&"\u{2581}".repeat(k)).map(|id| (k, id)));
        let expected = |n: usize| -> Vec<u32> {
            let Some((k, id)) = longest else {
                return tok.encode(&" ".repeat(n));
            };
            // With the dummy prefix the text is n + 1 spaces, unless normalization drops them.
            let symbols = n + 1;
            let mut ids = vec![id; symbols / k];
            let rest = symbols % k;
            match rest {
                0 => {}
                1 => ids.push(tok.piece_to_id("\u{2581}").unwrap()),
                _ => ids.extend(tok.encode(&" ".repeat(rest - 1))),
            }
            ids
        };
        if tok.encode("   ").is_empty() {
            // nfkc drops whitespace-only text entirely.
            assert!(tok.encode(&" ".repeat(3 << 20)).is_empty());
            continue;
        }
        for n in 1..200 {
            assert_eq!(tok.encode(&" ".repeat(n)), expected(n), "{n} spaces");
        }
        let n = (3 << 20) + 5;
        assert_eq!(tok.encode(&" ".repeat(n)), expected(n));
    }

    let tok = identity();
    let n = 4 << 20;
    let text = "\0".repeat(n);
    let ids = tok.encode(&text);
    let nul = tok.piece_to_id("<0x00>").unwrap();
    assert_eq!(ids.len(), n + 1);
    assert_eq!(ids[0], tok.piece_to_id("\u{2581}").unwrap());
    assert!(ids[1..].iter().all(|&id| id == nul));
    assert_eq!(tok.decode(&ids[..1000]).unwrap(), text[..999]);
}
