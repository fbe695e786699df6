//! The seq core's cross-core API: what net cores ask of the sequencer and
//! the state-root worker, and what they answer.

use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes, U256};
use futures::channel::oneshot;

use crate::block::{ExecutedTx, SealJob};
use crate::tx::RecoveredTx;

/// Why a transaction is parked rather than executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkReason {
    /// Its nonce is ahead of the sender's next nonce.
    NonceGap {
        /// The sender's next nonce.
        expected: u64,
    },
    /// It is next in line but will be executed in a later block (the open
    /// block is full, or it waits for its parent block's hash).
    Deferred,
}

/// What happened to a submitted transaction.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Executed and appended to the open mini-block.
    Executed(Arc<ExecutedTx>),
    /// Accepted but not yet executable.
    Parked(ParkReason),
}

/// A refused transaction; messages follow geth.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Seen before.
    #[error("already known")]
    AlreadyKnown,
    /// Nonce already used.
    #[error("nonce too low: next nonce {expected}, tx nonce {got}")]
    NonceTooLow {
        /// The sender's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// Cannot pay gas × price + value.
    #[error(
        "insufficient funds for gas * price + value: address {address} have {have} want {want}"
    )]
    InsufficientFunds {
        /// The sender.
        address: Address,
        /// Its balance.
        have: U256,
        /// The transaction's maximum cost.
        want: U256,
    },
    /// Its logs and state changes would take more of the log than one
    /// transaction may; nothing of it was applied.
    #[error(
        "transaction too large for the log: its logs and state changes take {bytes} bytes, limit {limit} bytes per transaction; nothing was applied"
    )]
    RecordTooLarge {
        /// Bytes its entry would take.
        bytes: usize,
        /// The per-transaction limit.
        limit: usize,
    },
    /// Fee cap below the current base fee.
    #[error(
        "max fee per gas less than block base fee: address {address}, maxFeePerGas: {max_fee}, baseFee: {base_fee}"
    )]
    FeeCapTooLow {
        /// The sender.
        address: Address,
        /// The transaction's fee cap.
        max_fee: u128,
        /// The open block's base fee.
        base_fee: u64,
    },
    /// Same nonce as a parked transaction without a 10% fee bump.
    #[error("replacement transaction underpriced")]
    ReplacementUnderpriced,
    /// The parking lot is full.
    #[error("txpool is full")]
    PoolFull,
    /// revm refused it.
    #[error("{0}")]
    Invalid(String),
    /// The log failed; the node preconfirms nothing until restarted.
    #[error(
        "the node stopped preconfirming after a storage failure ({0}); the transaction was not preconfirmed; retry once the node is back"
    )]
    Halted(String),
    /// The node is stopping (SIGTERM); what it acknowledged is being flushed.
    #[error("the node is shutting down; the transaction was not accepted; retry once it is back")]
    ShuttingDown,
}

/// An L2 block a verifier derived from L1: the seq core executes it as the
/// sequencer did (same timestamp, same txs in order) and must get the same
/// block.
#[derive(Debug)]
pub struct DerivedBlock {
    /// Its number.
    pub number: u64,
    /// Its timestamp, seconds.
    pub timestamp: u64,
    /// Its transactions, senders recovered, in block order.
    pub txs: Vec<RecoveredTx>,
    /// The header the sequencer sealed for it, when L1 carried one
    /// (`fulmen_da::commit`): the block is made visible only if this node
    /// computes the same header.
    pub expected: Option<alloy_consensus::Header>,
}

/// What a replica's upstream sent, checked and decoded by its follower
/// thread, in the upstream's log order.
// Moved once per record, through one bounded channel.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Upstream {
    /// A mini-block, applied from its record (its logged state changes,
    /// no re-execution).
    MiniBlock {
        /// The record.
        record: crate::persist::MiniBlockRecord,
        /// Its hash as the upstream computed it: the replica's must match.
        hash: alloy_primitives::B256,
    },
    /// A block's seal: the header this node's must equal.
    Seal(Box<crate::persist::SealRecord>),
}

/// What a net core asks of the sequencer.
#[derive(Debug)]
pub struct SeqRequest {
    /// The decoded, recovered transaction.
    pub tx: RecoveredTx,
    /// Where the answer goes.
    pub reply: oneshot::Sender<SeqReply>,
    /// Sync send: a transaction deferred to a later block is answered with
    /// its receipt once it runs, not with `Parked` at once.
    pub wait_for_receipt: bool,
}

/// The sequencer's answer, sent once the outcome is visible to readers.
#[derive(Debug)]
pub enum SeqReply {
    /// Preconfirmed: executed, in a closed mini-block, visible at `latest`.
    Preconfirmed(Arc<ExecutedTx>),
    /// Parked for a nonce gap.
    Parked(ParkReason),
    /// Refused.
    Rejected(SubmitError),
}

/// What the state-root worker is asked.
#[derive(Debug)]
pub enum MerkleRequest {
    /// Seal a closed block.
    Seal(SealJob),
    /// A proof at block `block`.
    Proof {
        /// Block whose state root the proof must match.
        block: u64,
        /// Account.
        address: Address,
        /// Storage slots.
        slots: Vec<B256>,
        /// Answer, or the block the trie is at when it cannot serve `block`.
        reply: oneshot::Sender<Result<AccountProof, u64>>,
    },
    /// The execution witness of block `block`, if kept.
    Witness {
        /// Block number.
        block: u64,
        /// Answer; `None` when not kept.
        reply: oneshot::Sender<Option<std::sync::Arc<crate::block::Witness>>>,
    },
}

/// Merkle proof of one account and some of its slots, as `eth_getProof` returns it.
#[derive(Debug, Clone)]
pub struct AccountProof {
    /// Nodes from the state root to the account.
    pub account_proof: Vec<Bytes>,
    /// The account's storage root.
    pub storage_root: B256,
    /// For each requested slot: the slot, its value and the nodes from the storage root.
    pub storage_proofs: Vec<(B256, U256, Vec<Bytes>)>,
}
/// Capacity of the control channel to the seq core. Control messages are
/// rare (a net core's first subscriber or its last unsubscribe, shutdown),
/// and each sender also has one guaranteed slot.
pub const SEQ_CONTROL_CAPACITY: usize = 64;

/// What the rest of the node tells the seq core, apart from transactions.
#[derive(Debug)]
pub enum SeqControl {
    /// Net core `core` now has subscribers (`any`), or none. The seq core
    /// builds subscription events only while some net core has subscribers.
    Subscribers {
        /// The net core's index.
        core: usize,
        /// Whether it has any subscription.
        any: bool,
        /// Where the seq core notes, with this report's `generation`, the
        /// first mini-block it builds events for from now on (`u64::MAX`
        /// when `any` is false): a subscription resuming from the log goes
        /// live only from there, never at a mini-block that closed before
        /// the seq core read the core's latest report.
        events_from: std::sync::Arc<std::sync::Mutex<(u64, u64)>>,
        /// The report's number, from the net core's count.
        generation: u64,
    },
    /// The DA batcher's view of L1: the L2 blocks L1 vouches for. Published
    /// with the next release of the chain view (the next mini-block or seal,
    /// within a block time).
    DaHeads(crate::view::DaHeads),
    /// A DA-progress record to log (the bytes are the DA crate's); `durable`
    /// is answered once the record is durable, in every durability mode
    /// (the batcher logs what it will send before it sends it). Dropped
    /// unanswered if the log fails.
    DaRecord {
        /// The record's payload.
        payload: Vec<u8>,
        /// Answered when it is durable.
        durable: futures::channel::oneshot::Sender<()>,
    },
    /// The DA records logged so far, compacted by the batcher (the DA
    /// crate's bytes, in order): checkpoint markers carry these from now
    /// on instead of every record ever logged.
    DaCompacted(Vec<Vec<u8>>),
    /// Stop taking transactions (they are refused with "shutting down"),
    /// close the open mini-block, and answer on `drained` once every log
    /// record sent is durable, so that nothing acknowledged is lost.
    Stop {
        /// Where the answer goes.
        drained: std::sync::mpsc::SyncSender<Drained>,
    },
}

/// The seq core's answer to [`SeqControl::Stop`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drained {
    /// Every record sent to the log is durable (or the node keeps no log).
    Flushed,
    /// The log had failed; what was acknowledged before the failure is durable.
    Halted(String),
}
