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
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::io::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use serde_json::Value;

use crate::eth::{NetContext, dispatch_in_batch};
use crate::rpc::{Body, RpcError, parse_body, response};

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

type Reply = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>>>>;

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

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(ctx: Rc<NetContext>, request: Request<Incoming>) -> Response<Full<Bytes>> {
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
    let reply = match parse_body(&body, ctx.limits.batch_max) {
        Err(e) => response(Value::Null, Err(e)),
        Ok(Body::Single(call)) => run(&ctx, call, None).await,
        Ok(Body::Batch(calls)) => {
            let mut out = Vec::with_capacity(calls.len());
            // The batch's simulations share one time and gas budget.
            let budget = crate::sim::BatchBudget::new(&ctx.limits);
            for call in calls {
                out.push(run(&ctx, call, Some(&budget)).await);
            }
            Value::Array(out)
        }
    };
    json_response(StatusCode::OK, &reply)
}

async fn run(
    ctx: &Rc<NetContext>,
    call: Result<crate::rpc::Call, (Value, RpcError)>,
    batch: Option<&crate::sim::BatchBudget>,
) -> Value {
    match call {
        Err((id, e)) => response(id, Err(e)),
        Ok(call) => {
            let result = dispatch_in_batch(ctx, &call.method, &call.params, batch).await;
            response(call.id, result)
        }
    }
}
