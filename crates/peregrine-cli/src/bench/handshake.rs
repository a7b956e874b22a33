//! `peregrine bench handshake`: opening handshakes per second.
//!
//! Each of `--concurrency` workers loops: connect TCP, write the pre-built
//! upgrade request, read up to the end of the 101 response head, then drop
//! the connection (a FIN, no close frame: closing the WebSocket properly
//! would measure the close handshake too). Latency runs from the start of
//! `connect` to the end of the response head.
//!
//! The client closes first, so each handshake leaves a TIME_WAIT socket on
//! our side for a minute: a few seconds at 10k handshakes/s fill one source
//! address's ephemeral ports, and from then on every `connect` searches them
//! (measured: `__inet_hash_connect` became the generator's top symbol and
//! halved its rate). Against a loopback server the workers therefore take
//! turns over [`SOURCE_ADDRS`] source addresses, each with its own ports.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;

use super::report::{self, Errors, Latency, thousands};
use super::sys::{raise_nofile_limit, round1};
use super::target::Target;
use super::{CommonArgs, Timing, runtime};

/// Source addresses used against a loopback server when `--source-addrs`
/// is not given: 64 x 28k ports hold over a minute of TIME_WAIT at 25k
/// handshakes/s.
const SOURCE_ADDRS: usize = 64;

/// Arguments of `peregrine bench handshake`.
#[derive(Debug, clap::Args)]
pub struct HandshakeArgs {
    /// The server, e.g. ws://127.0.0.1:9001/
    url: String,
    /// Handshakes under way at once.
    #[arg(short, long, default_value_t = 32, value_name = "C")]
    concurrency: usize,
    /// Length of the measured window.
    #[arg(short, long, default_value_t = 5.0, value_name = "SECS")]
    duration: f64,
    /// Handshakes before the measured window, not counted.
    #[arg(short, long, default_value_t = 1.0, value_name = "SECS")]
    warmup: f64,
    /// Loopback source addresses to connect from (127.0.0.1 up to
    /// 127.0.0.K; 64 by default). Only for a server on 127.0.0.0/8.
    #[arg(long, value_name = "K")]
    source_addrs: Option<usize>,
    #[command(flatten)]
    common: CommonArgs,
}

/// The figures `--json` prints.
#[derive(Debug, Serialize)]
struct HandshakeResult {
    scenario: &'static str,
    url: String,
    concurrency: usize,
    warmup_s: f64,
    duration_s: f64,
    threads: u16,
    /// Source addresses connected from (1: the default one).
    source_addrs: usize,
    /// Handshakes completed in the measured window.
    handshakes: u64,
    handshakes_per_s: f64,
    latency: Latency,
    /// Failed handshakes, the warmup included.
    errors: u64,
    error_samples: Vec<String>,
    generator_cpu_pct: Option<f64>,
    server_cpu_pct: Option<f64>,
}

struct Worker {
    handshakes: u64,
    hist: Histogram<u64>,
    errors: Errors,
}

/// Runs `peregrine bench handshake`.
pub fn run(args: HandshakeArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let timing = Timing::check(args.warmup, args.duration)?;
    let connect_timeout = args.common.connect_timeout()?;
    runtime(args.common.threads)?.block_on(run_async(args, timing, connect_timeout))
}

async fn run_async(args: HandshakeArgs, timing: Timing, connect_timeout: Duration) -> anyhow::Result<()> {
    let target = Arc::new(Target::resolve(&args.url, connect_timeout).await?);
    raise_nofile_limit();
    let json = args.common.json;
    let start = Instant::now();
    let measure_from = start + timing.warmup;
    let end = measure_from + timing.duration;
    let done = Arc::new(AtomicU64::new(0));
    let (sources, warning) = target.sources(args.source_addrs, SOURCE_ADDRS);
    if let Some(warning) = warning {
        eprintln!("warning: {warning}");
    }
    let sources = Arc::new(sources);

    let mut workers = JoinSet::new();
    for worker_index in 0..args.concurrency {
        let (target, done, sources) = (target.clone(), done.clone(), sources.clone());
        let check = !args.common.any_response;
        workers.spawn(async move {
            let mut worker = Worker { handshakes: 0, hist: report::histogram(), errors: Errors::default() };
            let deadline = (end + Duration::from_secs(2)).into();
            let mut turn = worker_index;
            while Instant::now() < end {
                let began = Instant::now();
                let source = (!sources.is_empty()).then(|| sources[turn % sources.len()]);
                turn += 1;
                match tokio::time::timeout_at(deadline, target.open(source, check)).await {
                    Ok(Ok(_)) => {
                        let now = Instant::now();
                        done.fetch_add(1, Ordering::Relaxed);
                        if now >= measure_from && now < end {
                            worker.handshakes += 1;
                            report::record(&mut worker.hist, now - began);
                        }
                    }
                    // Every failure counts, in the warmup too: a server
                    // that refuses some connections should show it.
                    Ok(Err(e)) => {
                        worker.errors.add(&e);
                        // Don't spin on a server that refuses connections.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    // Still unanswered when the run is over (a handshake
                    // timeout longer than the run ends here too).
                    Err(_) => {
                        worker.errors.add(&anyhow::anyhow!(
                            "no complete handshake response from {} by the end of the run",
                            target.addr
                        ));
                        break;
                    }
                }
            }
            worker
        });
    }

    let window = report::Window { start, measure_from, end };
    let (generator_cpu_pct, server_cpu_pct) =
        report::watch(&window, json, &done, "handshakes", args.common.server_pid).await;

    let mut hist = report::histogram();
    let (mut handshakes, mut errors) = (0, Errors::default());
    while let Some(joined) = workers.join_next().await {
        let worker = joined?;
        handshakes += worker.handshakes;
        errors.merge(worker.errors);
        hist.add(&worker.hist)?;
    }
    let per_s = handshakes as f64 / end.duration_since(measure_from).as_secs_f64();
    let result = HandshakeResult {
        scenario: "handshake",
        url: target.url.clone(),
        concurrency: args.concurrency,
        warmup_s: args.warmup,
        duration_s: args.duration,
        threads: args.common.threads,
        source_addrs: sources.len().max(1),
        handshakes,
        handshakes_per_s: round1(per_s),
        latency: Latency::of(&hist),
        errors: errors.count,
        error_samples: errors.samples,
        generator_cpu_pct,
        server_cpu_pct,
    };
    let table = vec![
        ("server", result.url.clone()),
        ("load", format!("{} at once, {}s (+{}s warmup)", args.concurrency, args.duration, args.warmup)),
        ("handshakes", format!("{} /s ({} in total)", thousands(per_s), thousands(handshakes as f64))),
        ("latency", result.latency.line()),
        ("cpu", report::cpu_line(generator_cpu_pct, server_cpu_pct)),
        ("errors", result.errors.to_string()),
    ];
    let nothing = (handshakes == 0).then_some("no handshake completed in the measured window");
    report::finish(json, &result, table, &result.error_samples, &[], nothing)
}
