//! Resumable subscriptions: `eth_subscribe("miniBlocks" | "logs" |
//! "stateChanges", {..., "fromMiniBlock": N})` first replays every
//! mini-block from N on, read from the log (not from RAM), then hands off
//! to the live stream with no gap and no duplicate.
//!
//! A reader thread per resume (at most `ws.resumes_max` on the node) reads
//! and renders the mini-blocks; the connection's net core asks it for each
//! stretch it may read (up to the newest durable mini-block, or up to the
//! first live event it holds) and queues what comes back as the outbox
//! drains. Live events that arrive meanwhile wait in the subscription's
//! buffer (bounded); once the replay reaches the first of them, they are
//! rendered and the subscription is live. See [`crate::pubsub`].

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fulmen_chain::block::SealedBlock;
use fulmen_chain::events::ChainEvent;
use fulmen_chain::metrics::METRICS;
use fulmen_chain::resume::{LogItem, MiniBlockLog, ResumeError};
use fulmen_chain::spec::EvmChain;
use futures::channel::mpsc;

use crate::notify::{Kind, Rendered};
use crate::rpc::RpcError;

/// Live mini-blocks a resuming subscription holds while it replays: 4096
/// are 40 s of 10 ms mini-blocks. A replay slower than the chain fills it
/// and the connection closes (1013) rather than skip anything.
pub(crate) const CATCHUP_BUFFER_MAX: usize = 4096;
/// Mini-blocks, and bytes of notifications, the reader hands over at once.
const CHUNK_MINI_BLOCKS_MAX: usize = 256;
const CHUNK_BYTES_MAX: usize = 1 << 20;

/// What resumes read, shared by the net cores.
#[derive(Debug)]
pub struct ResumeSource {
    /// The log directory.
    pub log_dir: PathBuf,
    /// Chain parameters (the fork at each block).
    pub chain: EvmChain,
    /// Resumes replaying now.
    pub active: AtomicUsize,
    /// Most resumes replaying at once (`ws.resumes_max`).
    pub max: usize,
}

/// A resuming subscription's state, shared by the fan-out (which buffers
/// live events into it) and its catch-up task.
#[derive(Debug)]
pub(crate) struct Catchup {
    /// Live mini-blocks (and for `replication`, seals) that arrived since
    /// the subscription was made.
    pub(crate) buffer: VecDeque<ChainEvent>,
    /// More than [`CATCHUP_BUFFER_MAX`] arrived.
    pub(crate) overflowed: bool,
    /// The log reader, until the reader thread takes it.
    pub(crate) log: Option<MiniBlockLog>,
    /// The first mini-block to send.
    pub(crate) from: u64,
    /// `replication`: seals are part of the stream.
    pub(crate) seals: bool,
    source: Arc<ResumeSource>,
}

impl Catchup {
    /// A resume from mini-block `from`, whose newest durable mini-block is
    /// `newest`: the clear error of a pruned or future start, or of too
    /// many resumes at once.
    pub(crate) fn start(
        source: &Arc<ResumeSource>,
        (from, seals): (u64, bool),
        newest: u64,
    ) -> Result<Self, RpcError> {
        let active = source.active.fetch_add(1, Ordering::Relaxed);
        METRICS.ws_resumes.fetch_add(1, Ordering::Relaxed);
        let mut catchup = Self {
            buffer: VecDeque::new(),
            overflowed: false,
            log: None,
            from: from.max(1),
            seals,
            source: source.clone(),
        };
        if active >= source.max {
            return Err(RpcError::busy(format!(
                "too many subscriptions replaying at once: limit {} (ws.resumes_max); retry",
                source.max
            )));
        }
        let open = if seals {
            MiniBlockLog::with_seals
        } else {
            MiniBlockLog::open
        };
        let log = open(&source.log_dir, source.chain, from, newest).map_err(|e| match e {
            ResumeError::Pruned { .. } | ResumeError::Future { .. } => {
                RpcError::invalid_params(format!("invalid argument 1 (fromMiniBlock): {e}"))
            }
            other => RpcError::server(format!("cannot resume: {other}")),
        })?;
        catchup.log = Some(log);
        Ok(catchup)
    }

    /// Holds live `event` until the replay reaches it.
    pub(crate) fn hold(&mut self, event: &ChainEvent) {
        if matches!(event, ChainEvent::Sealed(_)) && !self.seals {
            return;
        }
        if self.buffer.len() >= CATCHUP_BUFFER_MAX {
            self.overflowed = true;
            self.buffer.clear();
        } else if !self.overflowed {
            self.buffer.push_back(event.clone());
        }
    }
}

impl Drop for Catchup {
    fn drop(&mut self) {
        self.source.active.fetch_sub(1, Ordering::Relaxed);
        METRICS.ws_resumes.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Notifications read back from the log.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// In order.
    pub(crate) notifications: Vec<String>,
    /// The next mini-block the reader will read.
    pub(crate) next: u64,
    /// The newest seal it sent (`replication`).
    pub(crate) last_seal: Option<u64>,
    /// It read all it was asked for.
    pub(crate) finished: bool,
    /// Why it stopped, when the log could not be read.
    pub(crate) error: Option<String>,
}

/// What a reader thread is asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    /// The first mini-block not sent yet (held live ones may have gone
    /// ahead of the reader).
    pub(crate) next: u64,
    /// The newest seal sent.
    pub(crate) last_seal: u64,
    /// Read mini-blocks up to this one.
    pub(crate) until: u64,
    /// And seals of blocks up to this one.
    pub(crate) until_seal: u64,
}

/// The net core's side of a reader thread.
#[derive(Debug)]
pub(crate) struct Reader {
    targets: std::sync::mpsc::Sender<Target>,
    /// What it read.
    pub(crate) chunks: mpsc::Receiver<Chunk>,
}

impl Reader {
    /// Asks for every mini-block up to `target.until` and (`replication`)
    /// every seal up to `target.until_seal` (all durable), leaving out what
    /// was already sent.
    pub(crate) fn read(&self, target: Target) {
        // The thread ends only when the chunks' receiver is gone.
        let _ = self.targets.send(target);
    }
}

/// Starts a reader thread over `log`, rendering for subscription `id`.
pub(crate) fn spawn_reader(log: MiniBlockLog, id: String, kind: Kind) -> std::io::Result<Reader> {
    let (targets, requests) = std::sync::mpsc::channel();
    let (chunks_out, chunks) = mpsc::channel(2);
    std::thread::Builder::new()
        .name("fulmen-resume".into())
        .spawn(move || read(log, &id, &kind, &requests, chunks_out))?;
    Ok(Reader { targets, chunks })
}

/// The reader thread: for each target, the records up to it in chunks,
/// rendered for the subscription.
fn read(
    mut log: MiniBlockLog,
    id: &str,
    kind: &Kind,
    requests: &std::sync::mpsc::Receiver<Target>,
    mut out: mpsc::Sender<Chunk>,
) {
    while let Ok(target) = requests.recv() {
        let Target {
            until, until_seal, ..
        } = target;
        log.skip_to(target.next);
        loop {
            let mut chunk = Chunk {
                notifications: Vec::new(),
                next: log.next(),
                last_seal: None,
                finished: false,
                error: None,
            };
            let mut bytes = 0;
            let mut read = 0;
            while read < CHUNK_MINI_BLOCKS_MAX && bytes < CHUNK_BYTES_MAX {
                let item = if matches!(kind, Kind::Replication) {
                    log.next_item(until, until_seal)
                } else {
                    log.next_until(until).map(|e| e.map(LogItem::MiniBlock))
                };
                let event = match item {
                    Ok(Some(LogItem::MiniBlock(event))) => {
                        METRICS
                            .ws_resumed_mini_blocks
                            .fetch_add(1, Ordering::Relaxed);
                        ChainEvent::MiniBlock(Arc::new(event))
                    }
                    Ok(Some(LogItem::Seal(seal))) if seal.header.number <= target.last_seal => {
                        continue;
                    }
                    Ok(Some(LogItem::Seal(seal))) => {
                        let seal = *seal;
                        chunk.last_seal = Some(seal.header.number);
                        ChainEvent::Sealed(Arc::new(SealedBlock {
                            hash: seal.header.hash_slow(),
                            header: seal.header,
                            txs: Vec::new(),
                            size: seal.size,
                        }))
                    }
                    Ok(None) => {
                        chunk.finished = true;
                        break;
                    }
                    Err(e) => {
                        chunk.error = Some(e.to_string());
                        break;
                    }
                };
                let before = chunk.notifications.len();
                Rendered::new(&event).notifications(id, kind, &mut chunk.notifications);
                bytes += chunk.notifications[before..]
                    .iter()
                    .map(String::len)
                    .sum::<usize>();
                read += 1;
            }
            chunk.next = log.next();
            let stop = chunk.error.is_some();
            let finished = chunk.finished;
            if futures::executor::block_on(futures::SinkExt::send(&mut out, chunk)).is_err() || stop
            {
                return;
            }
            if finished {
                break;
            }
        }
    }
}
