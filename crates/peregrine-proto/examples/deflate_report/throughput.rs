//! Compression ratio and throughput over a whole corpus, best of a few runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Buf;
use peregrine_proto::{Message, Utf8Bytes};

use crate::alloc::live;
use crate::{Mode, drain, expect_text, pair};

pub(crate) const RUNS: usize = 3;
/// The client is fed the wire bytes in reads of this size, as from a socket.
const READ_SIZE: usize = 16 * 1024;

pub(crate) struct Throughput {
    pub(crate) raw: usize,
    pub(crate) wire: usize,
    /// Best wall-clock times (`Instant`) over the whole corpus.
    pub(crate) compress: Duration,
    pub(crate) inflate: Duration,
    /// Heap held per received message while the application keeps them.
    pub(crate) retained_per_message: f64,
}

/// Wall-clock and on-CPU nanoseconds of every timed section, summed: how
/// much of a CPU the benchmark got on a machine that may be busy.
static TIMED_WALL_NS: AtomicU64 = AtomicU64::new(0);
static TIMED_CPU_NS: AtomicU64 = AtomicU64::new(0);

/// Time this thread has spent on a CPU, from `/proc/thread-self/schedstat`
/// (Linux; updated at scheduler ticks, so only sums over many sections are
/// accurate); `None` elsewhere.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(stat.split_whitespace().next()?.parse().ok()?))
}

/// Runs `f` and returns how long it took (wall clock).
pub(crate) fn timed(f: impl FnOnce()) -> Duration {
    let cpu_before = thread_cpu_time();
    let start = Instant::now();
    f();
    let wall = start.elapsed();
    if let Some((after, before)) = thread_cpu_time().zip(cpu_before) {
        TIMED_WALL_NS.fetch_add(wall.as_nanos() as u64, Ordering::Relaxed);
        TIMED_CPU_NS.fetch_add(after.saturating_sub(before).as_nanos() as u64, Ordering::Relaxed);
    }
    wall
}

/// The share of the timed wall-clock time the benchmark thread was on a CPU.
pub(crate) fn cpu_share() -> Option<f64> {
    let wall = TIMED_WALL_NS.load(Ordering::Relaxed);
    (wall > 0).then(|| (TIMED_CPU_NS.load(Ordering::Relaxed) as f64 / wall as f64).min(1.0))
}

pub(crate) fn throughput(mode: &Mode, corpus: &[Utf8Bytes]) -> Throughput {
    let raw: usize = corpus.iter().map(|m| m.len()).sum();
    let mut best = Throughput {
        raw,
        wire: 0,
        compress: Duration::MAX,
        inflate: Duration::MAX,
        retained_per_message: 0.0,
    };
    let mut wire = Vec::with_capacity(raw + 14 * corpus.len());
    for run in 0..RUNS {
        let (mut server, mut client) = pair(mode);
        wire.clear();
        let time = timed(|| {
            for message in corpus {
                server.send(Message::Text(message.clone())).expect("send");
                drain(server.output(), &mut wire);
            }
        });
        best.compress = best.compress.min(time);
        assert!(run == 0 || wire.len() == best.wire, "deterministic output");
        best.wire = wire.len();

        // Every message is checked as it arrives, then dropped, as an
        // application handling them one by one would.
        let mut count = 0;
        let time = timed(|| {
            for read in wire.chunks(READ_SIZE) {
                client.receive(read);
                while let Some(event) = client.next_event() {
                    expect_text(Some(event), &corpus[count]);
                    count += 1;
                }
            }
        });
        best.inflate = best.inflate.min(time);
        assert_eq!(count, corpus.len(), "{}: every message arrives", mode.name);
        assert!(!client.output().has_remaining() && client.failure().is_none());
    }

    // Untimed: what received messages cost while the application holds them.
    let (_, mut client) = pair(mode);
    let mut received = Vec::with_capacity(corpus.len());
    let before = live();
    for read in wire.chunks(READ_SIZE) {
        client.receive(read);
        while let Some(event) = client.next_event() {
            received.push(event);
        }
    }
    drop(client);
    best.retained_per_message = live().wrapping_sub(before) as f64 / corpus.len() as f64;
    assert_eq!(received.len(), corpus.len());
    best
}
