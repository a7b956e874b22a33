//! Subscription tokens from a provider, against a real in-process `peregrine serve` with a
//! private namespace: refreshed before they expire without interrupting the subscription,
//! and, when a refresh could not happen in time, the server's end of the subscription
//! followed by a fresh token and a resubscribe that recovers what was missed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use peregrine_client::{Client, SubscribeOptions, SubscriptionEvent, SubscriptionTokenProvider};
use peregrine_server::app::Server;
use peregrine_server::channel::ChannelOptions;
use peregrine_server::config::{Config, Secret};
use peregrine_server::node::Node;
use serde_json::{Value, json};
use tokio::sync::oneshot;

const SECRET: &str = "subscription-token-test-secret";
const WAIT: Duration = Duration::from_secs(20);

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(claims: Value) -> String {
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// A server with an HMAC secret and a private `team` namespace keeping history.
async fn serve() -> (String, Arc<Node>, oneshot::Sender<()>) {
    let mut config = Config { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    config.token.hmac_secret = Some(Secret::new(SECRET));
    let team = ChannelOptions { private: true, history_size: 1000, ..Default::default() };
    config.channels.named.insert("team".into(), team);
    let server = Server::bind(config).await.unwrap();
    let url = format!("ws://{}/connection/websocket", server.local_addr());
    let node = Arc::clone(server.node());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    (url, node, stop)
}

/// Publishes `n` publications, one every 100 ms, from the server side.
fn publish_slowly(node: Arc<Node>, channel: &'static str, n: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 1..=n {
            node.publish(channel, json!(i).into(), None, None).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Reads until publication `last`: the offsets delivered, and how many `Subscribed` events.
async fn read_until(sub: &mut peregrine_client::Subscription, last: u64) -> (Vec<u64>, usize) {
    let (mut offsets, mut subscribed) = (Vec::new(), 0);
    while offsets.last().copied().unwrap_or(0) < last {
        match tokio::time::timeout(WAIT, sub.next()).await.expect("in time").expect("open") {
            SubscriptionEvent::Subscribed { .. } => subscribed += 1,
            SubscriptionEvent::Publication(p) => offsets.push(p.offset),
            other => panic!("unexpected {other:?} after {offsets:?}"),
        }
    }
    (offsets, subscribed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_subscription_tokens_are_refreshed_without_a_break() {
    let (url, node, _stop) = serve().await;
    let client = Client::builder(&url).token(token(json!({"sub": "42"}))).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let provider = SubscriptionTokenProvider::new(move |channel: String| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok(token(json!({"sub": "42", "channel": channel, "exp": now() + 8}))) }
    });
    let options = SubscribeOptions { token_provider: Some(provider), ..Default::default() };
    let mut sub = client.subscribe_with("team:refreshed", options).await.unwrap();
    // About 10 s of publications: the 8-second tokens (renewed some 1.5 s ahead) must be
    // renewed at least once.
    let publishing = publish_slowly(Arc::clone(&node), "team:refreshed", 100);
    let (offsets, subscribed) = read_until(&mut sub, 100).await;
    publishing.await.unwrap();
    assert_eq!(offsets, (1..=100).collect::<Vec<_>>());
    assert_eq!(subscribed, 1, "never ended and subscribed again");
    assert!(calls.load(Ordering::SeqCst) >= 2, "{} tokens asked for", calls.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_ended_by_its_expiry_comes_back_with_a_fresh_token_and_misses_nothing() {
    let (url, node, _stop) = serve().await;
    let client = Client::builder(&url).token(token(json!({"sub": "42"}))).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let first_expiry = now() + 2;
    // The first token lasts 2 s; the backend then fails until over a second after it
    // expired, so the server ends the subscription first.
    let provider = SubscriptionTokenProvider::new(move |channel: String| {
        let call = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if call == 0 {
                Ok(token(json!({"sub": "42", "channel": channel, "exp": first_expiry})))
            } else if now() <= first_expiry + 1 {
                Err("token service unavailable".to_owned())
            } else {
                Ok(token(json!({"sub": "42", "channel": channel, "exp": now() + 600})))
            }
        }
    });
    let options = SubscribeOptions { token_provider: Some(provider), ..Default::default() };
    let mut sub = client.subscribe_with("team:expired", options).await.unwrap();
    let publishing = publish_slowly(Arc::clone(&node), "team:expired", 50);
    let (offsets, subscribed) = read_until(&mut sub, 50).await;
    publishing.await.unwrap();
    assert_eq!(offsets, (1..=50).collect::<Vec<_>>(), "recovered across the expiry, once each");
    assert_eq!(subscribed, 2, "ended by the server at expiry, then subscribed again");
}
