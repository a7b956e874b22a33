//! `peregrine connect`: an interactive WebSocket client that shows frames and
//! explains failures.
//!
//! - [`transport`] opens the connection step by step and [`diagnose`] says
//!   why a step failed;
//! - [`tap`] and [`frames`] implement `--show-frames`;
//! - [`input`] reads lines (piped or from the line editor) and [`console`]
//!   writes, keeping stdout for received messages.

mod console;
mod diagnose;
mod frames;
mod input;
mod session;
mod tap;
mod transport;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use peregrine::proto::extension::DeflateConfig;
use peregrine::tls::TlsConnector;
use peregrine::{ClientBuilder, CloseCode, Config, Limits};

use self::console::Console;
use self::input::InputFormat;
use self::transport::Target;

/// How received binary messages are written outside the prompt (piped
/// input or output, -m or --file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BinaryOutput {
    /// Lowercase hex, one message per line.
    Hex,
    /// Base64, one message per line.
    Base64,
}

/// How received text messages are written outside the prompt (piped input
/// or output, -m or --file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TextOutput {
    /// As received, followed by a newline: a message that contains line
    /// breaks takes several lines.
    Raw,
    /// As a JSON string literal ("a\nb"), so every message is exactly one
    /// line, whatever it contains. Binary messages stay as --binary-output
    /// writes them, which never starts with a quote.
    JsonString,
}

/// Arguments of `peregrine connect` (boxed: they are many, and the
/// subcommand enum holds one of each).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
On a terminal, lines are sent as they are typed (history in ~/.peregrine_history; /help lists
the commands). With stdin piped, each line is one message; at the end of input a close frame is
sent and the server's close is awaited. Received messages go to stdout (prefixed with '< ' on a
terminal; --text-output json-string keeps text with line breaks to one line per message); status
lines, frames and errors go to stderr.

Exit status: 0 after a clean close, 1 when the connection failed or ended abnormally.

Examples:
  peregrine connect ws://127.0.0.1:9001
  echo '{\"type\":\"ping\"}' | peregrine connect wss://example.com/ws --token \"$TOKEN\"
  peregrine connect ws://localhost:9001 --show-frames -m hello
  peregrine connect ws://localhost:9001 --deflate --show-frames -m \"$(cat event.json)\"
  peregrine connect wss://localhost:8443 --ca ca.pem --file image.png")]
pub struct ConnectArgs {
    #[command(flatten)]
    options: Box<ConnectOptions>,
}

/// The options of `peregrine connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectOptions {
    /// The ws:// or wss:// URL to connect to.
    url: String,

    /// Adds a request header, as 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,

    /// Offers a subprotocol (repeatable, in preference order).
    #[arg(short = 'p', long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,

    /// Sends an Origin header (browsers always do; servers often check it).
    #[arg(long, value_name = "ORIGIN")]
    origin: Option<String>,

    /// Sends 'Authorization: Bearer TOKEN'.
    #[arg(long, value_name = "TOKEN", env = "PEREGRINE_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Sends lines as binary messages instead of text.
    #[arg(long)]
    binary: bool,

    /// With the realtime protocol in a binary encoding (-p peregrine.msgpack or
    /// peregrine.protobuf): type commands as JSON lines, as for peregrine.json, and see
    /// what the server sends as JSON lines; each is translated to and from the encoding the
    /// server picked.
    #[arg(long, conflicts_with_all = ["binary", "input", "file"])]
    as_json: bool,

    /// How lines are decoded: text as is, or hex / base64 (sent as binary).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = InputFormat::Text)]
    input: InputFormat,

    /// How received binary messages are written outside the prompt (piped
    /// input or output, -m or --file).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = BinaryOutput::Hex)]
    binary_output: BinaryOutput,

    /// How received text messages are written outside the prompt (json-string:
    /// one line per message, even for text with line breaks; binary lines
    /// never start with a quote).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = TextOutput::Raw)]
    text_output: TextOutput,

    /// Sends this message instead of reading stdin, then closes (repeatable).
    #[arg(short = 'm', long = "message", value_name = "TEXT")]
    messages: Vec<String>,

    /// Sends the file as one binary message instead of reading stdin, then closes.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,

    /// Sends a ping every SECS seconds and prints the round-trip time.
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs)]
    ping_interval: Option<Duration>,

    /// The close code sent at the end of input.
    #[arg(long, value_name = "CODE", default_value = "1000", value_parser = parse_close_code)]
    close_code: CloseCode,

    /// The close reason sent at the end of input.
    #[arg(long, value_name = "TEXT", default_value = "", hide_default_value = true, value_parser = input::parse_close_reason)]
    close_reason: String,

    /// After the end of input, keep receiving for SECS seconds before closing.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    linger: Option<Duration>,

    /// Prints every frame both ways (header fields and a hex dump), and the
    /// handshake, on stderr; compressed messages are also shown inflated.
    #[arg(long)]
    show_frames: bool,

    /// Offers permessage-deflate (RFC 7692), as browsers do; the status line
    /// says whether the server accepted it. Messages under 64 bytes are sent
    /// uncompressed.
    #[arg(long)]
    deflate: bool,

    /// wss://: accepts any server certificate (testing only).
    #[arg(short = 'k', long)]
    insecure: bool,

    /// wss://: also trusts the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,

    /// wss://: presents this client certificate chain (PEM); needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,

    /// wss://: the client certificate's private key (PEM); needs --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,

    /// Turns off the keepalive pings that detect a vanished server.
    #[arg(long)]
    no_keepalive: bool,

    /// Limit for DNS, TCP, TLS and the upgrade together.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_positive_secs)]
    connect_timeout: Duration,

    /// How long to wait for the server's close frame after ours.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_positive_secs)]
    close_timeout: Duration,

    /// The largest message accepted from the server, in bytes.
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<usize>,

    /// Prints no status lines (errors and explanations are still shown).
    #[arg(short, long)]
    quiet: bool,
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text}: {e}"))
}

/// Seconds that must be more than zero (an interval or a time limit).
fn parse_positive_secs(text: &str) -> Result<Duration, String> {
    let secs = parse_secs(text)?;
    if secs.is_zero() {
        return Err("must be more than 0 seconds".to_owned());
    }
    Ok(secs)
}

fn parse_close_code(text: &str) -> Result<CloseCode, String> {
    input::parse_close_code(text)
}

/// Everything `connect` needs, checked and loaded before connecting.
#[derive(Debug)]
struct Plan {
    target: Target,
    options: transport::Options,
    sent: diagnose::Sent,
    /// Prepared messages (`--message`, `--file`) replace stdin.
    prepared: Option<Vec<peregrine::Message>>,
}

fn plan(args: &ConnectOptions, console: &Arc<Console>) -> anyhow::Result<Plan> {
    let target = Target::parse(&args.url)?;
    let mut config =
        Config::default().handshake_timeout(args.connect_timeout).close_timeout(args.close_timeout);
    if args.no_keepalive {
        config = config.ping_interval(None);
    }
    if let Some(max) = args.max_message_size {
        config = config.limits(Limits::default().max_message_size(max).max_frame_size(max));
    }
    if args.deflate {
        config = config.deflate(Some(DeflateConfig::default()));
    }
    let mut builder = ClientBuilder::new(args.url.clone()).config(config);
    let mut sent = diagnose::Sent { origin: args.origin.clone(), ..Default::default() };
    for header in &args.headers {
        let (name, value) =
            header.split_once(':').with_context(|| format!("header {header:?} is not 'Name: value'"))?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("Authorization") {
            sent.credentials = true;
        }
        if name.eq_ignore_ascii_case("Origin") && sent.origin.is_none() {
            sent.origin = Some(value.trim().to_owned());
        }
        check_header(name, value.trim()).with_context(|| format!("-H {header:?}"))?;
        builder = builder.header(name, value.trim());
    }
    if let Some(token) = &args.token {
        builder = builder.header("Authorization", format!("Bearer {token}"));
        sent.credentials = true;
    }
    if let Some(origin) = &args.origin {
        builder = builder.origin(origin.clone());
    }
    for protocol in &args.protocols {
        builder = builder.protocol(protocol.clone());
        sent.protocols.push(protocol.clone());
    }
    let tls = if target.tls { Some(tls_connector(args)?) } else { None };
    let prepared = prepared_messages(args)?;
    let options = transport::Options {
        builder,
        tls,
        timeout: args.connect_timeout,
        show_frames: args.show_frames.then(|| console.clone()),
    };
    Ok(Plan { target, options, sent, prepared })
}

/// Refuses a header that cannot be sent (a bad name or value, or one the
/// handshake sets itself) before connecting, not after.
fn check_header(name: &str, value: &str) -> anyhow::Result<()> {
    let request = peregrine::proto::handshake::ClientRequest::new("localhost", "/").with_header(name, value);
    request.encode(&mut bytes::BytesMut::new())?;
    Ok(())
}

fn tls_connector(args: &ConnectOptions) -> anyhow::Result<TlsConnector> {
    let mut builder = TlsConnector::builder().webpki_roots().native_roots();
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading --ca {}", ca.display()))?;
        builder = builder.ca_pem(&pem).map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?;
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let cert_pem = std::fs::read(cert).with_context(|| format!("reading --cert {}", cert.display()))?;
        let key_pem = std::fs::read(key).with_context(|| format!("reading --key {}", key.display()))?;
        builder = builder.client_cert_pem(&cert_pem, &key_pem).map_err(|e| {
            let (cert, key) = (format!("--cert {}", cert.display()), format!("--key {}", key.display()));
            let text = peregrine::tls::pem_pair_problem(&e, &cert, &key)
                .unwrap_or_else(|| format!("{cert} with {key}: {e}"));
            anyhow::anyhow!(text)
        })?;
    }
    if args.insecure {
        builder = builder.danger_accept_invalid_certs();
    }
    Ok(builder.build()?)
}

fn prepared_messages(args: &ConnectOptions) -> anyhow::Result<Option<Vec<peregrine::Message>>> {
    if args.messages.is_empty() && args.file.is_none() {
        return Ok(None);
    }
    let mut messages = Vec::new();
    for text in &args.messages {
        messages.push(input::decode(text.as_bytes(), args.input, args.binary).map_err(anyhow::Error::msg)?);
    }
    if let Some(path) = &args.file {
        let data = std::fs::read(path).with_context(|| format!("reading --file {}", path.display()))?;
        messages.push(peregrine::Message::binary(data));
    }
    Ok(Some(messages))
}

/// Runs `peregrine connect`.
pub fn run(args: ConnectArgs) -> anyhow::Result<()> {
    let args = *args.options;
    let console = Arc::new(Console::new(args.quiet));
    let plan = plan(&args, &console)?;
    // The line editor needs the terminal both ways; with stdout redirected,
    // typed lines are read as piped ones and stdout stays clean.
    let interactive =
        plan.prepared.is_none() && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let terminal = if interactive { session::TerminalState::save() } else { None };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let outcome = runtime.block_on(session::run(&args, plan, console.clone(), interactive));
    // The stdin reader and the line editor are blocked on input: leave them.
    runtime.shutdown_background();
    if let Some(terminal) = terminal {
        terminal.restore_if(outcome.editor_running);
    }
    if outcome.code != 0 {
        std::process::exit(outcome.code);
    }
    Ok(())
}
