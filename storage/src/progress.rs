//! Progress of long work (reading the log, replaying it, loading a
//! checkpoint, rebuilding its trie): a log line every few seconds with done
//! of total, the rate and the time left.

use std::time::{Duration, Instant};

/// How often long work reports.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// Reports one piece of long work.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    unit: &'static str,
    total: u64,
    began: Instant,
    reported: Instant,
}

impl Progress {
    /// `total` units (`unit`, plural) of `what` to do.
    pub fn new(what: &'static str, unit: &'static str, total: u64) -> Self {
        let now = Instant::now();
        Self {
            what,
            unit,
            total,
            began: now,
            reported: now,
        }
    }

    /// `done` units are done; logs a line if the last was long enough ago.
    /// Cheap enough to call per unit (one clock read).
    pub fn tick(&mut self, done: u64) {
        if self.reported.elapsed() < PROGRESS_INTERVAL {
            return;
        }
        self.reported = Instant::now();
        let rate = done as f64 / self.began.elapsed().as_secs_f64().max(1e-9);
        let left_s = self.total.saturating_sub(done) as f64 / rate.max(1e-9);
        tracing::info!(
            done,
            total = self.total,
            unit = self.unit,
            percent = format!("{:.0}", done as f64 * 100.0 / self.total.max(1) as f64),
            per_s = format!("{rate:.0}"),
            eta_s = format!("{left_s:.0}"),
            "{}",
            self.what
        );
    }
}
