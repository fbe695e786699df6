//! `fulmen`: the real-time Ethereum L2 sequencer node.

mod config;
mod da;
mod datadir;
mod error;
mod history;
mod metrics_http;
mod node;
mod replica;
mod top;
mod unwind;
mod verifier;

use std::net::SocketAddr;
use std::path::PathBuf;

use alloy_eips::eip1559::BaseFeeParams;
use alloy_primitives::Address;
use clap::{Args, Parser, Subcommand};
use fulmen_chain::spec::{ChainSpec, dev_genesis, load_genesis};
use fulmen_chain::view::ChainView;

use fulmen_exec::{seq_core, sequencer::Genesis};

use crate::config::Config;
use crate::datadir::Datadir;
use crate::error::AppError;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "fulmen",
    version,
    about = "Real-time Ethereum L2 sequencer node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node.
    Run(RunArgs),
    /// Inspect a data directory.
    #[command(subcommand)]
    Db(DbCommand),
    /// Show a running node's per-core and node figures live, from its
    /// `/metrics` endpoint.
    Top(TopArgs),
    /// Read the machine (CPUs, SMT siblings, caches, NUMA, isolcpus,
    /// nohz_full, IRQs, NICs, huge pages, governor, memlock), print a
    /// report and a proposed `[cores]` map; or check a config's map.
    Tune(TuneArgs),
    /// Print the OP Stack preinstalls (CREATE2 deployer, Multicall3, Safe,
    /// Permit2, EntryPoint, CreateX) as a geth genesis `alloc` object, to
    /// merge into a production genesis (the dev genesis has them).
    Preinstalls(PreinstallsArgs),
}

#[derive(Args)]
struct PreinstallsArgs {
    /// The chain id of the genesis (Permit2's code depends on it).
    #[arg(long)]
    chain_id: u64,
}

#[derive(Args)]
struct TopArgs {
    /// The node's metrics URL (`--metrics-addr` of `fulmen run`).
    #[arg(long, default_value = "http://127.0.0.1:9001/metrics")]
    metrics: String,
    /// Refresh period in ms.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Stop after this many refreshes (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    count: u64,
}

#[derive(Args)]
struct TuneArgs {
    /// Check the `[cores]` map of this config file against the machine:
    /// exit 0 when it is valid, 1 with the reasons otherwise.
    #[arg(long)]
    check: Option<PathBuf>,
    /// Read a captured tree (with `sys/` and `proc/` inside) instead of the
    /// live machine (`tuning/tests/fixtures/capture.sh` makes one).
    #[arg(long, default_value = "/")]
    sysfs_root: PathBuf,
    /// Check as `cores.strict = true` would, whatever the file says.
    #[arg(long)]
    strict: bool,
    /// Print the machine's key facts and the proposed map as one JSON
    /// object (for provisioning tools) instead of the report.
    #[arg(long, conflicts_with = "check")]
    json: bool,
}

#[derive(Subcommand)]
enum DbCommand {
    /// Verify every log record's checksum, replay the whole log from genesis
    /// and recompute every block's state, transactions and receipts roots
    /// against its sealed header. Takes the same chain flags as `run`
    /// (the dev genesis depends on them). Changes nothing; exit 0 when the
    /// datadir is sound.
    Check(RunArgs),
}

/// Flags override the config file, which overrides the defaults.
#[derive(Args)]
struct RunArgs {
    /// Use the embedded dev genesis (test-mnemonic accounts, chain id 4242).
    #[arg(long)]
    dev: bool,
    /// TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// geth-style genesis.json.
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    datadir: Option<PathBuf>,
    /// JSON-RPC listen address (HOST:PORT).
    #[arg(long)]
    rpc_addr: Option<SocketAddr>,
    /// Also serve JSON-RPC (WebSocket and HTTP) on HOST:PORT (port 0: any).
    /// WebSocket always works on --rpc-addr too.
    #[arg(long)]
    ws_addr: Option<SocketAddr>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Block time in ms (>= 1000).
    #[arg(long)]
    block_time_ms: Option<u64>,
    /// Longest a mini-block stays open, in ms.
    #[arg(long)]
    mini_block_max_ms: Option<u64>,
    /// Group commit under load: longest a mini-block waits for more
    /// transactions once the log is idle, in µs (0: off).
    #[arg(long)]
    group_commit_us: Option<u64>,
    /// Block gas limit.
    #[arg(long)]
    block_gas_limit: Option<u64>,
    /// Most gas one transaction may ask for (default 2^24, EIP-7825).
    #[arg(long)]
    tx_gas_limit_max: Option<u64>,
    /// Base fee floor in wei.
    #[arg(long)]
    base_fee_floor_wei: Option<u64>,
    /// Fee recipient.
    #[arg(long)]
    coinbase: Option<Address>,
    /// Largest JSON-RPC request body in bytes.
    #[arg(long)]
    rpc_body_bytes_max: Option<usize>,
    /// Most calls per JSON-RPC batch.
    #[arg(long)]
    rpc_batch_max: Option<usize>,
    /// Widest eth_getLogs block range.
    #[arg(long)]
    rpc_logs_block_range_max: Option<u64>,
    /// eth_sendRawTransactionSync timeout cap in ms.
    #[arg(long)]
    rpc_sync_timeout_ms_max: Option<u64>,
    /// Allowed Host names, comma-separated (`*`: any); rpc.vhosts.
    #[arg(long, value_delimiter = ',')]
    http_vhosts: Option<Vec<String>>,
    /// Allowed browser Origins, comma-separated (`*`: any); rpc.cors_origins.
    #[arg(long, value_delimiter = ',')]
    http_corsdomain: Option<Vec<String>>,
    /// Capacity of each net core's inbox to the sequencer.
    #[arg(long)]
    pool_inbox_capacity: Option<usize>,
    /// Parked future-nonce transactions per sender.
    #[arg(long)]
    pool_parked_per_sender_max: Option<usize>,
    /// When receipts are released: after the log flush (durable) or after
    /// execution (memory).
    #[arg(long, value_enum)]
    durability: Option<config::Durability>,
    /// Size of each log segment in MiB.
    #[arg(long)]
    storage_segment_mb: Option<u64>,
    /// A checkpoint every this many blocks (0: none).
    #[arg(long)]
    storage_checkpoint_blocks: Option<u64>,
    /// Take legacy transactions without EIP-155 replay protection (no chain
    /// id), as keyless deployments need (rpc.allow_unprotected_txs; geth's
    /// --rpc.allow-unprotected-txs).
    #[arg(long)]
    allow_unprotected_txs: bool,
    /// Keep execution witnesses (debug_executionWitness) of this many recent
    /// blocks (rpc.witness_blocks; 0: none).
    #[arg(long)]
    rpc_witness_blocks: Option<usize>,
    /// Sealed blocks kept in RAM; older ones are read from disk.
    #[arg(long)]
    storage_memory_blocks: Option<u64>,
    /// MiB that must stay free on the datadir's filesystem (0: no floor).
    #[arg(long)]
    storage_disk_free_min_mb: Option<u64>,
    /// Keep every block (archive) or the last --storage-history-blocks
    /// (recent; older log segments and history are deleted).
    #[arg(long, value_enum)]
    storage_history: Option<config::HistoryMode>,
    /// Blocks a `recent` node keeps (at least 1).
    #[arg(long)]
    storage_history_blocks: Option<u64>,
    /// Size of each history chunk file in MiB (pruning deletes whole chunks).
    #[arg(long)]
    storage_history_chunk_mb: Option<u64>,
    /// Post the chain's data to this L1 JSON-RPC URL (da.l1_rpc). Without
    /// it nothing leaves the node.
    #[arg(long)]
    l1_rpc: Option<String>,
    /// The L1 beacon API URL, for blobs (da.l1_beacon; default --l1-rpc).
    #[arg(long)]
    l1_beacon: Option<String>,
    /// File with the batcher's hex private key, mode 0600 (da.batcher_key).
    #[arg(long)]
    batcher_key: Option<PathBuf>,
    /// Rebuild the chain from L1 (--l1-rpc) instead of sequencing: derive
    /// every block the batcher posted, execute it, serve reads.
    #[arg(long)]
    verifier: bool,
    /// A verifier forwards eth_sendRawTransaction to this sequencer URL
    /// (da.sequencer_url); without it, sends are refused.
    #[arg(long)]
    sequencer_url: Option<String>,
    /// Follow an upstream (--sequencer) mini-block by mini-block: apply its
    /// records, check every seal, serve reads and subscriptions, forward
    /// sends to it.
    #[arg(long, requires = "sequencer", conflicts_with_all = ["verifier", "l1_rpc"])]
    replica: bool,
    /// A replica's upstream: the sequencer's (or another replica's)
    /// WebSocket URL, ws://HOST:PORT.
    #[arg(long, requires = "replica")]
    sequencer: Option<String>,
}

impl RunArgs {
    fn apply(&self, config: &mut Config) {
        macro_rules! set {
            ($flag:ident => $($field:ident).+) => {
                if let Some(value) = self.$flag.clone() {
                    config.$($field).+ = value;
                }
            };
        }
        set!(datadir => datadir);
        set!(rpc_addr => rpc_addr);
        if self.metrics_addr.is_some() {
            config.metrics_addr = self.metrics_addr;
        }
        if self.ws_addr.is_some() {
            config.ws_addr = self.ws_addr;
        }
        set!(block_time_ms => block_time_ms);
        set!(mini_block_max_ms => mini_block_max_ms);
        set!(group_commit_us => group_commit_us);
        set!(block_gas_limit => block_gas_limit);
        set!(tx_gas_limit_max => tx_gas_limit_max);
        set!(base_fee_floor_wei => base_fee_floor_wei);
        set!(rpc_body_bytes_max => rpc.body_bytes_max);
        set!(rpc_batch_max => rpc.batch_max);
        set!(rpc_logs_block_range_max => rpc.logs_block_range_max);
        set!(rpc_sync_timeout_ms_max => rpc.sync_timeout_ms_max);
        set!(rpc_witness_blocks => rpc.witness_blocks);
        set!(http_vhosts => rpc.vhosts);
        set!(http_corsdomain => rpc.cors_origins);
        if self.allow_unprotected_txs {
            config.rpc.allow_unprotected_txs = true;
        }
        set!(pool_inbox_capacity => pool.inbox_capacity);
        set!(pool_parked_per_sender_max => pool.parked_per_sender_max);
        set!(durability => durability);
        set!(storage_segment_mb => storage.segment_mb);
        set!(storage_checkpoint_blocks => storage.checkpoint_blocks);
        set!(storage_memory_blocks => storage.memory_blocks);
        set!(storage_disk_free_min_mb => storage.disk_free_min_mb);
        set!(storage_history => storage.history);
        set!(storage_history_blocks => storage.history_blocks);
        set!(storage_history_chunk_mb => storage.history_chunk_mb);
        if self.genesis.is_some() {
            config.genesis = self.genesis.clone();
        }
        if self.l1_rpc.is_some() {
            config.da.l1_rpc = self.l1_rpc.clone();
        }
        if self.l1_beacon.is_some() {
            config.da.l1_beacon = self.l1_beacon.clone();
        }
        if self.batcher_key.is_some() {
            config.da.batcher_key = self.batcher_key.clone();
        }
        if self.sequencer_url.is_some() {
            config.da.sequencer_url = self.sequencer_url.clone();
        }
        if self.coinbase.is_some() {
            config.coinbase = self.coinbase;
        }
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Db(DbCommand::Check(args)) => db_check(args),
        Command::Tune(args) => tune(args),
        Command::Top(args) => top::run(&args.metrics, args.interval_ms, args.count),
        Command::Preinstalls(args) => {
            let alloc: std::collections::BTreeMap<_, _> =
                fulmen_chain::preinstalls::genesis_accounts(args.chain_id).collect();
            let text = serde_json::to_string_pretty(&alloc).expect("accounts encode");
            println!("{text}");
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::error!("{e}");
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The configuration `args` describe (file, then flags), validated.
fn load_config(args: &RunArgs) -> Result<Config, AppError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    args.apply(&mut config);
    config.validate()?;
    Ok(config)
}

/// The configuration and chain that `args` describe.
fn configure(args: &RunArgs) -> Result<(Config, ChainSpec), AppError> {
    let config = load_config(args)?;
    if args.dev && config.genesis.is_some() {
        return Err(AppError::DevAndGenesis);
    }
    if !args.dev && config.genesis.is_none() {
        return Err(AppError::NoChain);
    }
    let genesis = match &config.genesis {
        Some(path) => load_genesis(path)?,
        None => dev_genesis(
            config.block_gas_limit,
            config.base_fee_floor_wei.max(1_000_000_000),
        ),
    };
    let spec = ChainSpec {
        chain_id: genesis.config.chain_id,
        block_gas_limit: config.block_gas_limit,
        tx_gas_limit_max: config.tx_gas_limit_max.min(config.block_gas_limit),
        base_fee_floor_wei: config.base_fee_floor_wei,
        base_fee_params: BaseFeeParams::new(
            u128::from(config.base_fee_max_change_denominator),
            u128::from(config.base_fee_elasticity),
        ),
        coinbase: config.coinbase.unwrap_or(genesis.coinbase),
        genesis,
    };
    Ok((config, spec))
}

/// `fulmen tune`.
fn tune(args: TuneArgs) -> Result<(), AppError> {
    let machine = fulmen_tuning::Machine::read(&args.sysfs_root);
    let Some(path) = args.check else {
        if args.json {
            println!("{}", tune_json(&machine));
            return Ok(());
        }
        print!("{}", machine.report());
        let (map, why) = fulmen_tuning::propose(&machine);
        println!();
        println!("proposed core map:");
        for reason in why {
            println!("  - {reason}");
        }
        println!();
        print!("{}", map.to_toml());
        return Ok(());
    };
    let config = Config::load(&path)?;
    config.validate()?;
    let strict = args.strict || config.cores.strict;
    let checked = fulmen_tuning::check(&machine, &config.cores.to_tuning(), strict);
    for warning in &checked.warnings {
        println!("warning: {warning}");
    }
    if checked.errors.is_empty() {
        println!(
            "ok: the core map of {} is valid on this machine",
            path.display()
        );
        return Ok(());
    }
    Err(AppError::CoreMapInvalid {
        path,
        errors: checked.errors,
    })
}

/// `fulmen tune --json`: the proposed map with the reasons, and the facts a
/// provisioning tool needs to fit the host to it.
fn tune_json(machine: &fulmen_tuning::Machine) -> serde_json::Value {
    let (map, why) = fulmen_tuning::propose(machine);
    serde_json::json!({
        "cores": {
            "net": map.net,
            "seq": map.seq,
            "exec": map.exec,
            "storage": map.storage,
            "da": map.da,
        },
        "reasons": why,
        "cpus": machine.cpus.iter().map(|cpu| cpu.id).collect::<Vec<_>>(),
        "physical_cores": machine.physical_cores(),
        "isolated": machine.isolated,
        "nohz_full": machine.nohz_full,
        "thp": machine.thp,
    })
}

/// The core map against the live machine: errors stop the start, warnings
/// are logged.
fn check_cores(config: &Config) -> Result<(), AppError> {
    let machine = fulmen_tuning::Machine::live();
    let checked = fulmen_tuning::check(&machine, &config.cores.to_tuning(), config.cores.strict);
    for warning in &checked.warnings {
        tracing::warn!("cores: {warning}");
    }
    if checked.errors.is_empty() {
        Ok(())
    } else {
        Err(AppError::CoresDoNotFit(checked.errors))
    }
}

/// The environment variable jemalloc (tikv-jemallocator's prefixed build)
/// reads its options from at start.
const JEMALLOC_CONF: &str = "_RJEM_MALLOC_CONF";
const HUGE_PAGES_CONF: &str = "thp:always,metadata_thp:always";

/// `[memory]`: huge pages (by restarting this process with jemalloc told to
/// use them, so it must come first) and mlockall.
fn apply_memory(config: &config::MemoryConfig) -> Result<(), AppError> {
    let machine = fulmen_tuning::Machine::live();
    if config.huge_pages {
        match machine.thp.as_deref() {
            Some("always") | Some("madvise") => {}
            other => {
                return Err(AppError::HugePagesUnavailable {
                    mode: other.unwrap_or("unavailable").to_string(),
                });
            }
        }
        if std::env::var(JEMALLOC_CONF).ok().as_deref() != Some(HUGE_PAGES_CONF) {
            use std::os::unix::process::CommandExt;
            let exe = std::env::current_exe().map_err(AppError::HugePagesRestart)?;
            let error = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .env(JEMALLOC_CONF, HUGE_PAGES_CONF)
                .exec();
            return Err(AppError::HugePagesRestart(error));
        }
        tracing::info!(
            "memory: the heap asks for transparent huge pages (jemalloc {HUGE_PAGES_CONF})"
        );
    }
    if config.mlockall {
        // SAFETY: mlockall takes flags only and changes no Rust-visible state.
        let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
        if rc != 0 {
            let source = std::io::Error::last_os_error();
            let limit = match machine.memlock {
                Some(fulmen_tuning::MemLock::Bytes(b)) => format!("{} KiB", b / 1024),
                Some(fulmen_tuning::MemLock::Unlimited) => "unlimited".into(),
                None => "unknown".into(),
            };
            return Err(AppError::Mlockall { source, limit });
        }
        tracing::info!("memory: all pages locked (mlockall)");
    }
    Ok(())
}

/// Says at start-up when receipts are released.
fn report_durability(durability: config::Durability) {
    match durability {
        config::Durability::Durable => tracing::info!(
            "durability: durable. A receipt is released only after its log record is flushed (fdatasync)"
        ),
        config::Durability::Memory => tracing::warn!(
            "durability: memory. Receipts are released right after execution, before their log record is \
             flushed: a crash can lose the last few milliseconds of preconfirmed transactions"
        ),
    }
}

fn run(args: RunArgs) -> Result<(), AppError> {
    use signal_hook::consts::SIGUSR1;
    // Before the genesis is built: huge pages restart the process.
    apply_memory(&load_config(&args)?.memory)?;
    let (config, spec) = configure(&args)?;
    check_cores(&config)?;
    let datadir = Datadir::lock(&config.datadir)?;
    let rpc_addr = resolve_port(restarted_addr(RESTART_RPC_ADDR).unwrap_or(config.rpc_addr))?;
    let ws_addr = restarted_addr(RESTART_WS_ADDR)
        .or(config.ws_addr)
        .map(resolve_port)
        .transpose()?;
    tracing::info!(
        chain_id = spec.chain_id,
        block_time_ms = config.block_time_ms,
        block_gas_limit = config.block_gas_limit,
        cores = ?config.cores,
        datadir = %config.datadir.display(),
        "starting fulmen"
    );
    report_durability(config.durability);
    let da_mode = da_mode(&config, &args)?;
    history::guard_disk(&config.datadir, config.storage.disk_free_min_mb << 20)
        .map_err(config::ConfigError)?;
    let genesis = Genesis::new(&spec);
    datadir.bind_genesis(genesis.header.hash_slow())?;
    if matches!(da_mode, da::DaMode::Replica(_)) {
        let done = unwind::cut_to_sealed(&config.datadir)
            .map_err(|e| config::ConfigError(format!("replica: {e}")))?;
        if done.bytes_cut > 0 {
            tracing::info!(
                keep = done.keep,
                bytes_cut = done.bytes_cut,
                "replica: the log is cut after its last sealed block {}; the rest comes from the upstream again",
                done.keep
            );
        }
    }
    if let Some(done) = unwind::apply_requested(&config.datadir).map_err(config::ConfigError)? {
        tracing::warn!(
            keep = done.keep,
            bytes_cut = done.bytes_cut,
            checkpoints_removed = done.checkpoints_removed,
            "unwound the chain: the log is cut after block {} (an L1 reorg dropped the data of later blocks)",
            done.keep
        );
    }
    let booted = datadir::boot(
        &config.datadir,
        (&spec, &genesis),
        seq_core::now_ms(),
        false,
        config.storage.memory_blocks,
    )?;
    drop(genesis);
    for note in config.cores.unused() {
        tracing::warn!("{note}");
    }
    let dev = match args.dev {
        true => Some(std::sync::Arc::new(
            dev_accounts().map_err(config::ConfigError)?,
        )),
        false => None,
    };
    let node = node::start(
        &config,
        spec,
        (rpc_addr, ws_addr),
        (booted, da_mode, dev),
        &config.datadir,
    )?;
    let mut metrics_bound = None;
    if let Some(addr) = restarted_addr(RESTART_METRICS_ADDR).or(config.metrics_addr) {
        let bound = metrics_http::serve(addr)?;
        println!("metrics on http://{bound}/metrics");
        metrics_bound = Some(bound);
    }
    let mut signals = signals()?;
    println!("websocket on ws://{rpc_addr}");
    if let Some(addr) = ws_addr {
        println!("websocket on ws://{addr}");
    }
    // The readiness line, on stdout for scripts and supervisors (logs go to stderr).
    println!("listening on http://{rpc_addr}");
    let unwinding = signals
        .forever()
        .find(|&signal| signal != SIGUSR1 || unwind::requested(&config.datadir))
        == Some(SIGUSR1);
    drain_before_exit(node);
    if unwinding {
        let addrs = [
            (RESTART_RPC_ADDR, Some(rpc_addr)),
            (RESTART_WS_ADDR, ws_addr),
            (RESTART_METRICS_ADDR, metrics_bound),
        ];
        return Err(AppError::Restart(restart(&addrs)));
    }
    std::process::exit(0);
}

/// Environment variables that carry the bound addresses to a restart (so
/// that port 0 means the same port again).
const RESTART_RPC_ADDR: &str = "FULMEN_RESTART_RPC_ADDR";
const RESTART_WS_ADDR: &str = "FULMEN_RESTART_WS_ADDR";
const RESTART_METRICS_ADDR: &str = "FULMEN_RESTART_METRICS_ADDR";

/// An address a restart carried over.
fn restarted_addr(var: &str) -> Option<SocketAddr> {
    std::env::var(var).ok()?.parse().ok()
}

/// Runs this same command again in this process (same pid, so a
/// supervisor sees no exit), with the bound addresses carried over; the
/// datadir's lock and every socket close on exec. Returns only on failure.
fn restart(addrs: &[(&str, Option<SocketAddr>)]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return e,
    };
    tracing::warn!("restarting to unwind the chain");
    let mut command = std::process::Command::new(exe);
    command.args(std::env::args_os().skip(1));
    for (var, addr) in addrs {
        if let Some(addr) = addr {
            command.env(var, addr.to_string());
        }
    }
    command.exec()
}

/// Longest the node waits on SIGTERM for its log to drain.
const DRAIN_TIMEOUT_S: u64 = 5;

/// On SIGTERM/SIGINT: the seq core refuses new transactions and answers
/// once every log record it sent is durable, so that nothing acknowledged is
/// lost, in memory mode too.
fn drain_before_exit(node: node::Node) {
    tracing::info!("signal received: refusing new transactions, flushing the log");
    let began = std::time::Instant::now();
    match node.drain(std::time::Duration::from_secs(DRAIN_TIMEOUT_S)) {
        Ok(fulmen_chain::msg::Drained::Flushed) => tracing::info!(
            ms = began.elapsed().as_millis() as u64,
            "log drained; exiting"
        ),
        Ok(fulmen_chain::msg::Drained::Halted(reason)) => tracing::warn!(
            reason = %reason,
            "the log had failed; what was acknowledged before the failure is durable; exiting"
        ),
        Err(e) => tracing::warn!("{e}; exiting anyway"),
    }
}

fn db_check(args: RunArgs) -> Result<(), AppError> {
    let (config, spec) = configure(&args)?;
    // Hold the lock so a node cannot write while the log is read.
    let _datadir = Datadir::lock(&config.datadir)?;
    let genesis = Genesis::new(&spec);
    let began = std::time::Instant::now();
    let booted = datadir::boot(&config.datadir, (&spec, &genesis), 0, true, 1)?;
    let stats = booted.replayed.stats;
    let head = booted.replayed.parts.view().head();
    let report = datadir::check_checkpoints(&config.datadir, booted.replayed.parts.view())?;
    let (checkpoints, skipped) = (report.verified, report.skipped);
    if !report.damaged.is_empty() {
        return Err(AppError::CheckpointsDamaged {
            dir: datadir::checkpoint_dir(&config.datadir),
            notes: report.damaged.iter().map(ToString::to_string).collect(),
        });
    }
    let segment_bytes = config.storage.segment_mb << 20;
    let repair = datadir::planned_repair(&config.datadir, &booted.tail, segment_bytes)?;
    println!(
        "ok: {} mini-blocks ({} txs) and {} sealed blocks replayed; every record's checksum and every block's \
         state, transactions and receipts roots verified; {checkpoints} checkpoint(s) verified; head block {} {}; \
         {} closed block(s) awaiting a seal; {:.2} s",
        stats.mini_blocks,
        stats.txs,
        stats.seals,
        head.header.number,
        head.hash,
        booted.replayed.pending.len(),
        began.elapsed().as_secs_f64()
    );
    if let Some(number) = stats.from_checkpoint {
        // A pruned log: the replay compared each later block's hash with
        // the store's as it sealed it; the store's older blocks are its own.
        println!(
            "ok: older log segments were pruned (storage.history = \"recent\"): checked from the checkpoint of \
             block {number}; every later block's hash equals the history store's, which keeps blocks from {} on",
            booted.replayed.parts.view().oldest_block()
        );
    } else {
        report_history(&config, &spec, booted.replayed.parts.view())?;
    }
    let checkpoint_dir = datadir::checkpoint_dir(&config.datadir);
    for note in skipped {
        println!("note: {note} (in {})", checkpoint_dir.display());
    }
    if let Some(repair) = repair {
        println!("note: the node repairs the end of the log at its next start: {repair}");
    }
    Ok(())
}

/// What the node does with L1: post (a batcher), derive (a verifier), or
/// nothing.
fn da_mode(config: &Config, args: &RunArgs) -> Result<da::DaMode, AppError> {
    if let (true, Some(upstream)) = (args.replica, &args.sequencer) {
        replica::http_url(upstream).map_err(config::ConfigError)?;
        return Ok(da::DaMode::Replica(upstream.clone()));
    }
    let mode = match (&config.da.l1_rpc, args.verifier) {
        (None, true) => {
            return Err(config::ConfigError(
                "--verifier needs --l1-rpc: it derives the chain from L1".into(),
            )
            .into());
        }
        (Some(_), true) => da::DaMode::Verifier(
            da::verifier_batcher(&config.da, args.dev).map_err(config::ConfigError)?,
        ),
        (Some(_), false) => {
            da::DaMode::Batcher(da::batcher_key(&config.da, args.dev).map_err(config::ConfigError)?)
        }
        (None, false) => {
            tracing::info!(
                "DA: no --l1-rpc: nothing is posted to L1; `safe` and `finalized` are the last sealed block"
            );
            da::DaMode::Off
        }
    };
    Ok(mode)
}

/// The standard test mnemonic, whose first ten accounts the dev genesis funds.
const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// `--dev`'s unlocked accounts: the dev genesis's ten, derived from the test
/// mnemonic (m/44'/60'/0'/0/i).
fn dev_accounts() -> Result<fulmen_netio::eth::DevAccounts, String> {
    let signers = (0..fulmen_chain::spec::DEV_ACCOUNTS.len() as u32)
        .map(|i| {
            alloy_signer_local::MnemonicBuilder::english()
                .phrase(DEV_MNEMONIC)
                .index(i)
                .and_then(|b| b.build())
                .map_err(|e| format!("cannot derive dev account {i}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let accounts = fulmen_netio::eth::DevAccounts::new(signers);
    if accounts.addresses() != fulmen_chain::spec::DEV_ACCOUNTS {
        return Err("the test mnemonic does not derive the dev genesis's accounts".into());
    }
    Ok(accounts)
}

/// `db check`'s comparison of the history store with the replayed chain.
fn report_history(config: &Config, spec: &ChainSpec, view: &ChainView) -> Result<(), AppError> {
    let (matching, stored, difference) = datadir::check_history(&config.datadir, spec, view)?;
    match difference {
        None => println!(
            "ok: history store: {matching} block(s) read back and equal to the log's ({stored} stored)"
        ),
        Some(difference) => println!(
            "note: the history store equals the log's chain for {matching} block(s), then differs at {difference}; \
             the log is intact: remove {} and the node writes the store again from the log at its next start",
            datadir::history_dir(&config.datadir).display()
        ),
    }
    Ok(())
}

/// Port 0 means "any free port": pick one here so that every net core binds
/// the same one (SO_REUSEPORT) and the log line names it.
fn resolve_port(addr: SocketAddr) -> Result<SocketAddr, AppError> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let bind_error = |source| AppError::Bind { addr, source };
    let probe = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    probe.local_addr().map_err(bind_error)
}

/// Installs the SIGTERM/SIGINT handlers (before the readiness line, so that
/// a supervisor's signal can never find the default action still in place).
/// SIGUSR1 is the verifier's request to restart and unwind
/// (`crate::unwind`); without a pending request it is ignored.
fn signals() -> Result<signal_hook::iterator::Signals, AppError> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1]).map_err(AppError::Signals)
}
