//! Read and write halves of a [`WebSocket`](crate::WebSocket) for two tasks.
//!
//! Both halves share the driver behind a mutex that is held only inside a
//! poll call, never across an await. The read half also writes (pongs, close
//! replies), and a transport remembers a single write waker, so every write
//! is polled with a waker that wakes both halves: whichever task the
//! transport wakes, the other one is not stranded.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;
use bytes::Buf;
use futures_core::Stream;
use futures_sink::Sink;
use peregrine_proto::{CloseCode, Message};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::socket::message_of;

#[derive(Debug, Default)]
struct BothWakers {
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Wake for BothWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.reader.wake();
        self.writer.wake();
    }
}

#[derive(Debug)]
struct Shared<S> {
    driver: Mutex<Driver<S>>,
    wakers: Arc<BothWakers>,
    write_waker: Waker,
}

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, Driver<S>> {
        // A panic while holding the lock leaves the driver in a state that is
        // still memory-safe; keep going rather than poisoning both halves.
        self.driver.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(crate) fn split<S>(driver: Driver<S>) -> (WebSocketReader<S>, WebSocketWriter<S>) {
    let wakers = Arc::new(BothWakers::default());
    let shared =
        Arc::new(Shared { driver: Mutex::new(driver), write_waker: Waker::from(wakers.clone()), wakers });
    (WebSocketReader { shared: shared.clone() }, WebSocketWriter { shared })
}

/// The read half: a [`Stream`] of messages.
#[derive(Debug)]
pub struct WebSocketReader<S> {
    shared: Arc<Shared<S>>,
}

/// The write half: a [`Sink`] of messages.
#[derive(Debug)]
pub struct WebSocketWriter<S> {
    shared: Arc<Shared<S>>,
}

/// A second handle on the write half that sends without waiting, from any task or thread:
/// for a fan-out that writes each subscriber's frame into its socket itself instead of
/// waking one writer task per subscriber. Made by [`WebSocketWriter::direct_sender`].
#[derive(Debug)]
pub struct DirectSender<S> {
    shared: Arc<Shared<S>>,
}

/// What [`DirectSender::try_send`] did with a message.
#[derive(Debug)]
pub enum TrySend {
    /// Written to the socket completely.
    Sent,
    /// Queued, and not all of it taken by the socket yet: the write half must
    /// [`flush`](WebSocketWriter::flush) the rest.
    Buffered,
    /// Other output was waiting to be written: nothing was done, and the message is given
    /// back to be sent through the write half behind it.
    Busy(Message),
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocketReader<S> {
    /// The next message; `None` once the connection has ended.
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        self.shared.wakers.reader.register(cx.waker());
        let mut driver = self.shared.lock();
        let polled = driver.poll_next_event(cx.waker(), &self.shared.write_waker);
        if !driver.is_open() {
            // A writer waiting on a connection that has ended must learn it.
            self.shared.wakers.writer.wake();
        }
        polled.map(|event| event.map(|event| event.map(message_of)))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocketWriter<S> {
    fn poll_with<T>(
        &self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut Driver<S>, &Waker) -> Poll<T>,
    ) -> Poll<T> {
        self.shared.wakers.writer.register(cx.waker());
        let mut driver = self.shared.lock();
        f(&mut driver, &self.shared.write_waker)
    }

    /// Sends a message and flushes it.
    pub async fn send(&mut self, message: Message) -> Result<()> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queues a message; waits only while the write buffer is over its
    /// high-water mark.
    pub async fn feed(&mut self, message: Message) -> Result<()> {
        poll_fn(|cx| self.poll_with(cx, |d, w| d.poll_ready(w))).await?;
        self.shared.lock().start_send(message)
    }

    /// Writes out everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_with(cx, |d, w| d.poll_flush(w))).await
    }

    /// A handle that sends a message at once when nothing else is waiting to be written,
    /// for use beside this half (see [`DirectSender::try_send`]).
    pub fn direct_sender(&self) -> DirectSender<S> {
        DirectSender { shared: Arc::clone(&self.shared) }
    }

    /// Gives back the connection's read and write buffers while they hold
    /// nothing: for a writer that has flushed and may stay idle a long time
    /// (a subscriber between publications). The next message allocates them
    /// anew: call it once a batch is out, not between the messages of one.
    pub fn release_idle_buffers(&self) {
        self.shared.lock().conn.release_idle_buffers();
    }

    /// Sends a close frame and flushes it; the read half ends once the peer
    /// answers (or the close timeout passes).
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.shared.lock().start_close(code, reason)?;
        self.flush().await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> DirectSender<S> {
    /// Sends `message` without waiting, if no other output is pending: it is framed and
    /// written with what the socket takes now, and the buffers are given back once all of it
    /// is out. The caller orders it against the write half's messages: call it only while
    /// the write half is not in the middle of sending, and after a
    /// [`TrySend::Buffered`], flush through the write half before sending again.
    ///
    /// Fails as [`WebSocketWriter::feed`] does (the connection is closing or failed).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> peregrine::Result<()> {
    /// use peregrine::{Config, Message, Role, TrySend, WebSocket};
    /// let (ours, theirs) = tokio::io::duplex(1 << 16);
    /// let (_reader, writer) = WebSocket::from_raw(ours, Role::Server, &Config::default(), &[]).split();
    /// let mut peer = WebSocket::from_raw(theirs, Role::Client, &Config::default(), &[]);
    /// let sender = writer.direct_sender();
    /// assert!(matches!(sender.try_send(Message::text("hello"))?, TrySend::Sent));
    /// assert_eq!(peer.recv().await.unwrap()?, Message::text("hello"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_send(&self, message: Message) -> Result<TrySend> {
        // Tokio's cooperative budget counts socket operations per task poll (128): a fan-out
        // writing into 10,000s of sockets from one task would find every write after the
        // 128th refused as if the socket were full, and wake both halves of each connection
        // to retry. Each direct send is one write the caller chose: it runs outside the budget.
        let mut message = Some(message);
        let send = std::pin::pin!(tokio::task::unconstrained(std::future::poll_fn(|_| {
            Poll::Ready(message.take().map(|message| self.send_now(message)))
        })));
        match send.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Some(result)) => result,
            // The inner future is ready at its first and only poll.
            _ => unreachable!("a direct send is polled once and never waits"),
        }
    }

    fn send_now(&self, message: Message) -> Result<TrySend> {
        let mut driver = self.shared.lock();
        if driver.conn.output().has_remaining() {
            return Ok(TrySend::Busy(message));
        }
        if let Poll::Ready(Err(error)) = driver.poll_ready(&self.shared.write_waker) {
            return Err(error);
        }
        driver.start_send(message)?;
        // The waker that wakes both halves: if the socket is full, whichever task flushes
        // next is woken when it drains.
        match driver.poll_flush(&self.shared.write_waker) {
            Poll::Ready(Ok(())) => {
                driver.conn.release_idle_buffers();
                Ok(TrySend::Sent)
            }
            Poll::Ready(Err(error)) => Err(error),
            Poll::Pending => Ok(TrySend::Buffered),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocketReader<S> {
    type Item = Result<Message>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocketWriter<S> {
    type Error = Error;
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_with(cx, |d, w| d.poll_ready(w))
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<()> {
        self.shared.lock().start_send(item)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_with(cx, |d, w| d.poll_flush(w))
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_with(cx, |d, w| d.poll_close_send(w))
    }
}
