//! Streaming checks for the session (`link-session`) over any link: a
//! host streams frames whose every byte the client can check, and the
//! outcome (delivered, lost, corrupt, zero-copy, stats) comes back for the
//! test to judge.

use link_session::{Client, ClientConfig, ClientEvent, FrameFlags, Host, HostConfig, HostEvent};
use link_types::Link;

/// A frame whose bytes are a function of its index (so the receiver can
/// check every byte), with a trailing FNV checksum.
pub fn frame_bytes(index: u32, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(index.wrapping_mul(97)) as u8
        })
        .collect();
    if len >= 8 {
        let sum = fnv(&v[..len - 8]);
        v[len - 8..].copy_from_slice(&sum.to_le_bytes());
    }
    v
}

/// FNV-1a over `b`.
pub fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ *x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Frame sizes of a small stream: a keyframe every 30 frames.
pub fn size_of(i: u32, base: usize) -> usize {
    if i.is_multiple_of(30) {
        base * 8
    } else {
        base + (i as usize * 37) % base
    }
}

/// What a streaming run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Frames delivered whole.
    pub delivered: u32,
    /// Frames reported lost.
    pub lost: u32,
    /// Delivered frames whose bytes were wrong.
    pub corrupt: u32,
    /// Delivered frames still in the link's buffer.
    pub zero_copy: u32,
    /// Delivered frames that parity rebuilt.
    pub recovered: u32,
    /// Keyframe requests the host saw.
    pub keyframe_requests: u32,
    /// The client's counters at the end.
    pub client: Option<link_session::ClientStats>,
    /// The host's counters at the end.
    pub host: Option<link_session::HostStats>,
}

/// Stream `frames` frames host → client over a connected pair, check every
/// byte, and return what happened.
pub async fn stream<A, B>(
    a: A,
    b: B,
    host_cfg: HostConfig,
    client_cfg: ClientConfig,
    frames: u32,
    base: usize,
) -> Outcome
where
    A: Link + 'static,
    B: Link + 'static,
    A::Tx: 'static,
    A::Rx: 'static,
    B::Tx: 'static,
    B::Rx: 'static,
{
    stream_paced(
        a,
        b,
        host_cfg,
        client_cfg,
        frames,
        base,
        std::time::Duration::ZERO,
    )
    .await
}

/// [`stream`] with a pause of `pace` after each frame (a real stream's
/// frame interval; a datagram link flooded faster than the receiver reads
/// loses datagrams in the kernel).
pub async fn stream_paced<A, B>(
    a: A,
    b: B,
    host_cfg: HostConfig,
    client_cfg: ClientConfig,
    frames: u32,
    base: usize,
    pace: std::time::Duration,
) -> Outcome
where
    A: Link + 'static,
    B: Link + 'static,
    A::Tx: 'static,
    A::Rx: 'static,
    B::Tx: 'static,
    B::Rx: 'static,
{
    let host = async move {
        let (mut host, mut events) = Host::accept(a, host_cfg).await.expect("accept");
        let ev = async move {
            let mut kf = 0;
            // A host-side error is the test's failure, not the end.
            while let Some(e) = events.next_event().await.expect("host event") {
                if let HostEvent::KeyframeRequest { .. } = e {
                    kf += 1;
                }
            }
            (kf, events.stats())
        };
        let send = async move {
            for i in 0..frames {
                let data = frame_bytes(i, size_of(i, base));
                let flags = if i.is_multiple_of(30) {
                    FrameFlags::KEYFRAME
                } else {
                    FrameFlags::NONE
                };
                host.send_frame(&data, i as u64 * 1000, flags)
                    .await
                    .expect("send");
                if !pace.is_zero() {
                    futures_timer::Delay::new(pace).await;
                }
            }
            host.close().await.expect("close");
        };
        // The host's counters once the client is gone (loss reports included).
        let ((kf, stats), ()) = futures::join!(ev, send);
        (kf, stats)
    };
    let client = async move {
        let (mut c, mut input) = Client::connect(b, client_cfg).await.expect("connect");
        let mut out = Outcome::default();
        let mut next = 0u32;
        while let Some(ev) = c.next_frame().await.expect("next_frame") {
            match ev {
                ClientEvent::Frame(f) => {
                    assert_eq!(
                        f.index, next,
                        "frame {next} was neither delivered nor reported lost before frame {}",
                        f.index
                    );
                    next = f.index + 1;
                    let want = frame_bytes(f.index, size_of(f.index, base));
                    if f.data() != &want[..] || f.pts != f.index as u64 * 1000 {
                        out.corrupt += 1;
                    }
                    assert_eq!(f.flags.is_keyframe(), f.index.is_multiple_of(30));
                    out.delivered += 1;
                    out.zero_copy += f.is_zero_copy() as u32;
                    out.recovered += f.recovered as u32;
                }
                ClientEvent::Lost { first, count } => {
                    assert_eq!(
                        first, next,
                        "frame {next} was neither delivered nor reported lost before loss of {first}"
                    );
                    next = first + count;
                    out.lost += count;
                }
            }
        }
        assert_eq!(
            next, frames,
            "the stream ended with frames {next}..{frames} neither delivered nor reported lost"
        );
        input.close().await.expect("input close");
        out.client = Some(c.stats());
        out
    };
    let ((kf, hs), mut out) = futures::join!(host, client);
    out.keyframe_requests = kf;
    out.host = Some(hs);
    out
}
