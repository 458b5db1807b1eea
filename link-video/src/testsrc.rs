//! The test pattern: a moving I420 picture with the frame index burned in as
//! a row of black and white blocks (the code of [`crate::index`]; chroma in
//! the band is 128 and the band right of the blocks is black).
//!
//! Below the band: a diagonal luma triangle wave scrolling 3 pixels per
//! frame, chroma waves (U scrolling down, V scrolling right), and a
//! checkered box bouncing across the picture. Everything is a function of
//! the index alone, so [`TestSrc::render`] regenerates any frame exactly.

use crate::index::{BLACK, CODE_BLOCKS, MIN_WIDTH, WHITE, block_size, code_bits};
use crate::{VideoError, check_geometry, i420_len};

/// Period in pixels of the background waves.
const PERIOD: usize = 512;
/// Luma triangle wave: 16..=235 and back over `PERIOD` pixels.
fn luma_wave(k: usize) -> u8 {
    let t = k % PERIOD;
    let up = if t < PERIOD / 2 { t } else { PERIOD - 1 - t }; // 0..=255
    (16 + up * 219 / 255) as u8
}
/// Chroma triangle wave: 64..=191.
fn chroma_wave(k: usize) -> u8 {
    let t = k % PERIOD;
    let up = if t < PERIOD / 2 { t } else { PERIOD - 1 - t };
    (64 + up / 2) as u8
}

/// Position bouncing between 0 and `range` (inclusive), even.
fn bounce(t: u64, range: usize) -> usize {
    if range == 0 {
        return 0;
    }
    let period = 2 * range as u64;
    let p = (t % period) as usize;
    let p = if p <= range { p } else { 2 * range - p };
    p & !1
}

/// The test pattern source for one geometry. Holds precomputed rows so that
/// [`render`](Self::render) is a handful of slice copies and fills.
#[derive(Debug, Clone)]
pub struct TestSrc {
    width: usize,
    height: usize,
    fps: u32,
    block: usize,
    /// Luma wave, long enough for any offset in `0..PERIOD` plus a row.
    luma: Vec<u8>,
    /// Chroma wave, long enough for any offset in `0..PERIOD` plus a row.
    chroma: Vec<u8>,
    /// Side of the bouncing box (even).
    box_side: usize,
    /// The box's luma texture, `box_side` rows of `box_side`.
    box_luma: Vec<u8>,
    /// Signed noise (as `i8`) the box's rows take windows of, per frame.
    noise: Vec<i8>,
}

/// U and V of the bouncing box.
const BOX_U: u8 = 90;
/// Length of the noise table.
const NOISE_LEN: usize = 1 << 16;
/// Noise on the box: +-this many luma steps, new every frame, so the
/// encoder cannot predict it from the previous frame and spends bits on it.
const NOISE_AMPLITUDE: i8 = 12;

/// splitmix64: a well-mixed hash of a counter.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
const BOX_V: u8 = 200;

impl TestSrc {
    /// A test pattern of `width` x `height` at `fps` frames per second.
    ///
    /// # Errors
    /// [`VideoError::BadGeometry`] unless width and height are even, width
    /// is at least 384 (the code's block size must be at least 8), height at
    /// least 64 and both at most 4096; [`VideoError::BadSource`] for fps 0 or
    /// above 240.
    // r[impl video.testsrc.geometry]
    pub fn new(width: usize, height: usize, fps: u32) -> Result<Self, VideoError> {
        check_geometry(width, height)?;
        let Some(block) = block_size(width).filter(|_| width >= MIN_WIDTH) else {
            return Err(VideoError::BadGeometry {
                width,
                height,
                reason: "testsrc needs a width of at least 384 (code blocks of 8 pixels)",
            });
        };
        if height < 64 {
            return Err(VideoError::BadGeometry {
                width,
                height,
                reason: "testsrc needs a height of at least 64",
            });
        }
        if fps == 0 || fps > 240 {
            return Err(VideoError::BadSource {
                spec: format!("testsrc:{width}x{height}@{fps}"),
                reason: "frame rate must be 1..=240".into(),
            });
        }
        let luma = (0..PERIOD + width).map(luma_wave).collect();
        let chroma = (0..PERIOD + width / 2).map(chroma_wave).collect();
        let box_side = ((height - block) / 4).min(width / 8) & !1;
        let cell = (box_side / 8).max(2);
        let mut box_luma = Vec::with_capacity(box_side * box_side);
        for y in 0..box_side {
            for x in 0..box_side {
                let on = (x / cell + y / cell).is_multiple_of(2);
                box_luma.push(if on { 200 } else { 60 });
            }
        }
        Ok(TestSrc {
            width,
            height,
            fps,
            block,
            luma,
            chroma,
            box_side,
            box_luma,
            noise: (0..NOISE_LEN as u64)
                .map(|i| (mix(i) % (2 * NOISE_AMPLITUDE as u64 + 1)) as i8 - NOISE_AMPLITUDE)
                .collect(),
        })
    }

    /// Parses `testsrc` (1280x720@30) or `testsrc:WxH@FPS` (`@FPS` may be
    /// left out: 30) and builds the source.
    ///
    /// # Errors
    /// [`VideoError::BadSource`] for another syntax, else as [`TestSrc::new`].
    pub fn parse(spec: &str) -> Result<Self, VideoError> {
        let bad = |reason: &str| VideoError::BadSource {
            spec: spec.into(),
            reason: reason.into(),
        };
        let Some(rest) = spec.strip_prefix("testsrc") else {
            return Err(bad("expected testsrc[:WxH@FPS] or y4m:FILE"));
        };
        if rest.is_empty() {
            return TestSrc::new(1280, 720, 30);
        }
        let Some(geom) = rest.strip_prefix(':') else {
            return Err(bad("expected testsrc[:WxH@FPS]"));
        };
        let (size, fps) = match geom.split_once('@') {
            Some((s, f)) => (s, Some(f)),
            None => (geom, None),
        };
        let (w, h) = size
            .split_once('x')
            .ok_or_else(|| bad("size must be WxH, e.g. 1280x720"))?;
        let num = |s: &str, what: &str| {
            s.parse::<usize>()
                .map_err(|_| bad(&format!("{what} {s:?} is not a number")))
        };
        let (w, h) = (num(w, "width")?, num(h, "height")?);
        let fps = match fps {
            Some(f) => u32::try_from(num(f, "frame rate")?)
                .map_err(|_| bad("frame rate must be 1..=240"))?,
            None => 30,
        };
        TestSrc::new(w, h, fps)
    }

    /// Picture width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Picture height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Frames per second.
    pub fn fps(&self) -> u32 {
        self.fps
    }

    /// Size in pixels of a code block.
    pub fn block(&self) -> usize {
        self.block
    }

    /// Bytes in one I420 frame.
    pub fn frame_len(&self) -> usize {
        i420_len(self.width, self.height)
    }

    /// Renders frame `index` as I420 into `out` (exactly
    /// [`frame_len`](Self::frame_len) bytes, e.g. a shared-memory slot).
    /// Allocates nothing; the same index always gives the same bytes.
    ///
    /// # Errors
    /// [`VideoError::FrameSize`] if `out` has another length.
    // r[impl video.testsrc.code]
    // r[impl video.testsrc.pattern]
    pub fn render(&self, index: u64, out: &mut [u8]) -> Result<(), VideoError> {
        crate::check_frame_len(self.width, self.height, out.len())?;
        let (w, h, b) = (self.width, self.height, self.block);
        let (cw, ch) = (w / 2, h / 2);
        let (y_plane, uv) = out.split_at_mut(w * h);
        let (u_plane, v_plane) = uv.split_at_mut(cw * ch);

        // The code band: one row, copied to the B rows of the band.
        let bits = code_bits(index);
        let (band, rest) = y_plane.split_at_mut(w * b);
        let (first, others) = band.split_at_mut(w);
        for i in 0..CODE_BLOCKS {
            let v = if bits >> i & 1 == 1 { WHITE } else { BLACK };
            first[i * b..(i + 1) * b].fill(v);
        }
        first[CODE_BLOCKS * b..].fill(BLACK);
        for row in others.chunks_exact_mut(w) {
            row.copy_from_slice(first);
        }

        // Background: row y is the wave from offset (y/2 + 3*index).
        let shift = (index % PERIOD as u64) as usize * 3;
        for (i, row) in rest.chunks_exact_mut(w).enumerate() {
            let off = ((b + i) / 2 + shift) % PERIOD;
            row.copy_from_slice(&self.luma[off..off + w]);
        }
        let cb = b / 2;
        u_plane[..cb * cw].fill(128);
        v_plane[..cb * cw].fill(128);
        let vshift = (index % PERIOD as u64) as usize;
        let voff = (2 * vshift) % PERIOD;
        let v_row = &self.chroma[voff..voff + cw];
        for (i, row) in u_plane[cb * cw..].chunks_exact_mut(cw).enumerate() {
            row.fill(chroma_wave(cb + i + vshift));
        }
        for row in v_plane[cb * cw..].chunks_exact_mut(cw) {
            row.copy_from_slice(v_row);
        }

        // The bouncing box, at even coordinates below the band.
        let s = self.box_side;
        if s > 0 {
            let bx = bounce(index.wrapping_mul(7), w - s);
            let by = b + bounce(index.wrapping_mul(5), h - b - s);
            for (y, tex) in self.box_luma.chunks_exact(s).enumerate() {
                let start = (by + y) * w + bx;
                let n = (mix(index.wrapping_mul(4096).wrapping_add(y as u64)) as usize)
                    % (NOISE_LEN - s);
                let noise = &self.noise[n..n + s];
                for ((px, &t), &d) in y_plane[start..start + s].iter_mut().zip(tex).zip(noise) {
                    *px = t.saturating_add_signed(d);
                }
            }
            for y in by / 2..(by + s) / 2 {
                u_plane[y * cw + bx / 2..y * cw + (bx + s) / 2].fill(BOX_U);
                v_plane[y * cw + bx / 2..y * cw + (bx + s) / 2].fill(BOX_V);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{read_index, unwrap_index};

    // r[verify video.testsrc.code]
    #[test]
    fn code_blocks_follow_the_contract_layout() {
        for (w, h, b) in [
            (1280, 720, 16),
            (384, 216, 8),
            (480, 270, 10),
            (1920, 1080, 16),
        ] {
            let src = TestSrc::new(w, h, 30).unwrap();
            assert_eq!(src.block(), b, "{w}x{h}");
            let mut f = vec![0u8; src.frame_len()];
            let index: u64 = 0x1_A5C3_0F01; // low 32 bits 0xA5C30F01
            src.render(index, &mut f).unwrap();
            let low = 0xA5C3_0F01u32;
            let by = low.to_le_bytes();
            let check = !(by[0] ^ by[1] ^ by[2] ^ by[3]);
            let expect_bit = |i: usize| -> bool {
                match i {
                    0..32 => low >> i & 1 == 1,
                    32..40 => check >> (i - 32) & 1 == 1,
                    _ => (i - 40).is_multiple_of(2),
                }
            };
            // Every pixel of every block, every band row.
            for y in 0..b {
                for i in 0..CODE_BLOCKS {
                    let want = if expect_bit(i) { WHITE } else { BLACK };
                    for x in i * b..(i + 1) * b {
                        assert_eq!(f[y * w + x], want, "{w}x{h} block {i} pixel ({x},{y})");
                    }
                }
            }
            // Chroma of the band is neutral.
            let (cw, y_len) = (w / 2, w * h);
            let c_len = cw * (h / 2);
            for y in 0..b / 2 {
                for x in 0..cw {
                    assert_eq!(f[y_len + y * cw + x], 128);
                    assert_eq!(f[y_len + c_len + y * cw + x], 128);
                }
            }
            assert_eq!(read_index(&f[..y_len], w, h), Some(u64::from(low)));
        }
    }

    // r[verify video.testsrc.read]
    #[test]
    fn read_index_round_trips_and_rejects_damaged_codes() {
        let src = TestSrc::new(1280, 720, 30).unwrap();
        let (w, h) = (1280, 720);
        let mut f = vec![0u8; src.frame_len()];
        for index in [
            0u64,
            1,
            2,
            255,
            256,
            65_535,
            1 << 31,
            u32::MAX as u64,
            (7 << 32) | 9,
        ] {
            src.render(index, &mut f).unwrap();
            let low = read_index(&f[..w * h], w, h).unwrap();
            assert_eq!(low, index & 0xFFFF_FFFF);
            assert_eq!(unwrap_index(low, index.saturating_sub(3)), index);
            assert_eq!(unwrap_index(low, index + 3), index);
        }
        // Flip one index bit: the check byte no longer matches.
        src.render(12345, &mut f).unwrap();
        let b = src.block();
        let mut bad = f.clone();
        for y in 0..b {
            let v = &mut bad[y * w + 3 * b..y * w + 4 * b];
            let flipped = if v[0] == WHITE { BLACK } else { WHITE };
            v.fill(flipped);
        }
        assert_eq!(read_index(&bad[..w * h], w, h), None);
        // Break the marker: no code.
        let mut bad = f.clone();
        for y in 0..b {
            bad[y * w + 41 * b..y * w + 42 * b].fill(WHITE);
        }
        assert_eq!(read_index(&bad[..w * h], w, h), None);
        // A flat picture, a short plane, a too-narrow picture: no code, no panic.
        assert_eq!(read_index(&vec![128u8; w * h], w, h), None);
        assert_eq!(read_index(&f[..100], w, h), None);
        assert_eq!(read_index(&f[..w * h], 300, 200), None);
        // Mild noise on the blocks (what a codec does) still reads.
        let mut noisy = f.clone();
        for (i, p) in noisy[..w * b].iter_mut().enumerate() {
            *p = if *p == WHITE {
                p.wrapping_sub((i % 40) as u8)
            } else {
                *p + (i % 40) as u8
            };
        }
        assert_eq!(read_index(&noisy[..w * h], w, h), Some(12345));
        // Wrap-around near 2^32.
        assert_eq!(unwrap_index(1, u32::MAX as u64), (1u64 << 32) | 1);
        assert_eq!(unwrap_index(u32::MAX as u64, 1 << 32), u32::MAX as u64);
    }

    // r[verify video.testsrc.pattern]
    #[test]
    fn render_is_deterministic_and_moves() {
        let src = TestSrc::new(1280, 720, 30).unwrap();
        let (w, b) = (1280, src.block());
        let mut a = vec![0u8; src.frame_len()];
        let mut a2 = vec![1u8; src.frame_len()];
        let mut c = vec![0u8; src.frame_len()];
        src.render(77, &mut a).unwrap();
        src.render(77, &mut a2).unwrap();
        assert_eq!(a, a2, "same index, same picture");
        src.render(78, &mut c).unwrap();
        let below = b * w..1280 * 720;
        let differing = a[below.clone()]
            .iter()
            .zip(&c[below])
            .filter(|(x, y)| x != y)
            .count();
        assert!(
            differing > 1280 * 720 / 4,
            "the pattern moves: {differing} pixels changed"
        );
        // Luma stays in video range; the picture has detail (many levels).
        let mut seen = [false; 256];
        for &v in &a[..1280 * 720] {
            assert!((16..=235).contains(&v));
            seen[v as usize] = true;
        }
        assert!(seen.iter().filter(|s| **s).count() > 200);
        // Wrong buffer length is an error, not a panic.
        assert!(matches!(
            src.render(0, &mut a[1..]),
            Err(VideoError::FrameSize { .. })
        ));
    }

    // r[verify video.testsrc.geometry]
    #[test]
    fn geometry_is_checked() {
        for (w, h, fps) in [
            (382, 720, 30),
            (1281, 720, 30),
            (1280, 721, 30),
            (1280, 62, 30),
            (0, 720, 30),
            (8192, 720, 30),
            (1280, 720, 0),
            (1280, 720, 241),
        ] {
            let e = TestSrc::new(w, h, fps).unwrap_err();
            assert!(
                matches!(
                    e,
                    VideoError::BadGeometry { .. } | VideoError::BadSource { .. }
                ),
                "{w}x{h}@{fps}: {e}"
            );
        }
        let t = TestSrc::parse("testsrc").unwrap();
        assert_eq!((t.width(), t.height(), t.fps()), (1280, 720, 30));
        assert_eq!(t.frame_len(), 1280 * 720 * 3 / 2);
        let t = TestSrc::parse("testsrc:640x360").unwrap();
        assert_eq!(
            (t.width(), t.height(), t.fps(), t.block()),
            (640, 360, 30, 12)
        );
    }
}
