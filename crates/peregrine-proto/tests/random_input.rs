//! Property tests on random input, with a deterministic xorshift generator
//! (no extra crates): whatever bytes arrive, in whatever pieces, the
//! connection never panics, decodes the same events and error however the
//! bytes are split, and only ever sends well-formed frames that answer what
//! it received.

mod support;

use peregrine_proto::{Connection, Event, Limits, Message, ProtocolError, Role};
use support::*;

const ITERATIONS: u64 = 3000;

const TEXT_PIECES: &[&str] = &["a", "hello ", "é", "€", "𝄞", "κόσμε", " ", "\u{10ffff}", "\u{7f}"];

fn random_payload(rng: &mut XorShift, opcode: u8, careful: bool) -> Vec<u8> {
    let rare = if careful { 25 } else { 4 };
    let mut len = if rng.one_in(8) { rng.below(300) } else { rng.below(40) };
    if opcode & 0x8 != 0 && !rng.one_in(rare) {
        len = len.min(125);
    }
    let structured = !rng.one_in(rare);
    match (opcode, structured) {
        // Mostly valid text, sometimes cut anywhere (inside a code point).
        (TEXT | CONT, true) => {
            let mut text = String::new();
            while text.len() < len {
                text.push_str(TEXT_PIECES[rng.below(TEXT_PIECES.len())]);
            }
            let mut bytes = text.into_bytes();
            if rng.one_in(rare) {
                bytes.truncate(rng.below(bytes.len() + 1));
            }
            bytes
        }
        // A close payload with a code, valid or not, and a short reason.
        (CLOSE, true) => {
            let valid = [1000u16, 1001, 1002, 1011, 3000, 4999];
            let invalid = [1005u16, 1006, 1015, 2999, 5000, 0];
            let codes = if rng.one_in(rare) { invalid } else { valid };
            let mut bytes = codes[rng.below(codes.len())].to_be_bytes().to_vec();
            bytes.extend_from_slice(&"reason".as_bytes()[..rng.below(7)]);
            if rng.one_in(rare) {
                bytes.push(0xff);
            }
            bytes
        }
        _ => rng.bytes(len),
    }
}

/// Mostly plausible frames for a connection with `role`, with every kind of
/// mistake mixed in, or plain noise.
fn random_stream(rng: &mut XorShift, role: Role) -> Vec<u8> {
    if rng.one_in(4) {
        let len = rng.below(200);
        return rng.bytes(len);
    }
    // Half the streams follow the fragmentation rules (until a mistake), so
    // that long runs of valid frames are common.
    let careful = rng.one_in(2);
    let mut in_message = false;
    let mut stream = Vec::new();
    for _ in 0..rng.below(12) {
        let mut opcode = if rng.one_in(if careful { 60 } else { 12 }) {
            rng.byte() & 0x0f
        } else {
            [CONT, TEXT, TEXT, BINARY, BINARY, CLOSE, PING, PING, PONG][rng.below(9)]
        };
        if careful && opcode == CLOSE && !rng.one_in(4) {
            opcode = PING;
        }
        let control = opcode & 0x8 != 0;
        if careful && !control && !rng.one_in(30) {
            opcode = match (in_message, opcode) {
                (true, _) => CONT,
                (false, CONT) => TEXT,
                (false, op) => op,
            };
        }
        let fin = if careful && control { !rng.one_in(40) } else { !rng.one_in(3) };
        if !control {
            in_message = !fin;
        }
        let rare = if careful { 200 } else { 20 };
        let rsv = if rng.one_in(rare) { rng.byte() & 0b111 } else { 0 };
        let masked = (role == Role::Server) != rng.one_in(rare + 5);
        let mask = masked.then(|| rng.key());
        let payload = random_payload(rng, opcode, careful);
        stream.extend(raw_frame(fin, rsv, opcode, mask, &payload));
    }
    if !stream.is_empty() && rng.one_in(if careful { 10 } else { 5 }) {
        let bit = rng.below(stream.len() * 8);
        stream[bit / 8] ^= 1 << (bit % 8);
    }
    if rng.one_in(5) {
        stream.truncate(rng.below(stream.len() + 1));
    }
    if rng.one_in(10) {
        let noise = rng.below(20);
        stream.extend(rng.bytes(noise));
    }
    stream
}

#[derive(Debug, Clone, Copy)]
struct Setup {
    role: Role,
    assemble: bool,
    limits: Limits,
}

impl Setup {
    fn connection(self) -> Connection {
        let mut conn = Connection::with_limits(self.role, self.limits);
        conn.set_assemble_messages(self.assemble);
        conn
    }
}

/// Everything a run produced: events, the error if any, and the frames sent.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Event>,
    error: Option<ProtocolError>,
    sent: Vec<WireFrame>,
}

fn run_whole(setup: Setup, stream: &[u8]) -> Outcome {
    let mut conn = setup.connection();
    conn.receive(stream);
    let (events, error) = drain(&mut conn);
    finish(conn, events, error)
}

fn run_chunked(setup: Setup, stream: &[u8], rng: &mut XorShift) -> Outcome {
    let mut conn = setup.connection();
    let mut events = Vec::new();
    let mut error = None;
    let mut rest = stream;
    while !rest.is_empty() && error.is_none() {
        let max = if rng.one_in(3) { 2 } else { 64 };
        let n = (1 + rng.below(max)).min(rest.len());
        conn.receive(&rest[..n]);
        rest = &rest[n..];
        let (more, err) = drain(&mut conn);
        events.extend(more);
        error = err;
    }
    finish(conn, events, error)
}

/// Checks what must hold after any run, and collects the outcome.
fn finish(mut conn: Connection, events: Vec<Event>, error: Option<ProtocolError>) -> Outcome {
    let sent = sent_frames(&mut conn); // parses, and checks masking by role
    let pings: Vec<&[u8]> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message(Message::Ping(p)) => Some(&p[..]),
            _ => None,
        })
        .collect();
    let pongs: Vec<&[u8]> = sent.iter().filter(|f| f.opcode == PONG).map(|f| &f.payload[..]).collect();
    assert_eq!(pongs, pings, "one pong per ping, same payload, same order");
    let closes: Vec<&WireFrame> = sent.iter().filter(|f| f.opcode == CLOSE).collect();
    assert!(
        sent.iter().all(|f| matches!(f.opcode, PONG | CLOSE) && f.fin),
        "unexpected frames sent: {sent:?}"
    );
    let peer_closed = matches!(events.last(), Some(Event::Message(Message::Close(_))));
    for (i, event) in events.iter().enumerate() {
        let is_close = matches!(event, Event::Message(Message::Close(_)));
        assert!(!is_close || i == events.len() - 1, "events after a close: {events:?}");
    }
    match &error {
        Some(error) => {
            assert!(!peer_closed, "no error can follow the peer's close");
            assert_eq!(conn.failure(), Some(error));
            assert_eq!(closes.len(), 1, "exactly one close frame: {sent:?}");
            assert_eq!(closes[0].close_code(), Some(error.close_code().as_u16()));
            assert_eq!(sent.last().map(|f| f.opcode), Some(CLOSE), "nothing after the close frame");
            assert_eq!(conn.close_code(), Some(error.close_code()));
            assert_eq!(conn.should_close_transport(), conn.role() == Role::Server);
        }
        None if peer_closed => {
            assert_eq!(closes.len(), 1, "the peer's close is echoed once: {sent:?}");
            assert!(conn.close_code().is_some());
        }
        None => {
            assert!(closes.is_empty(), "close sent without a reason: {sent:?}");
            assert!(conn.is_open());
        }
    }
    if error.is_some() || peer_closed {
        assert_dead(&mut conn);
    }
    Outcome { events, error, sent }
}

#[test]
fn random_input_never_panics_and_decodes_the_same_however_it_is_split() {
    let mut errors = 0;
    let mut events = 0;
    for seed in 0..ITERATIONS {
        let mut rng = XorShift::new(seed);
        for role in ROLES {
            let limits = if rng.one_in(6) {
                Limits::default().max_frame_size(1 + rng.below(200)).max_message_size(1 + rng.below(400))
            } else {
                Limits::default()
            };
            let setup = Setup { role, assemble: !rng.one_in(3), limits };
            let stream = random_stream(&mut rng, role);
            let whole = run_whole(setup, &stream);
            let chunked = run_chunked(setup, &stream, &mut rng);
            assert_eq!(whole.events, chunked.events, "seed {seed} {setup:?} stream {stream:x?}");
            assert_eq!(whole.error, chunked.error, "seed {seed} {setup:?} stream {stream:x?}");
            // Pong and close payloads match; client masking keys differ.
            let strip =
                |o: &Outcome| o.sent.iter().map(|f| (f.opcode, f.payload.clone())).collect::<Vec<_>>();
            assert_eq!(strip(&whole), strip(&chunked), "seed {seed} {setup:?}");
            errors += usize::from(whole.error.is_some());
            events += whole.events.len();
        }
    }
    // The generator must exercise both paths, or the property says little.
    let runs = 2 * ITERATIONS as usize;
    eprintln!("{errors} errors and {events} events in {runs} runs");
    assert!(errors > runs / 10 && errors < runs * 9 / 10, "{errors} errors in {runs} runs");
    assert!(events > runs, "only {events} events in {runs} runs");
}

#[test]
fn pure_noise_in_random_chunks_never_panics() {
    for seed in 0..ITERATIONS {
        let mut rng = XorShift::new(seed ^ 0xdead_beef);
        for role in ROLES {
            let mut conn = Connection::new(role);
            let len = rng.below(512);
            let noise = rng.bytes(len);
            let mut rest = &noise[..];
            let mut failed = false;
            while !rest.is_empty() {
                let n = (1 + rng.below(32)).min(rest.len());
                conn.receive(&rest[..n]);
                rest = &rest[n..];
                let (_, error) = drain(&mut conn);
                if let Some(error) = error {
                    assert!(!failed, "seed {seed}: a second error {error:?}");
                    failed = true;
                }
            }
            let _ = sent_frames(&mut conn);
            if failed {
                assert_dead(&mut conn);
            }
        }
    }
}
