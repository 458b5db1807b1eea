//! `udp`: the UDP link against raw system-call loops, 1200-byte datagrams,
//! sender and receiver on separate threads (pinned to separate cores).
//!
//! Three modes, each link configuration against the raw loops in the same
//! mode: plain `sendmmsg` → `recvmmsg`; GSO send → `recvmmsg`; GSO send →
//! GRO receive. The raw loops are written here against libc, with blocking
//! sockets, and batch as the link does: `sendmmsg` of 64 datagrams, or one
//! `sendmmsg` of 10 GSO messages (9 × 54 segments and one of 26: the link
//! drains its 512-datagram ring so; the bench prints both senders' batch
//! shapes to check), from 512 distinct datagrams whose first byte is
//! written before each send, as the link's sender writes its slots;
//! `recvmmsg` into 64 buffers, or 8 GRO buffers of 64 KiB (the link's
//! `GRO_BATCH`).
//!
//! Each round runs four pairs: raw → raw (the baseline), ours → ours, ours →
//! raw receiver and raw sender → ours. For each, five figures: datagrams/s
//! handed to the kernel by the sender, datagrams/s received, the share of
//! sent datagrams that arrived (the rest were dropped by the kernel for a
//! full receive queue), and the CPU time per datagram of the sending and of
//! the receiving thread (`CLOCK_THREAD_CPUTIME_ID`: the kernel's work in
//! the thread's context counts, loopback delivery included; time spent
//! preempted by other load does not). A fast receiver with a slow sender is
//! visible as such.
//!
//! For a profiler, `--side ours` runs ours → ours, ours → raw receiver and
//! raw sender → ours (each of our halves also against the raw counterpart
//! of the baseline), `--side baseline` raw → raw, without warm-up; threads
//! are named after their pair and role (`ours>raw tx`, `raw>raw rx`, …),
//! and the link's sending loop is a function of its own (`link_send`, for
//! `callgrind --toggle-collect`).

use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, WriteSlot};
use link_udp::{UdpConfig, UdpLink};

use crate::harness::{Better, Outcome, Runner, Side, median, pin};

const LEN: usize = 1200;
const BATCH: usize = 64;
/// Datagrams per raw GSO message: as many 1200-byte segments as fit 65000
/// bytes (the link's `MAX_GSO_BYTES`).
const GSO_SEGS: usize = 54;
/// Datagrams per raw GSO `sendmmsg`: the link's send ring (`send_ring`,
/// 512 by default), which it drains in one `sendmmsg` when full.
const RING: usize = 512;
/// GSO messages per raw `sendmmsg`: the ring in runs of 54, the last run
/// shorter (9 × 54 + 26), as the link cuts it.
const GSO_MSGS: usize = RING.div_ceil(GSO_SEGS);
/// GRO buffers per raw `recvmmsg` (the link's `GRO_BATCH`).
const GRO_BUFS: usize = 8;
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    Gso,
    GsoGro,
}

/// What a sender or receiver counted: datagrams, and the time they took
/// (a sender: from its start to its last send; a receiver: from the first
/// datagram to the last).
struct Count {
    datagrams: u64,
    span: Duration,
    /// A sender's batch shape: `sendmmsg` calls, messages they took, and
    /// waits for writability (zero for a receiver).
    shape: Shape,
    /// CPU time the thread used (its own and the kernel's work in its
    /// context, softirqs included), unaffected by time it sat preempted.
    cpu: Duration,
}

/// How a sender batched: what its system calls carried.
#[derive(Clone, Copy, Default)]
struct Shape {
    /// `sendmmsg` calls that took something.
    calls: u64,
    /// Messages those calls took (a GSO message carries several datagrams).
    msgs: u64,
    /// Waits for the socket to become writable (ours) or calls that took
    /// fewer messages than offered (raw).
    waits: u64,
}

impl Shape {
    fn add(&mut self, o: Shape) {
        self.calls += o.calls;
        self.msgs += o.msgs;
        self.waits += o.waits;
    }
}

impl Count {
    fn rate(&self) -> f64 {
        self.datagrams as f64 / self.span.as_secs_f64().max(1e-9)
    }

    /// CPU nanoseconds per datagram.
    fn cpu_per_datagram(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.datagrams.max(1) as f64
    }
}

/// The calling thread's CPU time so far (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> Duration {
    // SAFETY: `ts` is a valid timespec on the stack for the call.
    let ts = unsafe {
        let mut ts: libc::timespec = zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Run `f` on this thread and record the CPU time it took in its count.
fn with_cpu(f: impl FnOnce() -> Count) -> Count {
    let start = thread_cpu();
    let mut c = f();
    c.cpu = thread_cpu() - start;
    c
}

/// One sample of one pair.
struct Sample {
    sent: Count,
    received: Count,
}

fn setopt(fd: libc::c_int, level: libc::c_int, name: libc::c_int, v: libc::c_int) {
    // SAFETY: a c_int option value on the stack, its exact size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt {level}/{name}: {}",
        std::io::Error::last_os_error()
    );
}

fn raw_socket(gro: bool) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let fd = s.as_raw_fd();
    setopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20);
    setopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
    if gro {
        setopt(fd, SOL_UDP, UDP_GRO, 1);
    }
    s
}

/// Raw sender: blocking `sendmmsg` of 64 datagrams, or of 10 GSO messages
/// (9 × 54 segments and one of 26: the link's 512-datagram ring), until
/// `stop`; counts what the kernel took.
#[inline(never)] // a frame of its own in profiles (callgrind --toggle-collect)
fn raw_send(sock: &UdpSocket, gso: bool, stop: &AtomicBool) -> Count {
    let fd = sock.as_raw_fd();
    // Distinct memory for each of 512 datagrams, as the link's send ring
    // holds (and as any sender of fresh data has): one GSO `sendmmsg`
    // carries all of it, plain calls take 64 datagrams of it in turn.
    let mut payload = vec![0u8; LEN * RING];
    let per_call = if gso { RING } else { BATCH };
    let mut base = 0;
    let start = Instant::now();
    let mut sent = 0u64;
    #[repr(C, align(8))]
    #[derive(Clone, Copy)]
    struct Cmsg([u8; 32]);
    let mut cbufs = [Cmsg([0; 32]); GSO_MSGS];
    let mut shape = Shape::default();
    while !stop.load(Ordering::Relaxed) {
        // Write each datagram before it goes out (its first byte), as the
        // link's sender does into its slots.
        if !gso {
            base = (base + BATCH) % RING;
        }
        for d in base..base + per_call {
            payload[d * LEN] = 0x5A;
        }
        if gso {
            // SAFETY: all-zero iovec/mmsghdr arrays are valid; each header
            // points at its own iovec (into `payload`) and its own 32-byte
            // cmsg buffer, all alive for the call; the cmsg fits.
            unsafe {
                let mut iovs: [libc::iovec; GSO_MSGS] = zeroed();
                let mut hdrs: [libc::mmsghdr; GSO_MSGS] = zeroed();
                for i in 0..GSO_MSGS {
                    let segs = GSO_SEGS.min(RING - i * GSO_SEGS);
                    iovs[i] = libc::iovec {
                        iov_base: payload.as_ptr().add(i * GSO_SEGS * LEN) as *mut libc::c_void,
                        iov_len: LEN * segs,
                    };
                    let msg = &mut hdrs[i].msg_hdr;
                    msg.msg_iov = &mut iovs[i];
                    msg.msg_iovlen = 1;
                    msg.msg_control = cbufs[i].0.as_mut_ptr().cast();
                    msg.msg_controllen = libc::CMSG_SPACE(2) as _;
                    let c = libc::CMSG_FIRSTHDR(msg);
                    (*c).cmsg_level = SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), LEN as u16);
                }
                let n = libc::sendmmsg(fd, hdrs.as_mut_ptr(), GSO_MSGS as u32, 0);
                if n > 0 {
                    sent += (RING.min(n as usize * GSO_SEGS)) as u64;
                    shape.calls += 1;
                    shape.msgs += n as u64;
                    shape.waits += u64::from((n as usize) < GSO_MSGS);
                }
            }
        } else {
            // SAFETY: all-zero iovec/mmsghdr arrays are valid; each header
            // points at its own iovec into `payload`, alive for the call.
            unsafe {
                let mut iovs: [libc::iovec; BATCH] = zeroed();
                let mut hdrs: [libc::mmsghdr; BATCH] = zeroed();
                for i in 0..BATCH {
                    iovs[i] = libc::iovec {
                        iov_base: payload.as_ptr().add((base + i) * LEN) as *mut libc::c_void,
                        iov_len: LEN,
                    };
                    hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
                    hdrs[i].msg_hdr.msg_iovlen = 1;
                }
                let n = libc::sendmmsg(fd, hdrs.as_mut_ptr(), BATCH as u32, 0);
                if n > 0 {
                    sent += n as u64;
                    shape.calls += 1;
                    shape.msgs += n as u64;
                    shape.waits += u64::from((n as usize) < BATCH);
                }
            }
        }
    }
    Count {
        datagrams: sent,
        span: start.elapsed(),
        shape,
        cpu: Duration::ZERO,
    }
}

/// Raw receiver: blocking `recvmmsg` into 64 buffers, or 8 of 64 KiB with
/// GRO (counting `len / segment` datagrams per buffer), until quiet after
/// `done`.
#[inline(never)] // a frame of its own in profiles (callgrind --toggle-collect)
fn raw_recv(sock: &UdpSocket, gro: bool, done: &AtomicBool) -> Count {
    let fd = sock.as_raw_fd();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    // Cache-line-aligned buffers, as a careful hand-written loop would use
    // (the link's receive slots are aligned the same way).
    let size = if gro {
        65_536
    } else {
        (LEN + 1).next_multiple_of(64)
    };
    let nbufs = if gro { GRO_BUFS } else { BATCH };
    let mut bufs = vec![0u8; size * nbufs];
    let (mut n, mut first, mut last) = (0u64, None, Instant::now());
    let mut touched = 0usize;
    loop {
        #[repr(C, align(8))]
        #[derive(Clone, Copy)]
        struct Cmsg([u8; 64]);
        let mut cbufs = [Cmsg([0; 64]); BATCH];
        // SAFETY: all-zero iovec/mmsghdr arrays are valid; each header
        // points at its own slice of `bufs` and its own cmsg buffer, all
        // alive for the call.
        let got = unsafe {
            let mut iovs: [libc::iovec; BATCH] = zeroed();
            let mut hdrs: [libc::mmsghdr; BATCH] = zeroed();
            for i in 0..nbufs {
                iovs[i] = libc::iovec {
                    iov_base: bufs.as_mut_ptr().add(i * size).cast(),
                    iov_len: size,
                };
                hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
                hdrs[i].msg_hdr.msg_iovlen = 1;
                if gro {
                    hdrs[i].msg_hdr.msg_control = cbufs[i].0.as_mut_ptr().cast();
                    hdrs[i].msg_hdr.msg_controllen = 64;
                }
            }
            let rc = libc::recvmmsg(fd, hdrs.as_mut_ptr(), nbufs as u32, 0, std::ptr::null_mut());
            if rc > 0 {
                let mut d = 0u64;
                for (i, h) in hdrs[..rc as usize].iter().enumerate() {
                    let len = h.msg_len as usize;
                    let mut seg = len;
                    if gro {
                        let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                        while !c.is_null() {
                            if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                                seg = std::ptr::read_unaligned(
                                    libc::CMSG_DATA(c).cast::<libc::c_int>(),
                                ) as usize;
                            }
                            c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
                        }
                    }
                    // Visit every datagram, as an application must: its
                    // length and first byte (the link's consumer does the same).
                    let base = i * size;
                    let seg = seg.max(1);
                    let mut off = 0;
                    while off < len {
                        let l = seg.min(len - off);
                        touched = touched.wrapping_add(bufs[base + off] as usize + l);
                        d += 1;
                        off += l;
                    }
                }
                d
            } else {
                0
            }
        };
        if got > 0 {
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            n += got;
        } else if done.load(Ordering::Relaxed) {
            break;
        }
    }
    std::hint::black_box(touched);
    Count {
        datagrams: n,
        span: first.map_or(Duration::ZERO, |f| last - f),
        shape: Shape::default(),
        cpu: Duration::ZERO,
    }
}

fn link_config(mode: Mode) -> UdpConfig {
    UdpConfig {
        gso: mode != Mode::Plain,
        gro: mode == Mode::GsoGro,
        ..UdpConfig::default()
    }
}

#[inline(never)] // a frame of its own in profiles (callgrind --toggle-collect)
fn link_send(sock: UdpSocket, peer: SocketAddr, mode: Mode, stop: &AtomicBool) -> Count {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let link = UdpLink::from_std(sock, peer, &link_config(mode)).unwrap();
        let stats = link.stats();
        let start = Instant::now();
        let (mut tx, _rx) = link.split();
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..BATCH {
                let mut slot = tx.reserve().await.unwrap().alloc(LEN).unwrap();
                slot.as_mut_slice()[0] = 0x5A;
                slot.commit().unwrap();
            }
        }
        tx.flush().await.unwrap();
        let s = stats.snapshot();
        Count {
            datagrams: s.tx_datagrams,
            span: start.elapsed(),
            shape: Shape {
                calls: s.tx_syscalls,
                msgs: s.tx_messages,
                waits: s.tx_waits,
            },
            cpu: Duration::ZERO,
        }
    })
}

#[inline(never)] // a frame of its own in profiles (callgrind --toggle-collect)
fn link_recv(sock: UdpSocket, peer: SocketAddr, mode: Mode, done: &AtomicBool) -> Count {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let link = UdpLink::from_std(sock, peer, &link_config(mode)).unwrap();
        let stats = link.stats();
        let (_tx, mut rx) = link.split();
        let (mut n, mut first, mut last) = (0u64, None, Instant::now());
        let mut touched = 0usize;
        loop {
            // A timer only when the link would wait, as the raw loop's
            // SO_RCVTIMEO costs nothing while data flows; the clock is read
            // once per 64 datagrams and whenever the link would wait, as the
            // raw loop reads it once per recvmmsg.
            let r = match rx.recv().now_or_never() {
                Some(r) => Some(r),
                None => {
                    if n > 0 {
                        last = Instant::now();
                    }
                    tokio::time::timeout(Duration::from_millis(50), rx.recv())
                        .await
                        .ok()
                }
            };
            match r {
                Some(r) => {
                    let m = r.unwrap().unwrap();
                    touched = touched.wrapping_add(m[0] as usize + m.len());
                    if n == 0 {
                        first = Some(Instant::now());
                    }
                    n += 1;
                    if n % 64 == 0 {
                        last = Instant::now();
                    }
                }
                None if done.load(Ordering::Relaxed) => break,
                None => {}
            }
        }
        std::hint::black_box(touched);
        let s = stats.snapshot();
        eprintln!(
            "[udp] link receiver: {:.1} datagrams/recvmmsg ({} calls)",
            s.rx_datagrams as f64 / s.rx_syscalls.max(1) as f64,
            s.rx_syscalls
        );
        Count {
            datagrams: n,
            span: first.map_or(Duration::ZERO, |f| last - f),
            shape: Shape::default(),
            cpu: Duration::ZERO,
        }
    })
}

/// Who sends and who receives in a pair.
#[derive(Clone, Copy, PartialEq)]
enum Pair {
    RawRaw,
    OursOurs,
    OursToRaw,
    RawToOurs,
}

impl Pair {
    fn ours_send(self) -> bool {
        matches!(self, Pair::OursOurs | Pair::OursToRaw)
    }
    fn ours_recv(self) -> bool {
        matches!(self, Pair::OursOurs | Pair::RawToOurs)
    }
}

/// One sample: sender and receiver threads for `dur`.
fn sample(pair: Pair, mode: Mode, dur: Duration) -> Sample {
    let rx_sock = raw_socket(false);
    let tx_sock = raw_socket(false);
    let (rx_addr, tx_addr) = (rx_sock.local_addr().unwrap(), tx_sock.local_addr().unwrap());
    tx_sock.connect(rx_addr).unwrap();
    rx_sock.connect(tx_addr).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    // Named threads, so that a profile separates the sides
    // (`perf report --comm "ours>raw tx"`).
    let receiver = {
        let done = done.clone();
        let name = format!("{} rx", side_label(pair));
        std::thread::Builder::new().name(name).spawn(move || {
            pin(1);
            if pair.ours_recv() {
                with_cpu(|| link_recv(rx_sock, tx_addr, mode, &done))
            } else {
                if mode == Mode::GsoGro {
                    setopt(rx_sock.as_raw_fd(), SOL_UDP, UDP_GRO, 1);
                }
                with_cpu(|| raw_recv(&rx_sock, mode == Mode::GsoGro, &done))
            }
        })
    }
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let sender = {
        let stop = stop.clone();
        let name = format!("{} tx", side_label(pair));
        std::thread::Builder::new().name(name).spawn(move || {
            pin(0);
            if pair.ours_send() {
                with_cpu(|| link_send(tx_sock, rx_addr, mode, &stop))
            } else {
                with_cpu(|| raw_send(&tx_sock, mode != Mode::Plain, &stop))
            }
        })
    }
    .unwrap();
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    done.store(true, Ordering::Relaxed);
    let received = receiver.join().unwrap();
    Sample { sent, received }
}

fn side_label(pair: Pair) -> &'static str {
    match pair {
        Pair::RawRaw => "raw>raw",
        Pair::OursOurs => "ours>ours",
        Pair::OursToRaw => "ours>raw",
        Pair::RawToOurs => "raw>ours",
    }
}

/// A sender's batch shape on stderr: datagrams per message (a GSO message
/// carries several), messages per `sendmmsg`, and how often it waited.
fn print_shape(mode: &str, pair: &str, sent: u64, s: Shape) {
    let per = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    eprintln!(
        "[udp] {mode} {pair}: sender batches: {:.1} datagrams/message, {:.2} messages/sendmmsg, {} sendmmsg, {} waits ({:.4} per sendmmsg)",
        per(sent, s.msgs),
        per(s.msgs, s.calls),
        s.calls,
        s.waits,
        per(s.waits, s.calls),
    );
}

/// Run the `udp` suite.
pub fn run(runner: &mut Runner, quick: bool) {
    let dur = Duration::from_millis(if quick { 300 } else { 1000 });
    let pairs = [
        (Pair::OursOurs, "ours"),
        (Pair::OursToRaw, "ours_tx_raw_rx"),
        (Pair::RawToOurs, "raw_tx_ours_rx"),
    ];
    for (mode, name, baseline) in [
        (Mode::Plain, "plain", "raw sendmmsg -> recvmmsg"),
        (Mode::Gso, "gso", "raw GSO sendmmsg -> recvmmsg"),
        (Mode::GsoGro, "gso_gro", "raw GSO sendmmsg -> GRO"),
    ] {
        if !runner.wants(name) {
            continue;
        }
        eprintln!("[udp] {name} ...");
        if let Some(side) = runner.side {
            // Profiling one side, no ratio. Ours: ours → ours, and our
            // sender into the raw receiver and the raw sender into ours (each
            // of our halves against the same counterpart as in raw → raw,
            // the baseline). Threads are named after their pair and role:
            // `ours>raw tx`, `raw>ours rx`, ...
            let pairs: &[Pair] = match side {
                Side::Ours => &[Pair::OursOurs, Pair::OursToRaw, Pair::RawToOurs],
                Side::Baseline => &[Pair::RawRaw],
            };
            // No warm-up: the totals printed cover all the profiler saw.
            let mut shapes = [(0u64, Shape::default()); 3];
            for _ in 0..runner.rounds {
                for (k, &pair) in pairs.iter().enumerate() {
                    let s = sample(pair, mode, dur);
                    eprintln!(
                        "[udp] {name} {}: sent {:.0}/s ({:.1} sender CPU ns each), received {:.0}/s ({:.1} receiver CPU ns each)",
                        side_label(pair),
                        s.sent.rate(),
                        s.sent.cpu_per_datagram(),
                        s.received.rate(),
                        s.received.cpu_per_datagram(),
                    );
                    shapes[k].0 += s.sent.datagrams;
                    shapes[k].1.add(s.sent.shape);
                }
            }
            for (k, &pair) in pairs.iter().enumerate() {
                print_shape(name, side_label(pair), shapes[k].0, shapes[k].1);
            }
            continue;
        }
        let all = [
            Pair::RawRaw,
            Pair::OursOurs,
            Pair::OursToRaw,
            Pair::RawToOurs,
        ];
        // Warm-up, then rounds with the order rotated each round.
        for p in all {
            sample(p, mode, dur / 4);
        }
        // Per pair: send rates, receive rates, delivered shares, CPU per
        // datagram of each side; and the senders' batch shapes, summed over
        // the rounds.
        let mut figs: Vec<[Vec<f64>; 5]> = (0..all.len()).map(|_| Default::default()).collect();
        let mut shapes = [(0u64, Shape::default()); 4];
        for round in 0..runner.rounds {
            for k in 0..all.len() {
                let i = (k + round) % all.len();
                let s = sample(all[i], mode, dur);
                figs[i][0].push(s.sent.rate());
                figs[i][1].push(s.received.rate());
                figs[i][2].push(s.received.datagrams as f64 / s.sent.datagrams.max(1) as f64);
                figs[i][3].push(s.sent.cpu_per_datagram());
                figs[i][4].push(s.received.cpu_per_datagram());
                shapes[i].0 += s.sent.datagrams;
                shapes[i].1.add(s.sent.shape);
            }
        }
        for (i, (sent, shape)) in shapes.iter().enumerate() {
            print_shape(name, side_label(all[i]), *sent, *shape);
        }
        let med: Vec<[f64; 5]> = figs.into_iter().map(|f| f.map(median)).collect();
        for (j, (pair, label)) in pairs.iter().enumerate() {
            let i = j + 1;
            debug_assert!(all[i] == *pair);
            for (m, (metric, unit, better)) in [
                ("sent_per_s", "dgram/s", Better::Higher),
                ("received_per_s", "dgram/s", Better::Higher),
                ("delivered_share", "fraction", Better::Higher),
                ("sender_cpu_per_dgram", "ns", Better::Lower),
                ("receiver_cpu_per_dgram", "ns", Better::Lower),
            ]
            .into_iter()
            .enumerate()
            {
                runner.report(Outcome {
                    suite: runner.suite.clone(),
                    case: format!("{name}_1200B_{label}"),
                    metric: metric.into(),
                    unit: unit.into(),
                    ours: med[i][m],
                    baseline: med[0][m],
                    baseline_name: baseline.into(),
                    ratio: med[i][m] / med[0][m],
                    better,
                });
            }
        }
    }
}
