//! Colour conversion between packed BGRX (an X11 screen capture) and I420
//! (the encoder's input), once per picture in the encoder process, through
//! `yuvutils-rs` (SIMD, chosen at run time for the CPU). BT.601 with
//! limited range, the colour an H.264 stream without colour description
//! is decoded as (rule `video.convert.bgrx`).

use yuvutils_rs::{
    BufferStoreMut, YuvConversionMode, YuvPlanarImage, YuvPlanarImageMut, YuvRange,
    YuvStandardMatrix,
};

use crate::{VideoError, check_frame_len, check_geometry};

fn check_packed(width: usize, height: usize, stride: usize, got: usize) -> Result<(), VideoError> {
    check_geometry(width, height)?;
    if stride < width * 4 || !stride.is_multiple_of(4) {
        return Err(VideoError::Conversion {
            reason: format!("a BGRX stride of {stride} bytes for {width} pixels a row"),
        });
    }
    if got != stride * height {
        return Err(VideoError::ShortBuffer {
            needed: stride * height,
            got,
        });
    }
    Ok(())
}

fn conversion_error(e: yuvutils_rs::YuvError) -> VideoError {
    VideoError::Conversion {
        reason: e.to_string(),
    }
}

// r[impl video.convert.bgrx]
/// Converts a BGRX picture (`height` rows of `stride` bytes) into the I420
/// picture `out` of the same size.
///
/// # Errors
/// [`VideoError::BadGeometry`] for a size I420 cannot take (odd, zero, too
/// large) or a stride shorter than a row; [`VideoError::ShortBuffer`] when
/// `bgrx` or `out` is not exactly one picture.
pub fn bgrx_to_i420(
    bgrx: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    out: &mut [u8],
) -> Result<(), VideoError> {
    check_packed(width, height, stride, bgrx.len())?;
    check_frame_len(width, height, out.len())?;
    let (y, uv) = out.split_at_mut(width * height);
    let (u, v) = uv.split_at_mut(width / 2 * (height / 2));
    let mut planar = YuvPlanarImageMut {
        y_plane: BufferStoreMut::Borrowed(y),
        y_stride: width as u32,
        u_plane: BufferStoreMut::Borrowed(u),
        u_stride: (width / 2) as u32,
        v_plane: BufferStoreMut::Borrowed(v),
        v_stride: (width / 2) as u32,
        width: width as u32,
        height: height as u32,
    };
    yuvutils_rs::bgra_to_yuv420(
        &mut planar,
        bgrx,
        stride as u32,
        YuvRange::Limited,
        YuvStandardMatrix::Bt601,
        YuvConversionMode::Balanced,
    )
    .map_err(conversion_error)
}

/// Converts the I420 picture `i420` into packed BGRX rows of `width * 4`
/// bytes (the unused byte set to 255), the inverse of [`bgrx_to_i420`]: a
/// test X client draws the test pattern with it.
///
/// # Errors
/// As [`bgrx_to_i420`].
pub fn i420_to_bgrx(
    i420: &[u8],
    width: usize,
    height: usize,
    out: &mut [u8],
) -> Result<(), VideoError> {
    check_packed(width, height, width * 4, out.len())?;
    check_frame_len(width, height, i420.len())?;
    let (y, uv) = i420.split_at(width * height);
    let (u, v) = uv.split_at(width / 2 * (height / 2));
    let planar = YuvPlanarImage {
        y_plane: y,
        y_stride: width as u32,
        u_plane: u,
        u_stride: (width / 2) as u32,
        v_plane: v,
        v_stride: (width / 2) as u32,
        width: width as u32,
        height: height as u32,
    };
    yuvutils_rs::yuv420_to_bgra(
        &planar,
        out,
        (width * 4) as u32,
        YuvRange::Limited,
        YuvStandardMatrix::Bt601,
    )
    .map_err(conversion_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TestSrc, i420_len, psnr_yuv};

    // r[verify video.convert.bgrx]
    /// The test pattern through BGRX and back stays within 40 dB PSNR of
    /// itself, white stays white at limited range, blue lands in the blue
    /// byte, and sizes that do not fit are refused rather than panicking.
    #[test]
    fn the_pattern_survives_bgrx_and_back_and_bad_sizes_are_refused() {
        let (w, h) = (640, 360);
        let t = TestSrc::new(w, h, 30).unwrap();
        let mut pic = vec![0u8; t.frame_len()];
        t.render(17, &mut pic).unwrap();
        let mut bgrx = vec![0u8; w * h * 4];
        i420_to_bgrx(&pic, w, h, &mut bgrx).unwrap();
        let mut back = vec![0u8; i420_len(w, h)];
        bgrx_to_i420(&bgrx, w, h, w * 4, &mut back).unwrap();
        assert_eq!(crate::index::read_index(&back[..w * h], w, h), Some(17));
        // The pattern has colours outside what RGB can show, so the first
        // trip clips them; a picture that came from RGB (a screen) goes
        // through again almost unchanged.
        let mut again = vec![0u8; i420_len(w, h)];
        i420_to_bgrx(&back, w, h, &mut bgrx).unwrap();
        bgrx_to_i420(&bgrx, w, h, w * 4, &mut again).unwrap();
        let db = psnr_yuv(&again, &back, w, h).unwrap();
        assert!(db >= 40.0, "second round trip {db:.1} dB");

        // Pure colours: white is Y 235, blue is the first byte.
        let (w, h) = (4, 2);
        let mut white = [255u8; 32];
        let mut out = vec![0u8; i420_len(w, h)];
        bgrx_to_i420(&white, w, h, 16, &mut out).unwrap();
        assert!(out[..8].iter().all(|&y| y == 235), "{out:?}");
        assert!(
            out[8..].iter().all(|&c| (127..=129).contains(&c)),
            "{out:?}"
        );
        let blue: Vec<u8> = [255u8, 0, 0, 0].repeat(8);
        bgrx_to_i420(&blue, w, h, 16, &mut out).unwrap();
        assert!(out[8] > 200 && out[10] < 128, "U high, V low: {out:?}");
        i420_to_bgrx(&out, w, h, &mut white).unwrap();
        assert!(
            white[0] > 200 && white[1] < 40 && white[2] < 40,
            "{white:?}"
        );

        // A padded stride reads only the row's pixels.
        let mut padded = vec![0u8; 24 * 2];
        for row in 0..2 {
            padded[row * 24..row * 24 + 16].copy_from_slice(&[255u8; 16]);
        }
        bgrx_to_i420(&padded, w, h, 24, &mut out).unwrap();
        assert!(out[..8].iter().all(|&y| y == 235), "{out:?}");

        assert!(bgrx_to_i420(&[0; 31], w, h, 16, &mut out).is_err());
        assert!(bgrx_to_i420(&[0; 24], w, h, 12, &mut out).is_err());
        assert!(bgrx_to_i420(&[0; 36], 3, 3, 12, &mut [0; 20]).is_err());
        assert!(bgrx_to_i420(&[0; 32], w, h, 16, &mut out[..11]).is_err());
        assert!(i420_to_bgrx(&out, w, h, &mut [0; 31]).is_err());
    }
}
