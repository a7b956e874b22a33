//! The WebSocket transport: the session loop ([`crate::session::run`]) over an upgraded
//! WebSocket. The reader half yields each text or binary message; the writer half writes a
//! batch of frames in one vectored write and closes with a close frame carrying the
//! disconnect code.
//!
//! Dead connections are found by the WebSocket keepalive of the `peregrine` crate (a ping
//! after `client.ping_interval` of silence, closed after `client.pong_timeout`); browsers,
//! which cannot send WebSocket pings, send `ping` commands to check the server.

use std::sync::Arc;

use std::time::Instant;

use bytes::Bytes;
use peregrine::{
    CloseCode, DirectSender, Message, TrySend, Utf8Bytes, WebSocket, WebSocketReader, WebSocketWriter,
};
use peregrine_wire::{Encoding, ServerMessage, encode_server_messages};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::admission::Ticket;
use crate::disconnect::Disconnect;
use crate::node::Node;
use crate::outbox::{Direct, DirectWrite, Frame, Queued};
use crate::session::{Identity, run};
use crate::transport::{Inbound, Outbound, Received, Transport};

/// The `peregrine` crate's settings for a client connection under `node`'s config.
pub fn socket_config(node: &Node) -> peregrine::Config {
    let client = &node.config().client;
    let limits = peregrine::Limits::default()
        .max_frame_size(client.max_message_size)
        .max_message_size(client.max_message_size);
    peregrine::Config::default()
        .limits(limits)
        .ping_interval(Some(client.ping_interval))
        .ping_timeout(client.pong_timeout)
        // The session says why itself: a disconnect push and a close frame with 3012.
        .close_on_keepalive_timeout(false)
}

/// Serves one client until it goes away or is disconnected.
///
/// Not an `async fn`: the socket is split before the future is built, so the future (alive
/// as long as the connection, in the task the upgrade spawned) holds two pointers instead of
/// a whole WebSocket.
pub fn serve<S>(
    node: Arc<Node>,
    socket: WebSocket<S>,
    encoding: Encoding,
    identity: Option<Identity>,
    ticket: Ticket,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (reader, writer) = socket.split();
    let outbound = WebSocketOutbound { writer, encoding, node: Arc::clone(&node) };
    run(node, WebSocketInbound(reader), outbound, encoding, identity, ticket, Transport::WebSocket)
}

/// The reader half as the session's [`Inbound`].
struct WebSocketInbound<S>(WebSocketReader<S>);

impl<S> Inbound for WebSocketInbound<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn recv(&mut self) -> Received {
        loop {
            return match self.0.recv().await {
                Some(Ok(Message::Text(text))) => Received::Message(text.into_bytes()),
                Some(Ok(Message::Binary(data))) => Received::Message(data),
                Some(Ok(_)) => continue, // pings and pongs are the library's business
                Some(Err(peregrine::Error::Timeout(peregrine::TimeoutKind::Keepalive))) => {
                    Received::Dead(Disconnect::no_pong())
                }
                _ => Received::Gone,
            };
        }
    }
}

/// The writer half as the session's [`Outbound`].
struct WebSocketOutbound<S> {
    writer: WebSocketWriter<S>,
    encoding: Encoding,
    node: Arc<Node>,
}

impl<S> Outbound for WebSocketOutbound<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn send(&mut self, batch: &[Queued]) -> std::io::Result<()> {
        if self.encoding == Encoding::Json && batch.len() > 1 {
            for message in coalesce_json(batch) {
                self.writer.feed(message).await.map_err(std::io::Error::other)?;
            }
        } else {
            for queued in batch {
                let message = message_of(&queued.frame, self.encoding);
                self.writer.feed(message).await.map_err(std::io::Error::other)?;
            }
        }
        self.writer.flush().await.map_err(std::io::Error::other)?;
        // Most connections then wait a long time for the next publication: an idle one
        // keeps no buffer (a few hundred bytes each, at 10,000s of connections).
        self.writer.release_idle_buffers();
        Ok(())
    }

    async fn close(&mut self, d: &Disconnect, push: bool) {
        close_with(&mut self.writer, d, self.encoding, push).await
    }

    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        let sender = self.writer.direct_sender();
        Some(Arc::new(WebSocketDirect { sender, encoding: self.encoding, node: Arc::clone(&self.node) }))
    }
}

/// Writes a frame into the socket from the pushing task (the hub's fan-out) while the
/// writer task is idle: see [`crate::outbox`].
struct WebSocketDirect<S> {
    sender: DirectSender<S>,
    encoding: Encoding,
    node: Arc<Node>,
}

impl<S> std::fmt::Debug for WebSocketDirect<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketDirect").field("encoding", &self.encoding).finish_non_exhaustive()
    }
}

impl<S> DirectWrite for WebSocketDirect<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn write_now(&self, frame: &Frame, published: Option<Instant>) -> Direct {
        let direct = match self.sender.try_send(message_of(frame, self.encoding)) {
            Ok(TrySend::Busy(_)) => return Direct::Refused,
            Ok(TrySend::Sent) => Direct::Written,
            Ok(TrySend::Buffered) => Direct::Taken,
            // The writer's flush meets the same error and ends the session.
            Err(_) => return Direct::Taken,
        };
        let metrics = self.node.metrics();
        metrics.messages_out.inc();
        metrics.bytes_out.inc_by(frame.len() as u64);
        if let Some(published) = published {
            metrics.observe_delivery(published.elapsed());
        }
        direct
    }
}

/// Sends the disconnect push (when `push`), then the close frame.
async fn close_with<S>(writer: &mut WebSocketWriter<S>, d: &Disconnect, encoding: Encoding, push: bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if push {
        let frame = Frame::from(encode_server_messages(&[ServerMessage::Push(d.push())], encoding));
        let _ = writer.feed(message_of(&frame, encoding)).await;
    }
    let _ = writer.close(CloseCode::from(d.close_code()), d.close_reason()).await;
}

/// A coalesced JSON message stays under this many bytes (a bigger frame goes alone).
const COALESCE_BYTES: usize = 64 << 10;

/// The frames of a JSON batch joined into as few text messages as the protocol allows
/// (at most `MAX_BATCH` messages and [`COALESCE_BYTES`] each): a browser pays its
/// per-message cost (an event dispatch, about 100 µs in Chromium) once per WebSocket
/// message, and the SDKs parse a joined frame as one.
fn coalesce_json(batch: &[Queued]) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut joined = bytes::BytesMut::new();
    let mut lines = 0;
    let finish = |joined: &mut bytes::BytesMut, messages: &mut Vec<Message>| {
        if !joined.is_empty() {
            let bytes = joined.split().freeze();
            messages.push(Utf8Bytes::try_from(bytes).map_or(Message::Binary(Bytes::new()), Message::Text));
        }
    };
    for queued in batch {
        let frame = &queued.frame;
        if frame.len() >= COALESCE_BYTES {
            finish(&mut joined, &mut messages);
            lines = 0;
            messages.push(message_of(frame, Encoding::Json));
            continue;
        }
        // An upper bound of the messages in the frame: one per line.
        let frame_lines = frame.iter().filter(|&&b| b == b'\n').count() + 1;
        if !joined.is_empty()
            && (joined.len() + 1 + frame.len() > COALESCE_BYTES
                || lines + frame_lines > peregrine_wire::MAX_BATCH)
        {
            finish(&mut joined, &mut messages);
            lines = 0;
        }
        if !joined.is_empty() {
            joined.extend_from_slice(b"\n");
        }
        joined.extend_from_slice(frame);
        lines += frame_lines;
    }
    finish(&mut joined, &mut messages);
    messages
}

fn message_of(frame: &Frame, encoding: Encoding) -> Message {
    let bytes = Bytes::from_owner(Arc::clone(frame));
    if encoding.is_text() {
        // Our JSON encoder writes UTF-8; the check is one fast pass over bytes in cache.
        match Utf8Bytes::try_from(bytes) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(Bytes::new()),
        }
    } else {
        Message::Binary(bytes)
    }
}

/// Counts a refused handshake by reason.
pub fn count_rejection(node: &Node, reason: &str) {
    node.metrics().count_rejection(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one idle connection's two tasks hold, in bytes: printed by the test for the
    /// memory breakdown in docs/benchmarks.md.
    fn session_future_sizes() -> (usize, usize) {
        let node = Node::new(crate::config::Config::development()).expect("development config");
        let ticket = node.admit(None, None, None).expect("admitted");
        let config = peregrine::Config::default();
        let (ours, _theirs) = tokio::io::duplex(64);
        let socket = WebSocket::from_raw(ours, peregrine::Role::Server, &config, &[]);
        let reader = std::mem::size_of_val(&serve(Arc::clone(&node), socket, Encoding::Json, None, ticket));
        let (_, writer) =
            WebSocket::from_raw(tokio::io::duplex(64).0, peregrine::Role::Server, &config, &[]).split();
        let outbound = WebSocketOutbound { writer, encoding: Encoding::Json, node: Arc::clone(&node) };
        let (_, control) = node.register().expect("registered");
        let writer = crate::session::writer_future_size(outbound, control, node);
        (reader, writer)
    }

    /// Every idle connection holds both futures, in tasks tokio rounds up to 128 bytes: at
    /// 19,000 connections, each 128 bytes more is 2.4 MB. They were 864 and 240 bytes when
    /// the bound was set (docs/benchmarks.md, "Where the bytes of a subscribed connection
    /// go"); a big local held across an await, or a second timer, goes past it.
    #[tokio::test]
    async fn an_idle_connection_holds_small_futures() {
        let (reader, writer) = session_future_sizes();
        eprintln!("session reader future: {reader} bytes, writer future: {writer} bytes");
        assert!(reader <= 1024, "the session's reader future grew to {reader} bytes");
        assert!(writer <= 320, "the session's writer future grew to {writer} bytes");
    }
}
