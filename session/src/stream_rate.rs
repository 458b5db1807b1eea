//! Rate control on stream links: the target bitrate from what the path
//! under a reliable link delivers (`session.bwe.stream.*`).
//!
//! Sans-I/O and deterministic: the host feeds it the link's
//! [`PathSample`]s (taken as each frame starts, so that they show the
//! backlog the frame joins); it answers with a target. Time is microseconds on the caller's clock.
//!
//! - **Measure.** Over windows of at least [`WINDOW_US`] it measures the
//!   delivery rate (acknowledged bytes over time).
//! - **Queue.** Each sample gives the time a byte committed now waits
//!   before the peer has it: the round trip above the least one (or the
//!   bytes in flight beyond one least round trip at the measured rate, the
//!   larger) plus the unsent bytes at that rate. The least value over a
//!   window is the *standing* queue: a keyframe's burst that drains before
//!   the next frame does not count, a backlog that persists does.
//! - **Down.** A standing queue above [`HIGH_US`] brings the target to
//!   below the delivery rate, low enough that the backlog drains within
//!   [`DRAIN_US`] (between half and 0.85 of the rate).
//! - **Up.** A standing queue below [`LOW_US`] lets the target grow
//!   multiplicatively ([`GROWTH_PER_S`]), probing with what the encoder
//!   makes, but only while the path delivered at least 60% of the target:
//!   an application-limited window (an encoder that uses less than its
//!   target) proves nothing about the path and raises nothing.
//! - Between the two thresholds the target holds.

use link_types::PathSample;

/// The shortest measurement window, µs.
pub(crate) const WINDOW_US: u64 = 100_000;
/// A standing queue above this brings the target down, µs.
pub(crate) const HIGH_US: u64 = 40_000;
/// A standing queue below this lets the target grow, µs.
pub(crate) const LOW_US: u64 = 10_000;
/// A backlog is planned to drain within this, µs.
pub(crate) const DRAIN_US: u64 = 500_000;
/// Growth of the target per second of empty queue.
pub(crate) const GROWTH_PER_S: f64 = 0.25;

/// Where a measurement window started.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at_us: u64,
    delivered: u64,
}

/// What the controller did, for the host's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StreamRateStats {
    /// Delivery rate of the last complete window, bit/s.
    pub delivered_bps: u64,
    /// Queue delay of the latest sample, µs.
    pub queue_delay_us: u64,
    /// Standing queue of the last complete window, µs.
    pub standing_queue_us: u64,
    /// Times the target came down for a standing queue.
    pub decreases: u64,
}

/// The stream-link controller (see the module's documentation).
#[derive(Debug, Clone)]
pub(crate) struct StreamRate {
    min_bps: u64,
    max_bps: u64,
    target: u64,
    win: Option<Mark>,
    /// The least queue delay seen in the current window, µs.
    win_min_queue: u64,
    /// Samples in the current window.
    win_samples: u32,
    /// Delivery rate of the last complete window, bit/s (0 before).
    rate_bps: u64,
    /// The least round trip seen, µs (where the link reports none).
    min_rtt_us: u64,
    stats: StreamRateStats,
}

impl StreamRate {
    /// A controller starting at `start_bps`, kept within `min..=max`.
    pub(crate) fn new(start_bps: u64, min_bps: u64, max_bps: u64) -> StreamRate {
        StreamRate {
            min_bps,
            max_bps,
            target: start_bps.clamp(min_bps, max_bps),
            win: None,
            win_min_queue: u64::MAX,
            win_samples: 0,
            rate_bps: 0,
            min_rtt_us: u64::MAX,
            stats: StreamRateStats::default(),
        }
    }

    /// The current target, bit/s.
    #[cfg(test)]
    pub(crate) fn target_bps(&self) -> u64 {
        self.target
    }

    /// What the controller measured and did.
    pub(crate) fn stats(&self) -> StreamRateStats {
        self.stats
    }

    /// The rate at which queued bytes are taken as leaving, bit/s: the
    /// larger of the measured and the transport's own rate (the larger
    /// makes the smaller delay, so a slow sample alone cannot fake a
    /// queue), never below the minimum target.
    fn drain_bps(&self, s: &PathSample) -> u64 {
        self.rate_bps
            .max(s.delivery_rate.saturating_mul(8))
            .max(self.min_bps)
            .max(1)
    }

    // r[impl session.bwe.stream.queue]
    /// How long a byte committed now waits before the peer has it, µs,
    /// beyond one least round trip.
    pub(crate) fn queue_delay_us(&self, s: &PathSample) -> u64 {
        let rtt = s.rtt.as_micros() as u64;
        let min_rtt = if s.min_rtt.is_zero() {
            self.min_rtt_us.min(rtt)
        } else {
            s.min_rtt.as_micros() as u64
        };
        let rate = self.drain_bps(s);
        let flight_us = s.in_flight_bytes.saturating_mul(8_000_000) / rate;
        let path = rtt
            .saturating_sub(min_rtt)
            .max(flight_us.saturating_sub(min_rtt));
        path + s.unsent_bytes.saturating_mul(8_000_000) / rate
    }

    /// One sample of the path, taken at `now_us` (before the next frame
    /// is sent). Returns the target, bit/s.
    pub(crate) fn on_sample(&mut self, now_us: u64, s: &PathSample) -> u64 {
        if !s.rtt.is_zero() {
            self.min_rtt_us = self.min_rtt_us.min(s.rtt.as_micros() as u64);
        }
        let q = self.queue_delay_us(s);
        self.stats.queue_delay_us = q;
        let Some(mark) = self.win else {
            self.start_window(now_us, s, q);
            return self.target;
        };
        self.win_min_queue = self.win_min_queue.min(q);
        self.win_samples += 1;
        let dt = now_us.saturating_sub(mark.at_us);
        if dt < WINDOW_US || self.win_samples < 2 {
            return self.target;
        }
        // r[impl session.bwe.stream.measure]
        let delivered = s.delivered_bytes.saturating_sub(mark.delivered);
        self.rate_bps = delivered.saturating_mul(8_000_000) / dt;
        self.stats.delivered_bps = self.rate_bps;
        let standing = self.win_min_queue;
        self.stats.standing_queue_us = standing;
        if standing > HIGH_US {
            // r[impl session.bwe.stream.down]
            // Send below the rate by enough that the backlog drains within
            // DRAIN_US: (rate - x) · DRAIN = standing · rate.
            let keep = 1.0 - standing as f64 / DRAIN_US as f64;
            let keep = keep.clamp(0.5, 0.85);
            let down = (self.rate_bps as f64 * keep) as u64;
            if down < self.target {
                self.target = down;
                self.stats.decreases += 1;
            }
        } else if standing < LOW_US && self.rate_bps * 10 >= self.target * 6 {
            // r[impl session.bwe.stream.up]
            let grow = 1.0 + GROWTH_PER_S * dt as f64 / 1e6;
            self.target = (self.target as f64 * grow) as u64 + 1;
        }
        self.target = self.target.clamp(self.min_bps, self.max_bps);
        self.start_window(now_us, s, q);
        self.target
    }

    fn start_window(&mut self, now_us: u64, s: &PathSample, q: u64) {
        self.win = Some(Mark {
            at_us: now_us,
            delivered: s.delivered_bytes,
        });
        self.win_min_queue = q;
        self.win_samples = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A TCP-like path for the tests: a bottleneck of `rate_bps` with a
    /// base round trip, a sender that puts whatever it is given into the
    /// kernel (unsent, then in flight up to a window), and delivery at the
    /// bottleneck's rate. Deterministic, stepped in 1 ms.
    struct Path {
        rate_bps: u64,
        base_rtt_us: u64,
        /// Bytes the kernel holds not yet sent.
        unsent: u64,
        /// Bytes sent and not yet delivered (queued at the bottleneck).
        in_flight: u64,
        delivered: u64,
        /// The most bytes in flight (a congestion window).
        cwnd: u64,
        /// Fractional bytes the bottleneck owes.
        credit: f64,
        now_us: u64,
    }

    impl Path {
        fn new(rate_bps: u64) -> Path {
            Path {
                rate_bps,
                base_rtt_us: 2_000,
                unsent: 0,
                in_flight: 0,
                delivered: 0,
                cwnd: 400_000,
                credit: 0.0,
                now_us: 0,
            }
        }

        fn push(&mut self, bytes: u64) {
            self.unsent += bytes;
            self.move_to_flight();
        }

        fn move_to_flight(&mut self) {
            let room = self.cwnd.saturating_sub(self.in_flight);
            let n = room.min(self.unsent);
            self.unsent -= n;
            self.in_flight += n;
        }

        fn step_ms(&mut self) {
            self.now_us += 1000;
            self.credit += self.rate_bps as f64 / 8.0 / 1000.0;
            let n = (self.credit as u64).min(self.in_flight);
            self.credit -= n as f64;
            if self.in_flight == 0 {
                // An idle bottleneck saves no credit.
                self.credit = self.credit.min(1500.0);
            }
            self.in_flight -= n;
            self.delivered += n;
            self.move_to_flight();
        }

        fn sample(&self) -> PathSample {
            let queue_us = self.in_flight * 8_000_000 / self.rate_bps;
            PathSample {
                delivered_bytes: self.delivered,
                delivery_rate: 0,
                rtt: Duration::from_micros(self.base_rtt_us + queue_us),
                min_rtt: Duration::from_micros(self.base_rtt_us),
                unsent_bytes: self.unsent,
                in_flight_bytes: self.in_flight,
                app_limited: self.unsent == 0 && self.in_flight < 3000,
            }
        }

        /// Latency a byte committed now would see, µs.
        fn latency_us(&self) -> u64 {
            self.base_rtt_us / 2 + (self.unsent + self.in_flight) * 8_000_000 / self.rate_bps
        }
    }

    /// An encoder at 30 frames a second that follows the target (every
    /// 30th frame a keyframe of 4 frames' size), for `secs` seconds.
    /// Returns the latencies each frame saw at its start, µs.
    fn run(c: &mut StreamRate, path: &mut Path, secs: u64, use_frac: f64) -> Vec<u64> {
        let mut lat = Vec::new();
        let start = path.now_us;
        for f in 0..secs * 30 {
            let t = c.on_sample(path.now_us, &path.sample());
            lat.push(path.latency_us());
            let mut bytes = (t as f64 * use_frac / 8.0 / 30.0) as u64;
            if f.is_multiple_of(30) {
                bytes *= 4;
            }
            path.push(bytes);
            while path.now_us < start + (f + 1) * 1_000_000 / 30 {
                path.step_ms();
            }
        }
        lat
    }

    fn p99(v: &[u64]) -> u64 {
        let mut v = v.to_vec();
        v.sort_unstable();
        v[(v.len() * 99 / 100).min(v.len() - 1)]
    }

    // r[verify session.bwe.stream.down]
    /// Asked for 8 Mbit/s over a 3 Mbit/s path, the target comes below the
    /// path within a second and the latency stays bounded afterwards.
    #[test]
    fn the_target_comes_down_to_a_narrow_path() {
        let mut c = StreamRate::new(8_000_000, 300_000, 100_000_000);
        let mut path = Path::new(3_000_000);
        let first = run(&mut c, &mut path, 1, 1.0);
        assert!(c.target_bps() < 3_000_000, "after 1 s: {}", c.target_bps());
        assert!(c.stats().decreases >= 1);
        assert!(p99(&first) > 100_000, "the first second queued: {first:?}");
        let after = run(&mut c, &mut path, 10, 1.0);
        let t = c.target_bps();
        assert!(
            (1_500_000..3_000_000).contains(&t),
            "after 11 s the target is {t}, the path 3 Mbit/s"
        );
        assert!(
            p99(&after[60..]) < 250_000,
            "p99 latency {} µs with the target following the path",
            p99(&after[60..])
        );
    }

    // r[verify session.bwe.stream.up]
    /// When the path widens the target finds the headroom again, growing
    /// while the queue stays empty.
    #[test]
    fn the_target_grows_back_when_the_path_widens() {
        let mut c = StreamRate::new(8_000_000, 300_000, 100_000_000);
        let mut path = Path::new(2_000_000);
        run(&mut c, &mut path, 5, 1.0);
        let narrow = c.target_bps();
        assert!(narrow < 2_000_000, "{narrow}");
        path.rate_bps = 20_000_000;
        run(&mut c, &mut path, 8, 1.0);
        let wide = c.target_bps();
        assert!(
            wide > 3 * narrow,
            "8 s after the path widened 10x the target went from {narrow} to {wide}"
        );
    }

    // r[verify session.bwe.stream.up]
    /// An encoder that uses a fifth of its target proves nothing about the
    /// path: the target does not grow.
    #[test]
    fn an_application_limited_sender_raises_nothing() {
        let mut c = StreamRate::new(4_000_000, 300_000, 100_000_000);
        let mut path = Path::new(50_000_000);
        run(&mut c, &mut path, 5, 0.2);
        assert_eq!(c.target_bps(), 4_000_000);
        // The same path and an encoder that uses its target: it grows.
        run(&mut c, &mut path, 3, 1.0);
        assert!(c.target_bps() > 6_000_000, "{}", c.target_bps());
    }

    // r[verify session.bwe.stream.queue]
    /// The queue delay: round trip above the least, or flight beyond one
    /// least round trip at the rate, plus the unsent bytes at the rate.
    #[test]
    fn the_queue_delay_counts_rtt_flight_and_unsent() {
        let mut c = StreamRate::new(8_000_000, 300_000, 100_000_000);
        c.rate_bps = 8_000_000; // 1 byte per µs
        let s = PathSample {
            delivered_bytes: 0,
            delivery_rate: 0,
            rtt: Duration::from_millis(30),
            min_rtt: Duration::from_millis(10),
            unsent_bytes: 5_000,
            in_flight_bytes: 0,
            app_limited: false,
        };
        assert_eq!(c.queue_delay_us(&s), 20_000 + 5_000);
        let s = PathSample {
            in_flight_bytes: 50_000,
            ..s
        };
        assert_eq!(c.queue_delay_us(&s), 40_000 + 5_000);
        // The transport's own rate, when higher, is the one used.
        let s = PathSample {
            delivery_rate: 2_000_000,
            ..s
        };
        assert_eq!(c.queue_delay_us(&s), 20_000 + 2_500);
    }

    // r[verify session.bwe.stream.measure]
    /// A standing queue counts, a burst that drains before the next sample
    /// does not: the window's least delay decides.
    #[test]
    fn a_burst_that_drains_does_not_bring_the_target_down() {
        let mut c = StreamRate::new(5_000_000, 300_000, 100_000_000);
        let quiet = PathSample {
            rtt: Duration::from_millis(2),
            min_rtt: Duration::from_millis(2),
            ..PathSample::default()
        };
        let busy = PathSample {
            unsent_bytes: 200_000,
            ..quiet
        };
        let mut delivered = 0;
        for i in 0..30u64 {
            delivered += 20_000;
            let s = if i % 3 == 0 { busy } else { quiet };
            c.on_sample(
                i * 34_000,
                &PathSample {
                    delivered_bytes: delivered,
                    ..s
                },
            );
        }
        assert_eq!(c.stats().decreases, 0);
        // Every sample busy: a standing queue, the target comes down.
        for i in 30..40u64 {
            delivered += 20_000;
            c.on_sample(
                i * 34_000,
                &PathSample {
                    delivered_bytes: delivered,
                    ..busy
                },
            );
        }
        assert!(c.stats().decreases >= 1);
        assert!(c.target_bps() < 5_000_000);
    }
}
