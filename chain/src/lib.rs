//! fulmen chain: the data model and the cross-core API.
//!
//! Everything the roles exchange lives here, so that a role depends on what
//! it reads and sends, not on the engine that produces it:
//! - [`spec`]: the chain spec, its constants and genesis;
//! - [`tx`]: stateless transaction validation and sender recovery (net cores);
//! - [`block`]: block context, executed transactions, sealed and unsealed
//!   blocks, header building;
//! - [`view`]: the consistent [`view::ChainView`] readers use;
//! - [`events`]: what subscriptions see;
//! - [`persist`]: the payloads of the log's mini-block and seal records;
//! - [`msg`]: the seq core's requests and replies;
//! - [`metrics`]: node-wide counters (observe only).
//!
//! The engine (revm, the trie, the sequencer and its core) is `fulmen-exec`.

pub mod block;
pub mod da_figures;
pub mod events;
pub mod header_diff;
pub mod history;
pub mod metrics;
pub mod mini_block;
pub mod msg;
pub mod persist;
pub mod preinstalls;
pub mod replication;
pub mod resume;
pub mod spec;
pub mod tx;
pub mod view;

pub use fulmen_storage::{AccountState, HotState, StateDiff};
