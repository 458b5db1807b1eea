//! `linkstream __x11-pattern` (hidden): a small X client that draws the
//! test pattern, its index burned in, full-screen on an X display at a
//! fixed rate, and logs when each index was on screen. The X11 source's
//! end-to-end test captures it: the client checks every picture against
//! the pattern as drawn, and the log gives the latency from draw to
//! decoded.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use link_video::{TestSrc, now_us};
use x11rb::connection::{Connection, RequestConnection as _};
use x11rb::protocol::xproto::{
    ConnectionExt as _, CreateGCAux, CreateWindowAux, ImageFormat, WindowClass,
};

/// Options of `linkstream __x11-pattern`.
#[derive(Debug, Clone, clap::Args)]
pub struct PatternArgs {
    /// The X display.
    #[arg(long, value_name = "DISPLAY")]
    pub display: String,
    /// Pictures per second.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub fps: u32,
    /// Stop after this many seconds.
    #[arg(long, value_name = "N", default_value_t = 10.0)]
    pub seconds: f64,
    /// Append `index draw_us` lines here (the time the server had drawn it).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
}

/// Draw until `--seconds` have passed.
pub fn run(args: PatternArgs) -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("x11-pattern: {what}: {e}");
    let (conn, screen_no) = x11rb::connect(Some(&args.display)).map_err(|e| fail("connect", &e))?;
    let screen = &conn.setup().roots[screen_no];
    let (w, h) = (
        usize::from(screen.width_in_pixels) & !1,
        usize::from(screen.height_in_pixels) & !1,
    );
    let src = TestSrc::new(w, h, args.fps).map_err(|e| fail("pattern", &e))?;
    let win = conn.generate_id().map_err(|e| fail("id", &e))?;
    conn.create_window(
        screen.root_depth,
        win,
        screen.root,
        0,
        0,
        w as u16,
        h as u16,
        0,
        WindowClass::INPUT_OUTPUT,
        screen.root_visual,
        &CreateWindowAux::new().override_redirect(1),
    )
    .map_err(|e| fail("window", &e))?;
    conn.map_window(win).map_err(|e| fail("map", &e))?;
    let gc = conn.generate_id().map_err(|e| fail("id", &e))?;
    conn.create_gc(gc, win, &CreateGCAux::new())
        .map_err(|e| fail("gc", &e))?;
    let mut log = match &args.log {
        Some(p) => Some(std::io::LineWriter::new(
            std::fs::File::create(p).map_err(|e| fail(&p.display().to_string(), &e))?,
        )),
        None => None,
    };
    // Rows per PutImage request, to stay under the server's request size.
    let max = conn.maximum_request_bytes().saturating_sub(64);
    let rows = (max / (w * 4)).clamp(1, h);
    let mut i420 = vec![0u8; src.frame_len()];
    let mut bgrx = vec![0u8; w * h * 4];
    let period = Duration::from_secs_f64(1.0 / f64::from(args.fps.max(1)));
    let start = std::time::Instant::now();
    let mut index = 0u64;
    while start.elapsed().as_secs_f64() < args.seconds {
        src.render(index, &mut i420)
            .map_err(|e| fail("render", &e))?;
        link_video::convert::i420_to_bgrx(&i420, w, h, &mut bgrx)
            .map_err(|e| fail("convert", &e))?;
        for (band, chunk) in bgrx.chunks(rows * w * 4).enumerate() {
            conn.put_image(
                ImageFormat::Z_PIXMAP,
                win,
                gc,
                w as u16,
                (chunk.len() / (w * 4)) as u16,
                0,
                (band * rows) as i16,
                0,
                screen.root_depth,
                chunk,
            )
            .map_err(|e| fail("PutImage", &e))?;
        }
        // A round trip: the server has drawn the picture when it answers.
        conn.get_input_focus()
            .map_err(|e| fail("sync", &e))?
            .reply()
            .map_err(|e| fail("sync", &e))?;
        if let Some(l) = &mut log {
            writeln!(l, "{index} {}", now_us()).map_err(|e| fail("log", &e))?;
        }
        index += 1;
        let next = period.mul_f64(index as f64);
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    if let Some(l) = &mut log {
        l.flush().map_err(|e| fail("log", &e))?;
    }
    Ok(())
}
