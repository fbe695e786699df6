//! Group commit under load: whether a mini-block that could close (the log
//! is idle) should first wait a little for more transactions. Plain
//! bookkeeping with no executor, unit-tested alone.
//!
//! At saturation on a small box the transactions arrive a few tens of
//! microseconds apart and a flush takes one or two hundred, so a
//! mini-block that closes the moment the log is idle carries one or two of
//! them. Fewer, fuller flushes alone saved little (about 5 CPU-µs per
//! transaction, BENCHMARKS.md); what costs is the seq executor waking for
//! each arrival. So while a mini-block waits (up to `max`, for up to
//! [`Linger::TARGET_TXS`]) `take_requests` makes the executor's sleeps
//! quiet until the deadline, and it takes what arrived all at once: the
//! seq thread went from 46 to 17.5 CPU-µs per transaction.
//!
//! The price is latency: at 7,000 tx/s the node's own sync latency rose
//! about 0.75 ms when it waited there (BENCHMARKS.md). So it waits only
//! while some core is loaded (`Metrics::loaded`, a 100 ms window at least
//! 80% busy): at saturation, where the CPU is what limits, and not with
//! headroom on every core. `group_commit_us = 0` turns it off.
//!
//! At light load it never waits: only while the recent arrivals are dense
//! (their mean gap, an exponentially weighted average, at most
//! `max / DENSE_ARRIVALS`) is the next one expected soon enough to be worth
//! waiting for. A client sending one transaction at a time (each after the
//! previous reply) spaces them by a whole flush, so it is never held.
//!
//! Nor does it wait where waiting slows the load down: a few clients in a
//! closed loop (each sends its next transaction once the last is
//! answered) arrive densely too, but each wait delays their next sends.
//! [`Trial`] compares an epoch that waits with one that does not, on the
//! live load, and keeps the better (with 8 in flight on the 2-CPU box:
//! 12,000 tx/s instead of 5,000).

use std::time::{Duration, Instant};

/// The group-commit policy and the arrival rate it reads.
#[derive(Debug)]
pub(super) struct Linger {
    /// Longest a mini-block waits once the log is idle (zero: never).
    max: Duration,
    /// Mean gap between arrivals, in nanoseconds (weighted average).
    gap_ns: f64,
    last_arrival: Option<Instant>,
    /// A wake-up for `take_requests` is pending (set when the log became
    /// idle with a mini-block to wait, cleared when it is taken), so that
    /// each such wait signals once.
    pub(super) armed: bool,
    /// Whether waiting pays at the present load ([`Trial`]).
    trial: Trial,
}

/// Waiting against not waiting, tried in turn on the live load.
///
/// Waiting is free for throughput only while the transactions keep coming
/// whatever the node does: an open-loop load, or closed-loop clients with
/// enough in flight that the net cores, not the seq core, set the pace.
/// With a few clients that each send their next transaction once the last
/// is answered, every wait delays the next arrivals too, and throughput
/// falls with it: 12,000 → 4,800 tx/s with 8 in flight on the 2-CPU box.
/// The arrival rate cannot tell these apart, so the linger measures it:
/// one epoch waiting, one not, then the better one for
/// [`Trial::EXPLOIT_EPOCHS`] epochs, and again. Waiting wins unless it
/// costs more than [`Trial::TOLERANCE`] of the rate.
#[derive(Debug)]
struct Trial {
    phase: Phase,
    /// Start of the current epoch.
    started: Option<Instant>,
    /// Arrivals in the current epoch.
    arrivals: u32,
    /// Arrivals in the last epoch that waited.
    with_wait: u32,
    /// The last comparison's verdict.
    waits: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// An epoch that waits.
    TryWait,
    /// An epoch that does not.
    TryNoWait,
    /// Epochs with the verdict; this many left.
    Exploit(u32),
}

impl Trial {
    const EPOCH: Duration = Duration::from_millis(100);
    const EXPLOIT_EPOCHS: u32 = 16;
    /// Waiting wins while its epoch saw at least `1 - TOLERANCE` of the
    /// arrivals of the epoch that did not wait.
    const TOLERANCE: f64 = 0.1;

    fn new() -> Self {
        Self {
            phase: Phase::TryWait,
            started: None,
            arrivals: 0,
            with_wait: 0,
            waits: true,
        }
    }

    /// Whether the current epoch waits.
    fn waits(&self) -> bool {
        match self.phase {
            Phase::TryWait => true,
            Phase::TryNoWait => false,
            Phase::Exploit(_) => self.waits,
        }
    }

    /// Counts an arrival at `now`, ending the epochs that passed.
    fn on_arrival(&mut self, now: Instant) {
        let started = *self.started.get_or_insert(now);
        let elapsed = now.saturating_duration_since(started);
        if elapsed >= Self::EPOCH * 2 {
            // A silence longer than an epoch: the load that was measured
            // is gone; try again from the start.
            self.phase = Phase::TryWait;
            self.started = Some(now);
            self.arrivals = 0;
        } else if elapsed >= Self::EPOCH {
            self.end_epoch();
            self.started = Some(started + Self::EPOCH);
        }
        self.arrivals += 1;
    }

    fn end_epoch(&mut self) {
        let arrivals = std::mem::take(&mut self.arrivals);
        self.phase = match self.phase {
            Phase::TryWait => {
                self.with_wait = arrivals;
                Phase::TryNoWait
            }
            Phase::TryNoWait => {
                self.waits =
                    f64::from(self.with_wait) >= (1.0 - Self::TOLERANCE) * f64::from(arrivals);
                Phase::Exploit(Self::EXPLOIT_EPOCHS)
            }
            Phase::Exploit(left) if left <= 1 => Phase::TryWait,
            Phase::Exploit(left) => Phase::Exploit(left - 1),
        };
    }
}

impl Linger {
    /// A mini-block with this many transactions closes at once: the fixed
    /// cost of its flush is then a small share of each.
    pub(super) const TARGET_TXS: usize = 16;
    /// Arrivals are dense when at least this many are expected within `max`.
    const DENSE_ARRIVALS: f64 = 4.0;
    /// Weight of the newest gap in the average.
    const WEIGHT: f64 = 1.0 / 16.0;
    /// A gap longer than this is an idle spell, not load: it resets the
    /// average to the gap itself.
    const IDLE: Duration = Duration::from_millis(50);

    pub(super) fn new(max: Duration) -> Self {
        Self {
            max,
            gap_ns: f64::INFINITY,
            last_arrival: None,
            armed: false,
            trial: Trial::new(),
        }
    }

    /// A transaction arrived at `now`.
    pub(super) fn on_arrival(&mut self, now: Instant) {
        self.trial.on_arrival(now);
        if let Some(last) = self.last_arrival.replace(now) {
            let gap = now.saturating_duration_since(last);
            let ns = gap.as_nanos() as f64;
            self.gap_ns = if gap >= Self::IDLE || !self.gap_ns.is_finite() {
                ns
            } else {
                self.gap_ns + Self::WEIGHT * (ns - self.gap_ns)
            };
        }
    }

    /// True while the arrivals are dense enough that waiting pays.
    fn dense(&self, now: Instant) -> bool {
        let max_ns = self.max.as_nanos() as f64;
        // A long silence since the last arrival ends the spell at once.
        let since = self.last_arrival.map_or(f64::INFINITY, |t| {
            now.saturating_duration_since(t).as_nanos() as f64
        });
        max_ns > 0.0
            && self.gap_ns * Self::DENSE_ARRIVALS <= max_ns
            && since * Self::DENSE_ARRIVALS <= max_ns
    }

    /// Until when a mini-block opened at `opened` with `txs` transactions
    /// waits before it closes, with the log idle; `None`: close now.
    pub(super) fn deadline(&self, opened: Instant, txs: usize, now: Instant) -> Option<Instant> {
        if txs >= Self::TARGET_TXS || !self.trial.waits() || !self.dense(now) {
            return None;
        }
        let deadline = opened + self.max;
        (deadline > now).then_some(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrivals(linger: &mut Linger, start: Instant, gap: Duration, n: u32) -> Instant {
        let mut t = start;
        for _ in 0..n {
            linger.on_arrival(t);
            t += gap;
        }
        t - gap
    }

    #[test]
    fn dense_arrivals_wait_until_the_deadline_or_the_target() {
        let max = Duration::from_micros(800);
        let mut linger = Linger::new(max);
        let t0 = Instant::now();
        let last = arrivals(&mut linger, t0, Duration::from_micros(80), 64);
        assert_eq!(linger.deadline(last, 1, last), Some(last + max));
        assert_eq!(linger.deadline(last, Linger::TARGET_TXS, last), None);
        // Past the deadline it closes.
        assert_eq!(linger.deadline(last, 3, last + max), None);
    }

    #[test]
    fn one_at_a_time_never_waits() {
        // Each transaction sent after the previous one's reply: a flush apart.
        let mut linger = Linger::new(Duration::from_micros(800));
        let t0 = Instant::now();
        let last = arrivals(&mut linger, t0, Duration::from_micros(400), 64);
        assert_eq!(linger.deadline(last, 1, last), None);
    }

    #[test]
    fn zero_max_never_waits_and_nor_does_a_first_arrival() {
        let t0 = Instant::now();
        let mut off = Linger::new(Duration::ZERO);
        let last = arrivals(&mut off, t0, Duration::from_micros(10), 64);
        assert_eq!(off.deadline(last, 1, last), None);
        let mut fresh = Linger::new(Duration::from_millis(1));
        fresh.on_arrival(t0);
        assert_eq!(fresh.deadline(t0, 1, t0), None);
    }

    #[test]
    fn an_idle_spell_ends_the_wait_at_once() {
        let max = Duration::from_micros(800);
        let mut linger = Linger::new(max);
        let t0 = Instant::now();
        let last = arrivals(&mut linger, t0, Duration::from_micros(50), 64);
        // Nothing came for a while: the average alone would still say dense.
        let later = last + Duration::from_micros(600);
        assert_eq!(linger.deadline(later, 1, later), None);
        // One arrival after a long silence restarts the average from it.
        linger.on_arrival(last + Duration::from_millis(60));
        let t = last + Duration::from_millis(60);
        assert_eq!(linger.deadline(t, 1, t), None);
    }

    /// Arrivals until `until`, `gap` apart while the linger waits and
    /// `gap_no_wait` apart while it does not; the time of the last.
    fn load(
        linger: &mut Linger,
        mut t: Instant,
        until: Instant,
        (gap, gap_no_wait): (Duration, Duration),
    ) -> Instant {
        // Each epoch ends at the first arrival after it: go one past `until`.
        while t <= until {
            linger.on_arrival(t);
            t += if linger.trial.waits() {
                gap
            } else {
                gap_no_wait
            };
        }
        t
    }

    #[test]
    fn a_closed_loop_that_waiting_slows_stops_waiting_and_tries_again_later() {
        // Eight clients in a closed loop: every wait delays their next
        // transactions, so the rate falls from 12,500/s to 5,000/s.
        let max = Duration::from_micros(1000);
        let mut linger = Linger::new(max);
        let t0 = Instant::now();
        let gaps = (Duration::from_micros(200), Duration::from_micros(80));
        let t = load(&mut linger, t0, t0 + Trial::EPOCH * 2, gaps);
        assert_eq!(linger.trial.phase, Phase::Exploit(Trial::EXPLOIT_EPOCHS));
        assert_eq!(
            linger.deadline(t, 1, t),
            None,
            "dense, but waiting does not pay"
        );
        // After the exploit epochs it tries waiting again.
        let epochs = Trial::EXPLOIT_EPOCHS + 2;
        load(&mut linger, t, t0 + Trial::EPOCH * epochs, gaps);
        assert_eq!(linger.trial.phase, Phase::TryWait);
    }

    #[test]
    fn a_load_that_waiting_does_not_slow_keeps_waiting() {
        let max = Duration::from_micros(1000);
        let mut linger = Linger::new(max);
        let t0 = Instant::now();
        let gap = Duration::from_micros(80);
        let t = load(&mut linger, t0, t0 + Trial::EPOCH * 5, (gap, gap));
        assert!(matches!(linger.trial.phase, Phase::Exploit(_)));
        assert_eq!(linger.deadline(t, 1, t), Some(t + max));
    }

    #[test]
    fn a_long_silence_restarts_the_trial() {
        let mut linger = Linger::new(Duration::from_micros(1000));
        let t0 = Instant::now();
        let gaps = (Duration::from_micros(200), Duration::from_micros(80));
        let t = load(&mut linger, t0, t0 + Trial::EPOCH * 2, gaps);
        assert!(!linger.trial.waits());
        linger.on_arrival(t + Duration::from_secs(1));
        assert_eq!(linger.trial.phase, Phase::TryWait);
    }
}
