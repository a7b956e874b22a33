//! The `Sec-WebSocket-Extensions` header grammar (RFC 6455 §9.1):
//!
//! ```text
//! extension-list  = 1#extension
//! extension       = extension-token *( ";" extension-param )
//! extension-param = token [ "=" (token | quoted-string) ]
//! ```
//!
//! Only the generic syntax lives here; what a parameter means (e.g.
//! `client_max_window_bits` of permessage-deflate, RFC 7692) is up to the
//! extension. Whitespace around `,` `;` `=` is tolerated, as are empty list
//! elements (RFC 9110 §5.6.1 asks recipients to skip them). A quoted value
//! must still be a token once unescaped, as §9.1 requires.

use std::fmt;

use super::error::{ExtensionSyntaxError, HandshakeError};
use super::http::{is_tchar, is_token};

/// One extension in a `Sec-WebSocket-Extensions` list, with its parameters
/// in order: `permessage-deflate; client_max_window_bits; server_max_window_bits=10`
/// has two, the first without a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// `(name, value)` pairs; `None` for a parameter without `=value`.
    pub params: Vec<(String, Option<String>)>,
}

impl ExtensionOffer {
    /// An offer of `name` without parameters.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), params: Vec::new() }
    }

    /// Adds a parameter without a value, e.g. `client_max_window_bits`.
    #[must_use]
    pub fn with_flag(mut self, name: impl Into<String>) -> Self {
        self.params.push((name.into(), None));
        self
    }

    /// Adds a `name=value` parameter.
    #[must_use]
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), Some(value.into())));
        self
    }

    /// The first parameter called `name` (ASCII case-insensitive):
    /// `None` if absent, `Some(None)` if present without a value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref())
    }
}

/// Writes the offer in header syntax; values that are not tokens are quoted.
impl fmt::Display for ExtensionOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (name, value) in &self.params {
            write!(f, "; {name}")?;
            match value {
                None => {}
                Some(v) if is_token(v.as_bytes()) => write!(f, "={v}")?,
                Some(v) => {
                    f.write_str("=\"")?;
                    for c in v.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"")?;
                }
            }
        }
        Ok(())
    }
}

/// Formats offers as one header value, comma separated.
///
/// ```
/// use peregrine_proto::handshake::{format_extensions, ExtensionOffer};
///
/// let offers = [
///     ExtensionOffer::new("permessage-deflate").with_flag("client_max_window_bits"),
///     ExtensionOffer::new("x-test").with_param("level", "3"),
/// ];
/// assert_eq!(
///     format_extensions(&offers),
///     "permessage-deflate; client_max_window_bits, x-test; level=3"
/// );
/// ```
pub fn format_extensions(offers: &[ExtensionOffer]) -> String {
    offers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Parses every `Sec-WebSocket-Extensions` value (a header may appear more
/// than once) into one list, in order.
///
/// ```
/// use peregrine_proto::handshake::parse_extensions;
///
/// let offers = parse_extensions([
///     "permessage-deflate; client_max_window_bits=\"10\", permessage-deflate",
/// ])?;
/// assert_eq!(offers.len(), 2);
/// assert_eq!(offers[0].param("client_max_window_bits"), Some(Some("10")));
/// assert!(parse_extensions(["permessage-deflate;"]).is_err());
/// # Ok::<(), peregrine_proto::handshake::ExtensionSyntaxError>(())
/// ```
pub fn parse_extensions<I>(values: I) -> Result<Vec<ExtensionOffer>, ExtensionSyntaxError>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let mut offers = Vec::new();
    for value in values {
        Parser { input: value.as_ref(), pos: 0 }.list(&mut offers)?;
    }
    Ok(offers)
}

/// Formats extensions for sending, or `None` if there are none.
///
/// The formatted value must parse back to the same offers: that both proves
/// the names are tokens and that no CR/LF can reach the wire.
pub(super) fn encode_extensions(extensions: &[ExtensionOffer]) -> Result<Option<String>, HandshakeError> {
    if extensions.is_empty() {
        return Ok(None);
    }
    let value = format_extensions(extensions);
    match parse_extensions([&value]) {
        Ok(parsed) if parsed == extensions => Ok(Some(value)),
        _ => Err(HandshakeError::InvalidHeaderValue { name: "Sec-WebSocket-Extensions".to_owned() }),
    }
}

/// Fails with [`HandshakeError::UnofferedExtension`] if `accepted` (what a
/// server answered) names an extension that is not in `offered`. Names
/// compare ASCII case-insensitively, like other HTTP tokens.
///
/// RFC 6455 §4.1 makes the client fail the connection in that case.
pub fn check_extensions<S: AsRef<str>>(
    accepted: &[ExtensionOffer],
    offered: &[S],
) -> Result<(), HandshakeError> {
    match accepted
        .iter()
        .find(|ext| !offered.iter().any(|name| name.as_ref().eq_ignore_ascii_case(&ext.name)))
    {
        Some(ext) => Err(HandshakeError::UnofferedExtension(ext.name.clone())),
        None => Ok(()),
    }
}

/// A cursor over one header value. Every read goes through `peek`, which is
/// `get`-based, so no input can make it index out of bounds.
struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn error(&self, problem: &'static str) -> ExtensionSyntaxError {
        ExtensionSyntaxError::new(problem, self.pos)
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    /// A token, or `problem` if there is none at the cursor. Tokens are
    /// ASCII, so the conversion to `String` cannot lose anything.
    fn token(&mut self, problem: &'static str) -> Result<String, ExtensionSyntaxError> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        match self.input.get(start..self.pos) {
            Some(token) if !token.is_empty() => Ok(String::from_utf8_lossy(token).into_owned()),
            _ => Err(self.error(problem)),
        }
    }

    /// A quoted-string after its opening quote, unescaped.
    fn quoted(&mut self) -> Result<String, ExtensionSyntaxError> {
        let start = self.pos;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated quoted string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) if is_quotable(b) => out.push(b),
                        _ => return Err(self.error("invalid escape in quoted string")),
                    }
                }
                Some(b) if is_qdtext(b) => out.push(b),
                Some(_) => return Err(self.error("invalid character in quoted string")),
            }
            self.pos += 1;
        }
        if !is_token(&out) {
            // RFC 6455 §9.1: the unescaped value MUST conform to `token`.
            return Err(ExtensionSyntaxError::new("quoted parameter value is not a token", start));
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// `1#extension`, appending to `offers`.
    fn list(&mut self, offers: &mut Vec<ExtensionOffer>) -> Result<(), ExtensionSyntaxError> {
        loop {
            self.skip_ows();
            match self.peek() {
                None => return Ok(()),
                Some(b',') => {
                    self.pos += 1;
                    continue;
                }
                Some(_) => {}
            }
            offers.push(self.extension()?);
            self.skip_ows();
            match self.peek() {
                None => return Ok(()),
                Some(b',') => self.pos += 1,
                Some(_) => return Err(self.error("expected ',' or ';'")),
            }
        }
    }

    fn extension(&mut self) -> Result<ExtensionOffer, ExtensionSyntaxError> {
        let mut offer = ExtensionOffer::new(self.token("expected an extension name")?);
        loop {
            self.skip_ows();
            if !self.eat(b';') {
                return Ok(offer);
            }
            self.skip_ows();
            let name = self.token("expected a parameter name")?;
            self.skip_ows();
            let value = if self.eat(b'=') {
                self.skip_ows();
                Some(if self.eat(b'"') { self.quoted()? } else { self.token("expected a parameter value")? })
            } else {
                None
            };
            offer.params.push((name, value));
        }
    }
}

/// `qdtext` (RFC 9110 §5.6.4): HTAB, SP, and visible characters but `"` `\`.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// What may follow `\` in a `quoted-pair`.
fn is_quotable(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff)
}
