//! Malformed frames give typed errors that name the problem, and never panic.

use peregrine_wire::*;

fn json_err(frame: &str) -> WireError {
    decode_commands(frame.as_bytes(), Encoding::Json).unwrap_err()
}

fn ping(id: u64) -> Command {
    Command { id, kind: CommandKind::Ping(PingRequest {}) }
}

#[test]
fn bad_json_is_reported_with_its_index() {
    let err = json_err("{\"id\":1,\"ping\":{}}\n{\"id\":2,");
    assert!(matches!(&err, WireError::Message { index: 1, .. }), "{err:?}");
    assert!(err.to_string().starts_with("message 1:"), "{err}");
    assert!(matches!(json_err("[1,2]"), WireError::Message { index: 0, .. }));
    assert!(matches!(json_err("{\"id\":1,\"ping\":{}} trailing"), WireError::Message { .. }));
}

#[test]
fn unknown_command_type_is_named() {
    let err = json_err(r#"{"id":1,"frobnicate":{}}"#);
    assert!(err.to_string().contains("frobnicate"), "{err}");
}

#[test]
fn misspelled_argument_is_named() {
    let err = json_err(r#"{"id":1,"subscribe":{"channel":"c","recovr":true}}"#).to_string();
    assert!(err.contains("unknown field `recovr`"), "{err}");
}

#[test]
fn missing_id_and_missing_type_are_named() {
    assert!(json_err(r#"{"ping":{}}"#).to_string().contains("missing `id`"));
    assert!(json_err(r#"{"id":4}"#).to_string().contains("command 4 has no type"));
    let both = json_err(r#"{"id":4,"ping":{},"presence":{"channel":"c"}}"#).to_string();
    assert!(both.contains("more than one type"), "{both}");
}

#[test]
fn missing_required_field_is_named() {
    let err = json_err(r#"{"id":1,"subscribe":{}}"#).to_string();
    assert!(err.contains("channel"), "{err}");
    let err = json_err(r#"{"id":1,"subscribe":{"channel":"c","since":{"epoch":"e"}}}"#).to_string();
    assert!(err.contains("offset"), "{err}");
    let err = json_err(r#"{"id":-1,"ping":{}}"#);
    assert!(matches!(err, WireError::Message { index: 0, .. }));
}

#[test]
fn empty_frames_are_rejected() {
    assert_eq!(json_err(""), WireError::Empty);
    assert_eq!(json_err("\n \n"), WireError::Empty);
    let empty = encode_commands(&[], Encoding::MsgPack);
    assert_eq!(decode_commands(&empty, Encoding::MsgPack).unwrap_err(), WireError::Empty);
    assert_eq!(decode_server_messages(b"", Encoding::Json).unwrap_err(), WireError::Empty);
}

#[test]
fn too_many_commands_are_rejected_in_both_encodings() {
    for enc in Encoding::ALL {
        let cmds: Vec<Command> = (0..=MAX_BATCH as u64).map(ping).collect();
        let frame = encode_commands(&cmds, enc);
        assert_eq!(decode_commands(&frame, enc).unwrap_err(), WireError::TooMany { max: MAX_BATCH });
        let ok = encode_commands(&cmds[..MAX_BATCH], enc);
        assert_eq!(decode_commands(&ok, enc).unwrap().len(), MAX_BATCH);
        let frame = encode_commands(&cmds[..3], enc);
        assert_eq!(decode_commands_bounded(&frame, enc, 2).unwrap_err(), WireError::TooMany { max: 2 });
    }
}

#[test]
fn huge_msgpack_array_header_is_rejected_without_allocating() {
    // array32 claiming 4 billion elements, followed by nothing.
    let frame = [0xdd, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(
        decode_commands(&frame, Encoding::MsgPack).unwrap_err(),
        WireError::TooMany { max: MAX_BATCH }
    );
    // A claimed length within the bound but missing elements is a message error.
    let frame = [0x93, 0x81, 0xa2, b'i', b'd'];
    assert!(matches!(
        decode_commands(&frame, Encoding::MsgPack).unwrap_err(),
        WireError::Message { index: 0, .. }
    ));
    // str32 claiming 4 GiB inside a message.
    let frame = [0x91, 0x81, 0xdb, 0xff, 0xff, 0xff, 0xff];
    assert!(decode_commands(&frame, Encoding::MsgPack).is_err());
}

#[test]
fn garbage_msgpack_is_rejected() {
    let not_array = rmp_serde::to_vec_named(&ping(1)).unwrap();
    let err = decode_commands(&not_array, Encoding::MsgPack).unwrap_err();
    assert!(matches!(err, WireError::NotAnArray { .. }), "{err:?}");
    assert!(matches!(decode_commands(&[0xc1], Encoding::MsgPack).unwrap_err(), WireError::NotAnArray { .. }));
    let mut trailing = encode_commands(&[ping(1)], Encoding::MsgPack);
    trailing.extend_from_slice(&[0x01, 0x02]);
    assert_eq!(
        decode_commands(&trailing, Encoding::MsgPack).unwrap_err(),
        WireError::TrailingBytes { count: 2 }
    );
    // An array of integers is an array of invalid messages.
    let err = decode_commands(&[0x92, 0x01, 0x02], Encoding::MsgPack).unwrap_err();
    assert!(matches!(err, WireError::Message { index: 0, .. }), "{err:?}");
    // Unknown command type inside msgpack.
    let frame = rmp_serde::to_vec_named(&[serde_json::json!({"id": 1, "frob": {}})]).unwrap();
    let err = decode_commands(&frame, Encoding::MsgPack).unwrap_err();
    assert!(err.to_string().contains("frob"), "{err}");
}

#[test]
fn deeply_nested_payloads_are_rejected_not_overflowed() {
    let deep_json = format!(
        r#"{{"id":1,"publish":{{"channel":"c","data":{}1{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(decode_commands(deep_json.as_bytes(), Encoding::Json).is_err());
    let mut deep = vec![0x91u8; 100_000];
    deep.push(0x01);
    assert!(decode_commands(&deep, Encoding::MsgPack).is_err());
    assert!(decode_server_messages(&deep, Encoding::MsgPack).is_err());
}

#[test]
fn bad_server_messages_are_named() {
    let err = |s: &str| decode_server_messages(s.as_bytes(), Encoding::Json).unwrap_err().to_string();
    assert!(err(r#"{"id":1}"#).contains("neither a result nor `error`"));
    assert!(err(r#"{"ping":{}}"#).contains("missing `id`"));
    assert!(err(r#"{}"#).contains("neither a reply"));
    assert!(err(r#"{"id":1,"push":{"message":{"data":1}}}"#).contains("both `id` and `push`"));
    assert!(err(r#"{"id":1,"ping":{},"error":{"code":1,"message":"x"}}"#).contains("more than one result"));
    assert!(err(r#"{"push":{"teleport":{}}}"#).contains("teleport"));
}

/// xorshift64*: a tiny deterministic PRNG so the test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds: Vec<Vec<u8>> =
        Encoding::ALL.into_iter().map(|enc| encode_commands(&[ping(1), ping(2)], enc)).collect();
    for round in 0..20_000 {
        let len = (rng.next() % 64) as usize;
        let mut bytes: Vec<u8> = if round % 2 == 0 {
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            // Mutate a valid frame so the decoders get deeper than the first byte.
            let mut b = seeds[round / 2 % 2].clone();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() as usize) % b.len();
                b[i] = rng.next() as u8;
            }
            b
        };
        if round % 7 == 0 {
            bytes.truncate((rng.next() as usize) % (bytes.len() + 1));
        }
        for enc in Encoding::ALL {
            let _ = decode_commands(&bytes, enc);
            let _ = decode_server_messages(&bytes, enc);
        }
    }
}
