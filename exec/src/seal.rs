//! The state-root worker's engine: applies each sealed block's diff to the
//! state trie and computes the block's roots, in bounded steps.

use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Bloom, Bytes, keccak256};
use fulmen_chain::block::{Accessed, SealJob, SealRoots, Witness};
use fulmen_chain::msg::AccountProof;

use crate::merkle::StateTrie;
use crate::trie::Trie;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum SealPhase {
    #[default]
    Stage,
    Commit,
    StateHash,
    BlockItems,
    TxHash,
    ReceiptHash,
}

/// Where a seal in steps stands (see [`Merkleizer::seal_step`]).
#[derive(Debug, Default)]
pub struct SealProgress {
    phase: SealPhase,
    next: usize,
    state_root: B256,
    transactions_root: B256,
    txs: Trie,
    receipts: Trie,
    logs_bloom: Bloom,
    txs_rlp_len: usize,
    witnessed: bool,
}

impl SealProgress {
    fn advance(&mut self, phase: SealPhase) {
        self.phase = phase;
        self.next = 0;
    }
}

/// The state-root worker: owns the state trie and turns seal jobs into roots.
#[derive(Debug)]
pub struct Merkleizer {
    trie: StateTrie,
    /// Last block whose diff the trie holds.
    pub number: u64,
    /// Execution witnesses of the last blocks sealed (at most
    /// `witness_blocks`), oldest first.
    witnesses: std::collections::VecDeque<std::sync::Arc<Witness>>,
    witness_blocks: usize,
    /// `None`: the trie is written and hashed in budgeted steps on this
    /// worker alone.
    hash_cpus: Option<HashCpus>,
}

/// CPUs that write and hash the state trie together, and how a helper
/// thread pins itself to one.
#[derive(Debug)]
struct HashCpus {
    /// This worker's first.
    cpus: Vec<usize>,
    pin: fn(usize),
}

impl Merkleizer {
    /// A worker whose trie reflects block `number`.
    pub fn new(trie: StateTrie, number: u64) -> Self {
        Self {
            trie,
            number,
            witnesses: Default::default(),
            witness_blocks: 0,
            hash_cpus: None,
        }
    }

    /// Writes and hashes the state trie on these CPUs together, the
    /// worker's own first (two or more; fewer keeps the budgeted steps):
    /// the worker then commits a block's accounts and computes its state
    /// root in one go each, with helper threads that `pin` themselves to
    /// the other CPUs. For a worker whose CPU does
    /// nothing else, such as one of several exec CPUs.
    pub fn hash_on(&mut self, cpus: Vec<usize>, pin: fn(usize)) {
        self.hash_cpus = (cpus.len() > 1).then_some(HashCpus { cpus, pin });
    }

    /// Keeps the execution witnesses of the last `blocks` blocks sealed
    /// whose jobs say what they accessed (0: none).
    pub fn keep_witnesses(&mut self, blocks: usize) {
        self.witness_blocks = blocks;
        while self.witnesses.len() > blocks {
            self.witnesses.pop_front();
        }
    }

    /// The kept execution witness of block `number` (shared: serving one
    /// copies nothing on this worker).
    pub fn witness(&self, number: u64) -> Option<std::sync::Arc<Witness>> {
        self.witnesses.iter().find(|w| w.number == number).cloned()
    }

    /// Records `job`'s witness from the trie as it stands (the state before
    /// the block): the proof nodes of every account and slot it accessed.
    fn record_witness(&mut self, job: &SealJob, accessed: &Accessed) {
        let mut nodes: std::collections::BTreeMap<B256, Bytes> = Default::default();
        let mut keys = Vec::new();
        let mut add = |proof: &[Bytes]| {
            for node in proof {
                nodes.entry(keccak256(node)).or_insert_with(|| node.clone());
            }
        };
        let mut accounts = accessed.accounts.clone();
        for diff in &job.diffs {
            let mut written = Accessed::default();
            written.add_diff(diff);
            for (address, slots) in written.accounts {
                accounts.entry(address).or_default().extend(slots);
            }
        }
        for diff in &job.diffs {
            for (address, account) in &diff.accounts {
                add(&self.trie.removal_siblings(address, account.is_none(), &[]));
            }
            let cleared: Vec<_> = diff
                .storage
                .iter()
                .filter(|(_, _, v)| v.is_zero())
                .collect();
            for (address, slot, _) in cleared {
                add(&self.trie.removal_siblings(address, false, &[*slot]));
            }
        }
        for (address, slots) in &accounts {
            let slots: Vec<B256> = slots.iter().copied().collect();
            let proof = self.trie.proof(address, &slots);
            add(&proof.account_proof);
            for (_, _, storage_proof) in &proof.storage_proofs {
                add(storage_proof);
            }
            keys.push(Bytes::copy_from_slice(address.as_slice()));
            keys.extend(slots.iter().map(|s| Bytes::copy_from_slice(s.as_slice())));
        }
        self.witnesses.push_back(std::sync::Arc::new(Witness {
            number: job.ctx.number,
            state: nodes.into_values().collect(),
            codes: accessed.codes.values().cloned().collect(),
            keys,
            oldest_hash_read: accessed.oldest_hash_read,
        }));
        while self.witnesses.len() > self.witness_blocks {
            self.witnesses.pop_front();
        }
    }

    /// Applies the block's state changes without hashing (boot replay: the
    /// header holds the roots; [`Self::state_root`] checks the last one).
    pub fn apply_unhashed(&mut self, job: &SealJob) {
        self.trie.apply(&job.diffs);
        self.number = job.ctx.number;
    }

    /// The state root of the trie as it stands.
    pub fn state_root(&mut self) -> B256 {
        self.trie.root()
    }

    /// Applies the block's diff and computes its roots in one go.
    pub fn seal(&mut self, job: &SealJob) -> SealRoots {
        let mut progress = SealProgress::default();
        loop {
            if let Some(roots) = self.seal_step(job, &mut progress, usize::MAX) {
                return roots;
            }
        }
    }

    /// Does at most about `budget` units of work (diffs, accounts, trie nodes,
    /// transactions) on `job`; returns the roots once the seal is complete.
    /// Call again with the same `progress` to continue.
    pub fn seal_step(
        &mut self,
        job: &SealJob,
        progress: &mut SealProgress,
        budget: usize,
    ) -> Option<SealRoots> {
        assert_eq!(
            job.ctx.number,
            self.number + 1,
            "blocks are sealed in order"
        );
        let budget = budget.max(1);
        if !progress.witnessed {
            progress.witnessed = true;
            if let Some(accessed) = job.accessed.as_deref()
                && self.witness_blocks > 0
            {
                self.record_witness(job, accessed);
            }
        }
        match progress.phase {
            SealPhase::Stage => {
                let end = progress.next.saturating_add(budget).min(job.diffs.len());
                for diff in &job.diffs[progress.next..end] {
                    self.trie.stage(diff);
                }
                progress.next = end;
                if end == job.diffs.len() {
                    progress.advance(SealPhase::Commit);
                }
            }
            SealPhase::Commit => {
                let done = match &self.hash_cpus {
                    Some(HashCpus { cpus, pin }) => {
                        self.trie
                            .commit_staged_parallel(cpus.len(), &|index| pin(cpus[index]));
                        true
                    }
                    None => self.trie.commit_staged(budget),
                };
                if done {
                    progress.advance(SealPhase::StateHash);
                }
            }
            SealPhase::StateHash => {
                let root = match &self.hash_cpus {
                    // All at once: the worker's CPU is its own, and the
                    // helpers' are exec CPUs.
                    Some(HashCpus { cpus, pin }) => Some(
                        self.trie
                            .root_parallel(cpus.len(), &|index| pin(cpus[index])),
                    ),
                    None => self.trie.root_step(budget),
                };
                if let Some(root) = root {
                    progress.state_root = root;
                    progress.advance(SealPhase::BlockItems);
                }
            }
            SealPhase::BlockItems => {
                let end = progress.next.saturating_add(budget).min(job.txs.len());
                for (index, tx) in job.txs.iter().enumerate().take(end).skip(progress.next) {
                    let key = alloy_rlp::encode(index);
                    progress
                        .txs
                        .insert_bytes(&key, tx.tx.envelope.encoded_2718());
                    progress.txs_rlp_len += alloy_rlp::Encodable::length(&tx.tx.envelope);
                    let receipt = tx.receipt_envelope();
                    progress.logs_bloom.accrue_bloom(receipt.logs_bloom());
                    progress.receipts.insert_bytes(&key, receipt.encoded_2718());
                }
                progress.next = end;
                if end == job.txs.len() {
                    progress.advance(SealPhase::TxHash);
                }
            }
            SealPhase::TxHash => {
                if let Some(root) = progress.txs.root_step(budget) {
                    progress.transactions_root = root;
                    progress.advance(SealPhase::ReceiptHash);
                }
            }
            SealPhase::ReceiptHash => {
                if let Some(root) = progress.receipts.root_step(budget) {
                    self.number = job.ctx.number;
                    return Some(SealRoots {
                        number: job.ctx.number,
                        state_root: progress.state_root,
                        transactions_root: progress.transactions_root,
                        receipts_root: root,
                        logs_bloom: progress.logs_bloom,
                        txs_rlp_len: progress.txs_rlp_len,
                    });
                }
            }
        }
        None
    }

    /// The export of the state trie's references at block
    /// [`Self::number`], to be written in steps (a checkpoint's).
    pub fn export_hashes(&self) -> crate::merkle::StateHashExport<'_> {
        self.trie.export_hashes()
    }

    /// Proof against the state root of block [`Self::number`].
    pub fn proof(&mut self, address: &Address, slots: &[B256]) -> AccountProof {
        self.trie.proof(address, slots)
    }
}
