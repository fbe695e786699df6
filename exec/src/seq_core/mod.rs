//! The seq and state-root roles as glommio tasks. Every channel is bounded.
//!
//! The seq role is a few actors ([`actors`]) over one [`state::SeqState`]:
//! transactions from the net cores, the block timer, the state-root
//! worker's roots, the log's acknowledgements and control messages. What
//! may be shown only once durable is kept by [`durability::Durability`].

mod actors;
mod durability;
mod linger;
mod state;
mod timing;
mod upstream;

pub use timing::{
    LOG_RECORDS_IN_FLIGHT_MAX, MINI_BLOCK_TXS_MAX, STORAGE_QUEUE_CAPACITY, SeqTiming, now_ms,
};

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::channel::mpsc;
use futures::{StreamExt, stream::select_all};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};

use fulmen_chain::block::{SealJob, SealRoots};
use fulmen_chain::events::EventBus;
use fulmen_chain::msg::{MerkleRequest, SeqControl, SeqRequest};
use fulmen_chain::view::ChainView;
use fulmen_storage::checkpoint::CheckpointJob;
use fulmen_storage::writer::{AppendRequest, StorageAck};

use crate::seal::{Merkleizer, SealProgress};
use crate::sequencer::Sequencer;
use durability::Durability;
use state::{LogSide, SeqState};

/// How the seq role reaches the storage role.
pub struct LogLink {
    /// Records to append.
    pub to_storage: ConnectedSender<AppendRequest>,
    /// Acknowledgements, in order.
    pub acks: ConnectedReceiver<StorageAck>,
    /// `durable`: replies and views are released once their record is
    /// flushed. `memory`: right after execution (the log is still written).
    pub durable: bool,
    /// Where checkpoint jobs go, and every how many blocks (0: never).
    pub checkpoints: Option<(ConnectedSender<CheckpointJob>, u64)>,
    /// The history writer: published sealed blocks go there, from the
    /// first one its store does not hold.
    pub history: Option<std::sync::mpsc::SyncSender<Arc<fulmen_chain::block::SealedBlock>>>,
    /// The DA-progress records replayed at boot, in log order: each
    /// checkpoint marker carries them and those logged since.
    pub da_records: Vec<Vec<u8>>,
}

/// Everything the seq role is connected to.
pub struct SeqLinks {
    /// One inbox per net core.
    pub inboxes: Vec<ConnectedReceiver<SeqRequest>>,
    /// Control messages (subscribers, shutdown).
    pub control: mpsc::Receiver<SeqControl>,
    /// Seal jobs to the state-root worker.
    pub to_merkle: ConnectedSender<MerkleRequest>,
    /// Its roots, in block order.
    pub from_merkle: ConnectedReceiver<SealRoots>,
    /// Where readers find the latest view.
    pub published: Arc<ArcSwap<ChainView>>,
    /// Where durable events go.
    pub events: EventBus,
    /// The log, unless the node keeps none.
    pub log: Option<LogLink>,
    /// A verifier's blocks derived from L1: blocks close when one is
    /// executed, not on the block timer (and `inboxes` is empty).
    pub derived: Option<mpsc::Receiver<fulmen_chain::msg::DerivedBlock>>,
    /// A replica's records from its upstream: mini-blocks and blocks close
    /// as the upstream's did (and `inboxes` is not read).
    pub upstream: Option<mpsc::Receiver<fulmen_chain::msg::Upstream>>,
}

/// Runs the seq role on the current executor until every inbox closes.
/// `pending` are blocks closed before a restart and not yet sealed; they go
/// to the state-root worker first.
pub async fn run_seq(seq: Sequencer, links: SeqLinks, timing: SeqTiming, pending: Vec<SealJob>) {
    let (log, acks) = match links.log {
        Some(link) => {
            let every = link.checkpoints.as_ref().map_or(0, |(_, every)| *every);
            let next = seq.view().history().map_or(0, |h| h.len());
            let side = LogSide {
                to_storage: link.to_storage,
                to_checkpoints: link.checkpoints.map(|(to, _)| to),
                book: Durability::new(link.durable, every),
                history: link.history.map(|to| state::HistoryFeed {
                    to,
                    next,
                    gone: false,
                }),
                da_records: link.da_records,
            };
            (Some(side), Some(link.acks))
        }
        None => (None, None),
    };
    let mini_block_max = Duration::from_millis(timing.mini_block_max_ms);
    // Replicas and verifiers close mini-blocks as their source did.
    let linger_max = if links.upstream.is_some() || links.derived.is_some() {
        Duration::ZERO
    } else {
        Duration::from_micros(timing.group_commit_us)
    };
    let linger_wake = Rc::new(glommio::sync::Semaphore::new(0));
    let state = Rc::new(RefCell::new(SeqState::new(
        seq,
        (links.published, links.events),
        links.control,
        log,
        (mini_block_max, linger_max),
        linger_wake.clone(),
    )));
    for job in pending {
        if links
            .to_merkle
            .send(MerkleRequest::Seal(job))
            .await
            .is_err()
        {
            tracing::error!("state-root worker is gone; sealing stops");
        }
    }
    // Woken when the log reports progress, for a seq loop that waits for room.
    let progress = Rc::new(glommio::sync::Semaphore::new(0));
    let acker = acks.map(|acks| {
        glommio::spawn_local(actors::apply_acks(state.clone(), acks, progress.clone()))
    });
    // Woken at each seal, for a verifier that executes one block at a time.
    let sealed = Rc::new(glommio::sync::Semaphore::new(0));
    let finisher = glommio::spawn_local(actors::finish_seals(
        state.clone(),
        links.from_merkle,
        sealed.clone(),
    ));
    let control = glommio::spawn_local(actors::obey_control(state.clone()));
    if let Some(upstream) = links.upstream {
        state.borrow_mut().replica = true;
        upstream::take_upstream(state, upstream, links.to_merkle, progress, sealed).await;
        // Serve what was replicated until the process ends.
        futures::future::pending::<()>().await;
    } else if let Some(derived) = links.derived {
        state.borrow_mut().verifier = true;
        actors::take_derived(state, derived, links.to_merkle, progress, sealed).await;
        // Serve what was derived until the process ends.
        futures::future::pending::<()>().await;
    } else {
        let period = Duration::from_millis(timing.block_time_ms.max(1));
        let sealer =
            glommio::spawn_local(actors::close_blocks(state.clone(), links.to_merkle, period));
        let inboxes = select_all(links.inboxes);
        actors::take_requests(state, inboxes, (progress, linger_wake), mini_block_max).await;
        sealer.cancel().await;
    }
    finisher.cancel().await;
    control.cancel().await;
    if let Some(acker) = acker {
        acker.cancel().await;
    }
}

/// Work units (diffs, accounts, trie nodes, transactions) between two yields.
const SEAL_STEP_ITEMS: usize = 512;

/// Seals a block in bounded steps, yielding between them, so that a core
/// shared with net or seq never stalls behind a whole block's rehash.
async fn seal_cooperatively(merkle: &mut Merkleizer, job: &SealJob) -> SealRoots {
    let began = std::time::Instant::now();
    let mut progress = SealProgress::default();
    let mut longest = Duration::ZERO;
    loop {
        let step = std::time::Instant::now();
        let done = merkle.seal_step(job, &mut progress, SEAL_STEP_ITEMS);
        longest = longest.max(step.elapsed());
        if let Some(roots) = done {
            tracing::debug!(
                number = roots.number,
                txs = job.txs.len(),
                total_us = began.elapsed().as_micros() as u64,
                longest_step_us = longest.as_micros() as u64,
                "sealed roots"
            );
            return roots;
        }
        glommio::yield_if_needed().await;
    }
}

/// Trie nodes exported between two yields.
const EXPORT_STEP_NODES: usize = 4096;

/// Puts the state trie's references into `slot` (a checkpoint block's), in
/// bounded steps with yields between them, as a seal is done.
async fn export_cooperatively(merkle: &Merkleizer, slot: &fulmen_chain::block::TrieExportSlot) {
    let began = std::time::Instant::now();
    let mut export = merkle.export_hashes();
    loop {
        match export.step(EXPORT_STEP_NODES) {
            Ok(true) => break,
            Ok(false) => glommio::yield_if_needed().await,
            Err(e) => {
                // The checkpoint is written without them; boot hashes.
                tracing::warn!(number = merkle.number, error = %e, "cannot export the state trie's references");
                return;
            }
        }
    }
    let bytes = export.into_bytes();
    tracing::debug!(
        number = merkle.number,
        bytes = bytes.len(),
        us = began.elapsed().as_micros() as u64,
        "exported the state trie's references"
    );
    if let Ok(mut slot) = slot.lock() {
        *slot = Some(bytes);
    }
}

/// Runs the state-root role: seals blocks in order and serves proofs.
pub async fn run_merkle(
    mut merkle: Merkleizer,
    requests: Vec<ConnectedReceiver<MerkleRequest>>,
    to_seq: ConnectedSender<SealRoots>,
) {
    let mut requests = select_all(requests);
    while let Some(request) = requests.next().await {
        match request {
            MerkleRequest::Seal(job) => {
                let roots = seal_cooperatively(&mut merkle, &job).await;
                if let Some(slot) = &job.trie_export {
                    export_cooperatively(&merkle, slot).await;
                }
                if to_seq.send(roots).await.is_err() {
                    return;
                }
            }
            MerkleRequest::Proof {
                block,
                address,
                slots,
                reply,
            } => {
                let answer = if block == merkle.number {
                    Ok(merkle.proof(&address, &slots))
                } else {
                    Err(merkle.number)
                };
                let _ = reply.send(answer);
            }
            MerkleRequest::Witness { block, reply } => {
                let _ = reply.send(merkle.witness(block));
            }
        }
        glommio::yield_if_needed().await;
    }
}

#[cfg(test)]
mod tests {
    //! The seq role over the real log writer on the simulated disk: an IO
    //! error or a full disk halts preconfirmation with a clear error, nothing
    //! after the last durable record is ever published (no view, no
    //! subscription event), and what was acknowledged is on the disk. A stop
    //! refuses new transactions and answers once the log is drained.

    use fulmen_chain::metrics::METRICS;
    use fulmen_storage::io::{CrashMode, Fault, SimDisk};
    use fulmen_storage::log::{Log, read_log};
    use glommio::channels::shared_channel;

    use super::*;
    use crate::sequencer::{Genesis, PoolLimits};
    use crate::testkit::{spec, tx};
    use fulmen_chain::events::{ChainEvent, Published};
    use fulmen_chain::msg::{Drained, SEQ_CONTROL_CAPACITY, SeqReply, SubmitError};
    use fulmen_chain::spec::{ChainSpec, DEV_ACCOUNTS};
    use fulmen_chain::tx::RecoveredTx;
    use fulmen_storage::record::RecordKind;
    use futures::channel::oneshot;

    /// A running seq role with a log on `disk`, a state-root worker and one
    /// net core's inbox, event channel and control sender.
    struct Harness {
        spec: ChainSpec,
        inbox: ConnectedSender<SeqRequest>,
        control: mpsc::Sender<SeqControl>,
        events: ConnectedReceiver<Published>,
        published: Arc<ArcSwap<ChainView>>,
        seq_task: glommio::Task<()>,
    }

    async fn start(disk: SimDisk) -> Harness {
        start_with(disk, 0).await
    }

    async fn start_with(disk: SimDisk, group_commit_us: u64) -> Harness {
        let spec = spec(30_000_000);
        let genesis = Genesis::new(&spec);
        let seq = Sequencer::new(spec.clone(), PoolLimits::default(), &genesis, 1_000);
        let merkle = Merkleizer::new(genesis.trie.clone(), 0);
        let published = Arc::new(ArcSwap::from_pointee(seq.view().clone()));
        let (log, _) = Log::open(disk, 64 * 1024).await.unwrap();
        let (inbox_tx, inbox_rx) = shared_channel::new_bounded(64);
        let (append_tx, append_rx) = shared_channel::new_bounded(STORAGE_QUEUE_CAPACITY);
        let (ack_tx, ack_rx) = shared_channel::new_bounded(STORAGE_QUEUE_CAPACITY);
        let (seal_tx, seal_rx) = shared_channel::new_bounded(8);
        let (roots_tx, roots_rx) = shared_channel::new_bounded(8);
        let (event_tx, event_rx) = shared_channel::new_bounded(16);
        // Each end of a channel waits for its peer to connect.
        let (append_tx, append_rx) = futures::join!(append_tx.connect(), append_rx.connect());
        let (ack_tx, ack_rx) = futures::join!(ack_tx.connect(), ack_rx.connect());
        let (seal_tx, seal_rx) = futures::join!(seal_tx.connect(), seal_rx.connect());
        let (roots_tx, roots_rx) = futures::join!(roots_tx.connect(), roots_rx.connect());
        let (inbox, inbox_rx) = futures::join!(inbox_tx.connect(), inbox_rx.connect());
        let (event_tx, events) = futures::join!(event_tx.connect(), event_rx.connect());
        let (mut control, control_rx) = mpsc::channel(SEQ_CONTROL_CAPACITY);
        // Mini-block events are built only while some net core has subscribers.
        control
            .try_send(SeqControl::Subscribers {
                core: 0,
                any: true,
                events_from: Default::default(),
                generation: 0,
            })
            .unwrap();
        glommio::spawn_local(fulmen_storage::writer::run_writer(log, append_rx, ack_tx)).detach();
        glommio::spawn_local(run_merkle(merkle, vec![seal_rx], roots_tx)).detach();
        let link = LogLink {
            to_storage: append_tx,
            acks: ack_rx,
            durable: true,
            checkpoints: None,
            history: None,
            da_records: Vec::new(),
        };
        let links = SeqLinks {
            inboxes: vec![inbox_rx],
            control: control_rx,
            to_merkle: seal_tx,
            from_merkle: roots_rx,
            published: published.clone(),
            events: EventBus::new(vec![event_tx]),
            log: Some(link),
            derived: None,
            upstream: None,
        };
        let timing = SeqTiming {
            block_time_ms: 600_000,
            mini_block_max_ms: 1,
            group_commit_us,
        };
        let seq_task = glommio::spawn_local(run_seq(seq, links, timing, Vec::new()));
        Harness {
            spec,
            inbox,
            control,
            events,
            published,
            seq_task,
        }
    }

    impl Harness {
        async fn send(&self, tx: RecoveredTx) -> SeqReply {
            let (reply, answer) = oneshot::channel();
            let request = SeqRequest {
                tx,
                reply,
                wait_for_receipt: true,
            };
            self.inbox.send(request).await.expect("seq is running");
            answer.await.expect("seq answers")
        }

        fn next_event(&self) -> Option<Published> {
            futures::FutureExt::now_or_never(self.events.recv()).flatten()
        }

        /// Sends a stop and waits for the seq core's answer.
        async fn stop(&mut self) -> Drained {
            let (drained, answer) = std::sync::mpsc::sync_channel(1);
            self.control
                .try_send(SeqControl::Stop { drained })
                .expect("the control channel has room");
            loop {
                if let Ok(answer) = answer.try_recv() {
                    return answer;
                }
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// The transactions of each mini-block record that survives a crash of
    /// `disk`, in log order.
    fn durable_mini_blocks(disk: &SimDisk) -> Vec<usize> {
        let (recovery, _) = read_log(&disk.crash(CrashMode::TearUnflushed)).unwrap();
        recovery
            .records
            .iter()
            .filter(|(_, kind, _)| *kind == RecordKind::MiniBlock)
            .map(|(_, _, payload)| {
                fulmen_chain::persist::decode_mini_block(payload)
                    .unwrap()
                    .txs
                    .len()
            })
            .collect()
    }

    #[test]
    fn under_dense_arrivals_an_idle_log_waits_for_more_and_the_wait_ends_by_itself() {
        // Two bursts 1 ms apart, with a 50 ms group-commit wait: the first
        // burst's mini-block waits (the log is idle, the arrivals dense,
        // a core loaded), the second joins it, and with nothing more
        // arriving the wait ends at its deadline: one record, every
        // sender answered. With group commit off, or no core loaded, the
        // first burst closes at once. (No core has been loaded before the
        // first case: nothing else in this process notes it.)
        let cases = [
            (50_000, false, vec![4, 4]),
            (0, true, vec![4, 4]),
            (50_000, true, vec![8]),
        ];
        for (group_commit_us, loaded, records) in cases {
            let waits = METRICS
                .group_commit_waits
                .load(std::sync::atomic::Ordering::Relaxed);
            let durable = run(async move || {
                let disk = SimDisk::new(17, 1 << 24);
                let node = start_with(disk.clone(), group_commit_us).await;
                let bob = DEV_ACCOUNTS[1];
                let mut answers = Vec::new();
                for nonce in 0..8 {
                    if loaded {
                        METRICS.note_loaded();
                    }
                    if nonce == 4 {
                        // Let the seq core take the first burst alone.
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                    let (reply, answer) = oneshot::channel();
                    let request = SeqRequest {
                        tx: tx(&node.spec, 0, nonce, bob, 1, 21_000, 1),
                        reply,
                        wait_for_receipt: false,
                    };
                    node.inbox.send(request).await.expect("seq is running");
                    answers.push(answer);
                }
                for answer in answers {
                    let reply = answer.await.expect("seq answers");
                    assert!(matches!(reply, SeqReply::Preconfirmed(_)), "{reply:?}");
                }
                durable_mini_blocks(&disk)
            });
            assert_eq!(durable, records, "{group_commit_us} µs, loaded: {loaded}");
            let waited = METRICS
                .group_commit_waits
                .load(std::sync::atomic::Ordering::Relaxed)
                - waits;
            assert_eq!(waited, u64::from(records.len() == 1), "counted waits");
        }
    }

    /// Transactions in the mini-block records that survive a crash of `disk`.
    fn durable_txs(disk: &SimDisk) -> usize {
        durable_mini_blocks(disk).iter().sum()
    }

    fn run<T: Send + 'static>(test: impl AsyncFnOnce() -> T + Send + 'static) -> T {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { test().await })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn a_failing_log_halts_preconfirmation_and_loses_nothing_acknowledged() {
        for fault in [
            |at_op| Fault::Eio {
                at_op,
                forever: true,
            },
            |at_op| Fault::NoSpace {
                at_op,
                forever: false,
            },
        ] {
            let durable = run(async move || {
                let disk = SimDisk::new(11, 1 << 24);
                let mut node = start(disk.clone()).await;
                let bob = DEV_ACCOUNTS[1];
                let first = tx(&node.spec, 0, 0, bob, 1, 21_000, 1);
                let first_hash = first.hash;
                assert!(matches!(node.send(first).await, SeqReply::Preconfirmed(_)));
                assert!(node.published.load().tx(&first_hash).is_some());
                // Its mini-block event went out with the reply, once.
                let event = node.next_event().expect("the durable mini-block's event");
                assert_eq!(event.position, 0);
                let ChainEvent::MiniBlock(mini) = event.event else {
                    panic!("a mini-block event")
                };
                assert_eq!((mini.number, mini.index), (1, 0));
                assert_eq!(mini.txs.len(), 1);
                assert_eq!(mini.txs[0].tx.hash, first_hash);
                assert_eq!(mini.diffs.len(), 1);
                assert!(node.next_event().is_none());

                disk.inject(Some(fault(disk.ops())));
                let second = tx(&node.spec, 0, 1, bob, 1, 21_000, 1);
                let second_hash = second.hash;
                match node.send(second).await {
                    SeqReply::Rejected(SubmitError::Halted(reason)) => {
                        assert!(!reason.is_empty())
                    }
                    other => panic!("not halted: {other:?}"),
                }
                // Everyone after gets the same clear error; nothing newer is published.
                let third = tx(&node.spec, 2, 0, bob, 1, 21_000, 1);
                let error = match node.send(third).await {
                    SeqReply::Rejected(e @ SubmitError::Halted(_)) => e.to_string(),
                    other => panic!("not halted: {other:?}"),
                };
                assert!(error.contains("stopped preconfirming"), "{error}");
                let view = node.published.load();
                assert!(view.tx(&first_hash).is_some());
                assert!(
                    view.tx(&second_hash).is_none(),
                    "a tx that was not durable was published"
                );
                assert!(
                    node.next_event().is_none(),
                    "an event for a record that was not durable was published"
                );
                // A stop after a failure says so.
                assert!(matches!(node.stop().await, Drained::Halted(_)));
                drop(node.inbox);
                node.seq_task.await;
                // What was acknowledged is on the disk after a crash.
                durable_txs(&disk)
            });
            assert_eq!(
                durable, 1,
                "exactly the acknowledged transaction is durable"
            );
        }
    }

    #[test]
    fn a_da_record_is_answered_once_durable_and_survives_a_crash() {
        let found = run(async move || {
            let disk = SimDisk::new(13, 1 << 24);
            let mut node = start(disk.clone()).await;
            let bob = DEV_ACCOUNTS[1];
            let sent = node.send(tx(&node.spec, 0, 0, bob, 1, 21_000, 1)).await;
            assert!(matches!(sent, SeqReply::Preconfirmed(_)));
            let (durable, answer) = oneshot::channel();
            let payload = b"da progress".to_vec();
            node.control
                .try_send(SeqControl::DaRecord { payload, durable })
                .expect("room");
            answer.await.expect("answered once durable");
            drop(node.inbox);
            node.seq_task.await;
            let (recovery, _) = read_log(&disk.crash(CrashMode::TearUnflushed)).unwrap();
            recovery
                .records
                .iter()
                .filter(|(_, kind, _)| *kind == RecordKind::DaProgress)
                .map(|(_, _, payload)| payload.to_vec())
                .collect::<Vec<_>>()
        });
        assert_eq!(found, vec![b"da progress".to_vec()]);
    }

    #[test]
    fn a_stop_refuses_new_transactions_and_answers_once_the_log_is_drained() {
        let durable = run(async move || {
            let disk = SimDisk::new(12, 1 << 24);
            let mut node = start(disk.clone()).await;
            let bob = DEV_ACCOUNTS[1];
            for nonce in 0..3 {
                let sent = node.send(tx(&node.spec, 0, nonce, bob, 1, 21_000, 1)).await;
                assert!(matches!(sent, SeqReply::Preconfirmed(_)));
            }
            assert_eq!(node.stop().await, Drained::Flushed);
            let late = tx(&node.spec, 0, 3, bob, 1, 21_000, 1);
            match node.send(late).await {
                SeqReply::Rejected(SubmitError::ShuttingDown) => {}
                other => panic!("not refused: {other:?}"),
            }
            // A second stop is answered too.
            assert_eq!(node.stop().await, Drained::Flushed);
            drop(node.inbox);
            node.seq_task.await;
            durable_txs(&disk)
        });
        assert_eq!(durable, 3, "every acknowledged transaction is durable");
    }
}
