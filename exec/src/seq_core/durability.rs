//! The seq core's durability bookkeeping, free of any executor: what may be
//! shown to clients and subscribers only once its log record is durable.
//!
//! Every record the seq core sends to the log is counted (`sent`); the log
//! acknowledges a durable prefix (`durable`). A view, its replies and its
//! subscription events are released when every record sent before them is
//! durable: at once in `memory` mode or when nothing is in flight, otherwise
//! held until the acknowledgement that covers them. A checkpoint of a sealed
//! block starts once the block's seal record is durable. When the log fails
//! the held replies are handed back to be refused, and nothing held is ever
//! published.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::channel::oneshot;

use fulmen_chain::events::ChainEvent;
use fulmen_chain::msg::SeqReply;
use fulmen_chain::view::ChainView;
use fulmen_storage::checkpoint::CheckpointJob;

/// Answers waiting to go out, with where each goes.
pub(crate) type Replies = Vec<(oneshot::Sender<SeqReply>, SeqReply)>;

/// What becomes visible now, in this order: the view, then the replies and
/// events (a client that gets a reply finds its transaction in the view).
#[derive(Default)]
pub(crate) struct Released {
    /// The newest view to publish, if any.
    pub view: Option<Arc<ChainView>>,
    /// Answers to deliver.
    pub replies: Replies,
    /// Events to publish, in order.
    pub events: Vec<ChainEvent>,
    /// A checkpoint whose block is now durable.
    pub checkpoint: Option<CheckpointJob>,
}

/// A view with its replies and events, waiting for record `upto` to be durable.
struct Held {
    upto: u64,
    view: Arc<ChainView>,
    replies: Replies,
    events: Vec<ChainEvent>,
}

/// The bookkeeping itself.
pub(crate) struct Durability {
    /// `durable` mode: releases wait for the log. `memory`: they do not
    /// (the log is still written and counted).
    wait_for_log: bool,
    /// Records sent to the log so far.
    sent: u64,
    /// Records the log has reported durable (a prefix of `sent`).
    durable: u64,
    /// Releases waiting for the log, oldest first, with non-decreasing `upto`.
    held: VecDeque<Held>,
    /// Every how many blocks a checkpoint is taken (0: never).
    checkpoint_every_blocks: u64,
    /// A checkpoint waiting for record `.0` (its block's seal) to be durable.
    checkpoint_due: Option<(u64, CheckpointJob)>,
    /// Who waits for record `.0` to be durable, whatever the mode.
    durable_waiters: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Durability {
    /// Bookkeeping for a log with nothing sent yet.
    pub(crate) fn new(wait_for_log: bool, checkpoint_every_blocks: u64) -> Self {
        Self {
            wait_for_log,
            sent: 0,
            durable: 0,
            held: VecDeque::new(),
            checkpoint_every_blocks,
            checkpoint_due: None,
            durable_waiters: VecDeque::new(),
        }
    }

    /// Answers `waiter` once every record sent so far is durable (at once
    /// if none is in flight), in `memory` mode too.
    pub(crate) fn notify_when_durable(&mut self, waiter: oneshot::Sender<()>) {
        if self.durable == self.sent {
            let _ = waiter.send(());
            return;
        }
        self.durable_waiters.push_back((self.sent, waiter));
    }

    /// One more record went to the log.
    pub(crate) fn record_sent(&mut self) {
        self.sent += 1;
        assert!(self.durable <= self.sent);
    }

    /// Records sent and not yet durable.
    pub(crate) fn in_flight(&self) -> u64 {
        self.sent - self.durable
    }

    /// True in `durable` mode.
    pub(crate) fn waits_for_log(&self) -> bool {
        self.wait_for_log
    }

    /// Releases `view` with `replies` and `events` now, or holds them until
    /// every record sent so far is durable (then returns nothing).
    pub(crate) fn release(
        &mut self,
        view: Arc<ChainView>,
        replies: Replies,
        events: Vec<ChainEvent>,
    ) -> Option<Released> {
        if self.wait_for_log && self.durable < self.sent {
            if let Some(last) = self.held.back() {
                assert!(last.upto <= self.sent, "held releases keep log order");
            }
            self.held.push_back(Held {
                upto: self.sent,
                view,
                replies,
                events,
            });
            return None;
        }
        Some(Released {
            view: Some(view),
            replies,
            events,
            checkpoint: None,
        })
    }

    /// The log reports its first `records` records durable: everything held
    /// behind them is released, newest view last.
    pub(crate) fn on_durable(&mut self, records: u64) -> Released {
        assert!(records >= self.durable, "the durable end never moves back");
        assert!(records <= self.sent, "only sent records become durable");
        self.durable = records;
        let mut released = Released::default();
        while self.held.front().is_some_and(|h| h.upto <= records) {
            let held = self.held.pop_front().expect("checked above");
            released.replies.extend(held.replies);
            released.events.extend(held.events);
            released.view = Some(held.view);
        }
        while self
            .durable_waiters
            .front()
            .is_some_and(|(upto, _)| *upto <= records)
        {
            let (_, waiter) = self.durable_waiters.pop_front().expect("checked above");
            let _ = waiter.send(());
        }
        if self
            .checkpoint_due
            .as_ref()
            .is_some_and(|(upto, _)| *upto <= records)
        {
            released.checkpoint = self.checkpoint_due.take().map(|(_, job)| job);
        }
        released
    }

    /// True when block `number` gets a checkpoint.
    pub(crate) fn checkpoint_due_at(&self, number: u64) -> bool {
        self.checkpoint_every_blocks != 0 && number.is_multiple_of(self.checkpoint_every_blocks)
    }

    /// `job` starts once every record sent so far (its block's seal
    /// included) is durable. A newer job replaces one still waiting.
    pub(crate) fn schedule_checkpoint(&mut self, job: CheckpointJob) {
        assert!(self.checkpoint_due_at(job.meta.number));
        self.checkpoint_due = Some((self.sent, job));
    }

    /// The log failed: nothing held will ever be published. Returns the
    /// held replies' senders, to be refused.
    pub(crate) fn halt(&mut self) -> Vec<oneshot::Sender<SeqReply>> {
        self.checkpoint_due = None;
        // Dropped unanswered: the waiter sees the failure.
        self.durable_waiters.clear();
        self.held
            .drain(..)
            .flat_map(|held| held.replies.into_iter().map(|(reply, _)| reply))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequencer::{Genesis, PoolLimits, Sequencer};
    use crate::testkit::spec;
    use fulmen_chain::msg::SubmitError;
    use fulmen_storage::checkpoint::CheckpointMeta;

    fn view() -> Arc<ChainView> {
        let spec = spec(30_000_000);
        let seq = Sequencer::new(spec.clone(), PoolLimits::default(), &Genesis::new(&spec), 0);
        Arc::new(seq.view().clone())
    }

    fn reply() -> (
        (oneshot::Sender<SeqReply>, SeqReply),
        oneshot::Receiver<SeqReply>,
    ) {
        let (tx, rx) = oneshot::channel();
        ((tx, SeqReply::Rejected(SubmitError::PoolFull)), rx)
    }

    fn job(number: u64) -> CheckpointJob {
        CheckpointJob {
            meta: CheckpointMeta {
                number,
                hash: Default::default(),
                state_root: Default::default(),
            },
            state: Default::default(),
            trie: Vec::new(),
        }
    }

    #[test]
    fn memory_mode_releases_at_once_with_records_in_flight() {
        let mut book = Durability::new(false, 0);
        book.record_sent();
        let (r, _rx) = reply();
        let released = book.release(view(), vec![r], Vec::new()).expect("at once");
        assert_eq!(released.replies.len(), 1);
        assert!(released.view.is_some());
        assert_eq!(book.in_flight(), 1);
    }

    #[test]
    fn durable_mode_holds_until_the_covering_ack_in_order() {
        let mut book = Durability::new(true, 0);
        // Nothing in flight: released at once.
        assert!(book.release(view(), Vec::new(), Vec::new()).is_some());
        book.record_sent();
        let (first, _a) = reply();
        assert!(book.release(view(), vec![first], Vec::new()).is_none());
        book.record_sent();
        book.record_sent();
        let (second, _b) = reply();
        assert!(book.release(view(), vec![second], Vec::new()).is_none());
        // Record 1 durable: the first release only.
        let released = book.on_durable(1);
        assert_eq!(released.replies.len(), 1);
        assert!(released.view.is_some());
        // Record 2 durable: the second waits for record 3.
        let released = book.on_durable(2);
        assert!(released.replies.is_empty());
        assert!(released.view.is_none());
        let released = book.on_durable(3);
        assert_eq!(released.replies.len(), 1);
        assert_eq!(book.in_flight(), 0);
    }

    #[test]
    fn a_checkpoint_starts_once_its_seal_is_durable() {
        let mut book = Durability::new(true, 4);
        assert!(!book.checkpoint_due_at(3));
        assert!(book.checkpoint_due_at(8));
        book.record_sent();
        book.schedule_checkpoint(job(8));
        book.record_sent();
        assert!(book.on_durable(0).checkpoint.is_none());
        assert_eq!(book.on_durable(1).checkpoint.expect("due").meta.number, 8);
        assert!(book.on_durable(2).checkpoint.is_none(), "started once");
    }

    #[test]
    fn halting_hands_back_every_held_reply_and_publishes_nothing() {
        let mut book = Durability::new(true, 1);
        book.record_sent();
        let (a, _ra) = reply();
        let (b, _rb) = reply();
        assert!(book.release(view(), vec![a, b], Vec::new()).is_none());
        book.schedule_checkpoint(job(1));
        assert_eq!(book.halt().len(), 2);
        let released = book.on_durable(1);
        assert!(released.view.is_none());
        assert!(released.replies.is_empty());
        assert!(released.checkpoint.is_none());
    }

    #[test]
    fn durable_waiters_wait_for_the_log_in_every_mode() {
        let mut book = Durability::new(false, 0);
        let (now, mut now_rx) = oneshot::channel();
        book.notify_when_durable(now);
        assert_eq!(now_rx.try_recv(), Ok(Some(())), "nothing in flight");
        book.record_sent();
        let (later, mut later_rx) = oneshot::channel();
        book.notify_when_durable(later);
        assert_eq!(later_rx.try_recv(), Ok(None), "memory mode still waits");
        book.on_durable(1);
        assert_eq!(later_rx.try_recv(), Ok(Some(())));
        book.record_sent();
        let (lost, mut lost_rx) = oneshot::channel();
        book.notify_when_durable(lost);
        book.halt();
        assert!(lost_rx.try_recv().is_err(), "a failed log drops the waiter");
    }

    #[test]
    #[should_panic(expected = "the durable end never moves back")]
    fn the_durable_end_never_moves_back() {
        let mut book = Durability::new(true, 0);
        book.record_sent();
        book.record_sent();
        book.on_durable(2);
        book.on_durable(1);
    }

    #[test]
    #[should_panic(expected = "only sent records become durable")]
    fn an_ack_past_what_was_sent_is_a_fault() {
        let mut book = Durability::new(true, 0);
        book.on_durable(1);
    }
}
