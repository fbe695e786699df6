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

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use fulmen_chain::block::SealedBlock;
use fulmen_chain::history::encode_block;
use fulmen_chain::metrics::METRICS;
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

/// Starts the writer over `store`; `on_start` runs first on its thread
/// (pinning, priority). Returns where the seq core sends sealed blocks.
pub(crate) fn start(
    store: HistoryStore,
    datadir: PathBuf,
    on_start: impl FnOnce() + Send + 'static,
) -> std::io::Result<(SyncSender<Arc<SealedBlock>>, std::thread::JoinHandle<()>)> {
    let (to, from) = std::sync::mpsc::sync_channel(HISTORY_QUEUE_CAPACITY);
    let handle = std::thread::Builder::new()
        .name("fulmen-history".into())
        .spawn(move || {
            on_start();
            run(store, &from, &datadir);
        })?;
    Ok((to, handle))
}

fn run(mut store: HistoryStore, blocks: &Receiver<Arc<SealedBlock>>, datadir: &Path) {
    let mut synced_at = Instant::now();
    let mut measured_at: Option<Instant> = None;
    let mut free_at: Option<Instant> = None;
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
