//! Bounded HTTP/1.1 header-block parsing for both roles, and the few header
//! helpers the handshake needs (token lists, safe header writing).
//!
//! The parser never looks past [`HeaderLimits::max_header_size`] bytes of the
//! caller's buffer and never consumes anything: it reports how many bytes the
//! header block took, so whatever follows (frames that arrived in the same
//! read) stays with the caller.

use bytes::{BufMut, BytesMut};

use super::error::HandshakeError;

/// Default [`HeaderLimits::max_header_size`]: 8 KiB.
///
/// Browsers send handshakes well under 2 KiB; 8 KiB leaves room for large
/// cookies and matches the common default of nginx and Node.js, while keeping
/// what an unauthenticated peer can make us buffer small.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 8 * 1024;

/// Default [`HeaderLimits::max_headers`]: 64 header fields.
pub const DEFAULT_MAX_HEADERS: usize = 64;

/// Bounds on an HTTP header block, checked before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderLimits {
    /// Most bytes the whole header block may take: request or status line,
    /// all header lines and the terminating empty line. A buffer that holds
    /// more than this without a complete block is rejected (431 on a server).
    pub max_header_size: usize,
    /// Most header fields (431 on a server).
    pub max_headers: usize,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        Self { max_header_size: DEFAULT_MAX_HEADER_SIZE, max_headers: DEFAULT_MAX_HEADERS }
    }
}

impl HeaderLimits {
    /// Sets [`max_header_size`](Self::max_header_size).
    #[must_use]
    pub fn with_max_header_size(mut self, bytes: usize) -> Self {
        self.max_header_size = bytes;
        self
    }

    /// Sets [`max_headers`](Self::max_headers).
    #[must_use]
    pub fn with_max_headers(mut self, count: usize) -> Self {
        self.max_headers = count;
        self
    }
}

/// Header fields in the order received; names compare ASCII
/// case-insensitively.
///
/// Values are kept as bytes because HTTP allows non-UTF-8 `obs-text` in them;
/// [`get`](Self::get) is the convenient `&str` view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Boxed: a request is held in the handshake future across awaits, in
    /// several of its states, and a pointer keeps that future (and the
    /// connection task around it) as small as one `Vec` did (measured: two
    /// `Vec`s inline cost 130 more bytes of server memory per idle
    /// connection).
    fields: Box<Fields>,
}

/// Every name and value back to back, in one buffer: three allocations per
/// head, not two per field (a handshake has five or more fields, and each of
/// its allocations shows in the cost of accepting a connection).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Fields {
    text: Vec<u8>,
    /// Per field, where its name starts, where the name ends and the value
    /// starts, and where the value ends in `text`.
    spans: Vec<(usize, usize, usize)>,
}

impl Headers {
    fn from_httparse(raw: &[httparse::Header<'_>]) -> Self {
        let size = raw.iter().map(|h| h.name.len() + h.value.len()).sum();
        let mut text = Vec::with_capacity(size);
        let mut spans = Vec::with_capacity(raw.len());
        for header in raw {
            let start = text.len();
            text.extend_from_slice(header.name.as_bytes());
            let name_end = text.len();
            text.extend_from_slice(header.value);
            spans.push((start, name_end, text.len()));
        }
        Self { fields: Box::new(Fields { text, spans }) }
    }

    /// Every field as `(name, value)` bytes, in order.
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let Fields { text, spans } = &*self.fields;
        spans.iter().map(|&(start, name_end, value_end)| (&text[start..name_end], &text[name_end..value_end]))
    }

    /// The first value of `name`, or `None` if it is absent or not UTF-8.
    ///
    /// For headers that must appear once, check [`count`](Self::count) too.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name).and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The first value of `name` as bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.get_all(name).next()
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        self.fields().filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }

    /// How many times `name` appears.
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// Whether `name` appears at all.
    pub fn contains(&self, name: &str) -> bool {
        self.get_bytes(name).is_some()
    }

    /// Whether the comma-separated values of `name` (across all its fields)
    /// contain `token`, ASCII case-insensitively: `Connection: keep-alive,
    /// Upgrade` contains `upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(list_elements)
            .any(|element| element.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// All fields as `(name, value)` in the order received.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        // httparse accepts only tokens as names, which are ASCII.
        self.fields().map(|(n, v)| (std::str::from_utf8(n).unwrap_or_default(), v))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.spans.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.spans.is_empty()
    }
}

/// The non-empty, whitespace-trimmed elements of an HTTP list value
/// (`#element` in RFC 9110 §5.6.1, which tells recipients to skip empty ones).
pub(super) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|element| !element.is_empty())
}

/// Whether `b` is a `tchar` (RFC 9110 §5.6.2).
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `s` is a non-empty `token`.
pub(super) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// How the bounded parser failed; each role maps it to its own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ParseError {
    TooLarge,
    TooManyHeaders,
    Malformed(&'static str),
}

/// A syntactically valid request head, not yet checked against RFC 6455.
#[derive(Debug)]
pub(super) struct RawRequest {
    pub method: String,
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Headers,
    /// Bytes taken by the header block, terminating empty line included.
    pub len: usize,
}

/// A syntactically valid response head.
#[derive(Debug)]
pub(super) struct RawResponse {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub len: usize,
}

/// Runs `parse` on at most `max_header_size` bytes of `buf` with room for
/// `max_headers` fields, applying the limits the same way for both roles.
fn parse_bounded<T>(
    buf: &[u8],
    limits: &HeaderLimits,
    parse: impl for<'b> FnOnce(&'b [u8], &mut [httparse::Header<'b>]) -> httparse::Result<T>,
) -> Result<Option<T>, ParseError> {
    // Only the first `max_header_size` bytes are shown to httparse, so a huge
    // buffer costs no more than a full one and the limit is exact.
    let window = buf.get(..limits.max_header_size).unwrap_or(buf);
    // Handshakes are re-parsed as bytes arrive; keep the usual case off the heap.
    let mut stack = [httparse::EMPTY_HEADER; DEFAULT_MAX_HEADERS];
    let mut heap;
    let slots = match stack.get_mut(..limits.max_headers) {
        Some(slots) => slots,
        None => {
            heap = vec![httparse::EMPTY_HEADER; limits.max_headers];
            heap.as_mut_slice()
        }
    };
    match parse(window, slots) {
        Ok(httparse::Status::Complete(value)) => Ok(Some(value)),
        // An incomplete block that already fills the window can never fit.
        Ok(httparse::Status::Partial) if buf.len() > limits.max_header_size => Err(ParseError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(ParseError::TooManyHeaders),
        Err(e) => Err(ParseError::Malformed(describe(e))),
    }
}

fn describe(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status code",
        httparse::Error::Token => "invalid method or token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// Parses a request head; `Ok(None)` means the block is not complete yet.
pub(super) fn parse_request(buf: &[u8], limits: &HeaderLimits) -> Result<Option<RawRequest>, ParseError> {
    parse_bounded(buf, limits, |window, slots| {
        let mut req = httparse::Request::new(slots);
        Ok(match req.parse(window)? {
            httparse::Status::Partial => httparse::Status::Partial,
            // httparse only reports Complete with every field filled in.
            httparse::Status::Complete(len) => httparse::Status::Complete(RawRequest {
                method: req.method.unwrap_or_default().to_owned(),
                target: req.path.unwrap_or_default().to_owned(),
                minor_version: req.version.unwrap_or_default(),
                headers: Headers::from_httparse(req.headers),
                len,
            }),
        })
    })
}

/// Parses a response head; `Ok(None)` means the block is not complete yet.
pub(super) fn parse_response(buf: &[u8], limits: &HeaderLimits) -> Result<Option<RawResponse>, ParseError> {
    parse_bounded(buf, limits, |window, slots| {
        let mut res = httparse::Response::new(slots);
        Ok(match res.parse(window)? {
            httparse::Status::Partial => httparse::Status::Partial,
            httparse::Status::Complete(len) => httparse::Status::Complete(RawResponse {
                status: res.code.unwrap_or_default(),
                reason: res.reason.unwrap_or_default().to_owned(),
                headers: Headers::from_httparse(res.headers),
                len,
            }),
        })
    })
}

/// Checks a caller-supplied header before it is written: the name must be a
/// token, the value free of control characters (so no CR/LF can split the
/// header block), and the name not one the writer manages itself.
pub(super) fn check_header(name: &str, value: &str, reserved: &[&str]) -> Result<(), HandshakeError> {
    if !is_token(name.as_bytes()) {
        return Err(HandshakeError::InvalidHeaderName(name.to_owned()));
    }
    if reserved.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(HandshakeError::ReservedHeader(name.to_owned()));
    }
    check_value(name, value)
}

/// Rejects values with control characters other than HTAB.
pub(super) fn check_value(name: &str, value: &str) -> Result<(), HandshakeError> {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HandshakeError::InvalidHeaderValue { name: name.to_owned() });
    }
    Ok(())
}

/// The bytes [`put_header`] writes.
pub(super) fn header_len(name: &str, value: &str) -> usize {
    name.len() + ": ".len() + value.len() + "\r\n".len()
}

/// Appends `name: value\r\n`; the caller has validated both.
pub(super) fn put_header(dst: &mut BytesMut, name: &str, value: &str) {
    dst.reserve(header_len(name, value));
    dst.put_slice(name.as_bytes());
    dst.put_slice(b": ");
    dst.put_slice(value.as_bytes());
    dst.put_slice(b"\r\n");
}

/// The standard reason phrase for `status`, falling back to its class.
pub(super) fn reason_phrase(status: u16) -> &'static str {
    let phrase = match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    };
    match (phrase, status / 100) {
        ("", 2) => "Success",
        ("", 3) => "Redirection",
        ("", 4) => "Client Error",
        ("", _) => "Server Error",
        (phrase, _) => phrase,
    }
}
