//! Transports: how sessions reach clients. Each is a small adapter to the one session loop
//! ([`crate::session::run`]), which owns everything a connection lives through (connect
//! deadline, token expiry, server-side unsubscribes, streamed recoveries, slow consumers,
//! disconnects, metrics): a transport only moves messages.
//!
//! * [`Inbound`]: the client's messages (each a batch of commands in the session's wire
//!   encoding), one at a time, until the client goes away.
//! * [`Outbound`]: writes a batch of queued frames, and ends the connection with a
//!   [`Disconnect`] (a `disconnect` push when the transport can still carry one, then the
//!   transport's own close).
//!
//! [`websocket`] is the main transport; [`stream`] (Server-Sent Events, HTTP streaming)
//! and [`long_poll`] serve clients a WebSocket cannot reach, with [`http`] routing their
//! commands to their sessions.

pub mod http;
pub mod long_poll;
pub mod stream;
pub mod websocket;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use crate::disconnect::Disconnect;
use crate::outbox::{DirectWrite, Queued};

/// What the client sent.
#[derive(Debug)]
pub enum Received {
    /// One message: a batch of commands.
    Message(Bytes),
    /// The client went away (closed, reset, timed out at the transport's level).
    Gone,
    /// The transport found the client dead and says how to end the session (e.g. a
    /// WebSocket keepalive ping without a pong): the writer still says goodbye.
    Dead(Disconnect),
}

/// The client-to-server half of a transport.
pub trait Inbound: Send {
    /// The next message from the client.
    fn recv(&mut self) -> impl Future<Output = Received> + Send;

    /// `connect` succeeded as `user` (empty: anonymous). The HTTP transports bind the
    /// session's later requests to that user's credentials.
    fn connected(&mut self, _user: &str) {}
}

/// The server-to-client half of a transport. It runs in a task of its own.
pub trait Outbound: Send + 'static {
    /// Writes `batch` (in order) and flushes; an error means the client is gone.
    fn send(&mut self, batch: &[Queued]) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Ends the connection: the `disconnect` push first when `push`, then the transport's
    /// close (a WebSocket close frame with the code).
    fn close(&mut self, disconnect: &Disconnect, push: bool) -> impl Future<Output = ()> + Send;

    /// A way for pushes to write a frame at once while this half is idle, if the transport
    /// has one (see [`DirectWrite`]).
    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        None
    }
}

/// Which transport a session runs on (the `transport` label of the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `/connection/websocket`.
    WebSocket,
    /// `/connection/sse`.
    Sse,
    /// `/connection/stream`.
    HttpStream,
    /// `/connection/poll`.
    LongPoll,
}

impl Transport {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Sse => "sse",
            Transport::HttpStream => "http_stream",
            Transport::LongPoll => "long_poll",
        }
    }
}
