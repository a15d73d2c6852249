//! The tokenizer read back from a GGUF file (what `chatglm-convert` writes) behaves exactly as
//! the one built from `tokenizer.model`: every golden case, for both toy models (the NFKC one
//! exercises the precompiled charsmap stored in the file), with the vocabulary padded as the
//! converter pads it.

use chatglm::gguf::{GgufFile, GgufWriter, Metadata};
use chatglm::tokenizer::{DecodeMode, Family, SpmModel, Tokenizer, TokenizerParts};
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
