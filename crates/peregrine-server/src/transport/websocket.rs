//! The WebSocket transport: the session loop ([`crate::session::run`]) over an upgraded
//! WebSocket. The reader half yields each text or binary message; the writer half writes a
//! batch of frames in one vectored write and closes with a close frame carrying the
//! disconnect code.
//!
//! Dead connections are found by the WebSocket keepalive of the `peregrine` crate (a ping
//! after `client.ping_interval` of silence, closed after `client.pong_timeout`); browsers,
//! which cannot send WebSocket pings, send `ping` commands to check the server.

use std::sync::Arc;

use bytes::Bytes;
use peregrine::upgrade::UpgradedWebSocket;
use peregrine::{CloseCode, Message, Utf8Bytes, WebSocketReader, WebSocketWriter};
use peregrine_wire::{Encoding, ServerMessage, encode_server_messages};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::admission::Ticket;
use crate::disconnect::Disconnect;
use crate::node::Node;
use crate::outbox::{Frame, Queued};
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
pub fn serve(
    node: Arc<Node>,
    socket: UpgradedWebSocket,
    encoding: Encoding,
    identity: Option<Identity>,
    ticket: Ticket,
) -> impl Future<Output = ()> + Send {
    let (reader, writer) = socket.split();
    let outbound = WebSocketOutbound { writer, encoding };
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
}

impl<S> Outbound for WebSocketOutbound<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn send(&mut self, batch: &[Queued]) -> std::io::Result<()> {
        for queued in batch {
            self.writer
                .feed(message_of(&queued.frame, self.encoding))
                .await
                .map_err(std::io::Error::other)?;
        }
        self.writer.flush().await.map_err(std::io::Error::other)
    }

    async fn close(&mut self, d: &Disconnect, push: bool) {
        close_with(&mut self.writer, d, self.encoding, push).await
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
