//! `chatglm serve` from the outside: the real binary on a free loopback port, driven with
//! plain HTTP/1.1 over a `TcpStream`, its answers checked against the library's own
//! tokenizer and generation.

use chatglm::build::plan::build_plan;
use chatglm::build::synthetic::{placeholder_tokenizer, Preset, SyntheticSource};
use chatglm::build::{write_model, NoProgress, WriteOptions};
use chatglm::sampler::SamplerConfig;
use chatglm::tokenizer::{ChatMessage, Family, Role, TokenizerParts};
use chatglm::{Engine, GenerateOptions, Session, SessionOptions};
use chatglm_kernels::GgmlType;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chatglm-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a synthetic model of `config`'s shape with the placeholder tokenizer of `family`.
fn write(name: &str, family: Family, config: chatglm::model::ModelConfig) -> PathBuf {
    let out = dir().join(name);
    let tokenizer =
        TokenizerParts::from_spm(placeholder_tokenizer(1000), family, Some(config.vocab_size))
            .unwrap();
    let plan = build_plan(&config, GgmlType::Q8_0, true).unwrap();
    let opts = WriteOptions {
        output: out.clone(),
        matrix_type: GgmlType::Q8_0,
        portable: true,
        threads: 2,
        name: name.into(),
    };
    write_model(
        &config,
        &tokenizer,
        plan,
        &mut SyntheticSource { seed: 3 },
        &opts,
        &mut NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    out
}

/// The tiny synthetic model (ChatGLM2 format).
fn tiny() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| write("tiny2.gguf", Family::ChatGlm2, Preset::Tiny.config()))
}

/// The tiny shape with the ChatGLM3 format (role tokens, tools).
fn tiny3() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| write("tiny3.gguf", Family::ChatGlm3, Preset::Tiny.config()))
}

/// A wider model whose long prompts take a while to read (to keep a slot busy).
fn slow() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        let mut c = Preset::Tiny.config();
        c.hidden_size = 512;
        c.num_heads = 8;
        c.head_dim = 64;
        c.ffn_hidden_size = 1536;
        c.num_layers = 4;
        write("slow.gguf", Family::ChatGlm2, c)
    })
}

/// `../shared/golden-glm4/<name>` (relative to the repository root).
fn golden_glm4(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/golden-glm4")
        .join(name)
}

/// The f16 safetensors shards of a golden checkpoint, as f32 by Hugging Face name.
struct Shards(std::collections::HashMap<String, Vec<f32>>);

impl chatglm::build::TensorSource for Shards {
    fn read(
        &mut self,
        t: &chatglm::build::plan::TensorPlan,
        _: usize,
        _: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), chatglm::build::BuildError> {
        let values = self
            .0
            .get(&t.hf_name)
            .unwrap_or_else(|| panic!("{}", t.hf_name));
        assert_eq!(values.len(), t.numel(), "{}", t.hf_name);
        out.clear();
        out.extend_from_slice(values);
        Ok(())
    }
}

/// The golden GLM-4 checkpoint `glm4-small` (f16 safetensors) written as a GGUF file with f32
/// matrices and its toy tiktoken tokenizer.
fn glm4_small() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        let dir = golden_glm4("glm4-small");
        let c: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let n = |k: &str| c[k].as_u64().unwrap() as usize;
        let config = chatglm::model::ModelConfig {
            vocab_size: n("padded_vocab_size"),
            hidden_size: n("hidden_size"),
            num_layers: n("num_layers"),
            num_heads: n("num_attention_heads"),
            num_kv_groups: n("multi_query_group_num"),
            head_dim: n("kv_channels"),
            ffn_hidden_size: n("ffn_hidden_size"),
            context_length: n("seq_length"),
            rms_eps: c["layernorm_epsilon"].as_f64().unwrap() as f32,
            rope_base: 10000.0,
            rope_scaling: chatglm::model::RopeScaling::MultiplyBase(
                c["rope_ratio"].as_f64().unwrap() as f32,
            ),
            block: chatglm::model::Block::Glm2,
        };
        let mut tensors = std::collections::HashMap::new();
        for shard in [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ] {
            let bytes = std::fs::read(dir.join(shard)).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            for (name, view) in st.tensors() {
                assert_eq!(view.dtype(), safetensors::Dtype::F16, "{name}");
                let values = view
                    .data()
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect();
                tensors.insert(name, values);
            }
        }
        let text = std::fs::read_to_string(dir.join("tokenizer.model")).unwrap();
        let vocab =
            chatglm::tokenizer::ByteLevelParts::glm4_from_tiktoken(&text, Some(config.vocab_size))
                .unwrap();
        let out = self::dir().join("glm4-small.gguf");
        let opts = WriteOptions {
            output: out.clone(),
            matrix_type: GgmlType::F32,
            portable: true,
            threads: 2,
            name: "glm4-small".into(),
        };
        write_model(
            &config,
            &vocab,
            build_plan(&config, GgmlType::F32, true).unwrap(),
            &mut Shards(tensors),
            &opts,
            &mut NoProgress,
            &AtomicBool::new(false),
        )
        .unwrap();
        out
    })
}

/// A running `chatglm serve`, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(model: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatglm"))
            .arg("serve")
            .arg("-m")
            .arg(model)
            .args(["--port", "0", "-t", "1"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(a.parse::<SocketAddr>().unwrap());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no address; log:\n{}", log.lock().unwrap()));
        if addr.ip().is_unspecified() {
            // Listening on every address: talk to it on loopback only.
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let server = Server { child, addr, log };
        let r = server.get("/health");
        assert_eq!(r.status, 200, "{}", r.body);
        server
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once `ok` holds for it (its lines arrive through a pipe, a moment after the
    /// server wrote them).
    fn wait_log(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if ok(&log) {
                return log;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what}; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn request(&self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Response {
        http(self.addr, method, path, headers, body)
    }

    fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    fn post(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path, &[], body.to_string().as_bytes())
    }

    fn health(&self) -> Value {
        self.get("/health").json()
    }

    /// Waits until `/health` satisfies `ok`.
    fn wait_health(&self, what: &str, ok: impl Fn(&Value) -> bool) {
        let start = Instant::now();
        loop {
            let h = self.health();
            if ok(&h) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{what}: last /health {h}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: status {} body {:?}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of a Server-Sent Events body.
    fn events(&self) -> Vec<String> {
        assert_eq!(self.header("content-type"), Some("text/event-stream"));
        self.body
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                e.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not an event: {e:?}"))
                    .to_owned()
            })
            .collect()
    }
}

fn send_request(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)
}

/// One HTTP/1.1 request (`Connection: close`), the answer read to its end (chunked bodies
/// decoded).
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    // The server may answer (413) before it has read all of a large body.
    let _ = send_request(&mut stream, method, path, headers, body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        let mut out = Vec::new();
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .unwrap();
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        out
    } else {
        rest.to_vec()
    };
    Response {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

/// What the library generates for `prompt` (greedy, `max` tokens, seed 7).
fn library_generation(model: &Path, prompt: &[u32], max: usize) -> chatglm::Generation {
    let engine = Arc::new(Engine::open(model).unwrap());
    let mut session = Session::new(engine, SessionOptions::default()).unwrap();
    let options = GenerateOptions {
        max_new_tokens: max,
        sampler: SamplerConfig {
            temperature: 0.0,
            seed: 7,
            ..SamplerConfig::default()
        },
    };
    session.generate(prompt, &options, &mut |_| true).unwrap()
}

fn chat_body(messages: Value, max_tokens: u64, stream: bool) -> Value {
    json!({
        "model": "anything",
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 7,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

#[test]
fn a_chat_reply_has_the_openai_shape_and_the_library_text_and_counts() {
    let server = Server::start(tiny(), &[]);
    let messages =
        json!([user("Hello there"), {"role": "assistant", "content": "hi"}, user("and then?")]);
    let r = server.post("/v1/chat/completions", &chat_body(messages, 12, false));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "tiny2");
    assert_eq!(v["choices"].as_array().unwrap().len(), 1);
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");

    let engine = Engine::open(tiny()).unwrap();
    let history = [
        ChatMessage::new(Role::User, "Hello there"),
        ChatMessage::new(Role::Assistant, "hi"),
    ];
    let prompt = engine
        .tokenizer()
        .encode_chat(&history, "and then?")
        .unwrap();
    let g = library_generation(tiny(), &prompt, 12);
    assert_eq!(choice["message"]["content"], g.text.as_str());
    let finish = if g.stop == chatglm::StopReason::MaxTokens {
        "length"
    } else {
        "stop"
    };
    assert_eq!(choice["finish_reason"], finish);
    let u = &v["usage"];
    assert_eq!(u["prompt_tokens"], prompt.len());
    assert_eq!(u["completion_tokens"], g.ids.len());
    assert_eq!(u["total_tokens"], prompt.len() + g.ids.len());
    let line = format!(
        "POST /v1/chat/completions 200 prompt={} completion={}",
        prompt.len(),
        g.ids.len()
    );
    server.wait_log("the request's log line", |l| l.contains(&line));

    // The same conversation, one round on: the slot's cache holds the earlier prompt.
    let messages = json!([user("Hello there"), {"role": "assistant", "content": "hi"}, user("and then?"),
        {"role": "assistant", "content": g.text}, user("more")]);
    let v = server
        .post("/v1/chat/completions", &chat_body(messages, 4, false))
        .json();
    assert!(
        v["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            >= prompt.len() as u64 - 8,
        "{v}"
    );

    let models = server.get("/v1/models").json();
    assert_eq!(models["data"][0]["id"], "tiny2");
}

#[test]
fn streamed_chunks_add_up_to_the_reply_and_end_with_done() {
    let server = Server::start(tiny(), &[]);
    let messages = json!([user("Tell me a story")]);
    let whole = server
        .post(
            "/v1/chat/completions",
            &chat_body(messages.clone(), 20, false),
        )
        .json();
    let r = server.post("/v1/chat/completions", &chat_body(messages, 20, true));
    assert_eq!(r.status, 200);
    let events = r.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    // The finish chunk, then the usage chunk (no choices).
    let n = chunks.len();
    assert_eq!(
        chunks[n - 2]["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(
        chunks[n - 1]["usage"]["completion_tokens"],
        whole["usage"]["completion_tokens"]
    );
    assert_eq!(
        chunks[n - 1]["usage"]["prompt_tokens"],
        whole["usage"]["prompt_tokens"]
    );
    assert!(chunks[..n - 2]
        .iter()
        .all(|c| c["choices"][0]["finish_reason"].is_null()));

    // Text completions stream the same way.
    let body = json!({"prompt": "once upon a time", "max_tokens": 9, "temperature": 0});
    let whole = server.post("/v1/completions", &body).json();
    assert_eq!(whole["object"], "text_completion");
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let events = server.post("/v1/completions", &sbody).events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, whole["choices"][0]["text"].as_str().unwrap());
    let engine = Engine::open(tiny()).unwrap();
    let prompt = engine.tokenizer().encode_with_prefix("once upon a time");
    assert_eq!(whole["usage"]["prompt_tokens"], prompt.len());
    let g = library_generation(tiny(), &prompt, 9);
    assert_eq!(whole["choices"][0]["text"], g.text.as_str());
}

#[test]
fn max_tokens_and_stop_sequences_end_the_reply() {
    let server = Server::start(tiny(), &[]);
    let engine = Engine::open(tiny()).unwrap();
    let prompt = engine.tokenizer().encode_chat(&[], "count").unwrap();
    let g = library_generation(tiny(), &prompt, 64);
    // Take a number of tokens the model reaches without an end token.
    let n = (g.ids.len() - 1).clamp(1, 5);
    for field in ["max_tokens", "max_completion_tokens"] {
        let body = json!({"messages": [user("count")], field: n, "temperature": 0});
        let v = server.post("/v1/chat/completions", &body).json();
        assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
        assert_eq!(v["usage"]["completion_tokens"], n);
    }
    // A stop sequence taken from the middle of the reply: the text ends before it.
    let text = &g.text;
    let cut = text
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| i >= text.len() / 2 && !text[i..].starts_with(char::is_whitespace))
        .unwrap();
    let stop: String = text[cut..].chars().take(2).collect();
    let body = json!({"messages": [user("count")], "max_tokens": 64, "temperature": 0, "stop": [stop.clone(), "\u{1}never"]});
    let v = server.post("/v1/chat/completions", &body).json();
    let first = text.find(&stop).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        &text[..first],
        "stop {stop:?}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Streamed, the held-back text never leaks.
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let events = server.post("/v1/chat/completions", &sbody).events();
    let streamed: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(streamed, &text[..first]);
}

fn assert_400(server: &Server, body: &[u8], param: Option<&str>) {
    let r = server.request("POST", "/v1/chat/completions", &[], body);
    assert_eq!(
        r.status,
        400,
        "{} -> {}",
        String::from_utf8_lossy(&body[..body.len().min(200)]),
        r.body
    );
    let e = &r.json()["error"];
    assert_eq!(e["type"], "invalid_request_error");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(e["param"].as_str(), param, "{e}");
}

#[test]
fn bad_requests_get_an_error_naming_the_field_and_the_server_goes_on() {
    let server = Server::start(tiny(), &["-c", "64"]);
    let ok = chat_body(json!([user("hi")]), 3, false);
    let good = |server: &Server| {
        let r = server.post("/v1/chat/completions", &ok);
        assert_eq!(r.status, 200, "{}", r.body);
    };
    assert_400(&server, b"{\"messages\": [", None);
    assert_400(&server, b"not json", None);
    assert_400(&server, b"[1, 2]", None);
    good(&server);
    assert_400(&server, br#"{"messages": "hi"}"#, Some("messages"));
    assert_400(
        &server,
        br#"{"messages": [{"role": "robot", "content": "x"}]}"#,
        Some("messages[0].role"),
    );
    assert_400(
        &server,
        br#"{"messages": [{"content": "x"}]}"#,
        Some("messages[0]"),
    );
    assert_400(
        &server,
        br#"{"messages": [{"role": "user", "content": 5}]}"#,
        Some("messages[0].content"),
    );
    assert_400(&server, br#"{"messages": []}"#, Some("messages"));
    assert_400(
        &server,
        br#"{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#,
        Some("temperature"),
    );
    assert_400(
        &server,
        br#"{"messages": [{"role": "user", "content": "x"}], "temperature": 3}"#,
        Some("temperature"),
    );
    assert_400(
        &server,
        br#"{"messages": [{"role": "user", "content": "x"}], "top_p": 0}"#,
        Some("top_p"),
    );
    assert_400(
        &server,
        br#"{"messages": [{"role": "user", "content": "x"}], "n": 2}"#,
        Some("n"),
    );
    assert_400(
        &server,
        br#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}"#,
        Some("max_tokens"),
    );
    assert_400(
        &server,
        br#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}"#,
        Some("max_tokens"),
    );
    assert_400(
        &server,
        br#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1000000}"#,
        Some("max_tokens"),
    );
    assert_400(
        &server,
        br#"{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}"#,
        Some("stream"),
    );
    // ChatGLM2 knows user and assistant only, alternating; no tools.
    assert_400(
        &server,
        br#"{"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "x"}]}"#,
        Some("messages[0].role"),
    );
    assert_400(&server, br#"{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}]}"#, Some("tools"));
    good(&server);
    // Longer than the context (64).
    let long = json!({"messages": [user(&"word ".repeat(200))]});
    assert_400(&server, long.to_string().as_bytes(), Some("messages"));
    // Over the body limit: 413 with the same error object.
    let huge = format!(
        "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}",
        "a".repeat(9 << 20)
    );
    let r = server.request("POST", "/v1/chat/completions", &[], huge.as_bytes());
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    good(&server);
    // Unknown paths and wrong methods.
    let r = server.get("/v1/nothing");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    let r = server.get("/v1/chat/completions");
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    let r = server.request("POST", "/health", &[], b"{}");
    assert_eq!(r.status, 405);
    let r = server.request("POST", "/v1/completions", &[], br#"{"prompt": ["a", "b"]}"#);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "prompt");
    good(&server);
    server.wait_log("400s logged", |l| {
        l.contains("POST /v1/chat/completions 400")
    });
}

#[test]
fn an_api_key_is_required_when_set() {
    let server = Server::start(tiny(), &["--api-key", "s3cret"]);
    let body = chat_body(json!([user("hi")]), 2, false).to_string();
    for headers in [
        &[][..],
        &["Authorization: Bearer wrong"],
        &["Authorization: s3cret"],
    ] {
        let r = server.request("POST", "/v1/chat/completions", headers, body.as_bytes());
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(r.json()["error"]["type"], "authentication_error");
        assert_eq!(
            server.request("GET", "/v1/models", headers, b"").status,
            401
        );
    }
    let auth = ["Authorization: Bearer s3cret"];
    let r = server.request("POST", "/v1/chat/completions", &auth, body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn a_non_loopback_address_without_a_key_is_warned_about() {
    let server = Server::start(tiny(), &["--host", "0.0.0.0"]);
    assert!(server.log().contains("warning"), "{}", server.log());
}

/// A prompt of about `tokens` tokens for the slow model (ChatGLM2 format).
fn long_prompt(tokens: usize) -> String {
    let engine = Engine::open(slow()).unwrap();
    let mut words = String::new();
    while engine.tokenizer().encode_chat(&[], &words).unwrap().len() < tokens {
        words.push_str("lorem ipsum dolor ");
    }
    words
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let server = Server::start(slow(), &["--parallel", "1", "--queue", "1"]);
    let text = long_prompt(1900);
    let body = json!({"messages": [user(&text)], "max_tokens": 4, "temperature": 0}).to_string();
    let addr = server.addr;
    let send = |body: String| {
        std::thread::spawn(move || http(addr, "POST", "/v1/chat/completions", &[], body.as_bytes()))
    };
    let a = send(body.clone());
    server.wait_health("first request running", |h| h["slots_free"] == 0);
    let b = send(body.clone());
    server.wait_health("second request queued", |h| h["queued"] == 1);
    let r = server.request("POST", "/v1/chat/completions", &[], body.as_bytes());
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["type"], "server_busy");
    assert_eq!(a.join().unwrap().status, 200);
    assert_eq!(b.join().unwrap().status, 200);
    // Served again once the queue has room.
    let r = server.request("POST", "/v1/chat/completions", &[], body.as_bytes());
    assert_eq!(r.status, 200);
}

#[test]
fn parallel_requests_give_the_text_of_one_alone() {
    let server = Server::start(tiny(), &["--parallel", "2"]);
    let body =
        |q: &str| json!({"messages": [user(q)], "max_tokens": 24, "temperature": 0.8, "seed": 11});
    let alone = server.post("/v1/chat/completions", &body("first")).json();
    let alone2 = server.post("/v1/chat/completions", &body("second")).json();
    for _ in 0..3 {
        let addr = server.addr;
        let threads: Vec<_> = ["first", "second", "first"]
            .into_iter()
            .map(|q| {
                let b = body(q).to_string();
                std::thread::spawn(move || {
                    http(addr, "POST", "/v1/chat/completions", &[], b.as_bytes()).json()
                })
            })
            .collect();
        let got: Vec<Value> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let text = |v: &Value| v["choices"][0]["message"]["content"].clone();
        assert_eq!(text(&got[0]), text(&alone));
        assert_eq!(text(&got[1]), text(&alone2));
        assert_eq!(text(&got[2]), text(&alone));
    }
}

/// The bounded load test: 8 concurrent clients x 10 requests on 4 slots (the rest queue),
/// all complete, and every greedy text is the one the request gets alone.
#[test]
fn eight_clients_times_ten_requests_all_complete_with_the_text_of_one_alone() {
    let server = Server::start(tiny(), &["--parallel", "4"]);
    let body = |c: usize| {
        json!({"messages": [user(&format!("question number {c}"))], "max_tokens": 6 + c % 3,
               "temperature": 0})
    };
    let text = |v: &Value| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let alone: Vec<String> = (0..8)
        .map(|c| text(&server.post("/v1/chat/completions", &body(c)).json()))
        .collect();
    let addr = server.addr;
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let b = body(c).to_string();
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| {
                        let r = http(addr, "POST", "/v1/chat/completions", &[], b.as_bytes());
                        assert_eq!(r.status, 200, "{}", r.body);
                        r.json()
                    })
                    .collect::<Vec<Value>>()
            })
        })
        .collect();
    for (c, client) in clients.into_iter().enumerate() {
        let replies = client.join().unwrap();
        assert_eq!(replies.len(), 10);
        for r in &replies {
            assert_eq!(text(r), alone[c], "client {c}");
        }
    }
    let h = server.health();
    assert_eq!(h["slots_free"], 4, "{h}");
    assert_eq!(h["queued"], 0, "{h}");
}

/// A long prompt is read in parts between the steps of the others: a short request started
/// after it is answered first. A client that leaves while its prompt is read is cancelled
/// then, before any token.
#[test]
fn a_long_prompt_does_not_hold_up_the_others_and_its_client_can_leave_during_it() {
    let server = Server::start(slow(), &["--parallel", "2", "-b", "16"]);
    let text = long_prompt(1900);
    let long_body =
        |t: &str| json!({"messages": [user(t)], "max_tokens": 2, "temperature": 0}).to_string();
    let addr = server.addr;
    let b = long_body(&text);
    let long =
        std::thread::spawn(move || http(addr, "POST", "/v1/chat/completions", &[], b.as_bytes()));
    server.wait_health("the long request running", |h| h["slots_free"] == 1);
    let short = server.post(
        "/v1/chat/completions",
        &json!({"messages": [user("hi")], "max_tokens": 3, "temperature": 0}),
    );
    assert_eq!(short.status, 200, "{}", short.body);
    assert!(
        !long.is_finished(),
        "the long prompt was read before the short request was answered"
    );
    assert_eq!(long.join().unwrap().status, 200);

    // Another long prompt (nothing cached to reuse); the client leaves while it is read.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let b = long_body(&format!("again {text}"));
    send_request(
        &mut stream,
        "POST",
        "/v1/chat/completions",
        &[],
        b.as_bytes(),
    )
    .unwrap();
    server.wait_health("the request running", |h| h["slots_free"] == 1);
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);
    server.wait_health("the slot free again", |h| h["slots_free"] == 2);
    let log = server.wait_log("a cancellation", |l| l.contains("499 (client closed)"));
    assert!(log.contains("client gone after 0 tokens"), "{log}");
}

/// GLM-4 chats through the server (the golden checkpoint `glm4-small`, greedy), alone and
/// two at once (batched decode), stream or not: the reply is the reference's text.
#[test]
fn glm4_chat_replies_are_the_golden_text() {
    let g: Value = serde_json::from_str(
        &std::fs::read_to_string(golden_glm4("glm4-small").join("golden.json")).unwrap(),
    )
    .unwrap();
    let engine = Engine::open(glm4_small()).unwrap();
    let eos: Vec<u32> = g["greedy"]["settings"]["eos_token_id"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let mut stops = engine.tokenizer().stop_ids().to_vec();
    stops.sort_unstable();
    assert_eq!(stops, eos);
    let max = g["greedy"]["settings"]["max_new_tokens"].as_u64().unwrap();
    // The cases without tools (their messages are OpenAI messages as they are).
    let cases: Vec<&Value> = g["greedy"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["messages"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m.get("tools").is_none())
        })
        .collect();
    assert_eq!(cases.len(), 2);
    let server = Server::start(glm4_small(), &["--parallel", "2"]);
    let ask = |case: &Value, stream: bool| {
        let body = chat_body(case["messages"].clone(), max, stream);
        let r = http(
            server.addr,
            "POST",
            "/v1/chat/completions",
            &[],
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        if !stream {
            return r.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        r.events()
            .iter()
            .filter(|e| *e != "[DONE]")
            .filter_map(|e| {
                let v: Value = serde_json::from_str(e).unwrap();
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    };
    for case in &cases {
        let want = case["text"].as_str().unwrap().trim();
        assert!(!want.is_empty());
        assert_eq!(ask(case, false), want);
        assert_eq!(ask(case, true), want);
    }
    let both: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = cases.iter().map(|c| s.spawn(|| ask(c, false))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (case, got) in cases.iter().zip(&both) {
        assert_eq!(got, case["text"].as_str().unwrap().trim());
    }
}

#[test]
fn a_client_that_leaves_frees_its_slot() {
    let server = Server::start(slow(), &["--parallel", "1"]);
    // A long reply, streamed; the client reads its first chunk and closes.
    let body = json!({"messages": [user("go on")], "max_tokens": 2000, "temperature": 1, "seed": 5, "stream": true});
    let mut stream = TcpStream::connect(server.addr).unwrap();
    send_request(
        &mut stream,
        "POST",
        "/v1/chat/completions",
        &[],
        body.to_string().as_bytes(),
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while !line.contains("data: ") {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    drop(reader);
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);
    let start = Instant::now();
    let r = server.post(
        "/v1/chat/completions",
        &json!({"messages": [user("hi")], "max_tokens": 2}),
    );
    assert_eq!(r.status, 200);
    let waited = start.elapsed();
    let log = server.wait_log("a cancellation", |l| {
        l.contains("client gone after ") && l.contains("499 (client closed)")
    });
    let gone = log
        .lines()
        .find_map(|l| l.split("client gone after ").nth(1))
        .unwrap_or_else(|| panic!("no cancellation in the log:\n{log}"));
    let generated: usize = gone.split(' ').next().unwrap().parse().unwrap();
    assert!(generated < 2000, "{gone}; waited {waited:?}");
    assert!(
        log.contains("POST /v1/chat/completions 499 (client closed)"),
        "{log}"
    );

    // Not streamed: the client gives up waiting for the whole reply.
    let mut body = body;
    body["stream"] = json!(false);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    send_request(
        &mut stream,
        "POST",
        "/v1/chat/completions",
        &[],
        body.to_string().as_bytes(),
    )
    .unwrap();
    server.wait_health("the request running", |h| h["slots_free"] == 0);
    drop(stream);
    server.wait_health("the slot free again", |h| h["slots_free"] == 1);
    server.wait_log("a second cancellation", |l| {
        l.matches("client gone after ").count() == 2
            && l.matches("499 (client closed)").count() == 2
    });
}

#[test]
fn sigterm_exits_zero() {
    let mut server = Server::start(tiny(), &[]);
    // A request in flight finishes (or is cancelled) before the exit.
    let addr = server.addr;
    let body = json!({"messages": [user("hi")], "max_tokens": 200, "stream": true}).to_string();
    let client = std::thread::spawn(move || {
        http(addr, "POST", "/v1/chat/completions", &[], body.as_bytes())
    });
    std::thread::sleep(Duration::from_millis(50));
    let kill = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}\n{}", server.log());
    let r = client.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn chatglm3_tools_go_into_the_system_message_and_tool_results_are_observations() {
    let server = Server::start(tiny3(), &[]);
    let engine = Engine::open(tiny3()).unwrap();
    let tok = engine.tokenizer();
    let function = json!({"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}});
    let tools = json!([{"type": "function", "function": function}]);
    let body = json!({"messages": [user("Weather in Paris?")], "tools": tools, "max_tokens": 3, "temperature": 0});
    let v = server.post("/v1/chat/completions", &body).json();
    let mut system = ChatMessage::new(Role::System, "Answer the following questions as best as you can. You have access to the following tools:");
    system.tools = Some(json!([function]));
    let prompt = tok
        .build_chat_input(&[system.clone()], "Weather in Paris?", Role::User)
        .unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], prompt.len(), "{v}");

    // A round trip: the assistant's call and the tool's result come back as the model's
    // own metadata line and observation message.
    let messages = json!([
        {"role": "system", "content": "You are helpful."},
        user("Weather in Paris?"),
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 21}"},
    ]);
    let body = json!({"messages": messages, "tools": tools, "max_tokens": 3, "temperature": 0});
    let v = server.post("/v1/chat/completions", &body).json();
    system.content = "You are helpful.".into();
    let mut call = ChatMessage::new(Role::Assistant, "```python\ntool_call(city='Paris')\n```");
    call.metadata = "get_weather".into();
    let history = [
        system,
        ChatMessage::new(Role::User, "Weather in Paris?"),
        call,
    ];
    let prompt = tok
        .build_chat_input(&history, "{\"temperature\": 21}", Role::Observation)
        .unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], prompt.len(), "{v}");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    let g = library_generation(tiny3(), &prompt, 3);
    assert_eq!(text, g.text);

    // tool_choice none: no tools in the prompt; a named unknown tool is an error.
    let body = json!({"messages": [user("Weather in Paris?")], "tools": tools, "tool_choice": "none", "max_tokens": 1});
    let v = server.post("/v1/chat/completions", &body).json();
    let plain = tok
        .build_chat_input(&[], "Weather in Paris?", Role::User)
        .unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], plain.len());
    let body = json!({"messages": [user("x")], "tools": tools, "tool_choice": {"type": "function", "function": {"name": "nope"}}});
    let r = server.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "tool_choice.function.name");
    let body = json!({"messages": [user("x"), {"role": "assistant", "content": "y"}]});
    let r = server.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "messages[1].role");
}

/// The official `openai` Python client against the server, when `CHATGLM_OPENAI_PYTHON`
/// names a Python interpreter that has it (`pip install openai`); otherwise says so and
/// returns.
#[test]
fn the_openai_python_client_works() {
    let Some(python) = std::env::var_os("CHATGLM_OPENAI_PYTHON") else {
        eprintln!("CHATGLM_OPENAI_PYTHON is not set: the openai client check did not run");
        return;
    };
    let server = Server::start(tiny3(), &["--api-key", "k"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve_openai.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("http://{}/v1", server.addr))
        .arg("k")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}
