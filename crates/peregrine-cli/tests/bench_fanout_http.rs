//! `peregrine bench fanout --transport ...` in short, bounded runs against real servers: over
//! SSE, HTTP streaming and long-polling to `peregrine serve`, and over Engine.IO
//! long-polling to the Socket.IO peer of bench/peers/node, every publication reaches every
//! subscriber once, in order, and the JSON report says so.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::services::{available, free_port};
use support::{BIN, EchoServer};

const SUBSCRIBERS: u64 = 5;

fn fanout(port: u16, target: &str, transport: &str, extra: &[&str]) -> Value {
    let addr = format!("127.0.0.1:{port}");
    let subscribers = SUBSCRIBERS.to_string();
    let output = Command::new(BIN)
        .args(["bench", "fanout", &addr, "--target", target, "--transport", transport])
        .args(["--subscribers", &subscribers, "--duration", "1", "--drain", "5", "--json"])
        .args(extra)
        .output()
        .expect("run bench fanout");
    assert!(output.status.success(), "{transport}: stderr: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

/// Every subscriber got every acknowledged publication once and in order.
fn assert_complete(r: &Value, transport: &str) {
    assert_eq!(r["transport"], transport, "{r}");
    let published = r["published"].as_u64().unwrap();
    assert!(published > 0, "{r}");
    assert_eq!(
        r["delivered"].as_u64().unwrap(),
        published * SUBSCRIBERS,
        "every subscriber got everything: {r}"
    );
    assert_eq!(
        (r["lost"].as_u64(), r["reordered"].as_u64(), r["duplicated"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{r}"
    );
    assert!(r["latency"]["p50_us"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["frame_bytes_per_delivery"].as_f64().unwrap() > 0.0, "the bodies were counted: {r}");
}

#[test]
fn fanout_over_each_http_transport_of_ours_delivers_everything_once_in_order() {
    let server = EchoServer::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--set",
        "channels.named.bench.history_size=10",
    ]);
    let pid = server.pid().to_string();
    for transport in ["sse", "http_stream", "long_poll"] {
        // At a rate (each publication on its own), then as fast as the server acknowledges
        // (several per frame, and per poll answer).
        for extra in [&["--rate", "50", "--server-pid", pid.as_str()][..], &["--window", "2"][..]] {
            let r = fanout(server.port, "peregrine", transport, extra);
            assert_complete(&r, transport);
            assert_eq!(r["target"], "peregrine");
        }
    }
    let r = fanout(server.port, "peregrine", "long_poll", &["--rate", "20", "--server-pid", &pid]);
    assert!(r["server_rss_per_subscriber_bytes"].as_f64().is_some(), "{r}");
    assert!(r["server_cpu_pct"].as_f64().is_some(), "{r}");
}

/// The Socket.IO peer, started with only its long-polling transport; killed on drop.
struct SocketIoPeer {
    child: Child,
    port: u16,
}

impl Drop for SocketIoPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// bench/peers/node, with its packages installed (`npm ci`) if they are not yet.
fn node_peers() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers/node");
    if !dir.join("node_modules/socket.io").is_dir() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status()
            .expect("run npm ci");
        assert!(status.success(), "npm ci in bench/peers/node failed");
    }
    dir
}

fn socketio_polling_peer() -> SocketIoPeer {
    let dir = node_peers();
    let port = free_port();
    let child = Command::new("node")
        .args(["socketio-server.mjs", &port.to_string(), "polling"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn node");
    let peer = SocketIoPeer { child, port };
    let until = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "the Socket.IO peer did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    peer
}

#[test]
fn fanout_over_socketio_long_polling_delivers_everything_once_in_order() {
    if !available("fanout_over_socketio_long_polling", &["node", "npm"]) {
        return;
    }
    let peer = socketio_polling_peer();
    let pid = peer.child.id().to_string();
    for extra in [&["--rate", "50", "--server-pid", pid.as_str()][..], &["--window", "2"][..]] {
        let r = fanout(peer.port, "socketio", "polling", extra);
        assert_complete(&r, "polling");
        assert_eq!(r["target"], "socketio");
    }
}

#[test]
fn fanout_refuses_a_transport_its_target_does_not_speak() {
    let refused = |args: &[&str], why: &str| {
        let output = Command::new(BIN).args(["bench", "fanout", "127.0.0.1:9"]).args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    };
    refused(&["--target", "socketio", "--transport", "long_poll"], "does not speak --transport");
    refused(&["--target", "peregrine", "--transport", "polling"], "does not speak --transport");
    refused(&["--transport", "sse", "--encoding", "msgpack"], "carry JSON only");
    refused(&["--transport", "smoke-signals"], "invalid value");
}
