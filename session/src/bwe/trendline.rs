//! Delay-gradient overuse detection: packets are grouped by send time,
//! the change of one-way delay between groups is accumulated and smoothed,
//! and the slope of a least-squares line through the last few points is
//! compared against a threshold that adapts to the path's own noise.

use std::collections::VecDeque;

/// Packets sent within this many microseconds of a group's first packet
/// belong to that group.
pub(crate) const GROUP_US: u64 = 5_000;
/// Points in the regression window.
const WINDOW: usize = 20;
/// Smoothing of the accumulated delay.
const SMOOTHING: f64 = 0.9;
/// Gain applied to the slope before it is compared with the threshold.
const GAIN: f64 = 4.0;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
const THRESHOLD_START: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
/// Overuse must last this long (ms) before it is signalled.
const OVERUSE_MS: f64 = 10.0;

/// What the detector concluded from the latest group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Queues are not growing.
    Normal,
    /// Queues are growing: sending faster than the path carries.
    Over,
    /// Queues are draining.
    Under,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_send: u64,
    last_send: u64,
    last_arrival: u64,
}

/// Groups packets and runs the trendline detector over the groups.
#[derive(Debug)]
pub(crate) struct Trendline {
    current: Option<Group>,
    previous: Option<Group>,
    first_arrival: Option<u64>,
    accumulated: f64,
    smoothed: f64,
    points: VecDeque<(f64, f64)>,
    deltas: u32,
    threshold: f64,
    last_threshold_update: Option<u64>,
    time_over: f64,
    over_count: u32,
    prev_trend: f64,
    usage: Usage,
    /// The latest slope (ms of delay per ms), for stats and tests.
    pub(crate) trend: f64,
}

impl Trendline {
    pub(crate) fn new() -> Self {
        Trendline {
            current: None,
            previous: None,
            first_arrival: None,
            accumulated: 0.0,
            smoothed: 0.0,
            points: VecDeque::with_capacity(WINDOW + 1),
            deltas: 0,
            threshold: THRESHOLD_START,
            last_threshold_update: None,
            time_over: -1.0,
            over_count: 0,
            prev_trend: 0.0,
            usage: Usage::Normal,
            trend: 0.0,
        }
    }

    pub(crate) fn usage(&self) -> Usage {
        self.usage
    }

    /// One received packet (in send order): its send and arrival times in
    /// microseconds (each on its own side's clock).
    pub(crate) fn packet(&mut self, send: u64, arrival: u64) {
        match &mut self.current {
            None => {
                self.current = Some(Group {
                    first_send: send,
                    last_send: send,
                    last_arrival: arrival,
                })
            }
            Some(g) if send >= g.first_send && send - g.first_send <= GROUP_US => {
                g.last_send = g.last_send.max(send);
                g.last_arrival = g.last_arrival.max(arrival);
            }
            Some(g) if send < g.first_send => {
                // Sent before the group being built (reordered feedback): ignore.
            }
            Some(_) => {
                let done = self.current.take().expect("some");
                if let Some(prev) = self.previous {
                    self.group_delta(prev, done);
                }
                self.previous = Some(done);
                self.current = Some(Group {
                    first_send: send,
                    last_send: send,
                    last_arrival: arrival,
                });
            }
        }
    }

    fn group_delta(&mut self, prev: Group, cur: Group) {
        let send_delta = cur.last_send as f64 - prev.last_send as f64;
        let recv_delta = cur.last_arrival as f64 - prev.last_arrival as f64;
        if !(0.0..=3_000_000.0).contains(&recv_delta) {
            // Reordered groups or a long gap: start over on a clean slate.
            self.reset_points();
            return;
        }
        let delta_ms = (recv_delta - send_delta) / 1000.0;
        self.deltas = (self.deltas + 1).min(1000);
        self.accumulated += delta_ms;
        self.smoothed = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * self.accumulated;
        let first = *self.first_arrival.get_or_insert(cur.last_arrival);
        let t = (cur.last_arrival.saturating_sub(first)) as f64 / 1000.0;
        self.points.push_back((t, self.smoothed));
        if self.points.len() > WINDOW {
            self.points.pop_front();
        }
        if self.points.len() == WINDOW
            && let Some(s) = slope(&self.points)
        {
            self.trend = s;
        }
        self.detect(send_delta / 1000.0, cur.last_arrival);
    }

    fn reset_points(&mut self) {
        self.points.clear();
        self.accumulated = 0.0;
        self.smoothed = 0.0;
        self.first_arrival = None;
        self.trend = 0.0;
    }

    fn detect(&mut self, send_delta_ms: f64, now: u64) {
        if self.deltas < 2 {
            self.usage = Usage::Normal;
            return;
        }
        let modified = self.deltas.min(60) as f64 * self.trend * GAIN;
        if modified > self.threshold {
            if self.time_over < 0.0 {
                self.time_over = send_delta_ms / 2.0;
            } else {
                self.time_over += send_delta_ms;
            }
            self.over_count += 1;
            if self.time_over > OVERUSE_MS && self.over_count > 1 && self.trend >= self.prev_trend {
                self.time_over = 0.0;
                self.over_count = 0;
                self.usage = Usage::Over;
            }
        } else if modified < -self.threshold {
            self.time_over = -1.0;
            self.over_count = 0;
            self.usage = Usage::Under;
        } else {
            self.time_over = -1.0;
            self.over_count = 0;
            self.usage = Usage::Normal;
        }
        self.prev_trend = self.trend;
        self.update_threshold(modified, now);
    }

    fn update_threshold(&mut self, modified: f64, now: u64) {
        let last = *self.last_threshold_update.get_or_insert(now);
        if modified.abs() > self.threshold + 15.0 {
            // A spike (a route change, a burst of cross traffic): do not
            // let it drag the threshold up.
            self.last_threshold_update = Some(now);
            return;
        }
        let k = if modified.abs() < self.threshold {
            K_DOWN
        } else {
            K_UP
        };
        let dt_ms = ((now.saturating_sub(last)) as f64 / 1000.0).min(100.0);
        self.threshold += k * (modified.abs() - self.threshold) * dt_ms;
        self.threshold = self.threshold.clamp(THRESHOLD_MIN, THRESHOLD_MAX);
        self.last_threshold_update = Some(now);
    }
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in points {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    (den != 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_delay_is_normal_and_growing_delay_is_overuse() {
        let mut t = Trendline::new();
        // 1 packet per ms, constant 10 ms delay.
        for i in 0..500u64 {
            t.packet(i * 1000, i * 1000 + 10_000);
        }
        assert_eq!(t.usage(), Usage::Normal);
        // Now the queue grows by 0.2 ms per ms.
        let mut saw_over = false;
        for i in 500..700u64 {
            let extra = (i - 500) * 200;
            t.packet(i * 1000, i * 1000 + 10_000 + extra);
            saw_over |= t.usage() == Usage::Over;
        }
        assert!(saw_over, "growing delay detected (trend {})", t.trend);
        // And the queue drains: underuse.
        let mut saw_under = false;
        for i in 700..800u64 {
            let extra = 40_000u64.saturating_sub((i - 700) * 400);
            t.packet(i * 1000, i * 1000 + 10_000 + extra);
            saw_under |= t.usage() == Usage::Under;
        }
        assert!(saw_under);
    }
}
