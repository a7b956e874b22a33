//! The server under test: its address, the pre-built opening handshake, and
//! connecting (optionally from a chosen loopback source address).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A fixed `Sec-WebSocket-Key`: every request is the same bytes, built once.
/// The key only proves the server speaks WebSocket; it protects nothing.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The `Sec-WebSocket-Accept` that [`KEY`] calls for (RFC 6455 §1.3).
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// Longest response head we read before giving up.
const MAX_HEAD: usize = 16 << 10;

/// Where to connect and what to send.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) addr: SocketAddr,
    /// The whole opening-handshake request.
    pub(crate) request: Vec<u8>,
    /// Limit for the connect and the opening handshake together.
    connect_timeout: Duration,
}

impl Target {
    /// Parses a `ws://` URL and resolves its host. `wss://` is refused: TLS
    /// would measure the TLS stack, not the WebSocket server.
    pub(crate) async fn resolve(url: &str, connect_timeout: Duration) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).with_context(|| format!("not a URL: {url}"))?;
        match parsed.scheme() {
            "ws" => {}
            "wss" => bail!("bench measures plain ws:// servers; wss:// is not supported"),
            other => bail!("expected a ws:// URL, got {other}://"),
        }
        let host = parsed.host_str().context("the URL has no host")?;
        let port = parsed.port().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .collect();
        addrs.sort_by_key(|a| !a.is_ipv4());
        let addr = *addrs.first().with_context(|| format!("{host} has no address"))?;
        let mut resource = parsed.path().to_owned();
        if let Some(query) = parsed.query() {
            resource.push('?');
            resource.push_str(query);
        }
        let host_header = if port == 80 { host.to_owned() } else { format!("{host}:{port}") };
        let request = format!(
            "GET {resource} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes();
        Ok(Self { url: url.to_owned(), addr, request, connect_timeout })
    }

    /// Whether source addresses 127.0.0.2, 127.0.0.3... can be used to reach
    /// the server (it listens on IPv4 loopback).
    pub(crate) fn is_ipv4_loopback(&self) -> bool {
        matches!(self.addr.ip(), IpAddr::V4(ip) if ip.is_loopback())
    }

    /// Source addresses to spread connections over: `requested` (else
    /// `default`) loopback addresses for a server on 127.0.0.0/8, none (the
    /// system's choice) otherwise. The error is a warning for `--source-addrs`
    /// given against any other server.
    pub(crate) fn sources(&self, requested: Option<usize>, default: usize) -> (Vec<IpAddr>, Option<String>) {
        if self.is_ipv4_loopback() {
            return (loopback_sources(requested.unwrap_or(default)), None);
        }
        let warning = requested.map(|_| {
            "--source-addrs needs a server on 127.0.0.0/8; connecting from the default address".to_owned()
        });
        (Vec::new(), warning)
    }

    /// Opens a TCP connection with `TCP_NODELAY`, from `source` if given.
    pub(crate) async fn connect(&self, source: Option<IpAddr>) -> io::Result<TcpStream> {
        let stream = connect_from(self.addr, source).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Connects and completes the opening handshake, within the connect
    /// timeout. Returns the stream and any bytes that followed the response
    /// head. With `check` false, any response head is taken (see
    /// `--any-response`).
    pub(crate) async fn open(
        &self,
        source: Option<IpAddr>,
        check: bool,
    ) -> anyhow::Result<(TcpStream, Vec<u8>)> {
        let opening = async {
            let mut stream =
                self.connect(source).await.with_context(|| format!("connecting to {}", self.addr))?;
            let leftover = self.handshake(&mut stream, check).await?;
            Ok((stream, leftover))
        };
        match tokio::time::timeout(self.connect_timeout, opening).await {
            Ok(opened) => opened,
            Err(_) => bail!(
                "no complete handshake response from {} within {}s (--connect-timeout)",
                self.addr,
                self.connect_timeout.as_secs_f64()
            ),
        }
    }

    /// Sends the request and reads the response head. With `check`, the
    /// response must be a 101 with the right `Sec-WebSocket-Accept`; without,
    /// any head ending in an empty line counts (for a plain TCP echo).
    pub(crate) async fn handshake(&self, stream: &mut TcpStream, check: bool) -> anyhow::Result<Vec<u8>> {
        stream.write_all(&self.request).await.context("sending the opening handshake")?;
        let mut buf = Vec::with_capacity(1024);
        let end = loop {
            if buf.len() >= MAX_HEAD {
                bail!("the response head is over {MAX_HEAD} bytes");
            }
            let searched_from = buf.len().saturating_sub(3);
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.context("reading the handshake response")?;
            if n == 0 {
                bail!("the server closed the connection during the handshake");
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = find_head_end(&buf[searched_from..]) {
                break searched_from + at;
            }
        };
        if check {
            check_response(&buf[..end])?;
        }
        Ok(buf.split_off(end))
    }
}

/// The index just past the `\r\n\r\n` that ends a head.
pub(crate) fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
}

fn check_response(head: &[u8]) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(head);
    let status = text.lines().next().unwrap_or_default();
    if status.starts_with("GET ") {
        bail!(
            "the server sent the request back: a plain TCP echo? (--any-response takes that as the answer)"
        );
    }
    if !(status.starts_with("HTTP/1.1 101") || status.starts_with("HTTP/1.0 101")) {
        bail!("the server answered `{status}` instead of 101 Switching Protocols");
    }
    if !text.contains(ACCEPT) {
        bail!("the 101 response lacks the expected Sec-WebSocket-Accept");
    }
    Ok(())
}

/// Opens a TCP connection to `addr`, from the local address `source` if given
/// (the port is chosen by `connect`, see [`defer_port_choice`]).
pub(crate) async fn connect_from(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    defer_port_choice(&socket);
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

/// Leaves the choice of the source port to `connect` (`IP_BIND_ADDRESS_NO_PORT`).
/// A port chosen at `bind` must be free on every address, so once a run's
/// closed connections fill the range with TIME_WAIT, every bind searches it;
/// at `connect` the kernel needs only the 4-tuple to be unused, and reuses
/// TIME_WAIT ports towards loopback (`tcp_tw_reuse`). Best effort: without it
/// binding still works, only slower.
fn defer_port_choice(socket: &TcpSocket) {
    #[cfg(target_os = "linux")]
    let _ = nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::IpBindAddressNoPort, &true);
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Source addresses for `count` connections: 127.0.0.1, 127.0.0.2, ... Each
/// local address has its own ephemeral port range (about 28k ports with the
/// default `ip_local_port_range`), so `k` addresses hold `k` times as many
/// connections to one server port.
pub(crate) fn loopback_sources(count: usize) -> Vec<IpAddr> {
    (0..count.clamp(1, 254)).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i as u8))).collect()
}
