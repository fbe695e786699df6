//! fulmen-load against a real dev node (small N): its counts and percentiles
//! agree with what was sent, and the open loop keeps its schedule.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fulmen_benches::client::{Conn, quantity};
use fulmen_benches::runner::{RunConfig, run};
use fulmen_benches::workload::Workload;
use serde_json::json;

struct Node {
    child: Child,
    url: String,
    _dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// The workspace's `fulmen` binary, built next to this test.
fn fulmen_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    let binary = dir.join("fulmen");
    assert!(
        binary.exists(),
        "{} is missing: build the workspace (scripts/test.sh does)",
        binary.display()
    );
    binary
}

fn start_node() -> Node {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("fulmen-load-test-{}-{port}", std::process::id()));
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(fulmen_binary())
        .args(["run", "--dev", "--rpc-addr", &addr, "--datadir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fulmen");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .expect("fulmen exited before listening")
            .expect("read");
        if line.contains("listening") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Node {
        child,
        url: format!("http://{addr}"),
        _dir: dir,
    }
}

fn config(url: &str, workload: Workload, txs: u64) -> RunConfig {
    RunConfig {
        rpc: url.to_string(),
        workload,
        txs,
        concurrency: Some(4),
        rate: None,
        connections: 4,
        sync: false,
        accounts: 8,
        seed: 11,
        settle_timeout_s: 30,
        quiet: true,
        node_pid: None,
    }
}

async fn nonce_sum(url: &str, seed: u64, accounts: u64) -> u64 {
    let addr = fulmen_benches::runner::endpoint(url).unwrap();
    let mut conn = Conn::connect(addr).await.unwrap();
    let mut total = 0;
    for i in 0..accounts {
        let address = fulmen_benches::sign::Key::derived(seed, i).address;
        let n = conn
            .call("eth_getTransactionCount", json!([address, "latest"]))
            .await
            .unwrap();
        total += quantity(&n).unwrap() as u64;
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_loop_counts_and_percentiles_match_what_was_sent() {
    let node = start_node();
    let mut node_cpu = Vec::new();
    for workload in [
        Workload::Transfers,
        Workload::Erc20,
        Workload::Contention,
        Workload::Mixed,
    ] {
        let mut cfg = config(&node.url, workload, 120);
        cfg.seed = 100 + workload as u64;
        cfg.node_pid = Some(node.child.id());
        let out = run(&cfg).await.unwrap();
        let r = &out.report;
        // The node's CPU over the send phase, read from /proc and split by
        // thread (the executors are named by their CPU): the threads' parts
        // add up to the process's whole, within the 10 ms tick per thread
        // and reading that the files are not read at one instant allows.
        let cpu = r.node_cpu.clone().expect("node_pid reports the node's CPU");
        let by_thread: f64 = cpu.threads.values().map(|t| t[0]).sum();
        let tick_us_per_tx = 10_000.0 / 120.0;
        let slack = 2.0 * tick_us_per_tx * (cpu.threads.len() as f64 + 1.0);
        assert!(
            (by_thread - cpu.cpu_us_per_tx).abs() <= slack,
            "{workload:?}: {cpu:?}"
        );
        node_cpu.push(cpu);
        assert_eq!(r.txs, 120, "{workload:?}");
        assert!(r.errors.is_empty(), "{workload:?}: {:?}", r.errors);
        let expected_requests = if workload == Workload::Mixed {
            240
        } else {
            120
        };
        assert_eq!(
            r.requests, expected_requests,
            "{workload:?}: every request was timed once"
        );
        assert!(
            r.p50_ms <= r.p90_ms
                && r.p90_ms <= r.p99_ms
                && r.p99_ms <= r.p999_ms
                && r.p999_ms <= r.max_ms
        );
        assert!(r.tps > 0.0 && r.tps_preconfirmed > 0.0 && r.tps_sealed > 0.0);
        assert!(
            r.tps_sealed <= r.tps_preconfirmed * 1.001,
            "sealing cannot outpace preconfirmation"
        );
        // The node agrees: exactly the sent transactions were executed.
        assert_eq!(nonce_sum(&node.url, cfg.seed, 8).await, 120, "{workload:?}");
    }
    // CPU time is counted in 10 ms ticks: over the four runs (each waits
    // for a seal) the node's executors used some.
    assert!(
        node_cpu.iter().any(|cpu| cpu.cpu_us_per_tx > 0.0
            && cpu
                .threads
                .keys()
                .any(|name| name.starts_with("fulmen-cpu"))),
        "{node_cpu:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn open_loop_keeps_its_schedule_and_sync_mode_counts_receipts() {
    let node = start_node();
    let mut cfg = config(&node.url, Workload::Transfers, 100);
    cfg.concurrency = None;
    cfg.rate = Some(200.0);
    cfg.sync = true;
    let out = run(&cfg).await.unwrap();
    let r = &out.report;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.requests, 100);
    // The last request is due at 99/200 s after the start: an open loop never
    // sends ahead of its schedule, so the run cannot be shorter.
    assert!(
        r.duration_s >= 99.0 / 200.0,
        "ran ahead of schedule: {} s",
        r.duration_s
    );
    let mut sends: Vec<f64> = out.points.iter().map(|p| p.0).collect();
    sends.sort_by(f64::total_cmp);
    for (i, at) in sends.iter().enumerate() {
        assert!(
            *at + 1e-3 >= i as f64 / 200.0,
            "request {i} sent at {at} s, before its slot"
        );
    }
    assert_eq!(
        r.tps, r.tps_preconfirmed,
        "sync sends are preconfirmed when answered"
    );
    assert_eq!(nonce_sum(&node.url, cfg.seed, 8).await, 100);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// The WebSocket latency bench end to end at a small size: every subscriber
/// gets every measured log, and the figures are ordered.
#[test]
fn ws_bench_measures_every_delivery() {
    let node = start_node();
    let bench = env!("CARGO_BIN_EXE_fulmen-ws-bench");
    let output = Command::new(bench)
        .args([
            "--rpc",
            &node.url,
            "--subscribers",
            "1,5",
            "--txs",
            "20",
            "--load-tps",
            "200",
            "--json",
        ])
        .output()
        .expect("run fulmen-ws-bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, subscribers) in lines.iter().zip([1, 5]) {
        assert_eq!(line["subscribers"], json!(subscribers));
        assert!(line.get("error").is_none(), "{line}");
        let (p50, p99) = (
            line["p50_ms"].as_f64().unwrap(),
            line["p99_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{line}");
        assert!(line["last_p50_ms"].as_f64().unwrap() >= p50, "{line}");
    }
}
