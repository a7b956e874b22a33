//! What `connect` sends: lines from stdin (piped), from the line editor
//! (terminal, with commands), or messages given on the command line; and the
//! decoding of a line into a message (`--input text|hex|base64`).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::thread::JoinHandle;

use base64::Engine as _;
use bytes::Bytes;
use peregrine::proto::close::MAX_REASON_LEN;
use peregrine::proto::frame::MAX_CONTROL_PAYLOAD;
use peregrine::{CloseCode, Message};
use tokio::sync::mpsc;

use super::console::Printer;

/// How input lines become messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// Each line is the message itself.
    Text,
    /// Each line is hex (spaces and colons allowed) and is sent as binary.
    Hex,
    /// Each line is base64 and is sent as binary.
    Base64,
}

/// One event from the input side.
#[derive(Debug)]
pub enum Input {
    /// A line, without its line ending.
    Line(Vec<u8>),
    /// A whole message prepared in advance (`--message`, `--file`).
    Message(Message),
    /// The input ended (EOF, Ctrl-D, or the last prepared message).
    Eof,
    /// Ctrl-C at the prompt.
    Interrupted,
}

/// What one line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Send a message.
    Send(Message),
    /// Send a ping with this payload and report the round trip.
    Ping(Option<Bytes>),
    /// Start the close handshake.
    Close(CloseCode, String),
    /// Close normally and leave.
    Quit,
    /// Show the commands.
    Help,
    /// Nothing to do (an empty line at the prompt).
    Nothing,
}

/// The text `/help` prints.
pub const HELP: &str = "\
commands:
  /ping [payload]          send a ping; the round-trip time is shown when the pong returns
  /close [code] [reason]   start the close handshake (default 1000)
  /binary <hex>            send a binary message, e.g. /binary 01 02 ff
  /quit                    close normally (1000) and exit (also Ctrl-D, Ctrl-C)
  /help                    this list
  //text                   send a line that starts with '/' (one '/' is removed)
anything else is sent as a message (see --input and --binary)";

/// Turns a line into a command. Commands (`/…`) are only recognised at the
/// prompt; piped lines are always data.
pub fn parse_line(line: &[u8], format: InputFormat, binary: bool, commands: bool) -> Result<Command, String> {
    if !commands {
        return decode(line, format, binary).map(Command::Send);
    }
    if line.is_empty() {
        return Ok(Command::Nothing);
    }
    if line.starts_with(b"//") {
        return decode(&line[1..], format, binary).map(Command::Send);
    }
    if !line.starts_with(b"/") {
        return decode(line, format, binary).map(Command::Send);
    }
    let text = String::from_utf8_lossy(line);
    let (name, rest) = match text[1..].split_once(char::is_whitespace) {
        Some((name, rest)) => (name.to_owned(), rest.trim().to_owned()),
        None => (text[1..].to_owned(), String::new()),
    };
    match name.as_str() {
        "ping" if rest.len() > MAX_CONTROL_PAYLOAD => {
            Err(format!("a ping payload is {} bytes; a ping holds at most {MAX_CONTROL_PAYLOAD}", rest.len()))
        }
        "ping" => Ok(Command::Ping((!rest.is_empty()).then(|| Bytes::from(rest.into_bytes())))),
        "close" => {
            let (code, reason) = match rest.split_once(char::is_whitespace) {
                Some((code, reason)) => (code, reason.trim()),
                None => (rest.as_str(), ""),
            };
            let code = if code.is_empty() { CloseCode::NORMAL } else { parse_close_code(code)? };
            Ok(Command::Close(code, parse_close_reason(reason)?))
        }
        "binary" => decode_hex(&rest).map(|b| Command::Send(Message::binary(b))),
        "quit" | "exit" => Ok(Command::Quit),
        "help" | "?" => Ok(Command::Help),
        other => Err(format!("unknown command /{other} (try /help; send '//{other}' to send it as text)")),
    }
}

/// A close code that may be sent in a close frame.
pub fn parse_close_code(text: &str) -> Result<CloseCode, String> {
    let code: u16 =
        text.parse().map_err(|_| format!("{text:?} is not a close code (a number such as 1000)"))?;
    let code = CloseCode::from(code);
    if !code.is_sendable() {
        return Err(format!("close code {code} cannot be sent: use 1000-1003, 1007-1014 or 3000-4999"));
    }
    Ok(code)
}

/// A close reason that fits in a close frame: at most 123 bytes of UTF-8
/// (RFC 6455 §5.5: 125 bytes of payload, 2 of them the code).
pub fn parse_close_reason(text: &str) -> Result<String, String> {
    if text.len() > MAX_REASON_LEN {
        return Err(format!(
            "the close reason is {} bytes; a close frame holds at most {MAX_REASON_LEN}",
            text.len()
        ));
    }
    Ok(text.to_owned())
}

/// Characters of an offending line quoted in an error.
const QUOTED: usize = 40;

/// Base64 with or without its `=` padding, as both are common.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Decodes a data line according to `--input` and `--binary`.
pub fn decode(line: &[u8], format: InputFormat, binary: bool) -> Result<Message, String> {
    match format {
        InputFormat::Hex => decode_hex(&String::from_utf8_lossy(line)).map(Message::binary),
        InputFormat::Base64 => BASE64
            .decode(line.trim_ascii())
            .map(Message::binary)
            .map_err(|e| format!("invalid base64 ({e}) in {}", quote(&String::from_utf8_lossy(line)))),
        InputFormat::Text if binary => Ok(Message::binary(line.to_vec())),
        InputFormat::Text => match String::from_utf8(line.to_vec()) {
            Ok(text) => Ok(Message::text(text)),
            Err(_) => Err("the line is not valid UTF-8: use --binary to send it as binary".to_owned()),
        },
    }
}

/// Hex digits to bytes; whitespace, `:` and `-` separators are allowed, and
/// a `0x` before the whole line or before each separated group.
pub fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let mut digits = Vec::with_capacity(text.len());
    for group in text.split([' ', '\t', ':', '-']) {
        digits.extend_from_slice(group.strip_prefix("0x").unwrap_or(group).as_bytes());
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits in {}", quote(text)));
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| format!("invalid hex in {}", quote(text)))?;
            u8::from_str_radix(s, 16).map_err(|_| format!("invalid hex {s:?} in {}", quote(text)))
        })
        .collect()
}

/// A line quoted in an error: its start only, when long.
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTED) {
        Some((end, _)) => format!("{:?}... ({} bytes)", &text[..end], text.len()),
        None => format!("{text:?}"),
    }
}

/// Reads stdin line by line on its own thread (stdin has no async reads
/// worth having); the bounded channel stops reading while the connection is
/// behind, so a large input is not buffered whole.
pub fn spawn_stdin(tx: mpsc::Sender<Input>) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    strip_line_ending(&mut line);
                    if tx.blocking_send(Input::Line(std::mem::take(&mut line))).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.blocking_send(Input::Eof);
    });
}

fn strip_line_ending(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
}

/// Sends prepared messages, then the end of input.
pub fn spawn_prepared(tx: mpsc::Sender<Input>, messages: Vec<Message>) {
    tokio::spawn(async move {
        for message in messages {
            if tx.send(Input::Message(message)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Input::Eof).await;
    });
}

/// Most history entries kept in the history file.
const HISTORY_LIMIT: usize = 1000;

/// The history file, `~/.peregrine_history`.
fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".peregrine_history"))
}

/// Starts the line editor on its own thread. Returns its printer (to print
/// above the prompt) and the thread, which ends after Ctrl-D or Ctrl-C.
pub fn spawn_editor(tx: mpsc::Sender<Input>) -> anyhow::Result<(Printer, JoinHandle<()>)> {
    let (printer_tx, printer_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let config = rustyline::Config::builder().auto_add_history(false).max_history_size(HISTORY_LIMIT);
        let editor = config.and_then(|c| rustyline::DefaultEditor::with_config(c.build()));
        let mut editor = match editor {
            Ok(editor) => editor,
            Err(e) => {
                let _ = printer_tx.send(Err(e));
                return;
            }
        };
        match editor.create_external_printer() {
            Ok(printer) => {
                let _ = printer_tx.send(Ok(Box::new(printer) as Printer));
            }
            Err(e) => {
                let _ = printer_tx.send(Err(e));
                return;
            }
        }
        let history = history_path();
        if let Some(path) = &history {
            load_history(&mut editor, path);
        }
        loop {
            let event = match editor.readline("> ") {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                        if let Some(path) = &history {
                            append_history(path, &line);
                        }
                    }
                    Input::Line(line.into_bytes())
                }
                Err(rustyline::error::ReadlineError::Interrupted) => Input::Interrupted,
                Err(_) => Input::Eof,
            };
            let last = !matches!(event, Input::Line(_));
            if tx.blocking_send(event).is_err() || last {
                return;
            }
        }
    });
    let printer = printer_rx.recv().map_err(|_| anyhow::anyhow!("the line editor did not start"))??;
    Ok((printer, thread))
}

fn load_history(editor: &mut rustyline::DefaultEditor, path: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(path) else { return };
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let start = lines.len().saturating_sub(HISTORY_LIMIT);
    for line in &lines[start..] {
        let _ = editor.add_history_entry(*line);
    }
    if start > 0 {
        // Keep the file bounded: rewrite it with the entries kept.
        let _ = std::fs::write(path, lines[start..].join("\n") + "\n");
    }
}

fn append_history(path: &std::path::Path, line: &str) {
    if line.contains('\n') {
        return;
    }
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_accepts_separators_and_rejects_odd_digits() {
        assert_eq!(decode_hex("01 02:ff-0A"), Ok(vec![1, 2, 0xff, 0x0a]));
        assert_eq!(decode_hex("0xdeadbeef"), Ok(vec![0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(decode_hex("0x01 0x02"), Ok(vec![1, 2]));
        assert!(decode_hex("abc").is_err());
        assert!(decode_hex("zz").is_err());
    }

    #[test]
    fn a_long_bad_line_is_quoted_by_its_start() {
        let line = "zz".repeat(500_000);
        let error = decode_hex(&line).unwrap_err();
        assert!(error.len() < 120 && error.ends_with("... (1000000 bytes)"), "{error}");
    }

    #[test]
    fn base64_with_or_without_padding() {
        for line in [&b"aGk="[..], b"aGk"] {
            assert_eq!(decode(line, InputFormat::Base64, false), Ok(Message::binary(&b"hi"[..])));
        }
        let error = decode(b"!!!", InputFormat::Base64, false).unwrap_err();
        assert!(error.contains("\"!!!\""), "{error}");
    }

    #[test]
    fn close_reasons_must_fit_a_close_frame() {
        let parse = |line: &str| parse_line(line.as_bytes(), InputFormat::Text, false, true);
        let longest = "r".repeat(123);
        assert_eq!(parse(&format!("/close 4000 {longest}")), Ok(Command::Close(4000.into(), longest)));
        let error = parse(&format!("/close 4000 {}", "r".repeat(124))).unwrap_err();
        assert!(error.contains("124 bytes") && error.contains("at most 123"), "{error}");
    }

    #[test]
    fn lines_decode_by_input_format() {
        assert_eq!(decode(b"hi", InputFormat::Text, false), Ok(Message::text("hi")));
        assert_eq!(decode(b"hi", InputFormat::Text, true), Ok(Message::binary(&b"hi"[..])));
        assert_eq!(decode(b"6869", InputFormat::Hex, false), Ok(Message::binary(&b"hi"[..])));
        assert_eq!(decode(b"aGk=", InputFormat::Base64, false), Ok(Message::binary(&b"hi"[..])));
        assert!(decode(b"\xff", InputFormat::Text, false).is_err());
    }

    #[test]
    fn commands_at_the_prompt() {
        let parse = |line: &str| parse_line(line.as_bytes(), InputFormat::Text, false, true);
        assert_eq!(parse("/ping"), Ok(Command::Ping(None)));
        assert_eq!(parse("/ping abc"), Ok(Command::Ping(Some(Bytes::from_static(b"abc")))));
        assert_eq!(parse("/close"), Ok(Command::Close(CloseCode::NORMAL, String::new())));
        assert_eq!(parse("/close 4001 going home"), Ok(Command::Close(4001.into(), "going home".into())));
        assert!(parse("/close 1006").is_err());
        assert!(parse(&format!("/ping {}", "p".repeat(125))).is_ok());
        assert!(parse(&format!("/ping {}", "p".repeat(126))).unwrap_err().contains("at most 125"));
        assert_eq!(parse("/binary 00ff"), Ok(Command::Send(Message::binary(vec![0, 0xff]))));
        assert_eq!(parse("//etc"), Ok(Command::Send(Message::text("/etc"))));
        assert_eq!(parse(""), Ok(Command::Nothing));
        assert_eq!(parse("/quit"), Ok(Command::Quit));
        assert!(parse("/nope").is_err());
        // Piped lines are data, even when they look like commands.
        assert_eq!(
            parse_line(b"/quit", InputFormat::Text, false, false),
            Ok(Command::Send(Message::text("/quit")))
        );
    }

    #[test]
    fn line_endings_are_stripped() {
        let mut line = b"abc\r\n".to_vec();
        strip_line_ending(&mut line);
        assert_eq!(line, b"abc");
    }
}
