//! Builds the browser page into the `linkstream` binary: compiles the
//! `linkstream-web` crate for `wasm32-unknown-unknown` (a nested cargo
//! build in its own target directory), runs wasm-bindgen on it (the
//! `wasm-bindgen-cli-support` crate, pinned to the `wasm-bindgen` version
//! in Cargo.lock) and leaves `index.html`, the JS glue and the `.wasm` in
//! `OUT_DIR/web/`, where `src/web_assets.rs` embeds them.
//!
//! Needs the wasm32 target (`rustup target add wasm32-unknown-unknown`;
//! `scripts/test.sh` installs it); without it the build stops with that
//! instruction.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";

fn fail(msg: &str) -> ! {
    eprintln!("\nerror: {msg}\n");
    panic!("{msg}");
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest
        .parent()
        .expect("cli/ is inside the workspace")
        .to_path_buf();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    for p in [
        "web/src",
        "web/static",
        "web/Cargo.toml",
        "link-ws/src",
        "link-ws/Cargo.toml",
        "link-video/src",
        "link-video/Cargo.toml",
        "session/src",
        "session/Cargo.toml",
        "link-types/src",
        "link-types/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=LINKSTREAM_WEB_PROFILE");

    check_target();

    // The nested build cannot share the outer build's directory (cargo
    // holds its lock); one directory beside it serves every profile.
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(|t| t.join("web-page"))
        .unwrap_or_else(|| out.join("web-page"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "-p", "linkstream-web", "--lib", "--target", TARGET])
        .args(["--profile", "web-page"])
        // Optimised, without debug information: a small, fast page.
        .args(["--config", "profile.web-page.inherits=\"release\""])
        .args(["--config", "profile.web-page.debug=0"])
        .args(["--config", "profile.web-page.strip=\"debuginfo\""])
        .arg("--target-dir")
        .arg(&target_dir);
    // What cargo set for this build script must not leak into the nested
    // build (host flags, clippy's wrapper, the outer target directory).
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_FEATURE_")
            || k.starts_with("CARGO_CFG_")
            || k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || k.starts_with("DEP_")
        {
            cmd.env_remove(&*k);
        }
    }
    for k in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "TARGET",
        "HOST",
        "OUT_DIR",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "NUM_JOBS",
        "RUSTDOC",
    ] {
        cmd.env_remove(k);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| fail(&format!("could not run cargo for the browser page: {e}")));
    if !status.success() {
        fail(&format!(
            "building the browser page (linkstream-web for {TARGET}) failed ({status}); see the errors above"
        ));
    }
    let wasm = target_dir
        .join(TARGET)
        .join("web-page")
        .join("linkstream_web.wasm");

    let web_out = out.join("web");
    std::fs::create_dir_all(&web_out)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", web_out.display())));
    let mut bindgen = wasm_bindgen_cli_support::Bindgen::new();
    bindgen
        .input_path(&wasm)
        .out_name("linkstream_web")
        .typescript(false)
        .debug(false)
        .keep_debug(false);
    bindgen
        .web(true)
        .unwrap_or_else(|e| fail(&format!("wasm-bindgen: {e}")));
    bindgen
        .generate(&web_out)
        .unwrap_or_else(|e| fail(&format!("wasm-bindgen on {}: {e:#}", wasm.display())));
    let index = root.join("web/static/index.html");
    std::fs::copy(&index, web_out.join("index.html"))
        .unwrap_or_else(|e| fail(&format!("{}: {e}", index.display())));
}

/// Stop with the instruction to install the wasm32 target if it is missing.
fn check_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let installed = sysroot.is_some_and(|s| {
        Path::new(&s)
            .join("lib/rustlib")
            .join(TARGET)
            .join("lib")
            .is_dir()
    });
    if !installed {
        fail(&format!(
            "the linkstream binary embeds a browser page built for {TARGET}, and that target is \
             not installed. Install it with:\n\n    rustup target add {TARGET}\n\n\
             (scripts/test.sh does this itself.)"
        ));
    }
}
