//! The `chatglm` binary from the outside: what a user sees, exit codes included.

use chatglm::build::synthetic::{write_synthetic, Preset};
use chatglm::build::{NoProgress, WriteOptions};
use chatglm_kernels::GgmlType;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

/// A synthetic tiny model shared by the tests of this file.
fn model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("chatglm-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("tiny.gguf");
        let opts = WriteOptions {
            output: out.clone(),
            matrix_type: GgmlType::Q8_0,
            portable: true,
            threads: 2,
            name: "tiny".into(),
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

fn chatglm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatglm"))
        .args(args)
        .output()
        .unwrap()
}

/// `chatglm ARGS` started with its standard streams piped.
fn spawn(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_chatglm"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A copy of the model with `edit` applied to its bytes.
fn broken(name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(model()).unwrap();
    edit(&mut bytes);
    let path = model().with_file_name(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn info_lists_the_tensors() {
    let m = model().to_str().unwrap();
    let o = chatglm(&["info", "-m", m]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("blk.1.ffn_down.weight"), "{text}");
    assert!(text.contains("general.architecture"));
    let o = chatglm(&["info", "-m", m, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tensor_count"], 17);
    assert_eq!(v["metadata"]["general.architecture"], "chatglm");
    assert_eq!(v["tensors"][0]["name"], "token_embd.weight");
}

#[test]
fn broken_files_give_one_line_and_a_non_zero_exit() {
    let cases: Vec<(PathBuf, &str)> = vec![
        (broken("magic.gguf", |b| b[0] = b'X'), "magic"),
        (broken("version.gguf", |b| b[4] = 9), "version"),
        (
            broken("truncated.gguf", |b| b.truncate(b.len() / 2)),
            "past the end",
        ),
        (broken("header-only.gguf", |b| b.truncate(40)), "byte"),
        (
            broken("tensor-count.gguf", |b| {
                b[8..16].copy_from_slice(&u64::MAX.to_le_bytes())
            }),
            "count",
        ),
        (PathBuf::from("/nonexistent/model.gguf"), "No such file"),
    ];
    for (path, needle) in cases {
        for cmd in ["info", "run"] {
            let p = path.to_str().unwrap();
            let o = if cmd == "info" {
                chatglm(&["info", "-m", p])
            } else {
                chatglm(&["run", "-m", p, "-p", "hi"])
            };
            assert_eq!(o.status.code(), Some(1), "{cmd} {p}");
            let err = stderr(&o);
            assert!(err.starts_with("chatglm: error: "), "{err}");
            assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
            assert!(
                err.contains(needle),
                "{cmd} {p}: {err:?} should mention {needle:?}"
            );
        }
    }
}

#[test]
fn bad_flags_and_too_long_prompts_are_errors() {
    let m = model().to_str().unwrap();
    let o = chatglm(&["run", "-m", m, "-p", "hi", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--bogus"));
    let o = chatglm(&["run", "-m", m, "-p", &"word ".repeat(200), "-c", "64"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("context holds 64"), "{}", stderr(&o));
    let o = chatglm(&["run", "-m", m, "-p", "hi", "-c", "100000"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("larger than the model's"),
        "{}",
        stderr(&o)
    );
    let o = chatglm(&["run", "-m", m, "-p", "hi", "--top-p", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("top_p"), "{}", stderr(&o));
}

#[test]
fn run_json_is_reproducible_with_a_seed() {
    let m = model().to_str().unwrap();
    let args = [
        "run", "-m", m, "-p", "Hello", "-n", "12", "--seed", "5", "--json",
    ];
    let a = chatglm(&args);
    assert!(a.status.success(), "{}", stderr(&a));
    let v: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(v["ids"].as_array().unwrap().len(), 12);
    assert_eq!(v["stop"], "max_tokens");
    assert_eq!(v["seed"], 5);
    assert!(v["timings"]["decode_tok_s"].as_f64().unwrap() > 0.0);
    let b = chatglm(&args);
    let w: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    assert_eq!(v["ids"], w["ids"], "same seed, same ids");
    assert_eq!(v["text"], w["text"]);
    assert_eq!(v["prompt_ids"], w["prompt_ids"]);
}

#[test]
fn tokenize_and_chat_from_a_pipe() {
    let m = model().to_str().unwrap();
    let o = chatglm(&["tokenize", "-m", m, "--json", "hello world"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decoded"], "hello world");
    assert_eq!(
        v["ids"].as_array().unwrap().len(),
        v["pieces"].as_array().unwrap().len()
    );

    use std::io::Write;
    let mut child = spawn(&["chat", "-m", m, "-n", "4", "--temp", "0"]);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\n/clear\nhello\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let replies: Vec<&str> = out.lines().collect();
    assert_eq!(replies.len(), 2, "{out:?}");
    assert_eq!(
        replies[0], replies[1],
        "after /clear the same message gets the same greedy reply"
    );
}

#[test]
fn bench_reports_json() {
    let m = model().to_str().unwrap();
    let o = chatglm(&["bench", "-m", m, "-p", "8", "-n", "4", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["prefill"]["tokens"], 8);
    assert_eq!(v["decode"]["tokens"], 4);
    assert!(v["decode"]["weight_gb_s"].as_f64().unwrap() > 0.0);
    assert!(v["kernels"].is_string());
}

/// Waits for `child` at most 30 s (then kills it and fails).
fn wait_bounded(mut child: std::process::Child, what: &str) -> Output {
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("{what}: still running after 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn no_mmap_gives_the_same_reply() {
    let m = model().to_str().unwrap();
    let args = [
        "run", "-m", m, "-p", "Hello", "-n", "6", "--seed", "5", "--json",
    ];
    let a = chatglm(&args);
    assert!(a.status.success(), "{}", stderr(&a));
    let mut with = args.to_vec();
    with.push("--no-mmap");
    let b = chatglm(&with);
    assert!(b.status.success(), "{}", stderr(&b));
    let v: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let w: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    assert_eq!(v["ids"], w["ids"]);
}

#[test]
fn chat_reports_a_model_file_truncated_while_in_use() {
    use std::io::{BufRead, Write};
    let path = broken("chat-truncated.gguf", |_| {});
    let mut child = spawn(&[
        "chat",
        "-m",
        path.to_str().unwrap(),
        "-n",
        "4",
        "--temp",
        "0",
    ]);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    stdin.write_all(b"hello\n").unwrap();
    let mut reply = String::new();
    stdout.read_line(&mut reply).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    stdin.write_all(b"hello again\n").unwrap();
    drop(stdin);
    let o = wait_bounded(child, "chat on a truncated file");
    // Either the check before the generation or the SIGBUS handler during it: exit 1 with one
    // line, never a signal.
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("the model file changed while in use"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn chat_skips_a_line_that_is_not_utf8() {
    use std::io::Write;
    let m = model().to_str().unwrap();
    let mut child = spawn(&["chat", "-m", m, "-n", "3", "--temp", "0"]);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\xff\xfe bad\nhello\n")
        .unwrap();
    let o = wait_bounded(child, "chat");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("line 1 is not valid UTF-8"),
        "{}",
        stderr(&o)
    );
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        out.lines().count(),
        1,
        "one reply, to the second line: {out:?}"
    );
}

#[test]
fn zero_tokens_to_generate_is_an_error() {
    let m = model().to_str().unwrap();
    let o = chatglm(&["run", "-m", m, "-p", "hi", "-n", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("at least 1"), "{}", stderr(&o));
}

#[test]
fn unbounded_inputs_and_non_regular_models_are_refused() {
    let m = model().to_str().unwrap();
    // /dev/zero never ends: refused after 256 MiB, not read until memory runs out.
    let child = spawn(&["perplexity", "-m", m, "-f", "/dev/zero"]);
    let o = wait_bounded(child, "perplexity -f /dev/zero");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("larger than 256 MiB"), "{}", stderr(&o));

    // A FIFO as the model would block the open: refused at once, as is a device.
    let fifo = model().with_file_name("model.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo").arg(&fifo).status();
    let mut paths = vec![PathBuf::from("/dev/null")];
    if made.is_ok_and(|s| s.success()) {
        paths.push(fifo);
    }
    for p in paths {
        for args in [
            vec!["run", "-m", p.to_str().unwrap(), "-p", "hi"],
            vec!["perplexity", "-m", p.to_str().unwrap(), "-f", "/dev/null"],
        ] {
            let child = spawn(&args);
            let o = wait_bounded(child, &args.join(" "));
            assert_eq!(o.status.code(), Some(1), "{args:?}");
            assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
        }
    }
}

#[test]
fn bad_conversation_files_name_the_problem() {
    let m = model().to_str().unwrap();
    let dir = model().parent().unwrap();
    let cases = [
        ("not-json.json", "[{", "EOF"),
        ("object.json", "{}", "expected a JSON array of messages"),
        (
            "role.json",
            r#"[{"role": "robot", "content": "x"}]"#,
            "message 0: unknown role \"robot\"",
        ),
        (
            "content.json",
            r#"[{"role": "user"}]"#,
            "no \"content\" string",
        ),
        ("empty.json", "[]", "the conversation has no message"),
        (
            "last.json",
            r#"[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]"#,
            "must end with a user message",
        ),
    ];
    for (name, text, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let o = chatglm(&["run", "-m", m, "--messages", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        let err = stderr(&o);
        assert!(
            err.contains(needle),
            "{name}: {err:?} should say {needle:?}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

/// The bus error handler itself (a truncation is caught by the check before a generation;
/// one during a generation raises SIGBUS, which is sent here directly).
#[cfg(unix)]
#[test]
fn a_bus_error_is_one_line_and_exit_1() {
    use std::io::{BufRead, Write};
    let m = model().to_str().unwrap();
    let mut child = spawn(&["chat", "-m", m, "-n", "2", "--temp", "0"]);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    stdin.write_all(b"hello\n").unwrap();
    let mut reply = String::new();
    stdout.read_line(&mut reply).unwrap();
    let sent = Command::new("kill")
        .args(["-BUS", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let o = wait_bounded(child, "chat after SIGBUS");
    drop(stdin);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "chatglm: error: the model file changed while in use (bus error on the mapping)\n"
    );
}
