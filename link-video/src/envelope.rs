//! The video frame envelope: a 48-byte little-endian header in front of one
//! H.264 access unit, carried as the payload of one link-session frame
//! (rules `video.envelope.layout`, `video.envelope.reject`). The host
//! writes it; the native client and the browser viewer read it with the
//! same [`VideoHeader::parse`].
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4 | magic `b"LSV1"` |
//! | 4  | 1 | codec: 1 = H.264 Annex B |
//! | 5  | 1 | flags: bit 0 = keyframe (IDR), bits 1–2 = temporal id, bit 3 = recovery point, bits 4–5 = rendition, bit 6 = live source |
//! | 6  | 2 | the viewer's own target, units of 10 kbit/s (0: not known) |
//! | 8  | 2 | width |
//! | 10 | 2 | height |
//! | 12 | 4 | target kbit/s |
//! | 16 | 8 | capture index |
//! | 24 | 8 | capture time, µs since the UNIX epoch (host clock) |
//! | 32 | 8 | encoder finished, same clock |
//! | 40 | 8 | handed to the session, same clock |

use crate::VideoError;

/// The envelope's magic bytes.
pub const MAGIC: [u8; 4] = *b"LSV1";
/// Length of the envelope header in bytes; the access unit follows it.
pub const HEADER_LEN: usize = 48;
/// Flags bit 0: the access unit is a keyframe (IDR).
pub const FLAG_KEYFRAME: u8 = 1;
/// Flags bits 1–2: the access unit's temporal id (0..=3).
pub const FLAG_TEMPORAL_SHIFT: u8 = 1;
/// Flags bit 3: the access unit is a recovery point (an IDR or an LTR
/// recovery frame): a viewer that lost earlier frames is whole again here.
pub const FLAG_RECOVERY: u8 = 8;
/// Flags bits 4–5: the rendition (0..=3): rendition `r` is the captured
/// picture scaled by 1/2^r in each dimension (simulcast).
pub const FLAG_RENDITION_SHIFT: u8 = 4;

/// Flags bit 6: a live source (a screen): the capture index numbers the
/// frames captured, and the picture carries no index of the host's.
pub const FLAG_LIVE: u8 = 0x40;

/// The codec of the access unit behind the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// H.264 in Annex B form (start codes included). Wire value 1.
    H264AnnexB,
}

impl Codec {
    /// The codec's wire value.
    pub fn to_wire(self) -> u8 {
        match self {
            Codec::H264AnnexB => 1,
        }
    }

    /// The codec for a wire value, if known.
    pub fn from_wire(v: u8) -> Option<Self> {
        match v {
            1 => Some(Codec::H264AnnexB),
            _ => None,
        }
    }
}

/// The header of one video frame envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoHeader {
    /// Codec of the access unit.
    pub codec: Codec,
    /// The access unit is a keyframe (IDR): a decoder can start here.
    pub keyframe: bool,
    /// Temporal layer of the access unit (0 for a stream without layers):
    /// a viewer that receives layers `0..=k` decodes whole.
    pub temporal_id: u8,
    /// A recovery point: an IDR, or an LTR recovery frame that predicts
    /// only from a reference every viewer has; a viewer that lost earlier
    /// frames is whole again from here.
    pub recovery: bool,
    /// The rendition of the access unit (0..=3; 0 without simulcast): the
    /// captured picture scaled by 1/2^rendition in each dimension. Each
    /// rendition is its own encoded stream; a viewer moves between them
    /// at a keyframe.
    pub rendition: u8,
    /// The source is live (a screen): [`capture_index`](Self::capture_index)
    /// numbers the captured frames and says nothing about the picture.
    pub live: bool,
    /// The target bitrate of the viewer this copy was sent to (its own
    /// session's estimate), in units of 10 kbit/s, saturating at 65535;
    /// 0 when not known. Set per viewer by the hub.
    pub viewer_target_10kbps: u16,
    /// Picture width in pixels.
    pub width: u16,
    /// Picture height in pixels.
    pub height: u16,
    /// The host's encoder bitrate when this frame was encoded, kbit/s.
    pub target_kbps: u32,
    /// The frame index burned into the picture (for a live source, the
    /// number of the captured frame).
    pub capture_index: u64,
    /// Capture time, microseconds since the UNIX epoch, host clock.
    pub capture_us: u64,
    /// When the encoder finished this frame, same clock.
    pub encoded_us: u64,
    /// When the host handed the frame to the session, same clock.
    pub sent_us: u64,
}

// r[impl video.envelope.layout]
impl VideoHeader {
    /// Writes the 48-byte header into `out[..HEADER_LEN]` (for example the
    /// start of a link write slot). Bytes past the header are untouched.
    ///
    /// # Errors
    /// [`VideoError::ShortBuffer`] if `out` is shorter than [`HEADER_LEN`].
    pub fn encode_into(&self, out: &mut [u8]) -> Result<(), VideoError> {
        let Some(h) = out.get_mut(..HEADER_LEN) else {
            return Err(VideoError::ShortBuffer {
                needed: HEADER_LEN,
                got: out.len(),
            });
        };
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = self.codec.to_wire();
        let mut flags = (self.temporal_id & 3) << FLAG_TEMPORAL_SHIFT
            | (self.rendition & 3) << FLAG_RENDITION_SHIFT;
        if self.keyframe {
            flags |= FLAG_KEYFRAME;
        }
        if self.recovery {
            flags |= FLAG_RECOVERY;
        }
        if self.live {
            flags |= FLAG_LIVE;
        }
        h[5] = flags;
        h[6..8].copy_from_slice(&self.viewer_target_10kbps.to_le_bytes());
        h[8..10].copy_from_slice(&self.width.to_le_bytes());
        h[10..12].copy_from_slice(&self.height.to_le_bytes());
        h[12..16].copy_from_slice(&self.target_kbps.to_le_bytes());
        h[16..24].copy_from_slice(&self.capture_index.to_le_bytes());
        h[24..32].copy_from_slice(&self.capture_us.to_le_bytes());
        h[32..40].copy_from_slice(&self.encoded_us.to_le_bytes());
        h[40..48].copy_from_slice(&self.sent_us.to_le_bytes());
        Ok(())
    }

    /// Appends the 48-byte header to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + HEADER_LEN, 0);
        self.encode_into(&mut out[start..])
            .expect("the vector was just grown by HEADER_LEN");
    }

    /// Parses an envelope: the header and the access unit behind it.
    ///
    /// Unknown flag bits and the reserved bytes are ignored (room for later
    /// versions of the same layout).
    ///
    /// # Errors
    /// [`VideoError::ShortEnvelope`] for fewer than 48 bytes,
    /// [`VideoError::BadMagic`] for another magic, [`VideoError::BadCodec`]
    /// for an unknown codec.
    // r[impl video.envelope.reject]
    pub fn parse(buf: &[u8]) -> Result<(VideoHeader, &[u8]), VideoError> {
        let Some((h, payload)) = buf.split_first_chunk::<HEADER_LEN>() else {
            return Err(VideoError::ShortEnvelope { len: buf.len() });
        };
        let magic: [u8; 4] = h[0..4].try_into().expect("4 bytes");
        if magic != MAGIC {
            return Err(VideoError::BadMagic(magic));
        }
        let codec = Codec::from_wire(h[4]).ok_or(VideoError::BadCodec(h[4]))?;
        let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
        let header = VideoHeader {
            live: h[5] & FLAG_LIVE != 0,
            codec,
            keyframe: h[5] & FLAG_KEYFRAME != 0,
            temporal_id: (h[5] >> FLAG_TEMPORAL_SHIFT) & 3,
            recovery: h[5] & FLAG_RECOVERY != 0,
            rendition: (h[5] >> FLAG_RENDITION_SHIFT) & 3,
            viewer_target_10kbps: u16_at(6),
            width: u16_at(8),
            height: u16_at(10),
            target_kbps: u32_at(12),
            capture_index: u64_at(16),
            capture_us: u64_at(24),
            encoded_us: u64_at(32),
            sent_us: u64_at(40),
        };
        Ok((header, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VideoHeader {
        VideoHeader {
            live: false,
            codec: Codec::H264AnnexB,
            keyframe: true,
            temporal_id: 0,
            recovery: true,
            rendition: 0,
            viewer_target_10kbps: 300,
            width: 1280,
            height: 720,
            target_kbps: 4000,
            capture_index: 0x0102_0304_0506_0708,
            capture_us: 1_700_000_000_000_001,
            encoded_us: 1_700_000_000_000_002,
            sent_us: 1_700_000_000_000_003,
        }
    }

    // r[verify video.envelope.layout]
    #[test]
    fn header_round_trips_and_has_the_contract_layout() {
        let h = sample();
        let mut buf = Vec::new();
        h.write(&mut buf);
        assert_eq!(buf.len(), HEADER_LEN);
        // Byte positions from the contract, checked independently of parse().
        assert_eq!(&buf[0..4], b"LSV1");
        assert_eq!(buf[4], 1);
        assert_eq!(buf[5], 1 | 8);
        assert_eq!(&buf[6..8], &300u16.to_le_bytes());
        assert_eq!(&buf[8..10], &1280u16.to_le_bytes());
        assert_eq!(&buf[10..12], &720u16.to_le_bytes());
        assert_eq!(&buf[12..16], &4000u32.to_le_bytes());
        assert_eq!(&buf[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&buf[24..32], &1_700_000_000_000_001u64.to_le_bytes());
        assert_eq!(&buf[32..40], &1_700_000_000_000_002u64.to_le_bytes());
        assert_eq!(&buf[40..48], &1_700_000_000_000_003u64.to_le_bytes());

        buf.extend_from_slice(b"\0\0\0\x01\x65access unit");
        let (back, au) = VideoHeader::parse(&buf).unwrap();
        assert_eq!(back, h);
        assert_eq!(au, b"\0\0\0\x01\x65access unit");

        let p = VideoHeader {
            keyframe: false,
            recovery: false,
            temporal_id: 2,
            ..h
        };
        let mut slot = [0xAAu8; 60];
        p.encode_into(&mut slot).unwrap();
        assert_eq!(slot[5], 2 << 1, "temporal id in bits 1-2");
        let q = VideoHeader {
            keyframe: false,
            recovery: true,
            temporal_id: 1,
            ..h
        };
        let mut b = Vec::new();
        q.write(&mut b);
        assert_eq!(b[5], 8 | 1 << 1, "recovery in bit 3");
        assert_eq!(VideoHeader::parse(&b).unwrap().0, q);
        let r = VideoHeader { rendition: 2, ..q };
        let mut b = Vec::new();
        r.write(&mut b);
        assert_eq!(b[5], 2 << 4 | 8 | 1 << 1, "rendition in bits 4-5");
        assert_eq!(VideoHeader::parse(&b).unwrap().0, r);
        let l = VideoHeader { live: true, ..r };
        let mut b = Vec::new();
        l.write(&mut b);
        assert_eq!(b[5], 0x40 | 2 << 4 | 8 | 1 << 1, "live in bit 6");
        assert_eq!(VideoHeader::parse(&b).unwrap().0, l);
        assert_eq!(
            &slot[HEADER_LEN..],
            &[0xAA; 12],
            "bytes past the header untouched"
        );
        let (back, au) = VideoHeader::parse(&slot).unwrap();
        assert_eq!(back, p);
        assert_eq!(au.len(), 12);
    }

    // r[verify video.envelope.reject]
    #[test]
    fn parse_rejects_short_bad_magic_and_bad_codec() {
        let mut buf = Vec::new();
        sample().write(&mut buf);
        for len in 0..HEADER_LEN {
            assert!(
                matches!(VideoHeader::parse(&buf[..len]), Err(VideoError::ShortEnvelope { len: l }) if l == len),
                "len {len}"
            );
        }
        let mut bad = buf.clone();
        bad[0] = b'X';
        assert!(matches!(
            VideoHeader::parse(&bad),
            Err(VideoError::BadMagic(m)) if &m == b"XSV1"
        ));
        for codec in [0u8, 2, 255] {
            let mut bad = buf.clone();
            bad[4] = codec;
            assert!(matches!(VideoHeader::parse(&bad), Err(VideoError::BadCodec(c)) if c == codec));
        }
        let mut small = [0u8; 47];
        assert!(matches!(
            sample().encode_into(&mut small),
            Err(VideoError::ShortBuffer {
                needed: 48,
                got: 47
            })
        ));
        // Errors read as one clear line.
        let msg = VideoHeader::parse(&buf[..10]).unwrap_err().to_string();
        assert!(msg.contains("10") && msg.contains("48"), "{msg}");
    }

    // r[verify video.envelope.reject]
    #[test]
    fn random_bytes_never_panic_and_valid_prefixes_parse() {
        use proptest::prelude::*;
        proptest!(ProptestConfig::with_cases(2000), |(mut bytes in proptest::collection::vec(any::<u8>(), 0..200), fix in any::<bool>())| {
            if fix && bytes.len() >= 5 {
                bytes[..4].copy_from_slice(&MAGIC);
                bytes[4] = 1;
            }
            match VideoHeader::parse(&bytes) {
                Ok((h, au)) => {
                    prop_assert!(bytes.len() >= HEADER_LEN);
                    prop_assert_eq!(au.len(), bytes.len() - HEADER_LEN);
                    // Re-encoding gives the same header bytes except the
                    // ignored unknown flag bits.
                    let mut again = [0u8; HEADER_LEN];
                    h.encode_into(&mut again).unwrap();
                    prop_assert_eq!(&again[6..48], &bytes[6..48]);
                    prop_assert_eq!(&again[..5], &bytes[..5]);
                    prop_assert_eq!(again[5], bytes[5] & 0x7f);
                }
                Err(e) => {
                    prop_assert!(bytes.len() < HEADER_LEN || bytes[..4] != MAGIC || bytes[4] != 1, "{}", e);
                }
            }
        });
    }
}
