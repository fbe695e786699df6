//! `fulmen run --replica --sequencer ws://…`: replicas that follow the
//! sequencer (or another replica) mini-block by mini-block, seal every
//! block as the sequencer did, forward sends, resume after kill -9, and
//! stop on a damaged or reordered upstream message rather than serve it.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use common::l1::*;
use common::*;
use serde_json::{Value, json};
use tungstenite::Message;

/// A replica of `upstream` on the datadir `dir`.
fn start_replica(dir: &Path, upstream: SocketAddr) -> Proc {
    let url = format!("ws://{upstream}");
    start_fulmen_in(dir, &["--dev", "--replica", "--sequencer", &url])
}

fn head(addr: SocketAddr) -> (u64, String) {
    let block = call(addr, "eth_getBlockByNumber", json!(["latest", false]));
    (
        quantity(&block["number"]),
        block["hash"].as_str().expect("a hash").to_string(),
    )
}

fn block_hash(addr: SocketAddr, number: u64) -> String {
    let block = call(
        addr,
        "eth_getBlockByNumber",
        json!([format!("{number:#x}"), false]),
    );
    block["hash"].as_str().expect("a hash").to_string()
}

/// Waits until each replica's head is the sequencer's (once the sequencer
/// is idle), then checks every block hash from 1 on.
fn assert_same_chain(sequencer: SocketAddr, replicas: &[SocketAddr]) -> u64 {
    let mut last = (0, String::new());
    wait_until(60, "the replicas reach the sequencer's head", || {
        let now = head(sequencer);
        let same = replicas.iter().all(|r| head(*r) == now);
        let settled = same && now == last;
        last = now;
        settled
    });
    let top = last.0;
    for number in 1..=top {
        let want = block_hash(sequencer, number);
        for replica in replicas {
            assert_eq!(
                block_hash(*replica, number),
                want,
                "block {number} on replica {replica}"
            );
        }
    }
    top
}

/// Sends transfers to `addr` from accounts 1..=4 until `stop`; returns
/// how many it sent.
fn load(addr: SocketAddr, stop: Arc<AtomicBool>, nonces: &mut [u64; 4]) -> usize {
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        sent += send_transfers(addr, nonces, 8).len();
    }
    sent
}

/// A subscriber of `addr`'s `miniBlocks` that reconnects every few
/// notifications and resumes with `fromMiniBlock`, until it has mini-block
/// `until` (read from `target` once set): the (number, hash, parent)
/// of each mini-block it got.
fn resuming_subscriber(
    addr: SocketAddr,
    target: Arc<std::sync::Mutex<Option<u64>>>,
) -> Vec<(u64, B256, B256)> {
    let mut got: Vec<(u64, B256, B256)> = Vec::new();
    let mut seed = 0x9e37_79b9_u64;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = target
            .lock()
            .unwrap()
            .is_some_and(|until| got.last().is_some_and(|m| m.0 >= until));
        if done {
            return got;
        }
        assert!(Instant::now() < deadline, "the subscriber did not catch up");
        let from = got.last().map_or(1, |m| m.0 + 1);
        let (mut socket, _) = tungstenite::connect(format!("ws://{addr}")).expect("connect");
        let subscribe = json!({"jsonrpc":"2.0","id":1,"method":"eth_subscribe",
            "params":["miniBlocks", {"fromMiniBlock": from}]});
        socket
            .send(Message::Text(subscribe.to_string().into()))
            .expect("subscribe");
        if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        }
        // xorshift: 1..=40 notifications before the next disconnect.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut left = 1 + seed % 40;
        while left > 0 {
            let Ok(Message::Text(text)) = socket.read() else {
                break;
            };
            let message: Value = serde_json::from_str(&text).expect("JSON");
            if let Some(error) = message.get("error") {
                panic!("resume from {from} refused: {error}");
            }
            let Some(result) = message.get("params").map(|p| &p["result"]) else {
                continue;
            };
            let number = result["mini_block_number"].as_u64().expect("a number");
            let hash: B256 = serde_json::from_value(result["mini_block_hash"].clone()).unwrap();
            let parent: B256 =
                serde_json::from_value(result["parent_mini_block_hash"].clone()).unwrap();
            got.push((number, hash, parent));
            left -= 1;
        }
        drop(socket);
    }
}

#[test]
fn chained_replicas_seal_every_block_as_the_sequencer_and_a_killed_one_resumes() {
    let sequencer = start_fulmen(&["--dev"]);
    let dir1 = tempdir::TempDir::new("fulmen-replica-1");
    let dir2 = tempdir::TempDir::new("fulmen-replica-2");
    let replica1 = start_replica(&dir1.0, sequencer.addr);
    // The second follows the first: fan-out across boxes.
    let mut replica2 = start_replica(&dir2.0, replica1.addr);
    let addr1 = replica1.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (stop, addr) = (stop.clone(), sequencer.addr);
        std::thread::spawn(move || load(addr, stop, &mut [0; 4]))
    };
    // A subscriber of the first replica that disconnects at random.
    let target = Arc::new(std::sync::Mutex::new(None));
    let subscriber = {
        let target = target.clone();
        std::thread::spawn(move || resuming_subscriber(addr1, target))
    };
    std::thread::sleep(Duration::from_secs(3));
    // A crash of the second replica while the chain runs: it resumes from
    // its own log.
    replica2.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let replica2 = start_replica(&dir2.0, addr1);
    let addr2 = replica2.addr;
    std::thread::sleep(Duration::from_secs(3));
    // A send to the second replica is forwarded to the sequencer.
    let raw = transfer_raw(&signer(7), 0, Address::repeat_byte(0x77), 5);
    let forwarded = call(addr2, "eth_sendRawTransactionSync", json!([raw]));
    assert_eq!(forwarded["status"], json!("0x1"), "{forwarded}");
    stop.store(true, Ordering::Relaxed);
    let sent = loader.join().expect("the load thread");
    assert!(sent > 100, "only {sent} transfers sent");

    let top = assert_same_chain(sequencer.addr, &[addr1, addr2]);
    let tx = forwarded["transactionHash"].clone();
    for node in [sequencer.addr, addr1, addr2] {
        let receipt = call(node, "eth_getTransactionReceipt", json!([tx]));
        assert_eq!(
            receipt["status"],
            json!("0x1"),
            "the forwarded tx on {node}"
        );
    }

    // The resuming subscriber's stream is the sequencer's: every
    // mini-block once, in order, each chained to the one before, and the
    // last one the sequencer's newest.
    let newest = newest_mini_block(sequencer.addr);
    *target.lock().unwrap() = Some(newest.0);
    let got = subscriber.join().expect("the subscriber");
    for (i, window) in got.windows(2).enumerate() {
        assert_eq!(window[1].0, window[0].0 + 1, "mini-block {i} then a gap");
        assert_eq!(
            window[1].2, window[0].1,
            "mini-block {} chains",
            window[1].0
        );
    }
    assert_eq!(got[0].0, 1);
    let last = got.iter().find(|m| m.0 == newest.0).expect("the newest");
    assert_eq!(
        last.1, newest.1,
        "the replica's newest mini-block is the sequencer's"
    );
    println!("{top} blocks, {} mini-blocks, {sent} transfers", newest.0);
}

/// The sequencer's newest mini-block: (number, hash), read from its
/// `miniBlocks` stream resumed at the newest (a replay of one).
fn newest_mini_block(addr: SocketAddr) -> (u64, B256) {
    let (mut socket, _) = tungstenite::connect(format!("ws://{addr}")).expect("connect");
    // Far ahead: the refusal names the newest.
    let ask = json!({"jsonrpc":"2.0","id":1,"method":"eth_subscribe",
        "params":["miniBlocks", {"fromMiniBlock": u64::MAX / 2}]});
    socket.send(Message::Text(ask.to_string().into())).unwrap();
    let Message::Text(text) = socket.read().unwrap() else {
        panic!("not text")
    };
    let refusal: Value = serde_json::from_str(&text).unwrap();
    let message = refusal["error"]["message"]
        .as_str()
        .expect("an error")
        .to_string();
    let newest: u64 = message
        .rsplit("the newest is ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    let ask = json!({"jsonrpc":"2.0","id":2,"method":"eth_subscribe",
        "params":["miniBlocks", {"fromMiniBlock": newest}]});
    socket.send(Message::Text(ask.to_string().into())).unwrap();
    loop {
        let Message::Text(text) = socket.read().unwrap() else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        if let Some(result) = message.get("params").map(|p| &p["result"]) {
            let hash = serde_json::from_value(result["mini_block_hash"].clone()).unwrap();
            return (result["mini_block_number"].as_u64().unwrap(), hash);
        }
    }
}

/// How the proxy spoils the stream.
#[derive(Clone, Copy)]
enum Spoil {
    /// One hex digit of the 6th record flipped.
    Damage,
    /// The 6th and 7th mini-block messages swapped.
    Swap,
}

/// A WebSocket proxy from one client to `upstream` that spoils the
/// replication stream; its address.
fn spoiling_proxy(upstream: SocketAddr, spoil: Spoil) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let mut client = tungstenite::accept(client).unwrap();
        let (mut server, _) = tungstenite::connect(format!("ws://{upstream}")).unwrap();
        let Ok(subscribe) = client.read() else { return };
        server.send(subscribe).unwrap();
        let mut records = 0;
        let mut held: Option<Message> = None;
        while let Ok(message) = server.read() {
            let Message::Text(text) = &message else {
                continue;
            };
            let is_mini_block = text.contains(r#""type":"miniBlock""#);
            if is_mini_block {
                records += 1;
            }
            let out = match (spoil, records, is_mini_block) {
                (Spoil::Damage, 6, true) => {
                    let mut text = text.to_string();
                    let at = text.rfind("\"}").unwrap() - 3;
                    let flipped = if &text[at..at + 1] == "0" { "1" } else { "0" };
                    text.replace_range(at..at + 1, flipped);
                    vec![Message::Text(text.into())]
                }
                (Spoil::Swap, 6, true) => {
                    held = Some(message.clone());
                    vec![]
                }
                (Spoil::Swap, 7, true) => vec![message.clone(), held.take().unwrap()],
                _ => vec![message.clone()],
            };
            for message in out {
                if client.send(message).is_err() {
                    return;
                }
            }
        }
    });
    addr
}

#[test]
fn a_damaged_or_reordered_upstream_message_stops_the_replica_and_nothing_of_it_is_served() {
    let sequencer = start_fulmen(&["--dev"]);
    let mut nonces = [0; 4];
    // One transfer at a time: a mini-block each.
    send_transfers(sequencer.addr, &mut nonces, 12);
    for (spoil, says) in [
        (Spoil::Damage, "CRC-32C"),
        (Spoil::Swap, "after mini-block"),
    ] {
        let dir = tempdir::TempDir::new("fulmen-replica-spoiled");
        let proxy = spoiling_proxy(sequencer.addr, spoil);
        let mut replica = start_replica(&dir.0, proxy);
        let line = wait_line(&replica, says, 30);
        assert!(line.contains("replica"), "{line}");
        let status = (0..100)
            .find_map(|_| {
                std::thread::sleep(Duration::from_millis(100));
                replica.child.try_wait().unwrap()
            })
            .expect("the replica stops");
        assert!(!status.success(), "it stops with an error");
        // What it logged is the upstream's chain up to the spoiled
        // message: followed directly, it reaches the sequencer's head.
        let replica = start_replica(&dir.0, sequencer.addr);
        send_transfers(sequencer.addr, &mut nonces, 2);
        assert_same_chain(sequencer.addr, &[replica.addr]);
    }
}
