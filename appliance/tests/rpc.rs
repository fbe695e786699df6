//! End-to-end tests: the real `fulmen` binary driven by alloy's provider,
//! cast and raw HTTP.

mod common;

use std::time::{Duration, Instant};

use alloy::consensus::{
    Receipt, ReceiptEnvelope, ReceiptWithBloom, SignableTransaction, TxEip1559, TxEip4844,
    TxEnvelope, TxLegacy,
    proofs::{calculate_receipt_root, calculate_transaction_root},
};
use alloy::eips::eip2718::Encodable2718;
use alloy::network::{TransactionBuilder, TxSignerSync};
use alloy::primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{SolCall, SolEvent};
use alloy_trie::{Nibbles, TrieAccount, proof::verify_proof};
use common::*;
use serde_json::json;

sol! {
    contract Token {
        event Transfer(address indexed from, address indexed to, uint256 value);
        function transfer(address to, uint256 value) external returns (bool);
        function balanceOf(address who) external view returns (uint256);
    }
    contract Probe {
        event Bumped(uint256 indexed value, address indexed by);
        function bump() external;
        function set(uint256 key, uint256 value) external;
        function fail() external pure;
        function counter() external view returns (uint256);
        function parentHash() external view returns (bytes32);
        function burn(uint256 rounds) external;
    }
}

fn hex(bytes: &Bytes) -> String {
    format!("{bytes}")
}

/// How long a test waits for the node to get somewhere: far more than any
/// machine needs, so that a slow machine never fails a test.
const WAIT_MAX: Duration = Duration::from_secs(60);

/// Polls `done` every 100 ms until it holds; fails, naming `what`, once
/// [`WAIT_MAX`] has passed.
async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT_MAX;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until block `number` is sealed.
async fn wait_for_block(provider: &impl Provider, number: u64) {
    wait_until(&format!("block {number} never sealed"), || async move {
        provider.get_block_number().await.unwrap() >= number
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_accounts_are_the_test_mnemonic_and_funded() {
    let node = start_fulmen(&["--dev"]);
    let provider = node.provider();
    assert_eq!(provider.get_chain_id().await.unwrap(), DEV_CHAIN_ID);
    for i in 0..10 {
        let address = signer(i).address();
        assert_eq!(fulmen_chain::spec::DEV_ACCOUNTS[i as usize], address);
        let balance = provider.get_balance(address).await.unwrap();
        assert_eq!(
            balance,
            U256::from(10_000u64) * U256::from(10u64).pow(U256::from(18))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_call_transfer_and_read_logs() {
    let node = start_fulmen(&["--dev"]);
    let alice = signer(0);
    let bob = signer(1).address();
    let provider = node.wallet_provider(alice.clone());

    let (receipt, token) = deploy_token(&provider).await;
    assert!(receipt.status());
    assert!(!provider.get_code_at(token).await.unwrap().is_empty());

    // ERC-20 transfers with sync send.
    for i in 1..=3u64 {
        let call = Token::transferCall {
            to: bob,
            value: U256::from(i * 10),
        };
        let tx = TransactionRequest::default()
            .with_to(token)
            .with_input(call.abi_encode());
        let receipt = provider
            .send_transaction(tx)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status());
        assert_eq!(receipt.inner.logs().len(), 1);
    }

    // eth_call sees the preconfirmed state.
    let call = Token::balanceOfCall { who: bob };
    let out = provider
        .call(
            TransactionRequest::default()
                .with_to(token)
                .with_input(call.abi_encode()),
        )
        .await
        .unwrap();
    assert_eq!(U256::from_be_slice(&out), U256::from(60u64));

    // Logs by address and topic, including preconfirmed ones.
    let filter = Filter::new()
        .address(token)
        .event_signature(Token::Transfer::SIGNATURE_HASH)
        .from_block(0);
    let logs = provider.get_logs(&filter).await.unwrap();
    assert_eq!(logs.len(), 4, "mint + 3 transfers");
    let to_bob = Filter::new()
        .address(token)
        .from_block(0)
        .topic2(bob.into_word());
    assert_eq!(provider.get_logs(&to_bob).await.unwrap().len(), 3);

    // After the seal, the same logs carry the sealed block's hash.
    let last = logs.iter().filter_map(|log| log.block_number).max();
    wait_for_block(&provider, last.expect("logs have block numbers")).await;
    let logs = provider.get_logs(&filter).await.unwrap();
    for log in logs {
        let block = provider
            .get_block_by_number(log.block_number.unwrap().into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(log.block_hash, Some(block.header.hash));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_send_returns_receipt_and_reports_nonce_gaps() {
    let node = start_fulmen(&["--dev"]);
    let alice = signer(2);
    let bob = signer(3).address();
    let addr = node.addr;

    let raw = transfer_raw(&alice, 0, bob, 1);
    let response = rpc(addr, "eth_sendRawTransactionSync", json!([hex(&raw)]));
    let receipt = &response["result"];
    assert_eq!(receipt["status"], "0x1", "{response}");
    assert_eq!(
        receipt["blockHash"],
        format!("{}", B256::ZERO),
        "preconfirmed receipts carry the zero hash"
    );
    let pending_block = u64::from_str_radix(
        receipt["blockNumber"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    let head = node.provider().get_block_number().await.unwrap();
    assert!(
        pending_block > head,
        "preconfirmed in block {pending_block}, sealed head {head}"
    );

    // With an explicit timeout, by MegaETH's name for the same call.
    let raw = transfer_raw(&alice, 1, bob, 1);
    let response = rpc(addr, "realtime_sendRawTransaction", json!([hex(&raw), 500]));
    assert_eq!(response["result"]["status"], "0x1", "{response}");

    // Nonce gap: code 5 with the hash, then the gap fills and it executes.
    let gapped = transfer_raw(&alice, 3, bob, 1);
    let gapped_hash = keccak256(&gapped);
    let (code, message, data) =
        rpc_error(addr, "eth_sendRawTransactionSync", json!([hex(&gapped)]));
    assert_eq!(code, 5, "{message}");
    assert_eq!(data, json!(format!("{gapped_hash}")));
    let filler = transfer_raw(&alice, 2, bob, 1);
    assert_eq!(
        rpc(addr, "eth_sendRawTransactionSync", json!([hex(&filler)]))["result"]["status"],
        "0x1"
    );
    let receipt = rpc(
        addr,
        "eth_getTransactionReceipt",
        json!([format!("{gapped_hash}")]),
    );
    assert_eq!(
        receipt["result"]["status"], "0x1",
        "parked tx ran once the gap filled: {receipt}"
    );
    assert_eq!(
        node.provider()
            .get_transaction_count(alice.address())
            .await
            .unwrap(),
        4
    );

    // alloy's own sync-send path parses the receipt.
    let raw = transfer_raw(&alice, 4, bob, 1);
    let receipt = node
        .provider()
        .send_raw_transaction_sync(&raw)
        .await
        .unwrap();
    assert!(receipt.status());
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_send_times_out_with_code_4_when_the_block_is_full() {
    // Room for two 30k-gas calls per block: the third waits for the next block.
    let node = start_fulmen(&["--dev", "--block-gas-limit", "70000"]);
    let addr = node.addr;
    let alice = signer(4);
    let bob = signer(5).address();
    let padded = |nonce| {
        sign_1559(
            &alice,
            nonce,
            TxKind::Call(bob),
            U256::from(1),
            Bytes::new(),
            30_000,
        )
    };
    for nonce in 0..2 {
        assert_eq!(
            rpc(
                addr,
                "eth_sendRawTransactionSync",
                json!([hex(&padded(nonce))])
            )["result"]["status"],
            "0x1"
        );
    }
    let third = padded(2);
    let hash = keccak256(&third);
    let (code, message, data) =
        rpc_error(addr, "eth_sendRawTransactionSync", json!([hex(&third), 1]));
    assert!(
        code == 4 || code == 5,
        "timeout or not-ready, got {code}: {message}"
    );
    assert_eq!(data, json!(format!("{hash}")));
    // A plain send of a deferred tx answers with its hash.
    let fourth = padded(3);
    let response = rpc(addr, "eth_sendRawTransaction", json!([hex(&fourth)]));
    assert_eq!(
        response["result"],
        json!(format!("{}", keccak256(&fourth))),
        "{response}"
    );
    // Both run in following blocks.
    let deadline = Instant::now() + WAIT_MAX;
    let later = format!("{}", keccak256(&fourth));
    loop {
        let first = rpc(
            addr,
            "eth_getTransactionReceipt",
            json!([format!("{hash}")]),
        );
        let second = rpc(addr, "eth_getTransactionReceipt", json!([later]));
        if !first["result"].is_null() && !second["result"].is_null() {
            assert_eq!(first["result"]["status"], "0x1");
            assert_eq!(second["result"]["status"], "0x1");
            break;
        }
        assert!(Instant::now() < deadline, "deferred transactions never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A keyless deployment (a legacy tx without a chain id, as the CREATE2
/// deployer's) is taken with `--allow-unprotected-txs`, from a sender it
/// funded first; without the flag it is refused (see the bad-input test).
#[test]
fn unprotected_txs_are_taken_with_the_flag() {
    let node = start_fulmen(&["--dev", "--allow-unprotected-txs"]);
    let keyless = PrivateKeySigner::random();
    let fund = transfer_raw(&signer(0), 0, keyless.address(), 1_000_000_000_000_000_000);
    try_rpc(node.addr, "eth_sendRawTransactionSync", json!([fund])).expect("fund");
    let mut deploy = TxLegacy {
        chain_id: None,
        nonce: 0,
        gas_price: 10 * GWEI,
        gas_limit: 1_000_000,
        to: TxKind::Create,
        input: bytecode("Probe"),
        ..Default::default()
    };
    let sig = keyless.sign_transaction_sync(&mut deploy).unwrap();
    let raw: Bytes = TxEnvelope::from(deploy.into_signed(sig))
        .encoded_2718()
        .into();
    let receipt =
        try_rpc(node.addr, "eth_sendRawTransactionSync", json!([raw])).expect("keyless deploy");
    assert_eq!(receipt["status"], "0x1");
    let contract = receipt["contractAddress"]
        .as_str()
        .expect("a contract")
        .to_string();
    assert_eq!(
        contract,
        keyless.address().create(0).to_string().to_lowercase()
    );
    let code = try_rpc(node.addr, "eth_getCode", json!([contract, "latest"])).expect("code");
    assert!(
        code.as_str().expect("hex").len() > 2,
        "no code at {contract}"
    );
    let tx = try_rpc(
        node.addr,
        "eth_getTransactionByHash",
        json!([receipt["transactionHash"]]),
    )
    .expect("tx");
    assert!(tx["chainId"].is_null(), "{tx}");
    assert_eq!(
        tx["from"],
        json!(keyless.address().to_string().to_lowercase())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors_and_the_node_keeps_serving() {
    let node = start_fulmen(&[
        "--dev",
        "--rpc-body-bytes-max",
        "400000",
        "--rpc-batch-max",
        "5",
    ]);
    let addr = node.addr;
    let alice = signer(6);
    let poor = PrivateKeySigner::random();
    let bob = signer(7).address();

    // Framing errors.
    let (status, body) = raw_post(addr, b"{\"jsonrpc\":\"2.0\",");
    assert_eq!(status, 200);
    assert!(body.contains("-32700"), "{body}");
    let (_, body) = raw_post(addr, br#"{"jsonrpc":"2.0","id":1,"method":7}"#);
    assert!(body.contains("-32600"), "{body}");
    let (code, message, _) = rpc_error(addr, "eth_noSuchMethod", json!([]));
    assert_eq!(code, -32601, "{message}");
    let (code, message, _) = rpc_error(addr, "eth_getBalance", json!(["0x1234", "latest"]));
    assert_eq!(code, -32602);
    assert!(message.contains("argument 0 (address)"), "{message}");
    let (code, message, _) = rpc_error(addr, "eth_getBalance", json!([]));
    assert_eq!(code, -32602);
    assert!(message.contains("address"), "{message}");
    let batch: Vec<_> = (0..6)
        .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"eth_chainId"}))
        .collect();
    let (_, body) = raw_post(addr, serde_json::to_string(&batch).unwrap().as_bytes());
    assert!(body.contains("batch too large"), "{body}");
    let (status, body) = raw_post(addr, &vec![b' '; 500_000]);
    assert_eq!(status, 413, "{body}");

    // Transaction errors, geth's wording.
    let send = |raw: &Bytes| rpc_error(addr, "eth_sendRawTransaction", json!([hex(raw)]));
    let (code, message, _) = send(&Bytes::from_static(&[0xc0, 0x01, 0x02]));
    assert_eq!(code, -32000);
    assert!(
        message.contains("invalid transaction encoding"),
        "{message}"
    );

    let good = transfer_raw(&alice, 0, bob, 1);
    let unsigned = TxEip1559 {
        chain_id: DEV_CHAIN_ID,
        gas_limit: 21_000,
        max_fee_per_gas: 10 * GWEI,
        to: TxKind::Call(bob),
        ..Default::default()
    };
    // r = 0 recovers no key; a high s is refused by EIP-2.
    let secp_n = U256::from_str_radix(
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
        16,
    )
    .unwrap();
    let proper = alice.sign_transaction_sync(&mut unsigned.clone()).unwrap();
    for signature in [
        alloy::primitives::Signature::new(U256::ZERO, U256::from(1), false),
        alloy::primitives::Signature::new(proper.r(), secp_n - proper.s(), !proper.v()),
    ] {
        let raw: Bytes = TxEnvelope::from(unsigned.clone().into_signed(signature))
            .encoded_2718()
            .into();
        let (code, message, _) = send(&raw);
        assert_eq!(code, -32000);
        assert!(
            message.contains("invalid transaction v, r, s values"),
            "{message}"
        );
    }

    let mut wrong_chain = TxEip1559 {
        chain_id: 1,
        nonce: 0,
        gas_limit: 21_000,
        max_fee_per_gas: 10 * GWEI,
        to: TxKind::Call(bob),
        ..Default::default()
    };
    let sig = alice.sign_transaction_sync(&mut wrong_chain).unwrap();
    let raw: Bytes = TxEnvelope::from(wrong_chain.into_signed(sig))
        .encoded_2718()
        .into();
    assert!(send(&raw).1.contains("invalid chain id"));

    let mut legacy = TxLegacy {
        chain_id: None,
        nonce: 0,
        gas_price: 10 * GWEI,
        gas_limit: 21_000,
        to: TxKind::Call(bob),
        ..Default::default()
    };
    let sig = alice.sign_transaction_sync(&mut legacy).unwrap();
    let raw: Bytes = TxEnvelope::from(legacy.into_signed(sig))
        .encoded_2718()
        .into();
    assert!(send(&raw).1.contains("only replay-protected"));

    let mut blob = TxEip4844 {
        chain_id: DEV_CHAIN_ID,
        gas_limit: 21_000,
        max_fee_per_gas: 10 * GWEI,
        to: bob,
        blob_versioned_hashes: vec![B256::repeat_byte(1)],
        max_fee_per_blob_gas: 1,
        ..Default::default()
    };
    let sig = alice.sign_transaction_sync(&mut blob).unwrap();
    let raw: Bytes = TxEnvelope::from(blob.into_signed(sig))
        .encoded_2718()
        .into();
    assert!(send(&raw).1.contains("transaction type not supported"));

    let low_gas = sign_1559(
        &alice,
        0,
        TxKind::Call(bob),
        U256::from(1),
        Bytes::new(),
        20_000,
    );
    assert!(send(&low_gas).1.contains("intrinsic gas too low"));
    let huge_gas = sign_1559(
        &alice,
        0,
        TxKind::Call(bob),
        U256::from(1),
        Bytes::new(),
        2_000_000_000,
    );
    assert!(send(&huge_gas).1.contains("exceeds block gas limit"));
    let oversized = sign_1559(
        &alice,
        0,
        TxKind::Call(bob),
        U256::ZERO,
        vec![1u8; 130 * 1024].into(),
        30_000_000,
    );
    assert!(send(&oversized).1.contains("oversized data"));
    let broke = transfer_raw(&poor, 0, bob, 1);
    assert!(
        send(&broke)
            .1
            .contains("insufficient funds for gas * price + value")
    );

    // Stateful: nonce too low, already known, replacement underpriced, pool full.
    assert!(
        rpc(addr, "eth_sendRawTransactionSync", json!([hex(&good)]))["result"]["status"] == "0x1"
    );
    assert!(send(&good).1.contains("already known"));
    let reused = transfer_raw(&alice, 0, bob, 2);
    assert!(send(&reused).1.contains("nonce too low"));
    let parked = transfer_raw(&alice, 5, bob, 1);
    assert!(rpc(addr, "eth_sendRawTransaction", json!([hex(&parked)]))["result"].is_string());
    let same_fee = transfer_raw(&alice, 5, bob, 2);
    assert!(
        send(&same_fee)
            .1
            .contains("replacement transaction underpriced")
    );

    // Still serving everyone else.
    let response = rpc(addr, "eth_blockNumber", json!([]));
    assert!(response["result"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn parked_transactions_are_bounded_per_sender() {
    let node = start_fulmen(&["--dev", "--pool-parked-per-sender-max", "2"]);
    let alice = signer(8);
    let bob = signer(9).address();
    for nonce in [3, 4] {
        let raw = transfer_raw(&alice, nonce, bob, 1);
        assert!(rpc(node.addr, "eth_sendRawTransaction", json!([hex(&raw)]))["result"].is_string());
    }
    let raw = transfer_raw(&alice, 5, bob, 1);
    let (code, message, _) = rpc_error(node.addr, "eth_sendRawTransaction", json!([hex(&raw)]));
    assert_eq!(code, -32000);
    assert!(message.contains("txpool is full"), "{message}");
}

/// A transaction parked for a nonce gap shows in `txpool_status`,
/// `txpool_content(From)` and `txpool_inspect` (queued, as geth nests it)
/// until the gap is filled; then both run and the pool is empty.
#[test]
fn txpool_shows_a_parked_transaction_until_its_gap_is_filled() {
    let node = start_fulmen(&["--dev"]);
    let alice = signer(7);
    let bob = signer(9).address();
    let gap = transfer_raw(&alice, 1, bob, 5);
    let hash = rpc(node.addr, "eth_sendRawTransaction", json!([hex(&gap)]))["result"].clone();
    assert!(hash.is_string(), "{hash}");
    let status = |expected: serde_json::Value| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = try_rpc(node.addr, "txpool_status", json!([])).expect("status");
            if got == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "txpool_status {got}, not {expected}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    status(json!({"pending": "0x0", "queued": "0x1"}));
    let sender = alice.address().to_checksum(None);
    let content = try_rpc(node.addr, "txpool_content", json!([])).expect("content");
    assert_eq!(content["queued"][&sender]["1"]["hash"], hash, "{content}");
    assert_eq!(content["pending"], json!({}));
    let from = try_rpc(node.addr, "txpool_contentFrom", json!([alice.address()])).expect("from");
    assert_eq!(from["queued"]["1"]["hash"], hash);
    let inspect = try_rpc(node.addr, "txpool_inspect", json!([])).expect("inspect");
    let line = inspect["queued"][&sender]["1"].as_str().expect("a line");
    assert!(
        line.starts_with(&format!("{}: 5 wei + 21000 gas × ", bob.to_checksum(None))),
        "{line}"
    );
    let fill = transfer_raw(&alice, 0, bob, 5);
    try_rpc(node.addr, "eth_sendRawTransactionSync", json!([hex(&fill)])).expect("fill");
    status(json!({"pending": "0x0", "queued": "0x0"}));
    let receipt = try_rpc(node.addr, "eth_getTransactionReceipt", json!([hash])).expect("r");
    assert_eq!(receipt["status"], "0x1");
}

#[tokio::test(flavor = "multi_thread")]
async fn blocks_seal_on_cadence_with_verifiable_roots_and_proofs() {
    let node = start_fulmen(&["--dev"]);
    let provider = node.wallet_provider(signer(0));
    let start = provider.get_block_number().await.unwrap();

    // Some activity: a contract with storage and events, and transfers.
    let receipt = provider
        .send_transaction(TransactionRequest::default().with_deploy_code(bytecode("Probe")))
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let probe = receipt.contract_address.unwrap();
    for _ in 0..3 {
        let tx = TransactionRequest::default()
            .with_to(probe)
            .with_input(Probe::bumpCall {}.abi_encode());
        provider
            .send_transaction(tx)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
    }
    let tx = TransactionRequest::default()
        .with_to(signer(1).address())
        .with_value(U256::from(7));
    let last = provider
        .send_transaction(tx)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();

    // Wait until the block holding the last tx is sealed.
    let target = last.block_number.unwrap();
    wait_for_block(&provider, target).await;
    let sealed = provider
        .get_transaction_receipt(last.transaction_hash)
        .await
        .unwrap()
        .unwrap();
    let block = provider
        .get_block_by_number(target.into())
        .full()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sealed.block_hash,
        Some(block.header.hash),
        "after sealing, lookups return the sealed hash"
    );

    // Blocks keep sealing when empty (their pace is the benchmarks' to measure).
    let before = provider.get_block_number().await.unwrap();
    wait_for_block(&provider, before + 2).await;
    let after = provider.get_block_number().await.unwrap();
    assert!(after > start);

    // Every header links to its parent and hashes to its RLP.
    for n in 1..=after {
        let b = provider
            .get_block_by_number(n.into())
            .await
            .unwrap()
            .unwrap();
        let parent = provider
            .get_block_by_number((n - 1).into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.header.parent_hash, parent.header.hash);
        assert!(b.header.timestamp > parent.header.timestamp);
        assert_eq!(
            b.header.inner.hash_slow(),
            b.header.hash,
            "block hash = keccak(rlp(header))"
        );
    }

    // Roots recomputed from what the RPC returns.
    for n in start + 1..=target {
        let block = provider
            .get_block_by_number(n.into())
            .full()
            .await
            .unwrap()
            .unwrap();
        let txs: Vec<TxEnvelope> = block
            .transactions
            .txns()
            .map(|t| t.inner.inner().clone())
            .collect();
        assert_eq!(
            calculate_transaction_root(&txs),
            block.header.transactions_root,
            "block {n} tx root"
        );
        let receipts = provider
            .get_block_receipts(n.into())
            .await
            .unwrap()
            .unwrap();
        let consensus: Vec<ReceiptEnvelope> = receipts
            .iter()
            .map(|r| {
                let logs: Vec<_> = r.inner.logs().iter().map(|l| l.inner.clone()).collect();
                let receipt = Receipt {
                    status: r.status().into(),
                    cumulative_gas_used: r.inner.cumulative_gas_used(),
                    logs,
                };
                let with_bloom = ReceiptWithBloom::new(receipt.clone(), receipt.bloom_slow());
                match r.inner.tx_type() {
                    alloy::consensus::TxType::Legacy => ReceiptEnvelope::Legacy(with_bloom),
                    alloy::consensus::TxType::Eip2930 => ReceiptEnvelope::Eip2930(with_bloom),
                    alloy::consensus::TxType::Eip1559 => ReceiptEnvelope::Eip1559(with_bloom),
                    alloy::consensus::TxType::Eip4844 => ReceiptEnvelope::Eip4844(with_bloom),
                    alloy::consensus::TxType::Eip7702 => ReceiptEnvelope::Eip7702(with_bloom),
                }
            })
            .collect();
        assert_eq!(
            calculate_receipt_root(&consensus),
            block.header.receipts_root,
            "block {n} receipts root"
        );
        // The raw encodings (debug_getRaw*) decode to the same block.
        let raw = |method: &str, param: serde_json::Value| {
            let answer = try_rpc(node.addr, method, json!([param])).expect(method);
            serde_json::from_value::<Bytes>(answer).expect("bytes")
        };
        let header = raw("debug_getRawHeader", json!(format!("{n:#x}")));
        assert_eq!(keccak256(&header), block.header.hash);
        let body = raw("debug_getRawBlock", json!(block.header.hash));
        let decoded =
            <alloy::consensus::Block<TxEnvelope> as alloy::rlp::Decodable>::decode(&mut &body[..])
                .expect("rlp");
        assert_eq!(decoded.header.hash_slow(), block.header.hash);
        assert_eq!(decoded.body.transactions, txs);
        assert_eq!(
            Some(U256::from(body.len())),
            block.header.size,
            "block {n} size"
        );
        for tx in &txs {
            let bytes = raw("debug_getRawTransaction", json!(tx.tx_hash()));
            assert_eq!(keccak256(&bytes), *tx.tx_hash());
        }
        let receipts = try_rpc(
            node.addr,
            "debug_getRawReceipts",
            json!([format!("{n:#x}")]),
        )
        .expect("raw receipts");
        let receipts: Vec<ReceiptEnvelope> = serde_json::from_value::<Vec<Bytes>>(receipts)
            .expect("a list of bytes")
            .iter()
            .map(|r| {
                <ReceiptEnvelope as alloy::eips::eip2718::Decodable2718>::decode_2718(&mut &r[..])
                    .expect("a receipt")
            })
            .collect();
        assert_eq!(receipts, consensus, "block {n} raw receipts");
    }

    // eth_getProof at the sealed head verifies against its state root. A seal
    // may land between reading the head and asking for the proof; the node
    // then refuses (proofs are for the latest sealed block), so ask again.
    let slot = B256::ZERO; // Probe.counter
    let mut attempts = 0;
    let (header, proof) = loop {
        attempts += 1;
        let head = provider.get_block_number().await.unwrap();
        let header = provider
            .get_block_by_number(head.into())
            .await
            .unwrap()
            .unwrap()
            .header;
        match provider
            .get_proof(probe, vec![slot])
            .block_id(head.into())
            .await
        {
            Ok(proof) => break (header, proof),
            Err(e) => assert!(attempts < 5, "eth_getProof kept failing: {e}"),
        }
    };
    // Field by field: alloy-trie's `account-ext` feature may add a field.
    #[allow(clippy::field_reassign_with_default)]
    let account = {
        let mut account = TrieAccount::default();
        account.nonce = proof.nonce;
        account.balance = proof.balance;
        account.storage_root = proof.storage_hash;
        account.code_hash = proof.code_hash;
        account
    };
    verify_proof(
        header.state_root,
        Nibbles::unpack(keccak256(probe)),
        Some(alloy::rlp::encode(account)),
        &proof.account_proof,
    )
    .expect("account proof verifies against the header's state root");
    let storage = &proof.storage_proof[0];
    assert_eq!(storage.value, U256::from(3));
    verify_proof(
        proof.storage_hash,
        Nibbles::unpack(keccak256(slot)),
        Some(alloy::rlp::encode(storage.value)),
        &storage.proof,
    )
    .expect("storage proof verifies against the account's storage root");
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_overrides_estimates_and_access_lists() {
    let node = start_fulmen(&["--dev"]);
    let addr = node.addr;
    let provider = node.wallet_provider(signer(1));
    let receipt = provider
        .send_transaction(TransactionRequest::default().with_deploy_code(bytecode("Probe")))
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let probe = receipt.contract_address.unwrap();
    let to = format!("{probe}");

    // Revert data as code 3, as geth.
    let input = format!("{}", Bytes::from(Probe::failCall {}.abi_encode()));
    let (code, message, data) = rpc_error(
        addr,
        "eth_call",
        json!([{"to": to, "data": input}, "latest"]),
    );
    assert_eq!(code, 3);
    assert!(message.contains("probe says no"), "{message}");
    assert!(
        data.as_str().unwrap().starts_with("0x08c379a0"),
        "Error(string) selector: {data}"
    );

    // State override of a storage slot.
    let input = format!("{}", Bytes::from(Probe::counterCall {}.abi_encode()));
    let overrides = json!({ to.clone(): { "stateDiff": { format!("{}", B256::ZERO): format!("{}", B256::with_last_byte(42)) } } });
    let response = rpc(
        addr,
        "eth_call",
        json!([{"to": to, "data": input}, "latest", overrides]),
    );
    assert_eq!(response["result"], format!("{}", B256::with_last_byte(42)));
    // Balance override lets a poor account pay.
    let poor = PrivateKeySigner::random().address();
    let overrides = json!({ format!("{poor}"): { "balance": "0xffffffffffffffffffff" } });
    let response = rpc(
        addr,
        "eth_call",
        json!([{"from": format!("{poor}"), "to": format!("{}", signer(2).address()), "value": "0x10", "gasPrice": "0x3b9aca00"}, "latest", overrides]),
    );
    assert!(response.get("error").is_none(), "{response}");

    // Estimate, then use exactly the estimate.
    let bump = format!(
        "{}",
        Bytes::from(
            Probe::burnCall {
                rounds: U256::from(50)
            }
            .abi_encode()
        )
    );
    let estimate = rpc(
        addr,
        "eth_estimateGas",
        json!([{"from": format!("{}", signer(1).address()), "to": to, "data": bump}]),
    );
    let gas = u64::from_str_radix(
        estimate["result"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert!(gas > 21_000);
    let tx = TransactionRequest::default()
        .with_to(probe)
        .with_input(
            Probe::burnCall {
                rounds: U256::from(50),
            }
            .abi_encode(),
        )
        .with_gas_limit(gas);
    assert!(
        provider
            .send_transaction(tx)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap()
            .status()
    );

    // Access list names the contract's touched slot.
    let set = format!(
        "{}",
        Bytes::from(
            Probe::setCall {
                key: U256::from(9),
                value: U256::from(1)
            }
            .abi_encode()
        )
    );
    let response = rpc(
        addr,
        "eth_createAccessList",
        json!([{"from": format!("{}", signer(1).address()), "to": to, "data": set}]),
    );
    let list = &response["result"]["accessList"];
    assert!(list.is_array(), "{response}");
    assert!(response["result"]["gasUsed"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn misc_methods_answer_like_geth() {
    let node = start_fulmen(&["--dev"]);
    let addr = node.addr;
    assert_eq!(rpc(addr, "net_version", json!([]))["result"], "4242");
    assert_eq!(rpc(addr, "eth_syncing", json!([]))["result"], false);
    assert!(
        rpc(addr, "web3_clientVersion", json!([]))["result"]
            .as_str()
            .unwrap()
            .starts_with("fulmen/")
    );
    assert!(rpc(addr, "eth_gasPrice", json!([]))["result"].is_string());
    assert!(rpc(addr, "eth_maxPriorityFeePerGas", json!([]))["result"].is_string());
    // Two blocks for the history: genesis and the first sealed one.
    wait_for_block(&node.provider(), 1).await;
    let history = rpc(
        addr,
        "eth_feeHistory",
        json!(["0x2", "latest", [25.0, 75.0]]),
    );
    assert_eq!(
        history["result"]["baseFeePerGas"].as_array().unwrap().len(),
        3,
        "{history}"
    );
    assert_eq!(history["result"]["reward"].as_array().unwrap().len(), 2);
    assert_eq!(
        rpc(addr, "eth_getUncleCountByBlockNumber", json!(["0x0"]))["result"],
        "0x0"
    );
    assert_eq!(
        rpc(addr, "eth_getBlockTransactionCountByNumber", json!(["0x0"]))["result"],
        "0x0"
    );
    assert!(rpc(addr, "eth_getBlockByNumber", json!(["0xffffff", false]))["result"].is_null());
    let (code, message, _) = rpc_error(
        addr,
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": "0x100000"}]),
    );
    assert_eq!(code, -32000);
    assert!(message.contains("max block range"), "{message}");
}

#[test]
fn cast_drives_the_node() {
    let node = start_fulmen(&["--dev"]);
    let url = node.url();
    assert_eq!(cast(&["chain-id", "--rpc-url", &url]), "4242");
    let key = format!("{}", B256::from(signer(3).to_bytes()));
    let to = format!("{}", signer(4).address());
    let before: u128 = cast(&["balance", &to, "--rpc-url", &url]).parse().unwrap();
    let out = cast(&[
        "send",
        "--rpc-url",
        &url,
        "--private-key",
        &key,
        &to,
        "--value",
        "12345",
        "--json",
    ]);
    let receipt: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(receipt["status"], "0x1", "{out}");
    let after: u128 = cast(&["balance", &to, "--rpc-url", &url]).parse().unwrap();
    assert_eq!(after - before, 12345);
    let hash = receipt["transactionHash"].as_str().unwrap();
    let fetched = cast(&["receipt", hash, "--rpc-url", &url, "--json"]);
    assert!(fetched.contains(hash));
    let number: u64 = cast(&["block-number", "--rpc-url", &url]).parse().unwrap();
    let _ = number;
    let block = cast(&["block", "latest", "--rpc-url", &url, "--json"]);
    assert!(block.contains("stateRoot"));
}

/// `--dev` unlocks the ten test-mnemonic accounts: cast sends with
/// `--unlocked` (one after another without waiting, nonces counted by the
/// node), and its messages and typed data are signed as cast signs them
/// offline with the same key. A node without `--dev` has no accounts.
#[test]
fn cast_unlocked_sends_and_signs_with_the_dev_accounts() {
    let node = start_fulmen(&["--dev"]);
    let url = node.url();
    let accounts = rpc(node.addr, "eth_accounts", json!([]))["result"].clone();
    let expected: Vec<String> = (0..10)
        .map(|i| format!("{:?}", signer(i).address()))
        .collect();
    let listed: Vec<String> = serde_json::from_value::<Vec<String>>(accounts)
        .unwrap()
        .into_iter()
        .map(|a| a.to_lowercase())
        .collect();
    assert_eq!(listed, expected);
    let from = format!("{}", signer(2).address());
    let to = format!("{}", signer(7).address());
    let before: u128 = cast(&["balance", &to, "--rpc-url", &url]).parse().unwrap();
    let out = cast(&[
        "send",
        "--rpc-url",
        &url,
        "--unlocked",
        "--from",
        &from,
        &to,
        "--value",
        "1000",
        "--json",
    ]);
    let receipt: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(receipt["status"], "0x1", "{out}");
    // cast rpc debug_traceTransaction: the transfer as one CALL frame.
    let hash = receipt["transactionHash"]
        .as_str()
        .expect("a hash")
        .to_string();
    let trace = cast(&[
        "rpc",
        "--rpc-url",
        &url,
        "debug_traceTransaction",
        &hash,
        r#"{"tracer":"callTracer"}"#,
    ]);
    let trace: serde_json::Value = serde_json::from_str(&trace).unwrap();
    assert_eq!(trace["type"], "CALL", "{trace}");
    assert_eq!(trace["value"], "0x3e8", "{trace}");
    assert!(trace["to"].as_str().unwrap().eq_ignore_ascii_case(&to));
    for _ in 0..3 {
        cast(&[
            "send",
            "--rpc-url",
            &url,
            "--unlocked",
            "--from",
            &from,
            &to,
            "--value",
            "1",
            "--async",
        ]);
    }
    // Each send is preconfirmed when it returns; the state shows it from
    // the next mini-block on.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let nonce: u64 = cast(&["nonce", &from, "--rpc-url", &url]).parse().unwrap();
        if nonce == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "four sends, nonce {nonce}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let after: u128 = cast(&["balance", &to, "--rpc-url", &url]).parse().unwrap();
    assert_eq!(after - before, 1003);
    // Signatures equal cast's offline ones with the account's key.
    let key = format!("{}", B256::from(signer(2).to_bytes()));
    let offline = cast(&["wallet", "sign", "--private-key", &key, "hello fulmen"]);
    let message = format!("0x{}", alloy::hex::encode("hello fulmen"));
    let signed = rpc(node.addr, "personal_sign", json!([message, from]))["result"].clone();
    assert_eq!(signed, json!(offline));
    let signed = rpc(node.addr, "eth_sign", json!([from, message]))["result"].clone();
    assert_eq!(signed, json!(offline));
    let typed = json!({
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"}
            ],
            "Mail": [{"name": "to", "type": "address"}, {"name": "contents", "type": "string"}]
        },
        "primaryType": "Mail",
        "domain": {"name": "fulmen", "version": "1", "chainId": 4242, "verifyingContract": to},
        "message": {"to": to, "contents": "hi"}
    });
    let offline = cast(&[
        "wallet",
        "sign",
        "--private-key",
        &key,
        "--data",
        &typed.to_string(),
    ]);
    let signed = rpc(node.addr, "eth_signTypedData_v4", json!([from, typed]))["result"].clone();
    assert_eq!(signed, json!(offline));
    let stranger = format!("{}", Address::repeat_byte(7));
    let (code, message, _) = rpc_error(
        node.addr,
        "eth_sendTransaction",
        json!([{"from": stranger, "to": to}]),
    );
    assert_eq!(
        (code, message),
        (-32000, format!("unknown account {stranger}"))
    );
    drop(node);

    let genesis = json!({
        "config": {"chainId": 777, "pragueTime": 0, "cancunTime": 0, "shanghaiTime": 0, "londonBlock": 0},
        "gasLimit": "0x1c9c380", "baseFeePerGas": "0x3b9aca00",
        "alloc": {from.clone(): {"balance": "0x21e19e0c9bab2400000"}}
    });
    let (path, _guard) = temp_file("genesis.json", &genesis.to_string());
    let node = start_fulmen(&["--genesis", path.to_str().unwrap()]);
    assert_eq!(
        rpc(node.addr, "eth_accounts", json!([]))["result"],
        json!([])
    );
    let (code, _, _) = rpc_error(
        node.addr,
        "eth_sendTransaction",
        json!([{"from": from, "to": to}]),
    );
    assert_eq!(code, -32601);
    let (code, _, _) = rpc_error(node.addr, "personal_sign", json!(["0x00", from]));
    assert_eq!(code, -32601);
}

/// The dev genesis holds the OP Stack preinstalls: a salted deploy through
/// the CREATE2 deployer lands at its CREATE2 address, Multicall3 batches
/// calls, Permit2 answers its own chain's domain separator, and EntryPoint
/// v0.7 executes.
#[test]
fn the_preinstalls_serve_salted_deploys_multicall_permit2_and_the_entrypoint() {
    let node = start_fulmen(&["--dev"]);
    let deployer = Address::from(alloy::primitives::hex!(
        "4e59b44847b379578588920cA78FbF26c0B4956C"
    ));
    let salt = B256::repeat_byte(0x42);
    let init = bytecode("Probe");
    let mut data = salt.to_vec();
    data.extend_from_slice(&init);
    let raw = sign_1559(
        &signer(5),
        0,
        TxKind::Call(deployer),
        U256::ZERO,
        data.into(),
        3_000_000,
    );
    let receipt = try_rpc(node.addr, "eth_sendRawTransactionSync", json!([raw])).expect("send");
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    let expected = deployer.create2(salt, keccak256(&init));
    let code = rpc(node.addr, "eth_getCode", json!([expected, "latest"]))["result"].clone();
    assert!(
        code.as_str().unwrap().len() > 2,
        "no code at the CREATE2 address {expected}"
    );
    // Multicall3: getBlockNumber and getEthBalance in one aggregate3.
    sol! {
        struct Call3 { address target; bool allowFailure; bytes callData; }
        struct Result3 { bool success; bytes returnData; }
        function aggregate3(Call3[] calls) returns (Result3[] returnData);
        function getEthBalance(address addr) returns (uint256 balance);
        function DOMAIN_SEPARATOR() returns (bytes32);
        function getNonce(address sender, uint192 key) returns (uint256 nonce);
    }
    let multicall = Address::from(alloy::primitives::hex!(
        "cA11bde05977b3631167028862bE2a173976CA11"
    ));
    let balance_of = getEthBalanceCall {
        addr: signer(0).address(),
    }
    .abi_encode();
    let calls = aggregate3Call {
        calls: vec![
            Call3 {
                target: multicall,
                allowFailure: false,
                callData: balance_of.clone().into(),
            },
            Call3 {
                target: multicall,
                allowFailure: false,
                callData: balance_of.into(),
            },
        ],
    };
    let answer = rpc(
        node.addr,
        "eth_call",
        json!([{"to": multicall, "data": Bytes::from(calls.abi_encode())}, "latest"]),
    );
    let out: Bytes = serde_json::from_value(answer["result"].clone()).expect("multicall answers");
    let results = aggregate3Call::abi_decode_returns(&out).expect("aggregate3 returns");
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r.success));
    // Permit2's domain separator is this chain's.
    let permit2 = Address::from(alloy::primitives::hex!(
        "000000000022D473030F116dDEE9F6B43aC78BA3"
    ));
    let answer = rpc(
        node.addr,
        "eth_call",
        json!([{"to": permit2, "data": Bytes::from(DOMAIN_SEPARATORCall {}.abi_encode())}]),
    );
    let mut domain =
        keccak256("EIP712Domain(string name,uint256 chainId,address verifyingContract)").to_vec();
    domain.extend_from_slice(keccak256("Permit2").as_slice());
    domain.extend_from_slice(&U256::from(4242).to_be_bytes::<32>());
    domain.extend_from_slice(B256::left_padding_from(permit2.as_slice()).as_slice());
    assert_eq!(answer["result"], json!(keccak256(&domain)));
    // EntryPoint v0.7 runs.
    let entry_point = Address::from(alloy::primitives::hex!(
        "0000000071727De22E5E9d8BAf0edAc6f37da032"
    ));
    let nonce = getNonceCall {
        sender: signer(1).address(),
        key: Default::default(),
    }
    .abi_encode();
    let answer = rpc(
        node.addr,
        "eth_call",
        json!([{"to": entry_point, "data": Bytes::from(nonce)}]),
    );
    assert_eq!(answer["result"], json!(B256::ZERO), "{answer}");
}

/// `debug_executionWitness` of a block holds every node of the proofs of
/// the accounts and slots the block touched, against its parent's state
/// root (compared with `eth_getProof` taken while that parent was the
/// latest block), the code it ran, the keys, and the parent's header. A
/// node that keeps none says so.
#[test]
fn execution_witnesses_hold_the_parent_state_proofs_of_what_a_block_touched() {
    let node = start_fulmen(&["--dev", "--rpc-witness-blocks", "8"]);
    let probe = deploy_probe(node.addr, 3);
    let bump = Bytes::copy_from_slice(&keccak256("bump()")[..4]);
    let block_number = |v: &serde_json::Value| {
        u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    let mut nonce = 0;
    let (number, proof) = loop {
        let raw = sign_1559(
            &signer(4),
            nonce,
            TxKind::Call(probe),
            U256::ZERO,
            bump.clone(),
            200_000,
        );
        nonce += 1;
        let receipt = try_rpc(node.addr, "eth_sendRawTransactionSync", json!([raw])).expect("bump");
        let number = block_number(&receipt["blockNumber"]);
        let head = || block_number(&rpc(node.addr, "eth_blockNumber", json!([]))["result"]);
        let before = head();
        let proof = rpc(
            node.addr,
            "eth_getProof",
            json!([probe, [B256::ZERO], "latest"]),
        )["result"]
            .clone();
        // The proof is of the bump's parent only if no seal came between.
        if before + 1 == number && head() == before {
            break (number, proof);
        }
        assert!(nonce < 20, "never caught a block before its seal");
    };
    wait_sealed(node.addr, number);
    let witness = rpc(
        node.addr,
        "debug_executionWitness",
        json!([format!("{number:#x}")]),
    );
    let witness = &witness["result"];
    let nodes: std::collections::HashSet<String> = witness["state"]
        .as_array()
        .expect("state nodes")
        .iter()
        .map(|n| n.as_str().unwrap().to_lowercase())
        .collect();
    let parent = rpc(
        node.addr,
        "eth_getBlockByNumber",
        json!([format!("{:#x}", number - 1), false]),
    );
    let parent_root: B256 = serde_json::from_value(parent["result"]["stateRoot"].clone()).unwrap();
    let parent_hash: B256 = serde_json::from_value(parent["result"]["hash"].clone()).unwrap();
    let mut wanted: Vec<String> = serde_json::from_value(proof["accountProof"].clone()).unwrap();
    let slot: Vec<String> =
        serde_json::from_value(proof["storageProof"][0]["proof"].clone()).unwrap();
    wanted.extend(slot);
    for n in &wanted {
        assert!(
            nodes.contains(&n.to_lowercase()),
            "the witness lacks proof node {n}"
        );
    }
    let root_node = nodes
        .iter()
        .any(|n| keccak256(alloy::primitives::hex::decode(n).unwrap()) == parent_root);
    assert!(root_node, "the witness holds the parent state root's node");
    let code = rpc(node.addr, "eth_getCode", json!([probe, "latest"]))["result"].clone();
    assert!(
        witness["codes"].as_array().unwrap().contains(&code),
        "the probe's code"
    );
    let keys: Vec<String> = serde_json::from_value(witness["keys"].clone()).unwrap();
    for (who, address) in [("probe", probe), ("sender", signer(4).address())] {
        let key = format!("{address:#x}");
        assert!(
            keys.iter().any(|k| k.eq_ignore_ascii_case(&key)),
            "the {who} among the keys"
        );
    }
    let headers = witness["headers"].as_array().unwrap();
    let last: Bytes = serde_json::from_value(headers.last().unwrap().clone()).unwrap();
    assert_eq!(keccak256(&last), parent_hash, "the parent's RLP header");
    // Without witnesses kept, the method says so.
    let plain = start_fulmen(&["--dev"]);
    wait_sealed(plain.addr, 1);
    let (_, message, _) = rpc_error(plain.addr, "debug_executionWitness", json!(["0x1"]));
    assert!(message.contains("rpc.witness_blocks"), "{message}");
}

/// Deploys the `Probe` test contract from dev account `from` (its first
/// transaction); its address.
/// `eth_getProof` at `latest` follows the head: each seal moves the state
/// trie on a moment before the new block is published, and a proof asked
/// for in that moment is taken at the new head, never refused. Asked in a
/// loop across three seals, every proof is served.
#[test]
fn proofs_at_latest_are_served_across_seals() {
    let node = start_fulmen(&["--dev"]);
    let head = || {
        let head = rpc(node.addr, "eth_blockNumber", json!([]))["result"].clone();
        u64::from_str_radix(head.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    let first = head();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut proofs = 0;
    while head() < first + 3 {
        assert!(
            Instant::now() < deadline,
            "three seals did not come in 30 s"
        );
        let proof = try_rpc(
            node.addr,
            "eth_getProof",
            json!([Address::ZERO, [B256::ZERO], "latest"]),
        );
        assert!(proof.is_ok(), "after {proofs} proofs: {proof:?}");
        proofs += 1;
    }
}

fn deploy_probe(addr: std::net::SocketAddr, from: u32) -> Address {
    let code = bytecode("Probe");
    let deploy = sign_1559(
        &signer(from),
        0,
        TxKind::Create,
        U256::ZERO,
        code,
        1_000_000,
    );
    let receipt = try_rpc(addr, "eth_sendRawTransactionSync", json!([deploy])).expect("deploy");
    serde_json::from_value(receipt["contractAddress"].clone()).expect("a contract address")
}

/// `eth_call`'s fourth parameter and `debug_traceCall`'s `blockOverrides`
/// set the block the call sees: number, timestamp and fee recipient.
#[test]
fn calls_and_traced_calls_see_the_block_overrides() {
    let node = start_fulmen(&["--dev"]);
    let probe = deploy_probe(node.addr, 3);
    let env = format!("{}", Bytes::copy_from_slice(&keccak256("env()")[..4]));
    let recipient = Address::repeat_byte(0xcc);
    let overrides = json!({"number": "0x123456", "time": "0x7fffffff", "feeRecipient": recipient});
    let word = |out: &str, i: usize| out[2 + 64 * i..2 + 64 * (i + 1)].to_string();
    let call = json!({"to": probe, "data": env});
    let out = rpc(
        node.addr,
        "eth_call",
        json!([call, "latest", {}, overrides]),
    )["result"]
        .clone();
    let out = out.as_str().expect("env() output").to_string();
    assert_eq!(word(&out, 0), format!("{:064x}", 0x123456), "block.number");
    assert_eq!(
        word(&out, 1),
        format!("{:064x}", 0x7fffffffu64),
        "block.timestamp"
    );
    assert_eq!(
        word(&out, 3),
        format!("{:0>64}", alloy::primitives::hex::encode(recipient)),
        "block.coinbase"
    );
    let traced = rpc(
        node.addr,
        "debug_traceCall",
        json!([call, "latest", {"tracer": "callTracer", "blockOverrides": overrides}]),
    );
    assert_eq!(
        traced["result"]["output"].as_str(),
        Some(out.as_str()),
        "{traced}"
    );
    // Without them, the pending block's.
    let plain = rpc(node.addr, "eth_call", json!([call, "latest"]))["result"].clone();
    assert_ne!(word(plain.as_str().unwrap(), 0), word(&out, 0));
}

/// `eth_simulateV1` keeps geth's limits and codes, links its simulated
/// blocks (BLOCKHASH of the previous simulated block is its hash, numbers
/// skipped are filled), and its `validation` checks nonces.
#[test]
fn simulate_v1_links_blocks_and_keeps_geths_limits() {
    let node = start_fulmen(&["--dev"]);
    let probe = deploy_probe(node.addr, 3);
    let parent_hash = format!(
        "{}",
        Bytes::copy_from_slice(&keccak256("parentHash()")[..4])
    );
    let call = json!({"to": probe, "data": parent_hash});
    // Over `latest`, the preconfirmed state (the probe is there): the
    // first simulated block follows the open block.
    let base =
        rpc(node.addr, "eth_getBlockByNumber", json!(["pending", false]))["result"]["number"]
            .clone();
    let base = u64::from_str_radix(base.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let first = base + 10;
    let root = B256::repeat_byte(0x42);
    let payload = json!({"blockStateCalls": [
        {"blockOverrides": {"number": format!("{first:#x}")}, "calls": []},
        {"blockOverrides": {"beaconRoot": root}, "calls": [call]},
    ]});
    let answer = rpc(node.addr, "eth_simulateV1", json!([payload, "latest"]));
    let blocks = answer["result"]
        .as_array()
        .unwrap_or_else(|| panic!("blocks: {answer}"));
    // Numbers up to `first` are filled (how many depends on the open block
    // when the call arrived), then `first + 1`, each the next number.
    let numbers: Vec<u64> = blocks
        .iter()
        .map(|b| {
            u64::from_str_radix(b["number"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
        })
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    assert_eq!(numbers.last(), Some(&(first + 1)));
    let (last, before) = (&blocks[blocks.len() - 1], &blocks[blocks.len() - 2]);
    assert_eq!(last["parentHash"], before["hash"]);
    assert_eq!(
        last["calls"][0]["returnData"], before["hash"],
        "BLOCKHASH of a simulated block"
    );
    assert_eq!(last["calls"][0]["status"], "0x1");
    assert_eq!(
        last["parentBeaconBlockRoot"],
        json!(root),
        "the overridden beacon root"
    );
    // Geth's codes.
    let too_many: Vec<serde_json::Value> = (0..257).map(|_| json!({"calls": []})).collect();
    let (code, _, _) = rpc_error(
        node.addr,
        "eth_simulateV1",
        json!([{"blockStateCalls": too_many}]),
    );
    assert_eq!(code, -38026);
    let backwards = json!({"blockStateCalls": [
        {"blockOverrides": {"number": format!("{first:#x}")}},
        {"blockOverrides": {"number": format!("{:#x}", first - 1)}},
    ]});
    let (code, message, _) = rpc_error(node.addr, "eth_simulateV1", json!([backwards, "latest"]));
    assert_eq!(code, -38020, "{message}");
    let from = signer(5).address();
    let far_nonce = json!({"validation": true, "blockStateCalls": [{"calls": [
        {"from": from, "to": from, "nonce": "0x9", "maxFeePerGas": "0x3b9aca00"}
    ]}]});
    let (code, message, _) = rpc_error(node.addr, "eth_simulateV1", json!([far_nonce, "latest"]));
    assert_eq!(code, -38011, "{message}");
}

/// The system contracts answer as on L1: EIP-2935's history gives each
/// recent block's hash (what `eth_getBlockByNumber` says), and EIP-4788's
/// beacon roots know each block's timestamp (with the zero root this L2's
/// headers carry). Read through cast, as a user would.
#[test]
fn the_system_contracts_serve_block_hashes_and_beacon_roots() {
    let node = start_fulmen(&["--dev"]);
    wait_sealed(node.addr, 3);
    let url = node.url();
    for number in 1..=2u64 {
        let block = rpc(
            node.addr,
            "eth_getBlockByNumber",
            json!([format!("{number:#x}"), false]),
        );
        let hash = block["result"]["hash"]
            .as_str()
            .expect("a sealed block")
            .to_string();
        let word = format!("{:#066x}", number);
        let answer = cast(&[
            "call",
            "0x0000F90827F1C53a10cb7A02335B175320002935",
            &word,
            "--rpc-url",
            &url,
        ]);
        assert_eq!(answer, hash, "EIP-2935 history of block {number}");
        let timestamp = u64::from_str_radix(
            block["result"]["timestamp"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16,
        )
        .unwrap();
        let word = format!("{:#066x}", timestamp);
        let root = cast(&[
            "call",
            "0x000F3df6D732807Ef1319fB7B8bB8522d0Beac02",
            &word,
            "--rpc-url",
            &url,
        ]);
        assert_eq!(root, format!("{:#066x}", 0), "EIP-4788 root at {timestamp}");
    }
    // A timestamp no block has reverts, as on L1.
    let (_, message, _) = rpc_error(
        node.addr,
        "eth_call",
        json!([{"to": "0x000F3df6D732807Ef1319fB7B8bB8522d0Beac02", "data": format!("{:#066x}", 12345)}]),
    );
    assert!(message.contains("execution reverted"), "{message}");
}

/// The dev chain runs Osaka: P256VERIFY at 0x100 (EIP-7951) checks
/// signatures made by OpenSSL (Node's crypto), directly and through a
/// passkey-check contract, and CLZ (EIP-7939) exists. A chain whose genesis
/// schedules no Osaka runs Prague: neither is there.
#[test]
fn osaka_rules_bring_p256verify_and_clz_where_the_genesis_schedules_them() {
    let output = std::process::Command::new("node")
        .arg(repo_root().join("tools/p256-vectors.mjs"))
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let vectors: serde_json::Value = serde_json::from_slice(&output.stdout).expect("vectors");
    let one = format!("0x{}1", "0".repeat(63));
    let precompile = "0x0000000000000000000000000000000000000100";
    // Returns 32 bytes of 1 for a valid signature, nothing otherwise.
    let p256 = |addr, input: &serde_json::Value| {
        rpc(
            addr,
            "eth_call",
            json!([{"to": precompile, "data": input, "gas": "0x20000"}, "latest"]),
        )["result"]
            .clone()
    };
    // CLZ(1) = 255, from init code run by eth_call: PUSH1 1 CLZ PUSH1 0
    // MSTORE PUSH1 32 PUSH1 0 RETURN.
    let clz = json!({"data": "0x6001" .to_owned() + "1e6000526020" + "6000f3"});
    let node = start_fulmen(&["--dev"]);
    assert_eq!(p256(node.addr, &vectors["valid"]), json!(one));
    assert_eq!(
        p256(node.addr, &vectors["high_s"]),
        json!(one),
        "no low-s rule"
    );
    for bad in [
        "wrong_hash",
        "wrong_key",
        "off_curve",
        "r_zero",
        "s_zero",
        "r_is_n",
        "s_is_n",
        "infinity",
        "x_is_p",
        "short",
        "long",
    ] {
        assert_eq!(p256(node.addr, &vectors[bad]), json!("0x"), "{bad}");
    }
    let clz_answer = rpc(node.addr, "eth_call", json!([clz, "latest"]));
    assert_eq!(
        clz_answer["result"],
        json!(format!("{:#066x}", 255)),
        "{clz_answer}"
    );
    // Through a contract, as a passkey wallet checks.
    let raw = sign_1559(
        &signer(6),
        0,
        TxKind::Create,
        U256::ZERO,
        bytecode("PasskeyCheck"),
        1_000_000,
    );
    let receipt = try_rpc(node.addr, "eth_sendRawTransactionSync", json!([raw])).expect("deploy");
    let checker = receipt["contractAddress"].clone();
    sol! {
        function verify(bytes32 hash, bytes32 r, bytes32 s, bytes32 x, bytes32 y) returns (bool);
    }
    let words = |name: &str| -> Vec<B256> {
        let bytes: Bytes = serde_json::from_value(vectors[name].clone()).unwrap();
        bytes.chunks(32).map(B256::from_slice).collect()
    };
    for (name, expected) in [("valid", true), ("wrong_hash", false)] {
        let w = words(name);
        let call = verifyCall {
            hash: w[0],
            r: w[1],
            s: w[2],
            x: w[3],
            y: w[4],
        }
        .abi_encode();
        let answer = rpc(
            node.addr,
            "eth_call",
            json!([{"to": checker, "data": Bytes::from(call)}]),
        );
        let word = if expected {
            B256::with_last_byte(1)
        } else {
            B256::ZERO
        };
        assert_eq!(answer["result"], json!(word), "{name}: {answer}");
    }
    drop(node);
    let genesis = json!({
        "config": {"chainId": 777, "pragueTime": 0, "cancunTime": 0, "shanghaiTime": 0, "londonBlock": 0},
        "gasLimit": "0x1c9c380", "baseFeePerGas": "0x3b9aca00", "alloc": {}
    });
    let (path, _guard) = temp_file("genesis.json", &genesis.to_string());
    let node = start_fulmen(&["--genesis", path.to_str().unwrap()]);
    assert_eq!(
        p256(node.addr, &vectors["valid"]),
        json!("0x"),
        "no P256VERIFY before Osaka"
    );
    let answer = rpc(node.addr, "eth_call", json!([clz, "latest"]));
    assert!(
        answer.get("error").is_some(),
        "no CLZ before Osaka: {answer}"
    );
}

#[test]
fn sigterm_stops_the_node_cleanly() {
    let mut node = start_fulmen(&["--dev"]);
    let status = node.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooded_inbox_answers_at_once_and_loses_nothing() {
    // A one-slot inbox: concurrent sends either get through or are refused at
    // once with the inbox error; every accepted one is executed.
    let node = start_fulmen(&["--dev", "--pool-inbox-capacity", "1"]);
    let addr = node.addr;
    let mut handles = Vec::new();
    for sender in 0..8u32 {
        handles.push(std::thread::spawn(move || {
            let key = signer(sender);
            let mut accepted = Vec::new();
            let mut refused = 0;
            let mut nonce = 0;
            for _ in 0..40 {
                let raw = transfer_raw(&key, nonce, Address::repeat_byte(0x77), 1);
                let response = rpc(addr, "eth_sendRawTransaction", json!([hex(&raw)]));
                match (response.get("result"), response.get("error")) {
                    (Some(hash), None) => {
                        accepted.push(hash.as_str().unwrap().to_string());
                        nonce += 1;
                    }
                    (None, Some(error)) => {
                        let message = error["message"].as_str().unwrap();
                        assert!(
                            message.contains("inbox is at capacity"),
                            "unexpected error: {message}"
                        );
                        refused += 1;
                    }
                    _ => panic!("malformed response {response}"),
                }
            }
            (accepted, refused)
        }));
    }
    let mut accepted = Vec::new();
    for handle in handles {
        let (ok, _refused) = handle.join().unwrap();
        accepted.extend(ok);
    }
    for hash in &accepted {
        let receipt = rpc(addr, "eth_getTransactionReceipt", json!([hash]));
        assert_eq!(
            receipt["result"]["status"], "0x1",
            "accepted tx {hash} was executed"
        );
    }
    let total: u64 = (0..8)
        .map(|i| {
            rpc(
                addr,
                "eth_getTransactionCount",
                json!([format!("{}", signer(i).address()), "latest"]),
            )["result"]
                .as_str()
                .map(|n| u64::from_str_radix(n.trim_start_matches("0x"), 16).unwrap())
                .unwrap()
        })
        .sum();
    assert_eq!(
        total as usize,
        accepted.len(),
        "nonces account for exactly the accepted txs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn eip1898_block_objects_and_historical_state() {
    let node = start_fulmen(&["--dev"]);
    let addr = node.addr;
    let alice = format!("{}", signer(0).address());
    let genesis = rpc(addr, "eth_getBlockByNumber", json!(["0x0", false]))["result"].clone();
    let by_hash = rpc(
        addr,
        "eth_getBalance",
        json!([alice, {"blockHash": genesis["hash"]}]),
    );
    assert_eq!(by_hash["result"], "0x21e19e0c9bab2400000");
    let by_number = rpc(
        addr,
        "eth_getBalance",
        json!([alice, {"blockNumber": "0x0"}]),
    );
    assert_eq!(by_number["result"], "0x21e19e0c9bab2400000");
    let raw = transfer_raw(&signer(0), 0, signer(1).address(), 1);
    assert_eq!(
        rpc(addr, "eth_sendRawTransactionSync", json!([hex(&raw)]))["result"]["status"],
        "0x1"
    );
    // Preconfirmed state moved; genesis state did not.
    assert_ne!(
        rpc(addr, "eth_getBalance", json!([alice, "latest"]))["result"],
        "0x21e19e0c9bab2400000"
    );
    assert_eq!(
        rpc(addr, "eth_getBalance", json!([alice, "0x0"]))["result"],
        "0x21e19e0c9bab2400000"
    );
    let (code, message, _) = rpc_error(
        addr,
        "eth_getBalance",
        json!([alice, {"blockHash": format!("{}", B256::repeat_byte(9)), "requireCanonical": true}]),
    );
    assert_eq!(code, -32000);
    assert!(message.contains("header not found"), "{message}");
    let (code, _, _) = rpc_error(addr, "eth_getBalance", json!([alice, "0xffffff"]));
    assert_eq!(code, -32000);
}

/// Sends `eth_chainId` on an open keep-alive connection and reads the
/// answer's body; `None` once the node has closed the connection.
fn chain_id_on(stream: &mut std::net::TcpStream) -> Option<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(format!("{head}{body}").as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok();
        }
    }
    let mut answer = vec![0u8; length?];
    reader.read_exact(&mut answer).ok()?;
    String::from_utf8(answer).ok()
}

#[test]
fn two_net_cores_share_the_port() {
    // Room for one HTTP connection per net core: a new connection on a core
    // closes that core's idle one to make room.
    let (config, _guard) = temp_file(
        "node.toml",
        "[cores]\nnet = [0, 1]\nseq = 1\nexec = [0]\nstorage = [1]\n\
         [rpc]\nconnections_per_core_max = 1\n",
    );
    let node = start_fulmen(&["--dev", "--config", config.to_str().unwrap()]);
    let addr = node.addr;
    let alice = signer(8);
    // Each raw_post opens a new connection; the kernel spreads them over both net cores.
    for nonce in 0..20 {
        let raw = transfer_raw(&alice, nonce, signer(9).address(), 1);
        assert_eq!(
            rpc(addr, "eth_sendRawTransactionSync", json!([hex(&raw)]))["result"]["status"],
            "0x1"
        );
    }
    let count = rpc(
        addr,
        "eth_getTransactionCount",
        json!([format!("{}", alice.address()), "latest"]),
    );
    assert_eq!(count["result"], "0x14");
    // Both cores serve: two connections that each answered stay open at
    // once only when each core holds one of them.
    let deadline = Instant::now() + WAIT_MAX;
    let mut open: Vec<std::net::TcpStream> = Vec::new();
    while open.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no two connections were open at once: one net core served them all"
        );
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let answer = chain_id_on(&mut stream).expect("a new connection is served");
        assert!(answer.contains(r#""result":"0x1092""#), "{answer}");
        open.push(stream);
        open.retain_mut(|stream| chain_id_on(stream).is_some());
    }
}

/// Deploys the Token (constructor argument: a supply of 1,000,000 to the
/// sender); its receipt and address.
async fn deploy_token(
    provider: &impl Provider,
) -> (alloy::rpc::types::TransactionReceipt, Address) {
    let mut code = bytecode("Token").to_vec();
    code.extend_from_slice(&U256::from(1_000_000u64).to_be_bytes::<32>());
    let deploy = TransactionRequest::default().with_deploy_code(code);
    let receipt = provider
        .send_transaction(deploy)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let token = receipt.contract_address.expect("contract address");
    (receipt, token)
}

/// Items from a poller stream until `enough` of them, or `WAIT_MAX`.
async fn collect<T>(
    stream: &mut (impl futures::Stream<Item = Vec<T>> + Unpin),
    enough: usize,
) -> Vec<T> {
    use futures::StreamExt;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    while got.len() < enough {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(batch)) => got.extend(batch),
            _ => break,
        }
    }
    got
}

/// Every item a poller stream yields within `window`.
async fn collect_for<T>(
    stream: &mut (impl futures::Stream<Item = Vec<T>> + Unpin),
    window: Duration,
) -> Vec<T> {
    use futures::StreamExt;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(batch)) = tokio::time::timeout_at(deadline, stream.next()).await {
        got.extend(batch);
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_deliver_blocks_logs_and_pending_txs_once_to_alloy_s_pollers() {
    let node = start_fulmen(&["--dev"]);
    let alice = signer(0);
    let bob = signer(1).address();
    let provider = node.wallet_provider(alice.clone());
    let (receipt, token) = deploy_token(&provider).await;
    // A pending filter made after the deploy does not report it.
    let id = rpc(node.addr, "eth_newPendingTransactionFilter", json!([]))["result"].clone();
    let poll = Duration::from_millis(100);
    // eth_newBlockFilter, eth_newFilter, eth_newPendingTransactionFilter
    // and eth_getFilterChanges, as alloy's pollers use them.
    let mut blocks = provider
        .watch_blocks()
        .await
        .unwrap()
        .with_poll_interval(poll)
        .into_stream();
    let transfers = Filter::new()
        .address(token)
        .event_signature(Token::Transfer::SIGNATURE_HASH);
    let mut logs = provider
        .watch_logs(&transfers)
        .await
        .unwrap()
        .with_poll_interval(poll)
        .into_stream();
    let mut pending = provider
        .watch_pending_transactions()
        .await
        .unwrap()
        .with_poll_interval(poll)
        .into_stream();
    let mut sent = Vec::new();
    for i in 1..=3u64 {
        let call = Token::transferCall {
            to: bob,
            value: U256::from(i),
        };
        let tx = TransactionRequest::default()
            .with_to(token)
            .with_input(call.abi_encode());
        sent.push(*provider.send_transaction(tx).await.unwrap().tx_hash());
    }
    // A preconfirmed receipt's block is addressable for logs at once.
    let last = provider
        .get_transaction_receipt(sent[2])
        .await
        .unwrap()
        .expect("preconfirmed");
    let since = Filter::new()
        .address(token)
        .from_block(last.block_number.expect("a block number"));
    let found = provider.get_logs(&since).await.unwrap();
    assert!(found.iter().any(|l| l.transaction_hash == Some(sent[2])));
    let got = collect(&mut pending, 3).await;
    for hash in &sent {
        assert_eq!(got.iter().filter(|h| *h == hash).count(), 1, "{hash} once");
    }
    let raw = rpc(node.addr, "eth_getFilterChanges", json!([id]))["result"].clone();
    assert_eq!(raw, json!(sent), "each preconfirmed tx once, in order");
    // Logs come once their block is sealed, each once (the deploy's mint
    // too when its block was sealed after the filter was made).
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT_MAX;
    while !sent.iter().all(|h| {
        got.iter()
            .any(|l: &alloy::rpc::types::Log| l.transaction_hash == Some(*h))
    }) && Instant::now() < deadline
    {
        got.extend(collect_for(&mut logs, Duration::from_millis(200)).await);
    }
    let hashes: Vec<B256> = got.iter().filter_map(|l| l.transaction_hash).collect();
    let without_mint: Vec<B256> = hashes
        .iter()
        .copied()
        .filter(|h| *h != receipt.transaction_hash)
        .collect();
    assert_eq!(without_mint, sent);
    assert!(hashes.len() <= sent.len() + 1, "{hashes:?}");
    assert!(got.iter().all(|l| l.block_hash.is_some()));
    let got = collect(&mut blocks, 2).await;
    assert!(got.len() >= 2);
    let first = provider
        .get_block_by_hash(got[0])
        .await
        .unwrap()
        .expect("a sealed block");
    let second = provider
        .get_block_by_hash(got[1])
        .await
        .unwrap()
        .expect("a sealed block");
    assert_eq!(second.header.number, first.header.number + 1);
    // Nothing twice: more polls, past the next seal, bring no log and no tx
    // again.
    let window = Duration::from_millis(1500);
    let again = collect_for(&mut logs, window).await;
    assert!(again.is_empty(), "a log came twice: {again:?}");
    let again = collect_for(&mut pending, window).await;
    assert!(again.iter().all(|h| !sent.contains(h)), "a tx came twice");
    // An unknown id is refused as geth does.
    let (_, message, _) = rpc_error(node.addr, "eth_getFilterChanges", json!(["0x1234"]));
    assert_eq!(message, "filter not found");
}
