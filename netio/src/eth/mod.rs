//! The `eth_`, `net_` and `web3_` methods. Reads use the last published
//! chain view on this core; writes go to the sequencer over a bounded inbox.
//!
//! [`dispatch`] routes a method to its module: `state` (state and
//! blocks), `send` (raw transactions), `call` (call, estimate, access list
//! on the simulation workers), `proof`, `fees`, `logs`, `filters`, `raw`
//! (the `debug_getRaw*` encodings) and `txpool`. They share only
//! [`RpcContext`] and the block-tag resolution in `state`; none of them
//! knows about WebSocket connections or subscriptions.

mod accounts;
mod call;
mod context;
mod dev;
pub mod fees;
pub mod filters;
pub mod forward;
pub(crate) mod logs;
mod proof;
mod raw;
mod reply;
mod send;
mod state;
#[cfg(test)]
mod testkit;
mod trace;
mod txpool;

use alloy_primitives::{Address, Bytes, U64, U256};
use fulmen_chain::view::ChainView;
use serde_json::Value;

pub use self::accounts::DevAccounts;
pub use self::context::RpcContext;
use self::reply::ok;
pub use self::send::{SYNC_NOT_READY_CODE, SYNC_TIMEOUT_CODE};
pub use crate::limits::RpcLimits;
use crate::rpc::{Params, RpcError};
use crate::sim::BatchBudget;

/// Dispatches one call.
pub async fn dispatch(ctx: &RpcContext, method: &str, params: &Params) -> Result<Value, RpcError> {
    dispatch_in_batch(ctx, method, params, None).await
}

/// Dispatches one call of a batch: its simulations also draw on `batch`.
pub async fn dispatch_in_batch(
    ctx: &RpcContext,
    method: &str,
    params: &Params,
    batch: Option<&BatchBudget>,
) -> Result<Value, RpcError> {
    let view = ctx.view.load_full();
    let v = &view;
    let bytes_max = ctx.limits.response_bytes_max;
    if let Some(answer) = dev::dev_method(ctx.dev.as_deref(), method, params)
        .or_else(|| node_method(ctx, v, method, params))
        .or_else(|| state::account_or_tx_method((v, !ctx.verifier), method, params))
        .or_else(|| state::block_method((v, !ctx.verifier), bytes_max, method, params))
        .or_else(|| raw::raw_method(v, bytes_max, method, params))
        .or_else(|| txpool::txpool_method(v, bytes_max, method, params))
        .or_else(|| ctx.filters.method(&ctx.limits, v, method, params))
    {
        return answer;
    }
    let limits = &ctx.limits;
    match method {
        "eth_feeHistory" => {
            fees::fee_history((limits.fee_history_blocks_max, &ctx.fee_tips), v, params)
        }
        "eth_getProof" => proof::get_proof(ctx, v, params).await,
        "eth_getLogs" => logs::get_logs(limits, v, params),
        "eth_call" => {
            let job = call::call(limits, params)?;
            call::off_core(ctx, batch, view, job).await
        }
        "eth_estimateGas" => {
            let job = call::estimate_gas(limits, ctx.spec.tx_gas_limit_max, params)?;
            call::off_core(ctx, batch, view, job).await
        }
        "eth_simulateV1" => {
            let fees = call::FeeRule {
                params: ctx.spec.base_fee_params,
                floor: ctx.spec.base_fee_floor_wei,
            };
            let job = call::simulate_v1(limits, fees, params)?;
            call::off_core(ctx, batch, view, job).await
        }
        "eth_createAccessList" => {
            let job = call::create_access_list(limits, params)?;
            call::off_core(ctx, batch, view, job).await
        }
        "eth_sendRawTransaction" => send::send_raw(ctx, params).await,
        "eth_sendTransaction" => dev::transaction(ctx, batch, view, (params, true)).await,
        "debug_traceTransaction" => trace::transaction(ctx, batch, view, params).await,
        "debug_traceCall" => trace::call(ctx, batch, view, params).await,
        "debug_executionWitness" => proof::execution_witness(ctx, v, params).await,
        "debug_traceBlockByNumber" => trace::block(ctx, batch, view, (params, false)).await,
        "debug_traceBlockByHash" => trace::block(ctx, batch, view, (params, true)).await,
        "eth_signTransaction" => dev::transaction(ctx, batch, view, (params, false)).await,
        // MegaETH's name for the same call, so its clients work unchanged.
        "eth_sendRawTransactionSync" | "realtime_sendRawTransaction" => {
            send::send_sync(ctx, params).await
        }
        "eth_subscribe" | "eth_unsubscribe" => Err(RpcError {
            code: -32601,
            message: "notifications not supported: eth_subscribe needs a WebSocket connection \
                      (ws://, same port)"
                .into(),
            data: None,
        }),
        _ => Err(RpcError::method_not_found(method)),
    }
}

/// The methods that describe the node rather than the chain's contents
/// (`web3_`, `net_`, chain id, head number, gas price, ...); `None` for any
/// other method.
fn node_method(
    ctx: &RpcContext,
    view: &ChainView,
    method: &str,
    params: &Params,
) -> Option<Result<Value, RpcError>> {
    let answer = match method {
        "web3_clientVersion" => ok(&ctx.client_version),
        "web3_sha3" => params
            .required(0, "data")
            .and_then(|data: Bytes| ok(alloy_primitives::keccak256(&data))),
        "net_version" => ok(ctx.spec.chain_id.to_string()),
        "eth_chainId" => ok(U64::from(ctx.spec.chain_id)),
        "eth_blockNumber" => ok(U64::from(view.head().header.number)),
        "eth_gasPrice" => ok(U256::from(view.open().ctx.base_fee)),
        _ => return constant_method(method),
    };
    Some(answer)
}

/// The methods whose answer never changes on this node (no peers, no
/// mining, no local accounts); `None` for any other method.
fn constant_method(method: &str) -> Option<Result<Value, RpcError>> {
    let answer = match method {
        "net_listening" => ok(true),
        "net_peerCount" | "eth_hashrate" => ok(U64::ZERO),
        "eth_syncing" => ok(syncing()),
        "eth_mining" => ok(false),
        "eth_accounts" => ok(Vec::<Address>::new()),
        "eth_maxPriorityFeePerGas" => ok(U256::ZERO),
        "eth_blobBaseFee" => ok(U256::from(1u64)),
        "eth_getUncleByBlockNumberAndIndex" | "eth_getUncleByBlockHashAndIndex" => ok(Value::Null),
        _ => return None,
    };
    Some(answer)
}

/// `eth_syncing`: `false`, or a verifier's L1 progress while it catches up
/// (the blocks are L1 blocks: derivation follows L1).
fn syncing() -> Value {
    match fulmen_chain::metrics::METRICS.da.syncing() {
        None => Value::Bool(false),
        Some((start, current, highest)) => serde_json::json!({
            "startingBlock": format!("{start:#x}"),
            "currentBlock": format!("{current:#x}"),
            "highestBlock": format!("{highest:#x}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn constant_methods_answer_like_geth() {
        let answer = |method| constant_method(method).expect("a constant method").unwrap();
        assert_eq!(answer("net_listening"), json!(true));
        assert_eq!(answer("net_peerCount"), json!("0x0"));
        assert_eq!(answer("eth_hashrate"), json!("0x0"));
        assert_eq!(answer("eth_syncing"), json!(false));
        assert_eq!(answer("eth_mining"), json!(false));
        assert_eq!(answer("eth_accounts"), json!([]));
        assert_eq!(answer("eth_maxPriorityFeePerGas"), json!("0x0"));
        assert_eq!(answer("eth_blobBaseFee"), json!("0x1"));
        assert_eq!(answer("eth_getUncleByBlockHashAndIndex"), Value::Null);
        assert!(constant_method("eth_chainId").is_none());
    }

    #[test]
    fn every_method_belongs_to_at_most_one_table() {
        let view = testkit::chain(1);
        let none = Params(Vec::new());
        for method in [
            "eth_getBalance",
            "eth_getCode",
            "eth_getTransactionByHash",
            "eth_getTransactionReceipt",
            "eth_getBlockByNumber",
            "eth_getBlockReceipts",
            "eth_getUncleCountByBlockHash",
            "net_listening",
            "eth_getUncleByBlockNumberAndIndex",
        ] {
            let tables = [
                constant_method(method).is_some(),
                state::account_or_tx_method((&view, true), method, &none).is_some(),
                state::block_method((&view, true), 1 << 20, method, &none).is_some(),
            ];
            assert_eq!(tables.iter().filter(|t| **t).count(), 1, "{method}");
        }
    }
}
