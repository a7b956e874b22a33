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

#[test]
fn fanout_against_peregrine_serve_delivers_everything_once_in_order() {
    let server = EchoServer::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--set",
        "channels.named.bench.history_size=10",
    ]);
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
fn fanout_refuses_non_loopback_targets() {
    let output = Command::new(BIN).args(["bench", "fanout", "10.1.2.3:80"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}
