//! Boot: rebuilds the chain from the log's records, and checks it.
//!
//! Records are replayed in log order onto a [`Sequencer`]: a mini-block
//! record re-applies its transactions' outcomes and state changes (nothing is
//! re-executed, so replay is bounded by decoding, not by the EVM), and a seal
//! record installs the logged header. The state trie follows each sealed
//! block; its root is checked against the last sealed header, and with
//! `check_every_block` (`fulmen db check`) every block's state, transactions
//! and receipts roots and logs bloom are recomputed and compared.

use std::collections::VecDeque;

use fulmen_storage::log::Position;
use fulmen_storage::record::RecordKind;

use crate::block::{Merkleizer, SealJob};
use crate::chain::ChainSpec;
use crate::persist::{decode_mini_block, decode_seal};
use crate::sequencer::{Genesis, PoolLimits, Sequencer, SequencerParts};

/// The chain rebuilt from the log.
pub struct Replayed {
    /// The sequencer's state, to be given its EVM on the seq core.
    pub parts: SequencerParts,
    /// The state-root worker, its trie at the last sealed block.
    pub merkle: Merkleizer,
    /// Blocks closed but not sealed when the log ended, oldest first.
    pub pending: Vec<SealJob>,
    /// What was replayed.
    pub stats: ReplayStats,
}

/// Counts of a replay.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplayStats {
    /// Mini-block records.
    pub mini_blocks: u64,
    /// Seal records.
    pub seals: u64,
    /// Transactions.
    pub txs: u64,
    /// Records of other kinds (DA progress, checkpoint markers).
    pub other: u64,
    /// Blocks whose roots were recomputed and matched.
    pub blocks_checked: u64,
}

/// Why the log does not replay.
#[derive(Debug, thiserror::Error)]
#[error("log record at segment {}, offset {}: {detail}", .at.segment, .at.offset)]
pub struct BootError {
    /// Where.
    pub at: Position,
    /// What is wrong.
    pub detail: String,
}

/// Replays `records` (in log order) onto the chain at `genesis`.
pub fn replay<'a>(
    spec: &ChainSpec,
    genesis: &Genesis,
    records: impl IntoIterator<Item = (Position, RecordKind, &'a [u8])>,
    now_ms: u64,
    check_every_block: bool,
) -> Result<Replayed, BootError> {
    let limits = PoolLimits::default();
    let mut seq = Sequencer::new(spec.clone(), limits, genesis, 0);
    let mut merkle = Merkleizer::new(genesis.trie.clone(), 0);
    let mut jobs: VecDeque<SealJob> = VecDeque::new();
    let mut stats = ReplayStats::default();
    let mut last = Position {
        segment: 0,
        offset: 0,
    };
    for (at, kind, payload) in records {
        last = at;
        let fail = |detail: String| BootError { at, detail };
        match kind {
            RecordKind::MiniBlock => {
                let record = decode_mini_block(payload).map_err(|e| fail(e.to_string()))?;
                stats.txs += record.txs.len() as u64;
                stats.mini_blocks += 1;
                jobs.extend(
                    seq.replay_mini_block(record)
                        .map_err(|e| fail(e.to_string()))?,
                );
            }
            RecordKind::BlockSeal => {
                let record = decode_seal(payload).map_err(|e| fail(e.to_string()))?;
                let header = record.header.clone();
                jobs.extend(seq.replay_seal(record).map_err(|e| fail(e.to_string()))?);
                let job = jobs
                    .pop_front()
                    .filter(|job| job.ctx.number == header.number)
                    .ok_or_else(|| fail(format!("no closed block {} to seal", header.number)))?;
                if check_every_block {
                    let roots = merkle.seal(&job);
                    let checks = [
                        ("state root", roots.state_root, header.state_root),
                        (
                            "transactions root",
                            roots.transactions_root,
                            header.transactions_root,
                        ),
                        ("receipts root", roots.receipts_root, header.receipts_root),
                    ];
                    for (what, computed, sealed) in checks {
                        if computed != sealed {
                            return Err(fail(format!(
                                "block {}: replayed {what} {computed} differs from the sealed header's {sealed}",
                                header.number
                            )));
                        }
                    }
                    if roots.logs_bloom != header.logs_bloom {
                        return Err(fail(format!(
                            "block {}: replayed logs bloom differs from the sealed header's",
                            header.number
                        )));
                    }
                    stats.blocks_checked += 1;
                } else {
                    merkle.apply_unhashed(&job);
                }
                stats.seals += 1;
            }
            RecordKind::DaProgress | RecordKind::CheckpointMarker | RecordKind::Padding => {
                stats.other += 1;
            }
        }
    }
    let head = seq.view().head().clone();
    if !check_every_block && head.header.number > 0 {
        let root = merkle.state_root();
        if root != head.header.state_root {
            return Err(BootError {
                at: last,
                detail: format!(
                    "the replayed state root {root} differs from block {}'s sealed state root {}",
                    head.header.number, head.header.state_root
                ),
            });
        }
    }
    seq.refresh_open_timestamp(now_ms);
    Ok(Replayed {
        parts: seq.into_parts(),
        merkle,
        pending: jobs.into(),
        stats,
    })
}
