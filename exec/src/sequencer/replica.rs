//! A replica's sequencer: it executes nothing. Each mini-block comes from
//! the upstream's record and is applied from its logged state changes (as
//! boot replay applies the node's own log); blocks close where the
//! upstream's records say, with the upstream's context, and seal through
//! the state-root worker like the sequencer's own, so the header this node
//! computes can be compared with the upstream's.

use alloy_primitives::B256;
use fulmen_chain::block::{BlockContext, SealJob};
use fulmen_chain::persist::MiniBlockRecord;

use super::Sequencer;

impl Sequencer {
    /// The open block's context.
    pub fn open_ctx(&self) -> BlockContext {
        self.open.ctx
    }

    /// Whether the open block has run no transaction (its context is then
    /// only a guess until the upstream names it).
    pub fn open_is_empty(&self) -> bool {
        self.open.txs.is_empty() && self.mini_txs.is_empty()
    }

    /// The newest mini-block of the sealed blocks: a replica resumes its
    /// upstream's stream after it (every later record belongs to blocks it
    /// has not sealed).
    pub fn last_sealed_mini_block(&self) -> u64 {
        let unsealed = self
            .sealing
            .iter()
            .flat_map(|meta| meta.txs.first())
            .chain(self.open.txs.front())
            .map(|tx| tx.mini_block)
            .min();
        match unsealed {
            Some(first) => first - 1,
            None => self.mini_block,
        }
    }

    /// Blocks closed and not yet sealed.
    pub fn unsealed_blocks(&self) -> usize {
        self.sealing.len()
    }

    /// The hash of the newest mini-block.
    pub fn mini_block_hash(&self) -> B256 {
        self.mini_block_hash
    }

    /// Gives the (empty) open block the upstream's context `ctx`.
    pub fn take_upstream_ctx(&mut self, ctx: BlockContext) -> Result<(), String> {
        if self.open.ctx == ctx {
            self.open.ctx_exact = true;
            return Ok(());
        }
        if !self.open_is_empty() || self.open.system.is_some() {
            return Err(format!(
                "block {} already ran with context {:?}; the upstream says {ctx:?}",
                self.open.ctx.number, self.open.ctx
            ));
        }
        if ctx.number != self.open.ctx.number {
            return Err(format!(
                "the upstream's block {} where block {} is open",
                ctx.number, self.open.ctx.number
            ));
        }
        self.adopt_ctx(ctx);
        Ok(())
    }

    /// Applies the upstream's mini-block `record` to the open block (its
    /// transactions with their logged receipts and state changes), without
    /// closing it. It must be the next mini-block, chained to the last one,
    /// of the open block.
    pub fn apply_upstream(&mut self, record: MiniBlockRecord) -> Result<(), String> {
        if record.number != self.mini_block + 1 {
            return Err(format!(
                "mini-block {} arrived where {} is next",
                record.number,
                self.mini_block + 1
            ));
        }
        if record.parent != self.mini_block_hash {
            return Err(format!(
                "mini-block {} names parent {}, but mini-block {} here is {}",
                record.number, record.parent, self.mini_block, self.mini_block_hash
            ));
        }
        if record.txs.is_empty() {
            return Err(format!("mini-block {} has no transaction", record.number));
        }
        // A block's gas stays within its limit (and so within u64).
        let gas = record
            .txs
            .iter()
            .try_fold(self.open.gas_used, |sum, tx| sum.checked_add(tx.gas_used))
            .filter(|&gas| gas <= record.ctx.gas_limit);
        if gas.is_none() {
            return Err(format!(
                "mini-block {} takes its block past its gas limit {}",
                record.number, record.ctx.gas_limit
            ));
        }
        if self.open_is_empty() {
            self.take_upstream_ctx(record.ctx)?;
        } else if record.ctx != self.open.ctx {
            return Err(format!(
                "mini-block {} has block context {:?}, the open block has {:?}",
                record.number, record.ctx, self.open.ctx
            ));
        }
        // As the first transaction's execution did.
        self.make_system_calls();
        for tx in record.txs {
            self.record_logged(tx);
        }
        Ok(())
    }

    /// Closes the open block, whose context must be the upstream's (a
    /// mini-block of it, or its seal, named it) and whose parent is sealed
    /// ([`Self::can_close_block`]); the next block takes `next` when the
    /// upstream named it, else a guess that the upstream replaces before
    /// that block closes.
    pub fn close_upstream_block(&mut self, next: Option<BlockContext>) -> SealJob {
        let job = self.close_block_with(0, next);
        self.open.ctx_exact = next.is_some();
        job
    }
}
