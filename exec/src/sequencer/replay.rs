//! Boot replay: the log's mini-block and seal records rebuild the chain on
//! a sequencer, from genesis or from a checkpoint's state.

use fulmen_chain::block::{BlockContext, SealJob};

use super::Sequencer;
use super::types::ReplayError;

/// Most blocks one log record may close at replay. Every block gets a seal
/// record, and blocks wait for their seal only behind the bounded seal queue,
/// so a valid log never jumps further; a damaged or forged one could
/// otherwise make boot close blocks without end.
const REPLAY_BLOCK_GAP_MAX: u64 = 1024;

impl Sequencer {
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
            if !self.can_close_block() {
                return Err(fail(format!(
                    "block {} closes before its parent's seal is logged",
                    self.open.ctx.number
                )));
            }
            let next = (self.open.ctx.number + 1 == number).then_some(record.ctx);
            // Replay passes no clock: a block closed without a record of its
            // successor gets the earliest valid timestamp, until its seal
            // record gives the true one.
            jobs.push(self.close_block_with(0, next));
            self.open.ctx_exact = next.is_some();
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
        if !record.txs.is_empty() {
            // As the first transaction's execution did.
            self.make_system_calls();
        }
        // The chain of mini-block hashes goes on from what the record
        // names (zero in records of older builds).
        self.mini_block_hash = record.parent;
        let timestamp_us = record.timestamp_us;
        for tx in record.txs {
            self.record_logged(tx);
        }
        self.close_mini_block_at(timestamp_us);
        Ok(jobs)
    }

    /// Applies a logged transaction (its receipt and state changes) to the
    /// open block, as replay and a replica do.
    pub(super) fn record_logged(&mut self, tx: fulmen_chain::persist::LoggedTx) {
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
            // Nothing is being sealed: the open block's parent is sealed.
            jobs.push(self.close_block_with(0, None));
            self.open.ctx_exact = false;
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

    /// Starts a replay: the open block's context is the constructor's
    /// guess until a record gives the true one, so if the log holds only
    /// its seal (an idle first block) its system calls wait for that seal,
    /// as every later block's do.
    pub fn begin_replay(&mut self) {
        self.open.ctx_exact = false;
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
    pub(super) fn adopt_ctx(&mut self, ctx: BlockContext) {
        debug_assert!(self.open.txs.is_empty());
        self.open.ctx = ctx;
        self.open.ctx_exact = true;
        self.evm.ctx.block = crate::evm::block_env(&ctx);
        crate::evm::set_spec(&mut self.evm, self.spec.evm_chain().spec_at(ctx.timestamp));
        self.refresh_open_view();
    }

    /// The open block's number.
    pub fn open_number(&self) -> u64 {
        self.open.ctx.number
    }

    /// The open block's timestamp, seconds.
    pub fn open_timestamp(&self) -> u64 {
        self.open.ctx.timestamp
    }

    /// Hashes of the open block's transactions so far.
    pub fn open_tx_hashes(&self) -> Vec<alloy_primitives::B256> {
        self.open.txs.iter().map(|tx| tx.tx.hash).collect()
    }

    /// True when every executed transaction is in a sealed block: no block
    /// awaits its seal and the open block ran nothing.
    pub fn all_sealed(&self) -> bool {
        self.open.ctx.number == self.view().head().header.number + 1
            && self.open.txs.is_empty()
            && !self.mini_block_has_txs()
    }

    /// A verifier: the (still empty) open block takes a derived block's
    /// timestamp. (A wrong one gives another block hash, which the next
    /// span's parent check catches.)
    pub fn set_open_timestamp(&mut self, timestamp: u64) -> Result<(), String> {
        if !self.open.txs.is_empty() {
            return Err(format!(
                "block {} already has transactions: its timestamp is fixed",
                self.open.ctx.number
            ));
        }
        let mut ctx = self.open.ctx;
        ctx.timestamp = timestamp;
        self.adopt_ctx(ctx);
        Ok(())
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
}
