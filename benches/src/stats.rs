//! Latency statistics (HdrHistogram) and the run report.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies recorded in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid")
}

/// Records `latency` (clamped into the histogram's range).
pub fn record(h: &mut Histogram<u64>, latency: Duration) {
    let us = (latency.as_micros() as u64).clamp(1, 60_000_000);
    h.record(us).expect("value clamped into range");
}

/// One run's figures, printed as a table or as one JSON object.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// Endpoint.
    pub rpc: String,
    /// Workload name.
    pub workload: String,
    /// sendRawTransaction or sendRawTransactionSync.
    pub method: String,
    /// closed(C) or open(R/s).
    pub mode: String,
    /// Transactions sent.
    pub txs: u64,
    /// Requests timed (transactions, plus reads in the mixed workload).
    pub requests: u64,
    /// Accepted per second (requests answered without error / send duration).
    pub tps: f64,
    /// Preconfirmed per second (until the last receipt was visible).
    pub tps_preconfirmed: f64,
    /// Sealed per second (until the last one was in a sealed block).
    pub tps_sealed: f64,
    /// Gas per second over the preconfirmed window.
    pub gas_per_s: f64,
    /// Request latency percentiles in ms.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Wall time of the send phase.
    pub duration_s: f64,
    /// The node's CPU time over the send phase, per transaction sent
    /// without error (with `--node-pid`).
    pub node_cpu: Option<crate::proc_cpu::CpuPerTx>,
}

impl Report {
    /// Fills the percentiles from `h`.
    pub fn set_latencies(&mut self, h: &Histogram<u64>) {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        self.p50_ms = ms(0.5);
        self.p90_ms = ms(0.9);
        self.p99_ms = ms(0.99);
        self.p999_ms = ms(0.999);
        self.max_ms = h.max() as f64 / 1000.0;
    }

    /// Human-readable table.
    pub fn table(&self) -> String {
        let errors: u64 = self.errors.values().sum();
        let mut out = format!(
            "{} | {} | {} | {}\n\
             txs {}  duration {:.2} s  errors {}\n\
             tps accepted {:.0}  preconfirmed {:.0}  sealed {:.0}  gas/s {:.0}\n\
             latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
            self.rpc,
            self.workload,
            self.method,
            self.mode,
            self.txs,
            self.duration_s,
            errors,
            self.tps,
            self.tps_preconfirmed,
            self.tps_sealed,
            self.gas_per_s,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms
        );
        if let Some(cpu) = &self.node_cpu {
            out.push_str(&format!(
                "node CPU-us per tx  {:.1}  (user {:.1} + kernel {:.1})\n",
                cpu.cpu_us_per_tx, cpu.user_us_per_tx, cpu.sys_us_per_tx
            ));
            for (name, [total, user, sys]) in &cpu.threads {
                out.push_str(&format!(
                    "  {name:<16} {total:>8.1}  ({user:.1} + {sys:.1})\n"
                ));
            }
        }
        for (kind, count) in &self.errors {
            out.push_str(&format!("  error x{count}: {kind}\n"));
        }
        out
    }
}

/// Groups an error message into a short kind (numbers and hashes removed).
pub fn error_kind(message: &str) -> String {
    let text: String = message.chars().take(160).collect();
    let kind: String = text
        .split_whitespace()
        .filter(|w| !w.chars().any(|c| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(" ");
    if kind.is_empty() {
        "unknown".into()
    } else {
        kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_what_was_recorded() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let mut report = Report::default();
        report.set_latencies(&h);
        assert!((report.p50_ms - 0.5).abs() < 0.01, "{}", report.p50_ms);
        assert!((report.p99_ms - 0.99).abs() < 0.01, "{}", report.p99_ms);
        assert!((report.max_ms - 1.0).abs() < 0.01);
        assert_eq!(h.len(), 1000);
    }

    #[test]
    fn error_kinds_group_messages() {
        assert_eq!(
            error_kind("nonce too low: next nonce 5, tx nonce 3"),
            error_kind("nonce too low: next nonce 9, tx nonce 1")
        );
    }
}
