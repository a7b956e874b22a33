//! Helpers shared by the integration tests: frames built byte by byte, a
//! parser for what a connection sends, and assertions in the style of
//! python-websockets' `assertFrameSent` / `assertConnectionFailing`.
//!
//! Nothing here uses the crate's own encoder or decoder: frames are spelled
//! out from RFC 6455 §5.2 so that a bug in `frame.rs` cannot hide itself.

#![allow(dead_code)]

use bytes::Buf;
use peregrine_proto::{
    CloseCode, CloseFrame, Connection, DataKind, Event, Fragment, Message, ProtocolError, Role,
};

pub const CONT: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

pub const RSV1: u8 = 0b100;
pub const RSV2: u8 = 0b010;
pub const RSV3: u8 = 0b001;

/// The masking key of RFC 6455 §5.7: every byte non-zero, so an unmasking
/// error at any offset shows.
pub const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

pub const ROLES: [Role; 2] = [Role::Server, Role::Client];

/// The other end.
pub fn peer_of(role: Role) -> Role {
    match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    }
}

// ---- building frames ------------------------------------------------------

/// A frame header with the shortest length encoding.
pub fn header(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 0b111) << 4) | (opcode & 0x0f)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len <= 125 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// XOR with a repeating key (its own inverse), byte by byte.
pub fn xor_mask(data: &[u8], key: [u8; 4]) -> Vec<u8> {
    data.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect()
}

/// A whole frame, masked with `mask` when given.
pub fn raw_frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = header(fin, rsv, opcode, mask, payload.len() as u64);
    match mask {
        Some(key) => out.extend(xor_mask(payload, key)),
        None => out.extend_from_slice(payload),
    }
    out
}

/// A frame as a client sends it: masked with [`KEY`].
pub fn client_frame(opcode: u8, fin: bool, rsv: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(fin, rsv, opcode, Some(KEY), payload)
}

/// A frame as a server sends it: unmasked.
pub fn server_frame(opcode: u8, fin: bool, rsv: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(fin, rsv, opcode, None, payload)
}

/// A correctly masked frame from the peer of a connection with `role`.
pub fn frame_to(role: Role, opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    match role {
        Role::Server => client_frame(opcode, fin, 0, payload),
        Role::Client => server_frame(opcode, fin, 0, payload),
    }
}

/// A header as the peer of `role` would send it (masked towards a server).
pub fn header_to(role: Role, fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mask = (role == Role::Server).then_some(KEY);
    header(fin, 0, opcode, mask, len)
}

pub fn text_to(role: Role, text: &str) -> Vec<u8> {
    frame_to(role, TEXT, true, text.as_bytes())
}

pub fn binary_to(role: Role, data: &[u8]) -> Vec<u8> {
    frame_to(role, BINARY, true, data)
}

pub fn ping_to(role: Role, data: &[u8]) -> Vec<u8> {
    frame_to(role, PING, true, data)
}

pub fn pong_to(role: Role, data: &[u8]) -> Vec<u8> {
    frame_to(role, PONG, true, data)
}

/// A close frame carrying `code` and `reason`.
pub fn close_to(role: Role, code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame_to(role, CLOSE, true, &payload)
}

/// Concatenates frames into one byte stream.
pub fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

// ---- reading what a connection sends ---------------------------------------

/// One frame parsed from a connection's output, payload already unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload: Vec<u8>,
}

impl WireFrame {
    /// The close code in a close frame's payload.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The close reason (after the code), checked to be UTF-8.
    pub fn close_reason(&self) -> &str {
        std::str::from_utf8(&self.payload[2..]).expect("close reason must be UTF-8")
    }
}

/// Parses a byte stream into frames; panics on anything malformed or on
/// trailing bytes.
pub fn parse_frames(mut bytes: &[u8]) -> Vec<WireFrame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 2, "truncated header: {bytes:x?}");
        let fin = bytes[0] & 0x80 != 0;
        let rsv = (bytes[0] >> 4) & 0b111;
        let opcode = bytes[0] & 0x0f;
        let masked = bytes[1] & 0x80 != 0;
        let (len, mut at) = match bytes[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => {
                let mut be = [0; 8];
                be.copy_from_slice(&bytes[2..10]);
                (u64::from_be_bytes(be), 10)
            }
            n => (u64::from(n), 2),
        };
        // Minimal length encoding (RFC 6455 §5.2: "the minimal number of bytes MUST be used").
        match at {
            4 => assert!(len >= 126, "16-bit length {len} should use the 7-bit form"),
            10 => assert!(len > 0xffff && len >> 63 == 0, "bad 64-bit length {len}"),
            _ => {}
        }
        let mask = masked.then(|| {
            let key = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
            at += 4;
            key
        });
        let len = usize::try_from(len).expect("length fits");
        assert!(bytes.len() >= at + len, "truncated payload: want {len}, have {}", bytes.len() - at);
        let raw = &bytes[at..at + len];
        let payload = match mask {
            Some(key) => xor_mask(raw, key),
            None => raw.to_vec(),
        };
        frames.push(WireFrame { fin, rsv, opcode, mask, payload });
        bytes = &bytes[at + len..];
    }
    frames
}

/// Takes every pending output byte (as a driver writing it all out would).
pub fn take_output(conn: &mut Connection) -> Vec<u8> {
    let out = conn.output();
    let mut bytes = Vec::with_capacity(out.remaining());
    while out.has_remaining() {
        let chunk = out.chunk();
        let n = chunk.len();
        assert!(n > 0, "chunk() is empty while remaining() is {}", out.remaining());
        bytes.extend_from_slice(chunk);
        out.advance(n);
    }
    bytes
}

/// Takes and parses the pending output, checking every frame is masked as the
/// connection's role requires (clients always, servers never) and has no RSV
/// bits set.
pub fn sent_frames(conn: &mut Connection) -> Vec<WireFrame> {
    let role = conn.role();
    let frames = parse_frames(&take_output(conn));
    for frame in &frames {
        match role {
            Role::Client => assert!(frame.mask.is_some(), "client sent an unmasked frame: {frame:?}"),
            Role::Server => assert!(frame.mask.is_none(), "server sent a masked frame: {frame:?}"),
        }
        assert_eq!(frame.rsv, 0, "RSV bits set without an extension: {frame:?}");
    }
    frames
}

/// Asserts nothing is waiting to be sent.
pub fn assert_nothing_sent(conn: &mut Connection) {
    let frames = sent_frames(conn);
    assert!(frames.is_empty(), "expected no output, got {frames:?}");
}

/// Asserts exactly one frame is waiting to be sent and returns it.
pub fn assert_one_sent(conn: &mut Connection, opcode: u8) -> WireFrame {
    let mut frames = sent_frames(conn);
    assert_eq!(frames.len(), 1, "expected one frame, got {frames:?}");
    let frame = frames.remove(0);
    assert_eq!(frame.opcode, opcode, "unexpected frame {frame:?}");
    assert!(frame.fin, "unfragmented frame expected: {frame:?}");
    frame
}

/// Asserts exactly one close frame with `code` (and a reason that fits) is
/// waiting to be sent.
pub fn assert_close_sent(conn: &mut Connection, code: u16) -> WireFrame {
    let frame = assert_one_sent(conn, CLOSE);
    assert_eq!(frame.close_code(), Some(code), "close frame {frame:?}");
    assert!(frame.payload.len() <= 125, "close payload too long: {}", frame.payload.len());
    let _ = frame.close_reason();
    frame
}

// ---- taking events -----------------------------------------------------------

/// Every event available now; panics on an error.
pub fn events(conn: &mut Connection) -> Vec<Event> {
    let (events, error) = drain(conn);
    assert_eq!(error, None, "unexpected failure after {events:?}");
    events
}

/// Every event available now, and the error that ended them, if any. Bounded,
/// so a decoder that loops forever fails the test instead of hanging it.
pub fn drain(conn: &mut Connection) -> (Vec<Event>, Option<ProtocolError>) {
    let mut events = Vec::new();
    for _ in 0..100_000 {
        match conn.next_event() {
            None => return (events, None),
            Some(Ok(event)) => events.push(event),
            Some(Err(error)) => return (events, Some(error)),
        }
    }
    panic!("next_event never returned None");
}

/// Feeds bytes and takes every event; panics on an error.
pub fn feed(conn: &mut Connection, bytes: &[u8]) -> Vec<Event> {
    conn.receive(bytes);
    events(conn)
}

/// Feeds bytes one at a time, taking events after each; panics on an error.
pub fn feed_bytewise(conn: &mut Connection, bytes: &[u8]) -> Vec<Event> {
    let mut all = Vec::new();
    for byte in bytes {
        all.extend(feed(conn, std::slice::from_ref(byte)));
    }
    all
}

/// Asserts that feeding `bytes` yields no event and no error yet.
pub fn assert_needs_more(conn: &mut Connection, bytes: &[u8]) {
    conn.receive(bytes);
    match conn.next_event() {
        None => {}
        other => panic!("expected to need more bytes, got {other:?}"),
    }
}

/// Feeds `bytes` and asserts the connection fails on the very next
/// `next_event` call (drain earlier events and output first).
pub fn assert_fails_with(conn: &mut Connection, bytes: &[u8], error: ProtocolError, code: u16) {
    conn.receive(bytes);
    assert_failed(conn, error, code);
}

/// Asserts the next `next_event` is `Err(error)`, that a close frame with
/// `code` is the only output, that a server closes TCP and a client waits,
/// and that the connection is dead from then on.
pub fn assert_failed(conn: &mut Connection, error: ProtocolError, code: u16) {
    match conn.next_event() {
        Some(Err(got)) => assert_eq!(got, error),
        other => panic!("expected Err({error:?}), got {other:?}"),
    }
    assert_eq!(error.close_code(), CloseCode::from(code), "{error:?} should map to {code}");
    assert_eq!(conn.failure(), Some(&error));
    assert_close_sent(conn, code);
    assert_eq!(
        conn.should_close_transport(),
        conn.role() == Role::Server,
        "a failing server closes TCP at once; a client waits for the server"
    );
    assert!(!conn.is_open());
    assert!(conn.close_sent());
    assert_eq!(conn.close_code(), Some(CloseCode::from(code)));
    assert_dead(conn);
}

/// Asserts the connection reads nothing any more: no events, not even for
/// valid frames fed later, and no pongs.
pub fn assert_dead(conn: &mut Connection) {
    for _ in 0..3 {
        assert_eq!(conn.next_event(), None);
    }
    let role = conn.role();
    conn.receive(&ping_to(role, b"still there?"));
    conn.receive(&text_to(role, "hello"));
    assert_eq!(conn.next_event(), None);
    assert_eq!(conn.next_event(), None);
    assert_nothing_sent(conn);
}

// ---- expected events -----------------------------------------------------------

pub fn text_event(text: &str) -> Event {
    Event::Message(Message::text(text.to_owned()))
}

pub fn binary_event(data: &[u8]) -> Event {
    Event::Message(Message::binary(data.to_vec()))
}

pub fn ping_event(data: &[u8]) -> Event {
    Event::Message(Message::Ping(data.to_vec().into()))
}

pub fn pong_event(data: &[u8]) -> Event {
    Event::Message(Message::Pong(data.to_vec().into()))
}

pub fn close_event(code: u16, reason: &str) -> Event {
    Event::Message(Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() })))
}

pub fn empty_close_event() -> Event {
    Event::Message(Message::Close(None))
}

pub fn fragment_event(kind: DataKind, payload: &[u8], first: bool, fin: bool) -> Event {
    Event::Fragment(Fragment { kind, payload: payload.to_vec().into(), first, fin })
}

// ---- randomness without crates ---------------------------------------------------

/// Marsaglia's xorshift64: deterministic, so a failure names its seed.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // Never zero, and distinct seeds diverge at once.
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    pub fn key(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}
