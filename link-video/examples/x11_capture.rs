//! What the X11 source costs: capture an X display at a fixed rate the
//! way `linkstream capture` and the host do (MIT-SHM straight into a
//! `link-shm` slot where the server can, the pointer drawn in, damage
//! checked each tick with a refresh a second; then BGRX to I420 as the
//! host converts), and print one JSON line: frames captured, ticks, and
//! this process's CPU time. `scripts/bench-x11.sh` runs it beside
//! `ffmpeg -f x11grab` on the same display.
//!
//! `cargo run --release -p link-video --example x11_capture -- DISPLAY FPS SECONDS`

use std::time::{Duration, Instant};

use link_shm::{ShmConfig, ShmLink};
use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, WriteSlot};
use link_video::x11::{X11Area, X11Capture};

/// This process's user + system CPU time, from /proc/self/stat (ticks of
/// 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [display, fps, seconds] = &args[..] else {
        eprintln!("usage: x11_capture DISPLAY FPS SECONDS");
        std::process::exit(2);
    };
    let fps: u32 = fps.parse().expect("FPS");
    let seconds: f64 = seconds.parse().expect("SECONDS");
    let mut cap = X11Capture::open(Some(display), &X11Area::Screen).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let (w, h) = (cap.width(), cap.height());
    let len = cap.frame_len();
    let cfg = ShmConfig {
        large_size: len.next_multiple_of(64),
        large_count: 3,
        ..ShmConfig::default()
    };
    let (a, b) = ShmLink::pair(&cfg).expect("link");
    let (mut tx, _) = a.split();
    let (_, mut rx) = b.split();
    let mut i420 = vec![0u8; link_video::i420_len(w, h)];
    let period = Duration::from_secs_f64(1.0 / f64::from(fps));
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let (mut ticks, mut frames, mut lent) = (0u64, 0u64, 0u64);
    let mut last = None::<Instant>;
    while start.elapsed().as_secs_f64() < seconds {
        let tick = start + period * ticks as u32;
        tokio::time::sleep_until(tick.into()).await;
        ticks += 1;
        let refresh = last.is_none_or(|t| tick.duration_since(t) >= Duration::from_secs(1));
        if !refresh && !cap.changed().expect("X server") {
            continue;
        }
        let permit = tx.reserve().await.expect("reserve");
        let mut slot = permit.alloc(len).expect("slot");
        let done = match slot.lend() {
            Some(l) if cap.can_lend() => cap
                .capture_lent(l.fd, l.offset, l.segment_len)
                .expect("capture"),
            _ => false,
        };
        if done {
            lent += 1;
            cap.draw_pointer(slot.as_mut_slice()).expect("pointer");
        } else {
            cap.capture(slot.as_mut_slice()).expect("capture");
        }
        slot.commit().expect("commit");
        let got = rx.recv().await.expect("recv").expect("frame");
        link_video::convert::bgrx_to_i420(got.as_slice(), w, h, w * 4, &mut i420).expect("convert");
        frames += 1;
        last = Some(tick);
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "{{\"width\":{w},\"height\":{h},\"fps\":{fps},\"seconds\":{wall:.3},\"ticks\":{ticks},\"frames\":{frames},\"frames_lent\":{lent},\"cpu_seconds\":{cpu:.3},\"path\":{:?}}}",
        cap.path()
    );
}
