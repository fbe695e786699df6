//! Fee methods: `eth_feeHistory` and the geth-style reward percentiles.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use alloy_eips::BlockNumberOrTag;
use alloy_primitives::{B256, U64};
use alloy_rpc_types_eth::FeeHistory;
use fulmen_chain::block::SealedBlock;
use fulmen_chain::view::ChainView;
use serde_json::Value;

use super::reply::{header_not_found, ok};
use super::state::block_by_tag;
use crate::rpc::{Params, RpcError};

/// Most reward percentiles one `eth_feeHistory` may ask for.
pub(crate) const REWARD_PERCENTILES_MAX: usize = 100;

/// Bytes of tip tables one net core keeps for `eth_feeHistory`.
pub const TIP_CACHE_BYTES_MAX: usize = 8 << 20;

/// A sealed block's effective tips, ascending, each distinct tip once with
/// the gas of its transactions: all that reward percentiles need.
type Tips = Arc<[(u128, u64)]>;

/// Tip tables of recent `eth_feeHistory` answers, by block number and hash,
/// bounded in bytes (oldest entry out first). Wallets ask for the same
/// blocks' percentiles again and again; without it each call reads and
/// sorts every transaction of every block asked for, from the history
/// store for old ones.
#[derive(Debug)]
pub struct TipCache {
    tables: HashMap<(u64, B256), Tips>,
    order: VecDeque<(u64, B256)>,
    bytes: usize,
    bytes_max: usize,
}

impl Default for TipCache {
    fn default() -> Self {
        Self::new(TIP_CACHE_BYTES_MAX)
    }
}

impl TipCache {
    /// An empty cache of at most `bytes_max` bytes.
    pub fn new(bytes_max: usize) -> Self {
        Self {
            tables: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            bytes_max,
        }
    }

    fn entry_bytes(tips: &Tips) -> usize {
        64 + std::mem::size_of_val(&tips[..])
    }

    fn get(&self, key: &(u64, B256)) -> Option<Tips> {
        self.tables.get(key).cloned()
    }

    fn insert(&mut self, key: (u64, B256), tips: Tips) {
        let bytes = Self::entry_bytes(&tips);
        if bytes > self.bytes_max || self.tables.contains_key(&key) {
            return;
        }
        while self.bytes + bytes > self.bytes_max {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.tables.remove(&old) {
                self.bytes -= Self::entry_bytes(&gone);
            }
        }
        self.bytes += bytes;
        self.order.push_back(key);
        self.tables.insert(key, tips);
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// `eth_feeHistory` over at most `blocks_max` blocks ending at the newest
/// one asked for; reward percentiles from `cache` where it has the block.
pub(crate) fn fee_history(
    (blocks_max, cache): (u64, &RefCell<TipCache>),
    view: &ChainView,
    params: &Params,
) -> Result<Value, RpcError> {
    params.at_most(3)?;
    let count: U64 = params.required(0, "blockCount")?;
    let newest: BlockNumberOrTag = params.required(1, "newestBlock")?;
    let percentiles: Option<Vec<f64>> = params.optional(2, "rewardPercentiles")?;
    if let Some(p) = &percentiles
        && !percentiles_valid(p)
    {
        return Err(RpcError::invalid_params(
            "invalid argument 2 (rewardPercentiles): at most 100 increasing values within [0, 100]",
        ));
    }
    let newest = block_by_tag(view, newest)?
        .ok_or_else(header_not_found)?
        .header
        .number;
    // Pruned blocks are left out, as blocks before genesis are.
    let count = count
        .to::<u64>()
        .min(blocks_max)
        .min(newest + 1 - view.oldest_block().min(newest));
    let rewards = percentiles.as_deref().map(|p| (p, cache));
    ok(history(view, newest, count, rewards)?)
}

/// At most [`REWARD_PERCENTILES_MAX`] values, each within [0, 100], none
/// below the one before it.
fn percentiles_valid(p: &[f64]) -> bool {
    p.len() <= REWARD_PERCENTILES_MAX
        && p.windows(2).all(|w| w[0] <= w[1])
        && p.iter().all(|x| (0.0..=100.0).contains(x))
}

/// The history of the `count` blocks up to `newest`, plus the next block's
/// base fee (the open block's while `newest` is the head).
fn history(
    view: &ChainView,
    newest: u64,
    count: u64,
    percentiles: Option<(&[f64], &RefCell<TipCache>)>,
) -> Result<FeeHistory, RpcError> {
    assert!(
        count <= newest + 1,
        "fee history starts at or after genesis"
    );
    let oldest = newest + 1 - count;
    let mut history = FeeHistory {
        oldest_block: oldest,
        ..Default::default()
    };
    let mut rewards = Vec::new();
    for n in oldest..=newest {
        // The header alone (an old block's is read from the history store
        // without its transactions); the block only for rewards.
        let (header, hash) = view.header(n).ok_or_else(header_not_found)?;
        history
            .base_fee_per_gas
            .push(u128::from(header.base_fee_per_gas.unwrap_or_default()));
        history
            .gas_used_ratio
            .push(header.gas_used as f64 / header.gas_limit.max(1) as f64);
        history.base_fee_per_blob_gas.push(1);
        history.blob_gas_used_ratio.push(0.0);
        if let Some((p, cache)) = percentiles {
            let key = (n, hash);
            let cached = cache.borrow().get(&key);
            let tips = match cached {
                Some(tips) => tips,
                None => {
                    let block = view.block(n).ok_or_else(header_not_found)?;
                    let tips = block_tips(&block);
                    cache.borrow_mut().insert(key, tips.clone());
                    tips
                }
            };
            rewards.push(tips_at_percentiles(&tips, p));
        }
    }
    assert_eq!(history.gas_used_ratio.len() as u64, count);
    if count > 0 {
        let next = view
            .header(newest + 1)
            .map_or(view.open().ctx.base_fee, |(header, _)| {
                header.base_fee_per_gas.unwrap_or(0)
            });
        history.base_fee_per_gas.push(u128::from(next));
        history.base_fee_per_blob_gas.push(1);
    }
    if percentiles.is_some() {
        history.reward = Some(rewards);
    }
    Ok(history)
}

/// A block's effective tips (above its base fee), ascending, each distinct
/// tip once with the gas used at it.
fn block_tips(block: &SealedBlock) -> Tips {
    let base_fee = u128::from(block.header.base_fee_per_gas.unwrap_or_default());
    let mut tips: Vec<(u128, u64)> = block
        .txs
        .iter()
        .map(|t| (t.effective_gas_price.saturating_sub(base_fee), t.gas_used))
        .collect();
    tips.sort_unstable();
    let mut merged: Vec<(u128, u64)> = Vec::with_capacity(tips.len().min(64));
    for (tip, gas) in tips {
        match merged.last_mut() {
            Some((last, sum)) if *last == tip => *sum += gas,
            _ => merged.push((tip, gas)),
        }
    }
    merged.into()
}

/// For each percentile, the smallest tip at which the gas of the cheaper
/// transactions reaches that share of the block's gas, as geth computes
/// it; zeros for no tips. `tips` is ascending.
fn tips_at_percentiles(tips: &[(u128, u64)], percentiles: &[f64]) -> Vec<u128> {
    debug_assert!(tips.windows(2).all(|w| w[0].0 <= w[1].0), "tips ascend");
    if tips.is_empty() {
        return vec![0; percentiles.len()];
    }
    let total: u64 = tips.iter().map(|(_, g)| g).sum();
    percentiles
        .iter()
        .map(|p| {
            let threshold = (total as f64 * p / 100.0) as u64;
            let mut sum = 0;
            for (tip, gas) in tips {
                sum += gas;
                if sum >= threshold {
                    return *tip;
                }
            }
            tips.last().map_or(0, |(tip, _)| *tip)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::testkit::{self, params};
    use serde_json::json;

    #[test]
    fn tips_are_weighted_by_gas() {
        let tips = [(10, 70), (20, 20), (30, 10)];
        assert_eq!(
            tips_at_percentiles(&tips, &[0.0, 50.0, 70.0, 71.0, 90.0, 100.0]),
            vec![10, 10, 10, 20, 20, 30]
        );
        assert_eq!(tips_at_percentiles(&[], &[10.0, 90.0]), vec![0, 0]);
        assert!(tips_at_percentiles(&[(5, 1)], &[]).is_empty());
    }

    /// Equal tips merged into one entry give the percentiles the separate
    /// transactions gave.
    #[test]
    fn merged_equal_tips_give_the_same_percentiles() {
        let separate = [(10, 30), (10, 40), (20, 20), (30, 5), (30, 5)];
        let merged = [(10, 70), (20, 20), (30, 10)];
        let p = [0.0, 29.0, 50.0, 70.0, 71.0, 90.0, 95.0, 100.0];
        assert_eq!(
            tips_at_percentiles(&separate, &p),
            tips_at_percentiles(&merged, &p)
        );
    }

    fn cache() -> RefCell<TipCache> {
        RefCell::new(TipCache::default())
    }

    /// A second call is answered from the cache, with the same rewards; a
    /// full cache drops its oldest tables and stays within its bound.
    #[test]
    fn rewards_come_from_the_cache_the_second_time_and_the_cache_is_bounded() {
        let view = testkit::chain(3);
        let tips = cache();
        let ask = params(json!(["0x3", "latest", [10.0, 50.0, 90.0]]));
        let first = fee_history((1024, &tips), &view, &ask).unwrap();
        assert_eq!(tips.borrow().tables.len(), 3);
        let held = tips.borrow().bytes();
        assert!(held > 0);
        let again = fee_history((1024, &tips), &view, &ask).unwrap();
        assert_eq!(first, again);
        assert_eq!(tips.borrow().bytes(), held, "nothing new was cached");
        // Without a cache entry the answer is the same.
        assert_eq!(fee_history((1024, &cache()), &view, &ask).unwrap(), first);

        let one = TipCache::entry_bytes(&Tips::from(vec![(1u128, 21_000u64)]));
        let mut small = TipCache::new(2 * one);
        for n in 0..5u64 {
            small.insert((n, B256::ZERO), Tips::from(vec![(u128::from(n), 21_000)]));
            assert!(small.bytes() <= 2 * one);
        }
        assert_eq!(small.tables.len(), 2);
        assert!(small.get(&(4, B256::ZERO)).is_some() && small.get(&(0, B256::ZERO)).is_none());
    }

    #[test]
    fn percentiles_must_increase_within_0_and_100() {
        assert!(percentiles_valid(&[]));
        assert!(percentiles_valid(&[0.0, 25.0, 25.0, 100.0]));
        assert!(!percentiles_valid(&[50.0, 10.0]));
        assert!(!percentiles_valid(&[-1.0]));
        assert!(!percentiles_valid(&[100.5]));
        assert!(!percentiles_valid(&[f64::NAN]));
        assert!(!percentiles_valid(&vec![1.0; REWARD_PERCENTILES_MAX + 1]));
    }

    #[test]
    fn the_history_ends_with_the_next_base_fee_and_is_bounded() {
        let view = testkit::chain(3);
        let answer = fee_history(
            (1024, &cache()),
            &view,
            &params(json!(["0x2", "latest", [50.0]])),
        )
        .unwrap();
        let history: FeeHistory = serde_json::from_value(answer).expect("a fee history");
        assert_eq!(history.oldest_block, 2);
        assert_eq!(
            history.base_fee_per_gas,
            vec![
                u128::from(testkit::base_fee(2)),
                u128::from(testkit::base_fee(3)),
                u128::from(view.open().ctx.base_fee)
            ]
        );
        assert_eq!(history.gas_used_ratio.len(), 2);
        assert_eq!(history.reward.map(|r| r.len()), Some(2));
        let answer = fee_history((2, &cache()), &view, &params(json!(["0x10", "0x1"]))).unwrap();
        let history: FeeHistory = serde_json::from_value(answer).expect("a fee history");
        assert_eq!(history.oldest_block, 0);
        assert_eq!(
            history.base_fee_per_gas.last(),
            Some(&u128::from(testkit::base_fee(2)))
        );
        assert!(history.reward.is_none());
        let error = fee_history((2, &cache()), &view, &params(json!(["0x1", "0x9"]))).unwrap_err();
        assert_eq!(error.message, "header not found");
        let error = fee_history(
            (2, &cache()),
            &view,
            &params(json!(["0x1", "latest", [9, 1]])),
        )
        .unwrap_err();
        assert_eq!(error.code, -32602);
    }

    #[test]
    fn no_blocks_means_no_next_base_fee() {
        let view = testkit::chain(1);
        let answer =
            fee_history((1024, &cache()), &view, &params(json!(["0x0", "latest"]))).unwrap();
        let history: FeeHistory = serde_json::from_value(answer).expect("a fee history");
        assert_eq!(history.oldest_block, 2);
        assert!(history.base_fee_per_gas.is_empty());
    }
}
