//! fulmen's data availability layer: the OP Stack's L1 data formats, byte for
//! byte, so that OP tools can read what fulmen posts. From the bottom up:
//! blobs ([`blob`]), batcher payloads of frames ([`frame`]), brotli channels
//! of batches ([`channel`]), and span batches ([`span_batch`]) that carry the
//! L2 blocks; [`batcher`] turns sealed blocks into channels ready to post;
//! [`record`] is the log's DA-progress payload and [`tracker`] what was
//! posted and where L1 holds it (the `safe` and `finalized` heads).
//! Posting: [`post`] builds and signs the type-3 L1 txs that carry the
//! blobs (KZG sidecars, fees, replacement bumps) and [`l1`] is the blocking
//! L1 client (JSON-RPC and the beacon blob API) the DA thread talks to the
//! L1 with. The exact bytes are in `da/FORMAT.md`.

pub mod batcher;
pub mod blob;
pub mod channel;
pub mod commit;
pub mod derive;
pub mod driver;
pub mod frame;
pub mod l1;
pub mod post;
pub mod record;
pub mod span_batch;
pub mod tracker;

#[cfg(test)]
mod testutil;
