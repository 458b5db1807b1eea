//! The video frame envelope (VIDEO-CONTRACT section 1): a 48-byte
//! little-endian header before each H.264 Annex B access unit. Mirrors
//! `cli/src/video/envelope.rs` on the host.

use std::fmt;

/// Bytes of the header.
pub const HEADER_LEN: usize = 48;
/// The magic at offset 0.
pub const MAGIC: [u8; 4] = *b"LSV1";
/// Codec byte of H.264 Annex B.
pub const CODEC_H264: u8 = 1;

/// One parsed envelope header, with the access unit after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The frame is an IDR (keyframe).
    pub keyframe: bool,
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// The host's encoder bitrate when it sent the frame, kbit/s.
    pub target_kbps: u32,
    /// The frame index burned into the picture.
    pub capture_index: u64,
    /// Capture time, microseconds since the UNIX epoch (host clock).
    pub capture_us: u64,
    /// When the encoder finished (host clock).
    pub encoded_us: u64,
    /// When the host handed the frame to the session (host clock).
    pub sent_us: u64,
    /// The access unit (Annex B, start codes included).
    pub access_unit: &'a [u8],
}

/// Why an envelope could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Fewer than [`HEADER_LEN`] bytes.
    Short(usize),
    /// The first four bytes are not `LSV1`.
    Magic([u8; 4]),
    /// A codec this viewer does not decode.
    Codec(u8),
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Short(n) => write!(f, "video envelope of {n} bytes, header needs 48"),
            EnvelopeError::Magic(m) => write!(f, "video envelope magic {m:02x?}, expected LSV1"),
            EnvelopeError::Codec(c) => write!(f, "video codec {c} (only 1, H.264 Annex B)"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

// r[impl web.envelope]
/// Read an envelope.
pub fn parse(b: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    if b.len() < HEADER_LEN {
        return Err(EnvelopeError::Short(b.len()));
    }
    let magic: [u8; 4] = b[0..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(EnvelopeError::Magic(magic));
    }
    if b[4] != CODEC_H264 {
        return Err(EnvelopeError::Codec(b[4]));
    }
    Ok(Envelope {
        keyframe: b[5] & 1 != 0,
        width: u16::from_le_bytes([b[8], b[9]]),
        height: u16::from_le_bytes([b[10], b[11]]),
        target_kbps: u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")),
        capture_index: u64_at(b, 16),
        capture_us: u64_at(b, 24),
        encoded_us: u64_at(b, 32),
        sent_us: u64_at(b, 40),
        access_unit: &b[HEADER_LEN..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(keyframe: bool) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"LSV1");
        b.push(1);
        b.push(keyframe as u8);
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&1280u16.to_le_bytes());
        b.extend_from_slice(&720u16.to_le_bytes());
        b.extend_from_slice(&4000u32.to_le_bytes());
        for v in [77u64, 1_000, 2_000, 3_000] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn reads_every_field() {
        let mut b = header(true);
        b.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        let e = parse(&b).unwrap();
        assert!(e.keyframe);
        assert_eq!((e.width, e.height, e.target_kbps), (1280, 720, 4000));
        assert_eq!(
            (e.capture_index, e.capture_us, e.encoded_us, e.sent_us),
            (77, 1_000, 2_000, 3_000)
        );
        assert_eq!(e.access_unit, &[0, 0, 0, 1, 0x65]);
        assert!(!parse(&header(false)).unwrap().keyframe);
    }

    // r[verify web.envelope]
    #[test]
    fn refuses_short_wrong_magic_and_codec() {
        let b = header(true);
        assert_eq!(parse(&b[..47]), Err(EnvelopeError::Short(47)));
        let mut m = b.clone();
        m[0] = b'X';
        assert!(matches!(parse(&m), Err(EnvelopeError::Magic(_))));
        let mut c = b;
        c[4] = 2;
        assert_eq!(parse(&c), Err(EnvelopeError::Codec(2)));
    }
}
