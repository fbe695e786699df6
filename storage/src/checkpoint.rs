//! Checkpoints: full images of the hot state at a block boundary, so that
//! boot loads the newest valid image and replays only the log after it.
//!
//! One file per checkpoint, `checkpoint/<block number, 20 digits>.ckpt`,
//! format version 2 (the codec of [`crate::codec`]; version 1, without the
//! trie section, is still read):
//!
//! | field | encoding |
//! |---|---|
//! | magic | 8 bytes `FULMCKPT` |
//! | version | u32, 1 |
//! | block | number u64, hash 32 bytes, state root 32 bytes |
//! | accounts | u64 count; per account: address 20 bytes, nonce u64, balance 32 bytes BE, code hash 32 bytes |
//! | slots | u64 count; per slot: address 20 bytes, slot 32 bytes BE, value 32 bytes BE |
//! | codes | u64 count; per code: hash 32 bytes, u32 length, bytes |
//! | trie | u64 length, bytes: the state trie's branch references at the block (the state-root worker's export, opaque here; empty when it had none), so that boot need not hash the trie again |
//! | checksum | u32 CRC32C of everything before it |
//!
//! A file is written under a temporary name, made durable (fdatasync), then
//! renamed into place and the directory synced, so a crash leaves either a
//! whole image or none. Reading checks the checksum before anything else;
//! the caller checks the state root against the sealed header in the log.
//! Every file operation goes through [`LogDir`], the interface the log
//! uses: on the storage core that is io_uring (data and fdatasync) and
//! glommio's blocking thread (rename, remove, the directory's fsync), so
//! none of it blocks the executor; in tests it is the simulated disk, which
//! crashes and tears them as it does the log's.
//!
//! Pruning keeps the newest [`KEEP`] checkpoints that are whole (checksum
//! and header checked) and not newer than the one just written. A file with
//! a checkpoint's name that is not one (junk, a partial copy, a number past
//! the chain) never counts as kept and never makes a valid one go: it is
//! reported and left in place while newer than the kept ones, and removed
//! with the old ones once older.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;

use alloy_primitives::B256;

use crate::HotState;
use crate::codec::{PayloadError, Reader, Writer};
use crate::disk::DiskDir;
use crate::io::StreamFile;
use crate::log::LogDir;

const MAGIC: &[u8; 8] = b"FULMCKPT";
const VERSION: u32 = 2;
/// Images without the trie section.
const VERSION_1: u32 = 1;
/// Encoded bytes handed to the file at a time: small enough that the
/// encoder yields to latency-sensitive tasks on the same core every ~0.2 ms.
const CHUNK_BYTES: usize = 256 * 1024;
/// Bytes of the header: magic, version, number, hash, state root.
const HEADER_BYTES: usize = 8 + 4 + 8 + 32 + 32;
/// Bytes of the checksum that ends an image.
const CHECKSUM_BYTES: usize = 4;

/// Which block an image is the state after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointMeta {
    /// Block number.
    pub number: u64,
    /// Block hash.
    pub hash: B256,
    /// The block's state root.
    pub state_root: B256,
}

/// A checkpoint to write: the state after a sealed block.
#[derive(Debug, Clone)]
pub struct CheckpointJob {
    /// The block.
    pub meta: CheckpointMeta,
    /// Its state (a snapshot).
    pub state: HotState,
    /// The state trie's references at the block (empty: none).
    pub trie: Vec<u8>,
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Checkpoint {
    /// The block.
    pub meta: CheckpointMeta,
    /// Its state.
    pub state: HotState,
    /// The state trie's references at the block, as written (empty: none).
    pub trie: Vec<u8>,
}

/// How many checkpoints are kept; older ones are removed once a newer one
/// is durable.
pub const KEEP: usize = 2;

/// Writes each checkpoint it is given into `dir`, one at a time, then
/// prunes old ones. Runs as a background task on the storage core. A failed
/// checkpoint is reported and costs nothing else: the log still holds every
/// record.
pub async fn run_checkpoints(
    dir: PathBuf,
    inbox: glommio::channels::shared_channel::ConnectedReceiver<CheckpointJob>,
) {
    let disk = DiskDir::buffered(&dir);
    // Checked once per process: numbers of whole checkpoints, and of junk.
    let mut valid = HashSet::new();
    let mut junk = HashSet::new();
    while let Some(job) = inbox.recv().await {
        let began = std::time::Instant::now();
        match write(&disk, &job.meta, &job.state, &job.trie).await {
            Ok(bytes) => {
                tracing::info!(
                    number = job.meta.number,
                    accounts = job.state.account_count(),
                    slots = job.state.slot_count(),
                    trie_mb = format!("{:.1}", job.trie.len() as f64 / 1e6),
                    mb = format!("{:.1}", bytes as f64 / 1e6),
                    ms = began.elapsed().as_millis() as u64,
                    "checkpoint written"
                );
                valid.insert(job.meta.number);
                check_older(&disk, job.meta.number, &mut valid, &mut junk).await;
                if let Err(e) = prune(&disk, KEEP, job.meta.number, |n| valid.contains(&n)).await {
                    tracing::warn!(error = %e, "cannot remove old checkpoints");
                }
            }
            Err(e) => tracing::error!(
                number = job.meta.number,
                error = %e,
                "checkpoint failed; boot replays more of the log instead"
            ),
        }
    }
}

/// Checks (off the core, once per file) the checkpoints older than
/// `written` that this process did not write, sorting them into `valid` and
/// `junk`.
async fn check_older(
    dir: &DiskDir,
    written: u64,
    valid: &mut HashSet<u64>,
    junk: &mut HashSet<u64>,
) {
    let Ok(found) = list(dir) else { return };
    for (number, name) in found {
        if number >= written || valid.contains(&number) || junk.contains(&number) {
            continue;
        }
        let (disk, checked) = (dir.clone(), name.clone());
        let verdict = glommio::executor()
            .spawn_blocking(move || verify(&disk, &checked))
            .await;
        match verdict {
            Ok(meta) if meta.number == number => {
                valid.insert(number);
            }
            Ok(meta) => {
                tracing::warn!(path = %dir.path().join(&name).display(), inner = meta.number, "checkpoint file named after another block: not counted as a checkpoint");
                junk.insert(number);
            }
            Err(e) => {
                tracing::warn!(error = %e, "not a valid checkpoint: not counted as one (removed once older than the kept ones)");
                junk.insert(number);
            }
        }
    }
}

/// Why an image's bytes are not a whole, valid checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The file is empty (a crash before its first write).
    #[error("the file is empty")]
    Empty,
    /// Fewer bytes than the checksum.
    #[error("{len} bytes, shorter than the {CHECKSUM_BYTES}-byte checksum")]
    Short {
        /// Bytes in the file.
        len: usize,
    },
    /// The checksum does not match: a partial or damaged image.
    #[error(
        "checksum {computed:#010x} over the first {body_bytes} bytes differs from the stored {stored:#010x} (a partial or damaged image)"
    )]
    Checksum {
        /// Bytes the checksum covers.
        body_bytes: usize,
        /// At the end of the file.
        stored: u32,
        /// Over the bytes read.
        computed: u32,
    },
    /// The checksum matches but the bytes do not decode (written by another
    /// format, or a bug).
    #[error("at byte {offset}: {source}")]
    Body {
        /// Where decoding stopped.
        offset: usize,
        /// What is wrong there.
        source: PayloadError,
    },
}

/// Why a checkpoint file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file cannot be read.
    #[error("checkpoint {name}: cannot read it: {source}; boot skips it")]
    Io {
        /// Which file, in the checkpoint directory.
        name: String,
        /// The error.
        source: io::Error,
    },
    /// The file is not a whole, valid image.
    #[error(
        "checkpoint {name} is damaged: {source}; boot skips it (an older checkpoint or the log is used instead), and removing the file is safe"
    )]
    Corrupt {
        /// Which file, in the checkpoint directory.
        name: String,
        /// What is wrong.
        source: ImageError,
    },
}

/// File name of the checkpoint at block `number`.
pub fn file_name(number: u64) -> String {
    format!("{number:020}.ckpt")
}

/// The block number a checkpoint file name stands for.
fn parse_name(name: &str) -> Option<u64> {
    name.strip_suffix(".ckpt")?.parse::<u64>().ok()
}

/// Checkpoints in `dir`, newest first, by block number and file name (an
/// absent directory holds none).
pub fn list<D: LogDir>(dir: &D) -> io::Result<Vec<(u64, String)>> {
    let mut found: Vec<(u64, String)> = dir
        .list()?
        .into_iter()
        .filter_map(|name| Some((parse_name(&name)?, name)))
        .collect();
    found.sort_by_key(|b| std::cmp::Reverse(b.0));
    Ok(found)
}

fn encode_header(meta: &CheckpointMeta, state: &HotState, out: &mut Vec<u8>) {
    let start = out.len();
    let mut w = Writer(out);
    w.raw(MAGIC);
    w.raw(&VERSION.to_le_bytes());
    w.u64(meta.number);
    w.raw(meta.hash.as_slice());
    w.raw(meta.state_root.as_slice());
    assert!(out.len() - start == HEADER_BYTES);
    Writer(out).u64(state.account_count() as u64);
}

/// Encodes a whole image in memory (tests and tools; the node streams it
/// with [`write()`]).
pub fn encode(meta: &CheckpointMeta, state: &HotState, trie: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_header(meta, state, &mut out);
    let mut w = Writer(&mut out);
    for (address, account) in state.accounts() {
        w.raw(address.as_slice());
        w.account(account);
    }
    w.u64(state.slot_count() as u64);
    for ((address, slot), value) in state.slots() {
        w.slot(address, slot, value);
    }
    w.u64(state.code_count() as u64);
    for (hash, code) in state.codes() {
        w.code(hash, code);
    }
    w.u64(trie.len() as u64);
    w.raw(trie);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Encoded image bytes on their way to a stream file, a chunk at a time,
/// with the running checksum.
struct Chunks<S: StreamFile> {
    out: S,
    buf: Vec<u8>,
    crc: u32,
    bytes: u64,
}

impl<S: StreamFile> Chunks<S> {
    /// Hands the buffered bytes to the file once a chunk is full (or when
    /// `force`); the await is where other tasks run.
    async fn drain(&mut self, force: bool) -> io::Result<()> {
        if force || self.buf.len() >= CHUNK_BYTES {
            self.crc = crc32c::crc32c_append(self.crc, &self.buf);
            self.out.write_all(&self.buf).await?;
            self.bytes += self.buf.len() as u64;
            self.buf.clear();
            glommio::yield_if_needed().await;
        }
        Ok(())
    }

    /// Writes the checksum and makes the file durable; returns its size.
    async fn finish(mut self) -> io::Result<u64> {
        self.drain(true).await?;
        assert!(self.buf.is_empty());
        self.out.write_all(&self.crc.to_le_bytes()).await?;
        self.out.close_synced().await?;
        Ok(self.bytes + CHECKSUM_BYTES as u64)
    }
}

/// Streams the image of `state` into `dir` as [`file_name`] of its block,
/// durably, yielding to other tasks between chunks; returns its size in
/// bytes. On a glommio executor for a [`DiskDir`]. `state` is a snapshot:
/// the sequencer keeps writing its own copy meanwhile.
pub async fn write<D: LogDir>(
    dir: &D,
    meta: &CheckpointMeta,
    state: &HotState,
    trie: &[u8],
) -> io::Result<u64> {
    let name = file_name(meta.number);
    let tmp = format!("{name}.tmp");
    let mut chunks = Chunks {
        out: dir.create_stream(&tmp).await?,
        buf: Vec::with_capacity(CHUNK_BYTES + 4096),
        crc: 0,
        bytes: 0,
    };
    encode_header(meta, state, &mut chunks.buf);
    // Each count in the image is the number of entries that follow it.
    let mut written = 0;
    for (address, account) in state.accounts() {
        let mut w = Writer(&mut chunks.buf);
        w.raw(address.as_slice());
        w.account(account);
        written += 1;
        chunks.drain(false).await?;
    }
    assert!(written == state.account_count());
    Writer(&mut chunks.buf).u64(state.slot_count() as u64);
    written = 0;
    for ((address, slot), value) in state.slots() {
        assert!(!value.is_zero());
        Writer(&mut chunks.buf).slot(address, slot, value);
        written += 1;
        chunks.drain(false).await?;
    }
    assert!(written == state.slot_count());
    Writer(&mut chunks.buf).u64(state.code_count() as u64);
    written = 0;
    for (hash, code) in state.codes() {
        Writer(&mut chunks.buf).code(hash, code);
        written += 1;
        chunks.drain(false).await?;
    }
    assert!(written == state.code_count());
    Writer(&mut chunks.buf).u64(trie.len() as u64);
    for chunk in trie.chunks(CHUNK_BYTES) {
        chunks.buf.extend_from_slice(chunk);
        chunks.drain(false).await?;
    }
    let bytes = chunks.finish().await?;
    assert!(bytes >= (HEADER_BYTES + 4 * 8 + CHECKSUM_BYTES) as u64);
    // Durable under its temporary name before it gets its real one: a crash
    // leaves a whole image under the real name, or none.
    dir.rename(&tmp, &name).await?;
    dir.sync_dir().await?;
    Ok(bytes)
}

/// Once the checkpoint of block `written` is durable: keeps it and the
/// newest ones below it for which `is_valid` holds, `keep` in all, removes
/// every checkpoint file older than the kept ones, and any unfinished
/// (`.tmp`) one. Files newer than `written`, and invalid ones newer than
/// the oldest kept, are left in place and never counted. Returns the kept
/// numbers, newest first.
pub async fn prune<D: LogDir>(
    dir: &D,
    keep: usize,
    written: u64,
    is_valid: impl Fn(u64) -> bool,
) -> io::Result<Vec<u64>> {
    assert!(keep >= 1);
    let mut kept = Vec::new();
    for (number, name) in list(dir)? {
        if number > written {
            tracing::warn!(
                name,
                written,
                "checkpoint file past the newest checkpoint written: not counted; left in place"
            );
            continue;
        }
        if kept.len() == keep {
            dir.remove(&name).await?;
        } else if number == written || is_valid(number) {
            kept.push(number);
        } else {
            tracing::warn!(name, "not a valid checkpoint: not counted; left in place");
        }
    }
    assert!(kept.len() <= keep);
    for name in dir.list()? {
        if name.ends_with(".tmp") {
            dir.remove(&name).await?;
        }
    }
    Ok(kept)
}

/// Checks the checkpoint `name` of `dir` without decoding its state: the
/// checksum over the whole file, the magic and the version; returns its
/// header.
pub fn verify<D: LogDir>(dir: &D, name: &str) -> Result<CheckpointMeta, CheckpointError> {
    let map = dir.map(name).map_err(|source| CheckpointError::Io {
        name: name.to_string(),
        source,
    })?;
    checked_body(&map)
        .and_then(|body| {
            let mut r = Reader::new(body);
            decode_header(&mut r)
                .map(|(meta, _)| meta)
                .map_err(|source| ImageError::Body {
                    offset: r.position(),
                    source,
                })
        })
        .map_err(|source| CheckpointError::Corrupt {
            name: name.to_string(),
            source,
        })
}

/// The image without its checksum, once the checksum matched.
fn checked_body(bytes: &[u8]) -> Result<&[u8], ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let Some(body_bytes) = bytes.len().checked_sub(CHECKSUM_BYTES) else {
        return Err(ImageError::Short { len: bytes.len() });
    };
    let (body, trailer) = bytes.split_at(body_bytes);
    let stored = u32::from_le_bytes(trailer.try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(ImageError::Checksum {
            body_bytes,
            stored,
            computed,
        });
    }
    Ok(body)
}

/// Reads and checks the checkpoint `name` of `dir` (through mmap on disk).
pub fn read<D: LogDir>(dir: &D, name: &str) -> Result<Checkpoint, CheckpointError> {
    // On disk this is an mmap. Checkpoint files are never written in place:
    // a finished one is only read, renamed into place whole, or removed.
    let map = dir.map(name).map_err(|source| CheckpointError::Io {
        name: name.to_string(),
        source,
    })?;
    decode(&map).map_err(|source| CheckpointError::Corrupt {
        name: name.to_string(),
        source,
    })
}

/// Decodes and checks a whole image.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, ImageError> {
    let body = checked_body(bytes)?;
    let mut r = Reader::new(body);
    let decoded = decode_header(&mut r).and_then(|(meta, version)| {
        let state = decode_state(&mut r)?;
        let trie = if version == VERSION_1 {
            Vec::new()
        } else {
            let len = usize::try_from(r.u64()?).map_err(|_| PayloadError::Invalid("length"))?;
            r.take(len)?.to_vec()
        };
        r.finish()?;
        Ok(Checkpoint { meta, state, trie })
    });
    decoded.map_err(|source| ImageError::Body {
        offset: r.position(),
        source,
    })
}

/// The header and the format version.
fn decode_header(r: &mut Reader<'_>) -> Result<(CheckpointMeta, u32), PayloadError> {
    if r.take(8)? != MAGIC {
        return Err(PayloadError::Invalid("magic"));
    }
    let raw = r.take(4)?;
    let version = u32::from_le_bytes(raw.try_into().expect("4 bytes"));
    if version != VERSION && version != VERSION_1 {
        return Err(PayloadError::Version(raw[0]));
    }
    let meta = CheckpointMeta {
        number: r.u64()?,
        hash: r.b256()?,
        state_root: r.b256()?,
    };
    assert!(r.position() == HEADER_BYTES);
    Ok((meta, version))
}

fn decode_state(r: &mut Reader<'_>) -> Result<HotState, PayloadError> {
    let count = usize::try_from(r.u64()?).map_err(|_| PayloadError::Invalid("count"))?;
    let mut progress =
        crate::progress::Progress::new("loading the checkpoint", "accounts", count as u64);
    let count = r.check_count(count, 92)?;
    let mut accounts = Vec::with_capacity(count);
    for done in 0..count {
        if done % 1024 == 0 {
            progress.tick(done as u64);
        }
        accounts.push((r.address()?, r.account()?));
    }
    let count = usize::try_from(r.u64()?).map_err(|_| PayloadError::Invalid("count"))?;
    let mut progress =
        crate::progress::Progress::new("loading the checkpoint", "slots", count as u64);
    let count = r.check_count(count, 84)?;
    let mut slots = Vec::with_capacity(count);
    for done in 0..count {
        if done % 1024 == 0 {
            progress.tick(done as u64);
        }
        let (address, slot, value) = r.slot()?;
        if value.is_zero() {
            return Err(PayloadError::Invalid("zero storage value"));
        }
        slots.push(((address, slot), value));
    }
    let count = usize::try_from(r.u64()?).map_err(|_| PayloadError::Invalid("count"))?;
    let count = r.check_count(count, 36)?;
    let mut codes = Vec::with_capacity(count);
    for _ in 0..count {
        let (hash, code) = r.code()?;
        if code.hash_slow() != hash {
            return Err(PayloadError::Invalid("code hash"));
        }
        codes.push((hash, code));
    }
    // Boot loads checkpoints before the node serves: every CPU may help.
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    Ok(HotState::from_entries_on(accounts, slots, codes, threads))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccountState;
    use crate::io::{CrashMode, Fault, SimDisk, ready, ready as now};
    use alloy_primitives::{Address, Bytes, U256};
    use revm::bytecode::Bytecode;

    fn state(accounts: u64) -> HotState {
        let mut state = HotState::new();
        let hash = state.insert_code(Bytecode::new_raw(Bytes::from_static(&[0x60, 0x00, 0x00])));
        for i in 0..accounts {
            let address = Address::with_last_byte(i as u8).create(i);
            state.set_account(
                address,
                AccountState {
                    nonce: i,
                    balance: U256::from(i * 1_000 + 1),
                    code_hash: if i % 7 == 0 {
                        hash
                    } else {
                        AccountState::funded(U256::ZERO).code_hash
                    },
                },
            );
            if i % 3 == 0 {
                state.set_storage(address, U256::from(i), U256::from(i + 5));
            }
        }
        state
    }

    fn meta() -> CheckpointMeta {
        CheckpointMeta {
            number: 42,
            hash: B256::repeat_byte(7),
            state_root: B256::repeat_byte(9),
        }
    }

    fn same(a: &HotState, b: &HotState) {
        assert_eq!(a.account_count(), b.account_count());
        assert_eq!(a.slot_count(), b.slot_count());
        assert_eq!(a.code_count(), b.code_count());
        for (address, account) in a.accounts() {
            assert_eq!(b.account(address), Some(account));
        }
        for ((address, slot), value) in a.slots() {
            assert_eq!(b.storage(address, slot), *value);
        }
    }

    /// A trie section's bytes (opaque here), longer than a write chunk.
    fn trie_section() -> Vec<u8> {
        (0..CHUNK_BYTES + 1000).map(|i| (i * 7) as u8).collect()
    }

    #[test]
    fn an_image_round_trips_and_any_damage_is_caught() {
        let original = state(500);
        let bytes = encode(&meta(), &original, &[1, 2, 3]);
        let Checkpoint {
            meta: m,
            state: decoded,
            trie,
        } = decode(&bytes).unwrap();
        assert_eq!(m, meta());
        assert_eq!(trie, [1, 2, 3]);
        same(&original, &decoded);
        // Every single-byte flip and every truncation is an error, never a panic.
        for at in (0..bytes.len()).step_by(97) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            assert!(decode(&bad).is_err(), "flip at {at}");
            assert!(decode(&bytes[..at]).is_err(), "cut at {at}");
        }
    }

    /// Version 1 had no trie section: its images still load, without one.
    #[test]
    fn a_version_1_image_reads_without_trie_hashes() {
        let original = state(50);
        let mut v1 = encode(&meta(), &original, &[]);
        // Drop the checksum and the empty section's length; version 1.
        v1.truncate(v1.len() - CHECKSUM_BYTES - 8);
        v1[8..12].copy_from_slice(&VERSION_1.to_le_bytes());
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let image = decode(&v1).unwrap();
        assert!(image.trie.is_empty());
        same(&original, &image.state);
        v1[8] = 3;
        assert!(decode(&v1).is_err());
    }

    #[test]
    fn arbitrary_bytes_with_a_valid_checksum_are_errors_not_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..400usize {
            let mut body: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            if len > 12 {
                body[..8].copy_from_slice(MAGIC);
                body[8..12].copy_from_slice(&VERSION.to_le_bytes());
            }
            let crc = crc32c::crc32c(&body);
            body.extend_from_slice(&crc.to_le_bytes());
            assert!(decode(&body).is_err());
        }
    }

    /// Writes `bytes` as the whole file `name`, durably.
    fn put(disk: &SimDisk, name: &str, bytes: &[u8]) {
        let mut file = disk.create_stream(name).unwrap();
        now(file.write_all(bytes)).unwrap();
        now(file.close_synced()).unwrap();
    }

    fn numbers(disk: &SimDisk) -> Vec<u64> {
        list(disk).unwrap().into_iter().map(|(n, _)| n).collect()
    }

    /// Junk with a checkpoint's name (garbage, a partial copy, a number past
    /// the chain) never counts as kept and never makes a valid one go.
    #[test]
    fn junk_checkpoint_files_never_displace_valid_ones() {
        let disk = SimDisk::new(1, 1 << 24);
        let image = |number| encode(&CheckpointMeta { number, ..meta() }, &state(50), &[]);
        for number in [10, 20, 30] {
            put(&disk, &file_name(number), &image(number));
        }
        put(&disk, "99999999999.ckpt", b"garbage");
        put(&disk, &file_name(99_999_999_998), &image(99_999_999_998));
        let partial = image(25);
        put(&disk, &file_name(25), &partial[..partial.len() / 2]);
        put(&disk, &file_name(28), b"");
        assert!(verify(&disk, &file_name(25)).is_err());
        assert!(verify(&disk, &file_name(28)).is_err());
        assert!(verify(&disk, "99999999999.ckpt").is_err());
        // 30 was just written; 20 is the newest valid one below it.
        let is_valid = |n| verify(&disk, &file_name(n)).is_ok();
        let kept = now(prune(&disk, KEEP, 30, is_valid)).unwrap();
        assert_eq!(kept, vec![30, 20]);
        // 10 is older than the kept ones: removed. The junk newer than the
        // kept ones is left for the operator, never counted.
        assert_eq!(
            numbers(&disk),
            vec![99_999_999_999, 99_999_999_998, 30, 28, 25, 20]
        );
        // A later checkpoint: the junk between the kept ones goes once older.
        put(&disk, &file_name(40), &image(40));
        let kept = now(prune(&disk, KEEP, 40, is_valid)).unwrap();
        assert_eq!(kept, vec![40, 30]);
        assert_eq!(numbers(&disk), vec![99_999_999_999, 99_999_999_998, 40, 30]);
    }

    /// Errors name what is wrong with the file, and where.
    #[test]
    fn damaged_images_are_named_by_what_is_wrong() {
        let bytes = encode(&meta(), &state(3), &[]);
        assert_eq!(decode(&[]).unwrap_err(), ImageError::Empty);
        assert_eq!(decode(&[1, 2]).unwrap_err(), ImageError::Short { len: 2 });
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(ImageError::Checksum { .. })
        ));
        // A valid checksum over a body that stops early: the offset where.
        let body = &bytes[..40];
        let mut image = body.to_vec();
        image.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        assert_eq!(
            decode(&image).unwrap_err(),
            ImageError::Body {
                offset: 20,
                source: PayloadError::Truncated(20)
            }
        );
        let disk = SimDisk::new(2, 1 << 20);
        put(&disk, &file_name(7), &image);
        let error = read(&disk, &file_name(7)).unwrap_err().to_string();
        assert!(error.contains(&file_name(7)), "{error}");
        assert!(error.contains("at byte 20"), "{error}");
        assert!(error.contains("boot skips it"), "{error}");
        assert!(matches!(
            read(&disk, "absent.ckpt"),
            Err(CheckpointError::Io { .. })
        ));
    }

    /// What `write` produces is what `encode` produces; `read` gives the
    /// state back; `prune` keeps the newest and removes unfinished files.
    fn write_then_read<D: LogDir>(dir: &D, original: &HotState) {
        let expected = encode(&meta(), original, &trie_section());
        for number in [40, 41, 42] {
            let meta = CheckpointMeta { number, ..meta() };
            let bytes = ready(write(dir, &meta, original, &trie_section())).unwrap();
            assert_eq!(bytes, expected.len() as u64);
        }
        assert_eq!(&*dir.map(&file_name(42)).unwrap(), &expected[..]);
        let mut unfinished = ready(dir.create_stream("x.ckpt.tmp")).unwrap();
        ready(unfinished.write_all(b"unfinished")).unwrap();
        assert_eq!(verify(dir, &file_name(41)).unwrap().number, 41);
        let kept = ready(prune(dir, 2, 42, |n| verify(dir, &file_name(n)).is_ok())).unwrap();
        assert_eq!(kept, vec![42, 41]);
        let left: Vec<u64> = list(dir).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, vec![42, 41]);
        assert!(!dir.list().unwrap().iter().any(|n| n.ends_with(".tmp")));
        let image = read(dir, &file_name(42)).unwrap();
        assert_eq!(image.meta, meta());
        assert_eq!(image.trie, trie_section());
        same(original, &image.state);
    }

    #[test]
    fn streamed_write_equals_the_encoding_on_the_simulated_disk() {
        write_then_read(&SimDisk::new(3, 1 << 26), &state(20_000));
    }

    #[test]
    fn streamed_write_equals_the_encoding_on_disk() {
        let path = std::env::temp_dir().join(format!("fulmen-ckpt-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let original = state(20_000);
        glommio::LocalExecutorBuilder::default()
            .spawn({
                let path = path.clone();
                move || async move {
                    let dir = DiskDir::buffered(&path);
                    let expected = encode(&meta(), &original, &trie_section());
                    for number in [40, 41, 42] {
                        let meta = CheckpointMeta { number, ..meta() };
                        write(&dir, &meta, &original, &trie_section())
                            .await
                            .unwrap();
                    }
                    assert_eq!(std::fs::read(path.join(file_name(42))).unwrap(), expected);
                    std::fs::write(path.join("x.ckpt.tmp"), b"unfinished").unwrap();
                    let kept = prune(&dir, 2, 42, |n| verify(&dir, &file_name(n)).is_ok())
                        .await
                        .unwrap();
                    assert_eq!(kept, vec![42, 41]);
                    assert_eq!(dir.list().unwrap(), vec![file_name(41), file_name(42)]);
                    let image = read(&dir, &file_name(42)).unwrap();
                    assert_eq!(image.meta, meta());
                    assert_eq!(image.trie, trie_section());
                    same(&original, &image.state);
                }
            })
            .unwrap()
            .join()
            .unwrap();
        let _ = std::fs::remove_dir_all(&path);
    }

    /// Writes checkpoints 10 and 20, then 30 and a prune, with the disk
    /// failing for good at every operation in turn and then crashing (torn,
    /// lost, or kept): every file that reads back is the whole image of its
    /// block, never a torn one; an image whose write returned is there after
    /// the crash; and the newest valid one is never lost to a prune.
    #[test]
    fn a_crash_at_every_point_of_a_checkpoint_write_leaves_whole_images_only() {
        let states: Vec<HotState> = (0..3).map(|i| state(300 + i * 50)).collect();
        let image = |i: usize| CheckpointMeta {
            number: 10 * (i as u64 + 1),
            ..meta()
        };
        let run = |disk: &SimDisk| -> Vec<u64> {
            let mut done = Vec::new();
            for (i, state) in states.iter().enumerate() {
                if now(write(disk, &image(i), state, &[9; 100])).is_err() {
                    return done;
                }
                done.push(image(i).number);
                if now(prune(disk, KEEP, image(i).number, |_| true)).is_err() {
                    return done;
                }
            }
            done
        };
        let clean = SimDisk::new(1, 1 << 26);
        assert_eq!(run(&clean), vec![10, 20, 30]);
        assert_eq!(numbers(&clean), vec![30, 20]);
        let mut points = 0;
        for at_op in 0..clean.ops() {
            for mode in [
                CrashMode::TearUnflushed,
                CrashMode::LoseUnflushed,
                CrashMode::KeepAll,
            ] {
                let disk = SimDisk::new(at_op * 3 + 1, 1 << 26);
                disk.inject(Some(Fault::Eio {
                    at_op,
                    forever: true,
                }));
                let done = run(&disk);
                let rebooted = disk.crash(mode);
                let what = format!("EIO from op {at_op}, then {mode:?}");
                for (number, name) in list(&rebooted).unwrap() {
                    let i = (number / 10 - 1) as usize;
                    if let Ok(read) = read(&rebooted, &name) {
                        assert_eq!(read.meta, image(i), "{what}");
                        assert_eq!(read.trie, [9; 100], "{what}");
                        same(&states[i], &read.state);
                    }
                }
                let valid: Vec<u64> = list(&rebooted)
                    .unwrap()
                    .into_iter()
                    .filter(|(_, name)| read(&rebooted, name).is_ok())
                    .map(|(n, _)| n)
                    .collect();
                // A write that returned is durable (a later one that failed
                // may have reached the disk too).
                if let Some(newest) = done.last() {
                    assert!(valid.contains(newest), "{what}: {valid:?}");
                }
                points += 1;
            }
        }
        assert!(points >= 30, "{points} crash points");
    }
}
