//! All file IO of the log and of checkpoints goes through [`LogFile`] (a
//! preallocated file written in place), [`StreamFile`] (a file written once,
//! front to back) and the directory operations of [`crate::log::LogDir`].
//! Two backends implement them: the real one ([`crate::disk`], io_uring on
//! the storage core) and [`SimDisk`], a seeded simulated disk for
//! deterministic fault tests. The simulated disk keeps what was written
//! apart from what was flushed, and on a crash it loses, keeps or tears (at
//! sector granularity) every unflushed write, and loses, keeps or keeps a
//! prefix of the renames and removals made since the directory was last
//! synced; it can also fail an operation with EIO or run out of space, once
//! or from then on.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::rc::Rc;

/// One preallocated log file.
pub trait LogFile {
    /// Writes `bytes` at `offset`. Not durable until [`Self::sync`] completes.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> impl Future<Output = io::Result<()>>;
    /// Makes every completed write durable (fdatasync).
    fn sync(&mut self) -> impl Future<Output = io::Result<()>>;
    /// Reads `len` bytes at `offset`: what was written, flushed or not.
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// File size in bytes.
    fn size(&self) -> u64;
    /// Grows the file to `size_bytes` (a multiple of the alignment); the new
    /// bytes read as zeros. Durable once the next [`Self::sync`] completes.
    fn extend(&mut self, size_bytes: u64) -> impl Future<Output = io::Result<()>>;
}

/// A file written once, front to back, then made durable and closed (a
/// checkpoint image). Writes need not be aligned.
pub trait StreamFile {
    /// Appends `bytes`. Not durable until [`Self::close_synced`] completes.
    fn write_all(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>>;
    /// Makes every byte written durable (fdatasync), then closes the file.
    fn close_synced(self) -> impl Future<Output = io::Result<()>>;
}

/// Runs a future over the simulated disk to completion. Simulated IO never
/// waits, so neither does the future; one that would is a bug (panics).
pub fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => panic!("simulated IO never waits"),
    }
}

/// Bytes per simulated sector: a torn write keeps a prefix of whole sectors.
pub const SECTOR_BYTES: usize = 512;

/// ENOSPC, as the kernel reports it.
const ENOSPC: i32 = 28;
/// EIO, as the kernel reports it.
const EIO: i32 = 5;

/// A fault to inject at a given operation number (writes and syncs count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The operation fails with EIO.
    Eio {
        /// First failing operation (0-based).
        at_op: u64,
        /// Every later write and sync fails too.
        forever: bool,
    },
    /// The operation fails with ENOSPC.
    NoSpace {
        /// First failing operation (0-based).
        at_op: u64,
        /// Every later write and sync fails too.
        forever: bool,
    },
}

/// What a crash does to writes that were not flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unflushed write is lost.
    LoseUnflushed,
    /// Each unflushed write is, at random, kept, lost, cut after a random
    /// number of whole sectors, or kept sector by sector in any order.
    TearUnflushed,
    /// Every write reached the platter.
    KeepAll,
}

#[derive(Debug, Default, Clone)]
struct SimFileState {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Unflushed writes in order: offset and bytes.
    pending: Vec<(u64, Vec<u8>)>,
    /// A stream file: it grows with each write, which need not be aligned
    /// (a buffered file, not O_DIRECT).
    stream: bool,
}

impl SimFileState {
    /// The file as a reboot finds it, its unflushed writes handled as
    /// `mode` says.
    fn crashed(&self, mode: CrashMode, rng: &mut impl FnMut() -> u64) -> Vec<u8> {
        let mut after = self.durable.clone();
        for (offset, bytes) in &self.pending {
            let start = *offset as usize;
            let keep = match mode {
                CrashMode::LoseUnflushed => 0,
                CrashMode::KeepAll => bytes.len(),
                CrashMode::TearUnflushed => match rng() % 4 {
                    0 => 0,
                    1 => bytes.len(),
                    2 => {
                        let sectors = bytes.len().div_ceil(SECTOR_BYTES);
                        let kept = (rng() as usize) % (sectors + 1);
                        (kept * SECTOR_BYTES).min(bytes.len())
                    }
                    _ => {
                        // Sectors reach the platter in any order: each
                        // one of this write is kept or lost on its own.
                        for (i, sector) in bytes.chunks(SECTOR_BYTES).enumerate() {
                            if rng().is_multiple_of(2) {
                                put(&mut after, start + i * SECTOR_BYTES, sector);
                            }
                        }
                        0
                    }
                },
            };
            put(&mut after, start, &bytes[..keep]);
        }
        after
    }
}

/// Writes `bytes` at `at` of `file`, growing it with zeros if needed (only
/// stream files grow: preallocated ones are already that long).
fn put(file: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if file.len() < at + bytes.len() {
        file.resize(at + bytes.len(), 0);
    }
    file[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A directory operation not yet made durable by a directory sync.
#[derive(Debug, Clone)]
enum DirOp {
    /// `from` was renamed to `to`, replacing `replaced` if there was one.
    Rename {
        from: String,
        to: String,
        replaced: Option<SimFileState>,
    },
    /// `name` was removed.
    Remove { name: String, file: SimFileState },
}

#[derive(Debug)]
struct SimState {
    files: BTreeMap<String, SimFileState>,
    rng: u64,
    ops: u64,
    fault: Option<Fault>,
    capacity_bytes: u64,
    /// Writes need not be whole sectors (tests that poke bytes); by default
    /// they must be, as under O_DIRECT.
    unaligned_ok: bool,
    /// Renames and removals since the last directory sync, in order.
    dir_ops: Vec<DirOp>,
}

impl SimState {
    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic for a given seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Counts an operation and fails it if a fault says so.
    fn operation(&mut self) -> io::Result<()> {
        let op = self.ops;
        self.ops += 1;
        let failing = match self.fault {
            Some(Fault::Eio { at_op, forever }) if op == at_op || (forever && op > at_op) => {
                Some(EIO)
            }
            Some(Fault::NoSpace { at_op, forever }) if op == at_op || (forever && op > at_op) => {
                Some(ENOSPC)
            }
            _ => None,
        };
        match failing {
            Some(code) => Err(io::Error::from_raw_os_error(code)),
            None => Ok(()),
        }
    }

    /// fdatasync of one file: everything written to it is durable.
    fn sync_file(&mut self, name: &str) -> io::Result<()> {
        self.operation()?;
        let file = self
            .files
            .get_mut(name)
            .ok_or_else(|| io::Error::from_raw_os_error(EIO))?;
        file.durable.clone_from(&file.current);
        file.pending.clear();
        Ok(())
    }

    fn used_bytes(&self) -> u64 {
        self.files.values().map(|f| f.current.len() as u64).sum()
    }
}

/// A simulated disk holding named files. Cloning gives another handle to
/// the same disk.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Rc<RefCell<SimState>>,
}

/// A file on a [`SimDisk`].
#[derive(Debug, Clone)]
pub struct SimFile {
    disk: Rc<RefCell<SimState>>,
    name: String,
}

impl SimDisk {
    /// An empty disk of `capacity_bytes`, with faults drawn from `seed`.
    pub fn new(seed: u64, capacity_bytes: u64) -> Self {
        let state = SimState {
            files: BTreeMap::new(),
            rng: seed | 1,
            ops: 0,
            fault: None,
            capacity_bytes,
            unaligned_ok: false,
            dir_ops: Vec::new(),
        };
        Self {
            state: Rc::new(RefCell::new(state)),
        }
    }

    /// Creates (or truncates) a file preallocated with `size_bytes` zeros;
    /// preallocation is durable at once, as fallocate plus a directory sync.
    pub fn create(&self, name: &str, size_bytes: u64) -> io::Result<SimFile> {
        let mut state = self.state.borrow_mut();
        let others =
            state.used_bytes() - state.files.get(name).map_or(0, |f| f.current.len() as u64);
        if others + size_bytes > state.capacity_bytes {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let zeros = vec![
            0u8;
            usize::try_from(size_bytes)
                .map_err(|_| io::Error::from_raw_os_error(ENOSPC))?
        ];
        state.files.insert(
            name.to_string(),
            SimFileState {
                durable: zeros.clone(),
                current: zeros,
                pending: Vec::new(),
                stream: false,
            },
        );
        Ok(SimFile {
            disk: self.state.clone(),
            name: name.to_string(),
        })
    }

    /// Opens an existing file.
    pub fn open(&self, name: &str) -> io::Result<SimFile> {
        if !self.state.borrow().files.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file {name}"),
            ));
        }
        Ok(SimFile {
            disk: self.state.clone(),
            name: name.to_string(),
        })
    }

    /// File names, sorted.
    pub fn list(&self) -> Vec<String> {
        self.state.borrow().files.keys().cloned().collect()
    }

    /// Cuts (or grows with zeros) a file to `len_bytes`, durably: what a
    /// filesystem or an operator (`truncate -s`) may do behind the log.
    pub fn set_len(&self, name: &str, len_bytes: usize) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let file = state
            .files
            .get_mut(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {name}")))?;
        file.current.resize(len_bytes, 0);
        file.durable.resize(len_bytes, 0);
        file.pending
            .retain(|(offset, bytes)| *offset as usize + bytes.len() <= len_bytes);
        Ok(())
    }

    /// Lets writes start and end anywhere (by default they must be whole
    /// sectors, as O_DIRECT requires, and any other write fails with
    /// `InvalidInput`): for tests that write single bytes.
    pub fn allow_unaligned_writes(&self) {
        self.state.borrow_mut().unaligned_ok = true;
    }

    /// A number from the disk's seeded generator (deterministic per seed).
    pub fn random_u64(&self) -> u64 {
        self.state.borrow_mut().next_random()
    }

    /// Fails operations as `fault` says (replacing any earlier fault).
    pub fn inject(&self, fault: Option<Fault>) {
        self.state.borrow_mut().fault = fault;
    }

    /// Writes and syncs done so far.
    pub fn ops(&self) -> u64 {
        self.state.borrow().ops
    }

    /// The disk as a reboot after a crash finds it. The old handles keep
    /// pointing at the pre-crash disk; faults are cleared.
    pub fn crash(&self, mode: CrashMode) -> SimDisk {
        let mut state = self.state.borrow_mut();
        let mut files = BTreeMap::new();
        let names: Vec<String> = state.files.keys().cloned().collect();
        for name in names {
            let file = state.files.get(&name).expect("name from the map").clone();
            let after = file.crashed(mode, &mut || state.next_random());
            files.insert(name, SimFileState::durable(after, file.stream));
        }
        // Directory operations since the last directory sync: a prefix of
        // them reached the journal (none, all, or any prefix when torn).
        let ops = std::mem::take(&mut state.dir_ops);
        let kept = match mode {
            _ if ops.is_empty() => 0,
            CrashMode::LoseUnflushed => 0,
            CrashMode::KeepAll => ops.len(),
            CrashMode::TearUnflushed => (state.next_random() as usize) % (ops.len() + 1),
        };
        for op in ops[kept..].iter().rev() {
            undo(&mut files, op);
        }
        state.dir_ops = ops;
        let rng = state.next_random();
        SimDisk {
            state: Rc::new(RefCell::new(SimState {
                files,
                rng,
                ops: 0,
                fault: None,
                capacity_bytes: state.capacity_bytes,
                unaligned_ok: state.unaligned_ok,
                dir_ops: Vec::new(),
            })),
        }
    }

    /// Creates (or truncates) an empty stream file, which grows as it is
    /// written; its creation is durable at once (as [`Self::create`]).
    pub fn create_stream(&self, name: &str) -> io::Result<SimStream> {
        let mut state = self.state.borrow_mut();
        state.operation()?;
        state
            .files
            .insert(name.to_string(), SimFileState::durable(Vec::new(), true));
        Ok(SimStream {
            disk: self.state.clone(),
            name: name.to_string(),
        })
    }

    /// Renames `from` to `to` (replacing `to`); durable once the directory
    /// is synced. Handles keep the name they were opened with (unlike a
    /// descriptor): close a file before renaming it.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.operation()?;
        let file = state.files.remove(from).ok_or_else(|| not_found(from))?;
        let replaced = state.files.insert(to.to_string(), file);
        state.dir_ops.push(DirOp::Rename {
            from: from.to_string(),
            to: to.to_string(),
            replaced,
        });
        Ok(())
    }

    /// Removes `name`; durable once the directory is synced.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.operation()?;
        let file = state.files.remove(name).ok_or_else(|| not_found(name))?;
        state.dir_ops.push(DirOp::Remove {
            name: name.to_string(),
            file,
        });
        Ok(())
    }

    /// Makes every rename and removal so far durable.
    pub fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.operation()?;
        state.dir_ops.clear();
        Ok(())
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

impl SimFileState {
    fn durable(bytes: Vec<u8>, stream: bool) -> Self {
        Self {
            durable: bytes.clone(),
            current: bytes,
            pending: Vec::new(),
            stream,
        }
    }
}

/// Undoes a directory operation the crash lost, on the files after it.
fn undo(files: &mut BTreeMap<String, SimFileState>, op: &DirOp) {
    match op {
        DirOp::Rename { from, to, replaced } => {
            if let Some(file) = files.remove(to) {
                files.insert(from.clone(), file);
            }
            if let Some(old) = replaced {
                files.insert(
                    to.clone(),
                    SimFileState::durable(old.durable.clone(), old.stream),
                );
            }
        }
        DirOp::Remove { name, file } => {
            files.insert(
                name.clone(),
                SimFileState::durable(file.durable.clone(), file.stream),
            );
        }
    }
}

/// A stream file on a [`SimDisk`].
#[derive(Debug)]
pub struct SimStream {
    disk: Rc<RefCell<SimState>>,
    name: String,
}

impl StreamFile for SimStream {
    fn write_all(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> {
        let result = (|| {
            let mut state = self.disk.borrow_mut();
            state.operation()?;
            if state.used_bytes() + bytes.len() as u64 > state.capacity_bytes {
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
            let file = state
                .files
                .get_mut(&self.name)
                .ok_or_else(|| io::Error::from_raw_os_error(EIO))?;
            assert!(file.stream);
            let offset = file.current.len() as u64;
            file.current.extend_from_slice(bytes);
            file.pending.push((offset, bytes.to_vec()));
            Ok(())
        })();
        std::future::ready(result)
    }

    fn close_synced(self) -> impl Future<Output = io::Result<()>> {
        std::future::ready(self.disk.borrow_mut().sync_file(&self.name))
    }
}

impl LogFile for SimFile {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> impl Future<Output = io::Result<()>> {
        let result = (|| {
            let mut state = self.disk.borrow_mut();
            let sector = SECTOR_BYTES as u64;
            if !state.unaligned_ok
                && (!offset.is_multiple_of(sector) || !(bytes.len() as u64).is_multiple_of(sector))
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unaligned write of {} bytes at {offset}", bytes.len()),
                ));
            }
            state.operation()?;
            let file = state
                .files
                .get_mut(&self.name)
                .ok_or_else(|| io::Error::from_raw_os_error(EIO))?;
            let end = offset as usize + bytes.len();
            if end > file.current.len() {
                // Log files are preallocated; writing past the end is a bug
                // in the caller, reported the way a full disk would be.
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
            file.current[offset as usize..end].copy_from_slice(bytes);
            file.pending.push((offset, bytes.to_vec()));
            Ok(())
        })();
        std::future::ready(result)
    }

    fn sync(&mut self) -> impl Future<Output = io::Result<()>> {
        std::future::ready(self.disk.borrow_mut().sync_file(&self.name))
    }

    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let state = self.disk.borrow();
        let file = state
            .files
            .get(&self.name)
            .ok_or_else(|| io::Error::from_raw_os_error(EIO))?;
        let start =
            usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= file.current.len());
        let end = end.ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        Ok(file.current[start..end].to_vec())
    }

    fn size(&self) -> u64 {
        self.disk
            .borrow()
            .files
            .get(&self.name)
            .map_or(0, |f| f.current.len() as u64)
    }

    fn extend(&mut self, size_bytes: u64) -> impl Future<Output = io::Result<()>> {
        let result = (|| {
            let mut state = self.disk.borrow_mut();
            state.operation()?;
            let used = state.used_bytes();
            let file = state
                .files
                .get(&self.name)
                .ok_or_else(|| io::Error::from_raw_os_error(EIO))?;
            let grow = size_bytes.saturating_sub(file.current.len() as u64);
            if used + grow > state.capacity_bytes {
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
            let len =
                usize::try_from(size_bytes).map_err(|_| io::Error::from_raw_os_error(ENOSPC))?;
            let file = state.files.get_mut(&self.name).expect("looked up above");
            // Like preallocation, the new size is durable at once (a
            // simplification: the bytes are zeros either way).
            if file.current.len() < len {
                file.current.resize(len, 0);
            }
            if file.durable.len() < len {
                file.durable.resize(len, 0);
            }
            Ok(())
        })();
        std::future::ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::ready as now;
    use super::*;

    #[test]
    fn synced_writes_survive_a_crash_and_unsynced_ones_do_not() {
        let disk = SimDisk::new(1, 1 << 20);
        disk.allow_unaligned_writes();
        let mut file = disk.create("log-0", 4096).unwrap();
        now(file.write_at(0, b"durable")).unwrap();
        now(file.sync()).unwrap();
        now(file.write_at(7, b" volatile")).unwrap();
        assert_eq!(file.read_at(0, 16).unwrap(), b"durable volatile");
        let lost = disk.crash(CrashMode::LoseUnflushed).open("log-0").unwrap();
        assert_eq!(lost.read_at(0, 16).unwrap(), b"durable\0\0\0\0\0\0\0\0\0");
        let kept = disk.crash(CrashMode::KeepAll).open("log-0").unwrap();
        assert_eq!(kept.read_at(0, 16).unwrap(), b"durable volatile");
    }

    #[test]
    fn torn_writes_keep_whole_sectors_as_a_prefix_or_in_any_order() {
        let mut prefixes = std::collections::BTreeSet::new();
        let mut out_of_order = 0;
        for seed in 0..64 {
            let disk = SimDisk::new(seed, 1 << 20);
            let mut file = disk.create("log-0", 8192).unwrap();
            now(file.write_at(0, &[0xab; 4 * SECTOR_BYTES])).unwrap();
            let after = disk.crash(CrashMode::TearUnflushed).open("log-0").unwrap();
            let bytes = after.read_at(0, 4 * SECTOR_BYTES).unwrap();
            // Whole sectors only: each is all written or all old.
            let sectors: Vec<bool> = bytes
                .chunks(SECTOR_BYTES)
                .map(|s| {
                    assert!(s.iter().all(|b| *b == s[0]), "seed {seed}: a torn sector");
                    s[0] == 0xab
                })
                .collect();
            let kept = sectors.iter().take_while(|k| **k).count();
            if sectors[kept..].iter().any(|k| *k) {
                out_of_order += 1;
            } else {
                prefixes.insert(kept);
            }
        }
        assert!(
            prefixes.len() >= 3,
            "seeds give different prefixes: {prefixes:?}"
        );
        assert!(
            out_of_order > 0,
            "no tear kept a later sector without an earlier one"
        );
    }

    #[test]
    fn injected_faults_fail_once_or_forever() {
        let disk = SimDisk::new(7, 1 << 20);
        disk.allow_unaligned_writes();
        let mut file = disk.create("log-0", 4096).unwrap();
        disk.inject(Some(Fault::Eio {
            at_op: 1,
            forever: false,
        }));
        now(file.write_at(0, b"a")).unwrap();
        assert_eq!(now(file.sync()).unwrap_err().raw_os_error(), Some(EIO));
        now(file.sync()).unwrap();
        disk.inject(Some(Fault::NoSpace {
            at_op: 3,
            forever: true,
        }));
        assert_eq!(
            now(file.write_at(1, b"b")).unwrap_err().raw_os_error(),
            Some(ENOSPC)
        );
        assert_eq!(now(file.sync()).unwrap_err().raw_os_error(), Some(ENOSPC));
        assert_eq!(disk.ops(), 5);
        disk.inject(None);
        assert_eq!(
            disk.create("log-1", 2 << 20).unwrap_err().raw_os_error(),
            Some(ENOSPC)
        );
        assert_eq!(
            now(file.write_at(4090, b"past the end"))
                .unwrap_err()
                .raw_os_error(),
            Some(ENOSPC)
        );
        now(file.write_at(1, b"b")).unwrap();
    }
}
