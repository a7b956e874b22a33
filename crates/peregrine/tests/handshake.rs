//! The opening handshake over real sockets: what our server answers to raw
//! requests, and what our client makes of raw responses.

mod raw;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peregrine::proto::handshake::{HandshakeError, Rejection, Request};
use peregrine::{ClientBuilder, Config, Error, Limits, Message, TimeoutKind};
use raw::PATIENCE;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;

// ---- our server, raw requests ------------------------------------------------

type Decide = fn(&Request) -> Result<peregrine::proto::handshake::AcceptResponse, Rejection>;

fn accept_all(request: &Request) -> Result<peregrine::proto::handshake::AcceptResponse, Rejection> {
    Ok(request.accept())
}

/// Starts our server for one connection; its handshake result comes back
/// through the handle.
async fn server(
    config: Config,
    decide: Decide,
) -> (SocketAddr, JoinHandle<peregrine::Result<peregrine::WebSocket<TcpStream>>>) {
    let (listener, addr) = raw::listener().await;
    let handle = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        peregrine::accept_with(tcp, &config, decide).await
    });
    (addr, handle)
}

/// Sends `request` to our server and reads the whole answer: (head, body,
/// what `accept_with` returned).
async fn refused(request: &str, config: Config, decide: Decide) -> (String, String, Error) {
    let (addr, handle) = server(config, decide).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.replace("{addr}", &addr.to_string()).as_bytes()).await.unwrap();
    let answer = timeout(PATIENCE, raw::read_to_end(&mut tcp)).await.expect("the server ends the connection");
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete HTTP response");
    let error = timeout(PATIENCE, handle).await.unwrap().unwrap().expect_err("the handshake must fail");
    (head.to_owned(), body.to_owned(), error)
}

fn assert_content_length(head: &str, body: &str) {
    assert_eq!(raw::header(head, "Content-Length"), Some(body.len().to_string().as_str()), "{head}");
}

#[tokio::test]
async fn a_request_without_upgrade_gets_426_with_the_reason() {
    let request = "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (head, body, error) = refused(request, Config::default(), accept_all).await;
    assert_eq!(raw::status(&head), 426, "{head}");
    assert_eq!(raw::header(&head, "Upgrade"), Some("websocket"));
    assert_eq!(body, "missing Upgrade: websocket header\n");
    assert_content_length(&head, &body);
    assert!(matches!(error, Error::Handshake(HandshakeError::MissingUpgrade)), "{error:?}");
}

#[tokio::test]
async fn a_plain_http_request_gets_426_explaining_this_is_a_websocket_endpoint() {
    let (head, body, error) =
        refused("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n", Config::default(), accept_all).await;
    assert_eq!(raw::status(&head), 426, "{head}");
    assert!(body.contains("WebSocket endpoint"), "{body}");
    assert!(matches!(error, Error::Handshake(HandshakeError::NotAnUpgrade)), "{error:?}");
}

#[tokio::test]
async fn an_unsupported_version_gets_426_advertising_version_13() {
    let request = "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n";
    let (head, body, error) = refused(request, Config::default(), accept_all).await;
    assert_eq!(raw::status(&head), 426, "{head}");
    assert_eq!(raw::header(&head, "Sec-WebSocket-Version"), Some("13"), "{head}");
    assert!(body.contains("unsupported Sec-WebSocket-Version 8"), "{body}");
    assert!(
        matches!(error, Error::Handshake(HandshakeError::UnsupportedVersion(ref v)) if v == "8"),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_malformed_key_gets_400() {
    let request = "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: not-a-key\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (head, body, error) = refused(request, Config::default(), accept_all).await;
    assert_eq!(raw::status(&head), 400, "{head}");
    assert_eq!(body, "Sec-WebSocket-Key is not base64 of 16 bytes\n");
    assert!(matches!(error, Error::Handshake(HandshakeError::InvalidKey)), "{error:?}");
}

#[tokio::test]
async fn a_post_gets_405_allowing_get() {
    let request = "POST / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                   Content-Length: 0\r\n\r\n";
    let (head, body, error) = refused(request, Config::default(), accept_all).await;
    assert_eq!(raw::status(&head), 405, "{head}");
    assert_eq!(raw::header(&head, "Allow"), Some("GET"));
    assert!(body.contains("method POST is not allowed"), "{body}");
    assert!(
        matches!(error, Error::Handshake(HandshakeError::MethodNotAllowed(ref m)) if m == "POST"),
        "{error:?}"
    );
}

#[tokio::test]
async fn http_1_0_gets_505() {
    let request = "GET / HTTP/1.0\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (head, _, error) = refused(request, Config::default(), accept_all).await;
    assert_eq!(raw::status(&head), 505, "{head}");
    assert!(matches!(error, Error::Handshake(HandshakeError::UnsupportedHttpVersion)), "{error:?}");
}

#[tokio::test]
async fn a_header_block_over_the_limit_gets_431() {
    let config = Config::default().limits(Limits::default().max_header_size(1024));
    let padding = "a".repeat(2000);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {{addr}}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Padding: {padding}\r\n\r\n"
    );
    let (head, body, error) = refused(&request, config, accept_all).await;
    assert_eq!(raw::status(&head), 431, "{head}");
    assert!(body.contains("larger than 1024 bytes"), "{body}");
    assert!(matches!(error, Error::Handshake(HandshakeError::RequestTooLarge { limit: 1024 })), "{error:?}");
}

#[tokio::test]
async fn a_callback_refuses_a_bad_origin_with_403_and_its_reason() {
    fn check_origin(request: &Request) -> Result<peregrine::proto::handshake::AcceptResponse, Rejection> {
        match request.origin() {
            Some("https://app.example") => Ok(request.accept()),
            other => Err(Rejection::new(403, format!("origin {} is not allowed", other.unwrap_or("(none)")))),
        }
    }
    let request = "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                   Origin: https://evil.example\r\n\r\n";
    let (head, body, error) = refused(request, Config::default(), check_origin).await;
    assert_eq!(raw::status(&head), 403, "{head}");
    assert_eq!(body, "origin https://evil.example is not allowed\n");
    match error {
        Error::Rejected { status, reason } => {
            assert_eq!((status, reason.as_str()), (403, "origin https://evil.example is not allowed"));
        }
        other => panic!("expected Rejected, got {other:?}"),
    }

    // The right origin is let in.
    let (addr, handle) = server(Config::default(), check_origin).await;
    let ws = ClientBuilder::new(format!("ws://{addr}/")).origin("https://app.example").connect().await;
    assert!(ws.is_ok(), "{:?}", ws.err());
    assert!(handle.await.unwrap().is_ok());
}

#[tokio::test]
async fn the_subprotocol_the_callback_chooses_is_in_the_101_and_the_client_response() {
    fn choose(request: &Request) -> Result<peregrine::proto::handshake::AcceptResponse, Rejection> {
        let accept = request.accept();
        Ok(match request.choose_protocol(&["chat.v2", "chat.v1"]) {
            Some(protocol) => accept.with_protocol(protocol),
            None => accept,
        })
    }
    // Raw: the header is on the wire.
    let (addr, handle) = server(Config::default(), choose).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(raw::request_with(addr, "Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n").as_bytes())
        .await
        .unwrap();
    let (head, _) = raw::read_head(&mut tcp).await;
    assert_eq!(raw::status(&head), 101, "{head}");
    assert_eq!(raw::header(&head, "Sec-WebSocket-Protocol"), Some("chat.v2"), "{head}");
    assert!(handle.await.unwrap().is_ok());

    // Our client: the response says which one.
    let (addr, handle) = server(Config::default(), choose).await;
    let (_ws, response) = ClientBuilder::new(format!("ws://{addr}/"))
        .protocol("chat.v1")
        .protocol("chat.v2")
        .connect()
        .await
        .unwrap();
    assert_eq!(response.protocol(), Some("chat.v2"));
    assert!(handle.await.unwrap().is_ok());

    // Nothing in common: no protocol, still connected.
    let (addr, handle) = server(Config::default(), choose).await;
    let (_ws, response) =
        ClientBuilder::new(format!("ws://{addr}/")).protocol("other").connect().await.unwrap();
    assert_eq!(response.protocol(), None);
    assert!(handle.await.unwrap().is_ok());
}

#[tokio::test]
async fn frames_sent_right_behind_the_request_are_not_lost() {
    let (addr, handle) = server(Config::default(), accept_all).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = raw::request(addr).into_bytes();
    bytes.extend(raw::masked(raw::OP_TEXT, b"first"));
    bytes.extend(raw::masked(raw::OP_BINARY, b"second"));
    tcp.write_all(&bytes).await.unwrap();
    let mut ws = handle.await.unwrap().unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("first"));
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::binary(&b"second"[..]));
}

#[tokio::test]
async fn the_server_handshake_times_out_on_a_silent_client() {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(300);
    let config = Config::default().handshake_timeout(HANDSHAKE_TIMEOUT);
    let (addr, handle) = server(config, accept_all).await;
    let start = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // Half a request, then silence.
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let result = timeout(PATIENCE, handle).await.expect("accept_with gave up").unwrap();
    let elapsed = start.elapsed();
    assert!(matches!(result, Err(Error::Timeout(TimeoutKind::Handshake))), "{:?}", result.map(|_| ()));
    assert!(elapsed >= HANDSHAKE_TIMEOUT - Duration::from_millis(20), "{elapsed:?}");
    assert!(elapsed < HANDSHAKE_TIMEOUT + Duration::from_secs(1), "{elapsed:?}");
    // The connection is dropped, not answered.
    assert!(raw::read_to_end(&mut tcp).await.is_empty());
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_request_is_an_io_error() {
    let (addr, handle) = server(Config::default(), accept_all).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    drop(tcp);
    let result = timeout(PATIENCE, handle).await.unwrap().unwrap();
    match result {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
        other => panic!("expected UnexpectedEof, got {:?}", other.map(|_| ())),
    }
}

// ---- our client, raw responses -----------------------------------------------

/// A raw server for one connection: reads the request, answers with what
/// `respond` makes of its `Sec-WebSocket-Key`, then waits for the client to go.
async fn raw_server(respond: impl FnOnce(&str) -> String + Send + 'static) -> SocketAddr {
    raw_server_bytes(|key| respond(key).into_bytes()).await
}

/// [`raw_server`] with a response that need not be text.
async fn raw_server_bytes(respond: impl FnOnce(&str) -> Vec<u8> + Send + 'static) -> SocketAddr {
    let (listener, addr) = raw::listener().await;
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let (head, _) = raw::read_head(&mut tcp).await;
        let key = raw::header(&head, "Sec-WebSocket-Key").unwrap().to_owned();
        tcp.write_all(&respond(&key)).await.unwrap();
        raw::read_to_end(&mut tcp).await;
    });
    addr
}

async fn client_error(
    addr: SocketAddr,
    builder: impl FnOnce(ClientBuilder) -> ClientBuilder,
) -> HandshakeError {
    let result =
        timeout(PATIENCE, builder(ClientBuilder::new(format!("ws://{addr}/"))).connect()).await.unwrap();
    match result {
        Err(Error::Handshake(error)) => error,
        other => panic!("expected a handshake error, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_403_is_an_unexpected_status_with_its_headers() {
    let addr = raw_server(|_| {
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Denied-By: policy\r\nContent-Length: 3\r\n\r\nno\n"
            .to_owned()
    })
    .await;
    match client_error(addr, |b| b).await {
        HandshakeError::UnexpectedStatus { status, reason, headers, .. } => {
            assert_eq!((status, reason.as_str()), (403, "Forbidden"));
            assert_eq!(headers.get("x-denied-by"), Some("policy"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_404_is_an_unexpected_status() {
    let addr = raw_server(|_| "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()).await;
    let error = client_error(addr, |b| b).await;
    assert!(matches!(error, HandshakeError::UnexpectedStatus { status: 404, .. }), "{error:?}");
}

#[tokio::test]
async fn a_plain_200_is_an_unexpected_status() {
    let addr = raw_server(|_| {
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 6\r\n\r\nhello\n".to_owned()
    })
    .await;
    match client_error(addr, |b| b).await {
        HandshakeError::UnexpectedStatus { status, headers, .. } => {
            assert_eq!(status, 200);
            assert_eq!(headers.get("content-type"), Some("text/html"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_101_with_the_wrong_accept_value_is_refused() {
    let addr = raw_server(|_| {
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            .to_owned()
    })
    .await;
    match client_error(addr, |b| b).await {
        HandshakeError::AcceptMismatch { expected, received } => {
            assert_eq!(received, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
            assert_ne!(expected, received);
            assert_eq!(expected.len(), 28);
        }
        other => panic!("{other:?}"),
    }
}

fn switching(key: &str, extra: &str) -> String {
    let accept = peregrine::proto::handshake::accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn a_101_choosing_an_unoffered_subprotocol_is_refused() {
    let addr = raw_server(|key| switching(key, "Sec-WebSocket-Protocol: chat.v9\r\n")).await;
    let error = client_error(addr, |b| b.protocol("chat.v1")).await;
    assert_eq!(error, HandshakeError::UnofferedProtocol("chat.v9".to_owned()));
}

#[tokio::test]
async fn a_101_with_a_subprotocol_when_none_was_offered_is_refused() {
    let addr = raw_server(|key| switching(key, "Sec-WebSocket-Protocol: chat.v1\r\n")).await;
    let error = client_error(addr, |b| b).await;
    assert_eq!(error, HandshakeError::UnofferedProtocol("chat.v1".to_owned()));
}

#[tokio::test]
async fn a_101_without_upgrade_is_refused() {
    let addr = raw_server(|key| {
        let accept = peregrine::proto::handshake::accept_key(key.as_bytes());
        format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
    })
    .await;
    assert_eq!(client_error(addr, |b| b).await, HandshakeError::ResponseMissingUpgrade);
}

#[tokio::test]
async fn the_client_sends_what_the_builder_says() {
    let (listener, addr) = raw::listener().await;
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let head = raw::server_handshake(&mut tcp, "Sec-WebSocket-Protocol: b\r\n").await;
        raw::read_to_end(&mut tcp).await;
        head
    });
    let (ws, response) = ClientBuilder::new(format!("ws://{addr}/chat?room=1"))
        .protocol("a")
        .protocol("b")
        .origin("https://app.example")
        .header("Authorization", "Bearer token")
        .connect()
        .await
        .unwrap();
    assert_eq!(response.protocol(), Some("b"));
    drop(ws);
    let head = server.await.unwrap();
    assert!(head.starts_with("GET /chat?room=1 HTTP/1.1\r\n"), "{head}");
    assert_eq!(raw::header(&head, "Host"), Some(addr.to_string().as_str()));
    assert_eq!(raw::header(&head, "Upgrade"), Some("websocket"));
    assert_eq!(raw::header(&head, "Sec-WebSocket-Version"), Some("13"));
    assert_eq!(raw::header(&head, "Sec-WebSocket-Protocol"), Some("a, b"));
    assert_eq!(raw::header(&head, "Origin"), Some("https://app.example"));
    assert_eq!(raw::header(&head, "Authorization"), Some("Bearer token"));
}

#[tokio::test]
async fn a_frame_right_behind_the_101_is_not_lost() {
    let addr = raw_server_bytes(|key| {
        let mut response = switching(key, "").into_bytes();
        // Unmasked text "hi" from the server, in the same write as the 101.
        response.extend(raw::frame(raw::OP_TEXT, b"hi", None));
        response
    })
    .await;
    let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/")).connect().await.unwrap();
    assert_eq!(timeout(PATIENCE, ws.recv()).await.unwrap().unwrap().unwrap(), Message::text("hi"));
}

#[tokio::test]
async fn the_client_handshake_times_out_on_a_server_that_never_answers() {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(300);
    let (listener, addr) = raw::listener().await;
    let server = tokio::spawn(async move {
        // Accept TCP, read the request, say nothing.
        let (mut tcp, _) = listener.accept().await.unwrap();
        raw::read_to_end(&mut tcp).await
    });
    let config = Config::default().handshake_timeout(HANDSHAKE_TIMEOUT);
    let start = Instant::now();
    let result = timeout(PATIENCE, ClientBuilder::new(format!("ws://{addr}/")).config(config).connect())
        .await
        .unwrap();
    let elapsed = start.elapsed();
    assert!(matches!(result, Err(Error::Timeout(TimeoutKind::Handshake))), "{:?}", result.map(|_| ()));
    assert!(elapsed >= HANDSHAKE_TIMEOUT - Duration::from_millis(20), "{elapsed:?}");
    assert!(elapsed < HANDSHAKE_TIMEOUT + Duration::from_secs(1), "{elapsed:?}");
    // The client gave up and closed its end.
    let request = timeout(PATIENCE, server).await.expect("client closed TCP").unwrap();
    assert!(request.starts_with(b"GET / HTTP/1.1\r\n"));
}
