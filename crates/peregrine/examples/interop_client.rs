//! The permessage-deflate interop client (scripts/interop.sh):
//! `interop_client URL [options]`.
//!
//! Connects to an echo server (Node `ws`, Python `websockets`, our own),
//! checks what was negotiated, sends text and binary messages of 0 B to
//! 8 MiB, verifies every echo byte for byte, and closes with 1000 (checking
//! the peer answers 1000). Exits non-zero on any mismatch.
//!
//! Options:
//!   --no-deflate                 offer nothing and expect an uncompressed connection
//!   --no-context-takeover        request server_ and client_no_context_takeover
//!   --server-max-window-bits N   request a smaller server window (8-15)
//!   --client-max-window-bits N   offer a smaller client window (8-15)
//!   --threshold N                compress messages of N bytes and more (default 64)
//!   --expect PARAM               the server's answer must contain PARAM (repeatable),
//!                                e.g. `server_max_window_bits=12`
//!   --fragment BYTES             send longer messages in frames of BYTES (frame-level API)
//!   --sizes A,B,C                message sizes (default 0,1,125,126,65535,65536,1048576,8388608)
//!   --label NAME                 names the run in the summary line

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use peregrine::proto::extension::DeflateConfig;
use peregrine::proto::handshake::format_extensions;
use peregrine::proto::{DataKind, Event};
use peregrine::{
    ClientBuilder, CloseCode, CloseFrame, Config, Frames, Limits, MaybeTlsStream, Message, Utf8Bytes,
    WebSocket,
};
use tokio::net::TcpStream;

const DEFAULT_SIZES: [usize; 8] = [0, 1, 125, 126, 65535, 65536, 1 << 20, 8 << 20];
/// Longest wait for one echo (an 8 MiB message both ways, compressed twice).
const ECHO_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Options {
    url: String,
    deflate: Option<DeflateConfig>,
    expect: Vec<String>,
    sizes: Vec<usize>,
    fragment: usize,
    label: String,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: interop_client URL [options]")?;
    let mut deflate = Some(DeflateConfig::default());
    let mut expect = Vec::new();
    let mut sizes = DEFAULT_SIZES.to_vec();
    let mut label = String::from("interop_client");
    let mut fragment = 0;
    let number = |flag: &str, value: Option<String>| -> Result<usize, String> {
        value.as_deref().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{flag} needs a number"))
    };
    while let Some(arg) = args.next() {
        let config = |d: &mut Option<DeflateConfig>, f: &dyn Fn(DeflateConfig) -> DeflateConfig| {
            *d = d.take().map(f);
        };
        match arg.as_str() {
            "--no-deflate" => deflate = None,
            "--no-context-takeover" => {
                config(&mut deflate, &|d| d.server_no_context_takeover(true).client_no_context_takeover(true))
            }
            "--server-max-window-bits" => {
                let bits = number(&arg, args.next())? as u8;
                config(&mut deflate, &|d| d.server_max_window_bits(bits));
            }
            "--client-max-window-bits" => {
                let bits = number(&arg, args.next())? as u8;
                config(&mut deflate, &|d| d.client_max_window_bits(bits));
            }
            "--threshold" => {
                let bytes = number(&arg, args.next())?;
                config(&mut deflate, &|d| d.threshold(bytes));
            }
            "--expect" => expect.push(args.next().ok_or("--expect needs a parameter")?),
            "--sizes" => {
                let list = args.next().ok_or("--sizes needs a list")?;
                sizes = list
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--sizes {list}: {e}"))?;
            }
            "--fragment" => fragment = number(&arg, args.next())?,
            "--label" => label = args.next().ok_or("--label needs a name")?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(Options { url, deflate, expect, sizes, fragment, label })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("interop_client: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&options).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{}: FAILED: {e}", options.label);
            println!("{}: 0 passed, 1 failed", options.label);
            ExitCode::FAILURE
        }
    }
}

/// Runs every message; returns the number of failed checks.
async fn run(options: &Options) -> Result<usize, String> {
    let start = Instant::now();
    let limits = Limits::default().max_message_size(64 << 20).max_frame_size(64 << 20);
    let config = Config::default().limits(limits).deflate(options.deflate.clone());
    let (ws, response) = ClientBuilder::new(options.url.clone())
        .config(config)
        .connect()
        .await
        .map_err(|e| format!("connect to {}: {e}", options.url))?;
    let answer = format_extensions(response.extensions());
    eprintln!("{}: connected to {}; Sec-WebSocket-Extensions: {answer:?}", options.label, options.url);

    let (mut passed, mut failed) = (0usize, 0usize);
    let mut check = |ok: bool, what: String| {
        if ok {
            passed += 1;
        } else {
            failed += 1;
            eprintln!("{}: FAILED: {what}", options.label);
        }
    };
    let want_deflate = options.deflate.is_some();
    check(
        ws.is_compressed() == want_deflate,
        format!("permessage-deflate negotiated: {}, wanted {want_deflate}", ws.is_compressed()),
    );
    for param in &options.expect {
        let found = answer.split(';').any(|p| p.trim().eq_ignore_ascii_case(param));
        check(found, format!("the answer {answer:?} has no {param}"));
    }
    let mut ws = if options.fragment > 0 {
        Conn::Frames { frames: ws.into_frames(), fragment: options.fragment }
    } else {
        Conn::Whole(ws)
    };

    let (mut sent_bytes, mut seed) = (0usize, 1u32);
    for &size in &options.sizes {
        for text in [true, false] {
            seed = seed.wrapping_add(0x9e37_79b9);
            let message = if text {
                Message::text(String::from_utf8(json_like(size, seed)).expect("ASCII"))
            } else {
                Message::binary(random_ish(size, seed))
            };
            let kind = if text { "text" } else { "binary" };
            let sent_at = Instant::now();
            if let Err(e) = ws.send(message.clone()).await {
                return Err(format!("sending {kind} of {size} B: {e}"));
            }
            let echo = match tokio::time::timeout(ECHO_TIMEOUT, next_data(&mut ws)).await {
                Ok(Ok(echo)) => echo,
                Ok(Err(e)) => return Err(format!("waiting for the echo of {kind} {size} B: {e}")),
                Err(_) => return Err(format!("no echo of {kind} {size} B within {ECHO_TIMEOUT:?}")),
            };
            sent_bytes += size;
            let same_kind = matches!(
                (&message, &echo),
                (Message::Text(_), Message::Text(_)) | (Message::Binary(_), Message::Binary(_))
            );
            let (a, b) = (message.payload(), echo.payload());
            let ok = same_kind && a == b;
            check(ok, describe_mismatch(kind, a, &echo));
            if ok && size >= 1 << 20 {
                eprintln!("{}: {kind} {size} B echoed in {:?}", options.label, sent_at.elapsed());
            }
        }
    }

    // Close with 1000 and check the peer answers with 1000.
    ws.send_close(Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "interop done"))))
        .await
        .map_err(|e| format!("sending the close frame: {e}"))?;
    let mut peer_close = None;
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = ws.recv().await {
            match event {
                Ok(Message::Close(frame)) => peer_close = Some(frame.map(|f| f.code.as_u16())),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await;
    check(matches!(drained, Ok(Ok(()))), format!("the close handshake ended with {drained:?}"));
    check(peer_close == Some(Some(1000)), format!("the peer answered the close with {peer_close:?}"));

    println!(
        "{}: {} ({answer:?}), {} messages, {:.1} MiB echoed in {:.2} s: {passed} passed, {failed} failed",
        options.label,
        options.url,
        options.sizes.len() * 2,
        sent_bytes as f64 / f64::from(1 << 20),
        start.elapsed().as_secs_f64(),
    );
    Ok(failed)
}

type Tcp = MaybeTlsStream<TcpStream>;

/// The connection: whole messages, or frames (`--fragment`).
enum Conn {
    Whole(WebSocket<Tcp>),
    Frames { frames: Frames<Tcp>, fragment: usize },
}

impl Conn {
    /// Sends a data message, in frames of at most `fragment` bytes in frame mode.
    async fn send(&mut self, message: Message) -> peregrine::Result<()> {
        let (frames, fragment) = match self {
            Conn::Whole(ws) => return ws.send(message).await,
            Conn::Frames { frames, fragment } => (frames, *fragment),
        };
        let (kind, mut rest) = match message {
            Message::Text(text) => (DataKind::Text, text.into_bytes()),
            Message::Binary(data) => (DataKind::Binary, data),
            control => return frames.send(control).await,
        };
        loop {
            let piece = rest.split_to(rest.len().min(fragment));
            let fin = rest.is_empty();
            frames.send_fragment(kind, piece, fin).await?;
            if fin {
                return Ok(());
            }
        }
    }

    async fn send_close(&mut self, close: Message) -> peregrine::Result<()> {
        match self {
            Conn::Whole(ws) => ws.send(close).await,
            Conn::Frames { frames, .. } => frames.send(close).await,
        }
    }

    /// The next message, reassembled from its frames in frame mode.
    async fn recv(&mut self) -> Option<Result<Message, String>> {
        let frames = match self {
            Conn::Whole(ws) => return ws.recv().await.map(|r| r.map_err(|e| e.to_string())),
            Conn::Frames { frames, .. } => frames,
        };
        let mut assembled = BytesMut::new();
        loop {
            match frames.recv().await? {
                Ok(Event::Message(message)) => return Some(Ok(message)),
                Ok(Event::Fragment(fragment)) => {
                    assembled.extend_from_slice(&fragment.payload);
                    if !fragment.fin {
                        continue;
                    }
                    let payload = assembled.split().freeze();
                    return Some(Ok(match fragment.kind {
                        DataKind::Binary => Message::Binary(payload),
                        DataKind::Text => match Utf8Bytes::try_from(payload) {
                            Ok(text) => Message::Text(text),
                            Err(_) => return Some(Err("the text echo is not UTF-8".into())),
                        },
                    }));
                }
                Err(e) => return Some(Err(e.to_string())),
            }
        }
    }
}

/// The next text or binary message (control frames are skipped).
async fn next_data(ws: &mut Conn) -> Result<Message, String> {
    loop {
        match ws.recv().await {
            Some(Ok(message)) if message.is_data() => return Ok(message),
            Some(Ok(Message::Close(frame))) => return Err(format!("the peer closed: {frame:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Err("the connection ended".into()),
        }
    }
}

fn describe_mismatch(kind: &str, sent: &[u8], echo: &Message) -> String {
    let got = echo.payload();
    let echo_kind = match echo {
        Message::Text(_) => "text",
        Message::Binary(_) => "binary",
        _ => "control",
    };
    let first_difference = sent.iter().zip(got).position(|(a, b)| a != b);
    format!(
        "{kind} of {} B came back as {echo_kind} of {} B (first difference at {first_difference:?})",
        sent.len(),
        got.len()
    )
}

/// A small xorshift generator: the same bytes on every run.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

/// `size` bytes of JSON-like ASCII (chat messages and ticker updates),
/// compressible as realtime traffic is.
fn json_like(size: usize, seed: u32) -> Vec<u8> {
    const USERS: [&str; 4] = ["ada", "grace", "linus", "barbara"];
    const SYMBOLS: [&str; 4] = ["BTC-USD", "ETH-USD", "EUR-USD", "AAPL"];
    const WORDS: [&str; 8] = ["hello", "deflate", "window", "ticker", "price", "room", "ok", "ship it"];
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(size + 160);
    out.push(b'[');
    let mut id = 0u32;
    while out.len() < size {
        id += 1;
        let r = rng.next();
        let record = if r.is_multiple_of(2) {
            format!(
                r#"{{"type":"chat","id":{id},"user":"{}","room":"lobby-{}","text":"{} {} {}"}},"#,
                USERS[(r >> 1) as usize % 4],
                r % 7,
                WORDS[(r >> 3) as usize % 8],
                WORDS[(r >> 6) as usize % 8],
                r % 1000,
            )
        } else {
            format!(
                r#"{{"type":"tick","id":{id},"symbol":"{}","bid":{}.{:02},"ask":{}.{:02},"ts":{}}},"#,
                SYMBOLS[(r >> 1) as usize % 4],
                40000 + r % 500,
                r % 100,
                40000 + r % 500 + 1,
                (r >> 8) % 100,
                1_700_000_000_000u64 + u64::from(id) * 17,
            )
        };
        out.extend_from_slice(record.as_bytes());
    }
    out.truncate(size);
    out
}

/// `size` bytes that are mostly random (incompressible) with a repeated
/// block now and then, so both stored and compressed blocks occur.
fn random_ish(size: usize, seed: u32) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let block = out.len() / 256;
        if block % 4 == 3 {
            let from = out.len() - 256;
            for i in 0..256 {
                out.push(out[from + i] ^ (i as u8 & 1));
            }
        } else {
            for _ in 0..64 {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
        }
    }
    out.truncate(size);
    out
}
