//! One `connect` session: open, then move messages between the input and the
//! connection until it closes, and report how it ended.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use peregrine::proto::ProtocolError;
use peregrine::{CloseCode, CloseFrame, Error, Message, TimeoutKind, WebSocket};
use peregrine_wire::{
    Encoding, decode_commands, decode_server_messages, encode_commands, encode_server_messages,
};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::console::Console;
use super::input::{self, Command, Input};
use super::transport::{self, Stream};
use super::{BinaryOutput, ConnectOptions, Plan, TextOutput, diagnose};

/// Binary bytes shown per received message at the prompt.
const BINARY_SHOWN: usize = 256;
/// Line numbers of piped lines that could not be sent, kept for the summary.
const SKIPPED_SHOWN: usize = 10;
/// A ping unanswered for this many ping intervals is reported (and forgotten).
const PONG_PATIENCE: u32 = 2;
/// Without `--ping-interval`: how long a `/ping` may wait for its pong.
const MANUAL_PONG_WAIT: Duration = Duration::from_secs(5);
/// How long to look for input left unsent when the server ended the session.
const LEFTOVER_WAIT: Duration = Duration::from_millis(100);

/// How the session ended.
#[derive(Debug)]
pub struct Outcome {
    /// The process exit status.
    pub code: i32,
    /// The line editor is still blocked at its prompt (in raw mode).
    pub editor_running: bool,
}

/// Connects, runs the session, and returns how it ended.
pub async fn run(args: &ConnectOptions, plan: Plan, console: Arc<Console>, interactive: bool) -> Outcome {
    let Plan { target, options, sent, prepared } = plan;
    let (ws, response, peer) = match transport::open(&target, options).await {
        Ok(opened) => opened,
        Err(failure) => {
            console.diag(&diagnose::failure(&target, &failure, &sent));
            return Outcome { code: 1, editor_running: false };
        }
    };
    let mut status = format!("connected to {} ({peer})", target.url);
    if let Some(protocol) = response.protocol() {
        let _ = write!(status, ", subprotocol {protocol}");
    }
    let translate = match (args.as_json, response.protocol().and_then(Encoding::from_subprotocol)) {
        (false, _) | (true, Some(Encoding::Json)) => None,
        (true, Some(encoding)) => {
            status.push_str(", commands and replies shown as JSON");
            Some(encoding)
        }
        (true, None) => {
            let picked = response.protocol().unwrap_or("none");
            let offered = Encoding::subprotocols().join(", ");
            console.diag(&format!(
                "--as-json needs the server to speak the realtime protocol: offer one of {offered} \
                 with -p (the server picked {picked})"
            ));
            return Outcome { code: 1, editor_running: false };
        }
    };
    match response.header("Sec-WebSocket-Extensions") {
        Some(extensions) => {
            let _ = write!(status, ", extensions: {extensions}");
        }
        None if args.deflate => status.push_str(", permessage-deflate declined by the server"),
        None => {}
    }
    let (tx, rx) = mpsc::channel(64);
    let mut editor = None;
    let mut interactive = interactive;
    if let Some(messages) = prepared {
        input::spawn_prepared(tx, messages);
    } else if interactive {
        match input::spawn_editor(tx.clone()) {
            Ok((printer, thread)) => {
                console.attach(printer);
                editor = Some(thread);
                status.push_str("; type /help for commands");
            }
            Err(e) => {
                console.diag(&format!("warning: no line editor ({e}); reading lines from stdin"));
                interactive = false;
                input::spawn_stdin(tx);
            }
        }
    } else {
        input::spawn_stdin(tx);
    }
    console.info(&status);
    let mut session = Session {
        ws,
        console: console.clone(),
        args,
        translate,
        interactive,
        pings: HashMap::new(),
        pong_check: None,
        ping_seq: 0,
        closing: None,
        close_received: None,
        failed: false,
        lines_read: 0,
        skipped: Vec::new(),
        skipped_count: 0,
        unsent_input: false,
        inputs_sent: 0,
        send_failed: false,
    };
    let code = session.run(rx).await;
    let editor_running = editor.is_some_and(|thread| !thread.is_finished());
    if editor_running {
        // Let the editor print what it was given, then write directly.
        tokio::time::sleep(Duration::from_millis(20)).await;
        console.detach();
    }
    session.report_end();
    Outcome { code, editor_running }
}

struct Session<'a> {
    ws: WebSocket<Stream>,
    console: Arc<Console>,
    args: &'a ConnectOptions,
    /// `--as-json`: the binary encoding lines are translated to, and messages from.
    translate: Option<Encoding>,
    interactive: bool,
    /// Pings in flight by payload, for the round-trip time.
    pings: HashMap<Bytes, Instant>,
    /// When the oldest ping in flight has waited long enough for its pong.
    pong_check: Option<Pin<Box<Sleep>>>,
    ping_seq: u64,
    /// We sent a close frame with this code.
    closing: Option<CloseCode>,
    /// The peer's close frame, once received.
    close_received: Option<Option<CloseFrame>>,
    /// The connection failed (1006, protocol error, timeout).
    failed: bool,
    /// Piped lines read so far (for line numbers in errors).
    lines_read: u64,
    /// The first few piped lines that could not be decoded, by number, and
    /// how many there were in all.
    skipped: Vec<u64>,
    skipped_count: u64,
    /// The server ended the connection before the end of piped input.
    unsent_input: bool,
    /// Data messages sent (lines, `--message`, `--file`).
    inputs_sent: u64,
    /// A send failed on the transport: nothing more can go out, and what
    /// the server said before (its close frame) is still to be read.
    send_failed: bool,
}

impl Session<'_> {
    async fn run(&mut self, mut rx: mpsc::Receiver<Input>) -> i32 {
        let mut input_open = true;
        let mut linger: Option<Pin<Box<Sleep>>> = None;
        let mut ticker = self.args.ping_interval.map(|period| {
            let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker
        });
        let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
        loop {
            tokio::select! {
                event = self.ws.recv() => match event {
                    Some(Ok(message)) => self.on_message(message).await,
                    Some(Err(error)) => self.on_error(error),
                    None => break,
                },
                event = rx.recv(), if input_open && self.can_send() => match event {
                    Some(Input::Line(line)) => self.on_line(&line).await,
                    Some(Input::Message(message)) => match self.translated(message) {
                        Ok(message) => {
                            self.send(message).await;
                        }
                        Err(problem) => {
                            self.console.diag(&format!("error: {problem} (not sent)"));
                            self.skipped_count += 1;
                        }
                    },
                    Some(Input::Eof) | None => {
                        input_open = false;
                        match self.args.linger {
                            Some(wait) => linger = Some(Box::pin(tokio::time::sleep(wait))),
                            None => self.close(self.args.close_code, &self.args.close_reason).await,
                        }
                    }
                    Some(Input::Interrupted) => {
                        input_open = false;
                        self.close(CloseCode::NORMAL, "").await;
                    }
                },
                () = async { linger.as_mut().expect("guarded").await }, if linger.is_some() && self.closing.is_none() => {
                    linger = None;
                    self.close(self.args.close_code, &self.args.close_reason).await;
                }
                _ = async { ticker.as_mut().expect("guarded").tick().await }, if ticker.is_some() && self.closing.is_none() => {
                    self.ping(None).await;
                }
                () = async { self.pong_check.as_mut().expect("guarded").await }, if self.pong_check.is_some() => {
                    self.report_lost_pongs();
                }
                _ = &mut ctrl_c => {
                    if self.closing.is_some() {
                        self.console.diag("interrupted while closing");
                        return 130;
                    }
                    ctrl_c = Box::pin(tokio::signal::ctrl_c());
                    input_open = false;
                    self.close(CloseCode::NORMAL, "").await;
                }
            }
        }
        // Piped input not read to its end, and we did not close: the server
        // (or the network) ended the session first. Whether input was left
        // shows in what comes next (the end of input is no loss); input that
        // is still being produced is not counted.
        if input_open && !self.interactive && self.closing.is_none() {
            let next = tokio::time::timeout(LEFTOVER_WAIT, rx.recv()).await;
            self.unsent_input = matches!(next, Ok(Some(Input::Line(_) | Input::Message(_))));
        }
        self.exit_code()
    }

    async fn on_message(&mut self, message: Message) {
        let message = match (self.translate, message) {
            (Some(encoding), Message::Binary(data)) => match as_json(&data, encoding) {
                Ok(text) => Message::text(text),
                Err(problem) => {
                    self.console.diag(&format!("error: the server sent an undecodable frame: {problem}"));
                    Message::Binary(data)
                }
            },
            (_, message) => message,
        };
        let line = match message {
            // Lines after the first are indented under the "< ".
            Message::Text(text) if self.interactive => {
                format!("< {}", text.lines().collect::<Vec<_>>().join("\n  "))
            }
            Message::Text(text) => match self.args.text_output {
                TextOutput::Raw => text.to_string(),
                TextOutput::JsonString => serde_json::to_string(text.as_str()).expect("a str serializes"),
            },
            Message::Binary(data) if self.interactive => {
                let mut line = format!("< [binary {} bytes]", data.len());
                for byte in data.iter().take(BINARY_SHOWN) {
                    let _ = write!(line, " {byte:02x}");
                }
                if data.len() > BINARY_SHOWN {
                    line.push_str(" ...");
                }
                line
            }
            Message::Binary(data) => match self.args.binary_output {
                BinaryOutput::Hex => data.iter().fold(String::with_capacity(2 * data.len()), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                }),
                BinaryOutput::Base64 => base64::engine::general_purpose::STANDARD.encode(&data),
            },
            Message::Pong(payload) => {
                if let Some(sent) = self.pings.remove(&payload) {
                    let rtt = sent.elapsed().as_secs_f64() * 1000.0;
                    self.console.diag(&format!("pong {}: rtt {rtt:.3} ms", show_payload(&payload)));
                }
                return;
            }
            Message::Ping(_) => return,
            Message::Close(frame) => {
                let text = diagnose::close(frame.as_ref());
                let clean = self.is_clean(frame.as_ref());
                match (self.closing.is_some(), clean) {
                    (true, true) => self.console.info(&format!("closed: {text}")),
                    (false, true) => self.console.info(&format!("connection closed by the server: {text}")),
                    (_, false) => self.console.diag(&format!("connection closed by the server: {text}")),
                }
                self.close_received = Some(frame);
                return;
            }
        };
        if self.console.message(&line).is_err() {
            // Nobody reads our output any more (a closed pipe): finish.
            self.close(CloseCode::NORMAL, "").await;
        }
    }

    fn on_error(&mut self, error: Error) {
        self.failed = true;
        let text = match &error {
            Error::AbnormalClosure => format!("connection lost: {}", diagnose::code(CloseCode::ABNORMAL)),
            Error::Protocol(
                e @ (ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. }),
            ) => format!(
                "the server sent more than --max-message-size allows ({e}); closing with {}",
                diagnose::code(e.close_code())
            ),
            Error::Protocol(e) => {
                format!("protocol error by the server: {e}; closing with {}", diagnose::code(e.close_code()))
            }
            Error::Timeout(TimeoutKind::Keepalive) => {
                "keepalive timeout: the server stopped answering pings (vanished peer, or a network that \
                 dropped the connection); giving up"
                    .to_owned()
            }
            Error::Timeout(TimeoutKind::Close) => format!(
                "the server did not complete the close handshake within {} s; dropped the connection",
                self.args.close_timeout.as_secs_f64()
            ),
            Error::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                format!("connection lost ({e}): {}", diagnose::code(CloseCode::ABNORMAL))
            }
            other => format!("connection error: {other}"),
        };
        self.console.diag(&text);
    }

    async fn on_line(&mut self, line: &[u8]) {
        let command = input::parse_line(line, self.args.input, self.args.binary, self.interactive).and_then(
            |command| match command {
                Command::Send(message) => self.translated(message).map(Command::Send),
                other => Ok(other),
            },
        );
        if !self.interactive {
            self.lines_read += 1;
        }
        match command {
            // At the prompt the line can be typed again; piped, it is lost,
            // so say which one it was and fail the run at the end.
            Err(problem) if self.interactive => self.console.diag(&format!("error: {problem}")),
            Err(problem) => {
                self.console.diag(&format!("error: line {}: {problem} (not sent)", self.lines_read));
                self.skipped_count += 1;
                if self.skipped.len() < SKIPPED_SHOWN {
                    self.skipped.push(self.lines_read);
                }
            }
            Ok(Command::Send(message)) => {
                if self.interactive
                    && let Message::Binary(data) = &message
                {
                    let mut echo = format!("> [binary {} bytes]", data.len());
                    for byte in data.iter().take(BINARY_SHOWN) {
                        let _ = write!(echo, " {byte:02x}");
                    }
                    self.console.diag(&echo);
                }
                self.send(message).await;
            }
            Ok(Command::Ping(payload)) => self.ping(payload).await,
            Ok(Command::Close(code, reason)) => self.close(code, &reason).await,
            Ok(Command::Quit) => self.close(CloseCode::NORMAL, "").await,
            Ok(Command::Help) => self.console.diag(input::HELP),
            Ok(Command::Nothing) => {}
        }
    }

    /// With `--as-json`, a text message of JSON commands in the server's encoding.
    fn translated(&self, message: Message) -> Result<Message, String> {
        match (self.translate, message) {
            (Some(encoding), Message::Text(text)) => decode_commands(text.as_bytes(), Encoding::Json)
                .map(|commands| Message::binary(encode_commands(&commands, encoding)))
                .map_err(|e| format!("not a command of the realtime protocol: {e}")),
            (_, message) => Ok(message),
        }
    }

    /// Sends a message; returns whether it went out.
    async fn send(&mut self, message: Message) -> bool {
        let data = message.is_data();
        match self.ws.send(message).await {
            Ok(()) => {
                self.inputs_sent += u64::from(data);
                true
            }
            Err(Error::Closed) => {
                self.console.diag("cannot send: the connection is closing");
                false
            }
            // The transport failed: nothing more can go out.
            Err(e @ Error::Io(_)) => {
                self.send_failed = true;
                self.console.diag(&format!("cannot send: {e}; reading what the server sent before"));
                false
            }
            // Refused here (a message this connection cannot carry): the
            // connection itself is fine.
            Err(e) => {
                self.console.diag(&format!("cannot send: {e}"));
                false
            }
        }
    }

    async fn ping(&mut self, payload: Option<Bytes>) {
        let payload = payload.unwrap_or_else(|| {
            self.ping_seq += 1;
            Bytes::from(format!("ping-{}", self.ping_seq))
        });
        if self.interactive {
            self.console.diag(&format!("> ping {}", show_payload(&payload)));
        }
        let sent = Instant::now();
        if self.send(Message::Ping(payload.clone())).await {
            self.pings.insert(payload, sent);
            if self.pong_check.is_none() {
                self.pong_check = Some(Box::pin(tokio::time::sleep_until(sent + self.pong_patience())));
            }
        }
    }

    /// How long a ping may wait for its pong before it is reported.
    fn pong_patience(&self) -> Duration {
        self.args.ping_interval.map_or(MANUAL_PONG_WAIT, |interval| interval * PONG_PATIENCE)
    }

    /// Reports (and forgets) the pings that have gone unanswered for a
    /// while, so a server that stopped answering shows before the keepalive
    /// gives up on it; then waits for the oldest ping left, if any.
    fn report_lost_pongs(&mut self) {
        let patience = self.pong_patience();
        let mut lost = Vec::new();
        self.pings.retain(|payload, sent| {
            let waited = sent.elapsed();
            let keep = waited < patience;
            if !keep {
                lost.push((payload.clone(), waited));
            }
            keep
        });
        self.pong_check =
            self.pings.values().min().map(|&oldest| Box::pin(tokio::time::sleep_until(oldest + patience)));
        lost.sort_by_key(|(_, waited)| std::cmp::Reverse(*waited));
        for (payload, waited) in lost {
            self.console.diag(&format!(
                "no pong for ping {} after {:.1} s: the server or the network is not answering",
                show_payload(&payload),
                waited.as_secs_f64()
            ));
        }
    }

    async fn close(&mut self, code: CloseCode, reason: &str) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(code);
        if self.interactive {
            let reason = if reason.is_empty() { String::new() } else { format!("; reason: {reason:?}") };
            self.console.diag(&format!("> close {}{reason}", diagnose::code(code)));
        }
        let frame = CloseFrame::new(code, reason);
        match self.ws.send(Message::Close(Some(frame))).await {
            // The server closed first, or the connection failed: nothing to do.
            Ok(()) | Err(Error::Closed) => {}
            Err(e) => self.console.diag(&format!("cannot send the close frame: {e}")),
        }
    }

    /// Whether input is still worth reading: once either side has closed or
    /// the connection failed, sending more would only fail, line by line.
    fn can_send(&self) -> bool {
        self.closing.is_none() && self.close_received.is_none() && !self.failed && !self.send_failed
    }

    fn exit_code(&self) -> i32 {
        if self.failed || self.skipped_count > 0 || self.unsent_input {
            return 1;
        }
        match &self.close_received {
            Some(frame) if self.is_clean(frame.as_ref()) => 0,
            _ => 1,
        }
    }

    /// A close frame that ends the session well: normal, going away, no
    /// status, or the echo of the code we sent. Anything else (1008, 1009,
    /// 1011…) is the server closing for a reason of its own.
    fn is_clean(&self, frame: Option<&CloseFrame>) -> bool {
        frame.is_none_or(|f| {
            f.code == CloseCode::NORMAL || f.code == CloseCode::GOING_AWAY || Some(f.code) == self.closing
        })
    }

    /// Last lines: what was not sent, and an end not yet reported.
    fn report_end(&self) {
        if self.skipped_count > 0 {
            let mut numbers: Vec<String> = self.skipped.iter().map(u64::to_string).collect();
            if self.skipped_count > self.skipped.len() as u64 {
                numbers.push("...".to_owned());
            }
            self.console.diag(&format!(
                "{} input line(s) could not be decoded and were not sent (line {})",
                self.skipped_count,
                numbers.join(", ")
            ));
        }
        if self.unsent_input {
            let unsent = match self.inputs_sent {
                0 => "none of it was sent".to_owned(),
                n => format!("{n} message(s) of it were sent, the rest was not"),
            };
            self.console.diag(&format!("the connection ended before the end of input: {unsent}"));
        }
        if self.close_received.is_none() && !self.failed {
            self.console.diag("the connection ended without a close handshake");
        }
    }
}

/// A frame of the realtime protocol in `encoding`, as JSON lines.
fn as_json(frame: &[u8], encoding: Encoding) -> Result<String, String> {
    let messages = decode_server_messages(frame, encoding).map_err(|e| e.to_string())?;
    String::from_utf8(encode_server_messages(&messages, Encoding::Json)).map_err(|e| e.to_string())
}

fn show_payload(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("[{} bytes]", payload.len()),
    }
}

/// The terminal settings from before the line editor started, so that they
/// can be put back when the process exits while the editor is still at its
/// prompt (in raw mode, with bracketed paste on).
#[derive(Debug)]
pub struct TerminalState {
    #[cfg(unix)]
    saved: nix::sys::termios::Termios,
}

impl TerminalState {
    /// Saves stdin's terminal settings.
    #[cfg(unix)]
    pub fn save() -> Option<Self> {
        nix::sys::termios::tcgetattr(std::io::stdin()).ok().map(|saved| Self { saved })
    }

    /// Saves nothing where there is nothing to restore.
    #[cfg(not(unix))]
    pub fn save() -> Option<Self> {
        None
    }

    /// Puts the settings back if the editor is still running.
    pub fn restore_if(self, editor_running: bool) {
        if !editor_running {
            return;
        }
        #[cfg(unix)]
        {
            use std::io::Write;
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSADRAIN,
                &self.saved,
            );
            let mut out = std::io::stdout().lock();
            // Bracketed paste off, as the editor would have done.
            let _ = out.write_all(b"\x1b[?2004l");
            let _ = out.flush();
        }
    }
}
