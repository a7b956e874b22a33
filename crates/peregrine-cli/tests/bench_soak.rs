//! `peregrine bench soak` in a short run against a real `peregrine serve` process: clients
//! come and go every way (close frame, TCP reset, silence reaped by the server's pong
//! timeout), recover, publish and read history without a single error, and the server holds
//! no session once they are gone.

mod support;

use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use support::node::http;
use support::{BIN, EchoServer, TIMEOUT};

#[test]
fn soak_churns_without_errors_and_leaves_no_session_behind() {
    // A short ping interval and pong timeout, so silent clients are reaped within the run.
    let server = EchoServer::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--set",
        "client.ping_interval=1s",
        "--set",
        "client.pong_timeout=1s",
    ]);
    let addr = format!("127.0.0.1:{}", server.port);
    let output = Command::new(BIN)
        .args(["bench", "soak", &addr, "--connections", "40", "--duration", "4", "--ramp", "0.5"])
        .args(["--lifetime", "1", "--pause", "0.1", "--publish-interval", "0.2", "--history-interval", "0.3"])
        .args(["--abrupt", "0.3", "--silent", "0.2", "--reap-within", "4", "--channels", "3"])
        .args(["--live-channels", "2", "--json"])
        .output()
        .expect("run bench soak");
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let r: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let count = |key: &str| r[key].as_u64().unwrap_or_else(|| panic!("no {key} in {r}"));
    assert_eq!(count("errors"), 0, "{r}\nserver log:\n{}", server.log());
    // Every slot came back at least once, and visits subscribed to their three channels (a
    // visit may leave, by its random lifetime, before the replies come).
    assert!(count("visits") > 40, "{r}");
    let (subscriptions, visits) = (count("subscriptions"), count("visits"));
    assert!(subscriptions <= 3 * visits && subscriptions >= 2 * visits, "{r}");
    assert_eq!(count("left_clean") + count("left_abrupt") + count("left_silent"), count("visits"), "{r}");
    assert!(count("left_clean") > 0 && count("left_abrupt") > 0 && count("left_silent") > 0, "{r}");
    assert_eq!(count("silent_reaped"), count("left_silent"), "the server reaped every silent client: {r}");
    assert!(count("recovered") > 0, "later visits recovered where the slot left off: {r}");
    assert!(count("publishes_acked") > 0 && count("deliveries") > count("publishes_acked"), "{r}");
    assert!(count("history_reads") > 0, "{r}");

    // Every client is gone: the server's live sessions come back to zero.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, body) = http(server.port, "GET", "/health", None).expect("GET /health");
        let health: Value = serde_json::from_str(&body).expect("JSON /health");
        if status == 200 && health["connections"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "sessions never came back to 0: {health}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn soak_refuses_remote_targets_and_impossible_shares() {
    let remote = Command::new(BIN).args(["bench", "soak", "10.1.2.3:80"]).output().unwrap();
    assert!(!remote.status.success());
    assert!(String::from_utf8_lossy(&remote.stderr).contains("loopback"));
    let shares = Command::new(BIN)
        .args(["bench", "soak", "127.0.0.1:1", "--abrupt", "0.7", "--silent", "0.5"])
        .output()
        .unwrap();
    assert!(!shares.status.success());
    assert!(String::from_utf8_lossy(&shares.stderr).contains("more than 1"), "{shares:?}");
}
