//! `peregrine bench abuse`: each limit against many abusive connections, with what the
//! abuser gets (HTTP status, close code, error code) and the memory the server holds.
//!
//! The generator starts the server (the `peregrine serve ...` command after `--`) afresh for
//! each case, adding the case's `--set` overrides, so that one case's leftovers never count
//! in the next. For each case: the server's RSS at rest, its peak while the abusers are
//! held, and again a few seconds after they are gone; whether a well-behaved client from
//! another address connects and subscribes meanwhile; and whether the server stayed up.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::bail;
use peregrine::Message;
use peregrine::proto::handshake::HandshakeError;
use peregrine_wire::{
    Command, CommandKind, Encoding, PublishRequest, ServerMessage, SubscribeRequest, decode_server_messages,
    encode_commands,
};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::report::{self, thousands};
use super::scale::open;
use super::spawned::{Server, wait_listening};
use super::sys::{round1, rss_bytes};
use super::target::{connect_from, loopback_sources};
use super::{CommonArgs, seconds};

/// The abuses, one per limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// Connections from one address past `client.max_connections_per_address`.
    AddressConnections,
    /// Handshakes from one address past `client.handshake_rate_per_address`.
    AddressRate,
    /// Upgrades that never send `connect`, from many addresses, past
    /// `client.max_pending_handshakes`.
    PendingHandshakes,
    /// Upgrades that never send `connect` (no admission limit): `client.connect_timeout`.
    NoConnect,
    /// Subscribes past `client.max_subscriptions` on each connection.
    Subscriptions,
    /// Request headers trickled a byte a second (slowloris).
    SlowHeaders,
    /// Publishes past `client.publish_rate` / `publish_burst` on each connection.
    PublishRate,
    /// A message past `client.max_message_size` on each connection.
    Oversized,
}

const ALL: [Case; 8] = [
    Case::AddressConnections,
    Case::AddressRate,
    Case::PendingHandshakes,
    Case::NoConnect,
    Case::Subscriptions,
    Case::SlowHeaders,
    Case::PublishRate,
    Case::Oversized,
];

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::AddressConnections => "address-connections",
            Case::AddressRate => "address-rate",
            Case::PendingHandshakes => "pending-handshakes",
            Case::NoConnect => "no-connect",
            Case::Subscriptions => "subscriptions",
            Case::SlowHeaders => "slow-headers",
            Case::PublishRate => "publish-rate",
            Case::Oversized => "oversized",
        }
    }

    /// The limit under test, and the server settings that isolate it: the per-address
    /// limits are off where every abuser comes from 127.0.0.x for another reason.
    fn setup(self) -> (&'static str, &'static [&'static str]) {
        const OPEN: &[&str] =
            &["client.max_connections_per_address=0", "client.handshake_rate_per_address=0"];
        match self {
            Case::AddressConnections => {
                ("client.max_connections_per_address = 1000", &["client.handshake_rate_per_address=0"])
            }
            Case::AddressRate => (
                "client.handshake_rate_per_address = 20/s, burst 50",
                &["client.max_connections_per_address=0"],
            ),
            Case::PendingHandshakes => ("client.max_pending_handshakes = 1000", OPEN),
            Case::NoConnect => (
                "client.connect_timeout = 10 s",
                &[
                    "client.max_connections_per_address=0",
                    "client.handshake_rate_per_address=0",
                    "client.max_pending_handshakes=0",
                ],
            ),
            Case::Subscriptions => ("client.max_subscriptions = 128", OPEN),
            Case::SlowHeaders => ("client.handshake_timeout = 10 s", OPEN),
            Case::PublishRate => ("client.publish_rate = 50/s, burst 100", OPEN),
            Case::Oversized => ("client.max_message_size = 64 KiB", OPEN),
        }
    }
}

/// Arguments of `peregrine bench abuse`.
#[derive(Debug, clap::Args)]
pub struct AbuseArgs {
    /// The address the server listens on (loopback only), as its command says.
    addr: SocketAddr,
    /// The cases to run (default: all).
    #[arg(long = "case", value_enum)]
    cases: Vec<Case>,
    /// Abusive connections (or attempts) per case.
    #[arg(long, default_value_t = 5000)]
    abusers: usize,
    /// How long the abusers are held once open (the slow headers are trickled at least
    /// 20 s longer, past the server's read timeout).
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    #[command(flatten)]
    process: super::spawned::ServerCommand,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Serialize)]
struct CaseResult {
    case: Case,
    limit: &'static str,
    abusers: usize,
    /// What the abusers got, by outcome (`101`, `429`, `close 3502`, `error 106`...).
    outcomes: BTreeMap<String, u64>,
    rss_before_mib: Option<f64>,
    rss_peak_mib: Option<f64>,
    rss_after_mib: Option<f64>,
    /// A well-behaved client from another address connected and subscribed meanwhile.
    bystander_ok: bool,
    server_up: bool,
}

type Outcomes = Rc<RefCell<BTreeMap<String, u64>>>;

fn tally(outcomes: &Outcomes, what: impl Into<String>) {
    *outcomes.borrow_mut().entry(what.into()).or_default() += 1;
}

/// Runs `peregrine bench abuse`.
pub fn run(args: AbuseArgs) -> anyhow::Result<()> {
    let hold = seconds("--hold", args.hold, false)?;
    anyhow::ensure!(args.common.threads == 1, "--threads: bench abuse runs on one thread only");
    anyhow::ensure!(args.abusers > 0, "--abusers must be at least 1");
    if !args.addr.ip().is_loopback() {
        bail!("bench abuse only targets a loopback server (127.0.0.0/8)");
    }
    super::check_open_files("--abusers", args.abusers)?;
    let cases = if args.cases.is_empty() { ALL.to_vec() } else { args.cases.clone() };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut results = Vec::new();
    for case in cases {
        if !args.common.json {
            eprintln!("abuse: {} ...", case.name());
        }
        let local = tokio::task::LocalSet::new();
        results.push(local.block_on(&runtime, run_case(&args, case, hold))?);
    }
    let mib = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    let rows: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            let outcomes: Vec<String> =
                r.outcomes.iter().map(|(k, v)| format!("{k} x{}", thousands(*v as f64))).collect();
            (
                r.case.name().to_owned(),
                format!(
                    "{} ({}): {}; RSS MiB before {} / peak {} / after {}; bystander {}; server {}",
                    r.limit,
                    thousands(r.abusers as f64),
                    outcomes.join(", "),
                    mib(r.rss_before_mib),
                    mib(r.rss_peak_mib),
                    mib(r.rss_after_mib),
                    if r.bystander_ok { "ok" } else { "FAILED" },
                    if r.server_up { "up" } else { "DOWN" },
                ),
            )
        })
        .collect();
    let table: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    report::emit(args.common.json, &results, &table)?;
    anyhow::ensure!(results.iter().all(|r| r.server_up), "the server went down under an abuse");
    Ok(())
}

async fn run_case(args: &AbuseArgs, case: Case, hold: Duration) -> anyhow::Result<CaseResult> {
    let (limit, settings) = case.setup();
    // The namespaces the abusers and the bystander use, whatever the base configuration.
    let namespaces = [
        "channels.named.abuse.history_size=0",
        "channels.named.abuse.allow_publish=true",
        "channels.named.bystander.history_size=0",
    ];
    let extra: Vec<String> =
        settings.iter().chain(&namespaces).flat_map(|s| ["--set".to_owned(), (*s).to_owned()]).collect();
    let mut server = Server::start(&args.process.server, &extra, args.process.server_log.as_deref())?;
    wait_listening(args.addr, &mut server).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = server.pid();
    let rss_before = rss_bytes(pid);
    let peak = Rc::new(RefCell::new(rss_before));
    let sampler = {
        let peak = Rc::clone(&peak);
        tokio::task::spawn_local(async move {
            loop {
                let now = rss_bytes(pid);
                let highest = (*peak.borrow()).max(now);
                *peak.borrow_mut() = highest;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let outcomes: Outcomes = Rc::default();
    let bystander = Rc::new(RefCell::new(None::<bool>));
    {
        let bystander = Rc::clone(&bystander);
        let addr = args.addr;
        // Once the abuse is under way: a client from an address no abuser uses.
        tokio::task::spawn_local(async move {
            tokio::time::sleep(hold.min(Duration::from_secs(2))).await;
            let channels = ["bystander:1".to_owned(), "bystander:all".to_owned()];
            let ok = tokio::time::timeout(
                Duration::from_secs(10),
                open(addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 250)), &channels),
            )
            .await;
            *bystander.borrow_mut() = Some(matches!(ok, Ok(Ok(_))));
        });
    }
    let abuse = Abuse { addr: args.addr, n: args.abusers, hold, outcomes: Rc::clone(&outcomes) };
    abuse.run(case).await;
    // The bystander has had its chance by now (it starts within 2 s and waits at most 10).
    let until = Instant::now() + Duration::from_secs(12);
    while bystander.borrow().is_none() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    sampler.abort();
    let rss_after = rss_bytes(pid);
    let server_up = server.up();
    server.stop_while_running(false).await;
    let mib = |b: Option<u64>| b.map(|b| round1(b as f64 / (1024.0 * 1024.0)));
    let outcomes = outcomes.borrow().clone();
    let rss_peak = *peak.borrow();
    let bystander_ok = bystander.borrow().unwrap_or(false);
    Ok(CaseResult {
        case,
        limit,
        abusers: args.abusers,
        outcomes,
        rss_before_mib: mib(rss_before),
        rss_peak_mib: mib(rss_peak),
        rss_after_mib: mib(rss_after),
        bystander_ok,
        server_up,
    })
}

/// What each abuser needs: where to go, where to tally.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    outcomes: Outcomes,
}

/// One case's abusers.
struct Abuse {
    addr: SocketAddr,
    n: usize,
    hold: Duration,
    outcomes: Outcomes,
}

type Socket = peregrine::WebSocket<TcpStream>;

impl Abuse {
    fn target(&self) -> Target {
        Target { addr: self.addr, outcomes: Rc::clone(&self.outcomes) }
    }

    async fn run(&self, case: Case) {
        let one_source = [IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))];
        let many = loopback_sources(16);
        let held: Rc<RefCell<Vec<Socket>>> = Rc::default();
        match case {
            Case::AddressConnections | Case::AddressRate => {
                self.each(&one_source, |abuse, source, _| {
                    let held = Rc::clone(&held);
                    async move {
                        let channels = ["abuse:1".to_owned(), "abuse:all".to_owned()];
                        match open(abuse.addr, source, &channels).await {
                            Ok(ws) => {
                                tally(&abuse.outcomes, "101, connected");
                                held.borrow_mut().push(ws);
                            }
                            Err(e) => tally(&abuse.outcomes, refusal(&e)),
                        }
                    }
                })
                .await;
                tokio::time::sleep(self.hold).await;
            }
            Case::PendingHandshakes | Case::NoConnect => {
                self.each(&many, |abuse, source, _| {
                    let held = Rc::clone(&held);
                    async move {
                        match upgrade(abuse.addr, source).await {
                            Ok(ws) => held.borrow_mut().push(ws),
                            Err(e) => tally(&abuse.outcomes, refusal(&e)),
                        }
                    }
                })
                .await;
                tokio::time::sleep(self.hold).await;
                // Then what each upgraded one gets in the end (the connect timeout).
                let sockets = std::mem::take(&mut *held.borrow_mut());
                let closes = sockets.into_iter().map(|ws| {
                    let outcomes = Rc::clone(&self.outcomes);
                    tokio::task::spawn_local(async move {
                        tally(&outcomes, format!("101, then {}", ending(ws, Duration::from_secs(20)).await));
                    })
                });
                futures_join(closes.collect()).await;
            }
            Case::Subscriptions | Case::PublishRate => {
                self.each(&many, |abuse, source, i| {
                    let held = Rc::clone(&held);
                    async move {
                        let channels = [format!("abuse:{i}"), "abuse:all".to_owned()];
                        let Ok(mut ws) = open(abuse.addr, source, &channels).await else {
                            tally(&abuse.outcomes, "could not connect");
                            return;
                        };
                        // 160 commands past the first two subscriptions: 126 more
                        // subscriptions fit under 128, or 160 publishes against a burst of 100.
                        let commands: Vec<Command> = (0..160u64)
                            .map(|k| {
                                let kind = if case == Case::Subscriptions {
                                    CommandKind::Subscribe(SubscribeRequest {
                                        channel: format!("abuse:{i}:{k}"),
                                        ..Default::default()
                                    })
                                } else {
                                    CommandKind::Publish(PublishRequest {
                                        channel: format!("abuse:{i}"),
                                        data: serde_json::json!({ "k": k }).into(),
                                        idempotency_key: None,
                                    })
                                };
                                Command { id: 10 + k, kind }
                            })
                            .collect();
                        for reply in replies(&mut ws, &commands).await {
                            tally(&abuse.outcomes, reply);
                        }
                        held.borrow_mut().push(ws);
                    }
                })
                .await;
                tokio::time::sleep(self.hold).await;
            }
            Case::Oversized => {
                self.each(&many, |abuse, source, i| async move {
                    let channels = [format!("abuse:{i}"), "abuse:all".to_owned()];
                    let Ok(mut ws) = open(abuse.addr, source, &channels).await else {
                        tally(&abuse.outcomes, "could not connect");
                        return;
                    };
                    let big = format!(
                        "{{\"id\":99,\"publish\":{{\"channel\":\"abuse:x\",\"data\":\"{}\"}}}}",
                        "x".repeat(1 << 20)
                    );
                    let _ = ws.send(Message::text(big)).await;
                    tally(&abuse.outcomes, ending(ws, Duration::from_secs(20)).await);
                })
                .await;
                tokio::time::sleep(self.hold).await;
            }
            Case::SlowHeaders => {
                let trickle_for = self.hold + Duration::from_secs(20);
                self.each_at_once(&many, |abuse, source, _| async move {
                    tally(&abuse.outcomes, slow_headers(abuse.addr, source, trickle_for).await);
                })
                .await;
            }
        }
        drop(held);
    }

    /// Runs `abuser` `n` times, 256 at a time, spread over `sources`; returns when every
    /// one has finished its part (held sockets stay in the abuser's hands).
    async fn each<F, Fut>(&self, sources: &[IpAddr], abuser: F)
    where
        F: Fn(Target, IpAddr, usize) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let permits = tokio::sync::Semaphore::new(256);
        let mut running = futures_util::stream::FuturesUnordered::new();
        for i in 0..self.n {
            let permits = &permits;
            let run = abuser(self.target(), sources[i % sources.len()], i);
            running.push(async move {
                let _permit = permits.acquire().await;
                run.await;
            });
        }
        use futures_util::StreamExt;
        while running.next().await.is_some() {}
    }

    /// Runs `abuser` `n` times, all at once (each holds its connection for the whole case).
    async fn each_at_once<F, Fut>(&self, sources: &[IpAddr], abuser: F)
    where
        F: Fn(Target, IpAddr, usize) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let running: futures_util::stream::FuturesUnordered<_> =
            (0..self.n).map(|i| abuser(self.target(), sources[i % sources.len()], i)).collect();
        use futures_util::StreamExt;
        running.for_each(|()| async {}).await;
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// Opens a WebSocket (the upgrade only: no `connect`).
async fn upgrade(addr: SocketAddr, source: IpAddr) -> anyhow::Result<Socket> {
    let tcp = connect_from(addr, Some(source)).await?;
    let url = format!("ws://{addr}/connection/websocket");
    let (ws, _) =
        peregrine::ClientBuilder::new(url).protocol(Encoding::Json.subprotocol()).connect_on(tcp).await?;
    Ok(ws)
}

/// A refused handshake as its status (`429`, `503`), or the error.
fn refusal(error: &anyhow::Error) -> String {
    match error.downcast_ref::<peregrine::Error>() {
        Some(peregrine::Error::Handshake(HandshakeError::UnexpectedStatus { status, headers, .. })) => {
            match headers.get("retry-after") {
                Some(after) => format!("{status} (Retry-After: {after})"),
                None => status.to_string(),
            }
        }
        _ => format!("error: {}", short(&format!("{error:#}"))),
    }
}

fn short(text: &str) -> String {
    text.chars().take(60).collect()
}

/// How a connection ends: its close code, or the socket closing without one, within `wait`.
async fn ending(mut ws: Socket, wait: Duration) -> String {
    let result = tokio::time::timeout(wait, async {
        loop {
            match ws.recv().await {
                Some(Ok(Message::Close(frame))) => {
                    return frame
                        .map_or("close (no code)".to_owned(), |f| format!("close {}", u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(peregrine::Error::Closed)) => return "closed".to_owned(),
                Some(Err(e)) => return format!("error: {}", short(&e.to_string())),
                None => return "closed".to_owned(),
            }
        }
    })
    .await;
    result.unwrap_or_else(|_| format!("still open after {} s", wait.as_secs()))
}

/// Sends `commands` in one message and reads their replies: `ok`, or `error CODE`.
async fn replies(ws: &mut Socket, commands: &[Command]) -> Vec<String> {
    let Ok(text) = String::from_utf8(encode_commands(commands, Encoding::Json)) else { return Vec::new() };
    if ws.send(Message::text(text)).await.is_err() {
        return vec!["send failed".into()];
    }
    let mut out = Vec::new();
    while out.len() < commands.len() {
        let frame = match tokio::time::timeout(Duration::from_secs(30), ws.recv()).await {
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
            _ => {
                out.push("no reply".into());
                break;
            }
        };
        let Ok(messages) = decode_server_messages(frame.as_bytes(), Encoding::Json) else { continue };
        for message in messages {
            if let ServerMessage::Reply(reply) = message {
                out.push(match reply.result {
                    Ok(_) => "ok".into(),
                    Err(e) => format!("error {}", e.code),
                });
            }
        }
    }
    out
}

/// Trickles a request head one byte a second for up to `trickle_for`; says how the server
/// ended it.
async fn slow_headers(addr: SocketAddr, source: IpAddr, trickle_for: Duration) -> String {
    let Ok(mut tcp) = connect_from(addr, Some(source)).await else { return "could not connect".into() };
    let started = Instant::now();
    let head = format!("GET /connection/websocket HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
    let mut answer = [0u8; 256];
    for byte in head.bytes().chain(std::iter::repeat(b'a')) {
        if started.elapsed() >= trickle_for {
            return format!("still open after {} s", trickle_for.as_secs());
        }
        if tcp.write_all(&[byte]).await.is_err() {
            return format!("closed by the server after ~{} s", started.elapsed().as_secs());
        }
        tokio::select! {
            read = tcp.read(&mut answer) => {
                let seconds = started.elapsed().as_secs();
                return match read {
                    Ok(0) | Err(_) => format!("closed by the server after ~{} s", bucket(seconds)),
                    Ok(n) => {
                        let line = String::from_utf8_lossy(&answer[..n]);
                        let status = line.split_whitespace().nth(1).unwrap_or("?").to_owned();
                        format!("{status} after ~{} s", bucket(seconds))
                    }
                };
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    unreachable!("the head is endless")
}

/// Seconds rounded to 5, so that outcomes group.
fn bucket(seconds: u64) -> u64 {
    (seconds + 2) / 5 * 5
}
