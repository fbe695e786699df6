//! The batcher's pipeline, free of IO: sealed L2 blocks in, in order;
//! channels of span batches out, as frames packed one per blob and grouped
//! into L1 transactions of at most [`BLOBS_PER_TX_MAX`] blobs.
//!
//! Blocks enter a channel in order and each exactly once: [`Batcher::push`]
//! refuses a gap or a block that does not extend the last one, and a
//! channel's first block is always the one after the previous channel's
//! last. A channel's id is derived from the chain id and its first block,
//! so a channel rebuilt after a restart has the id it had before.

use std::collections::VecDeque;

use alloy_consensus::{Header, TxEnvelope};
use alloy_eips::BlockNumHash;
use alloy_eips::eip4844::Blob;
use alloy_primitives::{B256, keccak256};

use crate::blob::{BLOBS_PER_TX_MAX, BlobError};
use crate::channel::{ChannelError, ChannelOut};
use crate::frame::{CHANNEL_ID_BYTES, ChannelId, FRAME_DATA_BYTES_PER_BLOB_MAX, frames_to_blobs};
use crate::span_batch::{
    SpanBatch, SpanBatchError, SpanBlockInput, SpanChain, SpanParent, encode_typed, span_len,
};

/// Most blocks one span batch is tried with: bounds the work of filling a
/// channel when many blocks wait (L1 was down).
pub const SPAN_TRY_BLOCKS_MAX: usize = 256;

/// One sealed L2 block, as the batcher takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L2Block {
    /// Block number.
    pub number: u64,
    /// Block hash.
    pub hash: B256,
    /// Parent hash.
    pub parent_hash: B256,
    /// Timestamp, in seconds.
    pub timestamp: u64,
    /// The L1 block it is anchored to.
    pub l1_origin: BlockNumHash,
    /// Its transactions, in block order.
    pub txs: Vec<TxEnvelope>,
    /// The header the node sealed (posted in the channel's header
    /// commitment, `crate::commit`).
    pub header: Header,
}

/// Where the batcher starts: the last block already in a channel (or the
/// genesis block), and its L1 origin number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatcherStart {
    /// Its number.
    pub number: u64,
    /// Its hash.
    pub hash: B256,
    /// Its L1 origin number.
    pub l1_origin_num: u64,
}

/// A closed channel, ready to post.
#[derive(Debug, Clone)]
pub struct ChannelPlan {
    /// The channel's id.
    pub id: ChannelId,
    /// First L2 block in it.
    pub first_block: u64,
    /// Last L2 block in it.
    pub last_block: u64,
    /// Span batches in it.
    pub batches: usize,
    /// L2 transactions in it.
    pub txs: usize,
    /// Bytes of its batches before compression (RLP strings).
    pub rlp_bytes: usize,
    /// Bytes of its transactions as plain EIP-2718 envelopes.
    pub plain_bytes: usize,
    /// Bytes of the compressed channel, version byte included.
    pub channel_bytes: usize,
    /// Its frames, one per blob, grouped into L1 transactions in frame order.
    pub l1_txs: Vec<Vec<Blob>>,
    /// The calldata of its first L1 transaction: the commitment to its
    /// blocks' headers (`crate::commit`); the others carry none.
    pub headers: alloy_primitives::Bytes,
}

impl ChannelPlan {
    /// Blobs in all its L1 transactions.
    pub fn blobs(&self) -> usize {
        self.l1_txs.iter().map(Vec::len).sum()
    }

    /// Each L1 transaction's blobs and calldata, in order.
    pub fn into_l1_txs(self) -> impl Iterator<Item = (Vec<Blob>, alloy_primitives::Bytes)> {
        let headers = self.headers;
        self.l1_txs.into_iter().enumerate().map(move |(i, blobs)| {
            let input = if i == 0 {
                headers.clone()
            } else {
                Default::default()
            };
            (blobs, input)
        })
    }

    /// Each L1 transaction's blobs and calldata, to sign.
    pub fn groups(&self) -> Vec<(&[Blob], &alloy_primitives::Bytes)> {
        static NONE: alloy_primitives::Bytes = alloy_primitives::Bytes::new();
        self.l1_txs
            .iter()
            .enumerate()
            .map(|(i, blobs)| (blobs.as_slice(), if i == 0 { &self.headers } else { &NONE }))
            .collect()
    }
}

/// Why the batcher cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum BatcherError {
    /// A block is not the next one.
    #[error("L2 block {got} handed to the batcher, but the next one is {expected}")]
    Gap {
        /// The next block number.
        expected: u64,
        /// The block handed over.
        got: u64,
    },
    /// A block does not extend the previous one.
    #[error("L2 block {number}'s parent {parent} is not the previous block {previous}")]
    NotAChild {
        /// The block.
        number: u64,
        /// Its parent hash.
        parent: B256,
        /// The previous block's hash.
        previous: B256,
    },
    /// `blobs_per_tx` out of range.
    #[error("blobs per L1 transaction must be 1 to {BLOBS_PER_TX_MAX}, not {0}")]
    BlobsPerTx(usize),
    /// A span batch cannot carry the blocks.
    #[error(transparent)]
    SpanBatch(#[from] SpanBatchError),
    /// The channel refused.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// A frame does not fit a blob.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// The pipeline's state: blocks waiting for a channel, and where the next
/// channel starts.
#[derive(Debug)]
pub struct Batcher {
    chain: SpanChain,
    blobs_per_tx: usize,
    /// Blocks not yet in a channel, oldest first.
    pending: VecDeque<L2Block>,
    /// The last block in a channel: the next span's parent.
    parent: SpanParent,
    /// Number of the last block handed over.
    last_number: u64,
    /// Hash of the last block handed over.
    last_hash: B256,
    /// Transaction bytes of the pending blocks (their EIP-2718 size).
    pending_tx_bytes: usize,
    /// Channel bytes per plain tx byte, as last measured: a channel is
    /// tried for `only_if_full` only once the waiting txs would fill it at
    /// this ratio, not rebuilt (and thrown away) at every round.
    ratio: f64,
    /// Plain tx bytes waiting at the last attempt that did not fill a
    /// channel: nothing is tried again before more arrive.
    tried_at_bytes: usize,
}

/// Channel bytes per plain tx byte assumed before the first channel: low,
/// so the first full channel is tried early rather than late.
const FIRST_RATIO_GUESS: f64 = 0.3;

impl Batcher {
    /// A batcher whose next block is `start.number + 1`.
    pub fn new(
        chain: SpanChain,
        blobs_per_tx: usize,
        start: BatcherStart,
    ) -> Result<Self, BatcherError> {
        if !(1..=BLOBS_PER_TX_MAX).contains(&blobs_per_tx) {
            return Err(BatcherError::BlobsPerTx(blobs_per_tx));
        }
        Ok(Self {
            chain,
            blobs_per_tx,
            pending: VecDeque::new(),
            parent: SpanParent {
                hash: start.hash,
                l1_origin_num: start.l1_origin_num,
            },
            last_number: start.number,
            last_hash: start.hash,
            pending_tx_bytes: 0,
            ratio: FIRST_RATIO_GUESS,
            tried_at_bytes: 0,
        })
    }

    /// Hands over the next sealed block.
    pub fn push(&mut self, block: L2Block) -> Result<(), BatcherError> {
        if block.number != self.last_number + 1 {
            return Err(BatcherError::Gap {
                expected: self.last_number + 1,
                got: block.number,
            });
        }
        if block.parent_hash != self.last_hash {
            return Err(BatcherError::NotAChild {
                number: block.number,
                parent: block.parent_hash,
                previous: self.last_hash,
            });
        }
        self.last_number = block.number;
        self.last_hash = block.hash;
        self.pending_tx_bytes += tx_bytes(&block);
        self.pending.push_back(block);
        Ok(())
    }

    /// Anchors every waiting block to `origin`: the L1 head the node saw
    /// last, set just before a channel is built, so that a channel's
    /// blocks share one origin and the channel can be built again from
    /// its DA record.
    pub fn set_origin(&mut self, origin: BlockNumHash) {
        for block in &mut self.pending {
            block.l1_origin = origin;
        }
    }

    /// Blocks waiting for a channel.
    pub fn pending_blocks(&self) -> usize {
        self.pending.len()
    }

    /// EIP-2718 bytes of the transactions waiting for a channel (what
    /// backpressure bounds).
    pub fn pending_tx_bytes(&self) -> usize {
        self.pending_tx_bytes
    }

    /// The next channel: as many waiting blocks, from the oldest, as fit
    /// `blobs_per_tx` blobs. With `only_if_full` the channel is built only
    /// if the waiting blocks fill it (otherwise nothing is taken and `None`
    /// comes back); without, whatever waits goes into one channel (a
    /// timeout, or shutdown). A single block too large for the target gets
    /// a channel of its own, spread over as many L1 transactions as needed.
    pub fn next_channel(
        &mut self,
        only_if_full: bool,
    ) -> Result<Option<ChannelPlan>, BatcherError> {
        self.build(only_if_full, true)
    }

    /// A logged channel built again after a restart: as
    /// [`Batcher::next_channel`], but tried whatever the measured ratio says
    /// (the ratio decides when to try, never what a channel holds).
    pub fn build_again(&mut self, full: bool) -> Result<Option<ChannelPlan>, BatcherError> {
        self.build(full, false)
    }

    fn build(
        &mut self,
        only_if_full: bool,
        gated: bool,
    ) -> Result<Option<ChannelPlan>, BatcherError> {
        let Some(first) = self.pending.front() else {
            return Ok(None);
        };
        let first_block = first.number;
        let mut channel = ChannelOut::for_blobs(
            channel_id(self.chain.chain_id, first_block),
            self.blobs_per_tx,
        );
        if gated && only_if_full && !self.may_fill(channel.target_bytes()) {
            return Ok(None);
        }
        let (taken, full) = self.fill(&mut channel)?;
        if only_if_full && !full {
            // All that waits went in: learn the ratio, try again later.
            channel.close()?;
            self.learn_ratio(channel.compressed_bytes(), self.pending_tx_bytes);
            self.tried_at_bytes = self.pending_tx_bytes;
            return Ok(None);
        }
        channel.close()?;
        let frames = channel.frames(FRAME_DATA_BYTES_PER_BLOB_MAX)?;
        let blobs = frames_to_blobs(&frames)?;
        let consumed: Vec<L2Block> = self.pending.drain(..taken).collect();
        let last = consumed.last().expect("a channel holds at least one block");
        self.parent = SpanParent {
            hash: last.hash,
            l1_origin_num: last.l1_origin.number,
        };
        let plain_bytes = consumed.iter().map(tx_bytes).sum::<usize>();
        self.pending_tx_bytes -= plain_bytes;
        self.learn_ratio(channel.compressed_bytes(), plain_bytes);
        self.tried_at_bytes = 0;
        let plan = ChannelPlan {
            id: channel.id(),
            first_block,
            last_block: last.number,
            batches: channel.batches(),
            txs: consumed.iter().map(|b| b.txs.len()).sum(),
            rlp_bytes: channel.uncompressed_bytes(),
            plain_bytes,
            channel_bytes: channel.compressed_bytes(),
            l1_txs: blobs
                .chunks(self.blobs_per_tx)
                .map(<[Blob]>::to_vec)
                .collect(),
            headers: crate::commit::encode_headers_within(
                &consumed
                    .iter()
                    .map(|b| b.header.clone())
                    .collect::<Vec<_>>(),
            ),
        };
        assert_eq!(plan.last_block - plan.first_block + 1, taken as u64);
        Ok(Some(plan))
    }

    /// Whether the waiting txs may fill a channel of `target_bytes`: at the
    /// last measured ratio, and more than at the last attempt that did not.
    fn may_fill(&self, target_bytes: usize) -> bool {
        self.pending_tx_bytes > self.tried_at_bytes
            && self.pending_tx_bytes as f64 * self.ratio >= target_bytes as f64
    }

    fn learn_ratio(&mut self, channel_bytes: usize, plain_bytes: usize) {
        // Blocks without txs say nothing about the ratio.
        if plain_bytes >= 1024 {
            self.ratio = channel_bytes as f64 / plain_bytes as f64;
        }
    }

    /// Adds span batches of the waiting blocks to `channel` until not even
    /// one more block fits or they run out. Returns how many blocks went in
    /// and whether the channel is full. Takes nothing from `pending`.
    fn fill(&self, channel: &mut ChannelOut) -> Result<(usize, bool), BatcherError> {
        let mut taken = 0;
        let mut parent = self.parent;
        while taken < self.pending.len() {
            let window = (taken + SPAN_TRY_BLOCKS_MAX).min(self.pending.len());
            let rest: Vec<SpanBlockInput> =
                self.pending.range(taken..window).map(span_input).collect();
            let span = span_len(&rest, self.chain.block_time_secs).max(1);
            let Some(added) = self.add_span(channel, &rest[..span], parent)? else {
                return Ok((taken, true));
            };
            let last = &self.pending[taken + added - 1];
            parent = SpanParent {
                hash: last.hash,
                l1_origin_num: last.l1_origin.number,
            };
            taken += added;
        }
        Ok((taken, false))
    }

    /// Adds the longest prefix of `span` (halving from all of it) that is
    /// estimated to fit as one span batch; `None` when not even one block
    /// fits. A single block always fits an empty channel.
    fn add_span(
        &self,
        channel: &mut ChannelOut,
        span: &[SpanBlockInput],
        parent: SpanParent,
    ) -> Result<Option<usize>, BatcherError> {
        let mut count = span.len();
        while count > 0 {
            let batch = SpanBatch::from_blocks(span[..count].to_vec(), parent, self.chain)?;
            // `0x01 ++ span batch`; the channel wraps it as an RLP string.
            let typed = encode_typed(&batch)?;
            let rlp_bytes = alloy_rlp::Header {
                list: false,
                payload_length: typed.len(),
            }
            .length_with_payload();
            // An empty channel takes any batch: size the first one by the
            // estimate (1:1 until brotli has flushed), so that a single
            // oversized channel happens only for a single oversized block.
            // Later batches are checked by `add_batch`, which flushes first
            // to learn the real ratio.
            if channel.batches() == 0 && count > 1 && channel.is_full_for(rlp_bytes) {
                count /= 2;
                continue;
            }
            match channel.add_batch(&typed) {
                Ok(()) => return Ok(Some(count)),
                Err(ChannelError::Full { .. }) => count /= 2,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

/// The id of the channel that starts at L2 block `first_block`: the same
/// after a restart, different for every channel of the chain.
pub fn channel_id(chain_id: u64, first_block: u64) -> ChannelId {
    let mut seed = Vec::with_capacity(32);
    seed.extend_from_slice(b"fulmen channel");
    seed.extend_from_slice(&chain_id.to_be_bytes());
    seed.extend_from_slice(&first_block.to_be_bytes());
    let digest = keccak256(seed);
    digest[..CHANNEL_ID_BYTES].try_into().expect("16 bytes")
}

fn span_input(block: &L2Block) -> SpanBlockInput {
    SpanBlockInput {
        timestamp: block.timestamp,
        l1_origin: block.l1_origin,
        txs: block.txs.clone(),
    }
}

fn tx_bytes(block: &L2Block) -> usize {
    use alloy_eips::eip2718::Encodable2718;
    block.txs.iter().map(Encodable2718::encode_2718_len).sum()
}

#[cfg(test)]
#[path = "batcher_tests.rs"]
mod tests;
