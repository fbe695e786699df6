//! Tests of OP blob encoding v0, with op-service/eth/blob_test.go's vectors.

use super::*;
use crate::testutil::XorShift;

/// A blob whose first bytes are `prefix` and the rest zero.
fn blob_with_prefix(prefix: &[u8]) -> Blob {
    let mut blob = Blob::ZERO;
    blob[..prefix.len()].copy_from_slice(prefix);
    blob
}

fn round_trip(data: &[u8]) {
    let blob = encode_blob(data).unwrap();
    assert_eq!(decode_blob(&blob).unwrap(), data, "len {}", data.len());
}

// blob_test.go TestBlobEncodeDecode.
#[test]
fn encode_decode_cases() {
    let cases: [&[u8]; 8] = [
        b"this is a test of blob encoding/decoding",
        b"short",
        b"\x00",
        b"\x00\x01\x00",
        &[0u8; 27],
        &[0u8; 26],
        &[0u8; 25],
        b"",
    ];
    for c in cases {
        round_trip(c);
    }
}

// blob_test.go TestSmallBlobEncoding.
#[test]
fn small_blobs() {
    let mut data = vec![0u8; 128];
    data[127] = 0xFF;
    round_trip(&data);
    let mut data = vec![0u8; 10];
    data[9] = 0xFF;
    round_trip(&data);
    let mut data = vec![0u8; 27 + 31 * 3];
    data[27 + 31 * 3 - 1] = 0xFF;
    round_trip(&data);
}

// blob_test.go TestBigBlobEncoding (with xorshift bytes, not Go's math/rand).
#[test]
fn big_blob_and_every_length_below() {
    let big = XorShift::new(99).bytes(BLOB_DATA_BYTES_MAX);
    round_trip(&big);
    for i in 1..256 {
        round_trip(&big[i..]);
    }
}

#[test]
fn every_length_across_the_first_rounds() {
    let data = XorShift::new(7).bytes(3 * ROUND_STREAM_BYTES + 5);
    for len in 0..=data.len() {
        round_trip(&data[..len]);
    }
}

// blob_test.go TestInvalidBlobDecoding.
#[test]
fn invalid_blobs() {
    let mut b = encode_blob(b"this is a test of invalid blob decoding").unwrap();
    b[32] = 0b1000_0000;
    assert_eq!(
        decode_blob(&b),
        Err(BlobError::FieldElement {
            index: 1,
            offset: 32,
            byte: 0x80
        })
    );
    b[32] = 0b0100_0000;
    assert!(matches!(
        decode_blob(&b),
        Err(BlobError::FieldElement { index: 1, .. })
    ));
    b[32] = 0;
    b[1] = 1;
    assert_eq!(decode_blob(&b), Err(BlobError::Version { version: 1 }));
    b[1] = 0;
    b[2] = 0xFF;
    assert!(matches!(decode_blob(&b), Err(BlobError::Length { .. })));
}

// blob_test.go TestTooLongDataEncoding and the too-big encode vector.
#[test]
fn too_long_data() {
    let err = encode_blob(&vec![0u8; BLOB_BYTES]).unwrap_err();
    assert_eq!(
        err,
        BlobError::DataTooLarge {
            len_bytes: BLOB_BYTES
        }
    );
    let err = encode_blob(&vec![0u8; BLOB_DATA_BYTES_MAX + 1]).unwrap_err();
    assert_eq!(
        err,
        BlobError::DataTooLarge {
            len_bytes: BLOB_DATA_BYTES_MAX + 1
        }
    );
}

// blob_test.go TestDecodeTestVectors.
#[test]
fn decode_vectors() {
    assert_eq!(decode_blob(&blob_with_prefix(b"")).unwrap(), b"");
    assert_eq!(
        decode_blob(&blob_with_prefix(b"\x00\x00\x00\x00\x01")).unwrap(),
        b"\x00"
    );
    let max = decode_blob(&blob_with_prefix(b"\x00\x00\x01\xFB\xFC")).unwrap();
    assert_eq!(max, vec![0u8; 130_044]);
    let err = decode_blob(&blob_with_prefix(b"\x00\x00\x01\xFB\xFD")).unwrap_err();
    assert_eq!(err, BlobError::Length { len_bytes: 130_045 });
    let ten = decode_blob(&blob_with_prefix(
        b"\x00\x00\x00\x00\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff",
    ));
    assert_eq!(ten.unwrap(), b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff");
    let mut input = b"\x00\x00\x00\x00\x1b".to_vec();
    input.extend([0xFF; 27]);
    assert_eq!(
        decode_blob(&blob_with_prefix(&input)).unwrap(),
        vec![0xFF; 27]
    );
    let mut input = b"\x3f\x00\x00\x00\x20".to_vec();
    input.extend([0xFF; 27]);
    input.extend(b"\x30\xff\xff\xff\xff");
    assert_eq!(
        decode_blob(&blob_with_prefix(&input)).unwrap(),
        vec![0xFF; 32]
    );
}

// blob_test.go TestEncodeTestVectors.
#[test]
fn encode_vectors() {
    assert_eq!(encode_blob(b"").unwrap(), Blob::ZERO);
    let max = encode_blob(&vec![0u8; BLOB_DATA_BYTES_MAX]).unwrap();
    assert_eq!(max, blob_with_prefix(b"\x00\x00\x01\xfb\xfc"));
    let mut out = b"\x00\x00\x00\x00\x1b".to_vec();
    out.extend([0xFF; 27]);
    assert_eq!(encode_blob(&[0xFF; 27]).unwrap(), blob_with_prefix(&out));
    let mut out = b"\x3f\x00\x00\x00\x1c".to_vec();
    out.extend([0xFF; 27]);
    out.push(0x30);
    assert_eq!(encode_blob(&[0xFF; 28]).unwrap(), blob_with_prefix(&out));
}

// blob_test.go TestExtraneousData.
#[test]
fn extraneous_data() {
    let err = decode_blob(&blob_with_prefix(b"\x30\x00\x00\x00\x00")).unwrap_err();
    assert!(
        matches!(err, BlobError::ExtraneousRoundData { len_bytes: 0, .. }),
        "{err}"
    );
    let err = decode_blob(&blob_with_prefix(b"\x01\x00\x00\x00\x00")).unwrap_err();
    assert!(
        matches!(err, BlobError::ExtraneousRoundData { len_bytes: 0, .. }),
        "{err}"
    );
    let mut b = Blob::ZERO;
    let mut i = 5;
    while i < 128 {
        b[i - 1] = 0;
        b[i] = 1;
        let err = decode_blob(&b).unwrap_err();
        assert!(
            matches!(err, BlobError::ExtraneousRoundData { .. }),
            "at {i}: {err}"
        );
        i += 1;
    }
    b[127] = 0;
    while i < BLOB_BYTES {
        b.0[128..i].fill(0);
        b[i] = 1;
        let err = decode_blob(&b).unwrap_err();
        assert_eq!(
            err,
            BlobError::ExtraneousData { offset: i, byte: 1 },
            "at {i}"
        );
        i += 7;
    }
}

#[test]
fn top_bits_of_field_element_zero_are_ignored_as_in_op_service() {
    let mut b = encode_blob(b"abc").unwrap();
    b[0] |= 0b0100_0000;
    assert_eq!(decode_blob(&b).unwrap(), b"abc");
}

#[test]
fn every_field_element_stays_below_the_modulus() {
    let data = vec![0xFF; BLOB_DATA_BYTES_MAX];
    let b = encode_blob(&data).unwrap();
    for fe in b.chunks(FIELD_ELEMENT_BYTES) {
        assert_eq!(fe[0] & 0b1100_0000, 0);
    }
}

#[test]
fn encode_blobs_splits_into_whole_blobs() {
    assert!(encode_blobs(b"").is_empty());
    let data = XorShift::new(3).bytes(2 * BLOB_DATA_BYTES_MAX + 10);
    let blobs = encode_blobs(&data);
    assert_eq!(blobs.len(), 3);
    assert_eq!(blobs_for_bytes(data.len()), 3);
    let back: Vec<u8> = blobs.iter().flat_map(|b| decode_blob(b).unwrap()).collect();
    assert_eq!(back, data);
}

/// Random single-bit flips: the blob either fails to decode or decodes to
/// other data (blob_test.go FuzzDetectNonBijectivity), and never panics.
#[test]
fn bit_flips_never_decode_to_the_same_data() {
    let mut rng = XorShift::new(11);
    let data = rng.bytes(1000);
    let blob = encode_blob(&data).unwrap();
    for _ in 0..10_000 {
        let mut b = blob;
        let at = rng.below(BLOB_BYTES);
        b[at] ^= 1 << rng.below(8);
        if let Ok(out) = decode_blob(&b) {
            // Only the ignored top bits of byte 0 decode to the same data.
            assert!(out != data || at == 0, "flip at {at}");
        }
    }
}

/// Arbitrary blobs: errors, never panics. Most are rejected at the version or
/// length, so the header is forced valid in half of them.
#[test]
fn arbitrary_blobs_never_panic() {
    let mut rng = XorShift::new(5);
    let mut ok = 0;
    for i in 0..10_000 {
        let mut b = Blob::ZERO;
        let len = rng.below(600);
        b[..len].copy_from_slice(&rng.bytes(len));
        if i % 2 == 0 {
            b[1] = 0;
            b[2] = 0;
            b[0] &= 0x3F;
        }
        ok += decode_blob(&b).is_ok() as usize;
    }
    assert!(ok < 10_000);
}

#[test]
fn truncated_data_in_the_blob_is_rejected_or_differs() {
    // A blob whose data region was cut (zeroed) after the header: the length
    // still claims the full data, so decoding gives zeros, not the data.
    let data = XorShift::new(9).bytes(5000);
    let mut b = encode_blob(&data).unwrap();
    b.0[2048..].fill(0);
    let out = decode_blob(&b).unwrap();
    assert_eq!(out.len(), data.len());
    assert_ne!(out, data);
}

#[test]
fn sidecar_coder_matches_encode_blobs_and_commits_with_kzg() {
    use alloy_eips::eip4844::builder::{SidecarBuilder, SidecarCoder};
    let data = XorShift::new(31).bytes(BLOB_DATA_BYTES_MAX + 1000);
    let builder = SidecarBuilder::<OpBlobCoder>::from_slice(&data);
    let blobs = builder.take();
    assert_eq!(blobs, encode_blobs(&data));
    let decoded = OpBlobCoder.decode_all(&blobs).unwrap();
    assert_eq!(decoded.concat(), data);
    // Two payloads, one blob each; all-0xFF data has the largest byte 0s.
    let mut builder = SidecarBuilder::<OpBlobCoder>::new();
    builder.ingest(&vec![0xFF; BLOB_DATA_BYTES_MAX]);
    builder.ingest(b"second payload");
    let sidecar = builder
        .build_4844()
        .expect("every field element is below the modulus");
    assert_eq!(sidecar.blobs.len(), 2);
    assert_eq!(decode_blob(&sidecar.blobs[1]).unwrap(), b"second payload");
    let mut bad = sidecar.blobs[1];
    bad[32] = 0x80;
    assert_eq!(OpBlobCoder.decode_all(&[sidecar.blobs[0], bad]), None);
}

/// Speed figures, not a check:
/// `cargo nextest run --release -p fulmen-da --run-ignored only measure_ --no-capture`.
#[test]
#[ignore = "measurement, not a check: run by hand (BENCHMARKS.md)"]
fn measure_blob_speed() {
    let data = XorShift::new(1).bytes(BLOB_DATA_BYTES_MAX);
    let rounds = 200;
    let start = std::time::Instant::now();
    let mut blob = Blob::ZERO;
    for _ in 0..rounds {
        encode_blob_into(std::hint::black_box(&data), &mut blob).unwrap();
    }
    let encode_us = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        assert_eq!(
            decode_blob(std::hint::black_box(&blob)).unwrap().len(),
            data.len()
        );
    }
    let decode_us = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    println!("full blob: encode {encode_us:.0} µs, decode {decode_us:.0} µs");
}
