//! `fulmen run --verifier`: the thread that follows L1 from
//! `[da] l1_start_block`, derives the L2 blocks the batcher posted
//! (`fulmen_da::derive`), checks that each span extends this node's own
//! chain, and hands the blocks to the seq core, which executes and seals
//! them as the sequencer did (`seq_core::actors::take_derived`).

use std::sync::Arc;
use std::time::Duration;

use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::Address;
use arc_swap::ArcSwap;
use fulmen_chain::msg::DerivedBlock;
use fulmen_chain::spec::ChainSpec;
use fulmen_chain::tx::decode_and_check;
use fulmen_chain::view::ChainView;
use fulmen_da::derive::{BeaconIds, DeriveConfig, Deriver, fetch_batcher_blobs};
use fulmen_da::l1::{BlockTag, L1Client, L1Error, shown_url};
use fulmen_da::span_batch::SpanBatch;
use futures::SinkExt;
use futures::channel::mpsc;

use crate::da::DaConfig;

/// Capacity of the channel of derived blocks to the seq core.
pub(crate) const DERIVED_QUEUE_CAPACITY: usize = 64;

/// How far back a span's parent may be (a channel posted again after an L1
/// reorg repeats blocks this node already has).
const PARENT_SEARCH_BLOCKS_MAX: u64 = 100_000;

/// An incomplete channel is dropped after this many L1 blocks.
const CHANNEL_TIMEOUT_L1_BLOCKS: u64 = 300;

/// What the verifier thread needs.
pub(crate) struct VerifierStart {
    pub config: DaConfig,
    pub batcher: Address,
    pub spec: ChainSpec,
    pub block_time_ms: u64,
    pub published: Arc<ArcSwap<ChainView>>,
    pub derived: mpsc::Sender<DerivedBlock>,
    /// The seq core's control channel (for `safe` and `finalized`).
    pub control: mpsc::Sender<fulmen_chain::msg::SeqControl>,
    pub datadir: std::path::PathBuf,
}

/// Starts the verifier thread.
pub(crate) fn start(
    v: VerifierStart,
    on_start: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name("fulmen-verifier".into())
        .spawn(move || {
            on_start();
            fulmen_da::post::load_kzg_settings();
            match Follower::new(v).run() {
                Ok(unwinding) => tracing::warn!("verifier: {unwinding}"),
                Err(e) => tracing::error!(
                    "verifier: {e}; this node stops following L1 and serves what it has"
                ),
            }
        })
        .map_err(|e| format!("cannot start the verifier thread: {e}"))
}

struct Follower {
    l1: L1Client,
    deriver: Deriver,
    ids: BeaconIds,
    next_l1: u64,
    /// The next L2 block to hand to the seq core.
    next_l2: u64,
    poll: Duration,
    spec: ChainSpec,
    published: Arc<ArcSwap<ChainView>>,
    derived: mpsc::Sender<DerivedBlock>,
    /// Blocks handed over and not yet known sealed: (L2 block, the L1
    /// block a restart may resume reading at to find what follows it).
    origins: std::collections::VecDeque<(u64, u64)>,
    datadir: std::path::PathBuf,
    /// Hashes of the last L1 blocks read, to notice an L1 reorg.
    read: std::collections::BTreeMap<u64, alloy_primitives::B256>,
    /// For each L2 block a channel in the L1 blocks of `read` carried: the
    /// L1 block a restart may resume reading at, and the L1 block the
    /// channel landed in (the last carrier read).
    carried: std::collections::BTreeMap<u64, Carried>,
    /// Where reading L1 starts when nothing better is known.
    l1_start_block: u64,
    control: mpsc::Sender<fulmen_chain::msg::SeqControl>,
    /// The last L2 block derived from finalized L1 data.
    finalized: u64,
    /// The `(safe, finalized)` last sent to the seq core.
    heads_sent: (u64, u64),
    /// L2 blocks a reorg dropped the L1 data of, if any.
    dropped: Option<Dropped>,
}

/// Where an L2 block came from on L1.
#[derive(Debug, Clone, Copy)]
struct Carried {
    /// A restart that reads L1 from here finds every later block.
    resume_l1: u64,
    /// The L1 block its channel landed in.
    landed: u64,
}

/// L1 blocks past a reorg's fork within which L2 blocks it dropped may be
/// carried again before they are unwound.
const REORG_GRACE_L1_BLOCKS: u64 = 3;

/// L2 blocks whose L1 data a reorg dropped, waiting to be carried again.
struct Dropped {
    /// The first replaced L1 block.
    fork: u64,
    /// The first L2 block derived from a replaced L1 block.
    lowest: u64,
    /// L2 blocks the new L1 chain carried since.
    carried_again: std::collections::BTreeSet<u64>,
}

/// L1 blocks whose hashes are kept to find where an L1 reorg forked.
const L1_HASHES_KEPT: u64 = 1024;

/// The file where a verifier notes where it may resume reading L1.
const RESUME_FILE: &str = "verifier-resume";

/// `(L2 block, L1 block)` from the resume file, if the chain has that
/// block (the file is written only for sealed, durable blocks).
fn resume_point(datadir: &std::path::Path, head: u64) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(datadir.join(RESUME_FILE)).ok()?;
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(l2)), Some(Ok(l1))) = (parts.next(), parts.next()) else {
        tracing::warn!("verifier: {RESUME_FILE} is unreadable; reading L1 from l1_start_block");
        return None;
    };
    (l2 <= head).then_some((l2, l1))
}

impl Follower {
    fn new(v: VerifierStart) -> Self {
        let (rpc, beacon) = v.config.l1_urls();
        let config = DeriveConfig {
            inbox: v.config.inbox_of(v.spec.chain_id),
            batcher: v.batcher,
            chain: crate::da::span_chain(&v.published, v.block_time_ms, v.spec.chain_id),
            channel_timeout_l1_blocks: CHANNEL_TIMEOUT_L1_BLOCKS,
        };
        // The open block: a block partly applied before a restart is sent
        // whole again (the seq core skips what it logged).
        let next_l2 = v.published.load().open().ctx.number;
        let head = v.published.load().head().header.number;
        let resume = resume_point(&v.datadir, head);
        let l1_from = resume.map_or(v.config.l1_start_block, |(_, l1)| {
            l1.max(v.config.l1_start_block)
        });
        let da = &fulmen_chain::metrics::METRICS.da;
        da.derive_start_l1
            .store(l1_from, std::sync::atomic::Ordering::Relaxed);
        da.derive_next_l1
            .store(l1_from, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            l1_rpc = %shown_url(&rpc),
            inbox = %config.inbox,
            batcher = %config.batcher,
            l1_start_block = v.config.l1_start_block,
            l1_from,
            next_l2,
            "verifier: deriving the chain from L1"
        );
        Self {
            l1: L1Client::new(&rpc, &beacon),
            deriver: Deriver::new(config),
            ids: BeaconIds::ExecutionNumber,
            next_l1: l1_from,
            next_l2,
            origins: std::collections::VecDeque::new(),
            read: std::collections::BTreeMap::new(),
            carried: std::collections::BTreeMap::new(),
            l1_start_block: v.config.l1_start_block,
            control: v.control,
            finalized: 0,
            heads_sent: (0, 0),
            dropped: None,
            datadir: v.datadir,
            poll: Duration::from_millis(v.config.poll_ms),
            spec: v.spec,
            published: v.published,
            derived: v.derived,
        }
    }

    /// Follows L1 until it must unwind (`Ok`, once the restart is asked
    /// for), or the chains differ or the seq core is gone (`Err`).
    fn run(mut self) -> Result<String, String> {
        loop {
            match self.round() {
                Ok(()) => {}
                Err(Stop::Fatal(e)) => return Err(e),
                Err(Stop::SeqCoreStopped) => return Err(self.after_seq_core_stopped()),
                Err(Stop::Unwind { keep, resume_l1 }) => return self.ask_unwind(keep, resume_l1),
                Err(Stop::L1(e)) => {
                    tracing::warn!(error = %e, "verifier: L1; retrying");
                    fulmen_chain::metrics::METRICS
                        .da
                        .l1_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            std::thread::sleep(self.poll);
        }
    }

    fn round(&mut self) -> Result<(), Stop> {
        if self.derived.is_closed() {
            return Err(Stop::SeqCoreStopped);
        }
        let head = self.l1.block_number()?;
        let da = &fulmen_chain::metrics::METRICS.da;
        da.l1_head.store(head, std::sync::atomic::Ordering::Relaxed);
        // Naming a block's beacon block by root needs the next block.
        let last = match self.ids {
            BeaconIds::ExecutionNumber | BeaconIds::Slot(_) => head,
            BeaconIds::BlockRoot => head.saturating_sub(1),
        };
        self.note_resume_point();
        self.rewind_after_l1_reorg()?;
        self.update_heads()?;
        while self.next_l1 <= last {
            self.derive_l1_block(self.next_l1)?;
            self.next_l1 += 1;
            da.derive_next_l1
                .store(self.next_l1, std::sync::atomic::Ordering::Relaxed);
        }
        self.unwind_if_still_dropped(head)
    }

    fn derive_l1_block(&mut self, number: u64) -> Result<(), Stop> {
        let block = self
            .l1
            .block_with_txs(BlockTag::Number(number))?
            .ok_or_else(|| Stop::L1(format!("L1 block {number} is gone (a reorg?)")))?;
        let fetched = match fetch_batcher_blobs(&self.l1, self.deriver.config(), &block, self.ids) {
            Err(L1Error::Status {
                status: 400 | 404, ..
            }) if self.ids == BeaconIds::ExecutionNumber => {
                self.ids = match self.l1.beacon_slot_clock() {
                    Ok(clock) => {
                        tracing::info!(
                            genesis_time = clock.genesis_time,
                            seconds_per_slot = clock.seconds_per_slot,
                            "verifier: the beacon API does not take block numbers; naming blocks by slot"
                        );
                        BeaconIds::Slot(clock)
                    }
                    Err(e) => {
                        tracing::info!(
                            error = %e,
                            "verifier: the beacon API takes neither block numbers nor gives its clock; \
                             naming blocks by their beacon block root"
                        );
                        BeaconIds::BlockRoot
                    }
                };
                fetch_batcher_blobs(&self.l1, self.deriver.config(), &block, self.ids)?
            }
            other => other?,
        };
        let (blobs, ignored) = fetched;
        self.read.insert(number, block.header.hash);
        while self.read.len() as u64 > L1_HASHES_KEPT {
            self.read.pop_first();
        }
        let oldest = self.read.first_key_value().map_or(number, |(n, _)| *n);
        while self
            .carried
            .first_key_value()
            .is_some_and(|(_, c)| c.landed < oldest)
        {
            self.carried.pop_first();
        }
        let bytes: usize = blobs
            .iter()
            .map(|t| t.blobs.len() * fulmen_da::blob::BLOB_BYTES)
            .sum();
        fulmen_chain::metrics::METRICS
            .da
            .derived_bytes
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        let (channels, more) = self.deriver.add_block(number, blobs);
        for why in ignored.iter().chain(&more) {
            tracing::warn!(l1_block = number, "verifier: ignored: {why}");
        }
        for channel in channels {
            for span in &channel.spans {
                // Every later channel was built at or after this span's
                // origin (the L1 head the batcher saw), so it lands at or
                // after it: a restart may start reading there.
                let origin = span
                    .blocks
                    .last()
                    .map_or(channel.l1_block, |b| b.l1_origin_num.min(channel.l1_block));
                self.apply_span(span, origin, channel.l1_block, &channel.headers)?;
            }
        }
        Ok(())
    }

    /// Hands the span's blocks this node does not have yet to the seq core,
    /// after checking that the span's parent is one of this node's blocks.
    fn apply_span(
        &mut self,
        span: &SpanBatch,
        origin: u64,
        landed: u64,
        headers: &[alloy_consensus::Header],
    ) -> Result<(), Stop> {
        let parent = self.find_parent(span)?;
        for (i, block) in span.blocks.iter().enumerate() {
            let number = parent + 1 + i as u64;
            self.carried.insert(
                number,
                Carried {
                    resume_l1: origin,
                    landed,
                },
            );
            if let Some(dropped) = &mut self.dropped {
                dropped.carried_again.insert(number);
            }
            let expected = headers.iter().find(|h| h.number == number).cloned();
            if number < self.next_l2 {
                self.check_known(number, expected.as_ref())?;
                continue;
            }
            let mut txs = Vec::with_capacity(block.txs.len());
            // Replay protection is the sequencer's RPC policy, not a rule of
            // the chain: it may have taken unprotected txs (with
            // --allow-unprotected-txs).
            let rules = fulmen_chain::tx::TxRules {
                allow_unprotected: true,
                ..self.spec.tx_rules()
            };
            for tx in &block.txs {
                let raw = tx.encoded_2718();
                let recovered = decode_and_check(&raw, &rules).map_err(|e| {
                    Stop::Fatal(format!(
                        "L2 block {number}: a tx L1 carries is not valid here: {e}"
                    ))
                })?;
                txs.push(recovered);
            }
            let derived = DerivedBlock {
                number,
                timestamp: block.timestamp,
                txs,
                expected,
            };
            futures::executor::block_on(self.derived.send(derived))
                .map_err(|_| Stop::SeqCoreStopped)?;
            self.next_l2 = number + 1;
            self.origins.push_back((number, origin));
            let da = &fulmen_chain::metrics::METRICS.da;
            da.derived_l2
                .store(number, std::sync::atomic::Ordering::Relaxed);
            da.derived_l2_timestamp
                .store(block.timestamp, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// A block this node has, carried again: its header must still be the
    /// one the sequencer committed to.
    fn check_known(
        &self,
        number: u64,
        expected: Option<&alloy_consensus::Header>,
    ) -> Result<(), Stop> {
        let Some(expected) = expected else {
            return Ok(());
        };
        let view = self.published.load();
        let Some(ours) = view.block(number) else {
            return Ok(());
        };
        let Some(diff) = fulmen_chain::header_diff::first_difference(&ours.header, expected) else {
            return Ok(());
        };
        // Sealed before this node checked it (a block boot completed after
        // a crash): it goes, and is derived and checked again.
        tracing::error!(
            "verifier: L2 block {number}, which this node has, is not the sequencer's: {diff}; unwinding it"
        );
        let keep = number.saturating_sub(1);
        let resume_l1 = self
            .carried
            .get(&keep)
            .map_or_else(|| self.resume_l1_for(keep), |c| c.resume_l1);
        Err(Stop::Unwind { keep, resume_l1 })
    }

    /// If L1 replaced blocks already read, reads L1 again from the first
    /// replaced one. When L2 blocks were derived from the replaced blocks,
    /// they are no longer `safe`, and they are unwound unless the new L1
    /// chain carries them again within [`REORG_GRACE_L1_BLOCKS`] blocks
    /// (a batcher tx usually lands again in the next block or two)
    /// ([`Follower::unwind_if_still_dropped`]).
    fn rewind_after_l1_reorg(&mut self) -> Result<(), Stop> {
        let mut fork = None;
        for (&number, &hash) in self.read.iter().rev() {
            let now = self.l1.header(BlockTag::Number(number))?;
            if now.is_some_and(|h| h.hash == hash) {
                break;
            }
            fork = Some(number);
        }
        let Some(first) = fork else {
            return Ok(());
        };
        let dropped = self
            .carried
            .iter()
            .find(|(_, c)| c.landed >= first)
            .map(|(l2, _)| *l2)
            .filter(|l2| *l2 > 0);
        tracing::warn!(
            from = first,
            was_at = self.next_l1,
            l2_from = ?dropped,
            "verifier: an L1 reorg replaced blocks already read; reading L1 again from there"
        );
        if let Some(lowest) = dropped {
            let pending = self.dropped.get_or_insert(Dropped {
                fork: first,
                lowest,
                carried_again: std::collections::BTreeSet::new(),
            });
            pending.fork = pending.fork.min(first);
            pending.lowest = pending.lowest.min(lowest);
        }
        self.read.retain(|n, _| *n < first);
        self.next_l1 = first;
        Ok(())
    }

    /// Once L1 is read up to `head`: L2 blocks a reorg dropped that L1 has
    /// not carried again are unwound ([`Stop::Unwind`]), once L1 is
    /// [`REORG_GRACE_L1_BLOCKS`] past the fork.
    fn unwind_if_still_dropped(&mut self, head: u64) -> Result<(), Stop> {
        let Some(dropped) = &self.dropped else {
            return Ok(());
        };
        let missing = (dropped.lowest..self.next_l2).find(|n| !dropped.carried_again.contains(n));
        let Some(first_missing) = missing else {
            tracing::info!(
                l2_from = dropped.lowest,
                "verifier: the new L1 chain carries again the L2 blocks the reorg dropped"
            );
            self.dropped = None;
            return Ok(());
        };
        if head < dropped.fork + REORG_GRACE_L1_BLOCKS {
            return Ok(());
        }
        let keep = first_missing - 1;
        let resume_l1 = self.carried.get(&keep).map_or_else(
            || self.resume_l1_for(keep),
            |c| c.resume_l1.min(dropped.fork),
        );
        tracing::warn!(
            l1_fork = dropped.fork,
            l2_from = first_missing,
            keep,
            "verifier: an L1 reorg dropped the L1 data of L2 blocks and L1 does not carry them again; unwinding them"
        );
        Err(Stop::Unwind { keep, resume_l1 })
    }

    /// Where a restart at L2 block `keep` reads L1 from, when `carried`
    /// does not say: the resume file's point if it is at or below `keep`,
    /// else `l1_start_block`.
    fn resume_l1_for(&self, keep: u64) -> u64 {
        resume_point(&self.datadir, keep).map_or(self.l1_start_block, |(_, l1)| l1)
    }

    /// The seq core halted: what it logged but did not make visible (a
    /// block that failed its checks) must not be served after a restart
    /// either, so the next start unwinds to the last block served.
    fn after_seq_core_stopped(&self) -> String {
        let served = self.published.load().head().header.number;
        match crate::unwind::request(&self.datadir, served) {
            Ok(()) => format!(
                "the seq core stopped (its error above says why); the next start unwinds to block {served}, \
                 the last this node served, and derives again from there"
            ),
            Err(e) => format!(
                "the seq core stopped (its error above says why); cannot ask for an unwind: {e}"
            ),
        }
    }

    /// Notes where to resume and asks for the unwind to block `keep`
    /// (`crate::unwind`), then wakes `main`, which restarts the node.
    fn ask_unwind(&self, keep: u64, resume_l1: u64) -> Result<String, String> {
        let asked = crate::unwind::write_durably(
            &self.datadir,
            RESUME_FILE,
            &format!("{keep} {resume_l1}\n"),
        )
        .and_then(|()| crate::unwind::request(&self.datadir, keep));
        asked.map_err(|e| format!("cannot ask for the unwind to block {keep}: {e}"))?;
        signal_hook::low_level::raise(signal_hook::consts::SIGUSR1)
            .map_err(|e| format!("cannot restart to unwind to block {keep}: {e}"))?;
        Ok(format!(
            "unwinding to L2 block {keep}: the node restarts and reads L1 again from block {resume_l1}"
        ))
    }

    /// `safe` and `finalized` as an OP verifier has them: every block it
    /// derived and sealed is safe (its data is on L1), except blocks whose
    /// L1 data a reorg dropped and L1 has not carried again; a block is finalized
    /// once the L1 block its channel landed in is finalized (L1 is read in
    /// order, so every earlier block's data landed no later).
    fn update_heads(&mut self) -> Result<(), Stop> {
        let head = self.published.load().head().header.number;
        let l1_finalized = self.l1.header(BlockTag::Finalized)?.map_or(0, |h| h.number);
        for (&l2, carried) in &self.carried {
            if carried.landed > l1_finalized || l2 > head {
                break;
            }
            self.finalized = self.finalized.max(l2);
        }
        // Blocks whose L1 data a reorg dropped are not safe until L1
        // carries them again.
        let safe = self
            .dropped
            .as_ref()
            .map_or(head, |d| head.min(d.lowest.saturating_sub(1)));
        let heads = (safe, self.finalized.min(safe));
        if heads != self.heads_sent {
            let message = fulmen_chain::msg::SeqControl::DaHeads(fulmen_chain::view::DaHeads {
                safe: heads.0,
                finalized: heads.1,
            });
            if self.control.try_send(message).is_ok() {
                self.heads_sent = heads;
                let da = &fulmen_chain::metrics::METRICS.da;
                da.safe.store(heads.0, std::sync::atomic::Ordering::Relaxed);
                da.finalized
                    .store(heads.1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Notes the resume point of the last handed-over block now sealed
    /// (sealed blocks are durable: the view publishes them after the log
    /// flush). Written to a temporary file and renamed into place.
    fn note_resume_point(&mut self) {
        let head = self.published.load().head().header.number;
        let mut last = None;
        while self.origins.front().is_some_and(|(l2, _)| *l2 <= head) {
            last = self.origins.pop_front();
        }
        let Some((l2, l1)) = last else {
            return;
        };
        let tmp = self.datadir.join(format!("{RESUME_FILE}.tmp"));
        let written = std::fs::write(&tmp, format!("{l2} {l1}\n"))
            .and_then(|()| std::fs::rename(&tmp, self.datadir.join(RESUME_FILE)));
        if let Err(e) = written {
            tracing::warn!(error = %e, "verifier: cannot note where to resume reading L1");
        }
    }

    /// The number of the block the span follows: the last block handed
    /// over, or (a channel posted again) an earlier one. Waits for the seq
    /// core to seal what it was handed.
    fn find_parent(&self, span: &SpanBatch) -> Result<u64, Stop> {
        let expected = self.next_l2 - 1;
        loop {
            let view = self.published.load();
            if view.head().header.number >= expected {
                let lowest = expected.saturating_sub(PARENT_SEARCH_BLOCKS_MAX);
                for number in (lowest..=expected).rev() {
                    if let Some(block) = view.block(number)
                        && block.hash[..20] == span.parent_check[..]
                    {
                        return Ok(number);
                    }
                }
                let ours = view.block(expected).map(|b| b.hash).unwrap_or_default();
                return Err(Stop::Fatal(format!(
                    "the chains differ: L1's next span follows a block whose hash starts with {}, \
                     but this node's L2 block {expected} is {ours} (and no earlier block matches)",
                    span.parent_check
                )));
            }
            drop(view);
            if self.derived.is_closed() {
                return Err(Stop::SeqCoreStopped);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

enum Stop {
    L1(String),
    Fatal(String),
    /// L2 blocks after `keep` were derived from L1 blocks a reorg dropped.
    Unwind {
        keep: u64,
        resume_l1: u64,
    },
    /// The seq core halted (it logged why: a derived block that is not the
    /// sequencer's, or the log).
    SeqCoreStopped,
}

impl From<L1Error> for Stop {
    fn from(e: L1Error) -> Self {
        Stop::L1(e.to_string())
    }
}
