//! A replica's follower thread (`--replica --sequencer ws://HOST:PORT`).
//!
//! It subscribes to the upstream's `replication` stream (the upstream's
//! log records, mini-blocks and seals, in log order; the upstream may be
//! the sequencer or another replica) from the record after the last
//! mini-block of this node's sealed blocks, checks each message (CRC-32C
//! of the record, its number and hash, `fulmen_chain::replication`), and
//! hands the records to the seq core in order
//! (`fulmen_exec::seq_core`'s upstream actor), which applies, checks and
//! publishes them. A lost connection is made again and resumed after the
//! last mini-block received (`fromMiniBlock`), so nothing is missed or
//! applied twice. A damaged message, a record out of order, a block that
//! does not seal as the upstream's did, or an upstream that pruned what
//! this node needs stops the node with the reason: a replica serves the
//! upstream's chain or nothing.
//!
//! It is a plain OS thread (it blocks on the socket), on the exec CPUs
//! below the pinned roles, like the DA thread.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use fulmen_chain::metrics::METRICS;
use fulmen_chain::msg::Upstream;
use futures::channel::mpsc;
use serde_json::{Value, json};
use tungstenite::Message;

/// Records the follower may hand the seq core ahead of it.
pub(crate) const UPSTREAM_QUEUE_CAPACITY: usize = 1024;
/// Connect timeout to the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A read waits this long before the thread looks at the seq core again.
const READ_POLL: Duration = Duration::from_secs(1);
/// Silence after which the upstream is pinged, and twice this, dropped.
const SILENCE_PING: Duration = Duration::from_secs(15);
/// Waits between connection attempts: from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What the follower needs.
pub(crate) struct ReplicaStart {
    /// The upstream's WebSocket URL.
    pub(crate) upstream: String,
    /// The first mini-block to ask for: every record after the one before
    /// it is taken.
    pub(crate) from: u64,
    /// Where records go to the seq core.
    pub(crate) to_seq: mpsc::Sender<Upstream>,
}

/// Why following stopped.
enum Failure {
    /// The connection was lost: connect again.
    Lost(String),
    /// This node cannot follow the upstream: it stops.
    Fatal(String),
}

/// The HTTP URL of the WebSocket URL `ws` (same host and port), which
/// sends are forwarded to.
pub(crate) fn http_url(ws: &str) -> Result<String, String> {
    if let Some(rest) = ws.strip_prefix("ws://") {
        Ok(format!("http://{rest}"))
    } else if let Some(rest) = ws.strip_prefix("wss://") {
        Ok(format!("https://{rest}"))
    } else {
        Err(format!(
            "--sequencer {ws:?}: want the upstream's WebSocket URL, ws://HOST:PORT"
        ))
    }
}

/// Starts the follower thread; `on_start` runs on it first (pinning).
pub(crate) fn start(
    start: ReplicaStart,
    on_start: impl FnOnce() + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("fulmen-replica".into())
        .spawn(move || {
            on_start();
            let reason = follow(start);
            tracing::error!("replica: {reason}; the node stops");
            eprintln!("error: replica: {reason}");
            std::process::exit(1);
        })
}

/// Follows the upstream until this node cannot: the reason.
fn follow(mut start: ReplicaStart) -> String {
    let mut retry = RETRY_FIRST;
    let mut connected_once = false;
    loop {
        let began = Instant::now();
        match follow_once(&mut start, &mut connected_once) {
            Failure::Fatal(reason) => return reason,
            Failure::Lost(reason) => {
                tracing::warn!(
                    upstream = %start.upstream,
                    from = start.from,
                    "replica: {reason}; connecting again"
                );
            }
        }
        if began.elapsed() > RETRY_MAX * 4 {
            retry = RETRY_FIRST;
        }
        std::thread::sleep(retry);
        retry = (retry * 2).min(RETRY_MAX);
        if start.to_seq.is_closed() {
            return "the seq core stopped (its error is above)".into();
        }
    }
}

type Socket = tungstenite::WebSocket<TcpStream>;

/// One connection: subscribes from `start.from` and hands records over
/// until it fails.
fn follow_once(start: &mut ReplicaStart, connected_once: &mut bool) -> Failure {
    let mut socket = match connect(&start.upstream) {
        Ok(socket) => socket,
        Err(e) => return Failure::Lost(e),
    };
    if *connected_once {
        METRICS.replica_reconnects.fetch_add(1, Relaxed);
    }
    *connected_once = true;
    let subscribe = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_subscribe",
        "params": ["replication", {"fromMiniBlock": start.from}],
    });
    if let Err(e) = socket.send(Message::Text(subscribe.to_string().into())) {
        return Failure::Lost(format!("subscribing: {e}"));
    }
    tracing::info!(upstream = %start.upstream, from = start.from, "replica: following");
    let mut heard = Instant::now();
    let mut pinged = false;
    loop {
        if start.to_seq.is_closed() {
            return Failure::Fatal("the seq core stopped (its error is above)".into());
        }
        let message = match socket.read() {
            Ok(message) => message,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if heard.elapsed() > SILENCE_PING * 2 {
                    return Failure::Lost("the upstream went silent".into());
                }
                if heard.elapsed() > SILENCE_PING && !pinged {
                    pinged = socket.send(Message::Ping(Vec::new().into())).is_ok();
                }
                continue;
            }
            Err(e) => return Failure::Lost(format!("reading: {e}")),
        };
        heard = Instant::now();
        pinged = false;
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                return Failure::Lost(format!("the upstream closed the connection: {frame:?}"));
            }
            _ => continue,
        };
        if let Err(failure) = take(start, text.as_str()) {
            return failure;
        }
    }
}

/// Connects to `url` with a timeout and a read timeout.
fn connect(url: &str) -> Result<Socket, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url:?}: only ws:// upstreams are supported"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(READ_POLL))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| format!("socket options: {e}"))?;
    let (socket, _) =
        tungstenite::client(url, stream).map_err(|e| format!("WebSocket handshake: {e}"))?;
    Ok(socket)
}

/// One text message from the upstream: the subscription's answer, or a
/// record, checked and handed to the seq core.
fn take(start: &mut ReplicaStart, text: &str) -> Result<(), Failure> {
    let message: Value = serde_json::from_str(text).map_err(|e| {
        Failure::Fatal(format!(
            "the upstream sent a message that is not JSON ({e})"
        ))
    })?;
    if let Some(error) = message.get("error") {
        let text = error.get("message").unwrap_or(error).to_string();
        let reason = format!(
            "the upstream refused to stream from mini-block {}: {text}",
            start.from
        );
        // An upstream behind this node (a replica restarted and catching
        // up) or busy gets asked again; one that pruned what this node
        // needs never has it again.
        return Err(if text.contains("is pruned") {
            Failure::Fatal(reason)
        } else {
            Failure::Lost(reason)
        });
    }
    let Some(result) = message.get("params").and_then(|p| p.get("result")) else {
        // The subscription's id.
        return Ok(());
    };
    let record = fulmen_chain::replication::parse_message(result)
        .map_err(|e| Failure::Fatal(format!("the upstream sent a damaged record: {e}")))?;
    if let Upstream::MiniBlock { record, .. } = &record {
        start.from = start.from.max(record.number + 1);
    }
    futures::executor::block_on(futures::SinkExt::send(&mut start.to_seq, record))
        .map_err(|_| Failure::Fatal("the seq core stopped (its error is above)".into()))
}
