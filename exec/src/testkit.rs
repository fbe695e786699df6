//! Helpers shared by the crate's unit tests: dev keys, a dev chain spec with
//! test contracts, and signed transactions.

use std::sync::OnceLock;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::{eip1559::BaseFeeParams, eip2718::Encodable2718};
use alloy_genesis::GenesisAccount;
use alloy_network::TxSignerSync;
use alloy_primitives::{Address, Bytes, TxKind, U256, address};
use alloy_signer_local::{MnemonicBuilder, PrivateKeySigner};

use fulmen_chain::spec::{ChainSpec, dev_genesis};
use fulmen_chain::tx::{RecoveredTx, decode_and_check};

/// Max fee per gas of test transactions, above their tip.
pub(crate) const PRICE: u128 = 2_000_000_000;
/// NUMBER PUSH1 1 SWAP1 SUB BLOCKHASH PUSH1 0 SSTORE STOP: stores the parent hash.
pub(crate) const PARENT_HASH_CODE: [u8; 10] =
    [0x43, 0x60, 0x01, 0x90, 0x03, 0x40, 0x60, 0x00, 0x55, 0x00];
/// Where [`PARENT_HASH_CODE`] lives in [`spec`]'s genesis.
pub(crate) const PARENT_HASH_CONTRACT: Address =
    address!("0x00000000000000000000000000000000000b1004");
/// Stores the value sent under the caller's slot, then emits an empty log
/// with the caller as topic: CALLVALUE CALLER SSTORE, CALLER PUSH1 0 PUSH1 0
/// LOG1, STOP.
pub(crate) const STORE_CODE: [u8; 10] =
    [0x34, 0x33, 0x55, 0x33, 0x60, 0x00, 0x60, 0x00, 0xa1, 0x00];
/// Where [`STORE_CODE`] lives in [`spec`]'s genesis.
pub(crate) const STORE_CONTRACT: Address = address!("0x00000000000000000000000000000000000b1005");
/// Emits its calldata as one LOG0: CALLDATASIZE PUSH0 PUSH0 CALLDATACOPY
/// CALLDATASIZE PUSH0 LOG0 STOP.
pub(crate) const LOG_CALLDATA_CODE: [u8; 8] = [0x36, 0x5f, 0x5f, 0x37, 0x36, 0x5f, 0xa0, 0x00];
/// Where [`LOG_CALLDATA_CODE`] lives in [`spec`]'s genesis.
pub(crate) const LOG_CALLDATA_CONTRACT: Address =
    address!("0x00000000000000000000000000000000000b1006");
/// Init code that deploys the one-byte contract `STOP`:
/// PUSH1 0 PUSH1 0 MSTORE8 PUSH1 1 PUSH1 0 RETURN.
pub(crate) const DEPLOY_STOP: [u8; 10] =
    [0x60, 0x00, 0x60, 0x00, 0x53, 0x60, 0x01, 0x60, 0x00, 0xf3];

/// Dev key `i` (below 10) of the standard test mnemonic, derived once.
pub(crate) fn key(i: u32) -> &'static PrivateKeySigner {
    static KEYS: OnceLock<Vec<PrivateKeySigner>> = OnceLock::new();
    &KEYS.get_or_init(|| {
        (0..10)
            .map(|i| {
                MnemonicBuilder::english()
                    .phrase("test test test test test test test test test test test junk")
                    .index(i)
                    .unwrap()
                    .build()
                    .unwrap()
            })
            .collect()
    })[i as usize]
}

/// The dev chain with `gas_limit` per block and the test contracts.
pub(crate) fn spec(gas_limit: u64) -> ChainSpec {
    let mut genesis = dev_genesis(gas_limit, 1_000_000_000);
    for (at, code) in [
        (PARENT_HASH_CONTRACT, &PARENT_HASH_CODE[..]),
        (STORE_CONTRACT, &STORE_CODE[..]),
        (LOG_CALLDATA_CONTRACT, &LOG_CALLDATA_CODE[..]),
    ] {
        genesis.alloc.insert(
            at,
            GenesisAccount::default().with_code(Some(Bytes::copy_from_slice(code))),
        );
    }
    ChainSpec {
        chain_id: genesis.config.chain_id,
        block_gas_limit: gas_limit,
        tx_gas_limit_max: gas_limit.min(fulmen_chain::spec::TX_GAS_LIMIT_MAX_DEFAULT),
        base_fee_floor_wei: 1_000_000,
        base_fee_params: BaseFeeParams::ethereum(),
        coinbase: address!("0x00000000000000000000000000000000000c0ffe"),
        genesis,
    }
}

/// A signed, checked EIP-1559 transaction from dev key `from`.
pub(crate) fn tx(
    spec: &ChainSpec,
    from: u32,
    nonce: u64,
    to: Address,
    value: u64,
    gas: u64,
    tip: u128,
) -> RecoveredTx {
    sign(
        spec,
        from,
        nonce,
        TxKind::Call(to),
        value,
        Bytes::new(),
        gas,
        tip,
    )
}

/// A signed, checked EIP-1559 transaction with any destination and input.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sign(
    spec: &ChainSpec,
    from: u32,
    nonce: u64,
    to: TxKind,
    value: u64,
    input: Bytes,
    gas: u64,
    tip: u128,
) -> RecoveredTx {
    sign_by(
        spec,
        key(from),
        nonce,
        to,
        U256::from(value),
        input,
        gas,
        tip,
    )
}

/// A signed, checked EIP-1559 transaction from any key, with any value.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sign_by(
    spec: &ChainSpec,
    signer: &PrivateKeySigner,
    nonce: u64,
    to: TxKind,
    value: U256,
    input: Bytes,
    gas: u64,
    tip: u128,
) -> RecoveredTx {
    let mut tx = TxEip1559 {
        chain_id: spec.chain_id,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: PRICE + tip,
        max_priority_fee_per_gas: tip,
        to,
        value,
        input,
        access_list: Default::default(),
    };
    let signature = signer.sign_transaction_sync(&mut tx).unwrap();
    let raw = TxEnvelope::from(tx.into_signed(signature)).encoded_2718();
    decode_and_check(&raw, &spec.tx_rules()).unwrap()
}
