//! The seq and state-root roles as glommio tasks, and the messages other
//! cores exchange with them. Every channel is bounded.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::B256;
use arc_swap::ArcSwap;
use futures::{StreamExt, channel::oneshot, stream::select_all};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};

use fulmen_storage::checkpoint::{CheckpointJob, CheckpointMeta};
use fulmen_storage::record::RecordKind;
use fulmen_storage::writer::{AppendRequest, StorageAck};

use crate::seal::{Merkleizer, SealProgress};
use crate::sequencer::Sequencer;
use fulmen_chain::block::{SealJob, SealRoots};
use fulmen_chain::events::{ChainEvent, EventBus, MiniBlockEvent};
use fulmen_chain::metrics::METRICS;
use fulmen_chain::msg::{Admission, MerkleRequest, ParkReason, SeqReply, SeqRequest, SubmitError};
use fulmen_chain::view::ChainView;

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

/// Microseconds since the Unix epoch.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// How the seq role reaches the storage role.
pub struct LogLink {
    /// Records to append.
    pub to_storage: ConnectedSender<AppendRequest>,
    /// Acknowledgements, in order.
    pub acks: ConnectedReceiver<StorageAck>,
    /// `durable`: replies and views are released once their record is
    /// flushed. `memory`: right after execution (the log is still written).
    pub durable: bool,
    /// Where checkpoint jobs go, and every how many blocks (0: never).
    pub checkpoints: Option<(ConnectedSender<CheckpointJob>, u64)>,
}

/// Records the seq role may have sent and not yet seen durable. Past this,
/// the open mini-block keeps growing instead of closing, and then the seq
/// stops reading its inboxes (the net cores answer "inbox full").
pub const LOG_RECORDS_IN_FLIGHT_MAX: u64 = 64;

/// Capacity of the seq → storage channel: the in-flight bound plus room for
/// block seals and the mini-blocks a block close forces.
pub const STORAGE_QUEUE_CAPACITY: usize = LOG_RECORDS_IN_FLIGHT_MAX as usize + 64;

type Replies = Vec<(oneshot::Sender<SeqReply>, SeqReply)>;

/// Set on SIGTERM: the seq role refuses new transactions, so that what it
/// acknowledged can be flushed before the process exits.
pub static STOPPING: AtomicBool = AtomicBool::new(false);

/// Sends a released answer to its client and counts preconfirmations.
fn deliver(reply: oneshot::Sender<SeqReply>, answer: SeqReply) {
    if matches!(answer, SeqReply::Preconfirmed(_)) {
        METRICS.preconfirmed.fetch_add(1, Relaxed);
    }
    // A client that gave up (timeout, disconnect) dropped its receiver.
    let _ = reply.send(answer);
}

/// A view and replies waiting for their record to be durable.
struct Held {
    /// Records that must be durable first.
    upto: u64,
    view: Arc<ChainView>,
    replies: Replies,
    /// Subscription events, published with the view.
    events: Vec<ChainEvent>,
}

struct Storage {
    to_storage: ConnectedSender<AppendRequest>,
    durable_mode: bool,
    sent: u64,
    durable: u64,
    held: VecDeque<Held>,
    checkpoints: Option<(ConnectedSender<CheckpointJob>, u64)>,
    /// A checkpoint waiting for its block's seal record to be durable.
    checkpoint_due: Option<(u64, CheckpointJob)>,
}

struct SeqState {
    seq: Sequencer,
    /// Waiters for transactions deferred to a later block, by hash.
    waiters: HashMap<B256, oneshot::Sender<SeqReply>>,
    published: Arc<ArcSwap<ChainView>>,
    /// Where durable events go, and those not yet released.
    events: EventBus,
    pending_events: Vec<ChainEvent>,
    storage: Option<Storage>,
    /// Why the node stopped preconfirming (the log failed).
    halted: Option<String>,
    /// When the open mini-block took its first transaction.
    mini_opened: Option<Instant>,
}

impl SeqState {
    fn in_flight(&self) -> u64 {
        self.storage.as_ref().map_or(0, |s| s.sent - s.durable)
    }

    /// True when the open mini-block should close now: the log has no flush
    /// in flight, or (within the in-flight bound) the mini-block is old
    /// enough, or the node keeps no log or answers before durability.
    fn should_close(&self, mini_block_max: Duration) -> bool {
        let Some(storage) = &self.storage else {
            return true;
        };
        let in_flight = storage.sent - storage.durable;
        if !storage.durable_mode {
            return in_flight < LOG_RECORDS_IN_FLIGHT_MAX;
        }
        in_flight == 0
            || (in_flight < LOG_RECORDS_IN_FLIGHT_MAX
                && (self.mini_block_full()
                    || self
                        .mini_opened
                        .is_some_and(|t| t.elapsed() >= mini_block_max)))
    }

    /// True when the open mini-block takes no more transactions until it
    /// closes: it holds [`MINI_BLOCK_TXS_MAX`], or its record might not fit
    /// one more transaction of the largest size.
    fn mini_block_full(&self) -> bool {
        self.seq.mini_txs_len() >= MINI_BLOCK_TXS_MAX || self.seq.mini_block_full()
    }

    /// Runs the transactions that found no room in the mini-block that just
    /// closed; they open the next one. Not between a mini-block's close and
    /// its block's close: `close_block` runs every deferred tx itself.
    fn resume_deferred(&mut self) {
        if self.halted.is_some() {
            return;
        }
        self.seq.run_deferred_for_room();
        if self.seq.mini_block_has_txs() {
            self.mini_opened.get_or_insert_with(Instant::now);
        }
    }

    /// Sends a record to the log; the storage queue has room by construction
    /// ([`STORAGE_QUEUE_CAPACITY`]), so a full queue is a fault.
    fn log(&mut self, kind: RecordKind, payload: Vec<u8>) {
        let Some(storage) = &mut self.storage else {
            return;
        };
        match storage.to_storage.try_send(AppendRequest { kind, payload }) {
            Ok(()) => {
                storage.sent += 1;
                METRICS
                    .storage_in_flight
                    .store(storage.sent - storage.durable, Relaxed);
            }
            Err(_) => self.halt("the storage queue is full or closed".into()),
        }
    }

    /// Stops preconfirming: nothing after the last durable record is ever
    /// published; held replies are refused.
    fn halt(&mut self, reason: String) {
        if self.halted.is_some() {
            return;
        }
        tracing::error!(reason = %reason, "the node stops preconfirming");
        self.pending_events.clear();
        if let Some(storage) = &mut self.storage {
            for held in storage.held.drain(..) {
                for (reply, _) in held.replies {
                    let _ = reply.send(SeqReply::Rejected(SubmitError::Halted(reason.clone())));
                }
            }
        }
        for (_, waiter) in self.waiters.drain() {
            let _ = waiter.send(SeqReply::Rejected(SubmitError::Halted(reason.clone())));
        }
        self.halted = Some(reason);
    }

    /// Makes the current view and `replies` visible: now (memory mode, no
    /// log) or once every record sent so far is durable.
    fn release(&mut self, replies: &mut Replies) {
        let view = Arc::new(self.seq.view().clone());
        match &mut self.storage {
            Some(storage) if storage.durable_mode && storage.durable < storage.sent => {
                storage.held.push_back(Held {
                    upto: storage.sent,
                    view,
                    replies: std::mem::take(replies),
                    events: std::mem::take(&mut self.pending_events),
                });
            }
            _ => {
                self.published.store(view);
                for (reply, answer) in replies.drain(..) {
                    deliver(reply, answer);
                }
                for event in self.pending_events.drain(..) {
                    self.events.publish(event);
                }
            }
        }
    }

    /// The log says the first `records` records are durable.
    fn on_durable(&mut self, records: u64) {
        let Some(storage) = &mut self.storage else {
            return;
        };
        storage.durable = records;
        METRICS
            .storage_in_flight
            .store(storage.sent - storage.durable, Relaxed);
        let mut latest = None;
        while storage.held.front().is_some_and(|h| h.upto <= records) {
            let held = storage.held.pop_front().expect("checked");
            for (reply, answer) in held.replies {
                deliver(reply, answer);
            }
            for event in held.events {
                self.events.publish(event);
            }
            latest = Some(held.view);
        }
        if let Some(view) = latest {
            self.published.store(view);
        }
        if let Some((upto, _)) = &storage.checkpoint_due
            && *upto <= records
            && let Some((_, job)) = storage.checkpoint_due.take()
            && let Some((to, _)) = &storage.checkpoints
        {
            let number = job.meta.number;
            if to.try_send(job).is_err() {
                tracing::warn!(
                    number,
                    "the previous checkpoint is still being written; no checkpoint at this block"
                );
            }
        }
    }

    /// After block `sealed` was logged: schedules its checkpoint when one is
    /// due, to start once the seal record is durable.
    fn schedule_checkpoint(&mut self, sealed: &fulmen_chain::block::SealedBlock) {
        let number = sealed.header.number;
        let Some(storage) = &mut self.storage else {
            return;
        };
        let Some((_, every)) = &storage.checkpoints else {
            return;
        };
        if *every == 0 || !number.is_multiple_of(*every) {
            return;
        }
        let Some(state) = self.seq.view().state_at(number) else {
            return;
        };
        let job = CheckpointJob {
            meta: CheckpointMeta {
                number,
                hash: sealed.hash,
                state_root: sealed.header.state_root,
            },
            state: state.clone(),
        };
        storage.checkpoint_due = Some((storage.sent, job));
    }

    /// Closes the mini-block (if any transaction ran), logs it, and releases
    /// it with `replies` and the waiters it wakes.
    fn close_and_release(&mut self, replies: &mut Replies) {
        let before = self.seq.view().state().clone();
        if let Some(mini) = self.seq.close_mini_block() {
            METRICS.mini_blocks.fetch_add(1, Relaxed);
            self.mini_opened = None;
            if self.storage.is_some() {
                let mut payload = Vec::with_capacity(512 * mini.txs.len());
                self.seq.mini_block_record(&mini, &mut payload);
                self.log(RecordKind::MiniBlock, payload);
            }
            // Nobody subscribed anywhere: skip copying the diffs. (A client
            // subscribing now gets mini-blocks that close after it.)
            if METRICS.ws_subscriptions.load(Relaxed) > 0 {
                self.pending_events.push(ChainEvent::MiniBlock(Arc::new(
                    self.mini_block_event(&mini, before),
                )));
            }
            for tx in mini.txs {
                if let Some(waiter) = self.waiters.remove(&tx.tx.hash) {
                    replies.push((waiter, SeqReply::Preconfirmed(tx)));
                }
            }
        }
        if let Some(reason) = &self.halted {
            self.pending_events.clear();
            for (reply, answer) in replies.drain(..) {
                let answer = match answer {
                    SeqReply::Preconfirmed(_) => {
                        SeqReply::Rejected(SubmitError::Halted(reason.clone()))
                    }
                    other => other,
                };
                let _ = reply.send(answer);
            }
            return;
        }
        self.release(replies);
    }

    /// The subscription event of `mini`, the mini-block just closed.
    fn mini_block_event(
        &self,
        mini: &crate::sequencer::ClosedMiniBlock,
        before: fulmen_storage::HotState,
    ) -> MiniBlockEvent {
        MiniBlockEvent {
            number: mini.number,
            block: mini.block,
            block_timestamp: mini.txs.first().map_or(0, |t| t.block_timestamp),
            index: mini.index,
            timestamp_us: now_us(),
            gas_used: mini.txs.iter().map(|t| t.gas_used).sum(),
            txs: mini.txs.clone(),
            diffs: self.seq.mini_block_diffs(mini).to_vec(),
            before,
            after: self.seq.view().state().clone(),
        }
    }

    fn handle(&mut self, request: SeqRequest, replies: &mut Replies) {
        METRICS.inbox_taken.fetch_add(1, Relaxed);
        if STOPPING.load(Relaxed) {
            let _ = request
                .reply
                .send(SeqReply::Rejected(SubmitError::ShuttingDown));
            return;
        }
        if let Some(reason) = &self.halted {
            let _ = request
                .reply
                .send(SeqReply::Rejected(SubmitError::Halted(reason.clone())));
            return;
        }
        let hash = request.tx.hash;
        match self.seq.submit(request.tx) {
            Ok(Admission::Executed(tx)) => {
                self.mini_opened.get_or_insert_with(Instant::now);
                replies.push((request.reply, SeqReply::Preconfirmed(tx)))
            }
            Ok(Admission::Parked(ParkReason::Deferred)) if request.wait_for_receipt => {
                METRICS.parked.fetch_add(1, Relaxed);
                self.waiters.insert(hash, request.reply);
            }
            Ok(Admission::Parked(reason)) => {
                METRICS.parked.fetch_add(1, Relaxed);
                replies.push((request.reply, SeqReply::Parked(reason)))
            }
            Err(e) => replies.push((request.reply, SeqReply::Rejected(e))),
        }
    }
}

/// Runs the seq role on the current executor until every inbox closes.
/// `pending` are blocks closed before a restart and not yet sealed; they go
/// to the state-root worker first.
#[allow(clippy::too_many_arguments)]
pub async fn run_seq(
    seq: Sequencer,
    inboxes: Vec<ConnectedReceiver<SeqRequest>>,
    to_merkle: ConnectedSender<MerkleRequest>,
    from_merkle: ConnectedReceiver<SealRoots>,
    published: Arc<ArcSwap<ChainView>>,
    events: EventBus,
    timing: SeqTiming,
    log: Option<LogLink>,
    pending: Vec<SealJob>,
) {
    published.store(Arc::new(seq.view().clone()));
    let (storage, acks) = match log {
        Some(link) => (
            Some(Storage {
                to_storage: link.to_storage,
                durable_mode: link.durable,
                sent: 0,
                durable: 0,
                held: VecDeque::new(),
                checkpoints: link.checkpoints,
                checkpoint_due: None,
            }),
            Some(link.acks),
        ),
        None => (None, None),
    };
    let state = Rc::new(RefCell::new(SeqState {
        seq,
        waiters: HashMap::new(),
        published,
        events,
        pending_events: Vec::new(),
        storage,
        halted: None,
        mini_opened: None,
    }));
    let mini_block_max = Duration::from_millis(timing.mini_block_max_ms);
    // Woken when the log reports progress, for a seq loop that waits for room.
    let progress = Rc::new(glommio::sync::Semaphore::new(0));

    for job in pending {
        if to_merkle.send(MerkleRequest::Seal(job)).await.is_err() {
            tracing::error!("state-root worker is gone; sealing stops");
        }
    }

    let acker = acks.map(|acks| {
        let state = state.clone();
        let progress = progress.clone();
        glommio::spawn_local(async move {
            while let Some(ack) = acks.recv().await {
                let mut state = state.borrow_mut();
                match ack {
                    StorageAck::Durable { records, flush_us } => {
                        METRICS
                            .flush_latency
                            .observe(Duration::from_micros(flush_us));
                        tracing::trace!(records, flush_us, "durable");
                        state.on_durable(records);
                        // A mini-block left open while the flush ran closes now.
                        if state.halted.is_none()
                            && state.seq.mini_block_has_txs()
                            && state.should_close(mini_block_max)
                        {
                            let mut replies = Vec::new();
                            state.close_and_release(&mut replies);
                            state.resume_deferred();
                        }
                    }
                    StorageAck::Failed(reason) => state.halt(reason),
                }
                drop(state);
                progress.signal(1);
            }
        })
    });

    let sealer = {
        let state = state.clone();
        glommio::spawn_local(async move {
            let period = Duration::from_millis(timing.block_time_ms.max(1));
            let mut next = Instant::now() + period;
            loop {
                glommio::timer::sleep(next.saturating_duration_since(Instant::now())).await;
                next += period;
                let job = {
                    let began = Instant::now();
                    let mut state = state.borrow_mut();
                    if state.halted.is_some() {
                        continue;
                    }
                    let mut replies = Vec::new();
                    state.close_and_release(&mut replies);
                    let job = state.seq.close_block(now_ms());
                    // Deferred transactions may have run in the new block.
                    state.close_and_release(&mut replies);
                    if state.halted.is_none() {
                        state.release(&mut replies);
                    }
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
                let began = Instant::now();
                let mut state = state.borrow_mut();
                if state.halted.is_some() {
                    continue;
                }
                let sealed = state.seq.finish_seal(roots);
                METRICS.blocks.fetch_add(1, Relaxed);
                let view_state = &state.seq.view().state();
                METRICS
                    .accounts
                    .store(view_state.account_count() as u64, Relaxed);
                METRICS.slots.store(view_state.slot_count() as u64, Relaxed);
                tracing::debug!(number = sealed.header.number, hash = %sealed.hash, txs = sealed.txs.len(), "sealed block");
                let mut replies = Vec::new();
                // Mini-blocks that ran meanwhile go first: the log keeps
                // mini-blocks before the seal that follows them.
                state.close_and_release(&mut replies);
                if state.storage.is_some() {
                    let mut payload = Vec::with_capacity(700);
                    fulmen_chain::persist::encode_seal(&sealed.header, sealed.size, &mut payload);
                    state.log(RecordKind::BlockSeal, payload);
                    state.schedule_checkpoint(&sealed);
                }
                if state.halted.is_none() {
                    state
                        .pending_events
                        .push(ChainEvent::Sealed(sealed.clone()));
                    state.release(&mut replies);
                }
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
            let opened = Instant::now();
            let mut batch = 1;
            while batch < MINI_BLOCK_TXS_MAX
                && !state.mini_block_full()
                && opened.elapsed() < mini_block_max
                && let Some(Some(more)) = requests.now_or_never_opt()
            {
                state.handle(more, &mut replies);
                batch += 1;
            }
            if state.should_close(mini_block_max) || state.halted.is_some() {
                state.close_and_release(&mut replies);
                state.resume_deferred();
            } else {
                // The mini-block stays open while the log flushes; its
                // replies wait with it and go out when it closes.
                for (reply, answer) in replies.drain(..) {
                    match answer {
                        SeqReply::Preconfirmed(tx) => {
                            state.waiters.insert(tx.tx.hash, reply);
                        }
                        other => {
                            let _ = reply.send(other);
                        }
                    }
                }
            }
        }
        // A full mini-block that cannot close waits for the log, and the
        // inboxes fill meanwhile (the net cores answer "inbox full").
        loop {
            let wait = {
                let state = state.borrow();
                state.halted.is_none()
                    && state.mini_block_full()
                    && state.in_flight() >= LOG_RECORDS_IN_FLIGHT_MAX
            };
            if !wait {
                break;
            }
            let _ = progress.acquire(1).await;
        }
        glommio::yield_if_needed().await;
    }
    sealer.cancel().await;
    finisher.cancel().await;
    if let Some(acker) = acker {
        acker.cancel().await;
    }
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

#[cfg(test)]
mod tests {
    //! The seq role over the real log writer on the simulated disk: an IO
    //! error or a full disk halts preconfirmation with a clear error, nothing
    //! after the last durable record is ever published (no view, no
    //! subscription event), and what was acknowledged is on the disk.

    use fulmen_storage::io::{CrashMode, Fault, SimDisk};
    use fulmen_storage::log::{Log, read_log};
    use glommio::channels::shared_channel;

    use super::*;
    use crate::sequencer::{Genesis, PoolLimits};
    use crate::testkit::{spec, tx};
    use fulmen_chain::spec::DEV_ACCOUNTS;
    use fulmen_chain::tx::RecoveredTx;

    async fn send(inbox: &ConnectedSender<SeqRequest>, tx: RecoveredTx) -> SeqReply {
        let (reply, answer) = oneshot::channel();
        inbox
            .send(SeqRequest {
                tx,
                reply,
                wait_for_receipt: true,
            })
            .await
            .expect("seq is running");
        answer.await.expect("seq answers")
    }

    #[test]
    fn a_failing_log_halts_preconfirmation_and_loses_nothing_acknowledged() {
        for fault in [
            |at_op| Fault::Eio {
                at_op,
                forever: true,
            },
            |at_op| Fault::NoSpace {
                at_op,
                forever: false,
            },
        ] {
            let durable_txs = glommio::LocalExecutorBuilder::default()
                .spawn(move || async move {
                    let disk = SimDisk::new(11, 1 << 24);
                    let spec = spec(30_000_000);
                    let genesis = Genesis::new(&spec);
                    let seq = Sequencer::new(spec.clone(), PoolLimits::default(), &genesis, 1_000);
                    let merkle = Merkleizer::new(genesis.trie.clone(), 0);
                    let published = Arc::new(ArcSwap::from_pointee(seq.view().clone()));
                    let (log, _) = Log::open(disk.clone(), 64 * 1024).await.unwrap();
                    let (inbox_tx, inbox_rx) = shared_channel::new_bounded(64);
                    let (append_tx, append_rx) =
                        shared_channel::new_bounded(STORAGE_QUEUE_CAPACITY);
                    let (ack_tx, ack_rx) = shared_channel::new_bounded(STORAGE_QUEUE_CAPACITY);
                    let (seal_tx, seal_rx) = shared_channel::new_bounded(8);
                    let (roots_tx, roots_rx) = shared_channel::new_bounded(8);
                    // Each end of a channel waits for its peer to connect.
                    let (append_tx, append_rx) =
                        futures::join!(append_tx.connect(), append_rx.connect());
                    let (ack_tx, ack_rx) = futures::join!(ack_tx.connect(), ack_rx.connect());
                    let (seal_tx, seal_rx) = futures::join!(seal_tx.connect(), seal_rx.connect());
                    let (roots_tx, roots_rx) =
                        futures::join!(roots_tx.connect(), roots_rx.connect());
                    let (inbox, inbox_rx) = futures::join!(inbox_tx.connect(), inbox_rx.connect());
                    let (event_tx, event_rx) = shared_channel::new_bounded(16);
                    let (event_tx, events) = futures::join!(event_tx.connect(), event_rx.connect());
                    let next_event = || futures::FutureExt::now_or_never(events.recv()).flatten();
                    // Mini-block events are built only while someone subscribes.
                    METRICS.ws_subscriptions.store(1, Relaxed);
                    glommio::spawn_local(fulmen_storage::writer::run_writer(
                        log, append_rx, ack_tx,
                    ))
                    .detach();
                    glommio::spawn_local(run_merkle(merkle, vec![seal_rx], roots_tx)).detach();
                    let link = LogLink {
                        to_storage: append_tx,
                        acks: ack_rx,
                        durable: true,
                        checkpoints: None,
                    };
                    let seq_task = glommio::spawn_local(run_seq(
                        seq,
                        vec![inbox_rx],
                        seal_tx,
                        roots_rx,
                        published.clone(),
                        fulmen_chain::events::EventBus::new(vec![event_tx]),
                        SeqTiming {
                            block_time_ms: 600_000,
                            mini_block_max_ms: 1,
                        },
                        Some(link),
                        Vec::new(),
                    ));
                    let bob = DEV_ACCOUNTS[1];

                    let first = tx(&spec, 0, 0, bob, 1, 21_000, 1);
                    let first_hash = first.hash;
                    assert!(matches!(
                        send(&inbox, first).await,
                        SeqReply::Preconfirmed(_)
                    ));
                    assert!(published.load().tx(&first_hash).is_some());
                    // Its mini-block event went out with the reply, once.
                    let event = next_event().expect("the durable mini-block's event");
                    assert_eq!(event.position, 0);
                    let ChainEvent::MiniBlock(mini) = event.event else {
                        panic!("a mini-block event")
                    };
                    assert_eq!((mini.number, mini.index), (1, 0));
                    assert_eq!(mini.txs.len(), 1);
                    assert_eq!(mini.txs[0].tx.hash, first_hash);
                    assert_eq!(mini.diffs.len(), 1);
                    assert!(next_event().is_none());

                    disk.inject(Some(fault(disk.ops())));
                    let second = tx(&spec, 0, 1, bob, 1, 21_000, 1);
                    let second_hash = second.hash;
                    match send(&inbox, second).await {
                        SeqReply::Rejected(SubmitError::Halted(reason)) => {
                            assert!(!reason.is_empty())
                        }
                        other => panic!("not halted: {other:?}"),
                    }
                    // Everyone after gets the same clear error; nothing newer is published.
                    let third = tx(&spec, 2, 0, bob, 1, 21_000, 1);
                    let error = match send(&inbox, third).await {
                        SeqReply::Rejected(e @ SubmitError::Halted(_)) => e.to_string(),
                        other => panic!("not halted: {other:?}"),
                    };
                    assert!(error.contains("stopped preconfirming"), "{error}");
                    let view = published.load();
                    assert!(view.tx(&first_hash).is_some());
                    assert!(
                        view.tx(&second_hash).is_none(),
                        "a tx that was not durable was published"
                    );
                    assert!(
                        next_event().is_none(),
                        "an event for a record that was not durable was published"
                    );
                    drop(inbox);
                    seq_task.await;
                    // What was acknowledged is on the disk after a crash.
                    let (recovery, _) = read_log(&disk.crash(CrashMode::TearUnflushed)).unwrap();
                    recovery
                        .records
                        .iter()
                        .filter(|(_, kind, _)| *kind == RecordKind::MiniBlock)
                        .map(|(_, _, payload)| {
                            fulmen_chain::persist::decode_mini_block(payload)
                                .unwrap()
                                .txs
                                .len()
                        })
                        .sum::<usize>()
                })
                .unwrap()
                .join()
                .unwrap();
            assert_eq!(
                durable_txs, 1,
                "exactly the acknowledged transaction is durable"
            );
        }
    }
}
