//! `peregrine bench fanout` in a short, bounded run against a real `peregrine serve`
//! process: every publication reaches every subscriber once, in order, and the JSON says so.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{BIN, EchoServer};

fn fanout(port: u16, extra: &[&str]) -> Value {
    let addr = format!("127.0.0.1:{port}");
    let output = Command::new(BIN)
        .args(["bench", "fanout", &addr, "--subscribers", "20", "--duration", "1", "--drain", "5", "--json"])
        .args(extra)
        .output()
        .expect("run bench fanout");
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

/// `peregrine serve` with history on the `bench` channels.
fn serve_with_history() -> EchoServer {
    EchoServer::spawn(&["serve", "--listen", "127.0.0.1:0", "--set", "channels.named.bench.history_size=10"])
}

#[test]
fn fanout_against_peregrine_serve_delivers_everything_once_in_order() {
    let server = serve_with_history();
    let pid = server.pid().to_string();
    for extra in [&["--rate", "50", "--server-pid", pid.as_str()][..], &["--window", "2"][..]] {
        let r = fanout(server.port, extra);
        let published = r["published"].as_u64().unwrap();
        assert!(published > 0, "{r}");
        assert_eq!(
            r["delivered"].as_u64().unwrap(),
            published * 20,
            "every subscriber got every publication: {r}"
        );
        assert_eq!(
            (r["lost"].as_u64(), r["reordered"].as_u64(), r["duplicated"].as_u64()),
            (Some(0), Some(0), Some(0))
        );
        assert!(r["latency"]["p50_us"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["target"], "peregrine");
    }
}

#[test]
fn fanout_spreads_subscribers_and_checks_order_per_publisher() {
    let server = serve_with_history();
    let (pid, addr) = (server.pid().to_string(), format!("127.0.0.1:{}", server.port));
    // The same node twice stands in for a second node sharing a broker.
    let extra = ["--publishers", "3", "--window", "1", "--subscribe-at", &addr, "--server-pid", &pid];
    let r = fanout(server.port, &extra);
    let published = r["published"].as_u64().unwrap();
    assert!(published > 0, "{r}");
    assert_eq!(r["delivered"].as_u64().unwrap(), published * 20, "{r}");
    assert_eq!(
        (r["lost"].as_u64(), r["reordered"].as_u64(), r["duplicated"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(r["nodes_cpu_pct"], serde_json::json!([]), "{r}");
}

#[test]
fn publish_counts_acknowledged_publishes_and_their_cost() {
    let server = serve_with_history();
    let (pid, addr) = (server.pid().to_string(), format!("127.0.0.1:{}", server.port));
    let output = Command::new(BIN)
        .args(["bench", "publish", &addr, "--connections", "4", "--window", "2"])
        .args(["--warmup", "0.2", "--duration", "1", "--server-pid", &pid, "--json"])
        .output()
        .expect("run bench publish");
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let r: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert!(r["published"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["errors"].as_u64(), Some(0), "{r}");
    assert!(r["server_cpu_us_per_publish"].as_f64().is_some(), "{r}");
    assert!(r["broker_cpu_us_per_publish"].is_null(), "{r}");
    assert!(r["latency"]["samples"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn publish_stops_at_a_refused_publish_and_says_why() {
    let server = EchoServer::spawn(&["serve", "--listen", "127.0.0.1:0", "--set", "api_key=secret"]);
    let addr = format!("127.0.0.1:{}", server.port);
    let output = Command::new(BIN)
        .args([
            "bench",
            "publish",
            &addr,
            "--connections",
            "1",
            "--warmup",
            "0",
            "--duration",
            "0.5",
            "--json",
        ])
        .output()
        .expect("run bench publish");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "without the API key nothing is acknowledged: {stdout}");
    assert!(stdout.contains("answered a publish with `HTTP/1.1 401"), "{stdout}");
}

#[test]
fn fanout_refuses_non_loopback_targets() {
    let output = Command::new(BIN).args(["bench", "fanout", "10.1.2.3:80"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}
