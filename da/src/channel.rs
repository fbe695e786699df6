//! Channels: a sequence of batches, RLP-framed, compressed with brotli behind
//! channel version byte 1 (OP derivation spec, "Channel Format", Fjord;
//! op-node/rollup/derive/channel.go `BatchReader`, channel_compressor.go).
//!
//! ```text
//! channel  = 0x01 ++ brotli(rlp_bytes(batch_0) ++ rlp_bytes(batch_1) ++ ...)
//! batch_i  = batch_type ++ batch_data        (opaque here: the batch layer's job)
//! ```
//!
//! The channel's bytes are cut into frames numbered from 0; the last frame is
//! marked `is_last`. [`ChannelOut`] builds a channel, [`ChannelIn`] and
//! [`read_channel`] read one back. The codec is deterministic: the channel id
//! is given by the caller, who draws it from a seeded or OS RNG.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use crate::frame::{
    CHANNEL_ID_BYTES, ChannelId, FRAME_DATA_BYTES_PER_BLOB_MAX, FRAME_OVERHEAD_BYTES, Frame,
};

/// Channel version byte of a brotli channel (Fjord and later).
pub const CHANNEL_VERSION_BROTLI: u8 = 0x01;
/// The most decompressed (RLP) bytes a channel may hold: op-node's
/// `MaxRLPBytesPerChannel` from Fjord on.
pub const CHANNEL_RLP_BYTES_MAX: usize = 100_000_000;
/// Brotli quality. op-batcher's `brotli` means `brotli-10`; 9 gives the
/// same bytes per tx on real traffic for half the CPU (da/FORMAT.md).
pub const BROTLI_QUALITY: u32 = 9;
/// Brotli window, log2 bytes: 22 (4 MiB), brotli's default and what OP's Go
/// writer uses when it sets only a level.
pub const BROTLI_WINDOW_BITS: u32 = 22;
/// The most frames one channel has: frame numbers are u16.
pub const CHANNEL_FRAMES_MAX: usize = u16::MAX as usize + 1;
/// The most batches a reader takes from one channel. Every valid OP batch is
/// over 40 bytes (a span batch's prefix alone holds two 20-byte checks, a
/// singular batch two 32-byte hashes), so this bound drops no valid batch;
/// it stops a channel of 100 MB of 1-byte strings from costing gigabytes.
pub const CHANNEL_BATCHES_MAX: usize = CHANNEL_RLP_BYTES_MAX / 40;
/// What op-node counts per frame, on top of its data, when it sizes a
/// channel (`frameOverhead` in op-node's params.go).
pub const FRAME_SIZE_OVERHEAD_BYTES: usize = 200;
/// The most a channel's frames may weigh (data plus
/// [`FRAME_SIZE_OVERHEAD_BYTES`] each) before the reader drops the channel:
/// op-node's Holocene channel assembler uses `MaxRLPBytesPerChannel`.
pub const CHANNEL_FRAME_BYTES_MAX: usize = CHANNEL_RLP_BYTES_MAX;
/// Bytes of brotli's internal IO buffers.
const BROTLI_BUFFER_BYTES: usize = 4096;

const _: () = assert!(CHANNEL_ID_BYTES == 16);

/// What went wrong building or reading a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// A batch was added to, or frames asked of, a channel in the wrong state.
    #[error("channel is {state}: cannot {action}")]
    State {
        /// "closed" or "open".
        state: &'static str,
        /// What was attempted.
        action: &'static str,
    },
    /// The batch would take the channel past its compressed-size target.
    #[error(
        "channel full: {compressed_bytes} compressed bytes plus about {estimate_bytes} for the batch, target {target_bytes}"
    )]
    Full {
        /// Compressed bytes so far.
        compressed_bytes: usize,
        /// Estimated compressed bytes of the batch.
        estimate_bytes: usize,
        /// The channel's target.
        target_bytes: usize,
    },
    /// The batch would take the channel past [`CHANNEL_RLP_BYTES_MAX`].
    #[error(
        "channel holds {rlp_bytes} RLP bytes; {batch_bytes} more would pass the {CHANNEL_RLP_BYTES_MAX} bytes max"
    )]
    TooManyRlpBytes {
        /// RLP bytes in the channel.
        rlp_bytes: usize,
        /// RLP bytes of the batch.
        batch_bytes: usize,
    },
    /// `max_frame_bytes` leaves no room for frame data.
    #[error(
        "max_frame_bytes {max_frame_bytes} is not over the {FRAME_OVERHEAD_BYTES} bytes of frame overhead"
    )]
    FrameSizeTooSmall {
        /// The size asked for.
        max_frame_bytes: usize,
    },
    /// The channel needs more frames than frame numbers allow.
    #[error("channel needs {frames} frames, over the {CHANNEL_FRAMES_MAX} max")]
    TooManyFrames {
        /// Frames needed.
        frames: usize,
    },
    /// No frame was given.
    #[error("channel has no frame")]
    NoFrames,
    /// A frame belongs to another channel.
    #[error("frame {number} has channel id {found:02x?}, expected {expected:02x?}")]
    ChannelId {
        /// Number of the frame.
        number: u16,
        /// The channel's id.
        expected: ChannelId,
        /// The frame's id.
        found: ChannelId,
    },
    /// Two frames have the same number.
    #[error("frame {number} appears twice")]
    DuplicateFrame {
        /// The number.
        number: u16,
    },
    /// A second frame is marked last, or a frame comes after the last one.
    #[error("frame {number} conflicts with last frame {last}")]
    AfterLast {
        /// The frame's number.
        number: u16,
        /// The last frame's number.
        last: u16,
    },
    /// The channel's frames weigh more than [`CHANNEL_FRAME_BYTES_MAX`]:
    /// op-node drops such a channel whole.
    #[error(
        "frame {number} takes the channel to {size_bytes} bytes, over the {CHANNEL_FRAME_BYTES_MAX} bytes max: drop the channel"
    )]
    Oversized {
        /// The frame that crossed the bound.
        number: u16,
        /// The channel's size with it (data plus 200 bytes a frame).
        size_bytes: usize,
    },
    /// The channel is not complete.
    #[error("channel incomplete: {missing}")]
    Incomplete {
        /// "no last frame" or which frame number is missing.
        missing: String,
    },
    /// The channel's bytes are empty (no version byte).
    #[error("channel data is empty: expected channel version byte {CHANNEL_VERSION_BROTLI}")]
    Empty,
    /// The channel is zlib-compressed (pre-Fjord), which fulmen does not read.
    #[error(
        "channel byte 0 is {byte:#04x}: a zlib channel; fulmen reads brotli channels (version 1) only"
    )]
    Zlib {
        /// The byte found.
        byte: u8,
    },
    /// The channel version byte is unknown.
    #[error(
        "channel byte 0 is {byte:#04x}: unknown channel version, expected {CHANNEL_VERSION_BROTLI:#04x}"
    )]
    Version {
        /// The byte found.
        byte: u8,
    },
    /// The brotli stream is corrupt or truncated.
    #[error("brotli stream broken after {decompressed_bytes} decompressed bytes: {message}")]
    Brotli {
        /// Bytes decompressed before the error.
        decompressed_bytes: usize,
        /// The decoder's message.
        message: String,
    },
    /// The channel decompresses to more than [`CHANNEL_RLP_BYTES_MAX`].
    #[error("channel decompresses to more than {CHANNEL_RLP_BYTES_MAX} bytes")]
    TooLarge,
    /// The channel holds more than [`CHANNEL_BATCHES_MAX`] batches.
    #[error("channel holds more than {CHANNEL_BATCHES_MAX} batches")]
    TooManyBatches,
    /// A batch is not a well-formed RLP byte string.
    #[error("batch {batch_index} at decompressed offset {offset}: {error}")]
    Rlp {
        /// Index of the batch in the channel.
        batch_index: usize,
        /// Offset of the batch in the decompressed bytes.
        offset: usize,
        /// What alloy-rlp found wrong.
        error: alloy_rlp::Error,
    },
}

/// Builds one channel: batches in, brotli-compressed frames out.
///
/// Size tracking: brotli at quality 9 and up buffers its input, so the bytes it has
/// written say little until it is flushed. The channel estimates a batch's
/// compressed size with the ratio seen at the last flush (1.0 before the
/// first), and flushes when the estimate would pass the target. A closed
/// channel can pass its target by the estimate's error on the batches added
/// since the last flush; `frames` then simply returns one more frame.
pub struct ChannelOut {
    id: ChannelId,
    encoder: Option<brotli::CompressorWriter<Vec<u8>>>,
    closed: Vec<u8>,
    target_bytes: usize,
    rlp_bytes: usize,
    flushed_rlp_bytes: usize,
    batches: usize,
}

impl ChannelOut {
    /// A new, empty channel whose compressed bytes (version byte included)
    /// aim at `target_bytes`.
    pub fn new(id: ChannelId, target_bytes: usize) -> Self {
        // Room for a 6-blob channel; a larger target grows the Vec as needed.
        let mut out = Vec::with_capacity(target_bytes.min(6 * FRAME_DATA_BYTES_PER_BLOB_MAX) + 64);
        out.push(CHANNEL_VERSION_BROTLI);
        let encoder = brotli::CompressorWriter::new(
            out,
            BROTLI_BUFFER_BYTES,
            BROTLI_QUALITY,
            BROTLI_WINDOW_BITS,
        );
        Self {
            id,
            encoder: Some(encoder),
            closed: Vec::new(),
            target_bytes,
            rlp_bytes: 0,
            flushed_rlp_bytes: 0,
            batches: 0,
        }
    }

    /// A channel whose target fills `blobs` blobs, one frame per blob.
    pub fn for_blobs(id: ChannelId, blobs: usize) -> Self {
        Self::new(id, blobs * FRAME_DATA_BYTES_PER_BLOB_MAX)
    }

    /// The channel's id.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// Batches added.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Uncompressed bytes added: the RLP byte strings of the batches.
    pub fn uncompressed_bytes(&self) -> usize {
        self.rlp_bytes
    }

    /// Compressed bytes so far, version byte included: exact once closed,
    /// a lower bound before (brotli holds back what it has not flushed).
    pub fn compressed_bytes(&self) -> usize {
        match &self.encoder {
            Some(encoder) => encoder.get_ref().len(),
            None => self.closed.len(),
        }
    }

    /// The compressed-size target.
    pub fn target_bytes(&self) -> usize {
        self.target_bytes
    }

    /// Estimated compressed bytes of `rlp_bytes` more input, by the ratio at
    /// the last flush.
    fn estimate(&self, rlp_bytes: usize) -> usize {
        let written = self.compressed_bytes().saturating_sub(1);
        if self.flushed_rlp_bytes == 0 {
            return rlp_bytes;
        }
        (rlp_bytes as u128 * written as u128).div_ceil(self.flushed_rlp_bytes as u128) as usize
    }

    /// Brotli output so far plus the estimate for what it holds back.
    fn estimate_total(&self, more_rlp_bytes: usize) -> usize {
        let pending = self.rlp_bytes - self.flushed_rlp_bytes + more_rlp_bytes;
        self.compressed_bytes() + self.estimate(pending)
    }

    /// True when no batch of `rlp_bytes` (RLP header included) is estimated
    /// to fit under the target any more.
    pub fn is_full_for(&self, rlp_bytes: usize) -> bool {
        self.estimate_total(rlp_bytes) > self.target_bytes
    }

    /// Adds one batch (`batch_type ++ batch_data`) as an RLP byte string.
    /// Returns [`ChannelError::Full`] and adds nothing if the batch is
    /// estimated not to fit under the target; an empty channel takes any
    /// batch, so that a batch larger than the target still gets a channel.
    pub fn add_batch(&mut self, batch: &[u8]) -> Result<(), ChannelError> {
        if self.encoder.is_none() {
            return Err(ChannelError::State {
                state: "closed",
                action: "add a batch",
            });
        }
        let header = alloy_rlp::Header {
            list: false,
            payload_length: batch.len(),
        };
        let single_byte = batch.len() == 1 && batch[0] < alloy_rlp::EMPTY_STRING_CODE;
        let rlp_bytes = if single_byte {
            1
        } else {
            header.length() + batch.len()
        };
        if self.rlp_bytes + rlp_bytes > CHANNEL_RLP_BYTES_MAX {
            return Err(ChannelError::TooManyRlpBytes {
                rlp_bytes: self.rlp_bytes,
                batch_bytes: rlp_bytes,
            });
        }
        if self.batches > 0 && self.is_full_for(rlp_bytes) {
            self.flush();
            if self.is_full_for(rlp_bytes) {
                return Err(ChannelError::Full {
                    compressed_bytes: self.compressed_bytes(),
                    estimate_bytes: self.estimate(rlp_bytes),
                    target_bytes: self.target_bytes,
                });
            }
        }
        let mut encoded = Vec::with_capacity(rlp_bytes);
        if single_byte {
            encoded.push(batch[0]);
        } else {
            header.encode(&mut encoded);
            encoded.extend_from_slice(batch);
        }
        assert_eq!(encoded.len(), rlp_bytes);
        let encoder = self.encoder.as_mut().expect("checked open above");
        encoder
            .write_all(&encoded)
            .expect("writing to a Vec cannot fail");
        self.rlp_bytes += rlp_bytes;
        self.batches += 1;
        Ok(())
    }

    /// Makes brotli write out all it holds, so that `compressed_bytes` is
    /// exact and the ratio is fresh. Costs a few bytes of compression.
    fn flush(&mut self) {
        if self.flushed_rlp_bytes == self.rlp_bytes {
            return;
        }
        let encoder = self.encoder.as_mut().expect("flush on an open channel");
        encoder.flush().expect("flushing to a Vec cannot fail");
        self.flushed_rlp_bytes = self.rlp_bytes;
    }

    /// Ends the brotli stream. No batch can be added after.
    pub fn close(&mut self) -> Result<(), ChannelError> {
        let Some(encoder) = self.encoder.take() else {
            return Err(ChannelError::State {
                state: "closed",
                action: "close it again",
            });
        };
        self.closed = encoder.into_inner();
        assert_eq!(self.closed[0], CHANNEL_VERSION_BROTLI);
        Ok(())
    }

    /// The closed channel's bytes: version byte 1, then the brotli stream.
    pub fn channel_bytes(&self) -> Result<&[u8], ChannelError> {
        if self.encoder.is_some() {
            return Err(ChannelError::State {
                state: "open",
                action: "read its bytes",
            });
        }
        Ok(&self.closed)
    }

    /// Cuts the closed channel into frames of at most `max_frame_bytes`
    /// bytes each (overhead included), numbered from 0, the last marked.
    /// For blobs, use [`crate::frame::FRAME_BYTES_PER_BLOB_MAX`].
    pub fn frames(&self, max_frame_bytes: usize) -> Result<Vec<Frame>, ChannelError> {
        let bytes = self.channel_bytes()?;
        if max_frame_bytes <= FRAME_OVERHEAD_BYTES {
            return Err(ChannelError::FrameSizeTooSmall { max_frame_bytes });
        }
        let data_bytes =
            (max_frame_bytes - FRAME_OVERHEAD_BYTES).min(crate::frame::FRAME_DATA_BYTES_MAX);
        let count = bytes.len().div_ceil(data_bytes);
        if count > CHANNEL_FRAMES_MAX {
            return Err(ChannelError::TooManyFrames { frames: count });
        }
        assert!(count >= 1, "a closed channel has its version byte");
        let frames: Vec<Frame> = bytes
            .chunks(data_bytes)
            .enumerate()
            .map(|(i, chunk)| Frame {
                channel_id: self.id,
                number: i as u16,
                data: chunk.to_vec(),
                is_last: i + 1 == count,
            })
            .collect();
        assert_eq!(frames.len(), count);
        Ok(frames)
    }
}

/// Gathers one channel's frames, in any order, until it is complete.
#[derive(Debug, Clone)]
pub struct ChannelIn {
    id: ChannelId,
    frames: BTreeMap<u16, Frame>,
    last: Option<u16>,
    size_bytes: usize,
}

impl ChannelIn {
    /// An empty channel with this id.
    pub fn new(id: ChannelId) -> Self {
        Self {
            id,
            frames: BTreeMap::new(),
            last: None,
            size_bytes: 0,
        }
    }

    /// Adds a frame. Rejects (and keeps nothing of) a frame of another
    /// channel, a duplicate number, a second last frame, a frame numbered
    /// after the last one, or one that makes the channel oversized (after
    /// which the caller drops the channel, as op-node does).
    pub fn add_frame(&mut self, frame: Frame) -> Result<(), ChannelError> {
        let number = frame.number;
        if frame.channel_id != self.id {
            return Err(ChannelError::ChannelId {
                number,
                expected: self.id,
                found: frame.channel_id,
            });
        }
        if self.frames.contains_key(&number) {
            return Err(ChannelError::DuplicateFrame { number });
        }
        if let Some(last) = self.last
            && (frame.is_last || number > last)
        {
            return Err(ChannelError::AfterLast { number, last });
        }
        let size_bytes = self.size_bytes + frame.data.len() + FRAME_SIZE_OVERHEAD_BYTES;
        if size_bytes > CHANNEL_FRAME_BYTES_MAX {
            return Err(ChannelError::Oversized { number, size_bytes });
        }
        if frame.is_last {
            if let Some((&highest, _)) = self.frames.last_key_value()
                && highest > number
            {
                return Err(ChannelError::AfterLast {
                    number: highest,
                    last: number,
                });
            }
            self.last = Some(number);
        }
        self.frames.insert(number, frame);
        self.size_bytes = size_bytes;
        Ok(())
    }

    /// True when the last frame and every frame before it are in.
    pub fn is_ready(&self) -> bool {
        self.last
            .is_some_and(|last| self.frames.len() == usize::from(last) + 1)
    }

    /// The channel's bytes: the frames' data in frame-number order.
    pub fn channel_bytes(&self) -> Result<Vec<u8>, ChannelError> {
        let Some(last) = self.last else {
            return Err(ChannelError::Incomplete {
                missing: "no last frame".into(),
            });
        };
        let mut out = Vec::with_capacity(self.frames.values().map(|f| f.data.len()).sum());
        for number in 0..=last {
            let Some(frame) = self.frames.get(&number) else {
                return Err(ChannelError::Incomplete {
                    missing: format!("frame {number} of 0..={last}"),
                });
            };
            out.extend_from_slice(&frame.data);
        }
        Ok(out)
    }

    /// Decompresses the complete channel and splits it into batches.
    pub fn read(&self) -> Result<Vec<Vec<u8>>, ChannelError> {
        decode_channel_bytes(&self.channel_bytes()?)
    }
}

/// Reassembles a channel from its frames (any order, one channel id) and
/// returns its batches (`batch_type ++ batch_data` each).
pub fn read_channel(frames: &[Frame]) -> Result<Vec<Vec<u8>>, ChannelError> {
    let first = frames.first().ok_or(ChannelError::NoFrames)?;
    let mut channel = ChannelIn::new(first.channel_id);
    for frame in frames {
        channel.add_frame(frame.clone())?;
    }
    channel.read()
}

/// Checks the version byte, decompresses with the size bound and splits the
/// RLP byte strings.
pub fn decode_channel_bytes(bytes: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
    let Some(&byte) = bytes.first() else {
        return Err(ChannelError::Empty);
    };
    // op-node's test: a zlib header's low nibble (CM) is 8 or 15.
    if byte & 0x0F == 8 || byte & 0x0F == 15 {
        return Err(ChannelError::Zlib { byte });
    }
    if byte != CHANNEL_VERSION_BROTLI {
        return Err(ChannelError::Version { byte });
    }
    let rlp = decompress_bounded(&bytes[1..], CHANNEL_RLP_BYTES_MAX)?;
    split_rlp_strings(&rlp)
}

/// Batches read from a channel the way op-node reads them: every batch
/// that decodes in full from the first [`CHANNEL_RLP_BYTES_MAX`]
/// decompressed bytes, in order, up to the first error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPrefix {
    /// The batches before the first error.
    pub batches: Vec<Vec<u8>>,
    /// What stopped the reading, if anything did.
    pub error: Option<ChannelError>,
}

/// Reads a channel's bytes as op-node does (derivation spec, "Channel
/// Format"): output past [`CHANNEL_RLP_BYTES_MAX`] bytes is cut off rather
/// than rejected, and a broken stream or batch keeps the batches before it.
/// How much a corrupt brotli stream yields before its error depends on the
/// decoder's buffering, so only well-formed channels are read exactly alike.
pub fn read_channel_prefix(bytes: &[u8]) -> ChannelPrefix {
    let stop = |error| ChannelPrefix {
        batches: Vec::new(),
        error: Some(error),
    };
    let Some(&byte) = bytes.first() else {
        return stop(ChannelError::Empty);
    };
    if byte != CHANNEL_VERSION_BROTLI {
        return stop(decode_channel_bytes(&bytes[..1]).expect_err("not a brotli channel"));
    }
    let decoder = brotli::Decompressor::new(&bytes[1..], BROTLI_BUFFER_BYTES);
    let mut rlp = Vec::new();
    let mut error = None;
    if let Err(e) = decoder
        .take(CHANNEL_RLP_BYTES_MAX as u64)
        .read_to_end(&mut rlp)
    {
        error = Some(ChannelError::Brotli {
            decompressed_bytes: rlp.len(),
            message: e.to_string(),
        });
    }
    let mut rest = rlp.as_slice();
    let mut batches = Vec::new();
    while !rest.is_empty() {
        if batches.len() == CHANNEL_BATCHES_MAX {
            error = error.or(Some(ChannelError::TooManyBatches));
            break;
        }
        let offset = rlp.len() - rest.len();
        match alloy_rlp::Header::decode_bytes(&mut rest, false) {
            Ok(batch) => batches.push(batch.to_vec()),
            Err(e) => {
                // A batch cut short by a broken stream reports the stream's error.
                let batch_index = batches.len();
                error = error.or(Some(ChannelError::Rlp {
                    batch_index,
                    offset,
                    error: e,
                }));
                break;
            }
        }
    }
    ChannelPrefix { batches, error }
}

/// Decompresses a brotli stream, refusing more than `max_bytes` of output.
/// Bytes after the end of the stream are an error, as in Go's brotli reader
/// ("excessive input").
pub fn decompress_bounded(compressed: &[u8], max_bytes: usize) -> Result<Vec<u8>, ChannelError> {
    let mut decoder = brotli::Decompressor::new(compressed, BROTLI_BUFFER_BYTES);
    let mut out = Vec::new();
    let broken = |out: &Vec<u8>, message: String| ChannelError::Brotli {
        decompressed_bytes: out.len(),
        message,
    };
    if let Err(e) = (&mut decoder)
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut out)
    {
        return Err(broken(&out, e.to_string()));
    }
    if out.len() > max_bytes {
        return Err(ChannelError::TooLarge);
    }
    // The decoder reports input left in its buffer on the read after the end.
    let mut probe = [0u8; 1];
    match decoder.read(&mut probe) {
        Ok(0) => {}
        Ok(_) => return Err(ChannelError::TooLarge),
        Err(e) => return Err(broken(&out, format!("after the end of the stream: {e}"))),
    }
    if !decoder.into_inner().is_empty() {
        return Err(broken(&out, "bytes after the end of the stream".into()));
    }
    Ok(out)
}

/// Splits concatenated RLP byte strings (canonical, not lists).
pub fn split_rlp_strings(mut rlp: &[u8]) -> Result<Vec<Vec<u8>>, ChannelError> {
    let total = rlp.len();
    let mut batches = Vec::new();
    while !rlp.is_empty() {
        if batches.len() == CHANNEL_BATCHES_MAX {
            return Err(ChannelError::TooManyBatches);
        }
        let offset = total - rlp.len();
        let batch_index = batches.len();
        let payload = alloy_rlp::Header::decode_bytes(&mut rlp, false).map_err(|error| {
            ChannelError::Rlp {
                batch_index,
                offset,
                error,
            }
        })?;
        batches.push(payload.to_vec());
    }
    Ok(batches)
}

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
