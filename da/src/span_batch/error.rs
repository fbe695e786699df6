//! What can be wrong with a span batch, and where. Decoding offsets count
//! bytes from the first byte of `prefix` (just after the batch type byte).

/// A span batch that cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpanBatchError {
    /// The input ends inside a field.
    #[error("span batch {field} at byte {offset}: needs {needed} bytes, {left} left")]
    Truncated {
        /// The field being read, named as in the OP spec.
        field: &'static str,
        /// Where the field starts.
        offset: usize,
        /// Bytes the field needs (at least).
        needed: usize,
        /// Bytes left in the input.
        left: usize,
    },
    /// A uvarint runs past 64 bits.
    #[error("span batch {field} at byte {offset}: uvarint overflows 64 bits")]
    VarintOverflow {
        /// The field being read.
        field: &'static str,
        /// Where the uvarint starts.
        offset: usize,
    },
    /// A uvarint with trailing zero groups (fulmen only reads shortest forms).
    #[error("span batch {field} at byte {offset}: uvarint is not in its shortest form")]
    VarintNotMinimal {
        /// The field being read.
        field: &'static str,
        /// Where the uvarint starts.
        offset: usize,
    },
    /// A count over `SPAN_BATCH_ELEMENTS_MAX` (OP's `MAX_SPAN_BATCH_ELEMENT_COUNT`).
    #[error(
        "span batch {field} at byte {offset}: {count} elements, over SPAN_BATCH_ELEMENTS_MAX ({max}, OP's MAX_SPAN_BATCH_ELEMENT_COUNT)"
    )]
    TooManyElements {
        /// The count's field.
        field: &'static str,
        /// Where the count (or the count that tips the sum over) starts.
        offset: usize,
        /// The count.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// Blocks or txs beyond `SPAN_BATCH_ELEMENTS_MAX` handed to the encoder.
    #[error(
        "span batch to encode has {count} {what}, over SPAN_BATCH_ELEMENTS_MAX ({max}, OP's MAX_SPAN_BATCH_ELEMENT_COUNT)"
    )]
    SpanTooLong {
        /// "blocks" or "txs".
        what: &'static str,
        /// How many.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// A bitlist with a bit set in its zero padding.
    #[error("span batch {field} at byte {offset}: a bit is set past the list's {bits} bits")]
    BitsPastEnd {
        /// The bitlist.
        field: &'static str,
        /// Where the bitlist starts.
        offset: usize,
        /// Its length in bits.
        bits: usize,
    },
    /// No blocks: OP's span batches hold at least one.
    #[error("span batch has no blocks (the OP spec forbids empty span batches)")]
    Empty,
    /// The L2 block time is zero.
    #[error("span batch chain parameters: block_time_secs is 0")]
    ZeroBlockTime,
    /// A tx type a span batch cannot carry (EIP-4844 blob txs, deposits, unknown types).
    #[error(
        "span batch tx {index}: type {ty:#04x} cannot be carried in a span batch (it carries legacy, 0x01 EIP-2930, 0x02 EIP-1559 and 0x04 EIP-7702)"
    )]
    UnsupportedTxType {
        /// The tx's index in the span batch.
        index: usize,
        /// Its EIP-2718 type.
        ty: u8,
    },
    /// A `tx_datas` element that is not the RLP OP specifies for its type.
    #[error("span batch tx {index}, tx_datas at byte {offset}: {source}")]
    TxData {
        /// The tx's index in the span batch.
        index: usize,
        /// Where its `tx_datas` element starts.
        offset: usize,
        /// What the RLP decoder found.
        source: alloy_rlp::Error,
    },
    /// A `tx_datas` element over `SPAN_TX_DATA_BYTES_MAX`.
    #[error(
        "span batch tx {index}, tx_datas at byte {offset}: {len} bytes, over SPAN_TX_DATA_BYTES_MAX ({max})"
    )]
    TxDataTooLarge {
        /// The tx's index in the span batch.
        index: usize,
        /// Where its `tx_datas` element starts.
        offset: usize,
        /// Its length (type byte, RLP header and payload).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A tx signed for another chain: span batches do not carry chain ids.
    #[error("span batch tx {index}: chain id {found}, but the span batch is for chain {expected}")]
    ChainIdMismatch {
        /// The tx's index in the span batch.
        index: usize,
        /// The tx's chain id.
        found: u64,
        /// The span batch's chain id.
        expected: u64,
    },
    /// An EIP-7702 tx marked as a contract creation: set-code txs always have a `to`.
    #[error(
        "span batch tx {index}: EIP-7702 tx has its contract_creation bit set, but a set-code tx always has a `to`"
    )]
    SetCodeCreate {
        /// The tx's index in the span batch.
        index: usize,
    },
    /// Block timestamps that are not `first + block_time_secs * index`.
    #[error(
        "span batch block {index}: timestamp {found}, but a span needs {expected} (the first block's + block_time_secs * index)"
    )]
    IrregularTimestamp {
        /// The block's index in the span.
        index: usize,
        /// What the span's first timestamp and the block time give.
        expected: u64,
        /// The block's timestamp.
        found: u64,
    },
    /// The first block is older than L2 genesis.
    #[error(
        "span batch block 0: timestamp {timestamp} is before the L2 genesis timestamp {genesis}"
    )]
    BeforeGenesis {
        /// The first block's timestamp.
        timestamp: u64,
        /// The L2 genesis timestamp.
        genesis: u64,
    },
    /// An L1 origin that moves back or by more than one within a span.
    #[error(
        "span batch block {index}: L1 origin {found} after {previous}; within a span it may only stay or advance by one"
    )]
    OriginStep {
        /// The block's index in the span.
        index: usize,
        /// The previous block's L1 origin number.
        previous: u64,
        /// This block's L1 origin number.
        found: u64,
    },
    /// `origin_bits` counts more origin changes than `l1_origin_num` allows.
    #[error(
        "span batch: l1_origin_num {l1_origin_num} is below the {changes} origin changes origin_bits counts"
    )]
    OriginUnderflow {
        /// The last block's L1 origin number.
        l1_origin_num: u64,
        /// Origin changes after the first block.
        changes: u64,
    },
    /// A block timestamp past `u64::MAX`.
    #[error(
        "span batch block {index}: timestamp overflows u64 (genesis + rel_timestamp + block_time_secs * index)"
    )]
    TimestampOverflow {
        /// The block's index in the span.
        index: usize,
    },
    /// A span batch over `SPAN_BATCH_BYTES_MAX`.
    #[error(
        "span batch is {len} bytes, over SPAN_BATCH_BYTES_MAX ({max}, OP's MAX_RLP_BYTES_PER_CHANNEL)"
    )]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes after the last field (`protected_bits`).
    #[error("span batch: {count} bytes left over at byte {offset}, after protected_bits")]
    TrailingBytes {
        /// Where the left-over bytes start.
        offset: usize,
        /// How many.
        count: usize,
    },
    /// A channel batch whose type byte is not 1.
    #[error("channel batch: batch type {found:#04x}, expected 0x01 (span batch)")]
    WrongBatchType {
        /// The type byte found.
        found: u8,
    },
    /// A channel batch that is not an RLP byte string.
    #[error("channel batch: not an RLP byte string: {source}")]
    BatchRlp {
        /// What the RLP decoder found.
        source: alloy_rlp::Error,
    },
}
