//! [`Payload`]: the data of a publication, opaque to the server.
//!
//! A payload is kept and delivered as the publisher's exact bytes: the server checks a JSON
//! payload once (valid JSON, nesting bounded by `serde_json`'s limit of 128) and never
//! parses it into a tree or writes it out again, so keys keep their order and numbers their
//! digits. On the wire:
//!
//! | payload | JSON (`peregrine.json`) | MessagePack |
//! |---|---|---|
//! | JSON | the value itself, byte for byte | bin: the JSON text |
//! | binary | a base64 string, and `"binary": true` beside `data` | bin: the bytes, and `binary: true` |

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::{DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

pub(crate) use crate::command::is_false;

/// A publication's data: a JSON value kept as its text, or opaque bytes. Cloning is cheap
/// (shared), so one payload serves every subscriber and the history.
///
/// ```
/// use peregrine_wire::Payload;
/// let p = Payload::json_text(r#"{"b":1,"a":12345678901234567890123}"#).unwrap();
/// assert_eq!(p.as_bytes(), br#"{"b":1,"a":12345678901234567890123}"#); // untouched
/// assert!(Payload::json_text("{not json").is_err());
/// let b = Payload::binary(vec![0u8, 255]);
/// assert_eq!((b.as_bytes(), b.is_binary()), (&[0u8, 255][..], true));
/// assert_eq!(Payload::from(serde_json::json!({"n": 1})).json::<serde_json::Value>().unwrap()["n"], 1);
/// ```
#[derive(Clone)]
pub enum Payload {
    /// A JSON value, as the publisher wrote it (without surrounding whitespace).
    Json(Arc<RawValue>),
    /// Opaque bytes.
    Binary(Bytes),
}

/// Why a payload could not be read as asked.
#[derive(Debug)]
pub enum PayloadError {
    /// The payload is binary, not JSON.
    Binary,
    /// The JSON does not fit the type asked for, or is not JSON.
    Json(serde_json::Error),
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::Binary => f.write_str("the payload is binary, not JSON"),
            PayloadError::Json(e) => write!(f, "the payload is not the JSON expected: {e}"),
        }
    }
}

impl std::error::Error for PayloadError {}

impl Payload {
    /// A JSON payload from its text, checked to be one valid JSON value nested at most
    /// [`MAX_JSON_DEPTH`] deep.
    pub fn json_text(text: impl Into<String>) -> Result<Payload, serde_json::Error> {
        let raw = RawValue::from_string(text.into())?;
        check_depth(&raw)?;
        Ok(Payload::Json(Arc::from(raw)))
    }

    /// A JSON payload from its text as bytes (UTF-8), checked like [`json_text`](Payload::json_text).
    pub fn json_slice(text: &[u8]) -> Result<Payload, serde_json::Error> {
        let raw = serde_json::from_slice::<Box<RawValue>>(text)?;
        check_depth(&raw)?;
        Ok(Payload::Json(Arc::from(raw)))
    }

    /// A JSON payload holding `value` serialized.
    pub fn json_of<T: Serialize + ?Sized>(value: &T) -> Result<Payload, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(|raw| Payload::Json(Arc::from(raw)))
    }

    /// A binary payload.
    pub fn binary(bytes: impl Into<Bytes>) -> Payload {
        Payload::Binary(bytes.into())
    }

    /// The payload's bytes: the JSON text, or the binary data.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Json(raw) => raw.get().as_bytes(),
            Payload::Binary(bytes) => bytes,
        }
    }

    /// The JSON text, when the payload is JSON.
    pub fn as_json_text(&self) -> Option<&str> {
        match self {
            Payload::Json(raw) => Some(raw.get()),
            Payload::Binary(_) => None,
        }
    }

    /// Whether the payload is binary.
    pub fn is_binary(&self) -> bool {
        matches!(self, Payload::Binary(_))
    }

    /// The size of the payload in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload has no bytes (only binary payloads can be empty).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The JSON payload read as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        match self {
            Payload::Json(raw) => serde_json::from_str(raw.get()).map_err(PayloadError::Json),
            Payload::Binary(_) => Err(PayloadError::Binary),
        }
    }

    /// The payload of a JSON document's `data` field and the `binary` flag beside it (for
    /// bodies that carry a payload, like the HTTP API's): the value itself, or with
    /// `binary` a base64 string of the bytes.
    pub fn from_json_data(data: Box<RawValue>, binary: bool) -> Result<Payload, String> {
        Payload::from_wire(WireData::Json(data), binary)
    }

    /// The payload from its wire form: `data` as read, and the `binary` flag beside it.
    pub(crate) fn from_wire(data: WireData, binary: bool) -> Result<Payload, String> {
        match (data, binary) {
            (WireData::Json(raw), false) => {
                check_depth(&raw).map_err(|e| e.to_string())?;
                Ok(Payload::Json(Arc::from(raw)))
            }
            (WireData::Json(raw), true) => {
                let text: String = serde_json::from_str(raw.get())
                    .map_err(|_| "with `binary: true`, `data` must be a base64 string".to_owned())?;
                let bytes = BASE64.decode(text).map_err(|e| format!("`data` is not valid base64: {e}"))?;
                Ok(Payload::Binary(bytes.into()))
            }
            (WireData::Bytes(bytes), binary) => Payload::from_bytes(bytes.into(), binary),
        }
    }

    /// The payload of a binary encoding's `data` bytes and `binary` flag: the bytes as they
    /// are, or without the flag their JSON text, checked.
    pub(crate) fn from_bytes(bytes: Bytes, binary: bool) -> Result<Payload, String> {
        if binary {
            return Ok(Payload::Binary(bytes));
        }
        Payload::json_slice(&bytes).map_err(|e| {
            format!("`data` is not valid JSON ({e}): send `binary: true` with bytes that are not JSON")
        })
    }
}

impl Default for Payload {
    /// JSON `null`.
    fn default() -> Payload {
        Payload::json_text("null").unwrap_or_else(|_| Payload::Binary(Bytes::new()))
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.is_binary() == other.is_binary() && self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Json(raw) => write!(f, "Json({})", raw.get()),
            Payload::Binary(bytes) => write!(f, "Binary({} bytes)", bytes.len()),
        }
    }
}

impl fmt::Display for Payload {
    /// The JSON text, or `<N bytes>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Json(raw) => f.write_str(raw.get()),
            Payload::Binary(bytes) => write!(f, "<{} bytes>", bytes.len()),
        }
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Payload {
        // A `Value` always serializes (its map keys are strings).
        Payload::json_of(&value).unwrap_or_default()
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Payload {
        Payload::Binary(bytes)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Payload {
        Payload::Binary(bytes.into())
    }
}

/// `data` as written: in JSON the value itself (or base64 for binary), in MessagePack bin.
impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Payload::Json(raw) if serializer.is_human_readable() => raw.serialize(serializer),
            Payload::Binary(bytes) if serializer.is_human_readable() => {
                serializer.serialize_str(&BASE64.encode(bytes))
            }
            _ => serializer.serialize_bytes(self.as_bytes()),
        }
    }
}

/// How deep a JSON payload may nest arrays and objects (as `serde_json` bounds whole
/// messages): the server never parses a payload into a tree, but its subscribers do.
pub const MAX_JSON_DEPTH: usize = 128;

/// Fails when `raw` nests deeper than [`MAX_JSON_DEPTH`]: one pass over the text, skipping
/// strings (`serde_json` skips a raw value without counting its depth).
fn check_depth(raw: &RawValue) -> Result<(), serde_json::Error> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in raw.get().as_bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    use serde::de::Error as _;
                    return Err(serde_json::Error::custom(format!(
                        "the payload nests deeper than {MAX_JSON_DEPTH} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// `data` as read, before the `binary` flag beside it says what it is.
#[derive(Debug)]
pub(crate) enum WireData {
    /// From JSON: the value's text.
    Json(Box<RawValue>),
    /// From MessagePack: a bin value.
    Bytes(Vec<u8>),
}

impl<'de> Deserialize<'de> for WireData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<WireData, D::Error> {
        if deserializer.is_human_readable() {
            return Box::<RawValue>::deserialize(deserializer).map(WireData::Json);
        }
        struct BytesVisitor;
        impl Visitor<'_> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes (a bin value: the JSON text, or any bytes with `binary: true`)")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        deserializer.deserialize_byte_buf(BytesVisitor).map(WireData::Bytes)
    }
}

/// Reads `data` and `binary` into a payload, or fails with a message naming the problem.
pub(crate) fn payload_from<E: serde::de::Error>(data: WireData, binary: bool) -> Result<Payload, E> {
    Payload::from_wire(data, binary).map_err(E::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_payload_keeps_its_bytes_and_binary_goes_as_base64_in_json() {
        let json = Payload::json_text(" {\"b\":1,\"a\":1.10} ").unwrap();
        assert_eq!(serde_json::to_string(&json).unwrap(), r#"{"b":1,"a":1.10}"#);
        let binary = Payload::binary(vec![0, 1, 254, 255]);
        assert_eq!(serde_json::to_string(&binary).unwrap(), r#""AAH+/w==""#);
    }

    #[test]
    fn wire_data_and_flag_make_the_payload_or_a_clear_error() {
        let raw = |s: &str| WireData::Json(RawValue::from_string(s.into()).unwrap());
        assert_eq!(Payload::from_wire(raw(r#""AAH+/w==""#), true).unwrap().as_bytes(), [0, 1, 254, 255]);
        assert!(Payload::from_wire(raw("12"), true).unwrap_err().contains("base64 string"));
        assert!(Payload::from_wire(raw(r#""!!""#), true).unwrap_err().contains("base64"));
        assert!(
            Payload::from_wire(WireData::Bytes(b"{x".to_vec()), false)
                .unwrap_err()
                .contains("not valid JSON")
        );
        let bytes = Payload::from_wire(WireData::Bytes(b"{\"a\":1}".to_vec()), false).unwrap();
        assert_eq!(bytes.as_json_text(), Some(r#"{"a":1}"#));
    }

    #[test]
    fn nesting_is_bounded_outside_strings_only() {
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(Payload::json_text(nested(MAX_JSON_DEPTH)).is_ok());
        let err = Payload::json_text(nested(MAX_JSON_DEPTH + 1)).unwrap_err();
        assert!(err.to_string().contains("deeper than 128"), "{err}");
        let in_string = format!(r#"{{"s":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(Payload::json_text(in_string).is_ok());
    }
}
