//! Chain events for subscriptions. The seq core publishes each event once,
//! when the record behind it is durable (in `memory` mode: when it ran), to
//! every net core over its own bounded channel; the net cores fan them out to
//! their WebSocket subscribers.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use alloy_primitives::B256;
use fulmen_storage::StateDiff;
use glommio::channels::shared_channel::ConnectedSender;

use crate::block::{ExecutedTx, SealedBlock};
use crate::metrics::METRICS;
pub use crate::mini_block::{NetChanges, mini_block_hash};

/// Events each net core's channel holds before the seq core drops events for
/// that core (the net core then sees the gap and disconnects its
/// subscribers rather than skip anything): 4096 mini-blocks are 40 s of
/// 10 ms mini-blocks.
pub const EVENT_QUEUE_CAPACITY: usize = 4096;

/// A durable mini-block: what `miniBlocks`, `logs`, `newPendingTransactions`
/// and `stateChanges` subscribers see.
#[derive(Debug)]
pub struct MiniBlockEvent {
    /// Global mini-block number.
    pub number: u64,
    /// Block it belongs to.
    pub block: u64,
    /// That block's timestamp, in seconds.
    pub block_timestamp: u64,
    /// Position of this mini-block in its block, from 0.
    pub index: u64,
    /// When it closed, in microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Gas used by its transactions.
    pub gas_used: u64,
    /// Its transactions in order.
    pub txs: Vec<Arc<ExecutedTx>>,
    /// Each transaction's state changes, in order.
    pub diffs: Vec<StateDiff>,
    /// What the diffs wrote but did not change (`stateChanges` reports only
    /// what really changed).
    pub net: NetChanges,
    /// The previous mini-block's [`mini_block_hash`] (zero before the first,
    /// and for mini-blocks logged by builds before format version 3).
    pub parent_hash: B256,
    /// This mini-block's [`mini_block_hash`].
    pub hash: B256,
    /// Its block's context (what a replica's copy of its record needs).
    pub ctx: crate::block::BlockContext,
}

/// One event.
#[derive(Debug, Clone)]
pub enum ChainEvent {
    /// A mini-block became durable.
    MiniBlock(Arc<MiniBlockEvent>),
    /// A block's seal became durable (`newHeads`).
    Sealed(Arc<SealedBlock>),
}

/// An event with its place in the node's event sequence, so that a net core
/// can tell when it missed one.
#[derive(Debug, Clone)]
pub struct Published {
    /// Position: 0, 1, 2, ... with no gaps in what the seq core published.
    pub position: u64,
    /// The event.
    pub event: ChainEvent,
}

/// The seq core's side: one bounded sender per net core.
pub struct EventBus {
    cores: Vec<ConnectedSender<Published>>,
    next: u64,
}

impl EventBus {
    /// A bus to these net cores.
    pub fn new(cores: Vec<ConnectedSender<Published>>) -> Self {
        Self { cores, next: 0 }
    }

    /// A bus to nobody (tests, tools).
    pub fn none() -> Self {
        Self::new(Vec::new())
    }

    /// Publishes `event` to every net core without waiting: a net core whose
    /// channel is full misses it (and will see the gap).
    pub fn publish(&mut self, event: ChainEvent) {
        let position = self.next;
        self.next += 1;
        for core in &self.cores {
            let published = Published {
                position,
                event: event.clone(),
            };
            if core.try_send(published).is_err() {
                METRICS.events_dropped.fetch_add(1, Relaxed);
            }
        }
    }
}
