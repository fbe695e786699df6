//! Minimal keep-alive HTTP/1.1 JSON-RPC client.

use std::io;
use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted (a full block of receipts fits).
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One connection; one request in flight at a time.
pub struct Conn {
    stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects with TCP_NODELAY.
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            addr,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// POSTs `body`; returns the response body.
    pub async fn post(&mut self, body: &[u8]) -> io::Result<&[u8]> {
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> io::Result<&[u8]> {
        self.buf.clear();
        let header_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..header_end])
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 response head"))?;
        let lower = head.to_ascii_lowercase();
        if lower.contains("transfer-encoding: chunked") {
            return self.read_chunked(header_end).await;
        }
        let length = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "response without content-length",
                )
            })?;
        if length > RESPONSE_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response too large",
            ));
        }
        while self.buf.len() < header_end + length {
            self.fill().await?;
        }
        Ok(&self.buf[header_end..header_end + length])
    }

    async fn read_chunked(&mut self, mut at: usize) -> io::Result<&[u8]> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(end) = find(&self.buf[at..], b"\r\n") {
                    break at + end;
                }
                self.fill().await?;
            };
            let size_text = std::str::from_utf8(&self.buf[at..line_end])
                .unwrap_or("")
                .trim()
                .to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            at = line_end + 2;
            while self.buf.len() < at + size + 2 {
                self.fill().await?;
            }
            if size == 0 {
                break;
            }
            body.extend_from_slice(&self.buf[at..at + size]);
            at += size + 2;
            if body.len() > RESPONSE_BYTES_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "response too large",
                ));
            }
        }
        self.buf = body;
        Ok(&self.buf)
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// A JSON-RPC call; `Err` carries the JSON-RPC error object or an IO error text.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let response = self
            .post(&bytes)
            .await
            .map_err(|e| format!("{method}: {e}"))?;
        parse_response(response)
    }
}

/// The `result` of a JSON-RPC response, or its `error` as text.
pub fn parse_response(bytes: &[u8]) -> Result<Value, String> {
    let mut value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("bad JSON response: {e}"))?;
    if let Some(error) = value.get("error") {
        return Err(error.to_string());
    }
    Ok(value
        .get_mut("result")
        .map(Value::take)
        .unwrap_or(Value::Null))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses a `0x` quantity.
pub fn quantity(value: &Value) -> Option<u128> {
    u128::from_str_radix(value.as_str()?.trim_start_matches("0x"), 16).ok()
}
