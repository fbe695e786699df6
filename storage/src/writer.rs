//! The storage role: takes framed-record requests from the sequencer, writes
//! them with group commit (whatever arrived while a flush was in flight goes
//! into the next one) and reports how many records are durable.

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
const GROUP_RECORDS_MAX: usize = 8192;

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
        let mut group = vec![first];
        while group.len() < GROUP_RECORDS_MAX
            && let Some(Some(more)) = inbox.recv().now_or_never()
        {
            group.push(more);
        }
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
