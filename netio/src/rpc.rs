//! JSON-RPC 2.0 framing: parsing single and batch requests, error objects,
//! and typed parameter extraction with errors that name the parameter.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// Error code (geth's codes).
    pub code: i64,
    /// Human-readable message.
    pub message: String,
    /// Optional data (revert data, tx hash on timeout, ...).
    pub data: Option<Value>,
}

impl RpcError {
    /// -32700: the body is not JSON.
    pub fn parse(detail: impl std::fmt::Display) -> Self {
        Self {
            code: -32700,
            message: format!("parse error: {detail}"),
            data: None,
        }
    }
    /// -32600: not a valid request object.
    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self {
            code: -32600,
            message: detail.into(),
            data: None,
        }
    }
    /// -32601: unknown method.
    pub fn method_not_found(method: &str) -> Self {
        Self {
            code: -32601,
            message: format!("the method {method} does not exist/is not available"),
            data: None,
        }
    }
    /// -32602: bad parameters.
    pub fn invalid_params(detail: impl Into<String>) -> Self {
        Self {
            code: -32602,
            message: detail.into(),
            data: None,
        }
    }
    /// -32000: server-side refusal (geth uses this for txpool and state errors).
    pub fn server(message: impl Into<String>) -> Self {
        Self {
            code: -32000,
            message: message.into(),
            data: None,
        }
    }
    /// -32603: internal error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            code: -32603,
            message: message.into(),
            data: None,
        }
    }

    /// -32020 (MegaETH's code): the answer is larger than the response
    /// budget. `bytes` is its full size, or with `stopped_early` the size
    /// reached when building stopped (the full answer is larger still).
    pub fn response_too_large(bytes: usize, limit: usize, stopped_early: bool) -> Self {
        let more = if stopped_early { "more than " } else { "" };
        Self {
            code: RESPONSE_TOO_LARGE_CODE,
            message: format!(
                "response too large: {more}{bytes} bytes, limit {limit} bytes; \
                 narrow the request (fewer blocks, a tighter filter, smaller batches)"
            ),
            data: None,
        }
    }
    /// -32005 (EIP-1474 "limit exceeded"): a node-wide budget is spent for
    /// now; the request may succeed later.
    pub fn busy(message: impl Into<String>) -> Self {
        Self {
            code: LIMIT_EXCEEDED_CODE,
            message: message.into(),
            data: None,
        }
    }

    /// The JSON error object.
    pub fn to_json(&self) -> Value {
        match &self.data {
            Some(data) => json!({"code": self.code, "message": self.message, "data": data}),
            None => json!({"code": self.code, "message": self.message}),
        }
    }
}

/// MegaETH's code for an answer over the response byte budget.
pub const RESPONSE_TOO_LARGE_CODE: i64 = -32020;
/// EIP-1474's "limit exceeded".
pub const LIMIT_EXCEEDED_CODE: i64 = -32005;

/// One parsed call.
#[derive(Debug)]
pub struct Call {
    /// Request id (echoed back).
    pub id: Value,
    /// Method name.
    pub method: String,
    /// Positional parameters.
    pub params: Params,
    /// No id was given: a JSON-RPC notification, which gets no response
    /// (over WebSocket; HTTP always answers).
    pub notification: bool,
}

/// Positional parameters with named extraction.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<Value>);

impl Params {
    /// Required parameter `index`, called `name` in errors.
    pub fn required<T: DeserializeOwned>(&self, index: usize, name: &str) -> Result<T, RpcError> {
        match self.0.get(index) {
            None | Some(Value::Null) => Err(RpcError::invalid_params(format!(
                "missing value for required argument {index} ({name})"
            ))),
            Some(value) => decode(value, index, name),
        }
    }

    /// Optional parameter; absent or null gives `None`.
    pub fn optional<T: DeserializeOwned>(
        &self,
        index: usize,
        name: &str,
    ) -> Result<Option<T>, RpcError> {
        match self.0.get(index) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => decode(value, index, name).map(Some),
        }
    }

    /// Errors when more than `max` parameters were given.
    pub fn at_most(&self, max: usize) -> Result<(), RpcError> {
        if self.0.len() > max {
            return Err(RpcError::invalid_params(format!(
                "too many arguments, want at most {max}"
            )));
        }
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(value: &Value, index: usize, name: &str) -> Result<T, RpcError> {
    T::deserialize(value)
        .map_err(|e| RpcError::invalid_params(format!("invalid argument {index} ({name}): {e}")))
}

/// A request body: one call or a batch. Items that fail to parse carry their error.
#[derive(Debug)]
pub enum Body {
    /// A single call.
    Single(Result<Call, (Value, RpcError)>),
    /// A batch.
    Batch(Vec<Result<Call, (Value, RpcError)>>),
}

/// Parses a request body, enforcing the batch limit.
pub fn parse_body(bytes: &[u8], batch_max: usize) -> Result<Body, RpcError> {
    let value: Value = serde_json::from_slice(bytes).map_err(RpcError::parse)?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(RpcError::invalid_request("empty batch"));
            }
            if items.len() > batch_max {
                return Err(RpcError::invalid_request(format!(
                    "batch too large: {} requests, limit {batch_max}",
                    items.len()
                )));
            }
            Ok(Body::Batch(items.into_iter().map(parse_call).collect()))
        }
        other => Ok(Body::Single(parse_call(other))),
    }
}

fn parse_call(value: Value) -> Result<Call, (Value, RpcError)> {
    let Value::Object(mut object) = value else {
        return Err((
            Value::Null,
            RpcError::invalid_request("invalid request: not a JSON object"),
        ));
    };
    let notification = !object.contains_key("id");
    let id = object.remove("id").unwrap_or(Value::Null);
    if !matches!(id, Value::Null | Value::Number(_) | Value::String(_)) {
        return Err((
            Value::Null,
            RpcError::invalid_request("invalid request: id must be a number, string or null"),
        ));
    }
    if let Some(version) = object.get("jsonrpc")
        && version != "2.0"
    {
        return Err((
            id,
            RpcError::invalid_request("invalid request: jsonrpc must be \"2.0\""),
        ));
    }
    let method = match object.remove("method") {
        Some(Value::String(method)) => method,
        _ => {
            return Err((
                id,
                RpcError::invalid_request("invalid request: method must be a string"),
            ));
        }
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => Params::default(),
        Some(Value::Array(items)) => Params(items),
        Some(_) => return Err((id, RpcError::invalid_params("params must be an array"))),
    };
    Ok(Call {
        id,
        method,
        params,
        notification,
    })
}

/// A response object.
pub fn response(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error.to_json()}),
    }
}

/// Counts the bytes written to it, and keeps them only up to `keep_max`, so
/// that an answer over its budget is measured without being held.
struct Capped {
    out: Vec<u8>,
    keep_max: usize,
    bytes: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len();
        if self.bytes <= self.keep_max {
            self.out.extend_from_slice(buf);
        } else if !self.out.is_empty() {
            self.out = Vec::new();
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The JSON size of `value`, without rendering it.
pub fn json_bytes<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = Capped {
        out: Vec::new(),
        keep_max: 0,
        bytes: 0,
    };
    // Writing to memory cannot fail, and our types always serialize.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.bytes
}

/// Counts an answer's JSON bytes while it is built, so that building stops
/// as soon as it cannot fit the response budget (instead of rendering a
/// huge answer and then refusing it).
#[derive(Debug)]
pub struct ByteBudget {
    bytes: usize,
    bytes_max: usize,
}

impl ByteBudget {
    /// An empty answer with room for `bytes_max` bytes.
    pub fn new(bytes_max: usize) -> Self {
        Self {
            bytes: 0,
            bytes_max,
        }
    }

    /// Counts `item` (and the comma after it); -32020 once over the budget.
    pub fn add<T: serde::Serialize + ?Sized>(&mut self, item: &T) -> Result<(), RpcError> {
        self.bytes += json_bytes(item) + 1;
        if self.bytes > self.bytes_max {
            return Err(RpcError::response_too_large(
                self.bytes,
                self.bytes_max,
                true,
            ));
        }
        Ok(())
    }
}

/// Renders the responses of one request within the byte budgets: each
/// response at most `response_bytes_max`, and all responses of a batch
/// together at most `batch_bytes_max`. A response over its budget is
/// replaced by the -32020 error (same id); in a batch, each call whose
/// response would take the batch answer past its budget gets the error, and
/// later calls that still fit keep their results. (The error objects
/// themselves always go in: at most ~200 bytes per call.)
#[derive(Debug)]
pub struct Renderer {
    response_bytes_max: usize,
    batch_bytes_max: usize,
    batch_bytes: usize,
}

impl Renderer {
    /// A renderer for one request body.
    pub fn new(response_bytes_max: usize, batch_bytes_max: usize) -> Self {
        Self {
            response_bytes_max,
            batch_bytes_max,
            batch_bytes: 0,
        }
    }

    /// The response text for `id`: the result, or the error in its place.
    pub fn render(&mut self, id: Value, result: Result<Value, RpcError>) -> String {
        let room = self.batch_bytes_max.saturating_sub(self.batch_bytes);
        let keep_max = self.response_bytes_max.min(room);
        let mut out = Capped {
            out: Vec::new(),
            keep_max,
            bytes: 0,
        };
        let rendered = serde_json::to_writer(&mut out, &response(id.clone(), result));
        let text = match rendered {
            Ok(()) if out.bytes <= keep_max => String::from_utf8(out.out).ok(),
            _ => None,
        };
        if let Some(text) = text {
            self.batch_bytes += text.len() + 1;
            return text;
        }
        let error = if out.bytes > self.response_bytes_max {
            RpcError::response_too_large(out.bytes, self.response_bytes_max, false)
        } else if rendered.is_err() {
            RpcError::internal("cannot encode the response")
        } else {
            let mut error = RpcError::response_too_large(out.bytes, room, false);
            error.message.push_str(&format!(
                " (room left in this batch's answer, whose limit is {} bytes)",
                self.batch_bytes_max
            ));
            error
        };
        let text = response(id, Err(error)).to_string();
        self.batch_bytes += text.len() + 1;
        text
    }
}

/// A batch answer from its rendered responses.
pub fn join_batch(items: &[String]) -> String {
    let mut out = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_bodies_get_the_right_codes() {
        assert_eq!(parse_body(b"{not json", 10).unwrap_err().code, -32700);
        assert_eq!(parse_body(b"[]", 10).unwrap_err().code, -32600);
        assert_eq!(parse_body(b"[1,2,3]", 2).unwrap_err().code, -32600);
        let Body::Single(Err((_, e))) = parse_body(br#"{"id":1,"method":5}"#, 10).unwrap() else {
            panic!()
        };
        assert_eq!(e.code, -32600);
        let Body::Single(Err((_, e))) =
            parse_body(br#"{"id":1,"method":"x","params":{}}"#, 10).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.code, -32602);
        let Body::Batch(items) = parse_body(br#"[{"id":1,"method":"a"},7]"#, 10).unwrap() else {
            panic!()
        };
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
    }

    #[test]
    fn parameter_errors_name_the_parameter() {
        let params = Params(vec![json!("0x12")]);
        let err = params
            .required::<alloy_primitives::Address>(0, "address")
            .unwrap_err();
        assert_eq!(err.code, -32602);
        assert!(
            err.message.contains("argument 0 (address)"),
            "{}",
            err.message
        );
        let err = params.required::<u64>(1, "block").unwrap_err();
        assert!(
            err.message
                .contains("missing value for required argument 1 (block)")
        );
        assert_eq!(params.optional::<u64>(3, "x").unwrap(), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b"{}[]\",:0123456789abcdefxnull truejsonrpcmethodparamsid"[(seed % 54) as usize]
                })
                .collect();
            let _ = parse_body(&bytes, 100);
        }
    }

    #[test]
    fn answers_over_the_byte_budgets_become_errors() {
        let big = json!("x".repeat(1000));
        let mut single = Renderer::new(500, 10_000);
        let text = single.render(json!(7), Ok(big.clone()));
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["id"], json!(7));
        assert_eq!(value["error"]["code"], json!(RESPONSE_TOO_LARGE_CODE));
        let message = value["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("response too large: 1036 bytes, limit 500 bytes"),
            "{message}"
        );
        assert_eq!(json_bytes(&response(json!(7), Ok(big.clone()))), 1036);
        // A small answer passes untouched.
        let ok = single.render(json!(8), Ok(json!("0x1")));
        assert_eq!(ok, r#"{"id":8,"jsonrpc":"2.0","result":"0x1"}"#);

        // A batch: the call that would pass the batch budget gets the error,
        // a later one that fits keeps its result.
        let mut batch = Renderer::new(5_000, 2_500);
        let first = batch.render(json!(1), Ok(big.clone()));
        let second = batch.render(json!(2), Ok(big.clone()));
        let third = batch.render(json!(3), Ok(json!("0x1")));
        let value: Value = serde_json::from_str(&join_batch(&[first, second, third])).unwrap();
        assert!(value[0].get("result").is_some());
        assert!(value[1].get("result").is_some());
        // Two results of ~1 KB are in; the third big one would not fit.
        let mut batch = Renderer::new(5_000, 2_500);
        let mut items: Vec<String> = (0..3)
            .map(|i| batch.render(json!(i), Ok(big.clone())))
            .collect();
        items.push(batch.render(json!(9), Ok(json!("0x1"))));
        let value: Value = serde_json::from_str(&join_batch(&items)).unwrap();
        assert!(value[1].get("result").is_some());
        assert_eq!(value[2]["error"]["code"], json!(RESPONSE_TOO_LARGE_CODE));
        assert!(
            value[2]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("whose limit is 2500 bytes"),
            "{value}"
        );
        assert_eq!(value[3]["result"], json!("0x1"));

        // Building stops once over the budget.
        let mut budget = ByteBudget::new(100);
        budget.add("a").unwrap();
        let e = budget.add(&"b".repeat(200)).unwrap_err();
        assert_eq!(e.code, RESPONSE_TOO_LARGE_CODE);
        assert!(
            e.message.contains("more than 207 bytes, limit 100 bytes"),
            "{}",
            e.message
        );
    }
}
