//! The sequencer's public types: its limits, what a closed mini-block
//! yields, the genesis, the `Send` parts boot hands to the seq core, and
//! replay errors.

use std::collections::VecDeque;
use std::sync::Arc;

use fulmen_chain::block::{BlockContext, ExecutedTx, SealedBlock, block_size, next_prevrandao};
use fulmen_chain::spec::ChainSpec;
use fulmen_chain::tx::RecoveredTx;
use fulmen_chain::view::ChainView;
use fulmen_storage::StateDiff;

use crate::merkle::StateTrie;

/// Bounds the sequencer enforces: the parking lot for future-nonce
/// transactions, and what one transaction and one mini-block may put in
/// the log.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Parked transactions per sender.
    pub parked_per_sender_max: usize,
    /// Parked transactions in all.
    pub parked_total_max: usize,
    /// Bytes of parked transactions in all (their EIP-2718 encoding).
    pub parked_bytes_max: usize,
    /// A parked transaction is dropped after this long (block time, s).
    pub parked_lifetime_s: u64,
    /// Transactions waiting for room in the next block, or for a parent hash.
    pub deferred_max: usize,
    /// Most bytes one transaction's entry (its bytes, logs and state
    /// changes) may take in a mini-block record; a transaction over it is
    /// refused after execution, with nothing applied.
    pub tx_record_bytes_max: usize,
    /// Most bytes of one mini-block record; the mini-block closes before a
    /// transaction that would not fit.
    pub mini_block_bytes_max: usize,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            parked_per_sender_max: 64,
            parked_total_max: 16_384,
            parked_bytes_max: 32 << 20,
            parked_lifetime_s: 600,
            deferred_max: 65_536,
            // Above what any transaction within the default gas cap can
            // produce (2^24 gas buys at most ~2.1 MB of log data at 8 gas a
            // byte, plus at most 128 KiB of its own bytes), so at the
            // defaults no transaction is ever executed and then refused.
            tx_record_bytes_max: 4 << 20,
            mini_block_bytes_max: 16 << 20,
        }
    }
}

impl PoolLimits {
    /// These limits with the log bounds fitted to the largest record the
    /// log takes (`record_bytes_max`), and true when that lowered them.
    pub fn fitted_to_log(mut self, record_bytes_max: usize) -> (Self, bool) {
        let before = (self.mini_block_bytes_max, self.tx_record_bytes_max);
        self.mini_block_bytes_max = self.mini_block_bytes_max.min(record_bytes_max);
        // At most half a mini-block, so that a mini-block closed for room
        // still carries more than one large transaction.
        self.tx_record_bytes_max = self
            .tx_record_bytes_max
            .min((self.mini_block_bytes_max - fulmen_chain::persist::MINI_BLOCK_HEADER_BYTES) / 2);
        let lowered = before != (self.mini_block_bytes_max, self.tx_record_bytes_max);
        (self, lowered)
    }
}

/// A mini-block that closed: what to publish and whose waiters to wake.
#[derive(Debug, Clone)]
pub struct ClosedMiniBlock {
    /// Global mini-block number.
    pub number: u64,
    /// Block it belongs to.
    pub block: u64,
    /// Its position in that block, from 0.
    pub index: u64,
    /// When it closed, in µs since the Unix epoch.
    pub timestamp_us: u64,
    /// The previous mini-block's hash.
    pub parent_hash: alloy_primitives::B256,
    /// Its hash ([`fulmen_chain::events::mini_block_hash`]).
    pub hash: alloy_primitives::B256,
    /// Transactions it preconfirmed.
    pub txs: Vec<Arc<ExecutedTx>>,
}

/// The genesis state, its trie and header.
#[derive(Debug, Clone)]
pub struct Genesis {
    /// Genesis state.
    pub state: fulmen_storage::HotState,
    /// Its state trie (the state-root worker takes it over).
    pub trie: StateTrie,
    /// The genesis header.
    pub header: alloy_consensus::Header,
}

impl Genesis {
    /// Builds the genesis of `spec`.
    pub fn new(spec: &ChainSpec) -> Self {
        let state = spec.genesis_state();
        let mut trie = StateTrie::from_state(&state);
        let header = spec.genesis_header(trie.root());
        Self {
            state,
            trie,
            header,
        }
    }
}

/// Everything of a sequencer but its EVM. It is `Send`, so boot can replay
/// the log on one thread and hand the result to the seq core, where
/// [`Sequencer::from_parts`] builds the (not `Send`) EVM around it.
pub struct SequencerParts {
    pub(super) open: OpenBlock,
    pub(super) view: ChainView,
    pub(super) sealing: VecDeque<SealJobMeta>,
    pub(super) mini_block: u64,
    pub(super) mini_block_hash: alloy_primitives::B256,
    pub(super) state: fulmen_storage::HotState,
    pub(super) block_hashes: fulmen_chain::block::BlockHashes,
}

impl SequencerParts {
    /// The chain at genesis.
    pub fn genesis(spec: &ChainSpec, genesis: &Genesis, now_ms: u64) -> Self {
        let state = genesis.state.clone();
        let header = genesis.header.clone();
        let hash = header.hash_slow();
        let size = block_size(&header, 0);
        let ctx = next_block_ctx(spec, &header, now_ms);
        let genesis = Arc::new(SealedBlock {
            header,
            hash,
            txs: Vec::new(),
            size,
        });
        let view = ChainView::genesis(genesis, state.clone());
        let block_hashes = fulmen_chain::block::BlockHashes::new(0, [hash]);
        Self {
            open: OpenBlock::new(ctx),
            view,
            sealing: VecDeque::new(),
            mini_block: 0,
            mini_block_hash: alloy_primitives::B256::ZERO,
            state,
            block_hashes,
        }
    }

    /// The chain at the sealed block `view` ends with (see
    /// [`ChainView::at_block`]), its next block open.
    pub fn at_block(spec: &ChainSpec, view: ChainView, now_ms: u64) -> Self {
        let ctx = next_block_ctx(spec, &view.head().header, now_ms);
        Self {
            open: OpenBlock::new(ctx),
            sealing: VecDeque::new(),
            mini_block: view.mini_block(),
            // Replay sets it from the log's last mini-block.
            mini_block_hash: alloy_primitives::B256::ZERO,
            state: view.state().clone(),
            block_hashes: view.block_hashes().clone(),
            view,
        }
    }

    /// The view readers see.
    pub fn view(&self) -> &ChainView {
        &self.view
    }
}

/// Why the log cannot be replayed onto the chain.
#[derive(Debug, thiserror::Error)]
#[error("block {block}: {detail}")]
pub struct ReplayError {
    /// Block the record belongs to.
    pub block: u64,
    /// What does not fit.
    pub detail: String,
}

/// Minimum fee bump, in percent, to replace a parked transaction.
pub const REPLACE_BUMP_PERCENT: u128 = 10;

/// A parked transaction and when it was parked.
#[derive(Debug, Clone)]
pub(super) struct Parked {
    pub(super) tx: RecoveredTx,
    /// Its EIP-2718 size.
    pub(super) bytes: usize,
    /// Timestamp (s) of the open block when it was parked.
    pub(super) at_s: u64,
}

pub(super) struct OpenBlock {
    pub(super) ctx: BlockContext,
    pub(super) txs: imbl::Vector<Arc<ExecutedTx>>,
    pub(super) diffs: Vec<StateDiff>,
    /// The state changes of the block's system calls, once made (before
    /// the first transaction runs when the parent's hash is known, else
    /// when it is: see `Sequencer::make_system_calls`).
    pub(super) system: Option<Vec<StateDiff>>,
    /// False for a block replay opened without a record of its context
    /// (its timestamp is a guess until its seal record): its system calls,
    /// which read the timestamp, wait for that record if it stays empty.
    pub(super) ctx_exact: bool,
    /// What its execution read and wrote, when witnesses are kept.
    pub(super) accessed: Option<fulmen_chain::block::Accessed>,
    pub(super) gas_used: u64,
    pub(super) log_count: u64,
    /// Mini-blocks closed in this block so far.
    pub(super) mini_blocks: u64,
}

impl OpenBlock {
    pub(super) fn new(ctx: BlockContext) -> Self {
        Self {
            ctx,
            txs: imbl::Vector::new(),
            diffs: Vec::new(),
            system: None,
            ctx_exact: true,
            accessed: None,
            gas_used: 0,
            log_count: 0,
            mini_blocks: 0,
        }
    }
}

pub(super) struct SealJobMeta {
    pub(super) ctx: BlockContext,
    pub(super) txs: Vec<Arc<ExecutedTx>>,
    pub(super) gas_used: u64,
    pub(super) state: fulmen_storage::HotState,
    /// Replay closed it empty with a guessed context: its system calls are
    /// made at its seal, with the logged header's.
    pub(super) system_at_seal: bool,
}

pub(super) fn next_block_ctx(
    spec: &ChainSpec,
    parent: &alloy_consensus::Header,
    now_ms: u64,
) -> BlockContext {
    BlockContext {
        number: parent.number + 1,
        timestamp: (now_ms / 1000).max(parent.timestamp + 1),
        base_fee: spec.next_base_fee(parent),
        gas_limit: spec.block_gas_limit,
        coinbase: spec.coinbase,
        prevrandao: next_prevrandao(parent.mix_hash, parent.number + 1),
    }
}
