//! Frame headers (RFC 6455 §5.2): decode and encode, at most 14 bytes.

use crate::error::ProtocolError;

/// The longest frame header: 2 bytes, 8 bytes of extended length, 4 of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload a control frame may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame opcode. Reserved opcodes are rejected when decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation = 0x0,
    /// 0x1: text.
    Text = 0x1,
    /// 0x2: binary.
    Binary = 0x2,
    /// 0x8: close.
    Close = 0x8,
    /// 0x9: ping.
    Ping = 0x9,
    /// 0xA: pong.
    Pong = 0xA,
}

impl OpCode {
    /// Whether this is a control opcode (close, ping, pong).
    #[must_use]
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }

    /// The opcode's name as Wireshark prints it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Continuation => "Continuation",
            Self::Text => "Text",
            Self::Binary => "Binary",
            Self::Close => "Connection Close",
            Self::Ping => "Ping",
            Self::Pong => "Pong",
        }
    }
}

impl TryFrom<u8> for OpCode {
    type Error = ProtocolError;
    fn try_from(value: u8) -> Result<Self, ProtocolError> {
        Ok(match value {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }
}

/// The RSV1 bit (used by permessage-deflate).
pub const RSV1: u8 = 0b100;
/// The RSV2 bit.
pub const RSV2: u8 = 0b010;
/// The RSV3 bit.
pub const RSV3: u8 = 0b001;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1-3 as the low three bits ([`RSV1`] | [`RSV2`] | [`RSV3`]).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, when the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// The payload length the frame declares.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Decodes a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header, and
    /// `Ok(Some((header, header_len)))` otherwise. Checks what the header alone
    /// can tell: reserved opcodes, the 64-bit length's top bit, control frames
    /// that are fragmented or over 125 bytes. Masking direction, RSV bits and
    /// size limits depend on the connection and are checked there.
    ///
    /// ```
    /// use peregrine_proto::frame::{FrameHeader, OpCode};
    /// let (header, len) = FrameHeader::decode(&[0x81, 0x05, b'H']).unwrap().unwrap();
    /// assert_eq!((header.opcode, header.fin, header.payload_len, len), (OpCode::Text, true, 5, 2));
    /// ```
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        let opcode = OpCode::try_from(b0 & 0x0f)?;
        let fin = b0 & 0x80 != 0;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut len) = match b1 & 0x7f {
            126 => {
                let Some(ext) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
            }
            127 => {
                let Some(ext) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut be = [0; 8];
                be.copy_from_slice(ext);
                let n = u64::from_be_bytes(be);
                if n >> 63 != 0 {
                    return Err(ProtocolError::InvalidLength);
                }
                (n, 10)
            }
            n => (u64::from(n), 2),
        };
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        }
        let mask = if masked {
            let Some(key) = buf.get(len..len + 4) else {
                return Ok(None);
            };
            len += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        let header = Self { fin, rsv: (b0 >> 4) & 0b111, opcode, mask, payload_len };
        Ok(Some((header, len)))
    }

    /// Encodes the header into `out` and returns its length, using the
    /// shortest length encoding.
    ///
    /// ```
    /// use peregrine_proto::frame::{FrameHeader, OpCode};
    /// let header = FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask: None, payload_len: 300 };
    /// let mut out = [0; 14];
    /// let len = header.encode(&mut out);
    /// assert_eq!(&out[..len], &[0x82, 126, 0x01, 0x2c]);
    /// ```
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0b111) << 4) | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = match self.payload_len {
            n @ 0..=125 => {
                out[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xffff => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        len
    }

    /// The encoded header length.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        let ext = match self.payload_len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        2 + ext + if self.mask.is_some() { 4 } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(header: FrameHeader) {
        let mut out = [0; MAX_HEADER_LEN];
        let len = header.encode(&mut out);
        assert_eq!(len, header.encoded_len());
        for partial in 0..len {
            assert_eq!(FrameHeader::decode(&out[..partial]), Ok(None), "partial {partial}");
        }
        assert_eq!(FrameHeader::decode(&out[..len]), Ok(Some((header, len))));
    }

    #[test]
    fn every_length_encoding_roundtrips() {
        for payload_len in [0, 1, 125, 126, 127, 0xffff, 0x10000, u64::MAX >> 1] {
            for mask in [None, Some([1, 2, 3, 4])] {
                for (opcode, fin, rsv) in [
                    (OpCode::Text, true, 0),
                    (OpCode::Continuation, false, RSV1 | RSV3),
                    (OpCode::Binary, false, RSV2),
                ] {
                    roundtrip(FrameHeader { fin, rsv, opcode, mask, payload_len });
                }
            }
        }
    }

    #[test]
    fn header_level_violations() {
        assert_eq!(FrameHeader::decode(&[0x83, 0]), Err(ProtocolError::ReservedOpcode(3)));
        assert_eq!(FrameHeader::decode(&[0x8b, 0]), Err(ProtocolError::ReservedOpcode(0xb)));
        assert_eq!(FrameHeader::decode(&[0x09, 0]), Err(ProtocolError::FragmentedControlFrame));
        assert_eq!(FrameHeader::decode(&[0x89, 126, 0, 126]), Err(ProtocolError::ControlFrameTooLong));
        assert_eq!(
            FrameHeader::decode(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::InvalidLength)
        );
    }
}
