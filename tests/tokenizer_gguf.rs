//! The tokenizer read back from a GGUF file (what `chatglm-convert` writes) behaves exactly as
//! the one built from `tokenizer.model`: every golden case, for both toy models (the NFKC one
//! exercises the precompiled charsmap stored in the file), with the vocabulary padded as the
//! converter pads it.

use chatglm::gguf::{GgufFile, GgufWriter, Metadata};
use chatglm::tokenizer::{
    DecodeMode, Family, SpmModel, Tokenizer, TokenizerError, TokenizerParts, VocabError,
};
use serde_json::Value;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/golden");

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Writes `parts` into a GGUF file (metadata only) in memory and reads the tokenizer back.
fn through_gguf(parts: &TokenizerParts) -> Tokenizer {
    let mut md = Metadata::new();
    md.push_str("general.architecture", "chatglm").unwrap();
    md.push_str("chatglm.prompt_format", parts.family.name())
        .unwrap();
    parts.to_gguf(&mut md).unwrap();
    let bytes = GgufWriter::new(Vec::new(), &md, &[])
        .unwrap()
        .finish()
        .unwrap();
    let file = GgufFile::from_bytes(bytes).unwrap();
    let back = TokenizerParts::from_gguf(file.metadata()).unwrap();
    assert_eq!(&back, parts, "the parts survive the file");
    Tokenizer::from_gguf(&file).unwrap()
}

#[test]
fn tokenizer_gguf_matches_every_golden_case() {
    let text = std::fs::read_to_string(format!("{GOLDEN}/tokenizer_cases.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for name in ["identity", "nfkc"] {
        let file = all["tokenizers"][name]["model_file"].as_str().unwrap();
        let spm = SpmModel::from_file(format!("{GOLDEN}/{file}")).unwrap();
        for family in [Family::ChatGlm2, Family::ChatGlm3] {
            let padded = spm.pieces.len() + 40;
            let parts = TokenizerParts::from_spm(spm.clone(), family, Some(padded)).unwrap();
            let tok = through_gguf(&parts);
            assert_eq!(tok.vocab_size(), padded);
            for case in all["cases"].as_array().unwrap() {
                let text = case["text"].as_str().unwrap();
                let want = &case[name];
                let got = tok.encode(text);
                assert_eq!(got, ids(&want["sp_ids"]), "{name} {family}: {text:?}");
                let decoded = tok.decode_with(&got, DecodeMode::SentencePiece).unwrap();
                assert_eq!(
                    decoded,
                    want["sp_decoded"].as_str().unwrap(),
                    "{name}: {text:?}"
                );
                assert_eq!(tok.encode_with_prefix(text), ids(&want["hf_ids"]));
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 * all["cases"].as_array().unwrap().len());
}

/// A vocabulary laid out as llama.cpp's converter writes it for ChatGLM3
/// (`convert_hf_to_gguf.py`, `ChatGLMModel.set_vocab_chatglm3`): only `tokenizer.ggml.*` keys,
/// ids 0..2 renamed `<unk>`, `<bos>`, `<eos>`, the specials as control pieces, then
/// `[PAD{id}]` unused pieces, no SentencePiece normalizer settings, no prompt-format key.
#[test]
fn tokenizer_gguf_reads_a_llama_cpp_layout() {
    let text = std::fs::read_to_string(format!("{GOLDEN}/tokenizer_cases.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    let spm = SpmModel::from_file(format!("{GOLDEN}/tokenizer_identity.model")).unwrap();
    let ours = TokenizerParts::from_spm(spm, Family::ChatGlm3, Some(2240)).unwrap();
    let mut tokens = ours.tokens.clone();
    tokens[0] = "<unk>".into();
    tokens[1] = "<bos>".into();
    tokens[2] = "<eos>".into();
    let mut md = Metadata::new();
    md.push_str("general.architecture", "chatglm").unwrap();
    md.push_str("tokenizer.ggml.model", "llama").unwrap();
    md.push_str("tokenizer.ggml.pre", "chatglm-spm").unwrap();
    md.push_str_array("tokenizer.ggml.tokens", tokens).unwrap();
    md.push_f32_array("tokenizer.ggml.scores", ours.scores.clone())
        .unwrap();
    md.push_i32_array(
        "tokenizer.ggml.token_type",
        ours.types.iter().map(|&t| t as i32).collect(),
    )
    .unwrap();
    md.push_u32("tokenizer.ggml.eos_token_id", 2).unwrap();
    md.push_u32("tokenizer.ggml.padding_token_id", 0).unwrap();
    md.push_bool("tokenizer.ggml.add_bos_token", false).unwrap();
    let bytes = GgufWriter::new(Vec::new(), &md, &[])
        .unwrap()
        .finish()
        .unwrap();
    let file = GgufFile::from_bytes(bytes).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(tok.family(), Family::ChatGlm3, "found from the role tokens");
    assert_eq!(tok.sp_vocab_size(), 2200, "found from the specials");
    for case in all["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text),
            ids(&case["identity"]["sp_ids"]),
            "{text:?}"
        );
    }
    for case in all["chatglm3_chat_inputs"].as_array().unwrap() {
        if case["history"].as_array().unwrap().is_empty() && case["role"] == "user" {
            let got = tok
                .build_chat_input(
                    &[],
                    case["query"].as_str().unwrap(),
                    chatglm::tokenizer::Role::User,
                )
                .unwrap();
            assert_eq!(got, ids(&case["identity"]["input_ids"]));
        }
    }
}

/// The identity toy's ChatGLM2 metadata, with `key` replaced by `value` (or removed), read back.
fn from_edited(
    key: &str,
    value: Option<chatglm::gguf::Value>,
) -> Result<Tokenizer, TokenizerError> {
    let spm = SpmModel::from_file(format!("{GOLDEN}/tokenizer_identity.model")).unwrap();
    let parts = TokenizerParts::from_spm(spm, Family::ChatGlm2, None).unwrap();
    let mut md = Metadata::new();
    md.push_str("general.architecture", "chatglm").unwrap();
    md.push_str("chatglm.prompt_format", "chatglm2").unwrap();
    parts.to_gguf(&mut md).unwrap();
    let mut edited = Metadata::new();
    for (k, v) in md.iter() {
        if k != key {
            edited.push(k, v.clone()).unwrap();
        }
    }
    if let Some(v) = value {
        edited.push(key, v).unwrap();
    }
    let bytes = GgufWriter::new(Vec::new(), &edited, &[])
        .unwrap()
        .finish()
        .unwrap();
    Tokenizer::from_gguf(&GgufFile::from_bytes(bytes).unwrap())
}

fn key_error(key: &str, value: chatglm::gguf::Value) -> String {
    match from_edited(key, Some(value)) {
        Err(
            e @ (TokenizerError::KeyOutOfRange { key: k, .. }
            | TokenizerError::KeyLength { key: k, .. }),
        ) => {
            assert_eq!(k, key, "{e}");
            let msg = e.to_string();
            assert!(msg.contains(key), "{msg}");
            msg
        }
        other => panic!("{key}: expected an error naming the key, got {other:?}"),
    }
}

/// Issue 15 item 2: absurd tokenizer metadata that parses is a typed error naming the key.
#[test]
fn tokenizer_gguf_absurd_metadata_is_an_error_naming_the_key() {
    use chatglm::gguf::{Array, Value};
    assert!(from_edited("none", None).is_ok());
    // Overflowed an addition (a panic in debug builds).
    key_error("chatglm.tokenizer.sp_vocab_size", Value::U32(u32::MAX));
    key_error("chatglm.tokenizer.sp_vocab_size", Value::U32(2201));
    key_error("tokenizer.ggml.unknown_token_id", Value::U32(1 << 20));
    // In range, but not the unknown piece.
    key_error("tokenizer.ggml.unknown_token_id", Value::U32(5));
    key_error("tokenizer.ggml.bos_token_id", Value::U32(u32::MAX));
    key_error("tokenizer.ggml.eos_token_id", Value::U32(2205));
    key_error("tokenizer.ggml.padding_token_id", Value::U32(9999));
    key_error("tokenizer.ggml.eot_token_id", Value::U32(9999));
    let spm = SpmModel::from_file(format!("{GOLDEN}/tokenizer_identity.model")).unwrap();
    let parts = TokenizerParts::from_spm(spm, Family::ChatGlm2, None).unwrap();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut scores = parts.scores.clone();
        scores[300] = bad;
        key_error("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    }
    let mut types: Vec<i32> = parts.types.iter().map(|&t| t as i32).collect();
    types.pop();
    key_error(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(types.clone())),
    );
    types.push(7);
    key_error("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    let mut scores = parts.scores.clone();
    scores.push(0.0);
    key_error("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    key_error("tokenizer.ggml.model", Value::String("gpt2".into()));

    // The same checks without GGUF: typed vocabulary errors.
    let mut p = parts.clone();
    p.sp_vocab_size = Some(u32::MAX as usize);
    assert!(matches!(
        Tokenizer::from_parts(p),
        Err(TokenizerError::Vocab(
            VocabError::SpVocabSizeOutOfRange { .. }
        ))
    ));
    let mut p = parts.clone();
    p.scores[7] = f32::NAN;
    assert!(matches!(
        Tokenizer::from_parts(p),
        Err(TokenizerError::Vocab(VocabError::NonFiniteScore {
            id: 7,
            ..
        }))
    ));
}
