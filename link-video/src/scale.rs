//! Renditions for simulcast (rule `video.scale.half`): an I420 picture
//! scaled to half its width and height, each output sample the rounded
//! mean of the 2x2 input samples it covers. Rendition `r` of a capture is
//! the capture halved `r` times; the index code and the PSNR reference of
//! a rendition are read through the same scaling (see
//! [`crate::index::read_index_scaled`]).

use crate::{VideoError, i420_len};

/// Whether a `width` x `height` I420 picture can be halved `times` times:
/// both sizes stay even (the chroma planes too) down to the last rendition.
pub fn can_halve(width: usize, height: usize, times: u32) -> bool {
    let unit = 2usize << times;
    width > 0 && height > 0 && width.is_multiple_of(unit) && height.is_multiple_of(unit)
}

/// One plane halved: `src` is `w` x `h` samples (both even), `dst` gets
/// `w/2` x `h/2`.
fn half_plane(src: &[u8], w: usize, h: usize, dst: &mut [u8]) {
    let ow = w / 2;
    for (oy, out) in dst.chunks_exact_mut(ow).take(h / 2).enumerate() {
        let r0 = &src[2 * oy * w..2 * oy * w + w];
        let r1 = &src[(2 * oy + 1) * w..(2 * oy + 1) * w + w];
        for ((o, a), b) in out
            .iter_mut()
            .zip(r0.chunks_exact(2))
            .zip(r1.chunks_exact(2))
        {
            let sum = u16::from(a[0]) + u16::from(a[1]) + u16::from(b[0]) + u16::from(b[1]);
            *o = ((sum + 2) / 4) as u8;
        }
    }
}

// r[impl video.scale.half]
/// Writes the `width` x `height` I420 picture `src` at half its width and
/// height into `dst` (`width/2` x `height/2`, I420).
///
/// # Errors
/// [`VideoError::BadGeometry`] if `width` or `height` is not a multiple
/// of 4 (the halved chroma planes must stay even);
/// [`VideoError::FrameSize`] if `src` or `dst` has another length than its
/// I420 size.
pub fn half_i420(
    src: &[u8],
    width: usize,
    height: usize,
    dst: &mut [u8],
) -> Result<(), VideoError> {
    if !can_halve(width, height, 1) {
        return Err(VideoError::BadGeometry {
            width,
            height,
            reason: "halving needs a width and a height that are multiples of 4",
        });
    }
    for (buf, len) in [
        (src.len(), i420_len(width, height)),
        (dst.len(), i420_len(width / 2, height / 2)),
    ] {
        if buf != len {
            return Err(VideoError::FrameSize {
                expected: len,
                got: buf,
            });
        }
    }
    let (y, uv) = src.split_at(width * height);
    let (u, v) = uv.split_at(uv.len() / 2);
    let (oy, ouv) = dst.split_at_mut(width * height / 4);
    let (ou, ov) = ouv.split_at_mut(ouv.len() / 2);
    half_plane(y, width, height, oy);
    half_plane(u, width / 2, height / 2, ou);
    half_plane(v, width / 2, height / 2, ov);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // r[verify video.scale.half]
    #[test]
    fn halving_averages_each_2x2_block_per_plane_and_checks_sizes() {
        let (w, h) = (8usize, 4usize);
        let mut src = vec![0u8; i420_len(w, h)];
        // Y: sample (x, y) = 10 * x + y; U = 100 + x; V = 200 - x.
        for y in 0..h {
            for x in 0..w {
                src[y * w + x] = (10 * x + y) as u8;
            }
        }
        let (cw, ch) = (w / 2, h / 2);
        for y in 0..ch {
            for x in 0..cw {
                src[w * h + y * cw + x] = (100 + x) as u8;
                src[w * h + cw * ch + y * cw + x] = (200 - x) as u8;
            }
        }
        let mut dst = vec![0u8; i420_len(w / 2, h / 2)];
        half_i420(&src, w, h, &mut dst).unwrap();
        // Y block (2x, 2y): mean of 10*(2x)+2y, 10*(2x+1)+2y, and +1 each
        // row: 20x + 2y + 5.5, rounded half up.
        for y in 0..h / 2 {
            for x in 0..w / 2 {
                assert_eq!(
                    dst[y * (w / 2) + x],
                    (20 * x + 2 * y + 6) as u8,
                    "Y {x},{y}"
                );
            }
        }
        let y_len = w * h / 4;
        // U (4x2 -> 2x1): mean of 100+2x and 101+2x: 100.5 + 2x -> 101 + 2x.
        assert_eq!(&dst[y_len..y_len + 2], &[101, 103]);
        // V: mean of 200-2x and 199-2x: 199.5 - 2x -> 200 - 2x.
        assert_eq!(&dst[y_len + 2..], &[200, 198]);

        // Sizes.
        assert!(matches!(
            half_i420(&src, 6, 4, &mut dst),
            Err(VideoError::BadGeometry { .. })
        ));
        assert!(matches!(
            half_i420(&src[1..], w, h, &mut dst),
            Err(VideoError::FrameSize { .. })
        ));
        let mut short = vec![0u8; dst.len() - 1];
        assert!(matches!(
            half_i420(&src, w, h, &mut short),
            Err(VideoError::FrameSize { .. })
        ));
        assert!(can_halve(1280, 720, 1) && can_halve(1280, 720, 2) && !can_halve(1280, 720, 4));
        assert!(!can_halve(1282, 720, 1) && !can_halve(0, 720, 1));
    }
}
