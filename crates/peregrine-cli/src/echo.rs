//! `peregrine echo`: an echo server for tests, demos and benchmarks.
//!
//! Shaped like mini-redis's server: the accept loop spawns one task per
//! connection, an optional semaphore caps how many run at once, and on Ctrl-C
//! (or SIGTERM) the loop stops accepting, tells every connection to close with
//! 1001 (going away), and waits for them: each task holds a clone of an mpsc
//! sender, so the channel closing means all of them are done.
//!
//! The echo loop is the fast one from the library's examples: replies to all
//! messages already received are queued with `feed` and leave in one write.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use peregrine::proto::extension::DeflateConfig;
use peregrine::tls::TlsAcceptor;
use peregrine::{CloseCode, Config, Limits, Message, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// How long shutdown waits for connections to finish their close handshake.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Connections at once that keep a compression context between messages
/// (about 420 KiB each); later ones negotiate no context takeover and share
/// per-thread contexts, so compression never costs more than about 100 MiB.
const DEFLATE_TAKEOVER_CONNECTIONS: usize = 256;

/// Arguments of `peregrine echo`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Every text and binary message is sent back as it came. permessage-deflate is accepted when a
client offers it (--no-deflate refuses it). The listening URL is printed on stderr; Ctrl-C (or
SIGTERM) stops accepting, closes open connections with 1001 and exits.

Examples:
  peregrine echo
  peregrine echo --listen 0.0.0.0:0 --single-thread
  peregrine echo --deflate-level 1
  peregrine echo --listen 127.0.0.1:8443 --tls-cert cert.pem --tls-key key.pem")]
pub struct EchoArgs {
    /// The address to listen on (port 0 picks a free port).
    #[arg(short, long, value_name = "ADDR", default_value = "127.0.0.1:9001")]
    listen: String,

    /// Runs everything on one thread (a current-thread runtime).
    #[arg(long)]
    single_thread: bool,

    /// Serves wss:// with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// The largest message (and frame) accepted, in bytes; larger ones close
    /// the connection with 1009.
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<usize>,

    /// Accepts this subprotocol when a client offers it (repeatable, in
    /// preference order).
    #[arg(short = 'p', long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,

    /// Serves at most this many connections at once; more wait to be accepted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,

    /// Refuses permessage-deflate (accepted by default when a client offers
    /// it; with context takeover for up to 256 connections at once).
    #[arg(long)]
    no_deflate: bool,

    /// The permessage-deflate compression level: 1 is fastest, 9 smallest.
    #[arg(long, value_name = "LEVEL", default_value_t = 6, conflicts_with = "no_deflate",
          value_parser = clap::value_parser!(u32).range(1..=9))]
    deflate_level: u32,

    /// Turns off keepalive pings to idle clients.
    #[arg(long)]
    no_keepalive: bool,

    /// Logs every connection and how it ended on stderr.
    #[arg(short, long)]
    verbose: bool,
}

/// Says which of `--tls-cert` and `--tls-key` is wrong, and how.
fn tls_files_error(error: &peregrine::Error, cert: &Path, key: &Path) -> anyhow::Error {
    let (cert, key) = (format!("--tls-cert {}", cert.display()), format!("--tls-key {}", key.display()));
    let text = peregrine::tls::pem_pair_problem(error, &cert, &key)
        .unwrap_or_else(|| format!("{cert} and {key} cannot be used: {error}"));
    anyhow::anyhow!(text)
}

/// Says why `--listen ADDR` failed, and what to do.
fn listen_error(error: &std::io::Error, addr: &str) -> anyhow::Error {
    let hint = match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another process listens there: stop it, or pick another port (port 0 picks a free one)"
        }
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: pick a port above 1023"
        }
        std::io::ErrorKind::AddrNotAvailable => "no interface of this machine has that address",
        _ if !addr.contains(':') => "--listen takes HOST:PORT, e.g. 127.0.0.1:9001 (port 0 picks a free one)",
        _ => "--listen takes HOST:PORT, e.g. 127.0.0.1:9001 or [::1]:9001",
    };
    anyhow::anyhow!("cannot listen on {addr} (--listen): {error}; {hint}")
}

/// Runs `peregrine echo`.
pub fn run(args: EchoArgs) -> anyhow::Result<()> {
    raise_open_files_limit();
    let runtime = if args.single_thread {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()?
    };
    let result = runtime.block_on(serve(args));
    // Connections still closing after the grace period are dropped.
    runtime.shutdown_background();
    result
}

/// What every connection task shares.
struct Server {
    config: Config,
    tls: Option<TlsAcceptor>,
    protocols: Vec<String>,
    verbose: bool,
    /// How to tell each open connection to close, by id.
    open: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

async fn serve(args: EchoArgs) -> anyhow::Result<()> {
    let deflate = (!args.no_deflate).then(|| {
        DeflateConfig::default()
            .level(args.deflate_level)
            .max_takeover_connections(DEFLATE_TAKEOVER_CONNECTIONS)
    });
    let mut config = Config::default().deflate(deflate);
    if args.no_keepalive {
        config = config.ping_interval(None);
    }
    if let Some(max) = args.max_message_size {
        config = config.limits(Limits::default().max_message_size(max).max_frame_size(max));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let cert_pem =
                std::fs::read(cert).with_context(|| format!("reading --tls-cert {}", cert.display()))?;
            let key_pem =
                std::fs::read(key).with_context(|| format!("reading --tls-key {}", key.display()))?;
            Some(TlsAcceptor::from_pem(&cert_pem, &key_pem).map_err(|e| tls_files_error(&e, cert, key))?)
        }
        _ => None,
    };
    let mut shutdown = Shutdown::install();
    let listener = TcpListener::bind(&args.listen).await.map_err(|e| listen_error(&e, &args.listen))?;
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    eprintln!("peregrine echo listening on {scheme}://{}", listener.local_addr()?);

    let server = Arc::new(Server {
        config,
        tls,
        protocols: args.protocols,
        verbose: args.verbose,
        open: Mutex::new(HashMap::new()),
    });
    let limit = args.max_connections.map(|n| Arc::new(Semaphore::new(n as usize)));
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut next_id = 0u64;
    loop {
        let permit = match &limit {
            Some(limit) => tokio::select! {
                permit = limit.clone().acquire_owned() => Some(permit?),
                () = shutdown.recv() => break,
            },
            None => None,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // accept: wait a little rather than spin.
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.recv() => break,
        };
        next_id += 1;
        let id = next_id;
        let (stop_tx, stop_rx) = oneshot::channel();
        server.lock_open().insert(id, stop_tx);
        let server = server.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            server.handle(tcp, peer, stop_rx).await;
            server.lock_open().remove(&id);
            drop(permit);
            drop(done);
        });
    }
    drop(listener);
    let open: Vec<oneshot::Sender<()>> = server.lock_open().drain().map(|(_, stop)| stop).collect();
    eprintln!("shutting down: closing {} open connection(s)", open.len());
    for stop in open {
        let _ = stop.send(());
    }
    drop(done_tx);
    tokio::select! {
        _ = done_rx.recv() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => eprintln!("some connections did not close in time"),
        () = shutdown.recv() => {}
    }
    Ok(())
}

impl Server {
    fn lock_open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<()>>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn handle(&self, tcp: TcpStream, peer: SocketAddr, stop: oneshot::Receiver<()>) {
        let _ = tcp.set_nodelay(true);
        let result = match &self.tls {
            Some(acceptor) => {
                match tokio::time::timeout(self.config.get_handshake_timeout(), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => self.serve(tls, peer, stop).await,
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(peregrine::Error::Timeout(peregrine::TimeoutKind::Handshake)),
                }
            }
            None => self.serve(tcp, peer, stop).await,
        };
        if self.verbose {
            match result {
                Ok(Some(code)) => eprintln!("{peer}: closed: {code}"),
                Ok(None) => eprintln!("{peer}: closed"),
                Err(e) => eprintln!("{peer}: {e}"),
            }
        }
    }

    /// The handshake, then the echo loop; returns the peer's close code.
    async fn serve<S>(
        &self,
        io: S,
        peer: SocketAddr,
        stop: oneshot::Receiver<()>,
    ) -> peregrine::Result<Option<CloseCode>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut chosen = None;
        let ws = peregrine::accept_with(io, &self.config, |request| {
            chosen = request.choose_protocol(&self.protocols).map(str::to_owned);
            Ok(match &chosen {
                Some(protocol) => request.accept().with_protocol(protocol.clone()),
                None => request.accept(),
            })
        })
        .await?;
        if self.verbose {
            let protocol = chosen.map(|p| format!(", subprotocol {p}")).unwrap_or_default();
            let deflate = if ws.is_compressed() { ", permessage-deflate" } else { "" };
            eprintln!("{peer}: connected{protocol}{deflate}");
        }
        echo(ws, stop).await
    }
}

/// Echoes every data message until the connection ends or `stop` fires.
/// Replies to all the messages already received are queued first and leave
/// in one write. Errors do not end the loop at once: the connection is still
/// finishing (its close frame is being written) and ends with `None`; the
/// first error is returned then.
async fn echo<S>(
    mut ws: WebSocket<S>,
    mut stop: oneshot::Receiver<()>,
) -> peregrine::Result<Option<CloseCode>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut outcome = Ok(());
    let mut close_code = None;
    loop {
        let first = tokio::select! {
            biased;
            message = ws.recv() => match message {
                Some(message) => message,
                None => break,
            },
            _ = &mut stop => {
                ws.close(CloseCode::GOING_AWAY, "server shutting down").await?;
                return Ok(Some(CloseCode::GOING_AWAY));
            }
        };
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => ws.feed(message).await?,
                Ok(Message::Close(frame)) => {
                    close_code = Some(frame.map_or(CloseCode::NO_STATUS, |f| f.code));
                }
                Ok(_) => {}
                Err(e) => {
                    if outcome.is_ok() {
                        outcome = Err(e);
                    }
                }
            }
            next = ws.try_recv();
        }
        ws.flush().await?;
    }
    outcome.map(|()| close_code)
}

/// Ctrl-C, or SIGTERM on Unix. The handlers are installed when this is
/// created, so a signal that comes before the first wait is not lost (and
/// does not kill the process).
struct Shutdown {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Shutdown {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals =
                signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
            Self { signals: signals.ok() }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((interrupt, terminate)) = &mut self.signals {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Many idle connections need many file descriptors: raise the soft limit to
/// the hard one.
fn raise_open_files_limit() {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
            && soft < hard
        {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
