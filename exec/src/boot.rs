//! Boot policy: read the log, pick the checkpoint to start from, replay,
//! and fall back to a replay from genesis when the checkpoint does not
//! serve; and the checkpoint checks of `fulmen db check`.
//!
//! Both directories are read through [`LogDir`], so the same policy runs on
//! the real datadir and on the simulated disk of the crash tests. Reading
//! never changes a file: the storage core repairs the log's end later
//! (see `fulmen_storage::log::repair_plan`).
//!
//! The checkpoint boot starts from is the newest one that reads back whole
//! (checksum, format) and whose block the log sealed with the same hash;
//! any other is reported and skipped. If the replay from it fails (its
//! state is not its root, or the log's seal contradicts it), boot warns and
//! replays the whole log from genesis instead: a checkpoint only ever saves
//! time, it never decides what the chain is.
//!
//! Boot time independent of the chain's age: when the history store holds
//! the checkpoint's block, boot reads the log only from the segment where
//! that block's records start (the last segment whose first mini-block is
//! of that block or an older one; found by looking at each segment's first
//! records, newest first), skips the records of blocks up to the
//! checkpoint's undecoded, and starts the chain at that block as the store
//! holds it ([`crate::recover::replay_after`]). The checkpoint's marker,
//! logged right after its block's seal, must be among the records read: it
//! carries the DA records logged before it. Without it (a log written
//! before markers, or a marker too large to log), boot reads the whole log
//! as above.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use fulmen_chain::block::{BLOCKHASH_WINDOW, BlockHashes};
use fulmen_chain::persist::{
    CheckpointMarker, decode_checkpoint_marker, decode_seal, peek_mini_block,
};
use fulmen_chain::spec::ChainSpec;
use fulmen_chain::view::ChainView;
use fulmen_storage::checkpoint::{self, Checkpoint, CheckpointError};
use fulmen_storage::log::{
    LogDir, LogError, Payload, Position, Tail, peek_segment, read_log, read_log_from,
    segment_written_bytes, segments,
};
use fulmen_storage::progress::Progress;
use fulmen_storage::record::{RecordError, RecordKind};

use crate::merkle::StateTrie;
use crate::recover::{HistoryLink, RecoverError, Replayed, Resume, replay, replay_after};
use crate::sequencer::Genesis;

/// What boot found and rebuilt.
pub struct Booted {
    /// The chain.
    pub replayed: Replayed,
    /// Where writing resumes.
    pub tail: Tail,
    /// Records read (padding excluded).
    pub records: usize,
    /// Bytes of log read.
    pub bytes: u64,
    /// A torn tail the storage core will cut off: where, and why.
    pub truncated: Option<(Position, RecordError)>,
    /// Time spent reading the log (the rest of boot is the replay).
    pub read: Duration,
    /// The first segment read (older ones were not needed).
    pub first_segment: u64,
    /// Bytes of log in the segments not read.
    pub unread_bytes: u64,
}

/// Why boot fails.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The log cannot be read (damaged before its tail, another format, IO).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The log reads but does not replay to a consistent chain.
    #[error(transparent)]
    Replay(#[from] RecoverError),
    /// The checkpoint directory cannot be listed (`fulmen db check`).
    #[error("cannot list the checkpoints: {0}")]
    ListCheckpoints(std::io::Error),
    /// The log's older segments were pruned and no checkpoint serves.
    #[error(
        "the log starts at segment {first_segment}: older segments were pruned (storage.history = \"recent\"), \
         so the chain can only start from a checkpoint whose block the history store holds and whose marker is \
         in the log, and none does (see the warnings above); restore the datadir from a backup, or resync"
    )]
    Pruned {
        /// The log's first segment.
        first_segment: u64,
    },
}

/// How far boot checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// A node's start: from the newest checkpoint that serves, the open
    /// block's timestamp refreshed to `now_ms`.
    Start {
        /// Wall clock, in ms since the epoch.
        now_ms: u64,
    },
    /// `fulmen db check`: from genesis, every block's roots recomputed
    /// (from the oldest checkpoint that serves when older log segments
    /// were pruned).
    CheckEveryBlock,
}

/// Reads the log in `log` and replays it, from the newest checkpoint in
/// `checkpoints` that serves (see the module's documentation), checking
/// and reading through the history store when given.
pub fn boot<L: LogDir, C: LogDir>(
    log: &L,
    checkpoints: &C,
    (spec, genesis): (&ChainSpec, &Genesis),
    mode: BootMode,
    mut history: Option<&mut HistoryLink>,
) -> Result<Booted, BootError> {
    let first_segment = log_start(log)?;
    if let Some(link) = history.as_deref_mut()
        && (first_segment > 0 || matches!(mode, BootMode::Start { .. }))
        && let Some(booted) = boot_after_checkpoint(log, checkpoints, spec, link, mode)?
    {
        return Ok(booted);
    }
    if first_segment > 0 {
        return Err(BootError::Pruned { first_segment });
    }
    let began = Instant::now();
    let (recovery, tail) = read_log(log)?;
    let read = began.elapsed();
    if let Some((at, error)) = &recovery.truncated {
        tracing::warn!(
            segment = at.segment,
            offset = at.offset,
            %error,
            "the log ends with a torn record (a crash during its write; it was never acknowledged): it is cut off"
        );
    }
    let records = &recovery.records;
    let replayed = match mode {
        BootMode::CheckEveryBlock => replay(spec, genesis, None, iter(records), 0, true, history)?,
        BootMode::Start { now_ms } => {
            let image = newest_checkpoint(checkpoints, records);
            replay_from((spec, genesis), image, records, now_ms, history)?
        }
    };
    Ok(Booted::new(replayed, (recovery, tail), read, (0, 0)))
}

impl Booted {
    /// What boot found: the chain, the log as read (from segment `first`,
    /// `unread` bytes before it not read), the time spent reading.
    fn new(
        replayed: Replayed,
        (recovery, tail): (fulmen_storage::log::Recovery, Tail),
        read: Duration,
        (first_segment, unread_bytes): (u64, u64),
    ) -> Self {
        Self {
            replayed,
            tail,
            records: recovery.records.len(),
            bytes: recovery.bytes,
            truncated: recovery.truncated,
            read,
            first_segment,
            unread_bytes,
        }
    }
}

/// Boot from the newest checkpoint whose block the history store holds,
/// reading only the log from where that block's records start (see the
/// module's documentation); `None` when no checkpoint serves so.
fn boot_after_checkpoint<L: LogDir, C: LogDir>(
    log: &L,
    checkpoints: &C,
    spec: &ChainSpec,
    link: &mut HistoryLink,
    mode: BootMode,
) -> Result<Option<Booted>, BootError> {
    let began = Instant::now();
    let (now_ms, check_every_block) = match mode {
        BootMode::Start { now_ms } => (now_ms, false),
        BootMode::CheckEveryBlock => (0, true),
    };
    let mut found = checkpoint::list(checkpoints).unwrap_or_default();
    if check_every_block {
        // `db check` checks as much of the chain as the log holds.
        found.reverse();
    }
    for (number, name) in found {
        let Ok(Some(hash)) = link.view.hash(number) else {
            continue;
        };
        let Some(first_segment) = start_segment(log, number) else {
            continue;
        };
        let (recovery, tail) = read_log_from(log, first_segment)?;
        let read = began.elapsed();
        let records = &recovery.records;
        let Some(marker) = find_marker(records, number, hash) else {
            // A log written before markers, a marker too large to log, or
            // a crash between the marker and the checkpoint's end.
            tracing::info!(
                number,
                "no marker of this checkpoint in the log after it: an older checkpoint, or the whole log, is used"
            );
            continue;
        };
        let at = (number, hash, &marker.block_hashes[..]);
        let Some(resume) = resume_at(checkpoints, &name, at, link, records) else {
            continue;
        };
        match replay_after(
            spec,
            resume,
            iter(records),
            (now_ms, check_every_block),
            link,
        ) {
            Ok(replayed) => {
                let unread = unread_bytes(log, first_segment);
                let log_read = (recovery, tail);
                return Ok(Some(Booted::new(
                    replayed,
                    log_read,
                    read,
                    (first_segment, unread),
                )));
            }
            Err(e) => {
                // An older checkpoint may serve (on a pruned log it is the
                // only way left); else the whole log is read.
                tracing::warn!(number, error = %e, "the log after the checkpoint does not replay onto it; an older checkpoint, or the whole log, is used");
            }
        }
    }
    Ok(None)
}

/// The log's first segment: above 0 once older ones were pruned.
fn log_start<L: LogDir>(log: &L) -> Result<u64, BootError> {
    let found = segments(log).map_err(|source| {
        BootError::Log(LogError::Io {
            segment: 0,
            offset: 0,
            source,
        })
    })?;
    Ok(found.first().copied().unwrap_or(0))
}

/// Bytes of log in the segments before `first` (0 if they cannot be
/// looked at: this is only reported).
fn unread_bytes<L: LogDir>(log: &L, first: u64) -> u64 {
    let older = segments(log).unwrap_or_default();
    older
        .into_iter()
        .filter(|s| *s < first)
        .map(|s| segment_written_bytes(log, s).unwrap_or(0))
        .sum()
}

/// The last segment whose first mini-block is of block `number` or an
/// older one: the records of later blocks are all in it or after it.
fn start_segment<L: LogDir>(log: &L, number: u64) -> Option<u64> {
    segments(log)
        .ok()?
        .into_iter()
        .rev()
        .find(|segment| segment_first_block(log, *segment).is_some_and(|block| block <= number))
}

/// The block of the first mini-block in `segment` (`None` for a segment
/// without one, e.g. made ahead of need). Every record of a segment before
/// it is of that block or an older one, which is what boot's choice of
/// where to start reading and the pruning of old segments rely on.
pub fn segment_first_block<L: LogDir>(log: &L, segment: u64) -> Option<u64> {
    let mut first = None;
    let _ = peek_segment(log, segment, |kind, payload| {
        if kind != RecordKind::MiniBlock {
            return false;
        }
        first = peek_mini_block(payload).ok().map(|(block, _)| block);
        true
    });
    first
}

/// The marker of the checkpoint of block `number` with `hash`, if
/// `records` hold it.
fn find_marker(
    records: &[(Position, RecordKind, Payload)],
    number: u64,
    hash: B256,
) -> Option<CheckpointMarker> {
    records
        .iter()
        .filter(|(_, kind, _)| *kind == RecordKind::CheckpointMarker)
        .filter_map(|(_, _, payload)| decode_checkpoint_marker(payload).ok())
        .find(|marker| marker.number == number && marker.hash == hash)
}

/// The checkpoint `name` of block `number` (with `hash`, as the store has
/// it) and the chain at its block from the store, the BLOCKHASH window from
/// its marker's `marked` hashes (or, from an older build's marker, from the
/// store); `None` (reported) when it does not read back or the store fails.
fn resume_at<C: LogDir>(
    checkpoints: &C,
    name: &str,
    (number, hash, marked): (u64, B256, &[B256]),
    link: &HistoryLink,
    records: &[(Position, RecordKind, Payload)],
) -> Option<Resume> {
    let Checkpoint { meta, state, trie } = load_checkpoint(checkpoints, name, (number, hash))?;
    let from_store = || -> Result<Option<Resume>, fulmen_chain::history::HistoryError> {
        let Some(head) = link.view.block(number)? else {
            return Ok(None);
        };
        // The store's block must be the checkpoint's, whole.
        if head.header.number != number
            || head.header.hash_slow() != hash
            || head.header.state_root != meta.state_root
        {
            tracing::warn!(
                number,
                "the history store's block is not the checkpoint's; the whole log is read"
            );
            return Ok(None);
        }
        let first = number.saturating_sub(BLOCKHASH_WINDOW - 1);
        let hashes = if marked.len() as u64 == number + 1 - first && marked.last() == Some(&hash) {
            marked.to_vec()
        } else {
            let mut hashes = Vec::new();
            for n in first..=number {
                let Some(hash) = link.view.hash(n)? else {
                    return Ok(None);
                };
                hashes.push(hash);
            }
            hashes
        };
        Ok(Some(Resume {
            meta,
            state,
            trie,
            head: std::sync::Arc::new(head),
            hashes: BlockHashes::new(first, hashes),
            mini_block: last_mini_block(records, number),
        }))
    };
    match from_store() {
        Ok(resume) => resume,
        Err(e) => {
            tracing::warn!(number, error = %e, "cannot read the checkpoint's block from the history store; the whole log is read");
            None
        }
    }
}

/// The number of the last mini-block of block `number` or before among
/// `records` (0 if none).
fn last_mini_block(records: &[(Position, RecordKind, Payload)], number: u64) -> u64 {
    records
        .iter()
        .filter(|(_, kind, _)| *kind == RecordKind::MiniBlock)
        .filter_map(|(_, _, payload)| peek_mini_block(payload).ok())
        .filter(|(block, _)| *block <= number)
        .map(|(_, mini)| mini)
        .max()
        .unwrap_or(0)
}

/// The log's records as replay takes them, reporting progress (done of
/// all, rate, time left) every few seconds.
fn iter(
    records: &[(Position, RecordKind, Payload)],
) -> impl Iterator<Item = (Position, RecordKind, &[u8])> {
    let mut progress = Progress::new("replaying the log", "records", records.len() as u64);
    records
        .iter()
        .enumerate()
        .map(move |(done, (at, kind, payload))| {
            if done % 1024 == 0 {
                progress.tick(done as u64);
            }
            (*at, *kind, &payload[..])
        })
}

/// Replays from `image` when given, and from genesis when there is none or
/// it does not replay.
fn replay_from(
    (spec, genesis): (&ChainSpec, &Genesis),
    image: Option<Checkpoint>,
    records: &[(Position, RecordKind, Payload)],
    now_ms: u64,
    mut history: Option<&mut HistoryLink>,
) -> Result<Replayed, RecoverError> {
    let Some(image) = image else {
        return replay(spec, genesis, None, iter(records), now_ms, false, history);
    };
    let number = image.meta.number;
    let first = replay(
        spec,
        genesis,
        Some(image),
        iter(records),
        now_ms,
        false,
        history.as_deref_mut(),
    );
    first.or_else(|e| {
        tracing::warn!(number, error = %e, "the checkpoint does not replay; replaying the whole log instead");
        replay(spec, genesis, None, iter(records), now_ms, false, history)
    })
}

/// The log's sealed block hashes by number.
fn sealed_hashes(records: &[(Position, RecordKind, Payload)]) -> HashMap<u64, B256> {
    records
        .iter()
        .filter(|(_, kind, _)| *kind == RecordKind::BlockSeal)
        .filter_map(|(_, _, payload)| decode_seal(payload).ok())
        .map(|seal| (seal.header.number, seal.header.hash_slow()))
        .collect()
}

/// The newest checkpoint that reads back whole and whose block the log
/// sealed with the same hash; others are reported and skipped.
fn newest_checkpoint<C: LogDir>(
    dir: &C,
    records: &[(Position, RecordKind, Payload)],
) -> Option<Checkpoint> {
    let found = match checkpoint::list(dir) {
        Ok(found) if found.is_empty() => return None,
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list checkpoints; replaying the whole log");
            return None;
        }
    };
    let sealed = sealed_hashes(records);
    for (number, name) in found {
        let Some(hash) = sealed.get(&number) else {
            tracing::warn!(
                name,
                "not a checkpoint of this log (a block the log never sealed: junk, or another chain's); skipped"
            );
            continue;
        };
        if let Some(loaded) = load_checkpoint(dir, &name, (number, *hash)) {
            return Some(loaded);
        }
    }
    None
}

/// The checkpoint `name` when it reads back whole and is of block `number`
/// with `hash`; `None` (reported) otherwise.
fn load_checkpoint<C: LogDir>(
    dir: &C,
    name: &str,
    (number, hash): (u64, B256),
) -> Option<Checkpoint> {
    let began = Instant::now();
    match checkpoint::read(dir, name) {
        Ok(image) if image.meta.number == number && image.meta.hash == hash => {
            let state = &image.state;
            tracing::info!(
                number,
                accounts = state.account_count(),
                slots = state.slot_count(),
                trie_mb = format!("{:.1}", image.trie.len() as f64 / 1e6),
                load_ms = began.elapsed().as_millis() as u64,
                "loaded checkpoint"
            );
            Some(image)
        }
        Ok(_) => {
            tracing::warn!(name, "checkpoint does not match the chain's block; skipped");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "not a valid checkpoint; skipped, an older one is used");
            None
        }
    }
}

/// A checkpoint file boot skips, as `fulmen db check` reports it.
#[derive(Debug, thiserror::Error)]
pub enum SkippedCheckpoint {
    /// It does not read back whole.
    #[error("{0}")]
    Unreadable(CheckpointError),
    /// Its block is one the log never sealed.
    #[error("checkpoint {name} is of block {number}, which the log never sealed; boot skips it")]
    NotSealed {
        /// The file.
        name: String,
        /// The block its name gives.
        number: u64,
    },
    /// It is whole but not the state of the log's block.
    #[error(
        "checkpoint {name} does not match block {number} of the log (hash {hash}, state root {state_root}); boot skips it"
    )]
    Mismatch {
        /// The file.
        name: String,
        /// The block its name gives.
        number: u64,
        /// The block hash in the image.
        hash: B256,
        /// The root of the state in the image.
        state_root: B256,
    },
    /// Its state is the block's, but the trie references stored with it
    /// are not its trie's: boot would take them, and later roots would be
    /// wrong.
    #[error(
        "checkpoint {name} (block {number}): the trie references stored with it are not its state's ({error}); remove the file (boot would use them)"
    )]
    TrieHashes {
        /// The file.
        name: String,
        /// The block its name gives.
        number: u64,
        /// What differs.
        error: crate::merkle::ImageHashesError,
    },
}

/// What checking the checkpoints found.
#[derive(Debug, Default)]
pub struct CheckpointReport {
    /// Checkpoints that match the chain.
    pub verified: usize,
    /// Files boot skips (junk, damaged or partial images, blocks the log
    /// never sealed): notes, as boot's warnings, not failures.
    pub skipped: Vec<SkippedCheckpoint>,
    /// Images boot would use that are wrong: failures.
    pub damaged: Vec<SkippedCheckpoint>,
}

/// Checks every checkpoint in `dir` against the replayed chain `view`:
/// checksum, block hash, the root of its state against the block's
/// sealed state root, and its stored trie references against its state's
/// trie.
pub fn check_checkpoints<C: LogDir>(
    dir: &C,
    view: &ChainView,
) -> Result<CheckpointReport, BootError> {
    let found = checkpoint::list(dir).map_err(BootError::ListCheckpoints)?;
    let mut report = CheckpointReport::default();
    for (number, name) in found {
        let Checkpoint { meta, state, trie } = match checkpoint::read(dir, &name) {
            Ok(image) => image,
            Err(e) => {
                report.skipped.push(SkippedCheckpoint::Unreadable(e));
                continue;
            }
        };
        let Some(block) = view.block(number) else {
            report
                .skipped
                .push(SkippedCheckpoint::NotSealed { name, number });
            continue;
        };
        let mut state_trie = StateTrie::from_state(&state);
        let state_root = state_trie.root();
        if meta.number != number || meta.hash != block.hash || state_root != block.header.state_root
        {
            // Boot skips such an image (it replays without it), so the
            // datadir is usable: a note, as boot's warning, not a failure.
            report.skipped.push(SkippedCheckpoint::Mismatch {
                name,
                number,
                hash: meta.hash,
                state_root,
            });
            continue;
        }
        if !trie.is_empty()
            && let Err(error) = state_trie.verify_image(&trie)
        {
            report.damaged.push(SkippedCheckpoint::TrieHashes {
                name,
                number,
                error,
            });
            continue;
        }
        report.verified += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use fulmen_storage::HotState;
    use fulmen_storage::checkpoint::CheckpointMeta;

    use crate::merkle::hashes_of;
    use fulmen_storage::io::{CrashMode, Fault, SimDisk, StreamFile, ready as now};
    use fulmen_storage::log::Log;

    use super::*;
    use crate::recover::tests::{GAS_LIMIT, SEGMENT_BYTES, workload};
    use crate::testkit::spec;

    /// A log of a few dozen blocks on the simulated disk.
    fn logged_chain() -> SimDisk {
        let disk = SimDisk::new(1, 1 << 24);
        let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
        assert!(!workload(&mut log, 90, false).error);
        disk
    }

    fn boot_on(log: &SimDisk, checkpoints: &SimDisk, mode: BootMode) -> Booted {
        let spec = spec(GAS_LIMIT);
        let genesis = Genesis::new(&spec);
        boot(log, checkpoints, (&spec, &genesis), mode, None)
            .unwrap_or_else(|e| panic!("boot: {e}"))
    }

    /// The head, the state root and the open mini-block: equal for the
    /// same chain whatever it was rebuilt from.
    fn fingerprint(booted: &mut Booted) -> Fingerprint {
        let view = booted.replayed.parts.view();
        (
            view.head().hash,
            StateTrie::from_state(view.state()).root(),
            view.mini_block(),
            booted.replayed.merkle.state_root(),
        )
    }

    type Fingerprint = (B256, B256, u64, B256);

    /// The logged chain, checked from genesis without checkpoints: the
    /// log, the chain, its fingerprint and its head block number.
    fn reference() -> (SimDisk, Booted, Fingerprint, u64) {
        let log = logged_chain();
        let mut full = boot_on(&log, &SimDisk::new(2, 1 << 20), BootMode::CheckEveryBlock);
        let expected = fingerprint(&mut full);
        let head = full.replayed.parts.view().head().header.number;
        (log, full, expected, head)
    }

    /// Writes the checkpoint of block `number` of `full` (with its trie
    /// references) into `disk`; returns it.
    fn write_image(disk: &SimDisk, full: &Booted, number: u64) -> (CheckpointMeta, HotState) {
        let (meta, state) = image(full, number);
        now(checkpoint::write(disk, &meta, &state, &hashes_of(&state))).unwrap();
        (meta, state)
    }

    /// The image of block `number` of the chain `full` rebuilt.
    fn image(full: &Booted, number: u64) -> (CheckpointMeta, HotState) {
        let view = full.replayed.parts.view();
        let block = view.block(number).unwrap();
        let meta = CheckpointMeta {
            number,
            hash: block.hash,
            state_root: block.header.state_root,
        };
        (meta, view.state_at(number).unwrap().clone())
    }

    /// Boot takes the newest checkpoint that matches the log, skips junk
    /// and images of other blocks, and falls back to a replay from genesis
    /// when the image's state is not its root: the chain is the same every
    /// time.
    /// With the history store holding the chain and a checkpoint's marker
    /// in the log, boot reads only the segments from where the blocks
    /// after the checkpoint start, skips the older records undecoded, and
    /// rebuilds the same chain as a replay from genesis; without the
    /// marker it reads the whole log.
    #[test]
    fn boot_after_a_checkpoint_reads_only_the_later_log_and_rebuilds_the_same_chain() {
        use fulmen_chain::persist::{CheckpointMarker, encode_checkpoint_marker};
        let (log, full, expected, head) = reference();
        let spec = spec(GAS_LIMIT);
        let genesis = Genesis::new(&spec);
        let dir = std::env::temp_dir().join(format!("fulmen-boot-after-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = fulmen_storage::history::HistoryStore::open(&dir).unwrap();
        let view = full.replayed.parts.view();
        for n in 0..=head {
            let (keys, payload) = fulmen_chain::history::encode_block(&view.block(n).unwrap());
            store.append(n, &keys, &payload).unwrap();
        }
        store.sync().unwrap();
        let reader = store.reader();
        let mut link = HistoryLink {
            store: Some(store),
            view: fulmen_chain::history::History::new(reader, spec.tx_rules().spec, 4),
        };
        let checkpoints = SimDisk::new(5, 1 << 26);
        let number = head * 2 / 3;
        let (meta, _) = write_image(&checkpoints, &full, number);
        let boot_now = |link: &mut HistoryLink| {
            let mode = BootMode::Start { now_ms: 0 };
            boot(&log, &checkpoints, (&spec, &genesis), mode, Some(link)).unwrap()
        };
        // No marker yet: the whole log.
        let mut whole = boot_now(&mut link);
        assert_eq!(whole.first_segment, 0);
        assert_eq!(whole.replayed.stats.skipped, 0);
        assert_eq!(fingerprint(&mut whole), expected);
        // The marker (here after the chain's records; the seq core logs it
        // right after the block's seal).
        let (mut writer, _) = now(Log::open(log.clone(), SEGMENT_BYTES)).unwrap();
        let mut marker = Vec::new();
        let da_records = vec![vec![1, 2, 3]];
        encode_checkpoint_marker(
            &CheckpointMarker {
                number,
                hash: meta.hash,
                da_records: da_records.clone(),
                block_hashes: (number.saturating_sub(255)..=number)
                    .map(|n| view.block(n).unwrap().hash)
                    .collect(),
            },
            &mut marker,
        );
        writer
            .append(RecordKind::CheckpointMarker, &marker)
            .unwrap();
        now(writer.flush()).unwrap();
        drop(writer);
        let mut after = boot_now(&mut link);
        assert!(
            after.first_segment > 0,
            "read from segment {}",
            after.first_segment
        );
        assert!(after.replayed.stats.skipped > 0);
        assert!(after.unread_bytes > 0);
        assert_eq!(after.replayed.stats.from_checkpoint, Some(number));
        assert_eq!(
            after.replayed.da_records, da_records,
            "DA records from the marker"
        );
        assert_eq!(fingerprint(&mut after), expected);
        let rebuilt = after.replayed.parts.view();
        for n in 0..=head {
            assert_eq!(
                rebuilt.block_hash(n),
                Some(view.block(n).unwrap().hash),
                "block {n}"
            );
            assert_eq!(rebuilt.block(n).unwrap().hash, view.block(n).unwrap().hash);
        }
        for tx in view.blocks().flat_map(|b| b.txs.clone()) {
            let (found, _) = rebuilt.tx(&tx.tx.hash).expect("every tx");
            assert_eq!(found.block_number, tx.block_number);
        }
        // Pruned (history = "recent"): the segments before the one boot
        // starts from are deleted, and the store's blocks before the
        // checkpoint's (the BLOCKHASH window comes from the marker). Boot
        // is the same; db check checks from the checkpoint, reading the
        // store without changing it.
        for segment in 0..after.first_segment {
            log.remove(&fulmen_storage::log::segment_name(segment))
                .unwrap();
        }
        let store = link.store.as_mut().unwrap();
        store.prune_below(number).unwrap();
        assert_eq!(store.first(), number);
        let mut pruned = boot_now(&mut link);
        assert_eq!(pruned.first_segment, after.first_segment);
        assert_eq!(fingerprint(&mut pruned), expected);
        let rebuilt = pruned.replayed.parts.view();
        assert_eq!(rebuilt.oldest_block(), number);
        for n in number.saturating_sub(255)..=head {
            assert_eq!(
                rebuilt.block_hashes().get(n),
                Some(view.block(n).unwrap().hash)
            );
        }
        let reader = fulmen_storage::history::HistoryReader::open(&dir).unwrap();
        let mut read_only = HistoryLink {
            store: None,
            view: fulmen_chain::history::History::new(reader, spec.tx_rules().spec, 4),
        };
        let mode = BootMode::CheckEveryBlock;
        let checked = boot(
            &log,
            &checkpoints,
            (&spec, &genesis),
            mode,
            Some(&mut read_only),
        )
        .unwrap();
        assert_eq!(checked.replayed.stats.from_checkpoint, Some(number));
        assert_eq!(checked.replayed.stats.blocks_checked, head - number);
        // Without a checkpoint that serves, a pruned log is a clear error
        // (never a replay from genesis of a log that lacks its start).
        let name = checkpoint::list(&checkpoints).unwrap()[0].1.clone();
        checkpoints.remove(&name).unwrap();
        let mode = BootMode::Start { now_ms: 0 };
        let error = boot(&log, &checkpoints, (&spec, &genesis), mode, Some(&mut link))
            .err()
            .expect("a pruned log without a checkpoint does not boot");
        assert!(
            matches!(error, BootError::Pruned { first_segment } if first_segment == after.first_segment),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn boot_takes_the_newest_matching_checkpoint_or_replays_from_genesis() {
        let (log, full, expected, head) = reference();
        assert!(head >= 20, "{head} blocks");
        let checkpoints = SimDisk::new(3, 1 << 26);
        let mut none = boot_on(&log, &checkpoints, BootMode::Start { now_ms: 0 });
        assert_eq!(none.replayed.stats.from_checkpoint, None);
        assert_eq!(fingerprint(&mut none), expected);
        for number in [head / 3, head / 2] {
            write_image(&checkpoints, &full, number);
        }
        // Junk past the chain, and a whole image of another block under a
        // newer block's name: skipped.
        let (meta, state) = image(&full, head / 4);
        let mut junk = checkpoints
            .create_stream(&checkpoint::file_name(head + 9))
            .unwrap();
        now(junk.write_all(b"junk")).unwrap();
        now(junk.close_synced()).unwrap();
        let named_wrong = checkpoint::file_name(head / 2 + 1);
        now(checkpoint::write(
            &checkpoints,
            &meta,
            &state,
            &hashes_of(&state),
        ))
        .unwrap();
        checkpoints
            .rename(&checkpoint::file_name(head / 4), &named_wrong)
            .unwrap();
        let mut from = boot_on(&log, &checkpoints, BootMode::Start { now_ms: 0 });
        assert_eq!(from.replayed.stats.from_checkpoint, Some(head / 2));
        assert_eq!(fingerprint(&mut from), expected);
        // `db check` verifies the two and notes the others.
        let report = check_checkpoints(&checkpoints, full.replayed.parts.view()).unwrap();
        assert_eq!(report.verified, 2);
        assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
        assert!(report.damaged.is_empty(), "{:?}", report.damaged);
        // Trie references altered in place (the shape kept): boot would
        // take them, so `db check` fails on the image.
        let altered = SimDisk::new(4, 1 << 26);
        let (meta, state) = image(&full, head / 2);
        let mut trie = hashes_of(&state);
        let at = trie.len() - 5;
        trie[at] ^= 1;
        now(checkpoint::write(&altered, &meta, &state, &trie)).unwrap();
        let report = check_checkpoints(&altered, full.replayed.parts.view()).unwrap();
        assert_eq!(report.verified, 0);
        assert!(
            matches!(&report.damaged[..], [SkippedCheckpoint::TrieHashes { number, .. }] if *number == head / 2),
            "{:?}",
            report.damaged
        );
        // An image whose state is not its root (a bug that wrote the wrong
        // state, with a valid checksum): boot replays from genesis.
        let (meta, _) = image(&full, head / 2 + 2);
        let (_, other_state) = image(&full, head / 2 + 1);
        now(checkpoint::write(
            &checkpoints,
            &meta,
            &other_state,
            &hashes_of(&other_state),
        ))
        .unwrap();
        let mut fallback = boot_on(&log, &checkpoints, BootMode::Start { now_ms: 0 });
        assert_eq!(fallback.replayed.stats.from_checkpoint, None);
        assert_eq!(fingerprint(&mut fallback), expected);
    }

    /// A checkpoint write (and the prune after it) with the disk failing
    /// for good at every operation in turn, then a crash (torn, lost, or
    /// kept): boot starts from a whole checkpoint (the new one, or the one
    /// before), or from genesis when there was none, never from a torn one,
    /// and rebuilds the same chain.
    #[test]
    fn a_crash_at_every_point_of_a_checkpoint_write_boots_to_the_same_chain() {
        let (log, full, expected, head) = reference();
        let (older, older_state) = image(&full, head / 3);
        let (newer, newer_state) = image(&full, 2 * head / 3);
        let mut points = 0;
        for with_older in [false, true] {
            let prepare = |seed| {
                let disk = SimDisk::new(seed, 1 << 26);
                if with_older {
                    now(checkpoint::write(
                        &disk,
                        &older,
                        &older_state,
                        &hashes_of(&older_state),
                    ))
                    .unwrap();
                }
                disk
            };
            let write_newer = |disk: &SimDisk| -> bool {
                now(checkpoint::write(
                    disk,
                    &newer,
                    &newer_state,
                    &hashes_of(&newer_state),
                ))
                .is_ok()
                    && now(checkpoint::prune(
                        disk,
                        checkpoint::KEEP,
                        newer.number,
                        |_| true,
                    ))
                    .is_ok()
            };
            let clean = prepare(1);
            let first_op = clean.ops();
            assert!(write_newer(&clean));
            for at_op in first_op..clean.ops() {
                for mode in [
                    CrashMode::TearUnflushed,
                    CrashMode::LoseUnflushed,
                    CrashMode::KeepAll,
                ] {
                    let disk = prepare(at_op * 7 + 3);
                    disk.inject(Some(Fault::Eio {
                        at_op,
                        forever: true,
                    }));
                    assert!(!write_newer(&disk));
                    let rebooted = disk.crash(mode);
                    let mut booted = boot_on(&log, &rebooted, BootMode::Start { now_ms: 0 });
                    let from = booted.replayed.stats.from_checkpoint;
                    let allowed = [Some(newer.number), with_older.then_some(older.number)];
                    assert!(
                        allowed.contains(&from),
                        "EIO from op {at_op}, {mode:?}: booted from {from:?}"
                    );
                    assert_eq!(fingerprint(&mut booted), expected, "op {at_op} {mode:?}");
                    points += 1;
                }
            }
        }
        assert!(points >= 30, "{points} crash points");
    }
}
