//! revm over the hot state.
//!
//! [`StateDb`] is the only surface the EVM sees (revm's `Database`). The
//! sequencer keeps one long-lived EVM whose database owns the working state;
//! each transaction is executed without committing, its state changes are
//! turned into a [`StateDiff`] and applied to that state. Simulations
//! (`eth_call`, `eth_estimateGas`, `eth_createAccessList`) are in
//! the `simulate` module.

use std::collections::HashMap;

use alloy_consensus::{Transaction as _, TxEnvelope};
use alloy_primitives::{Address, B256, Bytes, Log, U256};
use either::Either;
use fulmen_storage::{AccountState, HotState, StateDiff};
use revm::{
    Context, MainBuilder, MainContext,
    bytecode::Bytecode,
    context::{BlockEnv, CfgEnv, TxEnv},
    context_interface::block::BlobExcessGasAndPrice,
    context_interface::result::{EVMError, ExecutionResult, HaltReason, InvalidTransaction},
    database_interface::{DBErrorMarker, Database, DatabaseRef},
    handler::{ExecuteEvm, MainnetEvm},
    primitives::{KECCAK_EMPTY, eip4844::BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE},
    state::{AccountInfo, EvmState},
};

use fulmen_chain::block::{BlockContext, BlockHashes};
use fulmen_chain::spec::EvmChain;
use fulmen_chain::tx::RecoveredTx;

/// Errors the state database can return to revm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// BLOCKHASH asked for the parent block while its state root is still
    /// being computed; the sequencer runs the transaction again once sealed.
    #[error("hash of block {0} is not sealed yet")]
    BlockHashPending(u64),
}

impl DBErrorMarker for DbError {}

/// Per-account changes for simulations (`eth_call` state overrides).
#[derive(Debug, Clone, Default)]
pub struct AccountOverride {
    /// Replacement balance.
    pub balance: Option<U256>,
    /// Replacement nonce.
    pub nonce: Option<u64>,
    /// Replacement code.
    pub code: Option<Bytes>,
    /// Replaces the whole storage when set.
    pub state: Option<HashMap<B256, B256>>,
    /// Replaces just these slots.
    pub state_diff: Option<HashMap<B256, B256>>,
}

/// The EVM's view of the state: a hot-state snapshot, the sealed block
/// hashes, and, for simulations, the storage of accounts whose storage an
/// override replaced wholesale.
#[derive(Debug, Clone, Default)]
pub struct StateDb {
    /// Accounts, storage and code.
    pub state: HotState,
    /// Hashes of the last sealed blocks, by number.
    pub block_hashes: BlockHashes,
    /// Accounts whose storage a full `state` override replaced, with their
    /// whole new storage: reads of these accounts never reach `state`, so a
    /// replacement costs O(override size), not a scan of the state.
    replaced: HashMap<Address, HashMap<U256, U256>>,
    /// The open block whose system calls ([`system_calls`]) wait for its
    /// parent's hash: until they are made, reads of the system contracts'
    /// storage fail as BLOCKHASH of that parent does, and the transaction
    /// runs again once they are made.
    pub system_pending: Option<u64>,
    /// The oldest block number BLOCKHASH read since this was last taken
    /// (for execution witnesses).
    pub oldest_hash_read: std::cell::Cell<Option<u64>>,
}

impl StateDb {
    /// A database over `state` and the sealed block hashes.
    pub fn new(state: HotState, block_hashes: BlockHashes) -> Self {
        Self {
            state,
            block_hashes,
            replaced: HashMap::new(),
            system_pending: None,
            oldest_hash_read: std::cell::Cell::new(None),
        }
    }

    /// Applies `eth_call` state overrides to this (private) copy of the
    /// state. Costs O(size of the overrides): a full `state` override is
    /// kept beside the snapshot instead of zeroing the account's old slots.
    pub fn apply_overrides(&mut self, overrides: &HashMap<Address, AccountOverride>) {
        for (address, change) in overrides {
            let mut account = self
                .state
                .account(address)
                .copied()
                .unwrap_or_else(|| AccountState::funded(U256::ZERO));
            if let Some(balance) = change.balance {
                account.balance = balance;
            }
            if let Some(nonce) = change.nonce {
                account.nonce = nonce;
            }
            if let Some(code) = &change.code {
                account.code_hash = if code.is_empty() {
                    KECCAK_EMPTY
                } else {
                    self.state.insert_code(Bytecode::new_raw(code.clone()))
                };
            }
            self.state.set_account(*address, account);
            if let Some(slots) = &change.state {
                let storage = slots
                    .iter()
                    .map(|(slot, value)| {
                        (U256::from_be_bytes(slot.0), U256::from_be_bytes(value.0))
                    })
                    .collect();
                self.replaced.insert(*address, storage);
            }
            for (slot, value) in change.state_diff.iter().flatten() {
                let (slot, value) = (U256::from_be_bytes(slot.0), U256::from_be_bytes(value.0));
                match self.replaced.get_mut(address) {
                    Some(storage) => {
                        storage.insert(slot, value);
                    }
                    None => self.state.set_storage(*address, slot, value),
                }
            }
        }
    }
}

impl DatabaseRef for StateDb {
    type Error = DbError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, DbError> {
        Ok(self.state.account(&address).map(|account| {
            let code = if account.has_code() {
                self.state.code(&account.code_hash).cloned()
            } else {
                None
            };
            AccountInfo {
                balance: account.balance,
                nonce: account.nonce,
                code_hash: account.code_hash,
                code: Some(code.unwrap_or_default()),
                ..Default::default()
            }
        }))
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, DbError> {
        Ok(self.state.code(&code_hash).cloned().unwrap_or_default())
    }

    fn storage_ref(&self, address: Address, index: U256) -> Result<U256, DbError> {
        if let Some(number) = self.system_pending
            && SYSTEM_CONTRACTS.contains(&address)
        {
            return Err(DbError::BlockHashPending(number.saturating_sub(1)));
        }
        if let Some(storage) = self.replaced.get(&address) {
            // Slots not named in a full `state` override read as zero.
            return Ok(storage.get(&index).copied().unwrap_or_default());
        }
        Ok(self.state.storage(&address, &index))
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, DbError> {
        match self.block_hashes.get(number) {
            Some(hash) => {
                if self
                    .oldest_hash_read
                    .get()
                    .is_none_or(|oldest| number < oldest)
                {
                    self.oldest_hash_read.set(Some(number));
                }
                Ok(hash)
            }
            None => Err(DbError::BlockHashPending(number)),
        }
    }
}

/// Reads never change a `StateDb`: the EVM's reads are its `DatabaseRef`'s.
impl Database for StateDb {
    type Error = DbError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, DbError> {
        self.basic_ref(address)
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, DbError> {
        self.code_by_hash_ref(code_hash)
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, DbError> {
        self.storage_ref(address, index)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, DbError> {
        self.block_hash_ref(number)
    }
}

/// The contracts a block's system calls write: EIP-4788's beacon roots
/// and EIP-2935's block-hash history.
pub const SYSTEM_CONTRACTS: [Address; 2] = [
    alloy_eips::eip4788::BEACON_ROOTS_ADDRESS,
    alloy_eips::eip2935::HISTORY_STORAGE_ADDRESS,
];

/// The system calls at the start of block `block` of `chain`, over `db`
/// (the state before the block's transactions): EIP-4788's with the parent
/// beacon block root (zero on this L2, as its headers say), then
/// EIP-2935's with the parent block's hash, each when its contract has
/// code (else it is skipped, as both EIPs say). Returns each call's state
/// changes, in order; `db` is left as it was. A call that fails changes
/// nothing (it cannot with the canonical code) and is logged.
pub fn system_calls(
    db: &StateDb,
    chain: EvmChain,
    block: &BlockContext,
    parent_hash: B256,
) -> Vec<StateDiff> {
    system_calls_with_root(db, chain, block, (parent_hash, B256::ZERO))
}

/// [`system_calls`] with another parent beacon block root (simulations'
/// block overrides).
pub fn system_calls_with_root(
    db: &StateDb,
    chain: EvmChain,
    block: &BlockContext,
    (parent_hash, beacon_root): (B256, B256),
) -> Vec<StateDiff> {
    use revm::handler::SystemCallEvm;
    let mut db = db.clone();
    db.system_pending = None;
    let calls = [
        (alloy_eips::eip4788::BEACON_ROOTS_ADDRESS, beacon_root),
        (alloy_eips::eip2935::HISTORY_STORAGE_ADDRESS, parent_hash),
    ];
    let mut evm = build_evm(db, chain, block);
    let mut diffs = Vec::new();
    for (address, input) in calls {
        let db = &evm.ctx.journaled_state.database;
        if !db.state.account(&address).is_some_and(|a| a.has_code()) {
            continue;
        }
        match evm.system_call_with_caller(
            alloy_eips::eip4788::SYSTEM_ADDRESS,
            address,
            Bytes::copy_from_slice(input.as_slice()),
        ) {
            Ok(done) if done.result.is_success() => {
                let mut state = done.state;
                // revm loads these as for any call; a system call changes
                // neither (no fee, no nonce).
                state.remove(&alloy_eips::eip4788::SYSTEM_ADDRESS);
                state.remove(&block.coinbase);
                let db = &mut evm.ctx.journaled_state.database;
                let diff = state_diff(state, &db.state);
                db.state.apply(&diff);
                diffs.push(diff);
            }
            Ok(done) => tracing::warn!(
                %address, block = block.number, result = ?done.result,
                "system call failed: it changes nothing"
            ),
            Err(e) => tracing::warn!(
                %address, block = block.number, error = %e,
                "system call failed: it changes nothing"
            ),
        }
    }
    diffs
}

/// `db`, the state before block `block`, after the block's system calls:
/// what its first transaction ran over. Without the parent's hash (not
/// kept) the calls are left out, and reads of their contracts' storage
/// fail as in the sequencer while they wait.
pub fn before_block_txs(mut db: StateDb, chain: EvmChain, block: &BlockContext) -> StateDb {
    match block
        .number
        .checked_sub(1)
        .and_then(|n| db.block_hashes.get(n))
    {
        Some(parent_hash) => {
            for diff in system_calls(&db, chain, block, parent_hash) {
                db.state.apply(&diff);
            }
        }
        None => db.system_pending = Some(block.number),
    }
    db
}

/// The revm block environment for `ctx`.
pub fn block_env(ctx: &BlockContext) -> BlockEnv {
    BlockEnv {
        number: U256::from(ctx.number),
        beneficiary: ctx.coinbase,
        timestamp: U256::from(ctx.timestamp),
        gas_limit: ctx.gas_limit,
        basefee: ctx.base_fee,
        difficulty: U256::ZERO,
        prevrandao: Some(ctx.prevrandao),
        blob_excess_gas_and_price: Some(BlobExcessGasAndPrice::new(
            0,
            BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE,
        )),
        ..Default::default()
    }
}

/// The revm configuration for a block of `chain` at `timestamp`. The
/// per-transaction gas cap is fulmen's own (`tx_gas_limit_max`, checked
/// when a transaction arrives; simulations have theirs), not revm's Osaka
/// default.
pub fn cfg_env(chain: EvmChain, timestamp: u64) -> CfgEnv {
    let mut cfg = CfgEnv::new_with_spec(chain.spec_at(timestamp));
    cfg.chain_id = chain.chain_id;
    cfg.tx_gas_limit_cap = Some(u64::MAX);
    cfg
}

/// The revm transaction environment of a signed, recovered transaction.
pub fn tx_env(tx: &RecoveredTx) -> TxEnv {
    let envelope = &tx.envelope;
    let (gas_price, gas_priority_fee) = match envelope {
        TxEnvelope::Legacy(_) | TxEnvelope::Eip2930(_) => (envelope.max_fee_per_gas(), None),
        _ => (
            envelope.max_fee_per_gas(),
            envelope.max_priority_fee_per_gas(),
        ),
    };
    TxEnv {
        tx_type: envelope.tx_type() as u8,
        caller: tx.sender,
        gas_limit: envelope.gas_limit(),
        gas_price,
        kind: envelope.kind(),
        value: envelope.value(),
        data: envelope.input().clone(),
        nonce: envelope.nonce(),
        chain_id: envelope.chain_id(),
        access_list: envelope.access_list().cloned().unwrap_or_default(),
        gas_priority_fee,
        blob_hashes: Vec::new(),
        max_fee_per_blob_gas: 0,
        authorization_list: tx
            .authorizations
            .iter()
            .cloned()
            .map(Either::Right)
            .collect(),
    }
}

/// The EVM type fulmen runs.
pub type Evm = MainnetEvm<revm::handler::MainnetContext<StateDb>>;

/// Builds an EVM over `db` for `block`.
pub fn build_evm(db: StateDb, chain: EvmChain, block: &BlockContext) -> Evm {
    let mut evm = Context::mainnet()
        .with_db(db)
        .with_cfg(cfg_env(chain, block.timestamp))
        .with_block(block_env(block))
        .build_mainnet();
    evm.precompiles = crate::precompiles::provider(evm.ctx.cfg.spec);
    evm
}

/// Sets the rules of `evm` to `spec`, precompiles included (the
/// sequencer's EVM lives across a fork).
pub fn set_spec(evm: &mut Evm, spec: revm::primitives::hardfork::SpecId) {
    evm.ctx.cfg.spec = spec;
    evm.precompiles = crate::precompiles::provider(spec);
}

/// What executing one transaction produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// EIP-658 status.
    pub success: bool,
    /// Gas used (after refunds and the EIP-7623 floor).
    pub gas_used: u64,
    /// Logs emitted (none when reverted).
    pub logs: Vec<Log>,
    /// Return data, or revert data.
    pub output: Bytes,
    /// Address of a created contract.
    pub contract_address: Option<Address>,
    /// Halt reason, for simulations' error messages.
    pub halt: Option<HaltReason>,
}

/// Why revm refused to run a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The database needs a block hash that is not sealed yet.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The transaction is invalid in this state (geth-style message).
    #[error("{0}")]
    Invalid(String),
}

impl Outcome {
    pub(crate) fn from_result(result: ExecutionResult<HaltReason>) -> Self {
        match result {
            ExecutionResult::Success {
                gas, logs, output, ..
            } => Self {
                success: true,
                gas_used: gas.tx_gas_used(),
                logs,
                contract_address: output.address().copied(),
                output: output.into_data(),
                halt: None,
            },
            ExecutionResult::Revert { gas, output, .. } => Self {
                success: false,
                gas_used: gas.tx_gas_used(),
                logs: Vec::new(),
                output,
                contract_address: None,
                halt: None,
            },
            ExecutionResult::Halt { reason, gas, .. } => Self {
                success: false,
                gas_used: gas.tx_gas_used(),
                logs: Vec::new(),
                output: Bytes::new(),
                contract_address: None,
                halt: Some(reason),
            },
        }
    }
}

/// Runs `tx` without committing; returns the outcome and the state changes.
pub fn transact(evm: &mut Evm, tx: TxEnv) -> Result<(Outcome, EvmState), ExecError> {
    match evm.transact(tx) {
        Ok(result) => Ok((Outcome::from_result(result.result), result.state)),
        Err(EVMError::Database(e)) => Err(ExecError::Db(e)),
        Err(EVMError::Transaction(e)) => Err(ExecError::Invalid(invalid_tx_message(&e))),
        Err(e) => Err(ExecError::Invalid(e.to_string())),
    }
}

/// Geth's wording for the invalid-transaction errors clients match on.
pub fn invalid_tx_message(e: &InvalidTransaction) -> String {
    match e {
        InvalidTransaction::NonceTooLow { tx, state } => {
            format!("nonce too low: next nonce {state}, tx nonce {tx}")
        }
        InvalidTransaction::NonceTooHigh { tx, state } => {
            format!("nonce too high: next nonce {state}, tx nonce {tx}")
        }
        InvalidTransaction::LackOfFundForMaxFee { fee, balance } => {
            format!("insufficient funds for gas * price + value: have {balance} want {fee}")
        }
        InvalidTransaction::CallGasCostMoreThanGasLimit {
            initial_gas,
            gas_limit,
        } => {
            format!("intrinsic gas too low: gas {gas_limit}, minimum needed {initial_gas}")
        }
        InvalidTransaction::GasFloorMoreThanGasLimit {
            gas_floor,
            gas_limit,
        } => {
            format!("intrinsic gas too low: gas {gas_limit}, minimum needed {gas_floor}")
        }
        InvalidTransaction::GasPriceLessThanBasefee => {
            "max fee per gas less than block base fee".into()
        }
        InvalidTransaction::CallerGasLimitMoreThanBlock => "exceeds block gas limit".into(),
        InvalidTransaction::RejectCallerWithCode => "sender not an eoa".into(),
        other => other.to_string(),
    }
}

/// Turns revm's state changes into a diff, following EIP-161 (touched empty
/// accounts are deleted) and EIP-6780 (self-destructed accounts are deleted).
/// Code goes into the diff only when `known` does not have it yet (a
/// deployment, or an EIP-7702 delegation designator).
pub fn state_diff(state: EvmState, known: &HotState) -> StateDiff {
    let mut diff = StateDiff::default();
    for (address, account) in state {
        if !account.is_touched() {
            continue;
        }
        if account.is_selfdestructed() || account.is_empty() {
            diff.accounts.push((address, None));
            continue;
        }
        if let Some(code) = &account.info.code
            && account.info.code_hash != KECCAK_EMPTY
            && known.code(&account.info.code_hash).is_none()
            && !diff
                .codes
                .iter()
                .any(|(hash, _)| *hash == account.info.code_hash)
        {
            diff.codes.push((account.info.code_hash, code.clone()));
        }
        for (slot, value) in &account.storage {
            if value.is_changed() {
                diff.storage.push((address, *slot, value.present_value()));
            }
        }
        let info = &account.info;
        diff.accounts.push((
            address,
            Some(AccountState {
                nonce: info.nonce,
                balance: info.balance,
                code_hash: info.code_hash,
            }),
        ));
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_state_override_replaces_storage_without_touching_the_snapshot() {
        let a = Address::repeat_byte(0xaa);
        let b = Address::repeat_byte(0xbb);
        let mut state = HotState::new();
        state.set_account(a, AccountState::funded(U256::from(1)));
        state.set_account(b, AccountState::funded(U256::from(1)));
        for slot in 0..1000u64 {
            state.set_storage(a, U256::from(slot), U256::from(slot + 1));
            state.set_storage(b, U256::from(slot), U256::from(slot + 1));
        }
        let snapshot = state.clone();
        let key = |n: u64| B256::from(U256::from(n));
        let overrides = HashMap::from([
            (
                a,
                AccountOverride {
                    state: Some(HashMap::from([(key(7), key(70))])),
                    state_diff: Some(HashMap::from([(key(8), key(80))])),
                    ..Default::default()
                },
            ),
            (
                b,
                AccountOverride {
                    state_diff: Some(HashMap::from([(key(9), key(90))])),
                    ..Default::default()
                },
            ),
        ]);
        let mut db = StateDb::new(state, BlockHashes::default());
        db.apply_overrides(&overrides);
        let mut read = |address, slot: u64| db.storage(address, U256::from(slot)).expect("read");
        assert_eq!(read(a, 7), U256::from(70));
        assert_eq!(read(a, 8), U256::from(80));
        assert_eq!(read(a, 1), U256::ZERO);
        assert_eq!(read(a, 5000), U256::ZERO);
        assert_eq!(read(b, 9), U256::from(90));
        assert_eq!(read(b, 1), U256::from(2));
        // The replaced account's old slots were not rewritten one by one.
        for slot in 0..1000u64 {
            assert_eq!(
                db.state.storage(&a, &U256::from(slot)),
                snapshot.storage(&a, &U256::from(slot))
            );
        }
    }
}
