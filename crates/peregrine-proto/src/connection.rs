//! The connection state machine: bytes in, events and bytes out.
//!
//! [`Connection`] does no I/O. The caller feeds received bytes with
//! [`Connection::receive`] (or reads straight into [`Connection::read_buffer`]),
//! takes events with [`Connection::next_event`], sends with the `send_*`
//! methods, and writes out whatever [`Connection::output`] holds. It answers
//! pings, replies to a close, and fails the connection with the right close
//! code on any violation, so every driver built on it is conformant.

use bytes::{Buf, Bytes, BytesMut};

use crate::close::{CloseCode, CloseFrame};
use crate::error::{ProtocolError, SendError};
use crate::extension::{Deflate, DeflateParams};
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode, RSV1};
use crate::limits::Limits;
use crate::mask::apply_mask;
use crate::message::{DataKind, Message, Utf8Bytes};
use crate::output::Output;
use crate::utf8::Utf8Validator;

/// Which end of the connection we are. Clients mask what they send and
/// expect unmasked frames; servers the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that opened the connection.
    Client,
    /// The end that accepted it.
    Server,
}

/// What [`Connection::next_event`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole message, or a control frame.
    Message(Message),
    /// One data frame, when message assembly is off (see
    /// [`Connection::set_assemble_messages`]).
    Fragment(Fragment),
}

/// A data frame delivered on its own, for streaming large messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// Text or binary, as the first frame of the message said.
    pub kind: DataKind,
    /// This frame's payload. Text is validated, but a fragment may end in the
    /// middle of a code point.
    pub payload: Bytes,
    /// The first frame of its message.
    pub first: bool,
    /// The last frame of its message.
    pub fin: bool,
}

#[derive(Debug)]
struct IncomingFrame {
    header: FrameHeader,
    /// Payload bytes already unmasked (and validated, for text).
    processed: usize,
    text: bool,
}

/// A WebSocket connection after the opening handshake.
///
/// ```
/// use bytes::Buf;
/// use peregrine_proto::{Connection, Event, Message, Role};
///
/// let mut server = Connection::new(Role::Server);
/// // A masked "Hello" from a client (RFC 6455 §5.7).
/// server.receive(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// let Some(Ok(Event::Message(Message::Text(text)))) = server.next_event() else { panic!() };
/// assert_eq!(text.as_str(), "Hello");
///
/// server.send(Message::text("Hi")).unwrap();
/// assert_eq!(server.output().chunk(), &[0x81, 0x02, b'H', b'i']);
/// ```
#[derive(Debug)]
pub struct Connection {
    role: Role,
    limits: Limits,
    /// RSV bits that negotiated extensions define.
    allowed_rsv: u8,
    /// permessage-deflate, when negotiated (boxed: most connections are
    /// uncompressed and should stay small).
    deflate: Option<Box<Deflate>>,
    /// The message being received is compressed (RSV1 on its first frame).
    receiving_compressed: bool,
    /// Inflated bytes of the message being streamed as fragments.
    inflated_len: usize,
    /// The fragmented message being sent is compressed.
    sending_compressed: bool,
    assemble: bool,
    /// Whether the message being received is being assembled: fixed at its
    /// first frame, so changing the setting takes effect at the next message.
    assembling_current: bool,
    incoming: BytesMut,
    frame: Option<IncomingFrame>,
    /// The kind of the fragmented message being received, if any.
    receiving: Option<DataKind>,
    received_len: u64,
    assembled: BytesMut,
    utf8: Utf8Validator,
    output: Output,
    /// The kind of the fragmented message being sent, if any.
    sending: Option<DataKind>,
    close_sent: bool,
    close_received: Option<Option<CloseFrame>>,
    failure: Option<ProtocolError>,
    eof_received: bool,
    close_transport: bool,
}

impl Connection {
    /// A connection with default [`Limits`].
    #[must_use]
    pub fn new(role: Role) -> Self {
        Self::with_limits(role, Limits::default())
    }

    /// A connection with the given limits.
    #[must_use]
    pub fn with_limits(role: Role, limits: Limits) -> Self {
        Self {
            role,
            limits,
            allowed_rsv: 0,
            deflate: None,
            receiving_compressed: false,
            inflated_len: 0,
            sending_compressed: false,
            assemble: true,
            assembling_current: true,
            incoming: BytesMut::new(),
            frame: None,
            receiving: None,
            received_len: 0,
            assembled: BytesMut::new(),
            utf8: Utf8Validator::default(),
            output: Output::default(),
            sending: None,
            close_sent: false,
            close_received: None,
            failure: None,
            eof_received: false,
            close_transport: false,
        }
    }

    /// A connection with permessage-deflate negotiated (see
    /// [`DeflateConfig`](crate::extension::DeflateConfig)).
    #[must_use]
    pub fn with_deflate(role: Role, limits: Limits, params: DeflateParams) -> Self {
        let mut conn = Self::with_limits(role, limits);
        conn.deflate = Some(Box::new(Deflate::new(role, params)));
        conn.allowed_rsv = RSV1;
        conn
    }

    /// Whether permessage-deflate is in force.
    #[must_use]
    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// Our role.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// With `false`, data frames are delivered one by one as
    /// [`Event::Fragment`] instead of being assembled into messages, so a large
    /// message never has to be held whole. Limits still apply to the total.
    /// A message already being received keeps the mode it started with.
    pub fn set_assemble_messages(&mut self, assemble: bool) {
        self.assemble = assemble;
    }

    // ---- input ------------------------------------------------------------

    /// Appends received bytes (copying them). Drivers that can read straight
    /// into [`Connection::read_buffer`] avoid the copy.
    pub fn receive(&mut self, data: &[u8]) {
        if self.accepts_input() {
            self.incoming.extend_from_slice(data);
        }
    }

    /// The buffer received bytes go into. Append to it, then call
    /// [`Connection::next_event`] until it returns `None`.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        &mut self.incoming
    }

    /// How many more bytes would complete the frame being received (at least
    /// a header's worth when between frames). Drivers use it to size reads; it
    /// is a hint, never a reason to allocate more than what arrives.
    #[must_use]
    pub fn bytes_wanted(&self) -> usize {
        match &self.frame {
            Some(f) => (f.header.payload_len as usize).saturating_sub(self.incoming.len()),
            None => MAX_HEADER_LEN.saturating_sub(self.incoming.len()),
        }
    }

    /// The peer closed its side of the TCP connection.
    pub fn receive_eof(&mut self) {
        self.eof_received = true;
        self.close_transport = true;
    }

    /// Whether new bytes are taken. After the peer's close frame or a failure,
    /// input is discarded (RFC 6455 §7.1.7); after EOF none can arrive.
    fn accepts_input(&self) -> bool {
        self.decodes_input() && !self.eof_received
    }

    /// Whether buffered bytes are still decoded (also after EOF: frames that
    /// arrived before it are delivered).
    fn decodes_input(&self) -> bool {
        self.failure.is_none() && self.close_received.is_none()
    }

    /// Decodes the next event from the bytes received so far.
    ///
    /// `None` means more bytes are needed (or the connection no longer reads).
    /// On `Some(Err(_))` the connection has failed: a close frame with the
    /// error's close code is queued in [`Connection::output`] and every later
    /// call returns `None`.
    pub fn next_event(&mut self) -> Option<Result<Event, ProtocolError>> {
        if !self.decodes_input() {
            self.incoming.clear();
            return None;
        }
        match self.decode() {
            Ok(event) => event.map(Ok),
            Err(error) => {
                self.fail(error.clone());
                Some(Err(error))
            }
        }
    }

    fn decode(&mut self) -> Result<Option<Event>, ProtocolError> {
        loop {
            if self.frame.is_none() {
                let Some((header, len)) = FrameHeader::decode(&self.incoming)? else {
                    return Ok(None);
                };
                let text = self.check_header(&header)?;
                self.incoming.advance(len);
                self.frame = Some(IncomingFrame { header, processed: 0, text });
            }
            let Some(frame) = self.frame.as_mut() else {
                return Ok(None);
            };
            // Fits in usize: check_header compared it with max_frame_size.
            let total = frame.header.payload_len as usize;
            let available = self.incoming.len().min(total);
            if available > frame.processed {
                // Unmask and validate what arrived, so invalid text fails at
                // its first bad byte even in a frame that is still arriving.
                let fresh = &mut self.incoming[frame.processed..available];
                if let Some(key) = frame.header.mask {
                    apply_mask(fresh, key, frame.processed);
                }
                if frame.text {
                    self.utf8.feed(fresh)?;
                }
                frame.processed = available;
            }
            if available < total {
                return Ok(None);
            }
            let header = frame.header;
            self.frame = None;
            let payload = self.incoming.split_to(total);
            if let Some(event) = self.on_frame(header, payload)? {
                return Ok(Some(event));
            }
        }
    }

    /// Checks what depends on the connection's state; returns whether the
    /// payload is text to validate.
    fn check_header(&self, header: &FrameHeader) -> Result<bool, ProtocolError> {
        let first_data_frame = matches!(header.opcode, OpCode::Text | OpCode::Binary);
        // RSV1 marks a compressed message: only on its first frame (RFC 7692 §6).
        let allowed = if first_data_frame { self.allowed_rsv } else { 0 };
        if header.rsv & !allowed != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        let limit = self.limits.frame_size();
        if header.payload_len > limit as u64 {
            return Err(ProtocolError::FrameTooLarge { size: header.payload_len, limit });
        }
        let kind = match (header.opcode, self.receiving) {
            (OpCode::Continuation, Some(kind)) => kind,
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            (OpCode::Text, None) => DataKind::Text,
            (OpCode::Binary, None) => DataKind::Binary,
            _ => return Ok(false),
        };
        let size = self.received_len_for(header.opcode) + header.payload_len;
        let limit = self.limits.message_size();
        if size > limit as u64 {
            return Err(ProtocolError::MessageTooLarge { size, limit });
        }
        let compressed = if first_data_frame { header.rsv & RSV1 != 0 } else { self.receiving_compressed };
        // Compressed text is validated after inflating.
        Ok(kind == DataKind::Text && !compressed)
    }

    fn received_len_for(&self, opcode: OpCode) -> u64 {
        if opcode == OpCode::Continuation { self.received_len } else { 0 }
    }

    fn on_frame(&mut self, header: FrameHeader, payload: BytesMut) -> Result<Option<Event>, ProtocolError> {
        let kind = match header.opcode {
            OpCode::Ping => {
                let payload = payload.freeze();
                if !self.close_sent {
                    self.write_frame(OpCode::Pong, true, payload.clone());
                }
                return Ok(Some(Event::Message(Message::Ping(payload))));
            }
            OpCode::Pong => return Ok(Some(Event::Message(Message::Pong(payload.freeze())))),
            OpCode::Close => return self.on_close(payload.freeze()).map(Some),
            OpCode::Text => DataKind::Text,
            OpCode::Binary => DataKind::Binary,
            OpCode::Continuation => self.receiving.unwrap_or(DataKind::Binary),
        };
        let first = header.opcode != OpCode::Continuation;
        if first {
            self.assembling_current = self.assemble;
            self.receiving_compressed = header.rsv & RSV1 != 0;
        }
        self.received_len = self.received_len_for(header.opcode) + payload.len() as u64;
        self.receiving = if header.fin { None } else { Some(kind) };
        if self.receiving_compressed {
            return self.on_compressed_frame(kind, first, header.fin, &payload);
        }
        if header.fin && kind == DataKind::Text {
            self.utf8.finish()?;
        }
        if !self.assembling_current {
            let payload = payload.freeze();
            return Ok(Some(Event::Fragment(Fragment { kind, payload, first, fin: header.fin })));
        }
        let payload = match (first, header.fin) {
            (true, true) => payload,
            (true, false) => {
                self.assembled = payload;
                return Ok(None);
            }
            (false, fin) => {
                self.assembled.extend_from_slice(&payload);
                if !fin {
                    return Ok(None);
                }
                std::mem::take(&mut self.assembled)
            }
        };
        let payload = payload.freeze();
        Ok(Some(Event::Message(match kind {
            DataKind::Text => Message::Text(Utf8Bytes::from_validated(payload)),
            DataKind::Binary => Message::Binary(payload),
        })))
    }

    /// Inflates a frame of a compressed message, into the message being
    /// assembled (or a fragment of its own), validating text as it inflates.
    fn on_compressed_frame(
        &mut self,
        kind: DataKind,
        first: bool,
        fin: bool,
        payload: &[u8],
    ) -> Result<Option<Event>, ProtocolError> {
        let Some(deflate) = self.deflate.as_mut() else { return Err(ProtocolError::ReservedBits) };
        if first && self.assembling_current {
            self.assembled.clear();
        }
        let mut fragment = BytesMut::new();
        // The limit applies to the whole inflated message.
        let (out, limit) = if self.assembling_current {
            (&mut self.assembled, self.limits.message_size())
        } else {
            (&mut fragment, self.limits.message_size().saturating_sub(self.inflated_len))
        };
        let start = out.len();
        deflate.decompress(payload, fin, out, limit)?;
        self.inflated_len += out.len() - start;
        if kind == DataKind::Text {
            self.utf8.feed(&out[start..])?;
            if fin {
                self.utf8.finish()?;
            }
        }
        if fin {
            self.inflated_len = 0;
        }
        if !self.assembling_current {
            return Ok(Some(Event::Fragment(Fragment { kind, payload: fragment.freeze(), first, fin })));
        }
        if !fin {
            return Ok(None);
        }
        let payload = std::mem::take(&mut self.assembled).freeze();
        Ok(Some(Event::Message(match kind {
            DataKind::Text => Message::Text(Utf8Bytes::from_validated(payload)),
            DataKind::Binary => Message::Binary(payload),
        })))
    }

    fn on_close(&mut self, payload: Bytes) -> Result<Event, ProtocolError> {
        let frame = CloseFrame::parse(payload)?;
        if !self.close_sent {
            // Echo the code (RFC 6455 §5.5.1); an empty close gets an empty one.
            let reply = frame.as_ref().map(|f| CloseFrame { code: f.code, reason: Utf8Bytes::default() });
            self.write_close(reply.as_ref());
        }
        self.close_received = Some(frame.clone());
        // The server closes TCP first, so the client does not hold TIME_WAIT.
        if self.role == Role::Server {
            self.close_transport = true;
        }
        self.incoming.clear();
        Ok(Event::Message(Message::Close(frame)))
    }

    /// Fails the connection (RFC 6455 §7.1.7): send a close frame with the
    /// error's code, stop reading, and (as the server) close TCP at once; a
    /// client waits for the server to close it.
    fn fail(&mut self, error: ProtocolError) {
        if !self.close_sent {
            let reason = error.to_string();
            self.write_close(Some(&CloseFrame::new(error.close_code(), &reason)));
        }
        if self.role == Role::Server {
            self.close_transport = true;
        }
        self.failure = Some(error);
        self.frame = None;
        self.receiving = None;
        self.incoming = BytesMut::new();
        self.assembled = BytesMut::new();
    }

    // ---- state ------------------------------------------------------------

    /// Neither side has sent a close frame.
    #[must_use]
    pub fn is_open(&self) -> bool {
        !self.close_sent && self.close_received.is_none() && self.failure.is_none() && !self.eof_received
    }

    /// Both close frames were exchanged: the close handshake is complete.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.close_sent && self.close_received.is_some()
    }

    /// We sent a close frame (ours or a reply).
    #[must_use]
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// The peer's close frame, once received (`Some(None)`: it had no code).
    #[must_use]
    pub fn close_received(&self) -> Option<&Option<CloseFrame>> {
        self.close_received.as_ref()
    }

    /// The violation that failed the connection, if any.
    #[must_use]
    pub fn failure(&self) -> Option<&ProtocolError> {
        self.failure.as_ref()
    }

    /// Whether the peer closed TCP.
    #[must_use]
    pub fn eof_received(&self) -> bool {
        self.eof_received
    }

    /// The driver should write out what is pending and then close the TCP
    /// connection: the server after the close handshake or a failure, either
    /// side after the peer's EOF. A client that has finished the handshake
    /// instead waits (with a timeout) for the server to close.
    #[must_use]
    pub fn should_close_transport(&self) -> bool {
        self.close_transport
    }

    /// The code to report for how the connection ended, once it has: the
    /// peer's code, 1005 for a close without one, 1006 when TCP dropped
    /// without a close frame.
    #[must_use]
    pub fn close_code(&self) -> Option<CloseCode> {
        match (&self.close_received, &self.failure) {
            (Some(Some(frame)), _) => Some(frame.code),
            (Some(None), _) => Some(CloseCode::NO_STATUS),
            (None, Some(error)) => Some(error.close_code()),
            (None, None) if self.eof_received => Some(CloseCode::ABNORMAL),
            _ => None,
        }
    }

    // ---- output -----------------------------------------------------------

    /// The bytes waiting to be written. Write them out (`chunks_vectored`
    /// gives them all at once) and `advance` by what was written.
    pub fn output(&mut self) -> &mut Output {
        &mut self.output
    }

    /// Frees the read and write buffers when they hold nothing, so an idle
    /// connection costs no buffer memory. Drivers call it when a connection has
    /// been idle for a while; calling it on a busy one only costs a reallocation.
    pub fn release_idle_buffers(&mut self) {
        if self.incoming.is_empty() && self.frame.is_none() {
            self.incoming = BytesMut::new();
        }
        if self.receiving.is_none() {
            self.assembled = BytesMut::new();
        }
        self.output.release_if_empty();
    }

    /// Bytes of buffer capacity held, for memory accounting.
    #[must_use]
    pub fn buffered_capacity(&self) -> usize {
        self.incoming.capacity() + self.assembled.capacity() + self.output.capacity()
    }

    /// Queues a message. Text and binary fail with [`SendError::Closed`] once
    /// a close frame was sent; a `Close` message starts the close handshake.
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        match message {
            Message::Text(text) => self.send_data(OpCode::Text, text.into_bytes(), true),
            Message::Binary(data) => self.send_data(OpCode::Binary, data, true),
            Message::Ping(data) => self.send_control(OpCode::Ping, data),
            Message::Pong(data) => self.send_control(OpCode::Pong, data),
            Message::Close(None) => self.close_with(None),
            Message::Close(Some(frame)) => self.close_with(Some(frame)),
        }
    }

    /// Queues one frame of a message sent in pieces: the first call gives the
    /// kind, later ones continue it, and `fin` ends it. Data messages cannot be
    /// sent with [`Connection::send`] while one is unfinished.
    pub fn send_fragment(&mut self, kind: DataKind, payload: Bytes, fin: bool) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        let opcode = match (self.sending, kind) {
            (None, DataKind::Text) => OpCode::Text,
            (None, DataKind::Binary) => OpCode::Binary,
            (Some(sending), kind) if sending == kind => OpCode::Continuation,
            (Some(_), _) => return Err(SendError::FragmentationState),
        };
        self.sending = if fin { None } else { Some(kind) };
        if opcode != OpCode::Continuation {
            // The whole size is unknown: compress any message sent in pieces.
            self.sending_compressed = self.deflate.as_ref().is_some_and(|d| d.can_compress());
        }
        match self.deflate.as_mut() {
            Some(deflate) if self.sending_compressed => {
                let mut compressed = Vec::new();
                deflate.compress(&payload, fin, &mut compressed);
                let rsv = if opcode == OpCode::Continuation { 0 } else { RSV1 };
                self.write_frame_rsv(opcode, fin, rsv, compressed.into());
            }
            _ => self.write_frame(opcode, fin, payload),
        }
        Ok(())
    }

    /// Starts the close handshake with a code and a reason (cut to 123 bytes).
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.close_with(Some(CloseFrame::new(code, reason)))
    }

    fn close_with(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        if let Some(frame) = &frame {
            if !frame.code.is_sendable() {
                return Err(SendError::InvalidCloseCode(frame.code.as_u16()));
            }
            if frame.reason.len() > crate::close::MAX_REASON_LEN {
                return Err(SendError::ControlFrameTooLong);
            }
        }
        if !self.close_sent {
            self.write_close(frame.as_ref());
        }
        Ok(())
    }

    fn send_data(&mut self, opcode: OpCode, payload: Bytes, may_compress: bool) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        if self.sending.is_some() {
            return Err(SendError::FragmentationState);
        }
        match self.deflate.as_mut() {
            Some(deflate) if may_compress && deflate.wants_to_compress(payload.len()) => {
                let mut compressed = Vec::new();
                deflate.compress(&payload, true, &mut compressed);
                self.write_frame_rsv(opcode, true, RSV1, compressed.into());
            }
            _ => self.write_frame(opcode, true, payload),
        }
        Ok(())
    }

    /// Queues a text or binary message without compressing it, even when
    /// permessage-deflate is in force (for data that is already compressed,
    /// such as images, or too random to shrink). Other messages are sent as
    /// by [`Connection::send`].
    pub fn send_uncompressed(&mut self, message: Message) -> Result<(), SendError> {
        match message {
            Message::Text(text) => self.send_data(OpCode::Text, text.into_bytes(), false),
            Message::Binary(data) => self.send_data(OpCode::Binary, data, false),
            other => self.send(other),
        }
    }

    fn send_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlFrameTooLong);
        }
        self.write_frame(opcode, true, payload);
        Ok(())
    }

    fn write_close(&mut self, frame: Option<&CloseFrame>) {
        let mut payload = BytesMut::new();
        if let Some(frame) = frame {
            frame.encode(&mut payload);
        }
        self.close_sent = true;
        self.write_frame(OpCode::Close, true, payload.freeze());
    }

    fn write_frame(&mut self, opcode: OpCode, fin: bool, payload: Bytes) {
        self.write_frame_rsv(opcode, fin, 0, payload);
    }

    fn write_frame_rsv(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: Bytes) {
        let mask = match self.role {
            Role::Client => Some(crate::mask_key::next()),
            Role::Server => None,
        };
        let header = FrameHeader { fin, rsv, opcode, mask, payload_len: payload.len() as u64 };
        let mut head = [0; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        match mask {
            None => {
                self.output.push_slice(&head[..head_len]);
                self.output.push_bytes(payload);
            }
            Some(key) => {
                // Masking needs a private copy anyway: write it in place.
                let total = head_len + payload.len();
                let tail = self.output.tail_mut(total);
                tail.extend_from_slice(&head[..head_len]);
                let start = tail.len();
                tail.extend_from_slice(&payload);
                apply_mask(&mut tail[start..], key, 0);
                self.output.commit_tail(total);
            }
        }
    }
}
