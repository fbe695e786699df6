//! Chain parameters and genesis.

use std::path::Path;

use alloy_consensus::Header;
use alloy_eips::eip1559::BaseFeeParams;
use alloy_genesis::{Genesis, GenesisAccount};
use alloy_primitives::{Address, B256, U256, address};
use alloy_trie::EMPTY_ROOT_HASH;
use fulmen_storage::{AccountState, HotState};
use revm::{bytecode::Bytecode, primitives::hardfork::SpecId};

use crate::block::{BlockContext, SealRoots, build_header};
use crate::tx::TxRules;

/// Chain id of `--dev` (anvil uses 31337; wallets must not confuse the two).
pub const DEV_CHAIN_ID: u64 = 4242;

/// The ten accounts of the standard test mnemonic
/// ("test test test test test test test test test test test junk"),
/// derived at m/44'/60'/0'/0/i. A test derives them again from the mnemonic.
pub const DEV_ACCOUNTS: [Address; 10] = [
    address!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
    address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
    address!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
    address!("0x90F79bf6EB2c4f870365E785982E1f101E93b906"),
    address!("0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"),
    address!("0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"),
    address!("0x976EA74026E726554dB657fA54763abd0C3a0aa9"),
    address!("0x14dC79964da2C08b23698B3D3cc7Ca32193d9955"),
    address!("0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f"),
    address!("0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"),
];

/// Balance of each dev account: 10,000 ETH, as anvil gives.
pub const DEV_BALANCE_WEI: u128 = 10_000_000_000_000_000_000_000;

/// The oldest execution rules fulmen runs (from genesis): Prague. Osaka
/// follows from the genesis config's `osakaTime` ([`EvmChain::spec_at`]);
/// transactions' stateless rules (intrinsic gas, types) are the same in
/// both.
pub const SPEC: SpecId = SpecId::PRAGUE;

/// What the EVM needs to know of the chain: its id, and which rules hold at
/// a block's timestamp (geth's `osakaTime`; Prague before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvmChain {
    /// Chain id.
    pub chain_id: u64,
    /// First timestamp of Osaka rules (EIP-7951 P256VERIFY, EIP-7939 CLZ,
    /// EIP-7823/7883 ModExp), if scheduled.
    pub osaka_time: Option<u64>,
}

impl EvmChain {
    /// The rules of a block with `timestamp`.
    pub fn spec_at(&self, timestamp: u64) -> SpecId {
        match self.osaka_time {
            Some(osaka) if timestamp >= osaka => SpecId::OSAKA,
            _ => SPEC,
        }
    }
}

/// Default per-transaction gas cap: EIP-7825's 2^24. At this cap the most
/// expensive work one transaction can buy (precompile loops) holds the seq
/// core for a bounded, measured time (BENCHMARKS.md).
pub const TX_GAS_LIMIT_MAX_DEFAULT: u64 = 1 << 24;

/// Everything that fixes what a block is on this chain.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    /// Chain id (EIP-155).
    pub chain_id: u64,
    /// Gas limit of every block.
    pub block_gas_limit: u64,
    /// Most gas one transaction may ask for (EIP-7825's cap, 2^24, by
    /// default): it bounds how long one transaction can hold the sequencer.
    pub tx_gas_limit_max: u64,
    /// The base fee never falls below this.
    pub base_fee_floor_wei: u64,
    /// EIP-1559 adjustment parameters.
    pub base_fee_params: BaseFeeParams,
    /// Receives priority fees.
    pub coinbase: Address,
    /// The genesis allocation and header fields.
    pub genesis: Genesis,
}

/// Errors loading a genesis file.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// The file could not be read.
    #[error("cannot read genesis file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a geth-style genesis.
    #[error("genesis file {path} is not a valid geth genesis.json: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The genesis is inconsistent.
    #[error("genesis: {0}")]
    Invalid(String),
}

/// The embedded dev genesis: the ten test-mnemonic accounts, 10,000 ETH each,
/// and the OP Stack's preinstalls (`crate::preinstalls`).
pub fn dev_genesis(gas_limit: u64, base_fee_wei: u64) -> Genesis {
    let mut genesis = Genesis {
        gas_limit,
        base_fee_per_gas: Some(u128::from(base_fee_wei)),
        timestamp: 0,
        ..Default::default()
    };
    genesis.config.chain_id = DEV_CHAIN_ID;
    // Osaka from genesis, as Ethereum since December 2025 (Prague before).
    genesis.config.shanghai_time = Some(0);
    genesis.config.cancun_time = Some(0);
    genesis.config.prague_time = Some(0);
    genesis.config.osaka_time = Some(0);
    for account in DEV_ACCOUNTS {
        genesis.alloc.insert(
            account,
            GenesisAccount::default().with_balance(U256::from(DEV_BALANCE_WEI)),
        );
    }
    genesis
        .alloc
        .extend(crate::preinstalls::genesis_accounts(DEV_CHAIN_ID));
    genesis
}

/// Reads a geth-style `genesis.json`.
pub fn load_genesis(path: &Path) -> Result<Genesis, GenesisError> {
    let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let genesis: Genesis = serde_json::from_str(&text).map_err(|source| GenesisError::Parse {
        path: path.display().to_string(),
        source,
    })?;
    if genesis.config.chain_id == 0 {
        return Err(GenesisError::Invalid(
            "config.chainId must be set and non-zero".into(),
        ));
    }
    if genesis.gas_limit == 0 {
        return Err(GenesisError::Invalid("gasLimit must be non-zero".into()));
    }
    Ok(genesis)
}

impl ChainSpec {
    /// What the EVM needs of this chain: its id and fork schedule.
    pub fn evm_chain(&self) -> EvmChain {
        EvmChain {
            chain_id: self.chain_id,
            osaka_time: self.genesis.config.osaka_time,
        }
    }

    /// The stateless transaction rules of this chain.
    pub fn tx_rules(&self) -> TxRules {
        TxRules {
            chain_id: self.chain_id,
            block_gas_limit: self.block_gas_limit,
            tx_gas_limit_max: self.tx_gas_limit_max,
            spec: SPEC,
            allow_unprotected: false,
        }
    }

    /// Base fee of the block after `parent`, never below the floor.
    pub fn next_base_fee(&self, parent: &Header) -> u64 {
        let next = parent
            .next_block_base_fee(self.base_fee_params)
            .unwrap_or(self.base_fee_floor_wei);
        next.max(self.base_fee_floor_wei)
    }

    /// The genesis state.
    pub fn genesis_state(&self) -> HotState {
        let mut state = HotState::new();
        for (address, account) in &self.genesis.alloc {
            let code_hash = match &account.code {
                Some(code) if !code.is_empty() => {
                    state.insert_code(Bytecode::new_raw(code.clone()))
                }
                _ => revm::primitives::KECCAK_EMPTY,
            };
            let nonce = account.nonce.unwrap_or(0);
            state.set_account(
                *address,
                AccountState {
                    nonce,
                    balance: account.balance,
                    code_hash,
                },
            );
            for (slot, value) in account.storage.iter().flatten() {
                state.set_storage(
                    *address,
                    U256::from_be_bytes(slot.0),
                    U256::from_be_bytes(value.0),
                );
            }
        }
        state
    }

    /// The genesis header, given the state root of [`Self::genesis_state`].
    pub fn genesis_header(&self, state_root: B256) -> Header {
        let genesis = &self.genesis;
        let base_fee = genesis
            .base_fee_per_gas
            .map_or(self.base_fee_floor_wei, |fee| {
                u64::try_from(fee)
                    .unwrap_or(u64::MAX)
                    .max(self.base_fee_floor_wei)
            });
        let ctx = BlockContext {
            number: 0,
            timestamp: genesis.timestamp,
            base_fee,
            gas_limit: self.block_gas_limit,
            coinbase: genesis.coinbase,
            prevrandao: genesis.mix_hash,
        };
        let roots = SealRoots {
            number: 0,
            state_root,
            transactions_root: EMPTY_ROOT_HASH,
            receipts_root: EMPTY_ROOT_HASH,
            logs_bloom: Default::default(),
            txs_rlp_len: 0,
        };
        let mut header = build_header(&ctx, B256::ZERO, 0, &roots);
        header.extra_data = genesis.extra_data.clone();
        header
    }
}
