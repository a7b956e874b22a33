//! The Peregrine realtime server library.
//!
//! For now this holds the domain core that transports will sit on:
//!
//! * [`broker`]: the [`Broker`](broker::Broker) trait (offsets assigned by the broker,
//!   history appended atomically with the publish, node-local fan-out) and its in-memory
//!   implementation [`MemoryBroker`](broker::MemoryBroker);
//! * [`recovery`]: pure functions deciding what a subscriber with a `since` position missed,
//!   and joining the history replay with publications buffered live during the read.

pub mod admission;
pub mod app;
pub mod auth;
pub mod broker;
pub mod channel;
pub mod config;
pub mod disconnect;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod presence;
pub mod rate_limit;
pub mod recovery;
pub mod session;
pub mod transport;
