//! The C API from C, C++ and Python, against the Rust API.
//!
//! The programs of `examples/c`, `examples/python` and `tests/c_api` are compiled with the
//! system's `cc` and `c++` against the libraries cargo built next to this test binary
//! (`target/<profile>/deps/libchatglm.a` and `.so`: the root crate's `crate-type` includes
//! `staticlib` and `cdylib`), run on a synthetic tiny model and on the golden `glm2-small`
//! checkpoint written to GGUF, and their output compared with what [`Session`] produces.

use chatglm::build::synthetic::{write_synthetic, Preset};
use chatglm::build::{
    build_plan, write_model, BuildError, NoProgress, TensorPlan, TensorSource, WriteOptions,
};
use chatglm::model::{KvType, ModelConfig, RopeScaling};
use chatglm::tokenizer::{ChatMessage, Family, Role, SpmModel, TokenizerParts};
use chatglm::{Engine, GenerateOptions, Session, SessionOptions};
use chatglm_kernels::GgmlType;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put `libchatglm.a` and `libchatglm.so` for this build: beside this test binary.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().to_path_buf();
    for lib in ["libchatglm.a", "libchatglm.so"] {
        assert!(
            dir.join(lib).exists(),
            "{lib} is not in {} (the tests expect cargo to have built the crate's staticlib \
             and cdylib there)",
            dir.display()
        );
    }
    dir
}

/// A scratch directory for this test process, under cargo's temporary directory for tests
/// (those of processes that are gone are removed).
fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c_api");
        if let Ok(entries) = std::fs::read_dir(&parent) {
            for e in entries.flatten() {
                let pid = e.file_name().to_string_lossy().into_owned();
                if !Path::new("/proc").join(&pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = parent.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// The synthetic tiny model (ChatGLM2 layout, q4_0 matrices).
fn tiny_model() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = work_dir().join("tiny.gguf");
        let opts = WriteOptions {
            output: out.clone(),
            matrix_type: GgmlType::Q4_0,
            portable: true,
            threads: 2,
            name: "synthetic-tiny".into(),
        };
        write_synthetic(
            Preset::Tiny,
            3,
            &opts,
            &mut NoProgress,
            &AtomicBool::new(false),
        )
        .unwrap();
        out
    })
}

// ---------------------------------------------------------------------------------------------
// Building and running the programs.

/// How a program links the library.
#[derive(Clone, Copy)]
enum Link {
    Static,
    Shared,
}

/// Compiles `sources` (relative to the repository root) into `work_dir()/name` with every
/// warning an error.
fn compile(name: &str, sources: &[&str], cpp: bool, link: Link) -> PathBuf {
    let out = work_dir().join(name);
    let lib = lib_dir();
    let mut cmd = Command::new(if cpp { "c++" } else { "cc" });
    cmd.args(if cpp { ["-std=c++17"] } else { ["-std=c99"] })
        .args([
            "-Wall",
            "-Wextra",
            "-Wpedantic",
            "-Werror",
            "-O1",
            "-g",
            "-pthread",
        ])
        .arg("-I")
        .arg(root().join("include"));
    for s in sources {
        cmd.arg(root().join(s));
    }
    match link {
        Link::Static => cmd.arg(lib.join("libchatglm.a")),
        Link::Shared => cmd
            .arg(format!("-L{}", lib.display()))
            .arg("-lchatglm")
            .arg(format!("-Wl,-rpath,{}", soname_dir().display())),
    };
    cmd.args(["-lpthread", "-ldl", "-lm", "-o"]).arg(&out);
    let output = cmd.output().expect("cannot run the C compiler");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "compiling {sources:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// A directory with the shared library under its soname, `libchatglm.so.0` (what a program
/// linked with `-lchatglm` loads; cargo leaves only `libchatglm.so`).
fn soname_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = work_dir().join("soname");
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join(format!("libchatglm.so.{}", env!("CARGO_PKG_VERSION_MAJOR")));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir().join("libchatglm.so"), &link).unwrap();
        dir
    })
}

/// `examples/c/chat.c`, linked statically.
fn chat_c() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| compile("chat", &["examples/c/chat.c"], false, Link::Static))
}

/// `examples/c/hello.cpp`, linked with the shared library.
fn hello_cpp() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| compile("hello", &["examples/c/hello.cpp"], true, Link::Shared))
}

/// `tests/c_api/errors.c`, linked statically.
fn errors_c() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| compile("errors", &["tests/c_api/errors.c"], false, Link::Static))
}

/// `tests/c_api/threads.c`, linked statically.
fn threads_c() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| compile("threads", &["tests/c_api/threads.c"], false, Link::Static))
}

/// Runs `cmd` with `stdin`, and returns its output after checking it exited with 0.
fn run(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The same runs through the Rust API.

/// The settings of one run, as command-line flags of the example programs and as Rust options.
#[derive(Debug, Clone)]
struct Settings {
    max_new_tokens: usize,
    temperature: f32,
    top_k: usize,
    top_p: f32,
    repeat_penalty: f32,
    seed: u64,
    context: usize,
    kv_f32: bool,
    complete: bool,
}

impl Settings {
    fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repeat_penalty: 1.0,
            seed: 0,
            context: 0,
            kv_f32: false,
            complete: false,
        }
    }

    fn sampled(max_new_tokens: usize, seed: u64) -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            repeat_penalty: 1.1,
            seed,
            ..Self::greedy(max_new_tokens)
        }
    }

    /// Flags of `examples/c/chat.c` and `examples/python/chat.py`.
    fn flags(&self) -> Vec<String> {
        let mut f: Vec<String> = [
            ("-n", self.max_new_tokens.to_string()),
            ("-c", self.context.to_string()),
            ("--temp", self.temperature.to_string()),
            ("--top-k", self.top_k.to_string()),
            ("--top-p", self.top_p.to_string()),
            ("--repeat-penalty", self.repeat_penalty.to_string()),
            ("--seed", self.seed.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect();
        if self.kv_f32 {
            f.push("--kv-f32".into());
        }
        if self.complete {
            f.push("--complete".into());
        }
        f
    }

    fn session(&self, model: &Path) -> Session {
        let engine = Arc::new(Engine::open(model).unwrap());
        let options = SessionOptions {
            context: self.context,
            kv_type: if self.kv_f32 {
                KvType::F32
            } else {
                KvType::F16
            },
            ..SessionOptions::default()
        };
        Session::new(engine, options).unwrap()
    }

    fn generate_options(&self) -> GenerateOptions {
        let mut g = GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            ..GenerateOptions::default()
        };
        g.sampler.temperature = self.temperature;
        g.sampler.top_k = self.top_k;
        g.sampler.top_p = self.top_p;
        g.sampler.repeat_penalty = self.repeat_penalty;
        g.sampler.seed = self.seed;
        g
    }

    /// The replies of the Rust API to `messages` in one session, one per line, as the
    /// example programs print them.
    fn rust_output(&self, model: &Path, messages: &[&str]) -> String {
        let mut session = self.session(model);
        let opts = self.generate_options();
        let mut out = String::new();
        for m in messages {
            let g = if self.complete {
                session.complete(m, &opts, &mut |_| true)
            } else {
                session.chat(m, &opts, &mut |_| true)
            }
            .unwrap();
            out.push_str(&g.text);
            out.push('\n');
        }
        out
    }
}

const MESSAGES: [&str; 3] = [
    "Hello there",
    "What is a tokenizer?",
    "Tell me more, please",
];

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn c_chat_matches_the_rust_api() {
    let model = tiny_model();
    for settings in [
        Settings::greedy(24),
        Settings::sampled(24, 7),
        Settings {
            complete: true,
            ..Settings::greedy(16)
        },
        Settings {
            context: 64,
            kv_f32: true,
            ..Settings::sampled(40, 1)
        },
    ] {
        let want = settings.rust_output(model, &MESSAGES);
        assert!(
            want.lines().any(|l| !l.is_empty()),
            "{settings:?}: the model replies nothing, the comparison would prove little"
        );
        let out = run(
            Command::new(chat_c())
                .arg("-m")
                .arg(model)
                .args(settings.flags())
                .args(MESSAGES),
            "",
        );
        assert_eq!(stdout(&out), want, "{settings:?}");
    }
}

#[test]
fn c_chat_reads_messages_from_stdin() {
    let model = tiny_model();
    let settings = Settings::sampled(20, 3);
    let want = settings.rust_output(model, &MESSAGES);
    let out = run(
        Command::new(chat_c())
            .arg("-m")
            .arg(model)
            .args(settings.flags())
            .arg("--stats"),
        &MESSAGES.join("\n"),
    );
    assert_eq!(stdout(&out), want);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kernels = format!("{} kernels", chatglm_kernels::isa::active().name());
    assert!(stderr.contains(&kernels), "{stderr}");
    assert_eq!(
        stderr.matches("[prompt ").count(),
        MESSAGES.len(),
        "{stderr}"
    );
}

#[test]
fn cpp_hello_matches_the_rust_api() {
    // hello.cpp takes chat.c's options.
    let model = tiny_model();
    for settings in [Settings::greedy(20), Settings::sampled(20, 11)] {
        let want = settings.rust_output(model, &MESSAGES);
        let out = run(
            Command::new(hello_cpp())
                .arg("-m")
                .arg(model)
                .args(settings.flags())
                .args(MESSAGES),
            "",
        );
        assert_eq!(stdout(&out), want, "{settings:?}");
    }
}

#[test]
fn python_chat_matches_the_rust_api() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("note: python3 is not installed; examples/python/chat.py not tested");
        return;
    }
    let model = tiny_model();
    for settings in [Settings::greedy(20), Settings::sampled(20, 11)] {
        let want = settings.rust_output(model, &MESSAGES);
        let out = run(
            Command::new("python3")
                .arg(root().join("examples/python/chat.py"))
                .arg("--lib")
                .arg(lib_dir().join("libchatglm.so"))
                .arg("-m")
                .arg(model)
                .args(settings.flags())
                .args(MESSAGES),
            "",
        );
        assert_eq!(stdout(&out), want, "{settings:?}");
    }
}

/// Sessions on one model in several threads reply as they do one after the other, and as the
/// Rust API does.
#[test]
fn c_threads_match_sequential_runs() {
    let model = tiny_model();
    let messages = &MESSAGES[..2];
    let out = run(
        Command::new(threads_c())
            .arg(model)
            .arg("16")
            .args(messages),
        "",
    );
    let mut want = String::new();
    for worker in 0..3u64 {
        let settings = Settings {
            repeat_penalty: 1.0,
            ..Settings::sampled(16, worker + 1)
        };
        for reply in settings.rust_output(model, messages).lines() {
            want.push_str(&format!("worker {worker}: {reply}\n"));
        }
    }
    assert_eq!(stdout(&out), want);
}

/// Truncated and garbage copies of the tiny model, and a path that does not exist.
fn bad_files() -> [PathBuf; 3] {
    let dir = work_dir();
    let missing = dir.join("no-such-model.gguf");
    let garbage = dir.join("garbage.gguf");
    std::fs::write(
        &garbage,
        b"this is not a model file, just text\n".repeat(20),
    )
    .unwrap();
    let truncated = dir.join("truncated.gguf");
    let bytes = std::fs::read(tiny_model()).unwrap();
    std::fs::write(&truncated, &bytes[..4096]).unwrap();
    [missing, garbage, truncated]
}

#[test]
fn c_bad_calls_return_errors_with_messages() {
    let [missing, garbage, truncated] = bad_files();
    let out = Command::new(errors_c())
        .arg(tiny_model())
        .args([&missing, &garbage, &truncated])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        out.status.success() && text.ends_with("0 failed\n"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.lines().count() > 60, "{text}");
}

/// `valgrind` if installed (a note otherwise: CI machines have it).
fn valgrind() -> Option<Command> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("note: valgrind is not installed; memory checks of the C programs skipped");
        return None;
    }
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--quiet",
        "--error-exitcode=99",
        "--leak-check=full",
        "--show-leak-kinds=definite,indirect",
        "--errors-for-leak-kinds=definite,indirect",
    ]);
    Some(cmd)
}

#[test]
fn c_programs_are_clean_under_valgrind() {
    let Some(mut cmd) = valgrind() else {
        return;
    };
    let model = tiny_model();
    let settings = Settings::greedy(6);
    let want = settings.rust_output(model, &MESSAGES[..2]);
    let out = run(
        cmd.arg(chat_c())
            .arg("-m")
            .arg(model)
            .args(settings.flags())
            .args(&MESSAGES[..2]),
        "",
    );
    assert_eq!(stdout(&out), want);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let [missing, garbage, truncated] = bad_files();
    let mut cmd = valgrind().unwrap();
    let out = run(
        cmd.arg(errors_c())
            .arg(model)
            .args([&missing, &garbage, &truncated]),
        "",
    );
    assert!(stdout(&out).ends_with("0 failed\n"));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shared library exports exactly the functions the header declares.
#[test]
fn exported_symbols_are_the_header_functions() {
    let header = std::fs::read_to_string(root().join("include/chatglm.h")).unwrap();
    let mut declared: Vec<&str> = header
        .match_indices("chatglm_")
        .filter_map(|(i, _)| {
            let rest = &header[i..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
            (rest[end..].starts_with('(') && header[..i].ends_with([' ', '*']))
                .then_some(&rest[..end])
        })
        .collect();
    declared.sort_unstable();
    declared.dedup();
    let nm = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(lib_dir().join("libchatglm.so"))
        .output();
    let Ok(nm) = nm else {
        eprintln!("note: nm is not installed; exported symbols not checked");
        return;
    };
    let mut exported: Vec<String> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("chatglm_"))
        .map(str::to_owned)
        .collect();
    exported.sort_unstable();
    assert_eq!(exported, declared);
    assert_eq!(declared.len(), 18);
}

// ---------------------------------------------------------------------------------------------
// The golden checkpoint `glm2-small` (f16 safetensors shards), written to GGUF at f32.

fn golden_dir() -> PathBuf {
    root().join("../shared/golden/glm2-small")
}

fn golden_json() -> Value {
    let text = std::fs::read_to_string(golden_dir().join("golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Tensors of the safetensors shards, as f32, by Hugging Face name.
struct Shards(Vec<Vec<u8>>);

impl TensorSource for Shards {
    fn read(
        &mut self,
        t: &TensorPlan,
        _index: usize,
        _threads: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), BuildError> {
        for bytes in &self.0 {
            let st = safetensors::SafeTensors::deserialize(bytes)
                .map_err(|e| BuildError::Source(e.into()))?;
            if let Ok(view) = st.tensor(&t.hf_name) {
                assert_eq!(view.dtype(), safetensors::Dtype::F16, "{}", t.hf_name);
                assert_eq!(view.shape(), t.shape, "{}", t.hf_name);
                out.clear();
                out.extend(
                    view.data()
                        .chunks_exact(2)
                        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
                );
                return Ok(());
            }
        }
        Err(BuildError::Source(
            format!("tensor {} is missing", t.hf_name).into(),
        ))
    }
}

/// `glm2-small` as a GGUF file with f32 matrices.
fn golden_model() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let g = golden_json();
        let c = &g["config"];
        let n = |k: &str| c[k].as_u64().unwrap() as usize;
        let config = ModelConfig {
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
            rope_scaling: RopeScaling::None,
            block: chatglm::model::Block::Glm2,
        };
        let spm = SpmModel::from_file(golden_dir().join("tokenizer.model")).unwrap();
        let tokenizer =
            TokenizerParts::from_spm(spm, Family::ChatGlm2, Some(config.vocab_size)).unwrap();
        let shards = ["model-00001-of-00002", "model-00002-of-00002"]
            .map(|s| std::fs::read(golden_dir().join(format!("{s}.safetensors"))).unwrap());
        let out = work_dir().join("glm2-small-f32.gguf");
        let opts = WriteOptions {
            output: out.clone(),
            matrix_type: GgmlType::F32,
            portable: true,
            threads: 2,
            name: "glm2-small".into(),
        };
        write_model(
            &config,
            &tokenizer,
            build_plan(&config, GgmlType::F32, true).unwrap(),
            &mut Shards(shards.to_vec()),
            &opts,
            &mut NoProgress,
            &AtomicBool::new(false),
        )
        .unwrap();
        out
    })
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The golden greedy generations: the Rust API's ids are the reference's, and the C program
/// prints the Rust API's text (`chatglm_chat`, or `chatglm_respond` for the case with history),
/// which is the reference's.
#[test]
fn golden_greedy_through_c() {
    let model = golden_model();
    let g = golden_json();
    let max_new = g["greedy"]["settings"]["max_new_tokens"].as_u64().unwrap() as usize;
    let settings = Settings {
        kv_f32: true,
        ..Settings::greedy(max_new)
    };
    let cases = g["greedy"]["cases"].as_array().unwrap();
    for (i, case) in cases.iter().enumerate() {
        let query = case["query"].as_str().unwrap();
        let mut history = Vec::new();
        for pair in case["history"].as_array().unwrap() {
            history.push(ChatMessage::new(Role::User, pair[0].as_str().unwrap()));
            history.push(ChatMessage::new(Role::Assistant, pair[1].as_str().unwrap()));
        }
        let mut messages = history.clone();
        messages.push(ChatMessage::new(Role::User, query));
        let mut session = settings.session(model);
        let rust = session
            .respond(&messages, &settings.generate_options(), &mut |_| true)
            .unwrap();
        assert_eq!(
            rust.prompt_ids,
            u32s(&case["input_ids"]),
            "case {i}: prompt"
        );
        assert_eq!(rust.ids, u32s(&case["new_ids"]), "case {i}: greedy ids");

        let mut cmd = Command::new(chat_c());
        cmd.arg("-m").arg(model).args(settings.flags());
        for pair in history.chunks(2) {
            cmd.arg("--history")
                .arg(&pair[0].content)
                .arg(&pair[1].content);
        }
        let out = run(cmd.arg(query), "");
        assert_eq!(stdout(&out), format!("{}\n", rust.text), "case {i}: text");
        // The reference decodes the ids with the Hugging Face tokenizer: the same text.
        assert_eq!(
            rust.text,
            case["text"].as_str().unwrap(),
            "case {i}: golden text"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A model file that changes while loaded; load options checked at load.

/// A private copy of the tiny model, to truncate.
fn tiny_copy(name: &str) -> PathBuf {
    let path = work_dir().join(name);
    std::fs::copy(tiny_model(), &path).unwrap();
    path
}

fn truncate_half(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len / 2).unwrap();
}

/// Loads `path` through the C ABI with `opts`; returns the status and the handle.
#[allow(unsafe_code)]
fn c_load(
    path: &Path,
    opts: &chatglm::ffi::model::chatglm_model_options,
) -> (
    chatglm::ffi::status::chatglm_status,
    *mut chatglm::ffi::model::chatglm_model,
) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut model = std::ptr::null_mut();
    // SAFETY: a NUL-terminated path, a live options struct, a writable out pointer.
    let status = unsafe { chatglm::ffi::model::chatglm_model_load(c.as_ptr(), opts, &mut model) };
    (status, model)
}

/// `chatglm_complete` of "hello" on a new session of `model` (2 tokens, greedy).
#[allow(unsafe_code)]
fn c_complete(
    model: *mut chatglm::ffi::model::chatglm_model,
    between: impl FnOnce(),
) -> chatglm::ffi::status::chatglm_status {
    use chatglm::ffi::session::*;
    let mut session = std::ptr::null_mut();
    // SAFETY: a live model handle and a writable out pointer.
    let s = unsafe { chatglm_session_new(model, &mut session) };
    assert_eq!(s, chatglm::ffi::status::chatglm_status::CHATGLM_OK);
    between();
    let opts = chatglm_generate_options {
        max_new_tokens: 2,
        temperature: 0.0,
        ..chatglm_generate_options_default()
    };
    // SAFETY: a live session, a NUL-terminated text, live options, no callback or reply.
    let status = unsafe {
        chatglm_complete(
            session,
            c"hello".as_ptr(),
            &opts,
            None,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    // SAFETY: the session from above, freed once.
    unsafe { chatglm_session_free(session) };
    status
}

#[test]
#[allow(unsafe_code)]
fn a_model_file_truncated_after_load_is_an_error_not_a_signal() {
    use chatglm::ffi::model::*;
    use chatglm::ffi::status::chatglm_status::*;
    let options = GenerateOptions {
        max_new_tokens: 2,
        ..GenerateOptions::default()
    };
    // The Rust API: a typed error before any weight is read.
    let path = tiny_copy("truncated-rust.gguf");
    let engine = Arc::new(Engine::open(&path).unwrap());
    let mut session = Session::new(Arc::clone(&engine), SessionOptions::default()).unwrap();
    session.complete("hello", &options, &mut |_| true).unwrap();
    truncate_half(&path);
    let e = session
        .complete("hello", &options, &mut |_| true)
        .unwrap_err();
    assert!(matches!(e, chatglm::Error::FileChanged { .. }), "{e:?}");
    assert!(e.to_string().contains("changed while in use"), "{e}");
    let e = session.chat("hello", &options, &mut |_| true).unwrap_err();
    assert!(matches!(e, chatglm::Error::FileChanged { .. }), "{e:?}");

    // A new file renamed over the path: the map still holds the old one, but the model is
    // no longer the path's: reported as a change too.
    let path = tiny_copy("renamed-rust.gguf");
    let engine = Arc::new(Engine::open(&path).unwrap());
    let mut session = Session::new(Arc::clone(&engine), SessionOptions::default()).unwrap();
    let new = tiny_copy("renamed-new.gguf");
    std::fs::rename(&new, &path).unwrap();
    let e = session
        .complete("hello", &options, &mut |_| true)
        .unwrap_err();
    assert!(matches!(e, chatglm::Error::FileChanged { .. }), "{e:?}");
    // An unlinked file stays mapped and unchanged: no error.
    let path = tiny_copy("unlinked-rust.gguf");
    let engine = Arc::new(Engine::open(&path).unwrap());
    let mut session = Session::new(Arc::clone(&engine), SessionOptions::default()).unwrap();
    std::fs::remove_file(&path).unwrap();
    session.complete("hello", &options, &mut |_| true).unwrap();

    // Read into memory, the file may change.
    let path = tiny_copy("truncated-read.gguf");
    let engine = Arc::new(Engine::read(&path).unwrap());
    assert!(!engine.file().is_mapped());
    let mut session = Session::new(engine, SessionOptions::default()).unwrap();
    truncate_half(&path);
    session.complete("hello", &options, &mut |_| true).unwrap();

    // The C ABI: CHATGLM_ERR_IO with the message; with no_mmap, no error.
    let path = tiny_copy("truncated-c.gguf");
    let (s, model) = c_load(&path, &chatglm_model_options_default());
    assert_eq!(s, CHATGLM_OK);
    assert_eq!(c_complete(model, || truncate_half(&path)), CHATGLM_ERR_IO);
    // SAFETY: chatglm_last_error never returns NULL.
    let msg = unsafe { std::ffi::CStr::from_ptr(chatglm::ffi::status::chatglm_last_error()) };
    assert!(
        msg.to_str().unwrap().contains("changed while in use"),
        "{msg:?}"
    );
    // SAFETY: the handle from chatglm_model_load, freed once.
    unsafe { chatglm_model_free(model) };

    let path = tiny_copy("truncated-c-read.gguf");
    let opts = chatglm_model_options {
        no_mmap: 1,
        ..chatglm_model_options_default()
    };
    let (s, model) = c_load(&path, &opts);
    assert_eq!(s, CHATGLM_OK);
    assert_eq!(c_complete(model, || truncate_half(&path)), CHATGLM_OK);
    // SAFETY: as above.
    unsafe { chatglm_model_free(model) };
}

#[test]
#[allow(unsafe_code)]
fn load_options_are_checked_at_load() {
    use chatglm::ffi::model::*;
    use chatglm::ffi::status::chatglm_status::*;
    let opts = chatglm_model_options {
        n_threads: 257,
        ..chatglm_model_options_default()
    };
    let (s, model) = c_load(tiny_model(), &opts);
    assert_eq!(s, CHATGLM_ERR_INVALID_ARGUMENT);
    assert!(model.is_null());
    let opts = chatglm_model_options {
        n_threads: 256,
        ..chatglm_model_options_default()
    };
    let (s, model) = c_load(tiny_model(), &opts);
    assert_eq!(s, CHATGLM_OK);
    // SAFETY: the handle from chatglm_model_load, freed once.
    unsafe { chatglm_model_free(model) };

    // Not a regular file: refused at once (a FIFO would block the open forever).
    let (s, model) = c_load(Path::new("/dev/null"), &chatglm_model_options_default());
    assert_eq!(s, CHATGLM_ERR_IO);
    assert!(model.is_null());
}

/// `max_new_tokens` 0 is refused by the Rust API as by the C ABI (and by `chatglm run -n 0`).
#[test]
fn zero_new_tokens_is_refused_everywhere() {
    let engine = Arc::new(Engine::open(tiny_model()).unwrap());
    let mut session = Session::new(engine, SessionOptions::default()).unwrap();
    let options = GenerateOptions {
        max_new_tokens: 0,
        ..GenerateOptions::default()
    };
    let e = session
        .complete("hello", &options, &mut |_| true)
        .unwrap_err();
    assert!(e.to_string().contains("at least 1"), "{e}");
    let e = session.chat("hello", &options, &mut |_| true).unwrap_err();
    assert!(e.to_string().contains("at least 1"), "{e}");
    assert!(session.history().is_empty());
}
