//! Helpers for tests with an L1 (the pinned anvil) and nodes posting to it
//! or deriving from it.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use serde_json::{Value, json};

use super::*;

/// The dev batcher (test account 9).
pub const BATCHER: &str = "0xa0ee7a142d267c1f36714e4a8f75612f20a79720";

/// `[da]` for tests: fast rounds, short channels, shallow confirmations.
pub fn da_config(extra: &str) -> String {
    format!(
        "[da]\nconfirmation_depth = 2\nchannel_timeout_ms = 1500\npoll_ms = 100\n\
         resubmit_after_l1_blocks = 2\n{extra}\n"
    )
}

/// A call's `result`; panics with the error otherwise.
pub fn call(addr: SocketAddr, method: &str, params: Value) -> Value {
    try_rpc(addr, method, params).unwrap_or_else(|e| panic!("{method}: {e}"))
}

pub fn quantity(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a quantity: {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex quantity")
}

pub fn block_number(addr: SocketAddr, tag: &str) -> u64 {
    quantity(&call(addr, "eth_getBlockByNumber", json!([tag, false]))["number"])
}

/// Waits up to `secs` for `what` to hold; panics naming it otherwise.
pub fn wait_until(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `count` transfers from accounts 1..=4, round robin; returns the
/// hashes the node acknowledged. `nonces` carries on across calls.
pub fn send_transfers(addr: SocketAddr, nonces: &mut [u64; 4], count: usize) -> Vec<B256> {
    let to = Address::repeat_byte(0x42);
    let mut hashes = Vec::new();
    for i in 0..count {
        let k = i % 4;
        let raw = transfer_raw(&signer(k as u32 + 1), nonces[k], to, 1 + i as u64);
        let hash: B256 = serde_json::from_value(call(addr, "eth_sendRawTransaction", json!([raw])))
            .expect("a tx hash");
        nonces[k] += 1;
        hashes.push(hash);
    }
    hashes
}

/// An L2 node posting to `l1`, with `config` as its config file.
pub fn start_node(dir: &Path, l1: &str, config: &str) -> Proc {
    let path = dir.join("node.toml");
    std::fs::write(&path, config).expect("write config");
    let path = path.to_str().expect("utf-8").to_string();
    start_fulmen_in(dir, &["--dev", "--config", &path, "--l1-rpc", l1])
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .expect("status")
        .parse()
        .expect("code");
    let body = if head.to_lowercase().contains("transfer-encoding: chunked") {
        unchunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

pub fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// Waits up to `secs` for a log line containing `needle`; returns it.
pub fn wait_line(node: &Proc, needle: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match node.log.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no log line with {needle:?} within {secs} s"),
        }
    }
}

/// The node's metrics address, from its start-up output.
pub fn metrics_addr(node: &Proc) -> SocketAddr {
    node.startup
        .iter()
        .find_map(|l| l.strip_prefix("metrics on http://"))
        .and_then(|l| l.strip_suffix("/metrics"))
        .expect("a metrics line")
        .parse()
        .expect("an address")
}

/// One metric's value (0 when absent).
pub fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

pub fn signal(process: &Proc, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(process.child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

pub fn start_l1(hardfork: &str, block_time: &str) -> Proc {
    start_anvil(&["--hardfork", hardfork, "--block-time", block_time])
}
