//! The layered encoder behind the hub, end to end in one process: the real
//! `LayeredEncoder`, the hub's `serve` (a link-session host per viewer)
//! over in-memory links, link-session clients and `LayeredDecoder`s, with
//! every picture checked by its burned-in index and its PSNR against the
//! test pattern rendered again (as `linkstream client` checks).
//!
//! The encoder runs in lockstep with the viewers (frame `n + 1` is encoded
//! once every viewer handled frame `n`), so what is asserted counts frames,
//! never time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use link_session::{BweConfig, Client, ClientConfig, ClientEvent, HostConfig};
use link_types::memory_pair;
use link_video::hub::{EncodedFrame, Hub, HubConfig};
use link_video::index::{read_index_scaled, unwrap_index};
use link_video::layered::{LtrId, Recovery};
use link_video::{
    Codec, Decoder as _, Encoder as _, LayeredConfig, LayeredDecoder, LayeredEncoder, TestSrc,
    VideoHeader, psnr_y,
};
use tokio::sync::mpsc;

const W: usize = 640;
const H: usize = 360;
const FPS: u32 = 30;

/// What a viewer did with one frame.
#[derive(Debug, Clone, Copy)]
struct Seen {
    capture_index: u64,
    temporal_id: u8,
    keyframe: bool,
    recovery: bool,
    rendition: u8,
    /// Decoded whole, index read back equal, Y PSNR (dB); `None` when it
    /// did not decode whole (or was dropped on purpose).
    psnr: Option<f64>,
}

/// A viewer: receives, decodes, checks; drops (does not decode) the frame
/// with capture index `lose` and reports it to the host as unusable, as a
/// client does for a frame it lost; with `lose_recovery`, also the first
/// recovery frame after it. Tells the encoder loop after each frame.
async fn viewer(
    link: link_types::MemoryLink,
    lose: Option<u64>,
    lose_recovery: bool,
    done: mpsc::UnboundedSender<(usize, u64)>,
    me: usize,
) -> Vec<Seen> {
    let (mut client, _input) = Client::connect(link, ClientConfig::default())
        .await
        .unwrap();
    let mut dec = LayeredDecoder::new().unwrap();
    let src = TestSrc::new(W, H, FPS).unwrap();
    let mut want = vec![0u8; src.frame_len()];
    let mut seen = Vec::new();
    let mut recovery_lost = !lose_recovery;
    while let Ok(Some(ev)) = client.next_frame().await {
        let ClientEvent::Frame(f) = ev else {
            panic!("in-memory links lose nothing: {ev:?}")
        };
        let (h, au) = VideoHeader::parse(f.data()).unwrap();
        let mut s = Seen {
            capture_index: h.capture_index,
            temporal_id: h.temporal_id,
            keyframe: h.keyframe,
            recovery: h.recovery,
            rendition: h.rendition,
            psnr: None,
        };
        let lost_recovery = h.recovery
            && !h.keyframe
            && !recovery_lost
            && lose.is_some_and(|l| h.capture_index > l);
        if Some(h.capture_index) == lose || lost_recovery {
            recovery_lost |= lost_recovery;
            client.request_keyframe(f.index);
        } else if let Ok(Some(pic)) = dec.decode(au) {
            // A rendition is checked through the scaling that made it.
            let read = read_index_scaled(pic.y(), pic.width, pic.height, h.rendition)
                .map(|low| unwrap_index(low, h.capture_index));
            assert_eq!(read, Some(h.capture_index), "burned-in index");
            assert_eq!(
                (pic.width, pic.height),
                (W >> h.rendition, H >> h.rendition)
            );
            src.render(h.capture_index, &mut want).unwrap();
            let reference = halved(&want, h.rendition);
            s.psnr = Some(psnr_y(&pic.data, &reference, pic.width, pic.height).unwrap());
        }
        seen.push(s);
        let _ = done.send((me, h.capture_index));
    }
    seen
}

/// The test pattern `pic` (W x H) halved `times` times, as a host makes
/// that rendition.
fn halved(pic: &[u8], times: u8) -> Vec<u8> {
    let (mut w, mut h, mut cur) = (W, H, pic.to_vec());
    for _ in 0..times {
        let mut out = vec![0u8; link_video::i420_len(w / 2, h / 2)];
        link_video::scale::half_i420(&cur, w, h, &mut out).unwrap();
        (w, h, cur) = (w / 2, h / 2, out);
    }
    cur
}

/// The host side: encode `frames` pictures with the hub's decisions
/// (keyframes, recoveries, LTR verdicts, bitrate), one encoder per
/// rendition (`encs[r]`, each only while the hub says the rendition is
/// active), and publish each; after each picture wait until every viewer
/// handled each frame queued to it.
async fn host_loop(
    hub: &Hub,
    encs: &mut [LayeredEncoder],
    frames: u64,
    done: &mut mpsc::UnboundedReceiver<(usize, u64)>,
    mut after: impl FnMut(u64),
) {
    let src = TestSrc::new(W, H, FPS).unwrap();
    let mut pic = vec![0u8; src.frame_len()];
    let mut marks: Vec<Vec<(u64, LtrId)>> = vec![Vec::new(); encs.len()];
    let mut au = Vec::new();
    // 30 frames a second, as a capture would give them.
    let mut tick = tokio::time::interval(Duration::from_millis(33));
    for i in 0..frames {
        tick.tick().await;
        src.render(i, &mut pic).unwrap();
        let viewers = hub.viewers();
        let queued_before: Vec<u64> = viewers.iter().map(|v| v.counters().frames_queued).collect();
        for (r, enc) in encs.iter_mut().enumerate() {
            let r = r as u8;
            if !hub.rendition_active(r) {
                continue;
            }
            if hub.take_keyframe_of(r, Instant::now()) {
                enc.force_keyframe();
            }
            for (index, ok) in hub.take_mark_outcomes_of(r) {
                let m = &mut marks[usize::from(r)];
                if let Some(p) = m.iter().position(|m| m.0 == index) {
                    let id = m.remove(p).1;
                    let _ = if ok {
                        enc.confirm_ltr(id)
                    } else {
                        enc.reject_ltr(id)
                    };
                }
            }
            if hub.take_recovery_of(r) {
                assert!(matches!(enc.request_recovery().unwrap(), Recovery::Ltr(_)));
            }
            let bps = hub.target_bitrate_of(r);
            enc.set_bitrate(bps).unwrap();
            au.clear();
            let input = halved(&pic, r);
            let info = enc.encode(&input, &mut au).unwrap();
            if let Some(id) = info.ltr_mark {
                marks[usize::from(r)].push((i, id));
            }
            let now = link_video::now_us();
            hub.publish(Arc::new(EncodedFrame {
                header: VideoHeader {
                    live: false,
                    codec: Codec::H264AnnexB,
                    keyframe: info.keyframe,
                    temporal_id: info.temporal_id,
                    recovery: info.recovery,
                    rendition: r,
                    viewer_target_10kbps: 0,
                    width: (W >> r) as u16,
                    height: (H >> r) as u16,
                    target_kbps: (bps / 1000) as u32,
                    capture_index: i,
                    capture_us: now,
                    encoded_us: now,
                    sent_us: 0,
                },
                access_unit: au.clone(),
                ltr_mark: info.ltr_mark.is_some(),
            }));
        }
        // Lockstep: each viewer handles every frame queued to it before the
        // next picture (viewer ids are 1, 2, ... in the order they joined;
        // the test's viewers number themselves 0, 1, ... in that order).
        let mut waiting: Vec<usize> = Vec::new();
        for (v, before) in viewers.iter().zip(queued_before) {
            let n = v.counters().frames_queued - before;
            waiting.extend(std::iter::repeat_n(v.id() as usize - 1, n as usize));
        }
        while !waiting.is_empty() {
            let (who, index) = tokio::time::timeout(Duration::from_secs(10), done.recv())
                .await
                .expect("a viewer handles each frame")
                .unwrap();
            if index == i
                && let Some(p) = waiting.iter().position(|&w| w == who)
            {
                waiting.remove(p);
            }
        }
        after(i);
    }
}

async fn joined(hub: &Hub, n: usize) {
    while hub.stats().viewers < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Viewers 0, 1, ... of `hub`, joined in that order, each served by a
/// session whose estimate is pinned at its rate in `bps` (no probing), so
/// that each viewer's target is known.
async fn pinned_viewers<const N: usize>(
    hub: &Arc<Hub>,
    bps: [u64; N],
) -> (
    mpsc::UnboundedReceiver<(usize, u64)>,
    Vec<tokio::task::JoinHandle<Vec<Seen>>>,
) {
    let (tx, done) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (me, bps) in bps.into_iter().enumerate() {
        let config = HostConfig {
            bwe: BweConfig {
                start_bps: bps,
                min_bps: bps,
                max_bps: bps,
                pacing_gain: 1.0,
                probing: false,
            },
            ..HostConfig::default()
        };
        let (a, b) = memory_pair(Default::default());
        let hub2 = hub.clone();
        tokio::spawn(async move { hub2.serve(a, config, |_| {}).await });
        tasks.push(tokio::spawn(viewer(b, None, false, tx.clone(), me)));
        joined(hub, me + 1).await;
    }
    (done, tasks)
}

/// The frame viewer 0 of [`lossy_pair`] loses (a TL0 frame).
const LOST: u64 = 40;

/// A hub with recovery frames at 1.5 Mbit/s, a 2-layer encoder, and two
/// viewers joined: viewer 0 loses frame [`LOST`] (and, with
/// `lose_recovery`, the first recovery frame after it), viewer 1 nothing.
async fn lossy_pair(
    lose_recovery: bool,
) -> (
    Arc<Hub>,
    LayeredEncoder,
    mpsc::UnboundedReceiver<(usize, u64)>,
    Vec<tokio::task::JoinHandle<Vec<Seen>>>,
) {
    let hub = Arc::new(Hub::new(HubConfig {
        recovery: true,
        ..HubConfig::new(1_500_000)
    }));
    let enc = LayeredEncoder::new(LayeredConfig {
        temporal_layers: 2,
        ..LayeredConfig::new(W, H, FPS, 1_500_000)
    })
    .unwrap();
    let (tx, done) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (me, lose) in [(0usize, Some(LOST)), (1, None)] {
        let (a, b) = memory_pair(Default::default());
        let hub2 = hub.clone();
        tokio::spawn(async move { hub2.serve(a, HostConfig::default(), |_| {}).await });
        tasks.push(tokio::spawn(viewer(b, lose, lose_recovery, tx.clone(), me)));
        joined(&hub, me + 1).await;
    }
    (hub, enc, done, tasks)
}

/// One viewer loses (drops) the TL0 frame 40; the host's next TL0 frame is
/// an LTR recovery frame and the viewer's picture is whole again two frames
/// after the loss, with no IDR sent; the other viewer misses nothing.
// r[verify video.hub.recovery]
// r[verify video.hub.ltr-confirm]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_frame_is_repaired_by_a_recovery_frame_within_two_frames_without_an_idr() {
    let (hub, mut enc, mut done, mut tasks) = lossy_pair(false).await;
    let viewers = hub.viewers();
    host_loop(&hub, std::slice::from_mut(&mut enc), 60, &mut done, |i| {
        // The viewer's report of the loss reaches the host before the
        // next frame is encoded (a round trip shorter than a frame
        // interval, as on a LAN).
        if i == LOST {
            let start = Instant::now();
            while !viewers[0].recovery_awaited() {
                assert!(start.elapsed() < Duration::from_secs(10), "no request");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
    .await;
    hub.stop();
    let lossy = tasks.remove(0).await.unwrap();
    let clean = tasks.remove(0).await.unwrap();

    let st = enc.stats();
    println!("encoder: {st:?}; hub: {:?}", hub.stats());
    assert_eq!(st.idrs, 1, "only the first frame is an IDR");
    assert_eq!(st.idr_recoveries, 0);
    assert_eq!(st.ltr_recoveries, 1, "exactly one recovery frame");
    assert!(hub.stats().marks_confirmed >= 2, "{:?}", hub.stats());
    let rec = lossy
        .iter()
        .find(|s| s.recovery && !s.keyframe)
        .expect("a recovery frame reached the viewer");
    assert_eq!(rec.temporal_id, 0);
    // Whole again within two frame intervals of the loss, and from there
    // on every picture whole and right.
    let first_whole = lossy
        .iter()
        .find(|s| s.capture_index > LOST && s.psnr.is_some())
        .unwrap();
    assert!(
        first_whole.capture_index <= LOST + 2,
        "whole again at frame {}",
        first_whole.capture_index
    );
    for s in &lossy {
        if s.capture_index != LOST && (s.capture_index < LOST || s.capture_index >= LOST + 2) {
            let p = s.psnr.unwrap_or_else(|| panic!("frame {s:?} not whole"));
            assert!(p > 35.0, "{s:?}");
        }
    }
    assert_eq!(lossy.len(), 60);
    assert!(
        lossy.iter().skip(1).all(|s| !s.keyframe),
        "no IDR after the first"
    );
    // The other viewer: every frame whole.
    assert_eq!(clean.len(), 60);
    assert!(clean.iter().all(|s| s.psnr.is_some_and(|p| p > 35.0)));
}

/// One viewer loses frame 40 and then the recovery frame sent for it (as
/// when the reference a recovery frame predicts from never reached its
/// decoder): the host answers that report with an IDR, not a second
/// recovery frame from the same reference, and the viewer is whole again
/// at the IDR; the other viewer misses nothing.
// r[verify video.hub.recovery-failed]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recovery_frame_reported_unusable_is_answered_with_an_idr() {
    let (hub, mut enc, mut done, mut tasks) = lossy_pair(true).await;
    let viewers = hub.viewers();
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < Duration::from_secs(10), "no {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let mut recovery_at = None;
    host_loop(&hub, std::slice::from_mut(&mut enc), 60, &mut done, |i| {
        // Each report reaches the host before the next frame is
        // encoded, as on a LAN.
        if i == LOST {
            wait("recovery request", &|| viewers[0].recovery_awaited());
        }
        if recovery_at.is_none() && viewers[0].counters().recovery_frames_sent == 1 {
            recovery_at = Some(i);
            wait("keyframe request", &|| viewers[0].keyframe_wanted());
        }
    })
    .await;
    hub.stop();
    let lossy = tasks.remove(0).await.unwrap();
    let clean = tasks.remove(0).await.unwrap();

    let st = enc.stats();
    println!("encoder: {st:?}; hub: {:?}", hub.stats());
    let rec = recovery_at.expect("a recovery frame was sent");
    assert_eq!(st.ltr_recoveries, 1, "one recovery frame, not a second");
    assert_eq!(st.idrs, 2, "the first frame, and the answer to the report");
    let c = viewers[0].counters();
    assert_eq!(c.recovery_escalations, 1, "{c:?}");
    let idr = lossy
        .iter()
        .skip(1)
        .find(|s| s.keyframe)
        .expect("an IDR reached the viewer");
    assert_eq!(idr.capture_index, rec + 1, "the IDR follows the report");
    // From the IDR on, every picture whole and right.
    for s in lossy
        .iter()
        .filter(|s| s.capture_index >= idr.capture_index)
    {
        let p = s.psnr.unwrap_or_else(|| panic!("frame {s:?} not whole"));
        assert!(p > 35.0, "{s:?}");
    }
    assert_eq!(clean.len(), 60);
    assert!(clean.iter().all(|s| s.psnr.is_some_and(|p| p > 35.0)));
}

/// A viewer whose session's target is far below the stream's rate gets
/// the base layer only (half the frames, each whole); the fast viewer
/// gets every frame, and the encoder's bitrate is the fast viewer's target.
// r[verify video.hub.layers]
// r[verify video.hub.bitrate]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_viewer_gets_the_base_layer_and_the_encoder_follows_the_fast_one() {
    const FAST: u64 = 1_200_000;
    const SLOW: u64 = 400_000;
    let hub = Arc::new(Hub::new(HubConfig {
        recovery: true,
        min_bitrate_bps: 100_000,
        latency_budget: Duration::MAX,
        ..HubConfig::new(4_000_000)
    }));
    let mut enc = LayeredEncoder::new(LayeredConfig {
        temporal_layers: 2,
        ..LayeredConfig::new(W, H, FPS, 4_000_000)
    })
    .unwrap();
    let (mut done, mut tasks) = pinned_viewers(&hub, [FAST, SLOW]).await;
    let viewers = hub.viewers();
    // From the first frame on, the slow viewer takes TL0 only.
    let mut rates = Vec::new();
    host_loop(&hub, std::slice::from_mut(&mut enc), 90, &mut done, |_| {
        rates.push(hub.target_bitrate())
    })
    .await;
    let slow_counters = viewers[1].counters();
    let fast_counters = viewers[0].counters();
    hub.stop();
    let fast = tasks.remove(0).await.unwrap();
    let slow = tasks.remove(0).await.unwrap();
    println!("slow viewer: {slow_counters:?}");
    println!(
        "fast viewer: {fast_counters:?}; encoder at {:?}",
        rates.last()
    );
    assert!(fast_counters.target_bps > 2 * slow_counters.target_bps);
    assert_eq!(
        rates.last(),
        Some(&fast_counters.target_bps),
        "the encoder follows the fast viewer"
    );
    assert_eq!(enc.bitrate(), fast_counters.target_bps);
    assert_eq!(fast_counters.layer, 1);
    assert_eq!(fast_counters.frames_filtered, 0);
    assert_eq!(fast.len(), 90);
    assert!(fast.iter().all(|s| s.psnr.is_some_and(|p| p > 33.0)));
    assert_eq!(slow.len(), 45, "TL0 only: every other frame");
    assert!(slow.iter().all(|s| s.temporal_id == 0));
    assert!(slow.iter().all(|s| s.psnr.is_some_and(|p| p > 33.0)));
    assert_eq!(slow_counters.layer, 0);
    assert_eq!(slow_counters.frames_filtered, 45);
    assert_eq!(slow_counters.frames_skipped, 0);
    assert_eq!(slow_counters.recovery_requests, 0);
}

/// Simulcast with the real encoders: both viewers start on rendition 1 (the
/// picture halved); after a second the fast one moves up to rendition 0 at
/// its first keyframe and receives every frame of it at its own target,
/// while the slow one, whose target cannot carry rendition 0's base layer,
/// stays and receives every frame of rendition 1, each checked through the
/// halving.
// r[verify video.hub.renditions]
// r[verify video.scale.index]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fast_viewer_moves_up_to_the_full_picture_and_the_slow_one_keeps_the_half_size_one() {
    const FAST: u64 = 1_200_000;
    const SLOW: u64 = 250_000;
    let hub = Arc::new(Hub::new(HubConfig {
        recovery: true,
        min_bitrate_bps: 100_000,
        latency_budget: Duration::MAX,
        renditions: 2,
        ..HubConfig::new(2_000_000)
    }));
    let mut encs: Vec<LayeredEncoder> = (0..2)
        .map(|r| {
            LayeredEncoder::new(LayeredConfig {
                temporal_layers: 2,
                ..LayeredConfig::new(W >> r, H >> r, FPS, 2_000_000 >> (2 * r))
            })
            .unwrap()
        })
        .collect();
    let (mut done, mut tasks) = pinned_viewers(&hub, [FAST, SLOW]).await;
    let viewers = hub.viewers();
    host_loop(&hub, &mut encs, 90, &mut done, |_| {}).await;
    let fast_counters = viewers[0].counters();
    let slow_counters = viewers[1].counters();
    hub.stop();
    let fast = tasks.remove(0).await.unwrap();
    let slow = tasks.remove(0).await.unwrap();
    println!("fast viewer: {fast_counters:?}\nslow viewer: {slow_counters:?}");
    // Every frame reached each viewer whole, checked through its rendition.
    for (who, seen) in [("fast", &fast), ("slow", &slow)] {
        assert!(
            seen.iter().all(|s| s.psnr.is_some_and(|p| p > 30.0)),
            "{who}"
        );
    }
    // The slow viewer: rendition 1 throughout; its TL0 frames while the
    // fast viewer shared rendition 1 (at the fast one's rate, capped at a
    // quarter: TL1 was above its target), then every frame (rendition 1
    // runs at its own target).
    assert!(slow.iter().all(|s| s.rendition == 1));
    assert_eq!(slow.len() as u64 + slow_counters.frames_filtered, 90);
    assert_eq!(encs[1].bitrate(), SLOW);
    assert_eq!(
        (slow_counters.rendition, slow_counters.rendition_changes),
        (1, 0)
    );
    assert_eq!(slow_counters.frames_skipped, 0);
    // The fast viewer: rendition 1 for about a second, then rendition 0
    // from its keyframe to the end, every frame, at its own target.
    let up = fast
        .iter()
        .position(|s| s.rendition == 0)
        .expect("the fast viewer moved up");
    assert!(fast[up].keyframe, "it moved at a keyframe");
    assert!(fast[..up].iter().all(|s| s.rendition == 1));
    assert!(fast[up..].iter().all(|s| s.rendition == 0));
    let at = fast[up].capture_index;
    assert!(
        (25..=45).contains(&at),
        "moved up at frame {at}, about 1 s in"
    );
    // Every frame once (rendition 0 is encoded first: its keyframe came
    // before that frame's copy in rendition 1).
    let idx: Vec<u64> = fast.iter().map(|s| s.capture_index).collect();
    assert_eq!(idx, (0..90).collect::<Vec<u64>>());
    assert!(fast[up..].iter().all(|s| s.psnr.is_some_and(|p| p > 33.0)));
    assert_eq!(encs[0].bitrate(), FAST);
    assert_eq!(
        (fast_counters.rendition, fast_counters.rendition_changes),
        (0, 1)
    );
    let got: Vec<u64> = slow.iter().map(|s| s.capture_index).collect();
    assert!(
        (at + 2..90).all(|i| got.contains(&i)),
        "the slow viewer gets every frame once it is alone on rendition 1: {got:?}"
    );
    assert!(slow.iter().filter(|s| s.capture_index < at).count() as u64 >= at / 2);
    assert_eq!(fast_counters.frames_skipped, 0);
}
