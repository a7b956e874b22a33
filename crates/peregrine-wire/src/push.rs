//! Server → client pushes and the publication type they carry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
/// let p = Publication { offset: 3, data: serde_json::json!({"text": "hi"}), ..Default::default() };
/// assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"offset":3,"data":{"text":"hi"}}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    /// Offset in the channel's stream; 0 when the channel keeps no history.
    #[serde(default)]
    pub offset: u64,
    /// Epoch of the stream, when it differs from the one the subscriber knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The payload: a JSON value, or the equivalent MessagePack value.
    pub data: serde_json::Value,
    /// The publisher, when a client published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
    /// Free-form string tags set by the publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
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
    Message {
        /// The payload.
        data: serde_json::Value,
    },
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
