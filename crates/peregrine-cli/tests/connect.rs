//! `peregrine connect` as a process: piped mode against `peregrine echo`,
//! the `--show-frames` display, and the explanations of failed handshakes
//! and dropped connections against tiny raw TCP servers.

mod support;

use std::io::Write;
use std::time::Duration;

use support::{EchoServer, Input, canned_server, closed_port, connect, raw_server, switching_protocols};

/// The lines after the one equal to or starting with `start`.
fn line_after<'a>(text: &'a str, start: &str) -> Option<&'a str> {
    let mut lines = text.lines();
    lines.by_ref().find(|line| line.starts_with(start))?;
    lines.next()
}

fn assert_masked_header(line: &str, name_and_fields: &str, tail: &str) {
    // `--> Text  FIN=1 RSV=000 opcode=0x1 MASK=1 key=xxxxxxxx len=5`: the key is random.
    let rest = line.strip_prefix(name_and_fields).unwrap_or_else(|| panic!("{line:?}"));
    let (key, after) = rest.split_at(8);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "masking key {key:?} in {line:?}");
    assert_eq!(after, tail, "{line:?}");
}

#[test]
fn piped_lines_round_trip_and_end_with_a_clean_close() {
    let server = EchoServer::start(&[]);
    let run = connect(&[&server.url], Input::Bytes(b"hello\nworld\r\n\n{\"json\": true}\n"));
    assert!(run.status.success(), "{run:?}");
    // Only the messages on stdout, one per line (the empty line is an empty message).
    assert_eq!(run.stdout, "hello\nworld\n\n{\"json\": true}\n");
    assert!(run.stderr.contains("closed: 1000 (NORMAL_CLOSURE)"), "{}", run.stderr);
    // The server saw our close frame with 1000.
    server.wait_for_log("closed: 1000 (NORMAL_CLOSURE)");
}

#[test]
fn text_with_line_breaks_is_one_line_each_as_a_json_string() {
    let server = EchoServer::start(&[]);
    let sent = ["two\nlines", "tab\t\"quoted\" \u{1}"];
    let raw = connect(&[&server.url, "-m", sent[0], "-m", sent[1]], Input::Open);
    assert!(raw.status.success(), "{raw:?}");
    assert_eq!(raw.stdout, "two\nlines\ntab\t\"quoted\" \u{1}\n", "raw: as received");
    let escaped =
        connect(&[&server.url, "--text-output", "json-string", "-m", sent[0], "-m", sent[1]], Input::Open);
    assert!(escaped.status.success(), "{escaped:?}");
    let lines: Vec<&str> = escaped.stdout.lines().collect();
    assert_eq!(lines, [r#""two\nlines""#, r#""tab\t\"quoted\" \u0001""#]);
    let decoded: Vec<String> = lines.iter().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(decoded, sent);
}

#[test]
fn show_frames_prints_each_frame_like_wireshark() {
    let server = EchoServer::start(&[]);
    let run = connect(&[&server.url, "--show-frames", "--quiet"], Input::Bytes(b"Hello\n"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "Hello\n");
    let err = &run.stderr;

    // The handshake, as text.
    assert!(err.contains("--> GET / HTTP/1.1\n"), "{err}");
    assert!(err.contains("    Sec-WebSocket-Version: 13\n"), "{err}");
    assert!(err.contains("<-- HTTP/1.1 101 Switching Protocols\n"), "{err}");

    // Our text frame is masked; the dump shows it unmasked.
    let dump_hello = "    0000  48 65 6c 6c 6f                                    Hello";
    let sent = err.lines().find(|l| l.starts_with("--> Text")).expect("a sent text frame");
    assert_masked_header(sent, "--> Text  FIN=1 RSV=000 opcode=0x1 MASK=1 key=", " len=5");
    assert_eq!(line_after(err, "--> Text"), Some(dump_hello), "{err}");

    // The echo is not masked.
    assert_eq!(line_after(err, "<-- Text"), Some(dump_hello), "{err}");
    assert!(err.lines().any(|l| l == "<-- Text  FIN=1 RSV=000 opcode=0x1 MASK=0 len=5"), "{err}");

    // The close handshake, both ways, with the code by name.
    let close_dump = "    0000  03 e8                                             ..";
    let sent_close = err.lines().find(|l| l.starts_with("--> Connection Close")).expect("our close");
    assert_masked_header(
        sent_close,
        "--> Connection Close  FIN=1 RSV=000 opcode=0x8 MASK=1 key=",
        " len=2  code=1000 (NORMAL_CLOSURE)",
    );
    assert_eq!(line_after(err, "--> Connection Close"), Some(close_dump), "{err}");
    assert!(
        err.lines().any(|l| l
            == "<-- Connection Close  FIN=1 RSV=000 opcode=0x8 MASK=0 len=2  code=1000 (NORMAL_CLOSURE)"),
        "{err}"
    );
    assert_eq!(line_after(err, "<-- Connection Close"), Some(close_dump), "{err}");
}

/// The bytes of a hex dump, from its lines (`    0010  58 59 ...  XY`) up to the first other line.
fn dumped_bytes<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in lines {
        let Some(rest) = line.strip_prefix("    ").filter(|r| r.len() > 6 && r.as_bytes()[4] == b' ') else {
            break;
        };
        let Ok(_offset) = u32::from_str_radix(&rest[..4], 16) else { break };
        // The hex column is 48 characters wide after the offset and two spaces.
        let hex = &rest[6..rest.len().min(6 + 49)];
        bytes.extend(hex.split_whitespace().map(|b| u8::from_str_radix(b, 16).expect("hex byte")));
    }
    bytes
}

#[test]
fn deflate_is_negotiated_and_show_frames_prints_messages_inflated() {
    let server = EchoServer::start(&[]);
    // Longer than the 64-byte compression threshold, and sent twice: with
    // context takeover the second is a back-reference into the first, so it
    // inflates right only if each direction's context is kept.
    let message = r#"{"channel":"ticker:BTC-USD","bid":"64123.51","ask":"64124.02","last":"64123.88"}"#;
    let run =
        connect(&[&server.url, "--deflate", "--show-frames", "-m", message, "-m", message], Input::Open);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, format!("{message}\n{message}\n"));
    let err = &run.stderr;
    assert!(
        err.contains("    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\n"),
        "{err}"
    );
    assert!(err.contains(", extensions: permessage-deflate"), "{err}");
    server.wait_for_log("connected, permessage-deflate");

    for arrow in ["-->", "<--"] {
        let frames: Vec<&str> = err.lines().filter(|l| l.starts_with(&format!("{arrow} Text"))).collect();
        assert_eq!(frames.len(), 2, "{err}");
        let mut wire_lengths = Vec::new();
        for frame in &frames {
            assert!(frame.contains(" RSV=100 opcode=0x1 "), "{frame}");
            let len: usize = frame.rsplit("len=").next().and_then(|n| n.parse().ok()).expect("len");
            wire_lengths.push(len);
            let mut lines = err.lines().skip_while(|l| l != frame).skip(1);
            // The wire dump (compressed), then the message inflated.
            let wire = dumped_bytes(lines.by_ref().take_while(|l| !l.starts_with("    inflated")));
            assert_eq!(wire.len(), len, "{err}");
            let inflated_header = format!("    inflated message, {} bytes:", message.len());
            let mut lines = err.lines().skip_while(|l| l != frame).skip_while(|l| *l != inflated_header);
            assert!(lines.next().is_some(), "no {inflated_header:?} after {frame:?} in {err}");
            assert_eq!(dumped_bytes(lines), message.as_bytes(), "{err}");
        }
        assert!(wire_lengths[0] < message.len(), "{wire_lengths:?}: compressed");
        assert!(wire_lengths[1] < wire_lengths[0], "{wire_lengths:?}: the context was kept");
    }
}

#[test]
fn a_server_that_refuses_deflate_is_named_in_the_status() {
    let server = EchoServer::start(&["--no-deflate"]);
    let run = connect(&[&server.url, "--deflate", "--show-frames", "-m", "Hello"], Input::Open);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "Hello\n");
    assert!(run.stderr.contains(", permessage-deflate declined by the server"), "{}", run.stderr);
    assert!(
        run.stderr.lines().any(|l| l == "<-- Text  FIN=1 RSV=000 opcode=0x1 MASK=0 len=5"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("inflated"), "{}", run.stderr);
}

#[test]
fn hex_input_sends_binary_and_prints_hex() {
    let server = EchoServer::start(&[]);
    let run =
        connect(&[&server.url, "--input", "hex", "--show-frames", "-q"], Input::Bytes(b"00 ff 10\ncafe\n"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "00ff10\ncafe\n");
    assert!(
        run.stderr.lines().any(|l| l == "<-- Binary  FIN=1 RSV=000 opcode=0x2 MASK=0 len=3"),
        "{}",
        run.stderr
    );
}

#[test]
fn messages_from_flags_and_a_custom_close() {
    let server = EchoServer::start(&[]);
    let run = connect(
        &[
            &server.url,
            "-m",
            "one",
            "-m",
            "two",
            "--close-code",
            "4000",
            "--close-reason",
            "bye",
            "--show-frames",
        ],
        Input::Open,
    );
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "one\ntwo\n");
    assert!(
        run.stderr.contains("code=4000 (private use by the application) reason=\"bye\""),
        "{}",
        run.stderr
    );
    server.wait_for_log("closed: 4000");
}

#[test]
fn a_file_is_sent_as_one_binary_message() {
    let server = EchoServer::start(&[]);
    let dir = support::temp_dir("file");
    let path = dir.join("payload.bin");
    std::fs::write(&path, [0u8, 1, 2, 0xfe, 0xff]).unwrap();
    let run =
        connect(&[&server.url, "--file", path.to_str().unwrap(), "--binary-output", "base64"], Input::Open);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "AAEC/v8=\n");
}

#[test]
fn ping_interval_reports_round_trip_times() {
    let server = EchoServer::start(&[]);
    let run = connect(&[&server.url, "--ping-interval", "0.05", "--linger", "0.4", "-q"], Input::Bytes(b""));
    assert!(run.status.success(), "{run:?}");
    assert!(run.stderr.contains("pong \"ping-1\": rtt "), "{}", run.stderr);
}

#[test]
fn pings_without_a_pong_are_reported_while_the_connection_lasts() {
    // Completes the handshake, then reads everything and answers nothing.
    let port = raw_server(|tcp, request| {
        let _ = tcp.write_all(switching_protocols(request).as_bytes());
        let _ = std::io::copy(tcp, &mut std::io::sink());
    });
    let url = format!("ws://127.0.0.1:{port}/");
    // Pings stop at the close (0.5 s); the close waits 1 s for an answer,
    // longer than any ping's two intervals.
    let args =
        [url.as_str(), "--ping-interval", "0.1", "--linger", "0.5", "--close-timeout", "1", "--show-frames"];
    let run = connect(&args, Input::Bytes(b""));
    let sent = run.stderr.lines().filter(|line| line.starts_with("--> Ping")).count();
    assert!(sent >= 1, "{}", run.stderr);
    // Each is reported two intervals after it was sent, the last one too
    // (no later ping goes out to notice it).
    for n in 1..=sent {
        assert!(
            run.stderr.contains(&format!("no pong for ping \"ping-{n}\" after ")),
            "ping-{n}: {}",
            run.stderr
        );
    }
}

#[test]
fn refused_with_403_names_origin_and_auth() {
    let port = canned_server(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Reason: origin\r\nContent-Length: 18\r\n\r\n\
         origin not allowed",
    );
    let run = connect(&[&format!("ws://127.0.0.1:{port}/socket"), "-m", "hi"], Input::Open);
    assert!(!run.status.success(), "{run:?}");
    let err = &run.stderr;
    assert!(err.contains("HTTP status: 403 Forbidden"), "{err}");
    assert!(err.contains("    Content-Type: text/plain\n    X-Reason: origin\n"), "{err}");
    assert!(err.contains("origin not allowed"), "{err}");
    assert!(err.contains("likely cause: the server refused the Origin or the credentials"), "{err}");
    assert!(err.contains("--origin"), "{err}");
    assert!(run.stdout.is_empty());
}

#[test]
fn refused_with_404_says_wrong_path() {
    let port = canned_server("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    let run = connect(&[&format!("ws://127.0.0.1:{port}/nope"), "-m", "hi"], Input::Open);
    assert!(!run.status.success(), "{run:?}");
    assert!(run.stderr.contains("HTTP status: 404 Not Found"), "{}", run.stderr);
    assert!(run.stderr.contains("    Content-Length: 0"), "{}", run.stderr);
    assert!(
        run.stderr.contains("likely cause: wrong path (404): nothing is served at /nope"),
        "{}",
        run.stderr
    );
}

#[test]
fn plain_http_200_points_at_the_proxy() {
    let port = canned_server(
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>",
    );
    let run = connect(&[&format!("ws://127.0.0.1:{port}/ws"), "-m", "hi"], Input::Open);
    assert!(!run.status.success(), "{run:?}");
    let err = &run.stderr;
    assert!(err.contains("HTTP status: 200 OK"), "{err}");
    assert!(err.contains("    Server: nginx"), "{err}");
    assert!(err.contains("the server answered plain HTTP (200)"), "{err}");
    assert!(err.contains("proxy_http_version 1.1"), "{err}");
    assert!(err.contains("Upgrade"), "{err}");
}

#[test]
fn unauthorized_401_asks_for_a_token() {
    let port =
        canned_server("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 0\r\n\r\n");
    let run = connect(&[&format!("ws://127.0.0.1:{port}/"), "-m", "hi"], Input::Open);
    assert!(!run.status.success(), "{run:?}");
    assert!(run.stderr.contains("--token"), "{}", run.stderr);
    assert!(run.stderr.contains("WWW-Authenticate: Bearer"), "{}", run.stderr);
}

#[test]
fn a_dropped_connection_is_explained_as_1006() {
    let port = raw_server(|tcp, request| {
        let _ = tcp.write_all(switching_protocols(request).as_bytes());
        let _ = tcp.write_all(b"\x81\x05hello");
        let _ = tcp.flush();
        std::thread::sleep(Duration::from_millis(100));
        // Dropped without a close frame.
    });
    let run = connect(&[&format!("ws://127.0.0.1:{port}/")], Input::Open);
    assert!(!run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "hello\n");
    assert!(run.stderr.contains("1006 (ABNORMAL_CLOSURE): no close frame was received"), "{}", run.stderr);
    assert!(run.stderr.contains("dropped the TCP connection"), "{}", run.stderr);
}

#[test]
fn a_close_from_the_server_is_named() {
    let port = raw_server(|tcp, request| {
        let _ = tcp.write_all(switching_protocols(request).as_bytes());
        // 1008 "banned", then wait for the client's answer and close.
        let _ = tcp.write_all(b"\x88\x08\x03\xf0banned");
        let mut buf = [0; 64];
        let _ = std::io::Read::read(tcp, &mut buf);
    });
    let run = connect(&[&format!("ws://127.0.0.1:{port}/")], Input::Open);
    assert!(!run.status.success(), "a policy violation is not a clean end: {run:?}");
    assert!(
        run.stderr.contains(
            "connection closed by the server: 1008 (POLICY_VIOLATION): policy violation; reason: \"banned\""
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn nothing_listening_is_diagnosed() {
    let port = closed_port();
    let run = connect(&[&format!("ws://127.0.0.1:{port}/"), "-m", "hi"], Input::Open);
    assert!(!run.status.success(), "{run:?}");
    assert!(run.stderr.contains(&format!("nothing is listening on 127.0.0.1:{port}")), "{}", run.stderr);
}

#[test]
fn wss_against_a_plain_port_suggests_ws() {
    let server = EchoServer::start(&[]);
    let url = server.url.replacen("ws://", "wss://", 1);
    let run = connect(&[&url, "-m", "hi"], Input::Open);
    assert!(!run.status.success(), "{run:?}");
    assert!(run.stderr.contains("wss:// against a plain port? try ws://"), "{}", run.stderr);
}

#[test]
fn no_answer_is_a_bounded_timeout() {
    // Accepts TCP, never answers.
    let port = raw_server(|_, _| std::thread::sleep(Duration::from_secs(3)));
    let run =
        connect(&[&format!("ws://127.0.0.1:{port}/"), "--connect-timeout", "0.3", "-m", "hi"], Input::Open);
    assert!(!run.status.success(), "{run:?}");
    assert!(run.stderr.contains("no answer within 0.3 s"), "{}", run.stderr);
    assert!(run.stderr.contains("ws:// against a TLS port"), "{}", run.stderr);
}

#[test]
fn tls_files_that_cannot_be_used_name_the_option_once() {
    let dir = support::temp_dir("tls-files");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    let (empty, cert) = (empty.to_str().unwrap(), cert.to_str().unwrap());
    for (args, expected) in [
        (vec!["--ca", empty], format!("--ca {empty}: no PEM certificate")),
        (vec!["--cert", cert, "--key", cert], format!("--key {cert}: no unencrypted PEM private key")),
        (vec!["--cert", empty, "--key", cert], format!("--cert {empty}: no PEM certificate")),
    ] {
        let run = connect(&[&["wss://127.0.0.1:1/"][..], &args].concat(), Input::Open);
        assert!(!run.status.success(), "{args:?}");
        assert!(run.stderr.contains(&expected), "{args:?}: {}", run.stderr);
        // Said once: the error's source does not repeat its text.
        assert_eq!(run.stderr.matches("DER instead of PEM").count(), 1, "{}", run.stderr);
    }
}

#[test]
fn bad_arguments_fail_before_connecting() {
    let run = connect(&["http://127.0.0.1:1/ws"], Input::Open);
    assert!(!run.status.success());
    assert!(run.stderr.contains("try ws://127.0.0.1:1/ws"), "{}", run.stderr);
    let run = connect(&["ws://127.0.0.1:1/", "-H", "no colon"], Input::Open);
    assert!(run.stderr.contains("is not 'Name: value'"), "{}", run.stderr);
    let run = connect(&["ws://127.0.0.1:1/", "--close-code", "1006"], Input::Open);
    assert!(run.stderr.contains("cannot be sent"), "{}", run.stderr);
    // Checked before connecting: port 1 would say nothing listens there.
    let run = connect(&["ws://127.0.0.1:1/", "-H", "Sec-WebSocket-Key: x"], Input::Open);
    assert!(
        run.stderr
            .contains("-H \"Sec-WebSocket-Key: x\": header Sec-WebSocket-Key is written by the handshake"),
        "{}",
        run.stderr
    );
    let run = connect(&["ws://127.0.0.1:1/", "--ping-interval", "0"], Input::Open);
    assert!(run.stderr.contains("'--ping-interval <SECS>': must be more than 0 seconds"), "{}", run.stderr);
    let reason = "r".repeat(124);
    let run = connect(&["ws://127.0.0.1:1/", "--close-reason", &reason], Input::Open);
    assert!(
        run.stderr.contains("the close reason is 124 bytes; a close frame holds at most 123"),
        "{}",
        run.stderr
    );
}

#[test]
fn undecodable_piped_lines_are_named_and_fail_the_run() {
    let server = EchoServer::start(&[]);
    let run = connect(&[&server.url, "--input", "hex"], Input::Bytes(b"0102\nzz\n0a0\nff\n"));
    assert!(!run.status.success(), "{run:?}");
    // The good lines still go through.
    assert_eq!(run.stdout, "0102\nff\n");
    for expected in [
        "error: line 2: invalid hex \"zz\" in \"zz\" (not sent)",
        "error: line 3: odd number of hex digits in \"0a0\" (not sent)",
        "2 input line(s) could not be decoded and were not sent (line 2, 3)",
    ] {
        assert!(run.stderr.contains(expected), "{expected:?} in:\n{}", run.stderr);
    }
}

#[test]
fn input_stops_when_the_server_closes_first() {
    let port = raw_server(|tcp, request| {
        let _ = tcp.write_all(switching_protocols(request).as_bytes());
        // 1001 "restart" at once, then read whatever comes until the client
        // has been quiet for a while.
        let _ = tcp.write_all(b"\x88\x09\x03\xe9restart");
        let _ = tcp.set_read_timeout(Some(Duration::from_millis(300)));
        let mut buf = [0; 4096];
        while matches!(std::io::Read::read(tcp, &mut buf), Ok(n) if n > 0) {}
    });
    let lines: Vec<u8> = (0..50_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    let run = connect(&[&format!("ws://127.0.0.1:{port}/")], Input::Bytes(&lines));
    assert!(!run.status.success(), "input was left: {run:?}");
    assert!(run.stderr.contains("connection closed by the server: 1001 (GOING_AWAY)"), "{}", run.stderr);
    assert!(run.stderr.contains("the connection ended before the end of input"), "{}", run.stderr);
    assert!(!run.stderr.contains("cannot send"), "no attempt after the close: {}", run.stderr);
}

#[test]
fn as_json_speaks_the_binary_encodings_of_the_realtime_protocol_in_json_lines() {
    let server = EchoServer::spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let url = format!("ws://127.0.0.1:{}/connection/websocket", server.port);
    let exact = r#"{"b":1,"a":12345678901234567890123,"f":1.10}"#;
    let input = format!(
        "{{\"id\":1,\"connect\":{{}}}}\n{{\"id\":2,\"subscribe\":{{\"channel\":\"chat:1\"}}}}\n\
         {{\"id\":3,\"publish\":{{\"channel\":\"chat:1\",\"data\":{exact}}}}}\nnot a command\n"
    );
    for protocol in ["peregrine.msgpack", "peregrine.protobuf"] {
        let run =
            connect(&[&url, "-p", protocol, "--as-json", "--linger", "1"], Input::Bytes(input.as_bytes()));
        assert!(run.stdout.contains(r#"{"id":1,"connect":{"client_id":"#), "{protocol}: {run:?}");
        assert!(run.stdout.contains(r#"{"id":2,"subscribe":"#), "{protocol}: {run:?}");
        assert!(
            run.stdout.contains(&format!(r#""data":{exact}"#)),
            "{protocol}: the payload as published: {run:?}"
        );
        assert!(
            run.stderr.contains("line 4: not a command of the realtime protocol"),
            "{protocol}: {}",
            run.stderr
        );
        assert!(!run.status.success(), "a line that could not be sent fails the run");
    }
    let refused = connect(&[&url, "--as-json"], Input::Bytes(b"{}\n"));
    assert!(
        refused.stderr.contains("--as-json needs the server to speak the realtime protocol"),
        "{refused:?}"
    );
}
