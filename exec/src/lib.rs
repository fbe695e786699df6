//! fulmen exec: the sequencer.
//!
//! Transaction validation and sender recovery ([`tx`], run on net cores),
//! revm execution over the hot state, mini-blocks and blocks, and the
//! incrementally maintained Merkle Patricia state trie ([`trie`], [`merkle`]).

pub mod block;
pub mod chain;
pub mod events;
pub mod evm;
pub mod merkle;
pub mod metrics;
pub mod persist;
pub mod recover;
pub mod seq_core;
pub mod sequencer;
#[cfg(test)]
mod testkit;
pub mod trie;
pub mod tx;
