//! `peregrine bench idle`: hold many connections open and measure what they
//! cost the server.
//!
//! Connections are spread over several loopback source addresses
//! (127.0.0.1, 127.0.0.2, ...): each has its own ephemeral port range, so the
//! ~28k ports of one address are no limit. With the server's pid, its
//! resident memory (VmRSS) is read before the first connection and after all
//! are open and have been held, and the difference is divided by the number
//! of connections. The server's RSS is only meaningful from a server started
//! for the run: an allocator keeps memory that earlier connections freed, and
//! new ones then cost little or nothing.
//!
//! A held connection is idle but alive: it answers the server's pings (a
//! server that checks liveness would otherwise drop it after its timeout) and
//! notes how the server ended it, if it did.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Buf;
use peregrine::proto::{Connection, Event, Message, Role};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::report::{self, Errors, thousands};
use super::sys::{round1, rss_bytes};
use super::target::Target;
use super::{CommonArgs, check_open_files, runtime, seconds};

/// Connections per source address when `--source-addrs` is not given: well
/// inside one address's ephemeral port range, leaving room for ports still in
/// TIME_WAIT from earlier runs.
const PER_SOURCE: usize = 8_000;

/// Arguments of `peregrine bench idle`.
#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// The server, e.g. ws://127.0.0.1:9001/
    url: String,
    /// Connections to open and hold.
    #[arg(short, long, default_value_t = 10_000, value_name = "N")]
    connections: usize,
    /// Handshakes under way at once while opening.
    #[arg(long, default_value_t = 64, value_name = "N")]
    concurrency: usize,
    /// How long to hold the connections open before reading the server's
    /// memory (and closing them all). Pings from the server are answered
    /// meanwhile.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    hold: f64,
    /// Loopback source addresses to connect from (127.0.0.1 up to
    /// 127.0.0.K); by default one per 8,000 connections. Only for a server on
    /// 127.0.0.0/8.
    #[arg(long, value_name = "K")]
    source_addrs: Option<usize>,
    #[command(flatten)]
    common: CommonArgs,
}

/// The figures `--json` prints.
#[derive(Debug, Serialize)]
struct IdleResult {
    scenario: &'static str,
    url: String,
    connections: usize,
    /// Connections whose handshake completed.
    opened: usize,
    /// Connections still open at the end of the hold.
    connected: usize,
    /// Connections that failed to open, or that the server ended during
    /// the hold.
    errors: u64,
    error_samples: Vec<String>,
    source_addrs: usize,
    connect_s: f64,
    connects_per_s: f64,
    hold_s: f64,
    server_rss_before_bytes: Option<u64>,
    server_rss_after_bytes: Option<u64>,
    bytes_per_connection: Option<f64>,
    /// The open-files limit after raising it to the hard limit.
    nofile_limit: Option<u64>,
    warnings: Vec<String>,
}

/// Runs `peregrine bench idle`.
pub fn run(args: IdleArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.concurrency == 0 {
        bail!("--connections and --concurrency must be at least 1");
    }
    let hold = seconds("--hold", args.hold, true)?;
    let connect_timeout = args.common.connect_timeout()?;
    let nofile = check_open_files("--connections", args.connections)?;
    runtime(args.common.threads)?.block_on(run_async(args, hold, connect_timeout, nofile))
}

async fn run_async(
    args: IdleArgs,
    hold: Duration,
    connect_timeout: Duration,
    nofile: Option<u64>,
) -> anyhow::Result<()> {
    let target = Arc::new(Target::resolve(&args.url, connect_timeout).await?);
    let json = args.common.json;
    let mut warnings = Vec::new();
    let (sources, warning) = target.sources(args.source_addrs, args.connections.div_ceil(PER_SOURCE));
    warnings.extend(warning);
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    let pid = args.common.server_pid;
    let rss_before = pid.and_then(rss_bytes);
    if pid.is_some() && rss_before.is_none() {
        bail!("cannot read /proc/{}/status: is the server running?", pid.unwrap_or_default());
    }

    let bar = report::progress(json, args.connections as u64, "connecting [{bar:30}] {pos}/{len} {per_sec}");
    let next = Arc::new(AtomicUsize::new(0));
    let sources = Arc::new(sources);
    // Each held connection runs until this turns true (the end of the hold).
    let (release, released) = watch::channel(false);
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency.min(args.connections) {
        let (target, next, sources, bar) = (target.clone(), next.clone(), sources.clone(), bar.clone());
        let total = args.connections;
        let check = !args.common.any_response;
        let released = released.clone();
        workers.spawn(async move {
            // Each connection is held (and answers pings) from the moment it
            // opens, not once all have opened.
            let (mut opened, mut errors) = (Vec::new(), Errors::default());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
                match target.open(source, check).await {
                    Ok((stream, leftover)) => {
                        opened.push(tokio::spawn(hold_open(stream, leftover, released.clone())));
                    }
                    Err(e) => errors.add(&e),
                }
                bar.inc(1);
            }
            (opened, errors)
        });
    }
    let mut errors = Errors::default();
    let mut holders = Vec::with_capacity(args.connections);
    while let Some(joined) = workers.join_next().await {
        let (held, failed) = joined?;
        errors.merge(failed);
        holders.extend(held);
    }
    let opened = holders.len();
    let connect_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    // Hold them, then read the server's memory while they are all open.
    tokio::time::sleep(hold).await;
    let rss_after = pid.and_then(rss_bytes);
    let _ = release.send(true);
    // Connections the server ended meanwhile do not count as open.
    let mut connected = 0;
    for holder in holders {
        match holder.await? {
            None => connected += 1,
            Some(ended) => errors.add(&ended),
        }
    }
    let bytes_per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) if connected > 0 => {
            Some(round1((after as f64 - before as f64) / connected as f64))
        }
        _ => None,
    };

    let result = IdleResult {
        scenario: "idle",
        url: target.url.clone(),
        connections: args.connections,
        opened,
        connected,
        errors: errors.count,
        error_samples: errors.samples,
        source_addrs: sources.len().max(1),
        connect_s: (connect_s * 1000.0).round() / 1000.0,
        connects_per_s: round1(opened as f64 / connect_s),
        hold_s: args.hold,
        server_rss_before_bytes: rss_before,
        server_rss_after_bytes: rss_after,
        bytes_per_connection,
        nofile_limit: nofile,
        warnings,
    };
    let mib =
        |b: Option<u64>| b.map_or("n/a".to_owned(), |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64));
    let table = vec![
        ("server", result.url.clone()),
        (
            "connections",
            format!(
                "{} of {} open after the hold ({} opened), from {} source address(es)",
                thousands(connected as f64),
                thousands(args.connections as f64),
                thousands(opened as f64),
                result.source_addrs
            ),
        ),
        ("connect rate", format!("{} connections/s ({:.2} s)", thousands(result.connects_per_s), connect_s)),
        ("server RSS", format!("{} before, {} after {}s held", mib(rss_before), mib(rss_after), args.hold)),
        (
            "per connection",
            bytes_per_connection
                .map_or("n/a (give --server-pid)".to_owned(), |b| format!("{} bytes", thousands(b))),
        ),
        ("errors", result.errors.to_string()),
    ];
    let nothing = (connected == 0).then_some("no connection was open at the end of the hold");
    report::finish(json, &result, table, &result.error_samples, &result.warnings, nothing)
}

/// Holds one connection open until `released` turns true, answering the
/// server's pings. Returns `None` if it was still open then, or how the
/// server ended it.
async fn hold_open(
    mut stream: TcpStream,
    leftover: Vec<u8>,
    mut released: watch::Receiver<bool>,
) -> Option<anyhow::Error> {
    let mut connection = Connection::new(Role::Client);
    connection.receive(&leftover);
    let mut buf = [0u8; 512];
    loop {
        while let Some(event) = connection.next_event() {
            match event {
                Ok(Event::Message(Message::Close(frame))) => {
                    let code = frame.map_or("no code".to_owned(), |f| format!("{} {:?}", f.code, f.reason));
                    return Some(anyhow::anyhow!(
                        "the server closed an idle connection during the hold ({code})"
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    return Some(anyhow::anyhow!("protocol error from the server during the hold: {e}"));
                }
            }
        }
        // Pongs (and a close reply) that the connection queued.
        let output = connection.output();
        while output.has_remaining() {
            if let Err(e) = stream.write_all_buf(output).await {
                return Some(anyhow::Error::new(e).context("answering a ping during the hold"));
            }
        }
        tokio::select! {
            _ = released.wait_for(|released| *released) => return None,
            read = stream.read(&mut buf) => match read {
                Ok(0) => return Some(anyhow::anyhow!("the server dropped an idle connection during the hold")),
                Ok(n) => connection.receive(&buf[..n]),
                Err(e) => return Some(anyhow::Error::new(e).context("an idle connection during the hold")),
            },
        }
    }
}
