//! Runs each case and its baseline alternately in one process and reports
//! medians and their ratio.

use serde::Serialize;

/// Which direction is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Throughputs.
    Higher,
    /// Latencies.
    Lower,
}

/// One measurement: our code against a baseline, same metric.
pub struct Case<'a> {
    /// Short name, e.g. `throughput_64B`.
    pub case: String,
    /// What is measured, e.g. `msgs_per_s`.
    pub metric: &'static str,
    /// Unit of `metric`.
    pub unit: &'static str,
    /// Direction of goodness.
    pub better: Better,
    /// What the baseline is.
    pub baseline_name: &'static str,
    /// Run our code once; returns the metric.
    pub ours: Box<dyn FnMut() -> f64 + 'a>,
    /// Run the baseline once; returns the metric.
    pub baseline: Box<dyn FnMut() -> f64 + 'a>,
}

/// One result line.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Suite name.
    pub suite: String,
    /// Case name.
    pub case: String,
    /// Metric name.
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// Median of our samples.
    pub ours: f64,
    /// Median of the baseline's samples.
    pub baseline: f64,
    /// What the baseline is.
    pub baseline_name: String,
    /// `ours / baseline`.
    pub ratio: f64,
    /// Direction of goodness.
    pub better: Better,
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One side of a case, for profiling it alone (`--side`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Our implementation.
    Ours,
    /// The baseline.
    Baseline,
}

/// How a run reports.
pub struct Runner {
    /// Suite name.
    pub suite: String,
    /// Rounds per case (each round runs ours and the baseline once).
    pub rounds: usize,
    /// JSON lines on stdout instead of a table.
    pub json: bool,
    /// Run only the case with this name, if set.
    pub only: Option<String>,
    /// Run only this side of each case (for a profiler), if set.
    pub side: Option<Side>,
    /// Results so far.
    pub outcomes: Vec<Outcome>,
}

impl Runner {
    /// A runner for `suite`.
    pub fn new(suite: &str, rounds: usize, json: bool) -> Self {
        Runner {
            suite: suite.to_owned(),
            rounds,
            json,
            only: None,
            side: None,
            outcomes: Vec::new(),
        }
    }

    /// Whether `case` should run (see `--case`).
    pub fn wants(&self, case: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == case)
    }

    /// Run one case: a warm-up of each, then `rounds` rounds alternating
    /// which goes first.
    pub fn run(&mut self, mut case: Case<'_>) {
        if !self.wants(&case.case) {
            return;
        }
        eprintln!("[{}] {} ...", self.suite, case.case);
        if let Some(side) = self.side {
            // Profiling one side: its warm-up and rounds, no ratio.
            let f = match side {
                Side::Ours => &mut case.ours,
                Side::Baseline => &mut case.baseline,
            };
            f();
            let v: Vec<f64> = (0..self.rounds).map(|_| f()).collect();
            eprintln!(
                "[{}] {} {side:?} only: median {:.3} {}",
                self.suite,
                case.case,
                median(v),
                case.unit
            );
            return;
        }
        (case.ours)();
        (case.baseline)();
        let mut ours = Vec::with_capacity(self.rounds);
        let mut base = Vec::with_capacity(self.rounds);
        for round in 0..self.rounds {
            if round % 2 == 0 {
                ours.push((case.ours)());
                base.push((case.baseline)());
            } else {
                base.push((case.baseline)());
                ours.push((case.ours)());
            }
        }
        if std::env::var_os("LINK_BENCH_ROUNDS").is_some() {
            // Diagnostics: every round's pair, to see drift and outliers.
            for (o, b) in ours.iter().zip(&base) {
                eprintln!("  round: ours {o:.3} baseline {b:.3} ratio {:.3}", o / b);
            }
        }
        let (o, b) = (median(ours), median(base));
        self.report(Outcome {
            suite: self.suite.clone(),
            case: case.case,
            metric: case.metric.to_owned(),
            unit: case.unit.to_owned(),
            ours: o,
            baseline: b,
            baseline_name: case.baseline_name.to_owned(),
            ratio: o / b,
            better: case.better,
        });
    }

    /// Print and keep one result (for suites that run several variants per
    /// round and compute their own medians with [`median`]).
    pub fn report(&mut self, outcome: Outcome) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string(&outcome).expect("outcome serialises")
            );
        } else {
            let verdict = match (outcome.better, outcome.ratio >= 1.0) {
                (Better::Higher, true) | (Better::Lower, false) => "ours better",
                _ => "baseline better",
            };
            println!(
                "{:<8} {:<24} {:<16} {:>14.2} {:<9} vs {:>14.2} ({:<28}) ratio {:>6.3}  {}",
                outcome.suite,
                outcome.case,
                outcome.metric,
                outcome.ours,
                outcome.unit,
                outcome.baseline,
                outcome.baseline_name,
                outcome.ratio,
                verdict
            );
        }
        self.outcomes.push(outcome);
    }
}

/// Pin the calling thread to one CPU (the same for ours and the baseline),
/// so that the scheduler moving threads around does not add noise.
pub fn pin(cpu: usize) {
    use std::mem::{size_of, zeroed};
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it;
    // sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        libc::CPU_SET(cpu % libc::CPU_SETSIZE as usize, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn runner_alternates_and_reports_ratio_of_medians() {
        let mut r = Runner::new("t", 4, true);
        let order = std::cell::RefCell::new(Vec::new());
        r.run(Case {
            case: "c".into(),
            metric: "m",
            unit: "u",
            better: Better::Higher,
            baseline_name: "b",
            ours: Box::new(|| {
                order.borrow_mut().push('o');
                10.0
            }),
            baseline: Box::new(|| {
                order.borrow_mut().push('b');
                4.0
            }),
        });
        assert_eq!(r.outcomes[0].ratio, 2.5);
        // warm-up o b, then o b, b o, o b, b o
        assert_eq!(order.into_inner().iter().collect::<String>(), "obobboobbo");
    }
}
