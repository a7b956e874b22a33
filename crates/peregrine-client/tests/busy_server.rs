//! The SDK against a real in-process `peregrine serve` that refuses handshakes for now
//! (too many in progress: `503` with `Retry-After`): the client waits at least that long
//! instead of its own short backoff, then connects.

use std::time::Duration;

use peregrine_client::{Backoff, Client, State};
use peregrine_server::app::Server;
use peregrine_server::config::Config;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_server_s_retry_after_is_the_floor_of_the_backoff() {
    let mut config = Config::development();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.client.max_pending_handshakes = 1;
    let server = Server::bind(config).await.unwrap();
    let url = format!("ws://{}/connection/websocket", server.local_addr());
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    // An upgraded connection that never sends `connect` holds the one handshake slot.
    let (holder, _) = peregrine::ClientBuilder::new(url.clone()).connect().await.unwrap();

    let backoff = Backoff { min_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) };
    let client = Client::builder(&url).backoff(backoff).build().unwrap();
    let mut events = client.events();
    let first = tokio::time::timeout(WAIT, async {
        loop {
            if let State::Disconnected { reason, retry_in, .. } = events.recv().await.unwrap() {
                return (reason, retry_in);
            }
        }
    })
    .await
    .expect("a refused attempt");
    assert!(first.0.contains("503"), "{}", first.0);
    assert!(first.1 >= Duration::from_secs(1), "waits the server's Retry-After, not 5 ms: {:?}", first.1);

    drop(holder);
    tokio::time::timeout(WAIT, async {
        while !matches!(client.state(), State::Connected { .. }) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("connected once the slot is free");
    client.close().await;
}
