//! The data directory: its LOCK, the genesis it belongs to, and boot (read
//! the log, replay it, check it).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use alloy_primitives::B256;
use fulmen_chain::persist::decode_seal;
use fulmen_chain::spec::ChainSpec;
use fulmen_chain::view::ChainView;
use fulmen_exec::merkle::StateTrie;
use fulmen_exec::recover::{Replayed, replay};
use fulmen_exec::sequencer::Genesis;
use fulmen_storage::HotState;
use fulmen_storage::checkpoint::{self, CheckpointMeta};
use fulmen_storage::disk::DiskDir;
use fulmen_storage::log::{Position, Tail, read_log, repair_plan};
use fulmen_storage::record::RecordKind;

/// A locked data directory. The lock lasts as long as this value (the
/// kernel drops it when the process dies, even by SIGKILL).
pub(crate) struct Datadir {
    path: PathBuf,
    _lock: File,
}

impl Datadir {
    /// Creates `path` if needed and takes its LOCK, or says who holds it.
    pub(crate) fn lock(path: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(path)
            .map_err(|e| format!("cannot create datadir {}: {e}", path.display()))?;
        let lock_path = path.join("LOCK");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(format!(
                    "datadir {} is in use by another fulmen process (pid {}); stop it or use another --datadir",
                    path.display(),
                    holder.trim()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", lock_path.display()));
            }
        }
        file.set_len(0)
            .and_then(|()| write!(file, "{}", std::process::id()))
            .map_err(|e| format!("cannot write {}: {e}", lock_path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            _lock: file,
        })
    }

    /// Records the genesis hash on first use; refuses a datadir made for
    /// another chain.
    pub(crate) fn bind_genesis(&self, hash: B256) -> Result<(), String> {
        let file = self.path.join("GENESIS");
        match std::fs::read_to_string(&file) {
            Ok(text) => check_genesis_text(&self.path, &text, hash),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let tmp = self.path.join("GENESIS.tmp");
                std::fs::write(&tmp, format!("{hash}\n"))
                    .and_then(|()| File::open(&tmp)?.sync_all())
                    .and_then(|()| std::fs::rename(&tmp, &file))
                    .and_then(|()| File::open(&self.path)?.sync_all())
                    .map_err(|e| format!("cannot write {}: {e}", file.display()))
            }
            Err(e) => Err(format!("cannot read {}: {e}", file.display())),
        }
    }
}

pub(crate) fn log_dir(datadir: &Path) -> PathBuf {
    datadir.join("log")
}

fn check_genesis_text(datadir: &Path, text: &str, hash: B256) -> Result<(), String> {
    let stored: B256 = text
        .trim()
        .parse()
        .map_err(|_| format!("{}/GENESIS is not a hash", datadir.display()))?;
    if stored != hash {
        return Err(format!(
            "datadir {} belongs to the chain with genesis {stored}, but this node's genesis is {hash} \
             (another genesis file, or dev settings such as block_gas_limit changed); use another --datadir",
            datadir.display()
        ));
    }
    Ok(())
}

/// What boot found and rebuilt.
pub(crate) struct Booted {
    /// The chain.
    pub replayed: Replayed,
    /// Where writing resumes.
    pub tail: Tail,
}

/// Reads the log of `datadir` and replays it. With `check_every_block`,
/// every block's roots are recomputed (`fulmen db check`); reading alone
/// never changes a file.
pub(crate) fn boot(
    datadir: &Path,
    spec: &ChainSpec,
    genesis: &Genesis,
    now_ms: u64,
    check_every_block: bool,
) -> Result<Booted, String> {
    if let Ok(text) = std::fs::read_to_string(datadir.join("GENESIS")) {
        check_genesis_text(datadir, &text, genesis.header.hash_slow())?;
    }
    let began = Instant::now();
    let dir = DiskDir::for_reading(&log_dir(datadir));
    let (recovery, tail) = read_log(&dir)
        .map_err(|e| format!("cannot boot from {}: {e}", log_dir(datadir).display()))?;
    let read = began.elapsed();
    if let Some((at, error)) = &recovery.truncated {
        tracing::warn!(
            segment = at.segment,
            offset = at.offset,
            %error,
            "the log ends with a torn record (a crash during its write; it was never acknowledged): it is cut off"
        );
    }
    let records = || {
        recovery
            .records
            .iter()
            .map(|(at, kind, payload)| (*at, *kind, payload.as_slice()))
    };
    // A full check replays from genesis; a boot starts from the newest
    // checkpoint that matches the log, and falls back to genesis if none does.
    let checkpoint = if check_every_block {
        None
    } else {
        newest_checkpoint(datadir, &recovery.records)
    };
    let replayed = match checkpoint {
        Some(image) => {
            let number = image.0.number;
            match replay(spec, genesis, Some(image), records(), now_ms, false) {
                Ok(replayed) => Ok(replayed),
                Err(e) => {
                    tracing::warn!(number, error = %e, "the checkpoint does not replay; replaying the whole log instead");
                    replay(spec, genesis, None, records(), now_ms, false)
                }
            }
        }
        None => replay(spec, genesis, None, records(), now_ms, check_every_block),
    }
    .map_err(|e| format!("cannot replay the log of {}: {e}", datadir.display()))?;
    let took = began.elapsed();
    let stats = replayed.stats;
    let mb = recovery.bytes as f64 / 1e6;
    tracing::info!(
        records = recovery.records.len(),
        mb = format!("{mb:.1}"),
        read_ms = read.as_millis() as u64,
        replay_ms = (took - read).as_millis() as u64,
        mb_per_s = format!("{:.0}", mb / took.as_secs_f64().max(1e-9)),
        records_per_s = format!(
            "{:.0}",
            recovery.records.len() as f64 / took.as_secs_f64().max(1e-9)
        ),
        mini_blocks = stats.mini_blocks,
        txs = stats.txs,
        blocks = stats.seals,
        head = replayed.parts.view().head().header.number,
        from_checkpoint = ?stats.from_checkpoint,
        "replayed the log"
    );
    Ok(Booted { replayed, tail })
}

/// Where checkpoints live.
pub(crate) fn checkpoint_dir(datadir: &Path) -> PathBuf {
    datadir.join("checkpoint")
}

/// The log's sealed block hashes by number.
fn sealed_hashes(records: &[(Position, RecordKind, Vec<u8>)]) -> HashMap<u64, B256> {
    records
        .iter()
        .filter(|(_, kind, _)| *kind == RecordKind::BlockSeal)
        .filter_map(|(_, _, payload)| decode_seal(payload).ok())
        .map(|seal| (seal.header.number, seal.header.hash_slow()))
        .collect()
}

/// The newest checkpoint that reads back whole and whose block the log
/// sealed with the same hash; others are reported and skipped.
fn newest_checkpoint(
    datadir: &Path,
    records: &[(Position, RecordKind, Vec<u8>)],
) -> Option<(CheckpointMeta, HotState)> {
    let dir = checkpoint_dir(datadir);
    let found = match checkpoint::list(&dir) {
        Ok(found) if found.is_empty() => return None,
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list checkpoints; replaying the whole log");
            return None;
        }
    };
    let sealed = sealed_hashes(records);
    for (number, path) in found {
        let Some(hash) = sealed.get(&number) else {
            tracing::warn!(path = %path.display(), "not a checkpoint of this log (a block the log never sealed: junk, or another chain's); skipped");
            continue;
        };
        let began = Instant::now();
        match checkpoint::read(&path) {
            Ok((meta, state)) if meta.number == number && meta.hash == *hash => {
                tracing::info!(
                    number,
                    accounts = state.account_count(),
                    slots = state.slot_count(),
                    load_ms = began.elapsed().as_millis() as u64,
                    "loaded checkpoint"
                );
                return Some((meta, state));
            }
            Ok(_) => {
                tracing::warn!(path = %path.display(), "checkpoint does not match the log's block; skipped")
            }
            Err(e) => {
                tracing::warn!(error = %e, "not a valid checkpoint; skipped, an older one is used")
            }
        }
    }
    None
}

/// Checks every checkpoint against the replayed chain: checksum, block hash,
/// and the root of its state against the block's sealed state root. Returns
/// how many were verified, and notes on files that boot skips (junk, damaged
/// or partial images, blocks the log never sealed), as boot warns of them.
/// A whole image that contradicts the chain is an error.
pub(crate) fn check_checkpoints(
    datadir: &Path,
    view: &ChainView,
) -> Result<(usize, Vec<String>), String> {
    let dir = checkpoint_dir(datadir);
    let found =
        checkpoint::list(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut verified = 0;
    let mut skipped = Vec::new();
    for (number, path) in &found {
        let (meta, state) = match checkpoint::read(path) {
            Ok(image) => image,
            Err(e) => {
                skipped.push(format!("{e}; boot skips it"));
                continue;
            }
        };
        let Some(block) = view.block(*number) else {
            skipped.push(format!(
                "checkpoint {} is of block {number}, which the log never sealed; boot skips it",
                path.display()
            ));
            continue;
        };
        let root = StateTrie::from_state(&state).root();
        if meta.number != *number || meta.hash != block.hash || root != block.header.state_root {
            // Boot skips such an image (it replays without it), so the
            // datadir is usable: a note, as boot's warning, not a failure.
            skipped.push(format!(
                "checkpoint {} does not match block {number} of the log (hash {}, state root {root}); boot skips it",
                path.display(),
                meta.hash
            ));
            continue;
        }
        verified += 1;
    }
    Ok((verified, skipped))
}

/// What the node will write at the end of the log at its next start (the
/// same plan the storage core applies), for `fulmen db check`; `None` when
/// nothing. An error is what the start would fail with.
pub(crate) fn planned_repair(
    datadir: &Path,
    tail: &Tail,
    segment_bytes: u64,
) -> Result<Option<String>, String> {
    let has_segments = std::fs::read_dir(log_dir(datadir)).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".seg"))
    });
    if !has_segments {
        return Ok(None);
    }
    let plan = repair_plan(tail, segment_bytes, fulmen_storage::disk::ALIGNMENT)
        .map_err(|e| format!("the node cannot open this log: {e}"))?;
    Ok(plan.writes().then(|| plan.to_string()))
}
