//! Payloads of the log's mini-block records (format version 3; versions 1
//! and 2 are still read) and block-seal records (version 1).
//!
//! Decoding never trusts a count further than the bytes that remain, so
//! arbitrary input is an error, never a panic or a huge allocation.
//!
//! Mini-block payload, version 2 (varints are LEB128; an address is a
//! varint reference: 0 and the 20 bytes at its first mention in the record,
//! 1 + its index in order of first mention after; a minimal U256 is a u8
//! count of its big-endian bytes without leading zeros, then those bytes):
//!
//! | field | encoding |
//! |---|---|
//! | version | u8, 2 |
//! | block context | number, timestamp, base fee, gas limit as varints; coinbase 20 bytes; prevrandao 32 bytes |
//! | mini-block number | varint (global) |
//! | transactions | varint count, then per transaction: sender (address); EIP-2718 bytes (varint length first); flags u8 (1 success, 2 created a contract); gas used varint; created contract (address, when flagged); logs; state diff |
//! | logs | varint count; per log: address, u8 topic count, topics 32 bytes each, data (varint length first) |
//! | state diff | accounts (varint count; address, flags u8 (1 present, 2 code hash other than the empty one), then if present nonce varint, balance minimal U256, code hash 32 bytes if flagged), slots (varint count; address, slot and value minimal U256s), codes (varint count; hash 32 bytes, code with a varint length) |
//!
//! Version 3 is version 2 with the version byte 3, two more fields after
//! the mini-block number, and one more section after the transactions:
//!
//! | field | encoding |
//! |---|---|
//! | close time | varint, µs since the Unix epoch |
//! | parent | 32 bytes: the previous mini-block's hash ([`crate::mini_block::mini_block_hash`]) |
//! | net changes | [`NetChanges`]: unchanged accounts (varint count, addresses), changed code hashes (varint count, addresses), unchanged slots (varint count; address, slot minimal U256) |
//!
//! A version 2 record reads with close time 0, a zero parent and no net
//! changes (every account and slot written counts as changed).
//!
//! Version 1 (written before; integers little-endian and fixed width, byte
//! strings and lists with a u32 length or count): version u8 1; context
//! (number, timestamp, base fee, gas limit u64; coinbase; prevrandao);
//! mini-block number u64; transactions (sender 20 bytes; 2718 bytes; status
//! u8; gas used u64; contract u8 flag and 20 bytes; logs as in
//! [`put_logs`]; accounts with nonce u64, balance 32 bytes, code hash; slots
//! 84 bytes; codes).
//!
//! Checkpoint-marker payload, version 1: version u8 1, the block number u64
//! and hash (32 bytes) of the checkpoint it announces, then the DA-progress
//! records logged so far (varint count; each with a varint length), then
//! (optional: markers of older builds end before it) the hashes of the
//! blocks up to it, at most 256, the last its own (varint count; 32 bytes
//! each). The seq core logs it right after the seal of a block that gets a
//! checkpoint, before the checkpoint is written, so a checkpoint on disk has
//! its marker in the log (unless the marker was too large for a log record:
//! then it is not logged, and boot from that checkpoint reads the whole
//! log). Boot from that checkpoint reads the log from the segment where the
//! block's records start, takes the DA records from the marker and the log
//! after it (the DA records of older segments are not read), and the
//! BLOCKHASH window from the marker (so a pruned history store need not
//! hold the 255 blocks before the checkpoint).
//!
//! Block-seal payload: version u8 1, block size u64, then the RLP header.
//! Everything else a receipt shows (cumulative gas, indexes, price) follows
//! from the order of the records and is rebuilt on replay.

use std::sync::Arc;

use alloy_consensus::{Header, TxEnvelope};
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
use alloy_primitives::{Address, B256, Bytes, Log, LogData};
use alloy_rlp::{Decodable, Encodable};
use fulmen_storage::codec::{Reader, Writer};
use fulmen_storage::{AccountState, StateDiff};
use revm::bytecode::Bytecode;
use revm::primitives::KECCAK_EMPTY;

use crate::block::BlockContext;
use crate::block::ExecutedTx;
use crate::mini_block::{NetChanges, mini_block_hash};

/// Version of the seal payload, and of the first mini-block payload (still
/// read: datadirs written before version 2).
const VERSION: u8 = 1;
/// Version of the compact mini-block payload (still read).
const VERSION_COMPACT: u8 = 2;
/// Version of the mini-block payload written now.
const VERSION_CHAINED: u8 = 3;

pub use fulmen_storage::codec::PayloadError;

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
    /// When it closed, in µs since the Unix epoch (0 in older records).
    pub timestamp_us: u64,
    /// The previous mini-block's hash (zero in older records).
    pub parent: B256,
    /// What its diffs wrote without changing.
    pub net: NetChanges,
    /// Its transactions in order.
    pub txs: Vec<LoggedTx>,
}

impl MiniBlockRecord {
    /// Its [`mini_block_hash`].
    pub fn hash(&self) -> B256 {
        mini_block_hash(
            &self.parent,
            self.number,
            self.ctx.number,
            self.timestamp_us,
            self.txs.iter().map(|tx| tx.envelope.tx_hash()),
        )
    }
}

/// What a mini-block record holds besides its block's context and its
/// transactions.
#[derive(Debug, Clone, Copy)]
pub struct MiniBlockMeta<'a> {
    /// Global mini-block number.
    pub number: u64,
    /// Close time, µs since the Unix epoch.
    pub timestamp_us: u64,
    /// The previous mini-block's hash.
    pub parent: B256,
    /// What its diffs wrote without changing.
    pub net: &'a NetChanges,
}

/// A decoded block-seal record.
#[derive(Debug, Clone)]
pub struct SealRecord {
    /// The header.
    pub header: Header,
    /// Block size in bytes (as `eth_getBlockBy*` reports it).
    pub size: u64,
}

#[cfg(test)]
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

#[cfg(test)]
fn put_diff(w: &mut Writer<'_>, diff: &StateDiff) {
    w.u32(diff.accounts.len());
    for (address, account) in &diff.accounts {
        w.raw(address.as_slice());
        match account {
            Some(a) => {
                w.u8(1);
                w.account(a);
            }
            None => w.u8(0),
        }
    }
    w.u32(diff.storage.len());
    for (address, slot, value) in &diff.storage {
        w.slot(address, slot, value);
    }
    w.u32(diff.codes.len());
    for (hash, code) in &diff.codes {
        w.code(hash, code);
    }
}

fn get_diff(r: &mut Reader<'_>) -> Result<StateDiff, PayloadError> {
    let mut diff = StateDiff::default();
    for _ in 0..r.count(21)? {
        let address = r.address()?;
        let account = match r.u8()? {
            0 => None,
            1 => Some(r.account()?),
            _ => return Err(PayloadError::Invalid("account presence flag")),
        };
        diff.accounts.push((address, account));
    }
    for _ in 0..r.count(84)? {
        diff.storage.push(r.slot()?);
    }
    for _ in 0..r.count(36)? {
        diff.codes.push(r.code()?);
    }
    Ok(diff)
}

/// Most bytes [`encode_mini_block`] writes for one transaction entry: its
/// sender, 2718 bytes, outcome, logs and state changes, every address
/// written in full and every number at its longest. The sequencer bounds
/// what one transaction and one mini-block put in the log with it, before
/// the record exists (a unit test checks it against the encoder).
pub fn tx_entry_bytes(
    tx_2718_bytes: usize,
    logs: &[alloy_primitives::Log],
    contract_created: bool,
    diff: &StateDiff,
) -> usize {
    // A varint, an address reference, a minimal U256 at their longest.
    const VARINT: usize = 10;
    const ADDRESS: usize = 1 + 20;
    const U256_MIN: usize = 1 + 32;
    // The net changes may name each account written twice (unchanged, or
    // its code changed) and each slot written once more.
    const ACCOUNT_BYTES: usize = VARINT + U256_MIN + 32 + 2 * ADDRESS;
    const SLOT_BYTES: usize = ADDRESS + U256_MIN + U256_MIN + ADDRESS + U256_MIN;
    let logs_bytes: usize = logs
        .iter()
        .map(|log| ADDRESS + 1 + 32 * log.topics().len() + VARINT + log.data.data.len())
        .sum();
    let accounts_bytes: usize = diff
        .accounts
        .iter()
        .map(|(_, account)| {
            ADDRESS
                + 1
                + 2 * ADDRESS
                + if account.is_some() {
                    ACCOUNT_BYTES - 2 * ADDRESS
                } else {
                    0
                }
        })
        .sum();
    let codes_bytes: usize = diff
        .codes
        .iter()
        .map(|(_, code)| 32 + VARINT + code.original_byte_slice().len())
        .sum();
    ADDRESS
        + VARINT
        + tx_2718_bytes
        + 1
        + VARINT
        + if contract_created { ADDRESS } else { 0 }
        + VARINT
        + logs_bytes
        + VARINT
        + accounts_bytes
        + VARINT
        + SLOT_BYTES * diff.storage.len()
        + VARINT
        + codes_bytes
}

/// Most bytes [`encode_mini_block`] writes before the first transaction
/// entry.
pub const MINI_BLOCK_HEADER_BYTES: usize = 1 + 4 * 10 + 20 + 32 + 10 + 10 + 32 + 10;

/// Addresses a record has written so far: a later mention is its index.
#[derive(Default)]
struct AddressRefs(alloy_primitives::map::AddressMap<u64>);

impl AddressRefs {
    /// 0 and the 20 bytes the first time; 1 + its index after.
    fn put(&mut self, w: &mut Writer<'_>, address: &Address) {
        if let Some(index) = self.0.get(address) {
            w.varint(index + 1);
            return;
        }
        let index = self.0.len() as u64;
        self.0.insert(*address, index);
        w.varint(0);
        w.raw(address.as_slice());
    }
}

/// Addresses a record has read so far.
#[derive(Default)]
struct AddressTable(Vec<Address>);

impl AddressTable {
    fn get(&mut self, r: &mut Reader<'_>) -> Result<Address, PayloadError> {
        match r.varint()? {
            0 => {
                let address = r.address()?;
                self.0.push(address);
                Ok(address)
            }
            n => usize::try_from(n - 1)
                .ok()
                .and_then(|i| self.0.get(i).copied())
                .ok_or(PayloadError::Invalid("address reference")),
        }
    }
}

/// An account's flags: present, and a code hash other than the empty one.
const ACCOUNT_PRESENT: u8 = 1;
const ACCOUNT_CODE: u8 = 2;
/// A transaction's flags: success, and a created contract.
const TX_SUCCESS: u8 = 1;
const TX_CREATED: u8 = 2;

fn put_diff_v2(w: &mut Writer<'_>, refs: &mut AddressRefs, diff: &StateDiff) {
    w.varint(diff.accounts.len() as u64);
    for (address, account) in &diff.accounts {
        refs.put(w, address);
        let Some(a) = account else {
            w.u8(0);
            continue;
        };
        let has_code = a.code_hash != KECCAK_EMPTY;
        w.u8(ACCOUNT_PRESENT | if has_code { ACCOUNT_CODE } else { 0 });
        w.varint(a.nonce);
        w.u256_min(&a.balance);
        if has_code {
            w.raw(a.code_hash.as_slice());
        }
    }
    w.varint(diff.storage.len() as u64);
    for (address, slot, value) in &diff.storage {
        refs.put(w, address);
        w.u256_min(slot);
        w.u256_min(value);
    }
    w.varint(diff.codes.len() as u64);
    for (hash, code) in &diff.codes {
        w.raw(hash.as_slice());
        w.var_bytes(code.original_byte_slice());
    }
}

fn get_diff_v2(r: &mut Reader<'_>, table: &mut AddressTable) -> Result<StateDiff, PayloadError> {
    let mut diff = StateDiff::default();
    for _ in 0..r.var_count(2)? {
        let address = table.get(r)?;
        let account = match r.u8()? {
            0 => None,
            flags
                if flags & !(ACCOUNT_PRESENT | ACCOUNT_CODE) == 0
                    && flags & ACCOUNT_PRESENT != 0 =>
            {
                let nonce = r.varint()?;
                let balance = r.u256_min()?;
                let code_hash = if flags & ACCOUNT_CODE != 0 {
                    r.b256()?
                } else {
                    KECCAK_EMPTY
                };
                Some(AccountState {
                    nonce,
                    balance,
                    code_hash,
                })
            }
            _ => return Err(PayloadError::Invalid("account flags")),
        };
        diff.accounts.push((address, account));
    }
    for _ in 0..r.var_count(3)? {
        diff.storage
            .push((table.get(r)?, r.u256_min()?, r.u256_min()?));
    }
    for _ in 0..r.var_count(33)? {
        let hash = r.b256()?;
        let code = Bytecode::new_raw_checked(Bytes::copy_from_slice(r.var_bytes()?))
            .map_err(|_| PayloadError::Invalid("code"))?;
        diff.codes.push((hash, code));
    }
    Ok(diff)
}

fn put_logs_v2(w: &mut Writer<'_>, refs: &mut AddressRefs, logs: &[Log]) {
    w.varint(logs.len() as u64);
    for log in logs {
        refs.put(w, &log.address);
        w.u8(log.topics().len() as u8);
        for topic in log.topics() {
            w.raw(topic.as_slice());
        }
        w.var_bytes(&log.data.data);
    }
}

fn get_logs_v2(r: &mut Reader<'_>, table: &mut AddressTable) -> Result<Vec<Log>, PayloadError> {
    let count = r.var_count(3)?;
    let mut logs = Vec::with_capacity(count);
    for _ in 0..count {
        let address = table.get(r)?;
        logs.push(get_log_after_address(r, address, Reader::var_bytes)?);
    }
    Ok(logs)
}

/// Encodes a mini-block (format version 3): its block's context, `meta`,
/// each transaction with its outcome and state changes (`diffs[i]` belongs
/// to `txs[i]`), and the net changes.
pub fn encode_mini_block(
    ctx: &BlockContext,
    meta: MiniBlockMeta<'_>,
    txs: &[Arc<ExecutedTx>],
    diffs: &[StateDiff],
    out: &mut Vec<u8>,
) {
    debug_assert_eq!(txs.len(), diffs.len());
    let mut w = Writer(out);
    w.u8(VERSION_CHAINED);
    w.varint(ctx.number);
    w.varint(ctx.timestamp);
    w.varint(ctx.base_fee);
    w.varint(ctx.gas_limit);
    w.raw(ctx.coinbase.as_slice());
    w.raw(ctx.prevrandao.as_slice());
    w.varint(meta.number);
    w.varint(meta.timestamp_us);
    w.raw(meta.parent.as_slice());
    w.varint(txs.len() as u64);
    let mut refs = AddressRefs::default();
    let mut raw = Vec::new();
    for (tx, diff) in txs.iter().zip(diffs) {
        refs.put(&mut w, &tx.tx.sender);
        raw.clear();
        tx.tx.envelope.encode_2718(&mut raw);
        w.var_bytes(&raw);
        let created = if tx.contract_address.is_some() {
            TX_CREATED
        } else {
            0
        };
        w.u8((u8::from(tx.success) * TX_SUCCESS) | created);
        w.varint(tx.gas_used);
        if let Some(address) = &tx.contract_address {
            refs.put(&mut w, address);
        }
        put_logs_v2(&mut w, &mut refs, &tx.logs);
        put_diff_v2(&mut w, &mut refs, diff);
    }
    put_net(&mut w, &mut refs, meta.net);
}

fn put_net(w: &mut Writer<'_>, refs: &mut AddressRefs, net: &NetChanges) {
    for list in [&net.unchanged_accounts, &net.code_changed] {
        w.varint(list.len() as u64);
        for address in list {
            refs.put(w, address);
        }
    }
    w.varint(net.unchanged_slots.len() as u64);
    for (address, slot) in &net.unchanged_slots {
        refs.put(w, address);
        w.u256_min(slot);
    }
}

fn get_net(r: &mut Reader<'_>, table: &mut AddressTable) -> Result<NetChanges, PayloadError> {
    let mut net = NetChanges::default();
    for list in [&mut net.unchanged_accounts, &mut net.code_changed] {
        for _ in 0..r.var_count(1)? {
            list.push(table.get(r)?);
        }
    }
    for _ in 0..r.var_count(2)? {
        net.unchanged_slots.push((table.get(r)?, r.u256_min()?));
    }
    Ok(net)
}

/// The block context and mini-block number at the front of a version 2 or
/// 3 mini-block payload (after its version).
fn get_head_v2(r: &mut Reader<'_>) -> Result<(BlockContext, u64), PayloadError> {
    let ctx = BlockContext {
        number: r.varint()?,
        timestamp: r.varint()?,
        base_fee: r.varint()?,
        gas_limit: r.varint()?,
        coinbase: r.address()?,
        prevrandao: r.b256()?,
    };
    Ok((ctx, r.varint()?))
}

/// The block number and mini-block number of a mini-block payload, read
/// from its front without decoding its transactions (boot skips the
/// records of blocks a checkpoint holds).
pub fn peek_mini_block(bytes: &[u8]) -> Result<(u64, u64), PayloadError> {
    let mut r = Reader::new(bytes);
    let (ctx, number) = match r.u8()? {
        VERSION => (get_ctx(&mut r)?, r.u64()?),
        VERSION_COMPACT | VERSION_CHAINED => get_head_v2(&mut r)?,
        version => return Err(PayloadError::Version(version)),
    };
    Ok((ctx.number, number))
}

/// Decodes the body of a version 2 or 3 (`chained`) mini-block payload
/// (after its version).
fn decode_mini_block_v2(
    r: &mut Reader<'_>,
    chained: bool,
) -> Result<MiniBlockRecord, PayloadError> {
    let (ctx, number) = get_head_v2(r)?;
    let (timestamp_us, parent) = if chained {
        (r.varint()?, r.b256()?)
    } else {
        (0, B256::ZERO)
    };
    let count = r.var_count(1 + 1 + 1 + 1 + 3 + 3)?;
    let mut table = AddressTable::default();
    let mut txs = Vec::with_capacity(count);
    for _ in 0..count {
        let sender = table.get(r)?;
        let raw = r.var_bytes()?;
        let envelope = TxEnvelope::decode_2718_exact(raw)
            .map_err(|_| PayloadError::Invalid("transaction encoding"))?;
        let flags = r.u8()?;
        if flags & !(TX_SUCCESS | TX_CREATED) != 0 {
            return Err(PayloadError::Invalid("transaction flags"));
        }
        let gas_used = r.varint()?;
        let contract_address = if flags & TX_CREATED != 0 {
            Some(table.get(r)?)
        } else {
            None
        };
        let logs = get_logs_v2(r, &mut table)?;
        let diff = get_diff_v2(r, &mut table)?;
        txs.push(LoggedTx {
            sender,
            envelope,
            encoded_len: raw.len(),
            success: flags & TX_SUCCESS != 0,
            gas_used,
            contract_address,
            logs,
            diff,
        });
    }
    let net = if chained {
        get_net(r, &mut table)?
    } else {
        NetChanges::default()
    };
    Ok(MiniBlockRecord {
        ctx,
        number,
        timestamp_us,
        parent,
        net,
        txs,
    })
}

/// A created contract: u8 1 and its 20 bytes, or u8 0 (version 1 records
/// and history payloads).
pub(crate) fn put_contract(w: &mut Writer<'_>, contract: Option<Address>) {
    match contract {
        Some(address) => {
            w.u8(1);
            w.raw(address.as_slice());
        }
        None => w.u8(0),
    }
}

/// Logs: a u32 count; each log's address, u8 topic count, topics, data.
pub(crate) fn put_logs(w: &mut Writer<'_>, logs: &[Log]) {
    w.u32(logs.len());
    for log in logs {
        w.raw(log.address.as_slice());
        w.u8(log.topics().len() as u8);
        for topic in log.topics() {
            w.raw(topic.as_slice());
        }
        w.bytes(&log.data.data);
    }
}

/// Reads what [`put_logs`] wrote.
pub(crate) fn get_logs(r: &mut Reader<'_>) -> Result<Vec<Log>, PayloadError> {
    let log_count = r.count(20 + 1 + 4)?;
    let mut logs = Vec::with_capacity(log_count);
    for _ in 0..log_count {
        let address = r.address()?;
        logs.push(get_log_after_address(r, address, Reader::bytes)?);
    }
    Ok(logs)
}

/// A log's topics and data (read by `data`), after its address.
fn get_log_after_address<'a>(
    r: &mut Reader<'a>,
    address: Address,
    data: fn(&mut Reader<'a>) -> Result<&'a [u8], PayloadError>,
) -> Result<Log, PayloadError> {
    let topic_count = r.u8()?;
    if topic_count > 4 {
        return Err(PayloadError::Invalid("topic count"));
    }
    let mut topics = Vec::with_capacity(topic_count as usize);
    for _ in 0..topic_count {
        topics.push(r.b256()?);
    }
    let data = Bytes::copy_from_slice(data(r)?);
    Ok(Log {
        address,
        data: LogData::new_unchecked(topics, data),
    })
}

/// A sender, its transaction's EIP-2718 bytes (u32 length first) and the
/// EIP-658 status byte, as version 1 records and history payloads hold
/// them; the envelope and its encoded length.
pub(crate) fn get_sender_and_tx(
    r: &mut Reader<'_>,
) -> Result<(Address, TxEnvelope, usize), PayloadError> {
    let sender = r.address()?;
    let raw = r.bytes()?;
    let envelope = TxEnvelope::decode_2718_exact(raw)
        .map_err(|_| PayloadError::Invalid("transaction encoding"))?;
    Ok((sender, envelope, raw.len()))
}

/// An EIP-658 status byte.
pub(crate) fn get_status(r: &mut Reader<'_>) -> Result<bool, PayloadError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(PayloadError::Invalid("status")),
    }
}

/// Decodes a mini-block payload (version 2, or 1 as written before).
pub fn decode_mini_block(bytes: &[u8]) -> Result<MiniBlockRecord, PayloadError> {
    let mut r = Reader::new(bytes);
    let record = match r.u8()? {
        VERSION => decode_mini_block_v1(&mut r)?,
        VERSION_COMPACT => decode_mini_block_v2(&mut r, false)?,
        VERSION_CHAINED => decode_mini_block_v2(&mut r, true)?,
        version => return Err(PayloadError::Version(version)),
    };
    r.finish()?;
    Ok(record)
}

/// Decodes the body of a version 1 mini-block payload (after its version).
fn decode_mini_block_v1(r: &mut Reader<'_>) -> Result<MiniBlockRecord, PayloadError> {
    let ctx = get_ctx(r)?;
    let number = r.u64()?;
    let count = r.count(20 + 4 + 1 + 8 + 1 + 4 + 12)?;
    let mut txs = Vec::with_capacity(count);
    for _ in 0..count {
        let (sender, envelope, encoded_len) = get_sender_and_tx(r)?;
        let success = get_status(r)?;
        let gas_used = r.u64()?;
        let contract_address = match r.u8()? {
            0 => None,
            1 => Some(r.address()?),
            _ => return Err(PayloadError::Invalid("contract address flag")),
        };
        let logs = get_logs(r)?;
        let diff = get_diff(r)?;
        txs.push(LoggedTx {
            sender,
            envelope,
            encoded_len,
            success,
            gas_used,
            contract_address,
            logs,
            diff,
        });
    }
    Ok(MiniBlockRecord {
        ctx,
        number,
        timestamp_us: 0,
        parent: B256::ZERO,
        net: NetChanges::default(),
        txs,
    })
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
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(PayloadError::Version(version));
    }
    let size = r.u64()?;
    let mut rest = &bytes[r.position()..];
    let header = Header::decode(&mut rest).map_err(|_| PayloadError::Invalid("header RLP"))?;
    if !rest.is_empty() {
        return Err(PayloadError::Trailing(rest.len()));
    }
    Ok(SealRecord { header, size })
}

/// A checkpoint marker (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointMarker {
    /// The checkpoint's block.
    pub number: u64,
    /// Its hash.
    pub hash: alloy_primitives::B256,
    /// The DA-progress records' payloads logged before the marker, in log
    /// order.
    pub da_records: Vec<Vec<u8>>,
    /// The hashes of the blocks up to `number` (its own last), at most
    /// 256; empty in markers of older builds.
    pub block_hashes: Vec<alloy_primitives::B256>,
}

/// Appends the payload of `marker` to `out`.
pub fn encode_checkpoint_marker(marker: &CheckpointMarker, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u8(VERSION);
    w.u64(marker.number);
    w.raw(marker.hash.as_slice());
    w.varint(marker.da_records.len() as u64);
    for record in &marker.da_records {
        w.var_bytes(record);
    }
    w.varint(marker.block_hashes.len() as u64);
    for hash in &marker.block_hashes {
        w.raw(hash.as_slice());
    }
}

/// Decodes a checkpoint marker's payload.
pub fn decode_checkpoint_marker(bytes: &[u8]) -> Result<CheckpointMarker, PayloadError> {
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(PayloadError::Version(version));
    }
    let number = r.u64()?;
    let hash = r.b256()?;
    let count = r.var_count(1)?;
    let mut da_records = Vec::with_capacity(count);
    for _ in 0..count {
        da_records.push(r.var_bytes()?.to_vec());
    }
    let mut block_hashes = Vec::new();
    if r.remaining() > 0 {
        let count = r.var_count(32)?;
        block_hashes.reserve(count);
        for _ in 0..count {
            block_hashes.push(r.b256()?);
        }
    }
    r.finish()?;
    Ok(CheckpointMarker {
        number,
        hash,
        da_records,
        block_hashes,
    })
}

#[cfg(test)]
mod tests {
    //! Every codec gets a round trip, and arbitrary bytes are errors, never
    //! panics (the log_scan fuzz target covers the same decoders at scale).

    use super::*;
    use crate::tx::tests::{RULES, access_list_tx, dynamic_fee};
    use crate::tx::{RecoveredTx, decode_and_check};
    use alloy_primitives::{B256, Bytes, U256};
    use alloy_signer_local::PrivateKeySigner;
    use fulmen_storage::AccountState;
    use revm::bytecode::Bytecode;

    fn recovered(signer: &PrivateKeySigner, create: bool) -> RecoveredTx {
        let envelope = if create {
            access_list_tx(signer)
        } else {
            dynamic_fee(signer)
        };
        decode_and_check(&envelope.encoded_2718(), &RULES).unwrap()
    }

    fn executed(tx: RecoveredTx, index: u64, logs: Vec<Log>, created: bool) -> Arc<ExecutedTx> {
        Arc::new(ExecutedTx {
            contract_address: created.then(|| Address::repeat_byte(0xcc)),
            tx,
            success: !created,
            gas_used: 21_000 + index,
            cumulative_gas_used: 21_000 * (index + 1),
            effective_gas_price: 8,
            logs,
            block_number: 9,
            block_timestamp: 1_700,
            index,
            first_log_index: 0,
            mini_block: 33,
        })
    }

    fn sample() -> (BlockContext, Vec<Arc<ExecutedTx>>, Vec<StateDiff>) {
        let signer = PrivateKeySigner::random();
        let ctx = BlockContext {
            number: 9,
            timestamp: 1_700,
            base_fee: 7,
            gas_limit: 30_000_000,
            coinbase: Address::repeat_byte(0xfe),
            prevrandao: B256::repeat_byte(0x5a),
        };
        let log = Log {
            address: Address::repeat_byte(3),
            data: LogData::new_unchecked(
                vec![B256::repeat_byte(1), B256::repeat_byte(2)],
                Bytes::from_static(b"payload"),
            ),
        };
        let txs = vec![
            executed(recovered(&signer, false), 0, vec![log.clone(), log], false),
            executed(recovered(&signer, true), 1, Vec::new(), true),
        ];
        let code = Bytecode::new_raw(Bytes::from_static(&[0x60, 0x00]));
        let diffs = vec![
            StateDiff {
                accounts: vec![
                    (
                        Address::repeat_byte(4),
                        Some(AccountState {
                            nonce: 3,
                            balance: U256::from(10).pow(U256::from(30)),
                            code_hash: code.hash_slow(),
                        }),
                    ),
                    (Address::repeat_byte(5), None),
                ],
                storage: vec![(Address::repeat_byte(4), U256::from(1), U256::MAX)],
                codes: vec![(code.hash_slow(), code)],
            },
            StateDiff::default(),
        ];
        (ctx, txs, diffs)
    }

    /// The version 1 encoder, as written before version 2: its records are
    /// still read.
    fn encode_mini_block_v1(
        ctx: &BlockContext,
        number: u64,
        txs: &[Arc<ExecutedTx>],
        diffs: &[StateDiff],
        out: &mut Vec<u8>,
    ) {
        let mut w = Writer(out);
        w.u8(VERSION);
        put_ctx(&mut w, ctx);
        w.u64(number);
        w.u32(txs.len());
        for (tx, diff) in txs.iter().zip(diffs) {
            w.raw(tx.tx.sender.as_slice());
            w.bytes(&tx.tx.envelope.encoded_2718());
            w.u8(u8::from(tx.success));
            w.u64(tx.gas_used);
            put_contract(&mut w, tx.contract_address);
            put_logs(&mut w, &tx.logs);
            put_diff(&mut w, diff);
        }
    }

    fn check_decoded(out: &[u8], ctx: &BlockContext, txs: &[Arc<ExecutedTx>], diffs: &[StateDiff]) {
        let record = decode_mini_block(out).unwrap();
        assert_eq!(record.ctx, *ctx);
        assert_eq!(record.number, 33);
        assert_eq!(record.txs.len(), txs.len());
        for ((logged, tx), diff) in record.txs.iter().zip(txs).zip(diffs) {
            assert_eq!(logged.sender, tx.tx.sender);
            assert_eq!(logged.envelope, tx.tx.envelope);
            assert_eq!(logged.encoded_len, tx.tx.encoded().len());
            assert_eq!(logged.success, tx.success);
            assert_eq!(logged.gas_used, tx.gas_used);
            assert_eq!(logged.contract_address, tx.contract_address);
            assert_eq!(logged.logs, tx.logs);
            assert_eq!(logged.diff.accounts, diff.accounts);
            assert_eq!(logged.diff.storage, diff.storage);
            let codes = |d: &StateDiff| -> Vec<(B256, Bytes)> {
                d.codes
                    .iter()
                    .map(|(hash, code)| (*hash, code.original_bytes()))
                    .collect()
            };
            assert_eq!(codes(&logged.diff), codes(diff));
        }
    }

    #[test]
    fn a_mini_block_round_trips_within_its_predicted_size_and_old_records_still_read() {
        let (ctx, txs, diffs) = sample();
        let mut out = Vec::new();
        let net = sample_net(&diffs);
        encode_mini_block(&ctx, meta(&net), &txs, &diffs, &mut out);
        let predicted: usize = MINI_BLOCK_HEADER_BYTES
            + txs
                .iter()
                .zip(&diffs)
                .map(|(tx, diff)| {
                    let created = tx.contract_address.is_some();
                    tx_entry_bytes(tx.tx.encoded().len(), &tx.logs, created, diff)
                })
                .sum::<usize>();
        assert!(out.len() <= predicted, "{} > {predicted}", out.len());
        check_decoded(&out, &ctx, &txs, &diffs);
        let record = decode_mini_block(&out).unwrap();
        assert_eq!(record.net, net);
        assert_eq!(record.timestamp_us, 1_700_000_123_456);
        assert_eq!(record.parent, B256::repeat_byte(7));
        let hashes: Vec<B256> = txs.iter().map(|tx| tx.tx.hash).collect();
        assert_eq!(
            record.hash(),
            mini_block_hash(&record.parent, 33, ctx.number, record.timestamp_us, &hashes)
        );
        let mut old = Vec::new();
        encode_mini_block_v1(&ctx, 33, &txs, &diffs, &mut old);
        check_decoded(&old, &ctx, &txs, &diffs);
        let old = decode_mini_block(&old).unwrap();
        assert_eq!((old.timestamp_us, old.parent), (0, B256::ZERO));
        assert_eq!(old.net, NetChanges::default());
    }

    /// Net changes naming every account and slot of `diffs`: the most a
    /// record holds.
    fn sample_net(diffs: &[StateDiff]) -> NetChanges {
        let accounts: Vec<Address> = diffs
            .iter()
            .flat_map(|d| d.accounts.iter().map(|(a, _)| *a))
            .collect();
        NetChanges {
            unchanged_accounts: accounts.clone(),
            code_changed: accounts,
            unchanged_slots: diffs
                .iter()
                .flat_map(|d| d.storage.iter().map(|(a, s, _)| (*a, *s)))
                .collect(),
        }
    }

    fn meta(net: &NetChanges) -> MiniBlockMeta<'_> {
        MiniBlockMeta {
            number: 33,
            timestamp_us: 1_700_000_123_456,
            parent: B256::repeat_byte(7),
            net,
        }
    }

    /// A native transfer: its envelope, its sender, recipient and the fee
    /// recipient's new balances. The fee recipient, written once per
    /// record, is a one-byte reference after.
    #[test]
    fn a_native_transfer_takes_its_envelope_and_under_80_bytes_more() {
        let ctx = sample().0;
        let txs: Vec<_> = (0..100)
            .map(|i| {
                let signer = PrivateKeySigner::random();
                executed(recovered(&signer, false), i, Vec::new(), false)
            })
            .collect();
        let diffs: Vec<_> = txs
            .iter()
            .map(|tx| StateDiff {
                accounts: vec![
                    (
                        tx.tx.sender,
                        Some(AccountState {
                            nonce: 1,
                            balance: U256::from(999_999_000_000_000_000_000u128),
                            code_hash: KECCAK_EMPTY,
                        }),
                    ),
                    (
                        Address::repeat_byte(2),
                        Some(AccountState::funded(U256::from(1_000_000_000u64))),
                    ),
                    (
                        ctx.coinbase,
                        Some(AccountState::funded(U256::from(123_456_789_000u64))),
                    ),
                ],
                ..Default::default()
            })
            .collect();
        let mut out = Vec::new();
        // The fee recipient was touched without a tip: unchanged.
        let net = NetChanges {
            unchanged_accounts: vec![ctx.coinbase],
            ..NetChanges::default()
        };
        encode_mini_block(&ctx, meta(&net), &txs, &diffs, &mut out);
        let envelopes: usize = txs.iter().map(|tx| tx.tx.encoded().len()).sum();
        let overhead = (out.len() - envelopes) / txs.len();
        assert!(
            overhead < 80,
            "{overhead} bytes a transfer besides its envelope"
        );
        check_decoded(&out, &ctx, &txs, &diffs);
    }

    #[test]
    fn a_seal_round_trips() {
        let header = Header {
            number: 9,
            gas_used: 42_000,
            timestamp: 1_700,
            base_fee_per_gas: Some(7),
            parent_hash: B256::repeat_byte(9),
            ..Default::default()
        };
        let mut out = Vec::new();
        encode_seal(&header, 777, &mut out);
        let record = decode_seal(&out).unwrap();
        assert_eq!(record.header, header);
        assert_eq!(record.size, 777);
        out.push(0);
        assert!(matches!(decode_seal(&out), Err(PayloadError::Trailing(1))));
    }

    #[test]
    fn truncations_and_other_versions_are_errors() {
        let (ctx, txs, diffs) = sample();
        let mut out = Vec::new();
        let net = sample_net(&diffs);
        encode_mini_block(&ctx, meta(&net), &txs, &diffs, &mut out);
        for len in 0..out.len() {
            assert!(
                decode_mini_block(&out[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
        out[0] = VERSION_CHAINED + 1;
        assert!(matches!(
            decode_mini_block(&out),
            Err(PayloadError::Version(4))
        ));
    }

    #[test]
    fn arbitrary_bytes_are_errors_not_panics() {
        let (ctx, txs, diffs) = sample();
        let mut valid = Vec::new();
        let net = sample_net(&diffs);
        encode_mini_block(&ctx, meta(&net), &txs, &diffs, &mut valid);
        // A deterministic xorshift stream: random payloads, and the valid
        // record with bytes overwritten.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let len = (next() % 600) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && !bytes.is_empty() {
                bytes[0] = [VERSION, VERSION_COMPACT, VERSION_CHAINED][(round / 2) % 3];
            }
            let _ = decode_mini_block(&bytes);
            let _ = decode_seal(&bytes);
            let mut mutated = valid.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % mutated.len();
                mutated[at] = next() as u8;
            }
            let _ = decode_mini_block(&mutated);
        }
    }

    #[test]
    fn a_checkpoint_marker_round_trips_and_a_mini_block_peeks() {
        let mut marker = CheckpointMarker {
            number: 77,
            hash: alloy_primitives::B256::repeat_byte(9),
            da_records: vec![vec![1, 2, 3], Vec::new(), vec![7; 300]],
            block_hashes: (0..78u8).map(B256::repeat_byte).collect(),
        };
        let mut out = Vec::new();
        encode_checkpoint_marker(&marker, &mut out);
        assert_eq!(decode_checkpoint_marker(&out), Ok(marker.clone()));
        // A cut inside the hashes is an error; one right before them is an
        // older build's marker.
        let without_hashes = out.len() - 1 - 78 * 32;
        for cut in 0..out.len() {
            assert_eq!(
                decode_checkpoint_marker(&out[..cut]).is_ok(),
                cut == without_hashes,
                "cut at {cut}"
            );
        }
        marker.block_hashes.clear();
        assert_eq!(decode_checkpoint_marker(&out[..without_hashes]), Ok(marker));
        let (ctx, txs, diffs) = sample();
        let net = NetChanges::default();
        let mut current = Vec::new();
        encode_mini_block(&ctx, meta(&net), &txs, &diffs, &mut current);
        let mut old = Vec::new();
        encode_mini_block_v1(&ctx, 33, &txs, &diffs, &mut old);
        for record in [current, old] {
            assert_eq!(peek_mini_block(&record), Ok((ctx.number, 33)));
        }
    }
}
