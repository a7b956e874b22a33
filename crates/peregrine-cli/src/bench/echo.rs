//! `peregrine bench echo`: echo throughput and latency.
//!
//! Each connection keeps `--pipeline` messages in flight (closed loop: an
//! echo frees a slot, which is refilled at once), or sends at its share of
//! `--rate` whatever the server does (open loop; the connections' schedules
//! are staggered over one period so they do not send in step). Latency is
//! the time from sending a message to receiving its echo. At a target rate it
//! is taken from the moment the generator's timer released the message, even
//! if the write then had to wait for the server: a server that falls behind
//! shows its queueing delay instead of hiding it (no coordinated omission),
//! while the timer's own lateness (up to a millisecond with tokio's) is the
//! generator's and is left out. That lateness is reported on its own
//! (`send_lag`), with a warning when it grows past what the timer explains:
//! then the generator, not the server, is behind.
//!
//! Every echo is checked against what was sent: its opcode and length, and
//! that a message was in flight for it. A server that answers otherwise
//! fails the connection with an error saying what came back. The payload
//! bytes themselves are skipped, never compared: a server that repeats a
//! message is caught when the repeat arrives with nothing in flight, not
//! when the next message has already gone out and the repeat passes for its
//! echo. A server that greets (sends a message before it is sent one)
//! cannot be measured this way. Its greeting fails the connection and is
//! named as a possible greeting, whether it came with the 101 or after it,
//! unless it has the size and type of the benchmark's messages: then it
//! passes for the first echo, and the last echo arrives with none in flight.
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

use peregrine::proto::OpCode;

use super::frames::{EncodedFrames, FrameCounter, Seen};
use super::report::{self, Errors, Latency, thousands};
use super::sys::round1;
use super::target::Target;
use super::{CommonArgs, Timing, check_open_files, check_positive, number, runtime};

/// Connections opened at once before the run.
const CONNECT_CONCURRENCY: usize = 256;
/// How long a connection may keep running past the end of the window
/// (it stops at the end; this bounds a stuck write).
const GRACE: Duration = Duration::from_secs(2);
/// The most messages per second one connection is timed at (`--rate`): one
/// every microsecond.
const MAX_RATE_PER_CONNECTION: f64 = 1e6;
/// Below this share of `--rate` echoed, the run says the server fell behind.
const RATE_SHORTFALL: f64 = 0.95;
/// Send lag (p99) past which the run says the generator fell behind its
/// schedule. tokio's timer fires on 1 ms ticks, so an idle generator is up to
/// about 2 ms late at p99 already; five ticks is more than the timer.
const LAG_WARNING: Duration = Duration::from_millis(5);

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
    /// At a target rate: how late the generator released each message
    /// against its schedule (its timer and its own CPU). Left out of
    /// `latency`, which starts when a message is released.
    send_lag: Option<Latency>,
    /// Messages sent (or, at a target rate, due) and not echoed when the run
    /// ended: the pipeline in flight, or what a server that fell behind owes.
    in_flight_at_end: u64,
    /// Connections that failed (to connect, or during the run).
    errors: u64,
    error_samples: Vec<String>,
    generator_cpu_pct: Option<f64>,
    server_cpu_pct: Option<f64>,
    warnings: Vec<String>,
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
    /// What every echo must be.
    opcode: OpCode,
    size: u64,
}

#[derive(Debug)]
struct ConnStats {
    messages: u64,
    hist: Histogram<u64>,
    /// Open loop only: release time minus scheduled time, per message.
    lag: Histogram<u64>,
    in_flight_at_end: u64,
}

/// Runs `peregrine bench echo`.
pub fn run(args: EchoArgs) -> anyhow::Result<()> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.pipeline == 0 {
        bail!("--pipeline must be at least 1");
    }
    let timing = Timing::check(args.warmup, args.duration)?;
    let connect_timeout = args.common.connect_timeout()?;
    if let Some(rate) = args.rate {
        check_rate(rate, args.connections, args.duration)?;
    }
    check_open_files("--connections", args.connections)?;
    runtime(args.common.threads)?.block_on(run_async(args, timing, connect_timeout))
}

/// A target rate must give every connection at least one message in the
/// measured window, and no more than can be timed.
fn check_rate(rate: f64, connections: usize, duration: f64) -> anyhow::Result<()> {
    check_positive("--rate", rate, false)?;
    let per_connection = rate / connections as f64;
    anyhow::ensure!(
        per_connection * duration >= 1.0,
        "--rate {} is less than one message per connection in the measured window ({connections} \
         connections, {duration} s): give --rate {} or more, fewer --connections, or a longer --duration",
        number(rate),
        (connections as f64 / duration).ceil()
    );
    anyhow::ensure!(
        per_connection <= MAX_RATE_PER_CONNECTION,
        "--rate {} is over {MAX_RATE_PER_CONNECTION} messages/s per connection, more than the \
         generator can time: use more --connections (or --pipeline for the most the server can do)",
        number(rate)
    );
    Ok(())
}

async fn run_async(args: EchoArgs, timing: Timing, connect_timeout: Duration) -> anyhow::Result<()> {
    let target = Arc::new(Target::resolve(&args.url, connect_timeout).await?);
    let json = args.common.json;
    let mut warnings = Vec::new();

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
    let mut errors = Errors::default();
    while let Some(joined) = opening.join_next().await {
        bar.inc(1);
        match joined.context("connect task")? {
            Ok(opened) => streams.push(opened),
            Err(e) => errors.add(&e),
        }
    }
    bar.finish_and_clear();
    if streams.is_empty() {
        bail!("no connection could be opened: {}", errors.samples.join("; "));
    }
    let connected = streams.len();

    let start = Instant::now();
    let measure_from = start + timing.warmup;
    let end = measure_from + timing.duration;
    let period =
        args.rate.map(|rate| Duration::from_secs_f64(connected as f64 / rate).max(Duration::from_micros(1)));
    let opcode = if args.text { OpCode::Text } else { OpCode::Binary };
    let size = args.size as u64;
    let plan = Arc::new(Plan { start, measure_from, end, pipeline: args.pipeline, period, opcode, size });
    let received = Arc::new(AtomicU64::new(0));
    let depth = if period.is_some() { 64 } else { args.pipeline };

    let mut running = JoinSet::new();
    for (i, (stream, leftover)) in streams.into_iter().enumerate() {
        let key = [0x5a ^ i as u8, 0xc3 ^ (i >> 8) as u8, 0x37, 0x91];
        let frames = EncodedFrames::new(args.size, args.text, key, depth);
        let (plan, received) = (plan.clone(), received.clone());
        // At a target rate, connection i starts i/connected of a period late.
        let stagger = period.map_or(Duration::ZERO, |p| p.mul_f64(i as f64 / connected as f64));
        running.spawn(async move {
            let mut stats = ConnStats {
                messages: 0,
                hist: report::histogram(),
                lag: report::histogram(),
                in_flight_at_end: 0,
            };
            let driven = tokio::time::timeout_at(
                (plan.end + GRACE).into(),
                drive(stream, &leftover, &frames, &plan, stagger, &mut stats, &received),
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

    let (mut hist, mut lag) = (report::histogram(), report::histogram());
    let (mut messages, mut in_flight_at_end) = (0, 0);
    while let Some(joined) = running.join_next().await {
        let (stats, error) = joined.context("connection task")?;
        messages += stats.messages;
        in_flight_at_end += stats.in_flight_at_end;
        hist.add(&stats.hist).context("merging latency histograms")?;
        lag.add(&stats.lag).context("merging send lag histograms")?;
        if let Some(e) = error {
            errors.add(&e);
        }
    }

    let window = end.duration_since(measure_from).as_secs_f64();
    let msgs_per_s = messages as f64 / window;
    if let Some(rate) = args.rate
        && msgs_per_s < rate * RATE_SHORTFALL
    {
        warnings.push(format!(
            "the server echoed {} msgs/s of the {} asked for; {} messages were still unanswered at the end",
            thousands(msgs_per_s),
            thousands(rate),
            thousands(in_flight_at_end as f64)
        ));
    }
    let send_lag = args.rate.map(|_| Latency::of(&lag));
    if let Some(lag) = &send_lag
        && lag.samples > 0
        && lag.p99_us > LAG_WARNING.as_secs_f64() * 1e6
    {
        warnings.push(format!(
            "the generator released messages late (send lag p99 {} µs): it fell behind its own schedule, so \
             less than --rate was offered; give it more --threads or fewer --connections",
            thousands(lag.p99_us)
        ));
    }
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
        send_lag,
        in_flight_at_end,
        errors: errors.count,
        error_samples: errors.samples,
        generator_cpu_pct,
        server_cpu_pct,
        warnings,
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
                "{connected} connection{} × {} B {}, {load}, {}s (+{}s warmup)",
                if connected == 1 { "" } else { "s" },
                args.size,
                result.opcode,
                args.duration,
                args.warmup
            ),
        ),
        ("throughput", format!("{} msgs/s, {:.2} MB/s", thousands(msgs_per_s), result.mb_per_s)),
        ("messages", thousands(messages as f64)),
        ("latency", result.latency.line()),
    ];
    if let Some(lag) = &result.send_lag {
        table.push(("send lag", lag.line()));
    }
    table.push(("cpu", report::cpu_line(generator_cpu_pct, server_cpu_pct)));
    table.push(("errors", result.errors.to_string()));
    let nothing = (messages == 0).then_some("no echo arrived in the measured window");
    report::finish(json, &result, table, &result.error_samples, &result.warnings, nothing)
}

/// Runs one connection until the end of the plan.
async fn drive(
    mut stream: TcpStream,
    leftover: &[u8],
    frames: &EncodedFrames,
    plan: &Plan,
    stagger: Duration,
    stats: &mut ConnStats,
    received: &AtomicU64,
) -> anyhow::Result<()> {
    let mut counter = FrameCounter::default();
    let mut closed = false;
    let mut greeting = None;
    counter.feed(leftover, |seen| match seen {
        Seen::Message { opcode, len } => greeting = greeting.or(Some((opcode, len))),
        Seen::Close => closed = true,
        Seen::Other => {}
    })?;
    if let Some((opcode, len)) = greeting {
        bail!(
            "the server sent a {len}-byte {} message with its 101, before any was sent{GREETING}",
            kind(opcode)
        );
    }
    if closed {
        bail!("the server sent a close frame");
    }
    // Whether anything has come back yet: a wrong first answer may be a
    // greeting that arrived just after the 101.
    let mut answered = false;
    let mut buf = vec![0u8; if frames.frame_len() > 16 << 10 { 256 << 10 } else { 64 << 10 }];
    // Send times of the messages in flight, oldest first: echoes come back
    // in order.
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(plan.pipeline.max(64));
    // Messages due but not yet written, and the write under way (bytes, done).
    let mut owed = if plan.period.is_some() { 0 } else { plan.pipeline };
    let mut writing: Option<(usize, usize)> = None;
    let mut next_due = plan.start + stagger;
    let mut tick = plan.period.map(|_| Box::pin(tokio::time::sleep_until(next_due.into())));
    let mut stop = Box::pin(tokio::time::sleep_until(plan.end.into()));
    let pipelined = plan.period.is_none();

    let outcome = poll_fn(|cx| {
        loop {
            let mut progressed = false;
            if let (Some(tick), Some(period)) = (tick.as_mut(), plan.period)
                && tick.as_mut().poll(cx).is_ready()
            {
                let now = Instant::now();
                let counting = now >= plan.measure_from && now < plan.end;
                while next_due <= now {
                    // Timed from now, not from `next_due`: the timer fires up
                    // to a millisecond late, and that is the generator's delay,
                    // kept apart.
                    if counting {
                        report::record(&mut stats.lag, now - next_due);
                    }
                    in_flight.push_back(now);
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
                    let mut wrong: Option<anyhow::Error> = None;
                    let fed = counter.feed(data, |seen| match seen {
                        Seen::Message { opcode, len } => {
                            if !answered && in_flight.is_empty() {
                                // At a target rate nothing goes out before
                                // the first tick.
                                wrong.get_or_insert_with(|| {
                                    anyhow::anyhow!(
                                        "the server sent a {len}-byte {} message before any was sent{GREETING}",
                                        kind(opcode)
                                    )
                                });
                            } else if opcode != plan.opcode || len != plan.size {
                                wrong.get_or_insert_with(|| {
                                    anyhow::anyhow!(
                                        "the server answered a {}-byte {} message with a {len}-byte {} one: \
                                         not an echo{}",
                                        plan.size,
                                        kind(plan.opcode),
                                        kind(opcode),
                                        if answered { "" } else { GREETING }
                                    )
                                });
                            }
                            match in_flight.pop_front() {
                                Some(sent) if counting => {
                                    report::record(&mut stats.hist, now.saturating_duration_since(sent));
                                }
                                Some(_) => {}
                                None => {
                                    wrong.get_or_insert_with(|| {
                                        anyhow::anyhow!(
                                            "the server sent a message with none in flight: more answers \
                                             than messages sent, not an echo{}",
                                            if answered { "" } else { GREETING }
                                        )
                                    });
                                }
                            }
                            echoes += 1;
                            answered = true;
                        }
                        Seen::Close => closed = true,
                        Seen::Other => {}
                    });
                    if let Err(e) = fed {
                        return Poll::Ready(Err(e.context("decoding echoes")));
                    }
                    if let Some(e) = wrong {
                        return Poll::Ready(Err(e));
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
    .await;
    stats.in_flight_at_end = in_flight.len() as u64;
    outcome
}

/// Said of a wrong first message: `bench echo` cannot tell a greeting from
/// an echo, so a server that greets cannot be measured with it.
const GREETING: &str = " (a greeting? `bench echo` needs a server that only echoes what it is sent)";

/// How an opcode reads in a message: "binary", "text"...
fn kind(opcode: OpCode) -> &'static str {
    match opcode {
        OpCode::Text => "text",
        OpCode::Binary => "binary",
        OpCode::Continuation => "continuation (with no first frame)",
        _ => "control",
    }
}
