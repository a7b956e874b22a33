//! Read and write halves used from separate tasks, over real sockets.

mod raw;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use peregrine::{ClientBuilder, CloseCode, CloseFrame, Config, Error, Message, TimeoutKind, TrySend};
use raw::{FrameReader, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, PATIENCE};
use socket2::SockRef;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// An echo server whose halves run in two tasks joined by a channel.
async fn split_echo_server() -> SocketAddr {
    let (listener, addr) = raw::listener().await;
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut reader, mut writer) = peregrine::accept(tcp).await.unwrap().split();
        let (tx, mut rx) = mpsc::channel::<Message>(64);
        tokio::spawn(async move {
            while let Some(message) = reader.recv().await {
                let message = message.unwrap();
                if message.is_data() && tx.send(message).await.is_err() {
                    break;
                }
            }
        });
        while let Some(message) = rx.recv().await {
            // Queue a batch, flush when the reader has nothing more for us.
            if writer.feed(message).await.is_err() {
                break;
            }
            if rx.is_empty() && writer.flush().await.is_err() {
                break;
            }
        }
    });
    addr
}

#[tokio::test]
async fn ten_thousand_messages_round_trip_in_order_through_split_halves() {
    const COUNT: usize = 10_000;
    let addr = split_echo_server().await;
    let (ws, _) = peregrine::connect(&format!("ws://{addr}/")).await.unwrap();
    let (mut reader, mut writer) = ws.split();

    let sending = tokio::spawn(async move {
        for i in 0..COUNT {
            let message = if i % 2 == 0 {
                Message::text(format!("message {i}"))
            } else {
                Message::binary(i.to_be_bytes().to_vec())
            };
            writer.send(message).await.unwrap();
        }
        writer
    });
    let receiving = tokio::spawn(async move {
        for i in 0..COUNT {
            let message = reader.recv().await.expect("an echo").unwrap();
            let expected = if i % 2 == 0 {
                Message::text(format!("message {i}"))
            } else {
                Message::binary(i.to_be_bytes().to_vec())
            };
            assert_eq!(message, expected);
        }
        reader
    });
    let mut writer = timeout(Duration::from_secs(30), sending).await.expect("all sent").unwrap();
    let mut reader = timeout(Duration::from_secs(30), receiving).await.expect("all echoed").unwrap();

    // Closing from the write half; the read half sees the reply, then the end.
    writer.close(CloseCode::NORMAL, "done").await.unwrap();
    let reply = timeout(PATIENCE, reader.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply, Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))));
    assert!(timeout(PATIENCE, reader.recv()).await.unwrap().is_none());
    assert!(matches!(writer.send(Message::text("late")).await, Err(Error::Closed)));
}

/// A client socket with a small send buffer, so that backpressure starts early.
async fn small_buffer_client(addr: SocketAddr, config: Config) -> peregrine::WebSocket<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(128 << 10).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    ClientBuilder::new(format!("ws://{addr}/")).config(config).connect_on(tcp).await.unwrap().0
}

/// Accepts one connection with a small receive buffer and completes the handshake.
async fn small_buffer_raw_server(listener: tokio::net::TcpListener) -> TcpStream {
    let (mut tcp, _) = listener.accept().await.unwrap();
    SockRef::from(&tcp).set_recv_buffer_size(128 << 10).unwrap();
    raw::server_handshake(&mut tcp, "").await;
    tcp
}

fn numbered(index: usize) -> Message {
    let mut payload = vec![index as u8; 1 << 20];
    payload[..8].copy_from_slice(&(index as u64).to_be_bytes());
    Message::binary(payload)
}

#[tokio::test]
async fn the_read_half_answers_pings_while_the_write_half_waits_on_backpressure() {
    const MESSAGES: usize = 8;
    const PINGS: usize = 12;
    const PING_EVERY: Duration = Duration::from_millis(100);
    let (listener, addr) = raw::listener().await;
    let (start_reading, reading) = oneshot::channel::<()>();

    // The server pings every 100 ms throughout. It does not read for a while
    // (longer than several client keepalive intervals); then it reads everything.
    let server = tokio::spawn(async move {
        let (mut rd, mut wr) = small_buffer_raw_server(listener).await.into_split();
        let (out, mut to_send) = mpsc::unbounded_channel::<Vec<u8>>();
        let pinger = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PING_EVERY);
            let mut pings = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        wr.write_all(&raw::frame(OP_PING, format!("p{pings}").as_bytes(), None)).await.unwrap();
                        pings += 1;
                    }
                    bytes = to_send.recv() => {
                        let Some(bytes) = bytes else { return pings };
                        wr.write_all(&bytes).await.unwrap();
                    }
                }
            }
        });
        reading.await.unwrap();
        let (mut data, mut pongs) = (Vec::new(), Vec::new());
        let mut frames = FrameReader::default();
        loop {
            let frame = frames.next(&mut rd).await.expect("frames until the close");
            match frame.opcode {
                OP_BINARY => data.push(u64::from_be_bytes(frame.payload[..8].try_into().unwrap())),
                OP_PONG => pongs.push(String::from_utf8(frame.payload).unwrap()),
                // The client's own keepalive, should it ever ping.
                OP_PING => out.send(raw::frame(OP_PONG, &frame.payload, None)).unwrap(),
                OP_CLOSE => {
                    out.send(raw::frame(OP_CLOSE, &frame.payload, None)).unwrap();
                    break;
                }
                other => panic!("unexpected opcode {other}"),
            }
        }
        drop(out);
        let pings = pinger.await.unwrap();
        (data, pongs, pings)
    });

    // Client keepalive on: pings from the server count as life, so it never
    // needs to ping (the timeout is only slack for a loaded machine).
    let config = Config::default()
        .ping_interval(Some(Duration::from_millis(300)))
        .ping_timeout(Duration::from_secs(2))
        .write_high_water(64 << 10);
    let (mut reader, mut writer) = small_buffer_client(addr, config).await.split();
    let sent = Arc::new(AtomicUsize::new(0));
    let writing = tokio::spawn({
        let sent = sent.clone();
        async move {
            for i in 0..MESSAGES {
                writer.send(numbered(i)).await.unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
            writer.close(CloseCode::NORMAL, "").await.unwrap();
        }
    });
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let reading_task = tokio::spawn(async move {
        while let Some(message) = reader.recv().await {
            let _ = seen_tx.send(message.map_err(|e| e.to_string()));
        }
    });

    // While the server does not read, every ping reaches the read half.
    for i in 0..PINGS {
        let message = timeout(PATIENCE, seen.recv()).await.expect("a ping").unwrap();
        assert_eq!(message, Ok(Message::Ping(format!("p{i}").into_bytes().into())));
    }
    assert!(!writing.is_finished(), "the writer must be waiting on the peer");
    assert!(sent.load(Ordering::SeqCst) < MESSAGES, "all messages went out to a peer that reads nothing");

    start_reading.send(()).unwrap();
    let (data, pongs, pings) = timeout(PATIENCE * 4, server).await.expect("server done").unwrap();
    timeout(PATIENCE, writing).await.expect("writer done").unwrap();
    assert_eq!(data, (0..MESSAGES as u64).collect::<Vec<_>>(), "data in order");
    // Every ping before the client's close frame is answered, in order (none
    // after it: a closing endpoint sends no more pongs).
    assert!(pongs.len() >= PINGS && pongs.len() <= pings, "{} pongs for {pings} pings", pongs.len());
    let expected: Vec<String> = (0..pongs.len()).map(|i| format!("p{i}")).collect();
    assert_eq!(pongs, expected, "pings answered in order");

    timeout(PATIENCE, reading_task).await.expect("reader done").unwrap();
    let mut rest = Vec::new();
    while let Ok(message) = seen.try_recv() {
        // Later pings, and pongs to the client's own keepalive pings, are fine.
        if !matches!(message, Ok(Message::Ping(_) | Message::Pong(_))) {
            rest.push(message);
        }
    }
    assert_eq!(rest, vec![Ok(Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))))], "no error");
}

#[tokio::test]
async fn dropping_the_read_half_leaves_the_write_half_working() {
    let (listener, addr) = raw::listener().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = peregrine::accept(tcp).await.unwrap();
        let mut seen = Vec::new();
        while let Some(message) = ws.recv().await {
            seen.push(message.map_err(|e| e.to_string()));
        }
        seen
    });
    let (ws, _) = peregrine::connect(&format!("ws://{addr}/")).await.unwrap();
    let (reader, mut writer) = ws.split();
    drop(reader);
    writer.send(Message::text("still here")).await.unwrap();
    drop(writer);
    // Both halves gone: TCP ends without a close frame.
    let seen = timeout(PATIENCE, server).await.expect("server saw the end").unwrap();
    assert_eq!(seen, vec![Ok(Message::text("still here")), Err(Error::AbnormalClosure.to_string())]);
}

#[tokio::test]
async fn dropping_the_write_half_leaves_the_read_half_working() {
    let (listener, addr) = raw::listener().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = peregrine::accept(tcp).await.unwrap();
        ws.send(Message::text("for the reader")).await.unwrap();
        ws.close(CloseCode::GOING_AWAY, "bye").await
    });
    let (ws, _) = peregrine::connect(&format!("ws://{addr}/")).await.unwrap();
    let (mut reader, writer) = ws.split();
    drop(writer);
    assert_eq!(reader.recv().await.unwrap().unwrap(), Message::text("for the reader"));
    // The read half answers the close by itself.
    let close = reader.recv().await.unwrap().unwrap();
    assert_eq!(close, Message::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "bye"))));
    assert!(timeout(PATIENCE, reader.recv()).await.unwrap().is_none());
    timeout(PATIENCE, server).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn aborting_a_task_blocked_in_recv_ends_the_connection() {
    let (listener, addr) = raw::listener().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = peregrine::accept(tcp).await.unwrap();
        ws.recv().await.map(|m| m.map_err(|e| e.to_string()))
    });
    let (ws, _) = peregrine::connect(&format!("ws://{addr}/")).await.unwrap();
    let (mut reader, writer) = ws.split();
    let blocked = tokio::spawn(async move { reader.recv().await.is_some() });
    tokio::task::yield_now().await;
    blocked.abort();
    assert!(timeout(PATIENCE, blocked).await.unwrap().unwrap_err().is_cancelled());
    drop(writer);
    let seen = timeout(PATIENCE, server).await.expect("server saw the end").unwrap();
    assert_eq!(seen, Some(Err(Error::AbnormalClosure.to_string())));
}

#[tokio::test]
async fn a_keepalive_timeout_ends_both_halves_even_when_the_writer_is_blocked() {
    // A server that vanished: it never reads and never answers. The writer
    // fills the buffers and waits; keepalive (run by the read half) gives up.
    // Both halves must then end instead of waiting forever.
    let (listener, addr) = raw::listener().await;
    let server = tokio::spawn(small_buffer_raw_server(listener));
    let config = Config::default()
        .ping_interval(Some(Duration::from_millis(300)))
        .ping_timeout(Duration::from_millis(300))
        .close_timeout(Duration::from_millis(300))
        .write_high_water(64 << 10);
    let (mut reader, mut writer) = small_buffer_client(addr, config).await.split();
    let _server_tcp = server.await.unwrap();
    let writing = tokio::spawn(async move {
        for i in 0..64 {
            if let Err(e) = writer.send(numbered(i)).await {
                return e.to_string();
            }
        }
        panic!("64 MiB went out to a peer that reads nothing");
    });
    let first = timeout(PATIENCE, reader.recv()).await.expect("keepalive fired");
    assert!(matches!(first, Some(Err(Error::Timeout(TimeoutKind::Keepalive)))), "{first:?}");
    let end = timeout(Duration::from_secs(2), reader.recv()).await;
    assert!(matches!(end, Ok(None)), "the read half must end: {end:?}");
    let writer_error = timeout(Duration::from_secs(2), writing).await;
    assert!(writer_error.is_ok(), "the write half is still waiting");
}

#[tokio::test]
async fn a_direct_sender_writes_at_once_and_leaves_what_the_socket_refuses_to_the_write_half() {
    let (listener, addr) = raw::listener().await;
    let server = tokio::spawn(small_buffer_raw_server(listener));
    let (_reader, mut writer) = small_buffer_client(addr, Config::default()).await.split();
    let mut tcp = server.await.unwrap();
    let direct = writer.direct_sender();

    // A small message goes out at once.
    assert!(matches!(direct.try_send(Message::binary(vec![7; 16])).unwrap(), TrySend::Sent));
    // Nobody reads: 1 MiB messages fill the socket until one is only partly taken.
    let mut next = 0;
    loop {
        let result = direct.try_send(numbered(next)).unwrap();
        next += 1;
        match result {
            TrySend::Sent => assert!(next < 64, "64 MiB went out with nobody reading"),
            TrySend::Buffered => break,
            TrySend::Busy(_) => panic!("busy with nothing else written"),
        }
    }
    // Output is waiting now: the next message is handed back untouched.
    let TrySend::Busy(back) = direct.try_send(numbered(next)).unwrap() else {
        panic!("sent while output was waiting");
    };
    assert_eq!(back, numbered(next));
    // The write half flushes the rest, then sends the handed-back message behind it.
    let flushing = tokio::spawn(async move {
        writer.send(back).await.unwrap();
        writer
    });
    let mut frames = FrameReader::default();
    let first = timeout(PATIENCE, frames.next(&mut tcp)).await.unwrap().unwrap();
    assert_eq!((first.opcode, first.payload), (OP_BINARY, vec![7; 16]));
    for i in 0..=next {
        let frame = timeout(PATIENCE, frames.next(&mut tcp)).await.unwrap().unwrap();
        assert_eq!(frame.opcode, OP_BINARY);
        assert_eq!(u64::from_be_bytes(frame.payload[..8].try_into().unwrap()), i as u64, "in order");
        assert_eq!(frame.payload.len(), 1 << 20);
    }
    let writer = timeout(PATIENCE, flushing).await.unwrap().unwrap();
    // After the flush, nothing waits: the direct sender writes at once again.
    assert!(matches!(writer.direct_sender().try_send(Message::text("again")).unwrap(), TrySend::Sent));
}
