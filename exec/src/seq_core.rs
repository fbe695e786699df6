//! The seq and state-root roles as glommio tasks, and the messages other
//! cores exchange with them. Every channel is bounded.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy_primitives::{Address, B256};
use arc_swap::ArcSwap;
use futures::{StreamExt, channel::oneshot, stream::select_all};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};

use crate::block::{ChainView, ExecutedTx, Merkleizer, SealJob, SealProgress, SealRoots};
use crate::merkle::AccountProof;
use crate::sequencer::{Admission, ParkReason, Sequencer, SubmitError};
use crate::tx::RecoveredTx;

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
}

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
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct SeqState {
    seq: Sequencer,
    /// Waiters for transactions deferred to a later block, by hash.
    waiters: HashMap<B256, oneshot::Sender<SeqReply>>,
    published: Arc<ArcSwap<ChainView>>,
}

impl SeqState {
    /// Closes the mini-block (if any transaction ran), publishes, and wakes waiters.
    fn close_and_publish(&mut self, replies: &mut Vec<(oneshot::Sender<SeqReply>, SeqReply)>) {
        if let Some(mini) = self.seq.close_mini_block() {
            self.published.store(Arc::new(self.seq.view().clone()));
            for tx in mini.txs {
                if let Some(waiter) = self.waiters.remove(&tx.tx.hash) {
                    let _ = waiter.send(SeqReply::Preconfirmed(tx));
                }
            }
        }
        for (reply, answer) in replies.drain(..) {
            // A client that gave up (timeout, disconnect) dropped its receiver.
            let _ = reply.send(answer);
        }
    }

    fn handle(
        &mut self,
        request: SeqRequest,
        replies: &mut Vec<(oneshot::Sender<SeqReply>, SeqReply)>,
    ) {
        let hash = request.tx.hash;
        match self.seq.submit(request.tx) {
            Ok(Admission::Executed(tx)) => {
                replies.push((request.reply, SeqReply::Preconfirmed(tx)))
            }
            Ok(Admission::Parked(ParkReason::Deferred)) if request.wait_for_receipt => {
                self.waiters.insert(hash, request.reply);
            }
            Ok(Admission::Parked(reason)) => {
                replies.push((request.reply, SeqReply::Parked(reason)))
            }
            Err(e) => replies.push((request.reply, SeqReply::Rejected(e))),
        }
    }
}

/// Runs the seq role on the current executor until every inbox closes.
pub async fn run_seq(
    seq: Sequencer,
    inboxes: Vec<ConnectedReceiver<SeqRequest>>,
    to_merkle: ConnectedSender<MerkleRequest>,
    from_merkle: ConnectedReceiver<SealRoots>,
    published: Arc<ArcSwap<ChainView>>,
    timing: SeqTiming,
) {
    published.store(Arc::new(seq.view().clone()));
    let state = Rc::new(RefCell::new(SeqState {
        seq,
        waiters: HashMap::new(),
        published,
    }));

    let sealer = {
        let state = state.clone();
        glommio::spawn_local(async move {
            let period = Duration::from_millis(timing.block_time_ms.max(1));
            let mut next = std::time::Instant::now() + period;
            loop {
                glommio::timer::sleep(next.saturating_duration_since(std::time::Instant::now()))
                    .await;
                next += period;
                let job = {
                    let began = std::time::Instant::now();
                    let mut state = state.borrow_mut();
                    let mut replies = Vec::new();
                    state.close_and_publish(&mut replies);
                    let job = state.seq.close_block(now_ms());
                    // Deferred transactions may have run in the new block.
                    state.close_and_publish(&mut replies);
                    state.published.store(Arc::new(state.seq.view().clone()));
                    state.waiters.retain(|_, w| !w.is_canceled());
                    tracing::debug!(
                        number = job.ctx.number,
                        txs = job.txs.len(),
                        us = began.elapsed().as_micros() as u64,
                        "closed block"
                    );
                    job
                };
                if to_merkle.send(MerkleRequest::Seal(job)).await.is_err() {
                    tracing::error!("state-root worker is gone; sealing stops");
                    return;
                }
            }
        })
    };

    let finisher = {
        let state = state.clone();
        glommio::spawn_local(async move {
            while let Some(roots) = from_merkle.recv().await {
                let began = std::time::Instant::now();
                let mut state = state.borrow_mut();
                let sealed = state.seq.finish_seal(roots);
                tracing::debug!(number = sealed.header.number, hash = %sealed.hash, txs = sealed.txs.len(), "sealed block");
                let mut replies = Vec::new();
                state.close_and_publish(&mut replies);
                state.published.store(Arc::new(state.seq.view().clone()));
                tracing::debug!(
                    number = sealed.header.number,
                    us = began.elapsed().as_micros() as u64,
                    "published seal"
                );
            }
        })
    };

    let mut requests = select_all(inboxes);
    let mut replies = Vec::new();
    while let Some(first) = requests.next().await {
        {
            let mut state = state.borrow_mut();
            state.handle(first, &mut replies);
            // Drain what already waits: under load one mini-block carries many
            // transactions; at low load each transaction closes its own.
            // Memory mode has no flush to wait for, so the mini-block closes
            // when the waiting batch is done, or at mini_block_max_ms.
            let opened = std::time::Instant::now();
            let mini_block_max = Duration::from_millis(timing.mini_block_max_ms);
            let mut batch = 1;
            while batch < MINI_BLOCK_TXS_MAX
                && opened.elapsed() < mini_block_max
                && let Some(Some(more)) = requests.now_or_never_opt()
            {
                state.handle(more, &mut replies);
                batch += 1;
            }
            state.close_and_publish(&mut replies);
        }
        glommio::yield_if_needed().await;
    }
    sealer.cancel().await;
    finisher.cancel().await;
}

trait NowOrNever: StreamExt + Unpin {
    /// The next item if one is ready now; `None` if the stream would block.
    fn now_or_never_opt(&mut self) -> Option<Option<Self::Item>> {
        futures::FutureExt::now_or_never(self.next())
    }
}

impl<S: StreamExt + Unpin> NowOrNever for S {}

/// Work units (diffs, accounts, trie nodes, transactions) between two yields.
const SEAL_STEP_ITEMS: usize = 512;

/// Seals a block in bounded steps, yielding between them, so that a core
/// shared with net or seq never stalls behind a whole block's rehash.
async fn seal_cooperatively(merkle: &mut Merkleizer, job: &SealJob) -> SealRoots {
    let began = std::time::Instant::now();
    let mut progress = SealProgress::default();
    let mut longest = Duration::ZERO;
    loop {
        let step = std::time::Instant::now();
        let done = merkle.seal_step(job, &mut progress, SEAL_STEP_ITEMS);
        longest = longest.max(step.elapsed());
        if let Some(roots) = done {
            tracing::debug!(
                number = roots.number,
                txs = job.txs.len(),
                total_us = began.elapsed().as_micros() as u64,
                longest_step_us = longest.as_micros() as u64,
                "sealed roots"
            );
            return roots;
        }
        glommio::yield_if_needed().await;
    }
}

/// Runs the state-root role: seals blocks in order and serves proofs.
pub async fn run_merkle(
    mut merkle: Merkleizer,
    requests: Vec<ConnectedReceiver<MerkleRequest>>,
    to_seq: ConnectedSender<SealRoots>,
) {
    let mut requests = select_all(requests);
    while let Some(request) = requests.next().await {
        match request {
            MerkleRequest::Seal(job) => {
                let roots = seal_cooperatively(&mut merkle, &job).await;
                if to_seq.send(roots).await.is_err() {
                    return;
                }
            }
            MerkleRequest::Proof {
                block,
                address,
                slots,
                reply,
            } => {
                let answer = if block == merkle.number {
                    Ok(merkle.proof(&address, &slots))
                } else {
                    Err(merkle.number)
                };
                let _ = reply.send(answer);
            }
        }
        glommio::yield_if_needed().await;
    }
}
