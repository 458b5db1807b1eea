//! BGRX to I420 at 1920x1080: `yuvutils-rs` (what [`link_video::convert`]
//! uses) against `dcv-color-primitives`, side by side in one run: time per
//! picture and PSNR against an exact (f64) BT.601 limited-range reference
//! with 2x2-averaged chroma. The picture is the test pattern drawn as RGB
//! (through BGRX once), what a screen shows.
//!
//! `cargo run --release -p link-video --example convert_compare [ROUNDS]`

use std::time::Instant;

use dcv_color_primitives as dcp;
use link_video::{TestSrc, i420_len, psnr_yuv};

fn reference(bgrx: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut out = vec![0u8; i420_len(w, h)];
    let px = |x: usize, y: usize| {
        let o = (y * w + x) * 4;
        (
            f64::from(bgrx[o + 2]),
            f64::from(bgrx[o + 1]),
            f64::from(bgrx[o]),
        )
    };
    for y in 0..h {
        for x in 0..w {
            let (r, g, b) = px(x, y);
            out[y * w + x] = (16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0).round() as u8;
        }
    }
    let (cw, ch) = (w / 2, h / 2);
    for y in 0..ch {
        for x in 0..cw {
            let (mut r, mut g, mut b) = (0.0, 0.0, 0.0);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = px(2 * x + dx, 2 * y + dy);
                r += p.0 / 4.0;
                g += p.1 / 4.0;
                b += p.2 / 4.0;
            }
            let u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
            let v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
            out[w * h + y * cw + x] = u.round() as u8;
            out[w * h + cw * ch + y * cw + x] = v.round() as u8;
        }
    }
    out
}

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .map_or(200, |a| a.parse().expect("ROUNDS"));
    let (w, h) = (1920usize, 1080usize);
    let t = TestSrc::new(w, h, 30).unwrap();
    let mut pattern = vec![0u8; t.frame_len()];
    t.render(42, &mut pattern).unwrap();
    let mut bgrx = vec![0u8; w * h * 4];
    link_video::convert::i420_to_bgrx(&pattern, w, h, &mut bgrx).unwrap();
    let want = reference(&bgrx, w, h);

    let mut ours = vec![0u8; i420_len(w, h)];
    let t0 = Instant::now();
    for _ in 0..rounds {
        link_video::convert::bgrx_to_i420(&bgrx, w, h, w * 4, &mut ours).unwrap();
    }
    let ours_us = t0.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);

    let src = dcp::ImageFormat {
        pixel_format: dcp::PixelFormat::Bgra,
        color_space: dcp::ColorSpace::Rgb,
        num_planes: 1,
    };
    let dst = dcp::ImageFormat {
        pixel_format: dcp::PixelFormat::I420,
        color_space: dcp::ColorSpace::Bt601,
        num_planes: 3,
    };
    let mut dcv = vec![0u8; i420_len(w, h)];
    let t0 = Instant::now();
    for _ in 0..rounds {
        let (y, uv) = dcv.split_at_mut(w * h);
        let (u, v) = uv.split_at_mut(w * h / 4);
        dcp::convert_image(
            w as u32,
            h as u32,
            &src,
            None,
            &[&bgrx],
            &dst,
            None,
            &mut [y, u, v],
        )
        .unwrap();
    }
    let dcv_us = t0.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    let p_ours = psnr_yuv(&ours, &want, w, h).unwrap();
    let p_dcv = psnr_yuv(&dcv, &want, w, h).unwrap();
    println!(
        "{{\"width\":{w},\"height\":{h},\"rounds\":{rounds},\"yuvutils_us\":{ours_us:.1},\"dcv_us\":{dcv_us:.1},\"ratio_yuvutils_over_dcv\":{:.3},\"yuvutils_psnr_db\":{p_ours:.2},\"dcv_psnr_db\":{p_dcv:.2}}}",
        ours_us / dcv_us
    );
}
