//! HTTP JSON-RPC on hyper 1.x over glommio's TCP, one accept loop per net
//! core; WebSocket upgrades on the same port go to [`crate::ws`]. The
//! listening socket sets SO_REUSEPORT, so several net cores can bind the
//! same address and the kernel spreads connections among them.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::io::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};
use http_body_util::{BodyExt, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use serde_json::Value;

use crate::eth::{NetContext, dispatch};
use crate::rpc::{Body, Renderer, RpcError, parse_body, response};

/// Most open connections per net core.
pub const CONNECTIONS_PER_CORE_MAX: usize = 4096;

/// Bytes read from a socket per poll.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Adapts a glommio stream to hyper's IO traits.
struct HyperIo(TcpStream);

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
        match Pin::new(&mut self.0).poll_read(cx, &mut chunk[..room]) {
            Poll::Ready(Ok(n)) => {
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
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// Accepts connections on `listener` and serves them until the task is dropped.
pub async fn serve(listener: TcpListener, ctx: Rc<NetContext>) {
    let open = Rc::new(std::cell::Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= CONNECTIONS_PER_CORE_MAX {
            tracing::warn!(
                limit = CONNECTIONS_PER_CORE_MAX,
                "connection limit reached; refusing a connection"
            );
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.set(open.get() + 1);
        let ctx = ctx.clone();
        let open = open.clone();
        glommio::spawn_local(async move {
            serve_connection(ctx, stream).await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}

type Reply = Pin<Box<dyn Future<Output = Result<Response<Answer>, Infallible>>>>;

/// Serves HTTP on one connection; after a WebSocket upgrade, the socket
/// goes to the WebSocket server.
async fn serve_connection(ctx: Rc<NetContext>, stream: TcpStream) {
    let upgraded = Rc::new(Cell::new(false));
    let service = {
        let ctx = ctx.clone();
        let upgraded = upgraded.clone();
        service_fn(move |request| -> Reply {
            let ctx = ctx.clone();
            let upgraded = upgraded.clone();
            Box::pin(async move {
                if crate::ws::wants_upgrade(&request) && !upgraded.get() {
                    return Ok(crate::ws::accept(&ctx, &request, &upgraded));
                }
                Ok(handle(ctx, request).await)
            })
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(1 << 20)
        .serve_connection(HyperIo(stream), service);
    // Not `with_upgrades`: that needs a `Send` socket, and glommio's is not.
    // `without_shutdown` hands the socket back once the 101 is written.
    match connection.without_shutdown().await {
        Ok(parts) if upgraded.get() => {
            crate::ws::serve(ctx, parts.io.0, parts.read_buf).await;
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

fn json_response(status: StatusCode, body: &Value) -> Response<Answer> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Answer::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(ctx: Rc<NetContext>, request: Request<Incoming>) -> Response<Answer> {
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
    let limit = ctx.limits.body_bytes_max;
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
        ctx.limits.response_bytes_max,
        ctx.limits.batch_response_bytes_max,
    );
    let text = match parse_body(&body, ctx.limits.batch_max) {
        Err(e) => renderer.render(Value::Null, Err(e)),
        Ok(Body::Single(call)) => run(&ctx, call, &mut renderer).await,
        Ok(Body::Batch(calls)) => {
            let mut out = String::from("[");
            for (i, call) in calls.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&run(&ctx, call, &mut renderer).await);
            }
            out.push(']');
            out
        }
    };
    held_response(&ctx, text)
}

async fn run(
    ctx: &Rc<NetContext>,
    call: Result<crate::rpc::Call, (Value, RpcError)>,
    renderer: &mut Renderer,
) -> String {
    match call {
        Err((id, e)) => renderer.render(id, Err(e)),
        Ok(call) => {
            let result = dispatch(ctx, &call.method, &call.params).await;
            renderer.render(call.id, result)
        }
    }
}

/// An HTTP answer body, handed to hyper in chunks: hyper copies each chunk
/// into its own write buffer (bounded by `max_buf_size`) only when that has
/// room, so an answer a client does not read stays here, counted, instead
/// of being copied whole into hyper's buffer.
pub(crate) struct Answer {
    rest: Bytes,
}

/// Bytes per chunk of an answer.
const ANSWER_CHUNK_BYTES: usize = 64 * 1024;

impl Answer {
    pub(crate) fn new(bytes: Bytes) -> Self {
        Self { rest: bytes }
    }
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.rest.len().min(ANSWER_CHUNK_BYTES);
        let chunk = self.rest.split_to(n);
        Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.rest.len() as u64)
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
fn held_response(ctx: &NetContext, text: String) -> Response<Answer> {
    let held = &ctx.ws_shared.responses_in_flight_bytes;
    let max = ctx.limits.responses_in_flight_bytes_max;
    let n = text.len();
    let before = held.fetch_add(n, Relaxed);
    // Small answers always go (counted): a connection may hold that much in
    // hyper's own write buffer anyway, and `eth_chainId` or a transaction
    // submission must not fail because others do not read big answers.
    if n > ANSWER_CHUNK_BYTES && before.saturating_add(n) > max {
        held.fetch_sub(n, Relaxed);
        let error = RpcError::busy(format!(
            "server busy: answers of {before} bytes are waiting for clients to read them, \
             node limit {max} bytes; retry shortly"
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
