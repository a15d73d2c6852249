//! The `chatglm` binary from the outside: what a user sees, exit codes included.

use chatglm::build::synthetic::{write_synthetic, Preset};
use chatglm::build::{NoProgress, WriteOptions};
use chatglm_kernels::GgmlType;
use serde_json::Value;
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
    // The summary: family, parameters in a unit that fits, the types.
    let params: u64 = {
        let o = chatglm(&["info", "-m", m, "--json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["parameters"].as_u64().unwrap()
    };
    assert!((100_000..1_000_000).contains(&params), "{params}");
    let want = format!("{:.0}K parameters", params as f64 / 1000.0);
    let line = text.lines().find(|l| l.starts_with("family: ")).unwrap();
    assert!(line.starts_with("family: chatglm2, "), "{line}");
    assert!(line.contains(&want), "{line} should say {want}");
    assert!(line.contains(" q8_0") && line.contains(" f32"), "{line}");
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
        (PathBuf::from("/nonexistent/model.gguf"), "not found"),
    ];
    // The system's own words for a missing file (they differ between systems).
    let not_found = std::fs::File::open("/nonexistent/model.gguf")
        .unwrap_err()
        .to_string();
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
            let needle = if needle == "not found" {
                not_found.as_str()
            } else {
                needle
            };
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
    // The best read (every core, several streams each) is at least the plain one's order
    // of magnitude and names how it was reached.
    let best = v["decode"]["best_read_gb_s"].as_f64().unwrap();
    assert!(best > 0.0, "{v}");
    let streams = v["decode"]["best_read_streams_per_thread"]
        .as_u64()
        .unwrap();
    assert!([1, 2, 4, 8].contains(&streams), "{v}");
    assert!(v["decode"]["best_read_threads"].as_u64().unwrap() >= 1);
    let ratio = v["decode"]["ratio_to_best_read"].as_f64().unwrap();
    let weight = v["decode"]["weight_gb_s"].as_f64().unwrap();
    assert!(
        (ratio * best - weight).abs() <= 1e-6 * weight.max(1.0),
        "{v}"
    );
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
fn chat_from_a_pipe_goes_on_after_a_message_too_long() {
    use std::io::Write;
    let m = model().to_str().unwrap();
    let mut child = spawn(&["chat", "-m", m, "-n", "3", "--temp", "0", "-c", "64"]);
    let long = "word ".repeat(100);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{long}\nhello\n").as_bytes())
        .unwrap();
    let o = wait_bounded(child, "chat");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("context holds 64"), "{}", stderr(&o));
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

/// Asserts that `o` is a usage error: exit 2, one line naming `needle`, and a hint.
fn assert_usage_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "one line and a hint: {err}");
    assert!(lines[0].starts_with("chatglm: error: "), "{err}");
    assert!(lines[0].contains(needle), "{err:?} should name {needle:?}");
    assert!(lines[1].starts_with("  hint: "), "{err}");
}

/// The ids `run --json` generates with `args` after `-m MODEL -n 8`.
fn run_ids(args: &[&str]) -> (Value, Value) {
    let m = model().to_str().unwrap();
    let mut all = vec!["run", "-m", m, "-n", "8", "--json"];
    all.extend_from_slice(args);
    let o = chatglm(&all);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    (v["prompt_ids"].clone(), v["ids"].clone())
}

#[test]
fn usage_errors_are_one_line_and_a_hint() {
    let m = model().to_str().unwrap();
    assert_usage_error(
        &chatglm(&["run", "-m", m, "-p", "hi", "--bogus"]),
        "--bogus",
    );
    assert_usage_error(&chatglm(&["run", "-p", "hi"]), "--model");
    assert_usage_error(&chatglm(&["run", "-m", m, "-p", "hi", "-n", "gl"]), "'gl'");
    assert_usage_error(&chatglm(&["bogus"]), "bogus");
    let o = chatglm(&["run", "-m", m, "-p", "hi", "--topk", "3"]);
    assert_usage_error(&o, "--topk");
    assert!(
        stderr(&o).contains("--top-k"),
        "the hint names the near flag"
    );
    // The KV cache types that exist here, and the others by name.
    let o = chatglm(&["run", "-m", m, "-p", "hi", "-ctk", "q8_0"]);
    assert_usage_error(&o, "q8_0");
    assert!(stderr(&o).contains("f16"), "{}", stderr(&o));
}

#[test]
fn llama_cpp_flags_that_do_not_apply_are_refused_by_name() {
    let m = model().to_str().unwrap();
    for flag in [
        &["-ngl", "99"][..],
        &["--n-gpu-layers", "99"],
        &["--n-gpu-layers=99"],
        &["--mlock"],
        &["-fa"],
        &["-ts", "1,1"],
    ] {
        for cmd in ["run", "chat", "bench"] {
            let mut args = vec![cmd, "-m", m];
            args.extend_from_slice(flag);
            let o = chatglm(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            let name = flag[0].split('=').next().unwrap();
            assert!(
                err.starts_with(&format!("chatglm: error: {name} is not supported: ")),
                "{args:?}: {err}"
            );
        }
    }
}

#[test]
fn llama_cpp_spellings_mean_what_they_mean_there() {
    let m = model().to_str().unwrap();
    // `-sys` is the system prompt, not `-s ys` (the seed): it reaches the chat format, which
    // for this ChatGLM2 model has no system message.
    let o = chatglm(&["run", "-m", m, "-sys", "be brief", "-p", "hi"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ChatGLM2 has no system role"),
        "{}",
        stderr(&o)
    );
    // -ctk/-ctv are the cache type (not `-c tk`): f32 gives what --kv-type f32 gives.
    let greedy = ["-p", "hello", "--temp", "0"];
    let f32_kv = run_ids(&[&greedy[..], &["--kv-type", "f32"]].concat());
    assert_eq!(
        run_ids(&[&greedy[..], &["-ctk", "f32", "-ctv", "f32"]].concat()),
        f32_kv
    );
    assert_eq!(run_ids(&[&greedy[..], &["-ctk=f32"]].concat()), f32_kv);
    let o = chatglm(&["run", "-m", m, "-p", "hi", "-ctk", "f32", "-ctv", "f16"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("-ctk and -ctv differ"),
        "{}",
        stderr(&o)
    );
    // -f: the prompt from a file, its last line break dropped.
    let file = model().with_file_name("prompt.txt");
    std::fs::write(&file, "hello\n").unwrap();
    let from_file = run_ids(&["-f", file.to_str().unwrap(), "--temp", "0"]);
    assert_eq!(from_file, run_ids(&greedy));
    // --min-p 1 keeps only the most likely token: sampling is then greedy.
    let (_, greedy_ids) = run_ids(&greedy);
    let (_, min_p_ids) = run_ids(&["-p", "hello", "--temp", "0.9", "--min-p", "1", "-s", "7"]);
    assert_eq!(min_p_ids, greedy_ids);
    // A penalty that sees no token (--repeat-last-n 0) changes nothing; -1 is all of them.
    let penalized = ["-p", "hello", "--temp", "0", "--repeat-penalty", "3"];
    let (_, none) = run_ids(&[&penalized[..], &["--repeat-last-n", "0"]].concat());
    assert_eq!(none, greedy_ids);
    let (_, all) = run_ids(&[&penalized[..], &["--repeat-last-n", "-1"]].concat());
    assert_eq!(all, run_ids(&penalized).1);
    assert_ne!(
        all, greedy_ids,
        "a penalty of 3 over every token changes the reply"
    );
    // tokenize -p is the positional text; a value that looks like a flag stays a value.
    let o = chatglm(&["tokenize", "-m", m, "-p", "hello world"]);
    assert_eq!(
        o.stdout,
        chatglm(&["tokenize", "-m", m, "hello world"]).stdout
    );
    let o = chatglm(&["tokenize", "-m", m, "--json", "-p=-ngl 99"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decoded"], "-ngl 99");
}

/// `chatglm chat` in a pseudo-terminal (line editing with rustyline, Ctrl-C as a signal).
#[cfg(unix)]
mod terminal {
    use super::{chatglm, model, stderr, Value};
    use rexpect::session::PtySession;
    use std::io::Write;
    use std::path::Path;

    /// `chatglm chat ARGS` on a new terminal; every expectation waits at most 60 s.
    fn chat(args: &[&str]) -> PtySession {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_chatglm"));
        cmd.arg("chat").args(args).env("TERM", "xterm");
        let mut s = rexpect::session::spawn_command(cmd, Some(60_000)).unwrap();
        s.exp_string("/help lists the commands").unwrap();
        s
    }

    /// Waits for the editor to read a new line: it starts each one by turning bracketed paste
    /// on (`ESC [?2004h`; the prompt itself is redrawn with each key, so it tells nothing).
    fn ready(s: &mut PtySession) {
        s.exp_string("\x1b[?2004h").unwrap();
    }

    /// Sends `bytes` as typed (or pasted).
    fn type_bytes(s: &mut PtySession, bytes: &[u8]) {
        let mut tty = s.process().get_file_handle().unwrap();
        tty.write_all(bytes).unwrap();
        tty.flush().unwrap();
    }

    /// The conversation as `/save` writes it.
    fn saved(s: &mut PtySession, path: &Path) -> Vec<(String, String)> {
        let _ = std::fs::remove_file(path);
        s.send_line(&format!("/save {}", path.display())).unwrap();
        s.exp_string("(conversation saved)").unwrap();
        ready(s);
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().to_owned(),
                    m["content"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// `run --messages --json` on `messages` (a conversation file), greedy.
    fn run_json(messages: &[(&str, &str)], n: &str) -> Value {
        let file = model().with_file_name(format!("conv-{}.json", messages.len()));
        let conv: Vec<Value> = messages
            .iter()
            .map(|(r, c)| serde_json::json!({"role": r, "content": c}))
            .collect();
        std::fs::write(&file, Value::Array(conv).to_string()).unwrap();
        let m = model().to_str().unwrap();
        let f = file.to_str().unwrap();
        let o = chatglm(&[
            "run",
            "-m",
            m,
            "--messages",
            f,
            "--temp",
            "0",
            "-n",
            n,
            "--json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// The greedy reply to `conv` (text, tokens), as `run --messages` gives it.
    fn greedy_reply(conv: &[(&str, &str)], n: &str) -> (String, usize) {
        let v = run_json(conv, n);
        (
            v["text"].as_str().unwrap().trim().to_owned(),
            v["ids"].as_array().unwrap().len(),
        )
    }

    /// The length of the prompt `run --messages` builds for `conv`.
    fn prompt_len(conv: &[(&str, &str)], n: &str) -> usize {
        run_json(conv, n)["prompt_ids"].as_array().unwrap().len()
    }

    #[test]
    fn ctrl_c_stops_a_reply_and_the_conversation_goes_on() {
        // The message with the longest greedy reply of a few: Ctrl-C must land inside it.
        let n = "2000";
        let (message, full, tokens) = ["hello", "hi", "why?"]
            .iter()
            .map(|m| {
                let (text, tokens) = greedy_reply(&[("user", m)], n);
                (*m, text, tokens)
            })
            .max_by_key(|c| c.2)
            .unwrap();
        assert!(
            tokens >= 300,
            "no candidate message gets a long reply ({tokens} tokens for {message:?})"
        );

        let m = model().to_str().unwrap();
        let mut s = chat(&["-m", m, "--temp", "0", "-n", n]);
        ready(&mut s);
        s.send_line(message).unwrap();
        // The editor leaves the line (and raw mode: Ctrl-C is a signal again); the reply
        // streams.
        s.exp_string("\x1b[?2004l").unwrap();
        // Stop as soon as the reply shows: the kept part must leave room in the context for
        // the next round (half of it is reserved for the reply), however fast this machine is.
        s.exp_regex(r"\S").unwrap();
        s.send_control('c').unwrap();
        s.exp_string("[stopped]").unwrap();
        ready(&mut s);
        let conv = saved(&mut s, &model().with_file_name("stopped.json"));
        assert_eq!(conv.len(), 2, "{conv:?}");
        assert_eq!(conv[0], ("user".into(), message.into()));
        let (role, partial) = &conv[1];
        assert_eq!(role, "assistant");
        assert!(
            !partial.is_empty() && partial.len() < full.len() && full.starts_with(partial.as_str()),
            "the kept reply is the start of the full one: {partial:?} vs {full:?}"
        );

        // The next message is answered after the stopped round, as `run --messages` would.
        s.send_line("and then?").unwrap();
        ready(&mut s);
        let conv = saved(&mut s, &model().with_file_name("after.json"));
        let round = [
            ("user", message),
            ("assistant", partial.as_str()),
            ("user", "and then?"),
        ];
        let (want, _) = greedy_reply(&round, n);
        // The stopped round stays unless it does not fit beside the reply's room (half the
        // context): a random model's partial text can re-encode into many byte pieces. Then
        // the oldest round goes, as `run --messages` drops it too.
        let fits = prompt_len(&round, n) > prompt_len(&round[2..], n);
        assert_eq!(conv.len(), if fits { 4 } else { 2 }, "{conv:?}");
        assert_eq!(conv.last().unwrap(), &("assistant".into(), want));

        // Ctrl-D quits.
        s.send_control('d').unwrap();
        s.exp_eof().unwrap();
    }

    #[test]
    fn bad_lines_leave_the_chat_running() {
        let m = model().to_str().unwrap();
        let mut s = chat(&["-m", m, "--temp", "0", "-n", "4", "-c", "64"]);
        ready(&mut s);
        // A pasted paragraph longer than the context: one message, refused, the chat goes on.
        let long = "word ".repeat(100);
        type_bytes(
            &mut s,
            format!("\x1b[200~{long}\nmore\x1b[201~\r").as_bytes(),
        );
        s.exp_string("the context holds 64").unwrap();
        ready(&mut s);
        // A line that is not UTF-8: skipped whole (its end is not the next message).
        type_bytes(&mut s, b"\xff\xfe bad\r");
        s.exp_string("not valid UTF-8").unwrap();
        ready(&mut s);
        // A line continued with a backslash is one message.
        s.send_line("first\\").unwrap();
        s.send_line("second").unwrap();
        ready(&mut s);
        s.send_line("/system be brief").unwrap();
        ready(&mut s);
        let conv = saved(&mut s, &model().with_file_name("bad-lines.json"));
        let roles: Vec<&str> = conv.iter().map(|(r, _)| r.as_str()).collect();
        // ChatGLM2 has no system role: /system is refused there (and said so), or set first.
        assert!(
            roles == ["user", "assistant"] || roles == ["system", "user", "assistant"],
            "{conv:?}"
        );
        assert_eq!(conv[roles.len() - 2].1, "first\nsecond");
        // /load puts a conversation back; Ctrl-C on an empty line quits.
        s.send_line(&format!(
            "/load {}",
            model().with_file_name("bad-lines.json").display()
        ))
        .unwrap();
        s.exp_string("(conversation loaded)").unwrap();
        ready(&mut s);
        s.send_control('c').unwrap();
        s.exp_eof().unwrap();
    }
}

/// `chatglm demo` runs the shipped trained model (found from the source tree, whatever the
/// working directory) and answers "写一首诗" in kind: a title in 《》, an author line, lines
/// of Chinese ending in ，or 。, ended by the model (eos).
#[test]
fn demo_streams_a_poem_from_the_trained_model() {
    let out = Command::new(env!("CARGO_BIN_EXE_chatglm"))
        .args(["demo", "-n", "96"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("tiny-poems.gguf"), "{stderr}");
    let reply = stdout.strip_prefix("> 写一首诗\n").expect(&stdout);
    assert!(reply.starts_with('《'), "{reply}");
    assert!(reply.contains("》\n作者："), "{reply}");
    assert!(reply.contains('。'), "{reply}");
    assert!(stderr.contains("stop: eos"), "{stderr}");
}
