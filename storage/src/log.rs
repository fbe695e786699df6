//! The append-only log: preallocated segments of framed records, written
//! with group commit (one write and one flush per batch), and read back at
//! open with torn-tail repair.
//!
//! Discipline the recovery relies on: a batch is written with one write at
//! the end of the durable log, and no new write starts before that batch's
//! flush completed. So a crash can only damage the last batch of the last
//! segment, and anything wrong before that is corruption, never skipped.

use std::future::Future;
use std::io;

use crate::io::{LogFile, SimDisk, SimFile};
use crate::record::{self, RecordError, RecordKind};
use crate::scan::{SegmentEnd, scan};

/// Where a record sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Segment number.
    pub segment: u64,
    /// Byte offset in the segment.
    pub offset: u64,
}

/// A directory of segment files.
pub trait LogDir {
    /// File type.
    type File: LogFile;
    /// A read-only view of a whole file (an mmap for real files).
    type Map: std::ops::Deref<Target = [u8]>;
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
}

impl LogDir for SimDisk {
    type File = SimFile;
    type Map = Vec<u8>;
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
    /// A record larger than a segment.
    #[error("record of {0} bytes does not fit in a segment")]
    TooLarge(usize),
    /// An earlier IO error stopped the log.
    #[error("the log stopped after an IO error ({0}); restart the node to recover")]
    Failed(String),
}

/// What opening the log found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Every record but padding, in order: position, kind and payload.
    pub records: Vec<(Position, RecordKind, Vec<u8>)>,
    /// A torn tail that was cut off: where, and why.
    pub truncated: Option<(Position, RecordError)>,
    /// Bytes of log read (records and padding).
    pub bytes: u64,
}

/// Segment file name for a segment number.
pub fn segment_name(segment: u64) -> String {
    format!("{segment:020}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
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
}

/// Reads every record of the log in `dir` without changing anything: the
/// records, a torn tail (reported, not repaired) and where writing resumes.
/// Corruption before the tail is an error naming segment and offset.
pub fn read_log<D: LogDir>(dir: &D) -> Result<(Recovery, Tail), LogError> {
    let io_at = |segment, offset| {
        move |source| LogError::Io {
            segment,
            offset,
            source,
        }
    };
    let mut segments: Vec<u64> = dir
        .list()
        .map_err(io_at(0, 0))?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    segments.sort_unstable();
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
    // (segment, end, torn tail) of each segment in order.
    let mut ends: Vec<(u64, u64, Option<RecordError>)> = Vec::new();
    for segment in segments.iter().copied() {
        let bytes = dir.map(&segment_name(segment)).map_err(io_at(segment, 0))?;
        let found = scan(&bytes, |offset, record| {
            if record.kind != RecordKind::Padding {
                recovery.records.push((
                    Position { segment, offset },
                    record.kind,
                    record.payload.to_vec(),
                ));
            }
        })
        .map_err(|c| LogError::Corrupt {
            segment,
            offset: c.offset,
            detail: c.to_string(),
        })?;
        match found {
            SegmentEnd::Clean { end } => ends.push((segment, end, None)),
            SegmentEnd::TornTail { at, error } => ends.push((segment, at, Some(error))),
        }
    }
    // Segments after the last written one were made ahead of need.
    let last = ends
        .iter()
        .rposition(|(_, end, torn)| *end > 0 || torn.is_some())
        .unwrap_or(0);
    for (segment, end, torn) in &ends[..last] {
        if let Some(error) = torn {
            return Err(LogError::Corrupt {
                segment: *segment,
                offset: *end,
                detail: format!("{error} in a segment that is not the last"),
            });
        }
    }
    recovery.bytes = ends[..=last].iter().map(|(_, end, _)| end).sum();
    let (segment, end, torn) = ends[last].clone();
    if let Some(error) = &torn {
        recovery.truncated = Some((
            Position {
                segment,
                offset: end,
            },
            error.clone(),
        ));
    }
    let next = ends.get(last + 1).map(|(n, _, _)| *n);
    Ok((
        recovery,
        Tail {
            segment,
            end,
            torn,
            next,
        },
    ))
}

/// The log.
pub struct Log<D: LogDir> {
    dir: D,
    segment_bytes: u64,
    segment: u64,
    file: D::File,
    /// The next segment, created ahead of need by [`Self::prepare_next`].
    next: Option<D::File>,
    /// End of the durable log in the current segment (always aligned).
    durable_end: u64,
    /// Records appended since the last flush, framed.
    batch: Vec<u8>,
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

    /// Opens the log for writing where [`read_log`] found its end, cutting
    /// off a torn tail.
    pub async fn open_at(dir: D, segment_bytes: u64, tail: Tail) -> Result<Self, LogError> {
        let io_at = |segment, offset| {
            move |source| LogError::Io {
                segment,
                offset,
                source,
            }
        };
        let align = dir.alignment();
        if !segment_bytes.is_multiple_of(align) || segment_bytes < 4 * align {
            return Err(LogError::TooLarge(segment_bytes as usize));
        }
        let Tail {
            segment,
            end,
            torn,
            next,
        } = tail;
        if segment == 0 && end == 0 && torn.is_none() && dir.list().map_err(io_at(0, 0))?.is_empty()
        {
            let file = dir
                .create(&segment_name(0), segment_bytes)
                .await
                .map_err(io_at(0, 0))?;
            return Ok(Self {
                dir,
                segment_bytes,
                segment: 0,
                file,
                next: None,
                durable_end: 0,
                batch: Vec::new(),
                failed: None,
            });
        }
        let mut file = dir
            .open(&segment_name(segment))
            .await
            .map_err(io_at(segment, 0))?;
        // Writes start aligned. A clean end is aligned (the writer pads every
        // batch); a torn end is not: the block holding it is rewritten with
        // its valid records and a padding record, and what follows is zeroed
        // so that no later scan can mistake the torn bytes.
        let block_start = end - end % align;
        let mut tail = Vec::new();
        if end % align != 0 {
            tail = file
                .read_at(block_start, (end - block_start) as usize)
                .map_err(io_at(segment, block_start))?;
            let mut gap = align as usize - tail.len();
            if gap < record::HEADER_BYTES {
                gap += align as usize;
            }
            record::encode(
                RecordKind::Padding,
                &vec![0u8; gap - record::HEADER_BYTES],
                &mut tail,
            )
            .expect("padding is small");
        }
        let mut durable_end = block_start + tail.len() as u64;
        if durable_end > file.size() {
            // No room for padding in the last block: the segment is full.
            tail.truncate((end - block_start) as usize);
            durable_end = file.size();
        }
        if torn.is_some() || !tail.is_empty() {
            tail.resize((file.size() - block_start) as usize, 0);
            file.write_at(block_start, &tail)
                .await
                .map_err(io_at(segment, block_start))?;
            file.sync().await.map_err(io_at(segment, block_start))?;
        }
        let next = match next {
            Some(n) => Some(dir.open(&segment_name(n)).await.map_err(io_at(n, 0))?),
            None => None,
        };
        Ok(Self {
            dir,
            segment_bytes,
            segment,
            file,
            next,
            durable_end,
            batch: Vec::new(),
            failed: None,
        })
    }

    /// Appends a record to the current batch; it is durable once the next
    /// [`Self::flush`] returns.
    pub fn append(&mut self, kind: RecordKind, payload: &[u8]) -> Result<(), LogError> {
        if let Some(why) = &self.failed {
            return Err(LogError::Failed(why.clone()));
        }
        // Room for the record and the padding that may follow it.
        let room = self.segment_bytes - 2 * self.dir.alignment();
        if (record::HEADER_BYTES + payload.len()) as u64 > room {
            return Err(LogError::TooLarge(payload.len()));
        }
        record::encode(kind, payload, &mut self.batch)
            .map_err(|_| LogError::TooLarge(payload.len()))
    }

    /// Bytes waiting for the next flush.
    pub fn pending_bytes(&self) -> usize {
        self.batch.len()
    }

    /// Where the durable log ends.
    pub fn durable_position(&self) -> Position {
        Position {
            segment: self.segment,
            offset: self.durable_end,
        }
    }

    /// Ends the batch with one padding record, up to a multiple of the
    /// alignment. Every batch ends with one, even an aligned batch (which
    /// gets a whole block of it): boot tells a torn last batch from damage
    /// in a synced one by whether a batch end is followed by a later batch.
    fn pad_batch(&mut self) {
        let align = self.dir.alignment() as usize;
        let mut gap = align - self.batch.len() % align;
        if gap < record::HEADER_BYTES {
            gap += align;
        }
        let zeros = vec![0u8; gap - record::HEADER_BYTES];
        record::encode(RecordKind::Padding, &zeros, &mut self.batch).expect("padding is small");
    }

    /// Group commit: writes the batch with one write, flushes, and returns
    /// the durable end. On an IO error the log stops accepting records.
    pub async fn flush(&mut self) -> Result<Position, LogError> {
        if let Some(why) = &self.failed {
            return Err(LogError::Failed(why.clone()));
        }
        if self.batch.is_empty() {
            return Ok(self.durable_position());
        }
        self.pad_batch();
        if self.durable_end + self.batch.len() as u64 > self.segment_bytes {
            self.rotate().await?;
        }
        let offset = self.durable_end;
        let segment = self.segment;
        let result = async {
            self.file.write_at(offset, &self.batch).await?;
            self.file.sync().await
        }
        .await;
        if let Err(source) = result {
            self.failed = Some(source.to_string());
            return Err(LogError::Io {
                segment,
                offset,
                source,
            });
        }
        self.durable_end += self.batch.len() as u64;
        self.batch.clear();
        Ok(self.durable_position())
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

    /// True when the next flush may move to the next segment.
    pub fn may_rotate(&self) -> bool {
        let align = self.dir.alignment();
        self.durable_end + self.batch.len() as u64 + 2 * align > self.segment_bytes
    }

    /// True when the current segment is past half full and no next segment
    /// is ready.
    pub fn wants_next(&self) -> bool {
        self.next.is_none() && self.failed.is_none() && self.durable_end * 2 >= self.segment_bytes
    }

    async fn rotate(&mut self) -> Result<(), LogError> {
        if self.batch.len() as u64 > self.segment_bytes {
            return Err(LogError::TooLarge(self.batch.len()));
        }
        let next = self.segment + 1;
        let file = match self.next.take() {
            Some(file) => Ok(file),
            None => {
                self.dir
                    .create(&segment_name(next), self.segment_bytes)
                    .await
            }
        };
        match file {
            Ok(file) => {
                self.file = file;
                self.segment = next;
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
        let payloads: Vec<Vec<u8>> = recovery.records.iter().map(|r| r.2.clone()).collect();
        assert_eq!(payloads, (0..100).map(payload).collect::<Vec<_>>());
        assert!(recovery.truncated.is_none());
        let positions: Vec<Position> = recovery.records.iter().map(|r| r.0).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "positions increase"
        );
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
                let found: Vec<Vec<u8>> = recovery.records.iter().map(|r| r.2.clone()).collect();
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
}
