//! The append-only log: preallocated segments of framed records, written
//! with group commit (one write and one flush per batch), and read back at
//! open with torn-tail repair.
//!
//! Discipline the recovery relies on: a batch is written with one write at
//! the end of the durable log, and no new write starts before that batch's
//! flush completed. So a crash can only damage the last batch of the last
//! segment, and anything wrong before that is corruption, never skipped.
//!
//! Writes are whole device blocks (O_DIRECT), but batches are not padded to
//! them: a batch ends with a small batch end record and the next batch
//! starts right after it. So the write of a batch starts at the block that
//! holds the durable end, and rewrites that block's durable bytes with the
//! same values before the new records. A crash during that write leaves
//! each sector either as it was or as written (sectors are the device's
//! unit of atomic writes), and the durable bytes are the same in both: only
//! the new batch can be torn. (Format version 2 padded every batch to the
//! block instead, some 2 KiB per flush; such logs are read and continued.)
//!
//! Layout (log format version 3, see [`crate::record`]): the directory holds
//! `SALT` and the segments `<number, 20 digits>.seg`. `SALT` is one aligned
//! block: magic `FLMNSALT` (8 bytes), the format version (1 byte), the salt
//! (16 bytes), CRC-32C of those 25 bytes (4 bytes, little-endian), zeros. It
//! is written and flushed before segment 0 is created, so a log with
//! segments always has it; a log with segments and no `SALT` was written by
//! format 1 and is refused with [`LogError::Format`].
//!
//! Sizes: a record of up to [`record_payload_bytes_max`] payload bytes is
//! always accepted, whatever the fill of the current segment. A batch never
//! spans segments: when a record does not fit the rest of the segment, the
//! batch so far is ended there and the rest goes to the next segment, as a
//! batch of its own with its own flush. [`Log::flush`] returns once every
//! part is durable.
//!
//! Repair: [`repair_plan`] says what opening the log writes at its end (cut
//! a torn tail, end the last batch after its last valid record, zero torn
//! bytes after the new end, and
//! extend a segment file that is shorter than a segment or not a multiple of
//! the alignment). `fulmen db check` reports the same plan. Every write is
//! aligned, and the zeros go first: the new end is written only once nothing
//! torn follows it.

use std::future::Future;
use std::io;
use std::sync::Arc;

use crate::io::{LogFile, SimDisk, SimFile, SimStream, StreamFile};
use crate::record::{
    self, BATCH_END_BYTES, HEADER_BYTES, RecordError, RecordKind, SALT_BYTES, Salt,
};
use crate::scan::{SegmentEnd, scan};

/// Where a record sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Segment number.
    pub segment: u64,
    /// Byte offset in the segment.
    pub offset: u64,
}

/// A directory of files: the log's segments, or the checkpoint images.
/// Every file operation of storage goes through it, so the simulated disk
/// tests the same code the node runs.
pub trait LogDir {
    /// File type.
    type File: LogFile;
    /// A file written once, front to back.
    type Stream: StreamFile;
    /// A read-only view of a whole file (an mmap for real files).
    type Map: std::ops::Deref<Target = [u8]> + Send + Sync + 'static;
    /// Creates a file of `size_bytes` zeros, written out (not a sparse hole),
    /// so that later writes overwrite allocated blocks.
    fn create(&self, name: &str, size_bytes: u64) -> impl Future<Output = io::Result<Self::File>>;
    /// Opens an existing file for writing.
    fn open(&self, name: &str) -> impl Future<Output = io::Result<Self::File>>;
    /// Maps an existing file for reading.
    fn map(&self, name: &str) -> io::Result<Self::Map>;
    /// File names.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Every write starts at a multiple of this and spans a multiple of it
    /// (the O_DIRECT block size; a power of two).
    fn alignment(&self) -> u64;
    /// A new random salt for a new log.
    fn new_salt(&self) -> Salt {
        random_salt()
    }
    /// Creates (or truncates) an empty file to be written front to back.
    fn create_stream(&self, name: &str) -> impl Future<Output = io::Result<Self::Stream>>;
    /// Renames `from` to `to`, replacing `to`; durable once
    /// [`Self::sync_dir`] completes.
    fn rename(&self, from: &str, to: &str) -> impl Future<Output = io::Result<()>>;
    /// Removes a file; durable once [`Self::sync_dir`] completes.
    fn remove(&self, name: &str) -> impl Future<Output = io::Result<()>>;
    /// Makes the directory's renames and removals durable.
    fn sync_dir(&self) -> impl Future<Output = io::Result<()>>;
}

/// 16 bytes from the OS's random source (or, where it cannot be read, from
/// the standard library's randomly keyed hasher).
fn random_salt() -> Salt {
    use std::io::Read;
    let mut salt = [0u8; SALT_BYTES];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .is_ok()
    {
        return salt;
    }
    use std::hash::{BuildHasher, Hasher};
    for (i, half) in salt.chunks_mut(8).enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_usize(i);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    salt
}

impl LogDir for SimDisk {
    type File = SimFile;
    type Stream = SimStream;
    type Map = Vec<u8>;
    async fn create_stream(&self, name: &str) -> io::Result<SimStream> {
        SimDisk::create_stream(self, name)
    }
    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        SimDisk::rename(self, from, to)
    }
    async fn remove(&self, name: &str) -> io::Result<()> {
        SimDisk::remove(self, name)
    }
    async fn sync_dir(&self) -> io::Result<()> {
        SimDisk::sync_dir(self)
    }
    async fn create(&self, name: &str, size_bytes: u64) -> io::Result<SimFile> {
        SimDisk::create(self, name, size_bytes)
    }
    async fn open(&self, name: &str) -> io::Result<SimFile> {
        SimDisk::open(self, name)
    }
    fn map(&self, name: &str) -> io::Result<Vec<u8>> {
        let file = SimDisk::open(self, name)?;
        file.read_at(0, file.size() as usize)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(SimDisk::list(self))
    }
    fn alignment(&self) -> u64 {
        crate::io::SECTOR_BYTES as u64
    }
    fn new_salt(&self) -> Salt {
        let mut salt = [0u8; SALT_BYTES];
        for half in salt.chunks_mut(8) {
            half.copy_from_slice(&self.random_u64().to_le_bytes());
        }
        salt
    }
}

/// Errors of the log, each naming where it happened.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An IO operation failed; the log accepts nothing more until reopened.
    #[error("log IO failed in segment {segment} at offset {offset}: {source}")]
    Io {
        /// Segment.
        segment: u64,
        /// Offset.
        offset: u64,
        /// The OS error.
        source: io::Error,
    },
    /// A record before the tail is damaged.
    #[error("log segment {segment} is corrupt at offset {offset}: {detail}")]
    Corrupt {
        /// Segment.
        segment: u64,
        /// Offset.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// A record payload above [`record_payload_bytes_max`] (the caller
    /// bounds what it appends; the log is not where a user learns it).
    #[error(
        "record payload of {payload_bytes} bytes is over the log's limit of {limit_bytes} bytes"
    )]
    TooLarge {
        /// Payload size.
        payload_bytes: usize,
        /// The limit for this segment size.
        limit_bytes: usize,
    },
    /// Settings the log cannot work with.
    #[error("log settings: {0}")]
    Settings(String),
    /// The log was written by another format, or its `SALT` is damaged.
    #[error("the log cannot be read by this build: {0}")]
    Format(String),
    /// An earlier IO error stopped the log.
    #[error("the log stopped after an IO error ({0}); restart the node to recover")]
    Failed(String),
}

/// The largest record payload, in bytes, that a log with segments of
/// `segment_bytes` written with `alignment` (see [`LogDir::alignment`];
/// [`crate::disk::ALIGNMENT`] on disk) always accepts: one record and the
/// batch end after it fill at most one whole segment. Also capped at
/// [`record::PAYLOAD_BYTES_MAX`]. A record up to this size is written
/// whatever the fill of the current segment (the log moves to the next
/// segment first when the rest of the current one is too small).
pub fn record_payload_bytes_max(segment_bytes: u64, alignment: u64) -> usize {
    let usable = segment_bytes - segment_bytes % alignment.max(1);
    let fits = usable.saturating_sub((HEADER_BYTES + BATCH_END_BYTES) as u64);
    usize::try_from(fits)
        .unwrap_or(usize::MAX)
        .min(record::PAYLOAD_BYTES_MAX)
}

/// A record's payload, read in place from its segment's map: boot holds
/// the log's pages (the kernel's, reclaimable), not a copy on the heap.
#[derive(Clone)]
pub struct Payload {
    map: Arc<dyn std::ops::Deref<Target = [u8]> + Send + Sync>,
    range: std::ops::Range<usize>,
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.range.len())
    }
}

/// What opening the log found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Every record but padding, in order: position, kind and payload.
    pub records: Vec<(Position, RecordKind, Payload)>,
    /// A torn tail that was cut off: where, and why.
    pub truncated: Option<(Position, RecordError)>,
    /// Bytes of log read (records and padding).
    pub bytes: u64,
}

/// Segment file name for a segment number.
pub fn segment_name(segment: u64) -> String {
    format!("{segment:020}.seg")
}

pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
}

/// Name of the file holding the log's salt.
pub const SALT_FILE: &str = "SALT";
const SALT_MAGIC: &[u8; 8] = b"FLMNSALT";
const SALT_HEADER_BYTES: usize = 8 + 1 + SALT_BYTES;

/// The `SALT` file's contents for `salt`: one block of `alignment` bytes.
pub fn encode_salt(salt: &Salt, alignment: u64) -> Vec<u8> {
    let mut block = Vec::with_capacity(alignment as usize);
    block.extend_from_slice(SALT_MAGIC);
    block.push(record::FORMAT_VERSION);
    block.extend_from_slice(salt);
    let crc = crc32c::crc32c(&block);
    block.extend_from_slice(&crc.to_le_bytes());
    block.resize(alignment as usize, 0);
    block
}

/// The salt of the log in `dir`: `None` when there is no `SALT` file, an
/// error when it is damaged or of another format.
fn read_salt<D: LogDir>(dir: &D, names: &[String]) -> Result<Option<Salt>, String> {
    if !names.iter().any(|n| n == SALT_FILE) {
        return Ok(None);
    }
    let bytes = dir
        .map(SALT_FILE)
        .map_err(|e| format!("cannot read {SALT_FILE}: {e}"))?;
    if bytes.len() < SALT_HEADER_BYTES + 4 {
        return Err(format!("{SALT_FILE} is {} bytes, too short", bytes.len()));
    }
    let stored = u32::from_le_bytes(
        bytes[SALT_HEADER_BYTES..SALT_HEADER_BYTES + 4]
            .try_into()
            .expect("4 bytes"),
    );
    if &bytes[..8] != SALT_MAGIC || crc32c::crc32c(&bytes[..SALT_HEADER_BYTES]) != stored {
        return Err(format!("{SALT_FILE} is damaged (bad magic or checksum)"));
    }
    if !(record::FORMAT_VERSION_OLDEST..=record::FORMAT_VERSION).contains(&bytes[8]) {
        return Err(format!(
            "{SALT_FILE} is of log format version {}, this build reads versions {} to {}",
            bytes[8],
            record::FORMAT_VERSION_OLDEST,
            record::FORMAT_VERSION
        ));
    }
    Ok(Some(
        bytes[9..SALT_HEADER_BYTES].try_into().expect("16 bytes"),
    ))
}

/// The salt of a log that has segments (a format 1 log has none).
fn required_salt<D: LogDir>(dir: &D, names: &[String]) -> Result<Salt, LogError> {
    match read_salt(dir, names) {
        Ok(Some(salt)) => Ok(salt),
        Ok(None) => Err(LogError::Format(format!(
            "the log has segments but no {SALT_FILE} file: it was written by log format version 1, \
             which this build (format version {}) does not read; start this node on a new datadir, \
             or keep running the build that wrote it",
            record::FORMAT_VERSION
        ))),
        Err(detail) => Err(LogError::Format(detail)),
    }
}

fn segment_numbers(names: &[String]) -> Vec<u64> {
    let mut segments: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    segments.sort_unstable();
    segments
}

/// Where the written log ends, as [`read_log`] found it.
#[derive(Debug, Clone, Default)]
pub struct Tail {
    /// Last segment holding records.
    pub segment: u64,
    /// End of its valid records.
    pub end: u64,
    /// Why the bytes at `end` are not a record, when a crash tore them.
    pub torn: Option<RecordError>,
    /// An empty segment made ahead of need after it.
    pub next: Option<u64>,
    /// Size of the last segment's file.
    pub file_bytes: u64,
    /// Just past its last non-zero byte (torn bytes may reach this far).
    pub dirty_end: u64,
    /// The last valid record is a batch end (else a crash cut the last
    /// batch after a record, and opening the log ends the batch there).
    pub batch_end: bool,
}

/// Reads every record of the log in `dir` without changing anything: the
/// records, a torn tail (reported, not repaired) and where writing resumes.
/// Corruption before the tail is an error naming segment and offset.
pub fn read_log<D: LogDir>(dir: &D) -> Result<(Recovery, Tail), LogError> {
    read_log_from(dir, 0)
}

/// The log's segment numbers, in order.
pub fn segments<D: LogDir>(dir: &D) -> io::Result<Vec<u64>> {
    Ok(segment_numbers(&dir.list()?))
}

/// Reads segment `segment`'s records from its start, handing each record's
/// kind and payload to `visit` until it returns true (then returns true),
/// or until the records end or one does not decode (then returns false).
/// A quick look at a segment's first records, with no repair and no check
/// for damage: boot uses it to find where to start reading.
pub fn peek_segment<D: LogDir>(
    dir: &D,
    segment: u64,
    mut visit: impl FnMut(RecordKind, &[u8]) -> bool,
) -> io::Result<bool> {
    let bytes = dir.map(&segment_name(segment))?;
    let mut at = 0;
    while at < bytes.len() && !record::is_end(&bytes[at..]) {
        let Ok(record) = record::decode(&bytes[at..]) else {
            return Ok(false);
        };
        if visit(record.kind, record.payload) {
            return Ok(true);
        }
        at += record.encoded_len();
    }
    Ok(false)
}

/// Bytes written in segment `segment`: up to its last non-zero byte (its
/// records end there, but for zero bytes at the end of the last one).
/// Reads only the segment's end, back to that byte.
pub fn segment_written_bytes<D: LogDir>(dir: &D, segment: u64) -> io::Result<u64> {
    Ok(written_end(&dir.map(&segment_name(segment))?))
}

/// Just past the last non-zero byte of `bytes`.
fn written_end(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |p| p as u64 + 1)
}

/// Like [`read_log`], from segment `first` on: the segments before it are
/// not read (nor required to exist).
pub fn read_log_from<D: LogDir>(dir: &D, first: u64) -> Result<(Recovery, Tail), LogError> {
    let io_at = |segment, offset| {
        move |source| LogError::Io {
            segment,
            offset,
            source,
        }
    };
    let names = dir.list().map_err(io_at(0, 0))?;
    let mut segments = segment_numbers(&names);
    segments.retain(|s| *s >= first);
    for pair in segments.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(LogError::Corrupt {
                segment: pair[1],
                offset: 0,
                detail: format!("segment {} is missing", pair[0] + 1),
            });
        }
    }
    let mut recovery = Recovery::default();
    if segments.is_empty() {
        return Ok((recovery, Tail::default()));
    }
    let salt = required_salt(dir, &names)?;
    let ends = scan_segments(dir, &segments, &salt, &mut recovery)?;
    let last = last_written(&ends)?;
    recovery.bytes = ends[..=last].iter().map(|(_, end, ..)| end).sum();
    let (segment, end, torn, batch_end) = ends[last].clone();
    if let Some(error) = &torn {
        recovery.truncated = Some((
            Position {
                segment,
                offset: end,
            },
            error.clone(),
        ));
    }
    let bytes = dir.map(&segment_name(segment)).map_err(io_at(segment, 0))?;
    let dirty_end = written_end(&bytes);
    let next = ends.get(last + 1).map(|(n, ..)| *n);
    Ok((
        recovery,
        Tail {
            segment,
            end,
            torn,
            next,
            file_bytes: bytes.len() as u64,
            dirty_end,
            batch_end,
        },
    ))
}

/// Where each segment ends: (segment, end of its records, torn tail, the
/// last valid record is a batch end).
type SegmentEnds = Vec<(u64, u64, Option<RecordError>, bool)>;

/// Scans `segments` in order, adding their records to `recovery`.
fn scan_segments<D: LogDir>(
    dir: &D,
    segments: &[u64],
    salt: &Salt,
    recovery: &mut Recovery,
) -> Result<SegmentEnds, LogError> {
    let mut ends = Vec::with_capacity(segments.len());
    let mut progress =
        crate::progress::Progress::new("reading the log", "segments", segments.len() as u64);
    for (done, segment) in segments.iter().copied().enumerate() {
        progress.tick(done as u64);
        let bytes: Arc<dyn std::ops::Deref<Target = [u8]> + Send + Sync> = Arc::new(
            dir.map(&segment_name(segment))
                .map_err(|source| LogError::Io {
                    segment,
                    offset: 0,
                    source,
                })?,
        );
        let base = bytes.as_ptr() as usize;
        let mut last_offset = None;
        let mut batch_end = false;
        let found = scan(&bytes, salt, |offset, record| {
            assert!(last_offset.is_none_or(|last| offset > last));
            last_offset = Some(offset);
            // Scan only visits padding that is a batch end of this log.
            batch_end = record.kind == RecordKind::Padding;
            if record.kind != RecordKind::Padding {
                // The payload is a slice of `bytes`: its place in the map.
                let start = record.payload.as_ptr() as usize - base;
                recovery.records.push((
                    Position { segment, offset },
                    record.kind,
                    Payload {
                        map: bytes.clone(),
                        range: start..start + record.payload.len(),
                    },
                ));
            }
        })
        .map_err(|c| LogError::Corrupt {
            segment,
            offset: c.offset(),
            detail: c.to_string(),
        })?;
        match found {
            SegmentEnd::Clean { end } => ends.push((segment, end, None, batch_end)),
            SegmentEnd::TornTail { at, error } => {
                ends.push((segment, at, Some(error), batch_end));
            }
        }
    }
    Ok(ends)
}

/// The index in `ends` of the last segment written (segments after it were
/// made ahead of need); a torn tail before it is corruption.
fn last_written(ends: &SegmentEnds) -> Result<usize, LogError> {
    let last = ends
        .iter()
        .rposition(|(_, end, torn, _)| *end > 0 || torn.is_some())
        .unwrap_or(0);
    for (segment, end, torn, _) in &ends[..last] {
        if let Some(error) = torn {
            return Err(LogError::Corrupt {
                segment: *segment,
                offset: *end,
                detail: format!("{error} in a segment that is not the last"),
            });
        }
    }
    Ok(last)
}

/// What opening the log writes at the end of its last segment, in this
/// order: grow the file, zero `[zero_from, zero_to)` and flush, then
/// rewrite `[block_start, block_end)` (the valid records of the last block,
/// a batch end after them when the last batch was cut after a record, and
/// zeros) and flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairPlan {
    /// Segment.
    pub segment: u64,
    /// End of the valid records.
    pub end: u64,
    /// Why the bytes at `end` are cut off, when a crash tore them.
    pub torn: Option<RecordError>,
    /// The file's size now.
    pub file_bytes: u64,
    /// Its size after the repair (a multiple of the alignment, and at
    /// least a segment).
    pub file_bytes_after: u64,
    /// Start of the zeroing.
    pub zero_from: u64,
    /// End of the zeroing (`zero_from` when nothing is zeroed).
    pub zero_to: u64,
    /// Start of the rewritten block.
    pub block_start: u64,
    /// End of the rewrite (`block_start` when nothing is rewritten).
    pub block_end: u64,
    /// A batch end is written at `end` (the last batch was cut after a
    /// valid record).
    pub batch_end: bool,
    /// Where writing resumes (the end of the segment when a batch end does
    /// not fit in it).
    pub durable_end: u64,
}

impl RepairPlan {
    /// True when the repair writes anything.
    pub fn writes(&self) -> bool {
        self.file_bytes_after != self.file_bytes
            || self.zero_to > self.zero_from
            || self.block_end > self.block_start
    }
}

impl std::fmt::Display for RepairPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "segment {}: ", self.segment)?;
        match &self.torn {
            Some(error) => write!(
                f,
                "a torn record at offset {} ({error}) is cut off",
                self.end
            )?,
            None => write!(f, "the records end at offset {}", self.end)?,
        }
        if self.block_end > self.block_start {
            write!(
                f,
                "; the block at {} is rewritten up to {}",
                self.block_start, self.block_end
            )?;
            if self.batch_end {
                write!(f, " with a batch end after the records")?;
            }
        }
        if self.zero_to > self.zero_from {
            write!(f, "; bytes {}..{} are zeroed", self.zero_from, self.zero_to)?;
        }
        if self.file_bytes_after != self.file_bytes {
            write!(
                f,
                "; the file ({} bytes, not a whole aligned segment) is zero-filled to {} bytes",
                self.file_bytes, self.file_bytes_after
            )?;
        }
        write!(f, "; writing resumes at offset {}", self.durable_end)
    }
}

fn check_settings(segment_bytes: u64, alignment: u64) -> Result<(), LogError> {
    if !alignment.is_power_of_two() || !alignment.is_multiple_of(record::BATCH_ALIGN_BYTES_MIN) {
        return Err(LogError::Settings(format!(
            "alignment {alignment} is not a power of two multiple of {}",
            record::BATCH_ALIGN_BYTES_MIN
        )));
    }
    if !segment_bytes.is_multiple_of(alignment) || segment_bytes < 4 * alignment {
        return Err(LogError::Settings(format!(
            "segment size {segment_bytes} bytes is not a multiple of the alignment {alignment} of at least 4 blocks"
        )));
    }
    Ok(())
}

/// What opening the log at `tail` will write (see [`RepairPlan`]); `fulmen
/// db check` reports the same.
pub fn repair_plan(
    tail: &Tail,
    segment_bytes: u64,
    alignment: u64,
) -> Result<RepairPlan, LogError> {
    check_settings(segment_bytes, alignment)?;
    let align = alignment;
    let end = tail.end;
    if end > tail.file_bytes {
        return Err(LogError::Corrupt {
            segment: tail.segment,
            offset: tail.file_bytes,
            detail: format!(
                "the segment file is {} bytes, shorter than its records (up to {end}): it changed while the log was read",
                tail.file_bytes
            ),
        });
    }
    let file_bytes_after = tail.file_bytes.next_multiple_of(align).max(segment_bytes);
    // A batch cut after a valid record (its flush never completed) is
    // ended where it was cut; with no room for a batch end, the segment
    // ends with zeros and writing moves on to the next one.
    let needs_end = end > 0 && !tail.batch_end;
    let batch_end = needs_end && end + BATCH_END_BYTES as u64 <= file_bytes_after;
    let data_end = end + if batch_end { BATCH_END_BYTES as u64 } else { 0 };
    let durable_end = if needs_end && !batch_end {
        file_bytes_after
    } else {
        data_end
    };
    let block_start = end - end % align;
    // Torn bytes may lie anywhere up to the last non-zero byte; a grown
    // file is zero-filled to its new size. The block holding the end is
    // rewritten (its records, the batch end, zeros) when it changes.
    let block_end = data_end.next_multiple_of(align);
    let rewrite = batch_end || (tail.dirty_end > end && !end.is_multiple_of(align));
    let zero_from = if rewrite {
        block_end
    } else {
        end.next_multiple_of(align)
    };
    let zero_to = if tail.file_bytes < file_bytes_after {
        file_bytes_after
    } else {
        tail.dirty_end.next_multiple_of(align).min(file_bytes_after)
    }
    .max(zero_from);
    let plan = RepairPlan {
        segment: tail.segment,
        end,
        torn: tail.torn.clone(),
        file_bytes: tail.file_bytes,
        file_bytes_after,
        zero_from,
        zero_to,
        block_start,
        block_end: if rewrite { block_end } else { block_start },
        batch_end,
        durable_end,
    };
    assert!(plan.block_start.is_multiple_of(align));
    assert!(plan.block_end.is_multiple_of(align));
    assert!(plan.zero_from.is_multiple_of(align));
    assert!(plan.zero_to.is_multiple_of(align));
    assert!(plan.durable_end <= plan.file_bytes_after);
    assert!(plan.block_end <= plan.file_bytes_after);
    assert!(plan.zero_to <= plan.file_bytes_after);
    assert!(plan.file_bytes_after.is_multiple_of(align));
    Ok(plan)
}

/// Zeros written per request by a repair.
const REPAIR_ZEROS_CHUNK_BYTES: usize = 1 << 20;

/// The log.
pub struct Log<D: LogDir> {
    dir: D,
    salt: Salt,
    segment_bytes: u64,
    segment: u64,
    file: D::File,
    /// Size of the current segment (a multiple of the alignment, at least
    /// `segment_bytes`).
    segment_end: u64,
    /// The next segment, created ahead of need by [`Self::prepare_next`].
    next: Option<D::File>,
    /// End of the durable log in the current segment.
    durable_end: u64,
    /// The durable bytes of the block holding `durable_end` (the next
    /// write rewrites them unchanged), then the records appended since the
    /// last flush, framed, in one or more batches: each batch but the last
    /// already ends with its batch end and goes to a segment of its own.
    batch: Vec<u8>,
    /// Bytes at the start of `batch` that are already durable.
    carry: usize,
    /// A batch rounded up to whole blocks, as it is written.
    scratch: Vec<u8>,
    /// Where each batch after the first starts in `batch` (each starts a
    /// new segment).
    cuts: Vec<usize>,
    failed: Option<String>,
}

impl<D: LogDir> Log<D> {
    /// Opens the log in `dir` (creating segment 0 if there is none), reads
    /// every record, and cuts off a torn tail. `segment_bytes` must be a
    /// multiple of the directory's alignment.
    pub async fn open(dir: D, segment_bytes: u64) -> Result<(Self, Recovery), LogError> {
        let (recovery, tail) = read_log(&dir)?;
        let log = Self::open_at(dir, segment_bytes, tail).await?;
        Ok((log, recovery))
    }

    /// Opens the log for writing where [`read_log`] found its end, applying
    /// its [`repair_plan`].
    pub async fn open_at(dir: D, segment_bytes: u64, tail: Tail) -> Result<Self, LogError> {
        let io_at = |segment, offset| {
            move |source| LogError::Io {
                segment,
                offset,
                source,
            }
        };
        let align = dir.alignment();
        check_settings(segment_bytes, align)?;
        let names = dir.list().map_err(io_at(0, 0))?;
        if segment_numbers(&names).is_empty() {
            return Self::create(dir, segment_bytes, &names).await;
        }
        let salt = required_salt(&dir, &names)?;
        let mut file = dir
            .open(&segment_name(tail.segment))
            .await
            .map_err(io_at(tail.segment, 0))?;
        let tail = Tail {
            file_bytes: file.size(),
            ..tail
        };
        let plan = repair_plan(&tail, segment_bytes, align)?;
        if plan.writes() {
            tracing::info!(%plan, "repairing the end of the log");
            repair(&mut file, &plan, &salt)
                .await
                .map_err(|(offset, source)| LogError::Io {
                    segment: plan.segment,
                    offset,
                    source,
                })?;
        }
        // A segment made ahead of need is used only if it is whole (a crash
        // can interrupt its zero-fill); rotation makes it again otherwise.
        let next = match tail.next {
            Some(n) => {
                let file = dir.open(&segment_name(n)).await.map_err(io_at(n, 0))?;
                (file.size() == segment_bytes).then_some(file)
            }
            None => None,
        };
        let block_start = plan.durable_end - plan.durable_end % align;
        let carry = file
            .read_at(block_start, (plan.durable_end - block_start) as usize)
            .map_err(io_at(plan.segment, block_start))?;
        let mut log = Self::new(
            dir,
            salt,
            segment_bytes,
            (plan.segment, file, plan.durable_end, carry),
            next,
        );
        log.segment_end = plan.file_bytes_after;
        Ok(log)
    }

    /// A new log: the salt is durable before segment 0 exists. A damaged
    /// SALT without segments is a crash while making it.
    async fn create(dir: D, segment_bytes: u64, names: &[String]) -> Result<Self, LogError> {
        let io_err = |source| LogError::Io {
            segment: 0,
            offset: 0,
            source,
        };
        let align = dir.alignment();
        let salt = match read_salt(&dir, names) {
            Ok(Some(salt)) => salt,
            Ok(None) | Err(_) => {
                let salt = dir.new_salt();
                let mut file = dir.create(SALT_FILE, align).await.map_err(io_err)?;
                file.write_at(0, &encode_salt(&salt, align))
                    .await
                    .map_err(io_err)?;
                file.sync().await.map_err(io_err)?;
                salt
            }
        };
        let file = dir
            .create(&segment_name(0), segment_bytes)
            .await
            .map_err(io_err)?;
        Ok(Self::new(
            dir,
            salt,
            segment_bytes,
            (0, file, 0, Vec::new()),
            None,
        ))
    }

    /// The log writing `segment` in `file` from `durable_end`, `carry`
    /// being the durable bytes of the block that holds it.
    fn new(
        dir: D,
        salt: Salt,
        segment_bytes: u64,
        (segment, file, durable_end, carry): (u64, D::File, u64, Vec<u8>),
        next: Option<D::File>,
    ) -> Self {
        let segment_end = file.size();
        assert!(durable_end <= segment_end);
        assert!(carry.len() as u64 == durable_end % dir.alignment());
        assert!(segment_end >= segment_bytes);
        Self {
            dir,
            salt,
            segment_bytes,
            segment,
            file,
            segment_end,
            next,
            durable_end,
            carry: carry.len(),
            batch: carry,
            scratch: Vec::new(),
            cuts: Vec::new(),
            failed: None,
        }
    }

    /// The largest record payload this log accepts (see
    /// [`record_payload_bytes_max`]).
    pub fn record_payload_bytes_max(&self) -> usize {
        record_payload_bytes_max(self.segment_bytes, self.dir.alignment())
    }

    /// Room for the batch being built: the rest of the current segment for
    /// the first batch, a whole segment for the later ones.
    fn room(&self) -> u64 {
        if self.cuts.is_empty() {
            self.segment_end - self.durable_end
        } else {
            self.segment_bytes
        }
    }

    /// Appends a record to the current batch; it is durable once the next
    /// [`Self::flush`] returns. Any payload up to
    /// [`Self::record_payload_bytes_max`] is accepted.
    pub fn append(&mut self, kind: RecordKind, payload: &[u8]) -> Result<(), LogError> {
        if let Some(why) = &self.failed {
            return Err(LogError::Failed(why.clone()));
        }
        let limit_bytes = self.record_payload_bytes_max();
        if payload.len() > limit_bytes {
            return Err(LogError::TooLarge {
                payload_bytes: payload.len(),
                limit_bytes,
            });
        }
        let record_bytes = (HEADER_BYTES + payload.len()) as u64;
        let end_bytes = BATCH_END_BYTES as u64;
        if self.batch_bytes() + record_bytes + end_bytes > self.room() {
            // The record goes to the next segment: end this batch here.
            if self.batch_bytes() > 0 {
                self.end_batch();
            }
            self.cuts.push(self.batch.len());
        }
        assert!(self.batch_bytes() + record_bytes + end_bytes <= self.room());
        let before = self.batch.len();
        record::encode(kind, payload, &mut self.batch).map_err(|_| LogError::TooLarge {
            payload_bytes: payload.len(),
            limit_bytes,
        })?;
        assert!((self.batch.len() - before) as u64 == record_bytes);
        Ok(())
    }

    /// Where the batch being built starts in `batch`.
    fn batch_start(&self) -> usize {
        self.cuts.last().copied().unwrap_or(self.carry)
    }

    /// Bytes of the batch being built.
    fn batch_bytes(&self) -> u64 {
        (self.batch.len() - self.batch_start()) as u64
    }

    /// Where the block holding the durable end starts: the first batch's
    /// write starts there, with the carried bytes.
    fn block_start(&self) -> u64 {
        self.durable_end - self.carry as u64
    }

    /// Ends the batch being built with a batch end stating its offset in
    /// its segment (the first batch goes after the carried bytes, later
    /// ones start their segments).
    fn end_batch(&mut self) {
        let base = match self.cuts.last() {
            Some(&cut) => self.batch.len() - cut,
            None => self.block_start() as usize + self.batch.len(),
        };
        let end = (base + BATCH_END_BYTES) as u64;
        record::encode_batch_end(&self.salt, end, &mut self.batch);
    }

    /// Bytes waiting for the next flush.
    pub fn pending_bytes(&self) -> usize {
        self.batch.len() - self.carry
    }

    /// Where the durable log ends.
    pub fn durable_position(&self) -> Position {
        Position {
            segment: self.segment,
            offset: self.durable_end,
        }
    }

    /// Group commit: writes each batch with one write and one flush (a
    /// group that does not fit the rest of the segment is several batches,
    /// with a rotation before each later one), and returns the durable end
    /// once all are durable. On an IO error the log stops accepting records.
    pub async fn flush(&mut self) -> Result<Position, LogError> {
        if let Some(why) = &self.failed {
            return Err(LogError::Failed(why.clone()));
        }
        if self.pending_bytes() == 0 {
            return Ok(self.durable_position());
        }
        if self.batch_bytes() > 0 {
            self.end_batch();
        }
        let mut offset = self.block_start();
        let mut batch = std::mem::take(&mut self.batch);
        let cuts = std::mem::take(&mut self.cuts);
        let carry = std::mem::take(&mut self.carry);
        let before = self.durable_position();
        let mut from = 0;
        for (i, to) in cuts.iter().copied().chain([batch.len()]).enumerate() {
            if i > 0 {
                self.rotate().await?;
                offset = 0;
            }
            // The first batch is empty (only carried bytes) when the first
            // record went to the next segment.
            let fresh = if i == 0 { to > carry } else { to > from };
            if fresh {
                self.write_batch(offset, &batch[from..to]).await?;
            }
            from = to;
        }
        // The durable end only moves forward.
        assert!(self.durable_position() > before);
        // The last batch's bytes in the block holding the new durable end
        // are carried into the next write; the buffer is kept.
        let carried = (self.durable_end % self.dir.alignment()) as usize;
        batch.drain(..batch.len() - carried);
        self.carry = carried;
        self.batch = batch;
        Ok(self.durable_position())
    }

    /// Writes `bytes` (a batch, after the carried bytes when it is the
    /// first) at `offset`, rounded up to whole blocks with zeros, and
    /// flushes.
    async fn write_batch(&mut self, offset: u64, bytes: &[u8]) -> Result<(), LogError> {
        let align = self.dir.alignment();
        assert!(offset.is_multiple_of(align));
        // From the block holding the durable end, past it.
        assert!(offset <= self.durable_end && offset + bytes.len() as u64 > self.durable_end);
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(bytes);
        scratch.resize(bytes.len().next_multiple_of(align as usize), 0);
        assert!(offset + scratch.len() as u64 <= self.segment_end);
        let segment = self.segment;
        let result = async {
            self.file.write_at(offset, &scratch).await?;
            self.file.sync().await
        }
        .await;
        self.scratch = scratch;
        if let Err(source) = result {
            self.failed = Some(source.to_string());
            return Err(LogError::Io {
                segment,
                offset,
                source,
            });
        }
        // Durable only once written and synced: never past the written end.
        self.durable_end = offset + bytes.len() as u64;
        assert!(self.durable_end <= self.segment_end);
        Ok(())
    }
    /// Creates the next segment ahead of need, so that rotation does not
    /// write a whole segment of zeros in the flush path. Call when idle.
    pub async fn prepare_next(&mut self) -> Result<(), LogError> {
        if self.next.is_some() || self.failed.is_some() {
            return Ok(());
        }
        let next = self.segment + 1;
        match self
            .dir
            .create(&segment_name(next), self.segment_bytes)
            .await
        {
            Ok(file) => {
                self.next = Some(file);
                Ok(())
            }
            Err(source) => {
                // Not fatal yet: rotation tries again and fails the log then.
                tracing::warn!(segment = next, error = %source, "cannot create the next log segment ahead of need");
                Err(LogError::Io {
                    segment: next,
                    offset: 0,
                    source,
                })
            }
        }
    }

    /// The directory.
    pub fn dir(&self) -> &D {
        &self.dir
    }

    /// Segment size in bytes.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// Number of the segment that follows the current one.
    pub fn next_segment(&self) -> u64 {
        self.segment + 1
    }

    /// Hands over the next segment, made elsewhere with
    /// `dir().create(&segment_name(next_segment()), segment_bytes())`.
    pub fn set_next(&mut self, segment: u64, file: D::File) {
        if segment == self.segment + 1 && self.next.is_none() {
            self.next = Some(file);
        }
    }

    /// True when the next flush moves to the next segment (exact: the
    /// records appended so far decided it).
    pub fn may_rotate(&self) -> bool {
        !self.cuts.is_empty()
    }

    /// True when the current segment is past half full and no next segment
    /// is ready.
    pub fn wants_next(&self) -> bool {
        self.next.is_none() && self.failed.is_none() && self.durable_end * 2 >= self.segment_end
    }

    async fn rotate(&mut self) -> Result<(), LogError> {
        let next = self.segment + 1;
        let file = match self.next.take().filter(|f| f.size() == self.segment_bytes) {
            Some(file) => Ok(file),
            None => {
                self.dir
                    .create(&segment_name(next), self.segment_bytes)
                    .await
            }
        };
        match file {
            Ok(file) => {
                assert!(file.size() == self.segment_bytes);
                self.file = file;
                self.segment = next;
                self.segment_end = self.segment_bytes;
                self.durable_end = 0;
                Ok(())
            }
            Err(source) => {
                self.failed = Some(source.to_string());
                Err(LogError::Io {
                    segment: next,
                    offset: 0,
                    source,
                })
            }
        }
    }
}

/// Applies `plan` to the last segment's `file` (see [`RepairPlan`]): on
/// error, the offset where it failed.
async fn repair<F: LogFile>(
    file: &mut F,
    plan: &RepairPlan,
    salt: &Salt,
) -> Result<(), (u64, io::Error)> {
    if plan.file_bytes_after > file.size() {
        file.extend(plan.file_bytes_after)
            .await
            .map_err(|e| (plan.file_bytes, e))?;
    }
    // Zeros first: once the new end is written, nothing torn follows it.
    if plan.zero_to > plan.zero_from {
        let zeros = vec![0u8; REPAIR_ZEROS_CHUNK_BYTES];
        let mut at = plan.zero_from;
        while at < plan.zero_to {
            let len = (plan.zero_to - at).min(REPAIR_ZEROS_CHUNK_BYTES as u64);
            file.write_at(at, &zeros[..len as usize])
                .await
                .map_err(|e| (at, e))?;
            at += len;
        }
        file.sync().await.map_err(|e| (plan.zero_from, e))?;
    }
    if plan.block_end > plan.block_start {
        let mut block = file
            .read_at(plan.block_start, (plan.end - plan.block_start) as usize)
            .map_err(|e| (plan.block_start, e))?;
        if plan.batch_end {
            record::encode_batch_end(salt, plan.end + BATCH_END_BYTES as u64, &mut block);
        }
        block.resize((plan.block_end - plan.block_start) as usize, 0);
        file.write_at(plan.block_start, &block)
            .await
            .map_err(|e| (plan.block_start, e))?;
        file.sync().await.map_err(|e| (plan.block_start, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::ready as now;
    use crate::io::{CrashMode, Fault};

    fn payload(i: u64) -> Vec<u8> {
        let len = 50 + (i * 131) % 700;
        (0..len).map(|b| (b ^ i) as u8).collect()
    }

    const SEGMENT_BYTES: u64 = 8 * 1024;

    /// Appends `count` records in batches of 1..=4, noting which were acknowledged.
    fn workload(log: &mut Log<SimDisk>, first: u64, count: u64) -> (u64, Option<LogError>) {
        let mut acked = first;
        let mut i = first;
        while i < first + count {
            let batch = 1 + i % 4;
            for j in i..(i + batch).min(first + count) {
                if let Err(e) = log.append(RecordKind::MiniBlock, &payload(j)) {
                    return (acked, Some(e));
                }
            }
            i = (i + batch).min(first + count);
            match now(log.flush()) {
                Ok(_) => acked = i,
                Err(e) => return (acked, Some(e)),
            }
            // Half the runs make segments ahead of need, as the storage core does.
            if first.is_multiple_of(2) && log.wants_next() {
                let _ = now(log.prepare_next());
            }
        }
        (acked, None)
    }

    #[test]
    fn records_survive_reopen_across_segments() {
        let disk = SimDisk::new(3, 1 << 22);
        let (mut log, recovery) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
        assert!(recovery.records.is_empty());
        let (acked, error) = workload(&mut log, 0, 100);
        assert!(error.is_none());
        assert_eq!(acked, 100);
        assert!(disk.list().len() > 3, "the workload spans several segments");
        let (_, recovery) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
        let payloads: Vec<Vec<u8>> = recovery.records.iter().map(|r| r.2.to_vec()).collect();
        assert_eq!(payloads, (0..100).map(payload).collect::<Vec<_>>());
        assert!(recovery.truncated.is_none());
        let positions: Vec<Position> = recovery.records.iter().map(|r| r.0).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "positions increase"
        );
    }

    /// A flush costs its records and one batch end, not a padded block:
    /// small flushes share the device block, which each one rewrites.
    #[test]
    fn small_flushes_share_blocks_and_cost_only_their_batch_end() {
        let disk = SimDisk::new(4, 1 << 22);
        let (mut log, _) = now(Log::open(disk.clone(), 64 * 1024)).unwrap();
        let record = [7u8; 100];
        for _ in 0..100 {
            log.append(RecordKind::MiniBlock, &record).unwrap();
            now(log.flush()).unwrap();
        }
        let per_flush = (HEADER_BYTES + record.len() + BATCH_END_BYTES) as u64;
        assert_eq!(log.durable_position().offset, 100 * per_flush);
        let (recovery, tail) = read_log(&disk).unwrap();
        assert_eq!(recovery.records.len(), 100);
        assert_eq!(recovery.bytes, 100 * per_flush);
        assert!(tail.batch_end && tail.torn.is_none());
    }

    /// A log written by format version 2 (each batch padded to the block)
    /// reads as it is and goes on with version 3 batches after it.
    #[test]
    fn a_log_with_padded_batches_is_read_and_continued() {
        let disk = SimDisk::new(5, 1 << 22);
        let (log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
        let salt = log.salt;
        drop(log);
        let align = disk.alignment() as usize;
        let mut old = Vec::new();
        for i in 0..5 {
            for j in 0..=i % 2 {
                record::encode(RecordKind::MiniBlock, &payload(i * 2 + j), &mut old).unwrap();
            }
            record::encode_padding(&salt, align, &mut old);
        }
        let mut file = disk.open(&segment_name(0)).unwrap();
        now(file.write_at(0, &old)).unwrap();
        now(file.sync()).unwrap();
        let (mut log, recovery) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
        let before: Vec<Vec<u8>> = recovery.records.iter().map(|r| r.2.to_vec()).collect();
        assert_eq!(before.len(), 7);
        assert_eq!(log.durable_position().offset, old.len() as u64);
        for i in 0..40 {
            log.append(RecordKind::MiniBlock, &payload(100 + i))
                .unwrap();
            now(log.flush()).unwrap();
        }
        let mut expected = before;
        expected.extend((0..40).map(|i| payload(100 + i)));
        assert_eq!(payloads(&disk), expected);
    }

    /// Crash after every operation count, torn and lost: reopening finds every
    /// acknowledged record, nothing that was not appended, and a working log.
    #[test]
    fn every_crash_point_recovers_every_acknowledged_record() {
        let points: u64 = if std::env::var("FULMEN_LONG").is_ok() {
            2_000
        } else {
            150
        };
        for crash_after in 0..points {
            for mode in [CrashMode::TearUnflushed, CrashMode::LoseUnflushed] {
                let disk = SimDisk::new(crash_after * 7 + 1, 1 << 22);
                let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
                disk.inject(Some(Fault::Eio {
                    at_op: crash_after,
                    forever: true,
                }));
                let (acked, _) = workload(&mut log, 0, 60);
                let rebooted = disk.crash(mode);
                let (mut log, recovery) = now(Log::open(rebooted.clone(), SEGMENT_BYTES))
                    .unwrap_or_else(|e| panic!("crash after op {crash_after} ({mode:?}): {e}"));
                let found: Vec<Vec<u8>> = recovery.records.iter().map(|r| r.2.to_vec()).collect();
                assert!(
                    found.len() as u64 >= acked,
                    "op {crash_after} {mode:?}: lost an acknowledged record"
                );
                let expected: Vec<Vec<u8>> = (0..found.len() as u64).map(payload).collect();
                assert_eq!(
                    found, expected,
                    "op {crash_after} {mode:?}: invented or reordered records"
                );
                // The recovered log keeps working, and a second reopen agrees.
                let next = found.len() as u64;
                let (acked_after, error) = workload(&mut log, next, 5);
                assert!(error.is_none(), "op {crash_after}: {error:?}");
                assert_eq!(acked_after, next + 5);
                let (_, again) = now(Log::open(rebooted, SEGMENT_BYTES)).unwrap();
                assert_eq!(again.records.len() as u64, next + 5);
                assert!(again.truncated.is_none());
            }
        }
    }

    #[test]
    fn an_io_error_stops_the_log_until_reopened() {
        let disk = SimDisk::new(9, 1 << 22);
        let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
        workload(&mut log, 0, 10);
        disk.inject(Some(Fault::NoSpace {
            at_op: disk.ops(),
            forever: false,
        }));
        log.append(RecordKind::MiniBlock, b"x").unwrap();
        assert!(matches!(now(log.flush()), Err(LogError::Io { .. })));
        // The fault was one-off, but the log stays stopped: a half-known state
        // is never built on.
        assert!(matches!(
            log.append(RecordKind::MiniBlock, b"y"),
            Err(LogError::Failed(_))
        ));
        assert!(matches!(now(log.flush()), Err(LogError::Failed(_))));
        let (_, recovery) = now(Log::open(
            disk.crash(CrashMode::LoseUnflushed),
            SEGMENT_BYTES,
        ))
        .unwrap();
        assert_eq!(recovery.records.len(), 10);
    }

    #[test]
    fn corruption_before_the_tail_stops_the_open_with_its_place() {
        let disk = SimDisk::new(5, 1 << 22);
        let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
        workload(&mut log, 0, 40);
        disk.allow_unaligned_writes();
        // Flip a byte inside the first record of segment 0.
        let mut file = disk.open(&segment_name(0)).unwrap();
        let mut byte = file.read_at(20, 1).unwrap();
        byte[0] ^= 0xff;
        now(file.write_at(20, &byte)).unwrap();
        now(file.sync()).unwrap();
        match now(Log::open(disk, SEGMENT_BYTES)) {
            Err(LogError::Corrupt {
                segment: 0,
                offset: 0,
                ..
            }) => {}
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("corruption went unnoticed"),
        }
        // A disk too small for one segment: a clear IO error naming the place.
        assert!(matches!(
            now(Log::open(SimDisk::new(1, 100), SEGMENT_BYTES)),
            Err(LogError::Io { segment: 0, .. })
        ));
    }

    fn big(i: u64, len: usize) -> Vec<u8> {
        (0..len).map(|b| (b as u64 * 7 + i) as u8).collect()
    }

    fn payloads(disk: &SimDisk) -> Vec<Vec<u8>> {
        let (recovery, _) = read_log(disk).unwrap();
        recovery.records.into_iter().map(|r| r.2.to_vec()).collect()
    }

    /// A record of the largest size (and a few sizes just under it) is
    /// accepted and written at every fill level of the current segment.
    #[test]
    fn a_record_of_the_largest_size_is_written_at_every_fill_level() {
        let align = SimDisk::new(0, 1).alignment();
        let max = record_payload_bytes_max(SEGMENT_BYTES, align);
        assert_eq!(max, SEGMENT_BYTES as usize - HEADER_BYTES - BATCH_END_BYTES);
        assert_eq!(
            record_payload_bytes_max(8 << 30, 4096),
            record::PAYLOAD_BYTES_MAX
        );
        for size in [max, max - 1, max - 17, max - align as usize] {
            // Fill levels: every block of a segment, plus a partly filled batch.
            for blocks in 0..SEGMENT_BYTES / align {
                let disk = SimDisk::new(blocks, 1 << 22);
                let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
                let mut expected = Vec::new();
                // One batch filling `blocks` blocks exactly.
                if blocks > 0 {
                    let filler = blocks as usize * align as usize - HEADER_BYTES - BATCH_END_BYTES;
                    expected.push(big(1, filler));
                    log.append(RecordKind::MiniBlock, &expected[0]).unwrap();
                    now(log.flush()).unwrap();
                    assert_eq!(log.durable_position().offset, blocks * align);
                }
                let small = big(2, (blocks as usize * 13) % 300);
                log.append(RecordKind::BlockSeal, &small).unwrap();
                expected.push(small);
                log.append(RecordKind::MiniBlock, &big(3, size)).unwrap();
                expected.push(big(3, size));
                log.append(RecordKind::MiniBlock, b"after").unwrap();
                expected.push(b"after".to_vec());
                now(log.flush()).unwrap();
                assert_eq!(
                    payloads(&disk),
                    expected,
                    "size {size}, {blocks} blocks full"
                );
                let (mut log, recovery) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
                assert!(recovery.truncated.is_none());
                log.append(RecordKind::MiniBlock, &big(4, size)).unwrap();
                now(log.flush()).unwrap();
                expected.push(big(4, size));
                assert_eq!(payloads(&disk), expected);
            }
        }
        // One byte more is refused with the limit named.
        let (mut log, _) = now(Log::open(SimDisk::new(1, 1 << 22), SEGMENT_BYTES)).unwrap();
        assert_eq!(log.record_payload_bytes_max(), max);
        match log.append(RecordKind::MiniBlock, &vec![0; max + 1]) {
            Err(LogError::TooLarge {
                payload_bytes,
                limit_bytes,
            }) => assert_eq!((payload_bytes, limit_bytes), (max + 1, max)),
            other => panic!("{other:?}"),
        }
    }

    /// A group of records that together exceed a segment is written in
    /// several batches over several segments, with one flush call.
    #[test]
    fn a_group_larger_than_a_segment_spans_segments() {
        let disk = SimDisk::new(4, 1 << 22);
        let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
        let max = log.record_payload_bytes_max();
        let group: Vec<Vec<u8>> = (0..9u64)
            .map(|i| big(i, [max, 100, max / 2, max / 3 + 5, 1][i as usize % 5]))
            .collect();
        for record in &group {
            log.append(RecordKind::MiniBlock, record).unwrap();
        }
        assert!(log.may_rotate());
        assert!(log.pending_bytes() as u64 > 3 * SEGMENT_BYTES);
        let end = now(log.flush()).unwrap();
        assert!(end.segment >= 3, "{end:?}");
        assert!(!log.may_rotate());
        assert_eq!(payloads(&disk), group);
    }

    /// Workload of big records (up to the largest) in groups that often
    /// exceed a segment, crashed after every operation: every acknowledged
    /// record is there, nothing invented.
    #[test]
    fn every_crash_point_with_big_records_and_big_groups_recovers() {
        let max = record_payload_bytes_max(SEGMENT_BYTES, 512);
        let sizes = [max, 3000, max - 511, 17, max / 2, 5000];
        let record = |i: u64| big(i, sizes[i as usize % sizes.len()]);
        let run = |log: &mut Log<SimDisk>, first: u64, count: u64| {
            let mut acked = first;
            let mut i = first;
            while i < first + count {
                let group = 1 + i % 3;
                for j in i..(i + group).min(first + count) {
                    if log.append(RecordKind::MiniBlock, &record(j)).is_err() {
                        return acked;
                    }
                }
                i = (i + group).min(first + count);
                if now(log.flush()).is_err() {
                    return acked;
                }
                acked = i;
                if i.is_multiple_of(2) && log.wants_next() {
                    let _ = now(log.prepare_next());
                }
            }
            acked
        };
        for crash_after in 0..120u64 {
            for mode in [CrashMode::TearUnflushed, CrashMode::LoseUnflushed] {
                let disk = SimDisk::new(crash_after * 13 + 5, 1 << 23);
                let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
                disk.inject(Some(Fault::Eio {
                    at_op: crash_after,
                    forever: true,
                }));
                let acked = run(&mut log, 0, 30);
                let rebooted = disk.crash(mode);
                let (mut log, recovery) = now(Log::open(rebooted.clone(), SEGMENT_BYTES))
                    .unwrap_or_else(|e| panic!("op {crash_after} {mode:?}: {e}"));
                let found: Vec<Vec<u8>> =
                    recovery.records.into_iter().map(|r| r.2.to_vec()).collect();
                assert!(
                    found.len() as u64 >= acked,
                    "op {crash_after} {mode:?}: lost"
                );
                let expected: Vec<Vec<u8>> = (0..found.len() as u64).map(record).collect();
                assert!(found == expected, "op {crash_after} {mode:?}: invented");
                let next = found.len() as u64;
                assert_eq!(run(&mut log, next, 4), next + 4);
                assert_eq!(payloads(&rebooted).len() as u64, next + 4);
            }
        }
    }

    /// Calldata can hold whole CRC-valid frames: a forged batch end (padding)
    /// and a forged record after it. A torn last batch holding them is still
    /// a torn tail that boot cuts, not "corruption" that stops it.
    #[test]
    fn frames_forged_in_payloads_do_not_turn_a_torn_tail_into_corruption() {
        let mut calldata = Vec::new();
        for i in 0..40usize {
            // Forged batch ends of many lengths (some ending aligned), each
            // followed by a valid record.
            record::encode(RecordKind::Padding, &vec![0u8; i * 13], &mut calldata).unwrap();
            record::encode(RecordKind::MiniBlock, b"forged record", &mut calldata).unwrap();
            calldata.extend(std::iter::repeat_n(0x5a, i));
        }
        let disk = SimDisk::new(8, 1 << 22);
        let (mut log, _) = now(Log::open(disk.clone(), 64 * 1024)).unwrap();
        log.append(RecordKind::MiniBlock, b"durable").unwrap();
        now(log.flush()).unwrap();
        let last_batch = log.durable_position();
        log.append(RecordKind::MiniBlock, b"first of the torn batch")
            .unwrap();
        log.append(RecordKind::MiniBlock, &calldata).unwrap();
        log.append(RecordKind::MiniBlock, &calldata).unwrap();
        now(log.flush()).unwrap();
        drop(log);
        // The crash tore the last batch: its first sector never arrived
        // (the sector holds what it held before: the durable batch, zeros).
        let mut file = disk.open(&segment_name(last_batch.segment)).unwrap();
        let sector = last_batch.offset - last_batch.offset % 512;
        let mut old = file.read_at(sector, 512).unwrap();
        old[(last_batch.offset - sector) as usize..].fill(0);
        now(file.write_at(sector, &old)).unwrap();
        now(file.sync()).unwrap();
        let (mut log, recovery) = now(Log::open(disk.clone(), 64 * 1024))
            .unwrap_or_else(|e| panic!("a torn tail was taken for corruption: {e}"));
        assert_eq!(recovery.records.len(), 1);
        assert_eq!(recovery.truncated.map(|t| t.0), Some(last_batch));
        log.append(RecordKind::MiniBlock, b"after the repair")
            .unwrap();
        now(log.flush()).unwrap();
        assert_eq!(
            payloads(&disk),
            vec![b"durable".to_vec(), b"after the repair".to_vec()]
        );
    }

    /// A batch cut after a valid record (its batch end never arrived) is
    /// ended at open with a batch end, here one that crosses a block
    /// boundary; the log then reads back whole and goes on.
    #[test]
    fn a_batch_end_written_at_open_may_cross_a_block() {
        let disk = SimDisk::new(6, 1 << 22);
        let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
        // The record ends 10 bytes before the first block's end.
        let first = vec![7u8; 512 - 10 - HEADER_BYTES];
        log.append(RecordKind::MiniBlock, &first).unwrap();
        now(log.flush()).unwrap();
        drop(log);
        // The batch end is lost (zeros where it was): a batch cut after
        // its record.
        let mut file = disk.open(&segment_name(0)).unwrap();
        let mut blocks = file.read_at(0, 1024).unwrap();
        blocks[502..502 + BATCH_END_BYTES].fill(0);
        now(file.write_at(0, &blocks)).unwrap();
        now(file.sync()).unwrap();
        let (_, tail) = read_log(&disk).unwrap();
        assert!(!tail.batch_end && tail.torn.is_none() && tail.end == 502);
        let plan = repair_plan(&tail, SEGMENT_BYTES, 512).unwrap();
        assert!(plan.batch_end);
        assert_eq!((plan.block_start, plan.block_end), (0, 1024));
        assert_eq!(plan.durable_end, 502 + BATCH_END_BYTES as u64);
        let (mut log, recovery) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
        assert_eq!(recovery.records.len(), 1);
        assert_eq!(log.durable_position().offset, plan.durable_end);
        log.append(RecordKind::MiniBlock, b"after").unwrap();
        now(log.flush()).unwrap();
        assert_eq!(payloads(&disk), vec![first, b"after".to_vec()]);
        let (_, tail) = read_log(&disk).unwrap();
        assert!(tail.batch_end);
    }

    /// A batch cut after a record too close to the segment's end for a
    /// batch end: the segment ends with zeros and writing moves on to the
    /// next segment.
    #[test]
    fn without_room_for_a_batch_end_the_segment_is_closed() {
        let segment = 8 * 512;
        let tail = Tail {
            segment: 3,
            end: segment - 20,
            torn: None,
            next: None,
            file_bytes: segment,
            dirty_end: segment - 20,
            batch_end: false,
        };
        let plan = repair_plan(&tail, segment, 512).unwrap();
        assert!(!plan.batch_end);
        assert_eq!(plan.durable_end, segment, "the segment is full");
        assert_eq!(plan.block_end, plan.block_start, "nothing rewritten");
        assert!(!plan.writes());
        // With torn bytes after the records, the block is rewritten with
        // zeros after them.
        let torn = Tail {
            dirty_end: segment,
            torn: Some(RecordError::BadMagic { found: 1 }),
            ..tail
        };
        let plan = repair_plan(&torn, segment, 512).unwrap();
        assert_eq!((plan.block_start, plan.block_end), (segment - 512, segment));
        assert_eq!(plan.durable_end, segment);
    }

    /// A last segment cut to any length past its durable records (a crash
    /// of the filesystem, `truncate -s`) is repaired with aligned writes: the
    /// records before the cut are there and the log keeps working; `read_log`
    /// and the plan agree on what is written.
    #[test]
    fn a_truncated_last_segment_is_repaired_with_aligned_writes() {
        for cut in [
            1usize, 511, 512, 513, 1000, 1500, 2047, 2048, 2049, 3001, 4095, 6000,
        ] {
            let disk = SimDisk::new(cut as u64, 1 << 22);
            let (mut log, _) = now(Log::open(disk.clone(), SEGMENT_BYTES)).unwrap();
            let written: Vec<Vec<u8>> = (0..12u64).map(|i| big(i, 100 + i as usize * 40)).collect();
            for (i, record) in written.iter().enumerate() {
                log.append(RecordKind::MiniBlock, record).unwrap();
                if i % 3 == 2 {
                    now(log.flush()).unwrap();
                }
            }
            let (segment, end) = (
                log.durable_position().segment,
                log.durable_position().offset,
            );
            drop(log);
            let cut = cut.min(end as usize + 700);
            disk.set_len(&segment_name(segment), cut).unwrap();
            let (_, tail) = read_log(&disk).unwrap();
            assert_eq!(tail.file_bytes, cut as u64);
            let plan = repair_plan(&tail, SEGMENT_BYTES, 512).unwrap();
            assert!(plan.writes());
            assert_eq!(plan.file_bytes_after, SEGMENT_BYTES);
            let (mut log, recovery) = now(Log::open(disk.clone(), SEGMENT_BYTES))
                .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let found: Vec<Vec<u8>> = recovery.records.into_iter().map(|r| r.2.to_vec()).collect();
            assert_eq!(found[..], written[..found.len()], "cut at {cut}");
            assert_eq!(log.durable_position().offset, plan.durable_end);
            log.append(RecordKind::MiniBlock, b"after").unwrap();
            now(log.flush()).unwrap();
            let mut expected = found.clone();
            expected.push(b"after".to_vec());
            assert_eq!(payloads(&disk), expected, "cut at {cut}");
            let (_, tail) = read_log(&disk).unwrap();
            assert!(!repair_plan(&tail, SEGMENT_BYTES, 512).unwrap().writes());
        }
    }
}
