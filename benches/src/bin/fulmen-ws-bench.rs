//! Preconfirmation-to-subscriber latency: send a transaction that emits a
//! log, and time until each WebSocket `logs` subscriber receives that log.
//! One transaction in flight; optionally with a background load of
//! transfers. Works against any node with `eth_subscribe` on the RPC port
//! (fulmen, anvil).
//!
//!   fulmen-ws-bench --rpc http://127.0.0.1:8545 --subscribers 1,100,1000 --txs 300
//!   fulmen-ws-bench --rpc ... --load-tps 2000      # under load
//!   fulmen-ws-bench --rpc SEQUENCER --subscribe-rpc REPLICA   # on a replica
//!
//! Figures per subscriber count: p50/p99 over every (transaction,
//! subscriber) delivery, and p50/p99 of the last subscriber per transaction.
//!
//!   fulmen-ws-bench --rpc ... --resume-from 1    # resume throughput
//!
//! With `--resume-from N` it measures instead how fast one `miniBlocks`
//! subscription replays the chain's history from mini-block N (fulmen's
//! `fromMiniBlock`): mini-blocks, transactions and bytes per second until
//! the stream has been quiet for a second (run it on an idle node).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_consensus::TxEip1559;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use async_tungstenite::tungstenite::Message;
use clap::Parser;
use fulmen_benches::client::{Conn, quantity};
use fulmen_benches::runner::endpoint;
use fulmen_benches::sign::{Key, dev_keys};
use fulmen_benches::stats::{histogram, record};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Notify;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Init code of a contract whose every call emits one empty LOG0: runtime
/// `PUSH1 0 PUSH1 0 LOG0 STOP`, returned by `PUSH6 runtime, PUSH1 0,
/// MSTORE, PUSH1 6, PUSH1 26, RETURN`.
const EMITTER_INIT: [u8; 15] = [
    0x65, 0x60, 0x00, 0x60, 0x00, 0xa0, 0x00, 0x60, 0x00, 0x52, 0x60, 0x06, 0x60, 0x1a, 0xf3,
];

#[derive(Parser)]
#[command(about = "preconfirmation-to-subscriber latency over WebSocket")]
struct Args {
    /// HTTP JSON-RPC URL; the WebSocket is the same host and port.
    #[arg(long)]
    rpc: String,
    /// Subscriber counts to measure, comma-separated.
    #[arg(long, default_value = "1,100,1000", value_delimiter = ',')]
    subscribers: Vec<usize>,
    /// Measured transactions per subscriber count (one in flight).
    #[arg(long, default_value_t = 300)]
    txs: usize,
    /// Background transfers per second while measuring (0: none).
    #[arg(long, default_value_t = 0)]
    load_tps: u64,
    /// Print one JSON object per subscriber count instead of a table.
    #[arg(long)]
    json: bool,
    /// Measure resume throughput from this mini-block instead.
    #[arg(long)]
    resume_from: Option<u64>,
    /// Subscribe on this node (a replica of --rpc, for instance) while
    /// transactions go to --rpc. Default: --rpc.
    #[arg(long)]
    subscribe_rpc: Option<String>,
}

/// The transaction in flight and who has seen its log.
struct Round {
    hash: B256,
    sent: Instant,
    seen: usize,
    latencies_us: Vec<u64>,
}

struct Shared {
    round: Mutex<Option<Round>>,
    expected: usize,
    done: Notify,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(run(args))
}

fn fee() -> (u128, u128) {
    (100_000_000_000, 1_000_000_000)
}

fn tx(key: &Key, chain_id: u64, nonce: u64, to: TxKind, input: Bytes, gas: u64) -> (Vec<u8>, B256) {
    let (max_fee, tip) = fee();
    key.sign_1559(TxEip1559 {
        chain_id,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip,
        to,
        value: if matches!(to, TxKind::Create) || !input.is_empty() {
            U256::ZERO
        } else {
            U256::from(1)
        },
        input,
        access_list: Default::default(),
    })
}

async fn run(args: Args) -> Result<(), String> {
    let addr = endpoint(&args.rpc)?;
    if let Some(from) = args.resume_from {
        return resume_throughput(addr, from).await;
    }
    let keys = dev_keys();
    let mut probe = Probe::deploy(addr, keys[0].clone()).await?;
    if let Some(url) = &args.subscribe_rpc {
        probe.subscribe_at = endpoint(url)?;
        // The emitter must exist there before anyone subscribes to it.
        let mut there = Conn::connect(probe.subscribe_at)
            .await
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while there
            .call("eth_getCode", json!([probe.emitter, "latest"]))
            .await?
            .as_str()
            .is_none_or(|code| code == "0x")
        {
            if Instant::now() > deadline {
                return Err(format!("the emitter is not on {url} within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let load_sent = Arc::new(AtomicU64::new(0));
    if args.load_tps > 0 {
        spawn_load(
            addr,
            probe.chain_id,
            keys[1..].to_vec(),
            args.load_tps,
            load_sent.clone(),
        );
    }
    if !args.json {
        print_header(args.load_tps);
    }
    for &count in &args.subscribers {
        let measured = measure(&mut probe, count, args.txs, &load_sent).await?;
        match measured.outcome {
            // The node could not keep up; report it and go on with the next count.
            Err(error) => {
                print_failure(&args, count, &error);
                // Whatever is still in flight must land before the next round.
                probe.nonce = nonce_of(&mut probe.http, probe.sender.address).await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Ok(latencies) => print_figures(&args, count, &latencies, measured.load_tps),
        }
    }
    Ok(())
}

/// The sender of the measured transactions and the contract they call.
struct Probe {
    /// Where the subscribers connect.
    subscribe_at: SocketAddr,
    http: Conn,
    chain_id: u64,
    sender: Key,
    /// The sender's next nonce.
    nonce: u64,
    /// The contract whose every call emits one log.
    emitter: Address,
}

impl Probe {
    /// Deploys the emitter from `sender`.
    async fn deploy(addr: SocketAddr, sender: Key) -> Result<Self, String> {
        let mut http = Conn::connect(addr).await.map_err(|e| e.to_string())?;
        let chain_id =
            quantity(&http.call("eth_chainId", json!([])).await?).ok_or("chain id")? as u64;
        let nonce = nonce_of(&mut http, sender.address).await?;
        let (raw, deploy_hash) = tx(
            &sender,
            chain_id,
            nonce,
            TxKind::Create,
            Bytes::from_static(&EMITTER_INIT),
            100_000,
        );
        http.call("eth_sendRawTransaction", json!([Bytes::from(raw)]))
            .await?;
        let emitter = wait_receipt(&mut http, deploy_hash).await?;
        Ok(Self {
            subscribe_at: addr,
            http,
            chain_id,
            sender,
            nonce: nonce + 1,
            emitter,
        })
    }

    /// Sends measured transaction `i` and waits until every subscriber of
    /// `shared` got its log; returns their latencies. Err: the bench cannot
    /// go on; Ok(Err): the node refused the transaction or a subscriber
    /// missed its log.
    async fn round(
        &mut self,
        shared: &Shared,
        i: usize,
    ) -> Result<Result<Vec<u64>, String>, String> {
        let count = shared.expected;
        let (raw, hash) = tx(
            &self.sender,
            self.chain_id,
            self.nonce,
            TxKind::Call(self.emitter),
            Bytes::from_static(&[1]),
            50_000,
        );
        self.nonce += 1;
        let body = serde_json::to_vec(&json!({"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":[Bytes::from(raw)]}))
            .map_err(|e| e.to_string())?;
        let notified = shared.done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        *shared.round.lock().expect("lock") = Some(Round {
            hash,
            sent: Instant::now(),
            seen: 0,
            latencies_us: Vec::with_capacity(count),
        });
        let reply = self.http.post(&body).await.map_err(|e| e.to_string())?;
        if let Err(e) = fulmen_benches::client::parse_response(reply) {
            return Ok(Err(format!("tx {i}: the node refused it: {e}")));
        }
        if tokio::time::timeout(Duration::from_secs(30), notified)
            .await
            .is_err()
        {
            let seen = shared
                .round
                .lock()
                .expect("lock")
                .as_ref()
                .map_or(0, |r| r.seen);
            return Ok(Err(format!(
                "tx {i}: {seen} of {count} subscribers got its log within 30 s"
            )));
        }
        let round = shared.round.lock().expect("lock").take().ok_or("round")?;
        Ok(Ok(round.latencies_us))
    }
}

/// Paced transfers from `keys` on a thread and runtime of their own, so
/// that the subscribers' work does not slow the load down.
fn spawn_load(
    addr: SocketAddr,
    chain_id: u64,
    keys: Vec<Key>,
    load_tps: u64,
    sent: Arc<AtomicU64>,
) {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the load");
        runtime.block_on(background_load(addr, chain_id, keys, load_tps, sent));
    });
}

/// Latencies of every delivery and of the last subscriber per transaction.
struct Latencies {
    all: Histogram<u64>,
    last: Histogram<u64>,
}

/// What one subscriber count gave.
struct Measured {
    /// The latencies, or why the rounds stopped.
    outcome: Result<Latencies, String>,
    /// Background transfers per second achieved meanwhile.
    load_tps: f64,
}

/// Connects `count` subscribers and sends `txs` measured transactions, one
/// in flight, after ten that warm up connections and caches.
async fn measure(
    probe: &mut Probe,
    count: usize,
    txs: usize,
    load_sent: &AtomicU64,
) -> Result<Measured, String> {
    let shared = Arc::new(Shared {
        round: Mutex::new(None),
        expected: count,
        done: Notify::new(),
    });
    let mut tasks = Vec::new();
    for _ in 0..count {
        tasks.push(subscriber(probe.subscribe_at, probe.emitter, shared.clone()).await?);
    }
    let load_began = (load_sent.load(Relaxed), Instant::now());
    let outcome = rounds(probe, &shared, txs).await;
    for task in tasks {
        task.abort();
    }
    // The load is paced on one connection: report what it achieved.
    let load_tps = (load_sent.load(Relaxed) - load_began.0) as f64
        / load_began.1.elapsed().as_secs_f64().max(1e-9);
    Ok(Measured {
        outcome: outcome?,
        load_tps,
    })
}

/// `txs` measured rounds after ten warm-up ones; stops at the first failed
/// round (Ok(Err)).
async fn rounds(
    probe: &mut Probe,
    shared: &Shared,
    txs: usize,
) -> Result<Result<Latencies, String>, String> {
    let mut all = histogram();
    let mut last = histogram();
    for i in 0..txs + 10 {
        let latencies_us = match probe.round(shared, i).await? {
            Ok(latencies_us) => latencies_us,
            Err(failed) => return Ok(Err(failed)),
        };
        // The first ten warm up connections and caches.
        if i >= 10 {
            for us in &latencies_us {
                record(&mut all, Duration::from_micros(*us));
            }
            let max = latencies_us.iter().copied().max().unwrap_or(0);
            record(&mut last, Duration::from_micros(max));
        }
    }
    Ok(Ok(Latencies { all, last }))
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn print_header(load_tps: u64) {
    println!(
        "subscribers  deliveries   p50 ms   p99 ms   last p50 ms  last p99 ms  (one tx in flight{})",
        if load_tps > 0 {
            format!(", {load_tps} transfers/s of load")
        } else {
            String::new()
        }
    );
}

fn print_failure(args: &Args, count: usize, error: &str) {
    if args.json {
        println!(
            "{}",
            json!({"subscribers": count, "load_tps": args.load_tps, "error": error})
        );
    } else {
        println!("{count:>11}  failed: {error}");
    }
}

fn print_figures(args: &Args, count: usize, latencies: &Latencies, load_tps: f64) {
    let Latencies { all, last } = latencies;
    if args.json {
        println!(
            "{}",
            json!({"subscribers": count, "txs": args.txs, "load_tps": args.load_tps,
                   "load_tps_achieved": load_tps.round(),
                   "p50_ms": ms(all, 0.5), "p99_ms": ms(all, 0.99),
                   "last_p50_ms": ms(last, 0.5), "last_p99_ms": ms(last, 0.99)})
        );
    } else {
        println!(
            "{count:>11}  {:>10}  {:>7.3}  {:>7.3}   {:>11.3}  {:>11.3}   load {load_tps:.0} tx/s",
            all.len(),
            ms(all, 0.5),
            ms(all, 0.99),
            ms(last, 0.5),
            ms(last, 0.99)
        );
    }
}

async fn nonce_of(http: &mut Conn, address: Address) -> Result<u64, String> {
    let value = http
        .call("eth_getTransactionCount", json!([address, "pending"]))
        .await?;
    Ok(quantity(&value).ok_or("nonce")? as u64)
}

async fn wait_receipt(http: &mut Conn, hash: B256) -> Result<Address, String> {
    for _ in 0..300 {
        let receipt = http
            .call("eth_getTransactionReceipt", json!([hash]))
            .await?;
        if let Some(address) = receipt.get("contractAddress").and_then(Value::as_str) {
            return address.parse().map_err(|e| format!("{e}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("the emitter was not deployed".into())
}

/// Opens a connection, subscribes to the emitter's logs, and records each
/// arrival of the log of the transaction in flight.
async fn subscriber(
    addr: SocketAddr,
    emitter: Address,
    shared: Arc<Shared>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    // tungstenite zeroes its read buffer before every read: keep it small
    // so that the client's cost does not swamp what is measured.
    let config = async_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8 * 1024);
    let (mut ws, _) =
        async_tungstenite::tokio::connect_async_with_config(format!("ws://{addr}"), Some(config))
            .await
            .map_err(|e| format!("WebSocket connect: {e}"))?;
    let request = json!({"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["logs",{"address": emitter}]});
    ws.send(Message::Text(request.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let reply: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                if reply.get("result").is_some() {
                    break;
                }
                return Err(format!("eth_subscribe failed: {reply}"));
            }
            Some(Ok(_)) => continue,
            other => return Err(format!("eth_subscribe: {other:?}")),
        }
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let arrived = Instant::now();
            let Some(hash) = log_tx_hash(&text) else {
                continue;
            };
            let mut round = shared.round.lock().expect("lock");
            if let Some(round) = round.as_mut()
                && round.hash == hash
            {
                round
                    .latencies_us
                    .push(arrived.duration_since(round.sent).as_micros() as u64);
                round.seen += 1;
                if round.seen == shared.expected {
                    shared.done.notify_one();
                }
            }
        }
    }))
}

/// The `transactionHash` of a log notification, without parsing the rest.
fn log_tx_hash(text: &str) -> Option<B256> {
    let at = text.find("\"transactionHash\":\"")? + 19;
    text.get(at..at + 66)?.parse().ok()
}

/// Paced transfers from `keys`, round robin, until the process ends.
async fn background_load(
    addr: SocketAddr,
    chain_id: u64,
    keys: Vec<Key>,
    tps: u64,
    sent: Arc<AtomicU64>,
) {
    let Ok(mut http) = Conn::connect(addr).await else {
        return;
    };
    let mut nonces = Vec::new();
    for key in &keys {
        nonces.push(nonce_of(&mut http, key.address).await.unwrap_or(0));
    }
    let period = Duration::from_secs_f64(1.0 / tps as f64);
    let mut next = tokio::time::Instant::now();
    let to = Address::repeat_byte(0x42);
    for i in 0.. {
        let k = i % keys.len();
        let (raw, _) = tx(
            &keys[k],
            chain_id,
            nonces[k],
            TxKind::Call(to),
            Bytes::new(),
            21_000,
        );
        nonces[k] += 1;
        let body = json!({"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":[Bytes::from(raw)]});
        if http.post(body.to_string().as_bytes()).await.is_err() {
            return;
        }
        sent.fetch_add(1, Relaxed);
        next += period;
        tokio::time::sleep_until(next).await;
    }
}

/// Replays the chain from mini-block `from` on one `miniBlocks`
/// subscription and prints how fast it came.
async fn resume_throughput(addr: SocketAddr, from: u64) -> Result<(), String> {
    let config = async_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 << 20));
    let (mut socket, _) =
        async_tungstenite::tokio::connect_async_with_config(format!("ws://{addr}"), Some(config))
            .await
            .map_err(|e| e.to_string())?;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
        "params": ["miniBlocks", {"fromMiniBlock": from}]});
    futures::SinkExt::send(&mut socket, Message::Text(call.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    let began = Instant::now();
    let (mut minis, mut txs, mut bytes, mut last_number) = (0u64, 0u64, 0u64, 0u64);
    let mut last_at = began;
    let mut first_at = None;
    let mut report_at = began;
    loop {
        let text = match tokio::time::timeout(Duration::from_secs(1), socket.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Err(format!(
                    "the node closed the stream after {minis} mini-blocks: {frame:?}"
                ));
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(format!("after {minis} mini-blocks: {e}")),
            Ok(None) => return Err(format!("the stream ended after {minis} mini-blocks")),
        };
        let message: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if let Some(error) = message.get("error") {
            return Err(format!("eth_subscribe: {error}"));
        }
        let result = &message["params"]["result"];
        let Some(number) = result["mini_block_number"].as_u64() else {
            continue;
        };
        if minis > 0 && number != last_number + 1 {
            return Err(format!("mini-block {number} after {last_number}"));
        }
        last_number = number;
        first_at.get_or_insert_with(Instant::now);
        minis += 1;
        txs += result["transactions"].as_array().map_or(0, Vec::len) as u64;
        bytes += text.len() as u64;
        last_at = Instant::now();
        if report_at.elapsed() >= Duration::from_secs(2) {
            report_at = Instant::now();
            eprintln!("replayed {minis} mini-blocks (up to {number}), {txs} txs");
        }
    }
    let seconds = last_at.duration_since(began).as_secs_f64().max(1e-9);
    let first_ms = first_at.map_or(0.0, |at| at.duration_since(began).as_secs_f64() * 1e3);
    println!(
        "resume from {from}: first after {first_ms:.2} ms; {minis} mini-blocks ({txs} txs, \
         {:.1} MB of JSON) in {seconds:.3} s: {:.0} mini-blocks/s, {:.0} txs/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        minis as f64 / seconds,
        txs as f64 / seconds,
        bytes as f64 / 1e6 / seconds
    );
    Ok(())
}
