//! The bodies of the fuzz targets, shared by the libFuzzer binaries in
//! `fuzz_targets/` and by `make_seeds`, which runs every seed it writes
//! through the target it feeds and checks that the seed decodes (so the
//! corpus starts deep inside each decoder, not at its first length check).
//!
//! A target panics only when the library broke a promise: a decoder
//! panicked, or a property below failed. Each property is one the library
//! documents (a record that was framed decodes to what was framed, a decoded
//! transaction re-encodes to the bytes it came from, and so on).

use alloy_consensus::Transaction;
use alloy_eips::eip2718::Encodable2718;
use fulmen_chain::persist;
use fulmen_chain::spec::{DEV_CHAIN_ID, SPEC};
use fulmen_chain::tx::{self, TxRules};
use fulmen_netio::notify;
use fulmen_netio::rpc::{self, Body, Params};
use fulmen_storage::checkpoint;
use fulmen_storage::io::SimDisk;
use fulmen_storage::log::{LogDir, read_log, segment_name};
use fulmen_storage::record::{self, RecordKind};
use fulmen_storage::scan::{SegmentEnd, scan};

/// The rules the node applies by default on the dev chain.
pub const RULES: TxRules = TxRules {
    chain_id: DEV_CHAIN_ID,
    block_gas_limit: 1_000_000_000,
    tx_gas_limit_max: fulmen_chain::spec::TX_GAS_LIMIT_MAX_DEFAULT,
    spec: SPEC,
    allow_unprotected: false,
};

/// Batch limit handed to `parse_body` (the node's default order of size).
pub const BATCH_MAX: usize = 100;

/// `tx_decode`: EIP-2718 decoding, the stateless checks and sender
/// recovery, as `eth_sendRawTransaction` runs them on a net core. Returns
/// whether the bytes were accepted.
pub fn tx_decode(data: &[u8]) -> bool {
    match tx::decode_and_check(data, &RULES) {
        Ok(recovered) => {
            // Accepted bytes are canonical: re-encoding gives them back, and
            // the log's replay path rebuilds the same transaction.
            assert_eq!(recovered.encoded().as_ref(), data);
            assert_eq!(recovered.encoded_len, data.len());
            let again = tx::from_logged(
                recovered.envelope.clone(),
                recovered.sender,
                recovered.encoded_len,
                SPEC,
            );
            assert_eq!(again.hash, recovered.hash);
            assert_eq!(again.intrinsic_gas, recovered.intrinsic_gas);
            assert!(recovered.gas_limit() >= recovered.intrinsic_gas);
            // The balance check compares against this: it must not wrap
            // below what the transaction can actually spend.
            let cost = recovered.max_cost();
            assert!(cost >= recovered.envelope.value(), "max cost below value");
            let fees = alloy_primitives::U256::from(recovered.gas_limit())
                * alloy_primitives::U256::from(recovered.max_fee_per_gas());
            assert!(cost >= fees, "max cost below gas limit × fee cap");
            let _ = recovered.effective_gas_price(7);
            true
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}

/// `rpc_request`: a request body as the HTTP and WebSocket servers hand it
/// over, then the typed parameters of the methods that take any, as
/// `eth.rs` and `notify.rs` extract them. Returns the number of calls that
/// parsed.
pub fn rpc_request(data: &[u8]) -> usize {
    let calls = match rpc::parse_body(data, BATCH_MAX) {
        Ok(Body::Single(call)) => vec![call],
        Ok(Body::Batch(calls)) => {
            assert!(!calls.is_empty() && calls.len() <= BATCH_MAX);
            calls
        }
        Err(e) => {
            let _ = e.to_json();
            return 0;
        }
    };
    let mut parsed = 0;
    for call in calls {
        match call {
            Ok(call) => {
                parsed += 1;
                if let Err(e) = params(&call.method, &call.params) {
                    let _ = e.to_json();
                }
            }
            Err((_, e)) => {
                let _ = e.to_json();
            }
        }
    }
    parsed
}

/// The parameter extraction of each method that takes parameters, with the
/// types and positions `eth.rs` uses.
fn params(method: &str, p: &Params) -> Result<(), rpc::RpcError> {
    use alloy_eips::{BlockId, BlockNumberOrTag};
    use alloy_primitives::{Address, B256, Bytes, U64, U256};
    use alloy_rpc_types_eth::{Filter, TransactionRequest, state::StateOverride};
    match method {
        "web3_sha3" => {
            p.required::<Bytes>(0, "data")?;
        }
        "eth_getBalance" | "eth_getTransactionCount" | "eth_getCode" => {
            p.required::<Address>(0, "address")?;
            p.optional::<BlockId>(1, "block")?;
        }
        "eth_getStorageAt" => {
            p.required::<Address>(0, "address")?;
            p.required::<U256>(1, "slot")?;
            p.optional::<BlockId>(2, "block")?;
        }
        "eth_getProof" => {
            p.at_most(3)?;
            p.required::<Address>(0, "address")?;
            p.required::<Vec<B256>>(1, "storageKeys")?;
            p.optional::<BlockId>(2, "block")?;
        }
        "eth_call" | "eth_estimateGas" => {
            p.at_most(3)?;
            p.required::<TransactionRequest>(0, "transaction")?;
            p.optional::<BlockId>(1, "block")?;
            p.optional::<StateOverride>(2, "stateOverrides")?;
        }
        "eth_createAccessList" => {
            p.at_most(2)?;
            p.required::<TransactionRequest>(0, "transaction")?;
            p.optional::<BlockId>(1, "block")?;
        }
        "eth_sendRawTransaction" | "eth_sendRawTransactionSync" => {
            p.at_most(2)?;
            let raw: Bytes = p.required(0, "data")?;
            p.optional::<U64>(1, "timeout")?;
            tx_decode(&raw);
        }
        "eth_getTransactionByHash"
        | "eth_getTransactionReceipt"
        | "eth_getBlockTransactionCountByHash"
        | "eth_getUncleCountByBlockHash" => {
            p.required::<B256>(0, "hash")?;
        }
        "eth_getBlockByNumber" => {
            p.required::<BlockNumberOrTag>(0, "block")?;
            p.optional::<bool>(1, "full")?;
        }
        "eth_getBlockByHash" => {
            p.required::<B256>(0, "hash")?;
            p.optional::<bool>(1, "full")?;
        }
        "eth_getBlockTransactionCountByNumber" | "eth_getUncleCountByBlockNumber" => {
            p.required::<BlockNumberOrTag>(0, "block")?;
        }
        "eth_getTransactionByBlockNumberAndIndex" => {
            p.required::<BlockNumberOrTag>(0, "block")?;
            p.required::<U64>(1, "index")?;
        }
        "eth_getTransactionByBlockHashAndIndex" => {
            p.required::<B256>(0, "hash")?;
            p.required::<U64>(1, "index")?;
        }
        "eth_getBlockReceipts" => {
            p.required::<BlockId>(0, "block")?;
        }
        "eth_feeHistory" => {
            p.required::<U64>(0, "blockCount")?;
            p.required::<BlockNumberOrTag>(1, "newestBlock")?;
            p.optional::<Vec<f64>>(2, "rewardPercentiles")?;
        }
        "eth_getLogs" => {
            let filter: Filter = p.required(0, "filter")?;
            let _ = filter.get_from_block();
            let _ = filter.get_to_block();
            let _ = filter.get_block_hash();
        }
        "eth_subscribe" => {
            notify::Subscribe::parse(p)?;
        }
        "eth_unsubscribe" => {
            p.required::<String>(0, "subscription id")?;
        }
        _ => {}
    }
    Ok(())
}

/// `log_scan`: the boot path over one segment's bytes and over a whole
/// simulated log directory. The first byte picks how the rest is used:
///
/// - even: the bytes are a segment as they are on disk (mostly bad
///   checksums: the scan's error paths, torn tails and corruption search);
/// - odd: the bytes are cut into records that are framed with valid
///   checksums (so the scan goes past the CRC), with raw bytes and zero runs
///   between some of them, then split into up to three segments.
///
/// Returns the number of records the scans found.
pub fn log_scan(data: &[u8]) -> usize {
    let Some((&mode, rest)) = data.split_first() else {
        return 0;
    };
    let segments = if mode & 1 == 0 {
        vec![rest.to_vec()]
    } else {
        framed_segments(mode, rest)
    };
    let mut found = 0;
    for bytes in &segments {
        let mut last_end = 0u64;
        let end = scan(bytes, &FUZZ_SALT, |offset, record| {
            // Records come in order, back to back, each decoding again.
            assert_eq!(offset, last_end);
            let again = record::decode(&bytes[offset as usize..]).expect("scan yielded it");
            assert_eq!(again, record);
            last_end = offset + record.encoded_len() as u64;
            found += 1;
        });
        match end {
            Ok(SegmentEnd::Clean { end }) => {
                assert_eq!(end, last_end);
                assert!(bytes[end as usize..].iter().all(|b| *b == 0));
            }
            Ok(SegmentEnd::TornTail { at, error }) => {
                assert_eq!(at, last_end);
                let _ = error.to_string();
            }
            Err(corruption) => {
                assert_eq!(corruption.offset(), last_end);
                let _ = corruption.to_string();
            }
        }
        for at in 0..bytes.len().min(64) {
            let _ = record::decode(&bytes[at..]);
            let _ = record::is_end(&bytes[at..]);
        }
    }
    // The same bytes as a log directory on the simulated disk, with the
    // salt the framed batch ends carry.
    let disk = SimDisk::new(u64::from(mode), 1 << 30);
    let salt_block = fulmen_storage::log::encode_salt(&FUZZ_SALT, disk.alignment());
    if let Ok(mut file) = disk.create(fulmen_storage::log::SALT_FILE, salt_block.len() as u64) {
        let written = fulmen_storage::io::ready(fulmen_storage::io::LogFile::write_at(
            &mut file,
            0,
            &salt_block,
        ));
        assert!(written.is_ok(), "simulated disk has room");
    }
    let first = u64::from(mode >> 4);
    let align = disk.alignment() as usize;
    for (i, bytes) in segments.iter().enumerate() {
        let name = segment_name(first + i as u64);
        // Segments are preallocated in whole aligned blocks (writes to them
        // are aligned, as O_DIRECT wants): the rest of the last block is zeros.
        let mut image = bytes.clone();
        image.resize(bytes.len().div_ceil(align).max(1) * align, 0);
        let Ok(mut file) = disk.create(&name, image.len() as u64) else {
            return found;
        };
        let written =
            fulmen_storage::io::ready(fulmen_storage::io::LogFile::write_at(&mut file, 0, &image));
        assert!(written.is_ok(), "simulated disk has room");
    }
    match read_log(&disk) {
        Ok((recovery, tail)) => {
            for (_, kind, _) in &recovery.records {
                assert_ne!(*kind, RecordKind::Padding);
            }
            if let Some((position, _)) = &recovery.truncated {
                assert_eq!(position.segment, tail.segment);
                assert_eq!(position.offset, tail.end);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    found
}

/// The salt of the fuzzed logs (a real log's is random, in `log/SALT`).
pub const FUZZ_SALT: fulmen_storage::record::Salt = [0x5a; 16];

/// Frames `rest` into records (mode odd): each chunk is `kind byte, u16 LE
/// length, payload`; a kind byte of 0 inserts raw bytes instead, 0xFE a
/// salted batch end, and 0xFF starts the next segment.
fn framed_segments(mode: u8, mut rest: &[u8]) -> Vec<Vec<u8>> {
    let mut segments = vec![Vec::new()];
    while let Some((&tag, tail)) = rest.split_first() {
        let (len, tail) = match tail {
            [a, b, tail @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), tail),
            _ => (tail.len(), &[][..]),
        };
        let len = len.min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        if tag == 0xFF && segments.len() < 3 {
            segments.push(Vec::new());
            continue;
        }
        let out = segments.last_mut().expect("at least one");
        match tag {
            0 => out.extend_from_slice(payload),
            // A version 2 batch end: salted padding up to a 512-byte
            // boundary.
            0xFE => record::encode_padding(&FUZZ_SALT, 512, out),
            // A version 3 batch end stating where it ends (true when the
            // payload's first byte is even, else off by that byte).
            0xFD => {
                let end = (out.len() + record::BATCH_END_BYTES) as u64;
                let off = payload.first().map_or(0, |b| u64::from(b & 1) * u64::from(*b));
                record::encode_batch_end(&FUZZ_SALT, end + off, out);
            }
            _ => {
                let kind = RecordKind::from_byte(1 + tag % 5).expect("1..=5 is a kind");
                let start = out.len();
                record::encode(kind, payload, out).expect("payload under the limit");
                let decoded = record::decode(&out[start..]).expect("just framed");
                assert_eq!(decoded.kind, kind);
                assert_eq!(decoded.payload, payload);
            }
        }
    }
    // Preallocated segments end in zeros.
    let zeros = usize::from(mode >> 1 & 0x7) * 64;
    for segment in &mut segments {
        segment.resize(segment.len() + zeros, 0);
    }
    segments
}

/// `log_payload`: the mini-block and block-seal payloads replay decodes at
/// boot. The first byte picks the decoder. Returns whether it decoded.
pub fn log_payload(data: &[u8]) -> bool {
    let Some((&which, payload)) = data.split_first() else {
        return false;
    };
    if which & 1 == 0 {
        match persist::decode_mini_block(payload) {
            Ok(mini) => {
                for tx in &mini.txs {
                    // The logged envelope is what replay re-executes.
                    assert_eq!(tx.envelope.encode_2718_len(), tx.encoded_len);
                    let rebuilt =
                        tx::from_logged(tx.envelope.clone(), tx.sender, tx.encoded_len, SPEC);
                    let _ = rebuilt.max_cost();
                    for log in &tx.logs {
                        assert!(log.topics().len() <= 4);
                    }
                }
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        }
    } else {
        match persist::decode_seal(payload) {
            Ok(seal) => {
                // A decoded seal encodes back to the same bytes.
                let mut again = Vec::new();
                persist::encode_seal(&seal.header, seal.size, &mut again);
                assert_eq!(again, payload);
                let _ = seal.header.hash_slow();
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        }
    }
}

/// `checkpoint_image`: a checkpoint file as boot reads it. The first byte
/// picks whether the rest is the whole file (its checksum mostly wrong) or
/// an image body whose checksum is appended here, so that decoding goes
/// past the checksum into the body. Returns whether it decoded.
pub fn checkpoint_image(data: &[u8]) -> bool {
    let Some((&which, rest)) = data.split_first() else {
        return false;
    };
    let owned: Vec<u8>;
    let image: &[u8] = if which & 1 == 0 {
        rest
    } else {
        let crc = crc32c(rest);
        owned = [rest, &crc.to_le_bytes()[..]].concat();
        &owned
    };
    match checkpoint::decode(image) {
        Ok(checkpoint::Checkpoint { meta, state, trie }) => {
            // Encoding what was read and reading it again gives the same
            // state (duplicates in the input collapse) and trie section.
            let again = checkpoint::encode(&meta, &state, &trie);
            let read = checkpoint::decode(&again).expect("own encoding decodes");
            let (meta2, state2) = (read.meta, read.state);
            assert_eq!(meta, meta2);
            assert_eq!(trie, read.trie);
            assert_eq!(state.account_count(), state2.account_count());
            assert_eq!(state.slot_count(), state2.slot_count());
            assert_eq!(state.code_count(), state2.code_count());
            // Same content (the bytes may differ: the maps' iteration order
            // is per process, not per content).
            for (address, account) in state.accounts() {
                assert_eq!(state2.account(address), Some(account));
            }
            for ((address, slot), value) in state.slots() {
                assert_eq!(state2.storage(address, slot), *value);
            }
            for (hash, code) in state.codes() {
                assert_eq!(state2.code(hash), Some(code));
            }
            true
        }
        Err(detail) => {
            let _ = detail;
            false
        }
    }
}

/// CRC-32C (Castagnoli), as the checkpoint trailer uses; bitwise, so the
/// fuzz crate needs no extra dependency and the library's table code is
/// not what checks itself.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `da_decode`: the DA decoders a verifier runs on L1 data anyone can post
/// (and the DA-progress record boot reads back). The first byte picks the
/// decoder; the rest is its input. Returns whether it decoded.
pub fn da_decode(data: &[u8]) -> bool {
    use fulmen_da::{blob, channel, frame, record, span_batch};
    let Some((&which, input)) = data.split_first() else {
        return false;
    };
    let chain = span_batch::SpanChain {
        genesis_timestamp: 0,
        block_time_secs: 1,
        chain_id: fulmen_chain::spec::DEV_CHAIN_ID,
    };
    match which % 5 {
        0 => {
            // A blob: the input, zero-padded or cut to a blob's size.
            let mut bytes = vec![0u8; blob::BLOB_BYTES];
            let n = input.len().min(blob::BLOB_BYTES);
            bytes[..n].copy_from_slice(&input[..n]);
            let blob = alloy_eips::eip4844::Blob::from_slice(&bytes);
            match blob::decode_blob(&blob) {
                Ok(decoded) => {
                    // What decodes encodes to a blob that decodes the same
                    // (not always the same blob: like op-service, the
                    // decoder ignores the first byte's top bits).
                    let again = blob::encode_blob(&decoded).expect("fits");
                    assert_eq!(blob::decode_blob(&again).expect("decodes"), decoded);
                    true
                }
                Err(e) => {
                    let _ = e.to_string();
                    false
                }
            }
        }
        1 => match frame::decode_payload(input) {
            Ok(frames) => {
                assert!(!frames.is_empty());
                assert_eq!(frame::encode_payload(&frames), input);
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        },
        2 => match channel::decode_channel_bytes(input) {
            Ok(batches) => {
                assert!(batches.len() <= channel::CHANNEL_BATCHES_MAX);
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        },
        3 => match span_batch::decode(input, &chain) {
            Ok(batch) => {
                // What decodes re-encodes to the same bytes.
                assert_eq!(span_batch::encode(&batch).expect("re-encodes"), input);
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        },
        _ => match record::DaRecord::decode(input) {
            Ok(record) => {
                assert_eq!(record.encode(), input);
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        },
    }
}
