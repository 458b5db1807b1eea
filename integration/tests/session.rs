//! The session over the in-memory link and the fault injector: frames,
//! FEC, encryption, handshake, input, feedback, hostile input.

use std::time::Duration;

use link_integration::session::*;
use link_session::wire::{self, Kind, OUTER_LEN, SHARD_HEADER_LEN, ShardHeader, Writer};
use link_session::{
    Client, ClientConfig, ClientEvent, FecScheme, FrameFlags, Host, HostConfig, HostEvent,
    InputEvent, RejectReason, SessionError, TouchPhase,
};
use link_types::fault::wrap;
use link_types::{
    FaultSpec, Link, LinkError, LinkRx, LinkTx, LinkTxExt, MemoryConfig, fault_pair, memory_pair,
};

/// A relay or hostile peer closes its half when done: the other end may
/// have gone already (that is how the session it served ended), anything
/// else is a failure.
fn closed(r: Result<(), LinkError>, what: &str) {
    match r {
        Ok(()) | Err(LinkError::PeerGone) | Err(LinkError::Closed) => {}
        Err(e) => panic!("{what}: close failed with {e}"),
    }
}

const PSK: &[u8] = b"0123456789abcdef0123456789abcdef";

fn enc_host() -> HostConfig {
    HostConfig {
        psk: Some(PSK.to_vec()),
        ..Default::default()
    }
}

fn enc_client() -> ClientConfig {
    ClientConfig {
        psk: Some(PSK.to_vec()),
        ..Default::default()
    }
}

fn datagram_memory() -> (link_types::MemoryLink, link_types::MemoryLink) {
    memory_pair(MemoryConfig {
        capacity: 1024,
        max_payload: 1472,
    })
}

// r[verify session.wire.stream-frames]
// r[verify session.host.send]
// r[verify session.client.next-frame]
#[tokio::test]
async fn frames_are_byte_exact_and_zero_copy_over_a_stream_link() {
    let (a, b) = memory_pair(MemoryConfig::default());
    let o = stream(
        a,
        b,
        HostConfig::default(),
        ClientConfig::default(),
        120,
        20_000,
    )
    .await;
    assert_eq!((o.delivered, o.lost, o.corrupt), (120, 0, 0));
    // One message per frame, handed out without a copy.
    assert_eq!(o.zero_copy, 120);
    let h = o.host.unwrap();
    assert_eq!(
        h.data_shards_sent + h.parity_shards_sent,
        0,
        "no FEC on a stream"
    );
}

#[tokio::test]
async fn large_frames_travel_in_parts_and_encrypted() {
    let (a, b) = memory_pair(MemoryConfig {
        capacity: 64,
        max_payload: 4096,
    });
    let o = stream(a, b, enc_host(), enc_client(), 60, 30_000).await;
    assert_eq!((o.delivered, o.lost, o.corrupt), (60, 0, 0));
    assert_eq!(o.zero_copy, 0, "decrypted frames are copies");
    let h = o.host.unwrap();
    assert!(h.messages_sent > 60 * 7, "frames were cut into parts");
}

// r[verify session.host.zero-copy]
#[tokio::test]
async fn producer_writes_straight_into_the_link_slot() {
    // Where `fill` wrote each frame, by index: on the fast path that is the
    // link's own slot, the very memory the client's frame is read from.
    let written = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let (a, b) = memory_pair(MemoryConfig::default());
    let w = written.clone();
    let host = async move {
        let (mut host, _ev) = Host::accept(a, HostConfig::default()).await.unwrap();
        for i in 0..10u32 {
            let want = frame_bytes(i, 50_000);
            host.send_frame_with(50_000, i as u64, FrameFlags::NONE, |buf| {
                w.lock().unwrap().insert(i, buf.as_ptr() as usize);
                buf.copy_from_slice(&want)
            })
            .await
            .unwrap();
        }
        host.close().await.unwrap();
    };
    let client = async move {
        let (mut c, _input) = Client::connect(b, ClientConfig::default()).await.unwrap();
        let mut n = 0;
        while let Some(ClientEvent::Frame(f)) = c.next_frame().await.unwrap() {
            assert!(f.is_zero_copy());
            assert_eq!(f.data(), &frame_bytes(f.index, 50_000)[..]);
            let at = written.lock().unwrap().get(&f.index).copied();
            assert_eq!(
                at,
                Some(f.data().as_ptr() as usize),
                "frame {}: the producer wrote into other memory than the client reads",
                f.index
            );
            n += 1;
        }
        n
    };
    let ((), n) = futures::join!(host, client);
    assert_eq!(n, 10);
}

// r[verify session.reassembly.shards]
#[tokio::test]
async fn lossy_links_deliver_whole_frames_or_count_them_lost() {
    for (loss, dup, reorder) in [
        (0.0, 0.05, 0.05),
        (0.01, 0.02, 0.02),
        (0.05, 0.02, 0.02),
        (0.10, 0.02, 0.02),
        (0.20, 0.02, 0.02),
    ] {
        let spec = FaultSpec {
            loss,
            duplicate: dup,
            reorder,
            max_displacement: 8,
            ..FaultSpec::none()
        };
        let (a, b) = datagram_memory();
        let (a, b) = fault_pair(a, b, spec, spec, 42).unwrap();
        let frames = 240;
        let o = stream(a, b, enc_host(), enc_client(), frames, 40_000).await;
        let c = o.client.as_ref().unwrap();
        eprintln!("loss {loss}: {o:?}");
        assert_eq!(o.corrupt, 0, "loss {loss}: a corrupt frame was delivered");
        assert_eq!(
            o.delivered + o.lost,
            frames,
            "loss {loss}: every frame accounted"
        );
        assert_eq!(c.frames_lost as u32, o.lost);
        if loss == 0.0 {
            assert_eq!(
                o.delivered, frames,
                "duplication and reordering lose nothing"
            );
            assert!(c.duplicate_shards > 0 || c.redundant_shards > 0);
        } else {
            assert!(o.recovered > 0, "loss {loss}: parity rebuilt frames");
        }
        if loss <= 0.05 {
            assert!(
                o.delivered as f64 >= frames as f64 * 0.98,
                "loss {loss}: only {} of {frames} delivered",
                o.delivered
            );
        }
        assert!(c.pending_bytes_peak <= ClientConfig::default().max_pending_bytes as u64);
    }
}

// r[verify session.crypto.drop]
#[tokio::test]
async fn tampered_replayed_and_duplicated_messages_are_dropped_and_counted() {
    // host <-> (h, r1) relay (r2, c) <-> client; the host's end is unordered
    // (a reorder fault), so the session packetizes with FEC.
    let (h, r1) = memory_pair(MemoryConfig {
        capacity: 1024,
        max_payload: 1472,
    });
    let (r2, c) = memory_pair(MemoryConfig {
        capacity: 1024,
        max_payload: 1472,
    });
    let spec = FaultSpec {
        reorder: 0.05,
        max_displacement: 2,
        ..FaultSpec::none()
    };
    let h = wrap(h, spec, 1).unwrap();
    let (mut r1_tx, mut r1_rx) = r1.split();
    let (mut r2_tx, mut r2_rx) = r2.split();
    let down = async move {
        let (mut flipped, mut dups, mut replays) = (0u64, 0u64, 0u64);
        let mut history: Vec<Vec<u8>> = Vec::new();
        let mut n = 0u64;
        while let Ok(Some(m)) = r1_rx.recv().await {
            let mut m = m.into_vec();
            let is_shard = m.len() > 1 && m[1] == Kind::Shard as u8;
            if is_shard {
                n += 1;
                history.push(m.clone());
            }
            if is_shard && n.is_multiple_of(13) {
                let i = m.len() / 2;
                m[i] ^= 0x40;
                flipped += 1;
            }
            if r2_tx.send(&m).await.is_err() {
                break;
            }
            if is_shard && n.is_multiple_of(17) && !n.is_multiple_of(13) {
                r2_tx.send(&m).await.unwrap();
                dups += 1;
            }
            // Replay a copy of a message delivered earlier (not one whose
            // original was tampered with: that one was never accepted).
            if is_shard && n.is_multiple_of(19) && n > 60 && !(n - 59).is_multiple_of(13) {
                let old = history[(n - 60) as usize].clone();
                r2_tx.send(&old).await.unwrap();
                replays += 1;
            }
        }
        closed(r2_tx.close().await, "the downstream relay");
        (flipped, dups, replays)
    };
    let up = async move {
        while let Ok(Some(m)) = r2_rx.recv().await {
            if r1_tx.send(m.as_slice()).await.is_err() {
                break;
            }
        }
        closed(r1_tx.close().await, "the upstream relay");
    };
    let session = stream(h, c, enc_host(), enc_client(), 120, 20_000);
    let (o, (flipped, dups, replays), ()) = futures::join!(session, down, up);
    let cs = o.client.unwrap();
    assert!(flipped > 10 && dups > 5 && replays > 5);
    assert_eq!(
        cs.auth_failures, flipped,
        "every tampered message failed authentication"
    );
    assert_eq!(
        cs.replays_dropped,
        dups + replays,
        "every copy dropped by the window"
    );
    assert_eq!(o.corrupt, 0);
    assert_eq!(o.delivered + o.lost, 120);
    assert!(
        o.delivered >= 110,
        "parity covered the dropped messages: {}",
        o.delivered
    );
}

async fn handshake(
    a: impl Link + 'static,
    b: impl Link + 'static,
    host: HostConfig,
    client: ClientConfig,
) -> (Result<(), SessionError>, Result<(), SessionError>) {
    let h = async move { Host::accept(a, host).await.map(|_| ()) };
    let c = async move { Client::connect(b, client).await.map(|_| ()) };
    futures::join!(h, c)
}

// r[verify session.handshake.host]
// r[verify session.handshake.client]
#[tokio::test]
async fn mismatched_parameters_are_refused_with_a_reason() {
    let quick = |mut c: ClientConfig| {
        c.handshake_timeout = Duration::from_secs(2);
        c
    };
    // Encryption on one side only.
    let (a, b) = memory_pair(MemoryConfig::default());
    let (h, c) = handshake(a, b, enc_host(), quick(ClientConfig::default())).await;
    assert!(
        matches!(
            h,
            Err(SessionError::Rejected {
                reason: RejectReason::Encryption,
                ..
            })
        ),
        "{h:?}"
    );
    assert!(
        matches!(
            c,
            Err(SessionError::Rejected {
                reason: RejectReason::Encryption,
                ..
            })
        ),
        "{c:?}"
    );
    // Host frames larger than the client accepts.
    let (a, b) = memory_pair(MemoryConfig::default());
    let host = HostConfig {
        max_frame: 8 << 20,
        ..Default::default()
    };
    let client = ClientConfig {
        max_frame: 1 << 20,
        max_pending_bytes: 2 << 20,
        ..quick(ClientConfig::default())
    };
    let (h, c) = handshake(a, b, host, client).await;
    assert!(matches!(
        h,
        Err(SessionError::Rejected {
            reason: RejectReason::MaxFrame,
            ..
        })
    ));
    let msg = c.unwrap_err().to_string();
    assert!(msg.contains("8388608") && msg.contains("1048576"), "{msg}");
    // A link too small for a shard.
    let (a, b) = memory_pair(MemoryConfig {
        capacity: 8,
        max_payload: 120,
    });
    let (a, b) = fault_pair(a, b, FaultSpec::loss(0.0001), FaultSpec::none(), 1).unwrap();
    let (h, _c) = handshake(a, b, HostConfig::default(), quick(ClientConfig::default())).await;
    assert!(matches!(
        h,
        Err(SessionError::Rejected {
            reason: RejectReason::ShardSize,
            ..
        })
    ));
}

#[tokio::test]
async fn a_wrong_key_is_detected_by_both_sides() {
    let (a, b) = memory_pair(MemoryConfig::default());
    let host = HostConfig {
        handshake_timeout: Duration::from_secs(1),
        ..enc_host()
    };
    let client = ClientConfig {
        psk: Some(b"another key, 32 bytes long......".to_vec()),
        ..Default::default()
    };
    let (h, c) = handshake(a, b, host, client).await;
    assert!(matches!(c, Err(SessionError::AuthFailed)), "{c:?}");
    // The client never sent an authentic Finish: the host fails too (the
    // client's end is gone, or the wait times out), it never hangs.
    assert!(
        matches!(
            h,
            Err(SessionError::HandshakeTimeout { .. })
                | Err(SessionError::ClosedDuringHandshake)
                | Err(SessionError::Link(link_types::LinkError::PeerGone))
        ),
        "{h:?}"
    );
}

#[tokio::test]
async fn handshake_completes_over_a_lossy_link_and_times_out_without_a_host() {
    for seed in 0..5 {
        let (a, b) = datagram_memory();
        let spec = FaultSpec::loss(0.3);
        let (a, b) = fault_pair(a, b, spec, spec, seed).unwrap();
        let (h, c) = handshake(a, b, enc_host(), enc_client()).await;
        h.unwrap();
        c.unwrap();
    }
    let (_a, b) = datagram_memory();
    let (_a2, b) = fault_pair(_a, b, FaultSpec::loss(0.01), FaultSpec::loss(0.01), 1).unwrap();
    let t = std::time::Instant::now();
    let r = Client::connect(
        b,
        ClientConfig {
            handshake_timeout: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await;
    let waited = match r {
        Err(SessionError::HandshakeTimeout { waited, .. }) => waited,
        Err(e) => panic!("expected HandshakeTimeout, got {e}"),
        Ok(_) => panic!("connected to nobody"),
    };
    // The lower bound holds on any machine; the upper one only checks that
    // the client gave up at all (ten times the timeout, for loaded machines).
    assert!(waited >= Duration::from_millis(300), "waited {waited:?}");
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "gave up after {took:?}; the bound is 10x the 300 ms timeout"
    );
}

fn events(n: u32) -> Vec<InputEvent> {
    (0..n)
        .map(|i| match i % 8 {
            0 => InputEvent::Key {
                code: i,
                down: i % 3 == 0,
                mods: 1,
            },
            1 => InputEvent::MouseMove {
                dx: i as i32,
                dy: -(i as i32),
            },
            2 => InputEvent::MouseAbs { x: i as i32, y: 7 },
            3 => InputEvent::MouseButton {
                button: (i % 5) as u8,
                down: true,
            },
            4 => InputEvent::Wheel {
                dx: 0,
                dy: i as i32,
            },
            5 => InputEvent::Gamepad {
                pad: 0,
                buttons: i,
                lx: 1,
                ly: 2,
                rx: 3,
                ry: 4,
                lt: 5,
                rt: 6,
            },
            6 => InputEvent::Touch {
                id: i,
                phase: TouchPhase::Move,
                x: 0.5,
                y: 0.25,
            },
            _ => InputEvent::Text(format!("t{i}")),
        })
        .collect()
}

// r[verify session.input.retransmit]
// r[verify session.input.order]
// r[verify session.input.send]
#[tokio::test]
async fn input_arrives_exactly_once_in_order_under_20_percent_loss() {
    let spec = FaultSpec {
        loss: 0.2,
        duplicate: 0.05,
        reorder: 0.05,
        max_displacement: 4,
        ..FaultSpec::none()
    };
    let (a, b) = datagram_memory();
    let (a, b) = fault_pair(a, b, spec, spec, 9).unwrap();
    let n = 1500;
    let host = async move {
        let (mut host, mut ev) = Host::accept(a, enc_host()).await.unwrap();
        let mut got = Vec::new();
        while got.len() < n as usize {
            match ev.next_event().await.unwrap() {
                Some(HostEvent::Input(e)) => got.push(e),
                Some(_) => {}
                None => break,
            }
        }
        // Let the last acknowledgements out, then end the stream.
        host.send_frame(b"bye", 0, FrameFlags::NONE).await.unwrap();
        host.close().await.unwrap();
        (got, ev.stats())
    };
    let client = async move {
        let (mut frames, mut input) = Client::connect(b, enc_client()).await.unwrap();
        let pump = async move {
            while let Ok(Some(_)) = frames.next_frame().await {}
            frames.stats()
        };
        let send = async move {
            for e in events(n) {
                input.send_input(e).await.unwrap();
                if fastrand_like() {
                    tokio::task::yield_now().await;
                }
            }
        };
        let (stats, ()) = futures::join!(pump, send);
        stats
    };
    let ((got, hs), cs) = futures::join!(host, client);
    assert_eq!(got, events(n), "every event once, in order");
    assert!(cs.input_retransmits > 0, "loss forced retransmissions");
    assert!(hs.input_duplicates > 0 || hs.input_gaps > 0);
    assert!(cs.input_rtt_us > 0, "round trip measured");
}

fn fastrand_like() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static X: AtomicU64 = AtomicU64::new(1);
    X.fetch_add(0x9E37_79B9, Ordering::Relaxed)
        .is_multiple_of(7)
}

// r[verify session.feedback.report]
// r[verify session.feedback.keyframe]
#[tokio::test]
async fn lost_frames_reach_the_host_as_keyframe_requests() {
    let (a, b) = datagram_memory();
    let (a, b) = fault_pair(a, b, FaultSpec::loss(0.05), FaultSpec::none(), 3).unwrap();
    let host = HostConfig {
        parity_pct: 0,
        min_parity: 0,
        ..Default::default()
    };
    let o = stream(a, b, host, ClientConfig::default(), 200, 5_000).await;
    assert!(o.lost > 0);
    assert!(o.keyframe_requests > 0, "{o:?}");
    let hs = o.host.unwrap();
    assert!(hs.feedback_received > 0);
    assert!(hs.reported_frames_lost > 0);
    assert!(hs.reported_loss_ppm <= 1_000_000);
}

// r[verify session.feedback.adaptive]
#[tokio::test]
async fn adaptive_parity_follows_reported_loss() {
    let (a, b) = datagram_memory();
    let (a, b) = fault_pair(a, b, FaultSpec::loss(0.15), FaultSpec::none(), 5).unwrap();
    let host = HostConfig {
        adaptive_parity: true,
        parity_pct: 10,
        ..Default::default()
    };
    let (a_ready, b_ready) = (a, b);
    let h = async move {
        let (mut host, mut ev) = Host::accept(a_ready, host).await.unwrap();
        let events = async move { while let Ok(Some(_)) = ev.next_event().await {} };
        let send = async move {
            for i in 0..300u32 {
                host.send_frame(&frame_bytes(i, 8_000), 0, FrameFlags::NONE)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let s = host.stats();
            host.close().await.unwrap();
            s
        };
        futures::join!(events, send).1
    };
    let c = async move {
        let (mut c, _i) = Client::connect(b_ready, ClientConfig::default())
            .await
            .unwrap();
        while let Ok(Some(_)) = c.next_frame().await {}
    };
    let (hs, ()) = futures::join!(h, c);
    assert!(hs.parity_pct > 10, "parity rose with 15% loss: {hs:?}");
}

#[tokio::test]
async fn rekeying_keeps_the_stream_flowing() {
    let (a, b) = datagram_memory();
    let (a, b) = fault_pair(a, b, FaultSpec::loss(0.01), FaultSpec::none(), 8).unwrap();
    let host = HostConfig {
        rekey_shift: 10,
        ..enc_host()
    };
    let o = stream(a, b, host, enc_client(), 150, 20_000).await;
    let hs = o.host.unwrap();
    assert!(hs.rekeys >= 2, "{hs:?}");
    assert_eq!(o.corrupt, 0);
    assert!(o.delivered >= 145);
}

#[tokio::test]
async fn frames_above_the_agreed_maximum_are_refused() {
    let (a, b) = memory_pair(MemoryConfig::default());
    let host = HostConfig {
        max_frame: 1000,
        ..Default::default()
    };
    let h = async move {
        let (mut host, _e) = Host::accept(a, host).await.unwrap();
        let r = host.send_frame(&[0; 1001], 0, FrameFlags::NONE).await;
        assert!(matches!(
            r,
            Err(SessionError::FrameTooLarge {
                len: 1001,
                max: 1000
            })
        ));
        host.send_frame(&[0; 1000], 0, FrameFlags::NONE)
            .await
            .unwrap();
        host.close().await.unwrap();
    };
    let c = async move {
        let (mut c, _i) = Client::connect(b, ClientConfig::default()).await.unwrap();
        let mut n = 0;
        while let Some(ClientEvent::Frame(f)) = c.next_frame().await.unwrap() {
            assert_eq!(f.index, 0, "the refused frame used no index");
            n += 1;
        }
        n
    };
    let ((), n) = futures::join!(h, c);
    assert_eq!(n, 1);
}

// r[verify session.stats]
#[tokio::test]
async fn stats_serialise_as_json() {
    let (a, b) = datagram_memory();
    let (a, b) = fault_pair(a, b, FaultSpec::loss(0.02), FaultSpec::none(), 2).unwrap();
    let o = stream(
        a,
        b,
        HostConfig::default(),
        ClientConfig::default(),
        40,
        5_000,
    )
    .await;
    let c = o.client.unwrap();
    let json = c.to_json();
    assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
    assert!(
        json.contains(&format!("\"frames_delivered\":{}", c.frames_delivered)),
        "{json}"
    );
    let back: link_session::ClientStats = facet_json::from_str(&json).unwrap();
    assert_eq!(back, c);
    let h = o.host.unwrap().to_json();
    assert!(h.contains("\"parity_shards_sent\":"), "{h}");
}

// ---- hostile input -------------------------------------------------------

struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A fake host on the raw link: a valid handshake, then `count` hostile
/// messages (shard headers with random, often inconsistent fields; random
/// bytes; truncated messages; other kinds).
async fn hostile_host(link: impl Link, seed: u64, count: usize) {
    let (mut tx, mut rx) = link.split();
    let hello = rx.recv().await.unwrap().unwrap();
    let hello = link_session::handshake::Hello::read(&hello.as_slice()[OUTER_LEN..]).unwrap();
    let params = link_session::Params {
        version: wire::VERSION,
        encryption: false,
        stream: false,
        fec: FecScheme::Auto,
        auto_threshold: 64,
        shard_size: 1024,
        max_frame: 1 << 20,
        max_message: 1472,
        parity_pct: 20,
        min_parity: 1,
        rekey_shift: 23,
    };
    let welcome = link_session::handshake::Welcome {
        client_random: hello.random,
        host_random: [7; 32],
        params,
        confirm: [0; 16],
    }
    .to_bytes();
    let mut msg = vec![0u8; OUTER_LEN];
    wire::write_outer(&mut msg, Kind::Welcome, 0);
    msg.extend_from_slice(&welcome);
    tx.send(&msg).await.unwrap();
    let _finish = rx.recv().await.unwrap().unwrap();
    let mut r = SplitMix(seed);
    for pn in 0..count as u64 {
        let choice = r.below(10);
        let mut m = vec![0u8; OUTER_LEN];
        let kind = if choice < 7 {
            Kind::Shard
        } else {
            [Kind::Frame, Kind::InputAck, Kind::Welcome][r.below(3) as usize]
        };
        // Mostly fresh packet numbers, some repeats and jumps.
        let number = match r.below(20) {
            0 => r.next(),
            1 => pn.saturating_sub(r.below(50)),
            _ => pn,
        };
        wire::write_outer(&mut m, kind, number);
        if kind == Kind::Shard {
            let frame_len = match r.below(4) {
                0 => r.next() as u32,
                _ => r.below(1 << 20) as u32,
            };
            let coder = [1u8, 2, 0, 9][r.below(4) as usize];
            let n = (frame_len as usize).div_ceil(1024).max(1);
            let max_k = if coder == 2 { 16384 } else { 64 };
            let blocks = n.div_ceil(max_k).max(1);
            let k = n.div_ceil(blocks);
            let h = ShardHeader {
                frame: match r.below(6) {
                    0 => r.next() as u32,
                    _ => (pn / 40) as u32 + r.below(8) as u32,
                },
                frame_len,
                pts: r.next(),
                flags: r.below(3) as u8,
                coder,
                block: r.below(blocks as u64 + 1) as u16,
                blocks: if r.below(5) == 0 {
                    r.next() as u16
                } else {
                    blocks as u16
                },
                index: r.below(k as u64 + 20) as u16,
                k: if r.below(5) == 0 {
                    r.next() as u16
                } else {
                    k as u16
                },
                m: r.below(40) as u16,
                shard_size: if r.below(10) == 0 {
                    r.next() as u16
                } else {
                    1024
                },
            };
            let mut head = [0u8; SHARD_HEADER_LEN];
            h.write(&mut Writer::new(&mut head));
            m.extend_from_slice(&head);
            let len = if r.below(3) == 0 {
                r.below(1400) as usize
            } else {
                1024
            };
            m.extend((0..len).map(|_| r.next() as u8));
        } else {
            let len = r.below(200) as usize;
            m.extend((0..len).map(|_| r.next() as u8));
        }
        if r.below(15) == 0 {
            m.truncate(r.below(m.len() as u64) as usize);
        }
        if r.below(30) == 0 {
            m = (0..r.below(1472)).map(|_| r.next() as u8).collect();
        }
        if tx.send(&m).await.is_err() {
            return;
        }
    }
    closed(tx.close().await, "the hostile peer");
}

// r[verify session.reassembly.bounds]
// r[verify session.reassembly.ceiling]
#[test]
fn hostile_shards_never_panic_and_memory_stays_under_the_ceiling() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfg = proptest::test_runner::Config {
        cases: 24,
        failure_persistence: None,
        ..Default::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(cfg);
    runner
        .run(&proptest::prelude::any::<u64>(), |seed| {
            let ceiling = 3 << 20;
            let (a, b) = datagram_memory();
            let client = async move {
                let cfg = ClientConfig {
                    max_frame: 1 << 20,
                    max_pending_bytes: ceiling,
                    frame_timeout: Duration::from_millis(20),
                    ..Default::default()
                };
                let (mut c, _i) = Client::connect(b, cfg).await.unwrap();
                let mut frames = 0u64;
                loop {
                    match c.next_frame().await {
                        Ok(Some(ClientEvent::Frame(f))) => {
                            frames += 1;
                            assert!(f.data().len() <= 1 << 20);
                        }
                        Ok(Some(ClientEvent::Lost { .. })) => {}
                        // The hostile host sends no Bye: the link's end is the
                        // session's end, a clean one or the peer's drop.
                        Ok(None) | Err(SessionError::Link(LinkError::PeerGone)) => break,
                        Err(e) => panic!("the client ended with {e} after hostile shards"),
                    }
                }
                (frames, c.stats())
            };
            let ((_, stats), ()) =
                rt.block_on(async { futures::join!(client, hostile_host(a, seed, 3000)) });
            proptest::prop_assert!(stats.pending_bytes_peak <= ceiling as u64, "{stats:?}");
            proptest::prop_assert!(stats.malformed_dropped > 0);
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn input_text_over_255_bytes_is_refused_before_sending() {
    let (a, b) = memory_pair(MemoryConfig::default());
    let h = async move { Host::accept(a, HostConfig::default()).await.map(|_| ()) };
    let c = async move {
        let (_f, mut input) = Client::connect(b, ClientConfig::default()).await.unwrap();
        input.send_input(InputEvent::Text("x".repeat(300))).await
    };
    let (h, c) = futures::join!(h, c);
    h.unwrap();
    assert!(matches!(c, Err(SessionError::InvalidInput(_))));
}

#[allow(dead_code)]
fn assert_send<T: Send>(_: &T) {}

#[allow(dead_code)]
fn futures_are_send<T: LinkTx + 'static, R: LinkRx + 'static>(
    h: &mut Host<T>,
    e: &mut link_session::HostEvents<T, R>,
    c: &mut Client<T, R>,
) {
    assert_send(&h.send_frame(&[], 0, FrameFlags::NONE));
    assert_send(&e.next_event());
    assert_send(&c.next_frame());
}

// r[verify session.wire.data-first]
#[tokio::test]
async fn a_real_host_sends_data_shards_before_parity_block_by_block() {
    // The host's end is unordered (a reorder fault on what it receives), so
    // it packetizes; a raw client on the other end reads what it sends.
    let (h, c) = datagram_memory();
    let spec = FaultSpec {
        reorder: 0.01,
        max_displacement: 1,
        ..FaultSpec::none()
    };
    let h = wrap(h, spec, 3).unwrap();
    let host = async move {
        let cfg = HostConfig {
            fec: FecScheme::Rs8,
            ..Default::default()
        };
        let (mut host, _e) = Host::accept(h, cfg).await.unwrap();
        host.send_frame(&frame_bytes(0, 200_000), 0, FrameFlags::KEYFRAME)
            .await
            .unwrap();
        host.close().await.unwrap();
    };
    let raw = async move {
        let (mut tx, mut rx) = c.split();
        let hello = link_session::handshake::Hello {
            min_version: 1,
            max_version: 1,
            random: [5; 32],
            encryption: false,
            max_frame: 4 << 20,
            max_message: 1472,
        }
        .to_bytes();
        let mut m = vec![0u8; OUTER_LEN];
        wire::write_outer(&mut m, Kind::Hello, 0);
        m.extend_from_slice(&hello);
        tx.send(&m).await.unwrap();
        let welcome = rx.recv().await.unwrap().unwrap();
        assert_eq!(welcome.as_slice()[1], Kind::Welcome as u8);
        let mut fin = vec![0u8; OUTER_LEN];
        wire::write_outer(&mut fin, Kind::Finish, 0);
        tx.send(&fin).await.unwrap();
        let mut seen = Vec::new();
        let mut data = Vec::new();
        while let Ok(Some(m)) = rx.recv().await {
            let m = m.as_slice();
            if m[1] != Kind::Shard as u8 {
                continue;
            }
            let h = ShardHeader::read(&mut wire::Reader::new(&m[OUTER_LEN..])).unwrap();
            if h.index < h.k {
                data.extend_from_slice(&m[OUTER_LEN + SHARD_HEADER_LEN..]);
            }
            seen.push((h.block, h.index, h.k, h.m));
        }
        (seen, data)
    };
    let ((), (seen, data)) = futures::join!(host, raw);
    // 200 000 bytes in 1400-byte shards: 143 data shards in 3 blocks (48, 48, 47).
    let blocks: Vec<u16> = seen.iter().map(|s| s.0).collect();
    assert!(blocks.windows(2).all(|w| w[0] <= w[1]), "blocks in order");
    assert_eq!(*blocks.last().unwrap(), 2);
    for b in 0..3 {
        let idx: Vec<u16> = seen.iter().filter(|s| s.0 == b).map(|s| s.1).collect();
        let (k, m) = (
            seen.iter().find(|s| s.0 == b).unwrap().2,
            seen.iter().find(|s| s.0 == b).unwrap().3,
        );
        assert_eq!(
            idx,
            (0..k + m).collect::<Vec<_>>(),
            "block {b}: data 0..k then parity"
        );
        assert_eq!(m as usize, (k as usize * 20).div_ceil(100));
    }
    assert_eq!(
        data,
        frame_bytes(0, 200_000),
        "data shards carry the frame's bytes in order"
    );
}

/// A fake client on the raw link: a valid handshake, then `count` hostile
/// messages to the host (random input batches, loss reports, kinds the host
/// does not expect, truncated and random bytes).
async fn hostile_client(link: impl Link, seed: u64, count: usize) {
    let (mut tx, mut rx) = link.split();
    let hello = link_session::handshake::Hello {
        min_version: 1,
        max_version: 1,
        random: [9; 32],
        encryption: false,
        max_frame: 16 << 20,
        max_message: 1472,
    }
    .to_bytes();
    let mut m = vec![0u8; OUTER_LEN];
    wire::write_outer(&mut m, Kind::Hello, 0);
    m.extend_from_slice(&hello);
    tx.send(&m).await.unwrap();
    let _welcome = rx.recv().await.unwrap().unwrap();
    let mut r = SplitMix(seed);
    for pn in 0..count as u64 {
        let kind = [
            Kind::Finish,
            Kind::Input,
            Kind::Input,
            Kind::Feedback,
            Kind::Shard,
            Kind::Hello,
        ][r.below(6) as usize];
        let mut m = vec![0u8; OUTER_LEN];
        wire::write_outer(&mut m, kind, if r.below(10) == 0 { r.next() } else { pn });
        match kind {
            Kind::Input => {
                m.extend_from_slice(&r.below(3000).to_le_bytes());
                let n = r.below(300) as u16;
                m.extend_from_slice(&n.to_le_bytes());
                for _ in 0..n.min(60) {
                    let t = r.below(10) as u8;
                    m.push(t);
                    m.extend((0..r.below(16)).map(|_| r.next() as u8));
                }
            }
            Kind::Feedback => m.extend((0..32).map(|_| r.next() as u8)),
            _ => m.extend((0..r.below(100)).map(|_| r.next() as u8)),
        }
        if r.below(10) == 0 {
            m.truncate(r.below(m.len() as u64) as usize);
        }
        if tx.send(&m).await.is_err() {
            return;
        }
    }
    closed(tx.close().await, "the hostile peer");
}

#[test]
fn hostile_input_and_reports_never_panic_the_host() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfg = proptest::test_runner::Config {
        cases: 24,
        failure_persistence: None,
        ..Default::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(cfg);
    runner
        .run(&proptest::prelude::any::<u64>(), |seed| {
            let (a, b) = memory_pair(MemoryConfig::default());
            let host = async move {
                let (_host, mut ev) = Host::accept(a, HostConfig::default()).await.unwrap();
                let mut n = 0u64;
                loop {
                    match ev.next_event().await {
                        Ok(Some(HostEvent::LossReport(r))) => assert!(r.loss_ppm <= 1_000_000),
                        Ok(Some(_)) => {}
                        // The hostile client sends no Bye: the link's end is the
                        // session's end, a clean one or the peer's drop.
                        Ok(None) | Err(SessionError::Link(LinkError::PeerGone)) => break,
                        Err(e) => panic!("the host ended with {e} after hostile input"),
                    }
                    n += 1;
                    assert!(n < 1_000_000);
                }
                ev.stats()
            };
            let (stats, ()) =
                rt.block_on(async { futures::join!(host, hostile_client(b, seed, 2000)) });
            proptest::prop_assert!(
                stats.malformed_dropped + stats.unexpected_dropped > 0,
                "{stats:?}"
            );
            Ok(())
        })
        .unwrap();
}

// r[verify session.feedback.keyframe-request]
/// A keyframe request without a loss reaches the host once per newer frame
/// named, and changes no loss counter.
#[tokio::test]
async fn client_keyframe_request_reaches_the_host_once() {
    let (a, b) = memory_pair(MemoryConfig::default());
    let host = async move {
        let (mut host, mut events) = Host::accept(a, HostConfig::default()).await.unwrap();
        let ev = async move {
            let mut requests = Vec::new();
            while let Ok(Some(e)) = events.next_event().await {
                if let HostEvent::KeyframeRequest { lost_frame } = e {
                    requests.push(lost_frame);
                }
            }
            requests
        };
        let send = async move {
            for i in 0..40u32 {
                host.send_frame(&frame_bytes(i, 2_000), 0, FrameFlags::NONE)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            host.close().await.unwrap();
        };
        futures::join!(ev, send).0
    };
    let client = async move {
        let (mut c, mut input) = Client::connect(b, ClientConfig::default()).await.unwrap();
        while let Ok(Some(ev)) = c.next_frame().await {
            if let ClientEvent::Frame(f) = ev {
                match f.index {
                    3 => c.request_keyframe(3),
                    // Older than one already named: no new request.
                    10 => c.request_keyframe(2),
                    20 => c.request_keyframe(20),
                    _ => {}
                }
            }
        }
        let s = c.stats();
        input.close().await.unwrap();
        s
    };
    let (requests, stats) = futures::join!(host, client);
    assert_eq!(requests, [3, 20]);
    assert_eq!((stats.frames_lost, stats.frames_delivered), (0, 40));
}

/// host <-> relay <-> client over a lossy in-memory path whose client-to-host
/// direction the test controls: it can hold the client's messages back and
/// inject a copy of the client's first message (its Hello). Returns the
/// host's end, the client's end and the relay's task and controls.
struct Relay {
    hello: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    mute: std::sync::Arc<std::sync::atomic::AtomicBool>,
    inject: futures::channel::mpsc::UnboundedSender<Vec<u8>>,
}

impl Relay {
    /// The client's first message, as it went to the host.
    fn hello(&self) -> Vec<u8> {
        self.hello
            .lock()
            .unwrap()
            .clone()
            .expect("the client's Hello")
    }
}

fn relayed() -> (
    impl Link,
    impl Link,
    Relay,
    impl std::future::Future<Output = ()>,
) {
    use std::sync::atomic::Ordering;
    let (h, r1) = datagram_memory();
    let (r2, c) = datagram_memory();
    // A lossy host end (the session then runs shards, feedback and idle
    // timeouts), with loss too rare to matter here.
    let (h, r1) = fault_pair(h, r1, FaultSpec::loss(1e-9), FaultSpec::none(), 1).unwrap();
    let (mut r1_tx, mut r1_rx) = r1.split();
    let (mut r2_tx, mut r2_rx) = r2.split();
    let hello = std::sync::Arc::new(std::sync::Mutex::new(None));
    let mute = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (inject, mut injected) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    let relay = Relay {
        hello: hello.clone(),
        mute: mute.clone(),
        inject,
    };
    let task = async move {
        use futures::StreamExt;
        let down = async {
            while let Ok(Some(m)) = r1_rx.recv().await {
                if r2_tx.send(m.as_slice()).await.is_err() {
                    break;
                }
            }
        };
        let up = async {
            loop {
                tokio::select! {
                    m = r2_rx.recv() => match m {
                        Ok(Some(m)) => {
                            hello.lock().unwrap().get_or_insert_with(|| m.to_vec());
                            if !mute.load(Ordering::Relaxed) && r1_tx.send(m.as_slice()).await.is_err() {
                                break;
                            }
                        }
                        _ => break,
                    },
                    m = injected.next() => match m {
                        Some(m) => {
                            if r1_tx.send(&m).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
        };
        futures::join!(down, up);
    };
    (h, c, relay, task)
}

// r[verify session.host.restart]
/// A Hello from a live client is counted and changes nothing; a Hello after
/// the client fell silent for `restart_grace` ends the session with
/// `ClientRestarted`.
#[tokio::test]
async fn a_hello_after_silence_ends_the_session_as_a_restart() {
    use futures::FutureExt;
    use std::sync::atomic::Ordering;
    let (h, c, relay, task) = relayed();
    let relay_task = tokio::spawn(task);
    let host_cfg = HostConfig {
        restart_grace: Duration::from_millis(500),
        ..HostConfig::default()
    };
    let (host, client) = futures::join!(
        Host::accept(h, host_cfg),
        Client::connect(c, ClientConfig::default())
    );
    let (mut host, mut events) = host.expect("accept");
    let (mut client, _input) = client.expect("connect");
    let hello = relay.hello();
    let sending = async {
        for i in 0u32.. {
            if host
                .send_frame(&i.to_le_bytes(), i as u64, FrameFlags::NONE)
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let receiving = async { while let Ok(Some(_)) = client.next_frame().await {} };
    let script = async {
        // Live: frames flow, the client reports; a copy of its Hello arrives.
        tokio::time::sleep(Duration::from_millis(400)).await;
        relay.inject.unbounded_send(hello.clone()).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Silent: nothing from the client for more than the grace, then the
        // Hello of a client that restarted on the same address and port.
        relay.mute.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        relay.inject.unbounded_send(hello.clone()).unwrap();
    };
    let events_loop = async {
        let mut frames_reported = 0u64;
        let end = loop {
            match events.next_event().await {
                Ok(Some(HostEvent::LossReport(r))) => frames_reported = r.frames_delivered,
                Ok(Some(_)) => {}
                other => break other.map(|_| ()),
            }
        };
        (end, frames_reported, relay.mute.load(Ordering::Relaxed))
    };
    let ((end, reported, muted), ()) = futures::select! {
        r = futures::future::join(events_loop, script).fuse() => r,
        _ = sending.fuse() => panic!("the host stopped sending"),
        _ = receiving.fuse() => panic!("the client ended"),
    };
    assert!(
        reported > 10,
        "the session ran while the client was live: {reported} frames"
    );
    // Two Hellos arrived, and the session ended only once the client had
    // fallen silent: the live client's Hello did not end it.
    assert!(muted, "the session ended only after the client fell silent");
    assert!(
        matches!(end, Err(SessionError::ClientRestarted)),
        "ended with {end:?}"
    );
    assert_eq!(events.stats().hellos_on_session, 2);
    relay_task.abort();
}

// r[verify session.host.idle]
/// A client that falls silent is timed out even while unauthentic messages
/// and Hellos keep arriving from its address.
#[tokio::test]
async fn junk_from_a_silent_client_does_not_keep_the_session_alive() {
    use futures::FutureExt;
    use std::sync::atomic::Ordering;
    let (h, c, relay, task) = relayed();
    let relay_task = tokio::spawn(task);
    let host_cfg = HostConfig {
        psk: Some(PSK.to_vec()),
        idle_timeout: Duration::from_millis(800),
        // Larger than the idle timeout: only the idle rule can end it.
        restart_grace: Duration::from_secs(60),
        ..HostConfig::default()
    };
    let (host, client) =
        futures::join!(Host::accept(h, host_cfg), Client::connect(c, enc_client()));
    let (_host, mut events) = host.expect("accept");
    let (mut client, _input) = client.expect("connect");
    let hello = relay.hello();
    relay.mute.store(true, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let junk = async {
        // A Hello and a sealed-looking Feedback that fails to open, every
        // 50 ms, for far longer than the idle timeout.
        let mut forged = vec![wire::VERSION, Kind::Feedback as u8];
        forged.extend_from_slice(&[0xAB; 60]);
        for _ in 0..100 {
            relay.inject.unbounded_send(hello.clone()).unwrap();
            relay.inject.unbounded_send(forged.clone()).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let receiving = async { while let Ok(Some(_)) = client.next_frame().await {} };
    let end = futures::select! {
        e = async { loop { match events.next_event().await { Ok(Some(_)) => {}, other => break other } } }.fuse() => e,
        _ = junk.fuse() => panic!("the session outlived 5 s of junk with an 800 ms idle timeout"),
        _ = receiving.fuse() => panic!("the client ended"),
    };
    assert!(
        matches!(end, Err(SessionError::IdleTimeout(_))),
        "ended with {end:?}"
    );
    let st = events.stats();
    assert!(
        st.hellos_on_session > 0
            && st.auth_failures + st.malformed_dropped + st.replays_dropped > 0,
        "{st:?}"
    );
    eprintln!(
        "idle timeout after {:?} of junk (timeout 800 ms)",
        started.elapsed()
    );
    relay_task.abort();
}
