//! A hostile peer, for tests: it takes the handoff like a real peer, then
//! writes random words anywhere in the whole segment (rings, descriptors,
//! states, payload) and signals every wake-up descriptor, until it is
//! killed.
//!
//! Not for applications; it exists so that the validation of everything
//! read from shared memory is tested against a real second process.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use tokio::net::UnixStream;

use crate::sys::{self, Mapping};

/// Join the parent (as [`crate::ShmLink::from_parent`] would) and scribble
/// over the segment forever.
pub async fn scribble_from_parent(seed: u64) -> Result<(), String> {
    let fd: i32 = std::env::var(crate::FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or("no inherited socket")?;
    let fd = sys::adopt_socket(fd).map_err(|e| e.to_string())?;
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stream = UnixStream::from_std(std).map_err(|e| e.to_string())?;
    let mut hello = [0u8; 16];
    let (_, fds) = loop {
        stream.readable().await.map_err(|e| e.to_string())?;
        match sys::recv_fds(&stream, &mut hello) {
            Ok(x) => break x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.to_string()),
        }
    };
    if fds.len() != sys::HANDOFF_FDS {
        return Err("bad handoff".into());
    }
    let total = u64::from_le_bytes(hello[8..].try_into().unwrap()) as usize;
    let map = Mapping::map(&fds[0], total).map_err(|e| e.to_string())?;
    let words = total / 4;
    let mut x = seed | 1;
    let mut rounds = 0u64;
    // Even seeds scribble sparsely (one word a millisecond), so that
    // messages keep flowing between hits and deeper paths get corrupted
    // state; odd seeds flood the segment.
    let burst = if seed.is_multiple_of(2) { 1 } else { 4096 };
    loop {
        if burst == 1 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        for _ in 0..burst {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize >> 3) % words;
            // Bias towards small values now and then: they pass more checks
            // and reach deeper code.
            let v = match x & 3 {
                0 => (x >> 40) as u32 & 0xff,
                _ => (x >> 32) as u32,
            };
            map.word(i * 4).store(v, Ordering::Relaxed);
        }
        for fd in &fds[1..] {
            sys::eventfd_signal(fd);
        }
        rounds += 1;
        if rounds.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
        let _ = stream.as_raw_fd();
    }
}
