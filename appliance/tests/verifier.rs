//! `fulmen run --verifier`: a second node that rebuilds the chain from L1
//! alone (the pinned anvil), block for block, beside the sequencer posting
//! to that L1; and that resumes after kill -9.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use alloy::primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use common::l1::*;
use common::*;
use serde_json::{Value, json};

/// A verifier of the chain posted to `l1`.
fn start_verifier(dir: &Path, l1: &str, config: &str) -> Proc {
    let path = dir.join("node.toml");
    std::fs::write(&path, config).expect("write config");
    let path = path.to_str().expect("utf-8").to_string();
    start_fulmen_in(
        dir,
        &["--dev", "--verifier", "--config", &path, "--l1-rpc", l1],
    )
}

fn block(addr: SocketAddr, number: u64) -> Value {
    call(
        addr,
        "eth_getBlockByNumber",
        json!([format!("{number:#x}"), false]),
    )
}

/// Blocks `0..=last` of both nodes agree on every header field that
/// commits to execution: hash, state, transactions and receipts roots,
/// bloom, gas used.
fn assert_same_chain(sequencer: SocketAddr, verifier: SocketAddr, last: u64) {
    for n in 0..=last {
        let (a, b) = (block(sequencer, n), block(verifier, n));
        for field in [
            "hash",
            "stateRoot",
            "transactionsRoot",
            "receiptsRoot",
            "logsBloom",
            "gasUsed",
            "timestamp",
        ] {
            assert_eq!(a[field], b[field], "block {n}: {field}");
        }
    }
}

/// Two contract deployments, a token transfer and a call that reverts, from
/// test account 5 (nonces from `nonce`), and an EIP-7702 delegation used at
/// once; returns the token's address and the txs' hashes.
fn contract_traffic(addr: SocketAddr, nonce: u64) -> (Address, Vec<B256>) {
    let from = signer(5);
    let token = from.address().create(nonce);
    let probe = from.address().create(nonce + 1);
    let mut transfer = keccak256("transfer(address,uint256)")[..4].to_vec();
    transfer.extend_from_slice(&[0u8; 12]);
    transfer.extend_from_slice(Address::repeat_byte(7).as_slice());
    transfer.extend_from_slice(&U256::from(5).to_be_bytes::<32>());
    let fail = keccak256("fail()")[..4].to_vec();
    let txs = [
        sign_1559(
            &from,
            nonce,
            TxKind::Create,
            U256::ZERO,
            bytecode("Token"),
            3_000_000,
        ),
        sign_1559(
            &from,
            nonce + 1,
            TxKind::Create,
            U256::ZERO,
            bytecode("Probe"),
            3_000_000,
        ),
        sign_1559(
            &from,
            nonce + 2,
            TxKind::Call(token),
            U256::ZERO,
            Bytes::from(transfer),
            100_000,
        ),
        sign_1559(
            &from,
            nonce + 3,
            TxKind::Call(probe),
            U256::ZERO,
            Bytes::from(fail),
            100_000,
        ),
    ];
    // EIP-7702: test account 6 sends a tx that makes account 7 delegate to
    // the Probe and calls bump() on it.
    let bump = Bytes::from(keccak256("bump()")[..4].to_vec());
    let set_code = set_code_raw(&signer(6), 0, &signer(7), 0, probe, bump);
    let txs: Vec<Bytes> = txs.into_iter().chain([set_code]).collect();
    let hashes = txs
        .iter()
        .map(|raw| {
            serde_json::from_value(call(addr, "eth_sendRawTransaction", json!([raw])))
                .expect("a hash")
        })
        .collect();
    (token, hashes)
}

/// Waits until the sequencer's `safe` passes its head of now and the
/// verifier has derived that far; returns that safe block.
fn wait_derived(sequencer: &Proc, verifier: &Proc) -> u64 {
    let last = block_number(sequencer.addr, "latest");
    wait_until(90, "the sequencer's safe passes its head", || {
        block_number(sequencer.addr, "safe") > last
    });
    let safe = block_number(sequencer.addr, "safe");
    // An unwind restarts the verifier: it may not answer for a moment.
    wait_until(
        90,
        "the verifier derives up to the sequencer's safe",
        || {
            try_rpc(
                verifier.addr,
                "eth_getBlockByNumber",
                json!(["latest", false]),
            )
            .is_ok_and(|b| quantity(&b["number"]) >= safe)
        },
    );
    safe
}

/// A blob tx to the inbox from test account 8 (not the batcher), holding
/// frames of a channel that would decode: the verifier must ignore it.
fn post_garbage_from_a_stranger(l1: &Proc) {
    use fulmen_da::post::{BlobFees, SidecarForm, blob_tx};
    let stranger = signer(8);
    let blob = fulmen_da::blob::encode_blob(b"\x00not frames from the batcher").expect("a blob");
    let tx = blob_tx(
        &[blob],
        fulmen_da::post::default_inbox(DEV_CHAIN_ID),
        0,
        &BlobFees::from_market(10 * GWEI, GWEI, GWEI),
        31337,
        &stranger,
        SidecarForm::Eip4844,
    )
    .expect("a blob tx");
    call(l1.addr, "eth_sendRawTransaction", json!([tx.raw]));
}

#[test]
fn a_verifier_rebuilds_the_chain_from_l1_alone_and_resumes_after_kill_9() {
    let l1 = start_l1("prague", "1");
    let seq_dir = tempdir::TempDir::new("fulmen-seq");
    let ver_dir = tempdir::TempDir::new("fulmen-ver");
    let config = da_config("");
    let sequencer = start_node(&seq_dir.0, &l1.url(), &config);
    let mut nonces = [0; 4];
    send_transfers(sequencer.addr, &mut nonces, 300);
    let (token, hashes) = contract_traffic(sequencer.addr, 0);
    post_garbage_from_a_stranger(&l1);
    let mut verifier = start_verifier(&ver_dir.0, &l1.url(), &config);
    send_transfers(sequencer.addr, &mut nonces, 300);
    let safe = wait_derived(&sequencer, &verifier);
    assert_same_chain(sequencer.addr, verifier.addr, safe);
    // The reverted call is reverted there too, and receipts agree.
    for hash in &hashes {
        let a = call(sequencer.addr, "eth_getTransactionReceipt", json!([hash]));
        let b = call(verifier.addr, "eth_getTransactionReceipt", json!([hash]));
        assert_eq!((&a["status"], &a["gasUsed"]), (&b["status"], &b["gasUsed"]));
    }
    let reverted = call(
        sequencer.addr,
        "eth_getTransactionReceipt",
        json!([hashes[3]]),
    );
    assert_eq!(reverted["status"], "0x0");
    // The verifier's latest block is the sequencer's block of that number
    // (every block changes the state: its system calls).
    let root = |addr, tag: Value| {
        call(addr, "eth_getBlockByNumber", json!([tag, false]))["stateRoot"].clone()
    };
    wait_until(90, "the verifier's latest block is the sequencer's", || {
        let latest = call(
            verifier.addr,
            "eth_getBlockByNumber",
            json!(["latest", false]),
        );
        root(sequencer.addr, latest["number"].clone()) == latest["stateRoot"]
    });
    // Proofs are served at the latest block only, and the two nodes' latest
    // blocks differ: the token's account and storage proofs agree (the
    // account proofs' paths differ with the state roots).
    let proof = |addr| {
        let mut proof = call(addr, "eth_getProof", json!([token, [B256::ZERO], "latest"]));
        proof
            .as_object_mut()
            .expect("a proof")
            .remove("accountProof");
        proof
    };
    assert_eq!(proof(sequencer.addr), proof(verifier.addr));
    // A verifier takes no transactions.
    let raw = transfer_raw(&signer(6), 0, Address::repeat_byte(1), 1);
    let (_, message, _) = rpc_error(verifier.addr, "eth_sendRawTransaction", json!([raw]));
    assert!(message.contains("verifier"), "{message}");
    // kill -9 while it derives more; it resumes where it was.
    send_transfers(sequencer.addr, &mut nonces, 400);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    verifier.kill9();
    let verifier = start_verifier(&ver_dir.0, &l1.url(), &config);
    // It reads L1 again from near where it was, not from the start.
    let line = match verifier
        .startup
        .iter()
        .find(|l| l.contains("deriving the chain"))
    {
        Some(line) => line.clone(),
        None => wait_line(&verifier, "deriving the chain", 30),
    };
    let l1_from: u64 = line
        .split("l1_from=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no l1_from in {line}"));
    assert!(l1_from > 0, "{line}");
    send_transfers(sequencer.addr, &mut nonces, 100);
    let safe = wait_derived(&sequencer, &verifier);
    assert_same_chain(sequencer.addr, verifier.addr, safe);
    // Caught up with L1.
    wait_until(30, "eth_syncing says false", || {
        call(verifier.addr, "eth_syncing", json!([])) == json!(false)
    });
    // Every block it derived is safe; a block is finalized once the L1
    // block its data landed in is (anvil: 64 blocks behind its head).
    wait_until(30, "the verifier's safe is its latest", || {
        block_number(verifier.addr, "safe") == block_number(verifier.addr, "latest")
    });
    assert_eq!(block_number(verifier.addr, "finalized"), 0);
    let derived = block_number(verifier.addr, "latest");
    call(l1.addr, "anvil_mine", json!([100]));
    wait_until(
        60,
        "the verifier's finalized passes what it had derived",
        || block_number(verifier.addr, "finalized") >= derived,
    );
    assert!(block_number(verifier.addr, "finalized") <= block_number(verifier.addr, "safe"));
}

#[test]
fn an_l1_reorg_under_the_verifier_is_read_again_and_the_chains_still_agree() {
    let l1 = start_l1("prague", "1");
    let seq_dir = tempdir::TempDir::new("fulmen-seq-reorg");
    let ver_dir = tempdir::TempDir::new("fulmen-ver-reorg");
    let config = da_config("");
    let sequencer = start_node(&seq_dir.0, &l1.url(), &config);
    let forwarding = da_config(&format!("sequencer_url = \"{}\"", sequencer.url()));
    let verifier = start_verifier(&ver_dir.0, &l1.url(), &forwarding);
    let mut nonces = [0; 4];
    send_transfers(sequencer.addr, &mut nonces, 200);
    // Sent to the verifier, forwarded to the sequencer: its answer comes back.
    let raw = transfer_raw(&signer(6), 0, Address::repeat_byte(1), 1);
    let hash = call(verifier.addr, "eth_sendRawTransaction", json!([raw]));
    let receipt = call(sequencer.addr, "eth_getTransactionReceipt", json!([hash]));
    assert_eq!(receipt["status"], "0x1");
    let (_, again, _) = rpc_error(verifier.addr, "eth_sendRawTransaction", json!([raw]));
    assert!(
        again.contains("already known"),
        "the sequencer's refusal: {again}"
    );
    let safe = wait_derived(&sequencer, &verifier);
    assert_same_chain(sequencer.addr, verifier.addr, safe);
    // L1 drops its last blocks (and the batches in them); the sequencer
    // posts again, new channels land at heights the verifier had read.
    send_transfers(sequencer.addr, &mut nonces, 200);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    call(l1.addr, "anvil_rollback", json!([5]));
    send_transfers(sequencer.addr, &mut nonces, 200);
    let safe = wait_derived(&sequencer, &verifier);
    assert_same_chain(sequencer.addr, verifier.addr, safe);
}

#[test]
fn an_l1_reorg_that_drops_batches_for_good_unwinds_the_verifier_which_derives_again() {
    let l1 = start_l1("prague", "1");
    let seq_dir = tempdir::TempDir::new("fulmen-seq-unwind");
    let ver_dir = tempdir::TempDir::new("fulmen-ver-unwind");
    let config = da_config("");
    let sequencer = start_node(&seq_dir.0, &l1.url(), &config);
    let verifier = start_verifier(&ver_dir.0, &l1.url(), &config);
    let mut nonces = [0; 4];
    send_transfers(sequencer.addr, &mut nonces, 200);
    let kept = wait_derived(&sequencer, &verifier);
    let l1_mark = block_number(l1.addr, "latest");
    send_transfers(sequencer.addr, &mut nonces, 200);
    let derived = wait_derived(&sequencer, &verifier);
    assert!(derived > kept);
    // The sequencer stops, so nothing is posted again, and L1 drops every
    // block after the mark: the batches of the second round are gone.
    signal(&sequencer, "STOP");
    let depth = block_number(l1.addr, "latest") - l1_mark;
    call(l1.addr, "anvil_rollback", json!([depth]));
    let line = wait_line(&verifier, "unwound the chain", 60);
    let keep: u64 = line
        .split("keep=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no keep= in {line}"));
    eprintln!("derived {derived}, {line}");
    assert!(keep < derived, "{line}");
    wait_line(&verifier, "listening on", 60);
    signal(&sequencer, "CONT");
    send_transfers(sequencer.addr, &mut nonces, 100);
    let safe = wait_derived(&sequencer, &verifier);
    assert!(safe > derived);
    assert_same_chain(sequencer.addr, verifier.addr, safe);
}

#[test]
fn a_verifier_that_computes_another_header_stops_naming_the_field_and_never_serves_the_block() {
    let l1 = start_l1("prague", "1");
    let seq_dir = tempdir::TempDir::new("fulmen-seq-differ");
    let ver_dir = tempdir::TempDir::new("fulmen-ver-differ");
    let sequencer = start_node(&seq_dir.0, &l1.url(), &da_config(""));
    let mut nonces = [0; 4];
    send_transfers(sequencer.addr, &mut nonces, 50);
    // Another fee recipient: the same transactions give other headers.
    let other = format!(
        "coinbase = \"0x00000000000000000000000000000000000000aa\"\n{}",
        da_config("")
    );
    let mut verifier = start_verifier(&ver_dir.0, &l1.url(), &other);
    let line = wait_line(&verifier, "is not the sequencer's", 90);
    assert!(line.contains("miner"), "the first differing field: {line}");
    let number: u64 = line
        .split("L2 block ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no block number in {line}"));
    let served = |addr| block_number(addr, "latest");
    assert!(served(verifier.addr) < number);
    assert!(block(verifier.addr, number).is_null());
    // Nor after a restart: it unwinds what it logged and stops again.
    verifier.terminate();
    let verifier = start_verifier(&ver_dir.0, &l1.url(), &other);
    wait_line(&verifier, "is not the sequencer's", 90);
    assert!(served(verifier.addr) < number);
    assert!(block(verifier.addr, number).is_null());
}
