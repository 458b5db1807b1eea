//! The bare baselines of the `shm` suite: what the hardware and the kernel
//! do with no link around them (atomic ping-pong, a bare 64 B ring, a bare
//! two-process frame pipeline, a blocking eventfd ping-pong, a Unix socket).
//! Shared memory is mapped with link-shm's own `Mapping` (feature `bench`);
//! the eventfds here block, which the link's (non-blocking, driven by tokio)
//! do not.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use link_shm::bench_support::Mapping;

use super::common::{
    FRAME, FRAME_SLOTS, Role, child_command, finish, inherited, pass_fd, read_all,
};
use crate::harness::pin;

/// 64-bit words at the start of a shared mapping (and the bytes after).
struct Words(Mapping);

impl Words {
    /// A new memory file of `len` bytes, mapped.
    fn create(len: usize) -> (Words, OwnedFd) {
        let (map, fd) = Mapping::create(len).expect("memfd + mmap");
        (Words(map), fd)
    }

    /// Map `len` bytes of the memory file the parent passed as `name`.
    fn inherited(name: &str, len: usize) -> Words {
        Words(Mapping::map(&inherited(name), len).expect("mmap"))
    }

    /// 64-bit word `w` of the first page (`w < 512`).
    fn word(&self, w: usize) -> &AtomicU64 {
        assert!(w < 512 && self.0.len() >= 4096);
        // SAFETY: inside the mapping (at least a page, checked above),
        // 8-aligned (the mapping is page-aligned); it lives as long as
        // `self`; shared words are only accessed atomically.
        unsafe { &*self.0.ptr().as_ptr().cast::<AtomicU64>().add(w) }
    }

    /// The 64-bit word starting cache line `i` of the first page.
    fn get(&self, i: usize) -> &AtomicU64 {
        self.word(i * 8)
    }

    /// The mapping's bytes.
    fn base(&self) -> *mut u8 {
        self.0.ptr().as_ptr()
    }
}

fn eventfd() -> OwnedFd {
    // SAFETY: plain eventfd creation (blocking).
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fresh descriptor.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn ev_write(fd: &OwnedFd) {
    let one = 1u64;
    // SAFETY: 8 bytes from a live u64.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

fn ev_read(fd: &OwnedFd) {
    let mut v = 0u64;
    // SAFETY: 8 bytes into a live u64; blocking read.
    unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
}

pub(super) fn atomic_latency(count: usize) -> f64 {
    pin(0);
    let (w, fd) = Words::create(4096);
    let mut cmd = child_command(Role::AtomicEcho);
    pass_fd(&mut cmd, "BENCH_MEMFD", &fd);
    let child = cmd.spawn().expect("spawn");
    let (ping, pong) = (w.get(0), w.get(1));
    let rt = |i: u64| {
        ping.store(i, Ordering::Release);
        while pong.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
    };
    for i in 1..=(count / 10) as u64 {
        rt(i);
    }
    let base = count as u64;
    let start = Instant::now();
    for i in 1..=count as u64 {
        rt(base + i);
    }
    let us = start.elapsed().as_secs_f64() / count as f64 / 2.0 * 1e6;
    ping.store(u64::MAX, Ordering::Release);
    finish(child);
    us
}

/// Where the bare ring's two entries start (64-bit word index): 128-byte
/// entries like the link's, a sequence word, then 64 payload bytes at byte
/// 16, so a message spans two cache lines, as it must with any header.
const RING_IN: usize = 0;

const RING_OUT: usize = 32;

/// A bare 64 B message ring with no link around it: one entry each way,
/// a sequence word published after the 64 payload bytes, spun on. What a
/// 64 B message costs in this layout before any software.
pub(super) fn raw_ring_latency(count: usize) -> f64 {
    pin(0);
    let (w, fd) = Words::create(4096);
    let mut cmd = child_command(Role::RingEcho);
    pass_fd(&mut cmd, "BENCH_MEMFD", &fd);
    let child = cmd.spawn().expect("spawn");
    let rt = |i: u64| {
        for k in 0..8 {
            w.word(RING_IN + 2 + k)
                .store(i.wrapping_add(k as u64), Ordering::Relaxed);
        }
        w.word(RING_IN).store(i, Ordering::Release);
        while w.word(RING_OUT).load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        assert_eq!(w.word(RING_OUT + 9).load(Ordering::Relaxed), i + 7);
    };
    for i in 1..=(count / 10) as u64 {
        rt(i);
    }
    let base = (count / 10) as u64;
    let start = Instant::now();
    for i in 1..=count as u64 {
        rt(base + i);
    }
    let us = start.elapsed().as_secs_f64() / count as f64 / 2.0 * 1e6;
    w.word(RING_IN).store(u64::MAX, Ordering::Release);
    finish(child);
    us
}

pub(super) fn eventfd_latency(count: usize) -> f64 {
    pin(0);
    let (a, b) = (eventfd(), eventfd());
    let mut cmd = child_command(Role::EventfdEcho);
    pass_fd(&mut cmd, "BENCH_EFD_A", &a);
    pass_fd(&mut cmd, "BENCH_EFD_B", &b);
    let child = cmd.spawn().expect("spawn");
    for _ in 0..count / 10 {
        ev_write(&a);
        ev_read(&b);
    }
    let start = Instant::now();
    for _ in 0..count {
        ev_write(&a);
        ev_read(&b);
    }
    let us = start.elapsed().as_secs_f64() / count as f64 / 2.0 * 1e6;
    finish(child);
    us
}

pub(super) fn uds_latency(count: usize) -> f64 {
    pin(0);
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut cmd = child_command(Role::UdsEcho);
    pass_fd(&mut cmd, "BENCH_UDS", &theirs);
    let child = cmd.spawn().expect("spawn");
    drop(theirs);
    let mut buf = [7u8; 64];
    let mut rt = || {
        ours.write_all(&buf.clone()).unwrap();
        ours.read_exact(&mut buf).unwrap();
    };
    for _ in 0..count / 10 {
        rt();
    }
    let start = Instant::now();
    for _ in 0..count {
        rt();
    }
    let us = start.elapsed().as_secs_f64() / count as f64 / 2.0 * 1e6;
    drop(ours);
    finish(child);
    us
}

/// The bare pipeline's control words (64-bit word index in its first page,
/// on separate cache lines) and its length: that page, then FRAME_SLOTS
/// frame buffers.
const PIPE_HEAD: usize = 0;

const PIPE_TAIL: usize = 16;

const PIPE_SUM: usize = 32;

const PIPE_LEN: usize = 4096 + FRAME_SLOTS * FRAME;

/// The best any shared-memory transport can do here: two processes, the
/// writer fills FRAME_SLOTS buffers in turn and publishes a counter, the
/// reader reads each in full and publishes its own; no link, no
/// descriptors, no wake-ups.
pub(super) fn bare_pipeline_frames(frames: usize) -> f64 {
    pin(0);
    let (w, fd) = Words::create(PIPE_LEN);
    let mut cmd = child_command(Role::PipeSink);
    pass_fd(&mut cmd, "BENCH_MEMFD", &fd);
    let child = cmd.spawn().expect("spawn");
    let mem = w.base();
    let start = Instant::now();
    for i in 0..frames as u64 {
        while i - w.word(PIPE_TAIL).load(Ordering::Acquire) >= FRAME_SLOTS as u64 {
            std::hint::spin_loop();
        }
        let at = 4096 + (i as usize % FRAME_SLOTS) * FRAME;
        // SAFETY: inside the mapping; the reader is done with this buffer
        // (the tail passed it) and does not read it until the head does.
        unsafe { std::slice::from_raw_parts_mut(mem.add(at), FRAME) }.fill(i as u8);
        w.word(PIPE_HEAD).store(i + 1, Ordering::Release);
    }
    while w.word(PIPE_TAIL).load(Ordering::Acquire) != frames as u64 {
        std::hint::spin_loop();
    }
    let gbs = (frames * FRAME) as f64 / start.elapsed().as_secs_f64() / 1e9;
    w.word(PIPE_HEAD).store(u64::MAX, Ordering::Release);
    while w.word(PIPE_TAIL).load(Ordering::Acquire) != u64::MAX {
        std::hint::spin_loop();
    }
    std::hint::black_box(w.word(PIPE_SUM).load(Ordering::Relaxed));
    finish(child);
    gbs
}

pub(super) fn uds_frames(frames: usize) -> f64 {
    pin(0);
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut cmd = child_command(Role::UdsSink);
    pass_fd(&mut cmd, "BENCH_UDS", &theirs);
    let child = cmd.spawn().expect("spawn");
    drop(theirs);
    let mut buf = vec![0u8; FRAME];
    let start = Instant::now();
    for i in 0..frames {
        buf.fill(i as u8);
        if i + 1 == frames {
            buf[0] = 0xEE;
        }
        ours.write_all(&buf).unwrap();
    }
    let mut sum = [0u8; 8];
    ours.read_exact(&mut sum).unwrap();
    let gbs = (frames * FRAME) as f64 / start.elapsed().as_secs_f64() / 1e9;
    drop(ours);
    finish(child);
    gbs
}

pub(super) fn atomic_echo() {
    let w = Words::inherited("BENCH_MEMFD", 4096);
    let (ping, pong) = (w.get(0), w.get(1));
    let mut last = 0;
    loop {
        let v = ping.load(Ordering::Acquire);
        if v == u64::MAX {
            return;
        }
        if v != last {
            last = v;
            pong.store(v, Ordering::Release);
        }
        std::hint::spin_loop();
    }
}

pub(super) fn ring_echo() {
    let w = Words::inherited("BENCH_MEMFD", 4096);
    let mut expect = 1u64;
    loop {
        let mut msg = [0u64; 8];
        loop {
            let v = w.word(RING_IN).load(Ordering::Acquire);
            if v == u64::MAX {
                return;
            }
            if v == expect {
                break;
            }
            std::hint::spin_loop();
        }
        for (k, m) in msg.iter_mut().enumerate() {
            *m = w.word(RING_IN + 2 + k).load(Ordering::Relaxed);
        }
        for (k, m) in msg.iter().enumerate() {
            w.word(RING_OUT + 2 + k).store(*m, Ordering::Relaxed);
        }
        w.word(RING_OUT).store(expect, Ordering::Release);
        expect += 1;
    }
}

pub(super) fn pipe_sink() {
    let w = Words::inherited("BENCH_MEMFD", PIPE_LEN);
    let frames = w.base();
    let mut sum = 0u64;
    for i in 0u64.. {
        loop {
            let h = w.word(PIPE_HEAD).load(Ordering::Acquire);
            if h == u64::MAX {
                w.word(PIPE_SUM).store(sum, Ordering::Relaxed);
                w.word(PIPE_TAIL).store(u64::MAX, Ordering::Release);
                return;
            }
            if h > i {
                break;
            }
            std::hint::spin_loop();
        }
        let at = 4096 + (i as usize % FRAME_SLOTS) * FRAME;
        // SAFETY: inside the mapping of PIPE_LEN bytes; the writer
        // does not touch this buffer until the tail passes it.
        let b = unsafe { std::slice::from_raw_parts(frames.add(at), FRAME) };
        sum = sum.wrapping_add(read_all(b));
        w.word(PIPE_TAIL).store(i + 1, Ordering::Release);
    }
}

pub(super) fn eventfd_echo() {
    let (a, b) = (inherited("BENCH_EFD_A"), inherited("BENCH_EFD_B"));
    loop {
        ev_read(&a);
        ev_write(&b);
    }
}

pub(super) fn uds_echo() {
    let mut s = UnixStream::from(inherited("BENCH_UDS"));
    let mut buf = [0u8; 64];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            return;
        }
    }
}

pub(super) fn uds_sink() {
    let mut s = UnixStream::from(inherited("BENCH_UDS"));
    let mut buf = vec![0u8; FRAME];
    let mut sum = 0u64;
    loop {
        if s.read_exact(&mut buf).is_err() {
            return;
        }
        sum = sum.wrapping_add(read_all(&buf));
        if buf[0] == 0xEE {
            let _ = s.write_all(&sum.to_le_bytes());
        }
    }
}
