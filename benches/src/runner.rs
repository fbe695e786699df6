//! One load-test run: prepare, send on every lane, wait for preconfirmation
//! and sealing, and collect the figures.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use crate::client::{Conn, parse_response, quantity};
use crate::proc_cpu::CpuSample;
use crate::stats::{Report, error_kind, histogram, record};
use crate::workload::{Plan, PlanConfig, Prepared, Workload, prepare};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// JSON-RPC endpoint (http://HOST:PORT).
    pub rpc: String,
    /// What the transactions do.
    pub workload: Workload,
    /// Transactions to send.
    pub txs: u64,
    /// Closed loop: requests in flight.
    pub concurrency: Option<usize>,
    /// Open loop: target requests per second.
    pub rate: Option<f64>,
    /// Connections for the open loop.
    pub connections: usize,
    /// eth_sendRawTransactionSync instead of eth_sendRawTransaction.
    pub sync: bool,
    /// Fresh sender accounts.
    pub accounts: u64,
    /// Key seed.
    pub seed: u64,
    /// Seconds to wait for preconfirmation and sealing.
    pub settle_timeout_s: u64,
    /// No progress lines on stderr.
    pub quiet: bool,
    /// The node's process: its CPU time over the send phase (from the
    /// first send until the last transaction is sealed) is reported per
    /// transaction.
    pub node_pid: Option<u32>,
}

/// The figures of a run, plus the raw latencies for plotting.
pub struct RunOutput {
    /// Summary.
    pub report: Report,
    /// (seconds since start, latency ms) of every request.
    pub points: Vec<(f64, f64)>,
    /// All latencies.
    pub histogram: Histogram<u64>,
}

struct LaneResult {
    histogram: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    ok_txs: u64,
    points: Vec<(f64, f64)>,
}

impl LaneResult {
    fn empty() -> Self {
        LaneResult {
            histogram: histogram(),
            errors: BTreeMap::new(),
            ok_txs: 0,
            points: Vec::new(),
        }
    }
}

/// The socket address of an `http://HOST:PORT` endpoint.
pub fn endpoint(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// endpoints are supported")?;
    let host = rest.trim_end_matches('/');
    host.to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))
}

async fn run_lane(
    (addr, mut conn): (SocketAddr, Conn),
    requests: Vec<Prepared>,
    mut schedule: Option<tokio::sync::mpsc::UnboundedReceiver<Instant>>,
    start: Instant,
) -> Result<LaneResult, String> {
    let mut result = LaneResult::empty();
    for request in &requests {
        // Open loop: the pacer says when each request is due.
        let begin = match &mut schedule {
            Some(due) => due.recv().await.ok_or("the pacer stopped")?,
            None => Instant::now(),
        };
        let sent_at = Instant::now();
        let outcome = match conn.post(&request.body).await {
            Ok(bytes) => parse_response(bytes).map(|_| ()),
            Err(e) => {
                // Reconnect once per failure so one broken connection does not end the lane.
                let message = format!("io: {e}");
                conn = Conn::connect(addr)
                    .await
                    .map_err(|e| format!("reconnect: {e}"))?;
                Err(message)
            }
        };
        let latency = begin.elapsed();
        record(&mut result.histogram, latency);
        // Plotted at the moment the request actually went out; its latency
        // counts from its scheduled time (open loop) or from that moment.
        result.points.push((
            sent_at.duration_since(start).as_secs_f64(),
            latency.as_secs_f64() * 1000.0,
        ));
        match outcome {
            Ok(()) => result.ok_txs += u64::from(request.is_tx),
            Err(e) => *result.errors.entry(error_kind(&e)).or_default() += 1,
        }
    }
    Ok(result)
}

/// Waits until every sender's last transaction has a receipt.
async fn wait_preconfirmed(
    addr: SocketAddr,
    plan: &Plan,
    timeout: Duration,
) -> Result<Instant, String> {
    let mut conn = Conn::connect(addr).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    for hash in &plan.last_per_sender {
        while conn
            .call("eth_getTransactionReceipt", json!([hash]))
            .await?
            .is_null()
        {
            if Instant::now() > deadline {
                return Err("not every transaction was preconfirmed in time".into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(Instant::now())
}

/// Waits until `expected` transactions sit in blocks after `from`; returns when and the gas they used.
async fn wait_sealed(
    addr: SocketAddr,
    from: u64,
    expected: u64,
    timeout: Duration,
) -> Result<(Instant, u64), String> {
    let mut conn = Conn::connect(addr).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let (mut counted, mut gas, mut next) = (0u64, 0u64, from + 1);
    loop {
        let head = quantity(&conn.call("eth_blockNumber", json!([])).await?)
            .ok_or("bad block number")? as u64;
        while next <= head {
            let block = conn
                .call(
                    "eth_getBlockByNumber",
                    json!([format!("0x{next:x}"), false]),
                )
                .await?;
            counted += block["transactions"]
                .as_array()
                .map_or(0, |t| t.len() as u64);
            gas += quantity(&block["gasUsed"]).unwrap_or(0) as u64;
            next += 1;
        }
        if counted >= expected {
            return Ok((Instant::now(), gas));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {counted} of {expected} transactions were sealed in time"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs one load test and returns its figures.
pub async fn run(args: &RunConfig) -> Result<RunOutput, String> {
    let addr = endpoint(&args.rpc)?;
    let lanes = match (args.concurrency, args.rate) {
        (Some(c), _) => c.max(1),
        (None, Some(_)) => args.connections.max(1),
        (None, None) => 1,
    };
    if !args.quiet {
        eprintln!(
            "preparing: funding {} accounts, pre-signing {} txs ...",
            args.accounts, args.txs
        );
    }
    let plan_config = PlanConfig {
        workload: args.workload,
        txs: args.txs,
        accounts: args.accounts,
        lanes,
        sync: args.sync,
        seed: args.seed,
    };
    let plan = prepare(addr, &plan_config).await?;
    let mut conn = Conn::connect(addr).await.map_err(|e| e.to_string())?;
    let start_block =
        quantity(&conn.call("eth_blockNumber", json!([])).await?).ok_or("bad block number")? as u64;

    let cpu_before = args.node_pid.map(CpuSample::read).transpose();
    let cpu_before = cpu_before.map_err(|e| format!("--node-pid: {e}"))?;
    let (start, sent_lanes) = send_lanes(addr, &plan, args.rate).await?;
    let ok_txs = sent_lanes.ok_txs;
    let sent = start.elapsed();
    let settle = Duration::from_secs(args.settle_timeout_s);
    let preconfirmed = if args.sync {
        Ok(start + sent)
    } else {
        wait_preconfirmed(addr, &plan, settle).await
    };
    let sealed = wait_sealed(addr, start_block, ok_txs, settle).await;
    let node_cpu = match (args.node_pid, &cpu_before) {
        (Some(pid), Some(before)) => Some(
            CpuSample::read(pid)
                .map_err(|e| format!("--node-pid: {e}"))?
                .since(before, ok_txs),
        ),
        _ => None,
    };

    let mut report = describe(args, lanes);
    report.errors = sent_lanes.errors;
    report.txs = plan.txs;
    report.duration_s = sent.as_secs_f64();
    report.tps = ok_txs as f64 / sent.as_secs_f64();
    match preconfirmed {
        Ok(at) => report.tps_preconfirmed = ok_txs as f64 / at.duration_since(start).as_secs_f64(),
        Err(e) => *report.errors.entry(e).or_default() += 1,
    }
    match sealed {
        Ok((at, gas)) => {
            let window = at.duration_since(start).as_secs_f64();
            report.tps_sealed = ok_txs as f64 / window;
            report.gas_per_s = gas as f64 / window;
        }
        Err(e) => *report.errors.entry(e).or_default() += 1,
    }
    report.set_latencies(&sent_lanes.histogram);
    report.requests = sent_lanes.histogram.len();
    report.node_cpu = node_cpu;
    Ok(RunOutput {
        report,
        points: sent_lanes.points,
        histogram: sent_lanes.histogram,
    })
}

/// The open loop's clock: request `k` of lane `l` (of `lanes`) is due at
/// `start + (k * lanes + l) * interval`, and at that moment its lane is
/// told so. tokio's timers round up to the next millisecond, which would
/// add up to a millisecond to every latency measured from the due time;
/// this thread sleeps on the OS's high-resolution timer instead.
fn pace(
    start: Instant,
    interval: Duration,
    lanes: Vec<(tokio::sync::mpsc::UnboundedSender<Instant>, usize)>,
) {
    let count = lanes.len();
    let longest = lanes.iter().map(|(_, len)| *len).max().unwrap_or(0);
    for k in 0..longest {
        for (l, (lane, len)) in lanes.iter().enumerate() {
            if k >= *len {
                continue;
            }
            let due = start + interval * u32::try_from(k * count + l).unwrap_or(u32::MAX);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // A lane that failed has dropped its receiver: nothing to tell.
            let _ = lane.send(due);
        }
    }
}

/// Sends every lane of `plan` on its own connection, at `rate` requests per
/// second over all lanes (open loop) or back to back (closed loop), and
/// merges what the lanes saw. The clock starts (the instant returned) once
/// every connection is open, so that no request is due before its lane
/// can send it.
async fn send_lanes(
    addr: SocketAddr,
    plan: &Plan,
    rate: Option<f64>,
) -> Result<(Instant, LaneResult), String> {
    let connects = plan.lanes.iter().map(|_| Conn::connect(addr));
    let conns = futures::future::join_all(connects).await;
    let conns = conns
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("connect: {e}"))?;
    let start = Instant::now();
    let interval = rate.map(|rate| Duration::from_secs_f64(1.0 / rate.max(0.001)));
    let mut dues = Vec::new();
    let mut tasks = Vec::new();
    for (requests, conn) in plan.lanes.iter().cloned().zip(conns) {
        let schedule = interval.map(|_| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            dues.push((tx, requests.len()));
            rx
        });
        tasks.push(tokio::spawn(run_lane(
            (addr, conn),
            requests,
            schedule,
            start,
        )));
    }
    if let Some(interval) = interval {
        std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || pace(start, interval, dues))
            .map_err(|e| format!("pacer thread: {e}"))?;
    }
    let mut total = LaneResult::empty();
    for task in tasks {
        let lane = task.await.map_err(|e| e.to_string())??;
        total
            .histogram
            .add(&lane.histogram)
            .map_err(|e| e.to_string())?;
        for (kind, n) in lane.errors {
            *total.errors.entry(kind).or_default() += n;
        }
        total.ok_txs += lane.ok_txs;
        total.points.extend(lane.points);
    }
    Ok((start, total))
}

/// A report naming what was run: endpoint, workload, method and mode.
fn describe(args: &RunConfig, lanes: usize) -> Report {
    Report {
        rpc: args.rpc.clone(),
        workload: args.workload.name().into(),
        method: if args.sync {
            "eth_sendRawTransactionSync"
        } else {
            "eth_sendRawTransaction"
        }
        .into(),
        mode: match args.rate {
            Some(rate) => format!("open({rate}/s)"),
            None => format!("closed({lanes})"),
        },
        ..Report::default()
    }
}

/// Draws latency over time and a latency histogram as SVG.
pub fn plot(
    path: &std::path::Path,
    points: &mut [(f64, f64)],
    h: &Histogram<u64>,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);
    let t_max = points.last().map_or(1.0, |p| p.0).max(0.001);
    let l_max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(0.001);
    let mut chart = ChartBuilder::on(&top)
        .caption("latency over time", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..t_max, 0.0..l_max)?;
    chart
        .configure_mesh()
        .x_desc("s since start")
        .y_desc("ms")
        .draw()?;
    chart.draw_series(
        points
            .iter()
            .map(|(t, l)| Circle::new((*t, *l), 1, BLUE.filled())),
    )?;
    let buckets: Vec<(f64, u64)> = h
        .iter_log(1, 1.25)
        .map(|v| {
            (
                v.value_iterated_to() as f64 / 1000.0,
                v.count_since_last_iteration(),
            )
        })
        .collect();
    let c_max = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1);
    let mut hist = ChartBuilder::on(&bottom)
        .caption("latency histogram (log buckets)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d((0.001f64..l_max.max(0.002)).log_scale(), 0u64..c_max)?;
    hist.configure_mesh()
        .x_desc("ms")
        .y_desc("requests")
        .draw()?;
    hist.draw_series(buckets.iter().filter(|b| b.0 > 0.0).map(|(ms, count)| {
        Rectangle::new([(*ms / 1.25, 0), (*ms, *count)], RED.mix(0.6).filled())
    }))?;
    root.present()?;
    Ok(())
}
