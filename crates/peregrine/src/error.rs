//! The one error type of the async library.

use std::{fmt, io};

use peregrine_proto::handshake::HandshakeError;
use peregrine_proto::{ProtocolError, SendError};

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// The opening handshake (TCP, TLS, HTTP upgrade) took too long.
    Handshake,
    /// A keepalive ping got no answer in time: the peer is gone.
    Keepalive,
    /// The peer did not finish the close handshake in time.
    Close,
}

/// Everything that can go wrong on a WebSocket connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    Io(io::Error),
    /// The peer broke the protocol; the connection was closed with
    /// [`ProtocolError::close_code`].
    Protocol(ProtocolError),
    /// The opening handshake failed (refused, malformed, or not WebSocket).
    Handshake(HandshakeError),
    /// Our server refused the handshake (the `accept_with` callback
    /// returned a rejection, which was sent to the client).
    Rejected {
        /// The HTTP status sent.
        status: u16,
        /// The reason sent as the body.
        reason: String,
    },
    /// The connection is closed (or closing) and cannot send data.
    Closed,
    /// The TCP connection ended without a close frame (close code 1006).
    AbnormalClosure,
    /// A timeout fired.
    Timeout(TimeoutKind),
    /// A local misuse of the API, such as an invalid close code.
    Send(SendError),
    /// A URL that is not `ws://` or `wss://`, or has no host.
    Url(String),
    /// TLS configuration or handshake failure.
    #[cfg(feature = "tls")]
    Tls(rustls::Error),
    /// A certificate or key given as PEM cannot be used (see
    /// [`crate::tls::PemError`], which says which and why).
    #[cfg(feature = "tls")]
    Pem(crate::tls::PemError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::Protocol(e) => write!(f, "protocol error ({}): {e}", e.close_code()),
            Self::Handshake(e) => write!(f, "handshake failed: {e}"),
            Self::Rejected { status, reason } => write!(f, "handshake refused with {status}: {reason}"),
            Self::Closed => f.write_str("the connection is closed"),
            Self::AbnormalClosure => {
                f.write_str("connection closed abnormally (1006): the peer or the network dropped it without a close frame")
            }
            Self::Timeout(TimeoutKind::Handshake) => f.write_str("the opening handshake timed out"),
            Self::Timeout(TimeoutKind::Keepalive) => {
                f.write_str("keepalive timeout: the peer stopped answering pings")
            }
            Self::Timeout(TimeoutKind::Close) => f.write_str("the close handshake timed out"),
            Self::Send(e) => write!(f, "cannot send: {e}"),
            Self::Url(reason) => write!(f, "invalid WebSocket URL: {reason}"),
            #[cfg(feature = "tls")]
            Self::Tls(e) => write!(f, "TLS error: {e}"),
            #[cfg(feature = "tls")]
            Self::Pem(e) => e.fmt(f),
        }
    }
}

/// `Display` already includes the wrapped error's text, so `source` skips to
/// that error's own source: a chain printed in full (`{:#}` with anyhow)
/// says each thing once.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => e.source(),
            Self::Protocol(e) => e.source(),
            Self::Handshake(e) => e.source(),
            Self::Send(e) => e.source(),
            #[cfg(feature = "tls")]
            Self::Tls(e) => e.source(),
            #[cfg(feature = "tls")]
            Self::Pem(e) => e.source(),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        Self::Handshake(e)
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Closed => Self::Closed,
            other => Self::Send(other),
        }
    }
}

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Each cause is said once when the whole chain is printed (anyhow's
    /// `{:#}` joins every `source` after the error's own text).
    fn chain(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut next = error.source();
        while let Some(cause) = next {
            text = format!("{text}: {cause}");
            next = cause.source();
        }
        text
    }

    #[test]
    fn a_printed_chain_says_the_wrapped_error_once() {
        let io = Error::Io(io::Error::other("disk on fire"));
        assert_eq!(chain(&io), "I/O error: disk on fire");
        let syntax = peregrine_proto::handshake::parse_extensions(["permessage-deflate;;"]).unwrap_err();
        let handshake = Error::Handshake(HandshakeError::MalformedExtensions(syntax.clone()));
        assert_eq!(chain(&handshake).matches(&syntax.to_string()).count(), 1, "{}", chain(&handshake));
    }
}
