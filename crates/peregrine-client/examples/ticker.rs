//! A ticker: one task publishes a price every 100 ms, a subscriber prints each tick with
//! its offset. Kill the server and start it again to watch the client reconnect and report
//! the reset of the channel's history.
//!
//! ```text
//! peregrine serve &
//! cargo run -p peregrine-client --example ticker -- ticker:BTC 50
//! ```
//!
//! Arguments: CHANNEL [TICKS] [URL]; it exits after TICKS ticks (default: runs forever).

use std::time::Duration;

use peregrine_client::{Client, SubscriptionEvent};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let channel = args.next().unwrap_or_else(|| "ticker:BTC".into());
    let ticks: u64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(u64::MAX);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/connection/websocket".into());

    let client = Client::builder(url).name("ticker-example").build()?;
    let mut prices = client.subscribe(&channel).await?;

    let publisher = client.clone();
    let topic = channel.clone();
    tokio::spawn(async move {
        let mut price = 50_000.0f64;
        for tick in 0u64.. {
            price += ((tick * 7919 % 13) as f64 - 6.0) * 3.5;
            if let Err(e) = publisher.publish(&topic, json!({ "tick": tick, "price": price })).await {
                eprintln!("publish failed: {e}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let mut seen = 0;
    while seen < ticks {
        match prices.next().await {
            Some(SubscriptionEvent::Publication(p)) => {
                println!("#{:<6} {}", p.offset, p.data);
                seen += 1;
            }
            Some(SubscriptionEvent::Gap { from, to }) => eprintln!("missed ticks {from}..={to}"),
            Some(SubscriptionEvent::Reset { epoch, .. }) => eprintln!("the stream restarted (epoch {epoch})"),
            Some(SubscriptionEvent::Subscribed { recovered: true, .. }) => {
                eprintln!("reconnected, nothing lost")
            }
            Some(_) => {}
            None => break,
        }
    }
    client.close().await;
    Ok(())
}
