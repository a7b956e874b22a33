//! `peregrine bench soak`: churn against one `peregrine serve` for a long, bounded time, to
//! show that the server's memory, open files and tasks stay flat and that every session it
//! holds goes away with its client.
//!
//! `--connections` slots each run one visit after another: connect, subscribe to history
//! channels (with recovery from where the slot's previous visit stopped) and to one live
//! channel without history, publish and read history now and then, stay a random time
//! (exponential, mean `--lifetime`), and leave: cleanly with a close frame, abruptly with a
//! TCP reset, or by going silent, so the server's pong timeout must reap the connection.
//! After `--duration` every client leaves and the generator waits until the silent ones are
//! reaped.
//!
//! Nothing is hidden: every refused or unanswered command, every publication missing or out
//! of order within a subscription, every connection the server closed on its own and every
//! silent one it failed to reap is counted in `errors`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, bail};
use peregrine::{CloseCode, Message};
use peregrine_wire::{Encoding, StreamPosition};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::report::{self, thousands};
use super::sys::{CpuSample, round1};
use super::target::{connect_from, loopback_sources};
use super::{CommonArgs, check_positive, seconds};
use visit::{Ended, Visit};

mod visit;

/// Connections per loopback source address: churn leaves closed ports in TIME_WAIT, so stay
/// well inside one address's ephemeral range.
const PER_SOURCE: usize = 4_000;

/// How long a command may wait for its reply before it counts as unanswered.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `peregrine bench soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// The node's address (`127.0.0.1:8080`).
    addr: SocketAddr,
    /// Client slots, each one connection at a time: about this many connections are open.
    #[arg(short, long, default_value_t = 10_000)]
    connections: usize,
    /// Seconds of churn; then every client leaves.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Seconds over which the slots make their first connection.
    #[arg(long, default_value_t = 30.0)]
    ramp: f64,
    /// Mean time a connection stays, seconds (exponentially distributed).
    #[arg(long, default_value_t = 60.0)]
    lifetime: f64,
    /// Mean pause between a slot's visits, seconds (exponentially distributed).
    #[arg(long, default_value_t = 0.5)]
    pause: f64,
    /// Channels with history (`<history-namespace>:<n>`); each client subscribes to two.
    #[arg(long, default_value_t = 1000)]
    channels: usize,
    /// Channels without history (`<live-namespace>:<n>`); each client subscribes to one.
    #[arg(long, default_value_t = 1000)]
    live_channels: usize,
    /// Namespace of the history channels (the server keeps history there and lets clients publish).
    #[arg(long, default_value = "soak")]
    history_namespace: String,
    /// Namespace of the channels without history (clients may publish).
    #[arg(long, default_value = "live")]
    live_namespace: String,
    /// Mean seconds between one client's publishes (exponential), each to one of its channels.
    #[arg(long, default_value_t = 20.0)]
    publish_interval: f64,
    /// Mean seconds between one client's history reads (exponential).
    #[arg(long, default_value_t = 30.0)]
    history_interval: f64,
    /// Share of visits that end with a TCP reset instead of a close frame.
    #[arg(long, default_value_t = 0.2)]
    abrupt: f64,
    /// Share of visits that end by going silent (no reads, no pongs) until the server reaps them.
    #[arg(long, default_value_t = 0.1)]
    silent: f64,
    /// How long a silent client waits for the server to close it (at least the server's
    /// `ping_interval` + `pong_timeout`); past it, unreaped, it counts as an error.
    #[arg(long, default_value_t = 45.0)]
    reap_within: f64,
    /// Seed of the random choices, so a run can be repeated.
    #[arg(long, default_value_t = 24)]
    seed: u64,
    /// Print a progress line to stderr every this many seconds (0: never).
    #[arg(long, default_value_t = 0.0)]
    progress: f64,
    #[command(flatten)]
    common: CommonArgs,
}

/// What the soak counted; `errors` is the sum of everything that should never happen.
#[derive(Debug, Default, Serialize)]
struct SoakResult {
    scenario: &'static str,
    slots: usize,
    duration_s: f64,
    visits: u64,
    open_peak: u64,
    connect_errors: u64,
    /// Why connections failed to open (reason: count): e.g. `HTTP 503`, the server's
    /// admission limit on handshakes in progress.
    connect_failures: HashMap<String, u64>,
    left_clean: u64,
    left_abrupt: u64,
    left_silent: u64,
    silent_reaped: u64,
    silent_not_reaped: u64,
    /// Connections the server closed while their client was active (code: count).
    server_closed: HashMap<String, u64>,
    subscriptions: u64,
    subscribe_errors: u64,
    recovered: u64,
    recovery_gaps: u64,
    recovery_resets: u64,
    publishes_acked: u64,
    publish_errors: u64,
    deliveries: u64,
    /// Publications missing within a subscription (offsets or sequence numbers skipped).
    deliveries_missing: u64,
    /// Publications repeated or out of order within a subscription.
    deliveries_out_of_order: u64,
    history_reads: u64,
    history_errors: u64,
    /// Commands without a reply within 10 s.
    unanswered: u64,
    /// Server messages that did not decode.
    undecodable: u64,
    errors: u64,
    generator_cpu_pct: Option<f64>,
}

/// The counters every visit adds to (one thread, so `Cell`s).
#[derive(Default)]
struct Counters {
    visits: Cell<u64>,
    open: Cell<u64>,
    open_peak: Cell<u64>,
    connect_errors: Cell<u64>,
    connect_failures: RefCell<HashMap<String, u64>>,
    /// Live publishes (visit, sequence number) that failed or went unanswered: a subscriber
    /// skipping one has not lost it.
    unconfirmed: RefCell<HashSet<(u64, u64)>>,
    left_clean: Cell<u64>,
    left_abrupt: Cell<u64>,
    left_silent: Cell<u64>,
    silent_reaped: Cell<u64>,
    silent_not_reaped: Cell<u64>,
    server_closed: RefCell<HashMap<String, u64>>,
    subscriptions: Cell<u64>,
    subscribe_errors: Cell<u64>,
    recovered: Cell<u64>,
    recovery_gaps: Cell<u64>,
    recovery_resets: Cell<u64>,
    publishes_acked: Cell<u64>,
    publish_errors: Cell<u64>,
    deliveries: Cell<u64>,
    deliveries_missing: Cell<u64>,
    deliveries_out_of_order: Cell<u64>,
    history_reads: Cell<u64>,
    history_errors: Cell<u64>,
    unanswered: Cell<u64>,
    undecodable: Cell<u64>,
    /// A unique number per visit, the publisher id in live publications.
    next_visit_id: Cell<u64>,
}

impl Counters {
    /// Counts a connection that could not be opened, and why.
    fn connect_failed(&self, why: String) {
        add(&self.connect_errors, 1);
        *self.connect_failures.borrow_mut().entry(why).or_default() += 1;
    }
}

fn add(counter: &Cell<u64>, n: u64) {
    counter.set(counter.get() + n);
}

/// SplitMix64: a small, fast generator, plenty for random lifetimes and choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed with this mean.
    fn exponential(&mut self, mean: f64) -> Duration {
        Duration::from_secs_f64(-mean * (1.0 - self.unit()).ln())
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// How a visit ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leave {
    Clean,
    Abrupt,
    Silent,
}

/// Runs `peregrine bench soak`.
pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    seconds("--duration", args.duration, false)?;
    seconds("--ramp", args.ramp, true)?;
    seconds("--lifetime", args.lifetime, false)?;
    seconds("--pause", args.pause, true)?;
    seconds("--publish-interval", args.publish_interval, false)?;
    seconds("--history-interval", args.history_interval, false)?;
    seconds("--reap-within", args.reap_within, false)?;
    seconds("--progress", args.progress, true)?;
    args.common.connect_timeout()?;
    for (name, share) in [("--abrupt", args.abrupt), ("--silent", args.silent)] {
        check_positive(name, share, true)?;
    }
    anyhow::ensure!(args.abrupt + args.silent <= 1.0, "--abrupt and --silent add up to more than 1");
    anyhow::ensure!(args.common.threads == 1, "--threads: bench soak runs on one thread only");
    if args.connections == 0 || args.channels == 0 || args.live_channels == 0 {
        bail!("--connections, --channels and --live-channels must be at least 1");
    }
    anyhow::ensure!(args.addr.ip().is_loopback(), "bench soak only targets loopback servers (127.0.0.0/8)");
    super::check_open_files("--connections", args.connections)?;
    // One thread: the slots share their counters through `Rc` and `Cell`, without locks.
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&super::runtime(1)?, soak(args.clone()))?;
    let table = [
        ("visits", format!("{} (peak {} open)", thousands(result.visits as f64), result.open_peak)),
        (
            "left",
            format!(
                "{} clean, {} abrupt, {} silent ({} reaped, {} not)",
                result.left_clean,
                result.left_abrupt,
                result.left_silent,
                result.silent_reaped,
                result.silent_not_reaped
            ),
        ),
        (
            "subscriptions",
            format!(
                "{} ({} recovered, {} gaps, {} resets)",
                result.subscriptions, result.recovered, result.recovery_gaps, result.recovery_resets
            ),
        ),
        ("publishes acked", thousands(result.publishes_acked as f64)),
        (
            "deliveries",
            format!(
                "{} ({} missing, {} out of order)",
                thousands(result.deliveries as f64),
                result.deliveries_missing,
                result.deliveries_out_of_order
            ),
        ),
        ("history reads", result.history_reads.to_string()),
        ("errors", result.errors.to_string()),
    ];
    report::emit(args.common.json, &result, &table)
}

/// What the run shares with every slot.
struct Shared {
    args: SoakArgs,
    counters: Counters,
    sources: Vec<IpAddr>,
    /// The end of the churn: visits leave at it.
    end: Instant,
}

async fn soak(args: SoakArgs) -> anyhow::Result<SoakResult> {
    let started = Instant::now();
    let own_cpu = CpuSample::take(None);
    let shared = Rc::new(Shared {
        counters: Counters::default(),
        sources: loopback_sources(args.connections.div_ceil(PER_SOURCE)),
        end: started + Duration::from_secs_f64(args.duration),
        args,
    });
    let args = &shared.args;
    let mut slots = Vec::with_capacity(args.connections);
    for slot in 0..args.connections {
        let shared = Rc::clone(&shared);
        slots.push(tokio::task::spawn_local(run_slot(shared, slot)));
    }
    let progress = (args.progress > 0.0).then(|| {
        let shared = Rc::clone(&shared);
        tokio::task::spawn_local(async move {
            let every = Duration::from_secs_f64(shared.args.progress);
            loop {
                tokio::time::sleep(every).await;
                let c = &shared.counters;
                let errors: Vec<String> = error_counts(c)
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(what, n)| format!("{what} {n}"))
                    .collect();
                eprintln!(
                    "soak {:>6.0}s: {} open, {} visits, {} acked, {} deliveries, {} errors {:?}",
                    started.elapsed().as_secs_f64(),
                    c.open.get(),
                    c.visits.get(),
                    c.publishes_acked.get(),
                    c.deliveries.get(),
                    error_count(c),
                    errors,
                );
            }
        })
    });
    for slot in slots {
        slot.await?;
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    let c = &shared.counters;
    Ok(SoakResult {
        scenario: "soak",
        slots: args.connections,
        duration_s: round1(started.elapsed().as_secs_f64()),
        visits: c.visits.get(),
        open_peak: c.open_peak.get(),
        connect_errors: c.connect_errors.get(),
        connect_failures: c.connect_failures.borrow().clone(),
        left_clean: c.left_clean.get(),
        left_abrupt: c.left_abrupt.get(),
        left_silent: c.left_silent.get(),
        silent_reaped: c.silent_reaped.get(),
        silent_not_reaped: c.silent_not_reaped.get(),
        server_closed: c.server_closed.borrow().clone(),
        subscriptions: c.subscriptions.get(),
        subscribe_errors: c.subscribe_errors.get(),
        recovered: c.recovered.get(),
        recovery_gaps: c.recovery_gaps.get(),
        recovery_resets: c.recovery_resets.get(),
        publishes_acked: c.publishes_acked.get(),
        publish_errors: c.publish_errors.get(),
        deliveries: c.deliveries.get(),
        deliveries_missing: c.deliveries_missing.get(),
        deliveries_out_of_order: c.deliveries_out_of_order.get(),
        history_reads: c.history_reads.get(),
        history_errors: c.history_errors.get(),
        unanswered: c.unanswered.get(),
        undecodable: c.undecodable.get(),
        errors: error_count(c),
        generator_cpu_pct: own_cpu.percent_until(&CpuSample::take(None)).0,
    })
}

/// Every count of something that should never happen, by name.
fn error_counts(c: &Counters) -> [(&'static str, u64); 10] {
    [
        ("connect", c.connect_errors.get()),
        ("silent not reaped", c.silent_not_reaped.get()),
        ("closed by the server", c.server_closed.borrow().values().sum()),
        ("subscribe", c.subscribe_errors.get()),
        ("publish", c.publish_errors.get()),
        ("missing", c.deliveries_missing.get()),
        ("out of order", c.deliveries_out_of_order.get()),
        ("history", c.history_errors.get()),
        ("unanswered", c.unanswered.get()),
        ("undecodable", c.undecodable.get()),
    ]
}

fn error_count(c: &Counters) -> u64 {
    error_counts(c).iter().map(|(_, n)| n).sum()
}

/// Why connections failed to open, in a few words: `HTTP 503`, `timeout`, `io: ...`.
fn connect_failure(error: &anyhow::Error) -> String {
    use peregrine::proto::handshake::HandshakeError;
    match error.downcast_ref::<peregrine::Error>() {
        Some(peregrine::Error::Handshake(HandshakeError::UnexpectedStatus { status, .. })) => {
            format!("HTTP {status}")
        }
        Some(peregrine::Error::Io(e)) => format!("io: {}", e.kind()),
        Some(other) => other.to_string(),
        None => match error.downcast_ref::<std::io::Error>() {
            Some(e) => format!("io: {}", e.kind()),
            None => error.to_string(),
        },
    }
}

type Socket = peregrine::WebSocket<TcpStream>;

/// The names of a slot's channels: two with history (one if there is only one), one live.
fn slot_channels(args: &SoakArgs, slot: usize) -> (Vec<String>, String) {
    let (c, ns) = (args.channels, &args.history_namespace);
    let first = slot % c;
    let mut history = vec![format!("{ns}:{first}")];
    if c > 1 {
        let second = (first + 1 + (slot / c) % (c - 1)) % c;
        history.push(format!("{ns}:{second}"));
    }
    let live = format!("{}:{}", args.live_namespace, slot.wrapping_mul(31) % args.live_channels);
    (history, live)
}

/// One slot: visits one after another until the end of the churn.
async fn run_slot(shared: Rc<Shared>, slot: usize) {
    let args = &shared.args;
    let mut rng = Rng(args.seed ^ (slot as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let (history, live) = slot_channels(args, slot);
    let mut positions: Vec<Option<StreamPosition>> = vec![None; history.len()];
    tokio::time::sleep(Duration::from_secs_f64(rng.unit() * args.ramp)).await;
    while Instant::now() < shared.end {
        visit(&shared, &mut rng, &history, &live, &mut positions).await;
        tokio::time::sleep(rng.exponential(args.pause)).await;
    }
}

/// One connection, from connect to leaving.
async fn visit(
    shared: &Shared,
    rng: &mut Rng,
    history: &[String],
    live: &str,
    positions: &mut [Option<StreamPosition>],
) {
    let (args, c) = (&shared.args, &shared.counters);
    add(&c.visits, 1);
    let id = c.next_visit_id.get();
    c.next_visit_id.set(id + 1);
    let leave_at = (Instant::now() + rng.exponential(args.lifetime)).min(shared.end);
    let leave = match rng.unit() {
        u if u < args.silent => Leave::Silent,
        u if u < args.silent + args.abrupt => Leave::Abrupt,
        _ => Leave::Clean,
    };
    let source = shared.sources[rng.below(shared.sources.len())];
    // Checked in `run`.
    let connect_timeout = Duration::from_secs_f64(args.common.connect_timeout);
    let mut ws = match tokio::time::timeout(connect_timeout, open(args.addr, source)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => return c.connect_failed(connect_failure(&error)),
        Err(_) => return c.connect_failed("timeout".into()),
    };
    add(&c.open, 1);
    c.open_peak.set(c.open_peak.get().max(c.open.get()));
    let mut session = Visit::new(shared, id, history, positions, live);
    let ended = session.run(&mut ws, leave_at, rng).await;
    session.save_positions(positions);
    match ended {
        Ended::ByServer(code) => *c.server_closed.borrow_mut().entry(code).or_default() += 1,
        Ended::Leaving => leave_by(shared, ws, leave).await,
    }
    c.open.set(c.open.get() - 1);
}

/// Ends a connection the chosen way.
async fn leave_by(shared: &Shared, mut ws: Socket, leave: Leave) {
    let c = &shared.counters;
    match leave {
        Leave::Clean => {
            add(&c.left_clean, 1);
            if ws.close(CloseCode::NORMAL, "bye").await.is_ok() {
                // Read until the server's close and the end of the stream.
                let _ =
                    tokio::time::timeout(REPLY_TIMEOUT, async { while ws.recv().await.is_some() {} }).await;
            }
        }
        Leave::Abrupt => {
            add(&c.left_abrupt, 1);
            // A zero linger turns the close into a TCP reset: no close frame, no FIN.
            let _ = socket2::SockRef::from(ws.get_ref()).set_linger(Some(Duration::ZERO));
        }
        Leave::Silent => {
            add(&c.left_silent, 1);
            // Neither read (so no pong answers the server's ping) nor write; then see whether
            // the server has closed the connection meanwhile.
            tokio::time::sleep(Duration::from_secs_f64(shared.args.reap_within)).await;
            let reaped = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match ws.recv().await {
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                        Some(Ok(_)) => {}
                    }
                }
            })
            .await
            .is_ok();
            add(if reaped { &c.silent_reaped } else { &c.silent_not_reaped }, 1);
        }
    }
}

/// Opens a WebSocket with the JSON protocol; `connect` and the subscriptions follow.
async fn open(addr: SocketAddr, source: IpAddr) -> anyhow::Result<Socket> {
    let tcp = connect_from(addr, Some(source)).await?;
    let url = format!("ws://{addr}/connection/websocket");
    let (ws, _) = peregrine::ClientBuilder::new(url)
        .protocol(Encoding::Json.subprotocol())
        .connect_on(tcp)
        .await
        .context("handshake")?;
    Ok(ws)
}
