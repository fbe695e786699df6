//! The pool: transactions that cannot run yet. Future nonces are parked
//! (bounded per sender, in count and bytes, and by age; a full lot evicts a
//! cheaper sender only when that makes room), and ready transactions that
//! must wait for the next block or its parent's hash are deferred. Each
//! executed or sealed transaction promotes its sender's next parked one.

use std::collections::BTreeMap;
use std::sync::Arc;

use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, U256};
use fulmen_chain::msg::SubmitError;
use fulmen_chain::tx::RecoveredTx;

use super::Sequencer;
use super::types::{Parked, REPLACE_BUMP_PERCENT};

/// The bumped fee a replacement must pay, without overflow.
fn bumped(old: u128) -> u128 {
    let bump = old / 100 * REPLACE_BUMP_PERCENT + old % 100 * REPLACE_BUMP_PERCENT / 100;
    old.saturating_add(bump)
}

impl Sequencer {
    /// Number of parked transactions.
    pub fn parked_count(&self) -> usize {
        self.parked_count
    }

    /// Runs the transactions deferred for room in the last mini-block, once
    /// it closed. Call after [`Self::close_mini_block`].
    pub fn run_deferred_for_room(&mut self) {
        if std::mem::take(&mut self.deferred_for_room) {
            self.run_deferred();
        }
    }

    /// Bytes of parked transactions.
    pub fn parked_bytes(&self) -> usize {
        self.parked_bytes
    }

    pub(super) fn defer(&mut self, tx: RecoveredTx) -> Result<(), SubmitError> {
        if self.deferred.len() >= self.limits.deferred_max {
            return Err(SubmitError::PoolFull);
        }
        self.queue_deferred(tx);
        Ok(())
    }

    /// Appends `tx` to the deferred transactions (and the view's pool).
    fn queue_deferred(&mut self, tx: RecoveredTx) {
        *self.deferred_senders.entry(tx.sender).or_default() += 1;
        self.view.pool_mut().defer(Arc::new(tx.clone()));
        self.deferred.push_back(tx);
    }

    pub(super) fn has_deferred(&self, sender: &Address) -> bool {
        self.deferred_senders.contains_key(sender)
    }

    pub(super) fn is_parked(&self, tx: &RecoveredTx) -> bool {
        let parked = self
            .parked
            .get(&tx.sender)
            .and_then(|m| m.get(&tx.nonce()))
            .is_some_and(|p| p.tx.hash == tx.hash);
        // A deferred transaction is its sender's next one; nothing else of
        // that sender can run before it, so the scan stays short in practice.
        parked || (self.has_deferred(&tx.sender) && self.deferred.iter().any(|t| t.hash == tx.hash))
    }

    pub(super) fn account_nonce_balance(&self, address: &Address) -> (u64, U256) {
        self.evm
            .ctx
            .journaled_state
            .database
            .state
            .account(address)
            .map_or((0, U256::ZERO), |a| (a.nonce, a.balance))
    }

    /// Parks a future-nonce transaction. Its sender must be able to pay for
    /// it and every other transaction it has parked, so that unfunded
    /// senders cannot fill the lot; when the lot is full, a transaction
    /// paying more evicts the cheapest other sender's last one.
    pub(super) fn park(&mut self, tx: RecoveredTx, balance: U256) -> Result<(), SubmitError> {
        let slot = self.parked.get(&tx.sender);
        let replaced = slot.and_then(|s| s.get(&tx.nonce()));
        if let Some(existing) = replaced
            && (tx.max_fee_per_gas() < bumped(existing.tx.max_fee_per_gas())
                || tx.max_priority_fee_per_gas() < bumped(existing.tx.max_priority_fee_per_gas()))
        {
            return Err(SubmitError::ReplacementUnderpriced);
        }
        let others = slot.map_or(U256::ZERO, |s| {
            s.values()
                .filter(|p| p.tx.nonce() != tx.nonce())
                .fold(U256::ZERO, |sum, p| sum.saturating_add(p.tx.max_cost()))
        });
        let want = others.saturating_add(tx.max_cost());
        if balance < want {
            return Err(SubmitError::InsufficientFunds {
                address: tx.sender,
                have: balance,
                want,
            });
        }
        let replaced_bytes = replaced.map(|p| p.bytes);
        let sender_count = slot.map_or(0, BTreeMap::len);
        let bytes = tx.envelope.encode_2718_len();
        if let Some(old_bytes) = replaced_bytes {
            // A replacement takes its predecessor's place; it is refused,
            // keeping the predecessor, when it would not fit, and never
            // evicts others.
            if self.parked_bytes - old_bytes + bytes > self.limits.parked_bytes_max {
                return Err(SubmitError::PoolFull);
            }
            self.unpark(tx.sender, tx.nonce());
        } else if sender_count >= self.limits.parked_per_sender_max {
            return Err(SubmitError::PoolFull);
        }
        let count_short = (self.parked_count + 1).saturating_sub(self.limits.parked_total_max);
        let bytes_short = (self.parked_bytes + bytes).saturating_sub(self.limits.parked_bytes_max);
        if count_short > 0 || bytes_short > 0 {
            // Evict only when evicting makes enough room: never for nothing.
            let (count_free, bytes_free) = self.evictable_for(&tx);
            if count_free < count_short || bytes_free < bytes_short {
                return Err(SubmitError::PoolFull);
            }
        }
        while self.parked_count >= self.limits.parked_total_max
            || self.parked_bytes + bytes > self.limits.parked_bytes_max
        {
            let evicted = self.evict_cheaper_than(&tx);
            debug_assert!(evicted, "the room was counted before evicting");
            if !evicted {
                return Err(SubmitError::PoolFull);
            }
        }
        let parked = Parked {
            bytes,
            at_s: self.open.ctx.timestamp,
            tx,
        };
        self.parked_count += 1;
        self.parked_bytes += parked.bytes;
        self.view.pool_mut().park(Arc::new(parked.tx.clone()));
        self.parked
            .entry(parked.tx.sender)
            .or_default()
            .insert(parked.tx.nonce(), parked);
        debug_assert!(self.parked_count <= self.limits.parked_total_max);
        debug_assert!(self.parked_bytes <= self.limits.parked_bytes_max);
        Ok(())
    }

    /// Removes one parked transaction, keeping the counts.
    pub(super) fn unpark(&mut self, sender: Address, nonce: u64) -> Option<Parked> {
        let slot = self.parked.get_mut(&sender)?;
        let parked = slot.remove(&nonce)?;
        if slot.is_empty() {
            self.parked.remove(&sender);
        }
        self.parked_count -= 1;
        self.parked_bytes -= parked.bytes;
        self.view.pool_mut().unpark(sender, nonce);
        Some(parked)
    }

    /// Count and bytes that evicting for `tx` could free: of every other
    /// sender, the run of its highest nonces that pay less than `tx`
    /// (exactly what repeated [`Self::evict_cheaper_than`] takes).
    pub(super) fn evictable_for(&self, tx: &RecoveredTx) -> (usize, usize) {
        let fee = tx.max_fee_per_gas();
        self.parked
            .iter()
            .filter(|(sender, _)| **sender != tx.sender)
            .flat_map(|(_, slot)| {
                slot.values()
                    .rev()
                    .take_while(move |p| p.tx.max_fee_per_gas() < fee)
            })
            .fold((0, 0), |(count, bytes), p| (count + 1, bytes + p.bytes))
    }

    /// Evicts the last parked transaction (highest nonce, so no gap is
    /// made) of the sender whose last one pays least, oldest first on a
    /// tie, if it pays less than `tx`. False when nothing is cheaper.
    pub(super) fn evict_cheaper_than(&mut self, tx: &RecoveredTx) -> bool {
        let cheapest = self
            .parked
            .iter()
            .filter(|(sender, _)| **sender != tx.sender)
            .filter_map(|(sender, slot)| slot.last_key_value().map(|(_, p)| (*sender, p)))
            .min_by_key(|(_, p)| (p.tx.max_fee_per_gas(), p.at_s))
            .map(|(sender, p)| (sender, p.tx.nonce(), p.tx.max_fee_per_gas()));
        match cheapest {
            Some((sender, nonce, fee)) if fee < tx.max_fee_per_gas() => {
                tracing::debug!(%sender, nonce, "evicting a cheaper parked transaction");
                self.unpark(sender, nonce);
                true
            }
            _ => false,
        }
    }

    /// Drops parked transactions older than the lifetime, as of the block
    /// timestamp `now_s`.
    pub(super) fn expire_parked(&mut self, now_s: u64) {
        let lifetime = self.limits.parked_lifetime_s;
        let expired: Vec<(Address, u64)> = self
            .parked
            .iter()
            .flat_map(|(sender, slot)| {
                slot.values()
                    .filter(move |p| p.at_s.saturating_add(lifetime) <= now_s)
                    .map(move |p| (*sender, p.tx.nonce()))
            })
            .collect();
        for (sender, nonce) in expired {
            tracing::debug!(%sender, nonce, "dropping an expired parked transaction");
            self.unpark(sender, nonce);
        }
    }

    /// Executes parked transactions of `sender` that became ready.
    pub(super) fn promote(&mut self, sender: Address) {
        loop {
            let (nonce, balance) = self.account_nonce_balance(&sender);
            let Some(slot) = self.parked.get(&sender) else {
                return;
            };
            // Stale entries (nonce now used) are dropped.
            let stale: Vec<u64> = slot.range(..nonce).map(|(n, _)| *n).collect();
            for n in stale {
                self.unpark(sender, n);
            }
            let Some(Parked { tx, .. }) = self.unpark(sender, nonce) else {
                return;
            };
            if balance < tx.max_cost() || tx.max_fee_per_gas() < u128::from(self.open.ctx.base_fee)
            {
                tracing::debug!(hash = %tx.hash, "dropping parked transaction that can no longer pay");
                continue;
            }
            match self.execute(tx) {
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(e) => tracing::debug!(error = %e, "parked transaction failed when promoted"),
            }
        }
    }

    /// Retries deferred transactions (called when a block opens or a parent
    /// hash becomes known).
    pub(super) fn run_deferred(&mut self) {
        // Set again if one of them finds no room in the mini-block.
        self.deferred_for_room = false;
        let mut pending = std::mem::take(&mut self.deferred);
        self.deferred_senders.clear();
        self.view.pool_mut().clear_deferred();
        while let Some(tx) = pending.pop_front() {
            let sender = tx.sender;
            let (nonce, _) = self.account_nonce_balance(&sender);
            if tx.nonce() != nonce {
                continue;
            }
            match self.execute(tx) {
                Ok(Some(_)) => self.promote(sender),
                Ok(None) => {
                    // Still blocked (execute() deferred it again): keep the remaining order.
                    for tx in pending.drain(..) {
                        self.queue_deferred(tx);
                    }
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "deferred transaction failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequencer::PoolLimits;
    use crate::sequencer::tests::sequencer_with;
    use crate::testkit::{key, sign, sign_by, tx};
    use alloy_primitives::{Bytes, TxKind};
    use alloy_signer_local::PrivateKeySigner;
    use fulmen_chain::spec::DEV_ACCOUNTS;

    #[test]
    fn unfunded_senders_cannot_park_and_cumulative_cost_is_checked() {
        let mut seq = sequencer_with(PoolLimits::default());
        let spec = seq.spec().clone();
        let bob = DEV_ACCOUNTS[1];
        let nobody = PrivateKeySigner::random();
        let gap = sign_by(
            &spec,
            &nobody,
            1,
            TxKind::Call(bob),
            U256::ZERO,
            Bytes::new(),
            21_000,
            1,
        );
        assert!(matches!(
            seq.submit(gap),
            Err(SubmitError::InsufficientFunds { .. })
        ));
        assert_eq!(seq.parked_count(), 0);
        // 10,000 ETH covers one 6,000 ETH transfer parked, not two.
        let eth = U256::from(10u64).pow(U256::from(18u64));
        let big = |nonce| {
            sign_by(
                &spec,
                key(0),
                nonce,
                TxKind::Call(bob),
                eth * U256::from(6_000u64),
                Bytes::new(),
                21_000,
                1,
            )
        };
        seq.submit(big(1)).unwrap();
        assert!(matches!(
            seq.submit(big(2)),
            Err(SubmitError::InsufficientFunds { .. })
        ));
        assert_eq!(seq.parked_count(), 1);
    }

    #[test]
    fn parked_transactions_expire() {
        let limits = PoolLimits {
            parked_lifetime_s: 10,
            ..PoolLimits::default()
        };
        let mut seq = sequencer_with(limits);
        let spec = seq.spec().clone();
        seq.submit(tx(&spec, 0, 3, DEV_ACCOUNTS[1], 1, 21_000, 1))
            .unwrap();
        let parked_at = seq.view().open().ctx.timestamp;
        let genesis = crate::sequencer::Genesis::new(seq.spec());
        let mut merkle = crate::seal::Merkleizer::new(genesis.trie, 0);
        let job = seq.close_block((parked_at + 5) * 1000);
        // The next block closes once this one is sealed.
        seq.finish_seal(merkle.seal(&job));
        assert_eq!(seq.parked_count(), 1);
        seq.close_block((parked_at + 10) * 1000);
        assert_eq!(seq.parked_count(), 0);
        assert_eq!(seq.parked_bytes(), 0);
    }

    #[test]
    fn a_full_lot_evicts_a_cheaper_sender_and_is_bounded_in_bytes() {
        let limits = PoolLimits {
            parked_total_max: 2,
            ..PoolLimits::default()
        };
        let mut seq = sequencer_with(limits);
        let spec = seq.spec().clone();
        let bob = DEV_ACCOUNTS[1];
        seq.submit(tx(&spec, 0, 5, bob, 1, 21_000, 1)).unwrap();
        seq.submit(tx(&spec, 2, 5, bob, 1, 21_000, 1)).unwrap();
        // Same price: no room.
        assert_eq!(
            seq.submit(tx(&spec, 3, 5, bob, 1, 21_000, 1)).unwrap_err(),
            SubmitError::PoolFull
        );
        // A better price evicts one of the cheapest.
        seq.submit(tx(&spec, 3, 5, bob, 1, 21_000, 1_000)).unwrap();
        assert_eq!(seq.parked_count(), 2);
        let one = tx(&spec, 4, 5, bob, 1, 21_000, 1)
            .envelope
            .encode_2718_len();
        let by_bytes = PoolLimits {
            parked_bytes_max: 2 * one + one / 2,
            ..PoolLimits::default()
        };
        let mut seq = sequencer_with(by_bytes);
        seq.submit(tx(&spec, 0, 5, bob, 1, 21_000, 1)).unwrap();
        seq.submit(tx(&spec, 2, 5, bob, 1, 21_000, 1)).unwrap();
        assert_eq!(
            seq.submit(tx(&spec, 3, 5, bob, 1, 21_000, 1)).unwrap_err(),
            SubmitError::PoolFull
        );
        assert!(seq.parked_bytes() <= by_bytes.parked_bytes_max);
    }

    #[test]
    fn a_replacement_that_does_not_fit_keeps_its_predecessor() {
        let seq = sequencer_with(PoolLimits::default());
        let spec = seq.spec().clone();
        let bob = DEV_ACCOUNTS[1];
        let first = tx(&spec, 0, 5, bob, 1, 21_000, 1);
        let room = first.envelope.encode_2718_len() + 100;
        let limits = PoolLimits {
            parked_bytes_max: room,
            ..PoolLimits::default()
        };
        let mut seq = sequencer_with(limits);
        seq.submit(first.clone()).unwrap();
        // Same nonce, a better price, but 1 KB of calldata: no room.
        let bigger = sign(
            &spec,
            0,
            5,
            TxKind::Call(bob),
            1,
            Bytes::from(vec![1u8; 1_000]),
            100_000,
            300_000_000,
        );
        assert_eq!(seq.submit(bigger).unwrap_err(), SubmitError::PoolFull);
        assert_eq!(seq.parked_count(), 1);
        assert!(seq.is_parked(&first));
    }

    #[test]
    fn eviction_never_happens_for_nothing() {
        let mut seq = sequencer_with(PoolLimits::default());
        let spec = seq.spec().clone();
        let bob = DEV_ACCOUNTS[1];
        let small = tx(&spec, 0, 5, bob, 1, 21_000, 1);
        let limits = PoolLimits {
            parked_bytes_max: small.envelope.encode_2718_len() * 2,
            ..PoolLimits::default()
        };
        seq = sequencer_with(limits);
        seq.submit(small).unwrap();
        // Better paid but larger than the whole lot: evicting the cheap one
        // would not make room, so it stays.
        let huge = sign(
            &spec,
            2,
            5,
            TxKind::Call(bob),
            1,
            Bytes::from(vec![1u8; 2_000]),
            200_000,
            1_000_000_000,
        );
        assert_eq!(seq.submit(huge).unwrap_err(), SubmitError::PoolFull);
        assert_eq!(seq.parked_count(), 1);
    }

    #[test]
    fn the_replacement_bump_saturates() {
        assert_eq!(bumped(100), 110);
        assert_eq!(bumped(1_005), 1_105);
        assert_eq!(bumped(u128::MAX), u128::MAX);
        assert_eq!(bumped(u128::MAX / 100 * 95), u128::MAX);
    }
}
