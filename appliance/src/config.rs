//! Node configuration: TOML file, then CLI flags on top. Every key has a
//! default documented here and in README.md.

use std::net::SocketAddr;
use std::path::PathBuf;

use alloy_primitives::Address;
use fulmen_netio::eth::RpcLimits;
use fulmen_netio::ws::WsLimits;
use serde::Deserialize;

/// The whole node configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// JSON-RPC listen address. Default 127.0.0.1:8545.
    pub rpc_addr: SocketAddr,
    /// A second listen address for WebSocket (and HTTP) JSON-RPC; none (the
    /// default): WebSocket is served on `rpc_addr` only, by upgrade.
    pub ws_addr: Option<SocketAddr>,
    /// Prometheus `/metrics` listen address; none (the default) serves no
    /// metrics. Keep it on loopback or a management network.
    pub metrics_addr: Option<SocketAddr>,
    /// Data directory. Default `./fulmen-data`.
    pub datadir: PathBuf,
    /// geth-style genesis.json; none means the embedded dev genesis.
    pub genesis: Option<PathBuf>,
    /// Block time. Default 1000 ms.
    pub block_time_ms: u64,
    /// Longest a mini-block stays open. Default 10 ms.
    pub mini_block_max_ms: u64,
    /// Group commit under load: while a core is loaded and transactions
    /// arrive densely, a mini-block waits up to this long for more once
    /// the log is idle, so that one flush carries many. Never with
    /// headroom on every core, nor where waiting slows the senders down;
    /// 0 turns it off. Default 1000 µs.
    pub group_commit_us: u64,
    /// Block gas limit. Default 1,000,000,000 (an L2 block is 1 s of traffic).
    pub block_gas_limit: u64,
    /// Most gas one transaction may ask for. Default 16,777,216 (2^24,
    /// EIP-7825): bounds how long one transaction holds the sequencer. A
    /// smaller block gas limit caps it too.
    pub tx_gas_limit_max: u64,
    /// Most bytes one transaction's entry (bytes, logs, state changes) may
    /// take in the log; a transaction over it is refused after execution
    /// with nothing applied. Default 4 MiB, above what a transaction within
    /// the default gas cap can produce.
    pub tx_record_bytes_max: usize,
    /// Most bytes of one mini-block's log record; a mini-block closes before
    /// it would grow past it. Default 16 MiB (lowered to fit a segment).
    pub mini_block_bytes_max: usize,
    /// The base fee never drops below this. Default 1,000,000 wei (0.001 gwei).
    pub base_fee_floor_wei: u64,
    /// EIP-1559 max change denominator. Default 8 (Ethereum's).
    pub base_fee_max_change_denominator: u64,
    /// EIP-1559 elasticity multiplier. Default 2 (Ethereum's).
    pub base_fee_elasticity: u64,
    /// Fee recipient. Default: the genesis coinbase.
    pub coinbase: Option<Address>,
    /// JSON-RPC limits (`[rpc]`; defaults in `RpcLimits`).
    pub rpc: RpcLimits,
    /// WebSocket limits (`[ws]`; defaults in `WsLimits`).
    pub ws: WsLimits,
    /// Transaction pool limits.
    pub pool: PoolConfig,
    /// `durable` (default): a receipt is released only after its log
    /// record is flushed. `memory`: released after execution; the log is
    /// still written, so a crash loses at most the last flush's worth.
    pub durability: Durability,
    /// The log (`[storage]`).
    pub storage: StorageConfig,
    /// `[memory]`.
    pub memory: MemoryConfig,
    /// The core map.
    pub cores: CoreMap,
    /// Posting to L1 (`[da]`).
    pub da: crate::da::DaConfig,
}

/// When receipts are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Durability {
    /// After the record is flushed.
    Durable,
    /// After execution.
    Memory,
}

/// Which history the node keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HistoryMode {
    /// Every block since genesis.
    Archive,
    /// The last `storage.history_blocks` blocks.
    Recent,
}

/// `[memory]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MemoryConfig {
    /// Lock all memory (mlockall, current and future) so that no page of the
    /// hot state is ever swapped or faulted back in. Needs a memlock limit
    /// above the node's size. Default false.
    pub mlockall: bool,
    /// Back the heap (and so the hot state) with transparent huge pages: the
    /// node restarts itself with jemalloc's `thp:always`. Needs THP `always`
    /// or `madvise` in /sys/kernel/mm/transparent_hugepage/enabled.
    /// Default false.
    pub huge_pages: bool,
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StorageConfig {
    /// Size of each preallocated log segment. Default 64 MiB.
    pub segment_mb: u64,
    /// A checkpoint (full state image) every this many blocks; 0 for none.
    /// Default 600 (ten minutes of 1 s blocks).
    pub checkpoint_blocks: u64,
    /// Sealed blocks kept decoded in RAM; older ones are read from the
    /// history store on disk. Default 16.
    pub memory_blocks: u64,
    /// The node refuses to start, and takes no new transactions while
    /// running, with less than this many MiB free on the datadir's
    /// filesystem (0: no floor). Default 512.
    pub disk_free_min_mb: u64,
    /// `archive` keeps every block; `recent` keeps the last
    /// `history_blocks` (and never one whose data is not yet finalized on
    /// L1, nor the log a kept checkpoint needs): older log segments and
    /// history chunks are deleted, and older blocks answer "pruned history
    /// unavailable". Default archive.
    pub history: HistoryMode,
    /// Blocks a `recent` node keeps, at least 1 (it keeps more while its
    /// oldest checkpoint or L1 finality is further back). Default 86400 (a
    /// day of 1 s blocks).
    pub history_blocks: u64,
    /// Size of each history chunk file in MiB, 1..1024: pruning deletes
    /// whole chunks. Default 1024.
    pub history_chunk_mb: u64,
}

/// Most sealed blocks `[storage] memory_blocks` keeps in RAM.
const MEMORY_BLOCKS_MAX: u64 = 100_000;

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            segment_mb: 64,
            checkpoint_blocks: 120,
            memory_blocks: 16,
            disk_free_min_mb: 512,
            history: HistoryMode::Archive,
            history_blocks: 86_400,
            history_chunk_mb: 1024,
        }
    }
}

/// `[pool]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PoolConfig {
    /// Capacity of each net core's inbox to the sequencer. Default 8192.
    pub inbox_capacity: usize,
    /// Parked (future-nonce) transactions per sender. Default 64.
    pub parked_per_sender_max: usize,
    /// Parked transactions in all. Default 16,384.
    pub parked_total_max: usize,
    /// Bytes of parked transactions in all. Default 32 MiB.
    pub parked_bytes_max: usize,
    /// A parked transaction is dropped after this long. Default 600 s.
    pub parked_lifetime_s: u64,
    /// Ready transactions waiting for the next block. Default 65,536.
    pub deferred_max: usize,
}

/// `[cores]`: CPU ids for each role (DESIGN.md).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CoreMap {
    /// Net cores. Default [0].
    pub net: Vec<usize>,
    /// The sequencer core. Default 1 (0 on a 1-CPU machine).
    pub seq: usize,
    /// Execution / merkleization workers. Default [0]; empty runs the
    /// state-root worker on the seq core.
    pub exec: Vec<usize>,
    /// Storage cores. Default [1] (0 on a 1-CPU machine); the log writer
    /// runs on the first.
    pub storage: Vec<usize>,
    /// DA core: the batcher thread is pinned to it. Default none: the
    /// batcher shares the exec CPUs at a lower priority.
    pub da: Option<usize>,
    /// How long an idle executor spins before it sleeps. Spinning saves the
    /// wake-up of a sleeping core (a syscall and, in a VM, timer and IPI
    /// exits) at the price of CPU time, which pays only on a CPU no other
    /// work wants. Default (unset): 200 µs on the CPUs the kernel isolates
    /// (`/sys/devices/system/cpu/isolated`, from `isolcpus=`), 0 on shared
    /// ones (see BENCHMARKS.md); a value applies to every executor.
    pub spin_before_park_us: Option<u64>,
    /// Refuse to start when seq shares its CPU or its physical core (SMT
    /// siblings) with another role, or DA shares seq's core. Default false:
    /// small machines must share.
    pub strict: bool,
}

/// How long an executor on an isolated CPU spins before it sleeps, unless
/// `cores.spin_before_park_us` says.
pub(crate) const SPIN_ON_ISOLATED_US: u64 = 200;

impl CoreMap {
    /// How long the executor of `cpu` spins before it sleeps, given the
    /// CPUs the kernel isolates.
    pub(crate) fn spin_us(&self, cpu: usize, isolated: &[usize]) -> u64 {
        self.spin_before_park_us
            .unwrap_or(if isolated.contains(&cpu) {
                SPIN_ON_ISOLATED_US
            } else {
                0
            })
    }

    /// The CPU of the state-root worker: the first exec CPU, else seq's.
    /// (Every exec CPU runs simulation workers.)
    pub(crate) fn merkle_cpu(&self) -> usize {
        self.exec.first().copied().unwrap_or(self.seq)
    }

    /// The CPU of the log and checkpoint writers: the first storage CPU.
    pub(crate) fn storage_cpu(&self) -> usize {
        self.storage.first().copied().unwrap_or(self.seq)
    }

    /// The CPUs that hash state roots together: every exec CPU, when there
    /// are two or more and none also runs net, seq or storage (the
    /// state-root worker then hashes a block's trie in one go rather than
    /// in short steps, which only a CPU of its own can afford).
    pub(crate) fn state_hash_cpus(&self) -> Option<Vec<usize>> {
        let own = |cpu: &usize| {
            !self.net.contains(cpu) && *cpu != self.seq && !self.storage.contains(cpu)
        };
        (self.exec.len() > 1 && self.exec.iter().all(own)).then(|| self.exec.clone())
    }

    /// What the map asks for that the node does not use, to say at start-up.
    pub(crate) fn unused(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.storage.len() > 1 {
            notes.push(format!(
                "cores.storage lists {:?}: the log and checkpoint writers run on the first, CPU {}; \
                 the others get no storage work",
                self.storage,
                self.storage_cpu()
            ));
        }
        notes
    }

    /// The map as `fulmen-tuning` sees it.
    pub(crate) fn to_tuning(&self) -> fulmen_tuning::CoreMap {
        fulmen_tuning::CoreMap {
            net: self.net.clone(),
            seq: self.seq,
            exec: self.exec.clone(),
            storage: self.storage.clone(),
            da: self.da,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rpc_addr: SocketAddr::from(([127, 0, 0, 1], 8545)),
            datadir: PathBuf::from("fulmen-data"),
            ws_addr: None,
            metrics_addr: None,
            genesis: None,
            block_time_ms: 1000,
            mini_block_max_ms: 10,
            group_commit_us: 1000,
            block_gas_limit: 1_000_000_000,
            tx_gas_limit_max: fulmen_chain::spec::TX_GAS_LIMIT_MAX_DEFAULT,
            tx_record_bytes_max: fulmen_exec::sequencer::PoolLimits::default().tx_record_bytes_max,
            mini_block_bytes_max: fulmen_exec::sequencer::PoolLimits::default()
                .mini_block_bytes_max,
            base_fee_floor_wei: 1_000_000,
            base_fee_max_change_denominator: 8,
            base_fee_elasticity: 2,
            coinbase: None,
            rpc: RpcLimits::default(),
            ws: WsLimits::default(),
            pool: PoolConfig::default(),
            durability: Durability::Durable,
            storage: StorageConfig::default(),
            memory: MemoryConfig::default(),
            cores: CoreMap::default(),
            da: crate::da::DaConfig::default(),
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        let d = fulmen_exec::sequencer::PoolLimits::default();
        Self {
            inbox_capacity: 8192,
            parked_per_sender_max: d.parked_per_sender_max,
            parked_total_max: d.parked_total_max,
            parked_bytes_max: d.parked_bytes_max,
            parked_lifetime_s: d.parked_lifetime_s,
            deferred_max: d.deferred_max,
        }
    }
}

impl Default for CoreMap {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let other = usize::from(cpus > 1);
        Self {
            // Two CPUs: an acceptor on each (`fulmen tune`'s 2-CPU map).
            net: if cpus == 2 { vec![0, 1] } else { vec![0] },
            seq: other,
            exec: vec![0],
            storage: vec![other],
            da: None,
            spin_before_park_us: None,
            strict: false,
        }
    }
}

/// A configuration error, worded for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(pub(crate) String);

impl Config {
    /// Reads a TOML config file.
    pub(crate) fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError(format!("config {}: {e}", path.display())))
    }

    /// The sequencer's timing.
    pub(crate) fn seq_timing(&self) -> fulmen_exec::seq_core::SeqTiming {
        fulmen_exec::seq_core::SeqTiming {
            block_time_ms: self.block_time_ms,
            mini_block_max_ms: self.mini_block_max_ms,
            group_commit_us: self.group_commit_us,
        }
    }

    /// Checks values that would otherwise fail later or silently misbehave.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.to_string()));
        if self.block_time_ms < 1000 {
            // Block timestamps are in seconds and must increase.
            return bad("block_time_ms must be at least 1000 (block timestamps are whole seconds)");
        }
        if self.mini_block_max_ms == 0 || self.mini_block_max_ms > self.block_time_ms {
            return bad("mini_block_max_ms must be between 1 and block_time_ms");
        }
        if self.group_commit_us > self.mini_block_max_ms.saturating_mul(1000) {
            return bad("group_commit_us must be at most mini_block_max_ms (in µs)");
        }
        if self.block_gas_limit < 21_000 {
            return bad("block_gas_limit must be at least 21000");
        }
        if self.tx_gas_limit_max < 21_000 {
            return bad("tx_gas_limit_max must be at least 21000");
        }
        if self.tx_record_bytes_max < 64 * 1024
            || self.mini_block_bytes_max < self.tx_record_bytes_max + 4096
        {
            return bad(
                "tx_record_bytes_max must be >= 65536 and mini_block_bytes_max at least 4096 above it",
            );
        }
        if self.base_fee_max_change_denominator == 0 || self.base_fee_elasticity == 0 {
            return bad("base_fee_max_change_denominator and base_fee_elasticity must be non-zero");
        }
        if self.rpc.batch_max == 0 || self.rpc.body_bytes_max < 1024 {
            return bad("rpc.batch_max must be >= 1 and rpc.body_bytes_max >= 1024");
        }
        if self.ws.connections_max == 0
            || self.ws.subscriptions_per_connection_max == 0
            || self.ws.requests_in_flight_max == 0
        {
            return bad(
                "ws.connections_max, ws.subscriptions_per_connection_max and \
                 ws.requests_in_flight_max must be >= 1",
            );
        }
        if self.ws.message_bytes_max < 1024 || self.ws.send_buffer_bytes_max < 1024 {
            return bad("ws.message_bytes_max and ws.send_buffer_bytes_max must be >= 1024");
        }
        if self.ws.ping_interval_ms == 0 || self.ws.idle_timeout_ms <= self.ws.ping_interval_ms {
            return bad("ws.ping_interval_ms must be >= 1 and below ws.idle_timeout_ms");
        }
        if self.rpc.header_read_timeout_ms == 0
            || self.rpc.body_read_timeout_ms == 0
            || self.rpc.idle_timeout_ms == 0
        {
            return bad(
                "rpc.header_read_timeout_ms, rpc.body_read_timeout_ms and rpc.idle_timeout_ms \
                 must be >= 1",
            );
        }
        if self.rpc.connections_per_core_max == 0 || self.rpc.connections_per_ip_max == 0 {
            return bad("rpc.connections_per_core_max and rpc.connections_per_ip_max must be >= 1");
        }
        // Response and send budgets (issue 12): each at least 1 KiB, and a
        // node-wide budget holds at least one answer of the largest size.
        if self.rpc.response_bytes_max < 1024 || self.rpc.batch_response_bytes_max < 1024 {
            return bad("rpc.response_bytes_max and rpc.batch_response_bytes_max must be >= 1024");
        }
        if self.rpc.responses_in_flight_bytes_max
            < self
                .rpc
                .response_bytes_max
                .max(self.rpc.batch_response_bytes_max)
        {
            return bad(
                "rpc.responses_in_flight_bytes_max must be at least rpc.response_bytes_max \
                 and rpc.batch_response_bytes_max",
            );
        }
        if self.ws.send_buffer_bytes_total_max < 1024 {
            return bad("ws.send_buffer_bytes_total_max must be >= 1024");
        }
        self.validate_simulations()?;
        if self.rpc.sync_timeout_ms_default > self.rpc.sync_timeout_ms_max {
            return bad("rpc.sync_timeout_ms_default must not exceed rpc.sync_timeout_ms_max");
        }
        if !(1..=4096).contains(&self.storage.segment_mb) {
            return bad("storage.segment_mb must be between 1 and 4096");
        }
        if !(1..=MEMORY_BLOCKS_MAX).contains(&self.storage.memory_blocks) {
            return bad("storage.memory_blocks must be between 1 and 100000");
        }
        self.validate_history()?;
        if self.cores.storage.is_empty() {
            return bad("cores.storage needs at least one CPU (the log writer)");
        }
        if self.pool.inbox_capacity == 0 || self.pool.parked_total_max == 0 {
            return bad("pool.inbox_capacity and pool.parked_total_max must be >= 1");
        }
        if self.pool.parked_bytes_max < 256 * 1024 || self.pool.parked_lifetime_s == 0 {
            return bad("pool.parked_bytes_max must be >= 262144 and pool.parked_lifetime_s >= 1");
        }
        self.da.validate().map_err(ConfigError)?;
        self.validate_cores()
    }

    /// `[storage]`'s history settings.
    fn validate_history(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.to_string()));
        let storage = &self.storage;
        if !(1..=1024).contains(&storage.history_chunk_mb) {
            return bad("storage.history_chunk_mb must be between 1 and 1024");
        }
        if storage.history == HistoryMode::Recent {
            if storage.history_blocks == 0 {
                return bad("storage.history_blocks must be at least 1");
            }
            if storage.checkpoint_blocks == 0 {
                return bad(
                    "storage.history = \"recent\" needs checkpoints (storage.checkpoint_blocks > 0): \
                     a pruned log boots only from one",
                );
            }
        }
        Ok(())
    }

    /// Deadlines become `Instant + Duration`: bounded so that no value can
    /// overflow a clock, and every pool has at least one worker.
    fn validate_simulations(&self) -> Result<(), ConfigError> {
        const DAY_MS: u64 = 86_400_000;
        let rpc = &self.rpc;
        let timeouts = [
            ("rpc.header_read_timeout_ms", rpc.header_read_timeout_ms),
            ("rpc.body_read_timeout_ms", rpc.body_read_timeout_ms),
            ("rpc.idle_timeout_ms", rpc.idle_timeout_ms),
            ("rpc.call_timeout_ms", rpc.call_timeout_ms),
            ("rpc.batch_call_timeout_ms", rpc.batch_call_timeout_ms),
            ("rpc.sync_timeout_ms_max", rpc.sync_timeout_ms_max),
            ("ws.ping_interval_ms", self.ws.ping_interval_ms),
            ("ws.idle_timeout_ms", self.ws.idle_timeout_ms),
            ("ws.close_grace_ms", self.ws.close_grace_ms),
        ];
        for (key, value) in timeouts {
            if value == 0 || value > DAY_MS {
                return Err(ConfigError(format!(
                    "{key} must be between 1 and {DAY_MS} (a day), not {value}"
                )));
            }
        }
        if rpc.witness_blocks > 4096 {
            return Err(ConfigError(
                "rpc.witness_blocks must be at most 4096 (each block's witness stays in RAM)"
                    .into(),
            ));
        }
        if !(1..=256).contains(&rpc.simulation_workers)
            || rpc.simulation_queue_max > 65_536
            || rpc.simulation_gas_budget == 0
            || rpc.batch_simulation_gas_budget == 0
        {
            return Err(ConfigError(
                "rpc.simulation_workers must be 1..=256, rpc.simulation_queue_max at most 65536, \
                 and the simulation gas budgets >= 1"
                    .into(),
            ));
        }
        Ok(())
    }

    fn validate_cores(&self) -> Result<(), ConfigError> {
        // Whether the CPUs exist is checked against the machine at start-up
        // (`fulmen_tuning::check`), so that `fulmen tune --check` can judge a
        // map for another machine.
        let map = &self.cores;
        if map.net.is_empty() {
            return Err(ConfigError("cores.net needs at least one CPU".into()));
        }
        if map.spin_before_park_us.is_some_and(|us| us > 10_000) {
            return Err(ConfigError(
                "cores.spin_before_park_us must be at most 10000".into(),
            ));
        }
        let mut net = map.net.clone();
        net.sort_unstable();
        net.dedup();
        if net.len() != map.net.len() {
            return Err(ConfigError("cores.net lists a CPU twice".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's "every key, with its default" block is a config the
    /// node takes, and its values are the defaults, commented keys aside.
    #[test]
    fn the_readme_config_block_is_the_defaults() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("## Configuration")
            .nth(1)
            .expect("a Configuration section");
        let block = section
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a toml block");
        let config: Config = toml::from_str(block).expect("the README's block parses");
        config.validate().expect("and is valid");
        let defaults = Config::default();
        // Everything but the core map, whose default depends on the machine.
        let mut config = config;
        config.cores = defaults.cores.clone();
        assert_eq!(format!("{config:?}"), format!("{defaults:?}"));
    }

    /// State roots are hashed on several CPUs only when the exec CPUs are
    /// two or more and run nothing else.
    #[test]
    fn state_roots_use_the_exec_cpus_only_when_they_are_their_own() {
        let map = |text: &str| -> Config { toml::from_str(text).expect("parses") };
        let own = map("[cores]\nnet = [0, 1]\nseq = 2\nstorage = [3]\nexec = [4, 5, 6]\n");
        assert_eq!(own.cores.state_hash_cpus(), Some(vec![4, 5, 6]));
        let one = map("[cores]\nnet = [0]\nseq = 1\nstorage = [1]\nexec = [2]\n");
        assert_eq!(
            one.cores.state_hash_cpus(),
            None,
            "one exec CPU: budgeted steps"
        );
        let shared = map("[cores]\nnet = [0]\nseq = 1\nstorage = [1]\nexec = [0, 2]\n");
        assert_eq!(
            shared.cores.state_hash_cpus(),
            None,
            "exec shares CPU 0 with net"
        );
        let default = Config::default();
        assert_eq!(default.cores.state_hash_cpus(), None, "the 2-CPU default");
    }

    #[test]
    fn da_keys_parse_and_are_checked() {
        let text = r#"
            [da]
            l1_rpc = "http://127.0.0.1:8546"
            l1_beacon = "https://beacon.example/key"
            batcher_key = "/etc/fulmen/batcher.key"
            inbox = "0x00000000000000000000000000000000000000ff"
            blobs_per_tx = 3
            confirmation_depth = 4
            channel_timeout_ms = 6000
            resubmit_after_l1_blocks = 2
            in_flight_max = 2
            l1_fork = "osaka"
            poll_ms = 250
            unposted_bytes_max = 1048576
            base_fee_max_wei = 100000000000
            blob_base_fee_max_wei = 1000000000
        "#;
        let config: Config = toml::from_str(text).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.da.blobs_per_tx, 3);
        for (bad, why) in [
            ("[da]\nblobs_per_tx = 7", "da.blobs_per_tx"),
            ("[da]\nl1_fork = \"cancun\"", "l1_fork"),
            ("[da]\nl1_rpc = \"ws://x\"", "http://"),
            ("[da]\nunposted_bytes_max = 10", "unposted_bytes_max"),
        ] {
            let config: Config = toml::from_str(bad).expect("parses");
            let e = config.validate().expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn every_documented_key_parses() {
        let text = r#"
            rpc_addr = "127.0.0.1:9545"
            datadir = "/tmp/x"
            genesis = "g.json"
            block_time_ms = 2000
            mini_block_max_ms = 5
            block_gas_limit = 30000000
            base_fee_floor_wei = 7
            base_fee_max_change_denominator = 250
            base_fee_elasticity = 6
            coinbase = "0x00000000000000000000000000000000000000aa"
            durability = "memory"
            [storage]
            segment_mb = 16
            checkpoint_blocks = 50
            [rpc]
            body_bytes_max = 4096
            batch_max = 10
            logs_block_range_max = 100
            logs_max = 1000
            sync_timeout_ms_default = 100
            sync_timeout_ms_max = 200
            call_gas_max = 1000000
            header_read_timeout_ms = 1000
            body_read_timeout_ms = 2000
            idle_timeout_ms = 3000
            connections_per_core_max = 100
            connections_per_ip_max = 10
            vhosts = ["localhost", "rpc.example"]
            cors_origins = ["https://app.example"]
            response_bytes_max = 65536
            batch_response_bytes_max = 131072
            responses_in_flight_bytes_max = 1048576
            [ws]
            send_buffer_bytes_max = 65536
            send_buffer_bytes_total_max = 1048576
            [pool]
            inbox_capacity = 16
            parked_per_sender_max = 4
            parked_total_max = 100
            deferred_max = 100
            [cores]
            net = [0]
            seq = 0
            exec = []
            storage = [0]
            spin_before_park_us = 0
        "#;
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.block_time_ms, 2000);
        assert_eq!(config.rpc.batch_max, 10);
        assert_eq!(config.rpc.response_bytes_max, 65536);
        assert_eq!(config.ws.send_buffer_bytes_total_max, 1048576);
        assert_eq!(config.pool.parked_per_sender_max, 4);
        assert_eq!(config.cores.seq, 0);
        assert_eq!(config.durability, Durability::Memory);
        assert_eq!(config.storage.segment_mb, 16);
        assert_eq!(config.storage.checkpoint_blocks, 50);
        assert!(config.cores.exec.is_empty());
        assert_eq!(config.cores.spin_before_park_us, Some(0));
    }

    #[test]
    fn executors_spin_by_default_only_on_isolated_cpus() {
        let mut map = CoreMap::default();
        assert_eq!(map.spin_us(1, &[1, 2]), SPIN_ON_ISOLATED_US);
        assert_eq!(map.spin_us(0, &[1, 2]), 0);
        map.spin_before_park_us = Some(50);
        assert_eq!(map.spin_us(0, &[]), 50);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_reason() {
        let refused = |config: &Config| match config.validate() {
            Ok(()) => panic!("accepted: {config:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            toml::from_str::<Config>("blok_time_ms = 5")
                .unwrap_err()
                .to_string()
                .contains("blok_time_ms")
        );
        let config = Config {
            block_time_ms: 500,
            ..Default::default()
        };
        assert!(refused(&config).contains("block_time_ms"));
        // Group commit waits no longer than a mini-block may stay open; a
        // huge mini-block bound does not overflow the check.
        let config = Config {
            group_commit_us: 11_000,
            ..Default::default()
        };
        assert!(refused(&config).contains("group_commit_us"));
        let config = Config {
            block_time_ms: u64::MAX,
            mini_block_max_ms: u64::MAX,
            ..Default::default()
        };
        assert!(config.validate().is_ok());
        let mut config = Config::default();
        config.cores.net = vec![];
        assert!(refused(&config).contains("cores.net"));
        let mut config = Config::default();
        config.cores.net = vec![0, 0];
        assert!(refused(&config).contains("twice"));
        let mut config = Config::default();
        config.rpc.sync_timeout_ms_default = config.rpc.sync_timeout_ms_max + 1;
        assert!(config.validate().is_err());
        let mut config = Config::default();
        config.rpc.responses_in_flight_bytes_max = config.rpc.response_bytes_max - 1;
        assert!(refused(&config).contains("rpc.responses_in_flight_bytes_max"));
        let mut config = Config::default();
        config.ws.send_buffer_bytes_total_max = 1023;
        assert!(refused(&config).contains("ws.send_buffer_bytes_total_max"));
    }
}
