//! Picture quality: PSNR between two I420 frames of the same geometry.
//!
//! [`psnr_y`] compares the luma plane only (what the client reports as the
//! stream's PSNR: the code band and the pattern are luma detail);
//! [`psnr_yuv`] takes the mean squared error over every sample of all three
//! planes (chroma samples count once each, so luma weighs 4:1:1).
//!
//! PSNR = 10 log10(255² / MSE), capped at [`PSNR_CAP_DB`] so that identical
//! pictures give a finite number that means, minimums and JSON can carry.

use crate::{VideoError, check_frame_len};

/// The PSNR of identical pictures (the MSE floor is 255² / 10^10).
pub const PSNR_CAP_DB: f64 = 100.0;

fn psnr_of(a: &[u8], b: &[u8]) -> f64 {
    let sse: u64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = u64::from(x.abs_diff(y));
            d * d
        })
        .sum();
    if a.is_empty() {
        return PSNR_CAP_DB;
    }
    let mse = sse as f64 / a.len() as f64;
    let peak = 255.0f64 * 255.0;
    (10.0 * (peak / mse.max(peak / 1e10)).log10()).min(PSNR_CAP_DB)
}

/// PSNR in dB of the Y planes of two I420 frames of `width` x `height`.
///
/// # Errors
/// [`VideoError::FrameSize`] if either buffer is not one I420 frame of that
/// geometry.
// r[impl video.quality.psnr]
pub fn psnr_y(a: &[u8], b: &[u8], width: usize, height: usize) -> Result<f64, VideoError> {
    check_frame_len(width, height, a.len())?;
    check_frame_len(width, height, b.len())?;
    let n = width * height;
    Ok(psnr_of(&a[..n], &b[..n]))
}

/// PSNR in dB over all samples (Y, U and V) of two I420 frames.
///
/// # Errors
/// As [`psnr_y`].
pub fn psnr_yuv(a: &[u8], b: &[u8], width: usize, height: usize) -> Result<f64, VideoError> {
    check_frame_len(width, height, a.len())?;
    check_frame_len(width, height, b.len())?;
    Ok(psnr_of(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    // r[verify video.quality.psnr]
    #[test]
    fn psnr_matches_the_formula() {
        let (w, h) = (16, 8);
        let len = w * h * 3 / 2;
        let a = vec![100u8; len];
        assert_eq!(psnr_y(&a, &a, w, h).unwrap(), PSNR_CAP_DB);
        // Every luma sample off by 5: MSE 25.
        let mut b = a.clone();
        b[..w * h].iter_mut().for_each(|v| *v += 5);
        let want = 10.0 * (255.0f64 * 255.0 / 25.0).log10();
        assert!((psnr_y(&a, &b, w, h).unwrap() - want).abs() < 1e-9);
        // Over all planes the same error is diluted by the unchanged chroma
        // (MSE 25 * 2/3).
        let want_all = 10.0 * (255.0f64 * 255.0 / (25.0 * 2.0 / 3.0)).log10();
        assert!((psnr_yuv(&a, &b, w, h).unwrap() - want_all).abs() < 1e-9);
        // Chroma-only change: Y PSNR is unaffected.
        let mut c = a.clone();
        c[w * h..].iter_mut().for_each(|v| *v = 0);
        assert_eq!(psnr_y(&a, &c, w, h).unwrap(), PSNR_CAP_DB);
        assert!(psnr_yuv(&a, &c, w, h).unwrap() < 20.0);
        // Wrong lengths are errors.
        assert!(matches!(
            psnr_y(&a, &b[1..], w, h),
            Err(VideoError::FrameSize { .. })
        ));
        assert!(psnr_yuv(&a[..10], &b, w, h).is_err());
    }
}
