//! Dead connections: a client that stops answering pings is closed by the server, and its
//! presence is cleaned up with a leave event; `ping` commands answer browsers' heartbeats.

mod common;

use std::time::{Duration, Instant};

use common::{Client, TestServer};
use peregrine_server::app::config::Config;
use peregrine_wire::*;

#[tokio::test]
async fn silent_client_is_removed_and_leaves_presence() {
    let mut config = Config::development();
    config.client.ping_interval = Duration::from_millis(200);
    config.client.pong_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;

    let mut watcher = Client::connect(&server).await;
    watcher.sub("room:1").await;
    let mut ghost = Client::connect(&server).await;
    ghost.sub("room:1").await;
    let ghost_id = ghost.client_id.clone();
    // The ghost never reads again, so it never answers a ping (its socket stays open).
    let started = Instant::now();
    loop {
        // Joins (own and the ghost's) come first; wait for the ghost's leave.
        match watcher.push().await {
            Push::Leave { info, .. } if info.client == ghost_id => break,
            Push::Join { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(started.elapsed() < common::WAIT);
    let Ok(ReplyKind::Presence(p)) =
        watcher.command(CommandKind::Presence(PresenceRequest { channel: "room:1".into() })).await
    else {
        panic!("presence")
    };
    assert_eq!(p.clients.len(), 1, "only the watcher is left: {:?}", p.clients.keys());
    assert_eq!(server.node.session_count(), 1);
    drop(ghost);
    server.finish().await;
}

#[tokio::test]
async fn ping_command_is_answered() {
    let server = TestServer::dev().await;
    let mut c = Client::connect(&server).await;
    for _ in 0..3 {
        let r = c.command(CommandKind::Ping(PingRequest {})).await.unwrap();
        assert_eq!(r, ReplyKind::Ping(PingResult {}));
    }
    server.finish().await;
}

#[tokio::test]
async fn first_command_other_than_connect_is_a_bad_request() {
    let server = TestServer::dev().await;
    let mut c = Client::open(&server, Encoding::Json).await;
    let _ = c.command(CommandKind::Ping(PingRequest {})).await;
    let closed = c.closed().await;
    assert_eq!(closed.map(|(code, _)| code), Some(codes::disconnect::BAD_REQUEST));
    server.finish().await;
}
