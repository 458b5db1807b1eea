//! Small helpers shared by the subcommands.
//!
//! It imports no other module of the binary, so every subcommand can use
//! it without an import circle.

use std::path::Path;

/// Microseconds since the UNIX epoch (this machine's clock).
pub use link_video::now_us;

/// Read a pre-shared key file: the key is the file's text, trimmed; a key
/// written as hex (an even number of hex digits) is decoded to bytes. The
/// session needs at least 16 bytes.
pub fn read_psk(path: &Path) -> Result<Vec<u8>, String> {
    let raw = std::fs::read(path).map_err(|e| format!("PSK file {}: {e}", path.display()))?;
    let text = raw.trim_ascii();
    let key = match parse_hex(text) {
        Some(k) => k,
        None => text.to_vec(),
    };
    if key.len() < 16 {
        return Err(format!(
            "PSK file {}: the key has {} bytes, at least 16 are needed",
            path.display(),
            key.len()
        ));
    }
    Ok(key)
}

fn parse_hex(t: &[u8]) -> Option<Vec<u8>> {
    if t.is_empty() || !t.len().is_multiple_of(2) || !t.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    t.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// A finite number.
pub fn number(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("not a number: {v}"))
}

/// A finite number >= 0.
pub fn non_negative(v: &str) -> Result<f64, String> {
    number(v).and_then(|x| {
        if x >= 0.0 {
            Ok(x)
        } else {
            Err(format!("{v} is below 0"))
        }
    })
}

/// An idle timeout in seconds (`--idle-timeout`): finite, from 1 s (ten
/// of the client's 100 ms loss reports, so a live peer is never idle) to an
/// hour.
pub fn idle_timeout(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if (1.0..=3600.0).contains(&x) => Ok(x),
        _ => Err(format!("{v}: expected seconds from 1 to 3600")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys_are_decoded_and_other_text_taken_as_is() {
        assert_eq!(parse_hex(b"00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(parse_hex(b"0f1"), None);
        assert_eq!(parse_hex(b"zz"), None);
        let dir = std::env::temp_dir().join(format!("ls-psk-{}", std::process::id()));
        std::fs::write(&dir, "  0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(read_psk(&dir).unwrap().len(), 16);
        std::fs::write(&dir, "a passphrase of some length\n").unwrap();
        assert_eq!(read_psk(&dir).unwrap(), b"a passphrase of some length");
        std::fs::write(&dir, "short").unwrap();
        assert!(read_psk(&dir).unwrap_err().contains("at least 16"));
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn idle_timeouts_are_finite_seconds_from_one_to_an_hour() {
        assert_eq!(idle_timeout("4"), Ok(4.0));
        assert_eq!(idle_timeout("1"), Ok(1.0));
        assert_eq!(idle_timeout("2.5"), Ok(2.5));
        for bad in ["0", "0.5", "3601", "nan", "inf", "-1", "x", "1e300"] {
            assert!(idle_timeout(bad).is_err(), "{bad}");
        }
    }
}
