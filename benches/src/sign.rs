//! Fast signing with libsecp256k1 (pre-signing 100k transactions must not
//! take longer than the run it feeds).

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Signature, U256, keccak256};
use secp256k1::{Message, SECP256K1, SecretKey};

/// A key and its address.
#[derive(Clone)]
pub struct Key {
    secret: SecretKey,
    /// The account's address.
    pub address: Address,
}

impl Key {
    /// A key from 32 secret bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        let secret = SecretKey::from_byte_array(*bytes).ok()?;
        let public = secret.public_key(SECP256K1).serialize_uncompressed();
        let address = Address::from_slice(&keccak256(&public[1..])[12..]);
        Some(Self { secret, address })
    }

    /// A deterministic key derived from `seed` and `index`.
    pub fn derived(seed: u64, index: u64) -> Self {
        let mut counter = 0u64;
        loop {
            let mut input = [0u8; 24];
            input[..8].copy_from_slice(&seed.to_be_bytes());
            input[8..16].copy_from_slice(&index.to_be_bytes());
            input[16..].copy_from_slice(&counter.to_be_bytes());
            if let Some(key) = Self::from_bytes(&keccak256(input).0) {
                return key;
            }
            counter += 1;
        }
    }

    /// Signs `hash`.
    pub fn sign_hash(&self, hash: B256) -> Signature {
        let signature =
            SECP256K1.sign_ecdsa_recoverable(Message::from_digest(hash.0), &self.secret);
        let (recid, bytes) = signature.serialize_compact();
        let r = U256::from_be_slice(&bytes[..32]);
        let s = U256::from_be_slice(&bytes[32..]);
        Signature::new(r, s, i32::from(recid) == 1)
    }

    /// Signs an EIP-1559 transaction; returns its EIP-2718 bytes and hash.
    pub fn sign_1559(&self, tx: TxEip1559) -> (Vec<u8>, B256) {
        let signature = self.sign_hash(tx.signature_hash());
        let envelope = TxEnvelope::from(tx.into_signed(signature));
        (envelope.encoded_2718(), *envelope.tx_hash())
    }
}

/// The standard test mnemonic that dev nodes (fulmen --dev, anvil) fund.
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// The first ten keys of [`DEV_MNEMONIC`] (m/44'/60'/0'/0/i).
pub fn dev_keys() -> Vec<Key> {
    (0..10)
        .map(|i| {
            let signer = alloy_signer_local::MnemonicBuilder::english()
                .phrase(DEV_MNEMONIC)
                .index(i)
                .and_then(|b| b.build())
                .expect("the constant mnemonic derives");
            Key::from_bytes(&signer.to_bytes().0).expect("a derived key is valid")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_keys_give_the_dev_addresses_and_signatures_recover() {
        let keys = dev_keys();
        assert_eq!(
            format!("{}", keys[0].address),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        assert_eq!(
            format!("{}", keys[1].address),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        );
        assert_eq!(
            format!("{}", keys[9].address),
            "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"
        );
        let hash = keccak256(b"fulmen");
        let signature = keys[3].sign_hash(hash);
        assert_eq!(
            fulmen_chain::tx::recover_signer(&signature, hash).unwrap(),
            keys[3].address
        );
        assert_ne!(Key::derived(1, 2).address, Key::derived(1, 3).address);
    }
}
