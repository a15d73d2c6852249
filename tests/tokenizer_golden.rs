//! The tokenizer against `shared/golden/tokenizer_cases.json` (SentencePiece 0.2 and the Hugging
//! Face ChatGLM2/ChatGLM3 tokenizers on the two toy models). Every field must match exactly.

use chatglm::tokenizer::{
    ChatMessage, DecodeMode, Family, Role, SpmModel, Tokenizer, TokenizerParts,
};
use serde_json::Value;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/golden");
const NAMES: [&str; 2] = ["identity", "nfkc"];

fn cases() -> Value {
    let text = std::fs::read_to_string(format!("{GOLDEN}/tokenizer_cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tokenizer(all: &Value, name: &str, family: Family) -> Tokenizer {
    let file = all["tokenizers"][name]["model_file"].as_str().unwrap();
    Tokenizer::from_spm_file(format!("{GOLDEN}/{file}"), family).unwrap()
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

#[test]
fn tokenizer_golden_special_ids() {
    let all = cases();
    for name in NAMES {
        let t = &all["tokenizers"][name];
        for (family, key, size_key) in [
            (
                Family::ChatGlm2,
                "chatglm2_special_ids",
                "chatglm2_vocab_size",
            ),
            (
                Family::ChatGlm3,
                "chatglm3_special_ids",
                "chatglm3_vocab_size",
            ),
        ] {
            let tok = tokenizer(&all, name, family);
            assert_eq!(tok.vocab_size() as u64, t[size_key].as_u64().unwrap());
            assert_eq!(
                tok.sp_vocab_size() as u64,
                t["sp_vocab_size"].as_u64().unwrap()
            );
            for (piece, id) in t[key].as_object().unwrap() {
                assert_eq!(
                    tok.piece_to_id(piece),
                    Some(id.as_u64().unwrap() as u32),
                    "{piece}"
                );
                assert_eq!(tok.id_to_piece(id.as_u64().unwrap() as u32).unwrap(), piece);
            }
            assert_eq!(tok.unk_id().unwrap() as i64, t["unk_id"].as_i64().unwrap());
            assert_eq!(
                tok.bos_id().map(i64::from),
                Some(t["bos_id"].as_i64().unwrap())
            );
            assert_eq!(
                tok.eos_id().map(i64::from),
                Some(t["eos_id"].as_i64().unwrap())
            );
            assert_eq!(tok.pad_id(), None);
        }
    }
}

#[test]
fn tokenizer_golden_cases() {
    let all = cases();
    let cases = all["cases"].as_array().unwrap();
    assert!(cases.len() >= 170, "only {} cases", cases.len());
    let mut checked = 0;
    let mut failures = Vec::new();
    for name in NAMES {
        for family in [Family::ChatGlm2, Family::ChatGlm3] {
            let tok = tokenizer(&all, name, family);
            for (i, case) in cases.iter().enumerate() {
                let text = case["text"].as_str().unwrap();
                let want = &case[name];
                let sp_ids = ids(&want["sp_ids"]);
                let got = tok.encode(text);
                if got != sp_ids {
                    failures.push(format!(
                        "{name} case {i} {:?}: sp_ids\n  want {sp_ids:?}\n  got  {got:?}\n  normalized {:?}",
                        short(text),
                        short(&tok.normalize(text))
                    ));
                    continue;
                }
                let pieces: Vec<&str> = want["pieces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap())
                    .collect();
                assert_eq!(tok.encode_pieces(text), pieces, "{name} case {i} pieces");
                let sp_decoded = want["sp_decoded"].as_str().unwrap();
                assert_eq!(
                    tok.decode_with(&sp_ids, DecodeMode::SentencePiece).unwrap(),
                    sp_decoded,
                    "{name} case {i} sp_decoded"
                );
                let hf_ids = ids(&want["hf_ids"]);
                assert_eq!(
                    tok.encode_with_prefix(text),
                    hf_ids,
                    "{name} case {i} hf_ids"
                );
                let hf_decoded = want["hf_decoded"].as_str().unwrap();
                assert_eq!(
                    tok.decode(&hf_ids).unwrap(),
                    hf_decoded,
                    "{name} case {i} hf_decoded"
                );
                // The streaming decoder gives the same text, id by id.
                let mut stream = tok.stream_decoder(DecodeMode::SkipSpecial);
                let mut streamed = String::new();
                for &id in &hf_ids {
                    streamed.push_str(&stream.push(&tok, id).unwrap());
                }
                streamed.push_str(&stream.finish());
                assert_eq!(streamed, hf_decoded, "{name} case {i} streamed");
                checked += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{checked} case encodings checked");
}

#[test]
fn tokenizer_golden_chatglm2_prompts() {
    let all = cases();
    let prompts = all["chatglm2_chat_prompts"].as_array().unwrap();
    assert!(!prompts.is_empty());
    for name in NAMES {
        let tok = tokenizer(&all, name, Family::ChatGlm2);
        for (i, p) in prompts.iter().enumerate() {
            let query = p["query"].as_str().unwrap();
            let history: Vec<(String, String)> = p["history"]
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
            let prompt = chatglm::tokenizer::chatglm2_prompt(query, &history);
            assert_eq!(prompt, p["prompt"].as_str().unwrap(), "prompt {i}");
            let want = ids(&p[name]["input_ids"]);
            assert_eq!(
                tok.encode_chatglm2_prompt(query, &history),
                want,
                "{name} prompt {i}"
            );
            // The family-generic entry point gives the same ids.
            let messages: Vec<ChatMessage> = history
                .iter()
                .flat_map(|(q, a)| {
                    [
                        ChatMessage::new(Role::User, q.clone()),
                        ChatMessage::new(Role::Assistant, a.clone()),
                    ]
                })
                .collect();
            assert_eq!(tok.encode_chat(&messages, query).unwrap(), want);
        }
    }
}

fn role(s: &str) -> Role {
    match s {
        "system" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "observation" => Role::Observation,
        _ => panic!("unknown role {s}"),
    }
}

#[test]
fn tokenizer_golden_chatglm3_inputs() {
    let all = cases();
    let inputs = all["chatglm3_chat_inputs"].as_array().unwrap();
    assert!(!inputs.is_empty());
    for name in NAMES {
        let tok = tokenizer(&all, name, Family::ChatGlm3);
        for (i, c) in inputs.iter().enumerate() {
            let history: Vec<ChatMessage> = c["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| ChatMessage {
                    role: role(m["role"].as_str().unwrap()),
                    content: m["content"].as_str().unwrap().to_owned(),
                    metadata: m
                        .get("metadata")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    tools: m.get("tools").cloned(),
                })
                .collect();
            let query = c["query"].as_str().unwrap();
            let r = role(c["role"].as_str().unwrap());
            let want = ids(&c[name]["input_ids"]);
            let got = tok.build_chat_input(&history, query, r).unwrap();
            assert_eq!(got, want, "{name} input {i}");
            let decoded = c[name]["decoded"].as_str().unwrap();
            assert_eq!(
                tok.decode_with(&want, DecodeMode::RenderSpecial).unwrap(),
                decoded,
                "{name} input {i} decoded"
            );
            let mut stream = tok.stream_decoder(DecodeMode::RenderSpecial);
            let mut streamed = String::new();
            for &id in &want {
                streamed.push_str(&stream.push(&tok, id).unwrap());
            }
            streamed.push_str(&stream.finish());
            assert_eq!(streamed, decoded, "{name} input {i} streamed");
        }
    }
}

#[test]
fn tokenizer_golden_from_parts_padded_matches_from_spm() {
    let all = cases();
    for name in NAMES {
        let file = all["tokenizers"][name]["model_file"].as_str().unwrap();
        let model = SpmModel::from_file(format!("{GOLDEN}/{file}")).unwrap();
        let n = model.pieces.len();
        let mut parts = TokenizerParts::from_spm(model, Family::ChatGlm3, Some(n + 40)).unwrap();
        assert_eq!(parts.tokens.len(), n + 40);
        assert_eq!(parts.tokens[n + 9], format!("[PAD{}]", n + 9));
        // A GGUF reader does not know n: it is found from the special tokens.
        parts.sp_vocab_size = None;
        let padded = Tokenizer::from_parts(parts).unwrap();
        let plain = tokenizer(&all, name, Family::ChatGlm3);
        assert_eq!(padded.sp_vocab_size(), n);
        for case in all["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            assert_eq!(padded.encode(text), plain.encode(text));
        }
        // Padding decodes to nothing, specials render only in RenderSpecial mode.
        let pad = (n + 20) as u32;
        assert_eq!(padded.decode(&[pad]).unwrap(), "");
        assert_eq!(
            padded
                .decode_with(&[pad], DecodeMode::RenderSpecial)
                .unwrap(),
            ""
        );
        assert!(padded.decode(&[(n + 40) as u32]).is_err());
        assert!(padded
            .decode_with(&[n as u32], DecodeMode::SentencePiece)
            .is_err());
    }
}
