//! Raw I420 frames from a Y4M (YUV4MPEG2) file, read with the `y4m` crate.
//!
//! Only 8-bit 4:2:0 files are accepted (`C420`, `C420jpeg`, `C420paldv`,
//! `C420mpeg2`, or no `C` tag), with even width and height up to 4096.
//! Other colour spaces, a file that is not Y4M, a file without frames and a
//! file that ends inside a frame are each a named error.
//!
//! At the end of the file the source either ends ([`Y4mSource::next_frame`]
//! returns `Ok(false)`) or, opened with `looping`, starts again at the first
//! frame. A truncated last frame is an error in both modes, found when it is
//! reached.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{MAX_DIMENSION, VideoError, check_geometry, i420_len};

/// The longest header line we read before deciding it is not Y4M.
const MAX_HEADER: usize = 1024;

/// A reader that counts the bytes it hands out.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

type Reader = Counting<io::Chain<io::Cursor<Vec<u8>>, BufReader<File>>>;

/// A Y4M file as a source of I420 frames.
pub struct Y4mSource {
    path: PathBuf,
    looping: bool,
    decoder: y4m::Decoder<Reader>,
    /// Bytes the decoder has read from the file.
    pos: Arc<AtomicU64>,
    width: usize,
    height: usize,
    fps: (usize, usize),
    /// Frames read since the last (re)start of the file.
    frames_in_pass: u64,
    /// Frames read in total.
    frames: u64,
}

impl std::fmt::Debug for Y4mSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Y4mSource")
            .field("path", &self.path)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("fps", &self.fps)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> VideoError + '_ {
    move |source| VideoError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads the header line and checks what the `y4m` crate does not (sizes
/// that would overflow or allocate without bound), then hands the header
/// back in front of the rest of the file.
fn open_decoder(
    path: &Path,
) -> Result<(y4m::Decoder<Reader>, Arc<AtomicU64>, usize, usize), VideoError> {
    let not_y4m = |reason: &str| VideoError::NotY4m {
        path: path.to_owned(),
        reason: reason.into(),
    };
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = BufReader::new(file);
    let mut header = Vec::new();
    (&mut reader)
        .take(MAX_HEADER as u64)
        .read_until(b'\n', &mut header)
        .map_err(io_err(path))?;
    if !header.starts_with(b"YUV4MPEG2 ") {
        return Err(not_y4m("it does not start with \"YUV4MPEG2 \""));
    }
    if header.last() != Some(&b'\n') {
        return Err(not_y4m("the header line does not end within 1024 bytes"));
    }
    let mut dims = [None, None];
    for field in header[10..header.len() - 1].split(|&b| b == b' ') {
        let slot = match field.first() {
            Some(b'W') => 0,
            Some(b'H') => 1,
            _ => continue,
        };
        let v = std::str::from_utf8(&field[1..])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&v| v <= MAX_DIMENSION)
            .ok_or_else(|| not_y4m("width or height is not a number up to 4096"))?;
        dims[slot] = Some(v);
    }
    let [Some(w), Some(h)] = dims else {
        return Err(not_y4m("the header has no width (W) or height (H)"));
    };
    check_geometry(w, h)?;
    let count = Arc::new(AtomicU64::new(0));
    let reader = Counting {
        inner: io::Cursor::new(header).chain(reader),
        count: Arc::clone(&count),
    };
    let limits = y4m::Limits {
        bytes: i420_len(MAX_DIMENSION, MAX_DIMENSION),
    };
    let decoder = y4m::Decoder::new_with_limits(reader, limits).map_err(|e| match e {
        y4m::Error::UnknownColorspace => VideoError::Y4mColorspace {
            path: path.to_owned(),
            colorspace: "(unknown)".into(),
        },
        y4m::Error::IoError(source) => VideoError::Io {
            path: path.to_owned(),
            source,
        },
        other => not_y4m(&other.to_string()),
    })?;
    // r[impl video.y4m.colorspace]
    match decoder.get_colorspace() {
        y4m::Colorspace::C420
        | y4m::Colorspace::C420jpeg
        | y4m::Colorspace::C420paldv
        | y4m::Colorspace::C420mpeg2 => {}
        other => {
            return Err(VideoError::Y4mColorspace {
                path: path.to_owned(),
                colorspace: format!("{other:?}"),
            });
        }
    }
    Ok((decoder, count, w, h))
}

impl Y4mSource {
    /// Opens a Y4M file. With `looping`, the file starts again at its first
    /// frame when it ends; otherwise [`next_frame`](Self::next_frame)
    /// returns `Ok(false)` at the end.
    ///
    /// # Errors
    /// [`VideoError::Io`] if the file cannot be opened,
    /// [`VideoError::NotY4m`] for another format or a bad header,
    /// [`VideoError::Y4mColorspace`] for anything but 8-bit 4:2:0,
    /// [`VideoError::BadGeometry`] for odd sizes.
    // r[impl video.y4m.reject]
    pub fn open(path: impl AsRef<Path>, looping: bool) -> Result<Self, VideoError> {
        let path = path.as_ref();
        let (decoder, pos, width, height) = open_decoder(path)?;
        let rate = decoder.get_framerate();
        if rate.num == 0 || rate.den == 0 {
            return Err(VideoError::NotY4m {
                path: path.to_owned(),
                reason: format!("frame rate {}:{} is not a rate", rate.num, rate.den),
            });
        }
        Ok(Y4mSource {
            path: path.to_owned(),
            looping,
            decoder,
            pos,
            width,
            height,
            fps: (rate.num, rate.den),
            frames_in_pass: 0,
            frames: 0,
        })
    }

    /// Picture width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Picture height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The file's frame rate as numerator / denominator frames per second
    /// (both non-zero; 25:1 if the header has none).
    pub fn fps(&self) -> (usize, usize) {
        self.fps
    }

    /// Bytes in one I420 frame.
    pub fn frame_len(&self) -> usize {
        i420_len(self.width, self.height)
    }

    /// Frames read so far (over all passes when looping).
    pub fn frames_read(&self) -> u64 {
        self.frames
    }

    /// Reads the next frame as I420 into `out` (exactly
    /// [`frame_len`](Self::frame_len) bytes, e.g. a shared-memory slot).
    /// Returns `Ok(false)` at the end of a file opened without `looping`.
    ///
    /// # Errors
    /// [`VideoError::FrameSize`] for a wrong `out`,
    /// [`VideoError::Y4mTruncated`] if the file ends inside a frame,
    /// [`VideoError::Y4mEmpty`] if it has no frame at all,
    /// [`VideoError::NotY4m`] for a damaged frame header,
    /// [`VideoError::Io`] for a read error.
    // r[impl video.y4m.frames]
    pub fn next_frame(&mut self, out: &mut [u8]) -> Result<bool, VideoError> {
        crate::check_frame_len(self.width, self.height, out.len())?;
        for attempt in 0..2 {
            let start = self.decoder_pos();
            match self.decoder.read_frame() {
                Ok(frame) => {
                    let (y, u, v) = (
                        frame.get_y_plane(),
                        frame.get_u_plane(),
                        frame.get_v_plane(),
                    );
                    let (yl, cl) = (y.len(), u.len());
                    out[..yl].copy_from_slice(y);
                    out[yl..yl + cl].copy_from_slice(u);
                    out[yl + cl..].copy_from_slice(v);
                    self.frames_in_pass += 1;
                    self.frames += 1;
                    return Ok(true);
                }
                Err(y4m::Error::EOF) => {
                    if self.decoder_pos() != start {
                        return Err(VideoError::Y4mTruncated {
                            path: self.path.clone(),
                            frame: self.frames_in_pass,
                        });
                    }
                    if self.frames_in_pass == 0 {
                        return Err(VideoError::Y4mEmpty {
                            path: self.path.clone(),
                        });
                    }
                    if !self.looping || attempt == 1 {
                        return Ok(false);
                    }
                    let (decoder, pos, _, _) = open_decoder(&self.path)?;
                    self.decoder = decoder;
                    self.pos = pos;
                    self.frames_in_pass = 0;
                }
                Err(y4m::Error::IoError(source)) => {
                    return Err(VideoError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
                Err(other) => {
                    return Err(VideoError::NotY4m {
                        path: self.path.clone(),
                        reason: format!("frame {}: {other}", self.frames_in_pass),
                    });
                }
            }
        }
        Ok(false)
    }

    fn decoder_pos(&self) -> u64 {
        self.pos.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Writes a Y4M file with `frames` frames of `w`x`h`, frame `i` filled
    /// with luma `i`, U `100 + i`, V `200 - i`.
    fn write_y4m(path: &Path, header: &str, w: usize, h: usize, frames: usize) {
        let mut f = File::create(path).unwrap();
        writeln!(f, "{header}").unwrap();
        for i in 0..frames {
            f.write_all(b"FRAME\n").unwrap();
            f.write_all(&vec![i as u8; w * h]).unwrap();
            f.write_all(&vec![100 + i as u8; w * h / 4]).unwrap();
            f.write_all(&vec![200 - i as u8; w * h / 4]).unwrap();
        }
    }

    // r[verify video.y4m.frames]
    #[test]
    fn frames_are_read_as_i420_and_the_file_ends_or_loops() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.y4m");
        write_y4m(&p, "YUV4MPEG2 W16 H8 F30:1 Ip A1:1 C420jpeg", 16, 8, 3);
        let mut s = Y4mSource::open(&p, false).unwrap();
        assert_eq!(
            (s.width(), s.height(), s.fps(), s.frame_len()),
            (16, 8, (30, 1), 192)
        );
        let mut out = vec![0u8; 192];
        for i in 0..3u8 {
            assert!(s.next_frame(&mut out).unwrap());
            assert!(out[..128].iter().all(|&v| v == i));
            assert!(out[128..160].iter().all(|&v| v == 100 + i));
            assert!(out[160..].iter().all(|&v| v == 200 - i));
        }
        assert!(!s.next_frame(&mut out).unwrap(), "ends at EOF");
        assert!(!s.next_frame(&mut out).unwrap(), "and stays ended");
        assert_eq!(s.frames_read(), 3);

        let mut l = Y4mSource::open(&p, true).unwrap();
        let mut seen = Vec::new();
        for _ in 0..7 {
            assert!(l.next_frame(&mut out).unwrap());
            seen.push(out[0]);
        }
        assert_eq!(seen, [0, 1, 2, 0, 1, 2, 0], "loops back to the first frame");
        // No colour space tag means 4:2:0.
        let p2 = dir.path().join("b.y4m");
        write_y4m(&p2, "YUV4MPEG2 W16 H8 F25:1", 16, 8, 1);
        let mut s = Y4mSource::open(&p2, false).unwrap();
        assert!(s.next_frame(&mut out).unwrap());
        assert!(matches!(
            s.next_frame(&mut out[1..]),
            Err(VideoError::FrameSize { .. })
        ));
    }

    // r[verify video.y4m.reject]
    #[test]
    fn not_y4m_truncated_empty_and_odd_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        let mut out = vec![0u8; 192];

        // Truncated inside the second frame's data, and inside its header.
        write_y4m(&path("t.y4m"), "YUV4MPEG2 W16 H8 F30:1 C420", 16, 8, 2);
        let full = std::fs::read(path("t.y4m")).unwrap();
        for cut in [full.len() - 1, full.len() - 150, full.len() - 192 - 3] {
            std::fs::write(path("t.y4m"), &full[..cut]).unwrap();
            for looping in [false, true] {
                let mut s = Y4mSource::open(path("t.y4m"), looping).unwrap();
                assert!(s.next_frame(&mut out).unwrap());
                let e = s.next_frame(&mut out).unwrap_err();
                assert!(
                    matches!(e, VideoError::Y4mTruncated { frame: 1, .. }),
                    "cut {cut}: {e}"
                );
                assert!(e.to_string().contains("truncated"));
            }
        }
        // Header only: no frames.
        std::fs::write(path("e.y4m"), b"YUV4MPEG2 W16 H8 F30:1 C420\n").unwrap();
        let mut s = Y4mSource::open(path("e.y4m"), true).unwrap();
        assert!(matches!(
            s.next_frame(&mut out),
            Err(VideoError::Y4mEmpty { .. })
        ));

        // Not Y4M at all, empty, binary, a header that never ends.
        std::fs::write(path("n.y4m"), b"\x89PNG\r\n\x1a\n....").unwrap();
        std::fs::write(path("z.y4m"), b"").unwrap();
        std::fs::write(path("l.y4m"), [b'Y'; 5000]).unwrap();
        let mut long = b"YUV4MPEG2 ".to_vec();
        long.extend([b'X'; 2000]);
        std::fs::write(path("h.y4m"), long).unwrap();
        for n in ["n.y4m", "z.y4m", "l.y4m", "h.y4m"] {
            let e = Y4mSource::open(path(n), false).unwrap_err();
            assert!(matches!(e, VideoError::NotY4m { .. }), "{n}: {e}");
        }
        // Absurd or missing sizes: refused before any allocation.
        for header in [
            "YUV4MPEG2 W99999999999999999999 H8",
            "YUV4MPEG2 W100000 H100000",
            "YUV4MPEG2 H8 F30:1",
            "YUV4MPEG2 Wabc H8",
            "YUV4MPEG2 W16 H8 F0:1",
            "YUV4MPEG2 W16 H8 F30:0",
            "YUV4MPEG2 W16 H8 F30",
        ] {
            std::fs::write(path("s.y4m"), format!("{header}\n")).unwrap();
            let e = Y4mSource::open(path("s.y4m"), false).unwrap_err();
            assert!(matches!(e, VideoError::NotY4m { .. }), "{header}: {e}");
        }
        // Odd sizes cannot be I420 for the encoder.
        write_y4m(&path("o.y4m"), "YUV4MPEG2 W15 H8 C420", 16, 8, 1);
        assert!(matches!(
            Y4mSource::open(path("o.y4m"), false),
            Err(VideoError::BadGeometry { .. })
        ));
        // A missing file is an I/O error naming the file.
        let e = Y4mSource::open(path("missing.y4m"), false).unwrap_err();
        assert!(matches!(e, VideoError::Io { .. }) && e.to_string().contains("missing.y4m"));
        // A damaged frame marker.
        std::fs::write(path("d.y4m"), b"YUV4MPEG2 W16 H8 C420\nFRAMX\n").unwrap();
        let mut s = Y4mSource::open(path("d.y4m"), false).unwrap();
        assert!(matches!(
            s.next_frame(&mut out),
            Err(VideoError::NotY4m { .. })
        ));
    }

    // r[verify video.y4m.colorspace]
    #[test]
    fn other_colour_spaces_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for cs in ["C444", "C422", "Cmono", "C420p10", "Cweird"] {
            let p = dir.path().join("c.y4m");
            std::fs::write(&p, format!("YUV4MPEG2 W16 H8 F30:1 {cs}\nFRAME\n")).unwrap();
            let e = Y4mSource::open(&p, false).unwrap_err();
            assert!(matches!(e, VideoError::Y4mColorspace { .. }), "{cs}: {e}");
            assert!(e.to_string().contains("4:2:0"));
        }
    }
}
