//! The seq core's state and what it does with each message. Each actor in
//! [`super::actors`] borrows it for one step at a time; the durability
//! bookkeeping is [`super::durability`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use arc_swap::ArcSwap;
use fulmen_chain::block::BLOCKHASH_WINDOW;
use futures::channel::{mpsc, oneshot};
use glommio::channels::shared_channel::ConnectedSender;

use fulmen_chain::block::{SealJob, SealedBlock};
use fulmen_chain::events::{ChainEvent, EventBus, MiniBlockEvent, NetChanges};
use fulmen_chain::metrics::METRICS;
use fulmen_chain::msg::{
    Admission, Drained, ParkReason, SeqControl, SeqReply, SeqRequest, SubmitError,
};
use fulmen_chain::persist::encode_seal;
use fulmen_chain::view::ChainView;
use fulmen_storage::checkpoint::{CheckpointJob, CheckpointMeta};
use fulmen_storage::record::RecordKind;
use fulmen_storage::writer::AppendRequest;

use super::durability::{Durability, Released, Replies};
use super::linger::Linger;

use super::timing::{LOG_RECORDS_IN_FLIGHT_MAX, MINI_BLOCK_TXS_MAX, TIMESTAMP_AHEAD_MAX_S, now_us};
use crate::sequencer::{ClosedMiniBlock, Sequencer};

/// The seq core's side of the log.
pub(super) struct LogSide {
    pub(super) to_storage: ConnectedSender<AppendRequest>,
    pub(super) to_checkpoints: Option<ConnectedSender<CheckpointJob>>,
    pub(super) book: Durability,
    pub(super) history: Option<HistoryFeed>,
    /// The DA-progress records logged so far (replayed and new), in log
    /// order: what a checkpoint marker carries.
    pub(super) da_records: Vec<Vec<u8>>,
}

/// Published sealed blocks on their way to the history writer.
pub(super) struct HistoryFeed {
    pub(super) to: std::sync::mpsc::SyncSender<Arc<fulmen_chain::block::SealedBlock>>,
    /// The next block to send.
    pub(super) next: u64,
    /// The writer is gone (reported once).
    pub(super) gone: bool,
}

impl HistoryFeed {
    /// Sends the blocks of `view` the writer does not have yet, as many as
    /// its queue takes: never waits, and never reads the disk (they are in
    /// RAM: the view drops a block only once the store holds it).
    fn feed(&mut self, view: &ChainView) {
        use std::sync::mpsc::TrySendError;
        let head = view.head().header.number;
        while self.next <= head && !self.gone {
            let Some(block) = view.block(self.next) else {
                break;
            };
            match self.to.try_send(block) {
                Ok(()) => self.next += 1,
                Err(TrySendError::Full(_)) => break,
                Err(TrySendError::Disconnected(_)) => {
                    tracing::error!("the history writer is gone; sealed blocks stay in RAM");
                    self.gone = true;
                }
            }
        }
    }
}

/// Everything the seq core owns.
pub(super) struct SeqState {
    pub(super) seq: Sequencer,
    /// Waiters for transactions deferred to a later block, by hash.
    waiters: HashMap<B256, oneshot::Sender<SeqReply>>,
    published: Arc<ArcSwap<ChainView>>,
    /// Where durable events go, and those not yet released.
    events: EventBus,
    pending_events: Vec<ChainEvent>,
    /// Control messages, read before every batch of transactions (and by
    /// [`super::actors::obey_control`] while the inboxes are idle).
    pub(super) control: mpsc::Receiver<SeqControl>,
    /// Net cores that have subscribers; events are built only while any has.
    subscribed_cores: BTreeSet<usize>,
    log: Option<LogSide>,
    /// Why the node stopped preconfirming (the log failed).
    halted: Option<String>,
    /// A verifier: the headers the sequencer sealed for derived blocks not
    /// sealed here yet (at most the derived queue's length).
    expected: std::collections::BTreeMap<u64, alloy_consensus::Header>,
    /// A verifier: views are published only when every executed block is
    /// sealed (and so checked).
    pub(super) verifier: bool,
    /// A replica: blocks seal only against the upstream's header, and
    /// their roots wait here for it when they come first.
    pub(super) replica: bool,
    roots_waiting: std::collections::VecDeque<fulmen_chain::block::SealRoots>,
    /// The checkpoint block whose trie references the state-root worker
    /// puts in the slot.
    trie_export: Option<(u64, fulmen_chain::block::TrieExportSlot)>,
    /// A replica: mini-blocks not yet published and when their upstream
    /// closed them (µs), for the lag metric.
    lag_marks: std::collections::VecDeque<(u64, u64)>,
    /// Set by [`SeqControl::Stop`]: who waits for the log to drain.
    stopping: Option<Vec<std::sync::mpsc::SyncSender<Drained>>>,
    /// When the open mini-block took its first transaction.
    mini_opened: Option<Instant>,
    /// Longest a mini-block stays open while the log flushes.
    mini_block_max: Duration,
    /// Group commit under load: whether a mini-block waits for more
    /// transactions once the log is idle.
    linger: Linger,
    /// The open mini-block has waited (for `fulmen_group_commit_waits_total`).
    mini_waited: bool,
    /// Wakes [`super::actors::take_requests`] when a wait begins with the
    /// log idle.
    linger_wake: std::rc::Rc<glommio::sync::Semaphore>,
}

impl SeqState {
    pub(super) fn new(
        seq: Sequencer,
        (published, events): (Arc<ArcSwap<ChainView>>, EventBus),
        control: mpsc::Receiver<SeqControl>,
        log: Option<LogSide>,
        (mini_block_max, linger_max): (Duration, Duration),
        linger_wake: std::rc::Rc<glommio::sync::Semaphore>,
    ) -> Self {
        published.store(Arc::new(seq.view().clone()));
        Self {
            seq,
            waiters: HashMap::new(),
            published,
            events,
            pending_events: Vec::new(),
            control,
            subscribed_cores: BTreeSet::new(),
            log,
            halted: None,
            expected: std::collections::BTreeMap::new(),
            verifier: false,
            replica: false,
            roots_waiting: Default::default(),
            trie_export: None,
            lag_marks: Default::default(),
            stopping: None,
            mini_opened: None,
            mini_block_max,
            linger: Linger::new(linger_max),
            mini_waited: false,
            linger_wake,
        }
    }

    pub(super) fn halted(&self) -> bool {
        self.halted.is_some()
    }

    pub(super) fn in_flight(&self) -> u64 {
        self.log.as_ref().map_or(0, |log| log.book.in_flight())
    }

    /// True when the open mini-block should close now: the log has no flush
    /// in flight (and under load the mini-block is full enough or has waited
    /// long enough, [`Linger`]), or (within the in-flight bound) the
    /// mini-block is old enough, or the node keeps no log or answers before
    /// durability.
    pub(super) fn should_close(&self) -> bool {
        let Some(log) = &self.log else {
            return true;
        };
        let in_flight = log.book.in_flight();
        if !log.book.waits_for_log() {
            return in_flight < LOG_RECORDS_IN_FLIGHT_MAX;
        }
        (in_flight == 0 && self.linger_deadline().is_none())
            || (in_flight < LOG_RECORDS_IN_FLIGHT_MAX
                && (self.mini_block_full()
                    || self
                        .mini_opened
                        .is_some_and(|t| t.elapsed() >= self.mini_block_max)))
    }

    /// Until when the open mini-block waits for more transactions with the
    /// log idle; `None` when it should not wait (see [`Linger`]).
    pub(super) fn linger_deadline(&self) -> Option<Instant> {
        let opened = self.mini_opened?;
        // Only a log that answers after the flush has a flush to share.
        let waits = self
            .log
            .as_ref()
            .is_some_and(|log| log.book.waits_for_log());
        // With headroom on every core, latency comes first.
        if !waits
            || self.in_flight() > 0
            || self.mini_block_full()
            || self.halted()
            || !METRICS.loaded()
        {
            return None;
        }
        self.linger
            .deadline(opened, self.seq.mini_txs_len(), Instant::now())
    }

    /// The log became idle with the mini-block held: wakes
    /// [`super::actors::take_requests`] (which may be waiting for
    /// transactions with no deadline) if the hold is a group-commit wait.
    fn arm_linger(&mut self) {
        if !self.linger.armed && self.linger_deadline().is_some() {
            self.linger.armed = true;
            self.linger_wake.signal(1);
        }
    }

    /// `take_requests` starts a group-commit wait for the open mini-block.
    pub(super) fn note_linger_wait(&mut self) {
        self.mini_waited = true;
    }

    /// `take_requests` took the wake-up.
    pub(super) fn disarm_linger(&mut self) {
        self.linger.armed = false;
    }

    /// Closes the open mini-block if it has transactions and should close
    /// now (a group-commit wait is over, or the log became idle).
    pub(super) fn close_if_due(&mut self) {
        if !self.halted() && self.seq.mini_block_has_txs() && self.should_close() {
            let mut replies = Vec::new();
            self.close_and_release(&mut replies);
            self.resume_deferred();
        }
    }

    /// True when the open mini-block takes no more transactions until it
    /// closes: it holds [`MINI_BLOCK_TXS_MAX`], or its record might not fit
    /// one more transaction of the largest size.
    pub(super) fn mini_block_full(&self) -> bool {
        self.seq.mini_txs_len() >= MINI_BLOCK_TXS_MAX || self.seq.mini_block_full()
    }

    /// True when the log has as many records in flight as it may.
    pub(super) fn log_full(&self) -> bool {
        !self.halted() && self.in_flight() >= LOG_RECORDS_IN_FLIGHT_MAX
    }

    /// True when a full mini-block must wait for the log before taking more.
    pub(super) fn must_wait_for_log(&self) -> bool {
        !self.halted() && self.mini_block_full() && self.in_flight() >= LOG_RECORDS_IN_FLIGHT_MAX
    }

    /// A transaction from a net core.
    pub(super) fn handle(&mut self, request: SeqRequest, replies: &mut Replies) {
        METRICS.inbox_taken.fetch_add(1, Relaxed);
        if self.stopping.is_some() {
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
        self.linger.on_arrival(Instant::now());
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

    /// After a batch of requests: close the mini-block now, or keep it open
    /// while the log flushes (its replies then wait with it and go out when
    /// it closes).
    pub(super) fn close_or_hold(&mut self, replies: &mut Replies) {
        if self.should_close() || self.halted() {
            self.close_and_release(replies);
            self.resume_deferred();
            return;
        }
        for (reply, answer) in replies.drain(..) {
            match answer {
                SeqReply::Preconfirmed(tx) => {
                    self.waiters.insert(tx.tx.hash, reply);
                }
                other => {
                    let _ = reply.send(other);
                }
            }
        }
    }

    /// Applies every control message already sent. Called before each batch
    /// of transactions: a net core reports its first subscriber before it
    /// answers `eth_subscribe`, so a transaction sent after that answer
    /// always finds the seq core building events.
    pub(super) fn drain_control(&mut self) {
        while let Ok(message) = self.control.try_recv() {
            self.control(message);
        }
    }

    /// A control message.
    pub(super) fn control(&mut self, message: SeqControl) {
        match message {
            SeqControl::Subscribers {
                core,
                any,
                events_from,
                generation,
            } => {
                // Every mini-block that closes from now on gets an event
                // (one still open too: events are built at its close).
                let from = if any {
                    self.subscribed_cores.insert(core);
                    self.seq.view().mini_block() + 1
                } else {
                    self.subscribed_cores.remove(&core);
                    u64::MAX
                };
                *events_from.lock().unwrap_or_else(|e| e.into_inner()) = (generation, from);
            }
            SeqControl::DaCompacted(records) => {
                if let Some(log) = &mut self.log {
                    log.da_records = records;
                }
            }
            SeqControl::DaRecord { payload, durable } => {
                if self.halted() {
                    return;
                }
                if let Some(log) = &mut self.log {
                    log.da_records.push(payload.clone());
                }
                self.log(RecordKind::DaProgress, payload);
                match &mut self.log {
                    // Logging may have just failed (and halted): then the
                    // waiter is dropped, never told "durable".
                    Some(log) if self.halted.is_none() => log.book.notify_when_durable(durable),
                    // No log: nothing can be durable; the sender sees that.
                    _ => drop(durable),
                }
            }
            // Set on the working view and published now if no mini-block is
            // open (an idle verifier seals nothing more); otherwise with the
            // next release: never a view between mini-blocks.
            SeqControl::DaHeads(heads) => {
                self.seq.set_da_heads(heads);
                if !self.halted() && !self.seq.mini_block_has_txs() {
                    self.release(&mut Vec::new());
                }
            }
            SeqControl::Stop { drained } => {
                tracing::info!("stopping: refusing new transactions, flushing the log");
                self.stopping.get_or_insert_with(Vec::new).push(drained);
                if !self.halted() {
                    let mut replies = Vec::new();
                    self.close_and_release(&mut replies);
                }
                self.answer_drained();
            }
        }
    }

    /// Answers every stop request once nothing is left in flight.
    fn answer_drained(&mut self) {
        let answer = match &self.halted {
            Some(reason) => Drained::Halted(reason.clone()),
            None if self.in_flight() == 0 => Drained::Flushed,
            None => return,
        };
        for waiter in self.stopping.iter_mut().flat_map(|w| w.drain(..)) {
            let _ = waiter.send(answer.clone());
        }
    }

    /// Runs the transactions that found no room in the mini-block that just
    /// closed; they open the next one. Not between a mini-block's close and
    /// its block's close: `close_block` runs every deferred tx itself.
    fn resume_deferred(&mut self) {
        if self.halted() {
            return;
        }
        self.seq.run_deferred_for_room();
        if self.seq.mini_block_has_txs() {
            self.mini_opened.get_or_insert_with(Instant::now);
        }
    }

    /// Sends a record to the log; the storage queue has room by construction
    /// ([`super::timing::STORAGE_QUEUE_CAPACITY`]), so a full queue is a fault.
    fn log(&mut self, kind: RecordKind, payload: Vec<u8>) {
        let Some(log) = &mut self.log else {
            return;
        };
        match log.to_storage.try_send(AppendRequest { kind, payload }) {
            Ok(()) => {
                log.book.record_sent();
                METRICS
                    .storage_in_flight
                    .store(log.book.in_flight(), Relaxed);
            }
            Err(_) => self.halt("the storage queue is full or closed".into()),
        }
    }

    /// Stops preconfirming: nothing after the last durable record is ever
    /// published; held replies and waiters are refused.
    pub(super) fn halt(&mut self, reason: String) {
        if self.halted() {
            return;
        }
        tracing::error!(reason = %reason, "the node stops preconfirming");
        self.pending_events.clear();
        let refused = self.log.as_mut().map(|log| log.book.halt());
        let waiters = self.waiters.drain().map(|(_, waiter)| waiter);
        for reply in refused.into_iter().flatten().chain(waiters) {
            let _ = reply.send(SeqReply::Rejected(SubmitError::Halted(reason.clone())));
        }
        self.halted = Some(reason);
        self.answer_drained();
    }

    /// Makes the current view, `replies` and the pending events visible:
    /// now, or once every record sent so far is durable.
    fn release(&mut self, replies: &mut Replies) {
        // A verifier makes nothing visible of a block before its header
        // passed the check at its seal: its mini-blocks' views, replies and
        // events wait for the release that follows the seal.
        if self.verifier && !self.seq.all_sealed() {
            return;
        }
        let view = Arc::new(self.seq.view().clone());
        let replies = std::mem::take(replies);
        let events = std::mem::take(&mut self.pending_events);
        let released = match &mut self.log {
            Some(log) => log.book.release(view, replies, events),
            None => Some(Released {
                view: Some(view),
                replies,
                events,
                checkpoint: None,
            }),
        };
        if let Some(released) = released {
            self.publish(released);
        }
    }

    /// Publishes a release: the view first, so that a client holding its
    /// reply finds its transaction; then answers, events and a checkpoint.
    fn publish(&mut self, released: Released) {
        if let Some(view) = released.view {
            if let Some(feed) = self.log.as_mut().and_then(|log| log.history.as_mut()) {
                feed.feed(&view);
            }
            if self.replica {
                self.note_lag(view.mini_block());
            }
            self.published.store(view);
        }
        for (reply, answer) in released.replies {
            if matches!(answer, SeqReply::Preconfirmed(_)) {
                METRICS.preconfirmed.fetch_add(1, Relaxed);
            }
            // A client that gave up (timeout, disconnect) dropped its receiver.
            let _ = reply.send(answer);
        }
        for event in released.events {
            self.events.publish(event);
        }
        if let Some(job) = released.checkpoint
            && let Some(to) = self
                .log
                .as_ref()
                .and_then(|log| log.to_checkpoints.as_ref())
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

    /// The log says its first `records` records are durable. A mini-block
    /// left open while the flush ran closes now.
    pub(super) fn on_durable(&mut self, records: u64) {
        let Some(log) = &mut self.log else {
            return;
        };
        let released = log.book.on_durable(records);
        METRICS
            .storage_in_flight
            .store(log.book.in_flight(), Relaxed);
        self.publish(released);
        self.close_if_due();
        self.arm_linger();
        if self.stopping.is_some() {
            self.answer_drained();
        }
    }

    /// The block timer fired: closes the open mini-block and the block, and
    /// returns the block's seal job for the state-root worker.
    pub(super) fn close_block(&mut self, now_ms: u64) -> Option<SealJob> {
        if self.halted() || !self.seq.can_close_block() {
            return None;
        }
        let mut replies = Vec::new();
        self.close_and_release(&mut replies);
        let mut job = self.seq.close_block(now_ms);
        self.ask_trie_export(&mut job);
        // Deferred transactions may have run in the new block.
        self.close_and_release(&mut replies);
        if !self.halted() {
            self.release(&mut replies);
        }
        self.waiters.retain(|_, w| !w.is_canceled());
        Some(job)
    }

    /// The state-root worker's roots for the oldest closed block: seals it,
    /// logs the seal, and publishes it.
    pub(super) fn finish_seal(&mut self, roots: fulmen_chain::block::SealRoots) {
        if self.halted() {
            return;
        }
        // A replica seals a block only against its upstream's header.
        if self.replica && !self.expected.contains_key(&roots.number) {
            self.roots_waiting.push_back(roots);
            return;
        }
        let sealed = self.seq.finish_seal(roots);
        // A verifier or a replica never makes visible a block whose header
        // is not the one the sequencer sealed: it stops, naming the first
        // difference.
        if let Some(expected) = self.expected.remove(&sealed.header.number)
            && let Some(diff) =
                fulmen_chain::header_diff::first_difference(&sealed.header, &expected)
        {
            let role = if self.replica {
                "replica: block"
            } else {
                "verifier: L2 block"
            };
            self.halt(format!(
                "{role} {} is not the sequencer's: {diff} (this block is not served)",
                sealed.header.number
            ));
            return;
        }
        METRICS.blocks.fetch_add(1, Relaxed);
        let state = self.seq.view().state();
        METRICS
            .accounts
            .store(state.account_count() as u64, Relaxed);
        METRICS.slots.store(state.slot_count() as u64, Relaxed);
        tracing::debug!(number = sealed.header.number, hash = %sealed.hash, txs = sealed.txs.len(), "sealed block");
        let mut replies = Vec::new();
        // Mini-blocks that ran meanwhile go first: the log keeps
        // mini-blocks before the seal that follows them.
        self.close_and_release(&mut replies);
        if self.log.is_some() {
            let mut payload = Vec::with_capacity(700);
            encode_seal(&sealed.header, sealed.size, &mut payload);
            self.log(RecordKind::BlockSeal, payload);
            self.schedule_checkpoint(&sealed);
        }
        if !self.halted() {
            self.pending_events.push(ChainEvent::Sealed(sealed));
            self.release(&mut replies);
        }
    }

    /// For a block that gets a checkpoint: asks the state-root worker for
    /// the trie's references after it, for the image.
    fn ask_trie_export(&mut self, job: &mut SealJob) {
        let Some(log) = &self.log else {
            return;
        };
        if log.to_checkpoints.is_some() && log.book.checkpoint_due_at(job.ctx.number) {
            let slot = fulmen_chain::block::TrieExportSlot::default();
            job.trie_export = Some(slot.clone());
            self.trie_export = Some((job.ctx.number, slot));
        }
    }

    /// After block `sealed` was logged: when a checkpoint is due, logs its
    /// marker (with the DA records so far) and schedules it, to start once
    /// the seal and the marker are durable.
    fn schedule_checkpoint(&mut self, sealed: &SealedBlock) {
        let number = sealed.header.number;
        // The worker filled the slot before it answered with the roots.
        // Taken first (a later block's is left), so that no early return
        // keeps the bytes.
        let trie = self
            .trie_export
            .take_if(|(block, _)| *block <= number)
            .filter(|(block, _)| *block == number)
            .and_then(|(_, slot)| slot.lock().ok()?.take())
            .unwrap_or_default();
        let Some(log) = &self.log else {
            return;
        };
        if log.to_checkpoints.is_none() || !log.book.checkpoint_due_at(number) {
            return;
        }
        let Some(state) = self.seq.view().state_at(number).cloned() else {
            return;
        };
        let view = self.seq.view();
        let block_hashes = (number.saturating_sub(BLOCKHASH_WINDOW - 1)..=number)
            .map(|n| view.block_hashes().get(n))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        let mut marker = Vec::new();
        fulmen_chain::persist::encode_checkpoint_marker(
            &fulmen_chain::persist::CheckpointMarker {
                number,
                hash: sealed.hash,
                da_records: log.da_records.clone(),
                block_hashes,
            },
            &mut marker,
        );
        if marker.len() <= self.seq.record_bytes_max() {
            self.log(RecordKind::CheckpointMarker, marker);
        } else {
            // Boot from this checkpoint then reads the whole log.
            tracing::warn!(
                number,
                bytes = marker.len(),
                "the checkpoint marker (the DA records so far) is larger than a log record may be; it is not logged"
            );
        }
        let Some(log) = &mut self.log else {
            return;
        };
        log.book.schedule_checkpoint(CheckpointJob {
            meta: CheckpointMeta {
                number,
                hash: sealed.hash,
                state_root: sealed.header.state_root,
            },
            state,
            trie,
        });
    }

    /// A verifier: executes a derived block as the sequencer did and closes
    /// it; its seal job goes to the state-root worker. A block partly
    /// applied before a restart (its first mini-blocks logged) goes on after
    /// them. Any transaction refused, parked or deferred here was included
    /// by the sequencer: the chains differ, and the error says where.
    pub(super) fn apply_derived(
        &mut self,
        block: fulmen_chain::msg::DerivedBlock,
    ) -> Result<SealJob, String> {
        if let Some(reason) = &self.halted {
            return Err(format!("the log failed: {reason}"));
        }
        let number = block.number;
        let open = self.seq.open_number();
        if let Some(expected) = block.expected {
            self.expected.insert(number, expected);
        }
        if number != open {
            return Err(format!(
                "derived L2 block {number} arrived while block {open} is open"
            ));
        }
        // The sequencer stamps blocks with its clock: a timestamp far ahead
        // of ours is not one of its blocks (and near u64::MAX the next
        // block's `parent + 1` would overflow).
        let latest_s = super::timing::now_ms() / 1000 + TIMESTAMP_AHEAD_MAX_S;
        if block.timestamp > latest_s {
            return Err(format!(
                "block {number} has timestamp {}, more than {TIMESTAMP_AHEAD_MAX_S} s ahead of this clock",
                block.timestamp
            ));
        }
        let done = self.seq.open_tx_hashes();
        let derived: Vec<_> = block.txs.iter().map(|tx| tx.hash).collect();
        if done.is_empty() {
            self.seq.set_open_timestamp(block.timestamp)?;
        } else if !derived.starts_with(&done) || self.seq.open_timestamp() != block.timestamp {
            return Err(format!(
                "block {number}: the {} transactions logged before the restart are not the first \
                 of the derived block (or its timestamp differs)",
                done.len()
            ));
        }
        let mut replies = Vec::new();
        for tx in block.txs.into_iter().skip(done.len()) {
            let hash = tx.hash;
            let (reply, _answer) = futures::channel::oneshot::channel();
            self.handle(
                SeqRequest {
                    tx,
                    reply,
                    wait_for_receipt: false,
                },
                &mut replies,
            );
            match replies.last() {
                Some((_, SeqReply::Preconfirmed(_))) => {}
                Some((_, other)) => {
                    return Err(format!(
                        "block {number}: tx {hash}, which the sequencer included, is not accepted here: {other:?}"
                    ));
                }
                None => return Err(format!("block {number}: tx {hash} was not executed")),
            }
            if self.mini_block_full() {
                self.close_and_release(&mut replies);
            }
        }
        self.close_block(0)
            .ok_or_else(|| format!("block {number}: the log failed"))
    }

    /// Closes the mini-block (if any transaction ran), logs it, and releases
    /// it with `replies` and the waiters it wakes.
    pub(super) fn close_and_release(&mut self, replies: &mut Replies) {
        self.close_and_release_at(now_us(), None, replies);
    }

    /// [`Self::close_and_release`] at close time `timestamp_us`; when
    /// `expect` is given (a replica: the upstream's hash of this
    /// mini-block), a mini-block whose hash differs halts the node
    /// instead.
    pub(super) fn close_and_release_at(
        &mut self,
        timestamp_us: u64,
        expect: Option<alloy_primitives::B256>,
        replies: &mut Replies,
    ) {
        let before = self.seq.view().state().clone();
        let closed = self.seq.close_mini_block_at(timestamp_us);
        if let (Some(mini), Some(expected)) = (&closed, expect)
            && mini.hash != expected
        {
            self.halt(format!(
                "replica: mini-block {} here hashes to {}, the upstream's to {expected} \
                 (it is not served)",
                mini.number, mini.hash
            ));
        } else if let Some(mini) = closed {
            METRICS.mini_blocks.fetch_add(1, Relaxed);
            self.mini_opened = None;
            if std::mem::take(&mut self.mini_waited) {
                METRICS.group_commit_waits.fetch_add(1, Relaxed);
            }
            let logs = self.log.is_some();
            let events = self.builds_events();
            let net = if logs || events {
                let diffs = self.seq.mini_block_diffs(&mini);
                NetChanges::compute(diffs, &before, self.seq.view().state())
            } else {
                NetChanges::default()
            };
            if logs {
                let mut payload = Vec::with_capacity(512 * mini.txs.len());
                self.seq.mini_block_record(&mini, &net, &mut payload);
                self.log(RecordKind::MiniBlock, payload);
            }
            // Nobody subscribed anywhere: skip copying the diffs. (A client
            // subscribing now gets mini-blocks that close after it, or
            // resumes from the log.)
            if events {
                let event = self.mini_block_event(&mini, net);
                self.pending_events
                    .push(ChainEvent::MiniBlock(Arc::new(event)));
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

    /// A replica: the upstream's header of block `header.number`, which
    /// this node's must equal; seals roots that waited for it.
    pub(super) fn expect_header(&mut self, header: alloy_consensus::Header) {
        self.expected.insert(header.number, header);
        while let Some(roots) = self.roots_waiting.pop_front() {
            if !self.expected.contains_key(&roots.number) {
                self.roots_waiting.push_front(roots);
                break;
            }
            self.finish_seal(roots);
        }
    }

    /// A replica: whether the upstream's header of block `number` is here.
    pub(super) fn expected_header(&self, number: u64) -> Option<&alloy_consensus::Header> {
        self.expected.get(&number)
    }

    /// A replica: mini-block `number`, closed by the upstream at
    /// `timestamp_us`, waits for its release.
    pub(super) fn mark_lag(&mut self, number: u64, timestamp_us: u64) {
        self.lag_marks.push_back((number, timestamp_us));
    }

    /// A replica published every mini-block up to `newest`: their lag.
    fn note_lag(&mut self, newest: u64) {
        let now = now_us();
        while let Some(&(number, closed_us)) = self.lag_marks.front() {
            if number > newest {
                break;
            }
            self.lag_marks.pop_front();
            let lag = now.saturating_sub(closed_us);
            METRICS.replica_lag.observe(Duration::from_micros(lag));
            METRICS.replica_lag_us.store(lag, Relaxed);
        }
        let upstream = METRICS.replica_upstream_mini_block.load(Relaxed);
        METRICS
            .replica_lag_mini_blocks
            .store(upstream.saturating_sub(newest), Relaxed);
    }

    /// A replica: closes the open block where the upstream did, and
    /// publishes the view with its state; the seal job is returned.
    pub(super) fn close_upstream_block(
        &mut self,
        next: Option<fulmen_chain::block::BlockContext>,
    ) -> SealJob {
        let mut job = self.seq.close_upstream_block(next);
        self.ask_trie_export(&mut job);
        if !self.halted() {
            self.release(&mut Vec::new());
        }
        job
    }

    /// Whether some net core has subscribers.
    fn builds_events(&self) -> bool {
        !self.subscribed_cores.is_empty()
    }

    /// The subscription event of `mini`, the mini-block just closed.
    fn mini_block_event(&self, mini: &ClosedMiniBlock, net: NetChanges) -> MiniBlockEvent {
        MiniBlockEvent {
            number: mini.number,
            block: mini.block,
            block_timestamp: mini.txs.first().map_or(0, |t| t.block_timestamp),
            index: mini.index,
            timestamp_us: mini.timestamp_us,
            gas_used: mini.txs.iter().map(|t| t.gas_used).sum(),
            txs: mini.txs.clone(),
            diffs: self.seq.mini_block_diffs(mini).to_vec(),
            net,
            parent_hash: mini.parent_hash,
            hash: mini.hash,
            ctx: self.seq.open_ctx(),
        }
    }
}
