//! Client → server commands.
//!
//! On the wire a command is a map with an `id` and exactly one key naming its type:
//! `{"id":1,"subscribe":{"channel":"chat:room1"}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::payload::{Payload, WireData, payload_from};

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// A position in a channel's stream: the epoch names one incarnation of the history, the
/// offset counts publications within it (the first publication has offset 1).
///
/// ```
/// let p = peregrine_wire::StreamPosition { epoch: "xyz".into(), offset: 41 };
/// assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"epoch":"xyz","offset":41}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamPosition {
    /// Identifies the history's incarnation; it changes when history is lost.
    pub epoch: String,
    /// Offset of the last publication seen.
    pub offset: u64,
}

/// Options of a subscription, used both in [`SubscribeRequest`] and (per channel) in
/// [`ConnectRequest::subs`] for subscriptions recovered at connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeOptions {
    /// Subscription token for private channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Last position seen; with `recover` the server replays what came after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
    /// Ask the server to replay publications after `since`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recover: bool,
    /// Override the namespace's join/leave setting (`None` = namespace default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_leave: Option<bool>,
}

/// `connect`: the first command of a session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// Connection token (JWT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Client name, e.g. `"js"`, for logs and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Protocol version the client speaks ([`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Subscriptions to restore server-side during connect, channel → options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeOptions>,
}

/// `subscribe` to a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    /// Channel name, e.g. `chat:room1`.
    pub channel: String,
    /// Subscription token for private channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Last position seen; with `recover` the server replays what came after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
    /// Ask the server to replay publications after `since`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recover: bool,
    /// Override the namespace's join/leave setting (`None` = namespace default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_leave: Option<bool>,
}

/// `unsubscribe` from a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeRequest {
    /// Channel name.
    pub channel: String,
}

/// `publish` to a channel.
///
/// `data` is kept and delivered exactly as sent ([`Payload`]): in JSON any JSON value, or a
/// base64 string with `"binary": true`; in MessagePack bin (JSON text, or any bytes with
/// `binary: true`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishRequest {
    /// Channel name.
    pub channel: String,
    /// The payload.
    pub data: Payload,
    /// A publish repeated with the same key within the server's window is acknowledged again
    /// but not published twice.
    pub idempotency_key: Option<String>,
}

#[derive(Serialize)]
struct PublishRef<'a> {
    channel: &'a str,
    data: &'a Payload,
    #[serde(skip_serializing_if = "is_false")]
    binary: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: &'a Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRepr {
    channel: String,
    data: WireData,
    #[serde(default)]
    binary: bool,
    #[serde(default)]
    idempotency_key: Option<String>,
}

impl Serialize for PublishRequest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let binary = self.data.is_binary();
        PublishRef {
            channel: &self.channel,
            data: &self.data,
            binary,
            idempotency_key: &self.idempotency_key,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PublishRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let r = PublishRepr::deserialize(deserializer)?;
        let data = payload_from(r.data, r.binary)?;
        Ok(PublishRequest { channel: r.channel, data, idempotency_key: r.idempotency_key })
    }
}

/// `presence`: who is in a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceRequest {
    /// Channel name.
    pub channel: String,
}

/// `history`: read a channel's retained publications.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    /// Channel name.
    pub channel: String,
    /// At most this many publications (`None` = server maximum, `0` = only the position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Start after this position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
    /// Newest first.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reverse: bool,
}

/// `refresh`: replace the connection token without reconnecting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The new connection token.
    pub token: String,
}

/// `sub_refresh`: replace a subscription's token (private channels) before it expires,
/// without resubscribing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubRefreshRequest {
    /// The subscribed channel.
    pub channel: String,
    /// The new subscription token for it.
    pub token: String,
}

/// `ping`: application-level ping (browsers cannot send WebSocket pings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingRequest {}

/// The type and arguments of a [`Command`].
#[derive(Debug, Clone, PartialEq)]
pub enum CommandKind {
    /// See [`ConnectRequest`].
    Connect(ConnectRequest),
    /// See [`SubscribeRequest`].
    Subscribe(SubscribeRequest),
    /// See [`UnsubscribeRequest`].
    Unsubscribe(UnsubscribeRequest),
    /// See [`PublishRequest`].
    Publish(PublishRequest),
    /// See [`PresenceRequest`].
    Presence(PresenceRequest),
    /// See [`HistoryRequest`].
    History(HistoryRequest),
    /// See [`RefreshRequest`].
    Refresh(RefreshRequest),
    /// See [`SubRefreshRequest`].
    SubRefresh(SubRefreshRequest),
    /// See [`PingRequest`].
    Ping(PingRequest),
}

impl CommandKind {
    /// The wire name of this command type, e.g. `"subscribe"`.
    pub fn name(&self) -> &'static str {
        match self {
            CommandKind::Connect(_) => "connect",
            CommandKind::Subscribe(_) => "subscribe",
            CommandKind::Unsubscribe(_) => "unsubscribe",
            CommandKind::Publish(_) => "publish",
            CommandKind::Presence(_) => "presence",
            CommandKind::History(_) => "history",
            CommandKind::Refresh(_) => "refresh",
            CommandKind::SubRefresh(_) => "sub_refresh",
            CommandKind::Ping(_) => "ping",
        }
    }
}

/// A client → server command. Every command gets exactly one [`Reply`](crate::Reply) with
/// the same `id`.
///
/// ```
/// use peregrine_wire::{Command, CommandKind, UnsubscribeRequest};
/// let cmd = Command {
///     id: 7,
///     kind: CommandKind::Unsubscribe(UnsubscribeRequest { channel: "news".into() }),
/// };
/// let json = serde_json::to_string(&cmd).unwrap();
/// assert_eq!(json, r#"{"id":7,"unsubscribe":{"channel":"news"}}"#);
/// assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), cmd);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Chosen by the client, echoed in the reply.
    pub id: u64,
    /// What to do.
    pub kind: CommandKind,
}

#[derive(Serialize)]
struct CommandRef<'a> {
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect: Option<&'a ConnectRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscribe: Option<&'a SubscribeRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unsubscribe: Option<&'a UnsubscribeRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish: Option<&'a PublishRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<&'a PresenceRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<&'a HistoryRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh: Option<&'a RefreshRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_refresh: Option<&'a SubRefreshRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ping: Option<&'a PingRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandRepr {
    id: Option<u64>,
    connect: Option<ConnectRequest>,
    subscribe: Option<SubscribeRequest>,
    unsubscribe: Option<UnsubscribeRequest>,
    publish: Option<PublishRequest>,
    presence: Option<PresenceRequest>,
    history: Option<HistoryRequest>,
    refresh: Option<RefreshRequest>,
    sub_refresh: Option<SubRefreshRequest>,
    ping: Option<PingRequest>,
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut r = CommandRef {
            id: self.id,
            connect: None,
            subscribe: None,
            unsubscribe: None,
            publish: None,
            presence: None,
            history: None,
            refresh: None,
            sub_refresh: None,
            ping: None,
        };
        match &self.kind {
            CommandKind::Connect(c) => r.connect = Some(c),
            CommandKind::Subscribe(c) => r.subscribe = Some(c),
            CommandKind::Unsubscribe(c) => r.unsubscribe = Some(c),
            CommandKind::Publish(c) => r.publish = Some(c),
            CommandKind::Presence(c) => r.presence = Some(c),
            CommandKind::History(c) => r.history = Some(c),
            CommandKind::Refresh(c) => r.refresh = Some(c),
            CommandKind::SubRefresh(c) => r.sub_refresh = Some(c),
            CommandKind::Ping(c) => r.ping = Some(c),
        }
        r.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let r = CommandRepr::deserialize(deserializer)?;
        let id = r.id.ok_or_else(|| D::Error::custom("command is missing `id`"))?;
        let kinds = [
            r.connect.map(CommandKind::Connect),
            r.subscribe.map(CommandKind::Subscribe),
            r.unsubscribe.map(CommandKind::Unsubscribe),
            r.publish.map(CommandKind::Publish),
            r.presence.map(CommandKind::Presence),
            r.history.map(CommandKind::History),
            r.refresh.map(CommandKind::Refresh),
            r.sub_refresh.map(CommandKind::SubRefresh),
            r.ping.map(CommandKind::Ping),
        ];
        let mut found = kinds.into_iter().flatten();
        let kind = found.next().ok_or_else(|| {
            D::Error::custom(format!(
                "command {id} has no type (expected one of connect, subscribe, unsubscribe, \
                 publish, presence, history, refresh, sub_refresh, ping)"
            ))
        })?;
        if let Some(other) = found.next() {
            return Err(D::Error::custom(format!(
                "command {id} has more than one type ({} and {})",
                kind.name(),
                other.name()
            )));
        }
        Ok(Command { id, kind })
    }
}
