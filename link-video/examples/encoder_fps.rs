//! Encoder frames per second at 720p and 1080p on testsrc content, and what
//! the rest of the per-frame video work costs beside it (rendering the test
//! pattern, decoding).
//!
//! ```text
//! cargo run --release -p link-video --example encoder_fps [-- --frames N]
//! cargo run --release -p link-video --example encoder_fps -- --layers 3 [--frames N]
//! ```
//!
//! With `--layers N` it prints instead the encoder's CPU per frame at 720p,
//! 2.5 Mbit/s for `OpenH264Encoder` (one layer), `LayeredEncoder` with one
//! layer and LTR off, and `LayeredEncoder` with N temporal layers and LTR on
//! (its defaults), encoded side by side frame by frame (the same rendered
//! picture to each, 3 rounds), each encode call timed on the thread's CPU
//! clock (`/proc/thread-self/schedstat`, nanoseconds): compare the ratios.
//! Then the bytes of a loss repair at frame 64 of the same stream: an LTR
//! recovery frame (`request_recovery`, every mark confirmed as it is sent)
//! against the IDR an identical encoder sends when a keyframe is forced.
//!
//! For each size it renders N frames of the test pattern (after a warm-up of
//! 30), encodes them with the host's settings (one thread, medium and low
//! complexity), decodes them,
//! and prints frames/s of wall time and of the measuring thread's CPU time
//! (`/proc/thread-self/stat`, 10 ms ticks: the CPU figure is the one that
//! does not depend on what else the machine is doing).

use std::time::{Duration, Instant};

use link_video::{
    Decoder, Encoder, EncoderSettings, LayeredConfig, LayeredEncoder, OpenH264Decoder,
    OpenH264Encoder, TestSrc,
};

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

/// CPU time the calling thread has run, in nanoseconds (the scheduler's
/// own count, `/proc/thread-self/schedstat`): precise enough to time one
/// encode call.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `--layers N`: the encoder CPU per frame of one layer against N temporal
/// layers, side by side.
fn compare_layers(frames: usize, layers: u8) {
    let (w, h, fps, bps) = (1280usize, 720usize, 30u32, 2_500_000u64);
    let src = TestSrc::new(w, h, fps).expect("testsrc geometry");
    let single_ltr_off = LayeredConfig {
        temporal_layers: 1,
        ltr_mark_period: None,
        ..LayeredConfig::new(w, h, fps, bps)
    };
    let layered = LayeredConfig {
        temporal_layers: layers,
        ..LayeredConfig::new(w, h, fps, bps)
    };
    let names = [
        "OpenH264Encoder (1 layer)".to_string(),
        "LayeredEncoder, 1 layer, LTR off".to_string(),
        format!("LayeredEncoder, {layers} layers, LTR on"),
    ];
    let mut cpu_ns = [0u64; 3];
    let mut bytes = [0usize; 3];
    let mut buf = vec![0u8; src.frame_len()];
    let rounds = 3;
    for _ in 0..rounds {
        let mut encs: [Box<dyn Encoder>; 3] = [
            Box::new(OpenH264Encoder::new(w, h, fps, bps).expect("encoder")),
            Box::new(LayeredEncoder::new(single_ltr_off).expect("encoder")),
            Box::new(LayeredEncoder::new(layered).expect("encoder")),
        ];
        let mut out = Vec::new();
        for i in 0..frames + 30 {
            src.render(i as u64, &mut buf).unwrap();
            for (k, enc) in encs.iter_mut().enumerate() {
                out.clear();
                let t0 = thread_cpu_ns();
                enc.encode(&buf, &mut out).expect("encode");
                // The first 30 frames warm up (IDR, rate control).
                if i >= 30 {
                    cpu_ns[k] += thread_cpu_ns().saturating_sub(t0);
                    bytes[k] += out.len();
                }
            }
        }
    }
    let n = (frames * rounds) as f64;
    println!(
        "{w}x{h}, {} Mbit/s, {frames} frames x {rounds} rounds, interleaved",
        bps as f64 / 1e6
    );
    println!(
        "{:<36} {:>12} {:>8} {:>10}",
        "encoder", "CPU ms/frame", "ratio", "out Mb/s"
    );
    for k in 0..3 {
        let ms = cpu_ns[k] as f64 / 1e6 / n;
        let ratio = cpu_ns[k] as f64 / cpu_ns[0].max(1) as f64;
        let mbps = bytes[k] as f64 * 8.0 * f64::from(fps) / n / 1e6;
        println!(
            "{:<36} {:>12.2} {:>8.2} {:>10.2}",
            names[k], ms, ratio, mbps
        );
    }
    recovery_bytes(layered, &src);
}

/// Bytes of an LTR recovery frame against an IDR forced at the same frame.
fn recovery_bytes(cfg: LayeredConfig, src: &TestSrc) {
    let mut buf = vec![0u8; src.frame_len()];
    let at = 64u64; // a TL0 frame with 1, 2 or 3 layers
    let mut sizes = [0usize; 2];
    let mut p_tl0 = (0usize, 0usize);
    for (k, size) in sizes.iter_mut().enumerate() {
        let mut enc = LayeredEncoder::new(cfg).expect("encoder");
        let mut out = Vec::new();
        for i in 0..=at + 1 {
            if i == at {
                if k == 0 {
                    enc.request_recovery().expect("recovery");
                } else {
                    enc.force_keyframe();
                }
            }
            src.render(i, &mut buf).unwrap();
            out.clear();
            let info = LayeredEncoder::encode(&mut enc, &buf, &mut out).expect("encode");
            if let Some(id) = info.ltr_mark {
                enc.confirm_ltr(id).expect("confirm");
            }
            if i == at {
                assert!(info.recovery || info.keyframe, "{info:?}");
                *size = out.len();
            } else if k == 0 && i > 0 && info.temporal_id == 0 {
                p_tl0 = (p_tl0.0 + out.len(), p_tl0.1 + 1);
            }
        }
    }
    println!(
        "loss repair at frame {at}: LTR recovery frame {} B, forced IDR {} B ({:.1}x), mean TL0 P frame {} B",
        sizes[0],
        sizes[1],
        sizes[1] as f64 / sizes[0].max(1) as f64,
        p_tl0.0 / p_tl0.1.max(1)
    );
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
    let mut layers = None;
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
            "--layers" => {
                layers = Some(
                    args.next()
                        .and_then(|v| v.parse::<u8>().ok())
                        .filter(|n| (1..=3).contains(n))
                        .unwrap_or_else(|| {
                            eprintln!("--layers needs 1, 2 or 3");
                            std::process::exit(2)
                        }),
                )
            }
            other => {
                eprintln!(
                    "unknown argument {other:?}; usage: encoder_fps [--frames N] [--layers N]"
                );
                std::process::exit(2);
            }
        }
    }
    if let Some(line) = link_video::build::slow_encoder_warning() {
        eprintln!("encoder_fps: {line}");
    }
    if let Some(layers) = layers {
        compare_layers(frames, layers);
        return;
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
