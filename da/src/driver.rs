//! The DA role: the loop that takes sealed L2 blocks, posts them to L1 as
//! blob txs, follows them into L1, and reports `safe` and `finalized`.
//!
//! It runs on its own OS thread (pinned to `cores.da`) and blocks on L1
//! calls; the node reaches it only through [`Host`]: sealed blocks in, DA
//! records out (each durable before the tx it describes is sent), heads
//! out. One round, every `poll`:
//!
//! 1. hand newly sealed blocks to the [`Batcher`];
//! 2. read the L1 head; check that every included, not yet finalized
//!    channel's L1 block is still canonical (an L1 reorg logs `Dropped`
//!    and the channel's txs are sent again, same nonces, same bytes);
//! 3. follow the pending channels: receipts (`Included` once all of a
//!    channel's txs are in), re-send a tx L1 does not know (a restart, a
//!    rollback), replace a tx stuck for `resubmit_after_l1_blocks` with
//!    bumped fees (logged first);
//! 4. build and post new channels while fewer than `in_flight_max` are
//!    pending: a full one as soon as the waiting blocks fill it, a partial
//!    one once the oldest waiting block has waited `channel_timeout`;
//! 5. report `safe` (channels in L1 at `confirmation_depth`) and
//!    `finalized` (channels at or below L1's finalized block).
//!
//! Channels take consecutive L1 nonces, so L1 holds them in L2 order, and
//! a channel's blocks follow the previous channel's without gap or overlap
//! ([`Tracker`] refuses anything else). After a crash the records rebuild
//! the tracker, and each pending channel is rebuilt byte for byte from its
//! recipe (see [`crate::record`]), so the batcher can watch, re-send and
//! replace exactly the txs it may have sent.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use alloy_eips::BlockNumHash;
use alloy_primitives::{Address, B256, Bytes};
use alloy_signer_local::PrivateKeySigner;
use fulmen_chain::metrics::METRICS;

use crate::batcher::{Batcher, ChannelPlan};
use crate::batcher::{BatcherError, BatcherStart, L2Block, SPAN_TRY_BLOCKS_MAX};
use crate::blob::Blob;
use crate::frame::ChannelId;
use crate::l1::{BlockTag, L1Client, L1Error, L1ForkSetting, L1Forks, L1Header, SendRefusal};
use crate::post::{BlobFees, PostError, SidecarForm, batcher_tx, bump};
use crate::record::{DaRecord, Recipe, Submission};
use crate::span_batch::SpanChain;
use crate::tracker::{Posted, Tracker, TrackerError};

/// Most sealed blocks handed to the batcher in one round, so that a long
/// backlog (L1 down) does not hold up the L1 work.
const BLOCKS_PER_ROUND_MAX: u64 = 4096;

/// A replacement's fees stay within this many times the market's
/// (op-batcher's `FeeLimitMultiplier` default).
const FEE_LIMIT_MULTIPLIER: u128 = 5;

/// How often a held-up batcher repeats its warning.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// What the DA role needs of the node.
pub trait Host {
    /// The last sealed L2 block.
    fn sealed_head(&self) -> u64;
    /// Sealed block `number`, its L1 origin left for the batcher to set;
    /// `None` while it is not sealed.
    fn block(&self, number: u64) -> Option<L2Block>;
    /// Logs a DA-progress record; returns once it is durable.
    fn log(&self, record: &DaRecord) -> Result<(), String>;
    /// Reports the L2 heads L1 vouches for; `false` if it could not be
    /// delivered now (it is reported again next round).
    fn heads(&self, safe: u64, finalized: u64) -> bool;
    /// The records logged so far, compacted (a base record, then the
    /// records of the channels still kept): what checkpoint markers carry
    /// from now on. Waits at most for room in the node's control channel.
    fn compacted(&self, _records: &[DaRecord]) {}
}

/// `[da]`, as the driver takes it.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The L2 chain, as span batches need it.
    pub chain: SpanChain,
    /// Where batcher txs go.
    pub inbox: Address,
    /// Blobs per L1 tx (1 to 6).
    pub blobs_per_tx: usize,
    /// L1 blocks on top of a batch's block before its L2 blocks are `safe`.
    pub confirmation_depth: u64,
    /// Longest the oldest waiting L2 block waits for a channel to fill.
    pub channel_timeout: Duration,
    /// A tx not in L1 after this many L1 blocks is replaced with bumped fees.
    pub resubmit_after_l1_blocks: u64,
    /// Most channels sent and not yet in L1.
    pub in_flight_max: usize,
    /// Which sidecar form to post in.
    pub l1_fork: L1ForkSetting,
    /// Time between rounds.
    pub poll: Duration,
    /// No batcher tx is sent while L1's base fee is above this.
    pub base_fee_max_wei: Option<u128>,
    /// No batcher tx is sent while L1's blob base fee is above this.
    pub blob_base_fee_max_wei: Option<u128>,
}

/// Why a round stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The L1 did not answer, or refused.
    #[error(transparent)]
    L1(#[from] L1Error),
    /// A blob tx could not be built.
    #[error(transparent)]
    Post(#[from] PostError),
    /// Posting waits: fees above the cap, a block not sealed yet.
    #[error("{0}")]
    Held(String),
    /// The pipeline refused blocks (a bug, or a changed chain).
    #[error(transparent)]
    Batcher(#[from] BatcherError),
    /// The records do not fit together.
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    /// A record could not be made durable: the node's log failed.
    #[error("logging DA progress: {0}")]
    Log(String),
    /// Posting cannot go on without an operator.
    #[error("{0}")]
    Fatal(String),
}

impl DriverError {
    /// Whether the batcher must stop for good.
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Batcher(_) | Self::Tracker(_) | Self::Log(_) | Self::Fatal(_)
        )
    }
}

/// One L1 tx of a channel.
#[derive(Debug)]
struct FlightTx {
    /// Network encoding, as last signed.
    raw: Bytes,
    /// Its hash.
    hash: B256,
    /// Every hash this tx was logged or signed with (replacements): any of
    /// them may be the one L1 includes.
    known: Vec<B256>,
    /// Its blobs and calldata, to sign a replacement.
    blobs: Vec<Blob>,
    input: Bytes,
    /// Where L1 included it, once it has.
    included: Option<(u64, B256)>,
    /// What its inclusion cost (execution and blob gas), wei.
    paid_wei: u128,
}

/// A channel that is not finalized: its txs and what L1 did with them.
#[derive(Debug)]
struct Flight {
    channel: ChannelId,
    submission: Submission,
    txs: Vec<FlightTx>,
    /// The L1 head when its txs were last sent (or replaced); `None` until
    /// they are.
    sent_at_l1: Option<u64>,
}

/// What the driver learned from L1 when it first reached it.
#[derive(Debug, Clone, Copy)]
struct Connected {
    l1_chain_id: u64,
    forks: L1Forks,
}

/// The DA role's state.
pub struct Driver<H: Host> {
    host: H,
    l1: L1Client,
    key: PrivateKeySigner,
    config: DriverConfig,
    batcher: Batcher,
    tracker: Tracker,
    /// Every record replayed at start, for the hashes of old replacements.
    replayed: Vec<DaRecord>,
    /// Channels not finalized, by first block.
    flights: BTreeMap<u64, Flight>,
    connected: Option<Connected>,
    next_nonce: u64,
    /// The next sealed block to hand to the batcher.
    next_block: u64,
    /// Since when the oldest block waiting for a channel has waited.
    waiting_since: Option<Instant>,
    /// The last L2 block pruned from the tracker (in a finalized L1 block).
    floor: u64,
    /// Blocks not yet in an included channel: (number, tx bytes).
    unposted: VecDeque<(u64, u64)>,
    /// The heads last reported.
    heads: Option<(u64, u64)>,
    /// The L1 head of the last round.
    last_head: Option<(u64, B256)>,
    /// The last warning and when it was given.
    warned: Option<(String, Instant)>,
}

impl<H: Host> Driver<H> {
    /// A driver that resumes from the log's DA records (in log order).
    /// Waits until the block before the next channel is sealed.
    pub fn new(
        host: H,
        l1: L1Client,
        key: PrivateKeySigner,
        config: DriverConfig,
        replayed: Vec<DaRecord>,
    ) -> Result<Self, DriverError> {
        let tracker = Tracker::resume(1, &replayed)?;
        let next_block = tracker.next_block();
        let start = BatcherStart {
            number: next_block - 1,
            hash: wait_block(&host, next_block - 1).hash,
            l1_origin_num: tracker.last().map_or(0, |p| p.submission.last_l1_origin.0),
        };
        let batcher = Batcher::new(config.chain, config.blobs_per_tx, start)?;
        let included = tracker.l2_head_at(u64::MAX, 0);
        let mut unposted = VecDeque::new();
        for number in included + 1..next_block {
            unposted.push_back((number, tx_bytes(&wait_block(&host, number))));
        }
        let next_nonce = tracker.last().map_or(0, |p| {
            p.submission.l1_nonce + p.submission.l1_txs.len() as u64
        });
        METRICS.da.running.store(1, Relaxed);
        Ok(Self {
            host,
            l1,
            key,
            config,
            batcher,
            tracker,
            replayed,
            flights: BTreeMap::new(),
            connected: None,
            next_nonce,
            next_block,
            waiting_since: None,
            floor: 0,
            unposted,
            heads: None,
            last_head: None,
            warned: None,
        })
    }

    /// Runs rounds until a fatal error, which it returns.
    pub fn run(mut self) -> DriverError {
        // Until L1 says otherwise, L1 vouches for nothing past genesis.
        self.report_heads(0, 0);
        loop {
            let began = Instant::now();
            let round = self.pull_blocks().and_then(|()| self.l1_round());
            match round {
                Ok(()) => {
                    METRICS.da.set_held_up("");
                    self.warned = None;
                }
                Err(e) if e.is_fatal() => {
                    METRICS
                        .da
                        .set_held_up(&format!("the DA batcher stopped: {e}"));
                    // Nothing more reaches L1: refuse new transactions
                    // rather than sequence what can never be made safe.
                    METRICS.da.unposted_bytes.store(u64::MAX, Relaxed);
                    return e;
                }
                Err(e) => self.held_up(&e),
            }
            self.publish_backlog();
            std::thread::sleep(self.config.poll.saturating_sub(began.elapsed()));
        }
    }

    fn held_up(&mut self, e: &DriverError) {
        if matches!(e, DriverError::L1(_)) {
            METRICS.da.l1_errors.fetch_add(1, Relaxed);
        }
        let message = e.to_string();
        METRICS.da.set_held_up(&message);
        let repeat = self
            .warned
            .as_ref()
            .is_some_and(|(m, at)| *m == message && at.elapsed() < WARN_EVERY);
        if !repeat {
            tracing::warn!(error = %message, "DA: posting held up; retrying every {} ms", self.config.poll.as_millis());
            self.warned = Some((message, Instant::now()));
        }
    }

    /// Hands newly sealed blocks to the batcher.
    fn pull_blocks(&mut self) -> Result<(), DriverError> {
        let head = self.host.sealed_head();
        let last = head.min(self.next_block + BLOCKS_PER_ROUND_MAX - 1);
        while self.next_block <= last {
            let Some(block) = self.host.block(self.next_block) else {
                break;
            };
            self.unposted.push_back((block.number, tx_bytes(&block)));
            self.batcher.push(block)?;
            self.waiting_since.get_or_insert_with(Instant::now);
            self.next_block += 1;
        }
        Ok(())
    }

    /// The unposted blocks and bytes, for metrics and backpressure.
    fn publish_backlog(&mut self) {
        let included = self.tracker.l2_head_at(u64::MAX, self.floor);
        // A reorg dropped an included channel: its blocks count again.
        let first_counted = self.unposted.front().map_or(self.next_block, |(n, _)| *n);
        for number in (included + 1..first_counted).rev() {
            match self.host.block(number) {
                Some(block) => self.unposted.push_front((number, tx_bytes(&block))),
                None => break,
            }
        }
        while self.unposted.front().is_some_and(|(n, _)| *n <= included) {
            self.unposted.pop_front();
        }
        let bytes: u64 = self.unposted.iter().map(|(_, b)| b).sum();
        METRICS
            .da
            .unposted_blocks
            .store(self.unposted.len() as u64, Relaxed);
        METRICS.da.unposted_bytes.store(bytes, Relaxed);
    }

    fn l1_round(&mut self) -> Result<(), DriverError> {
        let connected = match self.connected {
            Some(c) => c,
            None => self.connect()?,
        };
        let head = self.l1.header(BlockTag::Latest)?.ok_or_else(|| {
            DriverError::L1(L1Error::Malformed {
                call: "eth_getBlockByNumber".into(),
                detail: "no latest block".into(),
            })
        })?;
        METRICS.da.l1_head.store(head.number, Relaxed);
        let finalized = self.l1.header(BlockTag::Finalized)?.map_or(0, |h| h.number);
        let mut unsure = false;
        if self.l1_may_have_reorged(&head)? {
            unsure = self.check_reorgs(connected, finalized)?;
        }
        // `None` makes the next round check every included channel again.
        self.last_head = (!unsure).then_some((head.number, head.hash));
        let posted = self
            .follow_pending(connected, &head)
            .and_then(|()| self.post_new(connected, &head));
        // What already landed moves the heads even while posting waits.
        self.update_heads(&head, finalized);
        posted
    }

    /// First contact: the L1's chain id and forks, the next nonce, and
    /// the pending channels' txs rebuilt from their records.
    fn connect(&mut self) -> Result<Connected, DriverError> {
        let l1_chain_id = self.l1.chain_id()?;
        let forks = match self.config.l1_fork {
            L1ForkSetting::Auto => self.l1.forks()?,
            setting => L1Forks {
                current: self.l1.sidecar_form(setting)?,
                next: None,
            },
        };
        let l1_nonce = self.l1.nonce(self.key.address(), BlockTag::Pending)?;
        // Every tx this node logged has a nonce below `next_nonce`: L1
        // past it means another sender uses the batcher key.
        if l1_nonce > self.next_nonce {
            tracing::warn!(
                l1_nonce,
                logged = self.next_nonce,
                "DA: the batcher key has sent txs this node did not log (another node with the same key?); \
                 continuing from L1's nonce"
            );
            self.next_nonce = l1_nonce;
        }
        let connected = Connected { l1_chain_id, forks };
        if let Some(start) = self.l1_start_block() {
            METRICS.da.l1_start_block.store(start, Relaxed);
            tracing::info!(
                l1_start_block = start,
                "DA: this chain's batches start at this L1 block (a verifier's [da] l1_start_block)"
            );
        }
        let pending: Vec<Posted> = self.tracker.pending().cloned().collect();
        for posted in &pending {
            self.rebuild(connected, posted)?;
        }
        tracing::info!(
            l1_chain_id,
            form = ?forks.current,
            batcher = %self.key.address(),
            inbox = %self.config.inbox,
            next_nonce = self.next_nonce,
            resumed_channels = pending.len(),
            next_block = self.next_block,
            "DA: connected to L1"
        );
        self.connected = Some(connected);
        Ok(connected)
    }

    /// The L1 head when the first channel was built (its origin): no
    /// batch of this chain is in an earlier L1 block.
    fn l1_start_block(&self) -> Option<u64> {
        crate::tracker::l1_start_block(&self.replayed)
    }

    /// Rebuilds a logged channel's txs from its recipe, as they were sent.
    fn rebuild(&mut self, connected: Connected, posted: &Posted) -> Result<(), DriverError> {
        let s = &posted.submission;
        let parent = self.host.block(s.first_block - 1).ok_or_else(|| {
            DriverError::Held(format!("L2 block {} is not sealed yet", s.first_block - 1))
        })?;
        let parent_origin =
            crate::tracker::origin_before(&self.replayed, s.first_block).unwrap_or(0);
        let mut batcher = Batcher::new(
            self.config.chain,
            usize::from(s.recipe.blobs_per_tx),
            BatcherStart {
                number: parent.number,
                hash: parent.hash,
                l1_origin_num: parent_origin,
            },
        )?;
        for number in s.first_block..s.first_block + u64::from(s.recipe.pending_blocks) {
            let block = self
                .host
                .block(number)
                .ok_or_else(|| DriverError::Held(format!("L2 block {number} is not sealed yet")))?;
            batcher.push(block)?;
        }
        batcher.set_origin(BlockNumHash::new(s.last_l1_origin.0, s.last_l1_origin.1));
        let plan = batcher.build_again(s.recipe.full)?;
        let plan = plan
            .filter(|p| {
                p.id == posted.channel
                    && (p.first_block, p.last_block) == (s.first_block, s.last_block)
                    && p.l1_txs.len() == s.l1_txs.len()
            })
            .ok_or_else(|| {
                DriverError::Fatal(format!(
                    "cannot rebuild channel {} (L2 blocks {}..={}) from its record: this build batches differently",
                    alloy_primitives::hex::encode(posted.channel),
                    s.first_block,
                    s.last_block
                ))
            })?;
        let signed = self.sign(connected, &plan.groups(), s.l1_nonce, &s.fees, now_secs())?;
        let mut txs = Vec::with_capacity(signed.len());
        for (index, (tx, (blobs, input))) in signed.into_iter().zip(plan.into_l1_txs()).enumerate()
        {
            let mut known = self.known_hashes(&posted.channel, index);
            if !known.contains(&tx.hash) {
                // Expected only for a tx that landed before a replacement
                // of its channel's other txs (those are signed with the
                // new fees); otherwise this build batches differently.
                tracing::info!(
                    first = s.first_block,
                    index,
                    "DA: a rebuilt batcher tx differs from the one logged; watching both"
                );
                known.push(tx.hash);
            }
            txs.push(FlightTx {
                raw: tx.raw,
                hash: tx.hash,
                known,
                blobs,
                input,
                included: None,
                paid_wei: 0,
            });
        }
        self.flights.insert(
            s.first_block,
            Flight {
                channel: posted.channel,
                submission: s.clone(),
                txs,
                sent_at_l1: None,
            },
        );
        Ok(())
    }

    /// Every hash a channel's tx `index` was logged with.
    fn known_hashes(&self, channel: &ChannelId, index: usize) -> Vec<B256> {
        let mut known = Vec::new();
        for record in &self.replayed {
            if let DaRecord::Submitted {
                channel: c,
                submission,
            } = record
                && c == channel
                && let Some(hash) = submission.l1_txs.get(index)
                && !known.contains(hash)
            {
                known.push(*hash);
            }
        }
        known
    }

    /// Signs one blob tx per (blobs, calldata) group, nonces from `nonce`.
    fn sign(
        &self,
        connected: Connected,
        groups: &[(&[Blob], &Bytes)],
        nonce: u64,
        fees: &BlobFees,
        l1_timestamp: u64,
    ) -> Result<Vec<crate::post::SignedBlobTx>, DriverError> {
        let form: SidecarForm = connected.forks.form_at(l1_timestamp);
        let mut out = Vec::with_capacity(groups.len());
        for (i, (blobs, input)) in groups.iter().enumerate() {
            out.push(batcher_tx(
                blobs,
                (self.config.inbox, input),
                nonce + i as u64,
                fees,
                connected.l1_chain_id,
                &self.key,
                form,
            )?);
        }
        Ok(out)
    }

    /// The market's fees, or why posting waits for them to come down.
    fn market_fees(&self) -> Result<BlobFees, DriverError> {
        let head = self.l1.header(BlockTag::Latest)?;
        let base_fee = head.and_then(|h| h.base_fee_per_gas).unwrap_or(0);
        let blob_base_fee = self.l1.blob_base_fee()?;
        if let Some(max) = self.config.base_fee_max_wei
            && base_fee > max
        {
            return Err(DriverError::Held(format!(
                "L1 too expensive: base fee {base_fee} wei is above da.base_fee_max_wei {max}"
            )));
        }
        if let Some(max) = self.config.blob_base_fee_max_wei
            && blob_base_fee > max
        {
            return Err(DriverError::Held(format!(
                "L1 too expensive: blob base fee {blob_base_fee} wei is above da.blob_base_fee_max_wei {max}"
            )));
        }
        Ok(BlobFees::from_market(
            base_fee,
            self.l1.max_priority_fee_per_gas()?,
            blob_base_fee,
        ))
    }

    /// Logs `record`, durable, and applies it to the tracker.
    fn log(&mut self, record: DaRecord) -> Result<(), DriverError> {
        // A record the tracker would refuse is never made durable (the
        // next start would refuse the log).
        let mut tracker = self.tracker.clone();
        tracker.apply(&record)?;
        self.host.log(&record).map_err(DriverError::Log)?;
        self.tracker = tracker;
        self.replayed.push(record);
        Ok(())
    }

    /// Whether L1 may have replaced blocks since the last round: its head
    /// of then is no longer canonical (one header call when L1 moved on).
    fn l1_may_have_reorged(&self, head: &L1Header) -> Result<bool, DriverError> {
        let Some((number, hash)) = self.last_head else {
            return Ok(true);
        };
        if head.number < number {
            return Ok(true);
        }
        if head.number == number {
            return Ok(head.hash != hash);
        }
        let then = self.l1.header(BlockTag::Number(number))?;
        Ok(then.is_none_or(|h| h.hash != hash))
    }

    /// Included channels whose L1 block is no longer canonical: included
    /// elsewhere (logged again), or dropped and sent again.
    /// Returns whether some block could not be checked (to check again).
    fn check_reorgs(
        &mut self,
        connected: Connected,
        l1_finalized: u64,
    ) -> Result<bool, DriverError> {
        let included: Vec<(Posted, u64, B256)> = self
            .tracker
            .included()
            .filter(|(_, number, _)| *number > l1_finalized)
            .map(|(p, n, h)| (p.clone(), n, h))
            .collect();
        // Txs of pending channels found in L1 are looked up again.
        for flight in self.flights.values_mut() {
            if self.tracker.pending().any(|p| p.channel == flight.channel) {
                for tx in &mut flight.txs {
                    tx.included = None;
                }
            }
        }
        let mut unsure = false;
        for (posted, number, hash) in included {
            let Some(canonical) = self.l1.header(BlockTag::Number(number))? else {
                // Not there (L1 rolled back, or a lagging node behind a
                // load balancer): unknown yet, checked again next round.
                unsure = true;
                continue;
            };
            if canonical.hash == hash {
                continue;
            }
            if !self.flights.contains_key(&posted.submission.first_block) {
                self.rebuild(connected, &posted)?;
            }
            let flight = self
                .flights
                .get_mut(&posted.submission.first_block)
                .expect("rebuilt");
            for tx in &mut flight.txs {
                tx.included = None;
            }
            // Sent again as it was, not replaced at once.
            flight.sent_at_l1 = None;
            tracing::warn!(
                channel = %alloy_primitives::hex::encode(posted.channel),
                l1_block = number,
                first = posted.submission.first_block,
                last = posted.submission.last_block,
                "DA: an L1 reorg removed the block holding this channel; sending it again"
            );
            METRICS.da.reorgs.fetch_add(1, Relaxed);
            self.log(DaRecord::Dropped {
                channel: posted.channel,
            })?;
        }
        Ok(unsure)
    }

    /// Receipts, re-sends and replacements of the pending channels.
    fn follow_pending(&mut self, connected: Connected, head: &L1Header) -> Result<(), DriverError> {
        let pending: Vec<Posted> = self.tracker.pending().cloned().collect();
        // Only the first channel not in L1 is ever replaced: the ones after
        // it wait behind its nonce, whatever their fees.
        let mut first_stuck = true;
        for posted in pending {
            let first = posted.submission.first_block;
            if !self.flights.contains_key(&first) {
                self.rebuild(connected, &posted)?;
            }
            let all_in = self.find_receipts(first, head.number)?;
            if all_in {
                let flight = &self.flights[&first];
                let (l1_block, l1_hash) =
                    flight.txs.last().and_then(|t| t.included).expect("all in");
                let paid: u128 = flight.txs.iter().map(|t| t.paid_wei).sum();
                METRICS
                    .da
                    .fees_paid_gwei
                    .fetch_add((paid / 1_000_000_000) as u64, Relaxed);
                self.log(DaRecord::Included {
                    channel: flight.channel,
                    l1_block,
                    l1_hash,
                })?;
                tracing::debug!(first, l1_block, "DA: channel in L1");
                continue;
            }
            let flight = &self.flights[&first];
            let stuck = flight.sent_at_l1.is_some_and(|at| {
                head.number >= at.saturating_add(self.config.resubmit_after_l1_blocks)
            });
            if stuck && first_stuck {
                self.replace(connected, first, head)?;
            } else {
                self.send_missing(first, head.number)?;
            }
            first_stuck = false;
        }
        Ok(())
    }

    /// Looks up the receipts of a channel's txs not known in yet; whether
    /// all are in. Adds the fees paid of those found.
    /// Receipts in blocks above `l1_head` wait for the next round, so that
    /// the reorg check (which starts from the last round's head) covers
    /// every block a channel is logged in.
    fn find_receipts(&mut self, first: u64, l1_head: u64) -> Result<bool, DriverError> {
        let flight = self.flights.get_mut(&first).expect("flight exists");
        for tx in &mut flight.txs {
            if tx.included.is_some() {
                continue;
            }
            for hash in tx.known.iter().rev() {
                if let Some(receipt) = self.l1.receipt(*hash)?
                    && receipt.block_number <= l1_head
                {
                    let wei = u128::from(receipt.gas_used)
                        .saturating_mul(receipt.effective_gas_price)
                        .saturating_add(
                            u128::from(receipt.blob_gas_used.unwrap_or(0))
                                .saturating_mul(receipt.blob_gas_price.unwrap_or(0)),
                        );
                    tx.paid_wei = wei;
                    tx.included = Some((receipt.block_number, receipt.block_hash));
                    break;
                }
            }
            if tx.included.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends a channel's txs that L1 does not know (never sent before a
    /// crash, lost from the pool, removed by a reorg), in nonce order.
    fn send_missing(&mut self, first: u64, l1_head: u64) -> Result<(), DriverError> {
        let flight = self.flights.get_mut(&first).expect("flight exists");
        for tx in flight.txs.iter().filter(|t| t.included.is_none()) {
            if self.l1.transaction(tx.hash)?.is_some() {
                continue;
            }
            match self.l1.send_raw_transaction(&tx.raw) {
                Ok(_) => {}
                Err(e) => match e.send_refusal() {
                    Some(SendRefusal::AlreadyKnown) => {}
                    // Another version of this tx (an older replacement) is
                    // in the pool: it lands, or is replaced when stuck.
                    Some(SendRefusal::ReplacementUnderpriced) => {
                        tracing::debug!(error = %e, "DA: L1's pool holds another version of this tx")
                    }
                    // The nonce is used: by a version of this tx (its
                    // receipt is there), or by a tx this node never sent.
                    Some(SendRefusal::NonceTooLow) => {
                        let mut ours = false;
                        for hash in &tx.known {
                            ours |= self.l1.receipt(*hash)?.is_some();
                        }
                        if !ours {
                            return Err(DriverError::Fatal(format!(
                                "L1 nonce {} of the batcher was used by a tx this node did not send \
                                 (another node with the same batcher key?): L2 blocks {}..={} cannot be posted",
                                flight.submission.l1_nonce,
                                flight.submission.first_block,
                                flight.submission.last_block
                            )));
                        }
                    }
                    _ => return Err(e.into()),
                },
            }
        }
        flight.sent_at_l1.get_or_insert(l1_head);
        Ok(())
    }

    /// Replaces a stuck channel's txs not in L1 with bumped fees: logged
    /// first, then sent.
    fn replace(
        &mut self,
        connected: Connected,
        first: u64,
        head: &L1Header,
    ) -> Result<(), DriverError> {
        let market = self.market_fees()?;
        let flight = &self.flights[&first];
        let fees = bump(&flight.submission.fees).max(market);
        // Fees never pass FEE_LIMIT_MULTIPLIER x the market (op-batcher's
        // rule): a tx already paying that much is left to land.
        let limit = market.times(FEE_LIMIT_MULTIPLIER);
        if fees.max_fee_per_gas > limit.max_fee_per_gas
            || fees.max_priority_fee_per_gas > limit.max_priority_fee_per_gas
            || fees.max_fee_per_blob_gas > limit.max_fee_per_blob_gas
        {
            tracing::debug!(
                first,
                "DA: a stuck tx already pays the fee limit; not replaced"
            );
            let flight = self.flights.get_mut(&first).expect("flight exists");
            flight.sent_at_l1 = Some(head.number);
            return Ok(());
        }
        let stuck: Vec<usize> = (0..flight.txs.len())
            .filter(|i| flight.txs[*i].included.is_none())
            .collect();
        let mut signed = Vec::new();
        for &i in &stuck {
            let tx = &flight.txs[i];
            let nonce = flight.submission.l1_nonce + i as u64;
            let mut one = self.sign(
                connected,
                &[(tx.blobs.as_slice(), &tx.input)],
                nonce,
                &fees,
                head.timestamp,
            )?;
            signed.push((i, one.pop().expect("one tx")));
        }
        let mut submission = flight.submission.clone();
        for (i, tx) in &signed {
            submission.l1_txs[*i] = tx.hash;
        }
        submission.fees = fees;
        let channel = flight.channel;
        self.log(DaRecord::Submitted {
            channel,
            submission: submission.clone(),
        })?;
        tracing::info!(
            first,
            last = submission.last_block,
            max_fee_per_gas = fees.max_fee_per_gas,
            max_fee_per_blob_gas = fees.max_fee_per_blob_gas,
            "DA: replacing a stuck batcher tx with bumped fees"
        );
        METRICS
            .da
            .replacements
            .fetch_add(signed.len() as u64, Relaxed);
        let flight = self.flights.get_mut(&first).expect("flight exists");
        flight.submission = submission;
        flight.sent_at_l1 = Some(head.number);
        for (i, tx) in signed {
            let slot = &mut flight.txs[i];
            slot.raw = tx.raw;
            slot.hash = tx.hash;
            slot.known.push(tx.hash);
        }
        for i in stuck {
            let raw = flight.txs[i].raw.clone();
            if let Err(e) = self.l1.send_raw_transaction(&raw) {
                match e.send_refusal() {
                    Some(SendRefusal::AlreadyKnown | SendRefusal::NonceTooLow) => {}
                    _ => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Builds, logs and sends new channels while there is room in flight.
    fn post_new(&mut self, connected: Connected, head: &L1Header) -> Result<(), DriverError> {
        loop {
            if self.tracker.pending().count() >= self.config.in_flight_max
                || self.batcher.pending_blocks() == 0
            {
                return Ok(());
            }
            let timed_out = self
                .waiting_since
                .is_some_and(|since| since.elapsed() >= self.config.channel_timeout);
            let fees = self.market_fees()?;
            let waiting = self.batcher.pending_blocks();
            self.batcher
                .set_origin(BlockNumHash::new(head.number, head.hash));
            let Some(plan) = self.batcher.next_channel(!timed_out)? else {
                return Ok(());
            };
            self.waiting_since = (self.batcher.pending_blocks() > 0).then(Instant::now);
            self.post(connected, head, plan, waiting, !timed_out, fees)?;
        }
    }

    fn post(
        &mut self,
        connected: Connected,
        head: &L1Header,
        plan: ChannelPlan,
        waiting: usize,
        full: bool,
        fees: BlobFees,
    ) -> Result<(), DriverError> {
        let blocks = (plan.last_block - plan.first_block + 1) as usize;
        // The batcher looks at most one span window past the blocks it
        // takes: that many waiting blocks rebuild the same channel.
        let recipe = Recipe {
            pending_blocks: waiting.min(blocks + SPAN_TRY_BLOCKS_MAX) as u32,
            full,
            blobs_per_tx: self.config.blobs_per_tx as u8,
        };
        // The batcher has handed the blocks over: a channel that cannot be
        // signed would leave a gap, so it stops the batcher.
        let signed = self
            .sign(
                connected,
                &plan.groups(),
                self.next_nonce,
                &fees,
                head.timestamp,
            )
            .map_err(|e| DriverError::Fatal(format!("signing a built channel: {e}")))?;
        let submission = Submission {
            first_block: plan.first_block,
            last_block: plan.last_block,
            last_l1_origin: (head.number, head.hash),
            l1_nonce: self.next_nonce,
            l1_txs: signed.iter().map(|t| t.hash).collect(),
            fees,
            recipe,
        };
        self.log(DaRecord::Submitted {
            channel: plan.id,
            submission: submission.clone(),
        })?;
        self.next_nonce += signed.len() as u64;
        if self.replayed.len() == 1 {
            METRICS.da.l1_start_block.store(head.number, Relaxed);
            tracing::info!(
                l1_start_block = head.number,
                "DA: the first batch of this chain; verifiers start at this L1 block ([da] l1_start_block)"
            );
        }
        let da = &METRICS.da;
        da.channels.fetch_add(1, Relaxed);
        da.blobs.fetch_add(plan.blobs() as u64, Relaxed);
        // Each frame is its channel-id, number, length and is-last around
        // its data; the blob also holds the derivation version byte.
        da.blob_data_bytes.fetch_add(
            (plan.channel_bytes + plan.blobs() * (crate::frame::FRAME_OVERHEAD_BYTES + 1)) as u64,
            Relaxed,
        );
        da.rlp_bytes.fetch_add(plan.rlp_bytes as u64, Relaxed);
        da.channel_bytes
            .fetch_add(plan.channel_bytes as u64, Relaxed);
        da.txs.fetch_add(plan.txs as u64, Relaxed);
        da.plain_bytes.fetch_add(plan.plain_bytes as u64, Relaxed);
        tracing::info!(
            first = plan.first_block,
            last = plan.last_block,
            txs = plan.txs,
            blobs = plan.blobs(),
            compressed = plan.channel_bytes,
            rlp = plan.rlp_bytes,
            nonce = submission.l1_nonce,
            full,
            "DA: posting a channel"
        );
        let (first, channel) = (plan.first_block, plan.id);
        let txs = signed
            .into_iter()
            .zip(plan.into_l1_txs())
            .map(|(tx, (blobs, input))| FlightTx {
                raw: tx.raw,
                hash: tx.hash,
                known: vec![tx.hash],
                blobs,
                input,
                included: None,
                paid_wei: 0,
            })
            .collect();
        self.flights.insert(
            first,
            Flight {
                channel,
                submission,
                txs,
                sent_at_l1: None,
            },
        );
        self.send_missing(first, head.number)
    }

    /// Reports `safe` and `finalized`, and forgets finalized channels.
    fn update_heads(&mut self, head: &L1Header, l1_finalized: u64) {
        let safe_l1 = head.number.saturating_sub(self.config.confirmation_depth);
        let safe = self.tracker.l2_head_at(safe_l1, self.floor);
        let finalized = self
            .tracker
            .l2_head_at(l1_finalized.min(safe_l1), self.floor)
            .min(safe);
        self.report_heads(safe, finalized);
        if let Some(pruned) = self.tracker.prune(l1_finalized.min(safe_l1)) {
            self.floor = self.floor.max(pruned);
            self.flights.retain(|_, f| f.submission.last_block > pruned);
            self.compact();
        }
    }

    /// Replaces the records replayed and logged so far with a base record
    /// and the records of the channels the tracker still keeps (every
    /// other one is finalized), and hands the list to the host.
    fn compact(&mut self) {
        let Some(records) = crate::tracker::compact(&self.replayed, &self.tracker) else {
            return;
        };
        debug_assert!(Tracker::resume(1, &records).is_ok());
        tracing::info!(
            from = self.replayed.len(),
            to = records.len(),
            "DA: records compacted (older channels are finalized)"
        );
        self.host.compacted(&records);
        self.replayed = records;
    }

    fn report_heads(&mut self, safe: u64, finalized: u64) {
        if self.heads == Some((safe, finalized)) {
            return;
        }
        if !self.host.heads(safe, finalized) {
            return;
        }
        METRICS.da.safe.store(safe, Relaxed);
        METRICS.da.finalized.store(finalized, Relaxed);
        self.heads = Some((safe, finalized));
    }
}

/// The wall clock, seconds (for the L1 fork in force).
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Waits (the node is booting) until block `number` is sealed.
fn wait_block<H: Host>(host: &H, number: u64) -> L2Block {
    loop {
        if let Some(block) = host.block(number) {
            return block;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tx_bytes(block: &L2Block) -> u64 {
    use alloy_eips::eip2718::Encodable2718;
    block.txs.iter().map(|t| t.encode_2718_len() as u64).sum()
}
