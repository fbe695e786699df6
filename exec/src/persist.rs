//! Payloads of the log's mini-block and block-seal records (format version 1).
//!
//! All integers are little-endian and fixed width; byte strings and lists
//! carry a u32 length or count first. Decoding never trusts a count further
//! than the bytes that remain, so arbitrary input is an error, never a panic
//! or a huge allocation.
//!
//! Mini-block payload:
//!
//! | field | encoding |
//! |---|---|
//! | version | u8, 1 |
//! | block context | number u64, timestamp u64, base fee u64, gas limit u64, coinbase 20 bytes, prevrandao 32 bytes |
//! | mini-block number | u64 (global) |
//! | transactions | u32 count, then per transaction: sender 20 bytes; EIP-2718 bytes; status u8; gas used u64; created contract (u8 flag, 20 bytes); logs (u32 count; address 20 bytes, u8 topic count, topics 32 bytes each, data bytes); state diff |
//! | state diff | accounts (u32 count; address 20 bytes, u8 present, nonce u64, balance 32 bytes BE, code hash 32 bytes), slots (u32 count; address, slot 32 bytes BE, value 32 bytes BE), codes (u32 count; hash 32 bytes, code bytes) |
//!
//! Block-seal payload: version u8 1, block size u64, then the RLP header.
//! Everything else a receipt shows (cumulative gas, indexes, price) follows
//! from the order of the records and is rebuilt on replay.

use std::sync::Arc;

use alloy_consensus::{Header, TxEnvelope};
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
use alloy_primitives::{Address, B256, Bytes, Log, LogData, U256};
use alloy_rlp::{Decodable, Encodable};
use fulmen_storage::{AccountState, StateDiff};
use revm::bytecode::Bytecode;

use crate::block::ExecutedTx;
use crate::evm::BlockContext;

const VERSION: u8 = 1;

/// Why a payload does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The bytes end early.
    #[error("payload truncated at byte {0}")]
    Truncated(usize),
    /// Unknown payload version.
    #[error("unsupported payload version {0}")]
    Version(u8),
    /// Bytes left over after the payload.
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
    /// A field holds a value it cannot have.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// One logged transaction with its outcome.
#[derive(Debug, Clone)]
pub struct LoggedTx {
    /// Sender (recovered before the record was written).
    pub sender: Address,
    /// EIP-2718 bytes.
    pub envelope: TxEnvelope,
    /// Encoded length.
    pub encoded_len: usize,
    /// Status.
    pub success: bool,
    /// Gas used.
    pub gas_used: u64,
    /// Created contract.
    pub contract_address: Option<Address>,
    /// Logs.
    pub logs: Vec<Log>,
    /// Its state changes.
    pub diff: StateDiff,
}

/// A decoded mini-block record.
#[derive(Debug, Clone)]
pub struct MiniBlockRecord {
    /// Context of the block it belongs to.
    pub ctx: BlockContext,
    /// Global mini-block number.
    pub number: u64,
    /// Its transactions in order.
    pub txs: Vec<LoggedTx>,
}

/// A decoded block-seal record.
#[derive(Debug, Clone)]
pub struct SealRecord {
    /// The header.
    pub header: Header,
    /// Block size in bytes (as `eth_getBlockBy*` reports it).
    pub size: u64,
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: usize) {
        self.0.extend_from_slice(&(v as u32).to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn raw(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len());
        self.raw(v);
    }
    fn u256(&mut self, v: &U256) {
        self.raw(&v.to_be_bytes::<32>());
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PayloadError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(PayloadError::Truncated(self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, PayloadError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<usize, PayloadError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn u64(&mut self) -> Result<u64, PayloadError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn address(&mut self) -> Result<Address, PayloadError> {
        Ok(Address::from_slice(self.take(20)?))
    }
    fn b256(&mut self) -> Result<B256, PayloadError> {
        Ok(B256::from_slice(self.take(32)?))
    }
    fn u256(&mut self) -> Result<U256, PayloadError> {
        Ok(U256::from_be_slice(self.take(32)?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], PayloadError> {
        let len = self.u32()?;
        self.take(len)
    }
    /// A count of items at least `min_item` bytes each, checked against what remains.
    fn count(&mut self, min_item: usize) -> Result<usize, PayloadError> {
        let n = self.u32()?;
        if n.saturating_mul(min_item) > self.bytes.len() - self.at {
            return Err(PayloadError::Truncated(self.at));
        }
        Ok(n)
    }
    fn finish(&self) -> Result<(), PayloadError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            n => Err(PayloadError::Trailing(n)),
        }
    }
}

fn put_ctx(w: &mut Writer<'_>, ctx: &BlockContext) {
    w.u64(ctx.number);
    w.u64(ctx.timestamp);
    w.u64(ctx.base_fee);
    w.u64(ctx.gas_limit);
    w.raw(ctx.coinbase.as_slice());
    w.raw(ctx.prevrandao.as_slice());
}

fn get_ctx(r: &mut Reader<'_>) -> Result<BlockContext, PayloadError> {
    Ok(BlockContext {
        number: r.u64()?,
        timestamp: r.u64()?,
        base_fee: r.u64()?,
        gas_limit: r.u64()?,
        coinbase: r.address()?,
        prevrandao: r.b256()?,
    })
}

fn put_diff(w: &mut Writer<'_>, diff: &StateDiff) {
    w.u32(diff.accounts.len());
    for (address, account) in &diff.accounts {
        w.raw(address.as_slice());
        match account {
            Some(a) => {
                w.u8(1);
                w.u64(a.nonce);
                w.u256(&a.balance);
                w.raw(a.code_hash.as_slice());
            }
            None => w.u8(0),
        }
    }
    w.u32(diff.storage.len());
    for (address, slot, value) in &diff.storage {
        w.raw(address.as_slice());
        w.u256(slot);
        w.u256(value);
    }
    w.u32(diff.codes.len());
    for (hash, code) in &diff.codes {
        w.raw(hash.as_slice());
        w.bytes(code.original_byte_slice());
    }
}

fn get_diff(r: &mut Reader<'_>) -> Result<StateDiff, PayloadError> {
    let mut diff = StateDiff::default();
    for _ in 0..r.count(21)? {
        let address = r.address()?;
        let account = match r.u8()? {
            0 => None,
            1 => Some(AccountState {
                nonce: r.u64()?,
                balance: r.u256()?,
                code_hash: r.b256()?,
            }),
            _ => return Err(PayloadError::Invalid("account presence flag")),
        };
        diff.accounts.push((address, account));
    }
    for _ in 0..r.count(84)? {
        diff.storage.push((r.address()?, r.u256()?, r.u256()?));
    }
    for _ in 0..r.count(36)? {
        let hash = r.b256()?;
        let code = Bytecode::new_raw_checked(Bytes::copy_from_slice(r.bytes()?))
            .map_err(|_| PayloadError::Invalid("code"))?;
        diff.codes.push((hash, code));
    }
    Ok(diff)
}

/// Encodes a mini-block: its block's context, its number, and each
/// transaction with its outcome and state changes (`diffs[i]` belongs to
/// `txs[i]`).
pub fn encode_mini_block(
    ctx: &BlockContext,
    number: u64,
    txs: &[Arc<ExecutedTx>],
    diffs: &[StateDiff],
    out: &mut Vec<u8>,
) {
    debug_assert_eq!(txs.len(), diffs.len());
    let mut w = Writer(out);
    w.u8(VERSION);
    put_ctx(&mut w, ctx);
    w.u64(number);
    w.u32(txs.len());
    let mut raw = Vec::new();
    for (tx, diff) in txs.iter().zip(diffs) {
        w.raw(tx.tx.sender.as_slice());
        raw.clear();
        tx.tx.envelope.encode_2718(&mut raw);
        w.bytes(&raw);
        w.u8(u8::from(tx.success));
        w.u64(tx.gas_used);
        match tx.contract_address {
            Some(address) => {
                w.u8(1);
                w.raw(address.as_slice());
            }
            None => w.u8(0),
        }
        w.u32(tx.logs.len());
        for log in &tx.logs {
            w.raw(log.address.as_slice());
            w.u8(log.topics().len() as u8);
            for topic in log.topics() {
                w.raw(topic.as_slice());
            }
            w.bytes(&log.data.data);
        }
        put_diff(&mut w, diff);
    }
}

/// Decodes a mini-block payload.
pub fn decode_mini_block(bytes: &[u8]) -> Result<MiniBlockRecord, PayloadError> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u8()?;
    if version != VERSION {
        return Err(PayloadError::Version(version));
    }
    let ctx = get_ctx(&mut r)?;
    let number = r.u64()?;
    let count = r.count(20 + 4 + 1 + 8 + 1 + 4 + 12)?;
    let mut txs = Vec::with_capacity(count);
    for _ in 0..count {
        let sender = r.address()?;
        let raw = r.bytes()?;
        let envelope = TxEnvelope::decode_2718_exact(raw)
            .map_err(|_| PayloadError::Invalid("transaction encoding"))?;
        let success = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(PayloadError::Invalid("status")),
        };
        let gas_used = r.u64()?;
        let contract_address = match r.u8()? {
            0 => None,
            1 => Some(r.address()?),
            _ => return Err(PayloadError::Invalid("contract address flag")),
        };
        let log_count = r.count(20 + 1 + 4)?;
        let mut logs = Vec::with_capacity(log_count);
        for _ in 0..log_count {
            let address = r.address()?;
            let topic_count = r.u8()?;
            if topic_count > 4 {
                return Err(PayloadError::Invalid("topic count"));
            }
            let mut topics = Vec::with_capacity(topic_count as usize);
            for _ in 0..topic_count {
                topics.push(r.b256()?);
            }
            let data = Bytes::copy_from_slice(r.bytes()?);
            logs.push(Log {
                address,
                data: LogData::new_unchecked(topics, data),
            });
        }
        let diff = get_diff(&mut r)?;
        txs.push(LoggedTx {
            sender,
            envelope,
            encoded_len: raw.len(),
            success,
            gas_used,
            contract_address,
            logs,
            diff,
        });
    }
    r.finish()?;
    Ok(MiniBlockRecord { ctx, number, txs })
}

/// Encodes a block seal.
pub fn encode_seal(header: &Header, size: u64, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u8(VERSION);
    w.u64(size);
    header.encode(out);
}

/// Decodes a block-seal payload.
pub fn decode_seal(bytes: &[u8]) -> Result<SealRecord, PayloadError> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u8()?;
    if version != VERSION {
        return Err(PayloadError::Version(version));
    }
    let size = r.u64()?;
    let mut rest = &bytes[r.at..];
    let header = Header::decode(&mut rest).map_err(|_| PayloadError::Invalid("header RLP"))?;
    if !rest.is_empty() {
        return Err(PayloadError::Trailing(rest.len()));
    }
    Ok(SealRecord { header, size })
}
