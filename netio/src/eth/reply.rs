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

/// The error of a block older than the oldest one this node keeps
/// (`storage.history = "recent"`): geth's message and EIP-4444's code, the
/// oldest block kept in `data`.
pub(crate) fn pruned(view: &fulmen_chain::view::ChainView) -> RpcError {
    let oldest = view.oldest_block();
    RpcError {
        code: 4444,
        message: "pruned history unavailable".into(),
        data: Some(serde_json::json!({
            "oldestBlock": format!("{oldest:#x}"),
            "detail": format!(
                "this node keeps blocks from {oldest} on (storage.history = \"recent\"); ask an archive node"
            ),
        })),
    }
}

/// `Err(pruned)` when sealed block `number` was pruned.
pub(crate) fn check_not_pruned(
    view: &fulmen_chain::view::ChainView,
    number: u64,
) -> Result<(), RpcError> {
    if view.pruned(number) {
        return Err(pruned(view));
    }
    Ok(())
}
