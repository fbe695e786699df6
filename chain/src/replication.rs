//! The `replication` subscription's messages: the node's own log records
//! (mini-blocks and block seals, [`crate::persist`]'s payloads), in log
//! order, for replicas. One JSON object per record:
//!
//! ```text
//! {"type":"miniBlock","number":N,"hash":"0x…","crc32c":C,"record":"0x…"}
//! {"type":"seal","number":B,"hash":"0x…","crc32c":C,"record":"0x…"}
//! ```
//!
//! `number` is the mini-block's (or the block's) number, `hash` the
//! mini-block hash (or the block hash) the upstream computed, `crc32c` the
//! CRC-32C (Castagnoli) of the record's bytes, which a replica checks
//! before it decodes them: a message damaged on the way is refused, never
//! applied.

use alloy_primitives::{B256, hex};
use serde_json::Value;

use crate::events::MiniBlockEvent;
use crate::msg::Upstream;
use crate::persist::{
    MiniBlockMeta, decode_mini_block, decode_seal, encode_mini_block, encode_seal,
};

/// The message of mini-block `mini`: its record as the log holds it.
pub fn mini_block_message(mini: &MiniBlockEvent) -> String {
    let mut record = Vec::with_capacity(512 * mini.txs.len().max(1));
    let meta = MiniBlockMeta {
        number: mini.number,
        timestamp_us: mini.timestamp_us,
        parent: mini.parent_hash,
        net: &mini.net,
    };
    encode_mini_block(&mini.ctx, meta, &mini.txs, &mini.diffs, &mut record);
    message("miniBlock", mini.number, &mini.hash, &record)
}

/// The message of the seal of block `header.number` (`size`: its size in
/// bytes, as the log keeps it).
pub fn seal_message(header: &alloy_consensus::Header, hash: &B256, size: u64) -> String {
    let mut record = Vec::with_capacity(640);
    encode_seal(header, size, &mut record);
    message("seal", header.number, hash, &record)
}

fn message(kind: &str, number: u64, hash: &B256, record: &[u8]) -> String {
    let crc = crc32c::crc32c(record);
    let mut out = String::with_capacity(record.len() * 2 + 160);
    out.push_str(&format!(
        r#"{{"type":"{kind}","number":{number},"hash":"{hash}","crc32c":{crc},"record":"0x"#
    ));
    out.push_str(&hex::encode(record));
    out.push_str("\"}");
    out
}

/// Reads a message back: the record checked against its CRC and decoded,
/// its number and hash checked against the record's. Any difference is
/// an error that names it.
pub fn parse_message(result: &Value) -> Result<Upstream, String> {
    let field = |name: &str| {
        result
            .get(name)
            .ok_or_else(|| format!("the message has no {name:?}"))
    };
    let kind = field("type")?.as_str().ok_or("\"type\" is not a string")?;
    let number = field("number")?
        .as_u64()
        .ok_or("\"number\" is not a number")?;
    let hash: B256 = field("hash")?
        .as_str()
        .and_then(|h| h.parse().ok())
        .ok_or("\"hash\" is not a 32-byte hex string")?;
    let crc = field("crc32c")?
        .as_u64()
        .ok_or("\"crc32c\" is not a number")?;
    let record = field("record")?
        .as_str()
        .and_then(|r| hex::decode(r).ok())
        .ok_or("\"record\" is not a hex string")?;
    let actual = crc32c::crc32c(&record);
    if u64::from(actual) != crc {
        return Err(format!(
            "{kind} {number}: the record's CRC-32C is {actual}, the message says {crc} (damaged on the way)"
        ));
    }
    match kind {
        "miniBlock" => {
            let record =
                decode_mini_block(&record).map_err(|e| format!("mini-block {number}: {e}"))?;
            if record.number != number {
                return Err(format!(
                    "the message of mini-block {number} holds mini-block {}",
                    record.number
                ));
            }
            Ok(Upstream::MiniBlock { record, hash })
        }
        "seal" => {
            let seal = decode_seal(&record).map_err(|e| format!("seal of block {number}: {e}"))?;
            if seal.header.number != number || seal.header.hash_slow() != hash {
                return Err(format!(
                    "the message of block {number}'s seal holds block {} with hash {}",
                    seal.header.number,
                    seal.header.hash_slow()
                ));
            }
            Ok(Upstream::Seal(Box::new(seal)))
        }
        other => Err(format!("unknown message type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockContext;
    use crate::mini_block::NetChanges;

    fn mini_block() -> MiniBlockEvent {
        MiniBlockEvent {
            number: 7,
            block: 3,
            block_timestamp: 1_000,
            index: 0,
            timestamp_us: 1_000_000_123,
            gas_used: 0,
            txs: vec![],
            diffs: vec![],
            net: NetChanges::default(),
            parent_hash: B256::repeat_byte(1),
            hash: B256::repeat_byte(2),
            ctx: BlockContext {
                number: 3,
                timestamp: 1_000,
                base_fee: 7,
                gas_limit: 30_000_000,
                ..BlockContext::default()
            },
        }
    }

    #[test]
    fn a_message_reads_back_and_any_damage_is_refused() {
        let text = mini_block_message(&mini_block());
        let value: Value = serde_json::from_str(&text).unwrap();
        let Ok(Upstream::MiniBlock { record, hash }) = parse_message(&value) else {
            panic!("a mini-block")
        };
        assert_eq!(
            (record.number, record.ctx.number, hash),
            (7, 3, B256::repeat_byte(2))
        );
        assert_eq!(record.parent, B256::repeat_byte(1));
        // One hex digit changed: the CRC says so.
        let mut damaged = value.clone();
        let hex = damaged["record"].as_str().unwrap().to_string();
        let last = if hex.ends_with('0') { "1" } else { "0" };
        damaged["record"] = Value::from(format!("{}{last}", &hex[..hex.len() - 1]));
        assert!(parse_message(&damaged).unwrap_err().contains("CRC-32C"));
        // A number that is not the record's.
        let mut renumbered = value.clone();
        renumbered["number"] = Value::from(8);
        assert!(
            parse_message(&renumbered)
                .unwrap_err()
                .contains("holds mini-block 7")
        );
        let mut unknown = value;
        unknown["type"] = Value::from("block");
        assert!(parse_message(&unknown).unwrap_err().contains("unknown"));

        let header = alloy_consensus::Header {
            number: 3,
            ..Default::default()
        };
        let hash = header.hash_slow();
        let seal: Value = serde_json::from_str(&seal_message(&header, &hash, 600)).unwrap();
        let Ok(Upstream::Seal(read)) = parse_message(&seal) else {
            panic!("a seal")
        };
        assert_eq!((read.header.hash_slow(), read.size), (hash, 600));
        let mut wrong = seal;
        wrong["hash"] = Value::from(B256::ZERO.to_string());
        assert!(parse_message(&wrong).unwrap_err().contains("holds block 3"));
    }
}
