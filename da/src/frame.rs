//! Frames and batcher transaction payloads (OP derivation spec, "Batcher
//! Transaction Format" and "Frame Format"; op-node/rollup/derive/frame.go).
//!
//! ```text
//! payload = derivation_version (0x00) ++ frame ++ frame ++ ...   (at least one frame)
//! frame   = channel_id (16) ++ frame_number (u16 BE) ++ frame_data_length (u32 BE)
//!           ++ frame_data ++ is_last (0x00 or 0x01)
//! ```
//!
//! A payload with any invalid frame, or with bytes left after the last whole
//! frame, is dropped whole: [`decode_payload`] returns an error and no frame.

use crate::blob::{BLOB_DATA_BYTES_MAX, Blob, BlobError, encode_blob_into};

/// Bytes of a channel id.
pub const CHANNEL_ID_BYTES: usize = 16;
/// A channel id: 16 opaque bytes, random per channel.
pub type ChannelId = [u8; CHANNEL_ID_BYTES];
/// Bytes a frame adds around its data: id 16, number 2, length 4, is_last 1.
pub const FRAME_OVERHEAD_BYTES: usize = 23;
/// The largest `frame_data_length` a reader accepts (op-node `MaxFrameLen`).
pub const FRAME_DATA_BYTES_MAX: usize = 1_000_000;
/// The derivation version byte in front of the frames of a batcher payload.
pub const DERIVATION_VERSION_0: u8 = 0;
/// The largest frame (overhead included) that fits one blob as the only frame
/// of its payload: blob capacity less the derivation version byte.
pub const FRAME_BYTES_PER_BLOB_MAX: usize = BLOB_DATA_BYTES_MAX - 1;
/// The most frame data one blob carries: 130,020 bytes.
pub const FRAME_DATA_BYTES_PER_BLOB_MAX: usize = FRAME_BYTES_PER_BLOB_MAX - FRAME_OVERHEAD_BYTES;

const _: () = assert!(FRAME_OVERHEAD_BYTES == CHANNEL_ID_BYTES + 2 + 4 + 1);
const _: () = assert!(FRAME_DATA_BYTES_PER_BLOB_MAX == 130_020);

/// One frame: a numbered piece of a channel's compressed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The channel this frame belongs to.
    pub channel_id: ChannelId,
    /// Position of the frame in its channel, from 0.
    pub number: u16,
    /// The piece of the channel's bytes (at most [`FRAME_DATA_BYTES_MAX`]).
    pub data: Vec<u8>,
    /// Whether this is the channel's last frame.
    pub is_last: bool,
}

impl Frame {
    /// Bytes of the encoded frame.
    pub fn encoded_bytes(&self) -> usize {
        FRAME_OVERHEAD_BYTES + self.data.len()
    }

    /// Appends the frame's bytes to `out`.
    ///
    /// # Panics
    /// If the data is over [`FRAME_DATA_BYTES_MAX`]: no reader would accept it.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(
            self.data.len() <= FRAME_DATA_BYTES_MAX,
            "frame data over the max"
        );
        out.extend_from_slice(&self.channel_id);
        out.extend_from_slice(&self.number.to_be_bytes());
        out.extend_from_slice(&(self.data.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.data);
        out.push(u8::from(self.is_last));
    }
}

/// What is wrong with a batcher payload. Offsets count from the payload's
/// first byte (the derivation version byte).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The payload has no bytes.
    #[error("batcher payload is empty: expected the derivation version byte and a frame")]
    Empty,
    /// The first byte is not derivation version 0.
    #[error(
        "batcher payload byte 0 (derivation version) is {version}, expected {DERIVATION_VERSION_0}"
    )]
    Version {
        /// The byte found.
        version: u8,
    },
    /// The payload has the version byte but no frame.
    #[error("batcher payload has no frame after the derivation version byte")]
    NoFrame,
    /// The payload ends inside a frame field.
    #[error(
        "frame {frame_index}: payload ends at offset {offset} inside field {field}: needs {needed_bytes} bytes, {left_bytes} left"
    )]
    Truncated {
        /// Index of the frame in the payload.
        frame_index: usize,
        /// Offset of the field in the payload.
        offset: usize,
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed_bytes: usize,
        /// Bytes left in the payload.
        left_bytes: usize,
    },
    /// `frame_data_length` is over [`FRAME_DATA_BYTES_MAX`].
    #[error(
        "frame {frame_index}: frame_data_length at offset {offset} is {len_bytes}, over the {FRAME_DATA_BYTES_MAX} bytes max"
    )]
    DataTooLong {
        /// Index of the frame in the payload.
        frame_index: usize,
        /// Offset of the length field in the payload.
        offset: usize,
        /// The length found.
        len_bytes: u32,
    },
    /// `is_last` is neither 0 nor 1.
    #[error("frame {frame_index}: is_last at offset {offset} is {byte}, expected 0 or 1")]
    IsLast {
        /// Index of the frame in the payload.
        frame_index: usize,
        /// Offset of the byte in the payload.
        offset: usize,
        /// The byte found.
        byte: u8,
    },
}

/// Encodes a batcher payload: the derivation version byte, then the frames.
///
/// # Panics
/// If `frames` is empty (readers drop a payload without a frame) or a frame's
/// data is over [`FRAME_DATA_BYTES_MAX`].
pub fn encode_payload(frames: &[Frame]) -> Vec<u8> {
    assert!(!frames.is_empty(), "a batcher payload needs a frame");
    let len = 1 + frames.iter().map(Frame::encoded_bytes).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(DERIVATION_VERSION_0);
    for frame in frames {
        frame.encode_into(&mut out);
    }
    assert_eq!(out.len(), len);
    out
}

/// Reads `n` bytes at `*at`, or says which field ran out.
fn take<'a>(
    payload: &'a [u8],
    at: &mut usize,
    n: usize,
    frame_index: usize,
    field: &'static str,
) -> Result<&'a [u8], FrameError> {
    let left_bytes = payload.len() - *at;
    if left_bytes < n {
        return Err(FrameError::Truncated {
            frame_index,
            offset: *at,
            field,
            needed_bytes: n,
            left_bytes,
        });
    }
    let bytes = &payload[*at..*at + n];
    *at += n;
    Ok(bytes)
}

/// Reads one frame starting at `*at`.
fn decode_frame(payload: &[u8], at: &mut usize, frame_index: usize) -> Result<Frame, FrameError> {
    let id = take(payload, at, CHANNEL_ID_BYTES, frame_index, "channel_id")?;
    let channel_id: ChannelId = id.try_into().expect("16 bytes");
    let number = take(payload, at, 2, frame_index, "frame_number")?;
    let number = u16::from_be_bytes([number[0], number[1]]);
    let len_offset = *at;
    let len = take(payload, at, 4, frame_index, "frame_data_length")?;
    let len_bytes = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    if len_bytes as usize > FRAME_DATA_BYTES_MAX {
        return Err(FrameError::DataTooLong {
            frame_index,
            offset: len_offset,
            len_bytes,
        });
    }
    // The length is checked against the bytes left before anything is copied.
    let data = take(payload, at, len_bytes as usize, frame_index, "frame_data")?.to_vec();
    let offset = *at;
    let is_last = match take(payload, at, 1, frame_index, "is_last")?[0] {
        0 => false,
        1 => true,
        byte => {
            return Err(FrameError::IsLast {
                frame_index,
                offset,
                byte,
            });
        }
    };
    Ok(Frame {
        channel_id,
        number,
        data,
        is_last,
    })
}

/// Decodes a batcher payload into its frames. Any invalid frame or trailing
/// bytes reject the whole payload, as op-node's `ParseFrames` does.
pub fn decode_payload(payload: &[u8]) -> Result<Vec<Frame>, FrameError> {
    let Some(&version) = payload.first() else {
        return Err(FrameError::Empty);
    };
    if version != DERIVATION_VERSION_0 {
        return Err(FrameError::Version { version });
    }
    let mut at = 1;
    let mut frames = Vec::new();
    while at < payload.len() {
        let frame = decode_frame(payload, &mut at, frames.len())?;
        frames.push(frame);
    }
    assert_eq!(at, payload.len());
    if frames.is_empty() {
        return Err(FrameError::NoFrame);
    }
    Ok(frames)
}

/// Puts each frame in its own batcher payload and each payload in its own
/// blob, which is how OP's batcher fills blobs and how OP's derivation reads
/// them (every blob is one payload).
pub fn frames_to_blobs(frames: &[Frame]) -> Result<Vec<Blob>, BlobError> {
    let mut blobs = Vec::with_capacity(frames.len());
    for frame in frames {
        let payload = encode_payload(std::slice::from_ref(frame));
        let mut blob = Blob::ZERO;
        encode_blob_into(&payload, &mut blob)?;
        blobs.push(blob);
    }
    Ok(blobs)
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
