//! What the service answers: the proto crate's 101 and rejections as
//! `http::Response`s, and [`UpgradeError`], which knows its status and reason.

use std::{fmt, io};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use http_body_util::Full;
use peregrine_proto::handshake::{HandshakeError, Rejection};

use crate::error::Error;

/// The body of the responses built here: the 101 has none, a rejection has
/// its reason as one line of `text/plain`.
pub type Body = Full<Bytes>;

/// Why a request was not upgraded. Each case knows the response to send:
/// [`UpgradeError::to_response`], or return it from an axum handler (it
/// implements `IntoResponse` with feature `axum`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The request is not a valid WebSocket handshake, or (with no status of
    /// its own, answered with 500) our response could not be encoded.
    Handshake(HandshakeError),
    /// The application refused the handshake (the `decide` callback of
    /// [`upgrade_with`](super::upgrade_with)).
    Rejected(Rejection),
    /// The request is a valid handshake but nothing can take its connection
    /// over: it did not come through a hyper HTTP/1.1 server (hyper puts a
    /// `hyper::upgrade::OnUpgrade` in every request that may upgrade), or a
    /// layer in between dropped that extension. Answered with 500: the
    /// server, not the client, is at fault.
    NotUpgradable,
}

impl UpgradeError {
    /// The response to send, as the bytes [`accept`](crate::accept) would
    /// write for the same request: status, reason as the body, and the
    /// headers the status calls for (`Allow: GET` with 405, `Upgrade:
    /// websocket` with 426, `Sec-WebSocket-Version: 13` when the version is
    /// wrong).
    #[must_use]
    pub fn rejection(&self) -> Rejection {
        match self {
            Self::Handshake(error) => error.rejection().unwrap_or_else(|| {
                Rejection::new(500, "the server could not answer the WebSocket handshake")
            }),
            Self::Rejected(rejection) => rejection.clone(),
            Self::NotUpgradable => Rejection::new(500, self.to_string()),
        }
    }

    /// The HTTP status answered.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.rejection().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The reason sent as the response body.
    #[must_use]
    pub fn reason(&self) -> String {
        self.rejection().reason().to_owned()
    }

    /// The error response for hyper.
    ///
    /// ```
    /// use peregrine::Config;
    /// use peregrine::upgrade::upgrade;
    ///
    /// let mut request = http::Request::get("/ws")
    ///     .header("Host", "example.com")
    ///     .header("Connection", "Upgrade")
    ///     .header("Upgrade", "websocket")
    ///     .header("Sec-WebSocket-Version", "8")
    ///     .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
    ///     .body(())
    ///     .unwrap();
    /// let error = upgrade(&mut request, &Config::default()).unwrap_err();
    /// let response = error.to_response();
    /// assert_eq!(response.status(), 426);
    /// assert_eq!(response.headers()["sec-websocket-version"], "13");
    /// assert_eq!(response.headers()["upgrade"], "websocket");
    /// ```
    #[must_use]
    pub fn to_response(&self) -> http::Response<Body> {
        rejection_response(&self.rejection())
    }
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handshake(error) => error.fmt(f),
            Self::Rejected(rejection) => {
                write!(f, "handshake refused with {}: {}", rejection.status(), rejection.reason())
            }
            Self::NotUpgradable => f.write_str(
                "this HTTP connection cannot be switched to WebSocket: \
                 the server offers no upgrade on it",
            ),
        }
    }
}

impl std::error::Error for UpgradeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Handshake(error) => Some(error),
            _ => None,
        }
    }
}

impl From<HandshakeError> for UpgradeError {
    fn from(error: HandshakeError) -> Self {
        Self::Handshake(error)
    }
}

impl From<UpgradeError> for Error {
    fn from(error: UpgradeError) -> Self {
        match error {
            UpgradeError::Handshake(error) => Self::Handshake(error),
            UpgradeError::Rejected(rejection) => {
                Self::Rejected { status: rejection.status(), reason: rejection.reason().to_owned() }
            }
            UpgradeError::NotUpgradable => {
                Self::Io(io::Error::new(io::ErrorKind::Unsupported, error.to_string()))
            }
        }
    }
}

/// The response refusing a handshake with `error`: its status, its reason
/// as the body, and the headers the status calls for. A `HandshakeError`
/// with no status (it was not caused by a request) is answered with 500.
///
/// ```
/// use peregrine::proto::handshake::HandshakeError;
/// use peregrine::upgrade::error_response;
///
/// let response = error_response(&HandshakeError::MethodNotAllowed("POST".into()));
/// assert_eq!(response.status(), 405);
/// assert_eq!(response.headers()["allow"], "GET");
/// ```
#[must_use]
pub fn error_response(error: &HandshakeError) -> http::Response<Body> {
    UpgradeError::Handshake(error.clone()).to_response()
}

/// A [`Rejection`] as a hyper response, with the same status line, headers
/// and body [`accept_with`](crate::accept_with) would write for it. Use it to
/// refuse a handshake in the service itself, e.g. a bad `Origin` or missing
/// credentials. A rejection that cannot be encoded (a status outside
/// 200..=599, a header with CR or LF) becomes a plain 500.
///
/// ```
/// use peregrine::proto::handshake::Rejection;
/// use peregrine::upgrade::rejection_response;
///
/// let rejection = Rejection::new(401, "log in first").with_header("WWW-Authenticate", "Bearer");
/// let response = rejection_response(&rejection);
/// assert_eq!(response.status(), 401);
/// assert_eq!(response.headers()["www-authenticate"], "Bearer");
/// assert_eq!(response.headers()["content-type"], "text/plain; charset=utf-8");
/// ```
#[must_use]
pub fn rejection_response(rejection: &Rejection) -> http::Response<Body> {
    match rejection.to_vec() {
        Ok(bytes) => from_head(&bytes).unwrap_or_else(|_| internal_error()),
        Err(_) => internal_error(),
    }
}

/// Turns a response the proto crate encoded (status line, headers, body)
/// into an `http::Response`, so the bytes `accept` writes and the response
/// hyper writes cannot drift apart.
pub(super) fn from_head(bytes: &[u8]) -> Result<http::Response<Body>, UpgradeError> {
    let malformed = |problem| UpgradeError::Handshake(HandshakeError::MalformedResponse(problem));
    // Each header line ends with CRLF, so this many slots always suffice.
    let lines = bytes.windows(2).filter(|pair| pair == b"\r\n").count();
    let mut slots = vec![httparse::EMPTY_HEADER; lines];
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(malformed("incomplete response head")),
        Err(_) => return Err(malformed("unparsable response head")),
    };
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| malformed("invalid status"))?;
    let mut response = http::Response::new(Full::new(Bytes::copy_from_slice(&bytes[len..])));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for field in parsed.headers.iter() {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| malformed("invalid header name"))?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| malformed("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(response)
}

fn internal_error() -> http::Response<Body> {
    let mut response = http::Response::new(Full::new(Bytes::from_static(b"Internal Server Error\n")));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
