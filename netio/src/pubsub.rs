//! `eth_subscribe` on a net core: the fan-out of the seq core's durable
//! events to this core's WebSocket connections (what they render is
//! [`crate::notify`]), and the catch-up of subscriptions that resume from
//! an old mini-block ([`crate::resume`]). Each event is rendered at most
//! once per core and kind; a subscriber costs one small string (its id
//! around the shared result).

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use alloy_primitives::B256;
use arc_swap::ArcSwap;
use fulmen_chain::events::{ChainEvent, Published};
use fulmen_chain::metrics::METRICS;
use fulmen_chain::msg::SeqControl;
use fulmen_chain::view::ChainView;
use futures::StreamExt;
use futures::channel::mpsc;

use crate::notify::{Kind, Rendered, Subscribe};
use crate::outbox::{CLOSE_INTERNAL, CLOSE_TRY_LATER, Outbox};
use crate::resume::{Catchup, ResumeSource, Target, spawn_reader};
use crate::rpc::{Params, RpcError};

/// One subscription of a connection.
#[derive(Debug)]
struct Subscription {
    id: String,
    kind: Kind,
    /// False until the `eth_subscribe` response is queued, so that no
    /// notification overtakes it.
    active: bool,
    /// Replaying from the log: live mini-blocks wait in it, not rendered.
    catchup: Option<Rc<RefCell<Catchup>>>,
    /// Mini-blocks below this one were sent by a catch-up: a live event of
    /// one of them (still on its way to this core) is not sent again.
    skip_below: u64,
    /// Seals of blocks up to this one were sent by a catch-up
    /// (`replication`).
    skip_seals_to: u64,
}

/// One WebSocket connection as the fan-out sees it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) outbox: Outbox,
    subscriptions: RefCell<Vec<Subscription>>,
    /// The net core's hub, told when subscriptions come and go.
    hub: Rc<Hub>,
}

impl Conn {
    pub(crate) fn new(outbox: Outbox, hub: Rc<Hub>) -> Self {
        Self {
            outbox,
            subscriptions: RefCell::new(Vec::new()),
            hub,
        }
    }

    /// Adds an inactive subscription; `None` past `max`.
    fn add(
        &self,
        kind: Kind,
        id: String,
        max: usize,
        catchup: Option<Catchup>,
    ) -> Result<(), RpcError> {
        let mut subscriptions = self.subscriptions.borrow_mut();
        if subscriptions.len() >= max {
            return Err(RpcError::server(format!(
                "too many subscriptions on this connection: limit {max}; \
                 eth_unsubscribe one or open another connection"
            )));
        }
        subscriptions.push(Subscription {
            id,
            kind,
            active: false,
            catchup: catchup.map(|c| Rc::new(RefCell::new(c))),
            skip_below: 0,
            skip_seals_to: 0,
        });
        self.hub.count_subscriptions(1, 0);
        Ok(())
    }

    /// Starts delivering to subscription `id`; a resuming one's catch-up
    /// (its kind and state) is returned, for the caller to run.
    pub(crate) fn activate(&self, id: &str) -> Option<(Kind, Rc<RefCell<Catchup>>)> {
        let mut catchup = None;
        for sub in self.subscriptions.borrow_mut().iter_mut() {
            if sub.id == id {
                sub.active = true;
                catchup = sub.catchup.clone().map(|c| (sub.kind.clone(), c));
            }
        }
        catchup
    }

    /// Whether subscription `id` is still there.
    fn has(&self, id: &str) -> bool {
        self.subscriptions.borrow().iter().any(|s| s.id == id)
    }

    /// Ends subscription `id`'s catch-up, which sent every mini-block
    /// before `next` (and every seal up to `last_seal`): later ones go
    /// straight to it.
    fn go_live(&self, id: &str, next: u64, last_seal: u64) {
        for sub in self.subscriptions.borrow_mut().iter_mut() {
            if sub.id == id {
                sub.skip_below = next;
                sub.skip_seals_to = last_seal;
                sub.catchup = None;
            }
        }
    }

    pub(crate) fn remove(&self, id: &str) -> bool {
        let mut subscriptions = self.subscriptions.borrow_mut();
        let before = subscriptions.len();
        subscriptions.retain(|s| s.id != id);
        let removed = before - subscriptions.len();
        self.hub.count_subscriptions(0, removed);
        removed > 0
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let n = self.subscriptions.borrow().len();
        self.hub.count_subscriptions(0, n);
    }
}

/// This net core's subscriptions.
#[derive(Debug)]
pub struct Hub {
    conns: RefCell<Vec<Weak<Conn>>>,
    /// Seeds subscription ids: unique per node and not guessable from another
    /// connection's ids.
    id_seed: B256,
    id_counter: Cell<u64>,
    /// Position of the next event this core expects.
    next_position: Cell<Option<u64>>,
    /// Subscriptions on this core.
    subscriptions: Cell<usize>,
    /// Tells the seq core whether this core has subscribers (it builds
    /// events only while some core has), and what it was last told.
    seq_control: SubscriberReport,
}

/// How a net core reports its subscribers to the seq core.
#[derive(Debug)]
struct SubscriberReport {
    core: usize,
    to_seq: RefCell<mpsc::Sender<SeqControl>>,
    reported_any: Cell<bool>,
    /// The seq core's answer to a report: its generation and the first
    /// mini-block it builds events for since.
    events_from: Arc<std::sync::Mutex<(u64, u64)>>,
    /// The latest report's generation.
    generation: Cell<u64>,
}

impl Hub {
    /// An empty hub for net core `core`, which tells the seq core over
    /// `to_seq` whether it has subscribers.
    pub fn new(core: usize, to_seq: mpsc::Sender<SeqControl>) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let thread = format!("{:?}", std::thread::current().id());
        let seed = alloy_primitives::keccak256(
            [
                &now.to_le_bytes()[..],
                &std::process::id().to_le_bytes(),
                thread.as_bytes(),
            ]
            .concat(),
        );
        Self {
            conns: RefCell::new(Vec::new()),
            id_seed: seed,
            id_counter: Cell::new(0),
            next_position: Cell::new(None),
            subscriptions: Cell::new(0),
            seq_control: SubscriberReport {
                core,
                to_seq: RefCell::new(to_seq),
                reported_any: Cell::new(false),
                events_from: Arc::new(std::sync::Mutex::new((0, u64::MAX))),
                generation: Cell::new(0),
            },
        }
    }

    /// Counts subscriptions `added` and `removed` on this core; on the first
    /// one or the last one gone, tells the seq core.
    fn count_subscriptions(&self, added: usize, removed: usize) {
        METRICS.ws_subscriptions.fetch_add(added as u64, Relaxed);
        METRICS.ws_subscriptions.fetch_sub(removed as u64, Relaxed);
        let count = self.subscriptions.get() + added;
        assert!(removed <= count, "only existing subscriptions are removed");
        self.subscriptions.set(count - removed);
        let report = &self.seq_control;
        let any = count - removed > 0;
        if any == report.reported_any.get() {
            return;
        }
        let generation = report.generation.get() + 1;
        let message = SeqControl::Subscribers {
            core: report.core,
            any,
            events_from: report.events_from.clone(),
            generation,
        };
        // Each sender has a guaranteed slot and the seq core reads control
        // messages at once, so this fails only if the seq core is gone; a
        // failed report is retried at the next change.
        match report.to_seq.borrow_mut().try_send(message) {
            Ok(()) => {
                report.reported_any.set(any);
                report.generation.set(generation);
            }
            Err(e) => tracing::warn!(error = %e, "cannot tell the seq core about subscribers"),
        }
    }

    /// The first mini-block sure to reach this core as an event (while it
    /// keeps a subscriber).
    fn events_from(&self) -> u64 {
        let report = &self.seq_control;
        let (generation, from) = *report.events_from.lock().unwrap_or_else(|e| e.into_inner());
        if generation == report.generation.get() {
            from
        } else {
            // The seq core has not read the latest report yet.
            u64::MAX
        }
    }

    pub(crate) fn register(&self, conn: &Rc<Conn>) {
        let mut conns = self.conns.borrow_mut();
        conns.retain(|c| c.strong_count() > 0);
        conns.push(Rc::downgrade(conn));
    }

    fn next_id(&self) -> String {
        let n = self.id_counter.get();
        self.id_counter.set(n + 1);
        let digest = alloy_primitives::keccak256([&self.id_seed[..], &n.to_le_bytes()].concat());
        format!("0x{}", alloy_primitives::hex::encode(&digest[..16]))
    }

    /// `eth_subscribe` on `conn`: the new id (inactive until activated).
    /// A resume (`fromMiniBlock`) reads `resume`'s log up to `view`'s
    /// newest mini-block first.
    pub(crate) fn subscribe(
        &self,
        conn: &Conn,
        params: &Params,
        max: usize,
        resume: (Option<&Arc<ResumeSource>>, &ChainView),
    ) -> Result<String, RpcError> {
        let Subscribe { kind, from } = Subscribe::parse(params)?;
        let catchup = match (from, resume.0) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(RpcError::invalid_params(
                    "invalid argument 1 (fromMiniBlock): this node keeps no log to resume from \
                     (durability = \"memory\")",
                ));
            }
            (Some(from), Some(source)) => Some(Catchup::start(
                source,
                (from, matches!(kind, Kind::Replication)),
                resume.1.mini_block(),
            )?),
        };
        let id = self.next_id();
        conn.add(kind, id.clone(), max, catchup)?;
        Ok(id)
    }

    /// `eth_unsubscribe` on `conn`.
    pub(crate) fn unsubscribe(conn: &Conn, params: &Params) -> Result<bool, RpcError> {
        params.at_most(1)?;
        let id: String = params.required(0, "subscription id")?;
        Ok(conn.remove(&id))
    }

    /// Delivers one event to every matching subscription on this core. A gap
    /// in positions (this core's channel overflowed) closes every
    /// subscribed connection: a subscriber never silently misses an event.
    pub fn deliver(&self, published: &Published) {
        if let Some(expected) = self.next_position.get()
            && published.position != expected
        {
            let reason = format!(
                "this net core fell behind and missed {} chain events; resubscribe",
                published.position.saturating_sub(expected)
            );
            tracing::warn!(reason = %reason, "closing subscribed connections");
            for conn in self.conns.borrow().iter().filter_map(Weak::upgrade) {
                if !conn.subscriptions.borrow().is_empty() {
                    conn.outbox.close(CLOSE_TRY_LATER, reason.clone());
                }
            }
        }
        self.next_position.set(Some(published.position + 1));
        let mut conns: Vec<Rc<Conn>> = self
            .conns
            .borrow()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        if conns.iter().all(|c| c.subscriptions.borrow().is_empty()) {
            return;
        }
        // The furthest behind go first: when the node-wide send budget runs
        // out, they are the ones closed, and the budget they free lets the
        // connections that keep up receive this event.
        let behind = conns.iter().filter(|c| c.outbox.outstanding() > 0).count();
        if behind > 0 {
            conns.sort_by_key(|c| std::cmp::Reverse(c.outbox.outstanding()));
        }
        let mut rendered = Rendered::new(&published.event);
        for conn in conns {
            let mut out = Vec::new();
            for sub in conn.subscriptions.borrow().iter() {
                match (&sub.catchup, &published.event) {
                    (Some(catchup), event) => catchup.borrow_mut().hold(event),
                    (None, ChainEvent::MiniBlock(mini)) if mini.number < sub.skip_below => {}
                    (None, ChainEvent::Sealed(block))
                        if block.header.number <= sub.skip_seals_to => {}
                    (None, _) if sub.active => rendered.notifications(&sub.id, &sub.kind, &mut out),
                    (None, _) => {}
                }
            }
            for text in out {
                METRICS.ws_notifications.fetch_add(1, Relaxed);
                if conn.outbox.push(text).is_err() {
                    break;
                }
            }
        }
    }
}

/// What a catch-up task needs besides its subscription.
pub(crate) struct CatchupContext {
    /// The published view (its newest durable mini-block).
    pub(crate) view: Arc<ArcSwap<ChainView>>,
    /// Bytes the catch-up lets wait in the connection's send queue (half
    /// its limit, so live notifications still fit).
    pub(crate) queue_bytes: usize,
}

/// Runs subscription `id`'s catch-up: replays the log from its start to
/// the first live mini-block it holds, then the held ones, queuing as the
/// connection drains, then hands it to the live stream. Ends with the
/// connection, the subscription, or a close (1013 when it fell too far
/// behind the chain, 1011 when the log could not be read).
pub(crate) async fn catch_up(
    conn: Weak<Conn>,
    id: String,
    (kind, catchup): (Kind, Rc<RefCell<Catchup>>),
    ctx: CatchupContext,
) {
    let (log, next) = {
        let mut c = catchup.borrow_mut();
        (c.log.take(), c.from)
    };
    let close = |code: u16, reason: String| {
        if let Some(conn) = conn.upgrade() {
            conn.outbox.close(code, reason);
        }
    };
    let Some(log) = log else { return };
    let mut reader = match spawn_reader(log, id.clone(), kind.clone()) {
        Ok(reader) => reader,
        Err(e) => return close(CLOSE_INTERNAL, format!("cannot start a resume: {e}")),
    };
    let mut at = At {
        next,
        last_seal: 0,
        read_to: (next.saturating_sub(1), 0),
        reached_held: false,
        read_once: false,
    };
    loop {
        let (until, until_seal) = match catchup_step(&conn, &id, &catchup, &at, &ctx.view) {
            Step::Done => return,
            Step::Held(event) => {
                // Held live records go out as the connection drains too:
                // the stream goes live only once none is left.
                match &event {
                    ChainEvent::MiniBlock(mini) => {
                        at.reached_held = true;
                        at.next = mini.number + 1;
                    }
                    ChainEvent::Sealed(block) => at.last_seal = block.header.number,
                }
                let mut out = Vec::new();
                Rendered::new(&event).notifications(&id, &kind, &mut out);
                for text in out {
                    if !queue_when_room(&conn, text, ctx.queue_bytes).await {
                        return;
                    }
                }
                continue;
            }
            Step::Read(until, until_seal) => (until, until_seal),
            Step::Wait => {
                glommio::timer::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        reader.read(Target {
            next: at.next,
            last_seal: at.last_seal,
            until,
            until_seal,
        });
        loop {
            let Some(chunk) = reader.chunks.next().await else {
                return close(CLOSE_INTERNAL, "the resume's reader stopped".into());
            };
            if let Some(error) = chunk.error {
                return close(CLOSE_INTERNAL, format!("resume failed: {error}"));
            }
            for text in chunk.notifications {
                if !queue_when_room(&conn, text, ctx.queue_bytes).await {
                    return;
                }
            }
            at.next = chunk.next;
            at.last_seal = chunk.last_seal.unwrap_or(at.last_seal);
            if chunk.finished {
                // A read up to the first held mini-block stops there, not
                // at a seal bound.
                let seals_to = if until_seal == u64::MAX {
                    at.last_seal
                } else {
                    until_seal
                };
                at.read_to = (until, seals_to);
                at.read_once = true;
                break;
            }
        }
    }
}

/// Where a catch-up is.
struct At {
    /// The next mini-block to send.
    next: u64,
    /// The newest seal sent (`replication`).
    last_seal: u64,
    /// The bounds of the last read the reader finished: mini-blocks and
    /// seals up to them are sent.
    read_to: (u64, u64),
    /// A held live mini-block was sent: every later record comes live.
    reached_held: bool,
    /// A read finished (for `replication`, the seals logged right after
    /// the mini-block before the start come only from the log).
    read_once: bool,
}

/// What a catch-up does next.
enum Step {
    /// Read the log up to this mini-block and this seal.
    Read(u64, u64),
    /// Send this held live record (the next one).
    Held(ChainEvent),
    /// Look again shortly: the seq core has not yet read that this core
    /// has subscribers, so the next mini-block may come as no event.
    Wait,
    /// It is over: the subscription went live, or the connection or the
    /// subscription is gone, or it fell too far behind (closed).
    Done,
}

/// The catch-up's next step: read the log up to the first held
/// mini-block (or the newest durable records), send the first held
/// record, or go live when nothing is held and nothing durable is left to
/// read. A held seal the replay has not reached yet is read from the log.
fn catchup_step(
    conn: &Weak<Conn>,
    id: &str,
    catchup: &Rc<RefCell<Catchup>>,
    at: &At,
    view: &ArcSwap<ChainView>,
) -> Step {
    let Some(conn) = conn.upgrade() else {
        return Step::Done;
    };
    if conn.outbox.is_closing() || !conn.has(id) {
        return Step::Done;
    }
    let mut c = catchup.borrow_mut();
    if c.overflowed {
        conn.outbox.close(
            CLOSE_TRY_LATER,
            format!(
                "the resume fell {} mini-blocks behind the chain; resubscribe with \
                 fromMiniBlock {}",
                crate::resume::CATCHUP_BUFFER_MAX,
                at.next
            ),
        );
        return Step::Done;
    }
    while c.buffer.front().is_some_and(|e| match e {
        ChainEvent::MiniBlock(mini) => mini.number < at.next,
        // Read past (or, before the stream's start, not part of it).
        ChainEvent::Sealed(block) => block.header.number <= at.last_seal.max(at.read_to.1),
    }) {
        c.buffer.pop_front();
    }
    let first_held = c.buffer.iter().find_map(|e| match e {
        ChainEvent::MiniBlock(mini) => Some(mini.number),
        ChainEvent::Sealed(_) => None,
    });
    let front_is_seal = matches!(c.buffer.front(), Some(ChainEvent::Sealed(_)));
    match (c.buffer.front(), first_held) {
        (Some(ChainEvent::MiniBlock(mini)), _)
            if mini.number == at.next && (at.read_once || !c.seals) =>
        {
            return Step::Held(c.buffer.pop_front().expect("checked above"));
        }
        (Some(_), _) if front_is_seal && at.reached_held => {
            return Step::Held(c.buffer.pop_front().expect("checked above"));
        }
        (Some(_), Some(first)) => return Step::Read(first - 1, u64::MAX),
        _ => {}
    }
    // Nothing held but seals the replay did not reach, or nothing held at
    // all: records durable but not held reached this core before the
    // subscription existed (and a held seal is durable too): read them.
    // Once a held mini-block was sent, or past the newest durable records
    // (the view goes out before its events), every later one is still
    // to come to this core.
    let view = view.load();
    let (newest, head) = (view.mini_block(), view.head().header.number);
    let seals_left = c.seals && at.read_to.1 < head;
    // Live from `next` on only if every mini-block from it will come as an
    // event; before that, what closed is read from the log.
    let events_reach = at.next >= conn.hub.events_from();
    if (!at.reached_held && (at.next <= newest || seals_left || front_is_seal))
        || (!events_reach && at.next <= newest)
    {
        return Step::Read(newest.max(at.next.saturating_sub(1)), head);
    }
    if !events_reach {
        return Step::Wait;
    }
    drop(c);
    conn.go_live(id, at.next, at.last_seal);
    Step::Done
}

/// Queues `text` once the connection's queue holds less than `queue_bytes`
/// (or nothing); false when the connection is gone or closing.
async fn queue_when_room(conn: &Weak<Conn>, text: String, queue_bytes: usize) -> bool {
    loop {
        let Some(conn) = conn.upgrade() else {
            return false;
        };
        if conn.outbox.is_closing() {
            return false;
        }
        let outstanding = conn.outbox.outstanding();
        if outstanding == 0 || outstanding + text.len() <= queue_bytes {
            METRICS.ws_notifications.fetch_add(1, Relaxed);
            return conn.outbox.push(text).is_ok();
        }
        drop(conn);
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}
