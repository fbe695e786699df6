//! The filter API, as geth has it: `eth_newFilter`, `eth_newBlockFilter`,
//! `eth_newPendingTransactionFilter`, `eth_getFilterChanges`,
//! `eth_getFilterLogs` and `eth_uninstallFilter`.
//!
//! Filters live in one table shared by every net core (a client's polls may
//! reach any core: connections are spread with SO_REUSEPORT). A filter not
//! polled for [`FILTER_IDLE_TIMEOUT`] is removed, as geth does after 5
//! minutes, and the table holds at most [`FILTERS_MAX`]. Ids are 128-bit,
//! unguessable (keccak of a per-process secret and a counter), so one
//! client cannot poll or remove another's filter.
//!
//! What each kind returns from `eth_getFilterChanges`, since its creation
//! or its last poll:
//! - logs: the matching logs of the blocks sealed since (within the
//!   filter's `fromBlock`/`toBlock`), each block once;
//! - blocks: the hashes of the blocks sealed since;
//! - pending transactions: the hashes of the transactions preconfirmed
//!   since (fulmen preconfirms each one as it arrives), each once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy_eips::BlockNumberOrTag;
use alloy_primitives::{B128, B256, keccak256};
use alloy_rpc_types_eth::{Filter, FilterBlockOption};
use fulmen_chain::view::ChainView;
use serde_json::Value;

use super::logs::{check_filter_size, filter_logs, sealed_logs};
use super::reply::ok;
use crate::limits::RpcLimits;
use crate::rpc::{Params, RpcError};

/// A filter not polled for this long is removed (geth: 5 minutes).
pub const FILTER_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Most filters installed at once on this node.
pub const FILTERS_MAX: usize = 10_000;

/// Most transaction hashes one poll of a pending filter answers (about
/// 670 KB of JSON); the rest waits for the next poll.
pub const PENDING_HASHES_PER_POLL_MAX: usize = 10_000;

/// Most addresses and topic values all installed logs filters name
/// together (a filter may name 1,000 addresses and 4,000 topic values, so
/// the count of filters alone would let them take gigabytes).
pub const FILTER_VALUES_MAX: usize = 1_000_000;

/// The filters of this node (shared by its net cores).
pub struct Filters {
    inner: Mutex<Inner>,
    idle_timeout: Duration,
    max: usize,
    /// Most hashes one poll of a pending filter answers.
    pending_per_poll: usize,
}

struct Inner {
    installed: HashMap<B128, Installed>,
    /// Addresses and topic values of the installed logs filters.
    values: usize,
    secret: B256,
    counter: u64,
}

struct Installed {
    kind: Kind,
    polled: Instant,
}

#[derive(Clone)]
enum Kind {
    Logs {
        filter: std::sync::Arc<Filter>,
        /// The first sealed block not yet read.
        next: u64,
        /// Transactions before this position (a block and an index in it)
        /// were preconfirmed before the filter was installed: their logs
        /// are not new to it, though their blocks seal later.
        skip: (u64, usize),
    },
    Blocks {
        /// The first sealed block not yet reported.
        next: u64,
    },
    PendingTxs {
        /// Where the first transaction not yet reported sits: a block
        /// (sealed or not) and an index in it. Blocks only grow at their
        /// end and keep their order when sealed, so a position is all a
        /// filter keeps, whatever the load.
        next: (u64, usize),
    },
}

impl Default for Filters {
    fn default() -> Self {
        Self::new(FILTER_IDLE_TIMEOUT, FILTERS_MAX)
    }
}

impl Filters {
    /// An empty table whose filters expire after `idle_timeout` unpolled,
    /// holding at most `max`.
    pub fn new(idle_timeout: Duration, max: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                installed: HashMap::new(),
                values: 0,
                secret: process_secret(),
                counter: 0,
            }),
            idle_timeout,
            max,
            pending_per_poll: PENDING_HASHES_PER_POLL_MAX,
        }
    }

    /// Filters installed now (expired ones included until the next call).
    pub fn len(&self) -> usize {
        self.lock().installed.len()
    }

    /// True when none is installed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every
        // update is a single insert or remove): go on with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers a filter method; `None` for any other method.
    pub(crate) fn method(
        &self,
        limits: &RpcLimits,
        view: &ChainView,
        method: &str,
        params: &Params,
    ) -> Option<Result<Value, RpcError>> {
        let answer = match method {
            "eth_newFilter" => self.new_logs_filter(view, params),
            "eth_newBlockFilter" => params.at_most(0).and_then(|()| {
                self.install(Kind::Blocks {
                    next: view.head().header.number + 1,
                })
            }),
            "eth_newPendingTransactionFilter" => params.at_most(1).and_then(|()| {
                let open = view.open();
                self.install(Kind::PendingTxs {
                    next: (open.ctx.number, open.txs.len()),
                })
            }),
            "eth_getFilterChanges" => self.changes(limits, view, params),
            "eth_getFilterLogs" => self.logs(limits, view, params),
            "eth_uninstallFilter" => filter_id(params).and_then(|id| {
                let mut inner = self.lock();
                self.expire(&mut inner);
                let removed = inner.installed.remove(&id);
                inner.values -= removed.as_ref().map_or(0, |f| f.kind.values());
                ok(removed.is_some())
            }),
            _ => return None,
        };
        Some(answer)
    }

    fn new_logs_filter(&self, view: &ChainView, params: &Params) -> Result<Value, RpcError> {
        params.at_most(1)?;
        let filter: Filter = params.required(0, "filter")?;
        check_filter_size(&filter, 0)?;
        if matches!(filter.block_option, FilterBlockOption::AtBlockHash(_)) {
            return Err(RpcError::invalid_params(
                "invalid argument 0 (filter): eth_newFilter takes fromBlock/toBlock, not blockHash \
                 (use eth_getLogs for one block)",
            ));
        }
        let open = view.open();
        self.install(Kind::Logs {
            filter: std::sync::Arc::new(filter),
            next: view.head().header.number + 1,
            skip: (open.ctx.number, open.txs.len()),
        })
    }

    /// Installs a filter; its id, or an error when the table is full.
    fn install(&self, kind: Kind) -> Result<Value, RpcError> {
        let mut inner = self.lock();
        self.expire(&mut inner);
        let values = kind.values();
        if inner.installed.len() >= self.max || inner.values + values > FILTER_VALUES_MAX {
            return Err(RpcError::server(format!(
                "too many filters installed ({} filters, {} addresses and topic values; limits {} \
                 and {FILTER_VALUES_MAX}): uninstall some (eth_uninstallFilter), or let idle ones \
                 expire after {} s",
                inner.installed.len(),
                inner.values,
                self.max,
                self.idle_timeout.as_secs()
            )));
        }
        inner.values += values;
        inner.counter += 1;
        let mut seed = inner.secret.to_vec();
        seed.extend_from_slice(&inner.counter.to_be_bytes());
        let id = B128::from_slice(&keccak256(&seed)[..16]);
        inner.installed.insert(
            id,
            Installed {
                kind,
                polled: Instant::now(),
            },
        );
        ok(id)
    }

    /// Removes the filters not polled within the timeout.
    fn expire(&self, inner: &mut Inner) {
        let now = Instant::now();
        let mut freed = 0;
        inner.installed.retain(|_, f| {
            let keep = now.duration_since(f.polled) < self.idle_timeout;
            if !keep {
                freed += f.kind.values();
            }
            keep
        });
        inner.values -= freed;
    }

    /// The filter `params` names, marked as polled now.
    fn polled(&self, params: &Params) -> Result<(B128, Kind), RpcError> {
        let id = filter_id(params)?;
        let mut inner = self.lock();
        self.expire(&mut inner);
        let installed = inner.installed.get_mut(&id).ok_or_else(not_found)?;
        installed.polled = Instant::now();
        Ok((id, installed.kind.clone()))
    }

    fn changes(
        &self,
        limits: &RpcLimits,
        view: &ChainView,
        params: &Params,
    ) -> Result<Value, RpcError> {
        let (id, kind) = self.polled(params)?;
        let head = view.head().header.number;
        // Computed without the lock; then the filter moves on (unless it
        // was removed meanwhile).
        let (answer, moved) = match kind {
            Kind::Logs {
                filter,
                mut next,
                skip,
            } => {
                let (low, high) = bounds(&filter);
                let to = head.min(high);
                let mut logs = Vec::new();
                loop {
                    // An idle filter's next block may have been pruned since.
                    let from = next.max(low).max(view.oldest_block());
                    if from > to {
                        next = next.max(head + 1);
                        break;
                    }
                    // Past the limits, the rest waits for the next poll.
                    let (read, read_to) = sealed_logs(limits, view, &filter, (from, to))?;
                    next = if read_to > to { head + 1 } else { read_to };
                    logs = read;
                    if from > skip.0 {
                        break;
                    }
                    logs.retain(|log| {
                        let at = (
                            log.block_number.unwrap_or_default(),
                            log.transaction_index.unwrap_or_default() as usize,
                        );
                        at >= skip
                    });
                    // All skipped: read on rather than answer nothing.
                    if !logs.is_empty() || next > to {
                        break;
                    }
                }
                (ok(logs)?, Kind::Logs { filter, next, skip })
            }
            Kind::Blocks { next } => {
                // Hashes, not blocks: recent ones are in RAM, older ones
                // read only their headers from the history store.
                let hashes: Vec<B256> = (next..=head).filter_map(|n| view.block_hash(n)).collect();
                (ok(hashes)?, Kind::Blocks { next: head + 1 })
            }
            Kind::PendingTxs {
                next: (block, index),
            } => {
                let open = view.open();
                let mut new = Vec::new();
                let mut next = (open.ctx.number, open.txs.len());
                for number in block..=open.ctx.number {
                    let from = if number == block { index } else { 0 };
                    let hashes = tx_hashes_of(view, number);
                    let room = self.pending_per_poll - new.len();
                    let take = hashes.len().saturating_sub(from).min(room);
                    new.extend_from_slice(&hashes[from.min(hashes.len())..][..take]);
                    if new.len() == self.pending_per_poll {
                        // The rest waits for the next poll.
                        next = (number, from + take);
                        break;
                    }
                }
                (ok(new)?, Kind::PendingTxs { next })
            }
        };
        if let Some(installed) = self.lock().installed.get_mut(&id) {
            installed.kind = moved;
        }
        Ok(answer)
    }

    fn logs(
        &self,
        limits: &RpcLimits,
        view: &ChainView,
        params: &Params,
    ) -> Result<Value, RpcError> {
        let (_, kind) = self.polled(params)?;
        match kind {
            Kind::Logs { filter, .. } => ok(filter_logs(limits, view, &filter)?),
            _ => Err(RpcError::server(
                "filter not found: eth_getFilterLogs takes a logs filter (eth_newFilter)",
            )),
        }
    }
}

impl Kind {
    /// Addresses and topic values it names (what bounds its memory).
    fn values(&self) -> usize {
        match self {
            Kind::Logs { filter, .. } => {
                filter.address.len() + filter.topics.iter().map(|t| t.len()).sum::<usize>()
            }
            Kind::Blocks { .. } | Kind::PendingTxs { .. } => 0,
        }
    }
}

/// The hashes of block `number`'s transactions, sealed or not.
fn tx_hashes_of(view: &ChainView, number: u64) -> Vec<B256> {
    match view.block(number) {
        Some(block) => block.txs.iter().map(|tx| tx.tx.hash).collect(),
        None => view
            .unsealed()
            .find(|b| b.ctx.number == number)
            .map(|b| b.txs.iter().map(|tx| tx.tx.hash).collect())
            .unwrap_or_default(),
    }
}

/// The block bounds of a logs filter's changes: numbers bound them; tags
/// (`latest`, `pending`, ...) and none leave them open.
fn bounds(filter: &Filter) -> (u64, u64) {
    let FilterBlockOption::Range {
        from_block,
        to_block,
    } = filter.block_option
    else {
        return (0, u64::MAX);
    };
    let low = match from_block {
        Some(BlockNumberOrTag::Number(n)) => n,
        _ => 0,
    };
    let high = match to_block {
        Some(BlockNumberOrTag::Number(n)) => n,
        Some(BlockNumberOrTag::Earliest) => 0,
        _ => u64::MAX,
    };
    (low, high)
}

fn filter_id(params: &Params) -> Result<B128, RpcError> {
    params.at_most(1)?;
    let id: Value = params.required(0, "filter id")?;
    let text = id.as_str().unwrap_or_default();
    let digits = text.strip_prefix("0x").unwrap_or(text);
    // Ids are answered as 32 hex digits; a shorter one (leading zeros
    // dropped by a client) is padded back.
    if digits.is_empty() || digits.len() > 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let padded = format!("{digits:0>32}");
    padded.parse::<B128>().map_err(|_| not_found())
}

fn not_found() -> RpcError {
    RpcError::server("filter not found")
}

/// 32 bytes no other process can predict: from the kernel's RNG, or (if
/// it cannot be read) the clock and the process id.
fn process_secret() -> B256 {
    let mut bytes = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if read.is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return keccak256(
            [
                now.to_be_bytes().as_slice(),
                &std::process::id().to_be_bytes(),
            ]
            .concat(),
        );
    }
    B256::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::testkit::{self, params};
    use serde_json::json;

    fn call(
        filters: &Filters,
        view: &ChainView,
        method: &str,
        args: Value,
    ) -> Result<Value, RpcError> {
        filters
            .method(&RpcLimits::default(), view, method, &params(args))
            .expect("a filter method")
    }

    fn pending_filter(filters: &Filters, view: &ChainView) -> Value {
        call(filters, view, "eth_newPendingTransactionFilter", json!([])).unwrap()
    }

    #[test]
    fn each_kind_reports_what_happened_since_its_last_poll_once() {
        let filters = Filters::default();
        let (before, after) = (testkit::chain(2), testkit::chain(4));
        let logs = call(
            &filters,
            &before,
            "eth_newFilter",
            json!([{"fromBlock": "0x1"}]),
        )
        .unwrap();
        let topic3 = call(
            &filters,
            &before,
            "eth_newFilter",
            json!([{"topics": [testkit::topic(3)]}]),
        )
        .unwrap();
        let blocks = call(&filters, &before, "eth_newBlockFilter", json!([])).unwrap();
        let pending = pending_filter(&filters, &before);
        assert_eq!(filters.len(), 4);
        // Nothing new yet.
        for id in [&logs, &blocks, &pending] {
            assert_eq!(
                call(&filters, &before, "eth_getFilterChanges", json!([id])).unwrap(),
                json!([])
            );
        }
        // Blocks 3 and 4 sealed (and a new open block).
        let got = call(&filters, &after, "eth_getFilterChanges", json!([logs])).unwrap();
        let numbers: Vec<&Value> = got
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l["blockNumber"])
            .collect();
        // Block 3's tx was preconfirmed (open) when the filter was made: its
        // log is not new to the filter (the client had it), block 4's is.
        assert_eq!(numbers, vec![&json!("0x4")]);
        let got = call(&filters, &after, "eth_getFilterChanges", json!([topic3])).unwrap();
        assert_eq!(got, json!([]));
        let got = call(&filters, &after, "eth_getFilterChanges", json!([blocks])).unwrap();
        let want: Vec<B256> = (3..=4).map(|n| after.block(n).unwrap().hash).collect();
        assert_eq!(got, json!(want));
        // Block 3's tx was preconfirmed (open) when the filter was made:
        // not new; block 4's and the new open one's are.
        let got = call(&filters, &after, "eth_getFilterChanges", json!([pending])).unwrap();
        assert_eq!(got.as_array().map(Vec::len), Some(2), "{got}");
        // Each once.
        for id in [&logs, &topic3, &blocks, &pending] {
            assert_eq!(
                call(&filters, &after, "eth_getFilterChanges", json!([id])).unwrap(),
                json!([])
            );
        }
        // The whole range again, on request: blocks 1..=4 and the
        // preconfirmed one, as eth_getLogs answers.
        let all = call(&filters, &after, "eth_getFilterLogs", json!([logs])).unwrap();
        assert_eq!(all.as_array().map(Vec::len), Some(5), "{all}");
        assert!(call(&filters, &after, "eth_getFilterLogs", json!([blocks])).is_err());
        assert_eq!(
            call(&filters, &after, "eth_uninstallFilter", json!([logs])).unwrap(),
            json!(true)
        );
        assert_eq!(
            call(&filters, &after, "eth_uninstallFilter", json!([logs])).unwrap(),
            json!(false)
        );
        let gone = call(&filters, &after, "eth_getFilterChanges", json!([logs])).unwrap_err();
        assert_eq!(gone.message, "filter not found");
    }

    #[test]
    fn a_long_unpolled_filter_catches_up_over_several_polls_losing_nothing() {
        let (before, after) = (testkit::chain(2), testkit::chain(6));
        let filters = Filters {
            pending_per_poll: 3,
            ..Filters::default()
        };
        let pending = pending_filter(&filters, &before);
        let logs = call(&filters, &before, "eth_newFilter", json!([{}])).unwrap();
        // Blocks 4..=6 and the open block 7 each add one tx (block 3's was
        // preconfirmed when the filter was made): 3, then 1, then none.
        let sizes: Vec<usize> = (0..3)
            .map(|_| {
                let got = call(&filters, &after, "eth_getFilterChanges", json!([pending])).unwrap();
                got.as_array().map_or(0, Vec::len)
            })
            .collect();
        assert_eq!(sizes, vec![3, 1, 0]);
        // One log per poll when one fits: blocks 4..=6 in order (block 3's
        // was preconfirmed before the filter), then none.
        let one = RpcLimits {
            logs_max: 1,
            ..RpcLimits::default()
        };
        let poll = || {
            filters
                .method(&one, &after, "eth_getFilterChanges", &params(json!([logs])))
                .expect("a filter method")
                .unwrap()
        };
        for n in 4..=6 {
            assert_eq!(poll()[0]["blockNumber"], json!(format!("{n:#x}")));
        }
        assert_eq!(poll(), json!([]));
    }

    #[test]
    fn idle_filters_expire_the_table_is_bounded_and_bad_input_is_refused() {
        let view = testkit::chain(2);
        let filters = Filters::new(Duration::from_millis(50), 2);
        let a = call(&filters, &view, "eth_newBlockFilter", json!([])).unwrap();
        call(&filters, &view, "eth_newBlockFilter", json!([])).unwrap();
        let full = call(&filters, &view, "eth_newBlockFilter", json!([])).unwrap_err();
        assert!(
            full.message
                .starts_with("too many filters installed (2 filters"),
            "{}",
            full.message
        );
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(
            call(&filters, &view, "eth_getFilterChanges", json!([a]))
                .unwrap_err()
                .message,
            "filter not found"
        );
        assert_eq!(filters.len(), 0);
        for bad in [json!([]), json!(["0xzz"]), json!([7]), json!(["0x"])] {
            assert!(call(&filters, &view, "eth_getFilterChanges", bad).is_err());
        }
        let by_hash = json!([{"blockHash": B256::ZERO}]);
        assert_eq!(
            call(&filters, &view, "eth_newFilter", by_hash)
                .unwrap_err()
                .code,
            -32602
        );
        // Addresses and topic values are bounded across filters too.
        let filters = Filters::default();
        let many: Vec<String> = (0..1000).map(|i| format!("{:#042x}", i + 1)).collect();
        let mut installed = Vec::new();
        let refused = loop {
            match call(&filters, &view, "eth_newFilter", json!([{"address": many}])) {
                Ok(id) => installed.push(id),
                Err(e) => break e,
            }
            assert!(installed.len() <= FILTER_VALUES_MAX / 1000, "no bound");
        };
        assert_eq!(installed.len(), FILTER_VALUES_MAX / 1000);
        assert!(
            refused.message.contains("addresses and topic values"),
            "{}",
            refused.message
        );
        call(
            &filters,
            &view,
            "eth_uninstallFilter",
            json!([installed[0]]),
        )
        .unwrap();
        assert!(call(&filters, &view, "eth_newFilter", json!([{"address": many}])).is_ok());
        // An id with its leading zeros dropped still names the filter.
        let filters = Filters::default();
        let id = call(&filters, &view, "eth_newBlockFilter", json!([])).unwrap();
        let text = id.as_str().unwrap();
        let short = format!(
            "0x{}",
            text.trim_start_matches("0x").trim_start_matches('0')
        );
        assert!(call(&filters, &view, "eth_getFilterChanges", json!([short])).is_ok());
    }
}
