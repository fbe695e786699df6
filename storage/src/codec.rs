//! The fixed-width little-endian codec shared by the log's payloads and the
//! checkpoint images.
//!
//! Integers are little-endian and fixed width, U256 values big-endian in 32
//! bytes; byte strings and lists carry a u32 length or count first. Decoding
//! never trusts a count further than the bytes that remain, so arbitrary
//! input is an error, never a panic or a huge allocation.

use alloy_primitives::{Address, B256, Bytes, U256};
use revm::bytecode::Bytecode;

use crate::AccountState;

/// Why bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The bytes end early.
    #[error("payload truncated at byte {0}")]
    Truncated(usize),
    /// Unknown payload version.
    #[error("unsupported payload version {0}")]
    Version(u8),
    /// Bytes left over after the payload.
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
    /// A field holds a value it cannot have.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Appends encoded fields to a buffer.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// A length or count, as u32.
    pub fn u32(&mut self, v: usize) {
        self.0.extend_from_slice(&(v as u32).to_le_bytes());
    }
    /// A u64.
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// Bytes as they are.
    pub fn raw(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    /// A u32 length, then the bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len());
        self.raw(v);
    }
    /// A U256, big-endian.
    pub fn u256(&mut self, v: &U256) {
        self.raw(&v.to_be_bytes::<32>());
    }
    /// A u64 as LEB128: 7 bits a byte, low first (1 to 10 bytes).
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    /// A varint length, then the bytes.
    pub fn var_bytes(&mut self, v: &[u8]) {
        self.varint(v.len() as u64);
        self.raw(v);
    }
    /// A U256 as its big-endian bytes without leading zeros, after a u8
    /// count of them (1 to 33 bytes).
    pub fn u256_min(&mut self, v: &U256) {
        let bytes = v.to_be_bytes::<32>();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        self.u8((32 - skip) as u8);
        self.raw(&bytes[skip..]);
    }
    /// An account header: nonce, balance, code hash (72 bytes).
    pub fn account(&mut self, a: &AccountState) {
        self.u64(a.nonce);
        self.u256(&a.balance);
        self.raw(a.code_hash.as_slice());
    }
    /// A storage slot: address, slot, value (84 bytes).
    pub fn slot(&mut self, address: &Address, slot: &U256, value: &U256) {
        self.raw(address.as_slice());
        self.u256(slot);
        self.u256(value);
    }
    /// A code blob: hash, then the bytes with their length.
    pub fn code(&mut self, hash: &B256, code: &Bytecode) {
        self.raw(hash.as_slice());
        self.bytes(code.original_byte_slice());
    }
}

/// Reads encoded fields from a byte slice.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }
    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.at
    }
    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], PayloadError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(PayloadError::Truncated(self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, PayloadError> {
        Ok(self.take(1)?[0])
    }
    /// A u32 length or count.
    pub fn u32(&mut self) -> Result<usize, PayloadError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    /// A u64.
    pub fn u64(&mut self) -> Result<u64, PayloadError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    /// An address.
    pub fn address(&mut self) -> Result<Address, PayloadError> {
        Ok(Address::from_slice(self.take(20)?))
    }
    /// A 32-byte hash.
    pub fn b256(&mut self) -> Result<B256, PayloadError> {
        Ok(B256::from_slice(self.take(32)?))
    }
    /// A U256, big-endian.
    pub fn u256(&mut self) -> Result<U256, PayloadError> {
        Ok(U256::from_be_slice(self.take(32)?))
    }
    /// A LEB128 u64 written by [`Writer::varint`]; over 10 bytes, or a
    /// tenth byte over 1, is an error.
    pub fn varint(&mut self) -> Result<u64, PayloadError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(PayloadError::Invalid("varint over 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(PayloadError::Invalid("varint over 10 bytes"))
    }
    /// A varint count of items at least `min_item` bytes each, checked
    /// against what remains.
    pub fn var_count(&mut self, min_item: usize) -> Result<usize, PayloadError> {
        let at = self.at;
        let n = usize::try_from(self.varint()?).map_err(|_| PayloadError::Truncated(at))?;
        self.check_count(n, min_item)
    }
    /// A varint length, then that many bytes.
    pub fn var_bytes(&mut self) -> Result<&'a [u8], PayloadError> {
        let at = self.at;
        let len = usize::try_from(self.varint()?).map_err(|_| PayloadError::Truncated(at))?;
        self.take(len)
    }
    /// A U256 written by [`Writer::u256_min`].
    pub fn u256_min(&mut self) -> Result<U256, PayloadError> {
        let len = self.u8()? as usize;
        if len > 32 {
            return Err(PayloadError::Invalid("U256 length"));
        }
        Ok(U256::from_be_slice(self.take(len)?))
    }
    /// A u32 length, then that many bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], PayloadError> {
        let len = self.u32()?;
        self.take(len)
    }
    /// A u32 count of items at least `min_item` bytes each, checked against
    /// what remains.
    pub fn count(&mut self, min_item: usize) -> Result<usize, PayloadError> {
        let n = self.u32()?;
        self.check_count(n, min_item)
    }
    /// Checks that `n` items of at least `min_item` bytes fit in what remains.
    pub fn check_count(&self, n: usize, min_item: usize) -> Result<usize, PayloadError> {
        if n.saturating_mul(min_item) > self.remaining() {
            return Err(PayloadError::Truncated(self.at));
        }
        Ok(n)
    }
    /// An account header written by [`Writer::account`].
    pub fn account(&mut self) -> Result<AccountState, PayloadError> {
        Ok(AccountState {
            nonce: self.u64()?,
            balance: self.u256()?,
            code_hash: self.b256()?,
        })
    }
    /// A storage slot written by [`Writer::slot`].
    pub fn slot(&mut self) -> Result<(Address, U256, U256), PayloadError> {
        Ok((self.address()?, self.u256()?, self.u256()?))
    }
    /// A code blob written by [`Writer::code`].
    pub fn code(&mut self) -> Result<(B256, Bytecode), PayloadError> {
        let hash = self.b256()?;
        let code = Bytecode::new_raw_checked(Bytes::copy_from_slice(self.bytes()?))
            .map_err(|_| PayloadError::Invalid("code"))?;
        Ok((hash, code))
    }
    /// Fails when bytes are left over.
    pub fn finish(&self) -> Result<(), PayloadError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(PayloadError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_minimal_u256s_round_trip_and_overlong_ones_are_errors() {
        let values = [
            0,
            1,
            127,
            128,
            300,
            21_000,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ];
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        for v in values {
            w.varint(v);
        }
        let numbers = [
            U256::ZERO,
            U256::from(1),
            U256::from(10).pow(U256::from(21)),
            U256::MAX,
        ];
        for v in &numbers {
            w.u256_min(v);
        }
        let mut r = Reader::new(&out);
        for v in values {
            assert_eq!(r.varint().unwrap(), v);
        }
        for v in &numbers {
            assert_eq!(&r.u256_min().unwrap(), v);
        }
        r.finish().unwrap();
        assert_eq!(out[0], 0);
        // Eleven continuation bytes, a tenth byte over 1, a length over 32.
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint()
                .is_err()
        );
        assert!(Reader::new(&[33; 40]).u256_min().is_err());
        assert!(Reader::new(&[0x80]).varint().is_err());
    }
}
