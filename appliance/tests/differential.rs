//! Differential test against anvil: the same genesis alloc and the same
//! signed transactions go to both; receipts, balances, nonces, storage, code
//! and call results must match.

mod common;

use std::time::{Duration, Instant};

use alloy::consensus::{
    SignableTransaction, TxEip1559, TxEip2930, TxEip7702, TxEnvelope, TxLegacy,
};
use alloy::eips::eip2718::Encodable2718;
use alloy::eips::eip2930::{AccessList, AccessListItem};
use alloy::eips::eip7702::Authorization;
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolCall;
use common::*;
use serde_json::{Value, json};

sol! {
    function transfer(address to, uint256 value) external returns (bool);
    function balanceOf(address who) external view returns (uint256);
    function bump() external;
    function set(uint256 key, uint256 value) external;
    function fail() external pure;
    function counter() external view returns (uint256);
    function burn(uint256 rounds) external;
}

/// Fee cap equal to the tip: both chains charge exactly this per gas whatever
/// their base fee, so balances can be compared to the wei.
const PRICE: u128 = 3_000_000_000;

fn genesis_json() -> String {
    let alloc: serde_json::Map<String, Value> = (0..10)
        .map(|i| {
            (
                format!("{}", signer(i).address()),
                json!({"balance": "0x21e19e0c9bab2400000"}),
            )
        })
        .collect();
    json!({
        "config": {
            "chainId": DEV_CHAIN_ID, "homesteadBlock": 0, "eip150Block": 0, "eip155Block": 0, "eip158Block": 0,
            "byzantiumBlock": 0, "constantinopleBlock": 0, "petersburgBlock": 0, "istanbulBlock": 0,
            "berlinBlock": 0, "londonBlock": 0, "mergeNetsplitBlock": 0, "shanghaiTime": 0, "cancunTime": 0,
            "pragueTime": 0, "terminalTotalDifficulty": 0, "terminalTotalDifficultyPassed": true
        },
        "nonce": "0x0", "timestamp": "0x0", "extraData": "0x", "gasLimit": "0x1c9c380",
        "difficulty": "0x0", "mixHash": "0x0000000000000000000000000000000000000000000000000000000000000000",
        "coinbase": "0x0000000000000000000000000000000000000000", "baseFeePerGas": "0x3b9aca00",
        "alloc": alloc
    })
    .to_string()
}

fn encode<T: SignableTransaction<alloy::primitives::Signature>>(
    signer: &PrivateKeySigner,
    mut tx: T,
) -> Bytes
where
    TxEnvelope: From<alloy::consensus::Signed<T>>,
{
    let signature = signer.sign_transaction_sync(&mut tx).expect("sign");
    TxEnvelope::from(tx.into_signed(signature))
        .encoded_2718()
        .into()
}

fn eip1559(
    signer: &PrivateKeySigner,
    nonce: u64,
    to: TxKind,
    value: u64,
    input: Vec<u8>,
    gas: u64,
) -> Bytes {
    encode(
        signer,
        TxEip1559 {
            chain_id: DEV_CHAIN_ID,
            nonce,
            gas_limit: gas,
            max_fee_per_gas: PRICE,
            max_priority_fee_per_gas: PRICE,
            to,
            value: U256::from(value),
            input: input.into(),
            access_list: Default::default(),
        },
    )
}

/// The workload: deploys, transfers, ERC-20 calls, a revert, legacy and
/// EIP-2930 transactions, and an EIP-7702 delegation used right away.
fn workload() -> (Vec<Bytes>, Address, Address, Address) {
    let deployer = signer(0);
    let token = deployer.address().create(0);
    let probe = signer(1).address().create(0);
    let delegated = signer(5);
    let mut txs = Vec::new();

    let mut token_code = bytecode("Token").to_vec();
    token_code.extend_from_slice(&U256::from(1_000_000u64).to_be_bytes::<32>());
    txs.push(eip1559(
        &deployer,
        0,
        TxKind::Create,
        0,
        token_code,
        3_000_000,
    ));
    txs.push(eip1559(
        &signer(1),
        0,
        TxKind::Create,
        0,
        bytecode("Probe").to_vec(),
        3_000_000,
    ));
    for (i, to) in (2..5).enumerate() {
        let call = transferCall {
            to: signer(to).address(),
            value: U256::from(100 * (i + 1)),
        };
        txs.push(eip1559(
            &deployer,
            1 + i as u64,
            TxKind::Call(token),
            0,
            call.abi_encode(),
            100_000,
        ));
    }
    let too_much = transferCall {
        to: deployer.address(),
        value: U256::from(1u64) << 200,
    };
    txs.push(eip1559(
        &signer(2),
        0,
        TxKind::Call(token),
        0,
        too_much.abi_encode(),
        100_000,
    ));
    txs.push(eip1559(
        &signer(2),
        1,
        TxKind::Call(signer(3).address()),
        123_456_789,
        Vec::new(),
        21_000,
    ));
    txs.push(eip1559(
        &signer(1),
        1,
        TxKind::Call(probe),
        0,
        bumpCall {}.abi_encode(),
        100_000,
    ));
    txs.push(eip1559(
        &signer(1),
        2,
        TxKind::Call(probe),
        0,
        setCall {
            key: U256::from(7),
            value: U256::from(9),
        }
        .abi_encode(),
        100_000,
    ));
    txs.push(eip1559(
        &signer(3),
        0,
        TxKind::Call(probe),
        0,
        failCall {}.abi_encode(),
        100_000,
    ));
    txs.push(eip1559(
        &signer(3),
        1,
        TxKind::Call(probe),
        0,
        burnCall {
            rounds: U256::from(40),
        }
        .abi_encode(),
        300_000,
    ));
    txs.push(encode(
        &signer(4),
        TxLegacy {
            chain_id: Some(DEV_CHAIN_ID),
            nonce: 0,
            gas_price: PRICE,
            gas_limit: 100_000,
            to: TxKind::Call(probe),
            value: U256::ZERO,
            input: bumpCall {}.abi_encode().into(),
        },
    ));
    txs.push(encode(
        &signer(4),
        TxEip2930 {
            chain_id: DEV_CHAIN_ID,
            nonce: 1,
            gas_price: PRICE,
            gas_limit: 100_000,
            to: TxKind::Call(probe),
            value: U256::ZERO,
            input: setCall {
                key: U256::from(1),
                value: U256::from(2),
            }
            .abi_encode()
            .into(),
            access_list: AccessList(vec![AccessListItem {
                address: probe,
                storage_keys: vec![B256::ZERO],
            }]),
        },
    ));
    // EIP-7702: signer 6 sends a tx that makes signer 5 delegate to Probe and calls it.
    let auth = Authorization {
        chain_id: U256::from(DEV_CHAIN_ID),
        address: probe,
        nonce: 0,
    };
    let auth_sig = delegated
        .sign_hash_sync(&auth.signature_hash())
        .expect("sign authorization");
    txs.push(encode(
        &signer(6),
        TxEip7702 {
            chain_id: DEV_CHAIN_ID,
            nonce: 0,
            gas_limit: 200_000,
            max_fee_per_gas: PRICE,
            max_priority_fee_per_gas: PRICE,
            to: delegated.address(),
            value: U256::ZERO,
            access_list: Default::default(),
            authorization_list: vec![auth.into_signed(auth_sig)],
            input: bumpCall {}.abi_encode().into(),
        },
    ));
    txs.push(eip1559(
        &signer(7),
        0,
        TxKind::Call(delegated.address()),
        0,
        bumpCall {}.abi_encode(),
        100_000,
    ));
    (txs, token, probe, delegated.address())
}

fn wait_receipt(addr: std::net::SocketAddr, hash: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = rpc(addr, "eth_getTransactionReceipt", json!([hash]));
        if !response["result"].is_null() {
            return response["result"].clone();
        }
        assert!(Instant::now() < deadline, "no receipt for {hash} at {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn logs_of(receipt: &Value) -> Vec<(Value, Value, Value)> {
    receipt["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .map(|l| (l["address"].clone(), l["topics"].clone(), l["data"].clone()))
        .collect()
}

fn normalized(value: &Value) -> String {
    value.as_str().expect("string").to_lowercase()
}

#[test]
fn fulmen_and_anvil_agree_on_the_same_transactions() {
    let (genesis_path, _guard) = temp_file("genesis.json", &genesis_json());
    let genesis = genesis_path.to_str().expect("utf-8 path");
    let fulmen = start_fulmen(&["--genesis", genesis]);
    let anvil = start_anvil(&[
        "--init",
        genesis,
        "--chain-id",
        "4242",
        "--hardfork",
        "prague",
        "--base-fee",
        "1000000000",
        // Struct logs (the default tracer) are recorded only with this.
        "--steps-tracing",
    ]);

    let (txs, token, probe, delegated) = workload();
    let mut hashes = Vec::new();
    for (i, raw) in txs.iter().enumerate() {
        let raw_hex = format!("{raw}");
        let sent_f = rpc(fulmen.addr, "eth_sendRawTransaction", json!([raw_hex]));
        let sent_a = rpc(anvil.addr, "eth_sendRawTransaction", json!([raw_hex]));
        let hash = sent_f["result"]
            .as_str()
            .unwrap_or_else(|| panic!("tx {i} on fulmen: {sent_f}"))
            .to_string();
        assert_eq!(
            sent_a["result"].as_str(),
            Some(hash.as_str()),
            "tx {i} on anvil: {sent_a}"
        );
        hashes.push(hash.clone());
        let rf = wait_receipt(fulmen.addr, &hash);
        let ra = wait_receipt(anvil.addr, &hash);
        assert_eq!(rf["status"], ra["status"], "tx {i} status");
        assert_eq!(rf["gasUsed"], ra["gasUsed"], "tx {i} gasUsed");
        assert_eq!(
            rf["effectiveGasPrice"], ra["effectiveGasPrice"],
            "tx {i} price"
        );
        assert_eq!(
            rf["contractAddress"], ra["contractAddress"],
            "tx {i} contract"
        );
        assert_eq!(rf["type"], ra["type"], "tx {i} type");
        let (lf, la) = (logs_of(&rf), logs_of(&ra));
        assert_eq!(lf.len(), la.len(), "tx {i} log count");
        for (f, a) in lf.iter().zip(&la) {
            assert_eq!(normalized(&f.0), normalized(&a.0), "tx {i} log address");
            assert_eq!(f.1, a.1, "tx {i} log topics");
            assert_eq!(f.2, a.2, "tx {i} log data");
        }
    }

    let mut accounts: Vec<Address> = (0..10).map(|i| signer(i).address()).collect();
    accounts.extend([token, probe, delegated]);
    for account in &accounts {
        let a = format!("{account}");
        for method in ["eth_getBalance", "eth_getTransactionCount", "eth_getCode"] {
            let f = rpc(fulmen.addr, method, json!([a, "latest"]))["result"].clone();
            let n = rpc(anvil.addr, method, json!([a, "latest"]))["result"].clone();
            assert_eq!(f, n, "{method} {a}");
        }
        for slot in 0..4u64 {
            let s = format!("{}", B256::from(U256::from(slot)));
            let f = rpc(fulmen.addr, "eth_getStorageAt", json!([a, s, "latest"]))["result"].clone();
            let n = rpc(anvil.addr, "eth_getStorageAt", json!([a, s, "latest"]))["result"].clone();
            assert_eq!(f, n, "storage {a} slot {slot}");
        }
    }

    let mut calls = vec![
        (probe, counterCall {}.abi_encode()),
        (delegated, counterCall {}.abi_encode()),
    ];
    for i in 0..5 {
        calls.push((
            token,
            balanceOfCall {
                who: signer(i).address(),
            }
            .abi_encode(),
        ));
    }
    for (to, data) in calls {
        let request =
            json!([{"to": format!("{to}"), "data": format!("{}", Bytes::from(data))}, "latest"]);
        let f = rpc(fulmen.addr, "eth_call", request.clone())["result"].clone();
        let n = rpc(anvil.addr, "eth_call", request)["result"].clone();
        assert_eq!(f, n, "eth_call to {to}");
        assert!(f.is_string());
    }
    traces_agree(&fulmen, &anvil, &hashes);
}

/// `debug_traceTransaction` gives anvil's answer for every transaction of
/// the workload (creates, calls, reverts, a value transfer, EIP-7702
/// delegation, legacy and EIP-2930) with each tracer, and `debug_traceCall`
/// for a call through a precompile.
fn traces_agree(fulmen: &Proc, anvil: &Proc, hashes: &[String]) {
    let last = wait_receipt(fulmen.addr, hashes.last().expect("txs"));
    wait_sealed(fulmen.addr, quantity(&last["blockNumber"]));
    let tracers = [
        json!({"tracer": "callTracer"}),
        json!({"tracer": "callTracer", "tracerConfig": {"withLog": true}}),
        json!({"tracer": "4byteTracer"}),
        json!({"tracer": "prestateTracer"}),
        json!({"tracer": "prestateTracer", "tracerConfig": {"diffMode": true}}),
        json!({"enableMemory": true}),
        json!({}),
    ];
    for (i, hash) in hashes.iter().enumerate() {
        for tracer in &tracers {
            let f = rpc(fulmen.addr, "debug_traceTransaction", json!([hash, tracer]));
            let a = rpc(anvil.addr, "debug_traceTransaction", json!([hash, tracer]));
            assert!(f.get("result").is_some(), "tx {i} {tracer} on fulmen: {f}");
            let (mut f, mut a) = (f["result"].clone(), a["result"].clone());
            if tracer["tracer"] == "callTracer" {
                // The top frame's `gas`: the transaction's gas limit, as
                // geth (and reth) report it; anvil reports what is left
                // after the intrinsic cost.
                let tx = rpc(fulmen.addr, "eth_getTransactionByHash", json!([hash]));
                assert_eq!(f["gas"], tx["result"]["gas"], "tx {i}: the top call's gas");
                f["gas"] = Value::Null;
                a["gas"] = Value::Null;
            }
            if tracer["tracer"] == "prestateTracer" {
                // The fee recipient's balance differs with each node's base
                // fee (blocks differ); its entry is left out of both.
                let coinbase = "0x0000000000000000000000000000000000000000";
                for frame in [&mut f, &mut a] {
                    if let Some(accounts) = frame.as_object_mut() {
                        accounts.remove(coinbase);
                        for part in ["pre", "post"] {
                            if let Some(inner) =
                                accounts.get_mut(part).and_then(Value::as_object_mut)
                            {
                                inner.remove(coinbase);
                            }
                        }
                    }
                }
            }
            if tracer == &json!({"tracer": "prestateTracer"}) {
                // Accounts empty before the transaction (a created
                // contract) are left out, as geth leaves them out; anvil
                // lists them.
                omit_empty_accounts(&mut a);
            }
            if let (Some(fs), Some(as_)) = (f["structLogs"].as_array(), a["structLogs"].as_array())
            {
                assert_eq!(fs.len(), as_.len(), "tx {i} {tracer}: struct log length");
                for (step, (x, y)) in fs.iter().zip(as_).enumerate() {
                    assert_eq!(x, y, "tx {i} {tracer}: struct log step {step}");
                }
            }
            assert_eq!(f, a, "tx {i} traced with {tracer}");
        }
    }
    // muxTracer gives each of its tracers' traces; flatCallTracer has one
    // entry per call frame of callTracer's tree, each with its position.
    fn frames(call: &Value) -> usize {
        1 + call["calls"]
            .as_array()
            .map_or(0, |c| c.iter().map(frames).sum())
    }
    for hash in hashes {
        let trace = |tracer: Value| {
            rpc(fulmen.addr, "debug_traceTransaction", json!([hash, tracer]))["result"].clone()
        };
        let call = trace(json!({"tracer": "callTracer"}));
        let mux = trace(
            json!({"tracer": "muxTracer", "tracerConfig": {"callTracer": {}, "4byteTracer": null}}),
        );
        assert_eq!(mux["callTracer"], call, "{hash}: mux's callTracer");
        assert_eq!(
            mux["4byteTracer"],
            trace(json!({"tracer": "4byteTracer"})),
            "{hash}: mux's 4byteTracer"
        );
        let flat = trace(json!({"tracer": "flatCallTracer"}));
        let flat = flat
            .as_array()
            .unwrap_or_else(|| panic!("{hash}: flat calls {flat}"));
        assert_eq!(
            flat.len(),
            frames(&call),
            "{hash}: one flat entry per frame"
        );
        assert_eq!(flat[0]["traceAddress"], json!([]), "{hash}");
        assert_eq!(flat[0]["transactionHash"], json!(hash), "{hash}");
        assert_eq!(
            flat[0]["action"]["from"].as_str().map(str::to_lowercase),
            call["from"].as_str().map(str::to_lowercase),
            "{hash}"
        );
    }
    // A block's traces are its transactions' traces, in order.
    let tracer = json!({"tracer": "callTracer"});
    let block = rpc(fulmen.addr, "eth_getTransactionReceipt", json!([hashes[7]]))["result"].clone();
    let by_number = rpc(
        fulmen.addr,
        "debug_traceBlockByNumber",
        json!([block["blockNumber"], tracer]),
    );
    let by_hash = rpc(
        fulmen.addr,
        "debug_traceBlockByHash",
        json!([block["blockHash"], tracer]),
    );
    assert_eq!(by_number["result"], by_hash["result"]);
    let traces = by_number["result"].as_array().expect("traces").clone();
    assert!(!traces.is_empty());
    for entry in traces {
        let one = rpc(
            fulmen.addr,
            "debug_traceTransaction",
            json!([entry["txHash"], tracer]),
        );
        assert_eq!(
            entry["result"], one["result"],
            "block trace of {}",
            entry["txHash"]
        );
    }
    // A call through the SHA-256 precompile (0x02), traced at the latest
    // block.
    let call = json!({"from": format!("{}", signer(8).address()), "to": "0x0000000000000000000000000000000000000002", "data": "0x1234"});
    let tracer = json!({"tracer": "callTracer"});
    let f = rpc(
        fulmen.addr,
        "debug_traceCall",
        json!([call, "latest", tracer]),
    );
    let a = rpc(
        anvil.addr,
        "debug_traceCall",
        json!([call, "latest", tracer]),
    );
    let (mut f, mut a) = (f["result"].clone(), a["result"].clone());
    assert!(f.is_object(), "debug_traceCall on fulmen: {f}");
    f["gas"] = Value::Null;
    a["gas"] = Value::Null;
    assert_eq!(f, a, "debug_traceCall");
}

/// Removes the accounts of a prestate that were empty (no balance, nonce
/// or code) before the transaction.
fn omit_empty_accounts(prestate: &mut Value) {
    let Some(accounts) = prestate.as_object_mut() else {
        return;
    };
    accounts.retain(|_, account| {
        let zero = |field: &str| {
            account
                .get(field)
                .is_none_or(|v| v == "0x0" || v == "0x" || v == 0)
        };
        !(zero("balance") && zero("nonce") && zero("code"))
    });
}

fn quantity(value: &Value) -> u64 {
    u64::from_str_radix(
        value.as_str().expect("quantity").trim_start_matches("0x"),
        16,
    )
    .expect("hex")
}
