//! `peregrine bench storm` and `peregrine bench abuse` in short runs against a real
//! `peregrine serve` process they start themselves: every client comes back after a
//! restart, and each abuse gets the refusal its limit names while the server stays up.

mod support;

use std::process::Command;

use serde_json::Value;
use support::BIN;
use support::services::free_port;

fn run(args: &[&str], server: &[&str]) -> Value {
    let output = Command::new(BIN).args(args).arg("--json").arg("--").arg(BIN).args(server).output().unwrap();
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

#[test]
fn storm_brings_every_client_back_after_a_graceful_restart_and_after_a_kill() {
    for stop in ["term", "kill"] {
        let addr = format!("127.0.0.1:{}", free_port());
        let r = run(
            &["bench", "storm", &addr, "--connections", "40", "--channels", "4", "--stop", stop],
            &["serve", "--listen", &addr],
        );
        assert_eq!((r["back"].as_u64(), r["connections"].as_u64()), (Some(40), Some(40)), "{r}");
        assert_eq!(r["server_up"], true, "{r}");
        let (p50, last) = (r["back_p50_s"].as_f64().unwrap(), r["back_last_s"].as_f64().unwrap());
        assert!(p50 > 0.0 && last >= p50, "{r}");
        assert!(r["attempts"].as_u64().unwrap() >= 40, "one successful attempt each at least: {r}");
    }
}

#[test]
fn abuse_reports_what_each_abuser_got_and_the_server_stays_up() {
    let addr = format!("127.0.0.1:{}", free_port());
    let dir = support::services::fresh_dir(&format!("bench-abuse-{}", std::process::id()));
    let config = dir.join("server.toml");
    // Production mode: the limits are off in development.
    std::fs::write(&config, "api_key = \"k\"\n[token]\nallow_anonymous = true\n").unwrap();
    let r = run(
        &["bench", "abuse", &addr, "--abusers", "60", "--hold", "0.5", "--case", "oversized"],
        &["serve", "--config", config.to_str().unwrap(), "--listen", &addr],
    );
    let case = &r[0];
    assert_eq!(case["case"], "oversized", "{r}");
    assert_eq!(
        case["outcomes"]["close 1009"].as_u64(),
        Some(60),
        "every oversized message closes with 1009: {r}"
    );
    assert_eq!(
        (case["server_up"].as_bool(), case["bystander_ok"].as_bool()),
        (Some(true), Some(true)),
        "{r}"
    );
    assert!(case["rss_peak_mib"].as_f64().unwrap() >= case["rss_before_mib"].as_f64().unwrap(), "{r}");
}
