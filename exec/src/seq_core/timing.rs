//! The seq core's clock and bounds: a leaf module the other parts share.

use std::time::{SystemTime, UNIX_EPOCH};

/// Most transactions one mini-block takes before it closes, so that sealing
/// and replies never wait behind an unbounded drain.
pub const MINI_BLOCK_TXS_MAX: usize = 4096;

/// Timing of the sequencer.
#[derive(Debug, Clone, Copy)]
pub struct SeqTiming {
    /// Block time.
    pub block_time_ms: u64,
    /// Longest a mini-block stays open while transactions keep arriving.
    pub mini_block_max_ms: u64,
    /// Group commit under load: longest a mini-block waits for more
    /// transactions once the log is idle, while they arrive densely (0:
    /// never waits).
    pub group_commit_us: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Records the seq role may have sent and not yet seen durable. Past this,
/// the open mini-block keeps growing instead of closing, and then the seq
/// stops reading its inboxes (the net cores answer "inbox full").
pub const LOG_RECORDS_IN_FLIGHT_MAX: u64 = 64;

/// Capacity of the seq → storage channel: the in-flight bound plus room for
/// block seals and the mini-blocks a block close forces.
pub const STORAGE_QUEUE_CAPACITY: usize = LOG_RECORDS_IN_FLIGHT_MAX as usize + 64;

/// How far ahead of this node's clock a block timestamp from outside (a
/// verifier's derived block, a replica's upstream) may be.
pub(super) const TIMESTAMP_AHEAD_MAX_S: u64 = 3600;
