//! The consistent chain view the sequencer publishes to readers.

use std::sync::Arc;

use alloy_primitives::{Address, B256};
use fulmen_storage::HotState;
use fulmen_storage::pmap::PMap;

use crate::block::{
    BlockHashes, ExecutedTx, RECENT_STATES_MAX, SealedBlock, TxLocation, UnsealedBlock,
};
use crate::history::{History, HistoryError};
use crate::tx::RecoveredTx;

/// The view's hash indexes: persistent, compact, seeded against chosen keys.
type HashTable<K, V> = PMap<K, V, fulmen_storage::StateHasher>;

/// A consistent view of the chain at the last published mini-block. Cloning
/// is cheap (persistent structures); readers never block the sequencer.
#[derive(Debug, Clone)]
pub struct ChainView {
    /// State after the last closed mini-block (`latest` / `pending`).
    state: HotState,
    /// The sealed blocks kept in RAM, by number from `first`; older ones
    /// are read from `history`.
    blocks: imbl::Vector<Arc<SealedBlock>>,
    /// Number of `blocks[0]`.
    first: u64,
    /// The history store, when the node has one (else every block stays
    /// in RAM).
    history: Option<History>,
    /// The last sealed blocks' hashes by number (what BLOCKHASH reads).
    block_hashes: BlockHashes,
    /// Numbers of the blocks in RAM by hash.
    by_hash: HashTable<B256, u64>,
    /// Every preconfirmed transaction, and the sealed ones in RAM.
    txs: HashTable<B256, TxLocation>,
    /// Blocks not yet sealed, oldest first; the last one is open.
    unsealed: imbl::Vector<Arc<UnsealedBlock>>,
    /// State at the end of each recent sealed block, oldest first.
    recent_states: imbl::Vector<(u64, HotState)>,
    /// Number of the last closed mini-block.
    mini_block: u64,
    /// The L2 heads L1 vouches for, once the DA batcher reports them.
    da_heads: Option<DaHeads>,
    /// Transactions the sequencer holds and has not run.
    pool: TxPoolView,
}

/// What the sequencer holds and has not run (`txpool_*` shows it):
/// persistent structures, updated as the pool changes.
#[derive(Debug, Clone, Default)]
pub struct TxPoolView {
    /// Future nonces, by sender and nonce.
    parked: imbl::OrdMap<(Address, u64), Arc<RecoveredTx>>,
    /// Ready, waiting for the next block or a parent hash, in order.
    deferred: imbl::Vector<Arc<RecoveredTx>>,
}

impl TxPoolView {
    /// Parked transactions, by sender and nonce.
    pub fn parked(&self) -> impl Iterator<Item = &Arc<RecoveredTx>> {
        self.parked.values()
    }

    /// Deferred transactions, in the order they will run.
    pub fn deferred(&self) -> impl Iterator<Item = &Arc<RecoveredTx>> {
        self.deferred.iter()
    }

    /// `tx` is parked (replacing one of the same sender and nonce).
    pub fn park(&mut self, tx: Arc<RecoveredTx>) {
        self.parked.insert((tx.sender, tx.nonce()), tx);
    }

    /// The parked transaction of `sender` with `nonce` left the pool.
    pub fn unpark(&mut self, sender: Address, nonce: u64) {
        self.parked.remove(&(sender, nonce));
    }

    /// `tx` is deferred, after the others.
    pub fn defer(&mut self, tx: Arc<RecoveredTx>) {
        self.deferred.push_back(tx);
    }

    /// The deferred transactions are being run again.
    pub fn clear_deferred(&mut self) {
        self.deferred.clear();
    }
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
            first: 0,
            history: None,
            block_hashes: BlockHashes::new(0, [hash]),
            by_hash: HashTable::default(),
            txs: HashTable::default(),
            unsealed: imbl::Vector::new(),
            recent_states: imbl::Vector::new(),
            mini_block: 0,
            da_heads: None,
            pool: TxPoolView::default(),
        };
        view.blocks.push_back(genesis);
        view.by_hash.insert(hash, 0);
        view.recent_states.push_back((0, state));
        view
    }

    /// The chain at sealed block `head`, as boot from a checkpoint finds
    /// it: `state` after it, the hashes of the blocks before it (`hashes`
    /// ends with its own), older blocks in `history`, and `mini_block` the
    /// last mini-block closed.
    pub fn at_block(
        head: Arc<SealedBlock>,
        state: HotState,
        block_hashes: BlockHashes,
        history: History,
        mini_block: u64,
    ) -> Self {
        let number = head.header.number;
        assert_eq!(
            block_hashes.get(number),
            Some(head.hash),
            "the hashes end with the head's"
        );
        assert_eq!(
            block_hashes.next(),
            number + 1,
            "the hashes end at the head"
        );
        let mut txs = HashTable::default();
        for (index, tx) in head.txs.iter().enumerate() {
            let at = TxLocation {
                block: number,
                index: index as u64,
            };
            txs.insert(tx.tx.hash, at);
        }
        let mut view = Self {
            state: state.clone(),
            blocks: imbl::Vector::new(),
            first: number,
            history: Some(history),
            block_hashes,
            by_hash: HashTable::default(),
            txs,
            unsealed: imbl::Vector::new(),
            recent_states: imbl::Vector::new(),
            mini_block,
            da_heads: None,
            pool: TxPoolView::default(),
        };
        view.by_hash.insert(head.hash, number);
        view.blocks.push_back(head);
        view.recent_states.push_back((number, state));
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

    /// Publishes the state of a closed block whose last changes are not a
    /// mini-block's: its system calls, made at its close when no
    /// transaction ran in it.
    pub fn close_block_state(&mut self, state: HotState) {
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
        assert_eq!(
            number,
            self.first + self.blocks.len() as u64,
            "blocks seal in order"
        );
        assert_eq!(
            sealed.header.parent_hash,
            self.head().hash,
            "a sealed block extends the head"
        );
        let hash = sealed.hash;
        self.blocks.push_back(sealed);
        self.block_hashes.push(hash);
        self.by_hash.insert(hash, number);
        self.trim();
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

    /// Reads blocks older than the last `history.memory_blocks()` from
    /// `history`, and drops them from RAM once the store holds them.
    pub fn attach_history(&mut self, history: History) {
        self.history = Some(history);
        self.trim();
    }

    /// The history store, when the node has one.
    pub fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    /// The oldest sealed block this node serves: older ones were pruned
    /// from the history store (`history = "recent"`); 0 on an archive node.
    pub fn oldest_block(&self) -> u64 {
        self.history
            .as_ref()
            .map_or(0, |history| history.first().min(self.first))
    }

    /// Whether sealed block `number` was pruned (see [`Self::oldest_block`]).
    pub fn pruned(&self, number: u64) -> bool {
        number < self.oldest_block()
    }

    /// Drops from RAM the sealed blocks that are both older than the
    /// memory window and in the history store (never the head).
    pub fn trim(&mut self) {
        let Some(history) = &self.history else {
            return;
        };
        let head = self.head().header.number;
        let keep_from = (head + 1)
            .saturating_sub(history.memory_blocks())
            .min(history.len())
            .min(head);
        while self.first < keep_from {
            let Some(block) = self.blocks.pop_front() else {
                break;
            };
            self.first += 1;
            self.by_hash.remove(&block.hash);
            for tx in &block.txs {
                self.txs.remove(&tx.tx.hash);
            }
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

    /// What L1 vouches for, once a DA role has said (`None` without one,
    /// or before it has heard from L1).
    pub fn da_heads(&self) -> Option<DaHeads> {
        self.da_heads
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

    /// What the sequencer holds and has not run.
    pub fn pool(&self) -> &TxPoolView {
        &self.pool
    }

    /// The pool, for the sequencer to keep up to date.
    pub fn pool_mut(&mut self) -> &mut TxPoolView {
        &mut self.pool
    }

    /// The last sealed blocks' hashes by number (what BLOCKHASH reads).
    pub fn block_hashes(&self) -> &BlockHashes {
        &self.block_hashes
    }

    /// The hash of sealed block `number`: from RAM while it is among the
    /// last ones, else from the history store.
    pub fn block_hash(&self, number: u64) -> Option<B256> {
        if number > self.head().header.number {
            return None;
        }
        if let Some(hash) = self.block_hashes.get(number) {
            return Some(hash);
        }
        match &self.history {
            Some(history) if number < self.first => {
                read(history.hash(number), "block hash", number)
            }
            _ => self.block(number).map(|block| block.hash),
        }
    }

    /// The sealed blocks kept in RAM, oldest first (all of them without a
    /// history store).
    pub fn blocks(&self) -> impl DoubleEndedIterator<Item = &Arc<SealedBlock>> + ExactSizeIterator {
        self.blocks.iter()
    }

    /// Blocks not yet sealed, oldest first; the last one is open.
    pub fn unsealed(&self) -> impl DoubleEndedIterator<Item = &Arc<UnsealedBlock>> {
        self.unsealed.iter()
    }

    /// Whether a transaction with this hash was preconfirmed, or sealed in
    /// a block kept in RAM (the seq core's "already known": it never reads
    /// the disk; an older one fails its nonce check).
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
    pub fn block(&self, number: u64) -> Option<Arc<SealedBlock>> {
        if number >= self.first {
            return self
                .blocks
                .get(usize::try_from(number - self.first).ok()?)
                .cloned();
        }
        let history = self.history.as_ref()?;
        read(history.block(number), "block", number).map(Arc::new)
    }

    /// The header and hash of sealed block `number` (from the history
    /// store without reading the rest of the block).
    pub fn header(&self, number: u64) -> Option<(alloy_consensus::Header, B256)> {
        if number >= self.first {
            let block = self
                .blocks
                .get(usize::try_from(number - self.first).ok()?)?;
            return Some((block.header.clone(), block.hash));
        }
        let history = self.history.as_ref()?;
        read(history.header(number), "header", number)
    }

    /// The number of the sealed block with this hash, without reading the
    /// block.
    pub fn number_of(&self, hash: &B256) -> Option<u64> {
        if let Some(number) = self.by_hash.get(hash) {
            return Some(*number);
        }
        let history = self.history.as_ref()?;
        let number = read(history.number_of(hash), "block hash", 0)?;
        // One the store holds past the view's RAM window start is in RAM
        // (found above) or not served yet.
        (number < self.first).then_some(number)
    }

    /// Sealed block by hash.
    pub fn block_by_hash(&self, hash: &B256) -> Option<Arc<SealedBlock>> {
        self.number_of(hash).and_then(|number| self.block(number))
    }

    /// The open (preconfirming) block.
    pub fn open(&self) -> &Arc<UnsealedBlock> {
        self.unsealed.back().expect("there is always an open block")
    }

    /// A transaction and, when sealed, its block's hash.
    pub fn tx(&self, hash: &B256) -> Option<(Arc<ExecutedTx>, Option<B256>)> {
        let Some(at) = self.txs.get(hash).copied() else {
            let history = self.history.as_ref()?;
            let (tx, block_hash) = read(history.tx(hash), "transaction", 0)?;
            return (tx.block_number < self.first).then(|| (Arc::new(tx), Some(block_hash)));
        };
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

/// A history read's result; a failed read is reported and answered as
/// missing (the node goes on serving what it can).
fn read<T>(result: Result<Option<T>, HistoryError>, what: &str, number: u64) -> Option<T> {
    match result {
        Ok(found) => found,
        Err(error) => {
            crate::history::READ_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(what, number, %error, "history read failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::encode_block;
    use crate::tx::decode_and_check;
    use crate::tx::tests::{RULES, dynamic_fee};
    use alloy_consensus::Header;
    use alloy_eips::eip2718::Encodable2718;
    use alloy_signer_local::PrivateKeySigner;
    use fulmen_storage::history::HistoryStore;

    /// Block `number` on top of `parent`, with one transfer.
    fn block(number: u64, parent: B256) -> Arc<SealedBlock> {
        let tx = decode_and_check(
            &dynamic_fee(&PrivateKeySigner::random()).encoded_2718(),
            &RULES,
        )
        .unwrap();
        let header = Header {
            number,
            parent_hash: parent,
            timestamp: 1_700_000_000 + number,
            base_fee_per_gas: Some(7),
            gas_used: 21_000,
            ..Default::default()
        };
        let executed = ExecutedTx {
            effective_gas_price: tx.effective_gas_price(7),
            tx,
            success: true,
            gas_used: 21_000,
            cumulative_gas_used: 21_000,
            logs: Vec::new(),
            contract_address: None,
            block_number: number,
            block_timestamp: header.timestamp,
            index: 0,
            first_log_index: 0,
            mini_block: number,
        };
        Arc::new(SealedBlock {
            hash: header.hash_slow(),
            header,
            txs: if number == 0 {
                Vec::new()
            } else {
                vec![Arc::new(executed)]
            },
            size: 600,
        })
    }

    /// A view whose blocks are in a history store keeping 2 in RAM answers
    /// every read of a dropped block as it did from RAM, and the seq core's
    /// "already known" forgets the dropped ones.
    #[test]
    fn blocks_dropped_from_ram_read_back_from_the_store_as_they_were() {
        let dir = std::env::temp_dir().join(format!("fulmen-view-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = HistoryStore::open(&dir).unwrap();
        let genesis = block(0, B256::ZERO);
        let mut view = ChainView::genesis(genesis.clone(), HotState::default());
        let history = History::new(store.reader(), RULES.spec, 2);
        view.attach_history(history);
        let mut blocks = vec![genesis];
        for n in 1..=10 {
            let next = block(n, blocks.last().unwrap().hash);
            for tx in &next.txs {
                view.record_tx(tx.tx.hash, TxLocation { block: n, index: 0 });
            }
            blocks.push(next.clone());
            view.push_sealed(next, None);
        }
        // Nothing is in the store yet: everything stays in RAM.
        assert_eq!(view.blocks().len(), 11);
        for block in &blocks {
            let (keys, payload) = encode_block(block);
            store.append(block.header.number, &keys, &payload).unwrap();
        }
        view.trim();
        assert_eq!(view.blocks().len(), 2, "the last two sealed blocks stay");
        for block in &blocks {
            let n = block.header.number;
            let read = view.block(n).unwrap();
            assert_eq!(
                (read.hash, &read.header, read.size),
                (block.hash, &block.header, block.size)
            );
            assert_eq!(view.block_by_hash(&block.hash).unwrap().header.number, n);
            assert_eq!(view.header(n).unwrap(), (block.header.clone(), block.hash));
            for tx in &block.txs {
                let (found, hash) = view.tx(&tx.tx.hash).unwrap();
                assert_eq!(format!("{found:?}"), format!("{tx:?}"));
                assert_eq!(hash, Some(block.hash));
                assert_eq!(view.contains_tx(&tx.tx.hash), n >= 9);
            }
        }
        assert!(view.block(11).is_none());
        assert!(view.block_by_hash(&B256::repeat_byte(1)).is_none());
        assert!(view.tx(&B256::repeat_byte(1)).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
