//! Node metrics: plain atomics written where things happen (net cores, the
//! seq core, every executor's sampler) and rendered as Prometheus text on
//! request. Writing one is a relaxed atomic add; nothing on the hot path
//! locks.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::msg::SubmitError;

/// Why a transaction was refused, as a metric label.
pub const REJECT_REASONS: [&str; 14] = [
    "invalid",
    "record_too_large",
    "already_known",
    "nonce_too_low",
    "insufficient_funds",
    "fee_cap_too_low",
    "replacement_underpriced",
    "pool_full",
    "inbox_full",
    "halted",
    "shutting_down",
    "sequencer_gone",
    "da_backlog",
    "disk_low",
];

/// The label of a sequencer refusal.
pub fn reject_reason(e: &SubmitError) -> &'static str {
    match e {
        SubmitError::AlreadyKnown => "already_known",
        SubmitError::NonceTooLow { .. } => "nonce_too_low",
        SubmitError::InsufficientFunds { .. } => "insufficient_funds",
        SubmitError::FeeCapTooLow { .. } => "fee_cap_too_low",
        SubmitError::ReplacementUnderpriced => "replacement_underpriced",
        SubmitError::PoolFull => "pool_full",
        SubmitError::Invalid(_) => "invalid",
        SubmitError::RecordTooLarge { .. } => "record_too_large",
        SubmitError::Halted(_) => "halted",
        SubmitError::ShuttingDown => "shutting_down",
    }
}

/// Upper bounds of the latency histograms' buckets, in seconds.
const BUCKETS_S: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A latency histogram with Prometheus's cumulative buckets.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_S.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BUCKETS_S.len()],
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, latency: Duration) {
        let s = latency.as_secs_f64();
        if let Some(i) = BUCKETS_S.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(latency.as_nanos() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS_S.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// A per-core metric family: name, type, help, and how to read it.
type PerCore = (
    &'static str,
    &'static str,
    &'static str,
    fn(&CoreFigures) -> f64,
);

/// One executor's figures, written by its sampler.
#[derive(Debug)]
pub struct CoreFigures {
    /// CPU id.
    pub cpu: usize,
    /// Roles on it, e.g. `net+exec`.
    pub roles: String,
    /// Busy time (tasks and IO polling, not spinning or sleeping) per
    /// million of wall time over the last sample period.
    pub busy_ppm: AtomicU64,
    /// Tasks run since start.
    pub tasks: AtomicU64,
}

/// Every metric of the node.
#[derive(Debug)]
pub struct Metrics {
    /// Raw transactions received by net cores (sendRawTransaction[Sync]).
    pub txs_received: AtomicU64,
    rejected: [AtomicU64; REJECT_REASONS.len()],
    /// Preconfirmed transactions (released to their clients).
    pub preconfirmed: AtomicU64,
    /// Transactions parked for a nonce gap or deferred.
    pub parked: AtomicU64,
    /// Mini-blocks closed.
    pub mini_blocks: AtomicU64,
    /// Mini-blocks that waited for more transactions with the log idle
    /// (group commit under load).
    pub group_commit_waits: AtomicU64,
    /// Blocks sealed.
    pub blocks: AtomicU64,
    /// Requests net cores put in the seq inboxes.
    pub inbox_sent: AtomicU64,
    /// Requests the seq core took from them.
    pub inbox_taken: AtomicU64,
    /// Log records sent to the storage core and not yet durable.
    pub storage_in_flight: AtomicU64,
    /// Log flush latency (as the storage core measured it).
    pub flush_latency: Histogram,
    /// eth_sendRawTransactionSync latency, receipt replies only.
    pub sync_send_latency: Histogram,
    /// Accounts in the state.
    pub accounts: AtomicU64,
    /// Storage slots in the state.
    pub slots: AtomicU64,
    /// Chain events a net core missed because its event channel was full.
    pub events_dropped: AtomicU64,
    /// Open WebSocket connections.
    pub ws_connections: AtomicU64,
    /// Active subscriptions.
    pub ws_subscriptions: AtomicU64,
    /// Subscription notifications queued to clients.
    pub ws_notifications: AtomicU64,
    /// WebSocket connections closed because their send buffer was full.
    pub ws_slow_consumers: AtomicU64,
    /// Subscriptions replaying from the log (`fromMiniBlock`) now.
    pub ws_resumes: AtomicU64,
    /// Mini-blocks read back from the log for resuming subscriptions.
    pub ws_resumed_mini_blocks: AtomicU64,
    /// A replica: from a mini-block's close on its upstream's clock to it
    /// being visible here (durable in this node's log).
    pub replica_lag: Histogram,
    /// A replica: the newest mini-block it knows its upstream has.
    pub replica_upstream_mini_block: AtomicU64,
    /// A replica: mini-blocks its upstream has that it does not serve yet.
    pub replica_lag_mini_blocks: AtomicU64,
    /// A replica: the last mini-block's lag, in microseconds.
    pub replica_lag_us: AtomicU64,
    /// A replica: connections to its upstream made again after a loss.
    pub replica_reconnects: AtomicU64,
    /// History writes that failed (retried).
    pub history_write_errors: AtomicU64,
    /// Blocks in the history store.
    pub history_blocks: AtomicU64,
    /// The oldest block the history store keeps (`history = "recent"`
    /// prunes older ones; 0 on an archive node).
    pub history_oldest_block: AtomicU64,
    /// Bytes of history chunks and log segments deleted by pruning.
    pub pruned_bytes: AtomicU64,
    /// Bytes of the datadir's log, checkpoints and history.
    pub datadir_bytes: AtomicU64,
    /// Bytes free for the node on the datadir's filesystem (measured once
    /// a second; `u64::MAX` until then).
    pub disk_free_bytes: AtomicU64,
    /// Below this many free bytes the node takes no transactions (0: no
    /// floor).
    pub disk_free_min_bytes: AtomicU64,
    /// When (µs on [`now_us`]'s monotonic clock) a core last ended a
    /// [`LOAD_WINDOW`] at least [`LOADED_BUSY_PPM`] busy ([`Metrics::loaded`]).
    busy_at_us: AtomicU64,
    /// The DA batcher's figures.
    pub da: crate::da_figures::DaFigures,
    cores: Mutex<Vec<Arc<CoreFigures>>>,
}

/// The node's metrics.
pub static METRICS: Metrics = Metrics {
    txs_received: AtomicU64::new(0),
    rejected: [const { AtomicU64::new(0) }; REJECT_REASONS.len()],
    preconfirmed: AtomicU64::new(0),
    parked: AtomicU64::new(0),
    mini_blocks: AtomicU64::new(0),
    group_commit_waits: AtomicU64::new(0),
    blocks: AtomicU64::new(0),
    inbox_sent: AtomicU64::new(0),
    inbox_taken: AtomicU64::new(0),
    storage_in_flight: AtomicU64::new(0),
    flush_latency: Histogram::new(),
    sync_send_latency: Histogram::new(),
    accounts: AtomicU64::new(0),
    slots: AtomicU64::new(0),
    events_dropped: AtomicU64::new(0),
    ws_connections: AtomicU64::new(0),
    ws_subscriptions: AtomicU64::new(0),
    ws_notifications: AtomicU64::new(0),
    ws_slow_consumers: AtomicU64::new(0),
    ws_resumes: AtomicU64::new(0),
    ws_resumed_mini_blocks: AtomicU64::new(0),
    replica_lag: Histogram::new(),
    replica_upstream_mini_block: AtomicU64::new(0),
    replica_lag_mini_blocks: AtomicU64::new(0),
    replica_lag_us: AtomicU64::new(0),
    replica_reconnects: AtomicU64::new(0),
    history_write_errors: AtomicU64::new(0),
    history_blocks: AtomicU64::new(0),
    history_oldest_block: AtomicU64::new(0),
    pruned_bytes: AtomicU64::new(0),
    datadir_bytes: AtomicU64::new(0),
    disk_free_bytes: AtomicU64::new(u64::MAX),
    disk_free_min_bytes: AtomicU64::new(0),
    busy_at_us: AtomicU64::new(0),
    da: crate::da_figures::DaFigures::new(),
    cores: Mutex::new(Vec::new()),
};

impl Metrics {
    /// Counts a refusal.
    pub fn reject(&self, reason: &'static str) {
        let i = REJECT_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.rejected[i].fetch_add(1, Relaxed);
    }

    /// Why new transactions are refused while the datadir's disk is
    /// nearly full, if it is (the history writer measures it).
    pub fn disk_refusal(&self) -> Option<String> {
        let free = self.disk_free_bytes.load(Relaxed);
        let min = self.disk_free_min_bytes.load(Relaxed);
        (free < min).then(|| {
            format!(
                "disk nearly full: {} MiB free on the datadir's filesystem, below storage.disk_free_min_mb = {}; \
                 no new transactions until space is freed (reads go on)",
                free >> 20,
                min >> 20
            )
        })
    }

    /// Registers an executor; its sampler writes the returned figures.
    pub fn register_core(&self, cpu: usize, roles: String) -> Arc<CoreFigures> {
        let figures = Arc::new(CoreFigures {
            cpu,
            roles,
            busy_ppm: AtomicU64::new(0),
            tasks: AtomicU64::new(0),
        });
        let mut cores = self.cores.lock().unwrap_or_else(|e| e.into_inner());
        cores.retain(|c| c.cpu != cpu);
        cores.push(figures.clone());
        cores.sort_by_key(|c| c.cpu);
        figures
    }

    /// Everything in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        self.render_cores(&mut out);
        self.render_queues(&mut out);
        self.render_counters(&mut out);
        self.render_gauges(&mut out);
        self.da.render(&mut out);
        self.flush_latency.render(
            &mut out,
            "fulmen_log_flush_seconds",
            "Log flush latency (write and fdatasync of a group)",
        );
        self.sync_send_latency.render(
            &mut out,
            "fulmen_sync_send_seconds",
            "eth_sendRawTransactionSync latency from request decoded to receipt",
        );
        self.replica_lag.render(
            &mut out,
            "fulmen_replica_lag_seconds",
            "A replica: from a mini-block's close on its upstream (upstream clock) to it being served here",
        );
        out
    }

    /// Per-executor busy ratio and task count.
    fn render_cores(&self, out: &mut String) {
        let cores = self.cores.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let per_core: [PerCore; 2] = [
            (
                "fulmen_core_busy_ratio",
                "gauge",
                "Busy fraction of each executor (tasks and IO, not spinning) over the last second",
                |c| c.busy_ppm.load(Relaxed) as f64 / 1e6,
            ),
            (
                "fulmen_core_tasks_total",
                "counter",
                "Tasks run by each executor",
                |c| c.tasks.load(Relaxed) as f64,
            ),
        ];
        for (name, kind, help, value) in per_core {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for c in &cores {
                let _ = writeln!(
                    out,
                    "{name}{{cpu=\"{}\",roles=\"{}\"}} {}",
                    c.cpu,
                    c.roles,
                    value(c)
                );
            }
        }
    }

    /// Depth of the seq inbox and of the log's in-flight records.
    fn render_queues(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP fulmen_queue_depth Messages waiting in each inbox\n# TYPE fulmen_queue_depth gauge"
        );
        let sent = self.inbox_sent.load(Relaxed);
        let taken = self.inbox_taken.load(Relaxed);
        let _ = writeln!(
            out,
            "fulmen_queue_depth{{queue=\"seq_inbox\"}} {}",
            sent.saturating_sub(taken)
        );
        let _ = writeln!(
            out,
            "fulmen_queue_depth{{queue=\"storage\"}} {}",
            self.storage_in_flight.load(Relaxed)
        );
    }

    /// The counters, rejections by reason included.
    fn render_counters(&self, out: &mut String) {
        render_one(
            out,
            ("fulmen_txs_received_total", "counter"),
            "Raw transactions received",
            self.txs_received.load(Relaxed) as f64,
        );
        let _ = writeln!(
            out,
            "# HELP fulmen_txs_rejected_total Transactions refused, by reason\n# TYPE fulmen_txs_rejected_total counter"
        );
        for (reason, n) in REJECT_REASONS.iter().zip(&self.rejected) {
            let _ = writeln!(
                out,
                "fulmen_txs_rejected_total{{reason=\"{reason}\"}} {}",
                n.load(Relaxed)
            );
        }
        for (name, help, v) in [
            (
                "fulmen_txs_parked_total",
                "Transactions parked (nonce gap) or deferred",
                &self.parked,
            ),
            (
                "fulmen_preconfirmations_total",
                "Transactions preconfirmed",
                &self.preconfirmed,
            ),
            (
                "fulmen_mini_blocks_total",
                "Mini-blocks closed",
                &self.mini_blocks,
            ),
            (
                "fulmen_group_commit_waits_total",
                "Mini-blocks that waited for more transactions with the log idle (group commit at saturation)",
                &self.group_commit_waits,
            ),
            ("fulmen_blocks_total", "Blocks sealed", &self.blocks),
            (
                "fulmen_events_dropped_total",
                "Chain events a net core missed (its subscribers were disconnected)",
                &self.events_dropped,
            ),
            (
                "fulmen_ws_notifications_total",
                "Subscription notifications queued to WebSocket clients",
                &self.ws_notifications,
            ),
            (
                "fulmen_ws_slow_consumers_total",
                "WebSocket connections closed because their send buffer was full",
                &self.ws_slow_consumers,
            ),
            (
                "fulmen_replica_reconnects_total",
                "A replica: connections to its upstream made again after a loss",
                &self.replica_reconnects,
            ),
            (
                "fulmen_ws_resumed_mini_blocks_total",
                "Mini-blocks read back from the log for subscriptions resuming with fromMiniBlock",
                &self.ws_resumed_mini_blocks,
            ),
            (
                "fulmen_history_read_errors_total",
                "History reads that failed (IO or a damaged record; answered as missing)",
                &crate::history::READ_ERRORS,
            ),
            (
                "fulmen_history_write_errors_total",
                "History store writes that failed (retried; blocks stay in RAM meanwhile)",
                &self.history_write_errors,
            ),
            (
                "fulmen_pruned_bytes_total",
                "Bytes of history chunks and log segments deleted by pruning (history = recent)",
                &self.pruned_bytes,
            ),
        ] {
            render_one(out, (name, "counter"), help, v.load(Relaxed) as f64);
        }
    }

    /// The gauges of state size and WebSocket use.
    fn render_gauges(&self, out: &mut String) {
        for (name, help, v) in [
            (
                "fulmen_state_accounts",
                "Accounts in the state",
                &self.accounts,
            ),
            (
                "fulmen_state_slots",
                "Storage slots in the state",
                &self.slots,
            ),
            (
                "fulmen_ws_connections",
                "Open WebSocket connections",
                &self.ws_connections,
            ),
            (
                "fulmen_ws_subscriptions",
                "Active eth_subscribe subscriptions",
                &self.ws_subscriptions,
            ),
            (
                "fulmen_replica_upstream_mini_block",
                "A replica: the newest mini-block it knows its upstream has",
                &self.replica_upstream_mini_block,
            ),
            (
                "fulmen_replica_lag_mini_blocks",
                "A replica: mini-blocks its upstream has that it does not serve yet",
                &self.replica_lag_mini_blocks,
            ),
            (
                "fulmen_replica_lag_microseconds",
                "A replica: the last mini-block's lag behind its upstream's close (upstream clock)",
                &self.replica_lag_us,
            ),
            (
                "fulmen_ws_resumes",
                "Subscriptions replaying from the log (fromMiniBlock) now",
                &self.ws_resumes,
            ),
            (
                "fulmen_history_blocks",
                "Sealed blocks in the history store",
                &self.history_blocks,
            ),
            (
                "fulmen_history_oldest_block",
                "The oldest sealed block the node serves (older ones were pruned)",
                &self.history_oldest_block,
            ),
            (
                "fulmen_datadir_bytes",
                "Bytes on disk of the datadir (log, checkpoints, history)",
                &self.datadir_bytes,
            ),
            (
                "fulmen_disk_free_bytes",
                "Bytes free for the node on the datadir's filesystem",
                &self.disk_free_bytes,
            ),
        ] {
            render_one(out, (name, "gauge"), help, v.load(Relaxed) as f64);
        }
    }
}

/// One unlabelled metric: its help, type and value.
fn render_one(out: &mut String, (name, kind): (&str, &str), help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The window over which each executor's sampler judges whether its core
/// is loaded ([`Metrics::loaded`]).
pub const LOAD_WINDOW: Duration = Duration::from_millis(100);

/// A core busy at least this share of a [`LOAD_WINDOW`] (per million) is
/// loaded. On the 2-CPU box at half its sustained rate the busiest core
/// reads 0.35–0.45 while group commit waits and 0.55–0.75 while it does
/// not; at saturation 0.86–0.99.
pub const LOADED_BUSY_PPM: u64 = 800_000;

/// Microseconds on a monotonic clock (from the first call in this
/// process, plus one so that it is never 0): a wall-clock step must not
/// hold the load gate open or shut.
fn now_us() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    start.elapsed().as_micros() as u64 + 1
}

impl Metrics {
    /// True while some executor core is loaded: one of the last two
    /// [`LOAD_WINDOW`]s of one of them was at least [`LOADED_BUSY_PPM`]
    /// busy. Work that trades latency for CPU (group commit) does so only
    /// then: with headroom on every core, latency comes first.
    pub fn loaded(&self) -> bool {
        let at = self.busy_at_us.load(Relaxed);
        at != 0 && now_us().saturating_sub(at) <= 2 * LOAD_WINDOW.as_micros() as u64
    }

    /// Notes that a core is loaded now (its sampler; tests).
    pub fn note_loaded(&self) {
        self.busy_at_us.store(now_us(), Relaxed);
    }
}

/// Samples the current executor's figures into `figures`, forever: its
/// busy ratio every `period`, and whether it is loaded every
/// [`LOAD_WINDOW`] ([`Metrics::loaded`]). Run it in a background task
/// queue on each executor. (glommio hands out its executor statistics as
/// deltas: each read resets them.)
pub async fn sample_executor(figures: Arc<CoreFigures>, period: Duration) {
    let executor = glommio::executor();
    let _ = executor.executor_stats();
    let mut last = std::time::Instant::now();
    let (mut busy, mut wall) = (Duration::ZERO, Duration::ZERO);
    loop {
        glommio::timer::sleep(LOAD_WINDOW.min(period)).await;
        let stats = executor.executor_stats();
        let now = std::time::Instant::now();
        let window = now - last;
        last = now;
        let runtime = stats.total_runtime();
        if runtime.as_secs_f64() * 1e6 >= window.as_secs_f64() * LOADED_BUSY_PPM as f64 {
            METRICS.note_loaded();
        }
        figures.tasks.fetch_add(stats.tasks_executed(), Relaxed);
        busy += runtime;
        wall += window;
        if wall >= period {
            let ppm = (busy.as_secs_f64() / wall.as_secs_f64().max(1e-9) * 1e6).min(1e6);
            figures.busy_ppm.store(ppm as u64, Relaxed);
            (busy, wall) = (Duration::ZERO, Duration::ZERO);
        }
    }
}
