//! Every JSON example in docs/protocol.md decodes, and re-encodes to the same JSON value.

use peregrine_wire::*;
use serde_json::Value;

#[test]
fn protocol_md_examples_decode() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let (mut in_block, mut section) = (false, "");
    let (mut commands, mut server) = (0, 0);
    for line in doc.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = title;
        }
        match line.trim() {
            "```json" => in_block = true,
            "```" => in_block = false,
            l if in_block && !l.is_empty() => {
                let original: Value = serde_json::from_str(l).unwrap();
                let reencoded = if section == "Commands" {
                    commands += 1;
                    let cmd =
                        decode_commands(l.as_bytes(), Encoding::Json).unwrap_or_else(|e| panic!("{l}: {e}"));
                    serde_json::to_value(&cmd[0]).unwrap()
                } else {
                    server += 1;
                    let msg = decode_server_messages(l.as_bytes(), Encoding::Json)
                        .unwrap_or_else(|e| panic!("{l}: {e}"));
                    serde_json::to_value(&msg[0]).unwrap()
                };
                assert_eq!(strip_defaults(original), reencoded, "{l}");
            }
            _ => {}
        }
    }
    assert_eq!(commands, 10);
    assert_eq!(server, 22);
}

/// The encoder omits `false` and empty `publications`; the docs may spell them out.
fn strip_defaults(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, v)| match v {
                    Value::Bool(false) => k == "reconnect",
                    Value::Array(a) => !(a.is_empty() && k == "publications"),
                    _ => true,
                })
                .map(|(k, v)| if k == "data" { (k, v) } else { (k, strip_defaults(v)) })
                .collect(),
        ),
        other => other,
    }
}
