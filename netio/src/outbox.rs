//! A WebSocket connection's send queue: bounded in bytes, filled by request
//! tasks and the subscription fan-out, drained by the connection's writer.
//! Pushing never waits. A push that would pass the bound closes the
//! connection instead ("slow consumer"), so one client that does not read
//! can never hold back the sequencer or other subscribers.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
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

/// The push did not fit: the connection is closing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Closing;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Frame>,
    /// Bytes of text waiting in `queue`.
    bytes: usize,
    /// A close frame is queued; nothing more is accepted.
    closing: bool,
    waker: Option<Waker>,
}

/// The bounded send queue of one connection.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: RefCell<State>,
    bytes_max: usize,
}

impl Outbox {
    /// A queue holding at most `bytes_max` bytes of text (one larger message
    /// is still accepted when the queue is empty, so that a big response is
    /// never refused on an idle connection).
    pub(crate) fn new(bytes_max: usize) -> Self {
        assert!(bytes_max > 0);
        Self {
            state: RefCell::new(State::default()),
            bytes_max,
        }
    }

    /// Queues `text`; when it does not fit, the queue is emptied and the
    /// connection closes as a slow consumer.
    pub(crate) fn push(&self, text: String) -> Result<(), Closing> {
        let mut state = self.state.borrow_mut();
        if state.closing {
            return Err(Closing);
        }
        if state.bytes > 0 && state.bytes + text.len() > self.bytes_max {
            let reason = format!(
                "slow consumer: {} bytes waiting, send buffer limit {} bytes",
                state.bytes, self.bytes_max
            );
            drop(state);
            fulmen_exec::metrics::METRICS
                .ws_slow_consumers
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.close(CLOSE_POLICY, reason);
            return Err(Closing);
        }
        state.bytes += text.len();
        state.queue.push_back(Frame::Text(text));
        wake(&mut state);
        Ok(())
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
        state.bytes = 0;
        state.queue.push_back(Frame::Close(code, reason));
        wake(&mut state);
    }

    /// True once a close frame was queued.
    pub(crate) fn is_closing(&self) -> bool {
        self.state.borrow().closing
    }

    /// True when nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.state.borrow().queue.is_empty()
    }

    /// The next frame, waiting for one.
    pub(crate) fn next(&self) -> impl Future<Output = Frame> + '_ {
        std::future::poll_fn(move |cx| {
            let mut state = self.state.borrow_mut();
            match state.queue.pop_front() {
                Some(frame) => {
                    if let Frame::Text(text) = &frame {
                        state.bytes -= text.len();
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

    #[test]
    fn a_full_queue_closes_the_connection_with_the_reason() {
        let outbox = Outbox::new(10);
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
        let outbox = Outbox::new(10);
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
}
