//! What a mini-block is beyond its transactions: its net changes (what
//! `stateChanges` reports, kept in its log record so that a mini-block read
//! back renders as it did live) and its hash, chained to its parent's.

use std::collections::HashSet;

use alloy_primitives::{Address, B256, U256, keccak256};
use fulmen_storage::{HotState, StateDiff};

/// What a mini-block's diffs wrote without changing it, against the state
/// before the mini-block: with the diffs alone, this tells what really
/// changed, so a mini-block read back from the log renders as it did live.
/// Every list is in order of first mention in the diffs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetChanges {
    /// Addresses written whose account (nonce, balance, code hash; a
    /// missing account counts as absent) ends as it began.
    pub unchanged_accounts: Vec<Address>,
    /// Addresses whose code hash changed (a missing account has the empty
    /// code's hash).
    pub code_changed: Vec<Address>,
    /// Slots written whose value ends as it began.
    pub unchanged_slots: Vec<(Address, U256)>,
}

impl NetChanges {
    /// Compares, for each account and slot `diffs` wrote, `before` (the
    /// state before the mini-block) with `after` (after it).
    pub fn compute(diffs: &[StateDiff], before: &HotState, after: &HotState) -> Self {
        let mut net = Self::default();
        let mut accounts: HashSet<Address> = HashSet::new();
        let mut slots: HashSet<(Address, U256)> = HashSet::new();
        let empty_code = revm::primitives::KECCAK_EMPTY;
        let code = |state: &HotState, address: &Address| {
            state.account(address).map_or(empty_code, |a| a.code_hash)
        };
        for diff in diffs {
            let written = diff
                .accounts
                .iter()
                .map(|(address, _)| address)
                .chain(diff.storage.iter().map(|(address, _, _)| address));
            for address in written {
                if !accounts.insert(*address) {
                    continue;
                }
                if before.account(address) == after.account(address) {
                    net.unchanged_accounts.push(*address);
                }
                if code(before, address) != code(after, address) {
                    net.code_changed.push(*address);
                }
            }
            for (address, slot, _) in &diff.storage {
                if slots.insert((*address, *slot))
                    && before.storage(address, slot) == after.storage(address, slot)
                {
                    net.unchanged_slots.push((*address, *slot));
                }
            }
        }
        net
    }
}

/// A mini-block's hash: keccak256 of its parent's hash, then its number,
/// its block's number and its close time in µs (8 bytes big-endian each),
/// then its transactions' hashes in order. Each mini-block carries its
/// parent's, so a client that checks the chain of hashes knows it missed
/// none.
pub fn mini_block_hash<'a>(
    parent: &B256,
    number: u64,
    block: u64,
    timestamp_us: u64,
    tx_hashes: impl IntoIterator<Item = &'a B256>,
) -> B256 {
    let mut bytes = Vec::with_capacity(32 + 24 + 32 * 8);
    bytes.extend_from_slice(parent.as_slice());
    for field in [number, block, timestamp_us] {
        bytes.extend_from_slice(&field.to_be_bytes());
    }
    for hash in tx_hashes {
        bytes.extend_from_slice(hash.as_slice());
    }
    keccak256(&bytes)
}
