//! fulmen's data availability layer: the OP Stack's L1 data formats, byte for
//! byte, so that OP tools can read what fulmen posts. Span batches
//! ([`span_batch`]) carry the L2 blocks. The exact bytes are in `da/FORMAT.md`.

pub mod span_batch;
