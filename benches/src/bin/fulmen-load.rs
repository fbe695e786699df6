//! `fulmen-load`: drives an Ethereum JSON-RPC node with pre-signed
//! transactions and reports throughput and latency.
//!
//! ```text
//! fulmen-load --rpc http://127.0.0.1:8545 --workload transfers --txs 20000 --concurrency 32
//! fulmen-load --rpc http://127.0.0.1:8545 --workload erc20 --txs 5000 --rate 2000 --sync --json
//! ```

use clap::Parser;
use fulmen_benches::runner::{RunConfig, plot, run};
use fulmen_benches::workload::Workload;

#[derive(Parser, Debug)]
#[command(
    name = "fulmen-load",
    about = "Load generator for Ethereum JSON-RPC nodes"
)]
struct Args {
    /// JSON-RPC endpoint (http://HOST:PORT).
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    rpc: String,
    /// What the transactions do.
    #[arg(long, value_enum, default_value = "transfers")]
    workload: Workload,
    /// Transactions to send.
    #[arg(long, default_value_t = 10_000)]
    txs: u64,
    /// Closed loop: requests in flight (one per connection).
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: target requests per second (latency counts from the schedule).
    #[arg(long)]
    rate: Option<f64>,
    /// Connections for the open loop.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Use eth_sendRawTransactionSync (EIP-7966) instead of eth_sendRawTransaction.
    #[arg(long)]
    sync: bool,
    /// Fresh sender accounts to fund (at least one per connection).
    #[arg(long, default_value_t = 1024)]
    accounts: u64,
    /// Seed for account keys (change it to run again on the same chain).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Draw latency over time and a latency histogram to this SVG file.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// Seconds to wait for preconfirmation and sealing after the last send.
    #[arg(long, default_value_t = 120)]
    settle_timeout_s: u64,
    /// PID of the node under test (on this machine): report its CPU time
    /// (utime + stime, and per thread) per transaction over the send phase,
    /// from the first send until the last transaction is sealed.
    #[arg(long)]
    node_pid: Option<u32>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config = RunConfig {
        rpc: args.rpc.clone(),
        workload: args.workload,
        txs: args.txs,
        concurrency: args.concurrency,
        rate: args.rate,
        connections: args.connections,
        sync: args.sync,
        accounts: args.accounts,
        seed: args.seed,
        settle_timeout_s: args.settle_timeout_s,
        quiet: args.json,
        node_pid: args.node_pid,
    };
    let mut output = match run(&config).await {
        Ok(output) => output,
        Err(e) => {
            eprintln!("fulmen-load: {e}");
            std::process::exit(1);
        }
    };
    if let Some(path) = &args.plot
        && let Err(e) = plot(path, &mut output.points, &output.histogram)
    {
        eprintln!("fulmen-load: plot: {e}");
        std::process::exit(1);
    }
    if args.json {
        match serde_json::to_string(&output.report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("fulmen-load: {e}");
                std::process::exit(1);
            }
        }
    } else {
        print!("{}", output.report.table());
    }
}
