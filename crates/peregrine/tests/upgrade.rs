//! WebSocket upgrades inside hyper and axum, over real loopback sockets: our
//! client talks to a hyper (or axum) server that also serves plain HTTP on
//! the same port; refused handshakes are read back as raw bytes.
#![cfg(feature = "hyper")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use peregrine::upgrade::{self, Body, UpgradedWebSocket};
use peregrine::{ClientBuilder, CloseCode, Config, Error, Message, TimeoutKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

async fn echo(mut ws: UpgradedWebSocket) {
    while let Some(Ok(message)) = ws.recv().await {
        if message.is_data() && ws.send(message).await.is_err() {
            break;
        }
    }
}

// ---- a hyper server ----------------------------------------------------

async fn hyper_service(mut request: hyper::Request<Incoming>) -> Result<hyper::Response<Body>, Infallible> {
    let text = |status: u16, body: &'static str| {
        let mut response = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status.try_into().unwrap();
        response
    };
    Ok(match request.uri().path() {
        "/" => text(200, "plain http\n"),
        "/ws" => {
            match upgrade::upgrade_with_protocols(&mut request, &Config::default(), &["chat.v2", "chat.v1"]) {
                Ok((response, websocket)) => {
                    tokio::spawn(async move {
                        if let Ok(ws) = websocket.await {
                            echo(ws).await;
                        }
                    });
                    response
                }
                Err(error) => error.to_response(),
            }
        }
        // The trap: awaiting the socket before returning the 101.
        "/trap" => {
            let config = Config::default().handshake_timeout(Duration::from_millis(200));
            match upgrade::upgrade(&mut request, &config) {
                Ok((_response, websocket)) => match websocket.await {
                    Err(Error::Timeout(TimeoutKind::Handshake)) => text(500, "upgrade timed out\n"),
                    Err(_) => text(500, "upgrade failed otherwise\n"),
                    Ok(_) => text(500, "upgraded?!\n"),
                },
                Err(error) => error.to_response(),
            }
        }
        _ => text(404, "not found\n"),
    })
}

async fn hyper_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let connection = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(hyper_service))
                    .with_upgrades();
                let _ = connection.await;
            });
        }
    });
    addr
}

// ---- an axum server ----------------------------------------------------

#[cfg(feature = "axum")]
async fn axum_server() -> SocketAddr {
    use axum::Router;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use peregrine::upgrade::WebSocketUpgrade;

    async fn ws(ws: WebSocketUpgrade) -> Response {
        ws.protocols(["chat.v2", "chat.v1"]).on_upgrade(echo)
    }

    /// Sends the negotiated protocol and the path as the first message.
    async fn hello(ws: WebSocketUpgrade) -> Response {
        let ws = ws.protocols(["chat.v1"]).config(Config::default().ping_interval(None));
        let greeting = format!("{} {:?}", ws.request().path(), ws.selected_protocol());
        ws.on_upgrade(move |mut socket| async move {
            let _ = socket.send(Message::text(greeting)).await;
            echo(socket).await;
        })
    }

    async fn page_or_socket(ws: Option<WebSocketUpgrade>) -> Response {
        match ws {
            Some(ws) => ws.on_upgrade(echo),
            None => "a page\n".into_response(),
        }
    }

    let app = Router::new()
        .route("/", get(|| async { "plain http\n" }))
        .route("/ws", get(ws))
        .route("/hello", get(hello))
        .route("/either", get(page_or_socket));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

// ---- clients -------------------------------------------------------------

/// Connects offering `protocols`, checks that text and binary messages of
/// several sizes come back unchanged, closes, and returns the protocol the
/// server chose.
async fn echo_round_trip(url: &str, protocols: &[&str]) -> Option<String> {
    let mut client = ClientBuilder::new(url);
    for protocol in protocols {
        client = client.protocol(*protocol);
    }
    let (mut ws, response) = client.connect().await.unwrap();
    assert_eq!(response.status(), 101);
    let chosen = response.protocol().map(str::to_owned);
    ws.send(Message::text("héllo")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("héllo"));
    for size in [0, 125, 126, 65536, 1 << 20] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(payload.clone())).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::binary(payload), "size {size}");
    }
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    assert!(ws.recv().await.is_none());
    chosen
}

/// A response read back as text: status, headers (names lowercased), body.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Writes `request` and reads until the server closes the connection (every
/// refusal says `Connection: close`).
async fn raw_request(addr: SocketAddr, request: &str) -> RawResponse {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut bytes))
        .await
        .expect("the server closes the connection after a refusal")
        .unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    RawResponse { status, headers, body: body.to_owned() }
}

fn handshake(path: &str, version: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    )
}

fn assert_plain_get_refused(response: &RawResponse) {
    assert_eq!(response.status, 426);
    assert_eq!(response.header("upgrade"), Some("websocket"));
    assert!(response.body.contains("plain HTTP request"), "reason: {:?}", response.body);
}

fn assert_bad_version_refused(response: &RawResponse) {
    assert_eq!(response.status, 426);
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    assert_eq!(response.body, "unsupported Sec-WebSocket-Version 8: this server speaks version 13\n");
}

// ---- hyper ---------------------------------------------------------------

#[tokio::test]
async fn hyper_serves_plain_http_and_echoes_websocket_messages_on_one_port() {
    let addr = hyper_server().await;
    let page = raw_request(addr, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert_eq!((page.status, page.body.as_str()), (200, "plain http\n"));
    assert_eq!(echo_round_trip(&format!("ws://{addr}/ws"), &[]).await, None);
}

#[tokio::test]
async fn hyper_upgrade_picks_the_servers_preferred_subprotocol() {
    let addr = hyper_server().await;
    let url = format!("ws://{addr}/ws");
    assert_eq!(echo_round_trip(&url, &["chat.v1", "chat.v2"]).await.as_deref(), Some("chat.v2"));
    assert_eq!(echo_round_trip(&url, &["chat.v1", "mqtt"]).await.as_deref(), Some("chat.v1"));
    assert_eq!(echo_round_trip(&url, &["mqtt"]).await, None);
}

#[tokio::test]
async fn hyper_keeps_a_frame_sent_right_behind_the_handshake() {
    let addr = hyper_server().await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The handshake and a masked "hello" text frame in one write.
    let mut bytes = handshake("/ws", "13").into_bytes();
    let mask = [1u8, 2, 3, 4];
    bytes.extend_from_slice(&[0x81, 0x80 | 5]);
    bytes.extend_from_slice(&mask);
    bytes.extend(b"hello".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    tcp.write_all(&bytes).await.unwrap();

    let expected_head = "HTTP/1.1 101 Switching Protocols\r\n";
    let mut received = Vec::new();
    let read = async {
        while !received.ends_with(b"\x81\x05hello") {
            let mut chunk = [0u8; 1024];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0, "closed early: {:?}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.expect("the echo of the pipelined frame");
    let text = String::from_utf8_lossy(&received).into_owned();
    assert!(text.starts_with(expected_head), "{text:?}");
    assert!(
        text.to_ascii_lowercase().contains(&format!("sec-websocket-accept: {}", ACCEPT.to_ascii_lowercase()))
    );
}

#[tokio::test]
async fn hyper_answers_a_plain_get_on_the_websocket_route_with_426_and_a_reason() {
    let addr = hyper_server().await;
    let response = raw_request(addr, "GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_plain_get_refused(&response);
}

#[tokio::test]
async fn hyper_answers_another_version_with_426_naming_version_13() {
    let addr = hyper_server().await;
    let response = raw_request(addr, &handshake("/ws", "8")).await;
    assert_bad_version_refused(&response);
}

#[tokio::test]
async fn hyper_refuses_other_malformed_handshakes_like_accept_does() {
    let addr = hyper_server().await;
    let post = handshake("/ws", "13").replacen("GET", "POST", 1);
    let response = raw_request(addr, &post).await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET"));

    let bad_key = handshake("/ws", "13").replace(KEY, "c2hvcnQ=");
    let response = raw_request(addr, &bad_key).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body, "Sec-WebSocket-Key is not base64 of 16 bytes\n");

    let http10 = handshake("/ws", "13").replacen("HTTP/1.1", "HTTP/1.0", 1);
    let response = raw_request(addr, &http10).await;
    assert_eq!(response.status, 505);
}

#[tokio::test]
async fn awaiting_the_upgrade_inside_the_service_times_out_instead_of_hanging() {
    let addr = hyper_server().await;
    let response =
        raw_request(addr, &handshake("/trap", "13").replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"))
            .await;
    assert_eq!((response.status, response.body.as_str()), (500, "upgrade timed out\n"));
}

#[tokio::test]
async fn a_client_answered_with_plain_http_reports_the_status() {
    let addr = hyper_server().await;
    let err = peregrine::connect(&format!("ws://{addr}/")).await.unwrap_err();
    let Error::Handshake(error) = err else { panic!("{err}") };
    assert!(error.to_string().contains("200"), "{error}");
}

// ---- axum ----------------------------------------------------------------

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_extractor_echoes_and_negotiates_the_subprotocol() {
    let addr = axum_server().await;
    let page = raw_request(addr, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert_eq!((page.status, page.body.as_str()), (200, "plain http\n"));
    let url = format!("ws://{addr}/ws");
    assert_eq!(echo_round_trip(&url, &[]).await, None);
    assert_eq!(echo_round_trip(&url, &["chat.v1", "chat.v2"]).await.as_deref(), Some("chat.v2"));
    assert_eq!(echo_round_trip(&url, &["chat.v1"]).await.as_deref(), Some("chat.v1"));
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_handler_sees_the_request_and_the_selected_protocol() {
    let addr = axum_server().await;
    let (mut ws, response) =
        ClientBuilder::new(format!("ws://{addr}/hello?room=1")).protocol("chat.v1").connect().await.unwrap();
    assert_eq!(response.protocol(), Some("chat.v1"));
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("/hello?room=1 Some(\"chat.v1\")"));
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_extractor_refuses_a_plain_get_with_426_and_a_reason() {
    let addr = axum_server().await;
    let response = raw_request(addr, "GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_plain_get_refused(&response);
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_extractor_refuses_another_version_with_426_naming_version_13() {
    let addr = axum_server().await;
    let response = raw_request(addr, &handshake("/ws", "8")).await;
    assert_bad_version_refused(&response);
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_optional_extractor_serves_a_page_or_a_socket_on_one_route() {
    let addr = axum_server().await;
    let page =
        raw_request(addr, "GET /either HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert_eq!((page.status, page.body.as_str()), (200, "a page\n"));
    assert_eq!(echo_round_trip(&format!("ws://{addr}/either"), &[]).await, None);
    // Asking for a WebSocket badly is still refused.
    let response = raw_request(addr, &handshake("/either", "8")).await;
    assert_bad_version_refused(&response);
}
