//! HTTP answers: the chunked body hyper writes, and the JSON answers the
//! HTTP server and the WebSocket upgrade both send.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::{Response, StatusCode, header};
use serde_json::Value;

use crate::rpc::{RpcError, response};

/// An HTTP answer body, handed to hyper in chunks: hyper copies each chunk
/// into its own write buffer (bounded by `max_buf_size`) only when that has
/// room, so an answer a client does not read stays here, counted, instead
/// of being copied whole into hyper's buffer.
pub(crate) struct Answer {
    rest: Bytes,
}

/// Bytes per chunk of an answer.
pub(crate) const ANSWER_CHUNK_BYTES: usize = 64 * 1024;

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

/// `body` as a JSON answer with `status`.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Answer> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Answer::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A refused request: `status` with a JSON-RPC invalid-request error (null
/// id) carrying `message`.
pub(crate) fn error_response(status: StatusCode, message: String) -> Response<Answer> {
    json_response(
        status,
        &response(Value::Null, Err(RpcError::invalid_request(message))),
    )
}
