//! Wires the roles onto pinned glommio executors, one per CPU of the core
//! map. Roles that share a CPU run as task queues with shares on that CPU's
//! executor.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fulmen_chain::block::{SealJob, SealRoots};
use fulmen_chain::events::{EVENT_QUEUE_CAPACITY, EventBus, Published};
use fulmen_chain::metrics::{CoreFigures, METRICS, sample_executor};
use fulmen_chain::msg::{Drained, MerkleRequest, SEQ_CONTROL_CAPACITY, SeqControl, SeqRequest};
use fulmen_chain::spec::ChainSpec;
use fulmen_chain::view::ChainView;
use fulmen_exec::{
    seal::Merkleizer,
    seq_core::{self, LogLink, STORAGE_QUEUE_CAPACITY, SeqLinks, SeqTiming},
    sequencer::{PoolLimits, Sequencer, SequencerParts},
};
use fulmen_netio::eth::{RpcContext, RpcLimits};
use fulmen_netio::server::HttpShared;
use fulmen_netio::sim::SimPool;
use fulmen_netio::ws::{WsContext, WsLimits, WsShared};
use fulmen_storage::{
    checkpoint::CheckpointJob,
    disk::DiskDir,
    log::{Log, Tail},
    writer::{AppendRequest, StorageAck},
};
use futures::channel::mpsc;
use glommio::{
    Latency, LocalExecutorBuilder, Placement, Shares,
    channels::shared_channel::{self, SharedReceiver, SharedSender},
};

use crate::config::{Config, Durability};
use crate::da::DaMode;
use crate::datadir::Booted;
use crate::error::{DrainError, StartError};

/// io_uring buffer memory per executor. Small, so that several executors fit
/// under the default 8 MiB memlock limit (`fulmen tune` checks the limit).
const IO_MEMORY_BYTES: usize = fulmen_tuning::IO_MEMORY_PER_EXECUTOR as usize;

/// Accept queue length of the listening sockets.
const LISTEN_BACKLOG: i32 = 1024;

/// Descriptors besides connections: log segments, checkpoints, io_uring.
const OTHER_FILES_MAX: usize = 256;

/// Capacity of each net core's proof channel to the state-root worker.
const PROOF_QUEUE_CAPACITY: usize = 256;

/// How long start-up waits for the net cores and the log to be ready.
const READY_TIMEOUT_S: u64 = 60;

/// Where each net core and the log report that they are ready, or why not.
type Ready = std::sync::mpsc::Sender<Result<(), StartError>>;

/// Capacity of the seal channels between seq and the state-root worker.
const SEAL_QUEUE_CAPACITY: usize = 64;

/// The roles one executor runs.
#[derive(Default)]
struct CoreRoles {
    net: Vec<NetRole>,
    seq: Option<SeqCoreRole>,
    merkle: Option<MerkleRole>,
    storage: Option<StorageRole>,
    /// Where this executor's sampler writes its figures.
    figures: Option<Arc<CoreFigures>>,
}

impl CoreRoles {
    /// The role names, as the metrics show them (`net+seq`).
    fn names(&self) -> String {
        let mut names = Vec::new();
        if !self.net.is_empty() {
            names.push("net");
        }
        if self.seq.is_some() {
            names.push("seq");
        }
        if self.merkle.is_some() {
            names.push("exec");
        }
        if self.storage.is_some() {
            names.push("storage");
        }
        names.join("+")
    }
}

/// The storage role: the log writer and the checkpoint writer.
struct StorageRole {
    log: LogRole,
    checkpoint_dir: PathBuf,
    checkpoints: SharedReceiver<CheckpointJob>,
}

/// The log writer's half of the storage role.
struct LogRole {
    dir: PathBuf,
    segment_bytes: u64,
    tail: Tail,
    inbox: SharedReceiver<AppendRequest>,
    acks: SharedSender<StorageAck>,
}

struct NetRole {
    /// This net core's index among the net cores.
    index: usize,
    seq: SharedSender<SeqRequest>,
    control: mpsc::Sender<SeqControl>,
    merkle: SharedSender<MerkleRequest>,
    events: SharedReceiver<Published>,
    ws: WsLimits,
    ws_shared: Arc<WsShared>,
    /// This core's duplicates of the node's listening sockets (`rpc_addr`,
    /// then `ws_addr` if any).
    listeners: Vec<std::net::TcpListener>,
    http_shared: Arc<HttpShared>,
}

/// The sequencer and its links to the net cores.
struct SeqRole {
    spec: ChainSpec,
    limits: PoolLimits,
    parts: SequencerParts,
    pending: Vec<SealJob>,
    links: NetLinks,
    control: mpsc::Receiver<SeqControl>,
    /// A verifier's derived blocks.
    derived: Option<mpsc::Receiver<fulmen_chain::msg::DerivedBlock>>,
    /// A replica's records from its upstream.
    upstream: Option<mpsc::Receiver<fulmen_chain::msg::Upstream>>,
    /// The DA-progress records boot found (checkpoint markers carry them).
    da_records: Vec<Vec<u8>>,
}

/// The seq role with its links to the state-root worker and the log.
struct SeqCoreRole {
    seq: SeqRole,
    to_merkle: SharedSender<MerkleRequest>,
    from_merkle: SharedReceiver<SealRoots>,
    to_storage: SharedSender<AppendRequest>,
    acks: SharedReceiver<StorageAck>,
    durable: bool,
    checkpoints: SharedSender<CheckpointJob>,
    checkpoint_blocks: u64,
    history: Option<HistorySender>,
}

struct MerkleRole {
    merkle: Merkleizer,
    requests: Vec<SharedReceiver<MerkleRequest>>,
    to_seq: SharedSender<SealRoots>,
}

/// A running node: its executor threads, and the control channel to its
/// seq core.
pub(crate) struct Node {
    /// One thread per executor; they run until the process exits.
    _threads: Vec<std::thread::JoinHandle<()>>,
    control: mpsc::Sender<SeqControl>,
}

impl Node {
    /// Tells the seq core to stop taking transactions and waits (up to
    /// `timeout`) until every log record it sent is durable.
    pub(crate) fn drain(mut self, timeout: Duration) -> Result<Drained, DrainError> {
        let (drained, answer) = std::sync::mpsc::sync_channel(1);
        self.control
            .try_send(SeqControl::Stop { drained })
            .map_err(|e| DrainError::Unreachable(e.to_string()))?;
        answer
            .recv_timeout(timeout)
            .map_err(|_| DrainError::Timeout {
                timeout_s: timeout.as_secs(),
            })
    }
}

/// What every executor shares.
#[derive(Clone)]
struct Shared {
    published: Arc<ArcSwap<ChainView>>,
    spec: Arc<ChainSpec>,
    limits: RpcLimits,
    sim: Arc<SimPool>,
    timing: SeqTiming,
    ready: Ready,
    /// `[da] unposted_bytes_max` while a batcher runs.
    da_unposted_bytes_max: Option<u64>,
    /// A verifier takes no transactions.
    verifier: bool,
    /// A verifier's sequencer, which sends are forwarded to.
    forward: Option<Arc<fulmen_netio::eth::forward::Forwarder>>,
    /// `eth_newFilter` and the like, shared by the net cores.
    filters: Arc<fulmen_netio::eth::filters::Filters>,
    /// `--dev`'s unlocked accounts.
    dev: Option<Arc<fulmen_netio::eth::DevAccounts>>,
}

/// A verifier's forwarder of sends to `[da] sequencer_url`, if set, or a
/// replica's to its upstream.
fn forwarder(
    config: &Config,
    da_mode: &DaMode,
) -> Option<Arc<fulmen_netio::eth::forward::Forwarder>> {
    let url = match da_mode {
        DaMode::Verifier(_) => config.da.sequencer_url.clone()?,
        DaMode::Replica(upstream) => crate::replica::http_url(upstream).ok()?,
        _ => return None,
    };
    Some(Arc::new(fulmen_netio::eth::forward::Forwarder::new(&url)))
}

/// The first mini-block a replica asks its upstream for: the one after the
/// last of its sealed blocks (every record after it belongs to blocks not
/// sealed here).
fn replica_from(view: &ChainView) -> u64 {
    let unsealed = view
        .unsealed()
        .flat_map(|block| block.txs.front())
        .map(|tx| tx.mini_block)
        .min();
    unsealed.unwrap_or(view.mini_block() + 1)
}

/// Starts every role on the chain `booted` rebuilt from `datadir`;
/// returns once the log is open and all net cores accept connections.
pub(crate) fn start(
    config: &Config,
    spec: ChainSpec,
    addrs: (SocketAddr, Option<SocketAddr>),
    (booted, da_mode, dev): (Booted, DaMode, Option<Arc<fulmen_netio::eth::DevAccounts>>),
    datadir: &Path,
) -> Result<Node, StartError> {
    raise_open_files_limit(config);
    let mut bound = vec![bind_exclusive(addrs.0, "rpc_addr")?];
    if let Some(addr) = addrs.1 {
        bound.push(bind_exclusive(addr, "ws_addr")?);
    }
    let Booted {
        replayed,
        tail,
        history,
    } = booted;
    let mut view = replayed.parts.view().clone();
    let (mut control, control_rx) = mpsc::channel(SEQ_CONTROL_CAPACITY);
    if matches!(da_mode, DaMode::Batcher(_)) {
        // Until the batcher has heard from L1, L1 vouches for nothing: the
        // tags must not claim the sealed head meanwhile.
        let none = fulmen_chain::view::DaHeads {
            safe: 0,
            finalized: 0,
        };
        view.set_da_heads(none);
        control
            .try_send(SeqControl::DaHeads(none))
            .expect("the control channel is empty");
    }
    let published = Arc::new(ArcSwap::from_pointee(view));
    let da_records = replayed.da_records;
    let mut roles: BTreeMap<usize, CoreRoles> = BTreeMap::new();
    let resume = resume_source(config, &spec, datadir);
    let links = add_net_roles(config, (&bound, resume), &control, &mut roles)?;
    let (derived_tx, derived_rx) =
        futures::channel::mpsc::channel(crate::verifier::DERIVED_QUEUE_CAPACITY);
    let verifier = matches!(da_mode, DaMode::Verifier(_));
    let replica = matches!(da_mode, DaMode::Replica(_));
    let (upstream_tx, upstream_rx) =
        futures::channel::mpsc::channel(crate::replica::UPSTREAM_QUEUE_CAPACITY);
    let replica_from = replica_from(replayed.parts.view());
    let seq = SeqRole {
        spec: spec.clone(),
        limits: pool_limits(config),
        parts: replayed.parts,
        pending: replayed.pending,
        links,
        control: control_rx,
        derived: verifier.then_some(derived_rx),
        upstream: replica.then_some(upstream_rx),
        da_records: da_records.clone(),
    };
    let (history, history_thread) =
        start_history(config, (history, verifier), (datadir, &published))?;
    let mut merkle = replayed.merkle;
    merkle.keep_witnesses(config.rpc.witness_blocks);
    if let Some(cpus) = config.cores.state_hash_cpus() {
        tracing::info!(?cpus, "state roots hashed on these CPUs together");
        merkle.hash_on(cpus, pin_this_thread);
    }
    add_core_roles(config, (seq, history), merkle, (datadir, tail), &mut roles);
    let (ready, ready_rx) = std::sync::mpsc::channel::<Result<(), StartError>>();
    let shared = Shared {
        published,
        spec: Arc::new(spec),
        limits: config.rpc.clone(),
        sim: start_simulation_workers(config)?,
        da_unposted_bytes_max: matches!(da_mode, DaMode::Batcher(_))
            .then_some(config.da.unposted_bytes_max),
        verifier,
        forward: forwarder(config, &da_mode),
        filters: Arc::new(fulmen_netio::eth::filters::Filters::default()),
        dev,
        timing: config.seq_timing(),
        ready,
    };
    let l1_role = l1_role(
        config,
        da_mode,
        &shared,
        (da_records, derived_tx, &control),
        (datadir, upstream_tx, replica_from),
    );
    let mut threads = spawn_executors(config, roles, shared)?;
    threads.extend(history_thread);
    // Every net core and the storage role report when they are ready.
    wait_ready(&ready_rx, config.cores.net.len() + 1)?;
    if let Some(role) = l1_role {
        threads.push(start_l1_role(config, role)?);
    }
    Ok(Node {
        _threads: threads,
        control,
    })
}

/// The history writer's thread, on the exec CPUs below the pinned roles,
/// and where the seq core sends it sealed blocks.
fn start_history(
    config: &Config,
    (store, is_verifier): (Option<fulmen_storage::history::HistoryStore>, bool),
    (datadir, published): (&Path, &Arc<ArcSwap<ChainView>>),
) -> Result<(Option<HistorySender>, Option<std::thread::JoinHandle<()>>), StartError> {
    let Some(mut store) = store else {
        return Ok((None, None));
    };
    store.set_chunk_bytes_max(config.storage.history_chunk_mb << 20);
    let retention = (config.storage.history == crate::config::HistoryMode::Recent).then(|| {
        crate::history::Retention {
            blocks: config.storage.history_blocks,
            verifier: is_verifier,
            view: published.clone(),
        }
    });
    let cpus = sim_cpus(config);
    let on_start = move || lower_this_thread(&cpus, 10);
    let (to, thread) = crate::history::start(store, (datadir.to_path_buf(), retention), on_start)
        .map_err(StartError::History)?;
    Ok((Some(to), Some(thread)))
}

/// Where the seq core sends sealed blocks for the history store.
type HistorySender = std::sync::mpsc::SyncSender<Arc<fulmen_chain::block::SealedBlock>>;

/// The L1 thread's role for `da_mode`, if any.
fn l1_role(
    config: &Config,
    da_mode: DaMode,
    shared: &Shared,
    (da_records, derived_tx, control): (
        Vec<Vec<u8>>,
        futures::channel::mpsc::Sender<fulmen_chain::msg::DerivedBlock>,
        &mpsc::Sender<SeqControl>,
    ),
    (datadir, upstream_tx, replica_from): (
        &Path,
        futures::channel::mpsc::Sender<fulmen_chain::msg::Upstream>,
        u64,
    ),
) -> Option<L1Role> {
    match da_mode {
        DaMode::Off => None,
        DaMode::Replica(upstream) => Some(L1Role::Replica(crate::replica::ReplicaStart {
            upstream,
            from: replica_from,
            to_seq: upstream_tx,
        })),
        DaMode::Batcher(key) => Some(L1Role::Batcher(Box::new(crate::da::DaStart {
            config: config.da.clone(),
            key,
            chain_id: shared.spec.chain_id,
            block_time_ms: config.block_time_ms,
            records: da_records,
            published: shared.published.clone(),
            control: control.clone(),
        }))),
        DaMode::Verifier(batcher) => {
            Some(L1Role::Verifier(Box::new(crate::verifier::VerifierStart {
                config: config.da.clone(),
                batcher,
                spec: (*shared.spec).clone(),
                block_time_ms: config.block_time_ms,
                published: shared.published.clone(),
                derived: derived_tx,
                control: control.clone(),
                datadir: datadir.to_path_buf(),
            })))
        }
    }
}

/// The thread that talks to L1.
enum L1Role {
    Batcher(Box<crate::da::DaStart>),
    Verifier(Box<crate::verifier::VerifierStart>),
    Replica(crate::replica::ReplicaStart),
}

/// Starts the L1 thread: pinned to `cores.da` at normal priority, or to
/// the shared exec CPUs below the pinned roles.
fn start_l1_role(config: &Config, role: L1Role) -> Result<std::thread::JoinHandle<()>, StartError> {
    let cpus = match config.cores.da {
        Some(cpu) => vec![cpu],
        None => sim_cpus(config),
    };
    let nice = if config.cores.da.is_some() { 0 } else { 10 };
    let on_start = move || lower_this_thread(&cpus, nice);
    match role {
        L1Role::Batcher(da) => crate::da::start(*da, on_start),
        L1Role::Verifier(v) => crate::verifier::start(*v, on_start),
        L1Role::Replica(r) => crate::replica::start(r, on_start).map_err(|e| e.to_string()),
    }
    .map_err(StartError::Da)
}

/// The pool limits of the config, fitted to what one log record can hold.
fn pool_limits(config: &Config) -> PoolLimits {
    let limits = PoolLimits {
        parked_per_sender_max: config.pool.parked_per_sender_max,
        parked_total_max: config.pool.parked_total_max,
        parked_bytes_max: config.pool.parked_bytes_max,
        parked_lifetime_s: config.pool.parked_lifetime_s,
        deferred_max: config.pool.deferred_max,
        tx_record_bytes_max: config.tx_record_bytes_max,
        mini_block_bytes_max: config.mini_block_bytes_max,
    };
    // The largest record the log always accepts, at the O_DIRECT alignment
    // (the strictest the directory can have).
    let record_bytes_max = fulmen_storage::log::record_payload_bytes_max(
        config.storage.segment_mb << 20,
        fulmen_storage::disk::ALIGNMENT,
    );
    let (limits, lowered) = limits.fitted_to_log(record_bytes_max);
    if lowered {
        tracing::warn!(
            mini_block_bytes_max = limits.mini_block_bytes_max,
            tx_record_bytes_max = limits.tx_record_bytes_max,
            segment_mb = config.storage.segment_mb,
            "mini_block_bytes_max / tx_record_bytes_max lowered to fit one log segment"
        );
    }
    limits
}

/// What subscriptions resume from (`fromMiniBlock`): the log, when the
/// node keeps it durably.
fn resume_source(
    config: &Config,
    spec: &ChainSpec,
    datadir: &Path,
) -> Option<Arc<fulmen_netio::resume::ResumeSource>> {
    (config.durability == Durability::Durable).then(|| {
        Arc::new(fulmen_netio::resume::ResumeSource {
            log_dir: crate::datadir::log_dir(datadir),
            chain: spec.evm_chain(),
            active: std::sync::atomic::AtomicUsize::new(0),
            max: config.ws.resumes_max,
        })
    })
}

/// The seq core's ends of the channels to the net cores.
struct NetLinks {
    inboxes: Vec<SharedReceiver<SeqRequest>>,
    events: Vec<SharedSender<Published>>,
    proofs: Vec<SharedReceiver<MerkleRequest>>,
}

/// One net role per net CPU, each with its own duplicates of the listening
/// sockets and its channels to seq, the state-root worker and back.
fn add_net_roles(
    config: &Config,
    (bound, resume): (
        &[std::net::TcpListener],
        Option<Arc<fulmen_netio::resume::ResumeSource>>,
    ),
    control: &mpsc::Sender<SeqControl>,
    roles: &mut BTreeMap<usize, CoreRoles>,
) -> Result<NetLinks, StartError> {
    let ws_shared = Arc::new(WsShared {
        resume,
        ..WsShared::default()
    });
    let http_shared = Arc::new(HttpShared::default());
    let mut links = NetLinks {
        inboxes: Vec::new(),
        events: Vec::new(),
        proofs: Vec::new(),
    };
    for (index, cpu) in config.cores.net.iter().enumerate() {
        let listeners = bound
            .iter()
            .map(|l| l.try_clone())
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartError::DuplicateListener)?;
        let (seq_tx, seq_rx) = shared_channel::new_bounded(config.pool.inbox_capacity);
        let (proof_tx, proof_rx) = shared_channel::new_bounded(PROOF_QUEUE_CAPACITY);
        let (event_tx, event_rx) = shared_channel::new_bounded(EVENT_QUEUE_CAPACITY);
        links.inboxes.push(seq_rx);
        links.proofs.push(proof_rx);
        links.events.push(event_tx);
        roles.entry(*cpu).or_default().net.push(NetRole {
            index,
            seq: seq_tx,
            control: control.clone(),
            merkle: proof_tx,
            events: event_rx,
            ws: config.ws.clone(),
            ws_shared: ws_shared.clone(),
            listeners,
            http_shared: http_shared.clone(),
        });
    }
    Ok(links)
}

/// The seq, storage and state-root roles, and the channels between them.
fn add_core_roles(
    config: &Config,
    (mut seq, history): (SeqRole, Option<HistorySender>),
    merkle: Merkleizer,
    (datadir, tail): (&Path, Tail),
    roles: &mut BTreeMap<usize, CoreRoles>,
) {
    let cores = &config.cores;
    let (seal_tx, seal_rx) = shared_channel::new_bounded(SEAL_QUEUE_CAPACITY);
    let (roots_tx, roots_rx) = shared_channel::new_bounded(SEAL_QUEUE_CAPACITY);
    let (append_tx, append_rx) = shared_channel::new_bounded(STORAGE_QUEUE_CAPACITY);
    let (ack_tx, ack_rx) = shared_channel::new_bounded(STORAGE_QUEUE_CAPACITY);
    // One checkpoint waits while another is written; more are skipped.
    let (checkpoint_tx, checkpoint_rx) = shared_channel::new_bounded(1);
    let mut requests = std::mem::take(&mut seq.links.proofs);
    requests.push(seal_rx);
    roles.entry(cores.merkle_cpu()).or_default().merkle = Some(MerkleRole {
        merkle,
        requests,
        to_seq: roots_tx,
    });
    roles.entry(cores.storage_cpu()).or_default().storage = Some(StorageRole {
        log: LogRole {
            dir: crate::datadir::log_dir(datadir),
            segment_bytes: config.storage.segment_mb << 20,
            tail,
            inbox: append_rx,
            acks: ack_tx,
        },
        checkpoint_dir: crate::datadir::checkpoint_dir(datadir),
        checkpoints: checkpoint_rx,
    });
    roles.entry(cores.seq).or_default().seq = Some(SeqCoreRole {
        seq,
        to_merkle: seal_tx,
        from_merkle: roots_rx,
        to_storage: append_tx,
        acks: ack_rx,
        durable: config.durability == Durability::Durable,
        checkpoints: checkpoint_tx,
        checkpoint_blocks: config.storage.checkpoint_blocks,
        history,
    });
}

/// One pinned executor per CPU of the core map, running that CPU's roles.
fn spawn_executors(
    config: &Config,
    roles: BTreeMap<usize, CoreRoles>,
    shared: Shared,
) -> Result<Vec<std::thread::JoinHandle<()>>, StartError> {
    let mut threads = Vec::new();
    // The CPUs the kernel keeps other work off: spinning pays only there.
    let isolated = std::fs::read_to_string("/sys/devices/system/cpu/isolated")
        .ok()
        .and_then(|text| fulmen_tuning::parse_cpu_list(text.trim()))
        .unwrap_or_default();
    for (cpu, mut roles) in roles {
        roles.figures = Some(METRICS.register_core(cpu, roles.names()));
        let shared = shared.clone();
        let spin_us = config.cores.spin_us(cpu, &isolated);
        tracing::info!(cpu, spin_us, isolated = isolated.contains(&cpu), "executor");
        let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("fulmen-cpu{cpu}"))
            .io_memory(IO_MEMORY_BYTES)
            .preempt_timer(PREEMPT_TIMER)
            .spin_before_park(Duration::from_micros(spin_us));
        let handle = builder
            .spawn(move || run_core(roles, shared))
            .map_err(|e| StartError::Executor {
                cpu,
                reason: e.to_string(),
            })?;
        threads.push(std::thread::spawn(move || {
            if let Err(e) = handle.join() {
                tracing::error!(cpu, error = ?e, "executor stopped");
            }
        }));
    }
    Ok(threads)
}

/// Waits for `count` roles to report ready, or the first failure.
fn wait_ready(
    ready: &std::sync::mpsc::Receiver<Result<(), StartError>>,
    count: usize,
) -> Result<(), StartError> {
    for _ in 0..count {
        match ready.recv_timeout(Duration::from_secs(READY_TIMEOUT_S)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(StartError::NotReady {
                    timeout_s: READY_TIMEOUT_S,
                });
            }
        }
    }
    Ok(())
}

/// Binds `addr` for this process alone: no SO_REUSEPORT, so a second
/// process cannot bind it too and silently take part of the traffic. The
/// net cores share it through duplicates of this one socket.
fn bind_exclusive(
    addr: SocketAddr,
    key: &'static str,
) -> Result<std::net::TcpListener, StartError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            StartError::AddrInUse { key, addr, source }
        } else {
            StartError::Listen { key, addr, source }
        }
    })?;
    // A deeper accept queue than std's 128, as glommio's own bind uses, so
    // bursts of new connections are not dropped.
    // SAFETY: listen(2) on a socket this function owns.
    let listened = unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) };
    if listened != 0 {
        let source = std::io::Error::last_os_error();
        return Err(StartError::Listen { key, addr, source });
    }
    // Non-blocking for good: glommio toggles O_NONBLOCK around its first
    // accept attempt, and the flag is shared by every duplicate, so a
    // blocking socket could block one core's accept while another core
    // accepts.
    listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Listen { key, addr, source })?;
    Ok(listener)
}

/// Raises the soft open-files limit to the hard limit: every connection is
/// a descriptor, and the usual soft limit (1024) is below the connection caps.
fn raise_open_files_limit(config: &Config) {
    let wanted = config.cores.net.len() * config.rpc.connections_per_core_max
        + config.ws.connections_max
        + OTHER_FILES_MAX;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct passed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            limit.rlim_cur = before;
        }
    }
    if limit.rlim_cur != before {
        tracing::info!(
            from = before,
            to = limit.rlim_cur,
            "raised the open-files limit"
        );
    }
    if limit.rlim_cur < wanted as u64 {
        tracing::warn!(
            limit = limit.rlim_cur,
            wanted,
            "the open-files limit is below the connection caps (net cores x \
             rpc.connections_per_core_max + ws.connections_max): connections beyond it \
             are refused; raise LimitNOFILE / `ulimit -n`"
        );
    }
}

/// Starts the simulation workers: pinned to the exec CPUs (the net CPUs
/// when there are none), never to seq's unless nothing else exists, and
/// niced, so the kernel preempts them for the pinned net and seq threads.
fn start_simulation_workers(config: &Config) -> Result<Arc<SimPool>, StartError> {
    let cpus = sim_cpus(config);
    let nice = config.rpc.simulation_worker_nice.clamp(0, 19);
    let on_start = Arc::new(move |_index: usize| lower_this_thread(&cpus, nice));
    SimPool::start(
        config.rpc.simulation_workers,
        config.rpc.simulation_queue_max,
        on_start,
    )
    .map_err(StartError::SimulationWorkers)
}

/// The exec CPUs, or the net CPUs when there are none.
fn sim_cpus(config: &Config) -> Vec<usize> {
    let cores = &config.cores;
    let mut cpus: Vec<usize> = if cores.exec.is_empty() {
        cores.net.clone()
    } else {
        cores.exec.clone()
    };
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// Pins the calling thread to `cpus` (ids past CPU_SETSIZE are left out;
/// with none left, nothing changes).
fn set_affinity(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays within it for ids
    // below CPU_SETSIZE, which is checked.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let mut any = false;
        for &cpu in cpus.iter().filter(|&&cpu| cpu < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(cpu, &mut set);
            any = true;
        }
        if any && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pins the calling thread to `cpu` (a state-root hashing helper).
fn pin_this_thread(cpu: usize) {
    if let Err(error) = set_affinity(&[cpu]) {
        tracing::warn!(%error, cpu, "cannot pin a state-root helper");
    }
}

/// Pins the calling thread to `cpus` (all of them: the kernel balances the
/// workers among them) and sets its nice value. Failures are logged, not
/// fatal: an unpinned or un-niced worker still keeps simulations off the
/// net executors.
fn lower_this_thread(cpus: &[usize], nice: i32) {
    if let Err(error) = set_affinity(cpus) {
        tracing::warn!(%error, ?cpus, "cannot pin a simulation worker");
    }
    // With PRIO_PROCESS and 0, Linux applies the nice value to the calling
    // thread only.
    // SAFETY: a plain syscall on this thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), nice, "cannot lower a simulation worker's priority");
    }
}

/// How long a task may run before the executor lets another task queue
/// run (glommio's preemption timer, for every queue): background work
/// (merkleization, checkpoints) yields to RPC, sequencing and the log
/// within this.
const PREEMPT_TIMER: Duration = Duration::from_millis(1);

/// Runs one executor's roles until they end. Latency-sensitive work (RPC,
/// sequencing, the log) runs above background work (merkleization,
/// checkpoints, sampling).
async fn run_core(roles: CoreRoles, shared: Shared) {
    let executor = glommio::executor();
    // Not `Latency::Matters`: glommio makes every wake of such a queue's
    // task from another thread write the executor's eventfd, awake or not
    // (a syscall per reply to a send). Preemption stays within
    // `PREEMPT_TIMER` through the executor's own timer, and the shares keep
    // this queue ahead of the background one.
    let fast = executor.create_task_queue(Shares::Static(1000), Latency::NotImportant, "fast");
    let background =
        executor.create_task_queue(Shares::Static(100), Latency::NotImportant, "background");
    let mut tasks = Vec::new();
    if let Some(figures) = roles.figures {
        spawn(background, sample_executor(figures, Duration::from_secs(1))).detach();
    }
    if let Some(role) = roles.merkle {
        tasks.push(spawn(background, run_merkle_role(role)));
    }
    if let Some(role) = roles.storage {
        let checkpoints = run_checkpoint_role(role.checkpoint_dir.clone(), role.checkpoints);
        tasks.push(spawn(background, checkpoints));
        let log = run_log_role(role.log, shared.ready.clone());
        tasks.push(spawn(fast, log));
    }
    if let Some(role) = roles.seq {
        tasks.push(spawn(fast, run_seq_role(role, shared.clone())));
    }
    for role in roles.net {
        tasks.push(spawn(fast, run_net_role(role, shared.clone())));
    }
    drop(shared);
    for task in tasks {
        task.await;
    }
}

/// Spawns `task` into `queue` of this executor.
fn spawn(
    queue: glommio::TaskQueueHandle,
    task: impl std::future::Future<Output = ()> + 'static,
) -> glommio::Task<()> {
    glommio::spawn_local_into(task, queue).expect("task queue was created above")
}

/// The state-root worker.
async fn run_merkle_role(role: MerkleRole) {
    let mut requests = Vec::new();
    for r in role.requests {
        requests.push(r.connect().await);
    }
    let to_seq = role.to_seq.connect().await;
    seq_core::run_merkle(role.merkle, requests, to_seq).await;
}

/// The checkpoint writer.
async fn run_checkpoint_role(dir: PathBuf, jobs: SharedReceiver<CheckpointJob>) {
    fulmen_storage::checkpoint::run_checkpoints(dir, jobs.connect().await).await;
}

/// The log writer: opens the log at its recovered tail, reports ready (or
/// why it cannot), then appends until the seq core hangs up.
async fn run_log_role(role: LogRole, ready: Ready) {
    let inbox = role.inbox.connect().await;
    let acks = role.acks.connect().await;
    let opened = async {
        let dir = DiskDir::new(&role.dir).await?;
        let mode = dir.mode();
        let log = Log::open_at(dir, role.segment_bytes, role.tail)
            .await
            .map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>((log, mode))
    };
    match opened.await {
        Ok((log, mode)) => {
            tracing::info!(dir = %role.dir.display(), ?mode, "log open");
            let _ = ready.send(Ok(()));
            fulmen_storage::writer::run_writer(log, inbox, acks).await;
        }
        Err(source) => {
            let _ = ready.send(Err(StartError::LogOpen {
                dir: role.dir,
                source,
            }));
        }
    }
}

/// The seq core.
async fn run_seq_role(role: SeqCoreRole, shared: Shared) {
    let mut inboxes = Vec::new();
    for r in role.seq.links.inboxes {
        inboxes.push(r.connect().await);
    }
    let mut events = Vec::new();
    for e in role.seq.links.events {
        events.push(e.connect().await);
    }
    let log = LogLink {
        to_storage: role.to_storage.connect().await,
        acks: role.acks.connect().await,
        durable: role.durable,
        checkpoints: Some((role.checkpoints.connect().await, role.checkpoint_blocks)),
        history: role.history,
        da_records: role.seq.da_records,
    };
    let links = SeqLinks {
        inboxes,
        control: role.seq.control,
        to_merkle: role.to_merkle.connect().await,
        from_merkle: role.from_merkle.connect().await,
        published: shared.published,
        events: EventBus::new(events),
        log: Some(log),
        derived: role.seq.derived,
        upstream: role.seq.upstream,
    };
    let mut seq = Sequencer::from_parts(role.seq.spec, role.seq.limits, role.seq.parts);
    seq.record_accesses(shared.limits.witness_blocks > 0);
    seq_core::run_seq(seq, links, shared.timing, role.seq.pending).await;
}

/// One net core: its hub of subscriptions, its RPC context, and a server per
/// listening socket.
async fn run_net_role(role: NetRole, shared: Shared) {
    let seq = role.seq.connect().await;
    let merkle = role.merkle.connect().await;
    let events = role.events.connect().await;
    let listeners: Vec<_> = role
        .listeners
        .into_iter()
        .map(|l| {
            // SAFETY: `into_raw_fd` hands over sole ownership of an open,
            // bound, listening socket.
            unsafe { glommio::net::TcpListener::from_raw_fd(l.into_raw_fd()) }
        })
        .collect();
    let hub = Rc::new(fulmen_netio::pubsub::Hub::new(role.index, role.control));
    let rpc = RpcContext {
        view: shared.published,
        seq,
        merkle,
        spec: shared.spec,
        limits: shared.limits,
        client_version: format!("fulmen/v{}/linux-x86_64", env!("CARGO_PKG_VERSION")),
        sim: shared.sim,
        da_unposted_bytes_max: shared.da_unposted_bytes_max,
        verifier: shared.verifier,
        forward: shared.forward,
        filters: shared.filters,
        dev: shared.dev,
        fee_tips: Default::default(),
    };
    let ctx = Rc::new(WsContext {
        rpc,
        limits: role.ws,
        shared: role.ws_shared,
        hub: hub.clone(),
    });
    glommio::spawn_local(fulmen_netio::ws::run_events(hub, events)).detach();
    let _ = shared.ready.send(Ok(()));
    let serving: Vec<_> = listeners
        .into_iter()
        .map(|l| fulmen_netio::server::serve(l, ctx.clone(), role.http_shared.clone()))
        .collect();
    futures::future::join_all(serving).await;
}
