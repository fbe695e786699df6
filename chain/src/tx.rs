//! Transaction decoding, sender recovery and the stateless checks that run on
//! the net cores before a transaction reaches the sequencer.

use alloy_consensus::{Transaction, TxEnvelope};
use alloy_eips::{
    eip2718::{Decodable2718, Encodable2718},
    eip7702::{RecoveredAuthority, RecoveredAuthorization, SignedAuthorization},
};
use alloy_primitives::{Address, B256, Bytes, Signature, U256, keccak256};
use revm::context_interface::cfg::gas::calculate_initial_tx_gas;
use revm::primitives::hardfork::SpecId;
use secp256k1::{
    Message, SECP256K1,
    ecdsa::{RecoverableSignature, RecoveryId},
};

/// Largest encoded transaction accepted (geth's txpool limit).
pub const TX_SIZE_BYTES_MAX: usize = 128 * 1024;

/// Maximum initcode size (EIP-3860).
pub const INITCODE_SIZE_BYTES_MAX: usize = 2 * 24_576;

/// Why a transaction was refused. The messages follow geth's wording, so that
/// clients that match on them keep working.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The bytes are not a valid EIP-2718 transaction.
    #[error("invalid transaction encoding: {0}")]
    Decode(String),
    /// Signature values are out of range or recovery failed.
    #[error("invalid transaction v, r, s values")]
    InvalidSignature,
    /// Legacy transaction without EIP-155 replay protection.
    #[error("only replay-protected (EIP-155) transactions allowed over RPC")]
    NotReplayProtected,
    /// Signed for another chain.
    #[error("invalid chain id for signer: have {have} want {want}")]
    WrongChainId {
        /// Chain id in the transaction.
        have: u64,
        /// This chain's id.
        want: u64,
    },
    /// Blob transactions have no place on this L2.
    #[error(
        "transaction type not supported: blob transactions (type 3) are not accepted on this L2"
    )]
    BlobTxNotSupported,
    /// Encoded size above [`TX_SIZE_BYTES_MAX`].
    #[error("oversized data: transaction size {size}, limit {limit}")]
    Oversized {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Initcode above the EIP-3860 limit.
    #[error("max initcode size exceeded: code size {size}, limit {limit}")]
    InitcodeTooLarge {
        /// Initcode size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Gas limit below the intrinsic cost.
    #[error("intrinsic gas too low: gas {gas}, minimum needed {needed}")]
    IntrinsicGasTooLow {
        /// The transaction's gas limit.
        gas: u64,
        /// Intrinsic gas (or the EIP-7623 floor when larger).
        needed: u64,
    },
    /// Gas limit above the block gas limit.
    #[error("exceeds block gas limit: gas {gas}, block gas limit {limit}")]
    GasLimitTooHigh {
        /// The transaction's gas limit.
        gas: u64,
        /// The block gas limit.
        limit: u64,
    },
    /// Gas limit above the per-transaction cap (EIP-7825; geth's wording).
    #[error("transaction gas limit too high (cap: {cap}, tx: {gas})")]
    GasLimitAboveCap {
        /// The transaction's gas limit.
        gas: u64,
        /// The per-transaction cap.
        cap: u64,
    },
    /// Tip above fee cap.
    #[error("max priority fee per gas higher than max fee per gas")]
    TipAboveFeeCap,
    /// EIP-7702 transaction without authorizations.
    #[error("EIP-7702 transaction with empty auth list")]
    EmptyAuthList,
    /// EIP-7702 transaction creating a contract.
    #[error("EIP-7702 transaction cannot create a contract")]
    SetCodeCreate,
}

/// The stateless rules a transaction must meet.
#[derive(Debug, Clone, Copy)]
pub struct TxRules {
    /// This chain's id.
    pub chain_id: u64,
    /// Block gas limit; no transaction may ask for more.
    pub block_gas_limit: u64,
    /// Per-transaction gas cap (EIP-7825); no transaction may ask for more.
    pub tx_gas_limit_max: u64,
    /// Execution rules in force.
    pub spec: SpecId,
    /// Legacy transactions without EIP-155 replay protection (no chain id)
    /// are taken (geth's `--rpc.allow-unprotected-txs`): keyless
    /// deployments, such as the CREATE2 deployer's, need them.
    pub allow_unprotected: bool,
}

/// A decoded transaction with its sender, ready for the sequencer.
#[derive(Debug, Clone)]
pub struct RecoveredTx {
    /// The signed transaction.
    pub envelope: TxEnvelope,
    /// The sender recovered from the signature.
    pub sender: Address,
    /// Transaction hash.
    pub hash: B256,
    /// EIP-7702 authorizations with their authorities already recovered
    /// (recovery belongs on the net cores, not on the sequencer).
    pub authorizations: Vec<RecoveredAuthorization>,
    /// Intrinsic gas, with the EIP-7623 floor applied.
    pub intrinsic_gas: u64,
    /// Encoded length in bytes.
    pub encoded_len: usize,
}

impl RecoveredTx {
    /// Nonce.
    pub fn nonce(&self) -> u64 {
        self.envelope.nonce()
    }

    /// Gas limit.
    pub fn gas_limit(&self) -> u64 {
        self.envelope.gas_limit()
    }

    /// Maximum fee per gas (gas price for legacy and EIP-2930).
    pub fn max_fee_per_gas(&self) -> u128 {
        self.envelope.max_fee_per_gas()
    }

    /// Maximum priority fee per gas (gas price for legacy and EIP-2930).
    pub fn max_priority_fee_per_gas(&self) -> u128 {
        self.envelope
            .max_priority_fee_per_gas()
            .unwrap_or_else(|| self.envelope.max_fee_per_gas())
    }

    /// Most the transaction can cost the sender: gas limit × fee cap + value.
    /// Saturating: U256's operators wrap, and a value near 2^256 must not
    /// wrap the cost below the balance check (no balance reaches U256::MAX).
    pub fn max_cost(&self) -> U256 {
        U256::from(self.gas_limit())
            .saturating_mul(U256::from(self.max_fee_per_gas()))
            .saturating_add(self.envelope.value())
    }

    /// Price actually paid per gas at `base_fee`.
    pub fn effective_gas_price(&self, base_fee: u64) -> u128 {
        self.envelope.effective_gas_price(Some(base_fee))
    }

    /// The EIP-2718 encoding.
    pub fn encoded(&self) -> Bytes {
        self.envelope.encoded_2718().into()
    }
}

/// Decodes raw EIP-2718 bytes, recovers the sender and runs the stateless checks.
pub fn decode_and_check(raw: &[u8], rules: &TxRules) -> Result<RecoveredTx, TxError> {
    if raw.len() > TX_SIZE_BYTES_MAX {
        return Err(TxError::Oversized {
            size: raw.len(),
            limit: TX_SIZE_BYTES_MAX,
        });
    }
    if raw.is_empty() {
        return Err(TxError::Decode("empty input".into()));
    }
    let envelope =
        TxEnvelope::decode_2718_exact(raw).map_err(|e| TxError::Decode(e.to_string()))?;
    check_stateless(&envelope, rules)?;
    let sender = recover_signer(envelope.signature(), envelope.signature_hash())?;
    let authorizations = recover_authorizations(&envelope);
    let intrinsic_gas = intrinsic_gas(&envelope, rules.spec);
    if envelope.gas_limit() < intrinsic_gas {
        return Err(TxError::IntrinsicGasTooLow {
            gas: envelope.gas_limit(),
            needed: intrinsic_gas,
        });
    }
    let hash = *envelope.tx_hash();
    Ok(RecoveredTx {
        envelope,
        sender,
        hash,
        authorizations,
        intrinsic_gas,
        encoded_len: raw.len(),
    })
}

/// The authorities of an EIP-7702 transaction's authorizations (none for
/// other types).
fn recover_authorizations(envelope: &TxEnvelope) -> Vec<RecoveredAuthorization> {
    match envelope {
        TxEnvelope::Eip7702(tx) => tx
            .tx()
            .authorization_list
            .iter()
            .map(recover_authorization)
            .collect(),
        _ => Vec::new(),
    }
}

/// Rebuilds a transaction read back from the log: the sender is trusted (it
/// was recovered before the record was written), so only 7702 authorities
/// are recovered again.
pub fn from_logged(
    envelope: TxEnvelope,
    sender: Address,
    encoded_len: usize,
    spec: SpecId,
) -> RecoveredTx {
    let authorizations = recover_authorizations(&envelope);
    let intrinsic_gas = intrinsic_gas(&envelope, spec);
    let hash = *envelope.tx_hash();
    RecoveredTx {
        envelope,
        sender,
        hash,
        authorizations,
        intrinsic_gas,
        encoded_len,
    }
}

fn check_stateless(envelope: &TxEnvelope, rules: &TxRules) -> Result<(), TxError> {
    if envelope.is_eip4844() {
        return Err(TxError::BlobTxNotSupported);
    }
    match envelope.chain_id() {
        None if !rules.allow_unprotected => return Err(TxError::NotReplayProtected),
        None => {}
        Some(have) if have != rules.chain_id => {
            return Err(TxError::WrongChainId {
                have,
                want: rules.chain_id,
            });
        }
        Some(_) => {}
    }
    if envelope.gas_limit() > rules.block_gas_limit {
        return Err(TxError::GasLimitTooHigh {
            gas: envelope.gas_limit(),
            limit: rules.block_gas_limit,
        });
    }
    if envelope.gas_limit() > rules.tx_gas_limit_max {
        return Err(TxError::GasLimitAboveCap {
            gas: envelope.gas_limit(),
            cap: rules.tx_gas_limit_max,
        });
    }
    if let Some(tip) = envelope.max_priority_fee_per_gas()
        && tip > envelope.max_fee_per_gas()
    {
        return Err(TxError::TipAboveFeeCap);
    }
    if envelope.is_create() && envelope.input().len() > INITCODE_SIZE_BYTES_MAX {
        return Err(TxError::InitcodeTooLarge {
            size: envelope.input().len(),
            limit: INITCODE_SIZE_BYTES_MAX,
        });
    }
    if let TxEnvelope::Eip7702(tx) = envelope
        && tx.tx().authorization_list.is_empty()
    {
        return Err(TxError::EmptyAuthList);
    }
    Ok(())
}

/// Intrinsic gas of a transaction, with the EIP-7623 calldata floor applied.
pub fn intrinsic_gas(envelope: &TxEnvelope, spec: SpecId) -> u64 {
    let (accounts, slots) = envelope
        .access_list()
        .map(|list| {
            (
                list.len() as u64,
                list.iter().map(|item| item.storage_keys.len() as u64).sum(),
            )
        })
        .unwrap_or((0, 0));
    let auths = envelope
        .authorization_list()
        .map(|list| list.len() as u64)
        .unwrap_or(0);
    let gas = calculate_initial_tx_gas(
        spec,
        envelope.input(),
        envelope.is_create(),
        accounts,
        slots,
        auths,
        None,
    );
    gas.initial_regular_gas
        .saturating_add(gas.initial_state_gas)
        .max(gas.floor_gas)
}

/// Recovers the signer of `hash` with libsecp256k1, rejecting high-s
/// signatures (EIP-2).
pub fn recover_signer(signature: &Signature, hash: B256) -> Result<Address, TxError> {
    if signature.normalize_s().is_some() {
        return Err(TxError::InvalidSignature);
    }
    let bytes = signature.as_bytes();
    let recid =
        RecoveryId::try_from(i32::from(signature.v())).map_err(|_| TxError::InvalidSignature)?;
    let sig = RecoverableSignature::from_compact(&bytes[..64], recid)
        .map_err(|_| TxError::InvalidSignature)?;
    let key = SECP256K1
        .recover_ecdsa(Message::from_digest(hash.0), &sig)
        .map_err(|_| TxError::InvalidSignature)?;
    let public = key.serialize_uncompressed();
    Ok(Address::from_slice(&keccak256(&public[1..])[12..]))
}

fn recover_authorization(auth: &SignedAuthorization) -> RecoveredAuthorization {
    let authority = auth
        .signature()
        .ok()
        .and_then(|sig| recover_signer(&sig, auth.signature_hash()).ok())
        .map_or(RecoveredAuthority::Invalid, RecoveredAuthority::Valid);
    RecoveredAuthorization::new_unchecked(auth.inner().clone(), authority)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::spec::SPEC;
    use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxLegacy};
    use alloy_network::TxSignerSync;
    use alloy_primitives::TxKind;
    use alloy_signer_local::PrivateKeySigner;

    pub(crate) const RULES: TxRules = TxRules {
        chain_id: 4242,
        block_gas_limit: 30_000_000,
        tx_gas_limit_max: 1 << 24,
        spec: SPEC,
        allow_unprotected: false,
    };

    fn legacy(signer: &PrivateKeySigner) -> TxEnvelope {
        let mut tx = TxLegacy {
            chain_id: Some(4242),
            nonce: 3,
            gas_price: 7,
            gas_limit: 50_000,
            to: TxKind::Call(Address::repeat_byte(1)),
            value: U256::from(5),
            input: Bytes::from_static(&[0, 1, 2, 0]),
        };
        let sig = signer.sign_transaction_sync(&mut tx).unwrap();
        tx.into_signed(sig).into()
    }

    /// A signed EIP-2930 contract creation.
    pub(crate) fn access_list_tx(signer: &PrivateKeySigner) -> TxEnvelope {
        let mut tx = TxEip2930 {
            chain_id: 4242,
            gas_price: 7,
            gas_limit: 60_000,
            to: TxKind::Create,
            input: Bytes::from_static(&[0x60, 0x00]),
            ..Default::default()
        };
        let sig = signer.sign_transaction_sync(&mut tx).unwrap();
        tx.into_signed(sig).into()
    }

    /// A signed EIP-1559 transfer.
    pub(crate) fn dynamic_fee(signer: &PrivateKeySigner) -> TxEnvelope {
        let mut tx = TxEip1559 {
            chain_id: 4242,
            gas_limit: 21_000,
            max_fee_per_gas: 10,
            max_priority_fee_per_gas: 1,
            to: TxKind::Call(Address::repeat_byte(2)),
            ..Default::default()
        };
        let sig = signer.sign_transaction_sync(&mut tx).unwrap();
        tx.into_signed(sig).into()
    }

    #[test]
    fn libsecp256k1_recovery_matches_alloy_and_encoding_round_trips() {
        let signer = PrivateKeySigner::random();
        for envelope in [
            legacy(&signer),
            access_list_tx(&signer),
            dynamic_fee(&signer),
        ] {
            let raw = envelope.encoded_2718();
            let tx = decode_and_check(&raw, &RULES).unwrap();
            assert_eq!(tx.sender, signer.address());
            let reference = envelope
                .signature()
                .recover_address_from_prehash(&envelope.signature_hash());
            assert_eq!(
                Some(tx.sender),
                reference.ok(),
                "k256 and libsecp256k1 agree"
            );
            assert_eq!(tx.hash, *envelope.tx_hash());
            assert_eq!(tx.encoded().as_ref(), raw.as_slice());
            assert!(tx.intrinsic_gas >= 21_000);
        }
        // Create with initcode: 21000 + 32000 + calldata + initcode words.
        let create = decode_and_check(&access_list_tx(&signer).encoded_2718(), &RULES).unwrap();
        assert_eq!(create.intrinsic_gas, 21_000 + 32_000 + 16 + 4 + 2);
    }

    #[test]
    fn arbitrary_bytes_are_errors_not_panics() {
        let signer = PrivateKeySigner::random();
        let valid = dynamic_fee(&signer).encoded_2718();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let mut bytes = valid.clone();
            // Flip, truncate or extend at random positions.
            match next() % 3 {
                0 => {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] ^= (next() as u8) | 1;
                }
                1 => bytes.truncate((next() as usize) % bytes.len()),
                _ => bytes.extend((0..next() % 8).map(|_| next() as u8)),
            }
            if round % 7 == 0 {
                bytes = (0..next() % 200).map(|_| next() as u8).collect();
            }
            let _ = decode_and_check(&bytes, &RULES);
        }
    }

    /// A value near 2^256 wrapped `max_cost` to a few wei, below the value
    /// itself, so the sequencer's balance check let the sender through. The
    /// `tx_decode` fuzz target checks this property; the same transaction is
    /// in fuzz/regressions/tx_decode/.
    #[test]
    fn max_cost_saturates_instead_of_wrapping() {
        let signer = PrivateKeySigner::random();
        let mut tx = TxEip1559 {
            chain_id: 4242,
            gas_limit: 21_000,
            max_fee_per_gas: 10,
            max_priority_fee_per_gas: 1,
            to: TxKind::Call(Address::repeat_byte(2)),
            value: U256::MAX - U256::from(5),
            ..Default::default()
        };
        let sig = signer.sign_transaction_sync(&mut tx).unwrap();
        let raw = TxEnvelope::from(tx.into_signed(sig)).encoded_2718();
        let tx = decode_and_check(&raw, &RULES).unwrap();
        assert_eq!(tx.max_cost(), U256::MAX);
        let small = decode_and_check(&dynamic_fee(&signer).encoded_2718(), &RULES).unwrap();
        assert_eq!(small.max_cost(), U256::from(21_000 * 10));
    }

    #[test]
    fn unprotected_legacy_txs_are_refused_unless_allowed() {
        let signer = PrivateKeySigner::random();
        let mut tx = TxLegacy {
            chain_id: None,
            nonce: 0,
            gas_price: 7,
            gas_limit: 60_000,
            to: TxKind::Create,
            input: Bytes::from_static(&[0x60, 0x00]),
            ..Default::default()
        };
        let sig = signer.sign_transaction_sync(&mut tx).unwrap();
        let raw = TxEnvelope::from(tx.into_signed(sig)).encoded_2718();
        assert_eq!(
            decode_and_check(&raw, &RULES).unwrap_err(),
            TxError::NotReplayProtected
        );
        let allowed = TxRules {
            allow_unprotected: true,
            ..RULES
        };
        let recovered = decode_and_check(&raw, &allowed).unwrap();
        assert_eq!(recovered.sender, signer.address());
        assert_eq!(recovered.envelope.chain_id(), None);
    }

    #[test]
    fn stateless_checks_refuse_with_geth_wording() {
        let signer = PrivateKeySigner::random();
        let raw = dynamic_fee(&signer).encoded_2718();
        let refusal = |rules: TxRules| decode_and_check(&raw, &rules).unwrap_err().to_string();
        assert_eq!(
            refusal(TxRules {
                chain_id: 1,
                ..RULES
            }),
            "invalid chain id for signer: have 4242 want 1"
        );
        assert_eq!(
            refusal(TxRules {
                block_gas_limit: 20_000,
                ..RULES
            }),
            "exceeds block gas limit: gas 21000, block gas limit 20000"
        );
        assert_eq!(
            refusal(TxRules {
                tx_gas_limit_max: 20_000,
                ..RULES
            }),
            "transaction gas limit too high (cap: 20000, tx: 21000)"
        );
        assert!(matches!(
            decode_and_check(&[], &RULES),
            Err(TxError::Decode(_))
        ));
        let huge = vec![0u8; TX_SIZE_BYTES_MAX + 1];
        assert!(matches!(
            decode_and_check(&huge, &RULES),
            Err(TxError::Oversized { .. })
        ));
        let mut tip_above_cap = TxEip1559 {
            chain_id: 4242,
            gas_limit: 21_000,
            max_fee_per_gas: 1,
            max_priority_fee_per_gas: 2,
            ..Default::default()
        };
        let sig = signer.sign_transaction_sync(&mut tip_above_cap).unwrap();
        let raw = TxEnvelope::from(tip_above_cap.into_signed(sig)).encoded_2718();
        assert_eq!(
            decode_and_check(&raw, &RULES).unwrap_err(),
            TxError::TipAboveFeeCap
        );
    }
}
