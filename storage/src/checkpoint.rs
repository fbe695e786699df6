//! Checkpoints: full images of the hot state at a block boundary, so that
//! boot loads the newest valid image and replays only the log after it.
//!
//! One file per checkpoint, `checkpoint/<block number, 20 digits>.ckpt`,
//! format version 1 (the codec of [`crate::codec`]):
//!
//! | field | encoding |
//! |---|---|
//! | magic | 8 bytes `FULMCKPT` |
//! | version | u32, 1 |
//! | block | number u64, hash 32 bytes, state root 32 bytes |
//! | accounts | u64 count; per account: address 20 bytes, nonce u64, balance 32 bytes BE, code hash 32 bytes |
//! | slots | u64 count; per slot: address 20 bytes, slot 32 bytes BE, value 32 bytes BE |
//! | codes | u64 count; per code: hash 32 bytes, u32 length, bytes |
//! | checksum | u32 CRC32C of everything before it |
//!
//! A file is written under a temporary name, made durable (fdatasync), then
//! renamed into place and the directory synced, so a crash leaves either a
//! whole image or none. Reading checks the checksum before anything else;
//! the caller checks the state root against the sealed header in the log.
//!
//! Pruning keeps the newest [`KEEP`] checkpoints that are whole (checksum
//! and header checked) and not newer than the one just written. A file with
//! a checkpoint's name that is not one (junk, a partial copy, a number past
//! the chain) never counts as kept and never makes a valid one go: it is
//! reported and left in place while newer than the kept ones, and removed
//! with the old ones once older.

use std::io;
use std::path::{Path, PathBuf};

use alloy_primitives::B256;
use futures::AsyncWriteExt;

use crate::HotState;
use crate::codec::{PayloadError, Reader, Writer};

const MAGIC: &[u8; 8] = b"FULMCKPT";
const VERSION: u32 = 1;
/// Encoded bytes handed to the file at a time: small enough that the
/// encoder yields to latency-sensitive tasks on the same core every ~0.2 ms.
const CHUNK_BYTES: usize = 256 * 1024;

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
}

/// How many checkpoints are kept; older ones are removed once a newer one
/// is durable.
pub const KEEP: usize = 2;

/// Writes each checkpoint it is given, one at a time, then prunes old
/// ones. Runs as a background task on the storage core. A failed
/// checkpoint is reported and costs nothing else: the log still holds
/// every record.
pub async fn run_checkpoints(
    dir: PathBuf,
    inbox: glommio::channels::shared_channel::ConnectedReceiver<CheckpointJob>,
) {
    // Checked once per process: numbers of whole checkpoints, and of junk.
    let mut valid = std::collections::HashSet::new();
    let mut junk = std::collections::HashSet::new();
    while let Some(job) = inbox.recv().await {
        let began = std::time::Instant::now();
        match write(&dir, &job.meta, &job.state).await {
            Ok(path) => {
                let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
                tracing::info!(
                    number = job.meta.number,
                    accounts = job.state.account_count(),
                    slots = job.state.slot_count(),
                    mb = format!("{:.1}", bytes as f64 / 1e6),
                    ms = began.elapsed().as_millis() as u64,
                    "checkpoint written"
                );
                valid.insert(job.meta.number);
                check_older(&dir, job.meta.number, &mut valid, &mut junk).await;
                if let Err(e) = prune(&dir, KEEP, job.meta.number, |n| valid.contains(&n)) {
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
    dir: &Path,
    written: u64,
    valid: &mut std::collections::HashSet<u64>,
    junk: &mut std::collections::HashSet<u64>,
) {
    let Ok(found) = list(dir) else { return };
    for (number, path) in found {
        if number >= written || valid.contains(&number) || junk.contains(&number) {
            continue;
        }
        let checked = path.clone();
        let verdict = glommio::executor()
            .spawn_blocking(move || verify(&checked))
            .await;
        match verdict {
            Ok(meta) if meta.number == number => {
                valid.insert(number);
            }
            Ok(meta) => {
                tracing::warn!(path = %path.display(), inner = meta.number, "checkpoint file named after another block: not counted as a checkpoint");
                junk.insert(number);
            }
            Err(e) => {
                tracing::warn!(error = %e, "not a valid checkpoint: not counted as one (removed once older than the kept ones)");
                junk.insert(number);
            }
        }
    }
}

/// Why a checkpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file cannot be read.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is not a whole, valid image.
    #[error("checkpoint {path} is damaged: {detail}")]
    Corrupt {
        /// Which file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// File name of the checkpoint at block `number`.
pub fn file_name(number: u64) -> String {
    format!("{number:020}.ckpt")
}

/// Checkpoints in `dir`, newest first (an absent directory holds none).
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".ckpt"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push((number, entry.path()));
        }
    }
    found.sort_by_key(|b| std::cmp::Reverse(b.0));
    Ok(found)
}

fn encode_header(meta: &CheckpointMeta, state: &HotState, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.raw(MAGIC);
    w.raw(&VERSION.to_le_bytes());
    w.u64(meta.number);
    w.raw(meta.hash.as_slice());
    w.raw(meta.state_root.as_slice());
    w.u64(state.account_count() as u64);
}

/// Encodes a whole image in memory (tests and tools; the node streams it
/// with [`write`]).
pub fn encode(meta: &CheckpointMeta, state: &HotState) -> Vec<u8> {
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
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Streams the image of `state` into `dir` through the executor's io_uring,
/// durably, yielding to other tasks between chunks; returns its path. Must
/// run on a glommio executor. `state` is a snapshot: the sequencer keeps
/// writing its own copy meanwhile.
pub async fn write(dir: &Path, meta: &CheckpointMeta, state: &HotState) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(file_name(meta.number));
    let tmp = dir.join(format!("{}.tmp", file_name(meta.number)));
    let file = glommio::io::BufferedFile::create(&tmp).await?;
    let mut out = glommio::io::StreamWriterBuilder::new(file)
        .with_sync_on_close_disabled(false)
        .with_buffer_size(CHUNK_BYTES)
        .build();
    let mut buf = Vec::with_capacity(CHUNK_BYTES + 4096);
    let mut crc = 0u32;
    encode_header(meta, state, &mut buf);
    // Hands a full chunk to the file; the await is where other tasks run.
    macro_rules! drain {
        ($force:expr) => {
            if $force || buf.len() >= CHUNK_BYTES {
                crc = crc32c::crc32c_append(crc, &buf);
                out.write_all(&buf).await?;
                buf.clear();
                glommio::yield_if_needed().await;
            }
        };
    }
    for (address, account) in state.accounts() {
        let mut w = Writer(&mut buf);
        w.raw(address.as_slice());
        w.account(account);
        drain!(false);
    }
    Writer(&mut buf).u64(state.slot_count() as u64);
    for ((address, slot), value) in state.slots() {
        Writer(&mut buf).slot(address, slot, value);
        drain!(false);
    }
    Writer(&mut buf).u64(state.code_count() as u64);
    for (hash, code) in state.codes() {
        Writer(&mut buf).code(hash, code);
        drain!(false);
    }
    drain!(true);
    out.write_all(&crc.to_le_bytes()).await?;
    out.close().await?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Once the checkpoint of block `written` is durable: keeps it and the
/// newest ones below it for which `is_valid` holds, `keep` in all, removes
/// every checkpoint file older than the kept ones, and any unfinished
/// (`.tmp`) one. Files newer than `written`, and invalid ones newer than
/// the oldest kept, are left in place and never counted. Returns the kept
/// numbers, newest first.
pub fn prune(
    dir: &Path,
    keep: usize,
    written: u64,
    is_valid: impl Fn(u64) -> bool,
) -> io::Result<Vec<u64>> {
    assert!(keep >= 1);
    let mut kept = Vec::new();
    for (number, path) in list(dir)? {
        if number > written {
            tracing::warn!(path = %path.display(), written, "checkpoint file past the newest checkpoint written: not counted; left in place");
            continue;
        }
        if kept.len() == keep {
            std::fs::remove_file(path)?;
        } else if number == written || is_valid(number) {
            kept.push(number);
        } else {
            tracing::warn!(path = %path.display(), "not a valid checkpoint: not counted; left in place");
        }
    }
    assert!(kept.len() <= keep);
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            std::fs::remove_file(path)?;
        }
    }
    Ok(kept)
}

/// Checks the checkpoint at `path` without decoding its state: the
/// checksum over the whole file, the magic and the version; returns its
/// header.
pub fn verify(path: &Path) -> Result<CheckpointMeta, CheckpointError> {
    let io_err = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |detail: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    if file.metadata().map_err(io_err)?.len() == 0 {
        return Err(corrupt("empty".into()));
    }
    // SAFETY: as in `read`: checkpoint files are never written in place.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
    let body = checked_body(&map).map_err(corrupt)?;
    let mut r = Reader::new(body);
    let header = (|| {
        if r.take(8)? != MAGIC {
            return Err(PayloadError::Invalid("magic"));
        }
        let version = r.take(4)?;
        if version != VERSION.to_le_bytes() {
            return Err(PayloadError::Version(version[0]));
        }
        Ok(CheckpointMeta {
            number: r.u64()?,
            hash: r.b256()?,
            state_root: r.b256()?,
        })
    })();
    header.map_err(|e| corrupt(e.to_string()))
}

/// The image without its checksum, once the checksum matched.
fn checked_body(bytes: &[u8]) -> Result<&[u8], String> {
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err("shorter than a checksum".into());
    };
    let (body, trailer) = bytes.split_at(body_len);
    let stored = u32::from_le_bytes(trailer.try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(format!(
            "checksum {computed:#010x} differs from the stored {stored:#010x}"
        ));
    }
    Ok(body)
}

/// Reads and checks the checkpoint at `path` (through mmap).
pub fn read(path: &Path) -> Result<(CheckpointMeta, HotState), CheckpointError> {
    let io_err = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    // SAFETY: checkpoint files are never written in place: a finished one is
    // only read, renamed into place whole, or removed.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
    decode(&map).map_err(|detail| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        detail,
    })
}

/// Decodes and checks a whole image.
pub fn decode(bytes: &[u8]) -> Result<(CheckpointMeta, HotState), String> {
    let body = checked_body(bytes)?;
    decode_body(body).map_err(|e| e.to_string())
}

fn decode_body(body: &[u8]) -> Result<(CheckpointMeta, HotState), PayloadError> {
    let mut r = Reader::new(body);
    if r.take(8)? != MAGIC {
        return Err(PayloadError::Invalid("magic"));
    }
    let version = r.take(4)?;
    if version != VERSION.to_le_bytes() {
        return Err(PayloadError::Version(version[0]));
    }
    let meta = CheckpointMeta {
        number: r.u64()?,
        hash: r.b256()?,
        state_root: r.b256()?,
    };
    let mut state = HotState::new();
    let count = usize::try_from(r.u64()?).map_err(|_| PayloadError::Invalid("count"))?;
    for _ in 0..r.check_count(count, 92)? {
        let address = r.address()?;
        state.set_account(address, r.account()?);
    }
    let count = usize::try_from(r.u64()?).map_err(|_| PayloadError::Invalid("count"))?;
    for _ in 0..r.check_count(count, 84)? {
        let (address, slot, value) = r.slot()?;
        if value.is_zero() {
            return Err(PayloadError::Invalid("zero storage value"));
        }
        state.set_storage(address, slot, value);
    }
    let count = usize::try_from(r.u64()?).map_err(|_| PayloadError::Invalid("count"))?;
    for _ in 0..r.check_count(count, 36)? {
        let (hash, code) = r.code()?;
        if state.insert_code(code) != hash {
            return Err(PayloadError::Invalid("code hash"));
        }
    }
    r.finish()?;
    Ok((meta, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccountState;
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

    #[test]
    fn an_image_round_trips_and_any_damage_is_caught() {
        let original = state(500);
        let bytes = encode(&meta(), &original);
        let (m, decoded) = decode(&bytes).unwrap();
        assert_eq!(m, meta());
        same(&original, &decoded);
        // Every single-byte flip and every truncation is an error, never a panic.
        for at in (0..bytes.len()).step_by(97) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            assert!(decode(&bad).is_err(), "flip at {at}");
            assert!(decode(&bytes[..at]).is_err(), "cut at {at}");
        }
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

    /// Junk with a checkpoint's name (garbage, a partial copy, a number past
    /// the chain) never counts as kept and never makes a valid one go.
    #[test]
    fn junk_checkpoint_files_never_displace_valid_ones() {
        let dir = std::env::temp_dir().join(format!("fulmen-ckpt-junk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let image = |number| encode(&CheckpointMeta { number, ..meta() }, &state(50));
        for number in [10, 20, 30] {
            std::fs::write(dir.join(file_name(number)), image(number)).unwrap();
        }
        std::fs::write(dir.join("99999999999.ckpt"), b"garbage").unwrap();
        std::fs::write(dir.join(file_name(99_999_999_998)), image(99_999_999_998)).unwrap();
        let partial = image(25);
        std::fs::write(dir.join(file_name(25)), &partial[..partial.len() / 2]).unwrap();
        std::fs::write(dir.join(file_name(28)), b"").unwrap();
        assert!(verify(&dir.join(file_name(25))).is_err());
        assert!(verify(&dir.join(file_name(28))).is_err());
        assert!(verify(&dir.join("99999999999.ckpt")).is_err());
        // 30 was just written; 20 is the newest valid one below it.
        let is_valid = |n| verify(&dir.join(file_name(n))).is_ok();
        let kept = prune(&dir, KEEP, 30, is_valid).unwrap();
        assert_eq!(kept, vec![30, 20]);
        let left: Vec<u64> = list(&dir).unwrap().into_iter().map(|(n, _)| n).collect();
        // 10 is older than the kept ones: removed. The junk newer than the
        // kept ones is left for the operator, never counted.
        assert_eq!(left, vec![99_999_999_999, 99_999_999_998, 30, 28, 25, 20]);
        // A later checkpoint: the junk between the kept ones goes once older.
        std::fs::write(dir.join(file_name(40)), image(40)).unwrap();
        let kept = prune(&dir, KEEP, 40, is_valid).unwrap();
        assert_eq!(kept, vec![40, 30]);
        let left: Vec<u64> = list(&dir).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, vec![99_999_999_999, 99_999_999_998, 40, 30]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn streamed_write_equals_the_encoding_and_prune_keeps_the_newest() {
        let dir = std::env::temp_dir().join(format!("fulmen-ckpt-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let original = state(20_000);
        let expected = encode(&meta(), &original);
        let written = glommio::LocalExecutorBuilder::default()
            .spawn({
                let dir = dir.clone();
                let original = original.clone();
                move || async move {
                    let mut paths = Vec::new();
                    for number in [40, 41, 42] {
                        let meta = CheckpointMeta { number, ..meta() };
                        paths.push(write(&dir, &meta, &original).await.unwrap());
                    }
                    paths
                }
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(std::fs::read(&written[2]).unwrap(), expected);
        std::fs::write(dir.join("x.ckpt.tmp"), b"unfinished").unwrap();
        assert_eq!(verify(&written[1]).unwrap().number, 41);
        let kept = prune(&dir, 2, 42, |n| verify(&dir.join(file_name(n))).is_ok()).unwrap();
        assert_eq!(kept, vec![42, 41]);
        let left: Vec<u64> = list(&dir).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, vec![42, 41]);
        let (m, decoded) = read(&written[2]).unwrap();
        assert_eq!(m, meta());
        same(&original, &decoded);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
