//! Reading a log segment back at boot: every record in order, the end of the
//! written log, and the difference between a torn tail (repairable) and
//! corruption before the tail (fatal, never skipped).

use crate::record::{
    self, BATCH_ALIGN_BYTES_MIN, HEADER_BYTES, MAGIC, Record, RecordError, RecordKind, SALT_BYTES,
    Salt,
};

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

/// Damage a crash cannot explain: the segment is not to be repaired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// A bad record in a batch that was durable before a later one was
    /// written.
    #[error(
        "corrupt record at offset {offset}: {error}; a batch end follows and a later batch was written after it (non-zero bytes at offset {later_write}), so this is not a torn tail"
    )]
    BeforeTail {
        /// Offset of the bad record.
        offset: u64,
        /// What was wrong with it.
        error: RecordError,
        /// Where the later write was found.
        later_write: u64,
    },
    /// A batch end of this log (padding with its salt) that does not end
    /// where it was written to end: the segment's bytes were shifted (cut
    /// or inserted before it), which no crash does.
    #[error(
        "the batch end at offset {offset} carries this log's salt but ends at offset {end}, not where it was written to end (nor, as in format version 2, at a multiple of {BATCH_ALIGN_BYTES_MIN}): the segment's bytes are shifted (bytes were cut out of it or inserted before this point), so this is not a torn tail; restore the segment from a copy"
    )]
    Misaligned {
        /// Offset of the padding record.
        offset: u64,
        /// Where it ends.
        end: u64,
    },
    /// A record with a valid checksum that this build does not take: another
    /// format version, an unknown kind, or padding with another log's salt.
    #[error("record at offset {offset} was not written by this log's format: {detail}")]
    Foreign {
        /// Offset of the record.
        offset: u64,
        /// What is wrong with it.
        detail: String,
    },
}

impl Corruption {
    /// Offset of the bad record.
    pub fn offset(&self) -> u64 {
        match self {
            Self::BeforeTail { offset, .. }
            | Self::Misaligned { offset, .. }
            | Self::Foreign { offset, .. } => *offset,
        }
    }
}

/// Walks the records of one segment's bytes, calling `visit` with each
/// record's offset, and reports how the segment ends. `salt` is the log's
/// salt (see [`crate::record`]).
///
/// This relies on the writer's discipline: one write per batch, no new
/// write before the previous flush completed, every batch ending with a
/// salted padding record, and a repair that zeroes what follows the new end
/// before it writes the new end. So only the last batch can be torn, and a
/// disk may have persisted its sectors in any order: a bad record followed
/// by valid ones of the same batch is still a torn tail. A bad record is
/// corruption when a batch end after it is followed by anything written.
/// Only a padding record carrying the salt counts as a batch end: record
/// payloads hold user bytes, which can carry whole CRC-valid frames.
pub fn scan<'a>(
    bytes: &'a [u8],
    salt: &Salt,
    mut visit: impl FnMut(u64, Record<'a>),
) -> Result<SegmentEnd, Corruption> {
    let mut at = 0usize;
    loop {
        if record::is_end(&bytes[at..]) && bytes[at..].iter().all(|b| *b == 0) {
            return Ok(SegmentEnd::Clean { end: at as u64 });
        }
        match record::decode(&bytes[at..]) {
            Ok(record) => {
                let end = (at + record.encoded_len()) as u64;
                if record.kind == RecordKind::Padding && !record::is_batch_end(&record, end, salt) {
                    if record.payload.starts_with(salt) {
                        return Err(Corruption::Misaligned {
                            offset: at as u64,
                            end,
                        });
                    }
                    return Err(Corruption::Foreign {
                        offset: at as u64,
                        detail: "a padding record without this log's salt (a segment of another log, or a damaged SALT file)".into(),
                    });
                }
                visit(at as u64, record);
                // Records are back to back, each at least a header long.
                assert!(end as usize >= at + HEADER_BYTES);
                assert!(end as usize <= bytes.len());
                at = end as usize;
            }
            // A valid checksum means these bytes were written whole: no tear
            // explains them.
            Err(error @ (RecordError::Version(_) | RecordError::UnknownKind(_))) => {
                return Err(Corruption::Foreign {
                    offset: at as u64,
                    detail: format!(
                        "{error} (this build reads log format versions {} to {})",
                        record::FORMAT_VERSION_OLDEST,
                        record::FORMAT_VERSION
                    ),
                });
            }
            Err(error) => {
                return match later_write(bytes, at + 1, salt) {
                    Some(later_write) => Err(Corruption::BeforeTail {
                        offset: at as u64,
                        error,
                        later_write,
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

/// Where a non-zero byte follows the first batch end found at or after
/// `from`: proof that the batch holding `from` was durable before more was
/// written. Only zeros follow the end of the last batch (segments are
/// zero-filled, and a repair zeroes torn bytes before it writes a new end).
fn later_write(bytes: &[u8], from: usize, salt: &Salt) -> Option<u64> {
    let end = next_batch_end(bytes, from, salt)?;
    bytes[end..]
        .iter()
        .position(|b| *b != 0)
        .map(|p| (end + p) as u64)
}

/// The end of the first salted padding record at or after `from`. The
/// checksum is computed only where the kind and the salt already match, so
/// user bytes full of record headers cannot make this slow.
fn next_batch_end(bytes: &[u8], from: usize, salt: &Salt) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    let mut at = from;
    while at + HEADER_BYTES + SALT_BYTES <= bytes.len() {
        let found = bytes[at..].windows(4).position(|w| w == magic)?;
        at += found;
        let candidate = &bytes[at..];
        if candidate.len() >= HEADER_BYTES + SALT_BYTES
            && candidate[4] == RecordKind::Padding as u8
            && candidate[HEADER_BYTES..HEADER_BYTES + SALT_BYTES] == salt[..]
            && let Ok(record) = record::decode(candidate)
        {
            let end = at + record.encoded_len();
            if record::is_batch_end(&record, end as u64, salt) {
                return Some(end);
            }
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{RecordKind, encode, encode_padding};

    const SALT: Salt = *b"0123456789abcdef";

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
        let end = scan(&bytes, &SALT, |offset, record| {
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
            scan(&[0u8; 64], &SALT, |_, _| panic!("no records")).unwrap(),
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
            let end = scan(&bytes, &SALT, |_, _| count += 1).unwrap();
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
            scan(&bytes, &SALT, |_, _| {}),
            Ok(SegmentEnd::TornTail { .. })
        ));
    }

    /// Two batches, each ending with a salted padding record, as the writer
    /// lays them out: offsets of every record.
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
            encode_padding(&SALT, 512, &mut bytes);
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
        let error = scan(&bytes, &SALT, |_, _| count += 1).unwrap_err();
        assert_eq!(count, 1, "records before the corruption were read");
        assert_eq!(error.offset(), offsets[1]);
        let Corruption::BeforeTail {
            later_write, error, ..
        } = &error
        else {
            panic!("{error}")
        };
        assert_eq!(*later_write, offsets[3], "the later batch's first record");
        assert!(matches!(error, RecordError::Checksum { .. }));
        assert!(error.to_string().contains("checksum"));
    }

    #[test]
    fn a_last_batch_torn_out_of_order_is_a_torn_tail() {
        // The last batch lost its first sector but kept the rest: valid
        // records follow the bad one, but no later batch does.
        let (mut bytes, offsets) = two_batches();
        bytes[offsets[3] as usize + 1] ^= 0x40;
        let mut count = 0;
        let end = scan(&bytes, &SALT, |_, _| count += 1).unwrap();
        assert_eq!(count, 3, "the first batch and its padding");
        assert!(
            matches!(end, SegmentEnd::TornTail { at, .. } if at == offsets[3]),
            "{end:?}"
        );
    }
}

/// Record payloads carry user bytes (calldata). Frames forged in them, valid
/// magic and checksum, a batch end (padding) included, must not turn a torn
/// last batch into "corruption".
#[cfg(test)]
mod forged_frames {
    use super::*;
    use crate::record::{RecordKind, encode, encode_padding};

    const SALT: Salt = *b"a secret salt!!!";

    /// Calldata an attacker controls: forged batch ends (zero salt, as log
    /// format 1 wrote them, and every 512-byte phase) each followed by a
    /// forged valid record.
    fn forged_calldata() -> Vec<u8> {
        let mut forged = Vec::new();
        for i in 0..16 {
            encode(RecordKind::Padding, &vec![0u8; 32 + i], &mut forged).unwrap();
            encode(
                RecordKind::MiniBlock,
                b"after the forged batch end",
                &mut forged,
            )
            .unwrap();
            forged.extend(std::iter::repeat_n(0xab, 37));
        }
        forged
    }

    #[test]
    fn frames_forged_in_a_payload_do_not_make_a_torn_tail_corruption() {
        let calldata = forged_calldata();
        // The forged frames are valid records on their own.
        let mut forged_records = 0;
        let mut at = 0;
        while at + 4 <= calldata.len() {
            if let Ok(r) = record::decode(&calldata[at..]) {
                forged_records += 1;
                at += r.encoded_len();
            } else {
                at += 1;
            }
        }
        assert!(forged_records >= 32, "{forged_records}");

        // A durable first batch, then a last batch holding the calldata,
        // torn: its first record lost its first sector, the rest was kept.
        let mut bytes = Vec::new();
        encode(RecordKind::MiniBlock, b"durable", &mut bytes).unwrap();
        encode_padding(&SALT, 512, &mut bytes);
        let last_batch = bytes.len();
        encode(RecordKind::MiniBlock, b"a mini-block", &mut bytes).unwrap();
        encode(RecordKind::MiniBlock, &calldata, &mut bytes).unwrap();
        encode_padding(&SALT, 512, &mut bytes);
        bytes.extend(std::iter::repeat_n(0u8, 4096));
        bytes[last_batch..last_batch + 512].fill(0);
        let mut count = 0;
        let end = scan(&bytes, &SALT, |_, _| count += 1)
            .unwrap_or_else(|e| panic!("a torn tail was taken for corruption: {e}"));
        assert_eq!(count, 2, "the durable batch and its batch end");
        assert!(
            matches!(end, SegmentEnd::TornTail { at, .. } if at == last_batch as u64),
            "{end:?}"
        );

        // Damage in a durable batch, followed by a later batch, is still
        // corruption.
        let mut damaged = Vec::new();
        let (first, _) = two_records(&mut damaged);
        damaged[first + 20] ^= 1;
        assert!(matches!(
            scan(&damaged, &SALT, |_, _| {}),
            Err(Corruption::BeforeTail { .. })
        ));
    }

    /// Rewrites `bytes` as a durable batch with a record, then a whole later
    /// batch: offsets of the two batches.
    fn two_records(bytes: &mut Vec<u8>) -> (usize, usize) {
        bytes.clear();
        encode(RecordKind::MiniBlock, &forged_calldata(), bytes).unwrap();
        encode_padding(&SALT, 512, bytes);
        let second = bytes.len();
        encode(RecordKind::MiniBlock, b"later", bytes).unwrap();
        encode_padding(&SALT, 512, bytes);
        bytes.extend(std::iter::repeat_n(0u8, 1024));
        (0, second)
    }

    /// A segment with bytes cut out before a batch end (its records still
    /// whole, so the scan reaches the batch end off its boundary) is named
    /// as shifted, not as "another log's" padding nor as "record too large".
    #[test]
    fn a_shifted_segment_is_named_misaligned() {
        let mut bytes = Vec::new();
        encode(RecordKind::MiniBlock, b"cut out", &mut bytes).unwrap();
        let cut = bytes.len();
        encode(RecordKind::MiniBlock, b"kept record", &mut bytes).unwrap();
        encode_padding(&SALT, 512, &mut bytes);
        bytes.extend(std::iter::repeat_n(0u8, 512));
        let shifted = &bytes[cut..];
        let error = scan(shifted, &SALT, |_, _| {}).unwrap_err();
        let padding = (HEADER_BYTES + b"kept record".len()) as u64;
        assert_eq!(
            error,
            Corruption::Misaligned {
                offset: padding,
                end: (512 - cut) as u64
            }
        );
        let message = error.to_string();
        assert!(message.contains("shifted"), "{message}");
        assert!(
            !message.contains("salt (a segment of another log"),
            "{message}"
        );
        assert!(!message.contains("too large"), "{message}");
    }

    /// The same with version 3 batch ends, which state their end: bytes
    /// inserted before one (or cut out) make it end elsewhere.
    #[test]
    fn a_shifted_batch_end_that_states_its_end_is_named_misaligned() {
        let mut bytes = Vec::new();
        encode(RecordKind::MiniBlock, b"record", &mut bytes).unwrap();
        let end = bytes.len() + crate::record::BATCH_END_BYTES;
        crate::record::encode_batch_end(&SALT, end as u64, &mut bytes);
        bytes.extend(std::iter::repeat_n(0u8, 512));
        let mut visited = 0;
        assert_eq!(
            scan(&bytes, &SALT, |_, _| visited += 1),
            Ok(SegmentEnd::Clean { end: end as u64 })
        );
        assert_eq!(visited, 2);
        let mut inserted = Vec::new();
        encode(RecordKind::MiniBlock, b"inserted", &mut inserted).unwrap();
        inserted.extend_from_slice(&bytes);
        let error = scan(&inserted, &SALT, |_, _| {}).unwrap_err();
        assert!(matches!(error, Corruption::Misaligned { .. }), "{error}");
    }

    #[test]
    fn a_padding_record_with_another_salt_is_refused() {
        let mut bytes = Vec::new();
        encode(RecordKind::MiniBlock, b"record", &mut bytes).unwrap();
        encode_padding(b"another log salt", 512, &mut bytes);
        bytes.extend(std::iter::repeat_n(0u8, 512));
        assert!(matches!(
            scan(&bytes, &SALT, |_, _| {}),
            Err(Corruption::Foreign { offset, .. }) if offset > 0
        ));
    }
}

#[cfg(test)]
mod crash_tests {
    use super::*;

    const SALT: Salt = [7; 16];
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
                    disk.allow_unaligned_writes();
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
                    let end = scan(&bytes, &SALT, |_, record| {
                        found.push(record.payload.to_vec())
                    })
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
