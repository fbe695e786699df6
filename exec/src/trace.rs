//! Transaction tracing for `debug_traceTransaction`, `debug_traceCall` and
//! `debug_traceBlockBy*`, in geth's output shapes, with the tracers of
//! `revm-inspectors` (the crate reth uses): the struct logger (default),
//! `callTracer`, `prestateTracer` (and its diff mode), `4byteTracer` and
//! `noopTracer`.
//!
//! A trace re-executes: the caller hands the state before the block, the
//! block's transactions before the traced ones (executed and committed
//! without a tracer), then the traced ones. Each run is halted by the same
//! wall-clock [`Deadline`] as a simulation.

use std::time::Instant;

use alloy_primitives::B256;
use alloy_rpc_types_trace::geth::{
    FourByteFrame, GethDebugBuiltInTracerType, GethDebugTracerType, GethDebugTracingOptions,
    GethTrace, NoopFrame, TraceResult,
};
use revm::{
    Context, MainBuilder, MainContext,
    context::{BlockEnv, CfgEnv, TxEnv},
    context_interface::result::{EVMError, ResultAndState},
    inspector::{InspectEvm, Inspector},
};
use revm_inspectors::tracing::{
    DebugInspector, FourByteInspector, TracingInspector, TracingInspectorConfig, TransactionContext,
};

use crate::evm::{ExecError, StateDb, invalid_tx_message, state_diff};
use crate::simulate::{Deadline, SimError};

/// Why a trace has no result.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A simulation error (deadline, invalid transaction, state).
    #[error(transparent)]
    Sim(#[from] SimError),
    /// A tracer or tracer option this node does not have.
    #[error("{0}")]
    Unsupported(String),
    /// The tracer's configuration does not parse.
    #[error("invalid tracer config: {0}")]
    Config(String),
    /// The struct logs would pass the byte budget.
    #[error("the struct logs pass {0} bytes")]
    TooLarge(usize),
}

/// Where and how a trace runs: the chain's rules and block, the deadline.
pub struct TraceEnv {
    /// The EVM configuration (chain id, rules of the block).
    pub cfg: CfgEnv,
    /// The block.
    pub block: BlockEnv,
    /// When the whole trace must stop.
    pub deadline: Instant,
    /// Most bytes of struct logs (stack and memory copies per step) one
    /// trace may record: a loop of steps would otherwise fill RAM long
    /// before the deadline.
    pub struct_log_bytes_max: usize,
}

/// Counts what the struct logger records per step (a fixed part, the stack
/// and the memory when they are recorded) and halts the run past a budget.
struct StepBudget {
    left: usize,
    stack: bool,
    memory: bool,
    passed: bool,
}

impl<CTX> Inspector<CTX, revm::interpreter::interpreter::EthInterpreter> for StepBudget {
    fn step(
        &mut self,
        interp: &mut revm::interpreter::Interpreter<revm::interpreter::interpreter::EthInterpreter>,
        _context: &mut CTX,
    ) {
        use revm::interpreter::interpreter_types::MemoryTr;
        let mut cost = 128;
        if self.stack {
            cost += interp.stack.len() * 66;
        }
        if self.memory {
            cost += interp.memory.size() * 2;
        }
        match self.left.checked_sub(cost) {
            Some(left) => self.left = left,
            None => {
                self.passed = true;
                interp.halt(revm::interpreter::InstructionResult::OutOfGas);
            }
        }
    }
}

/// Executes `before` over `db`, committing each, then traces each of
/// `traced` (committing it too) with `opts`; one result per traced
/// transaction, with its hash when given. Returns them and the gas all
/// runs used.
pub fn trace(
    mut db: StateDb,
    env: &TraceEnv,
    before: &[TxEnv],
    traced: &[(Option<B256>, TxEnv)],
    opts: &GethDebugTracingOptions,
) -> Result<(Vec<TraceResult>, u64), TraceError> {
    let mut gas = 0;
    for tx in before {
        let (result, next, _) = run(db, env, tx.clone(), Deadline::new(env.deadline))?;
        gas += result.result.tx_gas_used();
        db = next;
    }
    let mut out = Vec::with_capacity(traced.len());
    for (hash, tx) in traced {
        let (trace, used, next) = trace_one(db, env, (*hash, tx.clone()), opts)?;
        gas += used;
        db = next;
        out.push(TraceResult::Success {
            result: trace,
            tx_hash: *hash,
        });
    }
    Ok((out, gas))
}

/// Runs `tx` over `db` with `inspector` (a deadline in it), and commits
/// its changes to `db`; hands the inspector back.
fn run<I>(
    db: StateDb,
    env: &TraceEnv,
    tx: TxEnv,
    inspector: I,
) -> Result<(ResultAndState, StateDb, I), TraceError>
where
    I: Inspector<revm::handler::MainnetContext<StateDb>> + HasDeadline,
{
    let mut evm = Context::mainnet()
        .with_db(db)
        .with_cfg(env.cfg.clone())
        .with_block(env.block.clone())
        .build_mainnet_with_inspector(inspector);
    evm.precompiles = crate::precompiles::provider(env.cfg.spec);
    let result = evm.inspect_tx(tx);
    if evm.inspector.deadline_passed() {
        return Err(SimError::DeadlinePassed.into());
    }
    let result = result.map_err(|e| match e {
        EVMError::Database(e) => SimError::from(ExecError::Db(e)),
        EVMError::Transaction(e) => SimError::from(ExecError::Invalid(invalid_tx_message(&e))),
        e => SimError::from(ExecError::Invalid(e.to_string())),
    })?;
    let inspector = evm.inspector;
    let mut db = evm.ctx.journaled_state.database;
    let diff = state_diff(result.state.clone(), &db.state);
    db.state.apply(&diff);
    Ok((result, db, inspector))
}

/// What tells a run that its deadline passed.
trait HasDeadline {
    fn deadline_passed(&self) -> bool;
}

impl HasDeadline for Deadline {
    fn deadline_passed(&self) -> bool {
        self.passed()
    }
}

impl<T> HasDeadline for (Deadline, T) {
    fn deadline_passed(&self) -> bool {
        self.0.passed()
    }
}

/// Traces one transaction with the tracer `opts` names; the trace, the gas
/// it used and the state after it.
fn trace_one(
    db: StateDb,
    env: &TraceEnv,
    (hash, tx): (Option<B256>, TxEnv),
    opts: &GethDebugTracingOptions,
) -> Result<(GethTrace, u64, StateDb), TraceError> {
    let deadline = Deadline::new(env.deadline);
    // The top call frame's `gas` is the transaction's limit, as geth shows it.
    let gas_limit = tx.gas_limit;
    let tracer = match &opts.tracer {
        None => None,
        Some(GethDebugTracerType::BuiltInTracer(tracer)) => Some(*tracer),
        Some(GethDebugTracerType::JsTracer(_)) => {
            return Err(TraceError::Unsupported(
                "JavaScript tracers are not supported; use callTracer, prestateTracer, 4byteTracer, \
                 muxTracer, flatCallTracer, noopTracer or the default struct logger"
                    .into(),
            ));
        }
    };
    let config = |e: serde_json::Error| TraceError::Config(e.to_string());
    let tracing = |config| (deadline, TracingInspector::new(config));
    match tracer {
        None => struct_logs(db, env, tx, opts),
        Some(GethDebugBuiltInTracerType::CallTracer) => {
            let call = opts
                .tracer_config
                .clone()
                .into_call_config()
                .map_err(config)?;
            let inspector = tracing(TracingInspectorConfig::from_geth_call_config(&call));
            let (result, db, (_, inspector)) = run(db, env, tx, inspector)?;
            let used = result.result.tx_gas_used();
            let frame = inspector
                .with_transaction_gas_limit(gas_limit)
                .into_geth_builder()
                .geth_call_traces(call, used);
            Ok((GethTrace::CallTracer(frame), used, db))
        }
        Some(GethDebugBuiltInTracerType::PreStateTracer) => {
            let prestate = opts
                .tracer_config
                .clone()
                .into_pre_state_config()
                .map_err(config)?;
            let before = db.clone();
            let inspector = tracing(TracingInspectorConfig::from_geth_prestate_config(&prestate));
            let (result, db, (_, inspector)) = run(db, env, tx, inspector)?;
            let frame = inspector
                .into_geth_builder()
                .geth_prestate_traces(&result, &prestate, &before)
                .map_err(|e| SimError::from(ExecError::Db(e)))?;
            Ok((
                GethTrace::PreStateTracer(frame),
                result.result.tx_gas_used(),
                db,
            ))
        }
        Some(GethDebugBuiltInTracerType::FourByteTracer) => {
            let inspector = (deadline, FourByteInspector::default());
            let (result, db, (_, inspector)) = run(db, env, tx, inspector)?;
            let frame = FourByteFrame::from(&inspector);
            Ok((
                GethTrace::FourByteTracer(frame),
                result.result.tx_gas_used(),
                db,
            ))
        }
        Some(
            GethDebugBuiltInTracerType::MuxTracer | GethDebugBuiltInTracerType::FlatCallTracer,
        ) => {
            // revm-inspectors' own dispatcher builds these two.
            let debug =
                DebugInspector::new(opts.clone()).map_err(|e| TraceError::Config(e.to_string()))?;
            let mut before = db.clone();
            let (result, db, (_, mut debug)) = run(db, env, tx.clone(), (deadline, debug))?;
            let context = TransactionContext {
                tx_hash: hash,
                ..Default::default()
            };
            let trace = debug
                .get_result(Some(context), &tx, &env.block, &result, &mut before)
                .map_err(|e| TraceError::Sim(SimError::from(ExecError::Invalid(e.to_string()))))?;
            Ok((trace, result.result.tx_gas_used(), db))
        }
        Some(GethDebugBuiltInTracerType::NoopTracer) => {
            let (result, db, _) = run(db, env, tx, deadline)?;
            Ok((
                GethTrace::NoopTracer(NoopFrame::default()),
                result.result.tx_gas_used(),
                db,
            ))
        }
        Some(other) => Err(TraceError::Unsupported(format!(
            "the {other:?} tracer is not supported; use callTracer, prestateTracer, 4byteTracer, \
             muxTracer, flatCallTracer, noopTracer or the default struct logger"
        ))),
    }
}

/// The default struct logger's trace of `tx`, within the byte budget.
fn struct_logs(
    db: StateDb,
    env: &TraceEnv,
    tx: TxEnv,
    opts: &GethDebugTracingOptions,
) -> Result<(GethTrace, u64, StateDb), TraceError> {
    let deadline = Deadline::new(env.deadline);
    let budget = StepBudget {
        left: env.struct_log_bytes_max,
        stack: !opts.config.disable_stack.unwrap_or(false),
        memory: opts.config.enable_memory.unwrap_or(false),
        passed: false,
    };
    let config = TracingInspectorConfig::from_geth_config(&opts.config);
    let inspector = (deadline, (budget, TracingInspector::new(config)));
    let (result, db, (_, (budget, inspector))) = run(db, env, tx, inspector)?;
    if budget.passed {
        return Err(TraceError::TooLarge(env.struct_log_bytes_max));
    }
    let used = result.result.tx_gas_used();
    let output = result.result.output().cloned().unwrap_or_default();
    let frame = inspector
        .into_geth_builder()
        .geth_traces(used, output, opts.config);
    Ok((GethTrace::Default(frame), used, db))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Address, TxKind, U256};
    use fulmen_storage::{AccountState, HotState};
    use revm::bytecode::Bytecode;

    /// A contract that loops (JUMPDEST PUSH1 0 JUMP) until its gas runs out:
    /// ~90k steps with 1M gas.
    fn looping() -> (StateDb, TraceEnv, TxEnv) {
        let contract = Address::repeat_byte(0x55);
        let mut state = HotState::new();
        let code_hash = state.insert_code(Bytecode::new_raw(vec![0x5b, 0x60, 0x00, 0x56].into()));
        state.set_account(
            contract,
            AccountState {
                nonce: 1,
                balance: U256::ZERO,
                code_hash,
            },
        );
        let chain = fulmen_chain::spec::EvmChain {
            chain_id: 1,
            osaka_time: None,
        };
        let mut cfg = crate::evm::cfg_env(chain, 0);
        cfg.disable_nonce_check = true;
        cfg.disable_balance_check = true;
        cfg.disable_base_fee = true;
        let env = TraceEnv {
            cfg,
            block: BlockEnv {
                gas_limit: 30_000_000,
                ..Default::default()
            },
            deadline: Instant::now() + std::time::Duration::from_secs(30),
            struct_log_bytes_max: 1 << 20,
        };
        let tx = TxEnv {
            kind: TxKind::Call(contract),
            gas_limit: 1_000_000,
            ..Default::default()
        };
        (StateDb::new(state, Default::default()), env, tx)
    }

    #[test]
    fn struct_logs_past_the_byte_budget_are_refused_and_call_traces_are_not() {
        let (db, env, tx) = looping();
        let default = GethDebugTracingOptions::default();
        let error = trace(db.clone(), &env, &[], &[(None, tx.clone())], &default).unwrap_err();
        assert!(
            matches!(error, TraceError::TooLarge(limit) if limit == 1 << 20),
            "{error}"
        );
        let call: GethDebugTracingOptions =
            serde_json::from_value(serde_json::json!({"tracer": "callTracer"})).unwrap();
        let (results, gas) = trace(db, &env, &[], &[(None, tx)], &call).unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(gas, 1_000_000, "the loop spends all its gas");
    }
}
