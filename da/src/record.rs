//! The payload of the log's DA-progress records: what the batcher posted
//! and where L1 holds it, so that after a crash it resumes with no gap and
//! no duplicate. The seq core logs these bytes as they are; only this
//! module reads them.
//!
//! Version 1, integers big-endian, fixed width:
//!
//! | field | bytes |
//! |---|---|
//! | version | 1 (`1`) |
//! | kind | 1: `1` submitted, `2` included, `3` dropped, `4` base |
//! | channel id | 16 |
//! | submitted: first L2 block, last L2 block, the last block's L1 origin (number, hash), L1 nonce of its first tx, tx count, tx hashes | 8, 8, 8, 32, 8, 2, 32 each |
//! | then: fees (max fee per gas, tip, max fee per blob gas), the recipe (blocks pending when built, built full (1) or on timeout (0), blobs per tx) | 16, 16, 16, 4, 1, 1 |
//! | included: L1 block number, L1 block hash | 8, 32 |
//! | dropped: nothing more | |
//! | base (no channel id): the L1 block the chain's first batch was built at, the first L2 block of the first channel kept, the L1 origin number of the block before it | 8, 8, 8 |
//!
//! `submitted` is logged (and durable) before the channel's first L1 tx is
//! sent; a replacement logs `submitted` again with the new hashes and fees.
//! The fees and the recipe let a restarted batcher rebuild the channel's
//! txs byte for byte (the batcher is deterministic and the signatures are
//! RFC 6979), so that it can re-send, watch and replace exactly the txs it
//! may have sent before the crash.
//! `included` is logged once every tx of the channel is in L1 (the L1 block
//! of its last tx); `dropped` when an L1 reorg removed it.
//!
//! `base` starts a compacted list: once channels are finalized on L1, the
//! batcher replaces the list of every record logged so far with `base` and
//! the records of the channels its tracker still keeps (see
//! `crate::tracker::compact`). Checkpoint markers carry that list, so that
//! boot need not read the DA records of old log segments; it is never
//! logged alone.

use alloy_primitives::B256;

use crate::frame::{CHANNEL_ID_BYTES, ChannelId};
use crate::post::BlobFees;

/// Version of the payload.
pub const DA_RECORD_VERSION: u8 = 1;

/// Most L1 txs one channel may take (a channel of 100 MB is 770 blobs).
pub const CHANNEL_L1_TXS_MAX: usize = 1024;

/// What a channel holds and how it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// Its first L2 block.
    pub first_block: u64,
    /// Its last L2 block.
    pub last_block: u64,
    /// The L1 origin (number, hash) of its last block: the next channel's
    /// span parent after a restart.
    pub last_l1_origin: (u64, B256),
    /// The L1 nonce of its first tx; the others follow in order.
    pub l1_nonce: u64,
    /// Its L1 txs' hashes, in order.
    pub l1_txs: Vec<B256>,
    /// The fees its txs were (last) signed with.
    pub fees: BlobFees,
    /// How the batcher built it.
    pub recipe: Recipe,
}

/// What the batcher's pipeline was given when it built a channel: with the
/// blocks (from the log) and the L1 origins (in the records), enough to
/// build the same channel again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    /// Blocks waiting for a channel when it was built, from its first block.
    pub pending_blocks: u32,
    /// Built only because the waiting blocks filled it (`true`), or because
    /// the channel timeout passed (`false`).
    pub full: bool,
    /// Blobs per L1 tx.
    pub blobs_per_tx: u8,
}

/// One DA-progress record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaRecord {
    /// A channel is (about to be) sent to L1.
    Submitted {
        /// The channel.
        channel: ChannelId,
        /// What it holds and how it was sent.
        submission: Submission,
    },
    /// Every tx of the channel is in L1; the block of the last one.
    Included {
        /// The channel.
        channel: ChannelId,
        /// The L1 block number.
        l1_block: u64,
        /// The L1 block hash.
        l1_hash: B256,
    },
    /// An L1 reorg removed the channel's txs; it is posted again.
    Dropped {
        /// The channel.
        channel: ChannelId,
    },
    /// The channels before `first_block` are finalized and forgotten (the
    /// first record of a compacted list).
    Base {
        /// The L1 block the chain's first channel was built at.
        l1_start_block: u64,
        /// The first L2 block of the first channel kept.
        first_block: u64,
        /// The L1 origin number of the L2 block before it (the span parent
        /// a rebuild of that channel starts from).
        parent_l1_origin: u64,
    },
}

/// Why bytes are not a DA record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DaRecordError {
    /// Fewer bytes than the fields need.
    #[error("DA record truncated: {field} needs {need} bytes at offset {offset}, {left} left")]
    Truncated {
        /// The field.
        field: &'static str,
        /// Its offset.
        offset: usize,
        /// Bytes it needs.
        need: usize,
        /// Bytes left.
        left: usize,
    },
    /// Another version.
    #[error("DA record version {0}; this build reads version {DA_RECORD_VERSION}")]
    Version(u8),
    /// An unknown kind.
    #[error("DA record kind {0} is unknown")]
    Kind(u8),
    /// A submitted record with no or too many txs, or blocks out of order.
    #[error("DA record: {0}")]
    Invalid(&'static str),
    /// Bytes after the record.
    #[error("DA record has {0} bytes after its end")]
    Trailing(usize),
}

impl DaRecord {
    /// The channel it is about (none for a base).
    pub fn channel(&self) -> Option<ChannelId> {
        match self {
            Self::Submitted { channel, .. }
            | Self::Included { channel, .. }
            | Self::Dropped { channel } => Some(*channel),
            Self::Base { .. } => None,
        }
    }

    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![DA_RECORD_VERSION];
        match self {
            Self::Submitted {
                channel,
                submission: s,
            } => {
                assert!(!s.l1_txs.is_empty());
                assert!(s.l1_txs.len() <= CHANNEL_L1_TXS_MAX);
                assert!(s.first_block <= s.last_block);
                assert!(u64::from(s.recipe.pending_blocks) > s.last_block - s.first_block);
                out.push(1);
                out.extend_from_slice(channel);
                out.extend_from_slice(&s.first_block.to_be_bytes());
                out.extend_from_slice(&s.last_block.to_be_bytes());
                out.extend_from_slice(&s.last_l1_origin.0.to_be_bytes());
                out.extend_from_slice(s.last_l1_origin.1.as_slice());
                out.extend_from_slice(&s.l1_nonce.to_be_bytes());
                out.extend_from_slice(&(s.l1_txs.len() as u16).to_be_bytes());
                for hash in &s.l1_txs {
                    out.extend_from_slice(hash.as_slice());
                }
                out.extend_from_slice(&s.fees.max_fee_per_gas.to_be_bytes());
                out.extend_from_slice(&s.fees.max_priority_fee_per_gas.to_be_bytes());
                out.extend_from_slice(&s.fees.max_fee_per_blob_gas.to_be_bytes());
                out.extend_from_slice(&s.recipe.pending_blocks.to_be_bytes());
                out.push(u8::from(s.recipe.full));
                out.push(s.recipe.blobs_per_tx);
            }
            Self::Included {
                channel,
                l1_block,
                l1_hash,
            } => {
                out.push(2);
                out.extend_from_slice(channel);
                out.extend_from_slice(&l1_block.to_be_bytes());
                out.extend_from_slice(l1_hash.as_slice());
            }
            Self::Dropped { channel } => {
                out.push(3);
                out.extend_from_slice(channel);
            }
            Self::Base {
                l1_start_block,
                first_block,
                parent_l1_origin,
            } => {
                out.push(4);
                out.extend_from_slice(&l1_start_block.to_be_bytes());
                out.extend_from_slice(&first_block.to_be_bytes());
                out.extend_from_slice(&parent_l1_origin.to_be_bytes());
            }
        }
        out
    }

    /// Reads a payload; arbitrary bytes are an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, DaRecordError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.take::<1>("version")?[0];
        if version != DA_RECORD_VERSION {
            return Err(DaRecordError::Version(version));
        }
        let kind = r.take::<1>("kind")?[0];
        if kind == 4 {
            let record = Self::Base {
                l1_start_block: r.u64("L1 start block")?,
                first_block: r.u64("first L2 block")?,
                parent_l1_origin: r.u64("parent L1 origin")?,
            };
            return match bytes.len() - r.at {
                0 => Ok(record),
                extra => Err(DaRecordError::Trailing(extra)),
            };
        }
        let channel = r.take::<CHANNEL_ID_BYTES>("channel id")?;
        let record = match kind {
            1 => decode_submitted(&mut r, channel)?,
            2 => Self::Included {
                channel,
                l1_block: r.u64("L1 block")?,
                l1_hash: B256::from(r.take::<32>("L1 block hash")?),
            },
            3 => Self::Dropped { channel },
            other => return Err(DaRecordError::Kind(other)),
        };
        match bytes.len() - r.at {
            0 => Ok(record),
            extra => Err(DaRecordError::Trailing(extra)),
        }
    }
}

fn decode_submitted(r: &mut Reader<'_>, channel: ChannelId) -> Result<DaRecord, DaRecordError> {
    let first_block = r.u64("first L2 block")?;
    let last_block = r.u64("last L2 block")?;
    let last_l1_origin = (
        r.u64("L1 origin number")?,
        B256::from(r.take::<32>("L1 origin hash")?),
    );
    let l1_nonce = r.u64("L1 nonce")?;
    let count = usize::from(u16::from_be_bytes(r.take::<2>("tx count")?));
    if first_block > last_block {
        return Err(DaRecordError::Invalid("first block after last block"));
    }
    if count == 0 || count > CHANNEL_L1_TXS_MAX {
        return Err(DaRecordError::Invalid("tx count out of range"));
    }
    let mut l1_txs = Vec::with_capacity(count.min(r.left() / 32));
    for _ in 0..count {
        l1_txs.push(B256::from(r.take::<32>("L1 tx hash")?));
    }
    let fees = BlobFees {
        max_fee_per_gas: r.u128("max fee per gas")?,
        max_priority_fee_per_gas: r.u128("tip")?,
        max_fee_per_blob_gas: r.u128("max fee per blob gas")?,
    };
    let pending_blocks = u32::from_be_bytes(r.take::<4>("recipe blocks")?);
    let full = match r.take::<1>("recipe full")?[0] {
        0 => false,
        1 => true,
        _ => return Err(DaRecordError::Invalid("recipe flag is not 0 or 1")),
    };
    let blobs_per_tx = r.take::<1>("recipe blobs per tx")?[0];
    if u64::from(pending_blocks) <= last_block - first_block {
        return Err(DaRecordError::Invalid(
            "recipe has fewer blocks than the channel",
        ));
    }
    if blobs_per_tx == 0 || usize::from(blobs_per_tx) > crate::blob::BLOBS_PER_TX_MAX {
        return Err(DaRecordError::Invalid("recipe blobs per tx out of range"));
    }
    let submission = Submission {
        first_block,
        last_block,
        last_l1_origin,
        l1_nonce,
        l1_txs,
        fees,
        recipe: Recipe {
            pending_blocks,
            full,
            blobs_per_tx,
        },
    };
    Ok(DaRecord::Submitted {
        channel,
        submission,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DaRecordError> {
        let Some(slice) = self.bytes.get(self.at..self.at + N) else {
            return Err(DaRecordError::Truncated {
                field,
                offset: self.at,
                need: N,
                left: self.left(),
            });
        };
        self.at += N;
        Ok(slice.try_into().expect("N bytes"))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DaRecordError> {
        Ok(u64::from_be_bytes(self.take::<8>(field)?))
    }

    fn u128(&mut self, field: &'static str) -> Result<u128, DaRecordError> {
        Ok(u128::from_be_bytes(self.take::<16>(field)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;

    fn samples() -> Vec<DaRecord> {
        vec![
            DaRecord::Submitted {
                channel: [7; 16],
                submission: Submission {
                    first_block: 1,
                    last_block: 40,
                    last_l1_origin: (12, B256::repeat_byte(3)),
                    l1_nonce: 3,
                    l1_txs: vec![B256::repeat_byte(1), B256::repeat_byte(2)],
                    fees: BlobFees {
                        max_fee_per_gas: 3_000_000_000,
                        max_priority_fee_per_gas: 1_000_000_000,
                        max_fee_per_blob_gas: u128::MAX - 1,
                    },
                    recipe: Recipe {
                        pending_blocks: 41,
                        full: true,
                        blobs_per_tx: 6,
                    },
                },
            },
            DaRecord::Included {
                channel: [7; 16],
                l1_block: 99,
                l1_hash: B256::repeat_byte(9),
            },
            DaRecord::Dropped { channel: [8; 16] },
            DaRecord::Base {
                l1_start_block: 12,
                first_block: 41,
                parent_l1_origin: 12,
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_and_every_truncation_is_an_error() {
        for record in samples() {
            let bytes = record.encode();
            assert_eq!(DaRecord::decode(&bytes), Ok(record.clone()));
            for len in 0..bytes.len() {
                assert!(
                    DaRecord::decode(&bytes[..len]).is_err(),
                    "{record:?} at {len}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(DaRecord::decode(&longer), Err(DaRecordError::Trailing(1)));
        }
    }

    #[test]
    fn bad_versions_kinds_and_counts_are_named() {
        let mut bytes = samples()[0].encode();
        bytes[0] = 2;
        assert_eq!(DaRecord::decode(&bytes), Err(DaRecordError::Version(2)));
        bytes[0] = 1;
        bytes[1] = 9;
        assert_eq!(DaRecord::decode(&bytes), Err(DaRecordError::Kind(9)));
        bytes[1] = 1;
        // tx count 0
        bytes[2 + 16 + 64] = 0;
        bytes[2 + 16 + 65] = 0;
        assert!(matches!(
            DaRecord::decode(&bytes),
            Err(DaRecordError::Invalid(_))
        ));
    }

    #[test]
    fn arbitrary_bytes_are_errors_not_panics() {
        let mut rng = XorShift::new(41);
        for round in 0..20_000 {
            let len = rng.below(300);
            let mut bytes = rng.bytes(len);
            if round % 2 == 0 && len > 1 {
                bytes[0] = DA_RECORD_VERSION;
                bytes[1] = (round % 4) as u8;
            }
            if let Ok(record) = DaRecord::decode(&bytes) {
                assert_eq!(record.encode(), bytes, "what decodes re-encodes the same");
            }
        }
    }
}
