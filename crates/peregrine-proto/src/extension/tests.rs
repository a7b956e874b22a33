use bytes::{Buf, Bytes};

use super::*;
use crate::handshake::parse_extensions;
use crate::{Connection, DataKind, Event, Limits, Message, ProtocolError};

fn offers(header: &str) -> Vec<ExtensionOffer> {
    parse_extensions([header.as_bytes()]).unwrap()
}

#[test]
fn server_accepts_the_browser_offer() {
    let (response, params) =
        DeflateConfig::default().negotiate(&offers("permessage-deflate; client_max_window_bits")).unwrap();
    assert_eq!(response.to_string(), "permessage-deflate");
    assert!(!params.server_no_context_takeover && !params.client_no_context_takeover);
    assert_eq!((params.server_max_window_bits, params.client_max_window_bits), (15, 15));
}

#[test]
fn server_declines_invalid_offers_and_takes_the_next_valid_one() {
    let header = "permessage-deflate; server_max_window_bits=7, permessage-deflate; foo, \
                  permessage-deflate; client_no_context_takeover; client_no_context_takeover, \
                  permessage-deflate; server_max_window_bits=010, \
                  permessage-deflate; server_max_window_bits=10; client_max_window_bits";
    let (response, params) = DeflateConfig::default().negotiate(&offers(header)).unwrap();
    assert_eq!(response.to_string(), "permessage-deflate; server_max_window_bits=10");
    assert_eq!(params.server_max_window_bits, 10);
    assert!(
        DeflateConfig::default().negotiate(&offers("permessage-deflate; server_max_window_bits")).is_none()
    );
    assert!(DeflateConfig::default().negotiate(&offers("x-webkit-deflate-frame")).is_none());
}

#[test]
fn server_policy_is_echoed_in_the_response() {
    let config = DeflateConfig::default()
        .server_no_context_takeover(true)
        .client_no_context_takeover(true)
        .client_max_window_bits(10);
    let (response, _) = config.negotiate(&offers("permessage-deflate; client_max_window_bits")).unwrap();
    assert_eq!(
        response.to_string(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10"
    );
}

#[test]
fn takeover_budget_falls_back_to_no_context_takeover() {
    let config = DeflateConfig::default().max_takeover_connections(1);
    let offer = offers("permessage-deflate");
    let (_, first) = config.negotiate(&offer).unwrap();
    assert!(!first.server_no_context_takeover);
    let (response, second) = config.negotiate(&offer).unwrap();
    assert!(second.server_no_context_takeover && second.client_no_context_takeover);
    assert!(response.to_string().contains("server_no_context_takeover"));
    drop(first);
    let (_, third) = config.clone().negotiate(&offer).unwrap();
    assert!(!third.server_no_context_takeover, "the slot is given back when the connection ends");
}

#[test]
fn client_checks_the_answer() {
    let config = DeflateConfig::default();
    assert!(config.check_response(&[]).unwrap().is_none());
    let ok = config.check_response(&offers("permessage-deflate; client_max_window_bits=9")).unwrap().unwrap();
    assert_eq!(ok.client_max_window_bits, 9);
    for bad in [
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; bogus",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate, permessage-deflate",
        "x-other",
    ] {
        assert!(config.check_response(&offers(bad)).is_err(), "{bad}");
    }
    let strict = DeflateConfig::default().server_max_window_bits(10);
    assert!(strict.check_response(&offers("permessage-deflate; server_max_window_bits=12")).is_err());
}

fn pair(config: &DeflateConfig, header: &str) -> (Connection, Connection) {
    let (response, server_params) = config.negotiate(&offers(header)).unwrap();
    let client_params = config.check_response(&[response]).unwrap().unwrap();
    let limits = Limits::default().max_message_size(1 << 20);
    (
        Connection::with_deflate(Role::Client, limits, client_params),
        Connection::with_deflate(Role::Server, limits, server_params),
    )
}

fn transfer(from: &mut Connection, to: &mut Connection) -> Vec<Event> {
    let out = from.output();
    let bytes = out.copy_to_bytes(out.remaining());
    to.receive(&bytes);
    std::iter::from_fn(|| to.next_event().map(|e| e.unwrap())).collect()
}

#[test]
fn messages_round_trip_compressed_in_every_mode() {
    let json = r#"{"channel":"chat:room1","data":{"user":"alice","text":"hello there"}}"#.repeat(3);
    for header in [
        "permessage-deflate",
        "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits=9; server_max_window_bits=9",
        "permessage-deflate; client_max_window_bits=8; server_max_window_bits=8",
    ] {
        let (mut client, mut server) = pair(&DeflateConfig::default().threshold(0), header);
        for round in 0..3 {
            client.send(Message::text(json.clone())).unwrap();
            let wire = client.output().remaining();
            assert_eq!(transfer(&mut client, &mut server), [Event::Message(Message::text(json.clone()))]);
            if !header.contains("=8") {
                assert!(wire < json.len() / 2, "{header}: {wire} bytes on the wire in round {round}");
            }
            server.send(Message::binary(json.clone().into_bytes())).unwrap();
            let echoed = transfer(&mut server, &mut client);
            assert_eq!(echoed, [Event::Message(Message::binary(json.clone().into_bytes()))]);
        }
    }
}

#[test]
fn fragmented_compressed_messages_and_empty_messages() {
    let (mut client, mut server) = pair(&DeflateConfig::default().threshold(0), "permessage-deflate");
    client.send_fragment(DataKind::Text, Bytes::from_static(b"Hello, "), false).unwrap();
    client.send_fragment(DataKind::Text, Bytes::from_static(b"compressed "), false).unwrap();
    client.send_fragment(DataKind::Text, Bytes::from_static(b"world"), true).unwrap();
    client.send(Message::text("")).unwrap();
    client.send(Message::Ping(Bytes::from_static(b"not compressed"))).unwrap();
    let events = transfer(&mut client, &mut server);
    assert_eq!(events[0], Event::Message(Message::text("Hello, compressed world")));
    assert_eq!(events[1], Event::Message(Message::text("")));
    assert_eq!(events[2], Event::Message(Message::Ping(Bytes::from_static(b"not compressed"))));
}

#[test]
fn rsv1_on_a_control_or_continuation_frame_fails() {
    let (_, mut server) = pair(&DeflateConfig::default(), "permessage-deflate");
    // Masked ping with RSV1 (key 0).
    server.receive(&[0xc9, 0x80, 0, 0, 0, 0]);
    assert_eq!(server.next_event(), Some(Err(ProtocolError::ReservedBits)));
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    let limit = 64 << 10;
    let (mut client, _) = pair(&DeflateConfig::default().threshold(0), "permessage-deflate");
    let (_, params) = DeflateConfig::default().negotiate(&offers("permessage-deflate")).unwrap();
    let mut server =
        Connection::with_deflate(Role::Server, Limits::default().max_message_size(limit), params);
    client.send(Message::binary(vec![0u8; 16 << 20])).unwrap();
    let out = client.output();
    let wire = out.copy_to_bytes(out.remaining());
    assert!(wire.len() < 64 << 10, "16 MiB of zeros compress to {} bytes", wire.len());
    server.receive(&wire);
    assert!(matches!(server.next_event(), Some(Err(ProtocolError::MessageTooLarge { .. }))));
    assert!(server.buffered_capacity() < 4 * limit + wire.len() + (64 << 10));
}

#[test]
fn corrupt_compressed_data_fails_with_1007() {
    let (_, mut server) = pair(&DeflateConfig::default(), "permessage-deflate");
    // Masked binary, RSV1, payload 0xff 0xff (an invalid block type), key 0.
    server.receive(&[0xc2, 0x82, 0, 0, 0, 0, 0xff, 0xff]);
    let error = server.next_event().unwrap().unwrap_err();
    assert_eq!(error, ProtocolError::InvalidCompressedData);
    assert_eq!(error.close_code().as_u16(), 1007);
}

#[test]
fn empty_compressed_messages_keep_the_stream_in_sync() {
    let (mut client, mut server) = pair(&DeflateConfig::default().threshold(0), "permessage-deflate");
    client.send_fragment(DataKind::Text, Bytes::from_static(b"ab"), false).unwrap();
    client.send_fragment(DataKind::Text, Bytes::new(), true).unwrap();
    client.send(Message::text("")).unwrap();
    client.send(Message::binary(Vec::new())).unwrap();
    client.send(Message::text("xyz ".repeat(30))).unwrap();
    let events = transfer(&mut client, &mut server);
    assert_eq!(
        events,
        [
            Event::Message(Message::text("ab")),
            Event::Message(Message::text("")),
            Event::Message(Message::binary(Vec::new())),
            Event::Message(Message::text("xyz ".repeat(30))),
        ]
    );
}
