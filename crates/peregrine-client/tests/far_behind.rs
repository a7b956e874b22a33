//! The SDK against a real in-process `peregrine serve` when a client is far behind: a
//! recovery bigger than the server's outbound queue arrives streamed after its reply, and a
//! history bigger than it is read page by page, each publication once and in order.

use std::time::Duration;

use peregrine_client::{Client, StreamPosition, SubscribeOptions, SubscriptionEvent};
use peregrine_server::app::Server;
use peregrine_server::channel::ChannelOptions;
use peregrine_server::config::Config;
use serde_json::json;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(20);

/// A development server whose channels keep 5,000 publications, with the default 1 MiB
/// outbound queue. Dropping the sender stops it.
async fn serve() -> (String, oneshot::Sender<()>) {
    let mut config = Config::development();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.channels.default = Some(ChannelOptions { history_size: 5000, ..ChannelOptions::development() });
    config.client.publish_rate = 1e9;
    config.client.publish_burst = u32::MAX;
    let server = Server::bind(config).await.unwrap();
    let url = format!("ws://{}/connection/websocket", server.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    (url, stop)
}

/// Publishes `count` publications of about 2 KB (600 are 1.2 MB); returns the epoch.
async fn publish_large(client: &Client, channel: &str, count: u64) -> String {
    let filler = "x".repeat(2000);
    let mut epoch = String::new();
    for n in 1..=count {
        let ack = client.publish(channel, json!({ "n": n, "filler": filler })).await.unwrap();
        epoch = ack.epoch.unwrap();
    }
    epoch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_bigger_than_the_servers_queue_arrives_whole_and_in_order() {
    let (url, _stop) = serve().await;
    let publisher = Client::new(&url).unwrap();
    let epoch = publish_large(&publisher, "big:1", 600).await;

    // A position saved by an earlier run, 600 publications ago.
    let client = Client::new(&url).unwrap();
    let since = Some(StreamPosition { epoch, offset: 0 });
    let mut sub =
        client.subscribe_with("big:1", SubscribeOptions { since, ..Default::default() }).await.unwrap();
    // Live publications while the recovery is still streaming follow it.
    for n in 601..=610 {
        publisher.publish("big:1", json!({ "n": n })).await.unwrap();
    }
    let mut offsets = Vec::new();
    while offsets.len() < 610 {
        match tokio::time::timeout(WAIT, sub.next()).await.expect("in time").expect("open") {
            SubscriptionEvent::Subscribed { recovered, .. } => assert!(recovered, "nothing lost"),
            SubscriptionEvent::Publication(p) => {
                assert_eq!(p.data_json::<serde_json::Value>().unwrap()["n"], json!(p.offset));
                offsets.push(p.offset);
            }
            SubscriptionEvent::Join(_) | SubscriptionEvent::Leave(_) => {}
            other => panic!("unexpected {other:?} after {} publications", offsets.len()),
        }
    }
    assert_eq!(offsets, (1..=610).collect::<Vec<_>>(), "each once, in order");
}

#[tokio::test]
async fn a_history_bigger_than_the_servers_queue_is_read_page_by_page() {
    let (url, _stop) = serve().await;
    let client = Client::new(&url).unwrap();
    publish_large(&client, "big:2", 600).await;

    let all = client.history("big:2", None, None).await.unwrap();
    let offsets: Vec<u64> = all.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, (1..=600).collect::<Vec<_>>());
    assert!(!all.more);

    let some = client.history("big:2", Some(250), None).await.unwrap();
    assert_eq!(some.publications.len(), 250);
    assert!(some.more, "the limit stopped the read before the end");
    let since = Some(StreamPosition { epoch: some.epoch.clone(), offset: 250 });
    let rest = client.history("big:2", None, since).await.unwrap();
    assert_eq!(rest.publications.first().map(|p| p.offset), Some(251));
    assert_eq!(rest.publications.len(), 350);
}
