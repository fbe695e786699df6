//! The helpers every method module shares to answer (a leaf: it imports
//! no other method module).

use serde_json::Value;

use crate::rpc::RpcError;

/// A method's result as JSON.
pub(crate) fn ok<T: serde::Serialize>(value: T) -> Result<Value, RpcError> {
    serde_json::to_value(value)
        .map_err(|e| RpcError::internal(format!("cannot encode result: {e}")))
}

/// The error of a block (or its state) this node does not have.
pub(crate) fn header_not_found() -> RpcError {
    RpcError::server("header not found")
}
