//! Tests of channels: building, framing, reading back, limits and garbage.

use super::*;
use crate::frame::{FRAME_BYTES_PER_BLOB_MAX, decode_payload, encode_payload, frames_to_blobs};
use crate::testutil::{Traffic, XorShift};

const ID: ChannelId = [0xAB; 16];

fn closed_channel(batches: &[Vec<u8>]) -> ChannelOut {
    let mut ch = ChannelOut::new(ID, usize::MAX / 2);
    for b in batches {
        ch.add_batch(b).unwrap();
    }
    ch.close().unwrap();
    ch
}

#[test]
fn round_trip_through_frames() {
    let mut traffic = Traffic::new(1);
    let batches: Vec<Vec<u8>> = (0..40).map(|_| traffic.batch(20)).collect();
    let ch = closed_channel(&batches);
    for max_frame_bytes in [24, 100, 1000, FRAME_BYTES_PER_BLOB_MAX, 2_000_000] {
        if max_frame_bytes == 24 && ch.compressed_bytes() > CHANNEL_FRAMES_MAX {
            continue;
        }
        let frames = ch.frames(max_frame_bytes).unwrap();
        assert_eq!(frames.iter().filter(|f| f.is_last).count(), 1);
        assert!(frames.last().unwrap().is_last);
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(usize::from(f.number), i);
            assert!(f.encoded_bytes() <= max_frame_bytes);
        }
        assert_eq!(read_channel(&frames).unwrap(), batches);
        // Frames in reverse order reassemble the same.
        let reversed: Vec<Frame> = frames.iter().rev().cloned().collect();
        assert_eq!(read_channel(&reversed).unwrap(), batches);
    }
}

#[test]
fn empty_and_tiny_batches() {
    let batches = vec![
        vec![],
        vec![0x00],
        vec![0x7f],
        vec![0x80],
        vec![1, 2, 3],
        vec![0x55; 56],
        vec![0x66; 300],
    ];
    let ch = closed_channel(&batches);
    assert_eq!(read_channel(&ch.frames(1000).unwrap()).unwrap(), batches);
    let none = closed_channel(&[]);
    let frames = none.frames(1000).unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].data[0], CHANNEL_VERSION_BROTLI);
    assert_eq!(read_channel(&frames).unwrap(), Vec::<Vec<u8>>::new());
}

#[test]
fn channel_bytes_are_version_one_then_brotli() {
    let ch = closed_channel(&[b"\x00hello".to_vec()]);
    let bytes = ch.channel_bytes().unwrap();
    assert_eq!(bytes[0], 0x01);
    let rlp = decompress_bounded(&bytes[1..], 100).unwrap();
    assert_eq!(rlp, b"\x86\x00hello");
}

#[test]
fn through_blobs_end_to_end() {
    let mut traffic = Traffic::new(2);
    let mut ch = ChannelOut::for_blobs(ID, 2);
    let mut batches = Vec::new();
    loop {
        let b = traffic.batch(10);
        match ch.add_batch(&b) {
            Ok(()) => batches.push(b),
            Err(ChannelError::Full { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    ch.close().unwrap();
    let frames = ch.frames(FRAME_BYTES_PER_BLOB_MAX).unwrap();
    assert!(
        frames.len() <= 3,
        "{} frames for a 2-blob target",
        frames.len()
    );
    let blobs = frames_to_blobs(&frames).unwrap();
    let mut back = Vec::new();
    for blob in &blobs {
        back.extend(decode_payload(&crate::blob::decode_blob(blob).unwrap()).unwrap());
    }
    assert_eq!(read_channel(&back).unwrap(), batches);
}

#[test]
fn target_is_met_closely() {
    let mut traffic = Traffic::new(3);
    for blobs in [1, 3, 6] {
        let mut ch = ChannelOut::for_blobs(ID, blobs);
        while ch.add_batch(&traffic.batch(5)).is_ok() {}
        ch.close().unwrap();
        let target = ch.target_bytes();
        let got = ch.compressed_bytes();
        assert!(got <= target + 2000, "{blobs} blobs: {got} > {target}");
        assert!(
            got * 100 >= target * 97,
            "{blobs} blobs: {got} well under {target}"
        );
    }
}

#[test]
fn state_errors() {
    let mut ch = ChannelOut::new(ID, 1000);
    assert!(matches!(
        ch.frames(1000),
        Err(ChannelError::State { state: "open", .. })
    ));
    ch.add_batch(b"abc").unwrap();
    ch.close().unwrap();
    assert!(matches!(
        ch.add_batch(b"abc"),
        Err(ChannelError::State {
            state: "closed",
            ..
        })
    ));
    assert!(matches!(ch.close(), Err(ChannelError::State { .. })));
    assert_eq!(
        ch.frames(23),
        Err(ChannelError::FrameSizeTooSmall {
            max_frame_bytes: 23
        })
    );
}

#[test]
fn first_batch_over_the_target_still_goes_in() {
    let mut ch = ChannelOut::new(ID, 10);
    ch.add_batch(&XorShift::new(4).bytes(500)).unwrap();
    assert!(matches!(
        ch.add_batch(b"more"),
        Err(ChannelError::Full { .. })
    ));
}

#[test]
fn rlp_bytes_limit() {
    // Header (5 bytes) plus the max is over the max: refused before any write.
    let mut ch = ChannelOut::new(ID, usize::MAX);
    ch.add_batch(b"small").unwrap();
    let big = vec![0u8; CHANNEL_RLP_BYTES_MAX - 5];
    let err = ch.add_batch(&big).unwrap_err();
    assert_eq!(
        err,
        ChannelError::TooManyRlpBytes {
            rlp_bytes: 6,
            batch_bytes: CHANNEL_RLP_BYTES_MAX
        }
    );
    assert_eq!(ch.uncompressed_bytes(), 6);
}

#[test]
fn decompression_is_bounded() {
    // 100 MB + 1 of zeros compress to a few KB: the reader must stop at the bound.
    let mut enc = brotli::CompressorWriter::new(vec![CHANNEL_VERSION_BROTLI], 4096, 1, 22);
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..95 {
        enc.write_all(&zeros).unwrap();
    }
    enc.write_all(&vec![0u8; CHANNEL_RLP_BYTES_MAX + 1 - 95 * (1 << 20)])
        .unwrap();
    let bytes = enc.into_inner();
    assert!(bytes.len() < 100_000);
    assert_eq!(decode_channel_bytes(&bytes), Err(ChannelError::TooLarge));
    assert_eq!(
        decompress_bounded(&bytes[1..], 1000),
        Err(ChannelError::TooLarge)
    );
}

#[test]
fn version_byte_errors() {
    assert_eq!(decode_channel_bytes(&[]), Err(ChannelError::Empty));
    assert_eq!(
        decode_channel_bytes(&[0x78, 0xda]),
        Err(ChannelError::Zlib { byte: 0x78 })
    );
    assert_eq!(
        decode_channel_bytes(&[0x02]),
        Err(ChannelError::Version { byte: 0x02 })
    );
}

#[test]
fn trailing_bytes_after_the_brotli_stream_are_rejected() {
    let ch = closed_channel(&[b"\x00abc".to_vec()]);
    let mut bytes = ch.channel_bytes().unwrap().to_vec();
    bytes.push(0);
    assert!(matches!(
        decode_channel_bytes(&bytes),
        Err(ChannelError::Brotli { .. })
    ));
    let mut long = ch.channel_bytes().unwrap().to_vec();
    long.extend(vec![0u8; 10_000]);
    assert!(matches!(
        decode_channel_bytes(&long),
        Err(ChannelError::Brotli { .. })
    ));
}

#[test]
fn every_truncation_of_the_channel_is_rejected() {
    let mut traffic = Traffic::new(5);
    let batches: Vec<Vec<u8>> = (0..5).map(|_| traffic.batch(3)).collect();
    let ch = closed_channel(&batches);
    let bytes = ch.channel_bytes().unwrap();
    for len in 0..bytes.len() {
        assert!(decode_channel_bytes(&bytes[..len]).is_err(), "prefix {len}");
    }
}

#[test]
fn rlp_errors_name_the_batch() {
    // A list where a byte string is expected, and a string cut short.
    assert!(matches!(
        split_rlp_strings(&[0x83, 1, 2, 3, 0xc0]),
        Err(ChannelError::Rlp {
            batch_index: 1,
            offset: 4,
            ..
        })
    ));
    assert!(matches!(
        split_rlp_strings(&[0x85, 1, 2]),
        Err(ChannelError::Rlp {
            batch_index: 0,
            offset: 0,
            ..
        })
    ));
    // Non-canonical: a single byte below 0x80 wrapped as a string.
    assert!(split_rlp_strings(&[0x81, 0x05]).is_err());
    // A huge declared length with nothing behind it allocates nothing.
    assert!(split_rlp_strings(&[0xbb, 0x7f, 0xff, 0xff, 0xff]).is_err());
}

#[test]
fn frame_set_errors() {
    let mut traffic = Traffic::new(6);
    let batches: Vec<Vec<u8>> = (0..30).map(|_| traffic.batch(10)).collect();
    let frames = closed_channel(&batches).frames(500).unwrap();
    assert!(frames.len() > 3);
    assert_eq!(read_channel(&[]), Err(ChannelError::NoFrames));
    // Missing the last frame.
    let err = read_channel(&frames[..frames.len() - 1]).unwrap_err();
    assert!(matches!(err, ChannelError::Incomplete { .. }), "{err}");
    // Missing a middle frame.
    let mut gap = frames.clone();
    gap.remove(1);
    assert!(matches!(
        read_channel(&gap),
        Err(ChannelError::Incomplete { .. })
    ));
    // Duplicate.
    let mut dup = frames.clone();
    dup.push(frames[0].clone());
    assert_eq!(
        read_channel(&dup),
        Err(ChannelError::DuplicateFrame { number: 0 })
    );
    // Another channel's frame.
    let mut other = frames.clone();
    other[2].channel_id = [1; 16];
    assert!(matches!(
        read_channel(&other),
        Err(ChannelError::ChannelId { number: 2, .. })
    ));
    // A frame after the last one, in either arrival order.
    let mut after = frames.clone();
    let n = after.len() as u16;
    after.push(Frame {
        channel_id: ID,
        number: n,
        data: vec![1],
        is_last: false,
    });
    assert!(matches!(
        read_channel(&after),
        Err(ChannelError::AfterLast { .. })
    ));
    after.rotate_right(1);
    assert!(matches!(
        read_channel(&after),
        Err(ChannelError::AfterLast { .. })
    ));
    // Two last frames.
    let mut two = frames.clone();
    two[0].is_last = true;
    assert!(matches!(
        read_channel(&two),
        Err(ChannelError::AfterLast { .. })
    ));
}

#[test]
fn channel_in_is_ready_only_when_complete() {
    let mut traffic = Traffic::new(7);
    let batches: Vec<Vec<u8>> = (0..10).map(|_| traffic.batch(10)).collect();
    let frames = closed_channel(&batches).frames(300).unwrap();
    let mut ch = ChannelIn::new(ID);
    for f in frames.iter().rev() {
        assert!(!ch.is_ready());
        ch.add_frame(f.clone()).unwrap();
    }
    assert!(ch.is_ready());
    assert_eq!(ch.read().unwrap(), batches);
}

/// Arbitrary channel bytes and frame sets: errors, never panics.
#[test]
fn arbitrary_input_never_panics() {
    let mut rng = XorShift::new(23);
    let mut traffic = Traffic::new(8);
    let batches: Vec<Vec<u8>> = (0..3).map(|_| traffic.batch(4)).collect();
    let valid = closed_channel(&batches).channel_bytes().unwrap().to_vec();
    for i in 0..10_000 {
        let bytes = match i % 3 {
            0 => {
                let len = rng.below(300);
                let mut b = rng.bytes(len);
                if let Some(v) = b.first_mut() {
                    *v = CHANNEL_VERSION_BROTLI;
                }
                b
            }
            1 => {
                let mut b = valid.clone();
                let at = 1 + rng.below(b.len() - 1);
                b[at] ^= 1 << rng.below(8);
                b
            }
            _ => {
                let len = rng.below(200);
                let mut rlp = rng.bytes(len);
                if let Some(v) = rlp.first_mut() {
                    *v = 0x80 + (*v % 0x40);
                }
                let _ = split_rlp_strings(&rlp);
                continue;
            }
        };
        let _ = decode_channel_bytes(&bytes);
        let _ = read_channel_prefix(&bytes);
    }
    for _ in 0..2000 {
        let n = 1 + rng.below(6);
        let frames: Vec<Frame> = (0..n)
            .map(|_| {
                let number = rng.below(8) as u16;
                let len = rng.below(20);
                Frame {
                    channel_id: ID,
                    number,
                    data: rng.bytes(len),
                    is_last: rng.below(3) == 0,
                }
            })
            .collect();
        let _ = read_channel(&frames);
        let _ = decode_payload(&encode_payload(&frames));
    }
}

fn brotli_bytes(data: &[u8], quality: u32, window_bits: u32) -> usize {
    let mut enc = brotli::CompressorWriter::new(Vec::new(), 4096, quality, window_bits);
    enc.write_all(data).unwrap();
    enc.into_inner().len()
}

/// Figures for da/FORMAT.md and the report, not a check:
/// `cargo nextest run --release -p fulmen-da --run-ignored only measure_ --no-capture`.
#[test]
#[ignore = "measurement, not a check: run by hand (BENCHMARKS.md)"]
fn measure_compression() {
    let mut traffic = Traffic::new(42);
    let tx_bytes = traffic.transfer().len();
    let mut rlp = Vec::new();
    let mut txs = 0;
    while rlp.len() < crate::blob::BLOB_DATA_BYTES_MAX {
        let batch = traffic.batch(50);
        txs += 50;
        alloy_rlp::Header {
            list: false,
            payload_length: batch.len(),
        }
        .encode(&mut rlp);
        rlp.extend_from_slice(&batch);
    }
    println!(
        "one blob's worth: {} RLP bytes, {txs} transfers of ~{tx_bytes} bytes each",
        rlp.len()
    );
    for (quality, window_bits) in [(5, 22), (9, 22), (10, 22), (10, 24), (11, 22), (11, 24)] {
        let start = std::time::Instant::now();
        let out = brotli_bytes(&rlp, quality, window_bits);
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let ratio = out as f64 / rlp.len() as f64;
        println!("  q{quality} w{window_bits}: {out} bytes, ratio {ratio:.3}, {ms:.1} ms");
    }
    for blobs in [1, 6] {
        let mut ch = ChannelOut::for_blobs(ID, blobs);
        let mut n = 0;
        let mut all = Vec::new();
        let start = std::time::Instant::now();
        loop {
            let batch = traffic.batch(50);
            if ch.add_batch(&batch).is_err() {
                break;
            }
            alloy_rlp::Header {
                list: false,
                payload_length: batch.len(),
            }
            .encode(&mut all);
            all.extend_from_slice(&batch);
            n += 50;
        }
        ch.close().unwrap();
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let (u, c) = (ch.uncompressed_bytes(), ch.compressed_bytes());
        let frames = ch.frames(FRAME_BYTES_PER_BLOB_MAX).unwrap().len();
        let one_shot = 1 + brotli_bytes(&all, BROTLI_QUALITY, BROTLI_WINDOW_BITS);
        println!(
            "ChannelOut {blobs} blob(s): {n} transfers, {u} RLP bytes -> {c} bytes (target {}), ratio {:.3}, \
             {:.1} blob bytes/transfer, {frames} frame(s), {ms:.0} ms",
            ch.target_bytes(),
            c as f64 / u as f64,
            c as f64 / n as f64,
        );
        println!(
            "  same batches in one brotli call: {one_shot} bytes (flushes cost {} bytes)",
            c - one_shot
        );
    }
}

#[test]
fn prefix_reading_keeps_batches_before_the_break() {
    let mut traffic = Traffic::new(9);
    let batches: Vec<Vec<u8>> = (0..20).map(|_| traffic.batch(10)).collect();
    let bytes = closed_channel(&batches).channel_bytes().unwrap().to_vec();
    let whole = read_channel_prefix(&bytes);
    assert_eq!(
        whole,
        ChannelPrefix {
            batches: batches.clone(),
            error: None
        }
    );
    // Cut the stream short: some prefix of the batches, then an error.
    let cut = read_channel_prefix(&bytes[..bytes.len() * 3 / 4]);
    assert!(cut.error.is_some());
    assert!(cut.batches.len() < batches.len());
    assert_eq!(cut.batches, batches[..cut.batches.len()]);
    // Output past the RLP bound is cut off, not rejected.
    let mut enc = brotli::CompressorWriter::new(vec![CHANNEL_VERSION_BROTLI], 4096, 1, 22);
    let mut rlp = Vec::new();
    alloy_rlp::Header {
        list: false,
        payload_length: 3,
    }
    .encode(&mut rlp);
    rlp.extend_from_slice(b"abc");
    enc.write_all(&rlp).unwrap();
    // Batches of 65,535 bytes: the one crossing the bound is cut and ends the read.
    let mut filler = vec![0xb9, 0xff, 0xff];
    filler.resize(3 + 0xffff, 7);
    let per_batch = filler.len();
    for _ in 0..(CHANNEL_RLP_BYTES_MAX / per_batch + 2) {
        enc.write_all(&filler).unwrap();
    }
    let bomb = enc.into_inner();
    let read = read_channel_prefix(&bomb);
    assert_eq!(
        read.batches.len(),
        1 + (CHANNEL_RLP_BYTES_MAX - 4) / per_batch
    );
    assert_eq!(read.batches[0], b"abc");
    assert!(
        matches!(read.error, Some(ChannelError::Rlp { .. })),
        "{:?}",
        read.error
    );
    // 100 MB of empty strings: stopped at the batch bound.
    let mut enc = brotli::CompressorWriter::new(vec![CHANNEL_VERSION_BROTLI], 4096, 1, 22);
    let empties = vec![0x80u8; 1 << 20];
    for _ in 0..96 {
        enc.write_all(&empties).unwrap();
    }
    let bytes = enc.into_inner();
    let read = read_channel_prefix(&bytes);
    assert_eq!(read.batches.len(), CHANNEL_BATCHES_MAX);
    assert_eq!(read.error, Some(ChannelError::TooManyBatches));
    assert_eq!(
        split_rlp_strings(&vec![0x80; CHANNEL_BATCHES_MAX + 1]),
        Err(ChannelError::TooManyBatches)
    );
    assert_eq!(
        read_channel_prefix(&[0x78]).error,
        Some(ChannelError::Zlib { byte: 0x78 })
    );
}

#[test]
fn oversized_channel_is_refused_as_op_node_drops_it() {
    let mut ch = ChannelIn::new(ID);
    let big = vec![0u8; crate::frame::FRAME_DATA_BYTES_MAX];
    let per_frame = big.len() + FRAME_SIZE_OVERHEAD_BYTES;
    let fit = CHANNEL_FRAME_BYTES_MAX / per_frame;
    for number in 0..fit as u16 {
        ch.add_frame(Frame {
            channel_id: ID,
            number,
            data: big.clone(),
            is_last: false,
        })
        .unwrap();
    }
    let number = fit as u16;
    let err = ch
        .add_frame(Frame {
            channel_id: ID,
            number,
            data: big,
            is_last: true,
        })
        .unwrap_err();
    assert_eq!(
        err,
        ChannelError::Oversized {
            number,
            size_bytes: (fit + 1) * per_frame
        }
    );
    assert!(!ch.is_ready());
}
