//! A capture process hands raw frames to an encoder process through shared
//! memory, with no copy; the encoder checks every frame and reports back.
//!
//! ```text
//! cargo run --release -p link-shm --example capture_encoder -- [--size BYTES] [--fps N] [--frames N]
//! ```
//!
//! `--size` defaults to one 1080p RGBA frame (1920 × 1080 × 4), `--fps 0`
//! (the default) sends as fast as the encoder takes them, `--frames`
//! defaults to 600. The capture process starts the encoder as its child
//! (`ShmLink::spawn`) and writes each frame straight into a slot of the
//! segment: a header (frame number, capture time, checksum) and then the
//! pixels. The encoder leases the same bytes, recomputes the checksum, and
//! at the end sends its report back over the same link: frames per second,
//! GB/s and hand-off latency percentiles (commit → `recv`).

use std::process::Command;
use std::time::{Duration, Instant};

use link_shm::{ShmConfig, ShmLink};
use link_types::{Link, LinkRx, LinkTx, LinkTxExt, LinkTxPermit, WriteSlot};

const HEADER: usize = 24;

/// CLOCK_MONOTONIC in nanoseconds: the same clock in both processes.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Write the pixels of frame `n` and return their checksum (one pass).
fn paint(pixels: &mut [u8], n: u64) -> u64 {
    let mut sum = 0u64;
    let mut chunks = pixels.chunks_exact_mut(8);
    for (i, c) in (&mut chunks).enumerate() {
        let w = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n;
        c.copy_from_slice(&w.to_le_bytes());
        sum = sum.wrapping_add(w);
    }
    for b in chunks.into_remainder() {
        *b = n as u8;
        sum = sum.wrapping_add(n & 0xff);
    }
    sum
}

/// The checksum of pixels as the encoder sees them.
fn checksum(pixels: &[u8]) -> u64 {
    let chunks = pixels.chunks_exact(8);
    let mut sum = chunks
        .remainder()
        .iter()
        .fold(0u64, |s, &b| s.wrapping_add(b as u64));
    for c in chunks {
        sum = sum.wrapping_add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    sum
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| {
            w[1].parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn config(size: usize) -> ShmConfig {
    ShmConfig {
        large_size: (size + HEADER).div_ceil(64) * 64,
        large_count: 4,
        ..ShmConfig::default()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size = arg(&args, "--size", 1920 * 1080 * 4) as usize;
    if args.get(1).map(String::as_str) == Some("encoder") {
        encoder(size).await;
        return;
    }
    let fps = arg(&args, "--fps", 0);
    let frames = arg(&args, "--frames", 600);
    let mut child = Command::new(std::env::current_exe().expect("own path"));
    child.arg("encoder").arg("--size").arg(size.to_string());
    let (link, mut encoder_process) = ShmLink::spawn(&mut child, &config(size))
        .await
        .expect("start the encoder");
    let (mut tx, mut rx) = link.split();
    let period = (fps > 0).then(|| Duration::from_secs_f64(1.0 / fps as f64));
    let start = Instant::now();
    for n in 0..frames {
        if let Some(p) = period {
            let due = start + p * n as u32;
            tokio::time::sleep_until(due.into()).await;
        }
        let mut slot = tx
            .reserve()
            .await
            .expect("reserve")
            .alloc(HEADER + size)
            .expect("alloc");
        let buf = slot.as_mut_slice();
        let sum = paint(&mut buf[HEADER..], n);
        buf[0..8].copy_from_slice(&n.to_le_bytes());
        buf[16..24].copy_from_slice(&sum.to_le_bytes());
        buf[8..16].copy_from_slice(&now_ns().to_le_bytes());
        slot.commit().expect("commit");
    }
    tx.close().await.expect("close");
    let report = rx
        .recv()
        .await
        .expect("report")
        .expect("the encoder's report");
    println!("{}", String::from_utf8_lossy(&report));
    let _ = encoder_process.wait();
}

async fn encoder(size: usize) {
    let link = ShmLink::from_parent(&config(size))
        .await
        .expect("join the capture");
    let (mut tx, mut rx) = link.split();
    let (mut frames, mut bad, mut bytes) = (0u64, 0u64, 0u64);
    let mut latency_ns = Vec::new();
    let mut first = None;
    while let Some(frame) = rx.recv().await.expect("recv") {
        let got = now_ns();
        first.get_or_insert_with(Instant::now);
        let sent = u64::from_le_bytes(frame[8..16].try_into().unwrap());
        let want = u64::from_le_bytes(frame[16..24].try_into().unwrap());
        if checksum(&frame[HEADER..]) != want {
            bad += 1;
        }
        latency_ns.push(got.saturating_sub(sent));
        frames += 1;
        bytes += frame.len() as u64;
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64()).max(1e-9);
    latency_ns.sort_unstable();
    let pct = |p: f64| {
        latency_ns
            .get(((latency_ns.len() as f64 - 1.0) * p) as usize)
            .map_or(0.0, |&n| n as f64 / 1e3)
    };
    let report = format!(
        "encoder: {frames} frames of {size} bytes, {bad} bad checksums; {:.1} frames/s, {:.2} GB/s; \
         hand-off latency p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        frames as f64 / secs,
        bytes as f64 / secs / 1e9,
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
    tx.send(report.as_bytes()).await.expect("send the report");
}
