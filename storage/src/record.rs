//! The log's record framing (format version 3; version 2 is still read).
//!
//! Every record is a 16-byte header followed by its payload. All integers are
//! little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `0x4E4D4C46` (the bytes `F L M N`) |
//! | 4 | 1 | kind (see [`RecordKind`]) |
//! | 5 | 1 | format version, 3 (2 in older logs) |
//! | 6 | 2 | reserved, 0 |
//! | 8 | 4 | payload length in bytes (at most [`PAYLOAD_BYTES_MAX`]) |
//! | 12 | 4 | CRC-32C over bytes 4..12 of the header, then the payload |
//! | 16 | len | payload |
//!
//! A zero magic where a header should start marks the end of the written
//! log (segments are preallocated with zeros). The checksum covers the kind,
//! version and length, so a torn or corrupt length is caught before the
//! payload is trusted.
//!
//! Batch ends. Every batch (one write and one flush) ends with a padding
//! record whose payload starts with the log's salt: 16 random bytes chosen
//! when the log is created and kept in the log directory's `SALT` file (see
//! [`crate::log`]). Boot tells a torn last batch from damage to a durable one
//! by looking for a batch end after a bad record; record payloads hold user
//! bytes (calldata), which can carry whole CRC-valid frames, but not the
//! salt, so a user cannot forge a batch end.
//! - Version 3: the salt is followed by the batch end's own end offset in
//!   its segment (8 bytes), and the next batch starts right after it, in the
//!   same device block: a flush rewrites the log's last, partly filled block
//!   with the same bytes it held plus the new records (see [`crate::log`]).
//!   A batch end that does not end where it says was moved: the segment's
//!   bytes are shifted.
//! - Version 2 padded every batch with zeros after the salt up to the
//!   alignment, so a batch end ended at a multiple of
//!   [`BATCH_ALIGN_BYTES_MIN`]. A log holding version 2 batches is read as
//!   it is and continued with version 3 ones.
//!
//! Version 1 (before the salt) padded with zeros only. This build does not
//! read a version 1 log: boot stops with an error naming the format, and the
//! datadir has to be started afresh (or read with the build that wrote it).

/// `F L M N` as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"FLMN");
/// Format version written by this code.
pub const FORMAT_VERSION: u8 = 3;
/// The oldest format version this code reads (its batch ends are aligned
/// padding; see the module's documentation).
pub const FORMAT_VERSION_OLDEST: u8 = 2;
/// Header size in bytes.
pub const HEADER_BYTES: usize = 16;
/// Largest payload a record may carry (a mini-block of ~4096 txs with their
/// receipts and state diff fits with room to spare).
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Bytes of the log's salt, the start of every padding record's payload.
pub const SALT_BYTES: usize = 16;
/// The smallest padding record: a header and the salt.
pub const PADDING_BYTES_MIN: usize = HEADER_BYTES + SALT_BYTES;
/// A batch end as this version writes it: a header, the salt and its end
/// offset.
pub const BATCH_END_BYTES: usize = PADDING_BYTES_MIN + 8;
/// Every write starts and ends at a multiple of this (the log's alignment
/// is a multiple of it: 512 on the simulated disk, 4096 under O_DIRECT);
/// version 2 batches ended at one.
pub const BATCH_ALIGN_BYTES_MIN: u64 = 512;

/// The log's salt.
pub type Salt = [u8; SALT_BYTES];

const _: () = assert!(HEADER_BYTES == 4 + 1 + 1 + 2 + 4 + 4);
const _: () = assert!(BATCH_END_BYTES as u64 <= BATCH_ALIGN_BYTES_MIN);
const _: () = assert!(PAYLOAD_BYTES_MAX < u32::MAX as usize);

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// Transactions with senders, receipts and the state diff of one mini-block.
    MiniBlock = 1,
    /// The header of a sealed block.
    BlockSeal = 2,
    /// Data-availability progress (batches posted, L1 inclusion): the DA
    /// batcher's (`da/`) bytes; replay hands them back to it.
    DaProgress = 3,
    /// A checkpoint of the block sealed just before is about to be written
    /// (its payload: `fulmen_chain::persist::CheckpointMarker`, with the DA
    /// records so far), so that boot from it need not read older segments.
    CheckpointMarker = 4,
    /// A batch end (salted; see the module's documentation), or filler
    /// after one in version 2 logs; replay skips it.
    Padding = 5,
}

impl RecordKind {
    /// The kind for a header byte.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::MiniBlock),
            2 => Some(Self::BlockSeal),
            3 => Some(Self::DaProgress),
            4 => Some(Self::CheckpointMarker),
            5 => Some(Self::Padding),
            _ => None,
        }
    }
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the header or the payload needs.
    #[error("truncated record: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The header does not start with the magic.
    #[error("bad magic {found:#010x}")]
    BadMagic {
        /// What was there.
        found: u32,
    },
    /// Written by a newer (or unknown) format.
    #[error("unsupported record format version {0}")]
    Version(u8),
    /// Unknown kind byte.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// A payload above the limit was given to [`encode`].
    #[error("record payload of {0} bytes exceeds the limit of {PAYLOAD_BYTES_MAX} bytes")]
    TooLarge(usize),
    /// A header read back declares a length no record can have: the header
    /// is damaged, or the bytes read are not the start of a record (a
    /// shifted or misaligned segment). Not a record that was too large:
    /// [`encode`] never writes one.
    #[error(
        "a record header declaring {declared} payload bytes, over the format's limit of {PAYLOAD_BYTES_MAX}: a damaged header, or bytes that do not start a record"
    )]
    BadLength {
        /// The length in the header.
        declared: usize,
    },
    /// Checksum mismatch.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// In the header.
        stored: u32,
        /// Over the bytes read.
        computed: u32,
    },
}

/// One decoded record, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Kind.
    pub kind: RecordKind,
    /// Payload bytes.
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// Bytes the record occupies in the log.
    pub fn encoded_len(&self) -> usize {
        HEADER_BYTES + self.payload.len()
    }
}

fn checksum(meta: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(meta), payload)
}

/// Appends the framed record to `out`.
pub fn encode(kind: RecordKind, payload: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
    if payload.len() > PAYLOAD_BYTES_MAX {
        return Err(RecordError::TooLarge(payload.len()));
    }
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.push(kind as u8);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = checksum(&out[start + 4..start + 12], payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    // Checked twice: what was framed must decode to what was given.
    debug_assert_eq!(
        decode(&out[start..]).map(|r| (r.kind, r.payload.len())),
        Ok((kind, payload.len()))
    );
    Ok(())
}

/// Ends the batch in `out` with a batch end: a padding record carrying
/// `salt` and `end`, the offset in its segment where the batch end itself
/// ends (the caller knows where `out` starts).
pub fn encode_batch_end(salt: &Salt, end: u64, out: &mut Vec<u8>) {
    let mut payload = [0u8; BATCH_END_BYTES - HEADER_BYTES];
    payload[..SALT_BYTES].copy_from_slice(salt);
    payload[SALT_BYTES..].copy_from_slice(&end.to_le_bytes());
    encode(RecordKind::Padding, &payload, out).expect("a batch end is small");
}

/// Ends the batch in `out` (which starts at an aligned offset) the way
/// format version 2 did: one padding record carrying `salt`, then zeros, so
/// that `out.len()` becomes a multiple of `alignment`. Kept to test that
/// such logs still read.
pub fn encode_padding(salt: &Salt, alignment: usize, out: &mut Vec<u8>) {
    assert!(alignment.is_power_of_two());
    assert!(alignment as u64 >= BATCH_ALIGN_BYTES_MIN);
    let mut gap = alignment - out.len() % alignment;
    if gap < PADDING_BYTES_MIN {
        gap += alignment;
    }
    let mut payload = vec![0u8; gap - HEADER_BYTES];
    payload[..SALT_BYTES].copy_from_slice(salt);
    encode(RecordKind::Padding, &payload, out).expect("padding is small");
    assert!(out.len().is_multiple_of(alignment));
}

/// The end offset a salted padding record says it has: `Some(end)` for a
/// version 3 batch end, `None` for a version 2 one (zeros after the salt).
fn stated_end(record: &Record<'_>) -> Option<u64> {
    let stamp = record.payload.get(SALT_BYTES..SALT_BYTES + 8)?;
    let end = u64::from_le_bytes(stamp.try_into().expect("8 bytes"));
    (end != 0).then_some(end)
}

/// True when `record`, ending at offset `end` of its segment, is a batch end
/// of the log salted with `salt`: it ends where it says (version 3), or at
/// a multiple of [`BATCH_ALIGN_BYTES_MIN`] (version 2).
pub fn is_batch_end(record: &Record<'_>, end: u64, salt: &Salt) -> bool {
    record.kind == RecordKind::Padding
        && record.payload.starts_with(salt)
        && match stated_end(record) {
            Some(stated) => stated == end,
            None => end.is_multiple_of(BATCH_ALIGN_BYTES_MIN),
        }
}

/// True when `bytes` starts where nothing was written yet (zero magic).
pub fn is_end(bytes: &[u8]) -> bool {
    bytes.len() < 4 || bytes[..4] == [0, 0, 0, 0]
}

/// Decodes the record at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Record<'_>, RecordError> {
    if bytes.len() < HEADER_BYTES {
        return Err(RecordError::Truncated {
            need: HEADER_BYTES,
            have: bytes.len(),
        });
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if magic != MAGIC {
        return Err(RecordError::BadMagic { found: magic });
    }
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    if len > PAYLOAD_BYTES_MAX {
        return Err(RecordError::BadLength { declared: len });
    }
    let need = HEADER_BYTES + len;
    if bytes.len() < need {
        return Err(RecordError::Truncated {
            need,
            have: bytes.len(),
        });
    }
    let stored = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER_BYTES..need];
    let computed = checksum(&bytes[4..12], payload);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    // Only trusted once the checksum matched.
    if !(FORMAT_VERSION_OLDEST..=FORMAT_VERSION).contains(&bytes[5]) {
        return Err(RecordError::Version(bytes[5]));
    }
    let kind = RecordKind::from_byte(bytes[4]).ok_or(RecordError::UnknownKind(bytes[4]))?;
    Ok(Record { kind, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [RecordKind; 5] = [
        RecordKind::MiniBlock,
        RecordKind::BlockSeal,
        RecordKind::DaProgress,
        RecordKind::CheckpointMarker,
        RecordKind::Padding,
    ];

    #[test]
    fn every_kind_round_trips() {
        for (i, kind) in KINDS.into_iter().enumerate() {
            for len in [0usize, 1, 15, 16, 17, 4096, 70_000] {
                let payload: Vec<u8> = (0..len).map(|b| (b * 31 + i) as u8).collect();
                let mut out = Vec::new();
                encode(kind, &payload, &mut out).unwrap();
                assert_eq!(out.len(), HEADER_BYTES + len);
                let record = decode(&out).unwrap();
                assert_eq!(record.kind, kind);
                assert_eq!(record.payload, payload.as_slice());
                assert_eq!(record.encoded_len(), out.len());
                assert!(!is_end(&out));
            }
        }
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_an_error() {
        let mut out = Vec::new();
        encode(RecordKind::BlockSeal, b"sealed header bytes", &mut out).unwrap();
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode(&bad).is_err(),
                    "flip at byte {byte} bit {bit} went unnoticed"
                );
            }
        }
        for len in 0..out.len() {
            assert!(
                matches!(decode(&out[..len]), Err(RecordError::Truncated { .. })),
                "cut at {len}"
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0xdead_beef_cafe_f00du64;
        for _ in 0..50_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
            if len >= 4 && seed.is_multiple_of(3) {
                bytes[..4].copy_from_slice(&MAGIC.to_le_bytes());
            }
            let _ = decode(&bytes);
        }
        assert!(is_end(&[0, 0, 0, 0, 9]));
        assert!(matches!(
            decode(&[0u8; 32]),
            Err(RecordError::BadMagic { found: 0 })
        ));
    }

    #[test]
    fn oversized_payloads_are_refused_both_ways() {
        let mut header = Vec::new();
        header.extend_from_slice(&MAGIC.to_le_bytes());
        header.extend_from_slice(&[1, FORMAT_VERSION, 0, 0]);
        header.extend_from_slice(&(PAYLOAD_BYTES_MAX as u32 + 1).to_le_bytes());
        header.extend_from_slice(&[0; 4]);
        // Read back, such a length is a damaged header or bytes that are
        // not a record, never "a record too large".
        let error = decode(&header).unwrap_err();
        assert_eq!(
            error,
            RecordError::BadLength {
                declared: PAYLOAD_BYTES_MAX + 1
            }
        );
        assert!(!error.to_string().contains("record payload"), "{error}");
        assert!(error.to_string().contains("damaged header"), "{error}");
        let mut out = Vec::new();
        assert_eq!(
            encode(
                RecordKind::MiniBlock,
                &vec![0; PAYLOAD_BYTES_MAX + 1],
                &mut out
            ),
            Err(RecordError::TooLarge(PAYLOAD_BYTES_MAX + 1))
        );
        assert!(out.is_empty());
    }
}
