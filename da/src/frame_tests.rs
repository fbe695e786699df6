//! Tests of frames and batcher payloads.

use super::*;
use crate::blob::decode_blob;
use crate::testutil::XorShift;

fn frame(id: u8, number: u16, data: &[u8], is_last: bool) -> Frame {
    Frame {
        channel_id: [id; 16],
        number,
        data: data.to_vec(),
        is_last,
    }
}

#[test]
fn known_bytes() {
    let f = Frame {
        channel_id: *b"0123456789abcdef",
        number: 0x0102,
        data: b"xyz".to_vec(),
        is_last: true,
    };
    let payload = encode_payload(std::slice::from_ref(&f));
    let mut expect = vec![0x00];
    expect.extend_from_slice(b"0123456789abcdef");
    expect.extend_from_slice(&[0x01, 0x02, 0x00, 0x00, 0x00, 0x03]);
    expect.extend_from_slice(b"xyz");
    expect.push(0x01);
    assert_eq!(payload, expect);
    assert_eq!(payload.len(), 1 + FRAME_OVERHEAD_BYTES + 3);
    assert_eq!(decode_payload(&payload).unwrap(), vec![f]);
}

#[test]
fn round_trips() {
    let mut rng = XorShift::new(1);
    for n in 1..20 {
        let frames: Vec<Frame> = (0..n)
            .map(|i| {
                let len = rng.below(300);
                frame(
                    rng.below(256) as u8,
                    i as u16,
                    &rng.bytes(len),
                    rng.below(2) == 1,
                )
            })
            .collect();
        let payload = encode_payload(&frames);
        assert_eq!(decode_payload(&payload).unwrap(), frames);
    }
    let empty_data = vec![frame(9, 0, b"", true)];
    assert_eq!(
        decode_payload(&encode_payload(&empty_data)).unwrap(),
        empty_data
    );
}

#[test]
fn max_frame_data_round_trips_and_one_more_is_rejected() {
    let big = frame(1, 0, &vec![7u8; FRAME_DATA_BYTES_MAX], true);
    let payload = encode_payload(std::slice::from_ref(&big));
    assert_eq!(decode_payload(&payload).unwrap(), vec![big]);
    let mut payload = encode_payload(&[frame(1, 0, b"", true)]);
    payload[19..23].copy_from_slice(&(FRAME_DATA_BYTES_MAX as u32 + 1).to_be_bytes());
    let err = decode_payload(&payload).unwrap_err();
    assert_eq!(
        err,
        FrameError::DataTooLong {
            frame_index: 0,
            offset: 19,
            len_bytes: 1_000_001
        }
    );
}

#[test]
fn header_errors() {
    assert_eq!(decode_payload(&[]), Err(FrameError::Empty));
    assert_eq!(decode_payload(&[0]), Err(FrameError::NoFrame));
    let mut payload = encode_payload(&[frame(1, 0, b"a", true)]);
    payload[0] = 1;
    assert_eq!(
        decode_payload(&payload),
        Err(FrameError::Version { version: 1 })
    );
    payload[0] = 0;
    let last = payload.len() - 1;
    payload[last] = 2;
    assert_eq!(
        decode_payload(&payload),
        Err(FrameError::IsLast {
            frame_index: 0,
            offset: last,
            byte: 2
        })
    );
}

#[test]
fn every_truncation_is_rejected_whole() {
    let frames = vec![frame(1, 0, b"hello", false), frame(1, 1, b"world!", true)];
    let payload = encode_payload(&frames);
    let first_end = 1 + FRAME_OVERHEAD_BYTES + 5;
    for len in 0..payload.len() {
        let result = decode_payload(&payload[..len]);
        if len == first_end {
            // A prefix that ends on a frame boundary is itself a valid payload.
            assert_eq!(result.unwrap(), frames[..1]);
        } else {
            assert!(result.is_err(), "prefix of {len} bytes");
        }
    }
    let err = decode_payload(&payload[..first_end + 20]).unwrap_err();
    let expect = FrameError::Truncated {
        frame_index: 1,
        offset: first_end + 18,
        field: "frame_data_length",
        needed_bytes: 4,
        left_bytes: 2,
    };
    assert_eq!(err, expect);
}

#[test]
fn trailing_garbage_drops_the_payload() {
    let mut payload = encode_payload(&[frame(1, 0, b"abc", true)]);
    payload.push(0);
    assert!(matches!(
        decode_payload(&payload),
        Err(FrameError::Truncated { frame_index: 1, .. })
    ));
}

#[test]
fn huge_length_header_allocates_nothing() {
    // A length of 1,000,000 with 3 bytes behind it: rejected before any copy.
    let mut payload = vec![0u8; 1 + 22];
    payload[19..23].copy_from_slice(&1_000_000u32.to_be_bytes());
    payload.extend_from_slice(b"abc");
    let err = decode_payload(&payload).unwrap_err();
    assert!(matches!(
        err,
        FrameError::Truncated {
            field: "frame_data",
            needed_bytes: 1_000_000,
            left_bytes: 3,
            ..
        }
    ));
}

#[test]
fn arbitrary_payloads_never_panic() {
    let mut rng = XorShift::new(17);
    let valid = encode_payload(&[frame(3, 0, b"data", false), frame(3, 1, b"more", true)]);
    for i in 0..10_000 {
        let payload = if i % 2 == 0 {
            let len = rng.below(200);
            let mut p = rng.bytes(len);
            if let Some(b) = p.first_mut() {
                *b = 0;
            }
            p
        } else {
            let mut p = valid.clone();
            let at = rng.below(p.len());
            p[at] = rng.next_u64() as u8;
            p.truncate(rng.below(p.len() + 1).max(1));
            p
        };
        if let Ok(frames) = decode_payload(&payload) {
            assert!(!frames.is_empty());
            assert_eq!(encode_payload(&frames), payload);
        }
    }
}

#[test]
fn frames_to_blobs_puts_one_payload_per_blob() {
    let frames = vec![
        frame(4, 0, &vec![1u8; FRAME_DATA_BYTES_PER_BLOB_MAX], false),
        frame(4, 1, b"tail", true),
    ];
    let blobs = frames_to_blobs(&frames).unwrap();
    assert_eq!(blobs.len(), 2);
    for (blob, f) in blobs.iter().zip(&frames) {
        let payload = decode_blob(blob).unwrap();
        assert_eq!(decode_payload(&payload).unwrap(), vec![f.clone()]);
    }
    let too_big = frame(4, 0, &vec![1u8; FRAME_DATA_BYTES_PER_BLOB_MAX + 1], true);
    assert!(frames_to_blobs(&[too_big]).is_err());
}
