//! Boot: rebuilds the chain from the log's records, and checks it.
//!
//! Records are replayed in log order onto a [`Sequencer`]: a mini-block
//! record re-applies its transactions' outcomes and state changes (nothing is
//! re-executed, so replay is bounded by decoding, not by the EVM), and a seal
//! record installs the logged header. The state trie follows each sealed
//! block; its root is checked against the last sealed header, and with
//! `check_every_block` (`fulmen db check`) every block's state, transactions
//! and receipts roots and logs bloom are recomputed and compared.
//!
//! From a checkpoint (the state image after block N), the trie is rebuilt
//! from the image and checked against its root, records of blocks up to N
//! rebuild history only (blocks, receipts, the transaction index), and later
//! records apply as above. The log's seal of block N must match the image.
//!
//! With the history store holding block N ([`replay_after`]), the records
//! of blocks up to N are skipped without being decoded: the chain starts
//! at block N as the store holds it, and boot need not read the log's
//! older segments at all (see `crate::boot`). A checkpoint marker carries
//! the DA records logged before it, so those are not read either.

use std::collections::VecDeque;

use alloy_primitives::B256;
use fulmen_storage::HotState;
use fulmen_storage::checkpoint::{Checkpoint, CheckpointMeta};
use fulmen_storage::log::Position;
use fulmen_storage::record::RecordKind;

use fulmen_chain::block::SealJob;

use crate::merkle::StateTrie;
use crate::seal::Merkleizer;
use crate::sequencer::{Genesis, PoolLimits, Sequencer, SequencerParts};
use fulmen_chain::persist::{
    decode_checkpoint_marker, decode_mini_block, decode_seal, peek_mini_block,
};
use fulmen_chain::spec::ChainSpec;

/// The history store a replay checks and reads through: blocks it already
/// holds are dropped from RAM as the replay passes them (see
/// `ChainView::attach_history`), and it is cut where it differs from the
/// log's chain or runs past its end.
pub struct HistoryLink {
    /// The store (boot is its only writer until the node starts); `None`
    /// to read it without changing it (`fulmen db check`).
    pub store: Option<fulmen_storage::history::HistoryStore>,
    /// Reads of it, as the chain view makes them.
    pub view: fulmen_chain::history::History,
}

impl HistoryLink {
    /// Keeps the store's blocks from `number` on only if block `number` is
    /// `hash` (read-only: fails if it is not).
    fn check(&mut self, number: u64, hash: B256) -> Result<(), RecoverError> {
        if number >= self.view.len() {
            return Ok(());
        }
        let stored = self.view.hash(number);
        if matches!(stored, Ok(Some(h)) if h == hash) {
            return Ok(());
        }
        let Some(store) = &mut self.store else {
            return Err(RecoverError::HistoryDiffers { number });
        };
        tracing::warn!(
            number,
            stored = ?stored.ok().flatten(),
            log = %hash,
            "the history store differs from the log at this block; it is cut there and written again"
        );
        store.truncate(number).map_err(RecoverError::History)
    }
}

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
    /// The DA-progress records' payloads, in log order (the DA batcher
    /// resumes from them).
    pub da_records: Vec<Vec<u8>>,
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
    /// The checkpoint the replay started from.
    pub from_checkpoint: Option<u64>,
    /// Records of blocks up to the checkpoint's skipped undecoded (the
    /// history store holds those blocks).
    pub skipped: u64,
}

/// Why the log does not replay (from genesis, or from a checkpoint).
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// A record of the log does not apply.
    #[error("log record at segment {}, offset {}: {detail}", .at.segment, .at.offset)]
    Record {
        /// Where the record is.
        at: Position,
        /// What is wrong with it.
        detail: String,
    },
    /// The checkpoint image is not the state it claims to be.
    #[error("checkpoint of block {number}: its state has root {computed}, the image says {stated}")]
    CheckpointRoot {
        /// Its block.
        number: u64,
        /// The root of the state in the image.
        computed: B256,
        /// The root in the image's header.
        stated: B256,
    },
    /// The checkpoint is not of the block the log sealed at its number.
    #[error(
        "the checkpoint of block {number} does not match the block's seal in the log (segment {}, offset {})",
        .at.segment, .at.offset
    )]
    CheckpointMismatch {
        /// Its block.
        number: u64,
        /// Where the log's seal of that block is.
        at: Position,
    },
    /// The history store cannot be cut to match the log.
    #[error("history store: {0}")]
    History(std::io::Error),
    /// The history store, read without being changed, differs from the
    /// log's chain.
    #[error("the history store's block {number} differs from the log's")]
    HistoryDiffers {
        /// The first block that differs.
        number: u64,
    },
    /// The log stops before the checkpoint's block.
    #[error("the log ends at block {head}, before the checkpoint of block {number}")]
    CheckpointPastLog {
        /// The checkpoint's block.
        number: u64,
        /// The last block the log sealed.
        head: u64,
    },
    /// A full check was asked to start from a checkpoint.
    #[error("a full check replays from genesis, not from a checkpoint")]
    CheckFromCheckpoint,
    /// The state rebuilt from the log is not the one its last seal names.
    #[error(
        "the replayed state root {replayed} differs from block {number}'s sealed state root {sealed} (the log's last record is at segment {}, offset {})",
        .last.segment, .last.offset
    )]
    StateRoot {
        /// The last sealed block.
        number: u64,
        /// The root of the replayed state.
        replayed: B256,
        /// The root in its header.
        sealed: B256,
        /// The log's last record.
        last: Position,
    },
}

/// A replay in progress: the sequencer being rebuilt, the trie following
/// its sealed blocks, and the blocks closed but not yet sealed.
struct Replay<'h> {
    history: Option<&'h mut HistoryLink>,
    seq: Sequencer,
    merkle: Merkleizer,
    /// The checkpoint the replay started from.
    image: Option<CheckpointMeta>,
    jobs: VecDeque<SealJob>,
    stats: ReplayStats,
    check_every_block: bool,
    da_records: Vec<Vec<u8>>,
    /// Records of blocks up to this one are skipped (the chain starts at
    /// it, from the history store).
    skip_until: Option<u64>,
}

/// Where a replay that skips the blocks a checkpoint holds starts.
pub struct Resume {
    /// The checkpoint.
    pub meta: CheckpointMeta,
    /// Its state.
    pub state: HotState,
    /// Its trie references (empty: none).
    pub trie: Vec<u8>,
    /// Its block, from the history store.
    pub head: std::sync::Arc<fulmen_chain::block::SealedBlock>,
    /// The hashes of the blocks up to it (the last ones), from the store.
    pub hashes: fulmen_chain::block::BlockHashes,
    /// The last mini-block of its block or before.
    pub mini_block: u64,
}

/// Replays `records` onto the chain at `resume`'s checkpoint, whose block
/// `history`'s store holds: records of blocks up to it are skipped
/// undecoded (a seal of the block itself must match it).
pub fn replay_after<'a>(
    spec: &ChainSpec,
    resume: Resume,
    records: impl IntoIterator<Item = (Position, RecordKind, &'a [u8])>,
    (now_ms, check_every_block): (u64, bool),
    history: &mut HistoryLink,
) -> Result<Replayed, RecoverError> {
    let number = resume.meta.number;
    let trie = checked_trie(&resume.meta, &resume.state, &resume.trie)?;
    let view = fulmen_chain::view::ChainView::at_block(
        resume.head,
        resume.state,
        resume.hashes,
        history.view.clone(),
        resume.mini_block,
    );
    let parts = crate::sequencer::SequencerParts::at_block(spec, view, 0);
    let seq = Sequencer::from_parts(spec.clone(), PoolLimits::default(), parts);
    let replay = Replay {
        history: Some(history),
        seq,
        merkle: Merkleizer::new(trie, number),
        image: Some(resume.meta),
        jobs: VecDeque::new(),
        stats: ReplayStats {
            from_checkpoint: Some(number),
            ..ReplayStats::default()
        },
        check_every_block,
        da_records: Vec::new(),
        skip_until: Some(number),
    };
    replay.run(records, now_ms)
}

/// The state trie of a checkpoint's image, checked against its root. Boot
/// runs before the node serves, so it builds the trie on every CPU the
/// process may use; with the image's trie references (`hashes`) it hashes
/// only what they leave out, and hashes the whole trie when they do not fit.
fn checked_trie(
    meta: &CheckpointMeta,
    state: &HotState,
    hashes: &[u8],
) -> Result<StateTrie, RecoverError> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let began = std::time::Instant::now();
    let mut trie = if hashes.is_empty() {
        StateTrie::from_state_on(state, threads)
    } else {
        let (trie, imported) = StateTrie::from_image_on(state, hashes, threads);
        if let Err(e) = imported {
            tracing::warn!(number = meta.number, error = %e, "the checkpoint's trie references do not fit its state; hashing the trie instead");
        }
        trie
    };
    let computed = trie.root_on(threads);
    tracing::info!(
        number = meta.number,
        stored_hashes = !hashes.is_empty(),
        ms = began.elapsed().as_millis() as u64,
        "built the state trie"
    );
    if computed != meta.state_root {
        return Err(RecoverError::CheckpointRoot {
            number: meta.number,
            computed,
            stated: meta.state_root,
        });
    }
    Ok(trie)
}

/// Replays `records` (in log order) onto the chain at `genesis`, or from
/// `checkpoint` (its image and the block it follows) when given, checking
/// and reading through `history` when given.
pub fn replay<'a>(
    spec: &ChainSpec,
    genesis: &Genesis,
    checkpoint: Option<Checkpoint>,
    records: impl IntoIterator<Item = (Position, RecordKind, &'a [u8])>,
    now_ms: u64,
    check_every_block: bool,
    history: Option<&mut HistoryLink>,
) -> Result<Replayed, RecoverError> {
    let mut replay = Replay::start(spec, genesis, checkpoint, check_every_block)?;
    if let Some(link) = history {
        link.check(0, replay.seq.view().head().hash)?;
        replay.seq.attach_history(link.view.clone());
        replay.history = Some(link);
    }
    replay.run(records, now_ms)
}

impl Replay<'_> {
    /// Applies `records` in order, then hands the chain over.
    fn run<'a>(
        mut self,
        records: impl IntoIterator<Item = (Position, RecordKind, &'a [u8])>,
        now_ms: u64,
    ) -> Result<Replayed, RecoverError> {
        let mut last = Position {
            segment: 0,
            offset: 0,
        };
        let mut last_mini_block = None;
        for (at, kind, payload) in records {
            last = at;
            if kind == RecordKind::MiniBlock {
                last_mini_block = Some((at, payload));
            }
            self.record(at, kind, payload)?;
        }
        if self.stats.mini_blocks == 0
            && let Some((at, payload)) = last_mini_block
        {
            // Every mini-block was skipped: the next one's parent is the
            // last one read.
            let record = decode_mini_block(payload).map_err(|e| RecoverError::Record {
                at,
                detail: e.to_string(),
            })?;
            self.seq.set_mini_block_hash(record.hash());
        }
        self.finish(last, now_ms)
    }

    /// The chain at genesis, or at the checkpoint's block (its trie rebuilt
    /// from the image and checked against the image's root).
    fn start(
        spec: &ChainSpec,
        genesis: &Genesis,
        checkpoint: Option<Checkpoint>,
        check_every_block: bool,
    ) -> Result<Self, RecoverError> {
        let mut seq = Sequencer::new(spec.clone(), PoolLimits::default(), genesis, 0);
        seq.begin_replay();
        let mut stats = ReplayStats::default();
        let (merkle, image) = match checkpoint {
            None => (Merkleizer::new(genesis.trie.clone(), 0), None),
            Some(_) if check_every_block => return Err(RecoverError::CheckFromCheckpoint),
            Some(Checkpoint { meta, state, trie }) => {
                let trie = checked_trie(&meta, &state, &trie)?;
                seq.start_from_checkpoint(meta.number, state);
                stats.from_checkpoint = Some(meta.number);
                (Merkleizer::new(trie, meta.number), Some(meta))
            }
        };
        Ok(Self {
            history: None,
            seq,
            merkle,
            image,
            jobs: VecDeque::new(),
            stats,
            check_every_block,
            da_records: Vec::new(),
            skip_until: None,
        })
    }

    /// Blocks up to this one are history only: the checkpoint holds their
    /// state.
    fn history_until(&self) -> u64 {
        self.image.map_or(0, |m| m.number)
    }

    /// Applies one record.
    fn record(
        &mut self,
        at: Position,
        kind: RecordKind,
        payload: &[u8],
    ) -> Result<(), RecoverError> {
        let fail = |detail: String| RecoverError::Record { at, detail };
        match kind {
            RecordKind::MiniBlock => {
                if let Some(number) = self.skip_until {
                    let (block, _) = peek_mini_block(payload).map_err(|e| fail(e.to_string()))?;
                    if block <= number {
                        self.stats.skipped += 1;
                        return Ok(());
                    }
                }
                let record = decode_mini_block(payload).map_err(|e| fail(e.to_string()))?;
                self.stats.txs += record.txs.len() as u64;
                self.stats.mini_blocks += 1;
                let closed = self
                    .seq
                    .replay_mini_block(record)
                    .map_err(|e| fail(e.to_string()))?;
                self.jobs.extend(closed);
            }
            RecordKind::BlockSeal => self.seal(at, payload)?,
            RecordKind::DaProgress => {
                self.stats.other += 1;
                self.da_records.push(payload.to_vec());
            }
            RecordKind::CheckpointMarker => {
                // It holds every DA record logged before it.
                let marker = decode_checkpoint_marker(payload).map_err(|e| fail(e.to_string()))?;
                self.da_records = marker.da_records;
                self.stats.other += 1;
            }
            RecordKind::Padding => {
                self.stats.other += 1;
            }
        }
        Ok(())
    }

    /// Installs a logged seal on the oldest closed block, and follows it
    /// with the trie (checking every root with `check_every_block`).
    fn seal(&mut self, at: Position, payload: &[u8]) -> Result<(), RecoverError> {
        let fail = |detail: String| RecoverError::Record { at, detail };
        let record = decode_seal(payload).map_err(|e| fail(e.to_string()))?;
        if let Some(number) = self.skip_until
            && record.header.number <= number
        {
            // The chain starts at the checkpoint's block: its seal must be
            // that block.
            let hash = self.image.map(|m| m.hash);
            if record.header.number == number && Some(record.header.hash_slow()) != hash {
                return Err(RecoverError::CheckpointMismatch { number, at });
            }
            self.stats.skipped += 1;
            return Ok(());
        }
        let header = record.header.clone();
        let closed = self
            .seq
            .replay_seal(record)
            .map_err(|e| fail(e.to_string()))?;
        self.jobs.extend(closed);
        if let Some(link) = &mut self.history {
            link.check(header.number, self.seq.view().head().hash)?;
        }
        let mut job = self
            .jobs
            .pop_front()
            .filter(|job| job.ctx.number == header.number)
            .ok_or_else(|| fail(format!("no closed block {} to seal", header.number)))?;
        assert!(job.ctx.number == header.number);
        if let Some(system) = self.seq.take_system_patch(header.number) {
            job.diffs.splice(0..0, system);
        }
        if header.number <= self.history_until() {
            // History only: the checkpoint holds this block's state.
            if let Some(meta) = self.image.filter(|m| m.number == header.number)
                && (header.hash_slow() != meta.hash || header.state_root != meta.state_root)
            {
                return Err(RecoverError::CheckpointMismatch {
                    number: header.number,
                    at,
                });
            }
        } else if self.check_every_block {
            check_roots(&mut self.merkle, &job, &header).map_err(fail)?;
            self.stats.blocks_checked += 1;
        } else {
            self.merkle.apply_unhashed(&job);
        }
        self.stats.seals += 1;
        Ok(())
    }

    /// Checks where the log ended up, and hands the chain over.
    fn finish(mut self, last: Position, now_ms: u64) -> Result<Replayed, RecoverError> {
        let head = self.seq.view().head().clone();
        let number = self.history_until();
        if head.header.number < number {
            return Err(RecoverError::CheckpointPastLog {
                number,
                head: head.header.number,
            });
        }
        if !self.check_every_block && head.header.number > 0 {
            let replayed = self.merkle.state_root();
            if replayed != head.header.state_root {
                return Err(RecoverError::StateRoot {
                    number: head.header.number,
                    replayed,
                    sealed: head.header.state_root,
                    last,
                });
            }
        }
        if let Some(store) = self.history.as_mut().and_then(|link| link.store.as_mut()) {
            // The log ends before the store (a verifier's unwind cut it).
            store
                .truncate(head.header.number + 1)
                .map_err(RecoverError::History)?;
        }
        if let Some((number, system)) = self.seq.finish_replayed_system_calls()
            && let Some(job) = self.jobs.iter_mut().find(|j| j.ctx.number == number)
        {
            job.diffs.splice(0..0, system);
        }
        self.seq.refresh_open_timestamp(now_ms);
        Ok(Replayed {
            parts: self.seq.into_parts(),
            merkle: self.merkle,
            pending: self.jobs.into(),
            stats: self.stats,
            da_records: self.da_records,
        })
    }
}

/// Recomputes a sealed block's roots and compares them with its header.
fn check_roots(
    merkle: &mut Merkleizer,
    job: &SealJob,
    header: &alloy_consensus::Header,
) -> Result<(), String> {
    let roots = merkle.seal(job);
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
            return Err(format!(
                "block {}: replayed {what} {computed} differs from the sealed header's {sealed}",
                header.number
            ));
        }
    }
    if roots.logs_bloom != header.logs_bloom {
        return Err(format!(
            "block {}: replayed logs bloom differs from the sealed header's",
            header.number
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    //! SQLite-style crash tests: the sequencer writes its records through the
    //! log onto the simulated disk, the disk fails or the machine crashes
    //! after IO operation N, and the chain rebuilt from what survived must
    //! hold every acknowledged transaction with its receipt, nothing half
    //! applied, and the state of a clean run at the same point.

    use std::collections::HashMap;
    use std::sync::Arc;

    use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
    use fulmen_storage::io::{CrashMode, Fault, SimDisk};
    use fulmen_storage::log::{Log, read_log};

    use super::*;
    use crate::merkle::StateTrie;
    use crate::testkit::{DEPLOY_STOP, STORE_CONTRACT, sign, spec};
    use fulmen_chain::block::ExecutedTx;
    use fulmen_chain::msg::Admission;
    use fulmen_chain::tx::RecoveredTx;
    use fulmen_storage::io::ready as now;

    /// The checkpoint of `state` at `meta`, with its trie references.
    fn with_hashes(meta: CheckpointMeta, state: HotState) -> Checkpoint {
        Checkpoint {
            meta,
            trie: crate::merkle::hashes_of(&state),
            state,
        }
    }

    pub(crate) const SEGMENT_BYTES: u64 = 16 * 1024;
    pub(crate) const GAS_LIMIT: u64 = 30_000_000;
    /// Senders of the workload; key 9 is kept for after the crash.
    const SENDERS: u32 = 6;
    const LATE_SENDER: u32 = 9;

    /// What a client was told about a transaction.
    #[derive(Debug, Clone, PartialEq)]
    struct Receipt {
        block: u64,
        index: u64,
        success: bool,
        gas_used: u64,
        cumulative_gas_used: u64,
        logs: Vec<alloy_primitives::Log>,
        contract: Option<Address>,
    }

    impl From<&ExecutedTx> for Receipt {
        fn from(tx: &ExecutedTx) -> Self {
            Self {
                block: tx.block_number,
                index: tx.index,
                success: tx.success,
                gas_used: tx.gas_used,
                cumulative_gas_used: tx.cumulative_gas_used,
                logs: tx.logs.clone(),
                contract: tx.contract_address,
            }
        }
    }

    /// What the run acknowledged, and the clean run's state after each
    /// mini-block and hash of each sealed block.
    #[derive(Default)]
    pub(crate) struct Run {
        acked: HashMap<B256, Receipt>,
        sealed: HashMap<u64, B256>,
        roots_by_mini_block: HashMap<u64, B256>,
        pub(crate) error: bool,
    }

    /// The transactions of each mini-block of the workload, signed once.
    fn plan(steps: u64) -> &'static [Vec<RecoveredTx>] {
        static PLAN: std::sync::OnceLock<Vec<Vec<RecoveredTx>>> = std::sync::OnceLock::new();
        let plan = PLAN.get_or_init(|| {
            let spec = spec(GAS_LIMIT);
            let mut nonces = [0u64; SENDERS as usize];
            (0..steps_max())
                .map(|step| {
                    (0..1 + step % 3)
                        .map(|k| {
                            let from = ((step * 3 + k) % u64::from(SENDERS)) as u32;
                            let nonce = nonces[from as usize];
                            nonces[from as usize] += 1;
                            let (to, value, input, gas) = match (step + k) % 4 {
                                0 | 1 => (
                                    TxKind::Call(Address::with_last_byte((step % 200) as u8 + 1)),
                                    1_000 + step,
                                    Bytes::new(),
                                    21_000,
                                ),
                                2 => (TxKind::Call(STORE_CONTRACT), step + 1, Bytes::new(), 80_000),
                                _ => (TxKind::Create, 0, Bytes::from_static(&DEPLOY_STOP), 100_000),
                            };
                            sign(&spec, from, nonce, to, value, input, gas, 1)
                        })
                        .collect()
                })
                .collect()
        });
        &plan[..steps as usize]
    }

    /// The workload: mini-blocks of 1..=3 transactions (transfers to fresh
    /// accounts, storage writes with logs, contract deployments), sometimes
    /// two mini-blocks per flush (group commit), a block closed every third
    /// mini-block and sealed one mini-block later (a seal in flight across a
    /// flush, as on the seq core). Stops at the first log error: the node
    /// halts there.
    pub(crate) fn workload(log: &mut Log<SimDisk>, steps: u64, clean: bool) -> Run {
        let spec = spec(GAS_LIMIT);
        let genesis = Genesis::new(&spec);
        let mut seq = Sequencer::new(spec.clone(), PoolLimits::default(), &genesis, 1_000);
        let mut merkle = Merkleizer::new(genesis.trie.clone(), 0);
        let mut run = Run::default();
        let mut unflushed: Vec<Vec<Arc<ExecutedTx>>> = Vec::new();
        let mut closed: Option<SealJob> = None;
        let mut seals: Vec<Arc<fulmen_chain::block::SealedBlock>> = Vec::new();
        for (step, txs) in (0..steps).zip(plan(steps)) {
            for tx in txs {
                assert!(matches!(seq.submit(tx.clone()), Ok(Admission::Executed(_))));
            }
            let mini = seq.close_mini_block().expect("transactions ran");
            let mut payload = Vec::new();
            seq.mini_block_record(&mini, &Default::default(), &mut payload);
            if clean {
                let root = StateTrie::from_state(seq.view().state()).root();
                run.roots_by_mini_block.insert(mini.number, root);
            }
            unflushed.push(mini.txs.clone());
            if log.append(RecordKind::MiniBlock, &payload).is_err() {
                run.error = true;
                return run;
            }
            if let Some(job) = closed.take() {
                let sealed = seq.finish_seal(merkle.seal(&job));
                let mut payload = Vec::new();
                fulmen_chain::persist::encode_seal(&sealed.header, sealed.size, &mut payload);
                seals.push(sealed);
                if log.append(RecordKind::BlockSeal, &payload).is_err() {
                    run.error = true;
                    return run;
                }
            }
            if step % 3 == 2 {
                closed = Some(seq.close_block(2_000 + step * 400));
            }
            if step % 4 == 1 {
                continue; // group commit: this mini-block joins the next flush
            }
            if now(log.flush()).is_err() {
                run.error = true;
                return run;
            }
            for txs in unflushed.drain(..) {
                for tx in txs {
                    run.acked.insert(tx.tx.hash, Receipt::from(tx.as_ref()));
                }
            }
            for sealed in seals.drain(..) {
                run.sealed.insert(sealed.header.number, sealed.hash);
            }
            if log.wants_next() && step % 2 == 0 {
                let _ = now(log.prepare_next());
            }
        }
        run
    }

    fn replay_disk(disk: &SimDisk) -> Result<Replayed, String> {
        let spec = spec(GAS_LIMIT);
        let genesis = Genesis::new(&spec);
        let (recovery, _) = read_log(disk).map_err(|e| e.to_string())?;
        let records = recovery
            .records
            .iter()
            .map(|(at, kind, payload)| (*at, *kind, &payload[..]));
        replay(&spec, &genesis, None, records, 1_000_000, true, None).map_err(|e| e.to_string())
    }

    /// Checks the chain rebuilt from `disk` against what `run` acknowledged
    /// and against the clean run `reference`, then keeps using it.
    fn check_recovery(disk: SimDisk, run: &Run, reference: &Run, what: &str) {
        let replayed = replay_disk(&disk).unwrap_or_else(|e| panic!("{what}: {e}"));
        let view = replayed.parts.view();
        for (hash, receipt) in &run.acked {
            let (tx, _) = view
                .tx(hash)
                .unwrap_or_else(|| panic!("{what}: acknowledged tx {hash} lost"));
            assert_eq!(
                &Receipt::from(tx.as_ref()),
                receipt,
                "{what}: receipt of {hash}"
            );
        }
        for (number, hash) in &run.sealed {
            let block = view
                .block(*number)
                .unwrap_or_else(|| panic!("{what}: sealed block {number} lost"));
            assert_eq!(&block.hash, hash, "{what}: block {number}");
        }
        // Whole mini-blocks or nothing: the state is the clean run's state
        // after the last recovered mini-block, and every sealed block is the
        // clean run's.
        let state_root = StateTrie::from_state(view.state()).root();
        if view.mini_block() > 0 {
            assert_eq!(
                Some(&state_root),
                reference.roots_by_mini_block.get(&view.mini_block()),
                "{what}: state after mini-block {}",
                view.mini_block()
            );
        } else {
            assert_eq!(
                state_root,
                view.head().header.state_root,
                "{what}: genesis state"
            );
        }
        for block in view.blocks().skip(1) {
            assert_eq!(
                Some(&block.hash),
                reference.sealed.get(&block.header.number),
                "{what}: block {} differs from the clean run's",
                block.header.number
            );
        }

        // The recovered chain keeps going: seal what was closed, run a new
        // transaction, log it on the reopened log, and find it after another
        // reopen.
        let spec = spec(GAS_LIMIT);
        let mut merkle = replayed.merkle;
        let mut seq = Sequencer::from_parts(spec.clone(), PoolLimits::default(), replayed.parts);
        let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES))
            .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        for job in &replayed.pending {
            let sealed = seq.finish_seal(merkle.seal(job));
            let mut payload = Vec::new();
            fulmen_chain::persist::encode_seal(&sealed.header, sealed.size, &mut payload);
            log.append(RecordKind::BlockSeal, &payload).unwrap();
        }
        let late = sign(
            &spec,
            LATE_SENDER,
            0,
            TxKind::Call(STORE_CONTRACT),
            7,
            Bytes::new(),
            80_000,
            1,
        );
        let hash = late.hash;
        assert!(
            matches!(seq.submit(late), Ok(Admission::Executed(_))),
            "{what}"
        );
        let mini = seq.close_mini_block().unwrap();
        let mut payload = Vec::new();
        seq.mini_block_record(&mini, &Default::default(), &mut payload);
        log.append(RecordKind::MiniBlock, &payload).unwrap();
        now(log.flush()).unwrap_or_else(|e| panic!("{what}: flush after recovery: {e}"));
        let again = replay_disk(&disk).unwrap_or_else(|e| panic!("{what}: second boot: {e}"));
        assert!(
            again.parts.view().tx(&hash).is_some(),
            "{what}: post-recovery tx lost"
        );
        assert_eq!(again.parts.view().mini_block(), mini.number, "{what}");
    }

    /// Mini-blocks of the workload: about 1.5 IO operations each, so 110
    /// give 160 crash points (800 runs); FULMEN_LONG=1 gives about 1,500.
    fn steps() -> u64 {
        if std::env::var("FULMEN_LONG").is_ok() {
            steps_max()
        } else {
            110
        }
    }

    fn steps_max() -> u64 {
        1_000
    }

    #[test]
    fn da_progress_payloads_come_back_in_log_order() {
        let spec = spec(30_000_000);
        let genesis = Genesis::new(&spec);
        let at = |offset| Position { segment: 0, offset };
        let records = [
            (at(0), RecordKind::DaProgress, &b"first"[..]),
            (at(64), RecordKind::Padding, &b""[..]),
            (at(128), RecordKind::DaProgress, &b"second"[..]),
        ];
        let replayed = replay(&spec, &genesis, None, records, 1_000, false, None).unwrap();
        assert_eq!(
            replayed.da_records,
            vec![b"first".to_vec(), b"second".to_vec()]
        );
    }

    #[test]
    fn a_clean_run_replays_to_the_same_chain() {
        let disk = SimDisk::new(1, 1 << 24);
        let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
        let run = workload(&mut log, steps(), true);
        assert!(!run.error);
        assert!(disk.list().len() > 2, "the workload spans segments");
        assert!(run.sealed.len() as u64 >= steps() / 3 - 1);
        check_recovery(disk, &run, &run, "clean run");
    }

    /// A replay from a checkpoint rebuilds the same history and state as one
    /// from genesis; a checkpoint that does not match the log is refused.
    #[test]
    fn a_replay_from_a_checkpoint_equals_one_from_genesis() {
        let disk = SimDisk::new(1, 1 << 24);
        let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
        let run = workload(&mut log, steps(), true);
        let full = replay_disk(&disk).unwrap();
        let spec = spec(GAS_LIMIT);
        let genesis = Genesis::new(&spec);
        let (recovery, _) = read_log(&disk).unwrap();
        let records = || {
            recovery
                .records
                .iter()
                .map(|(at, kind, payload)| (*at, *kind, &payload[..]))
        };
        let view = full.parts.view();
        let head = view.head().header.number;
        let number = head / 2;
        let block = view.block(number).unwrap();
        let meta = CheckpointMeta {
            number,
            hash: block.hash,
            state_root: block.header.state_root,
        };
        let image = view.state_at(number).unwrap().clone();
        let from = replay(
            &spec,
            &genesis,
            Some(with_hashes(meta, image.clone())),
            records(),
            1_000_000,
            false,
            None,
        )
        .unwrap();
        assert_eq!(from.stats.from_checkpoint, Some(number));
        let view2 = from.parts.view();
        assert_eq!(view2.mini_block(), view.mini_block());
        assert_eq!(view2.blocks().len(), view.blocks().len());
        for (a, b) in view.blocks().zip(view2.blocks()) {
            assert_eq!(a.hash, b.hash);
            assert_eq!(a.txs.len(), b.txs.len());
        }
        for (hash, receipt) in &run.acked {
            assert_eq!(&Receipt::from(view2.tx(hash).unwrap().0.as_ref()), receipt);
        }
        assert_eq!(
            StateTrie::from_state(view2.state()).root(),
            StateTrie::from_state(view.state()).root()
        );
        assert!(
            view2.state_at(number - 1).is_none(),
            "no state before the image"
        );
        assert!(view2.state_at(head).is_some());
        let mut merkle = from.merkle;
        assert_eq!(merkle.state_root(), view.head().header.state_root);

        // Refused: another block's hash, a damaged image, an image past the log.
        let wrong_hash = CheckpointMeta {
            hash: B256::repeat_byte(1),
            ..meta
        };
        let refused = |checkpoint, check_every_block| {
            replay(
                &spec,
                &genesis,
                Some(checkpoint),
                records(),
                0,
                check_every_block,
                None,
            )
            .err()
            .unwrap()
        };
        let err = refused(with_hashes(wrong_hash, image.clone()), false);
        // Named as the checkpoint's fault, at the log's seal of its block.
        assert!(
            matches!(err, RecoverError::CheckpointMismatch { number: n, at } if n == number && at != Position { segment: 0, offset: 0 }),
            "{err}"
        );
        let mut damaged = image.clone();
        damaged.set_account(
            Address::repeat_byte(0x77),
            fulmen_storage::AccountState::funded(U256::from(1)),
        );
        // With the image's own trie references (which then do not fit),
        // and without any.
        let err = refused(
            Checkpoint {
                trie: crate::merkle::hashes_of(&image),
                ..with_hashes(meta, damaged.clone())
            },
            false,
        );
        assert!(
            matches!(err, RecoverError::CheckpointRoot { number: n, .. } if n == number),
            "{err}"
        );
        let err = refused(
            Checkpoint {
                meta,
                state: damaged,
                trie: Vec::new(),
            },
            false,
        );
        // A checkpoint whose state is not its root: the checkpoint's fault,
        // not "log record at segment 0, offset 0".
        assert!(
            matches!(err, RecoverError::CheckpointRoot { number: n, .. } if n == number),
            "{err}"
        );
        assert!(err.to_string().starts_with("checkpoint of block"), "{err}");
        assert!(!err.to_string().contains("segment 0"), "{err}");
        let past = CheckpointMeta {
            number: head + 5,
            ..meta
        };
        let err = refused(with_hashes(past, image.clone()), false);
        assert!(
            matches!(err, RecoverError::CheckpointPastLog { number: n, head: h } if n == head + 5 && h == head),
            "{err}"
        );
        let err = refused(with_hashes(meta, image), true);
        assert!(matches!(err, RecoverError::CheckFromCheckpoint), "{err}");
    }

    /// A record far ahead of the chain (a damaged or forged log) is an
    /// error at once, not a boot that closes blocks without end.
    #[test]
    fn a_record_far_ahead_of_the_chain_is_refused() {
        let disk = SimDisk::new(1, 1 << 24);
        let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
        workload(&mut log, 10, false);
        let (recovery, _) = read_log(&disk).unwrap();
        let seal = recovery
            .records
            .iter()
            .find(|(_, kind, _)| *kind == RecordKind::BlockSeal)
            .unwrap();
        let mut record = decode_seal(&seal.2).unwrap();
        record.header.number = 1 << 40;
        let mut forged = Vec::new();
        fulmen_chain::persist::encode_seal(&record.header, record.size, &mut forged);
        let spec = spec(GAS_LIMIT);
        let genesis = Genesis::new(&spec);
        let records = recovery
            .records
            .iter()
            .map(|(at, kind, payload)| (*at, *kind, &payload[..]))
            .chain([(seal.0, RecordKind::BlockSeal, forged.as_slice())]);
        let err = replay(&spec, &genesis, None, records, 0, false, None)
            .err()
            .unwrap();
        assert!(
            matches!(&err, RecoverError::Record { at, detail } if *at == seal.0 && detail.contains("while block")),
            "{err}"
        );
    }

    /// Crash after every IO operation of the workload (torn or lost unflushed
    /// writes), and fail at every operation with EIO or ENOSPC, once or for
    /// good: recovery always succeeds and keeps every acknowledged
    /// transaction and sealed block.
    #[test]
    fn every_crash_and_io_fault_point_recovers_every_acknowledged_tx() {
        let disk = SimDisk::new(1, 1 << 24);
        let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
        let first_op = disk.ops();
        let reference = workload(&mut log, steps(), true);
        assert!(!reference.error);
        let mut points = 0;
        for at_op in first_op..disk.ops() {
            let variants = [
                (
                    Fault::Eio {
                        at_op,
                        forever: true,
                    },
                    CrashMode::TearUnflushed,
                ),
                (
                    Fault::Eio {
                        at_op,
                        forever: true,
                    },
                    CrashMode::LoseUnflushed,
                ),
                (
                    Fault::Eio {
                        at_op,
                        forever: false,
                    },
                    CrashMode::KeepAll,
                ),
                (
                    Fault::NoSpace {
                        at_op,
                        forever: false,
                    },
                    CrashMode::TearUnflushed,
                ),
                (
                    Fault::NoSpace {
                        at_op,
                        forever: true,
                    },
                    CrashMode::LoseUnflushed,
                ),
            ];
            for (fault, mode) in variants {
                let disk = SimDisk::new(at_op * 31 + 7, 1 << 24);
                let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
                disk.inject(Some(fault));
                let run = workload(&mut log, steps(), false);
                assert!(run.error, "{fault:?}: the fault was never hit");
                let what = format!("{fault:?} then {mode:?}");
                check_recovery(disk.crash(mode), &run, &reference, &what);
                points += 1;
            }
        }
        eprintln!(
            "{points} crash and fault runs over {} IO operations",
            disk.ops() - first_op
        );
        assert!(points >= 500, "only {points} crash points");
    }
}
