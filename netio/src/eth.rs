//! The `eth_`, `net_` and `web3_` methods. Reads use the last published
//! chain view on this core; writes go to the sequencer over a bounded inbox.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use alloy_eips::{BlockId, BlockNumberOrTag, eip2930::AccessList};
use alloy_primitives::{Address, B256, Bytes, U64, U256};
use alloy_rpc_types_eth::{
    AccessListResult, EIP1186AccountProofResponse, EIP1186StorageProof, FeeHistory, Filter,
    FilterBlockOption, Log, TransactionRequest, state::StateOverride,
};
use arc_swap::ArcSwap;
use fulmen_chain::HotState;
use fulmen_chain::block::{BlockContext, SealedBlock};
use fulmen_chain::metrics::{METRICS, reject_reason};
use fulmen_chain::msg::{MerkleRequest, ParkReason, SeqReply, SeqRequest, SubmitError};
use fulmen_chain::spec::ChainSpec;
use fulmen_chain::tx::{RecoveredTx, decode_and_check};
use fulmen_chain::view::ChainView;
use fulmen_exec::evm::{self, AccountOverride, CallRequest, ExecError, Outcome, SimError, StateDb};
use futures::channel::oneshot;
use glommio::channels::shared_channel::ConnectedSender;
use serde_json::{Value, json};

use crate::convert;
use crate::rpc::{ByteBudget, Params, RpcError};
use crate::sim::{BatchBudget, Meter, SimPool};

/// Limits of the RPC surface: the `[rpc]` table of the node config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcLimits {
    /// Largest request body.
    pub body_bytes_max: usize,
    /// HTTP connection handling (`crate::server`): a request head must
    /// arrive within this after its first byte (or after the connection opens).
    pub header_read_timeout_ms: u64,
    /// A request body must arrive within this after its head.
    pub body_read_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this.
    pub idle_timeout_ms: u64,
    /// Most open HTTP connections per net core; when full, the connection
    /// longest without a finished request (and not running one) is closed.
    pub connections_per_core_max: usize,
    /// Most open connections (HTTP and WebSocket) from one IP address, node-wide.
    pub connections_per_ip_max: usize,
    /// Allowed `Host` names (geth's `--http.vhosts`); `*` allows any. IP
    /// literals and a missing Host are always allowed.
    pub vhosts: Vec<String>,
    /// Allowed browser `Origin`s (geth's `--http.corsdomain`); `*` allows
    /// any. Requests with another Origin get 403.
    pub cors_origins: Vec<String>,
    /// Most calls in one batch.
    pub batch_max: usize,
    /// Widest `eth_getLogs` block range.
    pub logs_block_range_max: u64,
    /// Most logs one `eth_getLogs` returns.
    pub logs_max: usize,
    /// `eth_sendRawTransactionSync` timeout when the client gives none.
    pub sync_timeout_ms_default: u64,
    /// Upper bound on the client's timeout.
    pub sync_timeout_ms_max: u64,
    /// Gas cap of `eth_call` / `eth_estimateGas`.
    pub call_gas_max: u64,
    /// Most blocks in one `eth_feeHistory`.
    pub fee_history_blocks_max: u64,
    /// Largest answer to one call (JSON bytes); a larger one gets -32020.
    pub response_bytes_max: usize,
    /// Largest answer to one batch, all its responses together.
    pub batch_response_bytes_max: usize,
    /// HTTP answers held for clients that have not read them yet, all
    /// connections of all net cores together; past it, a new answer is
    /// refused with -32005 (HTTP 503) until clients read.
    pub responses_in_flight_bytes_max: usize,
    /// Wall-clock limit of one request's simulations (`eth_call`,
    /// `eth_estimateGas`, `eth_createAccessList`), counted from its arrival,
    /// queueing included.
    pub call_timeout_ms: u64,
    /// Gas all EVM runs of one simulation request may use together
    /// (`eth_estimateGas` runs the EVM up to ~30 times).
    pub simulation_gas_budget: u64,
    /// Wall-clock limit of all simulations in one batch.
    pub batch_call_timeout_ms: u64,
    /// Gas all simulations in one batch may use together.
    pub batch_simulation_gas_budget: u64,
    /// Simulation worker threads (shared by all net cores).
    pub simulation_workers: usize,
    /// Simulations waiting for a worker; more are refused at once.
    pub simulation_queue_max: usize,
    /// Nice value of the simulation workers (0..=19): the kernel preempts
    /// them in favour of the net and seq threads.
    pub simulation_worker_nice: i32,
}

impl Default for RpcLimits {
    fn default() -> Self {
        Self {
            body_bytes_max: 5 * 1024 * 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            connections_per_core_max: 4096,
            connections_per_ip_max: 2048,
            vhosts: vec!["localhost".to_string()],
            cors_origins: Vec::new(),
            batch_max: 1000,
            logs_block_range_max: 10_000,
            logs_max: 20_000,
            sync_timeout_ms_default: 2_000,
            sync_timeout_ms_max: 10_000,
            call_gas_max: 50_000_000,
            fee_history_blocks_max: 1024,
            // 32 MiB: 20,000 typical logs (~14 MB), the receipts of ~33,000
            // transfers (~1 KB each, measured) or a full block of 47,600
            // transfers with full transactions (~690 B each) fit; one block
            // of large logs does not.
            response_bytes_max: 32 * 1024 * 1024,
            // A batch answer is one response: splitting a big answer into a
            // batch does not get around the budget.
            batch_response_bytes_max: 32 * 1024 * 1024,
            // Eight answers of the largest size.
            responses_in_flight_bytes_max: 256 * 1024 * 1024,
            call_timeout_ms: 5_000,
            simulation_gas_budget: 1_000_000_000,
            batch_call_timeout_ms: 10_000,
            batch_simulation_gas_budget: 2_000_000_000,
            simulation_workers: 2,
            simulation_queue_max: 64,
            simulation_worker_nice: 19,
        }
    }
}

/// What one net core needs to serve RPC.
pub struct NetContext {
    /// Published chain view.
    pub view: Arc<ArcSwap<ChainView>>,
    /// This core's inbox into the sequencer.
    pub seq: ConnectedSender<SeqRequest>,
    /// This core's channel to the state-root worker (proofs).
    pub merkle: ConnectedSender<MerkleRequest>,
    /// Chain parameters.
    pub spec: Arc<ChainSpec>,
    /// RPC limits.
    pub limits: RpcLimits,
    /// `web3_clientVersion`.
    pub client_version: String,
    /// WebSocket limits.
    pub ws: crate::ws::WsLimits,
    /// What all net cores share about WebSocket connections.
    pub ws_shared: Arc<crate::ws::WsShared>,
    /// This core's subscriptions.
    pub hub: Rc<crate::pubsub::Hub>,
    /// The simulation workers (shared by all net cores).
    pub sim: Arc<SimPool>,
}

/// EIP-7966 error code: timed out waiting for the receipt.
pub const SYNC_TIMEOUT_CODE: i64 = 4;
/// EIP-7966 error code: accepted but not ready (nonce gap).
pub const SYNC_NOT_READY_CODE: i64 = 5;

/// Dispatches one call.
pub async fn dispatch(
    ctx: &Rc<NetContext>,
    method: &str,
    params: &Params,
) -> Result<Value, RpcError> {
    dispatch_in_batch(ctx, method, params, None).await
}

/// Dispatches one call of a batch: its simulations also draw on `batch`.
pub async fn dispatch_in_batch(
    ctx: &Rc<NetContext>,
    method: &str,
    params: &Params,
    batch: Option<&BatchBudget>,
) -> Result<Value, RpcError> {
    let view = ctx.view.load_full();
    let v = &view;
    match method {
        "web3_clientVersion" => ok(&ctx.client_version),
        "web3_sha3" => {
            let data: Bytes = params.required(0, "data")?;
            ok(alloy_primitives::keccak256(&data))
        }
        "net_version" => ok(ctx.spec.chain_id.to_string()),
        "net_listening" => ok(true),
        "net_peerCount" => ok(U64::ZERO),
        "eth_chainId" => ok(U64::from(ctx.spec.chain_id)),
        "eth_blockNumber" => ok(U64::from(v.head().header.number)),
        "eth_syncing" => ok(false),
        "eth_accounts" => ok(Vec::<Address>::new()),
        "eth_gasPrice" => ok(U256::from(v.open().ctx.base_fee)),
        "eth_maxPriorityFeePerGas" => ok(U256::ZERO),
        "eth_blobBaseFee" => ok(U256::from(1u64)),
        "eth_feeHistory" => fee_history(ctx, v, params),
        "eth_getBalance" => {
            let address: Address = params.required(0, "address")?;
            let state = state_at(v, params.optional(1, "block")?)?.0;
            ok(state.account(&address).map_or(U256::ZERO, |a| a.balance))
        }
        "eth_getTransactionCount" => {
            let address: Address = params.required(0, "address")?;
            let state = state_at(v, params.optional(1, "block")?)?.0;
            ok(U64::from(state.account(&address).map_or(0, |a| a.nonce)))
        }
        "eth_getCode" => {
            let address: Address = params.required(0, "address")?;
            let state = state_at(v, params.optional(1, "block")?)?.0;
            let code = state
                .account(&address)
                .and_then(|a| state.code(&a.code_hash))
                .map(|c| c.original_bytes())
                .unwrap_or_default();
            ok(code)
        }
        "eth_getStorageAt" => {
            let address: Address = params.required(0, "address")?;
            let slot: U256 = params.required(1, "slot")?;
            let state = state_at(v, params.optional(2, "block")?)?.0;
            ok(B256::from(state.storage(&address, &slot)))
        }
        "eth_getProof" => get_proof(ctx, v, params).await,
        "eth_call" => {
            let job = call(ctx, params)?;
            off_core(ctx, batch, view, job).await
        }
        "eth_estimateGas" => {
            let job = estimate_gas(ctx, params)?;
            off_core(ctx, batch, view, job).await
        }
        "eth_createAccessList" => {
            let job = create_access_list(ctx, params)?;
            off_core(ctx, batch, view, job).await
        }
        "eth_sendRawTransaction" => {
            params.at_most(1)?;
            let raw: Bytes = params.required(0, "data")?;
            METRICS.txs_received.fetch_add(1, Relaxed);
            let tx = decode(ctx, &raw)?;
            let hash = tx.hash;
            match submit(ctx, tx).await? {
                SeqReply::Preconfirmed(_) | SeqReply::Parked(_) => ok(hash),
                SeqReply::Rejected(e) => Err(rejected(&e)),
            }
        }
        "eth_sendRawTransactionSync" => send_sync(ctx, params).await,
        "eth_subscribe" | "eth_unsubscribe" => Err(RpcError {
            code: -32601,
            message: "notifications not supported: eth_subscribe needs a WebSocket connection \
                      (ws://, same port)"
                .into(),
            data: None,
        }),
        "eth_getTransactionByHash" => {
            let hash: B256 = params.required(0, "hash")?;
            ok(v.tx(&hash)
                .map(|(tx, block_hash)| convert::transaction(&tx, block_hash)))
        }
        "eth_getTransactionReceipt" => {
            let hash: B256 = params.required(0, "hash")?;
            ok(v.tx(&hash)
                .map(|(tx, block_hash)| convert::receipt(&tx, block_hash)))
        }
        "eth_getBlockByNumber" => {
            let tag: BlockNumberOrTag = params.required(0, "block")?;
            let full: bool = params.optional(1, "full")?.unwrap_or(false);
            block_json(ctx, block_by_tag(v, tag), full)
        }
        "eth_getBlockByHash" => {
            let hash: B256 = params.required(0, "hash")?;
            let full: bool = params.optional(1, "full")?.unwrap_or(false);
            block_json(ctx, v.block_by_hash(&hash), full)
        }
        "eth_getBlockTransactionCountByNumber" => {
            let tag: BlockNumberOrTag = params.required(0, "block")?;
            ok(block_by_tag(v, tag).map(|b| U64::from(b.txs.len())))
        }
        "eth_getBlockTransactionCountByHash" => {
            let hash: B256 = params.required(0, "hash")?;
            ok(v.block_by_hash(&hash).map(|b| U64::from(b.txs.len())))
        }
        "eth_getTransactionByBlockNumberAndIndex" => {
            let tag: BlockNumberOrTag = params.required(0, "block")?;
            let index: U64 = params.required(1, "index")?;
            ok(block_by_tag(v, tag).and_then(|b| tx_in_block(b, index)))
        }
        "eth_getTransactionByBlockHashAndIndex" => {
            let hash: B256 = params.required(0, "hash")?;
            let index: U64 = params.required(1, "index")?;
            ok(v.block_by_hash(&hash).and_then(|b| tx_in_block(b, index)))
        }
        "eth_getBlockReceipts" => {
            let id: BlockId = params.required(0, "block")?;
            match block_by_id(v, id)? {
                Some(block) => block_receipts(ctx, block),
                None => ok(Value::Null),
            }
        }
        "eth_getUncleCountByBlockNumber" => {
            let tag: BlockNumberOrTag = params.required(0, "block")?;
            ok(block_by_tag(v, tag).map(|_| U64::ZERO))
        }
        "eth_getUncleCountByBlockHash" => {
            let hash: B256 = params.required(0, "hash")?;
            ok(v.block_by_hash(&hash).map(|_| U64::ZERO))
        }
        "eth_getUncleByBlockNumberAndIndex" | "eth_getUncleByBlockHashAndIndex" => ok(Value::Null),
        "eth_getLogs" => get_logs(ctx, v, params),
        "eth_mining" => ok(false),
        "eth_hashrate" => ok(U64::ZERO),
        _ => Err(RpcError::method_not_found(method)),
    }
}

fn ok<T: serde::Serialize>(value: T) -> Result<Value, RpcError> {
    serde_json::to_value(value)
        .map_err(|e| RpcError::internal(format!("cannot encode result: {e}")))
}

fn decode(ctx: &NetContext, raw: &[u8]) -> Result<RecoveredTx, RpcError> {
    decode_and_check(raw, &ctx.spec.tx_rules()).map_err(|e| {
        METRICS.reject("invalid");
        RpcError::server(e.to_string())
    })
}

/// A sequencer refusal, counted.
fn rejected(e: &SubmitError) -> RpcError {
    METRICS.reject(reject_reason(e));
    RpcError::server(e.to_string())
}

fn sequencer_gone() -> RpcError {
    METRICS.reject("sequencer_gone");
    RpcError::internal("the sequencer stopped")
}

/// Hands `tx` to the seq core; a full inbox is an immediate, counted error.
fn enqueue(
    ctx: &NetContext,
    tx: RecoveredTx,
    wait_for_receipt: bool,
) -> Result<oneshot::Receiver<SeqReply>, RpcError> {
    let (reply, answer) = oneshot::channel();
    if ctx
        .seq
        .try_send(SeqRequest {
            tx,
            reply,
            wait_for_receipt,
        })
        .is_err()
    {
        METRICS.reject("inbox_full");
        return Err(RpcError::server(
            "txpool is full: the sequencer inbox is at capacity, retry shortly",
        ));
    }
    METRICS.inbox_sent.fetch_add(1, Relaxed);
    Ok(answer)
}

async fn submit(ctx: &NetContext, tx: RecoveredTx) -> Result<SeqReply, RpcError> {
    enqueue(ctx, tx, false)?.await.map_err(|_| sequencer_gone())
}

async fn send_sync(ctx: &NetContext, params: &Params) -> Result<Value, RpcError> {
    params.at_most(2)?;
    let raw: Bytes = params.required(0, "data")?;
    let timeout_ms: Option<u64> = params.optional(1, "timeout")?;
    let timeout_ms = timeout_ms
        .unwrap_or(ctx.limits.sync_timeout_ms_default)
        .min(ctx.limits.sync_timeout_ms_max);
    let began = std::time::Instant::now();
    METRICS.txs_received.fetch_add(1, Relaxed);
    let tx = decode(ctx, &raw)?;
    let hash = tx.hash;
    let answer = enqueue(ctx, tx, true)?;
    let timer = glommio::timer::sleep(Duration::from_millis(timeout_ms));
    futures::pin_mut!(timer);
    match futures::future::select(answer, timer).await {
        futures::future::Either::Left((Ok(SeqReply::Preconfirmed(tx)), _)) => {
            METRICS.sync_send_latency.observe(began.elapsed());
            ok(convert::receipt(&tx, None))
        }
        futures::future::Either::Left((
            Ok(SeqReply::Parked(ParkReason::NonceGap { expected })),
            _,
        )) => Err(RpcError {
            code: SYNC_NOT_READY_CODE,
            message: format!(
                "transaction accepted but not ready: nonce gap (sender's next nonce is {expected}); it will execute once the gap is filled"
            ),
            data: Some(json!(hash)),
        }),
        futures::future::Either::Left((Ok(SeqReply::Parked(ParkReason::Deferred)), _)) => {
            Err(RpcError {
                code: SYNC_NOT_READY_CODE,
                message: "transaction accepted but not ready: waiting for room in the next block"
                    .into(),
                data: Some(json!(hash)),
            })
        }
        futures::future::Either::Left((Ok(SeqReply::Rejected(e)), _)) => Err(rejected(&e)),
        futures::future::Either::Left((Err(_), _)) => Err(sequencer_gone()),
        futures::future::Either::Right(_) => Err(RpcError {
            code: SYNC_TIMEOUT_CODE,
            message: format!(
                "the transaction was added to the pool but not preconfirmed within {timeout_ms} ms"
            ),
            data: Some(json!(hash)),
        }),
    }
}

/// A block's receipts, stopping as soon as they pass the response budget.
fn block_receipts(ctx: &NetContext, block: &SealedBlock) -> Result<Value, RpcError> {
    let mut budget = ByteBudget::new(ctx.limits.response_bytes_max);
    let mut out = Vec::with_capacity(block.txs.len());
    for tx in &block.txs {
        let receipt = convert::receipt(tx, Some(block.hash));
        budget.add(&receipt)?;
        out.push(receipt);
    }
    ok(out)
}

/// A block, with full transactions when `full`; a block whose transactions
/// pass the response budget is refused before its JSON is built.
fn block_json(
    ctx: &NetContext,
    block: Option<&Arc<SealedBlock>>,
    full: bool,
) -> Result<Value, RpcError> {
    let Some(block) = block else {
        return ok(Value::Null);
    };
    if full {
        let mut budget = ByteBudget::new(ctx.limits.response_bytes_max);
        for tx in &block.txs {
            budget.add(&convert::transaction(tx, Some(block.hash)))?;
        }
    }
    ok(convert::block(block, full))
}

fn tx_in_block(block: &SealedBlock, index: U64) -> Option<alloy_rpc_types_eth::Transaction> {
    let tx = block.txs.get(usize::try_from(index.to::<u64>()).ok()?)?;
    Some(convert::transaction(tx, Some(block.hash)))
}

/// A sealed block for a number or tag (`latest`, `safe`, `finalized` and
/// `pending` are the last sealed block; `earliest` is genesis).
fn block_by_tag(view: &ChainView, tag: BlockNumberOrTag) -> Option<&Arc<SealedBlock>> {
    match tag {
        BlockNumberOrTag::Number(n) => view.block(n),
        BlockNumberOrTag::Earliest => view.block(0),
        _ => Some(view.head()),
    }
}

fn block_by_id(view: &ChainView, id: BlockId) -> Result<Option<&Arc<SealedBlock>>, RpcError> {
    match id {
        BlockId::Number(tag) => Ok(block_by_tag(view, tag)),
        BlockId::Hash(hash) => match view.block_by_hash(&hash.block_hash) {
            Some(block) => Ok(Some(block)),
            None if hash.require_canonical == Some(true) => {
                Err(RpcError::server("header not found"))
            }
            None => Ok(None),
        },
    }
}

/// State and block context for a block id. `latest`/`pending` (or none) are
/// the preconfirmed state with the open block's context.
fn state_at(view: &ChainView, id: Option<BlockId>) -> Result<(HotState, BlockContext), RpcError> {
    let number = match id {
        None
        | Some(BlockId::Number(BlockNumberOrTag::Latest))
        | Some(BlockId::Number(BlockNumberOrTag::Pending)) => {
            return Ok((view.state().clone(), view.open().ctx));
        }
        Some(id) => match block_by_id(view, id)? {
            Some(block) => block.header.number,
            None => return Err(RpcError::server("header not found")),
        },
    };
    let block = view
        .block(number)
        .ok_or_else(|| RpcError::server("header not found"))?;
    let state = view.state_at(number).ok_or_else(|| {
        RpcError::server(format!(
            "historical state not available: block {number} is older than the {} most recent blocks this node keeps",
            fulmen_chain::block::RECENT_STATES_MAX
        ))
    })?;
    let header = &block.header;
    let ctx = BlockContext {
        number: header.number,
        timestamp: header.timestamp,
        base_fee: header.base_fee_per_gas.unwrap_or_default(),
        gas_limit: header.gas_limit,
        coinbase: header.beneficiary,
        prevrandao: header.mix_hash,
    };
    Ok((state.clone(), ctx))
}

fn call_request(ctx: &NetContext, request: TransactionRequest) -> Result<CallRequest, RpcError> {
    if request.blob_versioned_hashes.is_some() || request.sidecar.is_some() {
        return Err(RpcError::invalid_params(
            "blob transactions are not supported on this L2",
        ));
    }
    let input = request.input.input().cloned().unwrap_or_default();
    Ok(CallRequest {
        from: request.from,
        to: request.to.and_then(|kind| kind.to().copied()),
        gas: Some(
            request
                .gas
                .unwrap_or(ctx.limits.call_gas_max)
                .min(ctx.limits.call_gas_max),
        ),
        gas_price: request.gas_price,
        max_fee_per_gas: request.max_fee_per_gas,
        max_priority_fee_per_gas: request.max_priority_fee_per_gas,
        value: request.value,
        input,
        nonce: request.nonce,
        access_list: request.access_list,
    })
}

fn overrides(overrides: Option<StateOverride>) -> HashMap<Address, AccountOverride> {
    overrides
        .into_iter()
        .flatten()
        .map(|(address, o)| {
            let to_map = |m: Option<alloy_primitives::map::B256HashMap<B256>>| {
                m.map(|m| m.into_iter().collect())
            };
            (
                address,
                AccountOverride {
                    balance: o.balance,
                    nonce: o.nonce,
                    code: o.code,
                    state: to_map(o.state),
                    state_diff: to_map(o.state_diff),
                },
            )
        })
        .collect()
}

/// A simulation request, parsed on the net core, run on a worker.
type SimJob = Box<dyn FnOnce(&mut Sim) -> Result<Value, RpcError> + Send>;

/// Runs `job` on a simulation worker and awaits its answer without
/// blocking this core; charges the gas it used to `batch`.
async fn off_core(
    ctx: &NetContext,
    batch: Option<&BatchBudget>,
    view: Arc<ChainView>,
    job: SimJob,
) -> Result<Value, RpcError> {
    let now = Instant::now();
    let meter = Meter::new(&ctx.limits, batch, now);
    meter.check_gas()?;
    if now >= meter.deadline() {
        // The batch's time is spent: answer without queueing.
        return Err(meter.timeout_error());
    }
    let mut sim = Sim {
        view,
        chain_id: ctx.spec.chain_id,
        meter,
    };
    let answer = ctx.sim.submit(move || {
        let result = job(&mut sim);
        (result, sim.meter.gas_used)
    })?;
    let (result, gas_used) = answer
        .await
        .map_err(|_| RpcError::internal("the simulation failed inside the node"))?;
    if let Some(batch) = batch {
        batch.charge(gas_used);
    }
    result
}

/// One simulation request on a worker: the chain view it reads and what it
/// may still spend.
struct Sim {
    view: Arc<ChainView>,
    chain_id: u64,
    meter: Meter,
}

/// Why one EVM run of a request gave no outcome.
enum RunError {
    /// The request's (or batch's) time or gas is spent: the request ends.
    Budget(RpcError),
    /// This run was refused (e.g. intrinsic gas too low for the limit).
    Call(RpcError),
}

impl From<RunError> for RpcError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Budget(e) | RunError::Call(e) => e,
        }
    }
}

impl Sim {
    /// One EVM run at `block` with `state_overrides`, within the budget.
    fn run(
        &mut self,
        call: &CallRequest,
        block: Option<BlockId>,
        state_overrides: &HashMap<Address, AccountOverride>,
    ) -> Result<(Outcome, revm::state::EvmState), RunError> {
        self.meter.check_gas().map_err(RunError::Budget)?;
        let (state, block_ctx) = state_at(&self.view, block).map_err(RunError::Call)?;
        let mut db = StateDb::new(state, self.view.block_hashes().clone());
        db.apply_overrides(state_overrides);
        let result = evm::simulate(db, self.chain_id, &block_ctx, call, self.meter.deadline());
        match result {
            Ok((outcome, state)) => {
                self.meter.charge(outcome.gas_used);
                Ok((outcome, state))
            }
            // The gas a halted run used is unknown, and its request ends
            // here anyway; the time spent counts against the batch.
            Err(SimError::DeadlinePassed) => Err(RunError::Budget(self.meter.timeout_error())),
            Err(SimError::Exec(ExecError::Db(e))) => {
                Err(RunError::Call(RpcError::server(e.to_string())))
            }
            Err(SimError::Exec(ExecError::Invalid(message))) => {
                Err(RunError::Call(RpcError::server(message)))
            }
        }
    }
}

/// Geth's shape for a failed call: code 3 with the revert data.
fn revert_error(outcome: &Outcome) -> RpcError {
    if let Some(halt) = &outcome.halt {
        return RpcError::server(format!("execution halted: {halt:?}"));
    }
    let reason = alloy_sol_types::decode_revert_reason(&outcome.output);
    let message = match reason {
        Some(reason) => format!("execution reverted: {reason}"),
        None => "execution reverted".to_string(),
    };
    RpcError {
        code: 3,
        message,
        data: Some(json!(outcome.output)),
    }
}

fn call(ctx: &NetContext, params: &Params) -> Result<SimJob, RpcError> {
    params.at_most(3)?;
    let request: TransactionRequest = params.required(0, "transaction")?;
    let block: Option<BlockId> = params.optional(1, "block")?;
    let state_overrides = overrides(params.optional(2, "stateOverrides")?);
    let call = call_request(ctx, request)?;
    Ok(Box::new(move |sim| {
        let (outcome, _) = sim.run(&call, block, &state_overrides)?;
        if !outcome.success {
            return Err(revert_error(&outcome));
        }
        ok(outcome.output)
    }))
}

fn estimate_gas(ctx: &NetContext, params: &Params) -> Result<SimJob, RpcError> {
    params.at_most(3)?;
    let request: TransactionRequest = params.required(0, "transaction")?;
    let block: Option<BlockId> = params.optional(1, "block")?;
    let state_overrides = overrides(params.optional(2, "stateOverrides")?);
    let mut call = call_request(ctx, request)?;
    // An estimate above the per-transaction gas cap could never be sent.
    let cap = call
        .gas
        .unwrap_or(ctx.limits.call_gas_max)
        .min(ctx.spec.tx_gas_limit_max);
    call.gas = Some(cap);
    Ok(Box::new(move |sim| {
        let (outcome, _) = sim.run(&call, block, &state_overrides)?;
        if !outcome.success {
            return Err(revert_error(&outcome));
        }
        // Binary search for the lowest limit that succeeds: refunds and the
        // 63/64 rule mean the used gas is not always enough as a limit.
        let mut low = outcome.gas_used.saturating_sub(1);
        let mut high = cap;
        call.gas = Some(outcome.gas_used);
        match sim.run(&call, block, &state_overrides) {
            Ok((o, _)) if o.success => return ok(U64::from(outcome.gas_used)),
            Err(RunError::Budget(e)) => return Err(e),
            Ok(_) | Err(RunError::Call(_)) => {}
        }
        let mut rounds = 0;
        while low + 1 < high && rounds < 64 {
            rounds += 1;
            let mid = low + (high - low) / 2;
            call.gas = Some(mid);
            match sim.run(&call, block, &state_overrides) {
                Ok((o, _)) if o.success => high = mid,
                Err(RunError::Budget(e)) => return Err(e),
                Ok(_) | Err(RunError::Call(_)) => low = mid,
            }
        }
        ok(U64::from(high))
    }))
}

fn create_access_list(ctx: &NetContext, params: &Params) -> Result<SimJob, RpcError> {
    params.at_most(2)?;
    let request: TransactionRequest = params.required(0, "transaction")?;
    let block: Option<BlockId> = params.optional(1, "block")?;
    let mut call = call_request(ctx, request)?;
    Ok(Box::new(move |sim| {
        let mut excluded: HashSet<Address> = HashSet::new();
        excluded.insert(call.from.unwrap_or_default());
        if let Some(to) = call.to {
            excluded.insert(to);
        }
        let (_, block_ctx) = state_at(&sim.view, block)?;
        excluded.insert(block_ctx.coinbase);
        // As geth: rerun with the found list until it stops changing (bounded).
        let mut list = call.access_list.clone().unwrap_or_default();
        let none = HashMap::new();
        for _ in 0..8 {
            call.access_list = Some(list.clone());
            let (outcome, state) = sim.run(&call, block, &none)?;
            let found: AccessList = evm::touched_access_list(&state, &excluded);
            if found == list {
                let error = (!outcome.success).then(|| revert_error(&outcome).message);
                return ok(AccessListResult {
                    access_list: found,
                    gas_used: U256::from(outcome.gas_used),
                    error,
                });
            }
            list = found;
        }
        Err(RpcError::server("access list did not converge"))
    }))
}

async fn get_proof(ctx: &NetContext, view: &ChainView, params: &Params) -> Result<Value, RpcError> {
    params.at_most(3)?;
    let address: Address = params.required(0, "address")?;
    let slots: Vec<B256> = params.required(1, "storageKeys")?;
    if slots.len() > 1024 {
        return Err(RpcError::invalid_params(
            "invalid argument 1 (storageKeys): more than 1024 keys",
        ));
    }
    let id: Option<BlockId> = params.optional(2, "block")?;
    let block = match id {
        None => view.head().clone(),
        Some(id) => block_by_id(view, id)?
            .cloned()
            .ok_or_else(|| RpcError::server("header not found"))?,
    };
    let number = block.header.number;
    let (reply, answer) = oneshot::channel();
    let request = MerkleRequest::Proof {
        block: number,
        address,
        slots,
        reply,
    };
    if ctx.merkle.try_send(request).is_err() {
        return Err(RpcError::server("proof queue is full, retry shortly"));
    }
    let proof = match answer.await {
        Ok(Ok(proof)) => proof,
        Ok(Err(at)) => {
            return Err(RpcError::server(format!(
                "proofs are served for the latest sealed block only (the state trie is at block {at}, asked for {number})"
            )));
        }
        Err(_) => return Err(RpcError::internal("the state-root worker stopped")),
    };
    let state = view
        .state_at(number)
        .ok_or_else(|| RpcError::server("header not found"))?;
    let account = state.account(&address).copied();
    ok(EIP1186AccountProofResponse {
        address,
        balance: account.map_or(U256::ZERO, |a| a.balance),
        code_hash: account.map_or(revm::primitives::KECCAK_EMPTY, |a| a.code_hash),
        nonce: account.map_or(0, |a| a.nonce),
        storage_hash: proof.storage_root,
        account_proof: proof.account_proof,
        storage_proof: proof
            .storage_proofs
            .into_iter()
            .map(|(key, value, proof)| EIP1186StorageProof {
                key: key.into(),
                value,
                proof,
            })
            .collect(),
    })
}

fn fee_history(ctx: &NetContext, view: &ChainView, params: &Params) -> Result<Value, RpcError> {
    params.at_most(3)?;
    let count: U64 = params.required(0, "blockCount")?;
    let newest: BlockNumberOrTag = params.required(1, "newestBlock")?;
    let percentiles: Option<Vec<f64>> = params.optional(2, "rewardPercentiles")?;
    if let Some(p) = &percentiles
        && (p.len() > 100
            || p.windows(2).any(|w| w[0] > w[1])
            || p.iter().any(|x| !(0.0..=100.0).contains(x)))
    {
        return Err(RpcError::invalid_params(
            "invalid argument 2 (rewardPercentiles): at most 100 increasing values within [0, 100]",
        ));
    }
    let newest = block_by_tag(view, newest)
        .ok_or_else(|| RpcError::server("header not found"))?
        .header
        .number;
    let count = count
        .to::<u64>()
        .min(ctx.limits.fee_history_blocks_max)
        .min(newest + 1);
    let oldest = newest + 1 - count;
    let mut history = FeeHistory {
        oldest_block: oldest,
        ..Default::default()
    };
    let mut rewards = Vec::new();
    for n in oldest..=newest {
        let block = view
            .block(n)
            .ok_or_else(|| RpcError::server("header not found"))?;
        let header = &block.header;
        history
            .base_fee_per_gas
            .push(u128::from(header.base_fee_per_gas.unwrap_or_default()));
        history
            .gas_used_ratio
            .push(header.gas_used as f64 / header.gas_limit.max(1) as f64);
        history.base_fee_per_blob_gas.push(1);
        history.blob_gas_used_ratio.push(0.0);
        if let Some(p) = &percentiles {
            rewards.push(block_rewards(block, p));
        }
    }
    if count > 0 {
        let next = view
            .block(newest + 1)
            .map_or(view.open().ctx.base_fee, |b| {
                b.header.base_fee_per_gas.unwrap_or(0)
            });
        history.base_fee_per_gas.push(u128::from(next));
        history.base_fee_per_blob_gas.push(1);
    }
    if percentiles.is_some() {
        history.reward = Some(rewards);
    }
    ok(history)
}

/// Effective tips at the given gas-weighted percentiles, as geth computes them.
fn block_rewards(block: &SealedBlock, percentiles: &[f64]) -> Vec<u128> {
    let base_fee = u128::from(block.header.base_fee_per_gas.unwrap_or_default());
    let mut tips: Vec<(u128, u64)> = block
        .txs
        .iter()
        .map(|t| (t.effective_gas_price.saturating_sub(base_fee), t.gas_used))
        .collect();
    if tips.is_empty() {
        return vec![0; percentiles.len()];
    }
    tips.sort_unstable();
    let total: u64 = tips.iter().map(|(_, g)| g).sum();
    percentiles
        .iter()
        .map(|p| {
            let threshold = (total as f64 * p / 100.0) as u64;
            let mut sum = 0;
            for (tip, gas) in &tips {
                sum += gas;
                if sum >= threshold {
                    return *tip;
                }
            }
            tips.last().map_or(0, |(tip, _)| *tip)
        })
        .collect()
}

fn get_logs(ctx: &NetContext, view: &ChainView, params: &Params) -> Result<Value, RpcError> {
    params.at_most(1)?;
    let filter: Filter = params.required(0, "filter")?;
    crate::pubsub::check_filter_size(&filter, 0)?;
    let head = view.head().header.number;
    let (from, to, include_unsealed) = match filter.block_option {
        FilterBlockOption::AtBlockHash(hash) => {
            let block = view
                .block_by_hash(&hash)
                .ok_or_else(|| RpcError::server("unknown block"))?;
            (block.header.number, block.header.number, false)
        }
        FilterBlockOption::Range {
            from_block,
            to_block,
        } => {
            let resolve = |tag: Option<BlockNumberOrTag>| match tag {
                None | Some(BlockNumberOrTag::Latest) | Some(BlockNumberOrTag::Pending) => {
                    (head, true)
                }
                Some(BlockNumberOrTag::Number(n)) => (n, false),
                Some(BlockNumberOrTag::Earliest) => (0, false),
                Some(_) => (head, false),
            };
            let (from, _) = resolve(from_block);
            let (to, unsealed) = resolve(to_block);
            if from > to {
                return Err(RpcError::invalid_params(
                    "invalid argument 0 (filter): fromBlock is after toBlock",
                ));
            }
            if to.saturating_sub(from) >= ctx.limits.logs_block_range_max {
                return Err(RpcError::server(format!(
                    "query exceeds max block range {}: narrow fromBlock..toBlock",
                    ctx.limits.logs_block_range_max
                )));
            }
            (from, to.min(head), unsealed)
        }
    };
    if to.saturating_sub(from) >= ctx.limits.logs_block_range_max {
        return Err(RpcError::server(format!(
            "query exceeds max block range {}: narrow fromBlock..toBlock",
            ctx.limits.logs_block_range_max
        )));
    }
    let mut out: Vec<Log> = Vec::new();
    let mut budget = ByteBudget::new(ctx.limits.response_bytes_max);
    let mut push = |logs: Vec<Log>| -> Result<(), RpcError> {
        for log in logs {
            if filter.matches_address(log.address()) && filter.matches_topics(log.topics()) {
                if out.len() >= ctx.limits.logs_max {
                    return Err(RpcError::server(format!(
                        "query returned more than {} results: narrow the filter",
                        ctx.limits.logs_max
                    )));
                }
                budget.add(&log)?;
                out.push(log);
            }
        }
        Ok(())
    };
    for n in from..=to {
        let Some(block) = view.block(n) else { break };
        if !filter.matches_bloom(block.header.logs_bloom) {
            continue;
        }
        for tx in &block.txs {
            push(convert::logs(tx, Some(block.hash)))?;
        }
    }
    if include_unsealed {
        for block in view.unsealed() {
            for tx in block.txs.iter() {
                push(convert::logs(tx, None))?;
            }
        }
    }
    ok(out)
}
