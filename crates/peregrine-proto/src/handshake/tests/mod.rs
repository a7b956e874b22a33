//! Unit tests of the handshake module, grouped by topic. They speak bytes:
//! literal requests and responses in, errors and bytes out.

mod client;
mod extensions;
mod keys;
mod limits;
mod requests;
mod responses;

/// The sample key of RFC 6455 §1.3 and its accept value.
pub(super) const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub(super) const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// An HTTP head as a request line (or status line) plus headers, editable
/// one header at a time so each test states only the defect it is about.
#[derive(Debug, Clone)]
pub(super) struct Head {
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    /// A valid upgrade request in the shape of RFC 6455 §1.2.
    pub(super) fn request() -> Self {
        Self {
            start: "GET /chat?room=1 HTTP/1.1".into(),
            headers: vec![
                ("Host".into(), "server.example.com".into()),
                ("Upgrade".into(), "websocket".into()),
                ("Connection".into(), "Upgrade".into()),
                ("Sec-WebSocket-Key".into(), KEY.into()),
                ("Origin".into(), "http://example.com".into()),
                ("Sec-WebSocket-Version".into(), "13".into()),
            ],
        }
    }

    /// A valid 101 answering [`KEY`].
    pub(super) fn response() -> Self {
        Self {
            start: "HTTP/1.1 101 Switching Protocols".into(),
            headers: vec![
                ("Upgrade".into(), "websocket".into()),
                ("Connection".into(), "Upgrade".into()),
                ("Sec-WebSocket-Accept".into(), ACCEPT.into()),
            ],
        }
    }

    pub(super) fn start(mut self, line: &str) -> Self {
        self.start = line.into();
        self
    }

    /// Replaces every field called `name` with one `name: value`.
    pub(super) fn set(self, name: &str, value: &str) -> Self {
        self.remove(name).add(name, value)
    }

    /// Adds one more field, keeping existing ones of the same name.
    pub(super) fn add(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub(super) fn remove(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    pub(super) fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// A small deterministic generator for the no-panic tests (xorshift64).
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
