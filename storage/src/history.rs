//! The history store: sealed blocks kept on disk and read back by number or
//! by a hash they carry (the block hash, a transaction hash), so RAM holds
//! only recent blocks however old the chain is.
//!
//! The store knows nothing of blocks' contents: a block is an opaque record
//! with the list of its keys (32-byte hashes) in front. It is derived data:
//! the log is what is durable, and boot compares the store with the chain the
//! log replays to and cuts it where they differ (see `fulmen_exec::recover`).
//!
//! Files in the store's directory:
//!
//! | file | what |
//! |---|---|
//! | `blocks-NNNNNN` | records, appended; a new chunk starts past [`CHUNK_BYTES_MAX`] |
//! | `index` | 16 bytes per block number: chunk u32, offset u32, length u32, CRC-32C u32 (little-endian) |
//! | `keys-SS` | one of [`KEY_SHARDS`] open-addressing tables: 16-byte slots of key u64 (the hash's first 8 bytes, never 0) and value u64 (block << 24 \| index; index [`BLOCK_HASH_INDEX`] for the block hash) |
//! | `HEAD` | how many blocks were synced, the oldest block kept, and each table's slot use, with a CRC; written by tmp + rename |
//!
//! A record is `count u32, count keys of 32 bytes, payload`. A table hit is
//! only a candidate: the reader compares the whole 32-byte key stored in
//! the record it points at, so a collision of first bytes, or an entry left
//! by a cut (its block was written again differently), is skipped.
//!
//! Crashes: records, index entries and slots after the last sync may be
//! lost or torn. `open` trusts what `HEAD` says was synced, checks each
//! later block's CRC in order, cuts the store at the first one that fails,
//! and inserts the keys of the ones that pass again (inserting is
//! idempotent).
//!
//! Pruning (`history = "recent"`, [`HistoryStore::prune_below`]): the
//! oldest block kept is raised in `HEAD` first, then the chunks holding only
//! older blocks are deleted and the index's bytes for them are punched out
//! (the file keeps its length, so a block's entry stays at `16 × number`).
//! A crash between the two leaves files the next prune deletes. Keys of
//! pruned blocks are dropped when their table is next rebuilt (at growth,
//! which then keeps the table's size when enough were dropped); until then
//! a lookup that lands on one finds nothing, as for a cut block.
//!
//! Readers (the net cores) read with `pread` on their own descriptors;
//! they never wait for the writer, and the writer publishes a block (`len`)
//! only after its record, index entry and keys are written. The writer
//! maps the key tables (`MmapMut`, shared): an insert is a memory write
//! that readers see through the page cache, where a `pread` and a `pwrite`
//! per key cost two syscalls per transaction. A table's blocks are
//! allocated before it is mapped (`fallocate`: ext4, XFS, btrfs, tmpfs),
//! so a full disk fails the allocation with an error, not a write through
//! the map with SIGBUS.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alloy_primitives::B256;
use arc_swap::ArcSwap;
use memmap2::{MmapMut, MmapOptions, UncheckedAdvice};

/// Bytes per block in `index`.
pub const INDEX_ENTRY_BYTES: u64 = 16;
/// Bytes per table slot.
const SLOT_BYTES: u64 = 16;
/// Data chunks rotate once they pass this size.
pub const CHUNK_BYTES_MAX: u64 = 1 << 30;
/// Tables the keys are spread over (by their first bits), so that growing
/// one rehashes a small part of the keys, in bounded memory.
pub const KEY_SHARDS: usize = 64;
/// Slots of a new table.
const SHARD_SLOTS_MIN: u64 = 1 << 10;
/// The index of a block's own hash among its keys.
pub const BLOCK_HASH_INDEX: u32 = (1 << 24) - 1;
/// Highest block number a table value holds (40 bits).
const BLOCK_NUMBER_MAX: u64 = (1 << 40) - 1;
/// Read descriptors kept open per store.
const CHUNK_FDS_MAX: usize = 64;
/// `HEAD` before pruning existed: no oldest block (it is 0).
const HEAD_MAGIC_V1: u32 = 0x4653_4831; // "FSH1"
const HEAD_MAGIC: u32 = 0x4653_4832; // "FSH2"

const _: () = assert!(KEY_SHARDS.is_power_of_two());
const _: () = assert!(CHUNK_BYTES_MAX < u32::MAX as u64);

/// Where a hash was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The hash of block `0`.
    Block(u64),
    /// Transaction `index` of block `block`.
    Tx {
        /// Block number.
        block: u64,
        /// Index in the block.
        index: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    chunk: u32,
    offset: u32,
    len: u32,
    crc: u32,
}

impl Entry {
    fn encode(self) -> [u8; INDEX_ENTRY_BYTES as usize] {
        let mut out = [0u8; INDEX_ENTRY_BYTES as usize];
        for (i, v) in [self.chunk, self.offset, self.len, self.crc]
            .into_iter()
            .enumerate()
        {
            out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Self {
        let word = |i: usize| u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
        Self {
            chunk: word(0),
            offset: word(1),
            len: word(2),
            crc: word(3),
        }
    }
}

/// A table's key for a hash: its first 8 bytes, 0 (the empty slot) made 1.
fn key_of(hash: &B256) -> u64 {
    let key = u64::from_be_bytes(hash[..8].try_into().unwrap());
    key.max(1)
}

fn shard_of(key: u64) -> usize {
    (key >> (64 - KEY_SHARDS.trailing_zeros())) as usize
}

fn chunk_name(chunk: u32) -> String {
    format!("blocks-{chunk:06}")
}

fn shard_name(shard: usize) -> String {
    format!("keys-{shard:02}")
}

fn invalid(detail: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail)
}

/// Splits a record into its keys and its payload.
pub fn split_record(record: &[u8]) -> io::Result<(Vec<B256>, &[u8])> {
    let count = record
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
        .ok_or_else(|| invalid("history record shorter than its key count".into()))?;
    let keys_end = count
        .checked_mul(32)
        .and_then(|n| n.checked_add(4))
        .filter(|end| *end <= record.len())
        .ok_or_else(|| {
            invalid(format!(
                "history record of {} bytes claims {count} keys",
                record.len()
            ))
        })?;
    let keys = record[4..keys_end]
        .chunks_exact(32)
        .map(B256::from_slice)
        .collect();
    Ok((keys, &record[keys_end..]))
}

/// One key table as readers see it.
struct TableFile {
    file: File,
    slots: u64,
}

/// What the writer and the readers share.
struct Shared {
    dir: PathBuf,
    /// Blocks readable: `first..len`.
    len: AtomicU64,
    /// The oldest block kept (older ones were pruned).
    first: AtomicU64,
    index: File,
    tables: Vec<ArcSwap<TableFile>>,
    chunks: Mutex<HashMap<u32, Arc<File>>>,
}

/// Reads the history store from any thread. Cloning is cheap.
#[derive(Clone)]
pub struct HistoryReader(Arc<Shared>);

impl std::fmt::Debug for HistoryReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryReader")
            .field("dir", &self.0.dir)
            .field("len", &self.len())
            .finish()
    }
}

impl HistoryReader {
    /// Opens the store in `dir` for reading only (`fulmen db check`, which
    /// must not change it): every block its index lists, synced or not,
    /// from the oldest one its `HEAD` keeps.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let first = read_head(dir).ok().flatten().map_or(0, |head| head.first);
        let index = File::open(dir.join("index"))?;
        let entries = index.metadata()?.len() / INDEX_ENTRY_BYTES;
        let tables = (0..KEY_SHARDS)
            .map(|shard| {
                let file = File::open(dir.join(shard_name(shard)))?;
                let slots = file.metadata()?.len() / SLOT_BYTES;
                Ok(ArcSwap::from_pointee(TableFile { file, slots }))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self(Arc::new(Shared {
            dir: dir.to_path_buf(),
            len: AtomicU64::new(entries),
            first: AtomicU64::new(first.min(entries)),
            index,
            tables,
            chunks: Mutex::new(HashMap::new()),
        })))
    }

    /// Blocks `first()..len()` are stored.
    pub fn len(&self) -> u64 {
        self.0.len.load(Ordering::Acquire)
    }

    /// The oldest block stored: older ones were pruned (0 on an archive
    /// store).
    pub fn first(&self) -> u64 {
        self.0.first.load(Ordering::Acquire)
    }

    /// Whether no block is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entry(&self, number: u64) -> io::Result<Option<Entry>> {
        if number >= self.len() || number < self.first() {
            return Ok(None);
        }
        let mut bytes = [0u8; INDEX_ENTRY_BYTES as usize];
        self.0
            .index
            .read_exact_at(&mut bytes, number * INDEX_ENTRY_BYTES)?;
        Ok(Some(Entry::decode(&bytes)))
    }

    fn chunk(&self, chunk: u32) -> io::Result<Arc<File>> {
        let mut open = self.0.chunks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = open.get(&chunk) {
            return Ok(file.clone());
        }
        if open.len() >= CHUNK_FDS_MAX {
            open.clear();
        }
        let file = Arc::new(File::open(self.0.dir.join(chunk_name(chunk)))?);
        open.insert(chunk, file.clone());
        Ok(file)
    }

    /// Block `number`'s index entry and chunk, the entry checked against
    /// the chunk's size (a torn or damaged entry must not make a huge
    /// allocation or a read past the end); `None` past the end.
    fn located(&self, number: u64) -> io::Result<Option<(Entry, Arc<File>)>> {
        let Some(entry) = self.entry(number)? else {
            return Ok(None);
        };
        let file = self.chunk(entry.chunk)?;
        if u64::from(entry.offset) + u64::from(entry.len) > file.metadata()?.len() {
            return Err(invalid(format!(
                "history entry of block {number} points past the end of {}",
                chunk_name(entry.chunk)
            )));
        }
        Ok(Some((entry, file)))
    }

    /// The record of block `number`, CRC checked; `None` past the end or
    /// before the oldest block kept.
    pub fn record(&self, number: u64) -> io::Result<Option<Vec<u8>>> {
        let Some((entry, file)) = self.located(number)? else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; entry.len as usize];
        file.read_exact_at(&mut bytes, u64::from(entry.offset))?;
        let crc = crc32c::crc32c(&bytes);
        if crc != entry.crc {
            return Err(invalid(format!(
                "history record of block {number} ({}, offset {}) fails its checksum",
                chunk_name(entry.chunk),
                entry.offset
            )));
        }
        Ok(Some(bytes))
    }

    /// `len` bytes at `offset` in block `number`'s record, without its
    /// checksum (the caller checks what it reads another way, e.g. a
    /// header against the block hash); `None` past either end.
    pub fn read_at(&self, number: u64, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
        let Some((entry, file)) = self.located(number)? else {
            return Ok(None);
        };
        if offset.saturating_add(len as u64) > u64::from(entry.len) {
            return Ok(None);
        }
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, u64::from(entry.offset) + offset)?;
        Ok(Some(bytes))
    }

    /// Key `index` of block `number`, if it has one.
    fn key(&self, number: u64, index: u32) -> io::Result<Option<B256>> {
        let Some(count) = self.read_at(number, 0, 4)? else {
            return Ok(None);
        };
        if index >= u32::from_le_bytes(count[..].try_into().expect("4 bytes")) {
            return Ok(None);
        }
        let at = 4 + u64::from(index) * 32;
        Ok(self
            .read_at(number, at, 32)?
            .map(|key| B256::from_slice(&key)))
    }

    /// Where `hash` is: a block's hash or a transaction's.
    pub fn find(&self, hash: &B256) -> io::Result<Option<Found>> {
        let key = key_of(hash);
        let table = self.0.tables[shard_of(key)].load();
        if !table.slots.is_power_of_two() {
            // Only a store a crash left unsynced (read by `db check`).
            return Err(invalid(format!("history table of {} slots", table.slots)));
        }
        let mask = table.slots - 1;
        let mut slot = key & mask;
        for _ in 0..table.slots {
            let (k, value) = read_slot(&table.file, slot)?;
            if k == 0 {
                return Ok(None);
            }
            if k == key {
                let (block, index) = (value >> 24, (value & u64::from(BLOCK_HASH_INDEX)) as u32);
                let key_index = if index == BLOCK_HASH_INDEX {
                    0
                } else {
                    index + 1
                };
                if self.key(block, key_index)? == Some(*hash) {
                    return Ok(Some(if index == BLOCK_HASH_INDEX {
                        Found::Block(block)
                    } else {
                        Found::Tx { block, index }
                    }));
                }
            }
            slot = (slot + 1) & mask;
        }
        Ok(None)
    }
}

fn read_slot(file: &File, slot: u64) -> io::Result<(u64, u64)> {
    let mut bytes = [0u8; SLOT_BYTES as usize];
    file.read_exact_at(&mut bytes, slot * SLOT_BYTES)?;
    Ok((
        u64::from_le_bytes(bytes[..8].try_into().unwrap()),
        u64::from_le_bytes(bytes[8..].try_into().unwrap()),
    ))
}

/// One key table as the writer keeps it: mapped.
struct TableWriter {
    map: MmapMut,
    slots: u64,
    used: u64,
}

impl TableWriter {
    /// Maps `file`, `slots` slots long, after allocating its blocks (see
    /// the module's documentation).
    fn map(file: &File, slots: u64, used: u64) -> io::Result<Self> {
        allocate(file, slots * SLOT_BYTES)?;
        let len = usize::try_from(slots * SLOT_BYTES)
            .map_err(|_| invalid(format!("history table of {slots} slots")))?;
        // Exactly the slots: bytes past them (a file whose length is not a
        // whole number of slots) are ignored, as the readers ignore them.
        // SAFETY: the file is one of this store's tables, which only this
        // writer writes and nothing truncates while it is mapped; it is at
        // least `len` long (`open` takes `slots` from its length or sizes
        // it, `grow` writes it whole), and `grow` maps the new file it
        // renames over the old one (whose mapping is then dropped).
        let map = unsafe { MmapOptions::new().len(len).map_mut(file)? };
        Ok(Self { map, slots, used })
    }

    fn slot(&self, slot: u64) -> (u64, u64) {
        let at = (slot * SLOT_BYTES) as usize;
        let word = |i: usize| u64::from_le_bytes(self.map[at + i..at + i + 8].try_into().unwrap());
        (word(0), word(8))
    }

    fn set(&mut self, slot: u64, key: u64, value: u64) {
        let at = (slot * SLOT_BYTES) as usize;
        self.map[at..at + 8].copy_from_slice(&key.to_le_bytes());
        self.map[at + 8..at + 16].copy_from_slice(&value.to_le_bytes());
    }
}

/// Allocates the disk blocks of `file`'s first `len` bytes (its holes),
/// keeping its content. A filesystem that cannot (no `fallocate`) leaves
/// them to be allocated on write.
fn allocate(file: &File, len: u64) -> io::Result<()> {
    let Ok(len) = libc::off_t::try_from(len) else {
        return Err(invalid(format!("history table of {len} bytes")));
    };
    fallocate(file, 0, len)
}

/// `fallocate(2)` with `mode` over `file`'s first `len` bytes; a
/// filesystem without it (`EOPNOTSUPP`) is not an error: the callers only
/// save space or reserve it early.
fn fallocate(file: &File, mode: libc::c_int, len: libc::off_t) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EOPNOTSUPP) => Ok(()),
        _ => Err(error),
    }
}

/// The history store's only writer.
pub struct HistoryStore {
    shared: Arc<Shared>,
    index: File,
    chunk: (u32, File, u64),
    tables: Vec<TableWriter>,
    /// Blocks whose record, entry and keys were synced.
    synced: u64,
    /// Chunks written since the last sync, besides the current one.
    unsynced_chunks: Vec<File>,
    /// A new chunk starts past this size.
    chunk_bytes_max: u64,
}

impl std::fmt::Debug for HistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryStore")
            .field("dir", &self.shared.dir)
            .field("len", &self.len())
            .field("synced", &self.synced)
            .finish()
    }
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// What `HEAD` says.
struct Head {
    /// Blocks synced.
    synced: u64,
    /// The oldest block kept.
    first: u64,
    /// Each table's slot use.
    used: Vec<u64>,
}

/// `HEAD`: synced blocks, the oldest block kept, and each table's slot use
/// (version 1 has no oldest block: it is 0).
fn read_head(dir: &Path) -> io::Result<Option<Head>> {
    let bytes = match std::fs::read(dir.join("HEAD")) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let magic = bytes
        .get(..4)
        .map(|m| u32::from_le_bytes(m.try_into().unwrap()));
    let fixed = match magic {
        Some(HEAD_MAGIC) => 4 + 8 + 8,
        Some(HEAD_MAGIC_V1) => 4 + 8,
        _ => return Err(invalid("history HEAD has an unknown magic".into())),
    };
    let body_len = fixed + 8 * KEY_SHARDS;
    if bytes.len() != body_len + 4 {
        return Err(invalid(format!("history HEAD is {} bytes", bytes.len())));
    }
    let crc = u32::from_le_bytes(bytes[body_len..].try_into().unwrap());
    if crc != crc32c::crc32c(&bytes[..body_len]) {
        return Err(invalid("history HEAD fails its checksum".into()));
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    Ok(Some(Head {
        synced: word(4),
        first: if fixed == 20 { word(12) } else { 0 },
        used: (0..KEY_SHARDS).map(|s| word(fixed + 8 * s)).collect(),
    }))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl HistoryStore {
    /// Opens (or creates) the store in `dir`, cutting what a crash left
    /// unsynced and damaged (see the module's documentation).
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let empty = || Head {
            synced: 0,
            first: 0,
            used: vec![0; KEY_SHARDS],
        };
        let Head {
            synced,
            first,
            used,
        } = match read_head(dir) {
            Ok(Some(head)) => head,
            Ok(None) => {
                // Never synced (new, or a crash within its first second):
                // its tables are rebuilt from the blocks, checked from 0.
                Self::clear_tables(dir)?;
                empty()
            }
            Err(e) => {
                // The store is derived data: rebuilt from the log.
                tracing::warn!(error = %e, "history store unreadable; it is rebuilt from the log");
                Self::wipe(dir)?;
                empty()
            }
        };
        let mut tables = Vec::with_capacity(KEY_SHARDS);
        let mut readers = Vec::with_capacity(KEY_SHARDS);
        for (shard, used) in used.into_iter().enumerate() {
            let path = dir.join(shard_name(shard));
            let file = open_rw(&path)?;
            let mut slots = file.metadata()?.len() / SLOT_BYTES;
            if slots < SHARD_SLOTS_MIN || !slots.is_power_of_two() {
                file.set_len(0)?;
                file.set_len(SHARD_SLOTS_MIN * SLOT_BYTES)?;
                slots = SHARD_SLOTS_MIN;
            }
            readers.push(ArcSwap::from_pointee(TableFile {
                file: File::open(&path)?,
                slots,
            }));
            tables.push(TableWriter::map(&file, slots, used)?);
        }
        let index = open_rw(&dir.join("index"))?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            len: AtomicU64::new(0),
            first: AtomicU64::new(first.min(synced)),
            index: File::open(dir.join("index"))?,
            tables: readers,
            chunks: Mutex::new(HashMap::new()),
        });
        let entries = index.metadata()?.len() / INDEX_ENTRY_BYTES;
        let last = Self::last_chunk(dir)?;
        let chunk_file = open_rw(&dir.join(chunk_name(last)))?;
        let chunk_len = chunk_file.metadata()?.len();
        let mut store = Self {
            shared,
            index,
            chunk: (last, chunk_file, chunk_len),
            tables,
            synced: synced.min(entries),
            unsynced_chunks: Vec::new(),
            chunk_bytes_max: CHUNK_BYTES_MAX,
        };
        store.recover(entries)?;
        Ok(store)
    }

    /// Empties the key tables (`open` sizes them again).
    fn clear_tables(dir: &Path) -> io::Result<()> {
        for shard in 0..KEY_SHARDS {
            match OpenOptions::new()
                .write(true)
                .open(dir.join(shard_name(shard)))
            {
                Ok(file) => file.set_len(0)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Removes every file of the store.
    fn wipe(dir: &Path) -> io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            std::fs::remove_file(entry?.path())?;
        }
        Ok(())
    }

    fn last_chunk(dir: &Path) -> io::Result<u32> {
        let mut last = 0;
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix("blocks-"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                last = last.max(n);
            }
        }
        Ok(last)
    }

    /// Checks the blocks written after the last sync, in order, and keeps
    /// them up to the first one that is not whole.
    fn recover(&mut self, entries: u64) -> io::Result<()> {
        self.shared.len.store(entries, Ordering::Release);
        let reader = self.reader();
        let mut good = self.synced;
        while good < entries {
            let Ok(Some(record)) = reader.record(good) else {
                break;
            };
            let Ok((keys, _)) = split_record(&record) else {
                break;
            };
            self.insert_keys(good, &keys)?;
            good += 1;
        }
        if good < entries {
            tracing::warn!(
                kept = good,
                cut = entries - good,
                "history store: blocks after the last sync are not whole (a crash); cut, and written again from the log"
            );
        }
        self.shared.len.store(entries, Ordering::Release);
        self.truncate(good)
    }

    /// A reader of this store.
    pub fn reader(&self) -> HistoryReader {
        HistoryReader(self.shared.clone())
    }

    /// Blocks stored.
    pub fn len(&self) -> u64 {
        self.shared.len.load(Ordering::Acquire)
    }

    /// Whether no block is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The oldest block kept.
    pub fn first(&self) -> u64 {
        self.shared.first.load(Ordering::Acquire)
    }

    /// Blocks `..synced()` are durable.
    pub fn synced(&self) -> u64 {
        self.synced
    }

    /// Starts a new chunk past `bytes` (at least 1 MiB; default
    /// [`CHUNK_BYTES_MAX`]): pruning deletes whole chunks, so smaller ones
    /// free space in finer steps.
    pub fn set_chunk_bytes_max(&mut self, bytes: u64) {
        self.chunk_bytes_max = bytes.clamp(1 << 20, CHUNK_BYTES_MAX);
    }

    /// Forgets the blocks below `first` (only synced ones: `first` is
    /// lowered to the last synced block): raises the oldest block kept in
    /// `HEAD`, then deletes the chunks that hold only older blocks and
    /// punches their index entries out (see the module's documentation).
    /// Returns the bytes of chunk files deleted.
    pub fn prune_below(&mut self, first: u64) -> io::Result<u64> {
        let first = first.min(self.synced.saturating_sub(1));
        if first <= self.first() {
            return Ok(0);
        }
        let mut bytes = [0u8; INDEX_ENTRY_BYTES as usize];
        self.index
            .read_exact_at(&mut bytes, first * INDEX_ENTRY_BYTES)?;
        let keep_chunk = Entry::decode(&bytes).chunk;
        self.shared.first.store(first, Ordering::Release);
        self.write_head(self.synced)?;
        let dir = self.shared.dir.clone();
        let mut freed = 0;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let chunk = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("blocks-"))
                .and_then(|n| n.parse::<u32>().ok());
            if chunk.is_some_and(|c| c < keep_chunk) {
                freed += entry.metadata().map_or(0, |m| m.len());
                std::fs::remove_file(entry.path())?;
            }
        }
        self.forget_open_chunks();
        punch_hole(&self.index, first * INDEX_ENTRY_BYTES)?;
        sync_dir(&dir)?;
        Ok(freed)
    }

    /// Appends block `number` (the next one): its keys (the block hash,
    /// then its transactions' hashes in order) and its payload.
    pub fn append(&mut self, number: u64, keys: &[B256], payload: &[u8]) -> io::Result<()> {
        assert_eq!(number, self.len(), "history blocks are appended in order");
        if number > BLOCK_NUMBER_MAX || keys.len() > BLOCK_HASH_INDEX as usize || keys.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "block {number} with {} keys does not fit the history index",
                    keys.len()
                ),
            ));
        }
        let mut record = Vec::with_capacity(4 + keys.len() * 32 + payload.len());
        record.extend_from_slice(&(keys.len() as u32).to_le_bytes());
        for key in keys {
            record.extend_from_slice(key.as_slice());
        }
        record.extend_from_slice(payload);
        if self.chunk.2 > 0 && self.chunk.2 + record.len() as u64 > self.chunk_bytes_max {
            self.rotate()?;
        }
        let (chunk, file, offset) = &mut self.chunk;
        file.write_all_at(&record, *offset)?;
        let entry = Entry {
            chunk: *chunk,
            offset: u32::try_from(*offset).expect("chunks stay under 4 GiB"),
            len: u32::try_from(record.len()).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "a block record over 4 GiB")
            })?,
            crc: crc32c::crc32c(&record),
        };
        *offset += record.len() as u64;
        self.index
            .write_all_at(&entry.encode(), number * INDEX_ENTRY_BYTES)?;
        self.insert_keys(number, keys)?;
        self.shared.len.store(number + 1, Ordering::Release);
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let next = self.chunk.0 + 1;
        let file = open_rw(&self.shared.dir.join(chunk_name(next)))?;
        file.set_len(0)?;
        let old = std::mem::replace(&mut self.chunk, (next, file, 0));
        self.unsynced_chunks.push(old.1);
        Ok(())
    }

    fn insert_keys(&mut self, number: u64, keys: &[B256]) -> io::Result<()> {
        for (i, key) in keys.iter().enumerate() {
            let index = if i == 0 {
                BLOCK_HASH_INDEX
            } else {
                i as u32 - 1
            };
            self.insert(key_of(key), number << 24 | u64::from(index))?;
        }
        Ok(())
    }

    fn insert(&mut self, key: u64, value: u64) -> io::Result<()> {
        let shard = shard_of(key);
        if (self.tables[shard].used + 1) * 2 > self.tables[shard].slots {
            self.grow(shard)?;
        }
        while !self.try_insert(shard, key, value) {
            // A whole probe found no empty slot: the table's use was
            // undercounted (a crash before its first sync). Growing
            // recounts it.
            self.grow(shard)?;
        }
        Ok(())
    }

    /// Inserts into `shard` unless the same entry is there; false when no
    /// slot is empty.
    fn try_insert(&mut self, shard: usize, key: u64, value: u64) -> bool {
        let table = &mut self.tables[shard];
        let mask = table.slots - 1;
        let mut slot = key & mask;
        for _ in 0..table.slots {
            let (k, v) = table.slot(slot);
            if k == 0 {
                table.set(slot, key, value);
                table.used += 1;
                return true;
            }
            if k == key && v == value {
                return true;
            }
            slot = (slot + 1) & mask;
        }
        false
    }

    /// Rebuilds a full table without the keys of pruned blocks, at twice
    /// its size unless those made up half of it or more: its slots are
    /// rehashed in memory (one shard's worth), written to a new file,
    /// synced and renamed over the old one; readers switch to the new file,
    /// and those already reading finish on the old one.
    fn grow(&mut self, shard: usize) -> io::Result<()> {
        let old = &self.tables[shard];
        let bytes = &old.map[..];
        let first = self.first();
        let live = |slot: &&[u8]| {
            let key = u64::from_le_bytes(slot[..8].try_into().unwrap());
            let value = u64::from_le_bytes(slot[8..].try_into().unwrap());
            key != 0 && value >> 24 >= first
        };
        let kept = bytes.chunks_exact(SLOT_BYTES as usize).filter(live).count() as u64;
        let slots = if kept * 4 <= old.slots {
            old.slots
        } else {
            old.slots * 2
        };
        let mask = slots - 1;
        let mut grown = vec![0u8; (slots * SLOT_BYTES) as usize];
        for slot in bytes.chunks_exact(SLOT_BYTES as usize).filter(live) {
            let key = u64::from_le_bytes(slot[..8].try_into().unwrap());
            let mut at = key & mask;
            while grown[(at * SLOT_BYTES) as usize..][..8] != [0u8; 8] {
                at = (at + 1) & mask;
            }
            grown[(at * SLOT_BYTES) as usize..][..16].copy_from_slice(slot);
        }
        let used = kept;
        let dir = &self.shared.dir;
        let path = dir.join(shard_name(shard));
        let tmp = dir.join(format!("{}.new", shard_name(shard)));
        let file = open_rw(&tmp)?;
        file.set_len(0)?;
        file.write_all_at(&grown, 0)?;
        file.sync_data()?;
        // Mapped before the rename: if mapping fails, the old table stays
        // the one both the writer and the readers use.
        let table = TableWriter::map(&file, slots, used)?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(dir)?;
        self.shared.tables[shard].store(Arc::new(TableFile {
            file: File::open(&path)?,
            slots,
        }));
        self.tables[shard] = table;
        Ok(())
    }

    /// Makes everything appended durable, and records it in `HEAD`.
    pub fn sync(&mut self) -> io::Result<()> {
        let len = self.len();
        if len == self.synced {
            return Ok(());
        }
        for file in self.unsynced_chunks.drain(..) {
            file.sync_data()?;
        }
        self.chunk.1.sync_data()?;
        self.index.sync_data()?;
        for table in &self.tables {
            table.map.flush()?;
            // The synced pages are clean: dropping them from the map keeps
            // the writer's resident memory to what it wrote since the last
            // sync, however large the tables grow (they stay in the page
            // cache). Only memory is at stake, so a failure is ignored.
            // SAFETY: MADV_DONTNEED on a shared file mapping only unmaps
            // this process's pages; the file keeps its contents (a dirty
            // page's state moves to the page cache), and the next access
            // reads them back.
            let _ = unsafe { table.map.unchecked_advise(UncheckedAdvice::DontNeed) };
        }
        self.write_head(len)?;
        self.synced = len;
        Ok(())
    }

    fn write_head(&self, synced: u64) -> io::Result<()> {
        let mut body = Vec::with_capacity(24 + 8 * KEY_SHARDS);
        body.extend_from_slice(&HEAD_MAGIC.to_le_bytes());
        body.extend_from_slice(&synced.to_le_bytes());
        body.extend_from_slice(&self.first().to_le_bytes());
        for table in &self.tables {
            body.extend_from_slice(&table.used.to_le_bytes());
        }
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        let dir = &self.shared.dir;
        let tmp = dir.join("HEAD.tmp");
        let file = open_rw(&tmp)?;
        file.set_len(0)?;
        file.write_all_at(&body, 0)?;
        file.sync_data()?;
        std::fs::rename(&tmp, dir.join("HEAD"))?;
        sync_dir(dir)
    }

    /// Keeps blocks `first()..len` only (boot found the log's chain
    /// differs from block `len` on, or ends there). Keys of the cut blocks
    /// stay in the tables; readers skip them (their whole hash no longer
    /// matches). A cut below the oldest block kept leaves the store empty,
    /// its next block `len`.
    pub fn truncate(&mut self, len: u64) -> io::Result<()> {
        let current = self.len();
        let index_bytes = self.index.metadata()?.len();
        if len >= current && index_bytes == current * INDEX_ENTRY_BYTES {
            return Ok(());
        }
        let len = len.min(current);
        self.shared.len.store(len, Ordering::Release);
        if len <= self.first() {
            return self.empty_at(len);
        }
        // The cut is at the end of the last block kept, whose entry was
        // checked; the entry after it may be torn.
        let (chunk, offset) = match len.checked_sub(1) {
            Some(last) => {
                let mut bytes = [0u8; INDEX_ENTRY_BYTES as usize];
                self.index
                    .read_exact_at(&mut bytes, last * INDEX_ENTRY_BYTES)?;
                let entry = Entry::decode(&bytes);
                (entry.chunk, u64::from(entry.offset) + u64::from(entry.len))
            }
            None => (0, 0),
        };
        self.index.set_len(len * INDEX_ENTRY_BYTES)?;
        let dir = self.shared.dir.clone();
        for later in chunk + 1..=self.chunk.0.max(Self::last_chunk(&dir)?) {
            match std::fs::remove_file(dir.join(chunk_name(later))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let file = open_rw(&dir.join(chunk_name(chunk)))?;
        file.set_len(offset)?;
        self.chunk = (chunk, file, offset);
        self.unsynced_chunks.clear();
        self.forget_open_chunks();
        self.index.sync_data()?;
        self.chunk.1.sync_data()?;
        self.synced = self.synced.min(len);
        self.write_head(self.synced)
    }
}

impl HistoryStore {
    /// Closes the readers' cached chunk descriptors (chunks were deleted or
    /// cut; readers reopen what they need).
    fn forget_open_chunks(&self) {
        self.shared
            .chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Deletes every block (a cut below the oldest one kept): the store
    /// starts again at block `next`, its index entries before `next`
    /// punched out.
    fn empty_at(&mut self, next: u64) -> io::Result<()> {
        let dir = self.shared.dir.clone();
        // `HEAD` first: a crash before the files go reopens empty at `next`
        // (the later blocks fail their checks and are cut).
        self.shared.first.store(next, Ordering::Release);
        self.synced = next;
        self.write_head(next)?;
        for chunk in 0..=self.chunk.0.max(Self::last_chunk(&dir)?) {
            match std::fs::remove_file(dir.join(chunk_name(chunk))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let file = open_rw(&dir.join(chunk_name(0)))?;
        self.chunk = (0, file, 0);
        self.unsynced_chunks.clear();
        self.forget_open_chunks();
        self.index.set_len(next * INDEX_ENTRY_BYTES)?;
        punch_hole(&self.index, next * INDEX_ENTRY_BYTES)?;
        self.index.sync_data()?;
        sync_dir(&dir)
    }
}

/// Frees the disk blocks of `file`'s first `len` bytes (whole 4 KiB
/// blocks), keeping its length; they read back as zeros. A filesystem that
/// cannot punch holes keeps them: only space is lost.
fn punch_hole(file: &File, len: u64) -> io::Result<()> {
    let len = len & !4095;
    if len == 0 {
        return Ok(());
    }
    let Ok(len) = libc::off_t::try_from(len) else {
        return Ok(());
    };
    fallocate(
        file,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// A directory removed when dropped.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new() -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("fulmen-history-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            Self(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn hash(seed: u64) -> B256 {
        alloy_primitives::keccak256(seed.to_le_bytes())
    }

    /// Block `n`'s keys: its hash and `n % 7` transaction hashes.
    fn keys(n: u64) -> Vec<B256> {
        (0..=n % 7).map(|i| hash(n * 100 + i)).collect()
    }

    fn payload(n: u64) -> Vec<u8> {
        vec![n as u8; (n as usize * 37) % 3000]
    }

    fn write(store: &mut HistoryStore, range: std::ops::Range<u64>) {
        for n in range {
            store.append(n, &keys(n), &payload(n)).unwrap();
        }
    }

    fn check(reader: &HistoryReader, len: u64) {
        check_from(reader, 0, len);
    }

    /// Blocks `first..len` are found by number and by hash, older ones by
    /// neither.
    fn check_from(reader: &HistoryReader, first: u64, len: u64) {
        assert_eq!(reader.len(), len);
        assert_eq!(reader.first(), first);
        for n in first.saturating_sub(50)..first {
            assert_eq!(reader.record(n).unwrap(), None, "pruned block {n}");
            for key in keys(n) {
                assert_eq!(
                    reader.find(&key).unwrap(),
                    None,
                    "a key of pruned block {n}"
                );
            }
        }
        for n in first..len {
            let record = reader.record(n).unwrap().unwrap();
            let (k, p) = split_record(&record).unwrap();
            assert_eq!(k, keys(n));
            assert_eq!(p, payload(n));
            assert_eq!(reader.find(&k[0]).unwrap(), Some(Found::Block(n)));
            for (i, tx) in k[1..].iter().enumerate() {
                assert_eq!(
                    reader.find(tx).unwrap(),
                    Some(Found::Tx {
                        block: n,
                        index: i as u32
                    })
                );
            }
        }
        assert_eq!(reader.record(len).unwrap(), None);
        assert_eq!(reader.find(&hash(u64::MAX)).unwrap(), None);
    }

    #[test]
    fn blocks_are_found_by_number_and_by_every_hash_they_carry_across_growth_and_reopen() {
        let dir = TestDir::new();
        let mut store = HistoryStore::open(dir.path()).unwrap();
        // Enough keys to double some tables several times.
        write(&mut store, 0..20_000);
        check(&store.reader(), 20_000);
        store.sync().unwrap();
        write(&mut store, 20_000..20_100);
        drop(store);
        let store = HistoryStore::open(dir.path()).unwrap();
        check(&store.reader(), 20_100);
    }

    /// A table whose length is not a whole number of slots (bytes a tool
    /// or a damaged disk added) still opens: the writer maps, and readers
    /// read, its whole slots only.
    #[test]
    fn a_table_with_a_partial_slot_at_its_end_still_opens() {
        let dir = TestDir::new();
        let mut store = HistoryStore::open(dir.path()).unwrap();
        write(&mut store, 0..2_000);
        store.sync().unwrap();
        drop(store);
        for shard in 0..KEY_SHARDS {
            let file = OpenOptions::new()
                .append(true)
                .open(dir.path().join(shard_name(shard)))
                .unwrap();
            (&file).write_all(&[7; 5]).unwrap();
        }
        let mut store = HistoryStore::open(dir.path()).unwrap();
        check(&store.reader(), 2_000);
        write(&mut store, 2_000..4_000);
        store.sync().unwrap();
        check(&store.reader(), 4_000);
    }

    /// The writer writes the key tables through a map: each table's disk
    /// blocks are allocated before it is mapped (new, reopened or grown),
    /// so that a full disk cannot fault a write through the map.
    #[test]
    fn mapped_key_tables_have_no_holes() {
        use std::os::unix::fs::MetadataExt;
        let dir = TestDir::new();
        let holes = || {
            (0..KEY_SHARDS)
                .map(|shard| std::fs::metadata(dir.path().join(shard_name(shard))).unwrap())
                .filter(|m| m.blocks() * 512 < m.len())
                .count()
        };
        drop(HistoryStore::open(dir.path()).unwrap());
        assert_eq!(holes(), 0, "new tables");
        // A table left sparse (by an older version, or punched): still
        // empty here, so punching it loses nothing.
        let table = OpenOptions::new()
            .write(true)
            .open(dir.path().join(shard_name(0)))
            .unwrap();
        punch_hole(&table, table.metadata().unwrap().len()).unwrap();
        if holes() == 0 {
            return; // This filesystem cannot punch holes: nothing to check.
        }
        let mut store = HistoryStore::open(dir.path()).unwrap();
        assert_eq!(holes(), 0, "reopened tables");
        write(&mut store, 0..5_000);
        store.sync().unwrap();
        assert_eq!(holes(), 0, "grown tables");
        check(&store.reader(), 5_000);
    }

    /// A crash before the first sync leaves no `HEAD`: the tables are
    /// rebuilt from the blocks, each checked from the first.
    #[test]
    fn a_store_never_synced_reopens_with_every_block_found() {
        let dir = TestDir::new();
        let mut store = HistoryStore::open(dir.path()).unwrap();
        write(&mut store, 0..3_000);
        drop(store);
        assert!(!dir.path().join("HEAD").exists());
        let mut store = HistoryStore::open(dir.path()).unwrap();
        check(&store.reader(), 3_000);
        write(&mut store, 3_000..3_100);
        check(&store.reader(), 3_100);
    }

    /// An index entry damaged to point past its chunk (here 4 GiB long)
    /// is an error for every read, never a huge allocation or a panic.
    #[test]
    fn an_entry_pointing_past_its_chunk_is_an_error_for_every_read() {
        let dir = TestDir::new();
        let mut store = HistoryStore::open(dir.path()).unwrap();
        write(&mut store, 0..3);
        let damaged = Entry {
            chunk: 0,
            offset: 0,
            len: u32::MAX,
            crc: 0,
        };
        store
            .index
            .write_all_at(&damaged.encode(), INDEX_ENTRY_BYTES)
            .unwrap();
        let reader = store.reader();
        assert!(reader.record(1).is_err());
        assert!(reader.read_at(1, 0, 36).is_err());
        assert!(reader.find(&keys(1)[0]).is_err());
        assert!(reader.record(2).unwrap().is_some());
    }

    #[test]
    fn a_key_whose_first_bytes_collide_is_told_apart_by_its_whole_hash() {
        let dir = TestDir::new();
        let mut store = HistoryStore::open(dir.path()).unwrap();
        let a = hash(1);
        let mut b = a;
        b.0[31] ^= 1;
        let mut c = a;
        c.0[20] ^= 1;
        store.append(0, &[hash(9), a], b"").unwrap();
        store.append(1, &[hash(8), b], b"").unwrap();
        let reader = store.reader();
        assert_eq!(
            reader.find(&a).unwrap(),
            Some(Found::Tx { block: 0, index: 0 })
        );
        assert_eq!(
            reader.find(&b).unwrap(),
            Some(Found::Tx { block: 1, index: 0 })
        );
        assert_eq!(reader.find(&c).unwrap(), None);
    }

    #[test]
    fn a_cut_store_forgets_the_cut_blocks_and_takes_different_ones() {
        let dir = TestDir::new();
        let mut store = HistoryStore::open(dir.path()).unwrap();
        write(&mut store, 0..50);
        store.sync().unwrap();
        let gone = keys(40);
        store.truncate(30).unwrap();
        check(&store.reader(), 30);
        assert_eq!(store.reader().find(&gone[0]).unwrap(), None);
        // Block 30 written again, differently: the old keys of block 30 stay
        // in the tables but no longer match.
        let old = keys(30);
        store
            .append(30, &[hash(7777), hash(7778)], b"other")
            .unwrap();
        assert_eq!(store.reader().find(&old[0]).unwrap(), None);
        assert_eq!(
            store.reader().find(&hash(7778)).unwrap(),
            Some(Found::Tx {
                block: 30,
                index: 0
            })
        );
        drop(store);
        let store = HistoryStore::open(dir.path()).unwrap();
        assert_eq!(store.len(), 31);
    }

    /// A crash loses or tears what was written after the last sync, in any
    /// file: the store reopens to a whole prefix at least as long as what
    /// was synced, every block in it readable and found by its hashes.
    #[test]
    fn a_crash_after_the_last_sync_leaves_a_whole_prefix_at_least_as_long_as_the_synced_one() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..40 {
            let dir = TestDir::new();
            let mut store = HistoryStore::open(dir.path()).unwrap();
            let synced = 20 + next() % 200;
            write(&mut store, 0..synced);
            store.sync().unwrap();
            let sizes: Vec<(PathBuf, u64)> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .map(|p| {
                    let len = std::fs::metadata(&p).unwrap().len();
                    (p, len)
                })
                .collect();
            write(&mut store, synced..synced + 1 + next() % 100);
            drop(store);
            // Unsynced bytes: each file keeps a random part of what was
            // written after the sync, and some of it is garbage.
            for (path, synced_len) in sizes {
                let now = std::fs::metadata(&path).unwrap().len();
                if now <= synced_len || path.ends_with("HEAD") {
                    continue;
                }
                let keep = synced_len + next() % (now - synced_len + 1);
                let file = OpenOptions::new().write(true).open(&path).unwrap();
                if next() % 3 == 0 && keep > synced_len {
                    let at = synced_len + next() % (keep - synced_len);
                    file.write_all_at(&[0xA5; 7], at).unwrap();
                }
                if !path.to_str().unwrap().contains("keys-") {
                    file.set_len(keep).unwrap();
                }
            }
            let store = HistoryStore::open(dir.path()).unwrap();
            let len = store.len();
            assert!(len >= synced, "round {round}: {len} < {synced}");
            check(&store.reader(), len);
        }
    }

    /// A store of 1 MiB chunks holding blocks `0..blocks`, synced.
    fn small_chunks(dir: &Path, blocks: u64) -> HistoryStore {
        let mut store = HistoryStore::open(dir).unwrap();
        store.set_chunk_bytes_max(1 << 20);
        write(&mut store, 0..blocks);
        store.sync().unwrap();
        store
    }

    fn chunk_count(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .starts_with("blocks-")
            })
            .count()
    }

    fn table_slots(store: &HistoryStore) -> u64 {
        store.tables.iter().map(|t| t.slots).sum()
    }

    #[test]
    fn pruning_deletes_the_chunks_below_the_oldest_block_kept_and_every_later_block_is_found() {
        let dir = TestDir::new();
        let mut store = HistoryStore::open(dir.path()).unwrap();
        store.set_chunk_bytes_max(1 << 20);
        write(&mut store, 0..6_000);
        // Only synced blocks are pruned.
        assert_eq!(store.prune_below(5_000).unwrap(), 0);
        assert_eq!(store.first(), 0);
        store.sync().unwrap();
        let chunks = chunk_count(dir.path());
        assert!(chunks >= 5, "{chunks} chunks");
        let freed = store.prune_below(5_000).unwrap();
        assert!(freed >= 3 << 20, "{freed} bytes freed");
        assert!(
            chunk_count(dir.path()) <= 3,
            "{} chunks",
            chunk_count(dir.path())
        );
        check_from(&store.reader(), 5_000, 6_000);
        // Never lowered.
        assert_eq!(store.prune_below(10).unwrap(), 0);
        assert_eq!(store.first(), 5_000);
        drop(store);
        let mut store = HistoryStore::open(dir.path()).unwrap();
        check_from(&store.reader(), 5_000, 6_000);
        check_from(&HistoryReader::open(dir.path()).unwrap(), 5_000, 6_000);
        write(&mut store, 6_000..6_100);
        check_from(&store.reader(), 5_000, 6_100);
        // The index keeps its length: block n's entry stays at 16 n.
        let index_bytes = std::fs::metadata(dir.path().join("index")).unwrap().len();
        assert_eq!(index_bytes, 6_100 * INDEX_ENTRY_BYTES);
    }

    /// A crash after `HEAD` was raised and before the chunks were deleted
    /// leaves chunk files that the next prune deletes.
    #[test]
    fn chunks_left_by_a_crash_during_a_prune_go_at_the_next_one() {
        let dir = TestDir::new();
        let mut store = small_chunks(dir.path(), 4_000);
        let copy = dir.path().join("copy-of-0");
        std::fs::copy(dir.path().join(chunk_name(0)), &copy).unwrap();
        store.prune_below(3_000).unwrap();
        drop(store);
        std::fs::rename(&copy, dir.path().join(chunk_name(0))).unwrap();
        let mut store = HistoryStore::open(dir.path()).unwrap();
        check_from(&store.reader(), 3_000, 4_000);
        write(&mut store, 4_000..4_100);
        store.sync().unwrap();
        store.prune_below(3_001).unwrap();
        assert!(!dir.path().join(chunk_name(0)).exists());
        check_from(&store.reader(), 3_001, 4_100);
    }

    /// Keys of pruned blocks leave the tables as they are rebuilt, so a
    /// store that keeps a window of blocks keeps tables of that window's
    /// size, not the chain's.
    #[test]
    fn the_key_tables_of_a_pruned_store_stay_the_size_of_the_blocks_kept() {
        let (archive_dir, pruned_dir) = (TestDir::new(), TestDir::new());
        let mut archive = HistoryStore::open(archive_dir.path()).unwrap();
        let mut pruned = HistoryStore::open(pruned_dir.path()).unwrap();
        pruned.set_chunk_bytes_max(1 << 20);
        for round in 0..30 {
            let range = round * 2_000..(round + 1) * 2_000;
            write(&mut archive, range.clone());
            write(&mut pruned, range.clone());
            pruned.sync().unwrap();
            pruned.prune_below(range.end - 1_000).unwrap();
        }
        assert!(
            table_slots(&pruned) * 4 <= table_slots(&archive),
            "pruned {} slots, archive {}",
            table_slots(&pruned),
            table_slots(&archive)
        );
        check_from(&pruned.reader(), 59_000, 60_000);
        check(&archive.reader(), 60_000);
    }

    /// A cut below the oldest block kept (a verifier unwinding far) leaves
    /// an empty store that takes blocks from the cut on.
    #[test]
    fn a_cut_below_the_oldest_block_kept_empties_the_store() {
        let dir = TestDir::new();
        let mut store = small_chunks(dir.path(), 3_000);
        store.prune_below(2_000).unwrap();
        store.truncate(1_500).unwrap();
        assert_eq!((store.first(), store.len()), (1_500, 1_500));
        write(&mut store, 1_500..1_600);
        check_from(&store.reader(), 1_500, 1_600);
        store.sync().unwrap();
        drop(store);
        let store = HistoryStore::open(dir.path()).unwrap();
        check_from(&store.reader(), 1_500, 1_600);
    }

    /// A `HEAD` of version 1 (before pruning) reads as keeping every block.
    #[test]
    fn a_version_1_head_keeps_every_block() {
        let dir = TestDir::new();
        let mut store = HistoryStore::open(dir.path()).unwrap();
        write(&mut store, 0..500);
        store.sync().unwrap();
        let mut body = Vec::new();
        body.extend_from_slice(&HEAD_MAGIC_V1.to_le_bytes());
        body.extend_from_slice(&500u64.to_le_bytes());
        for table in &store.tables {
            body.extend_from_slice(&table.used.to_le_bytes());
        }
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        drop(store);
        std::fs::write(dir.path().join("HEAD"), body).unwrap();
        let store = HistoryStore::open(dir.path()).unwrap();
        assert_eq!(store.synced, 500);
        check(&store.reader(), 500);
    }
}
