//! Issue 12, defects 5 and 7, against the real binary: answers have a byte
//! budget (per call and per batch, -32020 instead of a huge answer), logs
//! filters have a size cap, and the node-wide WebSocket send budget closes
//! slow consumers while subscribers that keep up receive everything.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use alloy::primitives::{Address, Bytes, TxKind, U256};
use alloy::signers::local::PrivateKeySigner;
use common::*;
use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Runtime code that emits `n` LOG0s of `size` zero bytes each, with
/// calldata `size (word 0) ++ n (word 1)`. Hand-assembled so the test needs
/// no compiler:
/// `CALLDATALOAD(32); loop: if n == 0 stop; LOG0(0, CALLDATALOAD(0)); n -= 1`.
const LOGGER_RUNTIME: &str = "602035 5b 8015601657 600035 6000 a0 60019003 600356 5b00";

/// Init code that returns [`LOGGER_RUNTIME`] (24 bytes, at offset 12).
fn logger_initcode() -> Bytes {
    let runtime: String = LOGGER_RUNTIME.split_whitespace().collect();
    assert_eq!(runtime.len(), 48, "24 bytes of runtime");
    format!("0x6018600c60003960186000f3{runtime}")
        .parse()
        .expect("hex")
}

/// Bytes of data per log, logs per transaction, and big transactions sent.
const LOG_DATA_BYTES: u64 = 100_000;
const LOGS_PER_TX: u64 = 2;
const BIG_TXS: u64 = 8;

fn big_log_call() -> Bytes {
    let mut data = Vec::with_capacity(64);
    data.extend_from_slice(&U256::from(LOG_DATA_BYTES).to_be_bytes::<32>());
    data.extend_from_slice(&U256::from(LOGS_PER_TX).to_be_bytes::<32>());
    data.into()
}

fn send_sync(addr: SocketAddr, raw: &Bytes) -> Value {
    try_rpc(addr, "eth_sendRawTransactionSync", json!([raw, 10_000]))
        .unwrap_or_else(|e| panic!("eth_sendRawTransactionSync: {e}"))
}

fn deploy_logger(addr: SocketAddr, key: &PrivateKeySigner) -> Address {
    let raw = sign_1559(
        key,
        0,
        TxKind::Create,
        U256::ZERO,
        logger_initcode(),
        200_000,
    );
    let receipt = send_sync(addr, &raw);
    assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
    receipt["contractAddress"]
        .as_str()
        .expect("a contract address")
        .parse()
        .expect("an address")
}

/// Sends the big-log transactions one by one (nonces 1..); their hashes and
/// block numbers.
fn send_big_logs(addr: SocketAddr, key: &PrivateKeySigner, logger: Address) -> Vec<(String, u64)> {
    (1..=BIG_TXS)
        .map(|nonce| {
            // ~1.7M gas: below EIP-7825's 2^24 per-transaction cap.
            let raw = sign_1559(
                key,
                nonce,
                TxKind::Call(logger),
                U256::ZERO,
                big_log_call(),
                3_000_000,
            );
            let receipt = send_sync(addr, &raw);
            assert_eq!(receipt["status"], json!("0x1"));
            let block = u64::from_str_radix(
                receipt["blockNumber"]
                    .as_str()
                    .expect("number")
                    .trim_start_matches("0x"),
                16,
            )
            .expect("hex");
            (
                receipt["transactionHash"]
                    .as_str()
                    .expect("hash")
                    .to_string(),
                block,
            )
        })
        .collect()
}

fn assert_too_large(error: &Value, limit: u64) {
    assert_eq!(error["code"], json!(-32020), "{error}");
    let message = error["message"].as_str().expect("message");
    assert!(message.starts_with("response too large: "), "{message}");
    assert!(
        message.contains(&format!("limit {limit} bytes")),
        "{message}"
    );
}

const BUDGET_BYTES: u64 = 1024 * 1024;

#[test]
fn answers_over_the_byte_budget_get_32020_and_small_ones_still_work() {
    let (config, _dir) = temp_file(
        "node.toml",
        &format!(
            "[rpc]\nresponse_bytes_max = {BUDGET_BYTES}\nbatch_response_bytes_max = {BUDGET_BYTES}\n"
        ),
    );
    let node = start_fulmen(&["--dev", "--config", config.to_str().unwrap()]);
    let key = signer(3);
    let logger = deploy_logger(node.addr, &key);
    let sent = send_big_logs(node.addr, &key, logger);
    let first = sent.first().expect("sent").1;
    let last = sent.last().expect("sent").1;
    wait_sealed(node.addr, last);
    // 8 x 2 x 100 KB of log data is ~3.2 MB of JSON, three times the budget.
    let range = json!([{
        "fromBlock": format!("{first:#x}"),
        "toBlock": format!("{last:#x}"),
        "address": logger,
    }]);
    let (code, message, _) = rpc_error(node.addr, "eth_getLogs", range);
    assert_too_large(&json!({"code": code, "message": message}), BUDGET_BYTES);
    // The block with the most of them: at least 4 transactions, ~1.6 MB.
    let mut per_block = std::collections::BTreeMap::<u64, u64>::new();
    for (_, block) in &sent {
        *per_block.entry(*block).or_default() += 1;
    }
    let (fullest, _) = per_block
        .iter()
        .max_by_key(|(_, count)| **count)
        .expect("a block");
    let receipts = rpc(
        node.addr,
        "eth_getBlockReceipts",
        json!([format!("{fullest:#x}")]),
    );
    assert_too_large(&receipts["error"], BUDGET_BYTES);

    // One transaction's receipt (~400 KB) fits, and so do small answers.
    let receipt = rpc(node.addr, "eth_getTransactionReceipt", json!([sent[0].0]));
    assert_eq!(
        receipt["result"]["logs"].as_array().map(Vec::len),
        Some(LOGS_PER_TX as usize),
        "{}",
        receipt.to_string().len()
    );
    let one_log = json!([{
        "fromBlock": format!("{first:#x}"),
        "toBlock": format!("{first:#x}"),
        "address": logger,
        "topics": [format!("0x{}", "11".repeat(32))],
    }]);
    assert_eq!(
        try_rpc(node.addr, "eth_getLogs", one_log).expect("small getLogs"),
        json!([])
    );
    assert_eq!(
        try_rpc(node.addr, "eth_chainId", json!([])).expect("chainId"),
        json!("0x1092")
    );
    let block = try_rpc(node.addr, "eth_getBlockByNumber", json!(["latest", true]))
        .expect("a block with full transactions");
    assert!(block["transactions"].is_array());

    // A batch: two receipts fit the batch budget, the third would take it
    // past, and gets -32020; the small call after it keeps its result.
    let batch: Vec<Value> = sent[..3]
        .iter()
        .enumerate()
        .map(|(i, (hash, _))| {
            json!({"jsonrpc":"2.0","id":i,"method":"eth_getTransactionReceipt","params":[hash]})
        })
        .chain([json!({"jsonrpc":"2.0","id":9,"method":"eth_chainId","params":[]})])
        .collect();
    let (status, body) = raw_post(node.addr, Value::Array(batch).to_string().as_bytes());
    assert_eq!(status, 200);
    assert!(body.len() < BUDGET_BYTES as usize + 4096, "{}", body.len());
    let replies: Vec<Value> = serde_json::from_str(&body).expect("a batch answer");
    assert_eq!(replies.len(), 4);
    assert!(replies[0]["result"].is_object());
    assert!(replies[1]["result"].is_object());
    let error = &replies[2]["error"];
    assert_eq!(error["code"], json!(-32020), "{error}");
    let message = error["message"].as_str().expect("message");
    assert!(message.starts_with("response too large: "), "{message}");
    assert!(
        message.contains(&format!("whose limit is {BUDGET_BYTES} bytes")),
        "{message}"
    );
    assert_eq!(replies[3]["result"], json!("0x1092"));

    // Over WebSocket too.
    let mut ws = connect_ws(node.addr);
    ws.send(Message::Text(
        json!({"jsonrpc":"2.0","id":1,"method":"eth_getBlockReceipts","params":[format!("{fullest:#x}")]})
            .to_string()
            .into(),
    ))
    .expect("send");
    let reply = read_json(&mut ws);
    assert_too_large(&reply["error"], BUDGET_BYTES);
    assert_eq!(reply["id"], json!(1));
}

#[test]
fn logs_filters_with_too_many_addresses_or_topics_are_refused() {
    let node = start_fulmen(&["--dev"]);
    let addresses = |n: u64| -> Vec<Address> {
        (0..n)
            .map(|i| Address::left_padding_from(&i.to_be_bytes()))
            .collect()
    };
    let mut ws = connect_ws(node.addr);
    let subscribe = |ws: &mut Ws, filter: Value| -> Value {
        ws.send(Message::Text(
            json!({"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["logs", filter]})
                .to_string()
                .into(),
        ))
        .expect("send");
        read_json(ws)
    };
    let reply = subscribe(&mut ws, json!({"address": addresses(5_000)}));
    assert_eq!(reply["error"]["code"], json!(-32602), "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("5000 addresses, limit 1000"), "{message}");
    let topics: Vec<String> = (0..1001).map(|i| format!("0x{i:064x}")).collect();
    let reply = subscribe(&mut ws, json!({"topics": [topics]}));
    assert_eq!(reply["error"]["code"], json!(-32602), "{reply}");
    // At the limit is fine.
    let reply = subscribe(&mut ws, json!({"address": addresses(1000)}));
    assert!(reply["result"].is_string(), "{reply}");

    // eth_getLogs shares the check.
    let (code, message, _) = rpc_error(
        node.addr,
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "address": addresses(1001)}]),
    );
    assert_eq!(code, -32602);
    assert!(message.contains("1001 addresses, limit 1000"), "{message}");
}

#[test]
fn the_node_wide_send_budget_closes_slow_consumers_and_spares_healthy_ones() {
    // Per connection, practically unbounded: only the node-wide budget
    // (4 MiB) can close anyone here.
    let (config, _dir) = temp_file(
        "node.toml",
        "[ws]\nsend_buffer_bytes_max = 268435456\nsend_buffer_bytes_total_max = 4194304\n\
         close_grace_ms = 30000\n",
    );
    let node = start_fulmen(&["--dev", "--config", config.to_str().unwrap()]);
    let key = signer(4);
    let logger = deploy_logger(node.addr, &key);

    // Three clients subscribe to every mini-block 20 times over, then stop
    // reading: each big mini-block queues ~8 MB for each of them.
    let mut slow: Vec<Ws> = (0..3)
        .map(|_| {
            let mut ws = connect_ws(node.addr);
            for i in 0..20 {
                ws.send(Message::Text(
                    json!({"jsonrpc":"2.0","id":i,"method":"eth_subscribe","params":["miniBlocks"]})
                        .to_string()
                        .into(),
                ))
                .expect("send");
                assert!(read_json(&mut ws)["result"].is_string());
            }
            ws
        })
        .collect();

    // A healthy client reads everything on its own thread.
    let addr = node.addr;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut ws = connect_ws(addr);
        ws.send(Message::Text(
            json!({"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["miniBlocks"]})
                .to_string()
                .into(),
        ))
        .expect("send");
        assert!(read_json(&mut ws)["result"].is_string());
        ready_tx.send(()).expect("ready");
        let mut seen = HashSet::new();
        while seen.len() < BIG_TXS as usize {
            let message = read_json(&mut ws);
            for tx in message["params"]["result"]["transactions"]
                .as_array()
                .expect("transactions")
            {
                seen.insert(tx["hash"].as_str().expect("hash").to_string());
            }
        }
        seen
    });
    ready_rx.recv().expect("the healthy reader subscribed");

    let sent: HashSet<String> = send_big_logs(node.addr, &key, logger)
        .into_iter()
        .map(|(hash, _)| hash)
        .collect();
    let seen = reader.join().expect("the healthy reader");
    assert_eq!(seen, sent, "the healthy subscriber saw every transaction");

    // Each slow one was closed as a slow consumer of the node-wide budget.
    for ws in &mut slow {
        let (code, reason) = read_until_closed(ws).expect("a close frame");
        assert_eq!(code, CloseCode::Policy);
        assert!(reason.contains("slow consumer"), "{reason}");
        assert!(reason.contains("node-wide limit 4194304 bytes"), "{reason}");
    }
    assert_eq!(
        try_rpc(node.addr, "eth_chainId", json!([])).expect("chainId"),
        json!("0x1092")
    );
}

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn connect_ws(addr: SocketAddr) -> Ws {
    let (ws, _) = tungstenite::connect(format!("ws://{addr}")).expect("WebSocket connect");
    if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
    }
    ws
}

fn read_json(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("read a message") {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Close(frame) => panic!("the node closed the connection: {frame:?}"),
            _ => continue,
        }
    }
}
