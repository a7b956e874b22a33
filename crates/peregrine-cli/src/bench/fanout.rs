//! `peregrine bench fanout`: N subscribers on one channel, publications at a rate (or as
//! fast as the server acknowledges them) through an HTTP endpoint; delivered messages per
//! second, publish-to-deliver latency, and loss, reorder and duplicate counts.
//!
//! Three server flavours speak the same scenario:
//!
//! * `peregrine`: our protocol (`connect`, `subscribe`) in any of its encodings
//!   (`--encoding`), publishing with `POST /api/publish`;
//! * `ws`: the tutorial broadcast server on Node's `ws`: connect to `/?channel=NAME`, every
//!   message is the publication; `POST /publish`;
//! * `socketio`: Engine.IO 4 / Socket.IO 5 over WebSocket (`/socket.io/?EIO=4&transport=
//!   websocket`), joining the room with a `subscribe` event; `POST /publish`.
//!
//! `--transport` picks how subscribers reach the server: WebSocket (every flavour), our HTTP
//! fallback transports (`sse`, `http_stream`, `long_poll`) or Socket.IO's long-polling
//! (`polling`); see [`super::fanout_http`].
//!
//! Every publication carries its publisher's number, a sequence number and the generator's
//! send time (`{"p":P,"seq":N,"t":NANOS}`); subscribers find them with a byte scan, without
//! a JSON parser.
//! The scan works in every encoding of ours: MessagePack and Protobuf carry a JSON
//! payload's text as bytes, and frames are not compressed.
//! Publishes go over kept-alive HTTP connections (`--publishers`, one by default), each
//! pipelined up to `--window`, so the server sees each publisher's in sequence order and any
//! reorder it reports is the server's.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use peregrine::Message;
use peregrine_wire::{
    Command, CommandKind, ConnectRequest, ServerMessage, SubscribeRequest, decode_server_messages,
    encode_commands,
};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::fanout_http;
use super::http::{next_answer, post};
use super::report::{self, Latency, thousands};
use super::sys::{CpuOf, CpuSample, raise_nofile_limit, round1, rss_bytes};
use super::target::{connect_from, loopback_sources};
use super::{CommonArgs, check_positive, seconds};

/// Subscribers per loopback source address (one address's ephemeral ports).
const PER_SOURCE: usize = 8_000;

/// How a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// `peregrine serve`.
    Peregrine,
    /// A Node `ws` broadcast server.
    Ws,
    /// A Socket.IO server.
    Socketio,
}

/// How subscribers reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[value(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum FanoutTransport {
    /// WebSocket (every target).
    Websocket,
    /// Server-Sent Events, `GET /connection/sse` (`--target peregrine`).
    Sse,
    /// HTTP streaming, `POST /connection/stream` (`--target peregrine`).
    HttpStream,
    /// Long-polling, `GET /connection/poll` (`--target peregrine`).
    LongPoll,
    /// Engine.IO long-polling, Socket.IO's `polling` transport (`--target socketio`).
    Polling,
}

impl FanoutTransport {
    /// Whether `target` speaks this transport.
    fn serves(self, target: Flavour) -> bool {
        match self {
            FanoutTransport::Websocket => true,
            FanoutTransport::Sse | FanoutTransport::HttpStream | FanoutTransport::LongPoll => {
                target == Flavour::Peregrine
            }
            FanoutTransport::Polling => target == Flavour::Socketio,
        }
    }
}

/// The encoding `--target peregrine` subscribers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FanoutEncoding {
    /// `peregrine.json`: newline-delimited JSON in text messages.
    Json,
    /// `peregrine.msgpack`: MessagePack in binary messages.
    Msgpack,
    /// `peregrine.protobuf`: length-delimited Protobuf in binary messages.
    Protobuf,
}

impl FanoutEncoding {
    fn wire(self) -> peregrine_wire::Encoding {
        match self {
            FanoutEncoding::Json => peregrine_wire::Encoding::Json,
            FanoutEncoding::Msgpack => peregrine_wire::Encoding::MsgPack,
            FanoutEncoding::Protobuf => peregrine_wire::Encoding::Protobuf,
        }
    }
}

/// Arguments of `peregrine bench fanout`.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// The server's address, e.g. 127.0.0.1:8080.
    addr: std::net::SocketAddr,
    /// How the server speaks.
    #[arg(long, value_enum, default_value_t = Flavour::Peregrine)]
    target: Flavour,
    /// How subscribers reach the server: `websocket`; for `--target peregrine` also its HTTP
    /// transports `sse`, `http_stream` and `long_poll`; for `--target socketio` also
    /// Engine.IO's long-polling, `polling`.
    #[arg(long, value_enum, default_value_t = FanoutTransport::Websocket)]
    transport: FanoutTransport,
    /// Subscribers on the channel.
    #[arg(short, long, default_value_t = 1000, value_name = "N")]
    subscribers: usize,
    /// Other nodes sharing a broker with the server at the address: subscribers are spread
    /// round-robin over the address and these; publications still go to the address.
    #[arg(long, value_name = "ADDR")]
    subscribe_at: Vec<std::net::SocketAddr>,
    /// Process ids of the `--subscribe-at` nodes: their memory growth counts with
    /// `--server-pid`'s, and their CPU use is reported beside it.
    #[arg(long, value_name = "PID")]
    node_pid: Vec<u32>,
    /// Process id of the broker (e.g. the Redis server the nodes share): its CPU use is
    /// reported.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// Channel name.
    #[arg(long, default_value = "bench:fanout")]
    channel: String,
    /// Publications per second; 0 publishes as fast as the server acknowledges, with
    /// `--window` in flight (the server's delivery capacity).
    #[arg(long, default_value_t = 0.0, value_name = "PER_SEC")]
    rate: f64,
    /// Publishes in flight on each HTTP connection (pipelined).
    #[arg(long, default_value_t = 4, value_name = "N")]
    window: usize,
    /// HTTP connections publishing at once, each with its own sequence (order is checked
    /// per publisher) and an equal share of `--rate`. A node serves one connection's
    /// requests in order, so with a broker that answers after a round trip (Redis) only
    /// this many publishes are at the broker at once, whatever `--window`.
    #[arg(long, default_value_t = 1, value_name = "N")]
    publishers: usize,
    /// How long to publish.
    #[arg(short, long, default_value_t = 5.0, value_name = "SECS")]
    duration: f64,
    /// Bytes of padding in each publication.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    payload: usize,
    /// The subscribers' encoding for `--target peregrine` (its subprotocol); json if not
    /// given.
    #[arg(long, value_enum, value_name = "ENCODING")]
    encoding: Option<FanoutEncoding>,
    /// API key for `--target peregrine` (`Authorization: apikey KEY`).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Seconds to wait after publishing for the last deliveries (what has not arrived
    /// then counts as lost).
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    drain: f64,
    #[command(flatten)]
    common: CommonArgs,
}

/// The figures `--json` prints.
#[derive(Debug, Serialize)]
struct FanoutResult {
    scenario: &'static str,
    target: Flavour,
    transport: FanoutTransport,
    /// The subscribers' encoding (`--target peregrine` only).
    encoding: Option<FanoutEncoding>,
    subscribers: usize,
    published: u64,
    publish_s: f64,
    published_per_s: f64,
    /// Deliveries during the publishing window, per second: the server's delivery rate
    /// (a server that acknowledges publishes before delivering shows its backlog as
    /// latency and in `drain_s`, not here).
    delivered_per_s: f64,
    delivered: u64,
    /// Bytes the subscribers received per delivery: WebSocket message payloads plus frame
    /// headers, or HTTP response bodies (without heads) for the HTTP transports. Several
    /// publications may share a frame or an answer.
    frame_bytes_per_delivery: Option<f64>,
    /// Time after the last publish until every delivery arrived (or `--drain` passed).
    drain_s: f64,
    lost: u64,
    reordered: u64,
    duplicated: u64,
    latency: Latency,
    /// RSS growth of the server and of every `--node-pid` while subscribing, per subscriber.
    server_rss_per_subscriber_bytes: Option<f64>,
    generator_cpu_pct: Option<f64>,
    server_cpu_pct: Option<f64>,
    /// CPU use of each `--node-pid`, in order.
    nodes_cpu_pct: Vec<Option<f64>>,
    broker_cpu_pct: Option<f64>,
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Tally {
    next: u64,
    received: u64,
    reordered: u64,
    duplicated: u64,
}

impl Tally {
    fn see(&mut self, seq: u64) {
        if seq >= self.next {
            self.reordered += u64::from(seq > self.next);
            self.next = seq + 1;
            self.received += 1;
        } else {
            // Earlier than expected: a duplicate, or a late one after a jump.
            self.duplicated += 1;
        }
    }
}

/// The number after the first `"key":` in `text`, and the text after that number.
pub(super) fn number_after<'a>(text: &'a [u8], key: &[u8]) -> Option<(u64, &'a [u8])> {
    let mut from = 0;
    // Look for the key's first byte, then compare: padding is skipped a byte at a time,
    // cheaper than comparing a window at every position.
    loop {
        let start = from + text[from..].iter().position(|&b| b == key[0])?;
        from = start + 1;
        if !text[start..].starts_with(key) {
            continue;
        }
        let at = start + key.len();
        let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        // A number that is not there (or too long) is no match; a later one may be.
        if let Some(number) = std::str::from_utf8(&text[at..at + digits]).ok().and_then(|d| d.parse().ok()) {
            return Some((number, &text[at + digits..]));
        }
    }
}

/// Bytes on the wire of a server's (unmasked, unfragmented) message of `len` bytes:
/// the payload and the frame header.
fn frame_len(len: usize) -> usize {
    let header = match len {
        0..126 => 2,
        126..65536 => 4,
        _ => 10,
    };
    len + header
}

/// Runs `peregrine bench fanout`.
pub fn run(args: FanoutArgs) -> anyhow::Result<()> {
    seconds("--duration", args.duration, false)?;
    seconds("--drain", args.drain, true)?;
    check_positive("--rate", args.rate, true)?;
    anyhow::ensure!(
        args.rate == 0.0 || args.rate * args.duration >= 1.0,
        "--rate {} publishes nothing in --duration {} s: give --rate {} or more (or 0: as fast as the \
         server acknowledges)",
        super::number(args.rate),
        args.duration,
        (1.0 / args.duration).ceil()
    );
    anyhow::ensure!(args.common.threads == 1, "--threads: bench fanout runs on one thread only");
    anyhow::ensure!(!args.common.any_response, "--any-response is for echo, idle and handshake, not fanout");
    if args.subscribers == 0 || args.window == 0 || args.publishers == 0 {
        bail!("--subscribers, --window and --publishers must be at least 1");
    }
    if args.encoding.is_some() && args.target != Flavour::Peregrine {
        bail!("--encoding is for --target peregrine only: the other servers have one protocol each");
    }
    if !args.transport.serves(args.target) {
        bail!(
            "--target {:?} does not speak --transport {:?}: sse, http_stream and long_poll are for \
             --target peregrine, polling for --target socketio",
            args.target,
            args.transport
        );
    }
    if args.encoding.is_some_and(|e| e != FanoutEncoding::Json)
        && args.transport != FanoutTransport::Websocket
    {
        bail!("the HTTP transports carry JSON only: --encoding is for --transport websocket");
    }
    if ![args.addr].iter().chain(&args.subscribe_at).all(|a| a.ip().is_loopback()) {
        bail!("bench fanout only targets loopback servers (127.0.0.0/8)");
    }
    if !args.node_pid.is_empty() && args.server_pid().is_none() {
        bail!("--node-pid counts with --server-pid: give both");
    }
    raise_nofile_limit();
    // One thread: the subscribers' tallies are plain RefCells.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, fanout(&args))?;
    let table = [
        (
            "target",
            match result.encoding {
                Some(encoding) => {
                    format!("{:?} ({encoding:?}) over {:?} at {}", result.target, result.transport, args.addr)
                }
                None => format!("{:?} over {:?} at {}", result.target, result.transport, args.addr),
            },
        ),
        ("subscribers", thousands(result.subscribers as f64)),
        (
            "published",
            format!("{} ({}/s)", thousands(result.published as f64), thousands(result.published_per_s)),
        ),
        (
            "delivered",
            format!(
                "{}/s while publishing; {} in all",
                thousands(result.delivered_per_s),
                thousands(result.delivered as f64)
            ),
        ),
        (
            "frame bytes",
            result.frame_bytes_per_delivery.map_or("-".into(), |b| format!("{} per delivery", thousands(b))),
        ),
        ("drain", format!("{:.1} s after the last publish", result.drain_s)),
        (
            "lost / reordered / duplicated",
            format!("{} / {} / {}", result.lost, result.reordered, result.duplicated),
        ),
        ("latency", result.latency.line()),
        (
            "server memory",
            result
                .server_rss_per_subscriber_bytes
                .map_or("-".into(), |b| format!("{} bytes per subscriber", thousands(b))),
        ),
        ("cpu", report::cpu_line(result.generator_cpu_pct, result.server_cpu_pct)),
        ("other nodes' cpu", pcts(&result.nodes_cpu_pct)),
        ("broker cpu", pcts(&[result.broker_cpu_pct])),
    ];
    report::emit(args.common.json, &result, &table)
}

/// CPU figures as `12%, 30%`; `-` for none.
fn pcts(values: &[Option<f64>]) -> String {
    let known: Vec<String> = values.iter().flatten().map(|p| format!("{p:.0}%")).collect();
    if known.is_empty() { "-".into() } else { known.join(", ") }
}

impl FanoutArgs {
    fn server_pid(&self) -> Option<u32> {
        self.common.server_pid
    }

    /// The server's and the other nodes' resident memory, summed.
    fn rss(&self) -> Option<u64> {
        let pids = self.server_pid().into_iter().chain(self.node_pid.iter().copied());
        pids.map(rss_bytes).sum()
    }
}

async fn fanout(args: &FanoutArgs) -> anyhow::Result<FanoutResult> {
    let epoch = Instant::now();
    let rss_before = args.rss();
    // One tally per subscriber and publisher.
    let tallies: Vec<Rc<RefCell<Vec<Tally>>>> = (0..args.subscribers)
        .map(|_| Rc::new(RefCell::new((0..args.publishers).map(|_| Tally::default()).collect())))
        .collect();
    let hist = Rc::new(RefCell::new(report::histogram()));
    let delivered = Arc::new(AtomicU64::new(0));
    let received_bytes = Rc::new(std::cell::Cell::new(0u64));
    let sources = loopback_sources(args.subscribers.div_ceil(PER_SOURCE));
    let bar =
        report::progress(args.common.json, args.subscribers as u64, "subscribing [{bar:30}] {pos}/{len}");
    let nodes: Vec<std::net::SocketAddr> =
        [args.addr].into_iter().chain(args.subscribe_at.iter().copied()).collect();
    let commands = subscribe_commands(args, peregrine_wire::Encoding::Json);
    for (i, tally) in tallies.iter().enumerate() {
        let (node, source) = (nodes[i % nodes.len()], sources[i % sources.len()]);
        let tcp = connect_from(node, Some(source))
            .await
            .with_context(|| format!("connecting subscriber {i} to {node}"))?;
        let counter = Counter {
            tally: tally.clone(),
            hist: hist.clone(),
            delivered: delivered.clone(),
            received_bytes: received_bytes.clone(),
            epoch,
        };
        if args.transport == FanoutTransport::Websocket {
            let ws = subscribe(args, node, tcp).await.with_context(|| format!("subscriber {i}"))?;
            tokio::task::spawn_local(receive(ws, args.target, counter));
        } else {
            let subscriber =
                fanout_http::subscribe(args.transport, node, tcp, Some(source), &args.channel, &commands)
                    .await
                    .with_context(|| format!("subscriber {i} over {:?}", args.transport))?;
            tokio::task::spawn_local(fanout_http::receive(subscriber, counter));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Let the last subscriptions settle before reading memory and publishing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_per = rss_before
        .zip(args.rss())
        .map(|(before, after)| round1(after.saturating_sub(before) as f64 / args.subscribers as f64));

    let others: Vec<u32> = args.node_pid.iter().copied().chain(args.broker_pid).collect();
    let cpu_from = CpuSample::take(args.common.server_pid);
    let others_from = CpuOf::take(&others);
    let started = Instant::now();
    let published = publish(args, epoch, &delivered).await?;
    let publish_s = started.elapsed().as_secs_f64();
    let in_window = delivered.load(Ordering::Relaxed);
    let cpu = cpu_from.percent_until(&CpuSample::take(args.common.server_pid));
    let mut others_cpu = others_from.percent_until(&CpuOf::take(&others));
    let broker_cpu_pct = if args.broker_pid.is_some() { others_cpu.pop().flatten() } else { None };
    let drain_from = Instant::now();
    let expected = published * args.subscribers as u64;
    let drain_until = Instant::now() + Duration::from_secs_f64(args.drain);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_s = drain_from.elapsed().as_secs_f64();
    let total = delivered.load(Ordering::Relaxed);
    let (mut reordered, mut duplicated, mut received) = (0, 0, 0);
    for tallies in &tallies {
        for t in tallies.borrow().iter() {
            reordered += t.reordered;
            duplicated += t.duplicated;
            received += t.received;
        }
    }
    let latency = Latency::of(&hist.borrow());
    Ok(FanoutResult {
        scenario: "fanout",
        target: args.target,
        transport: args.transport,
        encoding: (args.target == Flavour::Peregrine).then(|| encoding(args)),
        subscribers: args.subscribers,
        published,
        publish_s: round1(publish_s),
        published_per_s: round1(published as f64 / publish_s),
        delivered_per_s: round1(in_window as f64 / publish_s),
        delivered: total,
        frame_bytes_per_delivery: (total > 0).then(|| round1(received_bytes.get() as f64 / total as f64)),
        drain_s: round1(drain_s),
        lost: expected.saturating_sub(received),
        reordered,
        duplicated,
        latency,
        server_rss_per_subscriber_bytes: rss_per,
        generator_cpu_pct: cpu.0,
        server_cpu_pct: cpu.1,
        nodes_cpu_pct: others_cpu,
        broker_cpu_pct,
    })
}

type Socket = peregrine::WebSocket<TcpStream>;

/// The next text message, within 10 s.
async fn next_text(ws: &mut Socket) -> anyhow::Result<String> {
    match tokio::time::timeout(Duration::from_secs(10), ws.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => Ok(t.as_str().to_owned()),
        other => bail!("expected a text message while subscribing, got {other:?}"),
    }
}

/// The next data message, within 10 s.
async fn next_data(ws: &mut Socket) -> anyhow::Result<Vec<u8>> {
    match tokio::time::timeout(Duration::from_secs(10), ws.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => Ok(t.as_bytes().to_vec()),
        Ok(Some(Ok(Message::Binary(b)))) => Ok(b.to_vec()),
        other => bail!("expected a data message while subscribing, got {other:?}"),
    }
}

/// The encoding `--target peregrine` subscribers speak.
fn encoding(args: &FanoutArgs) -> FanoutEncoding {
    args.encoding.unwrap_or(FanoutEncoding::Json)
}

/// The frame of `connect` and `subscribe` (ids 1 and 2) a subscriber of ours sends first.
fn subscribe_commands(args: &FanoutArgs, encoding: peregrine_wire::Encoding) -> Vec<u8> {
    let subscribe = SubscribeRequest { channel: args.channel.clone(), ..Default::default() };
    encode_commands(
        &[
            Command { id: 1, kind: CommandKind::Connect(ConnectRequest::default()) },
            Command { id: 2, kind: CommandKind::Subscribe(subscribe) },
        ],
        encoding,
    )
}

/// Opens a subscriber's WebSocket and joins the channel.
async fn subscribe(args: &FanoutArgs, addr: std::net::SocketAddr, tcp: TcpStream) -> anyhow::Result<Socket> {
    let channel = &args.channel;
    let url = match args.target {
        Flavour::Peregrine => format!("ws://{addr}/connection/websocket"),
        Flavour::Ws => format!("ws://{addr}/?channel={channel}"),
        Flavour::Socketio => format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
    };
    let mut builder = peregrine::ClientBuilder::new(url);
    if args.target == Flavour::Peregrine {
        builder = builder.protocol(encoding(args).wire().subprotocol());
    }
    let (mut ws, _) = builder.connect_on(tcp).await?;
    match args.target {
        Flavour::Peregrine => {
            let encoding = encoding(args).wire();
            let commands = subscribe_commands(args, encoding);
            let message = if encoding.is_text() {
                Message::text(String::from_utf8(commands)?)
            } else {
                Message::binary(commands)
            };
            ws.send(message).await?;
            let mut replies = 0;
            while replies < 2 {
                let frame = next_data(&mut ws).await?;
                let messages = decode_server_messages(&frame, encoding).map_err(|e| {
                    anyhow::anyhow!(
                        "the server answered `connect` with something that is not the realtime \
                         protocol ({e}): is --target right, and is it `peregrine serve`?"
                    )
                })?;
                for message in messages {
                    if let ServerMessage::Reply(reply) = message {
                        if let Err(error) = reply.result {
                            bail!("the server refused: {} {}", error.code, error.message);
                        }
                        replies += 1;
                    }
                }
            }
        }
        Flavour::Ws => {}
        Flavour::Socketio => {
            let open = next_text(&mut ws).await?;
            anyhow::ensure!(open.starts_with('0'), "expected the Engine.IO open packet, got {open}");
            ws.send(Message::text("40")).await?;
            let joined = next_text(&mut ws).await?;
            anyhow::ensure!(joined.starts_with("40"), "expected the namespace connect, got {joined}");
            ws.send(Message::text(format!("42[\"subscribe\",{}]", serde_json::to_string(channel)?))).await?;
        }
    }
    Ok(ws)
}

/// Where one subscriber counts what it receives, whatever its transport.
pub(super) struct Counter {
    tally: Rc<RefCell<Vec<Tally>>>,
    hist: Rc<RefCell<Histogram<u64>>>,
    delivered: Arc<AtomicU64>,
    received_bytes: Rc<std::cell::Cell<u64>>,
    epoch: Instant,
}

impl Counter {
    /// Counts `len` bytes received.
    pub(super) fn bytes(&self, len: usize) {
        self.received_bytes.set(self.received_bytes.get() + len as u64);
    }

    /// Counts every publication in `bytes` (whole messages: a number cut short would
    /// miscount) and its publish-to-deliver latency.
    pub(super) fn publications(&self, bytes: &[u8]) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        // Peregrine batches several pushes per message (lines in JSON, array items or
        // length-delimited messages in the binary encodings): each `"p":` in turn, with
        // the `"seq":` and `"t":` after it.
        let mut rest = bytes;
        while let Some((publisher, after)) = number_after(rest, b"\"p\":") {
            let Some((seq, after)) = number_after(after, b"\"seq\":") else { break };
            let Some((sent, after)) = number_after(after, b"\"t\":") else { break };
            rest = after;
            if let Some(tally) = self.tally.borrow_mut().get_mut(publisher as usize) {
                tally.see(seq);
            }
            report::record(&mut self.hist.borrow_mut(), Duration::from_nanos(now.saturating_sub(sent)));
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn receive(mut ws: Socket, flavour: Flavour, counter: Counter) {
    while let Some(Ok(message)) = ws.recv().await {
        let bytes: &[u8] = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
            _ => continue,
        };
        counter.bytes(frame_len(bytes.len()));
        if flavour == Flavour::Socketio && bytes == b"2" {
            // Engine.IO ping: answer or be dropped.
            if ws.send(Message::text("3")).await.is_err() {
                return;
            }
            continue;
        }
        counter.publications(bytes);
    }
}

/// Publishes for `--duration` over `--publishers` connections; returns how many were
/// acknowledged.
async fn publish(args: &FanoutArgs, epoch: Instant, delivered: &Arc<AtomicU64>) -> anyhow::Result<u64> {
    let args = Rc::new(args.clone());
    let publishers: Vec<_> = (0..args.publishers)
        .map(|publisher| {
            let (args, delivered) = (Rc::clone(&args), Arc::clone(delivered));
            tokio::task::spawn_local(async move { publish_on(&args, publisher, epoch, &delivered).await })
        })
        .collect();
    let mut acked = 0;
    for publisher in publishers {
        acked += publisher.await.context("a publisher failed")??;
    }
    Ok(acked)
}

/// Publishes for `--duration` over one HTTP/1.1 connection, pipelined up to `--window`, as
/// publisher number `publisher`; returns how many were acknowledged.
async fn publish_on(
    args: &FanoutArgs,
    publisher: usize,
    epoch: Instant,
    delivered: &AtomicU64,
) -> anyhow::Result<u64> {
    let path = if args.target == Flavour::Peregrine { "/api/publish" } else { "/publish" };
    let auth = args.api_key.as_ref().map(|k| format!("Authorization: apikey {k}\r\n")).unwrap_or_default();
    let pad = "x".repeat(args.payload);
    let tcp = TcpStream::connect(args.addr).await.context("connecting the publisher")?;
    tcp.set_nodelay(true)?;
    let (mut read, mut write) = tcp.into_split();
    let acked = Rc::new(std::cell::Cell::new(0u64));
    let reader_acked = acked.clone();
    // Why publishing cannot go on: a refused publish, or the connection closed.
    let stopped: Rc<std::cell::RefCell<Option<String>>> = Rc::default();
    let reader_stopped = stopped.clone();
    // Counts answers ([`next_answer`]); the first that is not a 2xx stops the run.
    let reader = tokio::task::spawn_local(async move {
        let mut buf = Vec::with_capacity(1 << 16);
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let n = read.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                reader_stopped.borrow_mut().get_or_insert_with(|| {
                    format!(
                        "the server closed the publishing connection after {} answers",
                        reader_acked.get()
                    )
                });
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            while let Some(answer) = next_answer(&mut buf) {
                if let Err(refused) = answer {
                    reader_stopped
                        .borrow_mut()
                        .get_or_insert_with(|| format!("the server answered a publish with {refused}"));
                }
                reader_acked.set(reader_acked.get() + 1);
            }
        }
    });
    let window = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let rate = args.rate / args.publishers as f64;
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let bar = report::progress(
        args.common.json || publisher > 0,
        window.as_millis() as u64,
        "publishing [{bar:30}] {elapsed:>3} {msg}",
    );
    let mut sent = 0u64;
    let refused = || {
        stopped.borrow().clone().map(|why| {
            anyhow::anyhow!(
                "{why}: is --target right, and the address the server's HTTP API (peregrine: POST \
                 /api/publish, with --api-key if it has one)?"
            )
        })
    };
    while start.elapsed() < window {
        if let Some(error) = refused() {
            return Err(error);
        }
        if sent - acked.get() >= args.window as u64 {
            tokio::time::sleep(Duration::from_micros(50)).await;
            continue;
        }
        let body = format!(
            "{{\"channel\":{},\"data\":{{\"p\":{publisher},\"seq\":{sent},\"t\":{},\"pad\":\"{pad}\"}}}}",
            serde_json::to_string(&args.channel)?,
            epoch.elapsed().as_nanos()
        );
        let request = post(path, args.addr, &auth, &body);
        write.write_all(request.as_bytes()).await.context("publishing")?;
        sent += 1;
        if sent.is_multiple_of(64) {
            bar.set_position(start.elapsed().as_millis() as u64);
            bar.set_message(format!("{} delivered", thousands(delivered.load(Ordering::Relaxed) as f64)));
        }
        if let Some(interval) = interval {
            tokio::time::sleep_until((start + interval * sent as u32).into()).await;
        }
    }
    // Wait for the answers still in flight.
    let until = Instant::now() + Duration::from_secs(10);
    while acked.get() < sent && Instant::now() < until {
        if let Some(error) = refused() {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bar.finish_and_clear();
    reader.abort();
    Ok(acked.get())
}
