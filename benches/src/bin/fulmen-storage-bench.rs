//! `fulmen-storage-bench`: the storage engine's figures on this machine.
//!
//! ```text
//! fulmen-storage-bench log --dir /var/tmp/x          # flush latency vs bare fdatasync, append throughput
//! fulmen-storage-bench state --accounts 1000000     # RSS per account and slot, checkpoint write/load, boot
//! fulmen-storage-bench reads --accounts 1000000     # state reads alone, writes alone, reads under full write load
//! ```
//!
//! Everything runs on one glommio executor through the same io_uring path
//! the node's storage core uses. Figures are printed, never asserted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy_primitives::{B256, U256};
use clap::{Parser, Subcommand};
use fulmen_benches::state_reads::{self, ReadLoad, account, contract, slot};
use fulmen_benches::stats::{histogram, record};
use fulmen_exec::merkle::StateTrie;
use fulmen_storage::checkpoint::{self, CheckpointMeta};
use fulmen_storage::disk::DiskDir;
use fulmen_storage::io::LogFile;
use fulmen_storage::log::{Log, LogDir};
use fulmen_storage::record::RecordKind;
use fulmen_storage::{AccountState, HotState};
use hdrhistogram::Histogram;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(name = "fulmen-storage-bench", about = "Storage engine benchmarks")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Log flush latency against a bare write + fdatasync on the same kind
    /// of file, and append throughput with group commit.
    Log {
        /// Directory on the filesystem to measure (a fresh subdirectory is made).
        #[arg(long, default_value = "target/storage-bench")]
        dir: PathBuf,
        /// Flushes timed per latency figure.
        #[arg(long, default_value_t = 2000)]
        flushes: u64,
        /// Payload bytes of the latency runs' records (a one-transfer
        /// mini-block record is about 400 bytes).
        #[arg(long, default_value_t = 400)]
        record_bytes: usize,
        /// Records appended for each throughput figure.
        #[arg(long, default_value_t = 200_000)]
        records: u64,
    },
    /// Hot-state memory per account and per slot, checkpoint size and
    /// write/load times, and the state-trie rebuild that boot adds.
    State {
        /// Funded accounts.
        #[arg(long, default_value_t = 1_000_000)]
        accounts: u64,
        /// Storage slots (spread over 1,000 contracts).
        #[arg(long, default_value_t = 1_000_000)]
        slots: u64,
        /// Directory for the checkpoint file.
        #[arg(long, default_value = "target/storage-bench")]
        dir: PathBuf,
    },
    /// Reads of the hot state (an account and a slot each, from the newest
    /// published snapshot) alone, then the seq core's writes alone (a
    /// snapshot published per mini-block), then both at once.
    Reads {
        /// Funded accounts.
        #[arg(long, default_value_t = 1_000_000)]
        accounts: u64,
        /// Storage slots (spread over 1,000 contracts).
        #[arg(long, default_value_t = 1_000_000)]
        slots: u64,
        /// Seconds per phase.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Transactions per published snapshot (one mini-block).
        #[arg(long, default_value_t = 20)]
        txs_per_mini_block: u64,
        /// The writer's pace in transactions per second; 0: unpaced.
        #[arg(long, default_value_t = 0)]
        txs_per_s: u64,
        /// Reader threads.
        #[arg(long, default_value_t = 1)]
        readers: usize,
    },
}

fn main() {
    let args = Args::parse();
    let result = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            match args.command {
                Command::Log {
                    dir,
                    flushes,
                    record_bytes,
                    records,
                } => log_bench(&dir, flushes, record_bytes, records).await,
                Command::State {
                    accounts,
                    slots,
                    dir,
                } => state_bench(&dir, accounts, slots).await,
                Command::Reads {
                    accounts,
                    slots,
                    seconds,
                    txs_per_mini_block,
                    txs_per_s,
                    readers,
                } => reads_bench(&ReadLoad {
                    accounts,
                    slots,
                    phase: Duration::from_secs_f64(seconds),
                    txs_per_mini_block,
                    txs_per_s,
                    readers,
                }),
            }
        })
        .expect("start executor")
        .join()
        .expect("executor");
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn fresh_dir(base: &Path, name: &str) -> std::io::Result<PathBuf> {
    let dir = base.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Bytes per log segment in every log run.
const SEGMENT_BYTES: u64 = 256 << 20;

fn io_error(e: std::io::Error) -> String {
    e.to_string()
}

async fn log_bench(
    base: &Path,
    flushes: u64,
    record_bytes: usize,
    records: u64,
) -> Result<(), String> {
    let bare = bare_flush_latency(base, flushes).await?;

    // The log: one record appended and flushed at a time.
    let log_dir = fresh_dir(base, "log").map_err(io_error)?;
    let dir = DiskDir::new(&log_dir).await.map_err(io_error)?;
    let (mut log, _) = Log::open(dir, SEGMENT_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    let flushed = log_flush_latency(&mut log, flushes, record_bytes).await?;
    print_flush_latency(flushes, record_bytes, &bare, &flushed);

    // Throughput: group commit of G records per flush, as the storage core
    // does when records arrive while a flush is in flight.
    println!();
    println!(
        "append throughput, {records} records per row (segments of {} MiB, rotation included)",
        SEGMENT_BYTES >> 20
    );
    println!(
        "| record bytes | records per flush | records/s | MB/s | flush p50 ms | flush p99 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (size, group) in [(400usize, 16u64), (400, 256), (4_000, 64), (64_000, 8)] {
        append_throughput(&mut log, size, group, records).await?;
    }
    drop(log);

    read_back(&log_dir)?;
    let _ = std::fs::remove_dir_all(&log_dir);
    Ok(())
}

/// One aligned block written and fdatasync'd at a time: the least a durable
/// append can cost on this file system, through the same file type.
async fn bare_flush_latency(base: &Path, flushes: u64) -> Result<Histogram<u64>, String> {
    let bare_dir = fresh_dir(base, "bare").map_err(io_error)?;
    let dir = DiskDir::new(&bare_dir).await.map_err(io_error)?;
    println!(
        "filesystem mode: {:?}, alignment {} B",
        dir.mode(),
        dir.alignment()
    );
    let mut file = dir.create("bare", SEGMENT_BYTES).await.map_err(io_error)?;
    let block = vec![0x5au8; dir.alignment() as usize];
    let mut bare = histogram();
    for i in 0..flushes {
        let began = Instant::now();
        file.write_at(i * block.len() as u64, &block)
            .await
            .map_err(io_error)?;
        file.sync().await.map_err(io_error)?;
        record(&mut bare, began.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_dir_all(&bare_dir);
    Ok(bare)
}

/// One `record_bytes` record appended and flushed at a time.
async fn log_flush_latency<D: LogDir>(
    log: &mut Log<D>,
    flushes: u64,
    record_bytes: usize,
) -> Result<Histogram<u64>, String> {
    let payload = vec![0xa5u8; record_bytes];
    let mut flushed = histogram();
    for _ in 0..flushes {
        let began = Instant::now();
        log.append(RecordKind::MiniBlock, &payload)
            .map_err(|e| e.to_string())?;
        log.flush().await.map_err(|e| e.to_string())?;
        record(&mut flushed, began.elapsed());
    }
    Ok(flushed)
}

fn print_flush_latency(
    flushes: u64,
    record_bytes: usize,
    bare: &Histogram<u64>,
    flushed: &Histogram<u64>,
) {
    println!();
    println!("flush latency, {flushes} flushes of one {record_bytes}-byte record");
    println!("| what | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, h) in [
        ("bare write + fdatasync (4 KiB)", bare),
        ("log append + flush", flushed),
    ] {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |",
            ms(h, 0.5),
            ms(h, 0.9),
            ms(h, 0.99),
            h.max() as f64 / 1000.0
        );
    }
    println!(
        "ratio log/bare p50={:.2} p99={:.2}",
        ms(flushed, 0.5) / ms(bare, 0.5),
        ms(flushed, 0.99) / ms(bare, 0.99)
    );
}

/// One throughput row: up to `records` records of `size` bytes, flushed
/// `group` at a time, the next segment prepared when the log asks.
async fn append_throughput<D: LogDir>(
    log: &mut Log<D>,
    size: usize,
    group: u64,
    records: u64,
) -> Result<(), String> {
    let payload = vec![0x3cu8; size];
    let count = records.min(4_000_000_000 / size as u64);
    let mut h = histogram();
    let began = Instant::now();
    let mut done = 0;
    while done < count {
        let n = group.min(count - done);
        for _ in 0..n {
            log.append(RecordKind::MiniBlock, &payload)
                .map_err(|e| e.to_string())?;
        }
        let f = Instant::now();
        log.flush().await.map_err(|e| e.to_string())?;
        record(&mut h, f.elapsed());
        if log.wants_next() {
            log.prepare_next().await.map_err(|e| e.to_string())?;
        }
        done += n;
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "| {size} | {group} | {:.0} | {:.1} | {:.3} | {:.3} |",
        count as f64 / secs,
        (count as f64 * (size + 16) as f64) / secs / 1e6,
        ms(&h, 0.5),
        ms(&h, 0.99)
    );
    Ok(())
}

/// Reads the log back twice, as boot does: mmap, checksum every record.
/// The first pass reads from the device (O_DIRECT writes leave no page
/// cache); the second from the page cache the first one filled.
fn read_back(log_dir: &Path) -> Result<(), String> {
    println!();
    for pass in ["cold (from the device)", "warm (page cache)"] {
        let began = Instant::now();
        let (recovery, _) = fulmen_storage::log::read_log(&DiskDir::for_reading(log_dir))
            .map_err(|e| e.to_string())?;
        let secs = began.elapsed().as_secs_f64();
        println!(
            "read back {pass}: {} records, {:.0} MB in {:.2} s: {:.0} MB/s, {:.0} records/s (checksums, copies into RAM)",
            recovery.records.len(),
            recovery.bytes as f64 / 1e6,
            secs,
            recovery.bytes as f64 / 1e6 / secs,
            recovery.records.len() as f64 / secs
        );
    }
    Ok(())
}

/// Resident set size in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn reads_bench(load: &ReadLoad) -> Result<(), String> {
    let began = Instant::now();
    let state = state_reads::build(load);
    println!(
        "hot state: {} accounts, {} slots over {} contracts, built in {:.1} s; {} reader thread(s), {} txs per snapshot, writer pace {}",
        load.accounts,
        load.slots,
        state_reads::CONTRACTS,
        began.elapsed().as_secs_f64(),
        load.readers,
        load.txs_per_mini_block,
        if load.txs_per_s == 0 {
            "unpaced".to_string()
        } else {
            format!("{} txs/s", load.txs_per_s)
        }
    );
    let phases = state_reads::run(state, load);
    print!("{}", state_reads::table(&phases));
    Ok(())
}

async fn state_bench(base: &Path, accounts: u64, slots: u64) -> Result<(), String> {
    let (state, trie, root) = build_state(accounts, slots);
    checkpoint_bench(base, state, trie, root).await
}

/// Builds a hot state of `accounts` accounts and `slots` slots and its
/// trie, and prints the memory and time each part takes.
fn build_state(accounts: u64, slots: u64) -> (HotState, StateTrie, B256) {
    let start = rss();
    let began = Instant::now();
    let mut state = HotState::new();
    for i in 0..accounts {
        state.set_account(
            account(i),
            AccountState::funded(U256::from(i + 1) * U256::from(10u64.pow(18))),
        );
    }
    let build_accounts = began.elapsed();
    let after_accounts = rss();
    let began = Instant::now();
    for i in 0..slots {
        state.set_storage(contract(i), slot(i), U256::from(i + 1));
    }
    let build_slots = began.elapsed();
    let after_slots = rss();
    let began = Instant::now();
    let mut trie = StateTrie::from_state(&state);
    let root = trie.root();
    let trie_time = began.elapsed();
    let after_trie = rss();
    println!("hot state: {accounts} accounts, {slots} slots over 1,000 contracts");
    println!("| what | bytes | per entry | build |");
    println!("|---|---:|---:|---:|");
    let per = |a: u64, b: u64, n: u64| {
        if n == 0 {
            0.0
        } else {
            (b.saturating_sub(a)) as f64 / n as f64
        }
    };
    println!(
        "| accounts (RSS) | {} | {:.0} B/account | {:.2} s |",
        after_accounts - start,
        per(start, after_accounts, accounts),
        build_accounts.as_secs_f64()
    );
    println!(
        "| storage slots (RSS) | {} | {:.0} B/slot | {:.2} s |",
        after_slots.saturating_sub(after_accounts),
        per(after_accounts, after_slots, slots),
        build_slots.as_secs_f64()
    );
    println!(
        "| state trie with hashes (RSS) | {} | {:.0} B/entry | {:.2} s |",
        after_trie.saturating_sub(after_slots),
        per(after_slots, after_trie, accounts + slots),
        trie_time.as_secs_f64()
    );
    (state, trie, root)
}

/// Writes `state` as a checkpoint, then boots from it as the node does
/// (read, then rebuild the trie) and prints the times; `trie` and `state`
/// are freed before the read.
async fn checkpoint_bench(
    base: &Path,
    state: HotState,
    trie: StateTrie,
    root: B256,
) -> Result<(), String> {
    let path = fresh_dir(base, "checkpoint").map_err(io_error)?;
    let dir = DiskDir::buffered(&path);
    let meta = CheckpointMeta {
        number: 1,
        hash: B256::repeat_byte(1),
        state_root: root,
    };
    // The state-root worker's export at a checkpoint block (in one go here).
    let began = Instant::now();
    let mut export = trie.export_hashes();
    while !export.step(usize::MAX).map_err(|e| e.to_string())? {}
    let hashes = export.into_bytes();
    let export_time = began.elapsed();
    let began = Instant::now();
    let size = checkpoint::write(&dir, &meta, &state, &hashes)
        .await
        .map_err(io_error)?;
    let write_time = began.elapsed();
    drop(trie);
    drop(state);
    let hashes_bytes = hashes.len();
    drop(hashes);
    let began = Instant::now();
    let image =
        checkpoint::read(&dir, &checkpoint::file_name(meta.number)).map_err(|e| e.to_string())?;
    let load_time = began.elapsed();
    let loaded = &image.state;
    // What boot runs, first, as in a fresh process: the trie built with the
    // image's references on every CPU.
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let began = Instant::now();
    let (mut trie, imported) = StateTrie::from_image_on(loaded, &image.trie, threads);
    imported.map_err(|e| format!("the image's trie references: {e}"))?;
    let rebuilt = trie.root_on(threads);
    let image_time = began.elapsed();
    assert_eq!(rebuilt, root, "the same root from the image's references");
    drop(trie);
    // Then the trie rehashed in full (an image without references): on
    // every CPU, and on one.
    let began = Instant::now();
    let rebuilt = StateTrie::from_state_on(loaded, threads).root_on(threads);
    let rebuild_time = began.elapsed();
    assert_eq!(rebuilt, root, "the same root on {threads} threads");
    let began = Instant::now();
    let rebuilt = StateTrie::from_state(loaded).root();
    let one_thread_time = began.elapsed();
    assert_eq!(rebuilt, root, "the checkpoint reads back to the same state");
    println!();
    println!(
        "checkpoint: {:.0} MB ({:.0} MB of them trie references, {:.1} B/entry, exported in {:.2} s), written (streamed, fdatasync) in {:.2} s ({:.0} MB/s)",
        size as f64 / 1e6,
        hashes_bytes as f64 / 1e6,
        hashes_bytes as f64 / (loaded.account_count() + loaded.slot_count()).max(1) as f64,
        export_time.as_secs_f64(),
        write_time.as_secs_f64(),
        size as f64 / 1e6 / write_time.as_secs_f64()
    );
    println!(
        "boot from it: read + checksum + tables {:.2} s, state trie with the stored references {:.2} s on {threads} threads (rehashed in full: {:.2} s, {:.2} s on one), total {:.2} s (plus the log after it; {:.2} s rehashing)",
        load_time.as_secs_f64(),
        image_time.as_secs_f64(),
        rebuild_time.as_secs_f64(),
        one_thread_time.as_secs_f64(),
        (load_time + image_time).as_secs_f64(),
        (load_time + rebuild_time).as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&path);
    Ok(())
}
