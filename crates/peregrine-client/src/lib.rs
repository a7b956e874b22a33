//! Rust client SDK for the Peregrine realtime server.
//!
//! A [`Client`] keeps one WebSocket connection to `peregrine serve` alive and makes the
//! reliable behaviour the default, so an application never writes reconnect code:
//!
//! - **Reconnects by itself** with exponential backoff and full jitter ([`Backoff`]), so
//!   thousands of clients of a restarted server do not come back in one storm; the server's
//!   advice (reconnect, or stop for good) is followed. States are [`State`] events.
//! - **Detects dead connections**: a `ping` command after a silence, and a connection that
//!   does not answer within the pong timeout is dropped and replaced.
//! - **Subscriptions survive reconnects**: each channel's stream position is tracked and the
//!   client resubscribes with `since`, so every publication arrives exactly once and in
//!   order, or a [`SubscriptionEvent::Gap`] / [`SubscriptionEvent::Reset`] says what was lost.
//! - **Publishes are acknowledged and idempotent**: each gets a key and is resent with the
//!   same key after a timeout or a reconnect; the server publishes it once.
//! - **A bounded offline queue**: publishes made while disconnected are sent in order after
//!   reconnecting; a full queue is an error to the caller, not silent loss; optionally kept
//!   in a file across restarts.
//! - **Tokens**: static or from a provider, refreshed before they expire; the same for the
//!   subscription tokens of private channels ([`SubscriptionTokenProvider`]).
//!
//! ```no_run
//! use peregrine_client::{Client, SubscriptionEvent};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), peregrine_client::Error> {
//! let client = Client::new("ws://127.0.0.1:8080/connection/websocket")?;
//! let mut room = client.subscribe("chat:lobby").await?;
//! let ack = client.publish("chat:lobby", json!({"text": "hello"})).await?;
//! println!("published at offset {:?}", ack.offset);
//! while let Some(event) = room.next().await {
//!     match event {
//!         SubscriptionEvent::Publication(p) => println!("{}", p.data),
//!         SubscriptionEvent::Gap { from, to } => eprintln!("missed {from}..={to}"),
//!         other => eprintln!("{other:?}"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The protocol is described in `docs/protocol.md`; the types on the wire come from
//! [`peregrine_wire`].

mod backoff;
mod client;
mod error;
mod events;
mod queue;
mod session;
mod subscription;

pub use backoff::Backoff;
pub use client::{Client, ClientBuilder, PublishFuture, TokenProvider};
pub use error::Error;
pub use events::{State, SubscriptionEvent};
pub use peregrine_wire::codes;
pub use peregrine_wire::{
    ClientInfo, Encoding, HistoryResult, Payload, PayloadError, Publication, PublishResult, StreamPosition,
};
pub use subscription::{SubscribeOptions, Subscription, SubscriptionTokenProvider};
