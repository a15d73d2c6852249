//! The `chatglm` binary on a GLM-4 file: `info` names the family, `tokenize` reads the raw
//! tiktoken `tokenizer.model`, `run --messages` builds GLM-4's chat template (tools included).
//! The model is a tiny GLM-4-shaped one with seeded random weights and the golden toy
//! tokenizer of `shared/golden-glm4`.

use chatglm::build::synthetic::SyntheticSource;
use chatglm::build::{build_plan, write_model, NoProgress, WriteOptions};
use chatglm::model::{ModelConfig, RopeScaling};
use chatglm::tokenizer::ByteLevelParts;
use chatglm_kernels::GgmlType;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

fn golden(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/golden-glm4")
        .join(file)
}

fn model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let text = std::fs::read_to_string(golden("tokenizer.model")).unwrap();
        tiny_model("glm4", &text)
    })
}

/// A tiny GLM-4-shaped model with seeded random weights and the vocabulary of the tiktoken
/// `text` (padded to 2048 ids), written once per test process under the name `name`.
fn tiny_model(name: &str, text: &str) -> PathBuf {
    {
        let dir = std::env::temp_dir().join(format!("chatglm-cli-glm4-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!("{name}.gguf"));
        let config = ModelConfig {
            vocab_size: 2048,
            hidden_size: 64,
            num_layers: 2,
            num_heads: 4,
            num_kv_groups: 2,
            head_dim: 16,
            ffn_hidden_size: 128,
            context_length: 1024,
            rms_eps: 1.5625e-7,
            rope_base: 10000.0,
            rope_scaling: RopeScaling::MultiplyBase(500.0),
            block: chatglm::model::Block::Glm2,
        };
        let vocab = ByteLevelParts::glm4_from_tiktoken(text, Some(2048)).unwrap();
        let opts = WriteOptions {
            output: out.clone(),
            matrix_type: GgmlType::Q8_0,
            portable: true,
            threads: 2,
            name: "glm4-cli".into(),
        };
        write_model(
            &config,
            &vocab,
            build_plan(&config, GgmlType::Q8_0, true).unwrap(),
            &mut SyntheticSource { seed: 4 },
            &opts,
            &mut NoProgress,
            &AtomicBool::new(false),
        )
        .unwrap();
        out
    }
}

fn chatglm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatglm"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn info_names_the_family() {
    let m = model().to_str().unwrap();
    let o = chatglm(&["info", "-m", m]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("family: glm4"), "{text}");
    let o = chatglm(&["info", "-m", m, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["family"], "glm4");
    assert_eq!(v["metadata"]["tokenizer.ggml.model"], "gpt2");
}

#[test]
fn tokenize_reads_the_tiktoken_file_and_the_gguf() {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(golden("tokenizer_cases.json")).unwrap())
            .unwrap();
    let case = &cases["cases"][20];
    let text = case["text"].as_str().unwrap();
    let raw = golden("tokenizer.model");
    for source in [
        ["--spm", raw.to_str().unwrap()],
        ["-m", model().to_str().unwrap()],
    ] {
        let o = chatglm(&["tokenize", source[0], source[1], "--json", text]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["ids"], case["hf_ids_no_special"], "{source:?} {text:?}");
    }
}

/// A conversation with a tools system message and history: the prompt is the template's.
#[test]
fn run_messages_uses_the_chat_template() {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(golden("tokenizer_cases.json")).unwrap())
            .unwrap();
    let dir = model().parent().unwrap();
    let mut checked = 0;
    for (i, case) in cases["chat_inputs"].as_array().unwrap().iter().enumerate() {
        let messages = case["messages"].as_array().unwrap();
        if !case["add_generation_prompt"].as_bool().unwrap()
            || messages.last().unwrap()["role"] != "user"
        {
            continue;
        }
        let path = dir.join(format!("messages-{i}.json"));
        std::fs::write(&path, serde_json::to_string(messages).unwrap()).unwrap();
        let m = model().to_str().unwrap();
        let o = chatglm(&[
            "run",
            "-m",
            m,
            "--messages",
            path.to_str().unwrap(),
            "-n",
            "3",
            "--temp",
            "0",
            "--json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["prompt_ids"], case["input_ids"], "case {i}");
        checked += 1;
    }
    assert_eq!(checked, 3);

    // Tools and metadata survive the file: the tools case's system and user messages.
    let tools_case = &cases["chat_inputs"][2]["messages"];
    let messages = &tools_case.as_array().unwrap()[..2];
    assert!(messages[0].get("tools").is_some());
    let path = dir.join("messages-tools.json");
    std::fs::write(&path, serde_json::to_string(messages).unwrap()).unwrap();
    let tok = chatglm::tokenizer::Tokenizer::from_tiktoken_file(golden("tokenizer.model")).unwrap();
    let mut msgs = vec![
        chatglm::tokenizer::ChatMessage::new(chatglm::tokenizer::Role::System, ""),
        chatglm::tokenizer::ChatMessage::new(
            chatglm::tokenizer::Role::User,
            messages[1]["content"].as_str().unwrap(),
        ),
    ];
    msgs[0].tools = messages[0].get("tools").cloned();
    let want = tok.apply_glm4_template(&msgs, true).unwrap();
    let text = chatglm::tokenizer::glm4_prompt(&msgs, true);
    assert!(text.contains("## get_weather"), "{text}");
    let m = model().to_str().unwrap();
    let o = chatglm(&[
        "run",
        "-m",
        m,
        "--messages",
        path.to_str().unwrap(),
        "-n",
        "2",
        "--temp",
        "0",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["prompt_ids"], serde_json::json!(want));
}

/// `bench` picks its prompt among the ordinary tokens: with a vocabulary of only the 256
/// single bytes (the synthetic GLM-4 placeholder's) it once drew ids far outside it.
#[test]
fn bench_runs_on_a_vocabulary_of_bytes_only() {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let text: String = (0..=255u8)
        .map(|b| {
            let (c0, c1) = (B64[usize::from(b >> 2)], B64[usize::from((b & 3) << 4)]);
            format!("{}{}== {b}\n", c0 as char, c1 as char)
        })
        .collect();
    let path = tiny_model("bytes-only", &text);
    let o = chatglm(&[
        "bench",
        "-m",
        path.to_str().unwrap(),
        "-p",
        "8",
        "-n",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}
