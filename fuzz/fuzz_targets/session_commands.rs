//! The server's session command handling: one `peregrine-server` session, on a node with the
//! in-memory broker, fed an arbitrary script of client messages and outside events through
//! the real session loop (`session::run`, reader and writer tasks) over an in-memory
//! transport. The script is built with `arbitrary` (see `peregrine_fuzz::commands`): connect
//! with or without (valid, expired, wrongly signed, garbage) tokens, subscribe and
//! unsubscribe (recovery positions in and out of the stream), publish (idempotency keys,
//! payloads big enough to stream recoveries), history (any limit), presence, refresh,
//! sub_refresh, ping, unknown methods, raw bytes, batches past the batch limit, any ids; and
//! around them: API publishes, server-side unsubscribes and disconnects, time passing
//! (connect deadline, token expiry), a client that stops reading (slow consumer) or whose
//! writes fail, a transport that finds the client dead.
//!
//! Invariants:
//! - nothing panics; every frame the server sends decodes in the session's encoding;
//! - replies correlate: their ids are the commands' ids, in order; when the session was not
//!   ended early (disconnect, failed write), every command got exactly one reply;
//! - reply error codes are protocol error codes (100–112) with a message, unsubscribe push
//!   codes are 2000/2500/2501, the disconnect code is a protocol one (3000–4999);
//! - state stays bounded while the session runs: at most `client.max_subscriptions` channels
//!   in the hub and subscriptions counted, at most one presence entry per channel;
//! - once the session has ended it left nothing behind: no channel in the hub, no
//!   subscription, connection, session, handshake or presence entry.
//!
//! One current-thread runtime, with tokio's clock paused (time moves only when every task
//! waits, so deadlines pass at once), is made once per process; each input gets a new node.

#![no_main]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use peregrine_fuzz::commands::{
    CHANNELS, ChannelSpec, CommandSpec, DataSpec, EpochSpec, Expiry, IdSpec, Ids, KindSpec, OffsetSpec,
    PositionSpec, Resolve, TokenSpec, VersionSpec,
};
use peregrine_server::channel::{ChannelOptions, Namespaces};
use peregrine_server::config::{ClientConfig, Config, Secret, TokenConfig};
use peregrine_server::disconnect::Disconnect;
use peregrine_server::node::Node;
use peregrine_server::outbox::Queued;
use peregrine_server::session::{run, unix_now};
use peregrine_server::transport::{Inbound, Outbound, Received, Transport};
use peregrine_wire::codes::{error as err, unsubscribe as unsub};
use peregrine_wire::{
    Encoding, MAX_BATCH, Push, ServerMessage, StreamPosition, decode_commands_bounded,
    decode_server_messages, encode_commands,
};
use tokio::sync::Notify;
use tokio::time::Instant;

const SECRET: &str = "fuzz-secret";
const MAX_SUBSCRIPTIONS: usize = 4;
/// Small, so that a client that stops reading overflows it, and history pages (a quarter of
/// it) are smaller than a few big publications: recoveries stream.
const QUEUE_MAX_BYTES: usize = 64 << 10;
const MAX_MESSAGE_SIZE: usize = 64 << 10;
const USERS: [&str; 3] = ["alice", "bob", ""];

fn config() -> Config {
    let history =
        |size| ChannelOptions { history_size: size, allow_publish: true, ..ChannelOptions::default() };
    let mut channels = Namespaces { default: Some(ChannelOptions::development()), ..Namespaces::default() };
    let named = [
        ("chat", ChannelOptions { presence: true, join_leave: true, ..history(0) }),
        ("hist", history(20)),
        ("priv", ChannelOptions { private: true, presence: true, ..history(10) }),
        ("ro", ChannelOptions::default()),
        ("one", ChannelOptions { max_subscribers: 1, ..history(5) }),
    ];
    channels.named.extend(named.map(|(ns, o)| (ns.to_owned(), o)));
    Config {
        token: TokenConfig {
            hmac_secret: Some(Secret::new(SECRET)),
            allow_anonymous: true,
            ..TokenConfig::default()
        },
        client: ClientConfig {
            queue_max_bytes: QUEUE_MAX_BYTES,
            max_message_size: MAX_MESSAGE_SIZE,
            max_subscriptions: MAX_SUBSCRIPTIONS,
            publish_rate: 10.0,
            publish_burst: 8,
            ..ClientConfig::default()
        },
        channels,
        ..Config::default()
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum EncodingSpec {
    Json,
    MsgPack,
    Protobuf,
}

#[derive(Debug)]
enum Step {
    /// One message of commands (at least one); `repeat_last` more copies of the last one
    /// (a batch can go past the batch limit).
    Send { commands: Vec<CommandSpec>, repeat_last: u16 },
    /// Any bytes as a message.
    Raw(Vec<u8>),
    /// A command whose type the server does not know.
    UnknownMethod { id: IdSpec, method: String },
    /// The HTTP API publishes `count` times.
    ApiPublish { channel: ChannelSpec, count: u8, data: DataSpec },
    /// The HTTP API unsubscribes a user from a channel.
    ServerUnsubscribe { user: u8, channel: ChannelSpec },
    /// The HTTP API disconnects a user.
    ServerDisconnect { user: u8 },
    /// Time passes (tokio's paused clock jumps): connect deadline, close grace.
    Wait { seconds: u8 },
    /// The client stops reading: the writer's sends wait.
    Stall,
    /// The client reads again.
    Unstall,
    /// Writes to the client fail from now on.
    WriteFails,
    /// The transport finds the client dead.
    Dead,
}

impl<'a> Arbitrary<'a> for Step {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // Mostly commands; the steps that end the session are rare, so scripts go deep.
        Ok(match u.int_in_range(0..=31u8)? {
            0..=19 => {
                let mut commands = vec![u.arbitrary()?];
                commands.extend(u.arbitrary::<Vec<CommandSpec>>()?);
                let repeat_last = if u.ratio(1, 8)? { u.arbitrary()? } else { 0 };
                Step::Send { commands, repeat_last }
            }
            20 => Step::Raw(u.arbitrary()?),
            21 => Step::UnknownMethod { id: u.arbitrary()?, method: u.arbitrary()? },
            22 | 23 => {
                Step::ApiPublish { channel: u.arbitrary()?, count: u.arbitrary()?, data: u.arbitrary()? }
            }
            24 => Step::ServerUnsubscribe { user: u.arbitrary()?, channel: u.arbitrary()? },
            25 | 26 => Step::Wait { seconds: u.arbitrary()? },
            27 => Step::Stall,
            28 => Step::Unstall,
            29 => Step::ServerDisconnect { user: u.arbitrary()? },
            30 => Step::WriteFails,
            _ => Step::Dead,
        })
    }
}

#[derive(Debug)]
struct Script {
    encoding: EncodingSpec,
    /// A token given at the handshake (query or header).
    handshake_token: Option<TokenSpec>,
    steps: Vec<Step>,
}

impl<'a> Arbitrary<'a> for Script {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let encoding = u.arbitrary()?;
        let handshake_token = u.arbitrary()?;
        let mut steps = Vec::new();
        // Most scripts begin as clients do, with `connect`, so they get past it.
        if u.ratio(7, 8)? {
            let connect = KindSpec::Connect {
                token: u.arbitrary()?,
                name: None,
                version: VersionSpec::Unsaid,
                subs: u.arbitrary()?,
            };
            let mut commands = vec![CommandSpec { id: IdSpec::Next, kind: connect }];
            commands.extend(u.arbitrary::<Vec<CommandSpec>>()?);
            steps.push(Step::Send { commands, repeat_last: 0 });
        }
        steps.extend(u.arbitrary_iter::<Step>()?.collect::<arbitrary::Result<Vec<_>>>()?);
        Ok(Script { encoding, handshake_token, steps })
    }
}

fuzz_target!(|script: Script| {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap()
    });
    if debug() {
        eprintln!("script: {script:#?}");
    }
    runtime.block_on(session(script));
    // No task of the session outlives it (each would hold the node and its state).
    assert_eq!(runtime.metrics().num_alive_tasks(), 0, "tasks left running after the session ended");
});

/// `SESSION_DEBUG=1` prints each script and what the server sent (to read a finding).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("SESSION_DEBUG").is_some())
}

/// What the client side saw: shared by the two halves of the in-memory transport.
#[derive(Debug, Default)]
struct Client {
    frames: Mutex<Vec<Bytes>>,
    closed_with: Mutex<Option<(Disconnect, bool)>>,
    stalled: AtomicBool,
    unstalled: Notify,
    write_fails: AtomicBool,
    /// The ids of the commands handed to the session, in order.
    sent: Mutex<Vec<u64>>,
    /// The transport said the client is dead.
    ended_early: AtomicBool,
}

struct Writer(Arc<Client>);

impl Outbound for Writer {
    async fn send(&mut self, batch: &[Queued]) -> std::io::Result<()> {
        loop {
            let unstalled = self.0.unstalled.notified();
            if !self.0.stalled.load(Ordering::Acquire) {
                break;
            }
            unstalled.await;
        }
        if self.0.write_fails.load(Ordering::Acquire) {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let mut frames = self.0.frames.lock().unwrap();
        frames.extend(batch.iter().map(|q| Bytes::copy_from_slice(&q.frame)));
        Ok(())
    }

    async fn close(&mut self, disconnect: &Disconnect, push: bool) {
        self.0.closed_with.lock().unwrap().get_or_insert((disconnect.clone(), push));
    }
}

/// The script's client side: hands the session its messages, and does the outside events
/// in between.
struct Feed {
    node: Arc<Node>,
    client: Arc<Client>,
    encoding: Encoding,
    steps: VecDeque<Step>,
    ids: Ids,
    /// A `Wait` under way (`recv` is cancelled when the session has other work).
    waiting_until: Option<Instant>,
}

impl Inbound for Feed {
    async fn recv(&mut self) -> Received {
        check_bounded(&self.node).await;
        if let Some(at) = self.waiting_until {
            tokio::time::sleep_until(at).await;
            self.waiting_until = None;
        }
        while let Some(step) = self.steps.pop_front() {
            if let Some(received) = self.step(step).await {
                return received;
            }
        }
        // A client that reads everything before it leaves: every reply reaches it.
        self.client.stalled.store(false, Ordering::Release);
        self.client.unstalled.notify_waiters();
        Received::Gone
    }
}

impl Feed {
    async fn step(&mut self, step: Step) -> Option<Received> {
        match step {
            Step::Send { commands, repeat_last } => return self.commands(&commands, repeat_last).await,
            Step::Raw(bytes) => {
                if let Ok(commands) = decode_commands_bounded(&bytes, self.encoding, MAX_BATCH) {
                    self.client.sent.lock().unwrap().extend(commands.iter().map(|c| c.id));
                }
                return Some(Received::Message(bytes.into()));
            }
            Step::UnknownMethod { id, method } => {
                let command = serde_json::json!({ "id": self.ids.id(id), method: {} });
                let frame = match self.encoding {
                    Encoding::Json => command.to_string().into_bytes(),
                    Encoding::MsgPack => rmp_serde::to_vec_named(&[command]).unwrap(),
                    // Field 15 (not a command type) holding an empty message.
                    Encoding::Protobuf => vec![4, 8, 1, 0x7a, 0],
                };
                if let Ok(commands) = decode_commands_bounded(&frame, self.encoding, MAX_BATCH) {
                    self.client.sent.lock().unwrap().extend(commands.iter().map(|c| c.id));
                }
                return Some(Received::Message(frame.into()));
            }
            Step::ApiPublish { channel, count, data } => {
                for _ in 0..count % 32 {
                    let _ = self.node.publish(&channel.name(), data.payload(), None, None).await;
                }
            }
            Step::ServerUnsubscribe { user, channel } => {
                self.node.unsubscribe_user(user_name(user), &channel.name());
            }
            Step::ServerDisconnect { user } => {
                let d = Disconnect::new(peregrine_wire::codes::disconnect::FORCE_RECONNECT, "by the API");
                self.node.disconnect_user(user_name(user), &d);
            }
            Step::Wait { seconds } => {
                let at = Instant::now() + Duration::from_secs(seconds.into());
                self.waiting_until = Some(at);
                tokio::time::sleep_until(at).await;
                self.waiting_until = None;
            }
            Step::Stall => self.client.stalled.store(true, Ordering::Release),
            Step::Unstall => {
                self.client.stalled.store(false, Ordering::Release);
                self.client.unstalled.notify_waiters();
            }
            Step::WriteFails => self.client.write_fails.store(true, Ordering::Release),
            Step::Dead => {
                self.client.ended_early.store(true, Ordering::Release);
                return Some(Received::Dead(Disconnect::no_pong()));
            }
        }
        None
    }

    /// The message of `commands` (and `repeat_last` copies of the last), unless it is larger
    /// than the transport accepts.
    async fn commands(&mut self, specs: &[CommandSpec], repeat_last: u16) -> Option<Received> {
        let mut resolver = Resolver { positions: positions(&self.node).await };
        let mut commands: Vec<_> = specs.iter().map(|s| s.build(&mut self.ids, &mut resolver)).collect();
        if let Some(last) = commands.last().cloned() {
            let one = encode_commands(std::slice::from_ref(&last), self.encoding).len().max(1);
            let copies = usize::from(repeat_last % 1100).min(MAX_MESSAGE_SIZE / one + 1);
            commands.extend(std::iter::repeat_n(last, copies));
        }
        let frame = encode_commands(&commands, self.encoding);
        if frame.len() > MAX_MESSAGE_SIZE {
            // The transport refuses it (1009) before the session sees it.
            return None;
        }
        if commands.len() <= MAX_BATCH {
            self.client.sent.lock().unwrap().extend(commands.iter().map(|c| c.id));
        }
        Some(Received::Message(frame.into()))
    }
}

fn user_name(user: u8) -> &'static str {
    USERS[usize::from(user) % USERS.len()]
}

/// The current position of every known channel that keeps history.
async fn positions(node: &Node) -> HashMap<String, StreamPosition> {
    let mut positions = HashMap::new();
    for channel in CHANNELS {
        if let Ok(h) = node.history(channel, None, Some(0), false).await {
            positions.insert(channel.to_owned(), StreamPosition { epoch: h.epoch, offset: h.offset });
        }
    }
    positions
}

/// Real tokens, signed with the node's secret (or another), and positions relative to the
/// channels' real ones.
struct Resolver {
    positions: HashMap<String, StreamPosition>,
}

impl Resolve for Resolver {
    fn token(&mut self, token: &TokenSpec) -> String {
        let exp = |e: Expiry| match e {
            Expiry::Never => None,
            Expiry::Past => Some(unix_now() - 3600),
            Expiry::Now => Some(unix_now()),
            Expiry::Later => Some(unix_now() + 3600),
        };
        let (claims, secret) = match token {
            TokenSpec::Connection { user, expiry, channels } => {
                let channels: Vec<String> = channels.iter().take(8).map(ChannelSpec::name).collect();
                let claims =
                    serde_json::json!({ "sub": user_name(*user), "exp": exp(*expiry), "channels": channels });
                (claims, SECRET)
            }
            TokenSpec::Subscription { user, channel, expiry } => {
                let (sub, channel) = (user_name(*user), channel.name());
                let claims = serde_json::json!({ "sub": sub, "channel": channel, "exp": exp(*expiry) });
                (claims, SECRET)
            }
            TokenSpec::WrongKey { user } => {
                (serde_json::json!({ "sub": user_name(*user) }), "another-secret")
            }
            TokenSpec::Garbage(text) => return text.clone(),
        };
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    }

    fn position(&mut self, channel: &str, since: &PositionSpec) -> StreamPosition {
        let current = self
            .positions
            .get(channel)
            .cloned()
            .unwrap_or(StreamPosition { epoch: String::new(), offset: 0 });
        let epoch = match &since.epoch {
            EpochSpec::Current => current.epoch,
            EpochSpec::Empty => String::new(),
            EpochSpec::Other(s) => s.clone(),
        };
        let offset = match since.offset {
            OffsetSpec::Top => current.offset,
            OffsetSpec::Behind(n) => current.offset.saturating_sub(n.into()),
            OffsetSpec::Ahead(n) => current.offset.saturating_add(n.into()),
            OffsetSpec::Any(n) => n,
        };
        StreamPosition { epoch, offset }
    }
}

/// While the session runs: subscriptions within their limit, one presence entry at most.
async fn check_bounded(node: &Node) {
    let channels = node.channels();
    assert!(channels.len() <= MAX_SUBSCRIPTIONS, "hub holds {channels:?} for one session");
    let subscriptions = node.metrics().subscriptions.get();
    assert!((0..=MAX_SUBSCRIPTIONS as i64).contains(&subscriptions), "{subscriptions} subscriptions counted");
    assert!(node.session_count() <= 1 && node.pending_handshakes() <= 1);
    for channel in CHANNELS {
        if let Ok(present) = node.presence(channel).await {
            assert!(present.len() <= 1, "{channel}: {present:?}");
        }
    }
}

/// Once the session has ended: nothing of it is left in the node.
async fn check_left_nothing(node: &Node) {
    assert_eq!(node.channels(), Vec::<String>::new(), "channels left in the hub");
    assert_eq!(node.session_count(), 0, "session still registered");
    assert_eq!(node.pending_handshakes(), 0, "handshake slot still held");
    assert_eq!(node.metrics().subscriptions.get(), 0, "subscriptions still counted");
    assert_eq!(node.metrics().connections.get(), 0, "connection still counted");
    for channel in CHANNELS {
        if let Ok(present) = node.presence(channel).await {
            assert!(present.is_empty(), "{channel}: presence left {present:?}");
        }
    }
}

async fn session(script: Script) {
    let node = Node::new(config()).expect("the fuzz configuration is valid");
    let encoding = match script.encoding {
        EncodingSpec::Json => Encoding::Json,
        EncodingSpec::MsgPack => Encoding::MsgPack,
        EncodingSpec::Protobuf => Encoding::Protobuf,
    };
    // The transport authenticates a handshake token; one it refuses never gets a session.
    let identity = match &script.handshake_token {
        Some(token) => match node.authenticate(Some(&Resolver { positions: HashMap::new() }.token(token))) {
            Ok(identity) => Some(identity),
            Err(_) => return,
        },
        None => None,
    };
    let ticket = node.admit(None, None, None).expect("one handshake is admitted");
    let client = Arc::new(Client::default());
    let feed = Feed {
        node: Arc::clone(&node),
        client: Arc::clone(&client),
        encoding,
        steps: script.steps.into(),
        ids: Ids::default(),
        waiting_until: None,
    };
    let writer = Writer(Arc::clone(&client));
    run(Arc::clone(&node), feed, writer, encoding, identity, ticket, Transport::WebSocket).await;
    check_left_nothing(&node).await;
    check_replies(&client, encoding);
    assert_eq!(Arc::strong_count(&node), 1, "something still holds the node");
}

/// Every frame decodes; replies answer the commands sent, in order (all of them unless the
/// session ended early); codes are the protocol's.
fn check_replies(client: &Client, encoding: Encoding) {
    let closed_with = client.closed_with.lock().unwrap().clone();
    if let Some((d, _)) = &closed_with {
        assert!((3000..=4999).contains(&d.code), "disconnect code {}", d.code);
        assert!(!d.reason.is_empty(), "disconnect {} without a reason", d.code);
    }
    let mut replied = Vec::new();
    for frame in client.frames.lock().unwrap().iter() {
        let messages = decode_server_messages(frame, encoding)
            .unwrap_or_else(|e| panic!("the server sent a frame its clients cannot read: {e}"));
        for message in messages {
            if debug() {
                eprintln!("server: {message:?}");
            }
            match message {
                ServerMessage::Reply(reply) => {
                    if let Err(e) = &reply.result {
                        assert!((err::INTERNAL..=err::UNRECOVERABLE_POSITION).contains(&e.code), "{e:?}");
                        assert!(!e.message.is_empty(), "{e:?}");
                    }
                    replied.push(reply.id);
                }
                ServerMessage::Push(Push::Unsubscribe { code, .. }) => {
                    assert!(
                        [unsub::SERVER, unsub::INSUFFICIENT_STATE, unsub::EXPIRED].contains(&code),
                        "{code}"
                    );
                }
                ServerMessage::Push(_) => {}
            }
        }
    }
    let sent = client.sent.lock().unwrap();
    if debug() {
        eprintln!("sent {sent:?}, replies {replied:?}, closed with {closed_with:?}");
    }
    let ended_early = closed_with.is_some()
        || client.ended_early.load(Ordering::Acquire)
        || client.write_fails.load(Ordering::Acquire);
    if ended_early {
        let mut rest = sent.iter();
        for id in &replied {
            assert!(
                rest.any(|s| s == id),
                "reply {id} answers no command sent (sent {sent:?}, replies {replied:?})"
            );
        }
    } else {
        assert_eq!(replied, *sent, "every command gets one reply, in order");
    }
}
