//! Names the shared library by its major version, so programs linked with it load
//! `libchatglm.so.0` (Linux and other ELF systems: the soname) or `@rpath/libchatglm.0.dylib`
//! (macOS: the install name) and a later incompatible library can sit beside it. Windows needs
//! nothing: the DLL is `chatglm.dll`, with its import library `chatglm.dll.lib` (MSVC) or
//! `libchatglm.dll.a` (GNU).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let family = std::env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    if os == "macos" || os == "ios" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libchatglm.{major}.dylib");
    } else if family == "unix" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libchatglm.so.{major}");
    }
}
