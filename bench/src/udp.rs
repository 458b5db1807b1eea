//! `udp`: the UDP link against raw system-call loops, 1200-byte datagrams,
//! sender and receiver on separate threads (pinned to separate cores).
//!
//! Three modes, each link configuration against the raw loops in the same
//! mode: plain `sendmmsg` → `recvmmsg`; GSO send → `recvmmsg`; GSO send →
//! GRO receive. The raw loops are written here against libc, with blocking
//! sockets, and batch as the link does: `sendmmsg` of 64 datagrams, or of 9
//! GSO messages of 54 segments each (the link drains its 512-datagram ring
//! the same way); `recvmmsg` into 64 buffers, or 8 GRO buffers of 64 KiB
//! (the link's `GRO_BATCH`).
//!
//! Each round runs four pairs: raw → raw (the baseline), ours → ours, ours →
//! raw receiver and raw sender → ours. For each, three figures: datagrams/s
//! handed to the kernel by the sender, datagrams/s received, and the share
//! of sent datagrams that arrived (the rest were dropped by the kernel for
//! a full receive queue). A fast receiver with a slow sender is visible as
//! such.

use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, WriteSlot};
use link_udp::{UdpConfig, UdpLink};

use crate::harness::{Better, Outcome, Runner, median, pin};

const LEN: usize = 1200;
const BATCH: usize = 64;
/// Datagrams per raw GSO message: as many 1200-byte segments as fit 65000
/// bytes (the link's `MAX_GSO_BYTES`).
const GSO_SEGS: usize = 54;
/// GSO messages per raw `sendmmsg`: the link's 512-datagram send ring in
/// runs of 54.
const GSO_MSGS: usize = 9;
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
}

impl Count {
    fn rate(&self) -> f64 {
        self.datagrams as f64 / self.span.as_secs_f64().max(1e-9)
    }
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

/// Raw sender: blocking `sendmmsg` of 64 datagrams, or of 9 GSO messages
/// of 54 segments each, until `stop`; counts what the kernel took.
fn raw_send(sock: &UdpSocket, gso: bool, stop: &AtomicBool) -> Count {
    let fd = sock.as_raw_fd();
    let payload = vec![0x5Au8; LEN * GSO_SEGS.max(BATCH)];
    let start = Instant::now();
    let mut sent = 0u64;
    #[repr(C, align(8))]
    #[derive(Clone, Copy)]
    struct Cmsg([u8; 32]);
    let mut cbufs = [Cmsg([0; 32]); GSO_MSGS];
    while !stop.load(Ordering::Relaxed) {
        if gso {
            // SAFETY: all-zero iovec/mmsghdr arrays are valid; each header
            // points at its own iovec (into `payload`) and its own 32-byte
            // cmsg buffer, all alive for the call; the cmsg fits.
            unsafe {
                let mut iovs: [libc::iovec; GSO_MSGS] = zeroed();
                let mut hdrs: [libc::mmsghdr; GSO_MSGS] = zeroed();
                for i in 0..GSO_MSGS {
                    iovs[i] = libc::iovec {
                        iov_base: payload.as_ptr() as *mut libc::c_void,
                        iov_len: LEN * GSO_SEGS,
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
                    sent += n as u64 * GSO_SEGS as u64;
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
                        iov_base: payload.as_ptr().add(i * LEN) as *mut libc::c_void,
                        iov_len: LEN,
                    };
                    hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
                    hdrs[i].msg_hdr.msg_iovlen = 1;
                }
                let n = libc::sendmmsg(fd, hdrs.as_mut_ptr(), BATCH as u32, 0);
                if n > 0 {
                    sent += n as u64;
                }
            }
        }
    }
    Count {
        datagrams: sent,
        span: start.elapsed(),
    }
}

/// Raw receiver: blocking `recvmmsg` into 64 buffers, or 8 of 64 KiB with
/// GRO (counting `len / segment` datagrams per buffer), until quiet after
/// `done`.
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
    }
}

fn link_config(mode: Mode) -> UdpConfig {
    UdpConfig {
        gso: mode != Mode::Plain,
        gro: mode == Mode::GsoGro,
        ..UdpConfig::default()
    }
}

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
        Count {
            datagrams: stats.snapshot().tx_datagrams,
            span: start.elapsed(),
        }
    })
}

fn link_recv(sock: UdpSocket, peer: SocketAddr, mode: Mode, done: &AtomicBool) -> Count {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let link = UdpLink::from_std(sock, peer, &link_config(mode)).unwrap();
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
        Count {
            datagrams: n,
            span: first.map_or(Duration::ZERO, |f| last - f),
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
    let receiver = {
        let done = done.clone();
        std::thread::spawn(move || {
            pin(1);
            if pair.ours_recv() {
                link_recv(rx_sock, tx_addr, mode, &done)
            } else {
                if mode == Mode::GsoGro {
                    setopt(rx_sock.as_raw_fd(), SOL_UDP, UDP_GRO, 1);
                }
                raw_recv(&rx_sock, mode == Mode::GsoGro, &done)
            }
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            pin(0);
            if pair.ours_send() {
                link_send(tx_sock, rx_addr, mode, &stop)
            } else {
                raw_send(&tx_sock, mode != Mode::Plain, &stop)
            }
        })
    };
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    done.store(true, Ordering::Relaxed);
    let received = receiver.join().unwrap();
    Sample { sent, received }
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
        // Per pair: send rates, receive rates, delivered shares.
        let mut figs: Vec<[Vec<f64>; 3]> = (0..all.len()).map(|_| Default::default()).collect();
        for round in 0..runner.rounds {
            for k in 0..all.len() {
                let i = (k + round) % all.len();
                let s = sample(all[i], mode, dur);
                figs[i][0].push(s.sent.rate());
                figs[i][1].push(s.received.rate());
                figs[i][2].push(s.received.datagrams as f64 / s.sent.datagrams.max(1) as f64);
            }
        }
        let med: Vec<[f64; 3]> = figs
            .into_iter()
            .map(|[a, b, c]| [median(a), median(b), median(c)])
            .collect();
        for (j, (pair, label)) in pairs.iter().enumerate() {
            let i = j + 1;
            debug_assert!(all[i] == *pair);
            for (m, (metric, unit)) in [
                ("sent_per_s", "dgram/s"),
                ("received_per_s", "dgram/s"),
                ("delivered_share", "fraction"),
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
                    better: Better::Higher,
                });
            }
        }
    }
}
