//! Encoder frames per second at 720p and 1080p on testsrc content, and what
//! the rest of the per-frame video work costs beside it (rendering the test
//! pattern, decoding).
//!
//! ```text
//! cargo run --release -p link-video --example encoder_fps [-- --frames N]
//! ```
//!
//! For each size it renders N frames of the test pattern (after a warm-up of
//! 30), encodes them with the host's settings (one thread, medium and low
//! complexity), decodes them,
//! and prints frames/s of wall time and of the measuring thread's CPU time
//! (`/proc/thread-self/stat`, 10 ms ticks: the CPU figure is the one that
//! does not depend on what else the machine is doing).

use std::time::{Duration, Instant};

use link_video::{Decoder, Encoder, EncoderSettings, OpenH264Decoder, OpenH264Encoder, TestSrc};

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 overall, 11 and 12 after ')'.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

struct Meter {
    wall: Duration,
    cpu: Duration,
}

impl Meter {
    fn run(mut f: impl FnMut()) -> Meter {
        let (w0, c0) = (Instant::now(), thread_cpu());
        f();
        Meter {
            wall: w0.elapsed(),
            cpu: thread_cpu().saturating_sub(c0),
        }
    }

    fn fps(&self, frames: usize) -> (f64, f64) {
        (
            frames as f64 / self.wall.as_secs_f64(),
            frames as f64 / self.cpu.as_secs_f64().max(1e-9),
        )
    }
}

fn main() {
    let mut frames = 300usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--frames" => {
                frames = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| {
                        eprintln!("--frames needs a positive number");
                        std::process::exit(2)
                    })
            }
            other => {
                eprintln!("unknown argument {other:?}; usage: encoder_fps [--frames N]");
                std::process::exit(2);
            }
        }
    }
    if let Some(line) = link_video::build::slow_encoder_warning() {
        eprintln!("encoder_fps: {line}");
    }
    println!(
        "{:<10} {:>6} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "size",
        "Mbit/s",
        "mode",
        "render ms",
        "enc fps",
        "enc fps",
        "dec fps",
        "dec fps",
        "out Mb/s"
    );
    println!(
        "{:<10} {:>6} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "", "", "", "(wall)", "(wall)", "(cpu)", "(wall)", "(cpu)", ""
    );
    for (w, h, mbps) in [(1280usize, 720usize, 4u64), (1920, 1080, 8)] {
        for low in [false, true] {
            let src = TestSrc::new(w, h, 30).expect("testsrc geometry");
            let mut settings = EncoderSettings::new(w, h, 30, mbps * 1_000_000);
            settings.low_complexity = low;
            let mut enc = OpenH264Encoder::with_settings(settings).expect("encoder");
            let mut dec = OpenH264Decoder::new().expect("decoder");
            let mut buf = vec![0u8; src.frame_len()];
            let mut au = Vec::new();
            // Warm-up: the first IDR and the rate control's start.
            for i in 0..30 {
                src.render(i, &mut buf).unwrap();
                au.clear();
                enc.encode(&buf, &mut au).unwrap();
                dec.decode(&au).unwrap();
            }
            // Rendering alone (timed), then render + encode with each
            // encode call timed on the wall clock; the encoder's CPU time is
            // that loop's minus the rendering's.
            let render = Meter::run(|| {
                for i in 0..frames {
                    src.render(30 + i as u64, &mut buf).unwrap();
                }
            });
            let mut aus: Vec<Vec<u8>> = Vec::with_capacity(frames);
            let mut enc_wall = Duration::ZERO;
            let both = Meter::run(|| {
                for i in 0..frames {
                    src.render(30 + i as u64, &mut buf).unwrap();
                    let mut out = Vec::new();
                    let t = Instant::now();
                    enc.encode(&buf, &mut out).unwrap();
                    enc_wall += t.elapsed();
                    aus.push(out);
                }
            });
            let encode = Meter {
                wall: enc_wall,
                cpu: both.cpu.saturating_sub(render.cpu),
            };
            let decode = Meter::run(|| {
                for a in &aus {
                    dec.decode(a).unwrap();
                }
            });
            let bytes: usize = aus.iter().map(Vec::len).sum();
            let out_mbps = bytes as f64 * 8.0 * 30.0 / frames as f64 / 1e6;
            let (ew, ec) = encode.fps(frames);
            let (dw, dc) = decode.fps(frames);
            println!(
                "{:<10} {:>6} {:>9} {:>9.2} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>8.2}",
                format!("{w}x{h}"),
                mbps,
                if low { "low" } else { "medium" },
                render.wall.as_secs_f64() * 1000.0 / frames as f64,
                ew,
                ec,
                dw,
                dc,
                out_mbps
            );
        }
    }
}
