//! `eth_subscribe` on a net core: the subscription kinds, their JSON, and the
//! fan-out of the seq core's durable events to this core's WebSocket
//! connections. Each event is rendered at most once per core and kind; a
//! subscriber costs one small string (its id around the shared result).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering::Relaxed;

use alloy_eips::BlockNumberOrTag;
use alloy_primitives::{Address, B256, U256};
use alloy_rpc_types_eth::{Filter, FilterBlockOption, Log};
use fulmen_chain::AccountState;
use fulmen_chain::events::{ChainEvent, MiniBlockEvent, Published};
use fulmen_chain::metrics::METRICS;
use fulmen_chain::msg::SeqControl;
use futures::channel::mpsc;
use serde_json::{Value, json};

use crate::convert;
use crate::eth::logs::check_filter_size;
use crate::outbox::{CLOSE_TRY_LATER, Outbox};
use crate::rpc::{Params, RpcError};

/// Most addresses one `stateChanges` subscription may name.
pub const STATE_CHANGES_ADDRESSES_MAX: usize = 1024;

/// What a subscription receives.
#[derive(Debug)]
pub enum Kind {
    /// Each sealed block's header.
    NewHeads,
    /// Each matching log, once, when its mini-block is durable.
    Logs(Box<Filter>),
    /// Each preconfirmed transaction: its hash, or the object when `full`.
    PendingTransactions {
        /// Full transaction objects instead of hashes.
        full: bool,
    },
    /// Each durable mini-block.
    MiniBlocks,
    /// Each changed account per mini-block, optionally only these.
    StateChanges(Option<HashSet<Address>>),
}

impl Kind {
    /// Parses `eth_subscribe`'s parameters.
    pub fn parse(params: &Params) -> Result<Self, RpcError> {
        params.at_most(2)?;
        let name: String = params.required(0, "subscription name")?;
        match name.as_str() {
            "newHeads" => {
                params.at_most(1)?;
                Ok(Self::NewHeads)
            }
            "logs" => {
                let filter: Filter = params.optional(1, "filter")?.unwrap_or_default();
                check_filter_size(&filter, 1)?;
                match filter.block_option {
                    FilterBlockOption::Range {
                        from_block:
                            None | Some(BlockNumberOrTag::Latest | BlockNumberOrTag::Pending),
                        to_block: None | Some(BlockNumberOrTag::Latest | BlockNumberOrTag::Pending),
                    } => Ok(Self::Logs(Box::new(filter))),
                    _ => Err(RpcError::invalid_params(
                        "invalid argument 1 (filter): a logs subscription takes address and \
                         topics only (use eth_getLogs for past blocks)",
                    )),
                }
            }
            "newPendingTransactions" => {
                let full: bool = params.optional(1, "full")?.unwrap_or(false);
                Ok(Self::PendingTransactions { full })
            }
            "miniBlocks" => {
                params.at_most(1)?;
                Ok(Self::MiniBlocks)
            }
            "stateChanges" => {
                let addresses: Option<Vec<Address>> = params.optional(1, "addresses")?;
                if let Some(list) = &addresses
                    && list.len() > STATE_CHANGES_ADDRESSES_MAX
                {
                    return Err(RpcError::invalid_params(format!(
                        "invalid argument 1 (addresses): {} addresses, limit {STATE_CHANGES_ADDRESSES_MAX}",
                        list.len()
                    )));
                }
                Ok(Self::StateChanges(
                    addresses.map(|list| list.into_iter().collect()),
                ))
            }
            other => Err(RpcError::invalid_params(format!(
                "invalid argument 0 (subscription name): unsupported subscription {other:?}; \
                 supported: newHeads, logs, newPendingTransactions, miniBlocks, stateChanges"
            ))),
        }
    }
}

/// One subscription of a connection.
#[derive(Debug)]
struct Subscription {
    id: String,
    kind: Kind,
    /// False until the `eth_subscribe` response is queued, so that no
    /// notification overtakes it.
    active: bool,
}

/// One WebSocket connection as the fan-out sees it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) outbox: Outbox,
    subscriptions: RefCell<Vec<Subscription>>,
    /// The net core's hub, told when subscriptions come and go.
    hub: Rc<Hub>,
}

impl Conn {
    pub(crate) fn new(outbox: Outbox, hub: Rc<Hub>) -> Self {
        Self {
            outbox,
            subscriptions: RefCell::new(Vec::new()),
            hub,
        }
    }

    /// Adds an inactive subscription; `None` past `max`.
    fn add(&self, kind: Kind, id: String, max: usize) -> Result<(), RpcError> {
        let mut subscriptions = self.subscriptions.borrow_mut();
        if subscriptions.len() >= max {
            return Err(RpcError::server(format!(
                "too many subscriptions on this connection: limit {max}; \
                 eth_unsubscribe one or open another connection"
            )));
        }
        subscriptions.push(Subscription {
            id,
            kind,
            active: false,
        });
        self.hub.count_subscriptions(1, 0);
        Ok(())
    }

    /// Starts delivering to subscription `id`.
    pub(crate) fn activate(&self, id: &str) {
        for sub in self.subscriptions.borrow_mut().iter_mut() {
            if sub.id == id {
                sub.active = true;
            }
        }
    }

    pub(crate) fn remove(&self, id: &str) -> bool {
        let mut subscriptions = self.subscriptions.borrow_mut();
        let before = subscriptions.len();
        subscriptions.retain(|s| s.id != id);
        let removed = before - subscriptions.len();
        self.hub.count_subscriptions(0, removed);
        removed > 0
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let n = self.subscriptions.borrow().len();
        self.hub.count_subscriptions(0, n);
    }
}

/// This net core's subscriptions.
#[derive(Debug)]
pub struct Hub {
    conns: RefCell<Vec<Weak<Conn>>>,
    /// Seeds subscription ids: unique per node and not guessable from another
    /// connection's ids.
    id_seed: B256,
    id_counter: Cell<u64>,
    /// Position of the next event this core expects.
    next_position: Cell<Option<u64>>,
    /// Subscriptions on this core.
    subscriptions: Cell<usize>,
    /// Tells the seq core whether this core has subscribers (it builds
    /// events only while some core has), and what it was last told.
    seq_control: SubscriberReport,
}

/// How a net core reports its subscribers to the seq core.
#[derive(Debug)]
struct SubscriberReport {
    core: usize,
    to_seq: RefCell<mpsc::Sender<SeqControl>>,
    reported_any: Cell<bool>,
}

impl Hub {
    /// An empty hub for net core `core`, which tells the seq core over
    /// `to_seq` whether it has subscribers.
    pub fn new(core: usize, to_seq: mpsc::Sender<SeqControl>) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let thread = format!("{:?}", std::thread::current().id());
        let seed = alloy_primitives::keccak256(
            [
                &now.to_le_bytes()[..],
                &std::process::id().to_le_bytes(),
                thread.as_bytes(),
            ]
            .concat(),
        );
        Self {
            conns: RefCell::new(Vec::new()),
            id_seed: seed,
            id_counter: Cell::new(0),
            next_position: Cell::new(None),
            subscriptions: Cell::new(0),
            seq_control: SubscriberReport {
                core,
                to_seq: RefCell::new(to_seq),
                reported_any: Cell::new(false),
            },
        }
    }

    /// Counts subscriptions `added` and `removed` on this core; on the first
    /// one or the last one gone, tells the seq core.
    fn count_subscriptions(&self, added: usize, removed: usize) {
        METRICS.ws_subscriptions.fetch_add(added as u64, Relaxed);
        METRICS.ws_subscriptions.fetch_sub(removed as u64, Relaxed);
        let count = self.subscriptions.get() + added;
        assert!(removed <= count, "only existing subscriptions are removed");
        self.subscriptions.set(count - removed);
        let report = &self.seq_control;
        let any = count - removed > 0;
        if any == report.reported_any.get() {
            return;
        }
        let message = SeqControl::Subscribers {
            core: report.core,
            any,
        };
        // Each sender has a guaranteed slot and the seq core reads control
        // messages at once, so this fails only if the seq core is gone; a
        // failed report is retried at the next change.
        match report.to_seq.borrow_mut().try_send(message) {
            Ok(()) => report.reported_any.set(any),
            Err(e) => tracing::warn!(error = %e, "cannot tell the seq core about subscribers"),
        }
    }

    pub(crate) fn register(&self, conn: &Rc<Conn>) {
        let mut conns = self.conns.borrow_mut();
        conns.retain(|c| c.strong_count() > 0);
        conns.push(Rc::downgrade(conn));
    }

    fn next_id(&self) -> String {
        let n = self.id_counter.get();
        self.id_counter.set(n + 1);
        let digest = alloy_primitives::keccak256([&self.id_seed[..], &n.to_le_bytes()].concat());
        format!("0x{}", alloy_primitives::hex::encode(&digest[..16]))
    }

    /// `eth_subscribe` on `conn`: the new id (inactive until activated).
    pub(crate) fn subscribe(
        &self,
        conn: &Conn,
        params: &Params,
        max: usize,
    ) -> Result<String, RpcError> {
        let kind = Kind::parse(params)?;
        let id = self.next_id();
        conn.add(kind, id.clone(), max)?;
        Ok(id)
    }

    /// `eth_unsubscribe` on `conn`.
    pub(crate) fn unsubscribe(conn: &Conn, params: &Params) -> Result<bool, RpcError> {
        params.at_most(1)?;
        let id: String = params.required(0, "subscription id")?;
        Ok(conn.remove(&id))
    }

    /// Delivers one event to every matching subscription on this core. A gap
    /// in positions (this core's channel overflowed) closes every
    /// subscribed connection: a subscriber never silently misses an event.
    pub fn deliver(&self, published: &Published) {
        if let Some(expected) = self.next_position.get()
            && published.position != expected
        {
            let reason = format!(
                "this net core fell behind and missed {} chain events; resubscribe",
                published.position.saturating_sub(expected)
            );
            tracing::warn!(reason = %reason, "closing subscribed connections");
            for conn in self.conns.borrow().iter().filter_map(Weak::upgrade) {
                if !conn.subscriptions.borrow().is_empty() {
                    conn.outbox.close(CLOSE_TRY_LATER, reason.clone());
                }
            }
        }
        self.next_position.set(Some(published.position + 1));
        let mut conns: Vec<Rc<Conn>> = self
            .conns
            .borrow()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        if conns.iter().all(|c| c.subscriptions.borrow().is_empty()) {
            return;
        }
        // The furthest behind go first: when the node-wide send budget runs
        // out, they are the ones closed, and the budget they free lets the
        // connections that keep up receive this event.
        let behind = conns.iter().filter(|c| c.outbox.outstanding() > 0).count();
        if behind > 0 {
            conns.sort_by_key(|c| std::cmp::Reverse(c.outbox.outstanding()));
        }
        let mut rendered = Rendered::new(&published.event);
        for conn in conns {
            let mut out = Vec::new();
            for sub in conn.subscriptions.borrow().iter().filter(|s| s.active) {
                rendered.notifications(sub, &mut out);
            }
            for text in out {
                METRICS.ws_notifications.fetch_add(1, Relaxed);
                if conn.outbox.push(text).is_err() {
                    break;
                }
            }
        }
    }
}

/// The `eth_subscription` message of subscription `id` with `result` (JSON).
fn notification(id: &str, result: &str) -> String {
    let mut out = String::with_capacity(result.len() + 96);
    out.push_str(r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":""#);
    out.push_str(id);
    out.push_str(r#"","result":"#);
    out.push_str(result);
    out.push_str("}}");
    out
}

/// An event's results, rendered on first use.
struct Rendered<'a> {
    event: &'a ChainEvent,
    head: Option<String>,
    mini_block: Option<String>,
    logs: Option<Vec<(Log, String)>>,
    hashes: Option<Vec<String>>,
    full_txs: Option<Vec<String>>,
    state_changes: Option<Vec<(Address, String)>>,
}

impl<'a> Rendered<'a> {
    fn new(event: &'a ChainEvent) -> Self {
        Self {
            event,
            head: None,
            mini_block: None,
            logs: None,
            hashes: None,
            full_txs: None,
            state_changes: None,
        }
    }

    /// Appends the notifications `sub` gets for this event.
    fn notifications(&mut self, sub: &Subscription, out: &mut Vec<String>) {
        let id = sub.id.as_str();
        match (self.event, &sub.kind) {
            (ChainEvent::Sealed(block), Kind::NewHeads) => {
                let head = self
                    .head
                    .get_or_insert_with(|| to_json(&convert::header(block)));
                out.push(notification(id, head));
            }
            (ChainEvent::Sealed(_), _) | (ChainEvent::MiniBlock(_), Kind::NewHeads) => {}
            (ChainEvent::MiniBlock(mini), Kind::Logs(filter)) => {
                let logs = self.logs.get_or_insert_with(|| render_logs(mini));
                for (log, json) in logs.iter() {
                    if filter.matches_address(log.address()) && filter.matches_topics(log.topics())
                    {
                        out.push(notification(id, json));
                    }
                }
            }
            (ChainEvent::MiniBlock(mini), Kind::PendingTransactions { full }) => {
                let items = if *full {
                    self.full_txs.get_or_insert_with(|| {
                        mini.txs
                            .iter()
                            .map(|tx| to_json(&convert::transaction(tx, None)))
                            .collect()
                    })
                } else {
                    self.hashes.get_or_insert_with(|| {
                        mini.txs.iter().map(|tx| to_json(&tx.tx.hash)).collect()
                    })
                };
                out.extend(items.iter().map(|item| notification(id, item)));
            }
            (ChainEvent::MiniBlock(mini), Kind::MiniBlocks) => {
                let json = self
                    .mini_block
                    .get_or_insert_with(|| render_mini_block(mini));
                out.push(notification(id, json));
            }
            (ChainEvent::MiniBlock(mini), Kind::StateChanges(filter)) => {
                let changes = self
                    .state_changes
                    .get_or_insert_with(|| render_state_changes(mini));
                for (address, json) in changes.iter() {
                    if filter.as_ref().is_none_or(|f| f.contains(address)) {
                        out.push(notification(id, json));
                    }
                }
            }
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

fn render_logs(mini: &MiniBlockEvent) -> Vec<(Log, String)> {
    mini.txs
        .iter()
        .flat_map(|tx| convert::logs(tx, None))
        .map(|log| {
            let json = to_json(&log);
            (log, json)
        })
        .collect()
}

/// The `miniBlocks` result: MegaETH's realtime-API shape (snake_case).
pub fn mini_block_json(mini: &MiniBlockEvent) -> Value {
    json!({
        "block_number": mini.block,
        "block_timestamp": mini.block_timestamp,
        "index": mini.index,
        "mini_block_number": mini.number,
        "mini_block_timestamp": mini.timestamp_us,
        "gas_used": mini.gas_used,
        "transactions": mini.txs.iter().map(|tx| convert::transaction(tx, None)).collect::<Vec<_>>(),
        "receipts": mini.txs.iter().map(|tx| convert::receipt(tx, None)).collect::<Vec<_>>(),
    })
}

fn render_mini_block(mini: &MiniBlockEvent) -> String {
    to_json(&mini_block_json(mini))
}

/// The `stateChanges` results of a mini-block: each account whose nonce,
/// balance, code or storage differs after it, in the order the mini-block
/// first touched them; `storage` holds only the slots whose value changed.
pub fn state_changes_json(mini: &MiniBlockEvent) -> Vec<(Address, Value)> {
    let mut order: Vec<Address> = Vec::new();
    let mut slots: HashMap<Address, BTreeSet<U256>> = HashMap::new();
    for diff in &mini.diffs {
        for (address, _) in &diff.accounts {
            if !slots.contains_key(address) {
                order.push(*address);
                slots.insert(*address, BTreeSet::new());
            }
        }
        for (address, slot, _) in &diff.storage {
            if !slots.contains_key(address) {
                order.push(*address);
            }
            slots.entry(*address).or_default().insert(*slot);
        }
    }
    let mut out = Vec::new();
    for address in order {
        let before = mini.before.account(&address).copied();
        let after = mini.after.account(&address).copied();
        let mut storage = serde_json::Map::new();
        for slot in slots.get(&address).into_iter().flatten() {
            let value = mini.after.storage(&address, slot);
            if value != mini.before.storage(&address, slot) {
                storage.insert(
                    B256::from(*slot).to_string(),
                    Value::String(B256::from(value).to_string()),
                );
            }
        }
        if before == after && storage.is_empty() {
            continue;
        }
        // A missing account reads as an empty one (deleted, or not created).
        let empty = AccountState::funded(U256::ZERO);
        let code_before = before.unwrap_or(empty).code_hash;
        let after = after.unwrap_or(empty);
        let mut change = json!({
            "address": address,
            "nonce": after.nonce,
            "balance": after.balance,
            "storage": storage,
            "block_number": mini.block,
            "mini_block_number": mini.number,
        });
        if code_before != after.code_hash {
            change["code_hash"] = json!(after.code_hash);
        }
        out.push((address, change));
    }
    out
}

fn render_state_changes(mini: &MiniBlockEvent) -> Vec<(Address, String)> {
    state_changes_json(mini)
        .into_iter()
        .map(|(address, value)| (address, to_json(&value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::logs::{LOGS_FILTER_ADDRESSES_MAX, LOGS_FILTER_TOPIC_VALUES_MAX};
    use fulmen_chain::{HotState, StateDiff};

    fn params(values: Value) -> Params {
        Params(values.as_array().expect("an array").clone())
    }

    #[test]
    fn subscription_kinds_parse_with_clear_errors() {
        assert!(matches!(
            Kind::parse(&params(json!(["newHeads"]))),
            Ok(Kind::NewHeads)
        ));
        assert!(matches!(
            Kind::parse(&params(json!(["miniBlocks"]))),
            Ok(Kind::MiniBlocks)
        ));
        assert!(matches!(
            Kind::parse(&params(json!(["newPendingTransactions", true]))),
            Ok(Kind::PendingTransactions { full: true })
        ));
        let Ok(Kind::Logs(filter)) = Kind::parse(&params(json!(["logs", {
            "address": "0x0000000000000000000000000000000000000001",
            "topics": [null, ["0x0000000000000000000000000000000000000000000000000000000000000002"]]
        }]))) else {
            panic!("a logs filter")
        };
        assert!(filter.matches_address(Address::with_last_byte(1)));
        assert!(!filter.matches_address(Address::with_last_byte(2)));
        let Ok(Kind::StateChanges(Some(only))) = Kind::parse(&params(json!([
            "stateChanges",
            ["0x0000000000000000000000000000000000000003"]
        ]))) else {
            panic!("a state-changes filter")
        };
        assert!(only.contains(&Address::with_last_byte(3)));

        let error = |p: Value| Kind::parse(&params(p)).unwrap_err();
        let e = error(json!(["everything"]));
        assert_eq!(e.code, -32602);
        assert!(
            e.message.contains("supported: newHeads, logs"),
            "{}",
            e.message
        );
        assert!(
            error(json!(["logs", {"fromBlock": "0x5"}]))
                .message
                .contains("address and topics only")
        );
        assert!(
            error(json!(["logs", {"blockHash": B256::ZERO}]))
                .message
                .contains("address and topics only")
        );
        assert!(
            error(json!(["newHeads", {}]))
                .message
                .contains("too many arguments")
        );
        assert!(
            error(json!(["newPendingTransactions", "yes"]))
                .message
                .contains("argument 1 (full)")
        );
        let many: Vec<Address> = (0..=STATE_CHANGES_ADDRESSES_MAX as u64)
            .map(|i| Address::left_padding_from(&i.to_be_bytes()))
            .collect();
        assert!(
            error(json!(["stateChanges", many]))
                .message
                .contains("limit 1024")
        );
        assert!(error(json!([])).message.contains("subscription name"));
        let addresses: Vec<Address> = (0..=LOGS_FILTER_ADDRESSES_MAX as u64)
            .map(|i| Address::left_padding_from(&i.to_be_bytes()))
            .collect();
        let e = error(json!(["logs", {"address": addresses}]));
        assert_eq!(e.code, -32602);
        assert!(
            e.message.contains("1001 addresses, limit 1000"),
            "{}",
            e.message
        );
        let topics: Vec<B256> = (0..=LOGS_FILTER_TOPIC_VALUES_MAX as u64)
            .map(|i| B256::from(U256::from(i)))
            .collect();
        let e = error(json!(["logs", {"topics": [null, topics]}]));
        assert!(
            e.message.contains("1001 values for topic 1, limit 1000"),
            "{}",
            e.message
        );
        let many = (0..LOGS_FILTER_ADDRESSES_MAX as u64)
            .map(|i| Address::left_padding_from(&i.to_be_bytes()))
            .collect::<Vec<_>>();
        assert!(Kind::parse(&params(json!(["logs", {"address": many}]))).is_ok());
    }

    #[test]
    fn state_changes_report_only_what_really_changed() {
        let (a, b, c, d) = (
            Address::with_last_byte(0xa),
            Address::with_last_byte(0xb),
            Address::with_last_byte(0xc),
            Address::with_last_byte(0xd),
        );
        let funded = |balance: u64| AccountState::funded(U256::from(balance));
        let mut before = HotState::new();
        before.set_account(a, funded(100));
        before.set_account(b, funded(0));
        before.set_storage(b, U256::from(1), U256::from(5));
        before.set_account(d, funded(7));
        let code_hash = B256::repeat_byte(0xcc);
        let a_after = AccountState {
            nonce: 1,
            balance: U256::from(90),
            ..funded(0)
        };
        let c_after = AccountState {
            code_hash,
            ..funded(0)
        };
        let diffs = vec![
            StateDiff {
                accounts: vec![(a, Some(a_after)), (d, Some(funded(7)))],
                storage: vec![
                    (b, U256::from(1), U256::from(6)),
                    (b, U256::from(2), U256::from(7)),
                ],
                codes: vec![],
            },
            StateDiff {
                accounts: vec![(c, Some(c_after))],
                // Slot 2 goes back to what it was before the mini-block.
                storage: vec![(b, U256::from(2), U256::ZERO)],
                codes: vec![],
            },
        ];
        let mut after = before.clone();
        for diff in &diffs {
            after.apply(diff);
        }
        let mini = MiniBlockEvent {
            number: 9,
            block: 3,
            block_timestamp: 1,
            index: 2,
            timestamp_us: 1_000_000,
            gas_used: 0,
            txs: vec![],
            diffs,
            before,
            after,
        };
        let changes = state_changes_json(&mini);
        let addresses: Vec<Address> = changes.iter().map(|(address, _)| *address).collect();
        assert_eq!(addresses, vec![a, b, c], "d was touched but did not change");
        let (_, a_json) = &changes[0];
        assert_eq!(a_json["nonce"], json!(1));
        assert_eq!(a_json["balance"], json!("0x5a"));
        assert_eq!(a_json["storage"], json!({}));
        assert!(a_json.get("code_hash").is_none());
        assert_eq!(a_json["mini_block_number"], json!(9));
        let (_, b_json) = &changes[1];
        let slot = |n: u64| B256::from(U256::from(n)).to_string();
        assert_eq!(
            b_json["storage"],
            json!({ slot(1): B256::from(U256::from(6)) })
        );
        let (_, c_json) = &changes[2];
        assert_eq!(c_json["code_hash"], json!(code_hash));
    }

    #[test]
    fn a_notification_wraps_the_shared_result() {
        let text = notification("0xab", r#"{"x":1}"#);
        let value: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(
            value,
            json!({"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xab","result":{"x":1}}})
        );
    }
}
