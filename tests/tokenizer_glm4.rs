//! GLM-4's byte-level BPE tokenizer against `shared/golden-glm4/tokenizer_cases.json` (the
//! Hugging Face `ChatGLM4Tokenizer` and tiktoken), loaded from the raw tiktoken
//! `tokenizer.model` and from a GGUF file.

use chatglm::gguf::{GgufFile, Metadata};
use chatglm::tokenizer::{
    glm4_prompt, ByteLevelParts, ChatMessage, DecodeMode, Family, Role, Tokenizer,
};
use serde_json::Value;
use std::sync::OnceLock;

fn dir() -> String {
    format!("{}/../shared/golden-glm4", env!("CARGO_MANIFEST_DIR"))
}

fn cases() -> &'static Value {
    static C: OnceLock<Value> = OnceLock::new();
    C.get_or_init(|| {
        let text = std::fs::read_to_string(format!("{}/tokenizer_cases.json", dir())).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn raw() -> Tokenizer {
    Tokenizer::from_tiktoken_file(format!("{}/tokenizer.model", dir())).unwrap()
}

/// The tokenizer written to GGUF metadata (as the converter does, padded to 2048) and read
/// back from the file.
fn from_gguf() -> Tokenizer {
    let text = std::fs::read_to_string(format!("{}/tokenizer.model", dir())).unwrap();
    let parts = ByteLevelParts::glm4_from_tiktoken(&text, Some(2048)).unwrap();
    let mut md = Metadata::new();
    md.push_str(chatglm::arch::keys::GENERAL_ARCHITECTURE, "chatglm")
        .unwrap();
    parts.to_gguf(&mut md).unwrap();
    let bytes = chatglm::gguf::GgufWriter::new(Vec::new(), &md, &[])
        .unwrap()
        .finish()
        .unwrap();
    let file = GgufFile::from_bytes(bytes).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(tok.vocab_size(), 2048);
    tok
}

fn check_cases(tok: &Tokenizer) {
    let all = cases()["cases"].as_array().unwrap();
    assert!(all.len() > 200);
    for case in all {
        let text = case["text"].as_str().unwrap();
        let short: String = text.chars().take(40).collect();
        assert_eq!(
            tok.encode_ordinary(text),
            ids(&case["tiktoken_ids"]),
            "tiktoken {short:?}"
        );
        assert_eq!(
            tok.encode(text),
            ids(&case["hf_ids_no_special"]),
            "hf no special {short:?}"
        );
        let hf = ids(&case["hf_ids"]);
        assert_eq!(tok.encode_with_prefix(text), hf, "hf {short:?}");
        let pieces: Vec<String> = tok
            .encode_ordinary(text)
            .iter()
            .map(|&id| {
                let piece = tok.id_to_piece(id).unwrap();
                chatglm::tokenizer::gpt2_bytes(piece)
                    .unwrap()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .collect();
        let want: Vec<&str> = case["tokens_hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(pieces, want, "bytes {short:?}");
        assert_eq!(
            tok.decode_with(&hf, DecodeMode::RenderSpecial).unwrap(),
            case["hf_decoded"].as_str().unwrap(),
            "decode {short:?}"
        );
        assert_eq!(
            tok.decode(&hf).unwrap(),
            case["hf_decoded_skip_special"].as_str().unwrap(),
            "decode skip {short:?}"
        );
        // Streaming gives the same text, one id at a time.
        for mode in [DecodeMode::RenderSpecial, DecodeMode::SkipSpecial] {
            let mut d = tok.stream_decoder(mode);
            let mut streamed = String::new();
            for &id in &hf {
                streamed.push_str(&d.push(tok, id).unwrap());
            }
            streamed.push_str(&d.finish());
            assert_eq!(
                streamed,
                tok.decode_with(&hf, mode).unwrap(),
                "{mode:?} {short:?}"
            );
        }
    }
}

fn messages(v: &Value) -> Vec<ChatMessage> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let role = match m["role"].as_str().unwrap() {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "observation" => Role::Observation,
                r => panic!("role {r}"),
            };
            let mut msg = ChatMessage::new(role, m["content"].as_str().unwrap());
            if let Some(meta) = m.get("metadata") {
                msg.metadata = meta.as_str().unwrap().to_owned();
            }
            msg.tools = m.get("tools").cloned();
            msg
        })
        .collect()
}

fn check_chat(tok: &Tokenizer) {
    let chats = cases()["chat_inputs"].as_array().unwrap();
    assert_eq!(chats.len(), 5);
    for case in chats {
        let msgs = messages(&case["messages"]);
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(
            glm4_prompt(&msgs, gen),
            case["prompt_text"].as_str().unwrap()
        );
        let got = tok.apply_glm4_template(&msgs, gen).unwrap();
        assert_eq!(got, ids(&case["input_ids"]));
        assert_eq!(ids(&case["position_ids"]).len(), got.len());
        assert_eq!(
            tok.decode_with(&got, DecodeMode::RenderSpecial).unwrap(),
            case["decoded"].as_str().unwrap()
        );
        // A conversation ending in a user message is what `encode_chat` builds.
        if gen && msgs.last().is_some_and(|m| m.role == Role::User) {
            let (query, history) = msgs.split_last().unwrap();
            assert_eq!(tok.encode_chat(history, &query.content).unwrap(), got);
        }
    }
}

#[test]
fn raw_file_cases() {
    let tok = raw();
    assert_eq!(tok.family(), Family::Glm4);
    assert_eq!(tok.vocab_size(), 2014);
    assert_eq!(tok.sp_vocab_size(), 2000);
    check_cases(&tok);
}

#[test]
fn raw_file_chat_template() {
    check_chat(&raw());
}

#[test]
fn gguf_cases_and_chat_template() {
    let tok = from_gguf();
    assert_eq!(tok.family(), Family::Glm4, "found from the vocabulary");
    check_cases(&tok);
    check_chat(&tok);
}

#[test]
fn special_ids_and_stop_ids() {
    let tok = raw();
    let want = &cases()["tokenizer"]["special_ids"];
    for (name, id) in want.as_object().unwrap() {
        assert_eq!(
            tok.piece_to_id(name),
            Some(id.as_u64().unwrap() as u32),
            "{name}"
        );
    }
    let s = tok.special_ids();
    assert_eq!(tok.prompt_prefix(), [2002, 2004]);
    let roles = s.roles.unwrap();
    assert_eq!(
        [roles.system, roles.user, roles.assistant, roles.observation],
        [2006, 2007, 2008, 2009]
    );
    let mut stops = tok.stop_ids();
    stops.sort_unstable();
    assert_eq!(stops, [2000, 2007, 2009]);
    assert_eq!(tok.eos_id(), Some(2000));
    assert_eq!(tok.unk_id(), None);
}

/// A megabyte of one character (one pre-tokenizer piece) and of whitespace: both linear.
#[test]
fn hostile_long_inputs_are_fast() {
    let tok = raw();
    for text in [
        "a".repeat(1 << 20),
        " ".repeat(1 << 20) + "x",
        "你".repeat(1 << 18),
        "\n ".repeat(1 << 19),
        "1".repeat(1 << 20),
    ] {
        let start = std::time::Instant::now();
        let ids = tok.encode(&text);
        assert!(!ids.is_empty());
        assert_eq!(tok.decode(&ids).unwrap(), text);
        let secs = start.elapsed().as_secs_f64();
        assert!(secs < 20.0, "{secs} s for {} bytes", text.len());
    }
}

/// Decoding never splits a character, even when its bytes arrive in several ids, and an
/// incomplete one at the end becomes U+FFFD as in Python's `errors="replace"`.
#[test]
fn streaming_holds_back_partial_characters() {
    let tok = raw();
    let text = "🙂😀 emoji 你好世界";
    let ids = tok.encode_ordinary(text);
    let mut d = tok.stream_decoder(DecodeMode::SkipSpecial);
    let mut out = String::new();
    for &id in &ids {
        let piece = d.push(&tok, id).unwrap();
        assert!(text.contains(&piece));
        out.push_str(&piece);
    }
    out.push_str(&d.finish());
    assert_eq!(out, text);
    let e4 = tok
        .piece_to_id(&chatglm::tokenizer::gpt2_spelling(&[0xe4]))
        .unwrap();
    let bd = tok
        .piece_to_id(&chatglm::tokenizer::gpt2_spelling(&[0xbd]))
        .unwrap();
    assert_eq!(tok.decode(&[e4, bd]).unwrap(), "\u{fffd}");
    assert_eq!(
        tok.decode(&[e4, 2007, bd]).unwrap(),
        "\u{fffd}",
        "skipped specials join runs"
    );
    assert_eq!(
        tok.decode_with(&[e4, 2007, bd], DecodeMode::RenderSpecial)
            .unwrap(),
        "\u{fffd} <|user|> \u{fffd}"
    );
    assert!(tok.decode_with(&[2007], DecodeMode::SentencePiece).is_err());
    assert!(tok.decode(&[5000]).is_err());
}

#[test]
fn bad_files_are_typed_errors() {
    let dir = std::env::temp_dir().join(format!("chatglm-glm4-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in [
        ("badb64", "IQ= 0\n"),
        ("badrank", "IQ== 1\n"),
        ("norank", "IQ==\n"),
        ("missing-bytes", "IQ== 0\nIg== 1\n"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let err = Tokenizer::from_tiktoken_file(&path).unwrap_err();
        assert!(!err.to_string().is_empty(), "{name}");
    }
    assert!(Tokenizer::from_tiktoken_file(dir.join("nope")).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

proptest::proptest! {
    /// Any text survives encode and decode (specials are skipped, so none are generated
    /// here), the streaming decoder agrees with the batch one, and plain BPE never yields a
    /// special id.
    #[test]
    fn any_text_round_trips(text in "(?s)[a-zA-Z0-9 \t\n\r'’.,!?你好世界😀\u{0}-\u{7f}\u{80}-\u{10ffff}]{0,64}") {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        let tok = TOK.get_or_init(raw);
        let plain = tok.encode_ordinary(&text);
        proptest::prop_assert!(plain.iter().all(|&id| id < 2000));
        proptest::prop_assert_eq!(tok.decode(&plain).unwrap(), text.clone());
        let ids = tok.encode_with_prefix(&text);
        let mut d = tok.stream_decoder(DecodeMode::RenderSpecial);
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&d.push(tok, id).unwrap());
        }
        streamed.push_str(&d.finish());
        proptest::prop_assert_eq!(streamed, tok.decode_with(&ids, DecodeMode::RenderSpecial).unwrap());
    }
}

/// The toy vocabulary's GGUF metadata with `edit` applied to its tokens and types, read back.
fn edited(
    edit: impl FnOnce(&mut Vec<String>, &mut Vec<i32>),
    eos: u32,
) -> Result<Tokenizer, chatglm::tokenizer::TokenizerError> {
    use chatglm::arch::keys;
    use chatglm::gguf::{Array, GgufWriter, Value as G};
    let text = std::fs::read_to_string(format!("{}/tokenizer.model", dir())).unwrap();
    let parts = ByteLevelParts::glm4_from_tiktoken(&text, Some(2048)).unwrap();
    let mut md = Metadata::new();
    md.push_str(keys::GENERAL_ARCHITECTURE, "chatglm").unwrap();
    parts.to_gguf(&mut md).unwrap();
    let mut tokens = parts.tokens.clone();
    let mut types: Vec<i32> = parts.types.iter().map(|&t| t as i32).collect();
    edit(&mut tokens, &mut types);
    let mut out = Metadata::new();
    for (k, v) in md.iter() {
        let v = match k {
            keys::TOKENIZER_TOKENS => G::Array(Array::String(tokens.clone())),
            keys::TOKENIZER_TOKEN_TYPE => G::Array(Array::I32(types.clone())),
            keys::TOKENIZER_EOS_ID => G::U32(eos),
            _ => v.clone(),
        };
        out.push(k, v).unwrap();
    }
    let bytes = GgufWriter::new(Vec::new(), &out, &[])
        .unwrap()
        .finish()
        .unwrap();
    Tokenizer::from_gguf(&GgufFile::from_bytes(bytes).unwrap())
}

/// A hostile or broken byte-level vocabulary is a typed error naming the problem, never a
/// panic; a huge special token costs time linear in the text.
#[test]
fn hostile_gguf_vocabularies_are_typed_errors() {
    assert!(edited(|_, _| {}, 2000).is_ok());
    type Edit = Box<dyn FnOnce(&mut Vec<String>, &mut Vec<i32>)>;
    let cases: Vec<(&str, Edit, u32)> = vec![
        (
            "GPT-2-spelled",
            Box::new(|t, _| t[300] = "\u{3000}".into()),
            2000,
        ),
        ("twice", Box::new(|t, _| t[301] = t[300].clone()), 2000),
        ("0x", Box::new(|_, ty| ty[5] = 5), 2000),
        ("[gMASK]", Box::new(|_, ty| ty[2002] = 5), 2000),
        ("token_type", Box::new(|_, ty| ty[7] = 2), 2000),
        ("token_type", Box::new(|_, ty| ty.truncate(100)), 2000),
        ("eos_token_id", Box::new(|_, _| {}), 4096),
        ("token 400", Box::new(|t, _| t[400] = String::new()), 2000),
        (
            "at most 256",
            Box::new(|t, ty| {
                t[2020] = "a".repeat(1 << 20);
                ty[2020] = 3;
            }),
            2000,
        ),
    ];
    for (want, edit, eos) in cases {
        let err = edited(edit, eos).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    // The longest special token allowed and a megabyte that keeps almost matching it.
    let tok = edited(
        |t, ty| {
            t[2020] = "a".repeat(255) + "b";
            ty[2020] = 3;
        },
        2000,
    )
    .unwrap();
    let text = "a".repeat(1 << 20) + "b";
    let start = std::time::Instant::now();
    let ids = tok.encode(&text);
    assert_eq!(ids.last(), Some(&2020), "the special token at the end");
    assert_eq!(tok.decode(&ids).unwrap(), "a".repeat((1 << 20) - 255));
    assert!(start.elapsed().as_secs_f64() < 60.0);
}
