//! The markdown tables and findings, and writing them into docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peregrine_proto::Connection;

use crate::Mode;
use crate::memory::{CONNECTIONS, MEMORY_MESSAGES, Memory};
use crate::throughput::{RUNS, Throughput};

pub(crate) fn kib(bytes: f64) -> String {
    if bytes >= 1024.0 { format!("{:.1} KiB", bytes / 1024.0) } else { format!("{bytes:.0} B") }
}

pub(crate) fn mb_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64() / 1e6
}

/// `YYYY-MM-DD` (UTC) from the system clock.
pub(crate) fn today() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Civil from days (H. Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

pub(crate) struct Machine {
    cpus: usize,
    model: String,
    rustc: String,
    load: String,
}

pub(crate) fn machine() -> Machine {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
        .map_or("unknown CPU", |(_, name)| name.trim())
        .to_string();
    let rustc = std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rustc (version unknown)".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    Machine { cpus, model, rustc, load }
}

pub(crate) struct Row {
    pub(crate) corpus: &'static str,
    pub(crate) mode: &'static Mode,
    pub(crate) result: Throughput,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.result.raw as f64 / self.result.wire as f64
    }
}

pub(crate) struct Report {
    pub(crate) rows: Vec<Row>,
    pub(crate) memory: Vec<(&'static Mode, Memory)>,
    pub(crate) contexts: Vec<(String, usize, String)>,
    pub(crate) chat_avg: f64,
    pub(crate) ticker_avg: f64,
    pub(crate) machine: Machine,
    pub(crate) cpu_share: Option<f64>,
}

impl Report {
    fn row(&self, corpus: &str, key: &str) -> &Row {
        self.rows.iter().find(|r| r.corpus == corpus && r.mode.key == key).expect("mode measured")
    }

    fn memory(&self, key: &str) -> Memory {
        self.memory.iter().find(|(mode, _)| mode.key == key).map(|(_, m)| *m).expect("mode measured")
    }

    fn ratio_table(&self) -> String {
        let mut t = String::from(
            "| Corpus | Mode | Raw bytes | Wire bytes | Ratio (raw/wire) | Saved | Compress MB/s \
             | Inflate MB/s | Heap per received message kept |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for row in &self.rows {
            let r = &row.result;
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {:.2} | {:.1} % | {:.0} | {:.0} | {} |",
                row.corpus,
                row.mode.name,
                r.raw,
                r.wire,
                row.ratio(),
                100.0 * (1.0 - r.wire as f64 / r.raw as f64),
                mb_per_s(r.raw, r.compress),
                mb_per_s(r.raw, r.inflate),
                kib(r.retained_per_message),
            );
        }
        t
    }

    fn memory_table(&self) -> String {
        let mut t = String::from(
            "| Mode | Server, after traffic | Server, buffers released | Client, after traffic \
             | Client, buffers released | Before any message | Shared per thread (pools) |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
        );
        for (mode, m) in &self.memory {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} |",
                mode.name,
                kib(m.server),
                kib(m.server_idle),
                kib(m.client),
                kib(m.client_idle),
                kib(m.fresh),
                kib(m.shared as f64),
            );
        }
        t
    }

    fn contexts_table(&self) -> String {
        let mut t = String::from("| zlib-rs context | Heap | Made of |\n|---|---:|---|\n");
        for (what, bytes, parts) in &self.contexts {
            let _ = writeln!(t, "| {what} | {} | {parts} |", kib(*bytes as f64));
        }
        t
    }

    pub(crate) fn section(&self) -> String {
        let m = &self.machine;
        let share = match self.cpu_share {
            Some(share) => format!(
                "; the benchmark thread was on a CPU for {:.0} % of the timed\n  wall-clock time, \
                 so on an idle machine the MB/s figures would be up to {:.1}x higher",
                100.0 * share,
                1.0 / share
            ),
            None => String::new(),
        };
        let (t6, t1, w10, n6, n1) = ("t6", "t1", "t6w10", "n6", "n1");
        let ratio = |corpus: &str, key: &str| self.row(corpus, key).ratio();
        let compress = |corpus: &str, key: &str| {
            let r = &self.row(corpus, key).result;
            mb_per_s(r.raw, r.compress)
        };
        let takeover = self.memory(t6);
        let small = self.memory(w10);
        let plain = self.memory("none");
        let pooled = self.memory(n6);
        let per_gib = f64::from(1u32 << 30) / takeover.server;
        let retained = self.row("chat", t6).result.retained_per_message;
        let retained_note = if retained > 4.0 * self.chat_avg {
            format!(
                "\n\nThe last column of the first table is what the application holds per received\n\
                 message while it keeps the message: a compressed message currently keeps a buffer\n\
                 of {} whatever its size ({:.0} B on average here), because inflating grows the\n\
                 buffer in 4 KiB steps and the message is frozen from it. Handling and dropping\n\
                 messages as they arrive costs nothing extra; an application that queues many\n\
                 received messages should copy them out (`Bytes::copy_from_slice`).",
                kib(retained),
                self.chat_avg,
            )
        } else {
            String::new()
        };
        let mut s = String::new();
        let _ = write!(
            s,
            "## permessage-deflate: compression ratio, throughput, memory per connection

- Command: `cargo run --release -p peregrine-proto --example deflate_report`
- Date: {date}
- Machine: {cpus} CPUs (nproc), {model} (/proc/cpuinfo), {rustc}
- Load: 1-minute load average {load} at the start{share}

Byte counts, ratios and memory figures are deterministic (seeded corpus: the same on every
machine with the same zlib-rs). Throughput is the best of {RUNS} wall-clock runs (`Instant`) over
the whole corpus, on one thread; on a busy shared machine it can move by 2x or more between runs, so
only large gaps between modes mean something.

**Corpus.** 10,000 chat publications, {chat_avg:.0} bytes on average:
`{{\"type\":\"publication\",\"channel\":\"chat:room42\",\"offset\":…,\"data\":{{\"user\":\"alice_93\",\"text\":\"…\",\"ts\":…}}}}`
over 65 channels and 400 users (a few of each doing most of the talking), English-like text of
20 to 200 bytes with the odd emoji or escaped quote; and 10,000 ticker updates, {ticker_avg:.0}
bytes on average: `{{\"channel\":\"ticker:BTC-USD\",\"data\":{{\"bid\":…,\"ask\":…,\"last\":…,\"vol\":…,\"ts\":…}}}}`
with random-walk prices over 20 symbols.

**Method.** Each mode is negotiated through the handshake code (the client's offer header,
`DeflateConfig::negotiate`, the response header, `DeflateConfig::check_response`), with
threshold 0 so every message is compressed. A server `Connection` sends every message as text
and its `output()` is the wire (frame headers included). A client `Connection` is fed that wire
in 16 KiB reads and must give back every message unchanged (checked). MB/s are 10^6 bytes of
JSON per second: *compress* is the server's `send` plus writing out its output, *inflate* is the
client's `receive` and `next_event` (inflating and validating UTF-8), each message checked and
dropped as it arrives. The last column is the heap the received messages hold if the
application keeps all of them.

{ratios}
**Memory per connection.** Per mode, {CONNECTIONS} server and {CONNECTIONS} client connections on
one thread, {MEMORY_MESSAGES} chat messages each way through every pair (so both sides compress
and inflate), outputs written out. Live heap bytes come from a counting global allocator
(requested sizes, without malloc's own overhead) and include the {conn} B `Connection` struct.
*Buffers released* is after `release_idle_buffers()`, which drivers call on idle connections:
what is left is the compression state. *Shared per thread* is what is still allocated once
every connection is dropped: the contexts pooled for connections without context takeover
(at most 4 per thread and direction), shared by all connections of the thread however many.

{memory}
Where it goes: with context takeover each side holds one compressor and one decompressor
from its first message in each direction until the connection ends (a server whose clients
never send compressed messages holds only the compressor). zlib-rs contexts are larger than
C zlib's (about 256 KiB and 40 KiB): its hash table has 2^16 heads whatever the memory level,
and the symbol buffer is allocated apart from the pending buffer.

{contexts}
**Trade-off.** Context takeover is what makes permessage-deflate pay for small JSON messages:
{t6_chat:.2}x on chat and {t6_tick:.2}x on tickers at level 6, against {n6_chat:.2}x and
{n6_tick:.2}x without it, because each message can refer back to the previous ones (a 10-bit
window reaches back only 1 KiB, a handful of messages: {w10_chat:.2}x and {w10_tick:.2}x). It
costs {srv} per connection (about {gib10k:.1} GiB for 10,000 connections), against {plain} without
compression. A 10-bit window only brings that to {small}: the compressor's hash table, pending
and symbol buffers do not depend on the window, and the zlib-rs inflater always allocates a
32 KiB window. Without context takeover a connection keeps {pooled} after traffic ({pooled_idle}
once its buffers are released): its contexts go back to the thread's pool after every message
({pooled_shared} per thread here). But it compresses only {n6_chat:.2}x / {n6_tick:.2}x, and it is
slower per message than takeover (at level 1: {n1_c:.0} against {t1_c:.0} MB/s on chat), because
resetting a zlib-rs compressor clears its 128 KiB hash table for every message. Level 1 (zlib-rs's quick strategy,
static Huffman codes only) compresses {l1_speed:.0}x faster than level 6 with takeover, for
{t1_chat:.2}x / {t1_tick:.2}x instead of {t6_chat:.2}x / {t6_tick:.2}x; without takeover it hardly
compresses at all ({n1_chat:.2}x / {n1_tick:.2}x).{retained_note}

**Recommended server policy.**
- Keep context takeover for as many connections as the memory allows, and cap it with
  `DeflateConfig::max_takeover_connections(n)`, at about {srv} per connection (1 GiB ≈ {per_gib:.0}
  connections). Connections past the cap negotiate no context takeover on both sides: they
  still compress, hold about {pooled} each, and share the per-thread pool. Servers that cannot
  afford takeover at all set `server_no_context_takeover(true)` and
  `client_no_context_takeover(true)`.
- Use level 6 (the default) when connections may fall back to no context takeover, where
  level 1 saves almost nothing; level 1 is the better choice when CPU is the bottleneck and
  nearly every connection keeps its context.
- Keep a threshold (the default 64 bytes) in production; these figures use 0.
- Smaller windows are not a good memory lever with zlib-rs: 10 bits cost
  {w10_loss_chat:.0} % (chat) and {w10_loss_tick:.0} % (tickers) of the compressed savings for
  {w10_mem:.0} % less memory.
- 8-bit windows: zlib cannot compress with a 256-byte window (it silently uses 9 bits, which a
  peer with an 8-bit window cannot decode). Peregrine accepts `server_max_window_bits=8` and
  `client_max_window_bits=8`, and the side whose sending window is 8 bits sends every message
  uncompressed, as RFC 7692 allows for any message (the *8-bit windows* rows above: no context
  is ever allocated); it inflates with at least a 9-bit window, which decodes anything an 8-bit
  peer sends.
",
            date = today(),
            cpus = m.cpus,
            model = m.model,
            rustc = m.rustc,
            load = m.load,
            chat_avg = self.chat_avg,
            ticker_avg = self.ticker_avg,
            ratios = self.ratio_table(),
            conn = size_of::<Connection>(),
            memory = self.memory_table(),
            contexts = self.contexts_table(),
            t6_chat = ratio("chat", t6),
            t6_tick = ratio("ticker", t6),
            n6_chat = ratio("chat", n6),
            n6_tick = ratio("ticker", n6),
            w10_chat = ratio("chat", w10),
            w10_tick = ratio("ticker", w10),
            t1_chat = ratio("chat", t1),
            t1_tick = ratio("ticker", t1),
            n1_chat = ratio("chat", n1),
            n1_tick = ratio("ticker", n1),
            srv = kib(takeover.server),
            gib10k = takeover.server * 10_000.0 / f64::from(1u32 << 30),
            plain = kib(plain.server),
            small = kib(small.server),
            pooled = kib(pooled.server),
            pooled_idle = kib(pooled.server_idle),
            pooled_shared = kib(pooled.shared as f64),
            n1_c = compress("chat", n1),
            t1_c = compress("chat", t1),
            l1_speed = (compress("chat", t1) / compress("chat", t6)).min(compress("ticker", t1) / compress("ticker", t6)),
            per_gib = per_gib,
            w10_loss_chat = 100.0 * (1.0 - (1.0 - 1.0 / ratio("chat", w10)) / (1.0 - 1.0 / ratio("chat", t6))),
            w10_loss_tick = 100.0 * (1.0 - (1.0 - 1.0 / ratio("ticker", w10)) / (1.0 - 1.0 / ratio("ticker", t6))),
            w10_mem = 100.0 * (1.0 - small.server / takeover.server),
        );
        s
    }
}

pub(crate) const START: &str = "<!-- deflate:start -->";
pub(crate) const END: &str = "<!-- deflate:end -->";

/// Replaces our section of docs/benchmarks.md (or appends it), leaving the
/// rest of the file as it is.
pub(crate) fn write_section(section: &str) -> std::io::Result<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks.md");
    let old = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let block = format!("{START}\n{section}{END}");
    let new = match (old.find(START), old.find(END)) {
        (Some(start), Some(end)) if start < end => {
            format!("{}{block}{}", &old[..start], &old[end + END.len()..])
        }
        (None, None) if old.is_empty() => format!("{block}\n"),
        (None, None) => {
            let sep = if old.ends_with("\n\n") {
                ""
            } else if old.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{old}{sep}{block}\n")
        }
        _ => {
            return Err(std::io::Error::other(format!(
                "{}: the {START} / {END} markers are unbalanced; not touching the file",
                path.display()
            )));
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, new)?;
    Ok(path)
}
