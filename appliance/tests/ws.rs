//! WebSocket JSON-RPC and subscriptions against the real binary: a raw
//! WebSocket client for the exact payloads (miniBlocks, stateChanges), the
//! limits and the slow-consumer rule; alloy's WS provider as a Rust dApp
//! would use it; viem's webSocket transport as a JS dApp would.

mod common;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use alloy::providers::{Provider, ProviderBuilder, WsConnect};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long a test waits for the node to get somewhere: far more than any
/// machine needs, so that a slow machine never fails a test.
const WAIT_MAX: Duration = Duration::from_secs(60);

/// Calls on `talker` until the node closes `silent` (or `WAIT_MAX` passes);
/// returns what `silent` received.
fn talk_until_closed(talker: &mut WsClient, silent: &mut TcpStream) -> Vec<u8> {
    silent
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let began = Instant::now();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        assert_eq!(talker.call("eth_chainId", json!([])), json!("0x1092"));
        match silent.read(&mut chunk) {
            Ok(0) => return bytes,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return bytes,
        }
        assert!(
            began.elapsed() < WAIT_MAX,
            "the silent connection was not closed"
        );
    }
}

/// A blocking WebSocket JSON-RPC client that keeps notifications aside
/// while it waits for a response.
struct WsClient {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    notifications: VecDeque<(String, Value)>,
    next_id: u64,
}

/// A WebSocket to the node at `addr` whose reads time out after `timeout`.
fn ws_connect(
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> WebSocket<MaybeTlsStream<TcpStream>> {
    let (socket, _) = tungstenite::connect(format!("ws://{addr}")).expect("WebSocket connect");
    if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
        tcp.set_read_timeout(Some(timeout)).expect("read timeout");
    }
    socket
}

impl WsClient {
    fn connect(addr: std::net::SocketAddr) -> Self {
        Self {
            socket: ws_connect(addr, Duration::from_secs(30)),
            notifications: VecDeque::new(),
            next_id: 1,
        }
    }

    fn send_text(&mut self, text: String) {
        self.socket
            .send(Message::Text(text.into()))
            .expect("send a message");
    }

    fn read_json(&mut self) -> Value {
        loop {
            match self.socket.read().expect("read a message") {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON message"),
                Message::Close(frame) => panic!("the node closed the connection: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// Sends a call and returns its whole response object.
    fn call_raw(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_text(
            json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}).to_string(),
        );
        loop {
            let message = self.read_json();
            if message["method"] == "eth_subscription" {
                self.keep(message);
            } else {
                assert_eq!(message["id"], json!(id), "responses come in order here");
                return message;
            }
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let response = self.call_raw(method, params);
        assert!(
            response.get("error").is_none(),
            "{method} failed: {response}"
        );
        response["result"].clone()
    }

    fn keep(&mut self, message: Value) {
        let id = message["params"]["subscription"]
            .as_str()
            .expect("subscription id")
            .to_string();
        self.notifications
            .push_back((id, message["params"]["result"].clone()));
    }

    fn subscribe(&mut self, params: Value) -> String {
        self.call("eth_subscribe", params)
            .as_str()
            .expect("an id")
            .to_string()
    }

    /// The next notification (subscription id, result).
    fn notification(&mut self) -> (String, Value) {
        if let Some(n) = self.notifications.pop_front() {
            return n;
        }
        let message = self.read_json();
        assert_eq!(message["method"], "eth_subscription", "{message}");
        self.keep(message);
        self.notifications.pop_front().expect("just kept")
    }
}

/// The result of an HTTP JSON-RPC call that must succeed.
fn http_result(addr: std::net::SocketAddr, method: &str, params: Value) -> Value {
    try_rpc(addr, method, params).unwrap_or_else(|e| panic!("{method}: {e}"))
}

fn hex_u64(value: &Value) -> u64 {
    let text = value.as_str().expect("hex string");
    u64::from_str_radix(text.trim_start_matches("0x"), 16).expect("hex quantity")
}

fn bump_call() -> Bytes {
    Bytes::copy_from_slice(&keccak256("bump()")[..4])
}

/// `from`'s transaction `nonce` calling `bump()` on `probe`.
fn bump_raw(from: &PrivateKeySigner, nonce: u64, probe: Address) -> Bytes {
    sign_1559(
        from,
        nonce,
        TxKind::Call(probe),
        U256::ZERO,
        bump_call(),
        200_000,
    )
}

fn deploy_probe(addr: std::net::SocketAddr, alice: &PrivateKeySigner, nonce: u64) -> Address {
    let raw = sign_1559(
        alice,
        nonce,
        TxKind::Create,
        U256::ZERO,
        bytecode("Probe"),
        1_000_000,
    );
    let receipt = http_result(addr, "eth_sendRawTransactionSync", json!([raw]));
    receipt["contractAddress"]
        .as_str()
        .expect("contract address")
        .parse()
        .expect("address")
}

#[test]
fn mini_block_events_equal_the_sealed_blocks_and_arrive_once_each() {
    let node = start_fulmen(&["--dev"]);
    let alice = signer(0);
    let bob = signer(1).address();
    let mut ws = WsClient::connect(node.addr);
    let minis = ws.subscribe(json!(["miniBlocks"]));
    let heads = ws.subscribe(json!(["newHeads"]));
    let pending = ws.subscribe(json!(["newPendingTransactions"]));

    let probe = deploy_probe(node.addr, &alice, 0);
    let changes = ws.subscribe(json!(["stateChanges", [bob, probe]]));
    let logs = ws.subscribe(json!(["logs", {"address": probe}]));

    // Transfers and bumps, over WebSocket too: every HTTP method works there.
    let mut sent = vec![];
    for nonce in 1..=12u64 {
        let raw = if nonce % 3 == 0 {
            bump_raw(&alice, nonce, probe)
        } else {
            transfer_raw(&alice, nonce, bob, 1_000 + nonce)
        };
        let hash = if nonce % 2 == 0 {
            ws.call("eth_sendRawTransactionSync", json!([raw]))["transactionHash"].clone()
        } else {
            http_result(node.addr, "eth_sendRawTransaction", json!([raw]))
        };
        sent.push(hash.as_str().expect("hash").parse::<B256>().expect("hash"));
    }
    let last_block = hex_u64(
        &http_result(node.addr, "eth_getTransactionReceipt", json!([sent.last()]))["blockNumber"],
    );

    // Collect until the block holding the last transaction is sealed.
    let mut mini_blocks: Vec<Value> = vec![];
    let mut headers: BTreeMap<u64, Value> = BTreeMap::new();
    let mut pending_hashes = vec![];
    let mut state_changes: Vec<Value> = vec![];
    let mut log_events: Vec<Value> = vec![];
    while headers.keys().next_back().is_none_or(|n| *n < last_block) {
        let (id, result) = ws.notification();
        if id == minis {
            mini_blocks.push(result);
        } else if id == heads {
            headers.insert(hex_u64(&result["number"]), result);
        } else if id == pending {
            pending_hashes.push(
                result
                    .as_str()
                    .expect("hash")
                    .parse::<B256>()
                    .expect("hash"),
            );
        } else if id == changes {
            state_changes.push(result);
        } else if id == logs {
            log_events.push(result);
        } else {
            panic!("notification for an unknown subscription {id}");
        }
    }

    // Mini-blocks: consecutive numbers, indexes from 0 in each block, and
    // per block exactly the sealed block's transactions and receipts.
    let mut by_block: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for pair in mini_blocks.windows(2) {
        assert_eq!(
            pair[1]["mini_block_number"].as_u64().unwrap(),
            pair[0]["mini_block_number"].as_u64().unwrap() + 1,
            "mini-blocks arrive in order without gaps"
        );
    }
    for mini in &mini_blocks {
        let number = mini["block_number"].as_u64().expect("block_number");
        let list = by_block.entry(number).or_default();
        assert_eq!(
            mini["index"].as_u64(),
            Some(list.len() as u64),
            "index in block"
        );
        let txs = mini["transactions"].as_array().expect("transactions");
        assert_eq!(txs.len(), mini["receipts"].as_array().unwrap().len());
        assert!(
            !txs.is_empty(),
            "a mini-block holds at least one transaction"
        );
        let gas: u64 = mini["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| hex_u64(&r["gasUsed"]))
            .sum();
        assert_eq!(mini["gas_used"].as_u64(), Some(gas));
        assert!(
            mini["mini_block_timestamp"].as_u64().unwrap() / 1_000_000
                >= mini["block_timestamp"].as_u64().unwrap() - 2
        );
        list.push(mini);
    }
    let mut seen_txs = vec![];
    for (number, minis) in &by_block {
        let Some(header) = headers.get(number) else {
            continue; // sealed after the last transaction's block
        };
        let block = http_result(
            node.addr,
            "eth_getBlockByNumber",
            json!([format!("0x{number:x}"), true]),
        );
        assert_eq!(
            header["hash"], block["hash"],
            "newHeads carries the sealed header"
        );
        assert_eq!(header["stateRoot"], block["stateRoot"]);
        assert_eq!(header["receiptsRoot"], block["receiptsRoot"]);
        let receipts = http_result(
            node.addr,
            "eth_getBlockReceipts",
            json!([format!("0x{number:x}")]),
        );
        let mini_txs: Vec<&Value> = minis
            .iter()
            .flat_map(|m| m["transactions"].as_array().unwrap())
            .collect();
        let mini_receipts: Vec<&Value> = minis
            .iter()
            .flat_map(|m| m["receipts"].as_array().unwrap())
            .collect();
        let sealed_txs = block["transactions"].as_array().unwrap();
        assert_eq!(
            mini_txs.len(),
            sealed_txs.len(),
            "block {number}: same transactions"
        );
        for (seen, sealed) in mini_txs.iter().zip(sealed_txs) {
            for field in [
                "hash",
                "from",
                "to",
                "nonce",
                "input",
                "value",
                "transactionIndex",
                "blockNumber",
            ] {
                assert_eq!(seen[field], sealed[field], "block {number}: tx {field}");
            }
            assert_eq!(
                seen["blockHash"],
                json!(B256::ZERO),
                "preconfirmed: zero block hash"
            );
            seen_txs.push(seen["hash"].as_str().unwrap().parse::<B256>().unwrap());
        }
        for (seen, sealed) in mini_receipts.iter().zip(receipts.as_array().unwrap()) {
            for field in [
                "transactionHash",
                "status",
                "gasUsed",
                "cumulativeGasUsed",
                "logsBloom",
                "contractAddress",
            ] {
                assert_eq!(
                    seen[field], sealed[field],
                    "block {number}: receipt {field}"
                );
            }
            let (seen_logs, sealed_logs) = (
                seen["logs"].as_array().unwrap(),
                sealed["logs"].as_array().unwrap(),
            );
            assert_eq!(seen_logs.len(), sealed_logs.len());
            for (a, b) in seen_logs.iter().zip(sealed_logs) {
                for field in ["address", "topics", "data", "logIndex", "transactionIndex"] {
                    assert_eq!(a[field], b[field], "block {number}: log {field}");
                }
            }
        }
    }
    let deploy_and_sent: Vec<B256> = seen_txs.clone();
    assert_eq!(
        &deploy_and_sent[1..],
        &sent[..],
        "every transaction once, in order"
    );

    // Pending transactions: each preconfirmed hash once, in order.
    assert_eq!(&pending_hashes[1..], &sent[..]);

    // Logs: each Bumped once (the deploy emits none), at mini-block time (zero block hash), not again at the seal.
    assert_eq!(log_events.len(), 4, "{log_events:?}");
    for (i, log) in log_events.iter().enumerate() {
        assert_eq!(log["address"], json!(probe));
        assert_eq!(log["blockHash"], json!(B256::ZERO));
        assert_eq!(log["topics"][1], json!(B256::from(U256::from(i + 1))));
        assert_eq!(log["removed"], json!(false));
    }

    // Events of the deploy's mini-block may have reached this core before or
    // after those subscriptions were made: look only at later mini-blocks.
    let deploy_mini = mini_blocks[0]["mini_block_number"].as_u64().unwrap();
    state_changes.retain(|c| c["mini_block_number"].as_u64().unwrap() > deploy_mini);

    // State changes: Bob's balance and the probe's counter slot after each
    // mini-block; the last change in each sealed block equals the state there.
    let mut last_bob: BTreeMap<u64, U256> = BTreeMap::new();
    let mut counter_values = vec![];
    for change in &state_changes {
        let address: Address = change["address"].as_str().unwrap().parse().unwrap();
        let block = change["block_number"].as_u64().unwrap();
        if address == bob {
            last_bob.insert(block, change["balance"].as_str().unwrap().parse().unwrap());
            assert!(
                change.get("code_hash").is_none(),
                "bob's code did not change"
            );
            assert_eq!(change["storage"], json!({}));
        } else {
            assert_eq!(address, probe);
            let storage = change["storage"].as_object().unwrap();
            assert_eq!(storage.len(), 1, "only the counter slot changes: {change}");
            counter_values.push(storage[&B256::ZERO.to_string()].clone());
        }
    }
    for (block, balance) in &last_bob {
        if headers.contains_key(block) {
            let at_block = http_result(
                node.addr,
                "eth_getBalance",
                json!([bob, format!("0x{block:x}")]),
            );
            assert_eq!(at_block, json!(balance), "bob at the end of block {block}");
        }
    }
    let expected: Vec<Value> = (1..=4u64)
        .map(|i| json!(B256::from(U256::from(i))))
        .collect();
    assert_eq!(counter_values, expected);
}

#[test]
fn alloy_ws_provider_subscribes_and_sends() {
    let node = start_fulmen(&["--dev"]);
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    runtime.block_on(async {
        let alice = signer(0);
        let url = format!("ws://{}", node.addr);
        let provider = ProviderBuilder::new()
            .wallet(alloy::network::EthereumWallet::from(alice.clone()))
            .connect_ws(WsConnect::new(url))
            .await
            .expect("alloy WS provider");
        assert_eq!(provider.get_chain_id().await.unwrap(), DEV_CHAIN_ID);
        let probe = deploy_probe(node.addr, &alice, 0);
        let mut blocks = provider
            .subscribe_blocks()
            .await
            .expect("newHeads")
            .into_stream();
        let mut logs = provider
            .subscribe_logs(&Filter::new().address(probe))
            .await
            .expect("logs")
            .into_stream();
        let mut minis = provider
            .subscribe::<_, Value>(("miniBlocks",))
            .await
            .expect("miniBlocks")
            .into_stream();
        let mut pending = provider
            .subscribe_pending_transactions()
            .await
            .expect("pending")
            .into_stream();

        // Sent through the same WebSocket, with alloy's wallet filler.
        let tx = alloy::rpc::types::TransactionRequest::default()
            .to(probe)
            .input(bump_call().into());
        let receipt = provider
            .send_transaction(tx)
            .await
            .expect("send")
            .get_receipt()
            .await
            .expect("receipt");
        assert!(receipt.status());

        let within = Duration::from_secs(10);
        let log = tokio::time::timeout(within, logs.next())
            .await
            .expect("a log")
            .unwrap();
        assert_eq!(log.address(), probe);
        assert_eq!(log.transaction_hash, Some(receipt.transaction_hash));
        // The deploy's events may come first (they raced the subscriptions).
        loop {
            let hash = tokio::time::timeout(within, pending.next())
                .await
                .expect("a pending tx")
                .unwrap();
            if hash == receipt.transaction_hash {
                break;
            }
        }
        loop {
            let mini = tokio::time::timeout(within, minis.next())
                .await
                .expect("a mini-block")
                .unwrap();
            if mini["transactions"][0]["hash"] == json!(receipt.transaction_hash) {
                assert_eq!(mini["receipts"][0]["status"], json!("0x1"));
                break;
            }
        }
        let block_number = receipt.block_number.expect("block number");
        loop {
            let header = tokio::time::timeout(within, blocks.next())
                .await
                .expect("a header")
                .unwrap();
            if header.number >= block_number {
                let sealed = provider
                    .get_transaction_receipt(receipt.transaction_hash)
                    .await
                    .unwrap()
                    .unwrap();
                if header.number == block_number {
                    assert_eq!(sealed.block_hash, Some(header.hash));
                }
                break;
            }
        }
    });
}

#[test]
fn viem_watches_blocks_and_contract_events_over_websocket() {
    let node = start_fulmen(&["--dev"]);
    assert!(
        repo_root().join("tools/node_modules/viem").exists(),
        "viem is missing: run scripts/test.sh (npm install in tools/)"
    );
    let output = Command::new("node")
        .arg(repo_root().join("tools/viem-ws-check.mjs"))
        .arg(format!("ws://{}", node.addr))
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "viem WebSocket check failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("viem-ws-check: ok"));
}

fn metric(metrics: &str, name: &str) -> f64 {
    let body = http_get(metrics);
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn http_get(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect metrics");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("read metrics");
    out
}

#[test]
fn a_slow_consumer_is_closed_and_others_receive_everything() {
    let metrics_port = free_port();
    let (config, _dir) = temp_file(
        "node.toml",
        &format!(
            "metrics_addr = \"127.0.0.1:{metrics_port}\"\n[ws]\nsend_buffer_bytes_max = 65536\nclose_grace_ms = 30000\n"
        ),
    );
    let node = start_fulmen(&["--dev", "--config", config.to_str().unwrap()]);
    let metrics = format!("127.0.0.1:{metrics_port}");

    // The slow client subscribes many times over, then stops reading.
    let mut slow = WsClient::connect(node.addr);
    for _ in 0..100 {
        slow.subscribe(json!(["miniBlocks"]));
    }
    // A healthy client reads everything on its own thread.
    let addr = node.addr;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut ws = WsClient::connect(addr);
        let sub = ws.subscribe(json!(["miniBlocks"]));
        ready_tx.send(()).unwrap();
        let mut hashes = vec![];
        let mut last: Option<u64> = None;
        while hashes.len() < 2_000 {
            let (id, mini) = ws.notification();
            assert_eq!(id, sub);
            let number = mini["mini_block_number"].as_u64().unwrap();
            if let Some(last) = last {
                assert_eq!(number, last + 1, "no gap for the healthy subscriber");
            }
            last = Some(number);
            for tx in mini["transactions"].as_array().unwrap() {
                hashes.push(tx["hash"].as_str().unwrap().to_string());
            }
        }
        hashes
    });
    ready_rx.recv().unwrap();

    // 2,000 transfers from 4 senders, in batches of 100.
    let mut sent = HashSet::new();
    for sender in 0..4u32 {
        let key = signer(2 + sender);
        for chunk in 0..5u64 {
            let batch: Vec<Value> = (0..100u64)
                .map(|i| {
                    let raw = transfer_raw(&key, chunk * 100 + i, signer(1).address(), 1);
                    json!({"jsonrpc":"2.0","id":i,"method":"eth_sendRawTransaction","params":[raw]})
                })
                .collect();
            let (status, body) = raw_post(node.addr, Value::Array(batch).to_string().as_bytes());
            assert_eq!(status, 200);
            for reply in serde_json::from_str::<Vec<Value>>(&body).unwrap() {
                assert!(reply.get("error").is_none(), "{reply}");
                sent.insert(reply["result"].as_str().unwrap().to_string());
            }
        }
    }
    let received: HashSet<String> = reader.join().expect("healthy reader").into_iter().collect();
    assert_eq!(
        received, sent,
        "the healthy subscriber saw every transaction"
    );

    // The node noticed the slow one, and it gets a clear close reason once it reads.
    let began = Instant::now();
    while metric(&metrics, "fulmen_ws_slow_consumers_total") < 1.0 {
        assert!(began.elapsed() < WAIT_MAX, "no slow consumer was detected");
        std::thread::sleep(Duration::from_millis(50));
    }
    let closed = read_until_closed(&mut slow.socket);
    let (code, reason) = closed.expect("a close frame");
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("slow consumer"), "{reason}");
    // And the node still serves.
    assert_eq!(
        http_result(node.addr, "eth_chainId", json!([])),
        json!("0x1092")
    );
}

#[test]
fn limits_give_clear_errors() {
    let (config, _dir) = temp_file(
        "node.toml",
        "[ws]\nconnections_max = 3\nsubscriptions_per_connection_max = 2\nmessage_bytes_max = 4096\n\
         ping_interval_ms = 500\nidle_timeout_ms = 3000\nclose_grace_ms = 500\n",
    );
    let node = start_fulmen(&["--dev", "--config", config.to_str().unwrap()]);

    // eth_subscribe over HTTP is refused with geth's error.
    let (code, message, _) = rpc_error(node.addr, "eth_subscribe", json!(["newHeads"]));
    assert_eq!(code, -32601);
    assert!(message.contains("notifications not supported"), "{message}");

    let mut a = WsClient::connect(node.addr);
    // A request without an id is a notification: no response.
    a.send_text(r#"{"jsonrpc":"2.0","method":"net_version"}"#.into());
    assert_eq!(a.call("eth_chainId", json!([])), json!("0x1092"));
    // Bad input gets an error and the connection stays.
    a.send_text("{not json".into());
    assert_eq!(a.read_json()["error"]["code"], json!(-32700));
    let unknown = a.call_raw("eth_subscribe", json!(["everything"]));
    assert_eq!(unknown["error"]["code"], json!(-32602));
    // Subscriptions per connection.
    let first = a.subscribe(json!(["newHeads"]));
    a.subscribe(json!(["logs", {"address": Address::ZERO}]));
    let third = a.call_raw("eth_subscribe", json!(["miniBlocks"]));
    assert!(
        third["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many subscriptions"),
        "{third}"
    );
    assert_eq!(a.call("eth_unsubscribe", json!([first])), json!(true));
    assert_eq!(a.call("eth_unsubscribe", json!([first])), json!(false));
    a.subscribe(json!(["miniBlocks"]));

    // Connections per node: a and two more; the fourth is refused.
    let _b = WsClient::connect(node.addr);
    let mut c = WsClient::connect(node.addr);
    match tungstenite::connect(format!("ws://{}", node.addr)) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!(
            "a fourth connection was not refused: {:?}",
            other.map(|_| ())
        ),
    }

    // A message over the limit closes with 1009 and the reason.
    c.send_text(format!(
        r#"{{"id":1,"method":"web3_sha3","params":["0x{}"]}}"#,
        "ab".repeat(4096)
    ));
    let (code, reason) = read_until_closed(&mut c.socket).expect("a close frame");
    assert_eq!(code, CloseCode::Size);
    assert!(
        reason.contains("message too big: limit 4096 bytes"),
        "{reason}"
    );
    drop(c);

    // A client that never answers pings is closed after the idle timeout.
    // (Raw bytes: a WebSocket library would answer the pings when it reads.)
    // Its slot frees once c's close completes.
    let began = Instant::now();
    let mut silent = loop {
        let mut tcp = TcpStream::connect(node.addr).expect("connect");
        write!(
            tcp,
            "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            node.addr
        )
        .unwrap();
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).expect("status line");
        if &head == b"HTTP/1.1 101" {
            break tcp;
        }
        assert!(
            began.elapsed() < WAIT_MAX,
            "the closed connection's slot was not freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Meanwhile `a` keeps talking, so it stays: it outlives the silent one,
    // which the node closes once it has been silent for the idle timeout.
    let bytes = talk_until_closed(&mut a, &mut silent);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("idle timeout: nothing received"), "{text}");
    // Close code 1001 (0x03e9) precedes the reason.
    let at = bytes
        .windows(12)
        .position(|w| w == b"idle timeout")
        .unwrap();
    assert_eq!(&bytes[at - 2..at], &[0x03, 0xe9]);

    // The others kept working throughout.
    assert_eq!(a.call("eth_chainId", json!([])), json!("0x1092"));
}

/// A raw WebSocket subscriber that reads with a short timeout, so that a
/// test can tell "nothing more came" from a hang.
struct Reader {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    /// Notifications read while waiting for a response.
    kept: VecDeque<Value>,
}

impl Reader {
    fn connect(addr: std::net::SocketAddr) -> Self {
        Self {
            socket: ws_connect(addr, Duration::from_millis(500)),
            kept: VecDeque::new(),
        }
    }

    /// Sends one call; its response comes first on a fresh connection.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let call = json!({"jsonrpc":"2.0","id":1,"method":method,"params":params});
        self.socket
            .send(Message::Text(call.to_string().into()))
            .expect("send");
        let began = Instant::now();
        loop {
            match self.read() {
                Some(message) if message["method"] == "eth_subscription" => {
                    self.kept.push_back(message);
                }
                Some(message) => return message,
                None => assert!(began.elapsed() < WAIT_MAX, "no answer to {method}"),
            }
        }
    }

    /// The next notification, `None` after a read timeout.
    fn next(&mut self) -> Option<Value> {
        if let Some(message) = self.kept.pop_front() {
            return Some(message);
        }
        self.read()
    }

    /// The next JSON message, `None` after a read timeout.
    fn read(&mut self) -> Option<Value> {
        match self.socket.read() {
            Ok(Message::Text(text)) => Some(serde_json::from_str(&text).expect("JSON")),
            Ok(Message::Close(frame)) => panic!("the node closed the connection: {frame:?}"),
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Every notification's result until none comes for a second.
    fn drain(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_secs(1) {
            if let Some(message) = self.next() {
                out.push(message["params"]["result"].clone());
                quiet_since = Instant::now();
            }
        }
        out
    }
}

/// The documented mini-block hash, recomputed from a `miniBlocks`
/// notification alone.
fn recomputed_mini_block_hash(mini: &Value) -> B256 {
    let mut bytes = Vec::new();
    let parent: B256 =
        serde_json::from_value(mini["parent_mini_block_hash"].clone()).expect("parent");
    bytes.extend_from_slice(parent.as_slice());
    for field in ["mini_block_number", "block_number", "mini_block_timestamp"] {
        bytes.extend_from_slice(&mini[field].as_u64().expect(field).to_be_bytes());
    }
    for tx in mini["transactions"].as_array().expect("transactions") {
        let hash: B256 = serde_json::from_value(tx["hash"].clone()).expect("hash");
        bytes.extend_from_slice(hash.as_slice());
    }
    keccak256(&bytes)
}

/// Sends `count` transactions from each of `senders` as fast as the node
/// takes them (transfers, and every fourth a bump of `probe`, which logs
/// and writes storage); returns every hash.
fn send_load(
    addr: std::net::SocketAddr,
    senders: Vec<PrivateKeySigner>,
    probe: Address,
    count: u64,
) -> Vec<B256> {
    let threads: Vec<_> = senders
        .into_iter()
        .map(|sender| {
            std::thread::spawn(move || {
                let to = signer(9).address();
                (0..count)
                    .map(|nonce| {
                        let raw = if nonce % 4 == 3 {
                            bump_raw(&sender, nonce, probe)
                        } else {
                            // Bulky, so that the log spans several segments.
                            let input = Bytes::from(vec![0u8; 1000]);
                            sign_1559(
                                &sender,
                                nonce,
                                TxKind::Call(to),
                                U256::from(1),
                                input,
                                100_000,
                            )
                        };
                        let hash = http_result(addr, "eth_sendRawTransaction", json!([raw]));
                        serde_json::from_value::<B256>(hash).expect("hash")
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("sender"))
        .collect()
}

/// A subscriber that drops its connection at random moments and resumes
/// with `fromMiniBlock` gets every mini-block once, in order and chained by
/// hash, while the node sequences under load; what it reassembles equals
/// the sealed blocks. `logs` and `stateChanges` replayed from the log (from
/// several 1 MiB segments) equal what a live subscriber received.
#[test]
fn a_subscriber_that_resumes_with_from_mini_block_misses_nothing() {
    let dir = tempdir::TempDir::new("fulmen-resume");
    let metrics_port = free_port();
    let (config, _config_dir) = temp_file(
        "node.toml",
        &format!("metrics_addr = \"127.0.0.1:{metrics_port}\"\n"),
    );
    let node = start_fulmen_in(
        &dir.0,
        &[
            "--dev",
            "--storage-segment-mb",
            "1",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let probe = deploy_probe(node.addr, &signer(0), 0);
    let mut live = Reader::connect(node.addr);
    let live_logs = live.call("eth_subscribe", json!(["logs", {}]))["result"].clone();
    let live_changes = live.call("eth_subscribe", json!(["stateChanges"]))["result"].clone();
    let live_thread = std::thread::spawn(move || {
        // Read all along (the send buffer is bounded), until quiet.
        let mut got: Vec<Value> = Vec::new();
        let began = Instant::now();
        loop {
            let batch = live.drain();
            let quiet = batch.is_empty();
            got.extend(batch);
            if quiet && began.elapsed() > Duration::from_secs(5) {
                return got;
            }
        }
    });

    let load_node = node.addr;
    let load =
        std::thread::spawn(move || send_load(load_node, (1..=4).map(signer).collect(), probe, 600));
    // Resume over and over with a random stretch per connection, dropping
    // each without a close.
    let mut minis: Vec<Value> = Vec::new();
    let mut next = 1u64;
    let mut parent = B256::ZERO;
    let mut random = 0x2545_f491_4f6c_dd1d_u64;
    let mut txs_seen = 0usize;
    let mut resumes = 0;
    let total_txs = 1 + 4 * 600;
    let began = Instant::now();
    while txs_seen < total_txs {
        assert!(
            began.elapsed() < WAIT_MAX * 2,
            "{txs_seen} of {total_txs} txs seen"
        );
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let stretch = 1 + random % 40;
        let mut sub = Reader::connect(node.addr);
        let answer = sub.call(
            "eth_subscribe",
            json!(["miniBlocks", {"fromMiniBlock": next}]),
        );
        assert!(answer["result"].is_string(), "{answer}");
        resumes += 1;
        let mut read = 0;
        while read < stretch && txs_seen < total_txs {
            assert!(
                began.elapsed() < WAIT_MAX * 2,
                "{txs_seen} of {total_txs} txs seen"
            );
            let Some(message) = sub.next() else { continue };
            let mini = &message["params"]["result"];
            assert_eq!(mini["mini_block_number"], json!(next), "{mini}");
            let hash: B256 = serde_json::from_value(mini["mini_block_hash"].clone()).expect("hash");
            if next > 1 {
                assert_eq!(mini["parent_mini_block_hash"], json!(parent), "chained");
            }
            assert_eq!(recomputed_mini_block_hash(mini), hash, "{mini}");
            parent = hash;
            txs_seen += mini["transactions"].as_array().expect("txs").len();
            minis.push(mini.clone());
            next += 1;
            read += 1;
        }
        drop(sub);
    }
    let sent = load.join().expect("load");
    eprintln!(
        "{resumes} resumes over {} mini-blocks and {txs_seen} txs in {:?}",
        minis.len(),
        began.elapsed()
    );
    assert!(resumes > 10, "only {resumes} resumes");
    // Some stretches came from the log (the rest live, after a hand-off).
    let metrics = format!("127.0.0.1:{metrics_port}");
    assert!(metric(&metrics, "fulmen_ws_resumed_mini_blocks_total") > 0.0);

    // The reassembled stream is the chain: each sealed block's transactions
    // are its mini-blocks' in order, indexes from 0.
    let last_block = minis.last().expect("mini-blocks")["block_number"]
        .as_u64()
        .expect("block");
    wait_sealed(node.addr, last_block);
    let mut by_block: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for mini in &minis {
        let block = mini["block_number"].as_u64().expect("block");
        let index = mini["index"].as_u64().expect("index");
        let list = by_block.entry(block).or_default();
        assert_eq!(index, list.len() as u64, "indexes from 0 in block {block}");
        list.push(mini.clone());
    }
    let mut hashes = HashSet::new();
    for (block, list) in &by_block {
        let sealed = http_result(
            node.addr,
            "eth_getBlockByNumber",
            json!([format!("{block:#x}"), false]),
        );
        let from_minis: Vec<Value> = list
            .iter()
            .flat_map(|m| {
                m["transactions"]
                    .as_array()
                    .expect("txs")
                    .iter()
                    .map(|t| t["hash"].clone())
            })
            .collect();
        assert_eq!(&sealed["transactions"], &json!(from_minis), "block {block}");
        for mini in list {
            for receipt in mini["receipts"].as_array().expect("receipts") {
                let sealed = http_result(
                    node.addr,
                    "eth_getTransactionReceipt",
                    json!([receipt["transactionHash"]]),
                );
                for field in [
                    "transactionIndex",
                    "cumulativeGasUsed",
                    "gasUsed",
                    "status",
                    "logs",
                ] {
                    let (ours, theirs) = (&receipt[field], &sealed[field]);
                    if field == "logs" {
                        // Preconfirmed logs name no block hash yet.
                        assert_eq!(
                            ours.as_array().map(Vec::len),
                            theirs.as_array().map(Vec::len)
                        );
                        for (a, b) in ours
                            .as_array()
                            .into_iter()
                            .flatten()
                            .zip(theirs.as_array().into_iter().flatten())
                        {
                            assert_eq!((&a["logIndex"], &a["data"]), (&b["logIndex"], &b["data"]));
                        }
                    } else {
                        assert_eq!(ours, theirs, "{field} of {}", receipt["transactionHash"]);
                    }
                }
            }
            hashes.extend(
                mini["transactions"]
                    .as_array()
                    .expect("txs")
                    .iter()
                    .map(|t| t["hash"].clone()),
            );
        }
    }
    for hash in &sent {
        assert!(hashes.contains(&json!(hash)), "{hash} not in a mini-block");
    }
    let segments = std::fs::read_dir(dir.0.join("log"))
        .expect("log")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .count();
    assert!(segments >= 3, "the log spans {segments} segments");

    // Replayed from mini-block 1, logs and state changes equal what was
    // delivered live from the first mini-block the live subscriber saw on.
    let live_got = live_thread.join().expect("live reader");
    let _ = (live_logs, live_changes);
    let first_live = live_got
        .iter()
        .map(|r| r["mini_block_number"].as_u64().expect("mini_block_number"))
        .min()
        .expect("live notifications");
    let mut replay = Reader::connect(node.addr);
    let logs_id = replay.call(
        "eth_subscribe",
        json!(["logs", {"fromMiniBlock": first_live}]),
    )["result"]
        .clone();
    assert!(logs_id.is_string(), "{logs_id}");
    let changes_id = replay.call(
        "eth_subscribe",
        json!(["stateChanges", {"fromMiniBlock": "0x1"}]),
    )["result"]
        .clone();
    assert!(changes_id.is_string(), "{changes_id}");
    let replayed = replay.drain();
    let is_log = |r: &Value| r.get("logIndex").is_some();
    let live_logs: Vec<&Value> = live_got.iter().filter(|r| is_log(r)).collect();
    let live_changes: Vec<&Value> = live_got.iter().filter(|r| !is_log(r)).collect();
    let replayed_logs: Vec<&Value> = replayed.iter().filter(|r| is_log(r)).collect();
    let replayed_changes: Vec<&Value> = replayed
        .iter()
        .filter(|r| !is_log(r) && r["mini_block_number"].as_u64() >= Some(first_live))
        .collect();
    assert!(live_logs.len() >= 600, "{} live logs", live_logs.len());
    assert_eq!(
        replayed_logs, live_logs,
        "logs replayed from the log = live"
    );
    assert_eq!(
        replayed_changes, live_changes,
        "state changes replayed = live"
    );

    // A start past the newest is refused clearly.
    let mut far = Reader::connect(node.addr);
    let answer = far.call(
        "eth_subscribe",
        json!(["miniBlocks", {"fromMiniBlock": 1_000_000_000}]),
    );
    let message = answer["error"]["message"].as_str().expect("an error");
    assert!(
        message.contains("does not exist yet: the newest is"),
        "{message}"
    );
}
