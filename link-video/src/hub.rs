//! The fan-out hub: one encoder, many viewers (rules `video.hub.fanout`,
//! `video.hub.layers`, `video.hub.budget`, `video.hub.recovery`,
//! `video.hub.ltr-confirm`, `video.hub.keyframes`, `video.hub.bitrate`).
//!
//! A host application owns the encoder and gives each encoded frame to
//! [`Hub::publish`]; the hub queues it to every viewer. Each viewer is one
//! link-session [`Host`] that [`Hub::serve`] runs (handshake, frames out,
//! events in) on whatever link the application accepted. Out of the hub
//! come:
//! - per viewer, the temporal layers its own target carries
//!   ([`ViewerCounters::layer`]): frames of a higher layer are not queued
//!   to it (counted in [`ViewerCounters::frames_filtered`], not a skip);
//!   the layer changes only at a TL0 frame;
//! - per viewer, a bounded queue of frames ([`ViewerQueue`]); a viewer
//!   whose queue is full skips frames until the next recovery point
//!   (counted, and a recovery is requested for it), so the others are
//!   never held back;
//! - per viewer served by [`Hub::serve`], a latency budget
//!   ([`HubConfig::latency_budget`]): a frame whose age plus the session's
//!   reported path queue delay is over it is not sent, and the viewer
//!   skips to the next TL0 frame (a higher-layer frame) or recovery point
//!   (a TL0 frame), counted in [`ViewerCounters::frames_skipped_budget`];
//! - [`Hub::take_keyframe`]: whether the next frame must be a keyframe (a
//!   new viewer; or, without [`HubConfig::recovery`], a viewer's request,
//!   granted at most once per [`HubConfig::keyframe_interval`] per viewer);
//! - [`Hub::take_recovery`]: whether the next TL0 frame must be a recovery
//!   frame (some viewer lost or skipped a frame; coalesced across viewers);
//! - [`Hub::take_mark_outcomes`]: the long-term-reference marks every
//!   viewer got (confirm them) or some viewer did not (reject them);
//! - [`Hub::target_bitrate`]: the encoder's bitrate, the highest target
//!   among the viewers' sessions (each estimates its own path), clamped
//!   between [`HubConfig::min_bitrate_bps`] and
//!   [`HubConfig::max_bitrate_bps`]: a slow viewer takes fewer layers, it
//!   never lowers the others' bitrate.
//!
//! The application's loop is: take a picture, `take_keyframe` (force one if
//! so), `take_recovery` (request one if so), `take_mark_outcomes` (confirm
//! or reject each), `target_bitrate` (set it if changed), encode,
//! `publish`. See `examples/minimal_host.rs`.

use std::collections::VecDeque;
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

/// The span of published frames over which the hub measures each temporal
/// layer's share of the bytes.
const LAYER_WINDOW_US: u64 = 1_000_000;

/// A viewer takes layers `0..=k` when their rate is at most its target
/// divided by this (a margin for the encoder's rate control and for a
/// target that moved since the frame was encoded).
const LAYER_MARGIN: f64 = 1.1;

/// Sent frames a viewer's send loop remembers until the viewer's loss
/// reports cover them (older ones count as not received).
const SENT_MEMORY: usize = 512;

/// The layer of a viewer before the hub measured any: every layer.
const ALL_LAYERS: u8 = 3;

/// LTR marks awaiting the viewers' verdicts; older ones are rejected.
const MARKS_PENDING: usize = 16;

/// The most renditions a hub serves (the envelope has two bits for it).
pub const MAX_RENDITIONS: u8 = 4;

/// A viewer moves to a rendition of higher quality only when that
/// rendition's base layer would take at most its target divided by this
/// (against flapping; staying takes [`LAYER_MARGIN`]).
const RENDITION_UP_MARGIN: f64 = 1.25;

/// A viewer moves up to a rendition of higher quality no sooner than this
/// after its last move (moving down is not delayed).
const RENDITION_UP_DWELL_US: u64 = 2_000_000;

/// A new viewer starts on the smallest rendition (its keyframe is the
/// smallest) and moves up no sooner than this after its first keyframe,
/// once its session has measured its path.
const RENDITION_FIRST_UP_US: u64 = 1_000_000;

/// How the hub is set up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HubConfig {
    /// Frames queued per viewer before that viewer skips to the next
    /// recovery point (at least 1): a memory cap; the latency budget bounds
    /// the time a frame waits.
    pub queue: usize,
    /// The most a frame may have spent since its capture, plus the
    /// session's reported path queue delay, when it is about to be sent to
    /// a viewer; past it the viewer skips (rule `video.hub.budget`).
    /// [`Duration::MAX`] turns it off.
    pub latency_budget: Duration,
    /// The encoder's bitrate before any viewer reports a target, and the
    /// most it uses whatever the targets, bits per second.
    pub max_bitrate_bps: u64,
    /// The encoder's bitrate never goes below this, bits per second.
    pub min_bitrate_bps: u64,
    /// Smallest interval between two keyframes granted to one viewer.
    pub keyframe_interval: Duration,
    /// The encoder answers [`Hub::take_recovery`] with recovery frames
    /// (LTR recovery, [`VideoHeader::recovery`]): a viewer's losses and
    /// skips ask for a recovery, not a keyframe, and a viewer resumes at a
    /// recovery frame. Off: they ask for keyframes (one a second at most).
    pub recovery: bool,
    /// Renditions (simulcast, 1 to [`MAX_RENDITIONS`]): rendition `r` is
    /// the capture halved `r` times ([`crate::scale`]), encoded by its own
    /// encoder at most at `max_bitrate_bps / 4^r`; each viewer receives
    /// the best rendition whose base layer its own target carries (rule
    /// `video.hub.renditions`). 1: one encoding for everyone.
    pub renditions: u8,
}

impl HubConfig {
    /// The defaults for an encoder of at most `max_bitrate_bps`: 8 frames
    /// per viewer, a latency budget of [`LATENCY_BUDGET`] (150 ms), a floor
    /// of 300 kbit/s (or the maximum if lower), one keyframe a second per
    /// viewer, recovery frames off, one rendition.
    pub fn new(max_bitrate_bps: u64) -> HubConfig {
        HubConfig {
            queue: 8,
            latency_budget: LATENCY_BUDGET,
            max_bitrate_bps,
            min_bitrate_bps: 300_000.min(max_bitrate_bps),
            keyframe_interval: KEYFRAME_INTERVAL,
            recovery: false,
            renditions: 1,
        }
    }
}

/// One encoded frame: its envelope header (the hub sets `sent_us` per
/// viewer) and its access unit. Shared by every viewer's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The envelope header (with the temporal id and the recovery flag).
    pub header: VideoHeader,
    /// The access unit (Annex B).
    pub access_unit: Vec<u8>,
    /// The access unit marks a long-term reference that the encoder waits
    /// to have confirmed or rejected; the hub reports the viewers' verdict
    /// by its capture index in [`Hub::take_mark_outcomes`].
    pub ltr_mark: bool,
}

/// What a viewer waits for after it skipped or lost frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wait {
    /// Nothing: it takes the next frame of its layers.
    None,
    /// The next TL0 frame (it missed a higher-layer frame only).
    Tl0,
    /// The next recovery point (a recovery frame or a keyframe).
    Recovery,
    /// The next keyframe (a new viewer).
    Key,
}

impl Wait {
    /// Whether `h` ends the wait.
    fn ends_at(self, h: &VideoHeader, recovery: bool) -> bool {
        match self {
            Wait::None => true,
            Wait::Tl0 => h.temporal_id == 0,
            Wait::Recovery => h.keyframe || (recovery && h.recovery),
            Wait::Key => h.keyframe,
        }
    }

    /// What missing `h` makes a viewer wait for.
    fn after_missing(h: &VideoHeader) -> Wait {
        if h.temporal_id > 0 {
            Wait::Tl0
        } else {
            Wait::Recovery
        }
    }
}

/// What the hub counts for one viewer, live (shared by the hub and the
/// viewer's task).
#[derive(Debug)]
pub struct ViewerInfo {
    id: u64,
    recovery: bool,
    frames_queued: AtomicU64,
    frames_skipped: AtomicU64,
    skip_events: AtomicU64,
    frames_filtered: AtomicU64,
    frames_sent: AtomicU64,
    frames_skipped_budget: AtomicU64,
    budget_skip_events: AtomicU64,
    last_recovery_queued: AtomicU64,
    key_wanted: AtomicBool,
    keyframe_requests: AtomicU64,
    keyframe_requests_coalesced: AtomicU64,
    keyframes_granted: AtomicU64,
    recovery_wanted: AtomicBool,
    recovery_awaited: AtomicBool,
    recovery_requests: AtomicU64,
    recovery_requests_coalesced: AtomicU64,
    recovery_escalations: AtomicU64,
    keyframes_sent: AtomicU64,
    recovery_frames_sent: AtomicU64,
    layer: AtomicU64,
    layer_changes: AtomicU64,
    rendition: AtomicU64,
    rendition_changes: AtomicU64,
    /// It skipped to a recovery point (its queue overflowed, or a TL0
    /// frame went over the latency budget): it moves down a rendition.
    step_down: AtomicBool,
    input_events: AtomicU64,
    target_bps: AtomicU64,
}

/// A snapshot of one viewer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewerCounters {
    /// Frames put in the viewer's queue.
    pub frames_queued: u64,
    /// Frames of its layers not queued: before the viewer's first
    /// keyframe, or skipped while it waits for a recovery point after its
    /// queue overflowed.
    pub frames_skipped: u64,
    /// Times the viewer's queue overflowed (each starts a skip).
    pub skip_events: u64,
    /// Frames of a temporal layer above the viewer's: not for it, not a
    /// skip (rule `video.hub.layers`).
    pub frames_filtered: u64,
    /// Frames [`Hub::serve`] handed to the viewer's session.
    pub frames_sent: u64,
    /// Frames taken from the viewer's queue and not sent because of the
    /// latency budget: over it, or waiting for the frame the skip waits
    /// for (rule `video.hub.budget`).
    pub frames_skipped_budget: u64,
    /// Times a frame over the latency budget started a skip.
    pub budget_skip_events: u64,
    /// Keyframe requests (a new viewer's, and without
    /// [`HubConfig::recovery`] its lost frames and skips).
    pub keyframe_requests: u64,
    /// Keyframe requests that arrived while one was already waiting.
    pub keyframe_requests_coalesced: u64,
    /// Keyframes granted to this viewer (the first, at join, included).
    pub keyframes_granted: u64,
    /// Recovery requests (lost frames, skips) with
    /// [`HubConfig::recovery`].
    pub recovery_requests: u64,
    /// Recovery requests while the viewer already awaited a recovery
    /// point, or covered by one already sent.
    pub recovery_requests_coalesced: u64,
    /// Recovery points the viewer reported unusable, answered with a
    /// keyframe request (`video.hub.recovery-failed`).
    pub recovery_escalations: u64,
    /// Keyframes (IDRs) handed to the viewer's session.
    pub keyframes_sent: u64,
    /// LTR recovery frames (recovery points that are not IDRs) handed to
    /// the viewer's session.
    pub recovery_frames_sent: u64,
    /// The highest temporal layer the viewer receives now (at most the
    /// highest the stream had over the last second).
    pub layer: u64,
    /// Times its layer changed.
    pub layer_changes: u64,
    /// The rendition the viewer receives now (0: the full picture; see
    /// [`HubConfig::renditions`]).
    pub rendition: u64,
    /// Times it moved to another rendition.
    pub rendition_changes: u64,
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
            frames_filtered: self.frames_filtered.load(Relaxed),
            frames_sent: self.frames_sent.load(Relaxed),
            frames_skipped_budget: self.frames_skipped_budget.load(Relaxed),
            budget_skip_events: self.budget_skip_events.load(Relaxed),
            keyframe_requests: self.keyframe_requests.load(Relaxed),
            keyframe_requests_coalesced: self.keyframe_requests_coalesced.load(Relaxed),
            keyframes_granted: self.keyframes_granted.load(Relaxed),
            recovery_requests: self.recovery_requests.load(Relaxed),
            recovery_requests_coalesced: self.recovery_requests_coalesced.load(Relaxed),
            recovery_escalations: self.recovery_escalations.load(Relaxed),
            keyframes_sent: self.keyframes_sent.load(Relaxed),
            recovery_frames_sent: self.recovery_frames_sent.load(Relaxed),
            layer: self.layer.load(Relaxed),
            layer_changes: self.layer_changes.load(Relaxed),
            rendition: self.rendition.load(Relaxed),
            rendition_changes: self.rendition_changes.load(Relaxed),
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

    /// The viewer lost or skipped frames and needs a recovery point: with
    /// [`HubConfig::recovery`] a recovery frame ([`Hub::take_recovery`]),
    /// else a keyframe ([`ViewerInfo::request_keyframe`]). A request while
    /// the viewer awaits a recovery point already is coalesced (counted).
    pub fn request_recovery(&self) {
        if !self.recovery {
            self.request_keyframe();
            return;
        }
        self.recovery_requests.fetch_add(1, Relaxed);
        if self.recovery_awaited.swap(true, Relaxed) {
            self.recovery_requests_coalesced.fetch_add(1, Relaxed);
        } else {
            self.recovery_wanted.store(true, Relaxed);
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

    /// Whether the viewer awaits a recovery point it asked for.
    pub fn recovery_awaited(&self) -> bool {
        self.recovery_awaited.load(Relaxed)
    }

    /// A recovery point was handed to the viewer (or queued, for a viewer
    /// fed directly): it no longer awaits one.
    fn got_recovery_point(&self, h: &VideoHeader) {
        if h.keyframe || (self.recovery && h.recovery) {
            self.recovery_awaited.store(false, Relaxed);
        }
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
    /// Skip it; `starts` when it starts a skip that needs a recovery point
    /// (one is then requested: a keyframe when the frame is of a rendition
    /// the viewer was sent no keyframe of).
    Skip {
        /// This frame was over the budget and starts a skip to a recovery
        /// point.
        starts: bool,
    },
}

/// The latency budget of one viewer's send loop (rule
/// `video.hub.budget`).
#[derive(Debug)]
struct BudgetGate {
    budget_us: u64,
    recovery: bool,
    wait: Wait,
    /// The rendition of the last frame sent (`None` before the first).
    rendition: Option<u8>,
}

impl BudgetGate {
    fn new(budget: Duration, recovery: bool) -> BudgetGate {
        BudgetGate {
            budget_us: u64::try_from(budget.as_micros()).unwrap_or(u64::MAX),
            recovery,
            wait: Wait::None,
            rendition: None,
        }
    }

    /// The verdict on a frame that has waited `late_us` (its time in the
    /// host's queues plus the session's path queue delay); `newer_point`
    /// when a newer recovery point is already queued for the viewer.
    fn check(&mut self, h: &VideoHeader, late_us: u64, newer_point: bool) -> Verdict {
        let verdict = self.judge(h, late_us, newer_point);
        if verdict == Verdict::Send {
            self.rendition = Some(h.rendition);
        }
        verdict
    }

    fn judge(&mut self, h: &VideoHeader, late_us: u64, newer_point: bool) -> Verdict {
        let over = late_us > self.budget_us;
        let point = h.keyframe || (self.recovery && h.recovery);
        // r[impl video.hub.rendition-entry]
        let entry = self.rendition.is_some_and(|r| r != h.rendition);
        if entry && !h.keyframe {
            // A frame of a rendition this viewer has no keyframe of: its
            // decoder has none of its references.
            let starts = self.wait != Wait::Key;
            self.wait = Wait::Key;
            return Verdict::Skip { starts };
        }
        if self.wait == Wait::Key && !h.keyframe {
            return Verdict::Skip { starts: false };
        }
        if point {
            if over && newer_point && !entry {
                // The newer point ends the skip; no request.
                self.wait = self.wait.max(Wait::Recovery);
                Verdict::Skip { starts: false }
            } else {
                // A recovery point is never dropped for age alone.
                self.wait = Wait::None;
                Verdict::Send
            }
        } else if self.wait != Wait::None && !self.wait.ends_at(h, self.recovery) {
            Verdict::Skip { starts: false }
        } else if over {
            let was = self.wait;
            self.wait = Wait::after_missing(h).max(was);
            Verdict::Skip {
                starts: self.wait == Wait::Recovery && was != Wait::Recovery,
            }
        } else {
            self.wait = Wait::None;
            Verdict::Send
        }
    }
}

/// The hub's view of one viewer.
struct Slot {
    info: Arc<ViewerInfo>,
    queue: mpsc::Sender<Arc<EncodedFrame>>,
    wait: Wait,
    /// The highest temporal layer queued to the viewer ([`ALL_LAYERS`]:
    /// every one); `None` before the first TL0 frame decided it.
    layer: Option<u8>,
    /// Served by [`Hub::serve`]: its LTR verdicts come from the session.
    served: bool,
    last_grant: Option<Instant>,
    /// The rendition whose frames are queued to it.
    rendition: u8,
    /// The rendition it moves to at that rendition's next keyframe.
    switch_to: Option<u8>,
    /// Capture time from which it may move up, µs (`None` before its
    /// first keyframe).
    up_after_us: Option<u64>,
    /// A keyframe of its rendition was queued to it since it joined or
    /// last moved: only then can a recovery frame of that rendition serve
    /// it (`video.hub.rendition-entry`).
    keyed: bool,
}

/// The bytes of each temporal layer over the last [`LAYER_WINDOW_US`] of
/// published frames.
#[derive(Debug, Default)]
struct LayerWindow {
    frames: VecDeque<(u64, u8, usize)>,
    bytes: [u64; 4],
}

impl LayerWindow {
    fn push(&mut self, at_us: u64, tid: u8, len: usize) {
        let tid = tid.min(3);
        self.frames.push_back((at_us, tid, len));
        self.bytes[usize::from(tid)] += len as u64;
        while let Some(&(t, k, l)) = self.frames.front() {
            if at_us.saturating_sub(t) <= LAYER_WINDOW_US && self.frames.len() <= 1024 {
                break;
            }
            self.bytes[usize::from(k)] -= l as u64;
            self.frames.pop_front();
        }
    }

    /// The base layer's share of the bytes in the window; `None` when the
    /// window is empty.
    fn base_share(&self) -> Option<f64> {
        let total: u64 = self.bytes.iter().sum();
        (total > 0).then(|| self.bytes[0] as f64 / total as f64)
    }

    /// The highest layer seen in the window.
    fn top(&self) -> u8 {
        self.frames.iter().map(|f| f.1).max().unwrap_or(0)
    }

    /// The highest layer whose rate (with every layer below it), as a
    /// share of `encoder_bps`, fits `target_bps` (with [`LAYER_MARGIN`]);
    /// 0 when none does, [`ALL_LAYERS`] when the whole stream fits.
    // r[impl video.hub.layers]
    fn layer_for(&self, target_bps: u64, encoder_bps: u64) -> u8 {
        let total: u64 = self.bytes.iter().sum();
        let top = self.top();
        let fits = |bytes: u64| {
            total == 0
                || encoder_bps as f64 * bytes as f64 / total as f64
                    <= target_bps as f64 * LAYER_MARGIN
        };
        if fits(total) {
            return ALL_LAYERS;
        }
        let mut below = 0u64;
        let mut best = 0u8;
        for k in 0..top {
            below += self.bytes[usize::from(k)];
            if fits(below) {
                best = k;
            }
        }
        best
    }
}

/// An LTR mark waiting for the viewers' verdicts.
#[derive(Debug)]
struct Mark {
    rendition: u8,
    capture_index: u64,
    waiting: Vec<u64>,
}

/// LTR marks and their verdicts.
#[derive(Debug, Default)]
struct Marks {
    pending: VecDeque<Mark>,
    /// Decided marks: rendition, capture index, confirmed.
    outcomes: Vec<(u8, u64, bool)>,
}

impl Marks {
    /// Viewer `id`'s verdict on the mark at `capture_index` of
    /// `rendition`.
    fn verdict(&mut self, rendition: u8, capture_index: u64, id: u64, ok: bool) {
        let Some(pos) = self
            .pending
            .iter()
            .position(|m| m.rendition == rendition && m.capture_index == capture_index)
        else {
            return;
        };
        let m = &mut self.pending[pos];
        m.waiting.retain(|&v| v != id);
        if !ok || m.waiting.is_empty() {
            self.outcomes.push((rendition, capture_index, ok));
            self.pending.remove(pos);
        }
    }

    /// A viewer left `rendition` (every rendition: `None`): it no longer
    /// needs its marks there.
    fn forget(&mut self, id: u64, rendition: Option<u8>) {
        let marks: Vec<(u8, u64)> = self
            .pending
            .iter()
            .filter(|m| rendition.is_none_or(|r| r == m.rendition))
            .map(|m| (m.rendition, m.capture_index))
            .collect();
        for (r, c) in marks {
            self.verdict(r, c, id, true);
        }
    }

    /// Takes the decided marks of `rendition`.
    fn take(&mut self, rendition: u8) -> Vec<(u64, bool)> {
        let mut out = Vec::new();
        self.outcomes.retain(|&(r, c, ok)| {
            if r == rendition {
                out.push((c, ok));
                false
            } else {
                true
            }
        });
        out
    }
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
    /// Recoveries [`Hub::take_recovery`] asked the encoder for.
    pub recoveries_granted: u64,
    /// LTR marks every viewer got.
    pub marks_confirmed: u64,
    /// LTR marks some viewer did not get (or that waited too long).
    pub marks_rejected: u64,
    /// Frames published with a rendition the hub does not have
    /// ([`HubConfig::renditions`]): queued to no one.
    pub frames_bad_rendition: u64,
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
    layers: Mutex<Vec<LayerWindow>>,
    marks: Mutex<Marks>,
    force_idr: [AtomicBool; MAX_RENDITIONS as usize],
    frames_bad_rendition: AtomicU64,
    next_id: AtomicU64,
    handshake_failures: AtomicU64,
    viewers_joined: AtomicU64,
    viewers_timed_out: AtomicU64,
    recoveries_granted: AtomicU64,
    marks_confirmed: AtomicU64,
    marks_rejected: AtomicU64,
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

/// A frame handed to a viewer's session, remembered until the viewer's
/// loss reports cover it.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// Its session frame index.
    index: u32,
    /// Its capture index.
    capture_index: u64,
    /// It marks an LTR.
    mark: bool,
    /// Session index of the last recovery point sent at or before it.
    since: u32,
    /// Its rendition.
    rendition: u8,
}

/// What one viewer's session has told the hub about delivery (rule
/// `video.hub.ltr-confirm`).
#[derive(Debug, Default)]
struct Delivery {
    sent: VecDeque<Sent>,
    /// Session index of the last recovery point sent.
    last_point: Option<u32>,
    /// The newest session frame index the viewer reported lost (or could
    /// not decode).
    last_lost: Option<u32>,
}

impl Delivery {
    /// Whether a frame with recovery point `since` is whole at the viewer
    /// as far as the reported losses tell: no loss at or after `since`.
    fn whole(&self, since: u32) -> bool {
        self.last_lost.is_none_or(|l| l < since)
    }
}

impl Hub {
    /// A hub without viewers.
    pub fn new(config: HubConfig) -> Hub {
        let renditions = config.renditions.clamp(1, MAX_RENDITIONS);
        Hub {
            config: HubConfig {
                queue: config.queue.max(1),
                renditions,
                ..config
            },
            viewers: Mutex::new(Vec::new()),
            layers: Mutex::new((0..renditions).map(|_| LayerWindow::default()).collect()),
            marks: Mutex::new(Marks::default()),
            force_idr: Default::default(),
            frames_bad_rendition: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            handshake_failures: AtomicU64::new(0),
            viewers_joined: AtomicU64::new(0),
            viewers_timed_out: AtomicU64::new(0),
            recoveries_granted: AtomicU64::new(0),
            marks_confirmed: AtomicU64::new(0),
            marks_rejected: AtomicU64::new(0),
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
    /// to feed a viewer that is not a link-session `Host` (its LTR verdict
    /// is then given when a mark is queued to it).
    pub fn register(&self) -> ViewerQueue {
        self.register_viewer(false)
    }

    fn register_viewer(&self, served: bool) -> ViewerQueue {
        let (tx, rx) = mpsc::channel(self.config.queue);
        let start = self.config.renditions - 1;
        let info = Arc::new(ViewerInfo {
            id: self.next_id.fetch_add(1, Relaxed),
            recovery: self.config.recovery,
            frames_queued: AtomicU64::new(0),
            frames_skipped: AtomicU64::new(0),
            skip_events: AtomicU64::new(0),
            frames_filtered: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            frames_skipped_budget: AtomicU64::new(0),
            budget_skip_events: AtomicU64::new(0),
            last_recovery_queued: AtomicU64::new(0),
            key_wanted: AtomicBool::new(false),
            keyframe_requests: AtomicU64::new(0),
            keyframe_requests_coalesced: AtomicU64::new(0),
            keyframes_granted: AtomicU64::new(1),
            recovery_wanted: AtomicBool::new(false),
            recovery_awaited: AtomicBool::new(false),
            recovery_requests: AtomicU64::new(0),
            recovery_requests_coalesced: AtomicU64::new(0),
            recovery_escalations: AtomicU64::new(0),
            keyframes_sent: AtomicU64::new(0),
            recovery_frames_sent: AtomicU64::new(0),
            layer: AtomicU64::new(0),
            layer_changes: AtomicU64::new(0),
            rendition: AtomicU64::new(u64::from(start)),
            rendition_changes: AtomicU64::new(0),
            step_down: AtomicBool::new(false),
            input_events: AtomicU64::new(0),
            target_bps: AtomicU64::new(self.config.max_bitrate_bps),
        });
        lock(&self.viewers).push(Slot {
            info: info.clone(),
            queue: tx,
            wait: Wait::Key,
            layer: None,
            served,
            last_grant: Some(Instant::now()),
            rendition: start,
            switch_to: None,
            up_after_us: None,
            keyed: false,
        });
        // A new viewer starts with a keyframe of the smallest rendition.
        self.force_idr[usize::from(start)].store(true, Relaxed);
        ViewerQueue { info, rx }
    }

    /// Drops a viewer: its queue closes and it no longer counts for the
    /// bitrate, keyframe and LTR decisions.
    pub fn remove(&self, id: u64) {
        lock(&self.viewers).retain(|v| v.info.id != id);
        self.forget_marks(id);
    }

    fn forget_marks(&self, id: u64) {
        let mut marks = lock(&self.marks);
        marks.forget(id, None);
    }

    /// The most rendition `r`'s encoder uses: `max_bitrate_bps / 4^r`, at
    /// least `min_bitrate_bps`.
    fn rendition_cap(&self, r: u8) -> u64 {
        (self.config.max_bitrate_bps >> (2 * u32::from(r.min(MAX_RENDITIONS))))
            .max(self.config.min_bitrate_bps)
    }

    /// The encoder's bitrate of a one-rendition hub:
    /// [`Hub::target_bitrate_of`] rendition 0.
    pub fn target_bitrate(&self) -> u64 {
        self.target_bitrate_of(0)
    }

    // r[impl video.hub.bitrate]
    /// The bitrate of rendition `r`'s encoder: the highest target among the
    /// viewers that receive it (or move to it), at most `max_bitrate_bps /
    /// 4^r`, at least `min_bitrate_bps` (the most without such viewers). A
    /// slower viewer takes fewer temporal layers or a smaller rendition.
    pub fn target_bitrate_of(&self, r: u8) -> u64 {
        let v = lock(&self.viewers);
        let cap = self.rendition_cap(r);
        v.iter()
            .filter(|v| v.rendition == r || v.switch_to == Some(r))
            .map(|v| v.info.target_bps.load(Relaxed))
            .max()
            .unwrap_or(cap)
            .min(cap)
            .max(self.config.min_bitrate_bps)
    }

    /// Whether rendition `r` must be encoded: a viewer receives it or
    /// moves to it (rendition 0 also while no viewer is there at all). An
    /// application with several renditions encodes only these.
    pub fn rendition_active(&self, r: u8) -> bool {
        if r >= self.config.renditions {
            return false;
        }
        let v = lock(&self.viewers);
        if v.is_empty() {
            return r == 0;
        }
        v.iter().any(|v| v.rendition == r || v.switch_to == Some(r))
    }

    /// [`Hub::take_keyframe_of`] rendition 0 (a one-rendition hub).
    pub fn take_keyframe(&self, now: Instant) -> bool {
        self.take_keyframe_of(0, now)
    }

    /// Whether rendition `r`'s next frame must be a keyframe: a new viewer,
    /// a viewer moving to it, or a request of one of its viewers whose
    /// interval since its last grant has passed (granted here, and
    /// counted).
    pub fn take_keyframe_of(&self, r: u8, now: Instant) -> bool {
        let mut force = self
            .force_idr
            .get(usize::from(r))
            .is_some_and(|f| f.swap(false, Relaxed));
        for v in lock(&self.viewers).iter_mut().filter(|v| v.rendition == r) {
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

    /// [`Hub::take_recovery_of`] rendition 0 (a one-rendition hub).
    pub fn take_recovery(&self) -> bool {
        self.take_recovery_of(0)
    }

    // r[impl video.hub.recovery]
    /// Whether rendition `r`'s encoder must make its next TL0 frame a
    /// recovery frame: one of its viewers asked since the last call (all
    /// such requests coalesce into one; call once per frame).
    pub fn take_recovery_of(&self, r: u8) -> bool {
        let mut any = false;
        for v in lock(&self.viewers).iter().filter(|v| v.rendition == r) {
            any |= v.info.recovery_wanted.swap(false, Relaxed);
        }
        if any {
            self.recoveries_granted.fetch_add(1, Relaxed);
        }
        any
    }

    /// [`Hub::take_mark_outcomes_of`] rendition 0 (a one-rendition hub).
    pub fn take_mark_outcomes(&self) -> Vec<(u64, bool)> {
        self.take_mark_outcomes_of(0)
    }

    // r[impl video.hub.ltr-confirm]
    /// Rendition `r`'s LTR marks decided since the last call, by capture
    /// index: `true` when every viewer of that rendition that was served
    /// when the mark was published got it whole (confirm it), `false` when
    /// one did not (reject it).
    pub fn take_mark_outcomes_of(&self, r: u8) -> Vec<(u64, bool)> {
        let out = lock(&self.marks).take(r);
        for &(_, ok) in &out {
            if ok {
                self.marks_confirmed.fetch_add(1, Relaxed);
            } else {
                self.marks_rejected.fetch_add(1, Relaxed);
            }
        }
        out
    }

    /// The rendition viewer `v` (target `target`) should receive, given
    /// every viewer's `(id, rendition, moving to, target)` and the
    /// renditions' layer windows: the first rendition whose base layer, at
    /// the bitrate it would have with `v` on it, fits `target` (with
    /// [`LAYER_MARGIN`] where `v` is or moves already, with
    /// [`RENDITION_UP_MARGIN`] above that); the last rendition when none
    /// does.
    // r[impl video.hub.renditions]
    fn rendition_for(
        &self,
        v: &Slot,
        target: u64,
        all: &[(u64, u8, Option<u8>, u64)],
        windows: &[LayerWindow],
    ) -> u8 {
        let last = self.config.renditions - 1;
        let now_at = v.switch_to.unwrap_or(v.rendition);
        for r in 0..last {
            let others = all
                .iter()
                .filter(|o| o.0 != v.info.id && (o.1 == r || o.2 == Some(r)))
                .map(|o| o.3)
                .max();
            let Some(others) = others else {
                // Alone there, its own target sets the rate.
                return r;
            };
            let rate = others
                .max(target)
                .min(self.rendition_cap(r))
                .max(self.config.min_bitrate_bps);
            // A rendition not encoded lately: as if its base layer were
            // all of it.
            let share = windows[usize::from(r)].base_share().unwrap_or(1.0);
            let margin = if r < now_at {
                1.0 / RENDITION_UP_MARGIN
            } else {
                LAYER_MARGIN
            };
            if share * rate as f64 <= target as f64 * margin {
                return r;
            }
        }
        last
    }

    // r[impl video.hub.fanout]
    // r[impl video.hub.layers]
    // r[impl video.hub.renditions]
    /// Queues a frame to every viewer of its rendition whose layers include
    /// it. A viewer whose queue is full skips to the next recovery point
    /// (and asks for one); a viewer whose queue is gone is dropped. A
    /// viewer moving to the frame's rendition moves at its keyframe. Never
    /// waits.
    pub fn publish(&self, frame: Arc<EncodedFrame>) {
        let h = frame.header;
        let fr = h.rendition;
        if fr >= self.config.renditions {
            self.frames_bad_rendition.fetch_add(1, Relaxed);
            return;
        }
        let recovery = self.config.recovery;
        let windows = {
            let mut w = lock(&self.layers);
            w[usize::from(fr)].push(h.capture_us, h.temporal_id, frame.access_unit.len());
            w
        };
        let window = &windows[usize::from(fr)];
        let encoder_bps = u64::from(h.target_kbps) * 1000;
        // Held until the mark is registered: a viewer's task that sends
        // the frame at once gives its verdict only after that.
        let mut marks = frame.ltr_mark.then(|| lock(&self.marks));
        let mut viewers = lock(&self.viewers);
        let mut all: Vec<(u64, u8, Option<u8>, u64)> = if self.config.renditions > 1 {
            viewers
                .iter()
                .map(|v| {
                    let t = v.info.target_bps.load(Relaxed);
                    (v.info.id, v.rendition, v.switch_to, t)
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut mark = frame.ltr_mark.then(|| Mark {
            rendition: fr,
            capture_index: h.capture_index,
            waiting: Vec::new(),
        });
        let mut verdicts = Vec::new();
        let mut moved = Vec::new();
        viewers.retain_mut(|v| {
            if h.keyframe && v.switch_to == Some(fr) {
                // Its new rendition starts here; its marks in the old one
                // no longer wait for it.
                moved.push((v.info.id, v.rendition));
                v.rendition = fr;
                v.switch_to = None;
                v.layer = None;
                // r[impl video.hub.rendition-entry]
                // Its decoder has nothing of this rendition: only this
                // keyframe (or a later one) starts it.
                v.wait = Wait::Key;
                v.keyed = false;
                v.up_after_us = Some(h.capture_us.saturating_add(RENDITION_UP_DWELL_US));
                v.info.rendition.store(u64::from(fr), Relaxed);
                v.info.rendition_changes.fetch_add(1, Relaxed);
            }
            if v.rendition != fr {
                // Another rendition's stream: not for it.
                return true;
            }
            if h.keyframe && v.up_after_us.is_none() {
                v.up_after_us = Some(h.capture_us.saturating_add(RENDITION_FIRST_UP_US));
            }
            if h.temporal_id == 0 {
                // Layers change only at a TL0 frame: every frame after it
                // then has its references.
                let target = v.info.target_bps.load(Relaxed);
                let layer = window.layer_for(target, encoder_bps);
                if v.layer.is_some_and(|l| l != layer) {
                    v.info.layer_changes.fetch_add(1, Relaxed);
                }
                v.layer = Some(layer);
                v.info
                    .layer
                    .store(u64::from(layer.min(window.top())), Relaxed);
                if self.config.renditions > 1 {
                    let mut want = self.rendition_for(v, target, &all, &windows);
                    if v.info.step_down.swap(false, Relaxed) {
                        // Its path did not carry this rendition just now,
                        // whatever its (lagging) target says.
                        want = want.max((v.rendition + 1).min(self.config.renditions - 1));
                    }
                    let settled = v.up_after_us.is_some_and(|t| h.capture_us >= t);
                    if want == v.rendition {
                        v.switch_to = None;
                    } else if v.switch_to != Some(want) && (want > v.rendition || settled) {
                        // It moves at that rendition's next keyframe,
                        // forced now.
                        v.switch_to = Some(want);
                        self.force_idr[usize::from(want)].store(true, Relaxed);
                        // The viewers decided after it in this pass see it
                        // there.
                        if let Some(me) = all.iter_mut().find(|o| o.0 == v.info.id) {
                            me.2 = Some(want);
                        }
                    }
                }
            }
            if h.temporal_id > v.layer.unwrap_or(ALL_LAYERS) {
                v.info.frames_filtered.fetch_add(1, Relaxed);
                return true;
            }
            if v.wait != Wait::None {
                if v.wait.ends_at(&h, recovery) {
                    v.wait = Wait::None;
                } else {
                    v.info.frames_skipped.fetch_add(1, Relaxed);
                    if mark.is_some() {
                        verdicts.push((v.info.id, false));
                    }
                    return true;
                }
            }
            match v.queue.try_send(frame.clone()) {
                Ok(()) => {
                    v.keyed |= h.keyframe;
                    if h.keyframe || (recovery && h.recovery) {
                        v.info
                            .last_recovery_queued
                            .fetch_max(h.capture_index, Relaxed);
                        if !v.served {
                            v.info.got_recovery_point(&h);
                        }
                    }
                    v.info.frames_queued.fetch_add(1, Relaxed);
                    if let Some(m) = &mut mark {
                        if v.served {
                            m.waiting.push(v.info.id);
                        } else {
                            verdicts.push((v.info.id, true));
                        }
                    }
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    v.info.step_down.store(true, Relaxed);
                    v.info.frames_skipped.fetch_add(1, Relaxed);
                    v.info.skip_events.fetch_add(1, Relaxed);
                    if v.keyed {
                        v.wait = Wait::Recovery;
                        v.info.request_recovery();
                    } else {
                        // r[impl video.hub.rendition-entry]
                        // No keyframe of this rendition reached its queue:
                        // a recovery frame would predict from references
                        // it never had.
                        v.wait = Wait::Key;
                        v.info.request_keyframe();
                    }
                    if mark.is_some() {
                        verdicts.push((v.info.id, false));
                    }
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        drop(windows);
        drop(viewers);
        let mut marks = match marks.take() {
            Some(m) => m,
            None if moved.is_empty() => return,
            None => lock(&self.marks),
        };
        for (id, old) in moved {
            marks.forget(id, Some(old));
        }
        if let Some(mut m) = mark {
            let rejected = verdicts.iter().any(|v| !v.1);
            if rejected {
                marks.outcomes.push((fr, m.capture_index, false));
            } else if m.waiting.is_empty() {
                marks.outcomes.push((fr, m.capture_index, true));
            } else {
                m.waiting.sort_unstable();
                marks.pending.push_back(m);
                while marks.pending.len() > MARKS_PENDING {
                    if let Some(old) = marks.pending.pop_front() {
                        marks
                            .outcomes
                            .push((old.rendition, old.capture_index, false));
                    }
                }
            }
        }
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
            recoveries_granted: self.recoveries_granted.load(Relaxed),
            marks_confirmed: self.marks_confirmed.load(Relaxed),
            marks_rejected: self.marks_rejected.load(Relaxed),
            frames_bad_rendition: self.frames_bad_rendition.load(Relaxed),
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
    /// events in (loss reports, target bitrates; input goes to
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
        // On a stream link every frame handed to the session arrives, in
        // order (or the session ends): no delivery report is needed.
        let stream = host.params().stream;
        self.viewers_joined.fetch_add(1, Relaxed);
        let mut queue = self.register_viewer(true);
        let info = queue.info.clone();
        info.set_target_bitrate(host.target_bitrate());
        on_event(ViewerEvent::Joined(info.id));
        let delivery = Mutex::new(Delivery::default());
        let stopped = Notify::new();
        let send = async {
            let mut end = String::from("host stopped");
            let mut gate = BudgetGate::new(self.config.latency_budget, self.config.recovery);
            while let Some(f) = queue.next().await {
                if self.is_stopping() {
                    // Stopping: the frames still queued are not sent; the
                    // Bye goes out at once.
                    break;
                }
                let h = f.header;
                // r[impl video.hub.budget]
                // The frame's time in the host's queues (since it left the
                // encoder) plus what the session reports waiting ahead of
                // it on the path (stream links; on datagram links the
                // pacer's wait shows in the frame's own age, as the send
                // of the frame before returns once it is paced out).
                let waited = now_us().saturating_sub(h.encoded_us);
                let late = waited.saturating_add(host.stats().path_queue_delay_us);
                let newer_point = info.last_recovery_queued.load(Relaxed) > h.capture_index;
                if let Verdict::Skip { starts } = gate.check(&h, late, newer_point) {
                    info.frames_skipped_budget.fetch_add(1, Relaxed);
                    if starts && gate.wait == Wait::Key {
                        // r[impl video.hub.rendition-entry]
                        info.request_keyframe();
                    } else if starts {
                        info.budget_skip_events.fetch_add(1, Relaxed);
                        info.step_down.store(true, Relaxed);
                        info.request_recovery();
                    }
                    if f.ltr_mark {
                        lock(&self.marks).verdict(h.rendition, h.capture_index, info.id, false);
                    }
                    continue;
                }
                let flags = if h.keyframe {
                    FrameFlags::KEYFRAME
                } else {
                    FrameFlags::NONE
                };
                let index = host.next_index();
                let len = HEADER_LEN + f.access_unit.len();
                let r = host
                    .send_frame_with(len, h.capture_us, flags, |b| {
                        let mut h = h;
                        h.sent_us = now_us();
                        h.viewer_target_10kbps = (info.target_bps.load(Relaxed) / 10_000)
                            .min(u64::from(u16::MAX))
                            as u16;
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
                let point = h.keyframe || (self.config.recovery && h.recovery);
                if h.keyframe {
                    info.keyframes_sent.fetch_add(1, Relaxed);
                } else if point {
                    info.recovery_frames_sent.fetch_add(1, Relaxed);
                }
                let mut d = lock(&delivery);
                if point {
                    d.last_point = Some(index);
                    info.got_recovery_point(&h);
                }
                let since = d.last_point.unwrap_or(0);
                if stream {
                    if f.ltr_mark {
                        let ok = d.whole(since);
                        lock(&self.marks).verdict(h.rendition, h.capture_index, info.id, ok);
                    }
                } else {
                    if d.sent.len() >= SENT_MEMORY
                        && let Some(old) = d.sent.pop_front()
                        && old.mark
                    {
                        lock(&self.marks).verdict(old.rendition, old.capture_index, info.id, false);
                    }
                    d.sent.push_back(Sent {
                        index,
                        capture_index: h.capture_index,
                        mark: f.ltr_mark,
                        since,
                        rendition: h.rendition,
                    });
                }
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
                    // r[impl video.hub.recovery]
                    Ok(Some(HostEvent::KeyframeRequest { lost_frame })) => {
                        let (covered, point_failed) = {
                            let mut d = lock(&delivery);
                            d.last_lost =
                                Some(d.last_lost.map_or(lost_frame, |l| l.max(lost_frame)));
                            (
                                d.last_point.is_some_and(|p| p > lost_frame),
                                d.last_point == Some(lost_frame),
                            )
                        };
                        if point_failed && self.config.recovery {
                            // r[impl video.hub.recovery-failed]
                            // The recovery point itself is unusable there
                            // (lost, or its reference never reached that
                            // decoder): another one from the same reference
                            // could fail the same way; an IDR cannot.
                            info.recovery_escalations.fetch_add(1, Relaxed);
                            info.request_keyframe();
                        } else if covered && self.config.recovery {
                            // A recovery point went out after the lost
                            // frame: the viewer is whole again there.
                            info.recovery_requests.fetch_add(1, Relaxed);
                            info.recovery_requests_coalesced.fetch_add(1, Relaxed);
                        } else {
                            info.request_recovery();
                        }
                    }
                    // r[impl video.hub.ltr-confirm]
                    Ok(Some(HostEvent::LossReport(r))) => {
                        // Frames are delivered or declared lost in index
                        // order: the first `resolved` are settled.
                        let resolved = r.frames_delivered.saturating_add(r.frames_lost);
                        let mut d = lock(&delivery);
                        while let Some(s) = d.sent.front().copied() {
                            if u64::from(s.index) >= resolved {
                                break;
                            }
                            d.sent.pop_front();
                            if s.mark {
                                let ok = d.whole(s.since);
                                lock(&self.marks).verdict(
                                    s.rendition,
                                    s.capture_index,
                                    info.id,
                                    ok,
                                );
                            }
                        }
                    }
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
        layered(index, keyframe, 0, false, false)
    }

    /// A frame with a temporal id, a recovery flag and an LTR mark.
    fn layered(
        index: u64,
        keyframe: bool,
        temporal_id: u8,
        recovery: bool,
        ltr_mark: bool,
    ) -> Arc<EncodedFrame> {
        Arc::new(EncodedFrame {
            header: VideoHeader {
                live: false,
                codec: Codec::H264AnnexB,
                keyframe,
                temporal_id,
                recovery: recovery || keyframe,
                rendition: 0,
                viewer_target_10kbps: 0,
                width: 640,
                height: 360,
                target_kbps: 4000,
                capture_index: index,
                capture_us: now_us(),
                encoded_us: now_us(),
                sent_us: 0,
            },
            access_unit: vec![index as u8; 10],
            ltr_mark,
        })
    }

    fn drain(q: &mut ViewerQueue) -> Vec<u64> {
        let mut got = Vec::new();
        while let Some(f) = q.try_next() {
            got.push(f.header.capture_index);
        }
        got
    }

    fn recovering_hub(queue: usize) -> Hub {
        Hub::new(HubConfig {
            queue,
            recovery: true,
            ..HubConfig::new(4_000_000)
        })
    }

    fn hub(queue: usize) -> Hub {
        Hub::new(HubConfig {
            queue,
            ..HubConfig::new(4_000_000)
        })
    }

    /// A frame of rendition `r` captured at `t_ms`, TL0 600 bytes and TL1
    /// 400 (the base layer 60% of the bytes), at `kbps`.
    fn of_rendition(index: u64, r: u8, keyframe: bool, kbps: u32, t_ms: u64) -> Arc<EncodedFrame> {
        let tid = (index % 2) as u8 * u8::from(!keyframe);
        Arc::new(EncodedFrame {
            header: VideoHeader {
                live: false,
                codec: Codec::H264AnnexB,
                keyframe,
                temporal_id: tid,
                recovery: keyframe,
                rendition: r,
                viewer_target_10kbps: 0,
                width: 1280 >> r,
                height: 720 >> r,
                target_kbps: kbps,
                capture_index: index,
                capture_us: 1_000_000_000 + t_ms * 1000,
                encoded_us: now_us(),
                sent_us: 0,
            },
            access_unit: vec![r; if tid == 0 { 600 } else { 400 }],
            ltr_mark: false,
        })
    }

    fn drain_r(q: &mut ViewerQueue) -> Vec<(u64, u8)> {
        let mut got = Vec::new();
        while let Some(f) = q.try_next() {
            got.push((f.header.capture_index, f.header.rendition));
        }
        got
    }

    /// Publishes frames `from..to` of each rendition in `rs` (30 a second),
    /// draining `qs` after each.
    fn both(
        hub: &Hub,
        rs: &[(u8, u32)],
        from: u64,
        to: u64,
        qs: &mut [&mut ViewerQueue],
    ) -> Vec<Vec<(u64, u8)>> {
        let mut got = vec![Vec::new(); qs.len()];
        for i in from..to {
            for &(r, kbps) in rs {
                hub.publish(of_rendition(i, r, false, kbps, 33 * i));
            }
            for (q, g) in qs.iter_mut().zip(&mut got) {
                g.extend(drain_r(q));
            }
        }
        got
    }

    // r[verify video.hub.renditions]
    #[test]
    fn new_viewers_start_small_the_fast_one_moves_up_and_the_slow_one_stays() {
        let hub = Hub::new(HubConfig {
            queue: 64,
            recovery: true,
            renditions: 2,
            ..HubConfig::new(8_000_000)
        });
        assert_eq!(hub.config().renditions, 2);
        // Without viewers only the full picture is encoded.
        assert!(hub.rendition_active(0) && !hub.rendition_active(1));
        let mut fast = hub.register();
        let mut slow = hub.register();
        fast.info().set_target_bitrate(100_000_000);
        slow.info().set_target_bitrate(2_000_000);
        // Both start on the smallest rendition; only it is encoded.
        assert!(!hub.rendition_active(0) && hub.rendition_active(1) && !hub.rendition_active(2));
        assert!(hub.take_keyframe_of(1, Instant::now()));
        assert!(!hub.take_keyframe_of(0, Instant::now()));
        assert_eq!(slow.info().counters().rendition, 1);
        hub.publish(of_rendition(0, 1, true, 2000, 0));
        let got = both(&hub, &[(1, 2000)], 1, 31, &mut [&mut fast, &mut slow]);
        assert!(got.iter().all(|g| g.len() == 31), "frames 0 to 30: {got:?}");
        // No move within the first second, whatever the targets say.
        assert!(!hub.rendition_active(0));
        // At the first TL0 frame past 1 s the fast viewer, alone on
        // rendition 0 (its target sets that rate), is to move up and
        // rendition 0 starts with a keyframe; the slow one cannot carry a
        // rendition not encoded lately (as if all of it were base layer).
        hub.publish(of_rendition(32, 1, false, 2000, 1056));
        assert!(hub.rendition_active(0));
        assert!(hub.take_keyframe_of(0, Instant::now()));
        assert!(!hub.take_keyframe_of(0, Instant::now()), "forced once");
        assert_eq!(hub.target_bitrate_of(0), 8_000_000);
        assert_eq!(
            hub.target_bitrate_of(1),
            2_000_000,
            "the slow target, at most 8/4"
        );
        hub.publish(of_rendition(33, 1, false, 2000, 1089));
        hub.publish(of_rendition(33, 0, true, 8000, 1089));
        assert_eq!(drain_r(&mut fast), [(32, 1), (33, 1), (33, 0)]);
        assert_eq!(drain_r(&mut slow), [(32, 1), (33, 1)]);
        let got = both(
            &hub,
            &[(0, 8000), (1, 2000)],
            34,
            60,
            &mut [&mut fast, &mut slow],
        );
        let want_fast: Vec<(u64, u8)> = (34..60).map(|i| (i, 0)).collect();
        assert_eq!(
            got[0], want_fast,
            "rendition 0 from its keyframe on, nothing of 1"
        );
        let want_slow: Vec<(u64, u8)> = (34..60).map(|i| (i, 1)).collect();
        assert_eq!(got[1], want_slow);
        let (f, sl) = (fast.info().counters(), slow.info().counters());
        assert_eq!(
            (f.rendition, f.rendition_changes, f.frames_skipped),
            (0, 1, 0)
        );
        assert_eq!(
            (sl.rendition, sl.rendition_changes, sl.frames_skipped),
            (1, 0, 0)
        );
        // Its own target is what rendition 1 encodes at.
        slow.info().set_target_bitrate(1_500_000);
        assert_eq!(hub.target_bitrate_of(1), 1_500_000);
        // A target that carries rendition 0's base layer (60% of 8 Mbit/s)
        // with the margin for moving up: the slow one moves up too, and
        // rendition 1 is no longer encoded.
        slow.info().set_target_bitrate(7_000_000);
        both(
            &hub,
            &[(0, 8000), (1, 2000)],
            60,
            62,
            &mut [&mut fast, &mut slow],
        );
        assert!(hub.take_keyframe_of(0, Instant::now()));
        hub.publish(of_rendition(62, 1, false, 2000, 33 * 62));
        hub.publish(of_rendition(62, 0, true, 8000, 33 * 62));
        assert_eq!(drain_r(&mut slow).last(), Some(&(62, 0)));
        assert_eq!(slow.info().counters().rendition_changes, 1);
        assert!(hub.rendition_active(0) && !hub.rendition_active(1));
        // A frame of a rendition the hub does not have goes to no one.
        hub.publish(of_rendition(63, 3, true, 500, 33 * 63));
        assert_eq!(hub.stats().frames_bad_rendition, 1);
        assert!(drain_r(&mut slow).is_empty());
    }

    /// A hub of `renditions` (queues of 2, recovery frames on) with one
    /// viewer whose target carries everything, after its first second:
    /// frames 0..34 of the smallest rendition at `kbps`, drained.
    fn lone_fast_viewer(renditions: u8, kbps: u32) -> (Hub, ViewerQueue) {
        let hub = Hub::new(HubConfig {
            queue: 2,
            recovery: true,
            renditions,
            ..HubConfig::new(8_000_000)
        });
        let mut only = hub.register();
        only.info().set_target_bitrate(100_000_000);
        let last = renditions - 1;
        assert!(hub.take_keyframe_of(last, Instant::now()));
        hub.publish(of_rendition(0, last, true, kbps, 0));
        both(&hub, &[(last, kbps)], 1, 34, &mut [&mut only]);
        (hub, only)
    }

    // r[verify video.hub.renditions]
    #[test]
    fn a_viewer_whose_queue_overflows_moves_down_a_rendition() {
        let (hub, mut only) = lone_fast_viewer(3, 500);
        // Alone, after a second it moves up straight to rendition 0.
        assert!(hub.take_keyframe_of(0, Instant::now()));
        hub.publish(of_rendition(34, 0, true, 8000, 33 * 34));
        assert_eq!(drain_r(&mut only), [(34, 0)]);
        // Frames 35 and 36 queued, 37 overflowed: it skips and steps down
        // one rendition at the next TL0 frame (38), though its target
        // would keep it.
        for i in 35..38 {
            hub.publish(of_rendition(i, 0, false, 8000, 33 * i));
        }
        assert_eq!(only.info().counters().skip_events, 1);
        assert!(!hub.rendition_active(1));
        hub.publish(of_rendition(38, 0, false, 8000, 33 * 38));
        assert!(hub.rendition_active(1) && !hub.rendition_active(2));
        assert!(hub.take_keyframe_of(1, Instant::now()));
        assert_eq!(drain_r(&mut only), [(35, 0), (36, 0)]);
        hub.publish(of_rendition(39, 1, true, 2000, 33 * 39));
        assert_eq!(
            drain_r(&mut only),
            [(39, 1)],
            "it resumes at rendition 1's keyframe"
        );
        assert_eq!(only.info().counters().rendition, 1);
    }

    /// `f` flagged as a recovery frame (an LTR P frame at TL0).
    fn as_recovery(f: Arc<EncodedFrame>) -> Arc<EncodedFrame> {
        let mut f = (*f).clone();
        f.header.recovery = true;
        Arc::new(f)
    }

    // r[verify video.hub.rendition-entry]
    #[test]
    fn a_viewer_whose_move_keyframe_overflowed_waits_for_a_keyframe_not_a_recovery_frame() {
        let (hub, mut only) = lone_fast_viewer(2, 2000);
        // It decided to move up (rendition 0's keyframe is forced), and
        // its queue fills with rendition 1 before that keyframe comes.
        assert!(hub.take_keyframe_of(0, Instant::now()));
        hub.publish(of_rendition(34, 1, false, 2000, 33 * 34));
        hub.publish(of_rendition(35, 1, false, 2000, 33 * 35));
        let requests = only.info().counters().keyframe_requests;
        let skipped = only.info().counters().frames_skipped;
        hub.publish(of_rendition(36, 0, true, 8000, 33 * 36));
        assert_eq!(only.info().counters().rendition, 0, "it moved");
        assert_eq!(
            drain_r(&mut only),
            [(34, 1), (35, 1)],
            "the keyframe overflowed"
        );
        // Rendition 0's next TL0 frame is a recovery frame (another
        // viewer's, say): its long-term reference never reached this one.
        hub.publish(as_recovery(of_rendition(38, 0, false, 8000, 33 * 38)));
        hub.publish(of_rendition(39, 0, false, 8000, 33 * 39));
        assert_eq!(
            drain_r(&mut only),
            [],
            "nothing of rendition 0 before its keyframe"
        );
        let c = only.info().counters();
        assert_eq!(c.frames_skipped, skipped + 3);
        assert_eq!(c.keyframe_requests, requests + 1, "a keyframe is asked for");
        assert!(!hub.take_recovery_of(0), "not a recovery frame");
        hub.publish(of_rendition(40, 0, true, 8000, 33 * 40));
        hub.publish(of_rendition(41, 0, false, 8000, 33 * 41));
        assert_eq!(
            drain_r(&mut only),
            [(40, 0), (41, 0)],
            "the keyframe starts it"
        );
    }

    // r[verify video.hub.rendition-entry]
    #[test]
    fn the_budget_gate_sends_nothing_of_a_new_rendition_before_its_keyframe() {
        let h = |r: u8, key: bool, recovery: bool| {
            let mut h = layered(0, key, 0, recovery, false).header;
            h.rendition = r;
            h
        };
        let mut g = BudgetGate::new(Duration::from_millis(150), true);
        assert_eq!(g.check(&h(1, true, true), 0, false), Verdict::Send);
        assert_eq!(g.check(&h(1, false, false), 0, false), Verdict::Send);
        // The viewer moved to rendition 0 and its keyframe did not come
        // through: a recovery frame of rendition 0 is not sent.
        assert_eq!(
            g.check(&h(0, false, true), 0, false),
            Verdict::Skip { starts: true },
            "a skip to a keyframe starts"
        );
        assert_eq!(g.wait, Wait::Key);
        assert_eq!(
            g.check(&h(0, false, false), 0, false),
            Verdict::Skip { starts: false }
        );
        assert_eq!(
            g.check(&h(0, false, true), 0, false),
            Verdict::Skip { starts: false }
        );
        // The entry keyframe is sent however late, even with a newer
        // recovery point queued.
        assert_eq!(g.check(&h(0, true, true), 900_000, true), Verdict::Send);
        assert_eq!(g.check(&h(0, false, false), 0, false), Verdict::Send);
        // Back to rendition 1: its keyframe, late, is still the entry.
        assert_eq!(g.check(&h(1, true, true), 900_000, true), Verdict::Send);
    }

    // r[verify video.hub.renditions]
    #[test]
    fn moving_up_needs_the_margin_and_waits_two_seconds_after_a_move() {
        let hub = Hub::new(HubConfig {
            queue: 64,
            renditions: 2,
            ..HubConfig::new(8_000_000)
        });
        let mut fast = hub.register();
        let mut slow = hub.register();
        fast.info().set_target_bitrate(8_000_000);
        slow.info().set_target_bitrate(5_500_000);
        assert!(hub.take_keyframe_of(1, Instant::now()));
        hub.publish(of_rendition(0, 1, true, 2000, 0));
        both(&hub, &[(1, 2000)], 1, 33, &mut [&mut fast, &mut slow]);
        assert!(hub.take_keyframe_of(0, Instant::now()));
        hub.publish(of_rendition(32, 0, true, 8000, 33 * 32));
        assert_eq!(fast.info().counters().rendition, 0);
        // 60% of 8 Mbit/s is 4.8: a target of 5.5 would carry it with the
        // staying margin (1.1) but not with the moving-up one (1.25).
        both(
            &hub,
            &[(0, 8000), (1, 2000)],
            33,
            120,
            &mut [&mut fast, &mut slow],
        );
        assert_eq!(slow.info().counters().rendition, 1);
        assert!(!hub.take_keyframe_of(0, Instant::now()));
        slow.info().set_target_bitrate(6_100_000);
        hub.publish(of_rendition(120, 1, false, 2000, 33 * 120));
        assert!(
            hub.take_keyframe_of(0, Instant::now()),
            "6.1 / 1.25 >= 4.8: it moves up"
        );
        hub.publish(of_rendition(120, 0, true, 8000, 33 * 120));
        assert_eq!(slow.info().counters().rendition, 0);
        // Down at once when its target falls (the margin 1.1), and not
        // back up within 2 s of that move.
        slow.info().set_target_bitrate(2_000_000);
        both(
            &hub,
            &[(0, 8000), (1, 2000)],
            121,
            123,
            &mut [&mut fast, &mut slow],
        );
        assert!(hub.take_keyframe_of(1, Instant::now()));
        hub.publish(of_rendition(123, 1, true, 2000, 33 * 123));
        assert_eq!(slow.info().counters().rendition, 1);
        slow.info().set_target_bitrate(7_000_000);
        both(
            &hub,
            &[(0, 8000), (1, 2000)],
            124,
            180,
            &mut [&mut fast, &mut slow],
        );
        assert_eq!(slow.info().counters().rendition, 1, "no move up within 2 s");
        assert!(!hub.take_keyframe_of(0, Instant::now()));
        both(
            &hub,
            &[(0, 8000), (1, 2000)],
            180,
            186,
            &mut [&mut fast, &mut slow],
        );
        assert!(
            hub.take_keyframe_of(0, Instant::now()),
            "past 2 s it moves up"
        );
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
    fn the_encoder_follows_the_fastest_viewer_target_between_floor_and_cap() {
        let hub = hub(4);
        assert_eq!(hub.target_bitrate(), 4_000_000, "no viewer: the maximum");
        let a = hub.register();
        let b = hub.register();
        a.info().set_target_bitrate(3_000_000);
        b.info().set_target_bitrate(1_000_000);
        assert_eq!(
            hub.target_bitrate(),
            3_000_000,
            "the slow viewer does not pull the encoder down"
        );
        a.info().set_target_bitrate(9_000_000);
        assert_eq!(hub.target_bitrate(), 4_000_000, "never above the maximum");
        a.info().set_target_bitrate(100_000);
        b.info().set_target_bitrate(200_000);
        assert_eq!(hub.target_bitrate(), 300_000, "never below the floor");
        b.info().set_target_bitrate(2_000_000);
        assert_eq!(hub.target_bitrate(), 2_000_000);
        hub.remove(b.info().id());
        assert_eq!(
            hub.target_bitrate(),
            300_000,
            "a removed viewer no longer counts"
        );
    }

    /// Publishes frames `from..to` of a 2-layer stream (TL0 on even
    /// indices, 3000 B; TL1 on odd ones, 1000 B: TL0 is 75 % of the bytes)
    /// at 30 frames/s, the encoder at `kbps`; `key_at` is an IDR.
    fn two_layers(hub: &Hub, from: u64, to: u64, kbps: u32, key_at: Option<u64>) {
        for i in from..to {
            let tid = (i % 2) as u8;
            let mut f = layered(i, key_at == Some(i), tid, false, false);
            let m = Arc::make_mut(&mut f);
            m.access_unit = vec![i as u8; if tid == 0 { 3000 } else { 1000 }];
            m.header.target_kbps = kbps;
            m.header.capture_us = 1_000_000 + i * 33_333;
            hub.publish(f);
        }
    }

    // r[verify video.hub.layers]
    #[test]
    fn a_slow_viewer_gets_the_base_layer_and_the_fast_one_every_frame() {
        let hub = Hub::new(HubConfig {
            queue: 64,
            recovery: true,
            ..HubConfig::new(8_000_000)
        });
        let mut fast = hub.register();
        let mut slow = hub.register();
        fast.info().set_target_bitrate(100_000_000);
        slow.info().set_target_bitrate(2_000_000);
        assert_eq!(hub.target_bitrate(), 8_000_000, "the fast one sets it");
        // The encoder at 8 Mbit/s: TL0 is 6 Mbit/s, too much for 2.
        two_layers(&hub, 0, 20, 8000, Some(0));
        let f = drain(&mut fast);
        assert_eq!(f, (0..20).collect::<Vec<_>>());
        let s = drain(&mut slow);
        // The first frame (the IDR) is taken before any measurement; from
        // the first TL0 frame on the slow viewer gets TL0 only.
        assert_eq!(s, (0..20).step_by(2).collect::<Vec<_>>());
        let c = slow.info().counters();
        assert_eq!((c.layer, c.frames_filtered), (0, 10), "{c:?}");
        assert_eq!(
            (c.frames_skipped, c.skip_events),
            (0, 0),
            "not a skip: {c:?}"
        );
        assert_eq!(c.recovery_requests, 0, "filtering asks for nothing");
        assert_eq!(fast.info().counters().layer, 1);
        // Its target grows past the whole stream's rate: from the next TL0
        // frame on (never at a TL1 frame) it gets both layers.
        slow.info().set_target_bitrate(9_000_000);
        two_layers(&hub, 20, 21, 8000, None);
        assert_eq!(drain(&mut slow), [20]);
        slow.info().set_target_bitrate(7_500_000);
        two_layers(&hub, 21, 26, 8000, None);
        assert_eq!(drain(&mut slow), [21, 22, 23, 24, 25]);
        // A target between TL0's rate and the whole: TL0 (6 Mbit/s at 8).
        slow.info().set_target_bitrate(5_500_000);
        two_layers(&hub, 26, 30, 8000, None);
        assert_eq!(drain(&mut slow), [26, 28]);
        assert_eq!(slow.info().counters().layer_changes, 2);
        assert_eq!(drain(&mut fast), (20..30).collect::<Vec<_>>());
    }

    // r[verify video.hub.recovery]
    #[test]
    fn skips_ask_for_one_recovery_and_the_viewer_resumes_at_the_recovery_frame() {
        let hub = recovering_hub(2);
        let mut a = hub.register();
        let mut b = hub.register();
        assert!(hub.take_keyframe(Instant::now()));
        hub.publish(frame(0, true));
        assert!(!hub.take_recovery(), "nothing asked");
        // Both queues hold 2; neither drains: both overflow at frame 2.
        hub.publish(frame(1, false));
        hub.publish(frame(2, false));
        hub.publish(frame(3, false));
        for q in [&a, &b] {
            let c = q.info().counters();
            assert_eq!((c.skip_events, c.frames_skipped), (1, 2), "{c:?}");
            assert_eq!(c.recovery_requests, 1);
            assert_eq!(c.keyframe_requests, 0, "a recovery, not a keyframe");
            assert!(q.info().recovery_awaited());
        }
        // Two viewers' requests: one recovery, once.
        assert!(hub.take_recovery());
        assert!(!hub.take_recovery());
        assert!(!hub.take_keyframe(Instant::now() + Duration::from_secs(5)));
        assert_eq!(hub.stats().recoveries_granted, 1);
        assert_eq!(drain(&mut a), [0, 1]);
        assert_eq!(drain(&mut b), [0, 1]);
        // The recovery frame (not an IDR) ends both skips.
        hub.publish(frame(4, false));
        hub.publish(layered(5, false, 0, true, false));
        hub.publish(frame(6, false));
        assert_eq!(drain(&mut a), [5, 6]);
        assert_eq!(drain(&mut b), [5, 6]);
        assert!(!a.info().recovery_awaited());
        // Without recovery frames the same skip asks for a keyframe and a
        // recovery frame does not end it.
        let old = super::tests::hub(2);
        let mut c = old.register();
        old.publish(frame(0, true));
        for i in 1..4 {
            old.publish(frame(i, false));
        }
        assert!(c.info().keyframe_wanted());
        assert!(!old.take_recovery());
        assert_eq!(drain(&mut c), [0, 1]);
        old.publish(layered(4, false, 0, true, false));
        assert!(drain(&mut c).is_empty());
    }

    // r[verify video.hub.ltr-confirm]
    #[test]
    fn a_mark_is_confirmed_when_every_viewer_got_it_and_rejected_when_one_skipped_it() {
        let hub = recovering_hub(2);
        let mut a = hub.register();
        let mut b = hub.register();
        hub.publish(layered(0, true, 0, false, true));
        assert_eq!(hub.take_mark_outcomes(), [(0, true)]);
        hub.publish(layered(1, false, 0, false, true));
        assert_eq!(hub.take_mark_outcomes(), [(1, true)]);
        assert!(hub.take_mark_outcomes().is_empty());
        drain(&mut a);
        // b's queue is full: it skips the next mark, which is rejected.
        hub.publish(frame(2, false));
        hub.publish(layered(3, false, 0, false, true));
        assert_eq!(hub.take_mark_outcomes(), [(3, false)]);
        // A mark while b waits for its recovery point is rejected too.
        drain(&mut a);
        hub.publish(layered(4, false, 0, false, true));
        assert_eq!(hub.take_mark_outcomes(), [(4, false)]);
        drain(&mut b);
        hub.publish(layered(5, false, 0, true, false));
        drain(&mut a);
        hub.publish(layered(6, false, 0, false, true));
        assert_eq!(hub.take_mark_outcomes(), [(6, true)]);
        let st = hub.stats();
        assert_eq!((st.marks_confirmed, st.marks_rejected), (3, 2));
        // A mark waiting for a served viewer's verdict is given up when
        // that viewer leaves.
        let mut marks = Marks::default();
        marks.pending.push_back(Mark {
            rendition: 0,
            capture_index: 9,
            waiting: vec![1, 2],
        });
        marks.verdict(0, 9, 1, true);
        assert!(marks.outcomes.is_empty());
        marks.forget(2, None);
        assert_eq!(marks.outcomes, [(0, 9, true)]);
        let d = Delivery {
            last_lost: Some(10),
            ..Delivery::default()
        };
        assert!(d.whole(11) && !d.whole(10) && !d.whole(3));
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
        let h = |key: bool| frame(0, key).header;
        let mut g = BudgetGate::new(Duration::from_millis(150), false);
        assert_eq!(
            g.check(&h(false), 150_000, false),
            Verdict::Send,
            "at the budget"
        );
        assert_eq!(
            g.check(&h(false), 150_001, false),
            Verdict::Skip { starts: true },
            "over it: a skip starts"
        );
        assert_eq!(
            g.check(&h(false), 0, false),
            Verdict::Skip { starts: false },
            "in time but waiting for a keyframe"
        );
        assert_eq!(
            g.check(&h(true), 900_000, false),
            Verdict::Send,
            "a keyframe is never dropped for age alone"
        );
        assert_eq!(
            g.check(&h(false), 10_000, false),
            Verdict::Send,
            "the skip ended"
        );
        assert_eq!(
            g.check(&h(true), 900_000, true),
            Verdict::Skip { starts: false },
            "a late keyframe with a newer one queued gives way to it"
        );
        assert_eq!(g.check(&h(false), 0, true), Verdict::Skip { starts: false });
        assert_eq!(g.check(&h(true), 0, false), Verdict::Send);
        let mut off = BudgetGate::new(Duration::MAX, false);
        assert_eq!(off.check(&h(false), u64::MAX, false), Verdict::Send);
    }

    // r[verify video.hub.budget]
    #[test]
    fn a_late_higher_layer_frame_skips_to_the_next_tl0_and_a_late_tl0_to_a_recovery_frame() {
        let h = |tid: u8, recovery: bool| layered(0, false, tid, recovery, false).header;
        let mut g = BudgetGate::new(Duration::from_millis(150), true);
        assert_eq!(
            g.check(&h(1, false), 200_000, false),
            Verdict::Skip { starts: false },
            "a late TL1 frame: no request"
        );
        assert_eq!(
            g.check(&h(1, false), 0, false),
            Verdict::Skip { starts: false },
            "the next TL1 frame may depend on it"
        );
        assert_eq!(
            g.check(&h(0, false), 0, false),
            Verdict::Send,
            "TL0 ends it"
        );
        assert_eq!(
            g.check(&h(0, false), 200_000, false),
            Verdict::Skip { starts: true },
            "a late TL0 frame asks for a recovery"
        );
        assert_eq!(
            g.check(&h(0, false), 0, false),
            Verdict::Skip { starts: false }
        );
        assert_eq!(
            g.check(&h(1, false), 0, false),
            Verdict::Skip { starts: false }
        );
        assert_eq!(
            g.check(&h(0, true), 900_000, false),
            Verdict::Send,
            "a recovery frame ends it, late or not"
        );
        assert_eq!(g.check(&h(1, false), 0, false), Verdict::Send);
        // After a late TL1 frame, a late TL0 one still asks.
        g.check(&h(1, false), 200_000, false);
        assert_eq!(
            g.check(&h(0, false), 200_000, false),
            Verdict::Skip { starts: true }
        );
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
