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
use alloy_primitives::{Address, Bytes, Log, LogData};
use alloy_rlp::{Decodable, Encodable};
use fulmen_storage::StateDiff;
use fulmen_storage::codec::{Reader, Writer};

use crate::block::BlockContext;
use crate::block::ExecutedTx;

const VERSION: u8 = 1;

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

/// Bytes of an encoded [`BlockContext`].
const CTX_BYTES: usize = 8 * 4 + 20 + 32;

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

/// Bytes [`encode_mini_block`] writes for one transaction entry: its sender,
/// 2718 bytes, outcome, logs and state changes. The sequencer bounds what one
/// transaction and one mini-block put in the log with it, before the record
/// exists (a unit test checks it against the encoder).
pub fn tx_entry_bytes(
    tx_2718_bytes: usize,
    logs: &[alloy_primitives::Log],
    contract_created: bool,
    diff: &StateDiff,
) -> usize {
    const ACCOUNT_BYTES: usize = 8 + 32 + 32;
    const SLOT_BYTES: usize = 20 + 32 + 32;
    let logs_bytes: usize = logs
        .iter()
        .map(|log| 20 + 1 + 32 * log.topics().len() + 4 + log.data.data.len())
        .sum();
    let accounts_bytes: usize = diff
        .accounts
        .iter()
        .map(|(_, account)| 20 + 1 + if account.is_some() { ACCOUNT_BYTES } else { 0 })
        .sum();
    let codes_bytes: usize = diff
        .codes
        .iter()
        .map(|(_, code)| 32 + 4 + code.original_byte_slice().len())
        .sum();
    20 + 4
        + tx_2718_bytes
        + 1
        + 8
        + 1
        + if contract_created { 20 } else { 0 }
        + 4
        + logs_bytes
        + 4
        + accounts_bytes
        + 4
        + SLOT_BYTES * diff.storage.len()
        + 4
        + codes_bytes
}

/// Bytes [`encode_mini_block`] writes before the first transaction entry.
pub const MINI_BLOCK_HEADER_BYTES: usize = 1 + CTX_BYTES + 8 + 4;

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
        put_logs(&mut w, &tx.logs);
        put_diff(&mut w, diff);
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
    Ok(logs)
}

/// Decodes a mini-block payload.
pub fn decode_mini_block(bytes: &[u8]) -> Result<MiniBlockRecord, PayloadError> {
    let mut r = Reader::new(bytes);
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
        let logs = get_logs(&mut r)?;
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

    #[test]
    fn a_mini_block_round_trips_and_its_size_is_predicted() {
        let (ctx, txs, diffs) = sample();
        let mut out = Vec::new();
        encode_mini_block(&ctx, 33, &txs, &diffs, &mut out);
        let predicted: usize = MINI_BLOCK_HEADER_BYTES
            + txs
                .iter()
                .zip(&diffs)
                .map(|(tx, diff)| {
                    let created = tx.contract_address.is_some();
                    tx_entry_bytes(tx.tx.encoded().len(), &tx.logs, created, diff)
                })
                .sum::<usize>();
        assert_eq!(out.len(), predicted);
        let record = decode_mini_block(&out).unwrap();
        assert_eq!(record.ctx, ctx);
        assert_eq!(record.number, 33);
        assert_eq!(record.txs.len(), txs.len());
        for ((logged, tx), diff) in record.txs.iter().zip(&txs).zip(&diffs) {
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
        encode_mini_block(&ctx, 33, &txs, &diffs, &mut out);
        for len in 0..out.len() {
            assert!(
                decode_mini_block(&out[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
        out[0] = VERSION + 1;
        assert!(matches!(
            decode_mini_block(&out),
            Err(PayloadError::Version(2))
        ));
    }

    #[test]
    fn arbitrary_bytes_are_errors_not_panics() {
        let (ctx, txs, diffs) = sample();
        let mut valid = Vec::new();
        encode_mini_block(&ctx, 33, &txs, &diffs, &mut valid);
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
                bytes[0] = VERSION;
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
}
