//! fulmen's data availability layer: the OP Stack's L1 data formats, byte for
//! byte, so that OP tools can read what fulmen posts. From the bottom up:
//! blobs ([`blob`]), batcher payloads of frames ([`frame`]) and brotli
//! channels of batches ([`channel`]). The exact bytes are in `da/FORMAT.md`.

pub mod blob;
pub mod channel;
pub mod frame;

#[cfg(test)]
mod testutil;
