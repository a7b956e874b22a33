//! Client side: write the opening handshake (RFC 6455 §4.1) and validate the
//! server's answer.

use bytes::{BufMut, BytesMut};

use super::error::HandshakeError;
use super::extension_header::{ExtensionOffer, check_extensions, encode_extensions, parse_extensions};
use super::http::{self, HeaderLimits, Headers, ParseError, check_header, check_value};

/// Headers [`ClientRequest`] writes itself.
const RESERVED: &[&str] = &[
    "Host",
    "Upgrade",
    "Connection",
    "Origin",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
    "Content-Length",
    "Transfer-Encoding",
];

/// A client's opening handshake: builds the request, then validates the
/// response against what it offered (key, subprotocols, extensions).
///
/// Keep it until the response has been parsed.
///
/// ```
/// use peregrine_proto::handshake::ClientRequest;
///
/// let request = ClientRequest::new("example.com", "/chat?room=1")
///     .with_port(8443)
///     .with_tls(true)
///     .with_key("dGhlIHNhbXBsZSBub25jZQ==")
///     .with_origin("https://example.com");
/// let text = String::from_utf8(request.to_vec()?).unwrap();
/// assert!(text.starts_with("GET /chat?room=1 HTTP/1.1\r\nHost: example.com:8443\r\n"));
/// assert!(text.contains("\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
/// # Ok::<(), peregrine_proto::handshake::HandshakeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    host: String,
    port: Option<u16>,
    tls: bool,
    resource: String,
    key: String,
    origin: Option<String>,
    protocols: Vec<String>,
    extensions: Vec<ExtensionOffer>,
    headers: Vec<(String, String)>,
}

impl ClientRequest {
    /// A request for `resource` (path and query, e.g. `/chat?room=1`; empty
    /// means `/`) on `host`, with a fresh random key.
    ///
    /// `host` is a name or IP address; an IPv6 address is bracketed in the
    /// `Host` header by itself.
    pub fn new(host: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: None,
            tls: false,
            resource: resource.into(),
            key: super::generate_key(),
            origin: None,
            protocols: Vec::new(),
            extensions: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// The server port. It appears in `Host` only when it differs from the
    /// default of the scheme (80 for `ws`, 443 for `wss`), as RFC 6455 §4.1
    /// asks.
    #[must_use]
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Whether the connection uses TLS (`wss`); only decides the default port.
    #[must_use]
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Uses `key` instead of the random one. For tests and reproducible
    /// traces only: a real client should keep the random key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// Sends `Origin` (browsers always do; servers may check it).
    #[must_use]
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Offers a subprotocol; call again for more, most preferred first.
    #[must_use]
    pub fn with_protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Offers an extension; call again for more, most preferred first.
    #[must_use]
    pub fn with_extension(mut self, extension: ExtensionOffer) -> Self {
        self.extensions.push(extension);
        self
    }

    /// Adds a header of the caller's (e.g. `Authorization`), checked on encode.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The `Sec-WebSocket-Key` this request sends.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The subprotocols offered, in order.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The extensions offered, in order.
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// The `Host` header value: brackets around an IPv6 address, and the
    /// port unless it is the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        match self.port {
            Some(port) if port != default => format!("{host}:{port}"),
            _ => host,
        }
    }

    /// Appends the request to `dst`. On error nothing is written.
    ///
    /// Fails if the resource is not an origin-form target, the host is empty
    /// or has characters that do not belong in an authority, a subprotocol
    /// is not a token (or is repeated), an extension does not round-trip
    /// through the header grammar, the key is not base64 of 16 bytes, or a
    /// caller-supplied header has a bad name, a value with CR/LF or other
    /// control characters, or a name this request writes itself.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), HandshakeError> {
        let resource = if self.resource.is_empty() { "/" } else { &self.resource };
        // Origin-form only: one visible-ASCII word starting with '/', so it
        // can neither split the request line nor smuggle a header.
        if !resource.starts_with('/') || !resource.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HandshakeError::InvalidResource(self.resource.clone()));
        }
        let host = self.host_header();
        if self.host.is_empty() || host.bytes().any(|b| !b.is_ascii_graphic() || b"/?#@\\".contains(&b)) {
            return Err(invalid_value("Host"));
        }
        if !super::is_valid_key(self.key.as_bytes()) {
            return Err(invalid_value("Sec-WebSocket-Key"));
        }
        if let Some(origin) = &self.origin {
            check_value("Origin", origin)?;
        }
        for (i, protocol) in self.protocols.iter().enumerate() {
            let repeated = self.protocols.get(..i).is_some_and(|seen| seen.contains(protocol));
            if repeated || !http::is_token(protocol.as_bytes()) {
                return Err(invalid_value("Sec-WebSocket-Protocol"));
            }
        }
        let extensions = encode_extensions(&self.extensions)?;
        for (name, value) in &self.headers {
            check_header(name, value, RESERVED)?;
        }

        dst.put_slice(b"GET ");
        dst.put_slice(resource.as_bytes());
        dst.put_slice(b" HTTP/1.1\r\n");
        http::put_header(dst, "Host", &host);
        http::put_header(dst, "Upgrade", "websocket");
        http::put_header(dst, "Connection", "Upgrade");
        http::put_header(dst, "Sec-WebSocket-Key", &self.key);
        http::put_header(dst, "Sec-WebSocket-Version", super::WEBSOCKET_VERSION);
        if let Some(origin) = &self.origin {
            http::put_header(dst, "Origin", origin);
        }
        if !self.protocols.is_empty() {
            http::put_header(dst, "Sec-WebSocket-Protocol", &self.protocols.join(", "));
        }
        if let Some(extensions) = &extensions {
            http::put_header(dst, "Sec-WebSocket-Extensions", extensions);
        }
        for (name, value) in &self.headers {
            http::put_header(dst, name, value);
        }
        dst.put_slice(b"\r\n");
        Ok(())
    }

    /// The request as a new buffer.
    pub fn to_vec(&self) -> Result<Vec<u8>, HandshakeError> {
        let mut dst = BytesMut::new();
        self.encode(&mut dst)?;
        Ok(dst.to_vec())
    }

    /// Parses and validates the server's response with the default
    /// [`HeaderLimits`].
    ///
    /// `Ok(None)`: incomplete, read more and call again with the whole
    /// buffer. `Ok(Some(response))`: a valid 101 whose header block took
    /// [`Response::consumed`] bytes; what follows are the server's first
    /// frames. Errors: any status but 101 is
    /// [`HandshakeError::UnexpectedStatus`] (with the headers, for
    /// diagnostics); then `Upgrade`, `Connection`, `Sec-WebSocket-Accept`,
    /// `Sec-WebSocket-Protocol` (one value, one we offered) and
    /// `Sec-WebSocket-Extensions` (well-formed, only names we offered) are
    /// checked, as RFC 6455 §4.1 requires.
    pub fn parse_response(&self, buf: &[u8]) -> Result<Option<Response>, HandshakeError> {
        self.parse_response_with(buf, &HeaderLimits::default())
    }

    /// [`parse_response`](Self::parse_response) with explicit limits.
    pub fn parse_response_with(
        &self,
        buf: &[u8],
        limits: &HeaderLimits,
    ) -> Result<Option<Response>, HandshakeError> {
        let raw = match http::parse_response(buf, limits) {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(None),
            Err(ParseError::TooLarge) => {
                return Err(HandshakeError::ResponseTooLarge { limit: limits.max_header_size });
            }
            Err(ParseError::TooManyHeaders) => {
                return Err(HandshakeError::ResponseTooManyHeaders { limit: limits.max_headers });
            }
            Err(ParseError::Malformed(problem)) => {
                return Err(HandshakeError::MalformedResponse(problem));
            }
        };
        if raw.status != 101 {
            return Err(HandshakeError::UnexpectedStatus {
                status: raw.status,
                reason: raw.reason,
                headers: raw.headers,
                header_len: raw.len,
            });
        }
        let headers = raw.headers;
        if !headers.has_token("Upgrade", "websocket") {
            return Err(HandshakeError::ResponseMissingUpgrade);
        }
        if !headers.has_token("Connection", "upgrade") {
            return Err(HandshakeError::ResponseMissingConnectionUpgrade);
        }
        self.check_accept(&headers)?;
        let protocol = self.check_protocol(&headers)?;
        let extensions = parse_extensions(headers.get_all("Sec-WebSocket-Extensions"))
            .map_err(HandshakeError::ResponseMalformedExtensions)?;
        let offered: Vec<&str> = self.extensions.iter().map(|e| e.name.as_str()).collect();
        check_extensions(&extensions, &offered)?;
        Ok(Some(Response {
            status: raw.status,
            reason: raw.reason,
            headers,
            protocol,
            extensions,
            consumed: raw.len,
        }))
    }

    fn check_accept(&self, headers: &Headers) -> Result<(), HandshakeError> {
        let mut values = headers.get_all("Sec-WebSocket-Accept");
        let (Some(received), None) = (values.next(), values.next()) else {
            return Err(match headers.count("Sec-WebSocket-Accept") {
                0 => HandshakeError::MissingAccept,
                _ => HandshakeError::ResponseDuplicateHeader("Sec-WebSocket-Accept"),
            });
        };
        let expected = super::accept_key(self.key.as_bytes());
        let received = received.trim_ascii();
        if received != expected.as_bytes() {
            return Err(HandshakeError::AcceptMismatch {
                expected,
                received: String::from_utf8_lossy(received).into_owned(),
            });
        }
        Ok(())
    }

    fn check_protocol(&self, headers: &Headers) -> Result<Option<String>, HandshakeError> {
        let mut values = headers.get_all("Sec-WebSocket-Protocol");
        let Some(value) = values.next() else {
            return Ok(None);
        };
        let value = value.trim_ascii();
        if values.next().is_some() || value.contains(&b',') {
            return Err(HandshakeError::MultipleProtocols);
        }
        match self.protocols.iter().find(|p| p.as_bytes() == value) {
            Some(protocol) => Ok(Some(protocol.clone())),
            None => Err(HandshakeError::UnofferedProtocol(String::from_utf8_lossy(value).into_owned())),
        }
    }
}

fn invalid_value(name: &str) -> HandshakeError {
    HandshakeError::InvalidHeaderValue { name: name.to_owned() }
}

/// A validated 101 Switching Protocols response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    reason: String,
    headers: Headers,
    protocol: Option<String>,
    extensions: Vec<ExtensionOffer>,
    consumed: usize,
}

impl Response {
    /// The status code; always 101.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as sent.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// All response headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The first value of header `name` (case-insensitive), if UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The subprotocol the server chose, one of those offered.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The extensions the server accepted, with its parameters, in order.
    /// Their names were offered; their parameters are for the extension to
    /// check.
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// Fails if the server accepted an extension not named in `offered`;
    /// see [`check_extensions`]. [`ClientRequest::parse_response`] already
    /// does this against the request's own offers.
    pub fn check_extensions<S: AsRef<str>>(&self, offered: &[S]) -> Result<(), HandshakeError> {
        check_extensions(&self.extensions, offered)
    }

    /// Bytes the header block took; the caller's buffer continues after it.
    pub fn consumed(&self) -> usize {
        self.consumed
    }
}
