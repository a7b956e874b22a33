//! Opening the connection step by step (resolve, TCP, TLS, HTTP upgrade), so
//! that a failure can say which step failed.
//!
//! The library's `ClientBuilder::connect` does all of it in one call; here we
//! connect TCP and TLS ourselves and run the handshake over a [`Tap`] with
//! `ClientBuilder::connect_on`, which lets `--show-frames` see the bytes and
//! keeps the raw response of a refused handshake.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use peregrine::proto::handshake::Response;
use peregrine::tls::TlsConnector;
use peregrine::{ClientBuilder, MaybeTlsStream, WebSocket};
use tokio::net::TcpStream;

use super::console::Console;
use super::tap::Tap;

/// The transport under the WebSocket.
pub type Stream = Tap<MaybeTlsStream<TcpStream>>;

/// Where to connect, from the URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// `wss://`.
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port, explicit or the scheme's default.
    pub port: u16,
    /// Path and query.
    pub resource: String,
}

impl Target {
    /// Parses a `ws://` or `wss://` URL.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("invalid URL {url:?}: {e}"))?;
        let tls = match parsed.scheme() {
            "ws" => false,
            "wss" => true,
            "http" | "https" => {
                let suggestion = url.replacen("http", "ws", 1);
                anyhow::bail!(
                    "{url} is an HTTP URL; WebSocket URLs start with ws:// or wss:// (try {suggestion})"
                )
            }
            other => anyhow::bail!("{url}: scheme {other}:// is not ws:// or wss://"),
        };
        let host = match parsed.host() {
            Some(url::Host::Ipv6(addr)) => addr.to_string(),
            Some(host) => host.to_string(),
            None => anyhow::bail!("{url}: no host"),
        };
        let port = parsed.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
        let mut resource = parsed.path().to_owned();
        if let Some(query) = parsed.query() {
            resource.push('?');
            resource.push_str(query);
        }
        Ok(Self { url: url.to_owned(), tls, host, port, resource })
    }

    /// `host:port`, with brackets around IPv6 addresses.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The same URL with the other scheme (`ws://` ↔ `wss://`).
    pub fn other_scheme(&self) -> String {
        match self.url.split_once("://") {
            Some((_, rest)) => format!("{}://{rest}", if self.tls { "ws" } else { "wss" }),
            None => self.url.clone(),
        }
    }
}

/// The steps of opening a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Looking up the host name.
    Resolve,
    /// Connecting TCP.
    Tcp,
    /// The TLS handshake (`wss://`).
    Tls,
    /// The HTTP upgrade.
    Handshake,
}

/// What went wrong.
#[derive(Debug)]
pub enum Failed {
    /// Resolving or connecting TCP failed.
    Io(io::Error),
    /// TLS or the WebSocket handshake failed.
    Ws(peregrine::Error),
    /// The whole attempt took longer than `--connect-timeout`.
    Timeout(Duration),
}

/// A failed attempt: the step, the error, and the bytes the server sent.
#[derive(Debug)]
pub struct Failure {
    /// The step that failed.
    pub stage: Stage,
    /// The error.
    pub error: Failed,
    /// The address TCP connected to, if it got that far.
    pub peer: Option<SocketAddr>,
    /// The first bytes received during the HTTP upgrade.
    pub received: Vec<u8>,
}

/// How to connect.
#[derive(Debug)]
pub struct Options {
    /// The handshake request's settings.
    pub builder: ClientBuilder,
    /// TLS settings for `wss://`.
    pub tls: Option<TlsConnector>,
    /// The limit for all the steps together.
    pub timeout: Duration,
    /// Where `--show-frames` prints, when on.
    pub show_frames: Option<Arc<Console>>,
}

/// Connects and performs the handshake.
pub async fn open(
    target: &Target,
    options: Options,
) -> Result<(WebSocket<Stream>, Response, SocketAddr), Failure> {
    let stage = Cell::new(Stage::Resolve);
    let peer = Cell::new(None);
    let capture = std::cell::RefCell::new(None);
    let steps = async {
        let addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((target.host.as_str(), target.port)).await.map_err(Failed::Io)?.collect();
        stage.set(Stage::Tcp);
        let tcp = connect_any(&addrs).await.map_err(Failed::Io)?;
        // Frames are written whole; Nagle would only delay small ones.
        let _ = tcp.set_nodelay(true);
        let addr = tcp.peer_addr().map_err(Failed::Io)?;
        peer.set(Some(addr));
        let stream = match &options.tls {
            Some(connector) if target.tls => {
                stage.set(Stage::Tls);
                let tls = connector.connect(&target.host, tcp).await.map_err(Failed::Ws)?;
                MaybeTlsStream::Tls(Box::new(tls))
            }
            _ => MaybeTlsStream::Plain(tcp),
        };
        stage.set(Stage::Handshake);
        let tap = Tap::new(stream, options.show_frames.clone());
        *capture.borrow_mut() = Some(tap.capture());
        let (ws, response) = options.builder.connect_on(tap).await.map_err(Failed::Ws)?;
        Ok((ws, response, addr))
    };
    let result = match tokio::time::timeout(options.timeout, steps).await {
        // The library's own handshake timeout is the same limit.
        Ok(Err(Failed::Ws(peregrine::Error::Timeout(_)))) | Err(_) => Err(Failed::Timeout(options.timeout)),
        Ok(result) => result,
    };
    let captured = capture.borrow_mut().take();
    match result {
        Ok((ws, response, addr)) => {
            if let Some(capture) = captured {
                capture.stop();
            }
            Ok((ws, response, addr))
        }
        Err(error) => Err(Failure {
            stage: stage.get(),
            error,
            peer: peer.get(),
            received: captured.map(|c| c.bytes()).unwrap_or_default(),
        }),
    }
}

/// Tries each address in turn; the last error is returned.
async fn connect_any(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name resolved to no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("ws://example.com/chat?room=1").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.resource.as_str()),
            (false, "example.com", 80, "/chat?room=1")
        );
        assert_eq!(t.other_scheme(), "wss://example.com/chat?room=1");
        let t = Target::parse("wss://[::1]:8443").unwrap();
        assert_eq!((t.tls, t.authority().as_str()), (true, "[::1]:8443"));
        let err = Target::parse("https://example.com/ws").unwrap_err().to_string();
        assert!(err.contains("try wss://example.com/ws"), "{err}");
    }
}
