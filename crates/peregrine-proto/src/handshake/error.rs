//! Every way an opening handshake can fail, and what a server answers for it.
//!
//! One enum serves both roles because the I/O driver handles them the same
//! way: a server turns [`HandshakeError::rejection`] into bytes and closes, a
//! client reports the error. The variants are grouped by who caused them:
//!
//! * **the peer's request** (server side): [`HandshakeError::status`] is
//!   `Some(code)` and [`HandshakeError::rejection`] builds the response;
//! * **the peer's response** (client side): `status()` is `None`, there is
//!   nobody to answer;
//! * **our own caller** (an invalid header handed to a writer): `status()` is
//!   `None` as well, because no peer input caused it.

use std::fmt;

use super::http::Headers;
use super::server_response::Rejection;

/// Longest peer-supplied text echoed back in a reason, in characters.
///
/// Reasons end up in a response body and in logs; echoing a whole 8 KiB
/// header value would make both unreadable.
const ECHO_LIMIT: usize = 64;

/// Cuts peer-supplied text to [`ECHO_LIMIT`] characters for use in a reason.
pub(super) fn echo(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(ECHO_LIMIT).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// A malformed `Sec-WebSocket-Extensions` header value.
///
/// Carries a fixed description of the problem and the byte offset inside the
/// header value where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionSyntaxError {
    problem: &'static str,
    offset: usize,
}

impl ExtensionSyntaxError {
    pub(super) fn new(problem: &'static str, offset: usize) -> Self {
        Self { problem, offset }
    }

    /// What is wrong, e.g. `"expected an extension name"`.
    pub fn problem(&self) -> &'static str {
        self.problem
    }

    /// Byte offset inside the offending header value.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl fmt::Display for ExtensionSyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.problem, self.offset)
    }
}

impl std::error::Error for ExtensionSyntaxError {}

/// Why an opening handshake (RFC 6455 §4) failed.
///
/// `Display` gives a one-line, human-readable reason that names the problem;
/// a server sends exactly that text as the body of its rejection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    // ---- the peer's request (server side) --------------------------------
    /// The request header block did not fit in `limit` bytes (431).
    RequestTooLarge {
        /// The configured `max_header_size`.
        limit: usize,
    },
    /// The request has more than `limit` header fields (431).
    TooManyHeaders {
        /// The configured `max_headers`.
        limit: usize,
    },
    /// The request is not valid HTTP/1.x (400).
    MalformedRequest(&'static str),
    /// The method is not `GET` (405, with `Allow: GET`).
    MethodNotAllowed(String),
    /// The request is HTTP/1.0 (505). RFC 6455 §4.1 requires HTTP/1.1 or
    /// later, and 1.0 has no `Upgrade` mechanism.
    UnsupportedHttpVersion,
    /// No (or an empty) `Host` header (400).
    MissingHost,
    /// A header that must appear once appeared several times (400).
    DuplicateHeader(&'static str),
    /// A header is present but its value is unusable (400).
    InvalidHeader {
        /// The header's name.
        name: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Neither `Upgrade: websocket` nor `Connection: Upgrade`: a plain HTTP
    /// request reached a WebSocket endpoint (426).
    NotAnUpgrade,
    /// `Connection: Upgrade` but no `websocket` token in `Upgrade` (426).
    MissingUpgrade,
    /// `Upgrade: websocket` but no `upgrade` token in `Connection` (426).
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Version` header (426, with `Sec-WebSocket-Version: 13`).
    MissingVersion,
    /// `Sec-WebSocket-Version` is not `13` (426, with `Sec-WebSocket-Version: 13`).
    UnsupportedVersion(String),
    /// No `Sec-WebSocket-Key` header (400).
    MissingKey,
    /// `Sec-WebSocket-Key` is not base64 of exactly 16 bytes (400).
    InvalidKey,
    /// The request's `Sec-WebSocket-Extensions` is malformed (400).
    MalformedExtensions(ExtensionSyntaxError),

    // ---- the peer's response (client side) -------------------------------
    /// The response header block did not fit in `limit` bytes.
    ResponseTooLarge {
        /// The configured `max_header_size`.
        limit: usize,
    },
    /// The response has more than `limit` header fields.
    ResponseTooManyHeaders {
        /// The configured `max_headers`.
        limit: usize,
    },
    /// The response is not valid HTTP/1.x.
    MalformedResponse(&'static str),
    /// The server answered something other than 101 Switching Protocols.
    ///
    /// Everything needed to diagnose it is kept: the body (if any) starts at
    /// `header_len` in the caller's buffer.
    UnexpectedStatus {
        /// The status code, e.g. 403.
        status: u16,
        /// The reason phrase, e.g. `"Forbidden"`.
        reason: String,
        /// All response headers.
        headers: Headers,
        /// Length of the status line and header block, in bytes.
        header_len: usize,
    },
    /// The 101 response lacks `Upgrade: websocket`.
    ResponseMissingUpgrade,
    /// The 101 response lacks `Connection: Upgrade`.
    ResponseMissingConnectionUpgrade,
    /// A response header that must appear once appeared several times.
    ResponseDuplicateHeader(&'static str),
    /// The 101 response lacks `Sec-WebSocket-Accept`.
    MissingAccept,
    /// `Sec-WebSocket-Accept` does not match our key.
    AcceptMismatch {
        /// What RFC 6455 §4.2.2 says it must be.
        expected: String,
        /// What the server sent.
        received: String,
    },
    /// The server chose a subprotocol we did not offer.
    UnofferedProtocol(String),
    /// The server listed more than one subprotocol.
    MultipleProtocols,
    /// The response's `Sec-WebSocket-Extensions` is malformed.
    ResponseMalformedExtensions(ExtensionSyntaxError),
    /// The server accepted an extension we did not offer.
    UnofferedExtension(String),
    /// The server's answer to our extension offer breaks the extension's
    /// rules (RFC 7692 §7: unknown, repeated or out-of-range parameters).
    InvalidExtensionResponse(String),

    // ---- our own caller ---------------------------------------------------
    /// A header name given to a writer is not an HTTP token.
    InvalidHeaderName(String),
    /// A header value given to a writer contains CR, LF or another control
    /// character (or, for structured headers, breaks their grammar).
    InvalidHeaderValue {
        /// The header's name.
        name: String,
    },
    /// A caller-supplied header would clash with one the handshake writes.
    ReservedHeader(String),
    /// The request target is not an origin-form path such as `/chat?room=1`.
    InvalidResource(String),
    /// A rejection status outside 200..=599.
    InvalidStatus(u16),
}

impl HandshakeError {
    /// The HTTP status a server answers this error with.
    ///
    /// `None` for failures of the peer's response (client side) and for
    /// invalid input from our own caller: there is no peer request to answer.
    pub fn status(&self) -> Option<u16> {
        use HandshakeError::*;
        Some(match self {
            RequestTooLarge { .. } | TooManyHeaders { .. } => 431,
            MethodNotAllowed(_) => 405,
            UnsupportedHttpVersion => 505,
            NotAnUpgrade
            | MissingUpgrade
            | MissingConnectionUpgrade
            | MissingVersion
            | UnsupportedVersion(_) => 426,
            MalformedRequest(_)
            | MissingHost
            | DuplicateHeader(_)
            | InvalidHeader { .. }
            | MissingKey
            | InvalidKey
            | MalformedExtensions(_) => 400,
            // Listed one by one so that a new variant must pick a side.
            ResponseTooLarge { .. }
            | ResponseTooManyHeaders { .. }
            | MalformedResponse(_)
            | UnexpectedStatus { .. }
            | ResponseMissingUpgrade
            | ResponseMissingConnectionUpgrade
            | ResponseDuplicateHeader(_)
            | MissingAccept
            | AcceptMismatch { .. }
            | UnofferedProtocol(_)
            | MultipleProtocols
            | ResponseMalformedExtensions(_)
            | UnofferedExtension(_)
            | InvalidExtensionResponse(_)
            | InvalidHeaderName(_)
            | InvalidHeaderValue { .. }
            | ReservedHeader(_)
            | InvalidResource(_)
            | InvalidStatus(_) => return None,
        })
    }

    /// The one-line reason sent as the rejection body (same as `Display`).
    pub fn reason(&self) -> String {
        self.to_string()
    }

    /// The response a server sends for this error, or `None` when
    /// [`status`](Self::status) is `None`.
    ///
    /// [`Rejection`] adds `Allow: GET` to a 405 and `Upgrade: websocket` to a
    /// 426 by itself; the version failures also advertise
    /// `Sec-WebSocket-Version: 13` (RFC 6455 §4.4).
    pub fn rejection(&self) -> Option<Rejection> {
        let rejection = Rejection::new(self.status()?, self.reason());
        Some(match self {
            Self::MissingVersion | Self::UnsupportedVersion(_) => {
                rejection.with_header("Sec-WebSocket-Version", super::WEBSOCKET_VERSION)
            }
            _ => rejection,
        })
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HandshakeError::*;
        match self {
            RequestTooLarge { limit } => {
                write!(f, "request header block is larger than {limit} bytes")
            }
            TooManyHeaders { limit } => write!(f, "request has more than {limit} header fields"),
            MalformedRequest(problem) => write!(f, "malformed HTTP request: {problem}"),
            MethodNotAllowed(method) => {
                write!(f, "method {} is not allowed: a WebSocket handshake is a GET request", echo(method))
            }
            UnsupportedHttpVersion => {
                f.write_str("HTTP/1.0 cannot upgrade to WebSocket: HTTP/1.1 or later is required")
            }
            MissingHost => f.write_str("missing Host header"),
            DuplicateHeader(name) => write!(f, "duplicate {name} header"),
            InvalidHeader { name, problem } => write!(f, "invalid {name} header: {problem}"),
            NotAnUpgrade => f.write_str(
                "this is a WebSocket endpoint: the request is a plain HTTP request \
                 without Upgrade: websocket and Connection: Upgrade",
            ),
            MissingUpgrade => f.write_str("missing Upgrade: websocket header"),
            MissingConnectionUpgrade => f.write_str("missing Connection: Upgrade header"),
            MissingVersion => {
                f.write_str("missing Sec-WebSocket-Version header: this server speaks version 13")
            }
            UnsupportedVersion(version) => write!(
                f,
                "unsupported Sec-WebSocket-Version {}: this server speaks version 13",
                echo(version)
            ),
            MissingKey => f.write_str("missing Sec-WebSocket-Key header"),
            InvalidKey => f.write_str("Sec-WebSocket-Key is not base64 of 16 bytes"),
            MalformedExtensions(e) => write!(f, "malformed Sec-WebSocket-Extensions header: {e}"),
            ResponseTooLarge { limit } => {
                write!(f, "response header block is larger than {limit} bytes")
            }
            ResponseTooManyHeaders { limit } => {
                write!(f, "response has more than {limit} header fields")
            }
            MalformedResponse(problem) => write!(f, "malformed HTTP response: {problem}"),
            UnexpectedStatus { status, reason, .. } => {
                write!(f, "server answered {status} {} instead of 101 Switching Protocols", echo(reason))
            }
            ResponseMissingUpgrade => f.write_str("response is missing Upgrade: websocket"),
            ResponseMissingConnectionUpgrade => f.write_str("response is missing Connection: Upgrade"),
            ResponseDuplicateHeader(name) => write!(f, "response has a duplicate {name} header"),
            MissingAccept => f.write_str("response is missing Sec-WebSocket-Accept"),
            AcceptMismatch { expected, received } => {
                write!(f, "Sec-WebSocket-Accept is {:?}, expected {expected:?}", echo(received))
            }
            UnofferedProtocol(protocol) => {
                write!(f, "server chose subprotocol {:?}, which was not offered", echo(protocol))
            }
            MultipleProtocols => f.write_str("server chose more than one subprotocol"),
            ResponseMalformedExtensions(e) => {
                write!(f, "malformed Sec-WebSocket-Extensions in response: {e}")
            }
            UnofferedExtension(name) => {
                write!(f, "server accepted extension {:?}, which was not offered", echo(name))
            }
            InvalidExtensionResponse(problem) => {
                write!(f, "server's Sec-WebSocket-Extensions answer is invalid: {problem}")
            }
            InvalidHeaderName(name) => write!(f, "invalid header name {:?}", echo(name)),
            InvalidHeaderValue { name } => write!(f, "invalid value for header {}", echo(name)),
            ReservedHeader(name) => {
                write!(f, "header {} is written by the handshake and cannot be set by the caller", echo(name))
            }
            InvalidResource(resource) => {
                write!(f, "invalid request target {:?}: expected a path such as /chat?room=1", echo(resource))
            }
            InvalidStatus(status) => write!(f, "invalid rejection status {status}"),
        }
    }
}

/// `Display` already includes the extension syntax error, so `source` skips
/// to its own source: a chain printed in full says it once.
impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::MalformedExtensions(e) | Self::ResponseMalformedExtensions(e) => e.source(),
            _ => None,
        }
    }
}
