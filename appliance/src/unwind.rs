//! Unwinding a verifier's chain to an earlier block.
//!
//! When an L1 reorg drops the L1 blocks that some of a verifier's L2 blocks
//! were derived from, those L2 blocks no longer follow from L1. The
//! verifier (`crate::verifier`) then asks for an unwind: it writes
//! [`UNWIND_FILE`] naming the last block to keep, and restarts the process
//! (`main`'s SIGUSR1 path: drain the log, then exec the same command). At
//! the start, before boot reads the log, [`apply_requested`] cuts the log
//! just after that block's seal record and removes the checkpoints above
//! it; boot then rebuilds the chain up to that block from the log as it
//! always does, and the verifier derives again from L1.
//!
//! Each step can be repeated: a crash part way leaves the request in place,
//! and the next start cuts again (a cut at a block the log no longer passes
//! changes nothing). The request file is removed last.

use std::fs::File;
use std::io;
use std::path::Path;

use fulmen_chain::persist::{decode_mini_block, decode_seal};
use fulmen_storage::checkpoint;
use fulmen_storage::disk::DiskDir;
use fulmen_storage::log::{LogDir, read_log, segment_name};
use fulmen_storage::record::{HEADER_BYTES, RecordKind};

use crate::datadir::{checkpoint_dir, log_dir};

/// The file in the datadir that asks the next start to unwind: the number
/// of the last block to keep, in decimal.
pub(crate) const UNWIND_FILE: &str = "verifier-unwind";

/// Asks the next start to unwind the chain to block `keep` (written to a
/// temporary file, flushed, and renamed into place).
pub(crate) fn request(datadir: &Path, keep: u64) -> io::Result<()> {
    write_durably(datadir, UNWIND_FILE, &format!("{keep}\n"))
}

/// True when an unwind is asked for.
pub(crate) fn requested(datadir: &Path) -> bool {
    datadir.join(UNWIND_FILE).exists()
}

/// Writes `name` in `dir` so that a crash leaves the old or the new
/// contents: a temporary file, flushed, renamed, and the directory flushed.
pub(crate) fn write_durably(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text)?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// What an unwind did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unwound {
    /// The last block kept.
    pub keep: u64,
    /// Bytes of log records cut off.
    pub bytes_cut: u64,
    /// Checkpoint files removed.
    pub checkpoints_removed: usize,
}

/// Applies an unwind asked for in `datadir` (see the module's
/// documentation); `None` when none is.
pub(crate) fn apply_requested(datadir: &Path) -> Result<Option<Unwound>, String> {
    let path = datadir.join(UNWIND_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let keep: u64 = text.trim().parse().map_err(|_| {
        format!(
            "{} does not hold a block number ({:?}); remove it to start without unwinding",
            path.display(),
            text.trim()
        )
    })?;
    let unwound = cut_after(datadir, keep)?;
    std::fs::remove_file(&path)
        .and_then(|()| File::open(datadir)?.sync_all())
        .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    Ok(Some(unwound))
}

/// A replica's start: cuts its log after the last block whose seal, and
/// every earlier block's, the log holds before any record of a later
/// block, so that boot ends on a sealed block with nothing after it. The
/// records cut are asked from the upstream again (their blocks' contexts
/// and seals are the upstream's to give: an empty block closed before a
/// crash would otherwise be closed at boot with a guessed timestamp).
pub(crate) fn cut_to_sealed(datadir: &Path) -> Result<Unwound, String> {
    let (logs, recovery, segments) = read_for_cut(datadir)?;
    let blocks = record_blocks(&recovery)?;
    let mut keep = blocks
        .iter()
        .filter(|(_, seal, _)| *seal)
        .map(|(_, _, block)| *block)
        .max()
        .unwrap_or(0);
    loop {
        let cut = blocks.iter().position(|(_, _, block)| *block > keep);
        let lost = cut.and_then(|i| {
            blocks[i..]
                .iter()
                .filter(|(_, seal, block)| *seal && *block <= keep)
                .map(|(_, _, block)| *block)
                .min()
        });
        match lost {
            Some(seal) => keep = seal - 1,
            None => break,
        }
    }
    let cut = blocks
        .iter()
        .find(|(_, _, block)| *block > keep)
        .map(|(at, _, _)| *at);
    apply_cut(datadir, (&logs, &recovery, &segments), cut, keep)
}

/// Each mini-block and seal record: where it is, whether it is a seal,
/// and its block.
fn record_blocks(
    recovery: &fulmen_storage::log::Recovery,
) -> Result<Vec<(fulmen_storage::log::Position, bool, u64)>, String> {
    let mut blocks = Vec::new();
    for (at, kind, payload) in &recovery.records {
        let block = match kind {
            RecordKind::MiniBlock => decode_mini_block(payload).map(|m| (false, m.ctx.number)),
            RecordKind::BlockSeal => decode_seal(payload).map(|s| (true, s.header.number)),
            _ => continue,
        }
        .map_err(|e| format!("the record at {at:?} does not decode: {e}"))?;
        blocks.push((*at, block.0, block.1));
    }
    Ok(blocks)
}

/// The log of `datadir` read whole, and its segments in order.
fn read_for_cut(
    datadir: &Path,
) -> Result<(std::path::PathBuf, fulmen_storage::log::Recovery, Vec<u64>), String> {
    let logs = log_dir(datadir);
    let dir = DiskDir::for_reading(&logs);
    let (recovery, _) =
        read_log(&dir).map_err(|e| format!("cannot read the log to cut it: {e}"))?;
    let names = dir
        .list()
        .map_err(|e| format!("cannot list {}: {e}", logs.display()))?;
    let mut segments: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".seg")?.parse().ok())
        .collect();
    segments.sort_unstable();
    Ok((logs, recovery, segments))
}

/// Cuts the log of `datadir` after block `keep`'s seal and removes the
/// checkpoints of later blocks.
fn cut_after(datadir: &Path, keep: u64) -> Result<Unwound, String> {
    let (logs, recovery, segments) = read_for_cut(datadir)?;
    // The first record of a later block. A block's seal may follow the
    // next block's first mini-blocks (the root is computed while the next
    // block runs): such a seal is cut too, and boot seals that block again
    // from its mini-blocks, as after a crash.
    let cut = record_blocks(&recovery)
        .map_err(|e| format!("unwind: {e}"))?
        .into_iter()
        .find(|(_, _, block)| *block > keep)
        .map(|(at, _, _)| at);
    apply_cut(datadir, (&logs, &recovery, &segments), cut, keep)
}

/// Cuts the log at `cut` (nothing when `None`) and removes the
/// checkpoints of blocks after `keep`.
fn apply_cut(
    datadir: &Path,
    (logs, recovery, segments): (&Path, &fulmen_storage::log::Recovery, &[u64]),
    cut: Option<fulmen_storage::log::Position>,
    keep: u64,
) -> Result<Unwound, String> {
    let bytes_cut = cut.map_or(0, |cut| {
        recovery
            .records
            .iter()
            .filter(|(at, _, _)| *at >= cut)
            .map(|(_, _, payload)| (HEADER_BYTES + payload.len()) as u64)
            .sum()
    });
    let checkpoints_removed = remove_checkpoints_above(datadir, keep)?;
    let Some(cut) = cut else {
        // The log does not reach past `keep`: nothing to cut.
        return Ok(Unwound {
            keep,
            bytes_cut: 0,
            checkpoints_removed,
        });
    };
    let io_error = |what: &str, e: io::Error| format!("unwind: cannot {what}: {e}");
    let flush_dir = || File::open(logs)?.sync_all();
    // Later segments go from the last one back, each unlink flushed, so
    // that a crash leaves consecutive segments; then the cut segment is
    // truncated (one metadata change: the bytes after the cut are gone or
    // not, never half zeroed), and opening the log grows it back to a whole
    // segment of zeros (`fulmen_storage::log::repair_plan`). A cut at a
    // segment's start removes that segment too (an empty file is not a
    // segment).
    let removed = |s: u64| s > cut.segment || (s == cut.segment && cut.offset == 0);
    for &segment in segments.iter().rev().filter(|&&s| removed(s)) {
        let path = logs.join(segment_name(segment));
        std::fs::remove_file(&path)
            .and_then(|()| flush_dir())
            .map_err(|e| io_error(&format!("remove {}", path.display()), e))?;
    }
    if removed(cut.segment) {
        return Ok(Unwound {
            keep,
            bytes_cut,
            checkpoints_removed,
        });
    }
    let name = segment_name(cut.segment);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(logs.join(&name))
        .map_err(|e| io_error(&format!("open {name}"), e))?;
    file.set_len(cut.offset)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(&format!("truncate {name}"), e))?;
    Ok(Unwound {
        keep,
        bytes_cut,
        checkpoints_removed,
    })
}

/// Removes the checkpoint files of blocks after `keep`.
fn remove_checkpoints_above(datadir: &Path, keep: u64) -> Result<usize, String> {
    let dir = checkpoint_dir(datadir);
    let found = checkpoint::list(&DiskDir::for_reading(&dir))
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut removed = 0;
    for (number, name) in found.into_iter().filter(|(n, _)| *n > keep) {
        std::fs::remove_file(dir.join(&name)).map_err(|e| {
            format!("unwind: cannot remove checkpoint {name} (block {number}): {e}")
        })?;
        removed += 1;
    }
    if removed > 0 {
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("unwind: cannot flush {}: {e}", dir.display()))?;
    }
    Ok(removed)
}
