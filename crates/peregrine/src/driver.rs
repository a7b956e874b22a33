//! The glue between a transport and a [`Connection`]: read into its buffer,
//! take events, write out its output. Everything here is poll-based so the
//! whole and the split socket share it.
//!
//! Wakers are passed explicitly: the read side always polls the transport with
//! the reader's waker, the write side with a waker that the split socket makes
//! wake both halves (the reader also writes pongs and close replies, and a
//! transport keeps only one write waker).

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::Buf;
use peregrine_proto::extension::DeflateParams;
use peregrine_proto::{CloseCode, Connection, Event, Message, Role};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::Config;
use crate::error::{Error, Result, TimeoutKind};
use crate::keepalive::{Keepalive, Tick};

/// Read buffer size after the first byte arrives.
const READ_CHUNK: usize = 8 << 10;
/// A read makes room for all that the frame in progress still needs, so a
/// large frame lands in one allocation (growing the buffer step by step
/// instead cost 25-30% of the 1 MiB echo rate, measured). A declared length
/// alone can make us reserve at most this much, and beyond it at most as
/// much again as has arrived: the peer must send what it makes us hold.
/// Reserved but unwritten memory is address space, not RSS.
const EAGER_READ: usize = 1 << 20;
/// An idle connection holds no read buffer: its reads go to the stack while
/// they are small, and the heap buffer holds only what arrived.
const STACK_READ: usize = 4 << 10;
/// Most bytes taken from the transport in one read, whatever room there is.
/// A large frame still lands in one allocation, but in reads of this size:
/// with reads of up to the whole frame, a 4 x 1 MiB echo ran at 3,940
/// msgs/s and 250 µs of server CPU per message, with reads of at most
/// 128 KiB at 5,374 msgs/s and 180 µs (fastwebsockets 5,332 and 181,
/// tokio-websockets 5,577 and 176; medians of ten interleaved rounds). 64 KiB
/// measured 5,100. Each read's bytes are unmasked at once, while they are
/// still in cache, and the socket is not locked through a megabyte-long copy.
const MAX_READ: usize = 128 << 10;
/// Most slices written in one vectored write.
const MAX_IOVECS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading and writing.
    Open,
    /// Keepalive gave up on the peer and the application closes the connection itself
    /// ([`Config::close_on_keepalive_timeout`] off): nothing more is read, messages and the
    /// close frame are still taken; reading on finishes the connection.
    LastWords,
    /// The close handshake is over or the connection failed: flush, then end TCP.
    Finishing,
    /// Nothing more to do; the stream yields `None`.
    Done,
}

#[derive(Debug)]
pub(crate) struct Driver<S> {
    io: S,
    pub(crate) conn: Connection,
    keepalive: Keepalive,
    stage: Stage,
    close_timeout: std::time::Duration,
    close_on_keepalive_timeout: bool,
    write_high_water: usize,
    /// An error to report once the connection has ended (1006, timeouts).
    final_error: Option<Error>,
    /// An error ending the connection was already returned to the caller.
    error_reported: bool,
    /// The transport reached EOF: the peer ended its side.
    peer_closed: bool,
    /// A write failed and what was pending was dropped; what had already
    /// arrived is being delivered (see `read_after_failed_write`). Sending
    /// fails with this, and the stream ends with it once nothing is left.
    write_failed: Option<io::ErrorKind>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    pub(crate) fn new(io: S, role: Role, config: &Config, deflate: Option<DeflateParams>) -> Self {
        let conn = match deflate {
            Some(params) => Connection::with_deflate(role, config.limits, params),
            None => Connection::with_limits(role, config.limits),
        };
        Self {
            io,
            conn,
            keepalive: Keepalive::new(config.ping_interval, config.ping_timeout),
            stage: Stage::Open,
            close_timeout: config.close_timeout,
            close_on_keepalive_timeout: config.close_on_keepalive_timeout,
            write_high_water: config.write_high_water,
            final_error: None,
            error_reported: false,
            peer_closed: false,
            write_failed: None,
        }
    }

    /// Bytes that arrived with the handshake and belong to the first frames.
    pub(crate) fn prime(&mut self, leftover: &[u8]) {
        if !leftover.is_empty() {
            self.conn.receive(leftover);
            self.keepalive.on_receive();
        }
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.io
    }

    /// Decodes an event from bytes already received, without any I/O.
    pub(crate) fn try_next_event(&mut self) -> Option<Result<Event>> {
        if self.stage != Stage::Open {
            return None;
        }
        match self.conn.next_event()? {
            Ok(event) => Some(Ok(event)),
            Err(e) => {
                self.keepalive.start_close_timer(self.close_timeout);
                Some(Err(Error::Protocol(e)))
            }
        }
    }

    /// The next event: decodes buffered bytes first, and only reads when none
    /// is complete; runs keepalive and the close handshake as it goes.
    pub(crate) fn poll_next_event(&mut self, read: &Waker, write: &Waker) -> Poll<Option<Result<Event>>> {
        loop {
            match self.stage {
                Stage::Done => return Poll::Ready(self.final_error.take().map(Err)),
                Stage::LastWords => {
                    // Reading on means the application has said all it will: close as by
                    // default unless it has closed, then finish.
                    self.close_after_keepalive_timeout();
                    self.stage = Stage::Finishing;
                    continue;
                }
                Stage::Finishing => {
                    ready!(self.poll_finish(read, write));
                    continue;
                }
                Stage::Open => {}
            }
            if let Some(event) = self.try_next_event() {
                // Pongs and close replies go out with the next write; try now
                // without waiting, so a reader alone keeps the peer answered.
                if self.conn.output().has_remaining()
                    && let Poll::Ready(Err(e)) = self.poll_write_output(write)
                {
                    if self.conn.close_received().is_some() {
                        // The peer has closed: that our reply cannot reach it
                        // is no news. The stream ends after this event.
                        self.discard_output();
                    } else {
                        // Deliver the event; the write failure ends the stream next.
                        self.final_error = Some(self.abort(Error::Io(e)));
                    }
                }
                return Poll::Ready(Some(event));
            }
            if self.conn.should_close_transport() || self.conn.is_closed() || self.conn.failure().is_some() {
                self.begin_finish();
                continue;
            }
            if let Some(kind) = self.write_failed {
                // Everything read so far held no close frame: read on to the end.
                match ready!(self.poll_read_after_failed_write(read)) {
                    true => continue,
                    false => return Poll::Ready(Some(Err(self.abort(Error::Io(kind.into()))))),
                }
            }
            if self.conn.output().has_remaining()
                && let Poll::Ready(Err(e)) = self.poll_write_output(write)
            {
                // The peer may have closed with a reason (1009 for a message over its
                // limit, say) and reset the connection while we were still writing:
                // what can no longer be sent is dropped, and reading goes on, so that
                // a close frame that came first is delivered instead of a bare write
                // error (which a reader would take for a 1006).
                self.discard_output();
                self.write_failed = Some(e.kind());
                self.keepalive.start_close_deadline(self.close_timeout);
                continue;
            }
            if let Poll::Ready(tick) = self.keepalive.poll_tick(&mut Context::from_waker(read)) {
                match tick {
                    Tick::SendPing => {
                        // Idle for a whole interval: also give back the buffers.
                        self.conn.release_idle_buffers();
                        let _ = self.conn.send(Message::Ping(bytes::Bytes::from_static(b"peregrine")));
                    }
                    Tick::TimedOut(TimeoutKind::Keepalive) => match self.poll_read(read) {
                        // The answer was already waiting: the peer is alive.
                        Poll::Ready(Ok(n)) if n > 0 => {
                            self.keepalive.on_receive();
                            self.keepalive.rearm();
                        }
                        _ if self.close_on_keepalive_timeout => {
                            let error = self.abort(Error::Timeout(TimeoutKind::Keepalive));
                            // The close frame is written now, without waiting: an
                            // application that stops reading at the error (and drops the
                            // socket, or the read half) would otherwise leave it in the
                            // buffer and end with a bare TCP close. A peer whose buffers
                            // are full gets it from the finish, if the stream is polled.
                            let _ = self.poll_write_output(write);
                            return Poll::Ready(Some(Err(error)));
                        }
                        _ => {
                            self.stage = Stage::LastWords;
                            let error = self.stop_reading(Error::Timeout(TimeoutKind::Keepalive));
                            return Poll::Ready(Some(Err(error)));
                        }
                    },
                    Tick::TimedOut(kind) => {
                        return Poll::Ready(Some(Err(self.abort(Error::Timeout(kind)))));
                    }
                }
                continue;
            }
            match ready!(self.poll_read(read)) {
                Ok(0) => {
                    self.peer_closed = true;
                    self.conn.receive_eof();
                    if self.conn.close_received().is_none() && self.conn.failure().is_none() {
                        return Poll::Ready(Some(Err(self.abort(Error::AbnormalClosure))));
                    }
                }
                Ok(_) => self.keepalive.on_receive(),
                Err(e) => return Poll::Ready(Some(Err(self.abort(Error::Io(e))))),
            }
        }
    }

    /// After a write failed: waits for more input until the end of the stream
    /// or the close deadline. A reset connection soon reads as ended, but the
    /// bytes that came before the reset may not have been seen by the reactor
    /// yet, so one read that finds nothing proves nothing. Returns whether
    /// anything was read.
    fn poll_read_after_failed_write(&mut self, read: &Waker) -> Poll<bool> {
        // The close deadline is set: the tick is that deadline, also for a peer that
        // keeps sending to a connection we cannot write to.
        if self.keepalive.poll_tick(&mut Context::from_waker(read)).is_ready() {
            return Poll::Ready(false);
        }
        Poll::Ready(matches!(ready!(self.poll_read(read)), Ok(n) if n > 0))
    }

    /// Drops the output that can no longer be written.
    fn discard_output(&mut self) {
        let output = self.conn.output();
        output.advance(output.remaining());
    }

    /// Ends the connection at once after a fatal error: best-effort write of
    /// any close frame, then the stream ends. Returns the error to report now.
    fn abort(&mut self, error: Error) -> Error {
        if matches!(error, Error::Timeout(TimeoutKind::Keepalive)) {
            self.close_after_keepalive_timeout();
        }
        self.stage = Stage::Finishing;
        self.stop_reading(error)
    }

    /// Reading is over after a fatal error; the remaining finish only flushes
    /// and shuts down, and the close timeout bounds even that (a dead peer
    /// takes nothing). Returns the error to report now.
    fn stop_reading(&mut self, error: Error) -> Error {
        self.conn.receive_eof();
        self.keepalive.start_close_deadline(self.close_timeout);
        self.error_reported = true;
        error
    }

    /// Queues the close frame that says keepalive gave up, unless one was sent.
    fn close_after_keepalive_timeout(&mut self) {
        if !self.conn.close_sent() {
            let _ = self.conn.close(CloseCode::GOING_AWAY, "keepalive ping timeout");
        }
    }

    /// Whether the application may still queue messages and a close frame.
    fn takes_messages(&self) -> bool {
        matches!(self.stage, Stage::Open | Stage::LastWords)
    }

    /// Whether the connection still reads and writes.
    pub(crate) fn is_open(&self) -> bool {
        self.stage == Stage::Open
    }

    fn begin_finish(&mut self) {
        // `poll_finish` runs next and sets the timer only if it has to wait.
        self.keepalive.start_close_deadline(self.close_timeout);
        self.stage = Stage::Finishing;
    }

    /// Flush, then end TCP. The server (or anyone after EOF or a failure
    /// as server) shuts down at once; a client waits for the server's EOF so
    /// that the server holds TIME_WAIT, until the close timeout. After the
    /// peer's EOF there is nothing to shut down: the drop sends our FIN.
    fn poll_finish(&mut self, read: &Waker, write: &Waker) -> Poll<()> {
        if !self.keepalive.close_expired() {
            if self.poll_finish_io(read, write).is_ready() {
                self.stage = Stage::Done;
                return Poll::Ready(());
            }
            // Waiting on the peer: only now does the close deadline need the timer.
            if self.keepalive.poll_tick(&mut Context::from_waker(read)).is_pending() {
                return Poll::Pending;
            }
        }
        if !self.error_reported && !self.conn.is_closed() {
            self.final_error = Some(Error::Timeout(TimeoutKind::Close));
        }
        // One attempt to end TCP; the socket is dropped with the stream anyway.
        let _ = Pin::new(&mut self.io).poll_shutdown(&mut Context::from_waker(write));
        self.stage = Stage::Done;
        Poll::Ready(())
    }

    fn poll_finish_io(&mut self, read: &Waker, write: &Waker) -> Poll<()> {
        if self.conn.output().has_remaining() && ready!(self.poll_write_output(write)).is_err() {
            return Poll::Ready(());
        }
        if !self.conn.should_close_transport() && !self.peer_closed {
            // Client: discard input until the server closes TCP.
            loop {
                self.conn.read_buffer().clear();
                match ready!(self.poll_read(read)) {
                    Ok(0) => {
                        self.peer_closed = true;
                        break;
                    }
                    Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        if self.peer_closed {
            // The peer has ended its side and everything was read: dropping
            // the socket sends our FIN, and a `shutdown` first would be one
            // more system call per connection for the same packet.
            return Poll::Ready(());
        }
        let _ = ready!(Pin::new(&mut self.io).poll_shutdown(&mut Context::from_waker(write)));
        Poll::Ready(())
    }

    fn poll_read(&mut self, read: &Waker) -> Poll<io::Result<usize>> {
        let mut cx = Context::from_waker(read);
        let wanted = self.conn.bytes_wanted();
        let buf = self.conn.read_buffer();
        // Stack mode: nothing buffered and no big buffer yet. A connection that gets a
        // few small messages now and then (a subscriber, a chat client) keeps a heap
        // buffer only as large as what arrived; one read that fills the stack buffer
        // means traffic, and switches to a full-size heap buffer. A busy connection
        // gets its whole buffer back once the last message taken from it is dropped
        // (`try_reclaim` only reuses, never allocates), and reads into it directly.
        if buf.is_empty()
            && buf.capacity() < READ_CHUNK
            && wanted <= STACK_READ
            && !buf.try_reclaim(READ_CHUNK)
        {
            let mut stack = [MaybeUninit::<u8>::uninit(); STACK_READ];
            let mut stack = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(&mut self.io).poll_read(&mut cx, &mut stack))?;
            let filled = stack.filled();
            if !filled.is_empty() {
                let busy = filled.len() == STACK_READ;
                buf.reserve(if busy { READ_CHUNK } else { filled.len() });
                buf.extend_from_slice(filled);
            }
            return Poll::Ready(Ok(filled.len()));
        }
        let room = wanted.clamp(READ_CHUNK / 2, EAGER_READ.max(buf.len()));
        if buf.capacity() - buf.len() < room {
            // The whole frame in one allocation, and a little more, so that a
            // read under MAX_READ comes back short and no extra read is spent
            // finding the socket empty.
            buf.reserve(room + READ_CHUNK / 2);
        }
        let mut capped = bytes::BufMut::limit(buf, MAX_READ);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut capped)
    }

    /// Writes out everything pending, in vectored writes.
    pub(crate) fn poll_write_output(&mut self, write: &Waker) -> Poll<io::Result<()>> {
        let mut cx = Context::from_waker(write);
        let vectored = self.io.is_write_vectored();
        let output = self.conn.output();
        while output.has_remaining() {
            let written = if vectored {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let n = output.chunks_vectored(&mut slices);
                // One contiguous chunk (every small frame): a plain `send` is the
                // kernel's shorter path (no iovec array to import).
                if n == 1 {
                    ready!(Pin::new(&mut self.io).poll_write(&mut cx, &slices[0]))?
                } else {
                    ready!(Pin::new(&mut self.io).poll_write_vectored(&mut cx, &slices[..n]))?
                }
            } else {
                ready!(Pin::new(&mut self.io).poll_write(&mut cx, output.chunk()))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            output.advance(written);
        }
        Pin::new(&mut self.io).poll_flush(&mut cx)
    }

    /// Ready to queue another message: waits while the output is over the
    /// high-water mark.
    pub(crate) fn poll_ready(&mut self, write: &Waker) -> Poll<Result<()>> {
        if let Some(kind) = self.write_failed {
            return Poll::Ready(Err(Error::Io(kind.into())));
        }
        if !self.takes_messages() || self.conn.close_sent() {
            return Poll::Ready(Err(Error::Closed));
        }
        if self.conn.output().remaining() >= self.write_high_water {
            ready!(self.poll_write_output(write))?;
        }
        Poll::Ready(Ok(()))
    }

    pub(crate) fn start_send(&mut self, message: Message) -> Result<()> {
        if !self.takes_messages() {
            return Err(Error::Closed);
        }
        let closing = matches!(message, Message::Close(_));
        self.conn.send(message)?;
        if closing {
            self.keepalive.start_close_timer(self.close_timeout);
        }
        Ok(())
    }

    pub(crate) fn start_send_uncompressed(&mut self, message: Message) -> Result<()> {
        if !self.takes_messages() {
            return Err(Error::Closed);
        }
        Ok(self.conn.send_uncompressed(message)?)
    }

    pub(crate) fn send_fragment(
        &mut self,
        kind: peregrine_proto::DataKind,
        payload: bytes::Bytes,
        fin: bool,
    ) -> Result<()> {
        if !self.takes_messages() {
            return Err(Error::Closed);
        }
        Ok(self.conn.send_fragment(kind, payload, fin)?)
    }

    pub(crate) fn poll_flush(&mut self, write: &Waker) -> Poll<Result<()>> {
        if self.stage == Stage::Done {
            return Poll::Ready(Err(Error::Closed));
        }
        if let Some(kind) = self.write_failed {
            // What was pending was dropped: it did not go out.
            return Poll::Ready(Err(Error::Io(kind.into())));
        }
        match self.poll_write_output(write) {
            Poll::Ready(result) => Poll::Ready(result.map_err(Error::Io)),
            // A peer that stopped reading cannot hold a closing connection
            // past the close timeout.
            Poll::Pending if self.conn.close_sent() && self.keepalive.close_expired() => {
                Poll::Ready(Err(Error::Timeout(TimeoutKind::Close)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Sends a close frame (normal closure unless one was sent) and flushes.
    pub(crate) fn poll_close_send(&mut self, write: &Waker) -> Poll<Result<()>> {
        if self.takes_messages() && !self.conn.close_sent() {
            let _ = self.conn.close(CloseCode::NORMAL, "");
            self.keepalive.start_close_timer(self.close_timeout);
        }
        if self.stage == Stage::Done {
            return Poll::Ready(Ok(()));
        }
        self.poll_flush(write)
    }

    /// Queues a close frame with a code and reason.
    pub(crate) fn start_close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        if !self.takes_messages() {
            return Ok(());
        }
        self.conn.close(code, reason)?;
        self.keepalive.start_close_timer(self.close_timeout);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::DuplexStream;

    use super::*;
    use crate::WebSocket;

    /// A transport that records the largest read it was asked for.
    struct Recording {
        inner: DuplexStream,
        largest_read: Arc<AtomicUsize>,
    }

    impl AsyncRead for Recording {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.largest_read.fetch_max(buf.remaining(), Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Recording {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn a_large_frame_is_read_in_pieces_of_at_most_max_read() {
        let (client_io, server_io) = tokio::io::duplex(4 << 20);
        let largest_read = Arc::new(AtomicUsize::new(0));
        let config = Config::default();
        let mut client = WebSocket::from_raw(client_io, Role::Client, &config, &[]);
        let recording = Recording { inner: server_io, largest_read: largest_read.clone() };
        let mut server = WebSocket::from_raw(recording, Role::Server, &config, &[]);
        let payload: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        let sending = tokio::spawn(async move {
            client.send(Message::binary(payload)).await.unwrap();
            client
        });
        let Some(Ok(Message::Binary(received))) = server.recv().await else { panic!("no message") };
        let _client = sending.await.unwrap();
        assert_eq!(received.len(), 3 << 20);
        assert!(received.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8), "payload intact");
        let largest = largest_read.load(Ordering::Relaxed);
        assert!(largest <= MAX_READ, "a read asked for {largest} bytes");
        assert!(largest >= MAX_READ / 2, "reads were not sized for the frame: {largest}");
    }
    /// A connection whose every write fails (the peer reset it), reading from `R`.
    struct Deaf<R>(R);

    impl<R: AsyncRead + Unpin> AsyncRead for Deaf<R> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl<R: Unpin> AsyncWrite for Deaf<R> {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// What the peer of a reset connection sent before the reset: a close frame, which
    /// shows up only on a later read (the reactor had not seen it when the write failed).
    struct ResetAfterClose {
        close_frame: Option<Vec<u8>>,
        reads: usize,
    }

    impl AsyncRead for ResetAfterClose {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            if self.reads == 1 {
                let waker = cx.waker().clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    waker.wake();
                });
                return Poll::Pending;
            }
            if let Some(frame) = self.close_frame.take() {
                buf.put_slice(&frame);
            }
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_close_frame_that_arrives_after_a_failed_write_is_still_delivered() {
        // The server's close frame, unmasked: 1009 and a reason.
        let mut close_frame = vec![0x88, 2 + 8, 0x03, 0xF1];
        close_frame.extend_from_slice(b"too big!");
        let io = Deaf(ResetAfterClose { close_frame: Some(close_frame), reads: 0 });
        let mut client = WebSocket::from_raw(io, Role::Client, &Config::default(), &[]);
        assert!(client.send(Message::binary(vec![0u8; 1 << 16])).await.is_err(), "the write fails");
        let heard = tokio::time::timeout(std::time::Duration::from_secs(5), client.recv()).await.unwrap();
        match heard {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!((frame.code.as_u16(), frame.reason.as_str()), (1009, "too big!"));
            }
            other => panic!("expected the peer's 1009, got {other:?}"),
        }
    }

    /// Every read brings another text frame.
    struct Chatterbox;

    impl AsyncRead for Chatterbox {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            buf.put_slice(&[0x81, 1, b'x']);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn after_a_failed_write_a_peer_that_keeps_sending_is_dropped_at_the_close_timeout() {
        let config = Config::default().close_timeout(std::time::Duration::from_millis(50));
        let mut client = WebSocket::from_raw(Deaf(Chatterbox), Role::Client, &config, &[]);
        assert!(client.send(Message::text("hello")).await.is_err(), "the write fails");
        let started = std::time::Instant::now();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                match client.recv().await {
                    Some(Ok(Message::Text(_))) => tokio::task::yield_now().await,
                    other => return other,
                }
            }
        })
        .await
        .expect("the stream ends");
        assert!(matches!(ended, Some(Err(Error::Io(_)))), "{ended:?}");
        assert!(started.elapsed() >= std::time::Duration::from_millis(50), "not before the close timeout");
    }
}
