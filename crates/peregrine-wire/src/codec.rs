//! Frames: batches of commands or server messages in one WebSocket message.
//!
//! * JSON (`peregrine.json`, text messages): one JSON object per line, lines separated by
//!   `\n`. Blank lines are ignored. JSON strings cannot hold a raw newline, so splitting on
//!   `\n` is exact.
//! * MessagePack (`peregrine.msgpack`, binary messages): one MessagePack array whose
//!   elements are the messages, each a map with the same keys as in JSON.
//! * Protobuf (`peregrine.protobuf`, binary messages): the messages of
//!   `proto/peregrine.proto`, each prefixed with its length as a varint.

use std::cell::RefCell;
use std::fmt;
use std::io::Cursor;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserializer as _, Serialize};

use crate::{Command, ServerMessage, WireError, protobuf};

/// Default bound on the number of messages in one frame.
pub const MAX_BATCH: usize = 1024;

/// Maximum nesting depth accepted in a MessagePack frame (the frame array counts as one).
/// JSON frames are bounded by `serde_json`'s recursion limit of 128.
pub const MAX_MSGPACK_DEPTH: usize = 128;

/// A wire encoding, chosen by WebSocket subprotocol.
///
/// ```
/// use peregrine_wire::Encoding;
/// assert_eq!(Encoding::from_subprotocol("peregrine.msgpack"), Some(Encoding::MsgPack));
/// assert_eq!(Encoding::Json.subprotocol(), "peregrine.json");
/// assert!(Encoding::Json.is_text());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Newline-delimited JSON in text messages.
    Json,
    /// A MessagePack array in binary messages.
    MsgPack,
    /// Length-delimited Protobuf messages in binary messages.
    Protobuf,
}

impl Encoding {
    /// Every encoding, in the server's order of preference when a client offers several.
    /// Adding an encoding is adding it here and to the `match`es of this module.
    pub const ALL: [Encoding; 3] = [Encoding::Json, Encoding::MsgPack, Encoding::Protobuf];

    /// How many encodings there are: the size of per-encoding tables.
    pub const COUNT: usize = Encoding::ALL.len();

    /// This encoding's position in [`ALL`](Encoding::ALL), to index per-encoding tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The subprotocol names of every encoding, in [`ALL`](Encoding::ALL)'s order.
    pub fn subprotocols() -> [&'static str; Encoding::COUNT] {
        Encoding::ALL.map(Encoding::subprotocol)
    }

    /// The subprotocol name negotiated in `Sec-WebSocket-Protocol`.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => crate::SUBPROTOCOL_JSON,
            Encoding::MsgPack => crate::SUBPROTOCOL_MSGPACK,
            Encoding::Protobuf => crate::SUBPROTOCOL_PROTOBUF,
        }
    }

    /// The encoding for a subprotocol name, if it is one of ours.
    pub fn from_subprotocol(name: &str) -> Option<Encoding> {
        match name {
            crate::SUBPROTOCOL_JSON => Some(Encoding::Json),
            crate::SUBPROTOCOL_MSGPACK => Some(Encoding::MsgPack),
            crate::SUBPROTOCOL_PROTOBUF => Some(Encoding::Protobuf),
            _ => None,
        }
    }

    /// Whether frames go in WebSocket text messages (else binary).
    pub fn is_text(self) -> bool {
        self == Encoding::Json
    }
}

/// Encode commands as one frame.
///
/// ```
/// use peregrine_wire::*;
/// let cmds = [
///     Command { id: 1, kind: CommandKind::Ping(PingRequest {}) },
///     Command { id: 2, kind: CommandKind::Presence(PresenceRequest { channel: "a".into() }) },
/// ];
/// let frame = encode_commands(&cmds, Encoding::Json);
/// assert_eq!(frame, b"{\"id\":1,\"ping\":{}}\n{\"id\":2,\"presence\":{\"channel\":\"a\"}}");
/// for enc in Encoding::ALL {
///     assert_eq!(decode_commands(&encode_commands(&cmds, enc), enc).unwrap(), cmds);
/// }
/// ```
pub fn encode_commands(commands: &[Command], encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Json => encode_json(commands),
        Encoding::MsgPack => encode_msgpack(commands),
        Encoding::Protobuf => protobuf::encode(commands, protobuf::command_to_pb),
    }
}

/// Decode a frame of at most [`MAX_BATCH`] commands.
///
/// ```
/// use peregrine_wire::*;
/// let err = decode_commands(br#"{"id":1,"frobnicate":{}}"#, Encoding::Json).unwrap_err();
/// assert!(err.to_string().contains("unknown field `frobnicate`"), "{err}");
/// ```
pub fn decode_commands(frame: &[u8], encoding: Encoding) -> Result<Vec<Command>, WireError> {
    decode_commands_bounded(frame, encoding, MAX_BATCH)
}

/// Decode a frame of at most `max` commands. A frame with more is rejected without
/// decoding (or allocating for) the excess.
pub fn decode_commands_bounded(
    frame: &[u8],
    encoding: Encoding,
    max: usize,
) -> Result<Vec<Command>, WireError> {
    non_empty(match encoding {
        Encoding::Json => decode_json(frame, max)?,
        Encoding::MsgPack => decode_msgpack(frame, max)?,
        Encoding::Protobuf => protobuf::decode(frame, max, protobuf::command_from_pb)?,
    })
}

/// Encode replies and pushes as one frame.
///
/// ```
/// use peregrine_wire::*;
/// let msgs = [ServerMessage::Push(Push::Message(DirectMessage { data: serde_json::json!("hi").into() }))];
/// assert_eq!(encode_server_messages(&msgs, Encoding::Json), br#"{"push":{"message":{"data":"hi"}}}"#);
/// ```
pub fn encode_server_messages(messages: &[ServerMessage], encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Json => encode_json(messages),
        Encoding::MsgPack => encode_msgpack(messages),
        Encoding::Protobuf => protobuf::encode(messages, protobuf::server_message_to_pb),
    }
}

/// Decode a frame of at most [`MAX_BATCH`] replies and pushes.
pub fn decode_server_messages(frame: &[u8], encoding: Encoding) -> Result<Vec<ServerMessage>, WireError> {
    decode_server_messages_bounded(frame, encoding, MAX_BATCH)
}

/// Decode a frame of at most `max` replies and pushes.
pub fn decode_server_messages_bounded(
    frame: &[u8],
    encoding: Encoding,
    max: usize,
) -> Result<Vec<ServerMessage>, WireError> {
    non_empty(match encoding {
        Encoding::Json => decode_json(frame, max)?,
        Encoding::MsgPack => decode_msgpack(frame, max)?,
        Encoding::Protobuf => protobuf::decode(frame, max, protobuf::server_message_from_pb)?,
    })
}

fn non_empty<T>(items: Vec<T>) -> Result<Vec<T>, WireError> {
    if items.is_empty() {
        return Err(WireError::Empty);
    }
    Ok(items)
}

/// How many bytes `item` takes encoded in `encoding`, without keeping the encoding.
///
/// ```
/// use peregrine_wire::{encoded_size, Encoding, PingRequest};
/// assert_eq!(encoded_size(&PingRequest {}, Encoding::Json), 2); // {}
/// assert_eq!(encoded_size(&PingRequest {}, Encoding::MsgPack), 1); // fixmap(0)
/// ```
pub fn encoded_size<T: Serialize + ?Sized>(item: &T, encoding: Encoding) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = match encoding {
        // Protobuf is never larger than JSON for the same message (no keys, no quoting,
        // no base64): the JSON size bounds it.
        Encoding::Json | Encoding::Protobuf => serde_json::to_writer(&mut count, item).map_err(|_| ()),
        Encoding::MsgPack => rmp_serde::encode::write_named(&mut count, item).map_err(|_| ()),
    };
    count.0
}

fn encode_json<T: Serialize>(items: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        // Writing to a Vec cannot fail and every map key in these types is a string.
        serde_json::to_writer(&mut out, item).expect("JSON encoding of wire types is infallible");
    }
    out
}

fn encode_msgpack<T: Serialize>(items: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp_serde::encode::write_named(&mut out, items)
        .expect("MessagePack encoding of wire types is infallible");
    out
}

fn decode_json<T: DeserializeOwned>(frame: &[u8], max: usize) -> Result<Vec<T>, WireError> {
    let mut out = Vec::new();
    for line in frame.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if out.len() == max {
            return Err(WireError::TooMany { max });
        }
        let item = serde_json::from_slice(line)
            .map_err(|e| WireError::Message { index: out.len(), message: e.to_string() })?;
        out.push(item);
    }
    Ok(out)
}

fn decode_msgpack<T: DeserializeOwned>(frame: &[u8], max: usize) -> Result<Vec<T>, WireError> {
    let failure = RefCell::new(None);
    let mut cursor = Cursor::new(frame);
    let mut de = rmp_serde::Deserializer::new(&mut cursor);
    de.set_max_depth(MAX_MSGPACK_DEPTH);
    let result = de.deserialize_seq(Bounded::<T> { max, failure: &failure, _t: PhantomData });
    drop(de);
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            return Err(failure.into_inner().unwrap_or(WireError::NotAnArray { message: e.to_string() }));
        }
    };
    let rest = frame.len() as u64 - cursor.position();
    if rest > 0 {
        return Err(WireError::TrailingBytes { count: rest as usize });
    }
    Ok(out)
}

struct Bounded<'a, T> {
    max: usize,
    failure: &'a RefCell<Option<WireError>>,
    _t: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Bounded<'_, T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        use serde::de::Error;
        let fail = |e: WireError| {
            let msg = e.to_string();
            *self.failure.borrow_mut() = Some(e);
            A::Error::custom(msg)
        };
        let hint = seq.size_hint().unwrap_or(0);
        if hint > self.max {
            return Err(fail(WireError::TooMany { max: self.max }));
        }
        let mut out = Vec::with_capacity(hint);
        loop {
            let index = out.len();
            match seq.next_element::<T>() {
                Ok(Some(_)) if index == self.max => return Err(fail(WireError::TooMany { max: self.max })),
                Ok(Some(item)) => out.push(item),
                Ok(None) => return Ok(out),
                Err(e) => return Err(fail(WireError::Message { index, message: e.to_string() })),
            }
        }
    }
}
