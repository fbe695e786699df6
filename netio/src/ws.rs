//! JSON-RPC over WebSocket: the upgrade on the HTTP port (or the WS port),
//! and one connection's reader, writer and watchdog. Every HTTP method works
//! here too; `eth_subscribe` / `eth_unsubscribe` only here.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::{
    self, Message,
    handshake::derive_accept_key,
    protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode},
};
use bytes::Bytes;
use fulmen_chain::metrics::METRICS;
use futures::future::{Either, select};
use futures::{SinkExt, StreamExt};
use glommio::net::TcpStream;
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::Value;

use crate::answer::{Answer, error_response};
use crate::eth::{RpcContext, dispatch_in_batch};
use crate::outbox::{CLOSE_AWAY, CLOSE_TOO_BIG, Frame, Outbox, Refused, SendBudget};
use crate::pubsub::{Conn, Hub};
use crate::rpc::{Body, Call, Renderer, RpcError, parse_body, response};
use crate::sim::BatchBudget;

/// Limits of the WebSocket surface: the `[ws]` table of the node config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsLimits {
    /// Most open WebSocket connections on the node (all net cores).
    pub connections_max: usize,
    /// Most subscriptions one connection holds.
    pub subscriptions_per_connection_max: usize,
    /// Largest message (and frame) a client may send.
    pub message_bytes_max: usize,
    /// Bytes queued for one client before it is closed as a slow consumer.
    pub send_buffer_bytes_max: usize,
    /// Bytes queued or being written for all clients together (all net
    /// cores). A push past it closes its connection as a slow consumer if
    /// that connection has a backlog; on a connection with nothing
    /// outstanding a notification (or an answer up to 64 KiB) still goes,
    /// and a larger answer is replaced by -32005.
    pub send_buffer_bytes_total_max: usize,
    /// Requests of one connection running at once; reading pauses beyond.
    /// They end with the connection.
    pub requests_in_flight_max: usize,
    /// A connection silent this long gets a ping.
    pub ping_interval_ms: u64,
    /// A connection silent this long (no frame, not even a pong) is closed.
    pub idle_timeout_ms: u64,
    /// After a close frame is queued, how long the peer has to finish the
    /// close before the socket is dropped.
    pub close_grace_ms: u64,
    /// Subscriptions replaying from the log (`fromMiniBlock`) at once, on
    /// the node; each has a reader thread while it replays.
    pub resumes_max: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        Self {
            // Worst case held for clients: the node-wide budget (256 MiB),
            // plus at most one notification per connection past it; without
            // it, 4096 x 4 MiB = 16 GiB could queue.
            connections_max: 4096,
            subscriptions_per_connection_max: 128,
            // Requests are small: 1 MiB holds a batch of 1000 transfers.
            message_bytes_max: 1024 * 1024,
            // A subscriber may fall behind by ~0.25 s of a busy miniBlocks
            // stream (~15 MB/s) before it is cut off.
            send_buffer_bytes_max: 4 * 1024 * 1024,
            send_buffer_bytes_total_max: 256 * 1024 * 1024,
            requests_in_flight_max: 256,
            ping_interval_ms: 30_000,
            idle_timeout_ms: 90_000,
            close_grace_ms: 5_000,
            resumes_max: 16,
        }
    }
}

/// tungstenite's read buffer per connection (requests are small; larger
/// ones take several reads).
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// What the net cores share about their clients.
#[derive(Debug, Default)]
pub struct WsShared {
    /// Open WebSocket connections on the node.
    pub open: AtomicUsize,
    /// Bytes queued or being written for WebSocket clients, all
    /// connections (bounded by `send_buffer_bytes_total_max`).
    pub send_buffers_bytes: Arc<AtomicUsize>,
    /// Bytes of HTTP answers not yet written to their clients (bounded by
    /// `rpc.responses_in_flight_bytes_max`).
    pub responses_in_flight_bytes: Arc<AtomicUsize>,
    /// The log that subscriptions resume from (`fromMiniBlock`); `None`
    /// when the node keeps none.
    pub resume: Option<Arc<crate::resume::ResumeSource>>,
}

/// One net core's context for connections on the RPC port: what the eth
/// methods need, plus what WebSocket connections and their subscriptions
/// need. The HTTP server serves with it, since any HTTP connection may
/// upgrade.
pub struct WsContext {
    /// What the eth methods need.
    pub rpc: RpcContext,
    /// WebSocket limits.
    pub limits: WsLimits,
    /// What all net cores share about their clients.
    pub shared: Arc<WsShared>,
    /// This core's subscriptions.
    pub hub: Rc<Hub>,
}

/// True when `request` asks for a WebSocket.
pub(crate) fn wants_upgrade<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers a WebSocket upgrade request: 101 and `upgraded` set (a connection
/// slot is then taken and [`serve`] must follow), or an HTTP error.
pub(crate) fn accept<B>(
    ctx: &WsContext,
    request: &Request<B>,
    upgraded: &Cell<bool>,
) -> Response<Answer> {
    let key = match upgrade_key(request) {
        Ok(key) => key,
        Err(bad) => return bad.response(),
    };
    let max = ctx.limits.connections_max;
    if ctx.shared.open.fetch_add(1, Relaxed) >= max {
        ctx.shared.open.fetch_sub(1, Relaxed);
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many WebSocket connections: limit {max}; retry later"),
        );
    }
    METRICS.ws_connections.fetch_add(1, Relaxed);
    upgraded.set(true);
    switching_protocols(key)
}

/// Why an upgrade request is refused: the status and the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BadUpgrade(StatusCode, &'static str);

impl BadUpgrade {
    /// The HTTP answer; a refused version names the one this node speaks.
    fn response(self) -> Response<Answer> {
        let mut reply = error_response(self.0, self.1.into());
        if self.0 == StatusCode::UPGRADE_REQUIRED {
            reply.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                header::HeaderValue::from_static("13"),
            );
        }
        reply
    }
}

/// The `Sec-WebSocket-Key` of a well-formed upgrade request (GET,
/// `Connection: upgrade`, version 13), or why it is refused.
fn upgrade_key<B>(request: &Request<B>) -> Result<&header::HeaderValue, BadUpgrade> {
    if request.method() != Method::GET {
        return Err(BadUpgrade(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade must use GET",
        ));
    }
    let headers = request.headers();
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return Err(BadUpgrade(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs `Connection: upgrade`",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(BadUpgrade(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version: use 13",
        ));
    }
    headers.get(header::SEC_WEBSOCKET_KEY).ok_or(BadUpgrade(
        StatusCode::BAD_REQUEST,
        "a WebSocket upgrade needs Sec-WebSocket-Key",
    ))
}

/// The 101 answer to an upgrade with `key`.
fn switching_protocols(key: &header::HeaderValue) -> Response<Answer> {
    let accept = derive_accept_key(key.as_bytes());
    let mut reply = Response::new(Answer::new(Bytes::new()));
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = reply.headers_mut();
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(value) = header::HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    reply
}

/// Gives back the connection slot [`accept`] took.
struct Slot(Rc<WsContext>);

impl Drop for Slot {
    fn drop(&mut self) {
        let open_before = self.0.shared.open.fetch_sub(1, Relaxed);
        assert!(open_before > 0, "a WebSocket slot was given back twice");
        METRICS.ws_connections.fetch_sub(1, Relaxed);
    }
}

/// Releases a slot taken by [`accept`] when the upgrade did not complete.
pub(crate) fn release(ctx: Rc<WsContext>) {
    drop(Slot(ctx));
}

/// Serves one upgraded connection until it ends. `read_buf` holds bytes the
/// client sent after its upgrade request.
pub(crate) async fn serve(ctx: Rc<WsContext>, stream: TcpStream, read_buf: Bytes) {
    let _slot = Slot(ctx.clone());
    let limits = &ctx.limits;
    // A small read buffer: tungstenite zeroes the whole buffer before each
    // read attempt, and at its 128 KiB default that memset was a third of
    // the net core's time when fanning out to 1000 subscribers.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(limits.message_bytes_max))
        .max_frame_size(Some(limits.message_bytes_max));
    let ws =
        WebSocketStream::from_partially_read(stream, read_buf.to_vec(), Role::Server, Some(config))
            .await;
    let budget = SendBudget::new(
        ctx.shared.send_buffers_bytes.clone(),
        limits.send_buffer_bytes_total_max,
    );
    let outbox = Outbox::new(limits.send_buffer_bytes_max, budget);
    let conn = Rc::new(Conn::new(outbox, ctx.hub.clone()));
    ctx.hub.register(&conn);
    let (sink, stream) = ws.split();
    let last_seen = Rc::new(Cell::new(Instant::now()));
    let reader = pin!(read_loop(
        ctx.clone(),
        conn.clone(),
        stream,
        last_seen.clone()
    ));
    let writer = pin!(write_loop(sink, conn.clone()));
    let watchdog = pin!(watchdog(ctx.clone(), conn.clone(), last_seen));
    // Whichever ends first ends the connection: the client left (reader),
    // the socket failed (writer), or a close timed out (watchdog).
    let _ = select(select(reader, writer), watchdog).await;
}

type Sink = async_tungstenite::WebSocketSender<TcpStream>;
type Source = async_tungstenite::WebSocketReceiver<TcpStream>;

async fn write_loop(mut sink: Sink, conn: Rc<Conn>) {
    // Text handed to tungstenite stays on the node-wide budget until it is
    // known to be in the kernel: the next feed first flushes what the
    // previous one left buffered, and a flush writes everything.
    let mut unflushed = 0;
    loop {
        let frame = conn.outbox.next().await;
        let mut text_bytes = 0;
        let message = match frame {
            Frame::Text(text) => {
                text_bytes = text.len();
                Message::Text(text.into())
            }
            Frame::Ping => Message::Ping(Bytes::new()),
            Frame::Close(code, reason) => {
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                if sink.send(Message::Close(Some(frame))).await.is_ok() {
                    // The peer answers the close; the reader then ends.
                    std::future::pending::<()>().await;
                }
                return;
            }
        };
        // Queue, and write to the socket once nothing else waits.
        if sink.feed(message).await.is_err() {
            return;
        }
        conn.outbox.written(unflushed);
        unflushed = text_bytes;
        if conn.outbox.is_empty() {
            if sink.flush().await.is_err() {
                return;
            }
            conn.outbox.written(unflushed);
            unflushed = 0;
        }
    }
}

/// A request running on its connection.
type Running = futures::stream::FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = ()>>>>;

async fn read_loop(
    ctx: Rc<WsContext>,
    conn: Rc<Conn>,
    mut stream: Source,
    seen: Rc<Cell<Instant>>,
) {
    // Requests run inside this future, not as detached tasks: when the
    // connection ends they end with it, so a client that sends slow calls
    // and leaves cannot pile up work.
    let mut running: Running = futures::stream::FuturesUnordered::new();
    loop {
        if running.len() >= ctx.limits.requests_in_flight_max {
            // Stop reading until one finishes.
            running.next().await;
            continue;
        }
        let item = if running.is_empty() {
            stream.next().await
        } else {
            match select(stream.next(), running.next()).await {
                Either::Left((item, _)) => item,
                Either::Right(_) => continue,
            }
        };
        let Some(item) = item else {
            return;
        };
        seen.set(Instant::now());
        let message = match item {
            Ok(message) => message,
            Err(tungstenite::Error::Capacity(e)) => {
                conn.outbox.close(
                    CLOSE_TOO_BIG,
                    format!(
                        "message too big: limit {} bytes ({e})",
                        ctx.limits.message_bytes_max
                    ),
                );
                // The rest of that message cannot be parsed: stop reading
                // and let the close run its course.
                std::future::pending::<()>().await;
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket read failed");
                return;
            }
        };
        let text = match message {
            Message::Text(text) => Bytes::from(text),
            Message::Binary(bytes) => bytes,
            // Pings are answered by the protocol layer; a close is answered
            // on the next read, which then ends the stream.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => continue,
        };
        if conn.outbox.is_closing() {
            continue;
        }
        on_message(&ctx, &conn, &mut running, text);
    }
}

/// Handles one request message. Subscriptions are handled in place (their
/// order matters); everything else runs concurrently with the connection's
/// other requests, so that a waiting `eth_sendRawTransactionSync` never
/// holds up the connection.
fn on_message(ctx: &Rc<WsContext>, conn: &Rc<Conn>, running: &mut Running, text: Bytes) {
    let body = match parse_body(&text, ctx.rpc.limits.batch_max) {
        Ok(body) => body,
        Err(e) => {
            let _ = conn.outbox.push(response(Value::Null, Err(e)).to_string());
            return;
        }
    };
    let mut renderer = Renderer::new(
        ctx.rpc.limits.response_bytes_max,
        ctx.rpc.limits.batch_response_bytes_max,
    );
    if let Body::Single(Ok(call)) = &body
        && is_subscription_method(&call.method)
    {
        let (reply, new) = run_subscription_call(ctx, conn, call, &mut renderer);
        answer(ctx, conn, call.id.clone(), reply, new.into_iter().collect());
        return;
    }
    let ctx = ctx.clone();
    let conn = conn.clone();
    running.push(Box::pin(async move {
        let mut new = Vec::new();
        let (id, reply) = match body {
            Body::Single(call) => {
                let id = match &call {
                    Ok(call) => call.id.clone(),
                    Err((id, _)) => id.clone(),
                };
                (
                    id,
                    run(&ctx, &conn, call, &mut new, &mut renderer, None).await,
                )
            }
            Body::Batch(calls) => {
                let mut out = String::new();
                // The batch's simulations share one time and gas budget, as
                // over HTTP.
                let budget = BatchBudget::new(&ctx.rpc.limits);
                for call in calls {
                    let batch = Some(&budget);
                    if let Some(reply) =
                        run(&ctx, &conn, call, &mut new, &mut renderer, batch).await
                    {
                        out.push(if out.is_empty() { '[' } else { ',' });
                        out.push_str(&reply);
                    }
                }
                if !out.is_empty() {
                    out.push(']');
                }
                (Value::Null, (!out.is_empty()).then_some(out))
            }
        };
        answer(&ctx, &conn, id, reply, new);
    }));
}

fn is_subscription_method(method: &str) -> bool {
    matches!(method, "eth_subscribe" | "eth_unsubscribe")
}

/// Answers up to this size are never refused for the node-wide budget.
const SMALL_ANSWER_BYTES: usize = 64 * 1024;

/// Queues `reply` (if any), then starts the subscriptions it created (and
/// the catch-up of those that resume). When the node-wide send budget is
/// spent, a large answer is replaced by -32005 (with `id`, null for a
/// batch), and the subscriptions are removed.
fn answer(ctx: &WsContext, conn: &Rc<Conn>, id: Value, reply: Option<String>, new: Vec<String>) {
    if let Some(reply) = reply {
        // Small answers go as notifications do (a connection with nothing
        // outstanding always gets them): `eth_chainId` must not fail because
        // others hold the budget.
        let pushed = if reply.len() <= SMALL_ANSWER_BYTES {
            conn.outbox.push(reply).map_err(|_| Refused::Closing)
        } else {
            conn.outbox.push_response(reply)
        };
        match pushed {
            Ok(()) => {}
            Err(Refused::Closing) => return,
            Err(Refused::NodeBudget { held, max }) => {
                let error = RpcError::busy(format!(
                    "server busy: {held} bytes wait in the node's WebSocket send buffers, \
                     node limit {max} bytes; the calls ran, only their answer was dropped: \
                     re-read what they returned"
                ));
                let _ = conn.outbox.push(response(id, Err(error)).to_string());
                for id in new {
                    conn.remove(&id);
                }
                return;
            }
        }
    }
    for id in new {
        if let Some(catchup) = conn.activate(&id) {
            let context = crate::pubsub::CatchupContext {
                view: ctx.rpc.view.clone(),
                queue_bytes: (ctx.limits.send_buffer_bytes_max / 2).max(1),
            };
            let task = crate::pubsub::catch_up(Rc::downgrade(conn), id, catchup, context);
            glommio::spawn_local(task).detach();
        }
    }
}

/// One call; `None` for a notification (a request without an id).
async fn run(
    ctx: &Rc<WsContext>,
    conn: &Conn,
    call: Result<Call, (Value, RpcError)>,
    new: &mut Vec<String>,
    renderer: &mut Renderer,
    batch: Option<&BatchBudget>,
) -> Option<String> {
    match call {
        Err((id, e)) => Some(renderer.render(id, Err(e))),
        Ok(call) if is_subscription_method(&call.method) => {
            let (reply, created) = run_subscription_call(ctx, conn, &call, renderer);
            new.extend(created);
            reply
        }
        Ok(call) => {
            let result = dispatch_in_batch(&ctx.rpc, &call.method, &call.params, batch).await;
            (!call.notification).then(|| renderer.render(call.id, result))
        }
    }
}

fn run_subscription_call(
    ctx: &WsContext,
    conn: &Conn,
    call: &Call,
    renderer: &mut Renderer,
) -> (Option<String>, Option<String>) {
    let (result, created) = if call.method == "eth_subscribe" {
        let view = ctx.rpc.view.load();
        match ctx.hub.subscribe(
            conn,
            &call.params,
            ctx.limits.subscriptions_per_connection_max,
            (ctx.shared.resume.as_ref(), &view),
        ) {
            Ok(id) => (Ok(Value::String(id.clone())), Some(id)),
            Err(e) => (Err(e), None),
        }
    } else {
        (Hub::unsubscribe(conn, &call.params).map(Value::Bool), None)
    };
    let reply = (!call.notification).then(|| renderer.render(call.id.clone(), result));
    (reply, created)
}

/// Pings a silent client, closes one silent past the idle timeout, and
/// returns (ending the connection) when a close is not finished in time.
async fn watchdog(ctx: Rc<WsContext>, conn: Rc<Conn>, seen: Rc<Cell<Instant>>) {
    let limits = &ctx.limits;
    let ping_every = Duration::from_millis(limits.ping_interval_ms.max(1));
    let idle_max = Duration::from_millis(limits.idle_timeout_ms.max(1));
    let grace = Duration::from_millis(limits.close_grace_ms);
    let tick = (ping_every / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut last_ping = Instant::now();
    let mut closing_since: Option<Instant> = None;
    loop {
        glommio::timer::sleep(tick).await;
        if conn.outbox.is_closing() {
            let since = *closing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= grace {
                return;
            }
            continue;
        }
        let idle = seen.get().elapsed();
        if idle >= idle_max {
            conn.outbox.close(
                CLOSE_AWAY,
                format!(
                    "idle timeout: nothing received for {} ms (pings unanswered)",
                    idle.as_millis()
                ),
            );
        } else if idle >= ping_every && last_ping.elapsed() >= ping_every {
            conn.outbox.ping();
            last_ping = Instant::now();
        }
    }
}

/// Runs this core's fan-out: every durable chain event from the seq core to
/// this core's subscribers, in order.
pub async fn run_events(
    hub: Rc<Hub>,
    events: glommio::channels::shared_channel::ConnectedReceiver<fulmen_chain::events::Published>,
) {
    while let Some(published) = events.recv().await {
        hub.deliver(&published);
        glommio::yield_if_needed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(method: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut request = Request::builder().method(method).uri("/");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).expect("a request")
    }

    const GOOD: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn a_well_formed_upgrade_gets_101_with_the_rfc_6455_accept_key() {
        let request = upgrade("GET", &GOOD);
        assert!(wants_upgrade(&request));
        let key = upgrade_key(&request).expect("a well-formed upgrade");
        let reply = switching_protocols(key);
        assert_eq!(reply.status(), StatusCode::SWITCHING_PROTOCOLS);
        // The example of RFC 6455, section 1.3.
        assert_eq!(
            reply.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn malformed_upgrades_are_refused_with_the_missing_piece() {
        let status = |request: Request<()>| upgrade_key(&request).map_err(|bad| bad.0).err();
        assert_eq!(
            status(upgrade("POST", &GOOD)),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        let without = |name: &str| -> Vec<(&str, &str)> {
            GOOD.iter().copied().filter(|(n, _)| *n != name).collect()
        };
        assert_eq!(
            status(upgrade("GET", &without("connection"))),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(upgrade("GET", &without("sec-websocket-key"))),
            Some(StatusCode::BAD_REQUEST)
        );
        let mut old = without("sec-websocket-version");
        old.push(("sec-websocket-version", "8"));
        let refused = upgrade_key(&upgrade("GET", &old)).expect_err("refused");
        let reply = refused.response();
        assert_eq!(reply.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(reply.headers()[header::SEC_WEBSOCKET_VERSION], "13");
        assert!(!wants_upgrade(&upgrade("GET", &without("upgrade"))));
    }
}
