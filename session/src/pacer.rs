//! The pacer (`session.pacing.*`): datagrams leave on a schedule at the
//! pacing rate instead of at line rate.
//!
//! This is the sans-I/O core: a FIFO of queued datagrams and a token bucket
//! filled at the pacing rate. The caller asks `Pacer::pop` for the next
//! datagram that may leave at `now` and `Pacer::next_at` for when the next
//! one may; time is microseconds on the caller's clock. Between frames, a
//! probe cluster of padding may run at a higher rate (see
//! [`crate::bwe::Bwe::poll_probe`]).

use std::collections::VecDeque;

use crate::bwe::ProbeCluster;

/// Settings of the pacer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingConfig {
    /// Pace datagrams on lossy links. Off: every datagram leaves at once
    /// (line rate), as before pacing existed.
    pub enabled: bool,
    /// Largest burst after an idle period, as time at the pacing rate (the
    /// bucket's size; never below one batch).
    pub burst: std::time::Duration,
    /// Datagrams a release waits for once the bucket is spent (all that
    /// is due at a wake-up leaves in one flush: one system call on a
    /// batching link).
    pub batch: usize,
    /// Queue latency budget: when a frame is submitted while the queue
    /// holds more than this at the pacing rate, the overrun is counted and
    /// reported, and `send_frame` waits until the queue is back within it.
    pub latency_budget: std::time::Duration,
    /// How fast a frame may leave where the path has headroom: the
    /// estimator's headroom probes (`session.bwe.headroom`) look for
    /// capacity above twice the application's rate up to this rate (an
    /// interface's or a LAN's speed). `0`: probes stay within twice the
    /// application's rate.
    pub ceiling_bps: u64,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            enabled: true,
            burst: std::time::Duration::from_millis(2),
            batch: 8,
            latency_budget: std::time::Duration::from_millis(150),
            ceiling_bps: crate::bwe::DEFAULT_CEILING_BPS,
        }
    }
}

/// What the pacer lets out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Release<T> {
    /// A queued datagram.
    Item(T),
    /// A queued datagram sent as part of probe cluster `probe` (one that
    /// carries data: [`ProbeCluster::carries_data`]).
    Carried {
        /// The datagram.
        item: T,
        /// The cluster.
        probe: u32,
    },
    /// A padding datagram of this many bytes for probe cluster `id`.
    Padding {
        /// Bytes on the wire.
        size: usize,
        /// The cluster.
        probe: u32,
    },
}

#[derive(Debug)]
struct Probe {
    cluster: ProbeCluster,
    sent_bytes: u64,
    sent_packets: u32,
}

/// The pacer core (see the module docs).
#[derive(Debug)]
pub(crate) struct Pacer<T> {
    config: PacingConfig,
    rate_bps: u64,
    tokens: f64,
    last: Option<u64>,
    queue: VecDeque<(T, usize, u64)>,
    queued_bytes: u64,
    probe: Option<Probe>,
    padding_size: usize,
}

// r[impl session.pacing.rate]
impl<T> Pacer<T> {
    pub(crate) fn new(config: PacingConfig, rate_bps: u64, padding_size: usize) -> Self {
        Pacer {
            config,
            rate_bps: rate_bps.max(8_000),
            tokens: 0.0,
            last: None,
            queue: VecDeque::new(),
            queued_bytes: 0,
            probe: None,
            padding_size: padding_size.max(1),
        }
    }

    pub(crate) fn set_rate(&mut self, now: u64, rate_bps: u64) {
        self.refill(now);
        self.rate_bps = rate_bps.max(8_000);
    }

    fn current_rate(&self) -> u64 {
        match &self.probe {
            Some(p) => p.cluster.bps.max(self.rate_bps),
            None => self.rate_bps,
        }
    }

    // r[impl session.pacing.burst]
    /// The bucket's size in bytes: `burst` at the current rate, at least
    /// one batch of full datagrams.
    fn cap(&self) -> f64 {
        let burst = self.current_rate() as f64 / 8.0 * self.config.burst.as_secs_f64();
        burst.max((self.config.batch.max(1) * self.padding_size) as f64)
    }

    fn refill(&mut self, now: u64) {
        let last = *self.last.get_or_insert(now);
        if now > last {
            let add = (now - last) as f64 * self.current_rate() as f64 / 8e6;
            self.tokens = (self.tokens + add).min(self.cap());
            self.last = Some(now);
        }
    }

    /// Queue one datagram of `size` bytes on the wire.
    pub(crate) fn push(&mut self, item: T, size: usize, now: u64) {
        if self.queue.is_empty() {
            // An idle sender gets at most a burst, not the time since.
            self.refill(now);
        }
        self.queue.push_back((item, size, now));
        self.queued_bytes += size as u64;
    }

    /// Start a probe cluster (only when nothing is queued).
    pub(crate) fn start_probe(&mut self, cluster: ProbeCluster, now: u64) -> bool {
        if !self.queue.is_empty() || self.probe.is_some() {
            return false;
        }
        self.refill(now);
        self.tokens = self.tokens.min(0.0);
        self.probe = Some(Probe {
            cluster,
            sent_bytes: 0,
            sent_packets: 0,
        });
        true
    }

    /// The probe cluster that is running, if any.
    pub(crate) fn probing(&self) -> Option<u32> {
        self.probe.as_ref().map(|p| p.cluster.id)
    }

    /// The next release allowed at `now`, if any. A probe cluster ends
    /// (returned as `Some(id)` in `ended`) when it sent its bytes or when
    /// frame data arrives.
    pub(crate) fn pop(&mut self, now: u64, ended: &mut Option<u32>) -> Option<Release<T>> {
        self.refill(now);
        if let Some(p) = &self.probe
            && ((!self.queue.is_empty() && !p.cluster.carries_data)
                || (p.sent_bytes >= p.cluster.bytes && p.sent_packets >= p.cluster.min_packets))
        {
            *ended = Some(p.cluster.id);
            self.probe = None;
        }
        if self.tokens <= 0.0 {
            return None;
        }
        if let Some((item, size, _)) = self.queue.pop_front() {
            self.tokens -= size as f64;
            self.queued_bytes -= size as u64;
            if let Some(p) = self.probe.as_mut() {
                // A cluster that carries data (any other ended above).
                p.sent_bytes += size as u64;
                p.sent_packets += 1;
                return Some(Release::Carried {
                    item,
                    probe: p.cluster.id,
                });
            }
            return Some(Release::Item(item));
        }
        let p = self.probe.as_mut()?;
        p.sent_bytes += self.padding_size as u64;
        p.sent_packets += 1;
        self.tokens -= self.padding_size as f64;
        Some(Release::Padding {
            size: self.padding_size,
            probe: p.cluster.id,
        })
    }

    // r[impl session.pacing.release]
    /// Bytes a release waits for once the bucket is spent: a batch of full
    /// datagrams. (Waiting for more, such as a millisecond's worth at
    /// 150-200 Mbit/s, would mean fewer wake-ups, but each release on top
    /// of the bucket then fills a shallow bottleneck queue further: the
    /// real-path case (b) went from 13-17 drops to 106.)
    fn quantum(&self) -> f64 {
        (self.config.batch.max(1) * self.padding_size) as f64
    }

    /// When the next release is allowed (`None`: nothing to send).
    pub(crate) fn next_at(&self, now: u64) -> Option<u64> {
        if self.queue.is_empty() && self.probe.is_none() {
            return None;
        }
        // Wait for a whole quantum (or all that is queued, or the bucket's
        // size if smaller): releasing each datagram as soon as its own
        // tokens arrive would cost a wake-up and a system call per datagram.
        let quantum = self.quantum();
        let queued = if self.probe.is_some() {
            quantum
        } else {
            self.queued_bytes as f64
        };
        let want = quantum.min(queued).min(self.cap()).max(1.0);
        if self.tokens >= want {
            return Some(now);
        }
        let last = self.last.unwrap_or(now);
        let need = want - self.tokens;
        let wait = (need * 8e6 / self.current_rate() as f64).ceil() as u64;
        Some((last + wait).max(now))
    }

    /// Whether anything waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    // r[impl session.pacing.budget]
    /// How long the queue takes to drain at the pacing rate, µs.
    pub(crate) fn queue_delay_us(&self) -> u64 {
        self.queued_bytes * 8_000_000 / self.rate_bps.max(1)
    }

    /// Bytes waiting.
    pub(crate) fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// The budget, µs.
    pub(crate) fn budget_us(&self) -> u64 {
        self.config.latency_budget.as_micros() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(p: &mut Pacer<u32>, until: u64, step: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        let mut t = 0;
        while t <= until {
            let mut ended = None;
            while let Some(r) = p.pop(t, &mut ended) {
                if let Release::Item(i) | Release::Carried { item: i, .. } = r {
                    out.push((t, i));
                }
            }
            t += step;
        }
        out
    }

    // r[verify session.pacing.rate]
    #[test]
    fn a_burst_of_datagrams_leaves_at_the_pacing_rate() {
        // 10 Mbit/s = 1250 bytes per ms; 1000 datagrams of 1250 bytes.
        let mut p = Pacer::new(PacingConfig::default(), 10_000_000, 1250);
        for i in 0..1000 {
            p.push(i, 1250, 0);
        }
        assert_eq!(p.queue_delay_us(), 1_000_000);
        let out = drain(&mut p, 2_000_000, 1000);
        assert_eq!(out.len(), 1000);
        // Everything went out in about a second (plus the initial bucket),
        // never faster than the rate plus the bucket.
        let last = out.last().unwrap().0;
        assert!((900_000..=1_010_000).contains(&last), "last at {last}");
        for w in (0..1_000_000).step_by(100_000) {
            let n = out
                .iter()
                .filter(|(t, _)| (w..w + 100_000).contains(t))
                .count();
            assert!(n <= 100 + 8, "{n} datagrams in 100 ms window at {w}");
        }
    }

    // r[verify session.pacing.burst]
    #[test]
    fn the_initial_burst_is_bounded() {
        let mut p = Pacer::new(PacingConfig::default(), 100_000_000, 1250);
        // Idle for a second, then a frame of 500 datagrams at once.
        let mut ended = None;
        assert!(p.pop(0, &mut ended).is_none());
        for i in 0..500 {
            p.push(i, 1250, 1_000_000);
        }
        let mut n = 0;
        while p.pop(1_000_000, &mut ended).is_some() {
            n += 1;
        }
        // 2 ms at 100 Mbit/s = 25 KB = 20 datagrams (+1 for the sign).
        assert!(n <= 21, "{n} datagrams in the first burst");
        assert!(n >= 8, "at least a batch");
        // Then the next release waits for a whole batch: 8 datagrams of
        // 1250 bytes at 100 Mbit/s take 800 µs (plus what the last one
        // overdrew, at most one datagram: 100 µs).
        let next = p.next_at(1_000_000).unwrap();
        assert!((1_000_700..=1_000_900).contains(&next), "next at {next}");
        let mut m = 0;
        while p.pop(next, &mut ended).is_some() {
            m += 1;
        }
        assert!((8..=9).contains(&m), "{m} datagrams in the next batch");
    }

    /// Datagrams released at each wake-up (µs after the frame) when the
    /// caller sleeps until `next_at` (never early): a frame of `n`
    /// datagrams queued after an idle second (a full bucket).
    fn releases(rate: u64, n: u32, until: u64) -> Vec<(u64, usize)> {
        let mut p = Pacer::new(PacingConfig::default(), rate, 1250);
        let (mut out, mut t, mut ended) = (Vec::new(), 1_000_000, None);
        assert!(p.pop(0, &mut ended).is_none());
        for i in 0..n {
            p.push(i, 1250, t);
        }
        while let Some(at) = p.next_at(t) {
            t = at;
            if t > 1_000_000 + until {
                break;
            }
            let mut m = 0;
            while p.pop(t, &mut ended).is_some() {
                m += 1;
            }
            out.push((t - 1_000_000, m));
        }
        out
    }

    // r[verify session.pacing.release]
    #[test]
    fn a_release_waits_for_a_batch_and_takes_all_that_is_due() {
        // 10, 150 Mbit/s and 1 Gbit/s: after the bucket (2 ms, but at least
        // a batch), every release on schedule is one batch (8 datagrams,
        // plus at most one the last overdrew), a batch's time apart.
        for (rate, bucket) in [(10_000_000u64, 8), (150_000_000, 30), (1_000_000_000, 200)] {
            let r = releases(rate, 1000, 1_000_000);
            assert!(
                (bucket..=bucket + 1).contains(&r[0].1),
                "{rate}: {:?}",
                r[0]
            );
            let gap = 8 * 1250 * 8_000_000 / rate;
            for w in r[1..r.len() - 1].windows(2) {
                assert!((8..=9).contains(&w[1].1), "{rate}: {:?}", &r[..10]);
                let d = w[1].0 - w[0].0;
                assert!(d >= gap * 9 / 10 && d <= gap * 12 / 10, "{rate}: {d} µs");
            }
            if rate >= 150_000_000 {
                // 1000 datagrams take well under the second simulated.
                assert_eq!(r.iter().map(|r| r.1).sum::<usize>(), 1000, "{rate}");
            }
        }
        // A late wake-up releases everything the bucket allows at once
        // (one flush), never more than the bucket.
        let mut p = Pacer::new(PacingConfig::default(), 100_000_000, 1250);
        let mut ended = None;
        assert!(p.pop(0, &mut ended).is_none());
        for i in 0..500 {
            p.push(i, 1250, 1_000_000);
        }
        while p.pop(1_000_000, &mut ended).is_some() {}
        // 5 ms late: 50 datagrams' worth accrued, the bucket holds 20.
        let mut m = 0;
        while p.pop(1_005_000, &mut ended).is_some() {
            m += 1;
        }
        assert!((20..=21).contains(&m), "{m} datagrams after a late wake-up");
    }

    #[test]
    fn probe_pads_only_between_frames_and_ends_on_data() {
        let mut p: Pacer<u32> = Pacer::new(PacingConfig::default(), 10_000_000, 1200);
        let c = ProbeCluster {
            id: 7,
            bps: 40_000_000,
            bytes: 12_000,
            min_packets: 5,
            carries_data: false,
        };
        assert!(p.start_probe(c, 0));
        let mut ended = None;
        let mut pads = 0;
        let mut t = 0;
        while ended.is_none() && t < 100_000 {
            while let Some(r) = p.pop(t, &mut ended) {
                assert!(matches!(r, Release::Padding { probe: 7, .. }));
                pads += 1;
            }
            t += 100;
        }
        assert_eq!(ended, Some(7));
        assert_eq!(pads, 10);
        // 12 kB at 40 Mbit/s takes 2.4 ms.
        assert!((2_000..=3_000).contains(&t), "{t}");
        // Data arriving ends a probe.
        assert!(p.start_probe(ProbeCluster { id: 8, ..c }, t));
        p.push(1, 1200, t);
        let mut ended = None;
        let r = p.pop(t + 10_000, &mut ended);
        assert_eq!(ended, Some(8));
        assert_eq!(r, Some(Release::Item(1)));
    }
}
