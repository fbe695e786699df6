//! `eth_simulateV1` (viem's `simulateCalls`, wallet previews): calls run in
//! a chain of simulated blocks on top of a block's state, each block with
//! its own overrides, in geth's shapes and with geth's limits and error
//! codes.
//!
//! Each simulated block starts with the block's system calls, then its
//! state overrides, then its calls, each committed before the next. Its
//! header is built as a sealed block's, but its `stateRoot` is zero:
//! computing it would rebuild the whole state trie on a simulation worker.
//! Its hash is that header's, so `parentHash` links the simulated blocks and
//! BLOCKHASH in a later simulated block reads it.

use std::collections::HashMap;
use std::sync::Arc;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::BlockId;
use alloy_eips::eip1559::{BaseFeeParams, calc_next_block_base_fee};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Signature, U256};
use alloy_rpc_types_eth::simulate::{
    MAX_SIMULATE_BLOCKS, SimCallResult, SimulateError, SimulatePayload,
};
use alloy_rpc_types_eth::{BlockOverrides, TransactionRequest};
use fulmen_chain::block::{
    BLOCKHASH_WINDOW, BlockContext, BlockHashes, ExecutedTx, SealRoots, SealedBlock, block_size,
    build_header, next_prevrandao,
};
use fulmen_chain::tx::RecoveredTx;
use fulmen_exec::simulate::{
    self, AccountOverride, CallRequest, ExecError, Outcome, SimError, StateDb,
};
use revm::context::TxEnv;
use serde_json::Value;

use super::{Sim, SimJob, call_request, overrides, revert_error};
use crate::convert;
use crate::eth::state::state_at;
use crate::limits::RpcLimits;
use crate::rpc::{Params, RpcError};

/// geth's `eth_simulateV1` error codes.
mod code {
    pub(super) const NONCE_TOO_LOW: i64 = -38010;
    pub(super) const NONCE_TOO_HIGH: i64 = -38011;
    pub(super) const BASE_FEE_TOO_LOW: i64 = -38012;
    pub(super) const INTRINSIC_GAS: i64 = -38013;
    pub(super) const INSUFFICIENT_FUNDS: i64 = -38014;
    pub(super) const BLOCK_GAS_LIMIT_REACHED: i64 = -38015;
    pub(super) const BLOCK_NUMBER_ORDER: i64 = -38020;
    pub(super) const TIMESTAMP_ORDER: i64 = -38021;
    pub(super) const SENDER_NOT_EOA: i64 = -38024;
    pub(super) const TOO_MANY_BLOCKS: i64 = -38026;
    pub(super) const VM_ERROR: i64 = -32015;
}

/// Seconds between simulated blocks when no `time` override says: this
/// chain's block time.
const BLOCK_TIME_S: u64 = 1;

/// The base-fee rule of the chain, for simulated blocks under validation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FeeRule {
    /// EIP-1559 parameters.
    pub(crate) params: BaseFeeParams,
    /// The chain's floor.
    pub(crate) floor: u64,
}

/// One requested block: its overrides and calls (each with whether its
/// gas was given).
struct Planned {
    block: BlockOverrides,
    state: HashMap<Address, AccountOverride>,
    calls: Vec<(CallRequest, bool)>,
}

/// What the request asks besides the blocks.
#[derive(Debug, Clone, Copy)]
struct Options {
    validate: bool,
    full: bool,
    transfers: bool,
    fees: FeeRule,
}

/// The previous (simulated or base) block.
#[derive(Debug, Clone, Copy)]
struct Parent {
    ctx: BlockContext,
    hash: B256,
    gas_used: u64,
}

fn error(code: i64, message: impl Into<String>) -> RpcError {
    RpcError {
        code,
        message: message.into(),
        data: None,
    }
}

/// `eth_simulateV1(payload, block)`.
pub(crate) fn simulate_v1(
    limits: &RpcLimits,
    fees: FeeRule,
    params: &Params,
) -> Result<SimJob, RpcError> {
    params.at_most(2)?;
    let payload: SimulatePayload<TransactionRequest> = params.required(0, "payload")?;
    let block: Option<BlockId> = params.optional(1, "block")?;
    if payload.block_state_calls.len() as u64 > MAX_SIMULATE_BLOCKS {
        return Err(too_many_blocks());
    }
    let mut planned = Vec::with_capacity(payload.block_state_calls.len());
    for sim_block in payload.block_state_calls {
        let overrides_of_block = sim_block.block_overrides.unwrap_or_default();
        if overrides_of_block.block_hash.is_some() {
            return Err(RpcError::invalid_params(
                "blockOverrides.blockHash is not supported",
            ));
        }
        let calls = sim_block
            .calls
            .into_iter()
            .map(|request| {
                let given = request.gas.is_some();
                Ok((call_request(limits, request)?, given))
            })
            .collect::<Result<Vec<_>, RpcError>>()?;
        planned.push(Planned {
            block: overrides_of_block,
            state: overrides(sim_block.state_overrides),
            calls,
        });
    }
    let options = Options {
        validate: payload.validation,
        full: payload.return_full_transactions,
        transfers: payload.trace_transfers,
        fees,
    };
    Ok(Box::new(move |sim| {
        sim.simulate_blocks(planned, block, options)
    }))
}

fn too_many_blocks() -> RpcError {
    error(
        code::TOO_MANY_BLOCKS,
        format!("too many blocks: at most {MAX_SIMULATE_BLOCKS}"),
    )
}

/// The code geth gives a call refused before it ran.
fn invalid_call_code(message: &str) -> i64 {
    if message.starts_with("nonce too low") {
        code::NONCE_TOO_LOW
    } else if message.starts_with("nonce too high") {
        code::NONCE_TOO_HIGH
    } else if message.contains("base fee") {
        code::BASE_FEE_TOO_LOW
    } else if message.starts_with("intrinsic gas too low") {
        code::INTRINSIC_GAS
    } else if message.starts_with("insufficient funds") {
        code::INSUFFICIENT_FUNDS
    } else if message.starts_with("sender not an eoa") {
        code::SENDER_NOT_EOA
    } else {
        -32000
    }
}

impl Sim {
    /// Runs the planned blocks over the state of `base`.
    fn simulate_blocks(
        &mut self,
        planned: Vec<Planned>,
        base: Option<BlockId>,
        options: Options,
    ) -> Result<Value, RpcError> {
        let (state, ctx) = state_at(&self.view, base)?;
        let open = self.view.open();
        let gas_used = if ctx.number == open.ctx.number {
            open.gas_used
        } else {
            self.view
                .header(ctx.number)
                .map_or(0, |(header, _)| header.gas_used)
        };
        // The BLOCKHASH window ends at the base block, so that the simulated
        // blocks' hashes follow it (the open block has none yet: zero).
        let kept = self.view.block_hashes();
        let first = ctx.number.saturating_sub(BLOCKHASH_WINDOW - 1);
        let hashes = BlockHashes::new(
            first,
            (first..=ctx.number).map(|n| kept.get(n).unwrap_or_default()),
        );
        let hash = hashes.get(ctx.number).unwrap_or_default();
        let mut db = StateDb::new(state, hashes);
        let mut parent = Parent {
            ctx,
            hash,
            gas_used,
        };
        let mut out = Vec::new();
        for block in planned {
            let number = match block.block.number {
                Some(n) => u64::try_from(n)
                    .map_err(|_| RpcError::invalid_params("block number too large"))?,
                None => parent.ctx.number + 1,
            };
            if number <= parent.ctx.number {
                return Err(error(
                    code::BLOCK_NUMBER_ORDER,
                    format!(
                        "block numbers must be in order: {number} <= {}",
                        parent.ctx.number
                    ),
                ));
            }
            if out.len() as u64 + (number - parent.ctx.number) > MAX_SIMULATE_BLOCKS {
                return Err(too_many_blocks());
            }
            // Numbers skipped are filled with empty blocks, as geth does.
            while parent.ctx.number + 1 < number {
                let empty = Planned {
                    block: BlockOverrides::default(),
                    state: HashMap::new(),
                    calls: Vec::new(),
                };
                let (value, next) = self.simulate_block(&mut db, parent, empty, options)?;
                out.push(value);
                parent = next;
            }
            let (value, next) = self.simulate_block(&mut db, parent, block, options)?;
            out.push(value);
            parent = next;
        }
        Ok(Value::Array(out))
    }

    /// The context of the block after `parent` with `block`'s overrides.
    fn next_context(
        parent: &Parent,
        block: &BlockOverrides,
        options: Options,
    ) -> Result<BlockContext, RpcError> {
        let number = parent.ctx.number + 1;
        let timestamp = match block.time {
            Some(time) if time <= parent.ctx.timestamp => {
                return Err(error(
                    code::TIMESTAMP_ORDER,
                    format!(
                        "block timestamps must be in order: {time} <= {}",
                        parent.ctx.timestamp
                    ),
                ));
            }
            Some(time) => time,
            None => parent.ctx.timestamp.saturating_add(BLOCK_TIME_S),
        };
        let base_fee = match block.base_fee {
            Some(fee) => u64::try_from(fee)
                .map_err(|_| RpcError::invalid_params("baseFeePerGas too large"))?,
            None if options.validate => calc_next_block_base_fee(
                parent.gas_used,
                parent.ctx.gas_limit,
                parent.ctx.base_fee,
                options.fees.params,
            )
            .max(options.fees.floor),
            // As geth: without validation, calls pay no base fee.
            None => 0,
        };
        Ok(BlockContext {
            number,
            timestamp,
            base_fee,
            gas_limit: block.gas_limit.unwrap_or(parent.ctx.gas_limit),
            coinbase: block.coinbase.unwrap_or(parent.ctx.coinbase),
            prevrandao: block
                .random
                .unwrap_or_else(|| next_prevrandao(parent.ctx.prevrandao, number)),
        })
    }

    /// Simulates one block after `parent`; returns its answer and itself
    /// as the next parent.
    fn simulate_block(
        &mut self,
        db: &mut StateDb,
        parent: Parent,
        block: Planned,
        options: Options,
    ) -> Result<(Value, Parent), RpcError> {
        let ctx = Self::next_context(&parent, &block.block, options)?;
        db.apply_overrides(&block.state);
        let beacon_root = block.block.beacon_root.unwrap_or_default();
        for diff in
            simulate::system_calls_with_root(db, self.chain, &ctx, (parent.hash, beacon_root))
        {
            db.state.apply(&diff);
        }
        let mut txs: Vec<Arc<ExecutedTx>> = Vec::with_capacity(block.calls.len());
        let mut results = Vec::with_capacity(block.calls.len());
        let mut gas_used = 0u64;
        let mut log_count = 0u64;
        for (mut call, given) in block.calls {
            let left = ctx.gas_limit.saturating_sub(gas_used);
            match call.gas {
                Some(gas) if given && gas > left => {
                    return Err(error(
                        code::BLOCK_GAS_LIMIT_REACHED,
                        format!("block gas limit reached: {gas} > {left}"),
                    ));
                }
                Some(gas) if !given => call.gas = Some(gas.min(left)),
                _ => {}
            }
            let (outcome, tx) = self.run_committed(db, &ctx, &call, options)?;
            gas_used += outcome.gas_used;
            let executed = executed_tx(
                (&ctx, self.chain.chain_id),
                &tx,
                &outcome,
                (txs.len() as u64, gas_used, log_count),
            );
            log_count += executed.logs.len() as u64;
            txs.push(Arc::new(executed));
            results.push(outcome);
        }
        let sealed = seal(&ctx, (parent.hash, beacon_root), gas_used, txs);
        let mut value = serde_json::to_value(convert::block(&sealed, options.full))
            .map_err(|e| RpcError::internal(e.to_string()))?;
        let calls: Vec<SimCallResult> = sealed
            .txs
            .iter()
            .zip(results)
            .map(|(tx, outcome)| call_result(tx, &outcome, sealed.hash))
            .collect();
        value["calls"] =
            serde_json::to_value(calls).map_err(|e| RpcError::internal(e.to_string()))?;
        db.block_hashes.push(sealed.hash);
        let next = Parent {
            ctx,
            hash: sealed.hash,
            gas_used,
        };
        Ok((value, next))
    }

    /// One call, committed to `db`, within the request's budget.
    fn run_committed(
        &mut self,
        db: &mut StateDb,
        ctx: &BlockContext,
        call: &CallRequest,
        options: Options,
    ) -> Result<(Outcome, TxEnv), RpcError> {
        self.meter.check_gas()?;
        let flags = (options.validate, options.transfers);
        match simulate::simulate_commit(db, (self.chain, ctx), call, flags, self.meter.deadline()) {
            Ok((outcome, tx)) => {
                self.meter.charge(outcome.gas_used);
                Ok((outcome, tx))
            }
            Err(SimError::DeadlinePassed) => Err(self.meter.timeout_error()),
            Err(SimError::Exec(ExecError::Db(e))) => Err(RpcError::server(e.to_string())),
            Err(SimError::Exec(ExecError::Invalid(message))) => {
                Err(error(invalid_call_code(&message), message))
            }
        }
    }
}

/// A simulated call as a block's transaction: an EIP-1559 transaction with
/// the call's fields and an empty signature (its hash is that
/// transaction's, as geth's is).
fn executed_tx(
    (ctx, chain_id): (&BlockContext, u64),
    tx: &TxEnv,
    outcome: &Outcome,
    (index, cumulative_gas_used, first_log_index): (u64, u64, u64),
) -> ExecutedTx {
    let signed = TxEip1559 {
        chain_id,
        nonce: tx.nonce,
        gas_limit: tx.gas_limit,
        max_fee_per_gas: tx.gas_price,
        max_priority_fee_per_gas: tx.gas_priority_fee.unwrap_or(tx.gas_price),
        to: tx.kind,
        value: tx.value,
        access_list: tx.access_list.clone(),
        input: tx.data.clone(),
    }
    .into_signed(Signature::new(U256::ZERO, U256::ZERO, false));
    let envelope = TxEnvelope::from(signed);
    let recovered = RecoveredTx {
        hash: *envelope.tx_hash(),
        encoded_len: envelope.encode_2718_len(),
        envelope,
        sender: tx.caller,
        authorizations: Vec::new(),
        intrinsic_gas: 0,
    };
    ExecutedTx {
        effective_gas_price: recovered.effective_gas_price(ctx.base_fee),
        tx: recovered,
        success: outcome.success,
        gas_used: outcome.gas_used,
        cumulative_gas_used,
        first_log_index,
        logs: outcome.logs.clone(),
        contract_address: outcome.contract_address,
        block_number: ctx.number,
        block_timestamp: ctx.timestamp,
        index,
        mini_block: 0,
    }
}

/// The simulated block with its transactions, header (with the parent
/// beacon root its EIP-4788 call stored) and hash.
fn seal(
    ctx: &BlockContext,
    (parent_hash, beacon_root): (B256, B256),
    gas_used: u64,
    txs: Vec<Arc<ExecutedTx>>,
) -> SealedBlock {
    let envelopes: Vec<&TxEnvelope> = txs.iter().map(|t| &t.tx.envelope).collect();
    let receipts: Vec<_> = txs.iter().map(|t| t.receipt_envelope()).collect();
    let mut logs_bloom = alloy_primitives::Bloom::default();
    for receipt in &receipts {
        logs_bloom.accrue_bloom(receipt.logs_bloom());
    }
    let roots = SealRoots {
        number: ctx.number,
        state_root: B256::ZERO,
        transactions_root: alloy_consensus::proofs::calculate_transaction_root(&envelopes),
        receipts_root: alloy_consensus::proofs::calculate_receipt_root(&receipts),
        logs_bloom,
        txs_rlp_len: envelopes
            .iter()
            .map(|e| alloy_rlp::Encodable::length(*e))
            .sum(),
    };
    let mut header = build_header(ctx, parent_hash, gas_used, &roots);
    header.parent_beacon_block_root = Some(beacon_root);
    let size = block_size(&header, roots.txs_rlp_len);
    SealedBlock {
        hash: header.hash_slow(),
        header,
        txs,
        size,
    }
}

/// A call's result in geth's shape: its return data, logs, gas and
/// status, and for a failed call its error (code 3 with the revert data
/// for a revert, -32015 for a halt).
fn call_result(tx: &ExecutedTx, outcome: &Outcome, block_hash: B256) -> SimCallResult {
    let error = (!outcome.success).then(|| {
        let failed = revert_error(outcome);
        let reverted = outcome.halt.is_none();
        SimulateError {
            code: if reverted { 3 } else { code::VM_ERROR as i32 },
            message: failed.message,
            data: reverted.then(|| outcome.output.clone()),
        }
    });
    SimCallResult {
        return_data: outcome.output.clone(),
        logs: convert::logs(tx, Some(block_hash)),
        gas_used: outcome.gas_used,
        max_used_gas: None,
        status: outcome.success,
        error,
    }
}
