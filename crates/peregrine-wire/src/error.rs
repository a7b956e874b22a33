//! Decoding errors.

use std::fmt;

/// Why a frame could not be decoded. Decoding never panics; every failure is one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The frame holds no message at all.
    Empty,
    /// The frame holds more than `max` messages; nothing beyond the bound was decoded.
    TooMany {
        /// The bound that was exceeded.
        max: usize,
    },
    /// A MessagePack frame is not an array of messages.
    NotAnArray {
        /// What the decoder reported.
        message: String,
    },
    /// The message at `index` (0-based) is malformed or not a valid message.
    Message {
        /// Position of the message in the frame.
        index: usize,
        /// What is wrong, e.g. ``unknown field `frob`, expected one of `connect`, ...``.
        message: String,
    },
    /// Bytes remain after the MessagePack array.
    TrailingBytes {
        /// How many bytes remain.
        count: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Empty => f.write_str("frame contains no message"),
            WireError::TooMany { max } => write!(f, "frame contains more than {max} messages"),
            WireError::NotAnArray { message } => {
                write!(f, "msgpack frame must be an array of messages: {message}")
            }
            WireError::Message { index, message } => write!(f, "message {index}: {message}"),
            WireError::TrailingBytes { count } => {
                write!(f, "{count} trailing bytes after the msgpack array")
            }
        }
    }
}

impl std::error::Error for WireError {}
