//! The state trie's references in a checkpoint: what lets boot build the
//! trie of a 10M-entry image without hashing it again.
//!
//! Layout (little-endian), opaque to the checkpoint file, which keeps it as
//! a section:
//!
//! | field | encoding |
//! |---|---|
//! | version | u8, 1 |
//! | account trie | u64 byte length, then its [`HashExport`] records |
//! | storage tries | u64 count; per trie with a branch (address order): address 20 bytes, u64 byte length, records |
//!
//! Storage tries of one slot have no records (a leaf is hashed from the
//! tables), and are left out.

use std::collections::HashMap;

use alloy_primitives::Address;
use fulmen_storage::codec::Reader;

use crate::trie::{HashExport, HashesError, Trie};

const VERSION: u8 = 1;

/// Why a checkpoint's trie references were not used (boot then hashes
/// the trie, as without them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageHashesError {
    /// The section does not parse.
    #[error("the trie section is malformed: {0}")]
    Malformed(&'static str),
    /// The account trie's records do not fit it.
    #[error("account trie: {0}")]
    Accounts(HashesError),
    /// A storage trie's records do not fit it.
    #[error("storage trie of {0}: {1}")]
    Storage(Address, HashesError),
    /// Records of a contract that has no storage trie.
    #[error("records of {0}, which has no storage")]
    NoStorage(Address),
    /// Storage tries with branches that the section does not list.
    #[error("the section lists {listed} storage tries with branches; the state has {tries}")]
    StorageCount {
        /// In the section.
        listed: usize,
        /// In the state.
        tries: usize,
    },
}

/// A parsed section: each trie's records.
pub(super) struct ImageHashes<'a> {
    pub(super) accounts: &'a [u8],
    pub(super) storage: HashMap<Address, &'a [u8]>,
}

impl<'a> ImageHashes<'a> {
    pub(super) fn parse(bytes: &'a [u8]) -> Result<Self, ImageHashesError> {
        let malformed = |_| ImageHashesError::Malformed("truncated");
        let mut r = Reader::new(bytes);
        if r.take(1).map_err(malformed)? != [VERSION] {
            return Err(ImageHashesError::Malformed("version"));
        }
        let len = length(&mut r)?;
        let accounts = r.take(len).map_err(malformed)?;
        let count = length(&mut r)?;
        // Each listed trie takes at least its address and length.
        if count > r.remaining() / 28 {
            return Err(ImageHashesError::Malformed("storage trie count"));
        }
        let mut storage = HashMap::with_capacity(count);
        for _ in 0..count {
            let address = r.address().map_err(malformed)?;
            let len = length(&mut r)?;
            if storage
                .insert(address, r.take(len).map_err(malformed)?)
                .is_some()
            {
                return Err(ImageHashesError::Malformed("a storage trie listed twice"));
            }
        }
        if r.remaining() != 0 {
            return Err(ImageHashesError::Malformed("bytes after the last trie"));
        }
        Ok(Self { accounts, storage })
    }
}

/// A u64 length that fits this machine.
fn length(r: &mut Reader<'_>) -> Result<usize, ImageHashesError> {
    let len = r
        .u64()
        .map_err(|_| ImageHashesError::Malformed("truncated"))?;
    usize::try_from(len).map_err(|_| ImageHashesError::Malformed("length"))
}

/// The state trie's references, written in steps (the state-root worker
/// yields between them): the account trie's, then each storage trie's
/// with branches, in address order.
#[derive(Debug)]
pub struct StateHashExport<'a> {
    out: Vec<u8>,
    /// The trie being written and where its length goes.
    current: Option<(usize, HashExport<'a>)>,
    storage: std::vec::IntoIter<(&'a Address, &'a Trie)>,
    /// The storage count is written after the account trie.
    storage_count: Option<usize>,
}

impl<'a> StateHashExport<'a> {
    /// The export of a state trie's account trie and storage tries.
    pub(super) fn new(accounts: &'a Trie, storage: &'a HashMap<Address, Trie>) -> Self {
        let mut storage: Vec<(&Address, &Trie)> = storage
            .iter()
            .filter(|(_, trie)| trie.has_inner_nodes())
            .collect();
        storage.sort_unstable_by_key(|(address, _)| **address);
        // Sized up front (random keys: about 0.36 branches of 38 bytes per
        // entry), so that the steps do not copy a growing buffer.
        let entries = accounts.len() + storage.iter().map(|(_, trie)| trie.len()).sum::<usize>();
        let mut out = Vec::with_capacity(16 + entries * 14 + storage.len() * 28);
        out.push(VERSION);
        out.extend_from_slice(&[0; 8]);
        Self {
            current: Some((out.len(), HashExport::new(accounts))),
            out,
            storage_count: Some(storage.len()),
            storage: storage.into_iter(),
        }
    }

    /// Writes the records of up to about `budget` nodes; true once done
    /// (then [`Self::into_bytes`]).
    pub fn step(&mut self, budget: usize) -> Result<bool, HashesError> {
        let mut budget = budget.max(1);
        while budget > 0 {
            if let Some((start, export)) = &mut self.current {
                if !export.step(&mut budget, &mut self.out)? {
                    return Ok(false);
                }
                let len = (self.out.len() - *start) as u64;
                self.out[*start - 8..*start].copy_from_slice(&len.to_le_bytes());
                self.current = None;
                if let Some(count) = self.storage_count.take() {
                    self.out.extend_from_slice(&(count as u64).to_le_bytes());
                }
                continue;
            }
            let Some((address, trie)) = self.storage.next() else {
                return Ok(true);
            };
            self.out.extend_from_slice(address.as_slice());
            self.out.extend_from_slice(&[0; 8]);
            self.current = Some((self.out.len(), HashExport::new(trie)));
        }
        Ok(self.current.is_none() && self.storage.len() == 0)
    }

    /// The section's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        assert!(
            self.current.is_none() && self.storage.len() == 0,
            "the export is finished"
        );
        self.out
    }
}

#[cfg(test)]
mod tests {
    use alloy_primitives::{B256, U256};
    use fulmen_storage::{AccountState, HotState};

    use super::*;
    use crate::merkle::StateTrie;

    /// A state of `accounts` accounts, every fifth a contract with a few
    /// slots (some of one slot: a storage trie without branches).
    fn state(accounts: u64) -> HotState {
        let mut state = HotState::new();
        for i in 0..accounts {
            let address = Address::with_last_byte(1).create(i);
            state.set_account(address, AccountState::funded(U256::from(i + 1)));
            if i % 5 == 0 {
                for slot in 0..(i % 7) + 1 {
                    state.set_storage(address, U256::from(slot), U256::from(i * 100 + slot + 1));
                }
            }
        }
        state
    }

    fn export(trie: &mut StateTrie, budget: usize) -> Vec<u8> {
        trie.root();
        let mut export = trie.export_hashes();
        while !export.step(budget).unwrap() {}
        export.into_bytes()
    }

    #[test]
    fn a_trie_built_with_its_exported_hashes_has_the_same_root_and_proofs_and_updates_alike() {
        let state = state(3_000);
        let mut reference = StateTrie::from_state(&state);
        let root = reference.root();
        // Written in small steps or in one go: the same bytes.
        let bytes = export(&mut reference, 7);
        assert_eq!(bytes, export(&mut reference, usize::MAX));
        let (mut imported, result) = StateTrie::from_image_on(&state, &bytes, 2);
        result.unwrap();
        assert_eq!(imported.root(), root);
        reference.verify_image(&bytes).unwrap();
        // Proofs need the leaves that were never hashed.
        let address = Address::with_last_byte(1).create(5);
        let slots = [B256::from(U256::from(0)), B256::from(U256::from(3))];
        assert_eq!(
            format!("{:?}", imported.proof(&address, &slots)),
            format!("{:?}", reference.proof(&address, &slots))
        );
        // The same block on both: the same root.
        let mut diff = fulmen_storage::StateDiff::default();
        for i in (0..3_000).step_by(37) {
            let address = Address::with_last_byte(1).create(i);
            diff.accounts
                .push((address, Some(AccountState::funded(U256::from(i + 9)))));
            diff.storage
                .push((address, U256::from(1), U256::from(i % 3)));
        }
        reference.apply([&diff]);
        imported.apply([&diff]);
        assert_eq!(imported.root(), reference.root());
        assert_ne!(imported.root(), root);
    }

    #[test]
    fn hashes_of_another_state_are_refused_and_the_trie_is_hashed_in_full() {
        let (image, other) = (state(500), state(501));
        let mut reference = StateTrie::from_state(&image);
        let bytes = export(&mut StateTrie::from_state(&other), 64);
        let (mut imported, result) = StateTrie::from_image_on(&image, &bytes, 1);
        assert!(result.is_err(), "{result:?}");
        assert_eq!(imported.root(), reference.root());
        assert!(reference.verify_image(&bytes).is_err());
        // A reference flipped in place keeps the shape: only the check sees it.
        let mut flipped = export(&mut reference, 64);
        let at = flipped.len() / 2;
        flipped[at] ^= 1;
        assert!(reference.verify_image(&flipped).is_err());
        // Any byte changed: never a panic, and the root is the state's
        // unless only a stored reference changed (which `db check` finds).
        let small = state(40);
        let mut reference = StateTrie::from_state(&small);
        let root = reference.root();
        let bytes = export(&mut reference, 64);
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x41;
            let (mut trie, result) = StateTrie::from_image_on(&small, &bad, 1);
            if result.is_err() {
                assert_eq!(trie.root(), root, "byte {at}");
            }
            assert!(reference.verify_image(&bad).is_err(), "byte {at}");
        }
        // Cut anywhere: refused, never a panic.
        let mut reference = StateTrie::from_state(&image);
        let bytes = export(&mut reference, 64);
        for cut in [0, 1, 9, bytes.len() / 3, bytes.len() - 1] {
            let (mut trie, result) = StateTrie::from_image_on(&image, &bytes[..cut], 1);
            assert!(result.is_err());
            assert_eq!(trie.root(), reference.root());
        }
    }
}
