//! The DA batcher against a real L1 (the pinned anvil): every sealed L2 tx
//! ends up in L1 blobs, read back by a decoder written here from the OP
//! specification (blob encoding v0, frames, brotli channels; span batches
//! through `fulmen_da::span_batch::decode_typed`, checked against the L2
//! node's own blocks), across kill -9, L1 reorgs, an L1 outage and a fee
//! spike.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use alloy::consensus::Transaction;
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, B256, keccak256};
use common::l1::*;
use common::*;
use fulmen_da::span_batch::{SpanChain, decode_typed};
use serde_json::{Value, json};

/// The L2 node's blocks: number → (hash, timestamp, tx hashes).
fn l2_blocks(addr: SocketAddr, last: u64) -> BTreeMap<u64, (B256, u64, Vec<B256>)> {
    let mut out = BTreeMap::new();
    for n in 0..=last {
        let b = call(
            addr,
            "eth_getBlockByNumber",
            json!([format!("{n:#x}"), false]),
        );
        let hash: B256 = serde_json::from_value(b["hash"].clone()).expect("hash");
        let txs: Vec<B256> = serde_json::from_value(b["transactions"].clone()).expect("hashes");
        out.insert(n, (hash, quantity(&b["timestamp"]), txs));
    }
    out
}

// --- An L1 reader written from the OP specification -----------------------

/// OP blob encoding version 0: 4 field elements carry 127 bytes; the first
/// round holds the version byte and a 3-byte length.
fn blob_data(blob: &[u8]) -> Vec<u8> {
    assert_eq!(blob.len(), 131_072);
    let mut stream = Vec::with_capacity(130_048);
    for round in 0..1024 {
        let fe = |i: usize| &blob[(round * 4 + i) * 32..(round * 4 + i + 1) * 32];
        let x = [fe(0)[0], fe(1)[0], fe(2)[0], fe(3)[0]];
        for b in x {
            assert_eq!(b & 0b1100_0000, 0, "field element high bits are zero");
        }
        // The four 6-bit high parts make three bytes, each placed where
        // the spec puts it: after the 31 tail bytes of elements 0, 1, 2.
        let a = (x[0] & 0x3f) | ((x[1] & 0x30) << 2);
        let b = (x[1] & 0x0f) | ((x[3] & 0x0f) << 4);
        let c = (x[2] & 0x3f) | ((x[3] & 0x30) << 2);
        stream.extend_from_slice(&fe(0)[1..]);
        stream.push(a);
        stream.extend_from_slice(&fe(1)[1..]);
        stream.push(b);
        stream.extend_from_slice(&fe(2)[1..]);
        stream.push(c);
        stream.extend_from_slice(&fe(3)[1..]);
    }
    // Element 0's tail starts with the version byte and the length.
    assert_eq!(stream[0], 0, "encoding version 0");
    let len = usize::from(stream[1]) << 16 | usize::from(stream[2]) << 8 | usize::from(stream[3]);
    assert!(len <= 130_044, "length {len}");
    assert!(
        stream[4 + len..].iter().all(|b| *b == 0),
        "zeros after the data"
    );
    stream[4..4 + len].to_vec()
}

/// One frame of a batcher payload.
struct Frame {
    channel: [u8; 16],
    number: u16,
    data: Vec<u8>,
    last: bool,
}

fn frames(payload: &[u8]) -> Vec<Frame> {
    assert_eq!(payload[0], 0, "derivation version 0");
    let mut rest = &payload[1..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let channel: [u8; 16] = rest[..16].try_into().unwrap();
        let number = u16::from_be_bytes([rest[16], rest[17]]);
        let len = u32::from_be_bytes(rest[18..22].try_into().unwrap()) as usize;
        let data = rest[22..22 + len].to_vec();
        let last = match rest[22 + len] {
            0 => false,
            1 => true,
            b => panic!("is_last {b}"),
        };
        out.push(Frame {
            channel,
            number,
            data,
            last,
        });
        rest = &rest[23 + len..];
    }
    out
}

/// A channel's batches: version byte 1, brotli, then RLP byte strings.
fn channel_batches(bytes: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(bytes[0], 1, "channel version 1 (brotli)");
    let mut rlp = Vec::new();
    brotli::BrotliDecompress(&mut &bytes[1..], &mut rlp).expect("brotli");
    let mut rest = &rlp[..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let header = alloy_rlp::Header::decode(&mut rest).expect("an RLP string");
        assert!(!header.list);
        out.push(rest[..header.payload_length].to_vec());
        rest = &rest[header.payload_length..];
    }
    out
}

/// What L1 holds: every complete channel, in L1 order, as batches.
struct L1Channels {
    channels: Vec<([u8; 16], Vec<Vec<u8>>)>,
    batcher_txs: usize,
}

/// Reads every batcher tx to `inbox` in L1 blocks `0..=latest`, its blobs
/// from the beacon API, and assembles the channels.
fn read_l1(l1: SocketAddr, inbox: Address) -> L1Channels {
    let latest = block_number(l1, "latest");
    let mut partial: BTreeMap<[u8; 16], BTreeMap<u16, Frame>> = BTreeMap::new();
    let mut channels = Vec::new();
    let mut batcher_txs = 0;
    for n in 0..=latest {
        let block = call(l1, "eth_getBlockByNumber", json!([format!("{n:#x}"), true]));
        let txs = block["transactions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut blob_index = 0;
        let mut ours = Vec::new();
        for tx in &txs {
            let hashes = tx["blobVersionedHashes"].as_array().map_or(0, Vec::len);
            let to = tx["to"].as_str().unwrap_or_default().to_lowercase();
            let from = tx["from"].as_str().unwrap_or_default().to_lowercase();
            if to == format!("{inbox:#x}") && from == BATCHER && hashes > 0 {
                ours.push((blob_index, hashes));
            }
            blob_index += hashes;
        }
        if ours.is_empty() {
            continue;
        }
        let (status, body) = http_get(l1, &format!("/eth/v1/beacon/blobs/{n}"));
        assert_eq!(status, 200, "beacon blobs of block {n}: {body}");
        let answer: Value = serde_json::from_str(&body).expect("beacon JSON");
        let blobs = answer["data"].as_array().expect("data");
        assert_eq!(blobs.len(), blob_index, "every blob of block {n}");
        for (first, count) in ours {
            batcher_txs += 1;
            for blob in &blobs[first..first + count] {
                let bytes =
                    alloy::primitives::hex::decode(blob.as_str().expect("hex")).expect("hex");
                for frame in frames(&blob_data(&bytes)) {
                    let id = frame.channel;
                    let set = partial.entry(id).or_default();
                    set.insert(frame.number, frame);
                    let done =
                        set.values().any(|f| f.last) && set.keys().copied().eq(0..set.len() as u16);
                    if done {
                        let set = partial.remove(&id).expect("there");
                        let bytes: Vec<u8> = set.into_values().flat_map(|f| f.data).collect();
                        channels.push((id, channel_batches(&bytes)));
                    }
                }
            }
        }
    }
    L1Channels {
        channels,
        batcher_txs,
    }
}

/// Checks that the L2 blocks L1 holds are exactly `1..=k` for some `k`
/// at least `at_least`, each once, in order, with the node's hashes,
/// timestamps and txs. Returns `k` and the L2 txs found.
fn check_l1_holds_the_chain(node: SocketAddr, l1: SocketAddr, at_least: u64) -> (u64, usize) {
    let inbox = fulmen_da::post::default_inbox(DEV_CHAIN_ID);
    let read = read_l1(l1, inbox);
    let head = block_number(node, "latest");
    let blocks = l2_blocks(node, head);
    let by_check: BTreeMap<[u8; 20], u64> = blocks
        .iter()
        .map(|(n, (h, _, _))| (h[..20].try_into().unwrap(), *n))
        .collect();
    let chain = SpanChain {
        genesis_timestamp: blocks[&0].1,
        block_time_secs: 1,
        chain_id: DEV_CHAIN_ID,
    };
    let mut next = 1;
    let mut txs = 0;
    for (id, batches) in &read.channels {
        for typed in batches {
            let span = decode_typed(typed, &chain).expect("a span batch");
            let parent = by_check[span.parent_check.as_slice()];
            assert_eq!(
                parent + 1,
                next,
                "channel {} starts after L2 block {parent}; the next unposted block is {next}: a gap or a duplicate",
                alloy::primitives::hex::encode(id)
            );
            for block in &span.blocks {
                let (_, timestamp, hashes) = &blocks[&next];
                assert_eq!(block.timestamp, *timestamp, "timestamp of L2 block {next}");
                let found: Vec<B256> = block
                    .txs
                    .iter()
                    .map(|t| keccak256(t.encoded_2718()))
                    .collect();
                assert_eq!(&found, hashes, "txs of L2 block {next}");
                assert!(block.txs.iter().all(|t| t.chain_id() == Some(DEV_CHAIN_ID)));
                txs += hashes.len();
                next += 1;
            }
        }
    }
    assert!(
        next > at_least,
        "L1 holds L2 blocks up to {}, not {at_least} ({} batcher txs)",
        next - 1,
        read.batcher_txs
    );
    (next - 1, txs)
}

/// What `fulmen_da::derive` (the verifier's front half) reads from L1: the
/// last L2 block and the number of L2 txs, checking every blob's versioned
/// hash and the sender.
fn derive_with_the_crate(l1: &Proc) -> (u64, usize) {
    use fulmen_da::derive::{BeaconIds, DeriveConfig, Deriver, fetch_batcher_blobs};
    use fulmen_da::l1::{BlockTag, L1Client};
    let client = L1Client::new(&l1.url(), &l1.url());
    let mut deriver = Deriver::new(DeriveConfig {
        inbox: fulmen_da::post::default_inbox(DEV_CHAIN_ID),
        batcher: BATCHER.parse().expect("an address"),
        chain: SpanChain {
            genesis_timestamp: 0,
            block_time_secs: 1,
            chain_id: DEV_CHAIN_ID,
        },
        channel_timeout_l1_blocks: 50,
    });
    let (mut blocks, mut txs) = (0, 0);
    for n in 0..=client.block_number().expect("L1 head") {
        let block = client
            .block_with_txs(BlockTag::Number(n))
            .expect("an L1 block")
            .expect("there");
        let (blobs, ignored) = fetch_batcher_blobs(
            &client,
            deriver.config(),
            &block,
            BeaconIds::ExecutionNumber,
        )
        .expect("blobs");
        let (done, more) = deriver.add_block(n, blobs);
        assert!(
            ignored.is_empty() && more.is_empty(),
            "{ignored:?} {more:?}"
        );
        for span in done.iter().flat_map(|c| &c.spans) {
            blocks += span.blocks.len() as u64;
            txs += span.blocks.iter().map(|b| b.txs.len()).sum::<usize>();
        }
    }
    (blocks, txs)
}

/// Sends txs, waits until `safe` passes the block holding the last one,
/// and reads everything back from L1. With `restart`, once `finalized`
/// passes them (the batcher compacts its records), restarts the node from
/// a checkpoint taken after that and posts more.
fn every_tx_reaches_l1(hardfork: &str, restart: bool) {
    let l1 = start_l1(hardfork, "1");
    let dir = tempdir::TempDir::new("fulmen-da");
    let config = format!("{}[storage]\ncheckpoint_blocks = 2\n", da_config(""));
    let mut node = start_node(&dir.0, &l1.url(), &config);
    let mut nonces = [0; 4];
    let mut sent = Vec::new();
    for _ in 0..5 {
        sent.extend(send_transfers(node.addr, &mut nonces, 200));
        std::thread::sleep(Duration::from_millis(700));
    }
    let last = block_number(node.addr, "latest");
    wait_sealed(node.addr, last + 1);
    wait_safe_past(&node, last, 90, "safe passes the last tx's block");
    // Freeze L1 so `safe` and both reads of L1 see the same chain: the
    // batcher keeps posting, and a block mined between them would make
    // the comparisons race.
    call(l1.addr, "evm_setIntervalMining", json!([0]));
    let safe = block_number(node.addr, "safe");
    let (held, txs) = check_l1_holds_the_chain(node.addr, l1.addr, last);
    assert!(txs >= sent.len(), "{txs} L2 txs in L1, {} sent", sent.len());
    assert_eq!(
        derive_with_the_crate(&l1),
        (held, txs),
        "the verifier's reader agrees"
    );
    assert!(held >= safe, "safe {safe} is past what L1 holds ({held})");
    // `finalized` follows L1's finalized block (anvil: latest - 64).
    call(l1.addr, "anvil_mine", json!([70]));
    wait_until(30, "finalized passes the last tx's block", || {
        block_number(node.addr, "finalized") > last
    });
    if !restart {
        return;
    }
    // A checkpoint (every 2 blocks) after the compaction, then a restart
    // from it: the DA records come from its marker.
    wait_line(&node, "DA: records compacted", 30);
    call(l1.addr, "evm_setIntervalMining", json!([1]));
    std::thread::sleep(Duration::from_secs(3));
    assert!(node.terminate().success());
    let node = start_node(&dir.0, &l1.url(), &config);
    assert!(
        boot_figure(&node, "skipped") > 0,
        "{}",
        node.startup.join("\n")
    );
    sent.extend(send_transfers(node.addr, &mut nonces, 200));
    let last = block_number(node.addr, "latest");
    wait_sealed(node.addr, last + 1);
    wait_safe_past(
        &node,
        last,
        90,
        "safe passes the txs sent after the restart",
    );
    call(l1.addr, "evm_setIntervalMining", json!([0]));
    let (_, txs) = check_l1_holds_the_chain(node.addr, l1.addr, last);
    assert!(txs >= sent.len(), "{txs} L2 txs in L1, {} sent", sent.len());
}

#[test]
fn every_sealed_tx_is_in_l1_blobs_on_prague_and_posting_resumes_after_a_restart() {
    every_tx_reaches_l1("prague", true);
}

#[test]
fn every_sealed_tx_is_in_l1_blobs_on_osaka() {
    every_tx_reaches_l1("osaka", false);
}

/// anvil (Prague, 1 s blocks) and a node posting to it with metrics on.
fn with_metrics(name: &str) -> (Proc, tempdir::TempDir, Proc, SocketAddr) {
    let l1 = start_l1("prague", "1");
    let dir = tempdir::TempDir::new(name);
    let config = format!("metrics_addr = \"127.0.0.1:0\"\n{}", da_config(""));
    let node = start_node(&dir.0, &l1.url(), &config);
    let metrics = metrics_addr(&node);
    (l1, dir, node, metrics)
}

/// Waits up to `secs` until `safe` passes L2 block `last`.
fn wait_safe_past(node: &Proc, last: u64, secs: u64, what: &str) {
    wait_until(secs, what, || block_number(node.addr, "safe") > last);
}

#[test]
fn kill_9_mid_post_leaves_no_gap_and_no_duplicate() {
    let l1 = start_l1("prague", "1");
    let dir = tempdir::TempDir::new("fulmen-da-kill");
    // Checkpoints every 2 blocks: restarts start from one, with the DA
    // records logged before it taken from its marker.
    let config = format!("{}[storage]\ncheckpoint_blocks = 2\n", da_config(""));
    let mut node = start_node(&dir.0, &l1.url(), &config);
    let mut nonces = [0; 4];
    let mut from_checkpoints = 0;
    // Kill at different points after a channel is logged: before, during
    // and after its tx is sent.
    for delay_ms in [0, 20, 80, 250, 600] {
        send_transfers(node.addr, &mut nonces, 150);
        wait_line(&node, "DA: posting a channel", 60);
        std::thread::sleep(Duration::from_millis(delay_ms));
        node.kill9();
        node = start_node(&dir.0, &l1.url(), &config);
        if boot_figure(&node, "skipped") > 0 {
            from_checkpoints += 1;
        }
    }
    assert!(
        from_checkpoints > 0,
        "no restart skipped the log before a checkpoint"
    );
    send_transfers(node.addr, &mut nonces, 50);
    let last = block_number(node.addr, "latest");
    wait_sealed(node.addr, last + 1);
    wait_safe_past(&node, last, 90, "safe passes the last tx's block");
    let (_, txs) = check_l1_holds_the_chain(node.addr, l1.addr, last);
    assert!(txs >= 800, "{txs} L2 txs in L1, 800 sent");
}

#[test]
fn an_l1_reorg_reposts_and_safe_goes_back_then_forward() {
    let (l1, _dir, node, metrics) = with_metrics("fulmen-da-reorg");
    let mut nonces = [0; 4];
    send_transfers(node.addr, &mut nonces, 200);
    let last = block_number(node.addr, "latest");
    wait_safe_past(&node, last, 60, "safe passes the txs");
    // Let batches land in the last few L1 blocks, then drop those blocks.
    wait_line(&node, "DA: posting a channel", 30);
    std::thread::sleep(Duration::from_millis(2500));
    let before = block_number(node.addr, "safe");
    call(l1.addr, "anvil_rollback", json!([4]));
    let mut lowest = before;
    wait_until(60, "safe goes back, then passes where it was", || {
        let safe = block_number(node.addr, "safe");
        lowest = lowest.min(safe);
        lowest < before && safe > before
    });
    assert!(metric(metrics, "fulmen_da_reorgs_total") >= 1.0);
    send_transfers(node.addr, &mut nonces, 100);
    let last = block_number(node.addr, "latest");
    wait_safe_past(&node, last, 60, "safe passes the new txs");
    check_l1_holds_the_chain(node.addr, l1.addr, last);
}

#[test]
fn l1_down_sequencing_goes_on_to_the_bound_then_refuses_clearly_and_catches_up() {
    let l1 = start_l1("prague", "1");
    let dir = tempdir::TempDir::new("fulmen-da-down");
    let node = start_node(
        &dir.0,
        &l1.url(),
        &da_config("unposted_bytes_max = 1048576"),
    );
    let mut nonces = [0; 4];
    send_transfers(node.addr, &mut nonces, 100);
    let last = block_number(node.addr, "latest");
    wait_safe_past(&node, last, 60, "safe passes the first txs");
    signal(&l1, "STOP");
    // Past 1 MiB of unposted txs (about 9,000 transfers), new ones are
    // refused, naming the cause.
    let to = Address::repeat_byte(0x42);
    let mut accepted = 0;
    let refusal = loop {
        let k = accepted % 4;
        let raw = transfer_raw(&signer(k as u32 + 1), nonces[k], to, 1);
        match try_rpc(node.addr, "eth_sendRawTransaction", json!([raw])) {
            Ok(_) => {
                nonces[k] += 1;
                accepted += 1;
                assert!(accepted < 40_000, "no refusal after {accepted} txs");
            }
            Err(e) => break e,
        }
    };
    assert!(
        refusal.contains("not yet posted to L1") && refusal.contains("unposted_bytes_max"),
        "{refusal}"
    );
    assert!(
        accepted >= 8_000,
        "refused after only {accepted} txs: {refusal}"
    );
    // Reads keep working while writes wait.
    call(node.addr, "eth_blockNumber", json!([]));
    signal(&l1, "CONT");
    let last = block_number(node.addr, "latest");
    wait_safe_past(&node, last, 120, "posting catches up");
    send_transfers(node.addr, &mut nonces, 10);
    let (_, txs) = check_l1_holds_the_chain(node.addr, l1.addr, last);
    assert!(
        txs >= 100 + accepted,
        "{txs} L2 txs in L1, {} acknowledged",
        100 + accepted
    );
}

#[test]
fn a_fee_spike_gets_the_stuck_tx_replaced_with_bumped_fees() {
    // L1 mines only when told: the spike lands exactly on the batcher's tx.
    let l1 = start_anvil(&["--hardfork", "prague", "--no-mining"]);
    let dir = tempdir::TempDir::new("fulmen-da-fees");
    let config = format!("metrics_addr = \"127.0.0.1:0\"\n{}", da_config(""));
    let node = start_node(&dir.0, &l1.url(), &config);
    let metrics = metrics_addr(&node);
    let mut nonces = [0; 4];
    send_transfers(node.addr, &mut nonces, 20);
    // The channel's tx waits in L1's pool, signed at today's fees (about
    // 2 gwei); the next three blocks cost 100 gwei, 87.5 and 76.6.
    wait_line(&node, "DA: posting a channel", 30);
    std::thread::sleep(Duration::from_millis(500));
    call(
        l1.addr,
        "anvil_setNextBlockBaseFeePerGas",
        json!(["0x174876e800"]),
    );
    call(l1.addr, "anvil_mine", json!([3]));
    wait_line(&node, "replacing a stuck batcher tx", 30);
    // Counted just after the log line; the metrics thread may answer late
    // on a loaded machine.
    wait_until(30, "the replacement is counted", || {
        metric(metrics, "fulmen_da_replacements_total") >= 1.0
    });
    // L1 moves on; the replacement (2 x the market) gets in.
    let last = block_number(node.addr, "latest");
    let l1_addr = l1.addr;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let miner = {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = try_rpc(l1_addr, "anvil_mine", json!([1]));
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    wait_safe_past(
        &node,
        last,
        60,
        "the replaced channel lands and safe passes it",
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    miner.join().expect("miner");
    check_l1_holds_the_chain(node.addr, l1.addr, last);
}

#[test]
fn batcher_key_files_must_be_private_and_valid() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir::TempDir::new("fulmen-da-key");
    let key = dir.0.join("batcher.key");
    std::fs::write(
        &key,
        "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6\n",
    )
    .expect("write");
    let run = |mode: u32, contents: Option<&str>| {
        if let Some(text) = contents {
            std::fs::write(&key, text).expect("write");
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulmen"))
            .args([
                "run",
                "--dev",
                "--l1-rpc",
                "http://127.0.0.1:9",
                "--batcher-key",
            ])
            .arg(&key)
            .arg("--datadir")
            .arg(dir.0.join("data"))
            .args(["--rpc-addr", &format!("127.0.0.1:{}", free_port())])
            .output()
            .expect("run fulmen");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let stderr = run(0o644, None);
    assert!(
        stderr.contains("can be read by others (mode 0644)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("2a871d07"),
        "the key is never shown: {stderr}"
    );
    let stderr = run(0o600, Some("0x1234 not a key"));
    assert!(stderr.contains("64 hex digits"), "{stderr}");
    assert!(
        !stderr.contains("not a key"),
        "the file is never quoted: {stderr}"
    );
}

#[test]
fn without_an_l1_the_node_says_nothing_is_posted() {
    let node = start_fulmen(&["--dev"]);
    assert!(
        node.startup
            .iter()
            .any(|l| l.contains("nothing is posted to L1")),
        "{:?}",
        node.startup
    );
    // The tags stay the last sealed block.
    wait_sealed(node.addr, 2);
    assert!(block_number(node.addr, "safe") >= 2);
}
