//! [`ServerMessage`]: what the server sends, a reply or a push.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::push::Push;
use crate::reply::*;

/// One server → client message.
///
/// A reply is `{"id":N,"<type>":{...}}` or `{"id":N,"error":{...}}`; a push is
/// `{"push":{"<type>":{...}}}` and has no `id`.
///
/// ```
/// use peregrine_wire::{DirectMessage, Push, ServerMessage};
/// let m: ServerMessage = serde_json::from_str(r#"{"push":{"message":{"data":1}}}"#).unwrap();
/// assert_eq!(m, ServerMessage::Push(Push::Message(DirectMessage { data: serde_json::json!(1).into() })));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// The answer to a command.
    Reply(Reply),
    /// An unsolicited message.
    Push(Push),
}

impl From<Reply> for ServerMessage {
    fn from(r: Reply) -> Self {
        ServerMessage::Reply(r)
    }
}

impl From<Push> for ServerMessage {
    fn from(p: Push) -> Self {
        ServerMessage::Push(p)
    }
}

#[derive(Serialize, Default)]
pub(crate) struct ServerRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    push: Option<&'a Push>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ReplyError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect: Option<&'a ConnectResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscribe: Option<&'a SubscribeResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unsubscribe: Option<&'a UnsubscribeResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish: Option<&'a PublishResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<&'a PresenceResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<&'a HistoryResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh: Option<&'a RefreshResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_refresh: Option<&'a SubRefreshResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ping: Option<&'a PingResult>,
}

impl<'a> ServerRef<'a> {
    pub(crate) fn reply(reply: &'a Reply) -> Self {
        let mut r = ServerRef { id: Some(reply.id), ..Default::default() };
        match &reply.result {
            Err(e) => r.error = Some(e),
            Ok(ReplyKind::Connect(x)) => r.connect = Some(x),
            Ok(ReplyKind::Subscribe(x)) => r.subscribe = Some(x),
            Ok(ReplyKind::Unsubscribe(x)) => r.unsubscribe = Some(x),
            Ok(ReplyKind::Publish(x)) => r.publish = Some(x),
            Ok(ReplyKind::Presence(x)) => r.presence = Some(x),
            Ok(ReplyKind::History(x)) => r.history = Some(x),
            Ok(ReplyKind::Refresh(x)) => r.refresh = Some(x),
            Ok(ReplyKind::SubRefresh(x)) => r.sub_refresh = Some(x),
            Ok(ReplyKind::Ping(x)) => r.ping = Some(x),
        }
        r
    }
}

/// Unknown keys are ignored so that older SDKs accept newer servers' additions.
#[derive(Deserialize)]
pub(crate) struct ServerRepr {
    id: Option<u64>,
    push: Option<Push>,
    error: Option<ReplyError>,
    connect: Option<ConnectResult>,
    subscribe: Option<SubscribeResult>,
    unsubscribe: Option<UnsubscribeResult>,
    publish: Option<PublishResult>,
    presence: Option<PresenceResult>,
    history: Option<HistoryResult>,
    refresh: Option<RefreshResult>,
    sub_refresh: Option<SubRefreshResult>,
    ping: Option<PingResult>,
}

impl ServerRepr {
    pub(crate) fn into_message(self) -> Result<ServerMessage, String> {
        let results = [
            self.error.map(Err),
            self.connect.map(|x| Ok(ReplyKind::Connect(x))),
            self.subscribe.map(|x| Ok(ReplyKind::Subscribe(x))),
            self.unsubscribe.map(|x| Ok(ReplyKind::Unsubscribe(x))),
            self.publish.map(|x| Ok(ReplyKind::Publish(x))),
            self.presence.map(|x| Ok(ReplyKind::Presence(x))),
            self.history.map(|x| Ok(ReplyKind::History(x))),
            self.refresh.map(|x| Ok(ReplyKind::Refresh(x))),
            self.sub_refresh.map(|x| Ok(ReplyKind::SubRefresh(x))),
            self.ping.map(|x| Ok(ReplyKind::Ping(x))),
        ];
        let mut found = results.into_iter().flatten();
        let first = found.next();
        let more = found.next().is_some();
        match (self.id, self.push, first) {
            (None, Some(push), None) => Ok(ServerMessage::Push(push)),
            (Some(_), Some(_), _) => Err("a message cannot have both `id` and `push`".into()),
            (None, Some(_), Some(_)) => Err("a push cannot carry a reply result".into()),
            (Some(id), None, Some(_)) if more => Err(format!("reply {id} has more than one result")),
            (Some(id), None, Some(result)) => Ok(ServerMessage::Reply(Reply { id, result })),
            (Some(id), None, None) => Err(format!("reply {id} has neither a result nor `error`")),
            (None, None, Some(_)) => Err("reply is missing `id`".into()),
            (None, None, None) => Err("message is neither a reply (`id`) nor a push (`push`)".into()),
        }
    }
}

#[derive(Serialize)]
struct PushRef<'a> {
    push: &'a Push,
}

impl Serialize for ServerMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ServerMessage::Reply(r) => r.serialize(serializer),
            ServerMessage::Push(p) => PushRef { push: p }.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ServerMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        ServerRepr::deserialize(deserializer)?.into_message().map_err(D::Error::custom)
    }
}
