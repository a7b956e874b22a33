//! [`WebSocket`]: a message stream and sink over any async transport.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use peregrine_proto::extension::DeflateParams;
use peregrine_proto::{CloseCode, DataKind, Event, Message, Role};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Config;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::split::{WebSocketReader, WebSocketWriter, split};

/// A WebSocket connection after the opening handshake.
///
/// Read with [`WebSocket::recv`] (or as a [`Stream`] of messages), write with
/// [`WebSocket::send`] (or as a [`Sink`]). Pings are answered, the close
/// handshake is completed and protocol violations are closed with the right
/// code for you; control messages are still surfaced so you can observe them.
///
/// ```
/// # async fn echo(mut ws: peregrine::WebSocket<tokio::net::TcpStream>) -> peregrine::Result<()> {
/// while let Some(message) = ws.recv().await {
///     let message = message?;
///     if message.is_data() {
///         ws.send(message).await?;
///     }
/// }
/// # Ok(()) }
/// ```
///
/// For throughput, queue replies with [`WebSocket::feed`] and flush once no
/// more input is buffered ([`WebSocket::try_recv`] returns `None`): many
/// replies then leave in one vectored write.
#[derive(Debug)]
pub struct WebSocket<S> {
    driver: Driver<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a transport on which the opening handshake is already done.
    /// `leftover` holds bytes read past the handshake (the first frames).
    pub fn from_raw(io: S, role: Role, config: &Config, leftover: &[u8]) -> Self {
        Self::from_negotiated(io, role, config, leftover, None)
    }

    /// Like [`WebSocket::from_raw`], with permessage-deflate in force as
    /// negotiated (see [`DeflateConfig`](peregrine_proto::extension::DeflateConfig)).
    pub fn from_negotiated(
        io: S,
        role: Role,
        config: &Config,
        leftover: &[u8],
        deflate: Option<DeflateParams>,
    ) -> Self {
        let mut driver = Driver::new(io, role, config, deflate);
        driver.prime(leftover);
        Self { driver }
    }

    /// Whether permessage-deflate was negotiated.
    pub fn is_compressed(&self) -> bool {
        self.driver.conn.is_compressed()
    }

    /// Queues a message that is never compressed (already-compressed data),
    /// then flushes.
    pub async fn send_uncompressed(&mut self, message: Message) -> Result<()> {
        poll_fn(|cx| self.driver.poll_ready(cx.waker())).await?;
        self.driver.start_send_uncompressed(message)?;
        self.flush().await
    }

    /// The next message; `None` once the connection has ended.
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// A message decoded from bytes already received, without waiting.
    pub fn try_recv(&mut self) -> Option<Result<Message>> {
        self.driver.try_next_event().map(|event| event.map(message_of))
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        let waker = cx.waker();
        let event = ready!(self.driver.poll_next_event(waker, waker));
        Poll::Ready(event.map(|event| event.map(message_of)))
    }

    /// Sends a message and flushes it.
    pub async fn send(&mut self, message: Message) -> Result<()> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queues a message without flushing; waits only while the write buffer
    /// is over its high-water mark.
    pub async fn feed(&mut self, message: Message) -> Result<()> {
        poll_fn(|cx| self.driver.poll_ready(cx.waker())).await?;
        self.driver.start_send(message)
    }

    /// Writes out everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| self.driver.poll_flush(cx.waker())).await
    }

    /// Closes the connection: sends a close frame, waits (up to the close
    /// timeout) for the peer's, discarding messages that arrive meanwhile,
    /// and ends the TCP connection.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.driver.start_close(code, reason)?;
        // Receiving writes the close frame out, waits for the peer's, and ends
        // TCP, all bounded by the close timeout.
        let mut outcome = Ok(());
        while let Some(event) = self.recv().await {
            if let Err(error @ (Error::Timeout(_) | Error::Io(_))) = event
                && outcome.is_ok()
            {
                outcome = Err(error);
            }
        }
        outcome
    }

    /// Switches to frame-level reading and writing, for messages too large
    /// to hold whole.
    pub fn into_frames(mut self) -> Frames<S> {
        self.driver.conn.set_assemble_messages(false);
        Frames { driver: self.driver }
    }

    /// Splits into a read half and a write half that can be used from
    /// different tasks. Keepalive and pong replies run in the read half, so
    /// keep reading.
    pub fn split(self) -> (WebSocketReader<S>, WebSocketWriter<S>) {
        split(self.driver)
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        self.driver.get_ref()
    }
}

pub(crate) fn message_of(event: Event) -> Message {
    match event {
        Event::Message(message) => message,
        // Assembly is only turned off by `into_frames`, which leaves the
        // message-level types (this one and the split halves).
        Event::Fragment(fragment) => Message::Binary(fragment.payload),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().driver.poll_ready(cx.waker())
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<()> {
        self.get_mut().driver.start_send(item)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().driver.poll_flush(cx.waker())
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().driver.poll_close_send(cx.waker())
    }
}

/// Frame-level access to a connection ([`WebSocket::into_frames`]): data
/// frames arrive one by one as [`Event::Fragment`] (control frames as
/// [`Event::Message`]), and messages can be sent in pieces.
///
/// ```
/// # async fn stream(ws: peregrine::WebSocket<tokio::net::TcpStream>) -> peregrine::Result<()> {
/// use peregrine::proto::{DataKind, Event};
/// let mut frames = ws.into_frames();
/// for chunk in [&b"part one, "[..], b"part two"] {
///     frames.send_fragment(DataKind::Binary, chunk.to_vec().into(), false).await?;
/// }
/// frames.send_fragment(DataKind::Binary, bytes::Bytes::new(), true).await?;
/// while let Some(event) = frames.recv().await {
///     if let Event::Fragment(f) = event? { println!("{} bytes, last: {}", f.payload.len(), f.fin); }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Frames<S> {
    driver: Driver<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Frames<S> {
    /// The next frame event; `None` once the connection has ended.
    pub async fn recv(&mut self) -> Option<Result<Event>> {
        poll_fn(|cx| self.driver.poll_next_event(cx.waker(), cx.waker())).await
    }

    /// Sends one frame of a message and flushes it (`fin` ends the message).
    pub async fn send_fragment(&mut self, kind: DataKind, payload: Bytes, fin: bool) -> Result<()> {
        poll_fn(|cx| self.driver.poll_ready(cx.waker())).await?;
        self.driver.send_fragment(kind, payload, fin)?;
        poll_fn(|cx| self.driver.poll_flush(cx.waker())).await
    }

    /// Sends a whole message (or a control frame) and flushes it.
    pub async fn send(&mut self, message: Message) -> Result<()> {
        poll_fn(|cx| self.driver.poll_ready(cx.waker())).await?;
        self.driver.start_send(message)?;
        poll_fn(|cx| self.driver.poll_flush(cx.waker())).await
    }
}
