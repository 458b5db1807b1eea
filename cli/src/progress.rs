//! Progress on stderr: an `indicatif` bar or spinner when stderr is a
//! terminal, plain lines (at most one a second) when it is not.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// One progress display.
pub struct Progress {
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
    every: Duration,
}

impl Progress {
    /// A bar counting to `len` (or a spinner without a length), labelled
    /// `prefix`.
    pub fn new(prefix: &str, len: Option<u64>) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match len {
                Some(n) => ProgressBar::new(n).with_style(
                    ProgressStyle::with_template("{prefix:>6} [{bar:30}] {pos}/{len} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                ),
                None => {
                    let s = ProgressBar::new_spinner();
                    s.enable_steady_tick(Duration::from_millis(200));
                    s.with_style(
                        ProgressStyle::with_template("{prefix:>6} {spinner} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    )
                }
            };
            bar.with_prefix(prefix.to_string())
        });
        Progress {
            bar,
            last_line: None,
            every: Duration::from_secs(1),
        }
    }

    /// Whether a line is due (non-terminal output is throttled to one a
    /// second); on a terminal always.
    pub fn due(&self) -> bool {
        self.bar.is_some() || self.last_line.is_none_or(|t| t.elapsed() >= self.every)
    }

    /// Update position and message: on a terminal redraw the bar, otherwise
    /// print `line` if a line is due.
    pub fn update(&mut self, pos: u64, line: impl FnOnce() -> String) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(pos);
                bar.set_message(line());
            }
            None => {
                if self.due() {
                    self.last_line = Some(Instant::now());
                    eprintln!("{}", line());
                }
            }
        }
    }

    /// Remove the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
