//! A small blocking client for the L1: JSON-RPC (execution node) and the
//! beacon API's blob endpoint.
//!
//! Blocking on purpose: the DA role runs on its own pinned OS thread, and
//! L1 answers take milliseconds to seconds, so an async runtime would buy
//! nothing. The HTTP crate is `ureq` 3: blocking, `#![forbid(unsafe_code)]`,
//! kept up (3.x releases through 2026), rustls for the https endpoints real
//! L1 providers have (with the Mozilla roots from `webpki-roots`, so no
//! system certificate store is needed), per-request timeouts and a cap on
//! response bodies, and only two crates of its own on top of what the
//! workspace already builds (rustls, http). reqwest's blocking client would
//! start a tokio runtime inside; hyper alone has no TLS or pooling.
//!
//! Every call has a timeout (the `*_TIMEOUT_MS` consts cover the whole
//! exchange, body included) and every answer has a size cap. No answer
//! panics: anything unexpected is [`L1Error::Malformed`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_primitives::{Address, B256, hex};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::blob::{BLOB_BYTES, Blob};
use crate::post::{BlobFees, SidecarForm};

/// Timeout of one JSON-RPC call but `eth_sendRawTransaction`, whole
/// exchange.
pub const RPC_TIMEOUT_MS: u64 = 10_000;
/// Timeout of `eth_sendRawTransaction`: up to 6 blobs, 1.6 MB of hex out.
pub const SEND_TIMEOUT_MS: u64 = 30_000;
/// Timeout of one beacon blob fetch (megabytes back).
pub const BEACON_TIMEOUT_MS: u64 = 30_000;
/// Timeout of the TCP connect and TLS handshake, within the above.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Largest JSON-RPC answer read: a block with all its txs as objects.
pub const RPC_ANSWER_BYTES_MAX: u64 = 32 << 20;
/// Largest beacon answer read: 128 blobs as hex (262 KB each).
pub const BEACON_ANSWER_BYTES_MAX: u64 = 64 << 20;
/// Most blocks asked of `eth_feeHistory` (geth caps at 1,024).
pub const FEE_HISTORY_BLOCKS_MAX: u64 = 1024;
/// How much of an unparsable answer an error quotes.
const ERROR_QUOTE_BYTES_MAX: usize = 200;

/// What went wrong talking to the L1. The URL shown is the endpoint's
/// scheme and host only: providers put API keys in the path.
#[derive(Debug, thiserror::Error)]
pub enum L1Error {
    /// No answer: connect, TLS, timeout, or the connection broke.
    #[error("L1 {call} at {url}: {detail}")]
    Transport {
        /// JSON-RPC method or beacon path.
        call: String,
        /// Endpoint (scheme and host).
        url: String,
        /// ureq's description.
        detail: String,
        /// Whether it was a timeout.
        timeout: bool,
    },
    /// An HTTP error status without a JSON-RPC error in the body.
    #[error("L1 {call} at {url}: HTTP {status}: {body}")]
    Status {
        /// JSON-RPC method or beacon path.
        call: String,
        /// Endpoint (scheme and host).
        url: String,
        /// HTTP status code.
        status: u16,
        /// The body's start.
        body: String,
    },
    /// The node answered with a JSON-RPC error.
    #[error("L1 {call}: JSON-RPC error {code}: {message}")]
    Rpc {
        /// JSON-RPC method.
        call: String,
        /// JSON-RPC error code.
        code: i64,
        /// JSON-RPC error message.
        message: String,
    },
    /// The answer is not what the method answers.
    #[error("L1 {call}: malformed answer: {detail}")]
    Malformed {
        /// JSON-RPC method or beacon path.
        call: String,
        /// What is wrong.
        detail: String,
    },
}

/// How a node refused `eth_sendRawTransaction`, from the error message
/// (geth, reth and anvil wordings; there are no standard codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRefusal {
    /// The node has this exact tx already: treat as sent.
    AlreadyKnown,
    /// A tx with this nonce is pending and these fees do not bump it enough.
    ReplacementUnderpriced,
    /// The nonce was used by a tx already included.
    NonceTooLow,
    /// Anything else.
    Other,
}

impl L1Error {
    /// Classifies a refused `eth_sendRawTransaction`; `None` if the node
    /// did not answer with a JSON-RPC error.
    pub fn send_refusal(&self) -> Option<SendRefusal> {
        let L1Error::Rpc { message, .. } = self else {
            return None;
        };
        let m = message.to_ascii_lowercase();
        Some(
            if m.contains("already known")
                || m.contains("already imported")
                || m.contains("already exists")
            {
                SendRefusal::AlreadyKnown
            } else if m.contains("underpriced") {
                SendRefusal::ReplacementUnderpriced
            } else if m.contains("nonce too low") {
                SendRefusal::NonceTooLow
            } else {
                SendRefusal::Other
            },
        )
    }
}

/// A block to ask about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockTag {
    /// The head.
    Latest,
    /// The consensus layer's safe block.
    Safe,
    /// The consensus layer's finalized block.
    Finalized,
    /// The pending block (for nonces: counting pool txs).
    Pending,
    /// A block number.
    Number(u64),
}

impl BlockTag {
    fn param(self) -> Value {
        match self {
            BlockTag::Latest => json!("latest"),
            BlockTag::Safe => json!("safe"),
            BlockTag::Finalized => json!("finalized"),
            BlockTag::Pending => json!("pending"),
            BlockTag::Number(n) => json!(format!("{n:#x}")),
        }
    }
}

/// The fields of an L1 block header the batcher uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L1Header {
    /// Block number.
    #[serde(with = "alloy_serde::quantity")]
    pub number: u64,
    /// Block hash.
    pub hash: B256,
    /// Parent's hash.
    pub parent_hash: B256,
    /// Timestamp, seconds.
    #[serde(with = "alloy_serde::quantity")]
    pub timestamp: u64,
    /// EIP-1559 base fee, wei (absent before London).
    #[serde(default, with = "alloy_serde::quantity::opt")]
    pub base_fee_per_gas: Option<u128>,
    /// EIP-4844 excess blob gas (absent before Cancun).
    #[serde(default, with = "alloy_serde::quantity::opt")]
    pub excess_blob_gas: Option<u64>,
    /// EIP-4844 blob gas used (absent before Cancun).
    #[serde(default, with = "alloy_serde::quantity::opt")]
    pub blob_gas_used: Option<u64>,
    /// EIP-4788: the root of the beacon block before this one (absent
    /// before Cancun). The next block's value names this block's beacon
    /// block, which a real beacon node's blob endpoint takes.
    #[serde(default)]
    pub parent_beacon_block_root: Option<B256>,
}

/// The fields of an L1 transaction a reader of batcher txs uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L1Tx {
    /// Tx hash.
    pub hash: B256,
    /// Sender (recovered by the node).
    pub from: Address,
    /// Recipient; `None` for a contract creation.
    #[serde(default)]
    pub to: Option<Address>,
    /// Sender nonce.
    #[serde(with = "alloy_serde::quantity")]
    pub nonce: u64,
    /// EIP-2718 type (0 legacy, 3 blob).
    #[serde(rename = "type", default, with = "alloy_serde::quantity")]
    pub tx_type: u8,
    /// Versioned hashes of its blobs (type 3), in order.
    #[serde(default)]
    pub blob_versioned_hashes: Vec<B256>,
    /// Calldata.
    #[serde(default)]
    pub input: alloy_primitives::Bytes,
    /// Blob fee cap (type 3).
    #[serde(default, with = "alloy_serde::quantity::opt")]
    pub max_fee_per_blob_gas: Option<u128>,
    /// Block hash, `None` while pending.
    #[serde(default)]
    pub block_hash: Option<B256>,
    /// Block number, `None` while pending.
    #[serde(default, with = "alloy_serde::quantity::opt")]
    pub block_number: Option<u64>,
}

/// A block header and its transactions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct L1Block {
    /// The header.
    #[serde(flatten)]
    pub header: L1Header,
    /// Its transactions, in order.
    pub transactions: Vec<L1Tx>,
}

/// The fields of a receipt the batcher uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L1Receipt {
    /// Tx hash.
    pub transaction_hash: B256,
    /// Including block's number.
    #[serde(with = "alloy_serde::quantity")]
    pub block_number: u64,
    /// Including block's hash.
    pub block_hash: B256,
    /// 1 = success, 0 = reverted.
    #[serde(with = "alloy_serde::quantity")]
    pub status: u64,
    /// Execution gas used.
    #[serde(with = "alloy_serde::quantity")]
    pub gas_used: u64,
    /// Price paid per execution gas, wei.
    #[serde(with = "alloy_serde::quantity")]
    pub effective_gas_price: u128,
    /// Blob gas used (type 3).
    #[serde(default, with = "alloy_serde::quantity::opt")]
    pub blob_gas_used: Option<u64>,
    /// Price paid per blob gas, wei (type 3).
    #[serde(default, with = "alloy_serde::quantity::opt")]
    pub blob_gas_price: Option<u128>,
}

impl L1Receipt {
    /// Whether the tx succeeded (status 1).
    pub fn succeeded(&self) -> bool {
        self.status == 1
    }
}

/// `eth_feeHistory`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeeHistory {
    /// First block covered.
    #[serde(with = "alloy_serde::quantity")]
    pub oldest_block: u64,
    /// Base fee per block, plus the next block's.
    #[serde(with = "alloy_serde::quantity::vec")]
    pub base_fee_per_gas: Vec<u128>,
    /// Blob base fee per block, plus the next block's (Cancun on).
    #[serde(default, with = "alloy_serde::quantity::vec")]
    pub base_fee_per_blob_gas: Vec<u128>,
    /// Tips at the asked percentiles, per block.
    #[serde(default, with = "alloy_serde::quantity::u128_vec_vec_opt")]
    pub reward: Option<Vec<Vec<u128>>>,
}

/// Which sidecar form to post, as configured (`[da] l1_fork`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L1ForkSetting {
    /// Ask the L1 (`eth_config`, EIP-7910).
    #[default]
    Auto,
    /// Cancun or Prague: EIP-4844 sidecars.
    Prague,
    /// Osaka or later: EIP-7594 sidecars.
    Osaka,
}

impl std::str::FromStr for L1ForkSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "prague" => Ok(Self::Prague),
            "osaka" => Ok(Self::Osaka),
            other => Err(format!(
                "l1_fork {other:?}: expected \"auto\", \"prague\" or \"osaka\""
            )),
        }
    }
}

/// The sidecar form the L1 takes now, and the next fork's if one is
/// scheduled (from `eth_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Forks {
    /// Form of the fork in force.
    pub current: SidecarForm,
    /// Form of the next fork and its activation time (seconds).
    pub next: Option<(SidecarForm, u64)>,
}

impl L1Forks {
    /// The form for a tx to be included at `timestamp_secs`.
    pub fn form_at(&self, timestamp_secs: u64) -> SidecarForm {
        match self.next {
            Some((form, activation_secs)) if timestamp_secs >= activation_secs => form,
            _ => self.current,
        }
    }
}

/// Reads the sidecar form of one fork of an `eth_config` answer (EIP-7910):
/// no `blobSchedule` → before Cancun, no blob txs at all; the P256VERIFY
/// precompile (EIP-7951, new in Osaka) → Osaka or later, EIP-7594; else
/// Cancun or Prague, EIP-4844. EIP-7910 gives no fork name, so a fork is
/// known by what it brought.
pub fn fork_form(fork: &Value) -> Result<SidecarForm, String> {
    if !fork.is_object() {
        return Err("fork is not an object".into());
    }
    if fork.get("blobSchedule").is_none_or(Value::is_null) {
        return Err("no blobSchedule: the L1 is before Cancun and takes no blob txs".into());
    }
    let Some(precompiles) = fork.get("precompiles").and_then(Value::as_object) else {
        return Err("no precompiles object".into());
    };
    Ok(if precompiles.contains_key("P256VERIFY") {
        SidecarForm::Eip7594
    } else {
        SidecarForm::Eip4844
    })
}

/// Reads `eth_config`'s answer into [`L1Forks`].
pub fn parse_eth_config(config: &Value) -> Result<L1Forks, String> {
    let current = fork_form(config.get("current").unwrap_or(&Value::Null))
        .map_err(|e| format!("current: {e}"))?;
    let next = match config.get("next") {
        None | Some(Value::Null) => None,
        Some(fork) => {
            let form = fork_form(fork).map_err(|e| format!("next: {e}"))?;
            let at = fork
                .get("activationTime")
                .and_then(json_u64)
                .ok_or("next: no activationTime")?;
            Some((form, at))
        }
    };
    Ok(L1Forks { current, next })
}

/// A JSON number or a hex quantity string.
fn json_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => u64::from_str_radix(s.strip_prefix("0x")?, 16).ok(),
        _ => None,
    }
}

/// The blocking L1 client. One per DA thread; calls take `&self`.
#[derive(Debug)]
pub struct L1Client {
    agent: ureq::Agent,
    rpc_url: String,
    beacon_url: String,
    next_id: AtomicU64,
}

/// `scheme://host[:port]`, then `/…` if there was more: what errors show.
pub fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split(['?', '#']).next().unwrap_or("");
    let more = if path.is_empty() && !authority.contains(['?', '#']) {
        ""
    } else {
        "/…"
    };
    if scheme.is_empty() {
        format!("{host}{more}")
    } else {
        format!("{scheme}://{host}{more}")
    }
}

impl L1Client {
    /// A client for the execution node at `rpc_url` and the beacon API at
    /// `beacon_url` (anvil serves both on one port). Connects lazily.
    pub fn new(rpc_url: &str, beacon_url: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_millis(CONNECT_TIMEOUT_MS)))
            .timeout_global(Some(Duration::from_millis(RPC_TIMEOUT_MS)))
            // Error statuses carry JSON-RPC errors and beacon messages.
            .http_status_as_error(false)
            .build();
        Self {
            agent: config.into(),
            rpc_url: rpc_url.trim_end_matches('/').to_string(),
            beacon_url: beacon_url.trim_end_matches('/').to_string(),
            next_id: AtomicU64::new(1),
        }
    }

    /// One JSON-RPC call; `T` is the `result`'s type (an `Option` where the
    /// method may answer `null`).
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
        timeout_ms: u64,
    ) -> Result<T, L1Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body =
            json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }).to_string();
        let request = self
            .agent
            .post(&self.rpc_url)
            .header("content-type", "application/json")
            .config()
            .timeout_global(Some(Duration::from_millis(timeout_ms)))
            .build();
        let (status, text) = self.exchange(
            method,
            &self.rpc_url,
            request.send(body),
            RPC_ANSWER_BYTES_MAX,
        )?;
        let malformed = |detail: String| L1Error::Malformed {
            call: method.to_string(),
            detail,
        };
        let answer: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) if (200..300).contains(&status) => {
                return Err(malformed(format!("not JSON: {e}: {}", quote(&text))));
            }
            Err(_) => return Err(self.status_error(method, &self.rpc_url, status, &text)),
        };
        if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
            let code = error.get("code").and_then(Value::as_i64);
            let message = error.get("message").and_then(Value::as_str);
            return match (code, message) {
                (Some(code), Some(message)) => Err(L1Error::Rpc {
                    call: method.to_string(),
                    code,
                    message: message.to_string(),
                }),
                _ => Err(malformed(format!(
                    "error without code and message: {}",
                    quote(&error.to_string())
                ))),
            };
        }
        if !(200..300).contains(&status) {
            return Err(self.status_error(method, &self.rpc_url, status, &text));
        }
        if answer.get("id").and_then(Value::as_u64) != Some(id) {
            return Err(malformed(format!("answer id is not {id}")));
        }
        let Some(result) = answer.get("result") else {
            return Err(malformed("no result and no error".into()));
        };
        T::deserialize(result)
            .map_err(|e| malformed(format!("{e}: {}", quote(&result.to_string()))))
    }

    fn exchange(
        &self,
        call: &str,
        url: &str,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        limit_bytes: u64,
    ) -> Result<(u16, String), L1Error> {
        let transport = |e: ureq::Error| match e {
            ureq::Error::BodyExceedsLimit(n) => L1Error::Malformed {
                call: call.to_string(),
                detail: format!("answer over {n} bytes"),
            },
            e => L1Error::Transport {
                call: call.to_string(),
                url: shown_url(url),
                timeout: matches!(e, ureq::Error::Timeout(_)),
                detail: e.to_string(),
            },
        };
        let mut response = sent.map_err(transport)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(limit_bytes)
            .lossy_utf8(true)
            .read_to_string()
            .map_err(transport)?;
        Ok((status, text))
    }

    fn status_error(&self, call: &str, url: &str, status: u16, text: &str) -> L1Error {
        L1Error::Status {
            call: call.to_string(),
            url: shown_url(url),
            status,
            body: quote(text),
        }
    }

    fn small<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, L1Error> {
        self.call(method, params, RPC_TIMEOUT_MS)
    }

    /// `eth_chainId`.
    pub fn chain_id(&self) -> Result<u64, L1Error> {
        self.small::<alloy_primitives::U64>("eth_chainId", json!([]))
            .map(|n| n.to())
    }

    /// `eth_blockNumber`.
    pub fn block_number(&self) -> Result<u64, L1Error> {
        self.small::<alloy_primitives::U64>("eth_blockNumber", json!([]))
            .map(|n| n.to())
    }

    /// The header of a block; `None` if the node has no such block.
    pub fn header(&self, block: BlockTag) -> Result<Option<L1Header>, L1Error> {
        self.small("eth_getBlockByNumber", json!([block.param(), false]))
    }

    /// A block with its transactions; `None` if the node has no such block.
    pub fn block_with_txs(&self, block: BlockTag) -> Result<Option<L1Block>, L1Error> {
        self.small("eth_getBlockByNumber", json!([block.param(), true]))
    }

    /// `eth_getTransactionCount`: [`BlockTag::Pending`] counts the pool's
    /// txs, [`BlockTag::Latest`] only included ones.
    pub fn nonce(&self, address: Address, block: BlockTag) -> Result<u64, L1Error> {
        self.small::<alloy_primitives::U64>(
            "eth_getTransactionCount",
            json!([address, block.param()]),
        )
        .map(|n| n.to())
    }

    /// `eth_maxPriorityFeePerGas`, wei.
    pub fn max_priority_fee_per_gas(&self) -> Result<u128, L1Error> {
        self.small::<alloy_primitives::U128>("eth_maxPriorityFeePerGas", json!([]))
            .map(|n| n.to())
    }

    /// `eth_blobBaseFee`: the blob base fee of the next block, wei.
    pub fn blob_base_fee(&self) -> Result<u128, L1Error> {
        self.small::<alloy_primitives::U128>("eth_blobBaseFee", json!([]))
            .map(|n| n.to())
    }

    /// `eth_feeHistory` over the last `blocks` (at most
    /// [`FEE_HISTORY_BLOCKS_MAX`]) up to `newest`, with tips at `percentiles`.
    pub fn fee_history(
        &self,
        blocks: u64,
        newest: BlockTag,
        percentiles: &[f64],
    ) -> Result<FeeHistory, L1Error> {
        let blocks = blocks.clamp(1, FEE_HISTORY_BLOCKS_MAX);
        self.small(
            "eth_feeHistory",
            json!([format!("{blocks:#x}"), newest.param(), percentiles]),
        )
    }

    /// Fees for a blob tx now ([`BlobFees::from_market`] of the latest base
    /// fee, `eth_maxPriorityFeePerGas` and `eth_blobBaseFee`).
    pub fn suggest_fees(&self) -> Result<BlobFees, L1Error> {
        let head = self
            .header(BlockTag::Latest)?
            .ok_or_else(|| L1Error::Malformed {
                call: "eth_getBlockByNumber".into(),
                detail: "no latest block".into(),
            })?;
        let base_fee = head.base_fee_per_gas.ok_or_else(|| L1Error::Malformed {
            call: "eth_getBlockByNumber".into(),
            detail: format!("block {} has no base fee (before London)", head.number),
        })?;
        Ok(BlobFees::from_market(
            base_fee,
            self.max_priority_fee_per_gas()?,
            self.blob_base_fee()?,
        ))
    }

    /// `eth_sendRawTransaction`; returns the hash the node computed.
    pub fn send_raw_transaction(&self, raw: &[u8]) -> Result<B256, L1Error> {
        self.call(
            "eth_sendRawTransaction",
            json!([hex::encode_prefixed(raw)]),
            SEND_TIMEOUT_MS,
        )
    }

    /// `eth_getTransactionReceipt`; `None` while the tx is not in a block.
    pub fn receipt(&self, hash: B256) -> Result<Option<L1Receipt>, L1Error> {
        self.small("eth_getTransactionReceipt", json!([hash]))
    }

    /// `eth_getTransactionByHash`; `None` if the node does not know it.
    pub fn transaction(&self, hash: B256) -> Result<Option<L1Tx>, L1Error> {
        self.small("eth_getTransactionByHash", json!([hash]))
    }

    /// The L1's forks' sidecar forms from `eth_config` (EIP-7910).
    pub fn forks(&self) -> Result<L1Forks, L1Error> {
        let config: Value = self.small("eth_config", json!([]))?;
        parse_eth_config(&config).map_err(|detail| L1Error::Malformed {
            call: "eth_config".into(),
            detail,
        })
    }

    /// The sidecar form to post in: the configured one, or for
    /// [`L1ForkSetting::Auto`] the one `eth_config` gives for the fork in
    /// force. A node without `eth_config` (older than geth 1.16.3 / reth
    /// 1.8, or a provider that filters it) gives an [`L1Error::Rpc`]: set
    /// `l1_fork` by hand then.
    pub fn sidecar_form(&self, setting: L1ForkSetting) -> Result<SidecarForm, L1Error> {
        match setting {
            L1ForkSetting::Prague => Ok(SidecarForm::Eip4844),
            L1ForkSetting::Osaka => Ok(SidecarForm::Eip7594),
            L1ForkSetting::Auto => Ok(self.forks()?.current),
        }
    }

    /// The blobs of a block from the beacon API,
    /// `GET {beacon}/eth/v1/beacon/blobs/{block_id}`, in tx order. anvil
    /// takes the execution block number as `block_id`; a real beacon node
    /// takes a slot, a block root, `head`, `finalized` or `genesis`.
    pub fn beacon_blobs(&self, block_id: &str) -> Result<Vec<Blob>, L1Error> {
        let path = format!("/eth/v1/beacon/blobs/{block_id}");
        let text = self.beacon_get(&path)?;
        parse_beacon_blobs(&text).map_err(|detail| L1Error::Malformed { call: path, detail })
    }

    /// The beacon chain's clock: its genesis time and seconds per slot,
    /// from `GET {beacon}/eth/v1/beacon/genesis` and `/eth/v1/config/spec`
    /// (what maps an execution block's timestamp to its slot).
    pub fn beacon_slot_clock(&self) -> Result<SlotClock, L1Error> {
        #[derive(Deserialize)]
        struct Genesis {
            data: GenesisData,
        }
        #[derive(Deserialize)]
        struct GenesisData {
            genesis_time: String,
        }
        #[derive(Deserialize)]
        struct Spec {
            data: SpecData,
        }
        #[derive(Deserialize)]
        struct SpecData {
            #[serde(rename = "SECONDS_PER_SLOT")]
            seconds_per_slot: String,
        }
        let number = |call: &str, text: &str| {
            text.parse::<u64>().map_err(|_| L1Error::Malformed {
                call: call.into(),
                detail: format!("not a number: {}", quote(text)),
            })
        };
        let path = "/eth/v1/beacon/genesis";
        let genesis: Genesis = self.beacon_json(path)?;
        let genesis_time = number(path, &genesis.data.genesis_time)?;
        let path = "/eth/v1/config/spec";
        let spec: Spec = self.beacon_json(path)?;
        let seconds_per_slot = number(path, &spec.data.seconds_per_slot)?;
        if seconds_per_slot == 0 {
            return Err(L1Error::Malformed {
                call: path.into(),
                detail: "SECONDS_PER_SLOT is 0".into(),
            });
        }
        Ok(SlotClock {
            genesis_time,
            seconds_per_slot,
        })
    }

    /// `GET {beacon}{path}`, decoded as JSON.
    fn beacon_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, L1Error> {
        let text = self.beacon_get(path)?;
        serde_json::from_str(&text).map_err(|e| L1Error::Malformed {
            call: path.into(),
            detail: format!("{e}: {}", quote(&text)),
        })
    }

    /// `GET {beacon}{path}`: the answer's text, or the status as an error.
    fn beacon_get(&self, path: &str) -> Result<String, L1Error> {
        let url = format!("{}{path}", self.beacon_url);
        let request = self
            .agent
            .get(&url)
            .header("accept", "application/json")
            .config()
            .timeout_global(Some(Duration::from_millis(BEACON_TIMEOUT_MS)))
            .build();
        let (status, text) = self.exchange(
            path,
            &self.beacon_url,
            request.call(),
            BEACON_ANSWER_BYTES_MAX,
        )?;
        if !(200..300).contains(&status) {
            return Err(self.status_error(path, &self.beacon_url, status, &text));
        }
        Ok(text)
    }
}

/// The beacon chain's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotClock {
    /// Unix time of slot 0.
    pub genesis_time: u64,
    /// Seconds per slot (12 on mainnet).
    pub seconds_per_slot: u64,
}

impl SlotClock {
    /// The slot of an execution block with this timestamp, if it is not
    /// before genesis or between slots.
    pub fn slot_of(&self, timestamp: u64) -> Option<u64> {
        let since = timestamp.checked_sub(self.genesis_time)?;
        since
            .is_multiple_of(self.seconds_per_slot)
            .then(|| since / self.seconds_per_slot)
    }
}

/// Parses the beacon API's `{"data": ["0x…", …]}` into blobs.
pub fn parse_beacon_blobs(text: &str) -> Result<Vec<Blob>, String> {
    #[derive(Deserialize)]
    struct Answer {
        data: Vec<String>,
    }
    let answer: Answer = serde_json::from_str(text).map_err(|e| format!("{e}: {}", quote(text)))?;
    let mut blobs = Vec::with_capacity(answer.data.len());
    for (index, hex_blob) in answer.data.iter().enumerate() {
        let digits = hex_blob.strip_prefix("0x").unwrap_or(hex_blob);
        if digits.len() != 2 * BLOB_BYTES {
            return Err(format!(
                "blob {index}: {} hex digits, not {}",
                digits.len(),
                2 * BLOB_BYTES
            ));
        }
        let mut blob = Blob::ZERO;
        hex::decode_to_slice(digits, blob.as_mut_slice())
            .map_err(|e| format!("blob {index}: {e}"))?;
        blobs.push(blob);
    }
    Ok(blobs)
}

/// The start of `text`, for error messages, cut on a char boundary.
fn quote(text: &str) -> String {
    let mut end = text.len().min(ERROR_QUOTE_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < text.len() { "…" } else { "" };
    format!("{}{more}", &text[..end])
}

#[cfg(test)]
#[path = "l1_tests.rs"]
mod tests;
