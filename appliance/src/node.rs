//! Wires the roles onto pinned glommio executors, one per CPU of the core
//! map. Roles that share a CPU run as task queues with shares on that CPU's
//! executor.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fulmen_exec::{
    block::Merkleizer,
    chain::ChainSpec,
    seq_core::{self, MerkleRequest, SeqRequest, SeqTiming},
    sequencer::{Genesis, PoolLimits, Sequencer},
};
use fulmen_netio::eth::{NetContext, RpcLimits};
use glommio::{
    Latency, LocalExecutorBuilder, Placement, Shares,
    channels::shared_channel::{self, SharedReceiver, SharedSender},
};

use crate::config::Config;

/// io_uring buffer memory per executor. Small, so that several executors fit
/// under the default 8 MiB memlock limit; the storage engine sizes its own.
const IO_MEMORY_BYTES: usize = 256 * 1024;

/// Capacity of each net core's proof channel to the state-root worker.
const PROOF_QUEUE_CAPACITY: usize = 256;

/// Capacity of the seal channels between seq and the state-root worker.
const SEAL_QUEUE_CAPACITY: usize = 64;

#[derive(Default)]
struct CoreRoles {
    net: Vec<NetRole>,
    seq: Option<SeqRole>,
    merkle: Option<MerkleRole>,
}

struct NetRole {
    seq: SharedSender<SeqRequest>,
    merkle: SharedSender<MerkleRequest>,
}

struct SeqRole {
    spec: ChainSpec,
    limits: PoolLimits,
    genesis: Genesis,
    inboxes: Vec<SharedReceiver<SeqRequest>>,
    to_merkle: SharedSender<MerkleRequest>,
    from_merkle: SharedReceiver<fulmen_exec::block::SealRoots>,
}

struct MerkleRole {
    merkle: Merkleizer,
    requests: Vec<SharedReceiver<MerkleRequest>>,
    to_seq: SharedSender<fulmen_exec::block::SealRoots>,
}

/// Starts every role; returns once all net cores accept connections.
pub(crate) fn start(
    config: &Config,
    spec: ChainSpec,
    rpc_addr: SocketAddr,
) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
    let limits = PoolLimits {
        parked_per_sender_max: config.pool.parked_per_sender_max,
        parked_total_max: config.pool.parked_total_max,
        deferred_max: config.pool.deferred_max,
    };
    let genesis = Genesis::new(&spec);
    // The sequencer holds a revm EVM, which is not Send: this one only gives
    // the first published view; the seq core builds its own from `genesis`.
    let first_view = Sequencer::new(spec.clone(), limits, &genesis, seq_core::now_ms())
        .view()
        .clone();
    let published = Arc::new(ArcSwap::from_pointee(first_view));
    let merkle = Merkleizer::new(genesis.trie.clone(), 0);

    let cores = &config.cores;
    let mut roles: BTreeMap<usize, CoreRoles> = BTreeMap::new();
    let mut inboxes = Vec::new();
    let mut merkle_requests = Vec::new();
    for cpu in &cores.net {
        let (seq_tx, seq_rx) = shared_channel::new_bounded(config.pool.inbox_capacity);
        let (proof_tx, proof_rx) = shared_channel::new_bounded(PROOF_QUEUE_CAPACITY);
        inboxes.push(seq_rx);
        merkle_requests.push(proof_rx);
        roles.entry(*cpu).or_default().net.push(NetRole {
            seq: seq_tx,
            merkle: proof_tx,
        });
    }
    let (seal_tx, seal_rx) = shared_channel::new_bounded(SEAL_QUEUE_CAPACITY);
    let (roots_tx, roots_rx) = shared_channel::new_bounded(SEAL_QUEUE_CAPACITY);
    merkle_requests.push(seal_rx);
    roles.entry(cores.seq).or_default().seq = Some(SeqRole {
        spec: spec.clone(),
        limits,
        genesis,
        inboxes,
        to_merkle: seal_tx,
        from_merkle: roots_rx,
    });
    let merkle_cpu = cores.exec.first().copied().unwrap_or(cores.seq);
    roles.entry(merkle_cpu).or_default().merkle = Some(MerkleRole {
        merkle,
        requests: merkle_requests,
        to_seq: roots_tx,
    });

    let limits = config.rpc.clone();
    let timing = SeqTiming {
        block_time_ms: config.block_time_ms,
        mini_block_max_ms: config.mini_block_max_ms,
    };
    let spec = Arc::new(spec);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let net_count = cores.net.len();
    let mut threads = Vec::new();
    for (cpu, roles) in roles {
        let published = published.clone();
        let spec = spec.clone();
        let limits = limits.clone();
        let ready = ready_tx.clone();
        let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("fulmen-cpu{cpu}"))
            .io_memory(IO_MEMORY_BYTES)
            .spin_before_park(Duration::from_micros(config.cores.spin_before_park_us));
        let handle = builder
            .spawn(move || async move {
                run_core(roles, published, spec, limits, timing, rpc_addr, ready).await;
            })
            .map_err(|e| format!("cannot start the executor on CPU {cpu}: {e}"))?;
        threads.push(std::thread::spawn(move || {
            if let Err(e) = handle.join() {
                tracing::error!(cpu, error = ?e, "executor stopped");
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..net_count {
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a net core did not start listening within 30 s".into()),
        }
    }
    Ok(threads)
}

async fn run_core(
    roles: CoreRoles,
    published: Arc<ArcSwap<fulmen_exec::block::ChainView>>,
    spec: Arc<ChainSpec>,
    limits: RpcLimits,
    timing: SeqTiming,
    rpc_addr: SocketAddr,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let executor = glommio::executor();
    // Latency-sensitive work (RPC, sequencing) above background merkleization.
    let fast = executor.create_task_queue(
        Shares::Static(1000),
        Latency::Matters(Duration::from_millis(1)),
        "fast",
    );
    let background =
        executor.create_task_queue(Shares::Static(100), Latency::NotImportant, "background");
    let mut tasks = Vec::new();
    if let Some(role) = roles.merkle {
        let task = glommio::spawn_local_into(
            async move {
                let mut requests = Vec::new();
                for r in role.requests {
                    requests.push(r.connect().await);
                }
                let to_seq = role.to_seq.connect().await;
                seq_core::run_merkle(role.merkle, requests, to_seq).await;
            },
            background,
        )
        .expect("task queue was created above");
        tasks.push(task);
    }
    if let Some(role) = roles.seq {
        let published = published.clone();
        let task = glommio::spawn_local_into(
            async move {
                let mut inboxes = Vec::new();
                for r in role.inboxes {
                    inboxes.push(r.connect().await);
                }
                let to_merkle = role.to_merkle.connect().await;
                let from_merkle = role.from_merkle.connect().await;
                let seq = Sequencer::new(role.spec, role.limits, &role.genesis, seq_core::now_ms());
                drop(role.genesis);
                seq_core::run_seq(seq, inboxes, to_merkle, from_merkle, published, timing).await;
            },
            fast,
        )
        .expect("task queue was created above");
        tasks.push(task);
    }
    for role in roles.net {
        let published = published.clone();
        let spec = spec.clone();
        let limits = limits.clone();
        let ready = ready.clone();
        let task = glommio::spawn_local_into(
            async move {
                let seq = role.seq.connect().await;
                let merkle = role.merkle.connect().await;
                let listener = match glommio::net::TcpListener::bind(rpc_addr) {
                    Ok(listener) => listener,
                    Err(e) => {
                        let _ = ready.send(Err(format!("cannot listen on {rpc_addr}: {e}")));
                        return;
                    }
                };
                let ctx = Rc::new(NetContext {
                    view: published,
                    seq,
                    merkle,
                    spec,
                    limits,
                    client_version: format!("fulmen/v{}/linux-x86_64", env!("CARGO_PKG_VERSION")),
                });
                let _ = ready.send(Ok(()));
                fulmen_netio::server::serve(listener, ctx).await;
            },
            fast,
        )
        .expect("task queue was created above");
        tasks.push(task);
    }
    drop(ready);
    for task in tasks {
        task.await;
    }
}
