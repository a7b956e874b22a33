//! `peregrine bench publish`: publishes per second through one node's HTTP API, with many
//! in flight, and what each costs the node and its broker in CPU.
//!
//! Each of `--connections` kept-alive HTTP/1.1 connections publishes back to back with
//! `--window` requests pipelined. A node serves one connection's requests in order, so
//! `--connections` is how many publishes the node has in flight at once: with the Redis
//! broker, the depth of the pipeline on its connection to Redis. Nobody subscribes: this
//! measures the publish path (API, broker, history), not fan-out (`bench fanout`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http::{next_answer, post};
use super::report::{self, Latency, thousands};
use super::sys::{CpuOf, CpuSample, round1};
use super::{CommonArgs, Timing};

/// Arguments of `peregrine bench publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The node's address, e.g. 127.0.0.1:8080.
    addr: SocketAddr,
    /// Channel to publish to.
    #[arg(long, default_value = "bench:publish")]
    channel: String,
    /// HTTP connections, each publishing back to back: the publishes the node has in
    /// flight at once.
    #[arg(short, long, default_value_t = 32, value_name = "N")]
    connections: usize,
    /// Requests pipelined on each connection (the node still serves them one at a time).
    #[arg(long, default_value_t = 1, value_name = "N")]
    window: usize,
    /// Bytes of padding in each publication.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    payload: usize,
    /// How long to publish before measuring.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    warmup: f64,
    /// How long to measure.
    #[arg(short, long, default_value_t = 5.0, value_name = "SECS")]
    duration: f64,
    /// API key (`Authorization: apikey KEY`).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Process id of the broker (e.g. the node's Redis server): its CPU per publish is
    /// reported beside the node's.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    #[command(flatten)]
    common: CommonArgs,
}

/// The figures `--json` prints.
#[derive(Debug, Serialize)]
struct PublishResult {
    scenario: &'static str,
    connections: usize,
    window: usize,
    measured_s: f64,
    /// Publishes acknowledged with a 2xx in the measured window.
    published: u64,
    published_per_s: f64,
    /// Send to acknowledgement, for publishes sent and answered in the measured window.
    latency: Latency,
    errors: u64,
    error_samples: Vec<String>,
    generator_cpu_pct: Option<f64>,
    server_cpu_pct: Option<f64>,
    /// The node's CPU time per publish.
    server_cpu_us_per_publish: Option<f64>,
    broker_cpu_pct: Option<f64>,
    broker_cpu_us_per_publish: Option<f64>,
}

/// What the connections share (one thread).
struct Shared {
    acked: Cell<u64>,
    errors: RefCell<report::Errors>,
    hist: RefCell<Histogram<u64>>,
    /// Publishes sent at or after this are timed.
    measure_from: Instant,
    end: Instant,
}

/// Runs `peregrine bench publish`.
pub fn run(args: PublishArgs) -> anyhow::Result<()> {
    let timing = Timing::check(args.warmup, args.duration)?;
    anyhow::ensure!(args.common.threads == 1, "--threads: bench publish runs on one thread only");
    anyhow::ensure!(!args.common.any_response, "--any-response is for echo, idle and handshake, not publish");
    if args.connections == 0 || args.window == 0 {
        bail!("--connections and --window must be at least 1");
    }
    if !args.addr.ip().is_loopback() {
        bail!("bench publish only targets loopback servers (127.0.0.0/8)");
    }
    super::check_open_files("--connections", args.connections)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, publish(&args, timing))?;
    let per = |us: Option<f64>| us.map_or("-".into(), |us| format!("{us:.1} µs per publish"));
    let table = vec![
        ("target", format!("{} ({} connections x {} pipelined)", args.addr, args.connections, args.window)),
        (
            "published",
            format!(
                "{} in {:.1} s ({}/s)",
                thousands(result.published as f64),
                result.measured_s,
                thousands(result.published_per_s)
            ),
        ),
        ("latency", result.latency.line()),
        ("errors", thousands(result.errors as f64)),
        ("cpu", report::cpu_line(result.generator_cpu_pct, result.server_cpu_pct)),
        ("server cpu", per(result.server_cpu_us_per_publish)),
        ("broker cpu", per(result.broker_cpu_us_per_publish)),
    ];
    let nothing = (result.published == 0).then_some("no publish was acknowledged");
    report::finish(args.common.json, &result, table, &result.error_samples, &[], nothing)
}

async fn publish(args: &PublishArgs, timing: Timing) -> anyhow::Result<PublishResult> {
    let start = Instant::now();
    let shared = Rc::new(Shared {
        acked: Cell::new(0),
        errors: RefCell::default(),
        hist: RefCell::new(report::histogram()),
        measure_from: start + timing.warmup,
        end: start + timing.warmup + timing.duration,
    });
    let mut streams = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let tcp = TcpStream::connect(args.addr)
            .await
            .with_context(|| format!("connecting publisher {i} to {}", args.addr))?;
        tcp.set_nodelay(true)?;
        streams.push(tcp);
    }
    let auth = args.api_key.as_ref().map(|k| format!("Authorization: apikey {k}\r\n")).unwrap_or_default();
    let pad = "x".repeat(args.payload);
    let channel = serde_json::to_string(&args.channel)?;
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, tcp)| {
            let shared = Rc::clone(&shared);
            let (auth, pad, channel) = (auth.clone(), pad.clone(), channel.clone());
            let (addr, window) = (args.addr, args.window);
            tokio::task::spawn_local(async move {
                let body = |seq: u64| {
                    format!(
                        "{{\"channel\":{channel},\"data\":{{\"c\":{i},\"seq\":{seq},\"pad\":\"{pad}\"}}}}"
                    )
                };
                let request = |seq: u64| post("/api/publish", addr, &auth, &body(seq));
                if let Err(e) = connection(tcp, window, &shared, request).await {
                    shared.errors.borrow_mut().add(&e);
                }
            })
        })
        .collect();

    // Count and read CPU at the edges of the measured window.
    let pids: Vec<u32> = args.broker_pid.into_iter().collect();
    tokio::time::sleep_until(shared.measure_from.into()).await;
    let (count_from, cpu_from, broker_from) =
        (shared.acked.get(), CpuSample::take(args.common.server_pid), CpuOf::take(&pids));
    let bar = report::progress(
        args.common.json,
        timing.duration.as_millis() as u64,
        "publishing [{bar:30}] {elapsed:>3} {msg}",
    );
    while Instant::now() < shared.end {
        bar.set_position(shared.measure_from.elapsed().as_millis() as u64);
        bar.set_message(format!("{} published", thousands((shared.acked.get() - count_from) as f64)));
        tokio::time::sleep_until(shared.end.min(Instant::now() + Duration::from_millis(250)).into()).await;
    }
    let (count_to, cpu_to, broker_to) =
        (shared.acked.get(), CpuSample::take(args.common.server_pid), CpuOf::take(&pids));
    bar.finish_and_clear();
    let measured_s = timing.duration.as_secs_f64();
    // The connections stop sending at the end and take their last answers.
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    let published = count_to - count_from;
    let (generator_cpu_pct, server_cpu_pct) = cpu_from.percent_until(&cpu_to);
    let broker_cpu_pct = broker_from.percent_until(&broker_to).pop().flatten();
    let published_per_s = published as f64 / measured_s;
    let per_publish = |pct: Option<f64>| {
        pct.filter(|_| published > 0).map(|pct| round1(pct / 100.0 * 1e6 / published_per_s))
    };
    let errors = shared.errors.borrow();
    Ok(PublishResult {
        scenario: "publish",
        connections: args.connections,
        window: args.window,
        measured_s: round1(measured_s),
        published,
        published_per_s: round1(published_per_s),
        latency: Latency::of(&shared.hist.borrow()),
        errors: errors.count,
        error_samples: errors.samples.clone(),
        generator_cpu_pct,
        server_cpu_pct,
        server_cpu_us_per_publish: per_publish(server_cpu_pct),
        broker_cpu_pct,
        broker_cpu_us_per_publish: per_publish(broker_cpu_pct),
    })
}

/// Publishes on one connection until the end of the run, `window` requests in flight;
/// then takes the answers still due.
async fn connection(
    tcp: TcpStream,
    window: usize,
    shared: &Shared,
    request: impl Fn(u64) -> String,
) -> anyhow::Result<()> {
    let (mut read, mut write) = tcp.into_split();
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(window);
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(1 << 14);
    let mut chunk = vec![0u8; 1 << 14];
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        if now < shared.end {
            while sent_at.len() < window {
                out.extend_from_slice(request(seq).as_bytes());
                seq += 1;
                sent_at.push_back(now);
            }
            write.write_all(&out).await.context("publishing")?;
            out.clear();
        } else if sent_at.is_empty() {
            return Ok(());
        }
        // Read until at least one answer is in.
        let before = sent_at.len();
        while sent_at.len() == before {
            let n = read.read(&mut chunk).await.context("reading answers")?;
            if n == 0 {
                bail!("the server closed a publishing connection");
            }
            buf.extend_from_slice(&chunk[..n]);
            let now = Instant::now();
            while let Some(answer) = next_answer(&mut buf) {
                let Some(sent) = sent_at.pop_front() else { bail!("an answer to no request") };
                answer.map_err(|refused| anyhow::anyhow!("the node answered a publish with {refused}"))?;
                shared.acked.set(shared.acked.get() + 1);
                if sent >= shared.measure_from && now <= shared.end {
                    report::record(&mut shared.hist.borrow_mut(), now - sent);
                }
            }
        }
    }
}
