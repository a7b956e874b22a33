//! The shipped nginx configuration (deploy/nginx/peregrine.conf), rendered for real nodes and
//! run by a real nginx: round robin without stickiness, WebSocket upgrades, the HTTP API, a
//! dead node skipped, timeouts that outlive the server's pings.
//!
//! These use the in-memory broker: they test the proxy, not the cluster (cluster.rs does).

mod support;

use std::time::Duration;

use peregrine_client::{Backoff, Client};
use peregrine_server::config::Config;
use serde_json::json;
use support::node::{Backend, PeregrineNode, api, http};
use support::services::{Nginx, SHIPPED_NGINX_CONF, render_nginx_conf};

const WAIT: Duration = Duration::from_secs(20);

/// `directive 75s;` in the shipped file, as a duration.
fn shipped_duration(directive: &str) -> Duration {
    let conf = std::fs::read_to_string(SHIPPED_NGINX_CONF).unwrap();
    let value = conf
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .find_map(|l| l.strip_prefix(directive)?.trim().strip_suffix("s;")?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no `{directive} Ns;` in the shipped config"));
    Duration::from_secs(value)
}

#[test]
fn shipped_timeouts_outlive_the_ping_interval() {
    // nginx closes a proxied connection that is silent for proxy_read_timeout; the server's
    // pings (and the client's pongs) are the only traffic on an idle WebSocket. Two full
    // ping rounds must fit, or nginx cuts idle but healthy clients.
    let client = Config::default().client;
    let round = client.ping_interval + client.pong_timeout;
    for directive in ["proxy_read_timeout", "proxy_send_timeout"] {
        let timeout = shipped_duration(directive);
        assert!(
            timeout > 2 * client.ping_interval && timeout > round,
            "{directive} {timeout:?} vs {round:?}"
        );
    }
}

#[test]
fn rendering_keeps_everything_but_the_addresses() {
    let shipped = std::fs::read_to_string(SHIPPED_NGINX_CONF).unwrap();
    let upstreams = ["127.0.0.1:1001".to_owned(), "127.0.0.1:1002".to_owned()];
    let rendered = render_nginx_conf(&shipped, &upstreams, 9999);
    assert!(rendered.contains("server 127.0.0.1:1001 max_fails=1 fail_timeout=5s;"), "{rendered}");
    assert!(rendered.contains("server 127.0.0.1:1002 max_fails=1 fail_timeout=5s;"), "{rendered}");
    assert!(rendered.contains("listen 127.0.0.1:9999;"));
    assert!(!rendered.contains(":8081") && !rendered.contains("listen 80;"));
    for kept in
        ["proxy_http_version 1.1;", "$connection_upgrade", "proxy_next_upstream error timeout http_503;"]
    {
        assert!(rendered.contains(kept), "{kept} kept");
    }
    let directives: Vec<&str> = rendered.lines().map(|l| l.split('#').next().unwrap().trim()).collect();
    for sticky in ["ip_hash", "sticky", "hash "] {
        assert!(!directives.iter().any(|d| d.starts_with(sticky)), "no sticky sessions: {sticky}");
    }
}

/// Connects a client through nginx and waits for it to be connected.
async fn connect(url: &str) -> Client {
    let backoff = Backoff { min_delay: Duration::from_millis(20), max_delay: Duration::from_millis(200) };
    let client = Client::builder(url).backoff(backoff).build().unwrap();
    tokio::time::timeout(WAIT, client.connected()).await.expect("connected in time").unwrap();
    client
}

fn connections(node: &PeregrineNode) -> u64 {
    let (status, health) = node.get("/health");
    assert_eq!(status, 200, "{health}");
    health["connections"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_without_stickiness_then_a_killed_node_is_skipped() {
    let mut nodes: Vec<PeregrineNode> =
        ["a", "b", "c"].iter().map(|n| PeregrineNode::start(n, &Backend::Memory, "")).collect();
    let upstreams: Vec<String> = nodes.iter().map(PeregrineNode::address).collect();
    let Some(nginx) = Nginx::start("round_robin_without_stickiness", &upstreams) else { return };

    // Six connections from one address: round robin gives each node two (ip_hash or a
    // sticky cookie would put them all on one).
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(connect(&nginx.ws_url()).await);
    }
    let counts: Vec<u64> = nodes.iter().map(connections).collect();
    assert_eq!(counts, vec![2, 2, 2], "nginx log:\n{}", nginx.error_log());

    // The HTTP API and /health pass through nginx too.
    let (status, body) = api(nginx.port, "publish", &json!({"channel": "news:1", "data": {"n": 1}}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offset"], 1);
    let (status, health) = http(nginx.port, "GET", "/health", None).unwrap();
    assert_eq!(status, 200, "{health}");

    // Node c dies: its two clients reconnect through nginx, which skips the refusing node
    // (proxy_next_upstream error); every client ends up connected to a or b.
    nodes[2].kill9();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let total: u64 = nodes[..2].iter().map(connections).sum();
        if total == 6 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{total} of 6 clients back; {}", nginx.error_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New connections all succeed, none gets a 502 from the dead node.
    for _ in 0..6 {
        clients.push(connect(&nginx.ws_url()).await);
    }
    let total: u64 = nodes[..2].iter().map(connections).sum();
    assert_eq!(total, 12);
    for _ in 0..6 {
        let (status, _) = http(nginx.port, "GET", "/health", None).unwrap();
        assert_eq!(status, 200, "a request is never sent to the dead node for good");
    }
    for client in clients {
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_s_503_sends_new_connections_to_the_others() {
    use peregrine_wire::{Command, CommandKind, Encoding, SUBPROTOCOL_JSON, encode_commands};
    let mut nodes: Vec<PeregrineNode> = ["a", "b", "c"]
        .iter()
        .map(|n| PeregrineNode::start(n, &Backend::Memory, "shutdown_timeout = \"8s\""))
        .collect();
    let upstreams: Vec<String> = nodes.iter().map(PeregrineNode::address).collect();
    let Some(nginx) = Nginx::start("a_draining_node_s_503", &upstreams) else { return };

    // A session on c that never answers the close: c keeps draining (and listening) for
    // its shutdown_timeout after SIGTERM, answering upgrades with 503.
    let (mut stuck, _) =
        peregrine::ClientBuilder::new(nodes[2].ws_url()).protocol(SUBPROTOCOL_JSON).connect().await.unwrap();
    let connect =
        encode_commands(&[Command { id: 1, kind: CommandKind::Connect(Default::default()) }], Encoding::Json);
    stuck.send(peregrine::Message::text(String::from_utf8(connect).unwrap())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(nodes[2].pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while nodes[2].get("/health").0 != 503 {
        assert!(tokio::time::Instant::now() < deadline, "c never started draining");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Every upgrade through nginx succeeds at the first try: the ones round robin gives
    // to c come back 503 and nginx passes them on (proxy_next_upstream http_503).
    let mut opened = Vec::new();
    for i in 0..6 {
        let attempt =
            peregrine::ClientBuilder::new(nginx.ws_url()).protocol(SUBPROTOCOL_JSON).connect().await;
        let (ws, _) =
            attempt.unwrap_or_else(|e| panic!("upgrade {i} through nginx: {e}\n{}", nginx.error_log()));
        opened.push(ws);
    }
    assert_eq!(nodes[2].get("/health").0, 503, "c was still draining all along");
    drop(stuck);
    nodes[2].kill9();
}

/// Reads `tcp` until the text so far contains `needle` (or fails after `within`).
fn read_until(tcp: &mut std::net::TcpStream, seen: &mut String, needle: &str, within: Duration) {
    use std::io::Read;
    let deadline = std::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        assert!(std::time::Instant::now() < deadline, "no {needle:?} within {within:?}; so far:\n{seen}");
        match tcp.read(&mut buf) {
            Ok(0) => panic!("the stream ended before {needle:?}:\n{seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading the stream: {e}"),
        }
    }
}

#[test]
fn server_sent_events_pass_through_nginx_as_they_come() {
    use std::io::Write;
    // One node: the publication below must reach the stream's own node.
    let node = PeregrineNode::start("sse", &Backend::Memory, "");
    let Some(nginx) = Nginx::start("server_sent_events_pass_through_nginx", &[node.address()]) else {
        return;
    };
    let opening = "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"ticks\"}}";
    let commands: String = url::form_urlencoded::byte_serialize(opening.as_bytes()).collect();
    let mut sse = std::net::TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
    sse.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    write!(
        sse,
        "GET /connection/sse?commands={commands} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: text/event-stream\r\n\r\n",
        nginx.port
    )
    .unwrap();
    let mut seen = String::new();
    read_until(&mut sse, &mut seen, "\"subscribe\"", WAIT);
    assert!(seen.to_ascii_lowercase().contains("content-type: text/event-stream"), "{seen}");

    // A small event comes through at once (the server marks streams X-Accel-Buffering: no,
    // and the config turns proxy buffering off for everything else too).
    let (status, body) = api(nginx.port, "publish", &json!({"channel": "ticks", "data": {"tick": 1}}));
    assert_eq!(status, 200, "{body}");
    read_until(&mut sse, &mut seen, "{\"tick\":1}", Duration::from_secs(2));
}
