//! The HTTP transports over real sockets: Server-Sent Events, HTTP streaming and
//! long-polling carry the same protocol as WebSocket, commands come by `POST
//! /connection/send`, and bad requests get a clear HTTP error without touching anyone's
//! session.

mod common;

use std::time::Duration;

use common::{TestServer, WAIT};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP response read as it streams: the head, then the body's bytes de-chunked.
struct Streamed {
    tcp: TcpStream,
    raw: Vec<u8>,
    head: String,
    body: Vec<u8>,
}

impl Streamed {
    async fn open(server: &TestServer, request: String) -> Streamed {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut s = Streamed { tcp, raw: Vec::new(), head: String::new(), body: Vec::new() };
        while !s.raw.windows(4).any(|w| w == b"\r\n\r\n") {
            s.read_more().await;
        }
        let end = s.raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        s.head = String::from_utf8_lossy(&s.raw[..end]).to_ascii_lowercase();
        s.raw.drain(..end + 4);
        s
    }

    async fn read_more(&mut self) {
        let mut buf = [0u8; 8192];
        let n = tokio::time::timeout(WAIT, self.tcp.read(&mut buf)).await.expect("data in time").unwrap();
        assert!(n > 0, "the stream ended");
        self.raw.extend_from_slice(&buf[..n]);
    }

    /// Moves whole chunks from `raw` to `body`.
    fn dechunk(&mut self) {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else { return };
            let size = usize::from_str_radix(std::str::from_utf8(&self.raw[..line_end]).unwrap().trim(), 16)
                .unwrap();
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            self.body.extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
            self.raw.drain(..line_end + 2 + size + 2);
        }
    }

    /// Reads until the body holds `needle`, then returns the body so far and clears it.
    async fn until(&mut self, needle: &str) -> String {
        loop {
            self.dechunk();
            if let Some(at) = String::from_utf8_lossy(&self.body).find(needle) {
                let text = String::from_utf8_lossy(&self.body).into_owned();
                let cut = at + needle.len();
                self.body.drain(..cut);
                return text[..cut].to_owned();
            }
            self.read_more().await;
        }
    }
}

fn sse_request(server: &TestServer, commands: &str) -> String {
    let commands: String = url::form_urlencoded::byte_serialize(commands.as_bytes()).collect();
    format!(
        "GET /connection/sse?commands={commands} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.addr
    )
}

/// The opening command of an anonymous session.
const CONNECT: &str = "{\"id\":1,\"connect\":{}}";

/// Opens a long-polling session with the commands `opening`: its key.
async fn open_poll(server: &TestServer, opening: &str) -> String {
    let (status, opened) = server.api_text("/connection/poll/open", opening).await;
    assert_eq!(status, 200, "{opened}");
    serde_json::from_str::<Value>(&opened).unwrap()["session"].as_str().unwrap().to_owned()
}

/// `POST /connection/send` of `body` for `key`: status and body.
async fn send(server: &TestServer, key: &str, body: &str) -> (u16, String) {
    server.api_text(&format!("/connection/send?session={key}"), body).await
}

#[tokio::test]
async fn sse_carries_the_protocol_and_commands_come_by_post() {
    let server = TestServer::dev().await;
    let opening = "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"chat\"}}";
    let mut sse = Streamed::open(&server, sse_request(&server, opening)).await;
    assert!(sse.head.starts_with("http/1.1 200"), "{}", sse.head);
    assert!(sse.head.contains("content-type: text/event-stream"), "{}", sse.head);
    let first = sse.until("\n\n").await;
    let key = first.strip_prefix("event: session\ndata: ").unwrap().trim().to_owned();
    let (node, secret) = key.split_once('.').expect("<node id>.<secret>");
    assert_eq!(node, server.node.id(), "the key names the node holding the session");
    assert_eq!(secret.len(), 64, "32 random bytes");
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret}");
    let replies = sse.until("\"subscribe\"").await;
    assert!(replies.contains("data: {\"id\":1,\"connect\""), "{replies}");

    let (status, _) =
        send(&server, &key, r#"{"id":3,"publish":{"channel":"chat","data":{"b":2,"a":1}}}"#).await;
    assert_eq!(status, 204);
    let publication = sse.until("\"id\":3").await;
    assert!(publication.contains(r#""data":{"b":2,"a":1}"#), "payload as published: {publication}");
    assert_eq!(server.node.metrics().transport_connections("sse").get(), 1);

    // The client goes away: its session ends and leaves nothing behind.
    drop(sse);
    server.finish().await;
}

#[tokio::test]
async fn http_streaming_sends_one_message_per_line() {
    let server = TestServer::dev().await;
    let body = CONNECT;
    let request = format!(
        "POST /connection/stream HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    let mut stream = Streamed::open(&server, request).await;
    assert!(stream.head.contains("application/x-ndjson"), "{}", stream.head);
    let first: Value = serde_json::from_str(stream.until("\n").await.trim()).unwrap();
    let key = first["session"].as_str().unwrap().to_owned();
    let connect: Value = serde_json::from_str(stream.until("\n").await.trim()).unwrap();
    assert!(connect["connect"]["client_id"].is_string(), "{connect}");
    let (status, _) = send(&server, &key, "{\"id\":2,\"ping\":{}}").await;
    assert_eq!(status, 204);
    let pong: Value = serde_json::from_str(stream.until("\n").await.trim()).unwrap();
    assert_eq!(pong, json!({"id": 2, "ping": {}}));
    drop(stream);
    server.finish().await;
}

#[tokio::test]
async fn long_polling_resends_until_acknowledged_and_ends_when_nobody_polls() {
    let mut config = peregrine_server::config::Config::development();
    config.client.ping_interval = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let key = open_poll(&server, CONNECT).await;
    let poll = |ack: u64| {
        let (server, key) = (&server, key.clone());
        async move {
            let (status, body) = server.get(&format!("/connection/poll?session={key}&ack={ack}")).await;
            assert_eq!(status, 200, "{body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };
    let first = poll(0).await;
    assert_eq!(first["seq"], 1);
    assert!(first["frames"][0].as_str().unwrap().contains("\"connect\""), "{first}");
    // The answer was lost: the same poll again gets the same frame.
    assert_eq!(poll(0).await, first);
    // Acknowledged: an empty answer after the poll time.
    let empty = poll(1).await;
    assert_eq!(empty, json!({"seq": 1, "frames": []}));
    let (status, _) = send(&server, &key, "{\"id\":2,\"ping\":{}}").await;
    assert_eq!(status, 204);
    let pong = poll(1).await;
    assert_eq!(pong["frames"], json!(["{\"id\":2,\"ping\":{}}"]));
    // Nobody polls for twice the poll time: the session ends, its key with it.
    let gone = async {
        while server.node.session_count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, gone).await.expect("the session ends");
    let (status, body) = server.get(&format!("/connection/poll?session={key}&ack=2")).await;
    assert_eq!(status, 404, "{body}");
    // A command for the ended session: the same answer.
    let (status, body) = send(&server, &key, "{\"id\":3,\"ping\":{}}").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("unknown or expired session"), "{body}");
    server.finish().await;
}

#[tokio::test]
async fn bad_opening_requests_get_a_clear_error_and_open_no_session() {
    let mut config = peregrine_server::config::Config::development();
    // The long-polling session opened at the end ends soon after nobody polls.
    config.client.ping_interval = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let big = format!("{{\"id\":1,\"publish\":{{\"channel\":\"c\",\"data\":\"{}\"}}}}", "x".repeat(70_000));
    for path in ["/connection/stream", "/connection/poll/open"] {
        for (body, status, why) in [
            ("not json", 400, "malformed commands"),
            ("{\"id\":1,\"nonsense\":{}}", 400, "malformed commands"),
            (big.as_str(), 413, "at most 65536 bytes"),
        ] {
            let (got, answer) = server.api_text(path, body).await;
            assert_eq!(got, status, "{path} with {:.30}: {answer}", body);
            assert!(answer.contains(why), "{path}: {answer}");
        }
        let not_utf8 = b"{\"id\":1,\"connect\":{\"name\":\"\xff\"}}";
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            server.addr,
            not_utf8.len()
        );
        let (got, answer) = common::http(server.addr, [head.as_bytes(), not_utf8].concat()).await;
        let reason = serde_json::from_str::<Value>(&answer).unwrap()["error"].clone();
        assert_eq!((got, reason), (400, json!("malformed commands: not UTF-8 (byte 27)")), "{path}");
    }
    let (status, answer) = server.get("/connection/sse?commands=not%20json").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("malformed commands"), "{answer}");
    assert_eq!(server.node.session_count(), 0, "no session was opened");
    // The node is unaffected: a good opening request opens a session.
    let key = open_poll(&server, CONNECT).await;
    assert_eq!(server.node.session_count(), 1);
    let (status, body) = server.get(&format!("/connection/poll?session={key}&ack=0")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("client_id"), "{body}");
    server.finish().await;
}

#[tokio::test]
async fn bad_requests_get_a_clear_error_and_touch_no_session() {
    let server = TestServer::dev().await;
    let mut sse = Streamed::open(&server, sse_request(&server, CONNECT)).await;
    let first = sse.until("\n\n").await;
    let key = first.strip_prefix("event: session\ndata: ").unwrap().trim().to_owned();
    sse.until("\"connect\"").await;

    for unknown in [format!("{}.{}", server.node.id(), "0".repeat(64)), "0".repeat(64), String::new()] {
        let (status, body) = send(&server, &unknown, "{\"id\":2,\"ping\":{}}").await;
        assert_eq!(status, 404, "a key nobody has ({unknown:?}): {body}");
        assert!(body.contains("unknown or expired session"), "{body}");
    }
    // A key naming a node that is not there (one node, no broker to relay through).
    let (status, body) =
        send(&server, &format!("0123456789abcdef.{}", "0".repeat(64)), "{\"id\":2,\"ping\":{}}").await;
    assert_eq!(status, 404, "a key of a node that is gone: {body}");
    let (status, body) = send(&server, &key, "{\"id\":2,\"nonsense\":{}}\nnot json").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed commands"), "{body}");
    let big = format!("{{\"id\":2,\"publish\":{{\"channel\":\"c\",\"data\":\"{}\"}}}}", "x".repeat(70_000));
    let (status, body) = send(&server, &key, &big).await;
    assert_eq!(status, 413, "{body}");
    let head = format!(
        "POST /connection/send?session={key} HTTP/1.1\r\nHost: {}\r\nContent-Length: 3\r\n\
         Connection: close\r\n\r\n",
        server.addr
    );
    let (status, body) = common::http(server.addr, [head.as_bytes(), b"{\xfe}"].concat()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not UTF-8 (byte 1)"), "{body}");
    let (status, body) = server.get(&format!("/connection/poll?session={key}&ack=0")).await;
    assert_eq!(status, 400, "an SSE session has no mailbox to poll: {body}");
    assert!(body.contains("not a long-polling session"), "{body}");
    // The session is unaffected: it still answers.
    let (status, _) = send(&server, &key, "{\"id\":3,\"ping\":{}}").await;
    assert_eq!(status, 204);
    assert!(sse.until("\"ping\"").await.contains("\"id\":3"));
    drop(sse);
    server.finish().await;
}

#[tokio::test]
async fn a_session_of_a_user_answers_only_requests_with_that_user_s_token() {
    const SECRET: &str = "http-transports-secret";
    let token = |user: &str| {
        let claims = json!({"sub": user});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let mut config = peregrine_server::config::Config::default();
    config.token.hmac_secret = Some(peregrine_server::config::Secret::new(SECRET));
    config.client.ping_interval = Duration::from_millis(500);
    let server = TestServer::start(config).await;
    let (alice, bob) = (token("alice"), token("bob"));
    let opening = format!("{{\"id\":1,\"connect\":{{\"token\":\"{alice}\"}}}}");
    let key = open_poll(&server, &opening).await;
    let by_ref = &server;
    let poll = |ack: u64, token: Option<&str>| {
        let token = token.map(|t| format!("&token={t}")).unwrap_or_default();
        let path = format!("/connection/poll?session={key}&ack={ack}{token}");
        async move { by_ref.get(&path).await }
    };
    // The connect reply is the first frame: alice reads it with her token.
    let (status, body) = poll(0, Some(&alice)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("client_id"), "{body}");
    // A frame waits for alice.
    let (status, _) = send(&server, &format!("{key}&token={alice}"), "{\"id\":2,\"ping\":{}}").await;
    assert_eq!(status, 204);

    // Bob, holding alice's key: refused whichever way he asks, and given nothing.
    let (status, body) = poll(1, Some(&bob)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("belongs to another user") && !body.contains("ping"), "{body}");
    let (status, body) = poll(1, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("send its token"), "{body}");
    let (status, body) = poll(1, Some("not-a-jwt")).await;
    assert_eq!(status, 401, "{body}");
    let ping = "{\"id\":9,\"ping\":{}}";
    let bob_header = format!(
        "POST /connection/send?session={key} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {bob}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{ping}",
        server.addr,
        ping.len()
    );
    let (status, body) = common::http(server.addr, &bob_header).await;
    assert_eq!(status, 403, "{body}");

    // Alice's session is unaffected: her pong is still there, and only hers.
    let (status, body) = poll(1, Some(&alice)).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["frames"], json!(["{\"id\":2,\"ping\":{}}"]), "{answer}");
    assert_eq!(server.node.session_count(), 1);

    // The same over SSE and HTTP streaming: their keys answer only alice's token too.
    let connect = format!("{{\"id\":1,\"connect\":{{\"token\":\"{alice}\"}}}}");
    let stream_request = format!(
        "POST /connection/stream HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{connect}",
        server.addr,
        connect.len()
    );
    let mut sse = Streamed::open(&server, sse_request(&server, &connect)).await;
    let sse_key = sse.until("\n\n").await.strip_prefix("event: session\ndata: ").unwrap().trim().to_owned();
    let mut stream = Streamed::open(&server, stream_request).await;
    let first: Value = serde_json::from_str(stream.until("\n").await.trim()).unwrap();
    let stream_key = first["session"].as_str().unwrap().to_owned();
    // Bound to alice once her `connect` is answered (the key comes before it).
    sse.until("client_id").await;
    stream.until("client_id").await;
    for key in [&sse_key, &stream_key] {
        let (status, body) = send(&server, &format!("{key}&token={bob}"), ping).await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = send(&server, key, ping).await;
        assert_eq!(status, 401, "{body}");
        let (status, body) = send(&server, &format!("{key}&token={alice}"), ping).await;
        assert_eq!(status, 204, "{body}");
    }
    // Both sessions answer alice's ping.
    sse.until("\"id\":9,\"ping\"").await;
    stream.until("\"id\":9,\"ping\"").await;
    drop((sse, stream));
    // Nobody polls any more: the session ends, and leaves nothing behind.
    server.finish().await;
}

#[tokio::test]
async fn cross_origin_requests_get_cors_headers_only_for_allowed_origins() {
    let mut config = peregrine_server::config::Config::development();
    config.allowed_origins = vec!["https://app.example.com".into()];
    // The long-polling session opened below ends soon after nobody polls it.
    config.client.ping_interval = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /connection/send?session=x HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization\r\n\
             Connection: close\r\n\r\n",
            server.addr
        )
    };
    let (status, head, _) = common::http_with_head(server.addr, &preflight("https://app.example.com")).await;
    assert_eq!(status, 204, "{head}");
    assert!(head.contains("access-control-allow-origin: https://app.example.com"), "{head}");
    assert!(head.contains("access-control-allow-headers: authorization, content-type"), "{head}");
    let (status, head, body) = common::http_with_head(server.addr, &preflight("https://evil.example")).await;
    assert_eq!(status, 403, "{head}");
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    assert!(body.contains("not allowed"), "{body}");

    let open = |origin: &str| {
        let body = CONNECT;
        format!(
            "POST /connection/poll/open HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            server.addr,
            body.len()
        )
    };
    let (status, head, body) = common::http_with_head(server.addr, &open("https://app.example.com")).await;
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("access-control-allow-origin: https://app.example.com"), "{head}");
    let (status, head, body) = common::http_with_head(server.addr, &open("https://evil.example")).await;
    assert_eq!(status, 403, "an opening from an origin not allowed: {body}");
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    assert_eq!(server.node.session_count(), 1, "only the allowed origin opened a session");
    server.finish().await;
}

#[tokio::test]
async fn a_shutdown_tells_stream_and_polling_clients_to_reconnect_elsewhere() {
    let mut config = peregrine_server::config::Config::development();
    config.client.ping_interval = Duration::from_millis(300);
    let mut server = TestServer::start(config).await;
    let mut sse = Streamed::open(&server, sse_request(&server, CONNECT)).await;
    sse.until("\"connect\"").await;
    let key = open_poll(&server, CONNECT).await;
    let (_, first) = server.get(&format!("/connection/poll?session={key}&ack=0")).await;
    let seq = serde_json::from_str::<Value>(&first).unwrap()["seq"].as_u64().unwrap();

    server.begin_stop();
    let goodbye = sse.until("\"reconnect\":true").await;
    assert!(goodbye.contains("\"disconnect\":{\"code\":3001"), "{goodbye}");
    let (status, body) = server.get(&format!("/connection/poll?session={key}&ack={seq}")).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let frames = answer["frames"].to_string();
    assert!(frames.contains("3001") && frames.contains("reconnect"), "{answer}");
    assert_eq!(answer["closed"], json!(true), "{answer}");
    drop(sse);
    assert_eq!(server.stop().await, 0, "every session ended within the shutdown");
}
