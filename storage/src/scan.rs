//! Reading a log segment back at boot: every record in order, the end of the
//! written log, and the difference between a torn tail (repairable) and
//! corruption before the tail (fatal, never skipped).

use crate::record::{self, HEADER_BYTES, MAGIC, Record, RecordError, RecordKind};

/// How a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Records run up to `end`; only zeros (unwritten space) follow.
    Clean {
        /// Offset just past the last record.
        end: u64,
    },
    /// The last record was torn by a crash: it and everything after it is
    /// not a valid record. The log is to be truncated at `at`.
    TornTail {
        /// Offset of the torn record (the new end of the log).
        at: u64,
        /// What was wrong with it.
        error: RecordError,
    },
}

/// A bad record followed by valid ones: the log is corrupt before its tail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "corrupt record at offset {offset}: {error}; a valid record follows at offset {next_valid}, so this is not a torn tail"
)]
pub struct Corruption {
    /// Offset of the bad record.
    pub offset: u64,
    /// What was wrong with it.
    pub error: RecordError,
    /// Where a valid record was found after it.
    pub next_valid: u64,
}

/// Walks the records of one segment's bytes, calling `visit` with each
/// record's offset, and reports how the segment ends.
///
/// This relies on the writer's discipline: one write per group commit, no
/// new write before the previous flush completed, and every batch ending
/// with a padding record. So only the last batch can be torn, and a disk
/// may have persisted its sectors in any order: a bad record followed by
/// valid ones of the same batch is still a torn tail. A bad record is
/// corruption when a batch end after it is followed by another batch, since
/// that later batch was only written once the bad record's batch was
/// durable.
pub fn scan<'a>(
    bytes: &'a [u8],
    mut visit: impl FnMut(u64, Record<'a>),
) -> Result<SegmentEnd, Corruption> {
    let mut at = 0usize;
    loop {
        if record::is_end(&bytes[at..]) && bytes[at..].iter().all(|b| *b == 0) {
            return Ok(SegmentEnd::Clean { end: at as u64 });
        }
        match record::decode(&bytes[at..]) {
            Ok(record) => {
                visit(at as u64, record);
                at += record.encoded_len();
            }
            Err(error) => {
                return match later_batch(bytes, at + 1) {
                    Some(next_valid) => Err(Corruption {
                        offset: at as u64,
                        error,
                        next_valid,
                    }),
                    None => Ok(SegmentEnd::TornTail {
                        at: at as u64,
                        error,
                    }),
                };
            }
        }
    }
}

/// Where a valid record starts after a batch end (a valid padding record)
/// found at or after `from`: proof that the batch holding `from` was
/// durable before more was written.
fn later_batch(bytes: &[u8], from: usize) -> Option<u64> {
    let mut at = from;
    while let Some(start) = next_valid_record(bytes, at) {
        let start = start as usize;
        let record = record::decode(&bytes[start..]).expect("just validated");
        let end = start + record.encoded_len();
        if record.kind == RecordKind::Padding {
            // Nothing valid after this batch end means nothing valid after
            // any later one either: one search settles it.
            return next_valid_record(bytes, end);
        }
        at = end;
    }
    None
}

/// The first offset at or after `from` where a whole, valid record starts.
fn next_valid_record(bytes: &[u8], from: usize) -> Option<u64> {
    let magic = MAGIC.to_le_bytes();
    let mut at = from;
    while at + HEADER_BYTES <= bytes.len() {
        let window = &bytes[at..];
        let found = window.windows(4).position(|w| w == magic)?;
        at += found;
        if record::decode(&bytes[at..]).is_ok() {
            return Some(at as u64);
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{RecordKind, encode};

    fn log(payloads: &[&[u8]], zeros: usize) -> (Vec<u8>, Vec<u64>) {
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for payload in payloads {
            offsets.push(bytes.len() as u64);
            encode(RecordKind::MiniBlock, payload, &mut bytes).unwrap();
        }
        bytes.extend(std::iter::repeat_n(0u8, zeros));
        (bytes, offsets)
    }

    #[test]
    fn a_clean_segment_yields_every_record_and_its_end() {
        let (bytes, offsets) = log(&[b"one", b"two", b"three"], 4096);
        let mut seen = Vec::new();
        let end = scan(&bytes, |offset, record| {
            seen.push((offset, record.payload.to_vec()))
        })
        .unwrap();
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), offsets);
        assert_eq!(seen[2].1, b"three");
        assert_eq!(
            end,
            SegmentEnd::Clean {
                end: (bytes.len() - 4096) as u64
            }
        );
        assert_eq!(
            scan(&[0u8; 64], |_, _| panic!("no records")).unwrap(),
            SegmentEnd::Clean { end: 0 }
        );
    }

    #[test]
    fn a_torn_last_record_is_a_torn_tail_at_every_cut() {
        let (full, offsets) = log(
            &[b"first record", b"second record", b"the last one, torn"],
            0,
        );
        let last = offsets[2] as usize;
        for cut in last + 1..full.len() {
            // The write stopped at `cut`; the preallocated rest is zeros.
            let mut bytes = full[..cut].to_vec();
            bytes.extend(std::iter::repeat_n(0u8, 512));
            let mut count = 0;
            let end = scan(&bytes, |_, _| count += 1).unwrap();
            assert_eq!(count, 2, "cut at {cut}");
            assert!(
                matches!(end, SegmentEnd::TornTail { at, .. } if at == last as u64),
                "cut at {cut}: {end:?}"
            );
        }
        // Garbage rather than zeros after the tear is still a torn tail.
        let mut bytes = full[..last + 5].to_vec();
        bytes.extend((0..300u32).map(|i| (i * 7 + 3) as u8));
        assert!(matches!(
            scan(&bytes, |_, _| {}),
            Ok(SegmentEnd::TornTail { .. })
        ));
    }

    /// Two batches, each ending with a padding record, as the writer lays
    /// them out: offsets of every record.
    fn two_batches() -> (Vec<u8>, Vec<u64>) {
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for batch in [
            &[&b"first record"[..], b"second record"],
            &[b"third record", b"fourth record"],
        ] {
            for payload in batch {
                offsets.push(bytes.len() as u64);
                encode(RecordKind::MiniBlock, payload, &mut bytes).unwrap();
            }
            offsets.push(bytes.len() as u64);
            encode(RecordKind::Padding, &[0u8; 20], &mut bytes).unwrap();
        }
        bytes.extend(std::iter::repeat_n(0u8, 256));
        (bytes, offsets)
    }

    #[test]
    fn corruption_before_the_tail_stops_with_its_offset() {
        // Damage in the first batch, which a later batch follows: corruption.
        let (mut bytes, offsets) = two_batches();
        bytes[offsets[1] as usize + HEADER_BYTES + 2] ^= 0x40;
        let mut count = 0;
        let error = scan(&bytes, |_, _| count += 1).unwrap_err();
        assert_eq!(count, 1, "records before the corruption were read");
        assert_eq!(error.offset, offsets[1]);
        assert_eq!(
            error.next_valid, offsets[3],
            "the later batch's first record"
        );
        assert!(matches!(error.error, RecordError::Checksum { .. }));
        assert!(
            error
                .to_string()
                .contains(&format!("offset {}", offsets[1]))
        );
    }

    #[test]
    fn a_last_batch_torn_out_of_order_is_a_torn_tail() {
        // The last batch lost its first sector but kept the rest: valid
        // records follow the bad one, but no later batch does.
        let (mut bytes, offsets) = two_batches();
        bytes[offsets[3] as usize + 1] ^= 0x40;
        let mut count = 0;
        let end = scan(&bytes, |_, _| count += 1).unwrap();
        assert_eq!(count, 3, "the first batch and its padding");
        assert!(
            matches!(end, SegmentEnd::TornTail { at, .. } if at == offsets[3]),
            "{end:?}"
        );
    }
}

#[cfg(test)]
mod crash_tests {
    use super::*;
    use crate::io::{CrashMode, LogFile, SimDisk, ready as now};
    use crate::record::{RecordKind, encode};

    /// Appends records in group commits (one write and one sync per batch,
    /// as the log writer does), crashes after every operation count in turn
    /// (torn and lost variants), and checks what a boot scan finds: a prefix
    /// of what was written, holding every record whose sync completed, ending
    /// clean or in a torn tail.
    #[test]
    fn after_any_crash_the_scan_finds_every_synced_record_and_nothing_invented() {
        let payloads: Vec<Vec<u8>> = (0..40u32)
            .map(|i| vec![i as u8; 100 + (i as usize * 37) % 900])
            .collect();
        for crash_after in 0..40u64 {
            for mode in [CrashMode::TearUnflushed, CrashMode::LoseUnflushed] {
                for seed in 0..8 {
                    let disk = SimDisk::new(seed * 1000 + crash_after, 1 << 20);
                    let mut file = disk.create("segment-0", 64 * 1024).unwrap();
                    let mut offset = 0u64;
                    let mut synced = 0usize;
                    let mut written = 0usize;
                    // Batches of 1, 2 and 3 records.
                    for batch_len in [1usize, 2, 3].iter().cycle() {
                        if written == payloads.len() || disk.ops() >= crash_after {
                            break;
                        }
                        let end = (written + batch_len).min(payloads.len());
                        let mut bytes = Vec::new();
                        for payload in &payloads[written..end] {
                            encode(RecordKind::MiniBlock, payload, &mut bytes).unwrap();
                        }
                        now(file.write_at(offset, &bytes)).unwrap();
                        offset += bytes.len() as u64;
                        written = end;
                        if disk.ops() < crash_after {
                            now(file.sync()).unwrap();
                            synced = written;
                        }
                    }
                    let after = disk.crash(mode).open("segment-0").unwrap();
                    let bytes = after.read_at(0, after.size() as usize).unwrap();
                    let mut found = Vec::new();
                    let end = scan(&bytes, |_, record| found.push(record.payload.to_vec()))
                        .unwrap_or_else(|e| panic!("crash after op {crash_after}, {mode:?}: {e}"));
                    assert!(
                        found.len() >= synced,
                        "lost a synced record (crash after op {crash_after}, {mode:?})"
                    );
                    assert_eq!(
                        found[..],
                        payloads[..found.len()],
                        "scan invented or reordered records"
                    );
                    if mode == CrashMode::LoseUnflushed {
                        assert_eq!(found.len(), synced);
                        assert!(matches!(end, SegmentEnd::Clean { .. }));
                    }
                }
            }
        }
    }
}
