//! Session rules checked on the wire: a real `Host` talks to a hand-written
//! client that runs the handshake with the crate's own message types and
//! then reads every shard header the host sends. The parity count, the
//! `Auto` coder threshold, the adaptive parity and the refusal of an
//! oversized frame are judged from what is on the wire, against the
//! formulas in `spec/session.md`.

use futures::FutureExt;
use link_session::fec::{CODER_RS8, CODER_RS16};
use link_session::handshake::{Hello, Welcome};
use link_session::wire::{self, Kind, OUTER_LEN, RANDOM_LEN, ShardHeader, VERSION};
use link_session::{FecScheme, FrameFlags, Host, HostConfig, HostEvent, SessionError};
use link_types::{
    FaultSpec, Link, LinkRx, LinkTx, LinkTxPermit, MemoryConfig, WriteSlot, fault_pair, memory_pair,
};

/// A lossy (in its capabilities) pair that loses nothing in practice: the
/// host shards and protects frames, and the test sees every shard.
fn lossy_pair() -> (impl Link, impl Link) {
    let (a, b) = memory_pair(MemoryConfig {
        capacity: 1 << 14,
        max_payload: 1472,
    });
    let never = FaultSpec::loss(f64::MIN_POSITIVE);
    fault_pair(a, b, never, never, 1).expect("valid spec")
}

async fn send<T: LinkTx>(tx: &mut T, kind: Kind, pn: u64, body: &[u8]) {
    let permit = tx.reserve().await.expect("reserve");
    let mut slot = permit.alloc(OUTER_LEN + body.len()).expect("alloc");
    let b = slot.as_mut_slice();
    wire::write_outer(b, kind, pn);
    b[OUTER_LEN..].copy_from_slice(body);
    slot.commit().expect("commit");
    tx.flush().await.expect("flush");
}

/// The client side of the handshake, unencrypted; returns the Welcome.
async fn handshake<T: LinkTx, R: LinkRx>(tx: &mut T, rx: &mut R) -> Welcome {
    let random = [9u8; RANDOM_LEN];
    let hello = Hello {
        min_version: VERSION,
        max_version: VERSION,
        random,
        encryption: false,
        max_frame: 1 << 22,
        max_message: 1472,
    };
    send(tx, Kind::Hello, 0, &hello.to_bytes()).await;
    let welcome = loop {
        let m = rx.recv().await.expect("recv").expect("a Welcome");
        let o = wire::read_outer(&m).expect("outer header");
        if o.kind == Kind::Welcome {
            break Welcome::read(&m[OUTER_LEN..]).expect("a Welcome");
        }
    };
    assert_eq!(welcome.client_random, random);
    send(tx, Kind::Finish, 0, &[]).await;
    welcome
}

/// The shard headers of one frame as sent: per block, `(k, m, data shards
/// seen, parity shards seen)`, and the coder.
#[derive(Debug, Default)]
struct Sent {
    frame: Option<u32>,
    coder: Option<u8>,
    blocks: Vec<(u16, u16, usize, usize)>,
}

/// Read every message waiting, and sum up the shards of `frame`.
fn shards_waiting<R: LinkRx>(rx: &mut R) -> Sent {
    let mut s = Sent::default();
    while let Some(r) = rx.recv().now_or_never() {
        let m = r.expect("recv").expect("open link");
        let o = wire::read_outer(&m).expect("outer header");
        if o.kind != Kind::Shard {
            continue;
        }
        let h = ShardHeader::read(&mut wire::Reader::new(&m[OUTER_LEN..])).expect("header");
        assert!(s.frame.is_none_or(|f| f == h.frame), "one frame at a time");
        assert!(s.coder.is_none_or(|c| c == h.coder), "one coder per frame");
        s.frame = Some(h.frame);
        s.coder = Some(h.coder);
        let b = h.block as usize;
        if s.blocks.len() <= b {
            s.blocks.resize(b + 1, (0, 0, 0, 0));
        }
        let e = &mut s.blocks[b];
        e.0 = h.k;
        e.1 = h.m;
        if h.index < h.k {
            e.2 += 1;
        } else {
            e.3 += 1;
        }
    }
    s
}

/// The spec's parity formula, written out independently of the crate.
fn parity(k: usize, pct: usize, min: usize, rs8: bool) -> usize {
    let m = (k * pct).div_ceil(100).max(min).min(k.max(16));
    if rs8 { m.min(255 - k) } else { m }
}

// r[verify session.fec.parity]
/// Every block carries `m = max(min_parity, ceil(k · parity_pct / 100))`
/// parity shards (capped at `max(k, 16)` and the coder's limit), for
/// blocks of 1 to 64 data shards and several settings, each counted on the
/// wire.
#[tokio::test]
async fn parity_shards_per_block_follow_the_formula() {
    for (pct, min) in [(20u8, 1u8), (50, 3), (0, 2), (0, 0), (100, 1), (7, 16)] {
        let (a, b) = lossy_pair();
        let config = HostConfig {
            fec: FecScheme::Rs8,
            shard_size: 1000,
            parity_pct: pct,
            min_parity: min,
            ..HostConfig::default()
        };
        let (mut tx, mut rx) = b.split();
        let (host, welcome) = futures::join!(Host::accept(a, config), handshake(&mut tx, &mut rx));
        let (mut host, _events) = host.expect("accept");
        assert_eq!(welcome.params.shard_size, 1000);
        for len in [1usize, 1000, 1001, 10_000, 33_333, 64_000, 100_000] {
            host.send_frame(&vec![7; len], 0, FrameFlags::NONE)
                .await
                .expect("send");
            let s = shards_waiting(&mut rx);
            assert_eq!(s.coder, Some(CODER_RS8));
            let n = len.div_ceil(1000);
            let blocks = n.div_ceil(64);
            assert_eq!(s.blocks.len(), blocks, "{len} bytes: blocks");
            let mut data = 0;
            for (i, &(k, m, d, p)) in s.blocks.iter().enumerate() {
                let (k, m) = (k as usize, m as usize);
                let want = parity(k, pct as usize, min as usize, true);
                assert_eq!(
                    (m, p),
                    (want, want),
                    "pct {pct}, min {min}, {len} bytes, block {i} of k = {k}: \
                     header m and parity shards sent"
                );
                assert_eq!(d, k, "every data shard sent");
                data += k;
            }
            assert_eq!(data, n, "{len} bytes in {n} data shards");
        }
    }
}

// r[verify session.fec.coders]
/// `FecScheme::Auto` codes frames of at most 64 data shards with GF(2^8)
/// and larger ones with GF(2^16), the threshold the Welcome announces.
#[tokio::test]
async fn auto_coder_switches_above_64_data_shards() {
    assert_eq!(link_session::AUTO_RS16_ABOVE, 64);
    let (a, b) = lossy_pair();
    let config = HostConfig {
        shard_size: 1000,
        ..HostConfig::default()
    };
    let (mut tx, mut rx) = b.split();
    let (host, welcome) = futures::join!(Host::accept(a, config), handshake(&mut tx, &mut rx));
    let (mut host, _events) = host.expect("accept");
    assert_eq!(welcome.params.fec, FecScheme::Auto);
    assert_eq!(welcome.params.auto_threshold, 64);
    for (n, coder) in [
        (1, CODER_RS8),
        (63, CODER_RS8),
        (64, CODER_RS8),
        (65, CODER_RS16),
        (200, CODER_RS16),
    ] {
        host.send_frame(&vec![1; n * 1000], 0, FrameFlags::NONE)
            .await
            .expect("send");
        let s = shards_waiting(&mut rx);
        assert_eq!(s.coder, Some(coder), "{n} data shards");
        assert_eq!(s.blocks.len(), 1, "{n} data shards: one block");
        assert_eq!(s.blocks[0].0 as usize, n);
    }
}

// r[verify session.feedback.adaptive]
/// With adaptive parity, each loss report sets the parity to
/// `max(parity_pct, ceil(3 · loss%) + 1)` (at most 100), up and down
/// again; measured on the wire for a block of 50 data shards.
#[tokio::test]
async fn adaptive_parity_follows_each_report() {
    let (a, b) = lossy_pair();
    let config = HostConfig {
        fec: FecScheme::Rs8,
        shard_size: 1000,
        parity_pct: 20,
        min_parity: 1,
        adaptive_parity: true,
        ..HostConfig::default()
    };
    let (mut tx, mut rx) = b.split();
    let (host, _) = futures::join!(Host::accept(a, config), handshake(&mut tx, &mut rx));
    let (mut host, mut events) = host.expect("accept");
    for (i, ppm) in [100_000u32, 0, 250_000, 12_345, 400_000, 66_667, 1_000_000]
        .into_iter()
        .enumerate()
    {
        let pn = i as u64 + 1;
        let mut body = Vec::new();
        body.extend_from_slice(&(i as u64).to_le_bytes());
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&ppm.to_le_bytes());
        body.extend_from_slice(&0u64.to_le_bytes());
        send(&mut tx, Kind::Feedback, pn, &body).await;
        match events.next_event().await.expect("event") {
            Some(HostEvent::LossReport(r)) => assert_eq!(r.loss_ppm, ppm),
            other => panic!("expected the loss report, got {other:?}"),
        }
        host.send_frame(&vec![3; 50_000], 0, FrameFlags::NONE)
            .await
            .expect("send");
        let s = shards_waiting(&mut rx);
        let loss_pct = ppm as f64 / 10_000.0;
        let pct = ((3.0 * loss_pct - 1e-9).ceil() as usize + 1).clamp(20, 100);
        let want = parity(50, pct, 1, true);
        assert_eq!(
            (s.blocks[0].1 as usize, s.blocks[0].3),
            (want, want),
            "report of {ppm} ppm: parity {pct}%"
        );
        assert_eq!(host.stats().parity_pct, pct as u64);
    }
}

// r[verify session.host.send]
/// A frame above the agreed maximum is refused with `FrameTooLarge` and
/// uses no frame index: the next frame that fits goes out as frame 0.
#[tokio::test]
async fn oversized_frame_is_refused_without_an_index() {
    let (a, b) = lossy_pair();
    let config = HostConfig {
        shard_size: 1000,
        max_frame: 10_000,
        ..HostConfig::default()
    };
    let (mut tx, mut rx) = b.split();
    let (host, welcome) = futures::join!(Host::accept(a, config), handshake(&mut tx, &mut rx));
    let (mut host, _events) = host.expect("accept");
    assert_eq!(welcome.params.max_frame, 10_000);
    match host.send_frame(&[0; 10_001], 0, FrameFlags::NONE).await {
        Err(SessionError::FrameTooLarge { len, max }) => assert_eq!((len, max), (10_001, 10_000)),
        other => panic!("an oversized frame gave {other:?}, expected FrameTooLarge"),
    }
    assert_eq!(host.next_index(), 0, "the refused frame used an index");
    assert_eq!(shards_waiting(&mut rx).frame, None, "something was sent");
    host.send_frame(&[0; 10_000], 0, FrameFlags::NONE)
        .await
        .expect("a frame of exactly the maximum");
    assert_eq!(shards_waiting(&mut rx).frame, Some(0));
    assert_eq!(host.next_index(), 1);
    assert_eq!(host.stats().frames_sent, 1);
}
