//! What a server writes back: the 101 that completes the handshake
//! ([`AcceptResponse`], RFC 6455 §4.2.2) or an error response ([`Rejection`]).

use bytes::{BufMut, BytesMut};

use super::error::HandshakeError;
use super::extension_header::{ExtensionOffer, encode_extensions};
use super::http::{self, check_header};

/// The first line of every accepting response.
const STATUS_LINE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n";

/// Headers [`AcceptResponse`] writes itself.
const ACCEPT_RESERVED: &[&str] = &[
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
    "Content-Length",
    "Transfer-Encoding",
];

/// The 101 Switching Protocols response (RFC 6455 §4.2.2).
///
/// ```
/// use peregrine_proto::handshake::AcceptResponse;
///
/// let bytes = AcceptResponse::from_key("dGhlIHNhbXBsZSBub25jZQ==").to_vec()?;
/// assert_eq!(
///     bytes,
///     b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
///       Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
/// );
/// # Ok::<(), peregrine_proto::handshake::HandshakeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptResponse {
    accept: String,
    protocol: Option<String>,
    extensions: Vec<ExtensionOffer>,
    headers: Vec<(String, String)>,
}

impl AcceptResponse {
    /// A response answering the client key `key`.
    pub fn from_key(key: &str) -> Self {
        Self {
            accept: super::accept_key(key.as_bytes()),
            protocol: None,
            extensions: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Sends `Sec-WebSocket-Protocol: protocol`; an empty string sends
    /// nothing, so `choose_protocol(..).unwrap_or_default()` can be passed
    /// straight in. It should be one the client offered
    /// ([`Request::choose_protocol`](super::Request::choose_protocol)).
    #[must_use]
    pub fn with_protocol(mut self, protocol: impl Into<String>) -> Self {
        let protocol = protocol.into();
        self.protocol = (!protocol.is_empty()).then_some(protocol);
        self
    }

    /// Adds an accepted extension to `Sec-WebSocket-Extensions`.
    #[must_use]
    pub fn with_extension(mut self, extension: ExtensionOffer) -> Self {
        self.extensions.push(extension);
        self
    }

    /// Adds a header of the caller's (e.g. `Set-Cookie`), checked on encode.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Appends the response to `dst`. On error nothing is written.
    ///
    /// Fails if a caller-supplied header name is not a token, is one this
    /// response writes itself, or a value contains CR, LF or other control
    /// characters; or if the protocol is not a token.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), HandshakeError> {
        if let Some(protocol) = &self.protocol
            && !http::is_token(protocol.as_bytes())
        {
            return Err(HandshakeError::InvalidHeaderValue { name: "Sec-WebSocket-Protocol".to_owned() });
        }
        let extensions = encode_extensions(&self.extensions)?;
        for (name, value) in &self.headers {
            check_header(name, value, ACCEPT_RESERVED)?;
        }
        let fixed =
            [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", &self.accept)];
        let optional = [
            self.protocol.as_deref().map(|protocol| ("Sec-WebSocket-Protocol", protocol)),
            extensions.as_deref().map(|extensions| ("Sec-WebSocket-Extensions", extensions)),
        ];
        let caller = self.headers.iter().map(|(name, value)| (name.as_str(), value.as_str()));
        let headers = fixed.into_iter().chain(optional.into_iter().flatten()).chain(caller);
        // One allocation for the whole head (growing from empty took three).
        let len = STATUS_LINE.len() + headers.clone().map(|(n, v)| http::header_len(n, v)).sum::<usize>() + 2;
        dst.reserve(len);
        let start = dst.len();
        dst.put_slice(STATUS_LINE);
        for (name, value) in headers {
            http::put_header(dst, name, value);
        }
        dst.put_slice(b"\r\n");
        debug_assert_eq!(dst.len() - start, len, "the reservation is the head's exact length");
        Ok(())
    }

    /// The response as a new buffer.
    pub fn to_vec(&self) -> Result<Vec<u8>, HandshakeError> {
        let mut dst = BytesMut::new();
        self.encode(&mut dst)?;
        Ok(dst.to_vec())
    }
}

/// Headers [`Rejection`] writes itself.
const REJECTION_RESERVED: &[&str] = &["Connection", "Content-Type", "Content-Length", "Transfer-Encoding"];

/// An error response: the server refuses the upgrade and closes.
///
/// The status line carries the standard reason phrase; the body is the
/// caller's reason as one line of `text/plain`, so whoever looks at it (a
/// developer with curl, the `peregrine connect` CLI) sees what was wrong.
///
/// A 405 gets `Allow: GET` and a 426 gets `Upgrade: websocket` with
/// `Connection: Upgrade, close` (RFC 9110 §15.5.6 and §15.5.22 require them)
/// unless the caller set `Allow` / `Upgrade` itself. Every rejection says
/// `Connection: close`: after it the server closes the TCP connection.
///
/// ```
/// use peregrine_proto::handshake::Rejection;
///
/// let bytes = Rejection::new(403, "origin https://evil.example is not allowed").to_vec()?;
/// let text = String::from_utf8(bytes).unwrap();
/// assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"));
/// assert!(text.ends_with("\r\n\r\norigin https://evil.example is not allowed\n"));
/// # Ok::<(), peregrine_proto::handshake::HandshakeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
}

impl Rejection {
    /// A rejection with `status` (200..=599, checked on encode) and a
    /// human-readable `reason`. Control characters in the reason (CR, LF…)
    /// become spaces so the body stays one line.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        let reason: String = reason.into().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        Self { status, reason: reason.trim().to_owned(), headers: Vec::new() }
    }

    /// Adds a header (e.g. `WWW-Authenticate`), checked on encode.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason sent as the body.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Appends the response to `dst`. On error nothing is written.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), HandshakeError> {
        if !(200..=599).contains(&self.status) {
            return Err(HandshakeError::InvalidStatus(self.status));
        }
        for (name, value) in &self.headers {
            check_header(name, value, REJECTION_RESERVED)?;
        }
        let has = |wanted: &str| self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(wanted));
        let phrase = http::reason_phrase(self.status);
        let body = if self.reason.is_empty() { phrase } else { &self.reason };
        dst.put_slice(format!("HTTP/1.1 {} {phrase}\r\n", self.status).as_bytes());
        if self.status == 405 && !has("Allow") {
            http::put_header(dst, "Allow", "GET");
        }
        if self.status == 426 {
            if !has("Upgrade") {
                http::put_header(dst, "Upgrade", "websocket");
            }
            http::put_header(dst, "Connection", "Upgrade, close");
        } else {
            http::put_header(dst, "Connection", "close");
        }
        http::put_header(dst, "Content-Type", "text/plain; charset=utf-8");
        http::put_header(dst, "Content-Length", &(body.len() + 1).to_string());
        for (name, value) in &self.headers {
            http::put_header(dst, name, value);
        }
        dst.put_slice(b"\r\n");
        dst.put_slice(body.as_bytes());
        dst.put_slice(b"\n");
        Ok(())
    }

    /// The response as a new buffer.
    pub fn to_vec(&self) -> Result<Vec<u8>, HandshakeError> {
        let mut dst = BytesMut::new();
        self.encode(&mut dst)?;
        Ok(dst.to_vec())
    }
}
