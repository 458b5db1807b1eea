//! Shared-memory behaviour beyond the conformance suite, in one process.

use std::time::Duration;

use link_shm::{ShmConfig, ShmLink};
use link_types::{Link, LinkRx, LinkTx, LinkTxExt, LinkTxPermit, WriteSlot};

fn config() -> ShmConfig {
    ShmConfig {
        small_size: 256,
        small_count: 16,
        large_size: 64 << 10,
        large_count: 2,
        ..ShmConfig::default()
    }
}

// r[verify shm.classes]
/// Small messages in flight do not hold large slots: with every small slot
/// full and unread, a maximum-size frame still goes out at once.
#[tokio::test]
async fn small_messages_do_not_hold_frame_space() {
    let (a, b) = ShmLink::pair(&config()).unwrap();
    let stats = a.stats();
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    for i in 0..16u8 {
        tx.send(&[i; 200]).await.unwrap();
    }
    let frame = vec![9u8; 64 << 10];
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(1), tx.send(&frame))
            .await
            .expect("a frame waited behind small messages")
            .unwrap();
    }
    let s = stats.snapshot();
    assert_eq!((s.tx_small, s.tx_large), (16, 2));
    for i in 0..16u8 {
        assert_eq!(&*rx.recv().await.unwrap().unwrap(), &[i; 200][..]);
    }
    assert_eq!(rx.recv().await.unwrap().unwrap().len(), 64 << 10);
}

// r[verify shm.zero-copy]
// r[verify shm.backpressure]
/// A received message is a lease on the segment; while leases hold every
/// large slot `reserve` waits, and dropping one on another thread lets it
/// go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_lease_on_another_thread_frees_its_slot() {
    let (a, b) = ShmLink::pair(&config()).unwrap();
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let frame = vec![3u8; 60 << 10];
    tx.send(&frame).await.unwrap();
    tx.send(&frame).await.unwrap();
    let m1 = rx.recv().await.unwrap().unwrap();
    let m2 = rx.recv().await.unwrap().unwrap();
    assert!(m1.is_leased() && m2.is_leased());
    assert!(
        tokio::time::timeout(Duration::from_millis(200), tx.reserve())
            .await
            .is_err(),
        "reserve was granted while both large slots are leased"
    );
    std::thread::spawn(move || drop(m1)).join().unwrap();
    let p = tokio::time::timeout(Duration::from_secs(5), tx.reserve())
        .await
        .expect("reserve did not wake when a lease was dropped")
        .unwrap();
    let mut s = p.alloc(frame.len()).unwrap();
    s.as_mut_slice().copy_from_slice(&frame);
    s.commit().unwrap();
    assert_eq!(&*m2, &frame[..]);
    assert_eq!(&*rx.recv().await.unwrap().unwrap(), &frame[..]);
}

fn cpu_time() -> Duration {
    let mut ru: libc_rusage::Rusage = Default::default();
    libc_rusage::get(&mut ru);
    ru.total()
}

/// A tiny `getrusage` wrapper for the idle test.
mod libc_rusage {
    use std::time::Duration;

    #[derive(Default)]
    pub struct Rusage {
        user: Duration,
        sys: Duration,
    }

    impl Rusage {
        pub fn total(&self) -> Duration {
            self.user + self.sys
        }
    }

    pub fn get(out: &mut Rusage) {
        // This thread only (the test's single-threaded runtime runs the
        // whole link here; tests on other threads do not count): fields 14
        // and 15 of /proc/thread-self/stat, user and system time in ticks.
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let tick = 100.0; // USER_HZ on Linux
        let t = |s: &str| Duration::from_secs_f64(s.parse::<f64>().unwrap() / tick);
        out.user = t(f[11]);
        out.sys = t(f[12]);
    }
}

// r[verify shm.wake]
/// An idle pair with a receiver waiting sleeps: over 2 s the thread running
/// both ends uses well under 5% of a core (the measured figure is printed),
/// and one message to the sleeping receiver costs exactly one wake-up.
#[tokio::test]
async fn idle_link_sleeps_and_wakes_once() {
    let (a, b) = ShmLink::pair(&ShmConfig::default()).unwrap();
    let stats = a.stats();
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    let waiter = tokio::spawn(async move {
        let m = rx.recv().await.unwrap().unwrap().to_vec();
        (m, rx)
    });
    let before = cpu_time();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_time() - before;
    eprintln!("idle pair: {used:?} of CPU in 2 s");
    assert!(
        used < Duration::from_millis(100),
        "an idle link used {used:?} of CPU in 2 s"
    );
    tx.send(b"wake").await.unwrap();
    let (m, _rx) = waiter.await.unwrap();
    assert_eq!(m, b"wake");
    assert_eq!(stats.snapshot().wakeups_sent, 1);
}

// r[verify shm.close]
/// Close is end-of-stream after the messages; a dropped sender is
/// `PeerGone` after them; a dropped receiver fails the writer's `reserve`.
#[tokio::test]
async fn close_and_drops_end_the_stream() {
    use link_types::LinkError;
    let (a, b) = ShmLink::pair(&config()).unwrap();
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    tx.send(b"one").await.unwrap();
    tx.close().await.unwrap();
    assert_eq!(&*rx.recv().await.unwrap().unwrap(), b"one");
    assert!(rx.recv().await.unwrap().is_none());

    let (a, b) = ShmLink::pair(&config()).unwrap();
    let (mut tx, _arx) = a.split();
    let (_btx, mut rx) = b.split();
    tx.send(b"two").await.unwrap();
    drop(tx);
    assert_eq!(&*rx.recv().await.unwrap().unwrap(), b"two");
    assert!(matches!(rx.recv().await, Err(LinkError::PeerGone)));

    let (a, b) = ShmLink::pair(&config()).unwrap();
    let (mut tx, _arx) = a.split();
    let (_btx, rx) = b.split();
    drop(rx);
    assert!(matches!(tx.reserve().await, Err(LinkError::PeerGone)));
}

// r[verify shm.lend]
/// A slot lent to a third party: what it writes through the memory file
/// at the slot's offset (here `pwrite` on a duplicate of the descriptor,
/// as an X server writes through its own mapping) is what the reader
/// receives, with no write through the slot's slice; a message that sits
/// in its ring entry has no slot to lend. Both directions, both classes.
#[tokio::test]
async fn a_lent_slot_carries_what_the_third_party_wrote() {
    use std::os::unix::fs::FileExt;
    let (a, b) = ShmLink::pair(&config()).unwrap();
    let (mut atx, mut arx) = a.split();
    let (mut btx, mut brx) = b.split();
    for (round, len) in [(1u8, 60_000usize), (2, 200), (3, 64 << 10)] {
        for (tx, rx) in [(&mut atx, &mut brx), (&mut btx, &mut arx)] {
            let permit = tx.reserve().await.unwrap();
            let slot = permit.alloc(len).unwrap();
            let lent = slot.lend().expect("a message of its own slot");
            assert_eq!(lent.len, len);
            assert!(lent.offset as usize + len <= lent.segment_len);
            let file = std::fs::File::from(lent.fd.try_clone_to_owned().unwrap());
            assert!(file.metadata().unwrap().len() as usize >= lent.segment_len);
            let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(round)).collect();
            file.write_all_at(&bytes, lent.offset).unwrap();
            slot.commit().unwrap();
            let got = rx.recv().await.unwrap().unwrap();
            assert_eq!(got.as_slice(), &bytes[..], "{len} bytes, round {round}");
        }
    }
    let permit = atx.reserve().await.unwrap();
    let inline = permit.alloc(16).unwrap();
    assert!(inline.lend().is_none(), "an inline message has no slot");
}
