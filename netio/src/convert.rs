//! Internal chain types to their `eth_` JSON shapes (alloy's RPC types, so
//! field names and encodings match geth).

use std::sync::Arc;

use alloy_consensus::{Transaction as _, transaction::Recovered};
use alloy_primitives::{B256, U256};
use alloy_rpc_types_eth::{Block, BlockTransactions, Header, Log, Transaction, TransactionReceipt};
use fulmen_chain::block::{ExecutedTx, SealRoots, SealedBlock, UnsealedBlock};

/// `blockHash` of a preconfirmed transaction, receipt or log before its block
/// is sealed: the zero hash. Its `blockNumber` is already the block it will be
/// sealed in; after sealing every lookup returns the sealed block's hash.
pub const UNSEALED_BLOCK_HASH: B256 = B256::ZERO;

/// RPC transaction object.
pub fn transaction(tx: &ExecutedTx, block_hash: Option<B256>) -> Transaction {
    Transaction {
        inner: Recovered::new_unchecked(tx.tx.envelope.clone(), tx.tx.sender),
        block_hash: Some(block_hash.unwrap_or(UNSEALED_BLOCK_HASH)),
        block_number: Some(tx.block_number),
        transaction_index: Some(tx.index),
        effective_gas_price: Some(tx.effective_gas_price),
        block_timestamp: Some(tx.block_timestamp),
    }
}

/// RPC logs of a transaction.
pub fn logs(tx: &ExecutedTx, block_hash: Option<B256>) -> Vec<Log> {
    tx.logs
        .iter()
        .enumerate()
        .map(|(i, log)| Log {
            inner: log.clone(),
            block_hash: Some(block_hash.unwrap_or(UNSEALED_BLOCK_HASH)),
            block_number: Some(tx.block_number),
            block_timestamp: Some(tx.block_timestamp),
            transaction_hash: Some(tx.tx.hash),
            transaction_index: Some(tx.index),
            log_index: Some(tx.first_log_index + i as u64),
            removed: false,
        })
        .collect()
}

/// RPC receipt.
pub fn receipt(tx: &ExecutedTx, block_hash: Option<B256>) -> TransactionReceipt {
    // The consensus receipt carries the bloom; its logs gain their RPC context.
    let mut rpc_logs = logs(tx, block_hash).into_iter();
    let inner = tx
        .receipt_envelope()
        .map_logs(|_| rpc_logs.next().unwrap_or_default());
    TransactionReceipt {
        inner,
        transaction_hash: tx.tx.hash,
        transaction_index: Some(tx.index),
        block_hash: Some(block_hash.unwrap_or(UNSEALED_BLOCK_HASH)),
        block_number: Some(tx.block_number),
        gas_used: tx.gas_used,
        effective_gas_price: tx.effective_gas_price,
        blob_gas_used: None,
        blob_gas_price: None,
        from: tx.tx.sender,
        to: tx.tx.envelope.to(),
        contract_address: tx.contract_address,
    }
}

/// RPC block; full transaction objects when `full`.
pub fn block(block: &SealedBlock, full: bool) -> Block<Transaction> {
    let transactions = if full {
        BlockTransactions::Full(
            block
                .txs
                .iter()
                .map(|t| transaction(t, Some(block.hash)))
                .collect(),
        )
    } else {
        BlockTransactions::Hashes(block.txs.iter().map(|t| t.tx.hash).collect())
    };
    Block {
        header: header(block),
        uncles: Vec::new(),
        transactions,
        withdrawals: Some(Default::default()),
    }
}

/// A block not sealed yet (the open block, or one closed and waiting for
/// its seal) as `eth_getBlockByNumber` shows it, like geth's pending block:
/// its number, timestamp, base fee, gas, bloom and transactions so far, on
/// top of `parent_hash`; `hash` and `nonce` null, and the roots a seal
/// computes (`stateRoot`, `transactionsRoot`, `receiptsRoot`) null too.
pub fn unsealed_block(block: &UnsealedBlock, parent_hash: B256, full: bool) -> serde_json::Value {
    use alloy_rlp::Encodable;
    let mut bloom = alloy_primitives::Bloom::default();
    let mut txs_rlp_len = 0;
    for tx in &block.txs {
        bloom.accrue_bloom(&tx.bloom());
        txs_rlp_len += tx.tx.envelope.length();
    }
    let roots = SealRoots {
        number: block.ctx.number,
        state_root: B256::ZERO,
        transactions_root: B256::ZERO,
        receipts_root: B256::ZERO,
        logs_bloom: bloom,
        txs_rlp_len,
    };
    let header = fulmen_chain::block::build_header(&block.ctx, parent_hash, block.gas_used, &roots);
    let size = fulmen_chain::block::block_size(&header, txs_rlp_len);
    let transactions = if full {
        BlockTransactions::Full(block.txs.iter().map(|t| transaction(t, None)).collect())
    } else {
        BlockTransactions::Hashes(block.txs.iter().map(|t| t.tx.hash).collect())
    };
    let rpc = Block {
        header: Header {
            hash: B256::ZERO,
            inner: header,
            total_difficulty: Some(U256::ZERO),
            size: Some(U256::from(size)),
        },
        uncles: Vec::new(),
        transactions,
        withdrawals: Some(Default::default()),
    };
    let mut value = serde_json::to_value(rpc).expect("a block encodes");
    if let Some(fields) = value.as_object_mut() {
        for unknown in [
            "hash",
            "nonce",
            "stateRoot",
            "transactionsRoot",
            "receiptsRoot",
        ] {
            fields.insert(unknown.into(), serde_json::Value::Null);
        }
    }
    value
}

/// RPC header of a sealed block (also what `newHeads` sends).
pub fn header(block: &SealedBlock) -> Header {
    Header {
        hash: block.hash,
        inner: block.header.clone(),
        total_difficulty: Some(U256::ZERO),
        size: Some(U256::from(block.size)),
    }
}

/// Receipts of a sealed block.
pub fn block_receipts(block: &Arc<SealedBlock>) -> Vec<TransactionReceipt> {
    block
        .txs
        .iter()
        .map(|t| receipt(t, Some(block.hash)))
        .collect()
}
