//! `peregrine bench idle`: hold many connections open and measure what they
//! cost the server.
//!
//! Connections are spread over several loopback source addresses
//! (127.0.0.1, 127.0.0.2, ...): each has its own ephemeral port range, so the
//! ~28k ports of one address are no limit. With the server's pid, its
//! resident memory (VmRSS) is read before the first connection and after all
//! are open and have been held, and the difference is divided by the number
//! of connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::report::{self, thousands};
use super::sys::{raise_nofile_limit, round1, rss_bytes};
use super::target::Target;
use super::{CommonArgs, check_positive, runtime};

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
    /// memory (and closing them all).
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
    /// Connections open (handshake complete) at the end.
    connected: usize,
    errors: usize,
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
    check_positive("--hold", args.hold, true)?;
    runtime(args.common.threads)?.block_on(run_async(args))
}

async fn run_async(args: IdleArgs) -> anyhow::Result<()> {
    let target = Arc::new(Target::resolve(&args.url).await?);
    let json = args.common.json;
    let mut warnings = Vec::new();
    let nofile = raise_nofile_limit();
    if let Some(limit) = nofile
        && args.connections as u64 + 32 > limit
    {
        warnings.push(format!(
            "{} connections exceed the open-files limit of {limit} (hard limit): expect failures past it",
            args.connections
        ));
    }
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
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::with_capacity(args.connections)));
    let sources = Arc::new(sources);
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency.min(args.connections) {
        let (target, next, held, sources, bar) =
            (target.clone(), next.clone(), held.clone(), sources.clone(), bar.clone());
        let total = args.connections;
        let check = !args.common.any_response;
        workers.spawn(async move {
            let mut errors = Vec::new();
            let mut failed = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
                match target.open(source, check).await {
                    Ok((stream, _)) => held.lock().await.push(stream),
                    Err(e) => {
                        failed += 1;
                        if errors.len() < 3 {
                            errors.push(format!("{e:#}"));
                        }
                    }
                }
                bar.inc(1);
            }
            (failed, errors)
        });
    }
    let mut errors = 0;
    let mut error_samples = Vec::new();
    while let Some(joined) = workers.join_next().await {
        let (failed, samples) = joined?;
        errors += failed;
        error_samples.extend(samples.into_iter().take(5usize.saturating_sub(error_samples.len())));
    }
    let connect_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let connected = held.lock().await.len();

    // Hold them, then read the server's memory while they are all open.
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    // Connections the server dropped meanwhile do not count as open.
    let connected = connected.min(count_open(&held).await);
    let rss_after = pid.and_then(rss_bytes);
    let bytes_per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) if connected > 0 => {
            Some(round1((after as f64 - before as f64) / connected as f64))
        }
        _ => None,
    };
    held.lock().await.clear();

    let result = IdleResult {
        scenario: "idle",
        url: target.url.clone(),
        connections: args.connections,
        connected,
        errors,
        error_samples,
        source_addrs: sources.len().max(1),
        connect_s: (connect_s * 1000.0).round() / 1000.0,
        connects_per_s: round1(connected as f64 / connect_s),
        hold_s: args.hold,
        server_rss_before_bytes: rss_before,
        server_rss_after_bytes: rss_after,
        bytes_per_connection,
        nofile_limit: nofile,
        warnings,
    };
    let mib =
        |b: Option<u64>| b.map_or("n/a".to_owned(), |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64));
    let mut table = vec![
        ("server", result.url.clone()),
        (
            "connections",
            format!(
                "{} of {} open, from {} source address(es)",
                thousands(connected as f64),
                thousands(args.connections as f64),
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
        ("errors", errors.to_string()),
    ];
    for sample in &result.error_samples {
        table.push(("", sample.clone()));
    }
    for warning in &result.warnings {
        table.push(("warning", warning.clone()));
    }
    report::emit(json, &result, &table)
}

/// Connections still open: a closed one reads EOF (or an error) at once.
async fn count_open(held: &Mutex<Vec<TcpStream>>) -> usize {
    let held = held.lock().await;
    held.iter()
        .filter(|stream| {
            let mut byte = [0u8; 1];
            matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count()
}
