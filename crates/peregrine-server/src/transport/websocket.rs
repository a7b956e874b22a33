//! The WebSocket transport: runs one [`Session`] over an upgraded WebSocket.
//!
//! Two tasks per connection. The **reader** (the connection's own task) decodes frames and
//! feeds the session; it also enforces the connect timeout and credential expiry and applies
//! server-side unsubscribes. The **writer** drains the session's outbox, a batch at a time, in
//! one vectored write; when the node asks the session to disconnect (slow consumer, shutdown,
//! API), it sends a `disconnect` push and a close frame with the code, or, for a slow consumer
//! whose socket is clogged anyway, just the close frame.
//!
//! Dead connections are found by the WebSocket keepalive of the `peregrine` crate (a ping
//! after `client.ping_interval` of silence, closed after `client.pong_timeout`); browsers,
//! which cannot send WebSocket pings, send `ping` commands to check the server.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use peregrine::upgrade::UpgradedWebSocket;
use peregrine::{CloseCode, Message, Utf8Bytes, WebSocketReader, WebSocketWriter};
use peregrine_wire::codes::disconnect as dc;
use peregrine_wire::{Encoding, ServerMessage, encode_server_messages};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::disconnect::Disconnect;
use crate::node::{Node, SessionControl};
use crate::outbox::{Frame, Queued};
use crate::session::{Identity, Session};

/// Most bytes taken from the outbox for one write.
const WRITE_BATCH: usize = 256 << 10;

/// How long a closing connection may take to answer the close frame before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

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
) -> impl Future<Output = ()> + Send {
    let (reader, writer) = socket.split();
    serve_split(node, reader, writer, encoding, identity)
}

async fn serve_split<S>(
    node: Arc<Node>,
    mut reader: WebSocketReader<S>,
    mut writer: WebSocketWriter<S>,
    encoding: Encoding,
    identity: Option<Identity>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (id, control) = match node.register() {
        Ok(registered) => registered,
        Err(d) => {
            let _ = tokio::time::timeout(CLOSE_GRACE, Box::pin(close_with(&mut writer, &d, encoding, true)))
                .await;
            return;
        }
    };
    let metrics_node = Arc::clone(&node);
    let writer_control = Arc::clone(&control);
    let writer_task =
        tokio::spawn(async move { write_loop(writer, writer_control, metrics_node, encoding).await });
    let mut session = Session::new(Arc::clone(&node), id, Arc::clone(&control), encoding, identity);
    read_loop(&mut reader, &mut session, &control, &node).await;
    // The writer ends once the outbox is closed and drained, or after its close frame.
    control.outbox.close();
    let deadline = if control.requested_disconnect().is_some() { CLOSE_GRACE * 2 } else { CLOSE_GRACE };
    let writer_task_abort = writer_task.abort_handle();
    if Box::pin(tokio::time::timeout(deadline, writer_task)).await.is_err() {
        writer_task_abort.abort();
    }
    match control.requested_disconnect() {
        Some(d) if d.code == dc::SLOW => {
            tracing::info!(client = session.client_id(), "slow consumer disconnected: outbound queue full");
            node.metrics().slow_disconnects.inc();
            node.metrics().count_disconnect(d.code);
        }
        Some(d) => {
            tracing::debug!(client = session.client_id(), code = d.code, reason = %d.reason, "disconnected");
            node.metrics().count_disconnect(d.code);
        }
        None => tracing::debug!(client = session.client_id(), "connection ended by the client"),
    }
    // Boxed, like every rarely taken await here: a future is as large as its largest
    // state, and this one stays alive for every idle connection.
    Box::pin(session.close()).await;
}

async fn read_loop<S>(
    reader: &mut WebSocketReader<S>,
    session: &mut Session,
    control: &SessionControl,
    node: &Node,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = node.metrics();
    let connect_deadline = tokio::time::sleep(node.config().client.connect_timeout);
    tokio::pin!(connect_deadline);
    let mut disconnecting: Option<tokio::time::Instant> = None;
    loop {
        let expiry = session.expires_in().unwrap_or(Duration::from_secs(86_400 * 365));
        let grace_over = async {
            match disconnecting {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = reader.recv() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(peregrine::Error::Timeout(peregrine::TimeoutKind::Keepalive))) => {
                        // Reading is over; the writer still sends the push and the close frame.
                        control.disconnect(Disconnect::no_pong());
                        return;
                    }
                    _ => return,
                };
                if disconnecting.is_some() {
                    continue;
                }
                let payload = match &message {
                    Message::Text(text) => text.as_bytes(),
                    Message::Binary(data) => &data[..],
                    _ => continue,
                };
                metrics.messages_in.inc();
                metrics.bytes_in.inc_by(payload.len() as u64);
                // Boxed: the command futures are large and only live while a frame is
                // handled, so an idle connection's task stays small.
                if let Err(d) = Box::pin(session.handle_frame(payload)).await {
                    control.disconnect(d);
                }
            }
            _ = &mut connect_deadline, if !session.is_connected() && disconnecting.is_none() => {
                control.disconnect(Disconnect::new(dc::STALE, "no connect command in time"));
            }
            _ = tokio::time::sleep(expiry), if session.expires_in().is_some() && disconnecting.is_none() => {
                if let Err(d) = Box::pin(session.expire()).await {
                    control.disconnect(d);
                }
            }
            // A recovery too big for its reply goes out a page at a time, as the socket
            // takes it.
            _ = control.outbox.drained_to(session.stream_low_water()), if session.is_streaming() && disconnecting.is_none() => {
                if let Err(d) = Box::pin(session.stream_recovery()).await {
                    control.disconnect(d);
                }
            }
            _ = control.notified(), if disconnecting.is_none() => {
                if let Err(d) = Box::pin(session.apply_unsubscribes()).await {
                    control.disconnect(d);
                }
            }
            _ = grace_over => return,
        }
        if disconnecting.is_none() && control.requested_disconnect().is_some() {
            // Keep reading (the peer's close reply ends the loop), but not forever.
            disconnecting = Some(tokio::time::Instant::now() + CLOSE_GRACE);
        }
    }
}

async fn write_loop<S>(
    mut writer: WebSocketWriter<S>,
    control: Arc<SessionControl>,
    node: Arc<Node>,
    encoding: Encoding,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = node.metrics();
    let outbox = &control.outbox;
    let mut batch: Vec<Queued> = Vec::new();
    loop {
        if control.requested_disconnect().is_some() {
            break;
        }
        tokio::select! {
            biased;
            _ = control.writer_notified() => continue,
            _ = outbox.ready() => {}
        }
        if outbox.is_overflowed() {
            control.disconnect(Disconnect::slow());
            break;
        }
        batch.clear();
        outbox.drain_queued(&mut batch, WRITE_BATCH);
        if batch.is_empty() {
            if outbox.is_closed() {
                return;
            }
            continue;
        }
        let written = async {
            for queued in &batch {
                writer.feed(message_of(&queued.frame, encoding)).await?;
            }
            writer.flush().await
        };
        tokio::select! {
            biased;
            // A clogged socket must not keep a disconnect (slow consumer, shutdown) waiting.
            _ = control.writer_notified() => if control.requested_disconnect().is_some() { break },
            result = written => {
                if result.is_err() {
                    return;
                }
                let now = std::time::Instant::now();
                for queued in &batch {
                    metrics.messages_out.inc();
                    metrics.bytes_out.inc_by(queued.frame.len() as u64);
                    if let Some(published) = queued.published {
                        metrics.observe_delivery(now.duration_since(published));
                    }
                }
            }
        }
    }
    if let Some(d) = control.requested_disconnect() {
        let clogged = d.code == dc::SLOW;
        let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, close_with(&mut writer, &d, encoding, !clogged)))
            .await;
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
