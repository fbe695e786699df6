//! The raw-encoding debug methods, as geth and reth answer them:
//! `debug_getRawHeader` (the RLP header), `debug_getRawBlock` (the RLP
//! block: header, transactions, no ommers, the empty withdrawals list),
//! `debug_getRawTransaction` (the EIP-2718 bytes) and
//! `debug_getRawReceipts` (each receipt's EIP-2718 bytes, the ones the
//! receipts root commits to). Blocks are sealed blocks; the open block has
//! no header yet.

use alloy_consensus::{Block, BlockBody, TxEnvelope};
use alloy_eips::BlockId;
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip4895::Withdrawals;
use alloy_primitives::{B256, Bytes};
use alloy_rlp::Encodable;
use fulmen_chain::block::SealedBlock;
use fulmen_chain::view::ChainView;
use serde_json::Value;

use super::reply::ok;
use super::state::block_by_id;
use crate::rpc::{ByteBudget, Params, RpcError};

/// The raw methods; `None` for any other method. `bytes_max` bounds an
/// answer.
pub(crate) fn raw_method(
    view: &ChainView,
    bytes_max: usize,
    method: &str,
    params: &Params,
) -> Option<Result<Value, RpcError>> {
    let block = || -> Result<std::sync::Arc<SealedBlock>, RpcError> {
        let id: BlockId = params.required(0, "block")?;
        block_by_id(view, id)?.ok_or_else(|| RpcError::server("block not found"))
    };
    let answer = match method {
        "debug_getRawHeader" => block().and_then(|b| {
            let mut out = Vec::new();
            b.header.encode(&mut out);
            ok(Bytes::from(out))
        }),
        "debug_getRawBlock" => block().and_then(|b| {
            let bytes = Bytes::from(raw_block(&b));
            ByteBudget::new(bytes_max).add(&bytes)?;
            ok(bytes)
        }),
        "debug_getRawTransaction" => params.required(0, "hash").and_then(|hash: B256| {
            ok(view
                .tx(&hash)
                .map(|(tx, _)| Bytes::from(tx.tx.envelope.encoded_2718())))
        }),
        "debug_getRawReceipts" => block().and_then(|b| {
            let mut budget = ByteBudget::new(bytes_max);
            let mut out = Vec::with_capacity(b.txs.len());
            for tx in &b.txs {
                let receipt = Bytes::from(tx.receipt_envelope().encoded_2718());
                budget.add(&receipt)?;
                out.push(receipt);
            }
            ok(out)
        }),
        _ => return None,
    };
    Some(answer)
}

/// The block's RLP encoding, as its hash and size commit to.
fn raw_block(block: &SealedBlock) -> Vec<u8> {
    let body = BlockBody::<TxEnvelope> {
        transactions: block.txs.iter().map(|t| t.tx.envelope.clone()).collect(),
        ommers: Vec::new(),
        withdrawals: block
            .header
            .withdrawals_root
            .map(|_| Withdrawals::default()),
    };
    let block = Block {
        header: block.header.clone(),
        body,
    };
    let mut out = Vec::with_capacity(block.length());
    block.encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::testkit;
    use alloy_consensus::proofs::calculate_receipt_root;
    use alloy_consensus::{Header, ReceiptEnvelope};
    use alloy_eips::eip2718::Decodable2718;
    use alloy_rlp::Decodable;
    use serde_json::json;

    fn call(view: &ChainView, method: &str, params: Value) -> Result<Value, RpcError> {
        let params = Params(params.as_array().cloned().unwrap_or_default());
        raw_method(view, 1 << 20, method, &params).expect("a raw method")
    }

    fn bytes(value: Value) -> Vec<u8> {
        serde_json::from_value::<Bytes>(value).unwrap().to_vec()
    }

    #[test]
    fn raw_encodings_hash_to_what_the_block_commits_to() {
        let view = testkit::chain(3);
        let block = view.block(1).unwrap();
        assert!(!block.txs.is_empty(), "the test chain has transactions");
        let header = bytes(call(&view, "debug_getRawHeader", json!(["0x1"])).unwrap());
        assert_eq!(alloy_primitives::keccak256(&header), block.hash);
        assert_eq!(Header::decode(&mut &header[..]).unwrap(), block.header);
        let raw = bytes(call(&view, "debug_getRawBlock", json!([block.hash])).unwrap());
        let decoded = Block::<TxEnvelope>::decode(&mut &raw[..]).unwrap();
        assert_eq!(decoded.header.hash_slow(), block.hash);
        assert_eq!(decoded.body.transactions.len(), block.txs.len());
        // The size blocks report (`size`) is this encoding's length.
        let txs_rlp_len = decoded
            .body
            .transactions
            .iter()
            .map(Encodable::length)
            .sum();
        assert_eq!(
            raw.len() as u64,
            fulmen_chain::block::block_size(&block.header, txs_rlp_len)
        );
        let receipts: Vec<Value> =
            serde_json::from_value(call(&view, "debug_getRawReceipts", json!(["0x1"])).unwrap())
                .unwrap();
        let receipts: Vec<ReceiptEnvelope> = receipts
            .into_iter()
            .map(|r| ReceiptEnvelope::decode_2718(&mut &bytes(r)[..]).unwrap())
            .collect();
        assert_eq!(
            calculate_receipt_root(&receipts),
            block.header.receipts_root
        );
        let tx = &block.txs[0];
        let raw_tx = bytes(call(&view, "debug_getRawTransaction", json!([tx.tx.hash])).unwrap());
        assert_eq!(raw_tx, tx.tx.envelope.encoded_2718());
        assert!(TxEnvelope::decode_2718(&mut &raw_tx[..]).is_ok());
        assert_eq!(
            call(&view, "debug_getRawTransaction", json!([B256::ZERO])).unwrap(),
            Value::Null
        );
        let missing = call(&view, "debug_getRawHeader", json!(["0x99"])).unwrap_err();
        assert!(missing.message.contains("not found"), "{}", missing.message);
    }
}
