//! fulmen netio: JSON-RPC over HTTP and WebSocket on glommio (hyper 1.x,
//! tungstenite), the `eth_` methods, and `eth_subscribe` subscriptions fed
//! by the seq core's durable events.

mod answer;
pub mod convert;
pub mod eth;
mod limits;
pub mod notify;
mod outbox;
pub mod pubsub;
pub mod resume;
pub mod rpc;
pub mod server;
pub mod sim;
pub mod ws;
