//! Derivation's front half, for the verifier: from L1 blocks to the span
//! batches the batcher posted, trusting nothing but L1.
//!
//! Per L1 block, in order: the blob txs to the inbox **from the batcher
//! address** (others are ignored, with a reason); their blobs from the
//! beacon API, each checked against its versioned hash; each blob decoded
//! (OP encoding v0) into frames; frames gathered per channel in a bank; a
//! complete channel decompressed into span batches. Anything malformed is
//! ignored with a reason ([`Ignored`]) and never stops derivation: only the
//! batcher can post, but a verifier must not trust even it to post sense.
//!
//! Channels that stay incomplete for `channel_timeout_l1_blocks` L1 blocks
//! are dropped (as op-node does), so garbage cannot grow the bank.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, hex};

use crate::blob::{Blob, decode_blob};
use crate::channel::ChannelIn;
use crate::frame::{ChannelId, decode_payload};
use crate::l1::{BlockTag, L1Block, L1Client, L1Error, SlotClock};
use crate::post::blob_versioned_hash;
use crate::span_batch::{SpanBatch, SpanChain, decode_typed};

/// Most channels gathered at once; past it the oldest is dropped.
pub const CHANNELS_OPEN_MAX: usize = 64;

/// Where derivation reads and whom it believes.
#[derive(Debug, Clone, Copy)]
pub struct DeriveConfig {
    /// The batch inbox.
    pub inbox: Address,
    /// The only sender whose batches count.
    pub batcher: Address,
    /// The L2 chain, as span batches need it.
    pub chain: SpanChain,
    /// An incomplete channel is dropped after this many L1 blocks.
    pub channel_timeout_l1_blocks: u64,
}

/// Something on L1 that derivation ignored, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// A blob tx to the inbox from another sender.
    #[error("L1 tx {tx} to the inbox is from {from}, not the batcher")]
    WrongSender {
        /// The tx.
        tx: B256,
        /// Its sender.
        from: Address,
    },
    /// A blob that does not match its tx's versioned hash.
    #[error("blob {index} of L1 tx {tx} does not match its versioned hash")]
    VersionedHash {
        /// The tx.
        tx: B256,
        /// The blob's index in the tx.
        index: usize,
    },
    /// A blob that is not OP blob encoding v0, or a payload that is not
    /// frames.
    #[error("blob {index} of L1 tx {tx}: {detail}")]
    Payload {
        /// The tx.
        tx: B256,
        /// The blob's index in the tx.
        index: usize,
        /// What is wrong.
        detail: String,
    },
    /// Calldata that is not a header commitment (the channel derives
    /// without one).
    #[error("L1 tx {tx}: {detail}")]
    Commitment {
        /// The tx.
        tx: B256,
        /// What is wrong.
        detail: String,
    },
    /// A frame the channel bank refused, or a channel that does not decode.
    #[error("channel {channel}: {detail}")]
    Channel {
        /// The channel id, hex.
        channel: String,
        /// What is wrong.
        detail: String,
    },
}

/// A complete channel and the span batches it held.
#[derive(Debug, Clone)]
pub struct DerivedChannel {
    /// The L1 block its last frame came in.
    pub l1_block: u64,
    /// The channel.
    pub channel: ChannelId,
    /// Its span batches, in order.
    pub spans: Vec<SpanBatch>,
    /// The headers the sequencer sealed for its blocks, from the header
    /// commitment of the tx that carried its first frame
    /// (`crate::commit`); empty when it carried none.
    pub headers: Vec<alloy_consensus::Header>,
}

/// The blobs of one batcher tx, with the versioned hashes the tx commits to.
#[derive(Debug, Clone)]
pub struct BatcherBlobs {
    /// The tx.
    pub tx: B256,
    /// Its blobs, in order.
    pub blobs: Vec<Blob>,
    /// Its `blob_versioned_hashes`.
    pub hashes: Vec<B256>,
    /// Its calldata (a header commitment, `crate::commit`, or empty).
    pub input: alloy_primitives::Bytes,
}

/// A batcher blob tx found in an L1 block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatcherTx {
    /// The tx.
    pub tx: B256,
    /// Index of its first blob among all the block's blobs (the beacon
    /// API answers them in tx order).
    pub first_blob: usize,
    /// Its `blob_versioned_hashes`.
    pub hashes: Vec<B256>,
    /// Its calldata.
    pub input: alloy_primitives::Bytes,
}

/// How the beacon API names a block's blobs.
///
/// The verifier starts with [`BeaconIds::ExecutionNumber`], which anvil
/// takes. A beacon node refuses it (400 or 404); the verifier then reads
/// the beacon chain's clock (`/eth/v1/beacon/genesis` and
/// `/eth/v1/config/spec`) and names blocks by slot, computed from each
/// execution block's timestamp ([`BeaconIds::Slot`]): this reads a block as
/// soon as it lands. If the clock cannot be read, or a timestamp does not
/// fall on a slot, it names the block by its beacon block root, the next
/// execution block's `parentBeaconBlockRoot` (EIP-4788;
/// [`BeaconIds::BlockRoot`]), which trails the L1 head by one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeaconIds {
    /// By execution block number (anvil).
    ExecutionNumber,
    /// By slot: `(timestamp - genesis_time) / seconds_per_slot`.
    Slot(SlotClock),
    /// By beacon block root: the next execution block's
    /// `parentBeaconBlockRoot` (any beacon node).
    BlockRoot,
}

/// The channel bank: frames in, complete channels out.
#[derive(Debug)]
pub struct Deriver {
    config: DeriveConfig,
    /// Open channels, with the L1 block of their first frame.
    open: BTreeMap<ChannelId, (ChannelIn, u64)>,
    /// Header commitments of open channels, from the tx with frame 0.
    headers: BTreeMap<ChannelId, Vec<alloy_consensus::Header>>,
}

impl Deriver {
    /// An empty bank.
    pub fn new(config: DeriveConfig) -> Self {
        Self {
            config,
            open: BTreeMap::new(),
            headers: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DeriveConfig {
        &self.config
    }

    /// Takes one L1 block's batcher blobs (from [`fetch_batcher_blobs`]);
    /// returns the channels they complete and what was ignored.
    pub fn add_block(
        &mut self,
        l1_block: u64,
        txs: Vec<BatcherBlobs>,
    ) -> (Vec<DerivedChannel>, Vec<Ignored>) {
        let mut done = Vec::new();
        let mut ignored = Vec::new();
        for tx in txs {
            let headers = match crate::commit::decode_headers(&tx.input) {
                Ok(headers) => headers,
                Err(detail) => {
                    ignored.push(Ignored::Commitment { tx: tx.tx, detail });
                    Vec::new()
                }
            };
            for (index, blob) in tx.blobs.iter().enumerate() {
                let hash_ok = tx
                    .hashes
                    .get(index)
                    .is_some_and(|h| blob_versioned_hash(blob).is_ok_and(|got| got == *h));
                if !hash_ok {
                    ignored.push(Ignored::VersionedHash { tx: tx.tx, index });
                    continue;
                }
                let frames = decode_blob(blob)
                    .map_err(|e| e.to_string())
                    .and_then(|p| decode_payload(&p).map_err(|e| e.to_string()));
                match frames {
                    Ok(frames) => {
                        for frame in frames {
                            if frame.number == 0 && !headers.is_empty() {
                                self.headers.insert(frame.channel_id, headers.clone());
                            }
                            self.add_frame(l1_block, frame, &mut done, &mut ignored);
                        }
                    }
                    Err(detail) => ignored.push(Ignored::Payload {
                        tx: tx.tx,
                        index,
                        detail,
                    }),
                }
            }
        }
        self.expire(l1_block, &mut ignored);
        (done, ignored)
    }

    fn add_frame(
        &mut self,
        l1_block: u64,
        frame: crate::frame::Frame,
        done: &mut Vec<DerivedChannel>,
        ignored: &mut Vec<Ignored>,
    ) {
        let id = frame.channel_id;
        let (channel, _) = self
            .open
            .entry(id)
            .or_insert_with(|| (ChannelIn::new(id), l1_block));
        if let Err(e) = channel.add_frame(frame) {
            ignored.push(channel_ignored(&id, e.to_string()));
            if matches!(e, crate::channel::ChannelError::Oversized { .. }) {
                self.open.remove(&id);
                self.headers.remove(&id);
            }
            return;
        }
        if !channel.is_ready() {
            return;
        }
        let (channel, _) = self.open.remove(&id).expect("just found");
        let headers = self.headers.remove(&id).unwrap_or_default();
        match self.spans(&channel) {
            Ok(spans) => done.push(DerivedChannel {
                l1_block,
                channel: id,
                spans,
                headers,
            }),
            Err(detail) => ignored.push(channel_ignored(&id, detail)),
        }
    }

    fn spans(&self, channel: &ChannelIn) -> Result<Vec<SpanBatch>, String> {
        let batches = channel.read().map_err(|e| e.to_string())?;
        batches
            .iter()
            .map(|typed| decode_typed(typed, &self.config.chain).map_err(|e| e.to_string()))
            .collect()
    }

    /// Drops channels open for longer than the timeout, and the oldest
    /// beyond [`CHANNELS_OPEN_MAX`].
    fn expire(&mut self, l1_block: u64, ignored: &mut Vec<Ignored>) {
        let timeout = self.config.channel_timeout_l1_blocks;
        let stale: Vec<ChannelId> = self
            .open
            .iter()
            .filter(|(_, (_, first))| l1_block.saturating_sub(*first) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.open.remove(&id);
            self.headers.remove(&id);
            ignored.push(channel_ignored(
                &id,
                format!("incomplete after {timeout} L1 blocks; dropped"),
            ));
        }
        while self.open.len() > CHANNELS_OPEN_MAX {
            let oldest = self
                .open
                .iter()
                .min_by_key(|(_, (_, first))| *first)
                .map(|(id, _)| *id)
                .expect("not empty");
            self.open.remove(&oldest);
            self.headers.remove(&oldest);
            ignored.push(channel_ignored(
                &oldest,
                "too many open channels; the oldest dropped".into(),
            ));
        }
    }
}

fn channel_ignored(id: &ChannelId, detail: String) -> Ignored {
    Ignored::Channel {
        channel: hex::encode(id),
        detail,
    }
}

/// The batcher's blob txs in `block` (a block with its txs), their blobs
/// from the beacon API, and the inbox txs ignored for their sender.
pub fn fetch_batcher_blobs(
    l1: &L1Client,
    config: &DeriveConfig,
    block: &L1Block,
    ids: BeaconIds,
) -> Result<(Vec<BatcherBlobs>, Vec<Ignored>), L1Error> {
    let (wanted, ignored) = select_batcher_txs(config, block);
    if wanted.is_empty() {
        return Ok((Vec::new(), ignored));
    }
    let id = match ids {
        BeaconIds::ExecutionNumber => block.header.number.to_string(),
        BeaconIds::Slot(clock) => match clock.slot_of(block.header.timestamp) {
            Some(slot) => slot.to_string(),
            None => beacon_root_of(l1, block.header.number)?,
        },
        BeaconIds::BlockRoot => beacon_root_of(l1, block.header.number)?,
    };
    let blobs = l1.beacon_blobs(&id)?;
    let mut out = Vec::with_capacity(wanted.len());
    for BatcherTx {
        tx,
        first_blob: first,
        hashes,
        input,
    } in wanted
    {
        let Some(mine) = blobs.get(first..first + hashes.len()) else {
            return Err(L1Error::Malformed {
                call: format!("/eth/v1/beacon/blobs/{id}"),
                detail: format!(
                    "{} blobs for block {}, which has at least {}",
                    blobs.len(),
                    block.header.number,
                    first + hashes.len()
                ),
            });
        };
        out.push(BatcherBlobs {
            tx,
            blobs: mine.to_vec(),
            hashes,
            input,
        });
    }
    Ok((out, ignored))
}

/// The batcher's blob txs in `block`, and the inbox txs from anyone else.
pub fn select_batcher_txs(
    config: &DeriveConfig,
    block: &L1Block,
) -> (Vec<BatcherTx>, Vec<Ignored>) {
    let mut ignored = Vec::new();
    let mut wanted = Vec::new();
    let mut blob_index = 0;
    for tx in &block.transactions {
        let count = tx.blob_versioned_hashes.len();
        if tx.to == Some(config.inbox) && count > 0 {
            if tx.from == config.batcher {
                wanted.push(BatcherTx {
                    tx: tx.hash,
                    first_blob: blob_index,
                    hashes: tx.blob_versioned_hashes.clone(),
                    input: tx.input.clone(),
                });
            } else {
                ignored.push(Ignored::WrongSender {
                    tx: tx.hash,
                    from: tx.from,
                });
            }
        }
        blob_index += count;
    }
    (wanted, ignored)
}

/// The beacon block root of execution block `number`: the next block's
/// `parentBeaconBlockRoot` (EIP-4788). Needs that next block.
fn beacon_root_of(l1: &L1Client, number: u64) -> Result<String, L1Error> {
    let next = l1.header(BlockTag::Number(number + 1))?;
    let root = next.and_then(|h| h.parent_beacon_block_root);
    root.map(|r| r.to_string()).ok_or_else(|| L1Error::Malformed {
        call: "eth_getBlockByNumber".into(),
        detail: format!(
            "block {} has no parentBeaconBlockRoot (or is not there yet): cannot name block {number}'s beacon block",
            number + 1
        ),
    })
}

#[cfg(test)]
#[path = "derive_tests.rs"]
mod tests;
