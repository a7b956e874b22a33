//! `peregrine bench storm`: a server restarted under many subscribed clients, and how they
//! all come back.
//!
//! The generator starts the server itself (the command after `--`), so that it can restart
//! it and watch the new process: it connects `--connections` clients (each subscribed to
//! one of `--channels` channels and to a broadcast channel), stops the server with SIGTERM
//! (a graceful shutdown: every session is closed with a reconnect hint) or SIGKILL, starts
//! it again at once, and lets every client reconnect by its `--policy`:
//!
//! * `jitter`: the Rust SDK's reconnect policy, [`peregrine_client::Backoff`] (full jitter,
//!   250 ms doubling up to 20 s) with the server's `Retry-After` as a floor, as
//!   `peregrine-client`'s session loop applies it. Running 19,000 SDK clients (a task,
//!   channels and state each) would measure the generator, so each client here is a bare
//!   WebSocket with the SDK's delay rule.
//! * `naive`: at once, again and again, ignoring `Retry-After`.
//!
//! Reported: when each client was back (connected and subscribed) after the stop, as p50 /
//! p99 / last; every failed attempt by kind (503 busy, 503 shutting down, 429, connection
//! refused while the server was down, timeouts, other); the server's RSS in steady state
//! before the stop, at its peak during the storm and once everyone is back; its CPU during
//! the storm; and whether it stayed up.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::bail;
use peregrine_client::Backoff;
use serde::Serialize;

use super::report::{self, thousands};
use super::scale::{open, refusal};
use super::spawned::{Server, wait_listening};
use super::sys::{CpuOf, round1, rss_bytes};
use super::target::loopback_sources;
use super::{CommonArgs, seconds};

/// Source addresses the clients are spread over: each has its own ephemeral ports, and a
/// naive storm goes through many of them.
const SOURCES: usize = 16;

/// How the clients come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The SDK's full-jitter exponential backoff, with `Retry-After` as a floor.
    Jitter,
    /// Reconnect at once after every failure, ignoring `Retry-After`.
    Naive,
}

/// How the server is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// SIGTERM: the graceful shutdown (sessions closed with a reconnect hint).
    Term,
    /// SIGKILL: the process dies; clients see their sockets reset.
    Kill,
}

/// Arguments of `peregrine bench storm`.
#[derive(Debug, clap::Args)]
pub struct StormArgs {
    /// The address the server listens on (loopback only), as its command says.
    addr: SocketAddr,
    /// Clients.
    #[arg(short, long, default_value_t = 1000)]
    connections: usize,
    /// Channels the clients are spread over (`storm:<n>`), besides the broadcast one.
    #[arg(long, default_value_t = 1000)]
    channels: usize,
    /// The channel every client subscribes to.
    #[arg(long, default_value = "storm:all")]
    broadcast_channel: String,
    /// How clients reconnect.
    #[arg(long, value_enum, default_value_t = Policy::Jitter)]
    policy: Policy,
    /// How the server is stopped.
    #[arg(long, value_enum, default_value_t = Stop::Term)]
    stop: Stop,
    /// Handshakes in flight while the clients first connect (before the restart).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Give up waiting for everyone to be back after this many seconds.
    #[arg(long, default_value_t = 180.0)]
    give_up_after: f64,
    #[command(flatten)]
    process: super::spawned::ServerCommand,
    #[command(flatten)]
    common: CommonArgs,
}

/// Failed connection attempts, by kind.
#[derive(Debug, Default, Clone, Serialize)]
struct Failures {
    /// `503` from the new server (with `Retry-After`: too many handshakes in progress).
    busy_503: u64,
    /// `503` from the stopping server (its drain), before the new one started.
    shutting_down_503: u64,
    /// `429`: a per-address limit.
    too_many_429: u64,
    /// Connection refused: no server listening (between the stop and the start).
    refused: u64,
    /// The connect, handshake and subscription replies took longer than `--connect-timeout`.
    timeouts: u64,
    /// Anything else (resets, other statuses, refused subscriptions), with a sample.
    other: u64,
    other_sample: Option<String>,
}

#[derive(Debug, Serialize)]
struct StormResult {
    scenario: &'static str,
    policy: Policy,
    stop: Stop,
    connections: usize,
    /// Clients connected again after the stop.
    back: usize,
    /// Seconds from the stop until each client was connected and subscribed again.
    back_p50_s: Option<f64>,
    back_p99_s: Option<f64>,
    back_last_s: Option<f64>,
    /// Seconds from the stop until the new server accepted connections.
    restart_s: f64,
    /// Connection attempts after the stop (each client's successful one included).
    attempts: u64,
    /// Failed attempts after the stop.
    failures: Failures,
    rss_steady_before_mib: Option<f64>,
    rss_peak_storm_mib: Option<f64>,
    rss_after_mib: Option<f64>,
    /// CPU of the new server from its start until everyone was back, % of one core.
    server_cpu_storm_pct: Option<f64>,
    server_cpu_storm_s: Option<f64>,
    server_up: bool,
    generator_cpu_pct: Option<f64>,
}

/// What the clients share with the run.
#[derive(Default)]
struct Shared {
    /// When the server was stopped; clients back after it record their time.
    stopped_at: Option<Instant>,
    /// The new server has been started: a 503 now is the new one's, not the drain's.
    restarted: bool,
    back: Vec<Duration>,
    attempts: u64,
    failures: Failures,
    connected: usize,
}

type State = Rc<RefCell<Shared>>;

/// Runs `peregrine bench storm`.
pub fn run(args: StormArgs) -> anyhow::Result<()> {
    let give_up = seconds("--give-up-after", args.give_up_after, false)?;
    let timeout = args.common.connect_timeout()?;
    anyhow::ensure!(args.common.threads == 1, "--threads: bench storm runs on one thread only");
    if args.connections == 0 || args.channels == 0 || args.concurrency == 0 {
        bail!("--connections, --channels and --concurrency must be at least 1");
    }
    if !args.addr.ip().is_loopback() {
        bail!("bench storm only targets a loopback server (127.0.0.0/8)");
    }
    anyhow::ensure!(args.common.server_pid.is_none(), "--server-pid: bench storm starts the server itself");
    super::check_open_files("--connections", args.connections)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let mut server = Server::start(&args.process.server, &[], args.process.server_log.as_deref())?;
    let result = local.block_on(&runtime, storm(&args, &mut server, timeout, give_up));
    server.stop(false);
    let result = result?;
    let mib = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} MiB"));
    let s = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} s"));
    let f = &result.failures;
    let table = [
        ("policy, stop", format!("{:?}, {:?}", result.policy, result.stop).to_lowercase()),
        (
            "back",
            format!(
                "{} of {} (p50 {}, p99 {}, last {}; server listening again after {:.2} s)",
                thousands(result.back as f64),
                thousands(result.connections as f64),
                s(result.back_p50_s),
                s(result.back_p99_s),
                s(result.back_last_s),
                result.restart_s
            ),
        ),
        (
            "failed attempts",
            format!(
                "{} attempts: 503 busy {}, 503 shutting down {}, 429 {}, refused {}, timeouts {}, other {}{}",
                thousands(result.attempts as f64),
                f.busy_503,
                f.shutting_down_503,
                f.too_many_429,
                f.refused,
                f.timeouts,
                f.other,
                f.other_sample.as_ref().map_or(String::new(), |e| format!(" (e.g. {e})"))
            ),
        ),
        (
            "server rss",
            format!(
                "steady {}, storm peak {}, after {}",
                mib(result.rss_steady_before_mib),
                mib(result.rss_peak_storm_mib),
                mib(result.rss_after_mib)
            ),
        ),
        (
            "server cpu",
            format!(
                "{} of a core during the storm ({} CPU)",
                result.server_cpu_storm_pct.map_or("-".into(), |p| format!("{p:.0}%")),
                s(result.server_cpu_storm_s)
            ),
        ),
        ("server up", if result.server_up { "yes".into() } else { "NO: it exited".into() }),
    ];
    report::emit(args.common.json, &result, &table)?;
    anyhow::ensure!(result.server_up, "the server exited during the storm");
    Ok(())
}

async fn storm(
    args: &StormArgs,
    server: &mut Server,
    timeout: Duration,
    give_up: Duration,
) -> anyhow::Result<StormResult> {
    wait_listening(args.addr, server).await?;
    let state: State = Rc::default();
    let sources = loopback_sources(SOURCES);
    let bar =
        report::progress(args.common.json, args.connections as u64, "connecting [{bar:30}] {pos}/{len}");
    let permits = Rc::new(tokio::sync::Semaphore::new(args.concurrency));
    for i in 0..args.connections {
        let client = Client {
            addr: args.addr,
            source: sources[i % sources.len()],
            channels: [format!("storm:{}", i % args.channels), args.broadcast_channel.clone()],
            policy: args.policy,
            timeout,
            state: Rc::clone(&state),
        };
        let (permits, bar) = (Rc::clone(&permits), bar.clone());
        tokio::task::spawn_local(async move {
            let permit = permits.acquire().await;
            client
                .run(move || {
                    drop(permit);
                    bar.inc(1);
                })
                .await;
        });
    }
    let connected = || state.borrow().connected;
    let started = Instant::now();
    let until = started + give_up;
    while connected() < args.connections {
        // Nobody in after a while, and failures that are not the server being busy: the
        // setup is wrong (a namespace not configured, a token needed...), say so.
        let sample = state.borrow().failures.other_sample.clone();
        if connected() == 0
            && started.elapsed() > Duration::from_secs(5)
            && let Some(sample) = sample
        {
            bail!("no client could connect: {sample}");
        }
        anyhow::ensure!(
            Instant::now() < until,
            "only {} of {} clients connected within --give-up-after",
            connected(),
            args.connections
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bar.finish_and_clear();
    // Steady state: everyone connected and idle for a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_bytes(server.pid());

    let own_before = super::sys::CpuSample::take(None);
    let stopped_at = Instant::now();
    {
        // From here on, attempts and failures are the storm's.
        let mut shared = state.borrow_mut();
        shared.stopped_at = Some(stopped_at);
        shared.attempts = 0;
        shared.failures = Failures::default();
    }
    server.stop_while_running(args.stop == Stop::Kill).await;
    server.restart()?;
    state.borrow_mut().restarted = true;
    let new_pid = server.pid();
    let new_started = Instant::now();
    let cpu_start = CpuOf::take(&[new_pid]);
    wait_listening(args.addr, server).await?;
    let restart_s = stopped_at.elapsed().as_secs_f64();

    let mut rss_peak = None::<u64>;
    let until = Instant::now() + give_up;
    let bar = report::progress(args.common.json, args.connections as u64, "back [{bar:30}] {pos}/{len}");
    loop {
        let back = state.borrow().back.len();
        bar.set_position(back as u64);
        rss_peak = rss_peak.max(rss_bytes(new_pid));
        if back >= args.connections || Instant::now() >= until || !server.up() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bar.finish_and_clear();
    let cpu_storm = cpu_start.percent_until(&CpuOf::take(&[new_pid]))[0];
    let storm_window = new_started.elapsed().as_secs_f64();
    let own_cpu = own_before.percent_until(&super::sys::CpuSample::take(None)).0;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_bytes(new_pid);
    let server_up = server.up();

    let shared = state.borrow();
    let mut back = shared.back.clone();
    back.sort_unstable();
    let at = |q: f64| -> Option<f64> {
        back.get(((back.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
    };
    let mib = |b: Option<u64>| b.map(|b| round1(b as f64 / (1024.0 * 1024.0)));
    Ok(StormResult {
        scenario: "storm",
        policy: args.policy,
        stop: args.stop,
        connections: args.connections,
        back: back.len(),
        back_p50_s: at(0.5),
        back_p99_s: at(0.99),
        back_last_s: back.last().map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
        restart_s: (restart_s * 1000.0).round() / 1000.0,
        attempts: shared.attempts,
        failures: shared.failures.clone(),
        rss_steady_before_mib: mib(rss_before),
        rss_peak_storm_mib: mib(rss_peak),
        rss_after_mib: mib(rss_after),
        server_cpu_storm_pct: cpu_storm,
        server_cpu_storm_s: cpu_storm.map(|pct| (pct / 100.0 * storm_window * 100.0).round() / 100.0),
        server_up,
        generator_cpu_pct: own_cpu,
    })
}

/// One client: connects, stays until the connection ends, reconnects by its policy.
struct Client {
    addr: SocketAddr,
    source: IpAddr,
    channels: [String; 2],
    policy: Policy,
    timeout: Duration,
    state: State,
}

impl Client {
    /// Runs until the runtime stops; `first_connected` runs once, at the first connection.
    async fn run(self, first_connected: impl FnOnce()) {
        let mut first_connected = Some(first_connected);
        let mut counted_back = false;
        loop {
            let mut attempt = 0u32;
            let mut ws = loop {
                self.state.borrow_mut().attempts += 1;
                let opened =
                    tokio::time::timeout(self.timeout, open(self.addr, self.source, &self.channels)).await;
                let retry_after = match opened {
                    Ok(Ok(ws)) => break ws,
                    Ok(Err(error)) => self.count(&error),
                    Err(_) => {
                        self.state.borrow_mut().failures.timeouts += 1;
                        None
                    }
                };
                let delay = match self.policy {
                    // As peregrine-client's session loop: the Retry-After is a floor.
                    Policy::Jitter => Backoff::default().delay(attempt).max(retry_after.unwrap_or_default()),
                    Policy::Naive => Duration::ZERO,
                };
                attempt = attempt.saturating_add(1);
                if delay.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(delay).await;
                }
            };
            {
                let mut shared = self.state.borrow_mut();
                if let Some(stopped_at) = shared.stopped_at
                    && !counted_back
                {
                    counted_back = true;
                    shared.back.push(stopped_at.elapsed());
                } else if shared.stopped_at.is_none() {
                    shared.connected += 1;
                }
            }
            if let Some(done) = first_connected.take() {
                done();
            }
            // Connected: read (and drop) whatever comes until the connection ends.
            while let Some(Ok(_)) = ws.recv().await {}
            drop(ws);
            // The SDK waits a first jittered delay after losing a connection too.
            if self.policy == Policy::Jitter {
                tokio::time::sleep(Backoff::default().delay(0)).await;
            }
        }
    }

    /// Counts a failed attempt by kind; returns the server's `Retry-After`, if any.
    fn count(&self, error: &anyhow::Error) -> Option<Duration> {
        let mut shared = self.state.borrow_mut();
        if let Some((status, retry_after)) = refusal(error) {
            match status {
                503 if shared.stopped_at.is_some() && !shared.restarted => {
                    shared.failures.shutting_down_503 += 1
                }
                503 => shared.failures.busy_503 += 1,
                429 => shared.failures.too_many_429 += 1,
                _ => shared.failures.other += 1,
            }
            return retry_after;
        }
        let io_kind =
            error.downcast_ref::<std::io::Error>().map(std::io::Error::kind).or_else(|| match error
                .downcast_ref::<peregrine::Error>(
            ) {
                Some(peregrine::Error::Io(e)) => Some(e.kind()),
                _ => None,
            });
        let failures = &mut shared.failures;
        if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
            failures.refused += 1;
        } else {
            failures.other += 1;
            if failures.other_sample.is_none() {
                failures.other_sample = Some(format!("{error:#}"));
            }
        }
        None
    }
}
