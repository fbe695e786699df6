//! The history writer: a plain thread that appends each sealed block the
//! seq core publishes to the history store (`fulmen_storage::history`), and
//! syncs the store once a second. It blocks on disk IO, so it is not a task
//! on a pinned executor; it runs on the exec CPUs below the pinned roles, as
//! the DA thread does without a CPU of its own.
//!
//! The seq core never waits for it: it sends with `try_send` and, when the
//! queue is full, sends the rest at its next publish. A block leaves the
//! chain view's RAM only once the store holds it, so a slow or failing disk
//! costs memory, never an answer.
//!
//! On a `recent` node (`storage.history = "recent"`) it also prunes, every
//! few seconds. It keeps every block from the oldest of:
//! - the retention window (the last `storage.history_blocks`);
//! - the first block not finalized on L1 (the batcher may post it again);
//! - the oldest checkpoint on disk (boot starts from a checkpoint, and reads
//!   the log from the segment where its block's records start).
//!
//! Log segments are deleted oldest first while the next segment's first
//! mini-block is of a block below that point (so every record of a deleted
//! segment is of an older block: `fulmen_exec::boot::segment_first_block`).
//! The history store deletes whole chunks below it
//! (`HistoryStore::prune_below`): a boot from the checkpoint takes the
//! BLOCKHASH window of the 255 blocks before it from the checkpoint's
//! marker, so nothing is pruned until the oldest checkpoint is one this run
//! wrote (older builds' markers lack the window). The log is never pruned
//! past the store's oldest block, and nothing is pruned while the oldest
//! checkpoint's block is not durable in the store. A verifier prunes
//! only below a checkpoint that L1 has finalized (its unwinds stop there). The log is the durable copy, the store
//! derived from it: a crash between any two deletions leaves a datadir
//! that boots, and the next round finishes the job.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use fulmen_chain::block::SealedBlock;
use fulmen_chain::history::encode_block;
use fulmen_chain::metrics::METRICS;
use fulmen_chain::view::ChainView;
use fulmen_storage::disk::DiskDir;
use fulmen_storage::history::HistoryStore;

/// Sealed blocks waiting for the writer.
pub(crate) const HISTORY_QUEUE_CAPACITY: usize = 1024;
/// How often appended blocks are synced.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How long a failed write waits before it is tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// A failing write is reported once per this many tries.
const RETRY_REPORT_EVERY: u64 = 30;
/// How often the datadir's disk use is measured for `/metrics`.
const DISK_USE_INTERVAL: Duration = Duration::from_secs(10);
/// How often the free space of its filesystem is measured (the floor
/// below which new transactions are refused).
const DISK_FREE_INTERVAL: Duration = Duration::from_secs(1);
/// How often a `recent` node prunes.
const PRUNE_INTERVAL: Duration = Duration::from_secs(5);

/// What a `recent` node keeps (see the module's documentation).
pub(crate) struct Retention {
    /// Blocks kept (`storage.history_blocks`).
    pub(crate) blocks: u64,
    /// A verifier: it may unwind to L1-finalized data, so it prunes only
    /// below a checkpoint that is finalized.
    pub(crate) verifier: bool,
    /// The chain as the seq core publishes it (head, L1-finalized block).
    pub(crate) view: Arc<ArcSwap<ChainView>>,
}

/// Starts the writer over `store`; `on_start` runs first on its thread
/// (pinning, priority). Returns where the seq core sends sealed blocks.
pub(crate) fn start(
    store: HistoryStore,
    (datadir, retention): (PathBuf, Option<Retention>),
    on_start: impl FnOnce() + Send + 'static,
) -> std::io::Result<(SyncSender<Arc<SealedBlock>>, std::thread::JoinHandle<()>)> {
    let (to, from) = std::sync::mpsc::sync_channel(HISTORY_QUEUE_CAPACITY);
    let handle = std::thread::Builder::new()
        .name("fulmen-history".into())
        .spawn(move || {
            on_start();
            run(store, &from, &datadir, retention.as_ref());
        })?;
    Ok((to, handle))
}

fn run(
    mut store: HistoryStore,
    blocks: &Receiver<Arc<SealedBlock>>,
    datadir: &Path,
    retention: Option<&Retention>,
) {
    let mut synced_at = Instant::now();
    let mut measured_at: Option<Instant> = None;
    let mut free_at: Option<Instant> = None;
    let mut pruned_at = Instant::now();
    let mut pruner = Pruner::default();
    METRICS.history_oldest_block.store(store.first(), Relaxed);
    loop {
        match blocks.recv_timeout(SYNC_INTERVAL.min(DISK_FREE_INTERVAL)) {
            Ok(block) => write(&mut store, &block),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                sync(&mut store);
                return;
            }
        }
        METRICS.history_blocks.store(store.len(), Relaxed);
        if synced_at.elapsed() >= SYNC_INTERVAL {
            sync(&mut store);
            synced_at = Instant::now();
        }
        if free_at.is_none_or(|at| at.elapsed() >= DISK_FREE_INTERVAL) {
            watch_free_space(datadir);
            free_at = Some(Instant::now());
        }
        if let Some(retention) = retention
            && pruned_at.elapsed() >= PRUNE_INTERVAL
        {
            pruner.prune(&mut store, retention, datadir);
            pruned_at = Instant::now();
        }
        if measured_at.is_none_or(|at| at.elapsed() >= DISK_USE_INTERVAL) {
            METRICS
                .datadir_bytes
                .store(disk_use_bytes(datadir), Relaxed);
            measured_at = Some(Instant::now());
        }
    }
}

/// Appends `block`, trying again until the disk takes it (a full disk, an
/// IO error): the blocks after it wait in the queue, and in RAM.
fn write(store: &mut HistoryStore, block: &SealedBlock) {
    let number = block.header.number;
    if number != store.len() {
        // The seq core sends each block once, in order, from the store's
        // length at boot; anything else is a bug, reported, not written.
        tracing::error!(
            number,
            next = store.len(),
            "history writer: a block out of order; not written"
        );
        return;
    }
    let (keys, payload) = encode_block(block);
    let mut tries = 0u64;
    while let Err(error) = store.append(number, &keys, &payload) {
        METRICS.history_write_errors.fetch_add(1, Relaxed);
        if tries.is_multiple_of(RETRY_REPORT_EVERY) {
            tracing::error!(
                number,
                %error,
                "cannot write a block to the history store; trying again every second (blocks stay in RAM meanwhile)"
            );
        }
        tries += 1;
        std::thread::sleep(RETRY_INTERVAL);
    }
}

fn sync(store: &mut HistoryStore) {
    if let Err(error) = store.sync() {
        METRICS.history_write_errors.fetch_add(1, Relaxed);
        tracing::error!(%error, "cannot sync the history store; trying again in a second");
    }
}

/// A `recent` node's pruning (see the module's documentation).
#[derive(Default)]
struct Pruner {
    /// Each log segment's first block, once looked at.
    first_blocks: HashMap<u64, u64>,
    /// The last failure reported, so a lasting one is not repeated.
    failing: Option<String>,
    /// The head when pruning first looked (about the boot's head).
    started_at: Option<u64>,
}

impl Pruner {
    fn prune(&mut self, store: &mut HistoryStore, retention: &Retention, datadir: &Path) {
        let checkpoints = DiskDir::for_reading(&crate::datadir::checkpoint_dir(datadir));
        // Newest first: the last is the oldest.
        let Some(&(checkpoint, _)) = fulmen_storage::checkpoint::list(&checkpoints)
            .ok()
            .and_then(|found| found.last().cloned())
            .as_ref()
        else {
            return; // Until the first checkpoint, boot needs the whole log.
        };
        let view = retention.view.load();
        let started_at = *self.started_at.get_or_insert(view.head().header.number);
        if checkpoint <= started_at {
            // Only a checkpoint this run wrote is trusted to carry the
            // BLOCKHASH window in its marker (older builds' markers do not;
            // boot then reads those hashes from the store).
            return;
        }
        if checkpoint >= store.synced() {
            return; // Boot from it needs its block durable in the store.
        }
        let finalized = view.finalized();
        if retention.verifier && (view.da_heads().is_none() || checkpoint > finalized) {
            // An unwind (to L1-finalized data at worst) must leave a
            // checkpoint whose log is whole.
            return;
        }
        let window = (view.head().header.number + 1).saturating_sub(retention.blocks);
        // The finalized block itself is kept (`finalized` answers).
        let keep_from = window.min(finalized).min(checkpoint);
        let result = store.prune_below(keep_from).and_then(|freed| {
            // Never past what the store holds: the log is its only source.
            let log_from = keep_from.min(store.first());
            let log = crate::datadir::log_dir(datadir);
            Ok(freed + self.prune_log(&log, log_from)?)
        });
        METRICS.history_oldest_block.store(store.first(), Relaxed);
        match result {
            Ok(freed) => {
                METRICS.pruned_bytes.fetch_add(freed, Relaxed);
                if freed > 0 {
                    tracing::info!(
                        oldest_block = store.first(),
                        log_from_block = keep_from,
                        freed_mb = freed >> 20,
                        "pruned history (storage.history = \"recent\")"
                    );
                }
                self.failing = None;
            }
            Err(error) => {
                let text = error.to_string();
                if self.failing.as_ref() != Some(&text) {
                    tracing::error!(%error, "cannot prune history; trying again in a few seconds");
                }
                self.failing = Some(text);
            }
        }
    }

    /// Deletes the log segments, oldest first, whose records are all of
    /// blocks below `keep_from`; returns the bytes freed.
    fn prune_log(&mut self, dir: &Path, keep_from: u64) -> std::io::Result<u64> {
        let log = DiskDir::for_reading(dir);
        let segments = fulmen_storage::log::segments(&log)?;
        let mut freed = 0;
        for pair in segments.windows(2) {
            let (segment, next) = (pair[0], pair[1]);
            let first = match self.first_blocks.get(&next) {
                Some(block) => *block,
                None => {
                    let Some(block) = fulmen_exec::boot::segment_first_block(&log, next) else {
                        break;
                    };
                    self.first_blocks.insert(next, block);
                    block
                }
            };
            if first >= keep_from {
                break;
            }
            let path = dir.join(fulmen_storage::log::segment_name(segment));
            let bytes = std::fs::metadata(&path).map_or(0, |m| m.blocks() * 512);
            std::fs::remove_file(&path)?;
            self.first_blocks.remove(&segment);
            freed += bytes;
        }
        if freed > 0 {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(freed)
    }
}

/// Bytes the files under `dir` take on disk (allocated blocks, so
/// preallocated log segments count in full).
fn disk_use_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => disk_use_bytes(&entry.path()),
            Ok(meta) => meta.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Bytes free for an unprivileged writer on the filesystem of `path`.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `name` is a NUL-terminated path and `stats` points to writable
    // memory of the right type; statvfs fills it whole when it returns 0.
    let stats = unsafe {
        if libc::statvfs(name.as_ptr(), stats.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stats.assume_init()
    };
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Start-up: refuses a datadir with less than `min_bytes` free, and sets
/// the floor the running node holds (see [`watch_free_space`]).
pub(crate) fn guard_disk(datadir: &Path, min_bytes: u64) -> Result<(), String> {
    METRICS.disk_free_min_bytes.store(min_bytes, Relaxed);
    if min_bytes == 0 {
        return Ok(());
    }
    let free = free_bytes(datadir).map_err(|e| {
        format!(
            "cannot measure the free space of {}: {e}",
            datadir.display()
        )
    })?;
    METRICS.disk_free_bytes.store(free, Relaxed);
    if free < min_bytes {
        return Err(format!(
            "refusing to start: {} MiB free on the filesystem of {}, below storage.disk_free_min_mb = {} \
             (free space, or lower the floor with --storage-disk-free-min-mb)",
            free >> 20,
            datadir.display(),
            min_bytes >> 20
        ));
    }
    Ok(())
}

/// Measures the free space and says when it crosses the floor: below it,
/// net cores refuse new transactions (`Metrics::disk_refusal`).
fn watch_free_space(datadir: &Path) {
    let Ok(free) = free_bytes(datadir) else {
        return;
    };
    let min = METRICS.disk_free_min_bytes.load(Relaxed);
    let before = METRICS.disk_free_bytes.swap(free, Relaxed);
    if free < min && before >= min {
        tracing::error!(
            free_mib = free >> 20,
            min_mib = min >> 20,
            "disk nearly full: new transactions are refused until space is freed"
        );
    } else if free >= min && before < min {
        tracing::warn!(
            free_mib = free >> 20,
            "disk space is back above the floor: transactions are taken again"
        );
    }
}
