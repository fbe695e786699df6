//! The contracts OP Stack chains preinstall at their canonical addresses, so
//! that tools which assume them work unchanged: forge's salted deploys (the
//! CREATE2 deployer), viem's `multicall` (Multicall3), Safe deployments (the
//! Safe singleton factory and Safe v1.3.0), Uniswap's Permit2, ERC-4337
//! bundlers (EntryPoint v0.6.0 and v0.7.0 with their sender creators) and
//! CreateX.
//!
//! The runtime code in `preinstalls/*.hex` is each contract's code as
//! deployed at that address on Ethereum mainnet, as the OP Stack's
//! `Preinstalls` library carries it. Permit2's code holds two immutables
//! that depend on the chain: its cached chain id (the 32-byte word at byte
//! 6945) and EIP-712 domain separator (at byte 6983); the template is
//! mainnet's (chain id 1), and [`preinstalls`] writes the chain's own.
//!
//! Each account gets nonce 1 (a contract's nonce after its deployment),
//! but the keyless deterministic-deployment proxy, as on OP Stack chains.
//! The dev genesis holds them all; `fulmen preinstalls --chain-id N`
//! prints them as a geth genesis `alloc` for a production genesis.
//!
//! The EIP-4788 beacon-roots and EIP-2935 block-hash-history contracts
//! (their code as `alloy_eips` carries it, nonce 1) are here too: the
//! sequencer makes their system calls at the start of each block
//! (`fulmen_exec::evm::system_calls`), when their address holds code.

use alloy_genesis::GenesisAccount;
use alloy_primitives::{Address, B256, Bytes, U256, address, keccak256};

/// One preinstalled contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preinstall {
    /// Its usual name.
    pub name: &'static str,
    /// Its canonical address.
    pub address: Address,
    /// Its runtime code.
    pub code: Bytes,
    /// Its account's nonce.
    pub nonce: u64,
}

/// Permit2's canonical address.
pub const PERMIT2: Address = address!("0x000000000022D473030F116dDEE9F6B43aC78BA3");
/// Where Permit2's code keeps its cached chain id.
const PERMIT2_CHAIN_ID_AT: usize = 6945;
/// Where Permit2's code keeps its cached domain separator.
const PERMIT2_DOMAIN_SEPARATOR_AT: usize = 6983;

/// The CREATE2 deployer forge uses (Arachnid's deterministic-deployment
/// proxy).
pub const CREATE2_DEPLOYER: Address = address!("0x4e59b44847b379578588920cA78FbF26c0B4956C");
/// Multicall3.
pub const MULTICALL3: Address = address!("0xcA11bde05977b3631167028862bE2a173976CA11");

/// (name, address, code as hex, nonce) of each fixed preinstall.
const FIXED: [(&str, Address, &str, u64); 13] = [
    (
        "MultiCall3",
        MULTICALL3,
        include_str!("preinstalls/multicall3.hex"),
        1,
    ),
    (
        "Create2Deployer",
        address!("0x13b0D85CcB8bf860b6b79AF3029fCA081AE9beF2"),
        include_str!("preinstalls/create2deployer.hex"),
        1,
    ),
    (
        "Safe_v130",
        address!("0x69f4D1788e39c87893C980c06EdF4b7f686e2938"),
        include_str!("preinstalls/safe-v1.3.0.hex"),
        1,
    ),
    (
        "SafeL2_v130",
        address!("0xfb1bffC9d739B8D520DaF37dF666da4C687191EA"),
        include_str!("preinstalls/safe-l2-v1.3.0.hex"),
        1,
    ),
    (
        "MultiSendCallOnly_v130",
        address!("0xA1dabEF33b3B82c7814B6D82A79e50F4AC44102B"),
        include_str!("preinstalls/multisend-call-only-v1.3.0.hex"),
        1,
    ),
    (
        "SafeSingletonFactory",
        address!("0x914d7Fec6aaC8cd542e72Bca78B30650d45643d7"),
        include_str!("preinstalls/safe-singleton-factory.hex"),
        1,
    ),
    (
        "DeterministicDeploymentProxy",
        CREATE2_DEPLOYER,
        include_str!("preinstalls/deterministic-deployment-proxy.hex"),
        0,
    ),
    (
        "MultiSend_v130",
        address!("0x998739BFdAAdde7C933B942a68053933098f9EDa"),
        include_str!("preinstalls/multisend-v1.3.0.hex"),
        1,
    ),
    (
        "SenderCreator_v060",
        address!("0x7fc98430eAEdbb6070B35B39D798725049088348"),
        include_str!("preinstalls/sender-creator-v0.6.0.hex"),
        1,
    ),
    (
        "EntryPoint_v060",
        address!("0x5FF137D4b0FDCD49DcA30c7CF57E578a026d2789"),
        include_str!("preinstalls/entrypoint-v0.6.0.hex"),
        1,
    ),
    (
        "SenderCreator_v070",
        address!("0xEFC2c1444eBCC4Db75e7613d20C6a62fF67A167C"),
        include_str!("preinstalls/sender-creator-v0.7.0.hex"),
        1,
    ),
    (
        "EntryPoint_v070",
        address!("0x0000000071727De22E5E9d8BAf0edAc6f37da032"),
        include_str!("preinstalls/entrypoint-v0.7.0.hex"),
        1,
    ),
    (
        "CreateX",
        address!("0xba5Ed099633D3B313e4D5F7bdc1305d3c28ba5Ed"),
        include_str!("preinstalls/createx.hex"),
        1,
    ),
];

fn decode(hex: &str) -> Bytes {
    alloy_primitives::hex::decode(hex.trim())
        .expect("the embedded preinstall code is hex")
        .into()
}

/// Permit2's runtime code for chain `chain_id`: the template with the
/// chain's id and domain separator in place of mainnet's.
pub fn permit2_code(chain_id: u64) -> Bytes {
    let mut code = decode(include_str!("preinstalls/permit2-template.hex")).to_vec();
    let type_hash =
        keccak256("EIP712Domain(string name,uint256 chainId,address verifyingContract)");
    let mut domain = Vec::with_capacity(128);
    domain.extend_from_slice(type_hash.as_slice());
    domain.extend_from_slice(keccak256("Permit2").as_slice());
    domain.extend_from_slice(&U256::from(chain_id).to_be_bytes::<32>());
    domain.extend_from_slice(B256::left_padding_from(PERMIT2.as_slice()).as_slice());
    let separator = keccak256(&domain);
    code[PERMIT2_CHAIN_ID_AT..PERMIT2_CHAIN_ID_AT + 32]
        .copy_from_slice(&U256::from(chain_id).to_be_bytes::<32>());
    code[PERMIT2_DOMAIN_SEPARATOR_AT..PERMIT2_DOMAIN_SEPARATOR_AT + 32]
        .copy_from_slice(separator.as_slice());
    code.into()
}

/// Every preinstall of a chain with id `chain_id`.
pub fn preinstalls(chain_id: u64) -> Vec<Preinstall> {
    let mut all: Vec<Preinstall> = FIXED
        .iter()
        .map(|(name, address, hex, nonce)| Preinstall {
            name,
            address: *address,
            code: decode(hex),
            nonce: *nonce,
        })
        .collect();
    all.push(Preinstall {
        name: "Permit2",
        address: PERMIT2,
        code: permit2_code(chain_id),
        nonce: 1,
    });
    all.push(Preinstall {
        name: "BeaconBlockRoots",
        address: alloy_eips::eip4788::BEACON_ROOTS_ADDRESS,
        code: alloy_eips::eip4788::BEACON_ROOTS_CODE.clone(),
        nonce: 1,
    });
    all.push(Preinstall {
        name: "HistoryStorage",
        address: alloy_eips::eip2935::HISTORY_STORAGE_ADDRESS,
        code: alloy_eips::eip2935::HISTORY_STORAGE_CODE.clone(),
        nonce: 1,
    });
    all
}

/// The preinstalls as genesis accounts.
pub fn genesis_accounts(chain_id: u64) -> impl Iterator<Item = (Address, GenesisAccount)> {
    preinstalls(chain_id).into_iter().map(|p| {
        let account = GenesisAccount::default()
            .with_code(Some(p.code))
            .with_nonce(Some(p.nonce));
        (p.address, account)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preinstall_has_code_at_a_distinct_address() {
        let all = preinstalls(4242);
        assert_eq!(all.len(), 16);
        let mut addresses: Vec<_> = all.iter().map(|p| p.address).collect();
        addresses.sort();
        addresses.dedup();
        assert_eq!(addresses.len(), all.len());
        for p in &all {
            assert!(!p.code.is_empty(), "{}", p.name);
            assert!(p.code.len() <= 24_576, "{} is over EIP-170's limit", p.name);
        }
    }

    /// The template is mainnet's code, and other chains get their own
    /// domain separator (the values the OP Stack's tests check).
    #[test]
    fn permit2_carries_the_chain_s_id_and_domain_separator() {
        let template = decode(include_str!("preinstalls/permit2-template.hex"));
        assert_eq!(permit2_code(1), template, "the template is chain 1's");
        let code = permit2_code(1234);
        assert_eq!(
            U256::from_be_slice(&code[PERMIT2_CHAIN_ID_AT..PERMIT2_CHAIN_ID_AT + 32]),
            U256::from(1234)
        );
        assert_eq!(
            B256::from_slice(&code[PERMIT2_DOMAIN_SEPARATOR_AT..PERMIT2_DOMAIN_SEPARATOR_AT + 32]),
            alloy_primitives::b256!(
                "0x6cda538cafce36292a6ef27740629597f85f6716f5694d26d5c59fc1d07cfd95"
            )
        );
        assert_eq!(
            B256::from_slice(&permit2_code(1)[PERMIT2_DOMAIN_SEPARATOR_AT..][..32]),
            alloy_primitives::b256!(
                "0x866a5aba21966af95d6c7ab78eb2b2fc913915c28be3b9aa07cc04ff903e3f28"
            )
        );
    }
}
