//! Raw frames: [`SourceSpec`] parses a source's name (`testsrc[:WxH@FPS]`,
//! `y4m:FILE` or `x11[:DISPLAY][@OUTPUT|+X,Y,WxH]`, the command line's
//! `--source`) and [`Source`] opens it (the [`TestSrc`] pattern or a
//! [`Y4mSource`] file, both I420; an X11 screen, BGRX).

use std::path::PathBuf;

use crate::slot::PixelFormat;
use crate::x11::{X11Area, X11Capture};
use crate::{TestSrc, VideoError, Y4mSource};

/// The frame rate of an X11 source unless `--fps` says otherwise.
pub const X11_DEFAULT_FPS: u32 = 60;

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
    /// An X11 screen: `x11`, `x11:DISPLAY`, with `@OUTPUT` or `+X,Y,WxH`.
    X11 {
        /// The display (`:1`, `host:0.1`); `$DISPLAY` when `None`.
        display: Option<String>,
        /// The part of the screen.
        area: X11Area,
        /// Frames per second.
        fps: u32,
    },
}

impl SourceSpec {
    /// Parses `testsrc`, `testsrc:WxH@FPS` (default 1280x720@30),
    /// `y4m:FILE` or `x11[:DISPLAY][@OUTPUT|+X,Y,WxH]` (a display number
    /// alone, `x11:1`, means `:1`; 60 fps). A test-pattern geometry and a
    /// region's numbers are checked here (see [`TestSrc::new`]); a file or
    /// a display only when opened.
    ///
    /// # Errors
    /// [`VideoError::BadSource`] naming what is wrong, or the geometry error.
    // r[impl video.source.spec]
    pub fn parse(spec: &str) -> Result<Self, VideoError> {
        if spec == "x11" || ["x11:", "x11@", "x11+"].iter().any(|p| spec.starts_with(p)) {
            return parse_x11(spec);
        }
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

    /// The same source at `fps` frames per second (the command line's
    /// `--fps`): the test pattern's and the screen's rate.
    ///
    /// # Errors
    /// [`VideoError::BadSource`] for a rate of 0 or above 240, or a Y4M
    /// file (it plays at the rate it declares).
    pub fn with_fps(self, rate: u32) -> Result<Self, VideoError> {
        let bad = |reason: &str| VideoError::BadSource {
            spec: format!("--fps {rate}"),
            reason: reason.into(),
        };
        if !(1..=240).contains(&rate) {
            return Err(bad("the frame rate must be 1 to 240"));
        }
        match self {
            SourceSpec::TestSrc { width, height, .. } => {
                TestSrc::new(width, height, rate)?;
                Ok(SourceSpec::TestSrc {
                    width,
                    height,
                    fps: rate,
                })
            }
            SourceSpec::X11 { display, area, .. } => Ok(SourceSpec::X11 {
                display,
                area,
                fps: rate,
            }),
            SourceSpec::Y4m(_) => Err(bad("a Y4M file plays at the rate it declares")),
        }
    }
}

/// `x11`, `x11:DISPLAY`, `x11:DISPLAY@OUTPUT`, `x11:DISPLAY+X,Y,WxH` (the
/// display may be left out before `@` or `+`).
fn parse_x11(spec: &str) -> Result<SourceSpec, VideoError> {
    let bad = |reason: String| VideoError::BadSource {
        spec: spec.into(),
        reason,
    };
    let rest = spec.strip_prefix("x11").unwrap_or_default();
    let rest = rest.strip_prefix(':').unwrap_or(rest);
    let (display, area) = if let Some((d, out)) = rest.split_once('@') {
        if out.is_empty() {
            return Err(bad("@ needs an output name (x11@HDMI-1)".into()));
        }
        (d, X11Area::Output(out.into()))
    } else if let Some((d, region)) = rest.split_once('+') {
        let parsed = (|| {
            let (x, rest) = region.split_once(',')?;
            let (y, size) = rest.split_once(',')?;
            let (w, h) = size.split_once('x')?;
            Some((
                x.parse().ok()?,
                y.parse().ok()?,
                w.parse().ok()?,
                h.parse().ok()?,
            ))
        })();
        let Some((x, y, width, height)) = parsed else {
            return Err(bad(format!(
                "region {region:?} is not X,Y,WxH (for example +0,0,1280x720)"
            )));
        };
        if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
            return Err(bad(format!(
                "region {width}x{height}: width and height must be even and non-zero"
            )));
        }
        (
            d,
            X11Area::Region {
                x,
                y,
                width,
                height,
            },
        )
    } else {
        (rest, X11Area::Screen)
    };
    let display = match display {
        "" => None,
        d if d.bytes().all(|b| b.is_ascii_digit() || b == b'.') => Some(format!(":{d}")),
        d => Some(d.to_string()),
    };
    Ok(SourceSpec::X11 {
        display,
        area,
        fps: X11_DEFAULT_FPS,
    })
}

/// An open source of raw frames: the test pattern or a Y4M file (I420),
/// or an X11 screen (BGRX).
#[derive(Debug)]
pub enum Source {
    /// The test pattern; the next frame's index.
    TestSrc(TestSrc, u64),
    /// A Y4M file.
    Y4m(Y4mSource),
    /// An X11 screen; its rate and the next frame's number.
    X11(Box<X11Capture>, u32, u64),
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
            SourceSpec::X11 { display, area, fps } => Source::X11(
                Box::new(X11Capture::open(display.as_deref(), area)?),
                *fps,
                0,
            ),
        })
    }

    /// The pixel format of the frames [`next_frame`](Self::next_frame)
    /// writes.
    pub fn pixel_format(&self) -> PixelFormat {
        match self {
            Source::TestSrc(..) | Source::Y4m(_) => PixelFormat::I420,
            Source::X11(..) => PixelFormat::Bgrx,
        }
    }

    /// Whether the source shows a live screen rather than the host's own
    /// pictures: its capture index numbers the frames captured, and the
    /// pictures carry no index of the host's.
    pub fn is_live(&self) -> bool {
        matches!(self, Source::X11(..))
    }

    /// Whether the next frame may differ from the last one: always for
    /// the test pattern and a file; for a screen, what XDamage and the
    /// pointer say ([`X11Capture::changed`]).
    ///
    /// # Errors
    /// As [`X11Capture::changed`].
    pub fn changed(&mut self) -> Result<bool, VideoError> {
        match self {
            Source::X11(x, ..) => x.changed(),
            _ => Ok(true),
        }
    }

    /// How frames get from the source into the buffer, for the host's
    /// summary.
    pub fn path(&self) -> String {
        match self {
            Source::TestSrc(..) => "rendered in place".into(),
            Source::Y4m(_) => "read from the file".into(),
            Source::X11(x, ..) => x.path(),
        }
    }

    /// Picture width in pixels.
    pub fn width(&self) -> usize {
        match self {
            Source::TestSrc(t, _) => t.width(),
            Source::Y4m(y) => y.width(),
            Source::X11(x, ..) => x.width(),
        }
    }

    /// Picture height in pixels.
    pub fn height(&self) -> usize {
        match self {
            Source::TestSrc(t, _) => t.height(),
            Source::Y4m(y) => y.height(),
            Source::X11(x, ..) => x.height(),
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
            Source::X11(_, fps, _) => *fps,
        }
    }

    /// Bytes in one frame in the source's [`pixel_format`](Self::pixel_format),
    /// rows packed.
    pub fn frame_len(&self) -> usize {
        self.pixel_format().picture_len(self.width(), self.height())
    }

    /// Writes the next frame into `out` (exactly [`frame_len`](Self::frame_len)
    /// bytes) and returns its capture index (the index burned into a test
    /// pattern; the frame's position in the stream for a file or a screen),
    /// or `None` when a non-looping file has ended.
    ///
    /// # Errors
    /// As [`TestSrc::render`], [`Y4mSource::next_frame`] and
    /// [`X11Capture::capture`].
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
            Source::X11(x, _, next) => {
                x.capture(out)?;
                *next += 1;
                Ok(Some(*next - 1))
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
        assert_eq!(
            SourceSpec::parse("x11").unwrap(),
            SourceSpec::X11 {
                display: None,
                area: X11Area::Screen,
                fps: 60
            }
        );
        assert_eq!(
            SourceSpec::parse("x11:1").unwrap(),
            SourceSpec::parse("x11::1").unwrap()
        );
        assert_eq!(
            SourceSpec::parse("x11@DP-1").unwrap(),
            SourceSpec::X11 {
                display: None,
                area: X11Area::Output("DP-1".into()),
                fps: 60
            }
        );
        assert_eq!(
            SourceSpec::parse("x11+0,0,64x64").unwrap(),
            SourceSpec::parse("x11:+0,0,64x64").unwrap()
        );
        assert_eq!(
            SourceSpec::parse("x11:host:0.1@HDMI-1").unwrap(),
            SourceSpec::X11 {
                display: Some("host:0.1".into()),
                area: X11Area::Output("HDMI-1".into()),
                fps: 60
            }
        );
        assert_eq!(
            SourceSpec::parse("x11:+8,4,640x360").unwrap(),
            SourceSpec::X11 {
                display: None,
                area: X11Area::Region {
                    x: 8,
                    y: 4,
                    width: 640,
                    height: 360
                },
                fps: 60
            }
        );
        assert_eq!(
            SourceSpec::parse("x11:2").unwrap().with_fps(30).unwrap(),
            SourceSpec::X11 {
                display: Some(":2".into()),
                area: X11Area::Screen,
                fps: 30
            }
        );
        assert_eq!(
            SourceSpec::parse("testsrc").unwrap().with_fps(50).unwrap(),
            SourceSpec::TestSrc {
                width: 1280,
                height: 720,
                fps: 50
            }
        );
        for (spec, fps) in [("y4m:a.y4m", 30), ("x11", 0), ("testsrc", 241)] {
            let e = SourceSpec::parse(spec).unwrap().with_fps(fps).unwrap_err();
            assert!(
                matches!(e, VideoError::BadSource { .. }),
                "{spec} {fps}: {e}"
            );
        }
        for bad in [
            "x11@",
            "x11:+1,2,3",
            "x11:+1,2,641x360",
            "x11:+0,0,0x360",
            "x11:+a,0,640x360",
            "x11x",
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
