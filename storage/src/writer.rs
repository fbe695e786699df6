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

/// Runs the storage role until the inbox closes.
pub async fn run_writer<D: LogDir + Clone + 'static>(
    mut log: Log<D>,
    inbox: ConnectedReceiver<AppendRequest>,
    acks: ConnectedSender<StorageAck>,
) {
    let mut appended = 0u64;
    let mut failed = false;
    // The next segment, being zero-filled by its own task so that rotation
    // never writes a segment of zeros in the flush path.
    let mut preparing: Option<(u64, glommio::task::JoinHandle<std::io::Result<D::File>>)> = None;
    while let Some(first) = inbox.recv().await {
        let mut group_bytes = first.payload.len();
        let mut group = vec![first];
        while group.len() < GROUP_RECORDS_MAX
            && group_bytes < GROUP_BYTES_MAX
            && let Some(Some(more)) = inbox.recv().now_or_never()
        {
            group_bytes += more.payload.len();
            group.push(more);
        }
        assert!(group.len() <= GROUP_RECORDS_MAX);
        if failed {
            continue;
        }
        let count = group.len() as u64;
        let mut outcome = Ok(());
        for request in &group {
            if let Err(e) = log.append(request.kind, &request.payload) {
                outcome = Err(e);
                break;
            }
        }
        if outcome.is_ok()
            && log.may_rotate()
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
        let began = Instant::now();
        let outcome = match outcome {
            Ok(()) => log.flush().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let ack = match outcome {
            Ok(()) => {
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
        if let Some((segment, task)) = &mut preparing
            && let Some(done) = (&mut *task).now_or_never()
        {
            match done {
                Some(Ok(file)) => log.set_next(*segment, file),
                Some(Err(e)) => {
                    tracing::warn!(segment = *segment, error = %e, "cannot make the next log segment ahead of need; rotation will try again")
                }
                None => {}
            }
            preparing = None;
        }
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
