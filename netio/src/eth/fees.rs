//! Fee methods: `eth_feeHistory` and the geth-style reward percentiles.

use alloy_eips::BlockNumberOrTag;
use alloy_primitives::U64;
use alloy_rpc_types_eth::FeeHistory;
use fulmen_chain::block::SealedBlock;
use fulmen_chain::view::ChainView;
use serde_json::Value;

use super::reply::{header_not_found, ok};
use super::state::block_by_tag;
use crate::rpc::{Params, RpcError};

/// Most reward percentiles one `eth_feeHistory` may ask for.
pub(crate) const REWARD_PERCENTILES_MAX: usize = 100;

/// `eth_feeHistory` over at most `blocks_max` blocks ending at the newest
/// one asked for.
pub(crate) fn fee_history(
    blocks_max: u64,
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
    ok(history(view, newest, count, percentiles.as_deref())?)
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
    percentiles: Option<&[f64]>,
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
        let (header, _) = view.header(n).ok_or_else(header_not_found)?;
        history
            .base_fee_per_gas
            .push(u128::from(header.base_fee_per_gas.unwrap_or_default()));
        history
            .gas_used_ratio
            .push(header.gas_used as f64 / header.gas_limit.max(1) as f64);
        history.base_fee_per_blob_gas.push(1);
        history.blob_gas_used_ratio.push(0.0);
        if let Some(p) = percentiles {
            let block = view.block(n).ok_or_else(header_not_found)?;
            rewards.push(block_rewards(&block, p));
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

/// Effective tips at the given gas-weighted percentiles, as geth computes them.
fn block_rewards(block: &SealedBlock, percentiles: &[f64]) -> Vec<u128> {
    let base_fee = u128::from(block.header.base_fee_per_gas.unwrap_or_default());
    let tips: Vec<(u128, u64)> = block
        .txs
        .iter()
        .map(|t| (t.effective_gas_price.saturating_sub(base_fee), t.gas_used))
        .collect();
    tips_at_percentiles(tips, percentiles)
}

/// For each percentile, the smallest tip at which the gas of the cheaper
/// transactions reaches that share of the block's gas; zeros for no tips.
fn tips_at_percentiles(mut tips: Vec<(u128, u64)>, percentiles: &[f64]) -> Vec<u128> {
    if tips.is_empty() {
        return vec![0; percentiles.len()];
    }
    tips.sort_unstable();
    let total: u64 = tips.iter().map(|(_, g)| g).sum();
    percentiles
        .iter()
        .map(|p| {
            let threshold = (total as f64 * p / 100.0) as u64;
            let mut sum = 0;
            for (tip, gas) in &tips {
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
        let tips = vec![(30, 10), (10, 70), (20, 20)];
        assert_eq!(
            tips_at_percentiles(tips, &[0.0, 50.0, 70.0, 71.0, 90.0, 100.0]),
            vec![10, 10, 10, 20, 20, 30]
        );
        assert_eq!(tips_at_percentiles(Vec::new(), &[10.0, 90.0]), vec![0, 0]);
        assert!(tips_at_percentiles(vec![(5, 1)], &[]).is_empty());
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
        let answer = fee_history(1024, &view, &params(json!(["0x2", "latest", [50.0]]))).unwrap();
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
        let answer = fee_history(2, &view, &params(json!(["0x10", "0x1"]))).unwrap();
        let history: FeeHistory = serde_json::from_value(answer).expect("a fee history");
        assert_eq!(history.oldest_block, 0);
        assert_eq!(
            history.base_fee_per_gas.last(),
            Some(&u128::from(testkit::base_fee(2)))
        );
        assert!(history.reward.is_none());
        let error = fee_history(2, &view, &params(json!(["0x1", "0x9"]))).unwrap_err();
        assert_eq!(error.message, "header not found");
        let error = fee_history(2, &view, &params(json!(["0x1", "latest", [9, 1]]))).unwrap_err();
        assert_eq!(error.code, -32602);
    }

    #[test]
    fn no_blocks_means_no_next_base_fee() {
        let view = testkit::chain(1);
        let answer = fee_history(1024, &view, &params(json!(["0x0", "latest"]))).unwrap();
        let history: FeeHistory = serde_json::from_value(answer).expect("a fee history");
        assert_eq!(history.oldest_block, 2);
        assert!(history.base_fee_per_gas.is_empty());
    }
}
