//! The append-only log: preallocated segments of framed records, written
//! with group commit (one write and one flush per batch), and read back at
//! open with torn-tail repair.
//!
//! Discipline the recovery relies on: a batch is written with one write at
//! the end of the durable log, and no new write starts before that batch's
//! flush completed. So a crash can only damage the last batch of the last
//! segment, and anything wrong before that is corruption, never skipped.

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
    /// Creates a file preallocated with zeros.
    fn create(&self, name: &str, size_bytes: u64) -> io::Result<Self::File>;
    /// Opens an existing file.
    fn open(&self, name: &str) -> io::Result<Self::File>;
    /// File names.
    fn list(&self) -> io::Result<Vec<String>>;
}

impl LogDir for SimDisk {
    type File = SimFile;
    fn create(&self, name: &str, size_bytes: u64) -> io::Result<SimFile> {
        SimDisk::create(self, name, size_bytes)
    }
    fn open(&self, name: &str) -> io::Result<SimFile> {
        SimDisk::open(self, name)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(SimDisk::list(self))
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
    /// Every record in order: position, kind and payload.
    pub records: Vec<(Position, RecordKind, Vec<u8>)>,
    /// A torn tail that was cut off: where, and why.
    pub truncated: Option<(Position, RecordError)>,
}

/// Segment file name for a segment number.
pub fn segment_name(segment: u64) -> String {
    format!("{segment:020}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
}

/// The log.
pub struct Log<D: LogDir> {
    dir: D,
    segment_bytes: u64,
    segment: u64,
    file: D::File,
    /// End of the durable log in the current segment.
    durable_end: u64,
    /// Records appended since the last flush, framed.
    batch: Vec<u8>,
    failed: Option<String>,
}

impl<D: LogDir> Log<D> {
    /// Opens the log in `dir` (creating segment 0 if there is none), reads
    /// every record, and cuts off a torn tail.
    pub async fn open(dir: D, segment_bytes: u64) -> Result<(Self, Recovery), LogError> {
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
        if segments.is_empty() {
            let file = dir
                .create(&segment_name(0), segment_bytes)
                .map_err(io_at(0, 0))?;
            let log = Self {
                dir,
                segment_bytes,
                segment: 0,
                file,
                durable_end: 0,
                batch: Vec::new(),
                failed: None,
            };
            return Ok((log, Recovery::default()));
        }
        let mut recovery = Recovery::default();
        let last = *segments.last().expect("not empty");
        let mut end = 0;
        for (i, segment) in segments.iter().copied().enumerate() {
            if i > 0 && segment != segments[i - 1] + 1 {
                return Err(LogError::Corrupt {
                    segment,
                    offset: 0,
                    detail: format!("segment {} is missing", segments[i - 1] + 1),
                });
            }
            let file = dir
                .open(&segment_name(segment))
                .map_err(io_at(segment, 0))?;
            let bytes = file
                .read_at(0, file.size() as usize)
                .map_err(io_at(segment, 0))?;
            let found = scan(&bytes, |offset, record| {
                recovery.records.push((
                    Position { segment, offset },
                    record.kind,
                    record.payload.to_vec(),
                ));
            })
            .map_err(|c| LogError::Corrupt {
                segment,
                offset: c.offset,
                detail: c.to_string(),
            })?;
            end = match found {
                SegmentEnd::Clean { end } => end,
                SegmentEnd::TornTail { at, error } if segment == last => {
                    recovery.truncated = Some((
                        Position {
                            segment,
                            offset: at,
                        },
                        error,
                    ));
                    at
                }
                SegmentEnd::TornTail { at, error } => {
                    return Err(LogError::Corrupt {
                        segment,
                        offset: at,
                        detail: format!("{error} in a segment that is not the last"),
                    });
                }
            };
        }
        let mut file = dir.open(&segment_name(last)).map_err(io_at(last, 0))?;
        if let Some((position, _)) = &recovery.truncated {
            // Zero the torn bytes so that no later scan can mistake them.
            let zeros = vec![0u8; (file.size() - position.offset) as usize];
            file.write_at(position.offset, &zeros)
                .await
                .map_err(io_at(last, position.offset))?;
            file.sync().await.map_err(io_at(last, position.offset))?;
        }
        let log = Self {
            dir,
            segment_bytes,
            segment: last,
            file,
            durable_end: end,
            batch: Vec::new(),
            failed: None,
        };
        Ok((log, recovery))
    }

    /// Appends a record to the current batch; it is durable once the next
    /// [`Self::flush`] returns.
    pub fn append(&mut self, kind: RecordKind, payload: &[u8]) -> Result<(), LogError> {
        if let Some(why) = &self.failed {
            return Err(LogError::Failed(why.clone()));
        }
        if (record::HEADER_BYTES + payload.len()) as u64 > self.segment_bytes {
            return Err(LogError::TooLarge(payload.len()));
        }
        record::encode(kind, payload, &mut self.batch)
            .map_err(|_| LogError::TooLarge(payload.len()))
    }

    /// Bytes waiting for the next flush.
    pub fn pending_bytes(&self) -> usize {
        self.batch.len()
    }

    /// Group commit: writes the batch with one write, flushes, and returns
    /// the durable end. On an IO error the log stops accepting records.
    pub async fn flush(&mut self) -> Result<Position, LogError> {
        if let Some(why) = &self.failed {
            return Err(LogError::Failed(why.clone()));
        }
        if self.batch.is_empty() {
            return Ok(Position {
                segment: self.segment,
                offset: self.durable_end,
            });
        }
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
        Ok(Position {
            segment: self.segment,
            offset: self.durable_end,
        })
    }

    async fn rotate(&mut self) -> Result<(), LogError> {
        if self.batch.len() as u64 > self.segment_bytes {
            return Err(LogError::TooLarge(self.batch.len()));
        }
        let next = self.segment + 1;
        match self.dir.create(&segment_name(next), self.segment_bytes) {
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
    use crate::io::{CrashMode, Fault};

    fn now<T>(future: impl std::future::Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("simulated IO never waits"),
        }
    }

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
