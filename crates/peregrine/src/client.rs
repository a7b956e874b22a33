//! Connecting to WebSocket servers: `ws://` and `wss://` URLs, or the client
//! handshake over a transport you already have.

use bytes::BytesMut;
use peregrine_proto::Role;
use peregrine_proto::handshake::{ClientRequest, HeaderLimits, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::error::{Error, Result, TimeoutKind};
use crate::handshake_io::read_head;
use crate::socket::WebSocket;
use crate::stream::MaybeTlsStream;

/// Connects to a `ws://` or `wss://` URL with default settings.
///
/// ```no_run
/// # async fn run() -> peregrine::Result<()> {
/// let (mut ws, _response) = peregrine::connect("ws://127.0.0.1:9001/chat").await?;
/// ws.send(peregrine::Message::text("hello")).await?;
/// if let Some(reply) = ws.recv().await {
///     println!("{:?}", reply?);
/// }
/// ws.close(peregrine::CloseCode::NORMAL, "bye").await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<(WebSocket<MaybeTlsStream<TcpStream>>, Response)> {
    ClientBuilder::new(url).connect().await
}

/// Options for a client connection.
///
/// ```no_run
/// # async fn run() -> peregrine::Result<()> {
/// let (ws, response) = peregrine::ClientBuilder::new("wss://example.com/socket")
///     .protocol("chat.v2")
///     .origin("https://example.com")
///     .header("Authorization", "Bearer secret")
///     .connect()
///     .await?;
/// assert_eq!(response.protocol(), Some("chat.v2"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    url: String,
    protocols: Vec<String>,
    origin: Option<String>,
    headers: Vec<(String, String)>,
    config: Config,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConnector>,
}

impl ClientBuilder {
    /// Starts a connection to `url` (`ws://host[:port]/path?query` or `wss://…`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            protocols: Vec::new(),
            origin: None,
            headers: Vec::new(),
            config: Config::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Offers a subprotocol (call once per protocol, in preference order).
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Sends an `Origin` header.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Adds a request header (e.g. `Authorization`, `Cookie`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Connection settings.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// TLS settings for `wss://` (default: the webpki root certificates).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, connector: crate::tls::TlsConnector) -> Self {
        self.tls = Some(connector);
        self
    }

    /// Resolves the host, connects TCP (and TLS for `wss://`), and performs
    /// the opening handshake, all within the handshake timeout.
    pub async fn connect(self) -> Result<(WebSocket<MaybeTlsStream<TcpStream>>, Response)> {
        let target = Target::parse(&self.url)?;
        let timeout = self.config.handshake_timeout;
        let connecting = async {
            let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
            // Frames are written whole; Nagle would only delay small ones.
            tcp.set_nodelay(true)?;
            let stream =
                if target.tls { self.wrap_tls(tcp, &target.host).await? } else { MaybeTlsStream::Plain(tcp) };
            handshake(stream, &self.request(&target), &self.config).await
        };
        tokio::time::timeout(timeout, connecting).await.map_err(|_| Error::Timeout(TimeoutKind::Handshake))?
    }

    #[cfg(feature = "tls")]
    async fn wrap_tls(&self, tcp: TcpStream, host: &str) -> Result<MaybeTlsStream<TcpStream>> {
        let connector = match &self.tls {
            Some(connector) => connector.clone(),
            None => crate::tls::TlsConnector::webpki_roots()?,
        };
        Ok(MaybeTlsStream::Tls(Box::new(connector.connect(host, tcp).await?)))
    }

    #[cfg(not(feature = "tls"))]
    async fn wrap_tls(&self, _tcp: TcpStream, _host: &str) -> Result<MaybeTlsStream<TcpStream>> {
        Err(Error::Url("wss:// needs the \"tls\" feature of peregrine".into()))
    }

    /// The handshake request this builder sends to `target`.
    fn request(&self, target: &Target) -> ClientRequest {
        let mut request = ClientRequest::new(target.host.clone(), target.resource.clone())
            .with_port(target.port)
            .with_tls(target.tls);
        if let Some(origin) = &self.origin {
            request = request.with_origin(origin.clone());
        }
        for protocol in &self.protocols {
            request = request.with_protocol(protocol.clone());
        }
        for (name, value) in &self.headers {
            request = request.with_header(name.clone(), value.clone());
        }
        if let Some(deflate) = &self.config.deflate {
            request = request.with_extension(deflate.offer());
        }
        request
    }

    /// Performs the client handshake over a transport you connected yourself
    /// (a Unix socket, a proxy tunnel, an in-memory duplex).
    pub async fn connect_on<S>(self, io: S) -> Result<(WebSocket<S>, Response)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let target = Target::parse(&self.url)?;
        let timeout = self.config.handshake_timeout;
        tokio::time::timeout(timeout, handshake(io, &self.request(&target), &self.config))
            .await
            .map_err(|_| Error::Timeout(TimeoutKind::Handshake))?
    }
}

/// Sends `request` and validates the answer.
async fn handshake<S>(mut io: S, request: &ClientRequest, config: &Config) -> Result<(WebSocket<S>, Response)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    request.encode(&mut out)?;
    io.write_all(&out).await?;
    io.flush().await?;
    let limits = HeaderLimits::default().with_max_header_size(config.limits.header_size());
    let mut buf = BytesMut::new();
    let response =
        read_head(&mut io, &mut buf, |bytes| Ok(request.parse_response_with(bytes, &limits)?)).await?;
    let deflate = match &config.deflate {
        Some(deflate) => deflate.check_response(response.extensions())?,
        None => None,
    };
    let leftover = buf.split_off(response.consumed());
    Ok((WebSocket::from_negotiated(io, Role::Client, config, &leftover, deflate), response))
}

/// The parts of a WebSocket URL the connection needs.
#[derive(Debug)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    resource: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| Error::Url(format!("{url}: {e}")))?;
        let tls = match parsed.scheme() {
            "ws" => false,
            "wss" => true,
            other => {
                return Err(Error::Url(format!("{url}: scheme {other}:// is not ws:// or wss://")));
            }
        };
        if parsed.fragment().is_some() {
            return Err(Error::Url(format!("{url}: WebSocket URLs cannot have a #fragment")));
        }
        let host = match parsed.host() {
            Some(url::Host::Ipv6(addr)) => addr.to_string(),
            Some(host) => host.to_string(),
            None => return Err(Error::Url(format!("{url}: no host"))),
        };
        let port = parsed.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
        let mut resource = parsed.path().to_owned();
        if let Some(query) = parsed.query() {
            resource.push('?');
            resource.push_str(query);
        }
        Ok(Self { tls, host, port, resource })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("ws://example.com/chat?room=1").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.resource.as_str()),
            (false, "example.com", 80, "/chat?room=1")
        );
        let t = Target::parse("wss://[::1]:8443").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port, t.resource.as_str()), (true, "::1", 8443, "/"));
        assert!(matches!(Target::parse("http://example.com"), Err(Error::Url(_))));
        assert!(matches!(Target::parse("ws://example.com/#x"), Err(Error::Url(_))));
    }
}
