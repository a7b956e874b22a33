//! The broker contract, run against the in-memory broker (the Redis broker will join later).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peregrine_server::broker::{Broker, ChannelEvent, HistoryQuery, MemoryBroker, PublishOptions};
use peregrine_server::recovery;
use peregrine_wire::{Gap, Publication, StreamPosition};
use serde_json::json;

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

#[tokio::test]
async fn offsets_grow_by_one_within_an_epoch() {
    let b = MemoryBroker::new();
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

#[tokio::test]
async fn history_is_bounded_by_size() {
    let b = MemoryBroker::new();
    for i in 1..=7 {
        b.publish("c", json!(i).into(), history_opts(3)).await.unwrap();
    }
    let h = b.history("c", HistoryQuery::default()).await.unwrap();
    assert_eq!(offsets(&h.publications), vec![5, 6, 7]);
    assert_eq!(h.offset, 7);
    assert_eq!(h.publications[0].data, json!(5).into());
}

#[tokio::test(start_paused = true)]
async fn history_is_bounded_by_ttl() {
    let b = MemoryBroker::new();
    let opts = PublishOptions {
        history_size: 100,
        history_ttl: Some(Duration::from_secs(10)),
        ..Default::default()
    };
    b.publish("c", json!(1).into(), opts.clone()).await.unwrap();
    b.publish("c", json!(2).into(), opts.clone()).await.unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    b.publish("c", json!(3).into(), opts.clone()).await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    let h = b.history("c", HistoryQuery::default()).await.unwrap();
    assert_eq!(offsets(&h.publications), vec![3]);
    tokio::time::advance(Duration::from_secs(5)).await;
    let h = b.history("c", HistoryQuery::default()).await.unwrap();
    assert!(h.publications.is_empty());
    assert_eq!(h.offset, 3, "expiry keeps the offset");
}

#[tokio::test]
async fn history_query_since_limit_and_reverse() {
    let b = MemoryBroker::new();
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

#[tokio::test]
async fn history_of_an_unknown_channel_creates_a_stable_epoch() {
    let b = MemoryBroker::new();
    let h = b.history("new", HistoryQuery::default()).await.unwrap();
    assert_eq!(h.offset, 0);
    let r = b.publish("new", json!(1).into(), history_opts(1)).await.unwrap();
    assert_eq!((r.epoch, r.offset), (h.epoch, 1));
}

#[tokio::test(start_paused = true)]
async fn idempotent_publish_within_the_window_is_not_published_twice() {
    let b = MemoryBroker::new();
    let seen = recording(&b);
    b.subscribe_node("c").await.unwrap();
    let window = Duration::from_secs(30);
    let first = b.publish("c", json!("a").into(), keyed("k1", window)).await.unwrap();
    b.publish("c", json!("b").into(), history_opts(100)).await.unwrap();
    tokio::time::advance(Duration::from_secs(20)).await;
    let again = b.publish("c", json!("a").into(), keyed("k1", window)).await.unwrap();
    assert!(again.duplicate);
    assert_eq!((again.offset, &again.epoch), (first.offset, &first.epoch));
    assert_eq!(seen.lock().unwrap().len(), 2, "the duplicate is not delivered");
    let h = b.history("c", HistoryQuery::default()).await.unwrap();
    assert_eq!(offsets(&h.publications), vec![1, 2]);

    tokio::time::advance(Duration::from_secs(11)).await;
    let later = b.publish("c", json!("a").into(), keyed("k1", window)).await.unwrap();
    assert!(!later.duplicate);
    assert_eq!(later.offset, 3);
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn handler_sees_only_subscribed_channels() {
    let b = MemoryBroker::new();
    let seen = recording(&b);
    b.subscribe_node("a").await.unwrap();
    b.publish("a", json!(1).into(), history_opts(0)).await.unwrap();
    b.publish("b", json!(1).into(), history_opts(0)).await.unwrap();
    b.unsubscribe_node("a").await.unwrap();
    b.publish("a", json!(2).into(), history_opts(0)).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![("a".to_owned(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_get_consecutive_offsets_delivered_in_order() {
    let b: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
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
    let seen = seen.lock().unwrap();
    for ch in ["x", "y"] {
        let mut offsets = assigned.remove(ch).unwrap();
        offsets.sort_unstable();
        assert_eq!(offsets, (1..=400).collect::<Vec<_>>(), "distinct and consecutive on {ch}");
        let delivered: Vec<u64> = seen.iter().filter(|(c, _)| c == ch).map(|(_, o)| *o).collect();
        assert_eq!(delivered, (1..=400).collect::<Vec<_>>(), "delivered in offset order on {ch}");
    }
}

#[tokio::test]
async fn subscribe_with_recovery_end_to_end() {
    // The subscribe path: hold live back, read history, recover, then the held publications
    // after the seam (the top offset at the read).
    let b = Arc::new(MemoryBroker::new());
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
    live.lock().unwrap().clear();
    let since = StreamPosition { epoch, offset: 3 };
    let h = b.history("c", HistoryQuery { since: Some(since.clone()), ..Default::default() }).await.unwrap();
    // Publications arriving during the read are buffered live.
    for i in 11..=12 {
        b.publish("c", json!(i).into(), history_opts(5)).await.unwrap();
    }
    let r = recovery::recover(&since, &h.epoch, h.offset, h.publications);
    assert_eq!(r.gap, Some(Gap { from: 4, to: 5 }));
    assert!(!r.recovered && r.offset == 10);
    let mut delivered = r.publications;
    delivered.extend(live.lock().unwrap().iter().filter(|p| p.offset > r.offset).cloned());
    assert_eq!(offsets(&delivered), (6..=12).collect::<Vec<_>>());
}
