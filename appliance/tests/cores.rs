//! Core maps: the node serves the same on all roles on one CPU and on the
//! 2-CPU default, and `fulmen tune` reports, proposes and checks maps.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

fn tune(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fulmen"))
        .arg("tune")
        .args(args)
        .output()
        .expect("run fulmen tune")
}

fn fixture() -> String {
    repo_root()
        .join("tuning/tests/fixtures/ci-2core")
        .to_string_lossy()
        .into_owned()
}

/// Sync sends, reads, a sealed block and its logs: the node's basic service.
fn serves(addr: std::net::SocketAddr, sender: u32) {
    let from = signer(sender);
    let mut last_block = 0;
    for nonce in 0..10 {
        let raw = transfer_raw(&from, nonce, signer(9).address(), 1 + nonce);
        let receipt = rpc(addr, "eth_sendRawTransactionSync", json!([raw]));
        assert_eq!(receipt["result"]["status"], "0x1", "{receipt}");
        last_block = u64::from_str_radix(
            receipt["result"]["blockNumber"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16,
        )
        .unwrap();
    }
    assert_eq!(
        rpc(
            addr,
            "eth_getTransactionCount",
            json!([format!("{}", from.address()), "latest"])
        )["result"],
        "0xa"
    );
    wait_sealed(addr, last_block);
    let block = rpc(
        addr,
        "eth_getBlockByNumber",
        json!([format!("{last_block:#x}"), false]),
    );
    assert!(block["result"]["stateRoot"].is_string(), "{block}");
}

#[test]
fn the_node_serves_with_every_role_on_one_cpu_and_with_the_2_cpu_map() {
    for (name, map) in [
        (
            "one-cpu",
            "[cores]\nnet = [0]\nseq = 0\nexec = []\nstorage = [0]\n",
        ),
        (
            "two-cpu",
            "[cores]\nnet = [0, 1]\nseq = 1\nexec = [0]\nstorage = [1]\n",
        ),
        (
            "two-cpu-net-0",
            "[cores]\nnet = [0]\nseq = 1\nexec = [0]\nstorage = [1]\n",
        ),
    ] {
        let (config, _guard) = temp_file(&format!("{name}.toml"), map);
        let node = start_fulmen(&["--dev", "--config", config.to_str().unwrap()]);
        serves(node.addr, 3);
    }
}

/// Starts the node with `config` as its whole config file; it must fail:
/// its stderr.
fn refused_start(config: &str) -> String {
    let (path, _guard) = temp_file("refused.toml", config);
    let out = Command::new(env!("CARGO_BIN_EXE_fulmen"))
        .args(["run", "--dev", "--rpc-addr", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_map_that_does_not_fit_the_machine_stops_the_start_with_the_reason() {
    let stderr = refused_start("[cores]\nnet = [0, 64]\nseq = 1\nexec = [0]\nstorage = [1]\n");
    assert!(stderr.contains("CPU 64 is not online"), "{stderr}");
    let stderr =
        refused_start("[cores]\nnet = [0]\nseq = 1\nexec = [0]\nstorage = [1]\nstrict = true\n");
    assert!(
        stderr.contains("strict: seq shares CPU 1 with storage"),
        "{stderr}"
    );
}

#[test]
fn tune_reports_proposes_and_checks_against_a_captured_machine() {
    let out = tune(&["--sysfs-root", &fixture()]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "CPUs: 2 online, 2 physical cores",
        "memlock limit: 8192 KiB",
        "transparent huge pages: madvise",
        "[cores]\nnet = [0, 1]\nseq = 1\nexec = [0]\nstorage = [1]\n",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // The same proposal as JSON, for provisioning tools (ansible/).
    let out = tune(&["--sysfs-root", &fixture(), "--json"]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        report["cores"],
        json!({"net": [0, 1], "seq": 1, "exec": [0], "storage": [1], "da": null})
    );
    assert_eq!(report["cpus"], json!([0, 1]));
    assert_eq!(report["physical_cores"], json!([[0], [1]]));
    assert_eq!(report["thp"], "madvise");
    assert!(report["reasons"][0].as_str().unwrap().contains("two CPUs"));
    // The proposal, written to a file, passes --check.
    let proposal = &stdout[stdout.find("[cores]").unwrap()..];
    let (good, _g) = temp_file("proposal.toml", proposal);
    let out = tune(&[
        "--sysfs-root",
        &fixture(),
        "--check",
        good.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: the core map"));
    // A CPU the machine lacks, and strict sharing, fail with the reasons.
    let (bad, _b) = temp_file(
        "bad.toml",
        "[cores]\nnet = [0]\nseq = 3\nexec = [0]\nstorage = [1]\n",
    );
    let out = tune(&["--sysfs-root", &fixture(), "--check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CPU 3 is not online (online: 0-1)"));
    let out = tune(&[
        "--sysfs-root",
        &fixture(),
        "--check",
        good.to_str().unwrap(),
        "--strict",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("strict: seq shares CPU 1 with net, storage")
    );
}

/// A dev node serving /metrics, and that URL.
fn node_with_metrics() -> (Proc, String) {
    let node = start_fulmen(&["--dev", "--metrics-addr", "127.0.0.1:0"]);
    let url = node
        .startup
        .iter()
        .find_map(|l| l.strip_prefix("metrics on "))
        .expect("the node prints its metrics URL")
        .to_string();
    (node, url)
}

/// The body of a GET of the node's /metrics, checked to be Prometheus text.
fn metrics_body(url: &str) -> String {
    let host = url.trim_start_matches("http://").split('/').next().unwrap();
    let mut stream = std::net::TcpStream::connect(host).expect("connect to metrics");
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

fn scrape(url: &str) -> std::collections::BTreeMap<String, f64> {
    let body = metrics_body(url);
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text");
    let mut out = std::collections::BTreeMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = format!("{}{{{}}}", s.metric, labels.join(","));
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, v);
    }
    out
}

#[test]
fn metrics_parse_as_prometheus_text_and_move_under_load_and_top_shows_them() {
    let (node, url) = node_with_metrics();
    let before = scrape(&url);
    for key in [
        "fulmen_core_busy_ratio{cpu=0,roles=net+exec}",
        "fulmen_core_busy_ratio{cpu=1,roles=net+seq+storage}",
        "fulmen_queue_depth{queue=seq_inbox}",
        "fulmen_log_flush_seconds{}",
    ] {
        assert!(before.contains_key(key), "no {key} in {before:?}");
    }
    let from = signer(4);
    for nonce in 0..5 {
        let raw = transfer_raw(&from, nonce, signer(9).address(), 1);
        assert_eq!(
            rpc(node.addr, "eth_sendRawTransactionSync", json!([raw]))["result"]["status"],
            "0x1"
        );
    }
    let (code, _, _) = rpc_error(node.addr, "eth_sendRawTransaction", json!(["0x02f8"]));
    assert_ne!(code, 0);
    let after = scrape(&url);
    let moved =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    assert_eq!(moved("fulmen_txs_received_total{}"), 6.0);
    assert_eq!(moved("fulmen_preconfirmations_total{}"), 5.0);
    assert_eq!(moved("fulmen_txs_rejected_total{reason=invalid}"), 1.0);
    assert_eq!(
        moved("fulmen_sync_send_seconds{}"),
        5.0,
        "sync-send histogram count"
    );
    assert!(moved("fulmen_mini_blocks_total{}") >= 1.0);
    assert!(
        moved("fulmen_log_flush_seconds{}") >= 5.0,
        "durable mode flushes each mini-block"
    );

    let top = Command::new(env!("CARGO_BIN_EXE_fulmen"))
        .args([
            "top",
            "--metrics",
            &url,
            "--count",
            "1",
            "--interval-ms",
            "200",
        ])
        .output()
        .expect("run fulmen top");
    let stdout = String::from_utf8_lossy(&top.stdout);
    assert!(top.status.success(), "{stdout}");
    assert!(
        stdout.contains("seq+storage") && stdout.contains("txs/s received"),
        "{stdout}"
    );
}

/// The metric names in Prometheus text (histograms' series included).
fn exported_names(url: &str) -> std::collections::BTreeSet<String> {
    metrics_body(url)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// The `fulmen_*` names a PromQL expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("fulmen_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// The operators' Grafana dashboard (ansible/) reads only metrics the node
/// exports: every panel has a query, and every name in every query (and in
/// the instance picker) is on a dev node's /metrics.
#[test]
fn every_grafana_panel_queries_metrics_the_node_exports() {
    let (node, url) = node_with_metrics();
    // A sync send, so that the histograms have samples.
    let raw = transfer_raw(&signer(4), 0, signer(9).address(), 1);
    rpc(node.addr, "eth_sendRawTransactionSync", json!([raw]));
    let exported = exported_names(&url);
    let path = repo_root().join("ansible/roles/fulmen/files/grafana-fulmen.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut queries = vec![(
        "instance variable".to_string(),
        dashboard["templating"]["list"][1]["definition"]
            .as_str()
            .expect("instance query")
            .to_string(),
    )];
    for panel in panels {
        let title = panel["title"].as_str().expect("title");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            assert!(
                !metric_names(expr).is_empty(),
                "{title:?}: {expr} reads no fulmen metric"
            );
            queries.push((title.to_string(), expr.to_string()));
        }
    }
    for (title, expr) in queries {
        for name in metric_names(&expr) {
            assert!(
                exported.contains(&name),
                "panel {title:?} queries {name}, which /metrics does not export"
            );
        }
    }
    // What operators watch is all there.
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Busy fraction per core",
        "Queue depths",
        "Preconfirmation latency (sync send)",
        "Log flush latency",
        "Rejections by reason",
        "Transactions per second",
        "State size",
        "DA lag",
    ] {
        assert!(
            titles.contains(&wanted),
            "no {wanted:?} panel in {titles:?}"
        );
    }
}

#[test]
fn huge_pages_and_mlockall_start_and_serve_where_the_system_allows_them() {
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let huge = if thp.contains("[never]") || thp.is_empty() {
        "false"
    } else {
        "true"
    };
    // mlockall needs CAP_IPC_LOCK or a memlock limit above the node's size.
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let lock = if root
        || limits
            .lines()
            .any(|l| l.starts_with("Max locked memory") && l.contains("unlimited"))
    {
        "true"
    } else {
        "false"
    };
    let (config, _guard) = temp_file(
        "memory.toml",
        &format!("[memory]\nhuge_pages = {huge}\nmlockall = {lock}\n"),
    );
    let node = start_fulmen(&["--dev", "--config", config.to_str().unwrap()]);
    if huge == "true" {
        assert!(
            node.startup
                .iter()
                .any(|l| l.contains("transparent huge pages")),
            "{:?}",
            node.startup
        );
    }
    if lock == "true" {
        assert!(
            node.startup.iter().any(|l| l.contains("all pages locked")),
            "{:?}",
            node.startup
        );
    }
    serves(node.addr, 5);
}
