//! The broker boundary: publish with history, history reads, node-local fan-out.
//!
//! The trait is shaped for a Redis implementation (one Lua script per publish that bumps the
//! offset, appends to a capped stream and publishes to a PUB/SUB channel), so:
//!
//! * every method is async and fallible ([`BrokerError`]);
//! * the **broker** assigns `epoch` and `offset`, atomically with the history append, and
//!   returns them ([`PublishResult`]);
//! * fan-out is **node-local**: a node says which channels it has subscribers for
//!   ([`Broker::subscribe_node`]) and receives every publication of those channels, once,
//!   through the single handler set with [`Broker::set_handler`]. The node's hub then fans
//!   out to its own sessions.
//!
//! Methods return boxed futures ([`BrokerFuture`]) rather than `async fn` so that the trait
//! stays object safe and a node can hold an `Arc<dyn Broker>` chosen from configuration.
//!
//! ## Why a handler callback and not a `tokio::sync::broadcast`
//!
//! A broadcast channel drops messages for a receiver that lags (`RecvError::Lagged`), which
//! is exactly the silent loss principle 11 forbids, and it adds a task hop. The handler is
//! called synchronously, in offset order per channel (the memory broker calls it while the
//! channel's shard is locked, so two concurrent publishes cannot be delivered out of order).
//! The handler must therefore be cheap and must not block or call back into the broker: it
//! is expected to hand the publication to bounded per-session outboxes, whose overflow is
//! handled by disconnecting the slow session with a code, never by dropping.

mod memory;
pub mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use peregrine_wire::{ClientInfo, Payload, Publication, StreamPosition};

pub use memory::MemoryBroker;

/// A boxed, `Send` future returned by [`Broker`] methods.
pub type BrokerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BrokerError>> + Send + 'a>>;

/// What a broker delivers to a node for one channel.
#[derive(Debug, Clone, Copy)]
pub enum ChannelEvent<'a> {
    /// A publication, its `offset` set and its `epoch` set to the stream's epoch.
    Publication(&'a Publication),
    /// A client subscribed (channels with join/leave events).
    Join(&'a ClientInfo),
    /// A client unsubscribed or went away (channels with join/leave events).
    Leave(&'a ClientInfo),
    /// Publications of the channel may have been missed (the connection to the backend
    /// dropped, or the stream jumped): every local subscriber must recover from history.
    /// Nothing more is delivered to the subscribers the node had at this point.
    Lost,
}

/// Whether this node still has local subscribers for a channel: the broker checks it when it
/// carries out [`Broker::unsubscribe_node`], so that a subscribe and an unsubscribe racing
/// from two sessions leave the node subscribed exactly when it has subscribers.
pub type Interest = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What a node tells the others about itself ([`Broker::announce`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// Unique per process start.
    pub id: String,
    /// The configured name (or the listen address).
    pub name: String,
    /// Open client connections.
    pub connections: u64,
    /// Client subscriptions.
    pub subscriptions: u64,
    /// Channels with at least one local subscriber.
    pub channels: u64,
    /// Seconds since the node started.
    pub uptime: u64,
}

/// Receives every event of the channels this node subscribed to, publications in offset
/// order per channel. Called with the channel name and the event.
pub type PublicationHandler = Arc<dyn Fn(&str, ChannelEvent<'_>) + Send + Sync>;

/// Receives the messages other nodes relay to this one ([`Broker::relay`]). Called from the
/// broker's task: it must hand the message on and return at once.
pub type RelayHandler = Arc<dyn Fn(bytes::Bytes) + Send + Sync>;

/// A broker operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerError {
    /// The backend could not be reached or answered with an error; retrying may succeed.
    Unavailable(String),
    /// The request was invalid (e.g. inconsistent options).
    Invalid(String),
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerError::Unavailable(m) => write!(f, "broker unavailable: {m}"),
            BrokerError::Invalid(m) => write!(f, "invalid broker request: {m}"),
        }
    }
}

impl std::error::Error for BrokerError {}

/// Options of one publish, usually derived from the channel's namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishOptions {
    /// How many publications the channel's history keeps (0: no history).
    pub history_size: usize,
    /// How long each publication stays in history (`None`: until pushed out by size).
    pub history_ttl: Option<Duration>,
    /// Deduplication key chosen by the publisher; `None` disables deduplication.
    pub idempotency_key: Option<String>,
    /// How long a seen key makes later publishes with it duplicates.
    pub idempotency_window: Duration,
    /// The publishing client, copied into the publication.
    pub info: Option<ClientInfo>,
    /// Tags copied into the publication.
    pub tags: Option<std::collections::BTreeMap<String, String>>,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishResult {
    /// The stream's epoch.
    pub epoch: String,
    /// The offset assigned to the publication (the original one when `duplicate`).
    pub offset: u64,
    /// The idempotency key was seen within the window: nothing was published this time.
    pub duplicate: bool,
}

/// A history read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only publications after this position (with `reverse`, before it: reading on from
    /// the last publication of a page gives the next page either way). Applied when its
    /// epoch is the stream's current epoch; with another epoch the query behaves as if
    /// `since` were `None`.
    pub since: Option<StreamPosition>,
    /// At most this many publications (`None`: all). With `reverse`, the newest ones.
    pub limit: Option<usize>,
    /// Newest first.
    pub reverse: bool,
}

/// The answer to a history read.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryResult {
    /// Publications still in history matching the query, in offset order (or reversed).
    pub publications: Vec<Publication>,
    /// The stream's current epoch.
    pub epoch: String,
    /// The stream's top offset: the offset of its latest publication (0 before the first).
    pub offset: u64,
}

impl HistoryResult {
    /// The stream's current position.
    pub fn position(&self) -> StreamPosition {
        StreamPosition { epoch: self.epoch.clone(), offset: self.offset }
    }
}

/// Fan-out and history backend.
///
/// Implementations must guarantee, per channel: offsets grow by exactly one within an epoch;
/// the history append and offset assignment are atomic; the handler sees publications in
/// offset order; a duplicate publish (same key within the window) is not delivered again.
pub trait Broker: Send + Sync + fmt::Debug {
    /// Sets the node's publication handler, replacing any previous one.
    fn set_handler(&self, handler: PublicationHandler);

    /// Sets how the broker asks whether the node still wants a channel (see [`Interest`]).
    /// Without one, [`unsubscribe_node`](Broker::unsubscribe_node) always unsubscribes.
    fn set_interest(&self, interest: Interest);

    /// Publishes `data` to `channel`: assigns the next offset, appends to history (bounded by
    /// `opts`), and delivers to every node subscribed to the channel.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: Payload,
        opts: PublishOptions,
    ) -> BrokerFuture<'a, PublishResult>;

    /// Reads the channel's history. Creates the stream (and its epoch) if it does not exist,
    /// so that subscribers get a stable position before the first publication.
    fn history<'a>(&'a self, channel: &'a str, query: HistoryQuery) -> BrokerFuture<'a, HistoryResult>;

    /// Delivers a join (`joined`) or leave event to every node subscribed to `channel`; not
    /// kept in history and without an offset.
    fn publish_join_leave<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        joined: bool,
    ) -> BrokerFuture<'a, ()>;

    /// This node now wants publications of `channel` (idempotent). Resolves once every
    /// publication made after it will be delivered: each new local subscriber awaits it
    /// before reading history, so nothing falls between the history read and live delivery.
    fn subscribe_node<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()>;

    /// Whether a publication can be in history before this node's handler has seen it (its
    /// Pub/Sub message still on its way), so that a subscriber that read it must not be
    /// sent it again when it arrives ([`Hub::go_live`](crate::hub::Hub::go_live)). By
    /// default yes; a broker that delivers under the lock that appends to history says no.
    fn history_may_lead_delivery(&self) -> bool {
        true
    }

    /// This node may no longer want publications of `channel` (idempotent): carried out
    /// only if the [`Interest`] says no local subscriber is left by then.
    fn unsubscribe_node<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()>;

    /// Tells the other nodes this node is alive, for `ttl` ([`nodes`](Broker::nodes)).
    fn announce<'a>(&'a self, _node: &'a NodeInfo, _ttl: Duration) -> BrokerFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Every node that announced itself and has not expired (empty for a one-node broker).
    fn nodes(&self) -> BrokerFuture<'_, Vec<NodeInfo>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Starts taking the messages other nodes relay to this one, whose id is `node`: the
    /// HTTP transports' requests for sessions held here. Resolves once they can arrive. A
    /// one-node broker has no other node: nothing ever arrives.
    fn listen_relay<'a>(&'a self, _node: &'a str, _handler: RelayHandler) -> BrokerFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Sends `message` to the node whose id is `node`. `Ok(false)` when no node listens by
    /// that id (it has gone, or never was); always so for a one-node broker.
    fn relay<'a>(&'a self, _node: &'a str, _message: bytes::Bytes) -> BrokerFuture<'a, bool> {
        Box::pin(async { Ok(false) })
    }

    /// `Err` with what is wrong while the backend cannot be used (for `/health`, metrics
    /// and logs); publishes fail meanwhile with temporary errors.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The handler and interest a node sets on its broker ([`Broker::set_handler`],
/// [`Broker::set_interest`]), for the broker and its tasks to read.
#[derive(Default)]
pub(crate) struct NodeHooks {
    handler: RwLock<Option<PublicationHandler>>,
    interest: RwLock<Option<Interest>>,
    relay: RwLock<Option<RelayHandler>>,
}

impl NodeHooks {
    pub(crate) fn set_handler(&self, handler: PublicationHandler) {
        *self.handler.write().unwrap_or_else(|e| e.into_inner()) = Some(handler);
    }

    pub(crate) fn set_interest(&self, interest: Interest) {
        *self.interest.write().unwrap_or_else(|e| e.into_inner()) = Some(interest);
    }

    pub(crate) fn set_relay(&self, handler: RelayHandler) {
        *self.relay.write().unwrap_or_else(|e| e.into_inner()) = Some(handler);
    }

    pub(crate) fn relay(&self) -> Option<RelayHandler> {
        self.relay.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn handler(&self) -> Option<PublicationHandler> {
        self.handler.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the node still has local subscribers for `channel` (no: without an interest).
    pub(crate) fn wanted(&self, channel: &str) -> bool {
        let interest = self.interest.read().unwrap_or_else(|e| e.into_inner()).clone();
        interest.is_some_and(|wanted| wanted(channel))
    }
}

/// Eight hex characters, random when the OS allows, else from time and a counter.
pub(crate) fn new_epoch() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut buf = [0u8; 4];
    if getrandom::fill(&mut buf).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mixed = nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        buf = ((mixed ^ (mixed >> 32)) as u32).to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
