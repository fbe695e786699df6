//! Hardening of the sequencer against cheap transactions (issue 12): one
//! transaction's log record, the per-transaction gas cap, and parking by
//! unfunded senders. Each test drives the release binary over HTTP.

mod common;

use std::net::SocketAddr;

use alloy::primitives::{Address, Bytes, TxKind, U256};
use common::*;
use serde_json::{Value, json};

/// Init code that emits `bytes` zero bytes as one LOG0 while it deploys
/// nothing: PUSH3 bytes, PUSH0, LOG0, STOP. Memory expansion and 8 gas a
/// byte make 1.5 MB cost about 16.5M gas.
fn log_initcode(bytes: u32) -> Bytes {
    let b = bytes.to_be_bytes();
    Bytes::from(vec![0x62, b[1], b[2], b[3], 0x5f, 0xa0, 0x00])
}

fn send(addr: SocketAddr, raw: &Bytes) -> Result<Value, String> {
    try_rpc(addr, "eth_sendRawTransaction", json!([raw]))
}

fn send_sync(addr: SocketAddr, raw: &Bytes) -> Value {
    rpc(addr, "eth_sendRawTransactionSync", json!([raw]))["result"].clone()
}

fn nonce_of(addr: SocketAddr, who: Address) -> u64 {
    let hex = rpc(addr, "eth_getTransactionCount", json!([who, "latest"]))["result"].clone();
    u64::from_str_radix(hex.as_str().expect("hex").trim_start_matches("0x"), 16).expect("nonce")
}

/// A transaction whose log record would not fit a 1 MiB log segment used to
/// fail the log write and stop preconfirmation for everyone until restart
/// (and lose acknowledged transactions in memory mode). Now the sequencer
/// refuses it with a clear reason before anything reaches the log, and the
/// node keeps preconfirming; after a restart every acknowledged tx is there.
#[test]
fn a_transaction_too_large_for_the_log_is_refused_and_the_node_goes_on() {
    for durability in ["durable", "memory"] {
        let dir = tempdir::TempDir::new("fulmen-bigrecord");
        let args = [
            "--dev",
            "--storage-segment-mb",
            "1",
            "--durability",
            durability,
        ];
        let mut node = start_fulmen_in(&dir.0, &args);
        let alice = signer(0);
        let bob = address_of(&signer(1));
        let mut acked = Vec::new();
        for nonce in 0..3 {
            let raw = transfer_raw(&alice, nonce, bob, 1);
            acked.push(send_sync(node.addr, &raw)["transactionHash"].clone());
        }
        let big = sign_1559(
            &alice,
            3,
            TxKind::Create,
            U256::ZERO,
            log_initcode(1_200_000),
            16_700_000,
        );
        let (code, message, _) = rpc_error(node.addr, "eth_sendRawTransaction", json!([big]));
        assert_eq!(code, -32000, "{message}");
        assert!(
            message.starts_with("transaction too large for the log"),
            "{durability}: {message}"
        );
        // Nothing of it was applied: the nonce did not move, and the node
        // goes on preconfirming.
        assert_eq!(nonce_of(node.addr, address_of(&alice)), 3);
        for nonce in 3..6 {
            let raw = transfer_raw(&alice, nonce, bob, 1);
            acked.push(send_sync(node.addr, &raw)["transactionHash"].clone());
        }
        // A clean stop: memory mode then loses nothing either (a kill -9
        // may lose its last flush, as documented).
        assert!(node.terminate().success());
        let node = start_fulmen_in(&dir.0, &args);
        for hash in &acked {
            let receipt = rpc(node.addr, "eth_getTransactionReceipt", json!([hash]));
            assert_eq!(receipt["result"]["status"], "0x1", "{durability}: {hash}");
        }
    }
}

/// Many large records at once (several mini-blocks, more bytes than one
/// segment holds) are all written: each mini-block is bounded in bytes and
/// the log spreads a group over segments.
#[test]
fn records_larger_together_than_a_segment_are_all_logged() {
    let dir = tempdir::TempDir::new("fulmen-bigstorm");
    let args = ["--dev", "--storage-segment-mb", "1"];
    let node = start_fulmen_in(&dir.0, &args);
    let bob = address_of(&signer(9));
    // 8 senders x 3 txs x ~300 KB of logs = ~7 MB, sent concurrently.
    let hashes: Vec<Value> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8u32)
            .map(|i| {
                let addr = node.addr;
                scope.spawn(move || {
                    let key = signer(i);
                    let mut mine = Vec::new();
                    for nonce in 0..3 {
                        let raw = sign_1559(
                            &key,
                            nonce,
                            TxKind::Create,
                            U256::ZERO,
                            log_initcode(300_000),
                            5_000_000,
                        );
                        let answer = send(addr, &raw).expect("a large-log tx is accepted");
                        mine.push(answer);
                    }
                    let raw = transfer_raw(&key, 3, bob, 1);
                    mine.push(send(addr, &raw).expect("a transfer after them is accepted"));
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    assert_eq!(hashes.len(), 32);
    drop(node);
    let node = start_fulmen_in(&dir.0, &args);
    for hash in &hashes {
        let receipt = rpc(node.addr, "eth_getTransactionReceipt", json!([hash]));
        assert_eq!(receipt["result"]["status"], "0x1", "{hash}");
    }
}

/// A transaction may not ask for more gas than the per-transaction cap
/// (EIP-7825's 2^24 by default), whatever the block gas limit.
#[test]
fn the_per_transaction_gas_cap_is_enforced_with_geths_wording() {
    let node = start_fulmen(&["--dev"]);
    let alice = signer(0);
    let raw = sign_1559(
        &alice,
        0,
        TxKind::Call(address_of(&signer(1))),
        U256::from(1),
        Bytes::new(),
        30_000_000,
    );
    let (code, message, _) = rpc_error(node.addr, "eth_sendRawTransaction", json!([raw]));
    assert_eq!(code, -32000);
    assert_eq!(
        message,
        "transaction gas limit too high (cap: 16777216, tx: 30000000)"
    );
    let capped = start_fulmen(&["--dev", "--tx-gas-limit-max", "100000"]);
    let raw = sign_1559(
        &alice,
        0,
        TxKind::Call(address_of(&signer(1))),
        U256::from(1),
        Bytes::new(),
        200_000,
    );
    let (_, message, _) = rpc_error(capped.addr, "eth_sendRawTransaction", json!([raw]));
    assert_eq!(
        message,
        "transaction gas limit too high (cap: 100000, tx: 200000)"
    );
}

/// A sender without funds cannot park future-nonce transactions (they used
/// to fill the parking lot for free).
#[test]
fn unfunded_senders_cannot_park() {
    let node = start_fulmen(&["--dev"]);
    let nobody = alloy::signers::local::PrivateKeySigner::random();
    let raw = transfer_raw(&nobody, 1, address_of(&signer(1)), 1);
    let (code, message, _) = rpc_error(node.addr, "eth_sendRawTransaction", json!([raw]));
    assert_eq!(code, -32000);
    assert!(
        message.starts_with("insufficient funds for gas * price + value"),
        "{message}"
    );
    let parked = rpc(
        node.addr,
        "eth_getTransactionCount",
        json!([address_of(&nobody), "pending"]),
    );
    assert_eq!(parked["result"], "0x0");
}

/// eth_estimateGas searches up to the per-transaction gas cap: an estimate
/// above it would name a transaction that the node then refuses.
#[test]
fn estimates_stay_within_the_per_transaction_gas_cap() {
    let node = start_fulmen(&["--dev"]);
    let from = address_of(&signer(0));
    // blake2f with 20M rounds needs 20M gas (1 gas a round): over the cap.
    let mut input = vec![0u8; 213];
    input[..4].copy_from_slice(&20_000_000u32.to_be_bytes());
    input[212] = 1;
    let call = json!({"from": from, "to": "0x0000000000000000000000000000000000000009",
        "data": Bytes::from(input)});
    let answer = rpc(node.addr, "eth_estimateGas", json!([call]));
    assert!(answer.get("error").is_some(), "{answer}");
    let transfer = json!({"from": from, "to": address_of(&signer(1)), "value": "0x1"});
    assert_eq!(
        rpc(node.addr, "eth_estimateGas", json!([transfer]))["result"],
        "0x5208"
    );
}

/// Parked successors that run in one burst when their gap fills carry more
/// log bytes than one mini-block holds: the ones that do not fit wait for
/// the next mini-block (and for the next block when it closes first), and
/// every one of them is preconfirmed and survives a restart.
#[test]
fn a_burst_of_promoted_transactions_spreads_over_mini_blocks() {
    let dir = tempdir::TempDir::new("fulmen-burst");
    // 1 MiB segments: a mini-block record holds about 1 MB, a tx ~0.5 MB.
    let args = ["--dev", "--storage-segment-mb", "1"];
    let mut node = start_fulmen_in(&dir.0, &args);
    let alice = signer(3);
    let big = |nonce| {
        sign_1559(
            &alice,
            nonce,
            TxKind::Create,
            U256::ZERO,
            log_initcode(300_000),
            5_000_000,
        )
    };
    for nonce in 1..10 {
        send(node.addr, &big(nonce)).expect("parked");
    }
    send(node.addr, &big(0)).expect("accepted");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while nonce_of(node.addr, address_of(&alice)) < 10 {
        assert!(std::time::Instant::now() < deadline, "not all 10 ran");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(node.terminate().success());
    let node = start_fulmen_in(&dir.0, &args);
    assert_eq!(nonce_of(node.addr, address_of(&alice)), 10);
}
