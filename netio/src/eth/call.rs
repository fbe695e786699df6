//! `eth_call`, `eth_estimateGas` and `eth_createAccessList`: parsed on the
//! net core into a [`SimJob`], run on a simulation worker ([`off_core`])
//! through exec's simulation entry point.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use alloy_eips::{BlockId, eip2930::AccessList};
use alloy_primitives::{Address, B256, U64, U256};
use alloy_rpc_types_eth::{
    AccessListResult, BlockOverrides, TransactionRequest, state::StateOverride,
};
use fulmen_chain::view::ChainView;
use fulmen_exec::simulate::{
    self, AccountOverride, CallRequest, EvmState, ExecError, Outcome, SimError, StateDb,
};
use serde_json::{Value, json};

use super::context::RpcContext;
use super::reply::ok;
use super::state::state_at;
use crate::limits::RpcLimits;
use crate::rpc::{Params, RpcError};
use crate::sim::{BatchBudget, Meter};

mod simulate_v1;
pub(crate) use simulate_v1::{FeeRule, simulate_v1};

/// Most rounds of `eth_estimateGas`'s binary search (64 halve any u64 range).
const ESTIMATE_ROUNDS_MAX: u32 = 64;
/// Most reruns of `eth_createAccessList` until its list stops changing.
const ACCESS_LIST_ROUNDS_MAX: usize = 8;

/// A simulation request, parsed on the net core, run on a worker.
pub(crate) type SimJob = Box<dyn FnOnce(&mut Sim) -> Result<Value, RpcError> + Send>;

/// Runs `job` on a simulation worker and awaits its answer without
/// blocking this core; charges the gas it used to `batch`.
pub(crate) async fn off_core(
    ctx: &RpcContext,
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
        chain: ctx.spec.evm_chain(),
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
pub(crate) struct Sim {
    view: Arc<ChainView>,
    chain: fulmen_chain::spec::EvmChain,
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
    /// The chain view this request reads.
    pub(crate) fn view(&self) -> &Arc<ChainView> {
        &self.view
    }

    /// The chain's id and fork schedule.
    pub(crate) fn chain(&self) -> fulmen_chain::spec::EvmChain {
        self.chain
    }

    /// Traces over `db` in the block `env` (`fulmen_exec::trace`): `before`
    /// executed untraced, then each of `traced`; within the request's time
    /// and gas budget, as a simulation.
    pub(crate) fn trace(
        &mut self,
        db: StateDb,
        (cfg, block): (revm::context::CfgEnv, revm::context::BlockEnv),
        (before, traced): (
            &[revm::context::TxEnv],
            &[(Option<B256>, revm::context::TxEnv)],
        ),
        (opts, bytes_max): (&alloy_rpc_types_trace::geth::GethDebugTracingOptions, usize),
    ) -> Result<Vec<alloy_rpc_types_trace::geth::TraceResult>, RpcError> {
        use fulmen_exec::trace::{TraceEnv, TraceError};
        self.meter.check_gas()?;
        let env = TraceEnv {
            cfg,
            block,
            deadline: self.meter.deadline(),
            struct_log_bytes_max: bytes_max,
        };
        match fulmen_exec::trace::trace(db, &env, before, traced, opts) {
            Ok((results, gas)) => {
                self.meter.charge(gas);
                Ok(results)
            }
            Err(TraceError::Sim(SimError::DeadlinePassed)) => Err(self.meter.timeout_error()),
            Err(e @ TraceError::Config(_)) => Err(RpcError::invalid_params(e.to_string())),
            Err(TraceError::TooLarge(limit)) => {
                Err(RpcError::response_too_large(limit, limit, true))
            }
            Err(e) => Err(RpcError::server(e.to_string())),
        }
    }

    /// One EVM run at `block` with `state_overrides`, within the budget.
    fn run(
        &mut self,
        call: &CallRequest,
        block: Option<BlockId>,
        state_overrides: &HashMap<Address, AccountOverride>,
    ) -> Result<(Outcome, EvmState), RunError> {
        self.run_with(call, (block, None), state_overrides)
    }

    /// [`Self::run`] with the block's fields overridden.
    fn run_with(
        &mut self,
        call: &CallRequest,
        (block, block_overrides): (Option<BlockId>, Option<&BlockOverrides>),
        state_overrides: &HashMap<Address, AccountOverride>,
    ) -> Result<(Outcome, EvmState), RunError> {
        self.meter.check_gas().map_err(RunError::Budget)?;
        let (state, block_ctx) = state_at(&self.view, block).map_err(RunError::Call)?;
        let block_ctx = match block_overrides {
            Some(o) => with_block_overrides(block_ctx, o).map_err(RunError::Call)?,
            None => block_ctx,
        };
        let mut db = StateDb::new(state, self.view.block_hashes().clone());
        db.apply_overrides(state_overrides);
        let deadline = self.meter.deadline();
        let result = simulate::simulate(db, self.chain, &block_ctx, call, deadline);
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

/// The reason in revert data as geth words it: an `Error(string)`'s text
/// as it is, a `Panic(uint256)`'s code as what it means; none for custom
/// errors and raw bytes (the data is in the answer).
fn revert_reason(output: &[u8]) -> Option<String> {
    use alloy_sol_types::{Panic, Revert, SolError};
    if let Ok(revert) = Revert::abi_decode(output) {
        return Some(revert.reason);
    }
    let code = Panic::abi_decode(output).ok()?.code;
    let reason = match u64::try_from(code).ok() {
        Some(0x00) => "generic panic",
        Some(0x01) => "assert(false)",
        Some(0x11) => "arithmetic underflow or overflow",
        Some(0x12) => "division or modulo by zero",
        Some(0x21) => "enum overflow",
        Some(0x22) => "invalid encoded storage byte array accessed",
        Some(0x31) => "out-of-bounds array access; popping on an empty array",
        Some(0x32) => "out-of-bounds access of an array or bytesN",
        Some(0x41) => "out of memory",
        Some(0x51) => "uninitialized function",
        _ => return Some(format!("unknown panic code: {code:#x}")),
    };
    Some(reason.to_string())
}

/// Geth's shape for a failed call: code 3 with the revert data.
fn revert_error(outcome: &Outcome) -> RpcError {
    if let Some(halt) = &outcome.halt {
        return RpcError::server(format!("execution halted: {halt:?}"));
    }
    let reason = revert_reason(&outcome.output);
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

/// The block context `ctx` with a call's block overrides (geth's
/// `eth_call` fourth parameter, `debug_traceCall`'s `blockOverrides`).
pub(crate) fn with_block_overrides(
    mut ctx: fulmen_chain::block::BlockContext,
    o: &BlockOverrides,
) -> Result<fulmen_chain::block::BlockContext, RpcError> {
    let too_large =
        |what: &str| RpcError::invalid_params(format!("blockOverrides.{what} too large"));
    if o.block_hash.is_some() {
        return Err(RpcError::invalid_params(
            "blockOverrides.blockHash is not supported",
        ));
    }
    if let Some(number) = o.number {
        ctx.number = u64::try_from(number).map_err(|_| too_large("number"))?;
    }
    if let Some(fee) = o.base_fee {
        ctx.base_fee = u64::try_from(fee).map_err(|_| too_large("baseFeePerGas"))?;
    }
    ctx.timestamp = o.time.unwrap_or(ctx.timestamp);
    ctx.gas_limit = o.gas_limit.unwrap_or(ctx.gas_limit);
    ctx.coinbase = o.coinbase.unwrap_or(ctx.coinbase);
    ctx.prevrandao = o.random.unwrap_or(ctx.prevrandao);
    Ok(ctx)
}

/// `eth_call`: the call's output, or its revert.
pub(crate) fn call(limits: &RpcLimits, params: &Params) -> Result<SimJob, RpcError> {
    params.at_most(4)?;
    let request: TransactionRequest = params.required(0, "transaction")?;
    let block: Option<BlockId> = params.optional(1, "block")?;
    let state_overrides = overrides(params.optional(2, "stateOverrides")?);
    let block_overrides: Option<BlockOverrides> = params.optional(3, "blockOverrides")?;
    let call = call_request(limits, request)?;
    Ok(Box::new(move |sim| {
        let at = (block, block_overrides.as_ref());
        let (outcome, _) = sim.run_with(&call, at, &state_overrides)?;
        if !outcome.success {
            return Err(revert_error(&outcome));
        }
        ok(outcome.output)
    }))
}

/// `eth_estimateGas`: the lowest gas limit with which the call succeeds, at
/// most `tx_gas_limit_max` (an estimate above it could never be sent).
pub(crate) fn estimate_gas(
    limits: &RpcLimits,
    tx_gas_limit_max: u64,
    params: &Params,
) -> Result<SimJob, RpcError> {
    params.at_most(3)?;
    let request: TransactionRequest = params.required(0, "transaction")?;
    let block: Option<BlockId> = params.optional(1, "block")?;
    let state_overrides = overrides(params.optional(2, "stateOverrides")?);
    let mut call = call_request(limits, request)?;
    let cap = call
        .gas
        .unwrap_or(limits.call_gas_max)
        .min(tx_gas_limit_max);
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
        while low + 1 < high && rounds < ESTIMATE_ROUNDS_MAX {
            rounds += 1;
            let mid = low + (high - low) / 2;
            call.gas = Some(mid);
            match sim.run(&call, block, &state_overrides) {
                Ok((o, _)) if o.success => high = mid,
                Err(RunError::Budget(e)) => return Err(e),
                Ok(_) | Err(RunError::Call(_)) => low = mid,
            }
        }
        assert!(high <= cap, "an estimate is never above the cap");
        ok(U64::from(high))
    }))
}

/// `eth_createAccessList`: what the call touches, minus the sender, the
/// callee, the coinbase and the precompiles.
pub(crate) fn create_access_list(limits: &RpcLimits, params: &Params) -> Result<SimJob, RpcError> {
    params.at_most(2)?;
    let request: TransactionRequest = params.required(0, "transaction")?;
    let block: Option<BlockId> = params.optional(1, "block")?;
    let mut call = call_request(limits, request)?;
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
        for _ in 0..ACCESS_LIST_ROUNDS_MAX {
            call.access_list = Some(list.clone());
            let (outcome, state) = sim.run(&call, block, &none)?;
            let spec = sim.chain.spec_at(block_ctx.timestamp);
            let found: AccessList = simulate::touched_access_list(&state, &excluded, spec);
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

/// The simulation inputs of a JSON transaction request; its gas is capped
/// at `rpc.call_gas_max`.
pub(crate) fn call_request(
    limits: &RpcLimits,
    request: TransactionRequest,
) -> Result<CallRequest, RpcError> {
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
                .unwrap_or(limits.call_gas_max)
                .min(limits.call_gas_max),
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

pub(crate) fn overrides(overrides: Option<StateOverride>) -> HashMap<Address, AccountOverride> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::testkit::{self, params};
    use alloy_primitives::{Bytes, address};

    /// Runs `job` on this thread over `view`, as a worker would.
    fn run_here(view: ChainView, limits: &RpcLimits, job: SimJob) -> Result<Value, RpcError> {
        let mut sim = Sim {
            view: Arc::new(view),
            chain: fulmen_chain::spec::EvmChain {
                chain_id: 1,
                osaka_time: None,
            },
            meter: Meter::new(limits, None, Instant::now()),
        };
        job(&mut sim)
    }

    #[test]
    fn requests_are_capped_and_blob_requests_refused() {
        let limits = RpcLimits {
            call_gas_max: 1_000,
            ..RpcLimits::default()
        };
        let request = TransactionRequest {
            gas: Some(5_000),
            ..Default::default()
        };
        assert_eq!(call_request(&limits, request).unwrap().gas, Some(1_000));
        let unset = call_request(&limits, TransactionRequest::default()).unwrap();
        assert_eq!(unset.gas, Some(1_000));
        let blob = TransactionRequest {
            blob_versioned_hashes: Some(vec![B256::ZERO]),
            ..Default::default()
        };
        let error = call_request(&limits, blob).unwrap_err();
        assert_eq!(error.code, -32602);
        assert!(error.message.contains("blob transactions"));
    }

    #[test]
    fn state_overrides_become_account_overrides() {
        let who = address!("0x00000000000000000000000000000000000000aa");
        let overrides = overrides(Some(
            serde_json::from_value(json!({
                who.to_string(): {"balance": "0x5", "stateDiff": {
                    B256::ZERO.to_string(): B256::repeat_byte(1).to_string()
                }}
            }))
            .expect("a state override"),
        ));
        let account = &overrides[&who];
        assert_eq!(account.balance, Some(U256::from(5)));
        assert_eq!(account.nonce, None);
        assert!(account.state.is_none());
        let diff = account.state_diff.as_ref().expect("a state diff");
        assert_eq!(diff[&B256::ZERO], B256::repeat_byte(1));
    }

    #[test]
    fn reverts_are_code_3_with_their_reason_and_data() {
        // Error(string) "no".
        let output: Bytes = "0x08c379a0\
            0000000000000000000000000000000000000000000000000000000000000020\
            0000000000000000000000000000000000000000000000000000000000000002\
            6e6f000000000000000000000000000000000000000000000000000000000000"
            .parse()
            .expect("hex");
        let outcome = Outcome {
            success: false,
            gas_used: 1,
            logs: Vec::new(),
            output: output.clone(),
            contract_address: None,
            halt: None,
        };
        let error = revert_error(&outcome);
        assert_eq!(error.code, 3);
        assert_eq!(error.message, "execution reverted: no", "geth's wording");
        assert_eq!(error.data, Some(json!(output)));
        // A custom error: no reason to decode.
        let custom = Outcome {
            output: "0xdeadbeef".parse().expect("hex"),
            ..outcome
        };
        assert_eq!(revert_error(&custom).message, "execution reverted");
        // Panic(0x11) and Panic(0x99), as geth words them.
        let panic = |code: u8| Outcome {
            output: format!("0x4e487b71{}{code:02x}", "0".repeat(62))
                .parse()
                .expect("hex"),
            ..custom.clone()
        };
        assert_eq!(
            revert_error(&panic(0x11)).message,
            "execution reverted: arithmetic underflow or overflow"
        );
        assert_eq!(
            revert_error(&panic(0x99)).message,
            "execution reverted: unknown panic code: 0x99"
        );
    }

    #[test]
    fn a_transfer_estimates_21000_and_a_call_to_nothing_returns_nothing() {
        let limits = RpcLimits::default();
        let request = json!([{"from": testkit::ALICE, "to": testkit::BOB, "value": "0x1"}]);
        let job = estimate_gas(&limits, 30_000_000, &params(request.clone())).unwrap();
        let estimate = run_here(testkit::chain(1), &limits, job).unwrap();
        assert_eq!(estimate, json!("0x5208"));
        let job = call(&limits, &params(request)).unwrap();
        assert_eq!(
            run_here(testkit::chain(1), &limits, job).unwrap(),
            json!("0x")
        );
        let at_unknown = json!([{"to": testkit::BOB}, "0x9"]);
        let job = call(&limits, &params(at_unknown)).unwrap();
        let error = run_here(testkit::chain(1), &limits, job).unwrap_err();
        assert_eq!(error.message, "header not found");
    }

    #[test]
    fn an_access_list_of_a_plain_transfer_is_empty() {
        let limits = RpcLimits::default();
        let request = json!([{"from": testkit::ALICE, "to": testkit::BOB}]);
        let job = create_access_list(&limits, &params(request)).unwrap();
        let result = run_here(testkit::chain(1), &limits, job).unwrap();
        assert_eq!(result["accessList"], json!([]));
        assert_eq!(result["gasUsed"], json!("0x5208"));
    }

    #[test]
    fn a_spent_gas_budget_ends_the_request_before_any_run() {
        let limits = RpcLimits {
            simulation_gas_budget: 0,
            ..RpcLimits::default()
        };
        let job = call(&limits, &params(json!([{"to": testkit::BOB}]))).unwrap();
        let error = run_here(testkit::chain(1), &limits, job).unwrap_err();
        assert!(
            error.message.contains("rpc.simulation_gas_budget"),
            "{}",
            error.message
        );
    }
}
