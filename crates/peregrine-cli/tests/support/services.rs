//! Real `redis-server` and `nginx` processes for multi-node tests, each on free loopback
//! ports, in its own temporary directory, started and stopped by PID.
//!
//! Nothing here touches a system instance (Debian starts its own redis and nginx): every
//! process is one we spawned, and each is killed (SIGKILL, by its PID) when its handle is
//! dropped, also when a test panics.
//!
//! This file uses only `std`, so the server crate's tests (the broker contract suite)
//! include it too, with `#[path]`.
//!
//! The switch is `TEST_REQUIRE_SERVICES`, not a `PEREGRINE_` name: `peregrine serve` reads
//! every `PEREGRINE_*` variable as a configuration key and would refuse an unknown one.
//!
//! When `redis-server` or `nginx` is missing, [`available`] fails the test if
//! `TEST_REQUIRE_SERVICES=1` (scripts/test-all sets it and installs both), and
//! otherwise lets the test skip with a loud note on stderr.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a service may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The nginx configuration we ship, which [`Nginx`] renders: what is tested is what users get.
pub const SHIPPED_NGINX_CONF: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/nginx/peregrine.conf");

/// A port on 127.0.0.1 that nothing listens on right now (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

/// Where `program` is, searching `PATH` and then the sbin directories (nginx lives in
/// /usr/sbin, which a non-root PATH often lacks).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Whether every program in `programs` is installed. When one is not: a panic if
/// `TEST_REQUIRE_SERVICES=1` (CI must not skip silently), else `false` and a loud
/// note, so the caller returns early (the test shows as passed, its stderr says skipped).
pub fn available(test: &str, programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs.iter().copied().filter(|p| find_program(p).is_none()).collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{test}: {} not installed; install with `apt-get install -y redis-server nginx` \
         (scripts/test-all does this when it runs as root)",
        missing.join(" and ")
    );
    if std::env::var("TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{message} (TEST_REQUIRE_SERVICES=1: these tests may not be skipped)");
    }
    eprintln!("\n!!!!!!!! SKIPPED {message}\n");
    false
}

/// A fresh, empty directory under the target's temporary directory.
pub fn fresh_dir(name: &str) -> PathBuf {
    let base = option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("services-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// A process we started: killed by PID and reaped on drop.
#[derive(Debug)]
pub struct Owned(pub Option<Child>);

impl Owned {
    fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }

    /// SIGKILL (by PID, through `Child::kill`) and wait for it to be gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Panics with `what` and `log` if the process has exited.
    fn check_running(&mut self, what: &str, log: &Path) {
        if let Err(exited) = self.running(what, log) {
            panic!("{exited}");
        }
    }

    /// Whether the process still runs; if not, what it said (`what`, its status and `log`).
    fn running(&mut self, what: &str, log: &Path) -> Result<(), String> {
        if let Some(child) = &mut self.0
            && let Ok(Some(status)) = child.try_wait()
        {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("{what} exited ({status}) while starting; its log:\n{log}"));
        }
        Ok(())
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------

/// One command in RESP to `127.0.0.1:port`; the first line of the reply (`+PONG`, `:3`,
/// `-ERR …`; a bulk reply gives its contents). The harness needs a handful of admin
/// commands (PING, CLIENT KILL, CLUSTER INFO) and no client library for them.
pub fn redis_command(port: u16, password: Option<&str>, args: &[&str]) -> std::io::Result<String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(tcp.try_clone()?);
    let mut writer = tcp;
    let mut send = |args: &[&str]| -> std::io::Result<String> {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        writer.write_all(request.as_bytes())?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if let Some(len) = line.strip_prefix('$').and_then(|n| n.trim().parse::<usize>().ok()) {
            let mut bulk = vec![0; len + 2];
            reader.read_exact(&mut bulk)?;
            bulk.truncate(len);
            return Ok(String::from_utf8_lossy(&bulk).into_owned());
        }
        Ok(line.trim_end().to_owned())
    };
    if let Some(password) = password {
        let auth = send(&["AUTH", password])?;
        if !auth.starts_with('+') {
            return Err(std::io::Error::other(format!("AUTH: {auth}")));
        }
    }
    send(args)
}

/// How a [`RedisServer`] is started.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `requirepass`: clients must AUTH with it.
    pub password: Option<String>,
    /// A cluster node (`cluster-enabled yes`) with its cluster bus on this port (`start_with`
    /// picks a free one: give any value).
    pub cluster_bus_port: Option<u16>,
}

/// A `redis-server` on a free loopback port, without persistence (`--save ""
/// --appendonly no`): a restart comes back empty, as a Redis without persistence does.
#[derive(Debug)]
pub struct RedisServer {
    /// The port it listens on (kept across [`restart`](Self::restart)).
    pub port: u16,
    options: RedisOptions,
    dir: PathBuf,
    process: Owned,
}

impl RedisServer {
    /// Starts a plain standalone server, or `None` when Redis is not installed (see
    /// [`available`]).
    pub fn start(test: &str) -> Option<RedisServer> {
        RedisServer::start_with(test, RedisOptions::default())
    }

    /// Starts a server with `options`, or `None` when Redis is not installed.
    pub fn start_with(test: &str, options: RedisOptions) -> Option<RedisServer> {
        if !available(test, &["redis-server", "redis-cli"]) {
            return None;
        }
        // A port from `free_port` can be taken again (by another test's connection) before
        // Redis binds it: then start afresh on other ports, a few times.
        for attempt in 1.. {
            let port = free_port();
            let mut options = options.clone();
            if options.cluster_bus_port.is_some() {
                options.cluster_bus_port = Some(free_port());
            }
            let dir = fresh_dir(&format!("redis-{port}"));
            let mut server = RedisServer { port, options, dir, process: Owned(None) };
            match server.try_spawn() {
                Ok(()) => return Some(server),
                Err(exited) if attempt < 5 && exited.contains("Address already in use") => {
                    eprintln!("redis-server could not bind port {port} (or its bus port): trying others");
                }
                Err(exited) => panic!("{exited}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// `host:port`, as the broker configuration takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id (none while killed).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn spawn(&mut self) {
        if let Err(exited) = self.try_spawn() {
            panic!("{exited}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut args: Vec<String> =
            ["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]
                .map(str::to_owned)
                .to_vec();
        args.extend(["--dir".into(), self.dir.display().to_string()]);
        if let Some(password) = &self.options.password {
            args.extend(["--requirepass".into(), password.clone()]);
        }
        if let Some(bus) = self.options.cluster_bus_port {
            // nodes.conf lives in --dir; the node timeout is short so a test cluster settles fast.
            for (key, value) in [
                ("--cluster-enabled", "yes".to_owned()),
                ("--cluster-config-file", "nodes.conf".to_owned()),
                ("--cluster-port", bus.to_string()),
                ("--cluster-node-timeout", "2000".to_owned()),
            ] {
                args.extend([key.to_owned(), value]);
            }
        }
        let log = std::fs::File::create(self.log_path()).expect("create redis.log");
        let child = Command::new(find_program("redis-server").expect("redis-server"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        self.process = Owned(Some(child));
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.process.running("redis-server", &self.log_path())?;
            match self.command(&["PING"]) {
                Ok(reply) if reply == "+PONG" => return Ok(()),
                _ if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                    panic!("redis-server on port {} did not answer PING in time; log:\n{log}", self.port);
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Runs one command (authenticated when the server has a password); the reply's first line.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        redis_command(self.port, self.options.password.as_deref(), args)
    }

    /// `kill -9`: the server is gone at once, with everything it held.
    pub fn kill9(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port, empty (there is no persistence). Kills it first
    /// if it is still running.
    pub fn restart(&mut self) {
        self.process.kill();
        self.spawn();
    }

    /// `CLIENT KILL TYPE pubsub`: cuts every Pub/Sub connection (the nodes'), leaving
    /// the others. Returns how many were cut.
    pub fn client_kill_pubsub(&self) -> usize {
        let reply = self.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).expect("CLIENT KILL");
        reply.strip_prefix(':').and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("CLIENT KILL: {reply}"))
    }

    /// How many clients are connected in Pub/Sub mode.
    pub fn pubsub_clients(&self) -> usize {
        let list = self.command(&["CLIENT", "LIST", "TYPE", "pubsub"]).expect("CLIENT LIST");
        list.lines().filter(|l| l.starts_with("id=")).count()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.process.kill();
        remove_unless_failing(&self.dir);
    }
}

/// Removes a service's directory, unless the test is failing: then its logs stay for a look.
pub fn remove_unless_failing(dir: &Path) {
    if !std::thread::panicking() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A Redis Cluster of three masters (no replicas), each a [`RedisServer`] with its own
/// directory and bus port, joined with `redis-cli --cluster create`.
#[derive(Debug)]
pub struct RedisCluster {
    /// The masters.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts and joins the cluster and waits for `cluster_state:ok` on every node, or
    /// `None` when Redis is not installed.
    pub fn start(test: &str) -> Option<RedisCluster> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            // The bus port is chosen when the node starts.
            let options = RedisOptions { cluster_bus_port: Some(0), ..Default::default() };
            nodes.push(RedisServer::start_with(test, options)?);
        }
        let addresses: Vec<String> = nodes.iter().map(RedisServer::address).collect();
        let create = Command::new(find_program("redis-cli").expect("redis-cli"))
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            create.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&create.stdout),
            String::from_utf8_lossy(&create.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + START_TIMEOUT;
        while !cluster
            .nodes
            .iter()
            .all(|n| n.command(&["CLUSTER", "INFO"]).is_ok_and(|info| info.contains("cluster_state:ok")))
        {
            assert!(Instant::now() < deadline, "the cluster never reached cluster_state:ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(cluster)
    }

    /// The seed addresses (`host:port` of every master).
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::address).collect()
    }
}

// ---------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------

/// The shipped nginx configuration with its upstream servers replaced by `upstreams`
/// (each `host:port`, keeping the parameters of the file's first `server` line, such as
/// `max_fails`) and its `listen` by `listen_port` on loopback. Panics if the file's shape
/// changed so that the rendering would no longer test it.
pub fn render_nginx_conf(shipped: &str, upstreams: &[String], listen_port: u16) -> String {
    let mut out = String::new();
    let (mut in_upstream, mut servers_written, mut listens) = (false, false, 0);
    for line in shipped.lines() {
        let code = line.split('#').next().unwrap_or("").trim();
        if code.starts_with("upstream ") && code.ends_with('{') {
            in_upstream = true;
        } else if in_upstream && code == "}" {
            in_upstream = false;
        } else if in_upstream && code.starts_with("server ") {
            if !servers_written {
                let params: Vec<&str> =
                    code.trim_end_matches(';').split_whitespace().skip(2).collect::<Vec<_>>();
                for upstream in upstreams {
                    out.push_str(&format!("    server {upstream} {};\n", params.join(" ")));
                }
                servers_written = true;
            }
            continue;
        } else if code.starts_with("listen ") {
            out.push_str(&format!("    listen 127.0.0.1:{listen_port};\n"));
            listens += 1;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(servers_written, "no `server` line in the upstream block of the shipped nginx config");
    assert_eq!(listens, 1, "the shipped nginx config should have one `listen` line");
    out
}

/// `nginx` in the foreground (`daemon off`, one process: `master_process off`) serving the
/// rendered shipped configuration on a free loopback port, with its pid file, logs and
/// temporary files in its own directory.
#[derive(Debug)]
pub struct Nginx {
    /// The port it listens on.
    pub port: u16,
    dir: PathBuf,
    process: Owned,
}

impl Nginx {
    /// Starts nginx in front of `upstreams` (`host:port` each), or `None` when nginx is
    /// not installed.
    pub fn start(test: &str, upstreams: &[String]) -> Option<Nginx> {
        if !available(test, &["nginx"]) {
            return None;
        }
        let port = free_port();
        let dir = fresh_dir(&format!("nginx-{port}"));
        let shipped = std::fs::read_to_string(SHIPPED_NGINX_CONF).expect("read deploy/nginx/peregrine.conf");
        std::fs::write(dir.join("peregrine.conf"), render_nginx_conf(&shipped, upstreams, port))
            .expect("write peregrine.conf");
        // The main file is what a distribution's nginx.conf provides around conf.d/: here
        // everything points into our directory, and one process serves (it is killed by PID).
        let d = dir.display();
        let main = format!(
            "master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n    access_log {d}/access.log;\n    client_body_temp_path {d}/client_body;\n    \
             proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    \
             scgi_temp_path {d}/scgi;\n    include {d}/peregrine.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).expect("write nginx.conf");
        let mut nginx = Nginx { port, dir, process: Owned(None) };
        let child = Command::new(find_program("nginx").expect("nginx"))
            .arg("-p")
            .arg(&nginx.dir)
            .arg("-e")
            .arg(nginx.dir.join("error.log"))
            .arg("-c")
            .arg(nginx.dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(nginx.dir.join("stderr.log")).expect("stderr.log"))
            .spawn()
            .expect("spawn nginx");
        nginx.process = Owned(Some(child));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            nginx.process.check_running("nginx", &nginx.dir.join("error.log"));
            assert!(Instant::now() < deadline, "nginx did not listen in time:\n{}", nginx.error_log());
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(nginx)
    }

    /// `ws://127.0.0.1:PORT/connection/websocket` through nginx.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/connection/websocket", self.port)
    }

    /// nginx's error log (and its stderr) so far, for failure messages.
    pub fn error_log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }

    /// The access log so far: one line per finished request or WebSocket connection.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.process.kill();
        remove_unless_failing(&self.dir);
    }
}
