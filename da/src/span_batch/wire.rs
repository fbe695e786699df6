//! The span batch's primitive encodings: protobuf uvarints and "standard
//! bitlists" (a big-endian integer whose bit `i` is element `i`, left-padded
//! with zero bits to whole bytes), and a reader that never reads or allocates
//! past the bytes it has.

use super::error::SpanBatchError;

/// The longest uvarint of a u64, in bytes.
pub(super) const UVARINT_BYTES_MAX: usize = 10;

/// Bytes a bitlist of `bits` elements takes.
pub(super) const fn bitlist_bytes(bits: usize) -> usize {
    bits.div_ceil(8)
}

/// Appends `value` as a protobuf uvarint (7 bits a byte, low groups first).
pub(super) fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A bitlist being built, element by element.
#[derive(Debug, Default)]
pub(super) struct BitsWriter {
    /// Little-endian bytes: element `i` is bit `i % 8` of byte `i / 8`.
    le: Vec<u8>,
    len: usize,
}

impl BitsWriter {
    /// An empty bitlist with room for `bits` elements.
    pub(super) fn with_capacity(bits: usize) -> Self {
        Self {
            le: Vec::with_capacity(bitlist_bytes(bits)),
            len: 0,
        }
    }

    /// Appends one element.
    pub(super) fn push(&mut self, bit: bool) {
        if self.len.is_multiple_of(8) {
            self.le.push(0);
        }
        if bit {
            let last = self.le.len() - 1;
            self.le[last] |= 1 << (self.len % 8);
        }
        self.len += 1;
    }

    /// Elements so far.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Appends the bitlist as OP encodes it: the big-endian integer, so the
    /// byte holding elements 0..8 comes last.
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        assert_eq!(self.le.len(), bitlist_bytes(self.len));
        out.extend(self.le.iter().rev());
    }
}

/// A decoded bitlist: a view of its bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bits<'a> {
    be: &'a [u8],
    len: usize,
}

impl Bits<'_> {
    /// Element `i`; `i` must be below the list's length.
    pub(super) fn get(&self, i: usize) -> bool {
        assert!(i < self.len, "bit {i} of a {}-bit list", self.len);
        let byte = self.be[self.be.len() - 1 - i / 8];
        (byte >> (i % 8)) & 1 == 1
    }

    /// Elements set to one.
    pub(super) fn count_ones(&self) -> usize {
        self.be.iter().map(|b| b.count_ones() as usize).sum()
    }
}

/// Reads a span batch front to back, naming the field and offset of every
/// failure.
#[derive(Debug)]
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub(super) fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The bytes not read yet, without consuming them.
    pub(super) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// An error for `field`, starting here, that needs `needed` bytes.
    pub(super) fn truncated(&self, field: &'static str, needed: usize) -> SpanBatchError {
        SpanBatchError::Truncated {
            field,
            offset: self.pos,
            needed,
            left: self.left(),
        }
    }

    /// Takes the next `n` bytes.
    pub(super) fn take(
        &mut self,
        n: usize,
        field: &'static str,
    ) -> Result<&'a [u8], SpanBatchError> {
        if n > self.left() {
            return Err(self.truncated(field, n));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Takes the next `N` bytes as an array.
    pub(super) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], SpanBatchError> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Reads a uvarint in its shortest form.
    pub(super) fn uvarint(&mut self, field: &'static str) -> Result<u64, SpanBatchError> {
        let offset = self.pos;
        let mut value = 0u64;
        for i in 0..UVARINT_BYTES_MAX {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(SpanBatchError::Truncated {
                    field,
                    offset,
                    needed: i + 1,
                    left: i,
                });
            };
            self.pos += 1;
            // The tenth byte holds bit 63 only.
            if i == UVARINT_BYTES_MAX - 1 && byte > 1 {
                return Err(SpanBatchError::VarintOverflow { field, offset });
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if byte == 0 && i > 0 {
                    return Err(SpanBatchError::VarintNotMinimal { field, offset });
                }
                return Ok(value);
            }
        }
        Err(SpanBatchError::VarintOverflow { field, offset })
    }

    /// Reads a bitlist of `len` elements; its padding bits must be zero.
    pub(super) fn bits(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<Bits<'a>, SpanBatchError> {
        let offset = self.pos;
        let be = self.take(bitlist_bytes(len), field)?;
        let pad = (8 - len % 8) % 8;
        if let Some(&first) = be.first()
            && pad > 0
            && first >> (8 - pad) != 0
        {
            return Err(SpanBatchError::BitsPastEnd {
                field,
                offset,
                bits: len,
            });
        }
        Ok(Bits { be, len })
    }
}
