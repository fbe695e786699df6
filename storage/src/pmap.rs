//! A persistent hash map with compact nodes, for the hot state tables.
//!
//! It is a CHAMP (compressed hash-array mapped prefix tree): each node
//! takes 5 bits of the key's 64-bit hash and keeps two bitmaps, one for the
//! entries stored in the node itself and one for its child nodes, with the
//! entries and the children in two arrays of exactly the size the bitmaps
//! say. An entry sits in the highest node where its hash prefix is alone, so
//! no slot is allocated empty. Keys whose 64 hash bits are all equal share a
//! collision node (a plain list) below the last level.
//!
//! Cloning the map is O(1): nodes are shared through `Arc`, and a write
//! copies only the nodes on its path that a snapshot still shares
//! (`Arc::make_mut`); nodes only the writer holds are changed in place. The
//! map is kept in canonical form on removal (a child left with one entry and
//! no children is folded into its parent), so deletes do not leave chains.
//!
//! Per entry this costs the entry itself plus a share of a node header
//! (two bitmaps and two `Vec`s) and of the allocator's rounding: measured
//! at 1M (`fulmen-storage-bench state`), 144 B per account (92 raw) and 130
//! per slot (84 raw), against about 440 for `imbl`'s HAMT, whose nodes
//! allocate all 32 slots at the size of an inline entry.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

/// Hash bits taken per level.
const BITS: u32 = 5;
/// Children (and entry slots) per node.
const MASK: u64 = (1 << BITS) - 1;
/// A node at this shift or deeper has used up the hash: it is a collision
/// list.
const COLLISION_SHIFT: u32 = 64;

#[derive(Clone)]
struct Node<K, V> {
    /// Slots holding an entry, in `data` in slot order.
    datamap: u32,
    /// Slots holding a child node, in `children` in slot order.
    nodemap: u32,
    data: Vec<(K, V)>,
    children: Vec<Arc<Node<K, V>>>,
}

impl<K, V> Node<K, V> {
    const fn empty() -> Self {
        Self {
            datamap: 0,
            nodemap: 0,
            data: Vec::new(),
            children: Vec::new(),
        }
    }

    fn is_single_entry(&self) -> bool {
        self.children.is_empty() && self.data.len() == 1
    }
}

/// The slot of `hash` at `shift`, as a one-bit mask.
fn slot_bit(hash: u64, shift: u32) -> u32 {
    1 << ((hash >> shift) & MASK)
}

/// Position of `bit`'s item among the items `map` marks.
fn index(map: u32, bit: u32) -> usize {
    (map & (bit - 1)).count_ones() as usize
}

/// Inserts `item` at `at` growing the vector by exactly one slot, so nodes
/// carry no spare capacity.
fn insert_exact<T>(items: &mut Vec<T>, at: usize, item: T) {
    if items.len() == items.capacity() {
        items.reserve_exact(1);
    }
    items.insert(at, item);
}

/// Removes the item at `at` and gives its slot back, as [`insert_exact`].
fn remove_exact<T>(items: &mut Vec<T>, at: usize) -> T {
    let item = items.remove(at);
    items.shrink_to_fit();
    item
}

/// A persistent (structurally shared) hash map; see the module docs.
pub struct PMap<K, V, S> {
    root: Arc<Node<K, V>>,
    len: usize,
    hasher: S,
}

impl<K, V, S: Clone> Clone for PMap<K, V, S> {
    fn clone(&self) -> Self {
        Self {
            root: Arc::clone(&self.root),
            len: self.len,
            hasher: self.hasher.clone(),
        }
    }
}

impl<K, V, S: Default> Default for PMap<K, V, S> {
    fn default() -> Self {
        Self {
            root: Arc::new(Node::empty()),
            len: 0,
            hasher: S::default(),
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug, S> std::fmt::Debug for PMap<K, V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K, V, S> PMap<K, V, S> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, in the tree's order (a node's own entries before its
    /// children's; not sorted, and not the same from one process to the next).
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            stack: vec![(&*self.root, 0)],
            data: [].iter(),
            left: self.len,
        }
    }

    /// The entries of share `share` of `shares` (under every `shares`-th
    /// child of the root, and the root's own in share 0): threads that
    /// each take one share visit every entry once between them.
    pub fn iter_share(&self, share: usize, shares: usize) -> impl Iterator<Item = (&K, &V)> {
        let own = if share == 0 {
            self.root.data.iter()
        } else {
            [].iter()
        };
        let children = self
            .root
            .children
            .iter()
            .enumerate()
            .filter(move |(i, _)| i % shares.max(1) == share)
            .flat_map(|(_, child)| Iter {
                stack: vec![(&**child, 0)],
                data: [].iter(),
                // Unknown: `Iter` only reports it.
                left: 0,
            });
        own.map(|(k, v)| (k, v)).chain(Unsized(children))
    }
}

/// A root slot and its entries' (level-ordered hash, index) pairs.
type SlotRun<'a> = (usize, &'a mut [(u64, usize)]);

/// An iterator whose length is not known ([`PMap::iter_share`]).
struct Unsized<I>(I);

impl<I: Iterator> Iterator for Unsized<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

impl<K, V, S> PMap<K, V, S>
where
    K: Hash + Eq + Clone,
    V: Clone,
    S: BuildHasher,
{
    /// The value at `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        let hash = self.hasher.hash_one(key);
        let mut node = &*self.root;
        let mut shift = 0;
        loop {
            if shift >= COLLISION_SHIFT {
                return node.data.iter().find(|(k, _)| k == key).map(|(_, v)| v);
            }
            let bit = slot_bit(hash, shift);
            if node.datamap & bit != 0 {
                let (k, v) = &node.data[index(node.datamap, bit)];
                return (k == key).then_some(v);
            }
            if node.nodemap & bit == 0 {
                return None;
            }
            node = &node.children[index(node.nodemap, bit)];
            shift += BITS;
        }
    }

    /// True when `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let hash = self.hasher.hash_one(&key);
        let old = insert(&mut self.root, &self.hasher, hash, 0, key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Inserts `make()` at `key` unless `key` already has a value.
    pub fn insert_if_absent(&mut self, key: K, make: impl FnOnce() -> V) {
        if !self.contains_key(&key) {
            self.insert(key, make());
        }
    }

    /// A map of `entries` built in one pass (a later entry replaces an
    /// earlier one with the same key): the entries are sorted in the
    /// tree's order and every node is made once, at its final size, which
    /// is several times faster than inserting them one by one (boot loads a
    /// checkpoint this way).
    pub fn from_entries(entries: Vec<(K, V)>, hasher: S) -> Self {
        let mut order: Vec<(u64, usize)> = entries
            .iter()
            .enumerate()
            .map(|(at, (key, _))| (level_order(hasher.hash_one(key)), at))
            .collect();
        order.sort_unstable();
        let (root, len) = match build(&order, &entries, 0) {
            Built::Node(node, len) => (node, len),
            Built::Single(entry) => (
                Node {
                    datamap: slot_bit(hasher.hash_one(&entry.0), 0),
                    data: vec![entry],
                    ..Node::empty()
                },
                1,
            ),
        };
        Self {
            root: Arc::new(root),
            len,
            hasher,
        }
    }

    /// [`Self::from_entries`] on `threads` threads: the entries are dealt
    /// by their slot in the root, and the root's children are sorted and
    /// built on a share of the threads each (boot, before the node serves).
    pub fn from_entries_on(entries: Vec<(K, V)>, hasher: S, threads: usize) -> Self
    where
        K: Send + Sync,
        V: Send + Sync,
        S: Sync,
    {
        if threads <= 1 || entries.len() < 4096 {
            return Self::from_entries(entries, hasher);
        }
        let (mut order, bounds) = dealt_by_root_slot(&entries, &hasher, threads);
        // The runs of the root's slots, dealt round-robin to the threads.
        let mut runs: Vec<SlotRun<'_>> = Vec::new();
        let mut rest = order.as_mut_slice();
        for slot in 0..1 << BITS {
            let (run, tail) = rest.split_at_mut(bounds[slot + 1] - bounds[slot]);
            rest = tail;
            if !run.is_empty() {
                runs.push((slot, run));
            }
        }
        let mut shares: Vec<Vec<SlotRun<'_>>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, run) in runs.into_iter().enumerate() {
            shares[i % threads].push(run);
        }
        let entries = &entries;
        let mut built: Vec<(usize, Built<K, V>)> = std::thread::scope(|scope| {
            let helpers: Vec<_> = shares
                .into_iter()
                .map(|share| {
                    scope.spawn(move || {
                        share
                            .into_iter()
                            .map(|(slot, run)| {
                                run.sort_unstable();
                                (slot, build(run, entries, BITS))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            helpers
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        built.sort_unstable_by_key(|(slot, _)| *slot);
        let (mut root, mut len) = (Node::empty(), 0);
        for (slot, child) in built {
            len += child.place(&mut root, 1 << slot);
        }
        root.data.shrink_to_fit();
        root.children.shrink_to_fit();
        Self {
            root: Arc::new(root),
            len,
            hasher,
        }
    }

    /// Removes `key`; returns its value. A key that is absent copies no node.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        if !self.contains_key(key) {
            return None;
        }
        let hash = self.hasher.hash_one(key);
        let removed = remove(&mut self.root, hash, 0, key);
        assert!(removed.is_some(), "a key found is removed");
        self.len -= 1;
        removed
    }
}

/// The hash's 5-bit slots from the first level (most significant) to the
/// last (its 4 top bits least significant): sorting by this puts entries
/// in the order the tree holds them.
fn level_order(hash: u64) -> u64 {
    let mut key = 0u64;
    let mut shift = 0;
    while shift + BITS <= COLLISION_SHIFT - 4 {
        key = (key << BITS) | ((hash >> shift) & MASK);
        shift += BITS;
    }
    (key << 4) | (hash >> shift)
}

/// The slot at `shift` of a hash given in [`level_order`].
fn level_order_slot(key: u64, shift: u32) -> u32 {
    let level = shift / BITS;
    let slot = if shift + BITS <= COLLISION_SHIFT - 4 {
        (key >> (COLLISION_SHIFT - BITS * (level + 1))) & MASK
    } else {
        key & 0xf
    };
    1 << slot
}

/// The level-ordered hashes of `entries` with their indexes, hashed on
/// `threads` threads and dealt by their slot in the root (a counting sort),
/// with where each slot's run starts (and, last, where the last one ends).
fn dealt_by_root_slot<K: Hash + Sync, V: Sync, S: BuildHasher + Sync>(
    entries: &[(K, V)],
    hasher: &S,
    threads: usize,
) -> (Vec<(u64, usize)>, Vec<usize>) {
    let root_slot = |key: u64| (key >> (64 - BITS)) as usize;
    // Hashed in shares; then dealt by root slot (a counting sort), so
    // that each slot's run is sorted and built on its own.
    let chunk = entries.len().div_ceil(threads);
    let hashed: Vec<Vec<(u64, usize)>> = std::thread::scope(|scope| {
        let helpers: Vec<_> = entries
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, (key, _))| (level_order(hasher.hash_one(key)), c * chunk + i))
                        .collect()
                })
            })
            .collect();
        helpers
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut starts = [0usize; 1 << BITS];
    for part in &hashed {
        for (key, _) in part {
            starts[root_slot(*key)] += 1;
        }
    }
    let mut next = 0;
    for start in &mut starts {
        let count = *start;
        *start = next;
        next += count;
    }
    let bounds: Vec<usize> = starts.iter().copied().chain([next]).collect();
    let mut order = vec![(0u64, 0usize); next];
    for part in hashed {
        for item in part {
            let slot = root_slot(item.0);
            order[starts[slot]] = item;
            starts[slot] += 1;
        }
    }
    (order, bounds)
}

/// What [`build`] makes of a run of entries.
enum Built<K, V> {
    /// One distinct key: it belongs in the parent.
    Single((K, V)),
    /// A node holding this many distinct keys.
    Node(Node<K, V>, usize),
}

impl<K, V> Built<K, V> {
    /// Puts this in `parent` at slot `bit` (after the slots before it);
    /// returns the keys it holds.
    fn place(self, parent: &mut Node<K, V>, bit: u32) -> usize {
        match self {
            Self::Single(entry) => {
                parent.datamap |= bit;
                parent.data.push(entry);
                1
            }
            Self::Node(child, n) => {
                parent.nodemap |= bit;
                parent.children.push(Arc::new(child));
                n
            }
        }
    }
}

/// Builds the subtree at `shift` of `order` (level-ordered hashes with
/// indexes into `entries`; equal keys are adjacent, in input order, and the
/// last one wins).
fn build<K: Eq + Clone, V: Clone>(
    order: &[(u64, usize)],
    entries: &[(K, V)],
    shift: u32,
) -> Built<K, V> {
    if shift >= COLLISION_SHIFT || order.len() == 1 {
        let mut list: Vec<(K, V)> = Vec::new();
        for (_, at) in order {
            let (key, value) = &entries[*at];
            match list.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value.clone(),
                None => list.push((key.clone(), value.clone())),
            }
        }
        if list.len() == 1 {
            return Built::Single(list.pop().expect("one entry"));
        }
        let count = list.len();
        list.shrink_to_fit();
        return Built::Node(
            Node {
                data: list,
                ..Node::empty()
            },
            count,
        );
    }
    let mut node = Node::empty();
    let mut count = 0;
    let mut rest = order;
    while let Some((first, _)) = rest.first() {
        let bit = level_order_slot(*first, shift);
        let run = rest
            .iter()
            .position(|(key, _)| level_order_slot(*key, shift) != bit)
            .unwrap_or(rest.len());
        count += build(&rest[..run], entries, shift + BITS).place(&mut node, bit);
        rest = &rest[run..];
    }
    node.data.shrink_to_fit();
    node.children.shrink_to_fit();
    if shift > 0 && node.is_single_entry() {
        return Built::Single(node.data.pop().expect("one entry"));
    }
    Built::Node(node, count)
}

fn insert<K, V, S>(
    node: &mut Arc<Node<K, V>>,
    hasher: &S,
    hash: u64,
    shift: u32,
    key: K,
    value: V,
) -> Option<V>
where
    K: Hash + Eq + Clone,
    V: Clone,
    S: BuildHasher,
{
    let node = Arc::make_mut(node);
    if shift >= COLLISION_SHIFT {
        if let Some((_, v)) = node.data.iter_mut().find(|(k, _)| *k == key) {
            return Some(std::mem::replace(v, value));
        }
        let end = node.data.len();
        insert_exact(&mut node.data, end, (key, value));
        return None;
    }
    let bit = slot_bit(hash, shift);
    if node.datamap & bit != 0 {
        let at = index(node.datamap, bit);
        if node.data[at].0 == key {
            return Some(std::mem::replace(&mut node.data[at].1, value));
        }
        // Two keys in one slot: both move down into a new child.
        let (other_key, other_value) = remove_exact(&mut node.data, at);
        let other_hash = hasher.hash_one(&other_key);
        let child = pair(
            (other_key, other_value, other_hash),
            (key, value, hash),
            shift + BITS,
        );
        node.datamap ^= bit;
        node.nodemap |= bit;
        let at = index(node.nodemap, bit);
        insert_exact(&mut node.children, at, Arc::new(child));
        return None;
    }
    if node.nodemap & bit != 0 {
        let at = index(node.nodemap, bit);
        return insert(
            &mut node.children[at],
            hasher,
            hash,
            shift + BITS,
            key,
            value,
        );
    }
    node.datamap |= bit;
    let at = index(node.datamap, bit);
    insert_exact(&mut node.data, at, (key, value));
    None
}

/// The node at `shift` holding two entries whose hashes agree below it.
fn pair<K, V>(a: (K, V, u64), b: (K, V, u64), shift: u32) -> Node<K, V> {
    if shift >= COLLISION_SHIFT {
        return Node {
            data: vec![(a.0, a.1), (b.0, b.1)],
            ..Node::empty()
        };
    }
    let (bit_a, bit_b) = (slot_bit(a.2, shift), slot_bit(b.2, shift));
    if bit_a == bit_b {
        return Node {
            nodemap: bit_a,
            children: vec![Arc::new(pair(a, b, shift + BITS))],
            ..Node::empty()
        };
    }
    let (first, second) = if bit_a < bit_b { (a, b) } else { (b, a) };
    Node {
        datamap: bit_a | bit_b,
        data: vec![(first.0, first.1), (second.0, second.1)],
        ..Node::empty()
    }
}

/// Removes `key`, which is present below `node`.
fn remove<K, V>(node: &mut Arc<Node<K, V>>, hash: u64, shift: u32, key: &K) -> Option<V>
where
    K: Eq + Clone,
    V: Clone,
{
    let node = Arc::make_mut(node);
    if shift >= COLLISION_SHIFT {
        let at = node.data.iter().position(|(k, _)| k == key)?;
        let (_, value) = node.data.swap_remove(at);
        node.data.shrink_to_fit();
        return Some(value);
    }
    let bit = slot_bit(hash, shift);
    if node.datamap & bit != 0 {
        let at = index(node.datamap, bit);
        if node.data[at].0 != *key {
            return None;
        }
        node.datamap ^= bit;
        return Some(remove_exact(&mut node.data, at).1);
    }
    if node.nodemap & bit == 0 {
        return None;
    }
    let at = index(node.nodemap, bit);
    let removed = remove(&mut node.children[at], hash, shift + BITS, key);
    if node.children[at].is_single_entry() {
        // Canonical form: a lone entry lives in its parent.
        let child = remove_exact(&mut node.children, at);
        let entry = match Arc::try_unwrap(child) {
            Ok(mut child) => child.data.pop(),
            Err(shared) => shared.data.first().cloned(),
        };
        node.nodemap ^= bit;
        node.datamap |= bit;
        let at = index(node.datamap, bit);
        insert_exact(
            &mut node.data,
            at,
            entry.expect("a single-entry node has its entry"),
        );
    }
    removed
}

/// Iterator over a [`PMap`]'s entries.
pub struct Iter<'a, K, V> {
    /// Nodes whose children are still to visit, with the next child.
    stack: Vec<(&'a Node<K, V>, usize)>,
    data: std::slice::Iter<'a, (K, V)>,
    left: usize,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, v)) = self.data.next() {
                self.left = self.left.saturating_sub(1);
                return Some((k, v));
            }
            let (node, next) = self.stack.last_mut()?;
            let node: &'a Node<K, V> = node;
            if *next == 0 {
                self.data = node.data.iter();
            }
            match node.children.get(*next) {
                Some(child) => {
                    *next += 1;
                    self.stack.push((child, 0));
                }
                None => {
                    self.stack.pop();
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::{BuildHasherDefault, Hasher};

    use super::*;

    /// A hasher that keeps only `BITS_KEPT` low bits of the key's own hash,
    /// so that tests reach deep nodes and collision lists.
    #[derive(Default, Clone)]
    struct Narrow<const BITS_KEPT: u32>(u64);

    impl<const BITS_KEPT: u32> Hasher for Narrow<BITS_KEPT> {
        fn finish(&self) -> u64 {
            let mixed = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            if BITS_KEPT >= 64 {
                mixed
            } else {
                // The high bits of the product are well mixed; keep them at
                // the top of the 64 bits and zero the rest, so that keys
                // agree on all low (early) levels.
                (mixed >> (64 - BITS_KEPT)) << (64 - BITS_KEPT)
            }
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ *b as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Random inserts, overwrites and removes against `HashMap`, with
    /// snapshots taken along the way that must never change afterwards.
    fn against_std<S: BuildHasher + Default + Clone>(seed: u64, keys: u64, ops: usize) {
        let mut rng = Rng(seed);
        let mut map: PMap<u64, u64, S> = PMap::default();
        let mut model: HashMap<u64, u64> = HashMap::new();
        let mut snapshots = Vec::new();
        for op in 0..ops {
            let key = rng.next() % keys;
            match rng.next() % 10 {
                0..=5 => {
                    let value = rng.next();
                    assert_eq!(map.insert(key, value), model.insert(key, value));
                }
                6..=8 => assert_eq!(map.remove(&key), model.remove(&key)),
                _ => assert_eq!(map.get(&key), model.get(&key)),
            }
            assert_eq!(map.len(), model.len());
            if op % 97 == 0 && snapshots.len() < 40 {
                snapshots.push((map.clone(), model.clone()));
            }
        }
        let check = |map: &PMap<u64, u64, S>, model: &HashMap<u64, u64>| {
            assert_eq!(map.len(), model.len());
            let listed: HashMap<u64, u64> = map.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(listed.len(), map.len(), "each key is listed once");
            assert_eq!(&listed, model);
            for key in 0..keys {
                assert_eq!(map.get(&key), model.get(&key), "key {key}");
            }
        };
        check(&map, &model);
        for (snapshot, model) in &snapshots {
            check(snapshot, model);
        }
        // Removing everything leaves the empty canonical root.
        for key in 0..keys {
            map.remove(&key);
        }
        assert!(map.is_empty());
        assert!(map.root.data.is_empty() && map.root.children.is_empty());
    }

    /// `from_entries` makes the same map as inserting one by one: same
    /// entries, same (canonical) shape, last duplicate wins; and the result
    /// takes writes like any other map.
    fn bulk_matches_inserts<S: BuildHasher + Default + Clone>(seed: u64, keys: u64, count: usize) {
        fn shape<K, V>(node: &Node<K, V>, out: &mut Vec<(u32, u32, usize)>) {
            out.push((node.datamap, node.nodemap, node.data.len()));
            for child in &node.children {
                shape(child, out);
            }
        }
        let mut rng = Rng(seed);
        let entries: Vec<(u64, u64)> = (0..count)
            .map(|_| (rng.next() % keys, rng.next()))
            .collect();
        let hasher = S::default();
        let mut one_by_one: PMap<u64, u64, S> = PMap {
            root: Arc::new(Node::empty()),
            len: 0,
            hasher: hasher.clone(),
        };
        for (k, v) in &entries {
            one_by_one.insert(*k, *v);
        }
        let mut bulk = PMap::from_entries(entries, hasher);
        assert_eq!(bulk.len(), one_by_one.len());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        shape(&bulk.root, &mut a);
        shape(&one_by_one.root, &mut b);
        assert_eq!(a, b, "the same shape");
        for key in 0..keys {
            assert_eq!(bulk.get(&key), one_by_one.get(&key));
        }
        for key in (0..keys).step_by(2) {
            assert_eq!(bulk.remove(&key), one_by_one.remove(&key));
            bulk.insert(key + keys, key);
            assert_eq!(bulk.get(&(key + keys)), Some(&key));
        }
    }

    #[test]
    fn bulk_build_matches_inserts() {
        for seed in 1..4 {
            for count in [0, 1, 2, 3, 50, 5_000] {
                bulk_matches_inserts::<BuildHasherDefault<Narrow<64>>>(seed, 4_000, count);
                bulk_matches_inserts::<BuildHasherDefault<Narrow<12>>>(seed, 4_000, count);
                bulk_matches_inserts::<BuildHasherDefault<Narrow<3>>>(seed, 100, count);
            }
        }
    }

    #[test]
    fn matches_a_hash_map_with_snapshots() {
        for seed in 1..6 {
            against_std::<BuildHasherDefault<Narrow<64>>>(seed, 2_000, 20_000);
        }
    }

    #[test]
    fn deep_paths_and_collision_lists() {
        // 12 hash bits: keys share long prefixes (deep nodes); 3 bits: most
        // keys collide on all 64 bits and live in collision lists.
        for seed in 1..4 {
            against_std::<BuildHasherDefault<Narrow<12>>>(seed, 3_000, 20_000);
            against_std::<BuildHasherDefault<Narrow<3>>>(seed, 200, 5_000);
        }
    }

    #[test]
    fn a_parallel_bulk_build_is_the_same_map() {
        fn shape<K, V>(node: &Node<K, V>) -> Vec<(u32, u32, usize)> {
            let mut out = vec![(node.datamap, node.nodemap, node.data.len())];
            for child in &node.children {
                out.extend(shape(child));
            }
            out
        }
        type M = PMap<u64, u64, BuildHasherDefault<Narrow<12>>>;
        for count in [4_095u64, 4_096, 20_000] {
            // With duplicates: the later one wins.
            let entries: Vec<(u64, u64)> = (0..count)
                .map(|k| (k, k))
                .chain((0..count).step_by(7).map(|k| (k, k + 1)))
                .collect();
            let one = M::from_entries(entries.clone(), Default::default());
            for threads in [2, 3] {
                let on = M::from_entries_on(entries.clone(), Default::default(), threads);
                assert_eq!(on.len(), one.len());
                assert_eq!(shape(&on.root), shape(&one.root));
                for k in 0..count {
                    assert_eq!(on.get(&k), one.get(&k));
                }
            }
        }
    }

    #[test]
    fn shares_visit_every_entry_once() {
        type M = PMap<u64, u64, BuildHasherDefault<Narrow<64>>>;
        for count in [0u64, 1, 5, 40, 3_000] {
            let map = M::from_entries((0..count).map(|k| (k, k * 2)).collect(), Default::default());
            for shares in [1, 2, 3, 40] {
                let mut seen: Vec<u64> = (0..shares)
                    .flat_map(|share| map.iter_share(share, shares).map(|(k, _)| *k))
                    .collect();
                seen.sort_unstable();
                assert_eq!(seen, (0..count).collect::<Vec<_>>(), "{count} in {shares}");
            }
        }
    }

    #[test]
    fn the_real_hasher() {
        against_std::<foldhash::fast::RandomState>(7, 50_000, 100_000);
    }

    #[test]
    fn canonical_after_removals() {
        // Whatever the order of operations, the same key set has the same
        // shape: build it two ways and compare node counts.
        fn nodes<K, V>(node: &Node<K, V>) -> usize {
            1 + node.children.iter().map(|c| nodes(c)).sum::<usize>()
        }
        type M = PMap<u64, u64, BuildHasherDefault<Narrow<64>>>;
        let mut direct = M::default();
        for key in 0..500 {
            direct.insert(key, key);
        }
        let mut churned = M::default();
        for key in 0..5_000 {
            churned.insert(key, key);
        }
        for key in 500..5_000 {
            churned.remove(&key);
        }
        assert_eq!(nodes(&direct.root), nodes(&churned.root));
    }

    #[test]
    fn nodes_carry_no_spare_capacity() {
        fn spare<K, V>(node: &Node<K, V>) -> usize {
            node.data.capacity() - node.data.len() + node.children.capacity() - node.children.len()
                + node.children.iter().map(|c| spare(c)).sum::<usize>()
        }
        let mut map: PMap<u64, u64, foldhash::fast::RandomState> = PMap::default();
        for key in 0..20_000 {
            map.insert(key, key);
        }
        assert_eq!(spare(&map.root), 0);
        for key in (0..20_000).step_by(3) {
            map.remove(&key);
        }
        assert_eq!(spare(&map.root), 0);
    }
}
