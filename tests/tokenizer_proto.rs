//! `SpmModel::parse` against the facts recorded for the toy tokenizers in
//! `shared/golden/tokenizer_cases.json` and their `.vocab` listings.

use std::collections::BTreeMap;

use chatglm::tokenizer::{ModelType, PieceType, SpmModel};
use serde_json::Value;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/golden");

fn cases() -> Value {
    let text = std::fs::read_to_string(format!("{GOLDEN}/tokenizer_cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn type_name(t: PieceType) -> &'static str {
    match t {
        PieceType::Normal => "NORMAL",
        PieceType::Unknown => "UNKNOWN",
        PieceType::Control => "CONTROL",
        PieceType::UserDefined => "USER_DEFINED",
        PieceType::Unused => "UNUSED",
        PieceType::Byte => "BYTE",
    }
}

fn check(name: &str) {
    let all = cases();
    let t = &all["tokenizers"][name];
    let model =
        SpmModel::from_file(format!("{GOLDEN}/{}", t["model_file"].as_str().unwrap())).unwrap();
    let facts = &t["model_proto_facts"];
    let args = &t["trainer_args"];

    assert_eq!(
        model.pieces.len() as u64,
        facts["num_pieces"].as_u64().unwrap()
    );
    assert_eq!(
        model.pieces.len() as u64,
        t["sp_vocab_size"].as_u64().unwrap()
    );
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for p in &model.pieces {
        *counts.entry(type_name(p.kind).to_owned()).or_default() += 1;
    }
    let expected: BTreeMap<String, u64> = facts["piece_type_counts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(counts, expected);
    let first_byte = model
        .pieces
        .iter()
        .position(|p| p.kind == PieceType::Byte)
        .unwrap();
    assert_eq!(
        first_byte as u64,
        facts["first_byte_piece_id"].as_u64().unwrap()
    );
    for b in 0..256usize {
        let p = &model.pieces[first_byte + b];
        assert_eq!(p.kind, PieceType::Byte);
        assert_eq!(p.piece, format!("<0x{b:02X}>"));
    }

    let n = &facts["normalizer_spec"];
    assert_eq!(model.normalizer.name, n["name"].as_str().unwrap());
    assert_eq!(
        model.normalizer.precompiled_charsmap.len() as u64,
        n["precompiled_charsmap_bytes"].as_u64().unwrap()
    );
    assert_eq!(
        model.normalizer.add_dummy_prefix,
        n["add_dummy_prefix"].as_bool().unwrap()
    );
    assert_eq!(
        model.normalizer.remove_extra_whitespaces,
        n["remove_extra_whitespaces"].as_bool().unwrap()
    );
    assert_eq!(
        model.normalizer.escape_whitespaces,
        n["escape_whitespaces"].as_bool().unwrap()
    );

    let tr = &model.trainer;
    assert_eq!(tr.model_type, ModelType::Bpe);
    assert_eq!(
        i64::from(tr.vocab_size),
        args["vocab_size"].as_i64().unwrap()
    );
    assert_eq!(tr.byte_fallback, args["byte_fallback"].as_bool().unwrap());
    assert_eq!(i64::from(tr.unk_id), t["unk_id"].as_i64().unwrap());
    assert_eq!(i64::from(tr.bos_id), t["bos_id"].as_i64().unwrap());
    assert_eq!(i64::from(tr.eos_id), t["eos_id"].as_i64().unwrap());
    assert_eq!(i64::from(tr.pad_id), t["pad_id"].as_i64().unwrap());
    assert_eq!(tr.split_digits, args["split_digits"].as_bool().unwrap());
    assert_eq!(
        tr.allow_whitespace_only_pieces,
        args["allow_whitespace_only_pieces"].as_bool().unwrap()
    );
    assert!(!tr.treat_whitespace_as_suffix);
    assert_eq!(model.pieces[tr.unk_id as usize].kind, PieceType::Unknown);
    assert_eq!(model.pieces[tr.unk_id as usize].piece, tr.unk_piece);
    assert_eq!(model.pieces[tr.bos_id as usize].piece, tr.bos_piece);
    assert_eq!(model.pieces[tr.eos_id as usize].piece, tr.eos_piece);

    // Every piece and score against the `.vocab` listing (line number = id).
    let vocab_file = format!(
        "{GOLDEN}/{}",
        t["model_file"]
            .as_str()
            .unwrap()
            .replace(".model", ".vocab")
    );
    let vocab = std::fs::read_to_string(vocab_file).unwrap();
    let lines: Vec<&str> = vocab.lines().collect();
    assert_eq!(lines.len(), model.pieces.len());
    for (id, (line, p)) in lines.iter().zip(&model.pieces).enumerate() {
        let (piece, score) = line.split_once('\t').unwrap();
        assert_eq!(p.piece, piece, "piece {id}");
        let score: f32 = score.parse().unwrap();
        assert_eq!(p.score, score, "score of piece {id} ({piece})");
    }
}

#[test]
fn tokenizer_proto_identity_model() {
    check("identity");
}

#[test]
fn tokenizer_proto_nfkc_model() {
    check("nfkc");
}

#[test]
fn tokenizer_proto_truncated_real_model_is_error_not_panic() {
    let bytes = std::fs::read(format!("{GOLDEN}/tokenizer_identity.model")).unwrap();
    for cut in (0..bytes.len()).step_by(97) {
        let _ = SpmModel::parse(&bytes[..cut]);
    }
    // A cut in the middle of the last field is always an error.
    assert!(SpmModel::parse(&bytes[..bytes.len() - 1]).is_err());
}

/// Issue 15 item 8: an empty `tokenizer.model` parses (every proto field is optional) but is
/// reported as empty, not as an unsupported unigram model.
#[test]
fn tokenizer_proto_empty_model_is_reported_as_empty() {
    use chatglm::tokenizer::{Family, Tokenizer, TokenizerError, VocabError};
    let model = SpmModel::parse(&[]).unwrap();
    assert!(model.pieces.is_empty());
    let err = Tokenizer::from_spm(model, Family::ChatGlm2).unwrap_err();
    assert!(
        matches!(err, TokenizerError::Vocab(VocabError::EmptyModel)),
        "{err:?}"
    );
    assert!(err.to_string().contains("empty"), "{err}");
    let dir = std::env::temp_dir().join(format!("chatglm-empty-spm-{}", std::process::id()));
    std::fs::write(&dir, b"").unwrap();
    let err = Tokenizer::from_spm_file(&dir, Family::ChatGlm3).unwrap_err();
    std::fs::remove_file(&dir).unwrap();
    assert!(matches!(err, TokenizerError::Vocab(VocabError::EmptyModel)));
}
