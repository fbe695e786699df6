use super::*;

use alloy_consensus::Transaction;
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::address;

use crate::frame::{Frame, frames_to_blobs};
use crate::testutil::XorShift;

/// Account 9 of `test test … junk`.
const KEY: &str = "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6";
const ADDRESS: Address = address!("0xa0Ee7A142d267C1f36714E4a8F75612F20a79720");
const GWEI: u128 = 1_000_000_000;

fn key() -> PrivateKeySigner {
    KEY.parse().expect("test key")
}

fn blobs(count: usize, seed: u64) -> Vec<Blob> {
    let mut rng = XorShift::new(seed);
    let frames: Vec<Frame> = (0..count)
        .map(|i| Frame {
            channel_id: [7; 16],
            number: i as u16,
            data: rng.bytes(1000 + 25_000 * i),
            is_last: i + 1 == count,
        })
        .collect();
    frames_to_blobs(&frames).expect("frames fit blobs")
}

fn fees() -> BlobFees {
    BlobFees::from_market(7, 0, 1)
}

#[test]
fn key_is_account_9() {
    assert_eq!(key().address(), ADDRESS);
}

#[test]
fn default_inbox_is_op_deployers() {
    // op-deployer's calculateBatchInboxAddr for chain 196, as published
    // with its test (TestCalculateBatchInboxAddr).
    assert_eq!(
        default_inbox(196),
        address!("0x002bdE9b0c0857AEE2cFFDea6b8723eAF5989449")
    );
    assert_eq!(default_inbox(196).0[0], 0);
    assert_ne!(default_inbox(4242), default_inbox(4243));
}

#[test]
fn fees_from_market() {
    let f = BlobFees::from_market(30 * GWEI, 2 * GWEI, 5 * GWEI);
    assert_eq!(f.max_priority_fee_per_gas, 2 * GWEI);
    assert_eq!(f.max_fee_per_gas, 62 * GWEI);
    assert_eq!(f.max_fee_per_blob_gas, 10 * GWEI);
    // Floors: 1 gwei tip, 1 gwei blob fee cap.
    let f = BlobFees::from_market(7, 0, 1);
    assert_eq!(
        f,
        BlobFees {
            max_fee_per_gas: GWEI + 14,
            max_priority_fee_per_gas: GWEI,
            max_fee_per_blob_gas: GWEI
        }
    );
    // Saturates, never overflows.
    let f = BlobFees::from_market(u128::MAX, u128::MAX, u128::MAX);
    assert_eq!(f.max_fee_per_gas, u128::MAX);
    assert_eq!(f.max_fee_per_blob_gas, u128::MAX);
}

#[test]
fn bump_doubles_every_field() {
    let old = BlobFees {
        max_fee_per_gas: 100,
        max_priority_fee_per_gas: 10,
        max_fee_per_blob_gas: 7,
    };
    let new = bump(&old);
    assert_eq!(
        new,
        BlobFees {
            max_fee_per_gas: 200,
            max_priority_fee_per_gas: 20,
            max_fee_per_blob_gas: 14
        }
    );
    assert!(new.replaces(&old));
    assert!(!old.replaces(&old));
    // One field short of +100 % is refused, as geth's blob pool does.
    for field in 0..3 {
        let mut short = new;
        match field {
            0 => short.max_fee_per_gas -= 1,
            1 => short.max_priority_fee_per_gas -= 1,
            _ => short.max_fee_per_blob_gas -= 1,
        }
        assert!(!short.replaces(&old), "field {field}");
    }
    // Zero still moves (a zero tip bumps to 1 wei).
    let zero = BlobFees {
        max_fee_per_gas: 0,
        max_priority_fee_per_gas: 0,
        max_fee_per_blob_gas: 0,
    };
    assert!(bump(&zero).replaces(&zero));
    // Repeated bumps grow and never overflow.
    let mut f = fees();
    for _ in 0..200 {
        f = bump(&f);
    }
    assert_eq!(f.max_fee_per_gas, u128::MAX);
    // The market wins when it is above the bump.
    let market = BlobFees::from_market(1000 * GWEI, GWEI, GWEI);
    assert_eq!(
        bump(&fees()).max(market).max_fee_per_gas,
        market.max_fee_per_gas
    );
}

#[test]
fn blob_count_and_fee_checks() {
    let key = key();
    let inbox = default_inbox(4242);
    assert!(matches!(
        blob_tx(&[], inbox, 0, &fees(), 1, &key, SidecarForm::Eip4844),
        Err(PostError::NoBlobs)
    ));
    let seven = vec![Blob::ZERO; BLOBS_PER_TX_MAX + 1];
    assert!(matches!(
        blob_tx(&seven, inbox, 0, &fees(), 1, &key, SidecarForm::Eip4844),
        Err(PostError::TooManyBlobs { count: 7, max: 6 })
    ));
    let bad = BlobFees {
        max_fee_per_gas: 1,
        max_priority_fee_per_gas: 2,
        max_fee_per_blob_gas: 1,
    };
    assert!(matches!(
        blob_tx(&[Blob::ZERO], inbox, 0, &bad, 1, &key, SidecarForm::Eip4844),
        Err(PostError::TipAboveFeeCap {
            tip_wei: 2,
            fee_cap_wei: 1
        })
    ));
    // A blob with a field element over the modulus is refused, by index.
    let mut over = blobs(2, 1);
    over[1].0[0] = 0xff;
    let err = blob_tx(&over, inbox, 0, &fees(), 1, &key, SidecarForm::Eip4844).unwrap_err();
    assert!(matches!(err, PostError::Kzg { index: 1, .. }), "{err}");
}

fn check_signed(form: SidecarForm) {
    let blobs = blobs(3, 2);
    let inbox = default_inbox(4242);
    let fees = BlobFees::from_market(30 * GWEI, 2 * GWEI, 5 * GWEI);
    let signed = blob_tx(&blobs, inbox, 5, &fees, 31337, &key(), form).expect("blob tx");
    assert_eq!(signed.raw[0], 0x03);
    let envelope = TxEnvelope::decode_2718(&mut signed.raw.as_ref()).expect("decodes");
    assert_eq!(*envelope.tx_hash(), signed.hash);
    assert_eq!(envelope.to(), Some(inbox));
    assert_eq!(envelope.nonce(), 5);
    assert_eq!(envelope.gas_limit(), BLOB_TX_GAS_LIMIT);
    assert_eq!(envelope.chain_id(), Some(31337));
    assert_eq!(envelope.max_fee_per_gas(), fees.max_fee_per_gas);
    assert_eq!(
        envelope.max_priority_fee_per_gas(),
        Some(fees.max_priority_fee_per_gas)
    );
    assert_eq!(
        envelope.max_fee_per_blob_gas(),
        Some(fees.max_fee_per_blob_gas)
    );
    assert!(envelope.input().is_empty());
    assert!(envelope.value().is_zero());
    let TxEnvelope::Eip4844(signed_tx) = &envelope else {
        panic!("not type 3")
    };
    let TxEip4844Variant::TxEip4844WithSidecar(with) = signed_tx.tx() else {
        panic!("no sidecar")
    };
    assert_eq!(with.sidecar.blobs(), blobs.as_slice());
    match (&with.sidecar, form) {
        (BlobTransactionSidecarVariant::Eip4844(s), SidecarForm::Eip4844) => {
            assert_eq!(s.proofs.len(), 3)
        }
        (BlobTransactionSidecarVariant::Eip7594(s), SidecarForm::Eip7594) => {
            assert_eq!(s.cell_proofs.len(), 3 * 128)
        }
        _ => panic!("sidecar in the wrong form"),
    }
    with.sidecar
        .validate(&signed.blob_versioned_hashes, EnvKzgSettings::Default.get())
        .expect("KZG proofs verify");
    for (blob, hash) in blobs.iter().zip(&signed.blob_versioned_hashes) {
        assert_eq!(blob_versioned_hash(blob).expect("hash"), *hash);
        assert_eq!(hash[0], 0x01);
    }
    let signer = signed_tx
        .signature()
        .recover_address_from_prehash(&with.tx.signature_hash())
        .expect("recovers");
    assert_eq!(signer, ADDRESS);
    // The tx hash is the hash of the tx without its sidecar.
    let bare = with.tx.clone().into_signed(*signed_tx.signature());
    assert_eq!(*bare.hash(), signed.hash);
}

#[test]
fn signed_4844_tx_decodes_and_verifies() {
    check_signed(SidecarForm::Eip4844);
}

#[test]
fn signed_7594_tx_decodes_and_verifies() {
    check_signed(SidecarForm::Eip7594);
}

/// `cargo nextest run --release -p fulmen-da --run-ignored only measure_kzg --no-capture`
#[test]
#[ignore = "measurement"]
fn measure_kzg() {
    let start = std::time::Instant::now();
    let _ = EnvKzgSettings::Default.get();
    println!("trusted setup load: {:?}", start.elapsed());
    let blobs = blobs(BLOBS_PER_TX_MAX, 3);
    for form in [SidecarForm::Eip4844, SidecarForm::Eip7594] {
        let _ = sidecar(&blobs[..1], form).expect("warm");
        let rounds = 3;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            let _ = sidecar(&blobs, form).expect("sidecar");
        }
        let per_blob = start.elapsed() / (rounds * blobs.len() as u32);
        println!("{form:?}: {per_blob:?} per blob (commitment + proofs)");
    }
    let start = std::time::Instant::now();
    for blob in &blobs {
        let _ = blob_versioned_hash(blob).expect("hash");
    }
    println!(
        "commitment only: {:?} per blob",
        start.elapsed() / blobs.len() as u32
    );
}

/// `sidecar` on ready blobs gives what alloy's `SidecarBuilder` with
/// `OpBlobCoder` gives from the payloads.
#[test]
fn sidecar_matches_sidecar_builder() {
    use crate::blob::OpBlobCoder;
    use crate::frame::encode_payload;
    use alloy_eips::eip4844::builder::SidecarBuilder;
    let mut rng = XorShift::new(9);
    let frames: Vec<Frame> = (0..2)
        .map(|i| Frame {
            channel_id: [1; 16],
            number: i,
            data: rng.bytes(50_000),
            is_last: i == 1,
        })
        .collect();
    let blobs = frames_to_blobs(&frames).expect("blobs");
    let mut builder = SidecarBuilder::<OpBlobCoder>::new();
    for frame in &frames {
        builder.ingest(&encode_payload(std::slice::from_ref(frame)));
    }
    let from_builder = builder.clone().build_4844().expect("4844");
    let BlobTransactionSidecarVariant::Eip4844(ours) =
        sidecar(&blobs, SidecarForm::Eip4844).expect("ours")
    else {
        panic!("form")
    };
    assert_eq!(ours, from_builder);
    let from_builder = builder.build_7594().expect("7594");
    let BlobTransactionSidecarVariant::Eip7594(ours) =
        sidecar(&blobs, SidecarForm::Eip7594).expect("ours")
    else {
        panic!("form")
    };
    assert_eq!(ours, from_builder);
}
