//! The simulation entry point: what the RPC layer needs to run `eth_call`,
//! `eth_estimateGas` and `eth_createAccessList` over a chain-view snapshot.
//!
//! A simulation builds a short-lived EVM over a private [`StateDb`] (with
//! any state overrides applied), runs one call without committing, and is
//! halted by a wall-clock [`Deadline`]. netio imports this module only; the
//! sequencer's executor stays in [`crate::evm`].

use std::collections::HashSet;
use std::time::Instant;

use alloy_eips::eip2930::AccessList;
use alloy_primitives::{Address, B256, Bytes, Log, TxKind, U256};
use revm::{
    Context, MainBuilder, MainContext,
    context::{BlockEnv, CfgEnv, TxEnv},
    context_interface::result::EVMError,
    inspector::{InspectEvm, Inspector},
    interpreter::{
        CallInputs, CallOutcome, InstructionResult, Interpreter, interpreter::EthInterpreter,
    },
};

use fulmen_chain::block::BlockContext;

pub use crate::evm::{AccountOverride, ExecError, Outcome, StateDb, system_calls_with_root};
use crate::evm::{block_env, cfg_env, invalid_tx_message};
pub use revm::state::EvmState;

/// Accounts and slots a simulated call touched, minus the implicit ones, in
/// the shape of an EIP-2930 access list.
pub fn touched_access_list(
    state: &EvmState,
    excluded: &HashSet<Address>,
    spec: revm::primitives::hardfork::SpecId,
) -> AccessList {
    let precompiles = crate::precompiles::provider(spec);
    let mut items: Vec<_> = state
        .iter()
        .filter(|(address, _)| !excluded.contains(*address) && !precompiles.contains(address))
        .map(|(address, account)| {
            let mut keys: Vec<B256> = account.storage.keys().map(|k| B256::from(*k)).collect();
            keys.sort();
            alloy_eips::eip2930::AccessListItem {
                address: *address,
                storage_keys: keys,
            }
        })
        .collect();
    items.sort_by_key(|item| item.address);
    AccessList(items)
}

/// Simulation inputs (`eth_call`, `eth_estimateGas`).
#[derive(Debug, Clone, Default)]
pub struct CallRequest {
    /// Sender; zero address when absent.
    pub from: Option<Address>,
    /// Callee, or `None` to create.
    pub to: Option<Address>,
    /// Gas limit; the block gas limit when absent.
    pub gas: Option<u64>,
    /// Legacy gas price.
    pub gas_price: Option<u128>,
    /// EIP-1559 fee cap.
    pub max_fee_per_gas: Option<u128>,
    /// EIP-1559 tip.
    pub max_priority_fee_per_gas: Option<u128>,
    /// Value sent.
    pub value: Option<U256>,
    /// Calldata.
    pub input: Bytes,
    /// Nonce; the sender's current nonce when absent.
    pub nonce: Option<u64>,
    /// Access list.
    pub access_list: Option<AccessList>,
}

/// Why a simulation gave no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// revm refused the call, or the state could not answer.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The wall-clock deadline passed and the EVM was halted.
    #[error("the simulation ran past its deadline")]
    DeadlinePassed,
}

/// Instructions between two clock reads: a read costs about as much as a
/// few dozen cheap instructions, and a slow instruction (a big KECCAK256)
/// is bounded by its gas.
pub const DEADLINE_CHECK_STEPS: u32 = 32;
const _: () = assert!(DEADLINE_CHECK_STEPS.is_power_of_two());

/// An inspector that halts the EVM once a wall-clock deadline has passed.
/// It reads the clock every [`DEADLINE_CHECK_STEPS`] instructions and
/// before every call (a loop of precompile calls runs few instructions per
/// call). Once passed, every frame halts at its next instruction, so the
/// whole call stack unwinds; the halt looks like out-of-gas to revm, and
/// [`Deadline::passed`] tells the two apart.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    steps: u32,
    passed: bool,
}

impl Deadline {
    /// A deadline at `at`.
    pub fn new(at: Instant) -> Self {
        Self {
            at,
            steps: 0,
            passed: false,
        }
    }

    /// Whether the deadline was seen to pass during the run.
    pub fn passed(&self) -> bool {
        self.passed
    }

    fn check(&mut self) -> bool {
        if !self.passed && Instant::now() >= self.at {
            self.passed = true;
        }
        self.passed
    }
}

impl<CTX> Inspector<CTX, EthInterpreter> for Deadline {
    #[inline]
    fn step(&mut self, interp: &mut Interpreter<EthInterpreter>, _context: &mut CTX) {
        self.steps = self.steps.wrapping_add(1);
        let due = self.steps & (DEADLINE_CHECK_STEPS - 1) == 0;
        if self.passed || (due && self.check()) {
            interp.halt(InstructionResult::OutOfGas);
        }
    }

    fn call(&mut self, _context: &mut CTX, _inputs: &mut CallInputs) -> Option<CallOutcome> {
        // The caller's next instruction halts; one precompile run is
        // bounded by its gas.
        self.check();
        None
    }
}

/// Runs a simulation over `db` (a private snapshot) without committing,
/// halting it once `deadline` has passed. Fee checks are relaxed when no fee
/// was given, as in geth.
pub fn simulate(
    db: StateDb,
    chain: fulmen_chain::spec::EvmChain,
    block: &BlockContext,
    call: &CallRequest,
    deadline: Instant,
) -> Result<(Outcome, EvmState), SimError> {
    if Instant::now() >= deadline {
        return Err(SimError::DeadlinePassed);
    }
    let (cfg, block_env, tx) = call_env(&db, chain, block, call);
    let spec = cfg.spec;
    let mut evm = Context::mainnet()
        .with_db(db)
        .with_cfg(cfg)
        .with_block(block_env)
        .build_mainnet_with_inspector(Deadline::new(deadline));
    evm.precompiles = crate::precompiles::provider(spec);
    let result = evm.inspect_tx(tx);
    if evm.inspector.passed() {
        return Err(SimError::DeadlinePassed);
    }
    match result {
        Ok(result) => Ok((Outcome::from_result(result.result), result.state)),
        Err(EVMError::Database(e)) => Err(ExecError::Db(e).into()),
        Err(EVMError::Transaction(e)) => Err(ExecError::Invalid(invalid_tx_message(&e)).into()),
        Err(e) => Err(ExecError::Invalid(e.to_string()).into()),
    }
}

/// Runs `call` over `db` in `block` as `eth_simulateV1` does, and commits
/// its changes to `db`. With `validate` it runs as a transaction would
/// (nonce, balance, base fee and an EOA sender are checked); without, as
/// `eth_call` (see [`call_env`]). Returns the outcome and the transaction
/// it ran (nonce and gas filled in).
pub fn simulate_commit(
    db: &mut StateDb,
    (chain, block): (fulmen_chain::spec::EvmChain, &BlockContext),
    call: &CallRequest,
    (validate, transfers): (bool, bool),
    deadline: Instant,
) -> Result<(Outcome, TxEnv), SimError> {
    if Instant::now() >= deadline {
        return Err(SimError::DeadlinePassed);
    }
    let (mut cfg, mut block_env, tx) = call_env(db, chain, block, call);
    if validate {
        cfg.disable_base_fee = false;
        cfg.disable_balance_check = false;
        cfg.disable_nonce_check = false;
        cfg.disable_eip3607 = false;
        block_env.basefee = block.base_fee;
    }
    let spec = cfg.spec;
    let mut evm = Context::mainnet()
        .with_db(std::mem::take(db))
        .with_cfg(cfg)
        .with_block(block_env)
        .build_mainnet_with_inspector((Deadline::new(deadline), TransferLogs::new(transfers)));
    evm.precompiles = crate::precompiles::provider(spec);
    let result = evm.inspect_tx(tx.clone());
    let passed = evm.inspector.0.passed();
    let logs = std::mem::take(&mut evm.inspector.1.done);
    *db = evm.ctx.journaled_state.database;
    if passed {
        return Err(SimError::DeadlinePassed);
    }
    let result = match result {
        Ok(result) => result,
        Err(EVMError::Database(e)) => return Err(ExecError::Db(e).into()),
        Err(EVMError::Transaction(e)) => {
            return Err(ExecError::Invalid(invalid_tx_message(&e)).into());
        }
        Err(e) => return Err(ExecError::Invalid(e.to_string()).into()),
    };
    let diff = crate::evm::state_diff(result.state, &db.state);
    db.state.apply(&diff);
    let mut outcome = Outcome::from_result(result.result);
    if transfers && outcome.success {
        outcome.logs = logs;
    }
    Ok((outcome, tx))
}

/// Where `eth_simulateV1`'s `traceTransfers` logs ether transfers from
/// (ERC-7528's native-asset address).
pub const TRANSFER_LOG_ADDRESS: Address =
    alloy_primitives::address!("0xEeeeeEeeeEeEeeEeEeEeeEEEeeeeEeeeeeeeEEeE");

/// `eth_simulateV1`'s `traceTransfers`: every ether transfer (a call or
/// create with value, a self-destruct's balance) as an ERC-20 `Transfer`
/// log from [`TRANSFER_LOG_ADDRESS`], in order among the contracts' logs.
/// A frame's logs are kept only if it succeeds, as the EVM's are.
#[derive(Debug, Default)]
struct TransferLogs {
    enabled: bool,
    /// Logs of each open frame, innermost last.
    frames: Vec<Vec<Log>>,
    /// Logs of the finished top frame.
    done: Vec<Log>,
}

impl TransferLogs {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }

    fn transfer(from: Address, to: Address, value: U256) -> Log {
        let topic = alloy_primitives::keccak256("Transfer(address,address,uint256)");
        Log::new_unchecked(
            TRANSFER_LOG_ADDRESS,
            vec![topic, from.into_word(), to.into_word()],
            Bytes::copy_from_slice(&value.to_be_bytes::<32>()),
        )
    }

    /// Closes the innermost frame: its logs join its parent's when it
    /// succeeded.
    fn end_frame(&mut self, ok: bool) {
        let Some(logs) = self.frames.pop() else {
            return;
        };
        if !ok {
            return;
        }
        match self.frames.last_mut() {
            Some(parent) => parent.extend(logs),
            None => self.done = logs,
        }
    }
}

impl<CTX> Inspector<CTX, EthInterpreter> for TransferLogs {
    fn log(&mut self, _context: &mut CTX, log: Log) {
        if let Some(frame) = self.frames.last_mut() {
            frame.push(log);
        }
    }

    fn call(&mut self, _context: &mut CTX, inputs: &mut CallInputs) -> Option<CallOutcome> {
        if self.enabled {
            let mut logs = Vec::new();
            if inputs.transfers_value() {
                let value = inputs.transfer_value().unwrap_or_default();
                logs.push(Self::transfer(
                    inputs.transfer_from(),
                    inputs.transfer_to(),
                    value,
                ));
            }
            self.frames.push(logs);
        }
        None
    }

    fn call_end(&mut self, _context: &mut CTX, _inputs: &CallInputs, outcome: &mut CallOutcome) {
        if self.enabled {
            self.end_frame(outcome.result.result.is_ok());
        }
    }

    fn create(
        &mut self,
        _context: &mut CTX,
        _inputs: &mut revm::interpreter::CreateInputs,
    ) -> Option<revm::interpreter::CreateOutcome> {
        if self.enabled {
            self.frames.push(Vec::new());
        }
        None
    }

    fn create_end(
        &mut self,
        _context: &mut CTX,
        inputs: &revm::interpreter::CreateInputs,
        outcome: &mut revm::interpreter::CreateOutcome,
    ) {
        if !self.enabled {
            return;
        }
        let ok = outcome.result.result.is_ok();
        if ok
            && inputs.value() > U256::ZERO
            && let (Some(to), Some(frame)) = (outcome.address, self.frames.last_mut())
        {
            // The value moved before the init code ran.
            frame.insert(0, Self::transfer(inputs.caller(), to, inputs.value()));
        }
        self.end_frame(ok);
    }

    fn selfdestruct(&mut self, contract: Address, target: Address, value: U256) {
        if self.enabled
            && value > U256::ZERO
            && let Some(frame) = self.frames.last_mut()
        {
            frame.push(Self::transfer(contract, target, value));
        }
    }
}

/// The revm configuration, block and transaction of `call` over `db` at
/// `block`, as geth runs `eth_call`: fee checks relaxed when no fee was
/// given, any caller (contracts included), the sender's nonce unless one
/// was given.
pub fn call_env(
    db: &StateDb,
    chain: fulmen_chain::spec::EvmChain,
    block: &BlockContext,
    call: &CallRequest,
) -> (CfgEnv, BlockEnv, TxEnv) {
    let from = call.from.unwrap_or_default();
    let nonce = call
        .nonce
        .unwrap_or_else(|| db.state.account(&from).map_or(0, |a| a.nonce));
    let no_fee = call.gas_price.is_none() && call.max_fee_per_gas.is_none();
    let mut cfg = cfg_env(chain, block.timestamp);
    cfg.disable_base_fee = no_fee;
    cfg.disable_balance_check = no_fee;
    // As geth's eth_call and eth_estimateGas: a given nonce is the
    // transaction's (a create's address follows it) but is not checked.
    cfg.disable_nonce_check = true;
    // As geth's eth_call: any address may be the caller, contracts included.
    cfg.disable_eip3607 = true;
    let mut block_env = block_env(block);
    if no_fee {
        block_env.basefee = 0;
    }
    let (gas_price, gas_priority_fee, tx_type) = match (call.gas_price, call.max_fee_per_gas) {
        (Some(price), _) => (price, None, 0),
        (None, Some(max_fee)) => (max_fee, Some(call.max_priority_fee_per_gas.unwrap_or(0)), 2),
        (None, None) => (0, None, 0),
    };
    let access_list = call.access_list.clone().unwrap_or_default();
    let tx_type = if tx_type == 0 && !access_list.is_empty() {
        1
    } else {
        tx_type
    };
    let tx = TxEnv {
        tx_type,
        caller: from,
        gas_limit: call.gas.unwrap_or(block.gas_limit).min(block.gas_limit),
        gas_price,
        kind: call.to.map_or(TxKind::Create, TxKind::Call),
        value: call.value.unwrap_or_default(),
        data: call.input.clone(),
        nonce,
        chain_id: Some(chain.chain_id),
        access_list,
        gas_priority_fee,
        ..Default::default()
    };
    (cfg, block_env, tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAIN: fulmen_chain::spec::EvmChain = fulmen_chain::spec::EvmChain {
        chain_id: 1,
        osaka_time: None,
    };
    use std::time::Duration;

    /// Hashes 32 KiB of memory in a loop until less than 64 Ki gas is left,
    /// then stops (succeeds): slow per unit of gas, and any limit works.
    const HASH_LOOP: &str = "5b620100005a10601457618000600020506000565b00";

    /// Calls the SHA-256 precompile on 32 KiB in a loop until less than
    /// 64 Ki gas is left: few instructions per unit of work.
    const PRECOMPILE_LOOP: &str = "5b620100005a10601b5760206000618000600060025afa506000565b00";

    fn block() -> BlockContext {
        BlockContext {
            number: 1,
            timestamp: 1,
            base_fee: 0,
            gas_limit: 1_000_000_000,
            coinbase: Address::ZERO,
            prevrandao: B256::ZERO,
        }
    }

    fn create(code: &str, gas: u64) -> CallRequest {
        CallRequest {
            input: code.parse().expect("hex"),
            gas: Some(gas),
            ..Default::default()
        }
    }

    #[test]
    fn the_loops_succeed_with_a_small_limit_and_no_deadline_in_sight() {
        let far = Instant::now() + Duration::from_secs(3600);
        for code in [HASH_LOOP, PRECOMPILE_LOOP] {
            let (outcome, _) = simulate(
                StateDb::default(),
                CHAIN,
                &block(),
                &create(code, 2_000_000),
                far,
            )
            .expect("runs");
            assert!(outcome.success, "{code}: {outcome:?}");
            assert!(outcome.gas_used > 1_900_000, "{code}: {outcome:?}");
        }
    }

    #[test]
    fn a_passed_deadline_halts_the_evm_with_its_own_error() {
        // A billion gas of hashing is seconds of work on any machine; the
        // deadline is 20 ms away.
        for code in [HASH_LOOP, PRECOMPILE_LOOP] {
            let soon = Instant::now() + Duration::from_millis(20);
            let result = simulate(
                StateDb::default(),
                CHAIN,
                &block(),
                &create(code, 1_000_000_000),
                soon,
            );
            assert_eq!(result.unwrap_err(), SimError::DeadlinePassed, "{code}");
        }
        let past = Instant::now();
        let result = simulate(
            StateDb::default(),
            CHAIN,
            &block(),
            &create(HASH_LOOP, 100_000),
            past,
        );
        assert_eq!(result.unwrap_err(), SimError::DeadlinePassed);
    }
}
