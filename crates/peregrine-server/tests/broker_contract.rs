//! The broker contract: one suite of cases, run against every broker.
//!
//! Each case gets a fresh broker from a backend's constructor, with a key prefix of its own
//! (`prefix` below), so that backends shared between cases (one Redis) never mix streams.
//! Time is real and short (TTLs and idempotency windows of a second or two), and delivery
//! is awaited with a deadline rather than assumed synchronous: a Redis broker delivers
//! through Pub/Sub, a moment after the publish returns. So the very same cases hold for
//! the memory broker and for Redis.
//!
//! Backends: `memory`, and `redis` on a real redis-server per case.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peregrine_server::broker::{Broker, ChannelEvent, HistoryQuery, MemoryBroker, PublishOptions};
use peregrine_server::config::RedisConfig;
use peregrine_server::recovery;
use peregrine_wire::{Gap, Publication, StreamPosition};
use serde_json::json;

// The process harness of the CLI's tests (std only): a real redis-server for the Redis
// backend, started and stopped by PID, skipped or required like the CLI's cluster tests.
#[path = "../../peregrine-cli/tests/support/services.rs"]
mod services;

/// How long delivery through a backend may take.
const DELIVERY: Duration = Duration::from_secs(5);

/// A broker under test, and what must live as long as it does (its Redis server).
struct Subject {
    broker: Arc<dyn Broker>,
    _services: Vec<services::RedisServer>,
}

/// A key prefix no other case (nor another run) uses.
fn prefix(case: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("contract-{case}-{}-{nanos}", std::process::id())
}

fn history_opts(size: usize) -> PublishOptions {
    PublishOptions { history_size: size, ..Default::default() }
}

fn keyed(key: &str, window: Duration) -> PublishOptions {
    PublishOptions {
        history_size: 100,
        idempotency_key: Some(key.into()),
        idempotency_window: window,
        ..Default::default()
    }
}

fn offsets(p: &[Publication]) -> Vec<u64> {
    p.iter().map(|p| p.offset).collect()
}

type Seen = Arc<Mutex<Vec<(String, u64)>>>;

fn recording(broker: &dyn Broker) -> Seen {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    broker.set_handler(Arc::new(move |channel: &str, e: ChannelEvent<'_>| {
        if let ChannelEvent::Publication(p) = e {
            sink.lock().unwrap().push((channel.to_owned(), p.offset));
        }
    }));
    seen
}

/// Waits (up to [`DELIVERY`]) until `done` holds for what `seen` holds; returns a copy.
async fn delivered<T: Clone>(seen: &Mutex<Vec<T>>, done: impl Fn(&[T]) -> bool) -> Vec<T> {
    let deadline = Instant::now() + DELIVERY;
    loop {
        let now = seen.lock().unwrap().clone();
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "not delivered in {DELIVERY:?}: {} so far", now.len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The cases: each takes a fresh broker and owns it.
mod cases {
    use super::*;

    pub async fn offsets_grow_by_one_within_an_epoch(b: Arc<dyn Broker>) {
        let mut epoch = None;
        for expected in 1..=5 {
            let r = b.publish("chat:1", json!(expected).into(), history_opts(10)).await.unwrap();
            assert_eq!(r.offset, expected);
            assert!(!r.duplicate);
            assert_eq!(epoch.get_or_insert_with(|| r.epoch.clone()), &r.epoch);
        }
        assert_eq!(epoch.unwrap().len(), 8);
        // Channels are independent streams.
        let other = b.publish("chat:2", json!(0).into(), history_opts(10)).await.unwrap();
        assert_eq!(other.offset, 1);
    }

    pub async fn history_is_bounded_by_size(b: Arc<dyn Broker>) {
        for i in 1..=7 {
            b.publish("c", json!(i).into(), history_opts(3)).await.unwrap();
        }
        let h = b.history("c", HistoryQuery::default()).await.unwrap();
        assert_eq!(offsets(&h.publications), vec![5, 6, 7]);
        assert_eq!(h.offset, 7);
        assert_eq!(h.publications[0].data, json!(5).into());
    }

    pub async fn history_is_bounded_by_ttl(b: Arc<dyn Broker>) {
        // Real time, with margins either side of every expiry: a sleep that overshoots
        // only moves a check later, and each check has a full second before its next expiry.
        let ttl = Duration::from_secs(2);
        let opts = PublishOptions { history_size: 100, history_ttl: Some(ttl), ..Default::default() };
        b.publish("c", json!(1).into(), opts.clone()).await.unwrap();
        b.publish("c", json!(2).into(), opts.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        b.publish("c", json!(3).into(), opts.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // 1 and 2 are 2.2 s old, 3 is 1 s old.
        let h = b.history("c", HistoryQuery::default()).await.unwrap();
        assert_eq!(offsets(&h.publications), vec![3]);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let h = b.history("c", HistoryQuery::default()).await.unwrap();
        assert!(h.publications.is_empty());
        assert_eq!(h.offset, 3, "expiry keeps the offset");
    }

    pub async fn history_query_since_limit_and_reverse(b: Arc<dyn Broker>) {
        let mut epoch = String::new();
        for i in 1..=6 {
            epoch = b.publish("c", json!(i).into(), history_opts(10)).await.unwrap().epoch;
        }
        let since = Some(StreamPosition { epoch: epoch.clone(), offset: 2 });
        let q = |limit, reverse| HistoryQuery { since: since.clone(), limit, reverse };
        assert_eq!(offsets(&b.history("c", q(None, false)).await.unwrap().publications), vec![3, 4, 5, 6]);
        assert_eq!(offsets(&b.history("c", q(Some(2), false)).await.unwrap().publications), vec![3, 4]);
        // Reverse reads go back from `since`: the page before it, newest first.
        let before = |offset| HistoryQuery {
            since: Some(StreamPosition { epoch: epoch.clone(), offset }),
            limit: Some(2),
            reverse: true,
        };
        assert_eq!(offsets(&b.history("c", before(5)).await.unwrap().publications), vec![4, 3]);
        assert_eq!(offsets(&b.history("c", before(2)).await.unwrap().publications), vec![1]);
        let newest = HistoryQuery { limit: Some(2), reverse: true, ..Default::default() };
        assert_eq!(offsets(&b.history("c", newest).await.unwrap().publications), vec![6, 5]);
        // A foreign epoch is ignored: the read starts at the oldest publication.
        let foreign = HistoryQuery {
            since: Some(StreamPosition { epoch: "other".into(), offset: 4 }),
            ..Default::default()
        };
        assert_eq!(b.history("c", foreign).await.unwrap().publications.len(), 6);
    }

    pub async fn history_of_an_unknown_channel_creates_a_stable_epoch(b: Arc<dyn Broker>) {
        let h = b.history("new", HistoryQuery::default()).await.unwrap();
        assert_eq!(h.offset, 0);
        let r = b.publish("new", json!(1).into(), history_opts(1)).await.unwrap();
        assert_eq!((r.epoch, r.offset), (h.epoch, 1));
    }

    pub async fn idempotent_publish_within_the_window_is_not_published_twice(b: Arc<dyn Broker>) {
        let seen = recording(b.as_ref());
        b.subscribe_node("c").await.unwrap();
        // A one-second window: the repeat comes well inside it, the last publish well after.
        let window = Duration::from_secs(1);
        let start = Instant::now();
        let first = b.publish("c", json!("a").into(), keyed("k1", window)).await.unwrap();
        b.publish("c", json!("b").into(), history_opts(100)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = b.publish("c", json!("a").into(), keyed("k1", window)).await.unwrap();
        assert!(
            start.elapsed() < window,
            "the repeat must fall inside the window for this case to mean anything"
        );
        assert!(again.duplicate);
        assert_eq!((again.offset, &again.epoch), (first.offset, &first.epoch));
        let h = b.history("c", HistoryQuery::default()).await.unwrap();
        assert_eq!(offsets(&h.publications), vec![1, 2]);

        tokio::time::sleep(window.saturating_sub(start.elapsed()) + Duration::from_millis(300)).await;
        let later = b.publish("c", json!("a").into(), keyed("k1", window)).await.unwrap();
        assert!(!later.duplicate);
        assert_eq!(later.offset, 3);
        // Offset 3 arriving is the fence: the duplicate, published before it, was not delivered.
        let got = delivered(&seen, |s| s.iter().any(|(_, o)| *o == 3)).await;
        let c = |o: u64| ("c".to_owned(), o);
        assert_eq!(got, vec![c(1), c(2), c(3)], "the duplicate is not delivered");
    }

    pub async fn handler_sees_only_subscribed_channels(b: Arc<dyn Broker>) {
        let seen = recording(b.as_ref());
        b.subscribe_node("a").await.unwrap();
        b.subscribe_node("fence").await.unwrap();
        b.publish("a", json!(1).into(), history_opts(0)).await.unwrap();
        b.publish("b", json!(1).into(), history_opts(0)).await.unwrap();
        // Seen before the unsubscribe: a publication still on its way when the node
        // unsubscribes may be dropped (nobody on the node wants it any more).
        delivered(&seen, |s| s.iter().any(|(c, _)| c == "a")).await;
        b.unsubscribe_node("a").await.unwrap();
        b.publish("a", json!(2).into(), history_opts(0)).await.unwrap();
        // Published last: once it is here, whatever was coming before it has come.
        b.publish("fence", json!(1).into(), history_opts(0)).await.unwrap();
        delivered(&seen, |s| s.iter().any(|(c, _)| c == "fence")).await;
        // A sharded backend may deliver the fence before another shard's publication.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got: Vec<(String, u64)> =
            seen.lock().unwrap().iter().filter(|(c, _)| c != "fence").cloned().collect();
        assert_eq!(got, vec![("a".to_owned(), 1)]);
    }

    pub async fn concurrent_publishers_get_consecutive_offsets_delivered_in_order(b: Arc<dyn Broker>) {
        let seen = recording(b.as_ref());
        for ch in ["x", "y"] {
            b.subscribe_node(ch).await.unwrap();
        }
        let mut tasks = Vec::new();
        for t in 0..16 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                let ch = if t % 2 == 0 { "x" } else { "y" };
                let mut got = Vec::new();
                for i in 0..50 {
                    got.push(b.publish(ch, json!([t, i]).into(), history_opts(1000)).await.unwrap().offset);
                    tokio::task::yield_now().await;
                }
                (ch, got)
            }));
        }
        let mut assigned: HashMap<&str, Vec<u64>> = HashMap::new();
        for task in tasks {
            let (ch, got) = task.await.unwrap();
            assigned.entry(ch).or_default().extend(got);
        }
        let seen = delivered(&seen, |s| s.len() >= 800).await;
        for ch in ["x", "y"] {
            let mut offsets = assigned.remove(ch).unwrap();
            offsets.sort_unstable();
            assert_eq!(offsets, (1..=400).collect::<Vec<_>>(), "distinct and consecutive on {ch}");
            let delivered: Vec<u64> = seen.iter().filter(|(c, _)| c == ch).map(|(_, o)| *o).collect();
            assert_eq!(delivered, (1..=400).collect::<Vec<_>>(), "delivered in offset order on {ch}");
        }
    }

    pub async fn subscribe_with_recovery_end_to_end(b: Arc<dyn Broker>) {
        // The subscribe path: hold live back, read history, recover, then the held
        // publications after the seam (the top offset at the read).
        let live: Arc<Mutex<Vec<Publication>>> = Arc::default();
        let sink = live.clone();
        b.set_handler(Arc::new(move |_: &str, e: ChannelEvent<'_>| {
            if let ChannelEvent::Publication(p) = e {
                sink.lock().unwrap().push(p.clone());
            }
        }));
        b.subscribe_node("c").await.unwrap();
        let mut epoch = String::new();
        for i in 1..=10 {
            epoch = b.publish("c", json!(i).into(), history_opts(5)).await.unwrap().epoch;
        }
        delivered(&live, |l| l.len() == 10).await;
        live.lock().unwrap().clear();
        let since = StreamPosition { epoch, offset: 3 };
        let h =
            b.history("c", HistoryQuery { since: Some(since.clone()), ..Default::default() }).await.unwrap();
        // Publications arriving during the read are buffered live.
        for i in 11..=12 {
            b.publish("c", json!(i).into(), history_opts(5)).await.unwrap();
        }
        delivered(&live, |l| l.len() == 2).await;
        let r = recovery::recover(&since, &h.epoch, h.offset, h.publications);
        assert_eq!(r.gap, Some(Gap { from: 4, to: 5 }));
        assert!(!r.recovered && r.offset == 10);
        let mut delivered = r.publications;
        delivered.extend(live.lock().unwrap().iter().filter(|p| p.offset > r.offset).cloned());
        assert_eq!(offsets(&delivered), (6..=12).collect::<Vec<_>>());
    }
}

/// `contract!(backend, constructor)`: a module `backend` with one test per case, each on a
/// fresh `constructor(prefix).await` (`None`: the backend is not available here, the case
/// is skipped with a note, or fails under `TEST_REQUIRE_SERVICES=1`).
macro_rules! contract {
    ($backend:ident, $make:path) => {
        mod $backend {
            contract!(@cases $make;
                offsets_grow_by_one_within_an_epoch,
                history_is_bounded_by_size,
                history_is_bounded_by_ttl,
                history_query_since_limit_and_reverse,
                history_of_an_unknown_channel_creates_a_stable_epoch,
                idempotent_publish_within_the_window_is_not_published_twice,
                handler_sees_only_subscribed_channels,
                concurrent_publishers_get_consecutive_offsets_delivered_in_order,
                subscribe_with_recovery_end_to_end,
            );
        }
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            let Some(subject) = $make(&super::prefix(stringify!($case))).await else { return };
            super::cases::$case(subject.broker.clone()).await;
            drop(subject);
        }
    )*};
}

async fn memory(_prefix: &str) -> Option<Subject> {
    Some(Subject { broker: Arc::new(MemoryBroker::new()), _services: Vec::new() })
}

contract!(memory, super::memory);

/// A `RedisBroker` on a redis-server of its own (started for the case, killed on drop);
/// `None` where Redis is not installed (the case is skipped with a note, or fails under
/// `TEST_REQUIRE_SERVICES=1`).
async fn redis(prefix: &str) -> Option<Subject> {
    let server = services::RedisServer::start(&format!("broker contract on Redis ({prefix})"))?;
    let config =
        RedisConfig { addresses: vec![server.address()], prefix: prefix.to_owned(), ..Default::default() };
    let (broker, _presence) =
        peregrine_server::broker::redis::connect(&config).await.expect("connect to Redis");
    Some(Subject { broker, _services: vec![server] })
}

contract!(redis, super::redis);
