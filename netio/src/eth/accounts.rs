//! The unlocked accounts of a `--dev` node (what `eth::dev` signs with): a
//! leaf the RPC context holds.

use std::collections::HashMap;
use std::sync::Mutex;

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;

use crate::rpc::RpcError;

/// The unlocked accounts of a `--dev` node.
pub struct DevAccounts {
    signers: Vec<PrivateKeySigner>,
    /// The nonce after each account's last dev send, until the published
    /// state catches up (a client sends again before the next mini-block).
    next_nonce: Mutex<HashMap<Address, u64>>,
}

impl std::fmt::Debug for DevAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevAccounts")
            .field("accounts", &self.addresses())
            .finish()
    }
}

impl DevAccounts {
    /// Unlocks `signers` (the test mnemonic's accounts).
    pub fn new(signers: Vec<PrivateKeySigner>) -> Self {
        Self {
            signers,
            next_nonce: Mutex::new(HashMap::new()),
        }
    }

    /// Their addresses, in order.
    pub fn addresses(&self) -> Vec<Address> {
        self.signers.iter().map(PrivateKeySigner::address).collect()
    }

    pub(crate) fn signer(&self, address: Address) -> Result<&PrivateKeySigner, RpcError> {
        self.signers
            .iter()
            .find(|s| s.address() == address)
            .ok_or_else(|| RpcError::server(format!("unknown account {address}")))
    }

    /// Takes the nonce for `address`'s next send: the state's, or past this
    /// node's last dev send when the state does not show it yet (two sends
    /// at once get two nonces).
    pub(crate) fn reserve(&self, address: Address, state_nonce: u64) -> u64 {
        let mut sent = self.next_nonce.lock().unwrap_or_else(|e| e.into_inner());
        let next = sent.entry(address).or_insert(0);
        let nonce = (*next).max(state_nonce);
        *next = nonce.saturating_add(1);
        nonce
    }

    /// Gives back a reserved nonce whose send failed, if it is the last
    /// one reserved (a concurrent send may hold the next).
    pub(crate) fn release(&self, address: Address, nonce: u64) {
        let mut sent = self.next_nonce.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(next) = sent.get_mut(&address)
            && *next == nonce + 1
        {
            *next = nonce;
        }
    }
}
