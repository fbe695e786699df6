//! What subscriptions receive: the subscription kinds with their
//! parameters, and the JSON of their notifications. Pure functions of an
//! event: the live fan-out ([`crate::pubsub`]) and a resume read back from
//! the log ([`crate::resume`]) render alike.

use std::collections::{BTreeMap, HashMap, HashSet};

use alloy_eips::BlockNumberOrTag;
use alloy_primitives::{Address, B256, U256};
use alloy_rpc_types_eth::{Filter, FilterBlockOption, Log};
use fulmen_chain::AccountState;
use fulmen_chain::events::{ChainEvent, MiniBlockEvent};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::convert;
use crate::eth::logs::check_filter_size;
use crate::rpc::{Params, RpcError};

/// Most addresses one `stateChanges` subscription may name.
pub const STATE_CHANGES_ADDRESSES_MAX: usize = 1024;

/// What a subscription receives.
#[derive(Debug, Clone)]
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
    /// The log's records, mini-blocks and seals in log order, for replicas
    /// (`fulmen_chain::replication`).
    Replication,
}

/// A parsed `eth_subscribe`.
#[derive(Debug, Clone)]
pub struct Subscribe {
    /// What it receives.
    pub kind: Kind,
    /// `fromMiniBlock`: replay from this mini-block on, then go live
    /// (`miniBlocks`, `logs` and `stateChanges`).
    pub from: Option<u64>,
}

/// The resume option's name.
const FROM: &str = "fromMiniBlock";

/// Takes `fromMiniBlock` (a number or a hex quantity) out of the options
/// object `options` (argument `index`).
fn take_from(options: &mut Value, index: usize) -> Result<Option<u64>, RpcError> {
    let Some(value) = options.as_object_mut().and_then(|o| o.remove(FROM)) else {
        return Ok(None);
    };
    let number = match &value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s
            .strip_prefix("0x")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok()),
        _ => None,
    };
    number.map(Some).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "invalid argument {index} ({FROM}): want a mini-block number (a number or a hex quantity), got {value}"
        ))
    })
}

impl Subscribe {
    /// Parses `eth_subscribe`'s parameters, with `fromMiniBlock`.
    pub fn parse(params: &Params) -> Result<Self, RpcError> {
        params.at_most(2)?;
        let name: String = params.required(0, "subscription name")?;
        // The options without `fromMiniBlock`.
        let mut rest = params.clone();
        let from = match rest.0.get_mut(1) {
            Some(options) => take_from(options, 1)?,
            None => None,
        };
        let kind = match name.as_str() {
            "newHeads" => {
                params.at_most(1)?;
                Kind::NewHeads
            }
            "logs" => {
                let filter: Filter = rest.optional(1, "filter")?.unwrap_or_default();
                check_filter_size(&filter, 1)?;
                match filter.block_option {
                    FilterBlockOption::Range {
                        from_block:
                            None | Some(BlockNumberOrTag::Latest | BlockNumberOrTag::Pending),
                        to_block: None | Some(BlockNumberOrTag::Latest | BlockNumberOrTag::Pending),
                    } => Kind::Logs(Box::new(filter)),
                    _ => {
                        return Err(RpcError::invalid_params(
                            "invalid argument 1 (filter): a logs subscription takes address and \
                             topics only (use eth_getLogs for past blocks, or fromMiniBlock to \
                             resume)",
                        ));
                    }
                }
            }
            "newPendingTransactions" => {
                let full: bool = params.optional(1, "full")?.unwrap_or(false);
                Kind::PendingTransactions { full }
            }
            "miniBlocks" => {
                only_from(&rest, "miniBlocks")?;
                Kind::MiniBlocks
            }
            "stateChanges" => Kind::StateChanges(state_changes_addresses(&rest)?),
            "replication" => {
                only_from(&rest, "replication")?;
                Kind::Replication
            }
            other => {
                return Err(RpcError::invalid_params(format!(
                    "invalid argument 0 (subscription name): unsupported subscription {other:?}; \
                     supported: newHeads, logs, newPendingTransactions, miniBlocks, stateChanges, \
                     replication"
                )));
            }
        };
        if from.is_some() && matches!(kind, Kind::NewHeads | Kind::PendingTransactions { .. }) {
            return Err(RpcError::invalid_params(format!(
                "invalid argument 1: {FROM} applies to miniBlocks, logs, stateChanges and replication"
            )));
        }
        Ok(Self { kind, from })
    }
}

/// Refuses options other than `fromMiniBlock` (already taken out of
/// `rest`) for subscription `name`.
fn only_from(rest: &Params, name: &str) -> Result<(), RpcError> {
    if rest
        .0
        .get(1)
        .is_some_and(|o| o.as_object().is_none_or(|o| !o.is_empty()))
    {
        return Err(RpcError::invalid_params(format!(
            "invalid argument 1 (options): {name} takes only {{\"{FROM}\": N}}"
        )));
    }
    Ok(())
}

/// `stateChanges`' addresses: argument 1 is the list, or an object with
/// `addresses` (and `fromMiniBlock`, already taken out).
fn state_changes_addresses(params: &Params) -> Result<Option<HashSet<Address>>, RpcError> {
    let addresses: Option<Vec<Address>> = match params.0.get(1) {
        Some(Value::Object(options)) => {
            if let Some(key) = options.keys().find(|k| *k != "addresses") {
                return Err(RpcError::invalid_params(format!(
                    "invalid argument 1 (options): unknown key {key:?}; stateChanges takes \
                     addresses and {FROM}"
                )));
            }
            match options.get("addresses") {
                None | Some(Value::Null) => None,
                Some(list) => Some(Vec::<Address>::deserialize(list).map_err(|e| {
                    RpcError::invalid_params(format!("invalid argument 1 (addresses): {e}"))
                })?),
            }
        }
        _ => params.optional(1, "addresses")?,
    };
    if let Some(list) = &addresses
        && list.len() > STATE_CHANGES_ADDRESSES_MAX
    {
        return Err(RpcError::invalid_params(format!(
            "invalid argument 1 (addresses): {} addresses, limit {STATE_CHANGES_ADDRESSES_MAX}",
            list.len()
        )));
    }
    Ok(addresses.map(|list| list.into_iter().collect()))
}

/// The `eth_subscription` message of subscription `id` with `result` (JSON).
pub(crate) fn notification(id: &str, result: &str) -> String {
    let mut out = String::with_capacity(result.len() + 96);
    out.push_str(r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":""#);
    out.push_str(id);
    out.push_str(r#"","result":"#);
    out.push_str(result);
    out.push_str("}}");
    out
}

/// An event's results, rendered on first use.
pub(crate) struct Rendered<'a> {
    event: &'a ChainEvent,
    head: Option<String>,
    mini_block: Option<String>,
    logs: Option<Vec<(Log, String)>>,
    hashes: Option<Vec<String>>,
    full_txs: Option<Vec<String>>,
    state_changes: Option<Vec<(Address, String)>>,
    record: Option<String>,
}

impl<'a> Rendered<'a> {
    pub(crate) fn new(event: &'a ChainEvent) -> Self {
        Self {
            event,
            head: None,
            mini_block: None,
            logs: None,
            hashes: None,
            full_txs: None,
            state_changes: None,
            record: None,
        }
    }

    /// Appends the notifications subscription `id` of kind `kind` gets for
    /// this event.
    pub(crate) fn notifications(&mut self, id: &str, kind: &Kind, out: &mut Vec<String>) {
        match (self.event, kind) {
            (ChainEvent::Sealed(block), Kind::NewHeads) => {
                let head = self
                    .head
                    .get_or_insert_with(|| to_json(&convert::header(block)));
                out.push(notification(id, head));
            }
            (ChainEvent::Sealed(block), Kind::Replication) => {
                let record = self.record.get_or_insert_with(|| {
                    fulmen_chain::replication::seal_message(&block.header, &block.hash, block.size)
                });
                out.push(notification(id, record));
            }
            (ChainEvent::MiniBlock(mini), Kind::Replication) => {
                let record = self
                    .record
                    .get_or_insert_with(|| fulmen_chain::replication::mini_block_message(mini));
                out.push(notification(id, record));
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

/// Each log of `mini` with its JSON: geth's log object plus the
/// `mini_block_number` that preconfirmed it.
fn render_logs(mini: &MiniBlockEvent) -> Vec<(Log, String)> {
    let tail = format!(",\"mini_block_number\":{}}}", mini.number);
    mini.txs
        .iter()
        .flat_map(|tx| convert::logs(tx, None))
        .map(|log| {
            let mut json = to_json(&log);
            // An object: its closing brace gives way to one more field.
            if json.ends_with('}') {
                json.pop();
                json.push_str(&tail);
            }
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
        "mini_block_hash": mini.hash,
        "parent_mini_block_hash": mini.parent_hash,
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
/// Read from the diffs (the last value written wins) and their net changes,
/// so a mini-block read back from the log renders as it did live.
pub fn state_changes_json(mini: &MiniBlockEvent) -> Vec<(Address, Value)> {
    let mut order: Vec<Address> = Vec::new();
    let mut accounts: HashMap<Address, Option<AccountState>> = HashMap::new();
    let mut slots: HashMap<Address, BTreeMap<U256, U256>> = HashMap::new();
    for diff in &mini.diffs {
        for (address, account) in &diff.accounts {
            if !accounts.contains_key(address) && !slots.contains_key(address) {
                order.push(*address);
            }
            accounts.insert(*address, *account);
        }
        for (address, slot, value) in &diff.storage {
            if !accounts.contains_key(address) && !slots.contains_key(address) {
                order.push(*address);
            }
            slots.entry(*address).or_default().insert(*slot, *value);
        }
    }
    let net = &mini.net;
    let unchanged_slots: HashSet<&(Address, U256)> = net.unchanged_slots.iter().collect();
    let unchanged_accounts: HashSet<&Address> = net.unchanged_accounts.iter().collect();
    let code_changed: HashSet<&Address> = net.code_changed.iter().collect();
    let mut out = Vec::new();
    for address in order {
        let mut storage = serde_json::Map::new();
        for (slot, value) in slots.get(&address).into_iter().flatten() {
            if !unchanged_slots.contains(&(address, *slot)) {
                storage.insert(
                    B256::from(*slot).to_string(),
                    Value::String(B256::from(*value).to_string()),
                );
            }
        }
        if unchanged_accounts.contains(&address) && storage.is_empty() {
            continue;
        }
        // A missing account reads as an empty one (deleted, or not created).
        let after = accounts
            .get(&address)
            .copied()
            .flatten()
            .unwrap_or(AccountState::funded(U256::ZERO));
        let mut change = json!({
            "address": address,
            "nonce": after.nonce,
            "balance": after.balance,
            "storage": storage,
            "block_number": mini.block,
            "mini_block_number": mini.number,
        });
        if code_changed.contains(&address) {
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
    use fulmen_chain::events::NetChanges;
    use fulmen_chain::{HotState, StateDiff};

    fn params(values: Value) -> Params {
        Params(values.as_array().expect("an array").clone())
    }

    fn kind(params: &Params) -> Result<Kind, RpcError> {
        Subscribe::parse(params).map(|s| s.kind)
    }

    #[test]
    fn from_mini_block_parses_on_the_kinds_that_resume() {
        let from = |p: Value| Subscribe::parse(&params(p)).map(|s| s.from);
        assert_eq!(from(json!(["miniBlocks"])).unwrap(), None);
        assert_eq!(
            from(json!(["miniBlocks", {"fromMiniBlock": 7}])).unwrap(),
            Some(7)
        );
        assert_eq!(
            from(json!(["miniBlocks", {"fromMiniBlock": "0x10"}])).unwrap(),
            Some(16)
        );
        assert_eq!(
            from(json!(["logs", {"address": Address::with_last_byte(1), "fromMiniBlock": 3}]))
                .unwrap(),
            Some(3)
        );
        assert_eq!(
            from(json!(["stateChanges", {"addresses": [Address::with_last_byte(1)], "fromMiniBlock": 4}]))
                .unwrap(),
            Some(4)
        );
        let Ok(Subscribe {
            kind: Kind::StateChanges(Some(only)),
            ..
        }) = Subscribe::parse(&params(
            json!(["stateChanges", {"addresses": [Address::with_last_byte(2)]}]),
        ))
        else {
            panic!("addresses in an options object")
        };
        assert!(only.contains(&Address::with_last_byte(2)));
        let error = |p: Value| Subscribe::parse(&params(p)).unwrap_err().message;
        assert!(error(json!(["miniBlocks", {"fromMiniBlock": -1}])).contains("fromMiniBlock"));
        assert!(error(json!(["miniBlocks", {"fromMiniBlock": "7"}])).contains("hex quantity"));
        assert!(error(json!(["miniBlocks", {"from": 7}])).contains("takes only"));
        assert_eq!(
            from(json!(["replication", {"fromMiniBlock": 9}])).unwrap(),
            Some(9)
        );
        assert!(error(json!(["replication", {"from": 9}])).contains("replication takes only"));
        assert!(error(json!(["newHeads", {"fromMiniBlock": 1}])).contains("too many arguments"));
        assert!(
            error(json!(["newPendingTransactions", {"fromMiniBlock": 1}])).contains("argument 1")
        );
        assert!(error(json!(["stateChanges", {"address": []}])).contains("unknown key"));
    }

    #[test]
    fn subscription_kinds_parse_with_clear_errors() {
        assert!(matches!(
            kind(&params(json!(["newHeads"]))),
            Ok(Kind::NewHeads)
        ));
        assert!(matches!(
            kind(&params(json!(["miniBlocks"]))),
            Ok(Kind::MiniBlocks)
        ));
        assert!(matches!(
            kind(&params(json!(["newPendingTransactions", true]))),
            Ok(Kind::PendingTransactions { full: true })
        ));
        let Ok(Kind::Logs(filter)) = kind(&params(json!(["logs", {
            "address": "0x0000000000000000000000000000000000000001",
            "topics": [null, ["0x0000000000000000000000000000000000000000000000000000000000000002"]]
        }]))) else {
            panic!("a logs filter")
        };
        assert!(filter.matches_address(Address::with_last_byte(1)));
        assert!(!filter.matches_address(Address::with_last_byte(2)));
        let Ok(Kind::StateChanges(Some(only))) = kind(&params(json!([
            "stateChanges",
            ["0x0000000000000000000000000000000000000003"]
        ]))) else {
            panic!("a state-changes filter")
        };
        assert!(only.contains(&Address::with_last_byte(3)));

        let error = |p: Value| kind(&params(p)).unwrap_err();
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
        assert!(kind(&params(json!(["logs", {"address": many}]))).is_ok());
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
        let net = NetChanges::compute(&diffs, &before, &after);
        let mini = MiniBlockEvent {
            number: 9,
            block: 3,
            block_timestamp: 1,
            index: 2,
            timestamp_us: 1_000_000,
            gas_used: 0,
            txs: vec![],
            diffs,
            net,
            parent_hash: B256::ZERO,
            hash: B256::ZERO,
            ctx: fulmen_chain::block::BlockContext::default(),
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
