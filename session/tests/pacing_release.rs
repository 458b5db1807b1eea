//! How the pacer hands datagrams to the link: all that is due at a wake-up
//! in one flush.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use link_session::{
    BweConfig, Client, ClientConfig, ClientEvent, FrameFlags, Host, HostConfig, PacingConfig,
};
use link_types::{
    Bottleneck, FaultSpec, Link, LinkCaps, LinkError, LinkTx, MemoryConfig, SplitLink, fault_pair,
    memory_pair,
};

/// What the host's sending half did.
#[derive(Default)]
struct Counts {
    flushes: AtomicUsize,
    /// Messages reserved since the last flush.
    pending: AtomicUsize,
    /// Most messages reserved between two flushes.
    most_per_flush: AtomicUsize,
}

/// A real link's sending half, counting flushes and the messages between
/// them (everything else is the inner link's).
struct Counting<T> {
    inner: T,
    c: Arc<Counts>,
}

impl<T: LinkTx> LinkTx for Counting<T> {
    type Permit<'a>
        = T::Permit<'a>
    where
        Self: 'a;

    fn caps(&self) -> LinkCaps {
        self.inner.caps()
    }

    async fn reserve(&mut self) -> Result<T::Permit<'_>, LinkError> {
        self.c.pending.fetch_add(1, Relaxed);
        self.inner.reserve().await
    }

    async fn flush(&mut self) -> Result<(), LinkError> {
        let n = self.c.pending.swap(0, Relaxed);
        self.c.most_per_flush.fetch_max(n, Relaxed);
        self.c.flushes.fetch_add(1, Relaxed);
        self.inner.flush().await
    }

    async fn close(&mut self) -> Result<(), LinkError> {
        self.inner.close().await
    }
}

// r[verify session.pacing.release]
#[test]
fn a_paced_frame_leaves_in_one_flush_per_release() {
    // A fixed 150 Mbit/s estimate: paced at 165 Mbit/s, about 20.6 kB per
    // ms; the bucket (2 ms) holds about 41 kB.
    let rate = 165_000_000u64;
    let cfg = HostConfig {
        bwe: BweConfig {
            start_bps: 150_000_000,
            min_bps: 150_000_000,
            max_bps: 150_000_000,
            probing: false,
            ..BweConfig::default()
        },
        pacing: PacingConfig::default(),
        ..HostConfig::default()
    };
    let (a, b) = memory_pair(MemoryConfig {
        capacity: 1 << 16,
        max_payload: 1500,
    });
    // A lossy link (the fault injector's bottleneck, far faster than the
    // rate with a queue that never fills): paced.
    let spec = FaultSpec {
        bottleneck: Some(Bottleneck::new(
            10_000_000_000,
            Duration::from_millis(50),
            Duration::ZERO,
        )),
        ..FaultSpec::none()
    };
    let (a, b) = fault_pair(a, b, spec, FaultSpec::none(), 1).unwrap();
    let counts = Arc::new(Counts::default());
    let (tx, rx) = a.split();
    let a = SplitLink::new(
        Counting {
            inner: tx,
            c: counts.clone(),
        },
        rx,
    );
    let frame = vec![7u8; 128 << 10];
    futures::executor::block_on(async {
        let host = async {
            let (mut host, mut events) = Host::accept(a, cfg).await.unwrap();
            // Idle: the bucket fills.
            futures_timer::Delay::new(Duration::from_millis(20)).await;
            let before = host.stats();
            let f0 = counts.flushes.load(Relaxed);
            counts.pending.store(0, Relaxed);
            counts.most_per_flush.store(0, Relaxed);
            let t = Instant::now();
            host.send_frame(&frame, 0, FrameFlags::KEYFRAME)
                .await
                .unwrap();
            let took = t.elapsed();
            let flushes = counts.flushes.load(Relaxed) - f0;
            let most = counts.most_per_flush.load(Relaxed);
            let s = host.stats();
            let n = (s.data_shards_sent + s.parity_shards_sent
                - before.data_shards_sent
                - before.parity_shards_sent) as usize;
            // A shard on the wire: its header (10 outer + 30 shard bytes),
            // the shard and the AES-GCM tag (16), if sealed.
            let p = host.params();
            assert!(!p.stream);
            let size = 10 + 30 + p.shard_size as usize + if p.encryption { 16 } else { 0 };
            host.close().await.unwrap();
            // Until the client's Bye.
            while events.next_event().await.unwrap().is_some() {}
            (n, size, flushes, most, took)
        };
        let client = async {
            let (mut client, mut input) =
                Client::connect(b, ClientConfig::default()).await.unwrap();
            let mut got = 0;
            while let Some(ev) = client.next_frame().await.unwrap() {
                assert!(matches!(ev, ClientEvent::Frame(_)), "{ev:?}");
                got += 1;
            }
            input.close().await.unwrap();
            got
        };
        let ((n, size, flushes, most, took), got) = futures::join!(host, client);
        assert_eq!(got, 1, "the frame is delivered");
        let wire = (n * size) as u64;
        let bucket = (rate / 8 / 500) as usize / size + 1;
        // Paced: what the bucket does not cover takes its time at the rate
        // (a late wake-up only makes it slower).
        let paced_us = (wire.saturating_sub((bucket * size) as u64)) * 8_000_000 / rate;
        assert!(
            took >= Duration::from_micros(paced_us * 9 / 10),
            "took {took:?}, {paced_us} µs at the rate"
        );
        // One flush for the bucket, then one per batch of 8 (late
        // wake-ups release more at once: fewer flushes), one for the
        // frame's tail and one as `send_frame` ends. (Flushing after every
        // batch of 8, the bucket too, took 16 for 113 datagrams.)
        let most_flushes = 3 + n.saturating_sub(bucket).div_ceil(8);
        assert!(
            flushes <= most_flushes,
            "{flushes} flushes for {n} datagrams of {size} bytes, at most {most_flushes}"
        );
        // No flush carries more than the bucket holds.
        assert!(
            most <= bucket + 1,
            "{most} datagrams in one flush, bucket {bucket}"
        );
    });
}
