//! A hand-written WebSocket peer for integration tests: it speaks bytes, so a
//! test can say exactly what goes on the wire and check exactly what comes
//! back, and it can misbehave (stop reading, never answer, break the protocol)
//! in ways our own client and server never would.
//!
//! Each test crate uses a different part of it.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The sample key of RFC 6455 §1.3 and its accept value.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The masking key the raw client uses for every frame.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Upper bound for anything that should happen "at once" in a test; only hit
/// when the behaviour under test is broken.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A listener on an ephemeral loopback port.
pub async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A valid client opening handshake for `/` with [`KEY`].
pub fn request(addr: SocketAddr) -> String {
    request_with(addr, "")
}

/// A valid request with extra header lines (each ending in `\r\n`).
pub fn request_with(addr: SocketAddr, extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Reads an HTTP head (through the blank line). Returns the head as text and
/// whatever arrived after it.
pub async fn read_head(tcp: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8(buf).expect("head is UTF-8"), rest);
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.expect("read head");
        assert!(n > 0, "EOF before the end of the HTTP head; got {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until the peer ends the connection. A reset after data counts as the
/// end (a peer that closes with unread input resets instead of sending FIN).
pub async fn read_to_end(tcp: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tcp.read(&mut chunk).await {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// The value of header `name` in an HTTP head (case-insensitive name).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The status code of an HTTP response head.
pub fn status(head: &str) -> u16 {
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line")
}

/// Connects and completes the opening handshake by hand. Returns the stream
/// and any bytes that arrived after the 101.
pub async fn client(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    client_on(tcp, addr).await
}

/// [`client`] over a stream the test connected itself.
pub async fn client_on(mut tcp: TcpStream, addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    tcp.write_all(request(addr).as_bytes()).await.unwrap();
    let (head, rest) = read_head(&mut tcp).await;
    assert_eq!(status(&head), 101, "{head}");
    assert_eq!(header(&head, "Sec-WebSocket-Accept"), Some(ACCEPT), "{head}");
    (tcp, rest)
}

/// Reads a client's request and answers 101 with the right accept value and
/// `extra` header lines. Returns the request head.
pub async fn server_handshake(tcp: &mut TcpStream, extra: &str) -> String {
    let (head, rest) = read_head(tcp).await;
    assert!(rest.is_empty(), "the client sent frames before the 101");
    let key = header(&head, "Sec-WebSocket-Key").expect("request has a key");
    let accept = peregrine::proto::handshake::accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
    );
    tcp.write_all(response.as_bytes()).await.unwrap();
    head
}

/// One frame on the wire: FIN set, no RSV bits, masked with `mask` if given.
pub fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    frame_with(0x80 | opcode, payload.len() as u64, payload, mask)
}

/// A frame from the client side (masked with [`MASK`]).
pub fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(opcode, payload, Some(MASK))
}

/// A frame whose first byte is `b0` (FIN, RSV, opcode) and whose header
/// declares `declared_len`, followed by `payload` (masked if `mask` is given).
/// The declared length need not match the payload.
pub fn frame_with(b0: u8, declared_len: u64, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![b0];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if declared_len < 126 {
        out.push(mask_bit | declared_len as u8);
    } else if declared_len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(declared_len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&declared_len.to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close frame payload: the code, big-endian, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// A frame as received, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, OP_CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The reason of a close frame.
    pub fn close_reason(&self) -> &str {
        std::str::from_utf8(self.payload.get(2..).unwrap_or_default()).expect("UTF-8 reason")
    }
}

/// Decodes frames from a stream, keeping bytes across calls.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Starts with bytes that arrived with the handshake.
    pub fn new(leftover: Vec<u8>) -> Self {
        Self { buf: leftover }
    }

    /// The next frame; `None` at a clean EOF between frames (a reset counts as EOF).
    pub async fn next(&mut self, tcp: &mut (impl AsyncRead + Unpin)) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = decode(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = vec![0u8; 64 << 10];
            let n = match tcp.read(&mut chunk).await {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
                Err(e) => panic!("read: {e}"),
            };
            if n == 0 {
                assert!(self.buf.is_empty(), "EOF inside a frame ({} bytes buffered)", self.buf.len());
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn decode(buf: &[u8]) -> Option<(Frame, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => (u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)), 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let key: Option<[u8; 4]> = if masked {
        let key = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(key)
    } else {
        None
    };
    let end = at + usize::try_from(len).ok()?;
    let mut payload = buf.get(at..end)?.to_vec();
    if let Some(key) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Some((Frame { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, masked, payload }, end))
}
