//! Accepting connections and the graceful shutdown, the mini-redis way: a listener loop
//! hands each TCP connection (TLS-terminated when configured) to hyper with our router; on
//! SIGTERM/SIGINT it asks every session to close with 1001 and a reconnect hint, and waits
//! for them up to `shutdown_timeout`. It keeps accepting while they drain, so that a load
//! balancer's health check gets a 503 from `/health` rather than a refused connection (new
//! WebSocket upgrades get a 503 too), and closes the listener when the drain ends.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::router::router;
use crate::broker::BrokerError;
use crate::config::{BrokerKind, Config, LogFormat};
use crate::node::Node;

/// The server could not start or failed.
#[derive(Debug)]
pub enum ServeError {
    /// The listen address could not be bound.
    Bind(SocketAddr, std::io::Error),
    /// The TLS files could not be read or used; names the key.
    Tls(String),
    /// The runtime could not start.
    Runtime(std::io::Error),
    /// The configuration is unusable (names the key).
    Config(crate::config::ConfigError),
    /// The broker's backend could not be used (names the key and the fix).
    Broker(String),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Bind(addr, e) => write!(
                f,
                "cannot listen on {addr} (key `listen`): {e}; is another server using the port? \
                 pick another with --listen"
            ),
            ServeError::Tls(m) => f.write_str(m),
            ServeError::Runtime(e) => write!(f, "cannot start the runtime: {e}"),
            ServeError::Config(e) => write!(f, "{e}"),
            ServeError::Broker(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ServeError {}

/// A bound server: its node and listener, not yet serving.
#[derive(Debug)]
pub struct Server {
    node: Arc<Node>,
    listener: TcpListener,
    tls: Option<peregrine::tls::TlsAcceptor>,
    /// Accepted sockets past which new ones get a canned 503 at once: the open-files limit
    /// less half the reserve, so `accept` itself never runs out (`usize::MAX`: unknown).
    socket_limit: usize,
}

impl Server {
    /// Binds `config.listen` and builds the node on the broker `config.broker` names.
    pub async fn bind(config: Config) -> Result<Server, ServeError> {
        let tls = match &config.tls {
            None => None,
            Some(files) => {
                let read = |key: &str, path: &std::path::Path| {
                    std::fs::read(path).map_err(|e| {
                        ServeError::Tls(format!("cannot read `tls.{key}` {}: {e}", path.display()))
                    })
                };
                let (cert, key) = (read("cert", &files.cert)?, read("key", &files.key)?);
                let acceptor = peregrine::tls::TlsAcceptor::from_pem(&cert, &key)
                    .map_err(|e| ServeError::Tls(tls_files_error(&e, &files.cert, &files.key)))?;
                Some(acceptor)
            }
        };
        let listen = config.listen;
        let fd_capacity = raise_open_files_limit();
        config.validate().map_err(ServeError::Config)?;
        let node = match config.broker.kind {
            BrokerKind::Memory => Node::new(config).map_err(ServeError::Config)?,
            BrokerKind::Redis => {
                let (broker, presence) =
                    crate::broker::redis::connect(&config.broker.redis).await.map_err(|e| match e {
                        BrokerError::Invalid(m) | BrokerError::Unavailable(m) => ServeError::Broker(m),
                    })?;
                Node::with_backends(config, broker, presence).map_err(ServeError::Config)?
            }
        };
        let listener = TcpListener::bind(listen).await.map_err(|e| ServeError::Bind(listen, e))?;
        if let Some(capacity) = fd_capacity {
            node.set_fd_capacity(capacity);
        }
        tracing::info!(
            max_connections = node.max_connections(),
            open_files = ?fd_capacity.map(|c| c + FD_RESERVE),
            "this node takes up to {} connections (client.max_connections{}); past that, handshakes get 503",
            node.max_connections(),
            if fd_capacity.is_some_and(|c| c < node.config().client.max_connections) {
                ", lowered to the open-files limit"
            } else {
                ""
            },
        );
        let socket_limit = fd_capacity.map_or(usize::MAX, |c| c + FD_RESERVE / 2);
        Ok(Server { node, listener, tls, socket_limit })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| self.node.config().listen)
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully (see the module doc).
    /// Returns how many sessions were still open at the deadline.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> usize {
        let Server { node, listener, tls, socket_limit } = self;
        // Sockets open = HTTP connections being served (counted by their tasks) + upgraded
        // WebSockets (their sessions' gauge): nothing per connection to allocate or share.
        let http_connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let websockets =
            node.metrics().transport_connections(crate::transport::Transport::WebSocket.as_str());
        let heartbeat = tokio::spawn(Arc::clone(&node).heartbeat());
        let app = router(Arc::clone(&node));
        let mut accept_errors = AcceptErrors::default();
        let mut accept = |accepted: std::io::Result<(tokio::net::TcpStream, SocketAddr)>| {
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => return accept_errors.pause_after(e),
            };
            let socket = OpenSocket::count(&http_connections);
            if socket.open + usize::try_from(websockets.get()).unwrap_or(0) > socket_limit {
                crate::transport::websocket::count_rejection(&node, "open_files");
                refuse_socket(&tcp);
                return None; // closed here, its descriptor free before the next accept
            }
            let _ = tcp.set_nodelay(true);
            // Signalled when the connection's first request head is in (see `within_deadline`).
            let first_request = Arc::new(tokio::sync::Notify::new());
            let seen = Arc::clone(&first_request);
            let app = tower::ServiceBuilder::new()
                .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                    seen.notify_one();
                    request.extensions_mut().insert(super::router::Peer(peer));
                    request
                })
                .service(app.clone());
            let tls = tls.clone();
            let head_timeout = node.config().client.handshake_timeout;
            tokio::spawn(async move {
                let _socket = socket;
                let connection = async move {
                    match tls {
                        None => serve_connection(tcp, app).await,
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(stream) => serve_connection(stream, app).await,
                            Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        },
                    }
                };
                within_deadline(connection, &first_request, head_timeout, peer).await;
            });
            None
        };
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => if let Some(pause) = accept(accepted) {
                    tokio::time::sleep(pause).await;
                },
                _ = &mut shutdown => break,
            }
        }
        let deadline = node.config().shutdown_timeout;
        tracing::info!(
            sessions = node.session_count(),
            ?deadline,
            "shutting down: closing sessions with 1001, /health answers 503 meanwhile"
        );
        // Once the node is shutting down the router answers `/health` and upgrades with 503.
        let drain = node.shutdown(deadline);
        tokio::pin!(drain);
        let left = loop {
            tokio::select! {
                // The drain first: its first poll marks the node as shutting down before
                // any connection accepted here is served.
                biased;
                left = &mut drain => break left,
                accepted = listener.accept() => if let Some(pause) = accept(accepted) {
                    tokio::time::sleep(pause).await;
                },
            }
        };
        drop(listener);
        heartbeat.abort();
        if left > 0 {
            tracing::warn!(left, "shutdown deadline passed with sessions still open");
        }
        left
    }
}

/// One HTTP connection, counted while its task serves it (an upgraded WebSocket is counted
/// by its session from then on).
#[derive(Debug)]
struct OpenSocket {
    sockets: Arc<std::sync::atomic::AtomicUsize>,
    /// Sockets open with this one.
    open: usize,
}

impl OpenSocket {
    fn count(sockets: &Arc<std::sync::atomic::AtomicUsize>) -> OpenSocket {
        let open = sockets.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        OpenSocket { sockets: Arc::clone(sockets), open }
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.sockets.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Answers a socket accepted past the open-files limit with a 503 (a fresh socket's send
/// buffer takes it whole; no waiting) without reading its request; the caller then closes
/// it. A client told why and when to come back, and a descriptor freed at once, rather than
/// `accept` failing with EMFILE for everyone.
fn refuse_socket(tcp: &tokio::net::TcpStream) {
    const ANSWER: &str = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
        Content-Type: text/plain; charset=utf-8\r\nContent-Length: 78\r\nConnection: close\r\n\r\n\
        this node is out of sockets (its open-files limit): try another node or later\n";
    let _ = tcp.try_write(ANSWER.as_bytes());
}

/// Failed `accept`s: out of file descriptors (EMFILE) would fail again at once, so the loop
/// pauses instead of spinning, and says so in the log at most every 10 s.
#[derive(Default)]
struct AcceptErrors {
    logged: Option<std::time::Instant>,
    since_log: u64,
}

impl AcceptErrors {
    fn pause_after(&mut self, error: std::io::Error) -> Option<std::time::Duration> {
        self.since_log += 1;
        if self.logged.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(10)) {
            tracing::warn!(
                %error, failures = self.since_log,
                "cannot accept connections (out of file descriptors?): pausing 100 ms each time"
            );
            self.logged = Some(std::time::Instant::now());
            self.since_log = 0;
        }
        Some(std::time::Duration::from_millis(100))
    }
}

/// Runs `connection` and drops it (closing the socket) if its first request head is not in
/// within `timeout`, TLS handshake included: a client that connects and then sends nothing,
/// or trickles its headers, holds a socket and a task for that long only. (Before the first
/// request the server's protocol detection reads with no deadline of its own.)
async fn within_deadline(
    connection: impl Future<Output = ()>,
    first_request: &tokio::sync::Notify,
    timeout: std::time::Duration,
    peer: SocketAddr,
) {
    tokio::pin!(connection);
    tokio::select! {
        () = &mut connection => return,
        () = first_request.notified() => {}
        () = tokio::time::sleep(timeout) => {
            tracing::debug!(%peer, ?timeout, "no complete request head in time: connection closed");
            return;
        }
    }
    connection.await;
}

async fn serve_connection<I, S>(io: I, app: S)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let service = TowerToHyperService::new(app);
    // No hyper header timer: `within_deadline` bounds the first request head, and hyper's
    // timer (with `header_read_timeout`) cost ~3.6 KB of RSS per WebSocket connection.
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(io), service).await {
        tracing::trace!(error = %e, "HTTP connection ended with an error");
    }
}

/// Runs `peregrine serve` with `config` until SIGTERM or SIGINT: logging, runtime, server.
pub fn run(config: Config) -> Result<(), ServeError> {
    init_logging(&config);
    let mut runtime = if config.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if config.workers > 1 {
        runtime.worker_threads(config.workers);
    }
    let runtime = runtime.enable_all().build().map_err(ServeError::Runtime)?;
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        let scheme = if server.tls.is_some() { "https" } else { "http" };
        let ws = if server.tls.is_some() { "wss" } else { "ws" };
        let addr = server.local_addr();
        tracing::info!(
            "listening on {scheme}://{addr} (WebSocket: {ws}://{addr}{}, API: {scheme}://{addr}/api, \
             metrics: {scheme}://{addr}/metrics)",
            super::router::WEBSOCKET_PATH
        );
        server.run_until(shutdown_signal()).await;
        Ok(())
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// File descriptors kept for what is not a client connection: the listener, Redis,
/// logs, and the sockets a refused handshake still needs to say 503.
const FD_RESERVE: usize = 256;

/// Raises the open-files soft limit to the hard limit (a server wants every descriptor
/// it may have) and returns how many client connections that leaves room for.
fn raise_open_files_limit() -> Option<usize> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        // Refused (a hard limit we may not reach): the soft limit read below stays.
        let _ = setrlimit(Resource::Nofile, limit);
    }
    let current = usize::try_from(getrlimit(Resource::Nofile).current?).ok()?;
    Some(current.saturating_sub(FD_RESERVE).max(1))
}

/// Names the `tls.*` key whose file is wrong, and why.
fn tls_files_error(error: &peregrine::Error, cert: &std::path::Path, key: &std::path::Path) -> String {
    let (cert, key) = (format!("`tls.cert` {}", cert.display()), format!("`tls.key` {}", key.display()));
    peregrine::tls::pem_pair_problem(error, &cert, &key)
        .unwrap_or_else(|| format!("cannot use {cert} with {key}: {error}"))
}
