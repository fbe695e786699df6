//! An in-memory Merkle Patricia Trie that is updated in place and rehashes only
//! the nodes on changed paths.
//!
//! Rebuilding the state root from scratch costs O(state) per block; this trie
//! keeps every node with its cached RLP reference, so a block that changes `k`
//! keys costs O(k · depth) hashes. Keys are fixed-length (keccak-hashed, 64
//! nibbles), as in Ethereum's secure tries, so a branch never carries a value.

use alloy_primitives::{B256, Bytes, keccak256};
use alloy_trie::{
    EMPTY_ROOT_HASH, Nibbles, TrieMask,
    nodes::{BranchNodeRef, ExtensionNodeRef, LeafNodeRef, RlpNode},
};

/// Number of nibbles in a hashed key.
pub const KEY_NIBBLES: usize = 64;

#[derive(Debug, Default, Clone)]
enum Node {
    #[default]
    Empty,
    Leaf(Box<Leaf>),
    Extension(Box<Extension>),
    Branch(Box<Branch>),
}

#[derive(Debug, Clone)]
struct Leaf {
    key: Nibbles,
    /// Exactly the value's bytes (no spare capacity).
    value: Box<[u8]>,
    cache: Option<RlpNode>,
}

#[derive(Debug, Clone)]
struct Extension {
    key: Nibbles,
    child: Node,
    cache: Option<RlpNode>,
}

#[derive(Debug, Default, Clone)]
struct Branch {
    children: [Node; 16],
    cache: Option<RlpNode>,
}

/// Entries of a trie to build, dealt by their keys' first nibble.
#[derive(Debug, Default)]
pub struct Buckets([Vec<(B256, Box<[u8]>)>; 16]);

impl Buckets {
    /// Adds an entry (an empty value is left out).
    pub fn push(&mut self, key: B256, value: Vec<u8>) {
        if !value.is_empty() {
            self.0[key_nibble(&key, 0)].push((key, value.into_boxed_slice()));
        }
    }

    /// Room for about `entries` more, spread evenly (random keys).
    pub fn reserve(&mut self, entries: usize) {
        for bucket in &mut self.0 {
            bucket.reserve(entries / 16 + entries / 256 + 16);
        }
    }

    /// Moves `other`'s entries into these.
    pub fn append(&mut self, other: &mut Self) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0.iter_mut()) {
            if mine.is_empty() {
                std::mem::swap(mine, theirs);
            } else {
                mine.append(theirs);
            }
        }
    }
}

/// A secure Merkle Patricia Trie keyed by 32-byte hashes.
#[derive(Debug, Default, Clone)]
pub struct Trie {
    root: Node,
    len: usize,
}

impl Trie {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the trie holds no leaf.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A trie of `entries` (distinct keys; empty values are left out), each
    /// node made once from the sorted keys: several times faster than
    /// inserting them one by one (checkpoint load, genesis).
    pub fn from_entries(entries: Vec<(B256, Vec<u8>)>) -> Self {
        Self::from_entries_on(entries, 1)
    }

    /// [`Self::from_entries`] on `threads` threads: the entries are dealt
    /// by their first nibble, and each of the 16 subtries is sorted and
    /// built on one of them (see [`in_shares`]; the helpers are not pinned).
    pub fn from_entries_on(entries: Vec<(B256, Vec<u8>)>, threads: usize) -> Self {
        let mut buckets = Buckets::default();
        for (key, value) in entries {
            buckets.push(key, value);
        }
        Self::from_buckets_on(buckets, threads)
    }

    /// [`Self::from_entries_on`] of entries already dealt by first nibble
    /// (several threads may each fill their own, then [`Buckets::append`]).
    pub fn from_buckets_on(mut buckets: Buckets, threads: usize) -> Self {
        let mut children: [Node; 16] = Default::default();
        let work: Vec<_> = buckets
            .0
            .iter_mut()
            .zip(children.iter_mut())
            .filter(|(bucket, _)| !bucket.is_empty())
            .collect();
        let top = work.len();
        in_shares(work, threads, &|_| {}, |(bucket, child)| {
            // Random keys: an unstable sort is faster and needs no buffer.
            bucket.sort_unstable_by_key(|entry| entry.0);
            // Keys are distinct; of equal ones (a caller's bug) one is kept,
            // so that `build` never sees two leaves at one path.
            bucket.dedup_by(|later, kept| later.0 == kept.0);
            // Build at depth 1 under a top branch, or at 0 when every key
            // falls under one nibble (no branch of one child).
            *child = build(bucket, if top > 1 { 1 } else { 0 });
        });
        let len = buckets.0.iter().map(Vec::len).sum();
        let root = match top {
            0 => Node::Empty,
            1 => children
                .into_iter()
                .find(|child| !matches!(child, Node::Empty))
                .expect("one subtrie"),
            _ => Node::Branch(Box::new(Branch {
                children,
                cache: None,
            })),
        };
        Self { root, len }
    }

    /// Inserts or replaces the value at `key`. An empty value removes the key.
    pub fn insert(&mut self, key: B256, value: Vec<u8>) {
        self.insert_bytes(key.as_slice(), value);
    }

    /// Inserts under a key of any length. Keys must be prefix-free (no key
    /// is a prefix of another): true of 32-byte hashes and of the RLP-encoded
    /// indexes of the transactions and receipts tries.
    pub fn insert_bytes(&mut self, key: &[u8], value: Vec<u8>) {
        let path = Nibbles::unpack(key);
        if value.is_empty() {
            if remove(&mut self.root, path) {
                self.len -= 1;
            }
            return;
        }
        if insert(&mut self.root, path, value) {
            self.len += 1;
        }
        assert_eq!(
            self.len == 0,
            matches!(self.root, Node::Empty),
            "an empty trie has an empty root"
        );
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&mut self, key: B256) -> bool {
        let path = Nibbles::unpack(key);
        let removed = remove(&mut self.root, path);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// The value stored at `key`.
    pub fn get(&self, key: B256) -> Option<&[u8]> {
        self.leaf(key, |_, _| {}).map(|leaf| &*leaf.value)
    }

    /// The leaf of `key`, if there is one; `branch` sees each branch on
    /// the way with the child index taken.
    fn leaf<'a>(
        &'a self,
        key: B256,
        mut branch: impl FnMut(&'a Branch, usize),
    ) -> Option<&'a Leaf> {
        let path = Nibbles::unpack(key);
        let mut node = &self.root;
        let mut at = 0;
        loop {
            match node {
                Node::Empty => return None,
                Node::Leaf(leaf) => return (leaf.key == path.slice(at..)).then_some(&**leaf),
                Node::Extension(ext) => {
                    if !path.slice(at..).starts_with(&ext.key) {
                        return None;
                    }
                    at += ext.key.len();
                    node = &ext.child;
                }
                Node::Branch(b) => {
                    let nibble = path.get_unchecked(at) as usize;
                    branch(b, nibble);
                    node = &b.children[nibble];
                    at += 1;
                }
            }
        }
    }

    /// Hashes at most `budget` changed nodes and returns the root once every
    /// node is hashed. Finished subtries keep their hashes, so calling again
    /// resumes where the last call stopped: a caller can spread a large rehash
    /// over many short steps and yield between them.
    pub fn root_step(&mut self, budget: usize) -> Option<B256> {
        if matches!(self.root, Node::Empty) {
            return Some(EMPTY_ROOT_HASH);
        }
        let mut budget = budget.max(1);
        let mut buf = Vec::with_capacity(600);
        rlp_node_limited(&mut self.root, &mut buf, &mut budget)?;
        Some(self.root())
    }

    /// The root hash if nothing changed since the last [`Self::root`].
    pub fn cached_root(&self) -> Option<B256> {
        match &self.root {
            Node::Empty => Some(EMPTY_ROOT_HASH),
            node if is_hashed(node) => {
                let node = cached(node);
                Some(node.as_hash().unwrap_or_else(|| keccak256(node.as_slice())))
            }
            _ => None,
        }
    }

    /// The root hash; rehashes only the nodes changed since the last call.
    pub fn root(&mut self) -> B256 {
        if matches!(self.root, Node::Empty) {
            return EMPTY_ROOT_HASH;
        }
        let mut buf = Vec::with_capacity(600);
        let node = rlp_node(&mut self.root, &mut buf);
        node.as_hash().unwrap_or_else(|| keccak256(node.as_slice()))
    }

    /// The root hash, with the subtries under the top branch hashed on
    /// `threads` threads (this one and `threads - 1` scoped helpers, each
    /// of which first calls `on_start` with its index, 1 and up: to pin
    /// itself). The same hash as [`Self::root`]; the top-level subtries are
    /// disjoint, so each thread owns its share of the nodes outright.
    pub fn root_parallel(&mut self, threads: usize, on_start: &(dyn Fn(usize) + Sync)) -> B256 {
        if threads > 1 {
            self.hash_subtries(threads, on_start, &|_, _| {});
        }
        self.root()
    }

    /// Hashes the subtries under the top branch that are not hashed yet,
    /// on `threads` threads as [`Self::root_parallel`] (on this one alone
    /// when `threads` is 1), calling `on_hashed(done, of)` before the
    /// first (`done` 0) and as each one is done (`of` subtries in all):
    /// long work reports progress with it. The top branch itself is left
    /// to [`Self::root`].
    pub fn hash_subtries(
        &mut self,
        threads: usize,
        on_start: &(dyn Fn(usize) + Sync),
        on_hashed: &(dyn Fn(usize, usize) + Sync),
    ) {
        let top = match &mut self.root {
            Node::Branch(branch) => Some(branch),
            Node::Extension(ext) => match &mut ext.child {
                Node::Branch(branch) => Some(branch),
                _ => None,
            },
            _ => None,
        };
        let Some(top) = top.filter(|top| top.cache.is_none()) else {
            return;
        };
        let dirty: Vec<&mut Node> = top
            .children
            .iter_mut()
            .filter(|child| !is_hashed(child))
            .collect();
        let of = dirty.len();
        on_hashed(0, of);
        let done = std::sync::atomic::AtomicUsize::new(0);
        in_shares(dirty, threads, on_start, |node| {
            rlp_node(node, &mut Vec::with_capacity(600));
            let done = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            on_hashed(done, of);
        });
    }

    /// Inserts or replaces every `(key, value)` (values not empty), the
    /// keys under each child of the top branch on one of `threads`
    /// threads (as [`Self::root_parallel`]); one by one when the top is
    /// not a branch. The top branch itself only loses its cache: an insert
    /// below a branch never changes the branch's shape.
    pub fn insert_parallel(
        &mut self,
        entries: Vec<(B256, Vec<u8>)>,
        threads: usize,
        on_start: &(dyn Fn(usize) + Sync),
    ) {
        assert!(
            entries.iter().all(|(_, value)| !value.is_empty()),
            "inserts only"
        );
        let Node::Branch(top) = &mut self.root else {
            for (key, value) in entries {
                self.insert(key, value);
            }
            return;
        };
        let mut groups: [Vec<(Nibbles, Vec<u8>)>; 16] = Default::default();
        for (key, value) in entries {
            let path = Nibbles::unpack(key);
            groups[path.get_unchecked(0) as usize].push((path.slice(1..), value));
        }
        top.cache = None;
        let added = std::sync::atomic::AtomicUsize::new(0);
        let work: Vec<_> = top
            .children
            .iter_mut()
            .zip(groups)
            .filter(|(_, group)| !group.is_empty())
            .collect();
        in_shares(work, threads, on_start, |(child, group)| {
            let mut new = 0;
            for (path, value) in group {
                new += usize::from(insert(child, path, value));
            }
            added.fetch_add(new, std::sync::atomic::Ordering::Relaxed);
        });
        self.len += added.into_inner();
    }

    /// The RLP-encoded nodes from the root down to `key` (or to where the path
    /// for `key` ends, for an exclusion proof), as `eth_getProof` returns them.
    pub fn proof(&mut self, key: B256) -> Vec<Bytes> {
        // Caches must be fresh so that every encoding below refers to current children.
        self.root();
        let path = Nibbles::unpack(key);
        let mut out = Vec::new();
        let mut node = &self.root;
        let mut at = 0;
        let mut buf = Vec::with_capacity(600);
        loop {
            if !matches!(node, Node::Empty) {
                out.push(encode_node(node, &mut buf));
            }
            match node {
                Node::Empty | Node::Leaf(_) => return out,
                Node::Extension(ext) => {
                    if !path.slice(at..).starts_with(&ext.key) {
                        return out;
                    }
                    at += ext.key.len();
                    node = &ext.child;
                }
                Node::Branch(branch) => {
                    node = &branch.children[path.get_unchecked(at) as usize];
                    at += 1;
                }
            }
        }
    }

    /// Takes the references of its branches and extensions from `bytes`
    /// (a [`HashExport`] of a trie with the same keys), so that [`Self::root`]
    /// hashes only leaves, and those lazily, as their branches change. All
    /// or nothing: when the records do not fit, every reference is
    /// dropped again (the trie is then hashed in full) and the error says
    /// where.
    pub fn import_hashes(&mut self, bytes: &[u8]) -> Result<(), HashesError> {
        let imported = self.read_hashes(bytes, false);
        if imported.is_err() {
            clear_references(&mut self.root);
        }
        imported
    }

    /// Checks `bytes` (a [`HashExport`]) against this trie's own
    /// references, recomputed first (`db check`).
    pub fn verify_hashes(&mut self, bytes: &[u8]) -> Result<(), HashesError> {
        self.root();
        self.read_hashes(bytes, true)
    }

    fn read_hashes(&mut self, bytes: &[u8], verify: bool) -> Result<(), HashesError> {
        let mut import = HashImport {
            bytes,
            record: 0,
            verify,
        };
        import.node(&mut self.root)?;
        if !import.bytes.is_empty() {
            return Err(HashesError::Trailing {
                bytes: import.bytes.len(),
            });
        }
        Ok(())
    }

    /// True when the root is a branch or an extension: a [`HashExport`] of
    /// the trie has records.
    pub fn has_inner_nodes(&self) -> bool {
        matches!(self.root, Node::Branch(_) | Node::Extension(_))
    }

    /// The node that removing `key` would merge into its parent: when the
    /// leaf of `key` hangs from a branch with one other child, that child's
    /// encoding (a stateless verifier needs it to collapse the branch);
    /// `None` otherwise.
    pub fn removal_sibling(&mut self, key: B256) -> Option<Bytes> {
        self.root();
        let mut last_branch = None;
        self.leaf(key, |branch, nibble| last_branch = Some((branch, nibble)))?;
        let (branch, nibble) = last_branch?;
        let mut others = branch
            .children
            .iter()
            .enumerate()
            .filter(|(i, child)| *i != nibble && !matches!(child, Node::Empty));
        match (others.next(), others.next()) {
            (Some((_, only)), None) => Some(encode_node(only, &mut Vec::new())),
            _ => None,
        }
    }
}

/// Record kinds of [`HashExport`]: a branch (its child mask, which of its
/// children are leaves, its reference), an extension (its key's length,
/// its reference).
const RECORD_BRANCH: u8 = 0;
const RECORD_EXTENSION: u8 = 1;

/// Why a trie's exported hashes do not fit it (see [`Trie::import_hashes`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashesError {
    /// The export ends before the trie's nodes do.
    #[error("the hashes end at record {record}, before the trie's nodes do")]
    Short {
        /// Records read.
        record: usize,
    },
    /// A record is not of the node at its place in the trie.
    #[error("record {record} does not fit the trie's node there ({what})")]
    Shape {
        /// Its index, in depth-first order.
        record: usize,
        /// What differs.
        what: &'static str,
    },
    /// A reference differs from the one the trie computed.
    #[error("record {record}: the stored reference differs from the node's")]
    Differs {
        /// Its index, in depth-first order.
        record: usize,
    },
    /// Bytes are left after the last node.
    #[error("{bytes} bytes left after the trie's last node")]
    Trailing {
        /// Bytes left.
        bytes: usize,
    },
    /// A node to export is not hashed.
    #[error("a node to export is not hashed")]
    Unhashed,
}

/// The references of a trie's branches and extensions, written in
/// depth-first order (leaves are left out: each is one keccak of what the
/// tables hold, done when its branch is next rehashed). A checkpoint keeps
/// them so that boot builds the trie from the state without hashing it.
/// Written in steps so that a worker sharing its core can yield.
#[derive(Debug)]
pub struct HashExport<'a> {
    stack: Vec<&'a Node>,
}

impl<'a> HashExport<'a> {
    /// The export of `trie` (hashed: [`Trie::root`] since its last change).
    pub fn new(trie: &'a Trie) -> Self {
        Self {
            stack: vec![&trie.root],
        }
    }

    /// Appends the records of nodes to `out` while `budget` (counted down
    /// per node) lasts; true once every node is written.
    pub fn step(&mut self, budget: &mut usize, out: &mut Vec<u8>) -> Result<bool, HashesError> {
        while *budget > 0 {
            let Some(node) = self.stack.pop() else {
                return Ok(true);
            };
            *budget -= 1;
            match node {
                Node::Empty | Node::Leaf(_) => {}
                Node::Extension(ext) => {
                    let cache = ext.cache.as_ref().ok_or(HashesError::Unhashed)?;
                    out.push(RECORD_EXTENSION);
                    out.push(ext.key.len() as u8);
                    out.push(cache.len() as u8);
                    out.extend_from_slice(cache.as_slice());
                    self.stack.push(&ext.child);
                }
                Node::Branch(branch) => {
                    let cache = branch.cache.as_ref().ok_or(HashesError::Unhashed)?;
                    let (mask, leaves) = branch_masks(branch);
                    out.push(RECORD_BRANCH);
                    out.extend_from_slice(&mask.to_le_bytes());
                    out.extend_from_slice(&leaves.to_le_bytes());
                    out.push(cache.len() as u8);
                    out.extend_from_slice(cache.as_slice());
                    // Popped in order: the first child's subtrie first.
                    self.stack.extend(
                        branch
                            .children
                            .iter()
                            .rev()
                            .filter(|child| matches!(child, Node::Branch(_) | Node::Extension(_))),
                    );
                }
            }
        }
        Ok(self.stack.is_empty())
    }
}

/// Which children a branch has, and which of them are leaves (bit `i`:
/// child `i`).
fn branch_masks(branch: &Branch) -> (u16, u16) {
    let (mut mask, mut leaves) = (0u16, 0u16);
    for (i, child) in branch.children.iter().enumerate() {
        if !matches!(child, Node::Empty) {
            mask |= 1 << i;
        }
        if matches!(child, Node::Leaf(_)) {
            leaves |= 1 << i;
        }
    }
    (mask, leaves)
}

/// Reads [`HashExport`]'s records into (or, `verify`, against) the
/// references of the trie under `node`, in the same order.
struct HashImport<'b> {
    bytes: &'b [u8],
    record: usize,
    verify: bool,
}

impl HashImport<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], HashesError> {
        if self.bytes.len() < n {
            return Err(HashesError::Short {
                record: self.record,
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn shape(&self, what: &'static str) -> HashesError {
        HashesError::Shape {
            record: self.record,
            what,
        }
    }

    /// The reference that ends a record, set into or checked against `cache`.
    fn reference(&mut self, cache: &mut Option<RlpNode>) -> Result<(), HashesError> {
        let len = usize::from(self.take(1)?[0]);
        let raw = self.take(len)?;
        let stored = RlpNode::from_raw(raw).ok_or_else(|| self.shape("reference length"))?;
        if self.verify {
            if cache.as_ref() != Some(&stored) {
                return Err(HashesError::Differs {
                    record: self.record,
                });
            }
        } else {
            *cache = Some(stored);
        }
        self.record += 1;
        Ok(())
    }

    fn node(&mut self, node: &mut Node) -> Result<(), HashesError> {
        match node {
            Node::Empty | Node::Leaf(_) => Ok(()),
            Node::Extension(ext) => {
                if self.take(1)?[0] != RECORD_EXTENSION {
                    return Err(self.shape("an extension"));
                }
                if usize::from(self.take(1)?[0]) != ext.key.len() {
                    return Err(self.shape("extension key length"));
                }
                self.reference(&mut ext.cache)?;
                self.node(&mut ext.child)
            }
            Node::Branch(branch) => {
                if self.take(1)?[0] != RECORD_BRANCH {
                    return Err(self.shape("a branch"));
                }
                let (mask, leaves) = branch_masks(branch);
                let stored = self.take(4)?;
                if stored[..2] != mask.to_le_bytes() {
                    return Err(self.shape("branch children"));
                }
                if stored[2..] != leaves.to_le_bytes() {
                    return Err(self.shape("branch leaves"));
                }
                self.reference(&mut branch.cache)?;
                for child in branch.children.iter_mut() {
                    self.node(child)?;
                }
                Ok(())
            }
        }
    }
}

/// Forgets the references of every branch and extension under `node`.
fn clear_references(node: &mut Node) {
    match node {
        Node::Empty | Node::Leaf(_) => {}
        Node::Extension(ext) => {
            ext.cache = None;
            clear_references(&mut ext.child);
        }
        Node::Branch(branch) => {
            branch.cache = None;
            branch.children.iter_mut().for_each(clear_references);
        }
    }
}

fn nibble(n: u8) -> Nibbles {
    Nibbles::from_nibbles_unchecked([n])
}

fn new_leaf(key: Nibbles, value: Box<[u8]>) -> Node {
    Node::Leaf(Box::new(Leaf {
        key,
        value,
        cache: None,
    }))
}

/// Nibble `at` of a hashed key.
fn key_nibble(key: &B256, at: usize) -> usize {
    let byte = key[at / 2];
    usize::from(if at.is_multiple_of(2) {
        byte >> 4
    } else {
        byte & 0x0f
    })
}

/// The node of the sorted, distinct, non-empty `entries`, which share their
/// first `depth` nibbles.
fn build(entries: &mut [(B256, Box<[u8]>)], depth: usize) -> Node {
    if let [(key, value)] = entries {
        return new_leaf(Nibbles::unpack(key).slice(depth..), std::mem::take(value));
    }
    // Sorted: what the first and last keys share, all of them share.
    let (first, last) = (entries[0].0, entries[entries.len() - 1].0);
    let mut common = depth;
    while key_nibble(&first, common) == key_nibble(&last, common) {
        common += 1;
    }
    let mut branch = Box::<Branch>::default();
    let mut rest = entries;
    while let Some((key, _)) = rest.first() {
        let nibble = key_nibble(key, common);
        let end = rest.partition_point(|(key, _)| key_nibble(key, common) == nibble);
        let (group, tail) = rest.split_at_mut(end);
        branch.children[nibble] = build(group, common + 1);
        rest = tail;
    }
    new_extension(
        Nibbles::unpack(first).slice(depth..common),
        Node::Branch(branch),
    )
}

fn new_extension(key: Nibbles, child: Node) -> Node {
    if key.is_empty() {
        return child;
    }
    // Canonical form: a leaf or an extension below an extension would have
    // been merged into it.
    assert!(
        matches!(child, Node::Branch(_)),
        "an extension leads to a branch"
    );
    Node::Extension(Box::new(Extension {
        key,
        child,
        cache: None,
    }))
}

/// Returns true when a new key was added (false when a value was replaced).
fn insert(node: &mut Node, path: Nibbles, value: Vec<u8>) -> bool {
    match node {
        Node::Empty => {
            *node = new_leaf(path, value.into_boxed_slice());
            true
        }
        Node::Leaf(leaf) => {
            if leaf.key == path {
                leaf.value = value.into_boxed_slice();
                leaf.cache = None;
                return false;
            }
            let common = leaf.key.common_prefix_length(&path);
            // Keys are prefix-free, so they part before either ends.
            assert!(common < path.len(), "trie keys must be prefix-free");
            assert!(common < leaf.key.len(), "trie keys must be prefix-free");
            let old = std::mem::take(node);
            let Node::Leaf(old) = old else {
                unreachable!("matched a leaf above")
            };
            let mut branch = Box::<Branch>::default();
            branch.children[old.key.get_unchecked(common) as usize] =
                new_leaf(old.key.slice(common + 1..), old.value);
            branch.children[path.get_unchecked(common) as usize] =
                new_leaf(path.slice(common + 1..), value.into_boxed_slice());
            *node = new_extension(path.slice(..common), Node::Branch(branch));
            true
        }
        Node::Extension(ext) => {
            let common = ext.key.common_prefix_length(&path);
            if common == ext.key.len() {
                ext.cache = None;
                return insert(&mut ext.child, path.slice(common..), value);
            }
            let old = std::mem::take(node);
            let Node::Extension(old) = old else {
                unreachable!("matched an extension above")
            };
            let mut branch = Box::<Branch>::default();
            branch.children[old.key.get_unchecked(common) as usize] =
                new_extension(old.key.slice(common + 1..), old.child);
            branch.children[path.get_unchecked(common) as usize] =
                new_leaf(path.slice(common + 1..), value.into_boxed_slice());
            *node = new_extension(path.slice(..common), Node::Branch(branch));
            true
        }
        Node::Branch(branch) => {
            branch.cache = None;
            let index = path.get_unchecked(0) as usize;
            insert(&mut branch.children[index], path.slice(1..), value)
        }
    }
}

fn remove(node: &mut Node, path: Nibbles) -> bool {
    match node {
        Node::Empty => false,
        Node::Leaf(leaf) => {
            if leaf.key != path {
                return false;
            }
            *node = Node::Empty;
            true
        }
        Node::Extension(ext) => {
            if !path.starts_with(&ext.key) {
                return false;
            }
            let removed = remove(&mut ext.child, path.slice(ext.key.len()..));
            if removed {
                ext.cache = None;
                let old = std::mem::take(node);
                let Node::Extension(old) = old else {
                    unreachable!("matched an extension above")
                };
                *node = join_prefix(old.key, old.child);
            }
            removed
        }
        Node::Branch(branch) => {
            let index = path.get_unchecked(0) as usize;
            let removed = remove(&mut branch.children[index], path.slice(1..));
            if !removed {
                return false;
            }
            branch.cache = None;
            let mut live = branch
                .children
                .iter()
                .enumerate()
                .filter(|(_, c)| !matches!(c, Node::Empty));
            let first = live.next().map(|(i, _)| i);
            let more = live.next().is_some();
            if let (Some(only), false) = (first, more) {
                let child = std::mem::take(&mut branch.children[only]);
                *node = join_prefix(nibble(only as u8), child);
            }
            true
        }
    }
}

/// Puts `prefix` in front of `child`, merging it into a leaf or extension so
/// that the trie stays in canonical form.
fn join_prefix(prefix: Nibbles, child: Node) -> Node {
    match child {
        Node::Empty => Node::Empty,
        Node::Leaf(mut leaf) => {
            leaf.key = prefix.join(&leaf.key);
            leaf.cache = None;
            Node::Leaf(leaf)
        }
        Node::Extension(mut ext) => {
            ext.key = prefix.join(&ext.key);
            ext.cache = None;
            Node::Extension(ext)
        }
        branch @ Node::Branch(_) => new_extension(prefix, branch),
    }
}

fn cached(node: &Node) -> RlpNode {
    let cache = match node {
        Node::Empty => None,
        // A leaf under an imported branch is hashed when first needed.
        Node::Leaf(leaf) => Some(leaf.cache.clone().unwrap_or_else(|| {
            LeafNodeRef::new(&leaf.key, &leaf.value).rlp(&mut Vec::with_capacity(128))
        })),
        Node::Extension(ext) => ext.cache.clone(),
        Node::Branch(branch) => branch.cache.clone(),
    };
    cache.expect("rlp_node() refreshes every cache before proofs are built")
}

/// The RLP encoding of a node whose caches are fresh (not `Empty`).
fn encode_node(node: &Node, buf: &mut Vec<u8>) -> Bytes {
    buf.clear();
    match node {
        Node::Empty => {}
        Node::Leaf(leaf) => {
            LeafNodeRef::new(&leaf.key, &leaf.value).rlp(buf);
        }
        Node::Extension(ext) => {
            ExtensionNodeRef::new(&ext.key, &cached(&ext.child)).rlp(buf);
        }
        Node::Branch(branch) => {
            let (stack, mask) = branch_stack(branch);
            BranchNodeRef::new(&stack, mask).rlp(buf);
        }
    }
    Bytes::copy_from_slice(buf)
}

/// A branch's child references, on the stack.
type ChildRefs = arrayvec::ArrayVec<RlpNode, 16>;

/// Starts loading the lines of `node` that hold its cached reference (it
/// may straddle two: a leaf's does).
#[inline]
fn prefetch_cache(node: &Node) {
    let cache = match node {
        Node::Empty => return,
        Node::Leaf(leaf) => &leaf.cache,
        Node::Extension(ext) => &ext.cache,
        Node::Branch(branch) => &branch.cache,
    };
    let first = std::ptr::from_ref(cache).cast::<i8>();
    let last = first.wrapping_add(std::mem::size_of::<Option<RlpNode>>() - 1);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing into the program and
    // cannot fault; both addresses are inside a live node anyway.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(first);
        _mm_prefetch::<_MM_HINT_T0>(last);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (first, last);
}

fn branch_stack(branch: &Branch) -> (ChildRefs, TrieMask) {
    let mut stack = ChildRefs::new();
    let mut mask = TrieMask::default();
    for (i, child) in branch.children.iter().enumerate() {
        if !matches!(child, Node::Empty) {
            mask.set_bit(i as u8);
            stack.push(cached(child));
        }
    }
    // A branch with one child is collapsed into its parent at removal.
    assert!(stack.len() >= 2, "a branch has at least two children");
    (stack, mask)
}

/// [`rlp_node`] that stops (returning `None`) once `budget` nodes were hashed.
fn rlp_node_limited(node: &mut Node, buf: &mut Vec<u8>, budget: &mut usize) -> Option<RlpNode> {
    match node {
        Node::Empty => Some(rlp_node(node, buf)),
        Node::Leaf(leaf) if leaf.cache.is_some() => leaf.cache.clone(),
        Node::Extension(ext) if ext.cache.is_some() => ext.cache.clone(),
        Node::Branch(branch) if branch.cache.is_some() => branch.cache.clone(),
        Node::Leaf(_) => {
            *budget = budget.checked_sub(1)?;
            Some(rlp_node(node, buf))
        }
        Node::Extension(ext) => {
            rlp_node_limited(&mut ext.child, buf, budget)?;
            *budget = budget.checked_sub(1)?;
            Some(rlp_node(node, buf))
        }
        Node::Branch(branch) => {
            for child in branch.children.iter_mut() {
                rlp_node_limited(child, buf, budget)?;
            }
            *budget = budget.checked_sub(1)?;
            Some(rlp_node(node, buf))
        }
    }
}

/// Runs `work` on every item, the items dealt round-robin into `threads`
/// shares (so every thread gets work while there are enough items): the
/// first share on this thread, each other non-empty one on a
/// scoped helper that calls `on_start` with its index (1 and up) first.
pub fn in_shares<T: Send>(
    items: Vec<T>,
    threads: usize,
    on_start: &(dyn Fn(usize) + Sync),
    work: impl Fn(T) + Sync,
) {
    map_in_shares(items, threads, on_start, work);
}

/// [`in_shares`], returning `work`'s results: this thread's share first,
/// then each helper's (not in the items' order).
pub fn map_in_shares<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    on_start: &(dyn Fn(usize) + Sync),
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.max(1);
    let mut shares: Vec<Vec<T>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        shares[i % threads].push(item);
    }
    shares.retain(|share| !share.is_empty());
    let work = &work;
    std::thread::scope(|scope| {
        let mut shares = shares.into_iter();
        let mine = shares.next().unwrap_or_default();
        let helpers: Vec<_> = shares
            .enumerate()
            .map(|(index, share)| {
                scope.spawn(move || {
                    on_start(index + 1);
                    share.into_iter().map(work).collect::<Vec<R>>()
                })
            })
            .collect();
        let mut out: Vec<R> = mine.into_iter().map(work).collect();
        for helper in helpers {
            out.extend(
                helper
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        out
    })
}

/// True when `node`'s reference is cached (or it is empty).
fn is_hashed(node: &Node) -> bool {
    match node {
        Node::Empty => true,
        Node::Leaf(leaf) => leaf.cache.is_some(),
        Node::Extension(ext) => ext.cache.is_some(),
        Node::Branch(branch) => branch.cache.is_some(),
    }
}

fn rlp_node(node: &mut Node, buf: &mut Vec<u8>) -> RlpNode {
    match node {
        Node::Empty => RlpNode::from_rlp(&[alloy_rlp::EMPTY_STRING_CODE]),
        Node::Leaf(leaf) => {
            if let Some(cache) = &leaf.cache {
                return cache.clone();
            }
            buf.clear();
            let out = LeafNodeRef::new(&leaf.key, &leaf.value).rlp(buf);
            leaf.cache = Some(out.clone());
            out
        }
        Node::Extension(ext) => {
            if let Some(cache) = &ext.cache {
                return cache.clone();
            }
            let child = rlp_node(&mut ext.child, buf);
            buf.clear();
            let out = ExtensionNodeRef::new(&ext.key, &child).rlp(buf);
            ext.cache = Some(out.clone());
            out
        }
        Node::Branch(branch) => {
            if let Some(cache) = &branch.cache {
                return cache.clone();
            }
            // Most children are unchanged, their references cached in
            // nodes that are cold after a long block: ask for all of
            // those lines at once rather than wait for each in turn.
            for child in &branch.children {
                prefetch_cache(child);
            }
            let mut stack = ChildRefs::new();
            let mut mask = TrieMask::default();
            for (i, child) in branch.children.iter_mut().enumerate() {
                if !matches!(child, Node::Empty) {
                    mask.set_bit(i as u8);
                    stack.push(rlp_node(child, buf));
                }
            }
            assert!(stack.len() >= 2, "a branch has at least two children");
            buf.clear();
            let out = BranchNodeRef::new(&stack, mask).rlp(buf);
            branch.cache = Some(out.clone());
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::U256;
    use alloy_trie::{HashBuilder, proof::verify_proof};
    use std::collections::BTreeMap;

    fn reference_root(entries: &BTreeMap<B256, Vec<u8>>) -> B256 {
        let mut hb = HashBuilder::default();
        for (k, v) in entries {
            hb.add_leaf(Nibbles::unpack(k), v);
        }
        hb.root()
    }

    fn key(i: u64) -> B256 {
        keccak256(i.to_be_bytes())
    }

    fn value(i: u64, round: u64) -> Vec<u8> {
        alloy_rlp::encode(U256::from(i * 1_000 + round + 1))
    }

    #[test]
    fn a_removal_sibling_is_the_node_a_collapsing_branch_merges() {
        let at = |nibble: u8| {
            let mut key = B256::ZERO;
            key.0[0] = nibble << 4;
            key
        };
        let mut trie = Trie::new();
        for n in [1, 2] {
            trie.insert(at(n), value(u64::from(n), 0));
        }
        // Two leaves under the root branch: removing one merges the other.
        let sibling = trie.removal_sibling(at(1)).expect("the branch collapses");
        assert_eq!(Some(&sibling), trie.proof(at(2)).last());
        assert_eq!(trie.removal_sibling(at(3)), None, "not in the trie");
        // Three: the branch stays.
        trie.insert(at(3), value(3, 0));
        assert_eq!(trie.removal_sibling(at(1)), None);
    }

    #[test]
    fn stepwise_hashing_gives_the_same_root() {
        let mut trie = Trie::new();
        let mut reference = BTreeMap::new();
        for i in 0..2_000u64 {
            trie.insert(key(i), value(i, 0));
            reference.insert(key(i), value(i, 0));
        }
        let mut steps = 0;
        let root = loop {
            steps += 1;
            if let Some(root) = trie.root_step(64) {
                break root;
            }
        };
        assert!(steps > 10, "work was spread over {steps} steps");
        assert_eq!(root, reference_root(&reference));
        // Ordered-trie keys (RLP of the index) are prefix-free too.
        let items: Vec<Vec<u8>> = (0..300u64)
            .map(|i| alloy_rlp::encode(U256::from(i * 7 + 1)))
            .collect();
        let mut ordered = Trie::new();
        for (i, item) in items.iter().enumerate() {
            ordered.insert_bytes(&alloy_rlp::encode(i), item.clone());
        }
        assert_eq!(
            ordered.root(),
            alloy_trie::root::ordered_trie_root_encoded(&items)
        );
    }

    #[test]
    fn parallel_hashing_gives_the_same_root_through_updates() {
        let mut trie = Trie::new();
        let mut reference = BTreeMap::new();
        let started = std::sync::atomic::AtomicUsize::new(0);
        let count = |_: usize| {
            started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        for round in 0..4u64 {
            // Inserts, updates and (from round 2) removals, then a root on
            // 1, 2, 3 and 5 threads in turn.
            for i in (round * 500)..(round * 500 + 3_000) {
                trie.insert(key(i), value(i, round));
                reference.insert(key(i), value(i, round));
            }
            if round >= 2 {
                for i in (0..3_000).step_by(7) {
                    trie.remove(key(i));
                    reference.remove(&key(i));
                }
            }
            let threads = [1, 2, 3, 5][round as usize];
            assert_eq!(
                trie.root_parallel(threads, &count),
                reference_root(&reference),
                "round {round}, {threads} threads"
            );
        }
        assert!(started.into_inner() >= 1 + 2 + 4, "the helpers ran");
        // A trie whose top is one leaf, or that is unchanged, needs no helper.
        let mut one = Trie::new();
        one.insert(key(1), value(1, 0));
        assert_eq!(one.root_parallel(4, &|_| panic!("no helper")), one.root());
        assert_eq!(trie.root_parallel(4, &|_| panic!("no helper")), trie.root());
    }

    #[test]
    fn hashing_the_subtries_reports_each_one_and_leaves_the_root_to_compute() {
        for threads in [1, 3] {
            let mut trie = Trie::new();
            let mut reference = BTreeMap::new();
            for i in 0..2_000 {
                trie.insert(key(i), value(i, 0));
                reference.insert(key(i), value(i, 0));
            }
            let reports = std::sync::Mutex::new(Vec::new());
            trie.hash_subtries(threads, &|_| {}, &|done, of| {
                reports.lock().unwrap().push((done, of));
            });
            let mut reports = reports.into_inner().unwrap();
            assert_eq!(reports[0], (0, 16), "{threads} threads: told first");
            reports.sort_unstable();
            assert_eq!(
                reports,
                (0..=16).map(|done| (done, 16)).collect::<Vec<_>>(),
                "{threads} threads: each subtrie once"
            );
            assert_eq!(trie.root(), reference_root(&reference));
            // Nothing is left to hash: no report but the first.
            let again = std::sync::Mutex::new(Vec::new());
            trie.hash_subtries(threads, &|_| panic!("no helper"), &|done, of| {
                again.lock().unwrap().push((done, of));
            });
            assert!(again.into_inner().unwrap().is_empty());
        }
    }

    #[test]
    fn a_trie_built_from_entries_is_the_trie_of_inserts() {
        // Keys sharing long prefixes (extensions deep down) and hashed keys.
        let near = |i: u64| {
            let mut k = B256::ZERO;
            k.0[24..].copy_from_slice(&i.to_be_bytes());
            k
        };
        for count in [0u64, 1, 2, 3, 17, 2_000] {
            let mut entries = Vec::new();
            let mut reference = BTreeMap::new();
            let mut inserted = Trie::new();
            for i in 0..count {
                for k in [key(i), near(i * 3)] {
                    entries.push((k, value(i, 0)));
                    inserted.insert(k, value(i, 0));
                    reference.insert(k, value(i, 0));
                }
            }
            // An empty value is left out.
            entries.push((key(u64::MAX), Vec::new()));
            let mut on_threads = Trie::from_entries_on(entries.clone(), 3);
            let mut built = Trie::from_entries(entries);
            assert_eq!(on_threads.len(), reference.len(), "{count}");
            assert_eq!(on_threads.root(), reference_root(&reference), "{count}");
            assert_eq!(built.len(), reference.len(), "{count}");
            assert_eq!(built.root(), reference_root(&reference), "{count}");
            assert_eq!(built.root(), inserted.root(), "{count}");
            for (k, v) in &reference {
                assert_eq!(built.get(*k), Some(v.as_slice()));
                assert_eq!(built.proof(*k), inserted.proof(*k));
            }
            // And it updates like any other trie.
            if count > 3 {
                built.remove(key(1));
                inserted.remove(key(1));
                built.insert(key(count + 5), value(5, 5));
                inserted.insert(key(count + 5), value(5, 5));
                assert_eq!(built.root(), inserted.root());
            }
        }
        // Every key under one top nibble: no top branch of one child.
        let entries: Vec<_> = (0..50u64).map(|i| (near(i), value(i, 0))).collect();
        let reference: BTreeMap<_, _> = entries.iter().cloned().collect();
        for threads in [1, 4] {
            let mut built = Trie::from_entries_on(entries.clone(), threads);
            assert_eq!(built.root(), reference_root(&reference));
            assert_eq!(built.len(), 50);
        }
    }

    #[test]
    fn empty_trie_has_empty_root() {
        assert_eq!(Trie::new().root(), EMPTY_ROOT_HASH);
    }

    #[test]
    fn incremental_root_matches_rebuild_through_inserts_updates_and_removals() {
        let mut trie = Trie::new();
        let mut reference = BTreeMap::new();
        for round in 0..6u64 {
            for i in 0..400u64 {
                // Every round touches a different, overlapping subset.
                if (i + round) % 3 == 0 {
                    trie.remove(key(i));
                    reference.remove(&key(i));
                } else if (i * 7 + round) % 4 != 0 {
                    trie.insert(key(i), value(i, round));
                    reference.insert(key(i), value(i, round));
                }
            }
            assert_eq!(trie.len(), reference.len());
            assert_eq!(trie.root(), reference_root(&reference), "round {round}");
        }
        for k in reference.keys().copied().collect::<Vec<_>>() {
            trie.remove(k);
        }
        assert_eq!(trie.root(), EMPTY_ROOT_HASH);
        assert!(trie.is_empty());
    }

    #[test]
    fn single_leaf_root_is_hashed_even_when_short() {
        let mut trie = Trie::new();
        trie.insert(key(1), vec![0x01]);
        let mut reference = BTreeMap::new();
        reference.insert(key(1), vec![0x01]);
        assert_eq!(trie.root(), reference_root(&reference));
    }

    #[test]
    fn proofs_verify_for_present_and_absent_keys() {
        let mut trie = Trie::new();
        for i in 0..300u64 {
            trie.insert(key(i), value(i, 0));
        }
        let root = trie.root();
        for i in [0u64, 1, 17, 299] {
            let proof = trie.proof(key(i));
            verify_proof(root, Nibbles::unpack(key(i)), Some(value(i, 0)), &proof).unwrap();
            assert_eq!(trie.get(key(i)), Some(value(i, 0).as_slice()));
        }
        for i in [300u64, 1_000, 77_777] {
            let proof = trie.proof(key(i));
            verify_proof(root, Nibbles::unpack(key(i)), None, &proof).unwrap();
            assert_eq!(trie.get(key(i)), None);
        }
    }
}
