//! `peregrine serve` nodes as real processes, each with its own TOML file, for multi-node
//! tests; a small HTTP client for their API, /health and /metrics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::services::{free_port, fresh_dir, remove_unless_failing};
use super::{BIN, wait_bounded};

/// How long a node may take to answer /health.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The broker a node uses: the `[broker]` section of its file.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The in-memory broker (the default): each node on its own.
    Memory,
    /// Redis: standalone servers (several: channels sharded over them) or the seeds of a
    /// Redis Cluster.
    Redis {
        /// `host:port` of each server (or cluster seed).
        addresses: Vec<String>,
        /// The addresses are Redis Cluster seeds.
        cluster: bool,
        /// `broker.redis.password`.
        password: Option<String>,
        /// `broker.redis.prefix`: each test its own, so tests never share keys.
        prefix: String,
    },
}

impl Backend {
    /// Redis at `addresses` (standalone) with a key prefix of its own.
    pub fn redis(addresses: Vec<String>, prefix: &str) -> Backend {
        Backend::Redis { addresses, cluster: false, password: None, prefix: prefix.to_owned() }
    }

    fn toml(&self) -> String {
        match self {
            Backend::Memory => String::new(),
            Backend::Redis { addresses, cluster, password, prefix } => {
                let addresses: Vec<String> = addresses.iter().map(|a| format!("{a:?}")).collect();
                let password = password.as_ref().map(|p| format!("password = {p:?}\n")).unwrap_or_default();
                format!(
                    "[broker]\ntype = \"redis\"\n\n[broker.redis]\naddresses = [{}]\ncluster = {cluster}\n\
                     prefix = {prefix:?}\n{password}",
                    addresses.join(", ")
                )
            }
        }
    }
}

/// The configuration file of a test node: development mode (anonymous clients, open API,
/// presence and join/leave everywhere), a fixed port and name, history deep enough for
/// every test, no publish rate limit in the way, and `backend`. `extra` is TOML put before
/// the file's sections: top-level keys, or sections other than `[client]`,
/// `[channels.default]` and `[broker]`.
pub fn node_toml(name: &str, port: u16, backend: &Backend, extra: &str) -> String {
    // `name` is a key of the multi-node configuration: the memory broker's nodes go without.
    let name = match backend {
        Backend::Memory => String::new(),
        Backend::Redis { .. } => format!("name = {name:?}\n"),
    };
    format!(
        "development = true\n{name}listen = \"127.0.0.1:{port}\"\n{extra}\n\n\
         [client]\npublish_rate = 1000000.0\npublish_burst = 1000000\n\n\
         [channels.default]\nhistory_size = 20000\nhistory_ttl = \"10m\"\n\n{}\n",
        backend.toml()
    )
}

/// A `peregrine serve --config FILE` process; killed (SIGKILL by PID) on drop.
pub struct PeregrineNode {
    /// Its name (`name` in the file).
    pub name: String,
    /// The port it listens on.
    pub port: u16,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    /// Holds its configuration file.
    dir: PathBuf,
}

impl PeregrineNode {
    /// Writes the file, starts the node and waits until /health answers 200.
    pub fn start(name: &str, backend: &Backend, extra: &str) -> PeregrineNode {
        let port = free_port();
        let mut node = PeregrineNode::spawn(name, &node_toml(name, port, backend, extra));
        node.port = port;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = node.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("node {name} exited while starting ({status}); its log:\n{}", node.log());
            }
            if http(port, "GET", "/health", None).is_ok_and(|(status, _)| status == 200) {
                return node;
            }
            assert!(Instant::now() < deadline, "node {name} never answered /health; log:\n{}", node.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a node from the TOML text `config`, without waiting for anything.
    pub fn spawn(name: &str, config: &str) -> PeregrineNode {
        let dir = fresh_dir(&format!("node-{name}-{}", free_port()));
        let file = dir.join("peregrine.toml");
        std::fs::write(&file, config).expect("write the node's config");
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn peregrine serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        PeregrineNode { name: name.to_owned(), port: 0, child: Some(child), log, dir }
    }

    /// `127.0.0.1:PORT`, for an nginx upstream.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `ws://127.0.0.1:PORT/connection/websocket`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/connection/websocket", self.port)
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The process id (none once stopped or killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("the node is running")
    }

    /// `kill -9`: no goodbye to its clients, its TCP connections reset.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (bounded) for the graceful exit; its status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the node is running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        wait_bounded(&mut child, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("node {} did not stop after SIGTERM; log:\n{}", self.name, self.log()))
    }

    /// Waits up to `limit` for the node to exit by itself: its status and stderr, or
    /// `None` (and the node killed) if it was still running.
    pub fn exit_within(&mut self, limit: Duration) -> Option<(ExitStatus, String)> {
        let mut child = self.child.take().expect("the node is running");
        let status = wait_bounded(&mut child, limit)?;
        // The stderr reader ends with the pipe; give it a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        Some((status, self.log()))
    }

    /// GET `path` on this node: status and body as JSON (`Null` when not JSON).
    pub fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = http(self.port, "GET", path, None).expect("GET");
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// POST `body` to `/api/{method}` on this node: status and the JSON answer.
    pub fn api(&self, method: &str, body: &Value) -> (u16, Value) {
        api(self.port, method, body)
    }

    /// The value of an un-labelled metric (`peregrine_<name>`) in /metrics.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = http(self.port, "GET", "/metrics", None).expect("GET /metrics");
        let wanted = format!("peregrine_{name} ");
        body.lines()
            .find_map(|line| line.strip_prefix(&wanted))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric peregrine_{name} in:\n{body}"))
    }
}

impl Drop for PeregrineNode {
    fn drop(&mut self) {
        self.kill9();
        remove_unless_failing(&self.dir);
    }
}

/// POST `body` to `/api/{method}` on `127.0.0.1:port`: status and the JSON answer.
pub fn api(port: u16, method: &str, body: &Value) -> (u16, Value) {
    let (status, text) = http(port, "POST", &format!("/api/{method}"), Some(&body.to_string()))
        .unwrap_or_else(|e| panic!("POST /api/{method} to port {port}: {e}"));
    let value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(_) => Value::String(text),
    };
    (status, value)
}

/// One HTTP/1.1 request (`Connection: close`) to `127.0.0.1:port`: status and body.
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    let content_type = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{content_type}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    tcp.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, rest) = response.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other("no head"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked { dechunk(rest) } else { rest.to_owned() };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || tail.len() < size {
            break;
        }
        body.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    body
}
