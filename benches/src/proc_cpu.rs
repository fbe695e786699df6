//! The CPU time a process under test spent, read from `/proc/PID/stat` and
//! its threads' `/proc/PID/task/TID/stat` (utime and stime), so that a run
//! reports the node's CPU per transaction over exactly its measured phase.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

/// Clock ticks per second of `utime` / `stime` (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// One reading of a process's CPU time, in clock ticks.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    user: u64,
    sys: u64,
    /// By thread name (threads of one name summed): user, kernel.
    threads: BTreeMap<String, (u64, u64)>,
}

/// A process's CPU time over a phase, per transaction of that phase.
#[derive(Debug, Clone, Serialize)]
pub struct CpuPerTx {
    /// User + kernel CPU-µs per transaction.
    pub cpu_us_per_tx: f64,
    /// User CPU-µs per transaction.
    pub user_us_per_tx: f64,
    /// Kernel CPU-µs per transaction.
    pub sys_us_per_tx: f64,
    /// By thread name: [total, user, kernel] CPU-µs per transaction,
    /// threads that used none left out.
    pub threads: BTreeMap<String, [f64; 3]>,
}

/// `name` and (utime, stime) of one `stat` file.
fn read_stat(path: &Path) -> std::io::Result<(String, u64, u64)> {
    let raw = std::fs::read_to_string(path)?;
    let bad = || std::io::Error::other(format!("{}: unexpected format", path.display()));
    let (open, close) = (
        raw.find('(').ok_or_else(bad)?,
        raw.rfind(')').ok_or_else(bad)?,
    );
    let name = raw.get(open + 1..close).ok_or_else(bad)?.to_string();
    // Fields after the name, from `state` (field 3): utime is field 14.
    let fields: Vec<&str> = raw.get(close + 2..).ok_or_else(bad)?.split(' ').collect();
    let field = |i: usize| -> std::io::Result<u64> {
        fields.get(i).and_then(|f| f.parse().ok()).ok_or_else(bad)
    };
    Ok((name, field(11)?, field(12)?))
}

impl CpuSample {
    /// Reads process `pid` now: its threads first, then the whole (which
    /// so holds at least what the threads showed; the files are not read
    /// at one instant, so figures may be off by a tick per thread). Threads
    /// that end while being read are skipped (their time stays in the
    /// process's total).
    pub fn read(pid: u32) -> std::io::Result<Self> {
        let base = Path::new("/proc").join(pid.to_string());
        let mut threads = BTreeMap::new();
        for entry in std::fs::read_dir(base.join("task"))? {
            let Ok((name, u, s)) = read_stat(&entry?.path().join("stat")) else {
                continue;
            };
            let slot: &mut (u64, u64) = threads.entry(name).or_default();
            slot.0 += u;
            slot.1 += s;
        }
        let (_, user, sys) = read_stat(&base.join("stat"))?;
        Ok(Self { user, sys, threads })
    }

    /// What was spent from `before` to this sample, per transaction of `txs`.
    pub fn since(&self, before: &CpuSample, txs: u64) -> CpuPerTx {
        let per = |ticks: u64| ticks as f64 / TICKS_PER_S * 1e6 / txs.max(1) as f64;
        let user = self.user.saturating_sub(before.user);
        let sys = self.sys.saturating_sub(before.sys);
        let threads = self
            .threads
            .iter()
            .filter_map(|(name, &(u, s))| {
                let (u0, s0) = before.threads.get(name).copied().unwrap_or_default();
                let (u, s) = (u.saturating_sub(u0), s.saturating_sub(s0));
                (u + s > 0).then(|| (name.clone(), [per(u + s), per(u), per(s)]))
            })
            .collect();
        CpuPerTx {
            cpu_us_per_tx: per(user + sys),
            user_us_per_tx: per(user),
            sys_us_per_tx: per(sys),
            threads,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_and_a_busy_loop_shows_as_user_time() {
        let before = CpuSample::read(std::process::id()).unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        // Spin until the reading shows 30 ms of user time (it advances in
        // 10 ms ticks); a reader that never sees it fails after 20 s.
        let spent = loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let spent = CpuSample::read(std::process::id())
                .unwrap()
                .since(&before, 1);
            if spent.user_us_per_tx >= 30_000.0 {
                break spent;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "no user time seen: {spent:?}"
            );
        };
        assert!(spent.threads.values().any(|t| t[1] > 0.0), "{spent:?}");
        // The threads add up to the whole within a 10 ms tick per thread
        // (the stat files are not read at one instant).
        let total: f64 = spent.threads.values().map(|t| t[0]).sum();
        let slack = 10_000.0 * (spent.threads.len() as f64 + 1.0);
        assert!((total - spent.cpu_us_per_tx).abs() <= slack, "{spent:?}");
    }

    #[test]
    fn a_missing_process_is_an_error() {
        assert!(CpuSample::read(u32::MAX).is_err());
    }
}
