//! The first field in which two block headers differ, named as JSON-RPC
//! names it: what a verifier reports when the header it computed is not
//! the one the sequencer committed to.

use alloy_consensus::Header;

/// One differing field: its JSON-RPC name, our value, theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDiff {
    /// The field, as `eth_getBlockByNumber` names it.
    pub field: &'static str,
    /// Our value.
    pub ours: String,
    /// Their value.
    pub theirs: String,
}

impl std::fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: ours {}, the sequencer's {}",
            self.field, self.ours, self.theirs
        )
    }
}

/// The first field, in the header's RLP order, where `ours` and `theirs`
/// differ; `None` when they are the same header.
pub fn first_difference(ours: &Header, theirs: &Header) -> Option<FieldDiff> {
    macro_rules! check {
        ($($field:ident => $name:literal),* $(,)?) => {
            $(
                if ours.$field != theirs.$field {
                    return Some(FieldDiff {
                        field: $name,
                        ours: format!("{:?}", ours.$field),
                        theirs: format!("{:?}", theirs.$field),
                    });
                }
            )*
        };
    }
    check! {
        parent_hash => "parentHash",
        ommers_hash => "sha3Uncles",
        beneficiary => "miner",
        state_root => "stateRoot",
        transactions_root => "transactionsRoot",
        receipts_root => "receiptsRoot",
        logs_bloom => "logsBloom",
        difficulty => "difficulty",
        number => "number",
        gas_limit => "gasLimit",
        gas_used => "gasUsed",
        timestamp => "timestamp",
        extra_data => "extraData",
        mix_hash => "mixHash",
        nonce => "nonce",
        base_fee_per_gas => "baseFeePerGas",
        withdrawals_root => "withdrawalsRoot",
        blob_gas_used => "blobGasUsed",
        excess_blob_gas => "excessBlobGas",
        parent_beacon_block_root => "parentBeaconBlockRoot",
        requests_hash => "requestsHash",
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Address, B256};

    #[test]
    fn the_first_differing_field_is_named_in_rlp_order() {
        let ours = Header {
            number: 7,
            gas_used: 21_000,
            ..Default::default()
        };
        assert_eq!(first_difference(&ours, &ours), None);
        let theirs = Header {
            beneficiary: Address::repeat_byte(0xaa),
            state_root: B256::repeat_byte(1),
            gas_used: 42_000,
            ..ours.clone()
        };
        let diff = first_difference(&ours, &theirs).unwrap();
        assert_eq!(diff.field, "miner");
        assert!(diff.theirs.contains("aaaa"), "{diff}");
        let theirs = Header {
            gas_used: 42_000,
            ..ours.clone()
        };
        assert_eq!(first_difference(&ours, &theirs).unwrap().field, "gasUsed");
        let theirs = Header {
            requests_hash: Some(B256::ZERO),
            ..ours.clone()
        };
        assert_eq!(
            first_difference(&ours, &theirs).unwrap().field,
            "requestsHash"
        );
    }
}
