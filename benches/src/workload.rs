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

/// What [`prepare`] makes: the workload, its size and its spread.
#[derive(Debug, Clone, Copy)]
pub struct PlanConfig {
    /// What the transactions do.
    pub workload: Workload,
    /// Transactions to pre-sign.
    pub txs: u64,
    /// Fresh sender accounts (raised to one per lane, capped at `txs`).
    pub accounts: u64,
    /// Connections the requests are spread over.
    pub lanes: usize,
    /// eth_sendRawTransactionSync instead of eth_sendRawTransaction.
    pub sync: bool,
    /// Key seed of the fresh accounts and of the peer choice.
    pub seed: u64,
}

/// Funds `config.accounts` fresh accounts, deploys what the workload needs,
/// and pre-signs `config.txs` transactions spread over `config.lanes`
/// connections so that each sender's nonces stay in order on one connection.
pub async fn prepare(rpc: SocketAddr, config: &PlanConfig) -> Result<Plan, String> {
    let mut conn = Conn::connect(rpc)
        .await
        .map_err(|e| format!("connect {rpc}: {e}"))?;
    let chain_id =
        quantity(&conn.call("eth_chainId", json!([])).await?).ok_or("bad chain id")? as u64;
    let accounts = config
        .accounts
        .max(config.lanes as u64)
        .min(config.txs.max(1));
    let fresh: Vec<Key> = (0..accounts)
        .map(|i| Key::derived(config.seed, i))
        .collect();
    let per_account = config.txs.div_ceil(accounts);
    let mut dev = DevAccounts::fetch(&mut conn, chain_id).await?;
    // Contracts first (dev 0), then funding spread over all dev accounts.
    let target = match config.workload {
        Workload::Erc20 | Workload::Contention => {
            deploy(&mut conn, &mut dev, config.workload).await?
        }
        Workload::Transfers | Workload::Mixed => Address::ZERO,
    };
    let funding = fund(&mut dev, config.workload, &fresh, per_account, target);
    for chunk in funding.chunks(2048) {
        send_and_wait(&mut conn, chunk.to_vec(), "funding").await?;
    }
    let senders = Senders {
        keys: &fresh,
        per_account,
        chain_id,
        target,
    };
    Ok(presign(config, &senders))
}

/// The dev accounts and their next nonces.
struct DevAccounts {
    keys: Vec<Key>,
    nonces: Vec<u64>,
    chain_id: u64,
}

impl DevAccounts {
    /// The dev accounts with their pending nonces.
    async fn fetch(conn: &mut Conn, chain_id: u64) -> Result<Self, String> {
        let keys = dev_keys();
        let mut nonces = Vec::new();
        for key in &keys {
            nonces.push(nonce(conn, key.address).await?);
        }
        Ok(Self {
            keys,
            nonces,
            chain_id,
        })
    }

    /// Signs a transaction from dev account `d` with its next nonce.
    fn sign(
        &mut self,
        d: usize,
        to: TxKind,
        value: U256,
        input: Vec<u8>,
        gas: u64,
    ) -> (Vec<u8>, B256) {
        let signed =
            self.keys[d].sign_1559(tx(self.chain_id, self.nonces[d], to, value, input, gas));
        self.nonces[d] += 1;
        signed
    }
}

/// Deploys the workload's contract from dev account 0; returns its address.
async fn deploy(
    conn: &mut Conn,
    dev: &mut DevAccounts,
    workload: Workload,
) -> Result<Address, String> {
    let code = if workload == Workload::Erc20 {
        let mut code = bytecode("Token")?;
        let supply: U256 = U256::from(1u64) << 200;
        code.extend_from_slice(&supply.to_be_bytes::<32>());
        code
    } else {
        bytecode("Probe")?
    };
    let deploy = dev.sign(0, TxKind::Create, U256::ZERO, code, 3_000_000);
    let receipts = send_and_wait(conn, vec![deploy], "deploy").await?;
    receipts[0]["contractAddress"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| "deploy receipt has no contractAddress".to_string())
}

/// Signed transactions giving each fresh account the ether (and, for ERC-20,
/// the tokens at `token`) for `per_account` transactions.
fn fund(
    dev: &mut DevAccounts,
    workload: Workload,
    fresh: &[Key],
    per_account: u64,
    token: Address,
) -> Vec<(Vec<u8>, B256)> {
    let budget =
        U256::from(per_account + 2) * U256::from(u128::from(workload.gas()) * MAX_FEE_WEI + 1);
    let mut funding = Vec::new();
    for (i, key) in fresh.iter().enumerate() {
        let d = i % dev.keys.len();
        funding.push(dev.sign(d, TxKind::Call(key.address), budget, Vec::new(), 21_000));
        if workload == Workload::Erc20 {
            let call = transferCall {
                to: key.address,
                value: U256::from(per_account * 10),
            }
            .abi_encode();
            funding.push(dev.sign(0, TxKind::Call(token), U256::ZERO, call, 100_000));
        }
    }
    funding
}

/// The funded senders of a run.
struct Senders<'a> {
    keys: &'a [Key],
    /// Transactions each one sends (the last round may stop short).
    per_account: u64,
    chain_id: u64,
    /// The deployed contract, zero when the workload has none.
    target: Address,
}

/// Xorshift64: the peers and reads of a run follow from its seed.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Pre-signs the run. Sender s sends on lane s % lanes; requests are
/// ordered round-robin over the senders of a lane.
fn presign(config: &PlanConfig, senders: &Senders) -> Plan {
    let method = if config.sync {
        "eth_sendRawTransactionSync"
    } else {
        "eth_sendRawTransaction"
    };
    let mut plan = Plan {
        lanes: vec![Vec::new(); config.lanes],
        last_per_sender: Vec::new(),
        txs: 0,
    };
    let mut rng = XorShift::new(config.seed);
    let mut last = vec![B256::ZERO; senders.keys.len()];
    for n in 0..senders.per_account {
        for (s, key) in senders.keys.iter().enumerate() {
            if plan.txs == config.txs {
                break;
            }
            let peer = senders.keys[(rng.next() % senders.keys.len() as u64) as usize].address;
            let (to, value, input) = load_call(config.workload, peer, senders.target);
            let (raw, hash) = key.sign_1559(tx(
                senders.chain_id,
                n,
                to,
                value,
                input,
                config.workload.gas(),
            ));
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":["0x{}"]}}"#,
                hex(&raw)
            );
            let lane = &mut plan.lanes[s % config.lanes];
            lane.push(Prepared {
                body: body.into_bytes(),
                hash,
                is_tx: true,
            });
            if config.workload == Workload::Mixed {
                lane.push(read_request(rng.next(), peer, key.address));
            }
            last[s] = hash;
            plan.txs += 1;
        }
    }
    plan.last_per_sender = last.into_iter().filter(|h| *h != B256::ZERO).collect();
    plan
}

/// Destination, value and input of one load transaction to `peer`.
fn load_call(workload: Workload, peer: Address, target: Address) -> (TxKind, U256, Vec<u8>) {
    match workload {
        Workload::Transfers | Workload::Mixed => (TxKind::Call(peer), U256::from(1), Vec::new()),
        Workload::Erc20 => (
            TxKind::Call(target),
            U256::ZERO,
            transferCall {
                to: peer,
                value: U256::from(1),
            }
            .abi_encode(),
        ),
        Workload::Contention => (TxKind::Call(target), U256::ZERO, bumpCall {}.abi_encode()),
    }
}

/// The mixed workload's read after a transfer to `peer`: its balance when
/// `dice` is even, else a balanceOf(`who`) call to it.
fn read_request(dice: u64, peer: Address, who: Address) -> Prepared {
    let read = if dice.is_multiple_of(2) {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["{peer}","latest"]}}"#
        )
    } else {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{{"to":"{peer}","data":"0x{}"}},"latest"]}}"#,
            hex(&balanceOfCall { who }.abi_encode())
        )
    };
    Prepared {
        body: read.into_bytes(),
        hash: B256::ZERO,
        is_tx: false,
    }
}
