//! The DA batcher's figures: written by the DA thread, read by the
//! metrics endpoint, `fulmen top`, and the net cores' backpressure check
//! (`[da] unposted_bytes_max`). All zero while no batcher runs.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Usable bytes of one blob (OP blob encoding version 0).
const BLOB_DATA_BYTES: f64 = 130_044.0;

/// What the DA thread reports.
#[derive(Debug)]
pub struct DaFigures {
    /// 1 while a batcher runs.
    pub running: AtomicU64,
    /// The L1 head the batcher saw last.
    pub l1_head: AtomicU64,
    /// The L1 head when the first channel was built: no batch of this
    /// chain is in an earlier L1 block (a verifier's `[da] l1_start_block`).
    pub l1_start_block: AtomicU64,
    /// The `safe` L2 block.
    pub safe: AtomicU64,
    /// The `finalized` L2 block.
    pub finalized: AtomicU64,
    /// Sealed L2 blocks whose data is not in L1 yet.
    pub unposted_blocks: AtomicU64,
    /// Their transactions' bytes (EIP-2718).
    pub unposted_bytes: AtomicU64,
    /// Channels built and logged.
    pub channels: AtomicU64,
    /// Blobs in them.
    pub blobs: AtomicU64,
    /// Frame bytes in those blobs (what the fill ratio divides).
    pub blob_data_bytes: AtomicU64,
    /// Span-batch bytes before compression.
    pub rlp_bytes: AtomicU64,
    /// Channel bytes after compression.
    pub channel_bytes: AtomicU64,
    /// L2 transactions in the channels.
    pub txs: AtomicU64,
    /// Their bytes as plain EIP-2718 envelopes.
    pub plain_bytes: AtomicU64,
    /// L1 fees paid for included batcher txs (execution and blob gas), gwei.
    pub fees_paid_gwei: AtomicU64,
    /// Batcher txs replaced with bumped fees.
    pub replacements: AtomicU64,
    /// Included channels an L1 reorg dropped.
    pub reorgs: AtomicU64,
    /// L1 calls that failed.
    pub l1_errors: AtomicU64,
    /// A verifier: the next L1 block to derive from.
    pub derive_next_l1: AtomicU64,
    /// A verifier: the first L1 block it derived from.
    pub derive_start_l1: AtomicU64,
    /// A verifier: the last L2 block derived (handed to the seq core).
    pub derived_l2: AtomicU64,
    /// A verifier: that block's timestamp, seconds.
    pub derived_l2_timestamp: AtomicU64,
    /// A verifier: blob bytes derived from (frames' payloads).
    pub derived_bytes: AtomicU64,
    /// Why posting is held up, if it is (an L1 error, fees above the cap).
    held_up: Mutex<String>,
}

impl DaFigures {
    /// All zero.
    pub const fn new() -> Self {
        Self {
            running: AtomicU64::new(0),
            l1_head: AtomicU64::new(0),
            l1_start_block: AtomicU64::new(0),
            safe: AtomicU64::new(0),
            finalized: AtomicU64::new(0),
            unposted_blocks: AtomicU64::new(0),
            unposted_bytes: AtomicU64::new(0),
            channels: AtomicU64::new(0),
            blobs: AtomicU64::new(0),
            blob_data_bytes: AtomicU64::new(0),
            rlp_bytes: AtomicU64::new(0),
            channel_bytes: AtomicU64::new(0),
            txs: AtomicU64::new(0),
            plain_bytes: AtomicU64::new(0),
            fees_paid_gwei: AtomicU64::new(0),
            replacements: AtomicU64::new(0),
            reorgs: AtomicU64::new(0),
            l1_errors: AtomicU64::new(0),
            derive_next_l1: AtomicU64::new(0),
            derive_start_l1: AtomicU64::new(0),
            derived_l2: AtomicU64::new(0),
            derived_l2_timestamp: AtomicU64::new(0),
            derived_bytes: AtomicU64::new(0),
            held_up: Mutex::new(String::new()),
        }
    }

    /// Says why posting is held up; empty when it is not.
    pub fn set_held_up(&self, why: &str) {
        let mut held = self.held_up.lock().unwrap_or_else(|e| e.into_inner());
        if held.as_str() != why {
            *held = why.to_string();
        }
    }

    /// Why posting is held up; empty when it is not.
    pub fn held_up(&self) -> String {
        self.held_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The refusal of a new transaction while the unposted bytes are at
    /// or above `max_bytes`, naming the cause; `None` below it.
    pub fn backlog_refusal(&self, max_bytes: u64) -> Option<String> {
        let bytes = self.unposted_bytes.load(Relaxed);
        if bytes < max_bytes {
            return None;
        }
        let held = self.held_up();
        let cause = if held.is_empty() {
            "L1 has not taken the data yet".to_string()
        } else {
            held
        };
        Some(format!(
            "L2 data not yet posted to L1 is at its limit ({bytes} bytes in {} blocks, \
             da.unposted_bytes_max {max_bytes}): {cause}; the transaction was not accepted, \
             retry once posting catches up",
            self.unposted_blocks.load(Relaxed)
        ))
    }

    /// A verifier still catching up with L1: (first, current, highest) L1
    /// block, for `eth_syncing`; `None` once within a block of the head.
    pub fn syncing(&self) -> Option<(u64, u64, u64)> {
        let next = self.derive_next_l1.load(Relaxed);
        let head = self.l1_head.load(Relaxed);
        (next + 1 < head).then(|| (self.derive_start_l1.load(Relaxed), next, head))
    }

    /// The figures in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        self.render_verifier(out);
        for (name, help, value) in self.gauges() {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        for (name, help, value) in self.counters() {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Relaxed)
            );
        }
    }

    /// The verifier's figures, when one runs.
    fn render_verifier(&self, out: &mut String) {
        let derived = self.derived_l2.load(Relaxed);
        if derived == 0 && self.derive_next_l1.load(Relaxed) == 0 {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let lag_s = now.saturating_sub(self.derived_l2_timestamp.load(Relaxed));
        let next = self.derive_next_l1.load(Relaxed);
        let lag_l1 = self
            .l1_head
            .load(Relaxed)
            .saturating_sub(next.saturating_sub(1));
        for (name, help, value) in [
            (
                "fulmen_verifier_l1_block",
                "The last L1 block derived from",
                next.saturating_sub(1),
            ),
            (
                "fulmen_verifier_derived_block",
                "The last L2 block derived",
                derived,
            ),
            (
                "fulmen_verifier_lag_l1_blocks",
                "L1 blocks between the L1 head and the last derived from",
                lag_l1,
            ),
            (
                "fulmen_verifier_lag_seconds",
                "Wall clock minus the last derived L2 block's timestamp",
                lag_s,
            ),
            (
                "fulmen_verifier_derived_bytes_total",
                "Blob bytes derived from",
                self.derived_bytes.load(Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
    }

    fn gauges(&self) -> [(&'static str, &'static str, f64); 10] {
        let get = |a: &AtomicU64| a.load(Relaxed) as f64;
        let ratio = |a: &AtomicU64, b: f64| get(a) / b.max(1.0);
        [
            (
                "fulmen_da_running",
                "1 while a DA batcher runs",
                get(&self.running),
            ),
            (
                "fulmen_da_l1_head",
                "The L1 head the batcher saw last",
                get(&self.l1_head),
            ),
            (
                "fulmen_da_l1_start_block",
                "No batch of this chain is in an earlier L1 block",
                get(&self.l1_start_block),
            ),
            (
                "fulmen_da_safe_block",
                "The safe L2 block (data in L1 at the confirmation depth)",
                get(&self.safe),
            ),
            (
                "fulmen_da_finalized_block",
                "The finalized L2 block (data in a finalized L1 block)",
                get(&self.finalized),
            ),
            (
                "fulmen_da_unposted_blocks",
                "Sealed L2 blocks whose data is not in L1 yet",
                get(&self.unposted_blocks),
            ),
            (
                "fulmen_da_unposted_bytes",
                "Transaction bytes of those blocks",
                get(&self.unposted_bytes),
            ),
            (
                "fulmen_da_blob_fill_ratio",
                "Frame bytes over blob capacity, all blobs posted",
                ratio(&self.blob_data_bytes, get(&self.blobs) * BLOB_DATA_BYTES),
            ),
            (
                "fulmen_da_compression_ratio",
                "Compressed channel bytes over span-batch bytes",
                ratio(&self.channel_bytes, get(&self.rlp_bytes)),
            ),
            (
                "fulmen_da_held_up",
                "1 while posting is held up (L1 down, fees above the cap)",
                f64::from(u8::from(!self.held_up().is_empty())),
            ),
        ]
    }

    fn counters(&self) -> [(&'static str, &'static str, &AtomicU64); 11] {
        [
            (
                "fulmen_da_channels_total",
                "Channels built and logged",
                &self.channels,
            ),
            ("fulmen_da_blobs_total", "Blobs in them", &self.blobs),
            ("fulmen_da_txs_total", "L2 transactions in them", &self.txs),
            (
                "fulmen_da_plain_tx_bytes_total",
                "Their bytes as plain EIP-2718 envelopes",
                &self.plain_bytes,
            ),
            (
                "fulmen_da_rlp_bytes_total",
                "Span-batch bytes before compression",
                &self.rlp_bytes,
            ),
            (
                "fulmen_da_channel_bytes_total",
                "Channel bytes after compression",
                &self.channel_bytes,
            ),
            (
                "fulmen_da_blob_data_bytes_total",
                "Frame bytes in the blobs posted",
                &self.blob_data_bytes,
            ),
            (
                "fulmen_da_l1_fees_paid_gwei_total",
                "L1 fees paid for included batcher txs, gwei",
                &self.fees_paid_gwei,
            ),
            (
                "fulmen_da_replacements_total",
                "Batcher txs replaced with bumped fees",
                &self.replacements,
            ),
            (
                "fulmen_da_reorgs_total",
                "Included channels an L1 reorg dropped",
                &self.reorgs,
            ),
            (
                "fulmen_da_l1_errors_total",
                "L1 calls that failed",
                &self.l1_errors,
            ),
        ]
    }
}

impl Default for DaFigures {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_refusal_names_the_bound_and_the_cause() {
        let figures = DaFigures::new();
        figures.unposted_bytes.store(999, Relaxed);
        assert_eq!(figures.backlog_refusal(1000), None);
        figures.unposted_bytes.store(1000, Relaxed);
        figures.unposted_blocks.store(7, Relaxed);
        let plain = figures.backlog_refusal(1000).expect("refused");
        assert!(plain.contains("1000 bytes in 7 blocks") && plain.contains("L1 has not taken"));
        figures.set_held_up("L1 eth_getBlockByNumber at http://l1: connection refused");
        let held = figures.backlog_refusal(1000).expect("refused");
        assert!(held.contains("connection refused"), "{held}");
        assert!(held.contains("da.unposted_bytes_max 1000"), "{held}");
    }

    #[test]
    fn ratios_render_and_survive_zero_denominators() {
        let figures = DaFigures::new();
        let mut out = String::new();
        figures.render(&mut out);
        assert!(out.contains("fulmen_da_blob_fill_ratio 0\n"), "{out}");
        figures.blobs.store(2, Relaxed);
        figures.blob_data_bytes.store(130_044, Relaxed);
        figures.rlp_bytes.store(200, Relaxed);
        figures.channel_bytes.store(100, Relaxed);
        let mut out = String::new();
        figures.render(&mut out);
        assert!(out.contains("fulmen_da_blob_fill_ratio 0.5\n"), "{out}");
        assert!(out.contains("fulmen_da_compression_ratio 0.5\n"), "{out}");
    }
}
