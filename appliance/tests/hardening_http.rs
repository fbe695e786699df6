//! Issue 12 (hardening), HTTP connection handling, against the release
//! binary: slow and idle connections cannot lock new clients out, timeouts
//! close them, a declared oversized body is refused up front, one IP has a
//! connection cap, the RPC port belongs to one process, and browser
//! requests are checked against the Host and Origin allow-lists.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const CHAIN_ID_BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;

/// Connects to `to` from the loopback address `from` (127.0.0.x), so one
/// test process can look like several clients.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    assert!(from.is_loopback());
    // SAFETY: plain socket calls on a descriptor this function owns; it is
    // handed to TcpStream, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = sockaddr(from, 0);
        if libc::bind(fd, (&raw const local).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let SocketAddr::V4(to) = to else {
            panic!("the node listens on IPv4 loopback");
        };
        let remote = sockaddr(*to.ip(), to.port());
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Raises this process's open-files limit so the test can hold thousands
/// of sockets; returns the limit.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct owned here.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

/// An HTTP response as read off a raw socket.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }
}

/// Reads one response (head and Content-Length body) from `stream`.
fn read_answer(stream: &mut TcpStream) -> std::io::Result<Answer> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        bytes.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut answer = Answer {
        status,
        head,
        body: String::new(),
    };
    let length: usize = answer
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    answer.body = String::from_utf8_lossy(&bytes[head_end..]).to_string();
    Ok(answer)
}

/// A POST of `body` with extra header lines, keep-alive.
/// A connection from `from` that sends a request head declaring a 64-byte
/// body, and no body.
fn head_without_body(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let mut stream = connect_from(from, addr).expect("connect");
    let head = post(addr, "", "").replace("Content-Length: 0", "Content-Length: 64");
    stream.write_all(head.as_bytes()).expect("head");
    stream
}

fn post(addr: SocketAddr, extra_headers: &str, body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{extra_headers}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends `request` on a fresh connection from `from` and reads the answer.
fn exchange_from(from: Ipv4Addr, addr: SocketAddr, request: &str) -> std::io::Result<Answer> {
    let mut stream = connect_from(from, addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request.as_bytes())?;
    read_answer(&mut stream)
}

/// `eth_chainId` on a fresh connection from `from`.
fn chain_id_from(from: Ipv4Addr, addr: SocketAddr) -> std::io::Result<Answer> {
    exchange_from(from, addr, &post(addr, "", CHAIN_ID_BODY))
}

/// Whether the node has closed `stream` (EOF or reset) within `deadline`.
fn closed_within(stream: &mut TcpStream, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 1024];
    while Instant::now() < end {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Starts a dev node with `toml` as its config; the guard keeps the file.
fn start_with_config(toml: &str) -> (Proc, tempdir::TempDir) {
    let (config, guard) = temp_file("node.toml", toml);
    let node = start_fulmen(&["--dev", "--config", config.to_str().expect("utf-8 path")]);
    (node, guard)
}

#[test]
fn fresh_clients_are_served_while_thousands_of_idle_and_slow_connections_are_held() {
    // Default config: one net core, 4096 connections per core, 2048 per IP.
    let limit = raise_open_files_limit();
    let idle_per_ip = 1400;
    let ips = [2u8, 3, 4];
    assert!(
        limit > (idle_per_ip * ips.len() + 500) as u64,
        "open-files hard limit {limit} is too low for this test"
    );
    let node = start_fulmen(&["--dev"]);
    let addr = node.addr;
    // Slow clients first, so they are the oldest: a slowloris that sends its
    // head one byte a second, and one that declares a body it never sends.
    let slow_ip = Ipv4Addr::new(127, 0, 0, 5);
    let _no_body = head_without_body(slow_ip, addr); // held open to the end
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slowloris = {
        let stop = stop.clone();
        let request = post(addr, "", CHAIN_ID_BODY);
        let mut stream = connect_from(slow_ip, addr).expect("connect");
        std::thread::spawn(move || {
            for byte in request.as_bytes() {
                if stop.load(std::sync::atomic::Ordering::Relaxed)
                    || stream.write_all(&[*byte]).is_err()
                {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // More idle connections than the core holds, from three addresses.
    let mut held = Vec::new();
    for ip in ips {
        for _ in 0..idle_per_ip {
            held.push(connect_from(Ipv4Addr::new(127, 0, 0, ip), addr).expect("connect"));
        }
    }
    // Give the node a moment to accept the backlog. Not a speed assertion:
    // without eviction the fresh client is never served, however long we
    // wait, since nothing closes the held connections.
    std::thread::sleep(Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        match chain_id_from(Ipv4Addr::LOCALHOST, addr) {
            Ok(answer) => break answer,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "a fresh client was not served while {} connections were held: {e}",
                    held.len() + 2
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.contains(&format!("0x{DEV_CHAIN_ID:x}")),
        "{}",
        answer.body
    );
    // The node keeps serving new clients from every address.
    for ip in [1u8, 2, 6] {
        let answer = chain_id_from(Ipv4Addr::new(127, 0, 0, ip), addr).expect("served");
        assert_eq!(answer.status, 200);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    slowloris.join().expect("slowloris thread");
    drop(held);
}

#[test]
fn slow_and_idle_connections_are_closed_after_their_timeouts() {
    let (node, _config) = start_with_config(
        "[rpc]\nheader_read_timeout_ms = 1000\nbody_read_timeout_ms = 1000\nidle_timeout_ms = 1500\n",
    );
    let addr = node.addr;
    let me = Ipv4Addr::LOCALHOST;
    // Idle keep-alive: served once, then closed once idle.
    let mut keep_alive = connect_from(me, addr).expect("connect");
    keep_alive
        .write_all(post(addr, "", CHAIN_ID_BODY).as_bytes())
        .expect("write");
    keep_alive
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let answer = read_answer(&mut keep_alive).expect("answer");
    assert_eq!(answer.status, 200);
    assert!(
        closed_within(&mut keep_alive, Duration::from_secs(30)),
        "an idle keep-alive connection was not closed"
    );
    // A connection that never sends anything.
    let mut silent = connect_from(me, addr).expect("connect");
    assert!(
        closed_within(&mut silent, Duration::from_secs(30)),
        "a silent connection was not closed"
    );
    // A slowloris that keeps sending head bytes, slower than the timeout.
    let mut slow = connect_from(me, addr).expect("connect");
    let request = post(addr, "", CHAIN_ID_BODY);
    let end = Instant::now() + Duration::from_secs(30);
    let mut closed = false;
    for byte in request.as_bytes() {
        if slow.write_all(&[*byte]).is_err() || Instant::now() > end {
            closed = true;
            break;
        }
        if closed_within(&mut slow, Duration::from_millis(300)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "a slowloris head was not cut off");
    // A body that never arrives gets an answer naming the limit.
    let mut no_body = head_without_body(me, addr);
    no_body
        .write_all(b"{\"jsonrpc\"")
        .expect("part of the body");
    no_body
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let answer = read_answer(&mut no_body).expect("answer");
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer.body.contains("rpc.body_read_timeout_ms"),
        "{}",
        answer.body
    );
    // Fresh clients are still served.
    assert_eq!(chain_id_from(me, addr).expect("served").status, 200);
}

#[test]
fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let node = start_fulmen(&["--dev"]);
    let addr = node.addr;
    // 100 MB declared, against the default 5 MiB limit; no body follows.
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 100000000\r\n\r\n"
    );
    let answer = exchange_from(Ipv4Addr::LOCALHOST, addr, &request).expect("an answer");
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert!(
        answer.body.contains("rpc.body_bytes_max"),
        "{}",
        answer.body
    );
    assert_eq!(
        chain_id_from(Ipv4Addr::LOCALHOST, addr)
            .expect("served")
            .status,
        200
    );
}

#[test]
fn one_ip_cannot_open_more_than_its_connection_cap() {
    let (node, _config) = start_with_config("[rpc]\nconnections_per_ip_max = 5\n");
    let addr = node.addr;
    let greedy = Ipv4Addr::new(127, 0, 0, 2);
    // Five keep-alive connections, each known to be accepted (answered).
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut stream = connect_from(greedy, addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream
            .write_all(post(addr, "", CHAIN_ID_BODY).as_bytes())
            .expect("write");
        assert_eq!(read_answer(&mut stream).expect("answer").status, 200);
        held.push(stream);
    }
    // The sixth is refused with a reason (or at least closed).
    match chain_id_from(greedy, addr) {
        Ok(answer) => {
            assert_eq!(answer.status, 429, "{}", answer.body);
            assert!(
                answer.body.contains("rpc.connections_per_ip_max"),
                "{}",
                answer.body
            );
        }
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ),
            "{e}"
        ),
    }
    // Another address is served.
    let other = chain_id_from(Ipv4Addr::new(127, 0, 0, 3), addr).expect("served");
    assert_eq!(other.status, 200);
    // Closing one makes room again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(answer) = chain_id_from(greedy, addr)
            && answer.status == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed connection was not uncounted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_second_process_cannot_bind_the_rpc_port() {
    let first = start_fulmen(&["--dev"]);
    let addr = first.addr;
    let try_second = |flags: &[&str]| {
        let dir = tempdir::TempDir::new("fulmen-second");
        let mut second = Command::new(env!("CARGO_BIN_EXE_fulmen"))
            .arg("run")
            .args(["--dev", "--datadir"])
            .arg(&dir.0)
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the second node");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = second.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = second.kill();
                let _ = second.wait();
                panic!("a second node started on {addr}, which another node serves");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        second
            .stderr
            .take()
            .expect("piped")
            .read_to_string(&mut stderr)
            .expect("stderr");
        assert!(!status.success(), "{stderr}");
        stderr
    };
    let port = free_port().to_string();
    let stderr = try_second(&["--rpc-addr", &addr.to_string()]);
    assert!(
        stderr.contains(&format!("rpc_addr {addr} is in use by another process")),
        "{stderr}"
    );
    let stderr = try_second(&[
        "--rpc-addr",
        &format!("127.0.0.1:{port}"),
        "--ws-addr",
        &addr.to_string(),
    ]);
    assert!(
        stderr.contains(&format!("ws_addr {addr} is in use by another process")),
        "{stderr}"
    );
    // The first node still answers every request, each on a new connection.
    for _ in 0..50 {
        assert_eq!(
            rpc(addr, "eth_chainId", json!([]))["result"],
            format!("0x{DEV_CHAIN_ID:x}")
        );
    }
}

#[test]
fn browser_requests_are_checked_against_host_and_origin_allow_lists() {
    let me = Ipv4Addr::LOCALHOST;
    // Defaults: Host names other than localhost are refused; a browser
    // Origin is served without CORS headers (the browser then withholds the
    // answer from the page, as with geth), so wallets' own requests work.
    {
        let node = start_fulmen(&["--dev"]);
        let addr = node.addr;
        let request =
            post(addr, "", CHAIN_ID_BODY).replace(&format!("Host: {addr}"), "Host: evil.example");
        let answer = exchange_from(me, addr, &request).expect("an answer");
        assert_eq!(answer.status, 403, "{}", answer.body);
        let request = post(addr, "Origin: https://app.example\r\n", CHAIN_ID_BODY);
        let answer = exchange_from(me, addr, &request).expect("an answer");
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("access-control-allow-origin"), None);
    }
    let (node, _config) = start_with_config("[rpc]\ncors_origins = [\"https://app.example\"]\n");
    let addr = node.addr;
    let with_host = |host: &str, extra: &str| {
        let request = post(addr, extra, CHAIN_ID_BODY).replace(&format!("Host: {addr}"), host);
        exchange_from(me, addr, &request).expect("an answer")
    };
    // DNS rebinding: a name that is not allowed.
    let answer = with_host("Host: evil.example", "");
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(
        answer.body.contains("host 'evil.example' is not allowed"),
        "{}",
        answer.body
    );
    assert!(answer.body.contains("rpc.vhosts"), "{}", answer.body);
    // localhost and IP literals pass.
    for host in [
        format!("Host: localhost:{}", addr.port()),
        "Host: LOCALHOST".to_string(),
        format!("Host: {addr}"),
        "Host: [::1]:8545".to_string(),
    ] {
        assert_eq!(with_host(&host, "").status, 200, "{host}");
    }
    // A page on another origin gets no CORS headers: its browser keeps the
    // answer from it.
    let answer = with_host(&format!("Host: {addr}"), "Origin: https://evil.example\r\n");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("access-control-allow-origin"), None);
    // An allowed origin gets CORS headers, on the preflight and the call.
    let preflight = format!(
        "OPTIONS / HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://app.example\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let answer = exchange_from(me, addr, &preflight).expect("an answer");
    assert_eq!(answer.status, 204, "{}", answer.head);
    assert_eq!(
        answer.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert!(
        answer
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST"))
    );
    assert_eq!(
        answer.header("access-control-allow-headers").as_deref(),
        Some("content-type")
    );
    let answer = with_host(&format!("Host: {addr}"), "Origin: https://app.example\r\n");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    // WebSocket upgrades (which browsers do not guard with CORS) from an
    // origin outside the configured list are refused.
    let upgrade = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://evil.example\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    let answer = exchange_from(me, addr, &upgrade).expect("an answer");
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.body.contains("rpc.cors_origins"), "{}", answer.body);
    let allowed = upgrade.replace("evil.example", "app.example");
    let answer = exchange_from(me, addr, &allowed).expect("an answer");
    assert_eq!(answer.status, 101, "{}", answer.head);
}
