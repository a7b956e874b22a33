//! permessage-deflate report: compression ratio, throughput and memory per
//! connection on a realistic JSON corpus, for each compression mode.
//!
//! ```sh
//! cargo run --release -p peregrine-proto --example deflate_report
//! ```
//!
//! The corpus (10,000 chat messages and 10,000 ticker updates) comes from a
//! seeded PRNG, so byte counts, ratios and memory figures are identical on
//! every run; only the throughput figures depend on the machine. The tables
//! are printed and written into docs/benchmarks.md between the
//! `<!-- deflate:start -->` and `<!-- deflate:end -->` markers (the rest of
//! that file is left as it is).
//!
//! Everything goes through the public API as a driver would use it: the
//! client's offer is formatted as a `Sec-WebSocket-Extensions` header, parsed,
//! answered by [`DeflateConfig::negotiate`] and checked by
//! [`DeflateConfig::check_response`]; a server [`Connection`] sends every
//! message, its output is the bytes on the wire, and a client `Connection`
//! receives them and must give back every message unchanged.

// The counting global allocator below needs `unsafe impl GlobalAlloc`, which
// the workspace's `unsafe_code = "deny"` forbids; the SAFETY comment on the
// impl shows why it is sound. This is the only unsafe code in the example.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Buf;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use peregrine_proto::extension::{DeflateConfig, DeflateParams};
use peregrine_proto::handshake::parse_extensions;
use peregrine_proto::output::Output;
use peregrine_proto::{Connection, Event, Limits, Message, Role, Utf8Bytes};

// ---- counting allocator ------------------------------------------------------

/// Bytes currently allocated through the global allocator (requested sizes,
/// without the allocator's own overhead).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Delegates to [`System`] and keeps [`LIVE`] up to date.
struct CountingAlloc;

// SAFETY: every method forwards to `System` with exactly the pointer, layout
// and new size it was given, and returns what `System` returned, so the
// `GlobalAlloc` contract (valid, suitably aligned blocks of at least the
// requested size; `dealloc`/`realloc` only on blocks from this allocator with
// their layout) is the one `System` already upholds: every block we hand out
// came from `System`, so handing it back to `System` is valid. The only extra
// work is relaxed atomic arithmetic on a counter, which neither allocates,
// panics nor touches the blocks. The counter uses wrapping arithmetic, so
// ordering between threads can make it transiently wrong but never unsound.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout (non-zero size) is passed on unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` (through `alloc`, `alloc_zeroed` or
        // `realloc` above) with this layout, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; `new_size` is the
        // caller's, valid for `layout.align()` as the caller guarantees.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // On failure the old block is untouched and still counted.
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

// ---- deterministic corpus ----------------------------------------------------

const MESSAGES: usize = 10_000;
const SEED: u64 = 0x5eed_d3f1_a7e5_0001;

/// SplitMix64: tiny, fast, and good enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// In `0..n`, low indices much more likely (a few users and channels do
    /// most of the talking).
    fn skewed(&mut self, n: usize) -> usize {
        let u = self.unit();
        ((u * u * u) * n as f64) as usize
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below((hi - lo) as usize) as u64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Roughly standard normal (Irwin-Hall with 4 terms, rescaled).
    fn normal(&mut self) -> f64 {
        ((0..4).map(|_| self.unit()).sum::<f64>() - 2.0) * 3f64.sqrt()
    }
}

const FIRST_NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "nina",
    "oscar", "peggy", "quinn", "rupert", "sybil", "trent", "ursula", "victor", "wendy", "xavier", "yara",
    "zoe", "liam", "olivia", "noah", "emma", "mateo", "sofia", "lucas", "mia", "aiko", "hiro", "priya",
    "arjun", "fatima", "omar", "lena", "jonas", "marta", "pavel", "ines", "tomas", "chen", "wei", "kofi",
    "amara", "sven", "freya",
];
const LAST_NAMES: &[&str] = &[
    "smith", "garcia", "kim", "nguyen", "mueller", "rossi", "silva", "tanaka", "ivanova", "okafor", "novak",
    "larsen", "dubois", "kowalski", "haddad", "singh", "moreau", "jensen", "costa", "weber",
];
const TOPICS: &[&str] = &[
    "general",
    "random",
    "dev",
    "support",
    "ops",
    "music",
    "gaming",
    "crypto",
    "memes",
    "announcements",
    "design",
    "frontend",
    "backend",
    "offtopic",
    "help",
];
/// Common words first: `skewed` picks them most.
const WORDS: &[&str] = &[
    "the",
    "i",
    "to",
    "a",
    "and",
    "it",
    "is",
    "you",
    "that",
    "of",
    "in",
    "this",
    "for",
    "on",
    "we",
    "just",
    "so",
    "but",
    "be",
    "have",
    "was",
    "not",
    "with",
    "are",
    "it's",
    "can",
    "what",
    "if",
    "do",
    "my",
    "at",
    "lol",
    "yeah",
    "me",
    "will",
    "they",
    "all",
    "there",
    "about",
    "ok",
    "now",
    "get",
    "like",
    "think",
    "i'm",
    "don't",
    "one",
    "out",
    "up",
    "know",
    "when",
    "how",
    "time",
    "good",
    "back",
    "anyone",
    "thanks",
    "still",
    "deploy",
    "build",
    "today",
    "tomorrow",
    "meeting",
    "people",
    "see",
    "new",
    "some",
    "more",
    "really",
    "would",
    "could",
    "should",
    "also",
    "here",
    "work",
    "working",
    "server",
    "message",
    "room",
    "game",
    "fix",
    "bug",
    "release",
    "check",
    "link",
    "after",
    "before",
    "because",
    "maybe",
    "sure",
    "right",
    "great",
    "nice",
    "looks",
    "need",
    "want",
    "going",
    "make",
    "sorry",
    "again",
    "already",
    "issue",
    "problem",
    "morning",
    "night",
    "weekend",
    "coffee",
    "lunch",
    "later",
    "soon",
    "yesterday",
    "update",
    "version",
    "latest",
    "branch",
    "review",
    "merge",
    "test",
    "tests",
    "failing",
    "passing",
    "client",
    "browser",
    "mobile",
    "login",
    "password",
    "account",
    "price",
    "market",
    "chart",
    "team",
    "project",
    "idea",
    "question",
    "answer",
    "docs",
    "example",
    "config",
    "error",
    "timeout",
    "latency",
    "connection",
    "websocket",
    "channel",
    "everyone",
    "somebody",
    "anything",
    "nothing",
    "probably",
    "definitely",
    "actually",
    "honestly",
    "awesome",
    "weird",
    "broken",
    "fixed",
    "restart",
    "logs",
];
const EMOJI: &[&str] = &["🙂", "😂", "👍", "🎉", "🔥", "🙏", "😅", "🚀", "👀", "❤️"];

/// English-like chat text of about `target` bytes (at least 20).
fn chat_text(rng: &mut Rng, target: usize, users: &[String]) -> String {
    let mut text = String::new();
    if rng.chance(0.08) {
        let _ = write!(text, "@{} ", users[rng.skewed(users.len())]);
    }
    let mut sentence_start = true;
    while text.len() < target.max(20) {
        let word = WORDS[rng.skewed(WORDS.len())];
        if !text.is_empty() && !text.ends_with(' ') {
            text.push(' ');
        }
        if sentence_start {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                text.extend(first.to_uppercase());
                text.push_str(chars.as_str());
            }
            sentence_start = false;
        } else if rng.chance(0.01) {
            // Now and then something quoted, which JSON escapes.
            let _ = write!(text, "\"{word}\"");
        } else {
            text.push_str(word);
        }
        let r = rng.unit();
        if r < 0.09 {
            text.push(*rng.pick(&['.', '.', '?', '!']));
            sentence_start = true;
        } else if r < 0.15 {
            text.push(',');
        }
    }
    if !sentence_start && rng.chance(0.6) {
        text.push(*rng.pick(&['.', '?', '!']));
    }
    if rng.chance(0.06) {
        text.push(' ');
        let emoji = *rng.pick(EMOJI);
        text.push_str(emoji);
    }
    text
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `{"type":"publication","channel":"chat:room42","offset":12345,"data":{"user":"alice_93","text":"...","ts":1732450000123}}`
fn chat_corpus(rng: &mut Rng) -> Vec<String> {
    let users: Vec<String> = (0..400)
        .map(|_| {
            let first = *rng.pick(FIRST_NAMES);
            let last = *rng.pick(LAST_NAMES);
            match rng.below(6) {
                0 => format!("{first}_{}", rng.range(1, 100)),
                1 => first.to_string(),
                2 => format!("{first}.{last}"),
                3 => format!("{first}{}", rng.range(1970, 2012)),
                4 => format!("{first}_{}", &last[..1]),
                _ => format!("{}{first}", last),
            }
        })
        .collect();
    let mut channels: Vec<(String, u64)> = Vec::new();
    for _ in 0..40 {
        channels.push((format!("chat:room{}", rng.range(1, 1000)), rng.range(1, 500_000)));
    }
    for topic in TOPICS {
        channels.push((format!("chat:{topic}"), rng.range(1, 500_000)));
    }
    for _ in 0..10 {
        channels.push((format!("chat:team-{}", rng.pick(LAST_NAMES)), rng.range(1, 500_000)));
    }
    let mut ts: u64 = 1_732_450_000_123;
    (0..MESSAGES)
        .map(|_| {
            ts += rng.range(0, 900);
            let channel = rng.skewed(channels.len());
            channels[channel].1 += 1;
            let (name, offset) = &channels[channel];
            let user = &users[rng.skewed(users.len())];
            // Mostly short lines, some long ones: 20 to about 200 bytes.
            let target = 20 + (rng.unit().powf(1.8) * 175.0) as usize;
            let text = json_escape(&chat_text(rng, target, &users));
            format!(
                r#"{{"type":"publication","channel":"{name}","offset":{offset},"data":{{"user":"{user}","text":"{text}","ts":{ts}}}}}"#
            )
        })
        .collect()
}

/// `(symbol, starting price, decimals)`.
const SYMBOLS: &[(&str, f64, u32)] = &[
    ("BTC-USD", 64123.88, 2),
    ("ETH-USD", 3421.17, 2),
    ("SOL-USD", 148.62, 2),
    ("BTC-EUR", 59210.40, 2),
    ("ETH-EUR", 3158.33, 2),
    ("XRP-USD", 0.5231, 4),
    ("ADA-USD", 0.4512, 4),
    ("DOGE-USD", 0.16231, 5),
    ("AVAX-USD", 35.41, 2),
    ("DOT-USD", 7.123, 3),
    ("LINK-USD", 14.521, 3),
    ("LTC-USD", 84.21, 2),
    ("BCH-USD", 452.10, 2),
    ("ATOM-USD", 8.912, 3),
    ("UNI-USD", 9.871, 3),
    ("XLM-USD", 0.11234, 5),
    ("ETC-USD", 26.71, 2),
    ("FIL-USD", 5.612, 3),
    ("ARB-USD", 1.0123, 4),
    ("NEAR-USD", 6.123, 3),
];

fn decimal(ticks: i64, decimals: u32) -> String {
    let scale = 10i64.pow(decimals);
    format!("{}.{:0width$}", ticks / scale, ticks % scale, width = decimals as usize)
}

/// `{"channel":"ticker:BTC-USD","data":{"bid":"64123.51","ask":"64124.02","last":"64123.88","vol":"1234.5678","ts":...}}`
fn ticker_corpus(rng: &mut Rng) -> Vec<String> {
    // Prices in ticks (10^-decimals), 24h volume in 10^-4 units.
    let mut state: Vec<(i64, i64)> = SYMBOLS
        .iter()
        .map(|&(_, price, decimals)| {
            let ticks = (price * 10f64.powi(decimals as i32)).round() as i64;
            (ticks, rng.range(10_000_000, 5_000_000_000) as i64)
        })
        .collect();
    let mut ts: u64 = 1_732_450_000_123;
    (0..MESSAGES)
        .map(|_| {
            ts += rng.range(0, 120);
            let i = rng.skewed(SYMBOLS.len());
            let (symbol, _, decimals) = SYMBOLS[i];
            let (last, vol) = &mut state[i];
            // A random walk of a few basis points per update.
            let step = (*last as f64 * 0.0004 * rng.normal()).round() as i64;
            *last = (*last + step).max(1);
            *vol += rng.range(0, 5_000_000) as i64;
            let spread = 1 + (*last as f64 * 0.0001 * rng.unit()) as i64;
            let bid = *last - rng.below(spread as usize + 1) as i64;
            let ask = bid + spread;
            format!(
                r#"{{"channel":"ticker:{symbol}","data":{{"bid":"{}","ask":"{}","last":"{}","vol":"{}","ts":{ts}}}}}"#,
                decimal(bid, decimals),
                decimal(ask, decimals),
                decimal(*last, decimals),
                decimal(*vol, 4),
            )
        })
        .collect()
}

// ---- modes and connections ---------------------------------------------------

struct Mode {
    /// Short name for looking results up.
    key: &'static str,
    name: &'static str,
    config: Option<DeflateConfig>,
}

fn modes() -> Vec<Mode> {
    let base = DeflateConfig::default().threshold(0);
    let no_takeover = base.clone().server_no_context_takeover(true).client_no_context_takeover(true);
    vec![
        Mode { key: "none", name: "no permessage-deflate", config: None },
        Mode { key: "t6", name: "takeover, level 6, 15-bit (default)", config: Some(base.clone()) },
        Mode { key: "t1", name: "takeover, level 1, 15-bit", config: Some(base.clone().level(1)) },
        Mode {
            key: "t6w10",
            name: "takeover, level 6, 10-bit windows",
            config: Some(base.clone().server_max_window_bits(10).client_max_window_bits(10)),
        },
        Mode { key: "n6", name: "no context takeover, level 6", config: Some(no_takeover.clone()) },
        Mode { key: "n1", name: "no context takeover, level 1", config: Some(no_takeover.level(1)) },
        Mode {
            key: "w8",
            name: "8-bit windows (sent uncompressed)",
            config: Some(base.server_max_window_bits(8).client_max_window_bits(8)),
        },
    ]
}

/// The opening-handshake negotiation, through header text both ways.
fn negotiate(config: &DeflateConfig) -> (DeflateParams, DeflateParams, String) {
    let offer_header = config.offer().to_string();
    let offers = parse_extensions([offer_header.as_bytes()]).expect("our offer parses");
    let (response, server) = config.negotiate(&offers).expect("the server accepts our offer");
    let response_header = response.to_string();
    let accepted = parse_extensions([response_header.as_bytes()]).expect("the response parses");
    let client = config.check_response(&accepted).expect("a valid response").expect("deflate accepted");
    (server, client, response_header)
}

fn pair(mode: &Mode) -> (Connection, Connection) {
    match &mode.config {
        None => (Connection::new(Role::Server), Connection::new(Role::Client)),
        Some(config) => {
            let (server, client, _) = negotiate(config);
            (
                Connection::with_deflate(Role::Server, Limits::default(), server),
                Connection::with_deflate(Role::Client, Limits::default(), client),
            )
        }
    }
}

/// Moves everything `output` holds to `wire`.
fn drain(output: &mut Output, wire: &mut Vec<u8>) {
    while output.has_remaining() {
        let chunk = output.chunk();
        wire.extend_from_slice(chunk);
        let n = chunk.len();
        output.advance(n);
    }
}

fn expect_text(event: Option<Result<Event, peregrine_proto::ProtocolError>>, original: &Utf8Bytes) {
    match event {
        Some(Ok(Event::Message(Message::Text(text)))) => {
            assert!(text == *original, "message changed in transit: {text:?} != {original:?}")
        }
        other => panic!("expected a text message, got {other:?}"),
    }
}

// ---- ratio and throughput ----------------------------------------------------

const RUNS: usize = 3;
/// The client is fed the wire bytes in reads of this size, as from a socket.
const READ_SIZE: usize = 16 * 1024;

struct Throughput {
    raw: usize,
    wire: usize,
    /// Best wall-clock times (`Instant`) over the whole corpus.
    compress: Duration,
    inflate: Duration,
    /// Heap held per received message while the application keeps them.
    retained_per_message: f64,
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
fn timed(f: impl FnOnce()) -> Duration {
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
fn cpu_share() -> Option<f64> {
    let wall = TIMED_WALL_NS.load(Ordering::Relaxed);
    (wall > 0).then(|| (TIMED_CPU_NS.load(Ordering::Relaxed) as f64 / wall as f64).min(1.0))
}

fn throughput(mode: &Mode, corpus: &[Utf8Bytes]) -> Throughput {
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

// ---- memory per connection ---------------------------------------------------

const CONNECTIONS: usize = 100;
const MEMORY_MESSAGES: usize = 50;

#[derive(Clone, Copy)]
struct Memory {
    /// Per connection, after the traffic with outputs written out.
    server: f64,
    client: f64,
    /// Per connection, after `release_idle_buffers`.
    server_idle: f64,
    client_idle: f64,
    /// Per connection before any traffic.
    fresh: f64,
    /// Still held once every connection is gone: per-thread pools.
    shared: usize,
}

/// Sends `message` from `from` to `to`, checks it, and leaves both outputs empty.
fn transfer(from: &mut Connection, to: &mut Connection, message: &Utf8Bytes) {
    from.send(Message::Text(message.clone())).expect("send");
    let output = from.output();
    while output.has_remaining() {
        let chunk = output.chunk();
        to.receive(chunk);
        let n = chunk.len();
        output.advance(n);
    }
    expect_text(to.next_event(), message);
    assert!(to.next_event().is_none() && !to.output().has_remaining());
}

/// Runs on a thread of its own, so the per-thread context pools start empty
/// and what they keep is counted.
fn memory(mode: &'static Mode, messages: Vec<Utf8Bytes>) -> Memory {
    std::thread::spawn(move || {
        let mut servers = Vec::with_capacity(CONNECTIONS);
        let mut clients = Vec::with_capacity(CONNECTIONS);
        // Clone once so the clones below allocate nothing (`Bytes` made from a
        // `Vec` allocates its shared header on the first clone).
        drop(messages.clone());
        let conn_struct = size_of::<Connection>() as f64;
        let per = |bytes: usize| bytes as f64 / CONNECTIONS as f64 + conn_struct;

        let base = live();
        for _ in 0..CONNECTIONS {
            let (server, client) = pair(mode);
            servers.push(server);
            clients.push(client);
        }
        let fresh = live().saturating_sub(base) as f64 / (2 * CONNECTIONS) as f64 + conn_struct;
        for (server, client) in servers.iter_mut().zip(&mut clients) {
            for message in &messages {
                // Both ways, so each side holds a compressor and a decompressor.
                transfer(server, client, message);
                transfer(client, server, message);
            }
        }
        let after_traffic = live();
        servers.iter_mut().for_each(Connection::release_idle_buffers);
        let server_buffers = after_traffic - live();
        let before = live();
        clients.iter_mut().for_each(Connection::release_idle_buffers);
        let client_buffers = before - live();
        let before = live();
        servers.clear();
        let server_rest = before - live();
        let before = live();
        clients.clear();
        let client_rest = before - live();
        Memory {
            server: per(server_buffers + server_rest),
            client: per(client_buffers + client_rest),
            server_idle: per(server_rest),
            client_idle: per(client_rest),
            fresh,
            shared: live().saturating_sub(base),
        }
    })
    .join()
    .expect("memory thread")
}

/// What one zlib-rs context is made of, by the sizes zlib-rs 0.6 allocates.
fn context_parts(compressor: bool, bits: u32) -> String {
    let window = 1usize << bits;
    if compressor {
        format!(
            "window {} + prev {} + hash heads 128 KiB + pending 64 KiB + symbols 48 KiB + state",
            kib((2 * window) as f64),
            kib((2 * window) as f64),
        )
    } else {
        "window 32 KiB (zlib-rs always allocates 15 bits) + state".to_string()
    }
}

/// Heap bytes of each zlib-rs context on its own, made as the codec makes
/// them (flate2, raw deflate), after one message went through.
fn contexts(sample: &[u8]) -> Vec<(String, usize, String)> {
    let mut rows = Vec::new();
    let mut out = Vec::with_capacity(4 * sample.len() + 64);
    for bits in [15u8, 10, 9] {
        let sizes: Vec<usize> = [6, 1]
            .into_iter()
            .map(|level| {
                let before = live();
                let mut compress = Compress::new_with_window_bits(Compression::new(level), false, bits);
                out.clear();
                compress.compress_vec(sample, &mut out, FlushCompress::Sync).expect("compress");
                live() - before
            })
            .collect();
        assert_eq!(sizes[0], sizes[1], "the level does not change the compressor's size");
        let what = format!("compressor, {bits}-bit window (any level)");
        rows.push((what, sizes[0], context_parts(true, bits.into())));
    }
    let mut inflated = Vec::with_capacity(sample.len() + 64);
    for bits in [15u8, 10, 9] {
        let before = live();
        let mut decompress = Decompress::new_with_window_bits(false, bits);
        inflated.clear();
        decompress.decompress_vec(&out, &mut inflated, FlushDecompress::Sync).expect("inflate");
        assert_eq!(inflated, sample);
        let what = format!("decompressor, {bits}-bit window");
        rows.push((what, live() - before, context_parts(false, bits.into())));
    }
    rows
}

// ---- report ------------------------------------------------------------------

fn kib(bytes: f64) -> String {
    if bytes >= 1024.0 { format!("{:.1} KiB", bytes / 1024.0) } else { format!("{bytes:.0} B") }
}

fn mb_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64() / 1e6
}

/// `YYYY-MM-DD` (UTC) from the system clock.
fn today() -> String {
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

struct Machine {
    cpus: usize,
    model: String,
    rustc: String,
    load: String,
}

fn machine() -> Machine {
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

struct Row {
    corpus: &'static str,
    mode: &'static Mode,
    result: Throughput,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.result.raw as f64 / self.result.wire as f64
    }
}

struct Report {
    rows: Vec<Row>,
    memory: Vec<(&'static Mode, Memory)>,
    contexts: Vec<(String, usize, String)>,
    chat_avg: f64,
    ticker_avg: f64,
    machine: Machine,
    cpu_share: Option<f64>,
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

    fn section(&self) -> String {
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

const START: &str = "<!-- deflate:start -->";
const END: &str = "<!-- deflate:end -->";

/// Replaces our section of docs/benchmarks.md (or appends it), leaving the
/// rest of the file as it is.
fn write_section(section: &str) -> std::io::Result<PathBuf> {
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

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build; run with --release for meaningful throughput");
    }
    let machine = machine();
    let mut rng = Rng(SEED);
    let chat: Vec<Utf8Bytes> = chat_corpus(&mut rng).into_iter().map(Utf8Bytes::from).collect();
    let ticker: Vec<Utf8Bytes> = ticker_corpus(&mut rng).into_iter().map(Utf8Bytes::from).collect();
    let avg = |c: &[Utf8Bytes]| c.iter().map(|m| m.len()).sum::<usize>() as f64 / c.len() as f64;
    let (chat_avg, ticker_avg) = (avg(&chat), avg(&ticker));
    eprintln!("corpus: chat {chat_avg:.0} B/message, ticker {ticker_avg:.0} B/message");
    eprintln!("  e.g. {}", chat[0].as_str());
    eprintln!("  e.g. {}", ticker[0].as_str());

    let modes: &'static [Mode] = modes().leak();
    for mode in modes {
        if let Some(config) = &mode.config {
            let (_, _, response) = negotiate(config);
            eprintln!("{:38} offer: {}  response: {response}", mode.name, config.offer());
        }
    }

    let mut rows = Vec::new();
    for (corpus_name, corpus) in [("chat", &chat), ("ticker", &ticker)] {
        for mode in modes {
            let result = throughput(mode, corpus);
            eprintln!(
                "{corpus_name:6} {:38} ratio {:5.2}  compress {:7.1} MB/s  inflate {:7.1} MB/s  \
                 kept {:>9}/received message",
                mode.name,
                result.raw as f64 / result.wire as f64,
                mb_per_s(result.raw, result.compress),
                mb_per_s(result.raw, result.inflate),
                kib(result.retained_per_message),
            );
            rows.push(Row { corpus: corpus_name, mode, result });
        }
    }
    let cpu_share = cpu_share();
    if let Some(share) = cpu_share {
        eprintln!("on a CPU {:.0} % of the timed wall-clock time", 100.0 * share);
    }

    let mut memory_rows = Vec::new();
    for mode in modes {
        let m = memory(mode, chat[..MEMORY_MESSAGES].to_vec());
        eprintln!(
            "memory {:38} server {:>10} ({:>10} idle)  client {:>10} ({:>10} idle)  fresh {:>8}  shared {:>10}",
            mode.name,
            kib(m.server),
            kib(m.server_idle),
            kib(m.client),
            kib(m.client_idle),
            kib(m.fresh),
            kib(m.shared as f64),
        );
        memory_rows.push((mode, m));
    }
    let contexts = contexts(chat[0].as_bytes());
    for (what, bytes, _) in &contexts {
        eprintln!("context {what:42} {}", kib(*bytes as f64));
    }

    let report = Report { rows, memory: memory_rows, contexts, chat_avg, ticker_avg, machine, cpu_share };
    let section = report.section();
    println!("{START}\n{section}{END}");
    match write_section(&section) {
        Ok(path) => eprintln!("wrote {}", path.display()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
