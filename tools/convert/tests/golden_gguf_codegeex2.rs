//! CodeGeeX2: the ChatGLM2 network and tokenizer with its own prompt convention (code
//! completion, no chat rounds). A ChatGLM2 golden checkpoint converted as `--family
//! codegeex2` keeps its numbers and gets the code model's prompt format.

mod common;

use chatglm::arch::{keys, Family};
use chatglm::gguf::GgufFile;
use chatglm::model::Model;
use chatglm::tokenizer::{codegeex2_prompt, ChatMessage, Role, Tokenizer};
use chatglm::Engine;
use chatglm_kernels::GgmlType;
use common::*;
use std::sync::Arc;

fn convert_as_codegeex2(ty: GgmlType) -> std::path::PathBuf {
    let out = temp_dir("codegeex2").join(format!("codegeex2-{ty}.gguf"));
    convert_checkpoint_family(
        &golden_dir("glm2-tiny"),
        ty,
        &out,
        true,
        Some(Family::CodeGeeX2),
    )
    .unwrap();
    out
}

#[test]
fn codegeex2_keeps_the_chatglm2_numbers_and_stores_its_family() {
    let out = convert_as_codegeex2(GgmlType::F32);
    let file = Arc::new(GgufFile::open(&out).unwrap());
    assert_eq!(
        file.metadata().get_str(keys::PROMPT_FORMAT).unwrap(),
        "codegeex2"
    );
    let tok = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(tok.family(), Family::CodeGeeX2);
    assert_eq!(tok.stop_ids(), [2], "</s> only, as ChatGLM2");
    let model = Model::from_gguf(file).unwrap();
    common::golden::check_logits("codegeex2", &model, &golden_json("glm2-tiny"));
}

/// No chat rounds: `chat` and `run` use the text itself after `[gMASK] sop` (what
/// CodeGeeX2's own examples pass to `tokenizer.encode`), with no `[Round N]` and no history.
#[test]
fn codegeex2_prompts_are_raw_code() {
    let out = convert_as_codegeex2(GgmlType::Q8_0);
    let file = Arc::new(GgufFile::open(&out).unwrap());
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let request = codegeex2_prompt("Python", "write a bubble sort function");
    assert_eq!(
        request,
        "# language: Python\n# write a bubble sort function\n"
    );
    let raw = tok.encode_with_prefix(&request);
    let history = [
        ChatMessage::new(Role::User, "def f():"),
        ChatMessage::new(Role::Assistant, "    pass"),
    ];
    assert_eq!(tok.encode_chat(&history, &request).unwrap(), raw);
    assert_eq!(tok.encode_chat(&[], &request).unwrap(), raw);
    assert!(!tok
        .decode(&tok.encode_chat(&[], &request).unwrap())
        .unwrap()
        .contains("[Round"));

    let engine = Arc::new(Engine::from_file(out.clone(), file).unwrap());
    let mut session =
        chatglm::Session::new(Arc::clone(&engine), chatglm::SessionOptions::default()).unwrap();
    let options = chatglm::GenerateOptions {
        max_new_tokens: 4,
        ..Default::default()
    };
    let first = session.chat(&request, &options, &mut |_| true).unwrap();
    assert_eq!(first.prompt_ids, raw);
    // The next message is not a second round either.
    let second = session.chat("def g():", &options, &mut |_| true).unwrap();
    assert_eq!(second.prompt_ids, tok.encode_with_prefix("def g():"));
}
