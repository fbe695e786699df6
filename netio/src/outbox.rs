//! A WebSocket connection's send queue: bounded in bytes, filled by request
//! tasks and the subscription fan-out, drained by the connection's writer.
//! Pushing never waits. A push that would pass the bound closes the
//! connection instead ("slow consumer"), so one client that does not read
//! can never hold back the sequencer or other subscribers.
//!
//! Two bounds apply: `bytes_max` per connection (text queued and not yet
//! taken by the writer), and a node-wide budget shared by every connection
//! on every net core (text queued plus text the writer has taken but not yet
//! handed to the kernel). A connection with a backlog whose push would pass
//! the node-wide budget is closed as a slow consumer; a connection with
//! nothing outstanding still gets its notification (so subscribers that keep
//! up are never cut off because others fell behind), but a response is then
//! refused ([`Refused::NodeBudget`]) and the caller answers with a short
//! error instead.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Poll, Waker};

/// What the writer sends next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A JSON-RPC response or notification.
    Text(String),
    /// A keep-alive ping.
    Ping,
    /// The last frame: close with this code and reason.
    Close(u16, String),
}

/// Close code 1008: policy violation (slow consumer).
pub(crate) const CLOSE_POLICY: u16 = 1008;
/// Close code 1001: going away (idle timeout, node stopping).
pub(crate) const CLOSE_AWAY: u16 = 1001;
/// Close code 1009: message too big.
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;
/// Close code 1013: try again later (the node dropped events for this core).
pub(crate) const CLOSE_TRY_LATER: u16 = 1013;
/// Close code 1011: the server met an error it cannot serve past.
pub(crate) const CLOSE_INTERNAL: u16 = 1011;

/// The push did not fit: the connection is closing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Closing;

/// Why a response was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The connection is closing (it may have just been closed as a slow
    /// consumer).
    Closing,
    /// The node-wide budget is spent and this connection has nothing
    /// outstanding: it stays open, and the caller answers with a short error.
    NodeBudget {
        /// Bytes held by all connections.
        held: usize,
        /// The node-wide limit.
        max: usize,
    },
}

/// The node-wide send budget: bytes held for all WebSocket clients.
#[derive(Debug)]
pub(crate) struct SendBudget {
    held: Arc<AtomicUsize>,
    bytes_max: usize,
}

impl SendBudget {
    /// A budget of `bytes_max` over the shared counter `held`.
    pub(crate) fn new(held: Arc<AtomicUsize>, bytes_max: usize) -> Self {
        assert!(bytes_max > 0);
        Self { held, bytes_max }
    }

    /// Takes `n` bytes if they fit.
    fn try_take(&self, n: usize) -> Result<(), usize> {
        let before = self.held.fetch_add(n, Relaxed);
        if before.saturating_add(n) > self.bytes_max {
            self.held.fetch_sub(n, Relaxed);
            return Err(before);
        }
        Ok(())
    }

    /// Takes `n` bytes even past the limit.
    fn take(&self, n: usize) {
        self.held.fetch_add(n, Relaxed);
    }

    fn release(&self, n: usize) {
        let before = self.held.fetch_sub(n, Relaxed);
        assert!(before >= n, "send budget released more than it held");
    }
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Frame>,
    /// Bytes of text waiting in `queue`.
    bytes: usize,
    /// Bytes of text the writer took and has not yet handed to the kernel.
    writing: usize,
    /// A close frame is queued; nothing more is accepted.
    closing: bool,
    waker: Option<Waker>,
}

/// The bounded send queue of one connection.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: RefCell<State>,
    bytes_max: usize,
    budget: SendBudget,
}

impl Outbox {
    /// A queue holding at most `bytes_max` bytes of text (one larger message
    /// is still accepted when the queue is empty, so that a big response is
    /// never refused on an idle connection), within the node-wide `budget`.
    pub(crate) fn new(bytes_max: usize, budget: SendBudget) -> Self {
        assert!(bytes_max > 0);
        Self {
            state: RefCell::new(State::default()),
            bytes_max,
            budget,
        }
    }

    /// Queues a notification (or a short error); when it does not fit, the
    /// queue is emptied and the connection closes as a slow consumer.
    pub(crate) fn push(&self, text: String) -> Result<(), Closing> {
        match self.push_inner(text, true) {
            Ok(()) => Ok(()),
            Err(_) => Err(Closing),
        }
    }

    /// Queues a response. As [`Self::push`], except that on a connection with
    /// nothing outstanding a response that does not fit the node-wide budget
    /// is refused (and the connection stays open).
    pub(crate) fn push_response(&self, text: String) -> Result<(), Refused> {
        self.push_inner(text, false)
    }

    fn push_inner(&self, text: String, idle_may_exceed: bool) -> Result<(), Refused> {
        let mut state = self.state.borrow_mut();
        if state.closing {
            return Err(Refused::Closing);
        }
        let len = text.len();
        if state.bytes > 0 && state.bytes + len > self.bytes_max {
            let reason = format!(
                "slow consumer: {} bytes waiting, send buffer limit {} bytes",
                state.bytes, self.bytes_max
            );
            drop(state);
            self.close_slow(reason);
            return Err(Refused::Closing);
        }
        let outstanding = state.bytes + state.writing;
        if let Err(held) = self.budget.try_take(len) {
            let max = self.budget.bytes_max;
            if outstanding > 0 {
                let reason = format!(
                    "slow consumer: {outstanding} bytes waiting while the node's send buffers \
                     hold {held} bytes, node-wide limit {max} bytes"
                );
                drop(state);
                self.close_slow(reason);
                return Err(Refused::Closing);
            }
            if !idle_may_exceed {
                return Err(Refused::NodeBudget { held, max });
            }
            self.budget.take(len);
        }
        state.bytes += len;
        state.queue.push_back(Frame::Text(text));
        wake(&mut state);
        Ok(())
    }

    fn close_slow(&self, reason: String) {
        fulmen_chain::metrics::METRICS
            .ws_slow_consumers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.close(CLOSE_POLICY, reason);
    }

    /// Queues a ping unless the connection is closing.
    pub(crate) fn ping(&self) {
        let mut state = self.state.borrow_mut();
        if !state.closing {
            state.queue.push_back(Frame::Ping);
            wake(&mut state);
        }
    }

    /// Drops what waits and queues a close frame; later pushes fail. The
    /// first close wins.
    pub(crate) fn close(&self, code: u16, reason: String) {
        let mut state = self.state.borrow_mut();
        if state.closing {
            return;
        }
        tracing::debug!(code, reason = %reason, "closing a WebSocket connection");
        state.closing = true;
        state.queue.clear();
        // What the writer holds is given back too: the node stops counting
        // a closing connection (its last message lives at most
        // `close_grace_ms` more), so that closing slow consumers frees the
        // budget for the others at once.
        self.budget.release(state.bytes + state.writing);
        state.bytes = 0;
        state.writing = 0;
        state.queue.push_back(Frame::Close(code, reason));
        wake(&mut state);
    }

    /// Bytes of text queued or being written (on the node-wide budget).
    pub(crate) fn outstanding(&self) -> usize {
        let state = self.state.borrow();
        state.bytes + state.writing
    }

    /// True once a close frame was queued.
    pub(crate) fn is_closing(&self) -> bool {
        self.state.borrow().closing
    }

    /// True when nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.state.borrow().queue.is_empty()
    }

    /// The next frame, waiting for one. Its text stays on the node-wide
    /// budget until [`Self::written`] says the kernel has it.
    pub(crate) fn next(&self) -> impl Future<Output = Frame> + '_ {
        std::future::poll_fn(move |cx| {
            let mut state = self.state.borrow_mut();
            match state.queue.pop_front() {
                Some(frame) => {
                    if let Frame::Text(text) = &frame {
                        state.bytes -= text.len();
                        state.writing += text.len();
                    }
                    Poll::Ready(frame)
                }
                None => {
                    state.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }

    /// The writer handed `bytes` of taken text to the kernel.
    pub(crate) fn written(&self, bytes: usize) {
        let mut state = self.state.borrow_mut();
        if state.closing {
            // `close` gave it all back already.
            return;
        }
        assert!(state.writing >= bytes, "written more than was taken");
        state.writing -= bytes;
        self.budget.release(bytes);
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let state = self.state.get_mut();
        self.budget.release(state.bytes + state.writing);
    }
}

fn wake(state: &mut State) {
    if let Some(waker) = state.waker.take() {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn budget(held: &Arc<AtomicUsize>, bytes_max: usize) -> SendBudget {
        SendBudget::new(held.clone(), bytes_max)
    }

    fn outbox(bytes_max: usize) -> Outbox {
        Outbox::new(
            bytes_max,
            budget(&Arc::new(AtomicUsize::new(0)), usize::MAX),
        )
    }

    #[test]
    fn a_full_queue_closes_the_connection_with_the_reason() {
        let outbox = outbox(10);
        outbox.push("12345".into()).unwrap();
        outbox.push("67890".into()).unwrap();
        assert_eq!(outbox.push("x".into()), Err(Closing));
        assert!(outbox.is_closing());
        // What waited is dropped; the close frame goes next, then nothing.
        let Some(Frame::Close(code, reason)) = outbox.next().now_or_never() else {
            panic!("the close frame goes first")
        };
        assert_eq!(code, CLOSE_POLICY);
        assert!(
            reason.starts_with("slow consumer: 10 bytes waiting"),
            "{reason}"
        );
        assert_eq!(outbox.next().now_or_never(), None);
        assert_eq!(outbox.push("y".into()), Err(Closing));
    }

    #[test]
    fn draining_makes_room_and_one_big_message_fits_an_empty_queue() {
        let outbox = outbox(10);
        outbox.push("a".repeat(100)).unwrap();
        assert_eq!(
            outbox.next().now_or_never(),
            Some(Frame::Text("a".repeat(100)))
        );
        outbox.push("12345678".into()).unwrap();
        assert_eq!(
            outbox.next().now_or_never(),
            Some(Frame::Text("12345678".into()))
        );
        outbox.push("1234567890".into()).unwrap();
        outbox.ping();
        assert_eq!(
            outbox.next().now_or_never(),
            Some(Frame::Text("1234567890".into()))
        );
        assert_eq!(outbox.next().now_or_never(), Some(Frame::Ping));
        assert!(outbox.is_empty());
        assert!(!outbox.is_closing());
    }

    #[test]
    fn the_node_wide_budget_closes_backlogged_connections_only() {
        let held = Arc::new(AtomicUsize::new(0));
        let slow = Outbox::new(1000, budget(&held, 20));
        let healthy = Outbox::new(1000, budget(&held, 20));
        slow.push("a".repeat(15)).unwrap();
        assert_eq!(held.load(Relaxed), 15);
        // The healthy one has nothing outstanding: its notification passes
        // even though the node is over budget.
        healthy.push("b".repeat(10)).unwrap();
        assert_eq!(held.load(Relaxed), 25);
        // The writer took it but the kernel does not have it yet: still held.
        assert_eq!(
            healthy.next().now_or_never(),
            Some(Frame::Text("b".repeat(10)))
        );
        assert_eq!(held.load(Relaxed), 25);
        healthy.written(10);
        assert_eq!(held.load(Relaxed), 15);
        // A response that does not fit is refused, and the connection stays.
        assert_eq!(
            healthy.push_response("c".repeat(6)),
            Err(Refused::NodeBudget { held: 15, max: 20 })
        );
        assert!(!healthy.is_closing());
        assert_eq!(held.load(Relaxed), 15);
        // The slow one has a backlog: its next push over the budget closes it
        // and gives its bytes back.
        assert_eq!(slow.push("d".repeat(6)), Err(Closing));
        assert!(slow.is_closing());
        assert_eq!(held.load(Relaxed), 0);
        let Some(Frame::Close(code, reason)) = slow.next().now_or_never() else {
            panic!("the close frame goes first")
        };
        assert_eq!(code, CLOSE_POLICY);
        assert!(reason.contains("node-wide limit 20 bytes"), "{reason}");
        // Bytes taken by a writer come back when the connection goes away.
        healthy.push("e".repeat(5)).unwrap();
        healthy.push("f".repeat(5)).unwrap();
        assert_eq!(
            healthy.next().now_or_never(),
            Some(Frame::Text("e".repeat(5)))
        );
        drop(healthy);
        drop(slow);
        assert_eq!(held.load(Relaxed), 0);
    }
}
