//! A small chain for the method modules' unit tests: blocks 1..=n sealed,
//! each with one transfer from [`ALICE`] to [`BOB`] that logs one event with
//! topic [`topic`]`(n)`, and an open block with one more.

use std::sync::Arc;

use alloy_consensus::{Header, Signed, TxEnvelope, TxLegacy};
use alloy_primitives::{
    Address, B256, Bloom, Bytes, Log, Signature, TxKind, U256, address, keccak256,
};
use fulmen_chain::block::{BlockContext, ExecutedTx, SealedBlock, TxLocation, UnsealedBlock};
use fulmen_chain::view::ChainView;
use fulmen_chain::{AccountState, HotState};
use serde_json::Value;

use crate::rpc::Params;

/// The sender of every transaction; its balance after block n is n.
pub(crate) const ALICE: Address = address!("0x00000000000000000000000000000000000a11ce");
/// The receiver of every transaction.
pub(crate) const BOB: Address = address!("0x0000000000000000000000000000000000000b0b");
/// ALICE's balance in the preconfirmed (latest) state.
pub(crate) const LATEST_BALANCE: u64 = 1_000_000;
/// Where the logs come from.
const LOGGER: Address = address!("0x00000000000000000000000000000000000010ee");
const GAS_LIMIT: u64 = 30_000_000;
const TRANSFER_GAS: u64 = 21_000;
const TIP_WEI: u128 = 2;

/// Base fee of block `n`.
pub(crate) fn base_fee(n: u64) -> u64 {
    100 + n
}

/// The topic of block `n`'s log.
pub(crate) fn topic(n: u64) -> B256 {
    B256::from(U256::from(n))
}

/// Call parameters from a JSON array.
pub(crate) fn params(values: Value) -> Params {
    match values {
        Value::Array(values) => Params(values),
        other => panic!("params must be an array: {other}"),
    }
}

fn state(balance: u64) -> HotState {
    let mut state = HotState::new();
    state.set_account(ALICE, AccountState::funded(U256::from(balance)));
    state
}

fn context(n: u64) -> BlockContext {
    BlockContext {
        number: n,
        timestamp: n,
        base_fee: base_fee(n),
        gas_limit: GAS_LIMIT,
        coinbase: Address::ZERO,
        prevrandao: B256::ZERO,
    }
}

fn transfer(n: u64) -> Arc<ExecutedTx> {
    let legacy = TxLegacy {
        chain_id: Some(1),
        nonce: n,
        gas_price: u128::from(base_fee(n)) + TIP_WEI,
        gas_limit: TRANSFER_GAS,
        to: TxKind::Call(BOB),
        value: U256::from(1),
        input: Bytes::new(),
    };
    let hash = keccak256(n.to_be_bytes());
    let envelope = TxEnvelope::Legacy(Signed::new_unchecked(
        legacy,
        Signature::test_signature(),
        hash,
    ));
    let tx = fulmen_chain::tx::RecoveredTx {
        envelope,
        sender: ALICE,
        hash,
        authorizations: Vec::new(),
        intrinsic_gas: TRANSFER_GAS,
        encoded_len: 110,
    };
    Arc::new(ExecutedTx {
        tx,
        success: true,
        gas_used: TRANSFER_GAS,
        cumulative_gas_used: TRANSFER_GAS,
        effective_gas_price: u128::from(base_fee(n)) + TIP_WEI,
        logs: vec![Log::new_unchecked(LOGGER, vec![topic(n)], Bytes::new())],
        contract_address: None,
        block_number: n,
        block_timestamp: n,
        index: 0,
        first_log_index: 0,
        mini_block: n,
    })
}

fn sealed(n: u64, parent_hash: B256, tx: Arc<ExecutedTx>) -> Arc<SealedBlock> {
    let mut logs_bloom = Bloom::default();
    logs_bloom.accrue_bloom(&tx.bloom());
    let header = Header {
        parent_hash,
        number: n,
        timestamp: n,
        gas_limit: GAS_LIMIT,
        gas_used: if n == 0 { 0 } else { TRANSFER_GAS },
        base_fee_per_gas: Some(base_fee(n)),
        logs_bloom,
        withdrawals_root: Some(alloy_consensus::constants::EMPTY_WITHDRAWALS),
        ..Default::default()
    };
    let txs = if n == 0 { Vec::new() } else { vec![tx] };
    // Roots and size as a sealed block has them.
    let envelopes: Vec<_> = txs.iter().map(|t| t.tx.envelope.clone()).collect();
    let receipts: Vec<_> = txs.iter().map(|t| t.receipt_envelope()).collect();
    let header = Header {
        transactions_root: alloy_consensus::proofs::calculate_transaction_root(&envelopes),
        receipts_root: alloy_consensus::proofs::calculate_receipt_root(&receipts),
        ..header
    };
    let txs_rlp_len = envelopes.iter().map(alloy_rlp::Encodable::length).sum();
    let size = fulmen_chain::block::block_size(&header, txs_rlp_len);
    let hash = header.hash_slow();
    Arc::new(SealedBlock {
        header,
        hash,
        txs,
        size,
    })
}

fn unsealed(n: u64, tx: Arc<ExecutedTx>) -> Arc<UnsealedBlock> {
    Arc::new(UnsealedBlock {
        ctx: context(n),
        txs: imbl::Vector::unit(tx),
        gas_used: TRANSFER_GAS,
    })
}

/// Blocks 0..=`sealed_max` and open block `sealed_max + 1`.
pub(crate) fn chain(sealed_max: u64) -> ChainView {
    let genesis = sealed(0, B256::ZERO, transfer(0));
    let mut view = ChainView::genesis(genesis, state(0));
    for n in 1..=sealed_max + 1 {
        let tx = transfer(n);
        view.set_open(unsealed(n, tx.clone()));
        view.record_tx(tx.tx.hash, TxLocation { block: n, index: 0 });
        view.close_mini_block(n, state(n));
        if n <= sealed_max {
            let block = sealed(n, view.head().hash, tx);
            view.push_sealed(block, Some(state(n)));
        }
    }
    view.close_mini_block(sealed_max + 2, state(LATEST_BALANCE));
    view
}
