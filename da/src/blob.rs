//! OP blob encoding version 0: up to 130,044 bytes of data in one EIP-4844
//! blob of 4096 field elements.
//!
//! The data is prefixed by a 4-byte header (version byte 0, then the data
//! length as a 3-byte big-endian integer). The header and data form one
//! stream that is cut into rounds of 127 bytes. Each round fills 4 field
//! elements of 32 bytes: four 31-byte chunks go to bytes 1..32 of the four
//! elements, and the three bytes between the chunks are split into four 6-bit
//! pieces that go to byte 0 of each element. Byte 0 thus never has its top two
//! bits set, which keeps every element below the BLS12-381 scalar modulus.
//! Reference: op-service/eth/blob.go (`FromData`, `ToData`) and the OP
//! derivation spec, "Blob Encoding". See `da/FORMAT.md`.
//!
//! This is not alloy's `SimpleCoder` (which packs 31 bytes per element behind
//! a 64-bit length word): OP's verifiers would reject those blobs.

pub use alloy_eips::eip4844::Blob;
use alloy_eips::eip4844::builder::{PartialSidecar, SidecarCoder};
use alloy_eips::eip4844::utils::WholeFe;

/// Bytes in one blob: 4096 field elements of 32 bytes.
pub const BLOB_BYTES: usize = 131_072;
/// Field elements in one blob.
pub const BLOB_FIELD_ELEMENTS: usize = 4096;
/// Bytes in one field element.
pub const FIELD_ELEMENT_BYTES: usize = 32;
/// Rounds of 4 field elements in one blob.
pub const BLOB_ROUNDS: usize = 1024;
/// Stream bytes (header and data) one round carries: 4 × 31 + 3.
pub const ROUND_STREAM_BYTES: usize = 127;
/// Bytes of the header (version byte and 3-byte length) in front of the data.
pub const BLOB_HEADER_BYTES: usize = 4;
/// Data bytes one blob carries: 1024 rounds of 127 bytes, less the header.
pub const BLOB_DATA_BYTES_MAX: usize = BLOB_ROUNDS * ROUND_STREAM_BYTES - BLOB_HEADER_BYTES;
/// The blob encoding version this module writes and reads (byte 1 of the blob).
pub const BLOB_ENCODING_VERSION: u8 = 0;
/// The most blobs fulmen puts in one L1 transaction: Osaka's per-transaction
/// limit (EIP-7594) and the OP batcher's maximum (Cancun's blobs per block).
/// The caller splits longer lists of blobs across transactions.
pub const BLOBS_PER_TX_MAX: usize = 6;

/// Offset of the version byte in the blob.
const VERSION_OFFSET: usize = 1;
/// Offset of the 3-byte big-endian length in the blob.
const LENGTH_OFFSET: usize = 2;
/// Mask of the two top bits that byte 0 of every field element keeps clear.
const HIGH_BITS_MASK: u8 = 0b1100_0000;
/// Mask of the 6 low bits that byte 0 of a field element carries.
const LOW_SIX_BITS_MASK: u8 = 0b0011_1111;

const _: () = assert!(BLOB_BYTES == BLOB_FIELD_ELEMENTS * FIELD_ELEMENT_BYTES);
const _: () = assert!(BLOB_ROUNDS * 4 == BLOB_FIELD_ELEMENTS);
const _: () = assert!(BLOB_DATA_BYTES_MAX == 130_044);
const _: () = assert!(BLOB_DATA_BYTES_MAX < 1 << 24);
const _: () = assert!(BLOB_BYTES == alloy_eips::eip4844::BYTES_PER_BLOB);

/// What is wrong with data to encode or with a blob to decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// The data does not fit in one blob.
    #[error(
        "blob data is {len_bytes} bytes, over the {BLOB_DATA_BYTES_MAX} bytes one blob carries"
    )]
    DataTooLarge {
        /// Length of the data given.
        len_bytes: usize,
    },
    /// Byte 1 of the blob is not encoding version 0.
    #[error("blob byte 1 (encoding version) is {version}, expected {BLOB_ENCODING_VERSION}")]
    Version {
        /// The version byte found.
        version: u8,
    },
    /// The length in bytes 2..5 is over what a blob carries.
    #[error(
        "blob bytes 2..5 (data length) say {len_bytes} bytes, over the {BLOB_DATA_BYTES_MAX} bytes one blob carries"
    )]
    Length {
        /// The length found.
        len_bytes: u32,
    },
    /// Byte 0 of a field element has one of its two top bits set.
    #[error(
        "blob field element {index} (blob offset {offset}) has a top bit set: byte 0 is {byte:#04x}"
    )]
    FieldElement {
        /// Index of the field element (0..4096).
        index: usize,
        /// Offset of its byte 0 in the blob.
        offset: usize,
        /// The byte found.
        byte: u8,
    },
    /// A decoded byte between the data's end and the end of its last round is
    /// not zero (op-service: "non-zero data encountered where field element
    /// should be empty").
    #[error(
        "blob decoded byte {offset} is {byte:#04x}, past the data length {len_bytes}: expected zero"
    )]
    ExtraneousRoundData {
        /// Offset of the byte in the decoded data.
        offset: usize,
        /// The data length from the header.
        len_bytes: usize,
        /// The byte found.
        byte: u8,
    },
    /// A blob byte after the last round that holds data is not zero.
    #[error("blob byte at offset {offset} is {byte:#04x}, after the encoded data: expected zero")]
    ExtraneousData {
        /// Offset of the byte in the blob.
        offset: usize,
        /// The byte found.
        byte: u8,
    },
}

/// Encodes `data` (at most [`BLOB_DATA_BYTES_MAX`] bytes) into one blob with
/// OP blob encoding version 0. Empty data gives the all-zero blob.
pub fn encode_blob(data: &[u8]) -> Result<Blob, BlobError> {
    let mut blob = Blob::ZERO;
    encode_blob_into(data, &mut blob)?;
    Ok(blob)
}

/// Encodes `data` into `blob`, overwriting all of it. See [`encode_blob`].
pub fn encode_blob_into(data: &[u8], blob: &mut Blob) -> Result<(), BlobError> {
    if data.len() > BLOB_DATA_BYTES_MAX {
        return Err(BlobError::DataTooLarge {
            len_bytes: data.len(),
        });
    }
    blob.0.fill(0);
    if data.is_empty() {
        // op-service writes no round for empty data: the blob stays all zero,
        // which reads back as version 0, length 0.
        return Ok(());
    }
    let len = data.len() as u32;
    let header = [
        BLOB_ENCODING_VERSION,
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
    ];
    let stream_bytes = BLOB_HEADER_BYTES + data.len();
    let rounds = stream_bytes.div_ceil(ROUND_STREAM_BYTES);
    assert!(rounds <= BLOB_ROUNDS);
    let mut stream = Vec::with_capacity(rounds * ROUND_STREAM_BYTES);
    stream.extend_from_slice(&header);
    stream.extend_from_slice(data);
    stream.resize(rounds * ROUND_STREAM_BYTES, 0);
    for (round, chunk) in stream.chunks_exact(ROUND_STREAM_BYTES).enumerate() {
        let out = &mut blob.0[round * 128..(round + 1) * 128];
        let chunk = chunk.try_into().expect("chunks_exact gives 127 bytes");
        encode_round(chunk, out.try_into().expect("a round is 128 bytes"));
    }
    assert_eq!(blob[VERSION_OFFSET], BLOB_ENCODING_VERSION);
    Ok(())
}

/// Spreads 127 stream bytes over 4 field elements. The stream is
/// `c0 (31) x c1 (31) y c2 (31) z c3 (31)`; chunk `ck` fills bytes 1..32 of
/// element k, and x, y, z are split into four 6-bit pieces for the byte 0s.
fn encode_round(chunk: &[u8; ROUND_STREAM_BYTES], out: &mut [u8; 128]) {
    let x = chunk[31];
    let y = chunk[63];
    let z = chunk[95];
    let pieces = [
        x & LOW_SIX_BITS_MASK,
        (y & 0b0000_1111) | ((x & HIGH_BITS_MASK) >> 2),
        z & LOW_SIX_BITS_MASK,
        ((z & HIGH_BITS_MASK) >> 2) | ((y & 0b1111_0000) >> 4),
    ];
    let chunk_starts = [0, 32, 64, 96];
    for k in 0..4 {
        assert_eq!(pieces[k] & HIGH_BITS_MASK, 0);
        out[k * 32] = pieces[k];
        out[k * 32 + 1..(k + 1) * 32]
            .copy_from_slice(&chunk[chunk_starts[k]..chunk_starts[k] + 31]);
    }
}

/// Gathers one round's 4 field elements back into 127 stream bytes. Checks
/// the top bits of every byte 0 except that of field element 0, which
/// op-service does not check (its 6 low bits are read, its top bits ignored).
fn decode_round(
    round: usize,
    input: &[u8; 128],
    chunk: &mut [u8; ROUND_STREAM_BYTES],
) -> Result<(), BlobError> {
    for k in 0..4 {
        let offset = round * 128 + k * 32;
        let byte = input[k * 32];
        let checked = round != 0 || k != 0;
        if checked && byte & HIGH_BITS_MASK != 0 {
            return Err(BlobError::FieldElement {
                index: offset / FIELD_ELEMENT_BYTES,
                offset,
                byte,
            });
        }
        let start = [0, 32, 64, 96][k];
        chunk[start..start + 31].copy_from_slice(&input[k * 32 + 1..(k + 1) * 32]);
    }
    let [a, b, c, d] = [input[0], input[32], input[64], input[96]];
    chunk[31] = (a & LOW_SIX_BITS_MASK) | ((b & 0b0011_0000) << 2);
    chunk[63] = (b & 0b0000_1111) | ((d & 0b0000_1111) << 4);
    chunk[95] = (c & LOW_SIX_BITS_MASK) | ((d & 0b0011_0000) << 2);
    Ok(())
}

/// Decodes one blob written with OP blob encoding version 0, with
/// op-service's checks: version byte, length at most
/// [`BLOB_DATA_BYTES_MAX`], field element top bits, zero bytes past the data
/// in its last round, and zero bytes in every round after it.
pub fn decode_blob(blob: &Blob) -> Result<Vec<u8>, BlobError> {
    let version = blob[VERSION_OFFSET];
    if version != BLOB_ENCODING_VERSION {
        return Err(BlobError::Version { version });
    }
    let l = &blob[LENGTH_OFFSET..LENGTH_OFFSET + 3];
    let len_bytes = u32::from_be_bytes([0, l[0], l[1], l[2]]);
    if len_bytes as usize > BLOB_DATA_BYTES_MAX {
        return Err(BlobError::Length { len_bytes });
    }
    let len = len_bytes as usize;
    // op-service always reads round 0, even for empty data.
    let rounds = (BLOB_HEADER_BYTES + len)
        .div_ceil(ROUND_STREAM_BYTES)
        .max(1);
    let mut stream = Vec::with_capacity(rounds * ROUND_STREAM_BYTES);
    let mut chunk = [0u8; ROUND_STREAM_BYTES];
    for round in 0..rounds {
        let input = &blob.0[round * 128..(round + 1) * 128];
        decode_round(
            round,
            input.try_into().expect("a round is 128 bytes"),
            &mut chunk,
        )?;
        stream.extend_from_slice(&chunk);
    }
    let end = BLOB_HEADER_BYTES + len;
    if let Some(i) = stream[end..].iter().position(|&b| b != 0) {
        let offset = len + i;
        return Err(BlobError::ExtraneousRoundData {
            offset,
            len_bytes: len,
            byte: stream[end + i],
        });
    }
    let tail = rounds * 128;
    if let Some(i) = blob[tail..].iter().position(|&b| b != 0) {
        return Err(BlobError::ExtraneousData {
            offset: tail + i,
            byte: blob[tail + i],
        });
    }
    stream.truncate(end);
    stream.drain(..BLOB_HEADER_BYTES);
    assert_eq!(stream.len(), len);
    Ok(stream)
}

/// Blobs needed to carry `len_bytes` bytes split by [`encode_blobs`].
pub const fn blobs_for_bytes(len_bytes: usize) -> usize {
    len_bytes.div_ceil(BLOB_DATA_BYTES_MAX)
}

/// Splits `data` into chunks of [`BLOB_DATA_BYTES_MAX`] bytes (the last one
/// shorter) and encodes each into its own blob. Empty data gives no blob.
///
/// OP's derivation decodes every blob on its own and parses it as a whole
/// batcher payload (derivation version byte, then whole frames), so for the
/// OP format each chunk must itself be a payload: split a channel into frames
/// of at most [`BLOB_DATA_BYTES_MAX`] − 1 bytes and encode one payload per
/// blob (`crate::frame::frames_to_blobs`). The caller puts at most
/// [`BLOBS_PER_TX_MAX`] blobs in one L1 transaction.
pub fn encode_blobs(data: &[u8]) -> Vec<Blob> {
    data.chunks(BLOB_DATA_BYTES_MAX)
        .map(|chunk| encode_blob(chunk).expect("a chunk fits one blob"))
        .collect()
}

/// OP blob encoding v0 as an alloy [`SidecarCoder`], for
/// `SidecarBuilder::<OpBlobCoder>` and its KZG `build_4844` / `build_7594`.
/// Each `ingest` call's data starts a new blob and fills whole blobs, as
/// [`encode_blobs`] does; for the OP format ingest one batcher payload
/// (at most [`BLOB_DATA_BYTES_MAX`] bytes) per call. `decode_all` returns each
/// blob's data, or `None` if any blob is invalid.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpBlobCoder;

impl SidecarCoder for OpBlobCoder {
    fn required_fe(&self, data: &[u8]) -> usize {
        blobs_for_bytes(data.len()) * BLOB_FIELD_ELEMENTS
    }

    fn code(&mut self, builder: &mut PartialSidecar, data: &[u8]) {
        // The builder's count of field elements stays a multiple of a blob,
        // so every call starts on a fresh blob.
        assert_eq!(builder.len() % BLOB_BYTES, 0);
        for blob in encode_blobs(data) {
            for fe in blob.chunks_exact(FIELD_ELEMENT_BYTES) {
                builder.ingest_valid_fe(WholeFe::new(fe).expect("byte 0 keeps its top bits clear"));
            }
        }
    }

    fn finish(self, _builder: &mut PartialSidecar) {}

    fn decode_all(&mut self, blobs: &[Blob]) -> Option<Vec<Vec<u8>>> {
        blobs.iter().map(|b| decode_blob(b).ok()).collect()
    }
}

#[cfg(test)]
#[path = "blob_tests.rs"]
mod tests;
