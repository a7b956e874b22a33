//! Size limits, checked before anything is allocated for the peer's data.

/// Size limits for a connection. Every limit is checked against the length a
/// peer *declares* before a byte of that payload is buffered, and buffers only
/// ever grow with the bytes that actually arrived.
///
/// The defaults suit a general-purpose library (the Autobahn suite sends 16 MiB
/// messages); a server facing the Internet should lower them to what its
/// application needs:
///
/// ```
/// use peregrine_proto::Limits;
/// let limits = Limits::default().max_message_size(64 * 1024).max_frame_size(64 * 1024);
/// assert_eq!(limits.message_size(), 64 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Limits {
    max_frame_size: usize,
    max_message_size: usize,
    max_header_size: usize,
}

impl Limits {
    /// Default largest frame payload: 16 MiB.
    pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 << 20;
    /// Default largest message (all fragments together, after decompression): 16 MiB.
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;
    /// Default largest opening-handshake header block: 8 KiB.
    pub const DEFAULT_MAX_HEADER_SIZE: usize = 8 << 10;

    /// A frame whose payload is longer fails the connection with 1009.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// A message whose total payload is longer fails the connection with 1009.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// An HTTP header block (request or response) longer than this is refused
    /// with 431 (server) or an error (client).
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.max_header_size = bytes;
        self
    }

    /// The frame size limit.
    #[must_use]
    pub fn frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// The message size limit.
    #[must_use]
    pub fn message_size(&self) -> usize {
        self.max_message_size
    }

    /// The handshake header block limit.
    #[must_use]
    pub fn header_size(&self) -> usize {
        self.max_header_size
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_size: Self::DEFAULT_MAX_FRAME_SIZE,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            max_header_size: Self::DEFAULT_MAX_HEADER_SIZE,
        }
    }
}
