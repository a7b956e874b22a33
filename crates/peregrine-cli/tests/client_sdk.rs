//! The Rust client SDK (`peregrine-client`) against a real `peregrine serve` process:
//! connections reset at random while publishing, server restarts (graceful and killed),
//! publishes made while the server is down, a publish whose reply is lost, a connection
//! that stops answering.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use peregrine_client::{Backoff, Client, Error, State, SubscribeOptions, SubscriptionEvent};
use serde_json::json;
use support::proxy::Proxy;
use support::{EchoServer, Lcg};

/// How long a test waits for something that should happen soon.
const WAIT: Duration = Duration::from_secs(20);

/// `peregrine serve` in development mode on `listen`, with history deep enough for the
/// tests and no publish rate limit in the way.
fn serve(listen: &str) -> EchoServer {
    EchoServer::spawn(&[
        "serve",
        "--listen",
        listen,
        "--set",
        "channels.default.history_size=20000",
        "--set",
        "client.publish_rate=1000000.0",
        "--set",
        "client.publish_burst=1000000",
    ])
}

/// [`serve`] on a free port, reached through a [`Proxy`] that can break connections.
async fn serve_behind_proxy() -> (EchoServer, Proxy) {
    let server = serve("127.0.0.1:0");
    let proxy = Proxy::start(format!("127.0.0.1:{}", server.port).parse().unwrap()).await;
    (server, proxy)
}

fn url(port: u16) -> String {
    format!("ws://127.0.0.1:{port}/connection/websocket")
}

fn fast_backoff() -> Backoff {
    Backoff { min_delay: Duration::from_millis(20), max_delay: Duration::from_millis(300) }
}

async fn next_event(sub: &mut peregrine_client::Subscription) -> SubscriptionEvent {
    tokio::time::timeout(WAIT, sub.next()).await.expect("an event in time").expect("subscription open")
}

/// Data of every publication retained in `channel`, oldest first, read by a fresh client.
async fn history_data(port: u16, channel: &str) -> Vec<serde_json::Value> {
    let reader = Client::new(url(port)).unwrap();
    let history = tokio::time::timeout(WAIT, reader.history(channel, None, None)).await.unwrap().unwrap();
    reader.close().await;
    history.publications.into_iter().map(|p| p.data_json().expect("JSON payloads")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_random_resets_during_10000_publications_deliver_each_once_in_order() {
    const TOTAL: usize = 10_000;
    const CUTS: usize = 20;
    let (_server, proxy) = serve_behind_proxy().await;
    let subscriber = Client::builder(proxy.url()).backoff(fast_backoff()).build().unwrap();
    let mut feed = subscriber.subscribe("feed:cuts").await.unwrap();
    assert!(matches!(next_event(&mut feed).await, SubscriptionEvent::Subscribed { offset: 0, .. }));
    let publisher = Client::builder(proxy.url()).backoff(fast_backoff()).queue_limit(TOTAL).build().unwrap();

    // Cut points: one at a random count of queued publications in each twentieth.
    let mut rng = Lcg::from_clock();
    let stride = (TOTAL / CUTS) as u64;
    let cut_at: Vec<usize> =
        (0..CUTS as u64).map(|i| (i * stride + 1 + rng.below(stride - 1)) as usize).collect();
    let queued = Arc::new(AtomicUsize::new(0));
    let cutter = {
        let queued = queued.clone();
        tokio::spawn(async move {
            let mut resets = 0;
            for at in cut_at {
                while queued.load(Ordering::SeqCst) < at {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                resets += proxy.cut_all();
            }
            (proxy, resets)
        })
    };

    let publishing = tokio::spawn(async move {
        let mut acks = Vec::with_capacity(TOTAL);
        for batch in 0..TOTAL / 50 {
            for i in batch * 50..(batch + 1) * 50 {
                acks.push(publisher.publish("feed:cuts", json!(i)));
            }
            queued.store((batch + 1) * 50, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut offsets = Vec::with_capacity(TOTAL);
        for ack in acks {
            offsets
                .push(tokio::time::timeout(WAIT, ack).await.expect("acknowledged in time").unwrap().offset);
        }
        offsets
    });

    let mut resubscribed = 0;
    let mut recovered = 0;
    let mut next = 0usize;
    while next < TOTAL {
        match next_event(&mut feed).await {
            SubscriptionEvent::Publication(p) => {
                assert_eq!(
                    p.data,
                    json!(next).into(),
                    "publication {next} expected, got {} (offset {})",
                    p.data,
                    p.offset
                );
                assert_eq!(p.offset, next as u64 + 1);
                next += 1;
            }
            SubscriptionEvent::Subscribed { recovered: r, .. } => {
                resubscribed += 1;
                recovered += r as usize;
            }
            // The development configuration announces the publisher joining and leaving.
            SubscriptionEvent::Join(_) | SubscriptionEvent::Leave(_) => {}
            other => panic!("nothing may be lost: {other:?} after {next} publications"),
        }
    }
    let offsets = publishing.await.unwrap();
    let (_proxy, resets) = cutter.await.unwrap();
    assert_eq!(
        offsets,
        (1..=TOTAL as u64).map(Some).collect::<Vec<_>>(),
        "every publish landed once, in order (a duplicate would take an offset)"
    );
    assert!(resets >= CUTS, "{resets} connections reset");
    assert!(
        resubscribed >= 1 && recovered == resubscribed,
        "{resubscribed} resubscribes, {recovered} recovered"
    );
    println!("{resets} connections reset, {resubscribed} resubscribes, all recovered");
    // Nothing more arrives: no duplicate after the last one.
    let extra = tokio::time::timeout(Duration::from_millis(300), feed.next()).await;
    assert!(
        !matches!(extra, Ok(Some(SubscriptionEvent::Publication(_)))),
        "no duplicate after the last: {extra:?}"
    );
}

/// 200 clients subscribed to one channel; the server is stopped (`graceful`: SIGTERM, else
/// SIGKILL) and started again on the same port. Returns nothing; asserts the reconnect
/// spread and that every subscriber is told of the new epoch.
async fn restart_with_200_clients(graceful: bool) {
    const CLIENTS: usize = 200;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = serve(&listen);
    let backoff = Backoff { min_delay: Duration::from_millis(200), max_delay: Duration::from_secs(3) };

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let client = Client::builder(url(port)).backoff(backoff).build().unwrap();
        let options = SubscribeOptions { join_leave: Some(false), ..Default::default() };
        let sub = client.subscribe_with("news:restart", options).await.unwrap();
        clients.push((client, sub));
    }
    let ack = clients[0].0.publish("news:restart", json!("before")).await.unwrap();
    let old_epoch = ack.epoch.expect("positioned channel");

    // Each client: when did it reconnect, and did it hear of the new epoch? Each also says
    // when it has the publication: the server is stopped only after all 200 have it, since
    // a killed server loses whatever fan-out it had not written yet (and its history).
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watchers = Vec::new();
    for (client, mut sub) in clients {
        let mut events = client.events();
        let seen_tx = seen_tx.clone();
        watchers.push(tokio::spawn(async move {
            let mut saw_publication = false;
            let mut disconnected = false;
            let (mut reconnected, mut reset) = (None, None);
            while reconnected.is_none() || reset.is_none() {
                tokio::select! {
                    state = events.recv() => match state.unwrap() {
                        State::Disconnected { .. } => disconnected = true,
                        State::Connected { .. } if disconnected && reconnected.is_none() => {
                            reconnected = Some(Instant::now());
                        }
                        State::Closed { reason, .. } => panic!("closed: {reason}"),
                        _ => {}
                    },
                    event = sub.next() => match event.expect("subscription open") {
                        SubscriptionEvent::Publication(p) => {
                            assert_eq!(p.data, json!("before").into());
                            assert!(reset.is_none(), "nothing new was published");
                            saw_publication = true;
                            seen_tx.send(()).unwrap();
                        }
                        SubscriptionEvent::Subscribed { .. } => {}
                        event @ SubscriptionEvent::Reset { .. } if disconnected => reset = Some(event),
                        other => panic!("unexpected {other:?}"),
                    },
                }
            }
            let (reconnected, reset) = (reconnected.unwrap(), reset.unwrap());
            assert!(saw_publication);
            (client, sub, reconnected, reset)
        }));
    }

    for _ in 0..CLIENTS {
        tokio::time::timeout(WAIT, seen_rx.recv()).await.unwrap().unwrap();
    }

    let stopped = Instant::now();
    if graceful {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(server.wait().success());
    } else {
        drop(server); // SIGKILL, and wait for the exit
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _server = serve(&listen);
    let restarted = Instant::now();

    let mut times = Vec::new();
    let mut keep = Vec::new();
    for watcher in watchers {
        let (client, sub, reconnected, reset) = tokio::time::timeout(WAIT, watcher).await.unwrap().unwrap();
        match reset {
            SubscriptionEvent::Reset { previous_epoch, epoch, .. } => {
                assert_eq!(previous_epoch, old_epoch);
                assert_ne!(epoch, old_epoch);
            }
            other => panic!("the lost history must be reported as a reset, got {other:?}"),
        }
        times.push(reconnected.duration_since(stopped));
        keep.push((client, sub));
    }
    times.sort();
    let (first, last) = (times[0], times[CLIENTS - 1]);
    // The densest 50 ms window: without jitter all 200 would land in one.
    let densest = (0..CLIENTS)
        .map(|i| times[i..].iter().take_while(|t| **t - times[i] < Duration::from_millis(50)).count())
        .max()
        .unwrap();
    println!(
        "{} restart: server back after {:?}; reconnects from {first:?} to {last:?}, median {:?}, densest 50 ms: {densest}",
        if graceful { "graceful" } else { "killed" },
        restarted.duration_since(stopped),
        times[CLIENTS / 2]
    );
    assert!(last - first >= Duration::from_millis(300), "reconnects spread over {:?}", last - first);
    assert!(densest <= CLIENTS / 2, "{densest} of {CLIENTS} reconnected within one 50 ms window");
    for (client, _) in &keep {
        assert!(matches!(client.state(), State::Connected { .. }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_clients_reconnect_jittered_and_hear_of_the_new_epoch() {
    restart_with_200_clients(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_clients_reconnect_jittered_and_hear_of_the_new_epoch() {
    restart_with_200_clients(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_made_while_the_server_is_down_arrive_in_order_and_a_full_queue_says_so() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let publisher = Client::builder(url(port)).backoff(fast_backoff()).build().unwrap();
    let small = Client::builder(url(port)).backoff(fast_backoff()).queue_limit(10).build().unwrap();
    let dir = std::env::temp_dir().join(format!("peregrine-sdk-queue-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let queue_file = dir.join("queue.jsonl");
    let _ = std::fs::remove_file(&queue_file);

    let acks: Vec<_> = (0..50).map(|i| publisher.publish("jobs:offline", json!(i))).collect();
    let small_acks: Vec<_> = (0..10).map(|i| small.publish("jobs:small", json!(i))).collect();
    let refused = tokio::time::timeout(Duration::from_secs(2), small.publish("jobs:small", json!(10))).await;
    assert_eq!(refused.expect("refused at once"), Err(Error::QueueFull { limit: 10 }));

    // A program that queues publishes to a file and exits before the server is back...
    let first_run = Client::builder(url(port)).queue_file(&queue_file).build().unwrap();
    let early: Vec<_> = (0..5).map(|i| first_run.publish("jobs:persisted", json!(i))).collect();
    first_run.close().await;
    for ack in early {
        assert!(matches!(ack.await, Err(Error::Closed { reason }) if reason.contains("queue file")));
    }
    assert!(matches!(publisher.state(), State::Disconnected { .. } | State::Connecting { .. }));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let _server = serve(&format!("127.0.0.1:{port}"));
    // ... and the next run sends them.
    let second_run =
        Client::builder(url(port)).queue_file(&queue_file).backoff(fast_backoff()).build().unwrap();

    for (i, ack) in acks.into_iter().enumerate() {
        let ack = tokio::time::timeout(WAIT, ack).await.unwrap().unwrap();
        assert_eq!(ack.offset, Some(i as u64 + 1));
    }
    for ack in small_acks {
        tokio::time::timeout(WAIT, ack).await.unwrap().unwrap();
    }
    assert_eq!(history_data(port, "jobs:offline").await, (0..50).map(|i| json!(i)).collect::<Vec<_>>());
    assert_eq!(history_data(port, "jobs:small").await, (0..10).map(|i| json!(i)).collect::<Vec<_>>());
    let deadline = Instant::now() + WAIT;
    loop {
        let data = history_data(port, "jobs:persisted").await;
        if data.len() == 5 {
            assert_eq!(data, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
            break;
        }
        assert!(Instant::now() < deadline, "the queue file's publishes never arrived: {data:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second_run.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_reply_is_lost_is_retried_and_lands_once() {
    let (server, proxy) = serve_behind_proxy().await;
    let client = Client::builder(proxy.url())
        .backoff(fast_backoff())
        .ack_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    client.connected().await.unwrap();

    proxy.mute_all(); // the server's answers on this connection are lost
    let ack = client.publish("jobs:once", json!("exactly once"));
    let deadline = Instant::now() + WAIT;
    while history_data(server.port, "jobs:once").await.is_empty() {
        assert!(Instant::now() < deadline, "the server never got the publish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(proxy.cut_all() >= 1);

    let ack = tokio::time::timeout(WAIT, ack).await.unwrap().unwrap();
    assert!(ack.duplicate, "the retry reached the server, which recognised it: {ack:?}");
    assert_eq!(ack.offset, Some(1));
    assert_eq!(history_data(server.port, "jobs:once").await, vec![json!("exactly once")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_stops_answering_is_replaced() {
    let (_server, proxy) = serve_behind_proxy().await;
    let client = Client::builder(proxy.url())
        .backoff(fast_backoff())
        .ping_interval(Duration::from_millis(200))
        .pong_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let first = client.connected().await.unwrap();
    let mut events = client.events();
    let frozen = Instant::now();
    proxy.freeze_all();
    let reason = loop {
        match tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap() {
            State::Disconnected { code: None, reason, .. } => break reason,
            State::Closed { reason, .. } => panic!("closed: {reason}"),
            _ => {}
        }
    };
    let detected = frozen.elapsed();
    assert!(reason.contains("ping"), "{reason}");
    let second = tokio::time::timeout(WAIT, client.connected()).await.unwrap().unwrap();
    assert_ne!(first, second, "a new connection");
    println!("dead connection detected after {detected:?}: {reason}");
}

const SECRET: &str = "sdk-test-secret";

/// A server that requires HS256 connection tokens signed with [`SECRET`].
fn serve_with_tokens() -> EchoServer {
    EchoServer::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--set",
        "token.allow_anonymous=false",
        "--token-hmac-secret",
        SECRET,
    ])
}

/// A token for user `ann` that expires `seconds` from now.
fn token_expiring_in(seconds: u64) -> Result<String, String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"sub": "ann", "exp": now + seconds});
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_before_they_expire_without_reconnecting() {
    let server = serve_with_tokens();
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    let client = Client::builder(url(server.port))
        .token_provider(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let now =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                let claims = json!({"sub": "ann", "exp": now + 2});
                let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
                jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
                    .map_err(|e| e.to_string())
            }
        })
        .build()
        .unwrap();
    let mut events = client.events();
    let client_id = client.connected().await.unwrap();
    // Well past the first token's expiry, which would close the connection with 3005.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    // Only the first connection's own events may be queued: the state is
    // published before its event, so they may come before or after `connected`.
    while let Ok(state) = events.try_recv() {
        match state {
            State::Connecting { .. } => {}
            State::Connected { client_id: id } => assert_eq!(id, client_id, "the connection was replaced"),
            other => panic!("no state change: the connection was never dropped: {other:?}"),
        }
    }
    assert_eq!(client.state(), State::Connected { client_id });
    assert!(issued.load(Ordering::SeqCst) >= 2, "the provider was asked for fresh tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_protocol_clients_publish_subscribe_and_read_presence_and_history() {
    let server = serve("127.0.0.1:0");
    for encoding in [peregrine_client::Encoding::MsgPack, peregrine_client::Encoding::Protobuf] {
        let channel = format!("room:{}", encoding.subprotocol());
        let client = Client::builder(url(server.port)).encoding(encoding).build().unwrap();
        let mut sub = client.subscribe(channel.as_str()).await.unwrap();
        let client_id = client.connected().await.unwrap();
        let ack = client.publish(channel.as_str(), json!({"n": 1, "text": "binary"})).await.unwrap();
        assert_eq!(ack.offset, Some(1));
        let bytes = vec![0u8, 1, 2, 254, 255];
        client.publish(channel.as_str(), bytes.clone()).await.unwrap();
        let mut publications = Vec::new();
        while publications.len() < 2 {
            if let SubscriptionEvent::Publication(p) = next_event(&mut sub).await {
                publications.push(p);
            }
        }
        let json = publications[0].data_json::<serde_json::Value>().unwrap();
        assert_eq!(json, json!({"n": 1, "text": "binary"}), "{encoding:?}");
        assert!(publications[1].data.is_binary() && publications[1].data_bytes() == bytes, "{encoding:?}");
        assert!(client.presence(channel.as_str()).await.unwrap().contains_key(&client_id));
        let history = client.history(channel.as_str(), Some(10), None).await.unwrap();
        assert_eq!(history.publications.len(), 2);
        assert_eq!(history.offset, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_without_a_provider_closes_the_client_with_the_reason() {
    let server = serve_with_tokens();
    let client = Client::builder(url(server.port)).token(token_expiring_in(1).unwrap()).build().unwrap();
    let first = client.connected().await.unwrap();
    let mut events = client.events();
    let (code, reason) = loop {
        match tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap() {
            State::Closed { code, reason } => break (code, reason),
            // The first connection's own event can still arrive here: the state is
            // published before its event. Any other connection is a reconnect.
            State::Connected { client_id } => {
                assert_eq!(client_id, first, "reconnected with a token the server refuses");
            }
            _ => {}
        }
    };
    assert_eq!(code, Some(peregrine_client::codes::disconnect::EXPIRED));
    assert!(reason.contains("token_provider"), "{reason}");
    let refused = client.publish("chat:x", json!(1)).await;
    assert!(matches!(refused, Err(Error::Closed { .. })), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_publishes_are_retried_until_they_land_once() {
    let server = EchoServer::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--set",
        "client.publish_rate=100.0",
        "--set",
        "client.publish_burst=20",
    ]);
    let client = Client::new(url(server.port)).unwrap();
    let acks: Vec<_> = (0..100).map(|i| client.publish("chat:limited", json!(i))).collect();
    let mut offsets = Vec::new();
    for ack in acks {
        offsets.push(tokio::time::timeout(WAIT, ack).await.unwrap().unwrap().offset.unwrap());
    }
    offsets.sort();
    assert_eq!(offsets, (1..=100).collect::<Vec<_>>(), "each landed once");
    let mut data = history_data(server.port, "chat:limited").await;
    assert_eq!(data.len(), 100);
    data.sort_by_key(|v| v.as_u64());
    assert_eq!(data, (0..100).map(|i| json!(i)).collect::<Vec<_>>());
}
