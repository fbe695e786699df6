//! The pipeline end to end: every block pushed comes back, in order and
//! once, from the blobs alone, through the decoders (blob, frame, channel,
//! span batch); gaps and forks are refused; channels chain without gaps.

use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{B256, keccak256};

use super::*;
use crate::blob::decode_blob;
use crate::channel::read_channel;
use crate::frame::decode_payload;
use crate::span_batch::decode_channel_batch;
use crate::span_batch::tests::{CHAIN_ID, call, eip1559, signer};

const CHAIN: SpanChain = SpanChain {
    genesis_timestamp: 0,
    block_time_secs: 1,
    chain_id: CHAIN_ID,
};

fn origin(number: u64) -> BlockNumHash {
    BlockNumHash {
        number,
        hash: keccak256(number.to_be_bytes()),
    }
}

/// `count` blocks after genesis with `txs_per_block` transfers each, one
/// second apart except a two-second gap after block `gap_after`.
fn chain(count: u64, txs_per_block: u64, gap_after: u64) -> Vec<L2Block> {
    let senders: Vec<_> = (0..4).map(signer).collect();
    let mut nonces = [0u64; 4];
    let mut parent = B256::ZERO;
    let mut timestamp = 1_700_000_000;
    (1..=count)
        .map(|number| {
            let txs = (0..txs_per_block)
                .map(|i| {
                    let from = ((number + i) % 4) as usize;
                    nonces[from] += 1;
                    eip1559(
                        &senders[from],
                        nonces[from] - 1,
                        call((i % 200) as u8 + 1),
                        Vec::new(),
                    )
                })
                .collect();
            let hash = keccak256([parent.as_slice(), &number.to_be_bytes()].concat());
            let block = L2Block {
                number,
                hash,
                parent_hash: parent,
                timestamp,
                l1_origin: origin(100 + number / 10),
                txs,
                header: alloy_consensus::Header {
                    number,
                    parent_hash: parent,
                    timestamp,
                    ..Default::default()
                },
            };
            parent = hash;
            timestamp += if number == gap_after { 2 } else { 1 };
            block
        })
        .collect()
}

fn start() -> BatcherStart {
    BatcherStart {
        number: 0,
        hash: B256::ZERO,
        l1_origin_num: 100,
    }
}

/// Every block a channel carries, read back from its blobs alone.
fn decode_plan(plan: &ChannelPlan) -> Vec<(u64, Vec<B256>)> {
    let mut frames = Vec::new();
    for blob in plan.l1_txs.iter().flatten() {
        let payload = decode_blob(blob).expect("a valid blob");
        frames.extend(decode_payload(&payload).expect("valid frames"));
    }
    assert!(frames.iter().all(|f| f.channel_id == plan.id));
    let mut blocks = Vec::new();
    for batch in read_channel(&frames).expect("a complete channel") {
        // `read_channel` hands back `type ++ data`; the channel form wraps it.
        let mut wrapped = Vec::new();
        alloy_rlp::Header {
            list: false,
            payload_length: batch.len(),
        }
        .encode(&mut wrapped);
        wrapped.extend_from_slice(&batch);
        let span = decode_channel_batch(&mut &wrapped[..], &CHAIN).expect("a span batch");
        for block in span.blocks {
            let hashes = block
                .txs
                .iter()
                .map(|t| keccak256(t.encoded_2718()))
                .collect();
            blocks.push((block.timestamp, hashes));
        }
    }
    blocks
}

fn expected(blocks: &[L2Block]) -> Vec<(u64, Vec<B256>)> {
    blocks
        .iter()
        .map(|b| (b.timestamp, b.txs.iter().map(|t| *t.tx_hash()).collect()))
        .collect()
}

#[test]
fn every_block_comes_back_from_the_blobs_in_order_and_once() {
    let blocks = chain(40, 5, 17);
    let mut batcher = Batcher::new(CHAIN, 6, start()).unwrap();
    for block in blocks.clone() {
        batcher.push(block).unwrap();
    }
    assert!(batcher.pending_tx_bytes() > 0);
    // Forty small blocks do not fill six blobs.
    assert!(batcher.next_channel(true).unwrap().is_none());
    assert_eq!(batcher.pending_blocks(), 40);
    let plan = batcher.next_channel(false).unwrap().expect("a channel");
    assert_eq!((plan.first_block, plan.last_block), (1, 40));
    assert_eq!(plan.txs, 200);
    // The timestamp gap after block 17 starts a second span batch.
    assert_eq!(plan.batches, 2);
    assert_eq!(plan.l1_txs.len(), 1);
    assert_eq!(decode_plan(&plan), expected(&blocks));
    assert_eq!(batcher.pending_blocks(), 0);
    assert_eq!(batcher.pending_tx_bytes(), 0);
    assert!(batcher.next_channel(false).unwrap().is_none());
}

#[test]
fn full_channels_chain_without_gap_or_duplicate() {
    // 6,000 transfers: several one-blob channels.
    let blocks = chain(120, 50, 0);
    let mut batcher = Batcher::new(CHAIN, 1, start()).unwrap();
    for block in blocks.clone() {
        batcher.push(block).unwrap();
    }
    let mut next = 1;
    let mut decoded = Vec::new();
    let mut ids = Vec::new();
    while let Some(plan) = batcher.next_channel(true).unwrap() {
        assert_eq!(
            plan.first_block, next,
            "channels start where the last ended"
        );
        assert_eq!(plan.id, channel_id(CHAIN_ID, plan.first_block));
        assert!(plan.l1_txs.iter().all(|tx| tx.len() <= 1));
        // A full channel fills most of its blob.
        assert!(
            plan.channel_bytes * 10 >= FRAME_DATA_BYTES_PER_BLOB_MAX * 8,
            "a full channel of {} bytes",
            plan.channel_bytes
        );
        next = plan.last_block + 1;
        ids.push(plan.id);
        decoded.extend(decode_plan(&plan));
    }
    assert!(ids.len() >= 2, "{} channels", ids.len());
    let rest = batcher.next_channel(false).unwrap().expect("the rest");
    assert_eq!(rest.first_block, next);
    assert_eq!(rest.last_block, 120);
    decoded.extend(decode_plan(&rest));
    assert_eq!(decoded, expected(&blocks));
    ids.push(rest.id);
    let channels = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), channels, "channel ids are distinct");
}

#[test]
fn a_block_larger_than_the_target_gets_its_own_channel_over_several_txs() {
    let signer = signer(0);
    // Incompressible calldata: about 3 blobs' worth in one block.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let data: Vec<u8> = (0..380_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let tx = eip1559(&signer, 0, call(9), data);
    let block = L2Block {
        number: 1,
        hash: B256::repeat_byte(1),
        parent_hash: B256::ZERO,
        timestamp: 1_700_000_000,
        l1_origin: origin(100),
        txs: vec![tx],
        header: alloy_consensus::Header::default(),
    };
    let mut batcher = Batcher::new(CHAIN, 2, start()).unwrap();
    batcher.push(block.clone()).unwrap();
    let plan = batcher.next_channel(false).unwrap().expect("a channel");
    assert!(plan.blobs() >= 3, "{} blobs", plan.blobs());
    assert!(plan.l1_txs.len() >= 2);
    assert!(plan.l1_txs.iter().all(|tx| tx.len() <= 2));
    assert_eq!(decode_plan(&plan), expected(&[block]));
}

#[test]
fn gaps_and_forks_are_refused() {
    let blocks = chain(3, 1, 0);
    let mut batcher = Batcher::new(CHAIN, 6, start()).unwrap();
    assert!(matches!(
        batcher.push(blocks[1].clone()),
        Err(BatcherError::Gap {
            expected: 1,
            got: 2
        })
    ));
    batcher.push(blocks[0].clone()).unwrap();
    let mut fork = blocks[1].clone();
    fork.parent_hash = B256::repeat_byte(7);
    let error = batcher.push(fork).unwrap_err();
    assert!(
        error.to_string().contains("is not the previous block"),
        "{error}"
    );
    assert!(matches!(
        Batcher::new(CHAIN, 7, start()),
        Err(BatcherError::BlobsPerTx(7))
    ));
}

#[test]
fn channel_ids_are_stable_and_distinct() {
    assert_eq!(channel_id(1, 5), channel_id(1, 5));
    assert_ne!(channel_id(1, 5), channel_id(1, 6));
    assert_ne!(channel_id(1, 5), channel_id(2, 5));
}

/// Blob bytes per transfer and the pipeline's speed on one core, beside the
/// transfers' plain EIP-2718 size: `cargo nextest run --release -p fulmen-da
/// --run-ignored only measure_batcher --no-capture`.
#[test]
#[ignore = "measurement, not a check: run by hand (BENCHMARKS.md)"]
fn measure_batcher() {
    let blocks = chain(600, 50, 0);
    let txs: usize = blocks.iter().map(|b| b.txs.len()).sum();
    let plain: usize = blocks
        .iter()
        .flat_map(|b| &b.txs)
        .map(|t| t.encode_2718_len())
        .sum();
    for blobs_per_tx in [1, 6] {
        let mut batcher = Batcher::new(CHAIN, blobs_per_tx, start()).unwrap();
        for block in blocks.clone() {
            batcher.push(block).unwrap();
        }
        let began = std::time::Instant::now();
        let (mut channel_bytes, mut blobs, mut channels) = (0, 0, 0);
        while let Some(plan) = batcher.next_channel(false).unwrap() {
            channel_bytes += plan.channel_bytes;
            blobs += plan.blobs();
            channels += 1;
        }
        let secs = began.elapsed().as_secs_f64();
        println!(
            "{blobs_per_tx} blob(s) per channel: {txs} transfers in {channels} channels, {blobs} blobs; \
             plain 2718 {:.1} B/tx, channel {:.1} B/tx ({:.3} of plain), blob fill {:.3}; \
             {:.0} tx/s on one core",
            plain as f64 / txs as f64,
            channel_bytes as f64 / txs as f64,
            channel_bytes as f64 / plain as f64,
            channel_bytes as f64 / (blobs * FRAME_DATA_BYTES_PER_BLOB_MAX) as f64,
            txs as f64 / secs
        );
    }
}

/// What the DA driver relies on after a crash: the same blocks, origin,
/// parent and recipe (blocks waiting, only-if-full) build the same
/// channel, byte for byte, however many blocks waited beyond the channel
/// (brotli flushes while trying spans that do not fit).
#[test]
fn a_channel_is_rebuilt_byte_for_byte_from_its_recipe() {
    let blocks = chain(400, 60, 150);
    let mut live = Batcher::new(CHAIN, 1, start()).unwrap();
    let mut channels = Vec::new();
    let mut parent = start();
    for block in &blocks {
        live.push(block.clone()).unwrap();
    }
    while live.pending_blocks() > 0 {
        let waiting = live.pending_blocks();
        let full = waiting > 50;
        live.set_origin(origin(500 + channels.len() as u64));
        let Some(plan) = live.next_channel(full).unwrap() else {
            break;
        };
        let taken = (plan.last_block - plan.first_block + 1) as usize;
        let recipe = waiting.min(taken + SPAN_TRY_BLOCKS_MAX);
        channels.push((plan, recipe, full, parent));
        parent = BatcherStart {
            number: blocks[taken_to(&channels) - 1].number,
            hash: blocks[taken_to(&channels) - 1].hash,
            l1_origin_num: 500 + channels.len() as u64 - 1,
        };
    }
    assert!(channels.len() > 3, "{} channels", channels.len());
    for (index, (plan, recipe, full, parent)) in channels.iter().enumerate() {
        let mut again = Batcher::new(CHAIN, 1, *parent).unwrap();
        let first = plan.first_block as usize - 1;
        for block in &blocks[first..first + recipe] {
            again.push(block.clone()).unwrap();
        }
        again.set_origin(origin(500 + index as u64));
        let rebuilt = again.build_again(*full).unwrap().expect("the channel");
        assert_eq!((rebuilt.id, rebuilt.last_block), (plan.id, plan.last_block));
        assert!(
            rebuilt.l1_txs == plan.l1_txs,
            "channel {index}: other bytes"
        );
    }
}

/// The number of blocks the channels so far took.
fn taken_to(channels: &[(ChannelPlan, usize, bool, BatcherStart)]) -> usize {
    channels.last().map_or(0, |(p, ..)| p.last_block as usize)
}
