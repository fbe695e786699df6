//! OP Stack span batches (batch type 1, from the Delta upgrade; EIP-7702 txs
//! from Isthmus), byte for byte as in the OP specs
//! (`specs/protocol/delta/span-batches.md`, `isthmus/derivation.md`) and
//! op-node (`op-node/rollup/derive/span_batch*.go`):
//!
//! ```text
//! span_batch = prefix ++ payload
//! prefix     = rel_timestamp ++ l1_origin_num ++ parent_check ++ l1_origin_check
//! payload    = block_count ++ origin_bits ++ block_tx_counts ++ txs
//! txs        = contract_creation_bits ++ y_parity_bits ++ tx_sigs ++ tx_tos
//!              ++ tx_datas ++ tx_nonces ++ tx_gases ++ protected_bits
//! ```
//!
//! In a channel, a batch is the RLP byte string `0x01 ++ span_batch`
//! ([`encode_channel_batch`], [`decode_channel_batch`]). The fields, bounds
//! and what fulmen adds are in `da/FORMAT.md`, section "Span batches".

mod error;
mod txs;
mod wire;

use alloy_consensus::TxEnvelope;
use alloy_eips::BlockNumHash;
use alloy_primitives::{B256, FixedBytes};
use alloy_rlp::Header;

pub use error::SpanBatchError;
pub use txs::{SPAN_TX_DATA_BYTES_MAX, TX_SIG_BYTES, TX_TO_BYTES};
use txs::{TxColumns, decode_txs};
use wire::{BitsWriter, Reader, put_uvarint};

/// The batch type byte of a span batch in a channel.
pub const SPAN_BATCH_TYPE: u8 = 1;

/// OP's `MAX_SPAN_BATCH_ELEMENT_COUNT`: the most blocks, and the most txs
/// (in one block and in all), a span batch may hold.
pub const SPAN_BATCH_ELEMENTS_MAX: u64 = 10_000_000;

/// The largest span batch, in bytes: OP's `MAX_RLP_BYTES_PER_CHANNEL` since
/// Fjord. The limit is the channel's, so no one batch can be larger.
pub const SPAN_BATCH_BYTES_MAX: usize = 100_000_000;

/// Bytes kept of the parent hash and of the last L1 origin hash.
pub const CHECK_BYTES: usize = 20;

/// What a span batch needs from the L2 chain's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanChain {
    /// The L2 genesis block's timestamp; `rel_timestamp` counts from it.
    pub genesis_timestamp: u64,
    /// Seconds between consecutive L2 blocks; block `i` of a span is at
    /// `first + block_time_secs * i`.
    pub block_time_secs: u64,
    /// The L2 chain id: typed txs and EIP-155 legacy txs are rebuilt with it.
    pub chain_id: u64,
}

/// One sealed L2 block as the batcher hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanBlockInput {
    /// The block's timestamp.
    pub timestamp: u64,
    /// Its L1 origin (number and hash).
    pub l1_origin: BlockNumHash,
    /// Its txs, as EIP-2718 envelopes, in block order.
    pub txs: Vec<TxEnvelope>,
}

/// The block before a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanParent {
    /// Its hash; the span keeps the first [`CHECK_BYTES`].
    pub hash: B256,
    /// Its L1 origin number; `origin_bits[0]` says whether the span's first
    /// block moved on from it.
    pub l1_origin_num: u64,
}

/// One L2 block as a span batch carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanBlock {
    /// The block's timestamp.
    pub timestamp: u64,
    /// Its L1 origin number.
    pub l1_origin_num: u64,
    /// Its txs, in block order.
    pub txs: Vec<TxEnvelope>,
}

/// A span of consecutive L2 blocks, holding exactly what the encoding
/// carries: `decode(encode(b)) == b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanBatch {
    /// The chain parameters the span is encoded and decoded with.
    pub chain: SpanChain,
    /// The first [`CHECK_BYTES`] of the first block's parent hash.
    pub parent_check: FixedBytes<CHECK_BYTES>,
    /// The first [`CHECK_BYTES`] of the last block's L1 origin hash.
    pub l1_origin_check: FixedBytes<CHECK_BYTES>,
    /// `origin_bits[0]`: the first block's L1 origin differs from its parent's.
    pub first_origin_changed: bool,
    /// The blocks, at least one.
    pub blocks: Vec<SpanBlock>,
}

impl SpanBatch {
    /// The span of `blocks`, which follow `parent`. The blocks must be
    /// regular ([`span_len`] of them is all of them): timestamps
    /// `block_time_secs` apart, and L1 origins that stay or advance by one.
    pub fn from_blocks(
        blocks: Vec<SpanBlockInput>,
        parent: SpanParent,
        chain: SpanChain,
    ) -> Result<Self, SpanBatchError> {
        let Some(last) = blocks.last() else {
            return Err(SpanBatchError::Empty);
        };
        let l1_origin_check = FixedBytes::from_slice(&last.l1_origin.hash[..CHECK_BYTES]);
        let first_origin_changed = blocks[0].l1_origin.number != parent.l1_origin_num;
        let blocks = blocks
            .into_iter()
            .map(|b| SpanBlock {
                timestamp: b.timestamp,
                l1_origin_num: b.l1_origin.number,
                txs: b.txs,
            })
            .collect();
        let batch = Self {
            chain,
            parent_check: FixedBytes::from_slice(&parent.hash[..CHECK_BYTES]),
            l1_origin_check,
            first_origin_changed,
            blocks,
        };
        check_shape(&batch)?;
        Ok(batch)
    }

    /// Txs in all blocks.
    pub fn tx_count(&self) -> usize {
        self.blocks.iter().map(|b| b.txs.len()).sum()
    }
}

/// How many of `blocks`, from the first, fit in one span batch: timestamps
/// `block_time_secs` apart, L1 origins that stay or advance by one, and at
/// most [`SPAN_BATCH_ELEMENTS_MAX`] blocks and txs. The batcher starts a
/// new span batch where this stops.
pub fn span_len(blocks: &[SpanBlockInput], block_time_secs: u64) -> usize {
    let Some(first) = blocks.first() else {
        return 0;
    };
    let mut txs = first.txs.len() as u64;
    if txs > SPAN_BATCH_ELEMENTS_MAX {
        return 0;
    }
    for (i, pair) in blocks.windows(2).enumerate() {
        let (prev, next) = (&pair[0], &pair[1]);
        txs += next.txs.len() as u64;
        let regular = prev.timestamp.checked_add(block_time_secs) == Some(next.timestamp);
        let step = next.l1_origin.number.checked_sub(prev.l1_origin.number);
        if !regular || !matches!(step, Some(0 | 1)) || txs > SPAN_BATCH_ELEMENTS_MAX {
            return i + 1;
        }
        if i + 2 == SPAN_BATCH_ELEMENTS_MAX as usize {
            return i + 2;
        }
    }
    blocks.len()
}

/// Checks what the encoding cannot carry: no blocks, too many, a zero block
/// time, a first block before genesis, irregular timestamps or L1 origins.
fn check_shape(batch: &SpanBatch) -> Result<(), SpanBatchError> {
    let chain = batch.chain;
    let Some(first) = batch.blocks.first() else {
        return Err(SpanBatchError::Empty);
    };
    if chain.block_time_secs == 0 {
        return Err(SpanBatchError::ZeroBlockTime);
    }
    if first.timestamp < chain.genesis_timestamp {
        return Err(SpanBatchError::BeforeGenesis {
            timestamp: first.timestamp,
            genesis: chain.genesis_timestamp,
        });
    }
    let max = SPAN_BATCH_ELEMENTS_MAX;
    let count = batch.blocks.len() as u64;
    if count > max {
        return Err(SpanBatchError::SpanTooLong {
            what: "blocks",
            count,
            max,
        });
    }
    let count = batch.tx_count() as u64;
    if count > max {
        return Err(SpanBatchError::SpanTooLong {
            what: "txs",
            count,
            max,
        });
    }
    for (index, pair) in batch.blocks.windows(2).enumerate() {
        let index = index + 1;
        let (prev, next) = (&pair[0], &pair[1]);
        let expected = chain
            .block_time_secs
            .checked_mul(index as u64)
            .and_then(|d| first.timestamp.checked_add(d));
        if expected != Some(next.timestamp) {
            let expected = expected.unwrap_or(u64::MAX);
            return Err(SpanBatchError::IrregularTimestamp {
                index,
                expected,
                found: next.timestamp,
            });
        }
        if !matches!(
            next.l1_origin_num.checked_sub(prev.l1_origin_num),
            Some(0 | 1)
        ) {
            return Err(SpanBatchError::OriginStep {
                index,
                previous: prev.l1_origin_num,
                found: next.l1_origin_num,
            });
        }
    }
    Ok(())
}

/// Encodes `batch` as `prefix ++ payload` (no batch type byte), or says
/// which block or tx the format cannot carry.
pub fn encode(batch: &SpanBatch) -> Result<Vec<u8>, SpanBatchError> {
    encode_after(batch, &[])
}

/// Encodes `batch` as `0x01 ++ prefix ++ payload`: the batch as a
/// channel's RLP byte string holds it (`batch_type ++ batch_data`).
pub fn encode_typed(batch: &SpanBatch) -> Result<Vec<u8>, SpanBatchError> {
    encode_after(batch, &[SPAN_BATCH_TYPE])
}

/// `lead` (the batch type byte, or nothing), then `prefix ++ payload`.
fn encode_after(batch: &SpanBatch, lead: &[u8]) -> Result<Vec<u8>, SpanBatchError> {
    check_shape(batch)?;
    let mut columns = TxColumns::new(batch.chain.chain_id, batch.tx_count());
    for tx in batch.blocks.iter().flat_map(|b| &b.txs) {
        columns.push(tx)?;
    }
    let first = &batch.blocks[0];
    let last = &batch.blocks[batch.blocks.len() - 1];
    // Two uvarints, two checks, block_count, origin_bits, tx counts: each
    // block takes at most 1/8 + 4 bytes (a tx count up to 10^7).
    let mut out =
        Vec::with_capacity(lead.len() + 62 + 5 * batch.blocks.len() + columns.encoded_len());
    out.extend_from_slice(lead);
    put_uvarint(&mut out, first.timestamp - batch.chain.genesis_timestamp);
    put_uvarint(&mut out, last.l1_origin_num);
    out.extend_from_slice(batch.parent_check.as_slice());
    out.extend_from_slice(batch.l1_origin_check.as_slice());
    put_uvarint(&mut out, batch.blocks.len() as u64);
    let mut origin_bits = BitsWriter::with_capacity(batch.blocks.len());
    origin_bits.push(batch.first_origin_changed);
    for pair in batch.blocks.windows(2) {
        origin_bits.push(pair[1].l1_origin_num != pair[0].l1_origin_num);
    }
    origin_bits.write(&mut out);
    for block in &batch.blocks {
        put_uvarint(&mut out, block.txs.len() as u64);
    }
    columns.write(&mut out);
    let len = out.len() - lead.len();
    if len > SPAN_BATCH_BYTES_MAX {
        return Err(SpanBatchError::TooLarge {
            len,
            max: SPAN_BATCH_BYTES_MAX,
        });
    }
    Ok(out)
}

/// Decodes `0x01 ++ prefix ++ payload`, what a channel's RLP byte string
/// holds, and rebuilds every tx for `chain`.
pub fn decode_typed(bytes: &[u8], chain: &SpanChain) -> Result<SpanBatch, SpanBatchError> {
    let Some((&ty, span)) = bytes.split_first() else {
        return Err(SpanBatchError::Truncated {
            field: "batch_type",
            offset: 0,
            needed: 1,
            left: 0,
        });
    };
    if ty != SPAN_BATCH_TYPE {
        return Err(SpanBatchError::WrongBatchType { found: ty });
    }
    decode(span, chain)
}

/// Decodes `prefix ++ payload` (no batch type byte) and rebuilds every tx
/// for `chain`. Every byte must be used.
pub fn decode(bytes: &[u8], chain: &SpanChain) -> Result<SpanBatch, SpanBatchError> {
    if bytes.len() > SPAN_BATCH_BYTES_MAX {
        return Err(SpanBatchError::TooLarge {
            len: bytes.len(),
            max: SPAN_BATCH_BYTES_MAX,
        });
    }
    if chain.block_time_secs == 0 {
        return Err(SpanBatchError::ZeroBlockTime);
    }
    let mut r = Reader::new(bytes);
    let rel_timestamp = r.uvarint("rel_timestamp")?;
    let l1_origin_num = r.uvarint("l1_origin_num")?;
    let parent_check = FixedBytes::from(r.array::<CHECK_BYTES>("parent_check")?);
    let l1_origin_check = FixedBytes::from(r.array::<CHECK_BYTES>("l1_origin_check")?);
    let block_count = read_count(&mut r, "block_count")?;
    if block_count == 0 {
        return Err(SpanBatchError::Empty);
    }
    let origin_bits = r.bits(block_count, "origin_bits")?;
    let tx_counts = read_tx_counts(&mut r, block_count)?;
    let total = tx_counts.iter().sum();
    let mut txs = decode_txs(&mut r, total, chain.chain_id)?.into_iter();
    if r.left() > 0 {
        return Err(SpanBatchError::TrailingBytes {
            offset: r.pos(),
            count: r.left(),
        });
    }
    let origins = origin_numbers(l1_origin_num, block_count, |i| origin_bits.get(i))?;
    let mut blocks = Vec::with_capacity(block_count);
    for (index, (&count, l1_origin_num)) in tx_counts.iter().zip(origins).enumerate() {
        let timestamp = chain
            .block_time_secs
            .checked_mul(index as u64)
            .and_then(|d| d.checked_add(rel_timestamp))
            .and_then(|d| d.checked_add(chain.genesis_timestamp))
            .ok_or(SpanBatchError::TimestampOverflow { index })?;
        blocks.push(SpanBlock {
            timestamp,
            l1_origin_num,
            txs: txs.by_ref().take(count).collect(),
        });
    }
    let first_origin_changed = origin_bits.get(0);
    Ok(SpanBatch {
        chain: *chain,
        parent_check,
        l1_origin_check,
        first_origin_changed,
        blocks,
    })
}

/// Reads a count of at most [`SPAN_BATCH_ELEMENTS_MAX`].
fn read_count(r: &mut Reader<'_>, field: &'static str) -> Result<usize, SpanBatchError> {
    let offset = r.pos();
    let count = r.uvarint(field)?;
    if count > SPAN_BATCH_ELEMENTS_MAX {
        return Err(SpanBatchError::TooManyElements {
            field,
            offset,
            count,
            max: SPAN_BATCH_ELEMENTS_MAX,
        });
    }
    Ok(count as usize)
}

/// Reads `block_tx_counts`; their sum is at most
/// [`SPAN_BATCH_ELEMENTS_MAX`] too.
fn read_tx_counts(r: &mut Reader<'_>, blocks: usize) -> Result<Vec<usize>, SpanBatchError> {
    // Each count takes a byte at least: never reserve past the input.
    let mut counts = Vec::with_capacity(blocks.min(r.left()));
    let mut total = 0u64;
    for _ in 0..blocks {
        let offset = r.pos();
        let count = read_count(r, "block_tx_counts")?;
        total += count as u64;
        if total > SPAN_BATCH_ELEMENTS_MAX {
            let max = SPAN_BATCH_ELEMENTS_MAX;
            return Err(SpanBatchError::TooManyElements {
                field: "block_tx_counts",
                offset,
                count: total,
                max,
            });
        }
        counts.push(count);
    }
    Ok(counts)
}

/// Each block's L1 origin number, walking back from the last one's
/// (`l1_origin_num`): block `i - 1`'s is one less when `origin_bit(i)`.
fn origin_numbers(
    l1_origin_num: u64,
    blocks: usize,
    origin_bit: impl Fn(usize) -> bool,
) -> Result<Vec<u64>, SpanBatchError> {
    let mut out = vec![0u64; blocks];
    let mut current = l1_origin_num;
    let mut changes = 0u64;
    for i in (0..blocks).rev() {
        out[i] = current;
        if i > 0 && origin_bit(i) {
            changes += 1;
            current = current
                .checked_sub(1)
                .ok_or(SpanBatchError::OriginUnderflow {
                    l1_origin_num,
                    changes,
                })?;
        }
    }
    Ok(out)
}

/// Encodes `batch` as it sits in a channel: the RLP byte string
/// `0x01 ++ prefix ++ payload`.
pub fn encode_channel_batch(batch: &SpanBatch) -> Result<Vec<u8>, SpanBatchError> {
    let typed = encode_typed(batch)?;
    let header = Header {
        list: false,
        payload_length: typed.len(),
    };
    let mut out = Vec::with_capacity(header.length() + typed.len());
    header.encode(&mut out);
    out.extend_from_slice(&typed);
    Ok(out)
}

/// Decodes the channel batch at the front of `buf` (an RLP byte string
/// holding `0x01 ++ span_batch`) and moves `buf` past it.
pub fn decode_channel_batch(
    buf: &mut &[u8],
    chain: &SpanChain,
) -> Result<SpanBatch, SpanBatchError> {
    let mut rest = *buf;
    let header = Header::decode(&mut rest).map_err(|source| SpanBatchError::BatchRlp { source })?;
    if header.list {
        return Err(SpanBatchError::BatchRlp {
            source: alloy_rlp::Error::UnexpectedList,
        });
    }
    let (payload, after) = rest.split_at(header.payload_length);
    let batch = decode_typed(payload, chain)?;
    *buf = after;
    Ok(batch)
}

#[cfg(test)]
pub(crate) mod tests;
