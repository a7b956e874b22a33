//! A client of the HTTP transports (Server-Sent Events, HTTP streaming, long-polling) for
//! the multi-node tests, written against the protocol as a browser SDK would use it: raw
//! HTTP/1.1 on loopback, one TCP connection per request (so a balancer may send each to
//! another node), and the recovery rules of docs/protocol.md. It follows one channel and
//! publishes into it with idempotency keys, and starts a new session from its position
//! whenever the transport breaks.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Which HTTP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sse,
    Stream,
    Poll,
}

/// How long one request may take before the client gives up on it (a poll is held for the
/// node's ping interval).
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// One HTTP response read as it comes: the status, then the body's bytes.
struct Response {
    tcp: TcpStream,
    status: u16,
    chunked: bool,
    /// Bytes read and not yet de-chunked (or the body, when not chunked).
    raw: Vec<u8>,
    body: Vec<u8>,
    ended: bool,
}

impl Response {
    async fn request(addr: SocketAddr, method: &str, target: &str, body: &str) -> std::io::Result<Response> {
        let mut tcp = TcpStream::connect(addr).await?;
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes()).await?;
        let mut r =
            Response { tcp, status: 0, chunked: false, raw: Vec::new(), body: Vec::new(), ended: false };
        let end = loop {
            if let Some(end) = r.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            if !r.read_more().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        };
        let head = String::from_utf8_lossy(&r.raw[..end]).to_ascii_lowercase();
        r.status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        r.chunked = head.contains("transfer-encoding: chunked");
        r.raw.drain(..end + 4);
        if !r.chunked {
            r.body = std::mem::take(&mut r.raw);
        }
        Ok(r)
    }

    async fn read_more(&mut self) -> std::io::Result<bool> {
        let mut buf = [0u8; 16384];
        let n = self.tcp.read(&mut buf).await?;
        if n == 0 {
            self.ended = true;
            return Ok(false);
        }
        if self.status != 0 && !self.chunked {
            self.body.extend_from_slice(&buf[..n]);
        } else {
            self.raw.extend_from_slice(&buf[..n]);
        }
        Ok(true)
    }

    fn dechunk(&mut self) {
        while let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&self.raw[..line_end])
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .unwrap_or(0);
            if size == 0 {
                self.ended = true;
                return;
            }
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            self.body.extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
            self.raw.drain(..line_end + 2 + size + 2);
        }
    }

    /// The next line of the body (without its `\n`), `None` when the body ended.
    async fn line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            self.dechunk();
            if let Some(at) = self.body.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&self.body[..at]).into_owned();
                self.body.drain(..=at);
                return Ok(Some(line));
            }
            if self.ended || !self.read_more().await? {
                return Ok(None);
            }
        }
    }

    /// The whole body.
    async fn text(mut self) -> std::io::Result<(u16, String)> {
        loop {
            self.dechunk();
            if self.ended || !self.read_more().await? {
                self.dechunk();
                return Ok((self.status, String::from_utf8_lossy(&self.body).into_owned()));
            }
        }
    }
}

/// What a follower saw and did.
#[derive(Debug, Default)]
pub struct Record {
    /// Publications received, in order: (epoch, offset, data).
    pub received: Vec<(String, u64, Value)>,
    /// Acknowledged publishes by idempotency key: the offset each got.
    pub acks: BTreeMap<String, u64>,
    /// Sessions opened (1 + reconnects).
    pub sessions: usize,
    /// What went wrong along the way and made it start a new session.
    pub breaks: Vec<String>,
}

/// A client that follows `channel` over one transport and publishes `to_publish` messages
/// into it (`<name>-<i>`), at most `window` unacknowledged, until it has received `expect`
/// publications.
pub struct Follower {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub channel: String,
    pub name: String,
    pub to_publish: usize,
    pub window: usize,
    pub pace: Duration,
    pub expect: usize,
}

/// One session's state.
struct Session {
    key: String,
    next_id: u64,
    /// Publishes sent in this session: command id → idempotency key.
    in_flight: BTreeMap<u64, String>,
    /// Last frame number acknowledged (long-polling).
    ack: u64,
    connected: bool,
}

enum Step {
    Go,
    Break(String),
}

impl Follower {
    /// Runs until `expect` publications arrived and every publish was acknowledged, or
    /// `limit` passed; returns what it saw.
    pub async fn run(self, limit: Duration) -> Record {
        let mut record = Record::default();
        let mut unsent: VecDeque<String> =
            (0..self.to_publish).map(|i| format!("{}-{i}", self.name)).collect();
        let deadline = tokio::time::Instant::now() + limit;
        while (record.received.len() < self.expect || record.acks.len() < self.to_publish)
            && tokio::time::Instant::now() < deadline
        {
            record.sessions += 1;
            let why = match tokio::time::timeout_at(deadline, self.session(&mut record, &mut unsent)).await {
                Ok(why) => why,
                Err(_) => "time is up".to_owned(),
            };
            record.breaks.push(why);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        record
    }

    fn since(&self, record: &Record) -> Value {
        match record.received.last() {
            Some((epoch, offset, _)) => json!({"since": {"epoch": epoch, "offset": offset}, "recover": true}),
            None => json!({}),
        }
    }

    /// One session, from opening to whatever broke it (the reason).
    async fn session(&self, record: &mut Record, unsent: &mut VecDeque<String>) -> String {
        let connect = json!({"id": 1, "connect": {"subs": {&self.channel: self.since(record)}}}).to_string();
        let mut s =
            Session { key: String::new(), next_id: 2, in_flight: BTreeMap::new(), ack: 0, connected: false };
        match self.kind {
            Kind::Sse | Kind::Stream => {
                let target = match self.kind {
                    Kind::Sse => {
                        let commands: String =
                            url::form_urlencoded::byte_serialize(connect.as_bytes()).collect();
                        format!("/connection/sse?commands={commands}")
                    }
                    _ => "/connection/stream".to_owned(),
                };
                let (method, body) =
                    if self.kind == Kind::Sse { ("GET", "") } else { ("POST", connect.as_str()) };
                let mut stream = match Response::request(self.addr, method, &target, body).await {
                    Ok(r) if r.status == 200 => r,
                    Ok(r) => return format!("opening: {}", r.status),
                    Err(e) => return format!("opening: {e}"),
                };
                let mut publishing = tokio::time::interval(self.pace);
                loop {
                    tokio::select! {
                        line = stream.line() => {
                            let line = match line {
                                Ok(Some(line)) => line,
                                Ok(None) => return "the stream ended".into(),
                                Err(e) => return format!("the stream broke: {e}"),
                            };
                            let message = match self.kind {
                                Kind::Sse => line.strip_prefix("data: ").map(str::to_owned),
                                _ => Some(line),
                            };
                            let Some(message) = message.filter(|m| !m.is_empty()) else { continue };
                            if s.key.is_empty() {
                                s.key = match self.kind {
                                    Kind::Sse => message,
                                    _ => serde_json::from_str::<Value>(&message).ok()
                                        .and_then(|v| v["session"].as_str().map(str::to_owned)).unwrap_or_default(),
                                };
                                continue;
                            }
                            if let Step::Break(why) = self.on_message(&message, &mut s, record, unsent) {
                                return why;
                            }
                        }
                        _ = publishing.tick() => {
                            if let Step::Break(why) = self.publish_some(&mut s, unsent).await {
                                return why;
                            }
                        }
                    }
                    if self.done(record) {
                        return "done".into();
                    }
                }
            }
            Kind::Poll => {
                let opened = Response::request(self.addr, "POST", "/connection/poll/open", &connect).await;
                let opened = match opened {
                    Ok(r) => r.text().await,
                    Err(e) => Err(e),
                };
                s.key = match opened {
                    Ok((200, body)) => serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|v| v["session"].as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    Ok((status, body)) => return format!("opening: {status} {body}"),
                    Err(e) => return format!("opening: {e}"),
                };
                loop {
                    let target = format!("/connection/poll?session={}&ack={}", s.key, s.ack);
                    let polled = async {
                        tokio::time::timeout(REQUEST_LIMIT, async {
                            Response::request(self.addr, "GET", &target, "").await?.text().await
                        })
                        .await
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
                    };
                    let mut publishing = tokio::time::interval(self.pace);
                    publishing.tick().await;
                    tokio::pin!(polled);
                    let answer = loop {
                        tokio::select! {
                            answer = &mut polled => break answer,
                            _ = publishing.tick() => {
                                if let Step::Break(why) = self.publish_some(&mut s, unsent).await {
                                    return why;
                                }
                            }
                        }
                    };
                    let answer: Value = match answer {
                        Ok((200, body)) => serde_json::from_str(&body).unwrap_or(Value::Null),
                        // A cut poll: poll again with the same ack, the frames come again.
                        Err(_) => continue,
                        Ok((404, body)) => return format!("poll: 404 {body}"),
                        Ok((status, _)) if status >= 500 => continue,
                        Ok((status, body)) => return format!("poll: {status} {body}"),
                    };
                    for frame in answer["frames"].as_array().into_iter().flatten() {
                        for message in frame.as_str().unwrap_or_default().lines().filter(|l| !l.is_empty()) {
                            if let Step::Break(why) = self.on_message(message, &mut s, record, unsent) {
                                return why;
                            }
                        }
                    }
                    s.ack = answer["seq"].as_u64().unwrap_or(s.ack);
                    if answer["closed"] == json!(true) {
                        return "the session closed".into();
                    }
                    if self.done(record) {
                        return "done".into();
                    }
                }
            }
        }
    }

    fn done(&self, record: &Record) -> bool {
        record.received.len() >= self.expect && record.acks.len() >= self.to_publish
    }

    /// Sends the next publishes (once connected), up to the window.
    async fn publish_some(&self, s: &mut Session, unsent: &mut VecDeque<String>) -> Step {
        if !s.connected || s.in_flight.len() >= self.window {
            return Step::Go;
        }
        let Some(key) = unsent.pop_front() else { return Step::Go };
        let id = s.next_id;
        s.next_id += 1;
        let frame = json!({"id": id, "publish": {"channel": &self.channel, "data": {"k": &key}, "idempotency_key": &key}})
            .to_string();
        s.in_flight.insert(id, key);
        let target = format!("/connection/send?session={}", s.key);
        let sent = tokio::time::timeout(REQUEST_LIMIT, async {
            Response::request(self.addr, "POST", &target, &frame).await?.text().await
        })
        .await;
        match sent {
            Ok(Ok((204, _))) => Step::Go,
            // Not taken: the command is resent in the next session (same idempotency key).
            Ok(Ok((status, body))) => {
                unsent.push_front(s.in_flight.remove(&id).unwrap_or_default());
                Step::Break(format!("send: {status} {body}"))
            }
            // The answer was lost: the command may have been taken. It is resent in the next
            // session with its idempotency key, which makes a second one a duplicate.
            Ok(Err(e)) => Step::Break(format!("send: {e}")),
            Err(_) => Step::Break("send: timed out".into()),
        }
    }

    fn on_message(
        &self,
        message: &str,
        s: &mut Session,
        record: &mut Record,
        unsent: &mut VecDeque<String>,
    ) -> Step {
        let Ok(message) = serde_json::from_str::<Value>(message) else {
            return Step::Break(format!("undecodable message {message}"));
        };
        if let Some(id) = message["id"].as_u64() {
            if id == 1 {
                let Some(sub) = message["connect"]["subs"].get(&self.channel) else {
                    return Step::Break(format!("connect did not subscribe: {message}"));
                };
                if !record.received.is_empty() && sub["recovered"] != json!(true) {
                    return Step::Break(format!("not recovered: {sub}"));
                }
                let epoch = sub["epoch"].as_str().unwrap_or_default().to_owned();
                for publication in sub["publications"].as_array().into_iter().flatten() {
                    deliver(record, &epoch, publication);
                }
                s.connected = true;
                // Publishes of the last session not acknowledged go again, first.
                let lost = unacked(record, unsent, self.to_publish, &self.name);
                for key in lost.into_iter().rev() {
                    unsent.push_front(key);
                }
                return Step::Go;
            }
            let Some(key) = s.in_flight.remove(&id) else { return Step::Go };
            if let Some(offset) = message["publish"]["offset"].as_u64() {
                record.acks.insert(key, offset);
                return Step::Go;
            }
            // A temporary error (e.g. 111, resend it first): again, in order.
            unsent.push_front(key);
            return Step::Go;
        }
        let push = &message["push"];
        if let Some(p) = push.get("publication") {
            let publication = &p["publication"];
            let epoch = publication["epoch"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| record.received.last().map(|r| r.0.clone()));
            deliver(record, &epoch.unwrap_or_default(), publication);
            return Step::Go;
        }
        if push.get("unsubscribe").is_some() || push.get("disconnect").is_some() {
            return Step::Break(format!("pushed: {push}"));
        }
        Step::Go
    }
}

/// Keys published but neither acknowledged nor waiting to be sent, in publish order.
fn unacked(record: &Record, unsent: &VecDeque<String>, total: usize, name: &str) -> Vec<String> {
    (0..total)
        .map(|i| format!("{name}-{i}"))
        .filter(|k| !record.acks.contains_key(k) && !unsent.contains(k))
        .collect()
}

fn deliver(record: &mut Record, epoch: &str, publication: &Value) {
    let offset = publication["offset"].as_u64().unwrap_or(0);
    record.received.push((epoch.to_owned(), offset, publication["data"].clone()));
}
