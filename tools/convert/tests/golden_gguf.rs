//! The whole product against the official Hugging Face implementation: each golden checkpoint
//! is converted to GGUF, loaded back (model and tokenizer, from the file alone), and its
//! prompts, logits, hidden states and greedy generations compared with `golden.json`.

mod common;

use chatglm::gguf::GgufFile;
use chatglm::model::Model;
use chatglm::tokenizer::{ChatMessage, Role, Tokenizer};
use chatglm_kernels::GgmlType;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// Converts `name` at `ty` into a temporary file and loads model and tokenizer from it.
fn load(name: &str, ty: GgmlType) -> (Model, Tokenizer, PathBuf) {
    let out = temp_dir(name).join(format!("{name}-{ty}.gguf"));
    convert_checkpoint(&golden_dir(name), ty, &out).unwrap();
    let file = Arc::new(GgufFile::open(&out).unwrap());
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let model = Model::from_gguf(file).unwrap();
    (model, tokenizer, out)
}

/// Chat history in golden.json's form (ChatGLM2: `[[q, a], ...]`; ChatGLM3: messages).
fn history(v: &Value) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    for item in v.as_array().unwrap() {
        match item {
            Value::Array(pair) => {
                out.push(ChatMessage::new(Role::User, pair[0].as_str().unwrap()));
                out.push(ChatMessage::new(Role::Assistant, pair[1].as_str().unwrap()));
            }
            Value::Object(m) => {
                let role = match m["role"].as_str().unwrap() {
                    "system" => Role::System,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    "observation" => Role::Observation,
                    r => panic!("unknown role {r}"),
                };
                out.push(ChatMessage::new(role, m["content"].as_str().unwrap()));
            }
            other => panic!("unexpected history item {other}"),
        }
    }
    out
}

/// The tokenizer read from the GGUF file builds exactly the reference prompts.
#[test]
fn golden_prompts_from_the_gguf_tokenizer() {
    for name in GOLDEN {
        let (_, tok, _) = load(name, GgmlType::Q8_0);
        let g = golden_json(name);
        let cases = [&g["prefill"], &g["positions"]]
            .into_iter()
            .chain(g["greedy"]["cases"].as_array().unwrap());
        for case in cases {
            let ids = tok
                .encode_chat(&history(&case["history"]), case["query"].as_str().unwrap())
                .unwrap();
            assert_eq!(ids, u32s(&case["input_ids"]), "{name}: {}", case["query"]);
        }
    }
}

/// f32 weights and an f32 cache: logits, hidden states and residuals within 1e-4 of the
/// reference everywhere.
#[test]
fn golden_logits_at_f32() {
    for name in GOLDEN {
        let (model, _, _) = load(name, GgmlType::F32);
        golden::check_logits(name, &model, &golden_json(name));
    }
}

/// Greedy generation reproduces the reference ids exactly (f32 weights; f32 and f16 cache).
#[test]
fn golden_greedy_at_f32() {
    for name in GOLDEN {
        let (model, tok, _) = load(name, GgmlType::F32);
        golden::check_greedy(name, &model, &tok, &golden_json(name));
    }
}
