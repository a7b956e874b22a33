//! `peregrine bench` in short, bounded runs against an in-process peregrine
//! echo server: each scenario prints sane JSON.

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a bench run may take before the test kills it.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// An echo server on a free port, on its own thread and runtime, for the
/// rest of the test process. The server's pid is the test's own.
fn echo_server() -> SocketAddr {
    ws_server(peregrine::Config::default(), |mut ws| async move {
        while let Some(Ok(message)) = ws.recv().await {
            if message.is_data() && ws.send(message).await.is_err() {
                break;
            }
        }
    })
}

/// A WebSocket server on a free port whose connections are handed to
/// `handle`, on its own thread and runtime.
fn ws_server<F, Fut>(config: peregrine::Config, handle: F) -> SocketAddr
where
    F: Fn(peregrine::WebSocket<tokio::net::TcpStream>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (config, handle) = (config.clone(), handle.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    if let Ok(ws) = peregrine::accept_with(tcp, &config, |r| Ok(r.accept())).await {
                        handle(ws).await;
                    }
                });
            }
        });
    });
    addr
}

/// A server that accepts connections and reads the request, but never
/// answers it.
fn silent_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            held.push(stream);
        }
    });
    addr
}

/// A server that answers every request with a 404.
fn not_found_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    addr
}

/// Runs `peregrine bench ARGS --json`, bounded by [`RUN_LIMIT`]; returns the
/// exit success, the parsed stdout (if JSON) and stderr.
fn bench(args: &[&str]) -> (bool, Option<Value>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run peregrine");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("peregrine bench {args:?} ran over {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("read stdout");
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    (status.success(), serde_json::from_str(&stdout).ok(), stderr)
}

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/")
}

fn pid() -> String {
    std::process::id().to_string()
}

fn assert_latency_ordered(latency: &Value) {
    let get = |key: &str| latency[key].as_f64().unwrap_or_else(|| panic!("latency.{key} in {latency}"));
    let (p50, p90, p99, p999, max) =
        (get("p50_us"), get("p90_us"), get("p99_us"), get("p999_us"), get("max_us"));
    assert!(p50 > 0.0, "{latency}");
    assert!(p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max, "percentiles out of order: {latency}");
}

#[test]
fn echo_pipelined_reports_throughput_latency_and_cpu() {
    let url = url(echo_server());
    let pid = pid();
    let (ok, json, stderr) = bench(&[
        "echo",
        &url,
        "--connections",
        "4",
        "--size",
        "100",
        "--pipeline",
        "8",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--server-pid",
        &pid,
    ]);
    assert!(ok, "{stderr}");
    let json = json.expect("JSON on stdout");
    assert_eq!(json["scenario"], "echo");
    assert_eq!(json["connected"], 4);
    assert_eq!(json["pipeline"], 8);
    assert_eq!(json["errors"], 0, "{json}");
    let messages = json["messages"].as_u64().expect("messages");
    assert!(messages > 100, "{json}");
    assert_eq!(json["latency"]["samples"].as_u64(), Some(messages));
    let per_s = json["msgs_per_s"].as_f64().expect("msgs_per_s");
    assert!((per_s - messages as f64).abs() < 1.0, "one-second window: {json}");
    assert!((json["mb_per_s"].as_f64().expect("mb_per_s") - per_s * 100.0 / 1e6).abs() < 0.02, "{json}");
    assert_latency_ordered(&json["latency"]);
    assert_eq!(json["send_lag"], Value::Null, "closed loop: nothing is scheduled");
    assert!(json["generator_cpu_pct"].as_f64().expect("generator cpu") > 0.0, "{json}");
    assert!(json["server_cpu_pct"].as_f64().expect("server cpu") >= 0.0, "{json}");
}

#[test]
fn echo_at_a_target_rate_sends_that_rate() {
    let url = url(echo_server());
    let (ok, json, stderr) = bench(&[
        "echo",
        &url,
        "--connections",
        "2",
        "--size",
        "16",
        "--rate",
        "2000",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--text",
    ]);
    assert!(ok, "{stderr}");
    let json = json.expect("JSON on stdout");
    assert_eq!(json["target_rate"], 2000.0);
    assert_eq!(json["pipeline"], Value::Null);
    assert_eq!(json["opcode"], "text");
    let messages = json["messages"].as_u64().expect("messages");
    assert!((1500..=2500).contains(&messages), "about 2000 in one second: {json}");
    assert_eq!(json["server_cpu_pct"], Value::Null, "no --server-pid given");
    assert_latency_ordered(&json["latency"]);
    // The generator's own lateness, one sample per message released in the
    // window (echoes are counted when they arrive, so the two differ by a few).
    let lag = &json["send_lag"];
    let released = lag["samples"].as_u64().expect("send lag samples");
    assert!(released.abs_diff(messages) <= 20, "{released} released, {messages} echoed: {json}");
    assert_latency_ordered(lag);
}

#[test]
fn large_messages_are_counted() {
    let url = url(echo_server());
    let (ok, json, stderr) = bench(&[
        "echo",
        &url,
        "--connections",
        "2",
        "--size",
        "300000",
        "--duration",
        "1",
        "--warmup",
        "0.1",
    ]);
    assert!(ok, "{stderr}");
    let json = json.expect("JSON on stdout");
    assert!(json["messages"].as_u64().expect("messages") > 10, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
}

#[test]
fn idle_reports_connect_rate_and_bytes_per_connection() {
    let url = url(echo_server());
    let pid = pid();
    let (ok, json, stderr) = bench(&[
        "idle",
        &url,
        "--connections",
        "300",
        "--source-addrs",
        "2",
        "--hold",
        "0.3",
        "--server-pid",
        &pid,
    ]);
    assert!(ok, "{stderr}");
    let json = json.expect("JSON on stdout");
    assert_eq!(json["scenario"], "idle");
    assert_eq!(json["connected"], 300, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert_eq!(json["source_addrs"], 2);
    assert!(json["connects_per_s"].as_f64().expect("rate") > 0.0);
    assert!(json["server_rss_before_bytes"].as_u64().expect("rss before") > 0);
    assert!(json["server_rss_after_bytes"].as_u64().expect("rss after") > 0);
    assert!(json["bytes_per_connection"].is_f64(), "bytes per connection with --server-pid: {json}");
}

#[test]
fn idle_without_a_pid_has_no_memory_figures() {
    let url = url(echo_server());
    let (ok, json, stderr) = bench(&["idle", &url, "--connections", "20", "--hold", "0"]);
    assert!(ok, "{stderr}");
    let json = json.expect("JSON on stdout");
    assert_eq!(json["connected"], 20);
    assert_eq!(json["bytes_per_connection"], Value::Null);
}

#[test]
fn handshake_reports_rate_and_latency() {
    let url = url(echo_server());
    let pid = pid();
    let (ok, json, stderr) = bench(&[
        "handshake",
        &url,
        "--concurrency",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--server-pid",
        &pid,
    ]);
    assert!(ok, "{stderr}");
    let json = json.expect("JSON on stdout");
    assert_eq!(json["scenario"], "handshake");
    assert_eq!(json["errors"], 0, "{json}");
    let handshakes = json["handshakes"].as_u64().expect("handshakes");
    assert!(handshakes > 10, "{json}");
    assert_eq!(json["latency"]["samples"].as_u64(), Some(handshakes));
    assert_latency_ordered(&json["latency"]);
    assert!(json["generator_cpu_pct"].is_f64() && json["server_cpu_pct"].is_f64(), "{json}");
}

#[test]
fn a_refused_handshake_is_reported() {
    let url = url(not_found_server());
    let (ok, _, stderr) = bench(&["echo", &url, "--connections", "1", "--duration", "0.2", "--warmup", "0"]);
    assert!(!ok);
    assert!(stderr.contains("404 Not Found"), "{stderr}");
    // Nothing measured: the figures still print, and the exit status says so.
    let (ok, json, stderr) =
        bench(&["handshake", &url, "--concurrency", "1", "--duration", "0.3", "--warmup", "0"]);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("no handshake completed"), "{stderr}");
    let json = json.expect("JSON on stdout");
    assert_eq!(json["handshakes"], 0);
    assert!(json["errors"].as_u64().expect("errors") > 0, "{json}");
    assert!(json["error_samples"][0].as_str().expect("a sample").contains("404 Not Found"), "{json}");
}

#[test]
fn a_server_that_never_answers_the_handshake_times_out_in_every_scenario() {
    let url = url(silent_server());
    let timeout = ["--connect-timeout", "0.5"];
    let started = Instant::now();
    let (ok, _, stderr) = bench(&[&["echo", &url, "-c", "2", "-d", "0.5", "-w", "0"][..], &timeout].concat());
    assert!(!ok);
    assert!(stderr.contains("within 0.5s (--connect-timeout)"), "{stderr}");
    let (ok, json, stderr) = bench(&[&["idle", &url, "-c", "3", "--hold", "0.1"][..], &timeout].concat());
    assert!(!ok, "{stderr}");
    let json = json.expect("JSON on stdout");
    assert_eq!((json["opened"].as_u64(), json["errors"].as_u64()), (Some(0), Some(3)), "{json}");
    let (ok, json, stderr) =
        bench(&[&["handshake", &url, "-c", "2", "-d", "1", "-w", "0"][..], &timeout].concat());
    assert!(!ok, "{stderr}");
    assert!(json.expect("JSON on stdout")["errors"].as_u64() >= Some(2));
    assert!(started.elapsed() < RUN_LIMIT, "took {:?}", started.elapsed());
}

#[test]
fn answers_that_are_not_echoes_fail_the_connection() {
    // Half the payload back: the length is checked.
    let short = ws_server(peregrine::Config::default(), |mut ws| async move {
        while let Some(Ok(message)) = ws.recv().await {
            let half = message.payload()[..message.payload().len() / 2].to_vec();
            if ws.send(peregrine::Message::binary(half)).await.is_err() {
                break;
            }
        }
    });
    // Every message twice, in one write: the second arrives with nothing in
    // flight. (Payloads are not compared, so a repeat that arrived after
    // the next message had gone out would pass for its echo.)
    let twice = ws_server(peregrine::Config::default(), |mut ws| async move {
        while let Some(Ok(message)) = ws.recv().await {
            let repeated = async {
                ws.feed(message.clone()).await?;
                ws.feed(message).await?;
                ws.flush().await
            };
            if repeated.await.is_err() {
                break;
            }
        }
    });
    // Binary sent, text back: the opcode is checked.
    let as_text = ws_server(peregrine::Config::default(), |mut ws| async move {
        while let Some(Ok(message)) = ws.recv().await {
            let text = String::from_utf8_lossy(message.payload()).into_owned();
            if ws.send(peregrine::Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    for (addr, expected) in [
        (short, "answered a 100-byte binary message with a 50-byte binary one"),
        (twice, "with none in flight"),
        (as_text, "answered a 100-byte binary message with a 100-byte text one"),
    ] {
        let (ok, json, stderr) = bench(&["echo", &url(addr), "-c", "1", "-s", "100", "-d", "0.3", "-w", "0"]);
        assert!(!ok, "{stderr}");
        let json = json.expect("JSON on stdout");
        assert_eq!(json["errors"], 1, "{json}");
        let sample = json["error_samples"][0].as_str().expect("an error sample");
        assert!(sample.contains(expected), "{sample}");
    }
}

/// A server that sends the text message "welcome" in the same write as its
/// 101, then reads until the client leaves.
fn greeting_with_the_101_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for mut tcp in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8];
                while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let Some(key) = head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim().to_owned())
                }) else {
                    return;
                };
                let accept = peregrine::proto::handshake::accept_key(key.as_bytes());
                let mut answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {accept}\r\n\r\n"
                )
                .into_bytes();
                answer.extend_from_slice(b"\x81\x07welcome");
                let _ = std::io::Write::write_all(&mut tcp, &answer);
                let _ = std::io::copy(&mut tcp, &mut std::io::sink());
            });
        }
    });
    addr
}

#[test]
fn a_server_that_greets_is_named_whenever_the_greeting_arrives() {
    // The greeting in the same read as the 101, and in a write of its own
    // after it (it may still arrive with the 101; either way it is named).
    let with_101 = greeting_with_the_101_server();
    let after_101 = ws_server(peregrine::Config::default(), |mut ws| async move {
        if ws.send(peregrine::Message::text("welcome")).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = ws.recv().await {
            if message.is_data() && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    // Closed loop, and open loop (where nothing goes out before the first tick).
    let runs = [(with_101, None), (after_101, None), (with_101, Some("10")), (after_101, Some("10"))];
    for (addr, rate) in runs {
        let url = url(addr);
        let mut args = vec!["echo", &url, "-c", "1", "-s", "100", "-d", "0.3", "-w", "0"];
        if let Some(rate) = rate {
            args.extend(["--rate", rate]);
        }
        let (ok, json, stderr) = bench(&args);
        assert!(!ok, "{stderr}");
        let json = json.expect("JSON on stdout");
        let sample = json["error_samples"][0].as_str().expect("an error sample");
        assert!(sample.contains("7-byte text"), "{sample}");
        assert!(sample.contains("a greeting? `bench echo` needs a server that only echoes"), "{sample}");
    }
}

#[test]
fn idle_connections_answer_pings_and_count_those_the_server_ends() {
    // Pings every 300 ms, and drops a client that has not answered in 1 s:
    // a client that never answers is gone 1.3 s into the 3 s hold.
    let strict = peregrine::Config::default()
        .ping_interval(Some(Duration::from_millis(300)))
        .ping_timeout(Duration::from_secs(1));
    let pinging = ws_server(strict, |mut ws| async move { while let Some(Ok(_)) = ws.recv().await {} });
    // More connections than opening workers: the first ones wait for the rest.
    let (ok, json, stderr) =
        bench(&["idle", &url(pinging), "-c", "100", "--concurrency", "4", "--hold", "3"]);
    assert!(ok, "{stderr}");
    let json = json.expect("JSON on stdout");
    assert_eq!((json["opened"].as_u64(), json["connected"].as_u64()), (Some(100), Some(100)), "{json}");
    assert_eq!(json["errors"], 0, "{json}");

    // Closes every connection after 200 ms with 1001.
    let leaving = ws_server(peregrine::Config::default(), |mut ws| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = ws.close(peregrine::CloseCode::GOING_AWAY, "restart").await;
    });
    let (ok, json, stderr) = bench(&["idle", &url(leaving), "-c", "5", "--hold", "0.8"]);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("no connection was open at the end of the hold"), "{stderr}");
    let json = json.expect("JSON on stdout");
    assert_eq!((json["opened"].as_u64(), json["connected"].as_u64()), (Some(5), Some(0)), "{json}");
    assert_eq!(json["errors"], 5, "{json}");
    let sample = json["error_samples"][0].as_str().expect("an error sample");
    assert!(sample.contains("closed an idle connection") && sample.contains("restart"), "{sample}");
}

#[test]
fn out_of_range_arguments_are_refused_naming_the_option() {
    let url = url(echo_server());
    for (args, expected) in [
        (&["echo", &url, "-d", "1e300"][..], "--duration must be at most"),
        (&["echo", &url, "-w", "1e300"][..], "--warmup must be at most"),
        (
            &["echo", &url, "-r", "1e-300", "-d", "1"][..],
            "--rate 1e-300 is less than one message per connection",
        ),
        (&["echo", &url, "-r", "1e12", "-c", "2"][..], "more than the generator can time"),
        (&["echo", &url, "-c", "99999999999"][..], "--connections 99999999999 needs more open files"),
        (&["idle", &url, "--hold", "1e300"][..], "--hold must be at most"),
        (&["handshake", &url, "--connect-timeout", "0"][..], "--connect-timeout must be positive"),
        (&["fanout", "127.0.0.1:9", "--drain=-1"][..], "--drain must be 0 or more"),
    ] {
        let (ok, _, stderr) = bench(args);
        assert!(!ok && stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn fanout_against_a_server_without_the_publish_api_stops_at_the_first_refusal() {
    let addr = echo_server().to_string();
    let started = Instant::now();
    let (ok, _, stderr) =
        bench(&["fanout", &addr, "--subscribers", "5", "--duration", "10", "--drain", "10"]);
    assert!(!ok, "{stderr}");
    // An echo server echoes the subscribers' commands instead of answering them.
    assert!(stderr.contains("not the realtime protocol"), "{stderr}");
    assert!(stderr.contains("is --target right"), "{stderr}");
    // Not the 10 s asked for: the first refusal ends the run.
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
}

#[test]
fn fanout_against_peregrine_serve_in_every_encoding() {
    let server = support::EchoServer::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--set",
        "channels.named.bench.history_size=10",
    ]);
    let addr = format!("127.0.0.1:{}", server.port);
    let mut bytes = Vec::new();
    for encoding in ["json", "msgpack", "protobuf"] {
        let (ok, json, stderr) = bench(&[
            "fanout",
            &addr,
            "--encoding",
            encoding,
            "--subscribers",
            "10",
            "--duration",
            "0.5",
            "--rate",
            "40",
            "--payload",
            "100",
            "--drain",
            "5",
        ]);
        assert!(ok, "{encoding}: {stderr}");
        let r = json.expect("JSON on stdout");
        assert_eq!(r["encoding"], encoding, "{r}");
        assert!(r["delivered"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["delivered"].as_u64(), r["published"].as_u64().map(|p| p * 10), "{r}");
        assert_eq!(
            (r["lost"].as_u64(), r["reordered"].as_u64(), r["duplicated"].as_u64()),
            (Some(0), Some(0), Some(0)),
            "{r}"
        );
        bytes.push(r["frame_bytes_per_delivery"].as_f64().unwrap());
    }
    // Every frame carries the ~130-byte payload; the binary encodings have no JSON around it.
    assert!(bytes.iter().all(|&b| b > 120.0), "{bytes:?}");
    assert!(bytes[1] < bytes[0] && bytes[2] < bytes[0], "{bytes:?}");
    let (ok, _, stderr) = bench(&["fanout", &addr, "--target", "ws", "--encoding", "msgpack"]);
    assert!(!ok && stderr.contains("--encoding is for --target peregrine only"), "{stderr}");
}
