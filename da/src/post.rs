//! Building and signing the type-3 (EIP-4844) L1 transactions that carry
//! fulmen's blobs, their fees and replacement bumps, and the default batch
//! inbox address. Pure: no IO (the L1 calls are in [`crate::l1`]).
//!
//! A batcher tx sends no value to the inbox, an EOA nobody holds the key
//! of, so it costs 21,000 gas ([`BLOB_TX_GAS_LIMIT`]), plus its calldata
//! (a channel's first tx carries the header commitment, `crate::commit`;
//! [`calldata_gas`]), plus its blob gas.

use alloy_consensus::{
    SignableTransaction, TxEip4844, TxEip4844Variant, TxEip4844WithSidecar, TxEnvelope,
};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip4844::env_settings::EnvKzgSettings;
use alloy_eips::eip4844::{AsCkzg, BlobTransactionSidecar, kzg_to_versioned_hash};
use alloy_eips::eip7594::{BlobTransactionSidecarEip7594, BlobTransactionSidecarVariant};
use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;

use crate::blob::{BLOBS_PER_TX_MAX, Blob};

/// Gas of a plain call to an EOA with empty calldata.
pub const BLOB_TX_GAS_LIMIT: u64 = 21_000;

/// Gas `input` costs as calldata: the larger of the standard price (4 per
/// zero byte, 16 per other byte) and the EIP-7623 floor (10 per token, a
/// token being a zero byte or a quarter of another byte), so the limit
/// holds before and after Prague.
pub fn calldata_gas(input: &[u8]) -> u64 {
    let zeros = input.iter().filter(|b| **b == 0).count() as u64;
    let others = input.len() as u64 - zeros;
    let standard = 4 * zeros + 16 * others;
    let floor = 10 * (zeros + 4 * others);
    standard.max(floor)
}
/// Least blob fee cap fulmen offers, as op-batcher's tx manager does
/// (`minBlobTxFee`): geth's blob pool suggests 1 gwei as a floor, and
/// with the blob base fee at its 1 wei minimum a 2 wei cap would leave no
/// room for a bump.
pub const BLOB_FEE_CAP_MIN_WEI: u128 = 1_000_000_000;
/// Least tip fulmen offers: the usual floor for blob txs (Arbitrum's data
/// poster uses it as "the default geth minimum"; op-service's tx manager
/// has a 1 gwei `min-tip-cap` flag).
pub const TIP_MIN_WEI: u128 = 1_000_000_000;
/// How much a replacement must raise each of the three fee fields, in
/// percent. geth's blob pool (`blobpool.Config.PriceBump`, default 100) and
/// reth's (`replace_blob_tx_price_bump`, 100) both want 100 % on the fee
/// cap, the tip **and** the blob fee cap of a blob tx; the 10 % rule is for
/// other txs only.
pub const FEE_BUMP_PERCENT: u128 = 100;

/// Which sidecar the L1 takes with a blob tx. Fixed by the L1's fork:
/// Cancun and Prague take EIP-4844 sidecars (one KZG proof per blob);
/// Osaka (Fusaka, PeerDAS) and later take EIP-7594 sidecars (128 cell
/// proofs per blob) and refuse the old form. [`crate::l1`] tells which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarForm {
    /// EIP-4844: blob, commitment and one blob proof each.
    Eip4844,
    /// EIP-7594: blob, commitment and 128 cell proofs each (Osaka on).
    Eip7594,
}

/// The three fee fields of a blob tx, in wei.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobFees {
    /// Fee cap per unit of execution gas.
    pub max_fee_per_gas: u128,
    /// Tip per unit of execution gas.
    pub max_priority_fee_per_gas: u128,
    /// Fee cap per unit of blob gas.
    pub max_fee_per_blob_gas: u128,
}

impl BlobFees {
    /// Fees from what the L1 answers (latest base fee,
    /// `eth_maxPriorityFeePerGas`, `eth_blobBaseFee`), as op-batcher's tx
    /// manager sets them: tip at least [`TIP_MIN_WEI`]; fee cap = 2 × base
    /// fee + tip, so the tx stays includable while the base fee doubles
    /// (six full blocks at +12.5 % each); blob fee cap = 2 × blob base fee,
    /// at least [`BLOB_FEE_CAP_MIN_WEI`]. Only the base fees are paid, the
    /// caps only bound them.
    pub fn from_market(base_fee_wei: u128, tip_wei: u128, blob_base_fee_wei: u128) -> Self {
        let tip = tip_wei.max(TIP_MIN_WEI);
        Self {
            max_fee_per_gas: base_fee_wei.saturating_mul(2).saturating_add(tip),
            max_priority_fee_per_gas: tip,
            max_fee_per_blob_gas: blob_base_fee_wei
                .saturating_mul(2)
                .max(BLOB_FEE_CAP_MIN_WEI),
        }
    }

    /// Each field the larger of the two: a replacement takes the bumped
    /// fees or the market's, whichever is higher.
    pub fn max(self, other: Self) -> Self {
        Self {
            max_fee_per_gas: self.max_fee_per_gas.max(other.max_fee_per_gas),
            max_priority_fee_per_gas: self
                .max_priority_fee_per_gas
                .max(other.max_priority_fee_per_gas),
            max_fee_per_blob_gas: self.max_fee_per_blob_gas.max(other.max_fee_per_blob_gas),
        }
    }

    /// Each field times `k`, saturating.
    pub fn times(self, k: u128) -> Self {
        Self {
            max_fee_per_gas: self.max_fee_per_gas.saturating_mul(k),
            max_priority_fee_per_gas: self.max_priority_fee_per_gas.saturating_mul(k),
            max_fee_per_blob_gas: self.max_fee_per_blob_gas.saturating_mul(k),
        }
    }

    /// Whether a tx with these fees may replace one with `old` in a geth or
    /// reth blob pool: every field at least `old × (100 + FEE_BUMP_PERCENT)
    /// / 100` and above `old`.
    pub fn replaces(&self, old: &Self) -> bool {
        let pairs = [
            (self.max_fee_per_gas, old.max_fee_per_gas),
            (self.max_priority_fee_per_gas, old.max_priority_fee_per_gas),
            (self.max_fee_per_blob_gas, old.max_fee_per_blob_gas),
        ];
        pairs
            .iter()
            .all(|&(new, old)| new > old && new >= bump_wei(old))
    }
}

/// The least fee that replaces `old_wei` (see [`FEE_BUMP_PERCENT`]),
/// rounded up and at least one wei more.
fn bump_wei(old_wei: u128) -> u128 {
    // old × pct / 100 rounded up, split so that it cannot overflow.
    let extra = (old_wei / 100)
        .saturating_mul(FEE_BUMP_PERCENT)
        .saturating_add((old_wei % 100 * FEE_BUMP_PERCENT).div_ceil(100));
    old_wei.saturating_add(extra.max(1))
}

/// The least fees that replace a pending tx with `fees` (geth's and reth's
/// blob pool rule: +100 % on all three fields). Pure; the batcher takes
/// `bump(old).max(market)`.
pub fn bump(fees: &BlobFees) -> BlobFees {
    BlobFees {
        max_fee_per_gas: bump_wei(fees.max_fee_per_gas),
        max_priority_fee_per_gas: bump_wei(fees.max_priority_fee_per_gas),
        max_fee_per_blob_gas: bump_wei(fees.max_fee_per_blob_gas),
    }
}

/// The batch inbox of an L2 chain by OP's convention (op-deployer's
/// `calculateBatchInboxAddr`): `0x00 ++ keccak256(bytes32(l2_chain_id))[..19]`.
pub fn default_inbox(l2_chain_id: u64) -> Address {
    let word = B256::from(U256::from(l2_chain_id));
    let hash = keccak256(word);
    let mut out = [0u8; 20];
    out[1..].copy_from_slice(&hash[..19]);
    Address::from(out)
}

/// Why a blob tx could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// A blob tx carries at least one blob.
    #[error("a blob tx needs at least one blob")]
    NoBlobs,
    /// More blobs than one tx may carry.
    #[error("{count} blobs, more than the {max} one blob tx may carry")]
    TooManyBlobs {
        /// Blobs given.
        count: usize,
        /// [`BLOBS_PER_TX_MAX`].
        max: usize,
    },
    /// The tip is above the fee cap, which every node refuses.
    #[error("tip {tip_wei} wei is above the fee cap {fee_cap_wei} wei")]
    TipAboveFeeCap {
        /// `max_priority_fee_per_gas`.
        tip_wei: u128,
        /// `max_fee_per_gas`.
        fee_cap_wei: u128,
    },
    /// c-kzg refused a blob (a field element not below the modulus) or
    /// failed.
    #[error("KZG commitment or proof of blob {index}: {detail}")]
    Kzg {
        /// Blob index in the tx.
        index: usize,
        /// c-kzg's message.
        detail: String,
    },
    /// The signer failed.
    #[error("signing the blob tx: {0}")]
    Sign(String),
}

/// A signed blob tx, ready for `eth_sendRawTransaction`.
#[derive(Debug, Clone)]
pub struct SignedBlobTx {
    /// Network encoding (EIP-2718 type 3 with the sidecar), what
    /// `eth_sendRawTransaction` takes.
    pub raw: Bytes,
    /// The tx hash (of the tx without its sidecar).
    pub hash: B256,
    /// One per blob, in order.
    pub blob_versioned_hashes: Vec<B256>,
}

/// Loads the KZG trusted setup (c-kzg's, with its precomputed tables) if
/// it is not loaded yet: about 2.2 s on the dev machine, so the DA thread
/// calls it at start-up rather than in front of its first blob tx.
pub fn load_kzg_settings() {
    let _ = EnvKzgSettings::Default.get();
}

/// Builds the sidecar of `blobs` in `form`: KZG commitments and proofs
/// with c-kzg and the Ethereum trusted setup (loaded once per process).
pub fn sidecar(
    blobs: &[Blob],
    form: SidecarForm,
) -> Result<BlobTransactionSidecarVariant, PostError> {
    check_blob_count(blobs.len())?;
    let settings = EnvKzgSettings::Default.get();
    // One blob at a time, so a refusal names its blob.
    let mut parts = Vec::with_capacity(blobs.len());
    for (index, blob) in blobs.iter().enumerate() {
        let one = vec![*blob];
        let built = match form {
            SidecarForm::Eip4844 => {
                BlobTransactionSidecar::try_from_blobs_with_settings(one, settings)
                    .map(BlobTransactionSidecarVariant::Eip4844)
            }
            SidecarForm::Eip7594 => {
                BlobTransactionSidecarEip7594::try_from_blobs_with_settings(one, settings)
                    .map(BlobTransactionSidecarVariant::Eip7594)
            }
        };
        parts.push(built.map_err(|e| PostError::Kzg {
            index,
            detail: e.to_string(),
        })?);
    }
    Ok(join_sidecars(parts, form))
}

fn join_sidecars(
    parts: Vec<BlobTransactionSidecarVariant>,
    form: SidecarForm,
) -> BlobTransactionSidecarVariant {
    match form {
        SidecarForm::Eip4844 => {
            let mut out = BlobTransactionSidecar::default();
            for part in parts {
                if let BlobTransactionSidecarVariant::Eip4844(s) = part {
                    out.blobs.extend(s.blobs);
                    out.commitments.extend(s.commitments);
                    out.proofs.extend(s.proofs);
                }
            }
            BlobTransactionSidecarVariant::Eip4844(out)
        }
        SidecarForm::Eip7594 => {
            let mut out = BlobTransactionSidecarEip7594::default();
            for part in parts {
                if let BlobTransactionSidecarVariant::Eip7594(s) = part {
                    out.blobs.extend(s.blobs);
                    out.commitments.extend(s.commitments);
                    out.cell_proofs.extend(s.cell_proofs);
                }
            }
            BlobTransactionSidecarVariant::Eip7594(out)
        }
    }
}

fn check_blob_count(count: usize) -> Result<(), PostError> {
    if count == 0 {
        return Err(PostError::NoBlobs);
    }
    if count > BLOBS_PER_TX_MAX {
        return Err(PostError::TooManyBlobs {
            count,
            max: BLOBS_PER_TX_MAX,
        });
    }
    Ok(())
}

/// The EIP-4844 versioned hash of one blob (`0x01 ++ sha256(commitment)[1..]`),
/// to check blobs fetched from a beacon node against a tx's
/// `blob_versioned_hashes`.
pub fn blob_versioned_hash(blob: &Blob) -> Result<B256, PostError> {
    let settings = EnvKzgSettings::Default.get();
    let commitment = settings
        .blob_to_kzg_commitment(blob.as_ckzg())
        .map_err(|e| PostError::Kzg {
            index: 0,
            detail: e.to_string(),
        })?;
    Ok(kzg_to_versioned_hash(commitment.to_bytes().as_slice()))
}

/// Builds and signs a type-3 tx carrying `blobs` (1 to
/// [`BLOBS_PER_TX_MAX`]) to `inbox`, with no value and no calldata, and
/// encodes it with its sidecar in `form`.
pub fn blob_tx(
    blobs: &[Blob],
    inbox: Address,
    nonce: u64,
    fees: &BlobFees,
    chain_id: u64,
    key: &PrivateKeySigner,
    form: SidecarForm,
) -> Result<SignedBlobTx, PostError> {
    batcher_tx(
        blobs,
        (inbox, &Bytes::new()),
        nonce,
        fees,
        chain_id,
        key,
        form,
    )
}

/// As [`blob_tx`], to the inbox with calldata `input` (a header
/// commitment), the gas limit covering it.
pub fn batcher_tx(
    blobs: &[Blob],
    (inbox, input): (Address, &Bytes),
    nonce: u64,
    fees: &BlobFees,
    chain_id: u64,
    key: &PrivateKeySigner,
    form: SidecarForm,
) -> Result<SignedBlobTx, PostError> {
    if fees.max_priority_fee_per_gas > fees.max_fee_per_gas {
        return Err(PostError::TipAboveFeeCap {
            tip_wei: fees.max_priority_fee_per_gas,
            fee_cap_wei: fees.max_fee_per_gas,
        });
    }
    let sidecar = sidecar(blobs, form)?;
    let blob_versioned_hashes: Vec<B256> = sidecar.versioned_hashes().collect();
    assert_eq!(blob_versioned_hashes.len(), blobs.len());
    let tx = TxEip4844 {
        chain_id,
        nonce,
        gas_limit: BLOB_TX_GAS_LIMIT + calldata_gas(input),
        max_fee_per_gas: fees.max_fee_per_gas,
        max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
        to: inbox,
        value: U256::ZERO,
        access_list: Default::default(),
        blob_versioned_hashes: blob_versioned_hashes.clone(),
        max_fee_per_blob_gas: fees.max_fee_per_blob_gas,
        input: input.clone(),
    };
    // The signature covers the tx without its sidecar.
    let signature = key
        .sign_hash_sync(&tx.signature_hash())
        .map_err(|e| PostError::Sign(e.to_string()))?;
    let with_sidecar = TxEip4844WithSidecar::from_tx_and_sidecar(tx, sidecar);
    let signed = TxEip4844Variant::TxEip4844WithSidecar(with_sidecar).into_signed(signature);
    let hash = *signed.hash();
    let envelope = TxEnvelope::from(signed);
    let raw = Bytes::from(envelope.encoded_2718());
    Ok(SignedBlobTx {
        raw,
        hash,
        blob_versioned_hashes,
    })
}

#[cfg(test)]
#[path = "post_tests.rs"]
mod tests;
