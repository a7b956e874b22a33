//! One timer per connection, for keepalive pings and the close deadline.
//!
//! Receiving data does not touch the timer (that would cost a timer-wheel
//! update per read); it only records the time. When the timer fires, it
//! looks at that time and either re-arms itself or acts.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

use crate::error::TimeoutKind;

/// What the connection must do when the timer fires.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Nothing received for a whole interval: send a ping.
    SendPing,
    /// A deadline passed.
    TimedOut(TimeoutKind),
}

#[derive(Debug)]
pub(crate) struct Keepalive {
    sleep: Option<Pin<Box<Sleep>>>,
    /// The waker the timer was last polled with, until it fires or is reset.
    /// The timer wakes it when it fires; until then polling the timer again
    /// with the same waker changes nothing, and it would cost a timer-wheel
    /// state check on every wake-up of a busy connection (about 200
    /// instructions, 7% of the user-space work per small echoed message).
    polled_with: Option<Waker>,
    interval: Option<Duration>,
    timeout: Duration,
    last_received: Instant,
    /// Reads so far; compared with the count when the ping left, so a pong
    /// that arrives within the same clock tick still counts.
    reads: u64,
    reads_at_ping: Option<u64>,
    close_deadline: Option<Instant>,
    /// The timer is set to the close deadline (it is set only when someone
    /// waits: a finish that completes at once costs no timer update).
    close_armed: bool,
}

impl Keepalive {
    pub(crate) fn new(interval: Option<Duration>, timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            sleep: interval.map(|i| Box::pin(sleep_until(now + i))),
            polled_with: None,
            interval,
            timeout,
            last_received: now,
            reads: 0,
            reads_at_ping: None,
            close_deadline: None,
            close_armed: false,
        }
    }

    /// Records that the peer sent something: it is alive.
    pub(crate) fn on_receive(&mut self) {
        self.last_received = Instant::now();
        self.reads += 1;
    }

    /// Starts the close deadline (once) and sets the timer to it, so that
    /// whoever last polled the timer is woken then.
    pub(crate) fn start_close_timer(&mut self, timeout: Duration) {
        self.start_close_deadline(timeout);
        self.arm_close();
    }

    /// Starts the close deadline (once) without touching the timer: for a
    /// caller that polls [`Keepalive::poll_tick`] before it waits. Setting a
    /// timer earlier than every other one wakes the runtime's driver (an
    /// eventfd write), which a connection that finishes at once can skip.
    pub(crate) fn start_close_deadline(&mut self, timeout: Duration) {
        if self.close_deadline.is_none() {
            self.close_deadline = Some(Instant::now() + timeout);
        }
    }

    fn arm_close(&mut self) {
        if let Some(deadline) = self.close_deadline
            && !self.close_armed
        {
            self.close_armed = true;
            self.arm(deadline);
        }
    }

    fn arm(&mut self, deadline: Instant) {
        self.polled_with = None;
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(sleep_until(deadline))),
        }
    }

    /// No timer until one is armed again (and no waker kept for it).
    fn disarm(&mut self) {
        self.sleep = None;
        self.polled_with = None;
    }

    /// Whether the close deadline has passed.
    pub(crate) fn close_expired(&self) -> bool {
        self.close_deadline.is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// The peer turned out to be alive after all (data was waiting when the
    /// keepalive deadline passed): back to waiting a whole interval.
    pub(crate) fn rearm(&mut self) {
        self.reads_at_ping = None;
        if let Some(interval) = self.interval {
            self.arm(self.last_received + interval);
        }
    }

    pub(crate) fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Tick> {
        loop {
            // Once passed, the close deadline stays passed for every caller.
            if self.close_expired() {
                return Poll::Ready(Tick::TimedOut(TimeoutKind::Close));
            }
            self.arm_close();
            let Some(sleep) = self.sleep.as_mut() else {
                return Poll::Pending;
            };
            let waiting = self.polled_with.as_ref().is_some_and(|waker| waker.will_wake(cx.waker()));
            if waiting && !sleep.is_elapsed() {
                return Poll::Pending;
            }
            if sleep.as_mut().poll(cx).is_pending() {
                if !waiting {
                    self.polled_with = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            self.polled_with = None;
            let now = Instant::now();
            if let Some(deadline) = self.close_deadline {
                self.arm(deadline);
                continue;
            }
            let Some(interval) = self.interval else {
                self.disarm();
                return Poll::Pending;
            };
            if let Some(reads_at_ping) = self.reads_at_ping {
                if self.reads == reads_at_ping {
                    self.disarm();
                    return Poll::Ready(Tick::TimedOut(TimeoutKind::Keepalive));
                }
                self.reads_at_ping = None;
            }
            let due = self.last_received + interval;
            if due > now {
                self.arm(due);
                continue;
            }
            self.reads_at_ping = Some(self.reads);
            self.arm(now + self.timeout);
            return Poll::Ready(Tick::SendPing);
        }
    }
}
