//! Pacing and bandwidth estimation end to end: a host and a client over the
//! in-memory link with the fault injector's bottleneck in between.

use std::time::{Duration, Instant};

use futures::future::{Either, select};
use link_session::{
    BweConfig, Client, ClientConfig, ClientEvent, FrameFlags, Host, HostConfig, HostEvent,
    HostStats, PacingConfig,
};
use link_types::{Bottleneck, FaultSpec, MemoryConfig, fault_pair, memory_pair};

const FPS: u64 = 60;

struct Run {
    host: HostStats,
    events: Vec<HostEvent>,
    frames: u32,
    lost: u32,
    keyframes_lost: u32,
    queue_dropped: u64,
}

/// A keyframe-heavy stream (a keyframe 8x a P-frame every 60 frames) at
/// `bps` for `frames` frames through `bottleneck` (host to client).
fn stream(bottleneck: Bottleneck, bps: u64, frames: u32, host_cfg: HostConfig) -> Run {
    let (a, b) = memory_pair(MemoryConfig {
        capacity: 1 << 16,
        max_payload: 1500,
    });
    let spec = FaultSpec {
        bottleneck: Some(bottleneck),
        ..FaultSpec::none()
    };
    let (a, b) = fault_pair(a, b, spec, FaultSpec::none(), 7).unwrap();
    let dropped = b.stats();
    let p_size = (bps / 8 / 67) as usize; // 59 P + one 8x keyframe per 60 frames
    futures::executor::block_on(async move {
        let host = async {
            let (mut host, mut events) = Host::accept(a, host_cfg).await.unwrap();
            let mut seen = Vec::new();
            let start = Instant::now();
            for i in 0..frames {
                let key = i % 60 == 0;
                let len = if key { 8 * p_size } else { p_size };
                let data = vec![(i % 251) as u8; len];
                let flags = if key {
                    FrameFlags::KEYFRAME
                } else {
                    FrameFlags::default()
                };
                host.send_frame(&data, i as u64, flags).await.unwrap();
                // Keep the event side running between frames.
                let due = start + Duration::from_micros(1_000_000 * (i as u64 + 1) / FPS);
                loop {
                    let wait = due.saturating_duration_since(Instant::now());
                    if wait.is_zero() {
                        break;
                    }
                    let timer = futures_timer::Delay::new(wait);
                    match select(Box::pin(events.next_event()), timer).await {
                        Either::Left((ev, _)) => {
                            if let Some(ev) = ev.unwrap() {
                                seen.push(ev);
                            }
                        }
                        Either::Right(_) => break,
                    }
                }
            }
            host.close().await.unwrap();
            // Drain events until the client's Bye.
            while let Some(ev) = events.next_event().await.unwrap() {
                seen.push(ev);
            }
            (host.stats(), seen)
        };
        let client = async {
            let (mut client, mut input) =
                Client::connect(b, ClientConfig::default()).await.unwrap();
            let (mut got, mut lost, mut keys_lost) = (0u32, 0u32, 0u32);
            while let Some(ev) = client.next_frame().await.unwrap() {
                match ev {
                    ClientEvent::Frame(f) => {
                        assert_eq!(f.data()[0], (f.index % 251) as u8);
                        got += 1;
                    }
                    ClientEvent::Lost { first, count } => {
                        lost += count;
                        keys_lost += (first..first + count).filter(|i| i % 60 == 0).count() as u32;
                    }
                }
            }
            input.close().await.unwrap();
            (got, lost, keys_lost)
        };
        let ((host, events), (got, lost, keyframes_lost)) = futures::join!(host, client);
        Run {
            host,
            events,
            frames: got,
            lost,
            keyframes_lost,
            queue_dropped: dropped.snapshot().queue_dropped,
        }
    })
}

// r[verify session.pacing.keyframes]
// r[verify session.pacing.frames]
// r[verify session.bwe.feedback]
// r[verify session.bwe.event]
#[test]
fn keyframes_cross_a_shallow_bottleneck_only_when_paced() {
    // 10 Mbit/s through 20 Mbit/s with 20 ms of queue (50 kB): a keyframe
    // is about 150 kB plus parity.
    let neck = Bottleneck::new(
        20_000_000,
        Duration::from_millis(20),
        Duration::from_millis(5),
    );
    let frames = 150;
    let paced = stream(neck, 10_000_000, frames, HostConfig::default());
    let h = &paced.host;
    eprintln!(
        "paced: delivered {} lost {} (keyframes {}), queue drops {}, {}",
        paced.frames,
        paced.lost,
        paced.keyframes_lost,
        paced.queue_dropped,
        h.to_json()
    );
    assert_eq!(paced.frames, frames, "every frame delivered when paced");
    assert_eq!(paced.lost, 0);
    assert!(h.arrivals_received > 0, "arrival reports reached the host");
    assert!(h.estimate_bps > 0 && h.target_bps > 0 && h.pacing_bps > 0);
    // A keyframe (~180 kB on the wire) at the pacing rate is spread over
    // tens of milliseconds, not written at once.
    assert!(
        h.frame_send_spread_max_us >= 20_000,
        "spread {}",
        h.frame_send_spread_max_us
    );
    assert!(
        paced
            .events
            .iter()
            .any(|e| matches!(e, HostEvent::TargetBitrate { bps } if *bps > 0)),
        "a TargetBitrate event"
    );

    let unpaced = stream(
        neck,
        10_000_000,
        frames,
        HostConfig {
            pacing: PacingConfig {
                enabled: false,
                ..PacingConfig::default()
            },
            ..HostConfig::default()
        },
    );
    eprintln!(
        "unpaced: delivered {} lost {} (keyframes {}), queue drops {}",
        unpaced.frames, unpaced.lost, unpaced.keyframes_lost, unpaced.queue_dropped
    );
    assert!(
        unpaced.keyframes_lost >= 1,
        "line-rate keyframes overflow the queue"
    );
    assert!(unpaced.queue_dropped > paced.queue_dropped);
}

// r[verify session.pacing.budget]
// r[verify session.pacing.drive]
// r[verify session.bwe.target]
#[test]
fn a_frame_over_the_latency_budget_is_counted_reported_and_drained_within_it() {
    // A fixed 8 Mbit/s estimate: pacing at 8.8 Mbit/s = 1.1 kB per ms.
    let fixed = BweConfig {
        start_bps: 8_000_000,
        min_bps: 8_000_000,
        max_bps: 8_000_000,
        probing: false,
        ..BweConfig::default()
    };
    let cfg = HostConfig {
        bwe: fixed,
        pacing: PacingConfig {
            latency_budget: Duration::from_millis(50),
            ..PacingConfig::default()
        },
        ..HostConfig::default()
    };
    let neck = Bottleneck::new(1_000_000_000, Duration::from_millis(50), Duration::ZERO);
    let (a, b) = memory_pair(MemoryConfig {
        capacity: 1 << 16,
        max_payload: 1500,
    });
    let spec = FaultSpec {
        bottleneck: Some(neck),
        ..FaultSpec::none()
    };
    let (a, b) = fault_pair(a, b, spec, FaultSpec::none(), 1).unwrap();
    futures::executor::block_on(async move {
        let host = async {
            let (mut host, mut events) = Host::accept(a, cfg).await.unwrap();
            // 8 Mbit/s less 10% and 20% parity.
            assert_eq!(host.target_bitrate(), 8_000_000 * 9 / 10 * 100 / 120);
            // 100 kB (+20% parity) would take about 110 ms at 8.8 Mbit/s:
            // over the 50 ms budget, so the pacer drains it within the
            // budget instead (about 20 Mbit/s), still paced.
            let t = Instant::now();
            host.send_frame(&vec![1u8; 100_000], 0, FrameFlags::KEYFRAME)
                .await
                .unwrap();
            let took = t.elapsed();
            host.send_frame(&vec![2u8; 1000], 1, FrameFlags::default())
                .await
                .unwrap();
            let s = host.stats();
            assert_eq!(s.pacing_overruns, 1, "{}", s.to_json());
            assert!(s.pacing_queue_delay_max_us > 50_000);
            // Paced at the budget's rate, not written at once (less one
            // 2 ms bucket).
            assert!(took >= Duration::from_millis(40), "took {took:?}");
            assert!(s.frame_send_spread_max_us >= 40_000);
            host.close().await.unwrap();
            let mut overrun = None;
            while let Some(ev) = events.next_event().await.unwrap() {
                if let HostEvent::PacingOverrun { queue_delay_us } = ev {
                    overrun = Some(queue_delay_us);
                }
            }
            let d = overrun.expect("PacingOverrun reported");
            assert!(d > 50_000, "{d}");
        };
        let client = async {
            let (mut client, mut input) =
                Client::connect(b, ClientConfig::default()).await.unwrap();
            let mut n = 0;
            while let Some(ev) = client.next_frame().await.unwrap() {
                assert!(matches!(ev, ClientEvent::Frame(_)), "{ev:?}");
                n += 1;
            }
            assert_eq!(n, 2, "the over-budget frame is still delivered");
            input.close().await.unwrap();
        };
        futures::join!(host, client);
    });
}

// r[verify session.bwe.stream]
#[test]
fn on_a_stream_link_the_target_follows_the_drain_rate() {
    let cfg = HostConfig {
        bwe: BweConfig {
            start_bps: 100_000_000,
            ..BweConfig::default()
        },
        ..HostConfig::default()
    };
    // A link that holds 2 messages and a client that takes a 50 kB frame
    // every 10 ms: it drains at 40 Mbit/s.
    let (a, b) = memory_pair(MemoryConfig {
        capacity: 2,
        max_payload: 1 << 20,
    });
    futures::executor::block_on(async move {
        let host = async {
            let (mut host, _events) = Host::accept(a, cfg).await.unwrap();
            for i in 0..40 {
                host.send_frame(&vec![0u8; 50_000], i, FrameFlags::default())
                    .await
                    .unwrap();
            }
            let target = host.target_bitrate();
            assert!(
                (10_000_000..=60_000_000).contains(&target),
                "target {target}"
            );
            host.close().await.unwrap();
        };
        let client = async {
            let (mut client, _input) = Client::connect(b, ClientConfig::default()).await.unwrap();
            while let Some(ev) = client.next_frame().await.unwrap() {
                assert!(matches!(ev, ClientEvent::Frame(_)));
                futures_timer::Delay::new(Duration::from_millis(10)).await;
            }
        };
        futures::join!(host, client);
    });
    // A fast reader: the target grows.
    let (a, b) = memory_pair(MemoryConfig::default());
    futures::executor::block_on(async move {
        let host = async {
            let (mut host, _events) = Host::accept(a, HostConfig::default()).await.unwrap();
            for i in 0..20 {
                host.send_frame(&[0u8; 1000], i, FrameFlags::default())
                    .await
                    .unwrap();
            }
            assert!(host.target_bitrate() > BweConfig::default().start_bps);
            host.close().await.unwrap();
        };
        let client = async {
            let (mut client, _input) = Client::connect(b, ClientConfig::default()).await.unwrap();
            while client.next_frame().await.unwrap().is_some() {}
        };
        futures::join!(host, client);
    });
}
