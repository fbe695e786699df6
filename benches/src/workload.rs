//! Workloads: setup (funding fresh accounts from the dev accounts, deploying
//! contracts) and pre-signed transactions.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use alloy_consensus::TxEip1559;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_sol_types::{SolCall, sol};
use serde_json::{Value, json};

use crate::client::{Conn, quantity};
use crate::sign::{Key, dev_keys};

sol! {
    function transfer(address to, uint256 value) external returns (bool);
    function balanceOf(address who) external view returns (uint256);
    function bump() external;
}

/// The compiled test contracts (contracts/artifacts.json).
const ARTIFACTS: &str = include_str!("../../contracts/artifacts.json");

/// Fee cap of every load transaction: high enough to ride out base-fee
/// growth during a run; the accounts are funded for it.
pub const MAX_FEE_WEI: u128 = 100_000_000_000;
/// Tip of every load transaction.
pub const TIP_WEI: u128 = 1;

/// What the transactions do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Native transfers between many accounts.
    Transfers,
    /// ERC-20 transfers (the tool deploys its own token).
    Erc20,
    /// Many senders incrementing one contract slot.
    Contention,
    /// Native transfers with an eth_getBalance / eth_call read after each.
    Mixed,
}

impl Workload {
    /// Gas limit per transaction.
    pub fn gas(self) -> u64 {
        match self {
            Self::Transfers | Self::Mixed => 21_000,
            Self::Erc20 | Self::Contention => 80_000,
        }
    }

    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Transfers => "transfers",
            Self::Erc20 => "erc20",
            Self::Contention => "contention",
            Self::Mixed => "mixed",
        }
    }
}

/// One pre-signed request and what it is.
#[derive(Clone)]
pub struct Prepared {
    /// JSON-RPC body, encoded before the clock starts.
    pub body: Vec<u8>,
    /// Transaction hash (zero for reads).
    pub hash: B256,
    /// True for a transaction, false for a read.
    pub is_tx: bool,
}

/// Everything a run needs.
pub struct Plan {
    /// Per connection, its requests in order.
    pub lanes: Vec<Vec<Prepared>>,
    /// Last transaction hash of each sender (to detect preconfirmation).
    pub last_per_sender: Vec<B256>,
    /// Number of transactions.
    pub txs: u64,
}

fn bytecode(name: &str) -> Result<Vec<u8>, String> {
    let json: Value = serde_json::from_str(ARTIFACTS).map_err(|e| e.to_string())?;
    let hex = json[name]["bytecode"]
        .as_str()
        .ok_or_else(|| format!("no bytecode for {name}"))?;
    Ok(hex.parse::<Bytes>().map_err(|e| e.to_string())?.to_vec())
}

async fn nonce(conn: &mut Conn, address: Address) -> Result<u64, String> {
    let n = conn
        .call("eth_getTransactionCount", json!([address, "pending"]))
        .await?;
    quantity(&n)
        .map(|n| n as u64)
        .ok_or_else(|| format!("bad nonce {n}"))
}

/// Sends raw transactions and waits until each one's receipt is there.
async fn send_and_wait(
    conn: &mut Conn,
    raws: Vec<(Vec<u8>, B256)>,
    what: &str,
) -> Result<Vec<Value>, String> {
    for (raw, _) in &raws {
        conn.call("eth_sendRawTransaction", json!([format!("0x{}", hex(raw))]))
            .await
            .map_err(|e| format!("{what}: {e}"))?;
    }
    let mut receipts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for (_, hash) in &raws {
        loop {
            let receipt = conn
                .call("eth_getTransactionReceipt", json!([hash]))
                .await?;
            if !receipt.is_null() {
                if receipt["status"] != "0x1" {
                    return Err(format!("{what}: transaction {hash} failed: {receipt}"));
                }
                receipts.push(receipt);
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{what}: no receipt for {hash} after 120 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(receipts)
}

/// Lower-case hex without prefix.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

fn tx(chain_id: u64, nonce: u64, to: TxKind, value: U256, input: Vec<u8>, gas: u64) -> TxEip1559 {
    TxEip1559 {
        chain_id,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: MAX_FEE_WEI,
        max_priority_fee_per_gas: TIP_WEI,
        to,
        value,
        input: input.into(),
        access_list: Default::default(),
    }
}

/// Funds `accounts` fresh accounts, deploys what the workload needs, and
/// pre-signs `txs` transactions spread over `lanes` connections so that each
/// sender's nonces stay in order on one connection.
pub async fn prepare(
    rpc: SocketAddr,
    workload: Workload,
    txs: u64,
    accounts: u64,
    lanes: usize,
    sync: bool,
    seed: u64,
) -> Result<Plan, String> {
    let mut conn = Conn::connect(rpc)
        .await
        .map_err(|e| format!("connect {rpc}: {e}"))?;
    let chain_id =
        quantity(&conn.call("eth_chainId", json!([])).await?).ok_or("bad chain id")? as u64;
    let dev = dev_keys();
    let accounts = accounts.max(lanes as u64).min(txs.max(1));
    let fresh: Vec<Key> = (0..accounts).map(|i| Key::derived(seed, i)).collect();
    let per_account = txs.div_ceil(accounts);
    let budget =
        U256::from(per_account + 2) * U256::from(u128::from(workload.gas()) * MAX_FEE_WEI + 1);

    let mut dev_nonces = Vec::new();
    for key in &dev {
        dev_nonces.push(nonce(&mut conn, key.address).await?);
    }
    // Contracts first (dev 0), then funding spread over all dev accounts.
    let mut target = Address::ZERO;
    if matches!(workload, Workload::Erc20 | Workload::Contention) {
        let mut code = bytecode(if workload == Workload::Erc20 {
            "Token"
        } else {
            "Probe"
        })?;
        if workload == Workload::Erc20 {
            let supply: U256 = U256::from(1u64) << 200;
            code.extend_from_slice(&supply.to_be_bytes::<32>());
        }
        let deploy = dev[0].sign_1559(tx(
            chain_id,
            dev_nonces[0],
            TxKind::Create,
            U256::ZERO,
            code,
            3_000_000,
        ));
        dev_nonces[0] += 1;
        let receipts = send_and_wait(&mut conn, vec![deploy], "deploy").await?;
        target = receipts[0]["contractAddress"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or("deploy receipt has no contractAddress")?;
    }
    let mut funding = Vec::new();
    for (i, key) in fresh.iter().enumerate() {
        let d = i % dev.len();
        funding.push(dev[d].sign_1559(tx(
            chain_id,
            dev_nonces[d],
            TxKind::Call(key.address),
            budget,
            Vec::new(),
            21_000,
        )));
        dev_nonces[d] += 1;
        if workload == Workload::Erc20 {
            let call = transferCall {
                to: key.address,
                value: U256::from(per_account * 10),
            }
            .abi_encode();
            funding.push(dev[0].sign_1559(tx(
                chain_id,
                dev_nonces[0],
                TxKind::Call(target),
                U256::ZERO,
                call,
                100_000,
            )));
            dev_nonces[0] += 1;
        }
    }
    for chunk in funding.chunks(2048) {
        send_and_wait(&mut conn, chunk.to_vec(), "funding").await?;
    }

    // Pre-sign. Sender s sends on lane s % lanes; requests are ordered
    // round-robin over the senders of a lane.
    let method = if sync {
        "eth_sendRawTransactionSync"
    } else {
        "eth_sendRawTransaction"
    };
    let mut plan = Plan {
        lanes: vec![Vec::new(); lanes],
        last_per_sender: Vec::new(),
        txs: 0,
    };
    let mut rng = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut last = vec![B256::ZERO; fresh.len()];
    for n in 0..per_account {
        for (s, key) in fresh.iter().enumerate() {
            if plan.txs == txs {
                break;
            }
            let peer = fresh[(next() % accounts) as usize].address;
            let (to, value, input) = match workload {
                Workload::Transfers | Workload::Mixed => {
                    (TxKind::Call(peer), U256::from(1), Vec::new())
                }
                Workload::Erc20 => (
                    TxKind::Call(target),
                    U256::ZERO,
                    transferCall {
                        to: peer,
                        value: U256::from(1),
                    }
                    .abi_encode(),
                ),
                Workload::Contention => {
                    (TxKind::Call(target), U256::ZERO, bumpCall {}.abi_encode())
                }
            };
            let (raw, hash) = key.sign_1559(tx(chain_id, n, to, value, input, workload.gas()));
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":["0x{}"]}}"#,
                hex(&raw)
            );
            let lane = &mut plan.lanes[s % lanes];
            lane.push(Prepared {
                body: body.into_bytes(),
                hash,
                is_tx: true,
            });
            if workload == Workload::Mixed {
                let read = if next() % 2 == 0 {
                    format!(
                        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["{peer}","latest"]}}"#
                    )
                } else {
                    format!(
                        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{{"to":"{peer}","data":"0x{}"}},"latest"]}}"#,
                        hex(&balanceOfCall { who: key.address }.abi_encode())
                    )
                };
                lane.push(Prepared {
                    body: read.into_bytes(),
                    hash: B256::ZERO,
                    is_tx: false,
                });
            }
            last[s] = hash;
            plan.txs += 1;
        }
    }
    plan.last_per_sender = last.into_iter().filter(|h| *h != B256::ZERO).collect();
    Ok(plan)
}
