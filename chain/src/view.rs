//! The consistent chain view the sequencer publishes to readers.

use std::sync::Arc;

use alloy_primitives::B256;
use fulmen_storage::HotState;

use crate::block::{ExecutedTx, RECENT_STATES_MAX, SealedBlock, TxLocation, UnsealedBlock};

/// A consistent view of the chain at the last published mini-block. Cloning
/// is cheap (persistent structures); readers never block the sequencer.
#[derive(Debug, Clone)]
pub struct ChainView {
    /// State after the last closed mini-block (`latest` / `pending`).
    state: HotState,
    /// Sealed blocks by number.
    blocks: imbl::Vector<Arc<SealedBlock>>,
    /// Sealed block hashes by number (what BLOCKHASH reads).
    block_hashes: imbl::Vector<B256>,
    /// Sealed block numbers by hash.
    by_hash: imbl::HashMap<B256, u64>,
    /// Every preconfirmed or sealed transaction.
    txs: imbl::HashMap<B256, TxLocation>,
    /// Blocks not yet sealed, oldest first; the last one is open.
    unsealed: imbl::Vector<Arc<UnsealedBlock>>,
    /// State at the end of each recent sealed block, oldest first.
    recent_states: imbl::Vector<(u64, HotState)>,
    /// Number of the last closed mini-block.
    mini_block: u64,
    /// The L2 heads L1 vouches for, once the DA batcher reports them.
    da_heads: Option<DaHeads>,
}

/// The L2 heads that L1 vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaHeads {
    /// The last L2 block whose data is in L1 at the confirmation depth.
    pub safe: u64,
    /// The last L2 block whose data is in a finalized L1 block.
    pub finalized: u64,
}

impl ChainView {
    /// The chain at its genesis block, with `state` after it.
    pub fn genesis(genesis: Arc<SealedBlock>, state: HotState) -> Self {
        assert_eq!(genesis.header.number, 0, "the chain starts at block 0");
        let hash = genesis.hash;
        let mut view = Self {
            state: state.clone(),
            blocks: imbl::Vector::new(),
            block_hashes: imbl::Vector::new(),
            by_hash: imbl::HashMap::new(),
            txs: imbl::HashMap::new(),
            unsealed: imbl::Vector::new(),
            recent_states: imbl::Vector::new(),
            mini_block: 0,
            da_heads: None,
        };
        view.blocks.push_back(genesis);
        view.block_hashes.push_back(hash);
        view.by_hash.insert(hash, 0);
        view.recent_states.push_back((0, state));
        view
    }

    /// Records where a newly executed transaction sits.
    pub fn record_tx(&mut self, hash: B256, at: TxLocation) {
        debug_assert!(
            at.block > self.head().header.number,
            "new transactions go into unsealed blocks"
        );
        self.txs.insert(hash, at);
    }

    /// Publishes the state after mini-block `number`.
    pub fn close_mini_block(&mut self, number: u64, state: HotState) {
        assert!(number > self.mini_block, "mini-blocks close in order");
        self.mini_block = number;
        self.state = state;
    }

    /// Installs the open block as it now stands (replacing the previous
    /// snapshot of the same block, or opening the next one).
    pub fn set_open(&mut self, open: Arc<UnsealedBlock>) {
        match self.unsealed.back() {
            Some(last) if last.ctx.number == open.ctx.number => {
                self.unsealed.pop_back();
            }
            Some(last) => assert_eq!(
                last.ctx.number + 1,
                open.ctx.number,
                "unsealed blocks are consecutive"
            ),
            None => {}
        }
        self.unsealed.push_back(open);
    }

    /// Appends the next sealed block; `state` is the state after it, kept
    /// for historical reads while it is among the recent ones.
    pub fn push_sealed(&mut self, sealed: Arc<SealedBlock>, state: Option<HotState>) {
        let number = sealed.header.number;
        assert_eq!(number, self.blocks.len() as u64, "blocks seal in order");
        assert_eq!(
            sealed.header.parent_hash,
            self.head().hash,
            "a sealed block extends the head"
        );
        let hash = sealed.hash;
        self.blocks.push_back(sealed);
        self.block_hashes.push_back(hash);
        self.by_hash.insert(hash, number);
        if let Some(state) = state {
            self.recent_states.push_back((number, state));
        }
        while self.recent_states.len() > RECENT_STATES_MAX {
            self.recent_states.pop_front();
        }
        if let Some(front) = self.unsealed.front()
            && front.ctx.number == number
        {
            self.unsealed.pop_front();
        }
    }

    /// Replay from a checkpoint: the state is `state`, and no earlier
    /// block's state is kept.
    pub fn start_from_checkpoint(&mut self, state: HotState) {
        self.state = state;
        self.recent_states.clear();
    }

    /// Records what the DA batcher reports. `safe` may move back (an L1
    /// reorg dropped a batch); neither may pass the sealed head, and
    /// `finalized` never passes `safe`.
    pub fn set_da_heads(&mut self, heads: DaHeads) {
        assert!(
            heads.finalized <= heads.safe,
            "finalized is never past safe"
        );
        assert!(
            heads.safe <= self.head().header.number,
            "safe is a sealed block"
        );
        self.da_heads = Some(heads);
    }

    /// The `safe` block: the last L2 block whose data is in L1 at the
    /// confirmation depth; the last sealed block while nothing is posted
    /// (no `--l1-rpc`).
    pub fn safe(&self) -> u64 {
        self.da_heads
            .map_or(self.head().header.number, |heads| heads.safe)
    }

    /// The `finalized` block: the last L2 block whose data is in a
    /// finalized L1 block; the last sealed block while nothing is posted.
    pub fn finalized(&self) -> u64 {
        self.da_heads
            .map_or(self.head().header.number, |heads| heads.finalized)
    }

    /// State after the last closed mini-block (`latest` / `pending`).
    pub fn state(&self) -> &HotState {
        &self.state
    }

    /// Number of the last closed mini-block.
    pub fn mini_block(&self) -> u64 {
        self.mini_block
    }

    /// Sealed block hashes by number (what BLOCKHASH reads).
    pub fn block_hashes(&self) -> &imbl::Vector<B256> {
        &self.block_hashes
    }

    /// Sealed blocks, oldest first.
    pub fn blocks(&self) -> impl DoubleEndedIterator<Item = &Arc<SealedBlock>> + ExactSizeIterator {
        self.blocks.iter()
    }

    /// Blocks not yet sealed, oldest first; the last one is open.
    pub fn unsealed(&self) -> impl DoubleEndedIterator<Item = &Arc<UnsealedBlock>> {
        self.unsealed.iter()
    }

    /// Whether a transaction with this hash was preconfirmed or sealed.
    pub fn contains_tx(&self, hash: &B256) -> bool {
        self.txs.contains_key(hash)
    }

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
