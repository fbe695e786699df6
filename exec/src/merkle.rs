//! The state trie: the account trie plus one storage trie per contract,
//! updated incrementally from each block's diff.

use std::collections::{HashMap, HashSet};

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_rlp::Decodable as _;
use alloy_trie::{EMPTY_ROOT_HASH, TrieAccount};
use either::Either;
use fulmen_storage::{AccountState, HotState, StateDiff};

use fulmen_chain::msg::AccountProof;

use crate::trie::{Buckets, HashesError, Trie, in_shares, map_in_shares};

mod hashes;
use hashes::ImageHashes;
pub use hashes::{ImageHashesError, StateHashExport};

/// The trie references a checkpoint of `state` keeps (tests).
#[cfg(test)]
pub(crate) fn hashes_of(state: &HotState) -> Vec<u8> {
    let mut trie = StateTrie::from_state(state);
    trie.root();
    let mut export = trie.export_hashes();
    while !export.step(usize::MAX).expect("hashed") {}
    export.into_bytes()
}

/// A contract's slots and values.
type Slots = Vec<(U256, U256)>;

/// The first storage trie whose stored references did not fit.
type FirstFailure = std::sync::Mutex<Option<(Address, HashesError)>>;

/// Account trie and storage tries of the whole state.
#[derive(Debug, Default, Clone)]
pub struct StateTrie {
    accounts: Trie,
    storage: HashMap<Address, Trie>,
    /// Accounts touched by staged diffs whose leaves are not written yet:
    /// `Some(header)` from the diff, or `None` when only storage changed.
    staged: HashMap<Address, Option<Option<AccountState>>>,
    /// The staged accounts being written, drained from `staged` in one go.
    committing: Vec<(Address, Option<Option<AccountState>>)>,
}

impl StateTrie {
    /// Builds the tries of `state` (genesis or a checkpoint), each trie in
    /// bulk from its entries ([`Trie::from_entries`]). Hashing is deferred
    /// to [`Self::root`], but for the storage roots the account leaves embed.
    pub fn from_state(state: &HotState) -> Self {
        Self::from_state_on(state, 1)
    }

    /// [`Self::from_state`] on `threads` threads (boot, before the node
    /// serves: it may use every CPU): the key hashes, the storage tries
    /// and their roots, and the account trie's 16 subtries are each dealt
    /// among them.
    pub fn from_state_on(state: &HotState, threads: usize) -> Self {
        Self::build_on(state, threads, None)
    }

    /// [`Self::from_state_on`] taking the branch and extension references
    /// from `hashes` (a checkpoint's [`StateHashExport`]) instead of
    /// hashing them, so that only the storage tries of one leaf are hashed
    /// here. A trie whose records do not fit its keys is hashed in full;
    /// the error says which, and the root check after catches the rest.
    pub fn from_image_on(
        state: &HotState,
        hashes: &[u8],
        threads: usize,
    ) -> (Self, Result<(), ImageHashesError>) {
        match ImageHashes::parse(hashes) {
            Ok(image) => {
                let failed = std::sync::Mutex::new(None);
                let mut trie = Self::build_on(state, threads, Some((&image, &failed)));
                if let Err(e) = trie.accounts.import_hashes(image.accounts) {
                    return (trie, Err(ImageHashesError::Accounts(e)));
                }
                let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
                let result = match failed {
                    Some((address, e)) => Err(ImageHashesError::Storage(address, e)),
                    None => Ok(()),
                };
                (trie, result)
            }
            Err(e) => (Self::from_state_on(state, threads), Err(e)),
        }
    }

    /// Checks `hashes` (a checkpoint's [`StateHashExport`]) against this
    /// trie's own references, recomputed (`db check`).
    pub fn verify_image(&mut self, hashes: &[u8]) -> Result<(), ImageHashesError> {
        let image = ImageHashes::parse(hashes)?;
        self.accounts
            .verify_hashes(image.accounts)
            .map_err(ImageHashesError::Accounts)?;
        for (address, records) in &image.storage {
            let trie = self
                .storage
                .get_mut(address)
                .ok_or(ImageHashesError::NoStorage(*address))?;
            trie.verify_hashes(records)
                .map_err(|e| ImageHashesError::Storage(*address, e))?;
        }
        let listed = self
            .storage
            .iter()
            .filter(|(_, trie)| trie.has_inner_nodes())
            .count();
        if listed != image.storage.len() {
            return Err(ImageHashesError::StorageCount {
                listed: image.storage.len(),
                tries: listed,
            });
        }
        Ok(())
    }

    /// The export of this trie's references (hashed: [`Self::root`] since
    /// the last change), to be written in steps.
    pub fn export_hashes(&self) -> StateHashExport<'_> {
        StateHashExport::new(&self.accounts, &self.storage)
    }

    fn build_on(
        state: &HotState,
        threads: usize,
        image: Option<(&ImageHashes<'_>, &FirstFailure)>,
    ) -> Self {
        let threads = threads.max(1);
        let mut progress = fulmen_storage::progress::Progress::new(
            "building the state trie",
            "slots",
            state.slot_count() as u64,
        );
        let mut slots: HashMap<Address, Slots> = HashMap::new();
        for (done, ((address, slot), value)) in state.slots().enumerate() {
            if done % 4096 == 0 {
                progress.tick(done as u64);
            }
            slots.entry(*address).or_default().push((*slot, *value));
        }
        let groups: Vec<(Address, Slots)> = slots.into_iter().collect();
        let mut tries: Vec<Trie> = std::iter::repeat_with(Trie::new)
            .take(groups.len())
            .collect();
        let work = groups.iter().map(|(a, s)| (a, s)).zip(&mut tries).collect();
        in_shares(work, threads, &|_| {}, |((address, slots), trie)| {
            let entries = slots
                .iter()
                .map(|(slot, value)| (slot_key(slot), alloy_rlp::encode(value)))
                .collect();
            *trie = Trie::from_entries(entries);
            if let Some((image, failed)) = image
                && let Some(records) = image.storage.get(address)
                && let Err(e) = trie.import_hashes(records)
                && let Ok(mut failed) = failed.lock()
            {
                failed.get_or_insert((*address, e));
            }
            trie.root();
        });
        let mut trie = Self {
            storage: groups
                .into_iter()
                .map(|(address, _)| address)
                .zip(tries)
                .collect(),
            ..Self::default()
        };
        // The account leaves: share `t` takes every `threads`-th account.
        let progress = std::sync::Mutex::new(fulmen_storage::progress::Progress::new(
            "building the state trie",
            "accounts",
            state.account_count() as u64,
        ));
        let storage = &trie.storage;
        let mut shares: Vec<(usize, Buckets)> =
            (0..threads).map(|t| (t, Buckets::default())).collect();
        let work = shares.iter_mut().collect();
        let done = std::sync::atomic::AtomicU64::new(0);
        in_shares(work, threads, &|_| {}, |(share, leaves)| {
            leaves.reserve(state.account_count() / threads);
            for (i, (address, account)) in state.accounts_share(*share, threads).enumerate() {
                if i % 4096 == 4095 {
                    let done = done.fetch_add(4096, std::sync::atomic::Ordering::Relaxed);
                    if let Ok(mut progress) = progress.try_lock() {
                        progress.tick(done + 4096);
                    }
                }
                let storage_root = storage
                    .get(address)
                    .and_then(Trie::cached_root)
                    .unwrap_or(EMPTY_ROOT_HASH);
                leaves.push(keccak256(address), encode_account(account, storage_root));
            }
        });
        let mut leaves = Buckets::default();
        for (_, mut share) in shares {
            leaves.append(&mut share);
        }
        trie.accounts = Trie::from_buckets_on(leaves, threads);
        trie
    }

    /// The root hash on `threads` threads (as [`Trie::root_parallel`],
    /// helpers not pinned), logging progress as the account trie's
    /// subtries are hashed (boot, `db check`).
    pub fn root_on(&mut self, threads: usize) -> B256 {
        assert!(
            self.staged.is_empty() && self.committing.is_empty(),
            "commit staged accounts before hashing"
        );
        let progress = std::sync::Mutex::new(None);
        self.accounts
            .hash_subtries(threads.max(1), &|_| {}, &|done, of| {
                if let Ok(mut progress) = progress.lock() {
                    progress
                        .get_or_insert_with(|| {
                            fulmen_storage::progress::Progress::new(
                                "hashing the state trie",
                                "subtries",
                                of as u64,
                            )
                        })
                        .tick(done as u64);
                }
            });
        self.accounts.root()
    }

    /// Applies diffs in order. Hashing is deferred to [`Self::root`].
    pub fn apply<'a>(&mut self, diffs: impl IntoIterator<Item = &'a StateDiff>) {
        for diff in diffs {
            self.stage(diff);
        }
        while !self.commit_staged(usize::MAX) {}
    }

    /// Applies a diff's storage and notes its accounts; their leaves are
    /// written by [`Self::commit_staged`] (a leaf embeds its storage root, so
    /// leaves are written once all of a block's slots are in).
    pub fn stage(&mut self, diff: &StateDiff) {
        assert!(
            self.committing.is_empty(),
            "stage a whole block before committing it"
        );
        for (address, slot, value) in &diff.storage {
            let trie = self.storage.entry(*address).or_default();
            if value.is_zero() {
                trie.remove(slot_key(slot));
            } else {
                trie.insert(slot_key(slot), alloy_rlp::encode(value));
            }
            self.staged.entry(*address).or_insert(None);
        }
        for (address, account) in &diff.accounts {
            self.staged.insert(*address, Some(*account));
        }
    }

    /// Writes the leaves of up to `max` staged accounts; true when none is left.
    pub fn commit_staged(&mut self, max: usize) -> bool {
        if self.committing.is_empty() {
            self.committing = self.staged.drain().collect();
        }
        let keep = self.committing.len().saturating_sub(max);
        let batch: Vec<_> = self.committing.drain(keep..).collect();
        for (address, change) in batch {
            let key = keccak256(address);
            match self.account_after(key, change) {
                Some(account) => {
                    let storage_root = self.storage_root(&address);
                    self.accounts
                        .insert(key, encode_account(&account, storage_root));
                }
                None => {
                    self.accounts.remove(key);
                    self.storage.remove(&address);
                }
            }
        }
        self.committing.is_empty() && self.staged.is_empty()
    }

    /// Writes the leaves of every staged account at once on `threads`
    /// threads (see [`Trie::root_parallel`] for `on_start`): the changed
    /// storage tries' roots, the account keys and leaves, then the
    /// inserts under each top-level child of the account trie; removals
    /// one by one. The same trie as [`Self::commit_staged`].
    pub fn commit_staged_parallel(&mut self, threads: usize, on_start: &(dyn Fn(usize) + Sync)) {
        let mut staged: Vec<(Address, Option<Option<AccountState>>)> =
            self.committing.drain(..).collect();
        staged.extend(self.staged.drain());
        // The storage roots: each storage trie on one thread.
        let touched: HashSet<Address> = staged
            .iter()
            .filter(|(_, change)| !matches!(change, Some(None)))
            .map(|(address, _)| *address)
            .collect();
        let tries: Vec<&mut Trie> = self
            .storage
            .iter_mut()
            .filter(|(address, trie)| touched.contains(*address) && !trie.is_empty())
            .map(|(_, trie)| trie)
            .collect();
        in_shares(tries, threads, on_start, |trie| {
            trie.root();
        });
        // Keys and leaves (the storage roots are cached now), in shares.
        let this = &*self;
        let computed = map_in_shares(staged, threads, on_start, |(address, change)| {
            let key = keccak256(address);
            match this.account_after(key, change) {
                Some(account) => {
                    let storage_root = this.cached_storage_root(&address);
                    Either::Left((key, encode_account(&account, storage_root)))
                }
                None => Either::Right((key, address)),
            }
        });
        let mut leaves = Vec::with_capacity(computed.len());
        let mut removed = Vec::new();
        for change in computed {
            match change {
                Either::Left(leaf) => leaves.push(leaf),
                Either::Right(gone) => removed.push(gone),
            }
        }
        for (key, address) in removed {
            self.accounts.remove(key);
            self.storage.remove(&address);
        }
        self.accounts.insert_parallel(leaves, threads, on_start);
    }

    /// The account at `key` after a staged `change` (`None`: deleted).
    fn account_after(
        &self,
        key: B256,
        change: Option<Option<AccountState>>,
    ) -> Option<AccountState> {
        match change {
            Some(change) => change,
            // Only storage changed: keep the header the trie already has.
            None => self.accounts.get(key).and_then(decode_account),
        }
    }

    /// Hashes at most `budget` account-trie nodes; the root once done
    /// (see [`Trie::root_step`]).
    pub fn root_step(&mut self, budget: usize) -> Option<B256> {
        assert!(
            self.staged.is_empty() && self.committing.is_empty(),
            "commit staged accounts before hashing"
        );
        self.accounts.root_step(budget)
    }

    /// The state root with the account trie's top-level subtries hashed on
    /// `threads` threads (see [`Trie::root_parallel`]). Staged diffs must
    /// have been committed.
    pub fn root_parallel(&mut self, threads: usize, on_start: &(dyn Fn(usize) + Sync)) -> B256 {
        assert!(
            self.staged.is_empty() && self.committing.is_empty(),
            "commit staged accounts before hashing"
        );
        self.accounts.root_parallel(threads, on_start)
    }

    /// The state root. Staged diffs must have been committed.
    pub fn root(&mut self) -> B256 {
        assert!(
            self.staged.is_empty() && self.committing.is_empty(),
            "commit staged accounts before hashing"
        );
        self.accounts.root()
    }

    /// Number of accounts in the trie.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// Proof of `address` and `slots` against [`Self::root`].
    pub fn proof(&mut self, address: &Address, slots: &[B256]) -> AccountProof {
        let account_proof = self.accounts.proof(keccak256(address));
        let storage_root = self.storage_root(address);
        let storage_proofs = slots
            .iter()
            .map(|slot| {
                let key = keccak256(slot);
                match self.storage.get_mut(address) {
                    Some(trie) => {
                        let value = trie
                            .get(key)
                            .and_then(|raw| U256::decode(&mut &raw[..]).ok())
                            .unwrap_or_default();
                        (*slot, value, trie.proof(key))
                    }
                    None => (*slot, U256::ZERO, Vec::new()),
                }
            })
            .collect();
        AccountProof {
            account_proof,
            storage_root,
            storage_proofs,
        }
    }

    /// The nodes that removing `address` (when `account` is set) and its
    /// `slots` would merge into their parents (see `Trie::removal_sibling`).
    pub fn removal_siblings(
        &mut self,
        address: &Address,
        account: bool,
        slots: &[U256],
    ) -> Vec<alloy_primitives::Bytes> {
        let mut out = Vec::new();
        if account {
            out.extend(self.accounts.removal_sibling(keccak256(address)));
        } else if let Some(trie) = self.storage.get_mut(address) {
            out.extend(
                slots
                    .iter()
                    .filter_map(|slot| trie.removal_sibling(slot_key(slot))),
            );
        }
        out
    }

    /// [`Self::storage_root`] once the changed storage tries are hashed.
    fn cached_storage_root(&self, address: &Address) -> B256 {
        match self.storage.get(address) {
            Some(trie) if !trie.is_empty() => trie
                .cached_root()
                .expect("changed storage tries are hashed before their leaves"),
            _ => EMPTY_ROOT_HASH,
        }
    }

    fn storage_root(&mut self, address: &Address) -> B256 {
        match self.storage.get_mut(address) {
            Some(trie) if !trie.is_empty() => trie.root(),
            _ => EMPTY_ROOT_HASH,
        }
    }
}

fn slot_key(slot: &U256) -> B256 {
    keccak256(B256::from(*slot))
}

// Field by field: alloy-trie's `account-ext` feature, which another crate in
// the build may enable, adds a field to TrieAccount.
#[allow(clippy::field_reassign_with_default)]
fn encode_account(account: &AccountState, storage_root: B256) -> Vec<u8> {
    let mut leaf = TrieAccount::default();
    leaf.nonce = account.nonce;
    leaf.balance = account.balance;
    leaf.storage_root = storage_root;
    leaf.code_hash = account.code_hash;
    alloy_rlp::encode(leaf)
}

fn decode_account(raw: &[u8]) -> Option<AccountState> {
    let account = TrieAccount::decode(&mut &raw[..]).ok()?;
    Some(AccountState {
        nonce: account.nonce,
        balance: account.balance,
        code_hash: account.code_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::address;
    use alloy_trie::{Nibbles, proof::verify_proof, root::state_root_unhashed};

    fn full_root(state: &HotState) -> B256 {
        let mut by_account: HashMap<Address, Vec<(B256, U256)>> = HashMap::new();
        for ((address, slot), value) in state.slots() {
            by_account
                .entry(*address)
                .or_default()
                .push((B256::from(*slot), *value));
        }
        state_root_unhashed(state.accounts().map(|(address, account)| {
            let storage = by_account.remove(address).unwrap_or_default();
            let storage_root = alloy_trie::root::storage_root_unhashed(storage);
            let leaf = encode_account(account, storage_root);
            (*address, TrieAccount::decode(&mut &leaf[..]).unwrap())
        }))
    }

    /// The parallel commit and hash give the state the sequential path
    /// gives, through creations, balance changes, storage writes and
    /// clears on several contracts, and account deletions.
    #[test]
    fn parallel_commit_and_root_equal_the_sequential_ones() {
        let account = |i: u64| Address::from_word(keccak256(i.to_be_bytes()));
        let mut state = HotState::new();
        for i in 0..3_000u64 {
            state.set_account(account(i), AccountState::funded(U256::from(i + 1)));
        }
        for c in 0..20u64 {
            for slot in 0..50u64 {
                state.set_storage(account(c), U256::from(slot), U256::from(slot + 1));
            }
        }
        let mut sequential = StateTrie::from_state(&state);
        let mut parallel = sequential.clone();
        let threads = std::sync::atomic::AtomicUsize::new(0);
        let on_start = |_: usize| {
            threads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        for round in 1..5u64 {
            let accounts = (0..3_500u64)
                .step_by(3)
                .map(|i| {
                    let change = (i % 11 != 0 || i < 20)
                        .then(|| AccountState::funded(U256::from(i * round + 7)));
                    (account(i), change)
                })
                .collect();
            let storage = (0..20u64)
                .flat_map(|c| {
                    (0..60u64).step_by(c as usize % 3 + 1).map(move |slot| {
                        let value = if slot % 5 == 0 { 0 } else { slot * round };
                        (account(c), U256::from(slot), U256::from(value))
                    })
                })
                .collect();
            let diff = StateDiff {
                accounts,
                storage,
                codes: vec![],
            };
            state.apply(&diff);
            sequential.apply([&diff]);
            parallel.stage(&diff);
            parallel.commit_staged_parallel(1 + round as usize, &on_start);
            let root = parallel.root_parallel(1 + round as usize, &on_start);
            assert_eq!(root, sequential.root(), "round {round}");
            assert_eq!(root, full_root(&state), "round {round}");
            assert_eq!(parallel.accounts.len(), sequential.accounts.len());
        }
        assert!(threads.into_inner() > 0, "helpers ran");
    }

    #[test]
    fn incremental_root_equals_full_rebuild() {
        let mut state = HotState::new();
        for i in 0..200u64 {
            let mut bytes = [0u8; 20];
            bytes[12..].copy_from_slice(&i.to_be_bytes());
            state.set_account(
                Address::from(bytes),
                AccountState::funded(U256::from(i + 1)),
            );
        }
        let contract = address!("0x00000000000000000000000000000000000c0de0");
        state.set_account(
            contract,
            AccountState {
                nonce: 1,
                ..AccountState::funded(U256::ZERO)
            },
        );
        state.set_storage(contract, U256::from(1), U256::from(11));
        let mut trie = StateTrie::from_state(&state);
        assert_eq!(trie.root(), full_root(&state));

        let mut gone = [0u8; 20];
        gone[12..].copy_from_slice(&5u64.to_be_bytes());
        let diffs = vec![
            StateDiff {
                accounts: vec![(Address::from(gone), None)],
                storage: vec![(contract, U256::from(2), U256::from(22))],
                codes: vec![],
            },
            StateDiff {
                accounts: vec![(
                    Address::repeat_byte(0xee),
                    Some(AccountState::funded(U256::from(9))),
                )],
                storage: vec![(contract, U256::from(1), U256::ZERO)],
                codes: vec![],
            },
        ];
        for diff in &diffs {
            state.apply(diff);
        }
        trie.apply(&diffs);
        assert_eq!(trie.root(), full_root(&state));

        let root = trie.root();
        let proof = trie.proof(
            &contract,
            &[B256::from(U256::from(2)), B256::from(U256::from(1))],
        );
        let leaf = encode_account(state.account(&contract).unwrap(), proof.storage_root);
        verify_proof(
            root,
            Nibbles::unpack(keccak256(contract)),
            Some(leaf),
            &proof.account_proof,
        )
        .unwrap();
        let (slot, value, nodes) = &proof.storage_proofs[0];
        assert_eq!(*value, U256::from(22));
        verify_proof(
            proof.storage_root,
            Nibbles::unpack(keccak256(slot)),
            Some(alloy_rlp::encode(value)),
            nodes,
        )
        .unwrap();
        let (slot, value, nodes) = &proof.storage_proofs[1];
        assert_eq!(*value, U256::ZERO);
        verify_proof(
            proof.storage_root,
            Nibbles::unpack(keccak256(slot)),
            None,
            nodes,
        )
        .unwrap();
    }
}
