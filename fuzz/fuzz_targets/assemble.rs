//! `Connection` receiving arbitrary bytes in arbitrary chunks, in both roles,
//! with message assembly on or off and small limits.
//!
//! Input layout: byte 0 is flags (see `Flags`), byte 1 picks the chunking;
//! with flag `DEFLATE`, bytes 2..6 configure permessage-deflate for both ends
//! (negotiated through `DeflateConfig`); the rest is either raw wire bytes or
//! (flag `GENERATE`) a description of messages that a peer `Connection`
//! encodes with `send`, whose wire bytes are then received, so that the
//! result can be compared with what was sent.
//!
//! Invariants checked on every input:
//! - no panic, and `next_event` ends with `None` after each chunk;
//! - after `Some(Err(_))`, every later `next_event` is `None`, even after more
//!   input, and `failure()` holds the error; after a close frame likewise;
//! - `buffered_capacity()` stays at most 4 * (bytes received + 64 KiB), and
//!   `bytes_wanted()` at most the frame limit;
//! - text messages (and assembled text fragments) are valid UTF-8, data
//!   messages fit the message limit, control payloads 125 bytes, fragments
//!   come in order (`first`, then continuations of the same kind, `fin`);
//! - what the connection writes (pongs, close replies, the close frame of a
//!   failure) decodes without error at a peer of the other role, and carries
//!   what it should: each ping's payload back, the peer's close code echoed,
//!   the failure's close code; nothing is written after a close frame;
//! - after our own close frame, data still arrives, pings get no pong, the
//!   peer's close no reply, and `send` of data fails;
//! - generated messages arrive exactly as sent (assembled or fragment by
//!   fragment; with compression, fragments may be cut differently, so the
//!   messages they make up are compared), with no error;
//! - a client's permessage-deflate offer is accepted by the server, and the
//!   server's answer by the client, with the same parameters on both ends.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Buf, Bytes};
use libfuzzer_sys::fuzz_target;
use peregrine_proto::extension::{DeflateConfig, DeflateParams};
use peregrine_proto::frame::{MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use peregrine_proto::{CloseCode, CloseFrame, Connection, DataKind, Event, Fragment, Limits, Message, Role};

const LIMIT: usize = 64 * 1024;

/// Bits of the first input byte.
struct Flags;
impl Flags {
    /// The receiving connection is the server (else the client).
    const SERVER: u8 = 1;
    /// Message assembly on (else fragments are delivered one by one).
    const ASSEMBLE: u8 = 2;
    /// Call `release_idle_buffers` after every chunk.
    const RELEASE: u8 = 4;
    /// Generate valid frames from the input instead of receiving it raw.
    const GENERATE: u8 = 8;
    /// End with the peer's EOF.
    const EOF: u8 = 16;
    /// Start the close handshake ourselves after the first chunk.
    const LOCAL_CLOSE: u8 = 32;
    /// permessage-deflate on both ends.
    const DEFLATE: u8 = 64;
}

fn limits() -> Limits {
    Limits::default().max_frame_size(LIMIT).max_message_size(LIMIT)
}

fn other(role: Role) -> Role {
    match role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    }
}

/// Chunk lengths from a small generator seeded by the input, so the fuzzer
/// can move chunk boundaries by changing one byte.
struct Chunker {
    state: u32,
    max: usize,
}

impl Chunker {
    fn new(selector: u8) -> Self {
        let max = [1, 2, 3, 7, 16, 100, 4096, usize::MAX][usize::from(selector & 7)];
        Self { state: u32::from(selector).wrapping_mul(0x9e37_79b9) | 1, max }
    }

    fn next_len(&mut self, remaining: usize) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        let len = if self.max == usize::MAX { remaining } else { 1 + self.state as usize % self.max };
        len.min(remaining)
    }
}

/// Drives the connection under test and checks it after every step.
struct Harness {
    conn: Connection,
    /// Receives what `conn` writes.
    peer: Connection,
    assemble: bool,
    received: usize,
    failed: bool,
    close_received: bool,
    /// We sent a close frame of our own (not a reply).
    local_close: bool,
    /// What the peer must see next from `conn`'s output.
    expected_at_peer: Vec<Message>,
    /// The fragmented message being delivered: kind and bytes so far.
    fragments: Option<(DataKind, Vec<u8>)>,
    events: Vec<Event>,
}

impl Harness {
    fn new(role: Role, assemble: bool, deflate: Option<DeflateParams>) -> Self {
        let mut conn = match deflate {
            Some(params) => Connection::with_deflate(role, limits(), params),
            None => Connection::with_limits(role, limits()),
        };
        conn.set_assemble_messages(assemble);
        Self {
            conn,
            peer: Connection::new(other(role)),
            assemble,
            received: 0,
            failed: false,
            close_received: false,
            local_close: false,
            expected_at_peer: Vec::new(),
            fragments: None,
            events: Vec::new(),
        }
    }

    fn feed(&mut self, chunk: &[u8], release: bool) {
        let close_was_sent = self.conn.close_sent();
        self.received += chunk.len();
        self.conn.receive(chunk);
        while let Some(result) = self.conn.next_event() {
            assert!(!self.failed && !self.close_received, "event after the end: {result:?}");
            match result {
                Ok(event) => self.check_event(event),
                Err(error) => {
                    assert_eq!(self.conn.failure(), Some(&error));
                    assert!(self.conn.close_sent());
                    if !close_was_sent {
                        let frame = CloseFrame::new(error.close_code(), &error.to_string());
                        self.expected_at_peer.push(Message::Close(Some(frame)));
                    }
                    self.failed = true;
                }
            }
            self.check_bounds();
        }
        self.check_bounds();
        if self.failed || self.close_received {
            // More input changes nothing.
            self.conn.receive(chunk);
            assert!(self.conn.next_event().is_none(), "event after the end");
        }
        if close_was_sent {
            assert_eq!(self.conn.output().remaining(), 0, "bytes written after a close frame");
        }
        self.drain_output();
        if release {
            self.conn.release_idle_buffers();
            self.check_bounds();
        }
    }

    /// Starts the close handshake: data still arrives until the peer's
    /// close, pings are no longer answered, and the peer's close gets no
    /// second close frame.
    fn close(&mut self) {
        if self.conn.close_sent() {
            return;
        }
        self.conn.close(CloseCode::GOING_AWAY, "bye").expect("close");
        let frame = CloseFrame::new(CloseCode::GOING_AWAY, "bye");
        self.expected_at_peer.push(Message::Close(Some(frame)));
        self.local_close = true;
        assert!(self.conn.close_sent() && !self.conn.is_open());
        let sent = self.conn.send(Message::text("late"));
        assert!(sent.is_err(), "data sent after our close frame: {sent:?}");
        self.drain_output();
    }

    fn check_bounds(&self) {
        let capacity = self.conn.buffered_capacity();
        let bound = 4 * (self.received + LIMIT);
        assert!(capacity <= bound, "buffered_capacity {capacity} > {bound} after {} bytes", self.received);
        let wanted = self.conn.bytes_wanted();
        assert!(wanted <= LIMIT.max(MAX_HEADER_LEN), "bytes_wanted {wanted}");
    }

    fn check_event(&mut self, event: Event) {
        match &event {
            Event::Message(message) => match message {
                Message::Text(text) => {
                    assert!(std::str::from_utf8(text.as_bytes()).is_ok(), "invalid UTF-8 in {text:?}");
                    assert_eq!(text.as_str().as_bytes(), text.as_bytes());
                    self.check_data_message(message.payload().len());
                }
                Message::Binary(data) => self.check_data_message(data.len()),
                Message::Ping(data) => {
                    assert!(data.len() <= MAX_CONTROL_PAYLOAD);
                    if !self.conn.close_sent() {
                        self.expected_at_peer.push(Message::Pong(data.clone()));
                    }
                }
                Message::Pong(data) => assert!(data.len() <= MAX_CONTROL_PAYLOAD),
                Message::Close(frame) => {
                    if let Some(frame) = frame {
                        assert!(frame.code.is_sendable(), "{frame:?}");
                        assert!(std::str::from_utf8(frame.reason.as_bytes()).is_ok());
                        assert!(frame.reason.len() <= peregrine_proto::close::MAX_REASON_LEN);
                    }
                    assert_eq!(self.conn.close_received(), Some(frame));
                    if !self.local_close {
                        self.expected_at_peer.push(Message::Close(
                            frame.as_ref().map(|f| CloseFrame { code: f.code, reason: Default::default() }),
                        ));
                    }
                    self.close_received = true;
                }
            },
            Event::Fragment(Fragment { kind, payload, first, fin }) => {
                assert!(!self.assemble, "fragment delivered with assembly on");
                match (&mut self.fragments, first) {
                    (None, true) => self.fragments = Some((*kind, payload.to_vec())),
                    (Some((current, bytes)), false) => {
                        assert_eq!(current, kind, "fragment kind changed within a message");
                        bytes.extend_from_slice(payload);
                    }
                    (state, _) => {
                        panic!("fragment out of order: first={first}, in progress={state:?}")
                    }
                }
                let (kind, bytes) = self.fragments.as_ref().unwrap_or_else(|| unreachable!());
                assert!(bytes.len() <= LIMIT, "message of {} bytes", bytes.len());
                if *fin {
                    if *kind == DataKind::Text {
                        assert!(std::str::from_utf8(bytes).is_ok(), "assembled fragments are not UTF-8");
                    }
                    self.fragments = None;
                }
            }
        }
        self.events.push(event);
    }

    fn check_data_message(&self, len: usize) {
        assert!(self.assemble, "whole data message with assembly off");
        assert!(len <= LIMIT, "message of {len} bytes");
    }

    /// Hands what `conn` wrote to the peer, which must decode it cleanly and
    /// see what was expected.
    fn drain_output(&mut self) {
        let output = self.conn.output();
        while output.has_remaining() {
            let chunk = output.chunk();
            let n = chunk.len();
            self.peer.receive(chunk);
            output.advance(n);
        }
        while let Some(result) = self.peer.next_event() {
            let Ok(Event::Message(message)) = result else {
                panic!("the peer could not decode our output: {result:?}");
            };
            assert!(!self.expected_at_peer.is_empty(), "unexpected frame written: {message:?}");
            let expected = self.expected_at_peer.remove(0);
            assert_eq!(message, expected, "wrong frame written");
        }
        assert!(self.expected_at_peer.is_empty(), "frames not written: {:?}", self.expected_at_peer);
    }

    fn finish(&mut self, eof: bool) {
        if eof {
            self.conn.receive_eof();
            assert!(self.conn.next_event().is_none());
            assert!(self.conn.should_close_transport());
            assert!(self.conn.close_code().is_some());
        }
        if self.failed {
            let code = self.conn.failure().map(|e| e.close_code());
            if !self.close_received {
                assert_eq!(self.conn.close_code(), code);
            }
        }
        assert_eq!(self.conn.is_closed(), self.conn.close_sent() && self.close_received);
        // The server closes TCP first; a client waits for it (or for EOF).
        if (self.failed || self.close_received) && self.conn.role() == Role::Server {
            assert!(self.conn.should_close_transport());
        }
    }
}

/// A message for the generating peer to send.
#[derive(Debug, Arbitrary)]
enum Op {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A message in pieces of the given lengths (cycled), with a ping
    /// between pieces when `ping` is set, and ended by an empty final
    /// fragment when `end_empty` is set (RFC 7692 §7.2.3.6).
    Fragmented {
        text: bool,
        payload: Vec<u8>,
        pieces: Vec<u8>,
        ping: Option<Vec<u8>>,
        end_empty: bool,
    },
    Close(Option<(u16, String)>),
    /// Binary data sent with `send_uncompressed`.
    Uncompressed(Vec<u8>),
}

/// `ASSEMBLE_DEBUG=1` prints what the generator sends, to triage a crash.
fn debug() -> bool {
    std::env::var_os("ASSEMBLE_DEBUG").is_some()
}

/// Negotiates permessage-deflate between a client and a server configured
/// from `config`; returns the server's parameters and the client's.
fn negotiate(config: [u8; 4]) -> (DeflateParams, DeflateParams) {
    let [flags, client_bits, server_bits, threshold] = config;
    let bits = |b: u8| 8 + (b & 7);
    let client = DeflateConfig::default()
        .server_no_context_takeover(flags & 1 != 0)
        .client_no_context_takeover(flags & 2 != 0)
        .server_max_window_bits(bits(client_bits))
        .client_max_window_bits(bits(client_bits >> 3))
        .level(u32::from(flags >> 4) % 10)
        .threshold(usize::from(threshold));
    let server = DeflateConfig::default()
        .server_no_context_takeover(flags & 4 != 0)
        .client_no_context_takeover(flags & 8 != 0)
        .server_max_window_bits(bits(server_bits))
        .client_max_window_bits(bits(server_bits >> 3))
        .level(u32::from(flags >> 4) % 10)
        .threshold(usize::from(threshold));
    let offer = client.offer();
    let Some((answer, server_params)) = server.negotiate(std::slice::from_ref(&offer)) else {
        panic!("the server declines a valid offer: {offer}");
    };
    let client_params = match client.check_response(std::slice::from_ref(&answer)) {
        Ok(Some(params)) => params,
        other => panic!("the client refuses the answer {answer} to {offer}: {other:?}"),
    };
    let view = |p: &DeflateParams| {
        (
            p.server_no_context_takeover,
            p.client_no_context_takeover,
            p.server_max_window_bits,
            p.client_max_window_bits,
        )
    };
    assert_eq!(view(&server_params), view(&client_params), "ends disagree: offer {offer}, answer {answer}");
    (server_params, client_params)
}

/// Joins each run of fragments into the message it makes up.
fn merge_fragments(events: &[Event]) -> Vec<Event> {
    let mut merged = Vec::new();
    let mut current: Option<(DataKind, Vec<u8>)> = None;
    for event in events {
        let Event::Fragment(fragment) = event else {
            merged.push(event.clone());
            continue;
        };
        let (kind, bytes) = current.get_or_insert_with(|| (fragment.kind, Vec::new()));
        bytes.extend_from_slice(&fragment.payload);
        if fragment.fin {
            merged.push(Event::Message(match kind {
                DataKind::Text => {
                    Message::Text(String::from_utf8(std::mem::take(bytes)).expect("UTF-8").into())
                }
                DataKind::Binary => Message::Binary(std::mem::take(bytes).into()),
            }));
            current = None;
        }
    }
    merged
}

fn control_payload(mut data: Vec<u8>) -> Bytes {
    data.truncate(MAX_CONTROL_PAYLOAD);
    data.into()
}

/// How an unfragmented data message is delivered.
fn whole(message: Message, assemble: bool) -> Event {
    let kind = match &message {
        Message::Text(_) => DataKind::Text,
        _ => DataKind::Binary,
    };
    if assemble {
        Event::Message(message)
    } else {
        let payload = Bytes::copy_from_slice(message.payload());
        Event::Fragment(Fragment { kind, payload, first: true, fin: true })
    }
}

/// Sends the ops from a connection of the other role; returns its wire
/// bytes and the events the receiver must yield.
fn generate(
    u: &mut Unstructured<'_>,
    receiver: Role,
    assemble: bool,
    deflate: Option<DeflateParams>,
) -> (Vec<u8>, Vec<Event>) {
    let mut sender = match deflate {
        Some(params) => Connection::with_deflate(other(receiver), Limits::default(), params),
        None => Connection::new(other(receiver)),
    };
    let mut expected = Vec::new();
    let fits = |len: usize| len <= LIMIT / 2;
    let msg = Event::Message;
    for _ in 0..256 {
        if u.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(u) else { break };
        if debug() {
            eprintln!("op: {op:?}");
        }
        match op {
            Op::Text(text) if fits(text.len()) => {
                let message = Message::text(text);
                sender.send(message.clone()).expect("send text");
                expected.push(whole(message, assemble));
            }
            Op::Binary(data) if fits(data.len()) => {
                let message = Message::binary(data);
                sender.send(message.clone()).expect("send binary");
                expected.push(whole(message, assemble));
            }
            Op::Ping(data) => {
                let data = control_payload(data);
                sender.send(Message::Ping(data.clone())).expect("send ping");
                expected.push(msg(Message::Ping(data)));
            }
            Op::Pong(data) => {
                let data = control_payload(data);
                sender.send(Message::Pong(data.clone())).expect("send pong");
                expected.push(msg(Message::Pong(data)));
            }
            Op::Fragmented { text, payload, pieces, ping, end_empty } if fits(payload.len()) => {
                let (kind, payload) = if text {
                    (DataKind::Text, String::from_utf8_lossy(&payload).into_owned().into_bytes())
                } else {
                    (DataKind::Binary, payload)
                };
                if payload.len() > LIMIT / 2 {
                    continue;
                }
                let ping = ping.map(control_payload);
                let end_empty = end_empty && !payload.is_empty();
                let mut lengths = pieces.iter().map(|&l| usize::from(l)).cycle();
                let mut rest = &payload[..];
                let mut first = true;
                // At most 64 pieces (empty ones too); the last takes what is left.
                for i in 0..64 {
                    let len = match lengths.next() {
                        Some(len) if i < 63 => len.min(rest.len()),
                        _ => rest.len(),
                    };
                    let (piece, tail) = rest.split_at(len);
                    rest = tail;
                    let fin = rest.is_empty() && !end_empty;
                    let piece = Bytes::copy_from_slice(piece);
                    sender.send_fragment(kind, piece.clone(), fin).expect("send fragment");
                    if !assemble {
                        expected.push(Event::Fragment(Fragment { kind, payload: piece, first, fin }));
                    }
                    first = false;
                    if fin {
                        break;
                    }
                    if let Some(ping) = &ping {
                        sender.send(Message::Ping(ping.clone())).expect("ping between fragments");
                        expected.push(msg(Message::Ping(ping.clone())));
                    }
                    if rest.is_empty() {
                        break;
                    }
                }
                if end_empty {
                    sender.send_fragment(kind, Bytes::new(), true).expect("send empty final fragment");
                    if !assemble {
                        let payload = Bytes::new();
                        expected.push(Event::Fragment(Fragment { kind, payload, first: false, fin: true }));
                    }
                }
                if assemble {
                    expected.push(msg(match kind {
                        DataKind::Text => {
                            Message::Text(String::from_utf8(payload).expect("lossy is UTF-8").into())
                        }
                        DataKind::Binary => Message::Binary(payload.into()),
                    }));
                }
            }
            Op::Uncompressed(data) if data.len() <= LIMIT / 2 => {
                let message = Message::binary(data);
                sender.send_uncompressed(message.clone()).expect("send uncompressed");
                expected.push(whole(message, assemble));
            }
            Op::Close(close) => {
                let frame = close.map(|(code, reason)| CloseFrame::new(CloseCode::from(code), &reason));
                if sender.send(Message::Close(frame.clone())).is_ok() {
                    expected.push(msg(Message::Close(frame)));
                    break;
                }
            }
            _ => {}
        }
    }
    let mut wire = Vec::new();
    let output = sender.output();
    while output.has_remaining() {
        let n = output.chunk().len();
        wire.extend_from_slice(output.chunk());
        output.advance(n);
    }
    if debug() {
        eprintln!("wire: {wire:02x?}");
    }
    (wire, expected)
}

fuzz_target!(|data: &[u8]| {
    let [flags, chunking, rest @ ..] = data else {
        return;
    };
    let role = if flags & Flags::SERVER != 0 { Role::Server } else { Role::Client };
    let assemble = flags & Flags::ASSEMBLE != 0;
    let release = flags & Flags::RELEASE != 0;
    let generated = flags & Flags::GENERATE != 0;
    let (deflate, rest) = match (flags & Flags::DEFLATE != 0, rest) {
        (true, [a, b, c, d, rest @ ..]) => {
            let (server, client) = negotiate([*a, *b, *c, *d]);
            let ours_theirs = if role == Role::Server { (server, client) } else { (client, server) };
            (Some(ours_theirs), rest)
        }
        (true, _) => return,
        (false, rest) => (None, rest),
    };
    let (ours, theirs) = deflate.clone().unzip();

    let (wire, expected) = if generated {
        let (wire, expected) = generate(&mut Unstructured::new(rest), role, assemble, theirs);
        (wire, Some(expected))
    } else {
        (rest.to_vec(), None)
    };

    let mut harness = Harness::new(role, assemble, ours);
    let mut chunker = Chunker::new(*chunking);
    let mut pos = 0;
    while pos < wire.len() {
        let len = chunker.next_len(wire.len() - pos);
        harness.feed(&wire[pos..pos + len], release);
        pos += len;
        if flags & Flags::LOCAL_CLOSE != 0 {
            harness.close();
        }
    }
    harness.feed(&[], release);

    if let Some(expected) = expected {
        assert!(!harness.failed, "valid frames failed the connection: {:?}", harness.conn.failure());
        if deflate.is_some() && !assemble {
            let (got, want) = (merge_fragments(&harness.events), merge_fragments(&expected));
            assert_eq!(got, want, "received messages differ from those sent");
        } else {
            assert_eq!(harness.events, expected, "received messages differ from those sent");
        }
        assert!(harness.fragments.is_none());
    }
    harness.finish(flags & Flags::EOF != 0);
});
