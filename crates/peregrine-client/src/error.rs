//! What can go wrong for a caller of the SDK.

use std::fmt;

/// An error returned by a [`Client`](crate::Client) call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The server answered the command with an error (codes in
    /// [`peregrine_wire::codes::error`]).
    Server {
        /// Error code.
        code: u32,
        /// The server's message.
        message: String,
    },
    /// The offline queue already holds [`ClientBuilder::queue_limit`](crate::ClientBuilder::queue_limit)
    /// publishes that are not yet acknowledged; this one was not queued.
    QueueFull {
        /// The configured limit.
        limit: usize,
    },
    /// No reply came in time (after every retry, for publishes).
    Timeout,
    /// The client was closed, by [`Client::close`](crate::Client::close) or because the
    /// server refused it for good (an invalid token, a terminal disconnect code).
    Closed {
        /// Why.
        reason: String,
    },
    /// The publication would make a frame larger than the server accepts; it was not queued.
    TooLarge {
        /// Estimated encoded size, bytes.
        size: usize,
        /// The limit ([`peregrine::Limits::max_message_size`], at most 64 KiB).
        limit: usize,
    },
    /// The channel is already subscribed by this client.
    AlreadySubscribed {
        /// The channel.
        channel: String,
    },
    /// The offline queue file could not be read or written.
    Queue {
        /// What failed, with the path.
        message: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Server { code, message } => write!(f, "server error {code}: {message}"),
            Error::QueueFull { limit } => write!(
                f,
                "the offline queue is full ({limit} publishes wait for an acknowledgement); \
                 wait for some to complete or raise ClientBuilder::queue_limit"
            ),
            Error::Timeout => f.write_str("no reply from the server in time"),
            Error::Closed { reason } => write!(f, "the client is closed: {reason}"),
            Error::TooLarge { size, limit } => {
                write!(f, "the publication is too large ({size} bytes encoded, the limit is {limit})")
            }
            Error::AlreadySubscribed { channel } => write!(f, "already subscribed to {channel:?}"),
            Error::Queue { message } => write!(f, "offline queue file: {message}"),
        }
    }
}

impl std::error::Error for Error {}
