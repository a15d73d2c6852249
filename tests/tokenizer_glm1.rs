//! The ChatGLM-6B (v1) tokenizer against `shared/golden-glm1/tokenizer_cases.json` (the Hugging
//! Face v1 `ChatGLMTokenizer` on two toy `ice_text.model` files): pieces, ids with and without
//! the `[gMASK] <sop>` suffix, both decodes, streaming, the chat prompts, and the same again for
//! the tokenizer read back from a GGUF file. Every field must match exactly.

use chatglm::gguf::{GgufFile, GgufWriter, Metadata};
use chatglm::tokenizer::{
    chatglm1_process_response, ChatMessage, DecodeMode, Family, Role, SpmModel, Tokenizer,
    TokenizerParts,
};
use serde_json::Value;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/golden-glm1");
const NAMES: [&str; 2] = ["identity", "nfkc"];

fn cases() -> Value {
    let text = std::fs::read_to_string(format!("{GOLDEN}/tokenizer_cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn spm(all: &Value, name: &str) -> SpmModel {
    let file = all["tokenizers"][name]["model_file"].as_str().unwrap();
    SpmModel::from_file(format!("{GOLDEN}/{file}")).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn short(s: &str) -> String {
    s.chars().take(60).collect::<String>()
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

/// The tokenizer of each toy model: from the raw file, and padded as the converter pads it
/// (48 ids, as the checkpoints' 2048-row embeddings) through GGUF.
fn tokenizers(all: &Value, name: &str) -> Vec<(&'static str, Tokenizer)> {
    let model = spm(all, name);
    let padded = model.pieces.len() + 48;
    let parts = TokenizerParts::from_spm(model.clone(), Family::ChatGlm1, Some(padded)).unwrap();
    vec![
        (
            "file",
            Tokenizer::from_spm(model, Family::ChatGlm1).unwrap(),
        ),
        ("gguf", through_gguf(&parts)),
    ]
}

/// Decodes `ids` one id at a time.
fn stream(tok: &Tokenizer, ids: &[u32], mode: DecodeMode) -> String {
    let mut d = tok.stream_decoder(mode);
    let mut text = String::new();
    for &id in ids {
        text.push_str(&d.push(tok, id).unwrap());
    }
    text + &d.finish()
}

#[test]
fn glm1_special_ids_follow_the_layout() {
    let all = cases();
    for name in NAMES {
        let layout = &all["tokenizers"][name]["layout_ids"];
        for (how, tok) in tokenizers(&all, name) {
            let s = tok.special_ids();
            for (piece, id) in [
                ("[MASK]", s.mask),
                ("[gMASK]", s.gmask),
                ("[sMASK]", s.smask),
                ("<sop>", s.sop),
                ("<eop>", s.eop),
            ] {
                assert_eq!(
                    u64::from(id),
                    layout[piece].as_u64().unwrap(),
                    "{name} {how}"
                );
                assert_eq!(tok.piece_to_id(piece), Some(id));
            }
            assert_eq!(s.roles, None);
            assert_eq!(tok.stop_ids(), vec![s.eop], "v1 stops at <eop>");
            assert_eq!(tok.prompt_prefix(), [s.gmask, s.sop]);
            assert_eq!(tok.family(), Family::ChatGlm1);
        }
    }
}

#[test]
fn glm1_every_case_encodes_and_decodes_exactly() {
    let all = cases();
    let cases = all["cases"].as_array().unwrap();
    let mut checked = 0;
    for name in NAMES {
        for (how, tok) in tokenizers(&all, name) {
            for case in cases {
                let text = case["text"].as_str().unwrap();
                let want = &case[name];
                let what = format!("{name} {how}: {:?}", short(text));
                let no_special = ids(&want["hf_ids_no_special"]);
                assert_eq!(tok.encode(text), no_special, "{what}");
                let hf_ids = tok.encode_hf(text);
                assert_eq!(hf_ids, ids(&want["hf_ids"]), "{what}");
                // Plain-text encoding splits nothing off: the same ids where the text holds no
                // registered special (their strings are all bracketed: `[`, `<`).
                if !text.contains(['[', '<']) {
                    assert_eq!(tok.encode_ordinary(text), no_special, "{what} ordinary");
                }
                let pieces: Vec<&str> = no_special
                    .iter()
                    .map(|&id| tok.id_to_piece(id).unwrap())
                    .collect();
                let want_pieces: Vec<&str> = want["pieces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap())
                    .collect();
                assert_eq!(pieces, want_pieces, "{what}");
                for (mode, key) in [
                    (DecodeMode::RenderSpecial, "hf_decoded"),
                    (DecodeMode::SkipSpecial, "hf_decoded_skip_special"),
                ] {
                    let expect = want[key].as_str().unwrap();
                    assert_eq!(
                        tok.decode_with(&hf_ids, mode).unwrap(),
                        expect,
                        "{what} {key}"
                    );
                    assert_eq!(stream(&tok, &hf_ids, mode), expect, "{what} {key} streamed");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 * cases.len());
}

#[test]
fn glm1_chat_prompts_match_chat() {
    let all = cases();
    let prompts = all["chat_prompts"].as_array().unwrap();
    assert!(!prompts.is_empty());
    for name in NAMES {
        for (how, tok) in tokenizers(&all, name) {
            for case in prompts {
                let query = case["query"].as_str().unwrap();
                let rounds: Vec<(String, String)> = case["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        let r = r.as_array().unwrap();
                        (
                            r[0].as_str().unwrap().to_owned(),
                            r[1].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect();
                let prompt = chatglm::tokenizer::chatglm1_prompt(query, &rounds);
                assert_eq!(prompt, case["prompt"].as_str().unwrap());
                let want = ids(&case[name]["input_ids"]);
                assert_eq!(
                    tok.encode_chatglm1_prompt(query, &rounds),
                    want,
                    "{name} {how}"
                );
                let messages: Vec<ChatMessage> = rounds
                    .iter()
                    .flat_map(|(q, a)| {
                        [
                            ChatMessage::new(Role::User, q.clone()),
                            ChatMessage::new(Role::Assistant, a.clone()),
                        ]
                    })
                    .collect();
                assert_eq!(tok.encode_chat(&messages, query).unwrap(), want);
                // The context ends at the first <sop>, the mask is the first [gMASK].
                let s = tok.special_ids();
                let sop = want.iter().position(|&i| i == s.sop).unwrap();
                let mask = want.iter().position(|&i| i == s.gmask).unwrap();
                assert_eq!(sop as u64, case[name]["context_length"].as_u64().unwrap());
                assert_eq!(mask as u64, case[name]["mask_position"].as_u64().unwrap());
            }
        }
    }
}

#[test]
fn glm1_history_must_alternate() {
    let all = cases();
    let tok = Tokenizer::from_spm(spm(&all, "identity"), Family::ChatGlm1).unwrap();
    let bad = [ChatMessage::new(Role::System, "be nice")];
    assert!(tok.encode_chat(&bad, "hi").is_err());
}

#[test]
fn glm1_greedy_text_and_response() {
    let mut checked = 0;
    for model in ["glm1-tiny", "glm1-small", "glm1-st-tiny"] {
        let path = format!("{GOLDEN}/{model}/golden.json");
        let golden: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let tok =
            Tokenizer::from_spm_file(format!("{GOLDEN}/{model}/ice_text.model"), Family::ChatGlm1)
                .unwrap();
        for case in golden["greedy"]["cases"].as_array().unwrap() {
            let new_ids = ids(&case["new_ids"]);
            let text = tok
                .decode_with(&new_ids, DecodeMode::RenderSpecial)
                .unwrap();
            assert_eq!(text, case["text"].as_str().unwrap(), "{model}");
            // `chat()` decodes without skipping specials, then cleans the text up.
            assert_eq!(
                chatglm1_process_response(&text),
                case["response"].as_str().unwrap(),
                "{model}"
            );
            let input = ids(&case["input_ids"]);
            let query = case["query"].as_str().unwrap();
            let history: Vec<(String, String)> = case["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r[0].as_str().unwrap().to_owned(),
                        r[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert_eq!(
                tok.encode_chatglm1_prompt(query, &history),
                input,
                "{model}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3);
}

mod props {
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;

    fn identity() -> &'static Tokenizer {
        static T: OnceLock<Tokenizer> = OnceLock::new();
        T.get_or_init(|| {
            Tokenizer::from_spm_file(
                format!("{GOLDEN}/ice_text_identity.model"),
                Family::ChatGlm1,
            )
            .unwrap()
        })
    }

    /// Text with what the v1 rules rewrite (newlines, tabs, runs of spaces up to past 80), the
    /// strings they split off, and look-alikes of the pieces they produce.
    fn v1_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-zA-Z0-9,.!?-]{1,10}",
            "[你好世界的是了我不人在有这中大来上个国]{1,5}",
            "[\u{1f300}-\u{1f6ff}]{1,2}",
            "[ \t\n]{1,6}",
            " {70,170}",
            Just("<sop>".to_owned()),
            Just("<eop>".to_owned()),
            Just("[MASK]".to_owned()),
            Just("[gMASK]".to_owned()),
            Just("<|blank_".to_owned()),
            Just("<n".to_owned()),
            Just("<|tab".to_owned()),
        ];
        prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Streaming decoding gives the batch text in both modes, whatever the text.
        #[test]
        fn glm1_streaming_equals_batch(s in v1_text()) {
            let tok = identity();
            let ids = tok.encode_hf(&s);
            for mode in [DecodeMode::RenderSpecial, DecodeMode::SkipSpecial] {
                let text = tok.decode_with(&ids, mode).unwrap();
                prop_assert_eq!(stream(tok, &ids, mode), text);
            }
        }

        /// Decoding undoes encoding for text without the registered strings (each chunk after
        /// one gets its own dummy-prefix space, as in the reference).
        #[test]
        fn glm1_round_trip(s in v1_text()) {
            prop_assume!(!["<sop>", "<eop>", "[MASK]"].iter().any(|r| s.contains(r)));
            let tok = identity();
            let ids = tok.encode(&s);
            prop_assert_eq!(tok.decode_with(&ids, DecodeMode::RenderSpecial).unwrap(), s.clone());
            prop_assert_eq!(tok.decode(&ids).unwrap(), s);
        }
    }

    /// Hostile inputs encode in one pass: a megabyte of registered strings, of spaces, of
    /// newlines, of half-registered strings.
    #[test]
    fn glm1_long_inputs_encode() {
        let tok = identity();
        for unit in ["<sop>", " ", "\n", "<so", "[MASK", "\t "] {
            let s = unit.repeat((1 << 20) / unit.len());
            let ids = tok.encode(&s);
            assert!(!ids.is_empty());
            let back = tok.decode_with(&ids, DecodeMode::RenderSpecial).unwrap();
            if unit == "<sop>" {
                assert_eq!(ids.len(), s.len() / unit.len(), "one id each");
            } else {
                assert_eq!(back, s);
            }
        }
    }
}
