//! The shared-memory link across real processes: the conformance suite
//! through a relay in a second process, peer death (SIGKILL), and a hostile
//! peer writing random bytes over the whole segment.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use link_shm::{ShmConfig, ShmLink, ShmListener};
use link_tests::LinkFactory;
use link_types::{Link, LinkError, LinkRx, LinkTx, LinkTxExt, LinkTxPermit, WriteSlot};

/// The `shm_peer` example, built by `cargo test` next to this test.
fn peer_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join("shm_peer");
    assert!(
        bin.exists(),
        "{} missing: build the examples",
        bin.display()
    );
    bin
}

fn socket_path() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "linkstream-shm-test-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Reap a child in the background once it exits by itself.
fn reap(mut child: Child) {
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

/// `a` and `b` in this process, joined through a relay in another process:
/// every message crosses two segments and a process boundary.
struct Relayed;

impl LinkFactory for Relayed {
    type Link = ShmLink;
    async fn pair(&self) -> (ShmLink, ShmLink) {
        let path = socket_path();
        let listener = ShmListener::bind(&path, &ShmConfig::default()).expect("bind");
        let child = Command::new(peer_bin())
            .arg("relay")
            .arg(&path)
            .spawn()
            .expect("spawn relay");
        let a = listener.accept().await.expect("accept a");
        let b = listener.accept().await.expect("accept b");
        let _ = std::fs::remove_file(&path);
        reap(child);
        (a, b)
    }

    fn max_held(&self) -> usize {
        // The relay holds one message per direction while it forwards.
        ShmConfig::default().small_count - 1
    }
}

mod across_processes {
    use super::*;
    link_tests::reliable_suite!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)], Relayed);
}

// r[verify shm.connect]
// r[verify shm.death]
/// SIGKILL the peer: `recv` ends with an error after what it had sent, and
/// `reserve` fails, each within a bound (the time is printed; the test
/// allows 2 s so that a loaded machine cannot fail it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_peer_is_detected() {
    let (link, mut child) =
        ShmLink::spawn(Command::new(peer_bin()).arg("hold"), &ShmConfig::default())
            .await
            .expect("spawn");
    let (mut tx, mut rx) = link.split();
    for i in 0..3u8 {
        let m = rx.recv().await.expect("recv").expect("message");
        assert_eq!(&*m, &[i; 100][..]);
    }
    child.kill().expect("kill");
    let t0 = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("recv hung");
    let recv_latency = t0.elapsed();
    assert!(
        matches!(end, Err(LinkError::PeerGone)),
        "{:?}",
        end.map(|m| m.map(|b| b.len()))
    );
    let t1 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tx.reserve().await {
                Ok(_permit) => {}
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("reserve hung");
    assert!(matches!(r, LinkError::PeerGone), "{r}");
    eprintln!(
        "peer death seen by recv after {recv_latency:?}, by reserve after {:?}",
        t1.elapsed()
    );
    // The bound is generous on purpose (a loaded machine must not fail
    // it): measured about 0.3 ms here, a margin of some 6000x.
    let bound = Duration::from_secs(2);
    eprintln!(
        "margin: {:.0}x below the {bound:?} bound",
        bound.as_secs_f64() / recv_latency.as_secs_f64().max(1e-9)
    );
    assert!(
        recv_latency < bound,
        "peer death took {recv_latency:?} to reach recv"
    );
    let _ = child.wait();
}

// r[verify shm.validate]
/// A second process writes random bytes over the whole segment while this
/// one keeps sending and receiving: no panic, no hang; the link ends with a
/// protocol error or keeps going, and validation failures are counted.
/// Odd seeds flood the segment (4096 words a round): there the checks must
/// fire, be counted and end the link with a protocol error, or the test
/// fails (a scribbler that had no effect proves nothing). Even seeds write
/// one word a millisecond: they check that a mostly intact segment neither
/// crashes nor hangs us.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peer_cannot_crash_or_hang_us() {
    for seed in 1..=6u64 {
        let config = ShmConfig {
            small_size: 256,
            small_count: 8,
            large_size: 64 << 10,
            large_count: 2,
            ..ShmConfig::default()
        };
        let (link, mut child) = ShmLink::spawn(
            Command::new(peer_bin())
                .arg("scribble")
                .arg(seed.to_string()),
            &config,
        )
        .await
        .expect("spawn");
        let stats = link.stats();
        let (mut tx, mut rx) = link.split();
        let work = async {
            let deadline = Instant::now() + Duration::from_millis(500);
            let (mut sent, mut got, mut errors, mut protocol) = (0u64, 0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                // Send when we can, without waiting long.
                match tokio::time::timeout(Duration::from_millis(5), tx.reserve()).await {
                    Ok(Ok(p)) => {
                        let mut s = p.alloc(((sent * 37) % 3000) as usize).expect("alloc");
                        s.as_mut_slice().fill(7);
                        s.commit().expect("commit");
                        sent += 1;
                    }
                    Ok(Err(e)) => {
                        errors += 1;
                        protocol += matches!(e, LinkError::Protocol(_)) as u64;
                    }
                    Err(_) => {}
                }
                match tokio::time::timeout(Duration::from_millis(5), rx.recv()).await {
                    Ok(Ok(Some(m))) => {
                        // Whatever it says, reading it must stay in bounds.
                        got += m.iter().map(|&b| b as u64).sum::<u64>() & 1;
                        got += 1;
                    }
                    Ok(Ok(None)) => errors += 1,
                    Ok(Err(e)) => {
                        errors += 1;
                        protocol += matches!(e, LinkError::Protocol(_)) as u64;
                    }
                    Err(_) => {}
                }
            }
            (sent, got, errors, protocol)
        };
        let (sent, got, errors, protocol) = tokio::time::timeout(Duration::from_secs(20), work)
            .await
            .expect("a hostile peer made the link hang");
        let s = stats.snapshot();
        eprintln!(
            "seed {seed}: sent {sent}, received {got}, errors {errors} ({protocol} protocol), {s:?}"
        );
        // A protocol error is only ever the result of a failed check of
        // shared memory, and every such failure is counted.
        assert!(
            protocol == 0 || s.validation_failures > 0,
            "protocol errors without a counted validation failure"
        );
        assert_eq!(
            errors, protocol,
            "a scribbled segment may only end the link with a protocol error"
        );
        if seed % 2 == 1 {
            assert!(
                s.validation_failures > 0 && protocol > 0,
                "seed {seed} flooded the segment and no validation failed: \
                 the checks were never reached"
            );
        } else {
            assert!(sent > 0, "seed {seed}: nothing could be sent at all");
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

// r[verify shm.connect]
/// Sending to a peer process over a path: a message arrives intact and the
/// receiver's bytes are the segment's own (zero-copy lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_cross_processes_without_copy() {
    let (a, b) = Relayed.pair().await;
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let frame: Vec<u8> = (0..(1 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    tx.send(&frame).await.unwrap();
    let m = rx.recv().await.unwrap().unwrap();
    assert!(m.is_leased(), "a shared-memory Backing leases the slot");
    assert_eq!(&*m, &frame[..]);
}

/// The offer's first word, as the creating side writes it.
const OFFER_MAGIC: u64 = 0x6c6e_6b73_686d_0001;

/// A memory file of `len` bytes whose first bytes are `head`.
fn memfd(len: usize, head: &[u8]) -> std::os::fd::OwnedFd {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: a valid NUL-terminated name and valid flags.
    let fd = unsafe { libc::memfd_create(c"bad-offer".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: `fd` is a fresh descriptor owned from here on.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(fd);
    f.set_len(len as u64).expect("ftruncate");
    f.write_all(head).expect("write");
    f.into()
}

/// Send `bytes` with `fds` attached (SCM_RIGHTS), as an offer is sent.
fn send_offer(sock: &std::os::unix::net::UnixStream, bytes: &[u8], fds: &[std::os::fd::OwnedFd]) {
    use std::os::fd::AsRawFd;
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let raw: Vec<libc::c_int> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let data_len = std::mem::size_of_val(&raw[..]) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
    let mut control = vec![0u8; space.max(1)];
    // SAFETY: an all-zero msghdr is valid; every pointer set below points
    // into `iov`, `control` and `raw`, which outlive the sendmsg call; the
    // cmsg header and data are written inside `control` (CMSG_SPACE bytes).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !raw.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(data_len) as _;
            std::ptr::copy_nonoverlapping(raw.as_ptr(), libc::CMSG_DATA(c).cast(), raw.len());
        }
        let n = libc::sendmsg(sock.as_raw_fd(), &msg, 0);
        assert_eq!(n, bytes.len() as isize, "sendmsg");
    }
}

// r[verify shm.connect]
/// Bad offers: a listener that is not ours (wrong magic), a short hello, an
/// offer without descriptors, a segment shorter than announced, a segment
/// whose header is garbage or whose sizes do not fit it. Each ends
/// `ShmLink::connect` with `ShmError::Protocol` naming the problem; none
/// panics, hangs or maps memory that is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offers_are_refused() {
    let hello = |magic: u64, len: u64| {
        let mut h = magic.to_le_bytes().to_vec();
        h.extend_from_slice(&len.to_le_bytes());
        h
    };
    let eventfds = || -> Vec<std::os::fd::OwnedFd> { (0..4).map(|_| memfd(8, &[])).collect() };
    // A header with the right magic and version but slot counts whose
    // layout is far larger than the segment.
    let mut big = Vec::new();
    for w in [
        OFFER_MAGIC as u32,
        (OFFER_MAGIC >> 32) as u32,
        3,
        4096,
        1 << 20,
        1 << 20,
        1 << 20,
        64,
    ] {
        big.extend_from_slice(&w.to_le_bytes());
    }
    type Offer = (&'static str, Vec<u8>, Vec<std::os::fd::OwnedFd>);
    let cases: Vec<(Offer, &str)> = vec![
        (
            ("wrong magic", hello(0xdead_beef, 4096), vec![]),
            "not a linkstream",
        ),
        (
            (
                "short hello",
                hello(OFFER_MAGIC, 4096)[..8].to_vec(),
                vec![],
            ),
            "not a linkstream",
        ),
        (
            ("no descriptors", hello(OFFER_MAGIC, 4096), vec![]),
            "descriptors offered",
        ),
        (
            (
                "segment shorter than announced",
                hello(OFFER_MAGIC, 1 << 20),
                {
                    let mut v = vec![memfd(4096, &[])];
                    v.extend(eventfds());
                    v
                },
            ),
            "segment",
        ),
        (
            ("garbage header", hello(OFFER_MAGIC, 65536), {
                let mut v = vec![memfd(65536, &[0xa5; 256])];
                v.extend(eventfds());
                v
            }),
            "bad magic",
        ),
        (
            (
                "layout larger than the segment",
                hello(OFFER_MAGIC, 65536),
                {
                    let mut v = vec![memfd(65536, &big)];
                    v.extend(eventfds());
                    v
                },
            ),
            "segment header",
        ),
    ];
    for ((name, bytes, fds), expect) in cases {
        let path = socket_path();
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (sock, _) = listener.accept().expect("accept");
            send_offer(&sock, &bytes, &fds);
            // Keep the socket open until the joiner has decided.
            let mut buf = [0u8; 1];
            let _ = std::io::Read::read(&mut &sock, &mut buf);
        });
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            ShmLink::connect(&path, &ShmConfig::default()),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: connect hung on a bad offer"));
        match r {
            Err(link_shm::ShmError::Protocol(why)) => {
                assert!(
                    why.contains(expect),
                    "{name}: refused for {why:?}, expected {expect:?}"
                )
            }
            Err(e) => panic!("{name}: refused with {e:?}, expected ShmError::Protocol"),
            Ok(_) => panic!("{name}: a bad offer was accepted"),
        }
        server.join().expect("offer thread");
        let _ = std::fs::remove_file(&path);
    }
}
