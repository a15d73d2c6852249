//! `chatglm-convert` stopped by SIGTERM or SIGHUP mid-conversion cancels as Ctrl-C does: exit
//! 1, no temporary file and nothing under the output name.

#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Names in `dir`.
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn sigterm_and_sighup_leave_no_temporary_file() {
    for signal in ["TERM", "HUP"] {
        let dir = std::env::temp_dir().join(format!(
            "chatglm-convert-signal-{}-{signal}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out.gguf");
        // The 6B shape takes long enough to be caught mid-way.
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatglm-convert"))
            .args(["--synthetic", "chatglm2-6b", "-q", "q4_0", "-t", "1", "-o"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !entries(&dir).iter().any(|n| n.starts_with("out.gguf.tmp")) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no temporary file appeared"
            );
            assert!(child.try_wait().unwrap().is_none(), "the converter ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(60) {
                child.kill().unwrap();
                panic!("SIG{signal}: the converter did not stop");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "SIG{signal}: {err}");
        assert!(err.contains("chatglm-convert: error:"), "{err}");
        assert!(
            entries(&dir).is_empty(),
            "SIG{signal} left {:?}",
            entries(&dir)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
