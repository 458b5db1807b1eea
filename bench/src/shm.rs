//! `shm`: the shared-memory link between two processes, against the floors
//! and the alternatives, side by side:
//! - one-way latency (half a 64 B round trip): our link spinning vs a raw
//!   atomic ping-pong over a shared mapping (the floor) and vs a bare
//!   64 B message ring (the same message layout with no link around it;
//!   the bare ring against the atomic floor is reported too, as a
//!   reference); our link sleeping vs a raw eventfd ping-pong; and vs a
//!   Unix domain socket pair;
//! - 8 MiB frames where the writer fills each slot and the reader reads
//!   every byte: vs the same fill and read in one process's memory (the
//!   floor) and vs a Unix domain socket.
//!
//! - the same latency (spinning) and frames with iceoryx2 publish-subscribe
//!   (polling subscribers), the shared-memory library a user would pick
//!   instead.
//!
//! The second process is this binary again (`link-bench __shm-child …`),
//! pinned to CPU 1 while the parent runs on CPU 0, for ours and the
//! baselines alike.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use link_shm::{ShmConfig, ShmLink};
use link_types::{Link, LinkRx, LinkTx, LinkTxPermit, WriteSlot};

use crate::harness::{Better, Case, Runner, pin};

const FRAME: usize = 8 << 20;
/// Frame buffers in flight, for our link (large slots), iceoryx2
/// (subscriber buffer) and the bare pipeline alike. Two measured best on
/// this machine for every one of them: each more 8 MiB buffer in the cycle
/// pushes the working set further out of the shared cache (a bare
/// two-process pipeline ran at 1.05x the in-process floor with 2 buffers,
/// 0.85x with 3, 0.65x with 4, 0.53x with 6).
const FRAME_SLOTS: usize = 2;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn link_config(spin: Duration) -> ShmConfig {
    ShmConfig {
        large_size: FRAME,
        large_count: FRAME_SLOTS,
        spin,
        ..ShmConfig::default()
    }
}

fn child_command(mode: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("own path"));
    c.arg("__shm-child").arg(mode).stdin(Stdio::null());
    c
}

/// Sum of every byte, eight at a time: the reader touches the whole frame.
fn read_all(b: &[u8]) -> u64 {
    let mut s = 0u64;
    let chunks = b.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        s = s.wrapping_add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    for &x in rest {
        s = s.wrapping_add(x as u64);
    }
    s
}

/// Keep a descriptor open across `exec` and name it to the child.
fn pass_fd(cmd: &mut Command, name: &str, fd: &impl AsRawFd) {
    // SAFETY: fcntl on a descriptor we own; clearing FD_CLOEXEC only.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0);
    }
    cmd.env(name, fd.as_raw_fd().to_string());
}

/// Adopt a descriptor named by the parent in the environment.
fn inherited(name: &str) -> OwnedFd {
    let fd: i32 = std::env::var(name)
        .expect("fd variable")
        .parse()
        .expect("fd number");
    // SAFETY: the parent passed this descriptor to us for our sole use.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn memfd(len: usize) -> OwnedFd {
    // SAFETY: valid name and flags; the result is checked and then owned.
    let fd = unsafe { libc::memfd_create(c"link-bench".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: our memfd, a length that fits off_t.
    assert_eq!(
        unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) },
        0
    );
    fd
}

/// Map `len` bytes of a memfd at least that long, shared; never unmapped
/// (the bench process exits after use).
fn map_shared(fd: &OwnedFd, len: usize) -> *mut u8 {
    // SAFETY: a shared mapping of a memfd at least `len` bytes long; the
    // kernel picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

/// 64-bit words of a shared page.
struct Words(*mut AtomicU64);

impl Words {
    fn map(fd: &OwnedFd) -> Words {
        Words(map_shared(fd, 4096).cast())
    }

    /// 64-bit word `w` of the page (`w < 512`).
    fn word(&self, w: usize) -> &AtomicU64 {
        assert!(w < 512);
        // SAFETY: inside the mapped page, aligned; never unmapped while
        // `self` lives (the bench process exits after use).
        unsafe { &*self.0.add(w) }
    }

    /// The 64-bit word starting cache line `i` of the page.
    fn get(&self, i: usize) -> &AtomicU64 {
        self.word(i * 8)
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

static IOX_N: AtomicU64 = AtomicU64::new(0);

/// A service name unique to this run and sample.
fn iox_base() -> String {
    format!(
        "linkstream-bench/{}/{}",
        std::process::id(),
        IOX_N.fetch_add(1, Ordering::Relaxed)
    )
}

type IoxService = iceoryx2::service::port_factory::publish_subscribe::PortFactory<
    iceoryx2::service::ipc::Service,
    [u8],
    (),
>;

/// Open (or create) a `[u8]` publish-subscribe service; both processes use
/// the same settings.
fn iox_service(
    node: &iceoryx2::node::Node<iceoryx2::service::ipc::Service>,
    name: &str,
) -> IoxService {
    let name: iceoryx2::service::service_name::ServiceName = name.try_into().expect("service name");
    node.service_builder(&name)
        .publish_subscribe::<[u8]>()
        .subscriber_max_buffer_size(FRAME_SLOTS)
        .enable_safe_overflow(false)
        .open_or_create()
        .expect("iceoryx2 service")
}

fn iox_node() -> iceoryx2::node::Node<iceoryx2::service::ipc::Service> {
    iceoryx2::node::NodeBuilder::new()
        .create::<iceoryx2::service::ipc::Service>()
        .expect("iceoryx2 node")
}

/// Wait until the other process has its ports on both services.
fn iox_wait_for_peer(out: &IoxService, back: &IoxService) {
    use iceoryx2::service::port_factory::PortFactory as _;
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.dynamic_config().number_of_subscribers() == 0
        || back.dynamic_config().number_of_publishers() == 0
    {
        assert!(Instant::now() < deadline, "iceoryx2 peer did not appear");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The child side of every case.
pub fn child(mode: &str) {
    pin(1);
    match mode {
        "iox-echo" | "iox-sink" => {
            let base = std::env::var("BENCH_IOX").expect("service name");
            let node = iox_node();
            let (inbound, outbound) = (
                iox_service(&node, &format!("{base}/out")),
                iox_service(&node, &format!("{base}/back")),
            );
            let sub = inbound.subscriber_builder().create().expect("subscriber");
            let publ = outbound
                .publisher_builder()
                .initial_max_slice_len(64)
                .backpressure_strategy(iceoryx2::port::backpressure_strategy::BackpressureStrategy::RetryUntilDelivered)
                .create()
                .expect("publisher");
            let mut sum = 0u64;
            loop {
                match sub.receive().expect("receive") {
                    Some(sample) => {
                        let p = sample.payload();
                        if mode == "iox-echo" {
                            if p.len() == 1 {
                                return;
                            }
                            publ.loan_slice_uninit(p.len())
                                .expect("loan")
                                .write_from_slice(p)
                                .send()
                                .expect("send");
                        } else if p.len() == 1 {
                            return;
                        } else if p.len() == 8 {
                            publ.loan_slice_uninit(8)
                                .expect("loan")
                                .write_from_slice(&sum.to_le_bytes())
                                .send()
                                .expect("send");
                        } else {
                            sum = sum.wrapping_add(read_all(p));
                        }
                    }
                    None => std::hint::spin_loop(),
                }
            }
        }
        "link-echo-spin" | "link-echo-sleep" => runtime().block_on(async {
            let spin = if mode == "link-echo-spin" {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            };
            let link = ShmLink::from_parent(&link_config(spin))
                .await
                .expect("join");
            let (mut tx, mut rx) = link.split();
            while let Ok(Some(m)) = rx.recv().await {
                let mut s = tx
                    .reserve()
                    .await
                    .expect("reserve")
                    .alloc(m.len())
                    .expect("alloc");
                s.as_mut_slice().copy_from_slice(&m);
                s.commit().expect("commit");
            }
        }),
        "link-sink" => runtime().block_on(async {
            let link = ShmLink::from_parent(&link_config(Duration::from_micros(50)))
                .await
                .expect("join");
            let (mut tx, mut rx) = link.split();
            let mut sum = 0u64;
            while let Ok(Some(m)) = rx.recv().await {
                if m.len() == 8 {
                    // End marker: report what was read.
                    let mut s = tx
                        .reserve()
                        .await
                        .expect("reserve")
                        .alloc(8)
                        .expect("alloc");
                    s.as_mut_slice().copy_from_slice(&sum.to_le_bytes());
                    s.commit().expect("commit");
                } else {
                    sum = sum.wrapping_add(read_all(&m));
                }
            }
        }),
        "atomic-echo" => {
            let w = Words::map(&inherited("BENCH_MEMFD"));
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
        "pipe-sink" => {
            let fd = inherited("BENCH_MEMFD");
            let w = Words::map(&fd);
            let frames = map_shared(&fd, PIPE_LEN);
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
        "ring-echo" => {
            let w = Words::map(&inherited("BENCH_MEMFD"));
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
        "eventfd-echo" => {
            let (a, b) = (inherited("BENCH_EFD_A"), inherited("BENCH_EFD_B"));
            loop {
                ev_read(&a);
                ev_write(&b);
            }
        }
        "uds-echo" => {
            let mut s = UnixStream::from(inherited("BENCH_UDS"));
            let mut buf = [0u8; 64];
            while s.read_exact(&mut buf).is_ok() {
                if s.write_all(&buf).is_err() {
                    return;
                }
            }
        }
        "uds-sink" => {
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
        other => panic!("unknown child mode {other}"),
    }
}

fn finish(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Let a child that was told to stop exit by itself (so that iceoryx2 can
/// clean up its node), killing it only if it does not.
fn finish_graceful(mut child: Child) {
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    finish(child);
}

/// Our link, 64 B round trips; one-way latency in µs.
fn link_latency(spin: bool, count: usize) -> f64 {
    pin(0);
    runtime().block_on(async {
        let mode = if spin {
            "link-echo-spin"
        } else {
            "link-echo-sleep"
        };
        let cfg = link_config(if spin {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        });
        let (link, child) = ShmLink::spawn(&mut child_command(mode), &cfg)
            .await
            .expect("spawn");
        let (mut tx, mut rx) = link.split();
        let mut one = async |i: usize| {
            let mut s = tx
                .reserve()
                .await
                .expect("reserve")
                .alloc(64)
                .expect("alloc");
            s.as_mut_slice()[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s.commit().expect("commit");
            assert_eq!(rx.recv().await.expect("recv").expect("echo").len(), 64);
        };
        for i in 0..count / 10 {
            one(i).await;
        }
        let start = Instant::now();
        for i in 0..count {
            one(i).await;
        }
        let us = start.elapsed().as_secs_f64() / count as f64 / 2.0 * 1e6;
        finish(child);
        us
    })
}

fn atomic_latency(count: usize) -> f64 {
    pin(0);
    let fd = memfd(4096);
    let mut cmd = child_command("atomic-echo");
    pass_fd(&mut cmd, "BENCH_MEMFD", &fd);
    let child = cmd.spawn().expect("spawn");
    let w = Words::map(&fd);
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
fn raw_ring_latency(count: usize) -> f64 {
    pin(0);
    let fd = memfd(4096);
    let mut cmd = child_command("ring-echo");
    pass_fd(&mut cmd, "BENCH_MEMFD", &fd);
    let child = cmd.spawn().expect("spawn");
    let w = Words::map(&fd);
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

fn eventfd_latency(count: usize) -> f64 {
    pin(0);
    let (a, b) = (eventfd(), eventfd());
    let mut cmd = child_command("eventfd-echo");
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

fn uds_latency(count: usize) -> f64 {
    pin(0);
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut cmd = child_command("uds-echo");
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

/// iceoryx2, 64 B round trips with polling subscribers; one-way µs.
fn iox_latency(count: usize) -> f64 {
    pin(0);
    let base = iox_base();
    let node = iox_node();
    let (out, back) = (
        iox_service(&node, &format!("{base}/out")),
        iox_service(&node, &format!("{base}/back")),
    );
    let publ = out
        .publisher_builder()
        .initial_max_slice_len(64)
        .backpressure_strategy(
            iceoryx2::port::backpressure_strategy::BackpressureStrategy::RetryUntilDelivered,
        )
        .create()
        .expect("publisher");
    let sub = back.subscriber_builder().create().expect("subscriber");
    let child = child_command("iox-echo")
        .env("BENCH_IOX", &base)
        .spawn()
        .expect("spawn");
    iox_wait_for_peer(&out, &back);
    let rt = |i: usize| {
        publ.loan_slice_uninit(64)
            .expect("loan")
            .write_from_fn(|k| (k + i) as u8)
            .send()
            .expect("send");
        loop {
            if let Some(s) = sub.receive().expect("receive") {
                assert_eq!(s.payload().len(), 64);
                break;
            }
            std::hint::spin_loop();
        }
    };
    for i in 0..count / 10 {
        rt(i);
    }
    let start = Instant::now();
    for i in 0..count {
        rt(i);
    }
    let us = start.elapsed().as_secs_f64() / count as f64 / 2.0 * 1e6;
    let _ = publ
        .loan_slice_uninit(1)
        .map(|s| s.write_from_fn(|_| 0).send());
    finish_graceful(child);
    us
}

/// iceoryx2, 8 MiB frames written into loaned samples and read in full.
fn iox_frames(frames: usize) -> f64 {
    pin(0);
    let base = iox_base();
    let node = iox_node();
    let (out, back) = (
        iox_service(&node, &format!("{base}/out")),
        iox_service(&node, &format!("{base}/back")),
    );
    let publ = out
        .publisher_builder()
        .initial_max_slice_len(FRAME)
        .backpressure_strategy(
            iceoryx2::port::backpressure_strategy::BackpressureStrategy::RetryUntilDelivered,
        )
        .create()
        .expect("publisher");
    let sub = back.subscriber_builder().create().expect("subscriber");
    let child = child_command("iox-sink")
        .env("BENCH_IOX", &base)
        .spawn()
        .expect("spawn");
    iox_wait_for_peer(&out, &back);
    let start = Instant::now();
    for i in 0..frames {
        publ.loan_slice_uninit(FRAME)
            .expect("loan")
            .write_from_fn(|_| i as u8)
            .send()
            .expect("send");
    }
    publ.loan_slice_uninit(8)
        .expect("loan")
        .write_from_fn(|_| 0)
        .send()
        .expect("send");
    loop {
        if let Some(s) = sub.receive().expect("receive") {
            assert_eq!(s.payload().len(), 8);
            break;
        }
        std::hint::spin_loop();
    }
    let gbs = (frames * FRAME) as f64 / start.elapsed().as_secs_f64() / 1e9;
    let _ = publ
        .loan_slice_uninit(1)
        .map(|s| s.write_from_fn(|_| 0).send());
    finish_graceful(child);
    gbs
}

/// Our link, 8 MiB frames written into slots and read in full by the
/// child; GB/s.
fn link_frames(frames: usize) -> f64 {
    pin(0);
    runtime().block_on(async {
        let cfg = link_config(Duration::from_micros(50));
        let (link, child) = ShmLink::spawn(&mut child_command("link-sink"), &cfg)
            .await
            .expect("spawn");
        let (mut tx, mut rx) = link.split();
        let start = Instant::now();
        for i in 0..frames {
            let mut s = tx
                .reserve()
                .await
                .expect("reserve")
                .alloc(FRAME)
                .expect("alloc");
            s.as_mut_slice().fill(i as u8);
            s.commit().expect("commit");
        }
        let mut s = tx
            .reserve()
            .await
            .expect("reserve")
            .alloc(8)
            .expect("alloc");
        s.as_mut_slice().fill(0);
        s.commit().expect("commit");
        let sum = rx.recv().await.expect("recv").expect("sum");
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(sum.len(), 8);
        finish(child);
        (frames * FRAME) as f64 / secs / 1e9
    })
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
fn bare_pipeline_frames(frames: usize) -> f64 {
    pin(0);
    let fd = memfd(PIPE_LEN);
    let mut cmd = child_command("pipe-sink");
    pass_fd(&mut cmd, "BENCH_MEMFD", &fd);
    let child = cmd.spawn().expect("spawn");
    let w = Words::map(&fd);
    let mem = map_shared(&fd, PIPE_LEN);
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

/// The floor: fill and read the same bytes in one process's memory.
fn local_frames(frames: usize) -> f64 {
    pin(0);
    let mut buf = vec![0u8; FRAME];
    let start = Instant::now();
    let mut sum = 0u64;
    for i in 0..frames {
        buf.fill(i as u8);
        sum = sum.wrapping_add(read_all(std::hint::black_box(&buf)));
    }
    std::hint::black_box(sum);
    (frames * FRAME) as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn uds_frames(frames: usize) -> f64 {
    pin(0);
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut cmd = child_command("uds-sink");
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

/// Run the `shm` suite.
pub fn run(runner: &mut Runner, quick: bool) {
    let scale = if quick { 1 } else { 5 };
    let n = 20_000 * scale;
    let n_sleep = 4_000 * scale;
    let frames = 60 * scale;
    runner.run(Case {
        case: "latency_64B_spin".into(),
        metric: "one_way_latency",
        unit: "us",
        better: Better::Lower,
        baseline_name: "raw atomic ping-pong over shared memory (floor)",
        ours: Box::new(|| link_latency(true, n)),
        baseline: Box::new(|| atomic_latency(n)),
    });
    runner.run(Case {
        case: "latency_64B_spin_vs_bare_ring".into(),
        metric: "one_way_latency",
        unit: "us",
        better: Better::Lower,
        baseline_name: "bare 64 B message ring, no link (two cache lines)",
        ours: Box::new(|| link_latency(true, n)),
        baseline: Box::new(|| raw_ring_latency(n)),
    });
    runner.run(Case {
        case: "bare_ring_64B_vs_atomic".into(),
        metric: "one_way_latency",
        unit: "us",
        better: Better::Lower,
        baseline_name: "raw atomic ping-pong (reference: the bare ring is not our link)",
        ours: Box::new(|| raw_ring_latency(n)),
        baseline: Box::new(|| atomic_latency(n)),
    });
    runner.run(Case {
        case: "latency_64B_spin_vs_iceoryx2".into(),
        metric: "one_way_latency",
        unit: "us",
        better: Better::Lower,
        baseline_name: "iceoryx2 publish-subscribe, polling",
        ours: Box::new(|| link_latency(true, n)),
        baseline: Box::new(|| iox_latency(n)),
    });
    runner.run(Case {
        case: "latency_64B_sleep".into(),
        metric: "one_way_latency",
        unit: "us",
        better: Better::Lower,
        baseline_name: "raw eventfd ping-pong",
        ours: Box::new(|| link_latency(false, n_sleep)),
        baseline: Box::new(|| eventfd_latency(n_sleep)),
    });
    runner.run(Case {
        case: "latency_64B_vs_uds".into(),
        metric: "one_way_latency",
        unit: "us",
        better: Better::Lower,
        baseline_name: "Unix domain socket pair",
        ours: Box::new(|| link_latency(false, n_sleep)),
        baseline: Box::new(|| uds_latency(n_sleep)),
    });
    runner.run(Case {
        case: "frames_8MiB".into(),
        metric: "bytes_per_s",
        unit: "GB/s",
        better: Better::Higher,
        baseline_name: "fill + read in one process (floor)",
        ours: Box::new(|| link_frames(frames)),
        baseline: Box::new(|| local_frames(frames)),
    });
    runner.run(Case {
        case: "frames_8MiB_vs_uds".into(),
        metric: "bytes_per_s",
        unit: "GB/s",
        better: Better::Higher,
        baseline_name: "Unix domain socket pair",
        ours: Box::new(|| link_frames(frames)),
        baseline: Box::new(|| uds_frames(frames)),
    });
    runner.run(Case {
        case: "frames_8MiB_vs_bare_pipeline".into(),
        metric: "bytes_per_s",
        unit: "GB/s",
        better: Better::Higher,
        baseline_name: "bare two-process pipeline, no link",
        ours: Box::new(|| link_frames(frames)),
        baseline: Box::new(|| bare_pipeline_frames(frames)),
    });
    runner.run(Case {
        case: "bare_pipeline_8MiB_vs_uds".into(),
        metric: "bytes_per_s",
        unit: "GB/s",
        better: Better::Higher,
        baseline_name: "Unix domain socket pair (reference: the bare pipeline is not our link)",
        ours: Box::new(|| bare_pipeline_frames(frames)),
        baseline: Box::new(|| uds_frames(frames)),
    });
    runner.run(Case {
        case: "frames_8MiB_vs_iceoryx2".into(),
        metric: "bytes_per_s",
        unit: "GB/s",
        better: Better::Higher,
        baseline_name: "iceoryx2 publish-subscribe, polling",
        ours: Box::new(|| link_frames(frames)),
        baseline: Box::new(|| iox_frames(frames)),
    });
}
