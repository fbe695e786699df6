//! The storage role: takes framed-record requests from the sequencer, writes
//! them with group commit (whatever arrived while a flush was in flight goes
//! into the next one, up to [`GROUP_RECORDS_MAX`] records and
//! [`GROUP_BYTES_MAX`] bytes) and reports how many records are durable.
//!
//! A group whose records do not fit the rest of the current segment is
//! written as several batches, each with its own flush, moving to the next
//! segment between them ([`Log::flush`]); the group is acknowledged once all
//! are durable. Acknowledgements are cumulative and in order. Every record
//! up to [`Log::record_payload_bytes_max`] is written: the sequencer bounds
//! what it sends with the same function, so an append error here is a bug
//! or a failing disk, never a user's oversized transaction.

use std::time::Instant;

use futures::FutureExt;
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};

use crate::log::{Log, LogDir};
use crate::record::RecordKind;

/// One record to append.
#[derive(Debug)]
pub struct AppendRequest {
    /// Kind.
    pub kind: RecordKind,
    /// Payload.
    pub payload: Vec<u8>,
}

/// What the storage role reports, in order.
#[derive(Debug, Clone)]
pub enum StorageAck {
    /// The first `records` requests ever sent are durable.
    Durable {
        /// Count of durable records since start.
        records: u64,
        /// How long the write and fdatasync took, in µs.
        flush_us: u64,
    },
    /// The log failed: nothing after the last `Durable` count will ever be
    /// durable in this process.
    Failed(String),
}

/// Most records one group commit takes, so that acknowledgements keep flowing
/// under a flood.
pub const GROUP_RECORDS_MAX: usize = 8192;
/// A group commit takes no more record once its payloads reach this many
/// bytes (it always takes at least one record, however large), so that a
/// flood of big records keeps the batch buffer and each flush bounded.
pub const GROUP_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The next segment, being zero-filled by its own task so that rotation
/// never writes a segment of zeros in the flush path.
type Preparing<F> = Option<(u64, glommio::task::JoinHandle<std::io::Result<F>>)>;

/// Runs the storage role until the inbox closes.
pub async fn run_writer<D: LogDir + Clone + 'static>(
    mut log: Log<D>,
    inbox: ConnectedReceiver<AppendRequest>,
    acks: ConnectedSender<StorageAck>,
) {
    let mut appended = 0u64;
    let mut failed = false;
    let mut preparing: Preparing<D::File> = None;
    while let Some(first) = inbox.recv().await {
        let group = take_group(first, &inbox);
        if failed {
            continue;
        }
        let count = group.len() as u64;
        let began = Instant::now();
        let before = log.durable_position();
        let ack = match write_group(&mut log, &group, &mut preparing).await {
            Ok(()) => {
                assert!(log.durable_position() > before);
                appended += count;
                StorageAck::Durable {
                    records: appended,
                    flush_us: began.elapsed().as_micros() as u64,
                }
            }
            Err(e) => {
                failed = true;
                tracing::error!(error = %e, durable_records = appended, "the log failed: the node stops preconfirming; every durable record is intact; restart to recover");
                StorageAck::Failed(e.to_string())
            }
        };
        if acks.send(ack).await.is_err() {
            return;
        }
        adopt_if_ready(&mut log, &mut preparing);
        if !failed && preparing.is_none() && log.wants_next() {
            let dir = log.dir().clone();
            let segment = log.next_segment();
            let bytes = log.segment_bytes();
            let task = glommio::spawn_local(async move {
                dir.create(&crate::log::segment_name(segment), bytes).await
            })
            .detach();
            preparing = Some((segment, task));
        }
    }
}

/// `first` and whatever else already waits in `inbox`, up to
/// [`GROUP_RECORDS_MAX`] records and [`GROUP_BYTES_MAX`] bytes (at least
/// one record, however large).
fn take_group(
    first: AppendRequest,
    inbox: &ConnectedReceiver<AppendRequest>,
) -> Vec<AppendRequest> {
    let mut group_bytes = first.payload.len();
    let mut group = vec![first];
    while group.len() < GROUP_RECORDS_MAX
        && group_bytes < GROUP_BYTES_MAX
        && let Some(Some(more)) = inbox.recv().now_or_never()
    {
        group_bytes += more.payload.len();
        group.push(more);
    }
    assert!(!group.is_empty());
    assert!(group.len() <= GROUP_RECORDS_MAX);
    let last_bytes = group.last().map_or(0, |r| r.payload.len());
    assert!(group_bytes - last_bytes < GROUP_BYTES_MAX);
    group
}

/// Appends `group` and flushes it (every batch of it durable on return).
/// A segment prepared ahead of need is handed to the log first when the
/// group moves to the next segment.
async fn write_group<D: LogDir>(
    log: &mut Log<D>,
    group: &[AppendRequest],
    preparing: &mut Preparing<D::File>,
) -> Result<(), crate::log::LogError> {
    for request in group {
        log.append(request.kind, &request.payload)?;
    }
    if log.may_rotate()
        && let Some((segment, task)) = preparing.take()
    {
        // Never let rotation and the ahead-of-need task make one file twice.
        match task.await {
            Some(Ok(file)) => log.set_next(segment, file),
            Some(Err(e)) => {
                tracing::warn!(segment, error = %e, "cannot make the next log segment")
            }
            None => {}
        }
    }
    log.flush().await.map(|_| ())
}

/// Hands the segment prepared ahead of need to the log once it is made.
fn adopt_if_ready<D: LogDir>(log: &mut Log<D>, preparing: &mut Preparing<D::File>) {
    if let Some((segment, task)) = preparing
        && let Some(done) = (&mut *task).now_or_never()
    {
        match done {
            Some(Ok(file)) => log.set_next(*segment, file),
            Some(Err(e)) => {
                tracing::warn!(segment = *segment, error = %e, "cannot make the next log segment ahead of need; rotation will try again")
            }
            None => {}
        }
        *preparing = None;
    }
}

#[cfg(test)]
mod tests {
    use glommio::channels::shared_channel;

    use super::*;
    use crate::io::SimDisk;
    use crate::log::read_log;

    /// Records of the largest size, sent faster than they are flushed, make
    /// groups larger than a segment: every one is written, and the
    /// acknowledgements are cumulative, in order, and reach the total.
    #[test]
    fn groups_larger_than_a_segment_are_written_and_acknowledged_in_order() {
        const SEGMENT_BYTES: u64 = 8 * 1024;
        const RECORDS: u64 = 40;
        let (acks, disk_records) = glommio::LocalExecutorBuilder::default()
            .spawn(|| async move {
                let disk = SimDisk::new(21, 1 << 24);
                let (log, _) = Log::open(disk.clone(), SEGMENT_BYTES).await.unwrap();
                let max = log.record_payload_bytes_max();
                let (append_tx, append_rx) = shared_channel::new_bounded(128);
                let (ack_tx, ack_rx) = shared_channel::new_bounded(128);
                let (append_tx, append_rx) =
                    futures::join!(append_tx.connect(), append_rx.connect());
                let (ack_tx, ack_rx) = futures::join!(ack_tx.connect(), ack_rx.connect());
                // Queued before the writer runs: its first group takes many.
                for i in 0..RECORDS {
                    let len = if i % 3 == 0 {
                        max
                    } else {
                        1 + (i as usize * 997) % max
                    };
                    append_tx
                        .try_send(AppendRequest {
                            kind: RecordKind::MiniBlock,
                            payload: vec![i as u8; len],
                        })
                        .unwrap();
                }
                drop(append_tx);
                glommio::spawn_local(run_writer(log, append_rx, ack_tx)).detach();
                let mut acks = Vec::new();
                while let Some(ack) = ack_rx.recv().await {
                    match ack {
                        StorageAck::Durable { records, .. } => acks.push(records),
                        StorageAck::Failed(why) => panic!("{why}"),
                    }
                }
                let (recovery, _) = read_log(&disk).unwrap();
                let records: Vec<(u8, usize)> = recovery
                    .records
                    .iter()
                    .map(|r| (r.2[0], r.2.len()))
                    .collect();
                (acks, records)
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(acks.windows(2).all(|w| w[0] < w[1]), "{acks:?}");
        assert_eq!(acks.last(), Some(&RECORDS));
        assert!(
            acks.len() < RECORDS as usize,
            "groups of several records: {acks:?}"
        );
        assert_eq!(disk_records.len() as u64, RECORDS);
        for (i, (byte, _)) in disk_records.iter().enumerate() {
            assert_eq!(*byte, i as u8);
        }
    }
}
