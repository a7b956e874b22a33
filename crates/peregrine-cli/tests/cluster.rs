//! Several `peregrine serve` nodes sharing Redis (issue 20's acceptance), all real processes:
//! redis-server (standalone, two sharded, a three-master cluster), nginx with the shipped
//! configuration, the `peregrine` binary, and the Rust SDK as publisher and subscribers.
//!
//! Every test asserts what a client sees: each publication once and in order, or an explicit
//! `Gap`/`Reset`, whichever node it is on, whatever fails underneath. Every wait is bounded.
//!
//! They skip (loudly) when redis-server or nginx is missing, unless
//! `TEST_REQUIRE_SERVICES=1` (scripts/test-all), which makes that a failure instead.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use peregrine_client::{Backoff, Client, State, SubscribeOptions, Subscription, SubscriptionEvent};
use peregrine_wire::PublishResult;
use serde_json::{Value, json};
use support::Lcg;
use support::node::{Backend, PeregrineNode};
use support::proxy::Proxy;
use support::services::{Nginx, RedisCluster, RedisOptions, RedisServer, free_port};

/// The longest wait for any one thing a client should see.
const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------------------

/// The Redis servers of a test, kept alive as long as it runs.
enum Redis {
    One(RedisServer),
    Sharded(Vec<RedisServer>),
    Cluster(RedisCluster),
}

impl Redis {
    fn one(test: &str) -> Option<Redis> {
        RedisServer::start(test).map(Redis::One)
    }

    fn sharded(test: &str) -> Option<Redis> {
        Some(Redis::Sharded(vec![RedisServer::start(test)?, RedisServer::start(test)?]))
    }

    fn cluster(test: &str) -> Option<Redis> {
        RedisCluster::start(test).map(Redis::Cluster)
    }

    /// The broker section for nodes of `test` (its name is the key prefix: tests never share keys).
    fn backend(&self, test: &str) -> Backend {
        let (addresses, cluster) = match self {
            Redis::One(r) => (vec![r.address()], false),
            Redis::Sharded(rs) => (rs.iter().map(RedisServer::address).collect(), false),
            Redis::Cluster(c) => (c.addresses(), true),
        };
        Backend::Redis { addresses, cluster, password: None, prefix: test.to_owned() }
    }

    fn server(&mut self) -> &mut RedisServer {
        match self {
            Redis::One(r) => r,
            _ => panic!("a test that kills Redis uses one standalone server"),
        }
    }
}

/// Three nodes named node-a, node-b, node-c on `redis`.
fn three_nodes(redis: &Redis, test: &str) -> Vec<PeregrineNode> {
    let backend = redis.backend(test);
    ["node-a", "node-b", "node-c"].iter().map(|name| PeregrineNode::start(name, &backend, "")).collect()
}

fn fast_backoff() -> Backoff {
    Backoff { min_delay: Duration::from_millis(20), max_delay: Duration::from_millis(300) }
}

fn client(url: &str, queue: usize) -> Client {
    Client::builder(url).backoff(fast_backoff()).queue_limit(queue).build().unwrap()
}

/// Subscribes without join/leave events (the tests follow publications) and checks the
/// first event: the stream's position, `(epoch, offset)`.
async fn subscribe(client: &Client, channel: &str) -> (Subscription, String, u64) {
    let options = SubscribeOptions { join_leave: Some(false), ..Default::default() };
    let mut sub = tokio::time::timeout(WAIT, client.subscribe_with(channel, options))
        .await
        .expect("subscribed in time")
        .expect("subscribed");
    match next_event(&mut sub).await {
        SubscriptionEvent::Subscribed { epoch, offset, .. } => (sub, epoch, offset),
        other => panic!("first event {other:?}"),
    }
}

async fn next_event(sub: &mut Subscription) -> SubscriptionEvent {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("silence: no event on {} for {WAIT:?}", sub.channel()))
        .expect("subscription open")
}

// ---------------------------------------------------------------------------------------
// Publishing and following a stream
// ---------------------------------------------------------------------------------------

/// Publishes `json!(i)` for i in 0..total through `publisher`, `batch` at a time with a
/// `pause` between batches (so faults land mid-stream); `queued` counts what was handed
/// to the SDK. Resolves to every acknowledgement, in publish order.
fn publish_paced(
    publisher: Client,
    channel: &'static str,
    total: usize,
    batch: usize,
    pause: Duration,
) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<Vec<PublishResult>>) {
    let queued = Arc::new(AtomicUsize::new(0));
    let counter = queued.clone();
    let task = tokio::spawn(async move {
        let mut acks = Vec::with_capacity(total);
        for start in (0..total).step_by(batch) {
            for i in start..(start + batch).min(total) {
                acks.push(publisher.publish(channel, json!(i)));
            }
            counter.store((start + batch).min(total), Ordering::SeqCst);
            tokio::time::sleep(pause).await;
        }
        let mut results = Vec::with_capacity(total);
        for (i, ack) in acks.into_iter().enumerate() {
            let ack = tokio::time::timeout(WAIT, ack).await;
            results.push(ack.unwrap_or_else(|_| panic!("publish {i} not acknowledged in time")).unwrap());
        }
        publisher.close().await;
        results
    });
    (queued, task)
}

/// Waits (up to [`WAIT`]) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the publisher has queued `n` publications.
async fn queued_at_least(queued: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + WAIT;
    while queued.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "the publisher stalled before {n}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The acknowledged positions: every publish in one epoch got offsets 1..=total in
/// publish order (a duplicate would take an offset, a loss would leave a hole).
fn assert_acks_are_one_to(acks: &[PublishResult], total: usize) -> String {
    let offsets: Vec<Option<u64>> = acks.iter().map(|a| a.offset).collect();
    assert_eq!(offsets, (1..=total as u64).map(Some).collect::<Vec<_>>(), "acks are 1..={total}");
    let epoch = acks[0].epoch.clone().expect("an epoch");
    assert!(acks.iter().all(|a| a.epoch.as_ref() == Some(&epoch)), "one epoch");
    epoch
}

/// What a subscriber saw while following its stream to a position.
#[derive(Debug, Default)]
struct Followed {
    /// The data of every publication, in arrival order.
    data: Vec<u64>,
    /// `Subscribed` events after the first one (reconnects, resubscribes).
    resubscribes: usize,
    /// How many of those said everything missed was recovered.
    recovered: usize,
    /// `Reset` events (a new epoch).
    resets: usize,
    /// The offset in the new epoch the last `Reset` put the subscriber at.
    reset_to: Option<u64>,
    /// `Gap` events.
    gaps: usize,
}

/// Reads `sub` until its position is `to` (epoch, offset), checking each event against
/// the position so far: a publication is the next offset of the current epoch, a `Gap`
/// starts right after the position, a `Reset` leaves the epoch the subscriber was in.
/// With `may_lose` false, `Gap` and `Reset` fail the test. Silence (nothing for [`WAIT`])
/// before reaching `to` fails it too.
async fn follow(sub: &mut Subscription, from: (String, u64), to: &(String, u64), may_lose: bool) -> Followed {
    let who = sub.channel().to_owned();
    let (mut epoch, mut offset) = from;
    let mut seen = Followed::default();
    let mut last_data: Option<u64> = None;
    while (&epoch, offset) != (&to.0, to.1) {
        match next_event(sub).await {
            SubscriptionEvent::Publication(p) => {
                if let Some(e) = &p.epoch {
                    assert_eq!(e, &epoch, "{who}: a publication of another epoch without a Reset");
                }
                assert_eq!(p.offset, offset + 1, "{who}: offset after {offset} in {epoch}");
                let data: u64 = p.data_json().expect("JSON data");
                assert!(
                    last_data.is_none_or(|l| data > l),
                    "{who}: {data} after {last_data:?}: repeated or reordered"
                );
                (offset, last_data) = (p.offset, Some(data));
                seen.data.push(data);
            }
            SubscriptionEvent::Subscribed { recovered, .. } => {
                seen.resubscribes += 1;
                seen.recovered += usize::from(recovered);
            }
            SubscriptionEvent::Gap { from, to } => {
                assert!(may_lose, "{who}: nothing may be lost, got Gap {from}..={to} after {offset}");
                assert_eq!(from, offset + 1, "{who}: a gap starts right after the position");
                offset = to;
                seen.gaps += 1;
            }
            SubscriptionEvent::Reset { previous_epoch, epoch: new_epoch, offset: new_offset } => {
                assert!(may_lose, "{who}: nothing may be lost, got Reset to {new_epoch} after {offset}");
                assert_eq!(previous_epoch, epoch, "{who}: a Reset leaves the epoch the subscriber was in");
                assert_ne!(new_epoch, epoch);
                (epoch, offset) = (new_epoch, new_offset);
                // A new stream: its data may repeat what the old one had delivered.
                last_data = None;
                seen.resets += 1;
                seen.reset_to = Some(new_offset);
            }
            SubscriptionEvent::Join(_) | SubscriptionEvent::Leave(_) => {}
            SubscriptionEvent::Unsubscribed { code, reason } => {
                panic!("{who}: unsubscribed ({code:?}, {reason}) at {offset}")
            }
        }
    }
    // Nothing more: no duplicate after the last publication.
    let extra = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
    assert!(!matches!(extra, Ok(Some(SubscriptionEvent::Publication(_)))), "{who}: after the end: {extra:?}");
    seen
}

/// Follows every subscription to `to` with nothing lost: each sees data 0..total in order.
async fn assert_everyone_got_everything(
    subs: &mut [(Subscription, String, u64)],
    to: &(String, u64),
    total: usize,
) -> Vec<Followed> {
    let mut all = Vec::new();
    for (i, (sub, epoch, offset)) in subs.iter_mut().enumerate() {
        let seen = follow(sub, (epoch.clone(), *offset), to, false).await;
        assert_eq!(seen.data.len(), total, "subscriber {i}");
        assert!(seen.data.iter().copied().eq(0..total as u64), "subscriber {i}: 0..{total}");
        assert_eq!(seen.recovered, seen.resubscribes, "subscriber {i}: every resubscribe recovered");
        all.push(seen);
    }
    all
}

// ---------------------------------------------------------------------------------------
// 1 and 5: one publication reaches every node; presence and history agree
// ---------------------------------------------------------------------------------------

/// Three nodes on `redis`: 100 publications over WebSocket and 100 over the HTTP API, all
/// made on node a, reach a subscriber on each node once, in order, with the same epoch and
/// offsets; presence, history and /api/info answer the same on every node.
async fn publication_on_one_node_reaches_all(redis: Redis, test: &str) {
    const EACH: usize = 100;
    const CHANNEL: &str = "chat:everywhere";
    let nodes = three_nodes(&redis, test);
    let mut subscribers = Vec::new();
    let mut subs = Vec::new();
    for node in &nodes {
        let client = client(&node.ws_url(), 10);
        let id = tokio::time::timeout(WAIT, client.connected()).await.unwrap().unwrap();
        subs.push(subscribe(&client, CHANNEL).await);
        subscribers.push((client, id));
    }
    let epoch = subs[0].1.clone();
    for (i, (_, e, offset)) in subs.iter().enumerate() {
        assert_eq!((e, *offset), (&epoch, 0), "node {}: one stream, one epoch, from any node", nodes[i].name);
    }

    let publisher = client(&nodes[0].ws_url(), EACH);
    let mut acks = Vec::new();
    for ack in (0..EACH).map(|i| publisher.publish(CHANNEL, json!(i))).collect::<Vec<_>>() {
        acks.push(tokio::time::timeout(WAIT, ack).await.expect("ack in time").unwrap());
    }
    for i in EACH..2 * EACH {
        let (status, body) = nodes[0].api("publish", &json!({"channel": CHANNEL, "data": i}));
        assert_eq!(status, 200, "{body}");
        let (offset, epoch) = (body["offset"].as_u64(), body["epoch"].as_str().map(str::to_owned));
        acks.push(PublishResult { offset, epoch, duplicate: false });
    }
    assert_eq!(assert_acks_are_one_to(&acks, 2 * EACH), epoch, "the epoch subscribers were given");
    let to = (epoch.clone(), 2 * EACH as u64);
    assert_everyone_got_everything(&mut subs, &to, 2 * EACH).await;

    // Presence: every node lists the three subscribers (and the same way).
    let ids: Vec<&String> = subscribers.iter().map(|(_, id)| id).collect();
    let mut answers = Vec::new();
    for node in &nodes {
        let (status, body) = node.api("presence", &json!({"channel": CHANNEL}));
        assert_eq!(status, 200, "{body}");
        let clients = body["clients"].as_object().cloned().unwrap_or_default();
        for id in &ids {
            assert!(clients.contains_key(*id), "node {}: presence has {id}: {body}", node.name);
        }
        answers.push(clients);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "presence differs between nodes: {answers:?}");
    // The SDK's presence (over WebSocket) says the same as the API.
    let over_ws = subscribers[1].0.presence(CHANNEL).await.unwrap();
    assert_eq!(over_ws.keys().collect::<Vec<_>>(), answers[0].keys().collect::<Vec<_>>());

    // History: the same 200 publications, epoch and top offset from every node.
    let mut histories = Vec::new();
    for node in &nodes {
        let (status, body) = node.api("history", &json!({"channel": CHANNEL}));
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["epoch"].as_str(), body["offset"].as_u64()), (Some(epoch.as_str()), Some(200)));
        let data: Vec<Value> =
            body["publications"].as_array().unwrap().iter().map(|p| p["data"].clone()).collect();
        assert_eq!(data, (0..2 * EACH).map(|i| json!(i)).collect::<Vec<_>>(), "node {}", node.name);
        histories.push(body);
    }
    assert!(histories.windows(2).all(|w| w[0] == w[1]));

    // Every node knows every live node (heartbeats through Redis).
    for node in &nodes {
        let (status, info) = node.get("/api/info");
        assert_eq!(status, 200, "{info}");
        let text = info.to_string();
        for other in &nodes {
            assert!(
                text.contains(&format!("\"{}\"", other.name)),
                "node {}'s /api/info lacks {}: {info}",
                node.name,
                other.name
            );
        }
    }
    for (client, _) in subscribers {
        client.close().await;
    }
}

/// Runs [`publication_on_one_node_reaches_all`] on the Redis set-up `start` makes.
async fn reaches_all_on(test: &str, start: fn(&str) -> Option<Redis>) {
    let Some(redis) = start(test) else { return };
    publication_on_one_node_reaches_all(redis, test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_publication_on_one_node_reaches_all() {
    reaches_all_on("one_redis_publication_on_one_node_reaches_all", Redis::one).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sharded_redis_publication_on_one_node_reaches_all() {
    reaches_all_on("two_sharded_redis_publication_on_one_node_reaches_all", Redis::sharded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_publication_on_one_node_reaches_all() {
    reaches_all_on("redis_cluster_publication_on_one_node_reaches_all", Redis::cluster).await;
}

// ---------------------------------------------------------------------------------------
// 2: connection resets behind nginx round robin
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_resets_behind_nginx_lose_and_repeat_nothing() {
    const TEST: &str = "twenty_resets_behind_nginx_lose_and_repeat_nothing";
    const TOTAL: usize = 10_000;
    const CUTS: usize = 20;
    const CHANNEL: &str = "feed:resets";
    let Some(redis) = Redis::one(TEST) else { return };
    let nodes = three_nodes(&redis, TEST);
    let upstreams: Vec<String> = nodes.iter().map(PeregrineNode::address).collect();
    let Some(nginx) = Nginx::start(TEST, &upstreams) else { return };
    // Between the clients and nginx: a proxy that resets connections (RST, no close frame).
    let proxy = Proxy::start(format!("127.0.0.1:{}", nginx.port).parse().unwrap()).await;

    let subscriber = client(&proxy.url(), 10);
    let mut subs = vec![subscribe(&subscriber, CHANNEL).await];
    let (queued, publishing) =
        publish_paced(client(&proxy.url(), TOTAL), CHANNEL, TOTAL, 50, Duration::from_millis(5));

    // One cut at a random count of queued publications in each twentieth.
    let mut rng = Lcg::from_clock();
    let stride = (TOTAL / CUTS) as u64;
    let mut resets = 0;
    for i in 0..CUTS as u64 {
        queued_at_least(&queued, (i * stride + 1 + rng.below(stride - 1)) as usize).await;
        resets += proxy.cut_all();
    }
    let acks = publishing.await.unwrap();
    let epoch = assert_acks_are_one_to(&acks, TOTAL);
    let seen = assert_everyone_got_everything(&mut subs, &(epoch, TOTAL as u64), TOTAL).await;
    assert!(resets >= CUTS, "{resets} connections reset");
    assert!(seen[0].resubscribes >= 1, "the subscriber came back after resets: {:?}", seen[0]);

    // Round robin put the reconnects on every node: each accepted more than the first two.
    let accepted: Vec<f64> = nodes.iter().map(|n| n.metric("connections_accepted_total")).collect();
    assert!(accepted.iter().all(|&n| n >= 2.0), "reconnects landed on every node: {accepted:?}");
    println!("{resets} resets, {} resubscribes, accepted per node {accepted:?}", seen[0].resubscribes);
    subscriber.close().await;
}

// ---------------------------------------------------------------------------------------
// HTTP transports on three nodes behind round-robin nginx (issue 22)
// ---------------------------------------------------------------------------------------

/// SSE, HTTP-streaming and long-polling clients behind nginx round robin, no stickiness:
/// their sends and polls land on any node and are relayed to the one holding the session.
/// Each subscribes, publishes (acknowledged), and lives through 10 cuts of every connection
/// with nothing lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_transports_behind_nginx_survive_ten_cuts() {
    use support::http_client::{Follower, Kind};
    const TEST: &str = "http_transports_behind_nginx_survive_ten_cuts";
    const EACH: usize = 150;
    const CUTS: usize = 10;
    const CHANNEL: &str = "feed:http";
    let Some(redis) = Redis::one(TEST) else { return };
    let nodes = three_nodes(&redis, TEST);
    let upstreams: Vec<String> = nodes.iter().map(PeregrineNode::address).collect();
    let Some(nginx) = Nginx::start(TEST, &upstreams) else { return };
    let proxy = Proxy::start(format!("127.0.0.1:{}", nginx.port).parse().unwrap()).await;

    let kinds = [(Kind::Sse, "sse"), (Kind::Stream, "stream"), (Kind::Poll, "poll")];
    let followers: Vec<_> = kinds
        .iter()
        .map(|&(kind, name)| {
            let follower = Follower {
                kind,
                addr: proxy.addr,
                channel: CHANNEL.into(),
                name: name.into(),
                to_publish: EACH,
                window: 4,
                pace: Duration::from_millis(20),
                expect: EACH * kinds.len(),
            };
            tokio::spawn(follower.run(Duration::from_secs(120)))
        })
        .collect();
    let mut rng = Lcg::from_clock();
    let mut cut = 0;
    for _ in 0..CUTS {
        tokio::time::sleep(Duration::from_millis(150 + rng.below(250))).await;
        cut += proxy.cut_all();
    }
    let mut acked = Vec::new();
    for (follower, (kind, name)) in followers.into_iter().zip(kinds) {
        let record = follower.await.unwrap();
        let summary = format!("{name}: {} sessions, breaks {:?}", record.sessions, record.breaks);
        println!("{summary}");
        assert_eq!(record.acks.len(), EACH, "every publish acknowledged once: {summary}");
        acked.extend(record.acks.values().copied());
        let offsets: Vec<u64> = record.received.iter().map(|r| r.1).collect();
        let expected: Vec<u64> = (1..=(EACH * kinds.len()) as u64).collect();
        assert_eq!(offsets, expected, "each publication once, in order: {summary}");
        let epochs: std::collections::BTreeSet<&str> = record.received.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(epochs.len(), 1, "{epochs:?}");
        for (_, offset, data) in &record.received {
            assert!(data["k"].is_string(), "payload as published at {offset}: {data}");
        }
        // A cut ends at most the session it hits (a long-polling session outlives a cut poll:
        // the next poll asks again); a request landing on a node that does not hold the
        // session is relayed, not refused (else every send would start a new session).
        if kind != Kind::Poll {
            assert!(record.sessions >= 2, "the cuts broke this client's stream: {summary}");
        }
        assert!(record.sessions <= 1 + 2 * CUTS, "sessions only end at cuts: {summary}");
        assert!(
            !record.breaks.iter().any(|b| b.contains("401") || b.contains("403")),
            "no request was refused for its credentials: {summary}"
        );
    }
    acked.sort_unstable();
    assert_eq!(acked, (1..=(EACH * kinds.len()) as u64).collect::<Vec<_>>(), "acks: one offset each");
    assert!(cut >= CUTS, "{cut} connections cut");
    let accepted: Vec<f64> = nodes.iter().map(|n| n.metric("connections_accepted_total")).collect();
    let relayed: Vec<f64> = nodes.iter().map(|n| n.metric("http_relayed_requests_total")).collect();
    println!("{cut} connections cut; sessions accepted per node {accepted:?}, requests relayed {relayed:?}");
    // Round robin: about two requests in three land on a node that does not hold the session.
    assert!(relayed.iter().all(|&n| n >= 10.0), "every node relayed requests: {relayed:?}");
}

// ---------------------------------------------------------------------------------------
// 3: a node killed mid-stream
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_clients_recover_through_the_others() {
    node_lost_mid_stream("a_killed_node_s_clients_recover_through_the_others", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_s_clients_move_to_the_others() {
    // A deploy: SIGTERM, the node closes its clients with 1001 and drains.
    node_lost_mid_stream("a_stopped_node_s_clients_move_to_the_others", true).await;
}

/// Three nodes behind nginx, six subscribers and a publisher spread by round robin (the
/// publisher and one subscriber on node-b); node-b is lost a third of the way through 3,000
/// publications: killed (`kill -9`) or stopped (SIGTERM, `graceful`). Its clients reconnect
/// through nginx to the other nodes; every subscriber gets every publication once, in order,
/// and the publisher's resends (same idempotency keys, another node) land once.
async fn node_lost_mid_stream(test: &str, graceful: bool) {
    const TOTAL: usize = 3_000;
    const CHANNEL: &str = "feed:node-lost";
    let Some(redis) = Redis::one(test) else { return };
    let mut nodes = three_nodes(&redis, test);
    let upstreams: Vec<String> = nodes.iter().map(PeregrineNode::address).collect();
    let Some(nginx) = Nginx::start(test, &upstreams) else { return };

    // Round robin: s0 on a, the publisher on b, then s1..s5 on c, a, b, c, a.
    let mut clients = Vec::new();
    let mut subs = Vec::new();
    let mut publisher = None;
    for i in 0..7 {
        let c = client(&nginx.ws_url(), TOTAL);
        tokio::time::timeout(WAIT, c.connected()).await.expect("connected in time").unwrap();
        if i == 1 {
            publisher = Some(c);
            continue;
        }
        subs.push(subscribe(&c, CHANNEL).await);
        clients.push(c);
    }
    let on_b = nodes[1].get("/health").1["connections"].as_u64().unwrap();
    assert_eq!(on_b, 2, "round robin put the publisher and a subscriber on b");
    let (queued, publishing) =
        publish_paced(publisher.unwrap(), CHANNEL, TOTAL, 30, Duration::from_millis(10));

    queued_at_least(&queued, TOTAL / 3).await;
    if graceful {
        let status = tokio::task::block_in_place(|| nodes[1].stop());
        assert!(status.success(), "a clean exit after SIGTERM: {status}");
    } else {
        nodes[1].kill9();
    }

    let acks = publishing.await.unwrap();
    let epoch = assert_acks_are_one_to(&acks, TOTAL);
    let seen = assert_everyone_got_everything(&mut subs, &(epoch, TOTAL as u64), TOTAL).await;
    let moved = seen.iter().filter(|s| s.resubscribes > 0).count();
    assert!(moved >= 1, "b's subscriber reconnected elsewhere and recovered: {seen:?}");
    // The publisher has closed; its session may take a moment to go.
    eventually("every subscriber is on a or c now", || {
        let on = |n: &PeregrineNode| n.get("/health").1["connections"].as_u64().unwrap();
        on(&nodes[0]) + on(&nodes[2]) == 6
    })
    .await;
    for c in clients {
        c.close().await;
    }
}

// ---------------------------------------------------------------------------------------
// 4: Redis killed and restarted empty; Pub/Sub connections cut
// ---------------------------------------------------------------------------------------

/// A client connected straight to each node (no nginx), subscribed to `channel`.
async fn one_subscriber_per_node(
    nodes: &[PeregrineNode],
    channel: &str,
) -> (Vec<Client>, Vec<(Subscription, String, u64)>) {
    let mut clients = Vec::new();
    let mut subs = Vec::new();
    for node in nodes {
        let c = client(&node.ws_url(), 10);
        subs.push(subscribe(&c, channel).await);
        clients.push(c);
    }
    (clients, subs)
}

/// Whether any of `events` said the connection was lost.
fn disconnected(events: &mut tokio::sync::broadcast::Receiver<State>) -> Option<State> {
    std::iter::from_fn(|| events.try_recv().ok()).find(|s| matches!(s, State::Disconnected { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_mid_stream_gives_temporary_errors_then_a_reset() {
    // One publish in flight at a time: what this test asks of the broker does not depend
    // on the SDK's pipelining (the test below keeps it).
    redis_restarted_empty_mid_stream(
        "redis_restarted_empty_mid_stream_gives_temporary_errors_then_a_reset",
        1,
    )
    .await;
}

/// With publishes pipelined (the SDK's default window of 256), the ones in flight behind a
/// publish that failed with a temporary error are held back by the session until it is
/// resent, so publish order survives the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_keep_their_order_across_a_redis_restart() {
    redis_restarted_empty_mid_stream("pipelined_publishes_keep_their_order_across_a_redis_restart", 256)
        .await;
}

/// Three nodes on one Redis, a subscriber on each, a publisher on a (`in_flight`
/// publishes at a time); Redis is killed 600 publications in and restarted empty half a
/// second later. Publishes meanwhile fail with temporary errors and land once after; the
/// nodes keep their clients; every subscriber gets a `Reset` to the new epoch and then
/// every publication of it, in order.
async fn redis_restarted_empty_mid_stream(test: &'static str, in_flight: usize) {
    const TOTAL: usize = 2_000;
    const CHANNEL: &str = "feed:outage";
    let Some(mut redis) = Redis::one(test) else { return };
    let nodes = three_nodes(&redis, test);
    let (clients, mut subs) = one_subscriber_per_node(&nodes, CHANNEL).await;
    let mut clients: Vec<_> = clients.into_iter().map(|c| (c.events(), c)).collect();
    let publisher = Client::builder(nodes[0].ws_url())
        .backoff(fast_backoff())
        .queue_limit(TOTAL)
        .max_in_flight(in_flight)
        .build()
        .unwrap();
    let (queued, publishing) = publish_paced(publisher, CHANNEL, TOTAL, 20, Duration::from_millis(10));

    queued_at_least(&queued, 600).await;
    redis.server().kill9();
    // Meanwhile an API publish gets a temporary error (503), not a 500, and not a hang: while
    // Redis refuses connections a command fails after the reconnection's two short retries
    // (well under a second), not after `broker.redis.timeout` (5 s) or after the 5-10 s of
    // retries that once held commands longer than the SDK's acknowledgement timeout.
    let probe = json!({"channel": "probe:outage", "data": "during", "idempotency_key": "probe-1"});
    let asked = Instant::now();
    let (status, body) = nodes[1].api("publish", &probe);
    assert_eq!(status, 503, "a temporary error while Redis is down: {body}");
    assert!(asked.elapsed() < Duration::from_secs(4), "answered after {:?}: {body}", asked.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The nodes kept their clients through the outage.
    for (i, (events, _)) in clients.iter_mut().enumerate() {
        assert_eq!(disconnected(events), None, "subscriber {i} was disconnected while Redis was down");
    }
    let (status, health) = nodes[1].get("/health");
    // Still 200 (every node shares Redis: a 503 would take them all out of the balancer),
    // but degraded, saying why.
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded", "/health says Redis is unreachable: {health}");
    assert!(health["problem"].as_str().is_some_and(|p| p.contains("Redis")), "{health}");
    redis.server().restart();

    // The probe lands once after the outage (a retry with its key is a duplicate).
    let deadline = Instant::now() + WAIT;
    let landed = loop {
        let (status, body) = nodes[1].api("publish", &probe);
        if status == 200 {
            break body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "the API never recovered: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(landed["duplicate"], json!(false));
    let (_, again) = nodes[1].api("publish", &probe);
    assert_eq!(
        (again["duplicate"].clone(), again["offset"].clone()),
        (json!(true), landed["offset"].clone())
    );

    // Every publish was acknowledged once: offsets 1.. in the old epoch (a prefix: one
    // whose answer was lost with Redis is published again in the new one), 1..=n in the new.
    let acks = publishing.await.unwrap();
    let epochs: Vec<String> = acks.iter().map(|a| a.epoch.clone().unwrap()).collect();
    let (old, new) = (epochs[0].clone(), epochs[TOTAL - 1].clone());
    assert_ne!(old, new, "Redis lost everything: a new epoch");
    let split = epochs.iter().position(|e| *e == new).unwrap();
    assert!(epochs[split..].iter().all(|e| *e == new), "no third epoch, no going back");
    let offsets: Vec<u64> = acks.iter().map(|a| a.offset.unwrap()).collect();
    assert!(offsets[..split].iter().copied().eq(1..=split as u64), "old epoch acks 1..={split}");
    assert!(
        offsets[split..].iter().copied().eq(1..=(TOTAL - split) as u64),
        "new epoch acks 1..={} in publish order (out of order: a publish failed with a temporary \
         error while later ones were in flight, and those landed first): {:?}",
        TOTAL - split,
        &offsets[split..(split + 20).min(TOTAL)]
    );

    // Every subscriber reaches the last publication with an explicit Reset on the way.
    let to = (new, (TOTAL - split) as u64);
    for (i, (sub, epoch, offset)) in subs.iter_mut().enumerate() {
        let seen = follow(sub, (epoch.clone(), *offset), &to, true).await;
        assert_eq!(seen.resets, 1, "subscriber {i}: told of the new epoch once: {seen:?}");
        // The Reset names the position in the new stream the subscriber starts from: what
        // came after it arrives; a subscriber that came back late starts at the end.
        if seen.reset_to != Some(to.1) {
            assert_eq!(seen.data.last(), Some(&(TOTAL as u64 - 1)), "subscriber {i}: {seen:?}");
        }
    }
    for (_, c) in clients {
        c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_connections_cut_mid_stream_recover_from_history() {
    const TEST: &str = "pubsub_connections_cut_mid_stream_recover_from_history";
    const TOTAL: usize = 3_000;
    const CHANNEL: &str = "feed:pubsub-cut";
    let Some(mut redis) = Redis::one(TEST) else { return };
    let nodes = three_nodes(&redis, TEST);
    let (clients, mut subs) = one_subscriber_per_node(&nodes, CHANNEL).await;
    let (queued, publishing) =
        publish_paced(client(&nodes[0].ws_url(), TOTAL), CHANNEL, TOTAL, 30, Duration::from_millis(10));

    // Cut twice, a third and two thirds in: publications go on meanwhile and are missed by
    // the cut nodes' Pub/Sub; they must come back from history.
    for at in [TOTAL / 3, 2 * TOTAL / 3] {
        queued_at_least(&queued, at).await;
        let cut = redis.server().client_kill_pubsub();
        assert!(cut >= 3, "each node holds a Pub/Sub connection while it has subscribers: {cut}");
    }
    let acks = publishing.await.unwrap();
    let epoch = assert_acks_are_one_to(&acks, TOTAL);
    assert_everyone_got_everything(&mut subs, &(epoch, TOTAL as u64), TOTAL).await;
    assert!(redis.server().pubsub_clients() >= 3, "the nodes subscribed again");
    for c in clients {
        c.close().await;
    }
}

/// Clients that join a busy channel get each publication once. A publication can be in the
/// stream a joining session reads while its Pub/Sub message is still on its way to the node:
/// the reply holds it, and the node must not push it again when the message arrives (an SSE
/// client in CI once got 28, 29, 28, 29). The Rust SDK drops such repeats itself, so the
/// joiners here speak the raw protocol, over WebSocket, on the node that does not publish
/// (a `workers = 1` process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_joining_a_busy_channel_get_each_publication_once() {
    const TEST: &str = "clients_joining_a_busy_channel_get_each_publication_once";
    const TOTAL: usize = 4_000;
    const CHANNEL: &str = "feed:joining";
    let Some(redis) = Redis::one(TEST) else { return };
    let backend = redis.backend(TEST);
    // The joiners' node runs one thread, as the scale benchmarks' nodes do: its fan-out
    // writes into idle connections itself.
    let nodes = [
        PeregrineNode::start("node-a", &backend, ""),
        PeregrineNode::start("node-b", &backend, "workers = 1"),
    ];
    let (queued, publishing) =
        publish_paced(client(&nodes[0].ws_url(), TOTAL), CHANNEL, TOTAL, 20, Duration::from_millis(5));
    queued_at_least(&queued, 100).await;
    let joiners: Vec<_> = (0..4)
        .map(|_| {
            let (url, queued) = (nodes[1].ws_url(), queued.clone());
            tokio::spawn(async move {
                let (mut joins, mut checked, mut position) = (0, 0, None);
                while queued.load(Ordering::SeqCst) < TOTAL {
                    let (last, seen) = join_once(&url, CHANNEL, position.clone()).await;
                    // Every other join recovers from a little before where the last one ended.
                    position = (joins % 2 == 0).then(|| (last.0, last.1.saturating_sub(10)));
                    (joins, checked) = (joins + 1, checked + seen);
                }
                (joins, checked)
            })
        })
        .collect();
    let mut joins = 0;
    for joiner in joiners {
        let (n, checked) = joiner.await.unwrap();
        assert!(checked > 0, "the joiners saw publications");
        joins += n;
    }
    // About 90 here on a quiet machine; the floor only says the joiners ran.
    println!("{joins} joins");
    assert!(joins >= 8, "{joins} joins");
    assert_acks_are_one_to(&publishing.await.unwrap(), TOTAL);
}

/// One connection to `url` that subscribes to `channel` in its `connect` (recovering from
/// `since`, or from the stream's top without it) and reads for 50 ms, asserting that the
/// publications, recovered then pushed, follow each other offset by offset. Returns the
/// last position and how many publications it checked.
async fn join_once(url: &str, channel: &str, since: Option<(String, u64)>) -> ((String, u64), usize) {
    use peregrine::Message;
    use peregrine_wire::{
        Command, CommandKind, ConnectRequest, Encoding, Push, ReplyKind, SUBPROTOCOL_JSON, ServerMessage,
        StreamPosition, decode_server_messages, encode_commands,
    };
    let (mut ws, _) =
        tokio::time::timeout(WAIT, peregrine::ClientBuilder::new(url).protocol(SUBPROTOCOL_JSON).connect())
            .await
            .expect("connected in time")
            .expect("connected");
    let options = peregrine_wire::SubscribeOptions {
        since: since.clone().map(|(epoch, offset)| StreamPosition { epoch, offset }),
        recover: since.is_some(),
        join_leave: Some(false),
        ..Default::default()
    };
    let connect = ConnectRequest { subs: [(channel.to_owned(), options)].into(), ..Default::default() };
    let command = Command { id: 1, kind: CommandKind::Connect(connect) };
    let frame = String::from_utf8(encode_commands(&[command], Encoding::Json)).unwrap();
    ws.send(Message::text(frame)).await.unwrap();
    let mut position: Option<(String, u64)> = None;
    let mut offsets = Vec::new();
    let mut checked = 0;
    let reading = tokio::time::sleep(Duration::from_millis(50));
    tokio::pin!(reading);
    loop {
        let text = tokio::select! {
            message = tokio::time::timeout(WAIT, ws.recv()) => match message.expect("silence") {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                other => panic!("the connection ended: {other:?}"),
            },
            _ = &mut reading, if position.is_some() => break,
        };
        for message in decode_server_messages(text.as_bytes(), Encoding::Json).unwrap() {
            let publications = match message {
                ServerMessage::Reply(reply) => {
                    let Ok(ReplyKind::Connect(mut result)) = reply.result else {
                        panic!("connect: {reply:?}")
                    };
                    let sub = result.subs.remove(channel).expect("subscribed in the connect");
                    if let Some(since) = &since {
                        assert!(sub.recovered, "recovered from {since:?}: {sub:?}");
                    }
                    let start = since.as_ref().map_or(sub.offset, |s| s.1);
                    position = Some((sub.epoch, start));
                    sub.publications
                }
                ServerMessage::Push(Push::Publication { publication, .. }) => vec![publication],
                _ => continue,
            };
            let (epoch, offset) = position.as_mut().expect("the reply comes first");
            for p in publications {
                offsets.push(p.offset);
                assert!(p.epoch.as_ref().is_none_or(|e| e == epoch), "one epoch");
                assert_eq!(
                    p.offset,
                    *offset + 1,
                    "each publication once, in order, from {since:?}: offsets {offsets:?}"
                );
                *offset = p.offset;
                checked += 1;
            }
        }
    }
    let _ = ws.close(peregrine::CloseCode::NORMAL, "done").await;
    (position.unwrap(), checked)
}

// ---------------------------------------------------------------------------------------
// 7: bad configuration
// ---------------------------------------------------------------------------------------

/// Starts a node on `backend` that must refuse to start: it exits non-zero within 10 s,
/// without a panic, with a message naming `key`. Returns its stderr.
fn refuses_to_start(backend: Backend, key: &str) -> String {
    let config = support::node::node_toml("bad", free_port(), &backend, "");
    let mut node = PeregrineNode::spawn("bad", &config);
    let started = Instant::now();
    let (status, stderr) = node.exit_within(Duration::from_secs(10)).unwrap_or_else(|| {
        panic!("still running after 10 s instead of refusing ({key}); log:\n{}", node.log())
    });
    assert!(!status.success(), "exit status {status}; stderr:\n{stderr}");
    // One message (the development banner before it prints the configuration, which
    // names no key in dotted form), and it names the key.
    let errors: Vec<&str> = stderr.lines().filter(|l| l.to_lowercase().contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error message:\n{stderr}");
    assert!(errors[0].contains(key), "the message names `{key}`: {}", errors[0]);
    assert!(!stderr.contains("panicked"), "a message, not a panic:\n{stderr}");
    println!("refused in {:?}: {}", started.elapsed(), errors[0]);
    stderr
}

#[test]
fn bad_redis_configuration_is_refused_with_the_key_named() {
    const TEST: &str = "bad_redis_configuration_is_refused_with_the_key_named";
    // Nothing listens there.
    let unreachable = Backend::redis(vec![format!("127.0.0.1:{}", free_port())], TEST);
    refuses_to_start(unreachable, "broker.redis.addresses");

    let options = RedisOptions { password: Some("right".into()), ..Default::default() };
    let Some(protected) = RedisServer::start_with(TEST, options) else { return };
    let wrong = Backend::Redis {
        addresses: vec![protected.address()],
        cluster: false,
        password: Some("not-the-password-7f3a".into()),
        prefix: TEST.into(),
    };
    let stderr = refuses_to_start(wrong, "broker.redis.password");
    assert!(!stderr.contains("not-the-password-7f3a"), "the password is not printed:\n{stderr}");

    let Some(cluster) = RedisCluster::start(TEST) else { return };
    let cluster_as_standalone = Backend::redis(cluster.addresses(), TEST);
    refuses_to_start(cluster_as_standalone, "broker.redis.cluster");
    // And the other way round: a standalone server given as a cluster seed.
    let Some(plain) = RedisServer::start(TEST) else { return };
    let plain_as_cluster = Backend::Redis {
        addresses: vec![plain.address()],
        cluster: true,
        password: None,
        prefix: TEST.into(),
    };
    refuses_to_start(plain_as_cluster, "broker.redis.cluster");
}
