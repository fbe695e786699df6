//! `eth_getLogs`, and the size limits of a logs filter (shared with `logs`
//! subscriptions, which the pubsub module parses).

use alloy_eips::BlockNumberOrTag;
use alloy_rpc_types_eth::{Filter, FilterBlockOption, Log};
use fulmen_chain::view::ChainView;
use serde_json::Value;

use super::reply::{check_not_pruned, ok};
use crate::convert;
use crate::limits::RpcLimits;
use crate::rpc::{ByteBudget, Params, RpcError};

/// Most addresses one logs filter may name (`eth_getLogs` and `logs`
/// subscriptions), as geth.
pub(crate) const LOGS_FILTER_ADDRESSES_MAX: usize = 1000;
/// Most values one topic position of a logs filter may list, as geth (a
/// filter has at most 4 positions).
pub(crate) const LOGS_FILTER_TOPIC_VALUES_MAX: usize = 1000;

/// Refuses a logs filter that names too many addresses or topic values:
/// each one costs memory for as long as the subscription lives, and time
/// for every log it is matched against. `index` is the parameter's position.
pub(crate) fn check_filter_size(filter: &Filter, index: usize) -> Result<(), RpcError> {
    let addresses = filter.address.len();
    if addresses > LOGS_FILTER_ADDRESSES_MAX {
        return Err(RpcError::invalid_params(format!(
            "invalid argument {index} (filter): {addresses} addresses, limit {LOGS_FILTER_ADDRESSES_MAX}"
        )));
    }
    for (position, topic) in filter.topics.iter().enumerate() {
        let values = topic.len();
        if values > LOGS_FILTER_TOPIC_VALUES_MAX {
            return Err(RpcError::invalid_params(format!(
                "invalid argument {index} (filter): {values} values for topic {position}, \
                 limit {LOGS_FILTER_TOPIC_VALUES_MAX}"
            )));
        }
    }
    Ok(())
}

/// The blocks a filter reads, `from..=to`: sealed ones, and preconfirmed
/// (unsealed) ones where `to` passes the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    from: u64,
    to: u64,
}

/// `eth_getLogs`: the matching logs of sealed blocks, then of preconfirmed
/// ones when the range reaches `latest` or `pending`.
pub(crate) fn get_logs(
    limits: &RpcLimits,
    view: &ChainView,
    params: &Params,
) -> Result<Value, RpcError> {
    params.at_most(1)?;
    let filter: Filter = params.required(0, "filter")?;
    check_filter_size(&filter, 0)?;
    let range = range(limits, view, &filter)?;
    ok(logs_in(limits, view, &filter, range)?)
}

/// `eth_getFilterLogs`: what `eth_getLogs` answers for the filter.
pub(crate) fn filter_logs(
    limits: &RpcLimits,
    view: &ChainView,
    filter: &Filter,
) -> Result<Vec<Log>, RpcError> {
    let range = range(limits, view, filter)?;
    logs_in(limits, view, filter, range)
}

/// A filter's changes: the logs of sealed blocks `from..=to` that match
/// `filter`, whole blocks at a time within the count and byte limits, and
/// the first block not read (`to + 1` when all were). Only a single block
/// over the limits is an error, so a filter always moves on.
pub(crate) fn sealed_logs(
    limits: &RpcLimits,
    view: &ChainView,
    filter: &Filter,
    (from, to): (u64, u64),
) -> Result<(Vec<Log>, u64), RpcError> {
    let mut found = Found {
        filter,
        logs: Vec::new(),
        logs_max: limits.logs_max,
        budget: ByteBudget::new(limits.response_bytes_max),
    };
    for n in from..=to {
        let Some((header, _)) = view.header(n) else {
            return Ok((found.logs, n));
        };
        if !filter.matches_bloom(header.logs_bloom) {
            continue;
        }
        let Some(block) = view.block(n) else {
            return Ok((found.logs, n));
        };
        let before = found.logs.len();
        for tx in &block.txs {
            if let Err(e) = found.push(convert::logs(tx, Some(block.hash))) {
                if before == 0 {
                    // This block alone is over the limits.
                    return Err(e);
                }
                found.logs.truncate(before);
                return Ok((found.logs, n));
            }
        }
    }
    Ok((found.logs, to + 1))
}

/// The logs in `range` that match `filter`, within the count and byte
/// limits.
fn logs_in(
    limits: &RpcLimits,
    view: &ChainView,
    filter: &Filter,
    range: Range,
) -> Result<Vec<Log>, RpcError> {
    let mut found = Found {
        filter,
        logs: Vec::new(),
        logs_max: limits.logs_max,
        budget: ByteBudget::new(limits.response_bytes_max),
    };
    let head = view.head().header.number;
    for n in range.from..=range.to.min(head) {
        let Some((header, _)) = view.header(n) else {
            // Pruned while this range was read: say so, never a partial answer.
            check_not_pruned(view, n)?;
            break;
        };
        if !filter.matches_bloom(header.logs_bloom) {
            continue;
        }
        let Some(block) = view.block(n) else { break };
        for tx in &block.txs {
            found.push(convert::logs(tx, Some(block.hash)))?;
        }
    }
    let reached = view
        .unsealed()
        .filter(|b| (range.from..=range.to).contains(&b.ctx.number));
    for block in reached {
        for tx in block.txs.iter() {
            found.push(convert::logs(tx, None))?;
        }
    }
    Ok(found.logs)
}

/// The blocks `filter` reads: one block by hash, or a range of at most
/// `rpc.logs_block_range_max` blocks that ends at the head at the latest.
fn range(limits: &RpcLimits, view: &ChainView, filter: &Filter) -> Result<Range, RpcError> {
    let head = view.head().header.number;
    let (from_block, to_block) = match filter.block_option {
        FilterBlockOption::AtBlockHash(hash) => {
            let n = view
                .number_of(&hash)
                .ok_or_else(|| RpcError::server("unknown block"))?;
            check_width(limits, n, n)?;
            return Ok(Range { from: n, to: n });
        }
        FilterBlockOption::Range {
            from_block,
            to_block,
        } => (from_block, to_block),
    };
    let heads = (head, view.safe(), view.finalized(), view.oldest_block());
    let (from, _) = resolve(from_block, heads);
    check_not_pruned(view, from)?;
    // `latest` and `pending` reach the open block; a number may name any
    // block up to it (a preconfirmed receipt's `blockNumber`).
    let open = view.open().ctx.number;
    let (asked, reaches_open) = resolve(to_block, heads);
    let asked = if reaches_open { open } else { asked };
    let to = asked.min(open);
    if from > to {
        return Err(RpcError::invalid_params(
            "invalid argument 0 (filter): fromBlock is after toBlock",
        ));
    }
    check_width(limits, from, asked)?;
    Ok(Range { from, to })
}

/// Refuses a range of `rpc.logs_block_range_max` blocks or more.
fn check_width(limits: &RpcLimits, from: u64, to: u64) -> Result<(), RpcError> {
    if to.saturating_sub(from) >= limits.logs_block_range_max {
        return Err(RpcError::server(format!(
            "query exceeds max block range {}: narrow fromBlock..toBlock",
            limits.logs_block_range_max
        )));
    }
    Ok(())
}

/// A range end as a block number, and whether it reaches the open block:
/// none, `latest` and `pending` are the head and the blocks after it; `safe` and
/// `finalized` are what L1 vouches for; `earliest` is the oldest block kept
/// (`heads`: head, safe, finalized, oldest).
fn resolve(
    tag: Option<BlockNumberOrTag>,
    (head, safe, finalized, oldest): (u64, u64, u64, u64),
) -> (u64, bool) {
    match tag {
        None | Some(BlockNumberOrTag::Latest) | Some(BlockNumberOrTag::Pending) => (head, true),
        Some(BlockNumberOrTag::Number(n)) => (n, false),
        Some(BlockNumberOrTag::Earliest) => (oldest, false),
        Some(BlockNumberOrTag::Safe) => (safe, false),
        Some(BlockNumberOrTag::Finalized) => (finalized, false),
    }
}

/// The logs found so far, within the count and byte limits.
struct Found<'a> {
    filter: &'a Filter,
    logs: Vec<Log>,
    logs_max: usize,
    budget: ByteBudget,
}

impl Found<'_> {
    /// Keeps the logs of one transaction that match the filter.
    fn push(&mut self, logs: Vec<Log>) -> Result<(), RpcError> {
        for log in logs {
            if !self.filter.matches_address(log.address())
                || !self.filter.matches_topics(log.topics())
            {
                continue;
            }
            if self.logs.len() >= self.logs_max {
                return Err(RpcError::server(format!(
                    "query returned more than {} results: narrow the filter",
                    self.logs_max
                )));
            }
            self.budget.add(&log)?;
            self.logs.push(log);
            assert!(self.logs.len() <= self.logs_max);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::testkit::{self, params};
    use alloy_primitives::{Address, B256, U256};
    use serde_json::json;

    #[test]
    fn range_ends_resolve_like_geth() {
        let heads = (7, 5, 3, 0);
        assert_eq!(resolve(None, heads), (7, true));
        assert_eq!(resolve(Some(BlockNumberOrTag::Latest), heads), (7, true));
        assert_eq!(resolve(Some(BlockNumberOrTag::Pending), heads), (7, true));
        assert_eq!(resolve(Some(BlockNumberOrTag::Safe), heads), (5, false));
        assert_eq!(
            resolve(Some(BlockNumberOrTag::Finalized), heads),
            (3, false)
        );
        assert_eq!(resolve(Some(BlockNumberOrTag::Earliest), heads), (0, false));
        assert_eq!(
            resolve(Some(BlockNumberOrTag::Number(9)), heads),
            (9, false)
        );
    }

    #[test]
    fn ranges_are_checked_and_clamped_to_the_open_block() {
        let view = testkit::chain(3);
        let limits = RpcLimits {
            logs_block_range_max: 5,
            ..RpcLimits::default()
        };
        let range_of = |filter: Filter| range(&limits, &view, &filter);
        // Block 4 is the open one: `latest` reaches it, and so does its
        // number; a number past it stops there.
        assert_eq!(
            range_of(Filter::new().from_block(1)).unwrap(),
            Range { from: 1, to: 4 }
        );
        assert_eq!(
            range_of(Filter::new().from_block(0).to_block(4)).unwrap(),
            Range { from: 0, to: 4 }
        );
        assert_eq!(
            range_of(Filter::new().from_block(4)).unwrap(),
            Range { from: 4, to: 4 }
        );
        assert_eq!(
            range_of(Filter::new().from_block(4).to_block(7)).unwrap(),
            Range { from: 4, to: 4 }
        );
        let error = range_of(Filter::new().from_block(2).to_block(1)).unwrap_err();
        assert_eq!(error.code, -32602);
        let error = range_of(Filter::new().from_block(0).to_block(5)).unwrap_err();
        assert_eq!(
            error.message,
            "query exceeds max block range 5: narrow fromBlock..toBlock"
        );
        let hash = view.block(2).expect("block 2").hash;
        assert_eq!(
            range_of(Filter::new().at_block_hash(hash)).unwrap(),
            Range { from: 2, to: 2 }
        );
        let error = range_of(Filter::new().at_block_hash(B256::repeat_byte(9))).unwrap_err();
        assert_eq!(error.message, "unknown block");
    }

    #[test]
    fn logs_match_address_and_topics_within_the_count_limit() {
        let view = testkit::chain(3);
        let limits = RpcLimits::default();
        let all = get_logs(&limits, &view, &params(json!([{"fromBlock": "0x0"}]))).unwrap();
        // One log per block 1..=3 and one preconfirmed.
        assert_eq!(all.as_array().map(Vec::len), Some(4));
        assert_eq!(all[3]["blockNumber"], json!("0x4"));
        assert_eq!(
            all[2]["blockHash"],
            json!(view.block(3).expect("block 3").hash)
        );
        let by_topic =
            json!([{"fromBlock": "0x0", "toBlock": "0x2", "topics": [testkit::topic(2)]}]);
        let found = get_logs(&limits, &view, &params(by_topic)).unwrap();
        assert_eq!(found.as_array().map(Vec::len), Some(1));
        assert_eq!(found[0]["blockNumber"], json!("0x2"));
        let other = json!([{"fromBlock": "0x0", "address": Address::repeat_byte(0xee)}]);
        assert_eq!(get_logs(&limits, &view, &params(other)).unwrap(), json!([]));
        let few = RpcLimits {
            logs_max: 2,
            ..RpcLimits::default()
        };
        let error = get_logs(&few, &view, &params(json!([{"fromBlock": "0x0"}]))).unwrap_err();
        assert_eq!(
            error.message,
            "query returned more than 2 results: narrow the filter"
        );
    }

    #[test]
    fn oversized_filters_are_refused_naming_the_parameter() {
        let many: Vec<Address> = (0..=LOGS_FILTER_ADDRESSES_MAX)
            .map(|i| Address::from_word(B256::from(U256::from(i))))
            .collect();
        let error = check_filter_size(&Filter::new().address(many), 1).unwrap_err();
        assert_eq!(error.code, -32602);
        assert!(
            error
                .message
                .starts_with("invalid argument 1 (filter): 1001 addresses"),
            "{}",
            error.message
        );
        let topics: Vec<B256> = (0..=LOGS_FILTER_TOPIC_VALUES_MAX)
            .map(|i| B256::from(U256::from(i)))
            .collect();
        let error = check_filter_size(&Filter::new().event_signature(topics), 0).unwrap_err();
        assert!(
            error.message.contains("1001 values for topic 0"),
            "{}",
            error.message
        );
        assert!(check_filter_size(&Filter::new(), 0).is_ok());
    }
}
