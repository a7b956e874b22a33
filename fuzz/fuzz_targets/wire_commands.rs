//! Structure-aware fuzzing of command decoding (`peregrine-wire`): a batch of commands of
//! every type built with `arbitrary` (see `peregrine_fuzz::commands`), encoded in each
//! encoding (JSON, MessagePack, Protobuf), then mutated at byte level and decoded again.
//! `wire_decode` starts from raw bytes and spends most of its time on input that is not a
//! command at all; this target starts from valid frames, so the decoders' deep paths
//! (`connect.subs`, `since` positions, payloads, idempotency keys) are reached at once.
//!
//! Invariants:
//! - what the encoder writes decodes to exactly the commands encoded (an empty batch is
//!   refused with `WireError::Empty`);
//! - a mutated frame decodes or is refused with a `WireError`, never a panic; what decodes
//!   re-encodes to a frame that decodes to the same commands.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use peregrine_fuzz::commands::{CommandSpec, Ids, Literal};
use peregrine_wire::{Encoding, MAX_BATCH, WireError, decode_commands_bounded, encode_commands};

/// A byte-level edit of an encoded frame; positions wrap around the frame's length.
#[derive(Debug, Arbitrary)]
enum Mutation {
    Flip {
        at: u16,
        bit: u8,
    },
    Set {
        at: u16,
        byte: u8,
    },
    Insert {
        at: u16,
        bytes: Vec<u8>,
    },
    Remove {
        at: u16,
        len: u8,
    },
    Truncate {
        at: u16,
    },
    /// Copies `len` bytes from `from` to `at` (a field repeated, a map entry duplicated).
    Copy {
        from: u16,
        at: u16,
        len: u8,
    },
}

impl Mutation {
    fn apply(&self, frame: &mut Vec<u8>) {
        let n = frame.len();
        let pos = |at: u16| if n == 0 { 0 } else { usize::from(at) % (n + 1) };
        match *self {
            Mutation::Flip { at, bit } if n > 0 => frame[usize::from(at) % n] ^= 1 << (bit % 8),
            Mutation::Set { at, byte } if n > 0 => frame[usize::from(at) % n] = byte,
            Mutation::Insert { at, ref bytes } => {
                let at = pos(at);
                frame.splice(at..at, bytes.iter().copied());
            }
            Mutation::Remove { at, len } => {
                let at = pos(at);
                frame.drain(at..(at + usize::from(len)).min(n));
            }
            Mutation::Truncate { at } => frame.truncate(pos(at)),
            Mutation::Copy { from, at, len } => {
                let from = pos(from);
                let piece = frame[from..(from + usize::from(len)).min(n)].to_vec();
                let at = pos(at);
                frame.splice(at..at, piece);
            }
            _ => {}
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    commands: Vec<CommandSpec>,
    mutations: Vec<Mutation>,
}

fuzz_target!(|input: Input| {
    let mut ids = Ids::default();
    let commands: Vec<_> = input.commands.iter().map(|c| c.build(&mut ids, &mut Literal)).collect();
    for encoding in Encoding::ALL {
        let mut frame = encode_commands(&commands, encoding);
        let decoded = decode_commands_bounded(&frame, encoding, usize::MAX);
        if commands.is_empty() {
            // An empty frame is refused by design (it carries nothing to answer).
            assert_eq!(decoded, Err(WireError::Empty), "{encoding:?}: empty frame");
        } else {
            assert_eq!(decoded.as_ref(), Ok(&commands), "{encoding:?}: encoded commands decode as they were");
        }
        for mutation in &input.mutations {
            mutation.apply(&mut frame);
        }
        if let Ok(mutated) = decode_commands_bounded(&frame, encoding, MAX_BATCH) {
            let again = decode_commands_bounded(&encode_commands(&mutated, encoding), encoding, MAX_BATCH);
            assert_eq!(again.as_ref(), Ok(&mutated), "{encoding:?}: mutated commands re-encode");
        }
    }
});
