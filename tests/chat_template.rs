//! `tokenizer.chat_template`: the Jinja template each family's files carry for other runtimes,
//! rendered as transformers renders it (`trim_blocks`, `lstrip_blocks`), must give the prompts
//! of the reference data: the official tokenizers' `apply_chat_template` text (GLM-4), their
//! prompt ids (ChatGLM3's `build_chat_input`) and prompt strings (ChatGLM2's `build_prompt`,
//! ChatGLM-6B's `chat`).

use chatglm::arch::Family;
use chatglm::tokenizer::{chat_template, Tokenizer};
use minijinja::{context, Environment};
use serde_json::{json, Value};

fn cases(dir: &str) -> Value {
    let path = format!(
        "{}/../shared/{dir}/tokenizer_cases.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The family's template applied to `messages`, as transformers renders it.
fn render(family: Family, messages: &Value, add_generation_prompt: bool) -> String {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_template("chat", chat_template(family).unwrap())
        .unwrap();
    env.get_template("chat")
        .unwrap()
        .render(context! { messages => messages, add_generation_prompt => add_generation_prompt })
        .unwrap()
}

/// `query` after the `history` rounds, as OpenAI-style messages.
fn rounds(query: &str, history: &Value) -> Value {
    let mut messages = Vec::new();
    for round in history.as_array().unwrap() {
        let (q, a) = (round[0].as_str().unwrap(), round[1].as_str().unwrap());
        messages.push(json!({"role": "user", "content": q}));
        messages.push(json!({"role": "assistant", "content": a}));
    }
    messages.push(json!({"role": "user", "content": query}));
    Value::Array(messages)
}

/// How a runtime with a SentencePiece vocabulary tokenizes a rendered template: the family's
/// special-token strings become their ids, the text between them is encoded (SentencePiece's
/// dummy prefix included, as llama.cpp does after a special token).
fn tokenize_rendered(tok: &Tokenizer, family: Family, text: &str) -> Vec<u32> {
    let specials = family.special_tokens();
    let mut ids = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let next = specials
            .iter()
            .filter_map(|s| rest.find(s).map(|at| (at, *s)))
            .min_by_key(|&(at, s)| (at, std::cmp::Reverse(s.len())));
        let (plain, special) = match next {
            Some((at, s)) => (&rest[..at], Some(s)),
            None => (rest, None),
        };
        if !plain.is_empty() {
            tok.encode_into(plain, &mut ids);
        }
        match special {
            Some(s) => {
                ids.push(tok.piece_to_id(s).unwrap());
                rest = &rest[plain.len() + s.len()..];
            }
            None => rest = "",
        }
    }
    ids
}

#[test]
fn glm4_template_renders_the_official_prompt_text() {
    let all = cases("golden-glm4");
    let chats = all["chat_inputs"].as_array().unwrap();
    assert!(chats.len() >= 5);
    for (i, case) in chats.iter().enumerate() {
        let add = case["add_generation_prompt"].as_bool().unwrap();
        let got = render(Family::Glm4, &case["messages"], add);
        assert_eq!(got, case["prompt_text"].as_str().unwrap(), "chat {i}");
    }
}

#[test]
fn chatglm3_template_gives_build_chat_input_ids() {
    let all = cases("golden");
    let file = all["tokenizers"]["identity"]["model_file"]
        .as_str()
        .unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/golden");
    let tok = Tokenizer::from_spm_file(format!("{dir}/{file}"), Family::ChatGlm3).unwrap();
    let inputs = all["chatglm3_chat_inputs"].as_array().unwrap();
    let mut checked = 0;
    for (i, case) in inputs.iter().enumerate() {
        let mut messages: Vec<Value> = case["history"].as_array().unwrap().clone();
        messages.push(json!({"role": case["role"], "content": case["query"]}));
        // Metadata (a tool call's name) has no place in chatglm3-6b's template.
        if messages
            .iter()
            .any(|m| m.get("metadata").is_some_and(|v| v != ""))
        {
            continue;
        }
        let text = render(Family::ChatGlm3, &Value::Array(messages), true);
        let want: Vec<u32> = case["identity"]["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            tokenize_rendered(&tok, Family::ChatGlm3, &text),
            want,
            "input {i}: {text:?}"
        );
        checked += 1;
    }
    assert!(checked >= 2, "{checked} inputs checked");
}

#[test]
fn chatglm2_template_gives_build_prompt() {
    let all = cases("golden");
    let prompts = all["chatglm2_chat_prompts"].as_array().unwrap();
    assert!(prompts
        .iter()
        .any(|c| !c["history"].as_array().unwrap().is_empty()));
    for (i, case) in prompts.iter().enumerate() {
        let messages = rounds(case["query"].as_str().unwrap(), &case["history"]);
        let got = render(Family::ChatGlm2, &messages, true);
        let want = format!("[gMASK]sop{}", case["prompt"].as_str().unwrap());
        assert_eq!(got, want, "prompt {i}");
    }
}

#[test]
fn chatglm1_template_gives_the_chat_prompt() {
    let all = cases("golden-glm1");
    let prompts = all["chat_prompts"].as_array().unwrap();
    assert!(prompts
        .iter()
        .any(|c| !c["history"].as_array().unwrap().is_empty()));
    for (i, case) in prompts.iter().enumerate() {
        let messages = rounds(case["query"].as_str().unwrap(), &case["history"]);
        let got = render(Family::ChatGlm1, &messages, true);
        let want = format!("{}[gMASK]<sop>", case["prompt"].as_str().unwrap());
        assert_eq!(got, want, "prompt {i}");
    }
}

/// llama.cpp picks its built-in format from the template's text (`llm_chat_detect_template`,
/// llama.cpp 0c1e570 `src/llama-chat.cpp`): `[gMASK]<sop>` means GLM-4, an `<|assistant|>`
/// with a `<|user|>` means GLM-Edge (checked before ChatGLM3), `[gMASK]sop` means ChatGLM3.
/// So only ChatGLM3's and GLM-4's templates may name their prefixes side by side.
#[test]
fn llama_cpp_recognises_only_the_formats_it_has() {
    let t = |f| chat_template(f).unwrap();
    assert!(t(Family::Glm4).contains("[gMASK]<sop>"));
    let c3 = t(Family::ChatGlm3);
    assert!(c3.contains("[gMASK]sop") && !c3.contains("<|user|>"));
    for f in [Family::ChatGlm2, Family::ChatGlm1] {
        for marker in ["[gMASK]sop", "[gMASK]<sop>", "<|assistant|>", "<|user|>"] {
            assert!(!t(f).contains(marker), "{f}: {marker}");
        }
    }
    assert!(chat_template(Family::CodeGeeX2).is_none());
}
