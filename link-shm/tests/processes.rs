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
    assert!(recv_latency < Duration::from_secs(2));
    let _ = child.wait();
}

// r[verify shm.validate]
/// A second process writes random bytes over the whole segment while this
/// one keeps sending and receiving: no panic, no hang; the link ends with a
/// protocol error or keeps going, and validation failures are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peer_cannot_crash_or_hang_us() {
    for seed in 1..=4u64 {
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
