//! fulmen exec: the engine.
//!
//! revm execution over the hot state ([`evm`]), the RPC's simulation entry
//! point ([`simulate`]), the sequencer's pool and
//! mini-blocks ([`sequencer`]), the seq core and state-root roles
//! ([`seq_core`]), the incrementally maintained Merkle Patricia state trie
//! ([`trie`], [`merkle`], [`seal`]), boot replay ([`recover`]) and the boot
//! policy over the log and the checkpoints ([`boot`]). The data model it
//! works on is `fulmen-chain`.

pub mod boot;
pub mod evm;
pub mod merkle;
pub mod precompiles;
pub mod recover;
pub mod seal;
pub mod seq_core;
pub mod sequencer;
pub mod simulate;
#[cfg(test)]
mod testkit;
pub mod trace;
pub mod trie;
