//! `debug_traceTransaction`, `debug_traceCall`, `debug_traceBlockByNumber`
//! and `debug_traceBlockByHash`, in geth's shapes, run on the simulation
//! workers under the same deadline and gas budget as `eth_call`
//! (`fulmen_exec::trace` re-executes with revm-inspectors' tracers).
//!
//! A transaction is traced by re-executing its block from the state before
//! it: that state is kept for the 128 most recent sealed blocks, so older
//! blocks are refused by name. A preconfirmed transaction of the open block
//! is traced over its parent, the last sealed block.

use std::sync::Arc;

use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::B256;
use alloy_rpc_types_eth::TransactionRequest;
use alloy_rpc_types_trace::geth::{
    GethDebugTracingCallOptions, GethDebugTracingOptions, TraceResult,
};
use fulmen_chain::HotState;
use fulmen_chain::block::{BlockContext, ExecutedTx, RECENT_STATES_MAX};
use fulmen_chain::view::ChainView;
use fulmen_exec::evm::{StateDb, before_block_txs, block_env, cfg_env, tx_env};
use serde_json::Value;

use super::call::{self, Sim, SimJob};
use super::context::RpcContext;
use super::reply::{check_not_pruned, ok};
use super::state::{block_by_tag, block_context, state_at};
use crate::rpc::{Params, RpcError};
use crate::sim::BatchBudget;

/// A block to re-execute: the state before it, its context and its
/// transactions.
struct BlockInputs {
    parent: HotState,
    ctx: BlockContext,
    txs: Vec<Arc<ExecutedTx>>,
}

/// The inputs of block `number`: a sealed one whose parent's state is
/// kept, or the open block over the last sealed one.
fn block_inputs(
    (view, unsealed): (&ChainView, bool),
    number: u64,
) -> Result<BlockInputs, RpcError> {
    check_not_pruned(view, number)?;
    let head = view.head().header.number;
    if number > head && !unsealed {
        // A verifier's unsealed block is an unchecked derivation.
        return Err(RpcError::server(format!(
            "block {number} is not sealed yet"
        )));
    }
    let (ctx, txs) = if number <= head {
        let block = view
            .block(number)
            .ok_or_else(|| RpcError::server(format!("block {number} not found")))?;
        (block_context(&block.header), block.txs.clone())
    } else {
        let block = view
            .unsealed()
            .next()
            .filter(|b| b.ctx.number == number)
            .ok_or_else(|| {
                RpcError::server(format!(
                    "block {number} is waiting for its parent's seal; trace it once that is sealed (milliseconds)"
                ))
            })?;
        (block.ctx, block.txs.iter().cloned().collect())
    };
    let parent_number = number
        .checked_sub(1)
        .ok_or_else(|| RpcError::server("genesis has no transactions to trace".to_string()))?;
    let parent = view.state_at(parent_number).cloned().ok_or_else(|| {
        RpcError::server(format!(
            "historical state not available: tracing block {number} needs the state after block \
             {parent_number}, older than the {RECENT_STATES_MAX} most recent blocks this node keeps"
        ))
    })?;
    Ok(BlockInputs { parent, ctx, txs })
}

/// The first (only) trace of `results`, as `debug_traceTransaction` and
/// `debug_traceCall` answer it.
fn only(results: Vec<TraceResult>) -> Result<Value, RpcError> {
    match results.into_iter().next() {
        Some(TraceResult::Success { result, .. }) => ok(result),
        Some(TraceResult::Error { error, .. }) => Err(RpcError::server(error)),
        None => Err(RpcError::internal("no trace")),
    }
}

/// Traces `inputs`' transactions from `from` on (`from` alone when
/// `one`), those before it executed untraced.
fn block_job(
    inputs: BlockInputs,
    (from, one): (usize, bool),
    (opts, bytes_max): (GethDebugTracingOptions, usize),
) -> SimJob {
    Box::new(move |sim: &mut Sim| {
        let chain = sim.chain();
        let db = StateDb::new(inputs.parent, sim.view().block_hashes().clone());
        let db = before_block_txs(db, chain, &inputs.ctx);
        let env = (cfg_env(chain, inputs.ctx.timestamp), block_env(&inputs.ctx));
        let before: Vec<_> = inputs.txs[..from].iter().map(|t| tx_env(&t.tx)).collect();
        let end = if one { from + 1 } else { inputs.txs.len() };
        let traced: Vec<_> = inputs.txs[from..end]
            .iter()
            .map(|t| (Some(t.tx.hash), tx_env(&t.tx)))
            .collect();
        let results = sim.trace(db, env, (&before, &traced), (&opts, bytes_max))?;
        if one { only(results) } else { ok(results) }
    })
}

/// `debug_traceTransaction(hash, options)`.
pub(crate) async fn transaction(
    ctx: &RpcContext,
    batch: Option<&BatchBudget>,
    view: Arc<ChainView>,
    params: &Params,
) -> Result<Value, RpcError> {
    params.at_most(2)?;
    let hash: B256 = params.required(0, "hash")?;
    let opts: GethDebugTracingOptions = params.optional(1, "options")?.unwrap_or_default();
    let (tx, _) = view
        .tx(&hash)
        .ok_or_else(|| RpcError::server(format!("transaction {hash} not found")))?;
    let inputs = block_inputs((&view, !ctx.verifier), tx.block_number)?;
    let index = usize::try_from(tx.index).unwrap_or(usize::MAX);
    if inputs.txs.get(index).map(|t| t.tx.hash) != Some(hash) {
        return Err(RpcError::server(format!(
            "transaction {hash} not found in its block"
        )));
    }
    let job = block_job(inputs, (index, true), (opts, ctx.limits.response_bytes_max));
    call::off_core(ctx, batch, view, job).await
}

/// `debug_traceBlockByNumber(block, options)` and
/// `debug_traceBlockByHash(hash, options)`: every transaction's trace,
/// `[{txHash, result}]`.
pub(crate) async fn block(
    ctx: &RpcContext,
    batch: Option<&BatchBudget>,
    view: Arc<ChainView>,
    (params, by_hash): (&Params, bool),
) -> Result<Value, RpcError> {
    params.at_most(2)?;
    let number = if by_hash {
        let hash: B256 = params.required(0, "hash")?;
        view.number_of(&hash)
            .ok_or_else(|| RpcError::server(format!("block {hash} not found")))?
    } else {
        let tag: BlockNumberOrTag = params.required(0, "block")?;
        match tag {
            BlockNumberOrTag::Pending if !ctx.verifier => view.open().ctx.number,
            tag => {
                block_by_tag(&view, tag)?
                    .ok_or_else(|| RpcError::server("block not found"))?
                    .header
                    .number
            }
        }
    };
    let opts: GethDebugTracingOptions = params.optional(1, "options")?.unwrap_or_default();
    let inputs = block_inputs((&view, !ctx.verifier), number)?;
    let job = block_job(inputs, (0, false), (opts, ctx.limits.response_bytes_max));
    call::off_core(ctx, batch, view, job).await
}

/// `debug_traceCall(call, block, options)`: the call as `eth_call` runs it
/// (with the options' `stateOverrides`), traced.
pub(crate) async fn call(
    ctx: &RpcContext,
    batch: Option<&BatchBudget>,
    view: Arc<ChainView>,
    params: &Params,
) -> Result<Value, RpcError> {
    params.at_most(3)?;
    let request: TransactionRequest = params.required(0, "transaction")?;
    let block: Option<BlockId> = params.optional(1, "block")?;
    let opts: GethDebugTracingCallOptions = params.optional(2, "options")?.unwrap_or_default();
    let request = call::call_request(&ctx.limits, request)?;
    let overrides = call::overrides(opts.state_overrides);
    let tracing = opts.tracing_options;
    let block_overrides = opts.block_overrides;
    let bytes_max = ctx.limits.response_bytes_max;
    let job: SimJob = Box::new(move |sim: &mut Sim| {
        let (state, block_ctx) = state_at(sim.view(), block)?;
        let block_ctx = match &block_overrides {
            Some(o) => call::with_block_overrides(block_ctx, o)?,
            None => block_ctx,
        };
        let mut db = StateDb::new(state, sim.view().block_hashes().clone());
        db.apply_overrides(&overrides);
        let (cfg, env, tx) =
            fulmen_exec::simulate::call_env(&db, sim.chain(), &block_ctx, &request);
        only(sim.trace(db, (cfg, env), (&[], &[(None, tx)]), (&tracing, bytes_max))?)
    });
    call::off_core(ctx, batch, view, job).await
}
