//! Tokenizer behaviour the toy models do not exercise (unused and user-defined pieces, no byte
//! fallback, whitespace options), on small hand-made vocabularies. The expected results follow
//! SentencePiece's `bpe_model.cc`, `normalizer.cc` and `sentencepiece_processor.cc`.

use chatglm::tokenizer::{
    DecodeMode, Family, NormalizerSpec, PieceType, Tokenizer, TokenizerError, TokenizerParts,
    CHATGLM2_SPECIAL_TOKENS,
};

/// `<unk> <s> </s>` then `pieces`, then the ChatGLM2 specials.
fn parts(pieces: &[(&str, f32, PieceType)]) -> TokenizerParts {
    let mut all = vec![
        ("<unk>", 0.0, PieceType::Unknown),
        ("<s>", 0.0, PieceType::Control),
        ("</s>", 0.0, PieceType::Control),
    ];
    all.extend_from_slice(pieces);
    let n = all.len();
    let mut tokens: Vec<String> = all.iter().map(|p| p.0.to_owned()).collect();
    let mut scores: Vec<f32> = all.iter().map(|p| p.1).collect();
    let mut types: Vec<PieceType> = all.iter().map(|p| p.2).collect();
    for s in CHATGLM2_SPECIAL_TOKENS {
        tokens.push(s.to_owned());
        scores.push(0.0);
        types.push(PieceType::Control);
    }
    TokenizerParts {
        tokens,
        scores,
        types,
        sp_vocab_size: Some(n),
        normalizer: NormalizerSpec {
            name: "identity".to_owned(),
            add_dummy_prefix: false,
            remove_extra_whitespaces: false,
            ..NormalizerSpec::default()
        },
        treat_whitespace_as_suffix: false,
        bos_id: Some(1),
        eos_id: Some(2),
        pad_id: None,
        unk_surface: None,
        family: Family::ChatGlm2,
    }
}

fn pieces<'t>(t: &'t Tokenizer, text: &str) -> Vec<&'t str> {
    t.encode_pieces(text)
}

const N: PieceType = PieceType::Normal;

#[test]
fn tokenizer_synthetic_unused_pieces_are_split_back() {
    // "ab" is unused but still takes part in merging; it is then split back into "a" "b", so
    // the lower-scored "bc" never gets its chance (SentencePiece's resegmentation).
    let t = Tokenizer::from_parts(parts(&[
        ("a", -10.0, N),
        ("b", -10.0, N),
        ("c", -10.0, N),
        ("ab", -1.0, PieceType::Unused),
        ("bc", -2.0, N),
        ("abc", -3.0, PieceType::Unused),
        ("abcd", -4.0, N),
        ("d", -10.0, N),
    ]))
    .unwrap();
    assert_eq!(pieces(&t, "abc"), ["a", "b", "c"]);
    assert_eq!(pieces(&t, "bc"), ["bc"]);
    assert_eq!(pieces(&t, "abcd"), ["abcd"]);
    assert_eq!(pieces(&t, "abcabc"), ["a", "b", "c", "a", "b", "c"]);
}

#[test]
fn tokenizer_synthetic_ties_go_left() {
    let t = Tokenizer::from_parts(parts(&[("a", -10.0, N), ("aa", -1.0, N)])).unwrap();
    assert_eq!(pieces(&t, "aaa"), ["aa", "a"]);
    assert_eq!(pieces(&t, "aaaaa"), ["aa", "aa", "a"]);
}

#[test]
fn tokenizer_synthetic_user_defined_pieces_are_whole_and_frozen() {
    let t = Tokenizer::from_parts(parts(&[
        ("a", -10.0, N),
        ("b", -10.0, N),
        ("<x>", 0.0, PieceType::UserDefined),
        ("<x>y", 0.0, PieceType::UserDefined),
        ("a<", -1.0, N),
        ("<", -10.0, N),
        ("x", -10.0, N),
        (">", -10.0, N),
    ]))
    .unwrap();
    assert_eq!(pieces(&t, "a<x>b"), ["a", "<x>", "b"]);
    assert_eq!(pieces(&t, "a<x>yb"), ["a", "<x>y", "b"]);
    assert_eq!(pieces(&t, "a<xb"), ["a<", "x", "b"]);
}

#[test]
fn tokenizer_synthetic_unknown_runs_without_byte_fallback() {
    let t = Tokenizer::from_parts(parts(&[("a", -10.0, N)])).unwrap();
    let unk = t.unk_id().unwrap();
    let a = t.piece_to_id("a").unwrap();
    assert_eq!(t.encode("zz"), [unk]);
    assert_eq!(t.encode("zaz"), [unk, a, unk]);
    assert_eq!(t.encode("aéü😀a"), [a, unk, a]);
    assert_eq!(
        t.decode_with(&[a, unk, a], DecodeMode::SentencePiece)
            .unwrap(),
        "a ⁇ a"
    );
}

#[test]
fn tokenizer_synthetic_whitespace_options() {
    let mut p = parts(&[("a", -10.0, N), ("b", -10.0, N), ("\u{2581}", -10.0, N)]);
    p.normalizer.remove_extra_whitespaces = true;
    p.normalizer.add_dummy_prefix = true;
    let t = Tokenizer::from_parts(p.clone()).unwrap();
    assert_eq!(t.normalize("  a   b  "), "\u{2581}a\u{2581}b");
    assert_eq!(t.normalize("   "), "");
    assert_eq!(t.decode(&t.encode("  a   b  ")).unwrap(), "a b");

    p.normalizer.remove_extra_whitespaces = false;
    p.treat_whitespace_as_suffix = true;
    let t = Tokenizer::from_parts(p.clone()).unwrap();
    assert_eq!(t.normalize(" a b"), "\u{2581}a\u{2581}b\u{2581}");

    p.treat_whitespace_as_suffix = false;
    p.normalizer.escape_whitespaces = false;
    let t = Tokenizer::from_parts(p).unwrap();
    assert_eq!(t.normalize("a b"), " a b");
}

#[test]
fn tokenizer_synthetic_bad_vocabularies_are_errors() {
    let bad = |p: TokenizerParts| match Tokenizer::from_parts(p) {
        Err(TokenizerError::Vocab(msg)) => msg,
        other => panic!("expected a vocabulary error, got {other:?}"),
    };
    // Duplicate piece.
    bad(parts(&[("a", 0.0, N), ("a", 0.0, N)]));
    // Empty piece.
    bad(parts(&[("", 0.0, N)]));
    // Two unknown pieces.
    bad(parts(&[("<unk2>", 0.0, PieceType::Unknown)]));
    // Some byte pieces but not all 256.
    bad(parts(&[("<0x00>", 0.0, PieceType::Byte)]));
    // A byte piece with a bad name.
    bad(parts(&[("<0xzz>", 0.0, PieceType::Byte)]));
    // Lengths differ.
    let mut p = parts(&[]);
    p.scores.pop();
    bad(p);
    // Specials missing or misplaced.
    let mut p = parts(&[("a", 0.0, N)]);
    p.sp_vocab_size = Some(3);
    bad(p);
    let mut p = parts(&[]);
    p.tokens.truncate(5);
    p.scores.truncate(5);
    p.types.truncate(5);
    p.sp_vocab_size = None;
    bad(p);
    // ChatGLM3 needs the role tokens.
    let mut p = parts(&[]);
    p.family = Family::ChatGlm3;
    bad(p);
    // Special ids out of range.
    let mut p = parts(&[]);
    p.eos_id = Some(1000);
    bad(p);
    // A malformed charsmap.
    let mut p = parts(&[]);
    p.normalizer.precompiled_charsmap = vec![1, 2, 3];
    assert!(matches!(
        Tokenizer::from_parts(p),
        Err(TokenizerError::Charsmap(_))
    ));
}
