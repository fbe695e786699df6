//! Durability end to end: the real binary on a real datadir, restarted
//! cleanly and killed with SIGKILL under load. Every transaction whose sync
//! send returned a receipt must be there afterwards with the same receipt,
//! and sealed block hashes never change.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, Bytes, TxKind, U256};
use alloy::sol;
use alloy::sol_types::SolCall;
use common::*;
use serde_json::{Value, json};

sol! {
    contract Probe {
        function bump() external;
        function set(uint256 key, uint256 value) external;
    }
}

/// Receipt fields that must survive a crash unchanged. `blockHash` is left
/// out: a receipt acknowledged before its block sealed carries the zero hash
/// (README), and the sealed hash afterwards.
fn durable_fields(receipt: &Value) -> Value {
    let mut logs = receipt["logs"].clone();
    if let Some(logs) = logs.as_array_mut() {
        for log in logs {
            log.as_object_mut().map(|o| o.remove("blockHash"));
        }
    }
    json!({
        "transactionHash": receipt["transactionHash"],
        "blockNumber": receipt["blockNumber"],
        "transactionIndex": receipt["transactionIndex"],
        "from": receipt["from"],
        "to": receipt["to"],
        "status": receipt["status"],
        "gasUsed": receipt["gasUsed"],
        "cumulativeGasUsed": receipt["cumulativeGasUsed"],
        "effectiveGasPrice": receipt["effectiveGasPrice"],
        "contractAddress": receipt["contractAddress"],
        "logs": logs,
    })
}

fn hex_u64(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().expect("hex").trim_start_matches("0x"), 16).expect("u64")
}

fn db_check(dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fulmen"))
        .args(["db", "check", "--dev", "--datadir"])
        .arg(dir)
        .output()
        .expect("run fulmen db check")
}

/// `fulmen db check` on `dir`, which must pass: its stdout.
fn db_check_ok(dir: &std::path::Path) -> String {
    let check = db_check(dir);
    let stdout = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The history store reads back equal to the log's chain (kill -9
    // loses no write the process made; it cuts none).
    if dir.join("history").join("index").exists() {
        assert!(stdout.contains("ok: history store"), "{stdout}");
    }
    stdout
}

/// `fulmen run --dev` on `dir`, for a start that must fail: its output.
fn run_expecting_failure(dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fulmen"))
        .args(["run", "--dev", "--rpc-addr", "127.0.0.1:0", "--datadir"])
        .arg(dir)
        .output()
        .expect("run fulmen")
}

/// Everything history reads return, for a restart to reproduce exactly.
fn history(addr: SocketAddr, tx_hashes: &[String], through: u64) -> Value {
    let mut blocks = Vec::new();
    for n in 0..=through {
        let block = try_rpc(
            addr,
            "eth_getBlockByNumber",
            json!([format!("{n:#x}"), true]),
        )
        .expect("block");
        let by_hash = try_rpc(addr, "eth_getBlockByHash", json!([block["hash"], false]))
            .expect("block by hash");
        assert_eq!(by_hash["hash"], block["hash"]);
        let receipts = try_rpc(addr, "eth_getBlockReceipts", json!([format!("{n:#x}")]))
            .expect("block receipts");
        blocks.push(json!({"block": block, "receipts": receipts}));
    }
    let mut txs = Vec::new();
    for hash in tx_hashes {
        txs.push(json!({
            "tx": try_rpc(addr, "eth_getTransactionByHash", json!([hash])).expect("tx"),
            "receipt": try_rpc(addr, "eth_getTransactionReceipt", json!([hash])).expect("receipt"),
        }));
    }
    let logs = try_rpc(
        addr,
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": format!("{through:#x}")}]),
    )
    .expect("logs");
    json!({"blocks": blocks, "txs": txs, "logs": logs})
}

/// Runs a node with a checkpoint every two blocks.
const CHECKPOINT_EVERY_2: [&str; 3] = ["--dev", "--storage-checkpoint-blocks", "2"];
/// Runs a node that writes no checkpoint.
const NO_CHECKPOINTS: [&str; 3] = ["--dev", "--storage-checkpoint-blocks", "0"];

/// The newest checkpoint's block number in `dir`, if any.
fn newest_checkpoint(dir: &std::path::Path) -> Option<u64> {
    std::fs::read_dir(dir.join("checkpoint"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".ckpt")?.parse().ok()
        })
        .max()
}

/// `count` transactions of 60 KB calldata from signer 3 (nonces from 0),
/// each acknowledged, waiting for a seal every 12: about 3 MB of log over
/// several blocks. Their receipts.
fn send_bulky(addr: SocketAddr, count: u64) -> Vec<Value> {
    let calldata = Bytes::from(vec![1u8; 60_000]);
    let to = TxKind::Call(signer(6).address());
    (0..count)
        .map(|nonce| {
            let raw = sign_1559(
                &signer(3),
                nonce,
                to,
                U256::from(nonce),
                calldata.clone(),
                2_450_000,
            );
            let receipt = try_rpc(addr, "eth_sendRawTransactionSync", json!([raw])).expect("send");
            if nonce % 12 == 11 {
                wait_sealed(addr, hex_u64(&receipt["blockNumber"]));
            }
            receipt
        })
        .collect()
}

/// With the history store holding a checkpoint's block, a restart reads
/// the log only from the segment where the blocks after it start: the
/// older segments are not read, and every answer is the same.
#[test]
fn boot_from_a_checkpoint_reads_only_the_log_after_it() {
    const ARGS: [&str; 5] = [
        "--dev",
        "--storage-segment-mb",
        "1",
        "--storage-checkpoint-blocks",
        "2",
    ];
    let dir = tempdir::TempDir::new("fulmen-boot-after");
    let mut node = start_fulmen_in(&dir.0, &ARGS);
    let sender = signer(3);
    let hashes: Vec<String> = send_bulky(node.addr, 48)
        .iter()
        .map(|receipt| {
            receipt["transactionHash"]
                .as_str()
                .expect("hash")
                .to_string()
        })
        .collect();
    let last = hex_u64(
        &try_rpc(
            node.addr,
            "eth_getTransactionReceipt",
            json!([hashes.last()]),
        )
        .expect("r")["blockNumber"],
    );
    wait_sealed(node.addr, last);
    // A checkpoint past the last transaction, its block in the history
    // store (synced once a second).
    let deadline = Instant::now() + Duration::from_secs(30);
    while newest_checkpoint(&dir.0).is_none_or(|n| n < last + 2) {
        assert!(
            Instant::now() < deadline,
            "no checkpoint after block {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let before = history(node.addr, &hashes, last);
    let balance = |addr| {
        try_rpc(
            addr,
            "eth_getBalance",
            json!([signer(6).address(), "latest"]),
        )
        .expect("b")
    };
    let funds = balance(node.addr);
    assert!(node.terminate().success());
    assert!(std::fs::read_dir(dir.0.join("log")).expect("log").count() > 3);

    let node = start_fulmen_in(&dir.0, &ARGS);
    assert!(
        boot_figure(&node, "from_segment") > 0 && boot_figure(&node, "skipped") > 0,
        "boot read the whole log:\n{}",
        node.startup.join("\n")
    );
    assert_eq!(history(node.addr, &hashes, last), before, "history changed");
    assert_eq!(balance(node.addr), funds);
    let raw = transfer_raw(&sender, 48, signer(6).address(), 5);
    let receipt = try_rpc(node.addr, "eth_sendRawTransactionSync", json!([raw])).expect("send");
    assert!(hex_u64(&receipt["blockNumber"]) > last);
    // The chain of mini-block hashes goes on across the restart, though
    // boot skipped every older mini-block record (the checkpoint holds
    // them): replayed from the log, each names the previous one's hash.
    let new_tx = receipt["transactionHash"].clone();
    let minis = notifications_until(
        node.addr,
        json!(["miniBlocks", {"fromMiniBlock": 1}]),
        |m| m["transactions"][0]["hash"] == new_tx,
    )
    .expect("resume from 1");
    assert_eq!(minis.len(), 49, "48 sync sends and one after the restart");
    for pair in minis.windows(2) {
        assert_eq!(
            pair[1]["parent_mini_block_hash"],
            pair[0]["mini_block_hash"]
        );
    }
    drop(node);
    let stdout = db_check_ok(&dir.0);
    assert!(stdout.contains("checkpoint(s) verified"), "{stdout}");
}

#[test]
fn history_is_identical_after_a_clean_restart_and_one_from_a_checkpoint() {
    let dir = tempdir::TempDir::new("fulmen-restart");
    let mut node = start_fulmen_in(&dir.0, &NO_CHECKPOINTS);
    let addr = node.addr;
    let deployer = signer(0);
    let deploy = sign_1559(
        &deployer,
        0,
        TxKind::Create,
        U256::ZERO,
        bytecode("Probe"),
        1_000_000,
    );
    let receipt = try_rpc(addr, "eth_sendRawTransactionSync", json!([deploy])).expect("deploy");
    let probe: Address = receipt["contractAddress"]
        .as_str()
        .expect("address")
        .parse()
        .expect("address");
    let mut hashes = vec![
        receipt["transactionHash"]
            .as_str()
            .expect("hash")
            .to_string(),
    ];
    for i in 1..=12u64 {
        let raw = match i % 3 {
            0 => transfer_raw(&deployer, i, signer(5).address(), 1000 + i),
            1 => sign_1559(
                &deployer,
                i,
                TxKind::Call(probe),
                U256::ZERO,
                Probe::bumpCall {}.abi_encode().into(),
                200_000,
            ),
            _ => sign_1559(
                &deployer,
                i,
                TxKind::Call(probe),
                U256::ZERO,
                Probe::setCall {
                    key: U256::from(i),
                    value: U256::from(i * 7),
                }
                .abi_encode()
                .into(),
                200_000,
            ),
        };
        let receipt = try_rpc(addr, "eth_sendRawTransactionSync", json!([raw])).expect("send");
        hashes.push(
            receipt["transactionHash"]
                .as_str()
                .expect("hash")
                .to_string(),
        );
        if i == 6 {
            // The rest go into later blocks.
            wait_sealed(addr, hex_u64(&receipt["blockNumber"]));
        }
    }
    // Let the last transactions seal.
    let last = hex_u64(
        &try_rpc(addr, "eth_getTransactionReceipt", json!([hashes.last()])).expect("r")["blockNumber"],
    );
    wait_sealed(addr, last);
    let before = history(addr, &hashes, last);
    let balance = try_rpc(
        addr,
        "eth_getBalance",
        json!([signer(5).address(), "latest"]),
    )
    .expect("b");

    // A second node on the same datadir is refused while the first runs.
    let second = run_expecting_failure(&dir.0);
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another fulmen process"),
        "{stderr}"
    );

    // A clean restart replays the whole log (no checkpoint was written).
    assert!(node.terminate().success());
    assert!(!dir.0.join("checkpoint").exists());
    let mut node = start_fulmen_in(&dir.0, &CHECKPOINT_EVERY_2);
    assert!(
        node.startup
            .iter()
            .any(|l| l.contains("replayed the log") && l.contains("from_checkpoint=None")),
        "{}",
        node.startup.join("\n")
    );
    assert_eq!(
        history(node.addr, &hashes, last),
        before,
        "history changed across a clean restart"
    );

    // Then a checkpoint is written, and a restart starts from it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_dir(dir.0.join("checkpoint"))
        .map(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "ckpt"))
        })
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "no checkpoint was written");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(node.terminate().success());
    let node = start_fulmen_in(&dir.0, &CHECKPOINT_EVERY_2);
    let logged = |what: &[&str]| {
        node.startup
            .iter()
            .any(|l| what.iter().all(|part| l.contains(part)))
    };
    let startup = node.startup.join("\n");
    assert!(
        logged(&["loaded checkpoint"]),
        "the restart did not start from a checkpoint:\n{startup}"
    );
    // With the trie references the state-root worker exported for it:
    // boot did not hash the trie again, and they fit.
    assert!(
        logged(&["built the state trie", "stored_hashes=true"]),
        "the checkpoint had no trie references:\n{startup}"
    );
    assert!(!logged(&["trie references do not fit"]), "{startup}");
    let after = history(node.addr, &hashes, last);
    assert_eq!(
        before, after,
        "history changed across a restart from a checkpoint"
    );
    assert_eq!(
        try_rpc(
            node.addr,
            "eth_getBalance",
            json!([signer(5).address(), "latest"])
        )
        .expect("b"),
        balance
    );
    // The chain goes on from where it was.
    let next = transfer_raw(&deployer, 13, signer(5).address(), 1);
    let receipt = try_rpc(node.addr, "eth_sendRawTransactionSync", json!([next])).expect("send");
    assert!(hex_u64(&receipt["blockNumber"]) > last);
    drop(node);

    let stdout = db_check_ok(&dir.0);
    assert!(stdout.starts_with("ok:"), "{stdout}");
    assert!(!stdout.contains(" 0 checkpoint(s) verified"), "{stdout}");
    assert!(stdout.contains("checkpoint(s) verified"), "{stdout}");

    // Another genesis (the dev genesis depends on the gas limit) is refused.
    let other = Command::new(env!("CARGO_BIN_EXE_fulmen"))
        .args([
            "run",
            "--dev",
            "--block-gas-limit",
            "30000000",
            "--rpc-addr",
            "127.0.0.1:0",
            "--datadir",
        ])
        .arg(&dir.0)
        .output()
        .expect("run with another genesis");
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("belongs to the chain with genesis"));

    // Less free disk than the floor (here a petabyte): refused, and why.
    let full = Command::new(env!("CARGO_BIN_EXE_fulmen"))
        .args(["run", "--dev", "--storage-disk-free-min-mb", "1000000000"])
        .args(["--rpc-addr", "127.0.0.1:0", "--datadir"])
        .arg(&dir.0)
        .output()
        .expect("run with a floor above the free space");
    assert!(!full.status.success());
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert!(
        stderr.contains("refusing to start") && stderr.contains("storage.disk_free_min_mb"),
        "{stderr}"
    );
}

/// Signs and sends transfers from `sender` with sync sends until `stop`,
/// recording every acknowledged receipt.
fn drive(addr: SocketAddr, sender: u32, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<Value>>>) {
    let key = signer(sender);
    let Ok(n) = try_rpc(
        addr,
        "eth_getTransactionCount",
        json!([key.address(), "latest"]),
    ) else {
        return;
    };
    let mut nonce = hex_u64(&n);
    let to = signer(9).address();
    while !stop.load(Ordering::Relaxed) {
        let raw: Bytes = transfer_raw(&key, nonce, to, 1 + nonce);
        match try_rpc(addr, "eth_sendRawTransactionSync", json!([raw])) {
            Ok(receipt) => {
                acked.lock().expect("lock").push(receipt);
                nonce += 1;
            }
            // The node died mid-request, or refused: the outcome is unknown,
            // so this transaction is not counted as acknowledged.
            Err(_) => return,
        }
    }
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_transaction() {
    let iterations: u64 = std::env::var("FULMEN_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempdir::TempDir::new("fulmen-crash");
    let mut acked_all: Vec<Value> = Vec::new();
    let mut sealed: BTreeMap<u64, Value> = BTreeMap::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for iteration in 0..iterations {
        let mut node = start_fulmen_in(&dir.0, &["--dev"]);
        let addr = node.addr;
        // Everything acknowledged so far is still there, unchanged.
        for chunk in acked_all.chunks(500) {
            let batch: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| json!({"jsonrpc": "2.0", "id": i, "method": "eth_getTransactionReceipt", "params": [r["transactionHash"]]}))
                .collect();
            let (status, body) = raw_post(
                addr,
                serde_json::to_string(&batch).expect("json").as_bytes(),
            );
            assert_eq!(status, 200, "{body}");
            let answers: Vec<Value> = serde_json::from_str(&body).expect("batch answer");
            for answer in answers {
                let receipt = &chunk[answer["id"].as_u64().expect("id") as usize];
                let now = &answer["result"];
                assert!(
                    !now.is_null(),
                    "iteration {iteration}: acknowledged tx {} is gone",
                    receipt["transactionHash"]
                );
                assert_eq!(
                    durable_fields(now),
                    durable_fields(receipt),
                    "iteration {iteration}"
                );
            }
        }
        for (number, hash) in &sealed {
            let block = try_rpc(
                addr,
                "eth_getBlockByNumber",
                json!([format!("{number:#x}"), false]),
            )
            .expect("block");
            assert_eq!(
                &block["hash"], hash,
                "iteration {iteration}: block {number} changed"
            );
        }
        // Load from three senders, while a reader notes sealed block hashes.
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let mut workers = Vec::new();
        for sender in 1..=3 {
            let (stop, acked) = (stop.clone(), acked.clone());
            workers.push(std::thread::spawn(move || drive(addr, sender, stop, acked)));
        }
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        {
            let (stop, seen) = (stop.clone(), seen.clone());
            workers.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(block) =
                        try_rpc(addr, "eth_getBlockByNumber", json!(["latest", false]))
                    {
                        seen.lock()
                            .expect("lock")
                            .insert(hex_u64(&block["number"]), block["hash"].clone());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }));
        }
        // Kill at a pseudo-random moment; every third run spans block seals
        // (blocks seal every second from the start).
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let pause = if iteration % 3 == 2 {
            1_000 + seed % 1_200
        } else {
            50 + seed % 600
        };
        std::thread::sleep(Duration::from_millis(pause));
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.join().expect("worker");
        }
        acked_all.extend(acked.lock().expect("lock").drain(..));
        sealed.extend(
            seen.lock()
                .expect("lock")
                .iter()
                .map(|(n, h)| (*n, h.clone())),
        );
    }
    assert!(
        acked_all.len() as u64 >= iterations,
        "the load acknowledged too little to test anything: {}",
        acked_all.len()
    );
    if iterations >= 3 {
        assert!(sealed.len() > 2, "no run spanned a block seal");
    }
    let stdout = db_check_ok(&dir.0);
    eprintln!(
        "{iterations} kills: {} acknowledged transactions and {} sealed blocks all intact; {stdout}",
        acked_all.len(),
        sealed.len()
    );
}

#[test]
fn corruption_before_the_tail_stops_boot_and_check_with_its_place() {
    let dir = tempdir::TempDir::new("fulmen-corrupt");
    let mut node = start_fulmen_in(&dir.0, &["--dev"]);
    let key = signer(2);
    let mut last = 0;
    for nonce in 0..5 {
        let raw = transfer_raw(&key, nonce, signer(3).address(), 1);
        let receipt = try_rpc(node.addr, "eth_sendRawTransactionSync", json!([raw])).expect("send");
        last = hex_u64(&receipt["blockNumber"]);
    }
    // The log holds seals too, not only mini-blocks.
    wait_sealed(node.addr, last);
    assert!(node.terminate().success());
    // Flip one byte inside the first record's payload.
    let segment = dir.0.join("log/00000000000000000000.seg");
    let mut bytes = std::fs::read(&segment).expect("segment");
    bytes[40] ^= 0x5a;
    std::fs::write(&segment, &bytes).expect("write");

    let check = db_check(&dir.0);
    assert!(!check.status.success());
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("segment 0") && stderr.contains("offset 0"),
        "the error names the place: {stderr}"
    );
    let boot = run_expecting_failure(&dir.0);
    assert!(!boot.status.success());
    assert!(String::from_utf8_lossy(&boot.stderr).contains("corrupt at offset 0"));
}

/// SIGTERM refuses new transactions and flushes what was acknowledged before
/// exiting, so even memory mode (receipts before the flush) loses nothing on
/// a clean stop.
#[test]
fn a_clean_stop_in_memory_mode_flushes_every_acknowledged_transaction() {
    let dir = tempdir::TempDir::new("fulmen-sigterm");
    let args = ["--dev", "--durability", "memory"];
    let mut node = start_fulmen_in(&dir.0, &args);
    let from = signer(6);
    let mut receipts = Vec::new();
    for nonce in 0..300 {
        let raw = transfer_raw(&from, nonce, signer(9).address(), 1 + nonce);
        let receipt = try_rpc(node.addr, "eth_sendRawTransactionSync", json!([raw])).expect("send");
        receipts.push(durable_fields(&receipt));
    }
    // Stop right after the last acknowledgement: the node refuses new
    // transactions and waits for the log before it exits.
    assert!(node.terminate().success());
    let said: Vec<String> = node.log.try_iter().collect();
    assert!(
        said.iter().any(|l| l.contains("log drained; exiting")),
        "the node exited without draining its log:\n{}",
        said.join("\n")
    );
    let node = start_fulmen_in(&dir.0, &args);
    for receipt in &receipts {
        let now = try_rpc(
            node.addr,
            "eth_getTransactionReceipt",
            json!([receipt["transactionHash"]]),
        )
        .expect("receipt");
        assert_eq!(
            &durable_fields(&now),
            receipt,
            "lost or changed across SIGTERM"
        );
    }
}

/// An idle node's log holds only seal records; its first block's context
/// (timestamp, so its EIP-4788 system call) is known only from that seal.
/// A restart must replay those blocks to the same state and hashes.
#[test]
fn an_idle_node_restarts_onto_the_same_chain() {
    let dir = tempdir::TempDir::new("fulmen-idle");
    let mut node = start_fulmen_in(&dir.0, &["--dev"]);
    let block = |addr: SocketAddr, n: u64| {
        rpc(
            addr,
            "eth_getBlockByNumber",
            json!([format!("{n:#x}"), false]),
        )["result"]
            .clone()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while hex_u64(&rpc(node.addr, "eth_blockNumber", json!([]))["result"]) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no block 3 after 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let before: Vec<Value> = (1..=3).map(|n| block(node.addr, n)).collect();
    assert!(node.terminate().success());
    let node = start_fulmen_in(&dir.0, &["--dev"]);
    for (n, sealed) in (1..=3).zip(&before) {
        let now = block(node.addr, n);
        assert_eq!(
            now["hash"], sealed["hash"],
            "block {n} changed across a restart"
        );
        assert_eq!(now["stateRoot"], sealed["stateRoot"]);
    }
    // And the chain goes on: a transfer lands on top of the replayed state.
    let raw = transfer_raw(&signer(5), 0, signer(9).address(), 1);
    let receipt = rpc(node.addr, "eth_sendRawTransactionSync", json!([raw]));
    assert_eq!(receipt["result"]["status"], "0x1", "{receipt}");
}

/// Receipts of `count` transfers from `sender`, each acknowledged.
fn send_transfers(addr: SocketAddr, sender: u32, count: u64) -> Vec<Value> {
    let key = signer(sender);
    (0..count)
        .map(|nonce| {
            let raw = transfer_raw(&key, nonce, signer(9).address(), 1 + nonce);
            durable_fields(
                &try_rpc(addr, "eth_sendRawTransactionSync", json!([raw])).expect("send"),
            )
        })
        .collect()
}

fn assert_receipts(addr: SocketAddr, receipts: &[Value], what: &str) {
    for receipt in receipts {
        let now = try_rpc(
            addr,
            "eth_getTransactionReceipt",
            json!([receipt["transactionHash"]]),
        )
        .expect("receipt");
        assert!(
            !now.is_null(),
            "{what}: acknowledged tx {} lost",
            receipt["transactionHash"]
        );
        assert_eq!(&durable_fields(&now), receipt, "{what}");
    }
}

/// A last segment cut to an odd length (a filesystem after a crash, or
/// `truncate -s`) is repaired at boot with aligned (O_DIRECT) writes, every
/// acknowledged transaction is there, and `db check` says beforehand what
/// boot will write.
#[test]
fn a_last_segment_truncated_to_an_odd_length_is_repaired_at_boot() {
    use fulmen_storage::disk::DiskDir;
    use fulmen_storage::log::{read_log, segment_name};
    let dir = tempdir::TempDir::new("fulmen-truncated");
    let mut node = start_fulmen_in(&dir.0, &["--dev"]);
    let receipts = send_transfers(node.addr, 4, 20);
    node.kill9();
    // Cut the last byte of the last batch end: an odd length, inside the
    // padding record, past every record.
    let log_dir = dir.0.join("log");
    let (recovery, tail) = read_log(&DiskDir::for_reading(&log_dir)).expect("read the log");
    assert!(recovery.records.len() >= 20);
    let segment = log_dir.join(segment_name(tail.segment));
    // Past every acknowledged record: the end follows a batch end (padding)
    // or an unacknowledged record of a torn batch.
    let cut = if tail.end % 2 == 0 {
        tail.end - 1
    } else {
        tail.end
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open segment")
        .set_len(cut)
        .expect("truncate");

    let stdout = db_check_ok(&dir.0);
    assert!(
        stdout.contains("the node repairs the end of the log at its next start")
            && stdout.contains(&format!("the file ({cut} bytes")),
        "db check does not say what boot will do: {stdout}"
    );
    let mut node = start_fulmen_in(&dir.0, &["--dev"]);
    assert_receipts(node.addr, &receipts, "after the repair");
    let more = send_transfers(node.addr, 5, 3);
    assert!(node.terminate().success());
    assert!(std::fs::metadata(&segment).expect("segment").len() > cut);
    let stdout = db_check_ok(&dir.0);
    assert!(!stdout.contains("repairs the end of the log"), "{stdout}");
    let node = start_fulmen_in(&dir.0, &["--dev"]);
    assert_receipts(node.addr, &receipts, "second boot");
    assert_receipts(node.addr, &more, "second boot");
}

/// Checkpoint files in `dir` named after blocks up to `real_max`.
fn real_checkpoints(dir: &std::path::Path, real_max: u64) -> Vec<u64> {
    let mut found: Vec<u64> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".ckpt")?
                        .parse::<u64>()
                        .ok()
                })
                .filter(|n| *n <= real_max)
                .collect()
        })
        .unwrap_or_default();
    found.sort_unstable();
    found
}

/// Junk with a checkpoint's name and a large number (garbage, a partial
/// copy) never counts as one of the kept checkpoints and never makes a
/// valid one go; boot warns and loads the newest valid one.
#[test]
fn junk_checkpoint_files_never_displace_valid_ones() {
    const REAL_MAX: u64 = 1_000_000;
    let dir = tempdir::TempDir::new("fulmen-ckpt-junk");
    let ckpt = dir.0.join("checkpoint");
    let wait_for_checkpoints = |above: u64, count: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = real_checkpoints(&ckpt, REAL_MAX);
            if found.iter().filter(|n| **n > above).count() >= count {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "checkpoints above {above}: {found:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut node = start_fulmen_in(&dir.0, &CHECKPOINT_EVERY_2);
    send_transfers(node.addr, 7, 3);
    wait_for_checkpoints(0, 2);
    assert!(node.terminate().success());
    // Listed after the stop: the node may write one more before it ends.
    let before = real_checkpoints(&ckpt, REAL_MAX);
    let newest = *before.last().expect("a checkpoint");
    // Garbage, and a partial copy of a real image, both numbered past the chain.
    std::fs::write(
        ckpt.join(format!("{:020}.ckpt", 99_999_999_999u64)),
        b"garbage",
    )
    .expect("junk");
    let real = std::fs::read(ckpt.join(format!("{newest:020}.ckpt"))).expect("image");
    std::fs::write(
        ckpt.join(format!("{:020}.ckpt", 99_999_999_998u64)),
        &real[..real.len() / 2],
    )
    .expect("partial");

    let node = start_fulmen_in(&dir.0, &CHECKPOINT_EVERY_2);
    assert!(
        node.startup
            .iter()
            .any(|l| l.contains("loaded checkpoint") && l.contains(&format!("number={newest}"))),
        "boot did not load the newest valid checkpoint {newest}:\n{}",
        node.startup.join("\n")
    );
    // Two more checkpoints, so that old ones are pruned twice: the junk must
    // not count as kept.
    let after = wait_for_checkpoints(newest, 2);
    let mut node = node;
    assert!(node.terminate().success());
    let after_stop = real_checkpoints(&ckpt, REAL_MAX);
    assert!(
        after_stop.len() >= 2,
        "valid checkpoints were removed: {after_stop:?} (saw {after:?})"
    );
    let node = start_fulmen_in(&dir.0, &CHECKPOINT_EVERY_2);
    let newest = *after_stop.last().expect("checkpoint");
    assert!(
        node.startup
            .iter()
            .any(|l| l.contains("loaded checkpoint") && l.contains(&format!("number={newest}"))),
        "{}",
        node.startup.join("\n")
    );
    drop(node);
    // db check reports the junk as skipped by boot, and passes.
    let stdout = db_check_ok(&dir.0);
    assert!(stdout.contains("99999999999.ckpt"), "{stdout}");
}

/// The oldest block a node serves: `earliest`.
/// Subscribes over WebSocket with `params`: the first notification's
/// result, or the error message.
fn first_notification(addr: SocketAddr, params: Value) -> Result<Value, String> {
    notifications_until(addr, params, |_| true).map(|mut got| got.remove(0))
}

/// Subscribes over WebSocket with `params`: the notifications' results up
/// to the first that `last` accepts, or the error message.
fn notifications_until(
    addr: SocketAddr,
    params: Value,
    last: impl Fn(&Value) -> bool,
) -> Result<Vec<Value>, String> {
    let (mut socket, _) = tungstenite::connect(format!("ws://{addr}")).expect("WebSocket connect");
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": params});
    socket
        .send(tungstenite::Message::Text(call.to_string().into()))
        .expect("send");
    let mut read = || loop {
        if let tungstenite::Message::Text(text) = socket.read().expect("read") {
            return serde_json::from_str::<Value>(&text).expect("JSON");
        }
    };
    let answer = read();
    if let Some(message) = answer["error"]["message"].as_str() {
        return Err(message.to_string());
    }
    let mut got = Vec::new();
    loop {
        let result = read()["params"]["result"].clone();
        let done = last(&result);
        got.push(result);
        if done {
            return Ok(got);
        }
    }
}

fn earliest(addr: SocketAddr) -> u64 {
    let block =
        try_rpc(addr, "eth_getBlockByNumber", json!(["earliest", false])).expect("earliest");
    hex_u64(&block["number"])
}

/// The numbers of the files in `dir` named `prefix` + digits.
fn numbered_files(dir: &std::path::Path, prefix: &str, suffix: &str) -> Vec<u64> {
    let mut found: Vec<u64> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse()
                .ok()
        })
        .collect();
    found.sort_unstable();
    found
}

/// A `recent` node deletes the log segments and history chunks older than
/// its window (and its oldest checkpoint), answers older blocks with
/// geth's "pruned history unavailable" (4444) and everything newer as
/// before, boots again from a checkpoint, survives `kill -9` while it
/// prunes with no acknowledged transaction lost, and `db check` checks it
/// from its oldest checkpoint.
#[test]
fn a_recent_node_prunes_old_history_and_answers_pruned_blocks_clearly() {
    const ARGS: [&str; 11] = [
        "--dev",
        "--storage-segment-mb",
        "1",
        "--storage-checkpoint-blocks",
        "3",
        "--storage-history",
        "recent",
        "--storage-history-blocks",
        "4",
        "--storage-history-chunk-mb",
        "1",
    ];
    let dir = tempdir::TempDir::new("fulmen-recent");
    let mut node = start_fulmen_in(&dir.0, &ARGS);
    let sender = signer(3);
    // About 3 MB of log and of history: several 1 MiB segments and chunks.
    let receipts = send_bulky(node.addr, 48);
    let first = hex_u64(&receipts[0]["blockNumber"]);
    let last = hex_u64(&receipts[47]["blockNumber"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while earliest(node.addr) <= last {
        assert!(
            Instant::now() < deadline,
            "nothing pruned past block {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let oldest = earliest(node.addr);
    assert!(
        numbered_files(&dir.0.join("log"), "", ".seg")[0] > 0,
        "log segment 0 kept"
    );
    assert!(
        numbered_files(&dir.0.join("history"), "blocks-", "")[0] > 0,
        "history chunk 0 kept"
    );
    // Pruned blocks: a clear error, by number, tag, range and state read.
    let pruned = |method: &str, params: Value| {
        let (code, message, data) = rpc_error(node.addr, method, params);
        assert_eq!(
            (code, message.as_str()),
            (4444, "pruned history unavailable"),
            "{method}"
        );
        assert_eq!(hex_u64(&data["oldestBlock"]), oldest, "{method}: {data}");
    };
    let number = format!("{first:#x}");
    pruned("eth_getBlockByNumber", json!([number, false]));
    pruned("eth_getBlockReceipts", json!([number]));
    pruned(
        "eth_getLogs",
        json!([{"fromBlock": number, "toBlock": "latest"}]),
    );
    pruned("eth_getBalance", json!([signer(6).address(), number]));
    pruned(
        "eth_getTransactionByBlockNumberAndIndex",
        json!([number, "0x0"]),
    );
    pruned("debug_getRawBlock", json!([number]));
    // A pruned transaction is not found (its hash may leave the index).
    let old = &receipts[0]["transactionHash"];
    let receipt = try_rpc(node.addr, "eth_getTransactionReceipt", json!([old])).expect("receipt");
    assert!(receipt.is_null(), "{receipt}");
    // What is kept answers as before.
    let kept = try_rpc(
        node.addr,
        "eth_getBlockByNumber",
        json!([format!("{oldest:#x}"), false]),
    )
    .expect("oldest kept");
    assert_eq!(hex_u64(&kept["number"]), oldest);
    let logs = try_rpc(node.addr, "eth_getLogs", json!([{"fromBlock": "earliest"}])).expect("logs");
    assert!(logs.is_array());
    let fees = try_rpc(
        node.addr,
        "eth_feeHistory",
        json!(["0x400", "latest", [50]]),
    )
    .expect("fees");
    assert!(hex_u64(&fees["oldestBlock"]) >= oldest, "{fees}");
    // A subscription resuming from a pruned mini-block gets the oldest kept;
    // resuming from that one replays it first.
    let message = first_notification(node.addr, json!(["miniBlocks", {"fromMiniBlock": 1}]))
        .expect_err("mini-block 1 is pruned");
    let kept = message
        .split("the oldest available is ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no oldest mini-block in {message:?}"));
    assert!(message.contains("mini-block 1 is pruned"), "{message}");
    assert!(kept > 1, "{message}");
    let first = first_notification(node.addr, json!(["miniBlocks", {"fromMiniBlock": kept}]))
        .expect("the oldest kept mini-block resumes");
    assert_eq!(first["mini_block_number"], json!(kept), "{first}");
    assert_eq!(first["index"], json!(0), "a block's first mini-block");
    // A replica's stream (records after mini-block N - 1) the same way.
    let message = first_notification(node.addr, json!(["replication", {"fromMiniBlock": 1}]))
        .expect_err("the replication stream from 1 is pruned");
    assert!(
        message.contains("mini-block 1 is pruned: the oldest available is"),
        "{message}"
    );
    let record = first_notification(
        node.addr,
        json!(["replication", {"fromMiniBlock": kept + 1}]),
    )
    .expect("a replica resumes after the oldest kept mini-block");
    assert!(record["record"].as_str().is_some(), "{record}");
    // kill -9 while it prunes: nothing acknowledged is lost.
    let mut nonce = 48;
    for round in 0..3 {
        for _ in 0..20 {
            let raw = transfer_raw(&sender, nonce, signer(6).address(), 1);
            try_rpc(node.addr, "eth_sendRawTransactionSync", json!([raw])).expect("send");
            nonce += 1;
        }
        std::thread::sleep(Duration::from_millis(1_000 + round * 2_500));
        node.kill9();
        node = start_fulmen_in(&dir.0, &ARGS);
        assert!(
            boot_figure(&node, "from_segment") > 0,
            "boot read from segment 0:\n{}",
            node.startup.join("\n")
        );
        let count = try_rpc(
            node.addr,
            "eth_getTransactionCount",
            json!([sender.address(), "latest"]),
        )
        .expect("nonce");
        assert_eq!(
            hex_u64(&count),
            nonce,
            "round {round}: an acknowledged transaction was lost"
        );
        assert!(earliest(node.addr) >= oldest);
    }
    let raw = transfer_raw(&sender, nonce, signer(6).address(), 1);
    let receipt = try_rpc(node.addr, "eth_sendRawTransactionSync", json!([raw])).expect("send");
    assert_eq!(receipt["status"], "0x1");
    assert!(node.terminate().success());
    let check = db_check(&dir.0);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        stdout.contains("older log segments were pruned"),
        "{stdout}"
    );
}
