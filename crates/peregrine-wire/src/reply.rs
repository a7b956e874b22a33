//! Server → client replies to commands.
//!
//! On the wire a reply is `{"id":1,"<type>":{...}}` on success and
//! `{"id":1,"error":{"code":103,"message":"permission denied"}}` on failure.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::command::is_false;
use crate::message::{ServerMessage, ServerRepr};
use crate::push::{ClientInfo, Publication};

/// A command failed. Codes are in [`codes::error`](crate::codes::error).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyError {
    /// Error code.
    pub code: u32,
    /// Human-readable message.
    pub message: String,
    /// The same command may succeed if retried later.
    #[serde(default, skip_serializing_if = "is_false")]
    pub temporary: bool,
}

/// Publications in `from..=to` are missing: history no longer covers them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// First missing offset.
    pub from: u64,
    /// Last missing offset.
    pub to: u64,
}

/// Reply to `connect`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectResult {
    /// Id the server assigned to this connection.
    pub client_id: String,
    /// Protocol version the server speaks.
    pub version: u32,
    /// Unix time (seconds) when the connection expires; refresh before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// How often the server sends application pings; answer within this interval.
    pub ping_interval_ms: u64,
    /// Results of the subscriptions requested in `connect.subs`, by channel. A channel that
    /// could not be subscribed is absent here and gets an `unsubscribe` push.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeResult>,
}

/// Reply to `subscribe`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubscribeResult {
    /// Current epoch of the channel's stream.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Current top offset of the channel's stream.
    #[serde(default)]
    pub offset: u64,
    /// Every publication after `since` is in `publications`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recovered: bool,
    /// Publications after `since`, in order, when recovering.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    /// Offsets history no longer covers; `publications` then starts after `gap.to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Gap>,
    /// The channel keeps history, so the client should track epoch and offset.
    #[serde(default, skip_serializing_if = "is_false")]
    pub positioned: bool,
    /// The recovery did not fit in this reply: the publications after the last one in
    /// `publications`, up to `offset`, follow as `publication` pushes, in order, before any
    /// newer one.
    #[serde(default, skip_serializing_if = "is_false")]
    pub more: bool,
    /// Unix time (seconds) when the subscription token expires: send `sub_refresh` before
    /// it, or the subscription ends with an `unsubscribe` push (code 2501).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

/// Reply to `publish`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResult {
    /// Offset assigned to the publication (channels with history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Epoch of the stream (channels with history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The idempotency key was seen within the window: this is the original result and
    /// nothing was published again.
    #[serde(default, skip_serializing_if = "is_false")]
    pub duplicate: bool,
}

/// Reply to `presence`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PresenceResult {
    /// Client id → who.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientInfo>,
}

/// Reply to `history`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryResult {
    /// The publications, in the requested order.
    #[serde(default)]
    pub publications: Vec<Publication>,
    /// Current epoch.
    pub epoch: String,
    /// Current top offset.
    pub offset: u64,
    /// More publications follow in the direction read (cut by `limit` or by the reply size
    /// limit): ask again with `since` set to the last publication's position.
    #[serde(default, skip_serializing_if = "is_false")]
    pub more: bool,
}

/// Reply to `refresh`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshResult {
    /// New expiry, unix seconds (`None` = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

/// Reply to `sub_refresh`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubRefreshResult {
    /// New expiry of the subscription, unix seconds (`None` = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

/// Reply to `unsubscribe`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubscribeResult {}

/// Reply to `ping`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResult {}

/// The successful result of a command, one variant per command type.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyKind {
    /// See [`ConnectResult`].
    Connect(ConnectResult),
    /// See [`SubscribeResult`].
    Subscribe(SubscribeResult),
    /// See [`UnsubscribeResult`].
    Unsubscribe(UnsubscribeResult),
    /// See [`PublishResult`].
    Publish(PublishResult),
    /// See [`PresenceResult`].
    Presence(PresenceResult),
    /// See [`HistoryResult`].
    History(HistoryResult),
    /// See [`RefreshResult`].
    Refresh(RefreshResult),
    /// See [`SubRefreshResult`].
    SubRefresh(SubRefreshResult),
    /// See [`PingResult`].
    Ping(PingResult),
}

/// The answer to the [`Command`](crate::Command) with the same `id`.
///
/// ```
/// use peregrine_wire::{codes, Reply, ReplyError};
/// let r = Reply::error(3, ReplyError { code: codes::error::PERMISSION_DENIED, message: "no".into(), temporary: false });
/// assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"id":3,"error":{"code":103,"message":"no"}}"#);
/// assert_eq!(serde_json::from_str::<Reply>(r#"{"id":3,"ping":{}}"#).unwrap(), Reply::ok(3, peregrine_wire::ReplyKind::Ping(Default::default())));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The command's id.
    pub id: u64,
    /// The result or the error.
    pub result: Result<ReplyKind, ReplyError>,
}

impl Reply {
    /// A successful reply.
    pub fn ok(id: u64, kind: ReplyKind) -> Reply {
        Reply { id, result: Ok(kind) }
    }

    /// A failed reply.
    pub fn error(id: u64, error: ReplyError) -> Reply {
        Reply { id, result: Err(error) }
    }
}

impl Serialize for Reply {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::message::ServerRef::reply(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Reply {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match ServerRepr::deserialize(deserializer)?.into_message().map_err(D::Error::custom)? {
            ServerMessage::Reply(r) => Ok(r),
            ServerMessage::Push(_) => Err(D::Error::custom("expected a reply, found a push")),
        }
    }
}
