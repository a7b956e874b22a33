//! A real `peregrine serve` on a loopback port and a small protocol client, for the
//! integration tests.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peregrine::{Message, WebSocket};
use peregrine_server::app::Server;
use peregrine_server::config::Config;
use peregrine_server::node::Node;
use peregrine_wire::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1 with an ephemeral port.
///
/// Every test ends with [`finish`](TestServer::finish) (or [`stop`](TestServer::stop)),
/// which checks that the sessions left nothing behind; dropping it without is a failure.
pub struct TestServer {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<usize>>,
    /// Each [`Client`]'s second handle on its TCP socket, to end them all at the finish.
    clients: Arc<Mutex<Vec<SocketHandle>>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.task.is_some() && !std::thread::panicking() {
            panic!("end the test with `server.finish().await`: it checks that sessions leave nothing behind");
        }
    }
}

impl TestServer {
    pub async fn start(mut config: Config) -> TestServer {
        config.listen = "127.0.0.1:0".parse().unwrap();
        if config.workers == 0 {
            // As a `workers = 1` node does, pushes write into idle connections directly
            // (most tests run the node on their one-thread runtime, as such a node runs; the
            // few `multi_thread` tests then also write directly across threads). A test of
            // the writer task's path sets `workers` to 2.
            config.workers = 1;
        }
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr();
        let node = Arc::clone(server.node());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async move {
            let _ = stopped.await;
        }));
        TestServer { addr, node, stop: Some(stop), task: Some(task), clients: Arc::default() }
    }

    /// The development configuration (anonymous, any origin, every channel with history
    /// of 100, presence, join/leave, client publish).
    pub async fn dev() -> TestServer {
        TestServer::start(Config::development()).await
    }

    pub fn url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    /// Starts the graceful shutdown, as SIGTERM does, without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Starts the graceful shutdown (unless begun) and waits for it; returns the sessions
    /// left open. Then checks that every session left nothing behind (see
    /// [`assert_left_nothing`]).
    pub async fn stop(mut self) -> usize {
        self.begin_stop();
        let left = self.task.take().unwrap().await.unwrap();
        assert_left_nothing(&self.node);
        left
    }

    /// The end of every test: the clients go away (their TCP connections are shut down,
    /// whatever state they were in), then the server stops, and nothing may be left behind.
    pub async fn finish(self) {
        for handle in self.clients.lock().unwrap().drain(..) {
            if let Some(socket) = handle.lock().unwrap().take() {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        let gone = async {
            while self.node.session_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(WAIT, gone).await;
        assert_eq!(self.node.session_count(), 0, "sessions still open after their clients went away");
        self.stop().await;
    }

    /// `POST path` with a JSON body (and the API key if given): status and JSON answer.
    pub async fn api(&self, path: &str, body: Value, key: Option<&str>) -> (u16, Value) {
        let (status, body) = self.post(path, &body.to_string(), key).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    /// `POST path` with a raw body (no API key): status and the answer's text, untouched.
    pub async fn api_text(&self, path: &str, body: &str) -> (u16, String) {
        self.post(path, body, None).await
    }

    async fn post(&self, path: &str, body: &str, key: Option<&str>) -> (u16, String) {
        let auth = key.map(|k| format!("Authorization: apikey {k}\r\n")).unwrap_or_default();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        http(self.addr, &request).await
    }

    /// `GET path`: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
        http(self.addr, &request).await
    }
}

/// Once every session has ended: no channel has a subscriber left, no subscription or
/// connection is counted. A subscribe cut short (a session failing at any step) must not
/// leave a phantom subscriber that counts against `max_subscribers` for ever.
pub fn assert_left_nothing(node: &Node) {
    let channels: Vec<(String, usize)> =
        node.channels().into_iter().map(|c| (c.clone(), node.hub().subscriber_count(&c))).collect();
    assert!(channels.is_empty(), "subscribers left after every session ended: {channels:?}");
    assert_eq!(node.session_count(), 0, "sessions still registered");
    assert_eq!(node.metrics().subscriptions.get(), 0, "subscriptions still counted");
    assert_eq!(node.metrics().connections.get(), 0, "connections still counted");
}

/// Sends a raw HTTP/1.1 request and reads one answer: status and body (by Content-Length,
/// chunks, or until the server closes).
pub async fn http(addr: SocketAddr, request: impl AsRef<[u8]>) -> (u16, String) {
    let (status, _, body) = http_with_head(addr, request).await;
    (status, body)
}

/// Like [`http`], with the response head (status line and headers, lower-cased) too.
pub async fn http_with_head(addr: SocketAddr, request: impl AsRef<[u8]>) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_ref()).await.unwrap();
    let mut raw = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            let n = tcp.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if answer_complete(&raw) {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("HTTP answer in time");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) =
        text.split_once("\r\n\r\n").map(|(h, b)| (h.to_ascii_lowercase(), b.to_owned())).unwrap_or_default();
    let body = if head.contains("transfer-encoding: chunked") { dechunk(&body) } else { body };
    (status, head, body)
}

fn answer_complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let head = head.to_ascii_lowercase();
    if let Some(len) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        return body.len() >= len.trim().parse::<usize>().unwrap_or(0);
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with("0\r\n\r\n");
    }
    false
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for Client {
    fn drop(&mut self) {
        self.handle.lock().unwrap().take();
    }
}

/// A second handle on a client's socket (a dup of its descriptor), taken away when the
/// client is dropped or cut so that it does not keep the connection open.
type SocketHandle = Arc<Mutex<Option<socket2::Socket>>>;

/// A protocol client over a real WebSocket.
pub struct Client {
    handle: SocketHandle,
    pub ws: WebSocket<peregrine::MaybeTlsStream<TcpStream>>,
    pub encoding: Encoding,
    next_id: u64,
    inbox: VecDeque<ServerMessage>,
    pub client_id: String,
    /// The close frame, once one arrived: (code, reason).
    pub close: Option<(u16, String)>,
    /// The text of the last text message read, as it came.
    pub last_text: Option<String>,
}

impl Client {
    /// Opens the WebSocket (no `connect` yet).
    pub async fn open(server: &TestServer, encoding: Encoding) -> Client {
        let (ws, _) = peregrine::ClientBuilder::new(server.url())
            .protocol(encoding.subprotocol())
            .connect()
            .await
            .expect("WebSocket handshake");
        let handle = SocketHandle::default();
        if let peregrine::MaybeTlsStream::Plain(tcp) = ws.get_ref() {
            let socket = socket2::SockRef::from(tcp).try_clone().expect("a second handle on the socket");
            *handle.lock().unwrap() = Some(socket);
            server.clients.lock().unwrap().push(Arc::clone(&handle));
        }
        Client {
            handle,
            ws,
            encoding,
            next_id: 0,
            inbox: VecDeque::new(),
            client_id: String::new(),
            close: None,
            last_text: None,
        }
    }

    /// A client over an already opened WebSocket (JSON).
    pub fn from_socket(ws: WebSocket<peregrine::MaybeTlsStream<TcpStream>>) -> Client {
        Client {
            handle: SocketHandle::default(),
            ws,
            encoding: Encoding::Json,
            next_id: 0,
            inbox: VecDeque::new(),
            client_id: String::new(),
            close: None,
            last_text: None,
        }
    }

    /// Opens and sends `connect` with `token`.
    pub async fn connect_with(server: &TestServer, token: Option<&str>) -> Result<Client, Push> {
        Client::connect_encoded(server, token, Encoding::Json).await
    }

    /// Opens in `encoding` and sends `connect` with `token`.
    pub async fn connect_encoded(
        server: &TestServer,
        token: Option<&str>,
        encoding: Encoding,
    ) -> Result<Client, Push> {
        let mut c = Client::open(server, encoding).await;
        let req = ConnectRequest { token: token.map(str::to_owned), ..Default::default() };
        match c.command(CommandKind::Connect(req)).await {
            Ok(ReplyKind::Connect(r)) => {
                c.client_id = r.client_id;
                Ok(c)
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => Err(c.disconnect_push().await),
        }
    }

    /// Anonymous `connect` (development config).
    pub async fn connect(server: &TestServer) -> Client {
        Client::connect_with(server, None).await.expect("connect")
    }

    /// Sends one frame as given (text for JSON, binary for MessagePack).
    pub async fn send_raw(&mut self, frame: impl Into<Vec<u8>>) {
        let frame = frame.into();
        let message = if self.encoding.is_text() {
            Message::text(String::from_utf8(frame).expect("JSON frames are UTF-8"))
        } else {
            Message::binary(frame)
        };
        self.ws.send(message).await.expect("send");
    }

    pub async fn send(&mut self, commands: &[Command]) {
        let frame = encode_commands(commands, self.encoding);
        let message = if self.encoding.is_text() {
            Message::text(String::from_utf8(frame).unwrap())
        } else {
            Message::binary(frame)
        };
        self.ws.send(message).await.expect("send");
    }

    pub fn next_command_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends one command and waits for its reply (pushes meanwhile are kept).
    pub async fn command(&mut self, kind: CommandKind) -> Result<ReplyKind, ReplyError> {
        let id = self.next_command_id();
        self.send(&[Command { id, kind }]).await;
        self.reply(id).await
    }

    /// Waits for the reply to command `id`.
    pub async fn reply(&mut self, id: u64) -> Result<ReplyKind, ReplyError> {
        loop {
            let position = self.inbox.iter().position(|m| matches!(m, ServerMessage::Reply(r) if r.id == id));
            if let Some(i) = position {
                let Some(ServerMessage::Reply(r)) = self.inbox.remove(i) else { unreachable!() };
                return r.result;
            }
            if !self.read().await {
                return Err(ReplyError { code: 0, message: "connection closed".into(), temporary: false });
            }
        }
    }

    /// Reads one WebSocket message into the inbox; `false` when the connection ended.
    pub async fn read(&mut self) -> bool {
        match tokio::time::timeout(WAIT, self.ws.recv()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => {
                let messages = decode_server_messages(t.as_bytes(), Encoding::Json).expect("decodable");
                self.inbox.extend(messages);
                self.last_text = Some(t.to_string());
                true
            }
            Some(Ok(Message::Binary(b))) => {
                self.inbox.extend(decode_server_messages(&b, self.encoding).expect("decodable"));
                true
            }
            Some(Ok(Message::Close(frame))) => {
                self.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                true
            }
            Some(Ok(_)) => true,
            _ => false,
        }
    }

    /// The next push (replies are skipped over and kept).
    pub async fn push(&mut self) -> Push {
        loop {
            if let Some(i) = self.inbox.iter().position(|m| matches!(m, ServerMessage::Push(_))) {
                let Some(ServerMessage::Push(p)) = self.inbox.remove(i) else { unreachable!() };
                return p;
            }
            assert!(self.read().await, "connection ended while waiting for a push");
        }
    }

    /// The next publication push of any channel: (channel, publication).
    pub async fn publication(&mut self) -> (String, Publication) {
        loop {
            if let Push::Publication { channel, publication } = self.push().await {
                return (channel, publication);
            }
        }
    }

    /// Reads until the disconnect push arrives.
    pub async fn disconnect_push(&mut self) -> Push {
        loop {
            let p = self.push().await;
            if matches!(p, Push::Disconnect { .. }) {
                return p;
            }
        }
    }

    /// Reads until the connection ends; returns the close frame's code and reason.
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        if self.close.is_some() {
            return self.close.clone();
        }
        loop {
            match tokio::time::timeout(WAIT, self.ws.recv()).await.expect("connection ends in time") {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    }

    pub async fn subscribe(&mut self, req: SubscribeRequest) -> Result<SubscribeResult, ReplyError> {
        match self.command(CommandKind::Subscribe(req)).await? {
            ReplyKind::Subscribe(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub async fn sub(&mut self, channel: &str) -> SubscribeResult {
        self.subscribe(SubscribeRequest { channel: channel.into(), ..Default::default() })
            .await
            .expect("subscribe")
    }

    pub async fn publish(
        &mut self,
        channel: &str,
        data: impl Into<Payload>,
    ) -> Result<PublishResult, ReplyError> {
        let req = PublishRequest { channel: channel.into(), data: data.into(), idempotency_key: None };
        match self.command(CommandKind::Publish(req)).await? {
            ReplyKind::Publish(r) => Ok(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Reads until the connection ends, tolerating a reset; the close frame if one came.
    pub async fn closed_lossy(&mut self) -> Option<(u16, String)> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.recv()).await.expect("connection ends in time") {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    }

    /// Cuts the TCP connection with a reset: no close frame, no FIN.
    pub fn cut(self) {
        self.handle.lock().unwrap().take();
        let peregrine::MaybeTlsStream::Plain(tcp) = self.ws.get_ref() else { panic!("cut needs ws://") };
        let sock = socket2::SockRef::from(tcp);
        let _ = sock.set_linger(Some(Duration::ZERO));
        drop(self);
    }
}
