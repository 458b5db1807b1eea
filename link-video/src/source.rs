//! Raw I420 frames: [`SourceSpec`] parses a source's name
//! (`testsrc[:WxH@FPS]` or `y4m:FILE`, the command line's `--source`) and
//! [`Source`] opens it (the [`TestSrc`] pattern or a [`Y4mSource`] file).
//! An X11 source is to be added beside them.

use std::path::PathBuf;

use crate::{TestSrc, VideoError, Y4mSource, i420_len};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_can_move_to_other_threads() {
        fn send<T: Send>() {}
        send::<TestSrc>();
        send::<Y4mSource>();
        send::<Source>();
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
            assert_eq!(crate::index::read_index(&f[..640 * 360], 640, 360), Some(i));
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
