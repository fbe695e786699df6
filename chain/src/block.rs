//! Block context, executed transactions, sealed and unsealed blocks, the
//! state-root worker's jobs and results, and header building.

use std::sync::Arc;

use alloy_consensus::{
    EMPTY_OMMER_ROOT_HASH, Eip658Value, Header, Receipt, ReceiptEnvelope, ReceiptWithBloom, TxType,
    constants::EMPTY_WITHDRAWALS,
};
use alloy_eips::eip7685::EMPTY_REQUESTS_HASH;
use alloy_primitives::{Address, B256, Bloom, Log, U256, keccak256};
use fulmen_storage::StateDiff;

use crate::tx::RecoveredTx;

/// Block-level inputs to execution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockContext {
    /// Block number.
    pub number: u64,
    /// Timestamp in seconds.
    pub timestamp: u64,
    /// Base fee per gas.
    pub base_fee: u64,
    /// Block gas limit.
    pub gas_limit: u64,
    /// Fee recipient.
    pub coinbase: Address,
    /// PREVRANDAO value.
    pub prevrandao: B256,
}

impl BlockContext {
    /// The context a sealed block ran in, from its header.
    pub fn of_header(header: &Header) -> Self {
        Self {
            number: header.number,
            timestamp: header.timestamp,
            base_fee: header.base_fee_per_gas.unwrap_or_default(),
            gas_limit: header.gas_limit,
            coinbase: header.beneficiary,
            prevrandao: header.mix_hash,
        }
    }
}

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
    /// What its execution read, when the node keeps execution witnesses
    /// (`rpc.witness_blocks`); none for blocks replay rebuilt.
    pub accessed: Option<Box<Accessed>>,
    /// Set for a block that gets a checkpoint: the state-root worker puts
    /// the state trie's references after the block here before it answers
    /// with the roots, so that the checkpoint keeps them and boot need not
    /// hash the trie again.
    pub trie_export: Option<TrieExportSlot>,
}

/// Where the state-root worker leaves a block's trie references (see
/// [`SealJob::trie_export`]).
pub type TrieExportSlot = Arc<std::sync::Mutex<Option<Vec<u8>>>>;

/// What a block's execution read or wrote, for its execution witness
/// (`debug_executionWitness`): accounts with their storage slots, the
/// codes run, and the oldest block whose hash BLOCKHASH read.
#[derive(Debug, Clone, Default)]
pub struct Accessed {
    /// Accounts, each with the slots read or written.
    pub accounts: std::collections::BTreeMap<Address, std::collections::BTreeSet<B256>>,
    /// Codes loaded, by hash.
    pub codes: std::collections::BTreeMap<B256, alloy_primitives::Bytes>,
    /// The oldest block number BLOCKHASH read, if any.
    pub oldest_hash_read: Option<u64>,
}

impl Accessed {
    /// Adds what a state diff wrote.
    pub fn add_diff(&mut self, diff: &StateDiff) {
        for (address, _) in &diff.accounts {
            self.accounts.entry(*address).or_default();
        }
        for (address, slot, _) in &diff.storage {
            self.accounts
                .entry(*address)
                .or_default()
                .insert(B256::from(*slot));
        }
    }
}

/// A block's execution witness, in reth's shape: the trie nodes (of the
/// state before the block) on the path of every account and slot it read
/// or wrote, the codes it ran, and the keys' preimages (addresses and
/// slots). The RPC adds the headers BLOCKHASH needs.
#[derive(Debug, Clone, Default)]
pub struct Witness {
    /// Block number.
    pub number: u64,
    /// RLP trie nodes, each once.
    pub state: Vec<alloy_primitives::Bytes>,
    /// Bytecodes.
    pub codes: Vec<alloy_primitives::Bytes>,
    /// Addresses (20 bytes) and slots (32 bytes).
    pub keys: Vec<alloy_primitives::Bytes>,
    /// The oldest block number BLOCKHASH read, if any.
    pub oldest_hash_read: Option<u64>,
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

/// The blocks whose hashes BLOCKHASH reads: the last 256.
pub const BLOCKHASH_WINDOW: u64 = 256;

/// Sealed block hashes kept in RAM: what BLOCKHASH reads (the last 256)
/// and block filters list, with room for filters polled minutes apart.
/// Older hashes are read from the history store.
pub const BLOCK_HASHES_KEPT: usize = 8192;

/// The hashes of the last sealed blocks, by number (a window that moves
/// with the head, at most [`BLOCK_HASHES_KEPT`] long).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockHashes {
    /// Number of `hashes[0]`.
    first: u64,
    hashes: imbl::Vector<B256>,
}

impl BlockHashes {
    /// The window holding `hashes`, the first being block `first`'s.
    pub fn new(first: u64, hashes: impl IntoIterator<Item = B256>) -> Self {
        let mut window = Self {
            first,
            hashes: hashes.into_iter().collect(),
        };
        window.trim();
        window
    }

    /// The hash of block `number`, if it is in the window.
    pub fn get(&self, number: u64) -> Option<B256> {
        let index = usize::try_from(number.checked_sub(self.first)?).ok()?;
        self.hashes.get(index).copied()
    }

    /// The number the next pushed hash has.
    pub fn next(&self) -> u64 {
        self.first + self.hashes.len() as u64
    }

    /// Appends the hash of block [`Self::next`], dropping the oldest past
    /// the window.
    pub fn push(&mut self, hash: B256) {
        self.hashes.push_back(hash);
        self.trim();
    }

    fn trim(&mut self) {
        while self.hashes.len() > BLOCK_HASHES_KEPT {
            self.hashes.pop_front();
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod block_hashes_tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_last_hashes_and_reads_none_outside_it() {
        let hash = |n: u64| B256::from(alloy_primitives::U256::from(n + 1));
        let mut window = BlockHashes::new(0, [hash(0)]);
        for n in 1..(BLOCK_HASHES_KEPT as u64 + 100) {
            assert_eq!(window.next(), n);
            window.push(hash(n));
        }
        let head = BLOCK_HASHES_KEPT as u64 + 99;
        assert_eq!(window.get(head), Some(hash(head)));
        assert_eq!(window.get(head + 1), None);
        let oldest = head + 1 - BLOCK_HASHES_KEPT as u64;
        assert_eq!(window.get(oldest), Some(hash(oldest)));
        assert_eq!(window.get(oldest - 1), None);
        assert_eq!(window.get(0), None);
        // Built from more hashes than it keeps, it keeps the last ones.
        let built = BlockHashes::new(10, (10..10 + BLOCK_HASHES_KEPT as u64 + 5).map(hash));
        assert_eq!(built.get(14), None);
        assert_eq!(built.get(15), Some(hash(15)));
        assert_eq!(built.next(), 10 + BLOCK_HASHES_KEPT as u64 + 5);
    }
}
