//! Operating the server over real sockets: a slow consumer is cut at its queue limit while
//! others keep receiving; shutdown closes clients with 1001 and a reconnect hint, and /health
//! answers 503 while they drain; /metrics counters move; wss:// end to end; /health.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Client, TestServer, WAIT};
use peregrine_server::config::{Config, TlsFiles};
use peregrine_wire::codes::disconnect as dc;
use peregrine_wire::*;
use serde_json::json;

/// `name{labels} value` lines of the Prometheus text format.
fn scrape(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_at_its_queue_limit_and_others_keep_receiving() {
    let mut config = Config::development();
    config.client.queue_max_bytes = 64 << 10;
    config.client.publish_rate = 1e9;
    config.client.publish_burst = u32::MAX;
    let server = TestServer::start(config).await;

    // The slow client subscribes, then never reads again; its receive buffer is small so
    // the server's queue, not the kernel, has to absorb the backlog.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    socket2::SockRef::from(&tcp).set_recv_buffer_size(4096).unwrap();
    let (ws, _) = peregrine::ClientBuilder::new(server.url())
        .protocol(SUBPROTOCOL_JSON)
        .connect_on(peregrine::MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    let mut slow = Client::from_socket(ws);
    slow.command(CommandKind::Connect(Default::default())).await.unwrap();
    slow.sub("feed:big").await;

    let mut healthy = Client::connect(&server).await;
    healthy.sub("feed:big").await;

    let payload = "x".repeat(4000);
    let total = 2000u64; // 8 MB in all: far beyond the 64 KiB queue and the socket buffers
    let mut publisher = Client::connect(&server).await;
    let reader = tokio::spawn(async move {
        let mut offsets = Vec::new();
        while (offsets.len() as u64) < total {
            let (_, p) = healthy.publication().await;
            offsets.push(p.offset);
        }
        offsets
    });
    for n in 0..total {
        publisher.publish("feed:big", json!({ "n": n, "pad": payload })).await.unwrap();
    }
    let offsets = tokio::time::timeout(WAIT * 3, reader).await.expect("healthy subscriber keeps up").unwrap();
    assert_eq!(offsets, (1..=total).collect::<Vec<_>>(), "the healthy subscriber got everything, in order");

    // The slow one is disconnected at its queue limit, not buffered without bound: the
    // metric moves and its session goes (the healthy one ended with its task; the
    // publisher stays).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = scrape(&server.get("/metrics").await.1);
        let slow_count = metrics["peregrine_slow_disconnects_total"];
        if slow_count >= 1.0 && server.node.session_count() == 1 {
            assert_eq!(slow_count, 1.0);
            assert_eq!(metrics[&format!("peregrine_disconnects_total{{code=\"{}\"}}", dc::SLOW)], 1.0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the slow session is cut in time: {metrics:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.node.hub().subscriber_count("feed:big"), 0);
    // The publisher was never slowed down by it: all publishes were acknowledged above.
    publisher.publish("feed:big", json!("still up")).await.unwrap();
    drop(slow);
    server.finish().await;
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001_and_a_reconnect_hint() {
    let server = TestServer::dev().await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = Client::connect(&server).await;
        c.sub("chat:1").await;
        clients.push(c);
    }
    let addr = server.addr;
    let left = server.stop().await;
    assert_eq!(left, 0, "every session closed before the deadline");
    for mut c in clients {
        match c.disconnect_push().await {
            Push::Disconnect { code, reconnect, .. } => {
                assert_eq!(code, dc::SHUTDOWN);
                assert!(reconnect);
            }
            other => panic!("{other:?}"),
        }
        let (code, reason) = c.closed().await.expect("a close frame");
        assert_eq!(code, 1001);
        assert!(reason.contains("reconnect"), "{reason}");
    }
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn during_the_shutdown_drain_health_answers_503_and_upgrades_are_refused() {
    // A load balancer's health check must see the node leave (503), not a refused
    // connection, for as long as its sessions are draining.
    let mut config = Config::development();
    config.shutdown_timeout = Duration::from_secs(5);
    let mut server = TestServer::start(config).await;
    // It never reads, so it never answers the close frame: the drain lasts.
    let lingering = Client::connect(&server).await;
    assert_eq!(server.get("/health").await.0, 200);

    server.begin_stop();
    let draining = tokio::time::timeout(WAIT, async {
        while !server.node.is_shutting_down() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    draining.await.expect("shutdown begins");
    let (status, body) = server.get("/health").await;
    assert_eq!(status, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(health["status"], "shutting down", "{body}");
    assert_eq!(health["connections"], 1, "{body}");
    let upgrade = format!(
        "GET /connection/websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    let (status, body) = common::http(server.addr, &upgrade).await;
    assert_eq!((status, body.trim()), (503, "server shutting down"));

    let addr = server.addr;
    assert_eq!(server.stop().await, 0, "the lingering session is closed by its grace, in time");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener closes when the drain ends");
    drop(lingering);
}

#[tokio::test]
async fn metrics_counters_move() {
    let mut config = Config::development();
    config.allowed_origins = vec!["https://good.example".into()];
    let server = TestServer::start(config).await;
    let before = scrape(&server.get("/metrics").await.1);

    let mut a = Client::connect(&server).await;
    let first = a.sub("chat:m").await;
    let mut b = Client::connect(&server).await;
    b.sub("chat:m").await;
    b.publish("chat:m", json!("hello")).await.unwrap();
    a.publication().await;
    let since = StreamPosition { epoch: first.epoch, offset: 0 };
    let mut c = Client::connect(&server).await;
    c.subscribe(SubscribeRequest {
        channel: "chat:m".into(),
        since: Some(since),
        recover: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let refused = format!(
        "GET /connection/websocket HTTP/1.1\r\nHost: {}\r\nOrigin: https://evil.example\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    assert_eq!(common::http(server.addr, &refused).await.0, 403);

    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let after = scrape(&text);
    let grew = |name: &str| {
        let (x, y) = (before.get(name).copied().unwrap_or(0.0), after.get(name).copied().unwrap_or(0.0));
        assert!(y > x, "{name}: {x} -> {y}\n{text}");
    };
    for name in [
        "peregrine_connections",
        "peregrine_connections_accepted_total",
        "peregrine_subscriptions",
        "peregrine_messages_received_total",
        "peregrine_messages_sent_total",
        "peregrine_bytes_received_total",
        "peregrine_bytes_sent_total",
        "peregrine_publications_total",
        "peregrine_publish_to_deliver_seconds_count",
        "peregrine_commands_total{command=\"subscribe\"}",
        "peregrine_handshake_rejections_total{reason=\"origin\"}",
        "peregrine_recoveries_total{outcome=\"recovered\"}",
    ] {
        grew(name);
    }
    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200);
    assert!(health.contains("\"ok\""), "{health}");
    server.finish().await;
}

/// A development configuration serving `wss://` with a fresh self-signed certificate for
/// `localhost` (in a directory named after `test`), and that certificate's PEM.
fn tls_config(test: &str) -> (Config, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("peregrine-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let mut config = Config::development();
    config.tls = Some(TlsFiles { cert, key });
    (config, certified.cert.pem())
}

/// A connected client of `server` over `wss://`, trusting `ca_pem`.
async fn wss_client(server: &TestServer, ca_pem: &str) -> Client {
    let tls = peregrine::tls::TlsConnector::builder().ca_pem(ca_pem.as_bytes()).unwrap().build().unwrap();
    let url = format!("wss://localhost:{}/connection/websocket", server.addr.port());
    let (ws, _) =
        peregrine::ClientBuilder::new(url).protocol(SUBPROTOCOL_JSON).tls(tls).connect().await.expect("wss");
    let mut c = Client::from_socket(ws);
    c.command(CommandKind::Connect(Default::default())).await.unwrap();
    c
}

#[tokio::test]
async fn wss_works_end_to_end() {
    let (config, ca) = tls_config("wss");
    let server = TestServer::start(config).await;
    let mut c = wss_client(&server, &ca).await;
    c.sub("secure:1").await;
    c.publish("secure:1", json!({"over": "tls"})).await.unwrap();
    assert_eq!(c.publication().await.1.data, json!({"over": "tls"}).into());
    drop(c); // not a plain socket: `finish` cannot end it
    server.finish().await;
}

/// On a one-thread node a publication is written into an idle subscriber's socket by the
/// fan-out itself; over TLS that write goes through rustls. A subscriber that does not read
/// while 4.8 MB are published fills its socket: writes are then taken in part, refused, and
/// queued for its writer, and it must still get every publication whole and in order.
#[tokio::test]
async fn wss_subscriber_that_stops_reading_gets_every_publication_whole_and_in_order() {
    const COUNT: usize = 300;
    let (mut config, ca) = tls_config("wss-burst");
    config.client.queue_max_bytes = 16 << 20;
    config.client.publish_burst = COUNT as u32;
    config.workers = 1; // the fan-out writes directly
    let server = TestServer::start(config).await;
    let mut c = wss_client(&server, &ca).await;
    c.sub("secure:burst").await;
    let mut publisher = wss_client(&server, &ca).await;
    let fill = "x".repeat(16_000);
    for i in 0..COUNT {
        publisher.publish("secure:burst", json!({"i": i, "fill": &fill})).await.unwrap();
    }
    for i in 0..COUNT {
        let (channel, publication) = c.publication().await;
        assert_eq!(channel, "secure:burst");
        assert_eq!(publication.offset, i as u64 + 1);
        assert_eq!(publication.data, json!({"i": i, "fill": &fill}).into(), "publication {i}");
    }
    drop((c, publisher));
    server.finish().await;
}

#[tokio::test]
async fn unusable_tls_files_name_the_key_and_why() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("peregrine-tls-mixups-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let [(cert, key), (_, other_key)] = ["a", "b"].map(|name| {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.join(format!("{name}-cert.pem")), dir.join(format!("{name}-key.pem")));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        (cert, key)
    });
    for (cert, key, expected) in [
        (&cert, &cert, format!("`tls.key` {}: no unencrypted PEM private key", cert.display())),
        (&key, &key, format!("`tls.cert` {}: no PEM certificate", key.display())),
        (&cert, &other_key, "is not the private key of the certificate in `tls.cert`".to_owned()),
        (&key, &cert, format!("`tls.cert` {}: it holds the private key, and the key file", key.display())),
    ] {
        let mut config = Config::development();
        config.tls = Some(TlsFiles { cert: cert.clone(), key: key.clone() });
        let e = peregrine_server::app::Server::bind(config).await.unwrap_err().to_string();
        assert!(e.contains(&expected), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn missing_tls_files_name_the_key() {
    let mut config = Config::development();
    config.tls = Some(TlsFiles { cert: "/nonexistent/cert.pem".into(), key: "/nonexistent/key.pem".into() });
    let e = peregrine_server::app::Server::bind(config).await.unwrap_err().to_string();
    assert!(e.contains("tls.cert") && e.contains("/nonexistent/cert.pem"), "{e}");
}
