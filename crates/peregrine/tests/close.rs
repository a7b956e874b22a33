//! The close handshake over real sockets: who closes, with what code, what
//! the other side sees, and what happens when the peer misbehaves.

mod raw;

use std::time::{Duration, Instant};

use peregrine::{ClientBuilder, CloseCode, CloseFrame, Config, Error, Message, TimeoutKind};
use raw::{FrameReader, OP_CLOSE, PATIENCE};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::timeout;

type ServerSocket = peregrine::WebSocket<TcpStream>;

/// Our client connected to our server; the server socket is returned to the test.
async fn pair(config: Config) -> (peregrine::WebSocket<peregrine::MaybeTlsStream<TcpStream>>, ServerSocket) {
    let (listener, addr) = raw::listener().await;
    let server_config = config.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        peregrine::accept_with(tcp, &server_config, |r| Ok(r.accept())).await.unwrap()
    });
    let (client, _) = ClientBuilder::new(format!("ws://{addr}/")).config(config).connect().await.unwrap();
    (client, server.await.unwrap())
}

/// Our server on one end, the raw peer on the other.
async fn server_and_raw_peer(config: Config) -> (ServerSocket, TcpStream, FrameReader) {
    let (listener, addr) = raw::listener().await;
    let peer = tokio::spawn(async move { raw::client(addr).await });
    let (tcp, _) = listener.accept().await.unwrap();
    let ws = peregrine::accept_with(tcp, &config, |r| Ok(r.accept())).await.unwrap();
    let (tcp, leftover) = peer.await.unwrap();
    (ws, tcp, FrameReader::new(leftover))
}

fn close_of(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame::new(CloseCode::from(code), reason)))
}

#[tokio::test]
async fn client_close_reaches_the_server_with_code_and_reason() {
    let (mut client, mut server) = pair(Config::default()).await;
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(message) = server.recv().await {
            seen.push(message.unwrap());
        }
        seen
    });
    timeout(PATIENCE, client.close(CloseCode::NORMAL, "bye")).await.expect("close returned").unwrap();
    assert!(client.recv().await.is_none(), "a closed socket yields None");
    let seen = timeout(PATIENCE, server).await.unwrap().unwrap();
    assert_eq!(seen, vec![close_of(1000, "bye")], "server sees the close, then None");
}

#[tokio::test]
async fn server_close_reaches_the_client_and_both_streams_end() {
    let (mut client, mut server) = pair(Config::default()).await;
    let client = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(message) = client.recv().await {
            seen.push(message.unwrap());
        }
        seen
    });
    timeout(PATIENCE, server.close(CloseCode::GOING_AWAY, "restarting"))
        .await
        .expect("close returned")
        .unwrap();
    assert!(server.recv().await.is_none());
    let seen = timeout(PATIENCE, client).await.unwrap().unwrap();
    assert_eq!(seen, vec![close_of(1001, "restarting")]);
}

#[tokio::test]
async fn custom_close_code_and_reason_travel_as_sent() {
    let (mut client, mut server) = pair(Config::default()).await;
    let server = tokio::spawn(async move { (server.recv().await, server.recv().await.is_none()) });
    client.close(CloseCode::from(4000), "custom: session expired").await.unwrap();
    let (first, ended) = timeout(PATIENCE, server).await.unwrap().unwrap();
    assert_eq!(first.unwrap().unwrap(), close_of(4000, "custom: session expired"));
    assert!(ended);
}

#[tokio::test]
async fn the_close_reply_echoes_the_code_on_the_wire() {
    let (mut ws, mut peer, mut frames) = server_and_raw_peer(Config::default()).await;
    peer.write_all(&raw::masked(OP_CLOSE, &raw::close_payload(4001, "peer leaving"))).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), close_of(4001, "peer leaving"));
    assert!(ws.recv().await.is_none());
    let reply = frames.next(&mut peer).await.expect("close reply");
    assert_eq!((reply.opcode, reply.masked, reply.close_code()), (OP_CLOSE, false, Some(4001)));
    assert_eq!(frames.next(&mut peer).await, None, "the server ends TCP after the handshake");
    drop(ws);
}

#[tokio::test]
async fn data_after_our_close_frame_is_discarded_by_close() {
    let (mut ws, mut peer, mut frames) = server_and_raw_peer(Config::default()).await;
    let closing = tokio::spawn(async move {
        let result = ws.close(CloseCode::NORMAL, "").await;
        (result, ws)
    });
    let close = frames.next(&mut peer).await.expect("our close frame");
    assert_eq!(close.close_code(), Some(1000));
    // The peer had messages in flight; close() must not trip over them.
    peer.write_all(&raw::masked(raw::OP_TEXT, b"late")).await.unwrap();
    peer.write_all(&raw::masked(OP_CLOSE, &raw::close_payload(1000, ""))).await.unwrap();
    let (result, mut ws) = timeout(PATIENCE, closing).await.unwrap().unwrap();
    result.unwrap();
    assert!(ws.recv().await.is_none());
    assert_eq!(frames.next(&mut peer).await, None);
}

#[tokio::test]
async fn peer_dropping_tcp_without_close_is_abnormal_closure() {
    let (mut ws, peer, _) = server_and_raw_peer(Config::default()).await;
    drop(peer);
    let first = timeout(PATIENCE, ws.recv()).await.unwrap();
    assert!(matches!(first, Some(Err(Error::AbnormalClosure))), "{first:?}");
    assert!(ws.recv().await.is_none());
}

/// After the peer's EOF there is nothing left to wait for: the server ends
/// at once (not at the close timeout), and dropping it sends our FIN.
#[tokio::test]
async fn after_the_peers_eof_the_server_ends_at_once_and_its_drop_closes_tcp() {
    let config = Config::default().close_timeout(Duration::from_secs(60));
    let (mut ws, mut peer, mut frames) = server_and_raw_peer(config).await;
    peer.write_all(&raw::masked(raw::OP_TEXT, b"last words")).await.unwrap();
    peer.shutdown().await.unwrap();
    let first = timeout(PATIENCE, ws.recv()).await.unwrap();
    assert_eq!(first.map(|m| m.ok()), Some(Some(Message::text("last words"))));
    let second = timeout(PATIENCE, ws.recv()).await.unwrap();
    assert!(matches!(second, Some(Err(Error::AbnormalClosure))), "{second:?}");
    assert!(timeout(PATIENCE, ws.recv()).await.unwrap().is_none(), "the stream ends without a timeout");
    drop(ws);
    assert_eq!(timeout(PATIENCE, frames.next(&mut peer)).await.unwrap(), None, "EOF from the server");
}

#[tokio::test]
async fn server_dropping_tcp_is_abnormal_closure_for_our_client() {
    let (mut client, server) = pair(Config::default()).await;
    drop(server);
    let first = timeout(PATIENCE, client.recv()).await.unwrap();
    assert!(matches!(first, Some(Err(Error::AbnormalClosure))), "{first:?}");
    assert!(client.recv().await.is_none());
}

#[tokio::test]
async fn peer_resetting_tcp_is_an_io_error() {
    let (mut ws, peer, _) = server_and_raw_peer(Config::default()).await;
    socket2::SockRef::from(&peer).set_linger(Some(Duration::ZERO)).unwrap();
    drop(peer);
    let first = timeout(PATIENCE, ws.recv()).await.unwrap();
    match first {
        Some(Err(Error::Io(e))) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        other => panic!("expected a reset, got {other:?}"),
    }
    assert!(ws.recv().await.is_none());
}

#[tokio::test]
async fn close_times_out_when_the_peer_never_answers() {
    // The raw peer reads our close frame but never sends its own: close()
    // gives up after close_timeout and says so.
    const CLOSE_TIMEOUT: Duration = Duration::from_millis(300);
    let config = Config::default().close_timeout(CLOSE_TIMEOUT);
    let (mut ws, mut peer, mut frames) = server_and_raw_peer(config).await;
    let start = Instant::now();
    let result = timeout(PATIENCE, ws.close(CloseCode::NORMAL, "bye")).await.expect("close returned");
    let elapsed = start.elapsed();
    assert!(matches!(result, Err(Error::Timeout(TimeoutKind::Close))), "{result:?}");
    assert!(elapsed >= CLOSE_TIMEOUT - Duration::from_millis(20), "gave up early: {elapsed:?}");
    assert!(elapsed < CLOSE_TIMEOUT + Duration::from_secs(1), "gave up late: {elapsed:?}");
    assert!(timeout(PATIENCE, ws.recv()).await.unwrap().is_none());

    let close = frames.next(&mut peer).await.expect("our close frame");
    assert_eq!((close.close_code(), close.close_reason()), (Some(1000), "bye"));
    assert_eq!(frames.next(&mut peer).await, None);
}

#[tokio::test]
async fn client_close_returns_ok_after_the_timeout_when_the_server_never_ends_tcp() {
    // The server answers the close frame but keeps TCP open. The handshake is
    // complete, so close() is Ok, but it waits (up to close_timeout) for the
    // server's EOF so that the server holds TIME_WAIT.
    const CLOSE_TIMEOUT: Duration = Duration::from_millis(300);
    let (listener, addr) = raw::listener().await;
    let (release, released) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        raw::server_handshake(&mut tcp, "").await;
        let mut frames = FrameReader::default();
        let close = frames.next(&mut tcp).await.expect("client close");
        assert!(close.masked);
        tcp.write_all(&raw::frame(OP_CLOSE, &close.payload, None)).await.unwrap();
        let _ = released.await;
        tcp
    });
    let config = Config::default().close_timeout(CLOSE_TIMEOUT);
    let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/")).config(config).connect().await.unwrap();
    let start = Instant::now();
    timeout(PATIENCE, ws.close(CloseCode::NORMAL, "")).await.expect("close returned").unwrap();
    let elapsed = start.elapsed();
    assert!(elapsed >= CLOSE_TIMEOUT - Duration::from_millis(20), "{elapsed:?}");
    assert!(elapsed < CLOSE_TIMEOUT + Duration::from_secs(1), "{elapsed:?}");
    drop(release);
    drop(server.await.unwrap());
}

#[tokio::test]
async fn after_close_times_out_the_peer_sees_tcp_end_while_the_socket_is_still_held() {
    // close() documents that it "ends the TCP connection". When the close
    // handshake times out, the peer should see EOF without waiting for the
    // application to drop the socket.
    const CLOSE_TIMEOUT: Duration = Duration::from_millis(300);
    let config = Config::default().close_timeout(CLOSE_TIMEOUT);
    let (mut ws, mut peer, mut frames) = server_and_raw_peer(config).await;
    let result = timeout(PATIENCE, ws.close(CloseCode::NORMAL, "")).await.expect("close returned");
    assert!(matches!(result, Err(Error::Timeout(TimeoutKind::Close))), "{result:?}");
    // `ws` is still alive here.
    let close = frames.next(&mut peer).await.expect("our close frame");
    assert_eq!(close.close_code(), Some(1000));
    let eof = timeout(Duration::from_secs(2), frames.next(&mut peer)).await;
    assert_eq!(eof, Ok(None), "TCP must be ended once close() has returned");
    drop(ws);
}

#[tokio::test]
async fn close_is_bounded_by_the_close_timeout_even_when_the_peer_stopped_reading() {
    // A peer that stopped reading fills the socket buffers; our close frame
    // cannot be written. close_timeout must still bound close().
    const CLOSE_TIMEOUT: Duration = Duration::from_millis(300);
    let config = Config::default().close_timeout(CLOSE_TIMEOUT);
    let (mut ws, _peer, _) = server_and_raw_peer(config).await;
    let big = Message::binary(vec![0u8; 1 << 20]);
    // Fill the kernel buffers until a send stays blocked.
    let mut blocked = false;
    for _ in 0..64 {
        if timeout(Duration::from_millis(300), ws.send(big.clone())).await.is_err() {
            blocked = true;
            break;
        }
    }
    assert!(blocked, "the peer's buffers never filled");
    let start = Instant::now();
    let result = timeout(Duration::from_secs(3), ws.close(CloseCode::NORMAL, "")).await;
    assert!(result.is_ok(), "close() still waiting after {:?}", start.elapsed());
}
