//! `eth_sendRawTransaction` and `eth_sendRawTransactionSync` (EIP-7966):
//! decode and check on the net core, then hand the transaction to the seq
//! core over this core's bounded inbox.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use alloy_primitives::{B256, Bytes};
use fulmen_chain::metrics::{METRICS, reject_reason};
use fulmen_chain::msg::{ParkReason, SeqReply, SeqRequest, SubmitError};
use fulmen_chain::tx::{RecoveredTx, decode_and_check};
use futures::channel::oneshot;
use futures::future::Either;
use serde_json::{Value, json};

use super::context::RpcContext;
use super::reply::ok;
use crate::convert;
use crate::rpc::{Params, RpcError};

/// EIP-7966 error code: timed out waiting for the receipt.
pub const SYNC_TIMEOUT_CODE: i64 = 4;
/// EIP-7966 error code: accepted but not ready (nonce gap).
pub const SYNC_NOT_READY_CODE: i64 = 5;

/// `eth_sendRawTransaction`: the hash once the seq core accepted it.
pub(crate) async fn send_raw(ctx: &RpcContext, params: &Params) -> Result<Value, RpcError> {
    params.at_most(1)?;
    let raw: Bytes = params.required(0, "data")?;
    METRICS.txs_received.fetch_add(1, Relaxed);
    let tx = decode(ctx, &raw)?;
    if let Some(forward) = &ctx.forward {
        return forward.send("eth_sendRawTransaction", raw).await;
    }
    let hash = tx.hash;
    let reply = enqueue(ctx, tx, false)?
        .await
        .map_err(|_| sequencer_gone())?;
    match reply {
        SeqReply::Preconfirmed(_) | SeqReply::Parked(_) => ok(hash),
        SeqReply::Rejected(e) => Err(rejected(&e)),
    }
}

/// `eth_sendRawTransactionSync`: the receipt once preconfirmed, or an
/// EIP-7966 error when it is not ready or not preconfirmed in time.
pub(crate) async fn send_sync(ctx: &RpcContext, params: &Params) -> Result<Value, RpcError> {
    params.at_most(2)?;
    let raw: Bytes = params.required(0, "data")?;
    let timeout_ms: Option<u64> = params.optional(1, "timeout")?;
    let timeout_ms = timeout_ms
        .unwrap_or(ctx.limits.sync_timeout_ms_default)
        .min(ctx.limits.sync_timeout_ms_max);
    let began = Instant::now();
    METRICS.txs_received.fetch_add(1, Relaxed);
    let tx = decode(ctx, &raw)?;
    if let Some(forward) = &ctx.forward {
        return forward.send("eth_sendRawTransactionSync", raw).await;
    }
    let hash = tx.hash;
    let answer = enqueue(ctx, tx, true)?;
    let timer = glommio::timer::sleep(Duration::from_millis(timeout_ms));
    futures::pin_mut!(timer);
    match futures::future::select(answer, timer).await {
        Either::Left((Ok(SeqReply::Preconfirmed(tx)), _)) => {
            METRICS.sync_send_latency.observe(began.elapsed());
            ok(convert::receipt(&tx, None))
        }
        Either::Left((Ok(SeqReply::Parked(reason)), _)) => Err(not_ready(&reason, hash)),
        Either::Left((Ok(SeqReply::Rejected(e)), _)) => Err(rejected(&e)),
        Either::Left((Err(_), _)) => Err(sequencer_gone()),
        Either::Right(_) => Err(sync_timeout(timeout_ms, hash)),
    }
}

/// EIP-7966's "accepted but not ready" for a parked transaction.
fn not_ready(reason: &ParkReason, hash: B256) -> RpcError {
    let message = match reason {
        ParkReason::NonceGap { expected } => format!(
            "transaction accepted but not ready: nonce gap (sender's next nonce is {expected}); it will execute once the gap is filled"
        ),
        ParkReason::Deferred => {
            "transaction accepted but not ready: waiting for room in the next block".into()
        }
    };
    RpcError {
        code: SYNC_NOT_READY_CODE,
        message,
        data: Some(json!(hash)),
    }
}

/// EIP-7966's timeout: in the pool, not preconfirmed within `timeout_ms`.
fn sync_timeout(timeout_ms: u64, hash: B256) -> RpcError {
    RpcError {
        code: SYNC_TIMEOUT_CODE,
        message: format!(
            "the transaction was added to the pool but not preconfirmed within {timeout_ms} ms"
        ),
        data: Some(json!(hash)),
    }
}

fn decode(ctx: &RpcContext, raw: &[u8]) -> Result<RecoveredTx, RpcError> {
    let rules = fulmen_chain::tx::TxRules {
        allow_unprotected: ctx.limits.allow_unprotected_txs,
        ..ctx.spec.tx_rules()
    };
    decode_and_check(raw, &rules).map_err(|e| {
        METRICS.reject("invalid");
        RpcError::server(e.to_string())
    })
}

/// A sequencer refusal, counted.
fn rejected(e: &SubmitError) -> RpcError {
    METRICS.reject(reject_reason(e));
    RpcError::server(e.to_string())
}

fn sequencer_gone() -> RpcError {
    METRICS.reject("sequencer_gone");
    RpcError::internal("the sequencer stopped")
}

/// Hands `tx` to the seq core; a full inbox is an immediate, counted error.
fn enqueue(
    ctx: &RpcContext,
    tx: RecoveredTx,
    wait_for_receipt: bool,
) -> Result<oneshot::Receiver<SeqReply>, RpcError> {
    if ctx.verifier {
        METRICS.reject("invalid");
        return Err(RpcError::server(
            "this node is a verifier: it rebuilds the chain from L1 and takes no transactions; \
             send them to the sequencer (or start it with --sequencer-url to forward them)",
        ));
    }
    if let Some(refusal) = ctx
        .da_unposted_bytes_max
        .and_then(|max| METRICS.da.backlog_refusal(max))
    {
        METRICS.reject("da_backlog");
        return Err(RpcError::server(refusal));
    }
    if let Some(refusal) = METRICS.disk_refusal() {
        METRICS.reject("disk_low");
        return Err(RpcError::server(refusal));
    }
    let (reply, answer) = oneshot::channel();
    let request = SeqRequest {
        tx,
        reply,
        wait_for_receipt,
    };
    if ctx.seq.try_send(request).is_err() {
        METRICS.reject("inbox_full");
        return Err(RpcError::server(
            "txpool is full: the sequencer inbox is at capacity, retry shortly",
        ));
    }
    METRICS.inbox_sent.fetch_add(1, Relaxed);
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_transactions_get_eip7966_not_ready_with_their_hash() {
        let hash = B256::repeat_byte(0xab);
        let gap = not_ready(&ParkReason::NonceGap { expected: 7 }, hash);
        assert_eq!(gap.code, SYNC_NOT_READY_CODE);
        assert!(
            gap.message.contains("nonce gap (sender's next nonce is 7)"),
            "{}",
            gap.message
        );
        assert_eq!(gap.data, Some(json!(hash)));
        let deferred = not_ready(&ParkReason::Deferred, hash);
        assert_eq!(deferred.code, SYNC_NOT_READY_CODE);
        assert!(
            deferred
                .message
                .ends_with("waiting for room in the next block")
        );
        assert_eq!(deferred.data, Some(json!(hash)));
    }

    #[test]
    fn a_sync_timeout_is_code_4_and_names_the_wait() {
        let hash = B256::repeat_byte(0xcd);
        let error = sync_timeout(2_000, hash);
        assert_eq!(error.code, SYNC_TIMEOUT_CODE);
        assert_eq!(
            error.message,
            "the transaction was added to the pool but not preconfirmed within 2000 ms"
        );
        assert_eq!(error.data, Some(json!(hash)));
    }
}
