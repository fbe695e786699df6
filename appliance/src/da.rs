//! The DA role's wiring: `[da]` config, the batcher key, and the thread
//! that runs `fulmen_da::driver` against the node (sealed blocks from the
//! published chain view; records and heads to the seq core).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use arc_swap::ArcSwap;
use fulmen_chain::msg::SeqControl;
use fulmen_chain::view::{ChainView, DaHeads};
use fulmen_da::batcher::L2Block;
use fulmen_da::driver::{Driver, DriverConfig, Host};
use fulmen_da::l1::{L1Client, L1ForkSetting, shown_url};
use fulmen_da::record::DaRecord;
use fulmen_da::span_batch::SpanChain;
use futures::channel::{mpsc, oneshot};
use serde::Deserialize;

/// Private key of the standard test mnemonic's account 9
/// (0xa0Ee7A142d267C1f36714E4a8F75612F20a79720), the batcher key of `--dev`
/// without `--batcher-key`. Public knowledge: for test L1s only.
const DEV_BATCHER_KEY: &str = "2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6";

/// How long the DA thread waits for a record to become durable.
const LOG_TIMEOUT: Duration = Duration::from_secs(30);

/// `[da]`: posting the chain's data to L1.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DaConfig {
    /// L1 JSON-RPC URL; none (the default): nothing is posted, and `safe`
    /// and `finalized` are the last sealed block.
    pub l1_rpc: Option<String>,
    /// L1 beacon API URL, for blobs. Default: `l1_rpc` (anvil serves both).
    pub l1_beacon: Option<String>,
    /// File holding the batcher's private key in hex, readable by its owner
    /// only. `--dev` without one uses test account 9.
    pub batcher_key: Option<PathBuf>,
    /// Where batcher txs go. Default OP's convention,
    /// `0x00 ++ keccak256(bytes32(l2_chain_id))[..19]`.
    pub inbox: Option<Address>,
    /// Blobs per L1 tx, 1 to 6. Default 6.
    pub blobs_per_tx: usize,
    /// L1 blocks on top of a batch's block before its L2 blocks are
    /// `safe`. Default 10.
    pub confirmation_depth: u64,
    /// Longest the oldest unposted L2 block waits for a channel to fill
    /// before a partial one is posted. Default 12,000 ms (one L1 slot).
    pub channel_timeout_ms: u64,
    /// A batcher tx not in L1 after this many L1 blocks is replaced with
    /// bumped fees (+100 %). Default 3.
    pub resubmit_after_l1_blocks: u64,
    /// Most channels sent and not yet in L1. Default 4.
    pub in_flight_max: usize,
    /// Sidecar form: `auto` (ask the L1, `eth_config`), `prague`
    /// (EIP-4844) or `osaka` (EIP-7594). Default `auto`.
    pub l1_fork: String,
    /// Time between the batcher's rounds. Default 500 ms.
    pub poll_ms: u64,
    /// New transactions are refused while this many bytes of sealed L2
    /// transactions are not in L1. Default 256 MiB.
    pub unposted_bytes_max: u64,
    /// Nothing is sent while L1's base fee is above this (wei). Default none.
    pub base_fee_max_wei: Option<u64>,
    /// Nothing is sent while L1's blob base fee is above this (wei).
    /// Default none.
    pub blob_base_fee_max_wei: Option<u64>,
    /// A verifier: the L1 block it starts deriving from (the sequencer logs
    /// it when it first posts, and shows it as `fulmen_da_l1_start_block`).
    /// Default 0.
    pub l1_start_block: u64,
    /// A verifier: the batcher whose txs count. `--dev` default: test
    /// account 9, the dev batcher.
    pub batcher_address: Option<Address>,
    /// A verifier: the sequencer's JSON-RPC URL, which
    /// `eth_sendRawTransaction(Sync)` is forwarded to. Default none: sends
    /// are refused.
    pub sequencer_url: Option<String>,
}

impl Default for DaConfig {
    fn default() -> Self {
        Self {
            l1_rpc: None,
            l1_beacon: None,
            batcher_key: None,
            inbox: None,
            blobs_per_tx: 6,
            confirmation_depth: 10,
            channel_timeout_ms: 12_000,
            resubmit_after_l1_blocks: 3,
            in_flight_max: 4,
            l1_fork: "auto".into(),
            poll_ms: 500,
            unposted_bytes_max: 256 << 20,
            base_fee_max_wei: None,
            blob_base_fee_max_wei: None,
            l1_start_block: 0,
            batcher_address: None,
            sequencer_url: None,
        }
    }
}

impl DaConfig {
    /// The L1 RPC and beacon URLs (the beacon defaults to the RPC URL).
    pub(crate) fn l1_urls(&self) -> (String, String) {
        let rpc = self.l1_rpc.clone().expect("only used with an L1");
        let beacon = self.l1_beacon.clone().unwrap_or_else(|| rpc.clone());
        (rpc, beacon)
    }

    /// The inbox: configured, or OP's convention for `chain_id`.
    pub(crate) fn inbox_of(&self, chain_id: u64) -> Address {
        self.inbox
            .unwrap_or_else(|| fulmen_da::post::default_inbox(chain_id))
    }

    /// Checks the values.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let bad = |m: String| Err(m);
        if !(1..=fulmen_da::blob::BLOBS_PER_TX_MAX).contains(&self.blobs_per_tx) {
            return bad(format!(
                "da.blobs_per_tx must be 1 to {}",
                fulmen_da::blob::BLOBS_PER_TX_MAX
            ));
        }
        if let Err(e) = self.l1_fork.parse::<L1ForkSetting>() {
            return bad(format!("da.{e}"));
        }
        if !(10..=60_000).contains(&self.poll_ms) {
            return bad("da.poll_ms must be between 10 and 60000".into());
        }
        if self.channel_timeout_ms == 0 || self.channel_timeout_ms > 3_600_000 {
            return bad("da.channel_timeout_ms must be between 1 and 3600000 (an hour)".into());
        }
        if self.in_flight_max == 0 || self.resubmit_after_l1_blocks == 0 {
            return bad("da.in_flight_max and da.resubmit_after_l1_blocks must be >= 1".into());
        }
        if self.unposted_bytes_max < 1 << 20 {
            return bad("da.unposted_bytes_max must be at least 1 MiB".into());
        }
        for url in [&self.l1_rpc, &self.l1_beacon, &self.sequencer_url]
            .into_iter()
            .flatten()
        {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return bad(format!(
                    "da URL {} must start with http:// or https://",
                    shown_url(url)
                ));
            }
        }
        Ok(())
    }
}

/// What the node does with L1.
pub(crate) enum DaMode {
    /// Nothing (no `--l1-rpc`).
    Off,
    /// Posts its blocks, signing with this key.
    Batcher(PrivateKeySigner),
    /// Rebuilds the chain from what this batcher posted.
    Verifier(Address),
    /// Not L1: a replica, following this upstream's WebSocket URL
    /// (`crate::replica`). It posts nothing.
    Replica(String),
}

/// The verifier's batcher address: `[da] batcher_address`, or with `--dev`
/// the dev batcher.
pub(crate) fn verifier_batcher(config: &DaConfig, dev: bool) -> Result<Address, String> {
    match (config.batcher_address, dev) {
        (Some(address), _) => Ok(address),
        (None, true) => Ok(DEV_BATCHER_KEY
            .parse::<PrivateKeySigner>()
            .expect("a valid key")
            .address()),
        (None, false) => Err(
            "--verifier needs the batcher's address: [da] batcher_address (only its txs count)"
                .into(),
        ),
    }
}

/// Reads the batcher key: `--batcher-key`, or test account 9 with `--dev`.
/// Refuses a file that others may read. Never logs the key.
pub(crate) fn batcher_key(config: &DaConfig, dev: bool) -> Result<PrivateKeySigner, String> {
    let Some(path) = &config.batcher_key else {
        if !dev {
            return Err(
                "da.l1_rpc is set but no batcher key: pass --batcher-key FILE (a hex private \
                 key, mode 0600)"
                    .into(),
            );
        }
        let key: PrivateKeySigner = DEV_BATCHER_KEY.parse().expect("a valid key");
        tracing::warn!(
            batcher = %key.address(),
            "DA: no --batcher-key: posting with the test mnemonic's account 9, a public key; \
             for test L1s only"
        );
        return Ok(key);
    };
    read_key_file(path)
}

fn read_key_file(path: &Path) -> Result<PrivateKeySigner, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("batcher key {shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "batcher key {shown} can be read by others (mode {mode:04o}): run `chmod 600 {shown}`"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("batcher key {shown}: {e}"))?;
    let hex = text.trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    // The parse error could quote the file: say only what is wrong.
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "batcher key {shown} must hold one private key: 64 hex digits, with or without 0x"
        ));
    }
    hex.parse::<PrivateKeySigner>()
        .map_err(|_| format!("batcher key {shown} is not a valid secp256k1 private key"))
}

/// The node, as the DA thread sees it.
struct NodeHost {
    published: Arc<ArcSwap<ChainView>>,
    control: RefCell<mpsc::Sender<SeqControl>>,
}

impl NodeHost {
    fn send(&self, mut message: SeqControl) -> Result<(), String> {
        // The control channel is small and rarely full: wait for room.
        for _ in 0..1000 {
            match self.control.borrow_mut().try_send(message) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_full() => {
                    message = e.into_inner();
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return Err("the seq core stopped".into()),
            }
        }
        Err("the seq core's control channel stayed full".into())
    }
}

impl Host for NodeHost {
    fn sealed_head(&self) -> u64 {
        self.published.load().head().header.number
    }

    fn block(&self, number: u64) -> Option<L2Block> {
        let view = self.published.load();
        let block = view.block(number)?;
        Some(L2Block {
            number,
            hash: block.hash,
            parent_hash: block.header.parent_hash,
            timestamp: block.header.timestamp,
            l1_origin: Default::default(),
            txs: block.txs.iter().map(|t| t.tx.envelope.clone()).collect(),
            header: block.header.clone(),
        })
    }

    fn compacted(&self, records: &[DaRecord]) {
        let records = records.iter().map(DaRecord::encode).collect();
        if let Err(e) = self.send(SeqControl::DaCompacted(records)) {
            // The seq core keeps the longer list: markers grow, nothing
            // is lost.
            tracing::warn!(error = %e, "DA: cannot hand the compacted records to the seq core");
        }
    }

    fn log(&self, record: &DaRecord) -> Result<(), String> {
        let (durable, answer) = oneshot::channel();
        self.send(SeqControl::DaRecord {
            payload: record.encode(),
            durable,
        })?;
        // A detached waiter, so that the timeout bounds this thread's wait
        // even if the log never answers.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(futures::executor::block_on(answer));
        });
        match done_rx.recv_timeout(LOG_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the node's log failed; nothing more is posted".into()),
            Err(_) => Err(format!(
                "a DA record was not durable within {} s",
                LOG_TIMEOUT.as_secs()
            )),
        }
    }

    fn heads(&self, safe: u64, finalized: u64) -> bool {
        self.send(SeqControl::DaHeads(DaHeads { safe, finalized }))
            .is_ok()
    }
}

/// The chain as span batches see it: the genesis timestamp, the block
/// time in seconds, the chain id.
pub(crate) fn span_chain(
    published: &Arc<ArcSwap<ChainView>>,
    block_time_ms: u64,
    chain_id: u64,
) -> SpanChain {
    SpanChain {
        genesis_timestamp: published.load().block(0).map_or(0, |g| g.header.timestamp),
        block_time_secs: block_time_ms / 1000,
        chain_id,
    }
}

/// What the DA thread is started with.
pub(crate) struct DaStart {
    pub config: DaConfig,
    pub key: PrivateKeySigner,
    pub chain_id: u64,
    pub block_time_ms: u64,
    pub records: Vec<Vec<u8>>,
    pub published: Arc<ArcSwap<ChainView>>,
    pub control: mpsc::Sender<SeqControl>,
}

/// Starts the DA thread; `on_start` pins and prioritises it.
pub(crate) fn start(
    da: DaStart,
    on_start: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, String> {
    let mut records = Vec::with_capacity(da.records.len());
    for (i, payload) in da.records.iter().enumerate() {
        records.push(
            DaRecord::decode(payload)
                .map_err(|e| format!("DA-progress record {i} in the log: {e}"))?,
        );
    }
    let config = &da.config;
    let (rpc, beacon) = config.l1_urls();
    let driver_config = DriverConfig {
        chain: span_chain(&da.published, da.block_time_ms, da.chain_id),
        inbox: config.inbox_of(da.chain_id),
        blobs_per_tx: config.blobs_per_tx,
        confirmation_depth: config.confirmation_depth,
        channel_timeout: Duration::from_millis(config.channel_timeout_ms),
        resubmit_after_l1_blocks: config.resubmit_after_l1_blocks,
        in_flight_max: config.in_flight_max,
        l1_fork: config.l1_fork.parse().map_err(|e: String| e)?,
        poll: Duration::from_millis(config.poll_ms),
        base_fee_max_wei: config.base_fee_max_wei.map(u128::from),
        blob_base_fee_max_wei: config.blob_base_fee_max_wei.map(u128::from),
    };
    tracing::info!(
        l1_rpc = %shown_url(&rpc),
        l1_beacon = %shown_url(&beacon),
        inbox = %driver_config.inbox,
        batcher = %da.key.address(),
        blobs_per_tx = config.blobs_per_tx,
        confirmation_depth = config.confirmation_depth,
        "DA: posting to L1"
    );
    let key = da.key;
    let published = da.published;
    let control = da.control;
    std::thread::Builder::new()
        .name("fulmen-da".into())
        .spawn(move || {
            on_start();
            // About 2 s: before the first blob tx, not in front of it.
            fulmen_da::post::load_kzg_settings();
            let host = NodeHost {
                published,
                control: RefCell::new(control),
            };
            let l1 = L1Client::new(&rpc, &beacon);
            match Driver::new(host, l1, key, driver_config, records) {
                Ok(driver) => {
                    let e = driver.run();
                    tracing::error!(error = %e, "DA: the batcher stopped; new transactions are refused");
                }
                Err(e) => {
                    fulmen_chain::metrics::METRICS
                        .da
                        .set_held_up(&format!("the DA batcher did not start: {e}"));
                    fulmen_chain::metrics::METRICS
                        .da
                        .unposted_bytes
                        .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(error = %e, "DA: the batcher did not start; new transactions are refused");
                }
            }
        })
        .map_err(|e| format!("cannot start the DA thread: {e}"))
}
