//! Bandwidth estimation (`session.bwe.*`): a sans-I/O congestion controller
//! in the manner of WebRTC's GCC.
//!
//! Inputs are events with timestamps the caller supplies (microseconds on
//! any monotonic clock; the client's arrival times on the client's own
//! clock, of which only differences are used):
//! - [`Bwe::on_sent`]: a packet left (packet number, bytes, send time,
//!   probe cluster),
//! - [`Bwe::on_feedback`]: the client's report of which packets arrived when
//!   and which were lost.
//!
//! Outputs are the [estimate](Bwe::estimate_bps) (what the path carries),
//! the [pacing rate](Bwe::pacing_bps) and [probe clusters](Bwe::poll_probe)
//! to send. Nothing here reads a clock or does I/O, so a deterministic
//! network simulator drives it in tests.
//!
//! Structure: a delay-gradient detector (`trendline.rs`) over
//! send-time groups drives an AIMD rate controller (overuse: down to 0.85×
//! the acknowledged rate; normal: up, multiplicatively far from the last
//! known capacity and additively near it); a loss-based controller caps it
//! (no reaction below 2% loss, a decrease of `rate · (1 − loss/2)` above
//! 10%); probe clusters (padding sent at a multiple of the estimate between
//! frames) find capacity the application's own traffic does not reveal.

mod trendline;

#[cfg(test)]
mod sim;

use std::collections::VecDeque;

use trendline::Trendline;
pub use trendline::Usage;

/// Settings of the bandwidth estimator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BweConfig {
    /// Estimate before any feedback arrived, bits per second.
    pub start_bps: u64,
    /// The estimate never goes below this.
    pub min_bps: u64,
    /// The estimate never goes above this.
    pub max_bps: u64,
    /// Pacing rate as a multiple of the estimate.
    pub pacing_gain: f64,
    /// Probe for more capacity (padding clusters between frames).
    pub probing: bool,
}

impl Default for BweConfig {
    fn default() -> Self {
        BweConfig {
            start_bps: 20_000_000,
            min_bps: 500_000,
            max_bps: 10_000_000_000,
            pacing_gain: 1.1,
            probing: true,
        }
    }
}

/// One packet the client reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Its packet number.
    pub pn: u64,
    /// When it arrived (client clock, µs), `None` if it did not.
    pub at_us: Option<u64>,
}

/// A burst of padding the sender should emit at `bps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeCluster {
    /// Identifies the cluster in [`Bwe::on_sent`].
    pub id: u32,
    /// Rate to send it at.
    pub bps: u64,
    /// Bytes to send.
    pub bytes: u64,
    /// At least this many packets.
    pub min_packets: u32,
    /// Frame data queued while the cluster runs leaves at the cluster's
    /// rate and counts as part of it, instead of ending it (a headroom
    /// probe, `session.bwe.headroom`: longer than a frame interval at
    /// low rates, it would otherwise never finish).
    pub carries_data: bool,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    pn: u64,
    size: u32,
    at: u64,
    probe: Option<u32>,
    reported: bool,
}

#[derive(Debug, Default, Clone)]
struct ProbeStats {
    sent_packets: u32,
    sent_bytes: u64,
    recv_packets: u32,
    reported: u32,
    first_send: Option<u64>,
    last_send: u64,
    last_send_size: u32,
    /// (arrival µs, bytes) of the cluster's packets that arrived, the
    /// first `MAX_PROBE_ARRIVALS`.
    arrivals: Vec<(u64, u32)>,
    done_sending: bool,
    bps: u64,
    /// A headroom probe (`session.bwe.headroom`): above twice the
    /// application's rate, large enough that no shaper's bucket passes it.
    headroom: bool,
}

/// Arrivals kept per probe cluster (a 5 ms cluster at 10 Gbit/s is about
/// 5,000 full-size packets; beyond this many the rest only count).
const MAX_PROBE_ARRIVALS: usize = 8192;

impl ProbeStats {
    /// The receive rate over the later half of the cluster's arrivals
    /// (by bytes), bits per second. A bottleneck with a token bucket lets
    /// a cluster's first bytes through at once, so a rate over all of them
    /// overstates its capacity (by a fifth, for a 5 ms cluster through a
    /// `tbf` with a 1 ms bucket); by the middle of the cluster the bucket
    /// is spent and the arrivals come at the rate the path carries.
    fn recv_bps(&mut self) -> Option<f64> {
        let a = &mut self.arrivals;
        a.sort_unstable();
        let total: u64 = a.iter().map(|x| x.1 as u64).sum();
        // The arrival that completes the first half: the later half's rate
        // is its bytes after it over the time from it to the last.
        let mut seen = 0u64;
        let mid = a.iter().position(|x| {
            seen += x.1 as u64;
            seen * 2 >= total
        })?;
        let mid = mid.min(a.len().saturating_sub(3));
        let span = a.last()?.0.checked_sub(a[mid].0)?;
        let bytes: u64 = a[mid + 1..].iter().map(|x| x.1 as u64).sum();
        (span > 0 && bytes > 0).then(|| bytes as f64 * 8e6 / span as f64)
    }
}

/// The latest probe cluster started: its id, rate and start time.
#[derive(Debug, Clone, Copy)]
struct LastProbe {
    id: u32,
    bps: u64,
    at: u64,
}

/// Rate-control state of the delay-based controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RateState {
    Hold,
    Increase,
}

/// Counters and figures of the estimator, for stats.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BweStats {
    /// Probe clusters started.
    pub probes: u64,
    /// Probe clusters that produced a result.
    pub probe_results: u64,
    /// Probe clusters whose arrivals read more than twice as fast as they
    /// were sent (stamped in a batch by a busy receiver): no result.
    pub probes_invalid: u64,
    /// Overuse signals acted on (delay-based decreases).
    pub overuses: u64,
    /// Loss-based decreases.
    pub loss_decreases: u64,
    /// Loss fraction of the last feedback window, parts per million.
    pub loss_ppm: u64,
    /// The acknowledged (received) rate, bits per second.
    pub acked_bps: u64,
    /// The delay-based estimate.
    pub delay_bps: u64,
    /// The loss-based estimate.
    pub loss_bps: u64,
    /// Headroom probes started (above twice the application's rate,
    /// `session.bwe.headroom`).
    pub headroom_probes: u64,
    /// Packets lost to outages of the path (a run of losses sent over
    /// 250 ms with nothing arriving), kept out of the loss-based estimate.
    pub outage_packets: u64,
}

/// The bandwidth estimator (see the module docs).
#[derive(Debug)]
pub struct Bwe {
    config: BweConfig,
    /// When the application's last frames were submitted (the last second,
    /// and always the latest: empty only while the application has not
    /// reported one; `session.bwe.quiet`).
    frame_times: VecDeque<u64>,
    /// How high headroom probes go (`PacingConfig::ceiling_bps`).
    probe_ceiling_bps: u64,
    history: VecDeque<Sent>,
    trend: Trendline,
    delay_bps: f64,
    loss_bps: f64,
    state: RateState,
    last_update: Option<u64>,
    last_decrease: Option<u64>,
    /// Averaged acknowledged rate at overuse (the link's capacity) and its
    /// variance, normalised.
    capacity: Option<(f64, f64)>,
    /// Received bytes by arrival time, for the acknowledged rate.
    acked: VecDeque<(u64, u32, bool)>,
    acked_bps: Option<f64>,
    /// The plain average over the window (no busiest-period correction).
    acked_avg_bps: Option<f64>,
    /// The plain average of the application's own data (probes left out).
    acked_app_bps: Option<f64>,
    /// Received rates over the last 50 ms, over the last second.
    peaks: VecDeque<(u64, f64)>,
    /// Sent bytes by send time, for the sending rate.
    /// (sent at, size, part of a probe) over the last `SENT_WINDOW_US`.
    sent_window: VecDeque<(u64, u32, bool)>,
    /// Bytes in `sent_window`: all, and those of probes (kept as it
    /// changes: the pacer asks for the application's rate every batch).
    sent_window_bytes: (u64, u64),
    /// When the first packet left (the initial probes' floor holds for a
    /// while after it).
    first_sent_at: Option<u64>,
    /// The current run of losses, not yet counted: when its first and its
    /// last packet were sent, and how many (`session.bwe.outage`).
    loss_run: Option<(u64, u64, u32)>,
    /// The wait for the next periodic probe: shorter after one that did
    /// not saturate the path.
    probe_interval_us: u64,
    loss_window: (u32, u32),
    loss_window_start: Option<u64>,
    probes: Vec<(u32, ProbeStats)>,
    pending_probes: VecDeque<u64>,
    next_probe_id: u32,
    /// The latest cluster started.
    last_probe: Option<LastProbe>,
    last_overuse_at: Option<u64>,
    last_loss_decrease: Option<u64>,
    /// The application's bytes sent since the first packet.
    app_bytes_total: u64,
    /// No probe before this (a keyframe is still on the path:
    /// `session.bwe.probe-keyframe`).
    probe_hold_until: u64,
    /// A keyframe in the pacer: the application bytes still to be sent
    /// until its last one left, and its size.
    keyframe_left: Option<(u64, u64)>,
    /// The last headroom probe found the path unsaturated: the next goes
    /// at once, twice as high (`session.bwe.headroom`).
    headroom_chain: bool,
    /// No headroom probe before this (one found a bottleneck).
    headroom_blocked_until: u64,
    /// The latest result of a headroom probe that read unsaturated: a
    /// rate the path was seen to carry past any bucket.
    proven_bps: f64,
    stats: BweStats,
}

/// Acknowledged-rate window.
const ACKED_WINDOW_US: u64 = 250_000;
/// The busiest-period window of the acknowledged rate.
const PEAK_WINDOW_US: u64 = 50_000;
/// How long a busy period's rate counts.
const PEAK_KEEP_US: u64 = 1_000_000;
/// Packets a loss window needs (fewer make 2% random loss look like 10%).
const LOSS_WINDOW_PACKETS: u32 = 100;
/// Sent-rate window.
const SENT_WINDOW_US: u64 = 500_000;
/// Packets kept for feedback matching.
const MAX_HISTORY: usize = 1 << 16;
/// Send history older than this is forgotten.
const HISTORY_US: u64 = 2_000_000;
/// Consecutive losses (nothing arriving between them) sent over this long
/// are an outage of the path, not congestion: a bottleneck, however
/// full, keeps delivering at its rate.
const OUTAGE_US: u64 = 250_000;
/// Multiplicative increase per second far from the known capacity.
const MULT_INCREASE: f64 = 0.08;
/// Decrease factor on overuse.
const BETA: f64 = 0.85;
/// Probe clusters last this long at their rate. Short: a cluster at `r`
/// through a bottleneck of capacity `c < r` adds `(r − c) · PROBE_US` to its
/// queue, so at up to 2c it adds at most 5 ms of the capacity; a shallow
/// queue (5 ms) holds that, where a 15 ms cluster (GCC's) overfilled it and
/// dropped the frame data behind it.
const PROBE_US: u64 = 5_000;
/// Packets in a probe cluster at least, whatever its rate: fewer, sent in
/// the pacer's 1 ms bursts, give no usable rate (a cluster at 30 Mbit/s
/// is 14 packets in 5 ms). At low rates the cluster is then longer than
/// `PROBE_US`; what it adds to a queue stays under this many packets.
const PROBE_MIN_PACKETS: u32 = 20;
/// A small cluster's result lifts the estimate at most this much above
/// the rate the application's own data was sent and acknowledged at
/// (`session.bwe.probe-trust`).
const PROBE_TRUST: f64 = 1.4;
/// A cluster of at least this many bytes is larger than the buckets of
/// the shapers it meets (`tbf` bursts of up to 64 KB), so its rate is the
/// path's: its result is not capped (`session.bwe.probe-trust`).
const PROBE_TRUSTED_BYTES: u64 = 64 * 1024;
/// How long the application's rate is averaged from its first packet.
const APP_RATE_SETTLE_US: u64 = 3_000_000;
/// A cluster whose receive rate exceeds its send rate by more than this
/// factor gives no result (`session.bwe.probe-valid`).
const PROBE_MAX_RECV_RATIO: f64 = 2.0;

/// The wait for the next probe after one whose result was capped: the
/// estimate then climbs in confirmed steps, one per keyframe or so.
const PROBE_CONFIRM_INTERVAL_US: u64 = PROBE_INTERVAL_US / 6;
/// The headroom probes' ceiling unless set (a gigabit LAN).
pub const DEFAULT_CEILING_BPS: u64 = 1_000_000_000;
/// A headroom probe is at least this large: four times the largest
/// shaper bucket it may meet (64 KB), so the later half of its arrivals,
/// which gives its rate, comes after any bucket it passes is spent
/// (`session.bwe.headroom`).
const HEADROOM_MIN_BYTES: u64 = 4 * PROBE_TRUSTED_BYTES;
/// Headroom probes only while the estimate is at least this many times the
/// application's wire rate: the ordinary probes (up to twice that rate)
/// found no bottleneck near it. A path where they did (the estimate held
/// within `PROBE_TRUST` of the rate, or at its capacity below) never sees
/// one.
const HEADROOM_RATIO: u64 = 4;
/// After a headroom probe found a bottleneck, none for this long.
const HEADROOM_BACKOFF_US: u64 = 30_000_000;
/// The longest a keyframe holds probes back after it left the pacer.
const KEYFRAME_HOLD_MAX_US: u64 = 50_000;
/// Periodic probing interval.
const PROBE_INTERVAL_US: u64 = 3_000_000;
/// Fewer frames than this in the last second: the application is quiet
/// (a still screen captured on damage, at its refresh), and nothing is
/// probed (`session.bwe.quiet`).
const QUIET_FRAMES: usize = 5;
/// The window `QUIET_FRAMES` counts over.
const QUIET_WINDOW_US: u64 = 1_000_000;
/// How long after the first packet the initial probes' floor holds (the
/// application's own rate is known after one sent-rate window; twice that).
const INITIAL_PROBING_US: u64 = 2 * SENT_WINDOW_US;

impl Bwe {
    /// A new estimator starting at `config.start_bps`.
    pub fn new(config: BweConfig) -> Self {
        let start = config.start_bps.clamp(config.min_bps, config.max_bps) as f64;
        let mut b = Bwe {
            config,
            probe_ceiling_bps: DEFAULT_CEILING_BPS,
            history: VecDeque::new(),
            trend: Trendline::new(),
            delay_bps: start,
            loss_bps: start,
            state: RateState::Hold,
            last_update: None,
            last_decrease: None,
            capacity: None,
            acked: VecDeque::new(),
            acked_bps: None,
            acked_avg_bps: None,
            acked_app_bps: None,
            peaks: VecDeque::new(),
            sent_window: VecDeque::new(),
            sent_window_bytes: (0, 0),
            first_sent_at: None,
            frame_times: VecDeque::new(),
            loss_run: None,
            probe_interval_us: PROBE_INTERVAL_US,
            loss_window: (0, 0),
            loss_window_start: None,
            probes: Vec::new(),
            pending_probes: VecDeque::new(),
            next_probe_id: 1,
            last_probe: None,
            last_overuse_at: None,
            last_loss_decrease: None,
            app_bytes_total: 0,
            probe_hold_until: 0,
            keyframe_left: None,
            headroom_chain: false,
            headroom_blocked_until: 0,
            proven_bps: 0.0,
            stats: BweStats::default(),
        };
        if config.probing {
            // Initial probes, as GCC: 3x and 6x the start rate.
            b.pending_probes.push_back((start * 3.0) as u64);
            b.pending_probes.push_back((start * 6.0) as u64);
        }
        b
    }

    /// How far probes look for headroom above what the application sends
    /// (`session.bwe.headroom`; `PacingConfig::ceiling_bps`, 1 Gbit/s
    /// unless set): while each probe finds the path unsaturated, the next
    /// goes twice as high, up to this rate. `0`: never above twice the
    /// application's rate.
    pub fn set_probe_ceiling(&mut self, bps: u64) {
        self.probe_ceiling_bps = bps;
    }

    /// The settings.
    pub fn config(&self) -> &BweConfig {
        &self.config
    }

    // r[impl session.bwe.target]
    /// What the path carries, bits per second: the smaller of the
    /// delay-based and the loss-based estimate, within `min_bps..=max_bps`.
    pub fn estimate_bps(&self) -> u64 {
        (self.delay_bps.min(self.loss_bps) as u64).clamp(self.config.min_bps, self.config.max_bps)
    }

    /// The pacing rate: the estimate times `pacing_gain`, but no more than
    /// the estimate itself while the application sends under a third of it
    /// (a keyframe then leaves at the estimate, not above what the path
    /// was measured to carry).
    pub fn pacing_bps(&self, now: u64) -> u64 {
        let est = self.estimate_bps();
        let gained = (est as f64 * self.config.pacing_gain) as u64;
        let pace = gained.min(self.app_sending_bps(now).saturating_mul(3).max(est));
        // r[impl session.pacing.proven]
        // Frame data leaves no faster than the path was seen to carry:
        // `PROBE_TRUST` times the rate the application's own data arrived
        // at, or a headroom probe's result (which no bucket inflates).
        // A small probe cluster passes a shaper's bucket at its own rate
        // and may lift the estimate above the path (the application's
        // target follows it up, confirmed or corrected by what then
        // arrives); paced at that, a keyframe overfills a shallow queue.
        match self.acked_app_bps {
            Some(app) => {
                let proven = (app * PROBE_TRUST).max(self.proven_bps) * self.config.pacing_gain;
                pace.min((proven as u64).max(self.config.min_bps))
            }
            None => pace,
        }
    }

    /// The detector's latest conclusion.
    pub fn usage(&self) -> Usage {
        self.trend.usage()
    }

    /// Counters and figures.
    pub fn stats(&self) -> BweStats {
        let mut s = self.stats;
        s.acked_bps = self.acked_bps.unwrap_or(0.0) as u64;
        s.delay_bps = self.delay_bps as u64;
        s.loss_bps = self.loss_bps as u64;
        s
    }

    /// The rate the sender sent at over the last half second.
    pub fn sending_bps(&self, now: u64) -> u64 {
        self.window_bps(now, true)
    }

    /// The rate of the application's own data (probes left out) over the
    /// last half second.
    pub fn app_sending_bps(&self, now: u64) -> u64 {
        self.window_bps(now, false)
    }

    fn window_bps(&self, now: u64, with_probes: bool) -> u64 {
        let Some(&(first, _, _)) = self.sent_window.front() else {
            return 0;
        };
        let span = now.saturating_sub(first).max(50_000);
        let (all, probes) = self.sent_window_bytes;
        let bytes = if with_probes { all } else { all - probes };
        bytes * 8 * 1_000_000 / span
    }

    /// The highest rate worth probing for: twice what the application
    /// sends (it cannot use more before its encoder follows the target up);
    /// during the first `INITIAL_PROBING_US` after the first packet, while
    /// the application's rate is not known yet, at least the initial
    /// probes' 6× `start_bps`.
    pub fn probe_cap_bps(&self, now: u64) -> u64 {
        let start = self
            .config
            .start_bps
            .clamp(self.config.min_bps, self.config.max_bps);
        let initial = self
            .first_sent_at
            .is_none_or(|t| now.saturating_sub(t) < INITIAL_PROBING_US);
        let floor = if initial { start.saturating_mul(6) } else { 0 };
        (2 * self.app_sending_bps(now))
            .max(floor)
            .min(self.config.max_bps)
    }

    /// A packet left: its number, its size on the wire and when, and the
    /// probe cluster it belongs to.
    pub fn on_sent(&mut self, pn: u64, size: usize, now: u64, probe: Option<u32>) {
        let size = size.min(u32::MAX as usize) as u32;
        if let Some(last) = self.history.back()
            && pn <= last.pn
        {
            return; // numbers only grow; ignore a caller's mistake
        }
        self.history.push_back(Sent {
            pn,
            size,
            at: now,
            probe,
            reported: false,
        });
        while self.history.len() > MAX_HISTORY
            || self
                .history
                .front()
                .is_some_and(|s| now.saturating_sub(s.at) > HISTORY_US)
        {
            self.history.pop_front();
        }
        self.first_sent_at.get_or_insert(now);
        if probe.is_none() {
            self.app_bytes_total += size as u64;
        }
        // r[impl session.bwe.probe-keyframe]
        // Every packet counts: the pacer sends what is queued before any
        // padding, so padding never leaves while the keyframe waits, and
        // data a cluster carries is the keyframe's.
        if let Some((left, bytes)) = self.keyframe_left {
            let left = left.saturating_sub(size as u64);
            self.keyframe_left = (left > 0).then_some((left, bytes));
            if left == 0 {
                let est = self.estimate_bps().max(1);
                let drains = (bytes.saturating_mul(8_000_000) / est / 4).min(KEYFRAME_HOLD_MAX_US);
                self.probe_hold_until = self.probe_hold_until.max(now + drains);
            }
        }
        self.sent_window.push_back((now, size, probe.is_some()));
        self.sent_window_bytes.0 += size as u64;
        if probe.is_some() {
            self.sent_window_bytes.1 += size as u64;
        }
        while let Some(&(t, old, was_probe)) = self.sent_window.front()
            && now.saturating_sub(t) > SENT_WINDOW_US
        {
            self.sent_window.pop_front();
            self.sent_window_bytes.0 -= old as u64;
            if was_probe {
                self.sent_window_bytes.1 -= old as u64;
            }
        }
        if let Some(id) = probe
            && let Some((_, p)) = self.probes.iter_mut().find(|(i, _)| *i == id)
        {
            p.sent_packets += 1;
            p.sent_bytes += size as u64;
            if p.first_send.is_none() {
                p.first_send = Some(now);
            }
            p.last_send = now;
            p.last_send_size = size;
        }
    }

    /// The application's sending rate a probe result is measured against
    /// (`session.bwe.probe-trust`): over the last half second, and during
    /// the first `APP_RATE_SETTLE_US` no more than its average since the
    /// first packet (a backlog drained after a slow start is not its rate).
    fn app_rate_seen(&self, now: u64) -> f64 {
        let window = self.app_sending_bps(now) as f64;
        match self.first_sent_at {
            Some(first) if now.saturating_sub(first) < APP_RATE_SETTLE_US => {
                let span = now.saturating_sub(first).max(SENT_WINDOW_US);
                window.min(self.app_bytes_total as f64 * 8e6 / span as f64)
            }
            _ => window,
        }
    }

    // r[impl session.bwe.probe-keyframe]
    /// A keyframe of `bytes` on the wire was queued in the pacer behind
    /// `queued` bytes: no probe until it has left the pacer (its last byte
    /// sent, as [`Bwe::on_sent`] reports) and then a quarter of its time
    /// at the estimate, the most a bottleneck near the estimate still
    /// holds of it (a probe behind a keyframe still in a bottleneck's
    /// queue adds to what the keyframe filled).
    pub fn on_keyframe(&mut self, bytes: u64, queued: u64) {
        let left = queued + bytes;
        let prev = self.keyframe_left.map_or(0, |k| k.0);
        self.keyframe_left = Some((left.max(prev), bytes));
    }

    /// The headroom probe due now, if any (`session.bwe.headroom`).
    fn headroom_probe(&self, now: u64, est: u64) -> Option<u64> {
        let ceiling = self.probe_ceiling_bps.min(self.config.max_bps);
        let settled = self
            .first_sent_at
            .is_some_and(|t| now.saturating_sub(t) >= INITIAL_PROBING_US);
        if ceiling == 0 || !settled || now < self.headroom_blocked_until {
            return None;
        }
        // The application's rate as it is on the wire (parity, headers).
        let app = self.app_sending_bps(now).max(1);
        if est < HEADROOM_RATIO.saturating_mul(app) {
            return None;
        }
        let bps = (2 * est).min(ceiling);
        if bps <= est + est / 5 {
            return None;
        }
        let since = self.since_last_probe(now);
        let first = self.stats.headroom_probes == 0;
        (self.calm(now) && (first || self.headroom_chain || since >= PROBE_INTERVAL_US))
            .then_some(bps)
    }

    /// Microseconds since the last probe started (`u64::MAX`: none yet).
    fn since_last_probe(&self, now: u64) -> u64 {
        self.last_probe
            .map_or(u64::MAX, |l| now.saturating_sub(l.at))
    }

    /// No overuse for a probe interval: probing may resume.
    fn calm(&self, now: u64) -> bool {
        self.last_overuse_at
            .is_none_or(|t| now.saturating_sub(t) > PROBE_INTERVAL_US)
    }

    /// The application submitted a frame at `now` (any kind). An
    /// application that reports its frames is quiet while it sends fewer
    /// than five a second (`session.bwe.quiet`).
    pub fn on_frame(&mut self, now: u64) {
        self.frame_times.push_back(now);
        while self
            .frame_times
            .front()
            .is_some_and(|&t| now.saturating_sub(t) > QUIET_WINDOW_US)
        {
            self.frame_times.pop_front();
        }
    }

    // r[impl session.bwe.quiet]
    /// The application is quiet: it reports its frames, has been sending
    /// for the initial probing time, and sent fewer than `QUIET_FRAMES` in
    /// the last second. Nothing is worth probing for then: the probes
    /// would be most of what goes on the wire, and the estimate holds
    /// (nothing is sent that could lower it).
    pub fn quiet(&self, now: u64) -> bool {
        let settled = self
            .first_sent_at
            .is_some_and(|t| now.saturating_sub(t) >= INITIAL_PROBING_US);
        let recent = self
            .frame_times
            .iter()
            .rev()
            .take_while(|&&t| now.saturating_sub(t) <= QUIET_WINDOW_US)
            .count();
        // Frames reported at all (the window keeps the latest one).
        !self.frame_times.is_empty() && settled && recent < QUIET_FRAMES
    }

    // r[impl session.bwe.probe]
    /// The next probe cluster to send, if one is due. `app_idle`: the
    /// sender has nothing queued (probes go between frames).
    pub fn poll_probe(&mut self, now: u64) -> Option<ProbeCluster> {
        if !self.config.probing
            || now < self.probe_hold_until
            || self.keyframe_left.is_some()
            || self.quiet(now)
        {
            return None;
        }
        // One cluster at a time.
        if self.probes.iter().any(|(_, p)| !p.done_sending) {
            return None;
        }
        let est = self.estimate_bps();
        let cap = self.probe_cap_bps(now);
        // Nothing to learn above what the application could use, nor from
        // a probe barely above the estimate.
        let worth = |bps: u64| bps.min(cap) > est + est / 5;
        self.pending_probes.retain(|&bps| worth(bps));
        if self.pending_probes.is_empty()
            && worth(est * 2)
            && self.since_last_probe(now) >= self.probe_interval_us
            && self.calm(now)
        {
            self.pending_probes.push_back(est * 2);
        }
        // r[impl session.bwe.headroom]
        let (bps, headroom) = match self.pending_probes.pop_front() {
            Some(bps) => (bps.min(cap), false),
            None => (self.headroom_probe(now, est)?, true),
        };
        let bps = bps.clamp(self.config.min_bps, self.config.max_bps);
        self.headroom_chain = false;
        let id = self.next_probe_id;
        self.next_probe_id = self.next_probe_id.wrapping_add(1).max(1);
        self.last_probe = Some(LastProbe { id, bps, at: now });
        self.stats.probes += 1;
        self.probes.push((
            id,
            ProbeStats {
                bps,
                headroom,
                ..Default::default()
            },
        ));
        if self.probes.len() > 8 {
            self.probes.remove(0);
        }
        let mut bytes = (bps * PROBE_US / 8 / 1_000_000).max(PROBE_MIN_PACKETS as u64 * 1200);
        if headroom {
            self.stats.headroom_probes += 1;
            bytes = bytes.max(HEADROOM_MIN_BYTES);
        }
        Some(ProbeCluster {
            id,
            bps,
            bytes,
            min_packets: PROBE_MIN_PACKETS,
            carries_data: headroom,
        })
    }

    /// The sender finished sending cluster `id`.
    pub fn probe_sent(&mut self, id: u32) {
        if let Some((_, p)) = self.probes.iter_mut().find(|(i, _)| *i == id) {
            p.done_sending = true;
        }
    }

    // r[impl session.bwe.feedback]
    /// The client's report: arrivals in packet-number order (`at_us` on
    /// the client's clock), `now` on the sender's clock. Packets the
    /// estimator never saw sent (too old, handshake) are ignored.
    pub fn on_feedback(&mut self, arrivals: &[Arrival], now: u64) {
        let mut lost = 0u32;
        let mut got = 0u32;
        for a in arrivals {
            let Some(i) = self.index_of(a.pn) else {
                continue;
            };
            let s = self.history[i];
            if s.reported {
                continue;
            }
            self.history[i].reported = true;
            match a.at_us {
                // r[impl session.bwe.outage]
                // A loss is held back while it may be part of an outage:
                // a run of losses, nothing arriving between them.
                None => {
                    let run = self.loss_run.get_or_insert((s.at, s.at, 0));
                    run.1 = s.at;
                    run.2 += 1;
                }
                Some(at) => {
                    // The run ended: an outage if its packets were sent
                    // over `OUTAGE_US`, otherwise ordinary losses.
                    if let Some((first, last, n)) = self.loss_run.take() {
                        if last.saturating_sub(first) >= OUTAGE_US {
                            self.stats.outage_packets += n as u64;
                        } else {
                            lost += n;
                        }
                    }
                    got += 1;
                    self.trend.packet(s.at, at);
                    self.acked.push_back((at, s.size, s.probe.is_some()));
                }
            }
            if let Some(id) = s.probe {
                self.probe_report(id, s, a.at_us);
            }
        }
        self.update_acked();
        self.loss_window.0 += lost;
        self.loss_window.1 += got + lost;
        let start = *self.loss_window_start.get_or_insert(now);
        self.delay_update(now);
        if self.loss_window.1 >= LOSS_WINDOW_PACKETS && now.saturating_sub(start) >= 100_000 {
            let (l, n) = self.loss_window;
            self.loss_update(l as f64 / n as f64, now);
            self.loss_window = (0, 0);
            self.loss_window_start = Some(now);
        }
        self.finish_probes(now);
    }

    fn index_of(&self, pn: u64) -> Option<usize> {
        let first = self.history.front()?.pn;
        let guess = pn.checked_sub(first)? as usize;
        // Packet numbers of probes and data are dense but other messages
        // (control) may not be in the history: search near the guess.
        let i = guess.min(self.history.len() - 1);
        if self.history[i].pn == pn {
            return Some(i);
        }
        self.history.binary_search_by_key(&pn, |s| s.pn).ok()
    }

    fn update_acked(&mut self) {
        let Some(&(newest, _, _)) = self.acked.iter().max_by_key(|(t, _, _)| *t) else {
            return;
        };
        while self
            .acked
            .front()
            .is_some_and(|&(t, _, _)| newest.saturating_sub(t) > ACKED_WINDOW_US)
        {
            self.acked.pop_front();
        }
        let oldest = self
            .acked
            .iter()
            .map(|&(t, _, _)| t)
            .min()
            .unwrap_or(newest);
        let span = newest - oldest;
        if span >= 50_000 {
            let bytes: u64 = self.acked.iter().map(|&(_, s, _)| s as u64).sum();
            let app: u64 = self
                .acked
                .iter()
                .filter(|a| !a.2)
                .map(|&(_, s, _)| s as u64)
                .sum();
            self.acked_app_bps = Some(app as f64 * 8.0 * 1e6 / span as f64);
            let mut rate = bytes as f64 * 8.0 * 1e6 / span as f64;
            // A sender that is often idle (the application sends less than
            // the path carries) shows the path's rate only while it sends:
            // take the busiest recent 50 ms when it is higher.
            let recent = self
                .acked
                .iter()
                .filter(|&&(t, _, _)| newest - t <= PEAK_WINDOW_US);
            let (n, b, first) = recent.fold((0u32, 0u64, newest), |(n, b, f), &(t, s, _)| {
                (n + 1, b + s as u64, f.min(t))
            });
            if n >= 10 && newest > first {
                let peak = (b as f64) * 8.0 * 1e6 / (newest - first).max(PEAK_WINDOW_US / 2) as f64;
                self.peaks.push_back((newest, peak));
            }
            while self
                .peaks
                .front()
                .is_some_and(|&(t, _)| newest.saturating_sub(t) > PEAK_KEEP_US)
            {
                self.peaks.pop_front();
            }
            self.acked_avg_bps = Some(rate);
            let peak = self.peaks.iter().map(|p| p.1).fold(0.0, f64::max);
            rate = rate.max(peak);
            self.acked_bps = Some(rate);
        }
    }

    // r[impl session.bwe.delay]
    fn delay_update(&mut self, now: u64) {
        let dt = self
            .last_update
            .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1e6)
            .min(1.0);
        self.last_update = Some(now);
        match self.trend.usage() {
            Usage::Over => {
                let can = self
                    .last_decrease
                    .is_none_or(|t| now.saturating_sub(t) >= 200_000);
                if can {
                    let base = self.acked_bps.unwrap_or(self.delay_bps);
                    let new = (BETA * base).min(self.delay_bps);
                    self.delay_bps = new.max(self.config.min_bps as f64);
                    if let Some(acked) = self.acked_bps {
                        self.capacity = Some(match self.capacity {
                            None => (acked, 0.4),
                            Some((avg, var)) => {
                                let a = 0.95 * avg + 0.05 * acked;
                                let norm = avg.max(1.0);
                                let v = 0.95 * var + 0.05 * ((avg - acked) / norm).powi(2);
                                (a, v.clamp(0.0004, 2.5))
                            }
                        });
                        // Capacity far off: forget it.
                        if let Some((avg, var)) = self.capacity
                            && (acked - avg).abs() > 3.0 * (var * avg * avg).sqrt()
                        {
                            self.capacity = Some((acked, 0.4));
                        }
                    }
                    self.last_decrease = Some(now);
                    self.last_overuse_at = Some(now);
                    self.stats.overuses += 1;
                    // Pending probes would overshoot a congested path.
                    self.pending_probes.clear();
                }
                self.state = RateState::Hold;
            }
            Usage::Under => self.state = RateState::Hold,
            Usage::Normal => {
                if self.state == RateState::Hold {
                    self.state = RateState::Increase;
                } else {
                    let near = self.capacity.is_some_and(|(avg, var)| {
                        let sd = (var * avg * avg).sqrt();
                        (self.delay_bps - avg).abs() <= 3.0 * sd
                    });
                    let new = if near {
                        // About one packet per response time.
                        self.delay_bps + 1200.0 * 8.0 / 0.2 * dt
                    } else {
                        self.delay_bps * (1.0 + MULT_INCREASE).powf(dt)
                    };
                    // No large increase without evidence the path carries
                    // it, nor above what the application could use (the
                    // probes' cap): an estimate above the path's capacity
                    // paces keyframes faster than the path drains.
                    let cap = self
                        .acked_avg_bps
                        .map_or(f64::MAX, |a| 1.5 * a + 10_000.0)
                        .min(self.probe_cap_bps(now) as f64)
                        .max(self.delay_bps);
                    self.delay_bps = new.min(cap);
                }
            }
        }
        self.delay_bps = self
            .delay_bps
            .clamp(self.config.min_bps as f64, self.config.max_bps as f64);
    }

    // r[impl session.bwe.loss]
    fn loss_update(&mut self, loss: f64, now: u64) {
        self.stats.loss_ppm = (loss * 1e6) as u64;
        let can_decrease = self
            .last_loss_decrease
            .is_none_or(|t| now.saturating_sub(t) >= 200_000);
        if loss > 0.10 && can_decrease {
            self.last_loss_decrease = Some(now);
            let base = self.loss_bps.min(self.delay_bps);
            let mut next = base * (1.0 - 0.5 * loss);
            // What arrived is what the path carried: under heavy loss the
            // estimate goes no higher than the acknowledged rate, so a
            // capacity drop is followed in one step, not several.
            if let Some(acked) = self.acked_avg_bps {
                next = next.min(acked);
            }
            self.loss_bps = next.max(self.config.min_bps as f64);
            self.stats.loss_decreases += 1;
        } else if loss < 0.02 {
            // Grow back towards the delay-based estimate, never past it.
            let grown = self.loss_bps * 1.05;
            self.loss_bps = grown.min(self.delay_bps.max(self.loss_bps));
            if self.loss_bps < self.delay_bps && grown >= self.delay_bps {
                self.loss_bps = self.delay_bps;
            }
        }
    }

    fn probe_report(&mut self, id: u32, s: Sent, at: Option<u64>) {
        let Some((_, p)) = self.probes.iter_mut().find(|(i, _)| *i == id) else {
            return;
        };
        p.reported += 1;
        if let Some(at) = at {
            p.recv_packets += 1;
            if p.arrivals.len() < MAX_PROBE_ARRIVALS {
                p.arrivals.push((at, s.size));
            }
        }
    }

    fn finish_probes(&mut self, now: u64) {
        let mut results = Vec::new();
        self.probes.retain_mut(|(id, p)| {
            if !(p.done_sending && p.reported >= p.sent_packets && p.sent_packets > 0) {
                return true;
            }
            results.push((*id, std::mem::take(p)));
            false
        });
        for (p_id, mut p) in results {
            // At least 80% must have arrived.
            if (p.recv_packets as u64) * 5 < (p.sent_packets as u64) * 4 || p.recv_packets < 3 {
                if p.headroom {
                    self.headroom_blocked_until = now + HEADROOM_BACKOFF_US;
                }
                continue;
            }
            let send_us = p
                .last_send
                .saturating_sub(p.first_send.unwrap_or(p.last_send));
            let Some(recv_bps) = p.recv_bps() else {
                continue;
            };
            if send_us == 0 {
                continue;
            }
            // The pacer sends a cluster in bursts on its timer's ticks, so
            // a rate from its first to its last send reads high; it sent at
            // most at the cluster's rate (less when the host fell behind).
            let send_bps = ((p.sent_bytes - p.last_send_size as u64) as f64 * 8e6 / send_us as f64)
                .min(p.bps as f64);
            // r[impl session.bwe.probe-valid]
            // Arrivals far faster than the cluster was sent were stamped
            // in a batch (the receiver was busy and handled a backlog at
            // once), not spaced by the path: no result (libwebrtc's
            // probe estimator discards these the same way).
            if recv_bps > PROBE_MAX_RECV_RATIO * send_bps {
                self.stats.probes_invalid += 1;
                continue;
            }
            let mut result = send_bps.min(recv_bps);
            let saturated = recv_bps < 0.9 * send_bps;
            if saturated {
                // Saturated. 0.9×, not GCC's 0.95×: the client stamps an
                // arrival when it handles the datagram, and a batch it
                // handles at once reads as arriving together (through a
                // 200 Mbit/s tbf the later half read 10% high).
                result = 0.9 * recv_bps;
            }
            // A cluster measures at most the rate it was sent for: a higher
            // figure is the bucket's burst at its start, not capacity.
            result = result.min(p.bps as f64);
            // r[impl session.bwe.probe-trust]
            // A cluster smaller than a shaper's bucket passes it at its own
            // rate whatever the path carries (a 30 KB cluster through a
            // 32 KB `tbf` bucket reads as unsaturated at twice the path's
            // rate): its result lifts the estimate no further than
            // `PROBE_TRUST` times the rate the application's own data was
            // sent and arrived at, so the estimate climbs in steps the
            // following keyframes (and the delay detector) confirm. The
            // initial probes, sent before the application's rate is known,
            // are capped only when they read saturated.
            let mut capped = false;
            let initial = match (p.first_send, self.first_sent_at) {
                (Some(a), Some(b)) => a.saturating_sub(b) < INITIAL_PROBING_US,
                _ => false,
            };
            if p.sent_bytes < PROBE_TRUSTED_BYTES
                && (!initial || saturated)
                && let Some(seen) = self.acked_app_bps.map(|a| a.min(self.app_rate_seen(now)))
            {
                let bound = (seen * PROBE_TRUST).max(self.delay_bps);
                if result > bound {
                    result = bound;
                    capped = true;
                }
            }
            // An unsaturated result leads on to a headroom probe at once
            // (when the ordinary ones stop at twice the application's
            // rate); a headroom probe that found a bottleneck stops them.
            self.headroom_chain = !saturated && !capped;
            if p.headroom && !self.headroom_chain {
                self.headroom_blocked_until = now + HEADROOM_BACKOFF_US;
            }
            if p.headroom {
                self.proven_bps = result;
            }
            self.stats.probe_results += 1;
            if result > self.delay_bps {
                self.delay_bps = result.min(self.config.max_bps as f64);
                self.state = RateState::Hold;
            }
            if result > self.loss_bps {
                self.loss_bps = result.min(self.config.max_bps as f64);
            }
            // A cluster started after this one already went as high as a
            // further probe would (the initial 6× after the 3×): its own
            // result decides.
            let covered = self
                .last_probe
                .is_some_and(|l| l.id != p_id && l.bps as f64 >= 1.8 * result);
            if covered {
                continue;
            }
            // The link was not saturated: probe further.
            if capped {
                // Not saturated as far as is known: the next periodic
                // probe comes sooner, to confirm the next step.
                self.probe_interval_us = PROBE_CONFIRM_INTERVAL_US;
            } else if result > 0.7 * p.bps as f64 && (p.bps as f64) < self.config.max_bps as f64 {
                self.pending_probes.clear();
                self.pending_probes.push_back((2.0 * result) as u64);
                // If the application's rate holds that probe back, the
                // next periodic one comes sooner, once it followed.
                self.probe_interval_us = PROBE_INTERVAL_US / 3;
            } else {
                self.probe_interval_us = PROBE_INTERVAL_US;
            }
        }
    }
}
