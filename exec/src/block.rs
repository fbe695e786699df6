//! Executed transactions, blocks, the state-root worker's jobs, and the
//! consistent chain view that the sequencer publishes to readers.

use std::sync::Arc;

use alloy_consensus::{
    EMPTY_OMMER_ROOT_HASH, Eip658Value, Header, Receipt, ReceiptEnvelope, ReceiptWithBloom, TxType,
    constants::EMPTY_WITHDRAWALS,
};
use alloy_eips::{eip2718::Encodable2718, eip7685::EMPTY_REQUESTS_HASH};
use alloy_primitives::{Address, B256, Bloom, Log, U256, keccak256};
use fulmen_storage::{HotState, StateDiff};

use crate::evm::BlockContext;
use crate::merkle::{AccountProof, StateTrie};
use crate::trie::Trie;
use crate::tx::RecoveredTx;

/// How many sealed blocks keep a full state snapshot for historical reads
/// (as geth keeps 128 in-memory layers).
pub const RECENT_STATES_MAX: usize = 128;

/// A transaction after execution: everything its receipt needs.
#[derive(Debug, Clone)]
pub struct ExecutedTx {
    /// The transaction and its sender.
    pub tx: RecoveredTx,
    /// EIP-658 status.
    pub success: bool,
    /// Gas used by this transaction.
    pub gas_used: u64,
    /// Gas used by the block up to and including this transaction.
    pub cumulative_gas_used: u64,
    /// Price paid per gas.
    pub effective_gas_price: u128,
    /// Logs emitted.
    pub logs: Vec<Log>,
    /// Created contract, if any.
    pub contract_address: Option<Address>,
    /// Number of the block it is (or will be) sealed in.
    pub block_number: u64,
    /// Timestamp of that block.
    pub block_timestamp: u64,
    /// Position in the block.
    pub index: u64,
    /// Block-wide index of its first log.
    pub first_log_index: u64,
    /// Global mini-block number that preconfirmed it.
    pub mini_block: u64,
}

impl ExecutedTx {
    /// The consensus receipt (used for the receipts root).
    pub fn receipt_envelope(&self) -> ReceiptEnvelope {
        let receipt = Receipt {
            status: Eip658Value::Eip658(self.success),
            cumulative_gas_used: self.cumulative_gas_used,
            logs: self.logs.clone(),
        };
        let with_bloom = ReceiptWithBloom::new(receipt.clone(), receipt.bloom_slow());
        match self.tx.envelope.tx_type() {
            TxType::Legacy => ReceiptEnvelope::Legacy(with_bloom),
            TxType::Eip2930 => ReceiptEnvelope::Eip2930(with_bloom),
            TxType::Eip1559 => ReceiptEnvelope::Eip1559(with_bloom),
            TxType::Eip4844 => ReceiptEnvelope::Eip4844(with_bloom),
            TxType::Eip7702 => ReceiptEnvelope::Eip7702(with_bloom),
        }
    }

    /// Logs bloom of this transaction.
    pub fn bloom(&self) -> Bloom {
        let mut bloom = Bloom::default();
        for log in &self.logs {
            bloom.accrue_log(log);
        }
        bloom
    }
}

/// A block whose header is final.
#[derive(Debug, Clone)]
pub struct SealedBlock {
    /// The header.
    pub header: Header,
    /// keccak256 of the RLP header.
    pub hash: B256,
    /// Its transactions in order.
    pub txs: Vec<Arc<ExecutedTx>>,
    /// RLP size of the block.
    pub size: u64,
}

/// A block that has transactions but no header yet: the open block, or a
/// closed one whose state root is being computed.
#[derive(Debug, Clone)]
pub struct UnsealedBlock {
    /// Block-level context (number, timestamp, base fee, ...).
    pub ctx: BlockContext,
    /// Preconfirmed transactions so far.
    pub txs: imbl::Vector<Arc<ExecutedTx>>,
    /// Gas used so far.
    pub gas_used: u64,
}

/// Where a transaction sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLocation {
    /// Block number.
    pub block: u64,
    /// Index in the block.
    pub index: u64,
}

/// A consistent view of the chain at the last published mini-block. Cloning
/// is cheap (persistent structures); readers never block the sequencer.
#[derive(Debug, Clone)]
pub struct ChainView {
    /// State after the last closed mini-block (`latest` / `pending`).
    pub state: HotState,
    /// Sealed blocks by number.
    pub blocks: imbl::Vector<Arc<SealedBlock>>,
    /// Sealed block hashes by number (what BLOCKHASH reads).
    pub block_hashes: imbl::Vector<B256>,
    /// Sealed block numbers by hash.
    pub by_hash: imbl::HashMap<B256, u64>,
    /// Every preconfirmed or sealed transaction.
    pub txs: imbl::HashMap<B256, TxLocation>,
    /// Blocks not yet sealed, oldest first; the last one is open.
    pub unsealed: imbl::Vector<Arc<UnsealedBlock>>,
    /// State at the end of each recent sealed block, oldest first.
    pub recent_states: imbl::Vector<(u64, HotState)>,
    /// Number of the last closed mini-block.
    pub mini_block: u64,
}

impl ChainView {
    /// The last sealed block.
    pub fn head(&self) -> &Arc<SealedBlock> {
        self.blocks
            .back()
            .expect("the chain always has its genesis block")
    }

    /// Sealed block by number.
    pub fn block(&self, number: u64) -> Option<&Arc<SealedBlock>> {
        self.blocks.get(usize::try_from(number).ok()?)
    }

    /// Sealed block by hash.
    pub fn block_by_hash(&self, hash: &B256) -> Option<&Arc<SealedBlock>> {
        self.by_hash.get(hash).and_then(|n| self.block(*n))
    }

    /// The open (preconfirming) block.
    pub fn open(&self) -> &Arc<UnsealedBlock> {
        self.unsealed.back().expect("there is always an open block")
    }

    /// A transaction and, when sealed, its block's hash.
    pub fn tx(&self, hash: &B256) -> Option<(Arc<ExecutedTx>, Option<B256>)> {
        let at = *self.txs.get(hash)?;
        if let Some(block) = self.block(at.block) {
            let tx = block.txs.get(usize::try_from(at.index).ok()?)?;
            return Some((tx.clone(), Some(block.hash)));
        }
        let block = self.unsealed.iter().find(|b| b.ctx.number == at.block)?;
        Some((
            block.txs.get(usize::try_from(at.index).ok()?)?.clone(),
            None,
        ))
    }

    /// State at the end of sealed block `number`, while it is recent.
    pub fn state_at(&self, number: u64) -> Option<&HotState> {
        self.recent_states
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, s)| s)
    }
}

/// Everything the state-root worker needs to seal one block.
#[derive(Debug)]
pub struct SealJob {
    /// Block-level context.
    pub ctx: BlockContext,
    /// The block's transactions.
    pub txs: Vec<Arc<ExecutedTx>>,
    /// State changes, in execution order.
    pub diffs: Vec<StateDiff>,
    /// Gas used by the block.
    pub gas_used: u64,
}

/// Roots computed off the sequencer core.
#[derive(Debug, Clone, Copy)]
pub struct SealRoots {
    /// Block number.
    pub number: u64,
    /// State root after the block.
    pub state_root: B256,
    /// Transactions root.
    pub transactions_root: B256,
    /// Receipts root.
    pub receipts_root: B256,
    /// Logs bloom.
    pub logs_bloom: Bloom,
    /// Summed RLP length of the transactions as the block body encodes them.
    pub txs_rlp_len: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum SealPhase {
    #[default]
    Stage,
    Commit,
    StateHash,
    BlockItems,
    TxHash,
    ReceiptHash,
}

/// Where a seal in steps stands (see [`Merkleizer::seal_step`]).
#[derive(Debug, Default)]
pub struct SealProgress {
    phase: SealPhase,
    next: usize,
    state_root: B256,
    transactions_root: B256,
    txs: Trie,
    receipts: Trie,
    logs_bloom: Bloom,
    txs_rlp_len: usize,
}

impl SealProgress {
    fn advance(&mut self, phase: SealPhase) {
        self.phase = phase;
        self.next = 0;
    }
}

/// The state-root worker: owns the state trie and turns seal jobs into roots.
#[derive(Debug)]
pub struct Merkleizer {
    trie: StateTrie,
    /// Last block whose diff the trie holds.
    pub number: u64,
}

impl Merkleizer {
    /// A worker whose trie reflects block `number`.
    pub fn new(trie: StateTrie, number: u64) -> Self {
        Self { trie, number }
    }

    /// Applies the block's state changes without hashing (boot replay: the
    /// header holds the roots; [`Self::state_root`] checks the last one).
    pub fn apply_unhashed(&mut self, job: &SealJob) {
        self.trie.apply(&job.diffs);
        self.number = job.ctx.number;
    }

    /// The state root of the trie as it stands.
    pub fn state_root(&mut self) -> B256 {
        self.trie.root()
    }

    /// Applies the block's diff and computes its roots in one go.
    pub fn seal(&mut self, job: &SealJob) -> SealRoots {
        let mut progress = SealProgress::default();
        loop {
            if let Some(roots) = self.seal_step(job, &mut progress, usize::MAX) {
                return roots;
            }
        }
    }

    /// Does at most about `budget` units of work (diffs, accounts, trie nodes,
    /// transactions) on `job`; returns the roots once the seal is complete.
    /// Call again with the same `progress` to continue.
    pub fn seal_step(
        &mut self,
        job: &SealJob,
        progress: &mut SealProgress,
        budget: usize,
    ) -> Option<SealRoots> {
        assert_eq!(
            job.ctx.number,
            self.number + 1,
            "blocks are sealed in order"
        );
        let budget = budget.max(1);
        match progress.phase {
            SealPhase::Stage => {
                let end = progress.next.saturating_add(budget).min(job.diffs.len());
                for diff in &job.diffs[progress.next..end] {
                    self.trie.stage(diff);
                }
                progress.next = end;
                if end == job.diffs.len() {
                    progress.advance(SealPhase::Commit);
                }
            }
            SealPhase::Commit => {
                if self.trie.commit_staged(budget) {
                    progress.advance(SealPhase::StateHash);
                }
            }
            SealPhase::StateHash => {
                if let Some(root) = self.trie.root_step(budget) {
                    progress.state_root = root;
                    progress.advance(SealPhase::BlockItems);
                }
            }
            SealPhase::BlockItems => {
                let end = progress.next.saturating_add(budget).min(job.txs.len());
                for (index, tx) in job.txs.iter().enumerate().take(end).skip(progress.next) {
                    let key = alloy_rlp::encode(index);
                    progress
                        .txs
                        .insert_bytes(&key, tx.tx.envelope.encoded_2718());
                    progress.txs_rlp_len += alloy_rlp::Encodable::length(&tx.tx.envelope);
                    let receipt = tx.receipt_envelope();
                    progress.logs_bloom.accrue_bloom(receipt.logs_bloom());
                    progress.receipts.insert_bytes(&key, receipt.encoded_2718());
                }
                progress.next = end;
                if end == job.txs.len() {
                    progress.advance(SealPhase::TxHash);
                }
            }
            SealPhase::TxHash => {
                if let Some(root) = progress.txs.root_step(budget) {
                    progress.transactions_root = root;
                    progress.advance(SealPhase::ReceiptHash);
                }
            }
            SealPhase::ReceiptHash => {
                if let Some(root) = progress.receipts.root_step(budget) {
                    self.number = job.ctx.number;
                    return Some(SealRoots {
                        number: job.ctx.number,
                        state_root: progress.state_root,
                        transactions_root: progress.transactions_root,
                        receipts_root: root,
                        logs_bloom: progress.logs_bloom,
                        txs_rlp_len: progress.txs_rlp_len,
                    });
                }
            }
        }
        None
    }

    /// Proof against the state root of block [`Self::number`].
    pub fn proof(&mut self, address: &Address, slots: &[B256]) -> AccountProof {
        self.trie.proof(address, slots)
    }
}

/// The header of a block with the given roots, on top of `parent_hash`.
pub fn build_header(
    ctx: &BlockContext,
    parent_hash: B256,
    gas_used: u64,
    roots: &SealRoots,
) -> Header {
    Header {
        parent_hash,
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        beneficiary: ctx.coinbase,
        state_root: roots.state_root,
        transactions_root: roots.transactions_root,
        receipts_root: roots.receipts_root,
        logs_bloom: roots.logs_bloom,
        difficulty: U256::ZERO,
        number: ctx.number,
        gas_limit: ctx.gas_limit,
        gas_used,
        timestamp: ctx.timestamp,
        extra_data: Default::default(),
        mix_hash: ctx.prevrandao,
        nonce: Default::default(),
        base_fee_per_gas: Some(ctx.base_fee),
        withdrawals_root: Some(EMPTY_WITHDRAWALS),
        blob_gas_used: Some(0),
        excess_blob_gas: Some(0),
        parent_beacon_block_root: Some(B256::ZERO),
        requests_hash: Some(EMPTY_REQUESTS_HASH),
        ..Default::default()
    }
}

/// PREVRANDAO of the next block: a hash chain seeded by genesis. On an L2
/// the sequencer picks this value; it is not a source of secure randomness.
pub fn next_prevrandao(previous: B256, number: u64) -> B256 {
    let mut input = [0u8; 40];
    input[..32].copy_from_slice(previous.as_slice());
    input[32..].copy_from_slice(&number.to_be_bytes());
    keccak256(input)
}

/// RLP size of a block: header, transactions, empty ommers and empty withdrawals.
pub fn block_size(header: &Header, txs_rlp_len: usize) -> u64 {
    use alloy_rlp::{Encodable, length_of_length};
    let txs_list = txs_rlp_len + length_of_length(txs_rlp_len);
    // Empty ommers and withdrawals lists are one byte each (0xc0).
    let payload = header.length() + txs_list + 1 + 1;
    (payload + length_of_length(payload)) as u64
}
