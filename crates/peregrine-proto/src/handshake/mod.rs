//! The opening handshake of RFC 6455 §4, for both roles, without I/O.
//!
//! The driver reads bytes into a buffer and calls a parser; the parser either
//! answers "need more" (`Ok(None)`, nothing consumed), fails with a
//! [`HandshakeError`] that knows its HTTP status, or returns the parsed head
//! together with how many bytes it took. Bytes after the header block (the
//! first frames, if the peer did not wait) stay in the driver's buffer.
//!
//! * Server: [`Request::parse`] validates the request; answer with
//!   [`Request::accept`] (a 101 [`AcceptResponse`]) or a [`Rejection`],
//!   either built from the error ([`HandshakeError::rejection`]) or by the
//!   application (e.g. 403 for a disallowed origin).
//! * Client: [`ClientRequest`] writes the request and validates the
//!   [`Response`] with [`ClientRequest::parse_response`].
//!
//! Header blocks are bounded by [`HeaderLimits`] (8 KiB, 64 fields by
//! default); nothing sized by the peer is allocated beyond that block.
//!
//! ```
//! use bytes::BytesMut;
//! use peregrine_proto::handshake::{ClientRequest, Request};
//!
//! // Client: write the request.
//! let client = ClientRequest::new("example.com", "/chat").with_protocol("chat.v1");
//! let mut wire = BytesMut::new();
//! client.encode(&mut wire)?;
//!
//! // Server: parse it (a frame may follow in the same read), pick a protocol, accept.
//! wire.extend_from_slice(b"\x81\x85");
//! let request = Request::parse(&wire)?.expect("complete header block");
//! let leftover = &wire[request.consumed()..];
//! assert_eq!(leftover, b"\x81\x85");
//! let protocol = request.choose_protocol(&["chat.v2", "chat.v1"]);
//! let response = request.accept().with_protocol(protocol.unwrap_or_default()).to_vec()?;
//!
//! // Client: check the answer.
//! let response = client.parse_response(&response)?.expect("complete header block");
//! assert_eq!(response.protocol(), Some("chat.v1"));
//! # Ok::<(), peregrine_proto::handshake::HandshakeError>(())
//! ```

mod client;
mod error;
mod extension_header;
mod http;
mod server;
mod server_response;

#[cfg(test)]
mod tests;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

pub use client::{ClientRequest, Response};
pub use error::{ExtensionSyntaxError, HandshakeError};
pub use extension_header::{ExtensionOffer, check_extensions, format_extensions, parse_extensions};
pub use http::{DEFAULT_MAX_HEADER_SIZE, DEFAULT_MAX_HEADERS, HeaderLimits, Headers};
pub use server::{Request, select_subprotocol};
pub use server_response::{AcceptResponse, Rejection};

/// The GUID that RFC 6455 §1.3 appends to the key before hashing.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only `Sec-WebSocket-Version` this implementation speaks (RFC 6455 §4.1).
pub const WEBSOCKET_VERSION: &str = "13";

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`: base64 of the
/// SHA-1 of the key followed by [`WEBSOCKET_GUID`] (RFC 6455 §4.2.2).
///
/// The key is used as sent (its base64 text), not decoded.
///
/// ```
/// use peregrine_proto::handshake::accept_key;
///
/// assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(WEBSOCKET_GUID.as_bytes());
    STANDARD.encode(sha1.finalize())
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64 encoded (24 characters).
///
/// The key is a nonce that stops caches and non-WebSocket servers from
/// producing a valid answer by accident; it is not a secret. So if the OS
/// random source fails (it practically never does), the bytes come from
/// std's randomly seeded hasher over the time and a counter instead of
/// panicking.
///
/// ```
/// use peregrine_proto::handshake::generate_key;
///
/// let key = generate_key();
/// assert_eq!(key.len(), 24);
/// assert_ne!(key, generate_key());
/// ```
pub fn generate_key() -> String {
    let mut nonce = [0u8; 16];
    if getrandom::fill(&mut nonce).is_err() {
        fallback_nonce(&mut nonce);
    }
    STANDARD.encode(nonce)
}

fn fallback_nonce(nonce: &mut [u8; 16]) {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    for half in nonce.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(now);
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
}

/// Whether `key` is a valid `Sec-WebSocket-Key`: base64 of exactly 16 bytes.
fn is_valid_key(key: &[u8]) -> bool {
    // 16 bytes are always 24 base64 characters; checking the length first
    // keeps the decode buffer fixed-size whatever the peer sent.
    let mut decoded = [0u8; 18];
    key.len() == 24 && STANDARD.decode_slice(key, &mut decoded) == Ok(16)
}
