//! Writes the seed inputs of every fuzz target into `fuzz/seeds/<target>/`,
//! made by the project's own encoders from real data: transactions signed
//! with the dev mnemonic's keys (calls, transfers, deployments of the
//! committed contract artifacts, every transaction type), the JSON-RPC
//! requests that cast, viem and alloy send, records and segments written by
//! the storage crate's log, mini-block and seal payloads from exec's
//! encoders, and checkpoint images of a dev-chain state.
//!
//! Each seed is run through its target before it is written, and the ones
//! meant to decode are checked to decode, so a format change that makes the
//! corpus shallow fails here. Usage (from fuzz/, after `cargo fuzz build`):
//! `target/x86_64-unknown-linux-gnu/release/make_seeds [out_dir]`.

use std::path::{Path, PathBuf};
// Linked for the coverage callbacks that `cargo fuzz build` instruments
// every binary of this crate with.
use libfuzzer_sys as _;
use std::sync::Arc;

use alloy_consensus::Transaction as _;
use alloy_consensus::{
    Header, SignableTransaction, TxEip1559, TxEip2930, TxEip4844, TxEip7702, TxEnvelope, TxLegacy,
};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_eips::eip7702::Authorization;
use alloy_primitives::{Address, B256, Bytes, Log, LogData, Signature, TxKind, U256, keccak256};
use fulmen_chain::block::BlockContext;
use fulmen_chain::block::ExecutedTx;
use fulmen_chain::persist;
use fulmen_chain::spec::{DEV_ACCOUNTS, DEV_CHAIN_ID};
use fulmen_chain::tx::decode_and_check;
use fulmen_fuzz::RULES;
use fulmen_storage::checkpoint::{self, CheckpointMeta};
use fulmen_storage::io::{LogFile, SimDisk, ready};
use fulmen_storage::log::{Log as StorageLog, segment_name};
use fulmen_storage::record::{self, RecordKind};
use fulmen_storage::{AccountState, HotState, StateDiff};
use revm::bytecode::Bytecode;
use secp256k1::{Message, SECP256K1, SecretKey};

/// The first keys of the standard test mnemonic ("test test ... junk",
/// m/44'/60'/0'/0/i), which every dev node funds. Checked against
/// `DEV_ACCOUNTS` below.
const DEV_KEYS: [&str; 3] = [
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
];

struct Key(SecretKey);

impl Key {
    fn dev(index: usize) -> Self {
        let bytes: [u8; 32] = hex(DEV_KEYS[index]).try_into().expect("32 bytes");
        let key = Self(SecretKey::from_byte_array(bytes).expect("valid key"));
        assert_eq!(key.address(), DEV_ACCOUNTS[index], "dev key {index}");
        key
    }
    fn address(&self) -> Address {
        let public = self.0.public_key(SECP256K1).serialize_uncompressed();
        Address::from_slice(&keccak256(&public[1..])[12..])
    }
    fn sign(&self, hash: B256) -> Signature {
        let signature = SECP256K1.sign_ecdsa_recoverable(Message::from_digest(hash.0), &self.0);
        let (recid, bytes) = signature.serialize_compact();
        Signature::new(
            U256::from_be_slice(&bytes[..32]),
            U256::from_be_slice(&bytes[32..]),
            i32::from(recid) == 1,
        )
    }
    fn sign_tx<T: SignableTransaction<Signature>>(&self, tx: T) -> TxEnvelope
    where
        TxEnvelope: From<alloy_consensus::Signed<T>>,
    {
        let signature = self.sign(tx.signature_hash());
        TxEnvelope::from(tx.into_signed(signature))
    }
}

fn hex(s: &str) -> Vec<u8> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::from("0x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn selector(signature: &str) -> Vec<u8> {
    keccak256(signature.as_bytes())[..4].to_vec()
}

/// The committed contract artifacts' creation bytecode, by name.
fn artifacts() -> Vec<(String, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contracts/artifacts.json");
    let text = std::fs::read_to_string(&path).expect("contracts/artifacts.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("artifacts are JSON");
    let mut out = Vec::new();
    for (name, artifact) in json.as_object().expect("an object of contracts") {
        let code = artifact["bytecode"].as_str().expect("bytecode string");
        out.push((name.clone(), hex(code)));
    }
    out
}

struct Seeds {
    dir: PathBuf,
    count: usize,
}

impl Seeds {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.dir.join(target);
        std::fs::create_dir_all(&dir).expect("seed dir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
        self.count += 1;
    }
}

/// Signed transactions: (name, envelope, accepted by the stateless checks).
fn transactions(contracts: &[(String, Vec<u8>)]) -> Vec<(String, TxEnvelope, bool)> {
    let keys = [Key::dev(0), Key::dev(1), Key::dev(2)];
    let to = TxKind::Call(keys[1].address());
    let probe = TxKind::Call(Address::repeat_byte(0x42));
    let mut calldata = selector("spin(uint256)");
    calldata.extend_from_slice(&U256::from(1000).to_be_bytes::<32>());
    let mut out = vec![
        (
            "legacy_transfer".into(),
            keys[0].sign_tx(TxLegacy {
                chain_id: Some(DEV_CHAIN_ID),
                nonce: 0,
                gas_price: 1_000_000_000,
                gas_limit: 21_000,
                to,
                value: U256::from(1_000_000_000_000_000u64),
                input: Bytes::new(),
            }),
            true,
        ),
        (
            "legacy_no_chain_id".into(),
            keys[0].sign_tx(TxLegacy {
                chain_id: None,
                gas_price: 1,
                gas_limit: 21_000,
                to,
                ..Default::default()
            }),
            false,
        ),
        (
            "eip2930_call".into(),
            keys[1].sign_tx(TxEip2930 {
                chain_id: DEV_CHAIN_ID,
                nonce: 5,
                gas_price: 2_000_000_000,
                gas_limit: 100_000,
                to: probe,
                value: U256::ZERO,
                access_list: AccessList(vec![AccessListItem {
                    address: Address::repeat_byte(0x42),
                    storage_keys: vec![B256::ZERO, B256::with_last_byte(1)],
                }]),
                input: selector("bump()").into(),
            }),
            true,
        ),
        (
            "eip1559_transfer".into(),
            keys[2].sign_tx(TxEip1559 {
                chain_id: DEV_CHAIN_ID,
                nonce: 1,
                gas_limit: 21_000,
                max_fee_per_gas: 2_000_000_000,
                max_priority_fee_per_gas: 1,
                to,
                value: U256::from(7),
                ..Default::default()
            }),
            true,
        ),
        (
            "eip1559_call".into(),
            keys[0].sign_tx(TxEip1559 {
                chain_id: DEV_CHAIN_ID,
                nonce: 2,
                gas_limit: 500_000,
                max_fee_per_gas: 2_000_000_000,
                max_priority_fee_per_gas: 1_000_000,
                to: probe,
                input: calldata.into(),
                ..Default::default()
            }),
            true,
        ),
        (
            // The input that found `max_cost` wrapping (also in
            // regressions/tx_decode/).
            "eip1559_value_near_max".into(),
            keys[1].sign_tx(TxEip1559 {
                chain_id: DEV_CHAIN_ID,
                gas_limit: 21_000,
                max_fee_per_gas: 10,
                max_priority_fee_per_gas: 1,
                to,
                value: U256::MAX - U256::from(5),
                ..Default::default()
            }),
            true,
        ),
        (
            "eip1559_wrong_chain".into(),
            keys[0].sign_tx(TxEip1559 {
                chain_id: 1,
                gas_limit: 21_000,
                max_fee_per_gas: 1,
                to,
                ..Default::default()
            }),
            false,
        ),
        (
            "eip7702_delegation".into(),
            {
                let auth = Authorization {
                    chain_id: U256::from(DEV_CHAIN_ID),
                    address: Address::repeat_byte(0x42),
                    nonce: 4,
                };
                let signature = keys[1].sign(auth.signature_hash());
                let signed = auth.into_signed(signature);
                keys[0].sign_tx(TxEip7702 {
                    chain_id: DEV_CHAIN_ID,
                    nonce: 3,
                    gas_limit: 100_000,
                    max_fee_per_gas: 2_000_000_000,
                    max_priority_fee_per_gas: 1,
                    to: keys[1].address(),
                    authorization_list: vec![signed],
                    ..Default::default()
                })
            },
            true,
        ),
        (
            "eip4844_blob".into(),
            keys[0].sign_tx(TxEip4844 {
                chain_id: DEV_CHAIN_ID,
                gas_limit: 21_000,
                max_fee_per_gas: 1,
                to: keys[1].address(),
                blob_versioned_hashes: vec![B256::with_last_byte(1)],
                max_fee_per_blob_gas: 1,
                ..Default::default()
            }),
            false,
        ),
    ];
    for (i, (name, code)) in contracts.iter().enumerate() {
        out.push((
            format!("deploy_{name}"),
            keys[i % 3].sign_tx(TxEip1559 {
                chain_id: DEV_CHAIN_ID,
                nonce: i as u64,
                gas_limit: 3_000_000,
                max_fee_per_gas: 2_000_000_000,
                max_priority_fee_per_gas: 1,
                to: TxKind::Create,
                input: code.clone().into(),
                ..Default::default()
            }),
            true,
        ));
    }
    out
}

fn rpc_requests(raw_txs: &[Vec<u8>]) -> Vec<(String, String)> {
    let a0 = format!("{:#x}", DEV_ACCOUNTS[0]);
    let a1 = format!("{:#x}", DEV_ACCOUNTS[1]);
    let hash = format!("{:#x}", B256::repeat_byte(0xab));
    let call = format!(
        r#"{{"from":"{a0}","to":"{a1}","gas":"0x5208","gasPrice":"0x3b9aca00","value":"0x1","data":"{}","nonce":"0x0","chainId":"0x1092"}}"#,
        to_hex(&selector("bump()"))
    );
    let one = |id: usize, method: &str, params: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
    };
    let mut out = vec![
        ("chain_id".into(), one(1, "eth_chainId", "[]")),
        (
            "block_number_no_params".into(),
            r#"{"jsonrpc":"2.0","id":"abc","method":"eth_blockNumber"}"#.into(),
        ),
        (
            "get_balance".into(),
            one(2, "eth_getBalance", &format!(r#"["{a0}","latest"]"#)),
        ),
        (
            "get_nonce_pending".into(),
            one(
                3,
                "eth_getTransactionCount",
                &format!(r#"["{a0}","pending"]"#),
            ),
        ),
        (
            "get_code_number".into(),
            one(4, "eth_getCode", &format!(r#"["{a1}","0x10"]"#)),
        ),
        (
            "get_storage".into(),
            one(
                5,
                "eth_getStorageAt",
                &format!(r#"["{a1}","0x0",{{"blockHash":"{hash}"}}]"#),
            ),
        ),
        (
            "call".into(),
            one(6, "eth_call", &format!(r#"[{call},"latest"]"#)),
        ),
        (
            "call_overrides".into(),
            one(
                7,
                "eth_call",
                &format!(
                    r#"[{call},"pending",{{"{a1}":{{"balance":"0xffff","nonce":"0x2","code":"0x6000","stateDiff":{{"{hash}":"{hash}"}}}}}}]"#
                ),
            ),
        ),
        (
            "estimate_gas_1559".into(),
            one(
                8,
                "eth_estimateGas",
                &format!(
                    r#"[{{"from":"{a0}","to":"{a1}","maxFeePerGas":"0x77359400","maxPriorityFeePerGas":"0x1","input":"0x","type":"0x2","accessList":[{{"address":"{a1}","storageKeys":["{hash}"]}}]}}]"#
                ),
            ),
        ),
        (
            "create_access_list".into(),
            one(9, "eth_createAccessList", &format!(r#"[{call},"latest"]"#)),
        ),
        (
            "get_proof".into(),
            one(
                10,
                "eth_getProof",
                &format!(
                    r#"["{a1}",["{hash}","0x0000000000000000000000000000000000000000000000000000000000000001"],"latest"]"#
                ),
            ),
        ),
        (
            "fee_history".into(),
            one(11, "eth_feeHistory", r#"["0x4","latest",[25,50.5,75]]"#),
        ),
        (
            "get_logs".into(),
            one(
                12,
                "eth_getLogs",
                &format!(
                    r#"[{{"fromBlock":"0x1","toBlock":"latest","address":["{a1}"],"topics":[["{hash}"],null,"{hash}"]}}]"#
                ),
            ),
        ),
        (
            "get_logs_block_hash".into(),
            one(
                13,
                "eth_getLogs",
                &format!(r#"[{{"blockHash":"{hash}","address":"{a1}"}}]"#),
            ),
        ),
        (
            "block_by_number_full".into(),
            one(14, "eth_getBlockByNumber", r#"["finalized",true]"#),
        ),
        (
            "block_by_hash".into(),
            one(15, "eth_getBlockByHash", &format!(r#"["{hash}",false]"#)),
        ),
        (
            "tx_by_block_and_index".into(),
            one(
                16,
                "eth_getTransactionByBlockNumberAndIndex",
                r#"["0x2","0x0"]"#,
            ),
        ),
        (
            "receipt".into(),
            one(17, "eth_getTransactionReceipt", &format!(r#"["{hash}"]"#)),
        ),
        (
            "block_receipts".into(),
            one(18, "eth_getBlockReceipts", r#"["earliest"]"#),
        ),
        (
            "sha3".into(),
            one(19, "web3_sha3", r#"["0x68656c6c6f20776f726c64"]"#),
        ),
        (
            "subscribe_logs".into(),
            one(
                20,
                "eth_subscribe",
                &format!(r#"["logs",{{"address":"{a1}","topics":["{hash}"]}}]"#),
            ),
        ),
        (
            "subscribe_state_changes".into(),
            one(
                21,
                "eth_subscribe",
                &format!(r#"["stateChanges",["{a0}","{a1}"]]"#),
            ),
        ),
        (
            "subscribe_pending_full".into(),
            one(22, "eth_subscribe", r#"["newPendingTransactions",true]"#),
        ),
        (
            "subscribe_heads".into(),
            one(23, "eth_subscribe", r#"["newHeads"]"#),
        ),
        (
            "unsubscribe".into(),
            one(
                24,
                "eth_unsubscribe",
                r#"["0x9cef478923ff08bf67fde6c64013158d"]"#,
            ),
        ),
        (
            "notification".into(),
            r#"{"jsonrpc":"2.0","method":"eth_subscribe","params":["miniBlocks"]}"#.into(),
        ),
        (
            "bad_version".into(),
            r#"{"jsonrpc":"1.0","id":null,"method":"x"}"#.into(),
        ),
        (
            "params_object".into(),
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","params":{}}"#.into(),
        ),
        ("empty_batch".into(), "[]".into()),
        ("not_json".into(), r#"{"jsonrpc":"2.0","id":1,"#.into()),
    ];
    let mut batch = Vec::new();
    for (i, raw) in raw_txs.iter().enumerate() {
        let request = one(
            100 + i,
            if i % 2 == 0 {
                "eth_sendRawTransaction"
            } else {
                "eth_sendRawTransactionSync"
            },
            &format!(r#"["{}"]"#, to_hex(raw)),
        );
        out.push((format!("send_raw_{i}"), request.clone()));
        if batch.len() < 3 {
            batch.push(request);
        }
    }
    batch.push(one(200, "eth_chainId", "[]"));
    batch.push("42".into());
    out.push(("batch".into(), format!("[{}]", batch.join(","))));
    out
}

fn ctx(number: u64) -> BlockContext {
    BlockContext {
        number,
        timestamp: 1_700_000_000 + number,
        base_fee: 1_000_000_000,
        gas_limit: 1_000_000_000,
        coinbase: Address::repeat_byte(0xc0),
        prevrandao: B256::repeat_byte(0x11),
    }
}

/// Mini-block payloads made by exec's encoder from real executed-looking
/// transactions, and a seal for each block.
fn payloads(txs: &[(String, TxEnvelope, bool)]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let accepted: Vec<_> = txs
        .iter()
        .filter(|(_, _, ok)| *ok)
        .map(|(_, envelope, _)| decode_and_check(&envelope.encoded_2718(), &RULES).expect("valid"))
        .collect();
    let mut minis = Vec::new();
    let mut seals = Vec::new();
    let code = Bytecode::new_raw(Bytes::from_static(&[0x60, 0x00, 0x60, 0x00, 0xf3]));
    for (m, chunk) in [&accepted[..1], &accepted[1..3], &accepted[3..]]
        .into_iter()
        .enumerate()
    {
        let mut executed = Vec::new();
        let mut diffs = Vec::new();
        for (i, tx) in chunk.iter().enumerate() {
            let created = tx.envelope.is_create().then(|| Address::repeat_byte(0xcc));
            let logs = (0..i % 3)
                .map(|l| Log {
                    address: Address::repeat_byte(0x42),
                    data: LogData::new_unchecked(
                        (0..=l).map(|t| B256::with_last_byte(t as u8)).collect(),
                        Bytes::from(vec![l as u8; 40]),
                    ),
                })
                .collect();
            executed.push(Arc::new(ExecutedTx {
                tx: tx.clone(),
                success: i % 4 != 3,
                gas_used: tx.intrinsic_gas,
                cumulative_gas_used: tx.intrinsic_gas,
                effective_gas_price: tx.effective_gas_price(1_000_000_000),
                logs,
                contract_address: created,
                block_number: 1,
                block_timestamp: 0,
                index: i as u64,
                first_log_index: 0,
                mini_block: m as u64,
            }));
            let mut diff = StateDiff::default();
            diff.accounts.push((
                tx.sender,
                Some(AccountState {
                    nonce: tx.nonce() + 1,
                    balance: U256::from(10u64).pow(U256::from(22)),
                    code_hash: revm::primitives::KECCAK_EMPTY,
                }),
            ));
            diff.accounts.push((Address::repeat_byte(0xde), None));
            diff.storage
                .push((Address::repeat_byte(0x42), U256::from(i), U256::from(m + 1)));
            if created.is_some() {
                diff.codes.push((code.hash_slow(), code.clone()));
            }
            diffs.push(diff);
        }
        let mut out = Vec::new();
        let net = fulmen_chain::events::NetChanges {
            unchanged_accounts: vec![Address::repeat_byte(0xde)],
            code_changed: executed.iter().filter_map(|tx| tx.contract_address).collect(),
            unchanged_slots: vec![(Address::repeat_byte(0x42), U256::from(m))],
        };
        let meta = persist::MiniBlockMeta {
            number: m as u64,
            timestamp_us: 1_700_000_000_000_000 + m as u64,
            parent: B256::repeat_byte(m as u8 ^ 0x77),
            net: &net,
        };
        persist::encode_mini_block(&ctx(1 + m as u64 / 2), meta, &executed, &diffs, &mut out);
        minis.push(out);
        let c = ctx(1 + m as u64);
        let header = Header {
            parent_hash: B256::repeat_byte(m as u8),
            beneficiary: c.coinbase,
            state_root: B256::repeat_byte(0x5a),
            number: c.number,
            gas_limit: c.gas_limit,
            gas_used: 21_000 * m as u64,
            timestamp: c.timestamp,
            mix_hash: c.prevrandao,
            base_fee_per_gas: Some(c.base_fee),
            withdrawals_root: Some(B256::repeat_byte(0x56)),
            blob_gas_used: Some(0),
            excess_blob_gas: Some(0),
            parent_beacon_block_root: Some(B256::ZERO),
            requests_hash: Some(B256::repeat_byte(0xe3)),
            ..Default::default()
        };
        let mut out = Vec::new();
        persist::encode_seal(&header, 600 + m as u64, &mut out);
        seals.push(out);
    }
    (minis, seals)
}

/// A log written by the storage crate's own writer on the simulated disk:
/// group commits with their padding, over two segments.
fn written_log(minis: &[Vec<u8>], seals: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let disk = SimDisk::new(7, 1 << 24);
    let segment_bytes = 16 * 1024;
    let (mut log, _) =
        ready(StorageLog::open(disk.clone(), segment_bytes)).expect("a new log opens");
    for round in 0..4 {
        for (mini, seal) in minis.iter().zip(seals) {
            log.append(RecordKind::MiniBlock, mini).expect("fits");
            if round % 2 == 1 {
                ready(log.flush()).expect("flush");
            }
            log.append(RecordKind::BlockSeal, seal).expect("fits");
        }
        log.append(RecordKind::DaProgress, &[round; 24])
            .expect("fits");
        log.append(RecordKind::CheckpointMarker, &[round; 8])
            .expect("fits");
        ready(log.flush()).expect("flush");
    }
    let mut segments = Vec::new();
    for segment in 0.. {
        let Ok(file) = disk.open(&segment_name(segment)) else {
            break;
        };
        let mut bytes = file.read_at(0, file.size() as usize).expect("read");
        // Keep the written part and some of the preallocated zeros.
        let used = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        bytes.truncate((used + 256).min(bytes.len()));
        segments.push(bytes);
    }
    segments
}

/// A log scan seed in the framed mode (see `fulmen_fuzz::log_scan`).
fn framed(mode: u8, chunks: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = vec![mode];
    for (tag, payload) in chunks {
        out.push(*tag);
        out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out
}

fn hot_state(contracts: &[(String, Vec<u8>)]) -> HotState {
    let mut state = HotState::new();
    for (i, address) in DEV_ACCOUNTS.iter().enumerate() {
        state.set_account(
            *address,
            AccountState {
                nonce: i as u64,
                balance: U256::from(10u64).pow(U256::from(22)),
                code_hash: revm::primitives::KECCAK_EMPTY,
            },
        );
    }
    for (i, (_, code)) in contracts.iter().enumerate() {
        // Deployed code is what the constructor returns; the creation code
        // stands in for it here (the codec does not care).
        let hash = state.insert_code(Bytecode::new_raw(code.clone().into()));
        let address = Address::repeat_byte(0x42 + i as u8);
        state.set_account(
            address,
            AccountState {
                nonce: 1,
                balance: U256::ZERO,
                code_hash: hash,
            },
        );
        for slot in 0..4u64 {
            state.set_storage(address, U256::from(slot), U256::from(slot * 1000 + 1));
        }
    }
    state
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds"));
    let mut seeds = Seeds { dir, count: 0 };
    let contracts = artifacts();

    let txs = transactions(&contracts);
    let mut raws = Vec::new();
    for (name, envelope, accepted) in &txs {
        let raw = envelope.encoded_2718();
        assert_eq!(fulmen_fuzz::tx_decode(&raw), *accepted, "tx seed {name}");
        seeds.put("tx_decode", name, &raw);
        raws.push(raw);
    }

    for (name, body) in rpc_requests(&raws) {
        fulmen_fuzz::rpc_request(body.as_bytes());
        seeds.put("rpc_request", &name, body.as_bytes());
    }

    let (minis, seals) = payloads(&txs);
    for (i, mini) in minis.iter().enumerate() {
        let seed = [&[0u8][..], mini].concat();
        assert!(fulmen_fuzz::log_payload(&seed), "mini-block seed {i}");
        seeds.put("log_payload", &format!("mini_block_{i}"), &seed);
    }
    for (i, seal) in seals.iter().enumerate() {
        let seed = [&[1u8][..], seal].concat();
        assert!(fulmen_fuzz::log_payload(&seed), "seal seed {i}");
        seeds.put("log_payload", &format!("seal_{i}"), &seed);
    }

    let segments = written_log(&minis, &seals);
    assert!(segments.len() >= 2, "the writer rotated");
    for (i, segment) in segments.iter().enumerate() {
        let seed = [&[0u8][..], segment].concat();
        assert!(fulmen_fuzz::log_scan(&seed) > 0, "segment seed {i}");
        seeds.put("log_scan", &format!("segment_{i}"), &seed);
        // Torn in the middle of its last batch, and with a flipped byte.
        let mut torn = seed.clone();
        let used = torn.iter().rposition(|b| *b != 0).unwrap_or(0);
        for b in &mut torn[used.saturating_sub(300)..] {
            *b = 0;
        }
        fulmen_fuzz::log_scan(&torn);
        seeds.put("log_scan", &format!("segment_{i}_torn"), &torn);
        let mut flipped = seed.clone();
        flipped[1 + record::HEADER_BYTES + 3] ^= 0x20;
        fulmen_fuzz::log_scan(&flipped);
        seeds.put("log_scan", &format!("segment_{i}_flipped"), &flipped);
    }
    let seed = framed(
        0b0000_0011,
        &[
            (5, &minis[1][..]),
            (1, &seals[0][..]),
            (4, &[0u8; 40][..]),
            (0xFF, &[][..]),
            (5, &minis[2][..]),
            (0, &b"FLMN\x01\x01\0\0"[..]),
            (1, &seals[1][..]),
            (4, &[0u8; 8][..]),
        ],
    );
    // Three records in the first segment, one before the raw bytes in the
    // second (which end it as a torn tail).
    assert_eq!(fulmen_fuzz::log_scan(&seed), 4);
    seeds.put("log_scan", "framed_two_segments", &seed);

    let state = hot_state(&contracts);
    let meta = CheckpointMeta {
        number: 42,
        hash: B256::repeat_byte(0x42),
        state_root: B256::repeat_byte(0x5a),
    };
    let image = checkpoint::encode(&meta, &state, &[1, 2, 3]);
    let whole = [&[0u8][..], &image].concat();
    assert!(fulmen_fuzz::checkpoint_image(&whole), "checkpoint seed");
    seeds.put("checkpoint_image", "dev_state", &whole);
    let body = [&[1u8][..], &image[..image.len() - 4]].concat();
    assert!(fulmen_fuzz::checkpoint_image(&body), "checkpoint body seed");
    seeds.put("checkpoint_image", "dev_state_body", &body);
    let empty = checkpoint::encode(&meta, &HotState::new(), &[]);
    let body = [&[1u8][..], &empty[..empty.len() - 4]].concat();
    assert!(fulmen_fuzz::checkpoint_image(&body));
    seeds.put("checkpoint_image", "empty_state_body", &body);

    println!("wrote {} seeds under {}", seeds.count, seeds.dir.display());
}
