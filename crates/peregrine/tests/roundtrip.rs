//! Our client against our server over real loopback sockets.

use peregrine::{CloseCode, Message};
use tokio::net::TcpListener;

async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut ws = peregrine::accept(tcp).await?;
                while let Some(message) = ws.recv().await {
                    let message = message?;
                    if message.is_data() {
                        ws.send(message).await?;
                    }
                }
                peregrine::Result::<()>::Ok(())
            });
        }
    });
    addr
}

#[tokio::test]
async fn messages_of_every_size_round_trip() {
    let addr = echo_server().await;
    let (mut ws, response) = peregrine::connect(&format!("ws://{addr}/echo")).await.unwrap();
    assert_eq!(response.status(), 101);
    for size in [0, 1, 125, 126, 65535, 65536, 1 << 20] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(payload.clone())).await.unwrap();
        let reply = ws.recv().await.unwrap().unwrap();
        assert_eq!(reply, Message::binary(payload), "size {size}");
    }
    ws.send(Message::text("héllo")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("héllo"));
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    assert!(ws.recv().await.is_none());
}

#[tokio::test]
async fn many_pipelined_messages_keep_their_order() {
    let addr = echo_server().await;
    let (mut ws, _) = peregrine::connect(&format!("ws://{addr}/")).await.unwrap();
    for i in 0..1000 {
        ws.feed(Message::text(format!("{i}"))).await.unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..1000 {
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text(format!("{i}")));
    }
}
