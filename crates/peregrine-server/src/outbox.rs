//! Per-session bounded outbound queue of already-encoded frames.
//!
//! The hub (and the session's own replies) push encoded frames into an [`Outbox`]; the
//! session's writer task waits with [`Outbox::ready`] and takes everything queued at once with
//! [`Outbox::drain_batch`], so a burst of publications becomes one socket write.
//!
//! The queue is bounded **in bytes**. A push that would exceed the limit is refused with
//! [`PushError::Full`] and marks the outbox as overflowed (sticky): every later push is
//! refused with [`PushError::Overflowed`], and the writer is woken so that it can disconnect
//! the session with `codes::disconnect::SLOW`. Nothing is dropped silently (principle 11):
//! the push that overflowed is reported to its caller exactly once.
//!
//! ## Writing at once
//!
//! A transport that can write without waiting gives the outbox a [`DirectWrite`]. While the
//! writer task is idle (waiting in [`Outbox::ready`] with nothing queued), a push writes its
//! frame into the socket itself: a broadcast to 10,000s of idle subscribers then costs one
//! write each, not a task wake-up, a poll and a write. A frame the socket takes only in part
//! stays in the transport's buffer and the writer flushes it; later pushes, and any push
//! while the writer is busy, go through the queue and the writer as before, so frames keep
//! their order. The byte limit counts what waits in the queue: what the socket took, or a
//! part-written frame in the transport's buffer, is no longer ours to bound. The session's writer installs it only on a
//! single-threaded node (`workers = 1`, see `session::run`).
//!
//! ## Frame type
//!
//! Frames are [`Frame`] = `Arc<[u8]>`: cheap to clone, so one encoding is shared by every
//! subscriber of a channel. (`bytes::Bytes` would do the same; it is not a dependency of this
//! crate yet, and `Bytes::from_owner` converts a `Frame` without copying.)

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Instant;

/// One encoded frame (a push or a batch of messages), shared between outboxes.
pub type Frame = Arc<[u8]>;

/// Why [`Outbox::push`] refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// This push would have exceeded the byte limit; the outbox is now overflowed. Returned
    /// once per outbox: the caller must disconnect the session as slow.
    Full,
    /// The outbox overflowed earlier (already reported by the push that returned `Full`).
    Overflowed,
    /// The outbox was closed: the session is going away.
    Closed,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full => f.write_str("outbox full"),
            PushError::Overflowed => f.write_str("outbox overflowed earlier"),
            PushError::Closed => f.write_str("outbox closed"),
        }
    }
}

impl std::error::Error for PushError {}

/// A queued frame and, for publications, when the node started delivering it (for the
/// publish-to-deliver latency, observed once the frame is written).
#[derive(Debug, Clone)]
pub struct Queued {
    /// The encoded frame.
    pub frame: Frame,
    /// When the publication reached this node's hub; `None` for replies and other pushes.
    pub published: Option<Instant>,
}

/// What [`DirectWrite::write_now`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direct {
    /// The frame is out.
    Written,
    /// The frame was taken but not all of it is out (or the connection failed): the writer
    /// must flush before writing anything else.
    Taken,
    /// Nothing was done (the transport has other output waiting): queue the frame.
    Refused,
}

/// A transport's way to write one frame at once, from the task that pushes it.
pub trait DirectWrite: Send + Sync + fmt::Debug {
    /// Writes `frame` (a publication that reached the hub at `published`) without waiting.
    fn write_now(&self, frame: &Frame, published: Option<Instant>) -> Direct;
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Queued>,
    bytes: usize,
    high_water: usize,
    overflowed: bool,
    closed: bool,
    /// The writer waits in [`Outbox::ready`] with nothing to do: a push may write directly.
    writer_idle: bool,
    /// A direct write left output behind: the writer must flush it.
    unflushed: bool,
    direct: Option<Arc<dyn DirectWrite>>,
    waker: Option<Waker>,
    /// The session waiting for the queue to drain (see [`Outbox::drained_to`]): its waker
    /// and the byte count it waits for.
    drain_waiter: Option<(Waker, usize)>,
}

/// A per-session bounded queue of encoded frames, shared as `Arc<Outbox>`.
///
/// The inner `std::sync::Mutex` is only held for queue operations (and a direct write's
/// non-blocking send) and is never held across an `.await`.
#[derive(Debug)]
pub struct Outbox {
    limit: usize,
    state: Mutex<State>,
}

impl Outbox {
    /// An empty outbox holding at most `limit_bytes` of queued frames.
    pub fn new(limit_bytes: usize) -> Arc<Outbox> {
        Arc::new(Outbox { limit: limit_bytes, state: Mutex::new(State::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue inconsistent: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `frame`, or refuses it (see [`PushError`]). Wakes a waiting writer.
    pub fn push(&self, frame: Frame) -> Result<(), PushError> {
        self.push_published(frame, None)
    }

    /// Like [`push`](Outbox::push), for a publication that reached the hub at `published`.
    pub fn push_published(&self, frame: Frame, published: Option<Instant>) -> Result<(), PushError> {
        let waker = {
            let mut s = self.lock();
            if s.closed {
                return Err(PushError::Closed);
            }
            if s.overflowed {
                return Err(PushError::Overflowed);
            }
            if s.writer_idle
                && let Some(direct) = &s.direct
            {
                // The queue is empty while the writer is idle, so nothing can be ahead of
                // this frame; the lock keeps the writer from starting meanwhile.
                match direct.write_now(&frame, published) {
                    Direct::Written => return Ok(()),
                    Direct::Taken => {
                        s.writer_idle = false;
                        s.unflushed = true;
                        let waker = s.waker.take();
                        drop(s);
                        if let Some(w) = waker {
                            w.wake();
                        }
                        return Ok(());
                    }
                    Direct::Refused => {}
                }
            }
            let bytes = s.bytes + frame.len();
            if bytes > self.limit {
                s.overflowed = true;
                let waker = s.waker.take();
                drop(s);
                if let Some(w) = waker {
                    w.wake();
                }
                return Err(PushError::Full);
            }
            s.bytes = bytes;
            s.high_water = s.high_water.max(bytes);
            s.queue.push_back(Queued { frame, published });
            s.writer_idle = false;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Marks the outbox overflowed without pushing (a subscription set-up that fell too far
    /// behind). Returns `true` the first time, like a push returning [`PushError::Full`].
    pub fn overflow(&self) -> bool {
        let waker = {
            let mut s = self.lock();
            if s.overflowed || s.closed {
                return false;
            }
            s.overflowed = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Takes queued frames, oldest first, up to `max_bytes` in total (but always at least one
    /// frame when any is queued, so a frame larger than `max_bytes` still goes out).
    pub fn drain_batch(&self, max_bytes: usize) -> Vec<Frame> {
        let mut out = Vec::new();
        self.drain_into(&mut out, max_bytes);
        out
    }

    /// Like [`drain_into`](Outbox::drain_into), keeping each frame's publish time.
    pub fn drain_queued(&self, out: &mut Vec<Queued>, max_bytes: usize) -> usize {
        self.drain_with(max_bytes, |q| out.push(q))
    }

    /// Like [`drain_batch`](Outbox::drain_batch) but appends to `out` (reusing its
    /// allocation). Returns the number of bytes taken.
    pub fn drain_into(&self, out: &mut Vec<Frame>, max_bytes: usize) -> usize {
        self.drain_with(max_bytes, |q| out.push(q.frame))
    }

    fn drain_with(&self, max_bytes: usize, mut take: impl FnMut(Queued)) -> usize {
        let mut s = self.lock();
        let mut taken = 0;
        while let Some(front) = s.queue.front() {
            if taken > 0 && taken + front.frame.len() > max_bytes {
                break;
            }
            taken += front.frame.len();
            if let Some(q) = s.queue.pop_front() {
                take(q);
            }
        }
        if s.queue.is_empty() && s.queue.capacity() > 0 {
            // An idle subscriber keeps no queue memory.
            s.queue = VecDeque::new();
        }
        s.bytes -= taken;
        let drained = s.drain_waiter.as_ref().is_some_and(|(_, below)| s.bytes <= *below);
        let waiter = if drained { s.drain_waiter.take() } else { None };
        drop(s);
        if let Some((w, _)) = waiter {
            w.wake();
        }
        taken
    }

    /// Resolves when there is something for the writer to do: frames are queued, a direct
    /// write left output to flush, or the outbox overflowed, or it was closed. Meant for the
    /// session's single writer task (a second concurrent waiter replaces the first one's
    /// waker). While it waits, pushes may write directly (see [`set_direct`](Outbox::set_direct)).
    pub async fn ready(&self) {
        poll_fn(|cx| {
            let mut s = self.lock();
            if !s.queue.is_empty() || s.unflushed || s.overflowed || s.closed {
                s.writer_idle = false;
                Poll::Ready(())
            } else {
                s.writer_idle = true;
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Lets pushes write directly through `direct` while the writer is idle (`Some`), or no
    /// longer (`None`: the writer is going away, or about to write something of its own).
    pub fn set_direct(&self, direct: Option<Arc<dyn DirectWrite>>) {
        let mut s = self.lock();
        if direct.is_none() {
            s.writer_idle = false;
        }
        s.direct = direct;
    }

    /// Whether a direct write left output that the writer must flush (and clears it).
    pub fn take_unflushed(&self) -> bool {
        std::mem::take(&mut self.lock().unflushed)
    }

    /// Resolves when at most `bytes` are queued (or the outbox overflowed or was closed):
    /// for the session, which paces what it produces in bulk (a recovery streamed page by
    /// page) by how fast the writer drains. One waiter at a time, like [`ready`](Outbox::ready).
    pub async fn drained_to(&self, bytes: usize) {
        poll_fn(|cx| {
            let mut s = self.lock();
            if s.bytes <= bytes || s.overflowed || s.closed {
                s.drain_waiter = None;
                Poll::Ready(())
            } else {
                s.drain_waiter = Some((cx.waker().clone(), bytes));
                Poll::Pending
            }
        })
        .await
    }

    /// Closes the outbox: later pushes are refused with [`PushError::Closed`]; queued frames
    /// can still be drained. Wakes a waiting writer.
    pub fn close(&self) {
        let waker = {
            let mut s = self.lock();
            s.closed = true;
            (s.waker.take(), s.drain_waiter.take())
        };
        if let Some(w) = waker.0 {
            w.wake();
        }
        if let Some((w, _)) = waker.1 {
            w.wake();
        }
    }

    /// Whether [`close`](Outbox::close) was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether a push was refused for exceeding the limit (sticky).
    pub fn is_overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// Bytes currently queued.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Frames currently queued.
    pub fn queued_frames(&self) -> usize {
        self.lock().queue.len()
    }

    /// The most bytes ever queued at once.
    pub fn high_water(&self) -> usize {
        self.lock().high_water
    }

    /// The byte limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}
