//! The precompiles every EVM of the node runs: the fork's standard set
//! (revm's, P256VERIFY at 0x100 from Osaka) plus this chain's own, listed
//! in [`CUSTOM`].
//!
//! # Adding a custom precompile
//!
//! One function and one registration:
//!
//! 1. Write the precompile as a [`PrecompileFn`], in this file or a module
//!    of its own: `fn name(input: &[u8], gas_limit: u64, reservoir: u64) ->
//!    PrecompileResult`. Charge gas before the work, and answer
//!    `PrecompileOutput::halt(PrecompileHalt::OutOfGas, reservoir)` when
//!    `gas_limit` does not cover it, else `PrecompileOutput::new(gas_used,
//!    output, reservoir)`. Bad input is a halt too, never a panic.
//! 2. Add a [`Registration`] for it to [`CUSTOM`]: a name, an address
//!    outside Ethereum's (0x01..=0x11, 0x100) and the first fork it runs
//!    in.
//!
//! Every EVM then has it: the sequencer's, replay's and the verifier's,
//! and those of `eth_call`, `eth_estimateGas`, `eth_createAccessList`,
//! `eth_simulateV1`, tracing and the system calls; it is warm from the
//! start of each transaction, as precompiles are (EIP-2929). The set is
//! part of the chain's rules: every node of a chain (sequencer, verifiers,
//! replicas) must run the same one, and adding one to a live chain needs a
//! fork time, as any rule change does.
//!
//! The test `a_registered_precompile_runs_beside_the_standard_set` below
//! registers one and calls it.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use alloy_primitives::Address;
use revm::handler::EthPrecompiles;
use revm::precompile::{Precompile, PrecompileFn, PrecompileId, PrecompileSpecId, Precompiles};
use revm::primitives::hardfork::SpecId;

/// One custom precompile.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    /// Its name (in traces and errors).
    pub name: &'static str,
    /// Where it is called.
    pub address: Address,
    /// The first fork whose rules include it.
    pub from: SpecId,
    /// What it computes.
    pub run: PrecompileFn,
}

/// This chain's custom precompiles (none on the dev chain).
pub const CUSTOM: &[Registration] = &[];

/// The precompiles of `spec`, this chain's included, as the EVM's
/// provider (set it whenever the EVM's spec changes: revm's own
/// `set_spec` would load the standard set alone).
pub fn provider(spec: SpecId) -> EthPrecompiles {
    provider_with(spec, CUSTOM)
}

/// The precompiles of `spec` with `custom`; each distinct set is built
/// once and kept for the life of the process.
pub fn provider_with(spec: SpecId, custom: &'static [Registration]) -> EthPrecompiles {
    let standard = Precompiles::new(PrecompileSpecId::from_spec_id(spec));
    let active: Vec<&Registration> = custom
        .iter()
        .filter(|r| spec.is_enabled_in(r.from))
        .collect();
    if active.is_empty() {
        return EthPrecompiles {
            precompiles: standard,
            spec,
        };
    }
    type Sets = Mutex<HashMap<(SpecId, usize), &'static Precompiles>>;
    static SETS: OnceLock<Sets> = OnceLock::new();
    let key = (spec, custom.as_ptr() as usize);
    let mut sets = SETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let precompiles = *sets.entry(key).or_insert_with(|| {
        let mut set = standard.clone();
        set.extend(
            active
                .iter()
                .map(|r| Precompile::new(PrecompileId::Custom(r.name.into()), r.address, r.run)),
        );
        Box::leak(Box::new(set))
    });
    EthPrecompiles { precompiles, spec }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Bytes, TxKind, address};
    use revm::context::TxEnv;
    use revm::handler::ExecuteEvm;
    use revm::precompile::{PrecompileHalt, PrecompileOutput, PrecompileResult};

    /// Doubles each input byte; 10 gas per byte.
    fn double(input: &[u8], gas_limit: u64, reservoir: u64) -> PrecompileResult {
        let gas = 10 * input.len() as u64;
        if gas > gas_limit {
            return Ok(PrecompileOutput::halt(PrecompileHalt::OutOfGas, reservoir));
        }
        let out: Vec<u8> = input.iter().map(|b| b.wrapping_mul(2)).collect();
        Ok(PrecompileOutput::new(gas, out.into(), reservoir))
    }

    const AT: Address = address!("0x0000000000000000000000000000000000f00d01");
    static TEST: [Registration; 1] = [Registration {
        name: "double",
        address: AT,
        from: SpecId::PRAGUE,
        run: double,
    }];

    #[test]
    fn a_registered_precompile_runs_beside_the_standard_set() {
        let chain = fulmen_chain::spec::EvmChain {
            chain_id: 1,
            osaka_time: Some(0),
        };
        let ctx = fulmen_chain::block::BlockContext {
            number: 1,
            timestamp: 1,
            base_fee: 0,
            gas_limit: 30_000_000,
            coinbase: Address::ZERO,
            prevrandao: Default::default(),
        };
        let mut evm = crate::evm::build_evm(crate::evm::StateDb::default(), chain, &ctx);
        evm.precompiles = provider_with(SpecId::OSAKA, &TEST);
        let call = |evm: &mut crate::evm::Evm, nonce: u64| {
            let tx = TxEnv {
                caller: Address::repeat_byte(1),
                kind: TxKind::Call(AT),
                data: Bytes::from_static(&[1, 2, 3]),
                gas_limit: 100_000,
                nonce,
                chain_id: Some(1),
                ..Default::default()
            };
            evm.transact(tx).expect("runs")
        };
        let out = call(&mut evm, 0);
        assert!(out.result.is_success(), "{:?}", out.result);
        assert_eq!(out.result.output().unwrap().as_ref(), &[2, 4, 6]);
        // Standard ones are still there, and a chain without it has none.
        assert!(
            provider_with(SpecId::OSAKA, &TEST)
                .contains(&address!("0x0000000000000000000000000000000000000100"))
        );
        assert!(!provider(SpecId::OSAKA).contains(&AT));
        assert!(!provider_with(SpecId::CANCUN, &TEST).contains(&AT));
    }
}
