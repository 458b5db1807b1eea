//! Finds out whether OpenH264 (built by `openh264-sys2` beside this crate)
//! gets its x86 assembly, and tells `src/build.rs` through the
//! `LINK_VIDEO_OPENH264_ASM` environment variable ("1" or "0").
//!
//! `openh264-sys2`'s build script assembles its `.asm` files with `nasm`
//! (through `nasm-rs`: the program named by `NASM`, else `nasm` on PATH)
//! when the target is x86 or x86_64 and `OPENH264_NO_ASM` is not set; if
//! `nasm` is missing or fails, it silently builds the C++ alone, which
//! encodes about three times slower. This script repeats those conditions:
//! the same target architectures, the same variables, and `nasm -v` runs.

use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=NASM");
    println!("cargo:rerun-if-env-changed=OPENH264_NO_ASM");
    println!("cargo:rerun-if-env-changed=PATH");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let x86 = arch == "x86_64" || arch == "x86";
    let asm = x86 && std::env::var_os("OPENH264_NO_ASM").is_none() && nasm_runs();
    println!(
        "cargo:rustc-env=LINK_VIDEO_OPENH264_ASM={}",
        if asm { "1" } else { "0" }
    );
}

/// Whether the assembler `nasm-rs` would use answers `-v`.
fn nasm_runs() -> bool {
    let nasm = std::env::var_os("NASM").unwrap_or_else(|| "nasm".into());
    Command::new(nasm)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
