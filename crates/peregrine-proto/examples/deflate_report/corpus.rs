//! The deterministic corpus: chat messages and ticker updates as JSON, from
//! a seeded PRNG, so byte counts and ratios are the same on every run.

use std::fmt::Write as _;

const MESSAGES: usize = 10_000;
pub(crate) const SEED: u64 = 0x5eed_d3f1_a7e5_0001;

/// SplitMix64: tiny, fast, and good enough for test data.
pub(crate) struct Rng(pub(crate) u64);

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
pub(crate) fn chat_corpus(rng: &mut Rng) -> Vec<String> {
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
pub(crate) fn ticker_corpus(rng: &mut Rng) -> Vec<String> {
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
