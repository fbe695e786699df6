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
use alloy_primitives::Address;
use fulmen_storage::StateDiff;

use crate::evm::{Evm, ExecError, StateDb, build_evm, state_diff, transact, tx_env};
use fulmen_chain::block::BlockContext;
use fulmen_chain::block::{
    ExecutedTx, SealJob, SealRoots, SealedBlock, TxLocation, UnsealedBlock, block_size,
    build_header, next_prevrandao,
};
use fulmen_chain::msg::{Admission, ParkReason, SubmitError};
use fulmen_chain::spec::ChainSpec;
use fulmen_chain::tx::RecoveredTx;
use fulmen_chain::view::ChainView;

mod pool;
mod replay;
mod replica;
mod types;

pub use types::{
    ClosedMiniBlock, Genesis, PoolLimits, REPLACE_BUMP_PERCENT, ReplayError, SequencerParts,
};
use types::{OpenBlock, Parked, SealJobMeta};

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
    /// The last closed mini-block's hash.
    mini_block_hash: alloy_primitives::B256,
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
    /// Replay: the system calls' changes made at the last seal record, by
    /// block number, for its seal job (see `install_seal`).
    system_patch: Option<(u64, Vec<StateDiff>)>,
    /// Blocks opened from now on record what they access (execution
    /// witnesses, `rpc.witness_blocks`).
    record_accesses: bool,
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
            mini_block_hash,
            state,
            block_hashes,
        } = parts;
        // A transaction of the largest size always fits an empty mini-block.
        let (limits, _) = limits.fitted_to_log(limits.mini_block_bytes_max);
        let evm = build_evm(
            StateDb::new(state, block_hashes),
            spec.evm_chain(),
            &open.ctx,
        );
        let mut seq = Self {
            spec,
            limits,
            evm,
            open,
            mini_txs: Vec::new(),
            mini_block,
            mini_block_hash,
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
            system_patch: None,
            record_accesses: false,
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
            mini_block_hash: self.mini_block_hash,
            state: db.state,
            block_hashes: db.block_hashes,
        }
    }

    /// The largest mini-block record, in bytes (what the log takes).
    pub fn record_bytes_max(&self) -> usize {
        self.limits.mini_block_bytes_max
    }

    /// The chain spec.
    pub fn spec(&self) -> &ChainSpec {
        &self.spec
    }

    /// Blocks older than the memory window are read from `history` (see
    /// `ChainView::attach_history`).
    pub fn attach_history(&mut self, history: fulmen_chain::history::History) {
        self.view.attach_history(history);
    }

    /// The view as of the last closed mini-block.
    pub fn view(&self) -> &ChainView {
        &self.view
    }

    /// Records the L2 heads L1 vouches for (the DA batcher's report),
    /// capped at the sealed head: a report never runs ahead of this chain.
    pub fn set_da_heads(&mut self, heads: fulmen_chain::view::DaHeads) {
        let head = self.view.head().header.number;
        let safe = heads.safe.min(head);
        self.view.set_da_heads(fulmen_chain::view::DaHeads {
            safe,
            finalized: heads.finalized.min(safe),
        });
    }

    /// Transactions in the open mini-block.
    pub fn mini_txs_len(&self) -> usize {
        self.mini_txs.len()
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
        self.make_system_calls();
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
        self.note_accesses(&changes);
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
        assert!(
            outcome.gas_used <= tx.gas_limit(),
            "a transaction uses at most its gas limit"
        );
        self.mini_bytes += entry_bytes;
        let (sender, nonce) = (tx.sender, tx.nonce());
        let executed = self.record(
            tx,
            outcome.success,
            outcome.gas_used,
            outcome.logs,
            outcome.contract_address,
            diff,
        );
        // Nonce order: the sender's nonce moved past this transaction's (by
        // more than one only when it also signed an EIP-7702 authorization).
        let (next_nonce, _) = self.account_nonce_balance(&sender);
        assert!(
            next_nonce > nonce,
            "a transaction advances its sender's nonce"
        );
        assert!(
            self.open.gas_used <= self.open.ctx.gas_limit,
            "a block's gas stays within its limit"
        );
        assert_eq!(executed.cumulative_gas_used, self.open.gas_used);
        Ok(Some(executed))
    }

    /// Records what each block accesses from the next one on (the open
    /// block too when nothing ran in it yet), for execution witnesses.
    pub fn record_accesses(&mut self, on: bool) {
        self.record_accesses = on;
        if on && self.open.txs.is_empty() && self.open.system.is_none() {
            self.open.accessed = Some(Default::default());
        }
    }

    /// Adds what a transaction's run loaded to the open block's accesses.
    fn note_accesses(&mut self, changes: &revm::state::EvmState) {
        let Some(accessed) = &mut self.open.accessed else {
            return;
        };
        for (address, account) in changes {
            let slots = accessed.accounts.entry(*address).or_default();
            slots.extend(
                account
                    .storage
                    .keys()
                    .map(|slot| alloy_primitives::B256::from(*slot)),
            );
            if let Some(code) = &account.info.code
                && account.info.code_hash != revm::primitives::KECCAK_EMPTY
            {
                accessed
                    .codes
                    .entry(account.info.code_hash)
                    .or_insert_with(|| code.original_bytes());
            }
        }
    }

    /// Makes the open block's system calls (EIP-4788, EIP-2935:
    /// [`crate::evm::system_calls`]) unless made, and applies their changes
    /// to the working state. EIP-2935's needs the parent's hash: while the
    /// parent is being sealed they wait, reads of the system contracts'
    /// storage defer the transaction as BLOCKHASH of that parent does, and
    /// the parent's seal makes them. No transaction of the block observes
    /// the contracts' storage before they are made, so the block's state
    /// is as if they ran first. Replay makes them at the same points (the
    /// log holds the transactions' changes, not these). Returns whether
    /// they are made.
    fn make_system_calls(&mut self) -> bool {
        if self.open.system.is_some() {
            return true;
        }
        let number = self.open.ctx.number;
        if number <= self.history_until {
            // A checkpoint's image holds this block's changes, these too.
            self.open.system = Some(Vec::new());
            return true;
        }
        let db = &mut self.evm.ctx.journaled_state.database;
        let parent_hash = match db.block_hashes.get(number - 1) {
            Some(hash) => hash,
            None if !Self::needs_parent_hash(db) => alloy_primitives::B256::ZERO,
            None => {
                db.system_pending = Some(number);
                return false;
            }
        };
        let diffs =
            crate::evm::system_calls(db, self.spec.evm_chain(), &self.open.ctx, parent_hash);
        for diff in &diffs {
            db.state.apply(diff);
        }
        db.system_pending = None;
        if let Some(accessed) = &mut self.open.accessed {
            diffs.iter().for_each(|diff| accessed.add_diff(diff));
        }
        self.open.system = Some(diffs);
        true
    }

    /// The system calls of a block replay closed empty with a guessed
    /// context, made now with `ctx` over the working state (which holds
    /// no other write to their contracts' storage since: the calls of
    /// different blocks write different slots) and `state`, the block's
    /// own. Returns their changes, which its seal job lacks.
    fn deferred_system_calls(
        &mut self,
        ctx: &BlockContext,
        state: &mut fulmen_storage::HotState,
    ) -> Vec<StateDiff> {
        let parent_hash = self.view.head().hash;
        let db = &mut self.evm.ctx.journaled_state.database;
        let diffs = crate::evm::system_calls(db, self.spec.evm_chain(), ctx, parent_hash);
        for diff in &diffs {
            db.state.apply(diff);
            state.apply(diff);
        }
        if self.mini_txs.is_empty() {
            self.view.close_block_state(db.state.clone());
        }
        diffs
    }

    /// Replay: the system calls' changes of the block just sealed from its
    /// record, when they were made at the seal (its seal job lacks them
    /// and goes first).
    pub fn take_system_patch(&mut self, number: u64) -> Option<Vec<StateDiff>> {
        match self.system_patch.take() {
            Some((at, diffs)) if at == number => Some(diffs),
            other => {
                self.system_patch = other;
                None
            }
        }
    }

    /// End of replay: the closed block still waiting for its seal, if
    /// replay closed it empty with a guessed context, makes its system
    /// calls with that context (no record says otherwise, so it is its
    /// context now); returns their changes for its seal job.
    pub fn finish_replayed_system_calls(&mut self) -> Option<(u64, Vec<StateDiff>)> {
        let mut meta = self.sealing.pop_front()?;
        let patch = meta.system_at_seal.then(|| {
            meta.system_at_seal = false;
            let ctx = meta.ctx;
            (
                ctx.number,
                self.deferred_system_calls(&ctx, &mut meta.state),
            )
        });
        self.sealing.push_front(meta);
        patch
    }

    /// True when EIP-2935's contract has code, so that the block's system
    /// calls need the parent's hash.
    fn needs_parent_hash(db: &StateDb) -> bool {
        db.state
            .account(&alloy_eips::eip2935::HISTORY_STORAGE_ADDRESS)
            .is_some_and(|a| a.has_code())
    }

    /// True when the open block may close: its system calls are made or
    /// can be (its parent is sealed, or they do not need its hash).
    pub fn can_close_block(&self) -> bool {
        let db = &self.evm.ctx.journaled_state.database;
        self.open.system.is_some()
            || self.open.ctx.number <= self.history_until
            || db.block_hashes.get(self.open.ctx.number - 1).is_some()
            || !Self::needs_parent_hash(db)
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

    /// Closes the open mini-block at close time 0 (tests, tools).
    pub fn close_mini_block(&mut self) -> Option<ClosedMiniBlock> {
        self.close_mini_block_at(0)
    }

    /// Closes the open mini-block at `timestamp_us` (µs since the Unix
    /// epoch) and publishes a new view. Returns `None` when it held no
    /// transaction.
    pub fn close_mini_block_at(&mut self, timestamp_us: u64) -> Option<ClosedMiniBlock> {
        if self.mini_txs.is_empty() {
            return None;
        }
        self.mini_block += 1;
        let txs = std::mem::take(&mut self.mini_txs);
        let parent_hash = self.mini_block_hash;
        self.mini_block_hash = fulmen_chain::events::mini_block_hash(
            &parent_hash,
            self.mini_block,
            self.open.ctx.number,
            timestamp_us,
            txs.iter().map(|tx| &tx.tx.hash),
        );
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
            timestamp_us,
            parent_hash,
            hash: self.mini_block_hash,
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
        let made_now = self.open.system.is_none();
        // Replay: an empty block whose context is a guess makes its system
        // calls at its seal record (`install_seal`), with the true one.
        // (Blocks a checkpoint holds make none: `make_system_calls`.)
        let system_at_seal = made_now
            && !self.open.ctx_exact
            && self.open.txs.is_empty()
            && self.open.ctx.number > self.history_until;
        assert!(
            system_at_seal || self.make_system_calls(),
            "a block closes once its parent is sealed (see can_close_block)"
        );
        if made_now && !system_at_seal {
            // No mini-block publishes these changes: the view takes them.
            self.view
                .close_block_state(self.evm.ctx.journaled_state.database.state.clone());
        }
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
        let mut closed = std::mem::replace(&mut self.open, OpenBlock::new(ctx));
        let hash_read = self
            .evm
            .ctx
            .journaled_state
            .database
            .oldest_hash_read
            .take();
        if let Some(accessed) = &mut closed.accessed {
            accessed.oldest_hash_read = hash_read;
        }
        if self.record_accesses {
            self.open.accessed = Some(Default::default());
        }
        self.evm.ctx.block = crate::evm::block_env(&ctx);
        crate::evm::set_spec(&mut self.evm, self.spec.evm_chain().spec_at(ctx.timestamp));
        let txs: Vec<Arc<ExecutedTx>> = closed.txs.iter().cloned().collect();
        assert_eq!(
            txs.iter().map(|tx| tx.gas_used).sum::<u64>(),
            gas_used,
            "a block's gas is the sum of its transactions'"
        );
        assert!(
            txs.iter().enumerate().all(|(i, tx)| tx.index == i as u64),
            "transactions are indexed in block order"
        );
        self.sealing.push_back(SealJobMeta {
            ctx: closed.ctx,
            txs: txs.clone(),
            gas_used,
            state: self.evm.ctx.journaled_state.database.state.clone(),
            system_at_seal,
        });
        // The system calls' changes go first: they ran (or are as if they
        // ran) before the transactions, and touch only their contracts.
        let mut diffs = closed.system.unwrap_or_default();
        diffs.extend(closed.diffs);
        let job = SealJob {
            ctx: closed.ctx,
            txs,
            diffs,
            gas_used,
            accessed: closed.accessed.map(Box::new),
            trie_export: None,
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
        let mut meta = self
            .sealing
            .pop_front()
            .expect("a seal follows a closed block");
        if meta.system_at_seal {
            let ctx = BlockContext::of_header(&header);
            let diffs = self.deferred_system_calls(&ctx, &mut meta.state);
            self.system_patch = Some((header.number, diffs));
        }
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
            .push(hash);
        if self.evm.ctx.journaled_state.database.system_pending == Some(self.open.ctx.number) {
            self.make_system_calls();
        }
        self.run_deferred();
        sealed
    }

    /// The record of the mini-block `closed`, which must be the last one
    /// closed (its transactions' state changes are the open block's last),
    /// with its net changes `net`.
    pub fn mini_block_record(
        &self,
        closed: &ClosedMiniBlock,
        net: &fulmen_chain::events::NetChanges,
        out: &mut Vec<u8>,
    ) {
        let diffs = self.mini_block_diffs(closed);
        let meta = fulmen_chain::persist::MiniBlockMeta {
            number: closed.number,
            timestamp_us: closed.timestamp_us,
            parent: closed.parent_hash,
            net,
        };
        fulmen_chain::persist::encode_mini_block(&self.open.ctx, meta, &closed.txs, diffs, out);
    }

    /// Sets the last mini-block's hash (boot, when replay read the last
    /// mini-block's record without replaying it).
    pub fn set_mini_block_hash(&mut self, hash: alloy_primitives::B256) {
        self.mini_block_hash = hash;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::StateTrie;
    use crate::seal::Merkleizer;
    use crate::testkit::{LOG_CALLDATA_CONTRACT, PARENT_HASH_CONTRACT, sign, spec, tx};
    use alloy_primitives::{Bytes, TxKind, U256};
    use fulmen_chain::spec::DEV_ACCOUNTS;

    pub(super) fn sequencer_with(limits: PoolLimits) -> Sequencer {
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
            seq.mini_block_record(&closed, &Default::default(), &mut record);
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
            // The bound holds every record (addresses and numbers at their
            // longest).
            assert!(record.len() <= fulmen_chain::persist::MINI_BLOCK_HEADER_BYTES + entries);
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
    fn da_heads_never_run_ahead_of_the_sealed_chain() {
        let mut seq = sequencer_with(PoolLimits::default());
        assert_eq!((seq.view().safe(), seq.view().finalized()), (0, 0));
        seq.set_da_heads(fulmen_chain::view::DaHeads {
            safe: 5,
            finalized: 9,
        });
        assert_eq!((seq.view().safe(), seq.view().finalized()), (0, 0));
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
    fn system_calls_record_the_parent_hash_and_reads_of_it_wait_for_the_seal() {
        let (mut seq, mut merkle) = sequencer(30_000_000);
        let spec = seq.spec().clone();
        let history = alloy_eips::eip2935::HISTORY_STORAGE_ADDRESS;
        let beacon = alloy_eips::eip4788::BEACON_ROOTS_ADDRESS;
        // EIP-2935's `get`: the hash of the block numbered by the calldata.
        let read = |nonce: u64, number: u64| {
            let input = Bytes::from(U256::from(number).to_be_bytes::<32>().to_vec());
            sign(&spec, 0, nonce, TxKind::Call(history), 0, input, 100_000, 1)
        };
        let block1 = seal(&mut seq, &mut merkle, 2_000);
        let Admission::Executed(done) = seq.submit(read(0, 1)).unwrap() else {
            panic!("block 2's parent is sealed: the read runs")
        };
        assert!(done.success);
        seq.close_mini_block();
        let timestamp = seq.view().open().ctx.timestamp;
        let state = seq.view().state().clone();
        assert_eq!(
            state.storage(&history, &U256::from(1)),
            U256::from_be_bytes(block1.hash.0)
        );
        assert_eq!(
            state.storage(&beacon, &U256::from(timestamp % 8191)),
            U256::from(timestamp)
        );
        // Block 2 closes, its roots not delivered: block 3's system calls
        // and a read of the history wait; a transfer does not.
        let job = seq.close_block(3_000);
        assert!(!seq.can_close_block());
        assert!(matches!(
            seq.submit(read(1, 2)).unwrap(),
            Admission::Parked(ParkReason::Deferred)
        ));
        let transfer = tx(&spec, 1, 0, DEV_ACCOUNTS[2], 1, 21_000, 1);
        assert!(matches!(
            seq.submit(transfer).unwrap(),
            Admission::Executed(_)
        ));
        let block2 = seq.finish_seal(merkle.seal(&job));
        assert!(seq.can_close_block());
        let mini = seq.close_mini_block().expect("the read ran after the seal");
        assert_eq!(mini.txs.len(), 2);
        assert!(mini.txs[1].success);
        assert_eq!(
            seq.view().state().storage(&history, &U256::from(2)),
            U256::from_be_bytes(block2.hash.0)
        );
        // The seal job carries the system calls' changes.
        let block3 = seal(&mut seq, &mut merkle, 4_000);
        let rebuilt = StateTrie::from_state(seq.view().state_at(3).unwrap()).root();
        assert_eq!(block3.header.state_root, rebuilt);
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
