//! The realtime protocol's frame decoders (`peregrine-wire`) on arbitrary bytes, in every
//! encoding (JSON, MessagePack, Protobuf), in both directions.
//!
//! Invariants:
//! - decoding never panics and returns a `WireError` for what it cannot read;
//! - what decodes re-encodes to a frame that decodes to the same messages (payloads, JSON
//!   text or bytes, come back byte for byte).

#![no_main]

use libfuzzer_sys::fuzz_target;
use peregrine_wire::{
    Encoding, decode_commands, decode_server_messages, encode_commands, encode_server_messages,
};

fuzz_target!(|data: &[u8]| {
    for encoding in Encoding::ALL {
        if let Ok(commands) = decode_commands(data, encoding) {
            let again = decode_commands(&encode_commands(&commands, encoding), encoding);
            assert_eq!(again.as_ref(), Ok(&commands), "{encoding:?} commands re-encode");
        }
        if let Ok(messages) = decode_server_messages(data, encoding) {
            let again = decode_server_messages(&encode_server_messages(&messages, encoding), encoding);
            assert_eq!(again.as_ref(), Ok(&messages), "{encoding:?} server messages re-encode");
        }
    }
});
