//! `tools/install.sh` into a temporary prefix, then the C example built as a user would:
//! with `pkg-config --cflags --libs chatglm`, and with CMake's `find_package(chatglm)`
//! (`examples/cmake`). The programs run and reply as the Rust API does; the shared library
//! carries its soname and the programs load it by that name.
#![cfg(target_os = "linux")]

use chatglm::build::synthetic::{write_synthetic, Preset};
use chatglm::build::{NoProgress, WriteOptions};
use chatglm::{Engine, GenerateOptions, Session, SessionOptions};
use chatglm_kernels::GgmlType;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The soname programs record: `libchatglm.so.MAJOR`.
fn soname() -> String {
    format!("libchatglm.so.{}", env!("CARGO_PKG_VERSION_MAJOR"))
}

/// Whether every tool this test needs is installed; in CI (`CI` set) they must be.
fn tools_present() -> bool {
    let missing: Vec<&str> = ["cmake", "pkg-config", "readelf", "cc", "c++"]
        .into_iter()
        .filter(|t| Command::new(t).arg("--version").output().is_err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{missing:?} not installed: .ci/run installs them"
    );
    eprintln!("note: {missing:?} not installed; the install test is skipped");
    false
}

/// Runs `cmd`, checks it succeeded, returns its output.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn readelf_dynamic(path: &Path) -> String {
    String::from_utf8(run(Command::new("readelf").arg("-d").arg(path)).stdout).unwrap()
}

/// The greedy replies of the Rust API to `messages` in one conversation, one line each.
fn rust_replies(model: &Path, n: usize, messages: &[&str]) -> String {
    let engine = Arc::new(Engine::open(model).unwrap());
    let mut session = Session::new(engine, SessionOptions::default()).unwrap();
    let mut options = GenerateOptions {
        max_new_tokens: n,
        ..GenerateOptions::default()
    };
    options.sampler.temperature = 0.0;
    let mut out = String::new();
    for m in messages {
        out.push_str(&session.chat(m, &options, &mut |_| true).unwrap().text);
        out.push('\n');
    }
    out
}

#[test]
fn installed_library_builds_with_pkg_config_and_cmake() {
    if !tools_present() {
        return;
    }
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("c_install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let prefix = work.join("prefix");

    // The libraries cargo built for this test: beside its binary.
    let built = std::env::current_exe().unwrap();
    let built = built.parent().unwrap();
    run(Command::new("bash")
        .arg(root().join("tools/install.sh"))
        .arg("--prefix")
        .arg(&prefix)
        .arg("--from")
        .arg(built));
    let lib = prefix.join("lib");
    let version = env!("CARGO_PKG_VERSION");
    let real = lib.join(format!("libchatglm.so.{version}"));
    for (link, target) in [
        (soname(), format!("libchatglm.so.{version}")),
        ("libchatglm.so".to_owned(), soname()),
    ] {
        assert_eq!(
            std::fs::read_link(lib.join(&link)).unwrap(),
            PathBuf::from(target),
            "{link}"
        );
    }
    assert!(
        readelf_dynamic(&real).contains(&format!("Library soname: [{}]", soname())),
        "{}",
        readelf_dynamic(&real)
    );
    for f in [
        "include/chatglm.h",
        "lib/libchatglm.a",
        "lib/pkgconfig/chatglm.pc",
        "lib/cmake/chatglm/chatglmConfig.cmake",
        "lib/cmake/chatglm/chatglmConfigVersion.cmake",
    ] {
        assert!(prefix.join(f).is_file(), "{f} not installed");
    }

    let model = work.join("tiny.gguf");
    let opts = WriteOptions {
        output: model.clone(),
        matrix_type: GgmlType::Q4_0,
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
    let messages = ["Hello!", "And then?"];
    let want = rust_replies(&model, 12, &messages);
    let chat_args = |cmd: &mut Command| -> Output {
        run(cmd
            .arg("-m")
            .arg(&model)
            .args(["-n", "12", "--temp", "0"])
            .args(messages))
    };

    // pkg-config, as the README says.
    let pc = run(Command::new("pkg-config")
        .args(["--cflags", "--libs", "chatglm"])
        .env("PKG_CONFIG_PATH", lib.join("pkgconfig")));
    let flags = String::from_utf8(pc.stdout).unwrap();
    assert!(flags.contains("-lchatglm"), "{flags}");
    let chat = work.join("chat-pkg-config");
    run(Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg(root().join("examples/c/chat.c"))
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&chat));
    let needed = readelf_dynamic(&chat);
    assert!(
        needed.contains(&format!("Shared library: [{}]", soname())),
        "{needed}"
    );
    assert_eq!(
        String::from_utf8(chat_args(&mut Command::new(&chat)).stdout).unwrap(),
        want
    );

    // The header's version macros are the library's version.
    let version_c = work.join("version.c");
    std::fs::write(
        &version_c,
        "#include <chatglm.h>\n#include <stdio.h>\n#include <string.h>\n\
         #define STR2(x) #x\n#define STR(x) STR2(x)\n\
         int main(void) {\n\
             const char *h = STR(CHATGLM_VERSION_MAJOR) \".\" STR(CHATGLM_VERSION_MINOR) \".\" \
         STR(CHATGLM_VERSION_PATCH);\n\
             printf(\"%s %s\\n\", h, chatglm_version());\n\
             return strcmp(h, chatglm_version()) != 0;\n\
         }\n",
    )
    .unwrap();
    let version_bin = work.join("version");
    run(Command::new("cc")
        .arg("-std=c99")
        .arg(&version_c)
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&version_bin));
    let out = run(&mut Command::new(&version_bin));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{version} {version}\n")
    );

    // CMake: examples/cmake finds the package (shared and static targets).
    let build = work.join("cmake");
    run(Command::new("cmake")
        .arg("-S")
        .arg(root().join("examples/cmake"))
        .arg("-B")
        .arg(&build)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
        .arg("-DCMAKE_BUILD_TYPE=Release"));
    run(Command::new("cmake")
        .arg("--build")
        .arg(&build)
        .args(["-j", "2"]));
    for program in ["chat", "hello", "chat_static"] {
        let exe = build.join(program);
        let dynamic = readelf_dynamic(&exe);
        assert_eq!(
            dynamic.contains(&format!("Shared library: [{}]", soname())),
            program != "chat_static",
            "{program}: {dynamic}"
        );
        let out = chat_args(&mut Command::new(&exe));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want, "{program}");
    }
    let _ = std::fs::remove_dir_all(&work);
}
