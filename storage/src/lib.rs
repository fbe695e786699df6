//! fulmen storage: the hot state tables.
//!
//! All accounts, storage slots and code live in RAM. The sequencer core is the
//! only writer. Readers on other cores take an immutable snapshot: the tables
//! are persistent (structurally shared) hash maps with compact nodes
//! ([`pmap`]), so cloning a table is O(1) and the writer's later updates copy
//! only the paths they touch. The
//! sequencer publishes one snapshot per mini-block; a reader holding an older
//! snapshot never blocks the writer and never sees a half-applied mini-block.
//!
//! Durability: [`record`] is the log's record framing and [`scan`] reads a
//! segment back (torn tail versus corruption); [`io`] is the one IO
//! interface, with [`disk`] (io_uring through glommio, O_DIRECT where the
//! filesystem allows) and a seeded, fault-injecting simulated disk; [`log`]
//! is the segmented log with torn-tail repair; [`writer`] runs it on the
//! storage core with group commit; [`checkpoint`] writes and reads full
//! state images, through the same IO interface (so the simulated disk
//! crashes them as it does the log); [`codec`] is the binary codec of log
//! payloads and images. Which checkpoint boot starts from is decided in
//! `fulmen_exec::boot`.

pub mod checkpoint;
pub mod codec;
pub mod disk;
pub mod history;
pub mod io;
pub mod log;
pub mod pmap;
pub mod progress;
pub mod reader;
pub mod record;
pub mod scan;
pub mod writer;

use alloy_primitives::{Address, B256, U256};
use revm::bytecode::Bytecode;
use revm::primitives::KECCAK_EMPTY;

/// Hasher for the state tables. Keys are addresses and hashes chosen by
/// users, so the hasher is seeded per process to resist collision flooding.
pub type StateHasher = foldhash::fast::RandomState;

type Table<K, V> = pmap::PMap<K, V, StateHasher>;

/// One account's header: everything but its storage and code bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountState {
    /// Transaction count (or contract creation count).
    pub nonce: u64,
    /// Balance in wei.
    pub balance: U256,
    /// keccak256 of the account's code; `KECCAK_EMPTY` for none.
    pub code_hash: B256,
}

impl AccountState {
    /// An account with a balance and nothing else.
    pub fn funded(balance: U256) -> Self {
        Self {
            nonce: 0,
            balance,
            code_hash: KECCAK_EMPTY,
        }
    }

    /// True when the account carries code.
    pub fn has_code(&self) -> bool {
        self.code_hash != KECCAK_EMPTY
    }
}

/// The changes one unit of work (a transaction, a mini-block, a block) made to
/// the state, last write wins. `None` for an account means it was deleted.
#[derive(Debug, Clone, Default)]
pub struct StateDiff {
    /// Changed accounts, each once, with their new header (or deletion).
    pub accounts: Vec<(Address, Option<AccountState>)>,
    /// Changed storage slots, each once; a zero value deletes the slot.
    pub storage: Vec<(Address, U256, U256)>,
    /// Code first deployed by this unit.
    pub codes: Vec<(B256, Bytecode)>,
}

impl StateDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.storage.is_empty() && self.codes.is_empty()
    }
}

/// The hot state. Cloning is O(1) and yields an independent snapshot.
#[derive(Debug, Clone, Default)]
pub struct HotState {
    accounts: Table<Address, AccountState>,
    storage: Table<(Address, U256), U256>,
    codes: Table<B256, Bytecode>,
}

impl HotState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// A state of these entries, each table built in one pass
    /// ([`pmap::PMap::from_entries`]): how boot loads a checkpoint. A later
    /// entry replaces an earlier one with the same key; zero slots are
    /// left out.
    pub fn from_entries(
        accounts: Vec<(Address, AccountState)>,
        slots: Vec<((Address, U256), U256)>,
        codes: Vec<(B256, Bytecode)>,
    ) -> Self {
        Self::from_entries_on(accounts, slots, codes, 1)
    }

    /// [`Self::from_entries`], each table built on `threads` threads
    /// (checkpoint load at boot, before the node serves).
    pub fn from_entries_on(
        accounts: Vec<(Address, AccountState)>,
        mut slots: Vec<((Address, U256), U256)>,
        codes: Vec<(B256, Bytecode)>,
        threads: usize,
    ) -> Self {
        slots.retain(|(_, value)| !value.is_zero());
        Self {
            accounts: Table::from_entries_on(accounts, StateHasher::default(), threads),
            storage: Table::from_entries_on(slots, StateHasher::default(), threads),
            codes: Table::from_entries(codes, StateHasher::default()),
        }
    }

    /// The account at `address`, if it exists.
    pub fn account(&self, address: &Address) -> Option<&AccountState> {
        self.accounts.get(address)
    }

    /// The value of a storage slot (zero when unset).
    pub fn storage(&self, address: &Address, slot: &U256) -> U256 {
        self.storage
            .get(&(*address, *slot))
            .copied()
            .unwrap_or_default()
    }

    /// Code by its hash.
    pub fn code(&self, code_hash: &B256) -> Option<&Bytecode> {
        self.codes.get(code_hash)
    }

    /// Number of accounts.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// Number of non-zero storage slots.
    pub fn slot_count(&self) -> usize {
        self.storage.len()
    }

    /// Number of distinct code blobs.
    pub fn code_count(&self) -> usize {
        self.codes.len()
    }

    /// Iterates every account (for genesis checks and full rebuilds).
    pub fn accounts(&self) -> impl Iterator<Item = (&Address, &AccountState)> {
        self.accounts.iter()
    }

    /// The accounts of share `share` of `shares`: threads that each take
    /// one share visit every account once between them.
    pub fn accounts_share(
        &self,
        share: usize,
        shares: usize,
    ) -> impl Iterator<Item = (&Address, &AccountState)> {
        self.accounts.iter_share(share, shares)
    }

    /// Iterates every code blob by hash.
    pub fn codes(&self) -> impl Iterator<Item = (&B256, &Bytecode)> {
        self.codes.iter()
    }

    /// Iterates every non-zero storage slot.
    pub fn slots(&self) -> impl Iterator<Item = (&(Address, U256), &U256)> {
        self.storage.iter()
    }

    /// Applies a diff. Since Cancun only accounts without committed storage can
    /// be deleted (EIP-6780 and EIP-161), so a deletion touches no slot.
    pub fn apply(&mut self, diff: &StateDiff) {
        for (hash, code) in &diff.codes {
            self.codes.insert_if_absent(*hash, || code.clone());
        }
        for (address, account) in &diff.accounts {
            match account {
                Some(account) => {
                    self.accounts.insert(*address, *account);
                }
                None => {
                    self.accounts.remove(address);
                }
            }
        }
        for (address, slot, value) in &diff.storage {
            if value.is_zero() {
                self.storage.remove(&(*address, *slot));
            } else {
                self.storage.insert((*address, *slot), *value);
            }
        }
    }

    /// Sets one account directly (genesis only).
    pub fn set_account(&mut self, address: Address, account: AccountState) {
        self.accounts.insert(address, account);
    }

    /// Sets one storage slot directly (genesis only).
    pub fn set_storage(&mut self, address: Address, slot: U256, value: U256) {
        if value.is_zero() {
            self.storage.remove(&(address, slot));
        } else {
            self.storage.insert((address, slot), value);
        }
    }

    /// Adds code (genesis only); returns its hash.
    pub fn insert_code(&mut self, code: Bytecode) -> B256 {
        let hash = code.hash_slow();
        self.codes.insert(hash, code);
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Bytes, address};

    #[test]
    fn snapshots_are_isolated_from_later_writes() {
        let a = address!("0x1000000000000000000000000000000000000001");
        let mut state = HotState::new();
        state.set_account(a, AccountState::funded(U256::from(5)));
        state.set_storage(a, U256::from(1), U256::from(7));
        let snapshot = state.clone();

        let diff = StateDiff {
            accounts: vec![(
                a,
                Some(AccountState {
                    nonce: 1,
                    ..AccountState::funded(U256::from(3))
                }),
            )],
            storage: vec![
                (a, U256::from(1), U256::ZERO),
                (a, U256::from(2), U256::from(9)),
            ],
            codes: vec![],
        };
        state.apply(&diff);

        assert_eq!(snapshot.account(&a).unwrap().balance, U256::from(5));
        assert_eq!(snapshot.storage(&a, &U256::from(1)), U256::from(7));
        assert_eq!(state.account(&a).unwrap().nonce, 1);
        assert_eq!(state.storage(&a, &U256::from(1)), U256::ZERO);
        assert_eq!(state.storage(&a, &U256::from(2)), U256::from(9));
        assert_eq!(state.slot_count(), 1);
    }

    #[test]
    fn deleting_an_account_and_adding_code() {
        let a = address!("0x2000000000000000000000000000000000000002");
        let mut state = HotState::new();
        let code = Bytecode::new_raw(Bytes::from_static(&[0x60, 0x00, 0x60, 0x00, 0xf3]));
        let hash = state.insert_code(code.clone());
        assert_eq!(
            state.code(&hash).unwrap().original_bytes(),
            code.original_bytes()
        );
        state.set_account(
            a,
            AccountState {
                nonce: 1,
                balance: U256::ZERO,
                code_hash: hash,
            },
        );
        assert!(state.account(&a).unwrap().has_code());
        state.apply(&StateDiff {
            accounts: vec![(a, None)],
            ..Default::default()
        });
        assert!(state.account(&a).is_none());
        assert_eq!(state.account_count(), 0);
    }
}
