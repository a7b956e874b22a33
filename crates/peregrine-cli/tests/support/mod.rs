//! Running the `peregrine` binary in tests: an echo server process, a bounded
//! `connect` run, and tiny raw TCP servers that answer a handshake with
//! canned bytes.

// Each test file uses its own part of this module.
#![allow(dead_code)]

pub mod http_client;
pub mod node;
pub mod proxy;
pub mod services;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_peregrine");

/// The longest any process in a test may run.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A `peregrine echo` (or `serve`) process on a free port, killed on drop.
pub struct EchoServer {
    child: Child,
    /// `ws://127.0.0.1:PORT` or `wss://…`, as the server printed it.
    pub url: String,
    /// The port it listens on.
    pub port: u16,
    log: Arc<Mutex<String>>,
}

impl EchoServer {
    /// Starts `peregrine echo --listen 127.0.0.1:0 --verbose` plus `extra`,
    /// and waits for the line that names its URL.
    pub fn start(extra: &[&str]) -> Self {
        let args: Vec<&str> = ["echo", "--listen", "127.0.0.1:0", "--verbose"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        Self::spawn(&args)
    }

    /// Starts `peregrine ARGS` (a server that prints `listening on URL`) and waits for
    /// the line that names its URL.
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn peregrine echo");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (url_tx, url_rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some((_, url)) = line.split_once("listening on ") {
                    let url = url.split_whitespace().next().unwrap_or_default();
                    let _ = url_tx.send(url.to_owned());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let Ok(url) = url_rx.recv_timeout(TIMEOUT) else {
            let _ = child.kill();
            panic!("peregrine {args:?} did not print its URL; log:\n{}", log.lock().unwrap());
        };
        let port = url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port in the URL");
        Self { child, url, port, log }
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "server log never contained {needle:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self) -> ExitStatus {
        wait_bounded(&mut self.child, TIMEOUT)
            .unwrap_or_else(|| panic!("echo did not exit; log:\n{}", self.log()))
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished `connect` printed.
#[derive(Debug)]
pub struct Run {
    /// How it exited.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// What `connect` reads.
pub enum Input<'a> {
    /// These bytes, then EOF.
    Bytes(&'a [u8]),
    /// Nothing, and stdin stays open until the process exits.
    Open,
}

/// Runs `peregrine connect` plus `args` to completion (killed after
/// [`TIMEOUT`]).
pub fn connect(args: &[&str], input: Input<'_>) -> Run {
    run(&[&["connect"][..], args].concat(), input)
}

/// Runs `peregrine` with `args` to completion (killed after [`TIMEOUT`]).
pub fn run(args: &[&str], input: Input<'_>) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peregrine");
    let mut stdin = child.stdin.take();
    if let Input::Bytes(bytes) = input {
        let mut pipe = stdin.take().expect("stdin");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let stdout = read_all(child.stdout.take().expect("stdout"));
    let stderr = read_all(child.stderr.take().expect("stderr"));
    let status = wait_bounded(&mut child, TIMEOUT);
    drop(stdin);
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    let Some(status) = status else {
        panic!("peregrine {args:?} did not finish in time\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    Run { status, stdout, stderr }
}

fn read_all(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child` up to `limit`; kills it (SIGKILL by PID) and returns `None` after.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A small deterministic generator for a test's random choices (the seed is printed, so a
/// failing run can be told apart).
pub struct Lcg(u64);

impl Lcg {
    pub fn from_clock() -> Lcg {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        println!("random seed {seed}");
        Lcg(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// A server for one connection: reads the request head, lets `answer` write
/// whatever it wants, then closes.
pub fn raw_server<F>(answer: F) -> u16
where
    F: FnOnce(&mut TcpStream, &str) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((mut tcp, _)) = listener.accept() else { return };
        let _ = tcp.set_read_timeout(Some(TIMEOUT));
        let head = read_head(&mut tcp);
        answer(&mut tcp, &head);
    });
    port
}

/// A server that answers every handshake with these bytes and closes.
pub fn canned_server(response: &'static str) -> u16 {
    raw_server(move |tcp, _| {
        let _ = tcp.write_all(response.as_bytes());
        let _ = tcp.flush();
    })
}

fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The `101 Switching Protocols` answer to a request head.
pub fn switching_protocols(request: &str) -> String {
    let key = request
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim().to_owned())
        })
        .expect("Sec-WebSocket-Key in the request");
    let accept = peregrine::proto::handshake::accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// A fresh directory for this test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("peregrine-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().unwrap().port()
}
