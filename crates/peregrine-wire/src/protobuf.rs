//! The Protobuf encoding (`peregrine.protobuf`): the types prost generates from
//! `proto/peregrine.proto` ([`pb`]), their conversions to and from this crate's types, and
//! the framing (length-delimited messages in one binary WebSocket message).
//!
//! Decoding never panics and never allocates by a length the peer claims beyond what the
//! frame holds (prost checks each length against the bytes left); nesting is bounded by
//! prost's recursion limit (100).

use bytes::Bytes;

use crate::payload::Payload;
use crate::{
    ClientInfo, Command, CommandKind, ConnectRequest, ConnectResult, DirectMessage, Gap, HistoryRequest,
    HistoryResult, PingRequest, PingResult, PresenceRequest, PresenceResult, Publication, PublishRequest,
    PublishResult, Push, RefreshRequest, RefreshResult, Reply, ReplyError, ReplyKind, ServerMessage,
    StreamPosition, SubRefreshRequest, SubRefreshResult, SubscribeOptions, SubscribeRequest, SubscribeResult,
    UnsubscribeRequest, UnsubscribeResult, WireError,
};

/// The types generated from `proto/peregrine.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/peregrine.v1.rs"));
}

/// Encodes messages as one frame: each length-delimited.
pub(crate) fn encode<T, P: prost::Message>(items: &[T], to_pb: impl Fn(&T) -> P) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        // Writing to a Vec cannot run out of room.
        let _ = to_pb(item).encode_length_delimited(&mut out);
    }
    out
}

/// Decodes a frame of at most `max` length-delimited messages.
pub(crate) fn decode<T, P: prost::Message + Default>(
    frame: &[u8],
    max: usize,
    from_pb: impl Fn(P) -> Result<T, String>,
) -> Result<Vec<T>, WireError> {
    let mut rest = frame;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let index = out.len();
        if index == max {
            return Err(WireError::TooMany { max });
        }
        let message = P::decode_length_delimited(&mut rest)
            .map_err(|e| WireError::Message { index, message: e.to_string() })?;
        out.push(from_pb(message).map_err(|message| WireError::Message { index, message })?);
    }
    Ok(out)
}

/// A publication as a broker stores it and forwards it between nodes: one Protobuf
/// `Publication` (not length-delimited), its payload's bytes kept as they are.
pub fn publication_to_bytes(p: &Publication) -> Vec<u8> {
    prost::Message::encode_to_vec(&publication(p))
}

/// Reads what [`publication_to_bytes`] wrote.
pub fn publication_from_bytes(bytes: &[u8]) -> Result<Publication, WireError> {
    let message = |message: String| WireError::Message { index: 0, message };
    let p = <pb::Publication as prost::Message>::decode(bytes).map_err(|e| message(e.to_string()))?;
    from_publication(p).map_err(message)
}

/// A client's info as a broker stores it (presence) and forwards it (join and leave).
pub fn client_info_to_bytes(i: &ClientInfo) -> Vec<u8> {
    prost::Message::encode_to_vec(&client_info(i))
}

/// Reads what [`client_info_to_bytes`] wrote.
pub fn client_info_from_bytes(bytes: &[u8]) -> Result<ClientInfo, WireError> {
    let message = |message: String| WireError::Message { index: 0, message };
    let i = <pb::ClientInfo as prost::Message>::decode(bytes).map_err(|e| message(e.to_string()))?;
    from_client_info(i).map_err(message)
}

// ---- to Protobuf ----

fn position(p: &StreamPosition) -> pb::StreamPosition {
    pb::StreamPosition { epoch: p.epoch.clone(), offset: p.offset }
}

fn payload(p: &Payload) -> (Bytes, bool) {
    match p {
        Payload::Binary(bytes) => (bytes.clone(), true),
        Payload::Json(_) => (Bytes::copy_from_slice(p.as_bytes()), false),
    }
}

fn json_bytes(v: &Option<serde_json::Value>) -> Option<Bytes> {
    v.as_ref().map(|v| Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
}

fn subscribe_options(o: &SubscribeOptions) -> pb::SubscribeOptions {
    pb::SubscribeOptions {
        token: o.token.clone(),
        since: o.since.as_ref().map(position),
        recover: o.recover,
        join_leave: o.join_leave,
    }
}

/// A command as its Protobuf message.
pub(crate) fn command_to_pb(c: &Command) -> pb::Command {
    use pb::command::Kind;
    let kind = match &c.kind {
        CommandKind::Connect(r) => Kind::Connect(pb::ConnectRequest {
            token: r.token.clone(),
            name: r.name.clone(),
            version: r.version,
            subs: r.subs.iter().map(|(k, v)| (k.clone(), subscribe_options(v))).collect(),
        }),
        CommandKind::Subscribe(r) => Kind::Subscribe(pb::SubscribeRequest {
            channel: r.channel.clone(),
            token: r.token.clone(),
            since: r.since.as_ref().map(position),
            recover: r.recover,
            join_leave: r.join_leave,
        }),
        CommandKind::Unsubscribe(r) => {
            Kind::Unsubscribe(pb::UnsubscribeRequest { channel: r.channel.clone() })
        }
        CommandKind::Publish(r) => {
            let (data, binary) = payload(&r.data);
            Kind::Publish(pb::PublishRequest {
                channel: r.channel.clone(),
                data,
                binary,
                idempotency_key: r.idempotency_key.clone(),
            })
        }
        CommandKind::Presence(r) => Kind::Presence(pb::PresenceRequest { channel: r.channel.clone() }),
        CommandKind::History(r) => Kind::History(pb::HistoryRequest {
            channel: r.channel.clone(),
            limit: r.limit,
            since: r.since.as_ref().map(position),
            reverse: r.reverse,
        }),
        CommandKind::Refresh(r) => Kind::Refresh(pb::RefreshRequest { token: r.token.clone() }),
        CommandKind::SubRefresh(r) => {
            Kind::SubRefresh(pb::SubRefreshRequest { channel: r.channel.clone(), token: r.token.clone() })
        }
        CommandKind::Ping(_) => Kind::Ping(pb::PingRequest {}),
    };
    pb::Command { id: c.id, kind: Some(kind) }
}

fn client_info(i: &ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        user: i.user.clone(),
        client: i.client.clone(),
        conn_info: json_bytes(&i.conn_info),
        chan_info: json_bytes(&i.chan_info),
    }
}

fn publication(p: &Publication) -> pb::Publication {
    let (data, binary) = payload(&p.data);
    pb::Publication {
        offset: p.offset,
        epoch: p.epoch.clone(),
        data,
        binary,
        info: p.info.as_ref().map(client_info),
        tags: p.tags.clone().unwrap_or_default(),
    }
}

fn subscribe_result(r: &SubscribeResult) -> pb::SubscribeResult {
    pb::SubscribeResult {
        epoch: r.epoch.clone(),
        offset: r.offset,
        recovered: r.recovered,
        publications: r.publications.iter().map(publication).collect(),
        gap: r.gap.map(|g| pb::Gap { from: g.from, to: g.to }),
        positioned: r.positioned,
        more: r.more,
        expires: r.expires,
    }
}

fn reply_to_pb(r: &Reply) -> pb::Reply {
    use pb::reply::Result as R;
    let result = match &r.result {
        Err(e) => {
            R::Error(pb::ReplyError { code: e.code, message: e.message.clone(), temporary: e.temporary })
        }
        Ok(ReplyKind::Connect(c)) => R::Connect(pb::ConnectResult {
            client_id: c.client_id.clone(),
            version: c.version,
            expires: c.expires,
            ping_interval_ms: c.ping_interval_ms,
            subs: c.subs.iter().map(|(k, v)| (k.clone(), subscribe_result(v))).collect(),
        }),
        Ok(ReplyKind::Subscribe(s)) => R::Subscribe(subscribe_result(s)),
        Ok(ReplyKind::Unsubscribe(_)) => R::Unsubscribe(pb::UnsubscribeResult {}),
        Ok(ReplyKind::Publish(p)) => {
            R::Publish(pb::PublishResult { offset: p.offset, epoch: p.epoch.clone(), duplicate: p.duplicate })
        }
        Ok(ReplyKind::Presence(p)) => R::Presence(pb::PresenceResult {
            clients: p.clients.iter().map(|(k, v)| (k.clone(), client_info(v))).collect(),
        }),
        Ok(ReplyKind::History(h)) => R::History(pb::HistoryResult {
            publications: h.publications.iter().map(publication).collect(),
            epoch: h.epoch.clone(),
            offset: h.offset,
            more: h.more,
        }),
        Ok(ReplyKind::Refresh(x)) => R::Refresh(pb::RefreshResult { expires: x.expires }),
        Ok(ReplyKind::SubRefresh(x)) => R::SubRefresh(pb::SubRefreshResult { expires: x.expires }),
        Ok(ReplyKind::Ping(_)) => R::Ping(pb::PingResult {}),
    };
    pb::Reply { id: r.id, result: Some(result) }
}

fn push_to_pb(p: &Push) -> pb::Push {
    use pb::push::Kind;
    let kind = match p {
        Push::Publication { channel, publication: p } => Kind::Publication(pb::PublicationPush {
            channel: channel.clone(),
            publication: Some(publication(p)),
        }),
        Push::Join { channel, info } => {
            Kind::Join(pb::JoinPush { channel: channel.clone(), info: Some(client_info(info)) })
        }
        Push::Leave { channel, info } => {
            Kind::Leave(pb::LeavePush { channel: channel.clone(), info: Some(client_info(info)) })
        }
        Push::Unsubscribe { channel, code, reason } => Kind::Unsubscribe(pb::UnsubscribePush {
            channel: channel.clone(),
            code: *code,
            reason: reason.clone(),
        }),
        Push::Disconnect { code, reason, reconnect } => Kind::Disconnect(pb::DisconnectPush {
            code: u32::from(*code),
            reason: reason.clone(),
            reconnect: *reconnect,
        }),
        Push::Message(m) => {
            let (data, binary) = payload(&m.data);
            Kind::Message(pb::MessagePush { data, binary })
        }
    };
    pb::Push { kind: Some(kind) }
}

/// A server message as its Protobuf message.
pub(crate) fn server_message_to_pb(m: &ServerMessage) -> pb::ServerMessage {
    use pb::server_message::Kind;
    let kind = match m {
        ServerMessage::Reply(r) => Kind::Reply(reply_to_pb(r)),
        ServerMessage::Push(p) => Kind::Push(push_to_pb(p)),
    };
    pb::ServerMessage { kind: Some(kind) }
}

// ---- from Protobuf ----

fn from_position(p: pb::StreamPosition) -> StreamPosition {
    StreamPosition { epoch: p.epoch, offset: p.offset }
}

fn from_json_bytes(field: &str, bytes: Option<Bytes>) -> Result<Option<serde_json::Value>, String> {
    bytes.map(|b| serde_json::from_slice(&b).map_err(|e| format!("`{field}` is not JSON: {e}"))).transpose()
}

fn from_subscribe_options(o: pb::SubscribeOptions) -> SubscribeOptions {
    SubscribeOptions {
        token: o.token,
        since: o.since.map(from_position),
        recover: o.recover,
        join_leave: o.join_leave,
    }
}

/// A command from its Protobuf message.
pub(crate) fn command_from_pb(c: pb::Command) -> Result<Command, String> {
    use pb::command::Kind;
    let id = c.id;
    let kind = match c.kind.ok_or_else(|| format!("command {id} has no type"))? {
        Kind::Connect(r) => CommandKind::Connect(ConnectRequest {
            token: r.token,
            name: r.name,
            version: r.version,
            subs: r.subs.into_iter().map(|(k, v)| (k, from_subscribe_options(v))).collect(),
        }),
        Kind::Subscribe(r) => CommandKind::Subscribe(SubscribeRequest {
            channel: r.channel,
            token: r.token,
            since: r.since.map(from_position),
            recover: r.recover,
            join_leave: r.join_leave,
        }),
        Kind::Unsubscribe(r) => CommandKind::Unsubscribe(UnsubscribeRequest { channel: r.channel }),
        Kind::Publish(r) => CommandKind::Publish(PublishRequest {
            channel: r.channel,
            data: Payload::from_bytes(r.data, r.binary)?,
            idempotency_key: r.idempotency_key,
        }),
        Kind::Presence(r) => CommandKind::Presence(PresenceRequest { channel: r.channel }),
        Kind::History(r) => CommandKind::History(HistoryRequest {
            channel: r.channel,
            limit: r.limit,
            since: r.since.map(from_position),
            reverse: r.reverse,
        }),
        Kind::Refresh(r) => CommandKind::Refresh(RefreshRequest { token: r.token }),
        Kind::SubRefresh(r) => {
            CommandKind::SubRefresh(SubRefreshRequest { channel: r.channel, token: r.token })
        }
        Kind::Ping(_) => CommandKind::Ping(PingRequest {}),
    };
    Ok(Command { id, kind })
}

fn from_client_info(i: pb::ClientInfo) -> Result<ClientInfo, String> {
    Ok(ClientInfo {
        user: i.user,
        client: i.client,
        conn_info: from_json_bytes("conn_info", i.conn_info)?,
        chan_info: from_json_bytes("chan_info", i.chan_info)?,
    })
}

fn from_publication(p: pb::Publication) -> Result<Publication, String> {
    Ok(Publication {
        offset: p.offset,
        epoch: p.epoch,
        data: Payload::from_bytes(p.data, p.binary)?,
        info: p.info.map(from_client_info).transpose()?,
        tags: (!p.tags.is_empty()).then_some(p.tags),
    })
}

fn from_publications(ps: Vec<pb::Publication>) -> Result<Vec<Publication>, String> {
    ps.into_iter().map(from_publication).collect()
}

fn from_subscribe_result(r: pb::SubscribeResult) -> Result<SubscribeResult, String> {
    Ok(SubscribeResult {
        epoch: r.epoch,
        offset: r.offset,
        recovered: r.recovered,
        publications: from_publications(r.publications)?,
        gap: r.gap.map(|g| Gap { from: g.from, to: g.to }),
        positioned: r.positioned,
        more: r.more,
        expires: r.expires,
    })
}

fn from_reply(r: pb::Reply) -> Result<Reply, String> {
    use pb::reply::Result as R;
    let id = r.id;
    let result = match r.result.ok_or_else(|| format!("reply {id} has neither a result nor an error"))? {
        R::Error(e) => Err(ReplyError { code: e.code, message: e.message, temporary: e.temporary }),
        R::Connect(c) => Ok(ReplyKind::Connect(ConnectResult {
            client_id: c.client_id,
            version: c.version,
            expires: c.expires,
            ping_interval_ms: c.ping_interval_ms,
            subs: c
                .subs
                .into_iter()
                .map(|(k, v)| Ok((k, from_subscribe_result(v)?)))
                .collect::<Result<_, String>>()?,
        })),
        R::Subscribe(s) => Ok(ReplyKind::Subscribe(from_subscribe_result(s)?)),
        R::Unsubscribe(_) => Ok(ReplyKind::Unsubscribe(UnsubscribeResult {})),
        R::Publish(p) => {
            Ok(ReplyKind::Publish(PublishResult { offset: p.offset, epoch: p.epoch, duplicate: p.duplicate }))
        }
        R::Presence(p) => Ok(ReplyKind::Presence(PresenceResult {
            clients: p
                .clients
                .into_iter()
                .map(|(k, v)| Ok((k, from_client_info(v)?)))
                .collect::<Result<_, String>>()?,
        })),
        R::History(h) => Ok(ReplyKind::History(HistoryResult {
            publications: from_publications(h.publications)?,
            epoch: h.epoch,
            offset: h.offset,
            more: h.more,
        })),
        R::Refresh(x) => Ok(ReplyKind::Refresh(RefreshResult { expires: x.expires })),
        R::SubRefresh(x) => Ok(ReplyKind::SubRefresh(SubRefreshResult { expires: x.expires })),
        R::Ping(_) => Ok(ReplyKind::Ping(PingResult {})),
    };
    Ok(Reply { id, result })
}

fn from_push(p: pb::Push) -> Result<Push, String> {
    use pb::push::Kind;
    let missing = |what: &str| format!("push without its {what}");
    Ok(match p.kind.ok_or_else(|| missing("type"))? {
        Kind::Publication(x) => Push::Publication {
            channel: x.channel,
            publication: from_publication(x.publication.ok_or_else(|| missing("publication"))?)?,
        },
        Kind::Join(x) => {
            Push::Join { channel: x.channel, info: from_client_info(x.info.ok_or_else(|| missing("info"))?)? }
        }
        Kind::Leave(x) => Push::Leave {
            channel: x.channel,
            info: from_client_info(x.info.ok_or_else(|| missing("info"))?)?,
        },
        Kind::Unsubscribe(x) => Push::Unsubscribe { channel: x.channel, code: x.code, reason: x.reason },
        Kind::Disconnect(x) => Push::Disconnect {
            code: u16::try_from(x.code)
                .map_err(|_| format!("disconnect code {} is not a close code", x.code))?,
            reason: x.reason,
            reconnect: x.reconnect,
        },
        Kind::Message(x) => Push::Message(DirectMessage { data: Payload::from_bytes(x.data, x.binary)? }),
    })
}

/// A server message from its Protobuf message.
pub(crate) fn server_message_from_pb(m: pb::ServerMessage) -> Result<ServerMessage, String> {
    use pb::server_message::Kind;
    match m.kind.ok_or("message is neither a reply nor a push")? {
        Kind::Reply(r) => from_reply(r).map(ServerMessage::Reply),
        Kind::Push(p) => from_push(p).map(ServerMessage::Push),
    }
}
