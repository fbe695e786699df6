//! Simulations (`eth_call`, `eth_estimateGas`, `eth_createAccessList`) run
//! on a small pool of plain threads, never on a net core: one request can
//! run the EVM dozens of times, and a net core that did so inline answered
//! nobody else meanwhile (nor ran the state-root worker that may share its
//! CPU). The net core hands a job over a bounded queue and awaits its answer
//! on a oneshot, so its executor keeps serving. The node pins the workers
//! and lowers their priority (see `fulmen`'s node wiring), so the kernel
//! preempts them in favour of the pinned net and seq threads.
//!
//! Every request carries a [`Meter`]: a wall-clock deadline, enforced
//! inside the EVM by [`fulmen_exec::simulate::Deadline`], and a gas budget over
//! all its EVM runs. A JSON-RPC batch shares a [`BatchBudget`] across its
//! calls.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::oneshot;

use crate::limits::RpcLimits;
use crate::rpc::RpcError;

type Job = Box<dyn FnOnce() + Send>;

/// A bounded pool of simulation threads fed by a bounded queue.
pub struct SimPool {
    queue: SyncSender<Job>,
    queue_max: usize,
}

impl SimPool {
    /// Starts `workers` threads (at least one) behind a queue of
    /// `queue_max` waiting jobs. Each thread first calls `on_start` with
    /// its index (pinning, priority).
    pub fn start(
        workers: usize,
        queue_max: usize,
        on_start: Arc<dyn Fn(usize) + Send + Sync>,
    ) -> std::io::Result<Arc<Self>> {
        let (queue, jobs) = sync_channel::<Job>(queue_max);
        let jobs = Arc::new(Mutex::new(jobs));
        for index in 0..workers.max(1) {
            let jobs = jobs.clone();
            let on_start = on_start.clone();
            std::thread::Builder::new()
                .name(format!("fulmen-sim{index}"))
                .spawn(move || {
                    on_start(index);
                    work(&jobs);
                })?;
        }
        Ok(Arc::new(Self { queue, queue_max }))
    }

    /// Queues `job`; a full queue is an immediate error. The answer comes
    /// on the returned oneshot (cancelled if the job panicked).
    pub fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, RpcError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(job());
        });
        match self.queue.try_send(job) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) => Err(RpcError::server(format!(
                "too many simulations in progress: the queue is full (rpc.simulation_queue_max = {}), retry shortly",
                self.queue_max
            ))),
            Err(TrySendError::Disconnected(_)) => {
                Err(RpcError::internal("the simulation workers stopped"))
            }
        }
    }
}

/// A worker's loop: runs jobs until the pool is dropped. A panicking job
/// drops its reply (the client gets an internal error); the worker lives on.
fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let Ok(jobs) = jobs.lock() else { return };
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("a simulation panicked; its request got an internal error");
        }
    }
}

/// Which limit a meter hits first, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Request,
    Batch,
}

/// What one JSON-RPC batch may spend on simulations, over all its calls.
/// Lives on the net core; the calls of a batch run one after another.
#[derive(Debug)]
pub struct BatchBudget {
    deadline: Instant,
    timeout_ms: u64,
    gas_left: Cell<u64>,
    gas_budget: u64,
}

impl BatchBudget {
    /// A fresh budget for a batch that starts now.
    pub fn new(limits: &RpcLimits) -> Self {
        Self {
            deadline: Instant::now() + Duration::from_millis(limits.batch_call_timeout_ms),
            timeout_ms: limits.batch_call_timeout_ms,
            gas_left: Cell::new(limits.batch_simulation_gas_budget),
            gas_budget: limits.batch_simulation_gas_budget,
        }
    }

    /// Takes what one call of the batch used.
    pub(crate) fn charge(&self, gas: u64) {
        self.gas_left.set(self.gas_left.get().saturating_sub(gas));
    }
}

/// The time and gas one request may still spend on simulations: the
/// request's own limits, or what is left of its batch's, whichever is less.
#[derive(Debug, Clone)]
pub struct Meter {
    deadline: Instant,
    timeout_ms: u64,
    deadline_bound: Bound,
    gas_left: u64,
    gas_budget: u64,
    gas_bound: Bound,
    /// Gas used by this request's runs so far.
    pub gas_used: u64,
}

impl Meter {
    /// The meter of a request that arrived at `now`.
    pub fn new(limits: &RpcLimits, batch: Option<&BatchBudget>, now: Instant) -> Self {
        let mut meter = Self {
            deadline: now + Duration::from_millis(limits.call_timeout_ms),
            timeout_ms: limits.call_timeout_ms,
            deadline_bound: Bound::Request,
            gas_left: limits.simulation_gas_budget,
            gas_budget: limits.simulation_gas_budget,
            gas_bound: Bound::Request,
            gas_used: 0,
        };
        if let Some(batch) = batch {
            if batch.deadline < meter.deadline {
                meter.deadline = batch.deadline;
                meter.timeout_ms = batch.timeout_ms;
                meter.deadline_bound = Bound::Batch;
            }
            if batch.gas_left.get() < meter.gas_left {
                meter.gas_left = batch.gas_left.get();
                meter.gas_budget = batch.gas_budget;
                meter.gas_bound = Bound::Batch;
            }
        }
        meter
    }

    /// When the EVM must stop.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Errors when no gas is left for another run.
    pub fn check_gas(&self) -> Result<(), RpcError> {
        if self.gas_left > 0 {
            return Ok(());
        }
        let (limit, scope) = match self.gas_bound {
            Bound::Request => ("rpc.simulation_gas_budget", "one request"),
            Bound::Batch => ("rpc.batch_simulation_gas_budget", "one batch"),
        };
        Err(RpcError::server(format!(
            "execution aborted (gas budget = {} gas): the EVM runs of {scope} used it all ({limit})",
            self.gas_budget
        )))
    }

    /// Counts `gas` used by one run.
    pub fn charge(&mut self, gas: u64) {
        self.gas_used = self.gas_used.saturating_add(gas);
        self.gas_left = self.gas_left.saturating_sub(gas);
    }

    /// The error for a run halted at the deadline.
    pub fn timeout_error(&self) -> RpcError {
        let (limit, scope) = match self.deadline_bound {
            Bound::Request => ("rpc.call_timeout_ms", "one request"),
            Bound::Batch => ("rpc.batch_call_timeout_ms", "one batch"),
        };
        RpcError::server(format!(
            "execution aborted (timeout = {}ms): the simulations of {scope} ran past {limit}",
            self.timeout_ms
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RpcLimits {
        RpcLimits {
            call_timeout_ms: 1_000,
            simulation_gas_budget: 100,
            batch_call_timeout_ms: 60_000,
            batch_simulation_gas_budget: 150,
            ..RpcLimits::default()
        }
    }

    #[test]
    fn a_batch_budget_binds_once_it_is_below_the_request_limits() {
        let limits = limits();
        let batch = BatchBudget::new(&limits);
        let now = Instant::now();
        let mut meter = Meter::new(&limits, Some(&batch), now);
        assert_eq!(meter.deadline(), now + Duration::from_millis(1_000));
        meter.charge(100);
        assert!(
            meter
                .check_gas()
                .unwrap_err()
                .message
                .contains("rpc.simulation_gas_budget")
        );
        batch.charge(meter.gas_used);
        let meter = Meter::new(&limits, Some(&batch), now);
        assert!(meter.check_gas().is_ok());
        batch.charge(50);
        let meter = Meter::new(&limits, Some(&batch), now);
        let error = meter.check_gas().unwrap_err();
        assert_eq!(error.code, -32000);
        assert!(
            error.message.contains("rpc.batch_simulation_gas_budget"),
            "{}",
            error.message
        );
        assert!(
            meter
                .timeout_error()
                .message
                .starts_with("execution aborted (timeout = 1000ms)")
        );
    }

    #[test]
    fn a_full_queue_is_refused_at_once_and_a_panic_keeps_the_worker() {
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let pool = SimPool::start(1, 1, Arc::new(|_| {})).unwrap();
        let held = Mutex::new(held);
        // The worker blocks on the first job; the second waits in the queue.
        let first = pool
            .submit(move || {
                let _ = held.lock().unwrap().recv();
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let queued = loop {
            if let Ok(answer) = pool.submit(|| panic!("a simulation bug")) {
                break answer;
            }
            assert!(
                Instant::now() < deadline,
                "the worker never took the first job"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let error = pool.submit(|| ()).unwrap_err();
        assert!(error.message.contains("too many simulations in progress"));
        hold.send(()).unwrap();
        futures::executor::block_on(first).unwrap();
        assert!(futures::executor::block_on(queued).is_err());
        let after = pool.submit(|| 7).unwrap();
        assert_eq!(futures::executor::block_on(after).unwrap(), 7);
    }
}
