//! One timer per connection, for keepalive pings and the close deadline.
//!
//! Receiving data does not touch the timer (that would cost a timer-wheel
//! update per read); it only records the time. When the timer fires, it
//! looks at that time and either re-arms itself or acts.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
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
    interval: Option<Duration>,
    timeout: Duration,
    last_received: Instant,
    /// Reads so far; compared with the count when the ping left, so a pong
    /// that arrives within the same clock tick still counts.
    reads: u64,
    reads_at_ping: Option<u64>,
    close_deadline: Option<Instant>,
}

impl Keepalive {
    pub(crate) fn new(interval: Option<Duration>, timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            sleep: interval.map(|i| Box::pin(sleep_until(now + i))),
            interval,
            timeout,
            last_received: now,
            reads: 0,
            reads_at_ping: None,
            close_deadline: None,
        }
    }

    /// Records that the peer sent something: it is alive.
    pub(crate) fn on_receive(&mut self) {
        self.last_received = Instant::now();
        self.reads += 1;
    }

    /// Starts the close deadline (once).
    pub(crate) fn start_close_timer(&mut self, timeout: Duration) {
        if self.close_deadline.is_none() {
            let deadline = Instant::now() + timeout;
            self.close_deadline = Some(deadline);
            self.arm(deadline);
        }
    }

    fn arm(&mut self, deadline: Instant) {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(sleep_until(deadline))),
        }
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
            let Some(sleep) = self.sleep.as_mut() else {
                return Poll::Pending;
            };
            ready!(sleep.as_mut().poll(cx));
            let now = Instant::now();
            if let Some(deadline) = self.close_deadline {
                self.arm(deadline);
                continue;
            }
            let Some(interval) = self.interval else {
                self.sleep = None;
                return Poll::Pending;
            };
            if let Some(reads_at_ping) = self.reads_at_ping {
                if self.reads == reads_at_ping {
                    self.sleep = None;
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
