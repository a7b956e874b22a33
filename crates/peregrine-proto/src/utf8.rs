//! Incremental UTF-8 validation that fails at the first invalid byte, even
//! when a code point is split across frames or reads.

use crate::error::ProtocolError;

/// Validates text that arrives in pieces. It keeps at most three bytes of an
/// unfinished code point between calls, and reports an error as soon as the
/// bytes seen so far cannot start valid UTF-8 (Autobahn 6.4.*).
///
/// ```
/// use peregrine_proto::utf8::Utf8Validator;
/// let mut v = Utf8Validator::default();
/// let euro = "€".as_bytes(); // e2 82 ac
/// v.feed(&euro[..1]).unwrap();
/// v.feed(&euro[1..]).unwrap();
/// v.finish().unwrap();
/// assert!(v.feed(&[0xed, 0xa0]).is_err()); // a surrogate fails on its second byte
/// ```
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    partial: [u8; 4],
    partial_len: u8,
}

impl Utf8Validator {
    /// Validates the next piece of text.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), ProtocolError> {
        if self.partial_len > 0 {
            let have = usize::from(self.partial_len);
            let need = sequence_len(self.partial[0]) - have;
            let take = need.min(data.len());
            self.partial[have..have + take].copy_from_slice(&data[..take]);
            let filled = have + take;
            match simdutf8::compat::from_utf8(&self.partial[..filled]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_none() && take < need => {
                    self.partial_len = filled as u8;
                    return Ok(());
                }
                Err(_) => return Err(ProtocolError::InvalidUtf8),
            }
            data = &data[take..];
        }
        match simdutf8::compat::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                // A valid prefix of a code point ends the piece: keep it.
                let rest = &data[e.valid_up_to()..];
                self.partial[..rest.len()].copy_from_slice(rest);
                self.partial_len = rest.len() as u8;
                Ok(())
            }
            Err(_) => Err(ProtocolError::InvalidUtf8),
        }
    }

    /// Ends the text: an unfinished code point is an error.
    pub fn finish(&mut self) -> Result<(), ProtocolError> {
        let unfinished = self.partial_len != 0;
        self.partial_len = 0;
        if unfinished { Err(ProtocolError::InvalidUtf8) } else { Ok(()) }
    }

    /// Forgets any unfinished code point.
    pub fn reset(&mut self) {
        self.partial_len = 0;
    }
}

/// Length of the sequence a lead byte starts. Only called on bytes that
/// `from_utf8` accepted as the start of an unfinished sequence.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Validates a whole buffer at once.
pub fn validate(data: &[u8]) -> Result<(), ProtocolError> {
    simdutf8::basic::from_utf8(data).map(drop).map_err(|_| ProtocolError::InvalidUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_bytewise(data: &[u8]) -> Result<(), usize> {
        let mut v = Utf8Validator::default();
        for (i, b) in data.iter().enumerate() {
            v.feed(std::slice::from_ref(b)).map_err(|_| i)?;
        }
        v.finish().map_err(|_| data.len())
    }

    #[test]
    fn accepts_valid_text_split_anywhere() {
        let text = "κόσμε, Hello-µ@ßöäüàá-UTF-8!! 𝄞 €".as_bytes();
        assert_eq!(feed_bytewise(text), Ok(()));
        for split in 0..text.len() {
            let mut v = Utf8Validator::default();
            v.feed(&text[..split]).unwrap();
            v.feed(&text[split..]).unwrap();
            v.finish().unwrap();
        }
    }

    #[test]
    fn fails_at_the_first_impossible_byte() {
        // Autobahn 6.4.1: U+110000 would follow; F4 90 can never be valid.
        assert_eq!(feed_bytewise(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80"), Err(12));
        // A surrogate half fails at its second byte.
        assert_eq!(feed_bytewise(b"ab\xed\xa0\x80"), Err(3));
        // An overlong encoding fails at its first byte.
        assert_eq!(feed_bytewise(b"\xc0\xaf"), Err(0));
    }

    #[test]
    fn unfinished_code_point_fails_at_the_end() {
        assert_eq!(feed_bytewise(b"ok\xe2\x82"), Err(4));
    }
}
