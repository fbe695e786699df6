use super::*;

use alloy_consensus::{
    SignableTransaction, Signed, TxEip1559, TxEip2930, TxEip4844, TxEip4844Variant, TxEip7702,
    TxLegacy,
};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_eips::eip7702::Authorization;
use alloy_network::TxSignerSync;
use alloy_primitives::{Address, Bytes, Signature, TxKind, U256, keccak256};
use alloy_signer::SignerSync;
use alloy_signer_local::{MnemonicBuilder, PrivateKeySigner, coins_bip39::English};

pub(crate) const CHAIN_ID: u64 = 4242;
const CHAIN: SpanChain = SpanChain {
    genesis_timestamp: 1_700_000_000,
    block_time_secs: 2,
    chain_id: CHAIN_ID,
};
const MNEMONIC: &str = "test test test test test test test test test test test junk";
const GWEI: u128 = 1_000_000_000;

pub(crate) fn signer(index: u32) -> PrivateKeySigner {
    MnemonicBuilder::<English>::default()
        .phrase(MNEMONIC)
        .index(index)
        .unwrap()
        .build()
        .unwrap()
}

fn sign<T: SignableTransaction<Signature>>(signer: &PrivateKeySigner, mut tx: T) -> Signed<T> {
    let sig = signer.sign_transaction_sync(&mut tx).unwrap();
    tx.into_signed(sig)
}

fn legacy(s: &PrivateKeySigner, nonce: u64, protected: bool, to: TxKind) -> TxEnvelope {
    let tx = TxLegacy {
        chain_id: protected.then_some(CHAIN_ID),
        nonce,
        gas_price: 7 * GWEI,
        gas_limit: 90_000,
        to,
        value: U256::from(5u64 + nonce),
        input: Bytes::from_static(&[0, 1, 2, 0]),
    };
    sign(s, tx).into()
}

fn access_list() -> AccessList {
    AccessList(vec![AccessListItem {
        address: Address::repeat_byte(0x33),
        storage_keys: vec![B256::repeat_byte(0x44), B256::ZERO],
    }])
}

fn eip2930(s: &PrivateKeySigner, nonce: u64, to: TxKind) -> TxEnvelope {
    let input = if to.is_create() {
        vec![0x60, 0x00, 0x60, 0x00, 0xf3]
    } else {
        vec![]
    };
    let tx = TxEip2930 {
        chain_id: CHAIN_ID,
        nonce,
        gas_price: 3 * GWEI,
        gas_limit: 60_000,
        to,
        value: U256::ZERO,
        access_list: access_list(),
        input: input.into(),
    };
    sign(s, tx).into()
}

pub(crate) fn eip1559(s: &PrivateKeySigner, nonce: u64, to: TxKind, input: Vec<u8>) -> TxEnvelope {
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: 21_000 + 16 * input.len() as u64,
        max_fee_per_gas: 2 * GWEI,
        max_priority_fee_per_gas: GWEI,
        to,
        value: U256::from(1_000_000_000_000_000_000u64),
        access_list: if input.is_empty() {
            AccessList::default()
        } else {
            access_list()
        },
        input: input.into(),
    };
    sign(s, tx).into()
}

fn eip7702(s: &PrivateKeySigner, nonce: u64) -> TxEnvelope {
    let auth = Authorization {
        chain_id: U256::from(CHAIN_ID),
        address: Address::repeat_byte(0x77),
        nonce: nonce + 1,
    };
    let auth_sig = s.sign_hash_sync(&auth.signature_hash()).unwrap();
    let tx = TxEip7702 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: 80_000,
        max_fee_per_gas: 2 * GWEI,
        max_priority_fee_per_gas: GWEI,
        to: s.address(),
        value: U256::ZERO,
        access_list: AccessList::default(),
        authorization_list: vec![auth.into_signed(auth_sig)],
        input: Bytes::from_static(&[0xde, 0xad]),
    };
    sign(s, tx).into()
}

pub(crate) fn call(byte: u8) -> TxKind {
    TxKind::Call(Address::repeat_byte(byte))
}

/// Blocks 0..5 with zero, some and many txs of every carried type.
fn mixed_blocks() -> Vec<SpanBlockInput> {
    let (a, b, c) = (signer(0), signer(1), signer(2));
    let txs: Vec<Vec<TxEnvelope>> = vec![
        vec![
            legacy(&a, 0, true, call(1)),
            legacy(&a, 1, false, call(2)),
            eip2930(&b, 0, call(3)),
            eip1559(&c, 0, call(4), vec![]),
        ],
        vec![],
        (0..40)
            .map(|n| match n % 7 {
                0 => legacy(&a, 2 + n, n % 2 == 0, TxKind::Create),
                1 => eip2930(&b, 1 + n, TxKind::Create),
                2 => eip1559(
                    &c,
                    1 + n,
                    TxKind::Create,
                    vec![0x60, 0x01, 0x60, 0x00, 0x55],
                ),
                3 => eip1559(&c, 1 + n, call(n as u8), vec![0xa9, 0x05, 0x9c, 0xbb]),
                4 => legacy(&a, 2 + n, false, call(9)),
                5 => eip7702(&b, 1 + n),
                _ => eip1559(&a, 2 + n, call(0xee), vec![]),
            })
            .collect(),
        vec![],
        vec![eip7702(&c, 100)],
    ];
    let origins = [10u64, 10, 11, 12, 12];
    txs.into_iter()
        .enumerate()
        .map(|(i, txs)| SpanBlockInput {
            timestamp: CHAIN.genesis_timestamp + 100 + 2 * i as u64,
            l1_origin: BlockNumHash {
                number: origins[i],
                hash: B256::repeat_byte(0xb0 + origins[i] as u8),
            },
            txs,
        })
        .collect()
}

fn parent() -> SpanParent {
    SpanParent {
        hash: B256::repeat_byte(0xaa),
        l1_origin_num: 9,
    }
}

fn mixed_batch() -> SpanBatch {
    SpanBatch::from_blocks(mixed_blocks(), parent(), CHAIN).unwrap()
}

/// Asserts each tx came back with the same EIP-2718 bytes and hash.
fn assert_same_txs(a: &SpanBatch, b: &SpanBatch) {
    assert_eq!(a.blocks.len(), b.blocks.len());
    for (x, y) in a.blocks.iter().zip(&b.blocks) {
        assert_eq!(x.txs.len(), y.txs.len());
        for (tx, back) in x.txs.iter().zip(&y.txs) {
            assert_eq!(tx.encoded_2718(), back.encoded_2718());
            assert_eq!(tx.tx_hash(), back.tx_hash());
            assert_eq!(sender(tx), sender(back));
        }
    }
}

/// The tx's sender, recovered from its signature (k256, in tests only).
fn sender(tx: &TxEnvelope) -> Address {
    let (sig, prehash) = match tx {
        TxEnvelope::Legacy(s) => (s.signature(), s.signature_hash()),
        TxEnvelope::Eip2930(s) => (s.signature(), s.signature_hash()),
        TxEnvelope::Eip1559(s) => (s.signature(), s.signature_hash()),
        TxEnvelope::Eip7702(s) => (s.signature(), s.signature_hash()),
        TxEnvelope::Eip4844(s) => (s.signature(), s.signature_hash()),
    };
    sig.recover_address_from_prehash(&prehash).unwrap()
}

#[test]
fn round_trip_mixed_blocks() {
    let batch = mixed_batch();
    assert_eq!(batch.tx_count(), 45);
    assert!(batch.first_origin_changed);
    assert_eq!(batch.parent_check, FixedBytes::from([0xaa; 20]));
    assert_eq!(batch.l1_origin_check, FixedBytes::from([0xbc; 20]));
    let bytes = encode(&batch).unwrap();
    let back = decode(&bytes, &CHAIN).unwrap();
    assert_eq!(back, batch);
    assert_same_txs(&batch, &back);
    assert_eq!(encode(&back).unwrap(), bytes);
    let signers: Vec<Address> = (0..3).map(|i| signer(i).address()).collect();
    for tx in back.blocks.iter().flat_map(|b| &b.txs) {
        assert!(signers.contains(&sender(tx)), "{tx:?}");
    }
    assert_eq!(back.blocks[2].l1_origin_num, 11);
    assert_eq!(back.blocks[4].timestamp, CHAIN.genesis_timestamp + 108);
}

#[test]
fn round_trip_channel_form() {
    let batch = mixed_batch();
    let bytes = encode(&batch).unwrap();
    let channel = encode_channel_batch(&batch).unwrap();
    // An RLP string of 0x01 ++ span batch.
    let mut rest = channel.as_slice();
    let header = Header::decode(&mut rest).unwrap();
    assert!(!header.list);
    assert_eq!(header.payload_length, bytes.len() + 1);
    assert_eq!(rest[0], SPAN_BATCH_TYPE);
    assert_eq!(&rest[1..], bytes.as_slice());
    // What a channel's RLP byte string holds: 0x01 ++ span batch.
    let typed = encode_typed(&batch).unwrap();
    assert_eq!(typed.as_slice(), rest);
    assert_eq!(decode_typed(&typed, &CHAIN).unwrap(), batch);
    assert_eq!(
        decode_typed(&bytes, &CHAIN),
        Err(SpanBatchError::WrongBatchType { found: bytes[0] })
    );
    // Two batches back to back, as in a channel.
    let mut two = channel.clone();
    two.extend_from_slice(&channel);
    let mut buf = two.as_slice();
    assert_eq!(decode_channel_batch(&mut buf, &CHAIN).unwrap(), batch);
    assert_eq!(buf.len(), channel.len());
    assert_eq!(decode_channel_batch(&mut buf, &CHAIN).unwrap(), batch);
    assert!(buf.is_empty());
}

#[test]
fn one_block_without_txs() {
    let block = SpanBlockInput {
        timestamp: CHAIN.genesis_timestamp,
        l1_origin: BlockNumHash {
            number: 0,
            hash: B256::repeat_byte(1),
        },
        txs: vec![],
    };
    let parent = SpanParent {
        hash: B256::ZERO,
        l1_origin_num: 0,
    };
    let batch = SpanBatch::from_blocks(vec![block], parent, CHAIN).unwrap();
    let bytes = encode(&batch).unwrap();
    // rel_timestamp, l1_origin_num, two checks, block_count, origin_bits,
    // one tx count; the txs section of zero txs is empty.
    assert_eq!(bytes.len(), 1 + 1 + 40 + 1 + 1 + 1);
    assert_eq!(decode(&bytes, &CHAIN).unwrap(), batch);
}

const HAND_CHAIN: SpanChain = SpanChain {
    genesis_timestamp: 1000,
    block_time_secs: 2,
    chain_id: 10,
};

/// Four txs in three blocks, with made-up signatures (the codec does not
/// check them).
fn hand_batch() -> SpanBatch {
    let chain = HAND_CHAIN;
    let sig = |r: u64, s: u64, y: bool| Signature::new(U256::from(r), U256::from(s), y);
    let tx0 = TxLegacy {
        chain_id: Some(10),
        nonce: 5,
        gas_price: 3,
        gas_limit: 21_000,
        to: call(0x11),
        value: U256::from(1),
        input: Bytes::new(),
    };
    let tx1 = TxEip1559 {
        chain_id: 10,
        nonce: 300,
        gas_limit: 100_000,
        max_fee_per_gas: 2,
        max_priority_fee_per_gas: 1,
        to: TxKind::Create,
        value: U256::ZERO,
        access_list: AccessList::default(),
        input: Bytes::from_static(&[0x60, 0x00]),
    };
    let tx2 = TxEip2930 {
        chain_id: 10,
        nonce: 0,
        gas_price: 5,
        gas_limit: 30_000,
        to: call(0x22),
        value: U256::ZERO,
        access_list: AccessList(vec![AccessListItem {
            address: Address::repeat_byte(0x33),
            storage_keys: vec![B256::repeat_byte(0x44)],
        }]),
        input: Bytes::new(),
    };
    let tx3 = TxLegacy {
        chain_id: None,
        nonce: 1,
        gas_price: 0,
        gas_limit: 21_000,
        to: call(0x11),
        value: U256::from(0x0100),
        input: Bytes::new(),
    };
    let block = |timestamp, l1_origin_num, txs| SpanBlock {
        timestamp,
        l1_origin_num,
        txs,
    };
    SpanBatch {
        chain,
        parent_check: FixedBytes::from([0xaa; 20]),
        l1_origin_check: FixedBytes::from([0xbb; 20]),
        first_origin_changed: true,
        blocks: vec![
            block(
                1004,
                7,
                vec![
                    TxEnvelope::Legacy(Signed::new_unhashed(tx0, sig(1, 2, true))),
                    TxEnvelope::Eip1559(Signed::new_unhashed(tx1, sig(3, 4, false))),
                ],
            ),
            block(1006, 8, vec![]),
            block(
                1008,
                8,
                vec![
                    TxEnvelope::Eip2930(Signed::new_unhashed(tx2, sig(5, 6, true))),
                    TxEnvelope::Legacy(Signed::new_unhashed(tx3, sig(7, 8, false))),
                ],
            ),
        ],
    }
}

/// [`hand_batch`] encoded by hand from the spec, field by field.
fn hand_bytes() -> Vec<u8> {
    let word = |v: u8| {
        let mut w = [0u8; 32];
        w[31] = v;
        w
    };
    let mut expected = vec![];
    expected.extend([0x04, 0x08]); // rel_timestamp 1004 - 1000, l1_origin_num 8
    expected.extend([0xaa; 20]); // parent_check
    expected.extend([0xbb; 20]); // l1_origin_check
    expected.push(0x03); // block_count
    expected.push(0b011); // origin_bits: block 0 moved on from its parent's origin, block 1 7 -> 8, block 2 stays
    expected.extend([0x02, 0x00, 0x02]); // block_tx_counts
    expected.push(0b0010); // contract_creation_bits: tx 1
    expected.push(0b0101); // y_parity_bits: txs 0 and 2
    for v in 1..=8 {
        expected.extend(word(v)); // tx_sigs: r, s of each tx
    }
    expected.extend([0x11; 20]); // tx_tos: tx 0
    expected.extend([0x22; 20]); // tx 2
    expected.extend([0x11; 20]); // tx 3
    expected.extend([0xc3, 0x01, 0x03, 0x80]); // tx_datas: legacy [value 1, gas price 3, data ""]
    expected.extend([0x02, 0xc7, 0x80, 0x01, 0x02, 0x82, 0x60, 0x00, 0xc0]); // 1559 [0, tip 1, cap 2, data, []]
    expected.extend([0x01, 0xf8, 0x3d, 0x80, 0x05, 0x80, 0xf8, 0x38, 0xf7, 0x94]); // 2930 [0, 5, "", [[addr,
    expected.extend([0x33; 20]);
    expected.extend([0xe1, 0xa0]); // [key]]]]
    expected.extend([0x44; 32]);
    expected.extend([0xc5, 0x82, 0x01, 0x00, 0x80, 0x80]); // legacy [0x0100, 0, ""]
    expected.extend([0x05, 0xac, 0x02, 0x00, 0x01]); // tx_nonces 5, 300, 0, 1
    expected.extend([
        0x88, 0xa4, 0x01, 0xa0, 0x8d, 0x06, 0xb0, 0xea, 0x01, 0x88, 0xa4, 0x01,
    ]); // tx_gases
    expected.push(0b01); // protected_bits: legacy tx 0 is EIP-155, legacy tx 3 is not
    expected
}

#[test]
fn hand_built_vector() {
    let (batch, expected, chain) = (hand_batch(), hand_bytes(), HAND_CHAIN);
    assert_eq!(encode(&batch).unwrap(), expected);
    let back = decode(&expected, &chain).unwrap();
    assert_eq!(back, batch);
    // The protected legacy tx is rebuilt with v = 2 * 10 + 35 + 1.
    let TxEnvelope::Legacy(legacy) = &back.blocks[0].txs[0] else {
        panic!("not legacy")
    };
    assert_eq!(legacy.tx().chain_id, Some(10));
    let encoded = legacy.encoded_2718();
    assert_eq!(&encoded[encoded.len() - 3..], &[56, 0x01, 0x02]);
    assert_same_hashes(&batch, &back);
}

fn assert_same_hashes(a: &SpanBatch, b: &SpanBatch) {
    for (x, y) in a
        .blocks
        .iter()
        .flat_map(|b| &b.txs)
        .zip(b.blocks.iter().flat_map(|b| &b.txs))
    {
        assert_eq!(x.encoded_2718(), y.encoded_2718());
        assert_eq!(x.tx_hash(), y.tx_hash());
    }
}

#[test]
fn blob_txs_are_refused() {
    let tx = TxEip4844 {
        chain_id: CHAIN_ID,
        to: Address::repeat_byte(1),
        blob_versioned_hashes: vec![B256::repeat_byte(1)],
        max_fee_per_blob_gas: 1,
        ..Default::default()
    };
    let signed = Signed::new_unhashed(
        TxEip4844Variant::TxEip4844(tx),
        Signature::new(U256::from(1), U256::from(2), false),
    );
    let mut blocks = mixed_blocks();
    blocks[1].txs.push(TxEnvelope::Eip4844(signed));
    let batch = SpanBatch::from_blocks(blocks, parent(), CHAIN).unwrap();
    assert_eq!(
        encode(&batch),
        Err(SpanBatchError::UnsupportedTxType { index: 4, ty: 3 })
    );
}

#[test]
fn other_chains_txs_are_refused() {
    let other = SpanChain {
        chain_id: 1,
        ..CHAIN
    };
    let batch = SpanBatch {
        chain: other,
        ..mixed_batch()
    };
    assert_eq!(
        encode(&batch),
        Err(SpanBatchError::ChainIdMismatch {
            index: 0,
            found: CHAIN_ID,
            expected: 1
        })
    );
    // An unprotected legacy tx has no chain id: any chain can carry it.
    let s = signer(0);
    let mut only_unprotected = mixed_batch();
    only_unprotected.chain = other;
    only_unprotected.blocks = vec![SpanBlock {
        timestamp: CHAIN.genesis_timestamp,
        l1_origin_num: 1,
        txs: vec![legacy(&s, 0, false, call(1))],
    }];
    let bytes = encode(&only_unprotected).unwrap();
    assert_eq!(decode(&bytes, &other).unwrap(), only_unprotected);
}

#[test]
fn irregular_spans_are_refused() {
    let mut gap = mixed_blocks();
    gap[3].timestamp += 1;
    assert_eq!(
        SpanBatch::from_blocks(gap.clone(), parent(), CHAIN),
        Err(SpanBatchError::IrregularTimestamp {
            index: 3,
            expected: CHAIN.genesis_timestamp + 106,
            found: CHAIN.genesis_timestamp + 107
        })
    );
    assert_eq!(span_len(&gap, CHAIN.block_time_secs), 3);
    let mut jump = mixed_blocks();
    jump[2].l1_origin.number = 12;
    assert_eq!(
        SpanBatch::from_blocks(jump.clone(), parent(), CHAIN),
        Err(SpanBatchError::OriginStep {
            index: 2,
            previous: 10,
            found: 12
        })
    );
    assert_eq!(span_len(&jump, CHAIN.block_time_secs), 2);
    let mut back = mixed_blocks();
    back[4].l1_origin.number = 11;
    assert_eq!(span_len(&back, CHAIN.block_time_secs), 4);
    assert_eq!(span_len(&mixed_blocks(), CHAIN.block_time_secs), 5);
    assert_eq!(span_len(&[], CHAIN.block_time_secs), 0);
    assert_eq!(
        SpanBatch::from_blocks(vec![], parent(), CHAIN),
        Err(SpanBatchError::Empty)
    );
    let early = SpanChain {
        genesis_timestamp: u64::MAX,
        ..CHAIN
    };
    assert!(matches!(
        SpanBatch::from_blocks(mixed_blocks(), parent(), early),
        Err(SpanBatchError::BeforeGenesis { .. })
    ));
    let zero = SpanChain {
        block_time_secs: 0,
        ..CHAIN
    };
    assert_eq!(
        SpanBatch::from_blocks(mixed_blocks(), parent(), zero),
        Err(SpanBatchError::ZeroBlockTime)
    );
    // The first block may jump from its parent's origin: origin_bits[0] only says it moved.
    let far = SpanParent {
        l1_origin_num: 2,
        ..parent()
    };
    let batch = SpanBatch::from_blocks(mixed_blocks(), far, CHAIN).unwrap();
    assert_eq!(decode(&encode(&batch).unwrap(), &CHAIN).unwrap(), batch);
    let same = SpanParent {
        l1_origin_num: 10,
        ..parent()
    };
    let batch = SpanBatch::from_blocks(mixed_blocks(), same, CHAIN).unwrap();
    assert!(!batch.first_origin_changed);
    assert_eq!(decode(&encode(&batch).unwrap(), &CHAIN).unwrap(), batch);
}

#[test]
fn every_truncation_is_an_error() {
    let batch = mixed_batch();
    let bytes = encode(&batch).unwrap();
    for len in 0..bytes.len() {
        let err = decode(&bytes[..len], &CHAIN).unwrap_err();
        assert!(
            matches!(
                err,
                SpanBatchError::Truncated { .. } | SpanBatchError::TxData { .. }
            ),
            "{len}: {err}"
        );
    }
    let channel = encode_channel_batch(&batch).unwrap();
    for len in 0..channel.len() {
        let mut buf = &channel[..len];
        assert!(decode_channel_batch(&mut buf, &CHAIN).is_err(), "{len}");
        assert_eq!(buf.len(), len, "a failed decode leaves the buffer alone");
    }
}

#[test]
fn decode_errors_name_the_field() {
    let bytes = encode(&mixed_batch()).unwrap();
    let err = decode(&bytes[..15], &CHAIN).unwrap_err();
    assert_eq!(
        err,
        SpanBatchError::Truncated {
            field: "parent_check",
            offset: 2,
            needed: 20,
            left: 13
        }
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(
        decode(&trailing, &CHAIN),
        Err(SpanBatchError::TrailingBytes {
            offset: bytes.len(),
            count: 1
        })
    );
    // origin_bits with a bit past block_count (5 blocks: the top 3 bits are padding).
    let mut padded = bytes.clone();
    padded[43] |= 0x80;
    assert_eq!(
        decode(&padded, &CHAIN),
        Err(SpanBatchError::BitsPastEnd {
            field: "origin_bits",
            offset: 43,
            bits: 5
        })
    );
    // A non-minimal uvarint for rel_timestamp (0x80 0x00 is 0).
    assert_eq!(
        decode(&[0x80, 0x00], &CHAIN),
        Err(SpanBatchError::VarintNotMinimal {
            field: "rel_timestamp",
            offset: 0
        })
    );
    let overflow = [0xff; 10];
    assert_eq!(
        decode(&overflow, &CHAIN),
        Err(SpanBatchError::VarintOverflow {
            field: "rel_timestamp",
            offset: 0
        })
    );
    assert!(matches!(
        decode_channel_batch(&mut &[0xc0][..], &CHAIN),
        Err(SpanBatchError::BatchRlp { .. })
    ));
    assert_eq!(
        decode_channel_batch(&mut &[0x82, 0x00, 0x00][..], &CHAIN),
        Err(SpanBatchError::WrongBatchType { found: 0 })
    );
}

/// A prefix whose counts come from `counts`, and nothing after them.
fn header_with(counts: &[u64]) -> Vec<u8> {
    let mut out = vec![0x01, 0x01];
    out.extend([0u8; 40]);
    for &c in counts {
        put_uvarint(&mut out, c);
    }
    out
}

#[test]
fn untrusted_counts_allocate_nothing_big() {
    let huge = vec![0u8; SPAN_BATCH_BYTES_MAX + 1];
    assert_eq!(
        decode(&huge, &CHAIN),
        Err(SpanBatchError::TooLarge {
            len: huge.len(),
            max: SPAN_BATCH_BYTES_MAX
        })
    );
    let max = SPAN_BATCH_ELEMENTS_MAX;
    let err = decode(&header_with(&[max + 1]), &CHAIN).unwrap_err();
    assert_eq!(
        err,
        SpanBatchError::TooManyElements {
            field: "block_count",
            offset: 42,
            count: max + 1,
            max
        }
    );
    assert_eq!(
        decode(&header_with(&[0]), &CHAIN),
        Err(SpanBatchError::Empty)
    );
    // The most blocks, with nothing behind them.
    assert!(matches!(
        decode(&header_with(&[max]), &CHAIN),
        Err(SpanBatchError::Truncated {
            field: "origin_bits",
            ..
        })
    ));
    // One block of the most txs: refused before any tx is read.
    let mut one = header_with(&[1]);
    one.push(0);
    put_uvarint(&mut one, max);
    one.extend([0u8; 64]);
    assert!(matches!(
        decode(&one, &CHAIN),
        Err(SpanBatchError::Truncated {
            field: "contract_creation_bits",
            ..
        })
    ));
    // With the bitlists there, tx_sigs is refused: 640 MB are not there.
    one.extend(vec![0u8; 2 * 1_250_000]);
    assert!(matches!(
        decode(&one, &CHAIN),
        Err(SpanBatchError::Truncated {
            field: "tx_sigs",
            ..
        })
    ));
    // Tx counts that sum past the limit.
    let mut two = header_with(&[2]);
    two.push(0);
    put_uvarint(&mut two, max);
    put_uvarint(&mut two, 1);
    assert!(matches!(
        decode(&two, &CHAIN),
        Err(SpanBatchError::TooManyElements { field: "block_tx_counts", count, .. }) if count == max + 1
    ));
}

#[test]
fn decoded_set_code_tx_must_have_a_to() {
    let s = signer(3);
    let block = SpanBlock {
        timestamp: CHAIN.genesis_timestamp,
        l1_origin_num: 1,
        txs: vec![eip7702(&s, 0)],
    };
    let batch = SpanBatch {
        blocks: vec![block],
        ..mixed_batch()
    };
    let mut bytes = encode(&batch).unwrap();
    // 2 varints, 40 check bytes, block_count, origin_bits, one tx count: then contract_creation_bits.
    assert_eq!(bytes[45], 0);
    bytes[45] = 1;
    // With the bit set, the decoder reads no `to`: the rest shifts, so cut the 20 bytes out.
    bytes.drain(47 + 64..47 + 64 + 20);
    assert_eq!(
        decode(&bytes, &CHAIN),
        Err(SpanBatchError::SetCodeCreate { index: 0 })
    );
}

/// xorshift64*: a deterministic byte stream for the arbitrary-input tests.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Anything `decode` accepts, `encode` gives back byte for byte.
fn check_arbitrary(input: &[u8]) -> bool {
    match decode(input, &CHAIN) {
        Ok(batch) => {
            assert_eq!(
                encode(&batch).unwrap(),
                input,
                "decode accepted a non-canonical encoding"
            );
            true
        }
        Err(_) => false,
    }
}

#[test]
fn arbitrary_bytes_are_errors_not_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..10_000 {
        let len = rng.below(400);
        let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check_arbitrary(&input);
        let mut buf = input.as_slice();
        let _ = decode_channel_batch(&mut buf, &CHAIN);
    }
}

#[test]
fn mutated_batches_are_errors_or_canonical() {
    let valid = encode(&mixed_batch()).unwrap();
    let channel = encode_channel_batch(&mixed_batch()).unwrap();
    let mut rng = XorShift(0x0123_4567_89ab_cdef);
    let mut accepted = 0;
    for round in 0..10_000 {
        let mut input = if round % 4 == 0 {
            channel.clone()
        } else {
            valid.clone()
        };
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(input.len());
            match rng.below(4) {
                0 => input[at] ^= 1 << rng.below(8),
                1 => input[at] = rng.next() as u8,
                2 => input.truncate(at),
                _ => input.insert(at, rng.next() as u8),
            }
            if input.is_empty() {
                break;
            }
        }
        if round % 4 == 0 {
            let _ = decode_channel_batch(&mut input.as_slice(), &CHAIN);
        } else if check_arbitrary(&input) {
            accepted += 1;
        }
    }
    // Flips inside signatures, addresses and values still decode.
    assert!(accepted > 100, "{accepted}");
}

/// The bytes a span batch spends per simple ETH transfer (EIP-1559, 1 ETH,
/// 1 gwei tip, 2 gwei cap, 21,000 gas), before compression, against the
/// same txs as EIP-2718 envelopes.
#[test]
fn bytes_per_eth_transfer() {
    const TXS: usize = 1000;
    let s = signer(4);
    let mut rng = XorShift(7);
    let txs: Vec<TxEnvelope> = (0..TXS as u64)
        .map(|nonce| {
            let mut to = [0u8; 20];
            to.iter_mut().for_each(|b| *b = rng.next() as u8);
            eip1559(&s, nonce, TxKind::Call(Address::from(to)), vec![])
        })
        .collect();
    let plain: usize = txs.iter().map(|tx| tx.encode_2718_len()).sum();
    let block = |txs| SpanBlockInput {
        timestamp: CHAIN.genesis_timestamp,
        l1_origin: BlockNumHash {
            number: 1,
            hash: B256::repeat_byte(1),
        },
        txs,
    };
    let empty =
        encode(&SpanBatch::from_blocks(vec![block(vec![])], parent(), CHAIN).unwrap()).unwrap();
    let full = SpanBatch::from_blocks(vec![block(txs)], parent(), CHAIN).unwrap();
    let bytes = encode(&full).unwrap();
    let per_tx = (bytes.len() - empty.len()) as f64 / TXS as f64;
    let plain_per_tx = plain as f64 / TXS as f64;
    println!(
        "span batch: {per_tx:.2} bytes per ETH transfer; EIP-2718 envelope: {plain_per_tx:.2} bytes"
    );
    // 64 signature + 20 to + 2/8 bits + ~23 tx_data + 1-2 nonce + 3 gas.
    assert!(per_tx < 114.0, "{per_tx}");
    assert!(per_tx < plain_per_tx);
    assert_eq!(decode(&bytes, &CHAIN).unwrap(), full);
}

/// OP's published span batches, read from `$FULMEN_OP_SPAN_VECTORS` (not
/// kept in this repository): `raw_batch.hex`, the raw span batch (binary,
/// no type byte) that kona's `RawSpanBatch` test decodes and re-encodes,
/// taken from op-node; and `batch.hex`, kona's zlib channel (hex) holding
/// one span batch. Each must decode and re-encode to the same bytes.
#[test]
fn op_vectors_round_trip() {
    let Ok(dir) = std::env::var("FULMEN_OP_SPAN_VECTORS") else {
        println!("FULMEN_OP_SPAN_VECTORS is not set: OP span batch vectors skipped");
        return;
    };
    let dir = std::path::Path::new(&dir);
    // Any chain id: nothing in the bytes depends on it.
    let chain = SpanChain {
        genesis_timestamp: 0,
        block_time_secs: 2,
        chain_id: 10,
    };
    let raw = std::fs::read(dir.join("raw_batch.hex")).unwrap();
    assert_eq!(keccak256(&raw), RAW_BATCH_KECCAK);
    let batch = decode(&raw, &chain).unwrap();
    println!(
        "raw_batch: {} bytes, {} blocks, txs by type {:?}",
        raw.len(),
        batch.blocks.len(),
        tx_types(&batch)
    );
    assert_eq!(encode(&batch).unwrap(), raw);

    let hex = std::fs::read_to_string(dir.join("batch.hex")).unwrap();
    let zlib = alloy_primitives::hex::decode(hex.trim()).unwrap();
    let channel = miniz_oxide::inflate::decompress_to_vec_zlib(&zlib).unwrap();
    assert_eq!(keccak256(&channel), CHANNEL_KECCAK);
    let mut buf = channel.as_slice();
    let batch = decode_channel_batch(&mut buf, &chain).unwrap();
    assert!(buf.is_empty());
    println!(
        "batch.hex: {} bytes, {} blocks, txs by type {:?}",
        channel.len(),
        batch.blocks.len(),
        tx_types(&batch)
    );
    assert_eq!(encode_channel_batch(&batch).unwrap(), channel);
}

/// Txs by type: legacy unprotected, legacy EIP-155, 2930, 1559, 7702.
fn tx_types(batch: &SpanBatch) -> [usize; 5] {
    let mut out = [0; 5];
    for tx in batch.blocks.iter().flat_map(|b| &b.txs) {
        let slot = match tx {
            TxEnvelope::Legacy(s) if s.tx().chain_id.is_none() => 0,
            TxEnvelope::Legacy(_) => 1,
            TxEnvelope::Eip2930(_) => 2,
            TxEnvelope::Eip1559(_) => 3,
            _ => 4,
        };
        out[slot] += 1;
    }
    out
}

const RAW_BATCH_KECCAK: B256 =
    alloy_primitives::b256!("0x055daf76e79649aefcb15c9872f6792e4e66f32f5a617144e464979215313b2c");
const CHANNEL_KECCAK: B256 =
    alloy_primitives::b256!("0x9a71de6b4848ff687351618e5c795832b111f0031cdc76c4e8528cc3335e0ed9");

#[test]
fn bitlist_and_uvarint_bytes() {
    let mut bits = super::wire::BitsWriter::with_capacity(10);
    for b in [1, 0, 1, 1, 0, 0, 0, 0, 0, 1] {
        bits.push(b == 1);
    }
    let mut out = vec![];
    bits.write(&mut out);
    assert_eq!(out, [0x02, 0x0d]);
    let mut r = super::wire::Reader::new(&out);
    let read = r.bits(10, "test").unwrap();
    assert_eq!(
        (0..10).map(|i| u8::from(read.get(i))).collect::<Vec<_>>(),
        [1, 0, 1, 1, 0, 0, 0, 0, 0, 1]
    );
    assert_eq!(read.count_ones(), 4);
    for (value, bytes) in [
        (0u64, vec![0x00]),
        (127, vec![0x7f]),
        (128, vec![0x80, 0x01]),
        (300, vec![0xac, 0x02]),
        (
            u64::MAX,
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
    ] {
        let mut out = vec![];
        put_uvarint(&mut out, value);
        assert_eq!(out, bytes);
        assert_eq!(
            super::wire::Reader::new(&bytes).uvarint("test").unwrap(),
            value
        );
    }
}

#[test]
fn bad_tx_datas_are_refused() {
    let bytes = hand_bytes();
    // prefix 42, block_count, origin_bits, 3 tx counts, 2 bitlists, 4 sigs, 3 tos.
    let at = 42 + 1 + 1 + 3 + 1 + 1 + 4 * 64 + 3 * 20;
    assert_eq!(bytes[at..at + 4], [0xc3, 0x01, 0x03, 0x80]);
    let with = |replacement: &[u8]| {
        let mut b = bytes.clone();
        b.splice(at..at + 4, replacement.iter().copied());
        decode(&b, &HAND_CHAIN)
    };
    // A fourth field in a legacy tx's list.
    assert_eq!(
        with(&[0xc4, 0x01, 0x03, 0x80, 0x80]),
        Err(SpanBatchError::TxData {
            index: 0,
            offset: at,
            source: alloy_rlp::Error::ListLengthMismatch {
                expected: 4,
                got: 3
            }
        })
    );
    // A string where the list should be.
    assert!(matches!(
        with(&[0x83, 0x01, 0x03, 0x80]),
        Err(SpanBatchError::TxData {
            index: 0,
            source: alloy_rlp::Error::UnexpectedString,
            ..
        })
    ));
    // A missing field.
    assert!(matches!(
        with(&[0xc2, 0x01, 0x03]),
        Err(SpanBatchError::TxData { index: 0, .. })
    ));
    // Blob, deposit and unknown tx types.
    for ty in [0x00, 0x03, 0x05, 0x7e, 0x7f] {
        assert_eq!(
            with(&[ty, 0xc3, 0x01, 0x03, 0x80]),
            Err(SpanBatchError::UnsupportedTxType { index: 0, ty })
        );
    }
    // A gas price over u128.
    let mut big = vec![0xd4, 0x01, 0x91, 0x01];
    big.extend([0u8; 16]);
    big.push(0x80);
    assert!(matches!(
        with(&big),
        Err(SpanBatchError::TxData { index: 0, .. })
    ));
}

#[test]
fn random_tails_after_a_valid_head_are_errors_or_canonical() {
    let valid = encode(&mixed_batch()).unwrap();
    // Everything up to the first signature: prefix, counts and the bitlists.
    let head = &valid[..42 + 1 + 1 + 5 + 6 + 6];
    let mut rng = XorShift(0xfeed_f00d);
    for _ in 0..10_000 {
        let mut input = head.to_vec();
        let tail = rng.below(45 * 150);
        input.extend((0..tail).map(|_| rng.next() as u8));
        // Keep the signatures and `to`s random, make the rest RLP-ish.
        let data_at = head.len() + 45 * 64 + 30 * 20;
        if input.len() > data_at {
            for b in &mut input[data_at..] {
                if *b > 0xc0 && rng.below(2) == 0 {
                    *b = 0xc0 + (*b & 0x07);
                }
            }
        }
        check_arbitrary(&input);
    }
}
