//! What the batcher has posted and where L1 holds it, rebuilt from the
//! DA-progress records after a restart. Pure: the L1 client and the log are
//! the caller's.
//!
//! Channels are kept in L2 order and chain without gap or overlap: a new
//! channel starts at the block after the last channel's last block. A
//! channel is *included* once all its L1 txs are in L1 (at the block of the
//! last one). `safe` is the last L2 block of the longest run of included
//! channels, from the first, whose L1 blocks are at or below L1's safe
//! height; `finalized` the same against L1's finalized height.

use std::collections::VecDeque;

use alloy_primitives::B256;

use crate::frame::ChannelId;
use crate::record::{DaRecord, Submission};

/// One posted channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The channel.
    pub channel: ChannelId,
    /// What it holds and how it was last sent (the latest replacement).
    pub submission: Submission,
    /// The L1 block (number, hash) holding its last tx, once all are in.
    pub included: Option<(u64, B256)>,
}

/// A record that does not fit what was posted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// A new channel does not start after the last one.
    #[error(
        "DA progress: a channel starts at L2 block {got}, but the next block to post is {expected}"
    )]
    Gap {
        /// The block after the last channel.
        expected: u64,
        /// The new channel's first block.
        got: u64,
    },
    /// A record names a channel that was never submitted.
    #[error("DA progress: channel {} was never submitted", alloy_primitives::hex::encode(.0))]
    Unknown(ChannelId),
    /// A replacement changes the blocks a channel holds.
    #[error("DA progress: channel {} was resubmitted with other blocks", alloy_primitives::hex::encode(.0))]
    Changed(ChannelId),
}

/// The posted channels.
#[derive(Debug, Clone)]
pub struct Tracker {
    /// Channels in L2 order; finalized ones are pruned but the last.
    channels: VecDeque<Posted>,
    /// The first L2 block of the first channel ever (the block after genesis).
    first_block: u64,
}

impl Tracker {
    /// Nothing posted yet; the first channel starts at `first_block`.
    pub fn new(first_block: u64) -> Self {
        Self {
            channels: VecDeque::new(),
            first_block,
        }
    }

    /// The tracker the log's records describe, in log order.
    pub fn resume<'a>(
        first_block: u64,
        records: impl IntoIterator<Item = &'a DaRecord>,
    ) -> Result<Self, TrackerError> {
        let mut tracker = Self::new(first_block);
        for record in records {
            tracker.apply(record)?;
        }
        Ok(tracker)
    }

    /// The channels kept: those not finalized, and the last finalized one
    /// while no later one is.
    pub fn kept(&self) -> impl Iterator<Item = &Posted> {
        self.channels.iter()
    }

    /// The last channel posted (where the next one's span starts), if any.
    pub fn last(&self) -> Option<&Posted> {
        self.channels.back()
    }

    /// The first L2 block of the next new channel.
    pub fn next_block(&self) -> u64 {
        self.channels
            .back()
            .map_or(self.first_block, |c| c.submission.last_block + 1)
    }

    /// Applies one record (as it is logged).
    pub fn apply(&mut self, record: &DaRecord) -> Result<(), TrackerError> {
        match record {
            DaRecord::Submitted {
                channel,
                submission,
            } => {
                if let Some(posted) = self.find_mut(channel) {
                    let old = &posted.submission;
                    if (old.first_block, old.last_block)
                        != (submission.first_block, submission.last_block)
                    {
                        return Err(TrackerError::Changed(*channel));
                    }
                    posted.submission = submission.clone();
                    posted.included = None;
                    return Ok(());
                }
                if submission.first_block != self.next_block() {
                    return Err(TrackerError::Gap {
                        expected: self.next_block(),
                        got: submission.first_block,
                    });
                }
                self.channels.push_back(Posted {
                    channel: *channel,
                    submission: submission.clone(),
                    included: None,
                });
            }
            DaRecord::Included {
                channel,
                l1_block,
                l1_hash,
            } => {
                let posted = self
                    .find_mut(channel)
                    .ok_or(TrackerError::Unknown(*channel))?;
                posted.included = Some((*l1_block, *l1_hash));
            }
            DaRecord::Dropped { channel } => {
                let posted = self
                    .find_mut(channel)
                    .ok_or(TrackerError::Unknown(*channel))?;
                posted.included = None;
            }
            DaRecord::Base { first_block, .. } => {
                // A compacted list starts here: what came before is
                // finalized and forgotten.
                self.channels.clear();
                self.first_block = *first_block;
            }
        }
        Ok(())
    }

    fn find_mut(&mut self, channel: &ChannelId) -> Option<&mut Posted> {
        // The channel a record names is almost always among the last.
        self.channels
            .iter_mut()
            .rev()
            .find(|c| &c.channel == channel)
    }

    /// Channels whose txs are not all in L1 yet, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Posted> {
        self.channels.iter().filter(|c| c.included.is_none())
    }

    /// Included channels, oldest first, with their L1 block: what an L1
    /// reorg check looks at.
    pub fn included(&self) -> impl Iterator<Item = (&Posted, u64, B256)> {
        self.channels
            .iter()
            .filter_map(|c| c.included.map(|(number, hash)| (c, number, hash)))
    }

    /// The last L2 block of the longest run of included channels, from the
    /// first kept, whose L1 block is at or below `l1_height`; `floor` when
    /// none is (the last L2 block known to be that deep already).
    pub fn l2_head_at(&self, l1_height: u64, floor: u64) -> u64 {
        let mut head = floor;
        for posted in &self.channels {
            match posted.included {
                Some((number, _)) if number <= l1_height => {
                    head = head.max(posted.submission.last_block)
                }
                _ => break,
            }
        }
        head
    }

    /// Forgets channels whose L1 block is at or below `l1_finalized`, but
    /// the last one (it says where the next channel starts). Returns the
    /// last L2 block forgotten, if any.
    pub fn prune(&mut self, l1_finalized: u64) -> Option<u64> {
        let mut pruned = None;
        while self.channels.len() > 1
            && self.channels[0]
                .included
                .is_some_and(|(number, _)| number <= l1_finalized)
        {
            pruned = self.channels.pop_front().map(|c| c.submission.last_block);
        }
        pruned
    }
}

/// The L1 head when the chain's first channel was built (its origin), from
/// the records in log order: no batch of this chain is in an earlier L1
/// block.
pub fn l1_start_block(records: &[DaRecord]) -> Option<u64> {
    records.iter().find_map(|r| match r {
        DaRecord::Base { l1_start_block, .. } => Some(*l1_start_block),
        DaRecord::Submitted { submission, .. } => Some(submission.last_l1_origin.0),
        _ => None,
    })
}

/// The L1 origin number of L2 block `first_block - 1`, the last block of
/// the channel before the one starting at `first_block`, from the records
/// (the tracker forgets finalized channels; a compacted list keeps it in
/// its base).
pub fn origin_before(records: &[DaRecord], first_block: u64) -> Option<u64> {
    records.iter().rev().find_map(|r| match r {
        DaRecord::Submitted { submission, .. } if submission.last_block + 1 == first_block => {
            Some(submission.last_l1_origin.0)
        }
        DaRecord::Base {
            first_block: base,
            parent_l1_origin,
            ..
        } if *base == first_block => Some(*parent_l1_origin),
        _ => None,
    })
}

/// `records` (everything logged, in order) compacted to what `tracker`
/// (resumed from them and pruned) still needs: a base record, then the
/// records of the channels it keeps. `None` when it keeps none.
pub fn compact(records: &[DaRecord], tracker: &Tracker) -> Option<Vec<DaRecord>> {
    let first = tracker.kept().next()?.submission.first_block;
    let kept: std::collections::HashSet<_> = tracker.kept().map(|p| p.channel).collect();
    let mut compacted = vec![DaRecord::Base {
        l1_start_block: l1_start_block(records).unwrap_or(0),
        first_block: first,
        parent_l1_origin: origin_before(records, first).unwrap_or(0),
    }];
    compacted.extend(
        records
            .iter()
            .filter(|r| r.channel().is_some_and(|c| kept.contains(&c)))
            .cloned(),
    );
    Some(compacted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submitted(id: u8, first: u64, last: u64, nonce: u64) -> DaRecord {
        DaRecord::Submitted {
            channel: [id; 16],
            submission: Submission {
                first_block: first,
                last_block: last,
                last_l1_origin: (100 + u64::from(id), B256::repeat_byte(id)),
                l1_nonce: nonce,
                l1_txs: vec![B256::repeat_byte(id)],
                fees: crate::post::BlobFees::from_market(1, 1, 1),
                recipe: crate::record::Recipe {
                    pending_blocks: (last - first + 1) as u32,
                    full: false,
                    blobs_per_tx: 6,
                },
            },
        }
    }

    fn included(id: u8, l1_block: u64) -> DaRecord {
        DaRecord::Included {
            channel: [id; 16],
            l1_block,
            l1_hash: B256::repeat_byte(l1_block as u8),
        }
    }

    #[test]
    fn channels_chain_without_gap_and_heads_follow_l1_depth() {
        let records = [
            submitted(1, 1, 10, 0),
            submitted(2, 11, 25, 1),
            included(1, 100),
            submitted(3, 26, 30, 2),
            included(2, 101),
        ];
        let tracker = Tracker::resume(1, &records).unwrap();
        assert_eq!(tracker.next_block(), 31);
        assert_eq!(
            tracker.last().unwrap().submission.last_l1_origin,
            (103, B256::repeat_byte(3))
        );
        assert_eq!(tracker.pending().count(), 1);
        assert_eq!(tracker.l2_head_at(99, 0), 0);
        assert_eq!(tracker.l2_head_at(100, 0), 10);
        assert_eq!(tracker.l2_head_at(500, 0), 25, "channel 3 is not in L1 yet");
    }

    /// A compacted list (a base, then the kept channels' records) resumes
    /// to the same tracker as the whole list once the older channels are
    /// pruned, and still gives the L1 start block and the span parent's
    /// origin of the first kept channel, also when that one is pending.
    #[test]
    fn a_compacted_list_resumes_to_the_pruned_tracker() {
        let records = [
            submitted(1, 1, 10, 0),
            included(1, 100),
            submitted(2, 11, 25, 1),
            included(2, 101),
            submitted(3, 26, 30, 2),
        ];
        // Channel 2 is kept (the last finalized while 3 is pending), and
        // then channel 3 alone (finalized ones all pruned).
        for (finalized, first_kept) in [(100, 11), (101, 26)] {
            let mut whole = Tracker::resume(1, &records).unwrap();
            assert!(whole.prune(finalized).is_some());
            let compacted = compact(&records, &whole).unwrap();
            assert!(matches!(
                compacted[0],
                DaRecord::Base { first_block, .. } if first_block == first_kept
            ));
            let resumed = Tracker::resume(1, &compacted).unwrap();
            assert_eq!(resumed.next_block(), whole.next_block());
            assert_eq!(resumed.l2_head_at(500, 0), whole.l2_head_at(500, 0));
            assert_eq!(
                resumed.kept().map(|p| p.channel).collect::<Vec<_>>(),
                whole.kept().map(|p| p.channel).collect::<Vec<_>>()
            );
            assert_eq!(l1_start_block(&compacted), l1_start_block(&records));
            for posted in resumed.kept() {
                let first = posted.submission.first_block;
                assert_eq!(
                    origin_before(&compacted, first),
                    origin_before(&records, first),
                    "span parent of the channel from {first}"
                );
            }
            // Compacting again (after more records) keeps the answers.
            let again = compact(&compacted, &resumed).unwrap();
            assert_eq!(
                origin_before(&again, first_kept),
                origin_before(&records, first_kept)
            );
            // A record of a forgotten channel after the base is refused.
            let mut stale = compacted.clone();
            stale.push(included(1, 100));
            assert!(Tracker::resume(1, &stale).is_err());
        }
    }

    #[test]
    fn gaps_and_changed_replacements_are_refused() {
        let mut tracker = Tracker::new(1);
        assert_eq!(
            tracker.apply(&submitted(1, 2, 10, 0)),
            Err(TrackerError::Gap {
                expected: 1,
                got: 2
            })
        );
        tracker.apply(&submitted(1, 1, 10, 0)).unwrap();
        assert_eq!(
            tracker.apply(&submitted(1, 1, 11, 0)),
            Err(TrackerError::Changed([1; 16]))
        );
        assert_eq!(
            tracker.apply(&included(9, 5)),
            Err(TrackerError::Unknown([9; 16]))
        );
    }

    #[test]
    fn a_replacement_and_a_reorg_make_a_channel_pending_again() {
        let mut tracker = Tracker::resume(1, &[submitted(1, 1, 10, 0), included(1, 100)]).unwrap();
        assert_eq!(tracker.l2_head_at(100, 0), 10);
        tracker
            .apply(&DaRecord::Dropped { channel: [1; 16] })
            .unwrap();
        assert_eq!(tracker.l2_head_at(100, 0), 0, "safe goes back");
        assert_eq!(tracker.pending().count(), 1);
        let mut replacement = submitted(1, 1, 10, 0);
        if let DaRecord::Submitted { submission, .. } = &mut replacement {
            submission.l1_txs[0] = B256::repeat_byte(0xee);
        }
        tracker.apply(&replacement).unwrap();
        assert_eq!(
            tracker.pending().next().unwrap().submission.l1_txs,
            vec![B256::repeat_byte(0xee)]
        );
        tracker.apply(&included(1, 104)).unwrap();
        assert_eq!(tracker.l2_head_at(104, 0), 10, "and forward again");
        assert_eq!(
            tracker.next_block(),
            11,
            "no duplicate: the next channel starts after it"
        );
    }

    #[test]
    fn pruning_keeps_the_last_channel_and_the_floor_keeps_the_heads() {
        let records = [
            submitted(1, 1, 10, 0),
            included(1, 100),
            submitted(2, 11, 20, 1),
            included(2, 101),
        ];
        let mut tracker = Tracker::resume(1, &records).unwrap();
        assert_eq!(tracker.prune(200), Some(10));
        assert_eq!(tracker.next_block(), 21);
        assert_eq!(tracker.l2_head_at(200, 10), 20);
        assert_eq!(tracker.prune(200), None, "the last channel stays");
    }
}
