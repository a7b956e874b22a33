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

mod alloc;
mod corpus;
mod memory;
mod report;
mod throughput;

use bytes::Buf;
use peregrine_proto::extension::{DeflateConfig, DeflateParams};
use peregrine_proto::handshake::parse_extensions;
use peregrine_proto::output::Output;
use peregrine_proto::{Connection, Event, Limits, Message, Role, Utf8Bytes};

use corpus::{Rng, SEED, chat_corpus, ticker_corpus};
use memory::{MEMORY_MESSAGES, contexts, memory};
use report::{END, Report, Row, START, kib, machine, mb_per_s, write_section};
use throughput::{cpu_share, throughput};

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
