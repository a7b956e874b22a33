//! `peregrine bench scale` in a short run against a real `peregrine serve` process: every
//! connection subscribes, every broadcast reaches each once, and the JSON says so.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{BIN, EchoServer};

#[test]
fn scale_connects_everyone_and_every_broadcast_reaches_each_once() {
    let server = EchoServer::spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let (addr, pid) = (format!("127.0.0.1:{}", server.port), server.pid().to_string());
    let latencies = std::env::temp_dir().join(format!("bench-scale-{}.txt", std::process::id()));
    let output = Command::new(BIN)
        .args(["bench", "scale", &addr, "--connections", "60", "--channels", "7", "--broadcasts", "3"])
        .args(["--interval", "0.1", "--server-pid", &pid, "--json", "--latencies-out"])
        .arg(&latencies)
        .output()
        .expect("run bench scale");
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let r: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(r["connections"], 60, "{r}");
    assert_eq!((r["deliveries"].as_u64(), r["lost"].as_u64()), (Some(180), Some(0)), "{r}");
    let (p50, last) = (r["reach_p50_ms"].as_f64().unwrap(), r["reach_last_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && last >= p50, "{r}");
    assert!(r["server_cpu_us_per_delivery"].as_f64().is_some(), "{r}");
    let lines = std::fs::read_to_string(&latencies).unwrap();
    assert_eq!(lines.lines().count(), 180, "one latency per delivery");
    let _ = std::fs::remove_file(latencies);
}

#[test]
fn scale_refuses_non_loopback_targets() {
    let output = Command::new(BIN).args(["bench", "scale", "10.1.2.3:80"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}
