//! Issue 12, defect 2: simulations (`eth_call`, `eth_estimateGas`,
//! `eth_createAccessList`) have a deadline and a gas budget, per request and
//! per batch, and run off the net cores, so slow ones never stall anything
//! else the node serves.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Init code that hashes 32 KiB of memory in a loop until less than 64 Ki
/// gas is left, then stops: it succeeds at any gas limit, so
/// `eth_estimateGas` bisects all the way down, burning every limit it tries.
/// Hashing is slow per unit of gas: a billion gas is many seconds of work
/// on any machine.
const HASH_LOOP: &str = "0x5b620100005a10601457618000600020506000565b00";

/// The test nodes allow 4e9 gas per call, per transaction (estimates stop
/// at the per-transaction cap) and per block, so that one run of
/// [`HASH_LOOP`] takes far longer than any deadline set here.
const BIG_GAS: &str = "block_gas_limit = 4000000000\ntx_gas_limit_max = 4000000000\n[rpc]\ncall_gas_max = 4000000000\n";

fn start(rpc: &str) -> Proc {
    let (config, guard) = temp_file("node.toml", &format!("{BIG_GAS}{rpc}"));
    let node = start_fulmen(&["--dev", "--config", config.to_str().expect("utf-8 path")]);
    drop(guard);
    node
}

fn slow_call(gas: Option<u64>) -> Value {
    match gas {
        Some(gas) => json!([{"data": HASH_LOOP, "gas": format!("{gas:#x}")}]),
        None => json!([{"data": HASH_LOOP}]),
    }
}

fn request(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
}

/// Posts `body` on a fresh connection; the parsed response.
fn post(node: &Proc, body: &Value) -> Value {
    let (status, text) = raw_post(node.addr, body.to_string().as_bytes());
    assert_eq!(status, 200, "HTTP {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

fn error_message(response: &Value) -> String {
    let error = response
        .get("error")
        .unwrap_or_else(|| panic!("expected an error, got {response}"));
    assert_eq!(error["code"], -32000, "{response}");
    error["message"].as_str().expect("message").to_string()
}

/// Sends `body` on its own thread; counts it in `done` once answered.
fn in_background(node: &Proc, body: Value, done: &Arc<AtomicUsize>) -> JoinHandle<Value> {
    let addr = node.addr;
    let done = done.clone();
    std::thread::spawn(move || {
        let (_, text) = raw_post(addr, body.to_string().as_bytes());
        done.fetch_add(1, Ordering::SeqCst);
        serde_json::from_str(&text).unwrap_or(Value::Null)
    })
}

/// Old code: the first slow request froze its net core for its whole run
/// (minutes here), so `eth_chainId` on another connection, and the transfer,
/// waited behind it. Now the slow requests run on the simulation workers and
/// end at their 3 s deadline, while the other requests are answered in
/// milliseconds. The check is an ordering, not a timing: every fast request
/// must be answered before any slow one is. It cannot flake on a slow
/// machine: a slow request ends no earlier than 3 s after it arrived (its
/// work takes far longer), and the fast ones need a dozen round trips on
/// loopback and one preconfirmation.
#[test]
fn slow_simulations_leave_other_requests_and_transfers_unstalled() {
    let node = start("call_timeout_ms = 3000\n");
    let done = Arc::new(AtomicUsize::new(0));
    let mut slow = Vec::new();
    for _ in 0..2 {
        let body = request("eth_estimateGas", slow_call(None));
        slow.push(in_background(&node, body, &done));
    }
    slow.push(in_background(
        &node,
        request("eth_call", slow_call(None)),
        &done,
    ));
    let batch = json!([
        request("eth_estimateGas", slow_call(None)),
        request("eth_call", slow_call(None)),
        request("eth_createAccessList", slow_call(None)),
    ]);
    slow.push(in_background(&node, batch, &done));
    // Not a condition, just a head start: the slow requests are sent first.
    std::thread::sleep(Duration::from_millis(200));

    for _ in 0..5 {
        let chain_id = post(&node, &request("eth_chainId", json!([])));
        assert_eq!(chain_id["result"], format!("{DEV_CHAIN_ID:#x}"));
        let number = post(&node, &request("eth_blockNumber", json!([])));
        assert!(number["result"].is_string(), "{number}");
    }
    let raw = transfer_raw(&signer(3), 0, signer(4).address(), 1);
    let receipt = post(
        &node,
        &request("eth_sendRawTransactionSync", json!([format!("{raw}")])),
    );
    assert_eq!(receipt["result"]["status"], "0x1", "{receipt}");
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "a slow simulation was answered before the fast requests"
    );

    let answers: Vec<Value> = slow
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    for answer in &answers[..3] {
        let message = error_message(answer);
        assert!(
            message.starts_with("execution aborted (timeout = 3000ms)"),
            "{message}"
        );
        assert!(message.contains("rpc.call_timeout_ms"), "{message}");
    }
    let batch = answers[3].as_array().expect("a batch answer");
    assert_eq!(batch.len(), 3);
    for answer in batch {
        let message = error_message(answer);
        assert!(
            message.starts_with("execution aborted (timeout = "),
            "{message}"
        );
    }
    // The node still answers after the storm.
    assert_eq!(
        post(&node, &request("eth_chainId", json!([])))["result"],
        format!("{DEV_CHAIN_ID:#x}")
    );
}

/// Old code: no deadline, the calls ran to the end of their gas (minutes).
#[test]
fn slow_calls_and_batches_get_the_timeout_error() {
    let node = start("call_timeout_ms = 500\nbatch_call_timeout_ms = 800\n");
    for method in ["eth_call", "eth_estimateGas", "eth_createAccessList"] {
        let message = error_message(&post(&node, &request(method, slow_call(None))));
        assert_eq!(
            message,
            "execution aborted (timeout = 500ms): the simulations of one request ran past rpc.call_timeout_ms",
            "{method}"
        );
    }
    // The first call of the batch ends at its own 500 ms; the batch has
    // 300 ms left for the second, and nothing for the third.
    let batch = json!([
        request("eth_call", slow_call(None)),
        request("eth_call", slow_call(None)),
        request("eth_chainId", json!([])),
        request("eth_estimateGas", slow_call(None)),
    ]);
    let answers = post(&node, &batch);
    let answers = answers.as_array().expect("a batch answer");
    assert!(error_message(&answers[0]).contains("rpc.call_timeout_ms"));
    for i in [1, 3] {
        let message = error_message(&answers[i]);
        assert_eq!(
            message,
            "execution aborted (timeout = 800ms): the simulations of one batch ran past rpc.batch_call_timeout_ms"
        );
    }
    assert_eq!(answers[2]["result"], format!("{DEV_CHAIN_ID:#x}"));
}

/// Old code: no total budget; `eth_estimateGas` ran every bisection step.
#[test]
fn estimate_gas_stops_at_the_request_gas_budget() {
    let node = start("call_timeout_ms = 600000\nsimulation_gas_budget = 4000000\n");
    let message = error_message(&post(
        &node,
        &request("eth_estimateGas", slow_call(Some(5_000_000))),
    ));
    assert_eq!(
        message,
        "execution aborted (gas budget = 4000000 gas): the EVM runs of one request used it all (rpc.simulation_gas_budget)"
    );
    // Ordinary estimates are unaffected.
    let transfer = json!([{"to": format!("{}", signer(5).address()), "value": "0x1"}]);
    let estimate = post(&node, &request("eth_estimateGas", transfer));
    assert_eq!(estimate["result"], "0x5208", "{estimate}");
}

/// Old code: every simulation ran at once on its net core; there was no
/// queue to fill.
#[test]
fn a_full_simulation_queue_is_refused_at_once() {
    let node = start("call_timeout_ms = 5000\nsimulation_workers = 1\nsimulation_queue_max = 1\n");
    let done = Arc::new(AtomicUsize::new(0));
    let slow: Vec<_> = (0..3)
        .map(|_| in_background(&node, request("eth_call", slow_call(None)), &done))
        .collect();
    let messages: Vec<String> = slow
        .into_iter()
        .map(|t| error_message(&t.join().expect("thread")))
        .collect();
    let refused = messages
        .iter()
        .filter(|m| {
            m.as_str()
                == "too many simulations in progress: the queue is full (rpc.simulation_queue_max = 1), retry shortly"
        })
        .count();
    assert!(refused >= 1, "{messages:?}");
    for message in &messages {
        assert!(
            message.starts_with("too many simulations") || message.starts_with("execution aborted"),
            "{message}"
        );
    }
}
