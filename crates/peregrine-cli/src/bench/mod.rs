//! `peregrine bench`: a load generator for WebSocket servers.
//!
//! Ten scenarios, each a submodule: [`echo`] (throughput and latency of
//! echoed messages), [`idle`] (many open connections and the server memory
//! they cost), [`handshake`] (opening handshakes per second), [`fanout`]
//! (one channel of the realtime server to many subscribers, on one node or
//! several sharing a broker, over WebSocket or the HTTP fallback transports),
//! [`publish`] (publishes per second through a node's HTTP API, and their CPU
//! cost to the node and its broker), [`scale`] (many subscribed connections and
//! broadcasts to all), [`storm`] (a server restarted under many clients),
//! [`abuse`] (each limit against many abusers) and [`soak`] (a long bounded
//! churn of connections, every error and lost publication counted).
//!
//! The generator is built so that it is never the bottleneck when measuring a
//! server: it speaks just enough of the protocol. The opening handshake is one
//! pre-built request; data frames are encoded and masked once and the same
//! bytes are written again and again; echoes are counted by decoding frame
//! headers and skipping payloads. It runs on one thread by default (the
//! comparison pins it to one core) and reports its own CPU use next to the
//! server's, so a saturated generator shows.

mod abuse;
mod echo;
mod fanout;
mod fanout_http;
mod frames;
mod handshake;
mod http;
mod idle;
mod publish;
mod report;
mod scale;
mod soak;
mod spawned;
mod storm;
mod sys;
mod target;

use clap::{Args, Subcommand};

/// Arguments of `peregrine bench`.
#[derive(Debug, Args)]
#[command(
    about = "Measure a WebSocket server: echo throughput and latency, idle connections, handshakes per second",
    long_about = "Measure a WebSocket server: echo throughput and latency, idle connections, \
                  handshakes per second, channel fan-out, publishes per second.\n\n\
                  Progress bars show while a run goes (on a terminal, without --json); a summary \
                  table follows, or one JSON object with every figure with --json. Given \
                  --server-pid, the server's CPU use (echo, handshake, fanout, publish) or memory (idle) \
                  is read from /proc. The exit status is 1 when nothing was measured (no echo, \
                  no handshake, no connection held) or the run could not start.",
    after_help = "Examples:\n  \
                  peregrine bench echo ws://127.0.0.1:9001/ --connections 64 --size 32 --pipeline 16\n  \
                  peregrine bench echo ws://127.0.0.1:9001/ --rate 50000 --duration 10\n  \
                  peregrine bench idle ws://127.0.0.1:9001/ --connections 10000 --server-pid 1234\n  \
                  peregrine bench handshake ws://127.0.0.1:9001/ --concurrency 32 --json\n  \
                  peregrine bench fanout 127.0.0.1:8080 --subscribers 1000 --rate 100\n  \
                  peregrine bench fanout 127.0.0.1:8080 --transport long_poll --server-pid 1234\n  \
                  peregrine bench publish 127.0.0.1:8080 --connections 32 --server-pid 1234\n  \
                  peregrine bench scale 127.0.0.1:8080 --connections 10000 --server-pid 1234\n  \
                  peregrine bench soak 127.0.0.1:8080 --connections 10000 --duration 3600"
)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Echo throughput and latency: N connections send messages of a given
    /// size (pipelined or at a target rate) and time each echo.
    Echo(echo::EchoArgs),
    /// Open N connections, hold them idle, and report the connect rate and
    /// the server's memory per connection.
    Idle(idle::IdleArgs),
    /// Opening handshakes per second at a given concurrency.
    Handshake(handshake::HandshakeArgs),
    /// N subscribers on one channel, publications through HTTP: delivered
    /// messages per second, publish-to-deliver latency, loss and reorder.
    Fanout(fanout::FanoutArgs),
    /// Publishes per second through a node's HTTP API with N in flight, and the CPU
    /// each costs the node and its broker.
    Publish(publish::PublishArgs),
    /// Many subscribed connections (one node or several), broadcasts to all: connect rate,
    /// memory per connection, time to reach everyone, CPU per delivery.
    Scale(scale::ScaleArgs),
    /// Restart the server (it is started by the generator) under N subscribed clients and
    /// time how they all come back, with full-jitter backoff or naive reconnects.
    Storm(storm::StormArgs),
    /// Each limit (per address, handshakes in progress, subscriptions, slow headers, no
    /// `connect`, publish rate, message size) against many abusers: what they get and the
    /// server memory held.
    Abuse(abuse::AbuseArgs),
    /// An hour (or any bounded time) of churn against one node: connections come and go at
    /// random, subscribe, publish and read history; every error and lost publication counted.
    Soak(soak::SoakArgs),
}

/// Options every scenario takes.
#[derive(Debug, Args, Clone)]
pub(crate) struct CommonArgs {
    /// Print one JSON object with every figure instead of the table (and no
    /// progress bars).
    #[arg(long)]
    json: bool,
    /// The server's process id: its CPU use (echo, handshake, fanout) or
    /// resident memory (idle, fanout) is read from /proc/PID.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Limit for each connection's TCP connect and opening handshake; a
    /// connection past it counts as an error.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    connect_timeout: f64,
    /// Worker threads of the generator. 1 (the default) runs everything on a
    /// current-thread runtime, so pinning the generator to one core is exact.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Take any response head that ends in an empty line as a completed
    /// handshake, not only a valid 101: for measuring a plain TCP echo (which
    /// sends the request back) as the ceiling.
    #[arg(long)]
    any_response: bool,
}

impl CommonArgs {
    /// `--connect-timeout`, checked.
    fn connect_timeout(&self) -> anyhow::Result<std::time::Duration> {
        seconds("--connect-timeout", self.connect_timeout, false)
    }
}

/// The warmup and the measured window of a timed scenario, checked once.
#[derive(Debug, Clone, Copy)]
struct Timing {
    warmup: std::time::Duration,
    duration: std::time::Duration,
}

impl Timing {
    fn check(warmup: f64, duration: f64) -> anyhow::Result<Self> {
        let duration = seconds("--duration", duration, false)?;
        Ok(Self { warmup: seconds("--warmup", warmup, true)?, duration })
    }
}

/// Runs `peregrine bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Echo(args) => echo::run(args),
        BenchCommand::Idle(args) => idle::run(args),
        BenchCommand::Handshake(args) => handshake::run(args),
        BenchCommand::Fanout(args) => fanout::run(args),
        BenchCommand::Publish(args) => publish::run(args),
        BenchCommand::Scale(args) => scale::run(args),
        BenchCommand::Storm(args) => storm::run(args),
        BenchCommand::Abuse(args) => abuse::run(args),
        BenchCommand::Soak(args) => soak::run(args),
    }
}

/// The longest length of time an option takes: a week. Longer is a typo, and
/// far longer would overflow the clock arithmetic.
const MAX_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// Checks a length of time given in seconds (finite, at most a week, and
/// positive unless `zero_ok`) and converts it.
fn seconds(name: &str, value: f64, zero_ok: bool) -> anyhow::Result<std::time::Duration> {
    check_positive(name, value, zero_ok)?;
    anyhow::ensure!(
        value <= MAX_SECONDS,
        "{name} must be at most {MAX_SECONDS} seconds (a week), not {}",
        number(value)
    );
    Ok(std::time::Duration::from_secs_f64(value))
}

/// Checks a number given on the command line: finite, and positive unless
/// `zero_ok`.
fn check_positive(name: &str, value: f64, zero_ok: bool) -> anyhow::Result<()> {
    let ok = value.is_finite() && if zero_ok { value >= 0.0 } else { value > 0.0 };
    anyhow::ensure!(
        ok,
        "{name} must be {}, not {}",
        if zero_ok { "0 or more" } else { "positive" },
        number(value)
    );
    Ok(())
}

/// A number as given, in scientific notation when plain digits would run long.
fn number(value: f64) -> String {
    if value != 0.0 && (value.abs() >= 1e9 || value.abs() < 1e-3) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

/// Refuses more connections than this process may open: past the
/// open-files limit every further connect fails, and a mistyped count would
/// otherwise spawn tasks until memory runs out. Raises the soft limit to the
/// hard one first; returns the limit in force.
fn check_open_files(name: &str, connections: usize) -> anyhow::Result<Option<u64>> {
    let limit = sys::raise_nofile_limit();
    if let Some(limit) = limit {
        // Room for the runtime's own descriptors and stdio.
        let needed = connections as u64 + 16;
        anyhow::ensure!(
            needed <= limit,
            "{name} {connections} needs more open files than this process may have (limit {limit}, the \
             hard limit): lower {name}, or raise the hard limit (`ulimit -Hn` as root, LimitNOFILE= \
             for a service)"
        );
    }
    Ok(limit)
}

/// The runtime a scenario runs on: current-thread for one thread, else a
/// multi-thread runtime with that many workers.
fn runtime(threads: u16) -> anyhow::Result<tokio::runtime::Runtime> {
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(threads))
            .enable_all()
            .build()?
    };
    Ok(runtime)
}
