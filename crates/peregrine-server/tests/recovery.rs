//! Recovery over real sockets: a subscriber cut off (TCP reset, no close frame) while
//! publications flow comes back with `since` and ends with every publication exactly once
//! and in order; one away longer than history gets the exact missing range; a publish
//! retried after a lost reply lands once.

mod common;

use std::time::Duration;

use common::{Client, TestServer};
use peregrine_server::channel::ChannelOptions;
use peregrine_server::config::Config;
use peregrine_wire::*;
use serde_json::json;

fn config_with_history(size: usize) -> Config {
    let mut config = Config::development();
    config.channels.default = Some(ChannelOptions { history_size: size, ..ChannelOptions::development() });
    config.client.publish_rate = 1e9;
    config.client.publish_burst = u32::MAX;
    config
}

/// Subscribes (with recovery from `since` when given) through `connect.subs` or a
/// `subscribe` command, and returns the reply.
async fn resubscribe(
    server: &TestServer,
    channel: &str,
    since: Option<StreamPosition>,
    via_connect: bool,
) -> (Client, SubscribeResult) {
    if via_connect {
        let mut c = Client::open(server, Encoding::Json).await;
        let mut req = ConnectRequest::default();
        let opts = SubscribeOptions { recover: since.is_some(), since, ..Default::default() };
        req.subs.insert(channel.to_owned(), opts);
        let Ok(ReplyKind::Connect(mut r)) = c.command(CommandKind::Connect(req)).await else {
            panic!("connect")
        };
        let result = r.subs.remove(channel).expect("subscription result in the connect reply");
        (c, result)
    } else {
        let mut c = Client::connect(server).await;
        let req = SubscribeRequest {
            channel: channel.into(),
            recover: since.is_some(),
            since,
            ..Default::default()
        };
        let result = c.subscribe(req).await.expect("subscribe");
        (c, result)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_cut_repeatedly_while_publishing_gets_everything_once_in_order() {
    const TOTAL: u64 = 3000;
    let server = TestServer::start(config_with_history(TOTAL as usize)).await;
    let channel = "ticker:btc";
    let (mut sub, first) = resubscribe(&server, channel, None, false).await;
    let epoch = first.epoch.clone();

    let mut publisher = Client::connect(&server).await;
    let publishing = tokio::spawn(async move {
        for n in 1..=TOTAL {
            publisher.publish("ticker:btc", json!({ "n": n })).await.expect("publish");
            if n % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });

    let mut seen: Vec<u64> = Vec::new();
    let mut cuts = 0;
    let mut next_cut = 250;
    let mut via_connect = false;
    while seen.last().copied().unwrap_or(0) < TOTAL {
        let (_, p) = sub.publication().await;
        assert_eq!(
            p.data_json::<serde_json::Value>().unwrap()["n"],
            json!(p.offset),
            "payload matches its offset"
        );
        seen.push(p.offset);
        // Cut every ~250 publications, at varying points.
        if seen.len() as u64 >= next_cut && cuts < 10 {
            cuts += 1;
            next_cut += 250 + cuts * 7;
            sub.cut();
            tokio::time::sleep(Duration::from_millis(5 + cuts * 3)).await;
            let since = StreamPosition { epoch: epoch.clone(), offset: *seen.last().unwrap() };
            via_connect = !via_connect;
            let (c, r) = resubscribe(&server, channel, Some(since), via_connect).await;
            assert_eq!(r.epoch, epoch);
            assert!(r.recovered, "history covers the outage: {r:?}");
            assert_eq!(r.gap, None);
            seen.extend(r.publications.iter().map(|p| p.offset));
            sub = c;
        }
    }
    publishing.await.unwrap();
    assert_eq!(cuts, 10, "the subscriber was cut 10 times");
    let expected: Vec<u64> = (1..=TOTAL).collect();
    assert_eq!(seen, expected, "every publication exactly once, in order");
    server.finish().await;
}

#[tokio::test]
async fn subscriber_away_longer_than_history_gets_the_exact_missing_range() {
    let server = TestServer::start(config_with_history(10)).await;
    let (sub, first) = resubscribe(&server, "feed:1", None, false).await;
    let mut publisher = Client::connect(&server).await;
    for n in 1..=3 {
        publisher.publish("feed:1", json!(n)).await.unwrap();
    }
    let mut sub = sub;
    for _ in 1..=3 {
        sub.publication().await;
    }
    sub.cut();
    // 25 more while away; history keeps only the last 10 (19..=28).
    for n in 4..=28 {
        publisher.publish("feed:1", json!(n)).await.unwrap();
    }
    let since = StreamPosition { epoch: first.epoch.clone(), offset: 3 };
    let (mut back, r) = resubscribe(&server, "feed:1", Some(since), false).await;
    assert!(!r.recovered, "{r:?}");
    assert_eq!(r.gap, Some(Gap { from: 4, to: 18 }), "exactly the offsets history lost");
    let offsets: Vec<u64> = r.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, (19..=28).collect::<Vec<_>>(), "what is left, in order");
    // And live publications continue right after.
    publisher.publish("feed:1", json!(29)).await.unwrap();
    assert_eq!(back.publication().await.1.offset, 29);
    server.finish().await;
}

#[tokio::test]
async fn unknown_epoch_is_reported_as_a_reset_not_silently() {
    let server = TestServer::start(config_with_history(10)).await;
    let since = StreamPosition { epoch: "gone-epoch".into(), offset: 7 };
    let (_c, r) = resubscribe(&server, "feed:2", Some(since), false).await;
    assert!(!r.recovered);
    assert_ne!(r.epoch, "gone-epoch", "the new epoch tells the client its history is gone");
    server.finish().await;
}

#[tokio::test]
async fn publish_retried_after_a_lost_reply_is_published_once() {
    let server = TestServer::start(config_with_history(100)).await;
    let mut sub = Client::connect(&server).await;
    sub.sub("orders:1").await;

    // The publisher sends its publish and is cut before reading the reply.
    let mut publisher = Client::connect(&server).await;
    let req = PublishRequest {
        channel: "orders:1".into(),
        data: json!({"order": 42}).into(),
        idempotency_key: Some("order-42".into()),
    };
    let id = publisher.next_command_id();
    publisher.send(&[Command { id, kind: CommandKind::Publish(req.clone()) }]).await;
    // Wait until the server has it (the subscriber sees it), then lose the reply.
    let (_, first) = sub.publication().await;
    publisher.cut();

    // The retry, on a new connection, reuses the key.
    let mut retry = Client::connect(&server).await;
    let Ok(ReplyKind::Publish(r)) = retry.command(CommandKind::Publish(req)).await else { panic!("publish") };
    assert!(r.duplicate, "the retry is recognised");
    assert_eq!(r.offset, Some(first.offset), "and answered with the original offset");

    // Nothing more was published: the next publication the subscriber sees is a new one.
    retry.publish("orders:1", json!({"order": 43})).await.unwrap();
    let (_, next) = sub.publication().await;
    assert_eq!(next.data, json!({"order": 43}).into());
    assert_eq!(next.offset, first.offset + 1);
    server.finish().await;
}

/// Publishes `count` publications of about 2 KB each to `channel` (600 of them are 1.2 MB,
/// more than the default 1 MiB outbound queue); returns the stream's epoch.
async fn publish_large(server: &TestServer, channel: &str, count: u64) -> String {
    let mut publisher = Client::connect(server).await;
    let filler = "x".repeat(2000);
    let mut epoch = String::new();
    for n in 1..=count {
        let r = publisher.publish(channel, json!({ "n": n, "filler": filler })).await.expect("publish");
        epoch = r.epoch.expect("a channel with history");
    }
    epoch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_bigger_than_the_outbound_queue_is_streamed_once_and_in_order() {
    // 4,000 publications of 2 KB: 8 MB, more than the 1 MiB queue and the socket buffers,
    // so the recovery is still streaming when the live publications come.
    const TOTAL: u64 = 4000;
    let server = TestServer::start(config_with_history(5000)).await;
    let channel = "hist:big";
    let epoch = publish_large(&server, channel, TOTAL).await;
    let mut publisher = Client::connect(&server).await;
    let mut top = TOTAL;
    for via_connect in [false, true] {
        let streamed_before = streamed(&server);
        let since = StreamPosition { epoch: epoch.clone(), offset: 0 };
        let (mut c, r) = resubscribe(&server, channel, Some(since), via_connect).await;
        assert!(r.recovered && r.more && r.gap.is_none(), "the rest follows: {:?}", (r.recovered, r.more));
        assert_eq!(r.offset, top);
        let mut seen: Vec<u64> = r.publications.iter().map(|p| p.offset).collect();
        assert!(seen.len() < 600, "the reply holds the first page only ({})", seen.len());
        // Live publications made while the rest is streamed are held back, then follow it.
        for _ in 0..10 {
            top = publisher.publish(channel, json!({ "live": true })).await.unwrap().offset.unwrap();
        }
        let streamed_meanwhile = streamed(&server) - streamed_before;
        assert!(streamed_meanwhile < TOTAL - seen.len() as u64, "the stream was still going");
        while seen.last().copied().unwrap_or(0) < top {
            seen.push(c.publication().await.1.offset);
        }
        assert_eq!(seen, (1..=top).collect::<Vec<_>>(), "every publication once, in order");
        assert!(c.command(CommandKind::Ping(PingRequest {})).await.is_ok(), "still connected");
    }
    assert_eq!(server.node.metrics().slow_disconnects.get(), 0, "nobody was cut as slow");
    server.finish().await;
}

/// Publications streamed after their recovery reply so far.
fn streamed(server: &TestServer) -> u64 {
    server.node.metrics().recovery_streamed.get()
}

async fn history(c: &mut Client, req: HistoryRequest) -> HistoryResult {
    match c.command(CommandKind::History(req)).await {
        Ok(ReplyKind::History(h)) => h,
        other => panic!("history: {other:?}"),
    }
}

#[tokio::test]
async fn a_history_bigger_than_the_outbound_queue_comes_in_pages() {
    let server = TestServer::start(config_with_history(5000)).await;
    let channel = "hist:paged";
    publish_large(&server, channel, 600).await;
    let mut c = Client::connect(&server).await;
    for (reverse, limit) in [(false, None), (true, Some(250))] {
        let (mut since, mut seen, mut pages) = (None, Vec::new(), 0);
        loop {
            let req = HistoryRequest { channel: channel.into(), limit, since: since.clone(), reverse };
            let h = history(&mut c, req).await;
            pages += 1;
            seen.extend(h.publications.iter().map(|p| p.offset));
            if !h.more {
                break;
            }
            since = Some(StreamPosition { epoch: h.epoch.clone(), offset: *seen.last().unwrap() });
        }
        let mut expected: Vec<u64> = (1..=600).collect();
        if reverse {
            expected.reverse();
        }
        assert_eq!(seen, expected, "each publication once, in the order read (reverse: {reverse})");
        assert!(pages >= 3, "{pages} pages");
    }
    server.finish().await;
}

#[tokio::test]
async fn a_position_beyond_the_top_of_its_epoch_is_refused_as_unrecoverable() {
    let server = TestServer::start(config_with_history(10)).await;
    let mut publisher = Client::connect(&server).await;
    let epoch = publisher.publish("feed:3", json!(1)).await.unwrap().epoch.unwrap();
    let mut c = Client::connect(&server).await;
    let since = Some(StreamPosition { epoch, offset: 999 });
    let req = SubscribeRequest { channel: "feed:3".into(), since, recover: true, ..Default::default() };
    let e = c.subscribe(req).await.unwrap_err();
    assert_eq!(e.code, codes::error::UNRECOVERABLE_POSITION);
    assert!(e.message.contains("beyond the top"), "{}", e.message);
    server.finish().await;
}
