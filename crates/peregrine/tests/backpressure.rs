//! Backpressure over real sockets: when the peer stops reading, sending waits
//! instead of buffering without bound, and nothing is lost or reordered once
//! the peer reads again.

mod raw;

use std::net::SocketAddr;
use std::time::Duration;

use peregrine::{CloseCode, Config, Message};
use raw::{FrameReader, OP_BINARY, OP_CLOSE, PATIENCE};
use socket2::SockRef;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

const HIGH_WATER: usize = 64 << 10;
/// Fixed kernel buffers (no autotuning), so they fill quickly and the bound
/// below is tight.
const KERNEL_BUFFER: u32 = 128 << 10;
/// Long enough that a send which can proceed has done so on loopback.
const STALL: Duration = Duration::from_millis(500);

/// A message that says where it belongs: its index, then filler.
fn numbered(index: usize, size: usize) -> Message {
    let mut payload = vec![index as u8; size];
    payload[..8].copy_from_slice(&(index as u64).to_be_bytes());
    Message::binary(payload)
}

fn index_of(payload: &[u8]) -> usize {
    usize::try_from(u64::from_be_bytes(payload[..8].try_into().unwrap())).unwrap()
}

/// Our server (send buffer of `kernel_buffer`, high water of 64 KiB) and a raw
/// client (receive buffer of `kernel_buffer`) that has done the handshake and
/// does not read.
async fn server_and_idle_reader(
    kernel_buffer: u32,
) -> (peregrine::WebSocket<TcpStream>, TcpStream, FrameReader) {
    let (listener, addr) = raw::listener().await;
    let peer = tokio::spawn(async move {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(kernel_buffer).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        raw::client_on(tcp, addr).await
    });
    let (tcp, _) = listener.accept().await.unwrap();
    SockRef::from(&tcp).set_send_buffer_size(kernel_buffer as usize).unwrap();
    let config = Config::default().write_high_water(HIGH_WATER).ping_interval(None);
    let ws = peregrine::accept_with(tcp, &config, |r| Ok(r.accept())).await.unwrap();
    let (tcp, leftover) = peer.await.unwrap();
    (ws, tcp, FrameReader::new(leftover))
}

/// What the kernel can hold between the two processes, as it reports it now.
fn kernel_capacity(server: &TcpStream, client: &TcpStream) -> usize {
    let send = SockRef::from(server).send_buffer_size().unwrap();
    let recv = SockRef::from(client).recv_buffer_size().unwrap();
    send + recv
}

/// Reads `count` binary messages of `size` bytes and checks they are numbered
/// 0, 1, 2, … in order; then answers the close frame and waits for EOF.
async fn read_in_order(mut tcp: TcpStream, mut frames: FrameReader, count: usize, size: usize) {
    for expected in 0..count {
        let frame = frames.next(&mut tcp).await.expect("a message");
        assert_eq!((frame.opcode, frame.fin, frame.payload.len()), (OP_BINARY, true, size));
        assert_eq!(index_of(&frame.payload), expected, "messages arrive in order");
        assert!(frame.payload[8..].iter().all(|&b| b == expected as u8), "payload intact");
    }
    let close = frames.next(&mut tcp).await.expect("close frame");
    assert_eq!(close.opcode, OP_CLOSE);
    tcp.write_all(&raw::masked(OP_CLOSE, &close.payload)).await.unwrap();
    assert_eq!(frames.next(&mut tcp).await, None);
}

#[tokio::test]
async fn send_waits_while_the_peer_does_not_read_and_delivers_everything_in_order_later() {
    const SIZE: usize = 1 << 20;
    const COUNT: usize = 12;
    // Room in the kernel for a few whole messages.
    let (mut ws, tcp, frames) = server_and_idle_reader(1 << 20).await;

    let mut completed = 0;
    while completed < COUNT {
        match timeout(STALL, ws.send(numbered(completed, SIZE))).await {
            Ok(result) => {
                result.unwrap();
                completed += 1;
            }
            // Still waiting for the peer: backpressure.
            Err(_) => break,
        }
    }
    assert!(completed < COUNT, "all {COUNT} MiB went out to a peer that reads nothing");
    assert!(completed > 0, "not even one message fit in the kernel buffers");
    // And it keeps waiting: flushing the interrupted message cannot finish either.
    assert!(timeout(STALL, ws.flush()).await.is_err(), "flush completed while the peer reads nothing");

    let kernel = kernel_capacity(ws.get_ref(), &tcp);
    let bound = kernel + HIGH_WATER + SIZE;
    assert!(
        completed * SIZE <= bound,
        "{completed} MiB accepted; kernel buffers {kernel} B + high water + one message = {bound} B"
    );

    // The peer starts reading: the interrupted message and all later ones arrive.
    let reader = tokio::spawn(read_in_order(tcp, frames, COUNT, SIZE));
    timeout(PATIENCE, ws.flush()).await.expect("flush after the peer reads").unwrap();
    for index in completed + 1..COUNT {
        timeout(PATIENCE, ws.send(numbered(index, SIZE))).await.expect("send after the peer reads").unwrap();
    }
    timeout(PATIENCE, ws.close(CloseCode::NORMAL, "")).await.unwrap().unwrap();
    timeout(PATIENCE, reader).await.unwrap().unwrap();
}

#[tokio::test]
async fn feed_queues_up_to_the_high_water_mark_then_waits() {
    // feed() does not flush: small messages are queued in our process until
    // the high-water mark, then written; once the kernel is full, feed waits.
    const SIZE: usize = 16 << 10;
    const COUNT: usize = 1024; // 16 MiB: far more than the kernel holds.
    const FRAME: usize = SIZE + 4; // 2-byte header + 2-byte extended length.
    let (mut ws, tcp, frames) = server_and_idle_reader(KERNEL_BUFFER).await;

    let mut fed = 0;
    while fed < COUNT {
        match timeout(STALL, ws.feed(numbered(fed, SIZE))).await {
            Ok(result) => {
                result.unwrap();
                fed += 1;
            }
            // A feed that is still waiting has queued nothing yet.
            Err(_) => break,
        }
    }
    assert!(fed < COUNT, "feed never waited");
    let kernel = kernel_capacity(ws.get_ref(), &tcp);
    let bound = kernel + HIGH_WATER + FRAME;
    assert!(fed * FRAME <= bound, "{fed} messages queued ({} B); bound {bound} B", fed * FRAME);
    // More than the high-water mark went out, so the kernel buffers were used.
    assert!(fed * FRAME > HIGH_WATER, "only {fed} messages before waiting");

    let reader = tokio::spawn(read_in_order(tcp, frames, COUNT, SIZE));
    for index in fed..COUNT {
        timeout(PATIENCE, ws.feed(numbered(index, SIZE))).await.unwrap().unwrap();
    }
    timeout(PATIENCE, ws.flush()).await.unwrap().unwrap();
    timeout(PATIENCE, ws.close(CloseCode::NORMAL, "")).await.unwrap().unwrap();
    timeout(PATIENCE, reader).await.unwrap().unwrap();
}

#[tokio::test]
async fn our_client_also_waits_for_a_server_that_does_not_read() {
    // The same backpressure on the client side, through connect_on with a
    // socket whose send buffer is small.
    const SIZE: usize = 1 << 20;
    let (listener, addr) = raw::listener().await;
    let server = tokio::spawn(async move {
        let (mut tcp, _): (TcpStream, SocketAddr) = listener.accept().await.unwrap();
        SockRef::from(&tcp).set_recv_buffer_size(KERNEL_BUFFER as usize).unwrap();
        raw::server_handshake(&mut tcp, "").await;
        tcp
    });
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(KERNEL_BUFFER).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let config = Config::default().write_high_water(HIGH_WATER).ping_interval(None);
    let (mut ws, _) =
        peregrine::ClientBuilder::new(format!("ws://{addr}/")).config(config).connect_on(tcp).await.unwrap();
    let mut server_tcp = server.await.unwrap();

    let mut completed = 0;
    while completed < 12 && timeout(STALL, ws.send(numbered(completed, SIZE))).await.is_ok() {
        completed += 1;
    }
    assert!(completed < 12, "sending never waited");

    // The server reads now: the client's (masked) messages arrive in order.
    let reader = tokio::spawn(async move {
        let mut frames = FrameReader::default();
        for expected in 0..=completed {
            let frame = frames.next(&mut server_tcp).await.expect("a message");
            assert!(frame.masked);
            assert_eq!(index_of(&frame.payload), expected);
        }
    });
    timeout(PATIENCE, ws.flush()).await.unwrap().unwrap();
    timeout(PATIENCE, reader).await.unwrap().unwrap();
}
