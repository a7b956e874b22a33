//! In-memory [`Broker`]: one node, history and idempotency keys in process memory.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

use peregrine_wire::{ClientInfo, Payload, Publication};
// tokio's Instant follows `tokio::time::pause()`, so tests can drive TTLs and windows.
use tokio::time::Instant;

use super::{
    Broker, BrokerFuture, ChannelEvent, HistoryQuery, HistoryResult, Interest, NodeHooks, PublicationHandler,
    PublishOptions, PublishResult, new_epoch,
};

/// Number of shards; channels are spread over them by hash.
const SHARDS: usize = 16;

/// At most this many idempotency keys are remembered per channel; the oldest go first, even
/// inside their window (memory stays bounded; a retry that late may publish again).
pub const MAX_IDEMPOTENCY_KEYS: usize = 4096;

/// A broker that lives in this process: the default for a single node and for tests.
///
/// State is sharded by channel over 16 `std::sync::Mutex`es. A std mutex (not
/// tokio's) is right here because it is never held across an `.await`: every operation is
/// synchronous inside the lock, and std's mutex is cheaper (see mini-redis `src/db.rs`).
/// The handler is called while the channel's shard is locked, which is what makes delivery
/// order equal offset order under concurrent publishers.
///
/// Streams are never removed for now, so their epochs stay stable for the life of the
/// process; a restart yields new epochs, which is exactly "history lost".
pub struct MemoryBroker {
    shards: Vec<Mutex<Shard>>,
    hooks: NodeHooks,
}

#[derive(Default)]
struct Shard {
    streams: HashMap<String, Stream>,
    subscribed: HashSet<String>,
}

struct Stream {
    epoch: String,
    top: u64,
    /// A contiguous run of the latest publications, oldest first.
    history: VecDeque<Entry>,
    /// Idempotency key → (offset, expiry).
    keys: HashMap<String, (u64, Instant)>,
    /// Keys in insertion order, for expiry and the size bound.
    key_order: VecDeque<(String, Instant)>,
}

struct Entry {
    publication: Publication,
    expires: Option<Instant>,
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let channels: usize = self.shards.iter().map(|s| lock(s).streams.len()).sum();
        f.debug_struct("MemoryBroker").field("channels", &channels).finish_non_exhaustive()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBroker {
    /// An empty broker with no handler.
    pub fn new() -> Self {
        MemoryBroker {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hooks: NodeHooks::default(),
        }
    }

    fn shard(&self, channel: &str) -> MutexGuard<'_, Shard> {
        let mut h = DefaultHasher::new();
        channel.hash(&mut h);
        lock(&self.shards[(h.finish() as usize) % SHARDS])
    }

    fn handler(&self) -> Option<PublicationHandler> {
        self.hooks.handler()
    }

    fn publish_sync(&self, channel: &str, data: Payload, opts: PublishOptions) -> PublishResult {
        let handler = self.handler();
        let now = Instant::now();
        let mut shard = self.shard(channel);
        let subscribed = shard.subscribed.contains(channel);
        let stream = shard.streams.entry(channel.to_owned()).or_insert_with(Stream::new);
        stream.expire(now);

        if let Some(key) = &opts.idempotency_key
            && let Some(&(offset, _)) = stream.keys.get(key)
        {
            return PublishResult { epoch: stream.epoch.clone(), offset, duplicate: true };
        }

        stream.top += 1;
        let offset = stream.top;
        let publication =
            Publication { offset, epoch: Some(stream.epoch.clone()), data, info: opts.info, tags: opts.tags };
        if let Some(key) = opts.idempotency_key
            && !opts.idempotency_window.is_zero()
        {
            let expiry = now + opts.idempotency_window;
            stream.keys.insert(key.clone(), (offset, expiry));
            stream.key_order.push_back((key, expiry));
            while stream.key_order.len() > MAX_IDEMPOTENCY_KEYS {
                if let Some((k, e)) = stream.key_order.pop_front()
                    && stream.keys.get(&k).is_some_and(|(_, cur)| *cur == e)
                {
                    stream.keys.remove(&k);
                }
            }
        }
        if subscribed && let Some(handler) = &handler {
            handler(channel, ChannelEvent::Publication(&publication));
        }
        if opts.history_size > 0 {
            let expires = opts.history_ttl.map(|ttl| now + ttl);
            stream.history.push_back(Entry { publication, expires });
            while stream.history.len() > opts.history_size {
                stream.history.pop_front();
            }
        }
        PublishResult { epoch: stream.epoch.clone(), offset, duplicate: false }
    }

    fn history_sync(&self, channel: &str, query: HistoryQuery) -> HistoryResult {
        let now = Instant::now();
        let mut shard = self.shard(channel);
        let stream = shard.streams.entry(channel.to_owned()).or_insert_with(Stream::new);
        stream.expire(now);
        let since = query.since.as_ref().filter(|s| s.epoch == stream.epoch).map(|s| s.offset);
        let history = stream.history.iter().map(|e| &e.publication);
        let limit = query.limit.unwrap_or(usize::MAX);
        let publications: Vec<Publication> = if query.reverse {
            let before = since.unwrap_or(u64::MAX);
            history.rev().filter(|p| p.offset < before).take(limit).cloned().collect()
        } else {
            let after = since.unwrap_or(0);
            history.filter(|p| p.offset > after).take(limit).cloned().collect()
        };
        HistoryResult { publications, epoch: stream.epoch.clone(), offset: stream.top }
    }
}

impl Stream {
    fn new() -> Stream {
        Stream {
            epoch: new_epoch(),
            top: 0,
            history: VecDeque::new(),
            keys: HashMap::new(),
            key_order: VecDeque::new(),
        }
    }

    /// Drops expired history (lazily, on access) and expired idempotency keys.
    fn expire(&mut self, now: Instant) {
        // TTLs may differ between publishes; drop everything up to the newest expired entry
        // so that history stays a contiguous suffix of the stream.
        if let Some(last_expired) = self.history.iter().rposition(|e| e.expires.is_some_and(|t| t <= now)) {
            self.history.drain(..=last_expired);
        }
        while let Some((key, expiry)) = self.key_order.front() {
            if *expiry > now {
                break;
            }
            // The key may have been re-inserted with a later expiry; only drop this one.
            if self.keys.get(key).is_some_and(|(_, e)| e == expiry) {
                self.keys.remove(key);
            }
            self.key_order.pop_front();
        }
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic inside the lock leaves consistent-enough state (each step is a single push or
    // pop); keep serving rather than poisoning every later call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Broker for MemoryBroker {
    fn set_handler(&self, handler: PublicationHandler) {
        self.hooks.set_handler(handler);
    }

    fn set_interest(&self, interest: Interest) {
        self.hooks.set_interest(interest);
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: Payload,
        opts: PublishOptions,
    ) -> BrokerFuture<'a, PublishResult> {
        Box::pin(async move { Ok(self.publish_sync(channel, data, opts)) })
    }

    fn history<'a>(&'a self, channel: &'a str, query: HistoryQuery) -> BrokerFuture<'a, HistoryResult> {
        Box::pin(async move { Ok(self.history_sync(channel, query)) })
    }

    /// Never: a publication is handed to the handler under the shard lock that appends it
    /// to history, which a history read takes too.
    fn history_may_lead_delivery(&self) -> bool {
        false
    }

    fn publish_join_leave<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        joined: bool,
    ) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let handler = self.handler();
            // Under the shard lock, like publications, so a join is not overtaken by a
            // publication that came after it.
            let shard = self.shard(channel);
            if shard.subscribed.contains(channel)
                && let Some(handler) = handler
            {
                let event = if joined { ChannelEvent::Join(&info) } else { ChannelEvent::Leave(&info) };
                handler(channel, event);
            }
            drop(shard);
            Ok(())
        })
    }

    fn subscribe_node<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            self.shard(channel).subscribed.insert(channel.to_owned());
            Ok(())
        })
    }

    fn unsubscribe_node<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let mut shard = self.shard(channel);
            // Checked under the shard lock: a subscriber arriving after this sees the channel
            // unsubscribed and subscribes it again.
            if !self.hooks.wanted(channel) {
                shard.subscribed.remove(channel);
            }
            Ok(())
        })
    }
}
