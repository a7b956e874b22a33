//! Close codes (RFC 6455 §7.4) and close frames.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::message::Utf8Bytes;

/// A close status code: a `u16` with named constants for the registered ones.
///
/// ```
/// use peregrine_proto::CloseCode;
/// assert_eq!(CloseCode::from(1000), CloseCode::NORMAL);
/// assert_eq!(CloseCode::ABNORMAL.name(), Some("ABNORMAL_CLOSURE"));
/// assert!(!CloseCode::ABNORMAL.is_sendable()); // only reported locally
/// assert!(CloseCode::from(4000).is_sendable()); // private use
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

macro_rules! close_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $label:literal, $meaning:literal;)*) => {
        impl CloseCode {
            $($(#[$doc])* pub const $name: CloseCode = CloseCode($value);)*

            /// The registered name, such as `NORMAL_CLOSURE`.
            #[must_use]
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($label),)*
                    _ => None,
                }
            }

            /// What the code means, in words a user can act on.
            #[must_use]
            pub fn meaning(self) -> &'static str {
                match self.0 {
                    $($value => $meaning,)*
                    3000..=3999 => "registered for libraries, frameworks and applications",
                    4000..=4999 => "private use by the application",
                    _ => "not a defined close code",
                }
            }
        }
    };
}

close_codes! {
    /// 1000: the purpose of the connection was fulfilled.
    NORMAL = 1000, "NORMAL_CLOSURE", "normal closure: the purpose of the connection was fulfilled";
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    GOING_AWAY = 1001, "GOING_AWAY", "going away: the server is shutting down or the page was left";
    /// 1002: the peer broke the protocol.
    PROTOCOL_ERROR = 1002, "PROTOCOL_ERROR", "protocol error: a frame broke RFC 6455";
    /// 1003: a data type the endpoint cannot accept.
    UNSUPPORTED_DATA = 1003, "UNSUPPORTED_DATA", "unsupported data: the endpoint cannot accept this type of message";
    /// 1005: no status code was present (never sent on the wire).
    NO_STATUS = 1005, "NO_STATUS_RECEIVED", "no status: the close frame carried no code";
    /// 1006: the connection dropped without a close frame (never sent on the wire).
    ABNORMAL = 1006, "ABNORMAL_CLOSURE", "abnormal closure: the connection dropped without a close frame (network failure, crashed peer, proxy timeout)";
    /// 1007: data inconsistent with the message type (invalid UTF-8 in text).
    INVALID_PAYLOAD = 1007, "INVALID_FRAME_PAYLOAD_DATA", "invalid payload: text was not valid UTF-8, or data was inconsistent";
    /// 1008: a message violated the endpoint's policy.
    POLICY_VIOLATION = 1008, "POLICY_VIOLATION", "policy violation";
    /// 1009: a message was too big to process.
    MESSAGE_TOO_BIG = 1009, "MESSAGE_TOO_BIG", "message too big: a frame or message exceeded the receiver's limit";
    /// 1010: the client needed an extension the server did not negotiate.
    MANDATORY_EXTENSION = 1010, "MANDATORY_EXTENSION", "mandatory extension: the server did not negotiate an extension the client needs";
    /// 1011: the server hit an unexpected condition.
    INTERNAL_ERROR = 1011, "INTERNAL_ERROR", "internal error in the server";
    /// 1012: the service is restarting.
    SERVICE_RESTART = 1012, "SERVICE_RESTART", "service restart: reconnect shortly";
    /// 1013: try again later (overload).
    TRY_AGAIN_LATER = 1013, "TRY_AGAIN_LATER", "try again later: the server is overloaded";
    /// 1014: a gateway received an invalid response upstream.
    BAD_GATEWAY = 1014, "BAD_GATEWAY", "bad gateway";
    /// 1015: the TLS handshake failed (never sent on the wire).
    TLS_HANDSHAKE = 1015, "TLS_HANDSHAKE", "TLS handshake failure";
}

impl CloseCode {
    /// The numeric code.
    #[must_use]
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether the code may appear in a close frame: 1000-1003, 1007-1014 and
    /// 3000-4999 (RFC 6455 §7.4 and the IANA registry).
    #[must_use]
    pub const fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "CloseCode({} {name})", self.0),
            None => write!(f, "CloseCode({})", self.0),
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// The longest close reason that fits a control frame (125 - 2 bytes of code).
pub const MAX_REASON_LEN: usize = 123;

/// The payload of a close frame that carried a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, UTF-8, at most [`MAX_REASON_LEN`] bytes.
    pub reason: Utf8Bytes,
}

impl CloseFrame {
    /// A close frame with a code and a reason; the reason is cut at a
    /// character boundary to fit [`MAX_REASON_LEN`].
    pub fn new(code: CloseCode, reason: &str) -> Self {
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self { code, reason: Utf8Bytes::from(&reason[..end]) }
    }

    /// Parses a received close payload. An empty payload means "no status"
    /// (`Ok(None)`); one byte, a code that may not be sent, or a reason that is
    /// not UTF-8 fail the connection.
    pub fn parse(payload: Bytes) -> Result<Option<Self>, ProtocolError> {
        match payload.len() {
            0 => Ok(None),
            1 => Err(ProtocolError::InvalidClosePayload),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_sendable() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason = Utf8Bytes::try_from(payload.slice(2..))?;
                Ok(Some(Self { code, reason }))
            }
        }
    }

    /// Writes the close payload (code then reason).
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.code.0);
        out.extend_from_slice(self.reason.as_bytes());
    }

    /// The encoded payload length.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        2 + self.reason.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes_match_rfc_6455_and_the_registry() {
        let sendable: Vec<u16> = (0..=5000).filter(|&c| CloseCode(c).is_sendable()).collect();
        let expected: Vec<u16> = (1000..=1003).chain(1007..=1014).chain(3000..=4999).collect();
        assert_eq!(sendable, expected);
    }

    #[test]
    fn parse_rejects_bad_payloads() {
        assert_eq!(CloseFrame::parse(Bytes::new()), Ok(None));
        assert_eq!(CloseFrame::parse(Bytes::from_static(&[3])), Err(ProtocolError::InvalidClosePayload));
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03, 0xed])),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03, 0xe8, 0xff])),
            Err(ProtocolError::InvalidUtf8)
        );
        let ok = CloseFrame::parse(Bytes::from_static(b"\x03\xe8bye")).unwrap().unwrap();
        assert_eq!(ok.code, CloseCode::NORMAL);
        assert_eq!(ok.reason.as_str(), "bye");
    }

    #[test]
    fn new_truncates_reason_at_a_char_boundary() {
        let long = "é".repeat(100); // 200 bytes
        let frame = CloseFrame::new(CloseCode::NORMAL, &long);
        assert!(frame.reason.len() <= MAX_REASON_LEN);
        assert_eq!(frame.reason.len() % 2, 0);
    }
}
