//! `peregrine bench echo`: echo throughput and latency.
//!
//! Each connection keeps `--pipeline` messages in flight (closed loop: an
//! echo frees a slot, which is refilled at once), or sends at its share of
//! `--rate` whatever the server does (open loop). Latency is the time from
//! sending a message to receiving its echo; at a target rate it is taken from
//! the moment the message was due, so a server that falls behind shows its
//! queueing delay instead of hiding it (no coordinated omission).
//!
//! A connection runs one poll loop over its socket: write what is owed
//! (many frames in one write), read what arrived (one read may complete many
//! echoes), repeat until neither makes progress. Nothing is copied per
//! message and no task or channel sits between reading and writing.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::frames::{EncodedFrames, FrameCounter, Seen};
use super::report::{self, Latency, thousands};
use super::sys::{raise_nofile_limit, round1};
use super::target::Target;
use super::{CommonArgs, check_positive, runtime};

/// Connections opened at once before the run.
const CONNECT_CONCURRENCY: usize = 256;
/// How long a connection may keep running past the end of the window
/// (it stops at the end; this bounds a stuck write).
const GRACE: Duration = Duration::from_secs(2);

/// Arguments of `peregrine bench echo`.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// The server, e.g. ws://127.0.0.1:9001/
    url: String,
    /// Connections, each a WebSocket with its own messages in flight.
    #[arg(short, long, default_value_t = 64, value_name = "N")]
    connections: usize,
    /// Payload bytes per message (one frame each).
    #[arg(short, long, default_value_t = 32, value_name = "BYTES")]
    size: usize,
    /// Messages in flight per connection (closed loop). Each echo is replaced
    /// by a new message at once; the initial DEPTH leave in one write.
    #[arg(short, long, default_value_t = 1, value_name = "DEPTH", conflicts_with = "rate")]
    pipeline: usize,
    /// Open loop instead: send this many messages per second in total, spread
    /// evenly over the connections, whether or not echoes keep up.
    #[arg(short, long, value_name = "MSGS_PER_S")]
    rate: Option<f64>,
    /// Length of the measured window.
    #[arg(short, long, default_value_t = 5.0, value_name = "SECS")]
    duration: f64,
    /// Load before the measured window, not counted.
    #[arg(short, long, default_value_t = 1.0, value_name = "SECS")]
    warmup: f64,
    /// Send text frames (the payload is ASCII) instead of binary ones.
    #[arg(long)]
    text: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// The figures `--json` prints.
#[derive(Debug, Serialize)]
struct EchoResult {
    scenario: &'static str,
    url: String,
    connections: usize,
    connected: usize,
    size_bytes: usize,
    opcode: &'static str,
    pipeline: Option<usize>,
    target_rate: Option<f64>,
    warmup_s: f64,
    duration_s: f64,
    threads: u16,
    /// Echoes received in the measured window.
    messages: u64,
    msgs_per_s: f64,
    /// Echoed payload, in 10^6 bytes per second.
    mb_per_s: f64,
    latency: Latency,
    /// Connections that failed (to connect, or during the run).
    errors: u64,
    error_samples: Vec<String>,
    generator_cpu_pct: Option<f64>,
    server_cpu_pct: Option<f64>,
}

/// When things happen, shared by every connection.
#[derive(Debug)]
struct Plan {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    pipeline: usize,
    /// Per connection, at a target rate: the interval between messages.
    period: Option<Duration>,
}

#[derive(Debug)]
struct ConnStats {
    messages: u64,
    hist: Histogram<u64>,
}

/// Runs `peregrine bench echo`.
pub fn run(args: EchoArgs) -> anyhow::Result<()> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.pipeline == 0 {
        bail!("--pipeline must be at least 1");
    }
    check_positive("--duration", args.duration, false)?;
    check_positive("--warmup", args.warmup, true)?;
    if let Some(rate) = args.rate {
        check_positive("--rate", rate, false)?;
    }
    runtime(args.common.threads)?.block_on(run_async(args))
}

async fn run_async(args: EchoArgs) -> anyhow::Result<()> {
    let target = Arc::new(Target::resolve(&args.url).await?);
    let nofile = raise_nofile_limit();
    if let Some(limit) = nofile
        && args.connections as u64 + 16 > limit
    {
        eprintln!("warning: {} connections exceed the open-files limit ({limit})", args.connections);
    }
    let json = args.common.json;

    // Open every connection first; the load starts for all at once.
    let bar = report::progress(json, args.connections as u64, "connecting [{bar:30}] {pos}/{len}");
    let limit = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut opening = JoinSet::new();
    for _ in 0..args.connections {
        let (target, limit) = (target.clone(), limit.clone());
        let check = !args.common.any_response;
        opening.spawn(async move {
            let _permit = limit.acquire_owned().await;
            target.open(None, check).await
        });
    }
    let mut streams = Vec::with_capacity(args.connections);
    let mut error_samples = Vec::new();
    let mut errors = 0u64;
    while let Some(joined) = opening.join_next().await {
        bar.inc(1);
        match joined.context("connect task")? {
            Ok(opened) => streams.push(opened),
            Err(e) => {
                errors += 1;
                if error_samples.len() < 5 {
                    error_samples.push(format!("{e:#}"));
                }
            }
        }
    }
    bar.finish_and_clear();
    if streams.is_empty() {
        bail!("no connection could be opened: {}", error_samples.join("; "));
    }
    let connected = streams.len();

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let period = args.rate.map(|rate| Duration::from_secs_f64(connected as f64 / rate));
    let plan = Arc::new(Plan { start, measure_from, end, pipeline: args.pipeline, period });
    let received = Arc::new(AtomicU64::new(0));
    let depth = if period.is_some() { 64 } else { args.pipeline };

    let mut running = JoinSet::new();
    for (i, (stream, leftover)) in streams.into_iter().enumerate() {
        let key = [0x5a ^ i as u8, 0xc3 ^ (i >> 8) as u8, 0x37, 0x91];
        let frames = EncodedFrames::new(args.size, args.text, key, depth);
        let (plan, received) = (plan.clone(), received.clone());
        running.spawn(async move {
            let mut stats = ConnStats { messages: 0, hist: report::histogram() };
            let driven = tokio::time::timeout_at(
                (plan.end + GRACE).into(),
                drive(stream, &leftover, &frames, &plan, &mut stats, &received),
            )
            .await;
            let outcome = match driven {
                Ok(result) => result,
                Err(_) => Err(anyhow::anyhow!("still blocked {GRACE:?} after the end of the run")),
            };
            (stats, outcome.err())
        });
    }

    // Progress, and CPU readings at the edges of the measured window.
    let window = report::Window { start, measure_from, end };
    let (generator_cpu_pct, server_cpu_pct) =
        report::watch(&window, json, &received, "msgs", args.common.server_pid).await;

    let mut hist = report::histogram();
    let mut messages = 0;
    while let Some(joined) = running.join_next().await {
        let (stats, error) = joined.context("connection task")?;
        messages += stats.messages;
        hist.add(&stats.hist).context("merging latency histograms")?;
        if let Some(e) = error {
            errors += 1;
            if error_samples.len() < 5 {
                error_samples.push(format!("{e:#}"));
            }
        }
    }

    let window = end.duration_since(measure_from).as_secs_f64();
    let msgs_per_s = messages as f64 / window;
    let result = EchoResult {
        scenario: "echo",
        url: target.url.clone(),
        connections: args.connections,
        connected,
        size_bytes: args.size,
        opcode: if args.text { "text" } else { "binary" },
        pipeline: args.rate.is_none().then_some(args.pipeline),
        target_rate: args.rate,
        warmup_s: args.warmup,
        duration_s: args.duration,
        threads: args.common.threads,
        messages,
        msgs_per_s: round1(msgs_per_s),
        mb_per_s: (msgs_per_s * args.size as f64 / 1e4).round() / 100.0,
        latency: Latency::of(&hist),
        errors,
        error_samples,
        generator_cpu_pct,
        server_cpu_pct,
    };
    let load = match args.rate {
        Some(rate) => format!("open loop at {} msgs/s", thousands(rate)),
        None => format!("{} in flight per connection", args.pipeline),
    };
    let mut table = vec![
        ("server", result.url.clone()),
        (
            "load",
            format!(
                "{connected} connections × {} B {}, {load}, {}s (+{}s warmup)",
                args.size, result.opcode, args.duration, args.warmup
            ),
        ),
        ("throughput", format!("{} msgs/s, {:.2} MB/s", thousands(msgs_per_s), result.mb_per_s)),
        ("messages", thousands(messages as f64)),
        ("latency", result.latency.line()),
        ("cpu", report::cpu_line(generator_cpu_pct, server_cpu_pct)),
        ("errors", errors.to_string()),
    ];
    for sample in &result.error_samples {
        table.push(("", sample.clone()));
    }
    report::emit(json, &result, &table)
}

/// Runs one connection until the end of the plan.
async fn drive(
    mut stream: TcpStream,
    leftover: &[u8],
    frames: &EncodedFrames,
    plan: &Plan,
    stats: &mut ConnStats,
    received: &AtomicU64,
) -> anyhow::Result<()> {
    let mut counter = FrameCounter::default();
    let mut closed = false;
    counter.feed(leftover, |seen| closed |= seen == Seen::Close)?;
    if closed {
        bail!("the server sent a close frame");
    }
    let mut buf = vec![0u8; if frames.frame_len() > 16 << 10 { 256 << 10 } else { 64 << 10 }];
    // Send times of the messages in flight, oldest first: echoes come back
    // in order.
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(plan.pipeline.max(64));
    // Messages due but not yet written, and the write under way (bytes, done).
    let mut owed = if plan.period.is_some() { 0 } else { plan.pipeline };
    let mut writing: Option<(usize, usize)> = None;
    let mut next_due = plan.start;
    let mut tick = plan.period.map(|_| Box::pin(tokio::time::sleep_until(plan.start.into())));
    let mut stop = Box::pin(tokio::time::sleep_until(plan.end.into()));
    let pipelined = plan.period.is_none();

    poll_fn(|cx| {
        loop {
            let mut progressed = false;
            if let (Some(tick), Some(period)) = (tick.as_mut(), plan.period)
                && tick.as_mut().poll(cx).is_ready()
            {
                let now = Instant::now();
                while next_due <= now {
                    in_flight.push_back(next_due);
                    owed += 1;
                    next_due += period;
                }
                tick.as_mut().reset(next_due.into());
                progressed = true;
            }
            while writing.is_some() || owed > 0 {
                let (len, done) = *writing.get_or_insert_with(|| {
                    let count = owed.min(frames.copies());
                    owed -= count;
                    if pipelined {
                        let now = Instant::now();
                        in_flight.extend(std::iter::repeat_n(now, count));
                    }
                    (frames.batch(count).len(), 0)
                });
                match Pin::new(&mut stream).poll_write(cx, &frames.batch(usize::MAX)[done..len]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(anyhow::anyhow!("the connection stopped taking data")));
                    }
                    Poll::Ready(Ok(n)) => {
                        writing = if done + n == len { None } else { Some((len, done + n)) };
                        progressed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(anyhow::Error::new(e).context("writing"))),
                    Poll::Pending => break,
                }
            }
            let mut read = ReadBuf::new(&mut buf);
            match Pin::new(&mut stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let data = read.filled();
                    if data.is_empty() {
                        return Poll::Ready(Err(anyhow::anyhow!("the server closed the connection")));
                    }
                    let now = Instant::now();
                    let counting = now >= plan.measure_from && now < plan.end;
                    let mut echoes = 0u64;
                    let mut closed = false;
                    let fed = counter.feed(data, |seen| match seen {
                        Seen::Message => {
                            echoes += 1;
                            let sent = in_flight.pop_front().unwrap_or(now);
                            if counting {
                                report::record(&mut stats.hist, now.saturating_duration_since(sent));
                            }
                        }
                        Seen::Close => closed = true,
                        Seen::Other => {}
                    });
                    if let Err(e) = fed {
                        return Poll::Ready(Err(e.context("decoding echoes")));
                    }
                    if closed {
                        return Poll::Ready(Err(anyhow::anyhow!("the server sent a close frame")));
                    }
                    received.fetch_add(echoes, Ordering::Relaxed);
                    if counting {
                        stats.messages += echoes;
                    }
                    if now >= plan.end {
                        return Poll::Ready(Ok(()));
                    }
                    if pipelined {
                        owed += echoes as usize;
                    }
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(anyhow::Error::new(e).context("reading"))),
                Poll::Pending => {}
            }
            if !progressed {
                return if stop.as_mut().poll(cx).is_ready() { Poll::Ready(Ok(())) } else { Poll::Pending };
            }
        }
    })
    .await
}
