//! The seq core's actors: one task per input, each borrowing the shared
//! [`SeqState`] for one step at a time (never across an `await`).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::SelectAll;
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};

use fulmen_chain::block::SealRoots;
use fulmen_chain::metrics::METRICS;
use fulmen_chain::msg::{MerkleRequest, SeqRequest};
use fulmen_storage::writer::StorageAck;

use super::state::SeqState;
use super::timing::{MINI_BLOCK_TXS_MAX, now_ms};

/// The shared state, as each actor holds it.
pub(super) type Shared = Rc<RefCell<SeqState>>;

/// Every inbox is closed.
struct Closed;

/// The next transaction, or `None` at the end or start of a group-commit
/// wait ([`super::linger`]). While the open mini-block waits for more
/// transactions the executor's sleeps are quiet until its deadline: the
/// net cores' sends do not wake it one by one, and it takes them all when
/// the deadline passes.
async fn next_request(
    state: &Shared,
    requests: &mut SelectAll<ConnectedReceiver<SeqRequest>>,
    linger_wake: &glommio::sync::Semaphore,
) -> Result<Option<SeqRequest>, Closed> {
    use futures::future::{Either, select};
    let deadline = state.borrow().linger_deadline();
    let request = match deadline {
        Some(deadline) => {
            state.borrow_mut().note_linger_wait();
            glommio::executor().defer_remote_wakes_until(Some(deadline));
            let timer = std::pin::pin!(glommio::timer::sleep(
                deadline.saturating_duration_since(Instant::now())
            ));
            let next = select(requests.next(), timer).await;
            glommio::executor().defer_remote_wakes_until(None);
            match next {
                Either::Left((request, _)) => request,
                Either::Right(_) => return Ok(None),
            }
        }
        None => {
            let woken = std::pin::pin!(linger_wake.acquire(1));
            match select(requests.next(), woken).await {
                Either::Left((request, _)) => request,
                Either::Right(_) => {
                    state.borrow_mut().disarm_linger();
                    return Ok(None);
                }
            }
        }
    };
    request.map(Some).ok_or(Closed)
}

/// Transactions from the net cores: drains what already waits into the open
/// mini-block, then closes it or holds it while the log flushes (or, under
/// load, for more transactions). A full mini-block that cannot close waits
/// for the log (`progress`), and the inboxes fill meanwhile (the net cores
/// answer "inbox full").
pub(super) async fn take_requests(
    state: Shared,
    mut requests: SelectAll<ConnectedReceiver<SeqRequest>>,
    (progress, linger_wake): (Rc<glommio::sync::Semaphore>, Rc<glommio::sync::Semaphore>),
    mini_block_max: Duration,
) {
    let mut replies = Vec::new();
    loop {
        let Ok(first) = next_request(&state, &mut requests, &linger_wake).await else {
            break;
        };
        {
            let mut state = state.borrow_mut();
            state.drain_control();
            let mut batch = 0;
            if let Some(first) = first {
                state.handle(first, &mut replies);
                batch = 1;
            }
            // Under load one mini-block carries many transactions; at low
            // load each transaction closes its own.
            let opened = Instant::now();
            while batch < MINI_BLOCK_TXS_MAX
                && !state.mini_block_full()
                && opened.elapsed() < mini_block_max
                && let Some(Some(more)) = futures::FutureExt::now_or_never(requests.next())
            {
                state.handle(more, &mut replies);
                batch += 1;
            }
            if batch == 0 {
                state.close_if_due();
            } else {
                state.close_or_hold(&mut replies);
            }
        }
        while state.borrow().must_wait_for_log() {
            let _ = progress.acquire(1).await;
        }
        glommio::yield_if_needed().await;
    }
}

/// A verifier's input: blocks derived from L1, executed and closed one by
/// one, each seal job to the state-root worker; waits for the log as
/// [`take_requests`] does. A block that does not execute as the sequencer's
/// did stops the verifier (its chain would differ): the error is logged and
/// the node halts.
/// How often a verifier's seq core, waiting for a derived block, checks
/// whether it halted.
const HALT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

pub(super) async fn take_derived(
    state: Shared,
    mut derived: futures::channel::mpsc::Receiver<fulmen_chain::msg::DerivedBlock>,
    to_merkle: ConnectedSender<MerkleRequest>,
    progress: Rc<glommio::sync::Semaphore>,
    sealed: Rc<glommio::sync::Semaphore>,
) {
    loop {
        // A halt (a block that is not the sequencer's, or the log) drops
        // the receiver, so that the verifier thread sees the seq core stop.
        let tick = std::pin::pin!(glommio::timer::sleep(HALT_POLL));
        let next = futures::future::select(derived.next(), tick).await;
        let block = match next {
            futures::future::Either::Left((Some(block), _)) => block,
            futures::future::Either::Left((None, _)) => return,
            futures::future::Either::Right(_) => {
                if state.borrow().halted() {
                    return;
                }
                continue;
            }
        };
        if state.borrow().halted() {
            return;
        }
        let number = block.number;
        let applied = {
            let mut state = state.borrow_mut();
            state.drain_control();
            state.apply_derived(block)
        };
        match applied {
            Ok(job) => {
                tracing::debug!(number, txs = job.txs.len(), "derived block closed");
                if to_merkle.send(MerkleRequest::Seal(job)).await.is_err() {
                    tracing::error!("state-root worker is gone; sealing stops");
                    return;
                }
                // The next block runs once this one is sealed and checked,
                // so that no view ever shows an unchecked block's state.
                while !state.borrow().halted()
                    && state.borrow().seq.view().head().header.number < number
                {
                    let _ = sealed.acquire(1).await;
                }
            }
            Err(e) => {
                let reason = format!("verifier: derived block {number}: {e}");
                tracing::error!("{reason}; this node stops following L1");
                state.borrow_mut().halt(reason);
                return;
            }
        }
        while state.borrow().must_wait_for_log() {
            let _ = progress.acquire(1).await;
        }
        glommio::yield_if_needed().await;
    }
}

/// The log's acknowledgements: releases what became durable, or halts.
pub(super) async fn apply_acks(
    state: Shared,
    acks: ConnectedReceiver<StorageAck>,
    progress: Rc<glommio::sync::Semaphore>,
) {
    while let Some(ack) = acks.recv().await {
        match ack {
            StorageAck::Durable { records, flush_us } => {
                METRICS
                    .flush_latency
                    .observe(Duration::from_micros(flush_us));
                tracing::trace!(records, flush_us, "durable");
                state.borrow_mut().on_durable(records);
            }
            StorageAck::Failed(reason) => state.borrow_mut().halt(reason),
        }
        progress.signal(1);
    }
}

/// How often the block timer checks whether the parent of the block it
/// is to close is sealed.
const SEAL_WAIT_POLL: Duration = Duration::from_millis(1);

/// The block timer: every `period` closes the open block and sends its seal
/// job to the state-root worker.
pub(super) async fn close_blocks(
    state: Shared,
    to_merkle: ConnectedSender<MerkleRequest>,
    period: Duration,
) {
    let mut next = Instant::now() + period;
    loop {
        glommio::timer::sleep(next.saturating_duration_since(Instant::now())).await;
        next += period;
        // A block closes once its parent is sealed (its system calls need
        // the parent's hash): with the state-root worker a block behind,
        // the close waits for it instead of queueing more.
        while !state.borrow().seq.can_close_block() && !state.borrow().halted() {
            glommio::timer::sleep(SEAL_WAIT_POLL).await;
        }
        let began = Instant::now();
        let Some(job) = state.borrow_mut().close_block(now_ms()) else {
            continue;
        };
        tracing::debug!(
            number = job.ctx.number,
            txs = job.txs.len(),
            us = began.elapsed().as_micros() as u64,
            "closed block"
        );
        if to_merkle.send(MerkleRequest::Seal(job)).await.is_err() {
            tracing::error!("state-root worker is gone; sealing stops");
            return;
        }
    }
}

/// The state-root worker's answers: seals, logs and publishes each block.
pub(super) async fn finish_seals(
    state: Shared,
    from_merkle: ConnectedReceiver<SealRoots>,
    sealed: Rc<glommio::sync::Semaphore>,
) {
    while let Some(roots) = from_merkle.recv().await {
        let began = Instant::now();
        let number = roots.number;
        state.borrow_mut().finish_seal(roots);
        sealed.signal(1);
        tracing::debug!(
            number,
            us = began.elapsed().as_micros() as u64,
            "published seal"
        );
    }
}

/// Control messages that arrive while the inboxes are idle: subscribers
/// and shutdown. (Busy, [`take_requests`] reads them before each batch.)
pub(super) async fn obey_control(state: Shared) {
    loop {
        let next = futures::future::poll_fn(|cx| state.borrow_mut().control.poll_next_unpin(cx));
        match next.await {
            Some(message) => state.borrow_mut().control(message),
            None => return,
        }
    }
}
