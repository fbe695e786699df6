//! A replica's seq core: it takes the upstream's records (checked and
//! decoded by the follower thread) instead of transactions and the block
//! timer.
//!
//! Each mini-block is applied from its logged state changes (no
//! re-execution), closed with the upstream's close time, and must hash as
//! the upstream's did; it is then logged and published like one of the
//! node's own. A block closes where the upstream's records say: at the
//! first mini-block of a later block, or at its seal when nothing follows
//! it yet. An empty block's context (its timestamp) is known only from
//! its seal, and a block closes only once its parent is sealed here (its
//! system calls need the parent's hash), so mini-blocks wait in order
//! while seals, which only note the header to compare with, are taken at
//! once. A block's roots from the state-root worker wait for the
//! upstream's header ([`SeqState::expect_header`]); a difference halts the
//! node before the block is published.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use glommio::channels::shared_channel::ConnectedSender;

use fulmen_chain::block::{BlockContext, SealJob};
use fulmen_chain::metrics::METRICS;
use fulmen_chain::msg::{MerkleRequest, Upstream};
use fulmen_chain::persist::MiniBlockRecord;

use super::actors::Shared;
use super::state::SeqState;
use super::timing::TIMESTAMP_AHEAD_MAX_S;

/// How often a replica's seq core, waiting for the upstream, checks
/// whether it halted.
const HALT_POLL: Duration = Duration::from_millis(100);
/// Records that may wait for the seal they need before the upstream is
/// called broken (a block's seal follows its mini-blocks by a few at most).
const WAITING_MAX: usize = 1 << 16;
/// Records queued before the seq core stops taking more (unless the front
/// waits for a seal still to come): the follower thread then waits on the
/// bounded channel, so a long stream of empty blocks is taken at the pace
/// they seal here.
const QUEUED_MAX: usize = 4096;
/// Blocks closed here and not yet sealed before closing another waits.
const UNSEALED_MAX: usize = 64;

/// The upstream's records in its log order, as the seq core runs them.
#[derive(Debug)]
enum Ordered {
    /// A mini-block and the hash the upstream gave it.
    MiniBlock(Box<MiniBlockRecord>, alloy_primitives::B256),
    /// The upstream sealed this block here: it has no more mini-blocks.
    EndOfBlock(u64),
}

/// The replica's side of the stream.
struct Follow {
    queue: VecDeque<Ordered>,
    /// The newest mini-block queued or applied.
    last_mini_block: u64,
    /// The newest block whose seal was noted.
    last_seal: u64,
    /// The queue's front waits for a seal the upstream has not sent yet.
    needs_seal: bool,
}

/// Why the open block does not close now.
enum Closing {
    /// It closed: its seal job.
    Closed(SealJob),
    /// Its context (it is empty) comes with its seal, not here yet.
    NeedsSeal,
    /// Its parent, or too many blocks, are not sealed here yet.
    NeedsLocalSeal,
}

/// The replica's input: the upstream's records, applied in order; each
/// closed block's seal job goes to the state-root worker. A record that
/// does not follow, or a block that does not seal as the upstream's did,
/// halts the node; the receiver is then dropped, so that the follower
/// thread sees it.
pub(super) async fn take_upstream(
    state: Shared,
    mut upstream: mpsc::Receiver<Upstream>,
    to_merkle: ConnectedSender<MerkleRequest>,
    progress: Rc<glommio::sync::Semaphore>,
    sealed: Rc<glommio::sync::Semaphore>,
) {
    let mut follow = {
        let s = state.borrow();
        Follow {
            queue: VecDeque::new(),
            last_mini_block: s.seq.view().mini_block(),
            last_seal: s.seq.view().head().header.number,
            needs_seal: false,
        }
    };
    loop {
        let jobs = {
            let mut s = state.borrow_mut();
            s.drain_control();
            let run = run_queue(&mut s, &mut follow);
            run.unwrap_or_else(|reason| {
                s.halt(format!(
                    "replica: {reason} (the upstream's stream is not served)"
                ));
                Vec::new()
            })
        };
        for job in jobs {
            if to_merkle.send(MerkleRequest::Seal(job)).await.is_err() {
                tracing::error!("state-root worker is gone; sealing stops");
                return;
            }
        }
        if state.borrow().halted() {
            return;
        }
        // Each mini-block is a log record of its own (the upstream's
        // boundaries are kept): at the in-flight bound, wait for the log.
        if state.borrow().log_full() {
            let _ = progress.acquire(1).await;
            continue;
        }
        // The next message (unless enough wait here already), or a seal
        // here (a block may close now), or the halt poll.
        let message = {
            let tick = std::pin::pin!(glommio::timer::sleep(HALT_POLL));
            let seal = std::pin::pin!(sealed.acquire(1));
            let either = futures::future::select(tick, seal);
            if follow.queue.len() >= QUEUED_MAX && !follow.needs_seal {
                either.await;
                continue;
            }
            match futures::future::select(upstream.next(), either).await {
                futures::future::Either::Left((message, _)) => Some(message),
                futures::future::Either::Right(_) => None,
            }
        };
        let first = match message {
            Some(Some(message)) => message,
            // The follower thread ended.
            Some(None) => return,
            None => continue,
        };
        if !note_waiting(&mut state.borrow_mut(), &mut follow, first, &mut upstream) {
            return;
        }
        glommio::yield_if_needed().await;
    }
}

/// Takes `first` and every message already waiting; false when one
/// halted the node.
fn note_waiting(
    s: &mut SeqState,
    follow: &mut Follow,
    first: Upstream,
    upstream: &mut mpsc::Receiver<Upstream>,
) -> bool {
    let mut next = Some(first);
    while let Some(message) = next {
        if let Err(reason) = note(s, follow, message) {
            s.halt(format!(
                "replica: {reason} (the upstream's stream is not served)"
            ));
            return false;
        }
        next = futures::FutureExt::now_or_never(upstream.next()).flatten();
    }
    true
}

/// Takes one upstream message: a mini-block joins the queue; a seal's
/// header is noted at once (roots waiting for it seal) and the end of its
/// block joins the queue.
fn note(s: &mut SeqState, follow: &mut Follow, message: Upstream) -> Result<(), String> {
    match message {
        Upstream::MiniBlock { record, hash } => {
            let number = record.number;
            METRICS
                .replica_upstream_mini_block
                .fetch_max(number, Relaxed);
            if number <= follow.last_mini_block {
                // A resume sends again the mini-blocks of blocks not
                // sealed here yet.
                return Ok(());
            }
            if number != follow.last_mini_block + 1 {
                return Err(format!(
                    "the upstream sent mini-block {number} after mini-block {}",
                    follow.last_mini_block
                ));
            }
            if follow.queue.len() >= WAITING_MAX {
                return Err(format!(
                    "{WAITING_MAX} records arrived without the seal they wait for"
                ));
            }
            follow.last_mini_block = number;
            follow
                .queue
                .push_back(Ordered::MiniBlock(Box::new(record), hash));
        }
        Upstream::Seal(seal) => {
            let number = seal.header.number;
            let hash = seal.header.hash_slow();
            if number <= follow.last_seal {
                // Sealed or noted already: it must be the same block.
                let known = s
                    .seq
                    .view()
                    .block_hash(number)
                    .or_else(|| s.expected_header(number).map(|h| h.hash_slow()));
                return match known {
                    Some(known) if known != hash => Err(format!(
                        "the upstream's block {number} is {hash}, this node's is {known}"
                    )),
                    _ => Ok(()),
                };
            }
            if number != follow.last_seal + 1 {
                return Err(format!(
                    "the upstream sealed block {number} after block {}",
                    follow.last_seal
                ));
            }
            check_ctx(&BlockContext::of_header(&seal.header))?;
            if follow.queue.len() >= WAITING_MAX {
                return Err(format!(
                    "{WAITING_MAX} records arrived without the seal they wait for"
                ));
            }
            follow.last_seal = number;
            s.expect_header(seal.header);
            follow.queue.push_back(Ordered::EndOfBlock(number));
        }
    }
    Ok(())
}

/// Runs the queue as far as it can: applies mini-blocks and closes blocks;
/// returns the seal jobs of the blocks it closed.
fn run_queue(s: &mut SeqState, follow: &mut Follow) -> Result<Vec<SealJob>, String> {
    let mut jobs = Vec::new();
    follow.needs_seal = false;
    while !s.halted() {
        let open = s.seq.open_number();
        match follow.queue.front() {
            None => break,
            Some(Ordered::MiniBlock(record, _)) => {
                let block = record.ctx.number;
                if block < open {
                    return Err(format!(
                        "mini-block {} is of block {block}, which closed",
                        record.number
                    ));
                }
                if block > open {
                    let next = (block == open + 1).then_some(record.ctx);
                    match close_open(s, next)? {
                        Closing::Closed(job) => jobs.push(job),
                        Closing::NeedsSeal => {
                            follow.needs_seal = true;
                            break;
                        }
                        Closing::NeedsLocalSeal => break,
                    }
                    continue;
                }
                if s.log_full() {
                    break;
                }
                check_ctx(&record.ctx)?;
                let Some(Ordered::MiniBlock(record, hash)) = follow.queue.pop_front() else {
                    unreachable!("the front is a mini-block");
                };
                let (number, closed_us) = (record.number, record.timestamp_us);
                s.seq.apply_upstream(*record)?;
                s.close_and_release_at(closed_us, Some(hash), &mut Vec::new());
                s.mark_lag(number, closed_us);
            }
            Some(&Ordered::EndOfBlock(block)) => {
                if block > open {
                    return Err(format!(
                        "the upstream sealed block {block} while block {open} is open here"
                    ));
                }
                if block == open {
                    match close_open(s, None)? {
                        Closing::Closed(job) => jobs.push(job),
                        // Its seal is noted: only a seal here is missing.
                        Closing::NeedsSeal | Closing::NeedsLocalSeal => break,
                    }
                }
                follow.queue.pop_front();
            }
        }
    }
    Ok(jobs)
}

/// Closes the open block if it can close now: its context is the
/// upstream's (an empty block's comes from its seal) and its parent is
/// sealed here. `next` is the next block's context when known.
fn close_open(s: &mut SeqState, next: Option<BlockContext>) -> Result<Closing, String> {
    let open = s.seq.open_number();
    if s.seq.open_is_empty() {
        let Some(header) = s.expected_header(open) else {
            return Ok(Closing::NeedsSeal);
        };
        let ctx = BlockContext::of_header(header);
        s.seq.take_upstream_ctx(ctx)?;
    }
    if !s.seq.can_close_block() || s.seq.unsealed_blocks() >= UNSEALED_MAX {
        return Ok(Closing::NeedsLocalSeal);
    }
    Ok(Closing::Closed(s.close_upstream_block(next)))
}

/// A block context from the upstream, before anything runs with it: the
/// sequencer stamps blocks with its clock, so a timestamp far ahead of
/// this one is not one of its blocks (and near `u64::MAX` the next
/// block's `timestamp + 1` would overflow).
fn check_ctx(ctx: &BlockContext) -> Result<(), String> {
    let latest_s = super::timing::now_ms() / 1000 + TIMESTAMP_AHEAD_MAX_S;
    if ctx.timestamp > latest_s {
        return Err(format!(
            "block {} has timestamp {}, more than {TIMESTAMP_AHEAD_MAX_S} s ahead of this clock",
            ctx.number, ctx.timestamp
        ));
    }
    Ok(())
}
