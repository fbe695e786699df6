//! The sequencer: stateful checks, parking of future nonces, streaming
//! execution, mini-blocks and block sealing.
//!
//! This is plain synchronous logic owned by the seq core; the runtime
//! ([`crate::seq_core`]) feeds it transactions and timer ticks and publishes
//! what it produces. Keeping it free of IO makes it testable on its own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use alloy_eips::eip1559::calc_next_block_base_fee;
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, U256};
use fulmen_storage::StateDiff;

use crate::evm::{Evm, ExecError, StateDb, build_evm, state_diff, transact, tx_env};
use crate::merkle::StateTrie;
use fulmen_chain::block::BlockContext;
use fulmen_chain::block::{
    ExecutedTx, SealJob, SealRoots, SealedBlock, TxLocation, UnsealedBlock, block_size,
    build_header, next_prevrandao,
};
use fulmen_chain::msg::{Admission, ParkReason, SubmitError};
use fulmen_chain::spec::ChainSpec;
use fulmen_chain::tx::RecoveredTx;
use fulmen_chain::view::ChainView;

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

/// Most blocks one log record may close at replay. Every block gets a seal
/// record, and blocks wait for their seal only behind the bounded seal queue,
/// so a valid log never jumps further; a damaged or forged one could
/// otherwise make boot close blocks without end.
const REPLAY_BLOCK_GAP_MAX: u64 = 1024;

/// Minimum fee bump, in percent, to replace a parked transaction.
pub const REPLACE_BUMP_PERCENT: u128 = 10;

/// A mini-block that closed: what to publish and whose waiters to wake.
#[derive(Debug, Clone)]
pub struct ClosedMiniBlock {
    /// Global mini-block number.
    pub number: u64,
    /// Block it belongs to.
    pub block: u64,
    /// Its position in that block, from 0.
    pub index: u64,
    /// Transactions it preconfirmed.
    pub txs: Vec<Arc<ExecutedTx>>,
}

struct OpenBlock {
    ctx: BlockContext,
    txs: imbl::Vector<Arc<ExecutedTx>>,
    diffs: Vec<StateDiff>,
    gas_used: u64,
    log_count: u64,
    /// Mini-blocks closed in this block so far.
    mini_blocks: u64,
}

/// The sequencer. Owns the working state and the chain's history until the
/// storage engine takes the latter.
pub struct Sequencer {
    spec: ChainSpec,
    limits: PoolLimits,
    evm: Evm,
    open: OpenBlock,
    /// Transactions of the open mini-block.
    mini_txs: Vec<Arc<ExecutedTx>>,
    mini_block: u64,
    view: ChainView,
    /// Closed blocks waiting for their roots, oldest first.
    sealing: VecDeque<SealJobMeta>,
    parked: HashMap<Address, BTreeMap<u64, Parked>>,
    parked_count: usize,
    parked_bytes: usize,
    /// Bytes the open mini-block's record will take.
    mini_bytes: usize,
    /// A transaction was deferred because the open mini-block had no room.
    deferred_for_room: bool,
    /// Ready transactions that wait for the next block or a parent hash.
    deferred: VecDeque<RecoveredTx>,
    /// Senders with deferred transactions, and how many each has.
    deferred_senders: HashMap<Address, usize>,
    /// Replay from a checkpoint: blocks up to this one rebuild history only,
    /// their state is already in the checkpoint's image (0: none).
    history_until: u64,
}

/// A parked transaction and when it was parked.
#[derive(Debug, Clone)]
struct Parked {
    tx: RecoveredTx,
    /// Its EIP-2718 size.
    bytes: usize,
    /// Timestamp (s) of the open block when it was parked.
    at_s: u64,
}

/// The bumped fee a replacement must pay, without overflow.
fn bumped(old: u128) -> u128 {
    let bump = old / 100 * REPLACE_BUMP_PERCENT + old % 100 * REPLACE_BUMP_PERCENT / 100;
    old.saturating_add(bump)
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

struct SealJobMeta {
    ctx: BlockContext,
    txs: Vec<Arc<ExecutedTx>>,
    gas_used: u64,
    state: fulmen_storage::HotState,
}

/// Everything of a sequencer but its EVM. It is `Send`, so boot can replay
/// the log on one thread and hand the result to the seq core, where
/// [`Sequencer::from_parts`] builds the (not `Send`) EVM around it.
pub struct SequencerParts {
    open: OpenBlock,
    view: ChainView,
    sealing: VecDeque<SealJobMeta>,
    mini_block: u64,
    state: fulmen_storage::HotState,
    block_hashes: imbl::Vector<alloy_primitives::B256>,
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
        let mut block_hashes = imbl::Vector::new();
        block_hashes.push_back(hash);
        Self {
            open: OpenBlock::new(ctx),
            view,
            sealing: VecDeque::new(),
            mini_block: 0,
            state,
            block_hashes,
        }
    }

    /// The view readers see.
    pub fn view(&self) -> &ChainView {
        &self.view
    }
}

impl OpenBlock {
    fn new(ctx: BlockContext) -> Self {
        Self {
            ctx,
            txs: imbl::Vector::new(),
            diffs: Vec::new(),
            gas_used: 0,
            log_count: 0,
            mini_blocks: 0,
        }
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

impl Sequencer {
    /// A sequencer at genesis. The EVM inside is not `Send`: build the
    /// sequencer on the core that runs it, from a [`Genesis`] made anywhere.
    pub fn new(spec: ChainSpec, limits: PoolLimits, genesis: &Genesis, now_ms: u64) -> Self {
        let parts = SequencerParts::genesis(&spec, genesis, now_ms);
        Self::from_parts(spec, limits, parts)
    }

    /// A sequencer over a replayed chain.
    pub fn from_parts(spec: ChainSpec, limits: PoolLimits, parts: SequencerParts) -> Self {
        let SequencerParts {
            open,
            view,
            sealing,
            mini_block,
            state,
            block_hashes,
        } = parts;
        // A transaction of the largest size always fits an empty mini-block.
        let (limits, _) = limits.fitted_to_log(limits.mini_block_bytes_max);
        let evm = build_evm(StateDb::new(state, block_hashes), spec.chain_id, &open.ctx);
        let mut seq = Self {
            spec,
            limits,
            evm,
            open,
            mini_txs: Vec::new(),
            mini_block,
            view,
            sealing,
            parked: HashMap::new(),
            parked_count: 0,
            parked_bytes: 0,
            mini_bytes: 0,
            deferred_for_room: false,
            deferred: VecDeque::new(),
            deferred_senders: HashMap::new(),
            history_until: 0,
        };
        seq.refresh_open_view();
        seq
    }

    /// Takes the EVM out, leaving what can move between threads. Call with
    /// no open mini-block.
    pub fn into_parts(self) -> SequencerParts {
        debug_assert!(self.mini_txs.is_empty());
        let db = self.evm.ctx.journaled_state.database;
        SequencerParts {
            open: self.open,
            view: self.view,
            sealing: self.sealing,
            mini_block: self.mini_block,
            state: db.state,
            block_hashes: db.block_hashes,
        }
    }

    /// The chain spec.
    pub fn spec(&self) -> &ChainSpec {
        &self.spec
    }

    /// The view as of the last closed mini-block.
    pub fn view(&self) -> &ChainView {
        &self.view
    }

    /// Transactions in the open mini-block.
    pub fn mini_txs_len(&self) -> usize {
        self.mini_txs.len()
    }

    /// Number of parked transactions.
    pub fn parked_count(&self) -> usize {
        self.parked_count
    }

    /// Number of the open block.
    pub fn open_block_number(&self) -> u64 {
        self.open.ctx.number
    }

    /// True when the open mini-block should close before it takes more: one
    /// more transaction of the largest size might not fit its record, or a
    /// transaction already waits for room.
    pub fn mini_block_full(&self) -> bool {
        self.deferred_for_room
            || fulmen_chain::persist::MINI_BLOCK_HEADER_BYTES
                + self.mini_bytes
                + self.limits.tx_record_bytes_max
                > self.limits.mini_block_bytes_max
    }

    /// Runs the transactions deferred for room in the last mini-block, once
    /// it closed. Call after [`Self::close_mini_block`].
    pub fn run_deferred_for_room(&mut self) {
        if std::mem::take(&mut self.deferred_for_room) {
            self.run_deferred();
        }
    }

    /// Bytes of parked transactions.
    pub fn parked_bytes(&self) -> usize {
        self.parked_bytes
    }

    /// True when the open mini-block holds transactions.
    pub fn mini_block_has_txs(&self) -> bool {
        !self.mini_txs.is_empty()
    }

    /// Stateful checks, then execution or parking.
    pub fn submit(&mut self, tx: RecoveredTx) -> Result<Admission, SubmitError> {
        if self.view.contains_tx(&tx.hash) || self.is_parked(&tx) {
            return Err(SubmitError::AlreadyKnown);
        }
        let sender = tx.sender;
        let (nonce, balance) = self.account_nonce_balance(&sender);
        if tx.nonce() < nonce {
            return Err(SubmitError::NonceTooLow {
                expected: nonce,
                got: tx.nonce(),
            });
        }
        if tx.max_fee_per_gas() < u128::from(self.open.ctx.base_fee) {
            return Err(SubmitError::FeeCapTooLow {
                address: sender,
                max_fee: tx.max_fee_per_gas(),
                base_fee: self.open.ctx.base_fee,
            });
        }
        if tx.nonce() > nonce || self.has_deferred(&sender) {
            let expected = nonce;
            self.park(tx, balance)?;
            return Ok(Admission::Parked(ParkReason::NonceGap { expected }));
        }
        let cost = tx.max_cost();
        if balance < cost {
            return Err(SubmitError::InsufficientFunds {
                address: sender,
                have: balance,
                want: cost,
            });
        }
        match self.execute(tx)? {
            Some(executed) => {
                self.promote(sender);
                Ok(Admission::Executed(executed))
            }
            None => Ok(Admission::Parked(ParkReason::Deferred)),
        }
    }

    /// Executes a ready transaction. Returns `None` when it was deferred.
    fn execute(&mut self, tx: RecoveredTx) -> Result<Option<Arc<ExecutedTx>>, SubmitError> {
        if self.open.gas_used.saturating_add(tx.gas_limit()) > self.open.ctx.gas_limit {
            self.defer(tx)?;
            return Ok(None);
        }
        let (outcome, changes) = match transact(&mut self.evm, tx_env(&tx)) {
            Ok(done) => done,
            Err(ExecError::Db(_)) => {
                self.defer(tx)?;
                return Ok(None);
            }
            Err(ExecError::Invalid(message)) => return Err(SubmitError::Invalid(message)),
        };
        let diff = state_diff(changes, &self.evm.ctx.journaled_state.database.state);
        let entry_bytes = fulmen_chain::persist::tx_entry_bytes(
            tx.envelope.encode_2718_len(),
            &outcome.logs,
            outcome.contract_address.is_some(),
            &diff,
        );
        if entry_bytes > self.limits.tx_record_bytes_max {
            return Err(SubmitError::RecordTooLarge {
                bytes: entry_bytes,
                limit: self.limits.tx_record_bytes_max,
            });
        }
        let mini_bytes =
            fulmen_chain::persist::MINI_BLOCK_HEADER_BYTES + self.mini_bytes + entry_bytes;
        if !self.mini_txs.is_empty() && mini_bytes > self.limits.mini_block_bytes_max {
            // Only a burst of promoted or deferred transactions gets here:
            // the seq core closes a mini-block while one more transaction of
            // the largest size still fits. It runs again once this one closes.
            self.deferred_for_room = true;
            self.defer(tx)?;
            return Ok(None);
        }
        self.mini_bytes += entry_bytes;
        let executed = self.record(
            tx,
            outcome.success,
            outcome.gas_used,
            outcome.logs,
            outcome.contract_address,
            diff,
        );
        Ok(Some(executed))
    }

    /// Applies an executed transaction's changes and adds it to the open
    /// mini-block and block.
    fn record(
        &mut self,
        tx: RecoveredTx,
        success: bool,
        gas_used: u64,
        logs: Vec<alloy_primitives::Log>,
        contract_address: Option<Address>,
        diff: StateDiff,
    ) -> Arc<ExecutedTx> {
        if self.open.ctx.number > self.history_until {
            self.evm.ctx.journaled_state.database.state.apply(&diff);
            self.open.diffs.push(diff);
        }
        self.open.gas_used += gas_used;
        let executed = Arc::new(ExecutedTx {
            effective_gas_price: tx.effective_gas_price(self.open.ctx.base_fee),
            tx,
            success,
            gas_used,
            cumulative_gas_used: self.open.gas_used,
            first_log_index: self.open.log_count,
            logs,
            contract_address,
            block_number: self.open.ctx.number,
            block_timestamp: self.open.ctx.timestamp,
            index: self.open.txs.len() as u64,
            mini_block: self.mini_block + 1,
        });
        self.open.log_count += executed.logs.len() as u64;
        // The working view is published by cloning at mini-block close, so
        // indexing the hash now is invisible to readers until then.
        self.view.record_tx(
            executed.tx.hash,
            TxLocation {
                block: executed.block_number,
                index: executed.index,
            },
        );
        self.open.txs.push_back(executed.clone());
        self.mini_txs.push(executed.clone());
        executed
    }

    fn defer(&mut self, tx: RecoveredTx) -> Result<(), SubmitError> {
        if self.deferred.len() >= self.limits.deferred_max {
            return Err(SubmitError::PoolFull);
        }
        *self.deferred_senders.entry(tx.sender).or_default() += 1;
        self.deferred.push_back(tx);
        Ok(())
    }

    fn has_deferred(&self, sender: &Address) -> bool {
        self.deferred_senders.contains_key(sender)
    }

    fn is_parked(&self, tx: &RecoveredTx) -> bool {
        let parked = self
            .parked
            .get(&tx.sender)
            .and_then(|m| m.get(&tx.nonce()))
            .is_some_and(|p| p.tx.hash == tx.hash);
        // A deferred transaction is its sender's next one; nothing else of
        // that sender can run before it, so the scan stays short in practice.
        parked || (self.has_deferred(&tx.sender) && self.deferred.iter().any(|t| t.hash == tx.hash))
    }

    fn account_nonce_balance(&self, address: &Address) -> (u64, U256) {
        self.evm
            .ctx
            .journaled_state
            .database
            .state
            .account(address)
            .map_or((0, U256::ZERO), |a| (a.nonce, a.balance))
    }

    /// Parks a future-nonce transaction. Its sender must be able to pay for
    /// it and every other transaction it has parked, so that unfunded
    /// senders cannot fill the lot; when the lot is full, a transaction
    /// paying more evicts the cheapest other sender's last one.
    fn park(&mut self, tx: RecoveredTx, balance: U256) -> Result<(), SubmitError> {
        let slot = self.parked.get(&tx.sender);
        let replaced = slot.and_then(|s| s.get(&tx.nonce()));
        if let Some(existing) = replaced
            && (tx.max_fee_per_gas() < bumped(existing.tx.max_fee_per_gas())
                || tx.max_priority_fee_per_gas() < bumped(existing.tx.max_priority_fee_per_gas()))
        {
            return Err(SubmitError::ReplacementUnderpriced);
        }
        let others = slot.map_or(U256::ZERO, |s| {
            s.values()
                .filter(|p| p.tx.nonce() != tx.nonce())
                .fold(U256::ZERO, |sum, p| sum.saturating_add(p.tx.max_cost()))
        });
        let want = others.saturating_add(tx.max_cost());
        if balance < want {
            return Err(SubmitError::InsufficientFunds {
                address: tx.sender,
                have: balance,
                want,
            });
        }
        let replaced_bytes = replaced.map(|p| p.bytes);
        let sender_count = slot.map_or(0, BTreeMap::len);
        let bytes = tx.envelope.encode_2718_len();
        if let Some(old_bytes) = replaced_bytes {
            // A replacement takes its predecessor's place; it is refused,
            // keeping the predecessor, when it would not fit, and never
            // evicts others.
            if self.parked_bytes - old_bytes + bytes > self.limits.parked_bytes_max {
                return Err(SubmitError::PoolFull);
            }
            self.unpark(tx.sender, tx.nonce());
        } else if sender_count >= self.limits.parked_per_sender_max {
            return Err(SubmitError::PoolFull);
        }
        let count_short = (self.parked_count + 1).saturating_sub(self.limits.parked_total_max);
        let bytes_short = (self.parked_bytes + bytes).saturating_sub(self.limits.parked_bytes_max);
        if count_short > 0 || bytes_short > 0 {
            // Evict only when evicting makes enough room: never for nothing.
            let (count_free, bytes_free) = self.evictable_for(&tx);
            if count_free < count_short || bytes_free < bytes_short {
                return Err(SubmitError::PoolFull);
            }
        }
        while self.parked_count >= self.limits.parked_total_max
            || self.parked_bytes + bytes > self.limits.parked_bytes_max
        {
            let evicted = self.evict_cheaper_than(&tx);
            debug_assert!(evicted, "the room was counted before evicting");
            if !evicted {
                return Err(SubmitError::PoolFull);
            }
        }
        let parked = Parked {
            bytes,
            at_s: self.open.ctx.timestamp,
            tx,
        };
        self.parked_count += 1;
        self.parked_bytes += parked.bytes;
        self.parked
            .entry(parked.tx.sender)
            .or_default()
            .insert(parked.tx.nonce(), parked);
        debug_assert!(self.parked_count <= self.limits.parked_total_max);
        debug_assert!(self.parked_bytes <= self.limits.parked_bytes_max);
        Ok(())
    }

    /// Removes one parked transaction, keeping the counts.
    fn unpark(&mut self, sender: Address, nonce: u64) -> Option<Parked> {
        let slot = self.parked.get_mut(&sender)?;
        let parked = slot.remove(&nonce)?;
        if slot.is_empty() {
            self.parked.remove(&sender);
        }
        self.parked_count -= 1;
        self.parked_bytes -= parked.bytes;
        Some(parked)
    }

    /// Count and bytes that evicting for `tx` could free: of every other
    /// sender, the run of its highest nonces that pay less than `tx`
    /// (exactly what repeated [`Self::evict_cheaper_than`] takes).
    fn evictable_for(&self, tx: &RecoveredTx) -> (usize, usize) {
        let fee = tx.max_fee_per_gas();
        self.parked
            .iter()
            .filter(|(sender, _)| **sender != tx.sender)
            .flat_map(|(_, slot)| {
                slot.values()
                    .rev()
                    .take_while(move |p| p.tx.max_fee_per_gas() < fee)
            })
            .fold((0, 0), |(count, bytes), p| (count + 1, bytes + p.bytes))
    }

    /// Evicts the last parked transaction (highest nonce, so no gap is
    /// made) of the sender whose last one pays least, oldest first on a
    /// tie, if it pays less than `tx`. False when nothing is cheaper.
    fn evict_cheaper_than(&mut self, tx: &RecoveredTx) -> bool {
        let cheapest = self
            .parked
            .iter()
            .filter(|(sender, _)| **sender != tx.sender)
            .filter_map(|(sender, slot)| slot.last_key_value().map(|(_, p)| (*sender, p)))
            .min_by_key(|(_, p)| (p.tx.max_fee_per_gas(), p.at_s))
            .map(|(sender, p)| (sender, p.tx.nonce(), p.tx.max_fee_per_gas()));
        match cheapest {
            Some((sender, nonce, fee)) if fee < tx.max_fee_per_gas() => {
                tracing::debug!(%sender, nonce, "evicting a cheaper parked transaction");
                self.unpark(sender, nonce);
                true
            }
            _ => false,
        }
    }

    /// Drops parked transactions older than the lifetime, as of the block
    /// timestamp `now_s`.
    fn expire_parked(&mut self, now_s: u64) {
        let lifetime = self.limits.parked_lifetime_s;
        let expired: Vec<(Address, u64)> = self
            .parked
            .iter()
            .flat_map(|(sender, slot)| {
                slot.values()
                    .filter(move |p| p.at_s.saturating_add(lifetime) <= now_s)
                    .map(move |p| (*sender, p.tx.nonce()))
            })
            .collect();
        for (sender, nonce) in expired {
            tracing::debug!(%sender, nonce, "dropping an expired parked transaction");
            self.unpark(sender, nonce);
        }
    }

    /// Executes parked transactions of `sender` that became ready.
    fn promote(&mut self, sender: Address) {
        loop {
            let (nonce, balance) = self.account_nonce_balance(&sender);
            let Some(slot) = self.parked.get(&sender) else {
                return;
            };
            // Stale entries (nonce now used) are dropped.
            let stale: Vec<u64> = slot.range(..nonce).map(|(n, _)| *n).collect();
            for n in stale {
                self.unpark(sender, n);
            }
            let Some(Parked { tx, .. }) = self.unpark(sender, nonce) else {
                return;
            };
            if balance < tx.max_cost() || tx.max_fee_per_gas() < u128::from(self.open.ctx.base_fee)
            {
                tracing::debug!(hash = %tx.hash, "dropping parked transaction that can no longer pay");
                continue;
            }
            match self.execute(tx) {
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(e) => tracing::debug!(error = %e, "parked transaction failed when promoted"),
            }
        }
    }

    /// Retries deferred transactions (called when a block opens or a parent
    /// hash becomes known).
    fn run_deferred(&mut self) {
        // Set again if one of them finds no room in the mini-block.
        self.deferred_for_room = false;
        let mut pending = std::mem::take(&mut self.deferred);
        self.deferred_senders.clear();
        while let Some(tx) = pending.pop_front() {
            let sender = tx.sender;
            let (nonce, _) = self.account_nonce_balance(&sender);
            if tx.nonce() != nonce {
                continue;
            }
            match self.execute(tx) {
                Ok(Some(_)) => self.promote(sender),
                Ok(None) => {
                    // Still blocked (execute() deferred it again): keep the remaining order.
                    for tx in pending.drain(..) {
                        *self.deferred_senders.entry(tx.sender).or_default() += 1;
                        self.deferred.push_back(tx);
                    }
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "deferred transaction failed"),
            }
        }
    }

    /// Closes the open mini-block and publishes a new view. Returns `None`
    /// when it held no transaction.
    pub fn close_mini_block(&mut self) -> Option<ClosedMiniBlock> {
        if self.mini_txs.is_empty() {
            return None;
        }
        self.mini_block += 1;
        let txs = std::mem::take(&mut self.mini_txs);
        self.mini_bytes = 0;
        self.view.close_mini_block(
            self.mini_block,
            self.evm.ctx.journaled_state.database.state.clone(),
        );
        self.refresh_open_view();
        let index = self.open.mini_blocks;
        self.open.mini_blocks += 1;
        Some(ClosedMiniBlock {
            number: self.mini_block,
            block: self.open.ctx.number,
            index,
            txs,
        })
    }

    fn refresh_open_view(&mut self) {
        let open = Arc::new(UnsealedBlock {
            ctx: self.open.ctx,
            txs: self.open.txs.clone(),
            gas_used: self.open.gas_used,
        });
        self.view.set_open(open);
    }

    /// Closes the open block and opens the next one. The returned job goes to
    /// the state-root worker; its answer comes back through [`Self::finish_seal`].
    /// Close the open mini-block first: its waiters belong to the caller.
    pub fn close_block(&mut self, now_ms: u64) -> SealJob {
        self.close_block_with(now_ms, None)
    }

    /// Closes the open block; the next one takes `next` as its context when
    /// given (replay), else one derived from the closed block and the clock.
    fn close_block_with(&mut self, now_ms: u64, next: Option<BlockContext>) -> SealJob {
        assert!(
            self.mini_txs.is_empty(),
            "close the mini-block before the block"
        );
        let parent = self.open.ctx;
        let gas_used = self.open.gas_used;
        let base_fee = calc_next_block_base_fee(
            gas_used,
            parent.gas_limit,
            parent.base_fee,
            self.spec.base_fee_params,
        )
        .max(self.spec.base_fee_floor_wei);
        let ctx = BlockContext {
            number: parent.number + 1,
            timestamp: (now_ms / 1000).max(parent.timestamp + 1),
            base_fee,
            gas_limit: self.spec.block_gas_limit,
            coinbase: self.spec.coinbase,
            prevrandao: next_prevrandao(parent.prevrandao, parent.number + 1),
        };
        let ctx = next.unwrap_or(ctx);
        self.expire_parked(ctx.timestamp);
        let closed = std::mem::replace(&mut self.open, OpenBlock::new(ctx));
        self.evm.ctx.block = crate::evm::block_env(&ctx);
        let txs: Vec<Arc<ExecutedTx>> = closed.txs.iter().cloned().collect();
        self.sealing.push_back(SealJobMeta {
            ctx: closed.ctx,
            txs: txs.clone(),
            gas_used,
            state: self.evm.ctx.journaled_state.database.state.clone(),
        });
        let job = SealJob {
            ctx: closed.ctx,
            txs,
            diffs: closed.diffs,
            gas_used,
        };
        self.refresh_open_view();
        self.run_deferred();
        job
    }

    /// Completes the seal of the oldest closed block with its roots.
    pub fn finish_seal(&mut self, roots: SealRoots) -> Arc<SealedBlock> {
        let meta = self
            .sealing
            .front()
            .expect("roots arrive only for closed blocks");
        assert_eq!(meta.ctx.number, roots.number, "roots arrive in block order");
        let parent_hash = self.view.head().hash;
        let header = build_header(&meta.ctx, parent_hash, meta.gas_used, &roots);
        let size = block_size(&header, roots.txs_rlp_len);
        self.install_seal(header, size)
    }

    /// Makes the oldest closed block a sealed block with `header`.
    fn install_seal(&mut self, header: alloy_consensus::Header, size: u64) -> Arc<SealedBlock> {
        let meta = self
            .sealing
            .pop_front()
            .expect("a seal follows a closed block");
        let number = header.number;
        let hash = header.hash_slow();
        let sealed = Arc::new(SealedBlock {
            header,
            hash,
            txs: meta.txs,
            size,
        });
        let state = (number >= self.history_until).then_some(meta.state);
        self.view.push_sealed(sealed.clone(), state);
        self.evm
            .ctx
            .journaled_state
            .database
            .block_hashes
            .push_back(hash);
        self.run_deferred();
        sealed
    }

    /// The record of the mini-block `closed`, which must be the last one
    /// closed (its transactions' state changes are the open block's last).
    pub fn mini_block_record(&self, closed: &ClosedMiniBlock, out: &mut Vec<u8>) {
        let diffs = self.mini_block_diffs(closed);
        fulmen_chain::persist::encode_mini_block(
            &self.open.ctx,
            closed.number,
            &closed.txs,
            diffs,
            out,
        );
    }

    /// The state changes of each transaction of `closed`, which must be the
    /// last mini-block closed.
    pub fn mini_block_diffs(&self, closed: &ClosedMiniBlock) -> &[StateDiff] {
        assert_eq!(
            closed.block, self.open.ctx.number,
            "the open block's mini-block"
        );
        assert!(closed.txs.len() <= self.open.diffs.len());
        &self.open.diffs[self.open.diffs.len() - closed.txs.len()..]
    }

    /// Replays a logged mini-block. Blocks it implies were closed are
    /// closed, and their seal jobs returned in order.
    pub fn replay_mini_block(
        &mut self,
        record: fulmen_chain::persist::MiniBlockRecord,
    ) -> Result<Vec<SealJob>, ReplayError> {
        let number = record.ctx.number;
        let fail = |detail: String| ReplayError {
            block: number,
            detail,
        };
        if number < self.open.ctx.number {
            return Err(fail(format!(
                "mini-block {} belongs to a block already closed (open block is {})",
                record.number, self.open.ctx.number
            )));
        }
        if number - self.open.ctx.number > REPLAY_BLOCK_GAP_MAX {
            return Err(fail(format!(
                "mini-block {} jumps from block {} to block {number}",
                record.number, self.open.ctx.number
            )));
        }
        let mut jobs = Vec::new();
        while self.open.ctx.number < number {
            let next = (self.open.ctx.number + 1 == number).then_some(record.ctx);
            // Replay passes no clock: a block closed without a record of its
            // successor gets the earliest valid timestamp.
            jobs.push(self.close_block_with(0, next));
        }
        if self.open.txs.is_empty() && self.open.ctx != record.ctx {
            self.adopt_ctx(record.ctx);
        }
        if self.open.ctx != record.ctx {
            return Err(fail(format!(
                "mini-block {} has block context {:?}, the open block has {:?}",
                record.number, record.ctx, self.open.ctx
            )));
        }
        if record.number != self.mini_block + 1 {
            return Err(fail(format!(
                "mini-block {} follows mini-block {}",
                record.number, self.mini_block
            )));
        }
        for tx in record.txs {
            let recovered = fulmen_chain::tx::from_logged(
                tx.envelope,
                tx.sender,
                tx.encoded_len,
                self.spec.tx_rules().spec,
            );
            self.record(
                recovered,
                tx.success,
                tx.gas_used,
                tx.logs,
                tx.contract_address,
                tx.diff,
            );
        }
        self.close_mini_block();
        Ok(jobs)
    }

    /// Replays a logged block seal; closes the block first when the log
    /// holds no record of its successor. Returns the seal jobs of the
    /// blocks it closed.
    pub fn replay_seal(
        &mut self,
        record: fulmen_chain::persist::SealRecord,
    ) -> Result<Vec<SealJob>, ReplayError> {
        let number = record.header.number;
        if number.saturating_sub(self.open.ctx.number) > REPLAY_BLOCK_GAP_MAX {
            return Err(ReplayError {
                block: number,
                detail: format!(
                    "a seal of block {number} while block {} is open",
                    self.open.ctx.number
                ),
            });
        }
        let mut jobs = Vec::new();
        while self.sealing.is_empty() && self.open.ctx.number <= number {
            jobs.push(self.close_block_with(0, None));
        }
        let expected = self.sealing.front().map(|m| m.ctx.number);
        if expected != Some(number) {
            return Err(ReplayError {
                block: number,
                detail: format!("a seal of block {number} where block {expected:?} was next"),
            });
        }
        if record.header.parent_hash != self.view.head().hash {
            return Err(ReplayError {
                block: number,
                detail: format!(
                    "parent hash {} is not the hash of block {} ({})",
                    record.header.parent_hash,
                    number - 1,
                    self.view.head().hash
                ),
            });
        }
        let meta = self.sealing.front().expect("checked above");
        if meta.gas_used != record.header.gas_used
            || meta.ctx.base_fee != record.header.base_fee_per_gas.unwrap_or_default()
        {
            return Err(ReplayError {
                block: number,
                detail: "the sealed header's gas used or base fee differs from its mini-blocks"
                    .into(),
            });
        }
        self.install_seal(record.header, record.size);
        Ok(jobs)
    }

    /// Starts a replay from a checkpoint: `state` is the state after block
    /// `number`; the records of blocks up to it rebuild blocks, receipts and
    /// the transaction index without touching the state (their seal jobs
    /// carry no state changes), and later records apply as usual. States
    /// of blocks before `number` are not kept.
    pub fn start_from_checkpoint(&mut self, number: u64, state: fulmen_storage::HotState) {
        self.evm.ctx.journaled_state.database.state = state.clone();
        self.view.start_from_checkpoint(state);
        self.history_until = number;
    }

    /// Sets the context of the (still empty) open block.
    fn adopt_ctx(&mut self, ctx: BlockContext) {
        debug_assert!(self.open.txs.is_empty());
        self.open.ctx = ctx;
        self.evm.ctx.block = crate::evm::block_env(&ctx);
        self.refresh_open_view();
    }

    /// After replay: an empty open block takes the clock's time, so the
    /// first block sealed after a restart is not stamped in the past.
    pub fn refresh_open_timestamp(&mut self, now_ms: u64) {
        if self.open.txs.is_empty() {
            let mut ctx = self.open.ctx;
            ctx.timestamp = ctx.timestamp.max(now_ms / 1000);
            self.adopt_ctx(ctx);
        }
    }

    /// Seal jobs of blocks closed but not sealed (after replay: the state-root
    /// worker seals them first).
    pub fn unsealed_jobs(&self) -> usize {
        self.sealing.len()
    }
}

fn next_block_ctx(spec: &ChainSpec, parent: &alloy_consensus::Header, now_ms: u64) -> BlockContext {
    BlockContext {
        number: parent.number + 1,
        timestamp: (now_ms / 1000).max(parent.timestamp + 1),
        base_fee: spec.next_base_fee(parent),
        gas_limit: spec.block_gas_limit,
        coinbase: spec.coinbase,
        prevrandao: next_prevrandao(parent.mix_hash, parent.number + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::Merkleizer;
    use crate::testkit::{
        LOG_CALLDATA_CONTRACT, PARENT_HASH_CONTRACT, key, sign, sign_by, spec, tx,
    };
    use alloy_primitives::{Bytes, TxKind};
    use alloy_signer_local::PrivateKeySigner;
    use fulmen_chain::spec::DEV_ACCOUNTS;

    fn sequencer_with(limits: PoolLimits) -> Sequencer {
        let spec = spec(30_000_000);
        let genesis = Genesis::new(&spec);
        Sequencer::new(spec, limits, &genesis, 1_000)
    }

    /// A transaction from dev key `from` that logs `log_bytes` bytes.
    fn logging(spec: &ChainSpec, from: u32, nonce: u64, log_bytes: usize) -> RecoveredTx {
        let input = Bytes::from(vec![0xab; log_bytes]);
        sign(
            spec,
            from,
            nonce,
            TxKind::Call(LOG_CALLDATA_CONTRACT),
            0,
            input,
            1_000_000,
            1,
        )
    }

    #[test]
    fn unfunded_senders_cannot_park_and_cumulative_cost_is_checked() {
        let mut seq = sequencer_with(PoolLimits::default());
        let spec = seq.spec().clone();
        let bob = DEV_ACCOUNTS[1];
        let nobody = PrivateKeySigner::random();
        let gap = sign_by(
            &spec,
            &nobody,
            1,
            TxKind::Call(bob),
            U256::ZERO,
            Bytes::new(),
            21_000,
            1,
        );
        assert!(matches!(
            seq.submit(gap),
            Err(SubmitError::InsufficientFunds { .. })
        ));
        assert_eq!(seq.parked_count(), 0);
        // 10,000 ETH covers one 6,000 ETH transfer parked, not two.
        let eth = U256::from(10u64).pow(U256::from(18u64));
        let big = |nonce| {
            sign_by(
                &spec,
                key(0),
                nonce,
                TxKind::Call(bob),
                eth * U256::from(6_000u64),
                Bytes::new(),
                21_000,
                1,
            )
        };
        seq.submit(big(1)).unwrap();
        assert!(matches!(
            seq.submit(big(2)),
            Err(SubmitError::InsufficientFunds { .. })
        ));
        assert_eq!(seq.parked_count(), 1);
    }

    #[test]
    fn parked_transactions_expire() {
        let limits = PoolLimits {
            parked_lifetime_s: 10,
            ..PoolLimits::default()
        };
        let mut seq = sequencer_with(limits);
        let spec = seq.spec().clone();
        seq.submit(tx(&spec, 0, 3, DEV_ACCOUNTS[1], 1, 21_000, 1))
            .unwrap();
        let parked_at = seq.view().open().ctx.timestamp;
        seq.close_block((parked_at + 5) * 1000);
        assert_eq!(seq.parked_count(), 1);
        seq.close_block((parked_at + 10) * 1000);
        assert_eq!(seq.parked_count(), 0);
        assert_eq!(seq.parked_bytes(), 0);
    }

    #[test]
    fn a_full_lot_evicts_a_cheaper_sender_and_is_bounded_in_bytes() {
        let limits = PoolLimits {
            parked_total_max: 2,
            ..PoolLimits::default()
        };
        let mut seq = sequencer_with(limits);
        let spec = seq.spec().clone();
        let bob = DEV_ACCOUNTS[1];
        seq.submit(tx(&spec, 0, 5, bob, 1, 21_000, 1)).unwrap();
        seq.submit(tx(&spec, 2, 5, bob, 1, 21_000, 1)).unwrap();
        // Same price: no room.
        assert_eq!(
            seq.submit(tx(&spec, 3, 5, bob, 1, 21_000, 1)).unwrap_err(),
            SubmitError::PoolFull
        );
        // A better price evicts one of the cheapest.
        seq.submit(tx(&spec, 3, 5, bob, 1, 21_000, 1_000)).unwrap();
        assert_eq!(seq.parked_count(), 2);
        let one = tx(&spec, 4, 5, bob, 1, 21_000, 1)
            .envelope
            .encode_2718_len();
        let by_bytes = PoolLimits {
            parked_bytes_max: 2 * one + one / 2,
            ..PoolLimits::default()
        };
        let mut seq = sequencer_with(by_bytes);
        seq.submit(tx(&spec, 0, 5, bob, 1, 21_000, 1)).unwrap();
        seq.submit(tx(&spec, 2, 5, bob, 1, 21_000, 1)).unwrap();
        assert_eq!(
            seq.submit(tx(&spec, 3, 5, bob, 1, 21_000, 1)).unwrap_err(),
            SubmitError::PoolFull
        );
        assert!(seq.parked_bytes() <= by_bytes.parked_bytes_max);
    }

    #[test]
    fn a_replacement_that_does_not_fit_keeps_its_predecessor() {
        let seq = sequencer_with(PoolLimits::default());
        let spec = seq.spec().clone();
        let bob = DEV_ACCOUNTS[1];
        let first = tx(&spec, 0, 5, bob, 1, 21_000, 1);
        let room = first.envelope.encode_2718_len() + 100;
        let limits = PoolLimits {
            parked_bytes_max: room,
            ..PoolLimits::default()
        };
        let mut seq = sequencer_with(limits);
        seq.submit(first.clone()).unwrap();
        // Same nonce, a better price, but 1 KB of calldata: no room.
        let bigger = sign(
            &spec,
            0,
            5,
            TxKind::Call(bob),
            1,
            Bytes::from(vec![1u8; 1_000]),
            100_000,
            300_000_000,
        );
        assert_eq!(seq.submit(bigger).unwrap_err(), SubmitError::PoolFull);
        assert_eq!(seq.parked_count(), 1);
        assert!(seq.is_parked(&first));
    }

    #[test]
    fn eviction_never_happens_for_nothing() {
        let mut seq = sequencer_with(PoolLimits::default());
        let spec = seq.spec().clone();
        let bob = DEV_ACCOUNTS[1];
        let small = tx(&spec, 0, 5, bob, 1, 21_000, 1);
        let limits = PoolLimits {
            parked_bytes_max: small.envelope.encode_2718_len() * 2,
            ..PoolLimits::default()
        };
        seq = sequencer_with(limits);
        seq.submit(small).unwrap();
        // Better paid but larger than the whole lot: evicting the cheap one
        // would not make room, so it stays.
        let huge = sign(
            &spec,
            2,
            5,
            TxKind::Call(bob),
            1,
            Bytes::from(vec![1u8; 2_000]),
            200_000,
            1_000_000_000,
        );
        assert_eq!(seq.submit(huge).unwrap_err(), SubmitError::PoolFull);
        assert_eq!(seq.parked_count(), 1);
    }

    #[test]
    fn the_replacement_bump_saturates() {
        assert_eq!(bumped(100), 110);
        assert_eq!(bumped(1_005), 1_105);
        assert_eq!(bumped(u128::MAX), u128::MAX);
        assert_eq!(bumped(u128::MAX / 100 * 95), u128::MAX);
    }

    #[test]
    fn a_transaction_over_the_record_bound_is_refused_with_nothing_applied() {
        let limits = PoolLimits {
            tx_record_bytes_max: 6_000,
            ..PoolLimits::default()
        };
        let mut seq = sequencer_with(limits);
        let spec = seq.spec().clone();
        let err = seq.submit(logging(&spec, 0, 0, 4_000)).unwrap_err();
        assert!(
            matches!(err, SubmitError::RecordTooLarge { limit: 6_000, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("limit 6000 bytes per transaction"));
        assert_eq!(seq.account_nonce_balance(&DEV_ACCOUNTS[0]).0, 0);
        assert!(!seq.mini_block_has_txs());
        // Half the log fits, and the nonce moves on.
        assert!(matches!(
            seq.submit(logging(&spec, 0, 0, 2_000)).unwrap(),
            Admission::Executed(_)
        ));
    }

    #[test]
    fn mini_block_records_stay_within_their_bound() {
        let limits = PoolLimits {
            tx_record_bytes_max: 8_000,
            mini_block_bytes_max: 20_000,
            ..PoolLimits::default()
        };
        let mut seq = sequencer_with(limits);
        let spec = seq.spec().clone();
        // Parked successors run in one burst when their gap fills: more than
        // one mini-block's worth, so some wait for the next mini-block.
        for nonce in 1..8 {
            seq.submit(logging(&spec, 0, nonce, 3_000)).unwrap();
        }
        seq.submit(logging(&spec, 0, 0, 3_000)).unwrap();
        assert!(seq.mini_block_full());
        let mut ran = 0;
        while seq.mini_block_has_txs() {
            let closed = seq.close_mini_block().unwrap();
            let mut record = Vec::new();
            seq.mini_block_record(&closed, &mut record);
            assert!(
                record.len() <= limits.mini_block_bytes_max,
                "{}",
                record.len()
            );
            let entries: usize = closed
                .txs
                .iter()
                .zip(seq.mini_block_diffs(&closed))
                .map(|(t, d)| {
                    fulmen_chain::persist::tx_entry_bytes(
                        t.tx.envelope.encode_2718_len(),
                        &t.logs,
                        t.contract_address.is_some(),
                        d,
                    )
                })
                .sum();
            assert_eq!(
                record.len(),
                fulmen_chain::persist::MINI_BLOCK_HEADER_BYTES + entries
            );
            ran += closed.txs.len();
            seq.run_deferred_for_room();
        }
        assert_eq!(ran, 8);
        assert_eq!(seq.account_nonce_balance(&DEV_ACCOUNTS[0]).0, 8);

        // A block closing right after a mini-block closed for room runs the
        // waiting transactions in the new block (the seq core's timer does
        // exactly this, and must not find a mini-block open in between).
        let mut seq = sequencer_with(limits);
        for nonce in 1..8 {
            seq.submit(logging(&spec, 0, nonce, 3_000)).unwrap();
        }
        seq.submit(logging(&spec, 0, 0, 3_000)).unwrap();
        assert!(seq.mini_block_full());
        seq.close_mini_block().unwrap();
        let opened = seq.view().open().ctx.timestamp;
        seq.close_block((opened + 1) * 1000);
        assert!(seq.mini_block_has_txs());
        let mut ran = 0;
        while seq.mini_block_has_txs() {
            ran += seq.close_mini_block().unwrap().txs.len();
            seq.run_deferred_for_room();
        }
        assert_eq!(seq.account_nonce_balance(&DEV_ACCOUNTS[0]).0, 8);
        assert!(ran >= 5, "{ran}");
    }

    fn sequencer(gas_limit: u64) -> (Sequencer, Merkleizer) {
        let spec = spec(gas_limit);
        let genesis = Genesis::new(&spec);
        let merkle = Merkleizer::new(genesis.trie.clone(), 0);
        (
            Sequencer::new(spec, PoolLimits::default(), &genesis, 1_000),
            merkle,
        )
    }

    fn seal(seq: &mut Sequencer, merkle: &mut Merkleizer, now_ms: u64) -> Arc<SealedBlock> {
        // Waiters of the open mini-block belong to the runtime; tests just close it.
        seq.close_mini_block();
        let job = seq.close_block(now_ms);
        let roots = merkle.seal(&job);
        seq.finish_seal(roots)
    }

    #[test]
    fn executes_transfers_burns_base_fee_and_pays_the_tip() {
        let (mut seq, _) = sequencer(30_000_000);
        let bob = DEV_ACCOUNTS[1];
        let coinbase = seq.spec().coinbase;
        let base_fee = seq.view().open().ctx.base_fee;
        let tip = 5;
        let Admission::Executed(done) = seq
            .submit(tx(seq.spec(), 0, 0, bob, 1_000, 21_000, tip))
            .unwrap()
        else {
            panic!("should execute")
        };
        assert!(done.success);
        assert_eq!(done.gas_used, 21_000);
        assert!(seq.close_mini_block().is_some());
        let state = &seq.view().state();
        let alice = state.account(&DEV_ACCOUNTS[0]).unwrap();
        assert_eq!(alice.nonce, 1);
        let paid = U256::from(21_000u64) * U256::from(u128::from(base_fee) + tip);
        assert_eq!(
            alice.balance,
            U256::from(fulmen_chain::spec::DEV_BALANCE_WEI) - paid - U256::from(1_000)
        );
        assert_eq!(
            state.account(&bob).unwrap().balance,
            U256::from(fulmen_chain::spec::DEV_BALANCE_WEI + 1_000)
        );
        assert_eq!(
            state.account(&coinbase).unwrap().balance,
            U256::from(21_000u64 * tip as u64)
        );
    }

    #[test]
    fn parks_future_nonces_and_promotes_them_in_order() {
        let (mut seq, _) = sequencer(30_000_000);
        let bob = DEV_ACCOUNTS[1];
        let spec = seq.spec().clone();
        assert!(matches!(
            seq.submit(tx(&spec, 0, 2, bob, 1, 21_000, 1)).unwrap(),
            Admission::Parked(ParkReason::NonceGap { expected: 0 })
        ));
        assert!(matches!(
            seq.submit(tx(&spec, 0, 1, bob, 1, 21_000, 1)).unwrap(),
            Admission::Parked(_)
        ));
        assert_eq!(seq.parked_count(), 2);
        // Same nonce without a 10% bump is refused; with it, replaced.
        assert_eq!(
            seq.submit(tx(&spec, 0, 1, bob, 2, 21_000, 1)).unwrap_err(),
            SubmitError::ReplacementUnderpriced
        );
        assert!(matches!(
            seq.submit(tx(&spec, 0, 1, bob, 2, 21_000, 1_000_000_000))
                .unwrap(),
            Admission::Parked(_)
        ));
        assert_eq!(seq.parked_count(), 2);
        assert!(matches!(
            seq.submit(tx(&spec, 0, 0, bob, 1, 21_000, 1)).unwrap(),
            Admission::Executed(_)
        ));
        assert_eq!(seq.parked_count(), 0);
        let closed = seq.close_mini_block().unwrap();
        assert_eq!(
            closed.txs.len(),
            3,
            "gap filled: all three ran in nonce order"
        );
        assert_eq!(
            closed.txs.iter().map(|t| t.tx.nonce()).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(
            seq.view().state().account(&bob).unwrap().balance,
            U256::from(fulmen_chain::spec::DEV_BALANCE_WEI + 4)
        );
        // Replays and stale nonces.
        let replay = closed.txs[0].tx.clone();
        assert_eq!(seq.submit(replay).unwrap_err(), SubmitError::AlreadyKnown);
        assert!(matches!(
            seq.submit(tx(&spec, 0, 1, bob, 9, 21_000, 7)).unwrap_err(),
            SubmitError::NonceTooLow {
                expected: 3,
                got: 1
            }
        ));
    }

    #[test]
    fn parking_is_bounded() {
        let spec = spec(30_000_000);
        let genesis = Genesis::new(&spec);
        let limits = PoolLimits {
            parked_per_sender_max: 2,
            parked_total_max: 3,
            deferred_max: 8,
            ..PoolLimits::default()
        };
        let mut seq = Sequencer::new(spec.clone(), limits, &genesis, 1_000);
        let bob = DEV_ACCOUNTS[1];
        seq.submit(tx(&spec, 0, 5, bob, 1, 21_000, 1)).unwrap();
        seq.submit(tx(&spec, 0, 6, bob, 1, 21_000, 1)).unwrap();
        assert_eq!(
            seq.submit(tx(&spec, 0, 7, bob, 1, 21_000, 1)).unwrap_err(),
            SubmitError::PoolFull
        );
        seq.submit(tx(&spec, 2, 5, bob, 1, 21_000, 1)).unwrap();
        assert_eq!(
            seq.submit(tx(&spec, 3, 5, bob, 1, 21_000, 1)).unwrap_err(),
            SubmitError::PoolFull
        );
        assert_eq!(seq.parked_count(), 3);
    }

    #[test]
    fn a_full_block_defers_to_the_next_one() {
        let (mut seq, mut merkle) = sequencer(50_000);
        let spec = seq.spec().clone();
        let bob = DEV_ACCOUNTS[1];
        assert!(matches!(
            seq.submit(tx(&spec, 0, 0, bob, 1, 21_000, 1)).unwrap(),
            Admission::Executed(_)
        ));
        assert!(matches!(
            seq.submit(tx(&spec, 2, 0, bob, 1, 21_000, 1)).unwrap(),
            Admission::Executed(_)
        ));
        let third = tx(&spec, 3, 0, bob, 1, 21_000, 1);
        let hash = third.hash;
        assert!(matches!(
            seq.submit(third).unwrap(),
            Admission::Parked(ParkReason::Deferred)
        ));
        // The same sender's next nonce waits behind it rather than jumping it.
        assert!(matches!(
            seq.submit(tx(&spec, 3, 1, bob, 1, 21_000, 1)).unwrap(),
            Admission::Parked(_)
        ));
        let block = seal(&mut seq, &mut merkle, 2_000);
        assert_eq!(block.txs.len(), 2);
        let mini = seq
            .close_mini_block()
            .expect("deferred txs ran in the new block");
        assert_eq!(mini.txs[0].tx.hash, hash);
        assert_eq!(mini.txs.len(), 2);
        assert_eq!(mini.block, block.header.number + 1);
    }

    #[test]
    fn blockhash_of_a_parent_being_sealed_defers_until_the_seal() {
        let (mut seq, mut merkle) = sequencer(30_000_000);
        let spec = seq.spec().clone();
        let block1 = seal(&mut seq, &mut merkle, 2_000);
        // Block 2 is open: its parent (1) is sealed, so BLOCKHASH works now.
        let call = tx(&spec, 0, 0, PARENT_HASH_CONTRACT, 0, 100_000, 1);
        assert!(matches!(seq.submit(call).unwrap(), Admission::Executed(_)));
        seq.close_mini_block();
        assert_eq!(
            seq.view()
                .state()
                .storage(&PARENT_HASH_CONTRACT, &U256::ZERO),
            U256::from_be_bytes(block1.hash.0)
        );
        // Close block 2 but do not deliver its roots yet: block 3's parent hash is unknown.
        let job = seq.close_block(3_000);
        let call = tx(&spec, 0, 1, PARENT_HASH_CONTRACT, 0, 100_000, 1);
        assert!(matches!(
            seq.submit(call).unwrap(),
            Admission::Parked(ParkReason::Deferred)
        ));
        let block2 = seq.finish_seal(merkle.seal(&job));
        let mini = seq
            .close_mini_block()
            .expect("ran once the parent was sealed");
        assert_eq!(mini.block, 3);
        assert_eq!(
            seq.view()
                .state()
                .storage(&PARENT_HASH_CONTRACT, &U256::ZERO),
            U256::from_be_bytes(block2.hash.0)
        );
    }

    #[test]
    fn sealed_state_roots_match_a_full_rebuild_and_headers_chain() {
        let (mut seq, mut merkle) = sequencer(30_000_000);
        let spec = seq.spec().clone();
        let mut nonce = [0u64; 10];
        for round in 0..4u64 {
            for from in 0..6u32 {
                let to = Address::with_last_byte((round * 10 + u64::from(from)) as u8 + 1);
                let t = tx(&spec, from, nonce[from as usize], to, round + 1, 21_000, 1);
                nonce[from as usize] += 1;
                assert!(matches!(seq.submit(t).unwrap(), Admission::Executed(_)));
            }
            seq.close_mini_block();
            let block = seal(&mut seq, &mut merkle, 2_000 + round * 1_000);
            let rebuilt =
                StateTrie::from_state(seq.view().state_at(block.header.number).unwrap()).root();
            assert_eq!(
                block.header.state_root, rebuilt,
                "block {}",
                block.header.number
            );
            let parent = seq.view().block(block.header.number - 1).unwrap();
            assert_eq!(block.header.parent_hash, parent.hash);
            assert_eq!(block.hash, block.header.hash_slow());
            assert_eq!(block.header.gas_used, 6 * 21_000);
        }
        // Empty blocks seal too, and the base fee falls toward the floor.
        let before = seq.view().head().header.base_fee_per_gas.unwrap();
        let empty = seal(&mut seq, &mut merkle, 9_000);
        assert!(empty.txs.is_empty());
        assert!(seq.view().open().ctx.base_fee < before);
    }
}
