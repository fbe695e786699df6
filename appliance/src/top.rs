//! `fulmen top`: a running node's per-core and node figures, refreshed in
//! the terminal, read from its Prometheus endpoint.

use crate::error::AppError;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};

/// One scrape, flattened: metric name plus sorted labels to value; and the
/// histograms' sums and counts.
#[derive(Default)]
struct Sample {
    values: BTreeMap<String, f64>,
    cores: BTreeMap<(u64, String), (f64, f64)>,
    at: Option<Instant>,
}

/// A `fulmen top` error about `url`.
fn top_error(url: &str, reason: impl std::fmt::Display) -> AppError {
    AppError::Top {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

fn fetch(url: &str) -> Result<String, AppError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| top_error(url, "only http:// URLs"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream =
        TcpStream::connect(host).map_err(|e| top_error(url, format!("cannot reach it: {e}")))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| top_error(url, e))?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| top_error(url, e))?;
    let mut text = String::new();
    // A metrics page is kilobytes; anything past 16 MiB is not one.
    stream
        .take(16 << 20)
        .read_to_string(&mut text)
        .map_err(|e| top_error(url, format!("reading: {e}")))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| top_error(url, "not an HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(top_error(url, head.lines().next().unwrap_or_default()));
    }
    Ok(body.to_string())
}

fn sample(url: &str) -> Result<Sample, AppError> {
    let body = fetch(url)?;
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .map_err(|e| top_error(url, format!("not Prometheus text: {e}")))?;
    let mut out = Sample {
        at: Some(Instant::now()),
        ..Default::default()
    };
    for s in scrape.samples {
        let label = |k: &str| s.labels.get(k).unwrap_or_default().to_string();
        if s.metric.starts_with("fulmen_core_") {
            let cpu = label("cpu").parse().unwrap_or(0);
            let entry = out.cores.entry((cpu, label("roles"))).or_default();
            match (&s.metric[..], &s.value) {
                ("fulmen_core_busy_ratio", Value::Gauge(v)) => entry.0 = *v,
                ("fulmen_core_tasks_total", Value::Counter(v)) => entry.1 = *v,
                _ => {}
            }
            continue;
        }
        let key = match s.labels.iter().next() {
            Some((k, v)) => format!("{}{{{k}={v}}}", s.metric),
            None => s.metric.clone(),
        };
        let value = match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(_) | Value::Summary(_) => continue,
        };
        out.values.insert(key, value);
    }
    Ok(out)
}

/// Per-second rate of `key` between two samples.
fn rate(now: &Sample, before: &Sample, key: &str, secs: f64) -> f64 {
    let a = now.values.get(key).copied().unwrap_or(0.0);
    let b = before.values.get(key).copied().unwrap_or(0.0);
    (a - b).max(0.0) / secs
}

/// Mean of a histogram between two samples, in ms.
fn mean_ms(now: &Sample, before: &Sample, name: &str) -> Option<f64> {
    let d = |k: &str| {
        now.values.get(k).copied().unwrap_or(0.0) - before.values.get(k).copied().unwrap_or(0.0)
    };
    let count = d(&format!("{name}_count"));
    (count > 0.0).then(|| d(&format!("{name}_sum")) / count * 1e3)
}

fn render(now: &Sample, before: &Sample) -> String {
    use std::fmt::Write;
    let secs = match (now.at, before.at) {
        (Some(a), Some(b)) => (a - b).as_secs_f64().max(1e-3),
        _ => 1.0,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>4}  {:<22} {:>6}  {:>10}",
        "cpu", "roles", "busy", "tasks/s"
    );
    for ((cpu, roles), (busy, tasks)) in &now.cores {
        let before_tasks = before
            .cores
            .get(&(*cpu, roles.clone()))
            .map_or(*tasks, |c| c.1);
        let _ = writeln!(
            out,
            "{cpu:>4}  {roles:<22} {:>5.1}%  {:>10.0}",
            busy * 100.0,
            (tasks - before_tasks).max(0.0) / secs
        );
    }
    let get = |k: &str| now.values.get(k).copied().unwrap_or(0.0);
    let rejected: f64 = now
        .values
        .iter()
        .filter(|(k, _)| k.starts_with("fulmen_txs_rejected_total"))
        .map(|(k, _)| rate(now, before, k, secs))
        .sum();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "txs/s received {:.0}  preconfirmed {:.0}  rejected {:.0}  parked {:.0}",
        rate(now, before, "fulmen_txs_received_total", secs),
        rate(now, before, "fulmen_preconfirmations_total", secs),
        rejected,
        rate(now, before, "fulmen_txs_parked_total", secs)
    );
    let _ = writeln!(
        out,
        "mini-blocks/s {:.0} (waited {:.0})  blocks {:.0}  seq inbox {:.0}  storage in flight {:.0}",
        rate(now, before, "fulmen_mini_blocks_total", secs),
        rate(now, before, "fulmen_group_commit_waits_total", secs),
        get("fulmen_blocks_total"),
        get("fulmen_queue_depth{queue=seq_inbox}"),
        get("fulmen_queue_depth{queue=storage}")
    );
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3} ms"));
    let _ = writeln!(
        out,
        "mean flush {}  mean sync send {}  accounts {:.0}  slots {:.0}",
        ms(mean_ms(now, before, "fulmen_log_flush_seconds")),
        ms(mean_ms(now, before, "fulmen_sync_send_seconds")),
        get("fulmen_state_accounts"),
        get("fulmen_state_slots")
    );
    if get("fulmen_da_running") > 0.0 {
        let _ = writeln!(
            out,
            "DA: L1 head {:.0}  safe {:.0}  finalized {:.0}  unposted {:.0} blocks ({:.2} MB)  \
             blobs {:.0} (fill {:.3})  compression {:.3}  L1 fees {:.0} gwei  replacements {:.0}  reorgs {:.0}",
            get("fulmen_da_l1_head"),
            get("fulmen_da_safe_block"),
            get("fulmen_da_finalized_block"),
            get("fulmen_da_unposted_blocks"),
            get("fulmen_da_unposted_bytes") / 1e6,
            get("fulmen_da_blobs_total"),
            get("fulmen_da_blob_fill_ratio"),
            get("fulmen_da_compression_ratio"),
            get("fulmen_da_l1_fees_paid_gwei_total"),
            get("fulmen_da_replacements_total"),
            get("fulmen_da_reorgs_total")
        );
        if get("fulmen_da_held_up") > 0.0 {
            let _ = writeln!(out, "DA: posting is held up (see the node's log)");
        }
    }
    out
}

/// Refreshes every `interval_ms` until interrupted, or `count` times.
pub(crate) fn run(url: &str, interval_ms: u64, count: u64) -> Result<(), AppError> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut before = sample(url)?;
    let mut shown = 0;
    loop {
        std::thread::sleep(Duration::from_millis(interval_ms.max(100)));
        let now = sample(url)?;
        let table = render(&now, &before);
        if tty {
            print!("\x1b[2J\x1b[H");
        }
        println!("fulmen top: {url}, every {interval_ms} ms\n");
        print!("{table}");
        let _ = std::io::stdout().flush();
        before = now;
        shown += 1;
        if count > 0 && shown >= count {
            return Ok(());
        }
    }
}
