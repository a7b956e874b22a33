//! Why the server ends a session: a code from `codes::disconnect` and a reason.

use std::fmt;

use peregrine_wire::codes::disconnect as code;
use peregrine_wire::{Push, codes};

/// The server is ending a session. The code is also the WebSocket close code (except for
/// shutdown, which closes with 1001 "going away" as browsers and proxies expect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// A code from [`codes::disconnect`].
    pub code: u16,
    /// Human-readable reason, sent to the client (at most 123 bytes in the close frame).
    pub reason: String,
}

impl Disconnect {
    /// A disconnect with `code` and `reason`.
    pub fn new(code: u16, reason: impl Into<String>) -> Disconnect {
        Disconnect { code, reason: reason.into() }
    }

    /// Server shutting down: reconnect (to another node, or this one once it is back).
    pub fn shutdown() -> Disconnect {
        Disconnect::new(code::SHUTDOWN, "server shutting down, reconnect")
    }

    /// The client's outbound queue overflowed.
    pub fn slow() -> Disconnect {
        Disconnect::new(code::SLOW, "slow consumer: outbound queue full, reconnect and recover")
    }

    /// The client did not answer the server's WebSocket ping within `client.pong_timeout`.
    pub fn no_pong() -> Disconnect {
        Disconnect::new(code::NO_PONG, "no pong: the connection did not answer a ping in time, reconnect")
    }

    /// The client sent something the server cannot parse.
    pub fn bad_request(reason: impl Into<String>) -> Disconnect {
        Disconnect::new(code::BAD_REQUEST, reason)
    }

    /// Whether the client should reconnect after this.
    pub fn reconnect(&self) -> bool {
        codes::reconnect(self.code)
    }

    /// The push telling the client, sent before the close frame.
    pub fn push(&self) -> Push {
        Push::disconnect(self.code, self.reason.clone())
    }

    /// The WebSocket close code: 1001 for shutdown, the disconnect code otherwise.
    pub fn close_code(&self) -> u16 {
        if self.code == code::SHUTDOWN { 1001 } else { self.code }
    }

    /// The close frame's reason: the reason cut to fit a close frame (123 bytes), on a
    /// character boundary.
    pub fn close_reason(&self) -> &str {
        let mut end = self.reason.len().min(123);
        while !self.reason.is_char_boundary(end) {
            end -= 1;
        }
        &self.reason[..end]
    }
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}
