//! `udp`: the UDP link against raw system-call loops, 1200-byte datagrams,
//! sender and receiver on separate threads, datagrams/s received.
//!
//! Three modes, each link configuration against the raw loop it is built on:
//! plain `sendmmsg` → `recvmmsg`; GSO send → `recvmmsg`; GSO send → GRO
//! receive. The raw loops are written here directly against libc, with
//! blocking sockets, the way a user would write them by hand.

use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, WriteSlot};
use link_udp::{UdpConfig, UdpLink};

use crate::harness::{Better, Case, Runner, pin};

const LEN: usize = 1200;
const BATCH: usize = 64;
/// Datagrams per raw GSO send: as many 1200-byte segments as fit 65000 bytes.
const GSO_SEGS: usize = 54;
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    Gso,
    GsoGro,
}

/// What a receiver counted: datagrams, and the time from the first to the
/// last one.
struct Count {
    datagrams: u64,
    span: Duration,
}

impl Count {
    fn rate(&self) -> f64 {
        self.datagrams as f64 / self.span.as_secs_f64().max(1e-9)
    }
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

/// Raw sender: blocking `sendmmsg` of 64 datagrams, or blocking GSO
/// `sendmsg` of 54 segments, until `stop`.
fn raw_send(sock: &UdpSocket, gso: bool, stop: &AtomicBool) {
    let fd = sock.as_raw_fd();
    let payload = vec![0x5Au8; LEN * GSO_SEGS.max(BATCH)];
    while !stop.load(Ordering::Relaxed) {
        if gso {
            let mut iov = libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: LEN * GSO_SEGS,
            };
            #[repr(C, align(8))]
            struct Cmsg([u8; 32]);
            let mut cbuf = Cmsg([0; 32]);
            // SAFETY: all-zero msghdr is valid; every pointer set below
            // points at live locals; the cmsg fits the 32-byte buffer.
            unsafe {
                let mut msg: libc::msghdr = zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = cbuf.0.as_mut_ptr().cast();
                msg.msg_controllen = libc::CMSG_SPACE(2) as _;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), LEN as u16);
                libc::sendmsg(fd, &msg, 0);
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
                libc::sendmmsg(fd, hdrs.as_mut_ptr(), BATCH as u32, 0);
            }
        }
    }
}

/// Raw receiver: blocking `recvmmsg` into 64 buffers (64 KiB each with GRO,
/// counting `len / segment` datagrams per buffer) until quiet after `done`.
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
    let mut bufs = vec![0u8; size * BATCH];
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
            for i in 0..BATCH {
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
            let rc = libc::recvmmsg(fd, hdrs.as_mut_ptr(), BATCH as u32, 0, std::ptr::null_mut());
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

fn link_send(sock: UdpSocket, peer: SocketAddr, mode: Mode, stop: &AtomicBool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let link = UdpLink::from_std(sock, peer, &link_config(mode)).unwrap();
        let (mut tx, _rx) = link.split();
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..BATCH {
                let mut slot = tx.reserve().await.unwrap().alloc(LEN).unwrap();
                slot.as_mut_slice()[0] = 0x5A;
                slot.commit().unwrap();
            }
        }
        tx.flush().await.unwrap();
    });
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

/// One sample: sender and receiver threads for `dur`; datagrams/s received.
fn sample(ours: bool, mode: Mode, dur: Duration) -> f64 {
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
            if ours {
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
            if ours {
                link_send(tx_sock, rx_addr, mode, &stop)
            } else {
                raw_send(&tx_sock, mode != Mode::Plain, &stop)
            }
        })
    };
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    done.store(true, Ordering::Relaxed);
    receiver.join().unwrap().rate()
}

/// Run the `udp` suite.
pub fn run(runner: &mut Runner, quick: bool) {
    let dur = Duration::from_millis(if quick { 300 } else { 1000 });
    for (mode, case, baseline) in [
        (Mode::Plain, "plain_1200B", "raw sendmmsg+recvmmsg"),
        (Mode::Gso, "gso_1200B", "raw GSO send+recvmmsg"),
        (Mode::GsoGro, "gso_gro_1200B", "raw GSO send+GRO recv"),
    ] {
        if !runner.wants(case) {
            continue;
        }
        runner.run(Case {
            case: case.into(),
            metric: "datagrams_per_s",
            unit: "dgram/s",
            better: Better::Higher,
            baseline_name: baseline,
            ours: Box::new(move || sample(true, mode, dur)),
            baseline: Box::new(move || sample(false, mode, dur)),
        });
    }
}
