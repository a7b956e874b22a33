//! Keepalive over real sockets: a peer that stops answering is given up
//! within `ping_interval + ping_timeout`, a peer that answers is kept.

mod raw;

use std::time::{Duration, Instant};

use peregrine::{ClientBuilder, CloseCode, Config, Error, Message, TimeoutKind};
use raw::{FrameReader, OP_CLOSE, OP_PING, OP_TEXT, PATIENCE};
use tokio::net::TcpStream;
use tokio::time::timeout;

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(300);

fn keepalive_config() -> Config {
    Config::default().ping_interval(Some(INTERVAL)).ping_timeout(TIMEOUT)
}

/// Timers fire at or after their deadline, but the deadline is set a moment
/// before the test takes its start time.
const EARLY: Duration = Duration::from_millis(20);
const LATE: Duration = Duration::from_secs(1);

fn assert_given_up_in_time(elapsed: Duration) {
    let bound = INTERVAL + TIMEOUT;
    assert!(elapsed + EARLY >= bound, "gave up after {elapsed:?}, before interval + timeout ({bound:?})");
    assert!(elapsed < bound + LATE, "gave up after {elapsed:?}, long after interval + timeout ({bound:?})");
}

#[tokio::test]
async fn server_gives_up_on_a_peer_that_never_answers_pings() {
    let (listener, addr) = raw::listener().await;
    let peer = tokio::spawn(async move { raw::client(addr).await });
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = peregrine::accept_with(tcp, &keepalive_config(), |r| Ok(r.accept())).await.unwrap();
    let start = Instant::now();
    let (mut peer, leftover) = peer.await.unwrap();

    let first = timeout(PATIENCE, ws.recv()).await.expect("keepalive fired");
    assert!(matches!(first, Some(Err(Error::Timeout(TimeoutKind::Keepalive)))), "{first:?}");
    assert_given_up_in_time(start.elapsed());
    assert!(timeout(PATIENCE, ws.recv()).await.expect("stream ended").is_none());

    // On the wire: one ping, then a close frame saying why, then EOF.
    let mut frames = FrameReader::new(leftover);
    let ping = frames.next(&mut peer).await.expect("a ping");
    assert_eq!((ping.opcode, ping.masked), (OP_PING, false));
    let close = frames.next(&mut peer).await.expect("a close frame");
    assert_eq!(close.close_code(), Some(1001));
    assert_eq!(close.close_reason(), "keepalive ping timeout");
    assert_eq!(frames.next(&mut peer).await, None, "then the server ends TCP");
}

/// A server connection with `config` whose raw peer completed the handshake and never
/// answers, and a reader of what the server sends that peer.
async fn accept_silent_peer(config: &Config) -> (peregrine::WebSocket<TcpStream>, SilentPeer) {
    let (listener, addr) = raw::listener().await;
    let peer = tokio::spawn(async move { raw::client(addr).await });
    let (tcp, _) = listener.accept().await.unwrap();
    let ws = peregrine::accept_with(tcp, config, |r| Ok(r.accept())).await.unwrap();
    let (tcp, leftover) = peer.await.unwrap();
    (ws, SilentPeer { tcp, frames: FrameReader::new(leftover) })
}

struct SilentPeer {
    tcp: TcpStream,
    frames: FrameReader,
}

impl SilentPeer {
    async fn next(&mut self) -> Option<raw::Frame> {
        timeout(PATIENCE, self.frames.next(&mut self.tcp)).await.expect("a frame or EOF in time")
    }

    /// The keepalive ping, then a close frame with `code` and `reason`, then EOF.
    async fn expect_ping_then_close(&mut self, code: u16, reason: &str) {
        assert_eq!(self.next().await.expect("a ping").opcode, OP_PING);
        let close = self.next().await.expect("a close frame, not a bare TCP close");
        assert_eq!((close.opcode, close.close_code()), (OP_CLOSE, Some(code)), "{close:?}");
        assert_eq!(close.close_reason(), reason);
        assert_eq!(self.next().await, None, "then TCP ends");
    }
}

#[tokio::test]
async fn a_server_that_stops_reading_at_the_keepalive_error_still_sends_its_close_frame() {
    // `while let Some(Ok(message)) = ws.recv().await` ends at the error and drops the
    // socket: the close frame must already be on its way.
    let (mut ws, mut peer) = accept_silent_peer(&keepalive_config()).await;
    let first = timeout(PATIENCE, ws.recv()).await.expect("keepalive fired");
    assert!(matches!(first, Some(Err(Error::Timeout(TimeoutKind::Keepalive)))), "{first:?}");
    drop(ws);
    peer.expect_ping_then_close(1001, "keepalive ping timeout").await;
}

#[tokio::test]
async fn a_split_server_that_stops_reading_at_the_keepalive_error_still_sends_its_close_frame() {
    let (ws, mut peer) = accept_silent_peer(&keepalive_config()).await;
    let (mut reader, writer) = ws.split();
    let first = timeout(PATIENCE, reader.recv()).await.expect("keepalive fired");
    assert!(matches!(first, Some(Err(Error::Timeout(TimeoutKind::Keepalive)))), "{first:?}");
    drop((reader, writer));
    peer.expect_ping_then_close(1001, "keepalive ping timeout").await;
}

#[tokio::test]
async fn without_closing_on_keepalive_timeout_the_application_says_why_in_its_own_words() {
    let config = keepalive_config().close_on_keepalive_timeout(false);
    let (mut ws, mut peer) = accept_silent_peer(&config).await;
    let first = timeout(PATIENCE, ws.recv()).await.expect("keepalive fired");
    assert!(matches!(first, Some(Err(Error::Timeout(TimeoutKind::Keepalive)))), "{first:?}");
    // Still writable: a last message, then the close frame with our code.
    ws.send(Message::text("you did not answer")).await.expect("sending after the keepalive error");
    timeout(PATIENCE, ws.close(CloseCode::from(4000), "no pong")).await.expect("closed in time").unwrap();
    assert!(ws.recv().await.is_none());

    assert_eq!(peer.next().await.expect("a ping").opcode, OP_PING);
    let last = peer.next().await.expect("the last message");
    assert_eq!((last.opcode, &last.payload[..]), (OP_TEXT, &b"you did not answer"[..]));
    let close = peer.next().await.expect("a close frame");
    assert_eq!((close.close_code(), close.close_reason()), (Some(4000), "no pong"));
    assert_eq!(peer.next().await, None, "then the server ends TCP");
}

#[tokio::test]
async fn without_closing_on_keepalive_timeout_a_split_writer_says_why() {
    let config = keepalive_config().close_on_keepalive_timeout(false);
    let (ws, mut peer) = accept_silent_peer(&config).await;
    let (mut reader, mut writer) = ws.split();
    let first = timeout(PATIENCE, reader.recv()).await.expect("keepalive fired");
    assert!(matches!(first, Some(Err(Error::Timeout(TimeoutKind::Keepalive)))), "{first:?}");
    let writing = tokio::spawn(async move {
        writer.send(Message::text("you did not answer")).await?;
        writer.close(CloseCode::from(3012), "no pong").await
    });
    timeout(PATIENCE, writing).await.expect("written in time").unwrap().expect("the writer may still write");
    drop(reader);

    assert_eq!(peer.next().await.expect("a ping").opcode, OP_PING);
    assert_eq!(peer.next().await.expect("the last message").opcode, OP_TEXT);
    let close = peer.next().await.expect("a close frame");
    assert_eq!((close.close_code(), close.close_reason()), (Some(3012), "no pong"));
    assert_eq!(peer.next().await, None, "then TCP ends");
}

#[tokio::test]
async fn without_closing_on_keepalive_timeout_reading_on_sends_the_usual_close() {
    // An application that turned the close off but reads on instead of closing has
    // nothing to add: the connection closes as it would by default.
    let config = keepalive_config().close_on_keepalive_timeout(false);
    let (mut ws, mut peer) = accept_silent_peer(&config).await;
    let first = timeout(PATIENCE, ws.recv()).await.expect("keepalive fired");
    assert!(matches!(first, Some(Err(Error::Timeout(TimeoutKind::Keepalive)))), "{first:?}");
    assert!(timeout(PATIENCE, ws.recv()).await.expect("stream ended").is_none());
    peer.expect_ping_then_close(1001, "keepalive ping timeout").await;
}

#[tokio::test]
async fn client_gives_up_on_a_server_that_stops_answering() {
    let (listener, addr) = raw::listener().await;
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        raw::server_handshake(&mut tcp, "").await;
        // Never read, never write again; hand the socket back so it stays open.
        tcp
    });
    let (mut ws, _) =
        ClientBuilder::new(format!("ws://{addr}/")).config(keepalive_config()).connect().await.unwrap();
    let start = Instant::now();

    let first = timeout(PATIENCE, ws.recv()).await.expect("keepalive fired");
    assert!(matches!(first, Some(Err(Error::Timeout(TimeoutKind::Keepalive)))), "{first:?}");
    assert_given_up_in_time(start.elapsed());
    assert!(timeout(PATIENCE, ws.recv()).await.expect("stream ended").is_none());

    let mut tcp = server.await.unwrap();
    let mut frames = FrameReader::default();
    let ping = frames.next(&mut tcp).await.expect("a ping");
    assert_eq!((ping.opcode, ping.masked), (OP_PING, true), "client frames are masked");
    let close = frames.next(&mut tcp).await.expect("a close frame");
    assert_eq!((close.opcode, close.close_code()), (OP_CLOSE, Some(1001)));
    assert_eq!(frames.next(&mut tcp).await, None, "after giving up, the client ends TCP too");
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_connected() {
    const INTERVAL: Duration = Duration::from_millis(200);
    const TIMEOUT: Duration = Duration::from_millis(200);
    const PONGS: usize = 5;
    let (listener, addr) = raw::listener().await;
    // Our client with keepalive off: it only answers (the core queues pongs).
    let client = tokio::spawn(async move {
        let config = Config::default().ping_interval(None);
        let (mut ws, _) = ClientBuilder::new(format!("ws://{addr}/")).config(config).connect().await.unwrap();
        let mut pings = 0;
        while let Some(message) = ws.recv().await {
            match message.unwrap() {
                Message::Ping(payload) => {
                    assert_eq!(&payload[..], b"peregrine");
                    pings += 1;
                }
                Message::Close(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        pings
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let config = Config::default().ping_interval(Some(INTERVAL)).ping_timeout(TIMEOUT);
    let mut ws = peregrine::accept_with(tcp, &config, |r| Ok(r.accept())).await.unwrap();

    // Several intervals, each ending with a ping whose pong keeps the
    // connection: a silent peer would have been dropped after the first.
    let start = Instant::now();
    for _ in 0..PONGS {
        match timeout(PATIENCE, ws.recv()).await.expect("a pong") {
            Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"peregrine"),
            other => panic!("the connection must stay up, got {other:?}"),
        }
    }
    let elapsed = start.elapsed();
    // A ping only goes out after an interval without input.
    assert!(elapsed + EARLY >= INTERVAL * PONGS as u32, "{PONGS} pongs after {elapsed:?}");
    assert!(elapsed > INTERVAL + TIMEOUT, "kept past the point where a silent peer is dropped");
    let pongs = PONGS;

    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    let pings = timeout(PATIENCE, client).await.expect("client ended").unwrap();
    assert!(pings >= pongs, "client saw {pings} pings, server {pongs} pongs");
}

#[tokio::test]
async fn traffic_from_the_peer_postpones_pings() {
    // A peer that keeps sending data is alive: no ping is needed, and none is
    // sent, however many intervals pass.
    const INTERVAL: Duration = Duration::from_millis(500);
    let (listener, addr) = raw::listener().await;
    let peer = tokio::spawn(async move {
        let (mut tcp, leftover) = raw::client(addr).await;
        for i in 0..12u8 {
            tokio::io::AsyncWriteExt::write_all(&mut tcp, &raw::masked(raw::OP_BINARY, &[i])).await.unwrap();
            tokio::time::sleep(INTERVAL / 5).await;
        }
        tokio::io::AsyncWriteExt::write_all(&mut tcp, &raw::masked(OP_CLOSE, &raw::close_payload(1000, "")))
            .await
            .unwrap();
        let mut frames = FrameReader::new(leftover);
        let mut seen = Vec::new();
        while let Some(frame) = frames.next(&mut tcp).await {
            seen.push(frame.opcode);
        }
        seen
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let config = Config::default().ping_interval(Some(INTERVAL)).ping_timeout(INTERVAL);
    let mut ws = peregrine::accept_with(tcp, &config, |r| Ok(r.accept())).await.unwrap();
    for i in 0..12u8 {
        let message = timeout(PATIENCE, ws.recv()).await.unwrap().unwrap().unwrap();
        assert_eq!(message, Message::binary(vec![i]));
    }
    assert!(matches!(ws.recv().await, Some(Ok(Message::Close(_)))));
    assert!(ws.recv().await.is_none());
    assert_eq!(peer.await.unwrap(), vec![OP_CLOSE], "only the close reply, no ping");
}

/// A peer that sends a burst of messages, one per `gap`, then goes silent
/// and waits for a ping. Returns when the ping arrived after its last message,
/// and the connection, kept open so the server sees no drop.
async fn burst_then_silence(
    addr: std::net::SocketAddr,
    messages: u8,
    gap: Duration,
) -> (Duration, TcpStream) {
    let (mut tcp, leftover) = raw::client(addr).await;
    let mut silent_since = Instant::now();
    for i in 0..messages {
        tokio::io::AsyncWriteExt::write_all(&mut tcp, &raw::masked(raw::OP_BINARY, &[i])).await.unwrap();
        silent_since = Instant::now();
        tokio::time::sleep(gap).await;
    }
    let mut frames = FrameReader::new(leftover);
    let ping = timeout(PATIENCE, frames.next(&mut tcp)).await.expect("a ping in time").expect("a frame");
    assert_eq!(ping.opcode, OP_PING);
    (silent_since.elapsed(), tcp)
}

const BURST_INTERVAL: Duration = Duration::from_millis(300);

/// A server connection with keepalive every `BURST_INTERVAL`, whose peer
/// runs [`burst_then_silence`].
async fn accept_burst(
    messages: u8,
    gap: Duration,
) -> (peregrine::WebSocket<TcpStream>, tokio::task::JoinHandle<(Duration, TcpStream)>) {
    let (listener, addr) = raw::listener().await;
    let peer = tokio::spawn(burst_then_silence(addr, messages, gap));
    let (tcp, _) = listener.accept().await.unwrap();
    let config = Config::default().ping_interval(Some(BURST_INTERVAL)).ping_timeout(PATIENCE);
    (peregrine::accept_with(tcp, &config, |r| Ok(r.accept())).await.unwrap(), peer)
}

async fn receive_burst(ws: &mut peregrine::WebSocket<TcpStream>, messages: u8) {
    for i in 0..messages {
        let message = timeout(PATIENCE, ws.recv()).await.unwrap().unwrap().unwrap();
        assert_eq!(message, Message::binary(vec![i]));
    }
}

#[tokio::test]
async fn a_busy_connection_that_falls_silent_is_pinged_an_interval_later() {
    // Each message wakes the connection without the keepalive timer firing:
    // the timer must stay armed through all those wake-ups (it is not polled
    // again on each) and fire once the peer falls silent.
    let (mut ws, peer) = accept_burst(50, BURST_INTERVAL / 25).await;
    receive_burst(&mut ws, 50).await;
    // Keep reading in this same task (the ping goes out from inside recv)
    // until the peer has it.
    let mut peer = peer;
    let (silence, _tcp) = timeout(PATIENCE, async {
        loop {
            tokio::select! {
                silence = &mut peer => break silence.unwrap(),
                event = ws.recv() => assert!(matches!(event, Some(Ok(_))), "{event:?}"),
            }
        }
    })
    .await
    .expect("the peer was pinged");
    assert!(
        silence + EARLY >= BURST_INTERVAL,
        "pinged {silence:?} after the last message, before the interval"
    );
    assert!(
        silence < BURST_INTERVAL + LATE,
        "pinged {silence:?} after the last message, long after the interval"
    );
}

#[tokio::test]
async fn a_connection_moved_to_another_task_still_pings() {
    // The timer wakes the task that polled it last. Read in one task, then
    // hand the socket to another: that one must be woken when a ping is due.
    let (ws, peer) = accept_burst(3, BURST_INTERVAL / 10).await;
    let first_reader = tokio::spawn(async move {
        let mut ws = ws;
        receive_burst(&mut ws, 3).await;
        ws
    });
    let mut ws = first_reader.await.unwrap();
    let reading = tokio::spawn(async move { while let Some(Ok(_)) = ws.recv().await {} });
    let (silence, _tcp) = timeout(PATIENCE, peer).await.expect("the peer was pinged").unwrap();
    assert!(
        silence < BURST_INTERVAL + LATE,
        "pinged {silence:?} after the last message, long after the interval"
    );
    reading.abort();
}

#[tokio::test]
async fn after_giving_up_the_stream_ends_even_with_unsent_data() {
    // The typical vanished peer: it stopped reading, so the data we sent it
    // fills the socket buffers. Keepalive gives up; the stream must then end
    // (within the close timeout), not wait for buffers that never drain.
    let (listener, addr) = raw::listener().await;
    let peer = tokio::spawn(async move { raw::client(addr).await });
    let (tcp, _) = listener.accept().await.unwrap();
    let config = keepalive_config().close_timeout(Duration::from_millis(300));
    let mut ws = peregrine::accept_with(tcp, &config, |r| Ok(r.accept())).await.unwrap();
    let _peer = peer.await.unwrap();
    let mut blocked = false;
    for _ in 0..64 {
        if timeout(Duration::from_millis(300), ws.feed(Message::binary(vec![0u8; 1 << 20]))).await.is_err() {
            blocked = true;
            break;
        }
    }
    assert!(blocked, "the peer's buffers never filled");

    let first = timeout(PATIENCE, ws.recv()).await.expect("keepalive fired");
    assert!(matches!(first, Some(Err(Error::Timeout(TimeoutKind::Keepalive)))), "{first:?}");
    let end = timeout(Duration::from_secs(2), ws.recv()).await;
    assert!(matches!(end, Ok(None)), "the stream must end: {end:?}");
}

#[tokio::test]
async fn a_pong_already_received_when_the_deadline_passes_still_counts() {
    // The application stops reading for a while (busy, or waiting on a slow
    // send) right after a keepalive ping went out. The peer answers promptly;
    // the pong waits in the socket. When reading resumes after the deadline,
    // the pong proves the peer alive: it must be delivered, not a timeout.
    let (listener, addr) = raw::listener().await;
    let (answer, answer_now) = tokio::sync::oneshot::channel::<()>();
    let (answered, has_answered) = tokio::sync::oneshot::channel::<()>();
    let peer = tokio::spawn(async move {
        let (mut tcp, leftover) = raw::client(addr).await;
        let mut frames = FrameReader::new(leftover);
        let ping = frames.next(&mut tcp).await.expect("a ping");
        answer_now.await.unwrap();
        let pong = raw::masked(raw::OP_PONG, &ping.payload);
        tokio::io::AsyncWriteExt::write_all(&mut tcp, &pong).await.unwrap();
        answered.send(()).unwrap();
        frames.next(&mut tcp).await
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = peregrine::accept_with(tcp, &keepalive_config(), |r| Ok(r.accept())).await.unwrap();
    let start = Instant::now();

    // Read until just after the ping left (at INTERVAL); nothing arrives.
    assert!(timeout(INTERVAL + TIMEOUT / 2, ws.recv()).await.is_err());
    // Now busy elsewhere: the peer answers, and the deadline passes.
    answer.send(()).unwrap();
    has_answered.await.unwrap();
    tokio::time::sleep_until((start + INTERVAL + TIMEOUT + Duration::from_millis(200)).into()).await;

    let next = timeout(PATIENCE, ws.recv()).await.unwrap();
    assert!(matches!(next, Some(Ok(Message::Pong(_)))), "the buffered pong, not {next:?}");
    drop(ws);
    drop(peer);
}
