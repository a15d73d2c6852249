//! `include/chatglm.h` is what cbindgen generates from `src/ffi/` (run with `CHATGLM_BLESS=1`
//! to rewrite it), and it compiles without a warning as C99 and as C++17.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn generate() -> String {
    let mut config = cbindgen::Config::from_file(root().join("cbindgen.toml")).unwrap();
    // The version is the crate's (Cargo.toml), written here so that it is written once.
    config.after_includes = Some(format!(
        "\n/* The version of this header; chatglm_version() gives the library's. */\n\
         #define CHATGLM_VERSION_MAJOR {}\n\
         #define CHATGLM_VERSION_MINOR {}\n\
         #define CHATGLM_VERSION_PATCH {}",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH")
    ));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root().join("src/ffi/mod.rs"))
        .generate()
        .unwrap();
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn header_is_up_to_date() {
    let path = root().join("include/chatglm.h");
    let want = generate();
    if std::env::var_os("CHATGLM_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "include/chatglm.h is stale: run `CHATGLM_BLESS=1 cargo test -p chatglm --test c_api_header`"
    );
    assert!(have.contains(&format!(
        "#define CHATGLM_VERSION_MAJOR {}\n",
        env!("CARGO_PKG_VERSION_MAJOR")
    )));
    // Every entry point is declared (cbindgen skips what it cannot translate, silently).
    for name in [
        "chatglm_last_error",
        "chatglm_status_name",
        "chatglm_string_free",
        "chatglm_model_options_default",
        "chatglm_model_load",
        "chatglm_model_free",
        "chatglm_model_get_info",
        "chatglm_version",
        "chatglm_generate_options_default",
        "chatglm_session_new",
        "chatglm_session_free",
        "chatglm_session_reset",
        "chatglm_session_last_stats",
        "chatglm_chat",
        "chatglm_complete",
        "chatglm_respond",
        "chatglm_tokenize",
        "chatglm_detokenize",
    ] {
        assert!(
            have.contains(&format!(" {name}(")) || have.contains(&format!("*{name}(")),
            "{name} is not declared"
        );
    }
}

/// A scratch directory for this test process.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chatglm-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles a translation unit that includes the header (and uses a few of its types, so
/// that they are checked too) with `compiler` and `flags`.
fn compile(compiler: &str, ext: &str, flags: &[&str]) {
    let src = scratch().join(format!("include_only.{ext}"));
    std::fs::write(
        &src,
        "#include \"chatglm.h\"\n\
         #include \"chatglm.h\" /* the include guard works */\n\
         int use_types(chatglm_model *m, chatglm_session *s, chatglm_piece_callback cb);\n\
         int use_types(chatglm_model *m, chatglm_session *s, chatglm_piece_callback cb) {\n\
             chatglm_model_options mo = chatglm_model_options_default();\n\
             chatglm_generate_options go = chatglm_generate_options_default();\n\
             chatglm_message msg = { CHATGLM_ROLE_USER, \"hi\" };\n\
             chatglm_status st = chatglm_respond(s, &msg, 1, &go, cb, (void *)0, (char **)0);\n\
             (void)m; (void)mo;\n\
             return st == CHATGLM_OK && mo.kv_type == CHATGLM_KV_F16;\n\
         }\n",
    )
    .unwrap();
    let out = Command::new(compiler)
        .args(flags)
        .arg("-fsyntax-only")
        .arg("-I")
        .arg(root().join("include"))
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{compiler} {flags:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn header_compiles_as_c99() {
    compile(
        "cc",
        "c",
        &["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror"],
    );
}

#[test]
fn header_compiles_as_cpp17() {
    compile(
        "c++",
        "cpp",
        &["-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror"],
    );
}
