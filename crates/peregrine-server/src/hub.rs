//! The node-local registry channel → subscribers, and broadcast fan-out.
//!
//! The [`Hub`] maps each channel to its local subscribers (session id → [`Outbox`] and wire
//! encoding), in [`SHARDS`] shards of `std::sync::Mutex<HashMap>` so that unrelated channels
//! do not contend. [`Hub::broadcast`] encodes a publication push **once per wire encoding in
//! use on the channel** and pushes the same [`Frame`] into every subscriber's outbox; on a
//! single-threaded node, an idle WebSocket subscriber's outbox writes it into the socket at
//! once, so a broadcast to many idle subscribers wakes no task per subscriber.
//!
//! It never blocks and never drops silently: a subscriber whose outbox overflows is returned
//! to the caller (once), who disconnects it with `codes::disconnect::SLOW`, and counted in
//! [`Hub::slow_disconnects`].
//!
//! ## Wiring to the broker
//!
//! ```
//! use std::sync::Arc;
//! use peregrine_server::broker::{Broker, MemoryBroker};
//! use peregrine_server::hub::Hub;
//! let hub = Arc::new(Hub::new());
//! let broker = MemoryBroker::new();
//! broker.set_handler(hub.handler(
//!     |slow| {
//!         // disconnect each session in `slow` with codes::disconnect::SLOW
//!         let _ = slow;
//!     },
//!     |channel, lost| {
//!         // ask each session in `lost` to leave `channel` and recover (unsubscribe 2500)
//!         let _ = (channel, lost);
//!     },
//! ));
//! ```

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use peregrine_wire::{Encoding, Publication, Push, ServerMessage, StreamPosition, encode_server_messages};

use crate::broker::{ChannelEvent, PublicationHandler};
use crate::outbox::{Frame, Outbox, PushError};

/// Identifies a session (connection) on this node.
pub type SessionId = u64;

/// Number of shards of the channel and session maps.
pub const SHARDS: usize = 16;

/// One subscription in a channel's map. Kept to 24 bytes (one per subscriber per channel,
/// the hub's biggest table): what only a subscription being set up needs is boxed.
#[derive(Debug)]
struct Subscriber {
    outbox: Arc<Outbox>,
    /// `Some` while the subscription is being set up, and after it while publications its
    /// reply already holds may still arrive: see [`SetUp`].
    setup: Option<Box<SetUp>>,
    encoding: Encoding,
    /// The broker reported publications missed: nothing more is delivered, and the session
    /// is asked to send the client back to recover from its position.
    lost: bool,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Subscriber>() == 24);

/// What a subscription still needs from the fan-out because of how it was set up.
#[derive(Debug)]
enum SetUp {
    /// Being set up (history read, recovery): publications wait here so that the subscribe
    /// reply goes out before them, see [`Hub::go_live`].
    Holding(Pending),
    /// Live, but when it went live this node had not yet delivered every publication up to
    /// the reply's seam: with a broker like Redis, a publication can be in the stream the
    /// session read while its Pub/Sub message is still on its way here. Those covered by the
    /// seam are skipped (the client has them); the first one past it ends this state.
    Skipping(StreamPosition),
}

/// One frame carrying `publications` of `channel` as pushes, in order, in `encoding`; `None`
/// when there are none. For what a subscription sends outside a broadcast: the publications
/// held while it was set up, and its streamed recovery.
pub fn publications_frame(
    channel: &str,
    publications: Vec<Publication>,
    encoding: Encoding,
) -> Option<Frame> {
    if publications.is_empty() {
        return None;
    }
    let pushes: Vec<ServerMessage> = publications
        .into_iter()
        .map(|publication| {
            ServerMessage::Push(Push::Publication { channel: channel.to_owned(), publication })
        })
        .collect();
    Some(Frame::from(encode_server_messages(&pushes, encoding)))
}

/// Whether a client whose subscribe reply left it at `seam` (the stream's epoch and the last
/// offset it holds: in the reply, recovered or streamed) already has `p`: same epoch (a
/// publication without one is taken as of the same stream), at or before the seam.
fn covers(seam: &StreamPosition, p: &Publication) -> bool {
    p.offset <= seam.offset && p.epoch.as_deref().is_none_or(|e| e == seam.epoch)
}

/// Publications held back for a subscription being set up.
#[derive(Debug, Default)]
struct Pending {
    publications: Vec<Publication>,
    /// Payload bytes in `publications`.
    bytes: usize,
}

/// Publications held for one subscription while it is set up (its recovery streamed),
/// beyond which the subscriber is treated as slow. Their payload bytes are bounded too, by
/// the subscriber's outbound queue limit: together, what waits for one client stays within
/// about twice its queue.
pub const MAX_PENDING: usize = 10_000;

/// [`Hub::go_live`] could not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoLiveError {
    /// The session is no longer subscribed (it unsubscribed or went away meanwhile).
    NotSubscribed,
    /// The outbox refused the frames: disconnect the session as slow (or it is closing).
    Outbox(PushError),
}

#[derive(Debug, Default)]
struct Channel {
    /// Ordered by session id, which grows as connections are accepted: a broadcast walks
    /// the subscribers' sockets and buffers (ours and the kernel's) about in the order they
    /// were allocated, not scattered over memory as a hash order would.
    subscribers: BTreeMap<SessionId, Subscriber>,
    /// Subscribers per encoding, by [`Encoding::index`]: a push is encoded once for each
    /// encoding in use.
    encodings: [usize; Encoding::COUNT],
    /// Epoch and offset of the last publication delivered (offset 0: none yet), so that
    /// [`Hub::go_live`] knows whether a new subscriber's seam is already behind the fan-out.
    delivered_epoch: String,
    delivered_offset: u64,
}

impl Channel {
    fn count(&mut self, encoding: Encoding) -> &mut usize {
        &mut self.encodings[encoding.index()]
    }

    fn record_delivered(&mut self, p: &Publication) {
        if p.offset == 0 {
            return; // not from a stream (no broker sends one: nothing to record)
        }
        if let Some(epoch) = &p.epoch
            && *epoch != self.delivered_epoch
        {
            self.delivered_epoch.clone_from(epoch);
        }
        self.delivered_offset = p.offset;
    }

    /// Whether every publication up to `seam` went through this channel's fan-out already.
    fn delivered_through(&self, seam: &StreamPosition) -> bool {
        seam.offset == 0 || (self.delivered_epoch == seam.epoch && self.delivered_offset >= seam.offset)
    }
}

/// The node-local channel registry and fan-out. Share it as `Arc<Hub>`.
///
/// Locks are `std::sync::Mutex`es held only for map operations and one broadcast's encoding
/// and pushes, never across an `.await`. On a single-threaded node a push to an idle
/// WebSocket subscriber is its non-blocking socket write (see [`crate::outbox`]), so a
/// broadcast holds its channel's shard for about one `send` per subscriber: this keeps
/// every subscriber's publications in the same order (and keeps the node's one thread for
/// the whole broadcast: about 10 µs per subscriber on loopback here). A channel shard and a
/// session shard are never held at the same time.
#[derive(Debug)]
pub struct Hub {
    hasher: RandomState,
    /// Channel name → subscribers. The name is shared with the session index below.
    channels: Vec<Mutex<HashMap<Arc<str>, Channel>>>,
    /// Session → the channels it is in, for [`unsubscribe_all`](Hub::unsubscribe_all): a
    /// short list per session (a `Vec`, not a set: a session is in a few channels).
    sessions: Vec<Mutex<HashMap<SessionId, Vec<Arc<str>>>>>,
    slow_disconnects: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Hub {
        Hub {
            hasher: RandomState::new(),
            channels: (0..SHARDS).map(|_| Mutex::default()).collect(),
            sessions: (0..SHARDS).map(|_| Mutex::default()).collect(),
            slow_disconnects: AtomicU64::new(0),
        }
    }

    fn shard<K: Hash + ?Sized>(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    fn channel_shard(&self, channel: &str) -> MutexGuard<'_, HashMap<Arc<str>, Channel>> {
        lock(&self.channels[self.shard(channel)])
    }

    fn session_shard(&self, session: SessionId) -> MutexGuard<'_, HashMap<SessionId, Vec<Arc<str>>>> {
        lock(&self.sessions[self.shard(&session)])
    }

    /// Subscribes `session` to `channel`, delivering into `outbox` in `encoding` (replacing a
    /// previous subscription of the same session). Returns `true` when the channel had no
    /// local subscriber before: the caller should then call `Broker::subscribe_node`.
    pub fn subscribe(
        &self,
        channel: &str,
        session: SessionId,
        outbox: Arc<Outbox>,
        encoding: Encoding,
    ) -> bool {
        self.insert(channel, session, Subscriber { outbox, encoding, setup: None, lost: false })
    }

    /// Like [`subscribe`](Hub::subscribe), but publications are held back until
    /// [`go_live`](Hub::go_live): the session can read history and queue its subscribe
    /// reply first, with nothing lost or duplicated at the seam.
    pub fn subscribe_pending(
        &self,
        channel: &str,
        session: SessionId,
        outbox: Arc<Outbox>,
        encoding: Encoding,
    ) -> bool {
        let setup = Some(Box::new(SetUp::Holding(Pending::default())));
        self.insert(channel, session, Subscriber { outbox, encoding, setup, lost: false })
    }

    /// Ends the set-up of a [`subscribe_pending`](Hub::subscribe_pending) subscription:
    /// `finish` gets the publications held back that `seam` does not cover (all of them
    /// without a seam: a channel without history) and returns the frames to queue (the
    /// subscribe reply and the publications it does not hold), which are queued before any
    /// later publication, atomically with switching the subscription to live.
    ///
    /// With `in_flight` (the broker's [`history_may_lead_delivery`]), publications the seam
    /// covers may still reach the fan-out after this: while it has not delivered through the
    /// seam, they are skipped for this subscriber until the first one past it.
    ///
    /// [`history_may_lead_delivery`]: crate::broker::Broker::history_may_lead_delivery
    pub fn go_live(
        &self,
        channel: &str,
        session: SessionId,
        seam: Option<StreamPosition>,
        in_flight: bool,
        finish: impl FnOnce(Vec<Publication>) -> Vec<Frame>,
    ) -> Result<(), GoLiveError> {
        let mut shard = self.channel_shard(channel);
        let ch = shard.get_mut(channel).ok_or(GoLiveError::NotSubscribed)?;
        let behind = in_flight && seam.as_ref().is_some_and(|seam| !ch.delivered_through(seam));
        let sub = ch.subscribers.get_mut(&session).ok_or(GoLiveError::NotSubscribed)?;
        let mut held = match sub.setup.as_deref_mut() {
            Some(SetUp::Holding(pending)) => std::mem::take(&mut pending.publications),
            _ => Vec::new(),
        };
        match seam {
            Some(seam) => {
                held.retain(|p| !covers(&seam, p));
                match sub.setup.as_deref_mut() {
                    // The set-up's allocation serves on.
                    Some(setup) if behind => *setup = SetUp::Skipping(seam),
                    _ => sub.setup = None,
                }
            }
            None => sub.setup = None,
        }
        for frame in finish(held) {
            sub.outbox.push(frame).map_err(GoLiveError::Outbox)?;
        }
        Ok(())
    }

    fn insert(&self, channel: &str, session: SessionId, subscriber: Subscriber) -> bool {
        let encoding = subscriber.encoding;
        let (first, name) = {
            let mut shard = self.channel_shard(channel);
            let name: Arc<str> =
                shard.get_key_value(channel).map_or_else(|| channel.into(), |(k, _)| k.clone());
            let ch = shard.entry(Arc::clone(&name)).or_default();
            let first = ch.subscribers.is_empty();
            if let Some(old) = ch.subscribers.insert(session, subscriber) {
                *ch.count(old.encoding) -= 1;
            }
            *ch.count(encoding) += 1;
            (first, name)
        };
        let mut sessions = self.session_shard(session);
        let channels = sessions.entry(session).or_default();
        if !channels.iter().any(|c| **c == *channel) {
            // Exact: most sessions are in one or two channels for their whole life.
            channels.reserve_exact(1);
            channels.push(name);
        }
        first
    }

    /// Removes `session` from `channel`'s subscribers. Returns `true` when the channel has no
    /// local subscriber left because of this call: the caller should then call
    /// `Broker::unsubscribe_node`.
    pub fn unsubscribe(&self, channel: &str, session: SessionId) -> bool {
        {
            let mut shard = self.session_shard(session);
            if let Some(channels) = shard.get_mut(&session) {
                channels.retain(|c| **c != *channel);
                if channels.is_empty() {
                    shard.remove(&session);
                } else if channels.capacity() > 2 * channels.len() + 4 {
                    channels.shrink_to_fit();
                }
            }
        }
        self.remove_from_channel(channel, session)
    }

    fn remove_from_channel(&self, channel: &str, session: SessionId) -> bool {
        let mut shard = self.channel_shard(channel);
        let Some(ch) = shard.get_mut(channel) else { return false };
        let Some(old) = ch.subscribers.remove(&session) else { return false };
        *ch.count(old.encoding) -= 1;
        if ch.subscribers.is_empty() {
            shard.remove(channel);
            return true;
        }
        false
    }

    /// Removes `session` from every channel (on disconnect). Returns the channels left
    /// without local subscribers, for `Broker::unsubscribe_node`.
    pub fn unsubscribe_all(&self, session: SessionId) -> Vec<String> {
        let channels = self.session_shard(session).remove(&session).unwrap_or_default();
        channels.into_iter().filter(|c| self.remove_from_channel(c, session)).map(|c| c.to_string()).collect()
    }

    /// Number of local subscribers of `channel`.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.channel_shard(channel).get(channel).map_or(0, |c| c.subscribers.len())
    }

    /// Channels with at least one local subscriber (unordered).
    pub fn channels(&self) -> Vec<String> {
        self.channels.iter().flat_map(|s| lock(s).keys().map(|c| c.to_string()).collect::<Vec<_>>()).collect()
    }

    /// Subscribers whose outbox overflowed during a broadcast, since the hub was created.
    pub fn slow_disconnects(&self) -> u64 {
        self.slow_disconnects.load(Ordering::Relaxed)
    }

    /// Delivers `publication` to every local subscriber of `channel`, encoding the push once
    /// per encoding in use. Returns the sessions whose outbox overflowed with this broadcast
    /// (each reported once): disconnect them with `codes::disconnect::SLOW`. Subscribers with
    /// a closed or already overflowed outbox are skipped (their session is being torn down).
    pub fn broadcast(&self, channel: &str, publication: &Publication) -> Vec<SessionId> {
        let push = Push::Publication { channel: channel.to_owned(), publication: publication.clone() };
        self.deliver(channel, &push, Some(publication))
    }

    /// Delivers a push that is not a publication (join, leave) to the live subscribers of
    /// `channel`, like [`broadcast`](Hub::broadcast).
    pub fn broadcast_push(&self, channel: &str, push: &Push) -> Vec<SessionId> {
        self.deliver(channel, push, None)
    }

    fn deliver(&self, channel: &str, push: &Push, publication: Option<&Publication>) -> Vec<SessionId> {
        let published = publication.map(|_| Instant::now());
        let mut slow = Vec::new();
        let mut shard = self.channel_shard(channel);
        let Some(ch) = shard.get_mut(channel) else { return slow };
        if let Some(p) = publication {
            ch.record_delivered(p);
        }
        let message = [ServerMessage::Push(push.clone())];
        let frames: [Option<Frame>; Encoding::COUNT] = Encoding::ALL
            .map(|e| (ch.encodings[e.index()] > 0).then(|| Frame::from(encode_server_messages(&message, e))));
        for (&session, sub) in &mut ch.subscribers {
            if sub.lost {
                continue;
            }
            match sub.setup.as_deref_mut() {
                Some(SetUp::Holding(pending)) => {
                    // Join/leave events during set-up are not held: presence in the
                    // reply-to-be is read after this point anyway.
                    if let Some(p) = publication {
                        let held = &mut pending.publications;
                        if held.len() >= MAX_PENDING || pending.bytes + p.data.len() > sub.outbox.limit() {
                            if sub.outbox.overflow() {
                                slow.push(session);
                            }
                            continue;
                        }
                        pending.bytes += p.data.len();
                        held.push(p.clone());
                    }
                    continue;
                }
                Some(SetUp::Skipping(seam)) if publication.is_some_and(|p| covers(seam, p)) => continue,
                Some(SetUp::Skipping(_)) if publication.is_some() => sub.setup = None,
                _ => {}
            }
            let Some(frame) = &frames[sub.encoding.index()] else { continue };
            if let Err(PushError::Full) = sub.outbox.push_published(frame.clone(), published) {
                slow.push(session);
            }
        }
        drop(shard);
        self.slow_disconnects.fetch_add(slow.len() as u64, Ordering::Relaxed);
        slow
    }

    /// Marks every subscriber `channel` has now as lost (nothing more is delivered to them)
    /// and returns them: each must leave and recover from its position.
    pub fn lose(&self, channel: &str) -> Vec<SessionId> {
        let mut shard = self.channel_shard(channel);
        let Some(ch) = shard.get_mut(channel) else { return Vec::new() };
        let lost = ch.subscribers.iter_mut().filter(|(_, sub)| !sub.lost);
        lost.map(|(&session, sub)| {
            sub.lost = true;
            session
        })
        .collect()
    }

    /// A broker [`PublicationHandler`] that broadcasts every publication through this hub,
    /// hands each non-empty list of overflowed sessions to `on_slow` (which must not block:
    /// e.g. close those sessions' outboxes or signal their tasks to disconnect with SLOW),
    /// and the subscribers of a channel whose publications were missed to `on_lost`.
    pub fn handler<F, L>(self: &Arc<Self>, on_slow: F, on_lost: L) -> PublicationHandler
    where
        F: Fn(&[SessionId]) + Send + Sync + 'static,
        L: Fn(&str, &[SessionId]) + Send + Sync + 'static,
    {
        let hub = Arc::clone(self);
        Arc::new(move |channel: &str, event: ChannelEvent<'_>| {
            let slow = match event {
                ChannelEvent::Lost => {
                    let lost = hub.lose(channel);
                    if !lost.is_empty() {
                        on_lost(channel, &lost);
                    }
                    return;
                }
                ChannelEvent::Publication(p) => hub.broadcast(channel, p),
                ChannelEvent::Join(info) => hub
                    .broadcast_push(channel, &Push::Join { channel: channel.to_owned(), info: info.clone() }),
                ChannelEvent::Leave(info) => hub.broadcast_push(
                    channel,
                    &Push::Leave { channel: channel.to_owned(), info: info.clone() },
                ),
            };
            if !slow.is_empty() {
                on_slow(&slow);
            }
        })
    }
}
