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
