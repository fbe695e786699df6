//! `--dev` conveniences: the ten test-mnemonic accounts unlocked, as anvil
//! and geth's `--dev` have them, so `cast --unlocked`, `forge --unlocked`,
//! web3.py's `send_transaction` and wallets' signing calls work against a
//! dev node unchanged. A node without `--dev` has no accounts: these
//! methods do not exist there (`eth_accounts` is empty).
//!
//! - `eth_accounts`: the ten addresses, in derivation order.
//! - `eth_sendTransaction` / `eth_signTransaction`: the request is filled as
//!   geth fills it (chain id; the sender's next nonce, counting the dev
//!   sends this node made that the published state does not show yet; gas
//!   by `eth_estimateGas`; EIP-1559 fees of twice the open block's base fee
//!   plus the tip, 0 by default, unless `gasPrice` asks for a legacy one),
//!   signed with the sender's key, and sent as `eth_sendRawTransaction`
//!   sends (or returned encoded).
//! - `eth_sign` (address, data), `personal_sign` (data, address): EIP-191.
//! - `eth_signTypedData_v4` / `eth_signTypedData` (address, typed data as
//!   an object or a JSON string): EIP-712.
//!
//! Signatures are 65 bytes, `r ‖ s ‖ v` with `v` 27 or 28, as geth returns.

use std::sync::Arc;

use alloy_consensus::SignableTransaction;
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, U64};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use fulmen_chain::view::ChainView;
use serde_json::Value;

use super::RpcContext;
use super::accounts::DevAccounts;
use super::reply::ok;
use crate::rpc::{Params, RpcError};
use crate::sim::BatchBudget;

/// The signing methods (answered on the net core); `None` for any other
/// method or on a node without `--dev`.
pub(crate) fn dev_method(
    dev: Option<&DevAccounts>,
    method: &str,
    params: &Params,
) -> Option<Result<Value, RpcError>> {
    let dev = dev?;
    let answer = match method {
        "eth_accounts" => ok(dev.addresses()),
        "eth_sign" => sign_message(dev, params, (0, 1)),
        "personal_sign" => sign_message(dev, params, (1, 0)),
        "eth_signTypedData_v4" | "eth_signTypedData" => sign_typed_data(dev, params),
        _ => return None,
    };
    Some(answer)
}

/// EIP-191: the account at parameter `at.0` signs the data at `at.1`.
fn sign_message(dev: &DevAccounts, params: &Params, at: (usize, usize)) -> Result<Value, RpcError> {
    params.at_most(2)?;
    let address: Address = params.required(at.0, "address")?;
    let data: Bytes = params.required(at.1, "data")?;
    let signature = dev
        .signer(address)?
        .sign_message_sync(&data)
        .map_err(|e| RpcError::server(format!("cannot sign: {e}")))?;
    ok(Bytes::from(signature.as_bytes().to_vec()))
}

/// EIP-712: the account at parameter 0 signs the typed data at 1.
fn sign_typed_data(dev: &DevAccounts, params: &Params) -> Result<Value, RpcError> {
    params.at_most(2)?;
    let address: Address = params.required(0, "address")?;
    let value: Value = params.required(1, "typedData")?;
    // Wallet libraries send it as an object or as a JSON string.
    let value = match value {
        Value::String(text) => serde_json::from_str(&text).map_err(|e| {
            RpcError::invalid_params(format!("invalid argument 1 (typedData): {e}"))
        })?,
        other => other,
    };
    let typed: alloy_dyn_abi::TypedData = serde_json::from_value(value)
        .map_err(|e| RpcError::invalid_params(format!("invalid argument 1 (typedData): {e}")))?;
    let hash = typed
        .eip712_signing_hash()
        .map_err(|e| RpcError::invalid_params(format!("invalid argument 1 (typedData): {e}")))?;
    let signature = dev
        .signer(address)?
        .sign_hash_sync(&hash)
        .map_err(|e| RpcError::server(format!("cannot sign: {e}")))?;
    ok(Bytes::from(signature.as_bytes().to_vec()))
}

/// `eth_sendTransaction` (`send`) or `eth_signTransaction`: the request
/// filled, signed with its sender's key, then sent (its hash) or returned
/// encoded.
pub(crate) async fn transaction(
    ctx: &RpcContext,
    batch: Option<&BatchBudget>,
    view: Arc<ChainView>,
    (params, send): (&Params, bool),
) -> Result<Value, RpcError> {
    let Some(dev) = ctx.dev.as_deref() else {
        return Err(RpcError::method_not_found(if send {
            "eth_sendTransaction"
        } else {
            "eth_signTransaction"
        }));
    };
    params.at_most(1)?;
    let request: TransactionRequest = params.required(0, "transaction")?;
    let from = request.from.ok_or_else(|| {
        RpcError::invalid_params("invalid argument 0 (transaction): from is required")
    })?;
    let signer = dev.signer(from)?;
    let reserved = request.nonce.is_none().then(|| {
        let state_nonce = view.state().account(&from).map_or(0, |a| a.nonce);
        dev.reserve(from, state_nonce)
    });
    let result = signed_and_sent(ctx, batch, view, (request, reserved), (signer, send)).await;
    if let (Err(_), Some(nonce)) = (&result, reserved) {
        dev.release(from, nonce);
    }
    result
}

/// The request filled (with the `reserved` nonce), signed by `signer`, then
/// sent when `send`, else returned encoded.
async fn signed_and_sent(
    ctx: &RpcContext,
    batch: Option<&BatchBudget>,
    view: Arc<ChainView>,
    (request, reserved): (TransactionRequest, Option<u64>),
    (signer, send): (&PrivateKeySigner, bool),
) -> Result<Value, RpcError> {
    let mut request = filled(ctx, batch, view, request).await?;
    if let Some(nonce) = reserved {
        request.nonce = Some(nonce);
    }
    // No `to` (or `to: null`) deploys, as geth's eth_sendTransaction does.
    if request.to.is_none() {
        request.to = Some(alloy_primitives::TxKind::Create);
    }
    let tx = request.build_consensus_tx().map_err(|e| {
        RpcError::invalid_params(format!("invalid argument 0 (transaction): {}", e.error))
    })?;
    let signature = signer
        .sign_hash_sync(&tx.signature_hash())
        .map_err(|e| RpcError::server(format!("cannot sign: {e}")))?;
    let envelope: alloy_consensus::TxEnvelope = tx.into_signed(signature).into();
    let raw = Bytes::from(envelope.encoded_2718());
    if !send {
        return ok(raw);
    }
    super::send::send_raw(ctx, &Params(vec![serde_json::json!(raw)])).await
}

/// The request with what a client may leave out filled in (see the
/// module's documentation).
async fn filled(
    ctx: &RpcContext,
    batch: Option<&BatchBudget>,
    view: Arc<ChainView>,
    mut request: TransactionRequest,
) -> Result<TransactionRequest, RpcError> {
    request.chain_id.get_or_insert(ctx.spec.chain_id);
    if request.gas_price.is_none() {
        let tip = *request.max_priority_fee_per_gas.get_or_insert(0);
        let base_fee = u128::from(view.open().ctx.base_fee);
        // A tip near u128::MAX is the client's to see refused, not a wrap.
        request
            .max_fee_per_gas
            .get_or_insert(base_fee.saturating_mul(2).saturating_add(tip));
    }
    if request.gas.is_none() {
        // Estimated with the state's nonce (a reserved one may be ahead of
        // the state a simulation sees).
        let mut estimated = request.clone();
        estimated.nonce = None;
        let estimate_params =
            Params(vec![serde_json::to_value(&estimated).map_err(|e| {
                RpcError::internal(format!("cannot encode the request: {e}"))
            })?]);
        let job =
            super::call::estimate_gas(&ctx.limits, ctx.spec.tx_gas_limit_max, &estimate_params)?;
        let gas: U64 = serde_json::from_value(super::call::off_core(ctx, batch, view, job).await?)
            .map_err(|e| RpcError::internal(format!("gas estimate: {e}")))?;
        request.gas = Some(gas.to());
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::testkit::params;
    use alloy_primitives::{B256, eip191_hash_message};
    use serde_json::json;

    fn accounts() -> DevAccounts {
        DevAccounts::new(
            (1u8..=3)
                .map(|i| PrivateKeySigner::from_bytes(&B256::repeat_byte(i)).unwrap())
                .collect(),
        )
    }

    #[test]
    fn accounts_sign_messages_and_typed_data_and_refuse_strangers() {
        let dev = accounts();
        let first = dev.addresses()[0];
        let call = |method, p| dev_method(Some(&dev), method, &params(p)).expect("a dev method");
        assert_eq!(
            call("eth_accounts", json!([])).unwrap(),
            json!(dev.addresses())
        );
        let by_eth_sign = call("eth_sign", json!([first, "0x68656c6c6f"])).unwrap();
        let by_personal = call("personal_sign", json!(["0x68656c6c6f", first])).unwrap();
        assert_eq!(by_eth_sign, by_personal);
        let bytes: Bytes = serde_json::from_value(by_eth_sign).unwrap();
        assert_eq!(bytes.len(), 65);
        assert!(matches!(bytes[64], 27 | 28), "v is 27 or 28");
        let signature = alloy_primitives::Signature::try_from(&bytes[..]).unwrap();
        let recovered = signature
            .recover_address_from_prehash(&eip191_hash_message(b"hello"))
            .unwrap();
        assert_eq!(recovered, first);
        let typed = json!({
            "types": {
                "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"}],
                "Mail": [{"name": "to", "type": "address"}, {"name": "contents", "type": "string"}]
            },
            "primaryType": "Mail",
            "domain": {"name": "fulmen", "chainId": 4242},
            "message": {"to": first, "contents": "hi"}
        });
        let as_object = call("eth_signTypedData_v4", json!([first, typed])).unwrap();
        let as_string = call("eth_signTypedData_v4", json!([first, typed.to_string()])).unwrap();
        assert_eq!(as_object, as_string);
        let stranger = Address::repeat_byte(9);
        let error = call("eth_sign", json!([stranger, "0x00"])).unwrap_err();
        assert_eq!(error.message, format!("unknown account {stranger}"));
        let error = call("eth_signTypedData_v4", json!([first, {"types": 1}])).unwrap_err();
        assert_eq!(error.code, -32602);
        assert!(dev_method(None, "eth_accounts", &params(json!([]))).is_none());
    }

    #[test]
    fn dev_sends_reserve_nonces_past_the_published_one() {
        let dev = accounts();
        let first = dev.addresses()[0];
        assert_eq!(dev.reserve(first, 4), 4);
        assert_eq!(
            dev.reserve(first, 4),
            5,
            "the state does not show the first yet"
        );
        dev.release(first, 5);
        assert_eq!(
            dev.reserve(first, 4),
            5,
            "a failed send gives its nonce back"
        );
        dev.release(first, 4);
        assert_eq!(dev.reserve(first, 4), 6, "not when a later one is held");
        assert_eq!(dev.reserve(first, 9), 9, "the state moved past them");
    }
}
