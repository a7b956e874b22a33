//! Accepting WebSocket connections: the server side of the opening handshake
//! over any transport.

use bytes::BytesMut;
use peregrine_proto::Role;
use peregrine_proto::extension::DeflateParams;
use peregrine_proto::handshake::{AcceptResponse, HeaderLimits, Rejection, Request};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::config::Config;
use crate::error::{Error, Result, TimeoutKind};
use crate::handshake_io::read_head;
use crate::socket::WebSocket;

/// Accepts a WebSocket connection on `io` with default settings, taking any
/// path and no subprotocol.
///
/// ```no_run
/// # async fn run() -> peregrine::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// loop {
///     let (tcp, _) = listener.accept().await?;
///     tokio::spawn(async move {
///         let mut ws = peregrine::accept(tcp).await?;
///         while let Some(message) = ws.recv().await {
///             let message = message?;
///             if message.is_data() {
///                 ws.send(message).await?;
///             }
///         }
///         Ok::<(), peregrine::Error>(())
///     });
/// }
/// # }
/// ```
pub async fn accept<S>(io: S) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(io, &Config::default(), |request| Ok(request.accept())).await
}

/// Accepts a WebSocket connection, letting `decide` look at the request
/// (path, headers, Origin, offered subprotocols) and answer with a 101
/// ([`Request::accept`], optionally `.with_protocol(..)` or extra headers) or
/// a [`Rejection`] with a status and a reason.
///
/// Malformed handshakes are refused with the status their error names (400,
/// 405, 426, 431, 505) and the reason as the body; the returned error says
/// the same. The whole handshake is bounded by the configured handshake
/// timeout and header size limit.
///
/// ```no_run
/// use peregrine::proto::handshake::Rejection;
/// # async fn run(tcp: tokio::net::TcpStream) -> peregrine::Result<()> {
/// let config = peregrine::Config::default();
/// let ws = peregrine::accept_with(tcp, &config, |request| {
///     match request.origin() {
///         Some("https://app.example") => {
///             let protocol = request.choose_protocol(&["chat.v2", "chat.v1"]);
///             Ok(match protocol {
///                 Some(p) => request.accept().with_protocol(p),
///                 None => request.accept(),
///             })
///         }
///         other => Err(Rejection::new(403, format!("origin {other:?} is not allowed"))),
///     }
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn accept_with<S, F>(mut io: S, config: &Config, decide: F) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request) -> std::result::Result<AcceptResponse, Rejection>,
{
    let handshake = async {
        let limits = HeaderLimits::default().with_max_header_size(config.limits.header_size());
        let mut buf = BytesMut::new();
        let parsed = read_head(&mut io, &mut buf, |bytes| Ok(Request::parse_with(bytes, &limits)?)).await;
        let request = match parsed {
            Ok(request) => request,
            Err(Error::Handshake(error)) => {
                if let Some(rejection) = error.rejection() {
                    refuse(&mut io, &rejection).await;
                }
                return Err(Error::Handshake(error));
            }
            Err(other) => return Err(other),
        };
        let accept = match decide(&request) {
            Ok(accept) => accept,
            Err(rejection) => {
                refuse(&mut io, &rejection).await;
                return Err(Error::Rejected {
                    status: rejection.status(),
                    reason: rejection.reason().to_owned(),
                });
            }
        };
        let (accept, deflate) = negotiate_extensions(&request, accept, config);
        let mut response = BytesMut::new();
        accept.encode(&mut response)?;
        io.write_all(&response).await?;
        io.flush().await?;
        Ok((buf.split_off(request.consumed()), deflate))
    };
    // Boxed: the handshake's state (buffers, the parsed request, the timer) is
    // large and short-lived; inline, it would set the size of every
    // connection's task for the connection's whole life, idle or not.
    let handshake = Box::pin(tokio::time::timeout(config.handshake_timeout, handshake));
    let (leftover, deflate) = handshake.await.map_err(|_| Error::Timeout(TimeoutKind::Handshake))??;
    Ok(WebSocket::from_negotiated(io, Role::Server, config, &leftover, deflate))
}

/// Adds our answer to the client's extension offers (permessage-deflate, when
/// configured) to the 101.
pub(crate) fn negotiate_extensions(
    request: &Request,
    accept: AcceptResponse,
    config: &Config,
) -> (AcceptResponse, Option<DeflateParams>) {
    match config.deflate.as_ref().and_then(|deflate| deflate.negotiate(request.extensions())) {
        Some((answer, params)) => (accept.with_extension(answer), Some(params)),
        None => (accept, None),
    }
}

/// Best effort: the peer may already be gone, and the handshake error is what
/// the caller needs to hear about.
async fn refuse<S: AsyncWrite + Unpin>(io: &mut S, rejection: &Rejection) {
    let mut response = BytesMut::new();
    if rejection.encode(&mut response).is_ok() {
        let _ = io.write_all(&response).await;
        let _ = io.shutdown().await;
    }
}
