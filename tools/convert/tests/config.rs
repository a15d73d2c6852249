//! `config.json` parsing and validation, and family detection.

use std::fs;
use std::path::{Path, PathBuf};

use chatglm::build::build_plan;
use chatglm_convert::checkpoint::Checkpoint;
use chatglm_convert::config::{family, ConfigError, Family, HfConfig, TokenIds};
use chatglm_kernels::GgmlType;
use serde_json::{json, Value};

fn golden_dir(name: &str) -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/golden"
    ))
    .join(name)
}

fn golden(name: &str) -> Value {
    let text = fs::read_to_string(golden_dir(name).join("golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("config")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The real THUDM/chatglm3-6b `config.json` (minus `auto_map`).
fn chatglm3_6b() -> Value {
    json!({
        "_name_or_path": "THUDM/chatglm3-6b",
        "model_type": "chatglm",
        "architectures": ["ChatGLMModel"],
        "add_bias_linear": false,
        "add_qkv_bias": true,
        "apply_query_key_layer_scaling": true,
        "apply_residual_connection_post_layernorm": false,
        "attention_dropout": 0.0,
        "attention_softmax_in_fp32": true,
        "bias_dropout_fusion": true,
        "ffn_hidden_size": 13696,
        "fp32_residual_connection": false,
        "hidden_dropout": 0.0,
        "hidden_size": 4096,
        "kv_channels": 128,
        "layernorm_epsilon": 1e-05,
        "multi_query_attention": true,
        "multi_query_group_num": 2,
        "num_attention_heads": 32,
        "num_layers": 28,
        "original_rope": true,
        "padded_vocab_size": 65024,
        "post_layer_norm": true,
        "rmsnorm": true,
        "seq_length": 8192,
        "use_cache": true,
        "torch_dtype": "float16",
        "transformers_version": "4.30.2",
        "tie_word_embeddings": false,
        "eos_token_id": 2,
        "pad_token_id": 0
    })
}

fn parse(v: &Value) -> Result<HfConfig, ConfigError> {
    HfConfig::from_json(&v.to_string())
}

#[test]
fn golden_configs_parse_and_validate() {
    for (model, dtype) in [
        ("glm2-tiny", "float32"),
        ("glm2-small", "float16"),
        ("glm3-tiny", "float16"),
    ] {
        let c = HfConfig::from_file(&golden_dir(model).join("config.json")).unwrap();
        c.validate().unwrap();
        let g = &golden(model)["config"];
        let field = |k: &str| g[k].as_u64().unwrap() as usize;
        assert_eq!(c.padded_vocab_size, field("padded_vocab_size"));
        assert_eq!(c.hidden_size, field("hidden_size"));
        assert_eq!(c.num_layers, field("num_layers"));
        assert_eq!(c.num_attention_heads, field("num_attention_heads"));
        assert_eq!(c.kv_channels, field("kv_channels"));
        assert_eq!(c.multi_query_group_num, field("multi_query_group_num"));
        assert_eq!(c.ffn_hidden_size, field("ffn_hidden_size"));
        assert_eq!(c.seq_length, field("seq_length"));
        assert_eq!(
            c.layernorm_epsilon,
            g["layernorm_epsilon"].as_f64().unwrap()
        );
        assert_eq!(c.torch_dtype.as_deref(), Some(dtype));
        assert_eq!(c.model_type.as_deref(), Some("chatglm"));
        assert_eq!(c.architectures, ["ChatGLMModel"]);
        assert_eq!(c.name_or_path.as_deref(), Some(model));
        assert_eq!(c.eos_token_id, Some(TokenIds::One(2)));
        assert_eq!(c.rope_ratio, None);
        assert_eq!(c.rope_ratio(), 1.0);
        assert!(c.multi_query_attention && c.add_qkv_bias && c.rmsnorm && c.original_rope);
        assert!(c.post_layer_norm && !c.add_bias_linear);
        assert!(!c.apply_residual_connection_post_layernorm);
    }
}

/// The converter's plan names exactly the tensors of each golden checkpoint (besides the
/// RoPE frequencies it does not copy), with their shapes.
#[test]
fn planned_tensors_match_the_checkpoints() {
    for model in ["glm2-tiny", "glm2-small", "glm3-tiny"] {
        let c = HfConfig::from_file(&golden_dir(model).join("config.json")).unwrap();
        let mut expected = expected_tensors(&c);
        expected.sort();
        let ckpt = Checkpoint::open(&golden_dir(model)).unwrap();
        let got: Vec<(String, Vec<usize>)> = ckpt
            .tensors()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        assert_eq!(got, expected, "{model}");
    }
}

/// State-dict names and shapes of a checkpoint of `c`: the converter's plan plus the RoPE
/// inverse frequencies.
fn expected_tensors(c: &HfConfig) -> Vec<(String, Vec<usize>)> {
    let shape = c.to_model_config(Family::ChatGlm2);
    let mut out: Vec<(String, Vec<usize>)> = build_plan(&shape, GgmlType::F32, true)
        .unwrap()
        .into_iter()
        .map(|t| (t.hf_name, t.shape))
        .collect();
    out.push((
        "transformer.rotary_pos_emb.inv_freq".to_owned(),
        vec![c.kv_channels / 4],
    ));
    out
}

#[test]
fn real_6b_configs() {
    let c = parse(&chatglm3_6b()).unwrap();
    c.validate().unwrap();
    assert_eq!(c.qkv_rows(), 4608);
    assert_eq!(c.rope_dim(), 64);
    assert_eq!(c.num_kv_heads(), 2);
    assert_eq!(c.head_dim(), 128);
    assert_eq!(c.seq_length, 8192);
    let shapes = expected_tensors(&c);
    assert_eq!(shapes.len(), 2 + 28 * 7 + 2);
    assert_eq!(
        shapes[3],
        (
            "transformer.encoder.layers.0.self_attention.query_key_value.bias".to_owned(),
            vec![4608]
        )
    );

    // chatglm3-6b-32k: rope_ratio 50, 32k context.
    let mut long = chatglm3_6b();
    long["rope_ratio"] = json!(50);
    long["seq_length"] = json!(32768);
    let c = parse(&long).unwrap();
    c.validate().unwrap();
    assert_eq!(c.rope_ratio(), 50.0);

    // Unknown fields are ignored; eos lists accepted.
    let mut extra = chatglm3_6b();
    extra["some_future_field"] = json!({"x": [1, 2]});
    extra["eos_token_id"] = json!([2, 64795, 64797]);
    let c = parse(&extra).unwrap();
    assert_eq!(c.eos_token_id.unwrap().to_vec(), [2, 64795, 64797]);
}

/// Each unsupported setting is refused with its field named.
#[test]
fn unsupported_settings_name_their_field() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("multi_query_attention", json!(false), "multi-query"),
        ("add_bias_linear", json!(true), "biases"),
        ("add_qkv_bias", json!(false), "bias"),
        ("rmsnorm", json!(false), "LayerNorm"),
        (
            "apply_residual_connection_post_layernorm",
            json!(true),
            "residual",
        ),
        ("post_layer_norm", json!(false), "final"),
        ("original_rope", json!(false), "rotary"),
        ("kv_channels", json!(126), "multiple of 4"),
        ("kv_channels", json!(127), "multiple of 4"),
        ("multi_query_group_num", json!(3), "multiple"),
        ("multi_query_group_num", json!(64), "multiple"),
        ("hidden_size", json!(0), "positive"),
        ("num_layers", json!(0), "positive"),
        ("padded_vocab_size", json!(0), "positive"),
        ("seq_length", json!(0), "positive"),
        ("multi_query_group_num", json!(0), "positive"),
        ("layernorm_epsilon", json!(0.0), "positive"),
        ("rope_ratio", json!(-1.0), "positive"),
        ("quantization_bit", json!(4), "pre-quantized"),
        ("pre_seq_len", json!(128), "P-tuning"),
        ("tie_word_embeddings", json!(true), "output layer"),
        ("model_type", json!("llama"), "ChatGLM"),
        ("padded_vocab_size", json!(usize::MAX / 2), "overflow"),
    ];
    for (field, value, reason_part) in cases {
        let mut v = chatglm3_6b();
        v[field] = value.clone();
        let err = parse(&v).unwrap().validate().unwrap_err();
        match &err {
            ConfigError::Unsupported {
                field: f, reason, ..
            } => {
                assert_eq!(*f, field, "{field} = {value}: {err}");
                assert!(reason.contains(reason_part), "{field} = {value}: {err}");
            }
            e => panic!("{field}: {e}"),
        }
        assert!(err.to_string().contains(field));
    }
    // Absent flags take ChatGLMConfig's defaults: multi_query_attention and add_qkv_bias
    // default to false, which the runtime refuses.
    let mut v = chatglm3_6b();
    v.as_object_mut().unwrap().remove("multi_query_attention");
    assert!(matches!(
        parse(&v).unwrap().validate(),
        Err(ConfigError::Unsupported {
            field: "multi_query_attention",
            ..
        })
    ));
}

#[test]
fn unparsable_configs_name_the_problem() {
    let mut v = chatglm3_6b();
    v.as_object_mut().unwrap().remove("hidden_size");
    let err = parse(&v).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }));
    assert!(err.to_string().contains("hidden_size"), "{err}");

    // A mistyped field: serde names the type and the position (one field per line in real
    // config files).
    let mut v = chatglm3_6b();
    v["num_layers"] = json!("28");
    let text = serde_json::to_string_pretty(&v).unwrap();
    let line = 1 + text.lines().position(|l| l.contains("num_layers")).unwrap();
    let err = HfConfig::from_json(&text).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }));
    assert!(err.to_string().contains(&format!("line {line}")), "{err}");

    // First-generation ChatGLM-6B.
    let v1 = json!({"model_type": "chatglm", "hidden_size": 4096, "num_layers": 28,
                    "position_encoding_2d": true, "inner_hidden_size": 16384});
    assert!(matches!(
        parse(&v1).unwrap_err(),
        ConfigError::UnsupportedModel(_)
    ));

    assert!(matches!(
        HfConfig::from_file(Path::new("/nonexistent/config.json")).unwrap_err(),
        ConfigError::Io { .. }
    ));
    assert!(matches!(
        HfConfig::from_json("{").unwrap_err(),
        ConfigError::Parse { .. }
    ));
}

#[test]
fn family_of_the_golden_checkpoints() {
    for (model, expected) in [
        ("glm2-tiny", Family::ChatGlm2),
        ("glm2-small", Family::ChatGlm2),
        ("glm3-tiny", Family::ChatGlm3),
        ("../golden-glm4/glm4-tiny", Family::Glm4),
        ("../golden-glm4/glm4-small", Family::Glm4),
        ("../golden-glm4/glm4-1m-tiny", Family::Glm4),
    ] {
        let dir = golden_dir(model);
        let c = HfConfig::from_file(&dir.join("config.json")).unwrap();
        let d = family(&dir, &c, None).unwrap();
        assert_eq!(d.family, expected, "{model}: {}", d.evidence);
        assert_eq!(d.family.name(), golden(model)["family"].as_str().unwrap());
        // The caller can override.
        let other = match expected {
            Family::ChatGlm2 => Family::ChatGlm3,
            _ => Family::ChatGlm2,
        };
        assert_eq!(family(&dir, &c, Some(other)).unwrap().family, other);
    }
}

/// A config with no name, in a directory with no name hint.
fn anonymous() -> HfConfig {
    let mut v = chatglm3_6b();
    v.as_object_mut().unwrap().remove("_name_or_path");
    parse(&v).unwrap()
}

#[test]
fn family_signals_in_order() {
    let c = anonymous();
    let dir = scratch("model");
    assert!(matches!(
        family(&dir, &c, None).unwrap_err(),
        ConfigError::UnknownFamily(_)
    ));

    // Older chatglm3-6b tokenizer_config: no role tokens, only a name.
    fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"name_or_path": "THUDM/chatglm3-6b", "tokenizer_class": "ChatGLMTokenizer"}"#,
    )
    .unwrap();
    assert_eq!(family(&dir, &c, None).unwrap().family, Family::ChatGlm3);

    // modeling_chatglm.py outranks names.
    fs::write(
        dir.join("modeling_chatglm.py"),
        "def chat(self, tokenizer, query):\n    prompt = tokenizer.build_prompt(query)\n",
    )
    .unwrap();
    assert_eq!(family(&dir, &c, None).unwrap().family, Family::ChatGlm2);

    // Newer chatglm3-6b tokenizer_config with added_tokens_decoder outranks modeling code.
    fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"added_tokens_decoder": {"64795": {"content": "<|user|>", "special": true}},
            "tokenizer_class": "ChatGLMTokenizer"}"#,
    )
    .unwrap();
    assert_eq!(family(&dir, &c, None).unwrap().family, Family::ChatGlm3);

    // The tokenizer code outranks everything.
    fs::write(
        dir.join("tokenization_chatglm.py"),
        "class SPTokenizer:\n    special_tokens = [\"[MASK]\", \"[gMASK]\", \"[sMASK]\", \"sop\", \"eop\"]\n",
    )
    .unwrap();
    let d = family(&dir, &c, None).unwrap();
    assert_eq!(d.family, Family::ChatGlm2);
    assert!(d.evidence.contains("tokenization_chatglm.py"));
    fs::write(
        dir.join("tokenization_chatglm.py"),
        "role_special_tokens = [\"<|system|>\", \"<|user|>\", \"<|assistant|>\", \"<|observation|>\"]\n",
    )
    .unwrap();
    assert_eq!(family(&dir, &c, None).unwrap().family, Family::ChatGlm3);

    // GLM-4: a tiktoken tokenizer, by its code, its class or its rank file.
    fs::write(dir.join("tokenization_chatglm.py"), "import tiktoken\n").unwrap();
    assert_eq!(family(&dir, &c, None).unwrap().family, Family::Glm4);
    fs::remove_file(dir.join("tokenization_chatglm.py")).unwrap();
    fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"tokenizer_class": "ChatGLM4Tokenizer"}"#,
    )
    .unwrap();
    assert_eq!(family(&dir, &c, None).unwrap().family, Family::Glm4);
    fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
    fs::write(dir.join("tokenizer.model"), "IQ== 0\nIg== 1\n").unwrap();
    let d = family(&dir, &c, None).unwrap();
    assert_eq!(d.family, Family::Glm4, "{}", d.evidence);
    // A SentencePiece proto is not a rank file.
    fs::copy(
        golden_dir("glm2-tiny").join("tokenizer.model"),
        dir.join("tokenizer.model"),
    )
    .unwrap();
    assert_eq!(family(&dir, &c, None).unwrap().family, Family::ChatGlm2);

    // CodeGeeX2 ships ChatGLM2's files under its own name.
    let geex = scratch("codegeex2-6b");
    fs::write(
        geex.join("tokenization_chatglm.py"),
        "class SPTokenizer:\n    special_tokens = [\"[MASK]\", \"[gMASK]\", \"[sMASK]\", \"sop\", \"eop\"]\n",
    )
    .unwrap();
    let d = family(&geex, &c, None).unwrap();
    assert_eq!(d.family, Family::CodeGeeX2, "{}", d.evidence);
    // ... but a tiktoken tokenizer (CodeGeeX4) is GLM-4.
    fs::write(geex.join("tokenization_chatglm.py"), "import tiktoken\n").unwrap();
    assert_eq!(family(&geex, &c, None).unwrap().family, Family::Glm4);

    // The directory name is the last resort.
    let named = scratch("chatglm2-6b");
    assert_eq!(family(&named, &c, None).unwrap().family, Family::ChatGlm2);
}

#[test]
fn family_names() {
    assert_eq!("chatglm3".parse::<Family>().unwrap(), Family::ChatGlm3);
    assert_eq!("GLM2".parse::<Family>().unwrap(), Family::ChatGlm2);
    assert_eq!("glm4".parse::<Family>().unwrap(), Family::Glm4);
    assert_eq!("codegeex2".parse::<Family>().unwrap(), Family::CodeGeeX2);
    assert!("glm5".parse::<Family>().is_err());
    for f in Family::ALL {
        assert_eq!(f.name().parse::<Family>().unwrap(), f);
    }
    assert_eq!(Family::ChatGlm2.to_string(), "chatglm2");
}
