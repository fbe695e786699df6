//! HTTP JSON-RPC on hyper 1.x over glommio's TCP, one accept loop per net
//! core; WebSocket upgrades on the same port go to [`crate::ws`]. The node
//! binds each listen address once, exclusively (no SO_REUSEPORT, so no
//! other process can share the port), and every net core accepts on its own
//! duplicate of that socket.
//!
//! Connection handling bounds what a client can hold without sending
//! requests: a per-IP connection cap (node-wide), a per-core cap that makes
//! room by closing the connection longest without a finished request, and a
//! watchdog per connection that closes it when a request head is slower
//! than `header_read_timeout_ms` or it idles longer than `idle_timeout_ms`.
//! The request body has `body_read_timeout_ms` ([`TimedBody`]). hyper's own
//! header timeout is not used: it also runs while a keep-alive connection
//! waits for its next request, so it would cap idle time at the header
//! timeout, and its `Sleep` must be `Send`, which glommio's timers are not.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::Timer;
use http_body_util::{BodyExt, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use serde_json::Value;

use crate::answer::{ANSWER_CHUNK_BYTES, Answer, error_response, json_response};
use crate::eth::dispatch_in_batch;
use crate::limits::RpcLimits;
use crate::rpc::{Body, Renderer, RpcError, parse_body, response};
use crate::sim::BatchBudget;
use crate::ws::WsContext;

/// Default of `rpc.connections_per_core_max`.
pub const CONNECTIONS_PER_CORE_MAX: usize = 4096;

/// Bytes read from a socket per poll.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Refusal answers being written at once per core; beyond this a refused
/// connection is just closed.
const REFUSALS_IN_FLIGHT_MAX: usize = 64;

/// How long a refusal answer may take to write.
const REFUSAL_WRITE_TIMEOUT_MS: u64 = 1000;

/// What all net cores share about HTTP connections.
#[derive(Debug, Default)]
pub struct HttpShared {
    /// Open connections per client IP. Touched once per accept and close,
    /// never per request.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// What the per-IP cap counts: an IPv4 address (IPv4-mapped IPv6 included),
/// or an IPv6 /64, the smallest block one client usually holds.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

impl HttpShared {
    /// Counts a connection from `ip` unless it already has `max`.
    fn try_open(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let open = per_ip.entry(ip).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(IpSlot {
            shared: self.clone(),
            ip,
        })
    }
}

/// One counted connection from an IP; uncounted on drop.
struct IpSlot {
    shared: Arc<HttpShared>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut per_ip = self.shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = per_ip.get_mut(&self.ip) {
            assert!(*open > 0);
            *open -= 1;
            if *open == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Where a connection is in its request cycle; decides which timeout applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head: `header_read_timeout_ms`.
    Head,
    /// Waiting for a request body: `body_read_timeout_ms` ([`TimedBody`]).
    Body,
    /// Running a request: no timeout here, and never evicted.
    Busy,
    /// Between requests: `idle_timeout_ms`.
    Idle,
}

/// The watchdog's view of one connection.
struct ConnState {
    phase: Cell<Phase>,
    /// When the phase began (or, when idle, the last bytes moved).
    since: Cell<Instant>,
    /// When the last request finished, or the connection opened: the
    /// connection with the oldest is closed first when the core is full.
    last_served: Cell<Instant>,
    evicted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl ConnState {
    fn new(now: Instant) -> Self {
        Self {
            phase: Cell::new(Phase::Head),
            since: Cell::new(now),
            last_served: Cell::new(now),
            evicted: Cell::new(false),
            waker: RefCell::new(None),
        }
    }

    fn enter(&self, phase: Phase) {
        self.phase.set(phase);
        self.since.set(Instant::now());
    }

    /// Bytes moved on the socket.
    fn on_io(&self, read: bool) {
        // Writes do not extend the idle time: an answer must be read within
        // `idle_timeout_ms` of its request's end, so a client that drips its
        // reads cannot hold an answer (counted on the node-wide budget of
        // answers in flight) for hours.
        if self.phase.get() == Phase::Idle && read {
            // The first byte of the next request.
            self.enter(Phase::Head);
        }
    }

    fn evict(&self) {
        self.evicted.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// Why the watchdog ended a connection.
#[derive(Debug)]
enum Closed {
    HeadTimeout,
    IdleTimeout,
    Evicted,
}

/// The open HTTP connections of one net core.
#[derive(Default)]
struct Conns {
    open: RefCell<HashMap<u64, Rc<ConnState>>>,
    next_id: Cell<u64>,
    refusals: Cell<usize>,
}

impl Conns {
    fn insert(&self, state: Rc<ConnState>) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.open.borrow_mut().insert(id, state);
        id
    }

    fn remove(&self, id: u64) {
        self.open.borrow_mut().remove(&id);
    }

    fn len(&self) -> usize {
        self.open.borrow().len()
    }

    /// Closes the connection longest without a finished request that is not
    /// running one; false if every connection is running a request.
    fn evict_one(&self) -> bool {
        let mut open = self.open.borrow_mut();
        let victim = open
            .iter()
            .filter(|(_, c)| c.phase.get() != Phase::Busy)
            .min_by_key(|(_, c)| c.last_served.get())
            .map(|(id, _)| *id);
        match victim.and_then(|id| open.remove(&id)) {
            Some(state) => {
                state.evict();
                true
            }
            None => false,
        }
    }
}

/// Adapts a glommio stream to hyper's IO traits, and tells the watchdog
/// when bytes move.
struct HyperIo {
    stream: TcpStream,
    state: Rc<ConnState>,
}

impl hyper::rt::Read for HyperIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // Read into a small initialised buffer and copy: hyper's cursor is
        // uninitialised memory, and zeroing all of it on every read costs more
        // than copying the few bytes a request carries.
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        let room = buf.remaining().min(READ_CHUNK_BYTES);
        match Pin::new(&mut self.stream).poll_read(cx, &mut chunk[..room]) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.state.on_io(true);
                }
                buf.put_slice(&chunk[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for HyperIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            self.state.on_io(false);
        }
        written
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

/// Accepts connections on `listener` and serves them until the task is
/// dropped. `shared` is the same for every net core of the node.
pub async fn serve(listener: TcpListener, ctx: Rc<WsContext>, shared: Arc<HttpShared>) {
    let conns = Rc::new(Conns::default());
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue; // Already gone.
        };
        let limits = &ctx.rpc.limits;
        // The per-IP cap comes first: one address never makes room for
        // itself by closing others' connections.
        let Some(ip_slot) = shared.try_open(client_key(peer.ip()), limits.connections_per_ip_max)
        else {
            let message = format!(
                "too many connections from {}: limit {} (rpc.connections_per_ip_max)",
                peer.ip(),
                limits.connections_per_ip_max
            );
            refuse(&conns, stream, StatusCode::TOO_MANY_REQUESTS, message);
            continue;
        };
        if conns.len() >= limits.connections_per_core_max && !conns.evict_one() {
            let message = format!(
                "server busy: {} connections running requests on this core \
                 (rpc.connections_per_core_max); retry shortly",
                limits.connections_per_core_max
            );
            refuse(&conns, stream, StatusCode::SERVICE_UNAVAILABLE, message);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let state = Rc::new(ConnState::new(Instant::now()));
        let id = conns.insert(state.clone());
        let ctx = ctx.clone();
        let conns = conns.clone();
        glommio::spawn_local(async move {
            serve_connection(ctx, stream, state, &conns, id).await;
            conns.remove(id);
            drop(ip_slot);
        })
        .detach();
    }
}

/// Answers a refused connection with `status` and `message` (best effort,
/// bounded), then closes it.
fn refuse(conns: &Rc<Conns>, mut stream: TcpStream, status: StatusCode, message: String) {
    tracing::debug!(%message, "refusing a connection");
    if conns.refusals.get() >= REFUSALS_IN_FLIGHT_MAX {
        return;
    }
    conns.refusals.set(conns.refusals.get() + 1);
    let conns = conns.clone();
    glommio::spawn_local(async move {
        let body = serde_json::to_string(&response(
            Value::Null,
            Err(RpcError::invalid_request(message)),
        ))
        .unwrap_or_default();
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let write = async {
            stream.write_all(answer.as_bytes()).await?;
            stream.close().await
        };
        let _ = glommio::timer::timeout(Duration::from_millis(REFUSAL_WRITE_TIMEOUT_MS), async {
            write.await.map_err(glommio::GlommioError::from)
        })
        .await;
        conns.refusals.set(conns.refusals.get() - 1);
    })
    .detach();
}

/// Ends when the connection has been slow or idle too long, or evicted.
async fn watchdog(state: Rc<ConnState>, header: Duration, idle: Duration) -> Closed {
    loop {
        if state.evicted.get() {
            return Closed::Evicted;
        }
        let limit = match state.phase.get() {
            Phase::Head => Some((header, Closed::HeadTimeout)),
            Phase::Idle => Some((idle, Closed::IdleTimeout)),
            // The body has its own deadline; a running request has none.
            Phase::Body | Phase::Busy => None,
        };
        let wait = match limit {
            Some((limit, why)) => {
                let deadline = state.since.get() + limit;
                let now = Instant::now();
                if now >= deadline {
                    return why;
                }
                deadline - now
            }
            None => header.min(idle),
        };
        // Phase changes do not wake the watchdog: it looks again when this
        // wait ends, so a busy connection costs one timer per wait.
        futures::future::select(Timer::new(wait), Evicted(&state)).await;
    }
}

/// Resolves once the connection is evicted.
struct Evicted<'a>(&'a ConnState);

impl Future for Evicted<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.evicted.get() {
            return Poll::Ready(());
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

type Reply = Pin<Box<dyn Future<Output = Result<Response<Answer>, Infallible>>>>;

/// Serves HTTP on one connection; after a WebSocket upgrade, the socket
/// goes to the WebSocket server.
async fn serve_connection(
    ctx: Rc<WsContext>,
    stream: TcpStream,
    state: Rc<ConnState>,
    conns: &Conns,
    id: u64,
) {
    let upgraded = Rc::new(Cell::new(false));
    let service = {
        let ctx = ctx.clone();
        let upgraded = upgraded.clone();
        let state = state.clone();
        service_fn(move |request| -> Reply {
            let ctx = ctx.clone();
            let upgraded = upgraded.clone();
            let state = state.clone();
            Box::pin(async move {
                let reply = route(&ctx, request, &upgraded, &state).await;
                state.enter(Phase::Idle);
                state.last_served.set(Instant::now());
                Ok(reply)
            })
        })
    };
    let limits = &ctx.rpc.limits;
    let header = Duration::from_millis(limits.header_read_timeout_ms);
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let io = HyperIo {
        stream,
        state: state.clone(),
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(1 << 20)
        .serve_connection(io, service);
    // Not `with_upgrades`: that needs a `Send` socket, and glommio's is not.
    // `without_shutdown` hands the socket back once the 101 is written.
    let served = std::pin::pin!(connection.without_shutdown());
    let guard = std::pin::pin!(watchdog(state, header, idle));
    let ended = match futures::future::select(served, guard).await {
        futures::future::Either::Left((ended, _)) => ended,
        futures::future::Either::Right((why, _)) => {
            // Dropping the hyper connection closes the socket. An upgrade
            // accepted but never handed over gives its WebSocket slot back.
            if upgraded.get() {
                crate::ws::release(ctx);
            }
            tracing::debug!(?why, "closing an HTTP connection");
            return;
        }
    };
    match ended {
        Ok(parts) if upgraded.get() => {
            // WebSocket connections have their own limits (`[ws]`) and are
            // not this core's HTTP connections any more.
            conns.remove(id);
            crate::ws::serve(ctx, parts.io.stream, parts.read_buf).await;
        }
        Ok(_) => {}
        Err(e) => {
            if upgraded.get() {
                crate::ws::release(ctx);
            }
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Checks a request's Host, Origin and declared length, answers CORS
/// preflights, then hands it to the WebSocket upgrade or to [`handle`].
async fn route(
    ctx: &Rc<WsContext>,
    request: Request<Incoming>,
    upgraded: &Cell<bool>,
    state: &Rc<ConnState>,
) -> Response<Answer> {
    let limits = &ctx.rpc.limits;
    if let Err(message) = check_host(&request, limits) {
        return error_response(StatusCode::FORBIDDEN, message);
    }
    // As geth: a browser's Origin only decides whether CORS headers are
    // sent (the browser then enforces them); a WebSocket upgrade, which
    // browsers do not guard with CORS, is refused for an origin outside a
    // configured allow-list. Host names are checked above (DNS rebinding).
    let origin = match check_origin(&request, limits) {
        Ok(origin) => origin,
        Err(message) if crate::ws::wants_upgrade(&request) && !limits.cors_origins.is_empty() => {
            return error_response(StatusCode::FORBIDDEN, message);
        }
        Err(_) => None,
    };
    if let Some(origin) = &origin
        && request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(&request, origin);
    }
    if let Some(declared) = declared_length(&request)
        && declared > limits.body_bytes_max as u64
    {
        // Refused before any of the body is read; hyper then closes the
        // connection rather than drain it.
        let limit = limits.body_bytes_max;
        let mut refused = error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body too large: {declared} bytes declared, limit {limit} bytes (rpc.body_bytes_max)"
            ),
        );
        refused.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return refused;
    }
    if crate::ws::wants_upgrade(&request) && !upgraded.get() {
        return crate::ws::accept(ctx, &request, upgraded);
    }
    let timeout = Duration::from_millis(limits.body_read_timeout_ms);
    let request = request.map(|body| TimedBody::new(body, timeout, state.clone()));
    let mut reply = handle(ctx.clone(), request).await;
    if let Some(origin) = origin {
        cors_headers(&mut reply, origin);
    }
    reply
}

/// The Content-Length a request declares, if any.
fn declared_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Refuses a Host name that is not in `rpc.vhosts` (DNS rebinding: a page
/// on evil.example resolving to this node). IP literals and a missing Host
/// cannot be rebound and pass, as in geth.
fn check_host<B>(request: &Request<B>, limits: &RpcLimits) -> Result<(), String> {
    let Some(value) = request.headers().get(header::HOST) else {
        return Ok(());
    };
    let host = value.to_str().unwrap_or("");
    if host_allowed(host, &limits.vhosts) {
        return Ok(());
    }
    Err(format!(
        "host '{}' is not allowed: add it to rpc.vhosts (or --http-vhosts)",
        host.escape_default()
    ))
}

/// Whether a Host header value (`name[:port]`) is allowed by `vhosts`.
fn host_allowed(host: &str, vhosts: &[String]) -> bool {
    if host.starts_with('[') {
        return true; // An IPv6 literal.
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    vhosts
        .iter()
        .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(name))
}

/// A request's Origin, if it has one and `rpc.cors_origins` allows it;
/// the reason to refuse it (403) if it is not allowed.
fn check_origin<B>(
    request: &Request<B>,
    limits: &RpcLimits,
) -> Result<Option<header::HeaderValue>, String> {
    let Some(value) = request.headers().get(header::ORIGIN) else {
        return Ok(None);
    };
    let origin = value.to_str().unwrap_or("");
    let allowed = limits
        .cors_origins
        .iter()
        .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin));
    if allowed {
        return Ok(Some(value.clone()));
    }
    Err(format!(
        "origin '{}' is not allowed: add it to rpc.cors_origins (or --http-corsdomain)",
        origin.escape_default()
    ))
}

/// Answers a CORS preflight from an allowed origin.
fn preflight<B>(request: &Request<B>, origin: &header::HeaderValue) -> Response<Answer> {
    let mut reply = Response::new(Answer::new(Bytes::new()));
    *reply.status_mut() = StatusCode::NO_CONTENT;
    let headers = reply.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        header::HeaderValue::from_static("POST, GET, OPTIONS"),
    );
    let asked = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| header::HeaderValue::from_static("content-type"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        header::HeaderValue::from_static("600"),
    );
    cors_headers(&mut reply, origin.clone());
    reply
}

fn cors_headers(reply: &mut Response<Answer>, origin: header::HeaderValue) {
    let headers = reply.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, header::HeaderValue::from_static("Origin"));
}

/// A request body with a deadline; tells the watchdog when it is complete.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    timeout: Duration,
    /// Armed the first time the body is not ready.
    timer: Option<Timer>,
    state: Rc<ConnState>,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration, state: Rc<ConnState>) -> Self {
        use hyper::body::Body as _;
        state.enter(if inner.is_end_stream() {
            Phase::Busy
        } else {
            Phase::Body
        });
        Self {
            inner,
            deadline: Instant::now() + timeout,
            timeout,
            timer: None,
            state,
        }
    }
}

/// The request body did not arrive in time.
#[derive(Debug)]
struct BodyTimeout(Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the body did not arrive within {} ms (rpc.body_read_timeout_ms)",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for BodyTimeout {}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.state.enter(Phase::Busy);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.state.enter(Phase::Busy);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this.timer.get_or_insert_with(|| {
                    Timer::new(deadline.saturating_duration_since(Instant::now()))
                });
                match Pin::new(timer).poll(cx) {
                    Poll::Ready(_) => Poll::Ready(Some(Err(BodyTimeout(this.timeout).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

async fn handle<B>(ctx: Rc<WsContext>, request: Request<B>) -> Response<Answer>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if request.method() == Method::GET {
        return json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}));
    }
    if request.method() != Method::POST {
        let error = response(
            Value::Null,
            Err(RpcError::invalid_request("use POST for JSON-RPC")),
        );
        return json_response(StatusCode::METHOD_NOT_ALLOWED, &error);
    }
    let limit = ctx.rpc.limits.body_bytes_max;
    let body = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let (status, message) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body too large: limit {limit} bytes"),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("cannot read request body: {e}"),
                )
            };
            return json_response(
                status,
                &response(Value::Null, Err(RpcError::invalid_request(message))),
            );
        }
    };
    let mut renderer = Renderer::new(
        ctx.rpc.limits.response_bytes_max,
        ctx.rpc.limits.batch_response_bytes_max,
    );
    let text = match parse_body(&body, ctx.rpc.limits.batch_max) {
        Err(e) => renderer.render(Value::Null, Err(e)),
        Ok(Body::Single(call)) => run(&ctx, call, &mut renderer, None).await,
        Ok(Body::Batch(calls)) => {
            let mut out = String::from("[");
            // The batch's simulations share one time and gas budget.
            let budget = BatchBudget::new(&ctx.rpc.limits);
            for (i, call) in calls.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&run(&ctx, call, &mut renderer, Some(&budget)).await);
            }
            out.push(']');
            out
        }
    };
    held_response(&ctx, text)
}

async fn run(
    ctx: &Rc<WsContext>,
    call: Result<crate::rpc::Call, (Value, RpcError)>,
    renderer: &mut Renderer,
    batch: Option<&BatchBudget>,
) -> String {
    match call {
        Err((id, e)) => renderer.render(id, Err(e)),
        Ok(call) => {
            let result = dispatch_in_batch(&ctx.rpc, &call.method, &call.params, batch).await;
            renderer.render(call.id, result)
        }
    }
}

/// An answer's bytes, counted on the node-wide budget of answers waiting
/// for their clients until hyper has written them (and drops them).
struct InFlight {
    text: Vec<u8>,
    held: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for InFlight {
    fn as_ref(&self) -> &[u8] {
        &self.text
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = self.held.fetch_sub(self.text.len(), Relaxed);
        assert!(before >= self.text.len(), "answers in flight went negative");
    }
}

/// The HTTP answer for `text`, or (for an answer over one chunk) 503 when
/// the answers already waiting for slow clients hold the node-wide budget (a client that does not read
/// holds at most one answer per connection: hyper answers a connection's
/// requests one at a time).
fn held_response(ctx: &WsContext, text: String) -> Response<Answer> {
    let held = &ctx.shared.responses_in_flight_bytes;
    let max = ctx.rpc.limits.responses_in_flight_bytes_max;
    let n = text.len();
    let before = held.fetch_add(n, Relaxed);
    // Small answers always go (counted): a connection may hold that much in
    // hyper's own write buffer anyway, and `eth_chainId` or a transaction
    // submission must not fail because others do not read big answers.
    if n > ANSWER_CHUNK_BYTES && before.saturating_add(n) > max {
        held.fetch_sub(n, Relaxed);
        let error = RpcError::busy(format!(
            "server busy: answers of {before} bytes are waiting for clients to read them, \
             node limit {max} bytes; the calls ran, only their {n}-byte answer was dropped: \
             re-read what they returned (a retry of a transaction gets `already known`)"
        ));
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &response(Value::Null, Err(error)),
        );
    }
    let body = Bytes::from_owner(InFlight {
        text: text.into_bytes(),
        held: held.clone(),
    });
    let mut reply = Response::new(Answer::new(body));
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn host_names_are_checked_and_ip_literals_pass() {
        let vhosts = vec!["localhost".to_string(), "rpc.example".to_string()];
        for host in [
            "localhost",
            "LocalHost:8545",
            "localhost.",
            "rpc.example:443",
            "127.0.0.1:8545",
            "10.1.2.3",
            "[::1]:8545",
        ] {
            assert!(host_allowed(host, &vhosts), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8545",
            "localhost.evil",
            "",
            "rpc.example:x",
        ] {
            assert!(!host_allowed(host, &vhosts), "{host}");
        }
        assert!(host_allowed("anything.example", &["*".to_string()]));
        assert!(!host_allowed("localhost", &[]));
    }

    #[test]
    fn an_answer_stays_counted_until_hyper_has_taken_all_of_it() {
        let held = Arc::new(AtomicUsize::new(0));
        let text = vec![b'x'; 3 * ANSWER_CHUNK_BYTES + 10];
        held.fetch_add(text.len(), Relaxed);
        let mut answer = Answer::new(Bytes::from_owner(InFlight {
            text,
            held: held.clone(),
        }));
        assert_eq!(
            hyper::body::Body::size_hint(&answer).exact(),
            Some(3 * ANSWER_CHUNK_BYTES as u64 + 10)
        );
        let mut chunks = Vec::new();
        while let Some(frame) = answer.frame().now_or_never().expect("ready") {
            let chunk = frame.expect("infallible").into_data().expect("data");
            assert!(chunk.len() <= ANSWER_CHUNK_BYTES);
            // Hyper copies each chunk into its buffer and drops it; the rest
            // is still held here.
            chunks.push(chunk.len());
            if !hyper::body::Body::is_end_stream(&answer) {
                assert!(held.load(Relaxed) > 0);
            }
        }
        assert_eq!(
            chunks,
            vec![
                ANSWER_CHUNK_BYTES,
                ANSWER_CHUNK_BYTES,
                ANSWER_CHUNK_BYTES,
                10
            ]
        );
        assert_eq!(held.load(Relaxed), 0, "given back once all was taken");
    }
}
