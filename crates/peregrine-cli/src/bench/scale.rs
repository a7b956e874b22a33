//! `peregrine bench scale`: many subscribed connections to `peregrine serve` (one node or
//! several), each on one of `--channels` channels and on one broadcast channel; then a few
//! broadcasts to all. Reports the connect rate, the servers' memory per connection, how long
//! a broadcast takes to reach everyone (p50, p99, last) and the servers' CPU per delivery.
//!
//! One process holds at most what its open-files limit allows, so a run past it is split
//! over several generator processes: each connects its share (`--connections`), all but one
//! only listen (`--listen-only`, `--listen-for`), and each writes the latency of every
//! delivery to `--latencies-out` for a script to merge. Publications carry the publisher's
//! wall-clock time, so processes on one machine measure one clock.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use peregrine::Message;
use peregrine_wire::{
    Command, CommandKind, ConnectRequest, Encoding, ServerMessage, SubscribeRequest, decode_server_messages,
    encode_commands,
};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::fanout::number_after;
use super::report::{self, thousands};
use super::sys::{CpuSample, raise_nofile_limit, round1, rss_bytes};
use super::target::{connect_from, loopback_sources};
use super::{CommonArgs, seconds};

/// Connections per loopback source address (one address's ephemeral ports).
const PER_SOURCE: usize = 8_000;

/// Arguments of `peregrine bench scale`.
#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// The nodes' addresses (`127.0.0.1:8080`); connections go to them in turn, broadcasts
    /// are published on the first.
    #[arg(required = true)]
    addrs: Vec<SocketAddr>,
    /// Connections this process opens.
    #[arg(short, long, default_value_t = 1000)]
    connections: usize,
    /// Channels the connections are spread over (`scale:<n>`), besides the broadcast one.
    #[arg(long, default_value_t = 1000)]
    channels: usize,
    /// The channel every connection subscribes to.
    #[arg(long, default_value = "scale:all")]
    broadcast_channel: String,
    /// Handshakes (with their `connect` and subscriptions) in flight while connecting.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Broadcasts to publish, one every `--interval`.
    #[arg(long, default_value_t = 5)]
    broadcasts: u64,
    /// Seconds between broadcasts.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Publish nothing: only listen, for `--listen-for` seconds after connecting (another
    /// process publishes).
    #[arg(long)]
    listen_only: bool,
    /// With `--listen-only`: how long to listen at most (it ends sooner once every
    /// connection has all `--broadcasts`).
    #[arg(long, default_value_t = 20.0)]
    listen_for: f64,
    /// Write every delivery to this file, one per line: the broadcast's number and its
    /// latency in microseconds (`3 1520`).
    #[arg(long)]
    latencies_out: Option<std::path::PathBuf>,
    /// Create this (empty) file once every connection is open and subscribed, for a script
    /// that starts the publishing process only when all listeners are ready.
    #[arg(long)]
    ready_out: Option<std::path::PathBuf>,
    /// Once the results are written, keep every connection open until this file exists: a
    /// generator closing its 10,000s of sockets would load the machine (and the servers)
    /// while other generators still receive.
    #[arg(long)]
    hold_open: Option<std::path::PathBuf>,
    /// The API key of the node publishing the broadcasts.
    #[arg(long)]
    api_key: Option<String>,
    /// While deliveries arrive, pause this many microseconds between turns of the event
    /// loop, so that each turn reads every socket that received meanwhile instead of the
    /// thread being woken for each (0: off; after a turn with nothing read, it waits as
    /// usual). With 100,000 clients on the servers' own cores, a wake-up per delivery is
    /// work the servers' sends do for the clients (on loopback a send runs the receiver's
    /// wake-up) that clients on their own machines would not cost them. Adds up to the pause
    /// to each measured latency.
    #[arg(long, default_value_t = 0)]
    read_pause_us: u64,
    /// More servers whose memory and CPU to read (besides --server-pid), e.g. every node.
    #[arg(long = "also-pid", value_name = "PID")]
    also_pids: Vec<u32>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Serialize)]
struct ScaleResult {
    scenario: &'static str,
    nodes: usize,
    connections: usize,
    connect_s: f64,
    connects_per_s: f64,
    /// Handshakes the servers turned away with 503 or 429 (and `Retry-After`) while
    /// connecting; each was tried again after that delay, as a client should.
    refused_and_retried: u64,
    server_rss_per_connection_bytes: Option<f64>,
    broadcasts: u64,
    deliveries: u64,
    lost: u64,
    /// Medians over the broadcasts, milliseconds.
    reach_p50_ms: Option<f64>,
    reach_p99_ms: Option<f64>,
    reach_last_ms: Option<f64>,
    server_cpu_us_per_delivery: Option<f64>,
    generator_cpu_pct: Option<f64>,
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Runs `peregrine bench scale`.
pub fn run(args: ScaleArgs) -> anyhow::Result<()> {
    seconds("--interval", args.interval, true)?;
    seconds("--listen-for", args.listen_for, false)?;
    anyhow::ensure!(args.common.threads == 1, "--threads: bench scale runs on one thread only");
    if args.connections == 0 || args.channels == 0 || args.concurrency == 0 {
        bail!("--connections, --channels and --concurrency must be at least 1");
    }
    if args.addrs.iter().any(|a| !a.ip().is_loopback()) {
        bail!("bench scale only targets loopback servers (127.0.0.0/8)");
    }
    super::check_open_files("--connections", args.connections)?;
    raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, scale(&args))?;
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
    let table = [
        ("nodes", result.nodes.to_string()),
        (
            "connections",
            format!(
                "{} in {:.1} s ({}/s)",
                thousands(result.connections as f64),
                result.connect_s,
                thousands(result.connects_per_s)
            ),
        ),
        (
            "server memory",
            result
                .server_rss_per_connection_bytes
                .map_or("-".into(), |b| format!("{} bytes per connection", thousands(b))),
        ),
        (
            "broadcast reach",
            format!(
                "p50 {}, p99 {}, last {} (median of {})",
                ms(result.reach_p50_ms),
                ms(result.reach_p99_ms),
                ms(result.reach_last_ms),
                result.broadcasts
            ),
        ),
        ("deliveries", format!("{} ({} lost)", thousands(result.deliveries as f64), result.lost)),
        (
            "server cpu",
            result.server_cpu_us_per_delivery.map_or("-".into(), |us| format!("{us:.2} µs per delivery")),
        ),
    ];
    report::emit(args.common.json, &result, &table)
}

fn server_pids(args: &ScaleArgs) -> Vec<u32> {
    args.common.server_pid.into_iter().chain(args.also_pids.iter().copied()).collect()
}

fn total_rss(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| rss_bytes(p)).sum()
}

/// Every broadcast's delivery latencies (microseconds), by broadcast number.
type Reach = Rc<RefCell<Vec<Vec<u64>>>>;

async fn scale(args: &ScaleArgs) -> anyhow::Result<ScaleResult> {
    let pids = server_pids(args);
    let rss_before = total_rss(&pids);
    let reach: Reach = Rc::new(RefCell::new(vec![Vec::new(); args.broadcasts as usize]));
    let pacer = Rc::new(Pacer::new(Duration::from_micros(args.read_pause_us)));
    let sources = loopback_sources(args.connections.div_ceil(PER_SOURCE));
    let bar =
        report::progress(args.common.json, args.connections as u64, "connecting [{bar:30}] {pos}/{len}");
    let started = Instant::now();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let refused = Rc::new(std::cell::Cell::new(0u64));
    let mut opening = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let permit = std::sync::Arc::clone(&permits).acquire_owned().await?;
        let addr = args.addrs[i % args.addrs.len()];
        let source = sources[i % sources.len()];
        let channels = [format!("scale:{}", i % args.channels), args.broadcast_channel.clone()];
        let (reach, bar, refused) = (Rc::clone(&reach), bar.clone(), Rc::clone(&refused));
        let pacer = Rc::clone(&pacer);
        opening.push(tokio::task::spawn_local(async move {
            let ws = open_retrying(addr, source, &channels, &refused)
                .await
                .with_context(|| format!("connection {i} to {addr}"));
            drop(permit);
            bar.inc(1);
            let ws = ws?;
            tokio::task::spawn_local(receive(ws, reach, pacer));
            anyhow::Ok(())
        }));
    }
    for task in opening {
        task.await??;
    }
    let connect_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    if let Some(path) = &args.ready_out {
        std::fs::write(path, "").with_context(|| format!("writing {}", path.display()))?;
    }
    if args.read_pause_us > 0 {
        tokio::task::spawn_local(Rc::clone(&pacer).run());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_per = rss_before
        .zip(total_rss(&pids))
        .map(|(before, after)| round1(after.saturating_sub(before) as f64 / args.connections as f64));

    let cpu_before: Vec<CpuSample> = pids.iter().map(|&p| CpuSample::take(Some(p))).collect();
    let own_before = CpuSample::take(None);
    let broadcast_started = Instant::now();
    if args.listen_only {
        let until = Instant::now() + Duration::from_secs_f64(args.listen_for);
        let expected = args.connections as u64 * args.broadcasts;
        while delivered(&reach) < expected && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        for n in 0..args.broadcasts {
            publish(args.addrs[0], &args.broadcast_channel, n, args.api_key.as_deref()).await?;
            tokio::time::sleep(Duration::from_secs_f64(args.interval)).await;
        }
        // The last broadcast reaches everyone, or 10 s pass.
        let until = Instant::now() + Duration::from_secs(10);
        let expected = args.connections as u64 * args.broadcasts;
        while delivered(&reach) < expected && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let window = broadcast_started.elapsed().as_secs_f64();
    let server_cpu_s: Option<f64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|(&p, before)| before.percent_until(&CpuSample::take(Some(p))).1.map(|pct| pct / 100.0 * window))
        .sum();
    let own_cpu = own_before.percent_until(&CpuSample::take(None)).0;
    if let Some(path) = &args.latencies_out {
        let lines: String = reach
            .borrow()
            .iter()
            .enumerate()
            .flat_map(|(n, r)| r.iter().map(move |us| format!("{n} {us}\n")))
            .collect();
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    // The summary, with the borrow ended before any wait below.
    let result = {
        let reach = reach.borrow();
        let deliveries: u64 = reach.iter().map(|r| r.len() as u64).sum();
        let per_broadcast = |pick: fn(&[u64]) -> u64| -> Option<f64> {
            let mut values: Vec<u64> = reach.iter().filter(|r| !r.is_empty()).map(|r| pick(r)).collect();
            values.sort_unstable();
            values.get(values.len() / 2).map(|&us| round1(us as f64 / 1000.0))
        };
        let sorted: Vec<Vec<u64>> = reach
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.sort_unstable();
                r
            })
            .collect();
        let quantile = |q: f64| -> Option<f64> {
            let mut values: Vec<u64> = sorted
                .iter()
                .filter(|r| !r.is_empty())
                .map(|r| r[((r.len() as f64 * q) as usize).min(r.len() - 1)])
                .collect();
            values.sort_unstable();
            values.get(values.len() / 2).map(|&us| round1(us as f64 / 1000.0))
        };
        let expected = if args.listen_only { deliveries } else { args.connections as u64 * args.broadcasts };
        ScaleResult {
            scenario: "scale",
            nodes: args.addrs.len(),
            connections: args.connections,
            connect_s: round1(connect_s),
            connects_per_s: round1(args.connections as f64 / connect_s),
            refused_and_retried: refused.get(),
            server_rss_per_connection_bytes: rss_per,
            broadcasts: if args.listen_only {
                reach.iter().filter(|r| !r.is_empty()).count() as u64
            } else {
                args.broadcasts
            },
            deliveries,
            lost: expected.saturating_sub(deliveries),
            reach_p50_ms: quantile(0.5),
            reach_p99_ms: quantile(0.99),
            reach_last_ms: per_broadcast(|r| r.iter().copied().max().unwrap_or(0)),
            server_cpu_us_per_delivery: server_cpu_s
                .filter(|_| deliveries > 0)
                .map(|s| (s * 1e6 / deliveries as f64 * 100.0).round() / 100.0),
            generator_cpu_pct: own_cpu,
        }
    };
    if let Some(path) = &args.hold_open {
        while !path.exists() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(result)
}

/// Reads in batches while deliveries arrive (see `--read-pause-us`).
struct Pacer {
    pause: Duration,
    /// Deliveries so far.
    read: std::cell::Cell<u64>,
    /// Wakes the idle pacer at the first delivery of a burst.
    arrived: tokio::sync::Notify,
}

impl Pacer {
    fn new(pause: Duration) -> Pacer {
        Pacer { pause, read: std::cell::Cell::new(0), arrived: tokio::sync::Notify::new() }
    }

    fn delivered(&self) {
        self.read.set(self.read.get() + 1);
        if !self.pause.is_zero() {
            self.arrived.notify_one();
        }
    }

    /// Waits (as the event loop does, in `epoll_wait`) until a delivery arrives; then, until
    /// a turn reads nothing, blocks the thread for the pause and yields: tokio polls the
    /// sockets without waiting before it runs this task again, so every connection that
    /// received meanwhile is read in that turn.
    async fn run(self: Rc<Self>) {
        loop {
            self.arrived.notified().await;
            loop {
                let before = self.read.get();
                std::thread::sleep(self.pause);
                tokio::task::yield_now().await;
                if self.read.get() == before {
                    break;
                }
            }
        }
    }
}

fn delivered(reach: &Reach) -> u64 {
    reach.borrow().iter().map(|r| r.len() as u64).sum()
}

type Socket = peregrine::WebSocket<TcpStream>;

/// Handshakes refused with 503 or 429 are tried again, at most this many times each.
const RETRIES: u32 = 20;

/// [`open`], trying again after a 503 or 429 (the server's `Retry-After`, 1 s without
/// one), as the SDKs do: a busy node under a connect burst is not a failed run.
async fn open_retrying(
    addr: SocketAddr,
    source: std::net::IpAddr,
    channels: &[String],
    refused: &std::cell::Cell<u64>,
) -> anyhow::Result<Socket> {
    let mut attempts = 0;
    loop {
        let error = match open(addr, source, channels).await {
            Ok(ws) => return Ok(ws),
            Err(error) => error,
        };
        let Some((status, retry_after)) = refusal(&error) else { return Err(error) };
        if !matches!(status, 503 | 429) || attempts == RETRIES {
            return Err(error);
        }
        let delay = retry_after.unwrap_or(Duration::from_secs(1));
        attempts += 1;
        refused.set(refused.get() + 1);
        tokio::time::sleep(delay).await;
    }
}

/// The HTTP status of a refused handshake and its `Retry-After`, if `error` is one.
pub(super) fn refusal(error: &anyhow::Error) -> Option<(u16, Option<Duration>)> {
    let peregrine::Error::Handshake(peregrine::proto::handshake::HandshakeError::UnexpectedStatus {
        status,
        headers,
        ..
    }) = error.downcast_ref::<peregrine::Error>()?
    else {
        return None;
    };
    let retry_after =
        headers.get("retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
    Some((*status, retry_after))
}

/// Opens a connection, sends `connect` and the subscriptions in one frame, and waits for
/// every reply.
pub(super) async fn open(
    addr: SocketAddr,
    source: std::net::IpAddr,
    channels: &[String],
) -> anyhow::Result<Socket> {
    let tcp = connect_from(addr, Some(source)).await?;
    let url = format!("ws://{addr}/connection/websocket");
    let (mut ws, _) =
        peregrine::ClientBuilder::new(url).protocol(Encoding::Json.subprotocol()).connect_on(tcp).await?;
    let mut commands = vec![Command { id: 1, kind: CommandKind::Connect(ConnectRequest::default()) }];
    for (i, channel) in channels.iter().enumerate() {
        let subscribe = SubscribeRequest { channel: channel.clone(), ..Default::default() };
        commands.push(Command { id: 2 + i as u64, kind: CommandKind::Subscribe(subscribe) });
    }
    ws.send(Message::text(String::from_utf8(encode_commands(&commands, Encoding::Json))?)).await?;
    let mut replies = 0;
    while replies < commands.len() {
        let frame = match tokio::time::timeout(Duration::from_secs(30), ws.recv()).await {
            Ok(Some(Ok(Message::Text(t)))) => t,
            other => bail!("expected the replies, got {other:?}"),
        };
        for message in decode_server_messages(frame.as_bytes(), Encoding::Json)? {
            if let ServerMessage::Reply(reply) = message {
                if let Err(error) = reply.result {
                    bail!("the server refused: {} {}", error.code, error.message);
                }
                replies += 1;
            }
        }
    }
    Ok(ws)
}

/// Records the latency of each broadcast (`{"n":N,"t":UNIX_NANOS}`) this connection gets.
async fn receive(mut ws: Socket, reach: Reach, pacer: Rc<Pacer>) {
    while let Some(Ok(message)) = ws.recv().await {
        let Message::Text(text) = &message else { continue };
        let now = unix_nanos();
        let mut rest = text.as_bytes();
        while let Some((n, after)) = number_after(rest, b"\"n\":") {
            let Some((sent, after)) = number_after(after, b"\"t\":") else { break };
            rest = after;
            if let Some(slot) = reach.borrow_mut().get_mut(n as usize) {
                slot.push(now.saturating_sub(sent) / 1000);
            }
            pacer.delivered();
        }
    }
}

/// Publishes broadcast `n` with `POST /api/publish` on its own connection.
async fn publish(addr: SocketAddr, channel: &str, n: u64, key: Option<&str>) -> anyhow::Result<()> {
    let auth = key.map(|k| format!("Authorization: apikey {k}\r\n")).unwrap_or_default();
    let body = format!(
        "{{\"channel\":{},\"data\":{{\"n\":{n},\"t\":{}}}}}",
        serde_json::to_string(channel)?,
        unix_nanos()
    );
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = TcpStream::connect(addr).await.context("connecting to publish")?;
    tcp.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    anyhow::ensure!(answer.starts_with("HTTP/1.1 200"), "the publish was refused: {answer}");
    Ok(())
}
