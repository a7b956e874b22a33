//! Errors of the protocol core. Every error knows how it ends the connection:
//! a [`ProtocolError`] maps to the close code we send, a [`HandshakeError`] to
//! the HTTP status a server answers with.

use std::fmt;

use crate::close::CloseCode;

/// A violation of RFC 6455 (or of our limits) by the peer, detected while
/// reading frames. The connection is failed with [`ProtocolError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An opcode in 0x3-0x7 or 0xB-0xF.
    ReservedOpcode(u8),
    /// RSV1, RSV2 or RSV3 set while no extension that defines them was negotiated.
    ReservedBits,
    /// A client sent an unmasked frame (RFC 6455 §5.1).
    UnmaskedFrame,
    /// A server sent a masked frame (RFC 6455 §5.1).
    MaskedFrame,
    /// A control frame with a payload over 125 bytes.
    ControlFrameTooLong,
    /// A control frame without FIN.
    FragmentedControlFrame,
    /// A 64-bit payload length with the most significant bit set.
    InvalidLength,
    /// A continuation frame with no message to continue.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is unfinished.
    ExpectedContinuation,
    /// Text (or a close reason) that is not valid UTF-8.
    InvalidUtf8,
    /// A close frame whose payload is a single byte.
    InvalidClosePayload,
    /// A close code that may not be sent on the wire.
    InvalidCloseCode(u16),
    /// A frame over [`Limits::max_frame_size`](crate::Limits).
    FrameTooLarge { size: u64, limit: usize },
    /// A message over [`Limits::max_message_size`](crate::Limits).
    MessageTooLarge { size: u64, limit: usize },
    /// Data arrived after the peer's close frame.
    DataAfterClose,
    /// The compressed payload could not be inflated.
    InvalidCompressedData,
}

impl ProtocolError {
    /// The close code this violation is answered with.
    #[must_use]
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooLarge { .. } | Self::MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            Self::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            Self::ReservedBits => f.write_str("reserved bits set without a negotiated extension"),
            Self::UnmaskedFrame => f.write_str("client frame is not masked"),
            Self::MaskedFrame => f.write_str("server frame is masked"),
            Self::ControlFrameTooLong => f.write_str("control frame payload over 125 bytes"),
            Self::FragmentedControlFrame => f.write_str("fragmented control frame"),
            Self::InvalidLength => f.write_str("64-bit payload length has its most significant bit set"),
            Self::UnexpectedContinuation => f.write_str("continuation frame without a message to continue"),
            Self::ExpectedContinuation => f.write_str("new data frame inside a fragmented message"),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8 in text"),
            Self::InvalidClosePayload => f.write_str("close frame payload of one byte"),
            Self::InvalidCloseCode(code) => write!(f, "close code {code} may not be sent"),
            Self::FrameTooLarge { size, limit } => {
                write!(f, "frame of {size} bytes exceeds the limit of {limit} bytes")
            }
            Self::MessageTooLarge { size, limit } => {
                write!(f, "message of at least {size} bytes exceeds the limit of {limit} bytes")
            }
            Self::DataAfterClose => f.write_str("data received after the close frame"),
            Self::InvalidCompressedData => f.write_str("compressed payload could not be inflated"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// A local misuse of the [`Connection`](crate::Connection) API (not the peer's fault).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The close handshake has started: no data frame may be sent any more.
    Closed,
    /// A control frame payload over 125 bytes.
    ControlFrameTooLong,
    /// A close code that may not be sent on the wire (1005, 1006, 1015, reserved ranges).
    InvalidCloseCode(u16),
    /// A data message was started while a fragmented one is unfinished, or a
    /// continuation was sent with nothing to continue.
    FragmentationState,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the connection is closing or closed"),
            Self::ControlFrameTooLong => f.write_str("control frame payload over 125 bytes"),
            Self::InvalidCloseCode(code) => write!(f, "close code {code} may not be sent"),
            Self::FragmentationState => {
                f.write_str("fragmented message out of order (unfinished message, or nothing to continue)")
            }
        }
    }
}

impl std::error::Error for SendError {}
