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
//! | 32 | 4 | pixel format: `I420` or `BGRX` (FourCC) |
//! | 36 | 4 | row stride of a packed format in bytes (0 for I420) |
//! | 40 | 4 | flags: bit 0 = the picture was written straight into the slot by a third party (an X server through MIT-SHM), not copied by the capture process |
//! | 44 | 4 | reserved, 0 |
//!
//! The picture follows. I420: the Y plane (`width * height` bytes), then
//! U and V (`width/2 * height/2` each), rows packed. BGRX: `height` rows of
//! `stride` bytes, four bytes a pixel (blue, green, red, unused), as an X
//! server's 24-bit TrueColor `ZPixmap` image is laid out on a
//! little-endian machine; the encoder process converts it to I420.

use crate::{VideoError, i420_len};

/// Length of the header in front of each captured picture.
pub const HEADER_LEN: usize = 48;
/// Header flag: a third party (the X server, MIT-SHM) wrote the picture
/// into the slot itself; the capture process copied nothing.
pub const FLAG_LENT: u32 = 1;

/// The layout of the picture behind a slot header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Planar 4:2:0, the encoder's input: a source that makes I420 itself
    /// (the test pattern, a Y4M file).
    I420,
    /// Packed 32-bit blue, green, red, unused: an X11 screen capture.
    Bgrx,
}

impl PixelFormat {
    /// The format's FourCC in the slot header.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::I420 => *b"I420",
            PixelFormat::Bgrx => *b"BGRX",
        }
    }

    /// The format a FourCC names, if known.
    pub fn from_fourcc(f: [u8; 4]) -> Option<Self> {
        match &f {
            b"I420" => Some(PixelFormat::I420),
            b"BGRX" => Some(PixelFormat::Bgrx),
            _ => None,
        }
    }

    /// Bytes of one picture of `width` x `height` in this format with
    /// packed rows (the stride a capture writes).
    pub fn picture_len(self, width: usize, height: usize) -> usize {
        match self {
            PixelFormat::I420 => i420_len(width, height),
            PixelFormat::Bgrx => width * height * 4,
        }
    }

    /// The row stride in bytes of a packed picture `width` pixels wide
    /// (0 for a planar format).
    pub fn packed_stride(self, width: usize) -> usize {
        match self {
            PixelFormat::I420 => 0,
            PixelFormat::Bgrx => width * 4,
        }
    }
}
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
    /// The picture's pixel format.
    pub format: PixelFormat,
    /// Row stride in bytes of a packed format (0 for I420).
    pub stride: u32,
    /// Flags ([`FLAG_LENT`]).
    pub flags: u32,
}

/// The slot length for a picture of `width` x `height` in `format` with
/// packed rows: header and picture.
pub fn slot_len(format: PixelFormat, width: usize, height: usize) -> usize {
    HEADER_LEN + format.picture_len(width, height)
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
        h[32..36].copy_from_slice(&self.format.fourcc());
        h[36..40].copy_from_slice(&self.stride.to_le_bytes());
        h[40..44].copy_from_slice(&self.flags.to_le_bytes());
        h[44..48].fill(0);
        Ok(())
    }

    /// Parses a slot: the header and the picture behind it, checked to be
    /// exactly one picture of the header's size, format and stride.
    ///
    /// # Errors
    /// [`VideoError::BadSlot`] for a slot shorter than the header, another
    /// magic, an unknown pixel format, a zero size, an odd size for I420, a
    /// stride that does not fit the format or a picture of another length.
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
        let fourcc = [h[32], h[33], h[34], h[35]];
        let Some(format) = PixelFormat::from_fourcc(fourcc) else {
            return Err(bad(format!(
                "pixel format {fourcc:02x?}, expected I420 or BGRX"
            )));
        };
        let hdr = FrameHeader {
            width: u16_at(4),
            height: u16_at(6),
            index: u64_at(8),
            capture_us: u64_at(16),
            dropped: u32_at(24),
            fps_milli: u32_at(28),
            format,
            stride: u32_at(36),
            flags: u32_at(40),
        };
        let (w, hgt) = (hdr.width as usize, hdr.height as usize);
        let want = match format {
            PixelFormat::I420 if hdr.stride != 0 => {
                return Err(bad(format!("I420 with a stride of {}", hdr.stride)));
            }
            PixelFormat::I420 if w % 2 == 1 || hgt % 2 == 1 => {
                return Err(bad(format!("I420 of odd size {w}x{hgt}")));
            }
            PixelFormat::I420 => i420_len(w, hgt),
            PixelFormat::Bgrx if (hdr.stride as usize) < w * 4 || !hdr.stride.is_multiple_of(4) => {
                return Err(bad(format!(
                    "BGRX {w} pixels wide with a stride of {} bytes",
                    hdr.stride
                )));
            }
            PixelFormat::Bgrx => hdr.stride as usize * hgt,
        };
        if w == 0 || hgt == 0 || picture.len() != want {
            return Err(bad(format!(
                "{w}x{hgt} {format:?} with {} picture bytes, expected {want}",
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
            format: PixelFormat::I420,
            stride: 0,
            flags: 0,
        };
        let mut slot = vec![0xAAu8; slot_len(PixelFormat::I420, 640, 360)];
        h.write(&mut slot).unwrap();
        assert_eq!(&slot[0..4], b"LSCF");
        assert_eq!(&slot[4..6], &640u16.to_le_bytes());
        assert_eq!(&slot[6..8], &360u16.to_le_bytes());
        assert_eq!(&slot[8..16], &(1u64 << 40).to_le_bytes());
        assert_eq!(&slot[16..24], &123_456_789u64.to_le_bytes());
        assert_eq!(&slot[24..28], &3u32.to_le_bytes());
        assert_eq!(&slot[28..32], &30_000u32.to_le_bytes());
        assert_eq!(&slot[32..36], b"I420");
        assert_eq!(&slot[36..48], &[0; 12]);
        assert_eq!(slot[48], 0xAA, "the picture is untouched");
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
            h.write(&mut [0u8; 47]),
            Err(VideoError::ShortBuffer {
                needed: 48,
                got: 47
            })
        ));
    }

    // r[verify video.slot.layout]
    #[test]
    fn a_bgrx_slot_carries_its_format_and_stride_and_inconsistent_ones_are_refused() {
        let h = FrameHeader {
            width: 6,
            height: 3,
            index: 9,
            capture_us: 1,
            dropped: 0,
            fps_milli: 60_000,
            format: PixelFormat::Bgrx,
            stride: 24,
            flags: FLAG_LENT,
        };
        let mut slot = vec![7u8; slot_len(PixelFormat::Bgrx, 6, 3)];
        assert_eq!(slot.len(), HEADER_LEN + 6 * 3 * 4);
        h.write(&mut slot).unwrap();
        assert_eq!(&slot[32..36], b"BGRX");
        assert_eq!(&slot[36..40], &24u32.to_le_bytes());
        assert_eq!(&slot[40..44], &1u32.to_le_bytes());
        let (got, pic) = FrameHeader::parse(&slot).unwrap();
        assert_eq!(got, h);
        assert_eq!(pic.len(), 72);
        let refused = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut s = slot.clone();
            f(&mut s);
            let e = FrameHeader::parse(&s).unwrap_err();
            assert!(matches!(e, VideoError::BadSlot { .. }), "{e}");
            e.to_string()
        };
        assert!(refused(&|s| s[32..36].copy_from_slice(b"NV12")).contains("pixel format"));
        // A stride shorter than a row, or not whole pixels.
        refused(&|s| s[36..40].copy_from_slice(&20u32.to_le_bytes()));
        refused(&|s| s[36..40].copy_from_slice(&26u32.to_le_bytes()));
        // A longer stride needs that many bytes.
        refused(&|s| s[36..40].copy_from_slice(&32u32.to_le_bytes()));
        let mut wide = slot.clone();
        wide[36..40].copy_from_slice(&32u32.to_le_bytes());
        wide.resize(HEADER_LEN + 32 * 3, 0);
        assert_eq!(FrameHeader::parse(&wide).unwrap().0.stride, 32);
        // I420 claims: a stride, or an odd size.
        refused(&|s| s[32..36].copy_from_slice(b"I420"));
        let mut odd = vec![0u8; HEADER_LEN + i420_len(6, 4)];
        FrameHeader {
            height: 4,
            format: PixelFormat::I420,
            stride: 0,
            ..h
        }
        .write(&mut odd)
        .unwrap();
        assert!(FrameHeader::parse(&odd).is_ok());
        odd[4..6].copy_from_slice(&5u16.to_le_bytes());
        assert!(FrameHeader::parse(&odd).is_err());
    }
}
