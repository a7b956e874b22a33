//! Server side: validate a client's opening handshake (RFC 6455 §4.2.1) and
//! pick a subprotocol. The answers are in `server_response.rs`.

use super::error::HandshakeError;
use super::extension_header::{ExtensionOffer, parse_extensions};
use super::http::{self, HeaderLimits, Headers, ParseError, list_elements};
use super::server_response::AcceptResponse;

/// A validated WebSocket upgrade request.
///
/// Obtained from [`Request::parse`]; every accessor returns data that has
/// already been checked against RFC 6455 §4.2.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: String,
    target: String,
    headers: Headers,
    host: String,
    origin: Option<String>,
    key: String,
    protocols: Vec<String>,
    extensions: Vec<ExtensionOffer>,
    consumed: usize,
}

impl Request {
    /// Parses and validates a request with the default [`HeaderLimits`].
    ///
    /// `Ok(None)`: the header block is incomplete, read more and call again
    /// with the whole buffer. `Ok(Some(request))`: the block took
    /// [`consumed`](Self::consumed) bytes; anything after it belongs to the
    /// WebSocket connection. `Err(e)`: answer with [`HandshakeError::rejection`]
    /// and close.
    ///
    /// Checks run in this order, so a request with several defects gets the
    /// status of the first: size and syntax (431, 400), method `GET` (405),
    /// HTTP/1.1 (505 for HTTP/1.0, which has no upgrade mechanism; a version
    /// token httparse cannot read, such as `HTTP/2.0`, is malformed: 400,
    /// since HTTP/2 bootstraps WebSockets differently, RFC 8441), `Host`
    /// (400), `Upgrade` and `Connection` (426), `Sec-WebSocket-Version: 13`
    /// (426, or 400 if repeated), `Sec-WebSocket-Key` (400), then `Origin`,
    /// `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions` syntax (400).
    /// The version comes before the key so that a client of an older draft
    /// learns which version to speak.
    ///
    /// ```
    /// use peregrine_proto::handshake::{HandshakeError, Request};
    ///
    /// let plain = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
    /// let err = Request::parse(plain).unwrap_err();
    /// assert_eq!(err, HandshakeError::NotAnUpgrade);
    /// assert_eq!(err.status(), Some(426));
    ///
    /// assert_eq!(Request::parse(b"GET / HTTP/1.1\r\nHost: exa"), Ok(None));
    /// ```
    pub fn parse(buf: &[u8]) -> Result<Option<Self>, HandshakeError> {
        Self::parse_with(buf, &HeaderLimits::default())
    }

    /// [`parse`](Self::parse) with explicit limits.
    pub fn parse_with(buf: &[u8], limits: &HeaderLimits) -> Result<Option<Self>, HandshakeError> {
        let raw = match http::parse_request(buf, limits) {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(None),
            Err(ParseError::TooLarge) => {
                return Err(HandshakeError::RequestTooLarge { limit: limits.max_header_size });
            }
            Err(ParseError::TooManyHeaders) => {
                return Err(HandshakeError::TooManyHeaders { limit: limits.max_headers });
            }
            Err(ParseError::Malformed(problem)) => {
                return Err(HandshakeError::MalformedRequest(problem));
            }
        };
        if raw.method != "GET" {
            return Err(HandshakeError::MethodNotAllowed(raw.method));
        }
        if raw.minor_version == 0 {
            return Err(HandshakeError::UnsupportedHttpVersion);
        }
        let headers = raw.headers;
        let host = validate_host(&headers)?;
        validate_upgrade(&headers)?;
        validate_version(&headers)?;
        let key = validate_key(&headers)?;
        let origin = single_utf8(&headers, "Origin")?;
        let protocols = offered_protocols(&headers)?;
        let extensions = parse_extensions(headers.get_all("Sec-WebSocket-Extensions"))
            .map_err(HandshakeError::MalformedExtensions)?;
        Ok(Some(Self {
            method: raw.method,
            target: raw.target,
            headers,
            host,
            origin,
            key,
            protocols,
            extensions,
            consumed: raw.len,
        }))
    }

    /// The request method; always `GET` once validated.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request target as sent, path and query, e.g. `/chat?room=1`.
    pub fn path(&self) -> &str {
        &self.target
    }

    /// All request headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The first value of header `name` (case-insensitive), if UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The `Host` header, trimmed.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The `Origin` header, trimmed, if sent. Browsers always send it;
    /// check it against an allow-list to stop cross-site WebSocket hijacking.
    /// A repeated or non-UTF-8 `Origin` is rejected during parsing, so `None`
    /// really means the header was absent.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The `Sec-WebSocket-Key`, trimmed (valid base64 of 16 bytes).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The `Sec-WebSocket-Accept` value answering this request.
    pub fn accept_key(&self) -> String {
        super::accept_key(self.key.as_bytes())
    }

    /// Offered subprotocols, in the client's order, from every
    /// `Sec-WebSocket-Protocol` header.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// Offered extensions, in the client's order.
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// Bytes the header block took; the caller's buffer continues after it.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// The subprotocol to answer with: see [`select_subprotocol`].
    pub fn choose_protocol<'a, S: AsRef<str>>(&self, supported: &'a [S]) -> Option<&'a str> {
        select_subprotocol(&self.protocols, supported)
    }

    /// Starts the 101 response for this request.
    pub fn accept(&self) -> AcceptResponse {
        AcceptResponse::from_key(&self.key)
    }
}

/// Picks the subprotocol to answer with: the first entry of `supported` (the
/// server's list, in its order of preference) that the client offered.
///
/// The server's preference wins over the client's order because the server
/// knows which of its versions is best; the client listed everything it can
/// speak. Names compare exactly: RFC 6455 treats them as opaque tokens.
/// `None` means no common protocol; the server then answers without
/// `Sec-WebSocket-Protocol` (or rejects, if it requires one).
///
/// ```
/// use peregrine_proto::handshake::select_subprotocol;
///
/// let offered = ["v1.chat".to_string(), "v2.chat".to_string()];
/// assert_eq!(select_subprotocol(&offered, &["v2.chat", "v1.chat"]), Some("v2.chat"));
/// assert_eq!(select_subprotocol(&offered, &["mqtt"]), None);
/// ```
pub fn select_subprotocol<'a, S: AsRef<str>>(offered: &[String], supported: &'a [S]) -> Option<&'a str> {
    supported.iter().map(AsRef::as_ref).find(|ours| offered.iter().any(|theirs| theirs == ours))
}

fn validate_host(headers: &Headers) -> Result<String, HandshakeError> {
    match single_utf8(headers, "Host")? {
        Some(host) if !host.is_empty() => Ok(host),
        _ => Err(HandshakeError::MissingHost),
    }
}

fn validate_upgrade(headers: &Headers) -> Result<(), HandshakeError> {
    let upgrade = headers.has_token("Upgrade", "websocket");
    let connection = headers.has_token("Connection", "upgrade");
    match (upgrade, connection) {
        (true, true) => Ok(()),
        // Neither: almost always a browser or curl doing a plain GET.
        (false, false) => Err(HandshakeError::NotAnUpgrade),
        (false, true) => Err(HandshakeError::MissingUpgrade),
        (true, false) => Err(HandshakeError::MissingConnectionUpgrade),
    }
}

fn validate_version(headers: &Headers) -> Result<(), HandshakeError> {
    match single(headers, "Sec-WebSocket-Version")? {
        None => Err(HandshakeError::MissingVersion),
        Some(b"13") => Ok(()),
        Some(other) => Err(HandshakeError::UnsupportedVersion(String::from_utf8_lossy(other).into_owned())),
    }
}

fn validate_key(headers: &Headers) -> Result<String, HandshakeError> {
    match single(headers, "Sec-WebSocket-Key")? {
        None => Err(HandshakeError::MissingKey),
        // A valid key is ASCII, so the lossy conversion never alters it.
        Some(key) if super::is_valid_key(key) => Ok(String::from_utf8_lossy(key).into_owned()),
        Some(_) => Err(HandshakeError::InvalidKey),
    }
}

/// The trimmed value of a header that may appear at most once.
fn single<'a>(headers: &'a Headers, name: &'static str) -> Result<Option<&'a [u8]>, HandshakeError> {
    let mut values = headers.get_all(name);
    let first = values.next();
    if values.next().is_some() {
        return Err(HandshakeError::DuplicateHeader(name));
    }
    Ok(first.map(<[u8]>::trim_ascii))
}

/// Like [`single`], also requiring UTF-8 so that no value is silently dropped.
fn single_utf8(headers: &Headers, name: &'static str) -> Result<Option<String>, HandshakeError> {
    single(headers, name)?
        .map(|value| {
            std::str::from_utf8(value)
                .map(str::to_owned)
                .map_err(|_| HandshakeError::InvalidHeader { name, problem: "not valid UTF-8" })
        })
        .transpose()
}

fn offered_protocols(headers: &Headers) -> Result<Vec<String>, HandshakeError> {
    headers
        .get_all("Sec-WebSocket-Protocol")
        .flat_map(list_elements)
        .map(|protocol| {
            // Tokens only (RFC 6455 §4.1): the chosen one is echoed in our
            // response, so it must be safe to write back as a header value.
            if http::is_token(protocol) {
                Ok(String::from_utf8_lossy(protocol).into_owned())
            } else {
                Err(HandshakeError::InvalidHeader {
                    name: "Sec-WebSocket-Protocol",
                    problem: "expected a comma-separated list of tokens",
                })
            }
        })
        .collect()
}
