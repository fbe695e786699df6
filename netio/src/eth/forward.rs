//! A verifier's `eth_sendRawTransaction(Sync)`: forwarded to the sequencer
//! (`--sequencer-url`), as OP nodes forward to theirs, and its answer
//! relayed as it is (result, or its JSON-RPC error).
//!
//! The call blocks, so it runs on a short-lived thread while the net core
//! awaits it; at most [`FORWARDS_IN_FLIGHT_MAX`] at once (then "busy"), each
//! bounded by [`FORWARD_TIMEOUT_MS`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy_primitives::Bytes;
use serde_json::{Value, json};

use crate::rpc::RpcError;

/// Forwards in flight, node-wide.
pub const FORWARDS_IN_FLIGHT_MAX: usize = 64;
/// Timeout of one forward, whole exchange.
pub const FORWARD_TIMEOUT_MS: u64 = 10_000;
/// Largest answer read from the sequencer.
const ANSWER_BYTES_MAX: u64 = 1 << 20;

/// The sequencer a verifier forwards transactions to.
#[derive(Debug)]
pub struct Forwarder {
    url: String,
    agent: ureq::Agent,
    in_flight: AtomicUsize,
}

impl Forwarder {
    /// A forwarder to the JSON-RPC endpoint at `url`.
    pub fn new(url: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(FORWARD_TIMEOUT_MS)))
            .http_status_as_error(false)
            .build();
        Self {
            url: url.to_string(),
            agent: config.into(),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Sends `raw` with `method` to the sequencer; its answer.
    pub async fn send(
        self: &Arc<Self>,
        method: &'static str,
        raw: Bytes,
    ) -> Result<Value, RpcError> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= FORWARDS_IN_FLIGHT_MAX {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(RpcError::busy(
                "server busy: too many transactions are being forwarded to the sequencer",
            ));
        }
        let (answer, answered) = futures::channel::oneshot::channel();
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("fulmen-forward".into())
            .spawn(move || {
                let _ = answer.send(me.post(method, &raw));
                me.in_flight.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(RpcError::internal(
                "cannot start a thread to forward the transaction",
            ));
        }
        answered
            .await
            .map_err(|_| RpcError::internal("the forward to the sequencer was lost"))?
    }

    fn post(&self, method: &str, raw: &Bytes) -> Result<Value, RpcError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            RpcError::server(format!(
                "this node is a verifier and the sequencer it forwards to did not answer: {e}"
            ))
        };
        let body =
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": [raw]}).to_string();
        let mut response = self
            .agent
            .post(&self.url)
            .header("content-type", "application/json")
            .send(body)
            .map_err(|e| unreachable(&e))?;
        let text = response
            .body_mut()
            .with_config()
            .limit(ANSWER_BYTES_MAX)
            .read_to_string()
            .map_err(|e| unreachable(&e))?;
        let answer: Value = serde_json::from_str(&text).map_err(|e| unreachable(&e))?;
        if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
            return Err(RpcError {
                code: error.get("code").and_then(Value::as_i64).unwrap_or(-32000),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the sequencer refused the transaction")
                    .to_string(),
                data: error.get("data").cloned(),
            });
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| unreachable(&"an answer with neither result nor error"))
    }
}
