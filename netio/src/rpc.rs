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

    /// The JSON error object.
    pub fn to_json(&self) -> Value {
        match &self.data {
            Some(data) => json!({"code": self.code, "message": self.message, "data": data}),
            None => json!({"code": self.code, "message": self.message}),
        }
    }
}

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
#[derive(Debug, Default)]
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
}
