//! Explanations: why a connection could not be opened, and what a close code
//! means. Each explanation names what was observed (the step, the status, the
//! headers, the first bytes) and then the likely cause, with the flag that
//! would fix it where there is one.

use std::fmt::Write as _;
use std::io;

use peregrine::proto::handshake::{HandshakeError, Headers};
use peregrine::{CloseCode, CloseFrame, Error};
use rustls::CertificateError;

use super::frames::dump;
use super::transport::{Failed, Failure, Stage, Target};

/// Response body bytes shown.
const BODY_SHOWN: usize = 1024;

/// What the request carried, for hints.
#[derive(Debug, Default)]
pub struct Sent {
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    /// An `Authorization` header (`--token` or `-H`) was sent.
    pub credentials: bool,
    /// Offered subprotocols.
    pub protocols: Vec<String>,
}

/// The full explanation of a failed connection attempt.
pub fn failure(target: &Target, failure: &Failure, sent: &Sent) -> String {
    let mut out = String::new();
    let what = match failure.stage {
        Stage::Resolve => format!("cannot resolve {}", target.host),
        Stage::Tcp => format!("cannot connect to {}", target.authority()),
        Stage::Tls => format!("TLS handshake with {} failed", target.authority()),
        Stage::Handshake => format!("WebSocket handshake with {} failed", target.authority()),
    };
    let error = match &failure.error {
        Failed::Io(e) => e.to_string(),
        // The step already says "handshake" or "TLS".
        Failed::Ws(Error::Handshake(e)) => e.to_string(),
        Failed::Ws(Error::Tls(e)) => e.to_string(),
        Failed::Ws(e) => e.to_string(),
        Failed::Timeout(t) => format!("no answer within {} s", t.as_secs_f64()),
    };
    let _ = writeln!(out, "error: {what}: {error}");
    if let Some(peer) = failure.peer {
        let _ = writeln!(out, "  connected to {peer}");
    }
    let cause = match &failure.error {
        Failed::Ws(Error::Handshake(HandshakeError::UnexpectedStatus {
            status,
            reason,
            headers,
            header_len,
        })) => {
            show_response(&mut out, *status, reason, headers, failure.received.get(*header_len..));
            status_cause(*status, headers, target, sent)
        }
        Failed::Ws(Error::Handshake(e)) => handshake_cause(e, target, &failure.received, &mut out),
        Failed::Ws(Error::Tls(e)) => tls_cause(e, target),
        Failed::Ws(Error::Timeout(_)) | Failed::Timeout(_) => timeout_cause(failure.stage, target),
        Failed::Ws(Error::Io(e)) | Failed::Io(e) => {
            io_cause(e, failure.stage, target, &failure.received, &mut out)
        }
        Failed::Ws(Error::Url(_)) => "the URL or host name is not usable for this connection".to_owned(),
        Failed::Ws(other) => format!("unexpected failure: {other}"),
    };
    let _ = writeln!(out, "likely cause: {cause}");
    out
}

fn show_response(out: &mut String, status: u16, reason: &str, headers: &Headers, body: Option<&[u8]>) {
    let _ = writeln!(out, "  HTTP status: {status} {reason}");
    if headers.is_empty() {
        let _ = writeln!(out, "  response headers: (none)");
    } else {
        let _ = writeln!(out, "  response headers:");
        for (name, value) in headers.iter() {
            let _ = writeln!(out, "    {name}: {}", printable(&String::from_utf8_lossy(value)));
        }
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() {
        let shown = &body[..body.len().min(BODY_SHOWN)];
        let _ = writeln!(out, "  response body (first {} bytes received):", shown.len());
        let text = String::from_utf8_lossy(shown);
        for line in text.lines().filter(|l| !l.trim().is_empty()).take(20) {
            let _ = writeln!(out, "    {}", printable(line.trim_end()));
        }
    }
}

/// Text from the server as it reads, with control characters (which could
/// move the cursor or recolour the terminal) and invisible or reordering
/// ones (zero-width, bidirectional overrides) escaped.
fn printable(text: &str) -> String {
    let hidden = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
    };
    text.chars().map(|c| if hidden(c) { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// The WebSocket URL for a redirect's `Location`: ws:// for http://, wss://
/// for https://; anything else as given.
fn websocket_location(location: &str) -> String {
    if let Some(rest) = location.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = location.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        location.to_owned()
    }
}

fn redirect_cause(status: u16, location: &str) -> String {
    format!(
        "the server redirects ({status}) to {location}, and WebSocket clients do not follow redirects: \
         connect to {} instead (often http:// to https://, or a missing or extra trailing slash)",
        websocket_location(location)
    )
}

fn status_cause(status: u16, headers: &Headers, target: &Target, sent: &Sent) -> String {
    let path = &target.resource;
    match status {
        400 => format!(
            "the server found the upgrade request invalid (400). It may want a header this client \
             did not send (add it with -H 'Name: value'), a subprotocol (-p NAME), or a query \
             parameter in the URL; or {path} is served by a plain HTTP handler"
        ),
        401 => {
            let challenge = headers
                .get("WWW-Authenticate")
                .map(|c| format!(" (the server asks for: WWW-Authenticate: {c})"))
                .unwrap_or_default();
            if sent.credentials {
                format!(
                    "authentication failed (401): the token or credentials sent were refused: \
                     expired, for another audience, or malformed{challenge}"
                )
            } else {
                format!(
                    "authentication is required (401) and none was sent: pass a token with --token TOKEN \
                     (sends Authorization: Bearer TOKEN), or a cookie with -H 'Cookie: name=value'{challenge}"
                )
            }
        }
        403 => {
            let origin = match &sent.origin {
                Some(origin) => format!("the Origin sent ({origin}) is not on its allow-list"),
                None => "no Origin was sent and the server may require one: try --origin https://your-site.example"
                    .to_owned(),
            };
            let auth = if sent.credentials {
                "or the credentials sent lack permission"
            } else {
                "or it wants credentials (--token TOKEN, -H 'Cookie: ...')"
            };
            format!("the server refused the Origin or the credentials (403): {origin}, {auth}")
        }
        404 => format!(
            "wrong path (404): nothing is served at {path} on {}. Check the path against the \
             server's routes (/ws? /socket? a trailing slash?)",
            target.authority()
        ),
        405 => format!("the server does not accept GET at {path} (405): wrong path"),
        426 => {
            let version = headers
                .get("Sec-WebSocket-Version")
                .map(|v| format!("it asks for Sec-WebSocket-Version: {v}, this client speaks 13"))
                .unwrap_or_else(|| "it did not say which version it wants".to_owned());
            format!(
                "version mismatch or lost upgrade (426 Upgrade Required): {version}; or a proxy removed \
                 the Upgrade and Connection headers on the way"
            )
        }
        429 => {
            let retry =
                headers.get("Retry-After").map(|r| format!(" (Retry-After: {r})")).unwrap_or_default();
            format!("rate limited (429): too many connections or requests; wait and retry{retry}")
        }
        500 => "the server failed while handling the upgrade (500): see its logs".to_owned(),
        502..=504 => format!(
            "a proxy or load balancer answered ({status}): the WebSocket backend behind it is down, \
             unreachable or too slow (check the upstream address and the proxy's timeouts)"
        ),
        300..=399 if headers.get("Location").is_some() => {
            redirect_cause(status, headers.get("Location").unwrap_or_default())
        }
        200..=399 => format!(
            "the server answered plain HTTP ({status}), not an upgrade: wrong path, or a proxy that does \
             not forward the Upgrade/Connection headers (nginx needs proxy_http_version 1.1; \
             proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\")."
        ),
        _ => format!("the server refused the upgrade with {status}; the headers and body above may say why"),
    }
}

fn handshake_cause(error: &HandshakeError, target: &Target, received: &[u8], out: &mut String) -> String {
    use HandshakeError::*;
    match error {
        MalformedResponse(_) | ResponseTooLarge { .. } | ResponseTooManyHeaders { .. } => {
            if !received.is_empty() {
                let _ = writeln!(out, "  first bytes received:");
                let mut text = String::new();
                dump(&mut text, &received[..received.len().min(64)]);
                out.push_str(&text);
            }
            if looks_like_tls(received) {
                format!(
                    "the server answered with TLS: ws:// against a TLS port? try {}",
                    target.other_scheme()
                )
            } else if target.tls {
                "the server's answer is not HTTP: is this a WebSocket server (right port)?".to_owned()
            } else {
                format!(
                    "the server's answer is not HTTP: wrong port, a non-HTTP service, or ws:// against a \
                     TLS port (try {})",
                    target.other_scheme()
                )
            }
        }
        ResponseMissingUpgrade | ResponseMissingConnectionUpgrade => {
            "the server said 101 but without Upgrade: websocket / Connection: Upgrade: a proxy in between \
             rewrote the response, or the server does not implement RFC 6455"
                .to_owned()
        }
        MissingAccept => "the server said 101 without a Sec-WebSocket-Accept header: a proxy in between \
                          stripped it, or the server does not implement RFC 6455"
            .to_owned(),
        AcceptMismatch { .. } => "the Sec-WebSocket-Accept answer does not match our key: a caching \
                                  proxy replayed an old response, or the server computes it wrong"
            .to_owned(),
        UnofferedProtocol(protocol) => {
            format!("the server picked subprotocol {protocol:?}, which was not offered: add -p {protocol}")
        }
        MultipleProtocols => "the server answered with several subprotocols; it must pick one".to_owned(),
        UnofferedExtension(_) | ResponseMalformedExtensions(_) => {
            "the server negotiated an extension this client did not offer (a misbehaving server or proxy)"
                .to_owned()
        }
        InvalidHeaderName(_) | InvalidHeaderValue { .. } | ReservedHeader(_) | InvalidResource(_) => {
            "a header or the URL given on the command line cannot be sent as is (see the error above)"
                .to_owned()
        }
        other => format!("the server's response broke the handshake: {other}"),
    }
}

/// A TLS record: handshake (0x16) or alert (0x15), version 3.x.
fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, ..])
}

fn tls_cause(error: &rustls::Error, target: &Target) -> String {
    use rustls::Error as E;
    match error {
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            format!(
                "the server did not answer with TLS: wss:// against a plain port? try {}",
                target.other_scheme()
            )
        }
        E::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the server's certificate is not trusted (self-signed, or issued by a private CA): pass that \
                 CA, or the server's own certificate, with --ca FILE, or skip verification with --insecure \
                 (testing only)"
                    .to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "the certificate is not valid for {}: connect with a name it was issued for \
                 (or --insecure for testing)",
                target.host
            ),
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => {
                "the certificate is expired or not yet valid (or this machine's clock is wrong)".to_owned()
            }
            other if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                "the server presents a certificate marked as a CA as its own (what `openssl req -x509` makes \
                 by default), and it is not the one given with --ca: pass that very certificate with --ca \
                 FILE (it is then pinned), issue the server a leaf certificate (basicConstraints CA:FALSE, \
                 subjectAltName with the host name), or use --insecure for testing"
                    .to_owned()
            }
            other => format!("the server's certificate was rejected: {other:?}"),
        },
        E::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            "the server requires a client certificate: pass --cert FILE --key FILE".to_owned()
        }
        E::AlertReceived(alert) => format!(
            "the server aborted TLS with alert {alert:?}: it may require a client certificate (--cert/--key), \
             or share no TLS version or cipher with this client"
        ),
        E::PeerIncompatible(_) => {
            "the server shares no TLS version or cipher suite with this client".to_owned()
        }
        other => format!("TLS failed: {other}"),
    }
}

fn timeout_cause(stage: Stage, target: &Target) -> String {
    match stage {
        Stage::Resolve => "the DNS lookup did not finish: check the network and the name server".to_owned(),
        Stage::Tcp => format!(
            "no answer to the TCP connection to {}: a firewall dropping packets, a wrong address, or the \
             host is down",
            target.authority()
        ),
        Stage::Tls => format!(
            "TCP connected but TLS got no answer: wss:// against a plain port (an HTTP server waits for a \
             request line)? try {}",
            target.other_scheme()
        ),
        Stage::Handshake if !target.tls => format!(
            "TCP connected but no HTTP answer came: ws:// against a TLS port (a TLS server waits for a \
             ClientHello)? try {}; or the server is overloaded or not an HTTP server",
            target.other_scheme()
        ),
        Stage::Handshake => {
            "TLS connected but no HTTP answer came: the server is overloaded, or not an HTTP server"
                .to_owned()
        }
    }
}

fn io_cause(error: &io::Error, stage: Stage, target: &Target, received: &[u8], out: &mut String) -> String {
    match (stage, error.kind()) {
        (Stage::Resolve, _) => {
            format!("the host name {} does not resolve: check its spelling and DNS", target.host)
        }
        (_, io::ErrorKind::ConnectionRefused) => format!(
            "nothing is listening on {} (wrong host or port? server not running? listening only on \
             another interface, e.g. 127.0.0.1 vs 0.0.0.0?)",
            target.authority()
        ),
        (_, io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable) => {
            format!("no route to {}: wrong address, or the network is down", target.host)
        }
        (
            Stage::Tls,
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::InvalidData,
        ) => {
            format!(
                "the server dropped the connection during the TLS handshake: wss:// against a plain port? \
                 try {}",
                target.other_scheme()
            )
        }
        (Stage::Handshake, io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) => {
            if looks_like_tls(received) {
                let _ = writeln!(out, "  the server sent a TLS record before closing");
                format!("ws:// against a TLS port? try {}", target.other_scheme())
            } else if target.tls {
                "the server closed the connection without an HTTP answer: it crashed, or refused the request \
                 without saying why (see its logs)"
                    .to_owned()
            } else {
                format!(
                    "the server closed the connection without an HTTP answer: ws:// against a TLS port? try {}; \
                     or it is not an HTTP server",
                    target.other_scheme()
                )
            }
        }
        _ => format!("the connection failed: {error}"),
    }
}

/// The standard explanation of 1006.
pub const ABNORMAL: &str = "no close frame was received: the peer or a proxy dropped the TCP connection \
                            (idle timeout? crashed server?)";

/// `1001 (GOING_AWAY): going away: …, reason "…"` for a received close frame.
pub fn close(frame: Option<&CloseFrame>) -> String {
    match frame {
        None => {
            format!("{} (NO_STATUS_RECEIVED): the close frame carried no code", CloseCode::NO_STATUS.as_u16())
        }
        Some(frame) => {
            let mut s = code(frame.code);
            if !frame.reason.is_empty() {
                let _ = write!(s, "; reason: {:?}", frame.reason.as_str());
            }
            s
        }
    }
}

/// `1008 (POLICY_VIOLATION): policy violation`.
pub fn code(code: CloseCode) -> String {
    let meaning = if code == CloseCode::ABNORMAL { ABNORMAL } else { code.meaning() };
    match code.name() {
        Some(name) => format!("{} ({name}): {meaning}", code.as_u16()),
        None => format!("{}: {meaning}", code.as_u16()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    #[test]
    fn status_causes_name_the_fix() {
        let t = target("ws://example.com/chat");
        let none = Headers::default();
        let sent = Sent::default();
        assert!(status_cause(404, &none, &t, &sent).contains("wrong path"));
        assert!(status_cause(403, &none, &t, &sent).contains("--origin"));
        assert!(status_cause(401, &none, &t, &sent).contains("--token"));
        assert!(status_cause(200, &none, &t, &sent).contains("proxy_http_version 1.1"));
        assert!(status_cause(302, &none, &t, &sent).contains("plain HTTP"));
        let cause = redirect_cause(301, "https://example.com/chat/");
        assert!(cause.contains("connect to wss://example.com/chat/ instead"), "{cause}");
        assert_eq!(printable("{\"a\":1}\u{1b}[2J"), "{\"a\":1}\\u{1b}[2J");
        assert_eq!(printable("ok\u{202e}txt"), "ok\\u{202e}txt");
        assert!(status_cause(426, &none, &t, &sent).contains("version"));
    }

    #[test]
    fn tls_bytes_on_a_plain_connection_suggest_wss() {
        let t = target("ws://example.com:8443/");
        let mut out = String::new();
        let cause = handshake_cause(
            &HandshakeError::MalformedResponse("bad status line"),
            &t,
            &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32],
            &mut out,
        );
        assert!(cause.contains("try wss://example.com:8443/"), "{cause}");
    }

    #[test]
    fn close_codes_are_named_and_explained() {
        assert!(
            code(CloseCode::ABNORMAL).starts_with("1006 (ABNORMAL_CLOSURE): no close frame was received")
        );
        let frame = CloseFrame::new(CloseCode::POLICY_VIOLATION, "banned");
        assert_eq!(close(Some(&frame)), "1008 (POLICY_VIOLATION): policy violation; reason: \"banned\"");
        assert!(code(4001.into()).contains("private use"));
    }
}
