//! Realtime commands built from fuzzer bytes with `arbitrary`: every command type, with
//! channels, tokens and stream positions drawn mostly from small sets (so that a sequence
//! subscribes, publishes and unsubscribes the *same* channels) and sometimes raw.
//!
//! A [`CommandSpec`] is turned into a wire [`Command`] by [`CommandSpec::build`]; what a
//! token or a position stands for is up to the caller's [`Resolve`] (the session target
//! signs real tokens and reads the channel's real position; the codec target writes them
//! as plain strings and numbers).

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Result, Unstructured};
use peregrine_wire::{
    Command, CommandKind, ConnectRequest, HistoryRequest, Payload, PingRequest, PresenceRequest,
    PublishRequest, RefreshRequest, StreamPosition, SubRefreshRequest, SubscribeOptions, SubscribeRequest,
    UnsubscribeRequest,
};

/// Channel names the sequences share: one per namespace of the session target's
/// configuration, plus names the server must refuse (unknown namespace, empty, a space,
/// longer than 255 bytes).
pub const CHANNELS: [&str; 12] = [
    "news", "chat:a", "chat:b", "hist:a", "hist:b", "priv:a", "priv:b", "ro:a", "one:a", "nope:a", "",
    "bad name",
];

/// A channel: one of [`CHANNELS`], a name too long to be valid, or any string.
#[derive(Debug, Clone)]
pub enum ChannelSpec {
    Known(usize),
    TooLong,
    Raw(String),
}

impl<'a> Arbitrary<'a> for ChannelSpec {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        // Mostly known names, so that commands of one sequence meet on the same channels.
        Ok(match u.int_in_range(0..=15u8)? {
            0..=12 => ChannelSpec::Known(u.choose_index(CHANNELS.len())?),
            13 => ChannelSpec::TooLong,
            _ => ChannelSpec::Raw(u.arbitrary()?),
        })
    }
}

impl ChannelSpec {
    pub fn name(&self) -> String {
        match self {
            ChannelSpec::Known(i) => CHANNELS[*i].to_owned(),
            ChannelSpec::TooLong => format!("hist:{}", "x".repeat(300)),
            ChannelSpec::Raw(s) => s.clone(),
        }
    }
}

/// When a token expires.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Expiry {
    Never,
    /// An hour ago: refused when checked.
    Past,
    /// This second: accepted, then expired at once.
    Now,
    /// In an hour.
    Later,
}

/// A connection or subscription token.
#[derive(Debug, Clone, Arbitrary)]
pub enum TokenSpec {
    /// A connection token for user `user % 3` (`alice`, `bob`, anonymous), asking for
    /// server-side subscriptions to `channels`.
    Connection { user: u8, expiry: Expiry, channels: Vec<ChannelSpec> },
    /// A subscription token for a (private) channel.
    Subscription { user: u8, channel: ChannelSpec, expiry: Expiry },
    /// A well-formed token signed with another key.
    WrongKey { user: u8 },
    /// Not a token at all.
    Garbage(String),
}

/// The epoch of a stream position.
#[derive(Debug, Clone, Arbitrary)]
pub enum EpochSpec {
    /// The channel's current epoch.
    Current,
    Empty,
    Other(String),
}

/// The offset of a stream position, relative to the channel's top when it is known.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum OffsetSpec {
    Top,
    Behind(u8),
    Ahead(u8),
    Any(u64),
}

/// A `since` position.
#[derive(Debug, Clone, Arbitrary)]
pub struct PositionSpec {
    pub epoch: EpochSpec,
    pub offset: OffsetSpec,
}

/// A command id: a fresh one, the previous one again, or an unusual value.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum IdSpec {
    Next,
    Repeat,
    Zero,
    Max,
    Any(u64),
}

/// A publication payload.
#[derive(Debug, Clone)]
pub enum DataSpec {
    Json(serde_json::Value),
    /// Any text: published as JSON when it is JSON, else as bytes.
    Text(String),
    Binary(Vec<u8>),
    /// `len` bytes of JSON string, up to about 64 KiB: larger than the session target's
    /// page of history, so recoveries stream.
    Big(u16),
}

impl<'a> Arbitrary<'a> for DataSpec {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0..=3u8)? {
            0 => DataSpec::Json(json_value(u, 3)?),
            1 => DataSpec::Text(u.arbitrary()?),
            2 => DataSpec::Binary(u.arbitrary()?),
            _ => DataSpec::Big(u.arbitrary()?),
        })
    }
}

/// A JSON value nested at most `depth` deep.
fn json_value(u: &mut Unstructured<'_>, depth: u32) -> Result<serde_json::Value> {
    use serde_json::Value;
    let pick = if depth == 0 { u.int_in_range(0..=4u8)? } else { u.int_in_range(0..=6u8)? };
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        4 => Value::String(u.arbitrary()?),
        5 => {
            let len = u.int_in_range(0..=4)?;
            Value::Array((0..len).map(|_| json_value(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => {
            let len = u.int_in_range(0..=4)?;
            let mut map = serde_json::Map::new();
            for _ in 0..len {
                map.insert(u.arbitrary()?, json_value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

impl DataSpec {
    pub fn payload(&self) -> Payload {
        match self {
            DataSpec::Json(v) => Payload::from(v.clone()),
            DataSpec::Text(t) => Payload::json_text(t.clone()).unwrap_or_else(|_| Payload::binary(t.clone())),
            DataSpec::Binary(b) => Payload::binary(b.clone()),
            DataSpec::Big(len) => Payload::from(serde_json::Value::String("x".repeat(*len as usize))),
        }
    }
}

/// Subscription options (of `subscribe`, or of one entry of `connect.subs`).
#[derive(Debug, Clone, Arbitrary)]
pub struct OptionsSpec {
    pub token: Option<TokenSpec>,
    pub since: Option<PositionSpec>,
    pub recover: bool,
    pub join_leave: Option<bool>,
}

/// The protocol version a `connect` names: mostly none or the server's.
#[derive(Debug, Clone, Copy)]
pub enum VersionSpec {
    Unsaid,
    Current,
    Any(u32),
}

impl<'a> Arbitrary<'a> for VersionSpec {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0..=7u8)? {
            0..=3 => VersionSpec::Unsaid,
            4..=6 => VersionSpec::Current,
            _ => VersionSpec::Any(u.arbitrary()?),
        })
    }
}

/// One command.
#[derive(Debug, Clone, Arbitrary)]
pub enum KindSpec {
    Connect {
        token: Option<TokenSpec>,
        name: Option<String>,
        version: VersionSpec,
        subs: Vec<(ChannelSpec, OptionsSpec)>,
    },
    Subscribe {
        channel: ChannelSpec,
        options: OptionsSpec,
    },
    Unsubscribe {
        channel: ChannelSpec,
    },
    Publish {
        channel: ChannelSpec,
        data: DataSpec,
        idempotency_key: Option<u8>,
    },
    Presence {
        channel: ChannelSpec,
    },
    History {
        channel: ChannelSpec,
        limit: Option<u32>,
        since: Option<PositionSpec>,
        reverse: bool,
    },
    Refresh {
        token: TokenSpec,
    },
    SubRefresh {
        channel: ChannelSpec,
        token: TokenSpec,
    },
    Ping,
}

/// One command and its id.
#[derive(Debug, Clone, Arbitrary)]
pub struct CommandSpec {
    pub id: IdSpec,
    pub kind: KindSpec,
}

/// What tokens and positions stand for.
pub trait Resolve {
    /// The token's text.
    fn token(&mut self, token: &TokenSpec) -> String;
    /// The position `since` stands for in `channel`.
    fn position(&mut self, channel: &str, since: &PositionSpec) -> StreamPosition;
}

/// Resolves without a server: tokens are plain strings, offsets and epochs literal.
pub struct Literal;

impl Resolve for Literal {
    fn token(&mut self, token: &TokenSpec) -> String {
        match token {
            TokenSpec::Garbage(s) => s.clone(),
            other => format!("{other:?}"),
        }
    }

    fn position(&mut self, _channel: &str, since: &PositionSpec) -> StreamPosition {
        let epoch = match &since.epoch {
            EpochSpec::Current => "current".to_owned(),
            EpochSpec::Empty => String::new(),
            EpochSpec::Other(s) => s.clone(),
        };
        let offset = match since.offset {
            OffsetSpec::Top => 0,
            OffsetSpec::Behind(n) | OffsetSpec::Ahead(n) => u64::from(n),
            OffsetSpec::Any(n) => n,
        };
        StreamPosition { epoch, offset }
    }
}

/// Gives command ids: `last` is the id given before.
#[derive(Debug, Default)]
pub struct Ids {
    last: u64,
}

impl Ids {
    pub fn id(&mut self, spec: IdSpec) -> u64 {
        self.last = match spec {
            IdSpec::Next => self.last.wrapping_add(1),
            IdSpec::Repeat => self.last,
            IdSpec::Zero => 0,
            IdSpec::Max => u64::MAX,
            IdSpec::Any(n) => n,
        };
        self.last
    }
}

impl OptionsSpec {
    fn build(&self, channel: &str, r: &mut impl Resolve) -> SubscribeOptions {
        SubscribeOptions {
            token: self.token.as_ref().map(|t| r.token(t)),
            since: self.since.as_ref().map(|p| r.position(channel, p)),
            recover: self.recover,
            join_leave: self.join_leave,
        }
    }
}

impl CommandSpec {
    /// The wire command.
    pub fn build(&self, ids: &mut Ids, r: &mut impl Resolve) -> Command {
        let kind = match &self.kind {
            KindSpec::Connect { token, name, version, subs } => {
                let subs: BTreeMap<String, SubscribeOptions> = subs
                    .iter()
                    .map(|(c, o)| {
                        let channel = c.name();
                        let options = o.build(&channel, r);
                        (channel, options)
                    })
                    .collect();
                CommandKind::Connect(ConnectRequest {
                    token: token.as_ref().map(|t| r.token(t)),
                    name: name.clone(),
                    version: match *version {
                        VersionSpec::Unsaid => None,
                        VersionSpec::Current => Some(peregrine_wire::PROTOCOL_VERSION),
                        VersionSpec::Any(v) => Some(v),
                    },
                    subs,
                })
            }
            KindSpec::Subscribe { channel, options } => {
                let channel = channel.name();
                let o = options.build(&channel, r);
                CommandKind::Subscribe(SubscribeRequest {
                    channel,
                    token: o.token,
                    since: o.since,
                    recover: o.recover,
                    join_leave: o.join_leave,
                })
            }
            KindSpec::Unsubscribe { channel } => {
                CommandKind::Unsubscribe(UnsubscribeRequest { channel: channel.name() })
            }
            KindSpec::Publish { channel, data, idempotency_key } => CommandKind::Publish(PublishRequest {
                channel: channel.name(),
                data: data.payload(),
                idempotency_key: idempotency_key.map(|k| format!("key-{k}")),
            }),
            KindSpec::Presence { channel } => {
                CommandKind::Presence(PresenceRequest { channel: channel.name() })
            }
            KindSpec::History { channel, limit, since, reverse } => {
                let channel = channel.name();
                let since = since.as_ref().map(|p| r.position(&channel, p));
                CommandKind::History(HistoryRequest { channel, limit: *limit, since, reverse: *reverse })
            }
            KindSpec::Refresh { token } => CommandKind::Refresh(RefreshRequest { token: r.token(token) }),
            KindSpec::SubRefresh { channel, token } => {
                CommandKind::SubRefresh(SubRefreshRequest { channel: channel.name(), token: r.token(token) })
            }
            KindSpec::Ping => CommandKind::Ping(PingRequest {}),
        };
        Command { id: ids.id(self.id), kind }
    }
}
