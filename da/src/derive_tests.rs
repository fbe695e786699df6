//! The channel bank against what the batcher makes, and against what it
//! must ignore: blobs that do not match their hashes, garbage, strangers,
//! channels that never complete.

use alloy_eips::BlockNumHash;
use alloy_primitives::{Address, B256, keccak256};

use super::*;
use crate::batcher::{Batcher, BatcherStart, ChannelPlan, L2Block};
use crate::l1::{L1Header, L1Tx};
use crate::span_batch::tests::{CHAIN_ID, call, eip1559, signer};

const CHAIN: SpanChain = SpanChain {
    genesis_timestamp: 1_700_000_000,
    block_time_secs: 1,
    chain_id: CHAIN_ID,
};

fn config() -> DeriveConfig {
    DeriveConfig {
        inbox: Address::repeat_byte(0x11),
        batcher: Address::repeat_byte(0x22),
        chain: CHAIN,
        channel_timeout_l1_blocks: 5,
    }
}

/// A channel of `blocks` blocks of `txs` transfers, over `blobs` blobs.
fn plan(blocks: u64, txs: u64, blobs: usize) -> (ChannelPlan, Vec<L2Block>) {
    let from = signer(0);
    let mut parent = B256::ZERO;
    let mut made = Vec::new();
    let mut batcher = Batcher::new(
        CHAIN,
        blobs,
        BatcherStart {
            number: 0,
            hash: parent,
            l1_origin_num: 7,
        },
    )
    .unwrap();
    for number in 1..=blocks {
        let hash = keccak256(number.to_be_bytes());
        let block = L2Block {
            number,
            hash,
            parent_hash: parent,
            timestamp: CHAIN.genesis_timestamp + number,
            l1_origin: BlockNumHash::default(),
            header: alloy_consensus::Header {
                number,
                parent_hash: parent,
                timestamp: CHAIN.genesis_timestamp + number,
                ..Default::default()
            },
            txs: (0..txs)
                .map(|i| {
                    // 256 bytes that do not compress.
                    let data: Vec<u8> = (0..8u64)
                        .flat_map(|k| keccak256([number, i, k].map(u64::to_be_bytes).concat()).0)
                        .collect();
                    eip1559(&from, (number - 1) * txs + i, call(i as u8), data)
                })
                .collect(),
        };
        parent = hash;
        made.push(block.clone());
        batcher.push(block).unwrap();
    }
    batcher.set_origin(BlockNumHash::new(9, B256::repeat_byte(9)));
    (batcher.next_channel(false).unwrap().unwrap(), made)
}

fn blobs_of(plan: &ChannelPlan) -> Vec<BatcherBlobs> {
    plan.clone()
        .into_l1_txs()
        .enumerate()
        .map(|(i, (blobs, input))| BatcherBlobs {
            tx: B256::repeat_byte(i as u8),
            hashes: blobs
                .iter()
                .map(|b| blob_versioned_hash(b).unwrap())
                .collect(),
            blobs,
            input,
        })
        .collect()
}

#[test]
fn a_posted_channel_derives_back_to_its_blocks() {
    let (plan, blocks) = plan(5, 20, 2);
    let mut deriver = Deriver::new(config());
    let (done, ignored) = deriver.add_block(100, blobs_of(&plan));
    assert_eq!(ignored, vec![]);
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].l1_block, done[0].channel), (100, plan.id));
    let derived: Vec<_> = done[0]
        .spans
        .iter()
        .flat_map(|s| s.blocks.clone())
        .collect();
    assert_eq!(derived.len(), blocks.len());
    for (got, want) in derived.iter().zip(&blocks) {
        assert_eq!((got.timestamp, &got.txs), (want.timestamp, &want.txs));
        assert_eq!(got.l1_origin_num, 9);
    }
    // The headers the batcher committed to come with the channel.
    let headers: Vec<_> = blocks.iter().map(|b| b.header.clone()).collect();
    assert_eq!(done[0].headers, headers);
}

#[test]
fn calldata_that_is_not_a_commitment_is_ignored_and_the_channel_still_derives() {
    let (plan, _) = plan(2, 5, 1);
    let mut txs = blobs_of(&plan);
    txs[0].input = alloy_primitives::Bytes::from_static(b"\x07junk");
    let mut deriver = Deriver::new(config());
    let (done, ignored) = deriver.add_block(100, txs);
    assert!(
        matches!(&ignored[..], [Ignored::Commitment { .. }]),
        "{ignored:?}"
    );
    assert_eq!(done.len(), 1);
    assert!(done[0].headers.is_empty());
}

#[test]
fn frames_in_later_l1_blocks_complete_the_channel_then_and_stale_ones_expire() {
    // One block of about 180 KB that does not compress: a channel of its
    // own over two blobs, one per L1 tx.
    let (plan, _) = plan(1, 700, 1);
    assert!(plan.l1_txs.len() >= 2, "{} txs", plan.l1_txs.len());
    let mut txs = blobs_of(&plan);
    let last = txs.pop().unwrap();
    let mut deriver = Deriver::new(config());
    let (done, ignored) = deriver.add_block(100, txs.clone());
    assert!(done.is_empty() && ignored.is_empty());
    let (done, _) = deriver.add_block(103, vec![last]);
    assert_eq!(done.len(), 1, "completed by the last frame");
    // The same first frames again, never completed: dropped after 5 blocks.
    let (done, _) = deriver.add_block(110, txs);
    assert!(done.is_empty());
    let (_, ignored) = deriver.add_block(116, Vec::new());
    assert!(
        matches!(&ignored[..], [Ignored::Channel { detail, .. }] if detail.contains("dropped")),
        "{ignored:?}"
    );
}

#[test]
fn blobs_that_do_not_match_their_hash_and_garbage_are_ignored_with_a_reason() {
    let (plan, _) = plan(2, 5, 1);
    let mut forged = blobs_of(&plan);
    forged[0].hashes[0] = B256::repeat_byte(1);
    let mut deriver = Deriver::new(config());
    let (done, ignored) = deriver.add_block(100, forged);
    assert!(done.is_empty());
    assert_eq!(
        ignored,
        vec![Ignored::VersionedHash {
            tx: B256::ZERO,
            index: 0
        }]
    );
    // A valid blob (its hash matches) that holds no frames.
    let garbage = crate::blob::encode_blob(b"\x00not frames at all").unwrap();
    let txs = vec![BatcherBlobs {
        tx: B256::repeat_byte(5),
        hashes: vec![blob_versioned_hash(&garbage).unwrap()],
        blobs: vec![garbage],
        input: Default::default(),
    }];
    let (done, ignored) = deriver.add_block(101, txs);
    assert!(done.is_empty());
    assert!(
        matches!(&ignored[..], [Ignored::Payload { index: 0, .. }]),
        "{ignored:?}"
    );
    // And the real channel still derives after all that.
    let (done, ignored) = deriver.add_block(102, blobs_of(&plan));
    assert_eq!((done.len(), ignored.len()), (1, 0));
}

#[test]
fn only_the_batcher_s_blob_txs_to_the_inbox_count() {
    let config = config();
    let tx = |hash: u8, from: Address, to: Address, blobs: usize| L1Tx {
        hash: B256::repeat_byte(hash),
        from,
        to: Some(to),
        nonce: 0,
        tx_type: 3,
        blob_versioned_hashes: vec![B256::repeat_byte(hash); blobs],
        input: Default::default(),
        max_fee_per_blob_gas: None,
        block_hash: None,
        block_number: None,
    };
    let stranger = Address::repeat_byte(0x33);
    let block = L1Block {
        header: L1Header {
            number: 5,
            hash: B256::ZERO,
            parent_hash: B256::ZERO,
            timestamp: 0,
            base_fee_per_gas: None,
            excess_blob_gas: None,
            blob_gas_used: None,
            parent_beacon_block_root: None,
        },
        transactions: vec![
            tx(1, stranger, config.inbox, 2),
            tx(2, config.batcher, stranger, 1),
            tx(3, config.batcher, config.inbox, 3),
        ],
    };
    let (wanted, ignored) = select_batcher_txs(&config, &block);
    assert_eq!(
        wanted,
        vec![BatcherTx {
            tx: B256::repeat_byte(3),
            first_blob: 3,
            hashes: vec![B256::repeat_byte(3); 3],
            input: Default::default(),
        }],
        "its blobs start after the 2 + 1 blobs before it"
    );
    assert_eq!(
        ignored,
        vec![Ignored::WrongSender {
            tx: B256::repeat_byte(1),
            from: stranger
        }]
    );
}

/// A loopback HTTP server that answers every request with `route(method,
/// path, body)` and records the paths asked for.
fn routed_server(
    route: impl Fn(&str, &str, &str) -> (u16, String) + Send + 'static,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let (request, body) = crate::testutil::read_http_request(&mut reader);
            if request.is_empty() {
                continue;
            }
            let mut parts = request.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            seen.lock().unwrap().push(path.to_string());
            let (status, answer) = route(method, path, &String::from_utf8_lossy(&body));
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                answer.len()
            );
            let mut stream = reader.into_inner();
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (url, asked)
}

#[test]
fn a_beacon_node_is_asked_by_slot_from_its_clock_or_by_block_root() {
    let blob = crate::blob::encode_blob(b"\x00frames").unwrap();
    let blobs_answer = format!(r#"{{"data":["0x{}"]}}"#, hex::encode(blob.as_slice()));
    let root = B256::repeat_byte(0xbe);
    let (url, asked) = routed_server(move |method, path, body| {
        let not_found = (404, r#"{"code":404,"message":"NOT_FOUND"}"#.to_string());
        match (method, path) {
            ("GET", "/eth/v1/beacon/genesis") => (
                200,
                r#"{"data":{"genesis_time":"1000","genesis_fork_version":"0x00000000"}}"#.into(),
            ),
            ("GET", "/eth/v1/config/spec") => (
                200,
                r#"{"data":{"SECONDS_PER_SLOT":"12","SLOTS_PER_EPOCH":"32"}}"#.into(),
            ),
            // Slot 5 is the block at timestamp 1060; the root names it too.
            ("GET", "/eth/v1/beacon/blobs/5") => (200, blobs_answer.clone()),
            ("GET", p) if p == format!("/eth/v1/beacon/blobs/{root}") => {
                (200, blobs_answer.clone())
            }
            ("GET", _) => not_found,
            // JSON-RPC: the next block, whose parentBeaconBlockRoot names it.
            _ => {
                let id = serde_json::from_str::<serde_json::Value>(body).unwrap()["id"].clone();
                let header = serde_json::json!({
                    "number": "0x4e", "hash": B256::repeat_byte(2), "parentHash": B256::repeat_byte(1),
                    "timestamp": "0x430", "parentBeaconBlockRoot": root,
                });
                (
                    200,
                    serde_json::json!({"jsonrpc": "2.0", "id": id, "result": header}).to_string(),
                )
            }
        }
    });
    let l1 = L1Client::new(&url, &url);
    let clock = l1.beacon_slot_clock().unwrap();
    assert_eq!((clock.genesis_time, clock.seconds_per_slot), (1000, 12));
    assert_eq!(clock.slot_of(1060), Some(5));
    assert_eq!(clock.slot_of(1061), None, "between slots");
    assert_eq!(clock.slot_of(999), None, "before genesis");
    let config = config();
    let block = L1Block {
        header: L1Header {
            number: 77,
            hash: B256::repeat_byte(1),
            parent_hash: B256::ZERO,
            timestamp: 1060,
            base_fee_per_gas: None,
            excess_blob_gas: None,
            blob_gas_used: None,
            parent_beacon_block_root: None,
        },
        transactions: vec![L1Tx {
            hash: B256::repeat_byte(3),
            from: config.batcher,
            to: Some(config.inbox),
            nonce: 0,
            tx_type: 3,
            blob_versioned_hashes: vec![blob_versioned_hash(&blob).unwrap()],
            input: Default::default(),
            max_fee_per_blob_gas: None,
            block_hash: None,
            block_number: None,
        }],
    };
    // A beacon node refuses an execution block number.
    let refused = fetch_batcher_blobs(&l1, &config, &block, BeaconIds::ExecutionNumber);
    assert!(
        matches!(refused, Err(L1Error::Status { status: 404, .. })),
        "{refused:?}"
    );
    for ids in [BeaconIds::Slot(clock), BeaconIds::BlockRoot] {
        let (got, ignored) = fetch_batcher_blobs(&l1, &config, &block, ids).unwrap();
        assert!(ignored.is_empty());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].blobs, vec![blob]);
    }
    let asked = asked.lock().unwrap().clone();
    assert!(
        asked.contains(&"/eth/v1/beacon/blobs/5".to_string()),
        "{asked:?}"
    );
    assert!(
        asked.contains(&format!("/eth/v1/beacon/blobs/{root}")),
        "{asked:?}"
    );
}
