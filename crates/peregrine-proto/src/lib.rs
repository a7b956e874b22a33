//! Sans-I/O WebSocket protocol (RFC 6455): bytes in, events and bytes out.
//!
//! This crate has no sockets and no async runtime. A [`Connection`] decodes
//! frames from received bytes, answers pings and close frames, validates UTF-8
//! as it arrives, enforces [`Limits`], and queues the bytes to send. The
//! [`handshake`] module builds and checks the HTTP upgrade for both roles.
//! Drivers (the `peregrine` crate for tokio) move bytes between a transport
//! and a `Connection`; tests and fuzzers drive it directly.

pub mod close;
pub mod connection;
pub mod error;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod limits;
pub mod mask;
mod mask_key;
pub mod message;
pub mod output;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use connection::{Connection, Event, Fragment, Role};
pub use error::{ProtocolError, SendError};
pub use frame::OpCode;
pub use limits::Limits;
pub use message::{DataKind, Message, Utf8Bytes};
