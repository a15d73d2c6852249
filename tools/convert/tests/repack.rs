//! `chatglm-convert --repack`: moving a file's matrices between the portable and the
//! interleaved layouts gives, byte for byte, the file the converter writes in that layout
//! from the checkpoint (so the model's results are the same), with the file type under the
//! key each layout uses, and bad requests fail cleanly.

mod common;

use chatglm::arch::keys;
use chatglm::gguf::GgufFile;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn convert_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatglm-convert"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn golden_glm1(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/golden-glm1")
        .join(name)
}

/// Converts `dir` at `qtype` in both layouts, repacks each into the other, and compares.
fn round_trip(dir: &Path, qtype: &str) {
    let tmp = temp_dir("repack");
    let interleaved = tmp.join("interleaved.gguf");
    let portable = tmp.join("portable.gguf");
    ok(convert_cli(&[s(dir), "-q", qtype, "-o", s(&interleaved)]));
    ok(convert_cli(&[
        s(dir),
        "-q",
        qtype,
        "--portable",
        "-o",
        s(&portable),
    ]));
    let to_portable = tmp.join("to-portable.gguf");
    let to_interleaved = tmp.join("to-interleaved.gguf");
    ok(convert_cli(&[
        "--repack",
        s(&interleaved),
        "--portable",
        "-o",
        s(&to_portable),
    ]));
    ok(convert_cli(&[
        "--repack",
        s(&portable),
        "-o",
        s(&to_interleaved),
    ]));
    let read = |p: &Path| std::fs::read(p).unwrap();
    let what = format!("{} {qtype}", dir.display());
    assert!(read(&to_portable) == read(&portable), "{what}: to portable");
    assert!(
        read(&to_interleaved) == read(&interleaved),
        "{what}: to interleaved"
    );

    // The layouts differ (unless the type has no interleaved form), and each file names its
    // file type where its layout says.
    let i = GgufFile::open(&interleaved).unwrap();
    let p = GgufFile::open(&portable).unwrap();
    let has_groups = i.tensors().iter().any(|t| t.ty.is_interleaved());
    assert!(!p.tensors().iter().any(|t| t.ty.is_interleaved()), "{what}");
    let ftype = p.metadata().get_u32(keys::GENERAL_FILE_TYPE).unwrap();
    if has_groups {
        assert!(
            !i.metadata().contains_key(keys::GENERAL_FILE_TYPE),
            "{what}"
        );
        assert_eq!(
            i.metadata().get_u32(keys::PORTABLE_FILE_TYPE).unwrap(),
            ftype,
            "{what}"
        );
    } else {
        assert_eq!(
            i.metadata().get_u32(keys::GENERAL_FILE_TYPE).unwrap(),
            ftype
        );
    }
    let _ = std::fs::remove_dir_all(tmp);
}

#[test]
fn repack_equals_converting_in_the_other_layout() {
    for qtype in ["q4_0", "q8_0", "q4_k_m", "f16"] {
        round_trip(&golden_dir("glm3-tiny"), qtype);
    }
    round_trip(&golden_dir("glm4-tiny"), "q4_0");
    round_trip(&golden_glm1("glm1-tiny"), "q8_0");
}

#[test]
fn every_family_file_carries_its_chat_template() {
    let tmp = temp_dir("template");
    for (dir, family) in [
        (golden_dir("glm2-tiny"), chatglm::arch::Family::ChatGlm2),
        (golden_dir("glm3-tiny"), chatglm::arch::Family::ChatGlm3),
        (golden_dir("glm4-tiny"), chatglm::arch::Family::Glm4),
        (golden_glm1("glm1-tiny"), chatglm::arch::Family::ChatGlm1),
    ] {
        let out = tmp.join("t.gguf");
        ok(convert_cli(&[s(&dir), "-q", "q8_0", "-o", s(&out)]));
        let file = GgufFile::open(&out).unwrap();
        assert_eq!(
            file.metadata()
                .get_str(keys::TOKENIZER_CHAT_TEMPLATE)
                .unwrap(),
            chatglm::tokenizer::chat_template(family).unwrap(),
            "{family}"
        );
    }
    let _ = std::fs::remove_dir_all(tmp);
}

#[test]
fn repack_refuses_bad_requests_and_leaves_no_file() {
    let tmp = temp_dir("repack-bad");
    let file = tmp.join("m.gguf");
    ok(convert_cli(&[
        "--synthetic",
        "tiny",
        "-q",
        "q4_0",
        "-o",
        s(&file),
    ]));
    let before = std::fs::read(&file).unwrap();
    let fails = |args: &[&str], says: &str| {
        let out = convert_cli(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    };
    // Over its own input.
    fails(
        &["--repack", s(&file), "-o", s(&file)],
        "another file than the input",
    );
    // Options of a conversion.
    fails(&["--repack", s(&file), "-q", "q8_0"], "cannot be used with");
    // A missing file, and a file that is not GGUF.
    let missing = tmp.join("missing.gguf");
    fails(&["--repack", s(&missing)], "missing.gguf");
    let junk = tmp.join("junk.gguf");
    std::fs::write(&junk, b"not a model at all").unwrap();
    fails(
        &["--repack", s(&junk), "-o", s(&tmp.join("o.gguf"))],
        "not a GGUF file",
    );
    assert!(!tmp.join("o.gguf").exists());
    assert_eq!(std::fs::read(&file).unwrap(), before);
    // The default output name sits beside the input.
    ok(convert_cli(&["--repack", s(&file), "--portable"]));
    assert!(tmp.join("m-portable.gguf").exists());
    let _ = std::fs::remove_dir_all(tmp);
}
