//! A transport wrapper that watches the bytes going each way.
//!
//! `Tap<S>` sits between the TCP (or TLS) stream and the WebSocket, so it
//! sees the plaintext of the handshake and of every frame exactly as they
//! cross the wire. It does two things with them:
//!
//! - it keeps the first [`CAPTURE_LIMIT`] bytes received, so that a refused
//!   handshake can be explained with the response body (the library's error
//!   keeps status and headers but the body was in its buffer);
//! - with `--show-frames`, it feeds each direction to a [`FrameDecoder`] and
//!   prints what that decodes.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::console::Console;
use super::frames::{Direction, FrameDecoder};

/// Received bytes kept for diagnosing a failed handshake.
pub const CAPTURE_LIMIT: usize = 16 << 10;

/// The first bytes received, until [`Capture::stop`].
#[derive(Debug, Clone, Default)]
pub struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

impl Capture {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(Some(Vec::new()))))
    }

    fn record(&self, bytes: &[u8]) {
        let mut guard = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(kept) = guard.as_mut() {
            let room = CAPTURE_LIMIT - kept.len();
            kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
            if kept.len() == CAPTURE_LIMIT {
                *guard = None;
            }
        }
    }

    /// The bytes received so far (empty once stopped or full).
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone().unwrap_or_default()
    }

    /// Stops recording (the handshake succeeded).
    pub fn stop(&self) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

struct Show {
    console: Arc<Console>,
    sent: FrameDecoder,
    received: FrameDecoder,
}

/// A transport that records and optionally shows the bytes passing through.
pub struct Tap<S> {
    io: S,
    capture: Capture,
    show: Option<Box<Show>>,
}

impl<S> std::fmt::Debug for Tap<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").field("show_frames", &self.show.is_some()).finish_non_exhaustive()
    }
}

impl<S> Tap<S> {
    /// Wraps `io`; prints frames to `console` when `show` is given.
    pub fn new(io: S, show: Option<Arc<Console>>) -> Self {
        let show = show.map(|console| {
            Box::new(Show {
                console,
                sent: FrameDecoder::new(Direction::Sent),
                received: FrameDecoder::new(Direction::Received),
            })
        });
        Self { io, capture: Capture::new(), show }
    }

    /// The capture of received bytes, shared with the caller.
    pub fn capture(&self) -> Capture {
        self.capture.clone()
    }

    fn on_received(&mut self, bytes: &[u8]) {
        self.capture.record(bytes);
        if let Some(show) = &mut self.show {
            let text = show.received.feed(bytes);
            // Our frames are inflated for display too once the 101 says how.
            if let Some(negotiated) = show.received.take_negotiated() {
                show.sent.inflate(negotiated.client_no_context_takeover);
            }
            if !text.is_empty() {
                show.console.diag(&text);
            }
        }
    }

    fn on_sent(&mut self, bytes: &[u8]) {
        if let Some(show) = &mut self.show {
            let text = show.sent.feed(bytes);
            if !text.is_empty() {
                show.console.diag(&text);
            }
        }
    }

    fn on_sent_vectored(&mut self, bufs: &[IoSlice<'_>], mut written: usize) {
        if self.show.is_none() {
            return;
        }
        for buf in bufs {
            if written == 0 {
                break;
            }
            let n = written.min(buf.len());
            self.on_sent(&buf[..n]);
            written -= n;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let filled = &buf.filled()[before..];
        if !filled.is_empty() {
            this.on_received(filled);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.on_sent(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        this.on_sent_vectored(bufs, n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn records_received_bytes_until_stopped() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut tap = Tap::new(a, None);
        let capture = tap.capture();
        b.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\nno").await.unwrap();
        let mut buf = [0; 64];
        let n = tap.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"HTTP/1.1 403 Forbidden\r\n\r\nno");
        assert_eq!(capture.bytes(), b"HTTP/1.1 403 Forbidden\r\n\r\nno");
        capture.stop();
        b.write_all(b"more").await.unwrap();
        let _ = tap.read(&mut buf).await.unwrap();
        assert!(capture.bytes().is_empty());
        tap.write_all(b"sent").await.unwrap();
        let n = b.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"sent");
    }
}
