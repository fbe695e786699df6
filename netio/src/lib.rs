//! fulmen netio: JSON-RPC over HTTP on glommio (hyper 1.x), the `eth_`
//! methods, and (later) WebSocket subscriptions.

pub mod convert;
pub mod eth;
pub mod rpc;
pub mod server;
