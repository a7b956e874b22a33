//! What a client tells the application: its connection state, and what happens to each
//! subscription.

use std::time::Duration;

use peregrine_wire::{ClientInfo, Publication};

/// The client's connection state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Opening a connection (attempt counts from 0 after the last successful connect).
    Connecting {
        /// Attempt number.
        attempt: u32,
    },
    /// Connected and the `connect` command accepted.
    Connected {
        /// The id the server gave this connection.
        client_id: String,
    },
    /// The connection was lost; the client reconnects by itself after `retry_in`.
    Disconnected {
        /// The close or disconnect code, when the server sent one (none: the TCP connection
        /// ended without a close frame, what a browser reports as 1006).
        code: Option<u16>,
        /// Why, in words.
        reason: String,
        /// The next attempt starts after this delay.
        retry_in: Duration,
    },
    /// Closed for good: by [`Client::close`](crate::Client::close) or because the server
    /// said not to reconnect. Publishes still queued fail with
    /// [`Error::Closed`](crate::Error::Closed) (or stay in the queue file).
    Closed {
        /// The code, when the server sent one.
        code: Option<u16>,
        /// Why.
        reason: String,
    },
}

/// Something that happened to a [`Subscription`](crate::Subscription).
///
/// The SDK tracks each channel's stream position and hides reconnects: after one it
/// resubscribes with `since` and delivers what was missed, so the application sees every
/// publication once and in order. When the server cannot give back what was missed, a
/// [`Gap`](SubscriptionEvent::Gap) or [`Reset`](SubscriptionEvent::Reset) says so: loss is
/// never silent.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionEvent {
    /// The subscription is active: after [`Client::subscribe`](crate::Client::subscribe) and
    /// again after every reconnect.
    Subscribed {
        /// The stream's epoch.
        epoch: String,
        /// The stream's top offset at the time of subscribing.
        offset: u64,
        /// After a reconnect: every publication missed while away was delivered (or is about
        /// to be, in order, before anything newer).
        recovered: bool,
    },
    /// A publication, in order; each one exactly once.
    Publication(Publication),
    /// Publications with offsets `from..=to` were missed and the server's history no longer
    /// holds them (it is bounded by size and age). Later publications follow.
    Gap {
        /// First missing offset.
        from: u64,
        /// Last missing offset.
        to: u64,
    },
    /// The channel's stream was reset (a new epoch, e.g. the server restarted with an
    /// in-memory broker): whatever was published since the last position seen is lost, and
    /// the server cannot say how much. Reload the state from your source of truth.
    Reset {
        /// The epoch seen before.
        previous_epoch: String,
        /// The new epoch.
        epoch: String,
        /// The new stream's top offset.
        offset: u64,
    },
    /// Someone joined the channel (namespaces with join/leave events).
    Join(ClientInfo),
    /// Someone left the channel.
    Leave(ClientInfo),
    /// The subscription ended: the server unsubscribed the client, refused the resubscribe,
    /// or the client was closed. Nothing follows.
    Unsubscribed {
        /// The server's code (none when the client was closed).
        code: Option<u32>,
        /// Why.
        reason: String,
    },
}
