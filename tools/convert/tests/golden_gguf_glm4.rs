//! GLM-4 through the whole product against the official Hugging Face implementation: each
//! checkpoint of `shared/golden-glm4` (f32 `.bin`, f16 safetensors shards, the 1M-context
//! variant's f16 `.bin` shards) converts, loads back from the file alone (model, byte-level
//! tokenizer, family), builds the reference prompts from its messages, and reproduces the
//! logits, hidden states, decode steps, long-prompt rows and greedy generations.

mod common;

use chatglm::arch::{keys, Family};
use chatglm::gguf::GgufFile;
use chatglm::model::{Model, ModelConfig, RopeScaling};
use chatglm::tokenizer::{ChatMessage, Role, Tokenizer};
use chatglm::Engine;
use chatglm_convert::config::HfConfig;
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

/// golden.json's messages.
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
                r => panic!("unknown role {r}"),
            };
            let mut msg = ChatMessage::new(role, m["content"].as_str().unwrap());
            if let Some(meta) = m.get("metadata").and_then(Value::as_str) {
                msg.metadata = meta.to_owned();
            }
            msg.tools = m.get("tools").cloned();
            msg
        })
        .collect()
}

/// The tokenizer read from the GGUF file builds exactly the reference prompts, through the
/// template and through `encode_chat` (history + the last user message).
#[test]
fn glm4_prompts_from_the_gguf_tokenizer() {
    for name in GOLDEN_GLM4 {
        let (_, tok, _) = load(name, GgmlType::Q8_0);
        assert_eq!(tok.family(), Family::Glm4);
        let g = golden_json(name);
        let cases = [&g["prefill"], &g["positions"]]
            .into_iter()
            .chain(g["greedy"]["cases"].as_array().unwrap());
        for case in cases {
            let msgs = messages(&case["messages"]);
            let want = u32s(&case["input_ids"]);
            assert_eq!(
                chatglm::tokenizer::glm4_prompt(&msgs, true),
                case["prompt_text"].as_str().unwrap()
            );
            assert_eq!(
                tok.apply_glm4_template(&msgs, true).unwrap(),
                want,
                "{name}"
            );
            let (query, history) = msgs.split_last().unwrap();
            assert_eq!(query.role, Role::User);
            assert_eq!(tok.encode_chat(history, &query.content).unwrap(), want);
        }
    }
}

/// f32 weights and an f32 cache: everything within 1e-4 of the reference.
#[test]
fn glm4_logits_at_f32() {
    for name in GOLDEN_GLM4 {
        let (model, _, _) = load(name, GgmlType::F32);
        common::golden::check_logits(name, &model, &golden_json(name));
    }
}

/// Greedy generation reproduces the reference ids and text exactly (f32 weights).
#[test]
fn glm4_greedy_at_f32() {
    for name in GOLDEN_GLM4 {
        let (model, tok, _) = load(name, GgmlType::F32);
        common::golden::check_greedy(name, &model, &tok, &golden_json(name));
    }
}

/// The file says what the checkpoint is: GLM-4's rope_ratio multiplies the RoPE base (500 →
/// 5e6, 1M: 10000 → 1e8), the vocabulary is llama.cpp's `gpt2` layout, the family is glm4.
#[test]
fn glm4_metadata_reads_back() {
    for (name, base) in [
        ("glm4-tiny", 5.0e6f32),
        ("glm4-small", 5.0e6),
        ("glm4-1m-tiny", 1.0e8),
    ] {
        let dir = golden_dir(name);
        let out = temp_dir(name).join("m.gguf");
        convert_checkpoint(&dir, GgmlType::Q8_0, &out).unwrap();
        let file = GgufFile::open(&out).unwrap();
        let got = ModelConfig::from_gguf(&file).unwrap();
        let hf = HfConfig::from_file(&dir.join("config.json")).unwrap();
        let want = hf.to_model_config(Family::Glm4);
        assert!(matches!(want.rope_scaling, RopeScaling::MultiplyBase(_)));
        // The file stores the multiplied base, as llama.cpp does.
        assert_eq!(got.effective_rope_base(), want.effective_rope_base());
        assert_eq!(got.effective_rope_base() as f32, base, "{name}");
        let plain = |c: ModelConfig| ModelConfig {
            rope_base: 0.0,
            rope_scaling: RopeScaling::None,
            ..c
        };
        assert_eq!(plain(got), plain(want), "{name}");
        let md = file.metadata();
        assert_eq!(md.get_f32(keys::ROPE_FREQ_BASE).unwrap(), base, "{name}");
        assert_eq!(md.get_str(keys::PROMPT_FORMAT).unwrap(), "glm4");
        assert_eq!(md.get_str(keys::TOKENIZER_MODEL).unwrap(), "gpt2");
        assert_eq!(md.get_str(keys::TOKENIZER_PRE).unwrap(), "chatglm-bpe");
        let tokens = md.get_str_array(keys::TOKENIZER_TOKENS).unwrap();
        assert_eq!(tokens.len(), 2048);
        assert_eq!(tokens[2000], "<|endoftext|>");
        assert_eq!(tokens[2007], "<|user|>");
        assert_eq!(tokens[2014], "[PAD2014]");
        assert_eq!(
            tokens[220], "\u{120}",
            "rank 220 is the space, GPT-2-spelled"
        );
        let types = md.get_i32_array(keys::TOKENIZER_TOKEN_TYPE).unwrap();
        assert_eq!(
            (types[0], types[2000], types[2013], types[2047]),
            (1, 3, 3, 5)
        );
        let merges = md.get_str_array(keys::TOKENIZER_MERGES).unwrap();
        assert_eq!(merges.len(), 2000 - 256, "one merge per multi-byte rank");
        assert!(
            merges.iter().all(|m| m.split(' ').count() == 2),
            "trained merges: two parts"
        );
        assert_eq!(md.get_u32(keys::TOKENIZER_EOS_ID).unwrap(), 2000);
        assert_eq!(md.get_u32(keys::TOKENIZER_EOT_ID).unwrap(), 2007);
        assert_eq!(md.get_u32(keys::TOKENIZER_PAD_ID).unwrap(), 2000);
        assert!(!md.get_bool(keys::TOKENIZER_ADD_BOS).unwrap());
    }
}

/// The 1M model's `seq_length` (2048 here; 1048576 in glm-4-9b-chat-1m) bounds the context,
/// but the cache holds only the positions asked for.
#[test]
fn glm4_cache_is_sized_by_the_asked_context() {
    let (model, _, _) = load("glm4-1m-tiny", GgmlType::Q8_0);
    let st = model
        .new_state(chatglm::model::StateOptions::new(64))
        .unwrap();
    assert_eq!(st.kv_cache().capacity(), 64);
}

/// The session builds GLM-4's prompt from messages (system, history, tools) and stops at the
/// reference's eos set: the greedy cases through `Session::respond`.
#[test]
fn glm4_session_uses_the_template() {
    let name = "glm4-tiny";
    let out = temp_dir(name).join("s.gguf");
    convert_checkpoint(&golden_dir(name), GgmlType::F32, &out).unwrap();
    let file = Arc::new(GgufFile::open(&out).unwrap());
    let engine = Arc::new(Engine::from_file(out.clone(), file).unwrap());
    let options = chatglm::SessionOptions {
        kv_type: chatglm::model::KvType::F32,
        ..Default::default()
    };
    let mut session = chatglm::Session::new(engine, options).unwrap();
    let generate = chatglm::GenerateOptions {
        max_new_tokens: 32,
        sampler: chatglm::sampler::SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        },
    };
    let g = golden_json(name);
    for case in g["greedy"]["cases"].as_array().unwrap() {
        let msgs = messages(&case["messages"]);
        let generation = session.respond(&msgs, &generate, &mut |_| true).unwrap();
        assert_eq!(generation.prompt_ids, u32s(&case["input_ids"]));
        assert_eq!(generation.ids, u32s(&case["new_ids"]));
    }
}

/// The C ABI names the family: 4 for GLM-4, 20 for CodeGeeX2 (see `include/chatglm.h`).
#[test]
#[allow(unsafe_code)]
fn glm4_family_through_the_c_abi() {
    use chatglm::ffi::model::*;
    use chatglm::ffi::status::chatglm_status::CHATGLM_OK;
    let out = temp_dir("glm4-c").join("m.gguf");
    convert_checkpoint(&golden_dir("glm4-tiny"), GgmlType::Q8_0, &out).unwrap();
    let geex = temp_dir("geex-c").join("m.gguf");
    convert_checkpoint_family(
        &golden_dir("glm2-tiny"),
        GgmlType::Q8_0,
        &geex,
        true,
        Some(Family::CodeGeeX2),
    )
    .unwrap();
    for (path, want) in [(out, 4), (geex, 20)] {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        let mut model = std::ptr::null_mut();
        let opts = chatglm_model_options_default();
        // SAFETY: a NUL-terminated path, a live options struct, a writable out pointer.
        let status = unsafe { chatglm_model_load(c.as_ptr(), &opts, &mut model) };
        assert_eq!(status, CHATGLM_OK);
        let mut info = std::mem::MaybeUninit::<chatglm_model_info>::uninit();
        // SAFETY: the live handle from chatglm_model_load, a writable info struct.
        let status = unsafe { chatglm_model_get_info(model, info.as_mut_ptr()) };
        assert_eq!(status, CHATGLM_OK);
        // SAFETY: chatglm_model_get_info returned OK, so it wrote the struct.
        let info = unsafe { info.assume_init() };
        assert_eq!(info.family, want);
        // SAFETY: the handle from chatglm_model_load, freed once.
        unsafe { chatglm_model_free(model) };
    }
}

/// A GLM-4 file as llama.cpp's `convert_hf_to_gguf.py` (`ChatGLMModel.set_vocab`) writes it
/// carries none of this project's keys, and sets `unk` to `<|endoftext|>` and `eot` to
/// `<|user|>`: our file with those keys removed and those ids set loads as GLM-4, and gives the
/// reference prompts, logits and greedy text.
#[test]
fn glm4_file_with_only_llama_cpp_keys_runs() {
    use chatglm::gguf::{GgufWriter, Metadata, TensorDesc, Value};
    let name = "glm4-tiny";
    let (_, _, ours) = load(name, GgmlType::F32);
    let src = GgufFile::open(&ours).unwrap();
    let mut md = Metadata::new();
    for (k, v) in src.metadata().iter() {
        let own = k.starts_with("chatglm.tokenizer.")
            || [
                keys::PROMPT_FORMAT,
                "chatglm.rope.ratio",
                keys::PORTABLE_FILE_TYPE,
            ]
            .contains(&k);
        if !own && k != keys::TOKENIZER_UNK_ID {
            md.push(k, v.clone()).unwrap();
        }
    }
    let eos = src.metadata().get_u32(keys::TOKENIZER_EOS_ID).unwrap();
    md.push(keys::TOKENIZER_UNK_ID, Value::U32(eos)).unwrap();
    let descs: Vec<TensorDesc> = src
        .tensors()
        .iter()
        .map(|t| TensorDesc::new(t.name.clone(), &t.dims, t.ty))
        .collect();
    let path = ours.with_file_name("llama-cpp-keys.gguf");
    let out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut w = GgufWriter::new(out, &md, &descs).unwrap();
    for t in src.tensors() {
        w.write_tensor(&t.name, src.tensor_data(t)).unwrap();
    }
    drop(w.finish().unwrap());

    let file = Arc::new(GgufFile::open(&path).unwrap());
    assert!(!file.metadata().contains_key(keys::PROMPT_FORMAT));
    let tok = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(tok.family(), Family::Glm4);
    let g = golden_json(name);
    let case = &g["prefill"];
    assert_eq!(
        tok.apply_glm4_template(&messages(&case["messages"]), true)
            .unwrap(),
        u32s(&case["input_ids"])
    );
    assert_eq!(
        tok.stop_ids().len(),
        3,
        "<|endoftext|>, <|user|>, <|observation|>"
    );
    let model = Model::from_gguf(file).unwrap();
    common::golden::check_logits(name, &model, &g);
    common::golden::check_greedy(name, &model, &tok, &g);
}
