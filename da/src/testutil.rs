//! Deterministic inputs for the codec tests, and reading an HTTP request
//! in the tests' loopback servers.

/// xorshift64: a seeded stream of pseudo-random bytes.
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Synthetic L2 traffic: signed-looking EIP-1559 native transfers from a few
/// hundred senders to a few thousand recipients, with random (incompressible)
/// signatures, grouped into singular-batch-shaped batches
/// (`0x00 ++ rlp([parent_hash, epoch_num, epoch_hash, timestamp, [tx...]])`).
pub(crate) struct Traffic {
    rng: XorShift,
    nonces: Vec<u64>,
    recipients: Vec<[u8; 20]>,
    timestamp: u64,
}

impl Traffic {
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = XorShift::new(seed);
        let recipients = (0..2000)
            .map(|_| rng.bytes(20).try_into().unwrap())
            .collect();
        Self {
            rng,
            nonces: vec![0; 300],
            recipients,
            timestamp: 1_800_000_000,
        }
    }

    /// One transfer's EIP-2718 bytes.
    pub(crate) fn transfer(&mut self) -> Vec<u8> {
        use alloy_consensus::{SignableTransaction, TxEip1559};
        use alloy_eips::eip2718::Encodable2718;
        use alloy_primitives::{Address, B256, Signature, TxKind, U256};
        let sender = self.rng.below(self.nonces.len());
        let nonce = self.nonces[sender];
        self.nonces[sender] += 1;
        let to = self.recipients[self.rng.below(self.recipients.len())];
        let tx = TxEip1559 {
            chain_id: 8453,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: 1_000_000_000 + self.rng.below(4) as u128 * 1_000_000,
            max_priority_fee_per_gas: 1_000_000,
            to: TxKind::Call(Address::from(to)),
            value: U256::from(self.rng.next_u64() % 1_000_000_000_000_000_000),
            ..Default::default()
        };
        let r = U256::from_be_bytes(B256::from_slice(&self.rng.bytes(32)).0);
        let s = U256::from_be_bytes(B256::from_slice(&self.rng.bytes(32)).0) >> 1;
        let sig = Signature::new(r, s, self.rng.below(2) == 1);
        tx.into_signed(sig).encoded_2718()
    }

    /// One singular-batch-shaped batch of `txs` transfers.
    pub(crate) fn batch(&mut self, txs: usize) -> Vec<u8> {
        use alloy_rlp::Encodable;
        let list: Vec<alloy_primitives::Bytes> = (0..txs).map(|_| self.transfer().into()).collect();
        let parent = alloy_primitives::B256::from_slice(&self.rng.bytes(32));
        let epoch_hash = alloy_primitives::B256::repeat_byte(0x11);
        self.timestamp += 1;
        let mut fields = Vec::new();
        parent.encode(&mut fields);
        20_000_000u64.encode(&mut fields);
        epoch_hash.encode(&mut fields);
        self.timestamp.encode(&mut fields);
        list.encode(&mut fields);
        let mut out = vec![0u8];
        alloy_rlp::Header {
            list: true,
            payload_length: fields.len(),
        }
        .encode(&mut out);
        out.extend_from_slice(&fields);
        out
    }
}

/// Reads one HTTP/1.1 request from `reader`: its request line (empty when
/// the connection closed first) and its body (by `content-length`).
pub(crate) fn read_http_request(
    reader: &mut std::io::BufReader<std::net::TcpStream>,
) -> (String, Vec<u8>) {
    use std::io::{BufRead, Read};
    let mut request = String::new();
    if reader.read_line(&mut request).unwrap_or(0) == 0 {
        return (String::new(), Vec::new());
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    (request, body)
}
