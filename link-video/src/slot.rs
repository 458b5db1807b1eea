//! The header of one captured picture in a shared-memory slot (rule
//! `video.slot.layout`): the capture process writes it in front of the raw
//! I420 picture, the encoder process reads both in place.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `LSCF` |
//! | 4 | 2 | width |
//! | 6 | 2 | height |
//! | 8 | 8 | capture index (the index burned into a test-pattern picture; the frame number of a file) |
//! | 16 | 8 | capture time, microseconds since the UNIX epoch |
//! | 24 | 4 | frames dropped by the capture process so far (no free slot in time) |
//! | 28 | 4 | frame rate, frames per 1000 s |
//!
//! The picture follows: the Y plane (`width * height` bytes), then U and V
//! (`width/2 * height/2` each), rows packed.

use crate::{VideoError, i420_len};

/// Length of the header in front of each captured picture.
pub const HEADER_LEN: usize = 32;
/// First four bytes of a capture slot.
pub const MAGIC: [u8; 4] = *b"LSCF";

/// The header of one captured frame in a shared-memory slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Picture width.
    pub width: u16,
    /// Picture height.
    pub height: u16,
    /// Capture index.
    pub index: u64,
    /// Capture time, microseconds since the UNIX epoch.
    pub capture_us: u64,
    /// Frames the capture process dropped so far.
    pub dropped: u32,
    /// Frames per 1000 seconds.
    pub fps_milli: u32,
}

/// The slot length for a picture of `width` x `height`: header and I420
/// picture.
pub fn slot_len(width: usize, height: usize) -> usize {
    HEADER_LEN + i420_len(width, height)
}

// r[impl video.slot.layout]
impl FrameHeader {
    /// Writes the header into `out[..HEADER_LEN]`; bytes past it are
    /// untouched.
    ///
    /// # Errors
    /// [`VideoError::ShortBuffer`] if `out` is shorter than [`HEADER_LEN`].
    pub fn write(&self, out: &mut [u8]) -> Result<(), VideoError> {
        let got = out.len();
        let Some(h) = out.get_mut(..HEADER_LEN) else {
            return Err(VideoError::ShortBuffer {
                needed: HEADER_LEN,
                got,
            });
        };
        h[0..4].copy_from_slice(&MAGIC);
        h[4..6].copy_from_slice(&self.width.to_le_bytes());
        h[6..8].copy_from_slice(&self.height.to_le_bytes());
        h[8..16].copy_from_slice(&self.index.to_le_bytes());
        h[16..24].copy_from_slice(&self.capture_us.to_le_bytes());
        h[24..28].copy_from_slice(&self.dropped.to_le_bytes());
        h[28..32].copy_from_slice(&self.fps_milli.to_le_bytes());
        Ok(())
    }

    /// Parses a slot: the header and the picture behind it, checked to be
    /// exactly one I420 picture of the header's size.
    ///
    /// # Errors
    /// [`VideoError::BadSlot`] for a slot shorter than the header, another
    /// magic, a zero size or a picture of another length.
    pub fn parse(buf: &[u8]) -> Result<(FrameHeader, &[u8]), VideoError> {
        let bad = |reason: String| VideoError::BadSlot { reason };
        let Some((h, picture)) = buf.split_first_chunk::<HEADER_LEN>() else {
            return Err(bad(format!("{} bytes, no room for the header", buf.len())));
        };
        if h[0..4] != MAGIC {
            return Err(bad(format!("magic {:02x?}, expected LSCF", &h[0..4])));
        }
        let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
        let hdr = FrameHeader {
            width: u16_at(4),
            height: u16_at(6),
            index: u64_at(8),
            capture_us: u64_at(16),
            dropped: u32_at(24),
            fps_milli: u32_at(28),
        };
        let want = i420_len(hdr.width as usize, hdr.height as usize);
        if hdr.width == 0 || hdr.height == 0 || picture.len() != want {
            return Err(bad(format!(
                "{}x{} with {} picture bytes, expected {want}",
                hdr.width,
                hdr.height,
                picture.len()
            )));
        }
        Ok((hdr, picture))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // r[verify video.slot.layout]
    #[test]
    fn header_round_trips_has_the_layout_and_bad_slots_are_refused() {
        let h = FrameHeader {
            width: 640,
            height: 360,
            index: 1 << 40,
            capture_us: 123_456_789,
            dropped: 3,
            fps_milli: 30_000,
        };
        let mut slot = vec![0xAAu8; slot_len(640, 360)];
        h.write(&mut slot).unwrap();
        assert_eq!(&slot[0..4], b"LSCF");
        assert_eq!(&slot[4..6], &640u16.to_le_bytes());
        assert_eq!(&slot[6..8], &360u16.to_le_bytes());
        assert_eq!(&slot[8..16], &(1u64 << 40).to_le_bytes());
        assert_eq!(&slot[16..24], &123_456_789u64.to_le_bytes());
        assert_eq!(&slot[24..28], &3u32.to_le_bytes());
        assert_eq!(&slot[28..32], &30_000u32.to_le_bytes());
        assert_eq!(slot[32], 0xAA, "the picture is untouched");
        let (got, pic) = FrameHeader::parse(&slot).unwrap();
        assert_eq!(got, h);
        assert_eq!(pic.len(), i420_len(640, 360));
        for bad in [&slot[..slot.len() - 1], &slot[..10], &[][..]] {
            assert!(matches!(
                FrameHeader::parse(bad),
                Err(VideoError::BadSlot { .. })
            ));
        }
        let mut zero = slot.clone();
        zero[4..6].fill(0);
        assert!(FrameHeader::parse(&zero).is_err());
        slot[0] = b'X';
        let e = FrameHeader::parse(&slot).unwrap_err().to_string();
        assert!(e.contains("magic"), "{e}");
        assert!(matches!(
            h.write(&mut [0u8; 31]),
            Err(VideoError::ShortBuffer {
                needed: 32,
                got: 31
            })
        ));
    }
}
