//! The fan-out hub: one encoder, many viewers (rules `video.hub.fanout`,
//! `video.hub.budget`, `video.hub.keyframes`, `video.hub.bitrate`).
//!
//! A host application owns the encoder and gives each encoded frame to
//! [`Hub::publish`]; the hub queues it to every viewer. Each viewer is one
//! link-session [`Host`] that [`Hub::serve`] runs (handshake, frames out,
//! events in) on whatever link the application accepted. Out of the hub
//! come:
//! - per viewer, a bounded queue of frames ([`ViewerQueue`]); a viewer
//!   whose queue is full skips frames until the next keyframe (counted, and
//!   a keyframe is requested for it), so the others are never held back;
//! - per viewer served by [`Hub::serve`], a latency budget
//!   ([`HubConfig::latency_budget`]): a frame whose age (since capture)
//!   plus the session's reported path queue delay is over it is not sent,
//!   and the viewer skips to the next keyframe (counted in
//!   [`ViewerCounters::frames_skipped_budget`]). The queue's frame count is
//!   then only a memory cap;
//! - [`Hub::take_keyframe`]: whether the next frame must be a keyframe (a
//!   new viewer, or a viewer's request, granted at most once per
//!   [`HubConfig::keyframe_interval`] per viewer);
//! - [`Hub::target_bitrate`]: the encoder's bitrate, the lowest target among
//!   the viewers' sessions (each estimates its own path), clamped between
//!   [`HubConfig::min_bitrate_bps`] and [`HubConfig::max_bitrate_bps`].
//!
//! The application's loop is: take a picture, `take_keyframe` (force one if
//! so), `target_bitrate` (set it if changed), encode, `publish`. See
//! `examples/minimal_host.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use link_session::{FrameFlags, Host, HostConfig, HostEvent, HostStats, InputEvent, SessionError};
use link_types::Link;
use tokio::sync::{Notify, mpsc};

use crate::{HEADER_LEN, VideoError, VideoHeader, now_us};

/// Smallest interval between two keyframes granted to one viewer, by
/// default.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// The default [`HubConfig::latency_budget`]: the most a frame may have
/// spent since capture (encoding and the host's queues) when it is sent.
pub const LATENCY_BUDGET: Duration = Duration::from_millis(150);

/// How long a viewer has to answer the session's Bye once the host stopped
/// sending to it.
const BYE_GRACE: Duration = Duration::from_secs(3);

/// How the hub is set up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HubConfig {
    /// Frames queued per viewer before that viewer skips to the next
    /// keyframe (at least 1): a memory cap; the latency budget bounds the
    /// time a frame waits.
    pub queue: usize,
    /// The most a frame may have spent since its capture, plus the
    /// session's reported path queue delay, when it is about to be sent to
    /// a viewer; past it the viewer skips to the next keyframe (rule
    /// `video.hub.budget`). [`Duration::MAX`] turns it off.
    pub latency_budget: Duration,
    /// The encoder's bitrate before any viewer reports a target, and the
    /// most it uses whatever the targets, bits per second.
    pub max_bitrate_bps: u64,
    /// The encoder's bitrate never goes below this, bits per second: a
    /// viewer whose path carries less skips to keyframes.
    pub min_bitrate_bps: u64,
    /// Smallest interval between two keyframes granted to one viewer.
    pub keyframe_interval: Duration,
}

impl HubConfig {
    /// The defaults for an encoder of at most `max_bitrate_bps`: 8 frames
    /// per viewer, a latency budget of [`LATENCY_BUDGET`] (150 ms), a floor
    /// of 300 kbit/s (or the maximum if lower), one keyframe a second per
    /// viewer.
    pub fn new(max_bitrate_bps: u64) -> HubConfig {
        HubConfig {
            queue: 8,
            latency_budget: LATENCY_BUDGET,
            max_bitrate_bps,
            min_bitrate_bps: 300_000.min(max_bitrate_bps),
            keyframe_interval: KEYFRAME_INTERVAL,
        }
    }
}

/// One encoded frame: its envelope header (the hub sets `sent_us` per
/// viewer) and its access unit. Shared by every viewer's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The envelope header.
    pub header: VideoHeader,
    /// The access unit (Annex B).
    pub access_unit: Vec<u8>,
}

/// What the hub counts for one viewer, live (shared by the hub and the
/// viewer's task).
#[derive(Debug)]
pub struct ViewerInfo {
    id: u64,
    frames_queued: AtomicU64,
    frames_skipped: AtomicU64,
    skip_events: AtomicU64,
    frames_sent: AtomicU64,
    frames_skipped_budget: AtomicU64,
    budget_skip_events: AtomicU64,
    last_key_queued: AtomicU64,
    key_wanted: AtomicBool,
    keyframe_requests: AtomicU64,
    keyframe_requests_coalesced: AtomicU64,
    keyframes_granted: AtomicU64,
    input_events: AtomicU64,
    target_bps: AtomicU64,
}

/// A snapshot of one viewer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewerCounters {
    /// Frames put in the viewer's queue.
    pub frames_queued: u64,
    /// Frames not queued: before the viewer's first keyframe, or skipped
    /// while it waits for the next keyframe after its queue overflowed.
    pub frames_skipped: u64,
    /// Times the viewer's queue overflowed (each starts a skip).
    pub skip_events: u64,
    /// Frames [`Hub::serve`] handed to the viewer's session.
    pub frames_sent: u64,
    /// Frames taken from the viewer's queue and not sent because of the
    /// latency budget: over it, or waiting for the next keyframe after a
    /// frame was (rule `video.hub.budget`).
    pub frames_skipped_budget: u64,
    /// Times a frame over the latency budget started a skip.
    pub budget_skip_events: u64,
    /// Keyframe requests (the viewer's lost frames, and skips).
    pub keyframe_requests: u64,
    /// Requests that arrived while one was already waiting.
    pub keyframe_requests_coalesced: u64,
    /// Keyframes granted to this viewer (the first, at join, included).
    pub keyframes_granted: u64,
    /// Input events received from the viewer.
    pub input_events: u64,
    /// The viewer's session's latest target bitrate, bits per second.
    pub target_bps: u64,
}

impl ViewerInfo {
    /// The viewer's id (1, 2, ... in the order they joined the hub).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> ViewerCounters {
        ViewerCounters {
            frames_queued: self.frames_queued.load(Relaxed),
            frames_skipped: self.frames_skipped.load(Relaxed),
            skip_events: self.skip_events.load(Relaxed),
            frames_sent: self.frames_sent.load(Relaxed),
            frames_skipped_budget: self.frames_skipped_budget.load(Relaxed),
            budget_skip_events: self.budget_skip_events.load(Relaxed),
            keyframe_requests: self.keyframe_requests.load(Relaxed),
            keyframe_requests_coalesced: self.keyframe_requests_coalesced.load(Relaxed),
            keyframes_granted: self.keyframes_granted.load(Relaxed),
            input_events: self.input_events.load(Relaxed),
            target_bps: self.target_bps.load(Relaxed),
        }
    }

    /// Asks for a keyframe for this viewer; granted by
    /// [`Hub::take_keyframe`] once the viewer's interval has passed.
    /// Requests while one waits are coalesced (counted).
    pub fn request_keyframe(&self) {
        self.keyframe_requests.fetch_add(1, Relaxed);
        if self.key_wanted.swap(true, Relaxed) {
            self.keyframe_requests_coalesced.fetch_add(1, Relaxed);
        }
    }

    /// Sets the viewer's target bitrate (what its path carries), bits per
    /// second.
    pub fn set_target_bitrate(&self, bps: u64) {
        self.target_bps.store(bps, Relaxed);
    }

    /// Whether a keyframe request waits to be granted.
    pub fn keyframe_wanted(&self) -> bool {
        self.key_wanted.load(Relaxed)
    }
}

/// One viewer's end of the hub: its bounded queue of frames.
#[derive(Debug)]
pub struct ViewerQueue {
    info: Arc<ViewerInfo>,
    rx: mpsc::Receiver<Arc<EncodedFrame>>,
}

impl ViewerQueue {
    /// The viewer's counters and controls.
    pub fn info(&self) -> &Arc<ViewerInfo> {
        &self.info
    }

    /// The next frame for this viewer; `None` once the hub dropped the
    /// viewer (it stopped, or [`Hub::remove`]).
    pub async fn next(&mut self) -> Option<Arc<EncodedFrame>> {
        self.rx.recv().await
    }

    /// The next frame if one is queued.
    pub fn try_next(&mut self) -> Option<Arc<EncodedFrame>> {
        self.rx.try_recv().ok()
    }
}

/// What a viewer's send loop does with the next frame of its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Send it.
    Send,
    /// Skip it; `starts` when it starts a skip (a keyframe is then
    /// requested).
    Skip {
        /// This frame was over the budget and starts the skip.
        starts: bool,
    },
}

/// The latency budget of one viewer's send loop (rule
/// `video.hub.budget`).
#[derive(Debug)]
struct BudgetGate {
    budget_us: u64,
    skipping: bool,
}

impl BudgetGate {
    fn new(budget: Duration) -> BudgetGate {
        BudgetGate {
            budget_us: u64::try_from(budget.as_micros()).unwrap_or(u64::MAX),
            skipping: false,
        }
    }

    /// The verdict on a frame that has waited `late_us` (its time in the
    /// host's queues plus the session's path queue delay); `newer_key`
    /// when a newer keyframe is already queued for the viewer.
    fn check(&mut self, keyframe: bool, late_us: u64, newer_key: bool) -> Verdict {
        let over = late_us > self.budget_us;
        if keyframe {
            if over && newer_key {
                // The newer keyframe is the recovery point; no request.
                self.skipping = true;
                Verdict::Skip { starts: false }
            } else {
                // A keyframe is never dropped for age alone: it ends a skip.
                self.skipping = false;
                Verdict::Send
            }
        } else if self.skipping {
            Verdict::Skip { starts: false }
        } else if over {
            self.skipping = true;
            Verdict::Skip { starts: true }
        } else {
            Verdict::Send
        }
    }
}

/// The hub's view of one viewer.
struct Slot {
    info: Arc<ViewerInfo>,
    queue: mpsc::Sender<Arc<EncodedFrame>>,
    waiting_key: bool,
    last_grant: Option<Instant>,
}

/// Counters of the hub as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Viewers being served now.
    pub viewers: usize,
    /// Sessions established by [`Hub::serve`] (handshakes completed).
    pub viewers_joined: u64,
    /// Sessions [`Hub::serve`] ended because nothing arrived from the
    /// viewer for the session's idle timeout.
    pub viewers_timed_out: u64,
    /// Handshakes [`Hub::serve`] saw fail.
    pub handshake_failures: u64,
}

/// How one viewer's session went, from [`Hub::serve`].
#[derive(Debug, Clone)]
pub struct ViewerSummary {
    /// The viewer's id.
    pub id: u64,
    /// The hub's counters for it.
    pub counters: ViewerCounters,
    /// The session's own counters.
    pub session: HostStats,
    /// How long the session lasted.
    pub duration: Duration,
    /// Whether it ended because the viewer was silent for the idle timeout.
    pub timed_out: bool,
    /// Why it ended, as one line.
    pub end: String,
}

/// Something [`Hub::serve`] reports while it serves a viewer.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewerEvent {
    /// The viewer's handshake completed; it has this id.
    Joined(u64),
    /// An input event from the viewer with this id.
    Input(u64, InputEvent),
}

/// The fan-out hub. Shared between the encoder loop and the viewers'
/// tasks (put it in an [`Arc`]).
pub struct Hub {
    config: HubConfig,
    viewers: Mutex<Vec<Slot>>,
    force_idr: AtomicBool,
    next_id: AtomicU64,
    handshake_failures: AtomicU64,
    viewers_joined: AtomicU64,
    viewers_timed_out: AtomicU64,
    stop: Notify,
    stopping: AtomicBool,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// A hub without viewers.
    pub fn new(config: HubConfig) -> Hub {
        Hub {
            config: HubConfig {
                queue: config.queue.max(1),
                ..config
            },
            viewers: Mutex::new(Vec::new()),
            force_idr: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            handshake_failures: AtomicU64::new(0),
            viewers_joined: AtomicU64::new(0),
            viewers_timed_out: AtomicU64::new(0),
            stop: Notify::new(),
            stopping: AtomicBool::new(false),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    // r[impl video.hub.keyframes]
    /// Adds a viewer: it starts at the next keyframe, which is forced at
    /// once. [`Hub::serve`] does this after the handshake; call it directly
    /// to feed a viewer that is not a link-session `Host`.
    pub fn register(&self) -> ViewerQueue {
        let (tx, rx) = mpsc::channel(self.config.queue);
        let info = Arc::new(ViewerInfo {
            id: self.next_id.fetch_add(1, Relaxed),
            frames_queued: AtomicU64::new(0),
            frames_skipped: AtomicU64::new(0),
            skip_events: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            frames_skipped_budget: AtomicU64::new(0),
            budget_skip_events: AtomicU64::new(0),
            last_key_queued: AtomicU64::new(0),
            key_wanted: AtomicBool::new(false),
            keyframe_requests: AtomicU64::new(0),
            keyframe_requests_coalesced: AtomicU64::new(0),
            keyframes_granted: AtomicU64::new(1),
            input_events: AtomicU64::new(0),
            target_bps: AtomicU64::new(self.config.max_bitrate_bps),
        });
        lock(&self.viewers).push(Slot {
            info: info.clone(),
            queue: tx,
            waiting_key: true,
            last_grant: Some(Instant::now()),
        });
        // A new viewer starts with a keyframe.
        self.force_idr.store(true, Relaxed);
        ViewerQueue { info, rx }
    }

    /// Drops a viewer: its queue closes and it no longer counts for the
    /// bitrate and keyframe decisions.
    pub fn remove(&self, id: u64) {
        lock(&self.viewers).retain(|v| v.info.id != id);
    }

    // r[impl video.hub.bitrate]
    /// The encoder's bitrate: the lowest viewer target, at most
    /// `max_bitrate_bps`, at least `min_bitrate_bps` (`max_bitrate_bps`
    /// without viewers).
    pub fn target_bitrate(&self) -> u64 {
        let v = lock(&self.viewers);
        v.iter()
            .map(|v| v.info.target_bps.load(Relaxed))
            .min()
            .unwrap_or(self.config.max_bitrate_bps)
            .min(self.config.max_bitrate_bps)
            .max(self.config.min_bitrate_bps)
    }

    /// Whether the next frame must be a keyframe: a new viewer, or a
    /// viewer's request whose interval since its last grant has passed
    /// (granted here, and counted).
    pub fn take_keyframe(&self, now: Instant) -> bool {
        let mut force = self.force_idr.swap(false, Relaxed);
        for v in lock(&self.viewers).iter_mut() {
            if v.info.key_wanted.load(Relaxed)
                && v.last_grant.is_none_or(|t| {
                    now.saturating_duration_since(t) >= self.config.keyframe_interval
                })
            {
                v.info.key_wanted.store(false, Relaxed);
                v.info.keyframes_granted.fetch_add(1, Relaxed);
                v.last_grant = Some(now);
                force = true;
            }
        }
        force
    }

    // r[impl video.hub.fanout]
    /// Queues a frame to every viewer. A viewer whose queue is full skips
    /// to the next keyframe (and asks for one); a viewer whose queue is
    /// gone is dropped. Never waits.
    pub fn publish(&self, frame: Arc<EncodedFrame>) {
        let key = frame.header.keyframe;
        let mut viewers = lock(&self.viewers);
        viewers.retain_mut(|v| {
            if v.waiting_key && !key {
                v.info.frames_skipped.fetch_add(1, Relaxed);
                return true;
            }
            match v.queue.try_send(frame.clone()) {
                Ok(()) => {
                    if key {
                        v.info
                            .last_key_queued
                            .fetch_max(frame.header.capture_index, Relaxed);
                    }
                    v.waiting_key = false;
                    v.info.frames_queued.fetch_add(1, Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    v.waiting_key = true;
                    v.info.frames_skipped.fetch_add(1, Relaxed);
                    v.info.skip_events.fetch_add(1, Relaxed);
                    v.info.request_keyframe();
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// The viewers being served now, in the order they joined.
    pub fn viewers(&self) -> Vec<Arc<ViewerInfo>> {
        lock(&self.viewers).iter().map(|v| v.info.clone()).collect()
    }

    /// The hub's counters.
    pub fn stats(&self) -> HubStats {
        HubStats {
            viewers: lock(&self.viewers).len(),
            viewers_joined: self.viewers_joined.load(Relaxed),
            viewers_timed_out: self.viewers_timed_out.load(Relaxed),
            handshake_failures: self.handshake_failures.load(Relaxed),
        }
    }

    /// Stops: no new viewer is served, every queue closes (each viewer's
    /// session sends its Bye once its frame in flight is out), and
    /// [`Hub::stopped`] returns.
    pub fn stop(&self) {
        self.stopping.store(true, Relaxed);
        self.stop.notify_waiters();
        lock(&self.viewers).clear();
    }

    /// Whether [`Hub::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    /// Returns once [`Hub::stop`] was called (at once if it was already):
    /// for the application's accept loops.
    pub async fn stopped(&self) {
        let notified = self.stop.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_stopping() {
            return;
        }
        notified.await;
    }

    /// Serves one viewer over `link`: the session handshake (as
    /// [`Host::accept`] with `config`), then frames out of the viewer's
    /// queue, each in its envelope with `sent_us` set, and the viewer's
    /// events in (keyframe requests, target bitrates; input goes to
    /// `on_event`) until either side ends. Returns how it went.
    ///
    /// # Errors
    /// [`VideoError::Handshake`] if the handshake fails (counted in
    /// [`HubStats::handshake_failures`]); [`VideoError::HubStopped`] if the
    /// hub stopped before the viewer joined.
    pub async fn serve<L>(
        &self,
        link: L,
        config: HostConfig,
        mut on_event: impl FnMut(ViewerEvent),
    ) -> Result<ViewerSummary, VideoError>
    where
        L: Link,
    {
        let started = Instant::now();
        let (mut host, mut events) = match Host::accept(link, config).await {
            Ok(x) => x,
            Err(e) => {
                self.handshake_failures.fetch_add(1, Relaxed);
                return Err(VideoError::Handshake(e));
            }
        };
        if self.is_stopping() {
            let _ = host.close().await;
            return Err(VideoError::HubStopped);
        }
        self.viewers_joined.fetch_add(1, Relaxed);
        let mut queue = self.register();
        let info = queue.info.clone();
        info.set_target_bitrate(host.target_bitrate());
        on_event(ViewerEvent::Joined(info.id));
        let stopped = Notify::new();
        let send = async {
            let mut end = String::from("host stopped");
            let mut gate = BudgetGate::new(self.config.latency_budget);
            while let Some(f) = queue.next().await {
                if self.is_stopping() {
                    // Stopping: the frames still queued are not sent; the
                    // Bye goes out at once.
                    break;
                }
                // r[impl video.hub.budget]
                // The frame's time in the host's queues (since it left the
                // encoder) plus what the session reports waiting ahead of
                // it on the path (stream links; on datagram links the
                // pacer's wait shows in the frame's own age, as the send
                // of the frame before returns once it is paced out).
                let waited = now_us().saturating_sub(f.header.encoded_us);
                let late = waited.saturating_add(host.stats().path_queue_delay_us);
                let newer_key = info.last_key_queued.load(Relaxed) > f.header.capture_index;
                if let Verdict::Skip { starts } = gate.check(f.header.keyframe, late, newer_key) {
                    info.frames_skipped_budget.fetch_add(1, Relaxed);
                    if starts {
                        info.budget_skip_events.fetch_add(1, Relaxed);
                        info.request_keyframe();
                    }
                    continue;
                }
                let flags = if f.header.keyframe {
                    FrameFlags::KEYFRAME
                } else {
                    FrameFlags::NONE
                };
                let len = HEADER_LEN + f.access_unit.len();
                let r = host
                    .send_frame_with(len, f.header.capture_us, flags, |b| {
                        let mut h = f.header;
                        h.sent_us = now_us();
                        // The slot is exactly `len` bytes: header then access unit.
                        if h.encode_into(b).is_ok() {
                            b[HEADER_LEN..].copy_from_slice(&f.access_unit);
                        }
                    })
                    .await;
                if let Err(e) = r {
                    end = format!("send failed: {e}");
                    break;
                }
                info.frames_sent.fetch_add(1, Relaxed);
            }
            // The viewer left or the host stops: no more frames for it.
            self.remove(info.id);
            let _ = host.close().await;
            stopped.notify_one();
            (end, host.stats())
        };
        let recv = async {
            let end = loop {
                match events.next_event().await {
                    Ok(Some(HostEvent::Input(ev))) => {
                        info.input_events.fetch_add(1, Relaxed);
                        on_event(ViewerEvent::Input(info.id, ev));
                    }
                    Ok(Some(HostEvent::KeyframeRequest { .. })) => info.request_keyframe(),
                    // The session's estimate of what this viewer's path carries.
                    Ok(Some(HostEvent::TargetBitrate { bps })) => info.set_target_bitrate(bps),
                    Ok(Some(_)) => {}
                    Ok(None) => break (false, "viewer closed".to_string()),
                    Err(e @ SessionError::IdleTimeout(_)) => {
                        self.viewers_timed_out.fetch_add(1, Relaxed);
                        break (true, format!("viewer timed out: {e}"));
                    }
                    Err(e) => break (false, format!("viewer gone: {e}")),
                }
            };
            // Stop sending to a viewer that is gone.
            self.remove(info.id);
            end
        };
        let recv = async {
            tokio::pin!(recv);
            tokio::select! {
                end = &mut recv => end,
                // Once the host stopped sending, the viewer has a few
                // seconds to answer the Bye (and have its last input
                // acknowledged).
                _ = async {
                    stopped.notified().await;
                    tokio::time::sleep(BYE_GRACE).await;
                } => (false, "viewer did not answer the Bye".to_string()),
            }
        };
        let ((send_end, session), (timed_out, recv_end)) = futures::join!(send, recv);
        let end = if recv_end == "viewer closed" && send_end != "host stopped" {
            send_end
        } else {
            recv_end
        };
        Ok(ViewerSummary {
            id: info.id,
            counters: info.counters(),
            session,
            duration: started.elapsed(),
            timed_out,
            end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Codec;

    fn frame(index: u64, keyframe: bool) -> Arc<EncodedFrame> {
        Arc::new(EncodedFrame {
            header: VideoHeader {
                codec: Codec::H264AnnexB,
                keyframe,
                width: 640,
                height: 360,
                target_kbps: 4000,
                capture_index: index,
                capture_us: now_us(),
                encoded_us: now_us(),
                sent_us: 0,
            },
            access_unit: vec![index as u8; 10],
        })
    }

    fn drain(q: &mut ViewerQueue) -> Vec<u64> {
        let mut got = Vec::new();
        while let Some(f) = q.try_next() {
            got.push(f.header.capture_index);
        }
        got
    }

    fn hub(queue: usize) -> Hub {
        Hub::new(HubConfig {
            queue,
            ..HubConfig::new(4_000_000)
        })
    }

    // r[verify video.hub.fanout]
    #[test]
    fn a_slow_viewer_skips_to_the_next_keyframe_and_holds_no_one_back() {
        let hub = hub(2);
        let mut fast = hub.register();
        let mut slow = hub.register();
        // Before a keyframe, a new viewer gets nothing.
        hub.publish(frame(0, false));
        assert!(drain(&mut fast).is_empty());
        // Keyframe 1, then P-frames; the slow viewer never drains.
        let mut fast_got = Vec::new();
        for i in 1..=6 {
            hub.publish(frame(i, i == 1));
            fast_got.extend(drain(&mut fast));
        }
        assert_eq!(
            fast_got,
            vec![1, 2, 3, 4, 5, 6],
            "the fast viewer gets every frame"
        );
        let f = fast.info().counters();
        assert_eq!(f.frames_skipped, 1); // frame 0, before its keyframe
        assert_eq!(f.skip_events, 0);
        // The slow one queued 1 and 2, overflowed at 3 and skips until a keyframe.
        let s = slow.info().counters();
        assert_eq!(s.skip_events, 1);
        assert_eq!(s.frames_skipped, 1 + 4);
        assert!(
            slow.info().keyframe_wanted(),
            "the skip asks for a keyframe"
        );
        assert_eq!(drain(&mut slow), vec![1, 2]);
        // Having drained, it still gets no P-frame, only the next keyframe on.
        let mut fast_got = Vec::new();
        for (i, key) in [(7, false), (8, true), (9, false)] {
            hub.publish(frame(i, key));
            fast_got.extend(drain(&mut fast));
        }
        assert_eq!(drain(&mut slow), vec![8, 9]);
        assert_eq!(fast_got, vec![7, 8, 9]);
        assert_eq!(fast.info().counters().skip_events, 0);
        // A viewer whose queue is gone is dropped from the fan-out.
        drop(slow);
        hub.publish(frame(10, false));
        assert_eq!(hub.stats().viewers, 1);
        // Stopping closes every queue.
        hub.stop();
        assert_eq!(drain(&mut fast), vec![10]);
        assert!(fast.rx.is_closed());
        assert_eq!(hub.stats().viewers, 0);
    }

    // r[verify video.hub.keyframes]
    #[test]
    fn keyframes_for_new_viewers_at_once_and_requests_at_most_once_a_second() {
        let hub = hub(4);
        let t0 = Instant::now();
        assert!(!hub.take_keyframe(t0));
        let q = hub.register();
        let v = q.info();
        assert!(hub.take_keyframe(t0), "a new viewer gets a keyframe");
        assert!(!hub.take_keyframe(t0));
        // A request within a second of the last grant waits ...
        v.request_keyframe();
        v.request_keyframe();
        assert_eq!(v.counters().keyframe_requests_coalesced, 1);
        assert!(!hub.take_keyframe(t0 + Duration::from_millis(500)));
        // ... and is granted once the second has passed, once.
        let t1 = t0 + Duration::from_millis(1100);
        assert!(hub.take_keyframe(t1));
        assert!(!hub.take_keyframe(t1));
        v.request_keyframe();
        assert!(!hub.take_keyframe(t1 + Duration::from_millis(900)));
        assert!(hub.take_keyframe(t1 + Duration::from_millis(1000)));
        let c = v.counters();
        assert_eq!(c.keyframes_granted, 3);
        assert_eq!(c.keyframe_requests, 3);
    }

    // r[verify video.hub.bitrate]
    #[test]
    fn the_encoder_follows_the_lowest_viewer_target_above_the_floor() {
        let hub = hub(4);
        assert_eq!(hub.target_bitrate(), 4_000_000, "no viewer: the maximum");
        let a = hub.register();
        let b = hub.register();
        a.info().set_target_bitrate(3_000_000);
        b.info().set_target_bitrate(2_000_000);
        assert_eq!(hub.target_bitrate(), 2_000_000);
        a.info().set_target_bitrate(9_000_000);
        b.info().set_target_bitrate(8_000_000);
        assert_eq!(hub.target_bitrate(), 4_000_000, "never above the maximum");
        b.info().set_target_bitrate(100_000);
        assert_eq!(hub.target_bitrate(), 300_000, "never below the floor");
        hub.remove(b.info().id());
        assert_eq!(
            hub.target_bitrate(),
            4_000_000,
            "a removed viewer no longer counts"
        );
    }

    /// A viewer served over an in-memory link gets every frame in its
    /// envelope with `sent_us` set, and its session's end is reported.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serve_runs_a_session_and_delivers_enveloped_frames() {
        use link_session::{Client, ClientConfig, ClientEvent};
        let hub = Arc::new(hub(8));
        let (a, b) = link_types::memory_pair(Default::default());
        let server = {
            let hub = hub.clone();
            tokio::spawn(async move {
                let mut joined = None;
                let r = hub
                    .serve(a, HostConfig::default(), |e| {
                        if let ViewerEvent::Joined(id) = e {
                            joined = Some(id);
                        }
                    })
                    .await;
                (r, joined)
            })
        };
        let (mut client, _input) = Client::connect(b, ClientConfig::default()).await.unwrap();
        // Wait until the hub registered the viewer, then publish.
        while hub.stats().viewers == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(hub.take_keyframe(Instant::now()));
        for i in 0..5 {
            hub.publish(frame(i, i == 0));
        }
        let mut got = Vec::new();
        while got.len() < 5 {
            match client.next_frame().await.unwrap() {
                Some(ClientEvent::Frame(f)) => {
                    let (h, au) = VideoHeader::parse(f.data()).unwrap();
                    assert!(h.sent_us > 0, "sent_us set per viewer");
                    assert_eq!(au, &[h.capture_index as u8; 10]);
                    got.push(h.capture_index);
                }
                Some(_) => {}
                None => panic!("session ended early"),
            }
        }
        assert_eq!(got, [0, 1, 2, 3, 4]);
        hub.stop();
        // The client sees the Bye and ends.
        while let Ok(Some(_)) = client.next_frame().await {}
        let (r, joined) = server.await.unwrap();
        let s = r.unwrap();
        assert_eq!(joined, Some(s.id));
        assert_eq!(s.session.frames_sent, 5);
        assert_eq!(s.counters.frames_queued, 5);
        assert_eq!(hub.stats().viewers_joined, 1);
    }

    // r[verify video.hub.budget]
    #[test]
    fn the_budget_gate_skips_late_frames_to_the_next_keyframe() {
        let mut g = BudgetGate::new(Duration::from_millis(150));
        assert_eq!(
            g.check(false, 150_000, false),
            Verdict::Send,
            "at the budget"
        );
        assert_eq!(
            g.check(false, 150_001, false),
            Verdict::Skip { starts: true },
            "over it: a skip starts"
        );
        assert_eq!(
            g.check(false, 0, false),
            Verdict::Skip { starts: false },
            "in time but waiting for a keyframe"
        );
        assert_eq!(
            g.check(true, 900_000, false),
            Verdict::Send,
            "a keyframe is never dropped for age alone"
        );
        assert_eq!(
            g.check(false, 10_000, false),
            Verdict::Send,
            "the skip ended"
        );
        assert_eq!(
            g.check(true, 900_000, true),
            Verdict::Skip { starts: false },
            "a late keyframe with a newer one queued gives way to it"
        );
        assert_eq!(g.check(false, 0, true), Verdict::Skip { starts: false });
        assert_eq!(g.check(true, 0, false), Verdict::Send);
        let mut off = BudgetGate::new(Duration::MAX);
        assert_eq!(off.check(false, u64::MAX, false), Verdict::Send);
    }

    /// What a client received: (capture index, keyframe, sent_us -
    /// encoded_us) per frame.
    async fn receive_all<L: Link>(link: L) -> Vec<(u64, bool, u64)> {
        use link_session::{Client, ClientConfig, ClientEvent};
        let (mut client, _input) = Client::connect(link, ClientConfig::default())
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Ok(Some(ev)) = client.next_frame().await {
            if let ClientEvent::Frame(f) = ev {
                let (h, au) = VideoHeader::parse(f.data()).unwrap();
                assert!(au.iter().all(|&b| b == h.capture_index as u8));
                got.push((
                    h.capture_index,
                    h.keyframe,
                    h.sent_us.saturating_sub(h.encoded_us),
                ));
            }
        }
        got
    }

    // r[verify video.hub.budget]
    /// Two viewers on one hub: one behind a narrow bottleneck (its session
    /// paces at what the bottleneck carries, slower than the encoder), one
    /// on a plain in-memory link. The narrow one gets no P-frame that spent
    /// longer than the budget in the host's queues, every frame it did not
    /// get is counted, its keyframe grants stay at one a second; the other
    /// gets every frame.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_viewer_behind_a_narrow_path_skips_late_frames_and_the_fast_one_gets_all() {
        use link_session::{BweConfig, PacingConfig};
        use link_types::{Bottleneck, FaultSpec, fault_pair, memory_pair};
        const BUDGET: Duration = Duration::from_millis(400);
        const FRAMES: u64 = 90;
        let hub = Arc::new(Hub::new(HubConfig {
            latency_budget: BUDGET,
            ..HubConfig::new(4_000_000)
        }));
        // The narrow viewer: 600 kbit/s with 300 ms of queue and 20 ms of
        // delay; its session sends at 400 kbit/s (the estimate pinned to
        // what the bottleneck carries with the FEC parity), while the
        // encoder makes about 2 Mbit/s.
        let (a, b) = memory_pair(Default::default());
        let narrow = FaultSpec {
            bottleneck: Some(Bottleneck::new(
                600_000,
                Duration::from_millis(300),
                Duration::from_millis(20),
            )),
            ..FaultSpec::none()
        };
        let (slow_host, slow_client) = fault_pair(a, b, narrow, FaultSpec::none(), 7).unwrap();
        let slow_cfg = HostConfig {
            bwe: BweConfig {
                start_bps: 400_000,
                min_bps: 400_000,
                max_bps: 400_000,
                pacing_gain: 1.0,
                probing: false,
            },
            pacing: PacingConfig {
                latency_budget: Duration::from_secs(10),
                ..PacingConfig::default()
            },
            ..HostConfig::default()
        };
        let (fast_host, fast_client) = memory_pair(Default::default());
        let serve = |link, cfg| {
            let hub = hub.clone();
            async move { hub.serve(link, cfg, |_| {}).await.unwrap() }
        };
        let slow_served = tokio::spawn(serve(slow_host, slow_cfg));
        let slow_got = tokio::spawn(receive_all(slow_client));
        while hub.stats().viewers < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let fast_served = tokio::spawn({
            let hub = hub.clone();
            async move {
                hub.serve(fast_host, HostConfig::default(), |_| {})
                    .await
                    .unwrap()
            }
        });
        let fast_got = tokio::spawn(receive_all(fast_client));
        while hub.stats().viewers < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // 30 frames a second: P-frames of 8 kB, keyframes of 10 kB.
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        let mut keyframes = 0;
        for i in 0..FRAMES {
            tick.tick().await;
            let key = hub.take_keyframe(Instant::now());
            keyframes += key as u64;
            let len = if key { 10_000 } else { 8_000 };
            let mut f = frame(i, key);
            let f_mut = Arc::make_mut(&mut f);
            f_mut.access_unit = vec![i as u8; len];
            f_mut.header.encoded_us = now_us();
            hub.publish(f);
        }
        // Let both queues run dry (each frame sent or skipped).
        for _ in 0..2000 {
            let dry = hub.viewers().iter().all(|v| {
                let c = v.counters();
                c.frames_sent + c.frames_skipped_budget == c.frames_queued
            });
            if dry {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        hub.stop();
        let slow = slow_served.await.unwrap();
        let fast = fast_served.await.unwrap();
        let slow_got = slow_got.await.unwrap();
        let fast_got = fast_got.await.unwrap();

        // The fast viewer: every frame, none skipped.
        assert_eq!(
            fast_got.iter().map(|f| f.0).collect::<Vec<_>>(),
            (0..FRAMES).collect::<Vec<_>>(),
            "{:?}",
            fast.counters
        );
        assert_eq!(fast.counters.frames_skipped_budget, 0);
        assert_eq!(fast.counters.frames_sent, FRAMES);

        // The narrow viewer: no P-frame sent later than the budget (with
        // a margin for the time between the check and the send).
        let c = slow.counters;
        let margin = 200_000;
        let late: Vec<_> = slow_got
            .iter()
            .filter(|f| !f.1 && f.2 > BUDGET.as_micros() as u64 + margin)
            .collect();
        assert!(late.is_empty(), "late P-frames sent: {late:?} ({c:?})");
        assert!(c.budget_skip_events >= 1, "{c:?}");
        assert!(c.frames_skipped_budget >= c.budget_skip_events, "{c:?}");
        // Every frame is accounted for: skipped at publish (before its
        // keyframe, or its queue full), or queued; and every queued one
        // sent or skipped for the budget.
        assert_eq!(c.frames_skipped + c.frames_queued, FRAMES, "{c:?}");
        assert_eq!(
            c.frames_queued,
            c.frames_sent + c.frames_skipped_budget,
            "{c:?}"
        );
        assert_eq!(c.frames_sent, slow.session.frames_sent, "{c:?}");
        assert!(!slow_got.is_empty());
        // Its keyframes (the first, at join, and one a second at most
        // after it, over the frames' own span) do not spiral.
        let span_s = (FRAMES * 33) as f64 / 1000.0;
        assert!(
            (c.keyframes_granted as f64) <= 1.0 + span_s.ceil() + 1.0,
            "{c:?}"
        );
        assert!(keyframes <= 1 + c.keyframes_granted + fast.counters.keyframes_granted);
    }
}
