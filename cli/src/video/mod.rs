//! Video for the linkstream command line: everything that knows about
//! pictures and codecs (the session and the links do not).
//!
//! - [`envelope`]: the 48-byte header in front of each access unit
//!   (VIDEO-CONTRACT.md section 1).
//! - [`testsrc`]: the moving I420 test pattern with the frame index burned in
//!   as a row of blocks, and the reader for that code (section 2).
//! - [`y4m`]: raw I420 frames from a Y4M file.
//! - [`codec`]: H.264 through OpenH264 (low-latency encoder, decoder).
//! - [`quality`]: PSNR between two I420 pictures.
//!
//! [`SourceSpec`] parses the `--source` argument (`testsrc[:WxH@FPS]` or
//! `y4m:FILE`). All fallible operations return [`VideoError`].
//!
//! Frames are I420 throughout: the Y plane (`width * height` bytes), then U
//! and V (`width/2 * height/2` bytes each), rows packed without padding;
//! width and height are even.

pub mod codec;
pub mod envelope;
pub mod quality;
pub mod testsrc;
pub mod y4m;

use std::fmt;
use std::path::PathBuf;

pub use codec::{DecodedFrame, Decoder, Encoder};
pub use envelope::{Codec, HEADER_LEN, VideoHeader, now_us};
pub use quality::{psnr_y, psnr_yuv};
pub use testsrc::TestSrc;
pub use y4m::Y4mSource;

/// Largest width or height accepted anywhere in this module (pictures must
/// fit the envelope's u16 fields; OpenH264 stops at 3840x2160 anyway).
pub const MAX_DIMENSION: usize = 4096;

/// Length in bytes of one I420 frame of `width` x `height` (both even).
pub fn i420_len(width: usize, height: usize) -> usize {
    width * height + 2 * ((width / 2) * (height / 2))
}

/// Checks that `width` x `height` is a usable I420 geometry: both even,
/// non-zero, at most [`MAX_DIMENSION`].
pub(crate) fn check_geometry(width: usize, height: usize) -> Result<(), VideoError> {
    let reason = if width == 0 || height == 0 {
        "width and height must be non-zero"
    } else if !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        "width and height must be even (I420)"
    } else if width > MAX_DIMENSION || height > MAX_DIMENSION {
        "width and height must be at most 4096"
    } else {
        return Ok(());
    };
    Err(VideoError::BadGeometry {
        width,
        height,
        reason,
    })
}

/// Checks that a frame buffer has exactly the I420 length of the geometry.
pub(crate) fn check_frame_len(width: usize, height: usize, got: usize) -> Result<(), VideoError> {
    let expected = i420_len(width, height);
    if got != expected {
        return Err(VideoError::FrameSize { expected, got });
    }
    Ok(())
}

/// Where raw frames come from: the `--source` argument.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// The test pattern: `testsrc` or `testsrc:WxH@FPS`.
    TestSrc {
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
        /// Frames per second.
        fps: u32,
    },
    /// A Y4M file: `y4m:FILE`.
    Y4m(PathBuf),
}

impl SourceSpec {
    /// Parses `testsrc`, `testsrc:WxH@FPS` (default 1280x720@30) or
    /// `y4m:FILE`. A test-pattern geometry is checked here (see
    /// [`TestSrc::new`]); a Y4M file is only checked when opened.
    ///
    /// # Errors
    /// [`VideoError::BadSource`] naming what is wrong, or the geometry error.
    // r[impl video.source.spec]
    pub fn parse(spec: &str) -> Result<Self, VideoError> {
        if let Some(path) = spec.strip_prefix("y4m:") {
            if path.is_empty() {
                return Err(VideoError::BadSource {
                    spec: spec.into(),
                    reason: "y4m: needs a file name (y4m:FILE)".into(),
                });
            }
            return Ok(SourceSpec::Y4m(PathBuf::from(path)));
        }
        let t = TestSrc::parse(spec)?;
        Ok(SourceSpec::TestSrc {
            width: t.width(),
            height: t.height(),
            fps: t.fps(),
        })
    }
}

/// An open source of raw I420 frames: the test pattern or a Y4M file.
#[derive(Debug)]
pub enum Source {
    /// The test pattern; the next frame's index.
    TestSrc(TestSrc, u64),
    /// A Y4M file.
    Y4m(Y4mSource),
}

impl Source {
    /// Opens the source a [`SourceSpec`] names. A Y4M file loops when
    /// `looping` is set, else the source ends at the end of the file.
    ///
    /// # Errors
    /// As [`TestSrc::new`] and [`Y4mSource::open`].
    pub fn open(spec: &SourceSpec, looping: bool) -> Result<Self, VideoError> {
        Ok(match spec {
            SourceSpec::TestSrc { width, height, fps } => {
                Source::TestSrc(TestSrc::new(*width, *height, *fps)?, 0)
            }
            SourceSpec::Y4m(path) => Source::Y4m(Y4mSource::open(path, looping)?),
        })
    }

    /// Picture width in pixels.
    pub fn width(&self) -> usize {
        match self {
            Source::TestSrc(t, _) => t.width(),
            Source::Y4m(y) => y.width(),
        }
    }

    /// Picture height in pixels.
    pub fn height(&self) -> usize {
        match self {
            Source::TestSrc(t, _) => t.height(),
            Source::Y4m(y) => y.height(),
        }
    }

    /// Frames per second (a Y4M file's rate rounded, at least 1).
    pub fn fps(&self) -> u32 {
        match self {
            Source::TestSrc(t, _) => t.fps(),
            Source::Y4m(y) => {
                let (n, d) = y.fps();
                ((n as f64 / d as f64).round() as u32).clamp(1, 240)
            }
        }
    }

    /// Bytes in one I420 frame.
    pub fn frame_len(&self) -> usize {
        i420_len(self.width(), self.height())
    }

    /// Writes the next frame into `out` (exactly [`frame_len`](Self::frame_len)
    /// bytes) and returns its capture index (the index burned into a test
    /// pattern; the frame's position in the stream for a file), or `None`
    /// when a non-looping file has ended.
    ///
    /// # Errors
    /// As [`TestSrc::render`] and [`Y4mSource::next_frame`].
    pub fn next_frame(&mut self, out: &mut [u8]) -> Result<Option<u64>, VideoError> {
        match self {
            Source::TestSrc(t, next) => {
                t.render(*next, out)?;
                *next += 1;
                Ok(Some(*next - 1))
            }
            Source::Y4m(y) => {
                let index = y.frames_read();
                Ok(y.next_frame(out)?.then_some(index))
            }
        }
    }
}

/// Every error of the video module.
#[derive(Debug)]
#[non_exhaustive]
pub enum VideoError {
    /// An envelope shorter than its 48-byte header.
    ShortEnvelope {
        /// Bytes received.
        len: usize,
    },
    /// An envelope that does not start with `LSV1`.
    BadMagic([u8; 4]),
    /// An envelope with an unknown codec byte.
    BadCodec(u8),
    /// An output buffer too small for what must be written into it.
    ShortBuffer {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// A frame buffer whose length is not the I420 length of the geometry.
    FrameSize {
        /// I420 length of the geometry.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// A picture geometry this module cannot use.
    BadGeometry {
        /// Width asked for.
        width: usize,
        /// Height asked for.
        height: usize,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A `--source` argument that does not parse.
    BadSource {
        /// The argument.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be opened or read.
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file that is not a Y4M file we can read.
    NotY4m {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A Y4M file in another colour space than 8-bit 4:2:0.
    Y4mColorspace {
        /// The file.
        path: PathBuf,
        /// The colour space it declares.
        colorspace: String,
    },
    /// A Y4M file that ends in the middle of a frame.
    Y4mTruncated {
        /// The file.
        path: PathBuf,
        /// Index of the incomplete frame (0-based).
        frame: u64,
    },
    /// A Y4M file without a single frame.
    Y4mEmpty {
        /// The file.
        path: PathBuf,
    },
    /// A bitrate the encoder cannot use.
    BadBitrate {
        /// The bitrate asked for, bits per second.
        bps: u64,
    },
    /// OpenH264 refused to encode.
    Encode(openh264::Error),
    /// OpenH264 could not decode the access unit.
    Decode(openh264::Error),
}

impl fmt::Display for VideoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VideoError::ShortEnvelope { len } => write!(
                f,
                "video envelope of {len} bytes is shorter than its {HEADER_LEN}-byte header"
            ),
            VideoError::BadMagic(m) => {
                write!(f, "video envelope has magic {m:02x?}, expected \"LSV1\"")
            }
            VideoError::BadCodec(c) => write!(f, "video envelope has unknown codec {c}"),
            VideoError::ShortBuffer { needed, got } => {
                write!(f, "buffer of {got} bytes is too small, {needed} needed")
            }
            VideoError::FrameSize { expected, got } => write!(
                f,
                "frame buffer of {got} bytes, an I420 frame of this size is {expected} bytes"
            ),
            VideoError::BadGeometry {
                width,
                height,
                reason,
            } => write!(f, "picture size {width}x{height} refused: {reason}"),
            VideoError::BadSource { spec, reason } => {
                write!(f, "video source {spec:?}: {reason}")
            }
            VideoError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            VideoError::NotY4m { path, reason } => {
                write!(
                    f,
                    "{}: not a Y4M file we can read: {reason}",
                    path.display()
                )
            }
            VideoError::Y4mColorspace { path, colorspace } => write!(
                f,
                "{}: Y4M colour space {colorspace} is not supported (only 8-bit 4:2:0)",
                path.display()
            ),
            VideoError::Y4mTruncated { path, frame } => write!(
                f,
                "{}: Y4M file is truncated (frame {frame} is incomplete)",
                path.display()
            ),
            VideoError::Y4mEmpty { path } => {
                write!(f, "{}: Y4M file has no frames", path.display())
            }
            VideoError::BadBitrate { bps } => write!(
                f,
                "encoder bitrate {bps} bit/s refused (must be between {} and {})",
                codec::MIN_BITRATE_BPS,
                codec::MAX_BITRATE_BPS
            ),
            VideoError::Encode(e) => write!(f, "H.264 encoder error: {e}"),
            VideoError::Decode(e) => write!(f, "H.264 decoder error: {e}"),
        }
    }
}

impl std::error::Error for VideoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VideoError::Io { source, .. } => Some(source),
            VideoError::Encode(e) | VideoError::Decode(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_codecs_can_move_to_other_threads() {
        fn send<T: Send>() {}
        send::<TestSrc>();
        send::<Y4mSource>();
        send::<Encoder>();
        send::<Decoder>();
        send::<VideoError>();
    }

    #[test]
    fn source_yields_testsrc_frames_in_order_and_y4m_frames_until_the_end() {
        let spec = SourceSpec::parse("testsrc:640x360@25").unwrap();
        let mut s = Source::open(&spec, false).unwrap();
        assert_eq!((s.width(), s.height(), s.fps()), (640, 360, 25));
        let mut f = vec![0u8; s.frame_len()];
        for i in 0..3 {
            assert_eq!(s.next_frame(&mut f).unwrap(), Some(i));
            assert_eq!(testsrc::read_index(&f[..640 * 360], 640, 360), Some(i));
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.y4m");
        let mut bytes = b"YUV4MPEG2 W16 H8 F30000:1001 C420\n".to_vec();
        for i in 0..2u8 {
            bytes.extend(b"FRAME\n");
            bytes.extend(std::iter::repeat_n(i, 192));
        }
        std::fs::write(&p, bytes).unwrap();
        let mut s = Source::open(&SourceSpec::Y4m(p.clone()), false).unwrap();
        assert_eq!(s.fps(), 30);
        let mut f = vec![9u8; s.frame_len()];
        assert_eq!(s.next_frame(&mut f).unwrap(), Some(0));
        assert_eq!(s.next_frame(&mut f).unwrap(), Some(1));
        assert!(f.iter().all(|&v| v == 1));
        assert_eq!(s.next_frame(&mut f).unwrap(), None);
        let mut looping = Source::open(&SourceSpec::Y4m(p), true).unwrap();
        let got: Vec<_> = (0..4)
            .map(|_| looping.next_frame(&mut f).unwrap())
            .collect();
        assert_eq!(got, [Some(0), Some(1), Some(2), Some(3)]);
    }

    // r[verify video.source.spec]
    #[test]
    fn source_spec_parses_testsrc_and_y4m() {
        assert_eq!(
            SourceSpec::parse("testsrc").unwrap(),
            SourceSpec::TestSrc {
                width: 1280,
                height: 720,
                fps: 30
            }
        );
        assert_eq!(
            SourceSpec::parse("testsrc:1920x1080@60").unwrap(),
            SourceSpec::TestSrc {
                width: 1920,
                height: 1080,
                fps: 60
            }
        );
        assert_eq!(
            SourceSpec::parse("y4m:/tmp/a b.y4m").unwrap(),
            SourceSpec::Y4m(PathBuf::from("/tmp/a b.y4m"))
        );
        for bad in [
            "y4m:",
            "camera",
            "testsrc:",
            "testsrc:1280x720@",
            "testsrc:1280@30",
            "testsrc:x720@30",
            "testsrc:1281x720@30",
            "testsrc:320x240@30",
            "testsrc:1280x720@0",
            "testsrc:99999999999999999999x720@30",
            "testsrc:1280x720@30x",
        ] {
            let e = SourceSpec::parse(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    VideoError::BadSource { .. } | VideoError::BadGeometry { .. }
                ),
                "{bad}: {e}"
            );
            assert!(!e.to_string().contains('\n'));
        }
    }
}
