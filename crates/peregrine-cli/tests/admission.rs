//! Who gets in, against a real `peregrine serve` process in production mode: the
//! per-address limits (429 and the reason), the limit on handshakes in progress (503 and
//! `Retry-After`), the subscription cap (an error, the connection stays) and the open-files
//! ceiling (503 once the connections the limit allows are taken). Each refusal names its
//! setting, and touches no one else: a client from another address, or a connection
//! already in, carries on.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use peregrine::Message;
use peregrine_wire::*;
use support::node::{PeregrineNode, http};
use support::services::{free_port, fresh_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

type Socket = peregrine::WebSocket<TcpStream>;

/// `room:*` to subscribe to, `check:*` to publish on.
const NAMESPACES: &str =
    "[channels.named.room]\nhistory_size = 0\n[channels.named.check]\nallow_publish = true\n";

/// A child process killed (by its PID) and reaped on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A production-mode node (anonymous clients allowed) with `client` settings, ready.
fn node(name: &str, client: &str) -> PeregrineNode {
    let port = free_port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\napi_key = \"k\"\n[token]\nallow_anonymous = true\n[client]\n{client}\n{NAMESPACES}"
    );
    let mut node = PeregrineNode::spawn(name, &config);
    node.port = port;
    wait_healthy(&node);
    node
}

fn wait_healthy(node: &PeregrineNode) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http(node.port, "GET", "/health", None).is_ok_and(|(s, _)| s == 200) {
        assert!(Instant::now() < deadline, "node {} never answered /health:\n{}", node.name, node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn from(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

async fn tcp_from(port: u16, source: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await.expect("TCP connect")
}

/// The WebSocket upgrade from `source`, without `connect`.
async fn upgrade(port: u16, source: IpAddr) -> Result<Socket, peregrine::Error> {
    let url = format!("ws://127.0.0.1:{port}/connection/websocket");
    let tcp = tcp_from(port, source).await;
    peregrine::ClientBuilder::new(url).protocol(SUBPROTOCOL_JSON).connect_on(tcp).await.map(|(ws, _)| ws)
}

/// Sends `kinds` (ids 1, 2, ...) in one message and returns their replies in order.
async fn commands(ws: &mut Socket, kinds: Vec<CommandKind>) -> Vec<Result<ReplyKind, ReplyError>> {
    let commands: Vec<Command> =
        kinds.into_iter().enumerate().map(|(i, kind)| Command { id: i as u64 + 1, kind }).collect();
    ws.send(Message::text(String::from_utf8(encode_commands(&commands, Encoding::Json)).unwrap()))
        .await
        .unwrap();
    let mut replies = Vec::new();
    while replies.len() < commands.len() {
        let text =
            match tokio::time::timeout(Duration::from_secs(10), ws.recv()).await.expect("a reply in time") {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                other => panic!("the connection ended: {other:?}"),
            };
        for message in decode_server_messages(text.as_bytes(), Encoding::Json).unwrap() {
            if let ServerMessage::Reply(reply) = message {
                replies.push((reply.id, reply.result));
            }
        }
    }
    replies.sort_by_key(|(id, _)| *id);
    replies.into_iter().map(|(_, r)| r).collect()
}

fn subscribe(channel: &str) -> CommandKind {
    CommandKind::Subscribe(SubscribeRequest { channel: channel.into(), ..Default::default() })
}

/// Upgrades from `source`, connects and subscribes to `channel`.
async fn client(port: u16, source: IpAddr, channel: &str) -> Socket {
    let mut ws = upgrade(port, source).await.expect("the upgrade");
    let replies =
        commands(&mut ws, vec![CommandKind::Connect(ConnectRequest::default()), subscribe(channel)]).await;
    assert!(replies.iter().all(Result::is_ok), "{replies:?}");
    ws
}

/// A connection already in still works: a publish on it is acknowledged.
async fn still_works(ws: &mut Socket) {
    let publish = CommandKind::Publish(PublishRequest {
        channel: "check:1".into(),
        data: serde_json::json!("still here").into(),
        idempotency_key: None,
    });
    let replies = commands(ws, vec![publish]).await;
    assert!(replies[0].is_ok(), "{replies:?}");
}

/// A raw upgrade request from `source`: the refusal's status, head (lower-cased) and body.
async fn refused(port: u16, source: IpAddr) -> (u16, String, String) {
    let mut tcp = tcp_from(port, source).await;
    let request = format!(
        "GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    let read_all = async {
        loop {
            let n = tcp.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&response).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if response.len() >= end + 4 + length {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all).await.expect("an answer in time");
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn connections_past_the_per_address_limit_get_429_and_other_addresses_still_connect() {
    let node = node("per-address", "max_connections_per_address = 3\nhandshake_rate_per_address = 0.0");
    let mut held = Vec::new();
    for n in 0..3 {
        held.push(client(node.port, from(1), &format!("room:{n}")).await);
    }
    let (status, head, body) = refused(node.port, from(1)).await;
    assert_eq!(status, 429, "{head}");
    assert!(
        body.contains("3 connections from 127.0.0.1") && body.contains("max_connections_per_address"),
        "{body}"
    );

    // Nothing else is affected: another address connects, the three already in still work.
    let mut other = client(node.port, from(2), "room:9").await;
    still_works(&mut other).await;
    for ws in &mut held {
        still_works(ws).await;
    }
    // A slot is given back when a connection ends.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let _again = loop {
        match upgrade(node.port, from(1)).await {
            Ok(ws) => break ws,
            Err(e) => assert!(Instant::now() < deadline, "the slot never came back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
}

#[tokio::test]
async fn handshakes_past_the_per_address_rate_get_429_with_retry_after() {
    let node = node(
        "per-address-rate",
        "max_connections_per_address = 0\nhandshake_rate_per_address = 0.2\nhandshake_burst_per_address = 2",
    );
    let mut first = client(node.port, from(3), "room:1").await;
    let _second = client(node.port, from(3), "room:2").await;
    let (status, head, body) = refused(node.port, from(3)).await;
    assert_eq!(status, 429, "{head}");
    assert!(head.contains("retry-after: 5"), "one token every 5 s: {head}");
    assert!(
        body.contains("too many handshakes from 127.0.0.3") && body.contains("handshake_rate_per_address"),
        "{body}"
    );
    let mut other = client(node.port, from(4), "room:3").await;
    still_works(&mut other).await;
    still_works(&mut first).await;
}

#[tokio::test]
async fn handshakes_past_the_admission_limit_get_503_with_retry_after_and_connected_clients_carry_on() {
    let node = node("admission", "max_connections_per_address = 0\nmax_pending_handshakes = 2");
    let mut connected = client(node.port, from(5), "room:1").await;
    // Two upgrades that never send `connect` hold both handshake slots.
    let _a = upgrade(node.port, from(6)).await.expect("first pending");
    let mut b = upgrade(node.port, from(7)).await.expect("second pending");
    let (status, head, body) = refused(node.port, from(8)).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(body.contains("2 handshakes in progress"), "{body}");
    still_works(&mut connected).await;
    // Once one of them sends `connect`, its slot is free for the next client.
    let reply = commands(&mut b, vec![CommandKind::Connect(ConnectRequest::default())]).await;
    assert!(reply[0].is_ok(), "{reply:?}");
    let mut next = client(node.port, from(8), "room:2").await;
    still_works(&mut next).await;
}

#[tokio::test]
async fn subscriptions_past_the_cap_are_refused_and_the_connection_stays() {
    let node = node("subscriptions", "max_subscriptions = 2");
    let mut ws = client(node.port, from(9), "room:1").await;
    let replies = commands(&mut ws, vec![subscribe("room:2"), subscribe("room:3")]).await;
    assert!(replies[0].is_ok(), "the second subscription fits: {replies:?}");
    let error = replies[1].as_ref().expect_err("the third is over the cap");
    assert_eq!(error.code, codes::error::LIMIT_EXCEEDED);
    assert!(error.message.contains("at most 2"), "{}", error.message);
    // The connection stays, and another one subscribes to the channel that was refused.
    still_works(&mut ws).await;
    let _other = client(node.port, from(9), "room:3").await;
}

#[tokio::test]
async fn past_the_open_files_limit_handshakes_get_503_and_connections_in_carry_on() {
    // 300 open files: 256 are kept for the listener, logs and refusals, so 44 connections.
    let port = free_port();
    let dir = fresh_dir(&format!("open-files-{port}"));
    let file = dir.join("peregrine.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:{port}\"\napi_key = \"k\"\n[token]\nallow_anonymous = true\n\
             [client]\nmax_connections_per_address = 0\nhandshake_rate_per_address = 0.0\n{NAMESPACES}"
        ),
    )
    .unwrap();
    let child = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 300 && exec \"$0\" serve --config \"$1\""])
        .arg(support::BIN)
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peregrine serve under ulimit -n 300");
    // Killed when the test ends, also when it fails half-way.
    let mut child = KillOnDrop(child);
    let mut stderr = child.0.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http(port, "GET", "/health", None).is_ok_and(|(s, _)| s == 200) {
        assert!(Instant::now() < deadline, "the node never answered /health");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut held = Vec::new();
    for n in 0..44 {
        held.push(client(port, from(10), &format!("room:{n}")).await);
    }
    let (status, head, body) = refused(port, from(11)).await;
    assert_eq!(status, 503, "{head}");
    assert!(body.contains("connection limit of this node reached (44)"), "{body}");
    // Sockets past the open-files limit less half the reserve (44 + 128) get a canned 503
    // at once, before any request: `accept` itself never runs out of descriptors.
    let mut sockets = Vec::new();
    for _ in 0..200 {
        sockets.push(tcp_from(port, from(12)).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut answered = Vec::new();
    for tcp in &sockets {
        let mut buf = [0u8; 512];
        if let Ok(n) = tcp.try_read(&mut buf)
            && n > 0
        {
            answered.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!((20..=100).contains(&answered.len()), "{} sockets answered at once", answered.len());
    for answer in &answered {
        assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("Retry-After: 1"), "{answer}");
        assert!(answer.contains("out of sockets (its open-files limit)"), "{answer}");
    }
    drop(sockets);
    for ws in held.iter_mut().step_by(11) {
        still_works(ws).await;
    }
    // A connection that ends makes room for the next.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match upgrade(port, from(11)).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "no room after a connection ended: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = support::wait_bounded(&mut child.0, Duration::from_secs(20));
    drop(child);
    let log = log.join().unwrap();
    assert!(
        log.contains("takes up to 44 connections") && log.contains("lowered to the open-files limit"),
        "{log}"
    );
}
