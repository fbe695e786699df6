//! Sealed blocks in the history store (`fulmen_storage::history`): their
//! payload (format version 1), and the reads a [`crate::view::ChainView`]
//! makes of blocks it no longer keeps in RAM.
//!
//! A block's keys are its hash, then its transactions' hashes in order. Its
//! payload (integers little-endian and fixed width, as in [`crate::persist`]):
//!
//! | field | encoding |
//! |---|---|
//! | version | u8, 1 |
//! | header | u32 length, RLP |
//! | size | u64 (as `eth_getBlockBy*` reports it) |
//! | transactions | u32 count; u32 offset of each entry from the first; then the entries |
//! | entry | sender 20 bytes; EIP-2718 bytes (u32 length first); status u8; gas used u64; cumulative gas used u64; index of its first log in the block u64; mini-block u64; created contract (u8 flag, 20 bytes); logs as in the log's mini-block records |
//!
//! The offsets let a receipt be decoded without the rest of its block.

use std::sync::Arc;

use alloy_consensus::Header;
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::B256;
use alloy_rlp::{Decodable, Encodable};
use fulmen_storage::codec::{PayloadError, Reader, Writer};
use fulmen_storage::history::{Found, HistoryReader, split_record};
use revm::primitives::hardfork::SpecId;

use crate::block::{ExecutedTx, SealedBlock};
use crate::persist::{get_logs, get_sender_and_tx, get_status, put_contract, put_logs};

const VERSION: u8 = 1;

/// History reads that failed (IO or a damaged record), for `/metrics`.
pub static READ_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A record's keys and payload.
type Record = (Vec<B256>, Vec<u8>);

/// Bytes of a transaction entry before its variable parts.
const TX_ENTRY_BYTES_MIN: usize = 20 + 4 + 1 + 8 * 4 + 1 + 4;

/// The keys and payload of `block` for the history store.
pub fn encode_block(block: &SealedBlock) -> (Vec<B256>, Vec<u8>) {
    let mut keys = Vec::with_capacity(1 + block.txs.len());
    keys.push(block.hash);
    keys.extend(block.txs.iter().map(|tx| tx.tx.hash));
    let mut entries = Vec::new();
    let mut offsets = Vec::with_capacity(block.txs.len());
    let mut raw = Vec::new();
    for tx in &block.txs {
        offsets.push(entries.len());
        let mut w = Writer(&mut entries);
        w.raw(tx.tx.sender.as_slice());
        raw.clear();
        tx.tx.envelope.encode_2718(&mut raw);
        w.bytes(&raw);
        w.u8(u8::from(tx.success));
        w.u64(tx.gas_used);
        w.u64(tx.cumulative_gas_used);
        w.u64(tx.first_log_index);
        w.u64(tx.mini_block);
        put_contract(&mut w, tx.contract_address);
        put_logs(&mut w, &tx.logs);
    }
    let mut header = Vec::with_capacity(600);
    block.header.encode(&mut header);
    let mut payload = Vec::with_capacity(64 + header.len() + 4 * offsets.len() + entries.len());
    let mut w = Writer(&mut payload);
    w.u8(VERSION);
    w.bytes(&header);
    w.u64(block.size);
    w.u32(offsets.len());
    for offset in offsets {
        w.u32(offset);
    }
    w.raw(&entries);
    (keys, payload)
}

/// A payload's parts: header, size, and the transaction section.
struct Parts<'a> {
    header: Header,
    size: u64,
    offsets: Vec<usize>,
    entries: &'a [u8],
}

fn parts(payload: &[u8]) -> Result<Parts<'_>, PayloadError> {
    let mut r = Reader::new(payload);
    let version = r.u8()?;
    if version != VERSION {
        return Err(PayloadError::Version(version));
    }
    let mut rlp = r.bytes()?;
    let header = Header::decode(&mut rlp).map_err(|_| PayloadError::Invalid("header RLP"))?;
    if !rlp.is_empty() {
        return Err(PayloadError::Invalid("header RLP length"));
    }
    let size = r.u64()?;
    let count = r.count(4 + TX_ENTRY_BYTES_MIN)?;
    let mut offsets = Vec::with_capacity(count);
    for _ in 0..count {
        offsets.push(r.u32()?);
    }
    let entries = &payload[r.position()..];
    if offsets.iter().any(|o| *o > entries.len()) {
        return Err(PayloadError::Invalid("transaction offset"));
    }
    Ok(Parts {
        header,
        size,
        offsets,
        entries,
    })
}

/// Decodes transaction entry `index` of a block with `header`.
fn decode_tx(
    parts: &Parts<'_>,
    index: usize,
    hash: B256,
    spec: SpecId,
) -> Result<ExecutedTx, PayloadError> {
    let start = *parts
        .offsets
        .get(index)
        .ok_or(PayloadError::Invalid("transaction index"))?;
    let end = parts
        .offsets
        .get(index + 1)
        .copied()
        .unwrap_or(parts.entries.len());
    let bytes = parts
        .entries
        .get(start..end)
        .ok_or(PayloadError::Invalid("transaction offsets"))?;
    let mut r = Reader::new(bytes);
    let (sender, envelope, encoded_len) = get_sender_and_tx(&mut r)?;
    let success = get_status(&mut r)?;
    let gas_used = r.u64()?;
    let cumulative_gas_used = r.u64()?;
    let first_log_index = r.u64()?;
    let mini_block = r.u64()?;
    let contract_address = match r.u8()? {
        0 => None,
        1 => Some(r.address()?),
        _ => return Err(PayloadError::Invalid("contract address flag")),
    };
    let logs = get_logs(&mut r)?;
    r.finish()?;
    let tx = crate::tx::from_logged(envelope, sender, encoded_len, spec);
    if tx.hash != hash {
        return Err(PayloadError::Invalid("transaction hash"));
    }
    let base_fee = parts.header.base_fee_per_gas.unwrap_or_default();
    Ok(ExecutedTx {
        effective_gas_price: tx.effective_gas_price(base_fee),
        tx,
        success,
        gas_used,
        cumulative_gas_used,
        logs,
        contract_address,
        block_number: parts.header.number,
        block_timestamp: parts.header.timestamp,
        index: index as u64,
        first_log_index,
        mini_block,
    })
}

/// Decodes a whole block; `keys` are its hash and its transactions' hashes.
fn decode_block(keys: &[B256], payload: &[u8], spec: SpecId) -> Result<SealedBlock, PayloadError> {
    let parts = parts(payload)?;
    if keys.len() != parts.offsets.len() + 1 {
        return Err(PayloadError::Invalid("key count"));
    }
    let txs = keys[1..]
        .iter()
        .enumerate()
        .map(|(i, hash)| decode_tx(&parts, i, *hash, spec).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SealedBlock {
        hash: keys[0],
        size: parts.size,
        header: parts.header,
        txs,
    })
}

/// Why a history read failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store could not be read.
    #[error("history store: {0}")]
    Io(#[from] std::io::Error),
    /// A record read back whole but does not decode.
    #[error("history record of block {number}: {error}")]
    Payload {
        /// Block number.
        number: u64,
        /// What is wrong.
        error: PayloadError,
    },
}

/// Reads blocks and transactions back from the history store. Cloning is
/// cheap.
#[derive(Debug, Clone)]
pub struct History {
    reader: HistoryReader,
    spec: SpecId,
    memory_blocks: u64,
}

impl History {
    /// Reads through `reader`; the chain view keeps the last
    /// `memory_blocks` sealed blocks (at least one) decoded in RAM.
    pub fn new(reader: HistoryReader, spec: SpecId, memory_blocks: u64) -> Self {
        Self {
            reader,
            spec,
            memory_blocks: memory_blocks.max(1),
        }
    }

    /// Sealed blocks the view keeps in RAM.
    pub fn memory_blocks(&self) -> u64 {
        self.memory_blocks
    }

    /// Blocks `first()..len()` are in the store.
    pub fn len(&self) -> u64 {
        self.reader.len()
    }

    /// The oldest block in the store (older ones were pruned).
    pub fn first(&self) -> u64 {
        self.reader.first()
    }

    /// Whether the store holds no block.
    pub fn is_empty(&self) -> bool {
        self.reader.is_empty()
    }

    fn record(&self, number: u64) -> Result<Option<Record>, HistoryError> {
        let Some(record) = self.reader.record(number)? else {
            return Ok(None);
        };
        let (keys, payload) = split_record(&record)?;
        let payload = payload.to_vec();
        Ok(Some((keys, payload)))
    }

    /// Block `number`.
    pub fn block(&self, number: u64) -> Result<Option<SealedBlock>, HistoryError> {
        let Some((keys, payload)) = self.record(number)? else {
            return Ok(None);
        };
        decode_block(&keys, &payload, self.spec)
            .map(Some)
            .map_err(|error| HistoryError::Payload { number, error })
    }

    /// The header and hash of block `number`, read without the rest of
    /// the block and checked against the hash.
    pub fn header(&self, number: u64) -> Result<Option<(Header, B256)>, HistoryError> {
        let fail = |error| HistoryError::Payload { number, error };
        let Some(front) = self.reader.read_at(number, 0, 4 + 32)? else {
            return Ok(None);
        };
        let count = u64::from(u32::from_le_bytes(front[..4].try_into().unwrap()));
        let hash = B256::from_slice(&front[4..]);
        let start = 4 + 32 * count;
        let Some(len) = self.reader.read_at(number, start + 1, 4)? else {
            return Err(fail(PayloadError::Truncated(0)));
        };
        let len = u32::from_le_bytes(len[..].try_into().unwrap()) as usize;
        let rlp = self
            .reader
            .read_at(number, start + 5, len)?
            .ok_or(fail(PayloadError::Truncated(5)))?;
        if alloy_primitives::keccak256(&rlp) != hash {
            return Err(fail(PayloadError::Invalid("header (not its block's hash)")));
        }
        let header = Header::decode(&mut rlp.as_slice())
            .map_err(|_| fail(PayloadError::Invalid("header RLP")))?;
        Ok(Some((header, hash)))
    }

    /// The hash of block `number` (its first key).
    pub fn hash(&self, number: u64) -> Result<Option<B256>, HistoryError> {
        Ok(self
            .reader
            .read_at(number, 4, 32)?
            .map(|key| B256::from_slice(&key)))
    }

    /// The number of the block with this hash.
    pub fn number_of(&self, hash: &B256) -> Result<Option<u64>, HistoryError> {
        Ok(match self.reader.find(hash)? {
            Some(Found::Block(number)) => Some(number),
            _ => None,
        })
    }

    /// A transaction and its block's hash.
    pub fn tx(&self, hash: &B256) -> Result<Option<(ExecutedTx, B256)>, HistoryError> {
        let Some(Found::Tx { block, index }) = self.reader.find(hash)? else {
            return Ok(None);
        };
        let Some((keys, payload)) = self.record(block)? else {
            return Ok(None);
        };
        let fail = |error| HistoryError::Payload {
            number: block,
            error,
        };
        let parts = parts(&payload).map_err(fail)?;
        let tx = decode_tx(&parts, index as usize, *hash, self.spec).map_err(fail)?;
        Ok(Some((tx, keys[0])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::ExecutedTx;
    use crate::tx::decode_and_check;
    use crate::tx::tests::{RULES, access_list_tx, dynamic_fee};
    use alloy_consensus::TxEnvelope;
    use alloy_primitives::{Address, Bytes, Log, LogData};
    use alloy_signer_local::PrivateKeySigner;

    fn executed(envelope: TxEnvelope, index: u64, logs: Vec<Log>) -> Arc<ExecutedTx> {
        let tx = decode_and_check(&envelope.encoded_2718(), &RULES).unwrap();
        Arc::new(ExecutedTx {
            effective_gas_price: tx.effective_gas_price(7),
            tx,
            success: index.is_multiple_of(2),
            gas_used: 21_000 + index,
            cumulative_gas_used: 21_000 * (index + 1),
            logs,
            contract_address: (index == 1).then(|| Address::repeat_byte(9)),
            block_number: 5,
            block_timestamp: 1_700_000_000,
            index,
            first_log_index: index * 2,
            mini_block: 40 + index,
        })
    }

    fn block() -> SealedBlock {
        let signer = PrivateKeySigner::random();
        let log = Log {
            address: Address::repeat_byte(3),
            data: LogData::new_unchecked(vec![B256::repeat_byte(4)], Bytes::from_static(b"data")),
        };
        let txs = vec![
            executed(dynamic_fee(&signer), 0, vec![log.clone(), log]),
            executed(access_list_tx(&signer), 1, vec![]),
        ];
        let header = Header {
            number: 5,
            timestamp: 1_700_000_000,
            base_fee_per_gas: Some(7),
            ..Default::default()
        };
        SealedBlock {
            hash: header.hash_slow(),
            header,
            txs,
            size: 1234,
        }
    }

    fn same(a: &ExecutedTx, b: &ExecutedTx) {
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn a_block_and_each_of_its_transactions_decode_to_what_was_encoded() {
        let block = block();
        let (keys, payload) = encode_block(&block);
        assert_eq!(keys[0], block.hash);
        let back = decode_block(&keys, &payload, RULES.spec).unwrap();
        assert_eq!(back.header, block.header);
        assert_eq!(back.hash, block.hash);
        assert_eq!(back.size, block.size);
        assert_eq!(back.txs.len(), 2);
        let parts = parts(&payload).unwrap();
        for (i, tx) in block.txs.iter().enumerate() {
            same(&back.txs[i], tx);
            same(&decode_tx(&parts, i, tx.tx.hash, RULES.spec).unwrap(), tx);
        }
    }

    #[test]
    fn arbitrary_bytes_are_an_error_never_a_panic() {
        let block = block();
        let (keys, payload) = encode_block(&block);
        for cut in 0..payload.len() {
            assert!(decode_block(&keys, &payload[..cut], RULES.spec).is_err());
        }
        let mut seed = 7u64;
        for _ in 0..2000 {
            let mut bytes = payload.clone();
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let at = (seed >> 33) as usize % bytes.len();
            bytes[at] ^= (seed >> 20) as u8 | 1;
            let _ = decode_block(&keys, &bytes, RULES.spec);
        }
        assert!(decode_block(&keys[..1], &payload, RULES.spec).is_err());
    }
}
