//! Peregrine: a fast, strict WebSocket client and server on tokio.
//!
//! The protocol itself lives in the Sans-I/O crate [`peregrine_proto`]
//! (re-exported as [`proto`]); this crate drives it over tokio transports,
//! adds the handshakes over real sockets, TLS, keepalive, timeouts and
//! backpressure, and upgrades requests inside hyper and axum.

mod client;
mod config;
mod driver;
mod error;
mod handshake_io;
mod keepalive;
mod server;
mod socket;
mod split;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "hyper")]
pub mod upgrade;

pub use client::{ClientBuilder, connect};
pub use config::Config;
pub use error::{Error, Result, TimeoutKind};
pub use peregrine_proto as proto;
pub use peregrine_proto::{CloseCode, CloseFrame, Limits, Message, Role, Utf8Bytes};
pub use server::{accept, accept_with};
pub use socket::{Frames, WebSocket};
pub use split::{DirectSender, TrySend, WebSocketReader, WebSocketWriter};
pub use stream::MaybeTlsStream;
