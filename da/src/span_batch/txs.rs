//! The span batch's `txs` section: the transactions of all its blocks, cut
//! into columns (creation bits, y-parity bits, signatures, `to`s, the
//! type-specific fields as RLP, nonces, gas limits, EIP-155 bits) and
//! rebuilt into the exact EIP-2718 envelopes they came from.

use alloy_consensus::{Signed, TxEip1559, TxEip2930, TxEip7702, TxEnvelope, TxLegacy};
use alloy_eips::{eip2930::AccessList, eip7702::SignedAuthorization};
use alloy_primitives::{Address, Bytes, Signature, TxKind, U256};
use alloy_rlp::{Decodable, Encodable, Header};

use super::error::SpanBatchError;
use super::wire::{BitsWriter, Reader, put_uvarint};

/// The largest `tx_datas` element, type byte and RLP header included, in
/// bytes. op-node reads each element through an RLP stream limited to
/// `MaxSpanBatchElementCount` bytes; fulmen keeps the same number.
pub const SPAN_TX_DATA_BYTES_MAX: usize = 10_000_000;

/// Bytes of one signature in `tx_sigs`: `r` and `s`, 32 bytes each.
pub const TX_SIG_BYTES: usize = 64;

/// Bytes of one address in `tx_tos`.
pub const TX_TO_BYTES: usize = 20;

/// A tx as its `tx_datas` element leaves it: the fields a span batch keeps
/// there are set, the rest (chain id, nonce, gas limit, `to`) are defaults
/// until the other columns fill them in.
#[derive(Debug)]
enum Body {
    Legacy(TxLegacy),
    Eip2930(TxEip2930),
    Eip1559(TxEip1559),
    Eip7702(TxEip7702),
}

/// The columns of `txs` being built, tx by tx.
#[derive(Debug)]
pub(super) struct TxColumns {
    chain_id: u64,
    creation: BitsWriter,
    y_parity: BitsWriter,
    sigs: Vec<u8>,
    tos: Vec<u8>,
    datas: Vec<u8>,
    nonces: Vec<u8>,
    gases: Vec<u8>,
    protected: BitsWriter,
}

impl TxColumns {
    /// Empty columns for `txs` transactions of chain `chain_id`.
    pub(super) fn new(chain_id: u64, txs: usize) -> Self {
        Self {
            chain_id,
            creation: BitsWriter::with_capacity(txs),
            y_parity: BitsWriter::with_capacity(txs),
            sigs: Vec::with_capacity(txs * TX_SIG_BYTES),
            tos: Vec::with_capacity(txs * TX_TO_BYTES),
            datas: Vec::with_capacity(txs * 32),
            nonces: Vec::with_capacity(txs * 3),
            gases: Vec::with_capacity(txs * 3),
            protected: BitsWriter::default(),
        }
    }

    /// Adds one tx, or says why a span batch cannot carry it.
    pub(super) fn push(&mut self, tx: &TxEnvelope) -> Result<(), SpanBatchError> {
        let index = self.creation.len();
        match tx {
            TxEnvelope::Legacy(signed) => {
                let t = signed.tx();
                if let Some(id) = t.chain_id {
                    self.check_chain(index, id)?;
                }
                self.protected.push(t.chain_id.is_some());
                self.common(signed.signature(), t.to, t.nonce, t.gas_limit);
                put_body(&mut self.datas, None, &[&t.value, &t.gas_price, &t.input]);
            }
            TxEnvelope::Eip2930(signed) => {
                let t = signed.tx();
                self.check_chain(index, t.chain_id)?;
                self.common(signed.signature(), t.to, t.nonce, t.gas_limit);
                let fields: [&dyn Encodable; 4] =
                    [&t.value, &t.gas_price, &t.input, &t.access_list];
                put_body(&mut self.datas, Some(1), &fields);
            }
            TxEnvelope::Eip1559(signed) => {
                let t = signed.tx();
                self.check_chain(index, t.chain_id)?;
                self.common(signed.signature(), t.to, t.nonce, t.gas_limit);
                let fields: [&dyn Encodable; 5] = [
                    &t.value,
                    &t.max_priority_fee_per_gas,
                    &t.max_fee_per_gas,
                    &t.input,
                    &t.access_list,
                ];
                put_body(&mut self.datas, Some(2), &fields);
            }
            TxEnvelope::Eip7702(signed) => {
                let t = signed.tx();
                self.check_chain(index, t.chain_id)?;
                self.common(signed.signature(), TxKind::Call(t.to), t.nonce, t.gas_limit);
                let fields: [&dyn Encodable; 6] = [
                    &t.value,
                    &t.max_priority_fee_per_gas,
                    &t.max_fee_per_gas,
                    &t.input,
                    &t.access_list,
                    &t.authorization_list,
                ];
                put_body(&mut self.datas, Some(4), &fields);
            }
            TxEnvelope::Eip4844(_) => {
                return Err(SpanBatchError::UnsupportedTxType { index, ty: 3 });
            }
        }
        Ok(())
    }

    fn check_chain(&self, index: usize, found: u64) -> Result<(), SpanBatchError> {
        if found != self.chain_id {
            return Err(SpanBatchError::ChainIdMismatch {
                index,
                found,
                expected: self.chain_id,
            });
        }
        Ok(())
    }

    /// The columns every tx type has.
    fn common(&mut self, sig: &Signature, to: TxKind, nonce: u64, gas: u64) {
        self.y_parity.push(sig.v());
        self.sigs.extend_from_slice(&sig.r().to_be_bytes::<32>());
        self.sigs.extend_from_slice(&sig.s().to_be_bytes::<32>());
        match to {
            TxKind::Create => self.creation.push(true),
            TxKind::Call(address) => {
                self.creation.push(false);
                self.tos.extend_from_slice(address.as_slice());
            }
        }
        put_uvarint(&mut self.nonces, nonce);
        put_uvarint(&mut self.gases, gas);
    }

    /// Bytes [`Self::write`] appends.
    pub(super) fn encoded_len(&self) -> usize {
        let bits = 2 * self.creation.len().div_ceil(8) + self.protected.len().div_ceil(8);
        bits + self.sigs.len()
            + self.tos.len()
            + self.datas.len()
            + self.nonces.len()
            + self.gases.len()
    }

    /// Appends the `txs` section in the spec's order.
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        self.creation.write(out);
        self.y_parity.write(out);
        out.extend_from_slice(&self.sigs);
        out.extend_from_slice(&self.tos);
        out.extend_from_slice(&self.datas);
        out.extend_from_slice(&self.nonces);
        out.extend_from_slice(&self.gases);
        self.protected.write(out);
        assert_eq!(out.len() - start, self.encoded_len());
    }
}

/// Appends one `tx_datas` element: the type byte (none for legacy), then the
/// fields as one RLP list.
fn put_body(out: &mut Vec<u8>, ty: Option<u8>, fields: &[&dyn Encodable]) {
    if let Some(ty) = ty {
        out.push(ty);
    }
    let payload_length = fields.iter().map(|f| f.length()).sum();
    Header {
        list: true,
        payload_length,
    }
    .encode(out);
    for field in fields {
        field.encode(out);
    }
}

/// Reads the `txs` section of `total` txs (`total` at most
/// `SPAN_BATCH_ELEMENTS_MAX`) and rebuilds each tx for chain `chain_id`.
pub(super) fn decode_txs(
    r: &mut Reader<'_>,
    total: usize,
    chain_id: u64,
) -> Result<Vec<TxEnvelope>, SpanBatchError> {
    let creation = r.bits(total, "contract_creation_bits")?;
    let y_parity = r.bits(total, "y_parity_bits")?;
    // Every count below is now bounded by the bytes `tx_sigs` took.
    let sigs = r.take(total * TX_SIG_BYTES, "tx_sigs")?;
    let calls = total - creation.count_ones();
    let tos = r.take(calls * TX_TO_BYTES, "tx_tos")?;
    let mut bodies = Vec::with_capacity(total);
    for index in 0..total {
        bodies.push(read_body(r, index)?);
    }
    let nonces = read_uvarints(r, total, "tx_nonces")?;
    let gases = read_uvarints(r, total, "tx_gases")?;
    let legacy = bodies
        .iter()
        .filter(|b| matches!(b, Body::Legacy(_)))
        .count();
    let protected = r.bits(legacy, "protected_bits")?;

    let mut txs = Vec::with_capacity(total);
    let (mut to_index, mut legacy_index) = (0, 0);
    for (index, body) in bodies.into_iter().enumerate() {
        let to = if creation.get(index) {
            TxKind::Create
        } else {
            to_index += 1;
            TxKind::Call(Address::from_slice(
                &tos[(to_index - 1) * TX_TO_BYTES..to_index * TX_TO_BYTES],
            ))
        };
        let sig = &sigs[index * TX_SIG_BYTES..(index + 1) * TX_SIG_BYTES];
        let signature = Signature::new(
            U256::from_be_slice(&sig[..32]),
            U256::from_be_slice(&sig[32..]),
            y_parity.get(index),
        );
        let eip155 = if matches!(body, Body::Legacy(_)) {
            legacy_index += 1;
            protected.get(legacy_index - 1).then_some(chain_id)
        } else {
            None
        };
        let parts = Parts {
            chain_id,
            eip155,
            nonce: nonces[index],
            gas: gases[index],
            to,
            signature,
        };
        txs.push(rebuild(index, body, parts)?);
    }
    assert_eq!(to_index, calls);
    assert_eq!(legacy_index, legacy);
    Ok(txs)
}

/// Reads `count` uvarints; `count` is bounded by bytes already read.
fn read_uvarints(
    r: &mut Reader<'_>,
    count: usize,
    field: &'static str,
) -> Result<Vec<u64>, SpanBatchError> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(r.uvarint(field)?);
    }
    Ok(out)
}

/// Reads one `tx_datas` element: a type byte (1, 2 or 4) and an RLP list,
/// or a bare RLP list for a legacy tx.
fn read_body(r: &mut Reader<'_>, index: usize) -> Result<Body, SpanBatchError> {
    let offset = r.pos();
    let rest = r.rest();
    let Some(&first) = rest.first() else {
        return Err(r.truncated("tx_datas", 1));
    };
    let ty = (first <= 0x7f).then_some(first);
    if let Some(ty) = ty
        && !matches!(ty, 1 | 2 | 4)
    {
        return Err(SpanBatchError::UnsupportedTxType { index, ty });
    }
    let tx_data_err = |source| SpanBatchError::TxData {
        index,
        offset,
        source,
    };
    let after_type = &rest[usize::from(ty.is_some())..];
    let mut buf = after_type;
    let header = Header::decode(&mut buf).map_err(tx_data_err)?;
    if !header.list {
        return Err(tx_data_err(alloy_rlp::Error::UnexpectedString));
    }
    let len = rest.len() - buf.len() + header.payload_length;
    if len > SPAN_TX_DATA_BYTES_MAX {
        return Err(SpanBatchError::TxDataTooLarge {
            index,
            offset,
            len,
            max: SPAN_TX_DATA_BYTES_MAX,
        });
    }
    let mut payload = &buf[..header.payload_length];
    let body = decode_fields(ty, &mut payload).map_err(tx_data_err)?;
    if !payload.is_empty() {
        let got = header.payload_length - payload.len();
        return Err(tx_data_err(alloy_rlp::Error::ListLengthMismatch {
            expected: header.payload_length,
            got,
        }));
    }
    r.take(len, "tx_datas")?;
    Ok(body)
}

/// Decodes the fields of a `tx_datas` list payload by tx type.
fn decode_fields(ty: Option<u8>, buf: &mut &[u8]) -> alloy_rlp::Result<Body> {
    let value = U256::decode(buf)?;
    Ok(match ty {
        None => Body::Legacy(TxLegacy {
            value,
            gas_price: u128::decode(buf)?,
            input: Bytes::decode(buf)?,
            ..TxLegacy::default()
        }),
        Some(1) => Body::Eip2930(TxEip2930 {
            value,
            gas_price: u128::decode(buf)?,
            input: Bytes::decode(buf)?,
            access_list: AccessList::decode(buf)?,
            ..TxEip2930::default()
        }),
        Some(2) => Body::Eip1559(TxEip1559 {
            value,
            max_priority_fee_per_gas: u128::decode(buf)?,
            max_fee_per_gas: u128::decode(buf)?,
            input: Bytes::decode(buf)?,
            access_list: AccessList::decode(buf)?,
            ..TxEip1559::default()
        }),
        Some(_) => Body::Eip7702(TxEip7702 {
            value,
            max_priority_fee_per_gas: u128::decode(buf)?,
            max_fee_per_gas: u128::decode(buf)?,
            input: Bytes::decode(buf)?,
            access_list: AccessList::decode(buf)?,
            authorization_list: Vec::<SignedAuthorization>::decode(buf)?,
            ..TxEip7702::default()
        }),
    })
}

/// The columns of one tx other than its `tx_datas` element.
#[derive(Debug)]
struct Parts {
    chain_id: u64,
    /// The chain id of a legacy tx whose protected bit is set.
    eip155: Option<u64>,
    nonce: u64,
    gas: u64,
    to: TxKind,
    signature: Signature,
}

/// The signed tx the columns describe.
fn rebuild(index: usize, body: Body, p: Parts) -> Result<TxEnvelope, SpanBatchError> {
    let sig = p.signature;
    Ok(match body {
        Body::Legacy(mut tx) => {
            (tx.chain_id, tx.nonce, tx.gas_limit, tx.to) = (p.eip155, p.nonce, p.gas, p.to);
            TxEnvelope::Legacy(Signed::new_unhashed(tx, sig))
        }
        Body::Eip2930(mut tx) => {
            (tx.chain_id, tx.nonce, tx.gas_limit, tx.to) = (p.chain_id, p.nonce, p.gas, p.to);
            TxEnvelope::Eip2930(Signed::new_unhashed(tx, sig))
        }
        Body::Eip1559(mut tx) => {
            (tx.chain_id, tx.nonce, tx.gas_limit, tx.to) = (p.chain_id, p.nonce, p.gas, p.to);
            TxEnvelope::Eip1559(Signed::new_unhashed(tx, sig))
        }
        Body::Eip7702(mut tx) => {
            let TxKind::Call(to) = p.to else {
                return Err(SpanBatchError::SetCodeCreate { index });
            };
            (tx.chain_id, tx.nonce, tx.gas_limit, tx.to) = (p.chain_id, p.nonce, p.gas, to);
            TxEnvelope::Eip7702(Signed::new_unhashed(tx, sig))
        }
    })
}
