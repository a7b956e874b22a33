//! The Peregrine realtime wire protocol, shared by the server and the SDKs.
//!
//! A client sends [`Command`]s; the server answers each with a [`Reply`] carrying the same
//! `id` and sends [`Push`]es on its own (publications, join/leave, unsubscribe, disconnect).
//! Both directions batch several messages in one WebSocket message (a *frame*), encoded as
//! newline-delimited JSON ([`Encoding::Json`], subprotocol `peregrine.json`), as a
//! MessagePack array ([`Encoding::MsgPack`], subprotocol `peregrine.msgpack`) or as
//! length-delimited Protobuf messages ([`Encoding::Protobuf`], subprotocol
//! `peregrine.protobuf`, schema in `proto/peregrine.proto`). Publication payloads are
//! [`Payload`]s, kept as published.
//!
//! This crate does no I/O. The protocol is described in `docs/protocol.md`.
//!
//! ```
//! use peregrine_wire::*;
//! let frame = encode_commands(
//!     &[Command { id: 1, kind: CommandKind::Subscribe(SubscribeRequest { channel: "chat:1".into(), ..Default::default() }) }],
//!     Encoding::MsgPack,
//! );
//! let cmds = decode_commands(&frame, Encoding::MsgPack).unwrap();
//! assert_eq!(cmds[0].kind.name(), "subscribe");
//! ```

pub mod codec;
pub mod codes;
mod command;
mod error;
mod message;
mod payload;
pub mod protobuf;
mod push;
mod reply;

pub use codec::{
    Encoding, MAX_BATCH, decode_commands, decode_commands_bounded, decode_server_messages,
    decode_server_messages_bounded, encode_commands, encode_server_messages, encoded_size,
};
pub use command::{
    Command, CommandKind, ConnectRequest, HistoryRequest, PingRequest, PresenceRequest, PublishRequest,
    RefreshRequest, StreamPosition, SubRefreshRequest, SubscribeOptions, SubscribeRequest,
    UnsubscribeRequest,
};
pub use error::WireError;
pub use message::ServerMessage;
pub use payload::{Payload, PayloadError};
pub use push::{ClientInfo, DirectMessage, Publication, Push};
pub use reply::{
    ConnectResult, Gap, HistoryResult, PingResult, PresenceResult, PublishResult, RefreshResult, Reply,
    ReplyError, ReplyKind, SubRefreshResult, SubscribeResult, UnsubscribeResult,
};

/// The protocol version this crate speaks, sent in `connect` and its reply.
pub const PROTOCOL_VERSION: u32 = 1;

/// WebSocket subprotocol for the JSON encoding.
pub const SUBPROTOCOL_JSON: &str = "peregrine.json";

/// WebSocket subprotocol for the MessagePack encoding.
pub const SUBPROTOCOL_MSGPACK: &str = "peregrine.msgpack";

/// WebSocket subprotocol for the Protobuf encoding (`proto/peregrine.proto`).
pub const SUBPROTOCOL_PROTOBUF: &str = "peregrine.protobuf";
