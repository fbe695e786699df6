//! Reads of the hot state under full write load, as the node has them: a
//! writer (the seq core) changes the state as transactions do and publishes
//! a snapshot at every mini-block, and readers (the net cores answering
//! `eth_getBalance`, `eth_getStorageAt`, `eth_call`) read the latest
//! published snapshot. Each side runs alone, then both at once, so the
//! figures show what each costs the other: readers keep old snapshots
//! alive, so the writer copies the nodes they share; the writer's copies
//! and frees compete with the readers for caches and the allocator.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use arc_swap::ArcSwap;
use fulmen_storage::{AccountState, HotState};
use hdrhistogram::Histogram;

/// The shape of the state and of the load.
#[derive(Debug, Clone, Copy)]
pub struct ReadLoad {
    /// Funded accounts, `account(0..accounts)`.
    pub accounts: u64,
    /// Storage slots, spread over [`CONTRACTS`] contracts.
    pub slots: u64,
    /// Length of each phase.
    pub phase: Duration,
    /// Transactions per published snapshot (one mini-block).
    pub txs_per_mini_block: u64,
    /// The writer's pace in transactions per second (0: as fast as it
    /// can, far above what a seq core that also executes can apply).
    pub txs_per_s: u64,
    /// Reader threads.
    pub readers: usize,
}

/// Contracts the slots are spread over.
pub const CONTRACTS: u64 = 1_000;

/// Reads one reader takes from one snapshot before loading the newest
/// (one RPC request reads a view several times).
const READS_PER_SNAPSHOT: u64 = 16;

/// The `i`-th account: spread like real addresses, not in sorted order.
pub fn account(i: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(&(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes());
    bytes[8..16].copy_from_slice(&i.to_be_bytes());
    Address::from(bytes)
}

/// The contract holding slot `i`.
pub fn contract(i: u64) -> Address {
    account(u64::MAX - i % CONTRACTS)
}

/// The key of slot `i`.
pub fn slot(i: u64) -> U256 {
    U256::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Builds the tables `load` describes (no trie: readers and the seq core
/// do not use it).
pub fn build(load: &ReadLoad) -> HotState {
    let mut state = HotState::new();
    for i in 0..load.accounts {
        state.set_account(
            account(i),
            AccountState::funded(U256::from(i + 1) * U256::from(10u64.pow(18))),
        );
    }
    for i in 0..load.slots {
        state.set_storage(contract(i), slot(i), U256::from(i + 1));
    }
    state
}

/// What one phase measured.
#[derive(Debug, Clone)]
pub struct Phase {
    /// What ran.
    pub name: &'static str,
    /// Reads per second, all readers together (0 without readers).
    pub reads_per_s: f64,
    /// Per-read latency (one account and one slot, the clock reads
    /// included), in nanoseconds.
    pub read_ns: Option<Histogram<u64>>,
    /// Transactions per second the writer applied and published (0 without
    /// the writer).
    pub txs_per_s: f64,
}

/// Runs the three phases on `state`: readers alone, the writer alone, both.
pub fn run(state: HotState, load: &ReadLoad) -> Vec<Phase> {
    let published = Arc::new(ArcSwap::from_pointee(state.clone()));
    let mut writer_state = state;
    let mut phases = Vec::with_capacity(3);
    for (name, readers, write) in [
        ("readers alone", load.readers, false),
        ("writer alone", 0, true),
        ("readers with the writer", load.readers, true),
    ] {
        eprintln!("phase: {name}, {} s", load.phase.as_secs_f64());
        let (phase, state) = one_phase(name, &published, writer_state, load, readers, write);
        writer_state = state;
        phases.push(phase);
    }
    phases
}

fn one_phase(
    name: &'static str,
    published: &Arc<ArcSwap<HotState>>,
    mut state: HotState,
    load: &ReadLoad,
    readers: usize,
    write: bool,
) -> (Phase, HotState) {
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let reader_threads: Vec<_> = (0..readers)
        .map(|n| {
            let published = Arc::clone(published);
            let stop = Arc::clone(&stop);
            let load = *load;
            std::thread::spawn(move || read(&published, &stop, &load, n as u64 + 1))
        })
        .collect();
    let mut txs = 0;
    if write {
        txs = write_until(published, &mut state, load, began + load.phase);
    } else {
        std::thread::sleep(load.phase);
    }
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    let mut read_ns: Option<Histogram<u64>> = None;
    for thread in reader_threads {
        let (n, histogram) = thread.join().expect("reader");
        reads += n;
        match &mut read_ns {
            Some(all) => all.add(&histogram).expect("same histogram bounds"),
            None => read_ns = Some(histogram),
        }
    }
    let secs = began.elapsed().as_secs_f64();
    let phase = Phase {
        name,
        reads_per_s: reads as f64 / secs,
        read_ns,
        txs_per_s: txs as f64 / secs,
    };
    (phase, state)
}

/// A small, fast generator: the load must cost less than what it measures.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

/// One reader: an account and a slot per read, from the newest snapshot
/// every [`READS_PER_SNAPSHOT`] reads, until `stop`.
fn read(
    published: &ArcSwap<HotState>,
    stop: &AtomicBool,
    load: &ReadLoad,
    seed: u64,
) -> (u64, Histogram<u64>) {
    let mut histogram = Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("bounds");
    let mut random = XorShift(0x2545_f491_4f6c_dd1d ^ seed);
    let mut reads = 0;
    let mut balances = U256::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let snapshot = published.load_full();
        for _ in 0..READS_PER_SNAPSHOT {
            let a = random.next(load.accounts);
            let s = random.next(load.slots);
            let began = Instant::now();
            if let Some(found) = snapshot.account(&account(a)) {
                balances = balances.wrapping_add(found.balance);
            }
            balances = balances.wrapping_add(snapshot.storage(&contract(s), &slot(s)));
            let _ = histogram.record(began.elapsed().as_nanos() as u64);
        }
        reads += READS_PER_SNAPSHOT;
    }
    std::hint::black_box(balances);
    (reads, histogram)
}

/// The writer: transfers between random accounts, each also writing one
/// slot (an ERC-20 balance), published every `txs_per_mini_block`; returns
/// the transactions applied.
fn write_until(
    published: &ArcSwap<HotState>,
    state: &mut HotState,
    load: &ReadLoad,
    deadline: Instant,
) -> u64 {
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut txs = 0;
    let began = Instant::now();
    while Instant::now() < deadline {
        if load.txs_per_s > 0 {
            let due = began + Duration::from_secs_f64(txs as f64 / load.txs_per_s as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        for _ in 0..load.txs_per_mini_block {
            let from = account(random.next(load.accounts));
            let to = account(random.next(load.accounts));
            let s = random.next(load.slots);
            for (address, delta) in [(from, false), (to, true)] {
                let mut header = state
                    .account(&address)
                    .copied()
                    .unwrap_or_else(|| AccountState::funded(U256::ZERO));
                if delta {
                    header.balance = header.balance.wrapping_add(U256::from(1));
                } else {
                    header.nonce += 1;
                    header.balance = header.balance.wrapping_sub(U256::from(1));
                }
                state.set_account(address, header);
            }
            let value = state.storage(&contract(s), &slot(s));
            state.set_storage(contract(s), slot(s), value.wrapping_add(U256::from(1)));
        }
        txs += load.txs_per_mini_block;
        published.store(Arc::new(state.clone()));
    }
    txs
}

/// The phases as a markdown table.
pub fn table(phases: &[Phase]) -> String {
    let mut out = String::from(
        "| phase | reads/s | read p50 / p99 / p99.9 | writer txs/s |\n|---|---:|---|---:|\n",
    );
    for phase in phases {
        let latency = phase.read_ns.as_ref().map_or("".to_string(), |h| {
            format!(
                "{} / {} / {} ns",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999)
            )
        });
        let rate = |r: f64| {
            if r == 0.0 {
                "".to_string()
            } else {
                format!("{r:.0}")
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            phase.name,
            rate(phase.reads_per_s),
            latency,
            rate(phase.txs_per_s)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_measures_what_it_ran_and_the_writer_publishes() {
        let load = ReadLoad {
            accounts: 1_000,
            slots: 1_000,
            phase: Duration::from_millis(100),
            txs_per_mini_block: 10,
            txs_per_s: 0,
            readers: 1,
        };
        let state = build(&load);
        assert_eq!(state.account_count(), 1_000);
        assert_eq!(state.slot_count(), 1_000);
        let phases = run(state, &load);
        let [alone, writer, both] = &phases[..] else {
            panic!("three phases: {phases:?}");
        };
        assert!(alone.reads_per_s > 0.0 && alone.txs_per_s == 0.0);
        assert!(writer.reads_per_s == 0.0 && writer.txs_per_s > 0.0);
        assert!(writer.read_ns.is_none());
        assert!(both.reads_per_s > 0.0 && both.txs_per_s > 0.0);
        let reads = both.read_ns.as_ref().expect("read latencies");
        assert!(!reads.is_empty() && reads.value_at_quantile(0.5) > 0);
        let rendered = table(&phases);
        assert_eq!(rendered.lines().count(), 5, "{rendered}");
        assert!(rendered.contains("| writer alone |  |  |"), "{rendered}");
    }
}
