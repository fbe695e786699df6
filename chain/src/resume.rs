//! Mini-blocks read back from the log, as subscribers saw them live: what
//! `eth_subscribe(..., {"fromMiniBlock": N})` replays before it hands off
//! to the live stream. Runs on any thread ([`fulmen_storage::reader`]
//! reads the log with `pread` while the storage core appends).
//!
//! A mini-block's receipts need its place in its block (transaction and
//! log indexes, cumulative gas), so reading starts at the first mini-block
//! of the requested one's block. The oldest mini-block that can be served
//! is the first one of the oldest block whose start the log still holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fulmen_storage::reader::{SegmentReader, segments_in};
use fulmen_storage::record::RecordKind;

use crate::block::ExecutedTx;
use crate::events::MiniBlockEvent;
use crate::persist::{
    MiniBlockRecord, SealRecord, decode_mini_block, decode_seal, peek_mini_block,
};
use crate::spec::EvmChain;

/// Why mini-blocks cannot be read from where they were asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The log no longer holds the start.
    #[error(
        "mini-block {requested} is pruned: the oldest available is {oldest} (resume from it, or read older history with eth_getBlockByNumber)"
    )]
    Pruned {
        /// What was asked for.
        requested: u64,
        /// The oldest mini-block that can be served.
        oldest: u64,
    },
    /// Past the newest durable mini-block and the next one.
    #[error("mini-block {requested} does not exist yet: the newest is {newest}")]
    Future {
        /// What was asked for.
        requested: u64,
        /// The newest durable mini-block.
        newest: u64,
    },
    /// The log could not be read.
    #[error("reading the log: {0}")]
    Io(String),
    /// The log does not hold what it should (a mini-block durable but not
    /// found, out of order, or not decodable).
    #[error("the log is damaged: {0}")]
    Damaged(String),
}

fn io(e: std::io::Error) -> ResumeError {
    ResumeError::Io(e.to_string())
}

/// The place in its block of the next mini-block read.
#[derive(Debug, Default, Clone, Copy)]
struct BlockPlace {
    number: u64,
    mini_blocks: u64,
    txs: u64,
    gas: u64,
    logs: u64,
}

/// Reads mini-blocks from the log in order, from a given number on.
#[derive(Debug)]
pub struct MiniBlockLog {
    dir: PathBuf,
    chain: EvmChain,
    cursor: SegmentReader,
    place: Option<BlockPlace>,
    /// The next mini-block to return.
    next: u64,
    /// The last mini-block read.
    last_read: Option<u64>,
    /// Mini-blocks of older blocks are skipped without being decoded.
    skip_below_block: u64,
    /// Where the first read looks for the start of the block of this
    /// mini-block, before it reads anything: a scan of up to a segment,
    /// left to the reader's thread (see [`Self::open`]).
    to_locate: Option<Locate>,
    /// A reader made by [`MiniBlockLog::with_seals`]: whether seal records
    /// are returned yet (they are once the mini-block before the first one
    /// returned was read). `None`: never.
    seals: Option<bool>,
}

/// A record of the log a replication stream sends.
// Returned once per record, moved at once into an event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum LogItem {
    /// A mini-block.
    MiniBlock(MiniBlockEvent),
    /// A block's seal.
    Seal(Box<SealRecord>),
}

/// The search [`MiniBlockLog::open`] leaves to the first read.
#[derive(Debug, Clone, Copy)]
struct Locate {
    /// The segment where the mini-block's block is looked for.
    segment: u64,
    /// The mini-block whose block is wanted.
    number: u64,
    /// The oldest mini-block served (for the pruned error).
    oldest: u64,
}

/// The number and block of segment `segment`'s first mini-block.
fn first_mini_block(dir: &Path, segment: u64) -> Result<Option<First>, ResumeError> {
    let mut reader = SegmentReader::open(dir, segment).map_err(io)?;
    while let Some((kind, payload)) = reader.peek().map_err(io)? {
        if kind == RecordKind::MiniBlock {
            let (block, number) =
                peek_mini_block(payload).map_err(|e| ResumeError::Damaged(e.to_string()))?;
            return Ok(Some((number, block)));
        }
        reader.advance();
    }
    Ok(None)
}

/// Whether segment `segment` exists and holds a record.
fn written(dir: &Path, segment: u64) -> Result<bool, ResumeError> {
    match SegmentReader::open(dir, segment) {
        Ok(mut reader) => Ok(reader.peek().map_err(io)?.is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(e)),
    }
}

/// The first mini-block of the first block that starts in `segment` (the
/// oldest segment left) or after it, or the segment's first when it is
/// segment 0 (the chain starts there).
fn oldest_servable(dir: &Path, segment: u64) -> Result<Option<u64>, ResumeError> {
    let mut reader = SegmentReader::open(dir, segment).map_err(io)?;
    let mut first_block = None;
    loop {
        let at = reader.segment();
        let Some((kind, payload)) = reader.peek().map_err(io)? else {
            // A block longer than the segment: its start is in a later one.
            if written(dir, at + 1)? {
                reader = SegmentReader::open(dir, at + 1).map_err(io)?;
                continue;
            }
            return Ok(None);
        };
        if kind == RecordKind::MiniBlock {
            let (block, number) =
                peek_mini_block(payload).map_err(|e| ResumeError::Damaged(e.to_string()))?;
            match first_block {
                None if segment == 0 => return Ok(Some(number)),
                None => first_block = Some(block),
                Some(b) if b != block => return Ok(Some(number)),
                Some(_) => {}
            }
        }
        reader.advance();
    }
}

/// A segment's first mini-block: its number and its block's.
type First = (u64, u64);

/// Segments' first mini-blocks, read once each.
struct Firsts<'a> {
    dir: &'a Path,
    segments: &'a [u64],
    read: std::collections::HashMap<usize, Option<First>>,
}

impl Firsts<'_> {
    /// The number and block of the first mini-block in segment `i`, or in
    /// the nearest one before it that holds one, with that segment's index.
    fn at(&mut self, i: usize) -> Result<Option<(usize, First)>, ResumeError> {
        for j in (0..=i).rev() {
            let first = match self.read.get(&j) {
                Some(first) => *first,
                None => {
                    let first = first_mini_block(self.dir, self.segments[j])?;
                    self.read.insert(j, first);
                    first
                }
            };
            if let Some(first) = first {
                return Ok(Some((j, first)));
            }
        }
        Ok(None)
    }

    /// The last segment whose first mini-block satisfies `before`, a test
    /// true for a prefix of the segments (a binary search: a long log is
    /// not read segment by segment). Segments without a mini-block count
    /// as the one before them.
    fn last(&mut self, before: impl Fn((u64, u64)) -> bool) -> Result<Option<usize>, ResumeError> {
        let (mut low, mut high) = (0, self.segments.len());
        while low < high {
            let mid = (low + high) / 2;
            if self.at(mid)?.is_some_and(|(_, first)| before(first)) {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        match low.checked_sub(1) {
            Some(i) => Ok(self.at(i)?.map(|(j, _)| j)),
            None => Ok(None),
        }
    }
}

impl MiniBlockLog {
    /// A reader of the log in `dir` that returns mini-block `from` first
    /// (`from` 0 reads as 1). `newest` is the newest durable mini-block:
    /// `from` may be at most one past it (then nothing is read until more
    /// is durable).
    pub fn open(dir: &Path, chain: EvmChain, from: u64, newest: u64) -> Result<Self, ResumeError> {
        let from = from.max(1);
        if from > newest + 1 {
            return Err(ResumeError::Future {
                requested: from,
                newest,
            });
        }
        let segments = segments_in(dir).map_err(io)?;
        let Some(&oldest_segment) = segments.first() else {
            return Err(ResumeError::Damaged("the log has no segment".into()));
        };
        // Where the block of `from` (or of the newest, when `from` is not
        // durable yet) starts.
        let locate = from.min(newest);
        if locate == 0 {
            return Self::at_segment(dir, chain, from, oldest_segment);
        }
        let oldest = oldest_servable(dir, oldest_segment)?;
        let pruned = ResumeError::Pruned {
            requested: from,
            oldest: oldest.unwrap_or(newest + 1),
        };
        if oldest.is_none_or(|oldest| from < oldest) {
            return Err(pruned);
        }
        let mut firsts = Firsts {
            dir,
            segments: &segments,
            read: Default::default(),
        };
        let Some(i) = firsts.last(|(number, _)| number <= locate)? else {
            return Err(pruned);
        };
        // The scan for the block's start reads up to a segment: it is left
        // to the first read, which runs on the reader's thread, not on the
        // net core that answers `eth_subscribe`.
        let mut log = Self::at_segment(dir, chain, from, segments[i])?;
        log.to_locate = Some(Locate {
            segment: segments[i],
            number: locate,
            oldest: oldest.unwrap_or(newest + 1),
        });
        Ok(log)
    }

    /// Puts the cursor at the start of the block of the mini-block that
    /// `locate` names.
    fn locate(&mut self, locate: Locate) -> Result<(), ResumeError> {
        let dir = self.dir.clone();
        let (block, start) = Self::block_of(&dir, locate.segment, locate.number)?;
        if let Some((segment, offset)) = start {
            self.cursor = SegmentReader::open(&dir, segment).map_err(io)?;
            self.cursor.seek(offset);
            return Ok(());
        }
        // The block may start in an older segment: read from the last one
        // that starts with an older block (its records of older blocks are
        // skipped undecoded).
        let segments = segments_in(&dir).map_err(io)?;
        let mut firsts = Firsts {
            dir: &dir,
            segments: &segments,
            read: Default::default(),
        };
        let start = match firsts.last(|(_, b)| b < block)? {
            Some(i) => segments[i],
            None if segments.first() == Some(&0) => 0,
            None => {
                return Err(ResumeError::Pruned {
                    requested: self.next,
                    oldest: locate.oldest,
                });
            }
        };
        self.cursor = SegmentReader::open(&dir, start).map_err(io)?;
        self.skip_below_block = block;
        Ok(())
    }

    fn at_segment(
        dir: &Path,
        chain: EvmChain,
        from: u64,
        segment: u64,
    ) -> Result<Self, ResumeError> {
        Ok(Self {
            dir: dir.to_path_buf(),
            chain,
            cursor: SegmentReader::open(dir, segment).map_err(io)?,
            place: None,
            next: from,
            last_read: None,
            skip_below_block: 0,
            to_locate: None,
            seals: None,
        })
    }

    /// The block of mini-block `number` (or of the last one before it in
    /// the segment and the log after it), read from `segment` on, and where
    /// that block's first mini-block record is when the read saw its start
    /// (a mini-block of an older block before it).
    fn block_of(
        dir: &Path,
        segment: u64,
        number: u64,
    ) -> Result<(u64, Option<(u64, u64)>), ResumeError> {
        let mut block = None;
        let mut start = None;
        let mut reader = SegmentReader::open(dir, segment).map_err(io)?;
        loop {
            let at = reader.segment();
            let offset = reader.offset();
            match reader.peek().map_err(io)? {
                Some((RecordKind::MiniBlock, payload)) => {
                    let (b, n) = peek_mini_block(payload)
                        .map_err(|e| ResumeError::Damaged(e.to_string()))?;
                    if n > number {
                        break;
                    }
                    if block.is_some_and(|older| older < b) {
                        start = Some((at, offset));
                    }
                    block = Some(b);
                    if n == number {
                        break;
                    }
                }
                Some(_) => {}
                None if written(dir, at + 1)? => {
                    reader = SegmentReader::open(dir, at + 1).map_err(io)?;
                    continue;
                }
                None => break,
            }
            reader.advance();
        }
        let block =
            block.ok_or_else(|| ResumeError::Damaged(format!("mini-block {number} not found")))?;
        Ok((block, start))
    }

    /// The next mini-block it returns.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Returns nothing before mini-block `next` (sent by other means); the
    /// reading goes on from where it is.
    pub fn skip_to(&mut self, next: u64) {
        self.next = self.next.max(next);
    }

    /// The next mini-block if its number is at most `until` (every
    /// mini-block up to `until` must be durable); `None` once `until` is
    /// reached.
    pub fn next_until(&mut self, until: u64) -> Result<Option<MiniBlockEvent>, ResumeError> {
        if self.next > until {
            return Ok(None);
        }
        loop {
            match self.next_item(until, 0)? {
                Some(LogItem::MiniBlock(event)) => return Ok(Some(event)),
                Some(LogItem::Seal(_)) => {}
                None => return Ok(None),
            }
        }
    }

    /// A reader that also returns the block seals: every mini-block and
    /// seal record logged after mini-block `from - 1`'s (from the log's
    /// start when `from` is 0 or 1), in log order. This is what a replica
    /// needs to resume: the seals of its blocks not sealed yet all follow
    /// the last mini-block of its sealed ones.
    pub fn with_seals(
        dir: &Path,
        chain: EvmChain,
        from: u64,
        newest: u64,
    ) -> Result<Self, ResumeError> {
        let from = from.max(1);
        if from > newest + 1 {
            return Err(ResumeError::Future {
                requested: from,
                newest,
            });
        }
        let mut log = if from == 1 {
            let segments = segments_in(dir).map_err(io)?;
            if segments.first() != Some(&0) {
                let oldest = match segments.first() {
                    Some(&first) => oldest_servable(dir, first)?.map_or(newest + 1, |o| o + 1),
                    None => newest + 1,
                };
                return Err(ResumeError::Pruned {
                    requested: 1,
                    oldest,
                });
            }
            let mut log = Self::at_segment(dir, chain, 1, 0)?;
            log.seals = Some(true);
            log
        } else {
            let mut log = Self::open(dir, chain, from - 1, newest).map_err(|e| match e {
                // The record before `from` must be there too.
                ResumeError::Pruned { oldest, .. } => ResumeError::Pruned {
                    requested: from,
                    oldest: oldest + 1,
                },
                other => other,
            })?;
            log.seals = Some(false);
            log
        };
        log.next = from;
        Ok(log)
    }

    /// The next record for a reader made [`Self::with_seals`] (seals only
    /// there): a mini-block up to `until` or a seal of a block up to
    /// `until_seal`, both durable; `None` at the first record past them or
    /// at the end of what is written once `until` is read.
    pub fn next_item(
        &mut self,
        until: u64,
        until_seal: u64,
    ) -> Result<Option<LogItem>, ResumeError> {
        if let Some(locate) = self.to_locate.take() {
            self.locate(locate)?;
        }
        loop {
            let at = (self.cursor.segment(), self.cursor.offset());
            let damaged = move |e: crate::persist::PayloadError| {
                ResumeError::Damaged(format!("segment {} offset {}: {e}", at.0, at.1))
            };
            let Some((kind, payload)) = self.cursor.peek().map_err(io)? else {
                // The rest is in later segments, if the next one was
                // written (the writer fills segments in order).
                let next = self.cursor.segment() + 1;
                if written(&self.dir, next)? {
                    self.cursor = SegmentReader::open(&self.dir, next).map_err(io)?;
                    continue;
                }
                if self.next > until {
                    return Ok(None);
                }
                return Err(ResumeError::Damaged(format!(
                    "mini-block {} (up to {until} durable) is not in the log after segment {} offset {}",
                    self.next,
                    self.cursor.segment(),
                    self.cursor.offset()
                )));
            };
            match kind {
                RecordKind::MiniBlock => {
                    let (block, number) = peek_mini_block(payload).map_err(damaged)?;
                    if number >= self.next && number > until {
                        return Ok(None);
                    }
                    if block < self.skip_below_block {
                        self.cursor.advance();
                        continue;
                    }
                    let record = decode_mini_block(payload).map_err(damaged)?;
                    self.cursor.advance();
                    if let Some(event) = self.take(record)? {
                        return Ok(Some(LogItem::MiniBlock(event)));
                    }
                }
                RecordKind::BlockSeal if self.seals == Some(true) => {
                    let record = decode_seal(payload).map_err(damaged)?;
                    if record.header.number > until_seal {
                        return Ok(None);
                    }
                    self.cursor.advance();
                    return Ok(Some(LogItem::Seal(Box::new(record))));
                }
                _ => self.cursor.advance(),
            }
        }
    }

    /// A mini-block record read in order: its event when it is the next
    /// one to return, `None` when it comes before it.
    fn take(&mut self, record: MiniBlockRecord) -> Result<Option<MiniBlockEvent>, ResumeError> {
        if let Some(last) = self.last_read
            && record.number != last + 1
        {
            return Err(ResumeError::Damaged(format!(
                "mini-block {} follows mini-block {last}",
                record.number
            )));
        }
        self.last_read = Some(record.number);
        let event = self.event(record);
        if self.seals.is_some() && event.number + 1 == self.next {
            // Seals after this one's record belong to the stream.
            self.seals = Some(true);
        }
        if event.number < self.next {
            return Ok(None);
        }
        if event.number > self.next {
            return Err(ResumeError::Damaged(format!(
                "mini-block {} is not in the log (the next one read is {})",
                self.next, event.number
            )));
        }
        self.next += 1;
        Ok(Some(event))
    }

    /// The live event `record` made, its receipts placed in its block.
    fn event(&mut self, record: MiniBlockRecord) -> MiniBlockEvent {
        let ctx = record.ctx;
        let place = match self.place {
            Some(place) if place.number == ctx.number => place,
            _ => BlockPlace {
                number: ctx.number,
                ..BlockPlace::default()
            },
        };
        let mut next = place;
        next.mini_blocks += 1;
        let spec = self.chain.spec_at(ctx.timestamp);
        let hash = record.hash();
        let mut txs = Vec::with_capacity(record.txs.len());
        let mut diffs = Vec::with_capacity(record.txs.len());
        for logged in record.txs {
            let tx =
                crate::tx::from_logged(logged.envelope, logged.sender, logged.encoded_len, spec);
            next.gas += logged.gas_used;
            let logs = logged.logs.len() as u64;
            txs.push(Arc::new(ExecutedTx {
                effective_gas_price: tx.effective_gas_price(ctx.base_fee),
                tx,
                success: logged.success,
                gas_used: logged.gas_used,
                cumulative_gas_used: next.gas,
                logs: logged.logs,
                contract_address: logged.contract_address,
                block_number: ctx.number,
                block_timestamp: ctx.timestamp,
                index: next.txs,
                first_log_index: next.logs,
                mini_block: record.number,
            }));
            diffs.push(logged.diff);
            next.txs += 1;
            next.logs += logs;
        }
        self.place = Some(next);
        MiniBlockEvent {
            number: record.number,
            block: ctx.number,
            block_timestamp: ctx.timestamp,
            index: place.mini_blocks,
            timestamp_us: record.timestamp_us,
            gas_used: next.gas - place.gas,
            txs,
            diffs,
            net: record.net,
            parent_hash: record.parent,
            hash,
            ctx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockContext;
    use crate::mini_block::NetChanges;
    use crate::persist::{MiniBlockMeta, encode_mini_block};
    use alloy_primitives::B256;
    use fulmen_storage::log::segment_name;

    /// Writes segments of mini-blocks (number, block) as the log would;
    /// number 0 is the seal of that block.
    fn write_log(dir: &Path, segments: &[&[(u64, u64)]]) {
        std::fs::create_dir_all(dir).unwrap();
        let net = NetChanges::default();
        for (segment, minis) in segments.iter().enumerate() {
            let mut bytes = Vec::new();
            for &(number, block) in *minis {
                if number == 0 {
                    let header = alloy_consensus::Header {
                        number: block,
                        ..Default::default()
                    };
                    let mut payload = Vec::new();
                    crate::persist::encode_seal(&header, 500, &mut payload);
                    fulmen_storage::record::encode(RecordKind::BlockSeal, &payload, &mut bytes)
                        .unwrap();
                    continue;
                }
                let ctx = BlockContext {
                    number: block,
                    timestamp: 1_000 + block,
                    base_fee: 7,
                    gas_limit: 30_000_000,
                    coinbase: Default::default(),
                    prevrandao: B256::ZERO,
                };
                let meta = MiniBlockMeta {
                    number,
                    timestamp_us: number * 10_000,
                    parent: B256::repeat_byte(number as u8),
                    net: &net,
                };
                let mut payload = Vec::new();
                encode_mini_block(&ctx, meta, &[], &[], &mut payload);
                fulmen_storage::record::encode(RecordKind::MiniBlock, &payload, &mut bytes)
                    .unwrap();
            }
            bytes.resize(bytes.len() + 4096, 0);
            std::fs::write(dir.join(segment_name(segment as u64)), bytes).unwrap();
        }
    }

    fn chain() -> EvmChain {
        EvmChain {
            chain_id: 1,
            osaka_time: None,
        }
    }

    /// (number, block, index) of what `log` returns up to `until`.
    fn read(log: &mut MiniBlockLog, until: u64) -> Vec<(u64, u64, u64)> {
        std::iter::from_fn(|| log.next_until(until).unwrap())
            .map(|e| (e.number, e.block, e.index))
            .collect()
    }

    /// What a reader made with seals returns up to the bounds: mini-block
    /// numbers, and seals as `1000 + block`.
    fn items(log: &mut MiniBlockLog, until: u64, until_seal: u64) -> Vec<u64> {
        std::iter::from_fn(|| log.next_item(until, until_seal).unwrap())
            .map(|item| match item {
                LogItem::MiniBlock(e) => e.number,
                LogItem::Seal(s) => 1000 + s.header.number,
            })
            .collect()
    }

    #[test]
    fn a_replication_read_returns_every_record_after_the_one_before_its_start() {
        let dir = std::env::temp_dir().join(format!("fulmen-resume-seals-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Seals of blocks 0 and 1 follow the next block's first mini-block.
        write_log(
            &dir,
            &[
                &[(0, 0), (1, 1), (2, 2), (0, 1), (3, 2)],
                &[(0, 2), (4, 3), (0, 3)],
            ],
        );
        let mut log = MiniBlockLog::with_seals(&dir, chain(), 1, 4).unwrap();
        assert_eq!(
            items(&mut log, 4, 3),
            vec![1000, 1, 2, 1001, 3, 1002, 4, 1003]
        );
        // From 3: after mini-block 2's record, so block 1's seal too.
        let mut log = MiniBlockLog::with_seals(&dir, chain(), 3, 4).unwrap();
        assert_eq!(items(&mut log, 4, 2), vec![1001, 3, 1002, 4]);
        // Then the rest, once block 3's seal is durable.
        assert_eq!(items(&mut log, 4, 3), vec![1003]);
        // Up to a mini-block: its trailing seals, not the next mini-block.
        let mut log = MiniBlockLog::with_seals(&dir, chain(), 2, 4).unwrap();
        assert_eq!(items(&mut log, 3, u64::MAX), vec![2, 1001, 3, 1002]);
        assert_eq!(
            MiniBlockLog::with_seals(&dir, chain(), 6, 4).unwrap_err(),
            ResumeError::Future {
                requested: 6,
                newest: 4
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_resume_finds_its_block_across_segments_and_names_the_oldest_kept() {
        let dir = std::env::temp_dir().join(format!("fulmen-resume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Block 2 spans segments 0 and 1; block 5 spans 2 and 3.
        write_log(
            &dir,
            &[
                &[(1, 1), (2, 1), (3, 2)],
                &[(4, 2), (5, 2)],
                &[(6, 3), (7, 4), (8, 5)],
                &[(9, 5), (10, 6)],
            ],
        );
        let mut log = MiniBlockLog::open(&dir, chain(), 5, 10).unwrap();
        assert_eq!(read(&mut log, 7), vec![(5, 2, 2), (6, 3, 0), (7, 4, 0)]);
        assert_eq!(read(&mut log, 10), vec![(8, 5, 0), (9, 5, 1), (10, 6, 0)]);
        let mut log = MiniBlockLog::open(&dir, chain(), 9, 10).unwrap();
        assert_eq!(read(&mut log, 10), vec![(9, 5, 1), (10, 6, 0)]);
        let mut log = MiniBlockLog::open(&dir, chain(), 0, 10).unwrap();
        assert_eq!(read(&mut log, 2), vec![(1, 1, 0), (2, 1, 1)]);
        // One past the newest waits for it; further is refused.
        let mut log = MiniBlockLog::open(&dir, chain(), 11, 10).unwrap();
        assert_eq!(read(&mut log, 10), vec![]);
        assert_eq!(
            MiniBlockLog::open(&dir, chain(), 12, 10).unwrap_err(),
            ResumeError::Future {
                requested: 12,
                newest: 10
            }
        );
        // Segments 0 and 1 pruned: what is left may start inside block 3
        // (nothing says where it began), so block 4 is the oldest whole one.
        std::fs::remove_file(dir.join(segment_name(0))).unwrap();
        std::fs::remove_file(dir.join(segment_name(1))).unwrap();
        let pruned = |from| MiniBlockLog::open(&dir, chain(), from, 10).unwrap_err();
        assert_eq!(
            pruned(5),
            ResumeError::Pruned {
                requested: 5,
                oldest: 7
            }
        );
        assert_eq!(
            pruned(6),
            ResumeError::Pruned {
                requested: 6,
                oldest: 7
            }
        );
        let mut log = MiniBlockLog::open(&dir, chain(), 7, 10).unwrap();
        assert_eq!(read(&mut log, 8), vec![(7, 4, 0), (8, 5, 0)]);
        std::fs::remove_file(dir.join(segment_name(2))).unwrap();
        // Segment 3 starts inside block 5: its first block start is 10.
        assert_eq!(
            pruned(9),
            ResumeError::Pruned {
                requested: 9,
                oldest: 10
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
