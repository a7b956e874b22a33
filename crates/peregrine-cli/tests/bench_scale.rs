//! `peregrine bench scale` in a short run against a real `peregrine serve` process: every
//! connection subscribes, every broadcast reaches each once, and the JSON says so.

mod support;

use std::process::Command;

use serde_json::Value;
use support::services::Owned;
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

#[test]
fn scale_reads_in_batches_and_holds_its_connections_until_released() {
    let server = EchoServer::spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let addr = format!("127.0.0.1:{}", server.port);
    let dir = std::env::temp_dir().join(format!("bench-scale-hold-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (latencies, release) = (dir.join("latencies.txt"), dir.join("release"));
    let generator = Command::new(BIN)
        .args(["bench", "scale", &addr, "--connections", "40", "--channels", "3", "--broadcasts", "3"])
        .args(["--interval", "0.1", "--read-pause-us", "1000", "--json", "--latencies-out"])
        .arg(&latencies)
        .arg("--hold-open")
        .arg(&release)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run bench scale");
    // Killed if the test fails before releasing it: it would hold its connections forever.
    let mut generator = Owned(Some(generator));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !latencies.exists() {
        assert!(std::time::Instant::now() < deadline, "no latencies written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Results written: it keeps its connections until released.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let running = generator.0.as_mut().map(|child| child.try_wait().unwrap().is_none());
    assert_eq!(running, Some(true), "it ended before the release file");
    std::fs::write(&release, "").unwrap();
    let output = generator.0.take().unwrap().wait_with_output().unwrap();
    assert!(output.status.success());
    let r: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!((r["deliveries"].as_u64(), r["lost"].as_u64()), (Some(120), Some(0)), "{r}");
    assert_eq!(std::fs::read_to_string(&latencies).unwrap().lines().count(), 120);
    let _ = std::fs::remove_dir_all(dir);
}
