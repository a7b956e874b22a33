//! Server → client pushes and the publication type they carry.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::payload::{Payload, PayloadError, WireData, is_false, payload_from};

/// Who a publication came from, or who joined, left or is present.
///
/// ```
/// let info = peregrine_wire::ClientInfo { user: "42".into(), client: "c1".into(), ..Default::default() };
/// assert_eq!(serde_json::to_string(&info).unwrap(), r#"{"user":"42","client":"c1"}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// User id from the connection token (empty for anonymous users).
    pub user: String,
    /// Client (connection) id assigned by the server.
    pub client: String,
    /// Connection info from the connection token, shared with other subscribers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_info: Option<serde_json::Value>,
    /// Channel info from the subscription token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chan_info: Option<serde_json::Value>,
}

/// One message published in a channel.
///
/// ```
/// use peregrine_wire::Publication;
/// let p = Publication { offset: 3, data: serde_json::json!({"text": "hi"}).into(), ..Default::default() };
/// assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"offset":3,"data":{"text":"hi"}}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Publication {
    /// Offset in the channel's stream; 0 when the channel keeps no history.
    pub offset: u64,
    /// Epoch of the stream, when it differs from the one the subscriber knows.
    pub epoch: Option<String>,
    /// The payload, exactly as published (see [`Payload`]).
    pub data: Payload,
    /// The publisher, when a client published.
    pub info: Option<ClientInfo>,
    /// Free-form string tags set by the publisher.
    pub tags: Option<BTreeMap<String, String>>,
}

impl Publication {
    /// The payload read as JSON into `T`.
    ///
    /// ```
    /// use peregrine_wire::Publication;
    /// let p = Publication { data: serde_json::json!({"n": 7}).into(), ..Default::default() };
    /// #[derive(serde::Deserialize)]
    /// struct Tick { n: u32 }
    /// assert_eq!(p.data_json::<Tick>().unwrap().n, 7);
    /// ```
    pub fn data_json<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        self.data.json()
    }

    /// The payload's bytes: the JSON text, or the binary data.
    pub fn data_bytes(&self) -> &[u8] {
        self.data.as_bytes()
    }
}

#[derive(Serialize)]
struct PublicationRef<'a> {
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: &'a Option<String>,
    data: &'a Payload,
    #[serde(skip_serializing_if = "is_false")]
    binary: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: &'a Option<ClientInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: &'a Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct PublicationRepr {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    epoch: Option<String>,
    data: WireData,
    #[serde(default)]
    binary: bool,
    #[serde(default)]
    info: Option<ClientInfo>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
}

impl Serialize for Publication {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        PublicationRef {
            offset: self.offset,
            epoch: &self.epoch,
            data: &self.data,
            binary: self.data.is_binary(),
            info: &self.info,
            tags: &self.tags,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Publication {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let r = PublicationRepr::deserialize(deserializer)?;
        let data = payload_from(r.data, r.binary)?;
        Ok(Publication { offset: r.offset, epoch: r.epoch, data, info: r.info, tags: r.tags })
    }
}

/// A message sent by the server to one client, outside any channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirectMessage {
    /// The payload.
    pub data: Payload,
}

#[derive(Serialize)]
struct DirectMessageRef<'a> {
    data: &'a Payload,
    #[serde(skip_serializing_if = "is_false")]
    binary: bool,
}

#[derive(Deserialize)]
struct DirectMessageRepr {
    data: WireData,
    #[serde(default)]
    binary: bool,
}

impl Serialize for DirectMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DirectMessageRef { data: &self.data, binary: self.data.is_binary() }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for DirectMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let r = DirectMessageRepr::deserialize(deserializer)?;
        Ok(DirectMessage { data: payload_from(r.data, r.binary)? })
    }
}

/// Something the server sends without a command asking for it.
///
/// On the wire a push is wrapped as `{"push":{"<type>":{...}}}`, see
/// [`ServerMessage`](crate::ServerMessage).
///
/// ```
/// use peregrine_wire::{codes, Push};
/// let p = Push::Disconnect { code: codes::disconnect::SHUTDOWN, reason: "shutdown".into(), reconnect: true };
/// assert_eq!(
///     serde_json::to_string(&p).unwrap(),
///     r#"{"disconnect":{"code":3001,"reason":"shutdown","reconnect":true}}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Push {
    /// A publication in a channel the client is subscribed to.
    Publication {
        /// Channel name.
        channel: String,
        /// The publication.
        publication: Publication,
    },
    /// A client joined a channel (when join/leave events are on).
    Join {
        /// Channel name.
        channel: String,
        /// Who joined.
        info: ClientInfo,
    },
    /// A client left a channel (when join/leave events are on).
    Leave {
        /// Channel name.
        channel: String,
        /// Who left.
        info: ClientInfo,
    },
    /// The server ended a subscription; see [`codes::unsubscribe`](crate::codes::unsubscribe).
    Unsubscribe {
        /// Channel name.
        channel: String,
        /// Unsubscribe code; 2500–2999 ask the client to resubscribe.
        code: u32,
        /// Human-readable reason.
        reason: String,
    },
    /// The server is closing the connection; see [`codes::disconnect`](crate::codes::disconnect).
    Disconnect {
        /// Disconnect code, also used as the WebSocket close code.
        code: u16,
        /// Human-readable reason.
        reason: String,
        /// Reconnect advice; equals [`codes::reconnect`](crate::codes::reconnect)`(code)`.
        reconnect: bool,
    },
    /// A message sent by the server to this client only, outside any channel.
    Message(DirectMessage),
}

impl Push {
    /// A [`Push::Disconnect`] whose `reconnect` follows the code's range.
    ///
    /// ```
    /// use peregrine_wire::{codes::disconnect, Push};
    /// let p = Push::disconnect(disconnect::SLOW, "slow consumer");
    /// assert!(matches!(p, Push::Disconnect { reconnect: true, .. }));
    /// ```
    pub fn disconnect(code: u16, reason: impl Into<String>) -> Push {
        Push::Disconnect { code, reason: reason.into(), reconnect: crate::codes::reconnect(code) }
    }
}
