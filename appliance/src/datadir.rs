//! The data directory: its LOCK, the genesis it belongs to, its paths, and
//! the wiring of boot (the policy itself is `fulmen_exec::boot`).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use alloy_primitives::B256;
use fulmen_chain::history::History;
use fulmen_chain::spec::ChainSpec;
use fulmen_chain::view::ChainView;
use fulmen_exec::boot::{self as policy, BootError, BootMode, CheckpointReport};
use fulmen_exec::recover::{HistoryLink, RecoverError, Replayed};
use fulmen_exec::sequencer::Genesis;
use fulmen_storage::disk::DiskDir;
use fulmen_storage::history::{HistoryReader, HistoryStore};
use fulmen_storage::log::{LogError, Tail, repair_plan};

/// What can go wrong with a data directory, naming the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DatadirError {
    /// The directory cannot be made.
    #[error("cannot create datadir {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    /// A file cannot be opened.
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// Another process holds the LOCK.
    #[error(
        "datadir {path} is in use by another fulmen process (pid {pid}); stop it or use another --datadir"
    )]
    InUse { path: PathBuf, pid: String },
    /// The LOCK cannot be taken.
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    /// A file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// GENESIS holds something else than a hash.
    #[error("{path} is not a hash")]
    GenesisNotHash { path: PathBuf },
    /// The datadir was made for another chain.
    #[error(
        "datadir {datadir} belongs to the chain with genesis {stored}, but this node's genesis is {ours} \
         (another genesis file, or dev settings such as block_gas_limit changed); use another --datadir"
    )]
    OtherGenesis {
        datadir: PathBuf,
        stored: B256,
        ours: B256,
    },
    /// The log cannot be read.
    #[error("cannot boot from {log_dir}: {source}")]
    ReadLog { log_dir: PathBuf, source: LogError },
    /// The log does not replay.
    #[error("cannot replay the log of {datadir}: {source}")]
    Replay {
        datadir: PathBuf,
        source: RecoverError,
    },
    /// The checkpoint directory cannot be listed.
    #[error("cannot list the checkpoints in {dir}: {source}")]
    ListCheckpoints { dir: PathBuf, source: io::Error },
    /// The history store cannot be opened.
    #[error("cannot open the history store in {dir}: {source}")]
    History { dir: PathBuf, source: io::Error },
    /// The storage core would refuse to open the log.
    #[error("the node cannot open this log: {0}")]
    Repair(LogError),
    /// The log was pruned and no checkpoint serves.
    #[error("cannot boot {datadir}: {}", BootError::Pruned { first_segment: *first_segment })]
    Pruned {
        datadir: PathBuf,
        first_segment: u64,
    },
}

impl DatadirError {
    /// A boot error of `datadir`, with the path of what failed.
    fn boot(datadir: &Path, e: BootError) -> Self {
        match e {
            BootError::Log(source) => Self::ReadLog {
                log_dir: log_dir(datadir),
                source,
            },
            BootError::Replay(source) => Self::Replay {
                datadir: datadir.to_path_buf(),
                source,
            },
            BootError::ListCheckpoints(source) => Self::ListCheckpoints {
                dir: checkpoint_dir(datadir),
                source,
            },
            BootError::Pruned { first_segment } => Self::Pruned {
                datadir: datadir.to_path_buf(),
                first_segment,
            },
        }
    }
}

/// `main` reports every error as text.
impl From<DatadirError> for String {
    fn from(e: DatadirError) -> Self {
        e.to_string()
    }
}

/// A locked data directory. The lock lasts as long as this value (the
/// kernel drops it when the process dies, even by SIGKILL).
pub(crate) struct Datadir {
    path: PathBuf,
    _lock: File,
}

impl Datadir {
    /// Creates `path` if needed and takes its LOCK, or says who holds it.
    pub(crate) fn lock(path: &Path) -> Result<Self, DatadirError> {
        std::fs::create_dir_all(path).map_err(|source| DatadirError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let lock_path = path.join("LOCK");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|source| DatadirError::Open {
                path: lock_path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(DatadirError::InUse {
                    path: path.to_path_buf(),
                    pid: holder.trim().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(DatadirError::Lock {
                    path: lock_path,
                    source,
                });
            }
        }
        file.set_len(0)
            .and_then(|()| write!(file, "{}", std::process::id()))
            .map_err(|source| DatadirError::Write {
                path: lock_path,
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            _lock: file,
        })
    }

    /// Records the genesis hash on first use; refuses a datadir made for
    /// another chain.
    pub(crate) fn bind_genesis(&self, hash: B256) -> Result<(), DatadirError> {
        let file = self.path.join("GENESIS");
        match std::fs::read_to_string(&file) {
            Ok(text) => check_genesis_text(&self.path, &text, hash),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let tmp = self.path.join("GENESIS.tmp");
                std::fs::write(&tmp, format!("{hash}\n"))
                    .and_then(|()| File::open(&tmp)?.sync_all())
                    .and_then(|()| std::fs::rename(&tmp, &file))
                    .and_then(|()| File::open(&self.path)?.sync_all())
                    .map_err(|source| DatadirError::Write { path: file, source })
            }
            Err(source) => Err(DatadirError::Read { path: file, source }),
        }
    }
}

pub(crate) fn log_dir(datadir: &Path) -> PathBuf {
    datadir.join("log")
}

fn check_genesis_text(datadir: &Path, text: &str, hash: B256) -> Result<(), DatadirError> {
    let stored: B256 = text
        .trim()
        .parse()
        .map_err(|_| DatadirError::GenesisNotHash {
            path: datadir.join("GENESIS"),
        })?;
    if stored != hash {
        return Err(DatadirError::OtherGenesis {
            datadir: datadir.to_path_buf(),
            stored,
            ours: hash,
        });
    }
    Ok(())
}

/// What boot found and rebuilt.
pub(crate) struct Booted {
    /// The chain.
    pub replayed: Replayed,
    /// Where writing resumes.
    pub tail: Tail,
    /// The history store, checked against the chain (none for `db check`).
    pub history: Option<fulmen_storage::history::HistoryStore>,
}

/// Reads the log of `datadir` and replays it (`fulmen_exec::boot`), through
/// the history store, whose blocks are not kept in RAM past the last
/// `memory_blocks`. With `check_every_block`, every block's roots are
/// recomputed (`fulmen db check`, which leaves the history store alone);
/// reading alone never changes the log.
pub(crate) fn boot(
    datadir: &Path,
    (spec, genesis): (&ChainSpec, &Genesis),
    now_ms: u64,
    check_every_block: bool,
    memory_blocks: u64,
) -> Result<Booted, DatadirError> {
    if let Ok(text) = std::fs::read_to_string(datadir.join("GENESIS")) {
        check_genesis_text(datadir, &text, genesis.header.hash_slow())?;
    }
    let began = Instant::now();
    let log = DiskDir::for_reading(&log_dir(datadir));
    let checkpoints = DiskDir::for_reading(&checkpoint_dir(datadir));
    let dir = history_dir(datadir);
    let history_error = |source| DatadirError::History {
        dir: dir.clone(),
        source,
    };
    let rules = spec.tx_rules().spec;
    let (mode, mut history) = if !check_every_block {
        let store = HistoryStore::open(&dir).map_err(history_error)?;
        let view = History::new(store.reader(), rules, memory_blocks);
        let link = HistoryLink {
            store: Some(store),
            view,
        };
        (BootMode::Start { now_ms }, Some(link))
    } else if log_pruned(&log) {
        // Older segments were pruned: db check starts from a checkpoint,
        // the blocks before it read (never changed) from the store.
        let reader = HistoryReader::open(&dir).map_err(history_error)?;
        let view = History::new(reader, rules, memory_blocks);
        let link = HistoryLink { store: None, view };
        (BootMode::CheckEveryBlock, Some(link))
    } else {
        (BootMode::CheckEveryBlock, None)
    };
    let booted = policy::boot(&log, &checkpoints, (spec, genesis), mode, history.as_mut())
        .map_err(|e| DatadirError::boot(datadir, e))?;
    report(&booted, began.elapsed());
    Ok(Booted {
        replayed: booted.replayed,
        tail: booted.tail,
        history: history.and_then(|h| h.store),
    })
}

/// Whether the log's older segments were pruned (`history = "recent"`).
fn log_pruned(log: &DiskDir) -> bool {
    fulmen_storage::log::segments(log).is_ok_and(|s| s.first().is_some_and(|first| *first > 0))
}

/// `fulmen db check`: the history store's blocks compared with the chain
/// the log replayed to (`view` holds every block: db check attaches no
/// store). Returns how many blocks match from the store's oldest one (0,
/// or where a `recent` node pruned it), how many it holds, and the first
/// difference, if any.
pub(crate) fn check_history(
    datadir: &Path,
    spec: &ChainSpec,
    view: &ChainView,
) -> Result<(u64, u64, Option<String>), DatadirError> {
    let dir = history_dir(datadir);
    if !dir.join("index").exists() {
        return Ok((0, 0, None));
    }
    let reader = fulmen_storage::history::HistoryReader::open(&dir)
        .map_err(|source| DatadirError::History { dir, source })?;
    // A `recent` store keeps blocks from its oldest one on.
    let first = reader.first();
    let stored = reader.len() - first;
    let history = History::new(reader, spec.tx_rules().spec, 1);
    let head = view.head().header.number;
    let end = (first + stored).min(head + 1);
    for number in first..end {
        let ours = view.block(number).expect("db check keeps every block");
        if let Some(difference) = history_difference(&history, &ours) {
            return Ok((
                number - first,
                stored,
                Some(format!("block {number}: {difference}")),
            ));
        }
    }
    Ok((end.saturating_sub(first), stored, None))
}

/// How the store's block differs from the log's `ours`, if it does.
fn history_difference(
    history: &History,
    ours: &fulmen_chain::block::SealedBlock,
) -> Option<String> {
    let stored = match history.block(ours.header.number) {
        Ok(Some(block)) => block,
        Ok(None) => return Some("missing".into()),
        Err(e) => return Some(e.to_string()),
    };
    if stored.hash != ours.hash || stored.header != ours.header || stored.size != ours.size {
        return Some(format!(
            "header {} where the log has {}",
            stored.hash, ours.hash
        ));
    }
    if stored.txs.len() != ours.txs.len() {
        return Some(format!(
            "{} transactions where the log has {}",
            stored.txs.len(),
            ours.txs.len()
        ));
    }
    let same = |a: &fulmen_chain::block::ExecutedTx, b: &fulmen_chain::block::ExecutedTx| {
        a.tx.hash == b.tx.hash
            && a.tx.sender == b.tx.sender
            && a.success == b.success
            && a.gas_used == b.gas_used
            && a.cumulative_gas_used == b.cumulative_gas_used
            && a.logs == b.logs
            && a.contract_address == b.contract_address
            && a.first_log_index == b.first_log_index
            && a.mini_block == b.mini_block
    };
    let index = stored
        .txs
        .iter()
        .zip(&ours.txs)
        .position(|(a, b)| !same(a, b))?;
    Some(format!(
        "transaction {index} ({}) differs",
        ours.txs[index].tx.hash
    ))
}

/// Where the history store lives.
pub(crate) fn history_dir(datadir: &Path) -> PathBuf {
    datadir.join("history")
}

/// The progress line of a boot that took `took` in all.
fn report(booted: &policy::Booted, took: std::time::Duration) {
    let stats = booted.replayed.stats;
    let mb = booted.bytes as f64 / 1e6;
    let records = booted.records;
    tracing::info!(
        records,
        mb = format!("{mb:.1}"),
        read_ms = booted.read.as_millis() as u64,
        replay_ms = took.saturating_sub(booted.read).as_millis() as u64,
        mb_per_s = format!("{:.0}", mb / took.as_secs_f64().max(1e-9)),
        records_per_s = format!("{:.0}", records as f64 / took.as_secs_f64().max(1e-9)),
        mini_blocks = stats.mini_blocks,
        txs = stats.txs,
        blocks = stats.seals,
        head = booted.replayed.parts.view().head().header.number,
        from_checkpoint = ?stats.from_checkpoint,
        from_segment = booted.first_segment,
        log_mb = format!("{:.1}", (booted.bytes + booted.unread_bytes) as f64 / 1e6),
        skipped = stats.skipped,
        "replayed the log"
    );
}

/// Where checkpoints live.
pub(crate) fn checkpoint_dir(datadir: &Path) -> PathBuf {
    datadir.join("checkpoint")
}

/// Checks every checkpoint against the replayed chain (see
/// `fulmen_exec::boot::check_checkpoints`): how many were verified, and
/// notes on the files boot skips.
pub(crate) fn check_checkpoints(
    datadir: &Path,
    view: &ChainView,
) -> Result<CheckpointReport, DatadirError> {
    let dir = DiskDir::for_reading(&checkpoint_dir(datadir));
    policy::check_checkpoints(&dir, view).map_err(|e| DatadirError::boot(datadir, e))
}

/// What the node will write at the end of the log at its next start (the
/// same plan the storage core applies), for `fulmen db check`; `None` when
/// nothing. An error is what the start would fail with.
pub(crate) fn planned_repair(
    datadir: &Path,
    tail: &Tail,
    segment_bytes: u64,
) -> Result<Option<String>, DatadirError> {
    let has_segments = std::fs::read_dir(log_dir(datadir)).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".seg"))
    });
    if !has_segments {
        return Ok(None);
    }
    let plan = repair_plan(tail, segment_bytes, fulmen_storage::disk::ALIGNMENT)
        .map_err(DatadirError::Repair)?;
    Ok(plan.writes().then(|| plan.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("fulmen-datadir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        path
    }

    #[test]
    fn a_held_lock_and_another_genesis_are_refused_with_the_datadir_named() {
        let path = temp("lock");
        let datadir = Datadir::lock(&path).unwrap();
        let again = Datadir::lock(&path).err().unwrap();
        assert!(
            matches!(&again, DatadirError::InUse { pid, .. } if *pid == std::process::id().to_string())
        );
        assert!(
            again.to_string().contains(&path.display().to_string()),
            "{again}"
        );
        let ours = B256::repeat_byte(1);
        datadir.bind_genesis(ours).unwrap();
        datadir.bind_genesis(ours).unwrap();
        let other = datadir.bind_genesis(B256::repeat_byte(2)).unwrap_err();
        assert!(
            matches!(other, DatadirError::OtherGenesis { stored, .. } if stored == ours),
            "{other}"
        );
        std::fs::write(path.join("GENESIS"), "not a hash").unwrap();
        let garbage = datadir.bind_genesis(ours).unwrap_err();
        assert!(
            matches!(&garbage, DatadirError::GenesisNotHash { path: p } if *p == path.join("GENESIS"))
        );
        drop(datadir);
        let _ = std::fs::remove_dir_all(&path);
    }
}
