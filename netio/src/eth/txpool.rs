//! The `txpool_` methods, as geth answers them: what the sequencer holds
//! and has not run. `pending` is what is ready and waits for the next block
//! or a parent hash (deferred), `queued` what waits for an earlier nonce
//! (parked). Transactions run the moment they arrive, so both are usually
//! empty. The view is the one last published (at most a block old).

use std::collections::BTreeMap;
use std::sync::Arc;

use alloy_consensus::Transaction as _;
use alloy_consensus::transaction::Recovered;
use alloy_primitives::{Address, U64};
use fulmen_chain::tx::RecoveredTx;
use fulmen_chain::view::{ChainView, TxPoolView};
use serde_json::{Map, Value, json};

use super::reply::ok;
use crate::rpc::{ByteBudget, Params, RpcError};

/// The txpool methods; `None` for any other method. `bytes_max` bounds an
/// answer.
pub(crate) fn txpool_method(
    view: &ChainView,
    bytes_max: usize,
    method: &str,
    params: &Params,
) -> Option<Result<Value, RpcError>> {
    let pool = view.pool();
    let answer = match method {
        "txpool_status" => ok(json!({
            "pending": U64::from(pool.deferred().count()),
            "queued": U64::from(pool.parked().count()),
        })),
        "txpool_content" => content(pool, None, bytes_max, |tx| {
            serde_json::to_value(rpc_transaction(tx)).unwrap_or(Value::Null)
        }),
        "txpool_contentFrom" => params.required(0, "address").and_then(|address: Address| {
            content(pool, Some(address), bytes_max, |tx| {
                serde_json::to_value(rpc_transaction(tx)).unwrap_or(Value::Null)
            })
        }),
        "txpool_inspect" => content(pool, None, bytes_max, |tx| Value::String(summary(tx))),
        _ => return None,
    };
    Some(answer)
}

/// `{"pending": {sender: {nonce: entry}}, "queued": ...}`, or for one
/// sender `{"pending": {nonce: entry}, "queued": ...}`, as geth nests them.
fn content(
    pool: &TxPoolView,
    only: Option<Address>,
    bytes_max: usize,
    entry: impl Fn(&RecoveredTx) -> Value,
) -> Result<Value, RpcError> {
    let mut budget = ByteBudget::new(bytes_max);
    let mut group = |txs: &mut dyn Iterator<Item = &Arc<RecoveredTx>>| {
        let mut by_sender: BTreeMap<Address, Map<String, Value>> = BTreeMap::new();
        for tx in txs.filter(|tx| only.is_none_or(|a| a == tx.sender)) {
            let value = entry(tx);
            budget.add(&value)?;
            by_sender
                .entry(tx.sender)
                .or_default()
                .insert(tx.nonce().to_string(), value);
        }
        Ok::<Value, RpcError>(match only {
            Some(address) => Value::Object(by_sender.remove(&address).unwrap_or_default()),
            None => Value::Object(
                by_sender
                    .into_iter()
                    .map(|(sender, txs)| (sender.to_checksum(None), Value::Object(txs)))
                    .collect(),
            ),
        })
    };
    let pending = group(&mut pool.deferred())?;
    let queued = group(&mut pool.parked())?;
    ok(json!({ "pending": pending, "queued": queued }))
}

/// A pool transaction as `eth_getTransactionByHash` shows one not yet in a
/// block.
fn rpc_transaction(tx: &RecoveredTx) -> alloy_rpc_types_eth::Transaction {
    alloy_rpc_types_eth::Transaction {
        inner: Recovered::new_unchecked(tx.envelope.clone(), tx.sender),
        block_hash: None,
        block_number: None,
        transaction_index: None,
        effective_gas_price: None,
        block_timestamp: None,
    }
}

/// geth's `txpool_inspect` line: `to: value wei + gas gas × price wei`.
fn summary(tx: &RecoveredTx) -> String {
    let envelope = &tx.envelope;
    let to = match envelope.to() {
        Some(to) => to.to_checksum(None),
        None => "contract creation".to_string(),
    };
    format!(
        "{to}: {} wei + {} gas × {} wei",
        envelope.value(),
        envelope.gas_limit(),
        envelope.max_fee_per_gas()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::testkit;

    fn call(view: &ChainView, method: &str, params: Value) -> Value {
        let params = Params(params.as_array().cloned().unwrap_or_default());
        txpool_method(view, 1 << 20, method, &params)
            .expect("a txpool method")
            .unwrap()
    }

    #[test]
    fn status_content_and_inspect_show_parked_and_deferred_as_geth_nests_them() {
        let mut view = testkit::chain(3);
        let txs: Vec<_> = (1..=3)
            .map(|n| Arc::new(view.block(n).unwrap().txs[0].tx.clone()))
            .collect();
        let empty = call(&view, "txpool_status", json!([]));
        assert_eq!(empty, json!({"pending": "0x0", "queued": "0x0"}));
        view.pool_mut().park(txs[0].clone());
        view.pool_mut().park(txs[1].clone());
        view.pool_mut().defer(txs[2].clone());
        assert_eq!(
            call(&view, "txpool_status", json!([])),
            json!({"pending": "0x1", "queued": "0x2"})
        );
        let sender = txs[0].sender.to_checksum(None);
        let content = call(&view, "txpool_content", json!([]));
        for tx in &txs[..2] {
            let shown = &content["queued"][&sender][tx.nonce().to_string()];
            assert_eq!(shown["hash"], json!(tx.hash), "{content}");
            assert_eq!(shown["blockHash"], Value::Null);
        }
        let deferred = &content["pending"][&sender][txs[2].nonce().to_string()];
        assert_eq!(deferred["hash"], json!(txs[2].hash));
        let from = call(&view, "txpool_contentFrom", json!([txs[0].sender]));
        assert_eq!(
            from["queued"][txs[1].nonce().to_string()]["hash"],
            json!(txs[1].hash)
        );
        let nobody = call(
            &view,
            "txpool_contentFrom",
            json!([Address::repeat_byte(9)]),
        );
        assert_eq!(nobody, json!({"pending": {}, "queued": {}}));
        let inspect = call(&view, "txpool_inspect", json!([]));
        let line = inspect["queued"][&sender][txs[0].nonce().to_string()]
            .as_str()
            .unwrap();
        let to = txs[0].envelope.to().unwrap().to_checksum(None);
        assert_eq!(
            line,
            format!(
                "{to}: {} wei + {} gas × {} wei",
                txs[0].envelope.value(),
                txs[0].envelope.gas_limit(),
                txs[0].envelope.max_fee_per_gas()
            )
        );
        view.pool_mut().unpark(txs[0].sender, txs[0].nonce());
        view.pool_mut().clear_deferred();
        assert_eq!(
            call(&view, "txpool_status", json!([])),
            json!({"pending": "0x0", "queued": "0x1"})
        );
    }
}
