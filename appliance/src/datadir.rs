//! The data directory: its LOCK, the genesis it belongs to, and boot (read
//! the log, replay it, check it).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use alloy_primitives::B256;
use fulmen_exec::chain::ChainSpec;
use fulmen_exec::recover::{Replayed, replay};
use fulmen_exec::sequencer::Genesis;
use fulmen_storage::disk::DiskDir;
use fulmen_storage::log::{Tail, read_log};

/// A locked data directory. The lock lasts as long as this value (the
/// kernel drops it when the process dies, even by SIGKILL).
pub(crate) struct Datadir {
    path: PathBuf,
    _lock: File,
}

impl Datadir {
    /// Creates `path` if needed and takes its LOCK, or says who holds it.
    pub(crate) fn lock(path: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(path)
            .map_err(|e| format!("cannot create datadir {}: {e}", path.display()))?;
        let lock_path = path.join("LOCK");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(format!(
                    "datadir {} is in use by another fulmen process (pid {}); stop it or use another --datadir",
                    path.display(),
                    holder.trim()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", lock_path.display()));
            }
        }
        file.set_len(0)
            .and_then(|()| write!(file, "{}", std::process::id()))
            .map_err(|e| format!("cannot write {}: {e}", lock_path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            _lock: file,
        })
    }

    /// The log's directory.
    pub(crate) fn log_dir(&self) -> PathBuf {
        log_dir(&self.path)
    }

    /// Records the genesis hash on first use; refuses a datadir made for
    /// another chain.
    pub(crate) fn bind_genesis(&self, hash: B256) -> Result<(), String> {
        let file = self.path.join("GENESIS");
        match std::fs::read_to_string(&file) {
            Ok(text) => check_genesis_text(&self.path, &text, hash),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let tmp = self.path.join("GENESIS.tmp");
                std::fs::write(&tmp, format!("{hash}\n"))
                    .and_then(|()| File::open(&tmp)?.sync_all())
                    .and_then(|()| std::fs::rename(&tmp, &file))
                    .and_then(|()| File::open(&self.path)?.sync_all())
                    .map_err(|e| format!("cannot write {}: {e}", file.display()))
            }
            Err(e) => Err(format!("cannot read {}: {e}", file.display())),
        }
    }
}

fn log_dir(datadir: &Path) -> PathBuf {
    datadir.join("log")
}

fn check_genesis_text(datadir: &Path, text: &str, hash: B256) -> Result<(), String> {
    let stored: B256 = text
        .trim()
        .parse()
        .map_err(|_| format!("{}/GENESIS is not a hash", datadir.display()))?;
    if stored != hash {
        return Err(format!(
            "datadir {} belongs to the chain with genesis {stored}, but this node's genesis is {hash} \
             (another genesis file, or dev settings such as block_gas_limit changed); use another --datadir",
            datadir.display()
        ));
    }
    Ok(())
}

/// What boot found and rebuilt.
pub(crate) struct Booted {
    /// The chain.
    pub replayed: Replayed,
    /// Where writing resumes.
    pub tail: Tail,
}

/// Reads the log of `datadir` and replays it. With `check_every_block`,
/// every block's roots are recomputed (`fulmen db check`); reading alone
/// never changes a file.
pub(crate) fn boot(
    datadir: &Path,
    spec: &ChainSpec,
    genesis: &Genesis,
    now_ms: u64,
    check_every_block: bool,
) -> Result<Booted, String> {
    if let Ok(text) = std::fs::read_to_string(datadir.join("GENESIS")) {
        check_genesis_text(datadir, &text, genesis.header.hash_slow())?;
    }
    let began = Instant::now();
    let dir = DiskDir::for_reading(&log_dir(datadir));
    let (recovery, tail) = read_log(&dir)
        .map_err(|e| format!("cannot boot from {}: {e}", log_dir(datadir).display()))?;
    let read = began.elapsed();
    if let Some((at, error)) = &recovery.truncated {
        tracing::warn!(
            segment = at.segment,
            offset = at.offset,
            %error,
            "the log ends with a torn record (a crash during its write; it was never acknowledged): it is cut off"
        );
    }
    let records = recovery
        .records
        .iter()
        .map(|(at, kind, payload)| (*at, *kind, payload.as_slice()));
    let replayed = replay(spec, genesis, records, now_ms, check_every_block)
        .map_err(|e| format!("cannot replay the log of {}: {e}", datadir.display()))?;
    let took = began.elapsed();
    let stats = replayed.stats;
    let mb = recovery.bytes as f64 / 1e6;
    tracing::info!(
        records = recovery.records.len(),
        mb = format!("{mb:.1}"),
        read_ms = read.as_millis() as u64,
        replay_ms = (took - read).as_millis() as u64,
        mb_per_s = format!("{:.0}", mb / took.as_secs_f64().max(1e-9)),
        records_per_s = format!(
            "{:.0}",
            recovery.records.len() as f64 / took.as_secs_f64().max(1e-9)
        ),
        mini_blocks = stats.mini_blocks,
        txs = stats.txs,
        blocks = stats.seals,
        head = replayed.parts.view().head().header.number,
        "replayed the log"
    );
    Ok(Booted { replayed, tail })
}
