//! Presence: who is subscribed to a channel, across every node.
//!
//! Like the broker, the trait is async and fallible so that a Redis implementation (a hash
//! per channel with a per-entry expiry refreshed by each node) fits behind it.

mod memory;
mod redis;

use std::collections::BTreeMap;

use peregrine_wire::ClientInfo;

pub use memory::MemoryPresence;
pub use redis::RedisPresence;

use crate::broker::BrokerFuture;

/// Stores who is in each channel.
pub trait PresenceStore: Send + Sync + std::fmt::Debug {
    /// Records `info` (keyed by `info.client`) as present in `channel`.
    fn add<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BrokerFuture<'a, ()>;

    /// Removes client `client` from `channel` (idempotent).
    fn remove<'a>(&'a self, channel: &'a str, client: &'a str) -> BrokerFuture<'a, ()>;

    /// Everyone present in `channel`, client id → info.
    fn get<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, BTreeMap<String, ClientInfo>>;
}
