//! Test harness: starts the real `fulmen` binary (and anvil) on loopback and
//! gives tests real clients (alloy's provider, cast, raw HTTP).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::network::{EthereumWallet, TxSignerSync};
use alloy::primitives::{Address, Bytes, TxKind, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::{MnemonicBuilder, PrivateKeySigner};
use serde_json::{Value, json};

pub const MNEMONIC: &str = "test test test test test test test test test test test junk";
pub const DEV_CHAIN_ID: u64 = 4242;
pub const GWEI: u128 = 1_000_000_000;

/// Signs an EIP-1559 transaction on the dev chain.
pub fn sign_1559(
    signer: &PrivateKeySigner,
    nonce: u64,
    to: TxKind,
    value: U256,
    input: Bytes,
    gas: u64,
) -> Bytes {
    let mut tx = TxEip1559 {
        chain_id: DEV_CHAIN_ID,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: 10 * GWEI,
        max_priority_fee_per_gas: GWEI,
        to,
        value,
        input,
        access_list: Default::default(),
    };
    let signature = signer.sign_transaction_sync(&mut tx).expect("sign");
    TxEnvelope::from(tx.into_signed(signature))
        .encoded_2718()
        .into()
}

/// A signed plain transfer.
pub fn transfer_raw(signer: &PrivateKeySigner, nonce: u64, to: Address, wei: u64) -> Bytes {
    sign_1559(
        signer,
        nonce,
        TxKind::Call(to),
        U256::from(wei),
        Bytes::new(),
        21_000,
    )
}

/// A signed EIP-7702 tx from `sender` (nonce `nonce`) to `authority`,
/// carrying `authority`'s authorization (its nonce `authority_nonce`) to
/// delegate to `to_code`, with `input`.
pub fn set_code_raw(
    sender: &PrivateKeySigner,
    nonce: u64,
    authority: &PrivateKeySigner,
    authority_nonce: u64,
    to_code: Address,
    input: Bytes,
) -> Bytes {
    use alloy::consensus::TxEip7702;
    use alloy::eips::eip7702::Authorization;
    use alloy::signers::SignerSync;
    let auth = Authorization {
        chain_id: U256::from(DEV_CHAIN_ID),
        address: to_code,
        nonce: authority_nonce,
    };
    let auth_sig = authority
        .sign_hash_sync(&auth.signature_hash())
        .expect("sign authorization");
    let mut tx = TxEip7702 {
        chain_id: DEV_CHAIN_ID,
        nonce,
        gas_limit: 200_000,
        max_fee_per_gas: 10 * GWEI,
        max_priority_fee_per_gas: GWEI,
        to: authority.address(),
        value: U256::ZERO,
        access_list: Default::default(),
        authorization_list: vec![auth.into_signed(auth_sig)],
        input,
    };
    let signature = sender.sign_transaction_sync(&mut tx).expect("sign");
    TxEnvelope::from(tx.into_signed(signature))
        .encoded_2718()
        .into()
}

/// Repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("appliance/ has a parent")
        .to_path_buf()
}

/// A pinned npm-installed tool (`cast`, `anvil`). The native binary is used
/// directly: `.bin/<name>` is a node wrapper, and killing the wrapper would
/// leave the real process running.
pub fn tool(name: &str) -> PathBuf {
    let native = repo_root().join(format!(
        "tools/node_modules/@foundry-rs/{name}-linux-amd64/bin/{name}"
    ));
    if native.exists() {
        return native;
    }
    let path = repo_root().join("tools/node_modules/.bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `scripts/test.sh` (it runs `npm install` in tools/ to install the pinned cast and anvil)",
        path.display()
    );
    path
}

/// The i-th account of the test mnemonic.
pub fn signer(index: u32) -> PrivateKeySigner {
    MnemonicBuilder::english()
        .phrase(MNEMONIC)
        .index(index)
        .expect("valid index")
        .build()
        .expect("valid mnemonic")
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running process that is stopped (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: mpsc::Receiver<String>,
    /// Output lines before the readiness line (boot reports).
    pub startup: Vec<String>,
    _dir: Option<tempdir::TempDir>,
}

impl Proc {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait")
    }

    pub fn provider(&self) -> impl Provider + Clone + use<> {
        ProviderBuilder::new().connect_http(self.url().parse().expect("url"))
    }

    pub fn wallet_provider(&self, signer: PrivateKeySigner) -> impl Provider + Clone + use<> {
        ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer))
            .connect_http(self.url().parse().expect("url"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub mod l1;

pub mod tempdir {
    use std::path::PathBuf;

    /// A directory removed on drop.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(prefix: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let path =
                std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&path).expect("create temp dir");
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Path of a file inside a fresh temp dir that lives as long as the returned guard.
pub fn temp_file(name: &str, contents: &str) -> (PathBuf, tempdir::TempDir) {
    let dir = tempdir::TempDir::new("fulmen-file");
    let path = dir.0.join(name);
    std::fs::write(&path, contents).expect("write temp file");
    (path, dir)
}

/// Starts `fulmen run` with `args` (plus a free port and a temp datadir).
pub fn start_fulmen(args: &[&str]) -> Proc {
    start_with_retries("fulmen", "listening", None, |port, dir| {
        fulmen_command(port, dir, args)
    })
}

/// Starts `fulmen run` with `args` on the datadir `dir`, which outlives it.
pub fn start_fulmen_in(dir: &Path, args: &[&str]) -> Proc {
    start_with_retries("fulmen", "listening", Some(dir), |port, dir| {
        fulmen_command(port, dir, args)
    })
}

fn fulmen_command(port: u16, dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fulmen"));
    command.arg("run").args(args);
    if !args.contains(&"--storage-memory-blocks") {
        // Every sealed block but the head is read from the history store,
        // so every test reads history from disk as an old chain would.
        command.args(["--storage-memory-blocks", "1"]);
    }
    command
        .args(["--rpc-addr", &format!("127.0.0.1:{port}"), "--datadir"])
        .arg(dir)
        .env("RUST_LOG", "info");
    command
}

/// Starts anvil with `args` on a free port.
pub fn start_anvil(args: &[&str]) -> Proc {
    start_with_retries("anvil", "Listening on", None, |port, _| {
        let mut command = Command::new(tool("anvil"));
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(args);
        command
    })
}

/// Picks a free port and starts the process; if it exits before it listens
/// (another test took the port in between), tries again on a new port.
fn start_with_retries(
    name: &str,
    needle: &str,
    datadir: Option<&Path>,
    command: impl Fn(u16, &Path) -> Command,
) -> Proc {
    let mut failures = Vec::new();
    for _ in 0..3 {
        let dir = match datadir {
            Some(_) => None,
            None => Some(tempdir::TempDir::new(&format!("{name}-test"))),
        };
        let path = datadir.unwrap_or_else(|| &dir.as_ref().expect("made above").0);
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = command(port, path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let log = forward_lines(&mut child);
        match wait_for(&log, needle, &addr) {
            Ok(startup) => {
                return Proc {
                    child,
                    addr: addr.parse().expect("addr"),
                    log,
                    startup,
                    _dir: dir,
                };
            }
            Err(output) => {
                let _ = child.kill();
                let _ = child.wait();
                failures.push(output);
            }
        }
    }
    panic!(
        "{name} did not start in 3 attempts:\n{}",
        failures.join("\n---\n")
    );
}

fn forward_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    for stream in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// Waits for a log line with `needle` and `addr`; the output so far if the
/// process exits (or stays silent for a minute) first.
fn wait_for(log: &mpsc::Receiver<String>, needle: &str, addr: &str) -> Result<Vec<String>, String> {
    let mut seen = Vec::new();
    loop {
        match log.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                if line.contains(needle) && line.contains(addr) {
                    return Ok(seen);
                }
                seen.push(line);
            }
            Err(_) => {
                return Err(format!(
                    "no `{needle}` for {addr}; output:\n{}",
                    seen.join("\n")
                ));
            }
        }
    }
}

/// A raw HTTP POST; returns (status, body). For malformed-input tests.
pub fn raw_post(addr: SocketAddr, body: &[u8]) -> (u16, String) {
    try_raw_post(addr, body).expect("connect")
}

/// A raw HTTP POST that reports a refused connection instead of panicking
/// (for nodes that are being killed).
pub fn try_raw_post(addr: SocketAddr, body: &[u8]) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    // A server may answer (and close) before reading an oversized body.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A JSON-RPC call that may fail in any way (node killed, error answer):
/// the `result`, or why not.
pub fn try_rpc(addr: SocketAddr, method: &str, params: Value) -> Result<Value, String> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (status, text) =
        try_raw_post(addr, body.to_string().as_bytes()).map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("HTTP {status}: {text}"));
    }
    let response: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    match response.get("result") {
        Some(result) => Ok(result.clone()),
        None => Err(response.to_string()),
    }
}

/// A JSON-RPC call over raw HTTP; returns the parsed response object.
pub fn rpc(addr: SocketAddr, method: &str, params: Value) -> Value {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (status, text) = raw_post(addr, body.to_string().as_bytes());
    assert_eq!(status, 200, "{method}: HTTP {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method}: bad JSON ({e}): {text}"))
}

/// The error object of a JSON-RPC call that must fail.
pub fn rpc_error(addr: SocketAddr, method: &str, params: Value) -> (i64, String, Value) {
    let response = rpc(addr, method, params);
    let error = response
        .get("error")
        .unwrap_or_else(|| panic!("{method} should fail, got {response}"));
    (
        error["code"].as_i64().expect("code"),
        error["message"].as_str().expect("message").to_string(),
        error.get("data").cloned().unwrap_or(Value::Null),
    )
}

/// Runs cast with `args`; returns trimmed stdout, panicking with stderr on failure.
pub fn cast(args: &[&str]) -> String {
    let output = Command::new(tool("cast"))
        .args(args)
        .output()
        .expect("run cast");
    assert!(
        output.status.success(),
        "cast {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Compiled test contracts (contracts/artifacts.json).
pub fn bytecode(name: &str) -> Bytes {
    let text =
        std::fs::read_to_string(repo_root().join("contracts/artifacts.json")).expect("artifacts");
    let json: Value = serde_json::from_str(&text).expect("artifacts json");
    json[name]["bytecode"]
        .as_str()
        .expect("bytecode")
        .parse()
        .expect("hex")
}

pub fn address_of(signer: &PrivateKeySigner) -> Address {
    signer.address()
}

/// Reads (and drops) WebSocket messages until the connection ends: the close
/// frame's code and reason, if one came.
pub fn read_until_closed<S: Read + Write>(
    ws: &mut tungstenite::WebSocket<S>,
) -> Option<(tungstenite::protocol::frame::coding::CloseCode, String)> {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => {
                return frame.map(|f| (f.code, f.reason.to_string()));
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// Waits (up to a generous 60 s, never a speed assertion) until block
/// `number` is sealed, i.e. `eth_blockNumber` reaches it.
pub fn wait_sealed(addr: SocketAddr, number: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let head = try_rpc(addr, "eth_blockNumber", json!([])).expect("eth_blockNumber");
        let head = head.as_str().expect("a quantity").trim_start_matches("0x");
        if u64::from_str_radix(head, 16).expect("a quantity") >= number {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "block {number} was not sealed within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `name=value` number in the boot's "replayed the log" line.
pub fn boot_figure(node: &Proc, name: &str) -> u64 {
    let line = node
        .startup
        .iter()
        .find(|l| l.contains("replayed the log"))
        .unwrap_or_else(|| panic!("no boot line:\n{}", node.startup.join("\n")));
    let at = line.find(&format!(" {name}=")).expect("the figure") + name.len() + 2;
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a number")
}
