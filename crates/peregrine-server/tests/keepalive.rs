//! Dead connections: a client that stops answering pings is closed by the server, and its
//! presence is cleaned up with a leave event (it is told why first: a `disconnect` push and a
//! close frame with 3012, "no pong"); `ping` commands answer browsers' heartbeats.

mod common;

use std::time::{Duration, Instant};

use common::{Client, TestServer};
use peregrine_server::config::Config;
use peregrine_wire::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn silent_client_is_removed_and_leaves_presence() {
    let mut config = Config::development();
    config.client.ping_interval = Duration::from_millis(200);
    config.client.pong_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;

    let mut watcher = Client::connect(&server).await;
    watcher.sub("room:1").await;
    let mut ghost = Client::connect(&server).await;
    ghost.sub("room:1").await;
    let ghost_id = ghost.client_id.clone();
    // The ghost never reads again, so it never answers a ping (its socket stays open).
    let started = Instant::now();
    loop {
        // Joins (own and the ghost's) come first; wait for the ghost's leave.
        match watcher.push().await {
            Push::Leave { info, .. } if info.client == ghost_id => break,
            Push::Join { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(started.elapsed() < common::WAIT);
    let Ok(ReplyKind::Presence(p)) =
        watcher.command(CommandKind::Presence(PresenceRequest { channel: "room:1".into() })).await
    else {
        panic!("presence")
    };
    assert_eq!(p.clients.len(), 1, "only the watcher is left: {:?}", p.clients.keys());
    assert_eq!(server.node.session_count(), 1);
    drop(ghost);
    server.finish().await;
}

#[tokio::test]
async fn ping_command_is_answered() {
    let server = TestServer::dev().await;
    let mut c = Client::connect(&server).await;
    for _ in 0..3 {
        let r = c.command(CommandKind::Ping(PingRequest {})).await.unwrap();
        assert_eq!(r, ReplyKind::Ping(PingResult {}));
    }
    server.finish().await;
}

#[tokio::test]
async fn first_command_other_than_connect_is_a_bad_request() {
    let server = TestServer::dev().await;
    let mut c = Client::open(&server, Encoding::Json).await;
    let _ = c.command(CommandKind::Ping(PingRequest {})).await;
    let closed = c.closed().await;
    assert_eq!(closed.map(|(code, _)| code), Some(codes::disconnect::BAD_REQUEST));
    server.finish().await;
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_told_no_pong_before_the_close() {
    let mut config = Config::development();
    config.client.ping_interval = Duration::from_millis(200);
    config.client.pong_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;

    // Bytes on the wire, so that nothing answers the server's pings.
    let mut peer = RawPeer::open(&server).await;
    peer.send_text(r#"{"id":1,"connect":{}}"#).await;
    let reply = peer.next_frame().await.expect("the connect reply");
    assert_eq!(reply.opcode, OP_TEXT);
    assert!(String::from_utf8_lossy(&reply.payload).contains(r#""connect""#), "{reply:?}");

    let ping = peer.next_frame().await.expect("a keepalive ping");
    assert_eq!(ping.opcode, OP_PING);
    let push = peer.next_frame().await.expect("the disconnect push");
    assert_eq!(push.opcode, OP_TEXT, "{push:?}");
    let messages = decode_server_messages(&push.payload, Encoding::Json).expect("a server message");
    assert!(
        matches!(
            &messages[..],
            [ServerMessage::Push(Push::Disconnect { code: codes::disconnect::NO_PONG, reconnect: true, .. })]
        ),
        "{messages:?}"
    );
    let close = peer.next_frame().await.expect("a close frame");
    assert_eq!(close.opcode, OP_CLOSE);
    let code = u16::from_be_bytes([close.payload[0], close.payload[1]]);
    assert_eq!(code, codes::disconnect::NO_PONG, "{:?}", String::from_utf8_lossy(&close.payload[2..]));
    assert_eq!(peer.next_frame().await, None, "then the server ends TCP");
    let gone = tokio::time::timeout(common::WAIT, async {
        while server.node.session_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(gone.await.is_ok(), "the session is closed");
    server.finish().await;
}

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;

#[derive(Debug, PartialEq, Eq)]
struct RawFrame {
    opcode: u8,
    payload: Vec<u8>,
}

/// A WebSocket client written in bytes: it answers nothing unless told to.
struct RawPeer {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawPeer {
    async fn open(server: &TestServer) -> RawPeer {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "GET /connection/websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "EOF in the handshake answer");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        buf.drain(..end);
        RawPeer { tcp, buf }
    }

    /// Sends a masked text frame (a client's frames are masked).
    async fn send_text(&mut self, text: &str) {
        const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
        assert!(text.len() < 126);
        let mut frame = vec![0x80 | OP_TEXT, 0x80 | text.len() as u8];
        frame.extend_from_slice(&MASK);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        self.tcp.write_all(&frame).await.unwrap();
    }

    /// The next frame from the server (unmasked, unfragmented); `None` at EOF or a reset.
    async fn next_frame(&mut self) -> Option<RawFrame> {
        tokio::time::timeout(common::WAIT, async {
            loop {
                if let Some((frame, used)) = decode_frame(&self.buf) {
                    self.buf.drain(..used);
                    return Some(frame);
                }
                let mut chunk = [0u8; 8192];
                let n = self.tcp.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    assert!(self.buf.is_empty(), "EOF inside a frame");
                    return None;
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("a frame or the end in time")
    }
}

fn decode_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    assert_eq!(b1 & 0x80, 0, "server frames are not masked");
    let (len, at) = match b1 & 0x7f {
        126 => (usize::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)), 4),
        127 => (usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?, 10),
        n => (usize::from(n), 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((RawFrame { opcode: b0 & 0x0f, payload }, at + len))
}
