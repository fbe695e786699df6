//! Header commitments: the sealed headers of a channel's blocks, carried in
//! the calldata of the channel's first blob tx.
//!
//! A span batch carries what rebuilds a block (timestamps, transactions)
//! and a 20-byte check of its first block's parent, nothing of the results.
//! So the batcher also posts the headers the sequencer sealed, and a
//! verifier compares the header it computes for each block with them
//! before it makes the block visible: a difference stops it, naming the
//! block and the first differing field, and the divergent block is never
//! served. OP's derivation ignores a blob tx's calldata, so the blobs stay
//! exactly the OP format.
//!
//! ```text
//! calldata = 0x01 ++ brotli(rlp([header_0, header_1, ...]))
//! ```

use std::io::Write;

use alloy_consensus::Header;
use alloy_primitives::Bytes;
use alloy_rlp::Decodable;

use crate::channel::decompress_bounded;

/// Version byte of a header commitment.
pub const COMMITMENT_VERSION: u8 = 1;

/// Most decompressed bytes a commitment may hold (a 6-blob channel holds at
/// most a few thousand blocks; a header is under 1 KiB).
pub const COMMITMENT_RLP_BYTES_MAX: usize = 8 << 20;

/// Brotli quality of commitments (as channels).
const QUALITY: u32 = 9;

/// Most calldata bytes of a commitment: a channel of many small blocks
/// (a backlog after L1 was down) commits to its last blocks only, so that
/// its tx stays well inside L1 tx pools' size limits.
pub const COMMITMENT_BYTES_MAX: usize = 64 << 10;

/// The calldata that commits to `headers`, or to as many of the last of
/// them as fit [`COMMITMENT_BYTES_MAX`].
pub fn encode_headers_within(headers: &[Header]) -> Bytes {
    let mut from = 0;
    loop {
        let out = encode_headers(&headers[from..]);
        if out.len() <= COMMITMENT_BYTES_MAX || headers.len() - from <= 1 {
            return out;
        }
        from += (headers.len() - from) / 2;
    }
}

/// The calldata that commits to `headers`.
pub fn encode_headers(headers: &[Header]) -> Bytes {
    let mut rlp = Vec::with_capacity(headers.len() * 600);
    alloy_rlp::encode_list::<Header, Header>(headers, &mut rlp);
    let mut out = vec![COMMITMENT_VERSION];
    {
        let mut writer = brotli::CompressorWriter::new(&mut out, 4096, QUALITY, 22);
        writer.write_all(&rlp).expect("writing to a Vec");
    }
    Bytes::from(out)
}

/// The headers `input` commits to: empty calldata commits to none.
pub fn decode_headers(input: &[u8]) -> Result<Vec<Header>, String> {
    let Some((&version, compressed)) = input.split_first() else {
        return Ok(Vec::new());
    };
    if version != COMMITMENT_VERSION {
        return Err(format!(
            "header commitment version {version:#04x}, not {COMMITMENT_VERSION}"
        ));
    }
    let rlp = decompress_bounded(compressed, COMMITMENT_RLP_BYTES_MAX)
        .map_err(|e| format!("header commitment: {e}"))?;
    let mut rest = rlp.as_slice();
    let headers =
        Vec::<Header>::decode(&mut rest).map_err(|e| format!("header commitment: {e}"))?;
    if !rest.is_empty() {
        return Err(format!(
            "header commitment: {} bytes after the header list",
            rest.len()
        ));
    }
    Ok(headers)
}

/// Bytes of the RLP list of `headers` (for sizing).
pub fn headers_rlp_bytes(headers: &[Header]) -> usize {
    alloy_rlp::list_length(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{B256, Bloom};

    fn header(number: u64) -> Header {
        Header {
            number,
            parent_hash: B256::repeat_byte(number as u8),
            state_root: B256::repeat_byte(0xaa),
            logs_bloom: Bloom::repeat_byte(if number.is_multiple_of(2) { 0 } else { 0x10 }),
            timestamp: 1_700_000_000 + number,
            base_fee_per_gas: Some(7),
            ..Default::default()
        }
    }

    #[test]
    fn headers_round_trip_and_bad_commitments_are_refused() {
        let headers: Vec<Header> = (1..=20).map(header).collect();
        let input = encode_headers(&headers);
        assert_eq!(decode_headers(&input).unwrap(), headers);
        assert!(input.len() < headers_rlp_bytes(&headers));
        assert_eq!(decode_headers(&[]).unwrap(), Vec::<Header>::new());
        let mut other = input.to_vec();
        other[0] = 2;
        assert!(decode_headers(&other).unwrap_err().contains("version"));
        let cut = &input[..input.len() / 2];
        assert!(decode_headers(cut).is_err());
        assert!(decode_headers(&[COMMITMENT_VERSION, 1, 2, 3]).is_err());
    }

    #[test]
    fn a_long_channel_commits_to_its_last_blocks_within_the_bound() {
        let headers: Vec<Header> = (1..=4000u64)
            .map(|n| Header {
                parent_hash: alloy_primitives::keccak256(n.to_le_bytes()),
                state_root: alloy_primitives::keccak256((n * 7).to_le_bytes()),
                ..header(n)
            })
            .collect();
        let input = encode_headers_within(&headers);
        assert!(input.len() <= COMMITMENT_BYTES_MAX);
        let got = decode_headers(&input).unwrap();
        assert!(!got.is_empty() && got.len() < headers.len());
        assert_eq!(got[..], headers[headers.len() - got.len()..]);
        let few = encode_headers_within(&headers[..10]);
        assert_eq!(decode_headers(&few).unwrap(), headers[..10]);
    }
}
