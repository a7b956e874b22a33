//! Limits over real sockets: connections per node and per user, subscriptions per
//! connection, subscribers per channel, the publish rate, message size, the connect timeout.

mod common;

use std::time::Duration;

use common::{Client, TestServer, http, http_with_head};
use jsonwebtoken::{EncodingKey, Header, encode};
use peregrine_server::channel::ChannelOptions;
use peregrine_server::config::{Config, Secret};
use peregrine_wire::codes::{disconnect as dc, error as err};
use peregrine_wire::*;
use serde_json::json;

fn handshake(server: &TestServer) -> String {
    format!(
        "GET /connection/websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    )
}

#[tokio::test]
async fn node_connection_limit_refuses_the_handshake_with_503_and_a_reason() {
    let mut config = Config::development();
    config.client.max_connections = 2;
    let server = TestServer::start(config).await;
    let _a = Client::connect(&server).await;
    let _b = Client::connect(&server).await;
    let (status, body) = http(server.addr, &handshake(&server)).await;
    assert_eq!(status, 503);
    assert!(body.contains("connection limit"), "{body}");
    server.finish().await;
}

#[tokio::test]
async fn per_user_connection_limit_disconnects_the_extra_one_terminally() {
    let mut config = Config::default();
    config.token.hmac_secret = Some(Secret::new("s"));
    config.client.max_connections_per_user = 1;
    let server = TestServer::start(config).await;
    let token = encode(&Header::default(), &json!({"sub": "u1"}), &EncodingKey::from_secret(b"s")).unwrap();
    let _first = Client::connect_with(&server, Some(&token)).await.expect("first");
    match Client::connect_with(&server, Some(&token)).await {
        Err(Push::Disconnect { code, reason, reconnect }) => {
            assert_eq!(code, dc::CONNECTION_LIMIT);
            assert!(!reconnect, "terminal: reconnecting would only hit the limit again");
            assert!(reason.contains("per user"), "{reason}");
        }
        other => panic!("expected a disconnect, got {:?}", other.map(|_| ())),
    }
    server.finish().await;
}

#[tokio::test]
async fn subscription_and_subscriber_limits_answer_limit_exceeded() {
    let mut config = Config::development();
    config.client.max_subscriptions = 2;
    config.channels.named.insert("small".into(), ChannelOptions { max_subscribers: 1, ..Default::default() });
    let server = TestServer::start(config).await;
    let mut c = Client::connect(&server).await;
    c.sub("a:1").await;
    c.sub("a:2").await;
    let e = c.subscribe(SubscribeRequest { channel: "a:3".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code, err::LIMIT_EXCEEDED);
    assert!(e.message.contains("at most 2"), "{}", e.message);

    let mut first = Client::connect(&server).await;
    first.sub("small:x").await;
    let mut second = Client::connect(&server).await;
    let e = second
        .subscribe(SubscribeRequest { channel: "small:x".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code, err::LIMIT_EXCEEDED);
    server.finish().await;
}

#[tokio::test]
async fn subscriptions_restored_at_connect_count_against_the_subscription_limit() {
    // Found by fuzz/fuzz_targets/session_commands.rs (regressions/session_commands/): every
    // channel of `connect.subs` passed the limit, as none was active while they were checked.
    let mut config = Config::development();
    config.client.max_subscriptions = 2;
    let server = TestServer::start(config).await;
    let mut c = Client::open(&server, Encoding::Json).await;
    let subs = ["a:1", "a:2", "a:3"].map(|ch| (ch.to_owned(), SubscribeOptions::default())).into();
    let connect = ConnectRequest { subs, ..Default::default() };
    let Ok(ReplyKind::Connect(result)) = c.command(CommandKind::Connect(connect)).await else {
        panic!("connect refused")
    };
    assert_eq!(result.subs.keys().collect::<Vec<_>>(), ["a:1", "a:2"]);
    match c.push().await {
        Push::Unsubscribe { channel, code, reason } => {
            assert_eq!((channel.as_str(), code), ("a:3", codes::unsubscribe::SERVER));
            assert!(reason.contains("at most 2"), "{reason}");
        }
        other => panic!("expected the third subscription refused, got {other:?}"),
    }
    assert_eq!(server.node.channels(), ["a:1", "a:2"]);
    server.finish().await;
}

#[tokio::test]
async fn publish_rate_limit_is_a_temporary_error_after_the_burst() {
    let mut config = Config::development();
    config.client.publish_rate = 0.5;
    config.client.publish_burst = 3;
    let server = TestServer::start(config).await;
    let mut c = Client::connect(&server).await;
    for n in 0..3 {
        c.publish("chat:1", json!(n)).await.expect("within the burst");
    }
    let e = c.publish("chat:1", json!(3)).await.unwrap_err();
    assert_eq!(e.code, err::TOO_MANY_REQUESTS);
    assert!(e.temporary);
    server.finish().await;
}

#[tokio::test]
async fn publishes_behind_one_that_failed_for_now_wait_for_it_so_order_holds() {
    let mut config = Config::development();
    config.client.publish_rate = 20.0;
    config.client.publish_burst = 1;
    let server = TestServer::start(config).await;
    let mut c = Client::connect(&server).await;
    let keyed = |n: u64| {
        let req = PublishRequest {
            channel: "chat:1".into(),
            data: json!(n).into(),
            idempotency_key: Some(format!("k{n}")),
        };
        CommandKind::Publish(req)
    };
    let offset = |r: Result<ReplyKind, ReplyError>| match r {
        Ok(ReplyKind::Publish(p)) => Ok(p.offset.unwrap()),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => Err(e),
    };
    assert_eq!(offset(c.command(keyed(1)).await), Ok(1));
    let limited = offset(c.command(keyed(2)).await).unwrap_err();
    assert!(limited.temporary && limited.message.contains("rate limit"), "{limited:?}");
    // Even once the bucket has a token again, 3 waits for 2.
    tokio::time::sleep(Duration::from_millis(120)).await;
    let held = offset(c.command(keyed(3)).await).unwrap_err();
    assert!(held.temporary && held.message.contains("resend it first"), "{held:?}");
    assert_eq!(offset(c.command(keyed(2)).await), Ok(2), "the one that failed lands first");
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(offset(c.command(keyed(3)).await), Ok(3));
    server.finish().await;
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let mut config = Config::development();
    config.client.max_message_size = 1024;
    let server = TestServer::start(config).await;
    let mut c = Client::connect(&server).await;
    let big = "x".repeat(4096);
    let _ = c.publish("chat:1", json!(big)).await;
    assert_eq!(c.closed().await.map(|(code, _)| code), Some(1009));
    server.finish().await;
}

#[tokio::test]
async fn a_connection_that_never_sends_connect_is_closed_as_stale() {
    let mut config = Config::development();
    config.client.connect_timeout = Duration::from_millis(200);
    let server = TestServer::start(config).await;
    let mut c = Client::open(&server, Encoding::Json).await;
    let (code, reason) = c.closed().await.expect("a close frame");
    assert_eq!(code, dc::STALE);
    assert!(reason.contains("connect"), "{reason}");
    server.finish().await;
}

#[tokio::test]
async fn a_subscribe_cut_short_by_a_slow_disconnect_leaves_no_phantom_subscriber() {
    let mut config = Config::development();
    // Replies go through the writer task, which has not run yet when the frame's commands
    // are handled, so they pile up in the queue. (On a `workers = 1` node an idle
    // connection's replies go straight into its socket, which takes 10 KB at once.)
    config.workers = 2;
    config.channels.named.insert("room".into(), ChannelOptions { max_subscribers: 1, ..Default::default() });
    // A small queue: two 5 KB history replies do not fit in it.
    config.client.queue_max_bytes = 8192;
    config.client.max_message_size = 8192;
    let server = TestServer::start(config).await;
    let mut publisher = Client::connect(&server).await;
    for n in 1..=2 {
        publisher.publish("big", json!({ "n": n, "filler": "x".repeat(5000) })).await.unwrap();
    }

    // One frame asks for more than the outbound queue holds: two histories (each gives at
    // least one publication), then a subscribe, whose reply cannot be queued: the session
    // ends as a slow consumer after the subscription was prepared.
    let mut c = Client::connect(&server).await;
    let history = || {
        CommandKind::History(HistoryRequest { channel: "big".into(), limit: Some(1), ..Default::default() })
    };
    let subscribe =
        CommandKind::Subscribe(SubscribeRequest { channel: "room:1".into(), ..Default::default() });
    let mut commands = Vec::new();
    for kind in [history(), history(), subscribe] {
        commands.push(Command { id: c.next_command_id(), kind });
    }
    c.send(&commands).await;
    if let Some((code, _)) = c.closed_lossy().await {
        assert_eq!(code, dc::SLOW);
    }
    drop(c);
    let gone = async {
        while server.node.session_count() > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(common::WAIT, gone).await.expect("the session ends");

    // Nothing is left of it: the channel has no subscriber, and its one place is free.
    assert_eq!(server.node.hub().subscriber_count("room:1"), 0);
    let (_, channels) = server.api("/api/channels", json!({}), None).await;
    assert!(!channels.to_string().contains("room:1"), "{channels}");
    let mut next = Client::connect(&server).await;
    next.sub("room:1").await;
    server.finish().await;
}

#[tokio::test]
async fn handshakes_in_progress_past_the_limit_get_503_with_retry_after() {
    let mut config = Config::development();
    config.client.max_pending_handshakes = 1;
    let server = TestServer::start(config).await;
    // Upgraded but no `connect` yet: it holds the one handshake slot.
    let mut first = Client::open(&server, Encoding::Json).await;
    let (status, head, body) = http_with_head(server.addr, &handshake(&server)).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(body.contains("handshakes in progress"), "{body}");
    // Once it is connected the slot is free again.
    first.command(CommandKind::Connect(ConnectRequest::default())).await.expect("connect");
    let _second = Client::connect(&server).await;
    server.finish().await;
}

#[tokio::test]
async fn per_address_limits_answer_429_and_are_off_in_development() {
    let mut config = Config::default();
    config.token.allow_anonymous = true;
    config.client.max_connections_per_address = 2;
    config.client.handshake_rate_per_address = 0.5;
    config.client.handshake_burst_per_address = 3;
    let server = TestServer::start(config).await;
    let a = Client::connect(&server).await;
    let _b = Client::connect(&server).await;
    let (status, _, body) = http_with_head(server.addr, &handshake(&server)).await;
    assert_eq!(status, 429);
    assert!(body.contains("max_connections_per_address"), "{body}");
    // A slot is given back when a connection ends: the third handshake of the burst fits.
    drop(a);
    for _ in 0..200 {
        if server.node.session_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _third = Client::connect(&server).await;
    drop(_b);
    for _ in 0..200 {
        if server.node.session_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The burst (3) is spent: the rate answers with Retry-After.
    let (status, head, body) = http_with_head(server.addr, &handshake(&server)).await;
    assert_eq!(status, 429, "{head}");
    assert!(body.contains("handshake_rate_per_address") && head.contains("retry-after: 2"), "{head}{body}");
    server.finish().await;

    let server = TestServer::dev().await;
    let clients: Vec<Client> =
        futures_util::future::join_all((0..60).map(|_| Client::connect(&server))).await;
    assert_eq!(clients.len(), 60);
    drop(clients);
    server.finish().await;
}

/// A client that connects and sends nothing, or trickles its request head ("slowloris"),
/// is closed after `client.handshake_timeout`; a well-behaved one meanwhile is served.
#[tokio::test]
async fn slow_or_silent_request_heads_are_closed_after_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = Config::development();
    config.client.handshake_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut trickling = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let trickle = async {
        let head = format!("GET /health HTTP/1.1\r\nHost: {}\r\nX-Slow: ", server.addr);
        trickling.write_all(head.as_bytes()).await.unwrap();
        // One byte every 50 ms: never a complete head; stops when the server closes.
        let mut buf = [0u8; 64];
        loop {
            tokio::select! {
                n = trickling.read(&mut buf) => return n.unwrap_or(0),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if trickling.write_all(b"x").await.is_err() {
                        return 0;
                    }
                }
            }
        }
    };
    let closed_silent = async {
        let mut silent = silent;
        let mut buf = [0u8; 64];
        silent.read(&mut buf).await.unwrap_or(0)
    };
    // Meanwhile a normal request is answered.
    let (status, _) = http(
        server.addr,
        &format!("GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr),
    )
    .await;
    assert_eq!(status, 200);
    let (trickled, silent_read) =
        tokio::time::timeout(common::WAIT, async { tokio::join!(trickle, closed_silent) })
            .await
            .expect("both slow clients are closed");
    assert_eq!((trickled, silent_read), (0, 0), "closed without an answer");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the timeout: {:?}",
        started.elapsed()
    );
    server.finish().await;
}
