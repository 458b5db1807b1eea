//! How this build's OpenH264 was compiled (found by the crate's build
//! script; rule `video.codec.asm`).

/// Whether OpenH264 was built with its x86 assembly (`nasm` was found when
/// it was compiled). Without it the encoder is about three times slower.
pub const OPENH264_ASM: bool = matches!(env!("LINK_VIDEO_OPENH264_ASM").as_bytes(), b"1");

// r[impl video.codec.asm]
/// The one line a program that encodes prints when OpenH264 was built
/// without its assembly, or `None` when it was built with it.
pub fn slow_encoder_warning() -> Option<&'static str> {
    (!OPENH264_ASM).then_some(
        "OpenH264 was built without nasm: the H.264 encoder is about three times slower; \
         install nasm (e.g. `apt-get install nasm`) and rebuild \
         (`cargo clean -p openh264-sys2`, then build again)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // r[verify video.codec.asm]
    #[test]
    fn the_warning_matches_whether_nasm_is_on_this_machine() {
        // This test build's OpenH264 was compiled on this machine with the
        // same PATH, so the flag says whether `nasm -v` runs here (on x86).
        let x86 = cfg!(any(target_arch = "x86_64", target_arch = "x86"));
        let nasm = std::process::Command::new(std::env::var_os("NASM").unwrap_or("nasm".into()))
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success());
        let expect = x86 && nasm && std::env::var_os("OPENH264_NO_ASM").is_none();
        assert_eq!(OPENH264_ASM, expect);
        let warning = slow_encoder_warning();
        assert_eq!(warning.is_some(), !expect, "a warning exactly without asm");
        if let Some(line) = warning {
            assert!(line.contains("three times slower") && line.contains("nasm"));
            assert!(!line.contains('\n'));
        }
    }
}
