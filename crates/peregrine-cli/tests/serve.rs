//! `peregrine serve` as a process: it starts with no configuration, serves the protocol,
//! the HTTP API and /metrics on one port, and on SIGTERM closes clients with 1001 and a
//! reconnect hint, then exits.

mod support;

use std::time::Duration;

use peregrine::Message;
use peregrine_wire::*;
use support::EchoServer;

async fn next_messages(
    ws: &mut peregrine::WebSocket<peregrine::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Vec<ServerMessage> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.recv()).await.expect("in time") {
            Some(Ok(Message::Text(t))) => {
                return decode_server_messages(t.as_bytes(), Encoding::Json).unwrap();
            }
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn serve_without_config_then_sigterm_closes_clients_with_1001() {
    let mut server = EchoServer::spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let log = server.log();
    assert!(
        log.contains("DEVELOPMENT MODE") && log.contains("allowed_origins = [\"*\"]"),
        "the permissive default is announced: {log}"
    );
    let url = format!("ws://127.0.0.1:{}/connection/websocket", server.port);
    let (mut ws, _) = peregrine::ClientBuilder::new(url).protocol(SUBPROTOCOL_JSON).connect().await.unwrap();
    let commands = [
        Command { id: 1, kind: CommandKind::Connect(Default::default()) },
        Command {
            id: 2,
            kind: CommandKind::Subscribe(SubscribeRequest { channel: "chat:1".into(), ..Default::default() }),
        },
    ];
    let frame = String::from_utf8(encode_commands(&commands, Encoding::Json)).unwrap();
    ws.send(Message::text(frame)).await.unwrap();
    let mut replies = 0;
    while replies < 2 {
        replies +=
            next_messages(&mut ws).await.iter().filter(|m| matches!(m, ServerMessage::Reply(_))).count();
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut saw_push = false;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.recv()).await.expect("closed in time") {
            Some(Ok(Message::Text(t))) => {
                for m in decode_server_messages(t.as_bytes(), Encoding::Json).unwrap() {
                    if let ServerMessage::Push(Push::Disconnect { code, reconnect, .. }) = m {
                        assert_eq!(code, codes::disconnect::SHUTDOWN);
                        assert!(reconnect);
                        saw_push = true;
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => break frame.expect("a close frame with a code"),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert!(saw_push, "the disconnect push comes before the close frame");
    assert_eq!(u16::from(close.code), 1001);
    assert!(close.reason.to_string().contains("reconnect"), "{:?}", close.reason);
    let status = server.wait();
    assert!(status.success(), "exits cleanly after SIGTERM: {status:?}");
}
