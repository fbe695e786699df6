//! Reading a live log's records from any thread, while the storage core
//! keeps appending: `pread` into a buffer (no map of a file being written),
//! one segment at a time, records in order. Where the filesystem takes
//! O_DIRECT (as the writer does), the reads bypass the page cache too: a
//! buffered read racing a direct write can leave stale pages cached. A subscription that resumes
//! from an old mini-block reads the log through it.
//!
//! The reader trusts nothing past the records it was asked for: the end of
//! the written part of a segment (zeros, or a batch being written) reads as
//! "no record yet", and the caller decides from what it was told is durable
//! whether that is the end or damage.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::log::{parse_segment_name, segment_name};
use crate::record::{self, HEADER_BYTES, RecordError, RecordKind};

/// Bytes read ahead at a time: the first read of a cursor is small (a look
/// at a segment's first records), and each read after doubles, up to the
/// most.
const READ_AHEAD_BYTES_FIRST: usize = 64 << 10;
const READ_AHEAD_BYTES: usize = 1 << 20;
/// O_DIRECT reads start, end and land at multiples of this.
const DIRECT_ALIGN: usize = 4096;
/// `O_DIRECT` on Linux x86-64 and aarch64.
const O_DIRECT: i32 = 0o40000;

/// The segments in the log directory `dir`, in order.
pub fn segments_in(dir: &Path) -> io::Result<Vec<u64>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if let Some(segment) = entry?.file_name().to_str().and_then(parse_segment_name) {
            segments.push(segment);
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// A cursor over one segment's records.
#[derive(Debug)]
pub struct SegmentReader {
    path: PathBuf,
    segment: u64,
    file: File,
    /// File offset of the record at the cursor.
    offset: u64,
    /// Opened with O_DIRECT.
    direct: bool,
    /// Bytes read from the file, `len` of them at `raw[shift..]`, starting
    /// at file offset `buf_at` (`shift` aligns them for O_DIRECT).
    raw: Vec<u8>,
    shift: usize,
    len: usize,
    buf_at: u64,
    read_ahead: usize,
}

impl SegmentReader {
    /// A cursor at the start of segment `segment` of the log in `dir`.
    pub fn open(dir: &Path, segment: u64) -> io::Result<Self> {
        let path = dir.join(segment_name(segment));
        let (file, direct) = match OpenOptions::new()
            .read(true)
            .custom_flags(O_DIRECT)
            .open(&path)
        {
            Ok(file) => (file, true),
            Err(e) if e.raw_os_error() == Some(22) => (File::open(&path)?, false),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            segment,
            file,
            offset: 0,
            direct,
            raw: Vec::new(),
            shift: 0,
            len: 0,
            buf_at: 0,
            read_ahead: READ_AHEAD_BYTES_FIRST,
        })
    }

    /// The segment it reads.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// The file offset of the record at the cursor.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The record at the cursor, without moving past it; `None` where no
    /// whole record is written (yet): zeros, the end of the file, or bytes
    /// that do not decode.
    pub fn peek(&mut self) -> io::Result<Option<(RecordKind, &[u8])>> {
        let mut want = HEADER_BYTES;
        // Bytes read before may end where the writer had not written yet:
        // what does not read as a record is read again from the file once.
        let mut fresh = false;
        loop {
            if !self.fill(want, !fresh)? {
                if fresh {
                    return Ok(None);
                }
                fresh = true;
                continue;
            }
            let start = (self.offset - self.buf_at) as usize;
            let bytes = &self.bytes()[start..];
            let whole = match record::decode(bytes) {
                _ if record::is_end(bytes) => false,
                Ok(_) => true,
                Err(RecordError::Truncated { need, .. }) if need > want => {
                    want = need;
                    continue;
                }
                Err(_) => false,
            };
            if whole {
                break;
            }
            if fresh {
                return Ok(None);
            }
            fresh = true;
        }
        let start = (self.offset - self.buf_at) as usize;
        let path = &self.path;
        let record = record::decode(&self.raw[self.shift + start..self.shift + self.len])
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        Ok(Some((record.kind, record.payload)))
    }

    /// The bytes read, from `buf_at` on.
    fn bytes(&self) -> &[u8] {
        &self.raw[self.shift..self.shift + self.len]
    }

    /// Moves the cursor to file offset `offset` (where a record starts).
    pub fn seek(&mut self, offset: u64) {
        self.offset = offset;
        self.len = 0;
    }

    /// Moves past the record [`Self::peek`] returned.
    pub fn advance(&mut self) {
        let start = (self.offset - self.buf_at) as usize;
        if let Ok(record) = record::decode(&self.bytes()[start..]) {
            self.offset += record.encoded_len() as u64;
        }
    }

    /// Makes the buffer hold `want` bytes from the cursor, reading ahead
    /// (reading again when not `cached`); false when the file ends first.
    fn fill(&mut self, want: usize, cached: bool) -> io::Result<bool> {
        let end = self.buf_at + self.len as u64;
        if cached && self.offset >= self.buf_at && end.saturating_sub(self.offset) >= want as u64 {
            return Ok(true);
        }
        let len = want.max(self.read_ahead);
        self.read_ahead = (self.read_ahead * 2).min(READ_AHEAD_BYTES);
        // O_DIRECT: from the aligned offset at or before the cursor, whole
        // aligned blocks, into an aligned place.
        let align = if self.direct { DIRECT_ALIGN as u64 } else { 1 };
        let at = self.offset / align * align;
        let lead = (self.offset - at) as usize;
        let span = (lead + len).div_ceil(align as usize) * align as usize;
        self.raw.clear();
        self.raw.resize(span + DIRECT_ALIGN, 0);
        let shift = if self.direct {
            self.raw.as_ptr().align_offset(DIRECT_ALIGN)
        } else {
            0
        };
        let mut read = 0;
        while read < span {
            let into = &mut self.raw[shift + read..shift + span];
            match self.file.read_at(into, at + read as u64) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            // A short O_DIRECT read ends at the end of the file.
            if self.direct && read % DIRECT_ALIGN != 0 {
                break;
            }
        }
        self.shift = shift;
        self.len = read;
        self.buf_at = at;
        Ok(read >= lead + want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_in_order_and_a_partial_one_reads_as_none() {
        let dir = std::env::temp_dir().join(format!("fulmen-reader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = Vec::new();
        let big = vec![7u8; READ_AHEAD_BYTES + 100];
        record::encode(RecordKind::MiniBlock, b"one", &mut bytes).unwrap();
        record::encode(RecordKind::BlockSeal, &big, &mut bytes).unwrap();
        record::encode(RecordKind::MiniBlock, b"three", &mut bytes).unwrap();
        let whole = bytes.len();
        record::encode(RecordKind::MiniBlock, b"torn", &mut bytes).unwrap();
        bytes.truncate(whole + HEADER_BYTES + 2);
        bytes.resize(whole + 8192, 0);
        std::fs::write(dir.join(segment_name(4)), &bytes).unwrap();
        std::fs::write(dir.join("SALT"), b"x").unwrap();
        assert_eq!(segments_in(&dir).unwrap(), vec![4]);

        let mut reader = SegmentReader::open(&dir, 4).unwrap();
        let mut seen = Vec::new();
        while let Some((kind, payload)) = reader.peek().unwrap() {
            seen.push((kind, payload.len()));
            reader.advance();
        }
        assert_eq!(
            seen,
            vec![
                (RecordKind::MiniBlock, 3),
                (RecordKind::BlockSeal, big.len()),
                (RecordKind::MiniBlock, 5)
            ]
        );
        assert_eq!(reader.offset(), whole as u64);
        assert!(reader.peek().unwrap().is_none());
        // What the writer adds later is read, though zeros were read ahead.
        let mut more = bytes[..whole].to_vec();
        record::encode(RecordKind::DaProgress, b"later", &mut more).unwrap();
        more.resize(whole + 8192, 0);
        std::fs::write(dir.join(segment_name(4)), &more).unwrap();
        let (kind, payload) = reader.peek().unwrap().expect("the record written since");
        assert_eq!((kind, payload), (RecordKind::DaProgress, &b"later"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
